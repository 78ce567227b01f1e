//! Raft paper §5.4 (safety): the current-term commit rule of Figure 8, leader completeness, commit
//! monotonicity, and the Ready contract that makes votes and acknowledgements durable before
//! anyone hears of them.

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use common::*;
use yizhi_engine::{Engine, LogIndex, LogStorage, NodeId, Role, SeededRng, Term};
use yizhi_raft::MessageKind;
use yizhi_raft::testkit::MemCluster;

const FIVE: [NodeId; 5] = [1, 2, 3, 4, 5];

/// §5.4.2, Figure 8 (c)→(e), from S1's point of view. S1 led term 2 and wrote index 2; S5 led
/// term 3 and wrote its own index 2 elsewhere. S1 is now elected for term 4 and copies its term-2
/// entry onto S3 and S4: it sits on a majority (S1, S3, S4) — and still must not commit, since S5
/// could be elected and overwrite it (Figure 8 (d)). Only when the term-4 no-op after it reaches a
/// majority do both commit (Figure 8 (e)).
#[test]
fn paper_5_4_2_figure_8_leader_commits_earlier_term_only_through_its_own_entry() {
    // One entry per append, so S1 can copy index 2 without index 3.
    let mut s1 = node_with_log(1, &FIVE, &[1, 2], hard_state(3, None, 1), |c| {
        paper_only(c);
        c.max_msg_bytes = 1;
    });
    let ready = elect_alone(&mut s1, &FIVE);
    assert_eq!((s1.term(), ready.entries.clone()), (4, vec![noop(3, 4)]));

    // S3 and S4 hold only index 1; each refuses the probe and then receives entry (2, 2) alone.
    for follower in [3, 4] {
        s1.step(envelope(follower, 1, 4, rejected(2, 1, 1)));
        let ready = handle_ready(&mut s1);
        assert_eq!(
            sent(&ready),
            vec![(follower, 4, append(1, 1, vec![noop(2, 2)], 1))]
        );
        s1.step(envelope(follower, 1, 4, accepted(2)));
        let ready = handle_ready(&mut s1);
        assert!(
            ready.committed_entries.is_empty(),
            "S{follower} acked 2: nothing commits"
        );
    }
    assert_eq!(
        s1.committed(),
        1,
        "Figure 8 (c): entry (2, 2) is on S1, S3 and S4, a majority, yet it is not committed"
    );
    assert_eq!(s1.storage().hard_state().commit, 1);

    s1.step(envelope(3, 1, 4, accepted(3)));
    handle_ready(&mut s1);
    assert_eq!(s1.committed(), 1, "(3, 4) is on S1 and S3 only");
    s1.step(envelope(4, 1, 4, accepted(3)));
    let ready = handle_ready(&mut s1);
    assert_eq!(
        s1.committed(),
        3,
        "Figure 8 (e): (3, 4) on a majority commits it and all before it"
    );
    let applied: Vec<(LogIndex, Term)> = ready
        .committed_entries
        .iter()
        .map(|e| (e.index, e.term))
        .collect();
    assert_eq!(applied, vec![(2, 2), (3, 4)]);
}

/// §5.4.2, Figure 8 (d): why counting replicas of (2, 2) was unsafe. A server holding it votes for
/// S5, whose log ends with (2, 3), because a later last term is more up to date (§5.4.1).
#[test]
fn paper_5_4_2_figure_8_d_entry_of_earlier_term_on_a_majority_can_still_be_overwritten() {
    let mut s3 = node_with_log(3, &FIVE, &[1, 2], hard_state(4, Some(1), 1), paper_only);
    let request = envelope(5, 3, 5, vote_request(2, 3, false));
    step_expecting(&mut s3, request, &[vote_response(5, 5, true)]);
    // S5 then leads term 5 and replaces (2, 2) on S3.
    s3.step(envelope(5, 3, 5, append(1, 1, vec![noop(2, 3), noop(3, 5)], 1)));
    handle_ready(&mut s3);
    let terms: Vec<Term> = s3.storage().all_entries().iter().map(|e| e.term).collect();
    assert_eq!(terms, vec![1, 3, 5]);
}

/// The Ready contract (paper Figure 2: "respond after persisting"): the vote a node grants is in
/// the `hard_state` of the very `Ready` whose messages carry the grant, with `must_sync` set, so
/// the runtime cannot send the grant before the vote is durable.
#[test]
fn paper_5_4_vote_is_persisted_in_the_same_ready_that_sends_the_grant() {
    let mut node = fresh_node(1, &[1, 2, 3], paper_only);
    node.step(envelope(
        2,
        1,
        1,
        MessageKind::Vote {
            last_index: 0,
            last_term: 0,
            transfer: false,
        },
    ));
    assert!(node.has_ready());
    let ready = node.ready();
    assert_eq!(
        sent(&ready),
        vec![(2, 1, MessageKind::VoteResponse { granted: true })]
    );
    assert_eq!(ready.hard_state, Some(hard_state(1, Some(2), 0)));
    assert!(ready.must_sync, "a vote must be fsynced, not just written");
    persist(&mut node, &ready);
    node.advance();
    assert!(!node.has_ready(), "nothing left: the grant was not queued twice");
}

/// Same contract for appends: the acknowledgement leaves in the Ready that persists the entries.
#[test]
fn paper_5_4_append_ack_travels_with_the_entries_it_acknowledges() {
    let mut node = fresh_node(2, &[1, 2, 3], paper_only);
    node.step(envelope(1, 2, 1, append(0, 0, vec![noop(1, 1), noop(2, 1)], 0)));
    let ready = node.ready();
    assert_eq!(ready.entries, vec![noop(1, 1), noop(2, 1)]);
    assert!(ready.must_sync);
    assert_eq!(sent(&ready), vec![(1, 1, accepted(2))]);
    assert_eq!(
        node.storage().last_index(),
        0,
        "nothing is durable until the runtime writes it"
    );
}

/// The leader's own copy counts toward the commit quorum only after `advance()` says it is
/// durable (Ready step 1): with five voters, two follower acks plus an unpersisted leader entry
/// are not a majority.
#[test]
fn paper_5_4_leader_counts_its_own_entry_only_once_persisted() {
    let mut leader = fresh_node(1, &FIVE, paper_only);
    elect_alone(&mut leader, &FIVE);
    for follower in [2, 3] {
        leader.step(envelope(follower, 1, 1, accepted(1)));
    }
    handle_ready(&mut leader);
    assert_eq!(leader.committed(), 1, "the no-op is on three of five");

    let x = leader.propose(Bytes::from_static(b"x")).expect("leader");
    let ready = leader.ready();
    assert_eq!(ready.entries.len(), 1);
    for follower in [2, 3] {
        leader.step(envelope(follower, 1, 1, accepted(x.index)));
    }
    assert_eq!(leader.committed(), 1, "the leader's copy of x is not durable yet");
    persist(&mut leader, &ready);
    leader.advance();
    assert_eq!(leader.committed(), x.index, "now S1, S2, S3 hold x durably");
}

/// §5.4.3 Leader Completeness, §5.4.1, with a lagging node: after node 1 commits entries with
/// node 2 only, node 3 (which missed them) cannot be elected, and the node that is elected holds
/// every committed entry.
#[test]
fn paper_5_4_3_elected_leader_holds_every_committed_entry() {
    let mut cluster = MemCluster::new(&[1, 2, 3], &[], 5, paper_only).elected(1);
    cluster.isolate(3);
    for data in [&b"x"[..], b"y"] {
        cluster
            .node_mut(1)
            .propose(Bytes::copy_from_slice(data))
            .expect("leader");
    }
    cluster.settle();
    let committed = cluster.node(1).committed();
    assert_eq!((committed, cluster.node(2).committed()), (3, 3));
    assert_eq!(cluster.node(3).storage().last_index(), 1, "node 3 missed x and y");

    cluster.heal();
    cluster.isolate(1);
    cluster.campaign(3);
    assert_ne!(
        cluster.leader(),
        Some(3),
        "node 2 refuses node 3: its log is behind (§5.4.1)"
    );
    // Node 1 still believes it leads term 1 (no CheckQuorum here); wait for a leader of a later term.
    for _ in 0..MAX_TICKS_TO_CAMPAIGN {
        if cluster.node(2).role() == Role::Leader {
            break;
        }
        tick_all_and_settle(&mut cluster, 1);
    }
    let leader = 2;
    assert_eq!(
        cluster.node(leader).role(),
        Role::Leader,
        "node 2 is the only electable node"
    );
    let leader_log = durable_log(&cluster, leader);
    for (index, term) in durable_log(&cluster, 1).into_iter().take(committed as usize) {
        assert!(
            leader_log.contains(&(index, term)),
            "new leader {leader} lacks committed ({index}, {term})"
        );
    }
}

/// §5.4 as invariants under a seeded fault schedule: random ticks, proposals, partitions,
/// message drops, reordering, compaction and (sometimes) a learner. After every step: commit indexes never decrease, every applied
/// entry agrees across nodes (State Machine Safety), at most one leader per term (Election Safety),
/// and every leader holds every entry any node has applied (Leader Completeness). Finally the
/// network heals and a new proposal must commit everywhere (liveness).
#[test]
fn paper_5_4_safety_invariants_hold_under_seeded_faults() {
    for seed in 1..=300 {
        check_seed(seed);
    }
}

struct Observed {
    commit: BTreeMap<NodeId, LogIndex>,
    /// Applied index -> (its term, the highest term any node had when it was first seen applied).
    /// The entry was committed in a term no later than the second one.
    applied_terms: BTreeMap<LogIndex, (Term, Term)>,
    leader_of_term: BTreeMap<Term, NodeId>,
}

fn check_seed(seed: u64) {
    let mut rng = SeededRng::new(seed);
    let voters: Vec<NodeId> = (1..=if rng.chance(1, 2) { 3 } else { 5 }).collect();
    let (pre_vote, check_quorum) = (rng.chance(1, 2), rng.chance(1, 2));
    let learners: Vec<NodeId> = if rng.chance(1, 3) { vec![9] } else { vec![] };
    let mut cluster = MemCluster::new(&voters, &learners, seed, |c| {
        c.pre_vote = pre_vote;
        c.check_quorum = check_quorum;
        c.max_inflight_msgs = 4;
    });
    let mut seen = Observed {
        commit: BTreeMap::new(),
        applied_terms: BTreeMap::new(),
        leader_of_term: BTreeMap::new(),
    };
    let pick = |rng: &mut SeededRng| voters[rng.below(voters.len() as u64) as usize];
    for step in 0..400 {
        match rng.below(100) {
            0..30 => cluster.tick_all(),
            30..45 => {
                if let Some(leader) = cluster.leader() {
                    let _ = cluster.node_mut(leader).propose(Bytes::from(step.to_string()));
                }
            }
            45..49 => {
                let (a, b) = (pick(&mut rng), pick(&mut rng));
                if a != b {
                    cluster.cut_links.insert((a, b));
                }
            }
            49..51 => {
                let victim = pick(&mut rng);
                cluster.isolate(victim);
            }
            51..55 => cluster.heal(),
            55..60 if !cluster.in_flight.is_empty() => {
                let at = rng.below(cluster.in_flight.len() as u64) as usize;
                cluster.in_flight.remove(at);
            }
            // Compaction sends lagging nodes snapshots instead of entries (paper §7).
            66..68 => {
                let id = pick(&mut rng);
                let status = cluster.node(id).status();
                if status.applied > 0 {
                    let image = Bytes::from(status.applied.to_string());
                    cluster
                        .node_mut(id)
                        .storage_mut()
                        .compact(status.applied, status.membership, image);
                }
            }
            60..66 if cluster.in_flight.len() > 1 => {
                let len = cluster.in_flight.len() as u64;
                let (i, j) = (rng.below(len) as usize, rng.below(len) as usize);
                cluster.in_flight.swap(i, j);
            }
            _ => {
                for _ in 0..=rng.below(8) {
                    cluster.deliver_one();
                }
            }
        }
        cluster.process_all_ready();
        check_invariants(&cluster, &mut seen, seed, step);
    }
    cluster.heal();
    // Without PreVote a node that bumped its term while cut off disrupts the healed cluster once
    // (§9.6 exists for that), so liveness gets a few elections to show, not one.
    let committed_everywhere = (0..20).any(|_| {
        let leader = elect_by_ticking(&mut cluster);
        let Ok(position) = cluster
            .node_mut(leader)
            .propose(Bytes::from_static(b"after heal"))
        else {
            return false;
        };
        tick_all_and_settle(&mut cluster, 3);
        check_invariants(&cluster, &mut seen, seed, usize::MAX);
        voters.iter().all(|&id| {
            let node = cluster.node(id);
            node.committed() >= position.index && node.storage().term(position.index) == Ok(position.term)
        })
    });
    assert!(
        committed_everywhere,
        "seed {seed}: the healed cluster never committed a proposal everywhere"
    );
    check_invariants(&cluster, &mut seen, seed, usize::MAX);
}

fn check_invariants(cluster: &MemCluster, seen: &mut Observed, seed: u64, step: usize) {
    let at = format!("seed {seed} step {step}");
    let max_term = cluster.nodes.values().map(|n| n.term()).max().unwrap_or(0);
    for (&id, node) in &cluster.nodes {
        let previous = seen.commit.insert(id, node.committed()).unwrap_or(0);
        assert!(
            node.committed() >= previous,
            "{at}: node {id} commit went {previous} -> {}",
            node.committed()
        );
        for entry in &cluster.applied[&id] {
            let (term, _) = *seen
                .applied_terms
                .entry(entry.index)
                .or_insert((entry.term, max_term));
            assert_eq!(
                term, entry.term,
                "{at}: node {id} applied ({}, {}) but another applied term {term}",
                entry.index, entry.term
            );
        }
        if node.role() == Role::Leader {
            let leader = *seen.leader_of_term.entry(node.term()).or_insert(id);
            assert_eq!(leader, id, "{at}: two leaders in term {}", node.term());
            let storage = node.storage();
            // Leader Completeness binds the leaders of terms after the one that committed the entry.
            let snapshot_index = storage.first_index() - 1;
            let bound = seen
                .applied_terms
                .iter()
                .filter(|&(&index, &(_, by))| node.term() > by && index >= snapshot_index);
            for (&index, &(term, _)) in bound {
                assert_eq!(
                    storage.term(index).ok(),
                    Some(term),
                    "{at}: leader {id} (term {}) lacks applied entry ({index}, {term})",
                    node.term()
                );
            }
        }
    }
}
