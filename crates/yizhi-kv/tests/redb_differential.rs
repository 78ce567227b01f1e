//! Differential test: the redb backend answers exactly as the in-memory reference, command after
//! command, read after read, across flushes, reopens (clean, non-durable, and with batches still
//! in memory, which a reopen loses and the server would replay from its WAL) and snapshot
//! installs.

mod common;

use std::path::Path;

use common::workload;
use yizhi_engine::SeededRng;
use yizhi_kv::*;

const SEEDS: u64 = 12;
const STEPS_PER_SEED: u64 = 400;
const HASH_EVERY_STEPS: u64 = 40;

fn open_redb(path: &Path, config: RedbConfig) -> MvccStore<RedbBackend> {
    let backend = RedbBackend::open_with(path, config).expect("open redb");
    MvccStore::open(backend, KvConfig::default()).expect("load redb store")
}

/// Small limits, so that batches reach redb at every possible point of the stream.
fn config(rng: &mut SeededRng) -> RedbConfig {
    RedbConfig {
        max_pending_entries: rng.range_inclusive(1, 40) as usize,
        max_pending_bytes: rng.range_inclusive(512, 16 * 1024) as usize,
        cache_bytes: 4 << 20,
        check_integrity_on_open: rng.chance(1, 2),
    }
}

#[derive(Debug, Clone, Copy)]
enum Restart {
    DurableFlush,
    Flush,
    /// As a crash would: whatever is only in memory is lost.
    NoFlush,
}

struct Run {
    seed: u64,
    mem: MvccStore<MemBackend>,
    /// What the reference answered at each index (index `i` at `i - 1`).
    log: Vec<(Command, Applied)>,
}

impl Run {
    /// Replays the log after the store's applied index, as the server replays its WAL.
    fn catch_up(&self, redb: &mut MvccStore<RedbBackend>) {
        let from = redb.applied_index();
        for (i, (command, expected)) in self.log.iter().enumerate().skip(from as usize) {
            let index = i as u64 + 1;
            let got = redb.apply(command, index).expect("replay");
            assert_eq!(&got, expected, "seed {}: replayed entry {index}", self.seed);
        }
    }

    fn check_same_state(&self, redb: &MvccStore<RedbBackend>, when: &str) {
        assert_eq!(
            redb.applied_index(),
            self.mem.applied_index(),
            "seed {} {when}",
            self.seed
        );
        assert_eq!(
            redb.state_hash().expect("redb hash"),
            self.mem.state_hash().expect("mem hash"),
            "seed {} {when}: state differs",
            self.seed
        );
        assert_eq!(
            redb.lease_ids(),
            self.mem.lease_ids(),
            "seed {} {when}",
            self.seed
        );
        // The replicated part of the session statistics (the counters are member-local).
        let (r, m) = (redb.session_stats(), self.mem.session_stats());
        assert_eq!(
            (r.clients, r.stored_responses, r.stored_bytes),
            (m.clients, m.stored_responses, m.stored_bytes),
            "seed {} {when}",
            self.seed
        );
    }
}

fn restart(
    run: &Run,
    redb: MvccStore<RedbBackend>,
    how: Restart,
    path: &Path,
    config: RedbConfig,
) -> MvccStore<RedbBackend> {
    let mut redb = redb;
    let applied = redb.applied_index();
    match how {
        Restart::DurableFlush => redb.flush(true).expect("durable flush"),
        Restart::Flush => redb.flush(false).expect("flush"),
        Restart::NoFlush => {}
    }
    let durable = redb.durable_applied_index();
    let pending = redb.backend().pending_entries();
    assert!(durable <= applied);
    if matches!(how, Restart::DurableFlush) {
        assert_eq!(
            durable, applied,
            "seed {}: a durable flush covers everything",
            run.seed
        );
    }
    drop(redb);
    let mut reopened = open_redb(path, config);
    let at = reopened.applied_index();
    assert!(
        at >= durable && at <= applied,
        "seed {}: reopened at {at}, durable {durable}, applied {applied}",
        run.seed
    );
    // A clean close keeps redb's non-durable commits; only the overlay is lost.
    assert_eq!(at, applied - pending as u64, "seed {}: {how:?}", run.seed);
    assert_eq!(reopened.durable_applied_index(), at);
    run.catch_up(&mut reopened);
    run.check_same_state(&reopened, &format!("after {how:?} restart"));
    reopened
}

fn run_seed(seed: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kv.redb");
    let mut rng = SeededRng::new(seed);
    let config = config(&mut rng);
    let mut run = Run {
        seed,
        mem: MvccStore::open(MemBackend::new(), KvConfig::default()).expect("mem store"),
        log: Vec::new(),
    };
    let mut redb = open_redb(&path, config);
    let (mut restarts, mut installs) = (0, 0);
    for index in 1..=STEPS_PER_SEED {
        let command = workload::command(seed, index, &run.mem);
        assert_eq!(
            command,
            workload::command(seed, index, &redb),
            "seed {seed}: states diverged"
        );
        let expected = run.mem.apply(&command, index).expect("mem apply");
        let got = redb.apply(&command, index).expect("redb apply");
        assert_eq!(got, expected, "seed {seed} index {index}: {command:?}");
        run.log.push((command, expected));
        let read = workload::read(seed, index, run.mem.current_revision());
        assert_eq!(
            redb.range(&read),
            run.mem.range(&read),
            "seed {seed} index {index}: {read:?}"
        );
        let now = workload::now_ms(index);
        assert_eq!(redb.expired_leases(now), run.mem.expired_leases(now));
        if index % HASH_EVERY_STEPS == 0 {
            run.check_same_state(&redb, &format!("at {index}"));
        }
        match rng.below(60) {
            0 => {
                redb = restart(&run, redb, Restart::DurableFlush, &path, config);
                restarts += 1;
            }
            1 => {
                redb = restart(&run, redb, Restart::Flush, &path, config);
                restarts += 1;
            }
            2 | 3 => {
                redb = restart(&run, redb, Restart::NoFlush, &path, config);
                restarts += 1;
            }
            4 => {
                // A snapshot install replaces everything, pending batches included, durably.
                redb.install_snapshot(&run.mem.snapshot().expect("snapshot"))
                    .expect("install");
                assert_eq!(redb.durable_applied_index(), index);
                run.check_same_state(&redb, "after install");
                installs += 1;
            }
            5 => redb.flush(rng.chance(1, 2)).expect("flush"),
            _ => {}
        }
    }
    run.check_same_state(&redb, "at the end");
    assert!(
        restarts > 0 && installs > 0,
        "seed {seed}: the run exercised too little"
    );
    let sessions = run.mem.session_stats();
    assert!(
        sessions.clients > 0 && sessions.duplicates_answered > 0 && sessions.expired_clients > 0,
        "seed {seed}: the run exercised too few sessions: {sessions:?}"
    );
}

#[test]
fn redb_and_memory_backends_agree_across_flushes_and_restarts() {
    for seed in 0..SEEDS {
        run_seed(seed);
    }
}

#[test]
fn an_installed_snapshot_survives_a_crash_whole_and_replaces_pending_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kv.redb");
    let config = RedbConfig {
        max_pending_entries: 1000,
        ..RedbConfig::default()
    };
    // The source: a history the target never saw.
    let mut source = MvccStore::open(MemBackend::new(), KvConfig::default()).expect("source");
    for index in 1..=150 {
        let command = workload::command(1000, index, &source);
        source.apply(&command, index).expect("source apply");
    }
    let image = source.snapshot().expect("snapshot");
    let mut target = open_redb(&path, config);
    for index in 1..=80 {
        let command = workload::command(2000, index, &target);
        target.apply(&command, index).expect("target apply");
        if index == 40 {
            target.flush(true).expect("flush");
        }
    }
    assert!(target.backend().pending_entries() > 0);
    target.install_snapshot(&image).expect("install");
    assert_eq!(target.state_hash(), source.state_hash());
    // More entries after the install, then a crash before they are flushed.
    for index in 151..=170 {
        let command = workload::command(1000, index, &source);
        let expected = source.apply(&command, index).expect("source apply");
        assert_eq!(target.apply(&command, index).expect("target apply"), expected);
    }
    drop(target);
    let reopened = open_redb(&path, config);
    assert_eq!(
        reopened.applied_index(),
        150,
        "the install is durable, the rest was in memory"
    );
    let mut at_install = MvccStore::open(MemBackend::new(), KvConfig::default()).expect("reference");
    at_install.install_snapshot(&image).expect("install reference");
    assert_eq!(reopened.state_hash(), at_install.state_hash());
}
