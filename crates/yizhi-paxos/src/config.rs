//! Settings of one Paxos node. Every limit is named with its unit.

use yizhi_engine::{LogIndex, NodeId};

use crate::ballot::NODE_ID_LIMIT;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("node id {0} is 0 or does not fit in a ballot (limit {NODE_ID_LIMIT})")]
    BadNodeId(NodeId),
    #[error("{name} must be positive")]
    Zero { name: &'static str },
    #[error("election timeout {election_ticks} ticks must exceed the heartbeat interval {heartbeat_ticks}")]
    TimeoutTooShort {
        election_ticks: u64,
        heartbeat_ticks: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaxosConfig {
    pub id: NodeId,
    /// What the state machine has applied already (the runtime restores it from its snapshot).
    pub applied: LogIndex,
    /// The leader sends heartbeats (commit index, read confirmation, retransmission) this often.
    pub heartbeat_interval_ticks: u64,
    /// A node that hears no leader for a random time in `[t, 2t)` starts phase 1.
    pub election_timeout_ticks: u64,
    /// Accept messages outstanding per acceptor before the leader waits for acknowledgements.
    pub max_inflight_msgs: usize,
    /// Soft bound on the entries carried by one Accept (at least one entry always goes).
    pub max_msg_bytes: u64,
    /// Proposals larger than this are refused.
    pub max_proposal_bytes: u64,
    /// Bytes proposed and not yet chosen before the leader pushes back on proposals.
    pub max_uncommitted_bytes: u64,
    /// Reads waiting for quorum confirmation.
    pub max_pending_reads: usize,
    /// Committed entries handed to the state machine in one `Ready`.
    pub max_committed_bytes_per_ready: u64,
}

impl PaxosConfig {
    pub fn new(id: NodeId) -> Self {
        PaxosConfig {
            id,
            applied: 0,
            heartbeat_interval_ticks: 1,
            election_timeout_ticks: 10,
            max_inflight_msgs: 64,
            max_msg_bytes: 1 << 20,
            max_proposal_bytes: 1 << 20,
            max_uncommitted_bytes: 16 << 20,
            max_pending_reads: 1024,
            max_committed_bytes_per_ready: 4 << 20,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == 0 || self.id >= NODE_ID_LIMIT {
            return Err(ConfigError::BadNodeId(self.id));
        }
        let positive = [
            ("heartbeat_interval_ticks", self.heartbeat_interval_ticks),
            ("max_inflight_msgs", self.max_inflight_msgs as u64),
            ("max_uncommitted_bytes", self.max_uncommitted_bytes),
            ("max_pending_reads", self.max_pending_reads as u64),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Zero { name });
        }
        if self.election_timeout_ticks <= self.heartbeat_interval_ticks {
            return Err(ConfigError::TimeoutTooShort {
                election_ticks: self.election_timeout_ticks,
                heartbeat_ticks: self.heartbeat_interval_ticks,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_outside_the_ballot_encoding_are_refused() {
        for id in [0, NODE_ID_LIMIT, NODE_ID_LIMIT + 1] {
            assert_eq!(PaxosConfig::new(id).validate(), Err(ConfigError::BadNodeId(id)));
        }
        assert_eq!(PaxosConfig::new(1).validate(), Ok(()));
        assert_eq!(PaxosConfig::new(NODE_ID_LIMIT - 1).validate(), Ok(()));
    }
}
