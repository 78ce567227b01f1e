//! Safety invariants, checked after every simulated step (Raft paper §5.4, Figure 3).
//!
//! The checker keeps one global committed log, built from the committed entries every node hands
//! its state machine. Every node must agree with it, every applied sequence must be a prefix of it,
//! and every acknowledged write must be in it. Replicas that applied the same prefix must hold the
//! same state machine state (`MvccStore::state_hash`).

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use yizhi_engine::{Entry, EntryPayload, LogIndex, LogPosition, LogStorage, MemStorage, NodeId, Term};
use yizhi_member::{ProposalId, peek_proposal_id};

use crate::trace::Fnv1a;

/// What identifies an entry's content: its term and a hash of its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryDigest {
    pub term: Term,
    pub payload_hash: u64,
}

impl EntryDigest {
    pub fn of(entry: &Entry) -> Self {
        let mut h = Fnv1a::default();
        match &entry.payload {
            EntryPayload::Noop => h.bytes(b"noop"),
            EntryPayload::Normal(data) => {
                h.bytes(b"normal");
                h.bytes(data);
            }
            EntryPayload::Membership(m) => {
                h.bytes(b"membership");
                for id in m.voters.iter().chain(&m.voters_outgoing).chain(&m.learners) {
                    h.bytes(&id.to_le_bytes());
                }
            }
        }
        EntryDigest {
            term: entry.term,
            payload_hash: h.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct CommittedEntry {
    digest: EntryDigest,
    /// The term of the node that first reported it committed: an upper bound on the term in which
    /// it was committed, so every leader of a later term must hold it (Leader Completeness).
    reported_in_term: Term,
    reported_by: NodeId,
}

/// A broken invariant, with the values that broke it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    TwoLeaders {
        term: Term,
        first: NodeId,
        second: NodeId,
    },
    CommittedEntryMismatch {
        index: LogIndex,
        node: NodeId,
        committed: EntryDigest,
        found: EntryDigest,
    },
    LogMatching {
        a: NodeId,
        b: NodeId,
        matching_index: LogIndex,
        diverging_index: LogIndex,
    },
    LeaderIncomplete {
        leader: NodeId,
        term: Term,
        index: LogIndex,
        committed_term: Term,
        found: Option<Term>,
    },
    AppliedOutOfOrder {
        node: NodeId,
        expected_index: LogIndex,
        applied_index: LogIndex,
    },
    AppliedNotCommitted {
        node: NodeId,
        index: LogIndex,
        applied: EntryDigest,
        committed: Option<EntryDigest>,
    },
    CommitDecreased {
        node: NodeId,
        from: LogIndex,
        to: LogIndex,
    },
    CommitBelowDurable {
        node: NodeId,
        commit: LogIndex,
        durable_commit: LogIndex,
    },
    AckedWriteLost {
        client_id: u64,
        op_id: u64,
        position: LogPosition,
        committed: Option<EntryDigest>,
    },
    /// Two replicas that applied the log up to `index` hold different state machine states.
    StateDiverged {
        index: LogIndex,
        node: NodeId,
        hash: u64,
        first_node: NodeId,
        first_hash: u64,
    },
    NotLinearizable {
        explanation: String,
    },
    /// A client's reads from one node process went back in revision.
    ReadWentBackwards {
        client_id: u64,
        node: NodeId,
        previous_revision: i64,
        revision: i64,
    },
    /// A read returned what the replicated log never held at the revision it reported.
    ReadStateNeverExisted {
        client_id: u64,
        node: NodeId,
        revision: i64,
        detail: String,
    },
    /// The exactly-once counter: a replica's count is not the number of acknowledged increments
    /// (or exceeds the increments ever issued), or a refusal left an increment's fate unknown.
    CounterNotExact {
        node: Option<NodeId>,
        version: Option<i64>,
        acknowledged: u64,
        detail: String,
    },
    /// A bounded-staleness read missed a write acknowledged longer than its bound before it.
    BoundedReadTooStale {
        client_id: u64,
        node: NodeId,
        max_staleness_ms: u64,
        invoke_ms: u64,
        revision: i64,
        acked_revision: i64,
        acked_at_ms: u64,
    },
    NoLeaderAfterHeal {
        waited_ms: u64,
    },
    NoProgressAfterHeal {
        waited_ms: u64,
        detail: String,
    },
    /// A leader answered a read at once (from its lease) while a leader of a later term had
    /// already been elected: the lease outlived the followers' promise not to elect another.
    LeaseOverlap {
        node: NodeId,
        term: Term,
        newer_term: Term,
        newer_leader: NodeId,
    },
    /// A leader answered a read from its lease while a quorum of the other nodes would already
    /// vote for another leader: the lease outlived the followers' promise (nobody needs to have
    /// campaigned yet for the read to be unsound).
    LeaseUnsound {
        node: NodeId,
        term: Term,
        /// The nodes up, running and no longer bound by a promise.
        would_vote: Vec<NodeId>,
    },
    /// One value was written at two revisions: a write applied twice (issue 13, anomaly 1).
    WrittenTwice {
        value: String,
        first_revision: i64,
        second_revision: i64,
    },
    /// A client was told its write took effect with a response its own entry did not produce
    /// (issue 13, anomaly 2: an answer that belongs to another write).
    AckNotOwnWrite {
        client_id: u64,
        op_id: u64,
        detail: String,
    },
    /// A proposal entered a log after its client's deadline had passed (beyond what clock
    /// offsets and rates allow).
    ProposedAfterDeadline {
        client_id: u64,
        op_id: u64,
        deadline_ms: u64,
        proposed_ms: u64,
    },
    Panic {
        message: String,
    },
}

impl Violation {
    /// A short stable name, used to recognise the same failure when shrinking a run.
    pub fn kind(&self) -> &'static str {
        match self {
            Violation::TwoLeaders { .. } => "election-safety",
            Violation::CommittedEntryMismatch { .. } => "committed-entries-agree",
            Violation::LogMatching { .. } => "log-matching",
            Violation::LeaderIncomplete { .. } => "leader-completeness",
            Violation::AppliedOutOfOrder { .. } => "applied-in-order",
            Violation::AppliedNotCommitted { .. } => "state-machine-safety",
            Violation::CommitDecreased { .. } => "commit-monotonic",
            Violation::CommitBelowDurable { .. } => "commit-above-durable",
            Violation::AckedWriteLost { .. } => "acknowledged-write-durable",
            Violation::StateDiverged { .. } => "replica-state-agrees",
            Violation::NotLinearizable { .. } => "linearizability",
            Violation::ReadWentBackwards { .. } => "read-session-monotonic",
            Violation::ReadStateNeverExisted { .. } => "read-state-existed",
            Violation::BoundedReadTooStale { .. } => "bounded-staleness",
            Violation::CounterNotExact { .. } => "counter-exactly-once",
            Violation::NoLeaderAfterHeal { .. } => "liveness-leader",
            Violation::NoProgressAfterHeal { .. } => "liveness-progress",
            Violation::WrittenTwice { .. } => "written-once",
            Violation::LeaseOverlap { .. } => "lease-exclusive",
            Violation::LeaseUnsound { .. } => "lease-within-promises",
            Violation::AckNotOwnWrite { .. } => "ack-is-own-write",
            Violation::ProposedAfterDeadline { .. } => "no-proposal-after-deadline",
            Violation::Panic { .. } => "panic",
        }
    }

    /// Nodes the violation is about, to narrow the printed trace.
    pub fn nodes(&self) -> Vec<NodeId> {
        match *self {
            Violation::TwoLeaders { first, second, .. } => vec![first, second],
            Violation::CommittedEntryMismatch { node, .. } => vec![node],
            Violation::LogMatching { a, b, .. } => vec![a, b],
            Violation::LeaderIncomplete { leader, .. } => vec![leader],
            Violation::StateDiverged { node, first_node, .. } => vec![first_node, node],
            Violation::AppliedOutOfOrder { node, .. } | Violation::AppliedNotCommitted { node, .. } => {
                vec![node]
            }
            Violation::CommitDecreased { node, .. } | Violation::CommitBelowDurable { node, .. } => {
                vec![node]
            }
            Violation::ReadWentBackwards { node, .. }
            | Violation::ReadStateNeverExisted { node, .. }
            | Violation::BoundedReadTooStale { node, .. } => vec![node],
            Violation::CounterNotExact { node, .. } => node.into_iter().collect(),
            _ => Vec::new(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {:?}", self.kind(), self)
    }
}

#[derive(Clone, Debug, Default)]
struct NodeTrack {
    commit: LogIndex,
    /// Invariant: every index up to `applied` was checked against the global committed log.
    applied: LogIndex,
}

#[derive(Clone, Debug)]
pub struct Checker {
    /// False for Multi-Paxos: a chosen value may carry different terms (accepted ballots) on
    /// different nodes, so entries are compared by payload alone (see
    /// `EngineFactory::term_identifies_value`).
    terms_identify_values: bool,
    leaders: BTreeMap<Term, NodeId>,
    committed: BTreeMap<LogIndex, CommittedEntry>,
    nodes: BTreeMap<NodeId, NodeTrack>,
    acked: Vec<(u64, u64, LogPosition)>,
    /// Every proposal's identity, with its client operation and that client's deadline (ms).
    requests: BTreeMap<ProposalId, (u64, u64, u64)>,
    /// How long after its client's deadline a proposal may still enter a log: the nodes measure
    /// the time left on clocks that run up to a few percent slow and read wall clocks a few ms
    /// apart.
    deadline_slack_ms: u64,
    /// Every value put, with the revision it was put at (values are unique per operation).
    written: BTreeMap<Bytes, i64>,
    /// The state hash first reported at each applied index, and by whom.
    state_hashes: BTreeMap<LogIndex, (u64, NodeId)>,
}

/// The Raft checks: terms identify values.
impl Default for Checker {
    fn default() -> Self {
        Checker::new(true)
    }
}

impl Checker {
    pub fn new(terms_identify_values: bool) -> Self {
        Checker {
            terms_identify_values,
            leaders: BTreeMap::new(),
            committed: BTreeMap::new(),
            nodes: BTreeMap::new(),
            acked: Vec::new(),
            requests: BTreeMap::new(),
            deadline_slack_ms: 0,
            written: BTreeMap::new(),
            state_hashes: BTreeMap::new(),
        }
    }

    /// Whether two digests name the same committed value.
    fn same_value(&self, a: EntryDigest, b: EntryDigest) -> bool {
        if self.terms_identify_values {
            a == b
        } else {
            a.payload_hash == b.payload_hash
        }
    }

    pub fn committed_len(&self) -> usize {
        self.committed.len()
    }

    pub fn committed_term(&self, index: LogIndex) -> Option<Term> {
        self.committed.get(&index).map(|c| c.digest.term)
    }

    pub fn last_committed_index(&self) -> LogIndex {
        self.committed.keys().next_back().copied().unwrap_or(0)
    }

    /// Election Safety: at most one leader per term over the whole run. Returns whether `node` is a
    /// newly seen leader of `term` (so the caller checks Leader Completeness once).
    pub fn observe_leader(&mut self, node: NodeId, term: Term) -> Result<bool, Violation> {
        match self.leaders.get(&term) {
            Some(&first) if first == node => Ok(false),
            Some(&first) => Err(Violation::TwoLeaders {
                term,
                first,
                second: node,
            }),
            None => {
                self.leaders.insert(term, node);
                Ok(true)
            }
        }
    }

    /// `node`, leader of `term`, answered a read without a round trip (a lease read): no leader
    /// of a later term may have been elected yet (Raft thesis §6.4.1).
    pub fn observe_local_read(&self, node: NodeId, term: Term) -> Result<(), Violation> {
        match self.leaders.range(term + 1..).next() {
            Some((&newer_term, &newer_leader)) => Err(Violation::LeaseOverlap {
                node,
                term,
                newer_term,
                newer_leader,
            }),
            None => Ok(()),
        }
    }

    /// A lease read by `node` in `term` is sound only while the other nodes that would vote for a
    /// new leader now (`would_vote`: up, not paused, bound by no promise) are fewer than a quorum
    /// of `node_count`.
    pub fn observe_lease_read(
        &self,
        node: NodeId,
        term: Term,
        would_vote: Vec<NodeId>,
        node_count: usize,
    ) -> Result<(), Violation> {
        let quorum = node_count / 2 + 1;
        if would_vote.len() >= quorum {
            return Err(Violation::LeaseUnsound {
                node,
                term,
                would_vote,
            });
        }
        Ok(())
    }

    /// Commit never moves backwards within one node lifetime, nor below what is durable.
    pub fn observe_commit(
        &mut self,
        node: NodeId,
        commit: LogIndex,
        durable_commit: LogIndex,
    ) -> Result<(), Violation> {
        let track = self.nodes.entry(node).or_default();
        if commit < track.commit {
            return Err(Violation::CommitDecreased {
                node,
                from: track.commit,
                to: commit,
            });
        }
        if commit < durable_commit {
            return Err(Violation::CommitBelowDurable {
                node,
                commit,
                durable_commit,
            });
        }
        track.commit = commit;
        Ok(())
    }

    /// A node restarted with its state machine restored to `snapshot_index`: a new lifetime.
    pub fn observe_restart(&mut self, node: NodeId, snapshot_index: LogIndex) {
        self.nodes.insert(
            node,
            NodeTrack {
                commit: 0,
                applied: snapshot_index,
            },
        );
    }

    /// Entries a node declared committed (handed to its state machine): they must agree with
    /// everything any node declared committed before, and extend the global log.
    pub fn observe_committed(
        &mut self,
        node: NodeId,
        node_term: Term,
        entries: &[Entry],
    ) -> Result<(), Violation> {
        for entry in entries {
            let found = EntryDigest::of(entry);
            match self.committed.get(&entry.index) {
                Some(existing) if !self.same_value(existing.digest, found) => {
                    return Err(Violation::CommittedEntryMismatch {
                        index: entry.index,
                        node,
                        committed: existing.digest,
                        found,
                    });
                }
                Some(_) => {}
                None => {
                    let record = CommittedEntry {
                        digest: found,
                        reported_in_term: node_term,
                        reported_by: node,
                    };
                    self.committed.insert(entry.index, record);
                }
            }
        }
        Ok(())
    }

    /// State Machine Safety: a node applies committed entries in index order, exactly once each.
    pub fn observe_applied(&mut self, node: NodeId, entry: &Entry) -> Result<(), Violation> {
        let expected_index = self.nodes.get(&node).map_or(0, |t| t.applied) + 1;
        if entry.index != expected_index {
            return Err(Violation::AppliedOutOfOrder {
                node,
                expected_index,
                applied_index: entry.index,
            });
        }
        let applied = EntryDigest::of(entry);
        let committed = self.committed.get(&entry.index).map(|c| c.digest);
        if !committed.is_some_and(|c| self.same_value(c, applied)) {
            return Err(Violation::AppliedNotCommitted {
                node,
                index: entry.index,
                applied,
                committed,
            });
        }
        self.nodes.entry(node).or_default().applied = entry.index;
        Ok(())
    }

    /// A node replaced its state machine with a snapshot covering `index` (in `term`).
    pub fn observe_snapshot_installed(
        &mut self,
        node: NodeId,
        index: LogIndex,
        term: Term,
    ) -> Result<(), Violation> {
        // Without term identity a snapshot's term is only the local accepted ballot: nothing to compare.
        if let Some(existing) = self.committed.get(&index)
            && self.terms_identify_values
            && existing.digest.term != term
        {
            let found = EntryDigest {
                term,
                payload_hash: 0,
            };
            return Err(Violation::AppliedNotCommitted {
                node,
                index,
                applied: found,
                committed: Some(existing.digest),
            });
        }
        let track = self.nodes.entry(node).or_default();
        track.applied = track.applied.max(index);
        Ok(())
    }

    /// Leader Completeness: a new leader of `term` holds every entry committed in an earlier term.
    pub fn check_leader_complete(
        &self,
        leader: NodeId,
        term: Term,
        log: &MemStorage,
    ) -> Result<(), Violation> {
        let snapshot_index = log.snapshot_ref().meta.index;
        for (&index, c) in &self.committed {
            if c.reported_in_term >= term || index < snapshot_index {
                continue;
            }
            let found = log.term(index).ok();
            let holds = if self.terms_identify_values {
                found == Some(c.digest.term)
            } else {
                // The snapshot's own index is covered by the chosen prefix it images.
                let held = (index >= log.first_index() && index <= log.last_index())
                    .then(|| EntryDigest::of(entry_at(log, index)).payload_hash);
                index == snapshot_index || held == Some(c.digest.payload_hash)
            };
            if !holds {
                return Err(Violation::LeaderIncomplete {
                    leader,
                    term,
                    index,
                    committed_term: c.digest.term,
                    found,
                });
            }
        }
        Ok(())
    }

    /// A write was acknowledged to a client as having taken effect at `position`.
    pub fn observe_ack(
        &mut self,
        client_id: u64,
        op_id: u64,
        position: LogPosition,
    ) -> Result<(), Violation> {
        self.acked.push((client_id, op_id, position));
        self.check_acked_write(client_id, op_id, position)
    }

    fn check_acked_write(&self, client_id: u64, op_id: u64, position: LogPosition) -> Result<(), Violation> {
        let committed = self.committed.get(&position.index).map(|c| c.digest);
        match committed {
            Some(d) if d.term == position.term => Ok(()),
            // The acknowledging node applied this write's own command at this slot, checked
            // against the committed value then; committed values never change afterwards.
            Some(_) if !self.terms_identify_values => Ok(()),
            _ => Err(Violation::AckedWriteLost {
                client_id,
                op_id,
                position,
                committed,
            }),
        }
    }

    /// No acknowledged write lost: every one is still in the global committed log.
    pub fn check_acked_writes(&self) -> Result<(), Violation> {
        for &(client_id, op_id, position) in &self.acked {
            self.check_acked_write(client_id, op_id, position)?;
        }
        Ok(())
    }

    /// How late after its client's deadline a proposal may be placed (see `deadline_slack_ms`).
    pub fn set_deadline_slack_ms(&mut self, slack_ms: u64) {
        self.deadline_slack_ms = slack_ms;
    }

    /// A node registered client operation `(client_id, op_id)` under identity `id`.
    pub fn observe_request(&mut self, id: ProposalId, client_id: u64, op_id: u64, deadline_ms: u64) {
        let previous = self.requests.insert(id, (client_id, op_id, deadline_ms));
        assert!(previous.is_none(), "proposal identity {id:?} issued twice");
    }

    /// A node's engine took proposal `id` at true time `now_ms`: its client must still be waiting.
    pub fn observe_placed(&mut self, id: &ProposalId, now_ms: u64) -> Result<(), Violation> {
        let Some(&(client_id, op_id, deadline_ms)) = self.requests.get(id) else {
            return Ok(());
        };
        if now_ms > deadline_ms + self.deadline_slack_ms {
            return Err(Violation::ProposedAfterDeadline {
                client_id,
                op_id,
                deadline_ms,
                proposed_ms: now_ms,
            });
        }
        Ok(())
    }

    /// Which client operation an applied entry is: the one whose identity it carries.
    /// None for an entry no client proposed (a no-op, a membership change, a lease expiry).
    pub fn attribute(&self, entry: &Entry) -> Option<(u64, u64)> {
        let EntryPayload::Normal(data) = &entry.payload else {
            return None;
        };
        let &(client_id, op_id, _) = self.requests.get(&peek_proposal_id(data)?)?;
        Some((client_id, op_id))
    }

    /// A replica's state machine put `value` at `revision` (what a watch from revision 1 sees).
    pub fn observe_written(&mut self, value: &Bytes, revision: i64) -> Result<(), Violation> {
        match self.written.insert(value.clone(), revision) {
            Some(first) if first != revision => Err(Violation::WrittenTwice {
                value: String::from_utf8_lossy(value).into_owned(),
                first_revision: first.min(revision),
                second_revision: first.max(revision),
            }),
            _ => Ok(()),
        }
    }

    /// Replicas that applied the same prefix of the log hold the same state: `node`'s state
    /// machine, having applied everything up to `applied`, hashes to `hash`.
    pub fn observe_state_hash(
        &mut self,
        node: NodeId,
        applied: LogIndex,
        hash: u64,
    ) -> Result<(), Violation> {
        match self.state_hashes.get(&applied) {
            Some(&(first_hash, first_node)) if first_hash != hash => Err(Violation::StateDiverged {
                index: applied,
                node,
                hash,
                first_node,
                first_hash,
            }),
            Some(_) => Ok(()),
            None => {
                self.state_hashes.insert(applied, (hash, node));
                Ok(())
            }
        }
    }

    /// Who first reported `index` committed, for violation reports.
    pub fn committed_reporter(&self, index: LogIndex) -> Option<NodeId> {
        self.committed.get(&index).map(|c| c.reported_by)
    }
}

/// Log Matching (Raft §5.3): if two logs hold an entry with the same index and term, they are
/// identical in every entry up to it. Compares only what both still hold (after compaction).
pub fn check_log_matching(logs: &[(NodeId, &MemStorage)]) -> Result<(), Violation> {
    for (i, &(a, log_a)) in logs.iter().enumerate() {
        for &(b, log_b) in &logs[i + 1..] {
            check_pair(a, log_a, b, log_b)?;
        }
    }
    Ok(())
}

fn entry_at(log: &MemStorage, index: LogIndex) -> &Entry {
    &log.all_entries()[(index - log.first_index()) as usize]
}

fn check_pair(a: NodeId, log_a: &MemStorage, b: NodeId, log_b: &MemStorage) -> Result<(), Violation> {
    let lo = log_a.first_index().max(log_b.first_index());
    let hi = log_a.last_index().min(log_b.last_index());
    let mut matching: Option<LogIndex> = None;
    let mut index = hi;
    while index >= lo && index > 0 {
        let (ea, eb) = (entry_at(log_a, index), entry_at(log_b, index));
        match matching {
            None if ea.term == eb.term => {
                matching = Some(index);
                if ea.payload != eb.payload {
                    return Err(Violation::LogMatching {
                        a,
                        b,
                        matching_index: index,
                        diverging_index: index,
                    });
                }
            }
            Some(m) if ea != eb => {
                return Err(Violation::LogMatching {
                    a,
                    b,
                    matching_index: m,
                    diverging_index: index,
                });
            }
            _ => {}
        }
        index -= 1;
    }
    Ok(())
}
