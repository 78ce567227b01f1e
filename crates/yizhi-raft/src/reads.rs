//! Linearizable reads: ReadIndex (thesis §6.4) and the leader lease (thesis §6.4.1).

use yizhi_engine::{LogStorage, NodeId, ProposeError, ReadState, Role};

use crate::config::ReadMode;
use crate::message::{Message, MessageKind};
use crate::raft::{MAX_READS_AWAITING_COMMIT, RaftNode};
use crate::read_index::PendingRead;

impl<S: LogStorage> RaftNode<S> {
    /// A client's read on this node. A follower forwards it to the leader.
    pub fn read_index(&mut self, read_id: u64) -> Result<(), ProposeError> {
        match self.role {
            Role::Leader => {
                if self.reads.pending_len() >= self.config.max_pending_reads {
                    return Err(ProposeError::TooManyPendingReads {
                        limit: self.config.max_pending_reads,
                    });
                }
                self.handle_read_request(self.id(), read_id);
                Ok(())
            }
            _ => match self.leader {
                Some(leader) => {
                    self.send(
                        leader,
                        Message::new(self.term, MessageKind::ReadIndex { read_id }),
                    );
                    Ok(())
                }
                None => Err(ProposeError::NotLeader { leader: None }),
            },
        }
    }

    pub(crate) fn handle_read_request(&mut self, from: NodeId, read_id: u64) {
        if !self.committed_in_current_term() {
            // Until an entry of this term commits, the leader's commit index may be stale.
            if self.reads_awaiting_commit.len() < MAX_READS_AWAITING_COMMIT {
                self.reads_awaiting_commit.push((from, read_id));
            }
            return;
        }
        let index = self.log.committed;
        if self.lease_valid() {
            self.answer_reads(vec![PendingRead::immediate(read_id, index, from)]);
            return;
        }
        if self.reads.pending_len() >= self.config.max_pending_reads {
            return; // Dropped: the asker times out and retries, as with a lost message.
        }
        // The next `ready()` opens the round (a single voter confirms it at once).
        self.reads.add_read(read_id, index, from);
    }

    fn committed_in_current_term(&self) -> bool {
        self.log.term(self.log.committed) == Ok(self.term)
    }

    /// The lease holds while fewer than `lease_ticks` have passed since the newest confirmed round
    /// was sent, and no leadership transfer has been started in this term.
    pub(crate) fn lease_valid(&self) -> bool {
        self.config.read_mode == ReadMode::LeaseBased
            && self.role == Role::Leader
            && !self.timeout_now_sent
            && self.lead_transferee.is_none()
            && self
                .reads
                .lease_start_tick
                .is_some_and(|start| self.ticks_total < start + self.config.lease_ticks())
    }

    pub(crate) fn on_commit_in_current_term(&mut self) {
        if self.reads_awaiting_commit.is_empty() {
            return;
        }
        for (from, read_id) in std::mem::take(&mut self.reads_awaiting_commit) {
            self.handle_read_request(from, read_id);
        }
    }

    pub(crate) fn answer_reads(&mut self, reads: Vec<PendingRead>) {
        for read in reads {
            if read.from == self.id() {
                self.read_states.push(ReadState {
                    read_id: read.read_id,
                    index: read.index,
                });
            } else {
                let kind = MessageKind::ReadIndexResponse {
                    read_id: read.read_id,
                    index: read.index,
                };
                self.send(read.from, Message::new(self.term, kind));
            }
        }
    }

    /// Whether reads wait for a heartbeat round that has not gone out yet.
    pub(crate) fn needs_read_round(&self) -> bool {
        self.role == Role::Leader && self.reads.needs_round()
    }
}
