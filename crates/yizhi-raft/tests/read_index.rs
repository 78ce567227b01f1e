//! Thesis §6.4 (ReadIndex) and §6.4.1 (leader lease): a read is answered only at an index the
//! leader has proven, after the read arrived, to be current.

mod common;

use common::*;
use yizhi_engine::{Envelope, NodeId, ProposeError, ReadState, Role};
use yizhi_raft::testkit::MemCluster;
use yizhi_raft::{Message, MessageKind, ReadMode};

const VOTERS: [NodeId; 3] = [1, 2, 3];

fn heartbeat_round(e: &Envelope<Message>) -> Option<u64> {
    match e.msg.kind {
        MessageKind::Heartbeat { round, .. } | MessageKind::HeartbeatResponse { round } => Some(round),
        _ => None,
    }
}

fn is_log_traffic(e: &Envelope<Message>) -> bool {
    matches!(
        e.msg.kind,
        MessageKind::Append { .. } | MessageKind::AppendResponse { .. }
    )
}

/// Thesis §6.4 step 3: "the leader sends a new round of heartbeats and waits for their
/// acknowledgments from a majority". Acks of a round sent *before* the read prove nothing about it.
#[test]
fn thesis_6_4_leader_read_waits_for_a_quorum_of_the_round_sent_after_it() {
    let mut cluster = MemCluster::new(&VOTERS, &[], 3, |_| {}).elected(1);
    let commit = cluster.node(1).committed();

    cluster.tick(1);
    cluster.process_ready(1);
    let earlier = heartbeat_round(&cluster.in_flight[0]).expect("a tick sends a heartbeat round");
    cluster.node_mut(1).read_index(7).expect("leader");
    cluster.process_ready(1);
    let later = heartbeat_round(cluster.in_flight.back().expect("the read opened a round"))
        .expect("the read's round is a heartbeat");
    assert!(later > earlier);

    settle_matching(&mut cluster, |e| heartbeat_round(e) == Some(earlier));
    assert!(
        cluster.read_states[&1].is_empty(),
        "answered on a round sent before the read"
    );

    deliver_matching(&mut cluster, |e| e.to == 2 && heartbeat_round(e) == Some(later));
    cluster.process_ready(2);
    deliver_matching(&mut cluster, |e| e.from == 2);
    cluster.process_ready(1);
    assert_eq!(
        cluster.read_states[&1],
        vec![ReadState {
            read_id: 7,
            index: commit
        }],
        "leader + node 2 acked the later round: a quorum"
    );
}

/// Thesis §6.4 step 1: "If the leader has not yet marked an entry from its current term committed,
/// it waits until it has done so." Heartbeat rounds alone do not release the read.
#[test]
fn thesis_6_4_read_on_new_leader_waits_for_an_entry_of_its_term_to_commit() {
    let mut cluster = MemCluster::new(&VOTERS, &[], 3, |_| {});
    elect_holding_appends(&mut cluster, 1);
    cluster.node_mut(1).read_index(5).expect("leader");
    for _ in 0..3 {
        cluster.tick(1);
        settle_matching(&mut cluster, is_heartbeat_traffic);
    }
    assert_eq!(cluster.node(1).committed(), 0, "the no-op is still in flight");
    assert!(
        cluster.read_states[&1].is_empty(),
        "a quorum of heartbeats is not enough"
    );

    cluster.settle();
    assert_eq!(cluster.node(1).committed(), 1);
    assert_eq!(cluster.read_states[&1], vec![ReadState { read_id: 5, index: 1 }]);
}

/// Thesis §6.4: a follower forwards the read; the leader answers with *its* commit index, which
/// may be ahead of the follower's (the runtime waits to apply up to it before answering).
#[test]
fn thesis_6_4_follower_read_is_forwarded_and_answered_with_the_leaders_commit_index() {
    let mut cluster = MemCluster::new(&VOTERS, &[], 3, |_| {}).elected(1);
    let x = cluster.propose(1, b"x");
    cluster.process_ready(1);
    deliver_matching(&mut cluster, |e| e.to == 3);
    cluster.process_ready(3);
    deliver_matching(&mut cluster, |e| e.from == 3);
    cluster.process_ready(1);
    assert_eq!(cluster.node(1).committed(), x.index, "committed by nodes 1 and 3");

    cluster
        .node_mut(2)
        .read_index(9)
        .expect("node 2 knows the leader");
    cluster.process_ready(2);
    let forwarded: Vec<_> = cluster
        .in_flight
        .iter()
        .filter(|e| e.from == 2)
        .map(|e| (e.to, e.msg.kind.clone()))
        .collect();
    assert_eq!(forwarded, vec![(1, MessageKind::ReadIndex { read_id: 9 })]);

    settle_matching(&mut cluster, |e| !is_log_traffic(e));
    assert_eq!(
        cluster.read_states[&2],
        vec![ReadState {
            read_id: 9,
            index: x.index
        }]
    );
    assert!(
        cluster.node(2).committed() < x.index,
        "node 2 has not even received x yet"
    );
}

/// Thesis §6.4: a leader that cannot reach a majority can never confirm a round, so it never
/// answers — even without CheckQuorum, when nothing makes it step down.
#[test]
fn thesis_6_4_isolated_leader_never_answers_a_read() {
    for check_quorum in [false, true] {
        let mut cluster = MemCluster::new(&VOTERS, &[], 3, |c| c.check_quorum = check_quorum).elected(1);
        cluster.isolate(1);
        cluster.node_mut(1).read_index(3).expect("still leader");
        for _ in 0..100 {
            cluster.tick(1);
            cluster.settle();
        }
        assert!(cluster.read_states[&1].is_empty(), "check_quorum={check_quorum}");
        let still_leads = cluster.node(1).role() == Role::Leader;
        assert_eq!(still_leads, !check_quorum, "check_quorum={check_quorum}");
    }
}

fn lease_cluster() -> (MemCluster, NodeId) {
    let mut cluster = MemCluster::new(&VOTERS, &[], 3, |c| c.read_mode = ReadMode::LeaseBased);
    let leader = elect_by_ticking(&mut cluster);
    // One acknowledged heartbeat round starts the lease.
    tick_all_and_settle(&mut cluster, 1);
    (cluster, leader)
}

fn has_heartbeat_from(cluster: &MemCluster, leader: NodeId) -> bool {
    cluster
        .in_flight
        .iter()
        .any(|e| e.from == leader && matches!(e.msg.kind, MessageKind::Heartbeat { .. }))
}

/// Thesis §6.4.1: while the lease holds, the leader answers at once, with no round at all.
#[test]
fn thesis_6_4_1_lease_read_is_answered_without_a_heartbeat_round() {
    let (mut cluster, leader) = lease_cluster();
    let commit = cluster.node(leader).committed();
    cluster.node_mut(leader).read_index(4).expect("leader");
    cluster.process_ready(leader);
    assert_eq!(
        cluster.read_states[&leader],
        vec![ReadState {
            read_id: 4,
            index: commit
        }]
    );
    assert!(
        !has_heartbeat_from(&cluster, leader),
        "no confirmation round was needed"
    );
}

/// Thesis §6.4.1: the lease is shorter than the followers' election timeout; a cut-off leader
/// answers from it until its last tick, and not one tick longer.
#[test]
fn thesis_6_4_1_lease_ends_after_lease_ticks_on_a_cut_off_leader() {
    let (mut cluster, leader) = lease_cluster();
    cluster.isolate(leader);
    let lease_ticks = cluster.node(leader).config().lease_ticks();
    assert!(lease_ticks < cluster.node(leader).config().election_timeout_ticks);
    for _ in 0..lease_ticks - 1 {
        cluster.tick(leader);
        cluster.settle();
    }
    cluster.node_mut(leader).read_index(4).expect("leader");
    cluster.settle();
    assert_eq!(cluster.read_states[&leader].len(), 1, "last tick of the lease");

    cluster.tick(leader);
    cluster.settle();
    if cluster.node_mut(leader).read_index(5).is_ok() {
        cluster.settle();
    }
    assert_eq!(
        cluster.read_states[&leader].len(),
        1,
        "answered after {lease_ticks} ticks cut off"
    );
}

/// Thesis §6.4.1 with §3.10: once a transfer has started, the target may be elected before the
/// lease would end, so the leader falls back to a confirmation round.
#[test]
fn thesis_6_4_1_lease_is_not_used_once_a_transfer_has_started() {
    let (mut cluster, leader) = lease_cluster();
    let target = VOTERS.into_iter().find(|&id| id != leader).expect("a follower");
    cluster.node_mut(leader).read_index(4).expect("leader");
    cluster.process_ready(leader);
    assert_eq!(cluster.read_states[&leader].len(), 1, "control: the lease holds");

    cluster
        .node_mut(leader)
        .transfer_leadership(target)
        .expect("target is a voter");
    cluster.node_mut(leader).read_index(5).expect("still leader");
    cluster.process_ready(leader);
    assert_eq!(
        cluster.read_states[&leader].len(),
        1,
        "read 5 was answered from the lease"
    );
    assert!(
        has_heartbeat_from(&cluster, leader),
        "read 5 waits for a round instead"
    );
}

/// Reads are refused, not queued, on a node that knows no leader.
#[test]
fn read_without_a_known_leader_is_refused() {
    let mut node = fresh_node(1, &VOTERS, defaults);
    assert_eq!(node.read_index(1), Err(ProposeError::NotLeader { leader: None }));
}

/// `max_pending_reads` bounds the reads a leader holds for confirmation: beyond it `read_index`
/// refuses at once, and once the round confirms them there is room again.
#[test]
fn leader_refuses_reads_beyond_max_pending_reads() {
    const MAX_PENDING_READS: usize = 2;
    let mut cluster =
        MemCluster::new(&VOTERS, &[], 3, |c| c.max_pending_reads = MAX_PENDING_READS).elected(1);
    let commit = cluster.node(1).committed();
    for read_id in [1, 2] {
        cluster.node_mut(1).read_index(read_id).expect("within the limit");
    }
    assert_eq!(
        cluster.node_mut(1).read_index(3),
        Err(ProposeError::TooManyPendingReads {
            limit: MAX_PENDING_READS
        })
    );
    cluster.settle();
    let answered = |ids: &[u64]| {
        ids.iter()
            .map(|&read_id| ReadState {
                read_id,
                index: commit,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(cluster.read_states[&1], answered(&[1, 2]));
    cluster.node_mut(1).read_index(4).expect("room again");
    cluster.settle();
    assert_eq!(cluster.read_states[&1], answered(&[1, 2, 4]));
}
