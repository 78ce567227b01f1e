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
    /// A client session field is 0 or `acked_below > seq`.
    #[error(
        "yizhi: invalid client request sequence (client id and seq must be non-zero, acked_below <= seq)"
    )]
    InvalidClientSeq,
    /// The client has had requests acknowledged, so it had a session, and that session is gone
    /// (idle too long): a retry can no longer be recognised.
    #[error("yizhi: client session {client_id:#x} expired; the request may or may not have been applied")]
    ClientSessionExpired { client_id: u64 },
    /// The client promised never to retry below `floor`, and its response is no longer kept.
    #[error("yizhi: request sequence {seq} was already acknowledged (client floor {floor})")]
    SequenceAcknowledged { seq: u64, floor: u64 },
    /// Creating another session would exceed `KvConfig::max_client_sessions`; nothing applied.
    #[error("yizhi: too many client sessions; retry later")]
    TooManyClientSessions,
    /// The client holds `KvConfig::max_unacknowledged_per_client` unacknowledged responses;
    /// nothing applied.
    #[error("yizhi: client {client_id:#x} has too many unacknowledged requests; retry later")]
    TooManyUnacknowledged { client_id: u64 },
    /// The session table cannot take another response within `KvConfig::max_session_bytes`;
    /// nothing applied.
    #[error("yizhi: client session memory is full; retry later")]
    SessionMemoryFull,
    /// A duplicate of a request that was applied once, whose response was too large to keep.
    #[error("yizhi: request sequence {seq} was applied once; its response was too large to keep")]
    DuplicateResponseNotRetained { seq: u64 },
    /// The backend failed; the replica can no longer apply deterministically and must stop.
    #[error("yizhi-kv backend: {0}")]
    Backend(#[from] BackendError),
}
