//! The write-ahead log: appends records to the active segment, rolls segments, group-commits
//! fsyncs, recovers on open, releases compacted segments and reads records back by location.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use yizhi_engine::{HardState, LogIndex};

use crate::codec::{
    BATCH_HEADER_FRAME_BYTES, BatchHeader, DecodeError, MAX_BATCH_BYTES, MAX_RECORD_BYTES, Record,
    SEGMENT_HEADER_BYTES, SnapshotMarker, batch_bytes, decode_record, decode_segment_header,
    encode_batch_header, encode_record, encoded_len,
};
use crate::error::{Result, WalError};
use crate::group_commit::{GroupCommit, Poison};
use crate::metrics::{WalMetrics, WalMetricsSnapshot};
use crate::recovery::{RecoveryReport, ScanEnd, TornTail, scan_segment};
use crate::segment;

pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Room for the records that restate the state at the head of every segment.
const SEGMENT_HEAD_RECORDS_BYTES: u64 = 128;
const LOCK_FILE_NAME: &str = "LOCK";

#[derive(Clone, Debug)]
pub struct WalConfig {
    /// Size every segment is preallocated to; a segment is never written past it.
    pub segment_bytes: u64,
    /// Largest record accepted, at most `codec::MAX_RECORD_BYTES`.
    pub max_record_bytes: usize,
    /// Largest append of several records (their frames, batch header excluded), at most
    /// `codec::MAX_BATCH_BYTES`. An append is written to one segment, all or nothing; one larger
    /// than a segment gets a segment of its own, sized to fit.
    pub max_batch_bytes: u64,
    /// Test hook: fail the next fsyncs with this error kind, to prove a failed fsync poisons the WAL.
    pub sync_faults: Option<Arc<SyncFaults>>,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            max_record_bytes: MAX_RECORD_BYTES,
            max_batch_bytes: MAX_BATCH_BYTES,
            sync_faults: None,
        }
    }
}

impl WalConfig {
    fn validate(&self) -> Result<()> {
        if self.max_record_bytes > MAX_RECORD_BYTES || self.max_record_bytes < 64 {
            return Err(WalError::BadConfig(format!(
                "max_record_bytes {} outside 64..={MAX_RECORD_BYTES}",
                self.max_record_bytes
            )));
        }
        if self.max_batch_bytes > MAX_BATCH_BYTES || self.max_batch_bytes < self.max_record_bytes as u64 {
            return Err(WalError::BadConfig(format!(
                "max_batch_bytes {} outside max_record_bytes..={MAX_BATCH_BYTES}",
                self.max_batch_bytes
            )));
        }
        let needed = SEGMENT_HEADER_BYTES as u64 + SEGMENT_HEAD_RECORDS_BYTES + self.max_record_bytes as u64;
        if self.segment_bytes < needed {
            return Err(WalError::BadConfig(format!(
                "segment_bytes {} cannot hold a header and a record of max_record_bytes ({needed} needed)",
                self.segment_bytes
            )));
        }
        Ok(())
    }
}

/// Injected fsync failures (tests only; `None` in production configs).
#[derive(Debug, Default)]
pub struct SyncFaults {
    pub fail_next: std::sync::atomic::AtomicBool,
}

/// Where a record lives, to read it back without keeping it in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordLocation {
    pub segment: u64,
    pub offset: u64,
    pub frame_len: u32,
}

#[derive(Debug)]
struct SegmentInfo {
    path: PathBuf,
    file: Arc<File>,
    /// The file's preallocated size: `segment_bytes`, or more for a segment grown to fit one batch.
    capacity_bytes: u64,
    /// Highest entry index written in this segment; `None` if it holds no entry.
    max_entry_index: Option<LogIndex>,
}

#[derive(Debug)]
struct Writer {
    /// Invariant: non-empty; the last one is the active segment.
    segments: BTreeMap<u64, SegmentInfo>,
    /// Invariant: `SEGMENT_HEADER_BYTES <= write_offset <= ` the active segment's `capacity_bytes`.
    write_offset: u64,
    /// Bytes written since open: the clock group commit counts durability in.
    written_position: u64,
    /// The latest hard state and snapshot marker, restated at the head of each new segment so that
    /// releasing older segments never loses them.
    last_hard_state: Option<HardState>,
    last_marker: Option<SnapshotMarker>,
    buffer: Vec<u8>,
}

impl Writer {
    fn active(&self) -> (u64, &SegmentInfo) {
        let (sequence, info) = self.segments.last_key_value().expect("at least one segment");
        (*sequence, info)
    }

    fn note(&mut self, record: &Record) {
        match record {
            Record::Entry(entry) => {
                let info = self.segments.values_mut().next_back().expect("active segment");
                info.max_entry_index = Some(info.max_entry_index.unwrap_or(0).max(entry.index));
            }
            Record::HardState(hs) => self.last_hard_state = Some(*hs),
            Record::SnapshotMarker(marker) => self.last_marker = Some(*marker),
        }
    }
}

/// A thread-safe write-ahead log handle. `append` and `sync` may be called from many threads.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    config: WalConfig,
    writer: Mutex<Writer>,
    group: GroupCommit,
    poison: Poison,
    metrics: WalMetrics,
    /// Held for the WAL's lifetime: a second process opening the same directory is refused.
    _lock: File,
}

fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE_NAME);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| WalError::io("opening lock file", &path, e))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(|errno| {
        WalError::io(
            "locking (is another process using this WAL?)",
            &path,
            errno.into(),
        )
    })?;
    Ok(file)
}

impl Wal {
    /// Creates an empty WAL in `dir` (created if missing). Refuses a directory that holds segments.
    pub fn create(dir: &Path, config: WalConfig) -> Result<Wal> {
        config.validate()?;
        fs::create_dir_all(dir).map_err(|e| WalError::io("creating directory", dir, e))?;
        let lock = lock_dir(dir)?;
        let (sequences, _) = segment::list_dir(dir)?;
        if !sequences.is_empty() {
            return Err(WalError::AlreadyExists { dir: dir.into() });
        }
        let (file, path) = segment::create_segment(dir, 1, config.segment_bytes)?;
        let info = SegmentInfo {
            path,
            file: Arc::new(file),
            capacity_bytes: config.segment_bytes,
            max_entry_index: None,
        };
        Ok(Self::assemble(
            dir,
            config,
            lock,
            BTreeMap::from([(1, info)]),
            SEGMENT_HEADER_BYTES as u64,
        ))
    }

    fn assemble(
        dir: &Path,
        config: WalConfig,
        lock: File,
        segments: BTreeMap<u64, SegmentInfo>,
        write_offset: u64,
    ) -> Wal {
        let (_, active) = segments.last_key_value().expect("a WAL has at least one segment");
        assert!(
            (SEGMENT_HEADER_BYTES as u64..=active.capacity_bytes).contains(&write_offset),
            "write offset {write_offset} outside the active segment of {} bytes",
            active.capacity_bytes
        );
        Wal {
            dir: dir.to_path_buf(),
            config,
            writer: Mutex::new(Writer {
                segments,
                write_offset,
                written_position: 0,
                last_hard_state: None,
                last_marker: None,
                buffer: Vec::new(),
            }),
            group: GroupCommit::default(),
            poison: Poison::default(),
            metrics: WalMetrics::default(),
            _lock: lock,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn metrics(&self) -> WalMetricsSnapshot {
        self.metrics.snapshot()
    }

    fn lock_writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().expect("WAL writer lock poisoned by a panic")
    }

    /// Opens the WAL in `dir`, calling `visit` for every valid record in log order, and cuts a torn
    /// tail off the last segment. Corruption anywhere else is an error naming file and offset.
    pub fn open(
        dir: &Path,
        config: WalConfig,
        mut visit: impl FnMut(RecordLocation, Record) -> Result<()>,
    ) -> Result<(Wal, RecoveryReport)> {
        config.validate()?;
        let lock = lock_dir(dir)?;
        let (sequences, temps) = segment::list_dir(dir)?;
        let mut report = RecoveryReport::default();
        for temp in temps {
            fs::remove_file(&temp).map_err(|e| WalError::io("removing temp file", &temp, e))?;
            report.removed_temp_files.push(temp);
        }
        let Some(&last_sequence) = sequences.last() else {
            return Err(WalError::NotFound { dir: dir.into() });
        };
        for pair in sequences.windows(2) {
            if pair[0] + 1 != pair[1] {
                return Err(WalError::Inconsistent {
                    dir: dir.into(),
                    reason: format!(
                        "segment {} is missing (found {} then {})",
                        pair[0] + 1,
                        pair[0],
                        pair[1]
                    ),
                });
            }
        }
        let mut segments = BTreeMap::new();
        let mut write_offset = 0;
        let mut last_hard_state = None;
        let mut last_marker = None;
        for &sequence in &sequences {
            let is_last = sequence == last_sequence;
            let (info, valid_end) =
                Self::recover_segment(dir, &config, sequence, is_last, &mut report, |loc, record| {
                    match &record {
                        Record::HardState(hs) => last_hard_state = Some(*hs),
                        Record::SnapshotMarker(marker) => last_marker = Some(*marker),
                        Record::Entry(_) => {}
                    }
                    visit(loc, record)
                })?;
            segments.insert(sequence, info);
            write_offset = valid_end;
        }
        report.segments_scanned = segments.len();
        let wal = Self::assemble(dir, config, lock, segments, write_offset);
        {
            let mut writer = wal.lock_writer();
            writer.last_hard_state = last_hard_state;
            writer.last_marker = last_marker;
        }
        Ok((wal, report))
    }

    fn recover_segment(
        dir: &Path,
        config: &WalConfig,
        sequence: u64,
        is_last: bool,
        report: &mut RecoveryReport,
        mut visit: impl FnMut(RecordLocation, Record) -> Result<()>,
    ) -> Result<(SegmentInfo, u64)> {
        let path = segment::segment_path(dir, sequence);
        let file = segment::open_segment(&path)?;
        let bytes = fs::read(&path).map_err(|e| WalError::io("reading segment", &path, e))?;
        let header_sequence = decode_segment_header(&bytes).map_err(|reason| match reason {
            DecodeError::BadVersion(version) => WalError::UnsupportedVersion {
                path: path.clone(),
                version,
            },
            reason => WalError::CorruptHeader {
                path: path.clone(),
                reason,
            },
        })?;
        if header_sequence != sequence {
            return Err(WalError::Inconsistent {
                dir: dir.into(),
                reason: format!("{} has sequence {header_sequence} in its header", path.display()),
            });
        }
        let scan = scan_segment(&bytes, is_last);
        let mut capacity_bytes = bytes.len() as u64;
        let valid_end = match scan.end {
            ScanEnd::Clean { valid_end } => valid_end,
            ScanEnd::Corrupt { offset, reason } => {
                return Err(WalError::CorruptRecord { path, offset, reason });
            }
            ScanEnd::Torn {
                valid_end,
                garbage_end,
                reason,
            } => {
                capacity_bytes = segment::zero_tail(&file, &path, valid_end, config.segment_bytes)?;
                report.torn_tail = Some(TornTail {
                    path: path.clone(),
                    offset: valid_end,
                    discarded_bytes: garbage_end - valid_end,
                    reason,
                });
                valid_end
            }
        };
        let mut max_entry_index = None;
        for scanned in scan.records {
            if let Record::Entry(entry) = &scanned.record {
                max_entry_index = Some(max_entry_index.unwrap_or(0).max(entry.index));
            }
            let location = RecordLocation {
                segment: sequence,
                offset: scanned.offset,
                frame_len: scanned.frame_len,
            };
            report.records_replayed += 1;
            visit(location, scanned.record)?;
        }
        let info = SegmentInfo {
            path,
            file: Arc::new(file),
            capacity_bytes,
            max_entry_index,
        };
        Ok((info, valid_end))
    }

    /// Writes `records` in order (not yet durable), all or nothing: several records go out as one
    /// batch in one segment, and recovery keeps a batch whole or drops it. Returns each record's
    /// location and the position to pass to `sync_to` to make all of them durable.
    pub fn append(&self, records: &[Record]) -> Result<(Vec<RecordLocation>, u64)> {
        let batch = self.check_sizes(records)?;
        let frames_bytes = match (batch, records.first()) {
            (Some(header), _) => BATCH_HEADER_FRAME_BYTES as u64 + header.bytes,
            (None, Some(record)) => encoded_len(record) as u64,
            (None, None) => 0,
        };
        let mut writer = self.lock_writer();
        self.poison.check()?;
        let position_before = writer.written_position;
        writer.buffer.clear();
        if records.is_empty() {
            return Ok((Vec::new(), position_before));
        }
        let (_, active) = writer.active();
        if writer.write_offset + frames_bytes > active.capacity_bytes {
            self.roll(&mut writer, frames_bytes)?;
        }
        if let Some(header) = batch {
            encode_batch_header(header, &mut writer.buffer);
        }
        let (segment, _) = writer.active();
        let mut locations = Vec::with_capacity(records.len());
        for record in records {
            let offset = writer.write_offset + writer.buffer.len() as u64;
            let before = writer.buffer.len();
            encode_record(record, &mut writer.buffer);
            locations.push(RecordLocation {
                segment,
                offset,
                frame_len: (writer.buffer.len() - before) as u32,
            });
            writer.note(record);
        }
        // One write: a batch lands in one segment, after the head records of a fresh one.
        self.flush(&mut writer)?;
        let appended = writer.written_position - position_before;
        assert!(
            appended >= frames_bytes,
            "{appended} bytes written for {frames_bytes}"
        );
        self.metrics.record_append(appended);
        Ok((locations, writer.written_position))
    }

    /// Refuses a record above `max_record_bytes` or a batch above `max_batch_bytes`, before anything is
    /// written; returns the batch header the append needs, if any.
    fn check_sizes(&self, records: &[Record]) -> Result<Option<BatchHeader>> {
        for record in records {
            let bytes = encoded_len(record);
            if bytes > self.config.max_record_bytes {
                return Err(WalError::RecordTooLarge {
                    bytes,
                    limit: self.config.max_record_bytes,
                });
            }
        }
        if records.len() >= 2 {
            let bytes = batch_bytes(records);
            if bytes > self.config.max_batch_bytes {
                return Err(WalError::BatchTooLarge {
                    records: records.len(),
                    bytes,
                    limit: self.config.max_batch_bytes,
                });
            }
        }
        Ok(BatchHeader::for_records(records))
    }

    /// Writes the buffer at the write offset of the active segment. A failed write poisons the WAL:
    /// the file may hold part of it, and nothing after it could be trusted.
    fn flush(&self, writer: &mut Writer) -> Result<()> {
        if writer.buffer.is_empty() {
            return Ok(());
        }
        let end = writer.write_offset + writer.buffer.len() as u64;
        let (_, active) = writer.active();
        assert!(
            end <= active.capacity_bytes,
            "write to {end} overruns the segment of {} bytes",
            active.capacity_bytes
        );
        let result = active.file.write_all_at(&writer.buffer, writer.write_offset);
        if let Err(source) = result {
            let error = WalError::io("writing", active.path.clone(), source);
            return Err(self.poison.poison(&error));
        }
        let written = writer.buffer.len() as u64;
        writer.write_offset = end;
        writer.written_position += written;
        writer.buffer.clear();
        Ok(())
    }

    /// Seals the active segment (fsynced, so only the last segment can ever have a torn tail) and
    /// starts the next one with the current hard state and snapshot marker, with room for at least
    /// `frames_bytes` more (a batch never straddles segments).
    fn roll(&self, writer: &mut Writer, frames_bytes: u64) -> Result<()> {
        assert!(writer.buffer.is_empty(), "roll with unwritten bytes");
        let covered = writer.written_position;
        let (sequence, active) = writer.active();
        let file = Arc::clone(&active.file);
        let path = active.path.clone();
        self.fsync(&file, &path, covered)?;
        self.group.mark_durable(covered);
        let next = sequence + 1;
        let fitting_bytes = SEGMENT_HEADER_BYTES as u64 + SEGMENT_HEAD_RECORDS_BYTES + frames_bytes;
        let capacity_bytes = self.config.segment_bytes.max(fitting_bytes);
        let (file, path) = segment::create_segment(&self.dir, next, capacity_bytes)
            .map_err(|error| self.poison.poison(&error))?;
        writer.segments.insert(
            next,
            SegmentInfo {
                path,
                file: Arc::new(file),
                capacity_bytes,
                max_entry_index: None,
            },
        );
        writer.write_offset = SEGMENT_HEADER_BYTES as u64;
        let head: Vec<Record> = [
            writer.last_hard_state.map(Record::HardState),
            writer.last_marker.map(|marker| {
                Record::SnapshotMarker(SnapshotMarker {
                    discard_suffix: false,
                    ..marker
                })
            }),
        ]
        .into_iter()
        .flatten()
        .collect();
        for record in &head {
            encode_record(record, &mut writer.buffer);
        }
        assert!(writer.buffer.len() as u64 <= SEGMENT_HEAD_RECORDS_BYTES);
        Ok(())
    }

    /// One fdatasync, counted; a failure poisons the WAL for good.
    fn fsync(&self, file: &File, path: &Path, covered_position: u64) -> Result<u64> {
        self.poison.check()?;
        let started = Instant::now();
        let injected = self
            .config
            .sync_faults
            .as_ref()
            .is_some_and(|faults| faults.fail_next.load(std::sync::atomic::Ordering::SeqCst));
        let result = if injected {
            Err(std::io::Error::other("injected fsync failure"))
        } else {
            file.sync_data()
        };
        if let Err(source) = result {
            return Err(self.poison.poison(&WalError::io("fdatasync", path, source)));
        }
        let durable_before = self.group.durable_position();
        let covered = covered_position.saturating_sub(durable_before);
        self.metrics
            .record_fsync(covered, started.elapsed().as_nanos() as u64);
        Ok(covered_position)
    }

    /// Makes every record appended so far durable, sharing the fsync with concurrent callers.
    pub fn sync(&self) -> Result<()> {
        let target = self.lock_writer().written_position;
        self.sync_to(target)
    }

    /// Returns once every byte below `position` (as returned by `append`) is durable.
    pub fn sync_to(&self, position: u64) -> Result<()> {
        self.group.wait_durable(position, &self.poison, || {
            let (file, path, covered) = {
                let writer = self.lock_writer();
                let (_, active) = writer.active();
                (
                    Arc::clone(&active.file),
                    active.path.clone(),
                    writer.written_position,
                )
            };
            // Bytes in earlier segments were fsynced when their segment was sealed.
            self.fsync(&file, &path, covered)
        })
    }

    /// Appends (all or nothing, as `append`) and waits for durability: the usual way a writer commits.
    pub fn append_sync(&self, records: &[Record]) -> Result<Vec<RecordLocation>> {
        let (locations, position) = self.append(records)?;
        self.sync_to(position)?;
        Ok(locations)
    }

    /// Deletes the oldest segments whose entries are all at or below `index` (a durable snapshot's
    /// index). Stops at the first segment that must stay: releasing only a prefix keeps replay of
    /// what remains exact. The active segment is never released. Returns how many were deleted.
    pub fn release_through(&self, index: LogIndex) -> Result<usize> {
        self.poison.check()?;
        let mut writer = self.lock_writer();
        let (active, _) = writer.active();
        let mut released = Vec::new();
        for (&sequence, info) in &writer.segments {
            if sequence == active || info.max_entry_index.is_some_and(|max| max > index) {
                break;
            }
            released.push(sequence);
        }
        for sequence in &released {
            let info = writer.segments.remove(sequence).expect("listed above");
            fs::remove_file(&info.path)
                .map_err(|e| WalError::io("removing released segment", &info.path, e))?;
        }
        assert!(
            !writer.segments.is_empty(),
            "the active segment is never released"
        );
        if !released.is_empty() {
            segment::sync_dir(&self.dir)?;
        }
        Ok(released.len())
    }

    /// Reads back the record at `location`, verifying its checksum.
    pub fn read(&self, location: RecordLocation) -> Result<Record> {
        let (file, path) = {
            let writer = self.lock_writer();
            let info = writer
                .segments
                .get(&location.segment)
                .ok_or_else(|| WalError::Inconsistent {
                    dir: self.dir.clone(),
                    reason: format!(
                        "segment {} was released but a record in it was requested",
                        location.segment
                    ),
                })?;
            (Arc::clone(&info.file), info.path.clone())
        };
        let mut frame = vec![0u8; location.frame_len as usize];
        file.read_exact_at(&mut frame, location.offset)
            .map_err(|e| WalError::io("reading record", &path, e))?;
        let decoded = decode_record(&frame).map_err(|reason| WalError::CorruptRecord {
            path: path.clone(),
            offset: location.offset,
            reason,
        })?;
        assert_eq!(
            decoded.frame_len,
            frame.len(),
            "record at {location:?} changed length"
        );
        Ok(decoded.record)
    }

    /// Segment sequence numbers currently on disk, oldest first.
    pub fn segment_sequences(&self) -> Vec<u64> {
        self.lock_writer().segments.keys().copied().collect()
    }

    pub fn segment_path(&self, sequence: u64) -> PathBuf {
        segment::segment_path(&self.dir, sequence)
    }
}

#[cfg(test)]
#[path = "wal_tests.rs"]
mod tests;
