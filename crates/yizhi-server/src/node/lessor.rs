//! The lessor: on the leader, revokes leases whose time ran out (etcd's primary lessor), and holds
//! the leader's in-memory expiries of the keep-alives it answered without the log.
//!
//! Two expiries per lease. R, the replicated `expiry_ms` in the store, is set by the grant or
//! replicated keep-alive that last touched it and only grows. L ([`LocalLeases`]) lives in the
//! leader's memory only: a keep-alive reaching the leader while `R − now > TTL/2` is answered at
//! once and sets `L = max(L, now + TTL)`, with no log entry (etcd's leader answers every
//! keep-alive from memory; see `api::lease`). Followers forward keep-alives to the leader
//! ([`keep_alive_from_memory`] answers those too; [`ForwardedKeepAlives`] holds the follower's
//! side). Otherwise the keep-alive goes through the log and sets R. A lease is expired when
//! `now > max(L, R)`. Every [`LESSOR_INTERVAL`] the leader proposes a `LeaseRevoke` for each
//! expired lease, at most [`MAX_REVOKES_PER_ROUND`] per round and never one it proposed less than
//! [`REPROPOSE_AFTER`] ago. The store deletes a revoked lease's keys at one revision, so watchers
//! see the deletes like any others.
//!
//! Invariant: a keep-alive acknowledged at time t was acknowledged while `R ≥ t + TTL/2` (locally
//! answered: checked before answering; replicated: R was just set to about t + TTL), and R only
//! grows, so `t + TTL ≤ R + TTL/2` for every acknowledged keep-alive.
//!
//! Time: `now_ms` is wall-clock milliseconds since the UNIX epoch on the member that stamps a
//! command ([`wall_clock_ms`]): grants and keep-alives carry the proposing member's clock, and the
//! leader compares expiries with its own. Members' clocks are assumed roughly synchronized; a skew
//! shortens or lengthens leases by that much, and the minimum TTL (etcd's, 2 s by default) keeps
//! a lease alive across an election.
//!
//! Leader change: a new leader does not know the old leader's L. It first applies everything it
//! inherited (its applied index reaches its log's end as of the promotion), then sets
//! `L = R + TTL/2` for every lease, which by the invariant covers every keep-alive the old leader
//! acknowledged, and only then answers keep-alives from memory. So a lease may outlive its TTL by
//! up to TTL/2 after a leader change, and never dies early (etcd without checkpoints resets every
//! lease to a full TTL on promotion). As etcd's `Promote` extends every lease by one election
//! timeout, the new leader also revokes nothing for one election timeout, which gives clients
//! whose keep-alives failed while there was no leader time to reconnect and renew. L is cleared
//! when leadership is lost, and holds only leases that exist (pruned every round).
//!
//! A deposed leader that has not noticed yet may still answer from its own store: its R is
//! committed, so the invariant holds, but it may not yet have applied a revoke (etcd's leader has
//! the same window until it steps down).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinSet;
use yizhi_engine::{LogIndex, Role};
use yizhi_kv::{Command, LeaseId};

use super::request::ProposeFailure;
use super::{NodeHandle, Shared};

/// Keep-alives a follower has forwarded to the leader and awaits; beyond it clients hear "too
/// many requests".
pub const MAX_FORWARDED_KEEP_ALIVES: usize = 4096;
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

/// The leader's in-memory lease expiries (L) and the term they belong to.
#[derive(Debug, Default)]
pub struct LocalLeases {
    /// The term in which this member leads and has set L for every lease it inherited; `None`
    /// when it may not answer keep-alives from memory.
    term: Option<u64>,
    /// Invariant: empty when `term` is `None`; holds only leases that existed in the store when
    /// inserted, and the lessor prunes revoked ones every round, so it is bounded by the number
    /// of leases.
    expiry_ms: HashMap<LeaseId, u64>,
}

impl LocalLeases {
    /// The term in which keep-alives may be answered from memory, if any.
    pub fn leading_term(&self) -> Option<u64> {
        self.term
    }

    pub fn expiry_ms(&self, id: LeaseId) -> Option<u64> {
        self.expiry_ms.get(&id).copied()
    }

    /// `L(id) = max(L(id), until_ms)`; only while leading, for a lease that exists.
    pub fn extend(&mut self, id: LeaseId, until_ms: u64) {
        assert!(self.term.is_some(), "extending lease {id} while not leading");
        let l = self.expiry_ms.entry(id).or_insert(until_ms);
        *l = (*l).max(until_ms);
    }

    /// On becoming leader of `term`: `L = R + TTL/2` for every inherited lease (see the module
    /// docs for why that covers every keep-alive the previous leader acknowledged).
    fn promote(&mut self, term: u64, leases: impl Iterator<Item = (LeaseId, u64, i64)>) {
        self.expiry_ms.clear();
        for (id, r_ms, ttl_secs) in leases {
            self.expiry_ms
                .insert(id, r_ms.saturating_add(half_ttl_ms(ttl_secs)));
        }
        self.term = Some(term);
    }

    fn demote(&mut self) {
        self.term = None;
        self.expiry_ms.clear();
    }

    fn len(&self) -> usize {
        self.expiry_ms.len()
    }
}

/// Half a TTL given in seconds, in milliseconds.
pub fn half_ttl_ms(ttl_secs: i64) -> u64 {
    assert!(ttl_secs > 0, "lease TTL {ttl_secs}");
    (ttl_secs as u64).saturating_mul(1000) / 2
}

/// The answer of a keep-alive taken from the leader's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryKeepAlive {
    pub ttl_secs: i64,
    pub revision: i64,
}

/// The leader's in-memory answer to a keep-alive: `Some` if this member leads (with its inherited
/// leases taken over) and the lease's replicated expiry R is more than half a TTL away. Sets
/// `L = max(L, now + TTL)`. `None`: the keep-alive must go through the log.
pub fn keep_alive_from_memory(shared: &Shared, id: LeaseId) -> Option<MemoryKeepAlive> {
    let status = shared.status();
    if status.role != Some(Role::Leader) || status.leader != Some(shared.local_id) {
        return None;
    }
    let store = shared.read_store();
    let (r_ms, ttl_secs) = store.lease_expiry(id)?;
    let now_ms = wall_clock_ms();
    let half_ms = half_ttl_ms(ttl_secs);
    if r_ms.saturating_sub(now_ms) <= half_ms {
        return None;
    }
    let mut local = shared.local_leases.lock().expect("local leases lock");
    // Checked under the lock, so a demotion either comes first (no answer) or clears this L after.
    if local.leading_term() != Some(status.term) {
        return None;
    }
    let until_ms = now_ms.saturating_add(2 * half_ms);
    local.extend(id, until_ms);
    // What the next leader relies on (module docs): acknowledged at `now` with R > now + TTL/2,
    // so now + TTL ≤ R + TTL/2, which is what a new leader sets L to.
    assert!(
        until_ms <= r_ms.saturating_add(half_ms) && local.expiry_ms(id) >= Some(until_ms),
        "lease {id}: acknowledged until {until_ms} with R {r_ms}"
    );
    Some(MemoryKeepAlive {
        ttl_secs,
        revision: store.current_revision(),
    })
}

/// Keep-alives a follower forwarded to the leader, awaiting its answer.
#[derive(Debug)]
pub struct ForwardedKeepAlives {
    /// The last request ID handed out; this boot's first is random (`first_id_of_boot`), so an
    /// answer addressed to an earlier incarnation matches none of ours.
    next_request_id: u64,
    /// Invariant: at most [`MAX_FORWARDED_KEEP_ALIVES`]; the forwarding task removes its entry
    /// when the answer comes or its wait times out.
    /// By request ID: the lease asked about, and where its answer goes.
    pending: HashMap<u64, (i64, oneshot::Sender<Option<i64>>)>,
}

impl ForwardedKeepAlives {
    pub fn starting_at(first_request_id: u64) -> Self {
        assert!(first_request_id >= 1, "request ID 0 is not handed out");
        ForwardedKeepAlives {
            next_request_id: first_request_id - 1,
            pending: HashMap::new(),
        }
    }

    /// A request ID and the receiver of the answer about `lease_id`; `None` when too many are
    /// pending.
    pub fn register(&mut self, lease_id: i64) -> Option<(u64, oneshot::Receiver<Option<i64>>)> {
        if self.pending.len() >= MAX_FORWARDED_KEEP_ALIVES {
            return None;
        }
        self.next_request_id += 1;
        let (tx, rx) = oneshot::channel();
        let previous = self.pending.insert(self.next_request_id, (lease_id, tx));
        assert!(
            previous.is_none(),
            "keep-alive request {} reused",
            self.next_request_id
        );
        Some((self.next_request_id, rx))
    }

    /// The leader's answer; an unknown ID (timed out meanwhile) is ignored, and an answer about
    /// another lease than the one asked about counts as no answer (the follower then proposes
    /// the keep-alive): it can only be meant for another request.
    pub fn resolve(&mut self, request_id: u64, lease_id: i64, ttl_secs: Option<i64>) {
        if let Some((asked, tx)) = self.pending.remove(&request_id) {
            let _ = tx.send(if asked == lease_id { ttl_secs } else { None });
        }
    }

    pub fn forget(&mut self, request_id: u64) {
        self.pending.remove(&request_id);
    }
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
        {
            let mut local = self.node.shared.local_leases.lock().expect("local leases lock");
            if local.leading_term().is_some_and(|t| !leading || t != status.term) {
                local.demote();
            }
        }
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
                    self.promote_local_leases(term);
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

    fn promote_local_leases(&self, term: u64) {
        let store = self.node.read_store();
        let mut local = self.node.shared.local_leases.lock().expect("local leases lock");
        local.promote(term, store.lease_expiries());
        tracing::info!(
            term,
            leases = local.len(),
            "lessor: leading; answering keep-alives from memory"
        );
    }

    /// Leases expired by `now > max(L, R)`, soonest R first; prunes L of revoked leases.
    fn expired(&self) -> Vec<LeaseId> {
        let now_ms = wall_clock_ms();
        let store = self.node.read_store();
        let mut local = self.node.shared.local_leases.lock().expect("local leases lock");
        local.expiry_ms.retain(|id, _| store.lease_expiry(*id).is_some());
        store
            .expired_leases(now_ms)
            .into_iter()
            .filter(|id| local.expiry_ms(*id).is_none_or(|l| l <= now_ms))
            .collect()
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
        let due: Vec<LeaseId> = self
            .expired()
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
    match node
        .propose_as_leader(&Command::LeaseRevoke { id }, node.deadline(None))
        .await
    {
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

#[cfg(test)]
mod tests {
    use super::ForwardedKeepAlives;

    #[test]
    fn an_answer_about_another_lease_counts_as_no_answer() {
        let mut forwarded = ForwardedKeepAlives::starting_at(40);
        let (asked_x, mut x) = forwarded.register(7).expect("room");
        let (asked_y, mut y) = forwarded.register(8).expect("room");
        assert_eq!((asked_x, asked_y), (40, 41));
        forwarded.resolve(asked_x, 9, Some(30)); // Meant for another request: not lease 7's TTL.
        assert_eq!(x.try_recv(), Ok(None));
        forwarded.resolve(asked_y, 8, Some(30));
        assert_eq!(y.try_recv(), Ok(Some(30)));
        forwarded.resolve(asked_y, 8, Some(30)); // Answered once; a repeat finds nobody.
    }
}
