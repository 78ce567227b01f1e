//! The Raft state machine: roles, timers and the single `step` entry point for messages.
//! Handlers for each concern live beside it (election.rs, replication.rs, reads.rs).

use std::collections::BTreeMap;

use yizhi_engine::quorum::{JointConfig, VoteResult};
use yizhi_engine::ready::Reported;
use yizhi_engine::{
    Envelope, HardState, LogIndex, LogStorage, Membership, NodeId, ReadState, Role, SeededRng, SoftState,
    Term,
};

use crate::config::{ConfigError, RaftConfig};
use crate::config_log::ConfigLog;
use crate::log::RaftLog;
use crate::message::{Message, MessageKind};
use crate::progress::Progress;
use crate::read_index::ReadTracker;

/// Messages waiting for the next `Ready`. Beyond it new messages are dropped: Raft tolerates loss,
/// and a runtime that stops calling `ready()` must not make the engine grow without bound.
pub const MAX_OUTBOX_MSGS: usize = 1 << 16;
/// Reads that arrive before the new leader has committed an entry of its term wait here (thesis
/// §6.4: until then the leader does not know the commit index).
pub const MAX_READS_AWAITING_COMMIT: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("storage: {0}")]
    Storage(#[from] yizhi_engine::StorageError),
    #[error("durable state is inconsistent: {0}")]
    CorruptState(String),
}

/// What the last `ready()` handed out, so `advance()` knows what became durable and applied.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HandedOut {
    pub snapshot_index: Option<LogIndex>,
    pub applied_to: LogIndex,
    pub uncommitted_bytes_released: u64,
}

#[derive(Debug)]
pub struct RaftNode<S> {
    pub(crate) config: RaftConfig,
    pub(crate) rng: SeededRng,
    pub(crate) term: Term,
    /// Invariant: at most one vote per term — set only when `None`, cleared only when the term grows.
    pub(crate) vote: Option<NodeId>,
    pub(crate) role: Role,
    pub(crate) leader: Option<NodeId>,
    pub(crate) log: RaftLog<S>,
    /// The configuration in force (`configs.in_force()`), kept here with its quorum for speed.
    pub(crate) membership: Membership,
    pub(crate) quorum: JointConfig,
    /// Every configuration entry past the commit index, over the committed configuration.
    pub(crate) configs: ConfigLog,
    /// The leader's view of every member (itself included). Rebuilt at every term change.
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    pub(crate) votes: BTreeMap<NodeId, bool>,
    pub(crate) election_elapsed_ticks: u64,
    pub(crate) heartbeat_elapsed_ticks: u64,
    pub(crate) randomized_election_timeout_ticks: u64,
    /// Set while `randomized_election_timeout_ticks` is the short delay a lost-connection hint
    /// about the leader put in place (`report_connection_lost`); cleared when a full timeout is
    /// drawn again (a leader heard from, a campaign begun, any reset).
    pub(crate) election_timeout_shortened: bool,
    /// Ticks since this engine was created: the leader's clock for the lease.
    pub(crate) ticks_total: u64,
    /// With lease reads, a node refuses votes until one election timeout has passed after start:
    /// it may have acknowledged a leader's lease just before it restarted, and forgot it.
    pub(crate) boot_guard: bool,
    pub(crate) lead_transferee: Option<NodeId>,
    /// Once TimeoutNow went out in this term the lease can no longer be trusted: the transferee's
    /// vote requests bypass the followers' lease check.
    pub(crate) timeout_now_sent: bool,
    pub(crate) reads: ReadTracker,
    pub(crate) reads_awaiting_commit: Vec<(NodeId, u64)>,
    pub(crate) uncommitted_bytes: u64,
    /// Batching: proposals and commit advances mark this; `ready()` sends one append per follower.
    pub(crate) append_pending: bool,
    pub(crate) msgs: Vec<Envelope<Message>>,
    pub(crate) read_states: Vec<ReadState>,
    pub(crate) reported: Reported,
    pub(crate) handed_out: Option<HandedOut>,
}

impl<S: LogStorage> RaftNode<S> {
    pub fn new(config: RaftConfig, storage: S, rng: SeededRng) -> Result<Self, RaftError> {
        config.validate()?;
        let (hard_state, membership) = storage.initial_state()?;
        membership.assert_valid();
        let snapshot_index = storage.first_index() - 1;
        let last_index = storage.last_index();
        let committed = hard_state.commit.max(snapshot_index);
        if committed > last_index {
            return Err(RaftError::CorruptState(format!(
                "commit index {committed} is beyond the last stored index {last_index}"
            )));
        }
        let applied = config.applied.max(snapshot_index);
        if applied > committed {
            return Err(RaftError::CorruptState(format!(
                "applied {applied} is beyond commit {committed}"
            )));
        }
        // Thesis §4.1: configuration entries past the commit index are in force too.
        let configs = Self::configs_at_start(&storage, membership, committed)?;
        let membership = configs.in_force().clone();
        membership.assert_valid();
        let id = config.id;
        let mut node = RaftNode {
            rng,
            term: hard_state.term,
            vote: hard_state.vote,
            role: Role::Follower,
            leader: None,
            configs,
            log: RaftLog::new(storage, committed, applied),
            quorum: JointConfig::from_membership(&membership),
            membership,
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            election_elapsed_ticks: 0,
            heartbeat_elapsed_ticks: 0,
            randomized_election_timeout_ticks: config.election_timeout_ticks,
            election_timeout_shortened: false,
            ticks_total: 0,
            boot_guard: config.read_mode == crate::config::ReadMode::LeaseBased,
            lead_transferee: None,
            timeout_now_sent: false,
            reads: ReadTracker::default(),
            reads_awaiting_commit: Vec::new(),
            uncommitted_bytes: 0,
            append_pending: false,
            msgs: Vec::new(),
            read_states: Vec::new(),
            reported: Reported::at_start(HardState {
                term: hard_state.term,
                vote: hard_state.vote,
                commit: committed,
            }),
            handed_out: None,
            config,
        };
        node.become_follower(hard_state.term, None);
        node.reported.soft_state = node.soft_state();
        assert_eq!(node.id(), id);
        Ok(node)
    }

    pub fn id(&self) -> NodeId {
        self.config.id
    }

    pub fn term(&self) -> Term {
        self.term
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    pub fn committed(&self) -> LogIndex {
        self.log.committed
    }

    pub fn config(&self) -> &RaftConfig {
        &self.config
    }

    /// Read-only access to the leader's view of a follower, for tests and status pages.
    pub fn progress_of(&self, id: NodeId) -> Option<&Progress> {
        self.progress.get(&id)
    }

    pub(crate) fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }

    pub(crate) fn soft_state(&self) -> SoftState {
        SoftState {
            leader: self.leader,
            role: self.role,
        }
    }

    pub(crate) fn is_voter(&self) -> bool {
        self.quorum.is_voter(self.id())
    }

    pub(crate) fn send(&mut self, to: NodeId, message: Message) {
        assert_ne!(to, self.id(), "a node never messages itself: {message:?}");
        if self.msgs.len() >= MAX_OUTBOX_MSGS {
            return;
        }
        self.msgs.push(Envelope {
            from: self.id(),
            to,
            msg: message,
        });
    }

    /// Everything that starts afresh when the term changes or the role changes.
    fn reset(&mut self, term: Term) {
        if term != self.term {
            assert!(term > self.term, "term went backwards: {} -> {term}", self.term);
            self.term = term;
            self.vote = None;
        }
        self.leader = None;
        self.election_elapsed_ticks = 0;
        self.heartbeat_elapsed_ticks = 0;
        self.draw_election_timeout();
        self.lead_transferee = None;
        self.timeout_now_sent = false;
        self.votes.clear();
        self.reads = ReadTracker::default();
        self.reads_awaiting_commit.clear();
        self.uncommitted_bytes = 0;
        self.append_pending = false;
        let next = self.log.last_index() + 1;
        let max_inflight = self.config.max_inflight_msgs;
        self.progress = self
            .membership
            .members()
            .into_iter()
            .map(|id| (id, Progress::new(next, max_inflight)))
            .collect();
    }

    /// Paper §5.2: a fresh timeout in `[t, 2t)`, so that candidates rarely tie.
    pub(crate) fn draw_election_timeout(&mut self) {
        let timeout = self.config.election_timeout_ticks;
        self.randomized_election_timeout_ticks = timeout + self.rng.below(timeout);
        self.election_timeout_shortened = false;
    }

    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        self.reset(term);
        self.leader = leader;
        self.role = if self.is_voter() {
            Role::Follower
        } else {
            Role::Learner
        };
    }

    pub(crate) fn become_leader(&mut self) {
        assert_eq!(
            self.role,
            Role::Candidate,
            "only a candidate becomes leader (term {})",
            self.term
        );
        assert_eq!(self.vote, Some(self.id()), "a leader voted for itself");
        self.reset(self.term);
        self.role = Role::Leader;
        self.leader = Some(self.id());
        let persisted = self.log.persisted_last_index();
        let id = self.id();
        let own = self
            .progress
            .get_mut(&id)
            .expect("a voter has progress for itself");
        own.maybe_update(persisted);
        own.become_replicate();
        own.recent_active = true;
        // Paper §5.4.2 / thesis §6.4: a no-op of the new term lets earlier entries commit and tells the
        // leader its commit index.
        let index = self.log.last_index() + 1;
        self.append_entry(yizhi_engine::Entry {
            index,
            term: self.term,
            payload: yizhi_engine::EntryPayload::Noop,
        });
    }

    /// Timers. Followers and candidates campaign after a randomized timeout; leaders heartbeat,
    /// check their quorum, and abandon a transfer that takes too long.
    pub fn tick(&mut self) {
        self.ticks_total += 1;
        self.election_elapsed_ticks += 1;
        if self.election_elapsed_ticks >= self.config.election_timeout_ticks {
            self.boot_guard = false;
        }
        if self.role == Role::Leader {
            self.tick_leader();
        } else if self.is_voter() && self.election_elapsed_ticks >= self.randomized_election_timeout_ticks {
            self.election_elapsed_ticks = 0;
            if self.election_timeout_shortened {
                // The short delay was for this one campaign; a retry waits a full timeout.
                self.draw_election_timeout();
            }
            self.campaign(self.config.pre_vote, false);
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed_ticks += 1;
        if self.election_elapsed_ticks >= self.config.election_timeout_ticks {
            self.election_elapsed_ticks = 0;
            if self.config.check_quorum && !self.quorum_recently_active() {
                // Thesis §6.2: a leader cut off from a quorum steps down instead of serving stale reads.
                self.become_follower(self.term, None);
                return;
            }
            let id = self.id();
            for (peer, pr) in self.progress.iter_mut() {
                pr.recent_active = *peer == id;
            }
            self.lead_transferee = None;
        }
        self.retry_stuck_snapshots();
        if self.heartbeat_elapsed_ticks >= self.config.heartbeat_interval_ticks {
            self.heartbeat_elapsed_ticks = 0;
            self.broadcast_heartbeat();
        }
    }

    fn quorum_recently_active(&self) -> bool {
        let id = self.id();
        let active =
            |peer: NodeId| Some(peer == id || self.progress.get(&peer).is_some_and(|p| p.recent_active));
        self.quorum.vote_result(active) == VoteResult::Won
    }

    /// Whether this node would refuse, right now, to help elect another leader: the promise a
    /// leader lease rests on (thesis §6.4.1). For a runtime or simulator that checks leases from
    /// outside: a lease read is sound only while no quorum of the other voters would vote.
    pub fn refuses_votes(&self) -> bool {
        self.in_lease()
    }

    /// Under CheckQuorum a node that heard from a leader within an election timeout ignores
    /// requests to elect another (thesis §4.2.3), which also makes the leader lease sound.
    pub(crate) fn in_lease(&self) -> bool {
        self.config.check_quorum
            && (self.leader.is_some() || self.boot_guard)
            && self.election_elapsed_ticks < self.config.election_timeout_ticks
    }

    /// The single entry point for peer messages: compare terms, then dispatch by role.
    pub fn step(&mut self, envelope: Envelope<Message>) {
        let Envelope { from, to, msg } = envelope;
        assert_eq!(to, self.id(), "message for {to} delivered to {}", self.id());
        if from == self.id() || from == 0 {
            return;
        }
        if msg.term > self.term {
            if !self.step_higher_term(&msg) {
                return;
            }
        } else if msg.term < self.term {
            self.step_lower_term(from, &msg);
            return;
        }
        match msg.kind {
            MessageKind::PreVote { .. } | MessageKind::Vote { .. } => self.handle_vote_request(from, msg),
            _ => match self.role {
                Role::Leader => self.step_leader(from, msg),
                Role::Candidate | Role::PreCandidate => self.step_candidate(from, msg),
                Role::Follower | Role::Learner => self.step_follower(from, msg),
            },
        }
    }

    /// Returns whether to go on handling the message.
    fn step_higher_term(&mut self, msg: &Message) -> bool {
        match msg.kind {
            MessageKind::PreVote { .. } | MessageKind::Vote { transfer: false, .. } if self.in_lease() => {
                false
            }
            // A pre-vote changes no term: neither asking nor granting one.
            MessageKind::PreVote { .. } | MessageKind::PreVoteResponse { granted: true } => true,
            // A leader's message then finds us a follower, which records the leader.
            _ => {
                self.become_follower(msg.term, None);
                true
            }
        }
    }

    fn step_lower_term(&mut self, from: NodeId, msg: &Message) {
        match msg.kind {
            // A stale leader learns the newer term and steps down; without this, a node that bumped
            // its term while partitioned could stay cut off under PreVote/CheckQuorum.
            MessageKind::Append { .. } | MessageKind::Heartbeat { .. }
                if self.config.check_quorum || self.config.pre_vote =>
            {
                self.send(
                    from,
                    Message::new(
                        self.term,
                        MessageKind::AppendResponse {
                            index: 0,
                            reject: None,
                        },
                    ),
                );
            }
            // An explicit rejection: silently dropping lower-term pre-votes can deadlock a cluster in
            // which the node with the highest term has a stale log.
            MessageKind::PreVote { .. } => {
                self.send(
                    from,
                    Message::new(self.term, MessageKind::PreVoteResponse { granted: false }),
                );
            }
            _ => {}
        }
    }

    fn step_follower(&mut self, from: NodeId, msg: Message) {
        match msg.kind {
            MessageKind::Append { .. }
            | MessageKind::Heartbeat { .. }
            | MessageKind::InstallSnapshot { .. } => {
                assert!(
                    self.leader.is_none_or(|leader| leader == from),
                    "two leaders in term {}: {:?} and {from}",
                    self.term,
                    self.leader
                );
                self.election_elapsed_ticks = 0;
                self.leader = Some(from);
                if self.election_timeout_shortened {
                    // The hint was wrong, or a new leader exists: wait for it a full timeout again.
                    self.draw_election_timeout();
                }
                self.handle_from_leader(from, msg);
            }
            MessageKind::TimeoutNow if self.is_voter() => self.campaign(false, true),
            MessageKind::ReadIndexResponse { read_id, index } => {
                self.read_states.push(ReadState { read_id, index });
            }
            _ => {}
        }
    }

    fn step_candidate(&mut self, from: NodeId, msg: Message) {
        match msg.kind {
            MessageKind::Append { .. }
            | MessageKind::Heartbeat { .. }
            | MessageKind::InstallSnapshot { .. } => {
                // A leader exists in this term: stand down (paper §5.2).
                self.become_follower(self.term, Some(from));
                self.handle_from_leader(from, msg);
            }
            MessageKind::PreVoteResponse { granted } if self.role == Role::PreCandidate => {
                self.record_vote(from, granted);
            }
            MessageKind::VoteResponse { granted } if self.role == Role::Candidate => {
                self.record_vote(from, granted);
            }
            _ => {}
        }
    }

    fn step_leader(&mut self, from: NodeId, msg: Message) {
        if !self.progress.contains_key(&from) {
            return;
        }
        match msg.kind {
            MessageKind::AppendResponse { index, reject } => self.handle_append_response(from, index, reject),
            MessageKind::HeartbeatResponse { round } => self.handle_heartbeat_response(from, round),
            MessageKind::ReadIndex { read_id } => self.handle_read_request(from, read_id),
            MessageKind::Append { .. }
            | MessageKind::Heartbeat { .. }
            | MessageKind::InstallSnapshot { .. } => {
                panic!("two leaders in term {}: {} and {from}", self.term, self.id())
            }
            _ => {}
        }
    }

    fn handle_from_leader(&mut self, from: NodeId, msg: Message) {
        match msg.kind {
            MessageKind::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => self.handle_append(from, prev_index, prev_term, entries, commit),
            MessageKind::Heartbeat { commit, round } => self.handle_heartbeat(from, commit, round),
            MessageKind::InstallSnapshot { snapshot } => self.handle_snapshot(from, snapshot),
            other => unreachable!("not a leader message: {other:?}"),
        }
    }
}
