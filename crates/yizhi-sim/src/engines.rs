//! The engines the simulator can drive, each behind [`EngineFactory`].

use yizhi_engine::{LogIndex, MemStorage, NodeId, SeededRng};
use yizhi_raft::{Message, MessageKind, RaftConfig, RaftNode};

use crate::node::EngineFactory;

/// Names accepted by `--engine`.
pub const ENGINE_NAMES: [&str; 1] = ["raft"];

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
