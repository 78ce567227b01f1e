//! The guards at the top of `step` and its per-role handlers: which messages a node ignores, and
//! which it must answer, given its role, term and settings. Each test gives one input and checks
//! the exact output (etcd-io/raft's `raft_test.go` style).

mod common;

use common::*;
use yizhi_engine::{Engine, HardState, MemStorage, NodeId, Role, SeededRng};
use yizhi_raft::{MessageKind, RaftConfig, RaftNode, ReadMode};

const VOTERS: [NodeId; 3] = [1, 2, 3];

fn pre_vote() -> MessageKind {
    MessageKind::PreVote {
        last_index: 0,
        last_term: 0,
    }
}

fn vote() -> MessageKind {
    MessageKind::Vote {
        last_index: 0,
        last_term: 0,
        transfer: false,
    }
}

fn lease_reads(config: &mut RaftConfig) {
    config.read_mode = ReadMode::LeaseBased;
}

/// Thesis §6.4.1: with lease reads, a restarted node may have acknowledged a leader's lease just
/// before it crashed, and forgot it. So it refuses (pre-)votes for a full election timeout after
/// start — not one tick less — and only then grants them.
#[test]
fn lease_mode_node_refuses_votes_for_one_election_timeout_after_start() {
    let mut node = fresh_node(2, &VOTERS, lease_reads);
    let timeout = node.config().election_timeout_ticks;
    for elapsed in 0..timeout {
        node.step(envelope(3, 2, 1, pre_vote()));
        node.step(envelope(3, 2, 1, vote()));
        assert!(
            !node.has_ready(),
            "a (pre-)vote request {elapsed} ticks after start is ignored"
        );
        assert_eq!(node.term(), 0);
        node.tick();
    }
    node.step(envelope(3, 2, 1, pre_vote()));
    node.step(envelope(3, 2, 1, vote()));
    let ready = handle_ready(&mut node);
    let to_3: Vec<_> = sent(&ready).into_iter().filter(|(to, ..)| *to == 3).collect();
    assert_eq!(
        to_3,
        vec![
            (3, 1, MessageKind::PreVoteResponse { granted: true }),
            (3, 1, MessageKind::VoteResponse { granted: true }),
        ]
    );
    assert_eq!(
        ready.hard_state,
        Some(HardState {
            term: 1,
            vote: Some(3),
            commit: 0
        })
    );
}

/// Node id 0 is reserved (config validation refuses it); a message claiming to come from it, or
/// from the receiver itself, is garbage and changes nothing.
#[test]
fn messages_from_node_0_or_from_oneself_are_ignored() {
    let mut node = fresh_node(2, &VOTERS, defaults);
    for from in [0, 2] {
        node.step(envelope(
            from,
            2,
            1,
            MessageKind::Heartbeat { commit: 0, round: 1 },
        ));
        node.step(envelope(from, 2, 1, vote()));
    }
    assert!(!node.has_ready());
    assert_eq!((node.term(), node.leader()), (0, None));
}

/// Paper §5.1: "If a server receives a request with a stale term number, it rejects the request."
/// In the plain protocol a stale leader's append or heartbeat is simply dropped; with PreVote or
/// CheckQuorum the stale leader must be told the newer term, since nobody else will tell it.
#[test]
fn lower_term_append_and_heartbeat_get_a_reply_only_with_pre_vote_or_check_quorum() {
    let stale = [
        MessageKind::Append {
            prev_index: 0,
            prev_term: 0,
            entries: vec![],
            commit: 0,
        },
        MessageKind::Heartbeat { commit: 0, round: 1 },
    ];
    let settings: [(bool, bool); 4] = [(false, false), (true, false), (false, true), (true, true)];
    for (pre_vote, check_quorum) in settings {
        let mut node = node_with_log(2, &VOTERS, &[], hard_state(5, None, 0), |c| {
            c.pre_vote = pre_vote;
            c.check_quorum = check_quorum;
        });
        for kind in stale.clone() {
            node.step(envelope(1, 2, 3, kind));
        }
        let replies = if node.has_ready() {
            sent(&handle_ready(&mut node))
        } else {
            vec![]
        };
        let step_down = (
            1,
            5,
            MessageKind::AppendResponse {
                index: 0,
                reject: None,
            },
        );
        let expected = if pre_vote || check_quorum {
            vec![step_down.clone(), step_down]
        } else {
            vec![]
        };
        assert_eq!(
            replies, expected,
            "pre_vote {pre_vote} check_quorum {check_quorum}"
        );
        assert_eq!(node.term(), 5);
    }
}

/// Thesis §4.2.1: a learner never campaigns, not even when told to by TimeoutNow.
#[test]
fn learner_ignores_timeout_now() {
    let storage: MemStorage = storage_with(&[1, 2], &[3], &[], HardState::default());
    let mut learner = RaftNode::new(RaftConfig::new(3), storage, SeededRng::new(3)).expect("valid");
    assert_eq!(learner.role(), Role::Learner);
    learner.step(envelope(1, 3, 0, MessageKind::TimeoutNow));
    assert_eq!((learner.role(), learner.term()), (Role::Learner, 0));
    assert!(!learner.has_ready());
}

/// Thesis §9.6: a pre-candidate counts only pre-vote responses. A (stale) VoteResponse at its term
/// — from an election of that term it is no longer running — must not count toward anything.
#[test]
fn pre_candidate_ignores_vote_responses() {
    let mut node = fresh_node(1, &VOTERS, defaults);
    tick_until_campaign(&mut node);
    handle_ready(&mut node);
    assert_eq!((node.role(), node.term()), (Role::PreCandidate, 0));
    node.step(envelope(2, 1, 0, MessageKind::VoteResponse { granted: true }));
    assert_eq!((node.role(), node.term()), (Role::PreCandidate, 0));
    assert!(!node.has_ready());
    node.step(envelope(2, 1, 1, MessageKind::PreVoteResponse { granted: true }));
    assert_eq!(
        (node.role(), node.term()),
        (Role::Candidate, 1),
        "a pre-vote grant does count"
    );
}

/// Election Safety (paper Figure 3): at most one leader per term. A leader hearing a leader's
/// message of its own term has found a broken invariant and must stop, not carry on.
#[test]
#[should_panic(expected = "two leaders in term")]
fn leader_receiving_a_leader_message_of_its_term_panics() {
    let mut leader = fresh_node(1, &VOTERS, paper_only);
    elect_alone(&mut leader, &VOTERS);
    let term = leader.term();
    leader.step(envelope(
        2,
        1,
        term,
        MessageKind::Heartbeat { commit: 0, round: 1 },
    ));
}
