//! The byte encoding of engine messages sent between processes.
//!
//! Every engine message implements [`WireMessage`]. The transport frames the envelope (`from`, `to`,
//! length) itself; the engine encodes only the message body, laid out as
//!
//! ```text
//! version u8 | tag u8 | fields in a fixed order
//! ```
//!
//! Each engine owns its version byte (Raft's and Paxos's are independent) and bumps it whenever its
//! message layout, or a building block below, changes; an unknown version or tag is an error. The
//! building blocks shared by both engines live here:
//!
//! - integers as LEB128 varints, minimal length only (one value, one encoding); booleans and
//!   presence flags as one byte, 0 or 1;
//! - byte strings as `len varint | bytes`;
//! - a [`Membership`] as three sets (voters, outgoing voters, learners), each `count varint | ids
//!   varint…`, ids non-zero and strictly ascending, learners disjoint from voters;
//! - an [`Entry`] as `index varint | term varint | kind u8 | payload`, kind 0 noop (nothing),
//!   1 normal (a byte string), 2 membership. The kind numbers are the WAL's (`yizhi-storage`'s
//!   record codec), whose layout is otherwise fixed-width and checksummed, for files;
//! - an entry list as `count varint | entries`;
//! - a [`Snapshot`] as `index varint | term varint | membership | data byte string`.
//!
//! Decoding is a pure function over a byte slice: it never panics, names what it was reading and at
//! which byte offset when the input is malformed, enforces the limits below, refuses trailing bytes,
//! and never allocates for more items than the remaining input could hold. Encoding asserts the same
//! limits, so a message the receiver would refuse is caught at the sender, where the bug is.

use std::collections::BTreeSet;

use bytes::Bytes;

use crate::types::{Entry, EntryPayload, LogIndex, Membership, NodeId, Snapshot, SnapshotMeta};

/// Entries one message may carry. Above what the engines send under their default byte limits
/// (1 MiB messages of 24-byte minimum entries), so only a corrupt count trips it.
pub const MAX_ENTRIES_PER_MESSAGE: usize = 1 << 20;
/// Largest normal entry payload. Equal to the WAL's largest record body (`yizhi-storage`'s
/// `MAX_RECORD_BODY_BYTES`): a larger entry could not be persisted anyway.
pub const MAX_ENTRY_PAYLOAD_BYTES: usize = 8 * 1024 * 1024;
/// Members per membership set (voters, outgoing voters, learners); the WAL's `MAX_MEMBERSHIP_NODES`.
pub const MAX_MEMBERSHIP_SET_NODES: usize = 1024;
/// Largest snapshot image in one message; the snapshot file's `MAX_SNAPSHOT_DATA_BYTES`.
pub const MAX_SNAPSHOT_DATA_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// A u64 needs at most ten 7-bit groups.
pub const MAX_VARINT_BYTES: usize = 10;

/// Entry payload kinds, shared with the WAL's record codec (`yizhi-storage`), which stores the
/// same three kinds under the same numbers.
pub const PAYLOAD_NOOP: u8 = 0;
pub const PAYLOAD_NORMAL: u8 = 1;
pub const PAYLOAD_MEMBERSHIP: u8 = 2;
/// Smallest encoded entry: one-byte index, term and kind.
const MIN_ENTRY_BYTES: usize = 3;

/// A message that crosses process boundaries.
pub trait WireMessage: Sized {
    /// Appends the encoding of `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>);

    /// Decodes exactly one message that fills all of `bytes`.
    fn decode(bytes: &[u8]) -> Result<Self, WireError>;

    /// The exact number of bytes `encode` appends, so the transport can check its frame limit
    /// before encoding. Linear in the number of entries, constant otherwise.
    fn encoded_len(&self) -> usize;

    /// Whether this message carries a snapshot. The runtime reports the outcome of sending one
    /// back to the engine (`Engine::report_snapshot`). Required, not defaulted to `false`: an engine
    /// that forgot it would see every snapshot as lost and resend it only after its retry timeout.
    fn is_snapshot(&self) -> bool;

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out
    }
}

/// The property every decoder of peer bytes keeps, checked by the fuzz targets and the codec
/// suites: decoding arbitrary bytes does not panic, and whatever decodes is canonical (re-encodes
/// to the very same bytes, with the predicted length, and so decodes to the same value again).
pub fn check_canonical<M: WireMessage + std::fmt::Debug + PartialEq>(bytes: &[u8]) -> Option<M> {
    let message = M::decode(bytes).ok()?;
    let encoded = message.to_bytes();
    assert_eq!(
        encoded, bytes,
        "{message:?} decoded from bytes it does not encode to"
    );
    assert_eq!(message.encoded_len(), bytes.len());
    assert_eq!(M::decode(&encoded).as_ref(), Ok(&message));
    Some(message)
}

/// Why bytes are not a valid message. `offset` is where in the input the bad field starts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("truncated {what} at byte {offset}: needs {needed} bytes, {remaining} remain")]
    Truncated {
        what: &'static str,
        offset: usize,
        needed: u64,
        remaining: usize,
    },
    #[error("unsupported wire version {version} at byte {offset} (this build speaks {supported})")]
    UnsupportedVersion {
        offset: usize,
        version: u8,
        supported: u8,
    },
    #[error("unknown {what} tag {tag} at byte {offset}")]
    UnknownTag {
        what: &'static str,
        offset: usize,
        tag: u8,
    },
    #[error("malformed varint for {what} at byte {offset}: {reason}")]
    BadVarint {
        what: &'static str,
        offset: usize,
        reason: &'static str,
    },
    #[error("{what} at byte {offset} is {value}, above the limit of {limit}")]
    LimitExceeded {
        what: &'static str,
        offset: usize,
        value: u64,
        limit: u64,
    },
    #[error("invalid {what} at byte {offset}: {reason}")]
    Invalid {
        what: &'static str,
        offset: usize,
        reason: &'static str,
    },
    #[error("{count} trailing bytes at byte {offset} after the {what}")]
    TrailingBytes {
        what: &'static str,
        offset: usize,
        count: usize,
    },
}

impl WireError {
    /// Where in the input the problem starts.
    pub fn offset(&self) -> usize {
        match self {
            WireError::Truncated { offset, .. }
            | WireError::UnsupportedVersion { offset, .. }
            | WireError::UnknownTag { offset, .. }
            | WireError::BadVarint { offset, .. }
            | WireError::LimitExceeded { offset, .. }
            | WireError::Invalid { offset, .. }
            | WireError::TrailingBytes { offset, .. } => *offset,
        }
    }
}

// ---- Encoding ----

pub fn put_u8(out: &mut Vec<u8>, value: u8) {
    out.push(value);
}

pub fn put_bool(out: &mut Vec<u8>, value: bool) {
    out.push(u8::from(value));
}

pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

pub fn put_u32_le(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

pub fn put_u64_le(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

/// `len varint | bytes`.
pub fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// `count varint`, asserting the limit the decoder enforces ([`Reader::count`]): a message the
/// receiver would refuse is caught at the sender, where the bug is.
fn put_count(out: &mut Vec<u8>, what: &str, count: usize, limit: usize) {
    assert!(count <= limit, "{what}: {count} exceeds the limit of {limit}");
    put_varint(out, count as u64);
}

pub fn put_membership(out: &mut Vec<u8>, membership: &Membership) {
    membership.assert_valid();
    for set in [
        &membership.voters,
        &membership.voters_outgoing,
        &membership.learners,
    ] {
        put_count(out, "membership set", set.len(), MAX_MEMBERSHIP_SET_NODES);
        for id in set {
            put_varint(out, *id);
        }
    }
}

pub fn put_entry(out: &mut Vec<u8>, entry: &Entry) {
    assert!(entry.index > 0, "entry index 0 is not a log position: {entry:?}");
    put_varint(out, entry.index);
    put_varint(out, entry.term);
    match &entry.payload {
        EntryPayload::Noop => put_u8(out, PAYLOAD_NOOP),
        EntryPayload::Normal(data) => {
            assert!(
                data.len() <= MAX_ENTRY_PAYLOAD_BYTES,
                "entry {} payload of {} bytes exceeds {MAX_ENTRY_PAYLOAD_BYTES}",
                entry.index,
                data.len()
            );
            put_u8(out, PAYLOAD_NORMAL);
            put_bytes(out, data);
        }
        EntryPayload::Membership(membership) => {
            put_u8(out, PAYLOAD_MEMBERSHIP);
            put_membership(out, membership);
        }
    }
}

/// `count varint | entries`.
pub fn put_entries(out: &mut Vec<u8>, entries: &[Entry]) {
    put_count(
        out,
        "entries in one message",
        entries.len(),
        MAX_ENTRIES_PER_MESSAGE,
    );
    for entry in entries {
        put_entry(out, entry);
    }
}

pub fn put_snapshot(out: &mut Vec<u8>, snapshot: &Snapshot) {
    assert!(
        snapshot.data.len() as u64 <= MAX_SNAPSHOT_DATA_BYTES,
        "snapshot of {} bytes exceeds {MAX_SNAPSHOT_DATA_BYTES}",
        snapshot.data.len()
    );
    put_varint(out, snapshot.meta.index);
    put_varint(out, snapshot.meta.term);
    put_membership(out, &snapshot.meta.membership);
    put_bytes(out, &snapshot.data);
}

// ---- Encoded lengths (exactly what the `put_*` functions append) ----

pub fn varint_len(value: u64) -> usize {
    let significant_bits = 64 - value.leading_zeros() as usize;
    significant_bits.div_ceil(7).max(1)
}

pub fn bytes_len(len: usize) -> usize {
    varint_len(len as u64) + len
}

pub fn membership_len(membership: &Membership) -> usize {
    [
        &membership.voters,
        &membership.voters_outgoing,
        &membership.learners,
    ]
    .iter()
    .map(|set| varint_len(set.len() as u64) + set.iter().map(|id| varint_len(*id)).sum::<usize>())
    .sum()
}

pub fn entry_len(entry: &Entry) -> usize {
    let payload = match &entry.payload {
        EntryPayload::Noop => 0,
        EntryPayload::Normal(data) => bytes_len(data.len()),
        EntryPayload::Membership(membership) => membership_len(membership),
    };
    varint_len(entry.index) + varint_len(entry.term) + 1 + payload
}

pub fn entries_len(entries: &[Entry]) -> usize {
    varint_len(entries.len() as u64) + entries.iter().map(entry_len).sum::<usize>()
}

pub fn snapshot_len(snapshot: &Snapshot) -> usize {
    varint_len(snapshot.meta.index)
        + varint_len(snapshot.meta.term)
        + membership_len(&snapshot.meta.membership)
        + bytes_len(snapshot.data.len())
}

/// Signed integers as varints: zigzag maps 0, -1, 1, -2, … to 0, 1, 2, 3, …, so small magnitudes
/// of either sign stay short.
pub fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

/// The inverse of [`zigzag`].
pub fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

/// Up to eight booleans in one byte, the first in the lowest bit.
pub fn flags_byte(bits: &[bool]) -> u8 {
    assert!(bits.len() <= 8);
    bits.iter()
        .enumerate()
        .fold(0u8, |acc, (i, &b)| acc | (u8::from(b) << i))
}

/// Where a message's fields go: a byte buffer (`Vec<u8>`, through the `put_*` functions above),
/// or a [`Measure`], which only counts them. A codec writes its fields once, generic over the
/// sink, and gets `encoded_len` from the same code as `encode`, so the two cannot disagree.
pub trait Sink {
    fn u8(&mut self, value: u8);
    fn varint(&mut self, value: u64);
    fn entries(&mut self, entries: &[Entry]);
    fn snapshot(&mut self, snapshot: &Snapshot);

    fn bool(&mut self, value: bool) {
        self.u8(u8::from(value));
    }

    /// A presence flag, then the value when present.
    fn option<T>(&mut self, value: Option<&T>, put: impl FnOnce(&mut Self, &T)) {
        self.bool(value.is_some());
        if let Some(value) = value {
            put(self, value);
        }
    }
}

impl Sink for Vec<u8> {
    fn u8(&mut self, value: u8) {
        put_u8(self, value);
    }

    fn varint(&mut self, value: u64) {
        put_varint(self, value);
    }

    fn entries(&mut self, entries: &[Entry]) {
        put_entries(self, entries);
    }

    fn snapshot(&mut self, snapshot: &Snapshot) {
        put_snapshot(self, snapshot);
    }
}

/// A [`Sink`] that counts the bytes a buffer would receive (with the `*_len` functions above).
#[derive(Debug, Default)]
pub struct Measure(pub usize);

impl Sink for Measure {
    fn u8(&mut self, _: u8) {
        self.0 += 1;
    }

    fn varint(&mut self, value: u64) {
        self.0 += varint_len(value);
    }

    fn entries(&mut self, entries: &[Entry]) {
        self.0 += entries_len(entries);
    }

    fn snapshot(&mut self, snapshot: &Snapshot) {
        self.0 += snapshot_len(snapshot);
    }
}

/// The bytes `write` puts into a sink.
pub fn measure(write: impl FnOnce(&mut Measure)) -> usize {
    let mut measure = Measure::default();
    write(&mut measure);
    measure.0
}

// ---- Decoding ----

/// Why the bytes where a varint should start do not hold one; each reader turns this into its
/// own error, naming the field (and, for the engines, the offset).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VarintFault {
    /// The input ends after `at` bytes of the varint.
    Truncated {
        at: usize,
    },
    AboveU64,
    /// A longer form than the value needs: refused only when reading minimal varints.
    NotShortest,
    LongerThanTenBytes,
}

impl VarintFault {
    pub fn reason(self) -> &'static str {
        match self {
            VarintFault::Truncated { .. } => "truncated",
            VarintFault::AboveU64 => "value above u64",
            VarintFault::NotShortest => "not in its shortest form",
            VarintFault::LongerThanTenBytes => "longer than 10 bytes",
        }
    }
}

/// The LEB128 varint at the start of `input`, and how many bytes it takes. With `minimal`, a longer
/// form than the value needs is refused (the engines' messages: one value, one encoding). The kv
/// codecs read without it, as they always have: entries already in logs and snapshots must stay
/// readable, whatever form they were written in.
pub fn read_varint(input: &[u8], minimal: bool) -> Result<(u64, usize), VarintFault> {
    let mut value = 0u64;
    for i in 0..MAX_VARINT_BYTES {
        let Some(&byte) = input.get(i) else {
            return Err(VarintFault::Truncated { at: i });
        };
        let group = u64::from(byte & 0x7f);
        if i == MAX_VARINT_BYTES - 1 && group > 1 {
            return Err(VarintFault::AboveU64);
        }
        value |= group << (7 * i);
        if byte & 0x80 == 0 {
            // A zero last group (beyond the first) means a longer form than needed.
            if minimal && i > 0 && group == 0 {
                return Err(VarintFault::NotShortest);
            }
            return Ok((value, i + 1));
        }
    }
    Err(VarintFault::LongerThanTenBytes)
}

/// The index shape a message promises for its entries (checked by [`Reader::ordered_entries`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryOrder {
    /// Strictly ascending indexes, gaps allowed.
    Ascending,
    /// Each index one above the one before.
    Contiguous,
    /// Contiguous, and the first index is one above this one (a Raft append's `prev_index`).
    ContiguousAfter(LogIndex),
}

impl EntryOrder {
    fn rule(self) -> &'static str {
        match self {
            EntryOrder::Ascending => "entry indexes must be strictly ascending",
            EntryOrder::Contiguous => "entry indexes must be contiguous",
            EntryOrder::ContiguousAfter(_) => "entry indexes must continue contiguously from prev_index",
        }
    }
}

/// A cursor over untrusted input. Every read checks the remaining length first.
#[derive(Debug)]
pub struct Reader<'a> {
    input: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        Reader { input, offset: 0 }
    }

    /// Bytes consumed so far: the offset of the next read.
    pub fn offset(&self) -> usize {
        self.offset
    }

    pub fn remaining(&self) -> usize {
        self.input.len() - self.offset
    }

    fn take(&mut self, what: &'static str, len: u64) -> Result<&'a [u8], WireError> {
        if len > self.remaining() as u64 {
            return Err(WireError::Truncated {
                what,
                offset: self.offset,
                needed: len,
                remaining: self.remaining(),
            });
        }
        let start = self.offset;
        self.offset += len as usize;
        Ok(&self.input[start..self.offset])
    }

    /// Reads the version byte and refuses any other than `supported`.
    pub fn version(&mut self, supported: u8) -> Result<(), WireError> {
        let offset = self.offset;
        let version = self.u8("version")?;
        if version == supported {
            Ok(())
        } else {
            Err(WireError::UnsupportedVersion {
                offset,
                version,
                supported,
            })
        }
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.take(what, 1)?[0])
    }

    pub fn bool(&mut self, what: &'static str) -> Result<bool, WireError> {
        let offset = self.offset;
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(WireError::Invalid {
                what,
                offset,
                reason: "a boolean byte must be 0 or 1",
            }),
        }
    }

    /// A varint in its shortest form only (one value, one encoding).
    pub fn varint(&mut self, what: &'static str) -> Result<u64, WireError> {
        let offset = self.offset;
        match read_varint(&self.input[offset..], true) {
            Ok((value, len)) => {
                self.offset += len;
                Ok(value)
            }
            Err(VarintFault::Truncated { at }) => Err(WireError::Truncated {
                what,
                offset: offset + at,
                needed: 1,
                remaining: 0,
            }),
            Err(fault) => Err(WireError::BadVarint {
                what,
                offset,
                reason: fault.reason(),
            }),
        }
    }

    pub fn u32_le(&mut self, what: &'static str) -> Result<u32, WireError> {
        let bytes = self.take(what, 4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    pub fn u64_le(&mut self, what: &'static str) -> Result<u64, WireError> {
        let bytes = self.take(what, 8)?;
        let mut array = [0u8; 8];
        array.copy_from_slice(bytes);
        Ok(u64::from_le_bytes(array))
    }

    /// A count of items that each take at least `min_item_bytes`: above `limit` is refused, and so
    /// is more than the rest of the input could hold, which bounds any allocation by the input.
    pub fn count(
        &mut self,
        what: &'static str,
        limit: usize,
        min_item_bytes: usize,
    ) -> Result<usize, WireError> {
        assert!(min_item_bytes > 0, "every counted item takes at least one byte");
        let offset = self.offset;
        let count = self.varint(what)?;
        if count > limit as u64 {
            return Err(WireError::LimitExceeded {
                what,
                offset,
                value: count,
                limit: limit as u64,
            });
        }
        let needed = count * min_item_bytes as u64;
        if needed > self.remaining() as u64 {
            return Err(WireError::Truncated {
                what,
                offset: self.offset,
                needed,
                remaining: self.remaining(),
            });
        }
        Ok(count as usize)
    }

    /// `len varint | bytes`, with `len <= limit_bytes`.
    pub fn bytes(&mut self, what: &'static str, limit_bytes: u64) -> Result<Bytes, WireError> {
        let offset = self.offset;
        let len = self.varint(what)?;
        if len > limit_bytes {
            return Err(WireError::LimitExceeded {
                what,
                offset,
                value: len,
                limit: limit_bytes,
            });
        }
        Ok(Bytes::copy_from_slice(self.take(what, len)?))
    }

    /// Enforces, as errors, every invariant `Membership::assert_valid` would panic on.
    pub fn membership(&mut self) -> Result<Membership, WireError> {
        let mut sets: [BTreeSet<NodeId>; 3] = Default::default();
        for (set, what) in sets.iter_mut().zip(["voters", "outgoing voters", "learners"]) {
            let count = self.count(what, MAX_MEMBERSHIP_SET_NODES, 1)?;
            let mut previous = 0;
            for _ in 0..count {
                let offset = self.offset;
                let id = self.varint("node id")?;
                // Zero is reserved; strictly ascending keeps one encoding per membership.
                if id <= previous {
                    return Err(WireError::Invalid {
                        what: "node id",
                        offset,
                        reason: "zero, or not above the previous id of its set",
                    });
                }
                previous = id;
                set.insert(id);
            }
        }
        let [voters, voters_outgoing, learners] = sets;
        if !learners.is_disjoint(&voters) || !learners.is_disjoint(&voters_outgoing) {
            return Err(WireError::Invalid {
                what: "membership",
                offset: self.offset,
                reason: "a node is both learner and voter",
            });
        }
        Ok(Membership {
            voters,
            voters_outgoing,
            learners,
        })
    }

    pub fn entry(&mut self) -> Result<Entry, WireError> {
        let offset = self.offset;
        let index = self.varint("entry index")?;
        if index == 0 {
            return Err(WireError::Invalid {
                what: "entry index",
                offset,
                reason: "index 0 is not a log position",
            });
        }
        let term = self.varint("entry term")?;
        let kind_offset = self.offset;
        let payload = match self.u8("entry kind")? {
            PAYLOAD_NOOP => EntryPayload::Noop,
            PAYLOAD_NORMAL => {
                EntryPayload::Normal(self.bytes("entry payload", MAX_ENTRY_PAYLOAD_BYTES as u64)?)
            }
            PAYLOAD_MEMBERSHIP => EntryPayload::Membership(self.membership()?),
            tag => {
                return Err(WireError::UnknownTag {
                    what: "entry kind",
                    offset: kind_offset,
                    tag,
                });
            }
        };
        Ok(Entry { index, term, payload })
    }

    /// `count varint | entries`, at most `MAX_ENTRIES_PER_MESSAGE`.
    pub fn entries(&mut self) -> Result<Vec<Entry>, WireError> {
        let count = self.count("entry count", MAX_ENTRIES_PER_MESSAGE, MIN_ENTRY_BYTES)?;
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            entries.push(self.entry()?);
        }
        Ok(entries)
    }

    /// Like [`Reader::entries`], and the indexes must follow `order`, so that a handler can rely
    /// on the shape of a run (and index arithmetic on it cannot overflow).
    pub fn ordered_entries(&mut self, order: EntryOrder) -> Result<Vec<Entry>, WireError> {
        let count = self.count("entry count", MAX_ENTRIES_PER_MESSAGE, MIN_ENTRY_BYTES)?;
        let mut entries: Vec<Entry> = Vec::with_capacity(count);
        for _ in 0..count {
            let offset = self.offset;
            let entry = self.entry()?;
            let previous = entries.last().map(|e| e.index);
            let in_order = match (order, previous) {
                (EntryOrder::Ascending, Some(previous)) => entry.index > previous,
                (EntryOrder::Contiguous, Some(previous))
                | (EntryOrder::ContiguousAfter(_), Some(previous)) => {
                    previous.checked_add(1) == Some(entry.index)
                }
                (EntryOrder::ContiguousAfter(prev_index), None) => {
                    prev_index.checked_add(1) == Some(entry.index)
                }
                (EntryOrder::Ascending | EntryOrder::Contiguous, None) => true,
            };
            if !in_order {
                return Err(WireError::Invalid {
                    what: "entry index",
                    offset,
                    reason: order.rule(),
                });
            }
            entries.push(entry);
        }
        Ok(entries)
    }

    pub fn snapshot(&mut self) -> Result<Snapshot, WireError> {
        let index = self.varint("snapshot index")?;
        let term = self.varint("snapshot term")?;
        let membership = self.membership()?;
        let data = self.bytes("snapshot data", MAX_SNAPSHOT_DATA_BYTES)?;
        Ok(Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                membership,
            },
            data,
        })
    }

    /// The message must end exactly here.
    pub fn finish(&self, what: &'static str) -> Result<(), WireError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(WireError::TrailingBytes {
                what,
                offset: self.offset,
                count: self.remaining(),
            })
        }
    }
}

#[cfg(feature = "testkit")]
pub mod suite;

/// Seeded generators of valid building blocks, for the engines' codec tests and fuzz seed corpora.
pub mod testkit {
    use bytes::Bytes;

    use crate::rng::SeededRng;
    use crate::types::{Entry, EntryPayload, LogIndex, Membership, Snapshot, SnapshotMeta};

    /// Values where varint lengths change, and the ends of the range, half the time; else uniform.
    pub fn interesting_u64(rng: &mut SeededRng) -> u64 {
        const EDGES: [u64; 12] = [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u32::MAX as u64,
            1 << 35,
            (1 << 63) - 1,
            1 << 63,
            u64::MAX - 1,
            u64::MAX,
        ];
        if rng.chance(1, 2) {
            EDGES[rng.below(EDGES.len() as u64) as usize]
        } else {
            rng.next_u64() >> rng.below(64)
        }
    }

    pub fn random_bytes(rng: &mut SeededRng, max_len: u64) -> Bytes {
        let len = rng.range_inclusive(0, max_len);
        (0..len).map(|_| rng.next_u64() as u8).collect::<Vec<u8>>().into()
    }

    /// A valid membership: ids from the whole non-zero range, sometimes joint, sometimes with
    /// learners, sometimes empty.
    pub fn random_membership(rng: &mut SeededRng) -> Membership {
        let random_id = |rng: &mut SeededRng| interesting_u64(rng).max(1);
        let mut membership = Membership::default();
        for _ in 0..rng.below(6) {
            membership.voters.insert(random_id(rng));
        }
        if rng.chance(1, 3) {
            for _ in 0..rng.range_inclusive(1, 4) {
                membership.voters_outgoing.insert(random_id(rng));
            }
        }
        for _ in 0..rng.below(3) {
            let id = random_id(rng);
            if !membership.is_voter(id) {
                membership.learners.insert(id);
            }
        }
        membership.assert_valid();
        membership
    }

    /// How many `EntryPayload` variants `random_payload` draws from.
    pub const PAYLOAD_KINDS: usize = 3;

    /// The position of a payload's variant among `PAYLOAD_KINDS`. Exhaustive on purpose: a new
    /// variant stops this compiling until the generator learns to draw it.
    pub fn payload_kind(payload: &EntryPayload) -> usize {
        match payload {
            EntryPayload::Noop => 0,
            EntryPayload::Normal(_) => 1,
            EntryPayload::Membership(_) => 2,
        }
    }

    pub fn random_payload(rng: &mut SeededRng) -> EntryPayload {
        match rng.below(PAYLOAD_KINDS as u64) {
            0 => EntryPayload::Noop,
            1 => EntryPayload::Normal(random_bytes(rng, 64)),
            _ => EntryPayload::Membership(random_membership(rng)),
        }
    }

    /// `count` entries at `first_index`, `first_index + 1`, …; `first_index + count - 1` must fit.
    pub fn random_entries(rng: &mut SeededRng, first_index: LogIndex, count: u64) -> Vec<Entry> {
        assert!(first_index > 0, "entries start at index 1 or later");
        assert!(count == 0 || first_index.checked_add(count - 1).is_some());
        (0..count)
            .map(|i| Entry {
                index: first_index + i,
                term: interesting_u64(rng),
                payload: random_payload(rng),
            })
            .collect()
    }

    /// A contiguous run of up to `max_count` entries starting anywhere in the index space.
    pub fn random_run(rng: &mut SeededRng, max_count: u64) -> Vec<Entry> {
        let count = rng.range_inclusive(0, max_count);
        let first = interesting_u64(rng).clamp(1, u64::MAX - count.saturating_sub(1));
        random_entries(rng, first, count)
    }

    pub fn random_snapshot(rng: &mut SeededRng) -> Snapshot {
        Snapshot {
            meta: SnapshotMeta {
                index: interesting_u64(rng),
                term: interesting_u64(rng),
                membership: random_membership(rng),
            },
            data: random_bytes(rng, 200),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::*;
    use super::*;
    use crate::rng::SeededRng;

    fn encode_with(put: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut out = Vec::new();
        put(&mut out);
        out
    }

    #[test]
    fn varints_round_trip_and_have_the_predicted_length() {
        let mut rng = SeededRng::new(1);
        let mut values: Vec<u64> = (0..64)
            .flat_map(|shift| [1u64 << shift, (1u64 << shift) - 1])
            .collect();
        values.extend((0..10_000).map(|_| interesting_u64(&mut rng)));
        values.push(u64::MAX);
        for value in values {
            let bytes = encode_with(|out| put_varint(out, value));
            assert_eq!(bytes.len(), varint_len(value), "{value}");
            let mut reader = Reader::new(&bytes);
            assert_eq!(reader.varint("v"), Ok(value));
            reader.finish("v").unwrap();
        }
    }

    #[test]
    fn varint_encoding_is_pinned() {
        assert_eq!(encode_with(|out| put_varint(out, 0)), [0x00]);
        assert_eq!(encode_with(|out| put_varint(out, 127)), [0x7f]);
        assert_eq!(encode_with(|out| put_varint(out, 300)), [0xac, 0x02]);
        assert_eq!(
            encode_with(|out| put_varint(out, u64::MAX)),
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
    }

    #[test]
    fn malformed_varints_are_errors_with_their_offset() {
        let cases: [(&[u8], &str); 4] = [
            (&[0x80, 0x00], "not in its shortest form"),
            (&[0xff, 0x00], "not in its shortest form"),
            (
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
                "value above u64",
            ),
            (&[0xff; 11], "value above u64"),
        ];
        for (bytes, want) in cases {
            let mut input = vec![7u8];
            input.extend_from_slice(bytes);
            let mut reader = Reader::new(&input);
            reader.u8("lead").unwrap();
            match reader.varint("v") {
                Err(WireError::BadVarint {
                    offset: 1, reason, ..
                }) => assert_eq!(reason, want),
                other => panic!("{bytes:02x?}: {other:?}"),
            }
        }
        assert!(matches!(
            Reader::new(&[0x80]).varint("v"),
            Err(WireError::Truncated { offset: 1, .. })
        ));
    }

    #[test]
    fn fixed_ints_are_little_endian() {
        let bytes = encode_with(|out| {
            put_u32_le(out, 0x0102_0304);
            put_u64_le(out, u64::MAX - 1);
        });
        assert_eq!(bytes[..4], [4, 3, 2, 1]);
        let mut reader = Reader::new(&bytes);
        assert_eq!(reader.u32_le("a"), Ok(0x0102_0304));
        assert_eq!(reader.u64_le("b"), Ok(u64::MAX - 1));
        assert!(matches!(
            reader.u8("c"),
            Err(WireError::Truncated { offset: 12, .. })
        ));
    }

    #[test]
    fn booleans_are_zero_or_one() {
        assert_eq!(Reader::new(&[0]).bool("b"), Ok(false));
        assert_eq!(Reader::new(&[1]).bool("b"), Ok(true));
        assert!(matches!(
            Reader::new(&[2]).bool("b"),
            Err(WireError::Invalid { offset: 0, .. })
        ));
    }

    #[test]
    fn version_byte_must_match() {
        assert_eq!(Reader::new(&[3]).version(3), Ok(()));
        assert_eq!(
            Reader::new(&[4]).version(3),
            Err(WireError::UnsupportedVersion {
                offset: 0,
                version: 4,
                supported: 3
            })
        );
    }

    #[test]
    fn building_blocks_round_trip_with_predicted_lengths() {
        let mut rng = SeededRng::new(2);
        let mut kinds_seen = [false; PAYLOAD_KINDS];
        for _ in 0..2_000 {
            let entries = random_run(&mut rng, 4);
            for entry in &entries {
                kinds_seen[payload_kind(&entry.payload)] = true;
            }
            let snapshot = random_snapshot(&mut rng);
            let bytes = encode_with(|out| {
                put_entries(out, &entries);
                put_snapshot(out, &snapshot);
            });
            assert_eq!(bytes.len(), entries_len(&entries) + snapshot_len(&snapshot));
            let mut reader = Reader::new(&bytes);
            assert_eq!(reader.entries().as_ref(), Ok(&entries));
            assert_eq!(reader.snapshot().as_ref(), Ok(&snapshot));
            reader.finish("test").unwrap();
        }
        assert_eq!(
            kinds_seen, [true; PAYLOAD_KINDS],
            "every payload kind is generated"
        );
    }

    #[test]
    fn entry_encoding_is_pinned() {
        let entries = [
            Entry {
                index: 1,
                term: 2,
                payload: EntryPayload::Noop,
            },
            Entry {
                index: 300,
                term: 0,
                payload: EntryPayload::Normal(Bytes::from_static(b"hi")),
            },
            Entry {
                index: 301,
                term: 1,
                payload: EntryPayload::Membership(Membership::new([1, 2]).with_learners([200])),
            },
        ];
        let bytes = encode_with(|out| put_entries(out, &entries));
        #[rustfmt::skip]
        let want = [
            3,
            1, 2, PAYLOAD_NOOP,
            0xac, 0x02, 0, PAYLOAD_NORMAL, 2, b'h', b'i',
            0xad, 0x02, 1, PAYLOAD_MEMBERSHIP, 2, 1, 2, 0, 1, 0xc8, 0x01,
        ];
        assert_eq!(bytes, want);
    }

    #[test]
    fn invalid_memberships_are_refused() {
        // (voters, outgoing, learners) as raw varint bytes.
        let cases: [(&[u8], &str); 5] = [
            (&[1, 0, 0, 0], "node id"),    // id 0
            (&[2, 5, 5, 0, 0], "node id"), // duplicate
            (&[2, 6, 5, 0, 0], "node id"), // descending
            (&[1, 5, 0, 1, 5], "membership"),
            (&[0, 1, 5, 1, 5], "membership"),
        ];
        for (bytes, want) in cases {
            match Reader::new(bytes).membership() {
                Err(WireError::Invalid { what, .. }) => assert_eq!(what, want, "{bytes:?}"),
                other => panic!("{bytes:?}: {other:?}"),
            }
        }
        let mut too_many = Vec::new();
        put_varint(&mut too_many, MAX_MEMBERSHIP_SET_NODES as u64 + 1);
        assert!(matches!(
            Reader::new(&too_many).membership(),
            Err(WireError::LimitExceeded { what: "voters", .. })
        ));
    }

    #[test]
    fn invalid_entries_are_refused_where_they_go_wrong() {
        assert!(matches!(
            Reader::new(&[0, 1, PAYLOAD_NOOP]).entry(),
            Err(WireError::Invalid {
                what: "entry index",
                offset: 0,
                ..
            })
        ));
        assert!(matches!(
            Reader::new(&[1, 1, 9]).entry(),
            Err(WireError::UnknownTag {
                tag: 9,
                offset: 2,
                ..
            })
        ));
        let mut oversized = vec![1, 1, PAYLOAD_NORMAL];
        put_varint(&mut oversized, MAX_ENTRY_PAYLOAD_BYTES as u64 + 1);
        assert!(matches!(
            Reader::new(&oversized).entry(),
            Err(WireError::LimitExceeded { offset: 3, .. })
        ));
    }

    #[test]
    fn counts_above_the_limit_or_the_input_are_refused_before_allocating() {
        let mut too_many = Vec::new();
        put_varint(&mut too_many, MAX_ENTRIES_PER_MESSAGE as u64 + 1);
        assert!(matches!(
            Reader::new(&too_many).entries(),
            Err(WireError::LimitExceeded { .. })
        ));
        // 1000 entries claimed, room for fewer than 1000 three-byte entries.
        let mut short = Vec::new();
        put_varint(&mut short, 1000);
        short.extend_from_slice(&[1u8; 2000]);
        assert!(matches!(
            Reader::new(&short).entries(),
            Err(WireError::Truncated { needed: 3000, .. })
        ));
        // Snapshot index 1, term 1, empty membership, then a data length above the limit.
        let mut long_data = vec![1, 1, 0, 0, 0];
        put_varint(&mut long_data, MAX_SNAPSHOT_DATA_BYTES + 1);
        assert!(matches!(
            Reader::new(&long_data).snapshot(),
            Err(WireError::LimitExceeded { offset: 5, .. })
        ));
    }

    #[test]
    fn every_prefix_of_building_blocks_is_an_error() {
        let mut rng = SeededRng::new(3);
        for _ in 0..200 {
            let entries = random_run(&mut rng, 3);
            let snapshot = random_snapshot(&mut rng);
            let bytes = encode_with(|out| {
                put_entries(out, &entries);
                put_snapshot(out, &snapshot);
            });
            for cut in 0..bytes.len() {
                let mut reader = Reader::new(&bytes[..cut]);
                let decoded = reader.entries().and_then(|_| reader.snapshot());
                assert!(
                    decoded.is_err(),
                    "prefix of {cut} of {} bytes decoded",
                    bytes.len()
                );
            }
        }
    }

    #[test]
    fn ordered_entries_enforce_their_shape() {
        let entry = |index| Entry {
            index,
            term: 1,
            payload: EntryPayload::Noop,
        };
        let encoded = |indexes: &[u64]| {
            let entries: Vec<Entry> = indexes.iter().map(|i| entry(*i)).collect();
            encode_with(|out| put_entries(out, &entries))
        };
        let decode =
            |indexes: &[u64], order| Reader::new(&encoded(indexes)).ordered_entries(order).map(|_| ());
        let invalid_at = |offset| move |result: Result<(), WireError>| matches!(result, Err(WireError::Invalid { what: "entry index", offset: at, .. }) if at == offset);
        assert_eq!(decode(&[3, 4, 5], EntryOrder::ContiguousAfter(2)), Ok(()));
        assert_eq!(decode(&[], EntryOrder::ContiguousAfter(u64::MAX)), Ok(()));
        assert!(invalid_at(1)(decode(
            &[u64::MAX],
            EntryOrder::ContiguousAfter(u64::MAX)
        )));
        assert!(invalid_at(1)(decode(&[4], EntryOrder::ContiguousAfter(2))));
        assert!(invalid_at(4)(decode(&[3, 5], EntryOrder::ContiguousAfter(2))));
        assert_eq!(decode(&[7, 8], EntryOrder::Contiguous), Ok(()));
        assert_eq!(decode(&[u64::MAX], EntryOrder::Contiguous), Ok(()));
        assert!(invalid_at(4)(decode(&[7, 9], EntryOrder::Contiguous)));
        assert_eq!(decode(&[7, 9, u64::MAX], EntryOrder::Ascending), Ok(()));
        assert!(invalid_at(4)(decode(&[7, 7], EntryOrder::Ascending)));
        assert!(invalid_at(4)(decode(&[7, 6], EntryOrder::Ascending)));
    }

    #[test]
    fn errors_name_the_field_and_offset() {
        let err = Reader::new(&[5, 1]).entries().unwrap_err();
        assert_eq!(err.offset(), 1);
        assert_eq!(
            err.to_string(),
            "truncated entry count at byte 1: needs 15 bytes, 1 remain"
        );
    }
}
