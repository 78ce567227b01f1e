//! Peer frames: `len u32 LE | kind u8 | body[len - 1]`. A connection starts with one `Hello`
//! from the dialing side; every later frame flows the same way (each direction of a member pair
//! has its own connection, so no frame needs a sender or receiver field).

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Largest frame accepted. Engine messages are bounded far below this (appends by
/// `max_msg_bytes`); snapshots travel as chunks (see `transport::snapshot`).
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;
const HELLO_MAGIC: &[u8; 8] = b"YZPEER01";
/// Names and URL lists in a hello.
const MAX_HELLO_STRING_BYTES: usize = 4096;

const KIND_HELLO: u8 = 1;
const KIND_ENGINE: u8 = 2;
const KIND_FORWARD: u8 = 3;
const KIND_FORWARD_FAILED: u8 = 4;
const KIND_READ_REQUEST: u8 = 5;
const KIND_READ_RESPONSE: u8 = 6;
const KIND_SNAPSHOT_CHUNK: u8 = 7;
const KIND_SNAPSHOT_END: u8 = 8;
const KIND_KEEP_ALIVE_REQUEST: u8 = 9;
const KIND_KEEP_ALIVE_RESPONSE: u8 = 10;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub cluster_id: u64,
    pub from: u64,
    pub to: u64,
    pub name: String,
    /// The sender's advertised client URLs, comma-separated (for MemberList).
    pub client_urls: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Hello(Hello),
    /// An engine message, in the engine's own encoding.
    Engine(Bytes),
    /// A follower hands a client's proposal to the leader; the proposal names its origin. The
    /// leader proposes it only before `deadline_unix_ms` (its client's deadline, wall clock), so
    /// a copy delayed in a partitioned link never enters the log after its client gave up and
    /// perhaps retried elsewhere (issue 13, anomaly 1).
    Forward {
        deadline_unix_ms: u64,
        data: Bytes,
    },
    /// The leader did not propose a forwarded proposal; `reason` is a `ProposeFailure` code. The
    /// boot id and request id name the proposal: a failure of an earlier incarnation's proposal
    /// that arrives late must not fail the new incarnation's request with the same request id.
    ForwardFailed {
        boot_id: u64,
        request_id: u64,
        reason: u8,
    },
    /// A follower whose engine cannot confirm reads itself asks the leader for a read index.
    ReadRequest {
        read_id: u64,
    },
    /// The leader's answer: reads of `read_id` may be served once `index` is applied (`None`:
    /// the leader could not confirm them; they fail and clients retry). Index 0 is a valid
    /// answer: a cluster that has chosen nothing yet.
    ReadResponse {
        read_id: u64,
        index: Option<u64>,
    },
    /// A follower asks the leader to answer a client's lease keep-alive from memory.
    KeepAliveRequest {
        request_id: u64,
        lease_id: i64,
    },
    /// The leader's answer: the lease's TTL in seconds if it answered from memory; `None` if
    /// it did not (not leading, or the lease is near its replicated expiry or unknown), and the
    /// follower proposes the keep-alive through the log instead.
    KeepAliveResponse {
        request_id: u64,
        /// The lease the answer is about: the follower drops an answer for another lease than
        /// the one it asked about under `request_id` (audit F6).
        lease_id: i64,
        ttl_secs: Option<i64>,
    },
    /// Part of an engine message too large for one frame (a snapshot), at byte `offset` of
    /// `total_bytes`. Chunks arrive in order on a connection of their own.
    SnapshotChunk {
        total_bytes: u64,
        offset: u64,
        data: Bytes,
    },
    /// The whole message has been sent; `crc32c` covers all of its bytes.
    SnapshotEnd {
        crc32c: u32,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_BYTES} byte limit")]
    TooLarge(usize),
    #[error("empty frame")]
    Empty,
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("malformed {what}")]
    Malformed { what: &'static str },
}

impl Frame {
    /// The whole frame, length prefix included.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        out.put_u32_le(0); // Patched below.
        self.put_kind_and_body(&mut out);
        let len = out.len() - 4;
        assert!(len <= MAX_FRAME_BYTES, "outgoing frame of {len} bytes");
        out[..4].copy_from_slice(&(len as u32).to_le_bytes());
        out.freeze()
    }

    fn put_kind_and_body(&self, out: &mut BytesMut) {
        match self {
            Frame::Hello(h) => put_hello(out, h),
            Frame::Engine(body) => {
                out.put_u8(KIND_ENGINE);
                out.put_slice(body);
            }
            Frame::Forward {
                deadline_unix_ms,
                data,
            } => {
                out.put_u8(KIND_FORWARD);
                out.put_u64_le(*deadline_unix_ms);
                out.put_slice(data);
            }
            Frame::ForwardFailed {
                boot_id,
                request_id,
                reason,
            } => {
                out.put_u8(KIND_FORWARD_FAILED);
                out.put_u64_le(*boot_id);
                out.put_u64_le(*request_id);
                out.put_u8(*reason);
            }
            Frame::ReadRequest { read_id } => {
                out.put_u8(KIND_READ_REQUEST);
                out.put_u64_le(*read_id);
            }
            Frame::ReadResponse { read_id, index } => {
                out.put_u8(KIND_READ_RESPONSE);
                out.put_u64_le(*read_id);
                out.put_u8(u8::from(index.is_some()));
                out.put_u64_le(index.unwrap_or(0));
            }
            Frame::KeepAliveRequest { request_id, lease_id } => {
                out.put_u8(KIND_KEEP_ALIVE_REQUEST);
                out.put_u64_le(*request_id);
                out.put_i64_le(*lease_id);
            }
            Frame::KeepAliveResponse {
                request_id,
                lease_id,
                ttl_secs,
            } => {
                out.put_u8(KIND_KEEP_ALIVE_RESPONSE);
                out.put_u64_le(*request_id);
                out.put_i64_le(*lease_id);
                out.put_u8(u8::from(ttl_secs.is_some()));
                out.put_i64_le(ttl_secs.unwrap_or(0));
            }
            Frame::SnapshotChunk {
                total_bytes,
                offset,
                data,
            } => {
                out.put_u8(KIND_SNAPSHOT_CHUNK);
                out.put_u64_le(*total_bytes);
                out.put_u64_le(*offset);
                out.put_slice(data);
            }
            Frame::SnapshotEnd { crc32c } => {
                out.put_u8(KIND_SNAPSHOT_END);
                out.put_u32_le(*crc32c);
            }
        }
    }

    /// Decodes the part after the length prefix.
    pub fn decode(mut body: Bytes) -> Result<Frame, FrameError> {
        if body.is_empty() {
            return Err(FrameError::Empty);
        }
        let kind = body.get_u8();
        match kind {
            KIND_HELLO => decode_hello(body).map(Frame::Hello),
            KIND_ENGINE => Ok(Frame::Engine(body)),
            KIND_FORWARD => {
                let mut body = at_least(body, 8, "forwarded proposal")?;
                Ok(Frame::Forward {
                    deadline_unix_ms: body.get_u64_le(),
                    data: body,
                })
            }
            KIND_FORWARD_FAILED => {
                let mut body = exactly(body, 17, "forward failure")?;
                Ok(Frame::ForwardFailed {
                    boot_id: body.get_u64_le(),
                    request_id: body.get_u64_le(),
                    reason: body.get_u8(),
                })
            }
            KIND_READ_REQUEST => {
                let mut body = exactly(body, 8, "read request")?;
                Ok(Frame::ReadRequest {
                    read_id: body.get_u64_le(),
                })
            }
            KIND_READ_RESPONSE => decode_read_response(body),
            KIND_KEEP_ALIVE_REQUEST => {
                let mut body = exactly(body, 16, "keep-alive request")?;
                Ok(Frame::KeepAliveRequest {
                    request_id: body.get_u64_le(),
                    lease_id: body.get_i64_le(),
                })
            }
            KIND_KEEP_ALIVE_RESPONSE => decode_keep_alive_response(body),
            KIND_SNAPSHOT_CHUNK => {
                let mut body = at_least(body, 16, "snapshot chunk")?;
                let total_bytes = body.get_u64_le();
                let offset = body.get_u64_le();
                Ok(Frame::SnapshotChunk {
                    total_bytes,
                    offset,
                    data: body,
                })
            }
            KIND_SNAPSHOT_END => {
                let mut body = exactly(body, 4, "snapshot end")?;
                Ok(Frame::SnapshotEnd {
                    crc32c: body.get_u32_le(),
                })
            }
            other => Err(FrameError::UnknownKind(other)),
        }
    }
}

fn put_hello(out: &mut BytesMut, h: &Hello) {
    out.put_u8(KIND_HELLO);
    out.put_slice(HELLO_MAGIC);
    out.put_u64_le(h.cluster_id);
    out.put_u64_le(h.from);
    out.put_u64_le(h.to);
    put_string(out, &h.name);
    put_string(out, &h.client_urls);
}

/// `body` if it holds at least `bytes` bytes, else a malformed `what`.
fn at_least(body: Bytes, bytes: usize, what: &'static str) -> Result<Bytes, FrameError> {
    if body.remaining() < bytes {
        return Err(FrameError::Malformed { what });
    }
    Ok(body)
}

/// `body` if it holds exactly `bytes` bytes, else a malformed `what`.
fn exactly(body: Bytes, bytes: usize, what: &'static str) -> Result<Bytes, FrameError> {
    if body.remaining() != bytes {
        return Err(FrameError::Malformed { what });
    }
    Ok(body)
}

fn decode_hello(mut body: Bytes) -> Result<Hello, FrameError> {
    let what = "hello";
    if body.remaining() < 32 || &body[..8] != HELLO_MAGIC {
        return Err(FrameError::Malformed { what });
    }
    body.advance(8);
    let cluster_id = body.get_u64_le();
    let from = body.get_u64_le();
    let to = body.get_u64_le();
    let name = get_string(&mut body, what)?;
    let client_urls = get_string(&mut body, what)?;
    if body.has_remaining() {
        return Err(FrameError::Malformed { what });
    }
    Ok(Hello {
        cluster_id,
        from,
        to,
        name,
        client_urls,
    })
}

fn decode_read_response(body: Bytes) -> Result<Frame, FrameError> {
    let what = "read response";
    let mut body = exactly(body, 17, what)?;
    let read_id = body.get_u64_le();
    let confirmed = body.get_u8();
    let index = body.get_u64_le();
    let index = match confirmed {
        0 => None,
        1 => Some(index),
        _ => return Err(FrameError::Malformed { what }),
    };
    Ok(Frame::ReadResponse { read_id, index })
}

fn decode_keep_alive_response(body: Bytes) -> Result<Frame, FrameError> {
    let what = "keep-alive response";
    let mut body = exactly(body, 25, what)?;
    let request_id = body.get_u64_le();
    let lease_id = body.get_i64_le();
    let answered = body.get_u8();
    let ttl_secs = body.get_i64_le();
    let ttl_secs = match answered {
        0 => None,
        // A lease's TTL is at least one second.
        1 if ttl_secs > 0 => Some(ttl_secs),
        _ => return Err(FrameError::Malformed { what }),
    };
    Ok(Frame::KeepAliveResponse {
        request_id,
        lease_id,
        ttl_secs,
    })
}

fn put_string(out: &mut BytesMut, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(MAX_HELLO_STRING_BYTES)];
    out.put_u16_le(bytes.len() as u16);
    out.put_slice(bytes);
}

fn get_string(body: &mut Bytes, what: &'static str) -> Result<String, FrameError> {
    if body.remaining() < 2 {
        return Err(FrameError::Malformed { what });
    }
    let len = usize::from(body.get_u16_le());
    if len > MAX_HELLO_STRING_BYTES || body.remaining() < len {
        return Err(FrameError::Malformed { what });
    }
    let raw = body.split_to(len);
    String::from_utf8(raw.to_vec()).map_err(|_| FrameError::Malformed { what })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames() -> Vec<Frame> {
        vec![
            Frame::Hello(Hello {
                cluster_id: 7,
                from: 1,
                to: 2,
                name: "n1".into(),
                client_urls: "http://127.0.0.1:2379".into(),
            }),
            Frame::Engine(Bytes::from_static(b"\x01\x02")),
            Frame::Forward {
                deadline_unix_ms: 1_700_000_000_123,
                data: Bytes::from_static(b"abc"),
            },
            Frame::Forward {
                deadline_unix_ms: u64::MAX,
                data: Bytes::new(),
            },
            Frame::ForwardFailed {
                boot_id: 0x0123_4567_89ab_cdef,
                request_id: 9,
                reason: 2,
            },
            Frame::ReadRequest { read_id: 5 },
            Frame::ReadResponse {
                read_id: 5,
                index: Some(77),
            },
            Frame::ReadResponse {
                read_id: 6,
                index: Some(0),
            },
            Frame::ReadResponse {
                read_id: 7,
                index: None,
            },
            Frame::SnapshotChunk {
                total_bytes: 10,
                offset: 4,
                data: Bytes::from_static(b"xyz"),
            },
            Frame::SnapshotEnd { crc32c: 0xdead_beef },
            Frame::KeepAliveRequest {
                request_id: 11,
                lease_id: -3,
            },
            Frame::KeepAliveResponse {
                request_id: 11,
                lease_id: -3,
                ttl_secs: Some(60),
            },
            Frame::KeepAliveResponse {
                request_id: 12,
                lease_id: 7,
                ttl_secs: None,
            },
        ]
    }

    #[test]
    fn frames_round_trip() {
        for frame in frames() {
            let encoded = frame.encode();
            let len = u32::from_le_bytes(encoded[..4].try_into().expect("4 bytes")) as usize;
            assert_eq!(len, encoded.len() - 4);
            assert_eq!(Frame::decode(encoded.slice(4..)), Ok(frame));
        }
    }

    #[test]
    fn damaged_frames_are_errors_not_panics() {
        assert_eq!(Frame::decode(Bytes::new()), Err(FrameError::Empty));
        assert_eq!(
            Frame::decode(Bytes::from_static(&[99])),
            Err(FrameError::UnknownKind(99))
        );
        for frame in frames() {
            let encoded = frame.encode().slice(4..);
            for cut in 1..encoded.len() {
                let _ = Frame::decode(encoded.slice(..cut)); // Must not panic.
            }
        }
        let mut bad_flag = Frame::KeepAliveResponse {
            request_id: 1,
            lease_id: 2,
            ttl_secs: Some(5),
        }
        .encode()
        .slice(4..)
        .to_vec();
        bad_flag[17] = 2;
        assert!(Frame::decode(Bytes::from(bad_flag)).is_err());
        let zero_ttl = Frame::KeepAliveResponse {
            request_id: 1,
            lease_id: 2,
            ttl_secs: Some(0),
        };
        assert!(Frame::decode(zero_ttl.encode().slice(4..)).is_err());
        let hello = frames()[0].encode().slice(4..);
        for cut in 1..hello.len() {
            assert!(Frame::decode(hello.slice(..cut)).is_err(), "hello cut at {cut}");
        }
    }

    /// The deadline and the boot id are part of the frames' fixed layout: a forward too short
    /// to hold its deadline and a forward failure of any other length than boot id, request id
    /// and reason are errors, not frames with made-up fields.
    #[test]
    fn forward_frames_are_decoded_strictly() {
        let forward = Frame::Forward {
            deadline_unix_ms: 0x0102_0304_0506_0708,
            data: Bytes::from_static(b"proposal"),
        }
        .encode()
        .slice(4..);
        assert_eq!(forward[0], KIND_FORWARD);
        assert_eq!(&forward[1..9], &0x0102_0304_0506_0708u64.to_le_bytes());
        for cut in 1..9 {
            assert!(
                Frame::decode(forward.slice(..cut)).is_err(),
                "forward cut at {cut}"
            );
        }
        assert_eq!(
            Frame::decode(forward.slice(..9)),
            Ok(Frame::Forward {
                deadline_unix_ms: 0x0102_0304_0506_0708,
                data: Bytes::new(),
            })
        );
        let failed = Frame::ForwardFailed {
            boot_id: 7,
            request_id: 9,
            reason: 6,
        }
        .encode()
        .slice(4..);
        assert_eq!(failed.len(), 18);
        assert_eq!(&failed[1..9], &7u64.to_le_bytes(), "the boot id comes first");
        for cut in 1..failed.len() {
            assert!(
                Frame::decode(failed.slice(..cut)).is_err(),
                "forward failure cut at {cut}"
            );
        }
        let mut longer = failed.to_vec();
        longer.push(0);
        assert!(Frame::decode(Bytes::from(longer)).is_err());
    }
}
