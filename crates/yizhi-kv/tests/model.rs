//! Differential tests: random command sequences applied to the store and to a naive reference
//! model (each key a list of versions), compared after every step; snapshots restore to an
//! identical state; two replicas applying one sequence agree on their state hash.
//!
//! One seed decides a whole run; a failure names it, and `MODEL_SEED=<n>` replays just that one.

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use common::b;
use yizhi_engine::SeededRng;
use yizhi_kv::*;

const SEEDS: u64 = 150;
const STEPS_PER_SEED: usize = 150;
const KEYS: [&str; 6] = ["a", "b", "ba", "c", "d", "e"];

#[derive(Clone, Debug)]
struct Version {
    revision: i64,
    /// None: a delete.
    value: Option<Bytes>,
    create_revision: i64,
    version: i64,
}

/// The reference: every version of every key, never forgetting; compaction only moves a floor.
#[derive(Debug)]
struct Model {
    revision: i64,
    compacted: i64,
    keys: BTreeMap<Bytes, Vec<Version>>,
}

fn in_range(key: &Bytes, start: &Bytes, end: &Bytes) -> bool {
    if end.is_empty() {
        key == start
    } else if end.as_ref() == b"\0" {
        key >= start
    } else {
        key >= start && key < end
    }
}

impl Model {
    fn new() -> Self {
        Model {
            revision: 1,
            compacted: 0,
            keys: BTreeMap::new(),
        }
    }

    fn live_at(&self, key: &Bytes, at: i64) -> Option<KeyValue> {
        let v = self.keys.get(key)?.iter().rev().find(|v| v.revision <= at)?;
        let value = v.value.clone()?;
        Some(KeyValue {
            key: key.clone(),
            create_revision: v.create_revision,
            mod_revision: v.revision,
            version: v.version,
            value,
            lease: 0,
        })
    }

    fn range_at(&self, start: &Bytes, end: &Bytes, at: i64) -> Vec<KeyValue> {
        self.keys
            .keys()
            .filter(|k| in_range(k, start, end))
            .filter_map(|k| self.live_at(k, at))
            .collect()
    }

    fn range(&self, req: &RangeRequest, now: i64) -> Result<RangeResponse, KvError> {
        let at = if req.revision <= 0 { now } else { req.revision };
        if at > now {
            return Err(KvError::FutureRevision);
        }
        if at < self.compacted {
            return Err(KvError::Compacted {
                compact_revision: self.compacted,
            });
        }
        let mut kvs = self.range_at(&req.key, &req.range_end, at);
        let count = kvs.len() as i64;
        let limit = req.limit.max(0) as usize;
        let more = limit > 0 && kvs.len() > limit;
        if more {
            kvs.truncate(limit);
        }
        Ok(RangeResponse {
            revision: now,
            kvs,
            more,
            count,
        })
    }

    fn write(&mut self, key: &Bytes, value: Option<Bytes>, at: i64) {
        let prev = self.live_at(key, at);
        let (create_revision, version) = match (&value, prev) {
            (None, _) => (0, 0),
            (Some(_), Some(p)) => (p.create_revision, p.version + 1),
            (Some(_), None) => (at, 1),
        };
        self.keys.entry(key.clone()).or_default().push(Version {
            revision: at,
            value,
            create_revision,
            version,
        });
    }
}

impl Model {
    fn apply(&mut self, command: &Command) -> Result<CommandResponse, KvError> {
        match command {
            Command::Range(r) => self.range(r, self.revision).map(CommandResponse::Range),
            Command::Put(p) => {
                let at = self.revision + 1;
                let prev_kv = self.live_at(&p.key, self.revision).filter(|_| p.prev_kv);
                self.write(&p.key, Some(p.value.clone()), at);
                self.revision = at;
                Ok(CommandResponse::Put(PutResponse {
                    revision: at,
                    prev_kv,
                }))
            }
            Command::DeleteRange(d) => {
                let mut wrote = false;
                let r = self.delete(d, &mut wrote);
                if wrote {
                    self.revision += 1;
                }
                Ok(CommandResponse::DeleteRange(DeleteRangeResponse {
                    revision: self.revision,
                    ..r
                }))
            }
            Command::Txn(t) => self.txn(t).map(CommandResponse::Txn),
            Command::Compact(c) => {
                if c.revision <= self.compacted {
                    return Err(KvError::Compacted {
                        compact_revision: self.compacted,
                    });
                }
                if c.revision > self.revision {
                    return Err(KvError::FutureRevision);
                }
                self.compacted = c.revision;
                Ok(CommandResponse::Compact(CompactionResponse {
                    revision: self.revision,
                }))
            }
            other => panic!("the model does not do {other:?}"),
        }
    }

    fn delete(&mut self, d: &DeleteRangeRequest, wrote: &mut bool) -> DeleteRangeResponse {
        let at = self.revision + 1;
        let read_at = if *wrote { at } else { self.revision };
        let victims = self.range_at(&d.key, &d.range_end, read_at);
        for kv in &victims {
            self.write(&kv.key, None, at);
            *wrote = true;
        }
        DeleteRangeResponse {
            revision: 0,
            deleted: victims.len() as i64,
            prev_kvs: if d.prev_kv { victims } else { Vec::new() },
        }
    }

    fn compare_holds(&self, c: &Compare) -> bool {
        let kvs = self.range_at(&c.key, &c.range_end, self.revision);
        if kvs.is_empty() && matches!(c.target, CompareTarget::Value(_)) {
            return false;
        }
        let zero = [KeyValue::default()];
        let kvs: &[KeyValue] = if kvs.is_empty() { &zero } else { &kvs };
        kvs.iter().all(|kv| {
            let ord = match &c.target {
                CompareTarget::Version(v) => kv.version.cmp(v),
                CompareTarget::Create(v) => kv.create_revision.cmp(v),
                CompareTarget::Mod(v) => kv.mod_revision.cmp(v),
                CompareTarget::Value(v) => kv.value.cmp(v),
                CompareTarget::Lease(v) => kv.lease.cmp(v),
            };
            match c.result {
                CompareResult::Equal => ord.is_eq(),
                CompareResult::NotEqual => ord.is_ne(),
                CompareResult::Greater => ord.is_gt(),
                CompareResult::Less => ord.is_lt(),
            }
        })
    }

    /// Flat txns only (the generator makes no nested ones; unit tests cover nesting).
    fn txn(&mut self, t: &TxnRequest) -> Result<TxnResponse, KvError> {
        for ops in [&t.success, &t.failure] {
            if has_duplicates(ops) {
                return Err(KvError::DuplicateKey);
            }
        }
        let succeeded = t.compare.iter().all(|c| self.compare_holds(c));
        let at = self.revision + 1;
        let mut wrote = false;
        let mut responses = Vec::new();
        for op in if succeeded { &t.success } else { &t.failure } {
            responses.push(match op {
                RequestOp::Put(p) => {
                    let read_at = if wrote { at } else { self.revision };
                    let prev_kv = self.live_at(&p.key, read_at).filter(|_| p.prev_kv);
                    self.write(&p.key, Some(p.value.clone()), at);
                    wrote = true;
                    ResponseOp::Put(PutResponse { revision: 0, prev_kv })
                }
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.delete(d, &mut wrote)),
                RequestOp::Range(r) => {
                    let now = if wrote { at } else { self.revision };
                    ResponseOp::Range(self.range(r, now).expect("generated txn ranges read now"))
                }
                RequestOp::Txn(_) => panic!("no nested txns in the model"),
            });
        }
        if wrote {
            self.revision = at;
        }
        for r in &mut responses {
            match r {
                ResponseOp::Put(p) => p.revision = self.revision,
                ResponseOp::DeleteRange(d) => d.revision = self.revision,
                ResponseOp::Range(g) => g.revision = self.revision,
                ResponseOp::Txn(_) => unreachable!(),
            }
        }
        Ok(TxnResponse {
            revision: self.revision,
            succeeded,
            responses,
        })
    }
}

fn has_duplicates(ops: &[RequestOp]) -> bool {
    let puts: Vec<&Bytes> = ops
        .iter()
        .filter_map(|op| match op {
            RequestOp::Put(p) => Some(&p.key),
            _ => None,
        })
        .collect();
    let deletes: Vec<&DeleteRangeRequest> = ops
        .iter()
        .filter_map(|op| match op {
            RequestOp::DeleteRange(d) => Some(d),
            _ => None,
        })
        .collect();
    puts.iter()
        .enumerate()
        .any(|(i, k)| puts[i + 1..].contains(k) || deletes.iter().any(|d| in_range(k, &d.key, &d.range_end)))
}

struct Gen {
    rng: SeededRng,
}

impl Gen {
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.rng.below(items.len() as u64) as usize]
    }

    fn key(&mut self) -> Bytes {
        b(self.pick(&KEYS))
    }

    fn range_end(&mut self) -> Bytes {
        match self.rng.below(3) {
            0 => Bytes::new(),
            1 => b("\0"),
            _ => self.key(),
        }
    }

    fn value(&mut self) -> Bytes {
        let n = self.rng.below(4);
        if n == 0 {
            Bytes::new()
        } else {
            b(&format!("v{}", self.rng.below(5)))
        }
    }

    fn put(&mut self) -> PutRequest {
        PutRequest {
            key: self.key(),
            value: self.value(),
            prev_kv: self.rng.chance(1, 2),
            ..Default::default()
        }
    }

    fn delete(&mut self) -> DeleteRangeRequest {
        DeleteRangeRequest {
            key: self.key(),
            range_end: self.range_end(),
            prev_kv: self.rng.chance(1, 2),
        }
    }

    fn range(&mut self, model: &Model) -> RangeRequest {
        RangeRequest {
            key: self.key(),
            range_end: self.range_end(),
            limit: self.rng.below(4) as i64,
            revision: self.rng.below(model.revision as u64 + 2) as i64,
            ..Default::default()
        }
    }

    fn compare(&mut self) -> Compare {
        let n = self.rng.below(4) as i64;
        let target = match self.rng.below(4) {
            0 => CompareTarget::Version(n),
            1 => CompareTarget::Create(n * 3),
            2 => CompareTarget::Mod(n * 3),
            _ => CompareTarget::Value(self.value()),
        };
        let results = [
            CompareResult::Equal,
            CompareResult::NotEqual,
            CompareResult::Greater,
            CompareResult::Less,
        ];
        Compare {
            result: results[self.rng.below(4) as usize],
            target,
            key: self.key(),
            range_end: if self.rng.chance(1, 4) {
                self.range_end()
            } else {
                Bytes::new()
            },
        }
    }

    fn ops(&mut self) -> Vec<RequestOp> {
        (0..self.rng.below(4))
            .map(|_| match self.rng.below(3) {
                0 => RequestOp::Put(self.put()),
                1 => RequestOp::DeleteRange(self.delete()),
                _ => RequestOp::Range(RangeRequest {
                    key: self.key(),
                    range_end: self.range_end(),
                    ..Default::default()
                }),
            })
            .collect()
    }

    fn command(&mut self, model: &Model) -> Command {
        match self.rng.below(20) {
            0..=6 => Command::Put(self.put()),
            7..=9 => Command::DeleteRange(self.delete()),
            10..=14 => Command::Txn(TxnRequest {
                compare: (0..self.rng.below(3)).map(|_| self.compare()).collect(),
                success: self.ops(),
                failure: self.ops(),
            }),
            15 => Command::Compact(CompactionRequest {
                revision: self.rng.below(model.revision as u64 + 2) as i64,
                physical: false,
            }),
            _ => Command::Range(self.range(model)),
        }
    }
}

fn open() -> MvccStore<MemBackend> {
    MvccStore::open(MemBackend::new(), KvConfig::default()).unwrap()
}

/// Every key at every readable revision, and the errors just outside them.
fn check_all_history(store: &MvccStore<MemBackend>, model: &Model, seed: u64) {
    for at in 0..=model.revision + 1 {
        let req = RangeRequest {
            key: Bytes::new(),
            range_end: b("\0"),
            revision: at,
            ..Default::default()
        };
        assert_eq!(
            store.range(&req),
            model.range(&req, model.revision),
            "seed {seed} at {at}"
        );
    }
}

fn run_seed(seed: u64) {
    let mut generator = Gen {
        rng: SeededRng::new(seed),
    };
    let mut model = Model::new();
    let mut store = open();
    let mut replica = open();
    for step in 1..=STEPS_PER_SEED {
        let command = generator.command(&model);
        let expected = model.apply(&command);
        let got = store.apply(&command, step as u64).unwrap().response;
        assert_eq!(got, expected, "seed {seed} step {step}: {command:?}");
        let decoded = decode_command(&encode_command(&command)).unwrap();
        let on_replica = replica.apply(&decoded, step as u64).unwrap().response;
        assert_eq!(on_replica, got, "seed {seed} step {step}: replica diverged");
        let read = generator.range(&model);
        assert_eq!(
            store.range(&read),
            model.range(&read, model.revision),
            "seed {seed} step {step}: {read:?}"
        );
        if step % 50 == 0 {
            check_all_history(&store, &model, seed);
            check_snapshot_round_trip(&store, &model, seed);
        }
    }
    assert_eq!(
        store.state_hash().unwrap(),
        replica.state_hash().unwrap(),
        "seed {seed}"
    );
}

fn check_snapshot_round_trip(store: &MvccStore<MemBackend>, model: &Model, seed: u64) {
    let snapshot = store.snapshot().unwrap();
    let mut restored = open();
    restored.install_snapshot(&snapshot).unwrap();
    assert_eq!(
        restored.state_hash().unwrap(),
        store.state_hash().unwrap(),
        "seed {seed}"
    );
    assert_eq!(restored.applied_index(), store.applied_index());
    check_all_history(&restored, model, seed);
}

#[test]
fn the_store_agrees_with_the_reference_model_on_random_histories() {
    if let Ok(seed) = std::env::var("MODEL_SEED") {
        run_seed(seed.parse().expect("MODEL_SEED is a u64"));
        return;
    }
    for seed in 0..SEEDS {
        run_seed(seed);
    }
}

#[test]
fn replicas_that_diverge_have_different_hashes() {
    let mut a = open();
    let mut b_store = open();
    let put = |v: &str| {
        Command::Put(PutRequest {
            key: b("k"),
            value: b(v),
            ..Default::default()
        })
    };
    a.apply(&put("1"), 1).unwrap();
    b_store.apply(&put("2"), 1).unwrap();
    assert_ne!(a.state_hash().unwrap(), b_store.state_hash().unwrap());
}

#[test]
fn corrupt_snapshots_are_refused_and_leave_the_store_alone() {
    let mut source = open();
    for (i, key) in KEYS.iter().enumerate() {
        let cmd = Command::Put(PutRequest {
            key: b(key),
            value: b("v"),
            ..Default::default()
        });
        source.apply(&cmd, i as u64 + 1).unwrap();
    }
    let snapshot = source.snapshot().unwrap();
    let mut target = open();
    let before = target.state_hash().unwrap();
    let mut rng = SeededRng::new(7);
    for _ in 0..200 {
        let mut bad = snapshot.clone();
        let at = rng.below(bad.len() as u64) as usize;
        bad[at] ^= 1 << rng.below(8);
        let err = target.install_snapshot(&bad).unwrap_err();
        assert!(
            matches!(
                err,
                SnapshotError::Decode(DecodeError::Checksum { .. } | DecodeError::BadMagic { .. })
            ),
            "{err:?}"
        );
    }
    let truncated = &snapshot[..snapshot.len() - 1];
    assert!(target.install_snapshot(truncated).is_err());
    assert!(target.install_snapshot(&[]).is_err());
    assert_eq!(target.state_hash().unwrap(), before);
    target.install_snapshot(&snapshot).unwrap();
    assert_eq!(target.state_hash().unwrap(), source.state_hash().unwrap());
}
