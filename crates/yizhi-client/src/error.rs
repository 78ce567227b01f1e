//! The client's error type.

use tonic::Code;

/// Everything a call can fail with. Where the server answered, its gRPC code and etcd's own
/// message (`"etcdserver: ..."`, `"mvcc: ..."`) are kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The server answered with an error status.
    #[error("server error ({code:?}): {message}")]
    Server { code: Code, message: String },
    /// No endpoint answered within the retry budget; `last` is the last failure seen.
    #[error("no endpoint reachable after {attempts} attempts: {last}")]
    Unreachable { attempts: u32, last: String },
    /// A write failed in a way that leaves its outcome unknown (the connection broke or the server
    /// timed out after the request left), so it was not retried.
    #[error("outcome unknown (not retried, the request may have been applied): {0}")]
    Ambiguous(String),
    /// A watch asked for history the server has compacted away.
    #[error("required revision has been compacted (compact revision {compact_revision})")]
    Compacted { compact_revision: i64 },
    /// The server canceled a watch for another reason.
    #[error("watch canceled by the server: {reason}")]
    WatchCanceled { reason: String },
    /// The session's lease expired or was revoked: whatever it held is gone.
    #[error("session lost: its lease {lease_id:x} is no longer alive")]
    SessionLost { lease_id: i64 },
    /// A leader-only operation on an election this candidate does not lead.
    #[error("not the leader of the election")]
    NotLeader,
    /// A lock or semaphore operation on something this handle does not hold.
    #[error("not held: {0}")]
    NotHeld(String),
    /// A caller-supplied argument is unusable (empty endpoint list, bad URL, zero capacity...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The server's answer broke the protocol (a missing header, an unexpected response kind).
    #[error("unexpected response: {0}")]
    UnexpectedResponse(String),
    /// A background task the call depends on has stopped (its stream ended for good).
    #[error("stopped: {0}")]
    Stopped(String),
}

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn from_status(status: &tonic::Status) -> Error {
        Error::Server {
            code: status.code(),
            message: status.message().to_string(),
        }
    }

    /// The gRPC code, when the server answered.
    pub fn code(&self) -> Option<Code> {
        match self {
            Error::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}
