use yizhi_engine::{HardState, MemStorage, Membership};

use super::*;
use crate::ballot::Ballot;
use crate::paxos::tests::*;

#[test]
fn a_role_change_alone_is_a_ready() {
    let mut n = node(1);
    n.campaign_now();
    flush(&mut n);
    assert!(!n.has_ready());
    deliver(
        &mut n,
        2,
        Message::Nack {
            promised: Ballot::new(4, 2),
        },
    );
    assert!(n.has_ready());
    let ready = flush(&mut n);
    assert_eq!(ready.soft_state, follower_of(2));
    assert!(ready.hard_state.is_none() && ready.messages.is_empty());
}

#[test]
fn a_commit_raised_by_the_stored_snapshot_alone_is_a_ready() {
    let mut storage = MemStorage::new_with_membership(voters3());
    let b = Ballot::new(1, 2);
    storage.append(&(1..=5).map(|i| entry(i, b, "v")).collect::<Vec<_>>());
    storage.set_hard_state(HardState {
        term: b.term(),
        vote: None,
        commit: 0,
    });
    storage.compact(3, voters3(), value("image"));
    let mut n = node_with(1, storage, 1, |_| {});
    assert!(n.has_ready());
    let ready = flush(&mut n);
    assert_eq!(
        ready.hard_state,
        Some(HardState {
            term: b.term(),
            vote: None,
            commit: 3
        })
    );
    assert!(ready.soft_state.is_none() && ready.entries.is_empty() && ready.committed_entries.is_empty());
}

#[test]
fn a_proposal_alone_is_a_ready_in_a_single_node_cluster() {
    let storage = MemStorage::new_with_membership(Membership::new([1]));
    let mut n = node_with(1, storage, 1, |_| {});
    n.campaign_now();
    assert!(n.is_leader());
    flush(&mut n);
    assert!(!n.has_ready());
    n.propose(value("a")).unwrap();
    assert!(n.has_ready());
    let ready = flush(&mut n);
    assert_eq!(ready.entries.iter().map(|e| e.index).collect::<Vec<_>>(), vec![1]);
    assert!(ready.messages.is_empty() && ready.hard_state.is_none());
    assert_eq!(n.committed(), 1, "its own durable acceptance is a quorum");
}

#[test]
fn accepted_slots_are_synced_even_without_a_new_promise_and_a_commit_alone_is_not() {
    let b = Ballot::new(1, 1);
    let mut n = node(3);
    let accept = |slot, commit| accept(b, commit, vec![entry(slot, b, "v")]);
    deliver(&mut n, 1, accept(1, 0));
    assert!(flush(&mut n).must_sync, "a new promise and slot 1");
    deliver(&mut n, 1, accept(2, 0));
    let ready = flush(&mut n);
    assert!(ready.hard_state.is_none());
    assert!(ready.must_sync, "slot 2 is durable before its Accepted leaves");
    deliver(&mut n, 1, heartbeat(b, 2, 0));
    let ready = flush(&mut n);
    assert_eq!(ready.hard_state.map(|hs| hs.commit), Some(2));
    assert!(
        !ready.must_sync,
        "the commit index is a hint, written without an fsync"
    );
}

#[test]
fn report_unreachable_rewinds_the_peer_to_what_it_acknowledged() {
    let (mut n, b) = leader_with_two_proposals();
    flush(&mut n);
    deliver(&mut n, 2, accepted(b, 1, 1));
    flush(&mut n);
    n.report_unreachable(2);
    let p = &n.leadership.as_ref().unwrap().peers[&2];
    assert_eq!((p.matched, p.next, p.inflight_msgs), (1, 2, 0));
    n.report_unreachable(9);
}
