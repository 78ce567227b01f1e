//! Engine settings, each with its unit in its name and a limit where a queue could grow.

use yizhi_engine::{LogIndex, NodeId};

/// How the leader confirms it is still leader before answering a read (thesis §6.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// One heartbeat round acknowledged by a quorum per batch of reads. Safe under any clock drift.
    Safe,
    /// Answer at once while the leader lease holds. Requires `check_quorum`, and is only safe while
    /// no node's clock runs faster than the leader's by more than `lease_clock_drift_bound_percent`.
    LeaseBased,
}

#[derive(Clone, Debug)]
pub struct RaftConfig {
    pub id: NodeId,
    /// A follower that hears nothing for this long campaigns; randomized in `[t, 2t)` (paper §5.2).
    pub election_timeout_ticks: u64,
    pub heartbeat_interval_ticks: u64,
    /// Thesis §9.6: ask before bumping the term, so a partitioned node cannot disrupt a healthy cluster.
    pub pre_vote: bool,
    /// Thesis §6.2: a leader that has not heard from a quorum within an election timeout steps down,
    /// and followers that hear from a leader ignore votes for an election timeout.
    pub check_quorum: bool,
    pub read_mode: ReadMode,
    /// How much faster than the leader's a follower's clock may run, in percent, for lease reads.
    pub lease_clock_drift_bound_percent: u64,
    /// Appends in flight to one follower (pipelining window).
    pub max_inflight_msgs: usize,
    /// Entry bytes per append message (batching bound). At least one entry is always sent.
    pub max_msg_bytes: u64,
    /// Entry bytes handed out for applying per `Ready`.
    pub max_committed_bytes_per_ready: u64,
    pub max_proposal_bytes: u64,
    /// Proposed but not yet committed bytes on the leader; beyond it proposals are refused.
    pub max_uncommitted_bytes: u64,
    pub max_pending_reads: usize,
    /// Index the state machine has already applied (after a restart: the restored snapshot's index).
    pub applied: LogIndex,
}

impl RaftConfig {
    pub fn new(id: NodeId) -> Self {
        RaftConfig {
            id,
            election_timeout_ticks: 10,
            heartbeat_interval_ticks: 1,
            pre_vote: true,
            check_quorum: true,
            read_mode: ReadMode::Safe,
            lease_clock_drift_bound_percent: 10,
            max_inflight_msgs: 256,
            max_msg_bytes: 1024 * 1024,
            max_committed_bytes_per_ready: 16 * 1024 * 1024,
            max_proposal_bytes: 1536 * 1024,
            max_uncommitted_bytes: 64 * 1024 * 1024,
            max_pending_reads: 65_536,
            applied: 0,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == 0 {
            return Err(ConfigError("node id 0 is reserved".into()));
        }
        if self.heartbeat_interval_ticks == 0 {
            return Err(ConfigError("heartbeat interval must be at least one tick".into()));
        }
        if self.election_timeout_ticks <= self.heartbeat_interval_ticks {
            return Err(ConfigError(
                "election timeout must be longer than the heartbeat interval".into(),
            ));
        }
        if self.max_inflight_msgs == 0 || self.max_pending_reads == 0 {
            return Err(ConfigError(
                "max inflight messages and max pending reads must be positive".into(),
            ));
        }
        if self.read_mode == ReadMode::LeaseBased && !self.check_quorum {
            return Err(ConfigError("lease-based reads require check_quorum".into()));
        }
        if self.max_proposal_bytes > self.max_uncommitted_bytes {
            return Err(ConfigError(
                "max proposal bytes exceeds the uncommitted-bytes limit".into(),
            ));
        }
        Ok(())
    }

    /// Ticks a lease lasts after the heartbeat round that confirmed it was sent. Followers that
    /// acknowledged that round refuse other candidates for a full election timeout of *their* clock;
    /// shortening by the drift bound (and one tick for rounding) keeps the lease inside it.
    pub fn lease_ticks(&self) -> u64 {
        let drift_scaled = self.election_timeout_ticks * 100 / (100 + self.lease_clock_drift_bound_percent);
        drift_scaled.saturating_sub(1)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid raft config: {0}")]
pub struct ConfigError(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_each_bad_setting_is_refused() {
        assert_eq!(RaftConfig::new(1).validate(), Ok(()));
        let bad: [fn(&mut RaftConfig); 7] = [
            |c| c.id = 0,
            |c| c.heartbeat_interval_ticks = 0,
            |c| c.election_timeout_ticks = c.heartbeat_interval_ticks,
            |c| c.max_inflight_msgs = 0,
            |c| c.max_pending_reads = 0,
            |c| {
                c.read_mode = ReadMode::LeaseBased;
                c.check_quorum = false;
            },
            |c| c.max_proposal_bytes = c.max_uncommitted_bytes + 1,
        ];
        for (i, breaker) in bad.iter().enumerate() {
            let mut config = RaftConfig::new(1);
            breaker(&mut config);
            assert!(config.validate().is_err(), "bad setting #{i} accepted");
        }
        let mut lease = RaftConfig::new(1);
        lease.read_mode = ReadMode::LeaseBased;
        assert_eq!(lease.validate(), Ok(()), "lease with check_quorum is fine");
    }

    #[test]
    fn lease_is_shorter_than_the_election_timeout_by_the_drift_bound() {
        let mut config = RaftConfig::new(1);
        config.election_timeout_ticks = 100;
        config.lease_clock_drift_bound_percent = 25;
        // 100 ticks on a clock that may run 25% fast last 80 of ours; one more tick for rounding.
        assert_eq!(config.lease_ticks(), 79);
        config.lease_clock_drift_bound_percent = 0;
        assert_eq!(config.lease_ticks(), 99);
    }
}
