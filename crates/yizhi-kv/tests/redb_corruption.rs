//! Files that are not what the backend wrote: garbage, another program's redb database, a
//! damaged row. Each gives a `BackendError` naming the file, never a panic.

mod common;

use std::path::Path;

use common::b;
use yizhi_engine::SeededRng;
use yizhi_kv::*;

fn expect_error(path: &Path, result: Result<RedbBackend, BackendError>) -> BackendError {
    let error = result.expect_err("must refuse the file");
    let message = error.to_string();
    assert!(
        message.contains(&path.display().to_string()),
        "error does not name the file: {message}"
    );
    error
}

/// A store with a few records and a lease, durably written and closed.
fn write_store(path: &Path) {
    let backend = RedbBackend::open(path).expect("create");
    let mut store = MvccStore::open(backend, KvConfig::default()).expect("store");
    let commands = [
        Command::LeaseGrant(LeaseGrantRequest {
            id: 5,
            ttl_secs: 60,
            now_ms: 0,
        }),
        Command::Put(PutRequest {
            key: b("a"),
            value: b("one"),
            lease: 5,
            ..Default::default()
        }),
        Command::Put(PutRequest {
            key: b("b"),
            value: b("two"),
            ..Default::default()
        }),
    ];
    for (i, command) in commands.iter().enumerate() {
        assert!(
            store
                .apply(command, i as u64 + 1)
                .expect("apply")
                .response
                .is_ok()
        );
    }
    store.flush(true).expect("flush");
}

#[test]
fn a_garbage_file_is_refused_with_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = SeededRng::new(3);
    for (i, len) in [1usize, 17, 4096, 1 << 20].into_iter().enumerate() {
        let path = dir.path().join(format!("garbage-{i}.redb"));
        let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        std::fs::write(&path, &bytes).expect("write garbage");
        let error = expect_error(&path, RedbBackend::open(&path));
        assert!(matches!(error, BackendError::Corrupt(_)), "{error}");
        assert_eq!(
            std::fs::read(&path).expect("read back"),
            bytes,
            "the file was modified"
        );
    }
}

#[test]
fn another_programs_redb_database_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("other.redb");
    {
        let db = redb::Database::create(&path).expect("create");
        let txn = db.begin_write().expect("write");
        let table: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("inventory");
        txn.open_table(table)
            .expect("table")
            .insert("apples", 3)
            .expect("insert");
        txn.commit().expect("commit");
    }
    let error = expect_error(&path, RedbBackend::open(&path));
    assert!(matches!(error, BackendError::Corrupt(_)), "{error}");
}

/// Rewrites one row of one of the backend's tables, as a bug or a disk might.
fn tamper(path: &Path, table: &str, row: &[u8], value: &[u8]) {
    let db = redb::Database::create(path).expect("open raw");
    let txn = db.begin_write().expect("write");
    {
        let definition: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new(table);
        txn.open_table(definition)
            .expect("table")
            .insert(row, value)
            .expect("insert");
    }
    txn.commit().expect("commit");
}

fn tamper_meta(path: &Path, row: &str, value: &[u8]) {
    let db = redb::Database::create(path).expect("open raw");
    let txn = db.begin_write().expect("write");
    {
        let definition: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("yizhi-kv.meta");
        txn.open_table(definition)
            .expect("table")
            .insert(row, value)
            .expect("insert");
    }
    txn.commit().expect("commit");
}

#[test]
fn damaged_meta_rows_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: [(&str, &[u8]); 4] = [
        ("format", b"yizhi-kv redb layout 999"),
        ("state", b""),
        ("state", &[1, 0xff, 0xff]),
        // current revision 1, compact revision 5: impossible.
        ("state", &[1, 2, 10, 0, 2]),
    ];
    for (i, (row, value)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("meta-{i}.redb"));
        write_store(&path);
        tamper_meta(&path, row, value);
        let error = expect_error(&path, RedbBackend::open(&path));
        assert!(matches!(error, BackendError::Corrupt(_)), "case {i}: {error}");
    }
}

/// The record key of a revision as the backend lays it out.
fn revision_key(main: i64, sub: i64) -> Vec<u8> {
    let mut key = ((main as u64) ^ (1 << 63)).to_be_bytes().to_vec();
    key.extend_from_slice(&((sub as u64) ^ (1 << 63)).to_be_bytes());
    key
}

#[test]
fn a_damaged_record_fails_the_load_or_the_read_with_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: [&[u8]; 4] = [
        b"",
        &[7, 0, 0, 0, 0],
        // Version 1, tombstone flag, but with a value: the index would refuse it.
        &[1, 1, 0, 0, 0, 1, b'a', b'x'],
        // A key length running past the end.
        &[1, 0, 4, 2, 0, 200, b'a'],
    ];
    for (i, value) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("record-{i}.redb"));
        write_store(&path);
        // Revision 2 is the first put (of "a").
        tamper_raw_record(&path, &revision_key(2, 0), value);
        let backend = RedbBackend::open(&path).expect("the meta is intact");
        let error = MvccStore::open(backend, KvConfig::default()).expect_err("load must fail");
        assert!(matches!(error, BackendError::Corrupt(_)), "case {i}: {error}");
        assert!(
            error.to_string().contains(&path.display().to_string()),
            "case {i}: {error}"
        );
    }
}

fn tamper_raw_record(path: &Path, key: &[u8], value: &[u8]) {
    let db = redb::Database::create(path).expect("open raw");
    let txn = db.begin_write().expect("write");
    {
        let definition: redb::TableDefinition<&[u8; 16], &[u8]> =
            redb::TableDefinition::new("yizhi-kv.records");
        let key: [u8; 16] = key.try_into().expect("16 bytes");
        txn.open_table(definition)
            .expect("table")
            .insert(&key, value)
            .expect("insert");
    }
    txn.commit().expect("commit");
}

#[test]
fn a_table_with_the_wrong_types_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("types.redb");
    write_store(&path);
    tamper(&path, "yizhi-kv.leases2", b"x", b"y");
    // Extra tables are tolerated (they are not ours), but ours with other types are not.
    RedbBackend::open(&path).expect("an extra table is harmless");
    let db = redb::Database::create(&path).expect("open raw");
    let txn = db.begin_write().expect("write");
    let leases: redb::TableDefinition<i64, (i64, u64)> = redb::TableDefinition::new("yizhi-kv.leases");
    txn.delete_table(leases).expect("delete");
    let wrong: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("yizhi-kv.leases");
    txn.open_table(wrong)
        .expect("table")
        .insert(b"x".as_slice(), b"y".as_slice())
        .expect("insert");
    txn.commit().expect("commit");
    drop(db);
    let error = expect_error(&path, RedbBackend::open(&path));
    assert!(matches!(error, BackendError::Corrupt(_)), "{error}");
}

#[test]
fn a_file_locked_by_another_open_is_an_io_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("locked.redb");
    let first = RedbBackend::open(&path).expect("first open");
    let error = expect_error(&path, RedbBackend::open(&path));
    assert!(matches!(error, BackendError::Io(_)), "{error}");
    drop(first);
    let reopened = RedbBackend::open(&path).expect("reopen after close");
    assert_eq!(reopened.meta().expect("meta").applied_index, 0);
}

/// With `check_integrity_on_open`, bytes flipped anywhere in a cleanly closed file give an error
/// or a consistent store (redb may fall back to its previous commit), never a panic.
#[test]
fn flipped_bytes_are_caught_by_the_integrity_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pristine = dir.path().join("pristine.redb");
    write_store(&pristine);
    let original = std::fs::read(&pristine).expect("read");
    let mut rng = SeededRng::new(11);
    let config = RedbConfig {
        check_integrity_on_open: true,
        ..RedbConfig::default()
    };
    let (mut refused, mut loaded) = (0, 0);
    for round in 0..40 {
        let path = dir.path().join(format!("flipped-{round}.redb"));
        let mut bytes = original.clone();
        for _ in 0..rng.range_inclusive(1, 4) {
            let at = rng.below(bytes.len() as u64) as usize;
            bytes[at] ^= 1 << rng.below(8);
        }
        std::fs::write(&path, &bytes).expect("write");
        match RedbBackend::open_with(&path, config).and_then(|b| MvccStore::open(b, KvConfig::default())) {
            Err(error) => {
                assert!(error.to_string().contains(&path.display().to_string()), "{error}");
                refused += 1;
            }
            Ok(store) => {
                assert!(store.applied_index() <= 3, "round {round}");
                store.state_hash().expect("a loaded store reads back");
                loaded += 1;
            }
        }
    }
    eprintln!("flipped files: {refused} refused, {loaded} loaded");
    assert!(refused > 0);
}
