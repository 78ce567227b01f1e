//! How an engine reads its durable log, and an in-memory implementation for tests and the simulator.

use crate::types::{Entry, HardState, LogIndex, Membership, Snapshot, Term};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    #[error("index {index} is compacted (first available index is {first_index})")]
    Compacted { index: LogIndex, first_index: LogIndex },
    #[error("index {index} is beyond the last stored index {last_index}")]
    Unavailable { index: LogIndex, last_index: LogIndex },
    #[error("snapshot is being produced; try again")]
    SnapshotTemporarilyUnavailable,
    #[error("storage failed: {0}")]
    Io(String),
}

/// Read access to what is durable. Engines never write through it; the runtime writes what a
/// `Ready` asks for, using its own concrete storage type.
pub trait LogStorage {
    /// The durable hard state and the membership in force (from the snapshot or the log).
    fn initial_state(&self) -> Result<(HardState, Membership), StorageError>;
    /// Entries in `[lo, hi)`, stopping early once `max_bytes` is exceeded but always returning at
    /// least one entry when the range is non-empty.
    fn entries(&self, lo: LogIndex, hi: LogIndex, max_bytes: u64) -> Result<Vec<Entry>, StorageError>;
    /// The term of the entry at `index`, for `index` in `[first_index() - 1, last_index()]`.
    fn term(&self, index: LogIndex) -> Result<Term, StorageError>;
    /// The first index still held as an entry (one past the snapshot's index).
    fn first_index(&self) -> LogIndex;
    fn last_index(&self) -> LogIndex;
    /// The latest snapshot, to send to a follower that is too far behind.
    fn snapshot(&self) -> Result<Snapshot, StorageError>;
}

/// The range checks of [`LogStorage::entries`] for `[lo, hi)` in a log whose snapshot covers up
/// to `snapshot_index` and whose last entry is `last_index`: one rule, one error for every store.
pub fn check_entries_range(
    lo: LogIndex,
    hi: LogIndex,
    snapshot_index: LogIndex,
    last_index: LogIndex,
) -> Result<(), StorageError> {
    if lo <= snapshot_index {
        return Err(StorageError::Compacted {
            index: lo,
            first_index: snapshot_index + 1,
        });
    }
    if hi > last_index + 1 {
        return Err(StorageError::Unavailable {
            index: hi - 1,
            last_index,
        });
    }
    Ok(())
}

/// A whole durable state kept in memory: the log after the snapshot, the snapshot, the hard state.
/// The simulator keeps one per node as its "disk"; tests and benches use it directly.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    hard_state: HardState,
    snapshot: Snapshot,
    /// Invariant: `entries[i].index == snapshot.meta.index + 1 + i`.
    entries: Vec<Entry>,
}

impl MemStorage {
    /// A fresh node in a brand-new cluster with the given membership.
    pub fn new_with_membership(membership: Membership) -> Self {
        membership.assert_valid();
        let mut storage = MemStorage::default();
        storage.snapshot.meta.membership = membership;
        storage
    }

    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    pub fn set_hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
    }

    pub fn snapshot_ref(&self) -> &Snapshot {
        &self.snapshot
    }

    pub fn all_entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Appends `new_entries`, first dropping any stored entries at or after `new_entries[0].index`.
    pub fn append(&mut self, new_entries: &[Entry]) {
        self.append_owned(new_entries.to_vec());
    }

    /// `append` without copying: the runtime owns the `Ready`'s entries and can hand them over.
    pub fn append_owned(&mut self, new_entries: Vec<Entry>) {
        let Some(first) = new_entries.first() else { return };
        let offset = self.snapshot.meta.index;
        assert!(
            first.index > offset,
            "append at {} would overwrite the snapshot at {}",
            first.index,
            offset
        );
        assert!(
            first.index <= self.last_index() + 1,
            "append at {} leaves a gap after last index {}",
            first.index,
            self.last_index()
        );
        for pair in new_entries.windows(2) {
            assert_eq!(
                pair[0].index + 1,
                pair[1].index,
                "appended entries are not contiguous"
            );
        }
        self.entries.truncate((first.index - offset - 1) as usize);
        self.entries.extend(new_entries);
    }

    /// Replaces everything with `snapshot`, keeping entries after it only if they agree with it.
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        assert!(
            index >= self.snapshot.meta.index,
            "snapshot at {index} is older than the stored one at {}",
            self.snapshot.meta.index
        );
        let keep = matches!(self.term(index), Ok(term) if term == snapshot.meta.term);
        if keep {
            let drop_count = (index - self.snapshot.meta.index) as usize;
            self.entries.drain(..drop_count);
        } else {
            self.entries.clear();
        }
        self.hard_state.commit = self.hard_state.commit.max(index);
        self.snapshot = snapshot;
    }

    /// Records a snapshot of the local state machine at `index` and drops the entries it covers.
    pub fn compact(&mut self, index: LogIndex, membership: Membership, data: bytes::Bytes) {
        assert!(
            index <= self.last_index(),
            "compact at {index} beyond last index {}",
            self.last_index()
        );
        if index <= self.snapshot.meta.index {
            return;
        }
        let term = self.term(index).expect("index is within the stored log");
        let drop_count = (index - self.snapshot.meta.index) as usize;
        self.entries.drain(..drop_count);
        self.snapshot = Snapshot {
            meta: crate::types::SnapshotMeta {
                index,
                term,
                membership,
            },
            data,
        };
    }
}

impl LogStorage for MemStorage {
    fn initial_state(&self) -> Result<(HardState, Membership), StorageError> {
        let mut membership = self.snapshot.meta.membership.clone();
        for entry in &self.entries {
            if let crate::types::EntryPayload::Membership(m) = &entry.payload
                && entry.index <= self.hard_state.commit
            {
                membership = m.clone();
            }
        }
        Ok((self.hard_state, membership))
    }

    fn entries(&self, lo: LogIndex, hi: LogIndex, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        let offset = self.snapshot.meta.index;
        check_entries_range(lo, hi, offset, self.last_index())?;
        let mut out = Vec::new();
        let mut bytes = 0u64;
        for entry in &self.entries[(lo - offset - 1) as usize..(hi - offset - 1) as usize] {
            bytes += entry.size_bytes();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(entry.clone());
        }
        Ok(out)
    }

    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        let offset = self.snapshot.meta.index;
        if index == offset {
            return Ok(self.snapshot.meta.term);
        }
        if index < offset {
            return Err(StorageError::Compacted {
                index,
                first_index: offset + 1,
            });
        }
        match self.entries.get((index - offset - 1) as usize) {
            Some(entry) => Ok(entry.term),
            None => Err(StorageError::Unavailable {
                index,
                last_index: self.last_index(),
            }),
        }
    }

    fn first_index(&self) -> LogIndex {
        self.snapshot.meta.index + 1
    }

    fn last_index(&self) -> LogIndex {
        self.snapshot.meta.index + self.entries.len() as u64
    }

    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_truncates_conflicting_suffix() {
        let mut s = MemStorage::new_with_membership(Membership::new([1]));
        s.append(&[Entry::noop(1, 1), Entry::noop(2, 1), Entry::noop(3, 1)]);
        s.append(&[Entry::noop(2, 2)]);
        assert_eq!(s.last_index(), 2);
        assert_eq!(s.term(2), Ok(2));
        assert_eq!(s.term(1), Ok(1));
    }

    #[test]
    fn compact_keeps_term_of_snapshot_index_and_rejects_older_reads() {
        let mut s = MemStorage::new_with_membership(Membership::new([1]));
        s.append(&[Entry::noop(1, 1), Entry::noop(2, 1), Entry::noop(3, 2)]);
        s.compact(2, Membership::new([1]), bytes::Bytes::new());
        assert_eq!(s.first_index(), 3);
        assert_eq!(s.term(2), Ok(1));
        assert_eq!(
            s.term(1),
            Err(StorageError::Compacted {
                index: 1,
                first_index: 3
            })
        );
        assert_eq!(s.entries(3, 4, u64::MAX).map(|e| e.len()), Ok(1));
        assert!(s.entries(2, 4, u64::MAX).is_err());
    }

    #[test]
    fn entries_respects_byte_limit_but_returns_one() {
        let mut s = MemStorage::new_with_membership(Membership::new([1]));
        s.append(&[Entry::noop(1, 1), Entry::noop(2, 1), Entry::noop(3, 1)]);
        assert_eq!(s.entries(1, 4, 0).map(|e| e.len()), Ok(1));
        assert_eq!(s.entries(1, 4, 2 * ENTRY_OVERHEAD_BYTES).map(|e| e.len()), Ok(2));
    }

    use crate::types::ENTRY_OVERHEAD_BYTES;

    #[test]
    fn snapshot_install_keeps_matching_suffix() {
        let mut s = MemStorage::new_with_membership(Membership::new([1]));
        s.append(&[Entry::noop(1, 1), Entry::noop(2, 1), Entry::noop(3, 1)]);
        let empty_snapshot_at = |index, term| Snapshot {
            meta: crate::types::SnapshotMeta {
                index,
                term,
                membership: Membership::new([1]),
            },
            data: bytes::Bytes::new(),
        };
        s.apply_snapshot(empty_snapshot_at(2, 1));
        assert_eq!(s.last_index(), 3);
        s.apply_snapshot(empty_snapshot_at(5, 3));
        assert_eq!((s.first_index(), s.last_index()), (6, 5));
    }
}
