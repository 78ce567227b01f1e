//! The in-memory key index (etcd's `treeIndex`): for every key, the revisions that wrote it.
//! Values live in the backend under their revision; the index keeps what compares, filters and
//! sorts need without touching it.

use std::collections::BTreeMap;
use std::num::NonZeroI64;
use std::ops::Bound;

use bytes::Bytes;

use crate::error::KvError;
use crate::revision::Revision;
use crate::types::LeaseId;

/// One write to one key, as the index hands it out (it stores it packed: `StoredEntry`).
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

/// Keys of at most this many bytes are stored inside the map's node (`IndexKey` stays 24 bytes).
pub(crate) const INLINE_KEY_BYTES: usize = 22;

/// A key as the index stores it: always a copy, so the index never keeps a request's or a
/// decoded record's buffer alive, and exactly sized. A short key needs no allocation at all;
/// a longer one, one allocation of its length. Compares, orders and hashes as its bytes.
#[derive(Clone)]
pub(crate) enum IndexKey {
    /// Invariant: `len <= INLINE_KEY_BYTES`; the bytes past `len` are zero.
    Inline { len: u8, bytes: [u8; INLINE_KEY_BYTES] },
    /// Invariant: longer than `INLINE_KEY_BYTES`, so one key has one representation.
    Heap(Box<[u8]>),
}

impl IndexKey {
    pub fn new(key: &[u8]) -> IndexKey {
        if key.len() <= INLINE_KEY_BYTES {
            let mut bytes = [0u8; INLINE_KEY_BYTES];
            bytes[..key.len()].copy_from_slice(key);
            IndexKey::Inline {
                len: key.len() as u8,
                bytes,
            }
        } else {
            IndexKey::Heap(key.into())
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            IndexKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            IndexKey::Heap(bytes) => bytes,
        }
    }

    /// An owned copy for a response (a `KeyValue`, an event).
    pub fn to_bytes(&self) -> Bytes {
        Bytes::copy_from_slice(self.as_bytes())
    }
}

impl std::borrow::Borrow<[u8]> for IndexKey {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

// By bytes, as `Borrow<[u8]>` requires: map lookups by `&[u8]` must agree with the map's order.
impl PartialEq for IndexKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for IndexKey {}

impl PartialOrd for IndexKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for IndexKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl std::fmt::Debug for IndexKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "b\"{}\"", self.as_bytes().escape_ascii())
    }
}

/// An [`IndexEntry`] as a history stores it, in 40 bytes: a tombstone is `version == 0` (a delete
/// has version 0, a live key at least 1), and `main` is never 0 (the first write is revision 2),
/// which gives `History` a niche for its tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct StoredEntry {
    main: NonZeroI64,
    sub: i64,
    create_revision: i64,
    version: i64,
    lease: LeaseId,
}

impl StoredEntry {
    fn pack(entry: IndexEntry) -> StoredEntry {
        assert_eq!(
            entry.tombstone,
            entry.version == 0,
            "a tombstone has version 0 and only a tombstone does: {entry:?}"
        );
        let main =
            NonZeroI64::new(entry.revision.main).unwrap_or_else(|| panic!("revision 0 written: {entry:?}"));
        StoredEntry {
            main,
            sub: entry.revision.sub,
            create_revision: entry.create_revision,
            version: entry.version,
            lease: entry.lease,
        }
    }

    fn unpack(self) -> IndexEntry {
        IndexEntry {
            revision: Revision::new(self.main.get(), self.sub),
            tombstone: self.version == 0,
            create_revision: self.create_revision,
            version: self.version,
            lease: self.lease,
        }
    }

    fn main(&self) -> i64 {
        self.main.get()
    }
}

/// One key's writes, oldest first. Most keys are written once between compactions: that entry
/// lives in the map's node, and only a second write allocates.
///
/// Invariant: non-empty, strictly increasing in revision, never two tombstones in a row (only
/// live keys can be deleted); `Many` holds at least two entries. It starts with a tombstone only
/// when that tombstone sits exactly at the compact revision.
#[derive(Clone, Debug, PartialEq, Eq)]
enum History {
    One(StoredEntry),
    Many(Vec<StoredEntry>),
}

// The point of the two types above: a key with one write costs one slot of a map node (24 + 40
// bytes) and nothing else.
const _: () = assert!(std::mem::size_of::<IndexKey>() == 24);
const _: () = assert!(std::mem::size_of::<History>() == 40);

impl History {
    fn entries(&self) -> &[StoredEntry] {
        match self {
            History::One(entry) => std::slice::from_ref(entry),
            History::Many(entries) => entries,
        }
    }

    /// The entries at or below `main`, newest last.
    fn visible(&self, main: i64) -> &[StoredEntry] {
        let entries = self.entries();
        &entries[..entries.partition_point(|e| e.main() <= main)]
    }

    fn push(&mut self, entry: StoredEntry) {
        let last = *self.entries().last().expect("a history is never empty");
        assert!(
            (last.main(), last.sub) < (entry.main(), entry.sub),
            "index revision going back: {:?} -> {:?}",
            last.unpack().revision,
            entry.unpack().revision
        );
        assert!(
            !(last.version == 0 && entry.version == 0),
            "deleting a deleted key"
        );
        match self {
            History::One(first) => *self = History::Many(vec![*first, entry]),
            History::Many(entries) => entries.push(entry),
        }
    }

    /// Drops the `count` oldest entries (at least one); false when nothing is left, and then the
    /// caller removes the key.
    fn drop_oldest(&mut self, count: usize, dropped: &mut Vec<Revision>) -> bool {
        let len = self.entries().len();
        assert!(count >= 1 && count <= len, "dropping {count} of {len} entries");
        dropped.extend(self.entries()[..count].iter().map(|e| e.unpack().revision));
        match self {
            _ if count == len => return false,
            History::One(_) => unreachable!("one entry, and fewer than one dropped"),
            History::Many(entries) if len - count == 1 => *self = History::One(entries[count]),
            History::Many(entries) => {
                entries.drain(..count);
            }
        }
        assert!(matches!(self, History::One(_)) || self.entries().len() >= 2);
        true
    }
}

/// The index proper. See `History` for each key's invariant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct KeyIndex {
    keys: BTreeMap<IndexKey, History>,
}

impl KeyIndex {
    /// The live entry of `key` at revision `main`, if the key existed then.
    pub fn get(&self, key: &[u8], main: i64) -> Option<IndexEntry> {
        let entry = self.keys.get(key)?.visible(main).last()?.unpack();
        (!entry.tombstone).then_some(entry)
    }

    /// The newest entry of `key`, live or a tombstone.
    pub fn newest(&self, key: &[u8]) -> Option<IndexEntry> {
        let history = self.keys.get(key)?;
        history.entries().last().map(|e| e.unpack())
    }

    fn histories<'a>(
        &'a self,
        range: &'a KeyRange,
    ) -> Box<dyn Iterator<Item = (&'a IndexKey, &'a History)> + 'a> {
        let from = |start: &'a Bytes| Bound::Included(start.as_ref());
        match range {
            KeyRange::Single(k) => Box::new(self.keys.get_key_value(k.as_ref()).into_iter()),
            KeyRange::From(start) => Box::new(self.keys.range::<[u8], _>((from(start), Bound::Unbounded))),
            KeyRange::Between(start, end) if end <= start => Box::new(std::iter::empty()),
            KeyRange::Between(start, end) => Box::new(
                self.keys
                    .range::<[u8], _>((from(start), Bound::Excluded(end.as_ref()))),
            ),
        }
    }

    /// Keys live at revision `main` within `range`, in key order.
    pub fn live_in<'a>(
        &'a self,
        range: &'a KeyRange,
        main: i64,
    ) -> impl Iterator<Item = (&'a [u8], IndexEntry)> + 'a {
        self.histories(range).filter_map(move |(key, history)| {
            let entry = history.visible(main).last()?.unpack();
            (!entry.tombstone).then_some((key.as_bytes(), entry))
        })
    }

    /// Records a write; the key is copied only when the index does not hold it yet.
    pub fn push(&mut self, key: &[u8], entry: IndexEntry) {
        let entry = StoredEntry::pack(entry);
        match self.keys.get_mut(key) {
            Some(history) => history.push(entry),
            None => {
                self.keys.insert(IndexKey::new(key), History::One(entry));
            }
        }
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
            let history = history.entries();
            let start = history.partition_point(|e| e.main() < from);
            for i in start..history.len() {
                if history[i].main() > to {
                    break;
                }
                let prev = i.checked_sub(1).map(|p| history[p].unpack());
                writes.push((key.to_bytes(), history[i].unpack(), prev));
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
            let visible = history.visible(main);
            let Some(newest) = visible.last() else {
                return true;
            };
            // A tombstone exactly at `main` stays until the next compaction: a watch may start
            // at the compact revision and must still see that delete.
            let drop_count = if newest.version == 0 && newest.main() < main {
                visible.len()
            } else {
                visible.len() - 1
            };
            drop_count == 0 || history.drop_oldest(drop_count, &mut dropped)
        });
        dropped.sort();
        dropped
    }

    /// Entries over all histories: one per record the backend holds.
    pub fn entry_count(&self) -> u64 {
        self.keys.values().map(|h| h.entries().len() as u64).sum()
    }

    /// Every key's newest entry when it is live (lease attachment, hashing).
    pub fn latest_live(&self) -> impl Iterator<Item = (&IndexKey, IndexEntry)> {
        self.keys.iter().filter_map(|(k, h)| {
            let newest = h.entries().last()?.unpack();
            (!newest.tombstone).then_some((k, newest))
        })
    }
}

#[cfg(test)]
mod tests {
    use yizhi_engine::SeededRng;

    use super::*;

    fn put(main: i64, create_revision: i64, version: i64) -> IndexEntry {
        IndexEntry {
            revision: Revision::new(main, 0),
            tombstone: false,
            create_revision,
            version,
            lease: 0,
        }
    }

    fn delete(main: i64) -> IndexEntry {
        IndexEntry {
            revision: Revision::new(main, 0),
            tombstone: true,
            create_revision: 0,
            version: 0,
            lease: 0,
        }
    }

    /// Differential: the index's key order must be the bytes' order, or lookups by `&[u8]`
    /// would miss. Lengths straddle the inline limit, bytes include 0 and 255.
    #[test]
    fn index_keys_order_and_compare_as_their_bytes() {
        let mut rng = SeededRng::new(7);
        let mut random_key = || {
            let len = rng.below(2 * INLINE_KEY_BYTES as u64 + 2) as usize;
            let alphabet = [0u8, 1, b'a', b'b', 254, 255];
            (0..len)
                .map(|_| alphabet[rng.below(alphabet.len() as u64) as usize])
                .collect::<Vec<u8>>()
        };
        for _ in 0..20_000 {
            let (a, b) = (random_key(), random_key());
            let (ka, kb) = (IndexKey::new(&a), IndexKey::new(&b));
            assert_eq!(ka.as_bytes(), a.as_slice());
            assert_eq!(ka.cmp(&kb), a.cmp(&b), "{a:?} vs {b:?}");
            assert_eq!(ka == kb, a == b);
            assert_eq!(matches!(ka, IndexKey::Inline { .. }), a.len() <= INLINE_KEY_BYTES);
        }
    }

    #[test]
    fn a_key_of_any_length_is_found_by_its_bytes() {
        let mut index = KeyIndex::default();
        let keys: Vec<Vec<u8>> = (1..=3 * INLINE_KEY_BYTES).map(|len| vec![b'k'; len]).collect();
        for (i, key) in keys.iter().enumerate() {
            let main = 2 + i as i64;
            index.push(key, put(main, main, 1));
        }
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(
                index.get(key, i64::MAX).map(|e| e.revision.main),
                Some(2 + i as i64)
            );
        }
        let range = KeyRange::Between(
            Bytes::from(vec![b'k'; INLINE_KEY_BYTES]),
            Bytes::from(vec![b'k'; INLINE_KEY_BYTES + 2]),
        );
        let found: Vec<usize> = index.live_in(&range, i64::MAX).map(|(k, _)| k.len()).collect();
        assert_eq!(found, [INLINE_KEY_BYTES, INLINE_KEY_BYTES + 1]);
    }

    #[test]
    fn entries_survive_packing_exactly() {
        let entries = [
            put(2, 2, 1),
            IndexEntry {
                revision: Revision::new(i64::MAX, i64::MAX),
                tombstone: false,
                create_revision: 3,
                version: i64::MAX,
                lease: -5,
            },
            delete(9),
        ];
        for entry in entries {
            assert_eq!(StoredEntry::pack(entry).unpack(), entry);
        }
    }

    #[test]
    #[should_panic(expected = "only a tombstone does")]
    fn a_live_entry_with_version_zero_is_refused() {
        StoredEntry::pack(put(2, 2, 0));
    }

    /// One write: inline. A second: a `Vec`. Compaction down to one entry: inline again, and a
    /// compacted tombstone removes the key.
    #[test]
    fn histories_move_between_one_and_many() {
        let mut index = KeyIndex::default();
        index.push(b"a", put(2, 2, 1));
        index.push(b"b", put(3, 3, 1));
        assert!(matches!(index.keys.get(&b"a"[..]), Some(History::One(_))));
        index.push(b"a", put(4, 2, 2));
        index.push(b"a", put(5, 2, 3));
        index.push(b"b", delete(6));
        assert!(matches!(index.keys.get(&b"a"[..]), Some(History::Many(v)) if v.len() == 3));
        assert_eq!(index.get(b"a", 4).map(|e| e.version), Some(2));
        assert_eq!(index.get(b"b", 6), None);
        assert_eq!(index.newest(b"b").map(|e| e.tombstone), Some(true));

        // At 6 the tombstone of b is exactly at the compact revision: it stays.
        assert_eq!(
            index.compact(6),
            [Revision::new(2, 0), Revision::new(3, 0), Revision::new(4, 0)]
        );
        assert!(matches!(index.keys.get(&b"a"[..]), Some(History::One(e)) if e.main() == 5));
        assert!(matches!(index.keys.get(&b"b"[..]), Some(History::One(e)) if e.version == 0));
        assert_eq!(index.compact(7), [Revision::new(6, 0)]);
        assert!(!index.keys.contains_key(&b"b"[..]));
        assert_eq!(index.latest_live().count(), 1);
    }

    #[test]
    #[should_panic(expected = "deleting a deleted key")]
    fn two_tombstones_in_a_row_are_refused() {
        let mut index = KeyIndex::default();
        index.push(b"a", put(2, 2, 1));
        index.push(b"a", delete(3));
        index.push(b"a", delete(4));
    }
}
