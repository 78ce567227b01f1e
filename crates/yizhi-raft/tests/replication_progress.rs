//! The leader's per-follower progress (etcd-io/raft's `tracker.Progress`) as replication drives it:
//! which appends go out for a commit, for a heartbeat answer, and within the inflight window, and
//! how a follower leaves the Snapshot state (paper §5.3, §7).

mod common;

use bytes::Bytes;
use common::*;
use yizhi_engine::{Engine, Envelope, LogIndex, Membership, NodeId, Term};
use yizhi_raft::testkit::MemCluster;
use yizhi_raft::{Message, MessageKind, ProgressState};

const VOTERS: [NodeId; 3] = [1, 2, 3];

fn is_install(e: &Envelope<Message>) -> bool {
    matches!(e.msg.kind, MessageKind::InstallSnapshot { .. })
}

fn empty_append(prev_index: LogIndex, prev_term: Term, commit: LogIndex) -> MessageKind {
    MessageKind::Append {
        prev_index,
        prev_term,
        entries: vec![],
        commit,
    }
}

fn state_of(cluster: &MemCluster, leader: NodeId, peer: NodeId) -> ProgressState {
    cluster.node(leader).progress_of(peer).expect("a member").state
}

/// Leader 1 with node 3 cut off while entries 2..=5 commit, then its log compacted to 5. Node 3
/// (which holds index 1) is then reached again: its heartbeat answer makes the leader send a
/// snapshot, which is taken out of flight. Returns the snapshot index.
fn follower_3_sent_a_snapshot(cluster: &mut MemCluster) -> LogIndex {
    let compacted_to = compact_past_isolated_3(cluster, 4, Membership::new(VOTERS), Bytes::new());
    assert_eq!(compacted_to, 5);
    cluster.node_mut(1).report_unreachable(3);
    assert_eq!(
        cluster.node(1).progress_of(3).map(|p| (p.matched, p.next)),
        Some((1, 2))
    );
    cluster.heal();
    cluster.tick(1);
    settle_matching(cluster, |e| !is_install(e));
    let installs = take_matching(cluster, is_install);
    assert_eq!(installs.len(), 1);
    assert_eq!(
        state_of(cluster, 1, 3),
        ProgressState::Snapshot {
            pending_index: compacted_to
        }
    );
    compacted_to
}

/// Paper §5.3: once a quorum holds an entry the leader's next Ready tells every follower the new
/// commit index — with an empty append when it has nothing new for it, including a follower whose
/// earlier append is still in flight. Acknowledgements themselves trigger no empty appends.
#[test]
fn commit_goes_out_as_empty_appends_and_acks_trigger_none() {
    let mut cluster = MemCluster::new(&VOTERS, &[], 3, |_| {}).elected(1);
    let term = cluster.node(1).term();
    let x = cluster
        .node_mut(1)
        .propose(Bytes::from_static(b"x"))
        .expect("leader")
        .index;
    cluster.process_ready(1);
    let held_for_3 = take_matching(&mut cluster, |e| e.to == 3);
    assert_eq!(held_for_3.len(), 1);
    deliver_matching(&mut cluster, |e| e.to == 2);
    cluster.process_ready(2);
    deliver_matching(&mut cluster, |e| e.from == 2);
    assert_eq!(cluster.node(1).committed(), x);

    let ready = handle_ready(cluster.node_mut(1));
    assert_eq!(
        sent(&ready),
        vec![
            (2, term, empty_append(x, term, x)),
            (3, term, empty_append(x, term, x)),
        ],
        "one empty append per follower, carrying commit {x}"
    );
    assert!(!cluster.node(1).has_ready());
}

/// Paper §7: an acknowledgement that still lies below the leader's first index (a late answer to an
/// append sent before compaction) cannot end the Snapshot state — and must not trigger a second
/// snapshot. Only an ack at the snapshot's index moves the follower on to Replicate.
#[test]
fn ack_below_the_first_index_keeps_the_follower_in_snapshot_state() {
    let mut cluster = MemCluster::new(&VOTERS, &[], 9, |_| {});
    let snapshot_index = follower_3_sent_a_snapshot(&mut cluster);
    let term = cluster.node(1).term();
    let accepted = |index| MessageKind::AppendResponse { index, reject: None };

    cluster.node_mut(1).step(envelope(3, 1, term, accepted(2)));
    let pr = cluster.node(1).progress_of(3).expect("member");
    assert_eq!(
        (pr.state, pr.matched),
        (
            ProgressState::Snapshot {
                pending_index: snapshot_index
            },
            2
        )
    );
    assert!(!cluster.node(1).has_ready(), "no second snapshot, no append");

    cluster
        .node_mut(1)
        .step(envelope(3, 1, term, accepted(snapshot_index)));
    let pr = cluster.node(1).progress_of(3).expect("member");
    assert_eq!(
        (pr.state, pr.matched, pr.next),
        (ProgressState::Replicate, snapshot_index, snapshot_index + 1)
    );
}

/// A snapshot lost in transit is never reported; the leader gives up waiting after
/// `2 * election_timeout_ticks` of its ticks and probes again — exactly one tick later, not before.
#[test]
fn stuck_snapshot_is_abandoned_for_probe_after_two_election_timeouts() {
    let mut cluster = MemCluster::new(&VOTERS, &[], 9, |_| {});
    let snapshot_index = follower_3_sent_a_snapshot(&mut cluster);
    cluster.isolate(3);
    let limit_ticks = 2 * cluster.node(1).config().election_timeout_ticks;
    for tick in 1..=limit_ticks {
        cluster.tick(1);
        cluster.settle();
        assert_eq!(
            state_of(&cluster, 1, 3),
            ProgressState::Snapshot {
                pending_index: snapshot_index
            },
            "still waiting after {tick} ticks"
        );
    }
    assert_eq!(cluster.leader(), Some(1), "node 2 keeps the quorum");
    cluster.tick(1);
    let pr = cluster.node(1).progress_of(3).expect("member");
    assert_eq!((pr.state, pr.next), (ProgressState::Probe, snapshot_index + 1));
}

/// A heartbeat answer from a follower in Replicate with room in its window changes nothing, and a
/// caught-up follower gets no append for it: in a quiet cluster a heartbeat round is just that.
#[test]
fn heartbeat_round_in_a_caught_up_cluster_sends_no_appends() {
    let mut cluster = MemCluster::new(&VOTERS, &[], 3, |_| {}).elected(1);
    cluster.tick(1);
    cluster.process_ready(1);
    assert!(cluster.in_flight.iter().all(is_heartbeat_traffic));
    deliver_matching(&mut cluster, |e| e.from == 1);
    cluster.process_all_ready();
    assert_eq!(deliver_matching(&mut cluster, |e| e.to == 1), 2, "both answered");
    assert!(!cluster.node(1).has_ready(), "nothing to send");
    for peer in [2, 3] {
        assert_eq!(state_of(&cluster, 1, peer), ProgressState::Replicate);
    }
}

/// The other side of the same rule: a heartbeat answer from a follower whose window is full (its
/// appends were lost) restarts it in Probe from what it is known to hold.
#[test]
fn heartbeat_answer_with_a_full_window_restarts_from_the_match_point() {
    let mut cluster = MemCluster::new(&VOTERS, &[], 3, |c| c.max_inflight_msgs = 2).elected(1);
    let term = cluster.node(1).term();
    cluster.cut_links.insert((1, 3));
    for data in [b"a", b"b"] {
        cluster
            .node_mut(1)
            .propose(Bytes::from_static(data))
            .expect("leader");
        cluster.process_ready(1);
    }
    cluster.settle();
    let pr = cluster.node(1).progress_of(3).expect("member");
    assert!(
        pr.inflights.is_full() && pr.matched == 1,
        "both appends to 3 lost"
    );
    let commit = cluster.node(1).committed();
    assert_eq!(commit, 3);

    cluster.heal();
    cluster.tick(1);
    cluster.process_ready(1);
    deliver_matching(&mut cluster, |e| e.to == 3);
    cluster.process_ready(3);
    deliver_matching(&mut cluster, |e| e.from == 3);
    assert_eq!(state_of(&cluster, 1, 3), ProgressState::Probe);
    let ready = handle_ready(cluster.node_mut(1));
    let to_3: Vec<_> = sent(&ready).into_iter().filter(|(to, ..)| *to == 3).collect();
    assert_eq!(
        to_3,
        vec![(
            3,
            term,
            MessageKind::Append {
                prev_index: 1,
                prev_term: term,
                entries: vec![normal(2, term, b"a"), normal(3, term, b"b")],
                commit,
            }
        )]
    );
}

/// Batching meets pipelining: with `max_msg_bytes` below one entry, each append carries one entry,
/// and one broadcast fills the whole inflight window of each follower — and no more.
#[test]
fn one_ready_fills_the_inflight_window_with_small_appends() {
    const MAX_INFLIGHT_MSGS: usize = 3;
    let mut cluster = MemCluster::new(&VOTERS, &[], 3, |c| {
        c.max_msg_bytes = 1;
        c.max_inflight_msgs = MAX_INFLIGHT_MSGS;
    });
    assert_eq!(cluster.campaign(1), Some(1));
    let term = cluster.node(1).term();
    for i in 0..5u8 {
        cluster.node_mut(1).propose(Bytes::from(vec![i])).expect("leader");
    }
    let ready = handle_ready(cluster.node_mut(1));
    let appends: Vec<(NodeId, LogIndex, Vec<LogIndex>)> = ready
        .messages
        .iter()
        .map(|e| match &e.msg.kind {
            MessageKind::Append {
                prev_index,
                prev_term,
                entries,
                ..
            } => {
                assert_eq!(*prev_term, term);
                (e.to, *prev_index, entries.iter().map(|x| x.index).collect())
            }
            other => panic!("expected appends only, got {other:?}"),
        })
        .collect();
    assert_eq!(
        appends,
        vec![
            (2, 1, vec![2]),
            (2, 2, vec![3]),
            (2, 3, vec![4]),
            (3, 1, vec![2]),
            (3, 2, vec![3]),
            (3, 3, vec![4]),
        ]
    );
    for peer in [2, 3] {
        let pr = cluster.node(1).progress_of(peer).expect("member");
        assert_eq!((pr.inflights.len(), pr.next), (MAX_INFLIGHT_MSGS, 5));
    }
    cluster.in_flight.extend(ready.messages);
    cluster.settle();
    assert_eq!(cluster.node(2).committed(), 6);
    assert_eq!(cluster.node(3).committed(), 6);
}
