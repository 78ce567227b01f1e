//! Handler-level tests: one node, driven through `step`/`tick`, judged by the exact messages,
//! `Ready` fields and state it produces. Helpers here are shared by the other modules' tests.

use bytes::Bytes;
use yizhi_engine::{Engine, Entry, EntryPayload, Envelope, MemStorage, Membership, Ready, Role, SeededRng};

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
    yizhi_engine::testkit::persist(n.storage_mut(), &ready);
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

// One-line message builders, fields in declaration order, so that a scenario reads as its
// sequence of messages.

pub(crate) fn prepare(ballot: Ballot, first_unchosen: LogIndex) -> Message {
    Message::Prepare {
        ballot,
        first_unchosen,
    }
}

pub(crate) fn promise(
    ballot: Ballot,
    commit: LogIndex,
    accepted: Vec<Entry>,
    snapshot: Option<Snapshot>,
) -> Message {
    Message::Promise {
        ballot,
        commit,
        accepted,
        snapshot,
    }
}

pub(crate) fn accept(ballot: Ballot, commit: LogIndex, entries: Vec<Entry>) -> Message {
    Message::Accept {
        ballot,
        commit,
        entries,
    }
}

pub(crate) fn accepted(ballot: Ballot, matched: LogIndex, run_last: LogIndex) -> Message {
    Message::Accepted {
        ballot,
        matched,
        run_last,
    }
}

pub(crate) fn heartbeat(ballot: Ballot, commit: LogIndex, read_round: u64) -> Message {
    Message::Heartbeat {
        ballot,
        commit,
        read_round,
    }
}

pub(crate) fn heartbeat_ack(ballot: Ballot, matched: LogIndex, read_round: u64) -> Message {
    Message::HeartbeatAck {
        ballot,
        matched,
        read_round,
    }
}

pub(crate) fn timeout_now(ballot: Ballot) -> Message {
    Message::TimeoutNow { ballot }
}

/// The soft state of a follower of `leader`.
pub(crate) fn follower_of(leader: NodeId) -> Option<SoftState> {
    Some(SoftState {
        leader: Some(leader),
        role: Role::Follower,
    })
}

/// The messages a `Ready` sends, without their addresses.
pub(crate) fn messages(ready: Ready<Message>) -> Vec<Message> {
    ready.messages.into_iter().map(|e| e.msg).collect()
}

/// Node 1 of {1,2,3}, started with `tune`, leading (see [`leader_of`]).
pub(crate) fn tuned_leader(tune: impl Fn(&mut PaxosConfig)) -> PaxosNode<MemStorage> {
    leader_of(node_with(1, MemStorage::new_with_membership(voters3()), 7, tune))
}

/// Node 1 leading, with proposals "a" and "b" in slots 1 and 2 (not yet sent). Returns its ballot.
pub(crate) fn leader_with_two_proposals() -> (PaxosNode<MemStorage>, Ballot) {
    let mut n = leader_of(node(1));
    let b = n.leading_ballot().unwrap();
    n.propose(value("a")).unwrap();
    n.propose(value("b")).unwrap();
    (n, b)
}

/// Slots 1, 2 and 3 holding "a", "b" and "c", accepted in `ballot`.
pub(crate) fn slots_abc(ballot: Ballot) -> Vec<Entry> {
    vec![
        entry(1, ballot, "a"),
        entry(2, ballot, "b"),
        entry(3, ballot, "c"),
    ]
}

/// Node 1 of {1,2,3} having started phase 1 (that Ready handled), and the ballot it prepared.
pub(crate) fn candidate() -> (PaxosNode<MemStorage>, Ballot) {
    let mut n = node(1);
    n.campaign_now();
    let b = n.promised();
    flush(&mut n);
    (n, b)
}

/// Node `id` of {1,2,3} wins phase 1 with node 2's promise; its first Ready is handled.
pub(crate) fn leader_of(mut n: PaxosNode<MemStorage>) -> PaxosNode<MemStorage> {
    n.campaign_now();
    let ballot = n.promised();
    flush(&mut n);
    deliver(&mut n, 2, promise(ballot, 0, Vec::new(), None));
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
    deliver(&mut n, 1, timeout_now(Ballot::new(5, 1)));
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
    assert_eq!(prepares, vec![(2, prepare(b, 1)), (3, prepare(b, 1)),]);
}

/// Node 1 of {1,2,3}, built from `seed`, that has just heard node 2 lead ballot 1.2.
fn follower_of_2(seed: u64) -> PaxosNode<MemStorage> {
    let mut n = node_with(1, MemStorage::new_with_membership(voters3()), seed, |_| {});
    let heartbeat = heartbeat(Ballot::new(1, 2), 0, 0);
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
        let prepare = prepare(Ballot::new(2, 1), 1);
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
        let heartbeat = heartbeat(Ballot::new(1, 2), 0, 0);
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
    let mut n = tuned_leader(|c| c.heartbeat_interval_ticks = 3);
    let b = n.leading_ballot().unwrap();
    n.tick();
    n.tick();
    assert!(n.msgs.is_empty(), "no heartbeat before the interval");
    n.tick();
    let hb = |to| (to, heartbeat(b, 0, 0));
    assert_eq!(sent(&mut n), vec![hb(2), hb(3)]);
}

#[test]
fn a_higher_prepare_deposes_a_leader_and_names_the_new_proposer() {
    let mut n = leader_of(node(1));
    let higher = Ballot::new(5, 2);
    deliver(&mut n, 2, prepare(higher, 1));
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
    deliver(&mut n, 2, prepare(higher, 1));
    assert_eq!(n.role(), Role::Follower);
    assert!(n.candidacy.is_none());
    assert_eq!(n.leader(), Some(2));
    let ready = flush(&mut n);
    assert_eq!(ready.soft_state, follower_of(2));
}

#[test]
fn messages_not_for_this_node_or_from_outsiders_or_itself_are_dropped() {
    let mut n = node(2);
    let prepare = prepare(Ballot::new(1, 1), 1);
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
    deliver(&mut n, 3, prepare(Ballot::new(3, 3), 1));
    flush(&mut n);
    deliver(&mut n, 2, timeout_now(Ballot::new(1, 2)));
    assert_eq!(n.role(), Role::Follower);
    assert!(n.msgs.is_empty());
    deliver(&mut n, 3, timeout_now(Ballot::new(3, 3)));
    assert_eq!(n.role(), Role::Candidate, "a current TimeoutNow starts phase 1");

    let mut l = leader_of(node(1));
    let b = l.promised();
    deliver(&mut l, 2, timeout_now(Ballot::new(9, 2)));
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
            msg: promise(ballot, 0, Vec::new(), None),
        },
    );
    assert!(n.is_leader());
    let mut f = node(2);
    assert!(!f.is_leader());
    f.campaign_now();
    assert!(!f.is_leader(), "a candidate is not a leader");
}
