//! Raft's wire messages. Every message carries the sender's term; `step` compares it first.

use yizhi_engine::{Entry, LogIndex, Snapshot, Term};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub term: Term,
    pub kind: MessageKind,
}

/// Why a follower refused an append, so the leader can skip a whole term at a time (thesis §5.3's
/// "accelerated log backtracking"): the follower's last index at or below `hint_index` whose term is
/// at most the leader's `prev_term`, and that entry's term.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RejectHint {
    pub rejected_index: LogIndex,
    pub hint_index: LogIndex,
    pub hint_term: Term,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageKind {
    /// "Would you vote for me in `term`?" (thesis §9.6). Changes no state at the receiver.
    PreVote {
        last_index: LogIndex,
        last_term: Term,
    },
    PreVoteResponse {
        granted: bool,
    },
    /// `transfer` is set when the campaign was started by TimeoutNow: voters then skip the
    /// CheckQuorum lease, because the current leader asked for the election (thesis §3.10).
    Vote {
        last_index: LogIndex,
        last_term: Term,
        transfer: bool,
    },
    VoteResponse {
        granted: bool,
    },
    Append {
        prev_index: LogIndex,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: LogIndex,
    },
    /// `index` is the follower's last matching index when accepted.
    AppendResponse {
        index: LogIndex,
        reject: Option<RejectHint>,
    },
    /// `round` names the leader's confirmation round; ReadIndex and the lease count its acks.
    Heartbeat {
        commit: LogIndex,
        round: u64,
    },
    HeartbeatResponse {
        round: u64,
    },
    InstallSnapshot {
        snapshot: Snapshot,
    },
    /// "Campaign now": the last step of a leadership transfer.
    TimeoutNow,
    /// A follower forwards a client's linearizable read to the leader.
    ReadIndex {
        read_id: u64,
    },
    ReadIndexResponse {
        read_id: u64,
        index: LogIndex,
    },
}

impl Message {
    pub fn new(term: Term, kind: MessageKind) -> Self {
        Message { term, kind }
    }

    /// Approximate encoded size, for byte limits and benchmarks.
    pub fn size_bytes(&self) -> u64 {
        const HEADER_BYTES: u64 = 32;
        match &self.kind {
            MessageKind::Append { entries, .. } => {
                HEADER_BYTES + entries.iter().map(Entry::size_bytes).sum::<u64>()
            }
            MessageKind::InstallSnapshot { snapshot } => HEADER_BYTES + snapshot.data.len() as u64,
            _ => HEADER_BYTES,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use yizhi_engine::{ENTRY_OVERHEAD_BYTES, EntryPayload, WireMessage};

    #[test]
    fn only_install_snapshot_is_a_snapshot() {
        let install = Message::new(
            1,
            MessageKind::InstallSnapshot {
                snapshot: Snapshot::default(),
            },
        );
        assert!(install.is_snapshot());
        assert!(!Message::new(1, MessageKind::TimeoutNow).is_snapshot());
        assert!(!Message::new(1, MessageKind::Heartbeat { commit: 0, round: 1 }).is_snapshot());
    }

    #[test]
    fn size_counts_entry_payloads_and_snapshot_data() {
        let entry = Entry {
            index: 1,
            term: 1,
            payload: EntryPayload::Normal(Bytes::from_static(b"abcd")),
        };
        let append = Message::new(
            1,
            MessageKind::Append {
                prev_index: 0,
                prev_term: 0,
                entries: vec![entry.clone(), entry],
                commit: 0,
            },
        );
        let heartbeat = Message::new(1, MessageKind::Heartbeat { commit: 0, round: 1 });
        assert_eq!(
            append.size_bytes() - heartbeat.size_bytes(),
            2 * (ENTRY_OVERHEAD_BYTES + 4)
        );
        let snapshot = Snapshot {
            data: Bytes::from(vec![0u8; 100]),
            ..Default::default()
        };
        let install = Message::new(1, MessageKind::InstallSnapshot { snapshot });
        assert_eq!(install.size_bytes() - heartbeat.size_bytes(), 100);
    }
}
