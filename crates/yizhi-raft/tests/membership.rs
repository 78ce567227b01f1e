//! Membership changes (Raft thesis §4): joint consensus for voters (§4.3), the configuration in
//! force on append and reverted on truncation (§4.1), the leader's automatic leave of the joint
//! configuration, a removed leader handing over (§4.2.2), learners (§4.2.1).

use bytes::Bytes;
use yizhi_engine::testkit::TestEngine;
use yizhi_engine::{
    ConfChange, ConfChangeError, ConfChangeKind, Engine, EntryPayload, MemStorage, Membership, NodeId,
    ProposeError, Role,
};
use yizhi_raft::ConfChangeProposeError;
use yizhi_raft::testkit::MemCluster;

use ConfChangeKind::{AddLearner, AddVoter, PromoteLearner, Remove};

fn cluster_led_by_1(voters: &[NodeId]) -> MemCluster {
    let mut cluster = MemCluster::new(voters, &[], 11, |_| {});
    assert_eq!(cluster.campaign(1), Some(1));
    cluster
}

/// A new member starts knowing no configuration: it learns it from the leader's log.
fn start_empty(cluster: &mut MemCluster, id: NodeId) {
    cluster
        .crashed
        .insert(id, MemStorage::new_with_membership(Membership::default()));
    cluster.restart(id);
    assert_eq!(
        cluster.node(id).role(),
        Role::Learner,
        "no vote before it is told"
    );
}

fn change(cluster: &mut MemCluster, leader: NodeId, kind: ConfChangeKind, node: NodeId) {
    let changes = [ConfChange::new(kind, node)];
    cluster
        .node_mut(leader)
        .propose_conf_change(&changes)
        .expect("change accepted");
}

fn membership(cluster: &MemCluster, id: NodeId) -> Membership {
    cluster.node(id).status().membership
}

/// The configurations the log of `id` holds, in order.
fn config_entries(cluster: &MemCluster, id: NodeId) -> Vec<Membership> {
    cluster.applied[&id]
        .iter()
        .filter_map(|entry| match &entry.payload {
            EntryPayload::Membership(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

/// §4.3: C_old,new is committed by both majorities, then the leader appends C_new on its own.
#[test]
fn adding_a_voter_passes_through_the_joint_configuration_and_leaves_it() {
    let mut cluster = cluster_led_by_1(&[1, 2, 3]);
    start_empty(&mut cluster, 4);
    change(&mut cluster, 1, AddVoter, 4);
    cluster.settle();
    let joint = Membership::new([1, 2, 3]).enter_joint(&[ConfChange::new(AddVoter, 4)]);
    let final_config = Membership::new([1, 2, 3, 4]);
    for id in 1..=4 {
        assert_eq!(membership(&cluster, id), final_config, "node {id}");
    }
    assert_eq!(
        config_entries(&cluster, 1),
        vec![joint.unwrap(), final_config.clone()]
    );
    assert_eq!(cluster.node(4).role(), Role::Follower);
    // The new voter counts: with 2 and 3 cut off, 1 and 4 are not a majority of four.
    cluster.isolate(2);
    cluster.isolate(3);
    let x = cluster.node_mut(1).propose(Bytes::from_static(b"x")).unwrap();
    cluster.settle();
    assert!(cluster.node(1).committed() < x.index, "2 of 4 must not commit");
    cluster.heal();
    cluster.tick_all();
    cluster.settle();
    assert!(cluster.node(1).committed() >= x.index);
}

/// Holds every message the leader's next Ready sends except the ones to `to`, which are delivered.
fn deliver_leader_batch_to(cluster: &mut MemCluster, leader: NodeId, to: NodeId) {
    cluster.process_ready(leader);
    let batch: Vec<_> = cluster.in_flight.drain(..).collect();
    for envelope in batch {
        if envelope.to == to {
            cluster.node_mut(to).step(envelope);
        }
    }
    cluster.process_ready(to);
    cluster.in_flight.clear();
}

/// §4.1: a follower uses a configuration as soon as the entry is in its log, committed or not,
/// and keeps using it after a restart.
#[test]
fn a_configuration_is_in_force_on_append_and_after_restart_before_it_commits() {
    let mut cluster = cluster_led_by_1(&[1, 2, 3]);
    change(&mut cluster, 1, Remove, 3);
    deliver_leader_batch_to(&mut cluster, 1, 2);
    let joint = Membership::new([1, 2, 3])
        .enter_joint(&[ConfChange::new(Remove, 3)])
        .unwrap();
    assert_eq!(membership(&cluster, 2), joint);
    let entry_index = cluster.node(2).status().last_index;
    assert!(cluster.node(2).committed() < entry_index, "not committed yet");
    cluster.crash(2);
    cluster.restart(2);
    assert_eq!(
        membership(&cluster, 2),
        joint,
        "restored from the uncommitted entry"
    );
}

/// §4.1: when a new leader overwrites an uncommitted configuration entry, the follower goes back
/// to the configuration before it.
#[test]
fn a_truncated_configuration_entry_is_no_longer_in_force() {
    let mut cluster = cluster_led_by_1(&[1, 2, 3, 4, 5]);
    change(&mut cluster, 1, Remove, 5);
    deliver_leader_batch_to(&mut cluster, 1, 2);
    assert!(membership(&cluster, 2).is_joint());
    cluster.crash(1);
    cluster.isolate(2);
    let mut ticks = 0;
    let leader = loop {
        cluster.tick_all();
        cluster.settle();
        match cluster.leader() {
            Some(leader) if leader != 1 => break leader,
            _ => ticks += 1,
        }
        assert!(ticks < 1_000, "3, 4 and 5 elect no leader");
    };
    let y = cluster
        .node_mut(leader)
        .propose(Bytes::from_static(b"y"))
        .unwrap();
    cluster.settle();
    cluster.heal();
    cluster.tick_all();
    cluster.settle();
    assert_eq!(membership(&cluster, 2), Membership::new([1, 2, 3, 4, 5]));
    assert!(cluster.node(2).committed() >= y.index);
}

/// §4.2.2: a leader that removes itself leads until C_new commits, then hands over (TimeoutNow)
/// without waiting for an election timeout, and never campaigns again.
#[test]
fn a_leader_that_removes_itself_steps_down_once_the_new_configuration_commits() {
    let mut cluster = cluster_led_by_1(&[1, 2, 3]);
    change(&mut cluster, 1, Remove, 1);
    cluster.settle();
    let leader = cluster.leader().expect("a successor, with no tick");
    assert_ne!(leader, 1);
    assert_eq!(membership(&cluster, leader), Membership::new([2, 3]));
    assert_eq!(cluster.node(1).role(), Role::Learner);
    let z = cluster
        .node_mut(leader)
        .propose(Bytes::from_static(b"z"))
        .unwrap();
    cluster.isolate(1);
    cluster.settle();
    assert!(
        cluster.node(leader).committed() >= z.index,
        "2 and 3 commit alone"
    );
    for _ in 0..100 {
        cluster.tick(1);
    }
    assert_eq!(
        cluster.node(1).role(),
        Role::Learner,
        "a removed node never campaigns"
    );
}

/// §4.2.1: a learner joins in one step, receives the log, then is promoted through a joint step.
#[test]
fn a_learner_joins_in_one_step_and_is_promoted_through_the_joint_configuration() {
    let mut cluster = cluster_led_by_1(&[1, 2, 3]);
    start_empty(&mut cluster, 4);
    change(&mut cluster, 1, AddLearner, 4);
    cluster.settle();
    let with_learner = Membership::new([1, 2, 3]).with_learners([4]);
    assert_eq!(config_entries(&cluster, 4), vec![with_learner.clone()]);
    assert_eq!(cluster.node(4).role(), Role::Learner);
    change(&mut cluster, 1, PromoteLearner, 4);
    cluster.settle();
    assert_eq!(membership(&cluster, 4), Membership::new([1, 2, 3, 4]));
    assert_eq!(cluster.node(4).role(), Role::Follower);
    assert_eq!(config_entries(&cluster, 4).len(), 3, "learner, joint, new");
}

#[test]
fn refused_changes_name_why_and_append_nothing() {
    let mut cluster = cluster_led_by_1(&[1, 2, 3]);
    let add_4 = [ConfChange::new(AddVoter, 4)];
    assert_eq!(
        cluster.node_mut(2).propose_conf_change(&add_4),
        Err(ConfChangeProposeError::Propose(ProposeError::NotLeader {
            leader: Some(1)
        }))
    );
    assert_eq!(
        cluster
            .node_mut(1)
            .propose_conf_change(&[ConfChange::new(AddVoter, 2)]),
        Err(ConfChangeProposeError::Invalid(ConfChangeError::AlreadyMember(2)))
    );
    let position = cluster.node_mut(1).propose_conf_change(&add_4).unwrap();
    let last = cluster.node(1).status().last_index;
    assert_eq!(
        cluster
            .node_mut(1)
            .propose_conf_change(&[ConfChange::new(AddLearner, 5)]),
        Err(ConfChangeProposeError::InProgress {
            index: position.index
        })
    );
    assert_eq!(cluster.node(1).status().last_index, last, "nothing appended");
}

/// Thesis §4.1's erratum: a new leader changes nothing before an entry of its term commits.
#[test]
fn a_new_leader_changes_membership_only_after_committing_in_its_term() {
    let mut cluster = MemCluster::new(&[1, 2, 3], &[], 11, |_| {});
    cluster.node_mut(1).start_campaign();
    while cluster.node(1).role() != Role::Leader {
        cluster.process_all_ready();
        assert!(cluster.deliver_one(), "the campaign stalled");
    }
    let add_4 = [ConfChange::new(AddVoter, 4)];
    assert_eq!(
        cluster.node_mut(1).propose_conf_change(&add_4),
        Err(ConfChangeProposeError::LeaderNotReady)
    );
    cluster.settle();
    assert!(cluster.node_mut(1).propose_conf_change(&add_4).is_ok());
}

/// Paper §7 with §4: a member added after the leader compacted its log gets the snapshot (whose
/// configuration does not name it yet), then the configuration entries after it, and keeps both
/// across a restart.
#[test]
fn a_member_added_past_compaction_learns_the_snapshot_then_its_own_entry() {
    let mut cluster = cluster_led_by_1(&[1, 2, 3]);
    for i in 0..5u8 {
        cluster.node_mut(1).propose(Bytes::from(vec![i])).unwrap();
    }
    cluster.settle();
    let compacted_to = cluster.node(1).committed();
    let image = Bytes::from_static(b"image");
    cluster
        .node_mut(1)
        .storage_mut()
        .compact(compacted_to, Membership::new([1, 2, 3]), image.clone());
    start_empty(&mut cluster, 4);
    change(&mut cluster, 1, AddLearner, 4);
    cluster.settle();
    let snapshot = cluster.node(4).storage().snapshot_ref().clone();
    assert_eq!((snapshot.meta.index, snapshot.data), (compacted_to, image));
    let with_learner = Membership::new([1, 2, 3]).with_learners([4]);
    assert_eq!(membership(&cluster, 4), with_learner);
    change(&mut cluster, 1, PromoteLearner, 4);
    cluster.settle();
    cluster.crash(4);
    cluster.restart(4);
    assert_eq!(membership(&cluster, 4), Membership::new([1, 2, 3, 4]));
    assert_eq!(cluster.node(4).role(), Role::Follower);
}

/// An append resent (a lost acknowledgement, a duplicated packet) carries a configuration entry
/// the follower tracks already: nothing changes and nothing breaks.
#[test]
fn a_resent_configuration_entry_changes_nothing() {
    let mut cluster = cluster_led_by_1(&[1, 2, 3]);
    change(&mut cluster, 1, AddLearner, 4);
    cluster.process_ready(1);
    let to_2: Vec<_> = cluster.in_flight.iter().filter(|e| e.to == 2).cloned().collect();
    assert!(!to_2.is_empty());
    // Twice, before the entry commits: the second copy is accepted again, not answered early.
    for envelope in to_2.iter().chain(&to_2) {
        cluster.node_mut(2).step(envelope.clone());
        cluster.process_ready(2);
    }
    let with_learner = Membership::new([1, 2, 3]).with_learners([4]);
    assert_eq!(membership(&cluster, 2), with_learner);
    cluster.settle();
    assert_eq!(membership(&cluster, 2), with_learner);
}

/// Paper §7 with §4: a follower restored from a snapshot takes the snapshot's configuration,
/// even when no configuration entry follows it.
#[test]
fn a_snapshot_brings_its_configuration() {
    let mut cluster = cluster_led_by_1(&[1, 2, 3]);
    cluster.isolate(3);
    change(&mut cluster, 1, AddLearner, 4);
    cluster.settle();
    let with_learner = Membership::new([1, 2, 3]).with_learners([4]);
    assert_eq!(membership(&cluster, 1), with_learner);
    assert_eq!(membership(&cluster, 3), Membership::new([1, 2, 3]));
    let compacted_to = cluster.node(1).committed();
    cluster
        .node_mut(1)
        .storage_mut()
        .compact(compacted_to, with_learner.clone(), Bytes::new());
    cluster.heal();
    cluster.tick_all();
    cluster.settle();
    assert_eq!(cluster.node(3).storage().snapshot_ref().meta.index, compacted_to);
    assert_eq!(membership(&cluster, 3), with_learner);
}

/// A new member's progress starts just past the leader's log, so the first append it gets is an
/// empty probe at the configuration entry (etcd-io/raft starts new progress the same way).
#[test]
fn a_new_member_is_first_probed_at_the_end_of_the_leaders_log() {
    let mut cluster = cluster_led_by_1(&[1, 2, 3]);
    start_empty(&mut cluster, 4);
    let position = cluster
        .node_mut(1)
        .propose_conf_change(&[ConfChange::new(AddLearner, 4)])
        .unwrap();
    cluster.process_ready(1);
    let first = cluster
        .in_flight
        .iter()
        .find(|e| e.to == 4)
        .expect("an append to the new member")
        .clone();
    match first.msg.kind {
        yizhi_raft::MessageKind::Append {
            prev_index, entries, ..
        } => assert_eq!((prev_index, entries.len()), (position.index, 0)),
        other => panic!("expected an append, got {other:?}"),
    }
}

/// One change at a time is counted against what is committed right now, not at the next Ready.
#[test]
fn the_next_change_is_accepted_as_soon_as_the_last_one_commits() {
    let mut cluster = cluster_led_by_1(&[1, 2, 3]);
    let position = cluster
        .node_mut(1)
        .propose_conf_change(&[ConfChange::new(AddLearner, 4)])
        .unwrap();
    while cluster.node(1).committed() < position.index {
        if !cluster.deliver_one() {
            assert!(cluster.process_all_ready(), "the change stalled");
        }
    }
    assert!(
        cluster
            .node_mut(1)
            .propose_conf_change(&[ConfChange::new(Remove, 4)])
            .is_ok()
    );
}

/// Once a member is removed, the leader forgets its progress and sends it nothing more.
#[test]
fn a_removed_member_hears_nothing_more_from_the_leader() {
    let mut cluster = cluster_led_by_1(&[1, 2, 3]);
    change(&mut cluster, 1, Remove, 3);
    cluster.settle();
    assert_eq!(membership(&cluster, 1), Membership::new([1, 2]));
    assert!(cluster.node(1).progress_of(3).is_none());
    cluster.node_mut(1).propose(Bytes::from_static(b"after")).unwrap();
    cluster.process_ready(1);
    assert!(
        cluster.in_flight.iter().all(|envelope| envelope.to != 3),
        "{:?}",
        cluster.in_flight
    );
}
