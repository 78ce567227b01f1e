//! The ways a proposal or a read can fail before or instead of being applied, with etcd's texts.

/// Why a proposal was not applied (or why the client cannot know whether it was).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeFailure {
    /// This member knows no leader: nothing was proposed.
    #[error("etcdserver: no leader")]
    NoLeader,
    /// A leadership transfer is under way: nothing was proposed.
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    #[error("etcdserver: request is too large")]
    TooLarge,
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    #[error("etcdserver: server stopped")]
    Stopped,
    /// The client's deadline passed first. The proposal may still commit: the outcome is unknown.
    #[error("etcdserver: request timed out")]
    TimedOut,
}

impl ProposeFailure {
    const ALL: [ProposeFailure; 6] = [
        ProposeFailure::NoLeader,
        ProposeFailure::LeaderChanged,
        ProposeFailure::TooLarge,
        ProposeFailure::TooManyRequests,
        ProposeFailure::Stopped,
        ProposeFailure::TimedOut,
    ];

    /// A stable one-byte code, for telling a follower why its forwarded proposal failed.
    pub fn code(&self) -> u8 {
        let position = Self::ALL.iter().position(|f| f == self);
        position.expect("every failure is listed in ALL") as u8 + 1
    }

    pub fn from_code(code: u8) -> Option<ProposeFailure> {
        Self::ALL.get(usize::from(code).checked_sub(1)?).cloned()
    }

    /// True when the write may or may not have been applied: the client must not be told it
    /// failed (a client library would retry it and apply it twice, etcd-io/etcd#18424).
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, ProposeFailure::TimedOut | ProposeFailure::Stopped)
    }

    /// The gRPC code etcd answers this failure with (etcd api/v3rpc/rpctypes/error.go). Never
    /// `Cancelled` or `DeadlineExceeded`: etcd's Go client retries those, writes included, when
    /// they arrive while its own deadline has not passed — a write of unknown outcome answered so
    /// is applied twice (issue 13).
    pub fn status_code(&self) -> StatusCode {
        match self {
            ProposeFailure::TooLarge => StatusCode::InvalidArgument,
            ProposeFailure::TooManyRequests => StatusCode::ResourceExhausted,
            ProposeFailure::NoLeader
            | ProposeFailure::LeaderChanged
            | ProposeFailure::Stopped
            | ProposeFailure::TimedOut => StatusCode::Unavailable,
        }
    }
}

/// The gRPC status codes a member's request path answers with, so that the simulator's clients
/// can react to them as real client libraries do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusCode {
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
    /// A membership request the cluster's state refuses (etcd's member errors).
    FailedPrecondition,
    /// An unknown or removed member.
    NotFound,
    /// Only for a request its own client cancelled (etcd's "etcdserver: request cancelled").
    Cancelled,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_codes_round_trip() {
        for failure in ProposeFailure::ALL {
            assert_eq!(ProposeFailure::from_code(failure.code()), Some(failure));
        }
        assert_eq!(ProposeFailure::from_code(0), None);
        assert_eq!(ProposeFailure::from_code(200), None);
    }
}
