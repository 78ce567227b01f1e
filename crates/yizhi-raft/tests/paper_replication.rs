//! Raft paper §5.3 (log replication): the AppendEntries consistency check, conflict repair,
//! Figure 7's divergent followers, commit propagation, and the batching and pipelining limits.

mod common;

use bytes::Bytes;
use common::*;
use yizhi_engine::{Engine, Envelope, LogIndex, MemStorage, NodeId, SeededRng, Term};
use yizhi_raft::testkit::MemCluster;
use yizhi_raft::{Message, MessageKind, ProgressState, RaftConfig, RaftNode};

const VOTERS: [NodeId; 3] = [1, 2, 3];

fn is_append_to(e: &Envelope<Message>, to: NodeId) -> bool {
    e.to == to && matches!(e.msg.kind, MessageKind::Append { .. })
}

fn appended_positions(e: &Envelope<Message>) -> Vec<(LogIndex, Term)> {
    match &e.msg.kind {
        MessageKind::Append { entries, .. } => entries.iter().map(|x| (x.index, x.term)).collect(),
        other => panic!("not an append: {other:?}"),
    }
}

/// The positions each append in flight to `to` carries, in sending order.
fn appends_in_flight_to(cluster: &MemCluster, to: NodeId) -> Vec<Vec<(LogIndex, Term)>> {
    cluster
        .in_flight
        .iter()
        .filter(|e| is_append_to(e, to))
        .map(appended_positions)
        .collect()
}

/// §5.4.2 / thesis §6.4: a new leader opens its term with a no-op, at the end of its log.
#[test]
fn paper_5_3_new_leader_appends_a_no_op_of_its_term() {
    let mut leader = node_with_log(1, &VOTERS, &[1, 1, 2], hard_state(2, None, 1), paper_only);
    let ready = elect_alone(&mut leader, &VOTERS);
    assert_eq!(leader.term(), 3);
    assert_eq!(ready.entries, vec![noop(4, 3)]);
    let probe = append(3, 2, vec![noop(4, 3)], 1);
    assert_eq!(sent(&ready), vec![(2, 3, probe.clone()), (3, 3, probe)]);
}

/// §5.3: the follower accepts an append whose (prev_index, prev_term) it holds, persists the new
/// entries, and learns the commit index (bounded by what this append proved to match).
#[test]
fn paper_5_3_follower_accepts_append_whose_prev_matches() {
    let mut follower = node_with_log(2, &VOTERS, &[1, 1], hard_state(1, None, 1), paper_only);
    follower.step(envelope(1, 2, 2, append(2, 1, vec![noop(3, 2)], 3)));
    let ready = handle_ready(&mut follower);
    assert_eq!(ready.entries, vec![noop(3, 2)]);
    assert_eq!(ready.hard_state, Some(hard_state(2, None, 3)));
    assert_eq!(sent(&ready), vec![(1, 2, accepted(3))]);
    let committed: Vec<LogIndex> = ready.committed_entries.iter().map(|e| e.index).collect();
    assert_eq!(
        committed,
        vec![1, 2, 3],
        "nothing was applied yet; now 1..=3 are committed"
    );
}

/// §5.3: "If the follower does not find an entry in its log with the same index and term, then it
/// refuses the new entries" — with a hint that lets the leader skip a whole term (§5.3, last
/// paragraph): the last index at or below prev_index whose term is at most prev_term.
#[test]
fn paper_5_3_follower_rejects_mismatched_prev_with_a_hint() {
    let cases = [
        // (follower log, prev_index, prev_term, expected hint (index, term), why)
        (vec![1, 1, 2, 2], 4, 3, (4, 2), "term at 4 is 2, not 3"),
        (
            vec![1, 1, 2, 2],
            6,
            3,
            (4, 2),
            "no entry at 6: hint at our last index",
        ),
        (vec![1, 1, 3, 3, 3], 5, 2, (2, 1), "the whole term 3 is skipped"),
    ];
    for (log, prev_index, prev_term, (hint_index, hint_term), why) in cases {
        let mut follower = node_with_log(2, &VOTERS, &log, hard_state(3, None, 1), paper_only);
        follower.step(envelope(
            1,
            2,
            3,
            append(prev_index, prev_term, vec![noop(prev_index + 1, 3)], 1),
        ));
        let ready = handle_ready(&mut follower);
        assert!(ready.entries.is_empty(), "{why}: nothing appended");
        assert_eq!(
            sent(&ready),
            vec![(1, 3, rejected(prev_index, hint_index, hint_term))],
            "{why}"
        );
        assert_eq!(durable_terms(&follower), log, "{why}: log untouched");
    }
}

fn durable_terms(node: &RaftNode<MemStorage>) -> Vec<Term> {
    node.storage().all_entries().iter().map(|e| e.term).collect()
}

/// §5.3: "If an existing entry conflicts with a new one (same index but different terms), delete
/// the existing entry and all that follow it".
#[test]
fn paper_5_3_conflicting_suffix_is_replaced_by_the_leaders_entries() {
    let mut follower = node_with_log(2, &VOTERS, &[1, 1, 2, 2], hard_state(2, None, 1), paper_only);
    follower.step(envelope(1, 2, 3, append(2, 1, vec![noop(3, 3)], 1)));
    let ready = handle_ready(&mut follower);
    assert_eq!(ready.entries, vec![noop(3, 3)], "rewrite from the first conflict");
    assert_eq!(sent(&ready), vec![(1, 3, accepted(3))]);
    assert_eq!(
        durable_terms(&follower),
        vec![1, 1, 3],
        "entry 4 of term 2 is gone"
    );
}

/// Figure 7's leader, term 8 (indices 1..=10), and followers (a)–(f).
const FIGURE_7_LEADER: [Term; 10] = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
const FIGURE_7_FOLLOWERS: [(&str, &[Term]); 6] = [
    ("a", &[1, 1, 1, 4, 4, 5, 5, 6, 6]),
    ("b", &[1, 1, 1, 4]),
    ("c", &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6]),
    ("d", &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7]),
    ("e", &[1, 1, 1, 4, 4, 4, 4]),
    ("f", &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3]),
];

/// §5.3, Figure 7: every follower, missing entries or holding extra ones, ends with exactly the
/// leader's log. Thanks to the term hint each divergent follower costs at most one rejection.
#[test]
fn paper_5_3_figure_7_divergent_followers_converge_to_the_leaders_log() {
    let voters: Vec<NodeId> = (1..=7).collect();
    let mut cluster = MemCluster::new(&voters, &[], 7, |_| {});
    let logs = std::iter::once(&FIGURE_7_LEADER[..]).chain(FIGURE_7_FOLLOWERS.iter().map(|(_, log)| *log));
    for (id, log) in (1..).zip(logs) {
        let storage = storage_with(&voters, &[], log, hard_state(7, None, 0));
        let node = RaftNode::new(RaftConfig::new(id), storage, SeededRng::new(id)).expect("valid");
        cluster.nodes.insert(id, node);
    }
    cluster.record_deliveries = true;

    assert_eq!(
        cluster.campaign(1),
        Some(1),
        "a, b, e and f vote for the leader; c and d refuse"
    );
    assert_eq!(cluster.node(1).term(), 8);

    let mut expected: Vec<(LogIndex, Term)> = (1..).zip(FIGURE_7_LEADER).collect();
    expected.push((11, 8));
    for (id, (name, _)) in (2..).zip(FIGURE_7_FOLLOWERS) {
        assert_eq!(durable_log(&cluster, id), expected, "follower ({name})");
        assert_eq!(cluster.node(id).committed(), 11, "follower ({name})");
        let rejections = cluster
            .delivered_log
            .iter()
            .filter(|e| {
                e.from == id && matches!(e.msg.kind, MessageKind::AppendResponse { reject: Some(_), .. })
            })
            .count();
        let expected_rejections = if matches!(name, "c" | "d") { 0 } else { 1 };
        assert_eq!(rejections, expected_rejections, "follower ({name}) round trips");
    }
}

/// §5.3 backtracking, step by step for Figure 7 (f): the leader reads the hint (index 10, term 3),
/// finds its own last entry of term ≤ 3 (index 3), and retries right after it with the rest.
#[test]
fn paper_5_3_leader_backtracks_over_whole_terms_using_the_hint() {
    let voters: Vec<NodeId> = (1..=7).collect();
    let mut leader = node_with_log(1, &voters, &FIGURE_7_LEADER, hard_state(7, None, 0), paper_only);
    let ready = elect_alone(&mut leader, &voters);
    let to_f = sent(&ready)
        .into_iter()
        .find(|(to, ..)| *to == 7)
        .expect("append to (f)");
    assert_eq!(to_f, (7, 8, append(10, 6, vec![noop(11, 8)], 0)));

    leader.step(envelope(7, 1, 8, rejected(10, 10, 3)));
    let ready = handle_ready(&mut leader);
    let mut rest: Vec<_> = (4..)
        .zip(&FIGURE_7_LEADER[3..])
        .map(|(i, &t)| noop(i, t))
        .collect();
    rest.push(noop(11, 8));
    assert_eq!(sent(&ready), vec![(7, 8, append(3, 1, rest, 0))]);

    leader.step(envelope(7, 1, 8, rejected(10, 10, 3)));
    assert!(
        handle_ready(&mut leader).messages.is_empty(),
        "a duplicate rejection is stale"
    );
}

/// §5.3: "the leader ... includes [commitIndex] in future AppendEntries RPCs ... Once a follower
/// learns that a log entry is committed, it applies the entry".
#[test]
fn paper_5_3_commit_index_reaches_followers_in_the_next_append() {
    let mut cluster = MemCluster::new(&VOTERS, &[], 3, |_| {}).elected(1);
    let x = cluster.propose(1, b"x");
    cluster.process_ready(1);

    deliver_matching(&mut cluster, |e| is_append_to(e, 2));
    cluster.process_ready(2);
    deliver_matching(&mut cluster, |e| e.to == 1);
    assert_eq!(
        cluster.node(1).committed(),
        x.index,
        "leader and node 2 are a majority"
    );
    assert!(
        cluster.node(2).committed() < x.index,
        "node 2 has not been told yet"
    );

    cluster.process_ready(1);
    let to_2 = take_matching(&mut cluster, |e| is_append_to(e, 2));
    assert_eq!(to_2.len(), 1);
    assert!(
        matches!(to_2[0].msg.kind, MessageKind::Append { commit, .. } if commit == x.index),
        "{to_2:?}"
    );
    cluster.node_mut(2).step(to_2[0].clone());
    cluster.settle();
    for id in VOTERS {
        assert_eq!(cluster.node(id).committed(), x.index, "node {id}");
        assert_eq!(
            cluster.applied[&id].last().map(|e| e.index),
            Some(x.index),
            "node {id} applied x"
        );
    }
}

/// §5.3 (and etcd-io/raft's `handleAppendResponse`): a follower that was paused (its probe still
/// unanswered) when the leader committed misses the broadcast that carried the new commit index;
/// when its acknowledgement finally arrives the leader must send it an append (empty if need be)
/// so it learns the commit index without waiting for the next heartbeat.
#[test]
fn paper_5_3_follower_paused_during_commit_learns_commit_when_its_ack_arrives() {
    let mut cluster = MemCluster::new(&VOTERS, &[], 3, |_| {});
    elect_holding_appends(&mut cluster, 1);
    // The no-op probes to 2 and 3 are in flight. Node 2 answers first: index 1 commits.
    deliver_matching(&mut cluster, |e| is_append_to(e, 2));
    cluster.process_ready(2);
    deliver_matching(&mut cluster, |e| e.from == 2);
    assert_eq!(cluster.node(1).committed(), 1);
    cluster.process_ready(1);
    assert!(
        !cluster
            .in_flight
            .iter()
            .any(|e| e.to == 3 && matches!(e.msg.kind, MessageKind::Append { commit: 1, .. })),
        "node 3 is paused (its probe is unanswered), so the commit broadcast skips it"
    );
    // Node 3 now receives its probe (which carried commit 0) and acknowledges index 1.
    cluster.settle();
    assert_eq!(
        cluster.node(3).committed(),
        1,
        "no tick happened, yet node 3 must learn commit 1"
    );
}

/// Batching: proposals made between two `ready()` calls leave as one append per follower.
#[test]
fn proposals_before_one_ready_leave_as_one_append_per_follower() {
    let mut cluster = MemCluster::new(&VOTERS, &[], 3, |_| {}).elected(1);
    for data in [&b"a"[..], b"b", b"c"] {
        cluster
            .node_mut(1)
            .propose(Bytes::copy_from_slice(data))
            .expect("leader");
    }
    cluster.process_ready(1);
    let appends: Vec<_> = cluster
        .in_flight
        .iter()
        .map(|e| (e.to, appended_positions(e)))
        .collect();
    let batch = vec![(2, 1), (3, 1), (4, 1)];
    assert_eq!(appends, vec![(2, batch.clone()), (3, batch)]);
}

/// Pipelining: a follower in Replicate state has up to `max_inflight_msgs` appends outstanding,
/// and no more; each acknowledgement opens the window by one.
#[test]
fn replicate_state_keeps_at_most_max_inflight_msgs_appends_outstanding() {
    const MAX_INFLIGHT_MSGS: usize = 3;
    let mut cluster =
        MemCluster::new(&VOTERS, &[], 3, |c| c.max_inflight_msgs = MAX_INFLIGHT_MSGS).elected(1);
    assert_eq!(
        cluster.node(1).progress_of(2).map(|p| p.state),
        Some(ProgressState::Replicate)
    );

    for round in 0..5u8 {
        cluster
            .node_mut(1)
            .propose(Bytes::from(vec![round]))
            .expect("leader");
        cluster.process_ready(1);
    }
    let outstanding_to_2 = appends_in_flight_to(&cluster, 2);
    assert_eq!(
        outstanding_to_2,
        vec![vec![(2, 1)], vec![(3, 1)], vec![(4, 1)]],
        "window is full"
    );
    assert_eq!(
        cluster.node(1).progress_of(2).map(|p| p.inflights.len()),
        Some(MAX_INFLIGHT_MSGS)
    );

    let first = take_matching(&mut cluster, |e| is_append_to(e, 2)).remove(0);
    let later: Vec<_> = cluster.in_flight.drain(..).collect();
    cluster.node_mut(2).step(first);
    cluster.process_ready(2);
    deliver_matching(&mut cluster, |e| e.to == 1);
    cluster.process_ready(1);
    let refill = appends_in_flight_to(&cluster, 2);
    assert_eq!(
        refill,
        vec![vec![(5, 1), (6, 1)]],
        "one slot freed, one append sent with the rest"
    );
    assert_eq!(
        cluster.node(1).progress_of(2).map(|p| p.inflights.len()),
        Some(MAX_INFLIGHT_MSGS)
    );
    cluster.in_flight.extend(later);
    cluster.settle();
    assert_eq!(cluster.node(2).committed(), 6);
}
