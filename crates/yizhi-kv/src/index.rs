//! The in-memory key index (etcd's `treeIndex`): for every key, the revisions that wrote it.
//! Values live in the backend under their revision; the index keeps what compares, filters and
//! sorts need without touching it.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::error::KvError;
use crate::revision::Revision;
use crate::types::LeaseId;

/// One write to one key, as the index remembers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub revision: Revision,
    pub tombstone: bool,
    pub create_revision: i64,
    pub version: i64,
    pub lease: LeaseId,
}

/// The keys a request addresses, decoded from etcd's `(key, range_end)` convention.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum KeyRange {
    Single(Bytes),
    /// Every key `>= start` (`range_end == "\0"`; with an empty start, every key).
    From(Bytes),
    /// `[start, end)`; empty when `end <= start`, as in etcd.
    Between(Bytes, Bytes),
}

impl KeyRange {
    pub fn new(key: &Bytes, range_end: &Bytes) -> Result<KeyRange, KvError> {
        if range_end.as_ref() == b"\0" {
            return Ok(KeyRange::From(key.clone()));
        }
        if key.is_empty() {
            return Err(KvError::EmptyKey);
        }
        if range_end.is_empty() {
            Ok(KeyRange::Single(key.clone()))
        } else {
            Ok(KeyRange::Between(key.clone(), range_end.clone()))
        }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeyRange::Single(k) => k.as_ref() == key,
            KeyRange::From(start) => key >= start.as_ref(),
            KeyRange::Between(start, end) => key >= start.as_ref() && key < end.as_ref(),
        }
    }
}

/// Invariant: every history is non-empty, strictly increasing in revision and never holds two
/// tombstones in a row (only live keys can be deleted). It starts with a tombstone only when that
/// tombstone sits exactly at the compact revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct KeyIndex {
    keys: BTreeMap<Bytes, Vec<IndexEntry>>,
}

impl KeyIndex {
    /// The entries of `history` at or below `main`, newest last.
    fn visible(history: &[IndexEntry], main: i64) -> &[IndexEntry] {
        let end = history.partition_point(|e| e.revision.main <= main);
        &history[..end]
    }

    /// The live entry of `key` at revision `main`, if the key existed then.
    pub fn get(&self, key: &[u8], main: i64) -> Option<IndexEntry> {
        let history = self.keys.get(key)?;
        Self::visible(history, main)
            .last()
            .filter(|e| !e.tombstone)
            .copied()
    }

    fn histories<'a>(
        &'a self,
        range: &'a KeyRange,
    ) -> Box<dyn Iterator<Item = (&'a Bytes, &'a Vec<IndexEntry>)> + 'a> {
        match range {
            KeyRange::Single(k) => Box::new(self.keys.get_key_value(k).into_iter()),
            KeyRange::From(start) => Box::new(self.keys.range::<Bytes, _>(start..)),
            KeyRange::Between(start, end) if end <= start => Box::new(std::iter::empty()),
            KeyRange::Between(start, end) => Box::new(self.keys.range::<Bytes, _>(start..end)),
        }
    }

    /// Keys live at revision `main` within `range`, in key order.
    pub fn live_in<'a>(
        &'a self,
        range: &'a KeyRange,
        main: i64,
    ) -> impl Iterator<Item = (&'a Bytes, IndexEntry)> + 'a {
        self.histories(range).filter_map(move |(key, history)| {
            let entry = Self::visible(history, main).last()?;
            (!entry.tombstone).then_some((key, *entry))
        })
    }

    pub fn push(&mut self, key: Bytes, entry: IndexEntry) {
        let history = self.keys.entry(key).or_default();
        if let Some(last) = history.last() {
            assert!(
                last.revision < entry.revision,
                "index revision going back: {:?} -> {:?}",
                last.revision,
                entry.revision
            );
            assert!(!(last.tombstone && entry.tombstone), "deleting a deleted key");
        }
        history.push(entry);
    }

    /// Writes to keys in `range` with main revision in `[from, to]`, each with the entry before
    /// it (for `prev_kv`), in revision order.
    pub fn writes_between(
        &self,
        range: &KeyRange,
        from: i64,
        to: i64,
    ) -> Vec<(Bytes, IndexEntry, Option<IndexEntry>)> {
        let mut writes = Vec::new();
        for (key, history) in self.histories(range) {
            let start = history.partition_point(|e| e.revision.main < from);
            for i in start..history.len() {
                if history[i].revision.main > to {
                    break;
                }
                let prev = i.checked_sub(1).map(|p| history[p]);
                writes.push((key.clone(), history[i], prev));
            }
        }
        writes.sort_by_key(|(_, entry, _)| entry.revision);
        writes
    }

    /// Drops every entry that no read at or above `main` can see (etcd's compaction): for each
    /// key, the entries older than its newest entry at or below `main`, and that newest entry too
    /// when it is a tombstone. Returns the dropped revisions so the backend can drop the values.
    pub fn compact(&mut self, main: i64) -> Vec<Revision> {
        let mut dropped = Vec::new();
        self.keys.retain(|_, history| {
            let visible = Self::visible(history, main).len();
            if visible == 0 {
                return true;
            }
            // A tombstone exactly at `main` stays until the next compaction: a watch may start
            // at the compact revision and must still see that delete.
            let newest = history[visible - 1];
            let keep_from = if newest.tombstone && newest.revision.main < main {
                visible
            } else {
                visible - 1
            };
            dropped.extend(history.drain(..keep_from).map(|e| e.revision));
            !history.is_empty()
        });
        dropped.sort();
        dropped
    }

    /// Every key's newest entry when it is live (lease attachment, hashing).
    pub fn latest_live(&self) -> impl Iterator<Item = (&Bytes, IndexEntry)> {
        self.keys
            .iter()
            .filter_map(|(k, h)| h.last().filter(|e| !e.tombstone).map(|e| (k, *e)))
    }
}
