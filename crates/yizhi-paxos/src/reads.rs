//! Linearizable reads by quorum confirmation (the Paxos counterpart of Raft thesis §6.4 ReadIndex).
//!
//! A read registered on the leader of ballot `b` gets index `max(commit, frontier)` and the next
//! confirmation round `r`; a Heartbeat carrying `r` goes to every acceptor, and the read is
//! answered once a majority acknowledged a round `>= r` in ballot `b`.
//!
//! Why it is safe. (1) Every value chosen before the read was invoked sits at or below its index:
//! values chosen in ballots below `b` lie at or below `frontier` (phase 1 of `b` met an acceptor of
//! every choosing quorum), values chosen in `b` are at or below `commit` once this leader learned
//! them, and a value chosen in a ballot above `b` needs a phase 1 quorum that meets the confirming
//! majority — every acceptor of it acknowledged `b` *after* the read was registered, so it promised
//! the higher ballot only later, and that ballot chose nothing before the read's confirmation point.
//! (2) The runtime answers once its state machine applied the index, so the read sees every write
//! completed before it began, and only chosen writes.

use yizhi_engine::{LogStorage, ProposeError, ReadState};

use crate::paxos::PaxosNode;

impl<S: LogStorage> PaxosNode<S> {
    pub(crate) fn register_read(&mut self, read_id: u64) -> Result<(), ProposeError> {
        let commit = self.commit;
        let limit = self.config.max_pending_reads;
        let Some(leadership) = self.leadership.as_mut() else {
            return Err(ProposeError::NotLeader { leader: self.leader });
        };
        if leadership.pending_reads.len() >= limit {
            return Err(ProposeError::TooManyPendingReads { limit });
        }
        let index = commit.max(leadership.frontier);
        let round = leadership.read_round + 1;
        leadership.pending_reads.push((read_id, index, round));
        leadership.read_round_wanted = true;
        Ok(())
    }

    /// Starts one confirmation round for every read registered since the last one.
    pub(crate) fn flush_read_round(&mut self) {
        let Some(leadership) = self.leadership.as_mut() else {
            return;
        };
        if !leadership.read_round_wanted {
            return;
        }
        leadership.read_round_wanted = false;
        leadership.read_round += 1;
        self.send_heartbeats();
        self.release_reads();
    }

    /// Answers every read whose round a majority (this leader included) has acknowledged.
    pub(crate) fn release_reads(&mut self) {
        let me = self.id();
        let Some(leadership) = self.leadership.as_mut() else {
            return;
        };
        let confirmed = self.voters.committed_index(|id| {
            if id == me {
                Some(leadership.read_round)
            } else {
                leadership.peers.get(&id).map(|p| p.read_round_acked)
            }
        });
        assert!(
            confirmed <= leadership.read_round,
            "round {confirmed} confirmed before it was sent (current {})",
            leadership.read_round
        );
        let (done, waiting): (Vec<_>, Vec<_>) = leadership
            .pending_reads
            .drain(..)
            .partition(|&(_, _, round)| round <= confirmed);
        leadership.pending_reads = waiting;
        self.read_states.extend(
            done.into_iter()
                .map(|(read_id, index, _)| ReadState { read_id, index }),
        );
    }
}
