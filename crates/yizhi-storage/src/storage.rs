//! `WalStorage`: the engine's `LogStorage` backed by the WAL and snapshot files, with the same
//! semantics as `MemStorage` so the runtime can use it wherever `MemStorage` is used today.

use std::path::Path;

use yizhi_engine::{
    Entry, HardState, LogIndex, LogStorage, Membership, Ready, Snapshot, SnapshotMeta, StorageError, Term,
};

use crate::codec::{Record, SnapshotMarker};
use crate::entry_index::{DEFAULT_MAX_CACHED_ENTRY_BYTES, EntryIndex};
use crate::error::{Result, WalError};
use crate::recovery::RecoveryReport;
use crate::snapshot_file;
use crate::wal::{RecordLocation, Wal, WalConfig};

#[derive(Clone, Debug)]
pub struct WalStorageConfig {
    pub wal: WalConfig,
    /// Newest entries kept whole in memory; older ones are read from their segment when asked for.
    pub max_cached_entry_bytes: u64,
}

impl Default for WalStorageConfig {
    fn default() -> Self {
        WalStorageConfig {
            wal: WalConfig::default(),
            max_cached_entry_bytes: DEFAULT_MAX_CACHED_ENTRY_BYTES,
        }
    }
}

/// Memory: per entry after the snapshot a 40-byte slot (term, location, size); whole entries only
/// for the newest `max_cached_entry_bytes`; of the latest snapshot only its metadata — its data
/// (the whole state machine image, hundreds of MB for a million keys) stays in its file and is read
/// back when a follower needs it, which is rare.
#[derive(Debug)]
pub struct WalStorage {
    wal: Wal,
    hard_state: HardState,
    snapshot: SnapshotMeta,
    /// Invariant: `index.first_index() == snapshot.meta.index + 1`.
    index: EntryIndex,
}

/// What replay has seen so far. Replay is lenient about one thing only: after older segments were
/// released, an entry may arrive above the last known one; the gap must end up under the snapshot.
struct Replay {
    hard_state: HardState,
    marker: Option<SnapshotMarker>,
    index: EntryIndex,
}

impl Replay {
    fn apply(&mut self, location: RecordLocation, record: Record) -> Result<(), String> {
        match record {
            Record::HardState(hs) => self.hard_state = hs,
            Record::SnapshotMarker(marker) => {
                if let Some(previous) = self.marker
                    && marker.index < previous.index
                {
                    return Err(format!("snapshot marker {marker:?} goes back from {previous:?}"));
                }
                if marker.discard_suffix {
                    self.index.reset(marker.index + 1);
                } else {
                    self.index.drop_through(marker.index);
                }
                self.marker = Some(marker);
            }
            Record::Entry(entry) => {
                let snapshot_index = self.marker.map_or(0, |m| m.index);
                if entry.index <= snapshot_index {
                    return Err(format!(
                        "entry {} at or below snapshot {snapshot_index}",
                        entry.index
                    ));
                }
                // Above the known range, or a truncation reaching below it: the entries in between
                // lived in released segments, so a later marker must cover them (checked at the end).
                if entry.index > self.index.last_index() + 1 || entry.index < self.index.first_index() {
                    self.index.reset(entry.index);
                }
                self.index.push(entry, location);
            }
        }
        Ok(())
    }
}

impl WalStorage {
    /// A fresh node in a brand-new cluster (as `MemStorage::new_with_membership`), in `dir`.
    pub fn create(dir: &Path, config: WalStorageConfig, membership: Membership) -> Result<WalStorage> {
        membership.assert_valid();
        let wal = Wal::create(dir, config.wal)?;
        let snapshot = Snapshot {
            meta: SnapshotMeta {
                index: 0,
                term: 0,
                membership,
            },
            data: bytes::Bytes::new(),
        };
        snapshot_file::write_snapshot(dir, &snapshot)?;
        let marker = SnapshotMarker::default();
        wal.append_sync(&[
            Record::SnapshotMarker(marker),
            Record::HardState(HardState::default()),
        ])?;
        Ok(WalStorage {
            wal,
            hard_state: HardState::default(),
            snapshot: snapshot.meta,
            index: EntryIndex::new(1, config.max_cached_entry_bytes),
        })
    }

    /// Recovers the storage in `dir`: replays the WAL and loads the snapshot its last marker names.
    pub fn open(dir: &Path, config: WalStorageConfig) -> Result<(WalStorage, RecoveryReport)> {
        let mut replay = Replay {
            hard_state: HardState::default(),
            marker: None,
            index: EntryIndex::new(1, config.max_cached_entry_bytes),
        };
        let inconsistent = |reason: String| WalError::Inconsistent {
            dir: dir.into(),
            reason,
        };
        let (wal, report) = Wal::open(dir, config.wal, |location, record| {
            replay.apply(location, record).map_err(inconsistent)
        })?;
        let marker = replay
            .marker
            .ok_or_else(|| inconsistent("no snapshot marker (creation was interrupted?)".into()))?;
        if replay.index.first_index() > marker.index + 1 {
            return Err(inconsistent(format!(
                "entries {}..{} are missing above snapshot {}",
                marker.index + 1,
                replay.index.first_index(),
                marker.index
            )));
        }
        replay.index.drop_through(marker.index);
        let path = snapshot_file::snapshot_path(dir, marker.index, marker.term);
        if !path.exists() {
            return Err(WalError::MissingSnapshot {
                dir: dir.into(),
                index: marker.index,
                term: marker.term,
            });
        }
        let snapshot = snapshot_file::read_snapshot(&path)?;
        snapshot_file::remove_superseded(dir, marker.index, marker.term)?;
        let storage = WalStorage {
            wal,
            hard_state: replay.hard_state,
            snapshot: snapshot.meta,
            index: replay.index,
        };
        storage.assert_invariants();
        Ok((storage, report))
    }

    fn assert_invariants(&self) {
        assert_eq!(
            self.index.first_index(),
            self.snapshot.index + 1,
            "index out of step with snapshot"
        );
    }

    pub fn wal(&self) -> &Wal {
        &self.wal
    }

    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// The latest snapshot's index, term and membership (its data is in its file).
    pub fn snapshot_meta(&self) -> &SnapshotMeta {
        &self.snapshot
    }

    /// Step 1 of handling a `Ready`: snapshot, entries, hard state, then fsync if `must_sync`.
    pub fn persist_ready<M>(&mut self, ready: &Ready<M>) -> Result<()> {
        if let Some(snapshot) = &ready.snapshot {
            self.apply_snapshot(snapshot.clone())?;
        }
        self.write(&ready.entries, ready.hard_state)?;
        if ready.must_sync {
            self.sync()?;
        }
        Ok(())
    }

    /// Appends `entries` (dropping stored entries at or after the first one's index), not synced.
    pub fn append(&mut self, entries: &[Entry]) -> Result<()> {
        self.write(entries, None)
    }

    /// Records `hard_state`, not synced.
    pub fn set_hard_state(&mut self, hard_state: HardState) -> Result<()> {
        self.write(&[], Some(hard_state))
    }

    /// Entries then hard state, in one write.
    fn write(&mut self, entries: &[Entry], hard_state: Option<HardState>) -> Result<()> {
        if let Some(first) = entries.first() {
            self.check_append(entries, first);
        }
        let mut records: Vec<Record> = entries.iter().cloned().map(Record::Entry).collect();
        records.extend(hard_state.map(Record::HardState));
        if records.is_empty() {
            return Ok(());
        }
        let (locations, _) = self.wal.append(&records)?;
        for (entry, location) in entries.iter().zip(locations) {
            self.index.push(entry.clone(), location);
        }
        if let Some(hs) = hard_state {
            self.hard_state = hs;
        }
        Ok(())
    }

    fn check_append(&self, entries: &[Entry], first: &Entry) {
        assert!(
            first.index > self.snapshot.index,
            "append at {} would overwrite the snapshot at {}",
            first.index,
            self.snapshot.index
        );
        assert!(
            first.index <= self.index.last_index() + 1,
            "append at {} leaves a gap after last index {}",
            first.index,
            self.index.last_index()
        );
        for pair in entries.windows(2) {
            assert_eq!(
                pair[0].index + 1,
                pair[1].index,
                "appended entries are not contiguous"
            );
        }
    }

    /// Makes everything written so far durable (group-committed with any concurrent writer).
    pub fn sync(&mut self) -> Result<()> {
        self.wal.sync()
    }

    /// Installs a snapshot from the leader (as `MemStorage::apply_snapshot`), durably.
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<()> {
        let index = snapshot.meta.index;
        assert!(
            index >= self.snapshot.index,
            "snapshot at {index} is older than the stored one at {}",
            self.snapshot.index
        );
        let keep_suffix = matches!(self.term(index), Ok(term) if term == snapshot.meta.term);
        let hard_state = HardState {
            commit: self.hard_state.commit.max(index),
            ..self.hard_state
        };
        self.install(snapshot, !keep_suffix, Some(hard_state))
    }

    /// Records a snapshot of the local state machine at `index` (as `MemStorage::compact`), durably,
    /// and releases the segments it covers.
    pub fn compact(&mut self, index: LogIndex, membership: Membership, data: bytes::Bytes) -> Result<()> {
        assert!(
            index <= self.index.last_index().max(self.snapshot.index),
            "compact at {index} beyond last index {}",
            self.last_index()
        );
        if index <= self.snapshot.index {
            return Ok(());
        }
        let term = self.term(index).map_err(|e| WalError::Inconsistent {
            dir: self.wal.dir().into(),
            reason: format!("compact at {index}: {e}"),
        })?;
        let meta = SnapshotMeta {
            index,
            term,
            membership,
        };
        self.install(Snapshot { meta, data }, false, None)
    }

    /// Snapshot file first (durable), then the marker naming it, then the segments it covers go.
    fn install(
        &mut self,
        snapshot: Snapshot,
        discard_suffix: bool,
        hard_state: Option<HardState>,
    ) -> Result<()> {
        let (index, term) = (snapshot.meta.index, snapshot.meta.term);
        snapshot_file::write_snapshot(self.wal.dir(), &snapshot)?;
        let marker = SnapshotMarker {
            index,
            term,
            discard_suffix,
        };
        let mut records = vec![Record::SnapshotMarker(marker)];
        records.extend(hard_state.map(Record::HardState));
        self.wal.append_sync(&records)?;
        if discard_suffix {
            self.index.reset(index + 1);
        } else {
            self.index.drop_through(index);
        }
        if let Some(hs) = hard_state {
            self.hard_state = hs;
        }
        self.snapshot = snapshot.meta;
        self.assert_invariants();
        self.wal.release_through(index)?;
        snapshot_file::remove_superseded(self.wal.dir(), index, term)
    }

    fn read_entry(&self, index: LogIndex) -> Result<Entry, StorageError> {
        if let Some(entry) = self.index.cached(index) {
            return Ok(entry.clone());
        }
        let slot = self.index.slot(index).expect("caller checked the range");
        match self.wal.read(slot.location) {
            Ok(Record::Entry(entry)) if entry.index == index && entry.term == slot.term => Ok(entry),
            Ok(other) => Err(StorageError::Io(format!(
                "record at {:?} is {other:?}, expected entry {index} of term {}",
                slot.location, slot.term
            ))),
            Err(error) => Err(StorageError::Io(error.to_string())),
        }
    }
}

impl LogStorage for WalStorage {
    fn initial_state(&self) -> Result<(HardState, Membership), StorageError> {
        let committed = self
            .index
            .memberships()
            .range(..=self.hard_state.commit)
            .next_back();
        let membership = committed.map_or(&self.snapshot.membership, |(_, m)| m).clone();
        Ok((self.hard_state, membership))
    }

    fn entries(&self, lo: LogIndex, hi: LogIndex, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        let offset = self.snapshot.index;
        if lo <= offset {
            return Err(StorageError::Compacted {
                index: lo,
                first_index: offset + 1,
            });
        }
        if hi > self.last_index() + 1 {
            return Err(StorageError::Unavailable {
                index: hi - 1,
                last_index: self.last_index(),
            });
        }
        let mut out = Vec::new();
        let mut bytes = 0u64;
        for index in lo..hi {
            let slot = self.index.slot(index).expect("range checked above");
            bytes += slot.size_bytes;
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(self.read_entry(index)?);
        }
        Ok(out)
    }

    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        let offset = self.snapshot.index;
        if index == offset {
            return Ok(self.snapshot.term);
        }
        if index < offset {
            return Err(StorageError::Compacted {
                index,
                first_index: offset + 1,
            });
        }
        match self.index.slot(index) {
            Some(slot) => Ok(slot.term),
            None => Err(StorageError::Unavailable {
                index,
                last_index: self.last_index(),
            }),
        }
    }

    fn first_index(&self) -> LogIndex {
        self.snapshot.index + 1
    }

    fn last_index(&self) -> LogIndex {
        self.index.last_index()
    }

    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        let meta = &self.snapshot;
        let path = snapshot_file::snapshot_path(self.wal.dir(), meta.index, meta.term);
        let snapshot = snapshot_file::read_snapshot(&path).map_err(|e| StorageError::Io(e.to_string()))?;
        assert_eq!(&snapshot.meta, meta, "{} holds another snapshot", path.display());
        Ok(snapshot)
    }
}
