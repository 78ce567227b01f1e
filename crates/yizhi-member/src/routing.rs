//! Where a proposal goes: into the local engine, to the leader, or back to its client.
//!
//! The rule that closes issue 13's first anomaly: **no proposal enters a log after its client's
//! deadline**. A proposal carries its client's deadline from the API handler to the driver and,
//! when forwarded, to the leader; whoever is about to propose or forward it checks the deadline
//! first and refuses ("request timed out") once it has passed. A proposal made before the
//! deadline may still commit after it — the unknown outcome a client expects after a timeout —
//! but a copy held up in a partitioned link or a full queue can no longer surface minutes later
//! and apply a write its client has long since retried elsewhere.
//!
//! Deadlines compare across members when a proposal is forwarded, so the server keeps them on the
//! wall clock (milliseconds since the Unix epoch) and relies on members' clocks agreeing within
//! a bound small against client timeouts, as leases elsewhere do; the simulator gives every node
//! such an offset.

use bytes::Bytes;
use yizhi_engine::{Engine, LogPosition, NodeId, ProposeError};

use crate::failure::ProposeFailure;

/// When a client stops waiting, in milliseconds on the member's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline {
    pub at_ms: u64,
}

impl Deadline {
    pub fn has_passed(&self, now_ms: u64) -> bool {
        now_ms >= self.at_ms
    }
}

/// Who handed the driver a proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A client of this member.
    Local,
    /// This member's own housekeeping that only a leader may propose (lease revocations): never
    /// forwarded, refused on a member that does not lead. A deposed leader that forwarded its
    /// revocation would revoke a lease the new leader had just renewed.
    LocalLeaderOnly,
    /// A follower that forwarded its client's proposal. It is never forwarded again, so a stale
    /// leader hint cannot make a proposal loop.
    ForwardedBy(NodeId),
}

impl Origin {
    /// Proposed on this member (its failures go to a local waiter, not back over the network).
    pub fn is_local(&self) -> bool {
        !matches!(self, Origin::ForwardedBy(_))
    }
}

/// What became of a proposal the driver handed to [`place_proposal`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// In the local engine's log at this position (not yet committed).
    Proposed(LogPosition),
    /// Not the leader: send it to `leader`, with its deadline.
    Forward { leader: NodeId },
    /// Not proposed anywhere: the failure goes to the client (or back to the forwarding member).
    Refused(ProposeFailure),
}

/// Proposes `data` in `engine` if the client still waits and the member takes work
/// (`accepting`: false while the applier is far behind), else says where it goes instead.
pub fn place_proposal<E: Engine>(
    engine: &mut E,
    data: Bytes,
    origin: Origin,
    deadline: Deadline,
    now_ms: u64,
    accepting: bool,
) -> Route {
    if deadline.has_passed(now_ms) {
        return Route::Refused(ProposeFailure::TimedOut);
    }
    if !accepting {
        return Route::Refused(ProposeFailure::TooManyRequests);
    }
    match engine.propose(data) {
        Ok(position) => Route::Proposed(position),
        Err(ProposeError::NotLeader { leader: Some(leader) }) if origin == Origin::Local => {
            assert_ne!(
                leader,
                engine.id(),
                "an engine names itself leader while refusing"
            );
            Route::Forward { leader }
        }
        Err(error) => Route::Refused(failure_of(&error)),
    }
}

/// The client-facing failure of an engine's refusal.
pub fn failure_of(error: &ProposeError) -> ProposeFailure {
    match error {
        ProposeError::NotLeader { .. } => ProposeFailure::NoLeader,
        ProposeError::TransferInProgress => ProposeFailure::LeaderChanged,
        ProposeError::TooLarge { .. } => ProposeFailure::TooLarge,
        ProposeError::Backpressure { .. } | ProposeError::TooManyPendingReads { .. } => {
            ProposeFailure::TooManyRequests
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yizhi_raft::testkit::MemCluster;

    /// A three-node Raft cluster with node 1 leading, as the driver sees it.
    fn cluster() -> MemCluster {
        MemCluster::new(&[1, 2, 3], &[], 7, |_| {}).elected(1)
    }

    const LIVE: Deadline = Deadline { at_ms: 1_000 };

    #[test]
    fn the_leader_proposes_and_a_follower_forwards_a_local_proposal() {
        let mut cluster = cluster();
        let data = Bytes::from_static(b"x");
        let route = place_proposal(cluster.node_mut(1), data.clone(), Origin::Local, LIVE, 10, true);
        assert!(matches!(route, Route::Proposed(_)), "{route:?}");
        let route = place_proposal(cluster.node_mut(2), data, Origin::Local, LIVE, 10, true);
        assert_eq!(route, Route::Forward { leader: 1 });
    }

    #[test]
    fn a_leader_only_proposal_is_refused_on_a_follower_and_taken_by_the_leader() {
        let mut cluster = cluster();
        let data = Bytes::from_static(b"revoke");
        let follower = place_proposal(
            cluster.node_mut(2),
            data.clone(),
            Origin::LocalLeaderOnly,
            LIVE,
            10,
            true,
        );
        assert_eq!(follower, Route::Refused(ProposeFailure::NoLeader));
        let leader = place_proposal(cluster.node_mut(1), data, Origin::LocalLeaderOnly, LIVE, 10, true);
        assert!(matches!(leader, Route::Proposed(_)), "{leader:?}");
    }

    #[test]
    fn a_forwarded_proposal_is_never_forwarded_again() {
        let mut cluster = cluster();
        let data = Bytes::from_static(b"x");
        let route = place_proposal(cluster.node_mut(2), data, Origin::ForwardedBy(3), LIVE, 10, true);
        assert_eq!(route, Route::Refused(ProposeFailure::NoLeader));
    }

    #[test]
    fn nothing_is_proposed_or_forwarded_once_the_deadline_has_passed() {
        let mut cluster = cluster();
        let last_before = cluster.node(1).status().last_index;
        for (node, origin) in [
            (1, Origin::Local),
            (1, Origin::ForwardedBy(2)),
            (2, Origin::Local),
        ] {
            let data = Bytes::from_static(b"late");
            let route = place_proposal(cluster.node_mut(node), data, origin, LIVE, LIVE.at_ms, true);
            assert_eq!(
                route,
                Route::Refused(ProposeFailure::TimedOut),
                "node {node} {origin:?}"
            );
        }
        assert_eq!(
            cluster.node(1).status().last_index,
            last_before,
            "the log did not grow"
        );
    }

    #[test]
    fn a_member_not_accepting_work_refuses_before_proposing() {
        let mut cluster = cluster();
        let route = place_proposal(
            cluster.node_mut(1),
            Bytes::from_static(b"x"),
            Origin::Local,
            LIVE,
            0,
            false,
        );
        assert_eq!(route, Route::Refused(ProposeFailure::TooManyRequests));
    }
}
