//! Crash atomicity with real processes: a child (this test binary re-executed) applies the
//! workload to a redb-backed store, flushing now and then (durably or not) and now and then
//! reinstalling a snapshot of itself (a whole-file rewrite). It prints `durable <index>` after a
//! durable flush or install returned. The parent `kill -9`s it at a random moment, reopens the file
//! and checks that the store stands at some applied index `i`, no earlier than anything reported
//! durable, whose state is exactly the in-memory reference's after entry `i` — never a mix.

mod common;
#[path = "../../yizhi-storage/tests/common/kill9.rs"]
mod kill9;

use std::io::Write;
use std::path::Path;

use common::workload;
use yizhi_engine::{LogIndex, SeededRng};
use yizhi_kv::*;

const CHILD_PATH_ENV: &str = "YIZHI_KV_REDB_CRASH_CHILD_PATH";
const WORKLOAD_SEED: u64 = 77;
const ROUNDS: u64 = 12;
const MIN_CHILD_RUN_MS: u64 = 30;
const MAX_CHILD_RUN_MS: u64 = 400;
/// A child that is never killed stops by itself, so a stuck parent cannot leave it running.
const MAX_CHILD_ENTRIES: u64 = 200_000;

fn config() -> RedbConfig {
    RedbConfig {
        max_pending_entries: 16,
        max_pending_bytes: 64 * 1024,
        cache_bytes: 8 << 20,
        check_integrity_on_open: false,
    }
}

fn open(path: &Path) -> MvccStore<RedbBackend> {
    let backend = RedbBackend::open_with(path, config()).expect("open redb");
    MvccStore::open(backend, KvConfig::default()).expect("load redb store")
}

#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_PATH_ENV) else {
        return; // Only does something when re-executed by the parent test.
    };
    let mut store = open(Path::new(&path));
    let first = store.applied_index() + 1;
    let mut rng = SeededRng::new(first);
    let mut out = std::io::stdout().lock();
    for index in first..first + MAX_CHILD_ENTRIES {
        let command = workload::command(WORKLOAD_SEED, index, &store);
        store.apply(&command, index).expect("apply");
        let durable = match rng.below(100) {
            0..=9 => {
                store.flush(false).expect("flush");
                false
            }
            10..=12 => {
                store.flush(true).expect("durable flush");
                true
            }
            13 => {
                let image = store.snapshot().expect("snapshot");
                store.install_snapshot(&image).expect("reinstall");
                true
            }
            _ => false,
        };
        if durable {
            assert_eq!(store.durable_applied_index(), index);
            writeln!(out, "durable {index}").expect("stdout");
            out.flush().expect("stdout");
        }
    }
}

/// Runs one child for `run_ms`, kills it with SIGKILL, returns the highest index it reported
/// durable.
fn run_and_kill(path: &Path, run_ms: u64) -> Option<LogIndex> {
    kill9::run_and_kill("crash_child", &[(CHILD_PATH_ENV, path.as_os_str())], run_ms)
        .iter()
        .filter_map(|line| line.strip_prefix("durable ")?.parse().ok())
        .max()
}

#[test]
fn kill_9_leaves_the_exact_state_of_one_applied_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kv.redb");
    let mut reference = MvccStore::open(MemBackend::new(), KvConfig::default()).expect("reference");
    let mut rng = SeededRng::new(0x5eed);
    let (mut durable_seen, mut recovered) = (0, 0);
    for round in 0..ROUNDS {
        let run_ms = rng.range_inclusive(MIN_CHILD_RUN_MS, MAX_CHILD_RUN_MS);
        if let Some(durable) = run_and_kill(&path, run_ms) {
            durable_seen = durable_seen.max(durable);
        }
        let store = open(&path);
        let at = store.applied_index();
        assert!(
            at >= durable_seen,
            "round {round}: reopened at {at}, but {durable_seen} was reported durable"
        );
        assert!(
            at >= recovered,
            "round {round}: went back from {recovered} to {at}"
        );
        assert_eq!(store.durable_applied_index(), at);
        while reference.applied_index() < at {
            let index = reference.applied_index() + 1;
            let command = workload::command(WORKLOAD_SEED, index, &reference);
            reference.apply(&command, index).expect("reference apply");
        }
        assert_eq!(
            store.state_hash().expect("redb hash"),
            reference.state_hash().expect("reference hash"),
            "round {round}: state at applied index {at} is not the reference's"
        );
        let everything = RangeRequest {
            key: bytes::Bytes::from_static(b"\0"),
            range_end: bytes::Bytes::from_static(b"\0"),
            ..Default::default()
        };
        assert_eq!(
            store.range(&everything),
            reference.range(&everything),
            "round {round}"
        );
        recovered = at;
    }
    eprintln!("{ROUNDS} kills, recovered up to entry {recovered}, highest durable report {durable_seen}");
    assert!(durable_seen > 0, "no child ever made a durable flush");
}
