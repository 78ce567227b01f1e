//! The engines the simulator can drive, each behind [`EngineFactory`].

use yizhi_engine::{Engine, LogIndex, MemStorage, NodeId, SeededRng};
use yizhi_paxos::{PaxosConfig, PaxosNode};
use yizhi_raft::{Message, MessageKind, RaftConfig, RaftNode, ReadMode};

use crate::clock::TICK_SKEW_PCT_MAX;

/// Builds engines for the simulator, so it never learns which protocol it drives.
pub trait EngineFactory {
    type E: Engine<Storage = MemStorage>;
    fn name(&self) -> &'static str;
    /// A node starting (or restarting).
    fn build(&self, start: EngineStart) -> Self::E;
    /// Snapshot messages are reported back to the sender when delivered or lost, as a transport
    /// streaming them would.
    fn is_snapshot(&self, msg: &<Self::E as Engine>::Message) -> bool;
    /// Raft: an entry keeps the term it was proposed in, so `(index, term)` names one proposal and
    /// logs obey Log Matching. Multi-Paxos: `Entry.term` is the ballot a node last accepted the
    /// slot in, and a new leader re-proposes an accepted value in its own ballot, so one chosen
    /// value can carry different terms on different nodes; only the payload names it, and Log
    /// Matching (a Raft property) does not hold. The checks adapt to this answer.
    fn term_identifies_value(&self) -> bool {
        true
    }
    /// With lease reads: whether the node would refuse to vote for another leader now (the
    /// promise its leader's lease relies on). `None`: the engine makes no such promise.
    fn refuses_votes(&self, _engine: &Self::E) -> Option<bool> {
        None
    }
}

/// What a node starts (or restarts) its engine from.
#[derive(Debug)]
pub struct EngineStart {
    pub id: NodeId,
    /// The node's durable log, hard state and snapshot.
    pub storage: MemStorage,
    /// Where the node's state machine stands.
    pub applied: LogIndex,
    /// Decides the engine's settings (the same for every node).
    pub tuning: EngineTuning,
    pub rng: SeededRng,
}

/// An engine that refuses the durable state the simulator kept for it: a bug of one or the other.
fn refused_durable_state(id: NodeId, error: impl std::fmt::Display) -> ! {
    panic!("node {id}: the engine refused its durable state: {error}")
}

/// Where a run's engine settings come from (the same on every node).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineTuning {
    /// Drawn from `seed`: small inflight windows and message sizes, short timeouts, PreVote and
    /// CheckQuorum sometimes off, so that the limits themselves are exercised under faults.
    /// `shortest_timeout`: the election timeout at its minimum, where a rounding error worth a
    /// tick (a lease, a promise) is the largest share of it.
    Drawn { seed: u64, shortest_timeout: bool },
    /// The engine's own defaults, as the server runs it: for measurements, where both engines must
    /// run as shipped rather than with whatever a seed drew.
    Defaults,
}

pub const ELECTION_TIMEOUT_TICKS_MIN: u64 = 10;

/// The limits and timeouts both engines draw alike, first from the tuning seed.
struct SharedTuning {
    max_inflight_msgs: usize,
    max_msg_bytes: u64,
    heartbeat_interval_ticks: u64,
    election_timeout_ticks: u64,
}

impl EngineTuning {
    /// The settings both engines share, and the stream the engine's own settings are drawn from
    /// next; `None` for the engines' defaults.
    fn draw_shared(self) -> Option<(SharedTuning, SeededRng)> {
        let EngineTuning::Drawn {
            seed,
            shortest_timeout,
        } = self
        else {
            return None;
        };
        let mut rng = SeededRng::new(seed);
        let shared = SharedTuning::draw(&mut rng, shortest_timeout);
        Some((shared, rng))
    }
}

impl SharedTuning {
    fn draw(rng: &mut SeededRng, shortest_timeout: bool) -> Self {
        let drawn = SharedTuning {
            max_inflight_msgs: [1, 2, 8, 256][rng.below(4) as usize],
            max_msg_bytes: [1, 100, 4096, 1 << 20][rng.below(4) as usize],
            heartbeat_interval_ticks: rng.range_inclusive(1, 2),
            // At least 100 ms: below the harsh profile's round trip (up to 120 ms) elections (and
            // Paxos phase 1 duels) go on forever, a misconfiguration rather than a protocol fault.
            election_timeout_ticks: rng.range_inclusive(ELECTION_TIMEOUT_TICKS_MIN, 20),
        };
        SharedTuning {
            election_timeout_ticks: if shortest_timeout {
                ELECTION_TIMEOUT_TICKS_MIN
            } else {
                drawn.election_timeout_ticks
            },
            ..drawn
        }
    }
}

/// Raft settings drawn from the run's tuning seed, the same on every node. Small inflight windows
/// and message sizes make pipelining limits and batching bounds bite; PreVote and CheckQuorum are
/// sometimes off, because safety must not depend on them. `lease` forces what lease reads need.
fn tuned_raft_config(id: NodeId, applied: LogIndex, tuning: EngineTuning, lease: bool) -> RaftConfig {
    let mut config = RaftConfig::new(id);
    config.applied = applied;
    if let Some((shared, mut rng)) = tuning.draw_shared() {
        config.max_inflight_msgs = shared.max_inflight_msgs;
        config.max_msg_bytes = shared.max_msg_bytes;
        config.heartbeat_interval_ticks = shared.heartbeat_interval_ticks;
        config.election_timeout_ticks = shared.election_timeout_ticks;
        config.pre_vote = !rng.chance(1, 5);
        config.check_quorum = lease || !rng.chance(1, 5);
    }
    if lease {
        config.check_quorum = true;
        config.read_mode = ReadMode::LeaseBased;
        // Two nodes whose ticks are skewed by ±TICK_SKEW_PCT_MAX in opposite directions drift
        // apart by (1 + s) / (1 - s) − 1 (22% for s = 10%); the bound must cover that.
        let s = TICK_SKEW_PCT_MAX;
        config.lease_clock_drift_bound_percent = (100 * (100 + s)).div_ceil(100 - s) - 100;
    }
    config
}

/// Names accepted by `--engine`.
pub const ENGINE_NAMES: [&str; 3] = ["raft", "raft-lease", "paxos"];

/// Yizhi's Raft engine with seed-tuned limits, answering reads by ReadIndex rounds or, with
/// `lease_reads`, by the leader lease (thesis §6.4.1) with a drift bound that covers the
/// simulator's worst relative tick skew.
#[derive(Clone, Copy, Debug, Default)]
pub struct RaftFactory {
    pub lease_reads: bool,
}

impl RaftFactory {
    pub const SAFE_READS: RaftFactory = RaftFactory { lease_reads: false };
    pub const LEASE_READS: RaftFactory = RaftFactory { lease_reads: true };
}

impl EngineFactory for RaftFactory {
    type E = RaftNode<MemStorage>;

    fn name(&self) -> &'static str {
        if self.lease_reads { "raft-lease" } else { "raft" }
    }

    fn build(&self, start: EngineStart) -> Self::E {
        let config = tuned_raft_config(start.id, start.applied, start.tuning, self.lease_reads);
        RaftNode::new(config, start.storage, start.rng).unwrap_or_else(|e| refused_durable_state(start.id, e))
    }

    fn is_snapshot(&self, msg: &Message) -> bool {
        matches!(msg.kind, MessageKind::InstallSnapshot { .. })
    }

    fn refuses_votes(&self, engine: &Self::E) -> Option<bool> {
        self.lease_reads.then(|| engine.refuses_votes())
    }
}

/// Paxos settings drawn from the run's tuning seed, the same on every node. As for Raft, small
/// inflight windows and message sizes make the pipelining and batching bounds bite.
fn tuned_paxos_config(id: NodeId, applied: LogIndex, tuning: EngineTuning) -> PaxosConfig {
    let mut config = PaxosConfig::new(id);
    config.applied = applied;
    if let Some((shared, _)) = tuning.draw_shared() {
        config.max_inflight_msgs = shared.max_inflight_msgs;
        config.max_msg_bytes = shared.max_msg_bytes;
        config.heartbeat_interval_ticks = shared.heartbeat_interval_ticks;
        config.election_timeout_ticks = shared.election_timeout_ticks;
    }
    config
}

/// Yizhi's Multi-Paxos engine with seed-tuned limits; reads by quorum confirmation rounds.
#[derive(Clone, Copy, Debug, Default)]
pub struct PaxosFactory;

impl EngineFactory for PaxosFactory {
    type E = PaxosNode<MemStorage>;

    fn name(&self) -> &'static str {
        "paxos"
    }

    fn build(&self, start: EngineStart) -> Self::E {
        let config = tuned_paxos_config(start.id, start.applied, start.tuning);
        PaxosNode::new(config, start.storage, start.rng)
            .unwrap_or_else(|e| refused_durable_state(start.id, e))
    }

    fn is_snapshot(&self, msg: &yizhi_paxos::Message) -> bool {
        msg.is_snapshot()
    }

    fn term_identifies_value(&self) -> bool {
        false
    }
}
