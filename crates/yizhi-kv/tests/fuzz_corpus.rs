//! Replays the checked-in fuzz seed corpora of the KV decoders (`fuzz/corpus/kv_command`,
//! `fuzz/corpus/kv_snapshot`) with the same checks as the fuzz targets, because CI cannot run
//! libFuzzer: no input panics, a decoded command survives encode → decode, a refused snapshot
//! leaves the store as it was, and an installed one re-snapshots to the same state.

mod common;
#[path = "../../yizhi-storage/tests/common/corpus.rs"]
mod corpus;

use bytes::Bytes;
use corpus::{corpus, corpus_dir};
use yizhi_kv::{
    ClientSeq, Command, CompactionRequest, Compare, CompareResult, CompareTarget, DeleteRangeRequest,
    KvConfig, LeaseGrantRequest, MemBackend, MvccStore, PutRequest, RangeRequest, RequestOp, SortOrder,
    SortTarget, TxnRequest, decode_command, encode_command,
};

fn fresh() -> MvccStore<MemBackend> {
    MvccStore::open(MemBackend::new(), KvConfig::default()).expect("an empty store opens")
}

/// The `kv_command` fuzz target's check.
fn check_kv_command(data: &[u8]) -> bool {
    let Ok(command) = decode_command(data) else {
        return false;
    };
    let encoded = encode_command(&command);
    assert_eq!(decode_command(&encoded).as_ref(), Ok(&command));
    assert_eq!(encode_command(&command), encoded, "encoding is deterministic");
    true
}

/// The `kv_snapshot` fuzz target's check.
fn check_kv_snapshot(data: &[u8]) -> bool {
    let mut store = fresh();
    let empty = store.snapshot().expect("memory backend");
    if store.install_snapshot(data).is_err() {
        let after = store.snapshot().expect("memory backend");
        assert_eq!(after, empty, "a refused install changed the store");
        return false;
    }
    let image = store.snapshot().expect("memory backend");
    let mut copy = fresh();
    copy.install_snapshot(&image)
        .expect("a store's own snapshot installs");
    assert_eq!(copy.snapshot().expect("memory backend"), image);
    assert_eq!(copy.state_hash(), store.state_hash());
    true
}

#[test]
fn kv_command_corpus_replays() {
    let files = corpus("kv_command", 10);
    let valid = files.iter().filter(|(_, bytes)| check_kv_command(bytes)).count();
    let deduped = files
        .iter()
        .filter(|(_, bytes)| matches!(decode_command(bytes), Ok(Command::Deduped { .. })))
        .count();
    assert!(deduped >= 3, "only {deduped} Deduped seeds decode");
    assert!(
        valid >= 8,
        "only {valid} of {} kv_command seeds decode",
        files.len()
    );
}

#[test]
fn kv_snapshot_corpus_replays() {
    let files = corpus("kv_snapshot", 4);
    let valid = files.iter().filter(|(_, bytes)| check_kv_snapshot(bytes)).count();
    // Version 1 images (before sessions) must keep installing next to version 2 ones.
    let versions: std::collections::BTreeSet<u8> = files
        .iter()
        .filter(|(_, bytes)| check_kv_snapshot(bytes))
        .map(|(_, bytes)| bytes[yizhi_kv::SNAPSHOT_MAGIC.len()])
        .collect();
    assert!(versions.contains(&1) && versions.contains(&2), "{versions:?}");
    assert!(
        valid >= 2,
        "only {valid} of {} kv_snapshot seeds install",
        files.len()
    );
}

fn put(key: &'static [u8], value: &'static [u8], lease: i64) -> PutRequest {
    PutRequest {
        key: Bytes::from_static(key),
        value: Bytes::from_static(value),
        lease,
        ..PutRequest::default()
    }
}

/// One command of every kind, with nesting, sorting and flags set somewhere.
fn sample_commands() -> Vec<Command> {
    let range = RangeRequest {
        key: Bytes::from_static(b"a"),
        range_end: Bytes::from_static(b"z"),
        limit: 10,
        sort_order: SortOrder::Descend,
        sort_target: SortTarget::Mod,
        keys_only: true,
        ..RangeRequest::default()
    };
    let delete = DeleteRangeRequest {
        key: Bytes::from_static(b"k"),
        range_end: Bytes::from_static(b"\0"),
        prev_kv: true,
    };
    let nested = TxnRequest {
        compare: vec![],
        success: vec![RequestOp::Range(RangeRequest::default())],
        failure: vec![],
    };
    let txn = TxnRequest {
        compare: vec![
            Compare {
                result: CompareResult::Greater,
                target: CompareTarget::Version(0),
                key: Bytes::from_static(b"k1"),
                range_end: Bytes::new(),
            },
            Compare {
                result: CompareResult::NotEqual,
                target: CompareTarget::Value(Bytes::from_static(b"v")),
                key: Bytes::from_static(b"k2"),
                range_end: Bytes::new(),
            },
        ],
        success: vec![RequestOp::Put(put(b"k1", b"v2", 0)), RequestOp::Txn(nested)],
        failure: vec![
            RequestOp::DeleteRange(delete.clone()),
            RequestOp::Range(range.clone()),
        ],
    };
    vec![
        Command::Range(range),
        Command::Put(put(b"key", b"value", 0)),
        Command::Put(PutRequest {
            prev_kv: true,
            ignore_lease: true,
            ..put(b"k", b"", 7)
        }),
        Command::DeleteRange(delete),
        Command::Txn(txn),
        Command::Compact(CompactionRequest {
            revision: 5,
            physical: true,
        }),
        Command::LeaseGrant(LeaseGrantRequest {
            id: 0,
            ttl_secs: 60,
            now_ms: 1_000,
        }),
        Command::LeaseRevoke { id: i64::MAX },
        Command::LeaseKeepAlive {
            id: 3,
            now_ms: u64::MAX,
        },
    ]
}

/// Snapshots of an empty store and of stores with leases, deletes, a compaction and history.
fn sample_snapshots() -> Vec<Vec<u8>> {
    let mut images = vec![fresh().snapshot().unwrap()];
    let script = [
        Command::LeaseGrant(LeaseGrantRequest {
            id: 5,
            ttl_secs: 30,
            now_ms: 0,
        }),
        Command::Put(put(b"a", b"1", 0)),
        Command::Put(put(b"b", b"2", 5)),
        Command::Put(put(b"a", b"3", 0)),
        Command::DeleteRange(DeleteRangeRequest {
            key: Bytes::from_static(b"b"),
            ..DeleteRangeRequest::default()
        }),
        Command::Compact(CompactionRequest {
            revision: 3,
            physical: false,
        }),
        Command::Put(put(b"c", b"4", 5)),
    ];
    let mut store = fresh();
    for (i, command) in script.iter().enumerate() {
        let applied = store.apply(command, i as u64 + 1).unwrap();
        assert!(applied.response.is_ok(), "{command:?}: {applied:?}");
        if i == 2 || i == script.len() - 1 {
            images.push(store.snapshot().unwrap());
        }
    }
    images
}

/// Regenerates both seed corpora: valid encodings and truncated copies. It rewrites the
/// version-1 snapshot seeds in the current version, which `kv_snapshot_corpus_replays` refuses
/// (old images must keep installing): restore those from git afterwards. Run by hand:
/// `cargo test -p yizhi-kv --test fuzz_corpus -- --ignored write_seed_corpus`.
#[test]
#[ignore = "writes files into fuzz/corpus; run by hand after a format change"]
fn write_seed_corpus() {
    let dir = corpus_dir("kv_command");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, command) in sample_commands().iter().enumerate() {
        let bytes = encode_command(command);
        std::fs::write(dir.join(format!("valid-{i:02}")), &bytes).unwrap();
        if bytes.len() > 2 {
            std::fs::write(dir.join(format!("truncated-{i:02}")), &bytes[..bytes.len() / 2]).unwrap();
        }
    }
    let dir = corpus_dir("kv_snapshot");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, image) in sample_snapshots().iter().enumerate() {
        std::fs::write(dir.join(format!("valid-{i}")), image).unwrap();
        std::fs::write(dir.join(format!("truncated-{i}")), &image[..image.len() - 1]).unwrap();
    }
}

/// Deduplicated commands (codec version 2), wrapping a few kinds of command.
fn sample_deduped_commands() -> Vec<Command> {
    let wrap = common::deduped;
    let commands = sample_commands();
    vec![
        wrap(1, 1, 1, 1_700_000_000_000, commands[1].clone()),
        wrap(u64::MAX, u64::MAX, 7, u64::MAX, commands[4].clone()),
        wrap(0x5eed, 3, 0, 0, commands[6].clone()),
        wrap(2, 9, 9, 5, commands[8].clone()),
    ]
}

/// A snapshot of a store whose session table holds kept, error and too-large responses.
fn sample_session_snapshot() -> Vec<u8> {
    let config = KvConfig {
        max_stored_response_bytes: 64,
        ..KvConfig::default()
    };
    let mut store = MvccStore::open(MemBackend::new(), config).expect("an empty store opens");
    let script = [
        (Command::Put(put(b"a", b"1", 0)), (4, 1, 1)),
        (Command::Put(put(b"b", b"2", 9)), (4, 2, 1)),
        (
            Command::Put(PutRequest {
                prev_kv: true,
                ..put(b"a", &[b'x'; 100], 0)
            }),
            (4, 3, 2),
        ),
        (Command::Put(put(b"c", b"3", 0)), (8, 5, 1)),
    ];
    for (i, (command, (client_id, seq, acked_below))) in script.into_iter().enumerate() {
        let deduped = Command::Deduped {
            request: ClientSeq {
                client_id,
                seq,
                acked_below,
            },
            now_ms: 1_000 + i as u64,
            command: Box::new(command),
        };
        store.apply(&deduped, i as u64 + 1).expect("memory backend");
    }
    assert_eq!(store.session_stats().stored_responses, 3);
    store.snapshot().expect("memory backend")
}

/// Adds the session seeds next to the version-1 ones, which stay as they were written. Run by
/// hand: `cargo test -p yizhi-kv --test fuzz_corpus -- --ignored write_session_seed_corpus`.
#[test]
#[ignore = "writes files into fuzz/corpus; run by hand after a format change"]
fn write_session_seed_corpus() {
    let dir = corpus_dir("kv_command");
    for (i, command) in sample_deduped_commands().iter().enumerate() {
        let bytes = encode_command(command);
        std::fs::write(dir.join(format!("deduped-valid-{i:02}")), &bytes).unwrap();
        std::fs::write(
            dir.join(format!("deduped-truncated-{i:02}")),
            &bytes[..bytes.len() / 2],
        )
        .unwrap();
    }
    let dir = corpus_dir("kv_snapshot");
    let image = sample_session_snapshot();
    std::fs::write(dir.join("sessions-valid-0"), &image).unwrap();
    std::fs::write(dir.join("sessions-truncated-0"), &image[..image.len() - 1]).unwrap();
}
