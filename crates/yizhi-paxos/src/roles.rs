//! The proposer's state in each role it can hold (candidate in phase 1, leader in phase 2), kept
//! apart from `proposer.rs`'s handlers so that the node (`paxos.rs`) can hold it without importing
//! the handlers that act on it.

use std::collections::BTreeMap;

use yizhi_engine::{Entry, LogIndex, NodeId, Snapshot};

use crate::ballot::Ballot;

/// Phase 1 in progress.
#[derive(Debug)]
pub struct Candidacy {
    pub ballot: Ballot,
    pub first_unchosen: LogIndex,
    /// Promises received (this node's own included), with what each acceptor had accepted.
    pub promises: BTreeMap<NodeId, PromiseInfo>,
}

#[derive(Debug)]
pub struct PromiseInfo {
    pub commit: LogIndex,
    pub accepted: Vec<Entry>,
    pub snapshot: Option<Snapshot>,
}

/// The leader's view of one acceptor. Two notions are kept apart: what counts towards choosing a
/// slot (`matched`, only ever taken from the acceptor's phase 2 replies in our ballot) and what the
/// acceptor needs no resend of (`synced()`: that, or what it knew chosen when it promised).
#[derive(Debug, Clone)]
pub struct Progress {
    /// Every slot up to it the acceptor reported, in a reply of our ballot, as known chosen or
    /// accepted in our ballot (its `matched_in`): this is what counts towards choosing a slot.
    pub matched: LogIndex,
    /// Every slot up to it the acceptor knew chosen when it promised our ballot (0 when its promise
    /// was not among those that won phase 1). It only spares resending those slots and never
    /// counts: a phase 1 report of a hint is no acceptance, and the acceptor's first phase 2 reply
    /// carries the same knowledge (`matched_in` starts at its commit index). Lowered when a reply
    /// shows that it knows less (its commit index is a hint that a restart may lose).
    pub known_chosen: LogIndex,
    /// The next slot to send. Invariant: `synced() < next`.
    pub next: LogIndex,
    pub inflight_msgs: usize,
    /// An Accepted arrived since the last heartbeat: the pipeline moves, no retransmission needed.
    pub acked_since_heartbeat: bool,
    pub snapshot_in_flight: bool,
    /// The latest read-confirmation round it acknowledged in our ballot.
    pub read_round_acked: u64,
}

impl Progress {
    /// Every slot up to it needs no resend: accepted in our ballot or known chosen by the acceptor.
    pub fn synced(&self) -> LogIndex {
        self.matched.max(self.known_chosen)
    }
}

/// Phase 2: this node's ballot won phase 1.
#[derive(Debug)]
pub struct Leadership {
    pub ballot: Ballot,
    /// The last slot any promise reported: every value chosen before this leadership lies at or
    /// below it. Reads wait for the commit index to reach it (see `reads.rs`).
    pub frontier: LogIndex,
    /// This node's own acceptance: slots up to it are durable in our ballot (set at `advance()`).
    pub self_matched: LogIndex,
    pub peers: BTreeMap<NodeId, Progress>,
    /// Bytes proposed in our ballot and not yet chosen (bounded by `max_uncommitted_bytes`).
    pub uncommitted_bytes: u64,
    pub read_round: u64,
    /// A read was registered since the last confirmation round went out.
    pub read_round_wanted: bool,
    /// Reads registered and waiting for a quorum to confirm `round`: `(read_id, index, round)`.
    pub pending_reads: Vec<(u64, LogIndex, u64)>,
}
