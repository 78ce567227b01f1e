//! The small replicated key-value state machine every simulated node applies, and the byte codecs
//! for its commands and snapshots. Deliberately tiny: the simulator tests the consensus engine, and
//! a state machine with few keys makes conflicting operations (and so linearizability bugs) likely.

use std::collections::BTreeMap;

use bytes::Bytes;

/// Keys and values are short; anything longer is a codec bug or a corrupted entry.
pub const MAX_KEY_BYTES: usize = 64;
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// A snapshot larger than this means the workload grew values without bound.
pub const MAX_SNAPSHOT_KEYS: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("input ended at byte {at} while reading {what}")]
    Truncated { at: usize, what: &'static str },
    #[error("unknown command tag {0}")]
    UnknownTag(u8),
    #[error("{what} of {len} bytes exceeds the {limit} byte limit")]
    TooLong {
        what: &'static str,
        len: usize,
        limit: usize,
    },
    #[error("string is not UTF-8")]
    NotUtf8,
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

/// A state-changing operation. Reads never enter the log (they use ReadIndex).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOp {
    Put {
        key: String,
        value: String,
    },
    /// Succeeds iff the current value equals `expected` (`None` = key absent).
    Cas {
        key: String,
        expected: Option<String>,
        new: String,
    },
    /// Appending to a missing key creates it.
    Append {
        key: String,
        suffix: String,
    },
}

impl KvOp {
    pub fn key(&self) -> &str {
        match self {
            KvOp::Put { key, .. } | KvOp::Cas { key, .. } | KvOp::Append { key, .. } => key,
        }
    }
}

/// What a log entry carries: the operation plus who asked, so every payload is unique and traceable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvCommand {
    pub client_id: u64,
    pub op_id: u64,
    pub op: KvOp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvResult {
    Ok,
    CasResult { succeeded: bool },
}

const TAG_PUT: u8 = 1;
const TAG_CAS: u8 = 2;
const TAG_APPEND: u8 = 3;

impl KvCommand {
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(32);
        out.extend_from_slice(&self.client_id.to_le_bytes());
        out.extend_from_slice(&self.op_id.to_le_bytes());
        match &self.op {
            KvOp::Put { key, value } => {
                out.push(TAG_PUT);
                put_str(&mut out, key);
                put_str(&mut out, value);
            }
            KvOp::Cas { key, expected, new } => {
                out.push(TAG_CAS);
                put_str(&mut out, key);
                match expected {
                    None => out.push(0),
                    Some(value) => {
                        out.push(1);
                        put_str(&mut out, value);
                    }
                }
                put_str(&mut out, new);
            }
            KvOp::Append { key, suffix } => {
                out.push(TAG_APPEND);
                put_str(&mut out, key);
                put_str(&mut out, suffix);
            }
        }
        Bytes::from(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<KvCommand, CodecError> {
        let mut d = Decoder { buf: bytes, pos: 0 };
        let client_id = d.u64("client id")?;
        let op_id = d.u64("op id")?;
        let op = match d.u8("tag")? {
            TAG_PUT => KvOp::Put {
                key: d.key()?,
                value: d.value()?,
            },
            TAG_CAS => {
                let key = d.key()?;
                let expected = if d.u8("cas flag")? == 0 {
                    None
                } else {
                    Some(d.value()?)
                };
                KvOp::Cas {
                    key,
                    expected,
                    new: d.value()?,
                }
            }
            TAG_APPEND => KvOp::Append {
                key: d.key()?,
                suffix: d.value()?,
            },
            other => return Err(CodecError::UnknownTag(other)),
        };
        d.finish()?;
        Ok(KvCommand { client_id, op_id, op })
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = u32::try_from(s.len()).expect("strings are bounded far below 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Decoder<'_> {
    fn take(&mut self, len: usize, what: &'static str) -> Result<&[u8], CodecError> {
        let end = self.pos.checked_add(len).filter(|&end| end <= self.buf.len());
        let end = end.ok_or(CodecError::Truncated { at: self.pos, what })?;
        let slice = &self.buf[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, CodecError> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, CodecError> {
        let raw = self.take(4, what)?;
        Ok(u32::from_le_bytes(raw.try_into().expect("took exactly 4 bytes")))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, CodecError> {
        let raw = self.take(8, what)?;
        Ok(u64::from_le_bytes(raw.try_into().expect("took exactly 8 bytes")))
    }

    fn string(&mut self, what: &'static str, limit: usize) -> Result<String, CodecError> {
        let len = self.u32(what)? as usize;
        if len > limit {
            return Err(CodecError::TooLong { what, len, limit });
        }
        let raw = self.take(len, what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| CodecError::NotUtf8)
    }

    fn key(&mut self) -> Result<String, CodecError> {
        self.string("key", MAX_KEY_BYTES)
    }

    fn value(&mut self) -> Result<String, CodecError> {
        self.string("value", MAX_VALUE_BYTES)
    }

    fn finish(&self) -> Result<(), CodecError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            extra => Err(CodecError::Trailing(extra)),
        }
    }
}

/// The replicated map. Ordered so that snapshots encode identically on every node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStore {
    map: BTreeMap<String, String>,
}

impl KvStore {
    pub fn get(&self, key: &str) -> Option<String> {
        self.map.get(key).cloned()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn apply(&mut self, op: &KvOp) -> KvResult {
        let result = match op {
            KvOp::Put { key, value } => {
                self.map.insert(key.clone(), value.clone());
                KvResult::Ok
            }
            KvOp::Cas { key, expected, new } => {
                let succeeded = self.map.get(key) == expected.as_ref();
                if succeeded {
                    self.map.insert(key.clone(), new.clone());
                }
                KvResult::CasResult { succeeded }
            }
            KvOp::Append { key, suffix } => {
                self.map.entry(key.clone()).or_default().push_str(suffix);
                KvResult::Ok
            }
        };
        assert!(
            self.map.len() <= MAX_SNAPSHOT_KEYS,
            "workload created {} keys",
            self.map.len()
        );
        result
    }

    pub fn to_snapshot(&self) -> Bytes {
        let mut out = Vec::new();
        let count = u32::try_from(self.map.len()).expect("key count is bounded");
        out.extend_from_slice(&count.to_le_bytes());
        for (key, value) in &self.map {
            put_str(&mut out, key);
            put_str(&mut out, value);
        }
        Bytes::from(out)
    }

    /// An empty image (a snapshot taken before anything was applied) restores an empty map.
    pub fn from_snapshot(data: &[u8]) -> Result<KvStore, CodecError> {
        if data.is_empty() {
            return Ok(KvStore::default());
        }
        let mut d = Decoder { buf: data, pos: 0 };
        let count = d.u32("key count")? as usize;
        if count > MAX_SNAPSHOT_KEYS {
            return Err(CodecError::TooLong {
                what: "key count",
                len: count,
                limit: MAX_SNAPSHOT_KEYS,
            });
        }
        let mut map = BTreeMap::new();
        for _ in 0..count {
            let key = d.key()?;
            map.insert(key, d.value()?);
        }
        d.finish()?;
        Ok(KvStore { map })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(op: KvOp) -> KvCommand {
        KvCommand {
            client_id: 3,
            op_id: 77,
            op,
        }
    }

    #[test]
    fn commands_round_trip() {
        let ops = [
            KvOp::Put {
                key: "k".into(),
                value: "v".into(),
            },
            KvOp::Cas {
                key: "k".into(),
                expected: None,
                new: "x".into(),
            },
            KvOp::Cas {
                key: "k".into(),
                expected: Some(String::new()),
                new: "x".into(),
            },
            KvOp::Append {
                key: "k2".into(),
                suffix: "abc".into(),
            },
        ];
        for op in ops {
            let c = cmd(op);
            assert_eq!(KvCommand::decode(&c.encode()), Ok(c));
        }
    }

    #[test]
    fn decode_rejects_truncated_trailing_and_unknown() {
        let bytes = cmd(KvOp::Put {
            key: "k".into(),
            value: "v".into(),
        })
        .encode();
        assert!(matches!(
            KvCommand::decode(&bytes[..bytes.len() - 1]),
            Err(CodecError::Truncated { .. })
        ));
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert_eq!(KvCommand::decode(&longer), Err(CodecError::Trailing(1)));
        let mut bad_tag = bytes.to_vec();
        bad_tag[16] = 9;
        assert_eq!(KvCommand::decode(&bad_tag), Err(CodecError::UnknownTag(9)));
    }

    #[test]
    fn cas_and_append_semantics() {
        let mut kv = KvStore::default();
        let cas = |expected: Option<&str>, new: &str| KvOp::Cas {
            key: "a".into(),
            expected: expected.map(String::from),
            new: new.into(),
        };
        assert_eq!(
            kv.apply(&cas(Some("x"), "y")),
            KvResult::CasResult { succeeded: false }
        );
        assert_eq!(kv.apply(&cas(None, "1")), KvResult::CasResult { succeeded: true });
        assert_eq!(
            kv.apply(&cas(None, "2")),
            KvResult::CasResult { succeeded: false }
        );
        assert_eq!(
            kv.apply(&KvOp::Append {
                key: "a".into(),
                suffix: "+".into()
            }),
            KvResult::Ok
        );
        assert_eq!(
            kv.apply(&KvOp::Append {
                key: "b".into(),
                suffix: "z".into()
            }),
            KvResult::Ok
        );
        assert_eq!((kv.get("a"), kv.get("b")), (Some("1+".into()), Some("z".into())));
    }

    #[test]
    fn snapshot_round_trips_and_empty_image_is_empty_map() {
        let mut kv = KvStore::default();
        kv.apply(&KvOp::Put {
            key: "a".into(),
            value: "1".into(),
        });
        kv.apply(&KvOp::Put {
            key: "b".into(),
            value: String::new(),
        });
        assert_eq!(KvStore::from_snapshot(&kv.to_snapshot()), Ok(kv));
        assert_eq!(KvStore::from_snapshot(&[]), Ok(KvStore::default()));
        assert!(KvStore::from_snapshot(&[1, 0, 0]).is_err());
    }
}
