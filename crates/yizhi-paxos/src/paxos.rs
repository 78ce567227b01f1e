//! The state of one Multi-Paxos node (acceptor, learner, and — when its ballot wins phase 1 —
//! distinguished proposer) and the single `step` entry point that routes messages to handlers.

use yizhi_engine::{
    Envelope, HardState, LogIndex, LogStorage, Membership, NodeId, ReadState, Role, SeededRng, Snapshot,
    SoftState, StorageError, quorum::MajorityConfig,
};

use crate::ballot::Ballot;
use crate::config::{ConfigError, PaxosConfig};
use crate::log::SlotLog;
use crate::message::Message;
use crate::proposer::{Candidacy, Leadership};

/// Messages queued for the next `Ready` before the node stops queueing more: a bug guard, far above
/// what one step can produce with the inflight limits.
pub const MAX_OUTBOX_MSGS: usize = 1 << 16;
/// A follower told that its leader's connection closed starts phase 1 after one heartbeat
/// interval plus a delay drawn uniformly from `1..=CONNECTION_LOST_CAMPAIGN_TICKS_MAX` ticks,
/// instead of the rest of its election timeout. The heartbeat interval first: acceptors here
/// promise any higher ballot (no CheckQuorum-style stickiness), so a wrong hint must give a live
/// leader's next heartbeat the time to arrive and cancel the campaign. The random part keeps
/// followers that see the same close from all preparing at once (though a tie costs little here:
/// the higher ballot wins).
pub const CONNECTION_LOST_CAMPAIGN_TICKS_MAX: u64 = 3;

#[derive(Debug, thiserror::Error)]
pub enum PaxosError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot read durable state: {0}")]
    Storage(#[from] StorageError),
    #[error("node {0} is not a member of {1:?}")]
    NotMember(NodeId, Membership),
    #[error("durable commit {commit} beyond durable last slot {last}")]
    CommitBeyondLog { commit: LogIndex, last: LogIndex },
}

/// What the last `ready()` handed out, so `advance()` knows what became durable and applied.
#[derive(Debug)]
pub(crate) struct HandedOut {
    pub persisted_last: Option<LogIndex>,
    pub applied_to: LogIndex,
}

#[derive(Debug)]
pub struct PaxosNode<S: LogStorage> {
    pub(crate) config: PaxosConfig,
    pub(crate) storage: S,
    pub(crate) rng: SeededRng,
    pub(crate) membership: Membership,
    pub(crate) voters: MajorityConfig,
    /// The highest ballot this acceptor promised. Invariant: never decreases; durable (as
    /// `HardState.term`) before any message that depends on it leaves.
    pub(crate) promised: Ballot,
    pub(crate) log: SlotLog,
    /// Every slot up to `commit` is chosen and held (or covered by the snapshot).
    /// Invariant: never decreases; `applied <= commit <= last slot`.
    pub(crate) commit: LogIndex,
    pub(crate) applied: LogIndex,
    pub(crate) role: Role,
    pub(crate) leader: Option<NodeId>,
    /// The highest round seen in any ballot, so a new campaign outbids everyone it has heard of.
    pub(crate) max_round_seen: u64,
    pub(crate) ticks_since_heard: u64,
    /// Randomized in `[t, 2t)` each time it is reset, so that duelling proposers spread out.
    pub(crate) election_deadline_ticks: u64,
    /// Set while `election_deadline_ticks` is the short one a lost-connection hint put in place;
    /// hearing from a leader then draws a full deadline again.
    pub(crate) election_deadline_shortened: bool,
    pub(crate) heartbeat_elapsed_ticks: u64,
    pub(crate) candidacy: Option<Candidacy>,
    pub(crate) leadership: Option<Leadership>,
    pub(crate) pending_snapshot: Option<Snapshot>,
    pub(crate) msgs: Vec<Envelope<Message>>,
    pub(crate) read_states: Vec<ReadState>,
    pub(crate) prev_hard_state: HardState,
    pub(crate) prev_soft_state: SoftState,
    pub(crate) handed_out: Option<HandedOut>,
}

impl<S: LogStorage> PaxosNode<S> {
    pub fn new(config: PaxosConfig, storage: S, rng: SeededRng) -> Result<Self, PaxosError> {
        config.validate()?;
        let (hard_state, membership) = storage.initial_state()?;
        if !membership.contains(config.id) {
            return Err(PaxosError::NotMember(config.id, membership));
        }
        let snapshot_index = storage.first_index() - 1;
        let commit = hard_state.commit.max(snapshot_index);
        if commit > storage.last_index().max(snapshot_index) {
            let last = storage.last_index();
            return Err(PaxosError::CommitBeyondLog { commit, last });
        }
        let applied = config.applied.clamp(snapshot_index, commit);
        let promised = Ballot::from_term(hard_state.term);
        let voters = MajorityConfig::new(membership.voters.clone());
        let mut node = PaxosNode {
            config,
            storage,
            rng,
            membership,
            voters,
            promised,
            log: SlotLog::new(snapshot_index),
            commit,
            applied,
            role: Role::Follower,
            leader: None,
            max_round_seen: promised.round(),
            ticks_since_heard: 0,
            election_deadline_ticks: 0,
            election_deadline_shortened: false,
            heartbeat_elapsed_ticks: 0,
            candidacy: None,
            leadership: None,
            pending_snapshot: None,
            msgs: Vec::new(),
            read_states: Vec::new(),
            prev_hard_state: hard_state,
            prev_soft_state: SoftState {
                leader: None,
                role: Role::Follower,
            },
            handed_out: None,
        };
        if !node.is_voter() {
            node.role = Role::Learner;
        }
        node.reset_election_timer();
        Ok(node)
    }

    pub fn promised(&self) -> Ballot {
        self.promised
    }

    pub fn committed(&self) -> LogIndex {
        self.commit
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// The ballot this node leads with, once its phase 1 succeeded.
    pub fn leading_ballot(&self) -> Option<Ballot> {
        self.leadership.as_ref().map(|l| l.ballot)
    }

    /// Starts phase 1 now, as an expired election timer would (tests, leadership transfer).
    pub fn campaign_now(&mut self) {
        if self.is_voter() {
            self.campaign();
        }
    }

    pub(crate) fn id(&self) -> NodeId {
        self.config.id
    }

    pub(crate) fn is_voter(&self) -> bool {
        self.membership.is_voter(self.config.id)
    }

    pub(crate) fn last(&self) -> LogIndex {
        self.log.last(&self.storage)
    }

    pub(crate) fn peers(&self) -> Vec<NodeId> {
        let me = self.id();
        self.membership
            .members()
            .into_iter()
            .filter(|&p| p != me)
            .collect()
    }

    pub(crate) fn hard_state(&self) -> HardState {
        HardState {
            term: self.promised.term(),
            vote: None,
            commit: self.commit,
        }
    }

    pub(crate) fn soft_state(&self) -> SoftState {
        SoftState {
            leader: self.leader,
            role: self.role,
        }
    }

    pub(crate) fn send(&mut self, to: NodeId, msg: Message) {
        assert_ne!(to, self.id(), "node {} sends {msg:?} to itself", self.id());
        assert!(
            self.msgs.len() < MAX_OUTBOX_MSGS,
            "node {}: {} messages queued without a ready()",
            self.id(),
            self.msgs.len()
        );
        self.msgs.push(Envelope {
            from: self.id(),
            to,
            msg,
        });
    }

    pub(crate) fn reset_election_timer(&mut self) {
        let t = self.config.election_timeout_ticks;
        self.ticks_since_heard = 0;
        self.election_deadline_ticks = self.rng.range_inclusive(t, 2 * t - 1);
        self.election_deadline_shortened = false;
    }

    /// The transport saw its connection to `peer` close. A follower of `peer` forgets it and
    /// starts phase 1 soon (see [`CONNECTION_LOST_CAMPAIGN_TICKS_MAX`]) instead of waiting out its
    /// deadline. Safe whatever the hint says: Paxos's safety never rests on timing, and this
    /// engine has no leases a premature ballot could break (reads are quorum-confirmed,
    /// `reads.rs`). A wrong hint whose leader's heartbeat is lost too costs one phase 1.
    pub(crate) fn connection_lost(&mut self, peer: NodeId) {
        if self.is_leader() {
            self.report_unreachable_peer(peer);
            return;
        }
        if self.role != Role::Follower || self.leader != Some(peer) {
            return;
        }
        self.leader = None;
        let delay_ticks = self.config.heartbeat_interval_ticks
            + self.rng.range_inclusive(1, CONNECTION_LOST_CAMPAIGN_TICKS_MAX);
        let deadline_ticks = self.ticks_since_heard + delay_ticks;
        if deadline_ticks < self.election_deadline_ticks {
            self.election_deadline_ticks = deadline_ticks;
            self.election_deadline_shortened = true;
        }
    }

    /// Raises the promise. The new value is durable before any reply that depends on it is sent,
    /// because every message of a `Ready` leaves after its hard state is synced.
    pub(crate) fn promise(&mut self, ballot: Ballot) {
        assert!(
            ballot >= self.promised,
            "node {}: promise would decrease from {:?} to {ballot:?}",
            self.id(),
            self.promised
        );
        self.max_round_seen = self.max_round_seen.max(ballot.round());
        if ballot > self.promised {
            // A leader or candidate holds its own ballot as its promise, so a higher one ends it.
            let mine = self
                .leading_ballot()
                .or(self.candidacy.as_ref().map(|c| c.ballot));
            assert!(
                mine.is_none_or(|b| b == self.promised),
                "node {}: proposing with {mine:?} but promised {:?}",
                self.id(),
                self.promised
            );
            self.promised = ballot;
            if mine.is_some() {
                self.become_follower(Some(ballot.node()));
            }
        }
    }

    pub(crate) fn become_follower(&mut self, leader: Option<NodeId>) {
        self.candidacy = None;
        self.leadership = None;
        self.leader = leader.filter(|&l| l != self.id());
        self.role = if self.is_voter() {
            Role::Follower
        } else {
            Role::Learner
        };
        self.reset_election_timer();
    }

    /// Moves the commit index up to `to` (never down).
    pub(crate) fn commit_to(&mut self, to: LogIndex) {
        if to <= self.commit {
            return;
        }
        let last = self.last();
        assert!(
            to <= last,
            "node {}: commit {to} beyond last slot {last}",
            self.id()
        );
        self.commit = to;
    }

    pub fn tick(&mut self) {
        if self.role == Role::Leader {
            self.heartbeat_elapsed_ticks += 1;
            if self.heartbeat_elapsed_ticks >= self.config.heartbeat_interval_ticks {
                self.heartbeat_elapsed_ticks = 0;
                self.broadcast_heartbeat();
            }
            return;
        }
        self.ticks_since_heard += 1;
        if self.is_voter() && self.ticks_since_heard >= self.election_deadline_ticks {
            self.campaign();
        }
    }

    pub fn step(&mut self, envelope: Envelope<Message>) {
        let Envelope { from, to, msg } = envelope;
        if to != self.id() || !self.membership.contains(from) || from == self.id() {
            return;
        }
        match msg {
            Message::Prepare {
                ballot,
                first_unchosen,
            } => self.on_prepare(from, ballot, first_unchosen),
            Message::Accept {
                ballot,
                commit,
                entries,
            } => self.on_accept(from, ballot, commit, entries),
            Message::Heartbeat {
                ballot,
                commit,
                read_round,
            } => self.on_heartbeat(from, ballot, commit, read_round),
            Message::InstallSnapshot { ballot, snapshot } => self.on_install_snapshot(from, ballot, snapshot),
            Message::TimeoutNow { ballot } => self.on_timeout_now(ballot),
            Message::Promise {
                ballot,
                commit,
                accepted,
                snapshot,
            } => self.on_promise(from, ballot, commit, accepted, snapshot),
            Message::Accepted {
                ballot,
                matched,
                run_last,
            } => self.on_accepted(from, ballot, matched, Some(run_last)),
            Message::HeartbeatAck {
                ballot,
                matched,
                read_round,
            } => self.on_heartbeat_ack(from, ballot, matched, read_round),
            Message::Nack { promised } => self.on_nack(promised),
        }
    }

    /// A higher ballot refused us: stop proposing and let its owner lead. The randomized timer
    /// restarts, so if that owner is gone the duel resolves by whoever times out first.
    fn on_nack(&mut self, promised: Ballot) {
        self.max_round_seen = self.max_round_seen.max(promised.round());
        let mine = self
            .leading_ballot()
            .or(self.candidacy.as_ref().map(|c| c.ballot));
        if mine.is_some_and(|b| promised > b) {
            self.become_follower(Some(promised.node()));
        }
    }

    fn on_timeout_now(&mut self, ballot: Ballot) {
        if ballot >= self.promised && self.is_voter() && self.role != Role::Leader {
            self.campaign();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! Handler-level tests: one node, driven through `step`/`tick`, judged by the exact messages,
    //! `Ready` fields and state it produces. Helpers here are shared by the other modules' tests.

    use bytes::Bytes;
    use yizhi_engine::{
        Engine, Entry, EntryPayload, Envelope, MemStorage, Membership, Ready, Role, SeededRng,
    };

    use super::*;

    pub(crate) fn voters3() -> Membership {
        Membership::new([1, 2, 3])
    }

    pub(crate) fn node_with(
        id: NodeId,
        storage: MemStorage,
        seed: u64,
        tune: impl Fn(&mut PaxosConfig),
    ) -> PaxosNode<MemStorage> {
        let mut config = PaxosConfig::new(id);
        config.applied = storage.snapshot_ref().meta.index;
        tune(&mut config);
        PaxosNode::new(config, storage, SeededRng::new(seed)).expect("valid node")
    }

    pub(crate) fn node(id: NodeId) -> PaxosNode<MemStorage> {
        node_with(id, MemStorage::new_with_membership(voters3()), 7, |_| {})
    }

    /// Handles one Ready as a runtime must (persist, then advance) and returns it.
    pub(crate) fn flush(n: &mut PaxosNode<MemStorage>) -> Ready<Message> {
        let ready = n.ready();
        let storage = n.storage_mut();
        if let Some(snapshot) = ready.snapshot.clone() {
            storage.apply_snapshot(snapshot);
        }
        storage.append(&ready.entries);
        if let Some(hs) = ready.hard_state {
            storage.set_hard_state(hs);
        }
        n.advance();
        ready
    }

    /// The messages of the next Ready as `(to, message)`.
    pub(crate) fn sent(n: &mut PaxosNode<MemStorage>) -> Vec<(NodeId, Message)> {
        flush(n).messages.into_iter().map(|e| (e.to, e.msg)).collect()
    }

    pub(crate) fn deliver(n: &mut PaxosNode<MemStorage>, from: NodeId, msg: Message) {
        let to = n.id();
        n.step(Envelope { from, to, msg });
    }

    pub(crate) fn value(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    pub(crate) fn entry(index: LogIndex, ballot: Ballot, v: &str) -> Entry {
        Entry {
            index,
            term: ballot.term(),
            payload: EntryPayload::Normal(value(v)),
        }
    }

    /// Node `id` of {1,2,3} wins phase 1 with node 2's promise; its first Ready is handled.
    pub(crate) fn leader_of(mut n: PaxosNode<MemStorage>) -> PaxosNode<MemStorage> {
        n.campaign_now();
        let ballot = n.promised();
        flush(&mut n);
        deliver(
            &mut n,
            2,
            Message::Promise {
                ballot,
                commit: 0,
                accepted: Vec::new(),
                snapshot: None,
            },
        );
        assert!(n.is_leader());
        flush(&mut n);
        n
    }

    #[test]
    fn a_learner_is_never_a_voter_and_never_campaigns() {
        let membership = Membership::new([1, 2, 3]).with_learners([4]);
        let mut n = node_with(4, MemStorage::new_with_membership(membership), 1, |_| {});
        assert_eq!(n.role(), Role::Learner);
        for _ in 0..100 {
            n.tick();
        }
        assert_eq!(n.role(), Role::Learner);
        assert!(n.msgs.is_empty(), "no Prepare from a learner");
        // A TimeoutNow cannot make a learner campaign either.
        deliver(
            &mut n,
            1,
            Message::TimeoutNow {
                ballot: Ballot::new(5, 1),
            },
        );
        assert_eq!(n.role(), Role::Learner);
        assert!(n.msgs.is_empty());
    }

    #[test]
    fn election_deadlines_are_spread_over_t_to_2t_minus_1() {
        let t = 10;
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..300 {
            let n = node_with(1, MemStorage::new_with_membership(voters3()), seed, |c| {
                c.election_timeout_ticks = t;
            });
            let d = n.election_deadline_ticks;
            assert!(
                (t..2 * t).contains(&d),
                "seed {seed}: deadline {d} outside [{t}, {})",
                2 * t
            );
            seen.insert(d);
        }
        assert_eq!(seen, (t..2 * t).collect(), "every deadline in [t, 2t) occurs");
    }

    #[test]
    fn a_follower_campaigns_only_when_its_randomized_deadline_passes() {
        let mut n = node(1);
        let deadline = n.election_deadline_ticks;
        for _ in 1..deadline {
            n.tick();
        }
        assert_eq!(n.role(), Role::Follower);
        assert!(n.msgs.is_empty(), "no Prepare before the deadline");
        n.tick();
        assert_eq!(n.role(), Role::Candidate);
        let b = Ballot::new(1, 1);
        let prepares: Vec<_> = sent(&mut n).into_iter().collect();
        assert_eq!(
            prepares,
            vec![
                (
                    2,
                    Message::Prepare {
                        ballot: b,
                        first_unchosen: 1
                    }
                ),
                (
                    3,
                    Message::Prepare {
                        ballot: b,
                        first_unchosen: 1
                    }
                ),
            ]
        );
    }

    /// Node 1 of {1,2,3}, built from `seed`, that has just heard node 2 lead ballot 1.2.
    fn follower_of_2(seed: u64) -> PaxosNode<MemStorage> {
        let mut n = node_with(1, MemStorage::new_with_membership(voters3()), seed, |_| {});
        let heartbeat = Message::Heartbeat {
            ballot: Ballot::new(1, 2),
            commit: 0,
            read_round: 0,
        };
        deliver(&mut n, 2, heartbeat);
        flush(&mut n);
        assert_eq!((n.role(), n.leader()), (Role::Follower, Some(2)));
        n
    }

    fn ticks_until_candidate(n: &mut PaxosNode<MemStorage>) -> u64 {
        for ticks in 1..=1_000 {
            n.tick();
            if n.role() == Role::Candidate {
                return ticks;
            }
        }
        panic!("node {} never campaigned", n.id());
    }

    #[test]
    fn a_hint_about_the_leader_starts_phase_1_one_heartbeat_interval_and_one_to_three_ticks_later() {
        let heartbeat_ticks = PaxosConfig::new(1).heartbeat_interval_ticks;
        let window = heartbeat_ticks + 1..=heartbeat_ticks + CONNECTION_LOST_CAMPAIGN_TICKS_MAX;
        let mut delays = std::collections::BTreeSet::new();
        for seed in 0..60 {
            let mut n = follower_of_2(seed);
            Engine::report_connection_lost(&mut n, 2);
            assert_eq!(n.leader(), None, "seed {seed}: the leader is forgotten");
            let ticks = ticks_until_candidate(&mut n);
            assert!(window.contains(&ticks), "seed {seed}: {ticks} ticks");
            delays.insert(ticks);
            let prepare = Message::Prepare {
                ballot: Ballot::new(2, 1),
                first_unchosen: 1,
            };
            assert_eq!(sent(&mut n), vec![(2, prepare.clone()), (3, prepare)]);
            assert!(!n.election_deadline_shortened, "a retry waits a full deadline");
        }
        assert_eq!(delays, window.collect());
    }

    #[test]
    fn a_hint_about_a_non_leader_changes_nothing_not_even_the_random_draws() {
        let mut n = follower_of_2(5);
        let (deadline, rng) = (n.election_deadline_ticks, n.rng.clone());
        Engine::report_connection_lost(&mut n, 3);
        assert_eq!(n.leader(), Some(2));
        assert_eq!((n.election_deadline_ticks, &n.rng), (deadline, &rng));

        let mut candidate = node(1);
        candidate.campaign_now();
        let (deadline, rng) = (candidate.election_deadline_ticks, candidate.rng.clone());
        Engine::report_connection_lost(&mut candidate, 2);
        assert_eq!(candidate.role(), Role::Candidate);
        assert_eq!(
            (candidate.election_deadline_ticks, &candidate.rng),
            (deadline, &rng)
        );
    }

    #[test]
    fn the_leaders_next_heartbeat_after_a_wrong_hint_restores_a_full_deadline() {
        let t = PaxosConfig::new(1).election_timeout_ticks;
        for seed in 0..20 {
            let mut n = follower_of_2(seed);
            Engine::report_connection_lost(&mut n, 2);
            assert!(n.election_deadline_shortened, "seed {seed}");
            n.tick();
            let heartbeat = Message::Heartbeat {
                ballot: Ballot::new(1, 2),
                commit: 0,
                read_round: 0,
            };
            deliver(&mut n, 2, heartbeat);
            assert_eq!(n.leader(), Some(2));
            assert!(!n.election_deadline_shortened);
            assert!((t..2 * t).contains(&n.election_deadline_ticks), "seed {seed}");
            assert!(ticks_until_candidate(&mut n) >= t, "seed {seed}");
        }
    }

    #[test]
    fn a_leader_resends_from_what_a_peer_whose_connection_closed_acknowledged() {
        let mut l = leader_of(node(1));
        l.propose_entry(value("a")).expect("leader");
        flush(&mut l);
        let next = |l: &PaxosNode<MemStorage>| l.leadership.as_ref().unwrap().peers[&3].next;
        assert_eq!(next(&l), 2, "slot 1 is in flight to node 3");
        Engine::report_connection_lost(&mut l, 3);
        assert_eq!(next(&l), 1, "resend slot 1 to node 3");
        assert!(l.is_leader());
    }

    #[test]
    fn a_leader_heartbeats_every_interval_not_every_tick() {
        let mut n = leader_of(node_with(1, MemStorage::new_with_membership(voters3()), 7, |c| {
            c.heartbeat_interval_ticks = 3;
        }));
        let b = n.leading_ballot().unwrap();
        n.tick();
        n.tick();
        assert!(n.msgs.is_empty(), "no heartbeat before the interval");
        n.tick();
        let hb = |to| {
            (
                to,
                Message::Heartbeat {
                    ballot: b,
                    commit: 0,
                    read_round: 0,
                },
            )
        };
        assert_eq!(sent(&mut n), vec![hb(2), hb(3)]);
    }

    #[test]
    fn a_higher_prepare_deposes_a_leader_and_names_the_new_proposer() {
        let mut n = leader_of(node(1));
        let higher = Ballot::new(5, 2);
        deliver(
            &mut n,
            2,
            Message::Prepare {
                ballot: higher,
                first_unchosen: 1,
            },
        );
        assert_eq!(n.role(), Role::Follower);
        assert_eq!(n.leader(), Some(2));
        assert_eq!(n.leading_ballot(), None);
        assert_eq!(n.promised(), higher);
    }

    #[test]
    fn a_higher_prepare_ends_a_candidacy_and_names_the_new_proposer() {
        let mut n = node(1);
        n.campaign_now();
        flush(&mut n);
        let higher = Ballot::new(5, 2);
        deliver(
            &mut n,
            2,
            Message::Prepare {
                ballot: higher,
                first_unchosen: 1,
            },
        );
        assert_eq!(n.role(), Role::Follower);
        assert!(n.candidacy.is_none());
        assert_eq!(n.leader(), Some(2));
        let ready = flush(&mut n);
        assert_eq!(
            ready.soft_state,
            Some(SoftState {
                leader: Some(2),
                role: Role::Follower
            })
        );
    }

    #[test]
    fn messages_not_for_this_node_or_from_outsiders_or_itself_are_dropped() {
        let mut n = node(2);
        let prepare = Message::Prepare {
            ballot: Ballot::new(1, 1),
            first_unchosen: 1,
        };
        n.step(Envelope {
            from: 1,
            to: 3,
            msg: prepare.clone(),
        });
        n.step(Envelope {
            from: 9,
            to: 2,
            msg: prepare.clone(),
        });
        n.step(Envelope {
            from: 2,
            to: 2,
            msg: prepare,
        });
        assert_eq!(n.promised(), Ballot::ZERO);
        assert!(n.msgs.is_empty());
    }

    #[test]
    fn a_nack_carrying_our_own_ballot_does_not_stop_our_candidacy() {
        // Our older Prepare was refused by an acceptor that had since promised our newer ballot.
        let mut n = node(1);
        n.campaign_now();
        n.campaign_now();
        let mine = n.promised();
        assert_eq!(mine, Ballot::new(2, 1));
        flush(&mut n);
        deliver(&mut n, 2, Message::Nack { promised: mine });
        assert_eq!(n.role(), Role::Candidate);
        deliver(
            &mut n,
            2,
            Message::Nack {
                promised: Ballot::new(2, 2),
            },
        );
        assert_eq!(n.role(), Role::Follower);
        assert_eq!(n.leader(), Some(2));
    }

    #[test]
    fn a_stale_timeout_now_is_ignored_and_a_leader_ignores_any() {
        let mut n = node(1);
        deliver(
            &mut n,
            3,
            Message::Prepare {
                ballot: Ballot::new(3, 3),
                first_unchosen: 1,
            },
        );
        flush(&mut n);
        deliver(
            &mut n,
            2,
            Message::TimeoutNow {
                ballot: Ballot::new(1, 2),
            },
        );
        assert_eq!(n.role(), Role::Follower);
        assert!(n.msgs.is_empty());
        deliver(
            &mut n,
            3,
            Message::TimeoutNow {
                ballot: Ballot::new(3, 3),
            },
        );
        assert_eq!(n.role(), Role::Candidate, "a current TimeoutNow starts phase 1");

        let mut l = leader_of(node(1));
        let b = l.promised();
        deliver(
            &mut l,
            2,
            Message::TimeoutNow {
                ballot: Ballot::new(9, 2),
            },
        );
        assert!(l.is_leader());
        assert_eq!(l.promised(), b);
        assert!(l.msgs.is_empty());
    }

    #[test]
    fn engine_trait_methods_reach_the_node() {
        let mut n = node(1);
        assert_eq!(Engine::id(&n), 1);
        let deadline = n.election_deadline_ticks;
        for _ in 0..deadline {
            Engine::tick(&mut n);
        }
        assert_eq!(n.role(), Role::Candidate);
        let ballot = n.promised();
        flush(&mut n);
        Engine::step(
            &mut n,
            Envelope {
                from: 2,
                to: 1,
                msg: Message::Promise {
                    ballot,
                    commit: 0,
                    accepted: Vec::new(),
                    snapshot: None,
                },
            },
        );
        assert!(n.is_leader());
        let mut f = node(2);
        assert!(!f.is_leader());
        f.campaign_now();
        assert!(!f.is_leader(), "a candidate is not a leader");
    }
}
