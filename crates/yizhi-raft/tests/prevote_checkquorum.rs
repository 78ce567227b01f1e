//! Thesis §9.6 (PreVote) and §6.2 / §4.2.3 (CheckQuorum and the follower-side lease): what keeps a
//! node that was cut off from disrupting a healthy cluster, and a cut-off leader from lingering.

mod common;

use bytes::Bytes;
use common::*;
use yizhi_engine::{NodeId, Role};
use yizhi_raft::MessageKind;
use yizhi_raft::testkit::MemCluster;

const VOTERS: [NodeId; 3] = [1, 2, 3];
const ELECTION_TIMEOUT_TICKS: u64 = 10;

/// Isolates node 3 for `ticks` while the others keep going, then heals and runs a few more ticks.
/// Returns (leader term before, node 3's term while cut off, leader and term after healing).
fn partition_node_3_then_heal(pre_vote: bool, ticks: u64) -> (u64, u64, Option<NodeId>, u64) {
    let mut cluster = MemCluster::new(&VOTERS, &[], 11, |c| c.pre_vote = pre_vote).elected(1);
    let term_before = cluster.node(1).term();
    cluster.isolate(3);
    tick_all_and_settle(&mut cluster, ticks);
    let term_cut_off = cluster.node(3).term();
    cluster.heal();
    tick_all_and_settle(&mut cluster, 3);
    let leader = cluster.leader();
    let term_after = leader.map_or(0, |id| cluster.node(id).term());
    (term_before, term_cut_off, leader, term_after)
}

/// Thesis §9.6: "the PreVote algorithm ... a candidate only increments its term if it first learns
/// from a majority of the cluster that they would be willing to grant it their votes". A node cut
/// off for ten election timeouts keeps its term, and on return the leader is undisturbed.
#[test]
fn thesis_9_6_partitioned_node_does_not_raise_its_term_or_disrupt_on_rejoin() {
    let (before, cut_off, leader, after) = partition_node_3_then_heal(true, 10 * ELECTION_TIMEOUT_TICKS);
    assert_eq!(cut_off, before, "pre-votes never raise the term");
    assert_eq!(
        (leader, after),
        (Some(1), before),
        "node 1 still leads the same term"
    );
}

/// The same schedule without PreVote is the disruption §9.6 prevents: the returning node's
/// inflated term deposes the leader. (This is what makes the test above able to fail.)
#[test]
fn thesis_9_6_without_pre_vote_the_rejoining_node_disrupts_the_leader() {
    let (before, cut_off, _, after) = partition_node_3_then_heal(false, 10 * ELECTION_TIMEOUT_TICKS);
    assert!(
        cut_off > before + 5,
        "node 3 campaigned again and again: term {cut_off}"
    );
    assert!(
        after > cut_off,
        "the cluster had to move past node 3's term: {after}"
    );
}

/// After rejoining, the pre-candidate hears the leader's heartbeat and follows it again, and the
/// log it missed reaches it.
#[test]
fn thesis_9_6_rejoined_pre_candidate_follows_the_leader_and_catches_up() {
    let mut cluster = MemCluster::new(&VOTERS, &[], 11, |_| {}).elected(1);
    cluster.isolate(3);
    let x = cluster.propose(1, b"x");
    tick_all_and_settle(&mut cluster, 3 * ELECTION_TIMEOUT_TICKS);
    assert_eq!(cluster.node(3).role(), Role::PreCandidate);
    cluster.heal();
    tick_all_and_settle(&mut cluster, 1);
    assert_eq!(
        (cluster.node(3).role(), cluster.node(3).leader()),
        (Role::Follower, Some(1))
    );
    assert_eq!(cluster.node(3).committed(), x.index);
}

/// Thesis §9.6 (etcd-io/raft's fix for a PreVote deadlock): a PreVote of a lower term is refused
/// explicitly, with the receiver's term, instead of being dropped.
#[test]
fn thesis_9_6_lower_term_pre_vote_is_refused_with_the_higher_term() {
    let mut node = node_with_log(1, &VOTERS, &[1, 5], hard_state(5, None, 1), defaults);
    let pre_vote = MessageKind::PreVote {
        last_index: 9,
        last_term: 2,
    };
    node.step(envelope(2, 1, 3, pre_vote));
    let ready = handle_ready(&mut node);
    assert_eq!(
        sent(&ready),
        vec![(2, 5, MessageKind::PreVoteResponse { granted: false })]
    );
    assert_eq!(node.term(), 5);

    // ... and the asker, on reading that refusal, learns the term and stands down.
    let mut asker = node_with_log(2, &VOTERS, &[1, 2], hard_state(2, None, 1), defaults);
    tick_until_campaign(&mut asker);
    assert_eq!((asker.role(), asker.term()), (Role::PreCandidate, 2));
    asker.step(envelope(1, 2, 5, MessageKind::PreVoteResponse { granted: false }));
    assert_eq!((asker.role(), asker.term()), (Role::Follower, 5));
}

/// Thesis §6.2: "a leader ... steps down if an election timeout elapses without a successful round
/// of heartbeats to a majority of its cluster". It counts acks per election timeout, so a leader
/// cut off just after a round steps down within two timeouts; a connected one never does.
#[test]
fn thesis_6_2_isolated_leader_steps_down_within_two_election_timeouts() {
    let mut cluster = MemCluster::new(&VOTERS, &[], 11, |_| {}).elected(1);
    tick_all_and_settle(&mut cluster, 5 * ELECTION_TIMEOUT_TICKS);
    assert_eq!(cluster.leader(), Some(1), "connected: stays leader");

    cluster.isolate(1);
    let mut ticks = 0;
    while cluster.node(1).role() == Role::Leader && ticks < 10 * ELECTION_TIMEOUT_TICKS {
        cluster.tick(1);
        cluster.settle();
        ticks += 1;
    }
    assert_eq!(
        cluster.node(1).role(),
        Role::Follower,
        "still leading after {ticks} ticks"
    );
    assert!(
        ticks <= 2 * ELECTION_TIMEOUT_TICKS,
        "stepped down only after {ticks} ticks"
    );
    assert_eq!(cluster.node(1).leader(), None);
    assert!(cluster.node_mut(1).propose(Bytes::from_static(b"late")).is_err());
}

/// Thesis §4.2.3: "if a server receives a RequestVote request within the minimum election timeout
/// of hearing from a current leader, it does not update its term or grant its vote". The request is
/// not even answered. Once a timeout passes without the leader, the same request is granted.
#[test]
fn thesis_4_2_3_follower_that_heard_from_leader_ignores_vote_requests() {
    let mut node = fresh_node(2, &VOTERS, defaults);
    node.step(envelope(1, 2, 1, MessageKind::Heartbeat { commit: 0, round: 1 }));
    let ready = handle_ready(&mut node);
    assert_eq!(
        sent(&ready),
        vec![(1, 1, MessageKind::HeartbeatResponse { round: 1 })]
    );

    let pre_vote = MessageKind::PreVote {
        last_index: 0,
        last_term: 0,
    };
    let vote = MessageKind::Vote {
        last_index: 0,
        last_term: 0,
        transfer: false,
    };
    for request in [pre_vote, vote.clone()] {
        node.step(envelope(3, 2, 2, request.clone()));
        let ready = handle_ready(&mut node);
        assert!(
            ready.messages.is_empty(),
            "{request:?} answered: {:?}",
            ready.messages
        );
        assert_eq!(ready.hard_state, None, "{request:?} changed the term or vote");
        assert_eq!((node.term(), node.leader()), (1, Some(1)));
    }

    for _ in 0..ELECTION_TIMEOUT_TICKS {
        node.tick();
    }
    handle_ready(&mut node);
    node.step(envelope(3, 2, 2, vote));
    let ready = handle_ready(&mut node);
    assert_eq!(
        sent(&ready),
        vec![(3, 2, MessageKind::VoteResponse { granted: true })]
    );
}

/// Thesis §3.10: a vote request marked as a leadership transfer bypasses that lease, because the
/// leader itself asked for the election.
#[test]
fn thesis_3_10_transfer_vote_is_granted_despite_the_lease() {
    let mut node = fresh_node(2, &VOTERS, defaults);
    node.step(envelope(1, 2, 1, MessageKind::Heartbeat { commit: 0, round: 1 }));
    handle_ready(&mut node);
    let vote = envelope(3, 2, 2, vote_request(0, 0, true));
    let ready = step_expecting(&mut node, vote, &[vote_response(3, 2, true)]);
    assert_eq!(ready.hard_state, Some(hard_state(2, Some(3), 0)));
}

/// Thesis §4.2.3 as the simulator's lease check reads it: `refuses_votes` is true while a follower
/// heard its leader within an election timeout, and false once a full timeout passed in silence
/// (or with CheckQuorum off, when nothing is refused).
#[test]
fn refuses_votes_holds_exactly_while_the_follower_hears_its_leader() {
    let mut cluster = MemCluster::new(&VOTERS, &[], 11, |_| {}).elected(1);
    assert!(cluster.node(2).refuses_votes(), "just heard from the leader");
    cluster.isolate(2);
    for _ in 0..ELECTION_TIMEOUT_TICKS - 1 {
        cluster.tick(2);
    }
    assert!(cluster.node(2).refuses_votes(), "one tick before the timeout");
    cluster.tick(2);
    assert!(!cluster.node(2).refuses_votes(), "a full timeout in silence");

    let open = MemCluster::new(&VOTERS, &[], 11, |c| c.check_quorum = false).elected(1);
    assert!(
        !open.node(2).refuses_votes(),
        "without CheckQuorum nothing is refused"
    );
}
