//! The Raft side of [`yizhi_engine::testkit`] (cargo feature `testkit`): how the shared in-memory
//! cluster driver builds a Raft node and makes it campaign.

use yizhi_engine::testkit::TestEngine;
use yizhi_engine::{LogIndex, MemStorage, NodeId, Role, SeededRng};

use crate::config::RaftConfig;
use crate::raft::RaftNode;

/// The in-memory cluster driver over Raft nodes.
pub type MemCluster = yizhi_engine::testkit::MemCluster<RaftNode<MemStorage>>;

impl TestEngine for RaftNode<MemStorage> {
    type Config = RaftConfig;

    fn default_config() -> RaftConfig {
        RaftConfig::new(1)
    }

    fn start(
        template: &RaftConfig,
        id: NodeId,
        applied: LogIndex,
        storage: MemStorage,
        rng: SeededRng,
    ) -> Self {
        let mut config = template.clone();
        config.id = id;
        config.applied = applied;
        RaftNode::new(config, storage, rng).expect("valid test config")
    }

    /// Ticks the node alone until it leaves the follower role, for at most the longest randomized
    /// election timeout (`[t, 2t)`, paper §5.2).
    fn start_campaign(&mut self) {
        let max_ticks = 2 * self.config().election_timeout_ticks + 1;
        for _ in 0..max_ticks {
            self.tick();
            if self.role() != Role::Follower {
                break;
            }
        }
    }
}
