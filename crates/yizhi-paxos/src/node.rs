//! The `Engine` contract for Multi-Paxos: collecting a `Ready` and acknowledging it with
//! `advance()`. A promise or an accepted slot is in the `Ready`'s hard state or entries, and every
//! message of that `Ready` (Promise and Accepted replies included) leaves only after they are
//! synced.

use bytes::Bytes;
use yizhi_engine::{
    Engine, Envelope, LogPosition, LogStorage, NodeId, ProposeError, Ready, Role, SnapshotStatus, Status,
    TransferError,
};

use crate::message::Message;
use crate::paxos::{HandedOut, PaxosNode};

impl<S: LogStorage> PaxosNode<S> {
    fn collect_ready(&mut self) -> Ready<Message> {
        assert!(self.handed_out.is_none(), "ready() called again before advance()");
        self.flush_read_round();
        let (mut ready, prev) = self.reported.open_ready(self.soft_state(), self.hard_state());
        if let Some(hard_state) = ready.hard_state {
            assert!(
                hard_state.term >= prev.term && hard_state.commit >= prev.commit,
                "node {}: promise or commit went backwards: {prev:?} -> {hard_state:?}",
                self.id()
            );
            ready.must_sync = hard_state.term != prev.term;
        }
        ready.snapshot = self.pending_snapshot.take();
        let snapshot_index = ready.snapshot.as_ref().map_or(0, |s| s.meta.index);
        let apply_from = self.applied.max(snapshot_index) + 1;
        if apply_from <= self.commit {
            ready.committed_entries = self
                .log
                .entries(
                    &self.storage,
                    apply_from,
                    self.commit,
                    self.config.max_committed_bytes_per_ready,
                )
                .unwrap_or_else(|e| {
                    panic!(
                        "node {}: committed slots from {apply_from} unreadable: {e}",
                        self.id()
                    )
                });
        }
        // Committed entries are read before the unstable ones leave the log view above.
        ready.entries = self.log.take_unstable();
        ready.must_sync |= ready.snapshot.is_some() || !ready.entries.is_empty();
        ready.messages = std::mem::take(&mut self.msgs);
        ready.read_states = std::mem::take(&mut self.read_states);
        let applied_to = ready.committed_entries.last().map_or(apply_from - 1, |e| e.index);
        self.handed_out = Some(HandedOut {
            persisted_last: ready.entries.last().map(|e| e.index),
            applied_to,
        });
        ready
    }

    fn acknowledge_ready(&mut self) {
        let handed = self.handed_out.take().expect("advance() without a ready()");
        assert!(
            handed.applied_to <= self.commit && handed.applied_to >= self.applied,
            "node {}: applied {} -> {} with commit {}",
            self.id(),
            self.applied,
            handed.applied_to,
            self.commit
        );
        self.applied = handed.applied_to;
        if let (Some(leadership), Some(persisted)) = (self.leadership.as_mut(), handed.persisted_last) {
            // Only now may the leader count its own acceptance: it is durable.
            leadership.self_matched = leadership.self_matched.max(persisted);
            self.maybe_commit();
        }
    }

    fn pending_work(&self) -> bool {
        self.reported.differs(self.soft_state(), self.hard_state())
            || self.pending_snapshot.is_some()
            || self.log.has_unstable()
            || !self.msgs.is_empty()
            || !self.read_states.is_empty()
            || self.commit > self.applied
            || self.leadership.as_ref().is_some_and(|l| l.read_round_wanted)
    }
}

impl<S: LogStorage> Engine for PaxosNode<S> {
    type Message = Message;
    type Storage = S;

    fn id(&self) -> NodeId {
        self.config.id
    }

    fn tick(&mut self) {
        PaxosNode::tick(self);
    }

    fn step(&mut self, envelope: Envelope<Message>) {
        PaxosNode::step(self, envelope);
    }

    fn propose(&mut self, data: Bytes) -> Result<LogPosition, ProposeError> {
        self.propose_entry(data)
    }

    /// Only the leader serves reads; elsewhere the caller is told who leads (no forwarding).
    fn read_index(&mut self, read_id: u64) -> Result<(), ProposeError> {
        self.register_read(read_id)
    }

    /// The leader asks `to` to start phase 1 at once; `to` then outbids it. There is no catch-up
    /// wait and no proposal freeze (unlike Raft thesis §3.10): Paxos needs neither for safety, as
    /// the new leader adopts every accepted value in its phase 1.
    fn transfer_leadership(&mut self, to: NodeId) -> Result<(), TransferError> {
        let Some(ballot) = self.leading_ballot() else {
            return Err(TransferError::NotLeader);
        };
        if to == self.config.id {
            return Err(TransferError::AlreadyLeader(to));
        }
        if !self.membership.is_voter(to) {
            return Err(TransferError::NotVoter(to));
        }
        self.send(to, Message::TimeoutNow { ballot });
        Ok(())
    }

    fn report_unreachable(&mut self, peer: NodeId) {
        self.report_unreachable_peer(peer);
    }

    fn report_connection_lost(&mut self, peer: NodeId) {
        self.connection_lost(peer);
    }

    fn report_snapshot(&mut self, peer: NodeId, status: SnapshotStatus) {
        if let Some(p) = self.leadership.as_mut().and_then(|l| l.peers.get_mut(&peer)) {
            p.snapshot_in_flight = false;
            if status == SnapshotStatus::Failed {
                p.next = p.synced() + 1;
            }
        }
    }

    fn has_ready(&self) -> bool {
        self.handed_out.is_none() && self.pending_work()
    }

    fn ready(&mut self) -> Ready<Message> {
        self.collect_ready()
    }

    fn advance(&mut self) {
        self.acknowledge_ready();
    }

    fn status(&self) -> Status {
        Status {
            id: self.config.id,
            role: self.role,
            term: self.promised.term(),
            leader: self.leader,
            commit: self.commit,
            applied: self.applied,
            last_index: self.last(),
            membership: self.membership.clone(),
        }
    }

    fn storage(&self) -> &S {
        &self.storage
    }

    fn storage_mut(&mut self) -> &mut S {
        &mut self.storage
    }
}

impl<S: LogStorage> PaxosNode<S> {
    /// What was in flight to `peer` is likely lost: resend from what it acknowledged.
    pub(crate) fn report_unreachable_peer(&mut self, peer: NodeId) {
        if let Some(p) = self.leadership.as_mut().and_then(|l| l.peers.get_mut(&peer)) {
            p.next = p.synced() + 1;
            p.inflight_msgs = 0;
        }
    }

    /// True while this node leads (its ballot won phase 1 and nothing higher was seen).
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
