//! Binary primitives shared by the command codec and snapshots: LEB128 varints, zigzag for
//! signed values, length-prefixed bytes, flag bytes, and CRC-32 for integrity. Every read checks
//! the remaining input first, so malformed input yields an error, never a panic or a huge
//! allocation.

use bytes::Bytes;
use thiserror::Error;
use yizhi_engine::wire::{
    MAX_VARINT_BYTES, VarintFault, flags_byte, put_bytes, put_u8, put_varint, read_varint, unzigzag, zigzag,
};

// Operation tags, shared by the command codec and the response codec: a response is tagged like
// the command it answers.
pub(crate) const TAG_RANGE: u8 = 1;
pub(crate) const TAG_PUT: u8 = 2;
pub(crate) const TAG_DELETE_RANGE: u8 = 3;
pub(crate) const TAG_TXN: u8 = 4;
pub(crate) const TAG_COMPACT: u8 = 5;
pub(crate) const TAG_LEASE_GRANT: u8 = 6;
pub(crate) const TAG_LEASE_REVOKE: u8 = 7;
pub(crate) const TAG_LEASE_KEEP_ALIVE: u8 = 8;

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("input is empty")]
    Empty,
    #[error("unsupported {what} version {version}")]
    UnsupportedVersion { what: &'static str, version: u8 },
    #[error("unknown {what} tag {tag}")]
    UnknownTag { what: &'static str, tag: u8 },
    #[error("truncated: {what} needs {needed} bytes, {remaining} remain")]
    Truncated {
        what: &'static str,
        needed: u64,
        remaining: usize,
    },
    #[error("varint longer than {MAX_VARINT_BYTES} bytes or above u64")]
    VarintOverflow,
    #[error("{what} has unknown flag bits {bits:#04x}")]
    UnknownFlags { what: &'static str, bits: u8 },
    #[error("txn nested deeper than {max_depth} levels")]
    TooDeep { max_depth: usize },
    #[error("{count} trailing bytes after the {what}")]
    TrailingBytes { what: &'static str, count: usize },
    #[error("bad magic: not a {what}")]
    BadMagic { what: &'static str },
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
}

/// The error for a tag byte that names nothing `what` knows.
pub(crate) fn unknown_tag(what: &'static str, tag: u8) -> DecodeError {
    DecodeError::UnknownTag { what, tag }
}

#[derive(Debug, Default)]
pub(crate) struct Writer {
    pub buf: Vec<u8>,
}

/// The engines' encoders ([`yizhi_engine::wire`]) behind the kv codecs' names: one varint, one
/// length prefix, one zigzag and one flag-byte encoding in the whole project.
impl Writer {
    pub fn u8(&mut self, v: u8) {
        put_u8(&mut self.buf, v);
    }

    pub fn varint(&mut self, v: u64) {
        put_varint(&mut self.buf, v);
    }

    pub fn i64(&mut self, v: i64) {
        self.varint(zigzag(v));
    }

    pub fn bytes(&mut self, v: &[u8]) {
        put_bytes(&mut self.buf, v);
    }

    pub fn flags(&mut self, bits: &[bool]) {
        self.u8(flags_byte(bits));
    }

    /// A tag byte, then the fields `put` writes.
    pub fn tagged(&mut self, tag: u8, put: impl FnOnce(&mut Writer)) {
        self.u8(tag);
        put(self);
    }
}

#[derive(Debug)]
pub(crate) struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }

    fn take(&mut self, what: &'static str, n: u64) -> Result<&'a [u8], DecodeError> {
        if n > self.data.len() as u64 {
            return Err(DecodeError::Truncated {
                what,
                needed: n,
                remaining: self.data.len(),
            });
        }
        let (head, tail) = self.data.split_at(n as usize);
        self.data = tail;
        Ok(head)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(what, 1)?[0])
    }

    /// A varint in any form, shortest or not (see [`read_varint`]).
    pub fn varint(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        match read_varint(self.data, false) {
            Ok((value, len)) => {
                self.data = &self.data[len..];
                Ok(value)
            }
            Err(VarintFault::Truncated { .. }) => Err(DecodeError::Truncated {
                what,
                needed: 1,
                remaining: 0,
            }),
            Err(_) => Err(DecodeError::VarintOverflow),
        }
    }

    pub fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        Ok(unzigzag(self.varint(what)?))
    }

    pub fn bytes(&mut self, what: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.varint(what)?;
        Ok(Bytes::copy_from_slice(self.take(what, len)?))
    }

    /// A count of items that each take at least one byte: larger than the input is malformed,
    /// which keeps allocations proportional to the input.
    pub fn count(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        let n = self.varint(what)?;
        if n > self.data.len() as u64 {
            return Err(DecodeError::Truncated {
                what,
                needed: n,
                remaining: self.data.len(),
            });
        }
        Ok(n as usize)
    }

    pub fn flags<const N: usize>(&mut self, what: &'static str) -> Result<[bool; N], DecodeError> {
        assert!(N <= 8);
        let byte = self.u8(what)?;
        let known = if N == 8 { 0xff } else { (1u8 << N) - 1 };
        if byte & !known != 0 {
            return Err(DecodeError::UnknownFlags {
                what,
                bits: byte & !known,
            });
        }
        Ok(std::array::from_fn(|i| byte & (1 << i) != 0))
    }

    /// Everything not read yet: a trailing field that needs no length prefix.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }

    pub fn finish(&self, what: &'static str) -> Result<(), DecodeError> {
        if self.data.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                what,
                count: self.data.len(),
            })
        }
    }
}

/// CRC-32 (IEEE 802.3, reflected), bitwise: snapshots are checked once per install, so a table
/// is not worth its code.
pub(crate) fn crc32(data: &[u8]) -> u32 {
    const POLY_REFLECTED: u32 = 0xEDB8_8320;
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (POLY_REFLECTED & mask);
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        // The catalogue's check value for CRC-32/ISO-HDLC over "123456789".
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn varints_and_zigzag_round_trip_at_the_edges() {
        for v in [0i64, 1, -1, 63, -64, 64, i64::MAX, i64::MIN] {
            let mut w = Writer::default();
            w.i64(v);
            let mut r = Reader::new(&w.buf);
            assert_eq!(r.i64("v").unwrap(), v);
            r.finish("v").unwrap();
        }
        let overlong = [0xffu8; 11];
        assert_eq!(
            Reader::new(&overlong).varint("v"),
            Err(DecodeError::VarintOverflow)
        );
        let too_big = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert_eq!(
            Reader::new(&too_big).varint("v"),
            Err(DecodeError::VarintOverflow)
        );
        // Unlike the engines' messages, command and snapshot bytes may hold a varint in a longer
        // form than needed: it reads as its value.
        assert_eq!(Reader::new(&[0x80, 0x00]).varint("v"), Ok(0));
        assert_eq!(Reader::new(&[0xff, 0x80, 0x00]).varint("v"), Ok(127));
        assert_eq!(
            Reader::new(&[0x80]).varint("v"),
            Err(DecodeError::Truncated {
                what: "v",
                needed: 1,
                remaining: 0
            })
        );
    }
}
