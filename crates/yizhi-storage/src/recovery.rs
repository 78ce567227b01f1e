//! Deciding, for one segment's bytes, which records are valid and whether what follows them is a torn
//! tail (safe to cut) or corruption (must stop recovery). A pure function, so that it can be fuzzed.
//!
//! A batch (a batch header and the records of one append) is kept whole or not at all: damage in it
//! ends the valid log at its header, never between its records.

use std::path::PathBuf;

use crate::codec::{
    BatchHeader, DecodeError, DecodedFrame, Frame, Record, SEGMENT_HEADER_BYTES, decode_frame,
};

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
    /// The last segment ends in a partial or damaged record or batch followed by nothing valid: a
    /// write that a crash interrupted. Everything from `valid_end` on may be discarded.
    Torn {
        valid_end: u64,
        garbage_end: u64,
        reason: DecodeError,
    },
    /// Damage with valid records after it, any damage in a segment that is not the last one, or valid
    /// frames that contradict each other (no crash writes those). `offset` is the damaged frame's.
    Corrupt { offset: u64, reason: DecodeError },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentScan {
    pub records: Vec<ScannedRecord>,
    pub end: ScanEnd,
}

/// Where and why the valid frames of a segment stop.
#[derive(Debug)]
struct Stop {
    /// Where the kept log ends: the damaged frame, or the header of the batch it belongs to.
    valid_end: usize,
    /// The damaged frame itself, reported as the corruption's offset.
    damage: usize,
    /// A valid frame from here on proves the damage is not the end of an interrupted write.
    search_from: usize,
    reason: DecodeError,
    /// False when checksummed frames contradict each other: a crash cannot produce that.
    tearable: bool,
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
        let stop = match decode_frame(&bytes[offset..]) {
            Ok(DecodedFrame {
                frame: Frame::Record(record),
                frame_len,
            }) => {
                records.push(ScannedRecord {
                    offset: offset as u64,
                    frame_len: frame_len as u32,
                    record,
                });
                offset += frame_len;
                continue;
            }
            Ok(DecodedFrame {
                frame: Frame::BatchHeader(header),
                frame_len,
            }) => match scan_batch(bytes, offset, frame_len, header) {
                Ok((members, end)) => {
                    records.extend(members);
                    offset = end;
                    continue;
                }
                Err(stop) => stop,
            },
            Err(reason) => Stop {
                valid_end: offset,
                damage: offset,
                search_from: offset + 1,
                reason,
                tearable: true,
            },
        };
        let end = classify_stop(bytes, stop, is_last);
        return SegmentScan { records, end };
    }
}

/// The records of the batch whose header (`header_len` bytes) is at `header_offset`, and the offset
/// just past them; or where the batch stops being valid.
fn scan_batch(
    bytes: &[u8],
    header_offset: usize,
    header_len: usize,
    header: BatchHeader,
) -> Result<(Vec<ScannedRecord>, usize), Stop> {
    let first = header_offset + header_len;
    // The extent the header vouches for (its checksum is valid); it may run past a truncated file.
    let extent_end = first.saturating_add(header.bytes as usize);
    let contradiction = |damage: usize, what: &'static str| Stop {
        valid_end: header_offset,
        damage,
        search_from: damage + 1,
        reason: DecodeError::BadBatch(what),
        tearable: false,
    };
    // Not sized from the header: only records that really decode take memory.
    let mut members = Vec::new();
    let mut offset = first;
    for _ in 0..header.records {
        if offset >= extent_end {
            return Err(contradiction(
                header_offset,
                "its records fill its byte count before its record count",
            ));
        }
        match decode_frame(&bytes[offset..]) {
            Ok(DecodedFrame {
                frame: Frame::Record(record),
                frame_len,
            }) => {
                if offset + frame_len > extent_end {
                    return Err(contradiction(offset, "a record runs past the batch's byte count"));
                }
                members.push(ScannedRecord {
                    offset: offset as u64,
                    frame_len: frame_len as u32,
                    record,
                });
                offset += frame_len;
            }
            Ok(DecodedFrame {
                frame: Frame::BatchHeader(_),
                ..
            }) => return Err(contradiction(offset, "a batch header inside a batch")),
            // A real disk may persist the pages of one write in any order, so valid records later in
            // the same batch do not prove that this damage is more than an interrupted write.
            Err(reason) => {
                return Err(Stop {
                    valid_end: header_offset,
                    damage: offset,
                    search_from: extent_end.max(offset + 1),
                    reason,
                    tearable: true,
                });
            }
        }
    }
    if offset != extent_end {
        return Err(contradiction(
            header_offset,
            "its records end before its byte count",
        ));
    }
    Ok((members, offset))
}

fn classify_stop(bytes: &[u8], stop: Stop, is_last: bool) -> ScanEnd {
    let garbage_end = bytes.iter().rposition(|b| *b != 0).map_or(0, |last| last + 1);
    if garbage_end <= stop.valid_end {
        return ScanEnd::Clean {
            valid_end: stop.valid_end as u64,
        };
    }
    // A valid frame after the damage proves the damage is not the end of an interrupted write.
    if !is_last || !stop.tearable || find_frame_in(bytes, stop.search_from, garbage_end) {
        return ScanEnd::Corrupt {
            offset: stop.damage as u64,
            reason: stop.reason,
        };
    }
    ScanEnd::Torn {
        valid_end: stop.valid_end as u64,
        garbage_end: garbage_end as u64,
        reason: stop.reason,
    }
}

/// True if a frame with a valid checksum starts anywhere in `from..until`. The length and type checks
/// reject almost every offset before any checksum is computed.
fn find_frame_in(bytes: &[u8], from: usize, until: usize) -> bool {
    (from..until).any(|start| decode_frame(&bytes[start..]).is_ok())
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
    use crate::codec::{BATCH_HEADER_FRAME_BYTES, encode_batch_header, encode_record, encode_segment_header};
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

    /// Two single hard-state records, then a batch of `members` hard states: returns the segment
    /// (no zeros after it) and the batch header's offset.
    fn segment_with_batch(members: u64) -> (Vec<u8>, usize) {
        let (mut bytes, _) = segment_with(2, 0);
        let records: Vec<Record> = (10..10 + members)
            .map(|term| {
                // Non-zero last bytes, so that zeroing a record's tail always damages it.
                Record::HardState(HardState {
                    term,
                    vote: None,
                    commit: u64::MAX - term,
                })
            })
            .collect();
        let header_offset = bytes.len();
        let header = BatchHeader::for_records(&records).expect("a batch");
        encode_batch_header(header, &mut bytes);
        for record in &records {
            encode_record(record, &mut bytes);
        }
        (bytes, header_offset)
    }

    #[test]
    fn a_whole_batch_is_read_back_in_order() {
        let (mut bytes, _) = segment_with_batch(4);
        let end = bytes.len() as u64;
        bytes.resize(bytes.len() + 64, 0);
        let scan = scan_segment(&bytes, false);
        assert_eq!(scan.end, ScanEnd::Clean { valid_end: end });
        let terms: Vec<u64> = scan
            .records
            .iter()
            .map(|r| match r.record {
                Record::HardState(hs) => hs.term,
                _ => panic!("only hard states were written"),
            })
            .collect();
        assert_eq!(terms, [1, 2, 10, 11, 12, 13]);
    }

    /// A crash that stopped the batch's write at any byte (the file cut there, or the rest never
    /// written and still zeros) keeps none of the batch; only the complete batch is kept.
    #[test]
    fn a_batch_cut_at_any_byte_keeps_none_or_all_of_it() {
        let (full, header_offset) = segment_with_batch(4);
        for cut in header_offset..=full.len() {
            let mut zero_filled = full.clone();
            zero_filled[cut..].fill(0);
            zero_filled.resize(full.len() + 64, 0);
            for bytes in [&full[..cut], &zero_filled[..]] {
                let scan = scan_segment(bytes, true);
                if cut == full.len() {
                    assert_eq!(scan.records.len(), 6, "cut at the batch's end");
                    assert_eq!(
                        scan.end,
                        ScanEnd::Clean {
                            valid_end: cut as u64
                        }
                    );
                    continue;
                }
                assert_eq!(
                    scan.records.len(),
                    2,
                    "cut at {cut}: a part of the batch survived"
                );
                let expected_end = header_offset as u64;
                match scan.end {
                    ScanEnd::Torn { valid_end, .. } => assert_eq!(valid_end, expected_end, "cut at {cut}"),
                    ScanEnd::Clean { valid_end } => {
                        assert_eq!((cut, valid_end), (header_offset, expected_end));
                    }
                    ScanEnd::Corrupt { .. } => panic!("cut at {cut}: {:?}", scan.end),
                }
                // The same bytes in an older segment were once durable: corruption, not a tail.
                if cut > header_offset {
                    assert!(matches!(scan_segment(bytes, false).end, ScanEnd::Corrupt { .. }));
                }
            }
        }
    }

    #[test]
    fn damage_inside_the_final_batch_drops_it_whole_even_with_later_members_intact() {
        // A disk may persist the pages of one write in any order.
        let (mut bytes, header_offset) = segment_with_batch(4);
        let second_member = header_offset + BATCH_HEADER_FRAME_BYTES + 33;
        bytes[second_member..second_member + 33].fill(0);
        let scan = scan_segment(&bytes, true);
        assert_eq!(scan.records.len(), 2);
        assert!(
            matches!(scan.end, ScanEnd::Torn { valid_end, .. } if valid_end == header_offset as u64),
            "{:?}",
            scan.end
        );
        // With a valid frame after the batch, the same damage is corruption, reported where it is.
        let (mut bytes, header_offset) = segment_with_batch(4);
        let second_member = header_offset + BATCH_HEADER_FRAME_BYTES + 33;
        bytes[second_member + 20] ^= 0x40;
        let hs = HardState {
            term: 99,
            vote: None,
            commit: 0,
        };
        encode_record(&Record::HardState(hs), &mut bytes);
        let scan = scan_segment(&bytes, true);
        assert!(
            matches!(scan.end, ScanEnd::Corrupt { offset, reason: DecodeError::CrcMismatch { .. } }
                if offset == second_member as u64),
            "{:?}",
            scan.end
        );
    }

    #[test]
    fn a_damaged_batch_header_before_valid_records_is_corruption() {
        let (mut bytes, header_offset) = segment_with_batch(3);
        bytes[header_offset + 10] ^= 1;
        let scan = scan_segment(&bytes, true);
        assert!(
            matches!(scan.end, ScanEnd::Corrupt { offset, .. } if offset == header_offset as u64),
            "{:?}",
            scan.end
        );
    }

    /// Checksummed frames that disagree with their header come from a bug or a forgery, never from a
    /// crash: corruption even at the very end of the last segment.
    #[test]
    fn a_header_that_contradicts_its_records_is_corruption_even_at_the_tail() {
        let records: Vec<Record> = (1..=3)
            .map(|term| {
                Record::HardState(HardState {
                    term,
                    ..HardState::default()
                })
            })
            .collect();
        let real = BatchHeader::for_records(&records).expect("a batch");
        let lies = [
            (BatchHeader { records: 4, ..real }, "record count"),
            (BatchHeader { records: 2, ..real }, "byte count too large"),
            (
                BatchHeader {
                    bytes: real.bytes - 33,
                    ..real
                },
                "byte count too small",
            ),
            (
                BatchHeader {
                    bytes: real.bytes + 5,
                    ..real
                },
                "byte count not at a frame boundary",
            ),
        ];
        for (header, what) in lies {
            let mut bytes = encode_segment_header(1).to_vec();
            let header_offset = bytes.len();
            encode_batch_header(header, &mut bytes);
            for record in &records {
                encode_record(record, &mut bytes);
            }
            bytes.resize(bytes.len() + 40, 0);
            let scan = scan_segment(&bytes, true);
            assert!(scan.records.is_empty(), "{what}");
            assert!(
                matches!(scan.end, ScanEnd::Corrupt {
                    reason: DecodeError::BadBatch(_) | DecodeError::BadBatchHeader(_),
                    offset,
                } if offset >= header_offset as u64),
                "{what}: {:?}",
                scan.end
            );
        }
        // A batch header where a member belongs.
        let mut bytes = encode_segment_header(1).to_vec();
        encode_batch_header(real, &mut bytes);
        encode_batch_header(real, &mut bytes);
        bytes.resize(bytes.len() + 200, 0);
        assert!(matches!(
            scan_segment(&bytes, true).end,
            ScanEnd::Corrupt {
                reason: DecodeError::BadBatch(_),
                ..
            }
        ));
    }

    #[test]
    fn scanning_damaged_segments_never_panics_nor_invents_records() {
        let mut rng = yizhi_engine::SeededRng::new(11);
        let (pristine, _) = segment_with_batch(5);
        for _ in 0..3000 {
            let mut bytes = pristine.clone();
            for _ in 0..rng.range_inclusive(1, 3) {
                let at = rng.range_inclusive(SEGMENT_HEADER_BYTES as u64, bytes.len() as u64 - 1) as usize;
                bytes[at] = rng.next_u64() as u8;
            }
            let cut = rng.range_inclusive(SEGMENT_HEADER_BYTES as u64, bytes.len() as u64) as usize;
            let scan = scan_segment(&bytes[..cut], rng.chance(1, 2));
            let good = scan_segment(&pristine, true).records;
            // Whatever survives is a prefix of what was written: by record, and all of the batch or none.
            assert!(scan.records.len() <= good.len());
            assert_eq!(scan.records[..], good[..scan.records.len()]);
            assert!(matches!(scan.records.len(), 0..=2 | 7));
        }
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
