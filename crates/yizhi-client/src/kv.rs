//! The KV facade: get, put, delete, txn and compact, with option builders.
//!
//! Responses are etcd's own messages (re-exported as [`crate::pb`]), so nothing is lost in
//! translation. Reads and [`Txn::retry_safe`] transactions are retried on another endpoint after
//! an unavailability; puts, deletes and ordinary transactions only when they provably never left
//! (see [`crate::client`]).

use std::time::Duration;

use tonic::metadata::MetadataMap;
use yizhi_proto::etcdserverpb as pb;
use yizhi_proto::etcdserverpb::kv_client::KvClient;

use crate::client::{Client, MAX_RESPONSE_BYTES, Retry};
use crate::error::{Error, Result};

pub use pb::compare::CompareResult as CompareOp;
pub use pb::range_request::{SortOrder, SortTarget};

/// The key after every key starting with `prefix` (etcd's `range_end` for a prefix). An empty or
/// all-`0xff` prefix means "to the end of the keyspace": `[0]`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The `range_end` of a request on `key`: the prefix's end when `prefix`, else `range_end`.
pub(crate) fn range_end_for(key: &[u8], prefix: bool, range_end: &[u8]) -> Vec<u8> {
    if prefix {
        prefix_end(key)
    } else {
        range_end.to_vec()
    }
}

/// Builder methods of the option types, each item followed by a comma: `key_range` gives
/// `prefix()` and `range_end(..)` (for the types with `prefix` and `range_end` fields), `flag` a
/// method switching a `bool` field on, `field: Type` a method setting that field.
macro_rules! option_builders {
    () => {};
    (key_range, $($rest:tt)*) => {
        /// Every key starting with the given key.
        pub fn prefix(mut self) -> Self {
            self.prefix = true;
            self
        }
        /// Keys in `[key, range_end)`.
        pub fn range_end(mut self, range_end: impl Into<Vec<u8>>) -> Self {
            self.range_end = range_end.into();
            self
        }
        option_builders!($($rest)*);
    };
    ($(#[$doc:meta])* $flag:ident, $($rest:tt)*) => {
        $(#[$doc])*
        pub fn $flag(mut self) -> Self {
            self.$flag = true;
            self
        }
        option_builders!($($rest)*);
    };
    ($(#[$doc:meta])* $field:ident: $type:ty, $($rest:tt)*) => {
        $(#[$doc])*
        pub fn $field(mut self, $field: $type) -> Self {
            self.$field = $field;
            self
        }
        option_builders!($($rest)*);
    };
}
pub(crate) use option_builders;

/// Request metadata of a bounded-staleness read (milliseconds).
pub const MAX_STALENESS_KEY: &str = "yizhi-max-staleness-ms";

fn kv(channel: tonic::transport::Channel) -> KvClient<tonic::transport::Channel> {
    KvClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES)
}

/// Options of a range read.
#[derive(Clone, Debug, Default)]
pub struct GetOptions {
    range_end: Vec<u8>,
    prefix: bool,
    revision: i64,
    limit: i64,
    sort: Option<(SortTarget, SortOrder)>,
    keys_only: bool,
    count_only: bool,
    serializable: bool,
    max_staleness: Option<Duration>,
    min_create_revision: i64,
    max_create_revision: i64,
}

impl GetOptions {
    pub fn new() -> Self {
        Self::default()
    }
    option_builders! {
        key_range,
        /// Read as of this revision (0: the latest).
        revision: i64,
        limit: i64,
        keys_only,
        count_only,
        /// Read the contacted member's local state (may be stale; no leader round trip).
        serializable,
        /// Only keys created at or after this revision.
        min_create_revision: i64,
        /// Only keys created at or before this revision.
        max_create_revision: i64,
    }
    pub fn sort(mut self, target: SortTarget, order: SortOrder) -> Self {
        self.sort = Some((target, order));
        self
    }
    /// Bounded staleness: the contacted member may answer from its own state if that state holds
    /// every write acknowledged more than `max_staleness` ago (yizhi's `yizhi-max-staleness-ms`
    /// read level). Cheaper than a linearizable read on a busy member; etcd ignores the request
    /// metadata and answers linearizably, which keeps the promise.
    pub fn bounded_staleness(mut self, max_staleness: Duration) -> Self {
        self.max_staleness = Some(max_staleness);
        self
    }

    pub(crate) fn request(&self, key: Vec<u8>) -> pb::RangeRequest {
        let range_end = range_end_for(&key, self.prefix, &self.range_end);
        let (sort_target, sort_order) = self
            .sort
            .map(|(target, order)| (target as i32, order as i32))
            .unwrap_or((SortTarget::Key as i32, SortOrder::None as i32));
        pb::RangeRequest {
            key,
            range_end,
            limit: self.limit,
            revision: self.revision,
            sort_order,
            sort_target,
            serializable: self.serializable,
            keys_only: self.keys_only,
            count_only: self.count_only,
            min_mod_revision: 0,
            max_mod_revision: 0,
            min_create_revision: self.min_create_revision,
            max_create_revision: self.max_create_revision,
        }
    }
}

/// Options of a put.
#[derive(Clone, Debug, Default)]
pub struct PutOptions {
    lease: i64,
    prev_kv: bool,
    ignore_value: bool,
    ignore_lease: bool,
}

impl PutOptions {
    pub fn new() -> Self {
        Self::default()
    }
    option_builders! {
        /// Attach the key to a lease: it is deleted when the lease ends.
        lease: i64,
        prev_kv,
        ignore_value,
        ignore_lease,
    }

    pub(crate) fn request(&self, key: Vec<u8>, value: Vec<u8>) -> pb::PutRequest {
        pb::PutRequest {
            key,
            value,
            lease: self.lease,
            prev_kv: self.prev_kv,
            ignore_value: self.ignore_value,
            ignore_lease: self.ignore_lease,
        }
    }
}

/// Options of a delete.
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    range_end: Vec<u8>,
    prefix: bool,
    prev_kv: bool,
}

impl DeleteOptions {
    pub fn new() -> Self {
        Self::default()
    }
    option_builders!(key_range, prev_kv,);

    pub(crate) fn request(&self, key: Vec<u8>) -> pb::DeleteRangeRequest {
        let range_end = range_end_for(&key, self.prefix, &self.range_end);
        pb::DeleteRangeRequest {
            key,
            range_end,
            prev_kv: self.prev_kv,
        }
    }
}

/// One comparison of a transaction's guard.
#[derive(Clone, Debug)]
pub struct Compare(pb::Compare);

impl Compare {
    fn new(
        key: impl Into<Vec<u8>>,
        op: CompareOp,
        target: pb::compare::CompareTarget,
        union: pb::compare::TargetUnion,
    ) -> Self {
        Compare(pb::Compare {
            result: op as i32,
            target: target as i32,
            key: key.into(),
            range_end: Vec::new(),
            target_union: Some(union),
        })
    }
    pub fn value(key: impl Into<Vec<u8>>, op: CompareOp, value: impl Into<Vec<u8>>) -> Self {
        use pb::compare::{CompareTarget, TargetUnion};
        Self::new(key, op, CompareTarget::Value, TargetUnion::Value(value.into()))
    }
    pub fn version(key: impl Into<Vec<u8>>, op: CompareOp, version: i64) -> Self {
        use pb::compare::{CompareTarget, TargetUnion};
        Self::new(key, op, CompareTarget::Version, TargetUnion::Version(version))
    }
    /// `create_revision == 0` means "the key does not exist".
    pub fn create_revision(key: impl Into<Vec<u8>>, op: CompareOp, revision: i64) -> Self {
        use pb::compare::{CompareTarget, TargetUnion};
        Self::new(
            key,
            op,
            CompareTarget::Create,
            TargetUnion::CreateRevision(revision),
        )
    }
    pub fn mod_revision(key: impl Into<Vec<u8>>, op: CompareOp, revision: i64) -> Self {
        use pb::compare::{CompareTarget, TargetUnion};
        Self::new(key, op, CompareTarget::Mod, TargetUnion::ModRevision(revision))
    }
    pub fn lease(key: impl Into<Vec<u8>>, op: CompareOp, lease_id: i64) -> Self {
        use pb::compare::{CompareTarget, TargetUnion};
        Self::new(key, op, CompareTarget::Lease, TargetUnion::Lease(lease_id))
    }
    /// Compare every key in `[key, range_end)` instead of one.
    pub fn with_range_end(mut self, range_end: impl Into<Vec<u8>>) -> Self {
        self.0.range_end = range_end.into();
        self
    }
}

/// One operation of a transaction branch.
#[derive(Clone, Debug)]
pub struct Op(pb::RequestOp);

impl Op {
    pub fn get(key: impl Into<Vec<u8>>, options: GetOptions) -> Self {
        Op(pb::RequestOp {
            request: Some(pb::request_op::Request::RequestRange(options.request(key.into()))),
        })
    }
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>, options: PutOptions) -> Self {
        Op(pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(
                options.request(key.into(), value.into()),
            )),
        })
    }
    pub fn delete(key: impl Into<Vec<u8>>, options: DeleteOptions) -> Self {
        Op(pb::RequestOp {
            request: Some(pb::request_op::Request::RequestDeleteRange(
                options.request(key.into()),
            )),
        })
    }
    pub fn txn(txn: Txn) -> Self {
        Op(pb::RequestOp {
            request: Some(pb::request_op::Request::RequestTxn(txn.request)),
        })
    }
}

/// A transaction: `if all(when) then and_then else or_else`, applied atomically.
#[derive(Clone, Debug, Default)]
pub struct Txn {
    request: pb::TxnRequest,
    retry_safe: bool,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Self {
        self.request.compare.extend(compares.into_iter().map(|c| c.0));
        self
    }
    pub fn and_then(mut self, ops: impl IntoIterator<Item = Op>) -> Self {
        self.request.success.extend(ops.into_iter().map(|o| o.0));
        self
    }
    pub fn or_else(mut self, ops: impl IntoIterator<Item = Op>) -> Self {
        self.request.failure.extend(ops.into_iter().map(|o| o.0));
        self
    }
    /// Declares that applying this transaction twice has the effect of applying it once (its
    /// guard fails the second time), so it may be retried after an ambiguous failure.
    pub fn retry_safe(mut self) -> Self {
        self.retry_safe = true;
        self
    }
}

/// Accessors for the answers of a transaction's branch.
pub trait TxnResponseExt {
    /// The `n`th answer, if it is a range answer.
    fn range(&self, n: usize) -> Option<&pb::RangeResponse>;
    /// The `n`th answer, if it is a put answer.
    fn put(&self, n: usize) -> Option<&pb::PutResponse>;
    /// The `n`th answer, if it is a delete answer.
    fn delete(&self, n: usize) -> Option<&pb::DeleteRangeResponse>;
    /// The header's revision (0 if the server sent no header).
    fn revision(&self) -> i64;
}

impl TxnResponseExt for pb::TxnResponse {
    fn range(&self, n: usize) -> Option<&pb::RangeResponse> {
        match self.responses.get(n)?.response.as_ref()? {
            pb::response_op::Response::ResponseRange(r) => Some(r),
            _ => None,
        }
    }
    fn put(&self, n: usize) -> Option<&pb::PutResponse> {
        match self.responses.get(n)?.response.as_ref()? {
            pb::response_op::Response::ResponsePut(r) => Some(r),
            _ => None,
        }
    }
    fn delete(&self, n: usize) -> Option<&pb::DeleteRangeResponse> {
        match self.responses.get(n)?.response.as_ref()? {
            pb::response_op::Response::ResponseDeleteRange(r) => Some(r),
            _ => None,
        }
    }
    fn revision(&self) -> i64 {
        self.header.as_ref().map_or(0, |h| h.revision)
    }
}

/// The revision in a response header, or an error naming the call that lacked one.
pub(crate) fn header_revision(header: Option<&pb::ResponseHeader>, what: &str) -> Result<i64> {
    header
        .map(|h| h.revision)
        .ok_or_else(|| Error::UnexpectedResponse(format!("{what} answer without a header")))
}

impl Client {
    pub async fn get(&self, key: impl Into<Vec<u8>>, options: GetOptions) -> Result<pb::RangeResponse> {
        let request = options.request(key.into());
        let mut metadata = MetadataMap::new();
        if let Some(bound) = options.max_staleness {
            let ms = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX);
            metadata.insert(
                MAX_STALENESS_KEY,
                ms.to_string().parse().expect("decimal is ASCII"),
            );
        }
        self.unary_with_metadata("Range", Retry::Safe, metadata, request, |ch, r| async move {
            kv(ch).range(r).await
        })
        .await
    }

    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        options: PutOptions,
    ) -> Result<pb::PutResponse> {
        let request = options.request(key.into(), value.into());
        self.unary("Put", Retry::OnlyIfUnsent, request, |ch, r| async move {
            kv(ch).put(r).await
        })
        .await
    }

    pub async fn delete(
        &self,
        key: impl Into<Vec<u8>>,
        options: DeleteOptions,
    ) -> Result<pb::DeleteRangeResponse> {
        let request = options.request(key.into());
        self.unary("DeleteRange", Retry::OnlyIfUnsent, request, |ch, r| async move {
            kv(ch).delete_range(r).await
        })
        .await
    }

    pub async fn txn(&self, txn: Txn) -> Result<pb::TxnResponse> {
        let retry = if txn.retry_safe {
            Retry::Safe
        } else {
            Retry::OnlyIfUnsent
        };
        self.unary(
            "Txn",
            retry,
            txn.request,
            |ch, r| async move { kv(ch).txn(r).await },
        )
        .await
    }

    /// Compacts history up to `revision` (watches and reads below it fail afterwards).
    pub async fn compact(&self, revision: i64, physical: bool) -> Result<pb::CompactionResponse> {
        let request = pb::CompactionRequest { revision, physical };
        self.unary("Compact", Retry::Safe, request, |ch, r| async move {
            kv(ch).compact(r).await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte_below_0xff() {
        assert_eq!(prefix_end(b"a/"), b"a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }

    #[test]
    fn builders_fill_etcds_fields() {
        let request = GetOptions::new()
            .prefix()
            .limit(1)
            .sort(SortTarget::Create, SortOrder::Ascend)
            .max_create_revision(9)
            .request(b"lock/".to_vec());
        assert_eq!(request.range_end, b"lock0".to_vec());
        assert_eq!((request.limit, request.max_create_revision), (1, 9));
        assert_eq!(request.sort_target, SortTarget::Create as i32);
        let compare = Compare::create_revision("k", CompareOp::Equal, 0).0;
        assert_eq!(compare.target, pb::compare::CompareTarget::Create as i32);
        assert_eq!(
            compare.target_union,
            Some(pb::compare::TargetUnion::CreateRevision(0))
        );
    }
}
