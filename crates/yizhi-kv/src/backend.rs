//! Where the state machine keeps what it must not lose: one record per revision (etcd's "key"
//! bucket, keyed by revision), the leases, the client session table (one row per client, one per
//! kept response) and the meta row (current and compacted revision, applied log index, session
//! clock).
//!
//! The trait is shaped for a transactional store (redb): everything one log entry changes arrives
//! as one [`WriteBatch`] *together with* the log index it came from, so a crash can never leave
//! data that is ahead of, or behind, the applied index it is recorded under.

use std::collections::BTreeMap;

use bytes::Bytes;
use thiserror::Error;
use yizhi_engine::LogIndex;

use crate::revision::{INITIAL_REVISION, Revision};
use crate::types::LeaseId;

/// What one revision wrote to one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevisionRecord {
    pub key: Bytes,
    /// A delete: the remaining fields are zero/empty.
    pub tombstone: bool,
    pub value: Bytes,
    pub create_revision: i64,
    pub version: i64,
    pub lease: LeaseId,
}

/// A record that would break the key index's invariants is corruption, not a panic.
pub(crate) fn check_record_shape(revision: Revision, record: &RevisionRecord) -> Result<(), BackendError> {
    let sane = if record.tombstone {
        record.version == 0 && record.value.is_empty()
    } else {
        record.version >= 1 && record.create_revision >= 1 && record.create_revision <= revision.main
    };
    if sane && !record.key.is_empty() && revision.sub >= 0 {
        Ok(())
    } else {
        Err(BackendError::Corrupt(format!("malformed record at {revision:?}")))
    }
}

/// A granted lease as it is persisted. Attached keys are not stored: they are derived from the
/// latest record of each key, so they can never disagree with the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    pub id: LeaseId,
    pub granted_ttl_secs: i64,
    /// Logical time (the leader's clock) at which the lease expires unless kept alive.
    pub expiry_ms: u64,
}

/// The meta row, written with every batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub current_revision: i64,
    pub compact_revision: i64,
    pub applied_index: LogIndex,
    /// Next ID handed to a grant that asked for none; persisted so replicas agree after restart.
    pub next_lease_id: LeaseId,
    /// The client session clock: the largest `now_ms` any deduplicated command carried. Never
    /// moves back, so a member with a slow clock cannot revive idle sessions.
    pub session_clock_ms: u64,
}

/// A client's row of the session table (Raft thesis §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientRecord {
    /// The largest `acked_below` the client sent: it never retries a seq below this, so no
    /// response below it is kept. Invariant: >= 1.
    pub floor: u64,
    /// The session clock when the client was last heard from; it expires once idle too long.
    pub last_seen_ms: u64,
}

/// A response row's key: `(client_id, seq)`.
pub type ResponseKey = (u64, u64);

/// What the session table keeps for one applied request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoredResponse {
    /// [`crate::codec::encode_response`] of the answer as first returned.
    Kept(Bytes),
    /// Applied once, but the response encoded larger than
    /// [`crate::KvConfig::max_stored_response_bytes`]; a duplicate gets
    /// [`crate::KvError::DuplicateResponseNotRetained`].
    TooLarge,
}

/// The whole session table as rows, each list in ascending key order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionRows {
    pub clients: Vec<(u64, ClientRecord)>,
    pub responses: Vec<(ResponseKey, StoredResponse)>,
}

impl Default for Meta {
    fn default() -> Self {
        Meta {
            current_revision: INITIAL_REVISION,
            compact_revision: 0,
            applied_index: 0,
            next_lease_id: 1,
            session_clock_ms: 0,
        }
    }
}

/// Everything one applied command changes.
/// A store's whole content, as a snapshot carries it and [`Backend::replace_all`] installs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FullState {
    pub meta: Meta,
    pub records: Vec<(Revision, RevisionRecord)>,
    pub leases: Vec<LeaseRecord>,
    pub sessions: SessionRows,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    pub put_records: Vec<(Revision, RevisionRecord)>,
    /// Records dropped by compaction.
    pub delete_records: Vec<Revision>,
    pub put_leases: Vec<LeaseRecord>,
    pub delete_leases: Vec<LeaseId>,
    /// Session rows this entry changed, each key at most once; `None` deletes the row. Deleting
    /// a client lists the deletion of each of its responses too.
    pub session_clients: Vec<(u64, Option<ClientRecord>)>,
    pub session_responses: Vec<(ResponseKey, Option<StoredResponse>)>,
    pub meta: Meta,
}

/// What a defragmentation did to the backend's file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DefragmentReport {
    /// File size before; a backend without a file reports 0 here and after.
    pub size_before_bytes: u64,
    pub size_after_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum BackendError {
    #[error("backend I/O failed: {0}")]
    Io(String),
    #[error("backend data is corrupt: {0}")]
    Corrupt(String),
}

/// What [`Backend::for_each_record`] calls with each record.
pub type RecordVisitor<'a> = dyn FnMut(Revision, RevisionRecord) -> Result<(), BackendError> + 'a;

/// Durable storage for the state machine. Reads return owned values (cheap: `Bytes`) so that a
/// disk backend need not keep pages alive.
pub trait Backend {
    fn meta(&self) -> Result<Meta, BackendError>;
    fn record(&self, revision: Revision) -> Result<Option<RevisionRecord>, BackendError>;
    /// Calls `visit` with every record, in revision order, one at a time: rebuilding the index
    /// or taking a snapshot of a million keys must not hold every record at once. Stops at the
    /// first error, `visit`'s included.
    fn for_each_record(&self, visit: &mut RecordVisitor<'_>) -> Result<(), BackendError>;

    /// Every record, in revision order, all at once (tests, small stores).
    fn all_records(&self) -> Result<Vec<(Revision, RevisionRecord)>, BackendError> {
        let mut records = Vec::new();
        self.for_each_record(&mut |revision, record| {
            records.push((revision, record));
            Ok(())
        })?;
        Ok(records)
    }

    fn all_leases(&self) -> Result<Vec<LeaseRecord>, BackendError>;
    /// The whole client session table.
    fn all_sessions(&self) -> Result<SessionRows, BackendError>;
    /// Applies `batch` atomically; `batch.meta.applied_index` is the log index it came from.
    fn apply(&mut self, batch: WriteBatch) -> Result<(), BackendError>;
    /// Replaces the whole content (snapshot install), atomically.
    fn replace_all(&mut self, state: FullState) -> Result<(), BackendError>;

    /// Writes out whatever `apply` kept in memory; with `durable`, also makes everything applied
    /// so far survive a crash. Backends without a memory tier (or without a disk) do nothing.
    fn flush(&mut self, durable: bool) -> Result<(), BackendError> {
        let _ = durable;
        Ok(())
    }

    /// The highest applied index a crash cannot lose: log entries up to it need not be replayed
    /// again, so the server may release them. A backend without a disk has nothing better to say
    /// than its applied index (it loses everything on a crash anyway).
    fn durable_applied_index(&self) -> LogIndex {
        self.meta().map_or(0, |meta| meta.applied_index)
    }

    /// Makes everything applied durable and gives the file's free space back to the filesystem
    /// (etcd's defrag). A backend without a file has no free pages: nothing to do, sizes equal.
    fn defragment(&mut self) -> Result<DefragmentReport, BackendError> {
        Ok(DefragmentReport::default())
    }
}

/// The in-memory backend: the simulator's, and the reference for the redb one.
#[derive(Clone, Debug, Default)]
pub struct MemBackend {
    records: BTreeMap<Revision, RevisionRecord>,
    leases: BTreeMap<LeaseId, LeaseRecord>,
    session_clients: BTreeMap<u64, ClientRecord>,
    session_responses: BTreeMap<ResponseKey, StoredResponse>,
    meta: Meta,
}

impl MemBackend {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Backend for MemBackend {
    fn meta(&self) -> Result<Meta, BackendError> {
        Ok(self.meta)
    }

    fn record(&self, revision: Revision) -> Result<Option<RevisionRecord>, BackendError> {
        Ok(self.records.get(&revision).cloned())
    }

    fn for_each_record(&self, visit: &mut RecordVisitor<'_>) -> Result<(), BackendError> {
        self.records
            .iter()
            .try_for_each(|(revision, record)| visit(*revision, record.clone()))
    }

    fn all_leases(&self) -> Result<Vec<LeaseRecord>, BackendError> {
        Ok(self.leases.values().copied().collect())
    }

    fn all_sessions(&self) -> Result<SessionRows, BackendError> {
        Ok(SessionRows {
            clients: self.session_clients.iter().map(|(id, c)| (*id, *c)).collect(),
            responses: self
                .session_responses
                .iter()
                .map(|(key, r)| (*key, r.clone()))
                .collect(),
        })
    }

    fn apply(&mut self, batch: WriteBatch) -> Result<(), BackendError> {
        assert!(
            batch.meta.applied_index >= self.meta.applied_index,
            "applied index going back: {} -> {}",
            self.meta.applied_index,
            batch.meta.applied_index
        );
        assert!(batch.meta.current_revision >= self.meta.current_revision);
        for (revision, record) in batch.put_records {
            let previous = self.records.insert(revision, record);
            assert!(previous.is_none(), "revision {revision:?} written twice");
        }
        for revision in batch.delete_records {
            self.records.remove(&revision);
        }
        for lease in batch.put_leases {
            self.leases.insert(lease.id, lease);
        }
        for id in batch.delete_leases {
            self.leases.remove(&id);
        }
        for (id, change) in batch.session_clients {
            match change {
                Some(client) => self.session_clients.insert(id, client),
                None => self.session_clients.remove(&id),
            };
        }
        for (key, change) in batch.session_responses {
            match change {
                Some(response) => self.session_responses.insert(key, response),
                None => self.session_responses.remove(&key),
            };
        }
        self.meta = batch.meta;
        Ok(())
    }

    fn replace_all(&mut self, state: FullState) -> Result<(), BackendError> {
        self.records = state.records.into_iter().collect();
        self.leases = state.leases.into_iter().map(|l| (l.id, l)).collect();
        self.session_clients = state.sessions.clients.into_iter().collect();
        self.session_responses = state.sessions.responses.into_iter().collect();
        self.meta = state.meta;
        Ok(())
    }
}
