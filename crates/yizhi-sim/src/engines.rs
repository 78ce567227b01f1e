//! The engines the simulator can drive, each behind [`EngineFactory`].

use yizhi_engine::{LogIndex, MemStorage, NodeId, SeededRng};
use yizhi_raft::{Message, MessageKind, RaftConfig, RaftNode, ReadMode};

use crate::node::EngineFactory;

/// Names accepted by `--engine`.
pub const ENGINE_NAMES: [&str; 2] = ["raft", "raft-lease"];

/// Yizhi's Raft engine with its default settings (PreVote, CheckQuorum, safe ReadIndex reads).
#[derive(Clone, Copy, Debug, Default)]
pub struct RaftFactory;

impl EngineFactory for RaftFactory {
    type E = RaftNode<MemStorage>;

    fn name(&self) -> &'static str {
        "raft"
    }

    fn build(&self, id: NodeId, storage: MemStorage, applied: LogIndex, rng: SeededRng) -> Self::E {
        let mut config = RaftConfig::new(id);
        config.applied = applied;
        RaftNode::new(config, storage, rng)
            .unwrap_or_else(|e| panic!("node {id}: the engine refused its durable state: {e}"))
    }

    fn is_snapshot(&self, msg: &Message) -> bool {
        matches!(msg.kind, MessageKind::InstallSnapshot { .. })
    }
}

/// Raft with lease-based reads (thesis §6.4.1). Only safe while clock drift stays within
/// `lease_clock_drift_bound_percent`; the simulator's tick skew (±10% per node) can exceed it,
/// so violations under this engine say "the bound is wrong for these clocks" as much as "bug".
#[derive(Clone, Copy, Debug, Default)]
pub struct RaftLeaseFactory;

impl EngineFactory for RaftLeaseFactory {
    type E = RaftNode<MemStorage>;

    fn name(&self) -> &'static str {
        "raft-lease"
    }

    fn build(&self, id: NodeId, storage: MemStorage, applied: LogIndex, rng: SeededRng) -> Self::E {
        let mut config = RaftConfig::new(id);
        config.applied = applied;
        config.read_mode = ReadMode::LeaseBased;
        RaftNode::new(config, storage, rng)
            .unwrap_or_else(|e| panic!("node {id}: the engine refused its durable state: {e}"))
    }

    fn is_snapshot(&self, msg: &Message) -> bool {
        RaftFactory.is_snapshot(msg)
    }
}
