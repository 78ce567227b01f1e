//! One `Ready` is persisted all or nothing. The scenario Multi-Paxos hit in the simulator: after a
//! leader change an acceptor re-records slots 3..=6 under its new ballot (truncating the old ones) in
//! one append, with its new promise. A crash that stops that write at any byte must recover either
//! the old log and promise or the new ones, never the new slot 3 without the new slots 4..=6 (a log
//! that lost slots the acceptor had held).

mod common;

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use yizhi_engine::{Entry, EntryPayload, HardState, LogIndex, LogStorage, Membership, Ready, Term};
use yizhi_storage::codec::{SEGMENT_HEADER_BYTES, decode_frame};
use yizhi_storage::{WalStorage, WalStorageConfig};

const OLD_TERM: Term = 1;
const NEW_TERM: Term = 2;
const SLOTS: LogIndex = 6;
const REWRITTEN_FROM: LogIndex = 3;

fn config() -> WalStorageConfig {
    common::small_wal_config(16, 4, 64)
}

fn entry(index: LogIndex, term: Term) -> Entry {
    Entry {
        index,
        term,
        payload: EntryPayload::Normal(Bytes::from(vec![(index * 16 + term) as u8; 40])),
    }
}

fn hard_state(term: Term) -> HardState {
    HardState {
        term,
        vote: Some(2),
        commit: 2,
    }
}

fn persist(storage: &mut WalStorage, entries: Vec<Entry>, hs: HardState) {
    let ready: Ready<()> = Ready {
        hard_state: Some(hs),
        entries,
        must_sync: true,
        ..Ready::default()
    };
    storage.persist_ready(&ready).expect("persist");
}

/// The durable state a crash may leave: the log's (index, term) pairs and the hard state.
type State = (Vec<(LogIndex, Term)>, HardState);

fn state_of(storage: &WalStorage) -> State {
    let entries = storage
        .entries(storage.first_index(), storage.last_index() + 1, u64::MAX)
        .expect("entries");
    for entry in &entries {
        assert_eq!(entry, &self::entry(entry.index, entry.term), "invented entry");
    }
    let log = entries.iter().map(|e| (e.index, e.term)).collect();
    (log, storage.hard_state())
}

/// A WAL whose last segment ends with the rewriting batch; returns the segment, where the batch
/// starts and ends, and the states before and after it.
fn written(dir: &Path) -> (PathBuf, u64, u64, State, State) {
    let mut storage = WalStorage::create(dir, config(), Membership::new([1, 2, 3])).expect("create");
    let old: Vec<Entry> = (1..=SLOTS).map(|i| entry(i, OLD_TERM)).collect();
    persist(&mut storage, old, hard_state(OLD_TERM));
    let before = state_of(&storage);
    let wal = storage.wal();
    let path = wal.segment_path(*wal.segment_sequences().last().expect("segment"));
    let start = used_bytes(&fs::read(&path).expect("read"));
    let rewrite: Vec<Entry> = (REWRITTEN_FROM..=SLOTS).map(|i| entry(i, NEW_TERM)).collect();
    persist(&mut storage, rewrite, hard_state(NEW_TERM));
    let after = state_of(&storage);
    assert_eq!(
        storage.wal().segment_sequences().len(),
        1,
        "the test wants one segment"
    );
    drop(storage);
    let end = used_bytes(&fs::read(&path).expect("read"));
    (path, start, end, before, after)
}

/// Where the valid frames of a segment end.
fn used_bytes(bytes: &[u8]) -> u64 {
    let mut offset = SEGMENT_HEADER_BYTES;
    while let Ok(decoded) = decode_frame(&bytes[offset..]) {
        offset += decoded.frame_len;
    }
    offset as u64
}

fn recovered(dir: &Path) -> State {
    let (storage, _) = WalStorage::open(dir, config()).expect("recovers");
    state_of(&storage)
}

#[test]
fn a_crash_at_any_byte_of_a_ready_keeps_none_or_all_of_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, start, end, before, after) = written(dir.path());
    assert_ne!(before, after);
    assert!(end - start > 200, "the batch is {} bytes", end - start);
    let pristine = fs::read(&path).expect("read");
    for cut in start..=end {
        // The write stopped at `cut`: the rest of the preallocated segment is still zeros, or (a
        // file system that extends files lazily) the file ends there.
        let mut zero_filled = pristine.clone();
        zero_filled[cut as usize..].fill(0);
        fs::write(&path, &zero_filled).expect("write");
        // Bytes that were meant to be zeros anyway (the hard state's high bytes) make a whole batch.
        let whole = zero_filled == pristine;
        assert_eq!(whole, cut + 7 >= end, "the batch ends in a small commit index");
        let expected = if whole { &after } else { &before };
        assert_eq!(&recovered(dir.path()), expected, "zeros from byte {cut}");

        fs::write(&path, &pristine).expect("restore");
        OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|file| file.set_len(cut))
            .expect("truncate");
        let expected = if cut == end { &after } else { &before };
        assert_eq!(&recovered(dir.path()), expected, "file cut at byte {cut}");
    }
    fs::write(&path, &pristine).expect("restore");
    assert_eq!(recovered(dir.path()), after);
}

/// A disk may persist the pages of one write in any order: a lost middle with an intact end is still
/// an interrupted final write, and the whole batch goes.
#[test]
fn a_ready_with_a_lost_middle_is_dropped_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, start, end, before, _) = written(dir.path());
    let mut bytes = fs::read(&path).expect("read");
    let middle = ((start + end) / 2) as usize;
    bytes[middle..middle + 30].fill(0);
    fs::write(&path, &bytes).expect("write");
    let (storage, report) = WalStorage::open(dir.path(), config()).expect("recovers");
    let torn = report.torn_tail.expect("a torn tail");
    assert_eq!(torn.offset, start);
    assert_eq!(state_of(&storage), before);
}
