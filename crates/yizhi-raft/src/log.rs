//! The Raft log as the engine sees it: durable entries read through `LogStorage`, plus the
//! unstable tail (and possibly a received snapshot) not yet handed to the runtime for persistence.

use yizhi_engine::{Entry, LogIndex, LogStorage, Snapshot, StorageError, Term};

#[derive(Debug)]
pub struct RaftLog<S> {
    pub storage: S,
    /// A snapshot received from the leader and not yet persisted.
    unstable_snapshot: Option<Snapshot>,
    /// Entries after the storage's (or the unstable snapshot's) last index, not yet persisted.
    /// Invariant: contiguous indexes; `unstable[0].index` is one past what storage holds for us.
    unstable: Vec<Entry>,
    /// How many leading `unstable` entries the outstanding `Ready` is persisting.
    unstable_in_progress: usize,
    /// Invariant: never decreases; `applied <= committed <= last_index()`.
    pub committed: LogIndex,
    pub applied: LogIndex,
}

impl<S: LogStorage> RaftLog<S> {
    pub fn new(storage: S, committed: LogIndex, applied: LogIndex) -> Self {
        let log = RaftLog {
            storage,
            unstable_snapshot: None,
            unstable: Vec::new(),
            unstable_in_progress: 0,
            committed,
            applied,
        };
        log.assert_invariants();
        log
    }

    fn assert_invariants(&self) {
        assert!(
            self.applied <= self.committed && self.committed <= self.last_index(),
            "log invariant broken: applied {} committed {} last {}",
            self.applied,
            self.committed,
            self.last_index()
        );
        assert!(self.unstable_in_progress <= self.unstable.len());
    }

    pub fn first_index(&self) -> LogIndex {
        match &self.unstable_snapshot {
            Some(snapshot) => snapshot.meta.index + 1,
            None => self.storage.first_index(),
        }
    }

    pub fn last_index(&self) -> LogIndex {
        if let Some(last) = self.unstable.last() {
            return last.index;
        }
        match &self.unstable_snapshot {
            Some(snapshot) => snapshot.meta.index,
            None => self.storage.last_index(),
        }
    }

    /// The last index already durable on this node (what a leader may count as its own ack).
    pub fn persisted_last_index(&self) -> LogIndex {
        if self.unstable_snapshot.is_some() {
            // Until the snapshot is durable only the old snapshot point is known to match.
            return self.storage.first_index() - 1;
        }
        match self.unstable.first() {
            Some(first) => first.index - 1,
            None => self.storage.last_index(),
        }
    }

    pub fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        if let Some(first) = self.unstable.first()
            && index >= first.index
        {
            return match self.unstable.get((index - first.index) as usize) {
                Some(entry) => Ok(entry.term),
                None => Err(StorageError::Unavailable {
                    index,
                    last_index: self.last_index(),
                }),
            };
        }
        if let Some(snapshot) = &self.unstable_snapshot {
            let meta = &snapshot.meta;
            return match index.cmp(&meta.index) {
                std::cmp::Ordering::Equal => Ok(meta.term),
                std::cmp::Ordering::Less => Err(StorageError::Compacted {
                    index,
                    first_index: meta.index + 1,
                }),
                std::cmp::Ordering::Greater => Err(StorageError::Unavailable {
                    index,
                    last_index: self.last_index(),
                }),
            };
        }
        self.storage.term(index)
    }

    pub fn last_term(&self) -> Term {
        self.term(self.last_index())
            .expect("the last index always has a term")
    }

    pub fn match_term(&self, index: LogIndex, term: Term) -> bool {
        self.term(index) == Ok(term)
    }

    /// Paper §5.4.1: a candidate's log is at least as up to date as ours.
    pub fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        let my_term = self.last_term();
        last_term > my_term || (last_term == my_term && last_index >= self.last_index())
    }

    /// Entries in `[lo, hi)` up to `max_bytes` (at least one if the range is non-empty).
    pub fn entries(&self, lo: LogIndex, hi: LogIndex, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        assert!(
            lo <= hi && hi <= self.last_index() + 1,
            "bad range [{lo}, {hi}) last {}",
            self.last_index()
        );
        if lo == hi {
            return Ok(Vec::new());
        }
        if lo < self.first_index() {
            return Err(StorageError::Compacted {
                index: lo,
                first_index: self.first_index(),
            });
        }
        let unstable_first = self.unstable.first().map_or(hi, |e| e.index);
        let mut out = if lo < unstable_first {
            self.storage.entries(lo, hi.min(unstable_first), max_bytes)?
        } else {
            Vec::new()
        };
        let mut bytes: u64 = out.iter().map(Entry::size_bytes).sum();
        let stored_all = out.last().is_none_or(|e| e.index + 1 == hi.min(unstable_first));
        if stored_all && hi > unstable_first {
            let start = (lo.max(unstable_first) - unstable_first) as usize;
            let end = (hi - unstable_first) as usize;
            for entry in &self.unstable[start..end] {
                bytes += entry.size_bytes();
                if !out.is_empty() && bytes > max_bytes {
                    break;
                }
                out.push(entry.clone());
            }
        }
        Ok(out)
    }

    /// The first index in `entries` whose term disagrees with ours (or that we lack), if any.
    fn find_conflict(&self, entries: &[Entry]) -> Option<LogIndex> {
        entries
            .iter()
            .find(|e| !self.match_term(e.index, e.term))
            .map(|e| e.index)
    }

    /// The largest index at or below `index` whose term is at most `term` (for reject hints).
    pub fn find_conflict_by_term(&self, index: LogIndex, term: Term) -> LogIndex {
        let mut i = index.min(self.last_index());
        while i > 0 {
            match self.term(i) {
                Ok(t) if t > term => i -= 1,
                _ => return i,
            }
        }
        0
    }

    /// Paper §5.3 AppendEntries receiver: append if `(prev_index, prev_term)` matches, dropping any
    /// conflicting suffix, and advance commit. Returns the last index now known to match.
    pub fn maybe_append(
        &mut self,
        prev_index: LogIndex,
        prev_term: Term,
        leader_commit: LogIndex,
        mut entries: Vec<Entry>,
    ) -> Option<LogIndex> {
        if !self.match_term(prev_index, prev_term) {
            return None;
        }
        let last_new = prev_index + entries.len() as u64;
        if let Some(conflict) = self.find_conflict(&entries) {
            assert!(
                conflict > self.committed,
                "conflict at {conflict} would truncate committed entries (commit {})",
                self.committed
            );
            entries.drain(..(conflict - prev_index - 1) as usize);
            self.append_owned(entries);
        }
        self.commit_to(leader_commit.min(last_new));
        Some(last_new)
    }

    /// The leader's fast path: one entry at the end of the log, no copy.
    pub fn push(&mut self, entry: Entry) {
        assert_eq!(entry.index, self.last_index() + 1, "push must extend the log");
        self.unstable.push(entry);
    }

    /// Appends to the unstable tail, replacing anything at or after `entries[0].index`.
    pub fn append_owned(&mut self, entries: Vec<Entry>) {
        let Some(first) = entries.first() else { return };
        assert!(
            first.index > self.committed,
            "append at {} would overwrite committed index {}",
            first.index,
            self.committed
        );
        assert!(
            first.index <= self.last_index() + 1,
            "append at {} leaves a gap",
            first.index
        );
        match self.unstable.first().map(|e| e.index) {
            Some(unstable_first) if first.index >= unstable_first => {
                let keep = (first.index - unstable_first) as usize;
                self.unstable.truncate(keep);
                self.unstable_in_progress = self.unstable_in_progress.min(keep);
            }
            _ => {
                // Replaces (part of) what storage holds: the next Ready truncates storage from here.
                self.unstable.clear();
                self.unstable_in_progress = 0;
            }
        }
        self.unstable.extend(entries);
    }

    pub fn commit_to(&mut self, index: LogIndex) {
        if index > self.committed {
            assert!(
                index <= self.last_index(),
                "commit {index} beyond last index {}",
                self.last_index()
            );
            self.committed = index;
        }
    }

    pub fn restore(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        assert!(
            index > self.committed,
            "restore at {index} not past commit {}",
            self.committed
        );
        self.unstable.clear();
        self.unstable_in_progress = 0;
        self.unstable_snapshot = Some(snapshot);
        self.committed = index;
        // The snapshot replaces the state machine, so everything up to it counts as applied.
        self.applied = index;
    }

    // ---- Ready / advance bookkeeping ----

    pub fn has_unstable(&self) -> bool {
        self.unstable_snapshot.is_some() || self.unstable.len() > self.unstable_in_progress
    }

    pub fn take_unstable_snapshot(&self) -> Option<Snapshot> {
        self.unstable_snapshot.clone()
    }

    /// Hands the unstable tail to the runtime for persistence.
    pub fn unstable_to_persist(&mut self) -> Vec<Entry> {
        self.unstable_in_progress = self.unstable.len();
        self.unstable.clone()
    }

    /// The runtime made the handed-out entries and snapshot durable.
    pub fn persisted(&mut self, snapshot_index: Option<LogIndex>) {
        if let Some(index) = snapshot_index
            && self
                .unstable_snapshot
                .as_ref()
                .is_some_and(|s| s.meta.index == index)
        {
            self.unstable_snapshot = None;
        }
        self.unstable.drain(..self.unstable_in_progress);
        self.unstable_in_progress = 0;
        self.assert_invariants();
    }

    pub fn has_committed_to_apply(&self) -> bool {
        self.committed > self.applied
    }

    pub fn committed_to_apply(&self, max_bytes: u64) -> Vec<Entry> {
        if self.committed <= self.applied {
            return Vec::new();
        }
        self.entries(self.applied + 1, self.committed + 1, max_bytes)
            .expect("committed entries after applied are in the log")
    }

    pub fn applied_to(&mut self, index: LogIndex) {
        assert!(
            index <= self.committed && index >= self.applied,
            "applied {index} outside [{}, {}]",
            self.applied,
            self.committed
        );
        self.applied = index;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yizhi_engine::{ENTRY_OVERHEAD_BYTES, MemStorage, Membership, SnapshotMeta};

    fn entry(index: LogIndex, term: Term) -> Entry {
        Entry::noop(index, term)
    }

    fn log_with(terms: &[Term]) -> RaftLog<MemStorage> {
        let mut storage = MemStorage::new_with_membership(Membership::new([1]));
        let entries: Vec<Entry> = terms
            .iter()
            .enumerate()
            .map(|(i, &t)| entry(i as u64 + 1, t))
            .collect();
        storage.append(&entries);
        RaftLog::new(storage, 0, 0)
    }

    #[test]
    fn paper_5_3_append_rejects_when_prev_does_not_match() {
        let mut log = log_with(&[1, 1, 2]);
        assert_eq!(
            log.maybe_append(3, 1, 0, vec![entry(4, 3)]),
            None,
            "term at 3 is 2, not 1"
        );
        assert_eq!(
            log.maybe_append(4, 2, 0, vec![entry(5, 3)]),
            None,
            "no entry at 4"
        );
        assert_eq!(log.maybe_append(3, 2, 0, vec![entry(4, 3)]), Some(4));
        assert_eq!(log.last_index(), 4);
    }

    #[test]
    fn paper_5_3_conflicting_suffix_is_replaced_matching_entries_kept() {
        let mut log = log_with(&[1, 1, 2, 2]);
        // Entry 2 matches, entry 3 conflicts: 3 and 4 go, the new 3 comes in.
        assert_eq!(log.maybe_append(1, 1, 0, vec![entry(2, 1), entry(3, 3)]), Some(3));
        assert_eq!(log.last_index(), 3);
        assert_eq!(log.term(3), Ok(3));
        // A stale, shorter append that matches does not truncate the longer log.
        assert_eq!(log.maybe_append(1, 1, 0, vec![entry(2, 1)]), Some(2));
        assert_eq!(log.last_index(), 3);
    }

    #[test]
    fn commit_is_bounded_by_last_new_entry_not_leader_commit() {
        let mut log = log_with(&[1, 1, 1, 1]);
        assert_eq!(log.maybe_append(1, 1, 4, vec![entry(2, 1)]), Some(2));
        assert_eq!(
            log.committed, 2,
            "only what this append proved to match may commit"
        );
    }

    #[test]
    #[should_panic(expected = "truncate committed")]
    fn truncating_committed_entries_is_a_bug() {
        let mut log = log_with(&[1, 1, 1]);
        log.commit_to(3);
        log.maybe_append(1, 1, 3, vec![entry(2, 2)]);
    }

    #[test]
    fn up_to_date_compares_last_term_then_length() {
        let log = log_with(&[1, 2, 2]);
        assert!(log.is_up_to_date(1, 3));
        assert!(log.is_up_to_date(3, 2));
        assert!(!log.is_up_to_date(2, 2));
        assert!(!log.is_up_to_date(9, 1));
    }

    #[test]
    fn find_conflict_by_term_skips_whole_terms() {
        let log = log_with(&[1, 1, 3, 3, 3, 5]);
        assert_eq!(log.find_conflict_by_term(6, 4), 5);
        assert_eq!(log.find_conflict_by_term(6, 2), 2);
        assert_eq!(log.find_conflict_by_term(6, 0), 0);
        assert_eq!(log.find_conflict_by_term(99, 9), 6);
    }

    #[test]
    fn entries_span_storage_and_unstable() {
        let mut log = log_with(&[1, 1]);
        log.append_owned(vec![entry(3, 2), entry(4, 2)]);
        let got = log.entries(1, 5, u64::MAX).expect("in range");
        assert_eq!(got.iter().map(|e| e.index).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        assert_eq!(log.persisted_last_index(), 2);
        let handed = log.unstable_to_persist();
        log.storage.append(&handed);
        log.persisted(None);
        assert_eq!(log.persisted_last_index(), 4);
    }

    #[test]
    fn truncation_during_persist_keeps_new_entries_unstable() {
        let mut log = log_with(&[1]);
        log.append_owned(vec![entry(2, 1), entry(3, 1)]);
        let handed = log.unstable_to_persist();
        // Before the runtime finishes, a new leader overwrites index 3.
        log.append_owned(vec![entry(3, 2)]);
        log.storage.append(&handed);
        log.persisted(None);
        assert_eq!(log.term(3), Ok(2));
        assert!(log.has_unstable(), "the replacing entry still needs persisting");
        assert_eq!(log.persisted_last_index(), 2);
    }

    fn indexes(entries: &[Entry]) -> Vec<LogIndex> {
        entries.iter().map(|e| e.index).collect()
    }

    /// The leader's snapshot at `(index, term)`, as a follower receives it.
    fn snapshot_at(index: LogIndex, term: Term) -> Snapshot {
        Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                membership: Membership::new([1]),
            },
            data: bytes::Bytes::from_static(b"image"),
        }
    }

    #[test]
    #[should_panic(expected = "log invariant broken: applied 0 committed 3 last 2")]
    fn new_with_commit_beyond_the_last_index_is_a_bug() {
        let storage = log_with(&[1, 1]).storage;
        RaftLog::new(storage, 3, 0);
    }

    #[test]
    #[should_panic(expected = "log invariant broken: applied 2 committed 1 last 2")]
    fn new_with_applied_beyond_commit_is_a_bug() {
        let storage = log_with(&[1, 1]).storage;
        RaftLog::new(storage, 1, 2);
    }

    /// Paper §7: between `restore` and `persisted`, the log is the received snapshot alone; the
    /// durable log is still the old one, so only the old snapshot point counts as persisted.
    #[test]
    fn restored_snapshot_defines_the_log_until_it_is_persisted() {
        let mut log = log_with(&[1, 1, 1]);
        log.restore(snapshot_at(10, 3));
        assert_eq!(log.first_index(), 11);
        assert_eq!(log.last_index(), 10);
        assert_eq!(log.persisted_last_index(), 0, "storage still starts at index 1");
        assert_eq!(log.term(10), Ok(3));
        assert_eq!(
            log.term(5),
            Err(StorageError::Compacted {
                index: 5,
                first_index: 11
            })
        );
        assert_eq!(
            log.term(11),
            Err(StorageError::Unavailable {
                index: 11,
                last_index: 10
            })
        );
        assert_eq!(
            log.entries(10, 11, u64::MAX),
            Err(StorageError::Compacted {
                index: 10,
                first_index: 11
            })
        );
        assert_eq!((log.committed, log.applied), (10, 10));

        log.append_owned(vec![entry(11, 3)]);
        assert_eq!(log.persisted_last_index(), 0, "the snapshot is not durable yet");
        assert_eq!(
            log.entries(11, 12, u64::MAX),
            Ok(vec![entry(11, 3)]),
            "read from the unstable tail alone: storage holds nothing past 3"
        );
        assert_eq!(log.take_unstable_snapshot().map(|s| s.meta.index), Some(10));
        let handed = log.unstable_to_persist();
        log.storage.apply_snapshot(snapshot_at(10, 3));
        log.storage.append(&handed);
        log.persisted(Some(10));
        assert_eq!(log.take_unstable_snapshot(), None);
        assert_eq!((log.first_index(), log.persisted_last_index()), (11, 11));
    }

    #[test]
    fn entries_from_exactly_the_first_index_after_compaction_are_readable() {
        let mut log = log_with(&[1, 1, 1, 2, 2, 2, 2, 2]);
        log.storage.compact(5, Membership::new([1]), bytes::Bytes::new());
        assert_eq!(log.first_index(), 6);
        let got = log.entries(6, 9, u64::MAX).expect("6 is the first index held");
        assert_eq!(indexes(&got), vec![6, 7, 8]);
        assert_eq!(
            log.entries(5, 9, u64::MAX),
            Err(StorageError::Compacted {
                index: 5,
                first_index: 6
            })
        );
    }

    /// The byte limit counts stored and unstable entries together, and always yields one entry.
    #[test]
    fn entries_byte_limit_spans_storage_and_unstable() {
        const ENTRY_BYTES: u64 = ENTRY_OVERHEAD_BYTES; // a no-op is all overhead
        let mut log = log_with(&[1, 1]);
        log.append_owned(vec![entry(3, 2), entry(4, 2), entry(5, 2)]);
        let cases = [
            (0, vec![1]),
            (2 * ENTRY_BYTES, vec![1, 2]),
            (3 * ENTRY_BYTES, vec![1, 2, 3]),
            (3 * ENTRY_BYTES + ENTRY_BYTES / 2, vec![1, 2, 3]),
            (4 * ENTRY_BYTES, vec![1, 2, 3, 4]),
            (u64::MAX, vec![1, 2, 3, 4, 5]),
        ];
        for (max_bytes, want) in cases {
            let got = log.entries(1, 6, max_bytes).expect("in range");
            assert_eq!(indexes(&got), want, "max_bytes {max_bytes}");
        }
    }

    #[test]
    fn entries_byte_limit_applies_to_purely_unstable_ranges() {
        const ENTRY_BYTES: u64 = ENTRY_OVERHEAD_BYTES;
        let mut log = log_with(&[1]);
        log.append_owned(vec![entry(2, 1), entry(3, 1), entry(4, 1), entry(5, 1)]);
        let cases = [
            (0, vec![2]),
            (ENTRY_BYTES - 1, vec![2]),
            (ENTRY_BYTES, vec![2]),
            (2 * ENTRY_BYTES, vec![2, 3]),
            (2 * ENTRY_BYTES + 1, vec![2, 3]),
            (3 * ENTRY_BYTES, vec![2, 3, 4]),
            (u64::MAX, vec![2, 3, 4, 5]),
        ];
        for (max_bytes, want) in cases {
            let got = log.entries(2, 6, max_bytes).expect("in range");
            assert_eq!(indexes(&got), want, "max_bytes {max_bytes}");
        }
        assert_eq!(indexes(&log.entries(3, 5, 0).expect("in range")), vec![3]);
    }

    /// An entry whose term equals the asked-for term is where the search stops.
    #[test]
    fn find_conflict_by_term_stops_at_an_entry_of_exactly_that_term() {
        let log = log_with(&[1, 1, 3, 3, 3, 5]);
        assert_eq!(log.find_conflict_by_term(6, 5), 6);
        assert_eq!(log.find_conflict_by_term(5, 3), 5);
        assert_eq!(log.find_conflict_by_term(2, 1), 2);
    }

    /// A new leader overwrites entries already in storage while an unstable tail exists: the whole
    /// tail goes, and the next Ready truncates storage from the new first entry.
    #[test]
    fn append_below_the_unstable_tail_replaces_stored_entries() {
        let mut log = log_with(&[1, 1]);
        log.append_owned(vec![entry(3, 1)]);
        log.append_owned(vec![entry(2, 2)]);
        assert_eq!(log.last_index(), 2);
        assert_eq!(log.term(2), Ok(2));
        assert_eq!(log.persisted_last_index(), 1);
        assert_eq!(log.unstable_to_persist(), vec![entry(2, 2)]);
    }

    #[test]
    fn append_into_the_middle_of_the_unstable_tail_truncates_it_there() {
        let mut log = log_with(&[1]);
        log.append_owned(vec![entry(2, 1), entry(3, 1), entry(4, 1)]);
        log.append_owned(vec![entry(3, 2)]);
        assert_eq!(log.last_index(), 3);
        assert_eq!((log.term(2), log.term(3)), (Ok(1), Ok(2)));
        assert_eq!(
            log.term(4),
            Err(StorageError::Unavailable {
                index: 4,
                last_index: 3
            })
        );
        assert_eq!(log.unstable_to_persist(), vec![entry(2, 1), entry(3, 2)]);
    }
}
