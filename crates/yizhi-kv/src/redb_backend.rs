//! The persistent backend: the state machine's records, leases and meta row in one redb file.
//!
//! # Layout
//!
//! - `yizhi-kv.records`: key = revision `(main, sub)` as two big-endian u64 with the sign bit
//!   flipped, so the B-tree's byte order is revision order; value = the encoded record.
//! - `yizhi-kv.leases`: lease ID → `(granted_ttl_secs, expiry_ms)`.
//! - `yizhi-kv.session_clients`: client ID → `(floor, last_seen_ms)`, and
//!   `yizhi-kv.session_responses`: `(client ID, seq)` → a kept response (see the `session`
//!   module); layout 2 added both, and a layout-1 file is upgraded on open by creating them empty.
//! - `yizhi-kv.meta`: a `format` row naming this layout and one `state` row (revisions, applied
//!   index, lease cursor, session clock), always written in the same redb transaction as the data
//!   it describes.
//!
//! # Durability: the server's WAL carries it, not this file
//!
//! The server fsyncs its WAL before acknowledging anything, and on restart replays the entries
//! after this backend's applied index. So [`Backend::apply`] only merges the batch into an
//! in-memory overlay (reads consult it first). When the overlay exceeds
//! [`RedbConfig::max_pending_entries`] or [`RedbConfig::max_pending_bytes`], or on
//! [`Backend::flush`], the whole overlay goes to redb in *one* write transaction together with
//! the meta row of its last entry: non-durable (no fsync, survives a process crash only if a
//! durable commit follows) unless the flush asks for durability, which fsyncs everything so far.
//! Whatever a crash interrupts, redb reopens at its last commit: the state after some entry `i`,
//! never a mix. [`Backend::durable_applied_index`] tells the server which WAL entries it may
//! release. Dropping the backend does not flush: to shut down cleanly call `flush(true)` first.
//!
//! # Defragmentation
//!
//! redb reuses freed pages but never shrinks its file by itself; [`Database::compact`] moves
//! pages down and truncates, but only while no read transaction is open. The backend keeps one
//! open between commits (the `Snapshot` below), so [`Backend::defragment`] flushes the overlay
//! durably, drops the snapshot, compacts, and opens a fresh snapshot; it needs `&mut self`, so
//! no read can run meanwhile.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use redb::{
    Database, Durability, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    TableHandle, WriteTransaction,
};
use yizhi_engine::LogIndex;

use crate::backend::{
    Backend, BackendError, ClientRecord, DefragmentReport, FullState, LeaseRecord, Meta, RecordVisitor,
    ResponseKey, RevisionRecord, SessionRows, StoredResponse, WriteBatch, check_record_shape,
};
use crate::response_codec::{decode_stored, encode_stored};
use crate::revision::Revision;
use crate::types::LeaseId;
use crate::wire::{Reader, Writer};

type RevisionKey = [u8; REVISION_KEY_BYTES];
const REVISION_KEY_BYTES: usize = 16;

const RECORDS: TableDefinition<&RevisionKey, &[u8]> = TableDefinition::new("yizhi-kv.records");
const LEASES: TableDefinition<i64, (i64, u64)> = TableDefinition::new("yizhi-kv.leases");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("yizhi-kv.meta");
const SESSION_CLIENTS: TableDefinition<u64, (u64, u64)> = TableDefinition::new("yizhi-kv.session_clients");
const SESSION_RESPONSES: TableDefinition<(u64, u64), &[u8]> =
    TableDefinition::new("yizhi-kv.session_responses");
const FORMAT_ROW: &str = "format";
const STATE_ROW: &str = "state";
/// Names this layout; a file with another value (or none, but other tables) is refused.
const FORMAT: &[u8] = b"yizhi-kv redb layout 2";
/// The layout before the session tables; upgraded in place on open.
const FORMAT_WITHOUT_SESSIONS: &[u8] = b"yizhi-kv redb layout 1";
const RECORD_ENCODING_VERSION: u8 = 1;
/// Version 2 adds the session clock; version 1 rows (clock 0) still decode.
const META_ENCODING_VERSION: u8 = 2;
/// What the overlay is charged per entry beyond keys and values (map nodes, revision, fields).
const OVERLAY_ENTRY_OVERHEAD_BYTES: usize = 64;
/// `compact()` already repeats its passes until one makes no progress; calling it again after a
/// `true` catches pages its final cleanup freed. Bounded so a file that keeps "progressing"
/// cannot hold the store's write lock forever.
const MAX_COMPACT_CALLS: usize = 8;

/// Bounds of the in-memory overlay and of redb's page cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedbConfig {
    /// Applied entries kept in memory before they are written to redb (non-durably).
    pub max_pending_entries: usize,
    /// Approximate bytes (keys, values, bookkeeping) kept in memory before writing to redb.
    pub max_pending_bytes: usize,
    /// redb's page cache, which also holds pages of non-durable commits until evicted.
    pub cache_bytes: usize,
    /// Verify every page checksum on open (slow on large files): a file damaged outside redb
    /// then fails with an error, where a plain open trusts a cleanly closed file.
    pub check_integrity_on_open: bool,
}

impl Default for RedbConfig {
    fn default() -> Self {
        // Measured with benches/mvcc.rs (1M keys): 512-1024 entries per commit loaded fastest;
        // 1 entry per commit was 9x slower, 4096 and more were slower again.
        RedbConfig {
            max_pending_entries: 1024,
            max_pending_bytes: 8 << 20,
            // Resident memory is what a member is judged by with a million keys (etcd's bbolt
            // maps its file and lets the kernel page it); reads past the cache come from the
            // kernel's page cache through pread, which is not counted against the process.
            // benches/mvcc.rs, 1M keys, random single-key gets / 100-key ranges per second (two
            // runs each): 64 MiB 77.6k / 1,059, 32 MiB 78.2k / 1,070, 16 MiB 68.8k / 915.
            cache_bytes: 32 << 20,
            check_integrity_on_open: false,
        }
    }
}

/// Applied batches not yet written to redb. `None` marks a deletion still to be made there.
#[derive(Debug, Default)]
struct Overlay {
    records: BTreeMap<Revision, Option<RevisionRecord>>,
    leases: BTreeMap<LeaseId, Option<LeaseRecord>>,
    session_clients: BTreeMap<u64, Option<ClientRecord>>,
    session_responses: BTreeMap<ResponseKey, Option<StoredResponse>>,
    entries: usize,
    bytes: usize,
}

/// A read snapshot of redb's latest commit, renewed after every commit. Kept open so that a
/// read costs a B-tree lookup, not a transaction.
struct Snapshot {
    records: ReadOnlyTable<&'static RevisionKey, &'static [u8]>,
    leases: ReadOnlyTable<i64, (i64, u64)>,
    session_clients: ReadOnlyTable<u64, (u64, u64)>,
    session_responses: ReadOnlyTable<(u64, u64), &'static [u8]>,
}

pub struct RedbBackend {
    // Declared before `db`, so it is dropped before the database closes. `None` only while
    // `defragment` runs, or after it failed to open a new one (the next commit retries).
    snapshot: Option<Snapshot>,
    db: Database,
    path: PathBuf,
    config: RedbConfig,
    overlay: Overlay,
    /// The latest applied state, overlay included.
    meta: Meta,
    /// The meta row of redb's latest commit. Invariant: its applied index <= `meta`'s.
    committed_meta: Meta,
    /// Invariant: durable_applied_index <= committed_meta.applied_index.
    durable_applied_index: LogIndex,
}

impl std::fmt::Debug for RedbBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbBackend")
            .field("path", &self.path)
            .field("config", &self.config)
            .field("meta", &self.meta)
            .field("committed_meta", &self.committed_meta)
            .field("durable_applied_index", &self.durable_applied_index)
            .field("pending_entries", &self.overlay.entries)
            .finish()
    }
}

impl RedbBackend {
    /// Creates the database file at `path`, or opens the one there, with default limits.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, BackendError> {
        Self::open_with(path, RedbConfig::default())
    }

    pub fn open_with(path: impl AsRef<Path>, config: RedbConfig) -> Result<Self, BackendError> {
        assert!(config.max_pending_entries >= 1, "{config:?}");
        let path = path.as_ref().to_path_buf();
        let db = Database::builder()
            .set_cache_size(config.cache_bytes)
            .set_check_integrity_on_open(config.check_integrity_on_open)
            .create(&path)
            .map_err(|e| redb_error(&path, "cannot open", e))?;
        let meta = init_or_check_format(&db, &path)?;
        let snapshot = open_snapshot(&db, &path)?;
        Ok(RedbBackend {
            snapshot: Some(snapshot),
            db,
            path,
            config,
            overlay: Overlay::default(),
            meta,
            committed_meta: meta,
            // A reopened file holds only what redb made durable (or closed cleanly).
            durable_applied_index: meta.applied_index,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applied entries held only in memory.
    pub fn pending_entries(&self) -> usize {
        self.overlay.entries
    }

    fn snapshot(&self) -> Result<&Snapshot, BackendError> {
        self.snapshot.as_ref().ok_or_else(|| {
            BackendError::Io(format!(
                "{}: no read snapshot (a defragment could not reopen it)",
                self.path.display()
            ))
        })
    }

    fn file_size_bytes(&self) -> Result<u64, BackendError> {
        std::fs::metadata(&self.path)
            .map(|m| m.len())
            .map_err(|e| BackendError::Io(format!("{}: file size: {e}", self.path.display())))
    }

    /// Compacts with no read transaction open; the caller reopens the snapshot.
    fn compact_file(&mut self) -> Result<(), BackendError> {
        for _ in 0..MAX_COMPACT_CALLS {
            let progressed = self
                .db
                .compact()
                .map_err(|e| redb_error(&self.path, "compact", e))?;
            if !progressed {
                break;
            }
        }
        Ok(())
    }

    fn error(&self, what: &str, e: impl Into<redb::Error>) -> BackendError {
        redb_error(&self.path, what, e)
    }

    fn corrupt(&self, detail: String) -> BackendError {
        BackendError::Corrupt(format!("{}: {detail}", self.path.display()))
    }

    /// Writes the overlay and the current meta row in one redb transaction.
    fn commit_overlay(&mut self, durable: bool) -> Result<(), BackendError> {
        let mut txn = self.db.begin_write().map_err(|e| self.error("begin write", e))?;
        self.set_durability(&mut txn, durable)?;
        {
            let mut records = txn
                .open_table(RECORDS)
                .map_err(|e| self.error("open records", e))?;
            let mut encoded = Vec::new();
            for (revision, record) in &self.overlay.records {
                let key = encode_revision(*revision);
                let result = match record {
                    Some(record) => {
                        encoded.clear();
                        encode_record(record, &mut encoded);
                        records.insert(&key, encoded.as_slice()).map(drop)
                    }
                    None => records.remove(&key).map(drop),
                };
                result.map_err(|e| self.error("write record", e))?;
            }
            let mut leases = txn.open_table(LEASES).map_err(|e| self.error("open leases", e))?;
            for (id, lease) in &self.overlay.leases {
                let result = match lease {
                    Some(l) => leases.insert(*id, (l.granted_ttl_secs, l.expiry_ms)).map(drop),
                    None => leases.remove(*id).map(drop),
                };
                result.map_err(|e| self.error("write lease", e))?;
            }
            self.commit_session_overlay(&txn)?;
            self.write_meta(&txn)?;
        }
        txn.commit().map_err(|e| self.error("commit", e))?;
        self.overlay = Overlay::default();
        self.committed(durable)
    }

    fn commit_session_overlay(&self, txn: &WriteTransaction) -> Result<(), BackendError> {
        let mut clients = txn
            .open_table(SESSION_CLIENTS)
            .map_err(|e| self.error("open session clients", e))?;
        for (id, client) in &self.overlay.session_clients {
            let result = match client {
                Some(c) => clients.insert(*id, (c.floor, c.last_seen_ms)).map(drop),
                None => clients.remove(*id).map(drop),
            };
            result.map_err(|e| self.error("write session client", e))?;
        }
        let mut responses = txn
            .open_table(SESSION_RESPONSES)
            .map_err(|e| self.error("open session responses", e))?;
        for (key, response) in &self.overlay.session_responses {
            let result = match response {
                Some(r) => responses.insert(*key, encode_stored(r).as_slice()).map(drop),
                None => responses.remove(*key).map(drop),
            };
            result.map_err(|e| self.error("write session response", e))?;
        }
        Ok(())
    }

    /// Rewrites both session tables with `sessions` (snapshot install).
    fn replace_sessions(&self, txn: &WriteTransaction, sessions: &SessionRows) -> Result<(), BackendError> {
        txn.delete_table(SESSION_CLIENTS)
            .map_err(|e| self.error("clear session clients", e))?;
        txn.delete_table(SESSION_RESPONSES)
            .map_err(|e| self.error("clear session responses", e))?;
        let mut clients = txn
            .open_table(SESSION_CLIENTS)
            .map_err(|e| self.error("open session clients", e))?;
        for (id, c) in &sessions.clients {
            clients
                .insert(*id, (c.floor, c.last_seen_ms))
                .map_err(|e| self.error("write session client", e))?;
        }
        let mut responses = txn
            .open_table(SESSION_RESPONSES)
            .map_err(|e| self.error("open session responses", e))?;
        for (key, r) in &sessions.responses {
            responses
                .insert(*key, encode_stored(r).as_slice())
                .map_err(|e| self.error("write session response", e))?;
        }
        Ok(())
    }

    fn committed_sessions(&self) -> Result<SessionRows, BackendError> {
        let snapshot = self.snapshot()?;
        let mut rows = SessionRows::default();
        let iter = snapshot
            .session_clients
            .iter()
            .map_err(|e| self.error("scan session clients", e))?;
        for item in iter {
            let (id, value) = item.map_err(|e| self.error("scan session clients", e))?;
            let (floor, last_seen_ms) = value.value();
            rows.clients
                .push((id.value(), ClientRecord { floor, last_seen_ms }));
        }
        let iter = snapshot
            .session_responses
            .iter()
            .map_err(|e| self.error("scan session responses", e))?;
        for item in iter {
            let (key, value) = item.map_err(|e| self.error("scan session responses", e))?;
            let key = key.value();
            let stored = decode_stored(value.value())
                .map_err(|e| self.corrupt(format!("session response {key:?}: {e}")))?;
            rows.responses.push((key, stored));
        }
        Ok(rows)
    }

    fn set_durability(&self, txn: &mut WriteTransaction, durable: bool) -> Result<(), BackendError> {
        if durable {
            // Saves the allocator state with the commit, so reopening after a crash need not
            // walk the whole file; costs a second fsync per durable commit.
            txn.set_quick_repair(true);
            Ok(())
        } else {
            txn.set_durability(Durability::None)
                .map_err(|e| self.error("set durability", e))
        }
    }

    fn write_meta(&self, txn: &WriteTransaction) -> Result<(), BackendError> {
        let mut table = txn.open_table(META).map_err(|e| self.error("open meta", e))?;
        table
            .insert(STATE_ROW, encode_meta(&self.meta).as_slice())
            .map_err(|e| self.error("write meta", e))?;
        Ok(())
    }

    /// Bookkeeping after a successful commit of `self.meta`.
    fn committed(&mut self, durable: bool) -> Result<(), BackendError> {
        assert!(self.meta.applied_index >= self.committed_meta.applied_index);
        self.committed_meta = self.meta;
        if durable {
            self.durable_applied_index = self.meta.applied_index;
        }
        self.snapshot = Some(open_snapshot(&self.db, &self.path)?);
        Ok(())
    }

    fn overlay_full(&self) -> bool {
        self.overlay.entries >= self.config.max_pending_entries
            || self.overlay.bytes >= self.config.max_pending_bytes
    }

    fn committed_record(&self, revision: Revision) -> Result<Option<RevisionRecord>, BackendError> {
        let found = self
            .snapshot()?
            .records
            .get(&encode_revision(revision))
            .map_err(|e| self.error("read record", e))?;
        match found {
            None => Ok(None),
            Some(guard) => self.decode_checked(revision, guard.value()).map(Some),
        }
    }

    fn decode_checked(&self, revision: Revision, data: &[u8]) -> Result<RevisionRecord, BackendError> {
        let record = decode_record(data)
            .map_err(|detail| self.corrupt(format!("record at {revision:?}: {detail}")))?;
        check_record_shape(revision, &record).map_err(|e| self.corrupt(e.to_string()))?;
        Ok(record)
    }

    /// redb's latest commit, record by record in revision order, decoded only when asked for.
    fn committed_records(
        &self,
    ) -> Result<impl Iterator<Item = Result<(Revision, RevisionRecord), BackendError>> + '_, BackendError>
    {
        let iter = self
            .snapshot()?
            .records
            .iter()
            .map_err(|e| self.error("scan records", e))?;
        Ok(iter.map(|item| {
            let (key, value) = item.map_err(|e| self.error("scan records", e))?;
            let revision = decode_revision(key.value());
            Ok((revision, self.decode_checked(revision, value.value())?))
        }))
    }

    fn committed_leases(&self) -> Result<BTreeMap<LeaseId, LeaseRecord>, BackendError> {
        let iter = self
            .snapshot()?
            .leases
            .iter()
            .map_err(|e| self.error("scan leases", e))?;
        let mut leases = BTreeMap::new();
        for item in iter {
            let (id, value) = item.map_err(|e| self.error("scan leases", e))?;
            let (granted_ttl_secs, expiry_ms) = value.value();
            let id = id.value();
            leases.insert(
                id,
                LeaseRecord {
                    id,
                    granted_ttl_secs,
                    expiry_ms,
                },
            );
        }
        Ok(leases)
    }
}

impl Backend for RedbBackend {
    fn meta(&self) -> Result<Meta, BackendError> {
        Ok(self.meta)
    }

    fn record(&self, revision: Revision) -> Result<Option<RevisionRecord>, BackendError> {
        match self.overlay.records.get(&revision) {
            Some(pending) => Ok(pending.clone()),
            None => self.committed_record(revision),
        }
    }

    fn for_each_record(&self, visit: &mut RecordVisitor<'_>) -> Result<(), BackendError> {
        merge_records(self.committed_records()?, &self.overlay.records, visit)
    }

    fn all_leases(&self) -> Result<Vec<LeaseRecord>, BackendError> {
        let mut leases = self.committed_leases()?;
        for (id, pending) in &self.overlay.leases {
            match pending {
                Some(lease) => leases.insert(*id, *lease),
                None => leases.remove(id),
            };
        }
        Ok(leases.into_values().collect())
    }

    fn all_sessions(&self) -> Result<SessionRows, BackendError> {
        let committed = self.committed_sessions()?;
        let mut clients: BTreeMap<u64, ClientRecord> = committed.clients.into_iter().collect();
        for (id, pending) in &self.overlay.session_clients {
            match pending {
                Some(client) => clients.insert(*id, *client),
                None => clients.remove(id),
            };
        }
        let mut responses: BTreeMap<ResponseKey, StoredResponse> = committed.responses.into_iter().collect();
        for (key, pending) in &self.overlay.session_responses {
            match pending {
                Some(response) => responses.insert(*key, response.clone()),
                None => responses.remove(key),
            };
        }
        Ok(SessionRows {
            clients: clients.into_iter().collect(),
            responses: responses.into_iter().collect(),
        })
    }

    fn apply(&mut self, batch: WriteBatch) -> Result<(), BackendError> {
        assert!(
            batch.meta.applied_index > self.meta.applied_index,
            "applied index not moving forward: {} -> {}",
            self.meta.applied_index,
            batch.meta.applied_index
        );
        assert!(batch.meta.current_revision >= self.meta.current_revision);
        let overlay = &mut self.overlay;
        for (revision, record) in batch.put_records {
            overlay.bytes += record.key.len() + record.value.len() + OVERLAY_ENTRY_OVERHEAD_BYTES;
            let previous = overlay.records.insert(revision, Some(record));
            assert!(previous.is_none(), "revision {revision:?} written twice");
        }
        for revision in batch.delete_records {
            overlay.bytes += OVERLAY_ENTRY_OVERHEAD_BYTES;
            // A record still pending was never in redb: forgetting it is the whole deletion.
            if let Some(Some(_)) = overlay.records.get(&revision) {
                overlay.records.remove(&revision);
            } else {
                overlay.records.insert(revision, None);
            }
        }
        for lease in batch.put_leases {
            overlay.bytes += OVERLAY_ENTRY_OVERHEAD_BYTES;
            overlay.leases.insert(lease.id, Some(lease));
        }
        for id in batch.delete_leases {
            overlay.bytes += OVERLAY_ENTRY_OVERHEAD_BYTES;
            overlay.leases.insert(id, None);
        }
        for (id, client) in batch.session_clients {
            overlay.bytes += OVERLAY_ENTRY_OVERHEAD_BYTES;
            overlay.session_clients.insert(id, client);
        }
        for (key, response) in batch.session_responses {
            overlay.bytes += OVERLAY_ENTRY_OVERHEAD_BYTES
                + match &response {
                    Some(StoredResponse::Kept(bytes)) => bytes.len(),
                    _ => 0,
                };
            overlay.session_responses.insert(key, response);
        }
        overlay.entries += 1;
        self.meta = batch.meta;
        if self.overlay_full() {
            self.commit_overlay(false)?;
        }
        Ok(())
    }

    fn replace_all(&mut self, state: FullState) -> Result<(), BackendError> {
        let FullState {
            meta,
            records,
            leases,
            sessions,
        } = state;
        let mut txn = self.db.begin_write().map_err(|e| self.error("begin write", e))?;
        // Durable: the server may drop its log up to the snapshot as soon as this returns.
        self.set_durability(&mut txn, true)?;
        txn.delete_table(RECORDS)
            .map_err(|e| self.error("clear records", e))?;
        txn.delete_table(LEASES)
            .map_err(|e| self.error("clear leases", e))?;
        {
            let mut table = txn
                .open_table(RECORDS)
                .map_err(|e| self.error("open records", e))?;
            let mut encoded = Vec::new();
            for (revision, record) in &records {
                encoded.clear();
                encode_record(record, &mut encoded);
                table
                    .insert(&encode_revision(*revision), encoded.as_slice())
                    .map_err(|e| self.error("write record", e))?;
            }
            let mut table = txn.open_table(LEASES).map_err(|e| self.error("open leases", e))?;
            for lease in &leases {
                table
                    .insert(lease.id, (lease.granted_ttl_secs, lease.expiry_ms))
                    .map_err(|e| self.error("write lease", e))?;
            }
        }
        self.replace_sessions(&txn, &sessions)?;
        let previous_meta = self.meta;
        self.meta = meta;
        if let Err(e) = self
            .write_meta(&txn)
            .and_then(|()| txn.commit().map_err(|e| self.error("commit", e)))
        {
            self.meta = previous_meta;
            return Err(e);
        }
        self.overlay = Overlay::default();
        // A snapshot may move the applied index either way; redb now holds exactly `meta`.
        self.committed_meta = meta;
        self.durable_applied_index = meta.applied_index;
        self.snapshot = Some(open_snapshot(&self.db, &self.path)?);
        Ok(())
    }

    fn flush(&mut self, durable: bool) -> Result<(), BackendError> {
        let clean = self.overlay.entries == 0;
        if clean && (!durable || self.durable_applied_index == self.committed_meta.applied_index) {
            return Ok(());
        }
        // With nothing pending, a durable commit still makes earlier non-durable ones durable.
        self.commit_overlay(durable)
    }

    fn durable_applied_index(&self) -> LogIndex {
        self.durable_applied_index
    }

    fn defragment(&mut self) -> Result<DefragmentReport, BackendError> {
        // Compaction's own commits are durable; flushing first puts every applied entry in them.
        self.flush(true)?;
        let size_before_bytes = self.file_size_bytes()?;
        self.snapshot = None;
        let compacted = self.compact_file();
        // Reopened whatever compaction did, so a failed compaction leaves a readable backend.
        self.snapshot = Some(open_snapshot(&self.db, &self.path)?);
        compacted?;
        assert_eq!(self.durable_applied_index, self.committed_meta.applied_index);
        Ok(DefragmentReport {
            size_before_bytes,
            size_after_bytes: self.file_size_bytes()?,
        })
    }
}

/// Checks the file's format row, writing it (and an empty state) into a new database.
fn init_or_check_format(db: &Database, path: &Path) -> Result<Meta, BackendError> {
    let txn = db.begin_read().map_err(|e| redb_error(path, "begin read", e))?;
    if let Some((meta, needs_upgrade)) = read_format_and_meta(&txn, path)? {
        if needs_upgrade {
            drop(txn);
            upgrade_layout(db, path)?;
        }
        return Ok(meta);
    }
    let tables: Vec<String> = txn
        .list_tables()
        .map_err(|e| redb_error(path, "list tables", e))?
        .map(|t| t.name().to_string())
        .collect();
    drop(txn);
    if !tables.is_empty() {
        return Err(BackendError::Corrupt(format!(
            "{}: a redb database of something else (tables {tables:?}), not yizhi-kv's",
            path.display()
        )));
    }
    let meta = Meta::default();
    let txn = db.begin_write().map_err(|e| redb_error(path, "begin write", e))?;
    {
        let mut table = txn
            .open_table(META)
            .map_err(|e| redb_error(path, "open meta", e))?;
        let mut insert = |row: &str, value: &[u8]| {
            table
                .insert(row, value)
                .map(drop)
                .map_err(|e| redb_error(path, "write meta", e))
        };
        insert(FORMAT_ROW, FORMAT)?;
        insert(STATE_ROW, &encode_meta(&meta))?;
        txn.open_table(RECORDS)
            .map_err(|e| redb_error(path, "open records", e))?;
        txn.open_table(LEASES)
            .map_err(|e| redb_error(path, "open leases", e))?;
        create_session_tables(&txn, path)?;
    }
    txn.commit().map_err(|e| redb_error(path, "commit", e))?;
    Ok(meta)
}

fn create_session_tables(txn: &WriteTransaction, path: &Path) -> Result<(), BackendError> {
    txn.open_table(SESSION_CLIENTS)
        .map_err(|e| redb_error(path, "open session clients", e))?;
    txn.open_table(SESSION_RESPONSES)
        .map_err(|e| redb_error(path, "open session responses", e))?;
    Ok(())
}

/// Layout 1 → 2: the session tables start empty, as the state before sessions existed.
fn upgrade_layout(db: &Database, path: &Path) -> Result<(), BackendError> {
    let txn = db.begin_write().map_err(|e| redb_error(path, "begin write", e))?;
    create_session_tables(&txn, path)?;
    {
        let mut table = txn
            .open_table(META)
            .map_err(|e| redb_error(path, "open meta", e))?;
        table
            .insert(FORMAT_ROW, FORMAT)
            .map_err(|e| redb_error(path, "write meta", e))?;
    }
    txn.commit().map_err(|e| redb_error(path, "commit", e))
}

/// The stored meta and whether the layout needs upgrading, or `None` when the file has no
/// yizhi-kv meta table at all.
fn read_format_and_meta(txn: &ReadTransaction, path: &Path) -> Result<Option<(Meta, bool)>, BackendError> {
    let table = match txn.open_table(META) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(redb_error(path, "open meta", e)),
    };
    let corrupt = |detail: String| BackendError::Corrupt(format!("{}: {detail}", path.display()));
    let row = |name: &str| -> Result<Option<Vec<u8>>, BackendError> {
        let found = table.get(name).map_err(|e| redb_error(path, "read meta", e))?;
        Ok(found.map(|guard| guard.value().to_vec()))
    };
    let needs_upgrade = match row(FORMAT_ROW)? {
        Some(format) if format == FORMAT => false,
        Some(format) if format == FORMAT_WITHOUT_SESSIONS => true,
        other => {
            return Err(corrupt(format!(
                "unknown layout {:?}, expected {:?}",
                other.map(|f| String::from_utf8_lossy(&f).into_owned()),
                String::from_utf8_lossy(FORMAT)
            )));
        }
    };
    let state = row(STATE_ROW)?.ok_or_else(|| corrupt("no state row".to_string()))?;
    decode_meta(&state)
        .map(|meta| Some((meta, needs_upgrade)))
        .map_err(|d| corrupt(format!("state row: {d}")))
}

fn open_snapshot(db: &Database, path: &Path) -> Result<Snapshot, BackendError> {
    let txn = db.begin_read().map_err(|e| redb_error(path, "begin read", e))?;
    // The tables keep the read transaction's snapshot alive after `txn` is dropped.
    Ok(Snapshot {
        records: txn
            .open_table(RECORDS)
            .map_err(|e| redb_error(path, "open records", e))?,
        leases: txn
            .open_table(LEASES)
            .map_err(|e| redb_error(path, "open leases", e))?,
        session_clients: txn
            .open_table(SESSION_CLIENTS)
            .map_err(|e| redb_error(path, "open session clients", e))?,
        session_responses: txn
            .open_table(SESSION_RESPONSES)
            .map_err(|e| redb_error(path, "open session responses", e))?,
    })
}

/// A file that is not (or no longer) a database we can read is corruption; anything else
/// (locks, failing IO) is IO. redb reports a foreign file as an `InvalidData` IO error.
fn redb_error(path: &Path, what: &str, e: impl Into<redb::Error>) -> BackendError {
    let e: redb::Error = e.into();
    let message = format!("{}: {what}: {e}", path.display());
    match &e {
        redb::Error::Corrupted(_)
        | redb::Error::UpgradeRequired(_)
        | redb::Error::TableTypeMismatch { .. } => BackendError::Corrupt(message),
        redb::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => BackendError::Corrupt(message),
        _ => BackendError::Io(message),
    }
}

/// Overlays `pending` (puts and deletions, in revision order) onto `committed` (in revision
/// order) and visits the result in revision order.
fn merge_records(
    committed: impl Iterator<Item = Result<(Revision, RevisionRecord), BackendError>>,
    pending: &BTreeMap<Revision, Option<RevisionRecord>>,
    visit: &mut RecordVisitor<'_>,
) -> Result<(), BackendError> {
    let mut last: Option<Revision> = None;
    let mut emit = |revision: Revision, record: RevisionRecord| {
        assert!(
            last.is_none_or(|l| l < revision),
            "merge broke revision order: {last:?} then {revision:?}"
        );
        last = Some(revision);
        visit(revision, record)
    };
    let mut pending = pending.iter().peekable();
    for item in committed {
        let (revision, record) = item?;
        while let Some((p, change)) = pending.next_if(|(p, _)| **p < revision) {
            if let Some(record) = change {
                emit(*p, record.clone())?;
            }
        }
        match pending.next_if(|(p, _)| **p == revision) {
            Some((_, Some(overwritten))) => emit(revision, overwritten.clone())?,
            Some((_, None)) => {}
            None => emit(revision, record)?,
        }
    }
    for (p, change) in pending {
        if let Some(record) = change {
            emit(*p, record.clone())?;
        }
    }
    Ok(())
}

/// Order-preserving: flipping the sign bit maps i64 order onto unsigned big-endian byte order.
fn encode_revision(revision: Revision) -> RevisionKey {
    let mut key = [0u8; REVISION_KEY_BYTES];
    key[..8].copy_from_slice(&((revision.main as u64) ^ (1 << 63)).to_be_bytes());
    key[8..].copy_from_slice(&((revision.sub as u64) ^ (1 << 63)).to_be_bytes());
    key
}

fn decode_revision(key: &RevisionKey) -> Revision {
    let half = |bytes: &[u8]| {
        let mut b = [0u8; 8];
        b.copy_from_slice(bytes);
        (u64::from_be_bytes(b) ^ (1 << 63)) as i64
    };
    Revision::new(half(&key[..8]), half(&key[8..]))
}

fn encode_record(record: &RevisionRecord, out: &mut Vec<u8>) {
    let mut w = Writer {
        buf: std::mem::take(out),
    };
    w.u8(RECORD_ENCODING_VERSION);
    w.flags(&[record.tombstone]);
    w.i64(record.create_revision);
    w.i64(record.version);
    w.i64(record.lease);
    w.bytes(&record.key);
    // The value runs to the end: no length prefix to keep in step with it.
    w.buf.extend_from_slice(&record.value);
    *out = w.buf;
}

fn decode_record(data: &[u8]) -> Result<RevisionRecord, String> {
    let mut r = Reader::new(data);
    let version = r.u8("record encoding").map_err(|e| e.to_string())?;
    if version != RECORD_ENCODING_VERSION {
        return Err(format!("unknown record encoding {version}"));
    }
    let fields = (|| {
        let [tombstone] = r.flags("record flags")?;
        let create_revision = r.i64("create revision")?;
        let version = r.i64("version")?;
        let lease = r.i64("lease")?;
        let key = r.bytes("key")?;
        Ok::<_, crate::wire::DecodeError>((tombstone, create_revision, version, lease, key))
    })();
    let (tombstone, create_revision, version, lease, key) = fields.map_err(|e| e.to_string())?;
    let value = Bytes::copy_from_slice(r.rest());
    Ok(RevisionRecord {
        key,
        tombstone,
        value,
        create_revision,
        version,
        lease,
    })
}

fn encode_meta(meta: &Meta) -> Vec<u8> {
    let mut w = Writer::default();
    w.u8(META_ENCODING_VERSION);
    w.i64(meta.current_revision);
    w.i64(meta.compact_revision);
    w.varint(meta.applied_index);
    w.i64(meta.next_lease_id);
    w.varint(meta.session_clock_ms);
    w.buf
}

fn decode_meta(data: &[u8]) -> Result<Meta, String> {
    let mut r = Reader::new(data);
    let decoded = (|| {
        let version = r.u8("meta encoding")?;
        if !(1..=META_ENCODING_VERSION).contains(&version) {
            return Err(crate::wire::DecodeError::UnsupportedVersion {
                what: "meta",
                version,
            });
        }
        let meta = Meta {
            current_revision: r.i64("current revision")?,
            compact_revision: r.i64("compact revision")?,
            applied_index: r.varint("applied index")?,
            next_lease_id: r.i64("next lease id")?,
            session_clock_ms: if version >= 2 {
                r.varint("session clock")?
            } else {
                0
            },
        };
        r.finish("meta")?;
        Ok(meta)
    })();
    let meta = decoded.map_err(|e| e.to_string())?;
    if meta.current_revision < 1 || meta.compact_revision > meta.current_revision || meta.next_lease_id < 1 {
        return Err(format!("impossible meta {meta:?}"));
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_keys_sort_as_revisions_do() {
        let revisions = [
            Revision::new(i64::MIN, 0),
            Revision::new(-1, 5),
            Revision::new(0, 0),
            Revision::new(1, 0),
            Revision::new(1, 1),
            Revision::new(2, 0),
            Revision::new(255, 7),
            Revision::new(256, 0),
            Revision::new(i64::MAX, i64::MAX),
        ];
        for pair in revisions.windows(2) {
            assert!(encode_revision(pair[0]) < encode_revision(pair[1]), "{pair:?}");
        }
        for r in revisions {
            assert_eq!(decode_revision(&encode_revision(r)), r);
        }
    }

    #[test]
    fn records_and_meta_round_trip_and_garbage_is_an_error() {
        let record = RevisionRecord {
            key: Bytes::from_static(b"k"),
            tombstone: false,
            value: Bytes::from_static(b"value bytes"),
            create_revision: 3,
            version: 2,
            lease: 7,
        };
        let mut encoded = Vec::new();
        encode_record(&record, &mut encoded);
        assert_eq!(decode_record(&encoded), Ok(record));
        assert!(decode_record(&[]).is_err());
        assert!(decode_record(&[RECORD_ENCODING_VERSION, 0xff]).is_err());
        assert!(decode_record(&[9, 0, 0, 0, 0, 0]).is_err());
        let meta = Meta {
            current_revision: 9,
            compact_revision: 4,
            applied_index: 1 << 40,
            next_lease_id: 3,
            session_clock_ms: 1_700_000_000_000,
        };
        assert_eq!(decode_meta(&encode_meta(&meta)), Ok(meta));
        assert!(decode_meta(&encode_meta(&meta)[..5]).is_err());
        let backwards = Meta {
            compact_revision: 10,
            ..meta
        };
        assert!(decode_meta(&encode_meta(&backwards)).is_err());
        // A version-1 row (before the session clock) still decodes, with the clock at 0.
        let mut v1 = encode_meta(&meta);
        v1[0] = 1;
        let clock_bytes = {
            let mut w = Writer::default();
            w.varint(meta.session_clock_ms);
            w.buf.len()
        };
        v1.truncate(v1.len() - clock_bytes);
        let old = Meta {
            session_clock_ms: 0,
            ..meta
        };
        assert_eq!(decode_meta(&v1), Ok(old));
    }

    #[test]
    fn merge_applies_pending_puts_and_deletions_in_order() {
        let rec = |v: &'static str| RevisionRecord {
            key: Bytes::from_static(b"k"),
            tombstone: false,
            value: Bytes::from_static(v.as_bytes()),
            create_revision: 1,
            version: 1,
            lease: 0,
        };
        let r = |main| Revision::new(main, 0);
        let committed = vec![(r(2), rec("2")), (r(4), rec("4")), (r(6), rec("6"))];
        let pending = BTreeMap::from([
            (r(1), Some(rec("1"))),
            (r(4), None),
            (r(5), Some(rec("5"))),
            (r(7), Some(rec("7"))),
            (r(8), None),
        ]);
        let mut merged = Vec::new();
        merge_records(
            committed.into_iter().map(Ok),
            &pending,
            &mut |revision, record| {
                merged.push((revision, record));
                Ok(())
            },
        )
        .unwrap();
        let mains: Vec<i64> = merged.iter().map(|(rev, _)| rev.main).collect();
        assert_eq!(mains, [1, 2, 5, 6, 7]);
        assert_eq!(merged[2].1, rec("5"));
    }

    /// Rewrites a fresh file as the layout-1 code left it: no session tables, a version-1 meta row.
    fn downgrade_to_layout_1(path: &Path, meta: &Meta) {
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        assert!(txn.delete_table(SESSION_CLIENTS).unwrap());
        assert!(txn.delete_table(SESSION_RESPONSES).unwrap());
        {
            let mut table = txn.open_table(META).unwrap();
            table.insert(FORMAT_ROW, FORMAT_WITHOUT_SESSIONS).unwrap();
            let mut row = encode_meta(meta);
            row[0] = 1;
            row.pop(); // the session clock, 0: one varint byte
            table.insert(STATE_ROW, row.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }

    #[test]
    fn a_layout_1_file_is_upgraded_with_empty_session_tables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.redb");
        let meta = Meta {
            applied_index: 4,
            ..Meta::default()
        };
        let mut backend = RedbBackend::open(&path).unwrap();
        backend
            .apply(WriteBatch {
                meta,
                ..WriteBatch::default()
            })
            .unwrap();
        backend.flush(true).unwrap();
        drop(backend);
        downgrade_to_layout_1(&path, &meta);
        let mut backend = RedbBackend::open(&path).unwrap();
        assert_eq!(backend.meta().unwrap(), meta);
        assert_eq!(backend.all_sessions().unwrap(), SessionRows::default());
        let client = ClientRecord {
            floor: 2,
            last_seen_ms: 9,
        };
        let response = StoredResponse::Kept(Bytes::from(crate::codec::encode_response(&Err(
            crate::KvError::KeyNotFound,
        ))));
        let next = Meta {
            applied_index: 5,
            session_clock_ms: 9,
            ..meta
        };
        backend
            .apply(WriteBatch {
                session_clients: vec![(3, Some(client))],
                session_responses: vec![
                    ((3, 2), Some(response.clone())),
                    ((3, 4), Some(StoredResponse::TooLarge)),
                ],
                meta: next,
                ..WriteBatch::default()
            })
            .unwrap();
        backend.flush(true).unwrap();
        drop(backend);
        let backend = RedbBackend::open(&path).unwrap();
        assert_eq!(backend.meta().unwrap(), next);
        let expected = SessionRows {
            clients: vec![(3, client)],
            responses: vec![((3, 2), response), ((3, 4), StoredResponse::TooLarge)],
        };
        assert_eq!(backend.all_sessions().unwrap(), expected);
    }

    #[test]
    fn a_corrupt_session_row_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.redb");
        drop(RedbBackend::open(&path).unwrap());
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(SESSION_RESPONSES)
                .unwrap()
                .insert((1, 1), [1u8, 1, 0, 200].as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let backend = RedbBackend::open(&path).unwrap();
        assert!(matches!(backend.all_sessions(), Err(BackendError::Corrupt(_))));
    }

    #[test]
    fn the_backend_is_shareable_between_reader_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<RedbBackend>();
    }
}
