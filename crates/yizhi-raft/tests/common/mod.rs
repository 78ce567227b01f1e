//! Shared scaffolding for the scenario tests: building one node with a prepared log, driving its
//! `Ready` the way a runtime must (persist, then send), and picking messages out of a `MemCluster`.
//!
//! Every scenario test file includes this with `mod common;` and uses only part of it.
#![allow(dead_code)]

use bytes::Bytes;
use yizhi_engine::{
    Engine, Entry, EntryPayload, Envelope, HardState, LogIndex, MemStorage, Membership, NodeId, Ready, Role,
    SeededRng, Term,
};
use yizhi_raft::testkit::MemCluster;
use yizhi_raft::{Message, MessageKind, RaftConfig, RaftNode};

pub type Node = RaftNode<MemStorage>;

/// Ticks a follower may wait before campaigning is below `2 * election_timeout_ticks`; anything
/// past this is a liveness bug.
pub const MAX_TICKS_TO_CAMPAIGN: u64 = 1_000;

pub fn noop(index: LogIndex, term: Term) -> Entry {
    Entry::noop(index, term)
}

pub fn normal(index: LogIndex, term: Term, data: &'static [u8]) -> Entry {
    Entry {
        index,
        term,
        payload: EntryPayload::Normal(Bytes::from_static(data)),
    }
}

/// Entries `1..=terms.len()` whose terms are `terms` (the paper's figures write logs this way).
pub fn log_of_terms(terms: &[Term]) -> Vec<Entry> {
    terms
        .iter()
        .enumerate()
        .map(|(i, &term)| noop(i as LogIndex + 1, term))
        .collect()
}

/// The classic Raft setting without the thesis extensions, for tests of the paper's core rules.
pub fn paper_only(config: &mut RaftConfig) {
    config.pre_vote = false;
    config.check_quorum = false;
}

pub fn defaults(_: &mut RaftConfig) {}

pub fn storage_with(
    voters: &[NodeId],
    learners: &[NodeId],
    terms: &[Term],
    hard_state: HardState,
) -> MemStorage {
    let membership = Membership::new(voters.iter().copied()).with_learners(learners.iter().copied());
    let mut storage = MemStorage::new_with_membership(membership);
    storage.append(&log_of_terms(terms));
    storage.set_hard_state(hard_state);
    storage
}

/// A node restarted from a disk that holds `terms` as its log and `hard_state`.
pub fn node_with_log(
    id: NodeId,
    voters: &[NodeId],
    terms: &[Term],
    hard_state: HardState,
    tune: impl Fn(&mut RaftConfig),
) -> Node {
    let mut config = RaftConfig::new(id);
    tune(&mut config);
    let storage = storage_with(voters, &[], terms, hard_state);
    RaftNode::new(config, storage, SeededRng::new(id)).expect("valid test node")
}

pub fn fresh_node(id: NodeId, voters: &[NodeId], tune: impl Fn(&mut RaftConfig)) -> Node {
    node_with_log(id, voters, &[], HardState::default(), tune)
}

pub fn hard_state(term: Term, vote: Option<NodeId>, commit: LogIndex) -> HardState {
    HardState { term, vote, commit }
}

pub fn envelope(from: NodeId, to: NodeId, term: Term, kind: MessageKind) -> Envelope<Message> {
    Envelope {
        from,
        to,
        msg: Message::new(term, kind),
    }
}

/// Collects a `Ready`, makes it durable in the node's own storage as the runtime must, then
/// acknowledges it. Returns the `Ready` for inspection.
pub fn handle_ready(node: &mut Node) -> Ready<Message> {
    let ready = node.ready();
    persist(node, &ready);
    node.advance();
    ready
}

pub fn persist(node: &mut Node, ready: &Ready<Message>) {
    yizhi_engine::testkit::persist(node.storage_mut(), ready);
}

/// The messages of a `Ready` as `(to, term, kind)`, in emission order.
pub fn sent(ready: &Ready<Message>) -> Vec<(NodeId, Term, MessageKind)> {
    ready
        .messages
        .iter()
        .map(|e| (e.to, e.msg.term, e.msg.kind.clone()))
        .collect()
}

/// A vote request from a candidate whose log ends at (`last_index`, `last_term`).
pub fn vote_request(last_index: LogIndex, last_term: Term, transfer: bool) -> MessageKind {
    MessageKind::Vote {
        last_index,
        last_term,
        transfer,
    }
}

/// The indexes of the entries a `Ready` hands over to apply.
pub fn committed_indexes(ready: &Ready<Message>) -> Vec<LogIndex> {
    ready.committed_entries.iter().map(|e| e.index).collect()
}

/// A (pre-)vote answer as [`sent`] lists it: `(to, term, kind)`.
pub fn vote_response(to: NodeId, term: Term, granted: bool) -> (NodeId, Term, MessageKind) {
    (to, term, MessageKind::VoteResponse { granted })
}

pub fn pre_vote_response(to: NodeId, term: Term, granted: bool) -> (NodeId, Term, MessageKind) {
    (to, term, MessageKind::PreVoteResponse { granted })
}

/// Steps `message` into `node`, handles the `Ready` that follows and asserts that it sends exactly
/// `want` (as `(to, term, kind)`). Returns the `Ready` for further checks.
pub fn step_expecting(
    node: &mut Node,
    message: Envelope<Message>,
    want: &[(NodeId, Term, MessageKind)],
) -> Ready<Message> {
    node.step(message);
    let ready = handle_ready(node);
    assert_eq!(sent(&ready), want);
    ready
}

/// Ticks until the node leaves the follower role; returns how many ticks that took.
pub fn tick_until_campaign(node: &mut Node) -> u64 {
    for ticks in 1..=MAX_TICKS_TO_CAMPAIGN {
        node.tick();
        if node.role() != Role::Follower {
            return ticks;
        }
    }
    panic!(
        "node {} never campaigned in {MAX_TICKS_TO_CAMPAIGN} ticks",
        node.id()
    );
}

/// Drives a lone node through a won election by answering its (pre-)vote requests with grants
/// from `voters`. Returns the `Ready` in which it first acts as leader.
pub fn elect_alone(node: &mut Node, voters: &[NodeId]) -> Ready<Message> {
    tick_until_campaign(node);
    handle_ready(node);
    let id = node.id();
    if node.role() == Role::PreCandidate {
        let asked = node.term() + 1;
        for &voter in voters.iter().filter(|&&v| v != id) {
            node.step(envelope(
                voter,
                id,
                asked,
                MessageKind::PreVoteResponse { granted: true },
            ));
        }
        handle_ready(node);
    }
    for &voter in voters.iter().filter(|&&v| v != id) {
        if node.role() == Role::Candidate {
            let term = node.term();
            node.step(envelope(
                voter,
                id,
                term,
                MessageKind::VoteResponse { granted: true },
            ));
        }
    }
    assert_eq!(
        node.role(),
        Role::Leader,
        "node {id} should have won with every vote"
    );
    handle_ready(node)
}

// ---- MemCluster helpers ----

/// `(index, term)` of every entry in a node's durable log.
pub fn durable_log(cluster: &MemCluster, id: NodeId) -> Vec<(LogIndex, Term)> {
    cluster
        .node(id)
        .storage()
        .all_entries()
        .iter()
        .map(|e| (e.index, e.term))
        .collect()
}

/// Removes and returns the in-flight messages matching `pred`, leaving the rest in order.
pub fn take_matching(
    cluster: &mut MemCluster,
    pred: impl Fn(&Envelope<Message>) -> bool,
) -> Vec<Envelope<Message>> {
    let (taken, kept): (Vec<_>, Vec<_>) = cluster.in_flight.drain(..).partition(|e| pred(e));
    cluster.in_flight.extend(kept);
    taken
}

/// Delivers (only) the in-flight messages matching `pred`, honouring cut links. Returns how many
/// were handed to their receiver.
pub fn deliver_matching(cluster: &mut MemCluster, pred: impl Fn(&Envelope<Message>) -> bool) -> usize {
    let mut delivered = 0;
    for envelope in take_matching(cluster, pred) {
        if cluster.cut_links.contains(&(envelope.from, envelope.to)) {
            continue;
        }
        if cluster.record_deliveries {
            cluster.delivered_log.push(envelope.clone());
        }
        cluster.node_mut(envelope.to).step(envelope);
        delivered += 1;
    }
    delivered
}

/// Repeats: process every Ready, deliver the matching messages, until none match.
pub fn settle_matching(cluster: &mut MemCluster, pred: impl Fn(&Envelope<Message>) -> bool + Copy) {
    for _ in 0..10_000 {
        cluster.process_all_ready();
        if deliver_matching(cluster, pred) == 0 {
            cluster.process_all_ready();
            if !cluster.in_flight.iter().any(pred) {
                return;
            }
        }
    }
    panic!("matching messages kept flowing");
}

pub fn is_election_traffic(e: &Envelope<Message>) -> bool {
    matches!(
        e.msg.kind,
        MessageKind::PreVote { .. }
            | MessageKind::PreVoteResponse { .. }
            | MessageKind::Vote { .. }
            | MessageKind::VoteResponse { .. }
    )
}

pub fn is_heartbeat_traffic(e: &Envelope<Message>) -> bool {
    matches!(
        e.msg.kind,
        MessageKind::Heartbeat { .. } | MessageKind::HeartbeatResponse { .. }
    )
}

/// Ticks every node and settles after each tick until a leader exists; returns it.
pub fn elect_by_ticking(cluster: &mut MemCluster) -> NodeId {
    for _ in 0..MAX_TICKS_TO_CAMPAIGN {
        cluster.tick_all();
        cluster.settle();
        if let Some(leader) = cluster.leader() {
            return leader;
        }
    }
    panic!("no leader after {MAX_TICKS_TO_CAMPAIGN} ticks");
}

/// One tick for every node, then everything settles: one heartbeat round at the leader.
pub fn tick_all_and_settle(cluster: &mut MemCluster, ticks: u64) {
    for _ in 0..ticks {
        cluster.tick_all();
        cluster.settle();
    }
}

/// Ticks `id` until it campaigns and delivers only election traffic until it leads: the new
/// leader's first appends are left in flight for the test to deliver.
pub fn elect_holding_appends(cluster: &mut MemCluster, id: NodeId) {
    for _ in 0..MAX_TICKS_TO_CAMPAIGN {
        cluster.tick(id);
        if cluster.node(id).role() != Role::Follower {
            break;
        }
    }
    settle_matching(cluster, is_election_traffic);
    assert_eq!(cluster.leader(), Some(id), "node {id} should have won");
}

/// An `Append` message body, for transcript assertions.
pub fn append(
    prev_index: LogIndex,
    prev_term: Term,
    entries: Vec<yizhi_engine::Entry>,
    commit: LogIndex,
) -> MessageKind {
    MessageKind::Append {
        prev_index,
        prev_term,
        entries,
        commit,
    }
}

pub fn accepted(index: LogIndex) -> MessageKind {
    MessageKind::AppendResponse { index, reject: None }
}

pub fn rejected(rejected_index: LogIndex, hint_index: LogIndex, hint_term: Term) -> MessageKind {
    MessageKind::AppendResponse {
        index: rejected_index,
        reject: Some(yizhi_raft::RejectHint {
            rejected_index,
            hint_index,
            hint_term,
        }),
    }
}

/// Node 1 is elected; with node 3 cut off, `count` entries commit, then node 1 compacts its log
/// up to its commit index into `image` under `membership`. Node 3 stays cut off. Returns the
/// compaction index.
pub fn compact_past_isolated_3(
    cluster: &mut MemCluster,
    count: u8,
    membership: Membership,
    image: Bytes,
) -> LogIndex {
    assert_eq!(cluster.campaign(1), Some(1));
    cluster.isolate(3);
    for i in 0..count {
        cluster.propose(1, &[i]);
    }
    cluster.settle();
    let compacted_to = cluster.node(1).committed();
    cluster
        .node_mut(1)
        .storage_mut()
        .compact(compacted_to, membership, image);
    compacted_to
}
