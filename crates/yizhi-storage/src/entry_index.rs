//! The in-memory index of the log: every entry's term and location, plus the newest entries
//! themselves up to a byte budget. Older entries are read back from their segment on demand.

use std::collections::{BTreeMap, VecDeque};

use yizhi_engine::{Entry, EntryPayload, LogIndex, Membership, Term};

use crate::wal::RecordLocation;

/// Memory budget for the newest entries kept whole (measured by `Entry::size_bytes`). A leader
/// reads recent entries for followers a little behind, and commits read what was just appended;
/// 16 MiB is ~50,000 entries of a 256-byte put. A follower further behind is served from the
/// segment files (a pread, from the kernel's page cache when recent) at no risk: a miss is read
/// back and CRC-checked. At 64 MiB the cache held every entry since the last snapshot (up to
/// `--snapshot-count` = 100,000 puts, ~35 MB).
pub const DEFAULT_MAX_CACHED_ENTRY_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub term: Term,
    pub location: RecordLocation,
    pub size_bytes: u64,
}

#[derive(Debug)]
pub struct EntryIndex {
    /// Index of `slots[0]`; with no slots, the index the next entry is expected at.
    first: LogIndex,
    /// Invariant: `slots[i]` describes entry `first + i`.
    slots: VecDeque<Slot>,
    /// Invariant: a contiguous suffix of the indexed entries, ending at `last_index()`.
    cache: VecDeque<Entry>,
    cache_bytes: u64,
    max_cache_bytes: u64,
    /// Membership entries among the indexed ones, so `initial_state` never reads the log.
    memberships: BTreeMap<LogIndex, Membership>,
}

impl EntryIndex {
    pub fn new(first: LogIndex, max_cache_bytes: u64) -> Self {
        assert!(first >= 1, "log indexes start at 1");
        EntryIndex {
            first,
            slots: VecDeque::new(),
            cache: VecDeque::new(),
            cache_bytes: 0,
            max_cache_bytes,
            memberships: BTreeMap::new(),
        }
    }

    pub fn first_index(&self) -> LogIndex {
        self.first
    }

    /// The index of the newest entry, or `first - 1` when empty.
    pub fn last_index(&self) -> LogIndex {
        self.first + self.slots.len() as u64 - 1
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn slot(&self, index: LogIndex) -> Option<&Slot> {
        self.slots.get(index.checked_sub(self.first)? as usize)
    }

    pub fn cached(&self, index: LogIndex) -> Option<&Entry> {
        let cache_first = self.last_index() + 1 - self.cache.len() as u64;
        let entry = self.cache.get(index.checked_sub(cache_first)? as usize)?;
        assert_eq!(entry.index, index, "cache out of step with the index");
        Some(entry)
    }

    pub fn memberships(&self) -> &BTreeMap<LogIndex, Membership> {
        &self.memberships
    }

    /// Adds `entry`, first dropping any indexed entry at or after its index.
    pub fn push(&mut self, entry: Entry, location: RecordLocation) {
        assert!(
            entry.index >= self.first && entry.index <= self.last_index() + 1,
            "entry {} outside {}..={}",
            entry.index,
            self.first,
            self.last_index() + 1
        );
        self.truncate_from(entry.index);
        let size_bytes = entry.size_bytes();
        self.slots.push_back(Slot {
            term: entry.term,
            location,
            size_bytes,
        });
        if let EntryPayload::Membership(m) = &entry.payload {
            self.memberships.insert(entry.index, m.clone());
        }
        self.cache.push_back(entry);
        self.cache_bytes += size_bytes;
        while self.cache_bytes > self.max_cache_bytes {
            let evicted = self.cache.pop_front().expect("cache bytes imply cached entries");
            self.cache_bytes -= evicted.size_bytes();
        }
        assert_eq!(self.cached(self.last_index()).is_some(), !self.cache.is_empty());
    }

    /// Drops every entry at or after `index`.
    pub fn truncate_from(&mut self, index: LogIndex) {
        let keep = index.saturating_sub(self.first).min(self.slots.len() as u64) as usize;
        let dropped = self.slots.len() - keep;
        self.slots.truncate(keep);
        for _ in 0..dropped.min(self.cache.len()) {
            let entry = self.cache.pop_back().expect("counted above");
            self.cache_bytes -= entry.size_bytes();
        }
        self.memberships.split_off(&index);
    }

    /// Drops every entry at or below `index`; the next expected index is at least `index + 1`.
    pub fn drop_through(&mut self, index: LogIndex) {
        while self.first <= index && !self.slots.is_empty() {
            self.slots.pop_front();
            self.first += 1;
        }
        self.first = self.first.max(index + 1);
        if self.cache.len() > self.slots.len() {
            for _ in 0..self.cache.len() - self.slots.len() {
                let entry = self.cache.pop_front().expect("counted above");
                self.cache_bytes -= entry.size_bytes();
            }
        }
        self.memberships = self.memberships.split_off(&(index + 1));
    }

    /// Forgets everything; the next entry is expected at `first`.
    pub fn reset(&mut self, first: LogIndex) {
        self.slots.clear();
        self.cache.clear();
        self.cache_bytes = 0;
        self.memberships.clear();
        self.first = first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: LogIndex, term: Term) -> Entry {
        Entry {
            index,
            term,
            payload: EntryPayload::Noop,
        }
    }

    fn location(offset: u64) -> RecordLocation {
        RecordLocation {
            segment: 1,
            offset,
            frame_len: 26,
        }
    }

    #[test]
    fn cache_keeps_only_the_newest_entries_within_budget() {
        let mut index = EntryIndex::new(1, 3 * yizhi_engine::ENTRY_OVERHEAD_BYTES);
        for i in 1..=10 {
            index.push(entry(i, 1), location(i));
        }
        assert_eq!(index.last_index(), 10);
        assert!(index.cached(7).is_none());
        assert_eq!(index.cached(8).map(|e| e.index), Some(8));
        index.push(entry(9, 2), location(99));
        assert_eq!(index.last_index(), 9);
        assert_eq!(index.slot(9).map(|s| s.term), Some(2));
        assert_eq!(index.cached(9).map(|e| e.term), Some(2));
        index.drop_through(8);
        assert_eq!((index.first_index(), index.last_index()), (9, 9));
        assert!(index.cached(8).is_none());
        index.drop_through(20);
        assert_eq!((index.first_index(), index.last_index()), (21, 20));
    }
}
