//! Wire messages. Every message carries the sender's ballot (or, in a `Nack`, the higher ballot the
//! receiver promised), so that a stale proposer learns why it was refused and backs off.

use yizhi_engine::{Entry, LogIndex, Snapshot, WireMessage};

use crate::ballot::Ballot;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Phase 1a for every slot from `first_unchosen` on ("Paxos Made Simple" §3: one prepare for
    /// all instances).
    Prepare {
        ballot: Ballot,
        first_unchosen: LogIndex,
    },
    /// Phase 1b: the acceptor's accepted `(ballot = Entry.term, value)` for every slot it holds from
    /// the prepare's `first_unchosen` on, and its snapshot when it compacted past that slot.
    Promise {
        ballot: Ballot,
        commit: LogIndex,
        accepted: Vec<Entry>,
        snapshot: Option<Snapshot>,
    },
    /// Phase 2a for a contiguous run of slots. Entries at or below `commit` are chosen values (any
    /// ballot, sent to catch a lagging acceptor up); entries above it carry `ballot` as their term.
    Accept {
        ballot: Ballot,
        commit: LogIndex,
        entries: Vec<Entry>,
    },
    /// Phase 2b. `matched`: every slot up to it is either known chosen by the acceptor or accepted in
    /// `ballot`. `run_last` echoes the last slot of the Accept; `matched < run_last` asks for a
    /// resend from `matched + 1` (a gap, or a run the acceptor could not take).
    Accepted {
        ballot: Ballot,
        matched: LogIndex,
        run_last: LogIndex,
    },
    /// Leadership, the commit index, and a read-confirmation round number.
    Heartbeat {
        ballot: Ballot,
        commit: LogIndex,
        read_round: u64,
    },
    HeartbeatAck {
        ballot: Ballot,
        matched: LogIndex,
        read_round: u64,
    },
    /// The chosen prefix as a state-machine image, for an acceptor behind the leader's compaction.
    InstallSnapshot { ballot: Ballot, snapshot: Snapshot },
    /// The receiver promised `promised`, above the ballot of the message it refuses.
    Nack { promised: Ballot },
    /// Leadership transfer: the leader of `ballot` asks the receiver to start phase 1 now.
    TimeoutNow { ballot: Ballot },
}

impl Message {
    /// [`WireMessage::is_snapshot`], callable without the trait in scope, as the server and the
    /// simulator still call it; remove once they ask the trait.
    pub fn is_snapshot(&self) -> bool {
        WireMessage::is_snapshot(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_install_snapshot_is_a_snapshot() {
        let ballot = Ballot::new(1, 1);
        assert!(
            Message::InstallSnapshot {
                ballot,
                snapshot: Snapshot::default()
            }
            .is_snapshot()
        );
        assert!(!Message::TimeoutNow { ballot }.is_snapshot());
        assert!(!Message::Nack { promised: ballot }.is_snapshot());
    }
}
