//! Damage on disk: in the middle of the log it stops recovery with an error naming file and offset;
//! at the very tail it is cut with a warning, a whole batch (one append) at a time; a damaged
//! snapshot is refused with the reason.

mod common;

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use yizhi_engine::{Entry, EntryPayload, LogIndex, LogStorage, Membership};
use yizhi_storage::codec::{Frame, SEGMENT_HEADER_BYTES, decode_frame};
use yizhi_storage::{WalError, WalStorage, WalStorageConfig};

const ENTRIES: LogIndex = 60;
/// Entries per append: each append is one batch on disk.
const BATCH_ENTRIES: LogIndex = 3;

fn config() -> WalStorageConfig {
    common::small_wal_config(16, 4, 4)
}

fn entry(index: LogIndex) -> Entry {
    Entry {
        index,
        term: 1,
        payload: EntryPayload::Normal(Bytes::from(vec![index as u8; 900])),
    }
}

/// A WAL of `ENTRIES` entries over several segments; returns its segment paths, oldest first.
fn written_wal(dir: &Path) -> Vec<PathBuf> {
    let mut storage = WalStorage::create(dir, config(), Membership::new([1])).expect("create");
    let entries: Vec<Entry> = (1..=ENTRIES).map(entry).collect();
    for batch in entries.chunks(BATCH_ENTRIES as usize) {
        storage.append(batch).expect("append");
    }
    storage.sync().expect("sync");
    let wal = storage.wal();
    let paths: Vec<PathBuf> = wal
        .segment_sequences()
        .into_iter()
        .map(|s| wal.segment_path(s))
        .collect();
    assert!(
        paths.len() >= 3,
        "the test needs several segments, got {}",
        paths.len()
    );
    paths
}

/// [`written_wal`]'s newest segment, the one a torn write can reach.
fn written_wal_last_segment(dir: &Path) -> PathBuf {
    written_wal(dir).pop().expect("segments")
}

/// Byte offsets of the frames (records and batch headers) in a segment file.
fn frame_offsets(path: &Path) -> Vec<usize> {
    frames(path).into_iter().map(|(offset, _)| offset).collect()
}

/// The frames of a segment file with their offsets.
fn frames(path: &Path) -> Vec<(usize, Frame)> {
    let bytes = fs::read(path).expect("read segment");
    let mut found = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES;
    while let Ok(decoded) = decode_frame(&bytes[offset..]) {
        found.push((offset, decoded.frame));
        offset += decoded.frame_len;
    }
    found
}

/// Offsets of the batch headers in a segment file.
fn batch_header_offsets(path: &Path) -> Vec<usize> {
    frames(path)
        .into_iter()
        .filter(|(_, frame)| matches!(frame, Frame::BatchHeader(_)))
        .map(|(offset, _)| offset)
        .collect()
}

fn flip_byte(path: &Path, offset: usize) {
    let mut bytes = fs::read(path).expect("read");
    bytes[offset] ^= 0x5a;
    fs::write(path, bytes).expect("write");
}

fn expect_corrupt_at(dir: &Path, path: &Path, offset: usize) {
    let error = WalStorage::open(dir, config()).expect_err("corruption must stop recovery");
    match &error {
        WalError::CorruptRecord {
            path: reported,
            offset: at,
            ..
        } => {
            assert_eq!(reported, path);
            assert_eq!(*at, offset as u64);
        }
        other => panic!("expected CorruptRecord, got {other}"),
    }
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains(&format!("byte offset {offset}")), "{message}");
}

#[test]
fn flipped_byte_in_an_older_segment_names_file_and_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = written_wal(dir.path());
    let offsets = frame_offsets(&paths[1]);
    let victim = offsets[offsets.len() / 2];
    flip_byte(&paths[1], victim + 20);
    expect_corrupt_at(dir.path(), &paths[1], victim);
    // Refusing must not repair anything: the damage is still reported the second time.
    expect_corrupt_at(dir.path(), &paths[1], victim);
}

#[test]
fn flipped_byte_mid_last_segment_is_corruption_not_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let last = &written_wal_last_segment(dir.path());
    let offsets = frame_offsets(last);
    assert!(offsets.len() >= 3, "last segment holds {} records", offsets.len());
    flip_byte(last, offsets[1] + 3);
    expect_corrupt_at(dir.path(), last, offsets[1]);
    flip_byte(last, offsets[1] + 3);
    // A record inside a batch that has another batch after it: reported at the record itself.
    let first_batch = batch_header_offsets(last)[0];
    let at = offsets
        .iter()
        .position(|o| *o == first_batch)
        .expect("header is a frame");
    let member = offsets[at + 2];
    flip_byte(last, member + 40);
    expect_corrupt_at(dir.path(), last, member);
}

#[test]
fn corrupt_batch_header_mid_log_names_file_and_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = written_wal(dir.path());
    let last = paths.last().expect("segments");
    let headers = batch_header_offsets(last);
    assert!(headers.len() >= 2, "last segment holds {} batches", headers.len());
    // A torn write cannot damage a header with a whole batch after it.
    flip_byte(last, headers[0] + 12);
    expect_corrupt_at(dir.path(), last, headers[0]);
    flip_byte(last, headers[0] + 12);
    // In an older segment even the final batch's header is durable data: corruption too.
    let older = batch_header_offsets(&paths[1]);
    let victim = *older.last().expect("batches in an older segment");
    flip_byte(&paths[1], victim + 9);
    expect_corrupt_at(dir.path(), &paths[1], victim);
}

#[test]
fn damaged_final_record_cuts_its_whole_batch_with_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let last = &written_wal_last_segment(dir.path());
    let final_record = *frame_offsets(last).last().expect("records");
    let final_batch = *batch_header_offsets(last).last().expect("batches");
    flip_byte(last, final_record + 30);
    let (mut storage, report) = WalStorage::open(dir.path(), config()).expect("torn tail recovers");
    let torn = report.torn_tail.clone().expect("torn tail reported");
    assert_eq!((&torn.path, torn.offset), (last, final_batch as u64));
    assert!(
        report.warnings()[0].contains("torn tail"),
        "{:?}",
        report.warnings()
    );
    assert_eq!(
        storage.last_index(),
        ENTRIES - BATCH_ENTRIES,
        "the damaged final batch is gone, all of it and nothing before it"
    );
    // The cut tail is zeros again: the log accepts new entries and reopens cleanly.
    let again: Vec<Entry> = (ENTRIES - BATCH_ENTRIES + 1..=ENTRIES).map(entry).collect();
    storage.append(&again).expect("append after recovery");
    storage.sync().expect("sync");
    drop(storage);
    let (storage, report) = WalStorage::open(dir.path(), config()).expect("clean reopen");
    assert_eq!(report.torn_tail, None);
    assert_eq!(
        storage.entries(1, ENTRIES + 1, u64::MAX).expect("entries").len() as u64,
        ENTRIES
    );
}

#[test]
fn truncated_or_garbage_tail_recovers_every_complete_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let last = &written_wal_last_segment(dir.path());
    let final_record = *frame_offsets(last).last().expect("records");
    let file = OpenOptions::new().write(true).open(last).expect("open");
    file.set_len(final_record as u64 + 7)
        .expect("truncate mid-record");
    drop(file);
    let (storage, report) = WalStorage::open(dir.path(), config()).expect("recovers");
    assert!(report.torn_tail.is_some());
    assert_eq!(storage.last_index(), ENTRIES - BATCH_ENTRIES);
    drop(storage);

    // Garbage after the last complete record (an interrupted write of junk) is cut as well.
    let mut bytes = fs::read(last).expect("read");
    let final_offset = *frame_offsets(last).last().expect("records");
    let end = final_offset + decode_frame(&bytes[final_offset..]).expect("valid").frame_len;
    for (i, byte) in bytes[end..end + 500].iter_mut().enumerate() {
        *byte = (i * 37 + 11) as u8;
    }
    fs::write(last, bytes).expect("write");
    let (storage, report) = WalStorage::open(dir.path(), config()).expect("recovers");
    assert_eq!(report.torn_tail.map(|t| t.offset), Some(end as u64));
    assert_eq!(
        storage.last_index(),
        ENTRIES - BATCH_ENTRIES,
        "no record was invented from the garbage"
    );
}

fn snapshot_files(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .expect("list")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "snap"))
        .collect();
    found.sort();
    found
}

#[test]
fn corrupt_or_missing_snapshot_is_refused_with_file_and_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut storage = WalStorage::create(dir.path(), config(), Membership::new([1])).expect("create");
    storage
        .append(&(1..=10).map(entry).collect::<Vec<_>>())
        .expect("append");
    storage
        .compact(8, Membership::new([1]), Bytes::from(vec![3u8; 5000]))
        .expect("compact");
    drop(storage);
    let snapshot = snapshot_files(dir.path()).pop().expect("snapshot file");
    let pristine = fs::read(&snapshot).expect("read");
    let len = pristine.len();
    flip_byte(&snapshot, len - 100);
    let error = WalStorage::open(dir.path(), config()).expect_err("corrupt snapshot refused");
    let message = error.to_string();
    assert!(matches!(error, WalError::CorruptSnapshot { .. }), "{message}");
    assert!(message.contains(&snapshot.display().to_string()), "{message}");
    assert!(message.contains("data checksum mismatch"), "{message}");

    fs::write(&snapshot, &pristine[..len - 1]).expect("truncate");
    let message = WalStorage::open(dir.path(), config())
        .expect_err("short snapshot")
        .to_string();
    assert!(message.contains("data bytes"), "{message}");

    fs::remove_file(&snapshot).expect("remove");
    let error = WalStorage::open(dir.path(), config()).expect_err("missing snapshot refused");
    assert!(
        matches!(error, WalError::MissingSnapshot { index: 8, .. }),
        "{error}"
    );

    fs::write(&snapshot, &pristine).expect("restore");
    let (storage, _) = WalStorage::open(dir.path(), config()).expect("intact snapshot loads");
    assert_eq!(storage.snapshot_meta().index, 8);
}

#[test]
fn a_missing_middle_segment_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = written_wal(dir.path());
    fs::remove_file(&paths[1]).expect("remove");
    let error = WalStorage::open(dir.path(), config()).expect_err("gap refused");
    assert!(error.to_string().contains("missing"), "{error}");
}
