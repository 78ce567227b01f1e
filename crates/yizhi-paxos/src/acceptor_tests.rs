use yizhi_engine::{Engine, EntryPayload, MemStorage, Role, SnapshotMeta};

use super::*;
use crate::paxos::tests::*;

fn promise_snapshot(replies: &[(NodeId, Message)]) -> Option<LogIndex> {
    match replies {
        [(1, Message::Promise { snapshot, .. })] => snapshot.as_ref().map(|s| s.meta.index),
        other => panic!("expected one Promise to 1, got {other:?}"),
    }
}

/// Node 2 holding slots 1..=8, chosen, compacted through 5.
fn compacted_acceptor() -> PaxosNode<MemStorage> {
    let mut storage = MemStorage::new_with_membership(voters3());
    let b = Ballot::new(1, 3);
    let entries: Vec<Entry> = (1..=8).map(|i| entry(i, b, "v")).collect();
    storage.append(&entries);
    storage.set_hard_state(yizhi_engine::HardState {
        term: b.term(),
        vote: None,
        commit: 8,
    });
    storage.compact(5, voters3(), value("image"));
    let mut n = node_with(2, storage, 1, |_| {});
    flush(&mut n);
    n
}

#[test]
fn a_promise_carries_the_snapshot_only_when_the_prepare_starts_inside_it() {
    for (first_unchosen, want) in [(3, Some(5)), (5, Some(5)), (6, None), (7, None)] {
        let mut n = compacted_acceptor();
        deliver(&mut n, 1, prepare(Ballot::new(4, 1), first_unchosen));
        assert_eq!(
            promise_snapshot(&sent(&mut n)),
            want,
            "first_unchosen {first_unchosen}"
        );
    }
    // Nothing compacted: no snapshot, whatever the prepare asks from.
    for first_unchosen in [0, 1, 2] {
        let mut n = node(2);
        deliver(&mut n, 1, prepare(Ballot::new(4, 1), first_unchosen));
        assert_eq!(
            promise_snapshot(&sent(&mut n)),
            None,
            "first_unchosen {first_unchosen}"
        );
    }
}

#[test]
fn a_prepare_from_the_known_leader_keeps_it_another_proposer_clears_it() {
    let mut n = node(3);
    deliver(&mut n, 2, heartbeat(Ballot::new(1, 2), 0, 0));
    assert_eq!(n.leader(), Some(2));
    deliver(&mut n, 2, prepare(Ballot::new(2, 2), 1));
    assert_eq!(n.leader(), Some(2), "the leader re-preparing stays the leader");
    deliver(&mut n, 1, prepare(Ballot::new(3, 1), 1));
    assert_eq!(
        n.leader(),
        None,
        "another proposer's phase 1 means nobody leads yet"
    );
}

#[test]
fn following_the_current_leader_does_not_reset_the_randomized_timer() {
    let mut n = node(3);
    let b = Ballot::new(1, 2);
    deliver(&mut n, 2, heartbeat(b, 0, 0));
    let (deadline, rng) = (n.election_deadline_ticks, n.rng.clone());
    for _ in 0..3 {
        n.tick();
        deliver(&mut n, 2, heartbeat(b, 0, 0));
    }
    assert_eq!(n.election_deadline_ticks, deadline);
    assert_eq!(n.rng, rng, "no new deadline was drawn");
    assert_eq!(n.ticks_since_heard, 0);
    assert_eq!(n.role(), Role::Follower);
}

#[test]
fn chosen_entries_of_an_older_ballot_are_accepted_and_learned_chosen() {
    let old = Ballot::new(1, 2);
    let b = Ballot::new(2, 1);
    let mut n = node(3);
    let mut entries = vec![entry(1, old, "a"), entry(2, old, "b")];
    entries.push(entry(3, b, "c"));
    deliver(&mut n, 1, accept(b, 2, entries));
    assert_eq!(n.committed(), 2);
    assert_eq!(sent(&mut n), vec![(1, accepted(b, 3, 3))]);
}

#[test]
fn a_run_with_a_gap_is_never_stored_or_acknowledged() {
    let b = Ballot::new(1, 1);
    let mut n = node(3);
    let entries = vec![entry(1, b, "a"), entry(3, b, "c")];
    deliver(&mut n, 1, accept(b, 0, entries));
    let ready = flush(&mut n);
    assert!(ready.entries.is_empty());
    assert!(ready.messages.is_empty());
    assert_eq!(n.last(), 0);
}

#[test]
#[should_panic(expected = "chosen slot 1 holds")]
fn a_leader_sending_a_different_value_for_a_chosen_slot_is_caught() {
    let b = Ballot::new(1, 1);
    let mut n = node(3);
    deliver(&mut n, 1, accept(b, 1, vec![entry(1, b, "a")]));
    flush(&mut n);
    assert_eq!(n.committed(), 1);
    deliver(&mut n, 1, accept(b, 1, vec![entry(1, b, "X")]));
}

#[test]
fn commit_is_learned_only_through_slots_known_to_hold_the_leaders_value() {
    // Slot 1 was accepted in an older ballot; the run covers 2..=3 only (chosen, older ballot).
    let old = Ballot::new(1, 2);
    let b = Ballot::new(2, 1);
    let mut n = node(3);
    deliver(&mut n, 2, accept(old, 0, vec![entry(1, old, "x")]));
    flush(&mut n);
    let entries = vec![entry(2, old, "b"), entry(3, old, "c")];
    deliver(&mut n, 1, accept(b, 3, entries));
    assert_eq!(
        n.committed(),
        0,
        "slot 1 may hold another value than the chosen one"
    );
    assert_eq!(sent(&mut n), vec![(1, accepted(b, 0, 3))]);
    deliver(&mut n, 1, heartbeat(b, 0, 4));
    assert_eq!(sent(&mut n), vec![(1, heartbeat_ack(b, 0, 4))]);
}

#[test]
fn a_resent_slot_known_chosen_is_not_rewritten_in_the_new_ballot() {
    // The new leader re-proposed chosen slot 2 under its own ballot and sends it with slot 3:
    // the acceptor keeps what it holds for slot 2 and writes slot 3 only.
    let old = Ballot::new(1, 2);
    let b = Ballot::new(2, 1);
    let mut n = node(3);
    let entries = vec![entry(1, old, "a"), entry(2, old, "b")];
    deliver(&mut n, 2, accept(old, 2, entries));
    flush(&mut n);
    assert_eq!(n.committed(), 2);
    let entries = vec![entry(2, b, "b"), entry(3, b, "c")];
    deliver(&mut n, 1, accept(b, 2, entries));
    let ready = flush(&mut n);
    assert_eq!(ready.entries, vec![entry(3, b, "c")]);
    let replies = messages(ready);
    assert_eq!(replies, vec![accepted(b, 3, 3)]);
}

#[test]
fn a_new_ballots_shorter_run_rewrites_the_slots_held_after_it() {
    // The log's write rule: a write never shortens the log, so slots 2 and 3, accepted in an
    // older ballot and maybe chosen, are written again after the changed slot 1.
    let old = Ballot::new(1, 2);
    let b = Ballot::new(2, 1);
    let mut n = node(3);
    let held = slots_abc(old);
    deliver(&mut n, 2, accept(old, 0, held));
    flush(&mut n);
    deliver(&mut n, 1, accept(b, 0, vec![entry(1, b, "x")]));
    let ready = flush(&mut n);
    assert_eq!(
        ready.entries,
        vec![entry(1, b, "x"), entry(2, old, "b"), entry(3, old, "c")]
    );
    let replies = messages(ready);
    assert_eq!(replies, vec![accepted(b, 1, 1)]);
}

#[test]
fn a_run_covering_old_ballot_chosen_slots_commits_them() {
    let old = Ballot::new(1, 2);
    let b = Ballot::new(2, 1);
    let mut n = node(3);
    let entries = slots_abc(old);
    deliver(&mut n, 1, accept(b, 3, entries));
    assert_eq!(n.committed(), 3);
}

fn snapshot_at(index: LogIndex, term: u64) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            index,
            term,
            membership: voters3(),
        },
        data: value("image"),
    }
}

#[test]
fn a_snapshot_at_the_commit_index_is_acknowledged_not_installed() {
    let b = Ballot::new(1, 1);
    let mut n = node(3);
    deliver(&mut n, 1, accept(b, 1, vec![entry(1, b, "a")]));
    flush(&mut n);
    deliver(
        &mut n,
        1,
        Message::InstallSnapshot {
            ballot: b,
            snapshot: snapshot_at(1, b.term()),
        },
    );
    let ready = flush(&mut n);
    assert!(ready.snapshot.is_none());
    let replies = messages(ready);
    assert_eq!(replies, vec![accepted(b, 1, 1)]);
}

#[test]
fn a_snapshot_keeps_the_accepted_slots_after_it() {
    for last in [4, 5] {
        let b = Ballot::new(1, 1);
        let mut n = node(3);
        let entries = (1..=last).map(|i| entry(i, b, "v")).collect();
        deliver(&mut n, 1, accept(b, 0, entries));
        flush(&mut n);
        deliver(
            &mut n,
            1,
            Message::InstallSnapshot {
                ballot: b,
                snapshot: snapshot_at(3, b.term()),
            },
        );
        let ready = n.ready();
        assert_eq!(ready.snapshot.as_ref().map(|s| s.meta.index), Some(3));
        let slots: Vec<LogIndex> = ready.entries.iter().map(|e| e.index).collect();
        assert_eq!(
            slots,
            (4..=last).collect::<Vec<_>>(),
            "tail rewritten with the snapshot"
        );
        assert!(matches!(ready.entries[0].payload, EntryPayload::Normal(_)));
        assert_eq!(n.committed(), 3);
    }
}
