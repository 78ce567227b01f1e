//! Crash test with real processes: a child (this test binary re-executed) appends batches and prints
//! `ack <first> <last> <term> <commit>` only after the batch's fsync returned; the parent `kill -9`s it
//! at a random moment, reopens the WAL and checks that every acknowledged entry is there, in order,
//! and that every entry present is one the child really wrote (nothing invented after a torn tail).

mod common;

use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;

use bytes::Bytes;
use yizhi_engine::{Entry, EntryPayload, HardState, LogIndex, LogStorage, Membership, SeededRng, Term};
use yizhi_storage::{WalStorage, WalStorageConfig};

const CHILD_DIR_ENV: &str = "YIZHI_STORAGE_CRASH_CHILD_DIR";
const CHILD_TERM_ENV: &str = "YIZHI_STORAGE_CRASH_CHILD_TERM";
const ROUNDS: u64 = 40;
const MIN_CHILD_RUN_MS: u64 = 5;
const MAX_CHILD_RUN_MS: u64 = 120;
/// A child that is never killed stops by itself, so a stuck parent cannot leave it running forever.
const MAX_CHILD_BATCHES: u64 = 200_000;
const MAX_PAYLOAD_BYTES: u64 = 3000;
/// The child compacts every this many batches, keeping this many entries behind the snapshot.
const COMPACT_EVERY_BATCHES: u64 = 40;
const ENTRIES_KEPT_AFTER_COMPACTION: u64 = 50;

fn config() -> WalStorageConfig {
    common::small_wal_config(128, 8, 32)
}

/// What the child writes at `index` in `term`: a pure function, so the parent can tell real entries
/// from invented ones.
fn payload_for(index: LogIndex, term: Term) -> Bytes {
    let len = (index * 7919 + term * 104_729) % MAX_PAYLOAD_BYTES;
    Bytes::from(vec![(index ^ (term << 3)) as u8; len as usize])
}

#[test]
fn crash_child() {
    let (Ok(dir), Ok(term)) = (std::env::var(CHILD_DIR_ENV), std::env::var(CHILD_TERM_ENV)) else {
        return; // Only does something when re-executed by `kill_9_never_loses_acknowledged_entries`.
    };
    let term: Term = term.parse().expect("term from the parent");
    let (mut storage, report) = WalStorage::open(Path::new(&dir), config()).expect("child reopen");
    let mut out = std::io::stdout().lock();
    if report.torn_tail.is_some() {
        writeln!(out, "torn").expect("stdout");
    }
    let mut rng = SeededRng::new(term);
    for batch in 0..MAX_CHILD_BATCHES {
        let first = storage.last_index() + 1;
        let count = rng.range_inclusive(1, 16);
        let entries: Vec<Entry> = (first..first + count)
            .map(|index| Entry {
                index,
                term,
                payload: EntryPayload::Normal(payload_for(index, term)),
            })
            .collect();
        let last = first + count - 1;
        let hard_state = HardState {
            term,
            vote: Some(1),
            commit: last,
        };
        storage.append(&entries).expect("append");
        storage.set_hard_state(hard_state).expect("hard state");
        storage.sync().expect("sync");
        writeln!(out, "ack {first} {last} {term} {last}").expect("stdout");
        out.flush().expect("stdout");
        if batch % COMPACT_EVERY_BATCHES == COMPACT_EVERY_BATCHES - 1 && last > ENTRIES_KEPT_AFTER_COMPACTION
        {
            let index = last - ENTRIES_KEPT_AFTER_COMPACTION;
            let data = Bytes::from(format!("image at {index}"));
            storage
                .compact(index, Membership::new([1]), data)
                .expect("compact");
        }
    }
}

/// Runs one child for a random time, kills it with SIGKILL, returns its acknowledgements.
/// An acknowledged batch: entries `first..=last` of `term`, and the commit index made durable with it.
struct Ack {
    first: LogIndex,
    last: LogIndex,
    term: Term,
    commit: LogIndex,
}

fn run_and_kill(dir: &Path, term: Term, run_ms: u64) -> (Vec<Ack>, bool) {
    let term_text = term.to_string();
    let env = [
        (CHILD_DIR_ENV, dir.as_os_str()),
        (CHILD_TERM_ENV, OsStr::new(&term_text)),
    ];
    let mut acks = Vec::new();
    let mut torn = false;
    for line in common::kill9::run_and_kill("crash_child", &env, run_ms) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["ack", first, last, term, commit] => acks.push(Ack {
                first: first.parse().expect("index"),
                last: last.parse().expect("index"),
                term: term.parse().expect("term"),
                commit: commit.parse().expect("commit"),
            }),
            ["torn"] => torn = true,
            _ => {}
        }
    }
    (acks, torn)
}

/// Every acknowledged entry is present with its term; every entry present is a real one, in order.
fn check_recovered(dir: &Path, acked: &[(LogIndex, Term)], acked_commit: LogIndex, round: u64) {
    let (storage, _) = WalStorage::open(dir, config()).expect("parent reopen");
    let (first, last) = (storage.first_index(), storage.last_index());
    let max_acked = acked.last().map_or(0, |(index, _)| *index);
    assert!(
        last >= max_acked,
        "round {round}: last index {last} lost acknowledged {max_acked}"
    );
    assert!(
        storage.hard_state().commit >= acked_commit,
        "round {round}: hard state went back"
    );
    for &(index, term) in acked.iter().filter(|(index, _)| *index >= first) {
        assert_eq!(
            storage.term(index),
            Ok(term),
            "round {round}: acknowledged entry {index}"
        );
    }
    let entries = storage.entries(first, last + 1, u64::MAX).expect("read the log");
    assert_eq!(entries.len() as u64, last + 1 - first, "round {round}");
    for pair in entries.windows(2) {
        assert!(
            pair[0].term <= pair[1].term,
            "round {round}: terms go back at {}",
            pair[1].index
        );
    }
    for entry in &entries {
        let expected = EntryPayload::Normal(payload_for(entry.index, entry.term));
        assert_eq!(
            entry.payload, expected,
            "round {round}: invented entry {}",
            entry.index
        );
    }
}

#[test]
fn kill_9_never_loses_acknowledged_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(WalStorage::create(dir.path(), config(), Membership::new([1])).expect("create"));
    let mut rng = SeededRng::new(0x5eed);
    // (index, term) of every acknowledged entry, latest term per index.
    let mut acked: Vec<(LogIndex, Term)> = Vec::new();
    let mut acked_commit = 0;
    let (mut total_acks, mut torn_tails) = (0, 0);
    for round in 0..ROUNDS {
        let term = round + 1;
        let run_ms = rng.range_inclusive(MIN_CHILD_RUN_MS, MAX_CHILD_RUN_MS);
        let (acks, torn) = run_and_kill(dir.path(), term, run_ms);
        torn_tails += u64::from(torn);
        total_acks += acks.len();
        for ack in acks {
            let previous = acked.last().map_or(0, |(index, _)| *index);
            assert!(
                ack.first > previous && ack.last >= ack.first,
                "round {round}: acks out of order"
            );
            acked.extend((ack.first..=ack.last).map(|index| (index, ack.term)));
            acked_commit = acked_commit.max(ack.commit);
        }
        check_recovered(dir.path(), &acked, acked_commit, round);
    }
    eprintln!("{ROUNDS} kills, {total_acks} acknowledged batches, {torn_tails} torn tails seen by children");
    assert!(total_acks > 0, "no child ever acknowledged a batch");
}
