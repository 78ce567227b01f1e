//! Leader election (paper §5.2), PreVote (thesis §9.6) and leadership transfer (thesis §3.10).

use yizhi_engine::quorum::VoteResult;
use yizhi_engine::{LogStorage, NodeId, Role, TransferError};

use crate::config::ReadMode;
use crate::message::{Message, MessageKind};
use crate::raft::RaftNode;

/// A follower told that its leader's connection closed campaigns after a delay drawn uniformly
/// from `1..=CONNECTION_LOST_CAMPAIGN_TICKS_MAX` ticks instead of the rest of its election
/// timeout. Randomized because every follower sees the same close at the same instant: were they
/// all to campaign together they would split the vote and fall back to the full timeout.
pub const CONNECTION_LOST_CAMPAIGN_TICKS_MAX: u64 = 3;

impl<S: LogStorage> RaftNode<S> {
    /// Starts a pre-election (`pre`) or an election. `transfer` marks a campaign ordered by the
    /// leader through TimeoutNow, which voters honour despite their lease.
    pub(crate) fn campaign(&mut self, pre: bool, transfer: bool) {
        assert!(self.is_voter(), "learner {} tried to campaign", self.id());
        let vote_term = if pre {
            // Thesis §9.6: term and vote stay as they are until a real election is won in principle.
            self.role = Role::PreCandidate;
            self.leader = None;
            self.votes.clear();
            self.term + 1
        } else {
            self.become_follower(self.term + 1, None);
            self.role = Role::Candidate;
            self.vote = Some(self.id());
            self.term
        };
        self.record_vote(self.id(), true);
        let still_campaigning = self.role == if pre { Role::PreCandidate } else { Role::Candidate };
        if !still_campaigning {
            return; // A single-voter cluster has already won.
        }
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        let voters: Vec<NodeId> = self.quorum.voters().filter(|&id| id != self.id()).collect();
        for voter in voters {
            let kind = if pre {
                MessageKind::PreVote {
                    last_index,
                    last_term,
                }
            } else {
                MessageKind::Vote {
                    last_index,
                    last_term,
                    transfer,
                }
            };
            self.send(voter, Message::new(vote_term, kind));
        }
    }

    /// The transport saw its connection to `peer` close. A follower of `peer` forgets it — so that,
    /// under CheckQuorum, it no longer refuses other candidates' (pre-)votes on its behalf (thesis
    /// §4.2.3) — and campaigns after a short random delay. Safety never rests on this: a wrong
    /// hint costs at most a PreVote round, which the nodes still hearing the leader refuse, and
    /// the leader's next message restores the follower and its full timeout. A leader takes the
    /// hint as `report_unreachable`.
    pub(crate) fn connection_lost(&mut self, peer: NodeId) {
        match self.role {
            Role::Leader => self.report_unreachable_peer(peer),
            Role::Follower if self.leader == Some(peer) && self.takes_connection_hints() => {
                self.leader = None;
                let delay_ticks = self.rng.range_inclusive(1, CONNECTION_LOST_CAMPAIGN_TICKS_MAX);
                let deadline_ticks = self.election_elapsed_ticks + delay_ticks;
                if deadline_ticks < self.randomized_election_timeout_ticks {
                    self.randomized_election_timeout_ticks = deadline_ticks;
                    self.election_timeout_shortened = true;
                }
            }
            // A candidate is already campaigning; a learner never does; a follower of another
            // leader (or of none) has nothing to gain.
            _ => {}
        }
    }

    /// Whether a follower may campaign early on a lost-connection hint. Only with PreVote and
    /// CheckQuorum: without them nothing stops a wrong hint from raising the term and deposing a
    /// healthy leader. Never with lease reads: a lease (thesis §6.4.1) relies on every follower
    /// that acknowledged it refusing other candidates for a full election timeout, hint or not.
    fn takes_connection_hints(&self) -> bool {
        self.config.pre_vote && self.config.check_quorum && self.config.read_mode == ReadMode::Safe
    }

    /// Counts one (pre-)vote and acts on the outcome.
    pub(crate) fn record_vote(&mut self, from: NodeId, granted: bool) {
        if !self.quorum.is_voter(from) {
            return;
        }
        self.votes.entry(from).or_insert(granted);
        match self.quorum.vote_result(|id| self.votes.get(&id).copied()) {
            VoteResult::Won if self.role == Role::PreCandidate => self.campaign(false, false),
            VoteResult::Won => {
                self.become_leader();
                self.append_pending = true;
            }
            VoteResult::Lost => self.become_follower(self.term, None),
            VoteResult::Pending => {}
        }
    }

    /// Paper §5.2 and §5.4.1: grant at most one vote per term, only to a log at least as up to date.
    pub(crate) fn handle_vote_request(&mut self, from: NodeId, msg: Message) {
        let (pre, last_index, last_term) = match msg.kind {
            MessageKind::PreVote {
                last_index,
                last_term,
            } => (true, last_index, last_term),
            MessageKind::Vote {
                last_index,
                last_term,
                ..
            } => (false, last_index, last_term),
            other => unreachable!("not a vote request: {other:?}"),
        };
        if !pre {
            assert_eq!(msg.term, self.term, "vote requests reach here only at our term");
        }
        let can_vote = self.vote == Some(from)
            || (self.vote.is_none() && self.leader.is_none())
            || (pre && msg.term > self.term);
        let granted = can_vote && self.log.is_up_to_date(last_index, last_term);
        // A granted pre-vote answers in the asked-for term so the pre-candidate counts it; a refusal
        // carries our term so a stale asker learns it.
        let reply_term = if granted { msg.term } else { self.term };
        let kind = if pre {
            MessageKind::PreVoteResponse { granted }
        } else {
            MessageKind::VoteResponse { granted }
        };
        if granted && !pre {
            assert!(
                self.vote.is_none() || self.vote == Some(from),
                "second vote in term {}",
                self.term
            );
            self.vote = Some(from);
            self.election_elapsed_ticks = 0;
        }
        self.send(from, Message::new(reply_term, kind));
    }

    /// Thesis §3.10: bring `to` up to date, then tell it to campaign at once.
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader);
        }
        if to == self.id() {
            return Err(TransferError::AlreadyLeader(to));
        }
        if !self.quorum.is_voter(to) {
            return Err(TransferError::NotVoter(to));
        }
        if self.lead_transferee == Some(to) {
            return Ok(());
        }
        self.lead_transferee = Some(to);
        // The transfer is abandoned if it has not finished within an election timeout.
        self.election_elapsed_ticks = 0;
        let caught_up = self
            .progress
            .get(&to)
            .is_some_and(|p| p.matched == self.log.last_index());
        if caught_up {
            self.send_timeout_now(to);
        } else {
            self.send_append(to, true);
        }
        Ok(())
    }

    pub(crate) fn send_timeout_now(&mut self, to: NodeId) {
        self.timeout_now_sent = true;
        self.send(to, Message::new(self.term, MessageKind::TimeoutNow));
    }
}
