//! The distinguished proposer: phase 1 once for all slots from the first unchosen one, adoption of
//! the highest-ballot accepted value per slot with no-ops in the holes ("Paxos Made Moderately
//! Complex" §3, the leader's scouts), then pipelined, batched phase 2 runs per acceptor and the
//! chosen prefix.

use std::collections::BTreeMap;

use bytes::Bytes;
use yizhi_engine::{
    Entry, EntryPayload, LogIndex, LogPosition, LogStorage, NodeId, ProposeError, Role, Snapshot,
    quorum::VoteResult,
};

use crate::ballot::Ballot;
use crate::message::Message;
use crate::paxos::PaxosNode;
use crate::roles::{Candidacy, Leadership, Progress, PromiseInfo};

impl<S: LogStorage> PaxosNode<S> {
    /// Phase 1a with a ballot above every round seen, for every slot from the first unchosen one.
    pub(crate) fn campaign(&mut self) {
        assert!(
            self.is_voter(),
            "node {} is not a voter and cannot campaign",
            self.id()
        );
        let round = self.max_round_seen.max(self.promised.round()) + 1;
        let ballot = Ballot::new(round, self.id());
        self.become_follower(None);
        self.promise(ballot);
        self.role = Role::Candidate;
        let first_unchosen = self.commit + 1;
        let accepted = self
            .log
            .entries(&self.storage, first_unchosen, self.last(), u64::MAX)
            .unwrap_or_else(|e| panic!("node {}: own slots unreadable: {e}", self.id()));
        let own = PromiseInfo {
            commit: self.commit,
            accepted,
            snapshot: None,
        };
        self.candidacy = Some(Candidacy {
            ballot,
            first_unchosen,
            promises: BTreeMap::from([(self.id(), own)]),
        });
        for peer in self.membership.voters.clone() {
            if peer != self.id() {
                self.send(
                    peer,
                    Message::Prepare {
                        ballot,
                        first_unchosen,
                    },
                );
            }
        }
        self.maybe_win();
    }

    pub(crate) fn on_promise(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        commit: LogIndex,
        accepted: Vec<Entry>,
        snapshot: Option<Snapshot>,
    ) {
        let Some(candidacy) = self.candidacy.as_mut() else {
            return;
        };
        if candidacy.ballot != ballot || !self.membership.is_voter(from) {
            return;
        }
        let info = PromiseInfo {
            commit,
            accepted,
            snapshot,
        };
        candidacy.promises.insert(from, info);
        self.maybe_win();
    }

    fn maybe_win(&mut self) {
        let Some(candidacy) = self.candidacy.as_ref() else {
            return;
        };
        if self
            .voters
            .vote_result(|id| candidacy.promises.get(&id).map(|_| true))
            == VoteResult::Won
        {
            let candidacy = self.candidacy.take().expect("checked above");
            self.become_leader(candidacy);
        }
    }

    /// The highest snapshot any promise carried beyond our chosen prefix is installed first: its
    /// slots are chosen, so nothing there needs re-proposing.
    fn adopt_snapshot(&mut self, candidacy: &mut Candidacy) {
        let best = candidacy
            .promises
            .values_mut()
            .filter_map(|p| p.snapshot.take())
            .max_by_key(|s| s.meta.index);
        let Some(snapshot) = best.filter(|s| s.meta.index > self.commit) else {
            return;
        };
        let index = snapshot.meta.index;
        self.install_snapshot_keeping_tail(snapshot);
        candidacy.first_unchosen = candidacy.first_unchosen.max(index + 1);
    }

    /// Phase 1 won. For every slot from the first unchosen one to the highest any promise
    /// reported, re-propose in our ballot the value accepted with the highest ballot (P2c), or a
    /// no-op where no acceptor of the quorum accepted anything.
    fn become_leader(&mut self, mut candidacy: Candidacy) {
        let ballot = candidacy.ballot;
        assert_eq!(
            self.promised, ballot,
            "won phase 1 with {ballot:?} but promised {:?}",
            self.promised
        );
        self.adopt_snapshot(&mut candidacy);
        let from = candidacy.first_unchosen;
        let (frontier, proposals) = self.recovered_proposals(&candidacy);
        let uncommitted_bytes = proposals.iter().map(Entry::size_bytes).sum();
        self.log.write(&self.storage, proposals);
        let peers = self.initial_progress(&candidacy, frontier);
        self.role = Role::Leader;
        self.leader = Some(self.id());
        self.heartbeat_elapsed_ticks = 0;
        self.leadership = Some(Leadership {
            ballot,
            frontier,
            self_matched: from - 1,
            peers,
            uncommitted_bytes,
            read_round: 0,
            read_round_wanted: false,
            pending_reads: Vec::new(),
        });
        // Not `broadcast_heartbeat`: nothing was sent yet, so no peer is stalled and none is
        // rewound (that rewind used to resend the whole log to every acceptor).
        for peer in self.send_heartbeats() {
            self.send_runs(peer);
        }
    }

    /// Phase 1's outcome for every slot from `first_unchosen` up to the frontier (the highest slot
    /// any promiser accepted, or this log's end): the value accepted in the highest ballot, or a
    /// noop where nobody accepted one, each re-proposed in the new ballot. Returns the frontier too.
    fn recovered_proposals(&self, candidacy: &Candidacy) -> (LogIndex, Vec<Entry>) {
        let from = candidacy.first_unchosen;
        let mut best: BTreeMap<LogIndex, &Entry> = BTreeMap::new();
        for info in candidacy.promises.values() {
            for e in info.accepted.iter().filter(|e| e.index >= from) {
                if best.get(&e.index).is_none_or(|b| e.term > b.term) {
                    best.insert(e.index, e);
                }
            }
        }
        let frontier = best
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
            .max(from - 1)
            .max(self.last());
        let proposals: Vec<Entry> = (from..=frontier)
            .map(|index| Entry {
                index,
                term: candidacy.ballot.term(),
                payload: best.get(&index).map_or(EntryPayload::Noop, |e| e.payload.clone()),
            })
            .collect();
        for e in &proposals {
            assert!(
                e.index > self.commit,
                "re-proposing chosen slot {} (commit {})",
                e.index,
                self.commit
            );
        }
        (frontier, proposals)
    }

    /// Where the new leader starts with each peer.
    fn initial_progress(&self, candidacy: &Candidacy, frontier: LogIndex) -> BTreeMap<NodeId, Progress> {
        self.peers()
            .into_iter()
            .map(|p| {
                // A promiser is sent only what it did not know chosen (its commit cannot exceed the
                // frontier, which covers its log; clamped against a faulty peer). Anyone else is
                // first sent what a current acceptor lacks, from `from`; if it lacks more, its
                // reply reports a gap, or the next heartbeat finds it stalled.
                let known_chosen = candidacy.promises.get(&p).map_or(0, |i| i.commit.min(frontier));
                let next = if candidacy.promises.contains_key(&p) {
                    known_chosen + 1
                } else {
                    candidacy.first_unchosen
                };
                let progress = Progress {
                    matched: 0,
                    known_chosen,
                    next,
                    inflight_msgs: 0,
                    acked_since_heartbeat: false,
                    snapshot_in_flight: false,
                    read_round_acked: 0,
                };
                (p, progress)
            })
            .collect()
    }

    /// Sends Accept runs to `peer` from its `next` slot, as long as the inflight window allows.
    pub(crate) fn send_runs(&mut self, peer: NodeId) {
        let Some(leadership) = self.leadership.as_ref() else {
            return;
        };
        let ballot = leadership.ballot;
        let mut progress = leadership.peers[&peer].clone();
        assert!(
            progress.synced() < progress.next,
            "node {}: peer {peer} synced through {} but next is {}",
            self.id(),
            progress.synced(),
            progress.next
        );
        let last = self.last();
        let first_available = self.log.first_available(&self.storage);
        while progress.next <= last && progress.inflight_msgs < self.config.max_inflight_msgs {
            if progress.snapshot_in_flight {
                break;
            }
            if progress.next < first_available {
                let Ok(snapshot) = self.current_snapshot() else {
                    break;
                };
                progress.next = snapshot.meta.index + 1;
                progress.snapshot_in_flight = true;
                self.send(peer, Message::InstallSnapshot { ballot, snapshot });
                break;
            }
            let entries = self
                .log
                .entries(&self.storage, progress.next, last, self.config.max_msg_bytes)
                .unwrap_or_else(|e| {
                    panic!("node {}: slots from {} unreadable: {e}", self.id(), progress.next)
                });
            let end = entries.last().expect("next <= last yields an entry").index;
            assert!(end >= progress.next, "run {}..={end} is empty", progress.next);
            progress.next = end + 1;
            progress.inflight_msgs += 1;
            let commit = self.commit;
            self.send(
                peer,
                Message::Accept {
                    ballot,
                    commit,
                    entries,
                },
            );
        }
        if let Some(l) = self.leadership.as_mut() {
            l.peers.insert(peer, progress);
        }
    }

    pub(crate) fn on_accepted(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        matched: LogIndex,
        run_last: Option<LogIndex>,
    ) {
        let Some(leadership) = self.leadership.as_mut() else {
            return;
        };
        if leadership.ballot != ballot {
            return;
        }
        let Some(progress) = leadership.peers.get_mut(&from) else {
            return;
        };
        let gap = run_last.is_some_and(|run_last| matched < run_last);
        // In-process, an acceptor's replies in our ballot report at least the commit index it
        // promised with; a lower report means a restart lost that hint and it needs those slots.
        progress.known_chosen = progress.known_chosen.min(matched);
        if gap {
            // A gap or a refused run: resend from what the acceptor has *now*. That may be less
            // than it reported before: its commit index is a hint persisted without an fsync, so
            // after a restart it may no longer know chosen a slot it once reported (an old-ballot
            // slot then no longer counts towards `matched`). Keeping the higher old value would
            // make us resend only after it, forever. Lowering it only delays our count (the
            // commit index never goes back) and costs a resend if the report was stale.
            progress.matched = matched;
        } else {
            progress.matched = progress.matched.max(matched);
        }
        if run_last.is_some() {
            progress.acked_since_heartbeat = true;
            progress.inflight_msgs = progress.inflight_msgs.saturating_sub(1);
            progress.snapshot_in_flight = false;
        }
        if gap {
            progress.next = matched + 1;
            progress.inflight_msgs = 0;
        } else {
            progress.next = progress.next.max(progress.synced() + 1);
        }
        self.maybe_commit();
        self.send_runs(from);
    }

    /// A slot is chosen once a majority accepted it in our ballot (or already knew it chosen), as
    /// reported in their phase 2 replies: `known_chosen` from phase 1 never counts.
    pub(crate) fn maybe_commit(&mut self) {
        let Some(leadership) = self.leadership.as_ref() else {
            return;
        };
        let me = self.id();
        let chosen = self.voters.committed_index(|id| {
            if id == me {
                Some(leadership.self_matched)
            } else {
                leadership.peers.get(&id).map(|p| p.matched)
            }
        });
        if chosen > self.commit {
            let newly_chosen: u64 = self
                .log
                .entries(&self.storage, self.commit + 1, chosen, u64::MAX)
                .map(|es| es.iter().map(Entry::size_bytes).sum())
                .unwrap_or(0);
            if let Some(l) = self.leadership.as_mut() {
                l.uncommitted_bytes = l.uncommitted_bytes.saturating_sub(newly_chosen);
            }
            self.commit_to(chosen);
            self.release_reads();
        }
    }

    /// Heartbeats carry the commit index and, with `read_round`, confirm leadership for reads.
    /// They also retransmit: a peer that is behind and acknowledged nothing for a whole interval
    /// (runs lost, or the peer restarted) gets its runs again from what it acknowledged.
    pub(crate) fn broadcast_heartbeat(&mut self) {
        let last = self.last();
        for peer in self.send_heartbeats() {
            let Some(progress) = self.leadership.as_mut().and_then(|l| l.peers.get_mut(&peer)) else {
                continue;
            };
            let stalled = !progress.acked_since_heartbeat || progress.inflight_msgs == 0;
            if progress.synced() < last && !progress.snapshot_in_flight && stalled {
                progress.next = progress.synced() + 1;
                progress.inflight_msgs = 0;
            }
            progress.acked_since_heartbeat = false;
            self.send_runs(peer);
        }
    }

    /// One Heartbeat to every peer, carrying the current read round; returns the peers.
    pub(crate) fn send_heartbeats(&mut self) -> Vec<NodeId> {
        let Some(leadership) = self.leadership.as_ref() else {
            return Vec::new();
        };
        let (ballot, read_round, commit) = (leadership.ballot, leadership.read_round, self.commit);
        let peers = self.peers();
        for &peer in &peers {
            self.send(
                peer,
                Message::Heartbeat {
                    ballot,
                    commit,
                    read_round,
                },
            );
        }
        peers
    }

    pub(crate) fn on_heartbeat_ack(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        matched: LogIndex,
        read_round: u64,
    ) {
        let Some(progress) = self
            .leadership
            .as_mut()
            .filter(|l| l.ballot == ballot)
            .and_then(|l| l.peers.get_mut(&from))
        else {
            return;
        };
        progress.read_round_acked = progress.read_round_acked.max(read_round);
        self.on_accepted(from, ballot, matched, None);
        self.release_reads();
    }

    pub(crate) fn propose_entry(&mut self, data: Bytes) -> Result<LogPosition, ProposeError> {
        let Some(leadership) = self.leadership.as_ref() else {
            return Err(ProposeError::NotLeader { leader: self.leader });
        };
        let size_bytes = data.len() as u64;
        if size_bytes > self.config.max_proposal_bytes {
            let limit_bytes = self.config.max_proposal_bytes;
            return Err(ProposeError::TooLarge {
                size_bytes,
                limit_bytes,
            });
        }
        let limit_bytes = self.config.max_uncommitted_bytes;
        if leadership.uncommitted_bytes + size_bytes > limit_bytes && leadership.uncommitted_bytes > 0 {
            return Err(ProposeError::Backpressure { limit_bytes });
        }
        let last = self.last();
        let position = LogPosition {
            index: last + 1,
            term: leadership.ballot.term(),
        };
        let entry = Entry {
            index: position.index,
            term: position.term,
            payload: EntryPayload::Normal(data),
        };
        let entry_bytes = entry.size_bytes();
        self.log.write(&self.storage, vec![entry]);
        if let Some(l) = self.leadership.as_mut() {
            l.uncommitted_bytes += entry_bytes;
        }
        for peer in self.peers() {
            self.send_runs(peer);
        }
        Ok(position)
    }
}

#[cfg(test)]
#[path = "proposer_tests.rs"]
mod tests;
