//! The Multi-Paxos side of [`yizhi_engine::testkit`] (cargo feature `testkit`): how the shared
//! in-memory cluster driver builds a Paxos node and makes it campaign.

use yizhi_engine::testkit::TestEngine;
use yizhi_engine::{LogIndex, MemStorage, NodeId, SeededRng};

use crate::config::PaxosConfig;
use crate::paxos::PaxosNode;

/// The in-memory cluster driver over Multi-Paxos nodes.
pub type MemCluster = yizhi_engine::testkit::MemCluster<PaxosNode<MemStorage>>;

impl TestEngine for PaxosNode<MemStorage> {
    type Config = PaxosConfig;

    fn default_config() -> PaxosConfig {
        PaxosConfig::new(1)
    }

    fn start(
        template: &PaxosConfig,
        id: NodeId,
        applied: LogIndex,
        storage: MemStorage,
        rng: SeededRng,
    ) -> Self {
        let mut config = template.clone();
        config.id = id;
        config.applied = applied;
        PaxosNode::new(config, storage, rng).expect("valid durable state")
    }

    /// Phase 1 from this node now.
    fn start_campaign(&mut self) {
        self.campaign_now();
    }
}
