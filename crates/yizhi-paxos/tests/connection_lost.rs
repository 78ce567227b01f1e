//! The lost-connection hint on a Multi-Paxos cluster: a leader whose process died is replaced
//! within a few ticks instead of an election timeout, and a wrong hint about a live leader is
//! cancelled by its next heartbeat (acceptors here promise any higher ballot, so nothing else
//! would stop the early phase 1).

use yizhi_engine::{Engine, NodeId};
use yizhi_paxos::testkit::MemCluster;
use yizhi_paxos::{CONNECTION_LOST_CAMPAIGN_TICKS_MAX, PaxosConfig};

const VOTERS: [NodeId; 3] = [1, 2, 3];

/// Ticks every node in turn (their clocks are not in step), settling after each, until a node
/// other than `old` leads; returns the rounds that took.
fn rounds_until_another_leads(c: &mut MemCluster, old: NodeId) -> u64 {
    for round in 1..=1_000 {
        for id in VOTERS.into_iter().filter(|&id| id != old) {
            c.node_mut(id).tick();
            c.settle();
        }
        if c.leader().is_some_and(|l| l != old) {
            return round;
        }
    }
    panic!("no new leader in 1000 rounds");
}

#[test]
fn a_crashed_leader_is_replaced_within_the_short_window_when_followers_are_told() {
    let defaults = PaxosConfig::new(1);
    let bound = defaults.heartbeat_interval_ticks + CONNECTION_LOST_CAMPAIGN_TICKS_MAX;
    for seed in 0..30 {
        let mut hinted = MemCluster::new(&VOTERS, &[], seed, |_| {});
        let mut unhinted = MemCluster::new(&VOTERS, &[], seed, |_| {});
        for c in [&mut hinted, &mut unhinted] {
            assert_eq!(c.campaign(1), Some(1), "seed {seed}");
            c.node_mut(1).tick();
            c.settle();
            c.crash(1);
        }
        hinted.node_mut(2).report_connection_lost(1);
        hinted.node_mut(3).report_connection_lost(1);
        let rounds = rounds_until_another_leads(&mut hinted, 1);
        assert!(rounds <= bound, "seed {seed}: hinted, {rounds} ticks");
        let rounds = rounds_until_another_leads(&mut unhinted, 1);
        assert!(
            rounds >= defaults.election_timeout_ticks,
            "seed {seed}: unhinted, {rounds} ticks"
        );
    }
}

#[test]
fn a_wrong_hint_about_a_live_leader_is_cancelled_by_its_next_heartbeat() {
    for seed in 0..30 {
        let mut c = MemCluster::new(&VOTERS, &[], seed, |_| {});
        assert_eq!(c.campaign(1), Some(1), "seed {seed}");
        let ballot = c.node(1).leading_ballot();
        c.node_mut(2).report_connection_lost(1);
        for _ in 0..50 {
            c.tick_all();
            c.settle();
        }
        assert_eq!(c.leader(), Some(1), "seed {seed}");
        assert_eq!(c.node(1).leading_ballot(), ballot, "seed {seed}: no new ballot");
        assert_eq!(c.node(2).leader(), Some(1), "seed {seed}");
    }
}
