//! Plain data shared by every engine: identities, log entries, durable state, membership, snapshots.

use std::collections::BTreeSet;

use bytes::Bytes;

/// A cluster member's identity. `0` is never a valid id, so it can never be confused with "nobody".
pub type NodeId = u64;
/// A Raft term, or a Paxos ballot round: the epoch in which an entry was proposed.
pub type Term = u64;
/// A position in the replicated log (a Raft index, a Paxos slot). The first entry has index 1.
pub type LogIndex = u64;

/// Where a proposal landed: the runtime waits for the entry at `index` to commit, and knows the
/// proposal was lost if the entry committed there carries another `term`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogPosition {
    pub index: LogIndex,
    pub term: Term,
}

/// What a log entry carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryPayload {
    /// Appended by a new leader so that it can commit entries of earlier terms (Raft §5.4.2).
    Noop,
    /// Opaque client command for the state machine.
    Normal(Bytes),
    /// A membership change; takes effect when applied.
    Membership(Membership),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub index: LogIndex,
    pub term: Term,
    pub payload: EntryPayload,
}

/// Fixed per-entry overhead counted by byte limits, so that empty entries still cost something.
pub const ENTRY_OVERHEAD_BYTES: u64 = 24;

impl Entry {
    /// An entry that carries nothing (a new leader's first entry, and many a test's log).
    pub fn noop(index: LogIndex, term: Term) -> Entry {
        Entry {
            index,
            term,
            payload: EntryPayload::Noop,
        }
    }

    pub fn position(&self) -> LogPosition {
        LogPosition {
            index: self.index,
            term: self.term,
        }
    }

    /// Approximate encoded size, used for every byte limit (message size, uncommitted backlog).
    pub fn size_bytes(&self) -> u64 {
        let payload = match &self.payload {
            EntryPayload::Noop => 0,
            EntryPayload::Normal(data) => data.len() as u64,
            EntryPayload::Membership(m) => 8 * m.node_count() as u64,
        };
        ENTRY_OVERHEAD_BYTES + payload
    }
}

/// State that must be durable before any message that depends on it leaves the node.
///
/// Raft: `term` is the current term, `vote` the candidate voted for in it. Multi-Paxos: `term` is
/// the promised ballot `(round, node id)` encoded as `round << 16 | node id` (so `u64` order is
/// ballot order) and `vote` is unused. `commit` lets a restarted node re-apply without waiting for
/// a leader; it may lag the in-memory commit index (it is only a hint).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: Term,
    pub vote: Option<NodeId>,
    pub commit: LogIndex,
}

/// Who takes part in the cluster. A non-empty `voters_outgoing` means a joint configuration
/// (Raft thesis §4.3): decisions need a majority of both `voters` and `voters_outgoing`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    pub voters: BTreeSet<NodeId>,
    pub voters_outgoing: BTreeSet<NodeId>,
    /// Receive the log but never vote and never count towards a quorum.
    pub learners: BTreeSet<NodeId>,
}

impl Membership {
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Self {
        let membership = Membership {
            voters: voters.into_iter().collect(),
            voters_outgoing: BTreeSet::new(),
            learners: BTreeSet::new(),
        };
        membership.assert_valid();
        membership
    }

    pub fn with_learners(mut self, learners: impl IntoIterator<Item = NodeId>) -> Self {
        self.learners.extend(learners);
        self.assert_valid();
        self
    }

    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.voters_outgoing.contains(&id)
    }

    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.contains(&id)
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }

    /// Every member, voters first then learners, each once, in id order within each group.
    pub fn members(&self) -> BTreeSet<NodeId> {
        let mut all: BTreeSet<NodeId> = self.voters.union(&self.voters_outgoing).copied().collect();
        all.extend(self.learners.iter().copied());
        all
    }

    pub fn node_count(&self) -> usize {
        self.members().len()
    }

    pub fn is_joint(&self) -> bool {
        !self.voters_outgoing.is_empty()
    }

    /// Invariants every configuration must hold; a violation is a bug in whoever built it.
    pub fn assert_valid(&self) {
        assert!(!self.voters.contains(&0), "node id 0 is reserved: {self:?}");
        assert!(!self.learners.contains(&0), "node id 0 is reserved: {self:?}");
        assert!(
            self.learners.is_disjoint(&self.voters) && self.learners.is_disjoint(&self.voters_outgoing),
            "a node is both learner and voter: {self:?}"
        );
    }
}

/// What a snapshot covers: everything up to and including `index`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub index: LogIndex,
    pub term: Term,
    pub membership: Membership,
}

/// A state machine image. `data` is opaque to the engine; the runtime produces and installs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    pub data: Bytes,
}

/// A message addressed between two members. Engines define the message body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope<M> {
    pub from: NodeId,
    pub to: NodeId,
    pub msg: M,
}

/// A linearizable read that has become safe: answer it from the state machine once it has applied
/// at least `index` (Raft thesis §6.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub read_id: u64,
    pub index: LogIndex,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
    /// A non-voting member (never campaigns).
    Learner,
}

/// Volatile state the runtime may want to show or route by; never persisted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    pub leader: Option<NodeId>,
    pub role: Role,
}

/// A point-in-time view of one engine, for status pages, routing and the simulator's invariant checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub leader: Option<NodeId>,
    pub commit: LogIndex,
    pub applied: LogIndex,
    pub last_index: LogIndex,
    pub membership: Membership,
}
