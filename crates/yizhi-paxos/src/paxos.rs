//! The state of one Multi-Paxos node (acceptor, learner, and — when its ballot wins phase 1 —
//! distinguished proposer) and the single `step` entry point that routes messages to handlers.

use yizhi_engine::ready::Reported;
use yizhi_engine::{
    Envelope, HardState, LogIndex, LogStorage, Membership, NodeId, ReadState, Role, SeededRng, Snapshot,
    SoftState, StorageError, quorum::MajorityConfig,
};

use crate::ballot::Ballot;
use crate::config::{ConfigError, PaxosConfig};
use crate::log::SlotLog;
use crate::message::Message;
use crate::roles::{Candidacy, Leadership};

/// Messages queued for the next `Ready` before the node stops queueing more: a bug guard, far above
/// what one step can produce with the inflight limits.
pub const MAX_OUTBOX_MSGS: usize = 1 << 16;
/// A follower told that its leader's connection closed starts phase 1 after one heartbeat
/// interval plus a delay drawn uniformly from `1..=CONNECTION_LOST_CAMPAIGN_TICKS_MAX` ticks,
/// instead of the rest of its election timeout. The heartbeat interval first: acceptors here
/// promise any higher ballot (no CheckQuorum-style stickiness), so a wrong hint must give a live
/// leader's next heartbeat the time to arrive and cancel the campaign. The random part keeps
/// followers that see the same close from all preparing at once (though a tie costs little here:
/// the higher ballot wins).
pub const CONNECTION_LOST_CAMPAIGN_TICKS_MAX: u64 = 3;

#[derive(Debug, thiserror::Error)]
pub enum PaxosError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot read durable state: {0}")]
    Storage(#[from] StorageError),
    #[error("node {0} is not a member of {1:?}")]
    NotMember(NodeId, Membership),
    #[error("durable commit {commit} beyond durable last slot {last}")]
    CommitBeyondLog { commit: LogIndex, last: LogIndex },
}

/// What the last `ready()` handed out, so `advance()` knows what became durable and applied.
#[derive(Debug)]
pub(crate) struct HandedOut {
    pub persisted_last: Option<LogIndex>,
    pub applied_to: LogIndex,
}

#[derive(Debug)]
pub struct PaxosNode<S: LogStorage> {
    pub(crate) config: PaxosConfig,
    pub(crate) storage: S,
    pub(crate) rng: SeededRng,
    pub(crate) membership: Membership,
    pub(crate) voters: MajorityConfig,
    /// The highest ballot this acceptor promised. Invariant: never decreases; durable (as
    /// `HardState.term`) before any message that depends on it leaves.
    pub(crate) promised: Ballot,
    pub(crate) log: SlotLog,
    /// Every slot up to `commit` is chosen and held (or covered by the snapshot).
    /// Invariant: never decreases; `applied <= commit <= last slot`.
    pub(crate) commit: LogIndex,
    pub(crate) applied: LogIndex,
    pub(crate) role: Role,
    pub(crate) leader: Option<NodeId>,
    /// The highest round seen in any ballot, so a new campaign outbids everyone it has heard of.
    pub(crate) max_round_seen: u64,
    pub(crate) ticks_since_heard: u64,
    /// Randomized in `[t, 2t)` each time it is reset, so that duelling proposers spread out.
    pub(crate) election_deadline_ticks: u64,
    /// Set while `election_deadline_ticks` is the short one a lost-connection hint put in place;
    /// hearing from a leader then draws a full deadline again.
    pub(crate) election_deadline_shortened: bool,
    pub(crate) heartbeat_elapsed_ticks: u64,
    pub(crate) candidacy: Option<Candidacy>,
    pub(crate) leadership: Option<Leadership>,
    pub(crate) pending_snapshot: Option<Snapshot>,
    pub(crate) msgs: Vec<Envelope<Message>>,
    pub(crate) read_states: Vec<ReadState>,
    pub(crate) reported: Reported,
    pub(crate) handed_out: Option<HandedOut>,
}

impl<S: LogStorage> PaxosNode<S> {
    pub fn new(config: PaxosConfig, storage: S, rng: SeededRng) -> Result<Self, PaxosError> {
        config.validate()?;
        let (hard_state, membership) = storage.initial_state()?;
        if !membership.contains(config.id) {
            return Err(PaxosError::NotMember(config.id, membership));
        }
        let snapshot_index = storage.first_index() - 1;
        let commit = hard_state.commit.max(snapshot_index);
        if commit > storage.last_index().max(snapshot_index) {
            let last = storage.last_index();
            return Err(PaxosError::CommitBeyondLog { commit, last });
        }
        let applied = config.applied.clamp(snapshot_index, commit);
        let promised = Ballot::from_term(hard_state.term);
        let voters = MajorityConfig::new(membership.voters.clone());
        let mut node = PaxosNode {
            config,
            storage,
            rng,
            membership,
            voters,
            promised,
            log: SlotLog::new(snapshot_index),
            commit,
            applied,
            role: Role::Follower,
            leader: None,
            max_round_seen: promised.round(),
            ticks_since_heard: 0,
            election_deadline_ticks: 0,
            election_deadline_shortened: false,
            heartbeat_elapsed_ticks: 0,
            candidacy: None,
            leadership: None,
            pending_snapshot: None,
            msgs: Vec::new(),
            read_states: Vec::new(),
            reported: Reported::at_start(hard_state),
            handed_out: None,
        };
        if !node.is_voter() {
            node.role = Role::Learner;
        }
        node.reset_election_timer();
        Ok(node)
    }

    pub fn promised(&self) -> Ballot {
        self.promised
    }

    pub fn committed(&self) -> LogIndex {
        self.commit
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// The ballot this node leads with, once its phase 1 succeeded.
    pub fn leading_ballot(&self) -> Option<Ballot> {
        self.leadership.as_ref().map(|l| l.ballot)
    }

    /// Starts phase 1 now, as an expired election timer would (tests, leadership transfer).
    pub fn campaign_now(&mut self) {
        if self.is_voter() {
            self.campaign();
        }
    }

    pub(crate) fn id(&self) -> NodeId {
        self.config.id
    }

    pub(crate) fn is_voter(&self) -> bool {
        self.membership.is_voter(self.config.id)
    }

    pub(crate) fn last(&self) -> LogIndex {
        self.log.last(&self.storage)
    }

    pub(crate) fn peers(&self) -> Vec<NodeId> {
        let me = self.id();
        self.membership
            .members()
            .into_iter()
            .filter(|&p| p != me)
            .collect()
    }

    pub(crate) fn hard_state(&self) -> HardState {
        HardState {
            term: self.promised.term(),
            vote: None,
            commit: self.commit,
        }
    }

    pub(crate) fn soft_state(&self) -> SoftState {
        SoftState {
            leader: self.leader,
            role: self.role,
        }
    }

    pub(crate) fn send(&mut self, to: NodeId, msg: Message) {
        assert_ne!(to, self.id(), "node {} sends {msg:?} to itself", self.id());
        assert!(
            self.msgs.len() < MAX_OUTBOX_MSGS,
            "node {}: {} messages queued without a ready()",
            self.id(),
            self.msgs.len()
        );
        self.msgs.push(Envelope {
            from: self.id(),
            to,
            msg,
        });
    }

    pub(crate) fn reset_election_timer(&mut self) {
        let t = self.config.election_timeout_ticks;
        self.ticks_since_heard = 0;
        self.election_deadline_ticks = self.rng.range_inclusive(t, 2 * t - 1);
        self.election_deadline_shortened = false;
    }

    /// The transport saw its connection to `peer` close. A follower of `peer` forgets it and
    /// starts phase 1 soon (see [`CONNECTION_LOST_CAMPAIGN_TICKS_MAX`]) instead of waiting out its
    /// deadline. Safe whatever the hint says: Paxos's safety never rests on timing, and this
    /// engine has no leases a premature ballot could break (reads are quorum-confirmed,
    /// `reads.rs`). A wrong hint whose leader's heartbeat is lost too costs one phase 1.
    pub(crate) fn connection_lost(&mut self, peer: NodeId) {
        if self.is_leader() {
            self.report_unreachable_peer(peer);
            return;
        }
        if self.role != Role::Follower || self.leader != Some(peer) {
            return;
        }
        self.leader = None;
        let delay_ticks = self.config.heartbeat_interval_ticks
            + self.rng.range_inclusive(1, CONNECTION_LOST_CAMPAIGN_TICKS_MAX);
        let deadline_ticks = self.ticks_since_heard + delay_ticks;
        if deadline_ticks < self.election_deadline_ticks {
            self.election_deadline_ticks = deadline_ticks;
            self.election_deadline_shortened = true;
        }
    }

    /// Raises the promise. The new value is durable before any reply that depends on it is sent,
    /// because every message of a `Ready` leaves after its hard state is synced.
    pub(crate) fn promise(&mut self, ballot: Ballot) {
        assert!(
            ballot >= self.promised,
            "node {}: promise would decrease from {:?} to {ballot:?}",
            self.id(),
            self.promised
        );
        self.max_round_seen = self.max_round_seen.max(ballot.round());
        if ballot > self.promised {
            // A leader or candidate holds its own ballot as its promise, so a higher one ends it.
            let mine = self
                .leading_ballot()
                .or(self.candidacy.as_ref().map(|c| c.ballot));
            assert!(
                mine.is_none_or(|b| b == self.promised),
                "node {}: proposing with {mine:?} but promised {:?}",
                self.id(),
                self.promised
            );
            self.promised = ballot;
            if mine.is_some() {
                self.become_follower(Some(ballot.node()));
            }
        }
    }

    pub(crate) fn become_follower(&mut self, leader: Option<NodeId>) {
        self.candidacy = None;
        self.leadership = None;
        self.leader = leader.filter(|&l| l != self.id());
        self.role = if self.is_voter() {
            Role::Follower
        } else {
            Role::Learner
        };
        self.reset_election_timer();
    }

    /// Moves the commit index up to `to` (never down).
    pub(crate) fn commit_to(&mut self, to: LogIndex) {
        if to <= self.commit {
            return;
        }
        let last = self.last();
        assert!(
            to <= last,
            "node {}: commit {to} beyond last slot {last}",
            self.id()
        );
        self.commit = to;
    }

    pub fn tick(&mut self) {
        if self.role == Role::Leader {
            self.heartbeat_elapsed_ticks += 1;
            if self.heartbeat_elapsed_ticks >= self.config.heartbeat_interval_ticks {
                self.heartbeat_elapsed_ticks = 0;
                self.broadcast_heartbeat();
            }
            return;
        }
        self.ticks_since_heard += 1;
        if self.is_voter() && self.ticks_since_heard >= self.election_deadline_ticks {
            self.campaign();
        }
    }

    pub fn step(&mut self, envelope: Envelope<Message>) {
        let Envelope { from, to, msg } = envelope;
        if to != self.id() || !self.membership.contains(from) || from == self.id() {
            return;
        }
        match msg {
            Message::Prepare {
                ballot,
                first_unchosen,
            } => self.on_prepare(from, ballot, first_unchosen),
            Message::Accept {
                ballot,
                commit,
                entries,
            } => self.on_accept(from, ballot, commit, entries),
            Message::Heartbeat {
                ballot,
                commit,
                read_round,
            } => self.on_heartbeat(from, ballot, commit, read_round),
            Message::InstallSnapshot { ballot, snapshot } => self.on_install_snapshot(from, ballot, snapshot),
            Message::TimeoutNow { ballot } => self.on_timeout_now(ballot),
            Message::Promise {
                ballot,
                commit,
                accepted,
                snapshot,
            } => self.on_promise(from, ballot, commit, accepted, snapshot),
            Message::Accepted {
                ballot,
                matched,
                run_last,
            } => self.on_accepted(from, ballot, matched, Some(run_last)),
            Message::HeartbeatAck {
                ballot,
                matched,
                read_round,
            } => self.on_heartbeat_ack(from, ballot, matched, read_round),
            Message::Nack { promised } => self.on_nack(promised),
        }
    }

    /// A higher ballot refused us: stop proposing and let its owner lead. The randomized timer
    /// restarts, so if that owner is gone the duel resolves by whoever times out first.
    fn on_nack(&mut self, promised: Ballot) {
        self.max_round_seen = self.max_round_seen.max(promised.round());
        let mine = self
            .leading_ballot()
            .or(self.candidacy.as_ref().map(|c| c.ballot));
        if mine.is_some_and(|b| promised > b) {
            self.become_follower(Some(promised.node()));
        }
    }

    fn on_timeout_now(&mut self, ballot: Ballot) {
        if ballot >= self.promised && self.is_voter() && self.role != Role::Leader {
            self.campaign();
        }
    }
}

#[cfg(test)]
#[path = "paxos_tests.rs"]
pub(crate) mod tests;
