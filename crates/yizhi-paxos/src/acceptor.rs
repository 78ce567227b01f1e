//! Acceptor and learner handlers: Prepare → Promise, Accept → Accepted, Heartbeat → HeartbeatAck,
//! InstallSnapshot. Each one raises the promise if it must (durable in the same `Ready` as the
//! reply), refuses ballots below the promise with a `Nack` carrying the promise, and learns the
//! chosen prefix.

use yizhi_engine::{Entry, LogIndex, LogStorage, NodeId, Role, Snapshot, StorageError};

use crate::ballot::Ballot;
use crate::message::Message;
use crate::paxos::PaxosNode;

impl<S: LogStorage> PaxosNode<S> {
    /// Refuses `ballot` if it is below the promise; otherwise promises it (a no-op when equal).
    fn admit(&mut self, from: NodeId, ballot: Ballot) -> bool {
        if ballot < self.promised {
            let promised = self.promised;
            self.send(from, Message::Nack { promised });
            return false;
        }
        self.promise(ballot);
        true
    }

    /// Phase 1b ("Paxos Made Simple" §2.2, P1a): promise never to accept below `ballot`, and report
    /// everything accepted from `first_unchosen` on.
    pub(crate) fn on_prepare(&mut self, from: NodeId, ballot: Ballot, first_unchosen: LogIndex) {
        if !self.admit(from, ballot) {
            return;
        }
        if self.leader.is_some_and(|l| l != ballot.node()) || self.role == Role::Candidate {
            self.leader = None;
        }
        // The proposer needs time to finish phase 1 before anyone else tries.
        self.reset_election_timer();
        let first_available = self.log.first_available(&self.storage);
        let snapshot = if first_unchosen < first_available && first_available > 1 {
            match self.current_snapshot() {
                Ok(snapshot) => Some(snapshot),
                Err(_) => return, // unavailable right now; the proposer retries its phase 1
            }
        } else {
            None
        };
        let lo = first_unchosen.max(first_available);
        let accepted = self
            .log
            .entries(&self.storage, lo, self.last(), u64::MAX)
            .unwrap_or_else(|e| panic!("node {}: held slots {lo}.. unreadable: {e}", self.id()));
        let commit = self.commit;
        self.send(
            from,
            Message::Promise {
                ballot,
                commit,
                accepted,
                snapshot,
            },
        );
    }

    pub(crate) fn current_snapshot(&self) -> Result<Snapshot, StorageError> {
        match &self.pending_snapshot {
            Some(snapshot) => Ok(snapshot.clone()),
            None => self.storage.snapshot(),
        }
    }

    /// A message of the current leader's ballot arrived: follow it.
    fn follow(&mut self, ballot: Ballot) {
        if self.leading_ballot() == Some(ballot) {
            return;
        }
        if self.role == Role::Candidate || self.role == Role::Leader {
            self.become_follower(Some(ballot.node()));
        }
        self.leader = Some(ballot.node());
        if self.election_deadline_shortened {
            // The hint was wrong, or a new leader exists: give it a full deadline again.
            self.reset_election_timer();
        }
        self.ticks_since_heard = 0;
    }

    /// Phase 2b for a run of slots. The acceptor writes from the first slot of the run whose
    /// content (ballot and value) differs from what it holds; if it holds slots beyond the run, it
    /// keeps them and rewrites them in the same write (the log's write rule), because a reordered
    /// shorter run must never drop a slot that a longer run of the same ballot had it accept.
    ///
    /// Why not rewrite what it already holds: a write at slot i replaces every stored slot from i
    /// on, and a crash may tear an unsynced append after any of its entries. Rewriting held slots
    /// therefore puts acknowledged slots into the part a tear can cut: the durable log gets
    /// *shorter*, and slots this acceptor reported accepted (the leader counted them towards a
    /// quorum) are gone. Starting at the first changed slot, a resent, duplicated or reordered run
    /// of the ballot the acceptor already accepted writes nothing, and a run that extends the log
    /// only appends; a tear then loses only entries of this very write, whose `Accepted` has not
    /// left (messages wait for the fsync). What a tear can still cut is a rewrite after a change
    /// of ballot (an overwritten slot below held ones): see `write_keeping_tail`.
    pub(crate) fn on_accept(&mut self, from: NodeId, ballot: Ballot, commit: LogIndex, entries: Vec<Entry>) {
        if !self.admit(from, ballot) {
            return;
        }
        self.follow(ballot);
        let contiguous = entries.windows(2).all(|p| p[0].index + 1 == p[1].index);
        let well_formed = entries
            .iter()
            .all(|e| e.index <= commit || e.term == ballot.term());
        if !contiguous || !well_formed {
            return; // a buggy or corrupted peer; never store it
        }
        let run_last = entries.last().map_or(0, |e| e.index);
        let known = self.commit.max(self.log.first_available(&self.storage) - 1);
        self.assert_chosen_agree(&entries, known);
        let fresh: Vec<Entry> = entries.into_iter().filter(|e| e.index > known).collect();
        assert_eq!(self.promised, ballot, "accepting below the promise");
        let mut covered = None;
        if let Some(first) = fresh.first().map(|e| e.index) {
            let last = self.last();
            if first <= last + 1 {
                let fresh_last = fresh.last().expect("non-empty").index;
                covered = Some((first, fresh_last));
                let held = fresh
                    .iter()
                    .take_while(|e| self.log.entry(&self.storage, e.index).as_ref() == Some(*e))
                    .count();
                let changed: Vec<Entry> = fresh.into_iter().skip(held).collect();
                if !changed.is_empty() {
                    self.write_keeping_tail(changed, fresh_last);
                }
            }
        }
        self.learn_commit(ballot, commit, covered);
        self.ack_matched(from, ballot, |matched| Message::Accepted {
            ballot,
            matched,
            run_last,
        });
    }

    /// Answers the leader of `ballot` with how far this acceptor now matches it.
    fn ack_matched(&mut self, to: NodeId, ballot: Ballot, reply: impl FnOnce(LogIndex) -> Message) {
        let matched = self.matched_in(ballot);
        self.send(to, reply(matched));
    }

    /// A chosen slot never changes: whatever a leader sends for a slot this acceptor already
    /// knows chosen must be the same value (its ballot may differ: re-proposals).
    fn assert_chosen_agree(&self, entries: &[Entry], known: LogIndex) {
        for sent in entries.iter().filter(|e| e.index <= known) {
            if let Some(held) = self.log.entry(&self.storage, sent.index) {
                assert_eq!(
                    held.payload,
                    sent.payload,
                    "node {}: chosen slot {} holds {held:?} but the leader sent {sent:?}",
                    self.id(),
                    sent.index
                );
            }
        }
    }

    /// Writes `fresh` (starting at the first changed slot) and, if the log reaches past the run,
    /// the held slots after it. Under the storage contract this is the only way to change a slot
    /// below held ones, and such a write can be torn anywhere after its first entry. It happens
    /// only when a new ballot's run changes a slot this acceptor holds from an older ballot (or an
    /// older value); the slots such a tear can cut were accepted in older ballots, and the leader
    /// of the new ballot holds its own proposal for each of them durably (it persisted its log
    /// before sending this run). Slots acknowledged in the current ballot and counted by its
    /// leader (the contiguous prefix `matched_in`) all lie below the first changed slot, so no
    /// tear of this write reaches them.
    fn write_keeping_tail(&mut self, mut fresh: Vec<Entry>, fresh_last: LogIndex) {
        let first = fresh.first().expect("called with entries").index;
        assert!(
            first > self.commit,
            "overwriting chosen slot {first} (commit {})",
            self.commit
        );
        fresh.extend(self.read_tail(fresh_last + 1));
        self.log.write(&self.storage, fresh);
    }

    /// Learns that every slot up to `leader_commit` is chosen, as far as this acceptor can tell its
    /// own value is the chosen one: a slot accepted in the leader's ballot holds the leader's value
    /// (one value per slot per ballot), and slots `covered` by the run just written hold exactly
    /// what the leader sent.
    fn learn_commit(
        &mut self,
        ballot: Ballot,
        leader_commit: LogIndex,
        covered: Option<(LogIndex, LogIndex)>,
    ) {
        let limit = leader_commit.min(self.last());
        let mut to = self.commit;
        while to < limit {
            let next = to + 1;
            let in_run = covered.is_some_and(|(lo, hi)| lo <= next && next <= hi);
            if in_run || self.log.term(&self.storage, next) == Some(ballot.term()) {
                to = next;
            } else {
                break;
            }
        }
        self.commit_to(to);
    }

    /// The highest slot up to which this acceptor knows every slot chosen or accepted in `ballot`.
    pub(crate) fn matched_in(&self, ballot: Ballot) -> LogIndex {
        let mut matched = self.commit;
        // No slot is held past the last one, so its term ends the walk.
        while self.log.term(&self.storage, matched + 1) == Some(ballot.term()) {
            matched += 1;
        }
        matched
    }

    pub(crate) fn on_heartbeat(&mut self, from: NodeId, ballot: Ballot, commit: LogIndex, read_round: u64) {
        if !self.admit(from, ballot) {
            return;
        }
        self.follow(ballot);
        self.learn_commit(ballot, commit, None);
        self.ack_matched(from, ballot, |matched| Message::HeartbeatAck {
            ballot,
            matched,
            read_round,
        });
    }

    /// The chosen prefix through `snapshot.meta.index`, as a state-machine image. Slots this
    /// acceptor holds beyond it are rewritten in the same `Ready` (the storage may drop them when
    /// it installs), so no accepted value is lost.
    pub(crate) fn on_install_snapshot(&mut self, from: NodeId, ballot: Ballot, snapshot: Snapshot) {
        if !self.admit(from, ballot) {
            return;
        }
        self.follow(ballot);
        let index = snapshot.meta.index;
        if index > self.commit {
            self.install_snapshot_keeping_tail(snapshot);
        }
        self.ack_matched(from, ballot, |matched| Message::Accepted {
            ballot,
            matched,
            run_last: index,
        });
    }

    /// Installs `snapshot` (beyond the commit index) in the next `Ready`, with the slots held
    /// after it rewritten in the same `Ready`: the storage may drop them when it installs.
    pub(crate) fn install_snapshot_keeping_tail(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        assert!(
            index > self.commit,
            "snapshot at {index} not beyond commit {}",
            self.commit
        );
        let tail = self.read_tail(index + 1);
        self.log.install_snapshot(index, tail);
        self.commit = index;
        self.pending_snapshot = Some(snapshot);
    }

    /// Every held slot from `from` to the last one.
    fn read_tail(&self, from: LogIndex) -> Vec<Entry> {
        let last = self.last();
        if from > last {
            return Vec::new();
        }
        let tail = self
            .log
            .entries(&self.storage, from, last, u64::MAX)
            .unwrap_or_else(|e| panic!("node {}: slots {from}..={last} unreadable: {e}", self.id()));
        assert_eq!(tail.len() as u64, last - from + 1, "the tail must be whole");
        tail
    }
}

#[cfg(test)]
#[path = "acceptor_tests.rs"]
mod tests;
