//! Translation between etcd's protobuf messages and yizhi-kv's request and response types. The two
//! are field-for-field the same; only enums arrive as raw integers and must be checked.

use bytes::Bytes;
use tonic::Status;
use yizhi_kv as kv;
use yizhi_proto::etcdserverpb as pb;
use yizhi_proto::mvccpb;

fn bytes(v: Vec<u8>) -> Bytes {
    Bytes::from(v)
}

pub fn range_request(r: pb::RangeRequest) -> Result<kv::RangeRequest, Status> {
    let sort_order = match r.sort_order {
        0 => kv::SortOrder::None,
        1 => kv::SortOrder::Ascend,
        2 => kv::SortOrder::Descend,
        other => {
            return Err(Status::invalid_argument(format!(
                "etcdserver: invalid sort order {other}"
            )));
        }
    };
    let sort_target = match r.sort_target {
        0 => kv::SortTarget::Key,
        1 => kv::SortTarget::Version,
        2 => kv::SortTarget::Create,
        3 => kv::SortTarget::Mod,
        4 => kv::SortTarget::Value,
        other => {
            return Err(Status::invalid_argument(format!(
                "etcdserver: invalid sort target {other}"
            )));
        }
    };
    Ok(kv::RangeRequest {
        key: bytes(r.key),
        range_end: bytes(r.range_end),
        limit: r.limit,
        revision: r.revision,
        sort_order,
        sort_target,
        serializable: r.serializable,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    })
}

pub fn put_request(r: pb::PutRequest) -> kv::PutRequest {
    kv::PutRequest {
        key: bytes(r.key),
        value: bytes(r.value),
        lease: r.lease,
        prev_kv: r.prev_kv,
        ignore_value: r.ignore_value,
        ignore_lease: r.ignore_lease,
    }
}

pub fn delete_request(r: pb::DeleteRangeRequest) -> kv::DeleteRangeRequest {
    kv::DeleteRangeRequest {
        key: bytes(r.key),
        range_end: bytes(r.range_end),
        prev_kv: r.prev_kv,
    }
}

fn compare(c: pb::Compare) -> Result<kv::Compare, Status> {
    use pb::compare::TargetUnion as U;
    let result = match c.result {
        0 => kv::CompareResult::Equal,
        1 => kv::CompareResult::Greater,
        2 => kv::CompareResult::Less,
        3 => kv::CompareResult::NotEqual,
        other => {
            return Err(Status::invalid_argument(format!(
                "etcdserver: invalid compare result {other}"
            )));
        }
    };
    // `target` names the field compared; the union carries its value (absent means zero/empty,
    // as in etcd, which reads the union's getter for the named target).
    let union = c.target_union;
    let target = match c.target {
        0 => kv::CompareTarget::Version(match union {
            Some(U::Version(v)) => v,
            _ => 0,
        }),
        1 => kv::CompareTarget::Create(match union {
            Some(U::CreateRevision(v)) => v,
            _ => 0,
        }),
        2 => kv::CompareTarget::Mod(match union {
            Some(U::ModRevision(v)) => v,
            _ => 0,
        }),
        3 => kv::CompareTarget::Value(match union {
            Some(U::Value(v)) => bytes(v),
            _ => Bytes::new(),
        }),
        4 => kv::CompareTarget::Lease(match union {
            Some(U::Lease(v)) => v,
            _ => 0,
        }),
        other => {
            return Err(Status::invalid_argument(format!(
                "etcdserver: invalid compare target {other}"
            )));
        }
    };
    Ok(kv::Compare {
        result,
        target,
        key: bytes(c.key),
        range_end: bytes(c.range_end),
    })
}

fn request_op(op: pb::RequestOp) -> Result<kv::RequestOp, Status> {
    use pb::request_op::Request as R;
    match op.request {
        Some(R::RequestRange(r)) => Ok(kv::RequestOp::Range(range_request(r)?)),
        Some(R::RequestPut(r)) => Ok(kv::RequestOp::Put(put_request(r))),
        Some(R::RequestDeleteRange(r)) => Ok(kv::RequestOp::DeleteRange(delete_request(r))),
        Some(R::RequestTxn(r)) => Ok(kv::RequestOp::Txn(txn_request(r)?)),
        None => Err(Status::invalid_argument("etcdserver: empty request op in txn")),
    }
}

pub fn txn_request(t: pb::TxnRequest) -> Result<kv::TxnRequest, Status> {
    Ok(kv::TxnRequest {
        compare: t.compare.into_iter().map(compare).collect::<Result<_, _>>()?,
        success: t.success.into_iter().map(request_op).collect::<Result<_, _>>()?,
        failure: t.failure.into_iter().map(request_op).collect::<Result<_, _>>()?,
    })
}

pub fn key_value(kv: kv::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key.to_vec(),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value.to_vec(),
        lease: kv.lease,
    }
}

pub fn event(e: kv::Event) -> mvccpb::Event {
    mvccpb::Event {
        r#type: match e.kind {
            kv::EventKind::Put => mvccpb::event::EventType::Put as i32,
            kv::EventKind::Delete => mvccpb::event::EventType::Delete as i32,
        },
        kv: Some(key_value(e.kv)),
        prev_kv: e.prev_kv.map(key_value),
    }
}

/// Responses get their header from the caller (`header`), nested ones too: etcd fills every
/// nested header with the txn's.
pub fn range_response(r: kv::RangeResponse, header: &pb::ResponseHeader) -> pb::RangeResponse {
    pb::RangeResponse {
        header: Some(*header),
        kvs: r.kvs.into_iter().map(key_value).collect(),
        more: r.more,
        count: r.count,
    }
}

pub fn put_response(r: kv::PutResponse, header: &pb::ResponseHeader) -> pb::PutResponse {
    pb::PutResponse {
        header: Some(*header),
        prev_kv: r.prev_kv.map(key_value),
    }
}

pub fn delete_response(r: kv::DeleteRangeResponse, header: &pb::ResponseHeader) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: Some(*header),
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.into_iter().map(key_value).collect(),
    }
}

pub fn txn_response(t: kv::TxnResponse, header: &pb::ResponseHeader) -> pb::TxnResponse {
    use pb::response_op::Response as R;
    let responses = t
        .responses
        .into_iter()
        .map(|op| pb::ResponseOp {
            response: Some(match op {
                kv::ResponseOp::Range(r) => R::ResponseRange(range_response(r, header)),
                kv::ResponseOp::Put(r) => R::ResponsePut(put_response(r, header)),
                kv::ResponseOp::DeleteRange(r) => R::ResponseDeleteRange(delete_response(r, header)),
                kv::ResponseOp::Txn(r) => R::ResponseTxn(txn_response(r, header)),
            }),
        })
        .collect();
    pb::TxnResponse {
        header: Some(*header),
        succeeded: t.succeeded,
        responses,
    }
}
