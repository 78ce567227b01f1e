//! The replicated command encoding: `[version][tag][fields…]`, fields in a fixed order, integers as
//! varints (signed ones zigzagged), byte strings length-prefixed, booleans packed into flag bytes.
//! Decoding is a pure function over a byte slice; any malformed input is a [`DecodeError`].
//! A new field or command means a new [`COMMAND_CODEC_VERSION`]; old versions stay decodable
//! because old entries stay in logs.
//!
//! Versions: 1 has every command but [`Command::Deduped`]; 2 adds it (tag 9: client id, seq,
//! acked-below and `now_ms` as varints, then the wrapped command's tag and fields; a wrapped
//! `Deduped` is refused). An entry is written with the lowest version that can carry it, so a
//! member that only reads version 1 keeps applying everything but deduplicated commands during
//! a rolling upgrade.
//!
//! Responses kept by the session table have their own encoding: [`encode_response`].

use crate::command::Command;
use crate::config::MAX_TXN_DEPTH;
pub use crate::response_codec::{RESPONSE_CODEC_VERSION, decode_response, encode_response};
use crate::types::{
    ClientSeq, CompactionRequest, Compare, CompareResult, CompareTarget, DeleteRangeRequest,
    LeaseGrantRequest, PutRequest, RangeRequest, RequestOp, SortOrder, SortTarget, TxnRequest,
};
use crate::wire::{
    DecodeError, Reader, TAG_COMPACT, TAG_DELETE_RANGE, TAG_LEASE_GRANT, TAG_LEASE_KEEP_ALIVE,
    TAG_LEASE_REVOKE, TAG_PUT, TAG_RANGE, TAG_TXN, Writer, unknown_tag,
};

/// The newest version this build writes (for [`Command::Deduped`]) and reads.
pub const COMMAND_CODEC_VERSION: u8 = 2;
/// Every command but `Deduped` is written in this version.
const BASE_CODEC_VERSION: u8 = 1;

const TAG_DEDUPED: u8 = 9;

pub fn encode_command(command: &Command) -> Vec<u8> {
    let mut w = Writer::default();
    match command {
        Command::Deduped {
            request,
            now_ms,
            command: inner,
        } => {
            assert!(
                !matches!(**inner, Command::Deduped { .. }),
                "a Deduped command wraps another: {command:?}"
            );
            w.u8(COMMAND_CODEC_VERSION);
            w.u8(TAG_DEDUPED);
            w.varint(request.client_id);
            w.varint(request.seq);
            w.varint(request.acked_below);
            w.varint(*now_ms);
            put_body(&mut w, inner);
        }
        plain => {
            w.u8(BASE_CODEC_VERSION);
            put_body(&mut w, plain);
        }
    }
    w.buf
}

/// A command's tag and fields.
fn put_body(w: &mut Writer, command: &Command) {
    match command {
        Command::Range(r) => w.tagged(TAG_RANGE, |w| put_range(w, r)),
        Command::Put(p) => w.tagged(TAG_PUT, |w| put_put(w, p)),
        Command::DeleteRange(d) => w.tagged(TAG_DELETE_RANGE, |w| put_delete(w, d)),
        Command::Txn(t) => w.tagged(TAG_TXN, |w| put_txn(w, t)),
        Command::Compact(c) => w.tagged(TAG_COMPACT, |w| {
            w.i64(c.revision);
            w.flags(&[c.physical]);
        }),
        Command::LeaseGrant(g) => w.tagged(TAG_LEASE_GRANT, |w| {
            w.i64(g.id);
            w.i64(g.ttl_secs);
            w.varint(g.now_ms);
        }),
        Command::LeaseRevoke { id } => w.tagged(TAG_LEASE_REVOKE, |w| w.i64(*id)),
        Command::LeaseKeepAlive { id, now_ms } => w.tagged(TAG_LEASE_KEEP_ALIVE, |w| {
            w.i64(*id);
            w.varint(*now_ms);
        }),
        Command::Deduped { .. } => unreachable!("encode_command writes Deduped itself"),
    }
}

pub fn decode_command(data: &[u8]) -> Result<Command, DecodeError> {
    if data.is_empty() {
        return Err(DecodeError::Empty);
    }
    let mut r = Reader::new(data);
    let version = r.u8("version")?;
    if !(BASE_CODEC_VERSION..=COMMAND_CODEC_VERSION).contains(&version) {
        return Err(DecodeError::UnsupportedVersion {
            what: "command",
            version,
        });
    }
    let command = match r.u8("command tag")? {
        TAG_DEDUPED if version >= 2 => {
            let request = ClientSeq {
                client_id: r.varint("client id")?,
                seq: r.varint("client seq")?,
                acked_below: r.varint("client acked below")?,
            };
            let now_ms = r.varint("deduped now")?;
            let inner = match r.u8("command tag")? {
                TAG_DEDUPED => {
                    return Err(DecodeError::Invalid {
                        what: "command",
                        detail: "a Deduped command wraps another Deduped".to_string(),
                    });
                }
                tag => get_body(&mut r, tag)?,
            };
            Command::Deduped {
                request,
                now_ms,
                command: Box::new(inner),
            }
        }
        tag => get_body(&mut r, tag)?,
    };
    r.finish("command")?;
    Ok(command)
}

/// The fields of a command whose tag was read; `Deduped` is not among them.
fn get_body(r: &mut Reader, tag: u8) -> Result<Command, DecodeError> {
    let command = match tag {
        TAG_RANGE => Command::Range(get_range(r)?),
        TAG_PUT => Command::Put(get_put(r)?),
        TAG_DELETE_RANGE => Command::DeleteRange(get_delete(r)?),
        TAG_TXN => Command::Txn(get_txn(r, 0)?),
        TAG_COMPACT => {
            let revision = r.i64("compact revision")?;
            let [physical] = r.flags("compact flags")?;
            Command::Compact(CompactionRequest { revision, physical })
        }
        TAG_LEASE_GRANT => Command::LeaseGrant(LeaseGrantRequest {
            id: r.i64("lease id")?,
            ttl_secs: r.i64("lease ttl")?,
            now_ms: r.varint("lease now")?,
        }),
        TAG_LEASE_REVOKE => Command::LeaseRevoke {
            id: r.i64("lease id")?,
        },
        TAG_LEASE_KEEP_ALIVE => Command::LeaseKeepAlive {
            id: r.i64("lease id")?,
            now_ms: r.varint("lease now")?,
        },
        tag => return Err(unknown_tag("command", tag)),
    };
    Ok(command)
}

fn put_range(w: &mut Writer, r: &RangeRequest) {
    w.bytes(&r.key);
    w.bytes(&r.range_end);
    w.i64(r.limit);
    w.i64(r.revision);
    w.u8(r.sort_order as u8);
    w.u8(r.sort_target as u8);
    w.flags(&[r.serializable, r.keys_only, r.count_only]);
    for v in [
        r.min_mod_revision,
        r.max_mod_revision,
        r.min_create_revision,
        r.max_create_revision,
    ] {
        w.i64(v);
    }
}

fn get_range(r: &mut Reader) -> Result<RangeRequest, DecodeError> {
    let key = r.bytes("range key")?;
    let range_end = r.bytes("range end")?;
    let limit = r.i64("range limit")?;
    let revision = r.i64("range revision")?;
    let sort_order = match r.u8("sort order")? {
        0 => SortOrder::None,
        1 => SortOrder::Ascend,
        2 => SortOrder::Descend,
        tag => return Err(unknown_tag("sort order", tag)),
    };
    let sort_target = match r.u8("sort target")? {
        0 => SortTarget::Key,
        1 => SortTarget::Version,
        2 => SortTarget::Create,
        3 => SortTarget::Mod,
        4 => SortTarget::Value,
        tag => return Err(unknown_tag("sort target", tag)),
    };
    let [serializable, keys_only, count_only] = r.flags("range flags")?;
    Ok(RangeRequest {
        key,
        range_end,
        limit,
        revision,
        sort_order,
        sort_target,
        serializable,
        keys_only,
        count_only,
        min_mod_revision: r.i64("min mod")?,
        max_mod_revision: r.i64("max mod")?,
        min_create_revision: r.i64("min create")?,
        max_create_revision: r.i64("max create")?,
    })
}

fn put_put(w: &mut Writer, p: &PutRequest) {
    w.bytes(&p.key);
    w.bytes(&p.value);
    w.i64(p.lease);
    w.flags(&[p.prev_kv, p.ignore_value, p.ignore_lease]);
}

fn get_put(r: &mut Reader) -> Result<PutRequest, DecodeError> {
    let key = r.bytes("put key")?;
    let value = r.bytes("put value")?;
    let lease = r.i64("put lease")?;
    let [prev_kv, ignore_value, ignore_lease] = r.flags("put flags")?;
    Ok(PutRequest {
        key,
        value,
        lease,
        prev_kv,
        ignore_value,
        ignore_lease,
    })
}

fn put_delete(w: &mut Writer, d: &DeleteRangeRequest) {
    w.bytes(&d.key);
    w.bytes(&d.range_end);
    w.flags(&[d.prev_kv]);
}

fn get_delete(r: &mut Reader) -> Result<DeleteRangeRequest, DecodeError> {
    let key = r.bytes("delete key")?;
    let range_end = r.bytes("delete range end")?;
    let [prev_kv] = r.flags("delete flags")?;
    Ok(DeleteRangeRequest {
        key,
        range_end,
        prev_kv,
    })
}

fn put_txn(w: &mut Writer, t: &TxnRequest) {
    w.varint(t.compare.len() as u64);
    for c in &t.compare {
        put_compare(w, c);
    }
    for ops in [&t.success, &t.failure] {
        w.varint(ops.len() as u64);
        for op in ops {
            put_op(w, op);
        }
    }
}

fn get_txn(r: &mut Reader, depth: usize) -> Result<TxnRequest, DecodeError> {
    if depth >= MAX_TXN_DEPTH {
        return Err(DecodeError::TooDeep {
            max_depth: MAX_TXN_DEPTH,
        });
    }
    let compares = r.count("compare count")?;
    let mut compare = Vec::with_capacity(compares);
    for _ in 0..compares {
        compare.push(get_compare(r)?);
    }
    let success = get_ops(r, depth)?;
    let failure = get_ops(r, depth)?;
    Ok(TxnRequest {
        compare,
        success,
        failure,
    })
}

fn get_ops(r: &mut Reader, depth: usize) -> Result<Vec<RequestOp>, DecodeError> {
    let n = r.count("op count")?;
    let mut ops = Vec::with_capacity(n);
    for _ in 0..n {
        ops.push(match r.u8("op tag")? {
            TAG_RANGE => RequestOp::Range(get_range(r)?),
            TAG_PUT => RequestOp::Put(get_put(r)?),
            TAG_DELETE_RANGE => RequestOp::DeleteRange(get_delete(r)?),
            TAG_TXN => RequestOp::Txn(get_txn(r, depth + 1)?),
            tag => return Err(unknown_tag("txn op", tag)),
        });
    }
    Ok(ops)
}

fn put_op(w: &mut Writer, op: &RequestOp) {
    match op {
        RequestOp::Range(r) => w.tagged(TAG_RANGE, |w| put_range(w, r)),
        RequestOp::Put(p) => w.tagged(TAG_PUT, |w| put_put(w, p)),
        RequestOp::DeleteRange(d) => w.tagged(TAG_DELETE_RANGE, |w| put_delete(w, d)),
        RequestOp::Txn(t) => w.tagged(TAG_TXN, |w| put_txn(w, t)),
    }
}

const RESULT_EQUAL: u8 = 0;
const RESULT_GREATER: u8 = 1;
const RESULT_LESS: u8 = 2;
const RESULT_NOT_EQUAL: u8 = 3;
const TARGET_VERSION: u8 = 0;
const TARGET_CREATE: u8 = 1;
const TARGET_MOD: u8 = 2;
const TARGET_VALUE: u8 = 3;
const TARGET_LEASE: u8 = 4;

fn put_compare(w: &mut Writer, c: &Compare) {
    w.u8(match c.result {
        CompareResult::Equal => RESULT_EQUAL,
        CompareResult::Greater => RESULT_GREATER,
        CompareResult::Less => RESULT_LESS,
        CompareResult::NotEqual => RESULT_NOT_EQUAL,
    });
    match &c.target {
        CompareTarget::Version(v) => (w.u8(TARGET_VERSION), w.i64(*v)),
        CompareTarget::Create(v) => (w.u8(TARGET_CREATE), w.i64(*v)),
        CompareTarget::Mod(v) => (w.u8(TARGET_MOD), w.i64(*v)),
        CompareTarget::Value(v) => (w.u8(TARGET_VALUE), w.bytes(v)),
        CompareTarget::Lease(v) => (w.u8(TARGET_LEASE), w.i64(*v)),
    };
    w.bytes(&c.key);
    w.bytes(&c.range_end);
}

fn get_compare(r: &mut Reader) -> Result<Compare, DecodeError> {
    let result = match r.u8("compare result")? {
        RESULT_EQUAL => CompareResult::Equal,
        RESULT_GREATER => CompareResult::Greater,
        RESULT_LESS => CompareResult::Less,
        RESULT_NOT_EQUAL => CompareResult::NotEqual,
        tag => return Err(unknown_tag("compare result", tag)),
    };
    let target = match r.u8("compare target")? {
        TARGET_VERSION => CompareTarget::Version(r.i64("compare version")?),
        TARGET_CREATE => CompareTarget::Create(r.i64("compare create")?),
        TARGET_MOD => CompareTarget::Mod(r.i64("compare mod")?),
        TARGET_VALUE => CompareTarget::Value(r.bytes("compare value")?),
        TARGET_LEASE => CompareTarget::Lease(r.i64("compare lease")?),
        tag => return Err(unknown_tag("compare target", tag)),
    };
    Ok(Compare {
        result,
        target,
        key: r.bytes("compare key")?,
        range_end: r.bytes("compare range end")?,
    })
}
