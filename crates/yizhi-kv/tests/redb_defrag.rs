//! Defragmentation (etcd's `defrag`) of the redb backend: after most keys are deleted and the
//! history compacted, the file gives its free pages back, and what is left reads back exactly,
//! before and after a reopen.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use yizhi_kv::backend::DefragmentReport;
use yizhi_kv::*;

const KEYS: usize = 20_000;
const VALUE_BYTES: usize = 1024;
/// Every KEEP_EVERY-th key survives the deletions.
const KEEP_EVERY: usize = 10;

fn open(path: &Path) -> MvccStore<RedbBackend> {
    let backend = RedbBackend::open(path).expect("open redb");
    MvccStore::open(backend, KvConfig::default()).expect("load redb store")
}

fn key(i: usize) -> Bytes {
    Bytes::from(format!("key/{i:05}"))
}

/// Distinct per key and per byte, so a value read back from the wrong place is noticed.
fn value(i: usize) -> Bytes {
    (0..VALUE_BYTES)
        .map(|j| (i.wrapping_mul(31) ^ j.wrapping_mul(7)) as u8)
        .collect::<Vec<u8>>()
        .into()
}

struct Applier {
    next_index: u64,
}

impl Applier {
    fn apply(&mut self, store: &mut MvccStore<RedbBackend>, command: Command) -> CommandResponse {
        let applied = store.apply(&command, self.next_index).expect("backend");
        self.next_index += 1;
        applied.response.expect("command succeeds")
    }

    fn put(&mut self, store: &mut MvccStore<RedbBackend>, key: Bytes, value: Bytes) {
        let put = PutRequest {
            key,
            value,
            ..Default::default()
        };
        self.apply(store, Command::Put(put));
    }
}

/// Every live key and its value, read through the store's range.
fn contents(store: &MvccStore<RedbBackend>) -> BTreeMap<Bytes, Bytes> {
    let all = RangeRequest {
        key: Bytes::from_static(b"\0"),
        range_end: Bytes::from_static(b"\0"),
        ..Default::default()
    };
    let response = store.range(&all).expect("range");
    assert!(!response.more);
    response.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect()
}

fn file_bytes(path: &Path) -> u64 {
    std::fs::metadata(path).expect("file size").len()
}

#[test]
fn defragment_shrinks_the_file_and_keeps_every_remaining_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("kv.redb");
    let mut store = open(&path);
    let mut applier = Applier { next_index: 1 };
    for i in 0..KEYS {
        applier.put(&mut store, key(i), value(i));
    }
    for i in (0..KEYS).filter(|i| i % KEEP_EVERY != 0) {
        let delete = DeleteRangeRequest {
            key: key(i),
            ..Default::default()
        };
        applier.apply(&mut store, Command::DeleteRange(delete));
    }
    let compact = CompactionRequest {
        revision: store.current_revision(),
        physical: true,
    };
    applier.apply(&mut store, Command::Compact(compact));
    // A few entries still in the backend's memory overlay: defragment must make them durable.
    let late = KEYS + 1;
    applier.put(&mut store, key(late), value(late));
    assert!(store.backend().pending_entries() > 0);

    let mut expected: BTreeMap<Bytes, Bytes> = (0..KEYS)
        .filter(|i| i % KEEP_EVERY == 0)
        .chain([late])
        .map(|i| (key(i), value(i)))
        .collect();
    assert_eq!(contents(&store), expected);
    let hash_before = store.state_hash().expect("hash");

    let report = store.defragment().expect("defragment");
    eprintln!(
        "defragment: {} -> {} bytes ({} of {KEYS} keys of {VALUE_BYTES} bytes kept)",
        report.size_before_bytes,
        report.size_after_bytes,
        expected.len()
    );
    assert!(report.size_after_bytes < report.size_before_bytes, "{report:?}");
    // The kept data is a tenth of what was written: the file must lose far more than a page.
    assert!(
        report.size_after_bytes * 2 < report.size_before_bytes,
        "{report:?}"
    );
    assert_eq!(file_bytes(&path), report.size_after_bytes);
    assert_eq!(store.durable_applied_index(), store.applied_index());
    assert_eq!(store.backend().pending_entries(), 0);
    assert_eq!(contents(&store), expected);
    assert_eq!(store.state_hash().expect("hash"), hash_before);

    // The backend keeps serving writes and reads on the fresh read snapshot.
    let after = KEYS + 2;
    applier.put(&mut store, key(after), value(after));
    expected.insert(key(after), value(after));
    store.flush(true).expect("flush");
    assert_eq!(contents(&store), expected);
    let hash_after_writes = store.state_hash().expect("hash");
    let applied = store.applied_index();
    drop(store);

    let reopened = open(&path);
    assert_eq!(reopened.applied_index(), applied);
    assert_eq!(contents(&reopened), expected);
    assert_eq!(reopened.state_hash().expect("hash"), hash_after_writes);
    drop(reopened);

    // A second defragment right after the first finds next to nothing to give back.
    let mut store = open(&path);
    let again = store.defragment().expect("defragment again");
    assert!(again.size_after_bytes <= again.size_before_bytes, "{again:?}");
    assert_eq!(contents(&store), expected);
}

#[test]
fn a_memory_backend_has_nothing_to_defragment() {
    let mut store = MvccStore::open(MemBackend::new(), KvConfig::default()).expect("open");
    let put = PutRequest {
        key: Bytes::from_static(b"k"),
        value: Bytes::from_static(b"v"),
        ..Default::default()
    };
    store.apply(&Command::Put(put), 1).expect("apply");
    let report = store.defragment().expect("defragment");
    assert_eq!(report, DefragmentReport::default());
    assert_eq!(report.size_before_bytes, report.size_after_bytes);
    assert_eq!(store.current_revision(), 2);
}
