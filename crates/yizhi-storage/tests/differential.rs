//! Differential test: the same random history of appends (with suffix truncation), hard states,
//! compactions and snapshot installs is applied to `MemStorage` (the reference) and to `WalStorage`,
//! which is reopened from disk at random points. Every `LogStorage` query must answer identically.

mod common;

use bytes::Bytes;
use yizhi_engine::{
    Entry, EntryPayload, HardState, LogStorage, MemStorage, Membership, SeededRng, Snapshot, SnapshotMeta,
};
use yizhi_storage::{WalStorage, WalStorageConfig};

const SEEDS: u64 = 8;
const OPS_PER_SEED: usize = 150;
/// Entries larger than this would not fit the test's small records.
const MAX_PAYLOAD_BYTES: u64 = 3000;

/// Small segments and a tiny cache, so that rolls, releases and reads from segments all happen.
fn config() -> WalStorageConfig {
    common::small_wal_config(16, 4, 8)
}

fn random_payload(rng: &mut SeededRng) -> EntryPayload {
    match rng.below(10) {
        0 => EntryPayload::Noop,
        1 => EntryPayload::Membership(Membership::new(1..=rng.range_inclusive(1, 5)).with_learners([9])),
        _ => {
            let len = rng.below(MAX_PAYLOAD_BYTES) as usize;
            let byte = rng.next_u64() as u8;
            EntryPayload::Normal(Bytes::from(vec![byte; len]))
        }
    }
}

fn random_append(rng: &mut SeededRng, mem: &MemStorage, term: &mut u64) -> Vec<Entry> {
    let first = rng.range_inclusive(mem.first_index(), mem.last_index() + 1);
    if first <= mem.last_index() {
        *term += 1; // A conflicting suffix comes from a newer leader.
    }
    let count = rng.range_inclusive(1, 8);
    (first..first + count)
        .map(|index| Entry {
            index,
            term: *term,
            payload: random_payload(rng),
        })
        .collect()
}

fn random_snapshot(rng: &mut SeededRng, mem: &MemStorage) -> Snapshot {
    let lo = mem.snapshot_ref().meta.index;
    let index = rng.range_inclusive(lo, mem.last_index() + 3);
    let term = match mem.term(index) {
        Ok(term) if rng.chance(1, 2) => term,
        _ => rng.range_inclusive(1, 1000),
    };
    Snapshot {
        meta: SnapshotMeta {
            index,
            term,
            membership: Membership::new([1, 2, rng.range_inclusive(3, 7)]),
        },
        data: Bytes::from(format!("leader image at {index}")),
    }
}

fn step(rng: &mut SeededRng, mem: &mut MemStorage, wal: &mut WalStorage, term: &mut u64) {
    match rng.below(20) {
        0..=11 => {
            let entries = random_append(rng, mem, term);
            mem.append(&entries);
            wal.append(&entries).expect("append");
        }
        12..=14 => {
            let hs = HardState {
                term: *term,
                vote: rng.chance(1, 2).then(|| rng.range_inclusive(1, 5)),
                commit: rng.range_inclusive(0, mem.last_index()),
            };
            mem.set_hard_state(hs);
            wal.set_hard_state(hs).expect("hard state");
        }
        15..=17 if mem.last_index() > mem.snapshot_ref().meta.index => {
            let index = rng.range_inclusive(mem.first_index(), mem.last_index());
            let data = Bytes::from(format!("local image at {index}"));
            mem.compact(index, Membership::new([1, 2, 3]), data.clone());
            wal.compact(index, Membership::new([1, 2, 3]), data)
                .expect("compact");
        }
        18 => {
            let snapshot = random_snapshot(rng, mem);
            mem.apply_snapshot(snapshot.clone());
            wal.apply_snapshot(snapshot).expect("apply snapshot");
        }
        _ => wal.sync().expect("sync"),
    }
}

fn assert_same(mem: &MemStorage, wal: &WalStorage, rng: &mut SeededRng, context: &str) {
    assert_eq!(mem.first_index(), wal.first_index(), "{context}: first_index");
    assert_eq!(mem.last_index(), wal.last_index(), "{context}: last_index");
    assert_eq!(mem.snapshot(), wal.snapshot(), "{context}: snapshot");
    assert_eq!(
        mem.initial_state(),
        wal.initial_state(),
        "{context}: initial_state"
    );
    let lo = mem.first_index().saturating_sub(2);
    for index in lo..=mem.last_index() + 2 {
        assert_eq!(mem.term(index), wal.term(index), "{context}: term({index})");
    }
    let whole = mem.entries(mem.first_index(), mem.last_index() + 1, u64::MAX);
    assert_eq!(
        whole,
        wal.entries(wal.first_index(), wal.last_index() + 1, u64::MAX),
        "{context}"
    );
    for _ in 0..4 {
        let lo = rng.range_inclusive(lo.max(1), mem.last_index() + 2);
        let hi = rng.range_inclusive(lo, mem.last_index() + 2);
        let max_bytes = rng.below(10_000);
        assert_eq!(
            mem.entries(lo, hi, max_bytes),
            wal.entries(lo, hi, max_bytes),
            "{context}: entries({lo}, {hi}, {max_bytes})"
        );
    }
}

fn run_seed(seed: u64) {
    let mut rng = SeededRng::new(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let membership = Membership::new([1, 2, 3]);
    let mut mem = MemStorage::new_with_membership(membership.clone());
    let mut wal = WalStorage::create(dir.path(), config(), membership).expect("create");
    let mut term = 1;
    for op in 0..OPS_PER_SEED {
        step(&mut rng, &mut mem, &mut wal, &mut term);
        assert_same(&mem, &wal, &mut rng, &format!("seed {seed} op {op}"));
        if rng.chance(1, 12) {
            wal.sync().expect("sync before reopen");
            drop(wal);
            let (reopened, report) = WalStorage::open(dir.path(), config()).expect("reopen");
            assert_eq!(
                report.torn_tail, None,
                "seed {seed} op {op}: clean shutdown has no torn tail"
            );
            wal = reopened;
            assert_eq!(
                mem.hard_state(),
                wal.hard_state(),
                "seed {seed} op {op}: hard state after reopen"
            );
            assert_same(&mem, &wal, &mut rng, &format!("seed {seed} op {op} after reopen"));
        }
    }
}

#[test]
fn wal_storage_answers_like_mem_storage() {
    for seed in 0..SEEDS {
        run_seed(seed);
    }
}

#[test]
fn compaction_releases_segments_and_keeps_the_log_readable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wal = WalStorage::create(dir.path(), config(), Membership::new([1])).expect("create");
    let entries: Vec<Entry> = (1..=200)
        .map(|index| Entry {
            index,
            term: 1,
            payload: EntryPayload::Normal(Bytes::from(vec![7u8; 1000])),
        })
        .collect();
    wal.append(&entries).expect("append");
    wal.sync().expect("sync");
    let before = wal.wal().segment_sequences().len();
    wal.compact(150, Membership::new([1]), Bytes::from_static(b"image"))
        .expect("compact");
    let after = wal.wal().segment_sequences().len();
    assert!(
        after < before,
        "compaction released nothing: {before} -> {after} segments"
    );
    drop(wal);
    let (wal, _) = WalStorage::open(dir.path(), config()).expect("reopen");
    assert_eq!((wal.first_index(), wal.last_index()), (151, 200));
    assert_eq!(
        wal.entries(151, 201, u64::MAX).expect("entries"),
        entries[150..].to_vec()
    );
    let snapshots: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".snap"))
        .collect();
    assert_eq!(snapshots.len(), 1, "superseded snapshot files are removed");
}
