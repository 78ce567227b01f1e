//! Thesis §3.10 (leadership transfer): catch the target up, then TimeoutNow; the target campaigns
//! at once, without PreVote, and wins; no proposals meanwhile; only voters may be targets.

use bytes::Bytes;
use yizhi_engine::{NodeId, ProposeError, Role, TransferError};
use yizhi_raft::MessageKind;
use yizhi_raft::testkit::MemCluster;

const VOTERS: [NodeId; 3] = [1, 2, 3];

/// Thesis §3.10 steps 1–3: the leader stops taking proposals, brings the target's log up to date,
/// and only then sends TimeoutNow; the target campaigns immediately (a real Vote marked as a
/// transfer, no PreVote, no tick) and wins the next term.
#[test]
fn thesis_3_10_lagging_target_is_caught_up_then_told_to_campaign_and_wins() {
    let mut cluster = MemCluster::new(&VOTERS, &[], 5, |_| {}).elected(1);
    let term = cluster.node(1).term();
    cluster.cut_links.insert((1, 3));
    let x = cluster.propose(1, b"x");
    cluster.settle();
    assert!(cluster.node(3).committed() < x.index, "node 3 missed x");
    cluster.heal();
    cluster.record_deliveries = true;

    cluster.node_mut(1).transfer_leadership(3).expect("3 is a voter");
    assert_eq!(
        cluster.node_mut(1).propose(Bytes::from_static(b"y")),
        Err(ProposeError::TransferInProgress)
    );
    cluster.process_ready(1);
    assert!(
        !cluster
            .in_flight
            .iter()
            .any(|e| e.msg.kind == MessageKind::TimeoutNow),
        "node 3 is behind: no TimeoutNow yet"
    );

    cluster.settle();
    let log = &cluster.delivered_log;
    let caught_up = log
        .iter()
        .position(|e| {
            e.from == 3
                && e.msg.kind
                    == MessageKind::AppendResponse {
                        index: x.index,
                        reject: None,
                    }
        })
        .expect("node 3 acknowledged x");
    let timeout_now = log
        .iter()
        .position(|e| e.to == 3 && e.msg.kind == MessageKind::TimeoutNow)
        .expect("TimeoutNow was sent");
    assert!(
        timeout_now > caught_up,
        "TimeoutNow went out before node 3 held x"
    );
    assert!(
        log.iter()
            .any(|e| e.from == 3 && matches!(e.msg.kind, MessageKind::Vote { transfer: true, .. })),
        "node 3 asked for votes marked as a transfer"
    );
    assert!(
        !log.iter()
            .any(|e| e.from == 3 && matches!(e.msg.kind, MessageKind::PreVote { .. })),
        "no pre-vote: the leader asked for this election"
    );
    assert_eq!((cluster.leader(), cluster.node(3).term()), (Some(3), term + 1));
    assert_eq!(cluster.node(1).role(), Role::Follower);
}

/// A caught-up target gets TimeoutNow in the very next Ready.
#[test]
fn thesis_3_10_caught_up_target_gets_timeout_now_at_once() {
    let mut cluster = MemCluster::new(&VOTERS, &[], 5, |_| {}).elected(1);
    let term = cluster.node(1).term();
    cluster.node_mut(1).transfer_leadership(2).expect("2 is a voter");
    cluster.process_ready(1);
    let sent: Vec<_> = cluster
        .in_flight
        .iter()
        .map(|e| (e.to, e.msg.term, e.msg.kind.clone()))
        .collect();
    assert_eq!(sent, vec![(2, term, MessageKind::TimeoutNow)]);
    cluster.settle();
    assert_eq!(cluster.leader(), Some(2));
}

/// Thesis §3.10: "If the transfer does not complete within an election timeout, the prior leader
/// aborts the transfer and resumes accepting client requests."
#[test]
fn thesis_3_10_transfer_to_an_unreachable_target_is_abandoned_after_an_election_timeout() {
    let mut cluster = MemCluster::new(&VOTERS, &[], 5, |_| {}).elected(1);
    cluster.isolate(3);
    cluster.node_mut(1).transfer_leadership(3).expect("3 is a voter");
    let election_timeout_ticks = cluster.node(1).config().election_timeout_ticks;
    for _ in 0..election_timeout_ticks - 1 {
        cluster.tick(1);
        cluster.tick(2);
        cluster.settle();
    }
    assert_eq!(
        cluster.node_mut(1).propose(Bytes::from_static(b"early")),
        Err(ProposeError::TransferInProgress)
    );
    cluster.tick(1);
    cluster.settle();
    assert_eq!(cluster.leader(), Some(1));
    cluster.propose(1, b"x");
}

/// Only a voter can lead: learners, strangers and the leader itself are refused, as is a follower
/// asked to transfer.
#[test]
fn thesis_3_10_transfer_target_must_be_another_voter() {
    let mut cluster = MemCluster::new(&VOTERS, &[4], 5, |_| {}).elected(1);
    let leader = cluster.node_mut(1);
    assert_eq!(
        leader.transfer_leadership(4),
        Err(TransferError::NotVoter(4)),
        "learner"
    );
    assert_eq!(
        leader.transfer_leadership(9),
        Err(TransferError::NotVoter(9)),
        "stranger"
    );
    assert_eq!(
        leader.transfer_leadership(1),
        Err(TransferError::AlreadyLeader(1))
    );
    assert!(
        leader.propose(Bytes::from_static(b"x")).is_ok(),
        "refusals start no transfer"
    );
    assert_eq!(
        cluster.node_mut(2).transfer_leadership(3),
        Err(TransferError::NotLeader)
    );
}
