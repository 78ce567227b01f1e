//! Requests and responses, field for field etcd v3's `rpc.proto` and `kv.proto`, so that the
//! gRPC layer translates without interpretation. Headers carry only the revision; cluster and
//! member IDs belong to the server.

use bytes::Bytes;

/// A lease identifier; 0 means "no lease", as in etcd.
pub type LeaseId = i64;
/// The lease value of a key without a lease.
pub const NO_LEASE: LeaseId = 0;

/// etcd's `mvccpb.KeyValue`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Bytes,
    pub create_revision: i64,
    pub mod_revision: i64,
    /// Number of puts since the key was (re)created; a delete resets it to 0.
    pub version: i64,
    pub value: Bytes,
    pub lease: LeaseId,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortOrder {
    #[default]
    None = 0,
    Ascend = 1,
    Descend = 2,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortTarget {
    #[default]
    Key = 0,
    Version = 1,
    Create = 2,
    Mod = 3,
    Value = 4,
}

/// etcd's `RangeRequest`. An empty `range_end` selects `key` alone; `range_end == "\0"` selects
/// every key `>= key`; otherwise `[key, range_end)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeRequest {
    pub key: Bytes,
    pub range_end: Bytes,
    /// 0 means no limit.
    pub limit: i64,
    /// 0 (or negative) means the current revision.
    pub revision: i64,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    pub serializable: bool,
    pub keys_only: bool,
    pub count_only: bool,
    /// Filters; 0 disables each.
    pub min_mod_revision: i64,
    pub max_mod_revision: i64,
    pub min_create_revision: i64,
    pub max_create_revision: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResponse {
    /// The store's current revision when the range was served (etcd's header revision).
    pub revision: i64,
    pub kvs: Vec<KeyValue>,
    /// More keys matched than `limit` let through.
    pub more: bool,
    /// Keys in the range at the read revision, before the min/max filters (as etcd counts).
    pub count: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutRequest {
    pub key: Bytes,
    pub value: Bytes,
    pub lease: LeaseId,
    pub prev_kv: bool,
    pub ignore_value: bool,
    pub ignore_lease: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutResponse {
    pub revision: i64,
    pub prev_kv: Option<KeyValue>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeRequest {
    pub key: Bytes,
    pub range_end: Bytes,
    pub prev_kv: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeResponse {
    pub revision: i64,
    pub deleted: i64,
    pub prev_kvs: Vec<KeyValue>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareResult {
    Equal,
    Greater,
    Less,
    NotEqual,
}

/// What a compare looks at, with the operand it is compared against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    Version(i64),
    Create(i64),
    Mod(i64),
    Value(Bytes),
    Lease(LeaseId),
}

/// etcd's `Compare`: holds when every key in `[key, range_end)` satisfies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    pub result: CompareResult,
    pub target: CompareTarget,
    pub key: Bytes,
    pub range_end: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestOp {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseOp {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnResponse {
    pub revision: i64,
    pub succeeded: bool,
    pub responses: Vec<ResponseOp>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactionRequest {
    pub revision: i64,
    /// etcd waits for the physical compaction; ours is synchronous, so this changes nothing and
    /// is kept only so the request round-trips.
    pub physical: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactionResponse {
    pub revision: i64,
}

/// `now_ms` is the leader's logical clock when it proposed the grant, so every replica computes
/// the same expiry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseGrantRequest {
    /// 0 asks the state machine to choose.
    pub id: LeaseId,
    pub ttl_secs: i64,
    pub now_ms: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseGrantResponse {
    pub revision: i64,
    pub id: LeaseId,
    pub ttl_secs: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseRevokeResponse {
    pub revision: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseKeepAliveResponse {
    pub revision: i64,
    pub id: LeaseId,
    pub ttl_secs: i64,
}

/// etcd's `LeaseTimeToLiveResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseTimeToLive {
    pub revision: i64,
    pub id: LeaseId,
    /// Remaining whole seconds, rounded down; 0 once expired but not yet revoked.
    pub ttl_secs: i64,
    pub granted_ttl_secs: i64,
    /// Attached keys in key order.
    pub keys: Vec<Bytes>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// etcd's `mvccpb.Event`. A delete's `kv` carries only the key and the deleting revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    pub prev_kv: Option<KeyValue>,
}

/// Identifies one mutating request of one client for exactly-once application (Raft thesis §6.3,
/// client sessions). See the `session` module for how the state machine uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientSeq {
    /// Chosen by the client (a random u64); 0 is invalid.
    pub client_id: u64,
    /// Per client, starts at 1 and grows with every new request (a retry reuses it); 0 is invalid.
    pub seq: u64,
    /// The client promises never to retry any seq below this (its lowest unacknowledged seq);
    /// 1 (or 0) means nothing acknowledged yet. Must be `<= seq`.
    pub acked_below: u64,
}

/// The size of the session table, for metrics. `clients`, `stored_responses` and
/// `stored_bytes` are replicated state; `duplicates_answered` and `expired_clients` count what
/// this member did since it opened the store (a restart or snapshot install does not restore
/// them, and they are not part of the state hash).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    pub clients: usize,
    pub stored_responses: usize,
    /// Encoded responses plus a fixed charge per client and per stored response: what
    /// [`crate::KvConfig::max_session_bytes`] bounds.
    pub stored_bytes: u64,
    pub duplicates_answered: u64,
    pub expired_clients: u64,
}
