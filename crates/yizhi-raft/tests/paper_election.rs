//! Raft paper §5.2 (leader election) and §5.4.1 (election restriction), one rule per test.
//! Each test drives a lone `RaftNode` and asserts the exact outputs of its `Ready`.

mod common;

use common::*;
use yizhi_engine::{Engine, Entry, EntryPayload, NodeId, Ready, Role, Term};
use yizhi_raft::{Message, MessageKind};

const VOTERS: [u64; 3] = [1, 2, 3];

fn vote(last_index: u64, last_term: u64) -> MessageKind {
    vote_request(last_index, last_term, false)
}

/// A candidate `from` with an empty log asks node 1 for its vote at `term`; asserts the answer.
fn answer_to_vote_from(node: &mut Node, from: NodeId, term: Term, granted: bool) -> Ready<Message> {
    step_expecting(
        node,
        envelope(from, 1, term, vote(0, 0)),
        &[vote_response(from, term, granted)],
    )
}

/// §5.2: "a follower increments its current term and transitions to candidate state. It then
/// votes for itself and issues RequestVote RPCs in parallel to each of the other servers".
#[test]
fn paper_5_2_follower_times_out_and_campaigns_at_term_plus_one() {
    let mut node = node_with_log(1, &VOTERS, &[1, 1], hard_state(1, None, 2), paper_only);
    tick_until_campaign(&mut node);
    assert_eq!((node.role(), node.term()), (Role::Candidate, 2));

    let ready = handle_ready(&mut node);
    assert_eq!(
        ready.hard_state,
        Some(hard_state(2, Some(1), 2)),
        "votes for itself"
    );
    assert!(
        ready.must_sync,
        "a new term and vote must be fsynced before the requests leave"
    );
    assert_eq!(sent(&ready), vec![(2, 2, vote(2, 1)), (3, 2, vote(2, 1))]);
}

/// Thesis §9.6: a pre-candidate asks "would you vote for me in term+1?" and keeps its own term.
#[test]
fn thesis_9_6_pre_candidate_asks_at_term_plus_one_without_changing_its_term() {
    let mut node = node_with_log(1, &VOTERS, &[1, 1], hard_state(1, None, 2), defaults);
    tick_until_campaign(&mut node);
    assert_eq!((node.role(), node.term()), (Role::PreCandidate, 1));

    let ready = handle_ready(&mut node);
    assert_eq!(
        ready.hard_state, None,
        "neither term nor vote changes during a pre-vote"
    );
    let pre_vote = MessageKind::PreVote {
        last_index: 2,
        last_term: 1,
    };
    assert_eq!(sent(&ready), vec![(2, 2, pre_vote.clone()), (3, 2, pre_vote)]);
}

/// §5.2: "election timeouts are chosen randomly from a fixed interval" — here [T, 2T).
#[test]
fn paper_5_2_randomized_election_timeout_lies_in_t_to_2t() {
    let mut seen = std::collections::BTreeSet::new();
    for seed in 1..=200 {
        let mut config = yizhi_raft::RaftConfig::new(1);
        paper_only(&mut config);
        let storage = storage_with(&VOTERS, &[], &[], hard_state(0, None, 0));
        let mut node = yizhi_raft::RaftNode::new(config, storage, yizhi_engine::SeededRng::new(seed))
            .expect("valid config");
        let timeout = node.config().election_timeout_ticks;
        let ticks = tick_until_campaign(&mut node);
        assert!(
            (timeout..2 * timeout).contains(&ticks),
            "seed {seed}: campaigned after {ticks} ticks, outside [{timeout}, {})",
            2 * timeout
        );
        seen.insert(ticks);
    }
    assert!(
        seen.len() >= 8,
        "timeouts are not spread over the interval (split votes would repeat): {seen:?}"
    );
}

/// §5.2: "a candidate wins an election if it receives votes from a majority of the servers".
#[test]
fn paper_5_2_candidate_wins_only_with_a_majority() {
    let voters = [1, 2, 3, 4, 5];
    let mut node = fresh_node(1, &voters, paper_only);
    tick_until_campaign(&mut node);
    handle_ready(&mut node);

    node.step(envelope(2, 1, 1, MessageKind::VoteResponse { granted: true }));
    node.step(envelope(3, 1, 1, MessageKind::VoteResponse { granted: false }));
    assert_eq!(node.role(), Role::Candidate, "2 of 5 votes is not a majority");

    node.step(envelope(4, 1, 1, MessageKind::VoteResponse { granted: true }));
    assert_eq!(node.role(), Role::Leader, "3 of 5 votes is");
    let ready = handle_ready(&mut node);
    let soft = ready.soft_state.expect("role changed");
    assert_eq!((soft.role, soft.leader), (Role::Leader, Some(1)));
    let no_op = Entry {
        index: 1,
        term: 1,
        payload: EntryPayload::Noop,
    };
    assert_eq!(ready.entries, vec![no_op.clone()]);
    let append = MessageKind::Append {
        prev_index: 0,
        prev_term: 0,
        entries: vec![no_op],
        commit: 0,
    };
    let expected: Vec<_> = [2, 3, 4, 5].map(|to| (to, 1, append.clone())).into();
    assert_eq!(
        sent(&ready),
        expected,
        "the new leader asserts itself to everyone at once"
    );
}

/// §5.2: a candidate that a majority refuses gives up the election (and waits for a new timeout).
#[test]
fn paper_5_2_candidate_refused_by_a_majority_returns_to_follower() {
    let mut node = fresh_node(1, &VOTERS, paper_only);
    tick_until_campaign(&mut node);
    handle_ready(&mut node);
    node.step(envelope(2, 1, 1, MessageKind::VoteResponse { granted: false }));
    node.step(envelope(3, 1, 1, MessageKind::VoteResponse { granted: false }));
    assert_eq!((node.role(), node.term()), (Role::Follower, 1));
    assert_eq!(
        node.storage().hard_state().vote,
        Some(1),
        "its vote in term 1 stays cast"
    );
}

/// §5.1: "if a candidate or leader discovers that its term is out of date, it immediately reverts
/// to follower state".
#[test]
fn paper_5_2_candidate_steps_down_on_a_higher_term() {
    let mut node = fresh_node(1, &VOTERS, paper_only);
    tick_until_campaign(&mut node);
    handle_ready(&mut node);
    node.step(envelope(2, 1, 5, MessageKind::VoteResponse { granted: false }));
    assert_eq!(
        (node.role(), node.term(), node.leader()),
        (Role::Follower, 5, None)
    );
    let ready = handle_ready(&mut node);
    assert_eq!(
        ready.hard_state,
        Some(hard_state(5, None, 0)),
        "the vote of term 1 is gone with it"
    );
}

/// §5.2: "If the leader's term is at least as large as the candidate's current term, then the
/// candidate recognizes the leader as legitimate and returns to follower state."
#[test]
fn paper_5_2_candidate_receiving_append_of_its_term_becomes_follower() {
    let mut node = fresh_node(1, &VOTERS, paper_only);
    tick_until_campaign(&mut node);
    handle_ready(&mut node);
    let append = MessageKind::Append {
        prev_index: 0,
        prev_term: 0,
        entries: vec![noop(1, 1)],
        commit: 0,
    };
    node.step(envelope(2, 1, 1, append));
    assert_eq!(
        (node.role(), node.term(), node.leader()),
        (Role::Follower, 1, Some(2))
    );
    let ready = handle_ready(&mut node);
    assert_eq!(ready.entries, vec![noop(1, 1)]);
    let ack = MessageKind::AppendResponse {
        index: 1,
        reject: None,
    };
    assert_eq!(sent(&ready), vec![(2, 1, ack)]);
}

/// §5.2: "each server will vote for at most one candidate in a given term, on a first-come-first-
/// served basis". A retransmitted request from the same candidate is granted again.
#[test]
fn paper_5_2_grants_at_most_one_vote_per_term() {
    let mut node = fresh_node(1, &VOTERS, paper_only);

    let ready = answer_to_vote_from(&mut node, 2, 1, true);
    assert_eq!(ready.hard_state, Some(hard_state(1, Some(2), 0)));

    let ready = answer_to_vote_from(&mut node, 3, 1, false);
    assert_eq!(ready.hard_state, None, "the vote is not changed");

    answer_to_vote_from(&mut node, 2, 1, true);
}

/// §5.2 with Figure 2's "persistent state": a vote survives a restart, so a rebooted node cannot
/// vote twice in the same term.
#[test]
fn paper_5_2_vote_recorded_on_disk_binds_after_restart() {
    let mut node = node_with_log(1, &VOTERS, &[], hard_state(1, Some(2), 0), paper_only);
    answer_to_vote_from(&mut node, 3, 1, false);
}

/// §5.4.1: "If the logs have last entries with different terms, then the log with the later term
/// is more up-to-date. If the logs end with the same term, then whichever log is longer is more
/// up-to-date." The voter's log is [1, 1, 2] (last index 3, last term 2).
#[test]
fn paper_5_4_1_vote_goes_only_to_a_log_at_least_as_up_to_date() {
    let cases = [
        // (candidate last_index, last_term, granted, why)
        (5, 1, false, "longer but with an older last term"),
        (2, 2, false, "same last term but shorter"),
        (3, 2, true, "identical"),
        (4, 2, true, "same last term and longer"),
        (1, 3, true, "shorter but with a newer last term"),
    ];
    for (last_index, last_term, granted, why) in cases {
        let mut node = node_with_log(1, &VOTERS, &[1, 1, 2], hard_state(2, None, 1), paper_only);
        node.step(envelope(2, 1, 3, vote(last_index, last_term)));
        let ready = handle_ready(&mut node);
        assert_eq!(
            sent(&ready),
            vec![(2, 3, MessageKind::VoteResponse { granted })],
            "candidate log ending at ({last_index}, {last_term}): {why}"
        );
        let expected_vote = granted.then_some(2);
        assert_eq!(node.storage().hard_state().vote, expected_vote, "{why}");
        assert_eq!(node.term(), 3, "the higher term is adopted either way");
    }
}

/// Thesis §9.6: a pre-vote for the term this node already voted in is refused like a vote would
/// be; a pre-vote for a later term is granted, and changes neither the term nor the vote.
#[test]
fn thesis_9_6_pre_vote_for_a_voted_term_is_refused_for_a_later_term_granted() {
    let pre_vote = |last_index, last_term| MessageKind::PreVote {
        last_index,
        last_term,
    };
    let mut node = node_with_log(1, &VOTERS, &[], hard_state(1, Some(2), 0), paper_only);

    step_expecting(
        &mut node,
        envelope(3, 1, 1, pre_vote(0, 0)),
        &[pre_vote_response(3, 1, false)],
    );

    let ready = step_expecting(
        &mut node,
        envelope(3, 1, 2, pre_vote(0, 0)),
        &[pre_vote_response(3, 2, true)],
    );
    assert_eq!(ready.hard_state, None, "a pre-vote changes no durable state");
    assert_eq!(node.term(), 1);
}
