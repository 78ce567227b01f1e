//! The binary encoding of WAL records and segment headers.
//!
//! Decoding is a pure function over a byte slice so that it can be fuzzed: it never panics, never
//! allocates more than the input justifies, and names what is wrong with malformed input.

use std::collections::BTreeSet;

use bytes::Bytes;
// Entry payload kinds are numbered once, for the message codec and this one alike.
use yizhi_engine::wire::{PAYLOAD_MEMBERSHIP, PAYLOAD_NOOP, PAYLOAD_NORMAL, put_u32_le, put_u64_le};
use yizhi_engine::{Entry, EntryPayload, HardState, LogIndex, Membership, NodeId, Term};

/// Bytes before every record body: `len: u32`, `crc32c: u32`, `type: u8`.
pub const FRAME_HEADER_BYTES: usize = 9;
/// Largest record body accepted by the encoder and the decoder. A larger length field is corruption.
pub const MAX_RECORD_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Largest whole record (frame header included).
pub const MAX_RECORD_BYTES: usize = FRAME_HEADER_BYTES + MAX_RECORD_BODY_BYTES;
/// Members per set (voters, outgoing voters, learners) a membership record may carry.
pub const MAX_MEMBERSHIP_NODES: usize = 1024;

/// Entry body without payload: `index u64 | term u64 | kind u8`.
const ENTRY_FIXED_BYTES: usize = 17;
/// `term u64 | vote u64 (0 = none) | commit u64`.
const HARD_STATE_BYTES: usize = 24;
/// `index u64 | term u64 | discard_suffix u8`.
const SNAPSHOT_MARKER_BYTES: usize = 17;

/// The smallest record frame: a noop entry or a snapshot marker.
pub const MIN_RECORD_FRAME_BYTES: usize = FRAME_HEADER_BYTES + ENTRY_FIXED_BYTES;
/// Largest batch (the records after a batch header, frames included) the encoder writes and the
/// decoder accepts. A batch never straddles segments, so a batch larger than a segment gets a
/// segment of its own, sized to fit; this bounds that segment.
pub const MAX_BATCH_BYTES: u64 = 1024 * 1024 * 1024;
/// `count u32 | bytes u64`.
const BATCH_HEADER_BODY_BYTES: usize = 12;
/// A whole batch header frame.
pub const BATCH_HEADER_FRAME_BYTES: usize = FRAME_HEADER_BYTES + BATCH_HEADER_BODY_BYTES;

/// Every segment file starts with these bytes.
pub const SEGMENT_MAGIC: [u8; 8] = *b"YIZHIWAL";
/// Version 2 added batch headers (one `Wal::append` of several records is all-or-nothing).
/// Version 1 segments are refused: nothing was ever deployed with them.
pub const SEGMENT_VERSION: u32 = 2;
/// `magic[8] | version u32 | reserved u32 | sequence u64 | crc32c u32 | reserved u32`.
pub const SEGMENT_HEADER_BYTES: usize = 32;

const TYPE_ENTRY: u8 = 1;
const TYPE_HARD_STATE: u8 = 2;
const TYPE_SNAPSHOT_MARKER: u8 = 3;
const TYPE_BATCH_HEADER: u8 = 4;

/// "Entries up to `index` are covered by the snapshot file for (`index`, `term`)".
///
/// `discard_suffix` is true when installing the snapshot also dropped every entry after it (the
/// local log disagreed with the leader's snapshot). Recording the decision instead of recomputing it
/// keeps replay exact even after the segment holding the entry at `index` was released.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMarker {
    pub index: LogIndex,
    pub term: Term,
    pub discard_suffix: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Entry(Entry),
    HardState(HardState),
    SnapshotMarker(SnapshotMarker),
}

/// "The next `records` frames, `bytes` long in all, were written by one append: keep all or none."
///
/// Written before the records of an append of two or more; a single record needs no header, its
/// own checksum already makes it all-or-nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub records: u32,
    pub bytes: u64,
}

impl BatchHeader {
    /// The header an append of `records` needs, or `None` for a single record (or none). Panics
    /// beyond `MAX_BATCH_BYTES`: callers check `batch_bytes` first and turn that into an error.
    pub fn for_records(records: &[Record]) -> Option<BatchHeader> {
        if records.len() < 2 {
            return None;
        }
        let bytes = batch_bytes(records);
        assert!(bytes <= MAX_BATCH_BYTES, "batch of {bytes} bytes");
        let count = u32::try_from(records.len()).expect("a batch within MAX_BATCH_BYTES has few records");
        Some(BatchHeader {
            records: count,
            bytes,
        })
    }
}

/// The bytes the frames of `records` take, batch header excluded.
pub fn batch_bytes(records: &[Record]) -> u64 {
    records.iter().map(|record| encoded_len(record) as u64).sum()
}

/// Anything that can start at a frame boundary of a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Record(Record),
    BatchHeader(BatchHeader),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record frame needs {needed} bytes but only {available} remain")]
    Truncated { needed: usize, available: usize },
    #[error("zero length field: no record here (end of the written log)")]
    EndOfRecords,
    #[error("record body length {len} is outside 1..={MAX_RECORD_BODY_BYTES}")]
    BadLength { len: usize },
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("unknown record type {0}")]
    UnknownType(u8),
    #[error("unknown entry payload kind {0}")]
    UnknownPayloadKind(u8),
    #[error("{what} body has {actual} bytes, expected {expected}")]
    BodyLength {
        what: &'static str,
        expected: usize,
        actual: usize,
    },
    #[error("membership: {0}")]
    BadMembership(&'static str),
    #[error("snapshot marker discard flag is {0}, expected 0 or 1")]
    BadFlag(u8),
    #[error("entry index 0 is not a valid log position")]
    ZeroIndex,
    #[error("bad segment magic {0:02x?}")]
    BadMagic([u8; 8]),
    #[error("unsupported segment version {0} (this build reads version {SEGMENT_VERSION})")]
    BadVersion(u32),
    #[error("batch header: {0}")]
    BadBatchHeader(&'static str),
    #[error("a batch header where a record was expected")]
    UnexpectedBatchHeader,
    #[error("batch: {0}")]
    BadBatch(&'static str),
}

fn checksum(kind: u8, body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&[kind]), body)
}

/// Fills in the frame header of the body written to `out[start + FRAME_HEADER_BYTES..]`.
fn seal_frame(out: &mut [u8], start: usize, kind: u8) {
    let body_len = out.len() - start - FRAME_HEADER_BYTES;
    assert!(
        (1..=MAX_RECORD_BODY_BYTES).contains(&body_len),
        "record body of {body_len} bytes"
    );
    let crc = checksum(kind, &out[start + FRAME_HEADER_BYTES..]);
    out[start..start + 4].copy_from_slice(&(body_len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    out[start + 8] = kind;
}

/// Appends a framed batch header to `out`.
pub fn encode_batch_header(header: BatchHeader, out: &mut Vec<u8>) {
    assert!(header.records >= 2, "a batch of {} records", header.records);
    assert!(header.bytes <= MAX_BATCH_BYTES, "batch of {} bytes", header.bytes);
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    put_u32_le(out, header.records);
    put_u64_le(out, header.bytes);
    seal_frame(out, start, TYPE_BATCH_HEADER);
    assert_eq!(out.len() - start, BATCH_HEADER_FRAME_BYTES);
}

/// Appends any frame to `out` (a record, as `encode_record`, or a batch header).
pub fn encode_frame(frame: &Frame, out: &mut Vec<u8>) {
    match frame {
        Frame::Record(record) => encode_record(record, out),
        Frame::BatchHeader(header) => encode_batch_header(*header, out),
    }
}

/// Appends one framed record to `out`. Panics if the record exceeds `MAX_RECORD_BODY_BYTES`: callers
/// check `encoded_len` first and turn that into an error.
pub fn encode_record(record: &Record, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    let kind = match record {
        Record::Entry(entry) => {
            encode_entry_body(entry, out);
            TYPE_ENTRY
        }
        Record::HardState(hs) => {
            put_u64_le(out, hs.term);
            put_u64_le(out, hs.vote.unwrap_or(0));
            put_u64_le(out, hs.commit);
            TYPE_HARD_STATE
        }
        Record::SnapshotMarker(marker) => {
            put_u64_le(out, marker.index);
            put_u64_le(out, marker.term);
            out.push(u8::from(marker.discard_suffix));
            TYPE_SNAPSHOT_MARKER
        }
    };
    seal_frame(out, start, kind);
    assert_eq!(out.len() - start, encoded_len(record));
}

/// The exact number of bytes `encode_record` appends for `record`.
pub fn encoded_len(record: &Record) -> usize {
    FRAME_HEADER_BYTES
        + match record {
            Record::Entry(entry) => ENTRY_FIXED_BYTES + payload_len(&entry.payload),
            Record::HardState(_) => HARD_STATE_BYTES,
            Record::SnapshotMarker(_) => SNAPSHOT_MARKER_BYTES,
        }
}

fn payload_len(payload: &EntryPayload) -> usize {
    match payload {
        EntryPayload::Noop => 0,
        EntryPayload::Normal(data) => data.len(),
        EntryPayload::Membership(m) => membership_len(m),
    }
}

/// `count u32` then `count` ascending ids as u64, for voters, outgoing voters and learners.
pub fn membership_len(m: &Membership) -> usize {
    3 * 4 + 8 * (m.voters.len() + m.voters_outgoing.len() + m.learners.len())
}

fn encode_entry_body(entry: &Entry, out: &mut Vec<u8>) {
    assert!(entry.index > 0, "entry index 0: {entry:?}");
    put_u64_le(out, entry.index);
    put_u64_le(out, entry.term);
    match &entry.payload {
        EntryPayload::Noop => out.push(PAYLOAD_NOOP),
        EntryPayload::Normal(data) => {
            out.push(PAYLOAD_NORMAL);
            out.extend_from_slice(data);
        }
        EntryPayload::Membership(m) => {
            out.push(PAYLOAD_MEMBERSHIP);
            encode_membership(m, out);
        }
    }
}

pub fn encode_membership(m: &Membership, out: &mut Vec<u8>) {
    for set in [&m.voters, &m.voters_outgoing, &m.learners] {
        assert!(
            set.len() <= MAX_MEMBERSHIP_NODES,
            "membership set of {} nodes",
            set.len()
        );
        put_u32_le(out, set.len() as u32);
        for id in set {
            put_u64_le(out, *id);
        }
    }
}

/// One record decoded from the front of a slice, and how many bytes it occupied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub record: Record,
    pub frame_len: usize,
}

/// A frame decoded from the front of a slice, and how many bytes it occupied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedFrame {
    pub frame: Frame,
    pub frame_len: usize,
}

/// Decodes the record at the start of `buf`; a batch header there is `UnexpectedBatchHeader`.
/// `EndOfRecords` means the frame header is all zeros (the never-written part of a segment).
pub fn decode_record(buf: &[u8]) -> Result<Decoded, DecodeError> {
    let decoded = decode_frame(buf)?;
    match decoded.frame {
        Frame::Record(record) => Ok(Decoded {
            record,
            frame_len: decoded.frame_len,
        }),
        Frame::BatchHeader(_) => Err(DecodeError::UnexpectedBatchHeader),
    }
}

/// Decodes the frame (record or batch header) at the start of `buf`.
pub fn decode_frame(buf: &[u8]) -> Result<DecodedFrame, DecodeError> {
    let header = buf.get(..FRAME_HEADER_BYTES).ok_or(DecodeError::Truncated {
        needed: FRAME_HEADER_BYTES,
        available: buf.len(),
    })?;
    if header.iter().all(|b| *b == 0) {
        return Err(DecodeError::EndOfRecords);
    }
    let len = read_u32(&header[0..4]) as usize;
    let stored = read_u32(&header[4..8]);
    let kind = header[8];
    if !(1..=MAX_RECORD_BODY_BYTES).contains(&len) {
        return Err(DecodeError::BadLength { len });
    }
    let frame_len = FRAME_HEADER_BYTES + len;
    let body = buf
        .get(FRAME_HEADER_BYTES..frame_len)
        .ok_or(DecodeError::Truncated {
            needed: frame_len,
            available: buf.len(),
        })?;
    let computed = checksum(kind, body);
    if computed != stored {
        return Err(DecodeError::CrcMismatch { stored, computed });
    }
    let frame = if kind == TYPE_BATCH_HEADER {
        Frame::BatchHeader(decode_batch_header(body)?)
    } else {
        Frame::Record(decode_body(kind, body)?)
    };
    Ok(DecodedFrame { frame, frame_len })
}

/// Refuses every header the encoder could not have written, so that a damaged one whose checksum
/// happens to match still cannot announce an absurd batch.
fn decode_batch_header(body: &[u8]) -> Result<BatchHeader, DecodeError> {
    expect_len("batch header", body, BATCH_HEADER_BODY_BYTES)?;
    let header = BatchHeader {
        records: read_u32(&body[0..4]),
        bytes: read_u64(&body[4..12]),
    };
    if header.records < 2 {
        return Err(DecodeError::BadBatchHeader(
            "fewer than two records (a single record is written without a header)",
        ));
    }
    if header.bytes > MAX_BATCH_BYTES {
        return Err(DecodeError::BadBatchHeader("byte count exceeds MAX_BATCH_BYTES"));
    }
    let records = u64::from(header.records);
    if header.bytes < records * MIN_RECORD_FRAME_BYTES as u64
        || header.bytes > records * MAX_RECORD_BYTES as u64
    {
        return Err(DecodeError::BadBatchHeader(
            "byte count does not fit the record count",
        ));
    }
    Ok(header)
}

fn decode_body(kind: u8, body: &[u8]) -> Result<Record, DecodeError> {
    match kind {
        TYPE_ENTRY => decode_entry(body).map(Record::Entry),
        TYPE_HARD_STATE => {
            expect_len("hard state", body, HARD_STATE_BYTES)?;
            let vote = read_u64(&body[8..16]);
            Ok(Record::HardState(HardState {
                term: read_u64(&body[0..8]),
                vote: (vote != 0).then_some(vote),
                commit: read_u64(&body[16..24]),
            }))
        }
        TYPE_SNAPSHOT_MARKER => {
            expect_len("snapshot marker", body, SNAPSHOT_MARKER_BYTES)?;
            let discard_suffix = match body[16] {
                0 => false,
                1 => true,
                other => return Err(DecodeError::BadFlag(other)),
            };
            Ok(Record::SnapshotMarker(SnapshotMarker {
                index: read_u64(&body[0..8]),
                term: read_u64(&body[8..16]),
                discard_suffix,
            }))
        }
        other => Err(DecodeError::UnknownType(other)),
    }
}

fn expect_len(what: &'static str, body: &[u8], expected: usize) -> Result<(), DecodeError> {
    if body.len() == expected {
        Ok(())
    } else {
        Err(DecodeError::BodyLength {
            what,
            expected,
            actual: body.len(),
        })
    }
}

fn decode_entry(body: &[u8]) -> Result<Entry, DecodeError> {
    if body.len() < ENTRY_FIXED_BYTES {
        return Err(DecodeError::BodyLength {
            what: "entry",
            expected: ENTRY_FIXED_BYTES,
            actual: body.len(),
        });
    }
    let index = read_u64(&body[0..8]);
    if index == 0 {
        return Err(DecodeError::ZeroIndex);
    }
    let rest = &body[ENTRY_FIXED_BYTES..];
    let payload = match body[16] {
        PAYLOAD_NOOP => {
            expect_len("noop entry payload", rest, 0)?;
            EntryPayload::Noop
        }
        PAYLOAD_NORMAL => EntryPayload::Normal(Bytes::copy_from_slice(rest)),
        PAYLOAD_MEMBERSHIP => {
            let (membership, used) = decode_membership(rest)?;
            expect_len("membership entry payload", rest, used)?;
            EntryPayload::Membership(membership)
        }
        other => return Err(DecodeError::UnknownPayloadKind(other)),
    };
    Ok(Entry {
        index,
        term: read_u64(&body[8..16]),
        payload,
    })
}

/// Decodes a membership from the front of `buf`; returns it and the bytes it used. Enforces every
/// invariant `Membership::assert_valid` would panic on, as an error instead.
pub fn decode_membership(buf: &[u8]) -> Result<(Membership, usize), DecodeError> {
    let mut offset = 0;
    let mut sets: [BTreeSet<NodeId>; 3] = Default::default();
    for set in &mut sets {
        let count_bytes = buf
            .get(offset..offset + 4)
            .ok_or(DecodeError::BadMembership("set count is truncated"))?;
        let count = read_u32(count_bytes) as usize;
        offset += 4;
        if count > MAX_MEMBERSHIP_NODES {
            return Err(DecodeError::BadMembership("set exceeds MAX_MEMBERSHIP_NODES"));
        }
        let ids = buf
            .get(offset..offset + 8 * count)
            .ok_or(DecodeError::BadMembership("node ids are truncated"))?;
        offset += 8 * count;
        let mut previous = 0;
        for chunk in ids.chunks_exact(8) {
            let id = read_u64(chunk);
            // Strictly ascending and non-zero: one encoding per membership, id 0 is reserved.
            if id <= previous {
                return Err(DecodeError::BadMembership(
                    "node ids are zero or not strictly ascending",
                ));
            }
            previous = id;
            set.insert(id);
        }
    }
    let [voters, voters_outgoing, learners] = sets;
    if !learners.is_disjoint(&voters) || !learners.is_disjoint(&voters_outgoing) {
        return Err(DecodeError::BadMembership("a node is both learner and voter"));
    }
    let membership = Membership {
        voters,
        voters_outgoing,
        learners,
    };
    Ok((membership, offset))
}

pub fn encode_segment_header(sequence: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut header = [0u8; SEGMENT_HEADER_BYTES];
    header[0..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    header[16..24].copy_from_slice(&sequence.to_le_bytes());
    let crc = crc32c::crc32c(&header[0..24]);
    header[24..28].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Returns the segment's sequence number.
pub fn decode_segment_header(buf: &[u8]) -> Result<u64, DecodeError> {
    let header = buf.get(..SEGMENT_HEADER_BYTES).ok_or(DecodeError::Truncated {
        needed: SEGMENT_HEADER_BYTES,
        available: buf.len(),
    })?;
    let magic: [u8; 8] = header[0..8].try_into().expect("slice of 8 bytes");
    if magic != SEGMENT_MAGIC {
        return Err(DecodeError::BadMagic(magic));
    }
    let stored = read_u32(&header[24..28]);
    let computed = crc32c::crc32c(&header[0..24]);
    if stored != computed {
        return Err(DecodeError::CrcMismatch { stored, computed });
    }
    let version = read_u32(&header[8..12]);
    if version != SEGMENT_VERSION {
        return Err(DecodeError::BadVersion(version));
    }
    Ok(read_u64(&header[16..24]))
}

pub fn read_u32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes.try_into().expect("caller passes exactly 4 bytes"))
}

pub fn read_u64(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().expect("caller passes exactly 8 bytes"))
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
