//! Deciding, for one segment's bytes, which records are valid and whether what follows them is a torn
//! tail (safe to cut) or corruption (must stop recovery). A pure function, so that it can be fuzzed.

use std::path::PathBuf;

use crate::codec::{DecodeError, Record, SEGMENT_HEADER_BYTES, decode_record};

/// A record found in a segment, with the byte offset of its frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScannedRecord {
    pub offset: u64,
    pub frame_len: u32,
    pub record: Record,
}

/// How the valid records of a segment end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanEnd {
    /// Only zeros follow `valid_end`: the never-written, preallocated rest of the segment.
    Clean { valid_end: u64 },
    /// The last segment ends in a partial or damaged record followed by nothing valid: a write that a
    /// crash interrupted. Everything from `valid_end` on may be discarded.
    Torn {
        valid_end: u64,
        garbage_end: u64,
        reason: DecodeError,
    },
    /// Damage with valid records after it, or any damage in a segment that is not the last one.
    Corrupt { offset: u64, reason: DecodeError },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentScan {
    pub records: Vec<ScannedRecord>,
    pub end: ScanEnd,
}

/// Scans the records of a whole segment file (`bytes` includes the header, already checked).
///
/// Only the last segment may have a torn tail: a segment is fsynced before the next one is created,
/// so damage in an earlier one happened to bytes that were once durable.
pub fn scan_segment(bytes: &[u8], is_last: bool) -> SegmentScan {
    assert!(
        bytes.len() >= SEGMENT_HEADER_BYTES,
        "segment of {} bytes has no header",
        bytes.len()
    );
    let mut records = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES;
    loop {
        let reason = match decode_record(&bytes[offset..]) {
            Ok(decoded) => {
                records.push(ScannedRecord {
                    offset: offset as u64,
                    frame_len: decoded.frame_len as u32,
                    record: decoded.record,
                });
                offset += decoded.frame_len;
                continue;
            }
            Err(reason) => reason,
        };
        let end = classify_stop(bytes, offset, reason, is_last);
        return SegmentScan { records, end };
    }
}

fn classify_stop(bytes: &[u8], offset: usize, reason: DecodeError, is_last: bool) -> ScanEnd {
    let garbage_end = bytes.iter().rposition(|b| *b != 0).map_or(0, |last| last + 1);
    if garbage_end <= offset {
        return ScanEnd::Clean {
            valid_end: offset as u64,
        };
    }
    // A valid record after the damage proves the damage is not the end of an interrupted write.
    if !is_last || find_record_after(bytes, offset + 1, garbage_end) {
        return ScanEnd::Corrupt {
            offset: offset as u64,
            reason,
        };
    }
    ScanEnd::Torn {
        valid_end: offset as u64,
        garbage_end: garbage_end as u64,
        reason,
    }
}

/// True if a record with a valid checksum starts anywhere in `from..until`. The length and type checks
/// reject almost every offset before any checksum is computed.
fn find_record_after(bytes: &[u8], from: usize, until: usize) -> bool {
    (from..until).any(|start| decode_record(&bytes[start..]).is_ok())
}

/// What recovery found and did, for the operator's log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments_scanned: usize,
    pub records_replayed: u64,
    /// The torn tail cut from the last segment, if any.
    pub torn_tail: Option<TornTail>,
    /// Leftovers of interrupted segment or snapshot creation, removed.
    pub removed_temp_files: Vec<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub path: PathBuf,
    pub offset: u64,
    pub discarded_bytes: u64,
    pub reason: DecodeError,
}

impl RecoveryReport {
    /// Human-readable warnings; empty after a clean shutdown.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if let Some(torn) = &self.torn_tail {
            warnings.push(format!(
                "torn tail in {} at byte offset {}: {} ({} bytes discarded)",
                torn.path.display(),
                torn.offset,
                torn.reason,
                torn.discarded_bytes
            ));
        }
        for path in &self.removed_temp_files {
            warnings.push(format!("removed leftover temp file {}", path.display()));
        }
        warnings
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{encode_record, encode_segment_header};
    use yizhi_engine::HardState;

    fn segment_with(count: u64, tail_zeros: usize) -> (Vec<u8>, Vec<usize>) {
        let mut bytes = encode_segment_header(1).to_vec();
        let mut offsets = Vec::new();
        for term in 1..=count {
            offsets.push(bytes.len());
            let hs = HardState {
                term,
                vote: Some(1),
                commit: term,
            };
            encode_record(&Record::HardState(hs), &mut bytes);
        }
        bytes.resize(bytes.len() + tail_zeros, 0);
        (bytes, offsets)
    }

    #[test]
    fn clean_segment_ends_at_the_zeros() {
        let (bytes, offsets) = segment_with(3, 100);
        let scan = scan_segment(&bytes, false);
        assert_eq!(scan.records.len(), 3);
        assert_eq!(
            scan.end,
            ScanEnd::Clean {
                valid_end: (bytes.len() - 100) as u64
            }
        );
        assert_eq!(scan.records[1].offset, offsets[1] as u64);
    }

    #[test]
    fn damaged_last_record_is_torn_only_in_the_last_segment() {
        let (mut bytes, offsets) = segment_with(3, 100);
        bytes[offsets[2] + 12] ^= 0xff;
        let scan = scan_segment(&bytes, true);
        assert_eq!(scan.records.len(), 2);
        assert!(matches!(scan.end, ScanEnd::Torn { valid_end, .. } if valid_end == offsets[2] as u64));
        let scan = scan_segment(&bytes, false);
        assert!(matches!(scan.end, ScanEnd::Corrupt { offset, .. } if offset == offsets[2] as u64));
    }

    #[test]
    fn damage_followed_by_a_valid_record_is_corruption() {
        let (mut bytes, offsets) = segment_with(3, 100);
        bytes[offsets[1] + 12] ^= 0xff;
        let scan = scan_segment(&bytes, true);
        assert!(matches!(scan.end, ScanEnd::Corrupt { offset, .. } if offset == offsets[1] as u64));
        // A zeroed length field must not silently end the log early either.
        let (mut bytes, offsets) = segment_with(3, 100);
        bytes[offsets[1]..offsets[1] + 9].fill(0);
        let scan = scan_segment(&bytes, true);
        assert_eq!(
            scan.end,
            ScanEnd::Corrupt {
                offset: offsets[1] as u64,
                reason: DecodeError::EndOfRecords
            }
        );
    }

    #[test]
    fn incomplete_final_record_is_torn() {
        let (bytes, offsets) = segment_with(3, 0);
        let cut = &bytes[..offsets[2] + 5];
        let scan = scan_segment(cut, true);
        assert!(matches!(
            scan.end,
            ScanEnd::Torn { valid_end, reason: DecodeError::Truncated { .. }, .. } if valid_end == offsets[2] as u64
        ));
    }
}
