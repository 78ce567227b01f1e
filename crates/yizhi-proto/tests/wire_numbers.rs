//! Field numbers, wire types and enum values checked against etcd v3.5's own `.proto` sources
//! (api/etcdserverpb/rpc.proto, api/mvccpb/kv.proto, api/authpb/auth.proto, v3lock.proto,
//! v3election.proto, grpc health.proto). The expected numbers below were copied from those files,
//! not from `proto/` here, so a wrong number in our `.proto` fails a test.
//!
//! Method: encode a message with exactly one field set, then parse the bytes by hand and require
//! exactly one field with the expected number and wire type.

use prost::Message;
use yizhi_proto::etcdserverpb::{self as pb, AlarmType, compare, request_op, response_op, watch_request};
use yizhi_proto::{authpb, grpc_health_v1, mvccpb, v3electionpb, v3lockpb};

const VARINT: u8 = 0;
const LEN: u8 = 2;

/// Reads a base-128 varint; `None` on truncation or more than 10 bytes.
fn read_varint(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..70).step_by(7) {
        let byte = *bytes.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Parses `bytes` as protobuf fields and returns `(field number, wire type)` of each.
fn fields(bytes: &[u8]) -> Vec<(u64, u8)> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < bytes.len() {
        let tag = read_varint(bytes, &mut pos).expect("truncated tag");
        let wire_type = u8::try_from(tag & 7).expect("3 bits");
        match wire_type {
            VARINT => {
                read_varint(bytes, &mut pos).expect("truncated varint");
            }
            LEN => {
                let len = read_varint(bytes, &mut pos).expect("truncated length");
                pos += usize::try_from(len).expect("length fits usize");
                assert!(pos <= bytes.len(), "length-delimited field runs past the end");
            }
            other => panic!("etcd uses no wire type {other}; bytes {bytes:?}"),
        }
        out.push((tag >> 3, wire_type));
    }
    out
}

/// Encodes `msg`, requires exactly one field on the wire and returns it.
fn only_field<M: Message + std::fmt::Debug>(msg: &M) -> (u64, u8) {
    let bytes = msg.encode_to_vec();
    let found = fields(&bytes);
    assert_eq!(
        found.len(),
        1,
        "expected exactly one field in {msg:?}, got {found:?}"
    );
    found[0]
}

/// Each message sets one variant of a oneof, which must be a message field (LEN) numbered as given.
fn assert_variant_numbers<M: Message + std::fmt::Debug>(messages: &[(M, u64)]) {
    for (msg, number) in messages {
        assert_eq!(only_field(msg), (*number, LEN), "{msg:?}");
    }
}

/// One row of the table: a message with one field set, etcd's field number and wire type.
macro_rules! wire {
    ($($ty:ident)::+ { $($field:ident : $value:expr),+ $(,)? } => $number:expr, $wire:expr) => {{
        // Single-field messages make the update a no-op; the macro cannot tell.
        #[allow(clippy::needless_update)]
        let msg = $($ty)::+ { $($field: $value),+, ..Default::default() };
        assert_eq!(
            only_field(&msg),
            ($number, $wire),
            "{} field {}",
            stringify!($($ty)::+),
            stringify!($($field),+)
        );
    }};
}

fn kv() -> Option<mvccpb::KeyValue> {
    Some(mvccpb::KeyValue {
        key: b"k".to_vec(),
        ..Default::default()
    })
}

fn header() -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        revision: 7,
        ..Default::default()
    })
}

#[test]
fn response_header_fields() {
    wire!(pb::ResponseHeader { cluster_id: 1 } => 1, VARINT);
    wire!(pb::ResponseHeader { member_id: 1 } => 2, VARINT);
    wire!(pb::ResponseHeader { revision: 1 } => 3, VARINT);
    wire!(pb::ResponseHeader { raft_term: 1 } => 4, VARINT);
}

#[test]
fn range_request_all_thirteen_fields() {
    use pb::range_request::{SortOrder, SortTarget};
    wire!(pb::RangeRequest { key: b"a".to_vec() } => 1, LEN);
    wire!(pb::RangeRequest { range_end: b"b".to_vec() } => 2, LEN);
    wire!(pb::RangeRequest { limit: 1 } => 3, VARINT);
    wire!(pb::RangeRequest { revision: 1 } => 4, VARINT);
    wire!(pb::RangeRequest { sort_order: SortOrder::Descend as i32 } => 5, VARINT);
    wire!(pb::RangeRequest { sort_target: SortTarget::Value as i32 } => 6, VARINT);
    wire!(pb::RangeRequest { serializable: true } => 7, VARINT);
    wire!(pb::RangeRequest { keys_only: true } => 8, VARINT);
    wire!(pb::RangeRequest { count_only: true } => 9, VARINT);
    wire!(pb::RangeRequest { min_mod_revision: 1 } => 10, VARINT);
    wire!(pb::RangeRequest { max_mod_revision: 1 } => 11, VARINT);
    wire!(pb::RangeRequest { min_create_revision: 1 } => 12, VARINT);
    wire!(pb::RangeRequest { max_create_revision: 1 } => 13, VARINT);
    assert_eq!(
        (
            SortOrder::None as i32,
            SortOrder::Ascend as i32,
            SortOrder::Descend as i32
        ),
        (0, 1, 2)
    );
    assert_eq!(
        (
            SortTarget::Key as i32,
            SortTarget::Version as i32,
            SortTarget::Create as i32,
            SortTarget::Mod as i32,
            SortTarget::Value as i32
        ),
        (0, 1, 2, 3, 4)
    );
}

#[test]
fn range_put_delete_responses_and_requests() {
    wire!(pb::RangeResponse { header: header() } => 1, LEN);
    wire!(pb::RangeResponse { kvs: vec![mvccpb::KeyValue::default()] } => 2, LEN);
    wire!(pb::RangeResponse { more: true } => 3, VARINT);
    wire!(pb::RangeResponse { count: 1 } => 4, VARINT);

    wire!(pb::PutRequest { key: b"a".to_vec() } => 1, LEN);
    wire!(pb::PutRequest { value: b"v".to_vec() } => 2, LEN);
    wire!(pb::PutRequest { lease: 1 } => 3, VARINT);
    wire!(pb::PutRequest { prev_kv: true } => 4, VARINT);
    wire!(pb::PutRequest { ignore_value: true } => 5, VARINT);
    wire!(pb::PutRequest { ignore_lease: true } => 6, VARINT);
    wire!(pb::PutResponse { header: header() } => 1, LEN);
    wire!(pb::PutResponse { prev_kv: kv() } => 2, LEN);

    wire!(pb::DeleteRangeRequest { key: b"a".to_vec() } => 1, LEN);
    wire!(pb::DeleteRangeRequest { range_end: b"b".to_vec() } => 2, LEN);
    wire!(pb::DeleteRangeRequest { prev_kv: true } => 3, VARINT);
    wire!(pb::DeleteRangeResponse { header: header() } => 1, LEN);
    wire!(pb::DeleteRangeResponse { deleted: 1 } => 2, VARINT);
    wire!(pb::DeleteRangeResponse { prev_kvs: vec![mvccpb::KeyValue::default()] } => 3, LEN);
}

#[test]
fn compare_and_its_target_union() {
    use compare::{CompareResult, CompareTarget, TargetUnion};
    wire!(pb::Compare { result: CompareResult::Less as i32 } => 1, VARINT);
    wire!(pb::Compare { target: CompareTarget::Lease as i32 } => 2, VARINT);
    wire!(pb::Compare { key: b"a".to_vec() } => 3, LEN);
    // A oneof member is emitted even when it holds its zero value: etcd relies on that to compare
    // against version 0 ("key does not exist").
    wire!(pb::Compare { target_union: Some(TargetUnion::Version(0)) } => 4, VARINT);
    wire!(pb::Compare { target_union: Some(TargetUnion::CreateRevision(1)) } => 5, VARINT);
    wire!(pb::Compare { target_union: Some(TargetUnion::ModRevision(1)) } => 6, VARINT);
    wire!(pb::Compare { target_union: Some(TargetUnion::Value(b"v".to_vec())) } => 7, LEN);
    wire!(pb::Compare { target_union: Some(TargetUnion::Lease(1)) } => 8, VARINT);
    wire!(pb::Compare { range_end: b"b".to_vec() } => 64, LEN);

    let results = [
        CompareResult::Equal,
        CompareResult::Greater,
        CompareResult::Less,
        CompareResult::NotEqual,
    ];
    assert_eq!(results.map(|r| r as i32), [0, 1, 2, 3]);
    let targets = [
        CompareTarget::Version,
        CompareTarget::Create,
        CompareTarget::Mod,
        CompareTarget::Value,
        CompareTarget::Lease,
    ];
    assert_eq!(targets.map(|t| t as i32), [0, 1, 2, 3, 4]);
}

#[test]
fn request_op_response_op_and_txn() {
    use request_op::Request;
    use response_op::Response;
    let op = |request| pb::RequestOp {
        request: Some(request),
    };
    assert_variant_numbers(&[
        (op(Request::RequestRange(Default::default())), 1),
        (op(Request::RequestPut(Default::default())), 2),
        (op(Request::RequestDeleteRange(Default::default())), 3),
        (op(Request::RequestTxn(Default::default())), 4),
    ]);

    let resp = |response| pb::ResponseOp {
        response: Some(response),
    };
    assert_variant_numbers(&[
        (resp(Response::ResponseRange(Default::default())), 1),
        (resp(Response::ResponsePut(Default::default())), 2),
        (resp(Response::ResponseDeleteRange(Default::default())), 3),
        (resp(Response::ResponseTxn(Default::default())), 4),
    ]);

    wire!(pb::TxnRequest { compare: vec![pb::Compare::default()] } => 1, LEN);
    wire!(pb::TxnRequest { success: vec![pb::RequestOp::default()] } => 2, LEN);
    wire!(pb::TxnRequest { failure: vec![pb::RequestOp::default()] } => 3, LEN);
    wire!(pb::TxnResponse { header: header() } => 1, LEN);
    wire!(pb::TxnResponse { succeeded: true } => 2, VARINT);
    wire!(pb::TxnResponse { responses: vec![pb::ResponseOp::default()] } => 3, LEN);

    wire!(pb::CompactionRequest { revision: 1 } => 1, VARINT);
    wire!(pb::CompactionRequest { physical: true } => 2, VARINT);
    wire!(pb::CompactionResponse { header: header() } => 1, LEN);
}

#[test]
fn watch_messages() {
    use pb::watch_create_request::FilterType;
    use watch_request::RequestUnion;
    let req = |union| pb::WatchRequest {
        request_union: Some(union),
    };
    assert_variant_numbers(&[
        (req(RequestUnion::CreateRequest(Default::default())), 1),
        (req(RequestUnion::CancelRequest(Default::default())), 2),
        (req(RequestUnion::ProgressRequest(Default::default())), 3),
    ]);

    wire!(pb::WatchCreateRequest { key: b"a".to_vec() } => 1, LEN);
    wire!(pb::WatchCreateRequest { range_end: b"b".to_vec() } => 2, LEN);
    wire!(pb::WatchCreateRequest { start_revision: 1 } => 3, VARINT);
    wire!(pb::WatchCreateRequest { progress_notify: true } => 4, VARINT);
    // proto3 packs repeated enums: one length-delimited field.
    wire!(pb::WatchCreateRequest { filters: vec![FilterType::Noput as i32, FilterType::Nodelete as i32] } => 5, LEN);
    wire!(pb::WatchCreateRequest { prev_kv: true } => 6, VARINT);
    wire!(pb::WatchCreateRequest { watch_id: 1 } => 7, VARINT);
    wire!(pb::WatchCreateRequest { fragment: true } => 8, VARINT);
    assert_eq!((FilterType::Noput as i32, FilterType::Nodelete as i32), (0, 1));
    wire!(pb::WatchCancelRequest { watch_id: 1 } => 1, VARINT);

    wire!(pb::WatchResponse { header: header() } => 1, LEN);
    wire!(pb::WatchResponse { watch_id: 1 } => 2, VARINT);
    wire!(pb::WatchResponse { created: true } => 3, VARINT);
    wire!(pb::WatchResponse { canceled: true } => 4, VARINT);
    wire!(pb::WatchResponse { compact_revision: 1 } => 5, VARINT);
    wire!(pb::WatchResponse { cancel_reason: "x".into() } => 6, LEN);
    wire!(pb::WatchResponse { fragment: true } => 7, VARINT);
    wire!(pb::WatchResponse { events: vec![mvccpb::Event::default()] } => 11, LEN);
}

#[test]
fn lease_messages() {
    wire!(pb::LeaseGrantRequest { ttl: 1 } => 1, VARINT);
    wire!(pb::LeaseGrantRequest { id: 1 } => 2, VARINT);
    wire!(pb::LeaseGrantResponse { header: header() } => 1, LEN);
    wire!(pb::LeaseGrantResponse { id: 1 } => 2, VARINT);
    wire!(pb::LeaseGrantResponse { ttl: 1 } => 3, VARINT);
    wire!(pb::LeaseGrantResponse { error: "x".into() } => 4, LEN);
    wire!(pb::LeaseRevokeRequest { id: 1 } => 1, VARINT);
    wire!(pb::LeaseKeepAliveRequest { id: 1 } => 1, VARINT);
    wire!(pb::LeaseKeepAliveResponse { header: header() } => 1, LEN);
    wire!(pb::LeaseKeepAliveResponse { id: 1 } => 2, VARINT);
    wire!(pb::LeaseKeepAliveResponse { ttl: 1 } => 3, VARINT);
    wire!(pb::LeaseTimeToLiveRequest { id: 1 } => 1, VARINT);
    wire!(pb::LeaseTimeToLiveRequest { keys: true } => 2, VARINT);
    wire!(pb::LeaseTimeToLiveResponse { header: header() } => 1, LEN);
    wire!(pb::LeaseTimeToLiveResponse { id: 1 } => 2, VARINT);
    wire!(pb::LeaseTimeToLiveResponse { ttl: 1 } => 3, VARINT);
    wire!(pb::LeaseTimeToLiveResponse { granted_ttl: 1 } => 4, VARINT);
    wire!(pb::LeaseTimeToLiveResponse { keys: vec![b"k".to_vec()] } => 5, LEN);
    wire!(pb::LeaseCheckpoint { id: 1 } => 1, VARINT);
    wire!(pb::LeaseCheckpoint { remaining_ttl: 1 } => 2, VARINT);
    wire!(pb::LeaseCheckpointRequest { checkpoints: vec![pb::LeaseCheckpoint::default()] } => 1, LEN);
    wire!(pb::LeaseStatus { id: 1 } => 1, VARINT);
    wire!(pb::LeaseLeasesResponse { leases: vec![pb::LeaseStatus::default()] } => 2, LEN);
}

#[test]
fn cluster_and_maintenance_messages() {
    wire!(pb::Member { id: 1 } => 1, VARINT);
    wire!(pb::Member { name: "n".into() } => 2, LEN);
    wire!(pb::Member { peer_ur_ls: vec!["http://p".into()] } => 3, LEN);
    wire!(pb::Member { client_ur_ls: vec!["http://c".into()] } => 4, LEN);
    wire!(pb::Member { is_learner: true } => 5, VARINT);
    wire!(pb::MemberAddRequest { peer_ur_ls: vec!["http://p".into()] } => 1, LEN);
    wire!(pb::MemberAddRequest { is_learner: true } => 2, VARINT);
    wire!(pb::MemberAddResponse { member: Some(pb::Member::default()) } => 2, LEN);
    wire!(pb::MemberAddResponse { members: vec![pb::Member::default()] } => 3, LEN);
    wire!(pb::MemberListRequest { linearizable: true } => 1, VARINT);
    wire!(pb::MemberListResponse { members: vec![pb::Member::default()] } => 2, LEN);
    wire!(pb::MemberUpdateRequest { peer_ur_ls: vec!["http://p".into()] } => 2, LEN);

    wire!(pb::StatusResponse { header: header() } => 1, LEN);
    wire!(pb::StatusResponse { version: "3.5.0".into() } => 2, LEN);
    wire!(pb::StatusResponse { db_size: 1 } => 3, VARINT);
    wire!(pb::StatusResponse { leader: 1 } => 4, VARINT);
    wire!(pb::StatusResponse { raft_index: 1 } => 5, VARINT);
    wire!(pb::StatusResponse { raft_term: 1 } => 6, VARINT);
    wire!(pb::StatusResponse { raft_applied_index: 1 } => 7, VARINT);
    wire!(pb::StatusResponse { errors: vec!["e".into()] } => 8, LEN);
    wire!(pb::StatusResponse { db_size_in_use: 1 } => 9, VARINT);
    wire!(pb::StatusResponse { is_learner: true } => 10, VARINT);

    wire!(pb::HashKvRequest { revision: 1 } => 1, VARINT);
    wire!(pb::HashKvResponse { hash: 1 } => 2, VARINT);
    wire!(pb::HashKvResponse { compact_revision: 1 } => 3, VARINT);
    wire!(pb::HashKvResponse { hash_revision: 1 } => 4, VARINT);
    wire!(pb::SnapshotResponse { remaining_bytes: 1 } => 2, VARINT);
    wire!(pb::SnapshotResponse { blob: b"x".to_vec() } => 3, LEN);
    wire!(pb::MoveLeaderRequest { target_id: 1 } => 1, VARINT);

    wire!(pb::AlarmRequest { action: pb::alarm_request::AlarmAction::Deactivate as i32 } => 1, VARINT);
    wire!(pb::AlarmRequest { member_id: 1 } => 2, VARINT);
    wire!(pb::AlarmRequest { alarm: AlarmType::Nospace as i32 } => 3, VARINT);
    wire!(pb::AlarmMember { member_id: 1 } => 1, VARINT);
    wire!(pb::AlarmMember { alarm: AlarmType::Corrupt as i32 } => 2, VARINT);
    assert_eq!(
        [AlarmType::None, AlarmType::Nospace, AlarmType::Corrupt].map(|a| a as i32),
        [0, 1, 2]
    );
    wire!(pb::DowngradeRequest { action: pb::downgrade_request::DowngradeAction::Cancel as i32 } => 1, VARINT);
    wire!(pb::DowngradeRequest { version: "3.4".into() } => 2, LEN);
}

#[test]
fn auth_messages() {
    wire!(pb::AuthenticateRequest { name: "u".into() } => 1, LEN);
    wire!(pb::AuthenticateRequest { password: "p".into() } => 2, LEN);
    wire!(pb::AuthenticateResponse { token: "t".into() } => 2, LEN);
    wire!(pb::AuthUserAddRequest { options: Some(authpb::UserAddOptions { no_password: true }) } => 3, LEN);
    wire!(pb::AuthUserAddRequest { hashed_password: "h".into() } => 4, LEN);
    wire!(pb::AuthUserGrantRoleRequest { user: "u".into() } => 1, LEN);
    wire!(pb::AuthUserGrantRoleRequest { role: "r".into() } => 2, LEN);
    wire!(pb::AuthRoleGrantPermissionRequest { perm: Some(authpb::Permission::default()) } => 2, LEN);
    wire!(pb::AuthRoleRevokePermissionRequest { range_end: b"b".to_vec() } => 3, LEN);
    wire!(pb::AuthStatusResponse { enabled: true } => 2, VARINT);
    wire!(pb::AuthStatusResponse { auth_revision: 1 } => 3, VARINT);
    wire!(pb::AuthRoleGetResponse { perm: vec![authpb::Permission::default()] } => 2, LEN);

    use authpb::permission::Type;
    wire!(authpb::Permission { perm_type: Type::Readwrite as i32 } => 1, VARINT);
    wire!(authpb::Permission { key: b"a".to_vec() } => 2, LEN);
    wire!(authpb::Permission { range_end: b"b".to_vec() } => 3, LEN);
    assert_eq!(
        [Type::Read, Type::Write, Type::Readwrite].map(|t| t as i32),
        [0, 1, 2]
    );
    wire!(authpb::User { roles: vec!["r".into()] } => 3, LEN);
    wire!(authpb::User { options: Some(authpb::UserAddOptions::default()) } => 4, LEN);
    wire!(authpb::Role { key_permission: vec![authpb::Permission::default()] } => 2, LEN);
}

#[test]
fn mvcc_records() {
    wire!(mvccpb::KeyValue { key: b"k".to_vec() } => 1, LEN);
    wire!(mvccpb::KeyValue { create_revision: 1 } => 2, VARINT);
    wire!(mvccpb::KeyValue { mod_revision: 1 } => 3, VARINT);
    wire!(mvccpb::KeyValue { version: 1 } => 4, VARINT);
    wire!(mvccpb::KeyValue { value: b"v".to_vec() } => 5, LEN);
    wire!(mvccpb::KeyValue { lease: 1 } => 6, VARINT);

    use mvccpb::event::EventType;
    wire!(mvccpb::Event { r#type: EventType::Delete as i32 } => 1, VARINT);
    wire!(mvccpb::Event { kv: kv() } => 2, LEN);
    wire!(mvccpb::Event { prev_kv: kv() } => 3, LEN);
    assert_eq!((EventType::Put as i32, EventType::Delete as i32), (0, 1));
}

#[test]
fn lock_election_and_health() {
    wire!(v3lockpb::LockRequest { name: b"l".to_vec() } => 1, LEN);
    wire!(v3lockpb::LockRequest { lease: 1 } => 2, VARINT);
    wire!(v3lockpb::LockResponse { header: header() } => 1, LEN);
    wire!(v3lockpb::LockResponse { key: b"k".to_vec() } => 2, LEN);
    wire!(v3lockpb::UnlockRequest { key: b"k".to_vec() } => 1, LEN);

    wire!(v3electionpb::LeaderKey { name: b"e".to_vec() } => 1, LEN);
    wire!(v3electionpb::LeaderKey { key: b"k".to_vec() } => 2, LEN);
    wire!(v3electionpb::LeaderKey { rev: 1 } => 3, VARINT);
    wire!(v3electionpb::LeaderKey { lease: 1 } => 4, VARINT);
    wire!(v3electionpb::CampaignRequest { value: b"v".to_vec() } => 3, LEN);
    wire!(v3electionpb::CampaignResponse { leader: Some(Default::default()) } => 2, LEN);
    wire!(v3electionpb::LeaderResponse { kv: kv() } => 2, LEN);
    wire!(v3electionpb::ProclaimRequest { value: b"v".to_vec() } => 2, LEN);

    use grpc_health_v1::health_check_response::ServingStatus;
    wire!(grpc_health_v1::HealthCheckRequest { service: "s".into() } => 1, LEN);
    wire!(grpc_health_v1::HealthCheckResponse { status: ServingStatus::Serving as i32 } => 1, VARINT);
    let statuses = [
        ServingStatus::Unknown,
        ServingStatus::Serving,
        ServingStatus::NotServing,
        ServingStatus::ServiceUnknown,
    ];
    assert_eq!(statuses.map(|s| s as i32), [0, 1, 2, 3]);
}

/// A put inside a txn inside a txn, through bytes and back.
#[test]
fn nested_txn_round_trip() {
    use compare::{CompareResult, CompareTarget, TargetUnion};
    use request_op::Request;
    let inner = pb::TxnRequest {
        compare: vec![pb::Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Version as i32,
            key: b"inner".to_vec(),
            target_union: Some(TargetUnion::Version(0)),
            range_end: Vec::new(),
        }],
        success: vec![pb::RequestOp {
            request: Some(Request::RequestPut(pb::PutRequest {
                key: b"inner".to_vec(),
                value: b"v".to_vec(),
                lease: 42,
                prev_kv: true,
                ..Default::default()
            })),
        }],
        failure: vec![pb::RequestOp {
            request: Some(Request::RequestRange(pb::RangeRequest {
                key: b"inner".to_vec(),
                limit: 1,
                ..Default::default()
            })),
        }],
    };
    let outer = pb::TxnRequest {
        compare: vec![pb::Compare {
            result: CompareResult::Greater as i32,
            target: CompareTarget::Mod as i32,
            key: b"a".to_vec(),
            target_union: Some(TargetUnion::ModRevision(5)),
            range_end: b"b".to_vec(),
        }],
        success: vec![
            pb::RequestOp {
                request: Some(Request::RequestTxn(inner.clone())),
            },
            pb::RequestOp {
                request: Some(Request::RequestDeleteRange(pb::DeleteRangeRequest {
                    key: b"x".to_vec(),
                    range_end: vec![0],
                    prev_kv: false,
                })),
            },
        ],
        failure: Vec::new(),
    };
    let bytes = outer.encode_to_vec();
    let decoded = pb::TxnRequest::decode(bytes.as_slice()).expect("decodes");
    assert_eq!(decoded, outer);
    match &decoded.success[0].request {
        Some(Request::RequestTxn(txn)) => assert_eq!(txn, &inner),
        other => panic!("first success op should be the nested txn, got {other:?}"),
    }
    // Outer fields in etcd's order: compare (1) then two success ops (2).
    assert_eq!(fields(&bytes), vec![(1, LEN), (2, LEN), (2, LEN)]);
    // Truncated input is an error, not a panic.
    assert!(pb::TxnRequest::decode(&bytes[..bytes.len() - 1]).is_err());
}
