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
#[path = "log_tests.rs"]
mod tests;
