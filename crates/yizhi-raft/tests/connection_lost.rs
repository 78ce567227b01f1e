//! The lost-connection hint (`Engine::report_connection_lost`): when the transport sees the
//! leader's connection close, a follower stops waiting out its election timeout (paper §5.2) and
//! campaigns after a short random delay. PreVote (thesis §9.6) and the followers' CheckQuorum
//! stickiness (thesis §4.2.3) keep a wrong hint from disrupting a healthy leader, and lease reads
//! (thesis §6.4.1), which rely on that stickiness lasting a full timeout, ignore the hint.

mod common;

use std::collections::BTreeSet;

use common::*;
use yizhi_engine::{Engine, NodeId, Role, SeededRng, Term};
use yizhi_raft::testkit::MemCluster;
use yizhi_raft::{
    CONNECTION_LOST_CAMPAIGN_TICKS_MAX, MessageKind, ProgressState, RaftConfig, RaftNode, ReadMode,
};

const VOTERS: [NodeId; 3] = [1, 2, 3];
const ELECTION_TIMEOUT_TICKS: u64 = 10;

type Tune = fn(&mut RaftConfig);

/// Asserts that a campaign came only after a whole election timeout (`ticks` of them): no hint
/// shortened it. `why` names the case in the failure message.
fn assert_full_timeout(ticks: u64, why: &str) {
    assert!(ticks >= ELECTION_TIMEOUT_TICKS, "{why}, {ticks} ticks");
}

/// A healthy cluster: node 1 leads, every link up. Returns it with the leader's term.
fn healthy_cluster() -> (MemCluster, Term) {
    let cluster = MemCluster::new(&VOTERS, &[], 11, |_| {}).elected(1);
    let term = cluster.node(1).term();
    (cluster, term)
}

fn lease_reads(config: &mut RaftConfig) {
    config.read_mode = ReadMode::LeaseBased;
}

/// Node 2 of {1, 2, 3}, built with its own RNG seed, that has just heard node 1 lead term 1.
fn follower_of_1(seed: u64, tune: impl Fn(&mut RaftConfig)) -> Node {
    let mut config = RaftConfig::new(2);
    tune(&mut config);
    let storage = storage_with(&VOTERS, &[], &[], hard_state(0, None, 0));
    let mut node = RaftNode::new(config, storage, SeededRng::new(seed)).expect("valid test node");
    node.step(envelope(1, 2, 1, MessageKind::Heartbeat { commit: 0, round: 1 }));
    handle_ready(&mut node);
    assert_eq!(
        (node.role(), node.term(), node.leader()),
        (Role::Follower, 1, Some(1))
    );
    node
}

fn pre_vote_from_3_for_term_2() -> yizhi_engine::Envelope<yizhi_raft::Message> {
    let pre_vote = MessageKind::PreVote {
        last_index: 0,
        last_term: 0,
    };
    envelope(3, 2, 2, pre_vote)
}

/// Paper §5.2 with the hint: the follower forgets the leader and campaigns (PreVote first) after
/// 1..=3 ticks instead of 10..20; over many seeds every delay in the window occurs.
#[test]
fn hint_about_the_leader_makes_a_follower_campaign_within_the_short_window() {
    let mut delays = BTreeSet::new();
    for seed in 0..60 {
        let mut node = follower_of_1(seed, defaults);
        node.report_connection_lost(1);
        assert_eq!(node.leader(), None, "seed {seed}: the leader is forgotten");
        let ticks = tick_until_campaign(&mut node);
        assert!(
            (1..=CONNECTION_LOST_CAMPAIGN_TICKS_MAX).contains(&ticks),
            "seed {seed}: campaigned after {ticks} ticks"
        );
        delays.insert(ticks);
        let pre_vote = MessageKind::PreVote {
            last_index: 0,
            last_term: 0,
        };
        assert_eq!(node.role(), Role::PreCandidate);
        assert_eq!(
            sent(&handle_ready(&mut node)),
            vec![(1, 2, pre_vote.clone()), (3, 2, pre_vote)]
        );
    }
    assert_eq!(delays, (1..=CONNECTION_LOST_CAMPAIGN_TICKS_MAX).collect());
}

/// The short delay is for one campaign: a pre-candidate nobody answers (a partition, not a dead
/// leader) retries only after a full timeout, as it would have without the hint.
#[test]
fn an_unanswered_early_campaign_is_retried_after_a_full_timeout() {
    for seed in 0..20 {
        let mut node = follower_of_1(seed, defaults);
        node.report_connection_lost(1);
        tick_until_campaign(&mut node);
        handle_ready(&mut node);
        let mut ticks = 0;
        while ready_pre_votes(&mut node) == 0 {
            node.tick();
            ticks += 1;
            assert!(ticks < MAX_TICKS_TO_CAMPAIGN, "seed {seed}: never retried");
        }
        assert!(
            ticks >= ELECTION_TIMEOUT_TICKS,
            "seed {seed}: retried after {ticks} ticks"
        );
    }
}

fn ready_pre_votes(node: &mut Node) -> usize {
    let ready = handle_ready(node);
    let pre_votes = sent(&ready)
        .into_iter()
        .filter(|(_, _, kind)| matches!(kind, MessageKind::PreVote { .. }));
    pre_votes.count()
}

/// A hint about a node that does not lead changes nothing, not even the random draws.
#[test]
fn hint_about_another_node_changes_nothing() {
    for seed in 0..20 {
        let mut hinted = follower_of_1(seed, defaults);
        let mut twin = follower_of_1(seed, defaults);
        hinted.report_connection_lost(3);
        assert_eq!(hinted.leader(), Some(1));
        let ticks = tick_until_campaign(&mut hinted);
        assert!(ticks >= ELECTION_TIMEOUT_TICKS, "seed {seed}: {ticks} ticks");
        assert_eq!(ticks, tick_until_campaign(&mut twin), "seed {seed}");
    }
}

/// Thesis §4.2.3: a follower that heard from its leader within the election timeout ignores
/// (pre-)vote requests. Once told the leader's connection closed it no longer speaks for that
/// leader: the same pre-vote is granted (in the asked-for term, changing no term or vote), and so
/// is the vote that follows.
#[test]
fn thesis_4_2_3_hinted_follower_grants_the_pre_vote_it_refused() {
    let mut node = follower_of_1(7, defaults);
    node.step(pre_vote_from_3_for_term_2());
    let ready = handle_ready(&mut node);
    assert_eq!(sent(&ready), vec![], "refused while the leader is recent");

    node.report_connection_lost(1);
    let pre_vote = pre_vote_from_3_for_term_2();
    let ready = step_expecting(&mut node, pre_vote, &[pre_vote_response(3, 2, true)]);
    assert_eq!(ready.hard_state, None, "a pre-vote changes no term or vote");

    let vote = envelope(3, 2, 2, vote_request(0, 0, false));
    let ready = step_expecting(&mut node, vote, &[vote_response(3, 2, true)]);
    assert_eq!(ready.hard_state, Some(hard_state(2, Some(3), 0)));
}

/// A wrong hint (the leader is alive): the leader's next message makes the node its follower
/// again and restores a full election timeout, whether it arrives before the short delay runs
/// out or after the node became a pre-candidate.
#[test]
fn the_leaders_next_message_restores_the_follower_and_its_full_timeout() {
    for seed in 0..20 {
        let mut node = follower_of_1(seed, defaults);
        node.report_connection_lost(1);
        node.step(envelope(1, 2, 1, MessageKind::Heartbeat { commit: 0, round: 2 }));
        assert_eq!(node.leader(), Some(1));
        let ticks = tick_until_campaign(&mut node);
        assert_full_timeout(ticks, &format!("seed {seed}: heartbeat first"));

        let mut node = follower_of_1(seed, defaults);
        node.report_connection_lost(1);
        tick_until_campaign(&mut node);
        handle_ready(&mut node);
        node.step(envelope(1, 2, 1, MessageKind::Heartbeat { commit: 0, round: 2 }));
        assert_eq!((node.role(), node.leader()), (Role::Follower, Some(1)));
        let ticks = tick_until_campaign(&mut node);
        assert_full_timeout(ticks, &format!("seed {seed}: pre-candidate first"));
    }
}

/// A hint on one follower only: it campaigns early, but the leader and the other follower, which
/// still hear the leader, ignore its pre-votes (thesis §9.6, §4.2.3). Nobody's term moves and the
/// leader's next heartbeat brings the pre-candidate back.
#[test]
fn a_wrong_hint_on_one_follower_does_not_disrupt_a_healthy_leader() {
    let (mut cluster, term) = healthy_cluster();

    cluster.node_mut(2).report_connection_lost(1);
    let ticks = tick_until_campaign(cluster.node_mut(2));
    assert!(ticks <= CONNECTION_LOST_CAMPAIGN_TICKS_MAX);
    cluster.record_deliveries = true;
    cluster.settle();
    let answers: Vec<_> = cluster.delivered_log.iter().filter(|e| e.to == 2).collect();
    assert!(answers.is_empty(), "pre-votes were answered: {answers:?}");
    assert_eq!(cluster.node(2).role(), Role::PreCandidate);

    tick_all_and_settle(&mut cluster, 1);
    for id in VOTERS {
        assert_eq!(
            (cluster.node(id).term(), cluster.node(id).leader()),
            (term, Some(1)),
            "node {id}"
        );
    }
    assert_eq!(cluster.node(2).role(), Role::Follower);
}

/// Thesis §6.4.1: a leader's lease relies on every follower that acknowledged it refusing other
/// candidates for a full election timeout, so with lease reads the hint is ignored. So it is
/// without PreVote or without CheckQuorum (thesis §9.6, §4.2.3), where nothing would stop a wrong
/// hint from deposing a healthy leader. The leader is kept and the timeout (and every random
/// draw) unchanged.
#[test]
fn thesis_6_4_1_9_6_without_lease_safe_pre_vote_and_check_quorum_the_hint_is_ignored() {
    let settings: [(&str, Tune); 3] = [
        ("lease reads", lease_reads),
        ("no PreVote", |c| c.pre_vote = false),
        ("no CheckQuorum", |c| c.check_quorum = false),
    ];
    for (name, tune) in settings {
        for seed in 0..20 {
            let mut node = follower_of_1(seed, tune);
            let mut twin = follower_of_1(seed, tune);
            node.report_connection_lost(1);
            assert_eq!(node.leader(), Some(1), "{name}, seed {seed}");
            let ticks = tick_until_campaign(&mut node);
            assert!(
                ticks >= ELECTION_TIMEOUT_TICKS,
                "{name}, seed {seed}: {ticks} ticks"
            );
            assert_eq!(ticks, tick_until_campaign(&mut twin), "{name}, seed {seed}");
        }
    }
    let mut node = follower_of_1(3, lease_reads);
    node.report_connection_lost(1);
    node.step(pre_vote_from_3_for_term_2());
    assert_eq!(sent(&handle_ready(&mut node)), vec![], "the lease still refuses");
}

/// Ticks nodes 2 and 3 one after the other (their clocks are not in step), settling after each,
/// until one of them leads; returns the rounds of ticks that took.
fn rounds_until_2_or_3_leads(cluster: &mut MemCluster) -> u64 {
    for round in 1..=MAX_TICKS_TO_CAMPAIGN {
        for id in VOTERS {
            cluster.tick(id);
            cluster.settle();
        }
        if matches!(cluster.leader(), Some(2 | 3)) {
            return round;
        }
    }
    panic!("no new leader in {MAX_TICKS_TO_CAMPAIGN} rounds");
}

/// The failover the hint exists for: the leader's process dies (its links go silent) and both
/// followers are told. A new leader is elected within four ticks instead of 10..20; without the
/// hints the same schedule waits out the election timeout (so this test can fail).
#[test]
fn leader_lost_with_hints_a_new_leader_is_elected_within_four_ticks() {
    for seed in 0..30 {
        let mut hinted = MemCluster::new(&VOTERS, &[], seed, |_| {});
        let mut unhinted = MemCluster::new(&VOTERS, &[], seed, |_| {});
        for cluster in [&mut hinted, &mut unhinted] {
            assert_eq!(cluster.campaign(1), Some(1), "seed {seed}");
            cluster.isolate(1);
        }
        let old_term = hinted.node(1).term();
        hinted.node_mut(2).report_connection_lost(1);
        hinted.node_mut(3).report_connection_lost(1);

        let rounds = rounds_until_2_or_3_leads(&mut hinted);
        assert!(rounds <= 4, "seed {seed}: hinted, {rounds} ticks");
        let leader = hinted.leader().expect("a new leader");
        assert_eq!(
            hinted.node(leader).term(),
            old_term + 1,
            "seed {seed}: one election"
        );
        let rounds = rounds_until_2_or_3_leads(&mut unhinted);
        assert_full_timeout(rounds, &format!("seed {seed}: unhinted"));
    }
}

/// A leader takes the hint as `report_unreachable`: what was in flight to that follower is likely
/// lost, so it probes before sending a window again. Its own role and term are untouched.
#[test]
fn a_leader_probes_a_follower_whose_connection_closed() {
    let (mut cluster, term) = healthy_cluster();
    let state = |cluster: &MemCluster| cluster.node(1).progress_of(2).map(|p| p.state);
    assert_eq!(state(&cluster), Some(ProgressState::Replicate));
    cluster.node_mut(1).report_connection_lost(2);
    assert_eq!(state(&cluster), Some(ProgressState::Probe));
    assert_eq!(
        (cluster.node(1).role(), cluster.node(1).term()),
        (Role::Leader, term)
    );
}
