//! Replays the checked-in fuzz seed corpora of the storage decoders (`fuzz/corpus/wal_record`,
//! `fuzz/corpus/snapshot_file`) with the same checks as the fuzz targets, because CI cannot run
//! libFuzzer: no input panics, and whatever decodes re-encodes to exactly the bytes it came from.

mod common;

use common::corpus::{corpus, corpus_dir};

use bytes::Bytes;
use yizhi_engine::wire::testkit::{random_entries, random_membership};
use yizhi_engine::{HardState, Membership, SeededRng, Snapshot, SnapshotMeta};
use yizhi_storage::codec::{
    self, BatchHeader, Frame, Record, SEGMENT_HEADER_BYTES, SnapshotMarker, decode_frame, decode_record,
    encode_batch_header, encode_record,
};
use yizhi_storage::recovery::scan_segment;
use yizhi_storage::snapshot_file::{self, decode_snapshot, encode_snapshot};

/// The `wal_record` fuzz target's check.
fn check_wal_record(data: &[u8]) -> bool {
    if data.len() >= SEGMENT_HEADER_BYTES {
        let _ = scan_segment(data, data[0] & 1 == 1);
    }
    let Ok(decoded) = decode_frame(data) else {
        return false;
    };
    let mut encoded = Vec::new();
    codec::encode_frame(&decoded.frame, &mut encoded);
    assert_eq!(encoded, data[..decoded.frame_len], "{decoded:?} is not canonical");
    assert_eq!(decode_frame(&encoded).as_ref(), Ok(&decoded));
    let as_record = decode_record(data).map(|d| Frame::Record(d.record));
    assert_eq!(as_record.is_ok(), matches!(decoded.frame, Frame::Record(_)));
    true
}

/// The `snapshot_file` fuzz target's check.
fn check_snapshot_file(data: &[u8]) -> bool {
    let Ok(snapshot) = decode_snapshot(data) else {
        return false;
    };
    let encoded = encode_snapshot(&snapshot);
    assert_eq!(encoded, data, "{:?} is not canonical", snapshot.meta);
    assert_eq!(decode_snapshot(&encoded).as_ref(), Ok(&snapshot));
    true
}

#[test]
fn wal_record_corpus_replays() {
    let files = corpus("wal_record", 8);
    let valid = files.iter().filter(|(_, bytes)| check_wal_record(bytes)).count();
    let batch_headers = files
        .iter()
        .filter(|(_, bytes)| matches!(decode_frame(bytes), Ok(d) if matches!(d.frame, Frame::BatchHeader(_))))
        .count();
    assert!(batch_headers >= 1, "no batch header among the wal_record seeds");
    assert!(
        valid >= 6,
        "only {valid} of {} wal_record seeds decode",
        files.len()
    );
}

#[test]
fn snapshot_file_corpus_replays() {
    let files = corpus("snapshot_file", 4);
    let valid = files
        .iter()
        .filter(|(_, bytes)| check_snapshot_file(bytes))
        .count();
    assert!(
        valid >= 2,
        "only {valid} of {} snapshot_file seeds decode",
        files.len()
    );
}

/// The peer-message codec (`yizhi_engine::wire`) and the WAL refuse the same oversized values, so an
/// entry or membership that crossed the network can always be persisted.
#[test]
fn wire_limits_match_the_storage_limits() {
    assert_eq!(
        yizhi_engine::wire::MAX_MEMBERSHIP_SET_NODES,
        codec::MAX_MEMBERSHIP_NODES
    );
    assert_eq!(
        yizhi_engine::wire::MAX_ENTRY_PAYLOAD_BYTES,
        codec::MAX_RECORD_BODY_BYTES
    );
    assert_eq!(
        yizhi_engine::wire::MAX_SNAPSHOT_DATA_BYTES,
        snapshot_file::MAX_SNAPSHOT_DATA_BYTES
    );
}

fn sample_records(rng: &mut SeededRng) -> Vec<Record> {
    let mut records: Vec<Record> = random_entries(rng, 1, 6).into_iter().map(Record::Entry).collect();
    records.extend(
        random_entries(rng, u64::MAX - 1, 2)
            .into_iter()
            .map(Record::Entry),
    );
    records.push(Record::HardState(HardState {
        term: 7,
        vote: Some(3),
        commit: 5,
    }));
    records.push(Record::HardState(HardState::default()));
    for discard_suffix in [false, true] {
        records.push(Record::SnapshotMarker(SnapshotMarker {
            index: 40,
            term: 6,
            discard_suffix,
        }));
    }
    records
}

fn sample_snapshots(rng: &mut SeededRng) -> Vec<Snapshot> {
    let joint = Membership {
        voters_outgoing: [1, 2, 3].into(),
        ..Membership::new([1, 2, 4])
    }
    .with_learners([9]);
    vec![
        Snapshot::default(),
        Snapshot {
            meta: SnapshotMeta {
                index: 100,
                term: 4,
                membership: joint,
            },
            data: Bytes::from(vec![0xA5; 300]),
        },
        Snapshot {
            meta: SnapshotMeta {
                index: u64::MAX,
                term: u64::MAX,
                membership: random_membership(rng),
            },
            data: Bytes::from_static(b"image"),
        },
    ]
}

/// Regenerates both seed corpora: valid encodings, a record followed by another (the decoder
/// reads the first), the all-zero end of a segment, and truncated copies. Run by hand:
/// `cargo test -p yizhi-storage --test fuzz_corpus -- --ignored write_seed_corpus`.
#[test]
#[ignore = "writes files into fuzz/corpus; run by hand after a format change"]
fn write_seed_corpus() {
    let mut rng = SeededRng::new(1);
    let dir = corpus_dir("wal_record");
    std::fs::create_dir_all(&dir).unwrap();
    let records = sample_records(&mut rng);
    for (i, record) in records.iter().enumerate() {
        let mut bytes = Vec::new();
        encode_record(record, &mut bytes);
        std::fs::write(dir.join(format!("valid-{i:02}")), &bytes).unwrap();
        if i % 3 == 0 {
            let cut = rng.range_inclusive(1, bytes.len() as u64 - 1) as usize;
            std::fs::write(dir.join(format!("truncated-{i:02}")), &bytes[..cut]).unwrap();
        }
    }
    let mut two = Vec::new();
    encode_record(&records[0], &mut two);
    encode_record(&records[records.len() - 1], &mut two);
    std::fs::write(dir.join("two-records"), &two).unwrap();
    std::fs::write(dir.join("end-of-records"), [0u8; codec::FRAME_HEADER_BYTES + 3]).unwrap();
    // A batch: its header, then its records; and the header alone, cut short.
    let members = &records[..3];
    let header = BatchHeader::for_records(members).expect("three records make a batch");
    let mut batch = Vec::new();
    encode_batch_header(header, &mut batch);
    let header_only = batch.clone();
    for record in members {
        encode_record(record, &mut batch);
    }
    std::fs::write(dir.join("batch"), &batch).unwrap();
    std::fs::write(
        dir.join("truncated-batch-header"),
        &header_only[..header_only.len() - 5],
    )
    .unwrap();

    let dir = corpus_dir("snapshot_file");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, snapshot) in sample_snapshots(&mut rng).iter().enumerate() {
        let bytes = encode_snapshot(snapshot);
        std::fs::write(dir.join(format!("valid-{i}")), &bytes).unwrap();
        let cut = rng.range_inclusive(1, bytes.len() as u64 - 1) as usize;
        std::fs::write(dir.join(format!("truncated-{i}")), &bytes[..cut]).unwrap();
    }
}
