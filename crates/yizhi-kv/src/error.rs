//! Every error a client or the log can provoke, with etcd's exact wording where etcd has one, so
//! the gRPC layer can pass the message through unchanged.

use thiserror::Error;

use crate::backend::BackendError;

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum KvError {
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// `compact_revision` lets a watch be cancelled with the point it fell behind.
    #[error("mvcc: required revision has been compacted")]
    Compacted { compact_revision: i64 },
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    /// Not an etcd error: etcd bounds nesting only by request size; we bound it so that decoding
    /// and applying never recurse without limit.
    #[error("yizhi-kv: txn nested deeper than {max_depth} levels")]
    TxnTooDeep { max_depth: usize },
    /// etcd reserves 0 for "no lease"; negative IDs cannot come from etcd's clients either.
    #[error("yizhi-kv: invalid lease ID {id}")]
    InvalidLeaseId { id: i64 },
    /// The backend failed; the replica can no longer apply deterministically and must stop.
    #[error("yizhi-kv backend: {0}")]
    Backend(#[from] BackendError),
}
