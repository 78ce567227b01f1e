//! The lessor: on the leader, revokes leases whose time ran out (etcd's primary lessor).
//!
//! Lease expiry is replicated state (each lease's `expiry_ms` is set by the grant or keep-alive
//! command that last touched it); deciding that "now" is past it is the leader's job. Every
//! [`LESSOR_INTERVAL`] the leader asks the store for expired leases and proposes a
//! `LeaseRevoke` for each, at most [`MAX_REVOKES_PER_ROUND`] per round and never one it proposed
//! less than [`REPROPOSE_AFTER`] ago. The store deletes a revoked lease's keys at one revision, so
//! watchers see the deletes like any others.
//!
//! Time: `now_ms` is wall-clock milliseconds since the UNIX epoch on the member that stamps a
//! command ([`wall_clock_ms`]): grants and keep-alives carry the proposing member's clock, and the
//! leader compares expiries with its own. Members' clocks are assumed roughly synchronized; a skew
//! shortens or lengthens leases by that much, and the minimum TTL (etcd's, 2 s by default) keeps
//! a lease alive across an election.
//!
//! Leader change: keep-alives are replicated, so a new leader knows every keep-alive that was
//! committed; but a client whose keep-alives failed while there was no leader could not renew.
//! As etcd's `Promote` extends every lease by one election timeout, a new leader first applies
//! everything it inherited (its applied index reaches its log's end as of the promotion) and then
//! revokes nothing for one election timeout, which gives clients that time to reconnect and renew.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use yizhi_engine::{LogIndex, Role};
use yizhi_kv::{Command, LeaseId};

use super::NodeHandle;
use super::request::ProposeFailure;

/// How often the leader looks for expired leases.
pub const LESSOR_INTERVAL: Duration = Duration::from_millis(500);
/// Revocations proposed in one round (etcd revokes at most 1,000 leases per second).
pub const MAX_REVOKES_PER_ROUND: usize = 500;
/// Revocations awaiting their apply at once.
pub const MAX_REVOKES_IN_FLIGHT: usize = 1_000;
/// A revocation not seen applied by then (lost in a leader change, timed out) is proposed again.
pub const REPROPOSE_AFTER: Duration = Duration::from_secs(5);

/// Milliseconds since the UNIX epoch: the lease clock of this member.
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Where this member stands as a lessor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leadership {
    NotLeader,
    /// Leader in `term`; waiting to apply the log up to `inherited_index`.
    CatchingUp {
        term: u64,
        inherited_index: LogIndex,
    },
    /// Leader in `term`, caught up since `since`; revokes from `since + grace` on.
    Leading {
        term: u64,
        since: Instant,
    },
}

#[derive(Debug)]
pub struct Lessor {
    node: NodeHandle,
    /// One election timeout: how long a new leader waits before revoking anything.
    grace: Duration,
    leadership: Leadership,
    /// Leases whose revocation this member proposed, and when.
    proposed: BTreeMap<LeaseId, Instant>,
    revokes: JoinSet<()>,
}

impl Lessor {
    pub fn new(node: NodeHandle, election_timeout: Duration) -> Self {
        Lessor {
            node,
            grace: election_timeout,
            leadership: Leadership::NotLeader,
            proposed: BTreeMap::new(),
            revokes: JoinSet::new(),
        }
    }

    /// Runs until the runtime stops.
    pub async fn run(mut self) {
        let mut ticker = tokio::time::interval(LESSOR_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.round(Instant::now());
        }
    }

    /// Whether this member may revoke now, updating what it knows of its leadership.
    fn may_revoke(&mut self, now: Instant) -> bool {
        let status = self.node.shared.status();
        let leading = status.role == Some(Role::Leader) && status.leader == Some(self.node.local_id());
        if !leading {
            self.leadership = Leadership::NotLeader;
            return false;
        }
        let applied = self.node.shared.applied();
        self.leadership = match self.leadership {
            Leadership::Leading { term, since } if term == status.term => Leadership::Leading { term, since },
            Leadership::CatchingUp {
                term,
                inherited_index,
            } if term == status.term => {
                if applied >= inherited_index {
                    Leadership::Leading { term, since: now }
                } else {
                    Leadership::CatchingUp {
                        term,
                        inherited_index,
                    }
                }
            }
            _ => Leadership::CatchingUp {
                term: status.term,
                inherited_index: status.last_index,
            },
        };
        match self.leadership {
            Leadership::Leading { since, .. } => now.duration_since(since) >= self.grace,
            _ => false,
        }
    }

    fn round(&mut self, now: Instant) {
        while self.revokes.try_join_next().is_some() {}
        self.proposed
            .retain(|_, at| now.duration_since(*at) < REPROPOSE_AFTER);
        if !self.may_revoke(now) {
            return;
        }
        let room = MAX_REVOKES_PER_ROUND.min(MAX_REVOKES_IN_FLIGHT.saturating_sub(self.revokes.len()));
        if room == 0 {
            return;
        }
        let expired = {
            let store = self.node.shared.store.read().expect("store lock");
            store.expired_leases(wall_clock_ms())
        };
        let due: Vec<LeaseId> = expired
            .into_iter()
            .filter(|id| !self.proposed.contains_key(id))
            .take(room)
            .collect();
        for id in due {
            self.proposed.insert(id, now);
            let node = self.node.clone();
            self.revokes.spawn(async move { revoke(node, id).await });
        }
        assert!(self.revokes.len() <= MAX_REVOKES_IN_FLIGHT);
    }
}

async fn revoke(node: NodeHandle, id: LeaseId) {
    match node.propose(&Command::LeaseRevoke { id }).await {
        Ok(applied) => match applied.response {
            Ok(_) => tracing::info!(lease = id, "revoked an expired lease"),
            // Revoked meanwhile by a client or an earlier proposal.
            Err(e) => tracing::debug!(lease = id, error = %e, "expired lease already gone"),
        },
        Err(ProposeFailure::TooManyRequests) => {
            tracing::warn!(
                lease = id,
                "lease revocation refused: too many requests; retrying later"
            )
        }
        Err(e) => tracing::info!(lease = id, error = %e, "lease revocation not applied; retrying later"),
    }
}
