//! Acceptor and learner handlers: Prepare → Promise, Accept → Accepted, Heartbeat → HeartbeatAck,
//! InstallSnapshot. Each one raises the promise if it must (durable in the same `Ready` as the
//! reply), refuses ballots below the promise with a `Nack` carrying the promise, and learns the
//! chosen prefix.

use yizhi_engine::{Entry, LogIndex, LogStorage, NodeId, Role, Snapshot, StorageError};

use crate::ballot::Ballot;
use crate::message::Message;
use crate::paxos::PaxosNode;

impl<S: LogStorage> PaxosNode<S> {
    /// Refuses `ballot` if it is below the promise; otherwise promises it (a no-op when equal).
    fn admit(&mut self, from: NodeId, ballot: Ballot) -> bool {
        if ballot < self.promised {
            let promised = self.promised;
            self.send(from, Message::Nack { promised });
            return false;
        }
        self.promise(ballot);
        true
    }

    /// Phase 1b ("Paxos Made Simple" §2.2, P1a): promise never to accept below `ballot`, and report
    /// everything accepted from `first_unchosen` on.
    pub(crate) fn on_prepare(&mut self, from: NodeId, ballot: Ballot, first_unchosen: LogIndex) {
        if !self.admit(from, ballot) {
            return;
        }
        if self.leader.is_some_and(|l| l != ballot.node()) || self.role == Role::Candidate {
            self.leader = None;
        }
        // The proposer needs time to finish phase 1 before anyone else tries.
        self.reset_election_timer();
        let first_available = self.log.first_available(&self.storage);
        let snapshot = if first_unchosen < first_available && first_available > 1 {
            match self.current_snapshot() {
                Ok(snapshot) => Some(snapshot),
                Err(_) => return, // unavailable right now; the proposer retries its phase 1
            }
        } else {
            None
        };
        let lo = first_unchosen.max(first_available);
        let accepted = self
            .log
            .entries(&self.storage, lo, self.last(), u64::MAX)
            .unwrap_or_else(|e| panic!("node {}: held slots {lo}.. unreadable: {e}", self.id()));
        let commit = self.commit;
        self.send(
            from,
            Message::Promise {
                ballot,
                commit,
                accepted,
                snapshot,
            },
        );
    }

    pub(crate) fn current_snapshot(&self) -> Result<Snapshot, StorageError> {
        match &self.pending_snapshot {
            Some(snapshot) => Ok(snapshot.clone()),
            None => self.storage.snapshot(),
        }
    }

    /// A message of the current leader's ballot arrived: follow it.
    fn follow(&mut self, ballot: Ballot) {
        if self.leading_ballot() == Some(ballot) {
            return;
        }
        if self.role == Role::Candidate || self.role == Role::Leader {
            self.become_follower(Some(ballot.node()));
        }
        self.leader = Some(ballot.node());
        if self.election_deadline_shortened {
            // The hint was wrong, or a new leader exists: give it a full deadline again.
            self.reset_election_timer();
        }
        self.ticks_since_heard = 0;
    }

    /// Phase 2b for a run of slots. The acceptor writes from the first slot of the run whose
    /// content (ballot and value) differs from what it holds; if it holds slots beyond the run, it
    /// keeps them and rewrites them in the same write (the log's write rule), because a reordered
    /// shorter run must never drop a slot that a longer run of the same ballot had it accept.
    ///
    /// Why not rewrite what it already holds: a write at slot i replaces every stored slot from i
    /// on, and a crash may tear an unsynced append after any of its entries. Rewriting held slots
    /// therefore puts acknowledged slots into the part a tear can cut: the durable log gets
    /// *shorter*, and slots this acceptor reported accepted (the leader counted them towards a
    /// quorum) are gone. Starting at the first changed slot, a resent, duplicated or reordered run
    /// of the ballot the acceptor already accepted writes nothing, and a run that extends the log
    /// only appends; a tear then loses only entries of this very write, whose `Accepted` has not
    /// left (messages wait for the fsync). What a tear can still cut is a rewrite after a change
    /// of ballot (an overwritten slot below held ones): see `write_keeping_tail`.
    pub(crate) fn on_accept(&mut self, from: NodeId, ballot: Ballot, commit: LogIndex, entries: Vec<Entry>) {
        if !self.admit(from, ballot) {
            return;
        }
        self.follow(ballot);
        let contiguous = entries.windows(2).all(|p| p[0].index + 1 == p[1].index);
        let well_formed = entries
            .iter()
            .all(|e| e.index <= commit || e.term == ballot.term());
        if !contiguous || !well_formed {
            return; // a buggy or corrupted peer; never store it
        }
        let run_last = entries.last().map_or(0, |e| e.index);
        let known = self.commit.max(self.log.first_available(&self.storage) - 1);
        self.assert_chosen_agree(&entries, known);
        let fresh: Vec<Entry> = entries.into_iter().filter(|e| e.index > known).collect();
        assert_eq!(self.promised, ballot, "accepting below the promise");
        let mut covered = None;
        if let Some(first) = fresh.first().map(|e| e.index) {
            let last = self.last();
            if first <= last + 1 {
                let fresh_last = fresh.last().expect("non-empty").index;
                covered = Some((first, fresh_last));
                let held = fresh
                    .iter()
                    .take_while(|e| self.log.entry(&self.storage, e.index).as_ref() == Some(*e))
                    .count();
                let changed: Vec<Entry> = fresh.into_iter().skip(held).collect();
                if !changed.is_empty() {
                    self.write_keeping_tail(changed, fresh_last);
                }
            }
        }
        self.learn_commit(ballot, commit, covered);
        let matched = self.matched_in(ballot);
        self.send(
            from,
            Message::Accepted {
                ballot,
                matched,
                run_last,
            },
        );
    }

    /// A chosen slot never changes: whatever a leader sends for a slot this acceptor already
    /// knows chosen must be the same value (its ballot may differ: re-proposals).
    fn assert_chosen_agree(&self, entries: &[Entry], known: LogIndex) {
        for sent in entries.iter().filter(|e| e.index <= known) {
            if let Some(held) = self.log.entry(&self.storage, sent.index) {
                assert_eq!(
                    held.payload,
                    sent.payload,
                    "node {}: chosen slot {} holds {held:?} but the leader sent {sent:?}",
                    self.id(),
                    sent.index
                );
            }
        }
    }

    /// Writes `fresh` (starting at the first changed slot) and, if the log reaches past the run,
    /// the held slots after it. Under the storage contract this is the only way to change a slot
    /// below held ones, and such a write can be torn anywhere after its first entry. It happens
    /// only when a new ballot's run changes a slot this acceptor holds from an older ballot (or an
    /// older value); the slots such a tear can cut were accepted in older ballots, and the leader
    /// of the new ballot holds its own proposal for each of them durably (it persisted its log
    /// before sending this run). Slots acknowledged in the current ballot and counted by its
    /// leader (the contiguous prefix `matched_in`) all lie below the first changed slot, so no
    /// tear of this write reaches them.
    fn write_keeping_tail(&mut self, mut fresh: Vec<Entry>, fresh_last: LogIndex) {
        let first = fresh.first().expect("called with entries").index;
        assert!(
            first > self.commit,
            "overwriting chosen slot {first} (commit {})",
            self.commit
        );
        fresh.extend(self.read_tail(fresh_last + 1));
        self.log.write(&self.storage, fresh);
    }

    /// Learns that every slot up to `leader_commit` is chosen, as far as this acceptor can tell its
    /// own value is the chosen one: a slot accepted in the leader's ballot holds the leader's value
    /// (one value per slot per ballot), and slots `covered` by the run just written hold exactly
    /// what the leader sent.
    fn learn_commit(
        &mut self,
        ballot: Ballot,
        leader_commit: LogIndex,
        covered: Option<(LogIndex, LogIndex)>,
    ) {
        let limit = leader_commit.min(self.last());
        let mut to = self.commit;
        while to < limit {
            let next = to + 1;
            let in_run = covered.is_some_and(|(lo, hi)| lo <= next && next <= hi);
            if in_run || self.log.term(&self.storage, next) == Some(ballot.term()) {
                to = next;
            } else {
                break;
            }
        }
        self.commit_to(to);
    }

    /// The highest slot up to which this acceptor knows every slot chosen or accepted in `ballot`.
    pub(crate) fn matched_in(&self, ballot: Ballot) -> LogIndex {
        let mut matched = self.commit;
        // No slot is held past the last one, so its term ends the walk.
        while self.log.term(&self.storage, matched + 1) == Some(ballot.term()) {
            matched += 1;
        }
        matched
    }

    pub(crate) fn on_heartbeat(&mut self, from: NodeId, ballot: Ballot, commit: LogIndex, read_round: u64) {
        if !self.admit(from, ballot) {
            return;
        }
        self.follow(ballot);
        self.learn_commit(ballot, commit, None);
        let matched = self.matched_in(ballot);
        self.send(
            from,
            Message::HeartbeatAck {
                ballot,
                matched,
                read_round,
            },
        );
    }

    /// The chosen prefix through `snapshot.meta.index`, as a state-machine image. Slots this
    /// acceptor holds beyond it are rewritten in the same `Ready` (the storage may drop them when
    /// it installs), so no accepted value is lost.
    pub(crate) fn on_install_snapshot(&mut self, from: NodeId, ballot: Ballot, snapshot: Snapshot) {
        if !self.admit(from, ballot) {
            return;
        }
        self.follow(ballot);
        let index = snapshot.meta.index;
        if index > self.commit {
            self.install_snapshot_keeping_tail(snapshot);
        }
        let matched = self.matched_in(ballot);
        self.send(
            from,
            Message::Accepted {
                ballot,
                matched,
                run_last: index,
            },
        );
    }

    /// Installs `snapshot` (beyond the commit index) in the next `Ready`, with the slots held
    /// after it rewritten in the same `Ready`: the storage may drop them when it installs.
    pub(crate) fn install_snapshot_keeping_tail(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        assert!(
            index > self.commit,
            "snapshot at {index} not beyond commit {}",
            self.commit
        );
        let tail = self.read_tail(index + 1);
        self.log.install_snapshot(index, tail);
        self.commit = index;
        self.pending_snapshot = Some(snapshot);
    }

    /// Every held slot from `from` to the last one.
    fn read_tail(&self, from: LogIndex) -> Vec<Entry> {
        let last = self.last();
        if from > last {
            return Vec::new();
        }
        let tail = self
            .log
            .entries(&self.storage, from, last, u64::MAX)
            .unwrap_or_else(|e| panic!("node {}: slots {from}..={last} unreadable: {e}", self.id()));
        assert_eq!(tail.len() as u64, last - from + 1, "the tail must be whole");
        tail
    }
}

#[cfg(test)]
mod tests {
    use yizhi_engine::{Engine, EntryPayload, MemStorage, Role, SnapshotMeta};

    use super::*;
    use crate::paxos::tests::{deliver, entry, flush, node, node_with, sent, value, voters3};

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
            deliver(
                &mut n,
                1,
                Message::Prepare {
                    ballot: Ballot::new(4, 1),
                    first_unchosen,
                },
            );
            assert_eq!(
                promise_snapshot(&sent(&mut n)),
                want,
                "first_unchosen {first_unchosen}"
            );
        }
        // Nothing compacted: no snapshot, whatever the prepare asks from.
        for first_unchosen in [0, 1, 2] {
            let mut n = node(2);
            deliver(
                &mut n,
                1,
                Message::Prepare {
                    ballot: Ballot::new(4, 1),
                    first_unchosen,
                },
            );
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
        deliver(
            &mut n,
            2,
            Message::Heartbeat {
                ballot: Ballot::new(1, 2),
                commit: 0,
                read_round: 0,
            },
        );
        assert_eq!(n.leader(), Some(2));
        deliver(
            &mut n,
            2,
            Message::Prepare {
                ballot: Ballot::new(2, 2),
                first_unchosen: 1,
            },
        );
        assert_eq!(n.leader(), Some(2), "the leader re-preparing stays the leader");
        deliver(
            &mut n,
            1,
            Message::Prepare {
                ballot: Ballot::new(3, 1),
                first_unchosen: 1,
            },
        );
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
        deliver(
            &mut n,
            2,
            Message::Heartbeat {
                ballot: b,
                commit: 0,
                read_round: 0,
            },
        );
        let (deadline, rng) = (n.election_deadline_ticks, n.rng.clone());
        for _ in 0..3 {
            n.tick();
            deliver(
                &mut n,
                2,
                Message::Heartbeat {
                    ballot: b,
                    commit: 0,
                    read_round: 0,
                },
            );
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
        deliver(
            &mut n,
            1,
            Message::Accept {
                ballot: b,
                commit: 2,
                entries,
            },
        );
        assert_eq!(n.committed(), 2);
        assert_eq!(
            sent(&mut n),
            vec![(
                1,
                Message::Accepted {
                    ballot: b,
                    matched: 3,
                    run_last: 3
                }
            )]
        );
    }

    #[test]
    fn a_run_with_a_gap_is_never_stored_or_acknowledged() {
        let b = Ballot::new(1, 1);
        let mut n = node(3);
        let entries = vec![entry(1, b, "a"), entry(3, b, "c")];
        deliver(
            &mut n,
            1,
            Message::Accept {
                ballot: b,
                commit: 0,
                entries,
            },
        );
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
        deliver(
            &mut n,
            1,
            Message::Accept {
                ballot: b,
                commit: 1,
                entries: vec![entry(1, b, "a")],
            },
        );
        flush(&mut n);
        assert_eq!(n.committed(), 1);
        deliver(
            &mut n,
            1,
            Message::Accept {
                ballot: b,
                commit: 1,
                entries: vec![entry(1, b, "X")],
            },
        );
    }

    #[test]
    fn commit_is_learned_only_through_slots_known_to_hold_the_leaders_value() {
        // Slot 1 was accepted in an older ballot; the run covers 2..=3 only (chosen, older ballot).
        let old = Ballot::new(1, 2);
        let b = Ballot::new(2, 1);
        let mut n = node(3);
        deliver(
            &mut n,
            2,
            Message::Accept {
                ballot: old,
                commit: 0,
                entries: vec![entry(1, old, "x")],
            },
        );
        flush(&mut n);
        let entries = vec![entry(2, old, "b"), entry(3, old, "c")];
        deliver(
            &mut n,
            1,
            Message::Accept {
                ballot: b,
                commit: 3,
                entries,
            },
        );
        assert_eq!(
            n.committed(),
            0,
            "slot 1 may hold another value than the chosen one"
        );
        assert_eq!(
            sent(&mut n),
            vec![(
                1,
                Message::Accepted {
                    ballot: b,
                    matched: 0,
                    run_last: 3
                }
            )]
        );
        deliver(
            &mut n,
            1,
            Message::Heartbeat {
                ballot: b,
                commit: 0,
                read_round: 4,
            },
        );
        assert_eq!(
            sent(&mut n),
            vec![(
                1,
                Message::HeartbeatAck {
                    ballot: b,
                    matched: 0,
                    read_round: 4
                }
            )]
        );
    }

    #[test]
    fn a_resent_slot_known_chosen_is_not_rewritten_in_the_new_ballot() {
        // The new leader re-proposed chosen slot 2 under its own ballot and sends it with slot 3:
        // the acceptor keeps what it holds for slot 2 and writes slot 3 only.
        let old = Ballot::new(1, 2);
        let b = Ballot::new(2, 1);
        let mut n = node(3);
        let entries = vec![entry(1, old, "a"), entry(2, old, "b")];
        deliver(
            &mut n,
            2,
            Message::Accept {
                ballot: old,
                commit: 2,
                entries,
            },
        );
        flush(&mut n);
        assert_eq!(n.committed(), 2);
        let entries = vec![entry(2, b, "b"), entry(3, b, "c")];
        deliver(
            &mut n,
            1,
            Message::Accept {
                ballot: b,
                commit: 2,
                entries,
            },
        );
        let ready = flush(&mut n);
        assert_eq!(ready.entries, vec![entry(3, b, "c")]);
        let replies: Vec<_> = ready.messages.into_iter().map(|e| e.msg).collect();
        assert_eq!(
            replies,
            vec![Message::Accepted {
                ballot: b,
                matched: 3,
                run_last: 3
            }]
        );
    }

    #[test]
    fn a_new_ballots_shorter_run_rewrites_the_slots_held_after_it() {
        // The log's write rule: a write never shortens the log, so slots 2 and 3, accepted in an
        // older ballot and maybe chosen, are written again after the changed slot 1.
        let old = Ballot::new(1, 2);
        let b = Ballot::new(2, 1);
        let mut n = node(3);
        let held = vec![entry(1, old, "a"), entry(2, old, "b"), entry(3, old, "c")];
        deliver(
            &mut n,
            2,
            Message::Accept {
                ballot: old,
                commit: 0,
                entries: held,
            },
        );
        flush(&mut n);
        deliver(
            &mut n,
            1,
            Message::Accept {
                ballot: b,
                commit: 0,
                entries: vec![entry(1, b, "x")],
            },
        );
        let ready = flush(&mut n);
        assert_eq!(
            ready.entries,
            vec![entry(1, b, "x"), entry(2, old, "b"), entry(3, old, "c")]
        );
        let replies: Vec<_> = ready.messages.into_iter().map(|e| e.msg).collect();
        assert_eq!(
            replies,
            vec![Message::Accepted {
                ballot: b,
                matched: 1,
                run_last: 1
            }]
        );
    }

    #[test]
    fn a_run_covering_old_ballot_chosen_slots_commits_them() {
        let old = Ballot::new(1, 2);
        let b = Ballot::new(2, 1);
        let mut n = node(3);
        let entries = vec![entry(1, old, "a"), entry(2, old, "b"), entry(3, old, "c")];
        deliver(
            &mut n,
            1,
            Message::Accept {
                ballot: b,
                commit: 3,
                entries,
            },
        );
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
        deliver(
            &mut n,
            1,
            Message::Accept {
                ballot: b,
                commit: 1,
                entries: vec![entry(1, b, "a")],
            },
        );
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
        let replies: Vec<_> = ready.messages.into_iter().map(|e| e.msg).collect();
        assert_eq!(
            replies,
            vec![Message::Accepted {
                ballot: b,
                matched: 1,
                run_last: 1
            }]
        );
    }

    #[test]
    fn a_snapshot_keeps_the_accepted_slots_after_it() {
        for last in [4, 5] {
            let b = Ballot::new(1, 1);
            let mut n = node(3);
            let entries = (1..=last).map(|i| entry(i, b, "v")).collect();
            deliver(
                &mut n,
                1,
                Message::Accept {
                    ballot: b,
                    commit: 0,
                    entries,
                },
            );
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
}
