use std::sync::atomic::Ordering;
use std::thread;

use bytes::Bytes;
use yizhi_engine::{Entry, EntryPayload};

use super::*;
use crate::codec::MAX_BATCH_BYTES;

fn entry(index: LogIndex, size: usize) -> Record {
    Record::Entry(Entry {
        index,
        term: 1,
        payload: EntryPayload::Normal(Bytes::from(vec![index as u8; size])),
    })
}

fn small_config() -> WalConfig {
    WalConfig {
        segment_bytes: 16 * 1024,
        max_record_bytes: 4 * 1024,
        ..WalConfig::default()
    }
}

fn reopen(dir: &Path, config: WalConfig) -> (Wal, Vec<Record>, RecoveryReport) {
    let mut records = Vec::new();
    let (wal, report) = Wal::open(dir, config, |_, record| {
        records.push(record);
        Ok(())
    })
    .expect("reopen");
    (wal, records, report)
}

#[test]
fn group_commit_shares_fsyncs_between_threads() {
    const THREADS: u64 = 16;
    const APPENDS_PER_THREAD: u64 = 50;
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::create(dir.path(), WalConfig::default()).expect("create");
    thread::scope(|scope| {
        for thread in 0..THREADS {
            let wal = &wal;
            scope.spawn(move || {
                for i in 0..APPENDS_PER_THREAD {
                    wal.append_sync(&[entry(thread * APPENDS_PER_THREAD + i + 1, 100)])
                        .expect("append");
                }
            });
        }
    });
    let metrics = wal.metrics();
    assert_eq!(metrics.appends, THREADS * APPENDS_PER_THREAD);
    assert!(
        metrics.fsyncs < metrics.appends,
        "{} fsyncs for {} appends: no sharing",
        metrics.fsyncs,
        metrics.appends
    );
    assert_eq!(
        metrics.synced_bytes, metrics.appended_bytes,
        "every appended byte was synced once"
    );
    drop(wal);
    let (_, records, report) = reopen(dir.path(), WalConfig::default());
    assert_eq!(records.len() as u64, THREADS * APPENDS_PER_THREAD);
    assert_eq!(report.torn_tail, None);
}

#[test]
fn failed_fsync_poisons_the_wal_for_good() {
    let dir = tempfile::tempdir().expect("tempdir");
    let faults = Arc::new(SyncFaults::default());
    let config = WalConfig {
        sync_faults: Some(Arc::clone(&faults)),
        ..small_config()
    };
    let wal = Wal::create(dir.path(), config).expect("create");
    wal.append_sync(&[entry(1, 10)]).expect("healthy append");
    faults.fail_next.store(true, Ordering::SeqCst);
    let error = wal.append_sync(&[entry(2, 10)]).expect_err("fsync fails");
    assert!(error.is_fatal(), "{error}");
    assert!(error.to_string().contains("injected fsync failure"), "{error}");
    // The disk "recovers", but the WAL never retries: every later call is refused.
    faults.fail_next.store(false, Ordering::SeqCst);
    assert!(wal.sync().expect_err("poisoned").is_fatal());
    assert!(wal.append(&[entry(3, 10)]).expect_err("poisoned").is_fatal());
    assert!(wal.release_through(10).expect_err("poisoned").is_fatal());
}

#[test]
fn segments_roll_and_compaction_releases_only_covered_prefix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::create(dir.path(), small_config()).expect("create");
    for index in 1..=100 {
        wal.append(&[entry(index, 1000)]).expect("append");
    }
    wal.sync().expect("sync");
    let sequences = wal.segment_sequences();
    assert!(sequences.len() >= 6, "100 KB in 16 KiB segments: {sequences:?}");
    assert_eq!(wal.release_through(0).expect("release"), 0);
    let released = wal.release_through(50).expect("release");
    assert!(released >= 2, "released {released}");
    let remaining = wal.segment_sequences();
    assert_eq!(remaining.len(), sequences.len() - released);
    for sequence in &sequences[..released] {
        assert!(!wal.segment_path(*sequence).exists());
    }
    // Everything above 50 is still there, in order, after a reopen.
    drop(wal);
    let (wal, records, _) = reopen(dir.path(), small_config());
    let indexes: Vec<LogIndex> = records
        .iter()
        .filter_map(|r| match r {
            Record::Entry(e) => Some(e.index),
            _ => None,
        })
        .collect();
    assert!(indexes[0] <= 51, "first surviving entry {}", indexes[0]);
    assert_eq!(indexes.last(), Some(&100));
    assert!(indexes.windows(2).all(|w| w[0] + 1 == w[1]));
    // The active segment is never released.
    assert_eq!(wal.release_through(1000).expect("release"), remaining.len() - 1);
    assert_eq!(wal.segment_sequences().len(), 1);
}

#[test]
fn rolled_segments_restate_hard_state_and_marker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::create(dir.path(), small_config()).expect("create");
    let hs = HardState {
        term: 4,
        vote: Some(2),
        commit: 3,
    };
    let marker = SnapshotMarker {
        index: 2,
        term: 1,
        discard_suffix: true,
    };
    wal.append(&[Record::HardState(hs), Record::SnapshotMarker(marker)])
        .expect("append");
    for index in 3..=40 {
        wal.append(&[entry(index, 1000)]).expect("append");
    }
    let last = *wal.segment_sequences().last().expect("segments");
    let path = wal.segment_path(last);
    drop(wal);
    let bytes = fs::read(&path).expect("read segment");
    let first = decode_record(&bytes[SEGMENT_HEADER_BYTES..]).expect("head record");
    assert_eq!(first.record, Record::HardState(hs));
    let second = decode_record(&bytes[SEGMENT_HEADER_BYTES + first.frame_len..]).expect("head record");
    let restated = SnapshotMarker {
        discard_suffix: false,
        ..marker
    };
    assert_eq!(second.record, Record::SnapshotMarker(restated));
}

#[test]
fn oversized_records_and_bad_configs_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::create(dir.path(), small_config()).expect("create");
    let error = wal.append(&[entry(1, 5000)]).expect_err("too large");
    assert!(matches!(error, WalError::RecordTooLarge { .. }), "{error}");
    wal.append_sync(&[entry(1, 10)]).expect("the WAL is still usable");
    let bad = WalConfig {
        segment_bytes: 1024,
        ..small_config()
    };
    let other = tempfile::tempdir().expect("tempdir");
    assert!(matches!(
        Wal::create(other.path(), bad),
        Err(WalError::BadConfig(_))
    ));
    drop(Wal::create(other.path(), small_config()).expect("create"));
    assert!(matches!(
        Wal::create(other.path(), small_config()),
        Err(WalError::AlreadyExists { .. })
    ));
}

#[test]
fn a_second_handle_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _wal = Wal::create(dir.path(), small_config()).expect("create");
    let error = Wal::open(dir.path(), small_config(), |_, _| Ok(())).expect_err("locked");
    assert!(error.to_string().contains("LOCK"), "{error}");
}

#[test]
fn a_batch_that_does_not_fit_starts_a_new_segment_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::create(dir.path(), small_config()).expect("create");
    // 14 single records of ~1 KiB fill most of the first 16 KiB segment.
    for index in 1..=14 {
        wal.append(&[entry(index, 1000)]).expect("append");
    }
    assert_eq!(wal.segment_sequences(), [1]);
    let batch: Vec<Record> = (15..=17).map(|index| entry(index, 1000)).collect();
    let (locations, _) = wal.append(&batch).expect("append batch");
    assert!(
        locations.iter().all(|l| l.segment == 2),
        "a batch straddles segments: {locations:?}"
    );
    wal.sync().expect("sync");
    for (location, record) in locations.iter().zip(&batch) {
        assert_eq!(&wal.read(*location).expect("read back"), record);
    }
    drop(wal);
    let (_, records, report) = reopen(dir.path(), small_config());
    assert_eq!(records.len(), 17);
    assert_eq!(report.torn_tail, None);
}

#[test]
fn a_batch_larger_than_a_segment_gets_a_segment_sized_to_fit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config();
    let wal = Wal::create(dir.path(), config.clone()).expect("create");
    wal.append(&[entry(1, 100)]).expect("append");
    // Ten records of ~3 KiB: twice the 16 KiB segment.
    let batch: Vec<Record> = (2..=11).map(|index| entry(index, 3000)).collect();
    let (locations, _) = wal.append(&batch).expect("append batch");
    assert!(locations.iter().all(|l| l.segment == 2), "{locations:?}");
    // Later appends fill the grown segment, then segments of the usual size follow.
    for index in 12..=40 {
        wal.append(&[entry(index, 1000)]).expect("append");
    }
    wal.sync().expect("sync");
    let grown = fs::metadata(wal.segment_path(2)).expect("stat").len();
    assert!(grown > 30_000, "segment 2 is {grown} bytes");
    let last = *wal.segment_sequences().last().expect("segments");
    assert!(last >= 3);
    assert_eq!(
        fs::metadata(wal.segment_path(last)).expect("stat").len(),
        config.segment_bytes
    );
    drop(wal);
    let (wal, records, report) = reopen(dir.path(), config.clone());
    assert_eq!(
        records.iter().filter(|r| matches!(r, Record::Entry(_))).count(),
        40
    );
    assert_eq!(report.torn_tail, None);
    // A torn batch in a grown, active segment is cut whole; the segment keeps working.
    drop(wal);
    let dir2 = tempfile::tempdir().expect("tempdir");
    let wal = Wal::create(dir2.path(), config.clone()).expect("create");
    wal.append(&[entry(1, 100)]).expect("append");
    wal.append(&batch).expect("append batch");
    wal.sync().expect("sync");
    let path = wal.segment_path(2);
    drop(wal);
    let mut bytes = fs::read(&path).expect("read");
    let used = bytes.iter().rposition(|b| *b != 0).expect("data") + 1;
    bytes[used - 5] ^= 0xff;
    fs::write(&path, &bytes).expect("write");
    let (wal, records, report) = reopen(dir2.path(), config.clone());
    assert_eq!(
        report.torn_tail.map(|t| (t.path, t.offset)),
        Some((path, SEGMENT_HEADER_BYTES as u64))
    );
    assert_eq!(records.len(), 1, "all of the torn batch is gone");
    wal.append_sync(&batch).expect("append after the cut");
    drop(wal);
    let (_, records, report) = reopen(dir2.path(), config);
    assert_eq!((records.len(), report.torn_tail), (11, None));
}

#[test]
fn a_batch_above_the_limit_is_refused_and_the_wal_stays_usable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = WalConfig {
        max_batch_bytes: 8 * 1024,
        ..small_config()
    };
    let wal = Wal::create(dir.path(), config).expect("create");
    let batch: Vec<Record> = (1..=3).map(|index| entry(index, 3000)).collect();
    let error = wal.append(&batch).expect_err("too large");
    assert!(
        matches!(
            error,
            WalError::BatchTooLarge {
                records: 3,
                limit: 8192,
                ..
            }
        ),
        "{error}"
    );
    wal.append_sync(&batch[..2]).expect("a smaller batch fits");
    let bad = WalConfig {
        max_batch_bytes: MAX_BATCH_BYTES + 1,
        ..small_config()
    };
    let other = tempfile::tempdir().expect("tempdir");
    assert!(matches!(
        Wal::create(other.path(), bad),
        Err(WalError::BadConfig(_))
    ));
}

#[test]
fn a_version_1_segment_is_refused_naming_file_and_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::create(dir.path(), small_config()).expect("create");
    wal.append_sync(&[entry(1, 10)]).expect("append");
    let path = wal.segment_path(1);
    drop(wal);
    let mut bytes = fs::read(&path).expect("read");
    bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[0..24]);
    bytes[24..28].copy_from_slice(&crc.to_le_bytes());
    fs::write(&path, &bytes).expect("write");
    let error = Wal::open(dir.path(), small_config(), |_, _| Ok(())).expect_err("old format");
    assert!(
        matches!(&error, WalError::UnsupportedVersion { path: p, version: 1 } if *p == path),
        "{error}"
    );
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("version 1"), "{message}");
}
