//! Membership changes (thesis §4): the configuration in force is the last one in the log,
//! committed or not (§4.1); a change of voters passes through a joint configuration that the
//! leader leaves on its own once it commits (§4.3); a leader outside the new configuration leads
//! until that configuration commits, then hands over and steps down (§4.2.2).
//!
//! The configuration a snapshot records is the runtime's: the last `Membership` entry its state
//! machine applied at or before the snapshot's index (as etcd's apply loop keeps its `ConfState`),
//! because the engine folds committed configurations away and its applier may lag.

use yizhi_engine::quorum::JointConfig;
use yizhi_engine::{
    ConfChange, ConfChangeError, Entry, EntryPayload, LogIndex, LogPosition, LogStorage, Membership,
    ProposeError, Role, StorageError,
};

use crate::config_log::ConfigLog;
use crate::progress::Progress;
use crate::raft::RaftNode;

/// Bytes of log read at a time while looking for configuration entries at start (a batching hint:
/// storage returns at least one entry whatever it is).
const START_SCAN_BATCH_BYTES: u64 = 1 << 20;

/// Why a configuration change was not proposed. Nothing changed when one is returned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfChangeProposeError {
    #[error(transparent)]
    Propose(#[from] ProposeError),
    /// One change at a time: the last configuration entry is not committed yet (for a joint
    /// configuration, the leader's own entry that leaves it is still to come or to commit).
    #[error("a configuration change is in progress (entry {index} not committed yet)")]
    InProgress { index: LogIndex },
    /// A new leader first commits an entry of its own term, so that it knows every configuration
    /// entry a previous leader may have committed (the rule of thesis §4.1's erratum).
    #[error("the leader has not committed an entry of its term yet")]
    LeaderNotReady,
    #[error(transparent)]
    Invalid(#[from] ConfChangeError),
}

/// The configuration entries among `entries`, with their positions.
pub(crate) fn config_entries(entries: &[Entry]) -> Vec<(LogPosition, Membership)> {
    entries
        .iter()
        .filter_map(|entry| match &entry.payload {
            EntryPayload::Membership(m) => Some((entry.position(), m.clone())),
            _ => None,
        })
        .collect()
}

impl<S: LogStorage> RaftNode<S> {
    /// The configuration log at start: the storage's committed configuration, then every
    /// configuration entry after the commit index (thesis §4.1: those are in force too).
    pub(crate) fn configs_at_start(
        storage: &S,
        committed_membership: Membership,
        committed: LogIndex,
    ) -> Result<ConfigLog, StorageError> {
        let mut configs = ConfigLog::new(committed_membership, committed);
        let last = storage.last_index();
        let mut next = committed + 1;
        while next <= last {
            let entries = storage.entries(next, last + 1, START_SCAN_BATCH_BYTES)?;
            assert!(!entries.is_empty(), "storage returned no entry from {next}");
            for entry in &entries {
                if let EntryPayload::Membership(m) = &entry.payload {
                    configs.push(entry.position(), m.clone());
                }
            }
            next = entries.last().expect("checked").index + 1;
        }
        Ok(configs)
    }

    /// Proposes `changes`: a change of voters enters a joint configuration (left automatically
    /// once it commits), a change of learners alone takes effect in one entry.
    pub fn propose_conf_change(
        &mut self,
        changes: &[ConfChange],
    ) -> Result<LogPosition, ConfChangeProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader { leader: self.leader }.into());
        }
        if self.lead_transferee.is_some() {
            return Err(ProposeError::TransferInProgress.into());
        }
        if self.log.term(self.log.committed) != Ok(self.term) {
            return Err(ConfChangeProposeError::LeaderNotReady);
        }
        // Fold first: what remains past the base is not committed yet.
        self.configs.committed_to(self.log.committed);
        if let Some(index) = self.configs.last_index() {
            return Err(ConfChangeProposeError::InProgress { index });
        }
        let current = self.configs.in_force();
        let next = if changes.iter().any(|change| change.changes_voters(current)) {
            current.enter_joint(changes)?
        } else {
            current.apply_simple(changes)?
        };
        Ok(self.append_config(next))
    }

    fn append_config(&mut self, membership: Membership) -> LogPosition {
        let entry = Entry {
            index: self.log.last_index() + 1,
            term: self.term,
            payload: EntryPayload::Membership(membership.clone()),
        };
        let position = entry.position();
        self.append_entry(entry);
        self.configs.push(position, membership);
        self.config_changed();
        position
    }

    /// After a follower accepted an append (which may have truncated a conflicting suffix):
    /// forget the configurations its log no longer holds, then track the append's own, those
    /// `configs` (from [`config_entries`]) past what is tracked.
    pub(crate) fn track_configs_in_append(&mut self, configs: Vec<(LogPosition, Membership)>) {
        let log = &self.log;
        self.configs.keep_held(|index| log.term(index).ok());
        for (position, membership) in configs {
            // An accepted append leaves every entry it carried in the log (Log Matching).
            assert_eq!(
                self.log.term(position.index),
                Ok(position.term),
                "accepted configuration entry {position:?} is not in the log"
            );
            // A resent entry is tracked already (or folded into the base).
            if position.index > self.configs.tracked_through() {
                self.configs.push(position, membership);
            }
        }
        self.config_changed();
    }

    /// A snapshot replaced the log: its configuration is the base, nothing is past it.
    pub(crate) fn restore_configs(&mut self, membership: Membership, index: LogIndex) {
        self.configs = ConfigLog::new(membership, index);
        self.config_changed();
    }

    /// Brings the quorum, the progress map and this node's role in line with the configuration
    /// in force. A leader keeps its own progress even when it is not a member (§4.2.2).
    pub(crate) fn config_changed(&mut self) {
        // Compared before cloning: this runs on every accepted append.
        if *self.configs.in_force() == self.membership {
            return;
        }
        let membership = self.configs.in_force().clone();
        self.quorum = JointConfig::from_membership(&membership);
        let next = self.log.last_index() + 1;
        let max_inflight = self.config.max_inflight_msgs;
        let own = self.id();
        let leading = self.role == Role::Leader;
        self.progress
            .retain(|id, _| membership.contains(*id) || (leading && *id == own));
        for id in membership.members() {
            self.progress
                .entry(id)
                .or_insert_with(|| Progress::new(next, max_inflight));
        }
        self.membership = membership;
        // Appends and snapshots reach a candidate only after it stood down (`step_candidate`).
        assert!(
            !matches!(self.role, Role::Candidate | Role::PreCandidate),
            "configuration changed under a campaign of {}",
            self.id()
        );
        if !leading {
            self.role = if self.is_voter() {
                Role::Follower
            } else {
                Role::Learner
            };
        }
    }

    /// After the commit index moved: fold what is committed, and as leader finish a change —
    /// leave a joint configuration (§4.3), or step down from one that no longer holds us (§4.2.2).
    pub(crate) fn configs_committed(&mut self) {
        self.configs.committed_to(self.log.committed);
        if self.role != Role::Leader || self.configs.last_index().is_some() {
            return;
        }
        let in_force = self.configs.in_force().clone();
        if in_force.is_joint() {
            let next = in_force.leave_joint().expect("joint");
            self.append_config(next);
        } else if !in_force.is_voter(self.id()) {
            self.hand_over_leadership();
        }
    }

    /// A leader outside the configuration in force: asks the best-placed voter to campaign now
    /// (TimeoutNow, thesis §3.10) and becomes a follower without a vote in the next term.
    fn hand_over_leadership(&mut self) {
        let successor = self
            .progress
            .iter()
            .filter(|(id, _)| self.membership.is_voter(**id))
            .max_by_key(|(id, pr)| (pr.matched, std::cmp::Reverse(**id)))
            .map(|(id, _)| *id);
        if let Some(to) = successor
            && self.progress[&to].matched == self.log.last_index()
        {
            self.send_timeout_now(to);
        }
        let term = self.term;
        self.become_follower(term, None);
    }
}
