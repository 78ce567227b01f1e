//! The write path: put, delete range, txn and compaction. Every write first validates against
//! the state before it and only then mutates, so a failed request changes nothing.

use std::collections::BTreeSet;

use bytes::Bytes;

use crate::backend::{Backend, RevisionRecord};
use crate::config::MAX_TXN_DEPTH;
use crate::error::KvError;
use crate::index::{IndexEntry, IndexKey, KeyRange};
use crate::revision::Revision;
use crate::store::MvccStore;
use crate::types::{
    CompactionRequest, CompactionResponse, Compare, CompareResult, CompareTarget, DeleteRangeRequest,
    DeleteRangeResponse, Event, EventKind, KeyValue, NO_LEASE, PutRequest, PutResponse, RequestOp,
    ResponseOp, TxnRequest, TxnResponse,
};

impl<B: Backend> MvccStore<B> {
    /// The revision the pending writes carry, and the sub revision of the next one.
    fn next_write_revision(&self) -> Revision {
        Revision::new(self.meta.current_revision + 1, self.pending.records.len() as i64)
    }

    /// Records one write in the index, the lease attachments and the pending batch. `prev_kv` is
    /// the key's live value before this write, read once by the caller (a put needs it anyway, and
    /// each read of it is a backend lookup).
    fn stage(
        &mut self,
        key: Bytes,
        entry: IndexEntry,
        record: RevisionRecord,
        prev_kv: Option<KeyValue>,
    ) -> Result<(), KvError> {
        assert_eq!(entry.revision, self.next_write_revision());
        assert_eq!(entry.tombstone, record.tombstone);
        let prev = self.index.get(&key, self.read_main());
        assert_eq!(
            prev.map(|p| (p.revision.main, p.lease)),
            prev_kv.as_ref().map(|kv| (kv.mod_revision, kv.lease)),
            "the previous value staged for {key:?} is not the index's"
        );
        if let Some(p) = prev
            && p.lease != NO_LEASE
            && let Some(keys) = self.lease_keys.get_mut(&p.lease)
        {
            keys.remove(key.as_ref());
        }
        if !entry.tombstone && entry.lease != NO_LEASE {
            self.lease_keys
                .entry(entry.lease)
                .or_default()
                .insert(IndexKey::new(&key));
        }
        // The event is built from the record at hand rather than read back from the batch.
        let event = if entry.tombstone {
            self.event_for(&key, entry, prev_kv)?
        } else {
            Event {
                kind: EventKind::Put,
                kv: KeyValue {
                    key: key.clone(),
                    create_revision: entry.create_revision,
                    mod_revision: entry.revision.main,
                    version: entry.version,
                    value: record.value.clone(),
                    lease: entry.lease,
                },
                prev_kv,
            }
        };
        self.pending.records.insert(entry.revision, record);
        self.index.push(&key, entry);
        self.pending.events.push(event);
        Ok(())
    }

    /// Every check a put needs: its shape (as etcd's gRPC layer does), then the state.
    pub(crate) fn check_put(&self, req: &PutRequest) -> Result<(), KvError> {
        check_put_shape(req)?;
        let existing = self.index.get(&req.key, self.read_main());
        if (req.ignore_value || req.ignore_lease) && existing.is_none() {
            return Err(KvError::KeyNotFound);
        }
        if req.lease != NO_LEASE && !self.leases.contains_key(&req.lease) {
            return Err(KvError::LeaseNotFound);
        }
        Ok(())
    }

    /// Writes a put that `check_put` accepted.
    pub(crate) fn write_put(&mut self, req: &PutRequest) -> Result<PutResponse, KvError> {
        let revision = self.next_write_revision();
        let prev = self.index.get(&req.key, self.read_main());
        let prev_kv = prev.map(|p| self.key_value(req.key.clone(), p)).transpose()?;
        let value = match (&prev_kv, req.ignore_value) {
            (Some(p), true) => p.value.clone(),
            _ => req.value.clone(),
        };
        let lease = match (&prev_kv, req.ignore_lease) {
            (Some(p), true) => p.lease,
            _ => req.lease,
        };
        let entry = IndexEntry {
            revision,
            tombstone: false,
            create_revision: prev.map_or(revision.main, |p| p.create_revision),
            version: prev.map_or(1, |p| p.version + 1),
            lease,
        };
        let record = RevisionRecord {
            key: req.key.clone(),
            tombstone: false,
            value,
            create_revision: entry.create_revision,
            version: entry.version,
            lease,
        };
        assert!(
            entry.version >= 1 && entry.create_revision <= revision.main,
            "{entry:?}"
        );
        let returned_prev_kv = if req.prev_kv { prev_kv.clone() } else { None };
        self.stage(req.key.clone(), entry, record, prev_kv)?;
        Ok(PutResponse {
            revision: revision.main,
            prev_kv: returned_prev_kv,
        })
    }

    pub(crate) fn write_delete_range(
        &mut self,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, KvError> {
        let range = KeyRange::new(&req.key, &req.range_end)?;
        let victims: Vec<(Bytes, IndexEntry)> = self
            .index
            .live_in(&range, self.read_main())
            .map(|(k, e)| (Bytes::copy_from_slice(k), e))
            .collect();
        let mut prev_kvs = Vec::new();
        let events_before = self.pending.events.len();
        for (key, entry) in &victims {
            if req.prev_kv {
                prev_kvs.push(self.key_value(key.clone(), *entry)?);
            }
            self.delete_key(key.clone())?;
        }
        assert_eq!(self.pending.events.len() - events_before, victims.len());
        Ok(DeleteRangeResponse {
            revision: self.read_main(),
            deleted: victims.len() as i64,
            prev_kvs,
        })
    }

    pub(crate) fn delete_key(&mut self, key: Bytes) -> Result<(), KvError> {
        let revision = self.next_write_revision();
        let entry = IndexEntry {
            revision,
            tombstone: true,
            create_revision: 0,
            version: 0,
            lease: NO_LEASE,
        };
        let record = RevisionRecord {
            key: key.clone(),
            tombstone: true,
            value: Bytes::new(),
            create_revision: 0,
            version: 0,
            lease: NO_LEASE,
        };
        let prev_kv = self
            .index
            .get(&key, self.read_main())
            .map(|p| self.key_value(key.clone(), p))
            .transpose()?;
        self.stage(key, entry, record, prev_kv)
    }

    pub(crate) fn compact(&mut self, req: &CompactionRequest) -> Result<CompactionResponse, KvError> {
        if req.revision <= self.meta.compact_revision {
            return Err(KvError::Compacted {
                compact_revision: self.meta.compact_revision,
            });
        }
        if req.revision > self.meta.current_revision {
            return Err(KvError::FutureRevision);
        }
        let dropped = self.index.compact(req.revision);
        assert!(
            dropped.iter().all(|r| r.main <= req.revision),
            "compaction at {} dropped a later revision",
            req.revision
        );
        self.pending.batch.delete_records.extend(dropped);
        self.meta.compact_revision = req.revision;
        Ok(CompactionResponse {
            revision: self.meta.current_revision,
        })
    }

    /// etcd's Txn: compares and branch choices are all decided against the state before the
    /// txn (also for nested txns), the chosen path is validated, then executed at one revision.
    pub(crate) fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse, KvError> {
        self.check_txn_shape(req, 0)?;
        let mut path = Vec::new();
        self.choose_path(req, &mut path)?;
        let mut checked = 0;
        self.check_path(req, &path, &mut checked)?;
        assert_eq!(checked, path.len(), "validation walked another path");
        let mut executed = 0;
        let mut response = self.execute_txn(req, &path, &mut executed)?;
        assert_eq!(executed, path.len(), "execution walked another path");
        stamp_revision(&mut response, self.read_main());
        Ok(response)
    }

    /// Checks that need no state: op counts, depth, empty keys, overlapping writes.
    fn check_txn_shape(&self, req: &TxnRequest, depth: usize) -> Result<(), KvError> {
        if depth >= MAX_TXN_DEPTH {
            return Err(KvError::TxnTooDeep {
                max_depth: MAX_TXN_DEPTH,
            });
        }
        let max = self.config.max_txn_ops;
        if req.compare.len() > max || req.success.len() > max || req.failure.len() > max {
            return Err(KvError::TooManyOps);
        }
        for compare in &req.compare {
            KeyRange::new(&compare.key, &compare.range_end)?;
        }
        for op in req.success.iter().chain(&req.failure) {
            match op {
                RequestOp::Range(r) => KeyRange::new(&r.key, &r.range_end).map(drop)?,
                RequestOp::Put(p) => check_put_shape(p)?,
                RequestOp::DeleteRange(d) => KeyRange::new(&d.key, &d.range_end).map(drop)?,
                RequestOp::Txn(t) => self.check_txn_shape(t, depth + 1)?,
            }
        }
        check_writes_disjoint(&req.success)?;
        check_writes_disjoint(&req.failure)?;
        Ok(())
    }

    fn choose_path(&self, req: &TxnRequest, path: &mut Vec<bool>) -> Result<(), KvError> {
        let mut succeeded = true;
        for compare in &req.compare {
            if !self.compare_holds(compare)? {
                succeeded = false;
                break;
            }
        }
        path.push(succeeded);
        let branch = if succeeded { &req.success } else { &req.failure };
        for op in branch {
            if let RequestOp::Txn(nested) = op {
                self.choose_path(nested, path)?;
            }
        }
        Ok(())
    }

    /// Checks along the chosen path that depend on state (leases, existing keys, revisions).
    fn check_path(&self, req: &TxnRequest, path: &[bool], at: &mut usize) -> Result<(), KvError> {
        let branch = if path[*at] { &req.success } else { &req.failure };
        *at += 1;
        for op in branch {
            match op {
                RequestOp::Range(r) => self.resolve_read_revision(r.revision).map(drop)?,
                RequestOp::Put(p) => self.check_put(p)?,
                RequestOp::DeleteRange(_) => {}
                RequestOp::Txn(nested) => self.check_path(nested, path, at)?,
            }
        }
        Ok(())
    }

    fn execute_txn(
        &mut self,
        req: &TxnRequest,
        path: &[bool],
        at: &mut usize,
    ) -> Result<TxnResponse, KvError> {
        let succeeded = path[*at];
        *at += 1;
        let branch = if succeeded { &req.success } else { &req.failure };
        let mut responses = Vec::with_capacity(branch.len());
        for op in branch {
            let response = match op {
                RequestOp::Range(r) => ResponseOp::Range(self.range(r)?),
                RequestOp::Put(p) => ResponseOp::Put(self.write_put(p)?),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.write_delete_range(d)?),
                RequestOp::Txn(nested) => ResponseOp::Txn(self.execute_txn(nested, path, at)?),
            };
            responses.push(response);
        }
        Ok(TxnResponse {
            revision: 0,
            succeeded,
            responses,
        })
    }

    /// etcd: a compare over a range holds when every key in it holds; with no key present, a
    /// value compare fails and the others compare against a zero key-value.
    fn compare_holds(&self, compare: &Compare) -> Result<bool, KvError> {
        let range = KeyRange::new(&compare.key, &compare.range_end)?;
        let at = self.read_main();
        let live: Vec<(&[u8], IndexEntry)> = self.index.live_in(&range, at).collect();
        if live.is_empty() {
            if matches!(compare.target, CompareTarget::Value(_)) {
                return Ok(false);
            }
            return Ok(compare_one(compare, &KeyValue::default()));
        }
        for (key, entry) in live {
            let kv = match compare.target {
                CompareTarget::Value(_) => self.key_value(Bytes::copy_from_slice(key), entry)?,
                _ => KeyValue {
                    key: Bytes::copy_from_slice(key),
                    create_revision: entry.create_revision,
                    mod_revision: entry.revision.main,
                    version: entry.version,
                    value: Bytes::new(),
                    lease: entry.lease,
                },
            };
            if !compare_one(compare, &kv) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

fn compare_one(compare: &Compare, kv: &KeyValue) -> bool {
    let ordering = match &compare.target {
        CompareTarget::Version(v) => kv.version.cmp(v),
        CompareTarget::Create(v) => kv.create_revision.cmp(v),
        CompareTarget::Mod(v) => kv.mod_revision.cmp(v),
        CompareTarget::Lease(v) => kv.lease.cmp(v),
        CompareTarget::Value(v) => kv.value.as_ref().cmp(v.as_ref()),
    };
    match compare.result {
        CompareResult::Equal => ordering.is_eq(),
        CompareResult::NotEqual => ordering.is_ne(),
        CompareResult::Greater => ordering.is_gt(),
        CompareResult::Less => ordering.is_lt(),
    }
}

/// The checks that need no state, so they apply to both branches of a txn.
fn check_put_shape(req: &PutRequest) -> Result<(), KvError> {
    if req.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(KvError::ValueProvided);
    }
    if req.ignore_lease && req.lease != NO_LEASE {
        return Err(KvError::LeaseProvided);
    }
    Ok(())
}

/// The keys one op list writes: exact put keys and deleted ranges.
#[derive(Default)]
struct WriteSet {
    puts: BTreeSet<Bytes>,
    deletes: Vec<KeyRange>,
}

/// etcd's `checkIntervals`: within one op list, two puts of one key, or a put inside a deleted
/// range, is a duplicate; deletes may overlap each other. A nested txn contributes the writes
/// of both its branches, since either may run.
fn check_writes_disjoint(ops: &[RequestOp]) -> Result<(), KvError> {
    write_set(ops).map(drop)
}

fn write_set(ops: &[RequestOp]) -> Result<WriteSet, KvError> {
    let mut set = WriteSet::default();
    for op in ops {
        match op {
            RequestOp::Put(p) => add_put(&mut set, p.key.clone())?,
            RequestOp::DeleteRange(d) => set.deletes.push(KeyRange::new(&d.key, &d.range_end)?),
            RequestOp::Range(_) => {}
            RequestOp::Txn(t) => {
                let success = write_set(&t.success)?;
                let failure = write_set(&t.failure)?;
                let nested_puts: BTreeSet<Bytes> = success.puts.union(&failure.puts).cloned().collect();
                for key in nested_puts {
                    add_put(&mut set, key)?;
                }
                set.deletes.extend(success.deletes);
                set.deletes.extend(failure.deletes);
            }
        }
    }
    for key in &set.puts {
        if set.deletes.iter().any(|d| d.contains(key)) {
            return Err(KvError::DuplicateKey);
        }
    }
    Ok(set)
}

fn add_put(set: &mut WriteSet, key: Bytes) -> Result<(), KvError> {
    if set.puts.insert(key) {
        Ok(())
    } else {
        Err(KvError::DuplicateKey)
    }
}

/// Every response of a txn carries the revision the txn ended at.
fn stamp_revision(response: &mut TxnResponse, revision: i64) {
    response.revision = revision;
    for op in &mut response.responses {
        match op {
            ResponseOp::Range(r) => r.revision = revision,
            ResponseOp::Put(p) => p.revision = revision,
            ResponseOp::DeleteRange(d) => d.revision = revision,
            ResponseOp::Txn(t) => stamp_revision(t, revision),
        }
    }
}
