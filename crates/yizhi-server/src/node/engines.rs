//! The two consensus engines as the server runs them: over the WAL, built from the server's
//! settings. The runtime is generic over [`ServerEngine`] and never learns which one it drives.

use yizhi_engine::{Engine, NodeId, SeededRng};
use yizhi_paxos::{PaxosConfig, PaxosNode};
use yizhi_raft::{MessageKind, RaftConfig, RaftNode};
use yizhi_storage::storage::WalStorage;

/// Timing and sizes the server passes to whichever engine it builds.
#[derive(Clone, Copy, Debug)]
pub struct EngineSettings {
    pub id: NodeId,
    pub election_timeout_ticks: u64,
    /// What the state machine holds already: the engine hands out committed entries after it.
    pub applied: u64,
    pub max_proposal_bytes: u64,
    pub seed: u64,
}

/// Why an engine could not be built over the recovered WAL.
#[derive(Debug, thiserror::Error)]
pub enum EngineBuildError {
    #[error(transparent)]
    Raft(#[from] yizhi_raft::RaftError),
    #[error(transparent)]
    Paxos(#[from] yizhi_paxos::PaxosError),
}

pub trait ServerEngine: Engine<Storage = WalStorage> + Send + 'static {
    fn build(settings: EngineSettings, storage: WalStorage) -> Result<Self, EngineBuildError>
    where
        Self: Sized;

    /// Snapshot messages are reported back to the engine once handed to the transport.
    fn is_snapshot(msg: &Self::Message) -> bool;

    /// Messages the runtime may send before the `Ready` they came in is durable. Only what cannot
    /// promise anything about this member's disk qualifies.
    fn may_send_before_persist(msg: &Self::Message) -> bool;
}

/// An engine's config from the settings: both engines' config types (distinct types of their own
/// crates) have these fields, and the server sets them the same way.
macro_rules! engine_config {
    ($config:ident, $settings:expr) => {{
        let settings = $settings;
        let mut config = $config::new(settings.id);
        config.election_timeout_ticks = settings.election_timeout_ticks;
        config.heartbeat_interval_ticks = 1;
        config.applied = settings.applied;
        config.max_proposal_bytes = settings.max_proposal_bytes;
        config
    }};
}

impl ServerEngine for RaftNode<WalStorage> {
    fn build(settings: EngineSettings, storage: WalStorage) -> Result<Self, EngineBuildError> {
        let config = engine_config!(RaftConfig, settings);
        Ok(RaftNode::new(config, storage, SeededRng::new(settings.seed))?)
    }

    fn is_snapshot(msg: &Self::Message) -> bool {
        matches!(msg.kind, MessageKind::InstallSnapshot { .. })
    }

    /// A leader's appends and heartbeats (thesis §10.2.1). They assert nothing about the leader's
    /// own disk: its term and vote were durable before it could win, and the commit index they
    /// carry counts the leader's own log only after `advance`, i.e. after its write is durable.
    fn may_send_before_persist(msg: &Self::Message) -> bool {
        matches!(
            msg.kind,
            MessageKind::Append { .. } | MessageKind::Heartbeat { .. }
        )
    }
}

impl ServerEngine for PaxosNode<WalStorage> {
    fn build(settings: EngineSettings, storage: WalStorage) -> Result<Self, EngineBuildError> {
        let config = engine_config!(PaxosConfig, settings);
        Ok(PaxosNode::new(config, storage, SeededRng::new(settings.seed))?)
    }

    fn is_snapshot(msg: &Self::Message) -> bool {
        msg.is_snapshot()
    }

    /// Not argued for this engine yet (its leader is also an acceptor whose accept is a promise),
    /// so everything waits for the disk.
    fn may_send_before_persist(_msg: &Self::Message) -> bool {
        false
    }
}
