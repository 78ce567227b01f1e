//! The MVCC store: the key index, the leases and the backend, and the read path (range).
//! Writes are in `write.rs`, leases in `lease.rs`, the command entry point in `apply.rs`.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::backend::{
    Backend, BackendError, DefragmentReport, LeaseRecord, Meta, RevisionRecord, WriteBatch,
    check_record_shape,
};
use crate::config::KvConfig;
use crate::error::KvError;
use crate::index::{IndexEntry, IndexKey, KeyIndex, KeyRange};
use crate::revision::Revision;
use crate::session::{SessionChanges, SessionTable, check_session_config};
use crate::types::{
    Event, EventKind, KeyValue, LeaseId, NO_LEASE, RangeRequest, RangeResponse, SessionStats, SortOrder,
    SortTarget,
};

/// The writes of the command being applied, not yet in the backend. Reads consult it first so
/// that later ops of a txn see earlier ones (etcd's txn reads do the same).
#[derive(Debug, Default)]
pub(crate) struct Pending {
    pub records: BTreeMap<Revision, RevisionRecord>,
    pub events: Vec<Event>,
    pub batch: WriteBatch,
    /// Kept apart from `batch`: a deduplicated command whose inner command fails still stores
    /// its (error) response.
    pub sessions: SessionChanges,
}

#[derive(Debug)]
pub struct MvccStore<B: Backend> {
    pub(crate) backend: B,
    pub(crate) config: KvConfig,
    pub(crate) index: KeyIndex,
    /// Invariant: compact_revision <= current_revision; equals the backend's meta between
    /// commands.
    pub(crate) meta: Meta,
    pub(crate) leases: BTreeMap<LeaseId, LeaseRecord>,
    /// Derived from the index: the lease of every live key.
    pub(crate) lease_keys: BTreeMap<LeaseId, BTreeSet<IndexKey>>,
    pub(crate) sessions: SessionTable,
    pub(crate) pending: Pending,
}

impl<B: Backend> MvccStore<B> {
    /// Opens the store over whatever `backend` holds, rebuilding the in-memory index.
    pub fn open(backend: B, config: KvConfig) -> Result<Self, BackendError> {
        assert!(config.max_txn_ops >= 1, "{config:?}");
        assert!(config.min_lease_ttl_secs >= 1, "{config:?}");
        check_session_config(&config);
        let mut store = MvccStore {
            backend,
            config,
            index: KeyIndex::default(),
            meta: Meta::default(),
            leases: BTreeMap::new(),
            lease_keys: BTreeMap::new(),
            sessions: SessionTable::default(),
            pending: Pending::default(),
        };
        store.load()?;
        Ok(store)
    }

    /// Rebuilds everything in memory from the backend.
    pub(crate) fn load(&mut self) -> Result<(), BackendError> {
        let meta = self.backend.meta()?;
        let mut index = KeyIndex::default();
        self.backend.for_each_record(&mut |revision, record| {
            if revision.main > meta.current_revision || revision.main < 1 {
                return Err(BackendError::Corrupt(format!(
                    "record at {revision:?} outside 1..={}",
                    meta.current_revision
                )));
            }
            check_record_shape(revision, &record)?;
            if record.tombstone && index.newest(&record.key).is_some_and(|e| e.tombstone) {
                return Err(BackendError::Corrupt(format!(
                    "two deletes in a row at {revision:?}"
                )));
            }
            let entry = IndexEntry {
                revision,
                tombstone: record.tombstone,
                create_revision: record.create_revision,
                version: record.version,
                lease: record.lease,
            };
            index.push(&record.key, entry);
            Ok(())
        })?;
        self.index = index;
        self.meta = meta;
        self.leases = self
            .backend
            .all_leases()?
            .into_iter()
            .map(|l| (l.id, l))
            .collect();
        self.sessions = SessionTable::load(self.backend.all_sessions()?, &meta)?;
        self.pending = Pending::default();
        self.rebuild_lease_keys();
        Ok(())
    }

    pub(crate) fn rebuild_lease_keys(&mut self) {
        self.lease_keys.clear();
        for (key, entry) in self.index.latest_live() {
            if entry.lease != NO_LEASE {
                self.lease_keys
                    .entry(entry.lease)
                    .or_default()
                    .insert(key.clone());
            }
        }
    }

    pub fn current_revision(&self) -> i64 {
        self.meta.current_revision
    }

    pub fn compact_revision(&self) -> i64 {
        self.meta.compact_revision
    }

    pub fn applied_index(&self) -> yizhi_engine::LogIndex {
        self.meta.applied_index
    }

    /// See [`Backend::flush`]. Between commands only.
    pub fn flush(&mut self, durable: bool) -> Result<(), BackendError> {
        assert!(self.pending.records.is_empty(), "flush in the middle of an apply");
        self.backend.flush(durable)?;
        assert!(self.backend.durable_applied_index() <= self.meta.applied_index);
        Ok(())
    }

    /// See [`Backend::defragment`]. Between commands only. Leaves everything applied durable.
    pub fn defragment(&mut self) -> Result<DefragmentReport, BackendError> {
        assert!(
            self.pending.records.is_empty(),
            "defragment in the middle of an apply"
        );
        let report = self.backend.defragment()?;
        assert!(self.backend.durable_applied_index() <= self.meta.applied_index);
        Ok(report)
    }

    /// See [`Backend::durable_applied_index`].
    pub fn durable_applied_index(&self) -> yizhi_engine::LogIndex {
        self.backend.durable_applied_index()
    }

    pub fn config(&self) -> KvConfig {
        self.config
    }

    pub fn session_stats(&self) -> SessionStats {
        self.sessions.stats()
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The revision reads see: inside a txn that has written, the revision being written.
    pub(crate) fn read_main(&self) -> i64 {
        if self.pending.records.is_empty() {
            self.meta.current_revision
        } else {
            self.meta.current_revision + 1
        }
    }

    pub(crate) fn record(&self, revision: Revision) -> Result<RevisionRecord, KvError> {
        if let Some(record) = self.pending.records.get(&revision) {
            return Ok(record.clone());
        }
        match self.backend.record(revision)? {
            Some(record) => Ok(record),
            None => Err(BackendError::Corrupt(format!("index names missing revision {revision:?}")).into()),
        }
    }

    pub(crate) fn key_value(&self, key: Bytes, entry: IndexEntry) -> Result<KeyValue, KvError> {
        assert!(!entry.tombstone, "no key-value for a tombstone of {key:?}");
        let record = self.record(entry.revision)?;
        Ok(KeyValue {
            key,
            create_revision: entry.create_revision,
            mod_revision: entry.revision.main,
            version: entry.version,
            value: record.value,
            lease: entry.lease,
        })
    }

    /// The main revision a read at `requested` (0 or less: latest) is served at.
    pub(crate) fn resolve_read_revision(&self, requested: i64) -> Result<i64, KvError> {
        let now = self.read_main();
        if requested <= 0 {
            return Ok(now);
        }
        if requested > now {
            return Err(KvError::FutureRevision);
        }
        if requested < self.meta.compact_revision {
            return Err(KvError::Compacted {
                compact_revision: self.meta.compact_revision,
            });
        }
        Ok(requested)
    }

    /// etcd's Range: count before filters; filters, then sort, then limit.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, KvError> {
        let range = KeyRange::new(&req.key, &req.range_end)?;
        let at = self.resolve_read_revision(req.revision)?;
        let live: Vec<(&[u8], IndexEntry)> = self.index.live_in(&range, at).collect();
        let count = live.len() as i64;
        let mut response = RangeResponse {
            revision: self.read_main(),
            kvs: Vec::new(),
            more: false,
            count,
        };
        if req.count_only {
            return Ok(response);
        }
        let mut selected: Vec<(&[u8], IndexEntry)> =
            live.into_iter().filter(|(_, e)| passes_filters(req, e)).collect();
        let limit = usize::try_from(req.limit).unwrap_or(0);
        let order = effective_sort_order(req.sort_order, req.sort_target);
        if order == SortOrder::None && limit > 0 && selected.len() > limit {
            // Already in key order: only the first `limit` values need reading.
            selected.truncate(limit);
            response.more = true;
        }
        let mut kvs = selected
            .into_iter()
            .map(|(key, entry)| self.key_value(Bytes::copy_from_slice(key), entry))
            .collect::<Result<Vec<_>, _>>()?;
        sort_kvs(&mut kvs, order, req.sort_target);
        if limit > 0 && kvs.len() > limit {
            kvs.truncate(limit);
            response.more = true;
        }
        assert!(kvs.len() as i64 <= count, "{} kvs of {count}", kvs.len());
        assert!(
            kvs.iter()
                .all(|kv| kv.mod_revision <= at && kv.create_revision <= at)
        );
        if req.keys_only {
            kvs.iter_mut().for_each(|kv| kv.value = Bytes::new());
        }
        response.kvs = kvs;
        Ok(response)
    }

    /// Events for writes to `range` with main revision in `[from, to]`, in revision order, each
    /// with its previous key-value when compaction has not dropped it.
    pub(crate) fn history_events(
        &self,
        range: &KeyRange,
        from: i64,
        to: i64,
    ) -> Result<Vec<(Revision, Event)>, KvError> {
        let mut events = Vec::new();
        for (key, entry, prev) in self.index.writes_between(range, from, to) {
            let prev_kv = match prev {
                Some(p) if !p.tombstone => Some(self.key_value(key.clone(), p)?),
                _ => None,
            };
            events.push((entry.revision, self.event_for(&key, entry, prev_kv)?));
        }
        Ok(events)
    }

    pub(crate) fn event_for(
        &self,
        key: &Bytes,
        entry: IndexEntry,
        prev_kv: Option<KeyValue>,
    ) -> Result<Event, KvError> {
        if entry.tombstone {
            let kv = KeyValue {
                key: key.clone(),
                mod_revision: entry.revision.main,
                ..KeyValue::default()
            };
            return Ok(Event {
                kind: EventKind::Delete,
                kv,
                prev_kv,
            });
        }
        Ok(Event {
            kind: EventKind::Put,
            kv: self.key_value(key.clone(), entry)?,
            prev_kv,
        })
    }
}

fn passes_filters(req: &RangeRequest, entry: &IndexEntry) -> bool {
    let m = entry.revision.main;
    let c = entry.create_revision;
    (req.min_mod_revision == 0 || m >= req.min_mod_revision)
        && (req.max_mod_revision == 0 || m <= req.max_mod_revision)
        && (req.min_create_revision == 0 || c >= req.min_create_revision)
        && (req.max_create_revision == 0 || c <= req.max_create_revision)
}

/// etcd's defaults: a non-key target without an order sorts ascending; ascending by key is the
/// natural order and needs no sort.
fn effective_sort_order(order: SortOrder, target: SortTarget) -> SortOrder {
    match (order, target) {
        (SortOrder::None, SortTarget::Key) => SortOrder::None,
        (SortOrder::None, _) => SortOrder::Ascend,
        (SortOrder::Ascend, SortTarget::Key) => SortOrder::None,
        (order, _) => order,
    }
}

/// Stable, so ties stay in key order whatever the direction (etcd leaves ties unspecified).
fn sort_kvs(kvs: &mut [KeyValue], order: SortOrder, target: SortTarget) {
    let compare = |a: &KeyValue, b: &KeyValue| match target {
        SortTarget::Key => a.key.cmp(&b.key),
        SortTarget::Version => a.version.cmp(&b.version),
        SortTarget::Create => a.create_revision.cmp(&b.create_revision),
        SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
        SortTarget::Value => a.value.cmp(&b.value),
    };
    match order {
        SortOrder::None => {}
        SortOrder::Ascend => kvs.sort_by(compare),
        SortOrder::Descend => kvs.sort_by(|a, b| compare(b, a)),
    }
}
