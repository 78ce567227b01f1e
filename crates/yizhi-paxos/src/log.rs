//! The acceptor's slot log as the engine sees it: what storage holds, overlaid by entries written
//! since the last `Ready` (not yet persisted).
//!
//! The one write rule (Ready contract: entries starting at or below the stored last index truncate
//! the stored log from there): **a write never shortens the log.** Every write reaches at least the
//! current last slot, so a Ready can truncate stored slots only by rewriting all of them. An
//! acceptor therefore never loses an accepted value for a slot that may be chosen.

use yizhi_engine::{Entry, LogIndex, LogStorage, StorageError, Term};

#[derive(Debug, Default)]
pub struct SlotLog {
    /// Invariant: contiguous; `unstable[0].index >= floor + 1`; it reaches the log's last slot.
    unstable: Vec<Entry>,
    /// Slots at or below it are covered by a snapshot (stored, or pending in the next Ready).
    floor: LogIndex,
}

impl SlotLog {
    pub fn new(snapshot_index: LogIndex) -> Self {
        SlotLog {
            unstable: Vec::new(),
            floor: snapshot_index,
        }
    }

    pub fn last<S: LogStorage>(&self, storage: &S) -> LogIndex {
        match self.unstable.last() {
            Some(e) => e.index,
            None => storage.last_index().max(self.floor),
        }
    }

    /// The first slot whose entry is still held (one past the snapshot).
    pub fn first_available<S: LogStorage>(&self, storage: &S) -> LogIndex {
        storage.first_index().max(self.floor + 1)
    }

    fn unstable_first(&self) -> Option<LogIndex> {
        self.unstable.first().map(|e| e.index)
    }

    pub fn term<S: LogStorage>(&self, storage: &S, index: LogIndex) -> Option<Term> {
        self.entry(storage, index).map(|e| e.term)
    }

    pub fn entry<S: LogStorage>(&self, storage: &S, index: LogIndex) -> Option<Entry> {
        if index <= self.floor || index > self.last(storage) {
            return None;
        }
        match self.unstable_first() {
            Some(first) if index >= first => Some(self.unstable[(index - first) as usize].clone()),
            _ => storage.entries(index, index + 1, u64::MAX).ok()?.pop(),
        }
    }

    /// Entries in `[lo, hi]`, stopping once `max_bytes` is exceeded (at least one is returned).
    pub fn entries<S: LogStorage>(
        &self,
        storage: &S,
        lo: LogIndex,
        hi: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        if lo <= self.floor {
            return Err(StorageError::Compacted {
                index: lo,
                first_index: self.floor + 1,
            });
        }
        let hi = hi.min(self.last(storage));
        let mut out = Vec::new();
        if lo > hi {
            return Ok(out);
        }
        let stable_end = self.unstable_first().map_or(hi + 1, |f| f.min(hi + 1));
        if lo < stable_end {
            out = storage.entries(lo, stable_end, max_bytes)?;
        }
        let mut bytes: u64 = out.iter().map(Entry::size_bytes).sum();
        if out.len() as u64 == stable_end.saturating_sub(lo) {
            let start = lo.max(stable_end);
            for index in start..=hi {
                let e = self.entry(storage, index).expect("unstable slot within bounds");
                bytes += e.size_bytes();
                if !out.is_empty() && bytes > max_bytes {
                    break;
                }
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Writes `entries` (contiguous, starting at most one past the last slot, reaching at least the
    /// last slot: the module's write rule).
    pub fn write<S: LogStorage>(&mut self, storage: &S, entries: Vec<Entry>) {
        let (Some(first), Some(end)) = (entries.first(), entries.last()) else {
            return;
        };
        let (first, end) = (first.index, end.index);
        let last = self.last(storage);
        assert!(
            first > self.floor && first <= last + 1,
            "write at {first}..={end} outside ({}, {}]",
            self.floor,
            last + 1
        );
        assert!(
            end >= last,
            "write {first}..={end} would drop accepted slots up to {last} (write rule)"
        );
        for pair in entries.windows(2) {
            assert_eq!(
                pair[0].index + 1,
                pair[1].index,
                "written entries are not contiguous"
            );
        }
        match self.unstable_first() {
            Some(u) if first >= u => {
                self.unstable.truncate((first - u) as usize);
                self.unstable.extend(entries);
            }
            _ => self.unstable = entries,
        }
    }

    /// A snapshot through `index` replaces the prefix; `tail` (the slots after it, already read by
    /// the caller) is rewritten in the same Ready, because the storage may drop it on install.
    pub fn install_snapshot(&mut self, index: LogIndex, tail: Vec<Entry>) {
        assert!(index >= self.floor, "snapshot {index} below floor {}", self.floor);
        if let Some(first) = tail.first() {
            assert_eq!(first.index, index + 1, "tail must start right after the snapshot");
        }
        self.floor = index;
        self.unstable = tail;
    }

    pub fn take_unstable(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.unstable)
    }

    pub fn has_unstable(&self) -> bool {
        !self.unstable.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yizhi_engine::{EntryPayload, MemStorage, Membership};

    fn e(index: LogIndex, term: Term) -> Entry {
        Entry {
            index,
            term,
            payload: EntryPayload::Noop,
        }
    }

    #[test]
    fn reads_overlay_unstable_on_storage() {
        let mut storage = MemStorage::new_with_membership(Membership::new([1]));
        storage.append(&[e(1, 1), e(2, 1), e(3, 1)]);
        let mut log = SlotLog::new(0);
        log.write(&storage, vec![e(2, 5), e(3, 5), e(4, 5)]);
        assert_eq!(log.last(&storage), 4);
        let terms: Vec<Term> = log
            .entries(&storage, 1, 4, u64::MAX)
            .unwrap()
            .iter()
            .map(|e| e.term)
            .collect();
        assert_eq!(terms, vec![1, 5, 5, 5]);
        assert_eq!(log.entries(&storage, 1, 4, 0).unwrap().len(), 1);
        assert_eq!(log.take_unstable().len(), 3);
    }

    #[test]
    #[should_panic(expected = "write rule")]
    fn a_write_that_would_drop_later_slots_is_refused() {
        let mut storage = MemStorage::new_with_membership(Membership::new([1]));
        storage.append(&[e(1, 1), e(2, 1), e(3, 1)]);
        let mut log = SlotLog::new(0);
        log.write(&storage, vec![e(2, 5)]);
    }

    fn v(index: LogIndex, term: Term) -> Entry {
        Entry {
            index,
            term,
            payload: EntryPayload::Normal(bytes::Bytes::from_static(b"0123456789")),
        }
    }

    fn indexes(entries: &[Entry]) -> Vec<LogIndex> {
        entries.iter().map(|e| e.index).collect()
    }

    #[test]
    fn a_pending_snapshot_raises_the_floor_and_hides_the_prefix() {
        let mut storage = MemStorage::new_with_membership(Membership::new([1]));
        storage.append(&[e(1, 1), e(2, 1), e(3, 1), e(4, 1)]);
        let mut log = SlotLog::new(0);
        assert!(!log.has_unstable());
        log.install_snapshot(2, vec![e(3, 2), e(4, 2)]);
        assert_eq!(log.first_available(&storage), 3);
        assert_eq!(log.entry(&storage, 2), None, "covered by the snapshot");
        assert_eq!(log.entry(&storage, 3).map(|e| e.term), Some(2));
        assert!(log.has_unstable());
        assert!(matches!(
            log.entries(&storage, 2, 4, u64::MAX),
            Err(StorageError::Compacted {
                index: 2,
                first_index: 3
            })
        ));
        assert_eq!(indexes(&log.take_unstable()), vec![3, 4]);
    }

    #[test]
    fn unstable_reads_stop_at_the_byte_limit_inclusively() {
        let storage = MemStorage::new_with_membership(Membership::new([1]));
        let mut log = SlotLog::new(0);
        log.write(&storage, (1..=4).map(|i| v(i, 1)).collect());
        let size = v(1, 1).size_bytes();
        assert_eq!(
            indexes(&log.entries(&storage, 1, 4, 2 * size).unwrap()),
            vec![1, 2]
        );
        assert_eq!(
            indexes(&log.entries(&storage, 1, 4, 2 * size + 1).unwrap()),
            vec![1, 2]
        );
        assert_eq!(
            indexes(&log.entries(&storage, 1, 4, 3 * size - 1).unwrap()),
            vec![1, 2]
        );
        assert_eq!(
            indexes(&log.entries(&storage, 1, 4, u64::MAX).unwrap()),
            vec![1, 2, 3, 4]
        );
    }

    #[test]
    fn a_write_below_the_unstable_part_replaces_it_and_one_inside_it_truncates_there() {
        let mut storage = MemStorage::new_with_membership(Membership::new([1]));
        storage.append(&[e(1, 1), e(2, 1)]);
        let mut log = SlotLog::new(0);
        log.write(&storage, vec![e(3, 2), e(4, 2), e(5, 2), e(6, 2)]);
        log.write(&storage, vec![e(5, 3), e(6, 3), e(7, 3)]);
        let terms: Vec<(LogIndex, Term)> = log
            .entries(&storage, 1, 7, u64::MAX)
            .unwrap()
            .iter()
            .map(|e| (e.index, e.term))
            .collect();
        assert_eq!(
            terms,
            vec![(1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (6, 3), (7, 3)]
        );
        log.write(&storage, (2..=7).map(|i| e(i, 4)).collect());
        assert_eq!(indexes(&log.take_unstable()), vec![2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn a_tail_beyond_the_stored_log_is_read_from_the_unstable_part_alone() {
        // A snapshot pending in this Ready reaches past everything stored; its tail is unstable.
        let storage = MemStorage::new_with_membership(Membership::new([1]));
        let mut log = SlotLog::new(0);
        log.install_snapshot(5, vec![e(6, 2), e(7, 2)]);
        assert_eq!(log.last(&storage), 7);
        assert_eq!(
            indexes(&log.entries(&storage, 6, 7, u64::MAX).unwrap()),
            vec![6, 7]
        );
        assert_eq!(indexes(&log.entries(&storage, 7, 7, u64::MAX).unwrap()), vec![7]);
    }
}
