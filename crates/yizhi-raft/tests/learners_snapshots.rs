//! Learners (thesis §4.2.1: non-voting members) and snapshot install (paper §7, thesis §5).

mod common;

use bytes::Bytes;
use common::*;
use yizhi_engine::{Engine, EntryPayload, LogStorage, Membership, NodeId, Role};
use yizhi_raft::MessageKind;
use yizhi_raft::testkit::MemCluster;

/// A learner receives and applies the log, but never campaigns, even when the leader is gone.
#[test]
fn learner_receives_the_log_but_never_campaigns() {
    let mut cluster = MemCluster::new(&[1, 2], &[3], 9, |_| {});
    assert_eq!(cluster.node(3).role(), Role::Learner);
    assert_eq!(cluster.campaign(1), Some(1));
    let x = cluster.propose(1, b"x");
    cluster.settle();
    let applied = cluster.applied[&3].last().expect("learner applied x");
    assert_eq!(
        (applied.index, &applied.payload),
        (x.index, &EntryPayload::Normal(Bytes::from_static(b"x")))
    );

    let term = cluster.node(3).term();
    cluster.isolate(3);
    cluster.record_deliveries = true;
    for _ in 0..100 {
        cluster.tick(3);
    }
    cluster.settle();
    assert_eq!(
        (cluster.node(3).role(), cluster.node(3).term()),
        (Role::Learner, term)
    );
    assert!(
        cluster.in_flight.is_empty() && cluster.delivered_log.is_empty(),
        "the learner asked nobody for votes"
    );
}

/// A learner's acknowledgement does not count toward commit: with voters {1, 2} and learner 3,
/// an entry held by the leader and the learner is not committed until voter 2 holds it.
#[test]
fn learner_acks_do_not_count_toward_commit() {
    let mut cluster = MemCluster::new(&[1, 2], &[3], 9, |_| {}).elected(1);
    cluster.cut_links.insert((1, 2));
    let x = cluster.propose(1, b"x");
    cluster.settle();
    assert_eq!(
        cluster.node(3).storage().last_index(),
        x.index,
        "the learner holds x"
    );
    assert!(
        cluster.node(1).committed() < x.index,
        "leader + learner are not a majority of {{1, 2}}"
    );

    cluster.heal();
    tick_all_and_settle(&mut cluster, 1);
    assert_eq!(
        cluster.node(1).committed(),
        x.index,
        "voter 2 caught up: now it commits"
    );
    assert_eq!(cluster.node(3).committed(), x.index);
}

/// Paper §7: "the leader must occasionally send snapshots to followers that lag behind" — when the
/// entries a follower needs were compacted away. The follower's Ready carries the snapshot, it
/// replaces its log, and it then receives and applies the entries after it.
#[test]
fn paper_7_follower_behind_compaction_installs_snapshot_then_catches_up() {
    let voters = [1, 2, 3];
    let mut cluster = MemCluster::new(&voters, &[], 9, |_| {});
    let image = Bytes::from_static(b"state machine image");
    let compacted_to = compact_past_isolated_3(&mut cluster, 5, Membership::new(voters), image.clone());
    let applied_before = cluster.applied[&3].len();

    cluster.heal();
    cluster.record_deliveries = true;
    let is_install = |e: &yizhi_engine::Envelope<yizhi_raft::Message>| {
        matches!(e.msg.kind, MessageKind::InstallSnapshot { .. })
    };
    let mut install = None;
    for _ in 0..5 {
        cluster.tick_all();
        settle_matching(&mut cluster, |e| !is_install(e));
        install = take_matching(&mut cluster, is_install).into_iter().next();
        if install.is_some() {
            break;
        }
    }
    let install = install.expect("the leader sent a snapshot within five heartbeats");
    assert_eq!(install.to, 3);
    cluster.node_mut(3).step(install);
    let ready = handle_ready(cluster.node_mut(3));
    let snapshot = ready.snapshot.expect("the follower's Ready carries the snapshot");
    assert_eq!((snapshot.meta.index, &snapshot.data), (compacted_to, &image));
    assert!(
        ready.committed_entries.is_empty(),
        "compacted entries are not re-applied one by one"
    );
    cluster.in_flight.extend(ready.messages);
    assert_eq!(
        cluster.node(3).storage().snapshot_ref().meta.index,
        compacted_to,
        "snapshot installed"
    );
    assert_eq!(cluster.node(3).committed(), compacted_to);

    let y = cluster.propose(1, b"y");
    cluster.settle();
    assert_eq!(cluster.node(3).committed(), y.index);
    let applied_after: Vec<u64> = cluster.applied[&3][applied_before..]
        .iter()
        .map(|e| e.index)
        .collect();
    assert_eq!(
        applied_after,
        vec![y.index],
        "only what follows the snapshot is applied as entries"
    );
    assert_eq!(durable_log(&cluster, 3), durable_log(&cluster, 1));
}

/// A learner that falls behind compaction is brought back by snapshot too, and stays a learner.
#[test]
fn learner_behind_compaction_installs_snapshot_and_stays_a_learner() {
    let mut cluster = MemCluster::new(&[1, 2], &[3], 9, |_| {});
    let membership = Membership::new([1, 2]).with_learners([3]);
    let compacted_to = compact_past_isolated_3(&mut cluster, 3, membership, Bytes::new());
    cluster.heal();
    tick_all_and_settle(&mut cluster, 3);
    assert_eq!(cluster.node(3).committed(), compacted_to);
    assert_eq!(
        cluster.node(3).storage().snapshot_ref().meta.index,
        compacted_to,
        "via the snapshot"
    );
    assert_eq!(cluster.node(3).role(), Role::Learner);
    let _: NodeId = cluster.leader().expect("still led");
}
