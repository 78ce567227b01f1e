use yizhi_engine::{Engine, HardState, MemStorage, SnapshotMeta, SnapshotStatus};

use super::*;
use crate::paxos::tests::*;

fn accepts_to(msgs: &[(NodeId, Message)], peer: NodeId) -> Vec<Vec<LogIndex>> {
    msgs.iter()
        .filter_map(|(to, m)| match m {
            Message::Accept { entries, .. } if *to == peer => Some(entries.iter().map(|e| e.index).collect()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_stale_promise_does_not_count_towards_phase_1() {
    let mut n = node(1);
    n.campaign_now();
    let old = n.promised();
    n.campaign_now();
    flush(&mut n);
    deliver(&mut n, 2, promise(old, 0, vec![], None));
    assert_eq!(n.role(), Role::Candidate);
}

#[test]
fn a_snapshot_in_a_promise_is_adopted_and_phase_2_starts_after_it() {
    let (mut n, b) = candidate();
    let snapshot = Snapshot {
        meta: SnapshotMeta {
            index: 5,
            term: 9,
            membership: voters3(),
        },
        data: value("image"),
    };
    deliver(&mut n, 2, promise(b, 5, vec![], Some(snapshot)));
    assert!(n.is_leader());
    assert_eq!(n.committed(), 5);
    let ready = flush(&mut n);
    assert_eq!(ready.snapshot.map(|s| s.meta.index), Some(5));
    assert!(
        ready.entries.is_empty(),
        "nothing to re-propose after the snapshot"
    );
    let hb = |to| (to, heartbeat(b, 5, 0));
    let heartbeats: Vec<_> = ready
        .messages
        .into_iter()
        .filter(|e| matches!(e.msg, Message::Heartbeat { .. }))
        .map(|e| (e.to, e.msg))
        .collect();
    assert_eq!(heartbeats, vec![hb(2), hb(3)]);
}

#[test]
fn the_value_accepted_at_the_first_unchosen_slot_is_re_proposed() {
    // "Paxos Made Simple" §2.2 (P2c): every slot from the first unchosen one carries the value
    // accepted with the highest ballot among the promises; slot 1 is that first slot here.
    let (mut n, b) = candidate();
    let old = Ballot::new(0, 2);
    deliver(
        &mut n,
        2,
        promise(b, 0, vec![entry(1, old, "a"), entry(2, old, "b")], None),
    );
    assert!(n.is_leader());
    assert_eq!(flush(&mut n).entries, vec![entry(1, b, "a"), entry(2, b, "b")]);
}

#[test]
fn a_promised_snapshot_not_beyond_the_commit_index_is_ignored() {
    let mut storage = MemStorage::new_with_membership(voters3());
    let old = Ballot::new(1, 2);
    storage.append(&[entry(1, old, "a"), entry(2, old, "b"), entry(3, old, "c")]);
    storage.set_hard_state(HardState {
        term: old.term(),
        vote: None,
        commit: 3,
    });
    let mut n = node_with(1, storage, 1, |_| {});
    n.campaign_now();
    let b = n.promised();
    flush(&mut n);
    let snapshot = Snapshot {
        meta: SnapshotMeta {
            index: 3,
            term: old.term(),
            membership: voters3(),
        },
        data: value("image"),
    };
    deliver(&mut n, 2, promise(b, 3, vec![], Some(snapshot)));
    assert!(n.is_leader());
    assert!(flush(&mut n).snapshot.is_none());
}

#[test]
fn the_leader_counts_its_own_acceptance_only_once_durable() {
    let mut n = leader_of(node(1));
    let b = n.leading_ballot().unwrap();
    n.propose(value("a")).unwrap();
    deliver(&mut n, 2, accepted(b, 1, 1));
    assert_eq!(n.committed(), 0, "slot 1 is not durable at the leader yet");
    flush(&mut n);
    assert_eq!(n.committed(), 1);
}

#[test]
fn runs_in_flight_are_bounded_by_max_inflight_msgs() {
    let mut n = tuned_leader(|c| c.max_inflight_msgs = 1);
    n.propose(value("a")).unwrap();
    n.propose(value("b")).unwrap();
    assert_eq!(accepts_to(&sent(&mut n), 2), vec![vec![1]]);
    assert_eq!(n.leadership.as_ref().unwrap().peers[&2].inflight_msgs, 1);
}

#[test]
fn a_gap_reported_by_an_acceptor_resends_from_what_it_has() {
    let (mut n, b) = leader_with_two_proposals();
    assert_eq!(accepts_to(&sent(&mut n), 2), vec![vec![1], vec![2]]);
    deliver(&mut n, 2, accepted(b, 0, 2));
    assert_eq!(accepts_to(&sent(&mut n), 2), vec![vec![1, 2]]);
}

#[test]
fn a_gap_below_what_an_acceptor_reported_before_resends_from_its_new_report() {
    // An acceptor that once reported matched 2 restarted knowing less chosen (its commit
    // index is an unsynced hint): it now reports matched 1 for run 3..=3.
    let mut n = leader_of(node(1));
    let b = n.leading_ballot().unwrap();
    for v in ["a", "b", "c"] {
        n.propose(value(v)).unwrap();
    }
    sent(&mut n);
    let ack = |matched, run_last| accepted(b, matched, run_last);
    deliver(&mut n, 2, ack(2, 2));
    sent(&mut n);
    deliver(&mut n, 2, ack(1, 3));
    assert_eq!(accepts_to(&sent(&mut n), 2), vec![vec![2, 3]]);
    let p = &n.leadership.as_ref().unwrap().peers[&2];
    assert_eq!((p.matched, p.next), (1, 4));
}

#[test]
fn an_in_order_ack_does_not_resend_runs_still_in_flight() {
    let (mut n, b) = leader_with_two_proposals();
    sent(&mut n);
    deliver(&mut n, 2, accepted(b, 1, 1));
    assert_eq!(accepts_to(&sent(&mut n), 2), Vec::<Vec<LogIndex>>::new());
    // The heartbeat finds the pipeline moving (acked, one run in flight): no retransmission.
    n.tick();
    assert_eq!(accepts_to(&sent(&mut n), 2), Vec::<Vec<LogIndex>>::new());
}

#[test]
fn a_heartbeat_does_not_reset_the_window_of_a_fully_matched_acceptor() {
    let mut n = tuned_leader(|c| c.max_inflight_msgs = 2);
    let b = n.leading_ballot().unwrap();
    n.propose(value("a")).unwrap();
    n.propose(value("b")).unwrap();
    sent(&mut n);
    // The second run's ack overtook the first's (still counted in flight).
    deliver(&mut n, 2, accepted(b, 2, 2));
    n.tick();
    n.tick();
    sent(&mut n);
    assert_eq!(n.leadership.as_ref().unwrap().peers[&2].inflight_msgs, 1);
    n.propose(value("c")).unwrap();
    n.propose(value("d")).unwrap();
    assert_eq!(accepts_to(&sent(&mut n), 2), vec![vec![3]]);
}

#[test]
fn a_heartbeat_ack_ahead_of_next_moves_next_past_it() {
    let mut n = leader_of(node(1));
    let b = n.leading_ballot().unwrap();
    n.propose(value("a")).unwrap();
    sent(&mut n);
    n.report_unreachable(2);
    let p = &n.leadership.as_ref().unwrap().peers[&2];
    assert_eq!((p.next, p.inflight_msgs), (1, 0));
    deliver(&mut n, 2, heartbeat_ack(b, 1, 0));
    assert_eq!(n.leadership.as_ref().unwrap().peers[&2].next, 2);
    assert_eq!(accepts_to(&sent(&mut n), 2), Vec::<Vec<LogIndex>>::new());
}

#[test]
fn report_snapshot_clears_the_flag_and_a_failure_rewinds_next() {
    let mut n = leader_of(node(1));
    for (status, want_next) in [(SnapshotStatus::Finished, 7), (SnapshotStatus::Failed, 1)] {
        if let Some(p) = n.leadership.as_mut().unwrap().peers.get_mut(&2) {
            p.snapshot_in_flight = true;
            p.next = 7;
        }
        n.report_snapshot(2, status);
        let p = &n.leadership.as_ref().unwrap().peers[&2];
        assert!(!p.snapshot_in_flight);
        assert_eq!(p.next, want_next, "{status:?}");
    }
}

#[test]
fn a_peer_behind_the_compaction_gets_the_snapshot_then_slots_after_it() {
    let (n, msgs) = leader_over_six_chosen_slots(0, Some(5));
    assert!(msgs.iter().any(|(to, m)| *to == 2 && m.is_snapshot()));
    let p = &n.leadership.as_ref().unwrap().peers[&2];
    assert_eq!((p.next, p.snapshot_in_flight), (6, true));
}

#[test]
fn chosen_bytes_leave_the_uncommitted_budget() {
    let mut n = tuned_leader(|c| c.max_uncommitted_bytes = 30);
    let b = n.leading_ballot().unwrap();
    n.propose(value("aaaaaaaaaa")).unwrap();
    flush(&mut n);
    deliver(&mut n, 2, accepted(b, 1, 1));
    assert_eq!(n.committed(), 1);
    assert_eq!(n.leadership.as_ref().unwrap().uncommitted_bytes, 0);
    n.propose(value("bbbbbbbbbb")).unwrap();
}

#[test]
fn proposal_size_limits_are_inclusive_and_the_first_proposal_always_fits_the_budget() {
    let mut n = tuned_leader(|c| {
        c.max_proposal_bytes = 10;
        c.max_uncommitted_bytes = 5;
    });
    assert_eq!(
        n.propose(value("12345678901")),
        Err(ProposeError::TooLarge {
            size_bytes: 11,
            limit_bytes: 10
        })
    );
    // Nothing uncommitted: a proposal over the budget is still taken (else none ever fits).
    assert!(n.propose(value("1234567890")).is_ok());
    assert_eq!(n.leadership.as_ref().unwrap().uncommitted_bytes, 34);
    assert_eq!(
        n.propose(value("x")),
        Err(ProposeError::Backpressure { limit_bytes: 5 })
    );
}

#[test]
fn the_uncommitted_budget_admits_an_exact_fit() {
    // One entry of 10 payload bytes is 34 bytes; a second of 10 reaches 44 exactly.
    let mut n = tuned_leader(|c| c.max_uncommitted_bytes = 44);
    n.propose(value("1234567890")).unwrap();
    assert_eq!(
        n.propose(value("abcdefghij")),
        Ok(LogPosition {
            index: 2,
            term: n.promised().term()
        })
    );
    let mut m = tuned_leader(|c| c.max_uncommitted_bytes = 43);
    m.propose(value("1234567890")).unwrap();
    assert_eq!(
        m.propose(value("abcdefghij")),
        Err(ProposeError::Backpressure { limit_bytes: 43 })
    );
}

/// Node 1 holding slots 1..=6 of an older ballot, all known chosen; it wins phase 1 with node
/// 2's promise (commit `promised_commit`) and its first Ready is handled.
/// With `compacted_at`, node 1 has compacted its log up to that slot first.
fn leader_over_six_chosen_slots(
    promised_commit: LogIndex,
    compacted_at: Option<LogIndex>,
) -> (PaxosNode<MemStorage>, Vec<(NodeId, Message)>) {
    let mut storage = MemStorage::new_with_membership(voters3());
    let old = Ballot::new(1, 2);
    let entries: Vec<Entry> = (1..=6).map(|i| entry(i, old, "v")).collect();
    storage.append(&entries);
    storage.set_hard_state(HardState {
        term: old.term(),
        vote: None,
        commit: 6,
    });
    if let Some(index) = compacted_at {
        storage.compact(index, voters3(), value("image"));
    }
    let mut n = node_with(1, storage, 1, |_| {});
    n.campaign_now();
    let b = n.promised();
    flush(&mut n);
    deliver(&mut n, 2, promise(b, promised_commit, vec![], None));
    assert!(n.is_leader());
    let first = sent(&mut n);
    (n, first)
}

#[test]
fn a_promiser_behind_is_sent_exactly_the_slots_after_its_commit() {
    let (n, first) = leader_over_six_chosen_slots(2, None);
    assert_eq!(accepts_to(&first, 2), vec![vec![3, 4, 5, 6]]);
    let p = &n.leadership.as_ref().unwrap().peers[&2];
    assert_eq!((p.matched, p.known_chosen, p.next), (0, 2, 7));
}

#[test]
fn a_non_promiser_starts_at_the_first_unchosen_slot_and_a_stall_rewinds_it_to_its_ack() {
    // Node 3's promise was not among the winning ones: it is sent nothing at first (slot 7
    // would be the first unchosen one), not the whole log.
    let (mut n, first) = leader_over_six_chosen_slots(6, None);
    let b = n.leading_ballot().unwrap();
    assert_eq!(accepts_to(&first, 3), Vec::<Vec<LogIndex>>::new());
    let p = &n.leadership.as_ref().unwrap().peers[&3];
    assert_eq!((p.matched, p.known_chosen, p.next), (0, 0, 7));
    deliver(&mut n, 3, heartbeat_ack(b, 4, 0));
    n.tick();
    assert_eq!(accepts_to(&sent(&mut n), 3), vec![vec![5, 6]]);
}

#[test]
fn a_reply_below_the_promised_commit_means_a_restart_and_the_slots_are_resent() {
    // Node 2 promised knowing 1..=6 chosen, then restarted without its (unsynced) commit hint.
    let (mut n, first) = leader_over_six_chosen_slots(6, None);
    let b = n.leading_ballot().unwrap();
    assert_eq!(accepts_to(&first, 2), Vec::<Vec<LogIndex>>::new());
    deliver(&mut n, 2, heartbeat_ack(b, 2, 0));
    let p = &n.leadership.as_ref().unwrap().peers[&2];
    assert_eq!((p.matched, p.known_chosen), (2, 2));
    n.tick();
    assert_eq!(accepts_to(&sent(&mut n), 2), vec![vec![3, 4, 5, 6]]);
}

#[test]
fn a_commit_index_in_a_promise_never_counts_towards_choosing() {
    // "Paxos Made Simple" §2.2: a value is chosen when a majority accepted it. Node 2 promised
    // knowing 1..=3 chosen; node 1 adopts and re-proposes them, and sends node 2 nothing. Only
    // node 2's first reply in the new ballot, which reports the same knowledge, is counted.
    let mut n = node(1);
    let old = Ballot::new(1, 2);
    deliver(&mut n, 2, prepare(old, 1));
    flush(&mut n);
    n.campaign_now();
    let b = n.promised();
    flush(&mut n);
    let accepted = slots_abc(old);
    deliver(&mut n, 2, promise(b, 3, accepted, None));
    assert!(n.is_leader());
    let msgs = sent(&mut n);
    assert_eq!(accepts_to(&msgs, 2), Vec::<Vec<LogIndex>>::new());
    assert_eq!(accepts_to(&msgs, 3), vec![vec![1, 2, 3]]);
    assert_eq!(n.leadership.as_ref().unwrap().self_matched, 3);
    assert_eq!(n.committed(), 0, "the promise's commit index is no acceptance");
    deliver(&mut n, 2, heartbeat_ack(b, 3, 0));
    assert_eq!(n.committed(), 3);
}

#[test]
fn a_new_leader_does_not_resend_what_a_promiser_already_knows_chosen() {
    let (n, first) = leader_over_six_chosen_slots(6, Some(5));
    let b = n.leading_ballot().unwrap();
    let to_2: Vec<Message> = first
        .into_iter()
        .filter(|(to, _)| *to == 2)
        .map(|(_, m)| m)
        .collect();
    assert_eq!(
        to_2,
        vec![heartbeat(b, 6, 0)],
        "node 2 promised with commit 6: it needs neither the snapshot nor slot 6"
    );
}
