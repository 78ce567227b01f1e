//! Log replication (paper §5.3), the commit rule (§5.4.2), heartbeats and snapshot transfer.

use bytes::Bytes;
use yizhi_engine::{
    Entry, EntryPayload, LogIndex, LogPosition, LogStorage, NodeId, ProposeError, Role, Snapshot,
    StorageError, Term,
};

use crate::message::{Message, MessageKind, RejectHint};
use crate::progress::ProgressState;
use crate::raft::RaftNode;

impl<S: LogStorage> RaftNode<S> {
    pub fn propose(&mut self, data: Bytes) -> Result<LogPosition, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader { leader: self.leader });
        }
        if self.lead_transferee.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        let entry = Entry {
            index: self.log.last_index() + 1,
            term: self.term,
            payload: EntryPayload::Normal(data),
        };
        let size_bytes = entry.size_bytes();
        if size_bytes > self.config.max_proposal_bytes {
            return Err(ProposeError::TooLarge {
                size_bytes,
                limit_bytes: self.config.max_proposal_bytes,
            });
        }
        // Config validation keeps every proposal within the backlog limit, so an empty backlog
        // always admits one.
        if self.uncommitted_bytes + size_bytes > self.config.max_uncommitted_bytes {
            return Err(ProposeError::Backpressure {
                limit_bytes: self.config.max_uncommitted_bytes,
            });
        }
        let position = entry.position();
        self.append_entry(entry);
        Ok(position)
    }

    /// Leader only: appends to its own log; followers get it at the next `ready()` (batching).
    pub(crate) fn append_entry(&mut self, entry: Entry) {
        assert_eq!(self.role, Role::Leader);
        assert_eq!(
            entry.term, self.term,
            "a leader appends only entries of its own term"
        );
        assert_eq!(
            entry.index,
            self.log.last_index() + 1,
            "a leader only appends at the end"
        );
        self.uncommitted_bytes += entry.size_bytes();
        self.log.push(entry);
        self.append_pending = true;
    }

    /// Sends every follower that is not paused what it lacks (the batching point): one append,
    /// empty if need be to carry the commit index, then more while the inflight window allows.
    pub(crate) fn broadcast_append(&mut self) {
        self.append_pending = false;
        let peers: Vec<NodeId> = self
            .progress
            .keys()
            .copied()
            .filter(|&id| id != self.id())
            .collect();
        for peer in peers {
            if self.send_append(peer, true) {
                while self.send_append(peer, false) {}
            }
        }
    }

    /// Sends the entries after `progress.next` (or a snapshot if they are compacted). With
    /// `send_if_empty` an append without entries still goes out, carrying the commit index.
    /// Returns whether entries were sent.
    pub(crate) fn send_append(&mut self, to: NodeId, send_if_empty: bool) -> bool {
        let Some(pr) = self.progress.get(&to) else {
            return false;
        };
        if pr.is_paused() {
            return false;
        }
        let next = pr.next;
        let last_index = self.log.last_index();
        assert!(
            next <= last_index + 1,
            "next {next} beyond last index {last_index} for {to}"
        );
        let prev_term = match self.log.term(next - 1) {
            Ok(term) => term,
            Err(StorageError::Compacted { .. }) => return self.send_snapshot(to),
            Err(e) => panic!("term of {} for {to} unavailable: {e}", next - 1),
        };
        let entries = match self.log.entries(next, last_index + 1, self.config.max_msg_bytes) {
            Ok(entries) => entries,
            Err(StorageError::Compacted { .. }) => return self.send_snapshot(to),
            Err(e) => panic!("entries from {next} for {to} unavailable: {e}"),
        };
        if entries.is_empty() && !send_if_empty {
            return false;
        }
        let sent_entries = !entries.is_empty();
        let pr = self.progress.get_mut(&to).expect("checked above");
        pr.sent_entries(entries.last().map(|e| e.index));
        let commit = self.log.committed;
        let kind = MessageKind::Append {
            prev_index: next - 1,
            prev_term,
            entries,
            commit,
        };
        self.send(to, Message::new(self.term, kind));
        sent_entries
    }

    fn send_snapshot(&mut self, to: NodeId) -> bool {
        let snapshot = match self.log.storage.snapshot() {
            Ok(snapshot) => snapshot,
            // The runtime is producing one; the next heartbeat response retries.
            Err(StorageError::SnapshotTemporarilyUnavailable) => return false,
            Err(e) => panic!("snapshot for {to} unavailable: {e}"),
        };
        assert!(snapshot.meta.index > 0, "sending an empty snapshot to {to}");
        self.progress
            .get_mut(&to)
            .expect("caller checked")
            .become_snapshot(snapshot.meta.index);
        self.send(
            to,
            Message::new(self.term, MessageKind::InstallSnapshot { snapshot }),
        );
        false
    }

    /// Paper §5.4.2: commit the highest index a quorum holds, but only if it is of the current term
    /// (Figure 8: counting replicas of an older term's entry is unsafe).
    pub(crate) fn maybe_commit(&mut self) -> bool {
        let candidate = self
            .quorum
            .committed_index(|id| self.progress.get(&id).map(|p| p.matched));
        if candidate <= self.log.committed || self.log.term(candidate) != Ok(self.term) {
            return false;
        }
        self.log.commit_to(candidate);
        self.on_commit_in_current_term();
        true
    }

    pub(crate) fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: LogIndex,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: LogIndex,
    ) {
        if prev_index < self.log.committed {
            // Everything up to our commit index already matches the leader (Log Matching).
            let index = self.log.committed;
            self.send(
                from,
                Message::new(self.term, MessageKind::AppendResponse { index, reject: None }),
            );
            return;
        }
        let configs = crate::membership::config_entries(&entries);
        let reply = match self.log.maybe_append(prev_index, prev_term, commit, entries) {
            Some(last_new) => {
                self.track_configs_in_append(configs);
                MessageKind::AppendResponse {
                    index: last_new,
                    reject: None,
                }
            }
            None => {
                let hint_index = self
                    .log
                    .find_conflict_by_term(prev_index.min(self.log.last_index()), prev_term);
                let hint_term = self.log.term(hint_index).unwrap_or(0);
                let reject = RejectHint {
                    rejected_index: prev_index,
                    hint_index,
                    hint_term,
                };
                MessageKind::AppendResponse {
                    index: prev_index,
                    reject: Some(reject),
                }
            }
        };
        self.send(from, Message::new(self.term, reply));
    }

    pub(crate) fn handle_append_response(
        &mut self,
        from: NodeId,
        index: LogIndex,
        reject: Option<RejectHint>,
    ) {
        let pr = self
            .progress
            .get_mut(&from)
            .expect("step_leader checked membership");
        pr.recent_active = true;
        if let Some(hint) = reject {
            // Skip the whole conflicting term in one round trip (thesis §5.3 optimization).
            let next_probe = self.log.find_conflict_by_term(hint.hint_index, hint.hint_term);
            let pr = self.progress.get_mut(&from).expect("present");
            if pr.maybe_decrease_to(hint.rejected_index, next_probe + 1) {
                if pr.state == ProgressState::Replicate {
                    pr.become_probe();
                }
                self.send_append(from, true);
            }
            return;
        }
        let was_paused = pr.is_paused();
        if !pr.maybe_update(index) {
            return;
        }
        let first_index = self.log.first_index();
        match pr.state {
            ProgressState::Probe => pr.become_replicate(),
            ProgressState::Snapshot { .. } if pr.matched + 1 >= first_index => {
                pr.become_probe();
                pr.become_replicate();
            }
            ProgressState::Snapshot { .. } => {}
            ProgressState::Replicate => pr.inflights.free_up_to(index),
        }
        if self.maybe_commit() {
            self.append_pending = true;
        } else if was_paused {
            // It missed any commit broadcast while paused: tell it now, even with no new entries.
            self.send_append(from, true);
        }
        // Pipelining: keep the window full while there is more to send.
        while self.send_append(from, false) {}
        if self.lead_transferee == Some(from) && self.progress[&from].matched == self.log.last_index() {
            self.send_timeout_now(from);
        }
    }

    pub(crate) fn broadcast_heartbeat(&mut self) {
        let round = self.reads.open_round(self.ticks_total, self.id());
        let peers: Vec<(NodeId, LogIndex)> = self
            .progress
            .iter()
            .filter(|(id, _)| **id != self.id())
            .map(|(id, p)| (*id, p.matched))
            .collect();
        for (peer, matched) in peers {
            // Never tell a follower to commit past what it is known to hold.
            let commit = matched.min(self.log.committed);
            self.send(
                peer,
                Message::new(self.term, MessageKind::Heartbeat { commit, round }),
            );
        }
        if self.quorum.voters().all(|id| id == self.id()) {
            let released = self.reads.confirm_newest();
            self.answer_reads(released);
        }
    }

    pub(crate) fn handle_heartbeat(&mut self, from: NodeId, commit: LogIndex, round: u64) {
        self.log.commit_to(commit);
        self.send(
            from,
            Message::new(self.term, MessageKind::HeartbeatResponse { round }),
        );
    }

    pub(crate) fn handle_heartbeat_response(&mut self, from: NodeId, round: u64) {
        let last_index = self.log.last_index();
        let pr = self
            .progress
            .get_mut(&from)
            .expect("step_leader checked membership");
        pr.recent_active = true;
        pr.probe_sent = false;
        // A full window with the follower still behind means appends were lost: start over from
        // what it is known to hold rather than wait forever.
        if pr.state == ProgressState::Replicate && pr.inflights.is_full() {
            pr.become_probe();
        }
        if pr.matched < last_index {
            self.send_append(from, true);
        }
        let quorum = &self.quorum;
        let released = self.reads.ack(round, from, |acks| {
            quorum.vote_result(|id| Some(acks.contains(&id))) == yizhi_engine::quorum::VoteResult::Won
        });
        self.answer_reads(released);
    }

    pub(crate) fn handle_snapshot(&mut self, from: NodeId, snapshot: Snapshot) {
        let (index, term) = (snapshot.meta.index, snapshot.meta.term);
        if index > self.log.committed {
            if self.log.match_term(index, term) {
                // We already hold the entries it covers; just learn that they are committed.
                self.log.commit_to(index);
            } else {
                let membership = snapshot.meta.membership.clone();
                self.log.restore(snapshot);
                // The snapshot's configuration may have added or removed our vote.
                self.restore_configs(membership, index);
            }
        }
        let index = self.log.committed;
        self.send(
            from,
            Message::new(self.term, MessageKind::AppendResponse { index, reject: None }),
        );
    }

    /// A snapshot message can be lost without anyone telling us; after a bound, probe again.
    pub(crate) fn retry_stuck_snapshots(&mut self) {
        let limit_ticks = 2 * self.config.election_timeout_ticks;
        for pr in self.progress.values_mut() {
            if let ProgressState::Snapshot { .. } = pr.state {
                pr.snapshot_elapsed_ticks += 1;
                if pr.snapshot_elapsed_ticks > limit_ticks {
                    pr.become_probe();
                }
            }
        }
    }
}
