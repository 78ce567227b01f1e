//! Read barriers: how a linearizable read learns the log index it must wait for.
//!
//! A member asks its engine for a read index (Raft's ReadIndex, thesis §6.4; a Raft follower's
//! engine asks the leader itself), or, when its engine confirms reads only as leader (Multi-Paxos),
//! asks the leader over the peer link with a `ReadRequest` and waits for its `ReadResponse`. Both
//! kinds of answer name the read only by a number, so the numbering is what keeps an answer from
//! reaching the wrong read:
//!
//! - Read ids start at a random point at every boot ([`first_id_of_boot`]): a late answer meant
//!   for an earlier incarnation of this member (a ReadResponse queued for the process that died)
//!   matches nothing in the new one (docs/request-path-audit.md, F3). Counting from 1 made two
//!   boots' ids collide, and a new read could be answered at an old, lower index: a stale read.
//! - A read waits at most `timeout_ticks`; after that its clients hear "request timed out" (the
//!   leader that was confirming it is gone) and retry, since a read has no effect.
//! - When the leader this member knows changes, the reads it was confirming fail at once with
//!   "leader changed", as etcd's linearizable reads do, instead of at their timeout.
//!
//! [`ReadBarriers`] holds this member's own reads (`R` is whatever the runtime answers a client
//! through) and the reads it confirms, as leader, for followers. It does no IO: the runtime sends
//! the frames it returns and answers the replies it hands back, after its applier has reached the
//! index.

use std::collections::BTreeMap;

use yizhi_engine::{Engine, LogIndex, NodeId, ProposeError};

use crate::failure::ProposeFailure;
use crate::routing::failure_of;

/// Where a boot's read ids (and other ids matched by number alone) start counting, from its
/// boot id: a random point of a 2^63 space keeps two boots' ids apart.
pub fn first_id_of_boot(boot_id: u64) -> u64 {
    (boot_id >> 1).max(1)
}

/// Bounds of a member's read table.
#[derive(Clone, Copy, Debug)]
pub struct ReadLimits {
    /// This member's read barriers in flight (each may answer many reads).
    pub max_own: usize,
    /// Followers' barriers this member confirms at once as leader.
    pub max_for_followers: usize,
    /// Ticks a barrier may wait before its reads time out.
    pub timeout_ticks: u64,
}

/// A barrier this member started: who waits for it and when it started.
#[derive(Debug)]
struct OwnBarrier<R> {
    asked_at_tick: u64,
    replies: Vec<R>,
}

/// A follower's barrier this member confirms as leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FollowerBarrier {
    follower: NodeId,
    their_read_id: u64,
    asked_at_tick: u64,
}

/// How a barrier was started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadStart {
    /// The engine confirms it (locally or by asking the leader itself).
    Asked { read_id: u64 },
    /// The runtime sends `ReadRequest { read_id }` to `leader`; if it cannot, it calls
    /// [`ReadBarriers::unsent`].
    Forward { leader: NodeId, read_id: u64 },
}

/// A frame for a follower: the index its read waits for, or `None` when refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadResponse {
    pub to: NodeId,
    pub read_id: u64,
    pub index: Option<LogIndex>,
}

/// What a confirmed read index is for.
#[derive(Debug, PartialEq, Eq)]
pub enum Confirmed<R> {
    /// This member's reads: answer them once the applier has reached `index`.
    Own { index: LogIndex, replies: Vec<R> },
    /// A follower's: send it this.
    Follower(ReadResponse),
    /// Nobody waits any more (timed out, or failed with a leader change).
    Nobody,
}

#[derive(Debug)]
pub struct ReadBarriers<R> {
    next_read_id: u64,
    own: BTreeMap<u64, OwnBarrier<R>>,
    for_followers: BTreeMap<u64, FollowerBarrier>,
    leader_seen: Option<NodeId>,
    limits: ReadLimits,
}

impl<R> ReadBarriers<R> {
    /// `first_read_id` comes from [`first_id_of_boot`] (the simulator draws it from its seed).
    pub fn new(first_read_id: u64, limits: ReadLimits) -> Self {
        assert!(first_read_id > 0, "read id 0 is never issued");
        assert!(limits.max_own > 0 && limits.max_for_followers > 0 && limits.timeout_ticks > 0);
        ReadBarriers {
            next_read_id: first_read_id,
            own: BTreeMap::new(),
            for_followers: BTreeMap::new(),
            leader_seen: None,
            limits,
        }
    }

    /// This member's barriers in flight.
    pub fn own_len(&self) -> usize {
        self.own.len()
    }

    /// Followers' barriers being confirmed.
    pub fn for_followers_len(&self) -> usize {
        self.for_followers.len()
    }

    fn take_read_id(&mut self) -> u64 {
        let read_id = self.next_read_id;
        self.next_read_id = read_id.checked_add(1).expect("read ids exhausted");
        read_id
    }

    /// Starts one barrier for `replies` (reads that arrived together share it). On refusal the
    /// replies come back with the failure to answer them with.
    pub fn start<E: Engine>(
        &mut self,
        engine: &mut E,
        replies: Vec<R>,
        now_tick: u64,
    ) -> Result<ReadStart, (ProposeFailure, Vec<R>)> {
        assert!(!replies.is_empty(), "a barrier for nobody");
        if self.own.len() >= self.limits.max_own {
            return Err((ProposeFailure::TooManyRequests, replies));
        }
        let read_id = self.take_read_id();
        let start = match engine.read_index(read_id) {
            Ok(()) => ReadStart::Asked { read_id },
            // An engine that confirms reads only as leader (Multi-Paxos): ask the leader.
            Err(ProposeError::NotLeader { leader: Some(leader) }) => {
                assert_ne!(
                    leader,
                    engine.id(),
                    "an engine names itself leader while refusing"
                );
                ReadStart::Forward { leader, read_id }
            }
            Err(error) => return Err((failure_of(&error), replies)),
        };
        let barrier = OwnBarrier {
            asked_at_tick: now_tick,
            replies,
        };
        assert!(
            self.own.insert(read_id, barrier).is_none(),
            "read id {read_id} reused"
        );
        Ok(start)
    }

    /// A `ReadRequest` could not be sent: its reads fail at once ("no leader": nothing was asked).
    pub fn unsent(&mut self, read_id: u64) -> Vec<R> {
        self.own.remove(&read_id).map_or_else(Vec::new, |b| b.replies)
    }

    /// A follower asked this member, as leader, to confirm a read. Returns the refusal to send
    /// back at once, or `None` when the engine took it (its index comes as a read state).
    pub fn confirm_for_follower<E: Engine>(
        &mut self,
        engine: &mut E,
        follower: NodeId,
        their_read_id: u64,
        now_tick: u64,
    ) -> Option<ReadResponse> {
        let refusal = ReadResponse {
            to: follower,
            read_id: their_read_id,
            index: None,
        };
        if self.for_followers.len() >= self.limits.max_for_followers {
            return Some(refusal);
        }
        let read_id = self.take_read_id();
        if engine.read_index(read_id).is_err() {
            return Some(refusal);
        }
        let barrier = FollowerBarrier {
            follower,
            their_read_id,
            asked_at_tick: now_tick,
        };
        assert!(self.for_followers.insert(read_id, barrier).is_none());
        None
    }

    /// The engine confirmed read `read_id` at `index`.
    pub fn confirmed(&mut self, read_id: u64, index: LogIndex) -> Confirmed<R> {
        if let Some(barrier) = self.for_followers.remove(&read_id) {
            return Confirmed::Follower(ReadResponse {
                to: barrier.follower,
                read_id: barrier.their_read_id,
                index: Some(index),
            });
        }
        match self.own.remove(&read_id) {
            Some(barrier) => Confirmed::Own {
                index,
                replies: barrier.replies,
            },
            None => Confirmed::Nobody,
        }
    }

    /// The leader answered a `ReadRequest` of ours: the index to wait for, or a refusal ("no
    /// leader": it no longer leads). `None` when nobody waits for that id (any more).
    #[allow(clippy::type_complexity)]
    pub fn answered(
        &mut self,
        read_id: u64,
        index: Option<LogIndex>,
    ) -> Option<Result<(LogIndex, Vec<R>), (ProposeFailure, Vec<R>)>> {
        let barrier = self.own.remove(&read_id)?;
        Some(match index {
            Some(index) => Ok((index, barrier.replies)),
            None => Err((ProposeFailure::NoLeader, barrier.replies)),
        })
    }

    /// Called with the leader the engine names after every round: when it changed, this
    /// member's reads fail now with "leader changed" (their confirmation was the old leader's to
    /// give), and the reads it confirmed for followers are refused (a deposed leader's engine
    /// drops them).
    pub fn leader_is(&mut self, leader: Option<NodeId>) -> (Vec<R>, Vec<ReadResponse>) {
        if leader == self.leader_seen {
            return (Vec::new(), Vec::new());
        }
        self.leader_seen = leader;
        let failed = std::mem::take(&mut self.own)
            .into_values()
            .flat_map(|b| b.replies)
            .collect();
        let refused = std::mem::take(&mut self.for_followers)
            .into_values()
            .map(|b| ReadResponse {
                to: b.follower,
                read_id: b.their_read_id,
                index: None,
            })
            .collect();
        (failed, refused)
    }

    /// Barriers older than the timeout: this member's reads (to answer "request timed out") and
    /// followers' barriers are forgotten (the follower has given up by now).
    pub fn expire(&mut self, now_tick: u64) -> Vec<R> {
        let oldest_kept = now_tick.saturating_sub(self.limits.timeout_ticks);
        self.for_followers.retain(|_, b| b.asked_at_tick >= oldest_kept);
        let expired: Vec<u64> = self
            .own
            .iter()
            .filter(|(_, b)| b.asked_at_tick < oldest_kept)
            .map(|(&id, _)| id)
            .collect();
        expired
            .into_iter()
            .flat_map(|id| self.own.remove(&id).map_or_else(Vec::new, |b| b.replies))
            .collect()
    }

    /// Every waiting read, for a member that stops.
    pub fn drain(&mut self) -> Vec<R> {
        self.for_followers.clear();
        std::mem::take(&mut self.own)
            .into_values()
            .flat_map(|b| b.replies)
            .collect()
    }
}

#[cfg(test)]
#[path = "reads_tests.rs"]
mod tests;
