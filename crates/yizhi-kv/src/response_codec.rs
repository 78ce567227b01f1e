//! The response encoding, for responses the session table keeps (persisted and in snapshots):
//! `[version][0 = ok | 1 = error][tag][fields…]` with the primitives of the command codec.
//! Decoding is a pure function; malformed input is a [`DecodeError`], and every count is
//! bounded by the input's length, so nothing allocates more than the input justifies.

use bytes::Bytes;

use crate::backend::{BackendError, StoredResponse};
use crate::command::CommandResponse;
use crate::config::MAX_TXN_DEPTH;
use crate::error::KvError;
use crate::types::{
    CompactionResponse, DeleteRangeResponse, KeyValue, LeaseGrantResponse, LeaseKeepAliveResponse,
    LeaseRevokeResponse, PutResponse, RangeResponse, ResponseOp, TxnResponse,
};
use crate::wire::{
    DecodeError, Reader, TAG_COMPACT, TAG_DELETE_RANGE, TAG_LEASE_GRANT, TAG_LEASE_KEEP_ALIVE,
    TAG_LEASE_REVOKE, TAG_PUT, TAG_RANGE, TAG_TXN, Writer, unknown_tag,
};

pub const RESPONSE_CODEC_VERSION: u8 = 1;

const OUTCOME_OK: u8 = 0;
const OUTCOME_ERR: u8 = 1;

const STORED_TOO_LARGE: u8 = 0;
const STORED_KEPT: u8 = 1;

pub fn encode_response(response: &Result<CommandResponse, KvError>) -> Vec<u8> {
    let mut w = Writer::default();
    w.u8(RESPONSE_CODEC_VERSION);
    match response {
        Ok(ok) => {
            w.u8(OUTCOME_OK);
            put_response(&mut w, ok);
        }
        Err(e) => {
            w.u8(OUTCOME_ERR);
            put_error(&mut w, e);
        }
    }
    w.buf
}

pub fn decode_response(data: &[u8]) -> Result<Result<CommandResponse, KvError>, DecodeError> {
    if data.is_empty() {
        return Err(DecodeError::Empty);
    }
    let mut r = Reader::new(data);
    let version = r.u8("response version")?;
    if version != RESPONSE_CODEC_VERSION {
        return Err(DecodeError::UnsupportedVersion {
            what: "response",
            version,
        });
    }
    let decoded = match r.u8("response outcome")? {
        OUTCOME_OK => Ok(get_response(&mut r)?),
        OUTCOME_ERR => Err(get_error(&mut r)?),
        tag => return Err(unknown_tag("response outcome", tag)),
    };
    r.finish("response")?;
    Ok(decoded)
}

/// A session row's value: a kind byte, then the encoded response when kept.
pub(crate) fn encode_stored(stored: &StoredResponse) -> Vec<u8> {
    match stored {
        StoredResponse::TooLarge => vec![STORED_TOO_LARGE],
        StoredResponse::Kept(bytes) => {
            let mut row = Vec::with_capacity(1 + bytes.len());
            row.push(STORED_KEPT);
            row.extend_from_slice(bytes);
            row
        }
    }
}

/// Checks that a kept response decodes, so that answering a duplicate later cannot fail.
pub(crate) fn decode_stored(row: &[u8]) -> Result<StoredResponse, DecodeError> {
    match row.split_first() {
        None => Err(DecodeError::Empty),
        Some((&STORED_TOO_LARGE, [])) => Ok(StoredResponse::TooLarge),
        Some((&STORED_KEPT, response)) => {
            // Only whether it decodes matters here; the answer is decoded again when needed.
            let _answer = decode_response(response)?;
            Ok(StoredResponse::Kept(Bytes::copy_from_slice(response)))
        }
        Some((&tag, _)) => Err(unknown_tag("stored response", tag)),
    }
}

fn put_response(w: &mut Writer, response: &CommandResponse) {
    match response {
        CommandResponse::Range(r) => w.tagged(TAG_RANGE, |w| put_range(w, r)),
        CommandResponse::Put(p) => w.tagged(TAG_PUT, |w| put_put(w, p)),
        CommandResponse::DeleteRange(d) => w.tagged(TAG_DELETE_RANGE, |w| put_delete(w, d)),
        CommandResponse::Txn(t) => w.tagged(TAG_TXN, |w| put_txn(w, t)),
        CommandResponse::Compact(c) => w.tagged(TAG_COMPACT, |w| w.i64(c.revision)),
        CommandResponse::LeaseGrant(g) => w.tagged(TAG_LEASE_GRANT, |w| {
            w.i64(g.revision);
            w.i64(g.id);
            w.i64(g.ttl_secs);
        }),
        CommandResponse::LeaseRevoke(r) => w.tagged(TAG_LEASE_REVOKE, |w| w.i64(r.revision)),
        CommandResponse::LeaseKeepAlive(k) => w.tagged(TAG_LEASE_KEEP_ALIVE, |w| {
            w.i64(k.revision);
            w.i64(k.id);
            w.i64(k.ttl_secs);
        }),
    }
}

fn get_response(r: &mut Reader) -> Result<CommandResponse, DecodeError> {
    Ok(match r.u8("response tag")? {
        TAG_RANGE => CommandResponse::Range(get_range(r)?),
        TAG_PUT => CommandResponse::Put(get_put(r)?),
        TAG_DELETE_RANGE => CommandResponse::DeleteRange(get_delete(r)?),
        TAG_TXN => CommandResponse::Txn(get_txn(r, 0)?),
        TAG_COMPACT => CommandResponse::Compact(CompactionResponse {
            revision: r.i64("compact revision")?,
        }),
        TAG_LEASE_GRANT => CommandResponse::LeaseGrant(LeaseGrantResponse {
            revision: r.i64("grant revision")?,
            id: r.i64("grant id")?,
            ttl_secs: r.i64("grant ttl")?,
        }),
        TAG_LEASE_REVOKE => CommandResponse::LeaseRevoke(LeaseRevokeResponse {
            revision: r.i64("revoke revision")?,
        }),
        TAG_LEASE_KEEP_ALIVE => CommandResponse::LeaseKeepAlive(LeaseKeepAliveResponse {
            revision: r.i64("keep-alive revision")?,
            id: r.i64("keep-alive id")?,
            ttl_secs: r.i64("keep-alive ttl")?,
        }),
        tag => return Err(unknown_tag("response", tag)),
    })
}

fn put_kv(w: &mut Writer, kv: &KeyValue) {
    w.bytes(&kv.key);
    w.i64(kv.create_revision);
    w.i64(kv.mod_revision);
    w.i64(kv.version);
    w.bytes(&kv.value);
    w.i64(kv.lease);
}

fn get_kv(r: &mut Reader) -> Result<KeyValue, DecodeError> {
    Ok(KeyValue {
        key: r.bytes("kv key")?,
        create_revision: r.i64("kv create")?,
        mod_revision: r.i64("kv mod")?,
        version: r.i64("kv version")?,
        value: r.bytes("kv value")?,
        lease: r.i64("kv lease")?,
    })
}

fn put_kvs(w: &mut Writer, kvs: &[KeyValue]) {
    w.varint(kvs.len() as u64);
    kvs.iter().for_each(|kv| put_kv(w, kv));
}

fn get_kvs(r: &mut Reader) -> Result<Vec<KeyValue>, DecodeError> {
    let n = r.count("kv count")?;
    let mut kvs = Vec::with_capacity(n);
    for _ in 0..n {
        kvs.push(get_kv(r)?);
    }
    Ok(kvs)
}

fn put_range(w: &mut Writer, r: &RangeResponse) {
    w.i64(r.revision);
    put_kvs(w, &r.kvs);
    w.flags(&[r.more]);
    w.i64(r.count);
}

fn get_range(r: &mut Reader) -> Result<RangeResponse, DecodeError> {
    let revision = r.i64("range revision")?;
    let kvs = get_kvs(r)?;
    let [more] = r.flags("range flags")?;
    Ok(RangeResponse {
        revision,
        kvs,
        more,
        count: r.i64("range count")?,
    })
}

fn put_put(w: &mut Writer, p: &PutResponse) {
    w.i64(p.revision);
    w.flags(&[p.prev_kv.is_some()]);
    if let Some(kv) = &p.prev_kv {
        put_kv(w, kv);
    }
}

fn get_put(r: &mut Reader) -> Result<PutResponse, DecodeError> {
    let revision = r.i64("put revision")?;
    let [has_prev] = r.flags("put flags")?;
    let prev_kv = if has_prev { Some(get_kv(r)?) } else { None };
    Ok(PutResponse { revision, prev_kv })
}

fn put_delete(w: &mut Writer, d: &DeleteRangeResponse) {
    w.i64(d.revision);
    w.i64(d.deleted);
    put_kvs(w, &d.prev_kvs);
}

fn get_delete(r: &mut Reader) -> Result<DeleteRangeResponse, DecodeError> {
    Ok(DeleteRangeResponse {
        revision: r.i64("delete revision")?,
        deleted: r.i64("delete count")?,
        prev_kvs: get_kvs(r)?,
    })
}

fn put_txn(w: &mut Writer, t: &TxnResponse) {
    w.i64(t.revision);
    w.flags(&[t.succeeded]);
    w.varint(t.responses.len() as u64);
    for op in &t.responses {
        match op {
            ResponseOp::Range(r) => w.tagged(TAG_RANGE, |w| put_range(w, r)),
            ResponseOp::Put(p) => w.tagged(TAG_PUT, |w| put_put(w, p)),
            ResponseOp::DeleteRange(d) => w.tagged(TAG_DELETE_RANGE, |w| put_delete(w, d)),
            ResponseOp::Txn(t) => w.tagged(TAG_TXN, |w| put_txn(w, t)),
        }
    }
}

fn get_txn(r: &mut Reader, depth: usize) -> Result<TxnResponse, DecodeError> {
    if depth >= MAX_TXN_DEPTH {
        return Err(DecodeError::TooDeep {
            max_depth: MAX_TXN_DEPTH,
        });
    }
    let revision = r.i64("txn revision")?;
    let [succeeded] = r.flags("txn flags")?;
    let n = r.count("txn response count")?;
    let mut responses = Vec::with_capacity(n);
    for _ in 0..n {
        responses.push(match r.u8("txn response tag")? {
            TAG_RANGE => ResponseOp::Range(get_range(r)?),
            TAG_PUT => ResponseOp::Put(get_put(r)?),
            TAG_DELETE_RANGE => ResponseOp::DeleteRange(get_delete(r)?),
            TAG_TXN => ResponseOp::Txn(get_txn(r, depth + 1)?),
            tag => return Err(unknown_tag("txn response", tag)),
        });
    }
    Ok(TxnResponse {
        revision,
        succeeded,
        responses,
    })
}

const ERR_EMPTY_KEY: u8 = 1;
const ERR_VALUE_PROVIDED: u8 = 2;
const ERR_LEASE_PROVIDED: u8 = 3;
const ERR_KEY_NOT_FOUND: u8 = 4;
const ERR_LEASE_NOT_FOUND: u8 = 5;
const ERR_LEASE_EXISTS: u8 = 6;
const ERR_LEASE_TTL_TOO_LARGE: u8 = 7;
const ERR_TOO_MANY_OPS: u8 = 8;
const ERR_DUPLICATE_KEY: u8 = 9;
const ERR_COMPACTED: u8 = 10;
const ERR_FUTURE_REVISION: u8 = 11;
const ERR_TXN_TOO_DEEP: u8 = 12;
const ERR_INVALID_LEASE_ID: u8 = 13;
const ERR_BACKEND_IO: u8 = 14;
const ERR_BACKEND_CORRUPT: u8 = 15;
const ERR_INVALID_CLIENT_SEQ: u8 = 16;
const ERR_CLIENT_SESSION_EXPIRED: u8 = 17;
const ERR_SEQUENCE_ACKNOWLEDGED: u8 = 18;
const ERR_TOO_MANY_CLIENT_SESSIONS: u8 = 19;
const ERR_TOO_MANY_UNACKNOWLEDGED: u8 = 20;
const ERR_SESSION_MEMORY_FULL: u8 = 21;
const ERR_DUPLICATE_RESPONSE_NOT_RETAINED: u8 = 22;

fn put_error(w: &mut Writer, e: &KvError) {
    match e {
        KvError::EmptyKey => w.u8(ERR_EMPTY_KEY),
        KvError::ValueProvided => w.u8(ERR_VALUE_PROVIDED),
        KvError::LeaseProvided => w.u8(ERR_LEASE_PROVIDED),
        KvError::KeyNotFound => w.u8(ERR_KEY_NOT_FOUND),
        KvError::LeaseNotFound => w.u8(ERR_LEASE_NOT_FOUND),
        KvError::LeaseExists => w.u8(ERR_LEASE_EXISTS),
        KvError::LeaseTtlTooLarge => w.u8(ERR_LEASE_TTL_TOO_LARGE),
        KvError::TooManyOps => w.u8(ERR_TOO_MANY_OPS),
        KvError::DuplicateKey => w.u8(ERR_DUPLICATE_KEY),
        KvError::Compacted { compact_revision } => {
            w.u8(ERR_COMPACTED);
            w.i64(*compact_revision);
        }
        KvError::FutureRevision => w.u8(ERR_FUTURE_REVISION),
        KvError::TxnTooDeep { max_depth } => {
            w.u8(ERR_TXN_TOO_DEEP);
            w.varint(*max_depth as u64);
        }
        KvError::InvalidLeaseId { id } => {
            w.u8(ERR_INVALID_LEASE_ID);
            w.i64(*id);
        }
        KvError::Backend(BackendError::Io(detail)) => {
            w.u8(ERR_BACKEND_IO);
            w.bytes(detail.as_bytes());
        }
        KvError::Backend(BackendError::Corrupt(detail)) => {
            w.u8(ERR_BACKEND_CORRUPT);
            w.bytes(detail.as_bytes());
        }
        KvError::InvalidClientSeq => w.u8(ERR_INVALID_CLIENT_SEQ),
        KvError::ClientSessionExpired { client_id } => {
            w.u8(ERR_CLIENT_SESSION_EXPIRED);
            w.varint(*client_id);
        }
        KvError::SequenceAcknowledged { seq, floor } => {
            w.u8(ERR_SEQUENCE_ACKNOWLEDGED);
            w.varint(*seq);
            w.varint(*floor);
        }
        KvError::TooManyClientSessions => w.u8(ERR_TOO_MANY_CLIENT_SESSIONS),
        KvError::TooManyUnacknowledged { client_id } => {
            w.u8(ERR_TOO_MANY_UNACKNOWLEDGED);
            w.varint(*client_id);
        }
        KvError::SessionMemoryFull => w.u8(ERR_SESSION_MEMORY_FULL),
        KvError::DuplicateResponseNotRetained { seq } => {
            w.u8(ERR_DUPLICATE_RESPONSE_NOT_RETAINED);
            w.varint(*seq);
        }
    }
}

fn get_error(r: &mut Reader) -> Result<KvError, DecodeError> {
    Ok(match r.u8("error tag")? {
        ERR_EMPTY_KEY => KvError::EmptyKey,
        ERR_VALUE_PROVIDED => KvError::ValueProvided,
        ERR_LEASE_PROVIDED => KvError::LeaseProvided,
        ERR_KEY_NOT_FOUND => KvError::KeyNotFound,
        ERR_LEASE_NOT_FOUND => KvError::LeaseNotFound,
        ERR_LEASE_EXISTS => KvError::LeaseExists,
        ERR_LEASE_TTL_TOO_LARGE => KvError::LeaseTtlTooLarge,
        ERR_TOO_MANY_OPS => KvError::TooManyOps,
        ERR_DUPLICATE_KEY => KvError::DuplicateKey,
        ERR_COMPACTED => KvError::Compacted {
            compact_revision: r.i64("compact revision")?,
        },
        ERR_FUTURE_REVISION => KvError::FutureRevision,
        ERR_TXN_TOO_DEEP => {
            let depth = r.varint("max depth")?;
            KvError::TxnTooDeep {
                max_depth: usize::try_from(depth).map_err(|_| DecodeError::Invalid {
                    what: "max depth",
                    detail: format!("{depth} does not fit this platform"),
                })?,
            }
        }
        ERR_INVALID_LEASE_ID => KvError::InvalidLeaseId {
            id: r.i64("lease id")?,
        },
        ERR_BACKEND_IO => KvError::Backend(BackendError::Io(get_string(r)?)),
        ERR_BACKEND_CORRUPT => KvError::Backend(BackendError::Corrupt(get_string(r)?)),
        ERR_INVALID_CLIENT_SEQ => KvError::InvalidClientSeq,
        ERR_CLIENT_SESSION_EXPIRED => KvError::ClientSessionExpired {
            client_id: r.varint("client id")?,
        },
        ERR_SEQUENCE_ACKNOWLEDGED => KvError::SequenceAcknowledged {
            seq: r.varint("seq")?,
            floor: r.varint("floor")?,
        },
        ERR_TOO_MANY_CLIENT_SESSIONS => KvError::TooManyClientSessions,
        ERR_TOO_MANY_UNACKNOWLEDGED => KvError::TooManyUnacknowledged {
            client_id: r.varint("client id")?,
        },
        ERR_SESSION_MEMORY_FULL => KvError::SessionMemoryFull,
        ERR_DUPLICATE_RESPONSE_NOT_RETAINED => KvError::DuplicateResponseNotRetained {
            seq: r.varint("seq")?,
        },
        tag => return Err(unknown_tag("error", tag)),
    })
}

fn get_string(r: &mut Reader) -> Result<String, DecodeError> {
    let bytes = r.bytes("error detail")?;
    String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Invalid {
        what: "error detail",
        detail: "not UTF-8".to_string(),
    })
}
