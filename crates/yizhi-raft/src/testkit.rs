//! A synchronous, in-memory cluster driver for scenario tests and benchmarks: it runs the real
//! engine through the real `Ready`/`advance` contract over `MemStorage`, with a message queue the
//! test controls (drop, hold, deliver one by one). No IO, no time: the test decides every tick.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use yizhi_engine::{Engine, Entry, Envelope, MemStorage, Membership, NodeId, ReadState, SeededRng};

use crate::config::RaftConfig;
use crate::message::Message;
use crate::raft::RaftNode;

/// Deliveries in one `settle()` call before it gives up: a livelock in a test is a bug to see.
pub const MAX_SETTLE_DELIVERIES: usize = 1_000_000;

#[derive(Debug)]
pub struct MemCluster {
    pub nodes: BTreeMap<NodeId, RaftNode<MemStorage>>,
    /// Entries each node applied, in order.
    pub applied: BTreeMap<NodeId, Vec<Entry>>,
    pub read_states: BTreeMap<NodeId, Vec<ReadState>>,
    /// Messages sent and not yet delivered, in send order.
    pub in_flight: VecDeque<Envelope<Message>>,
    /// Links (from, to) whose messages are dropped.
    pub cut_links: BTreeSet<(NodeId, NodeId)>,
    /// Every message ever delivered, for transcript-style assertions.
    pub delivered_log: Vec<Envelope<Message>>,
    pub record_deliveries: bool,
}

impl MemCluster {
    /// `voters` and `learners` form the initial membership; `tune` adjusts each node's config.
    pub fn new(voters: &[NodeId], learners: &[NodeId], seed: u64, tune: impl Fn(&mut RaftConfig)) -> Self {
        let membership = Membership::new(voters.iter().copied()).with_learners(learners.iter().copied());
        let mut rng = SeededRng::new(seed);
        let mut nodes = BTreeMap::new();
        for &id in voters.iter().chain(learners) {
            let mut config = RaftConfig::new(id);
            tune(&mut config);
            let storage = MemStorage::new_with_membership(membership.clone());
            let node = RaftNode::new(config, storage, rng.fork()).expect("valid test config");
            nodes.insert(id, node);
        }
        let ids: Vec<NodeId> = nodes.keys().copied().collect();
        MemCluster {
            nodes,
            applied: ids.iter().map(|&id| (id, Vec::new())).collect(),
            read_states: ids.iter().map(|&id| (id, Vec::new())).collect(),
            in_flight: VecDeque::new(),
            cut_links: BTreeSet::new(),
            delivered_log: Vec::new(),
            record_deliveries: false,
        }
    }

    pub fn node(&self, id: NodeId) -> &RaftNode<MemStorage> {
        &self.nodes[&id]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut RaftNode<MemStorage> {
        self.nodes.get_mut(&id).expect("node exists")
    }

    /// Handles one node's `Ready` the way a runtime must: persist, send, apply, then advance.
    pub fn process_ready(&mut self, id: NodeId) -> bool {
        let node = self.nodes.get_mut(&id).expect("node exists");
        if !node.has_ready() {
            return false;
        }
        let ready = node.ready();
        let storage = node.storage_mut();
        if let Some(snapshot) = ready.snapshot {
            storage.apply_snapshot(snapshot);
        }
        storage.append_owned(ready.entries);
        if let Some(hard_state) = ready.hard_state {
            storage.set_hard_state(hard_state);
        }
        self.in_flight.extend(ready.messages);
        self.applied
            .get_mut(&id)
            .expect("known")
            .extend(ready.committed_entries);
        self.read_states
            .get_mut(&id)
            .expect("known")
            .extend(ready.read_states);
        node.advance();
        true
    }

    pub fn process_all_ready(&mut self) -> bool {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        let mut any = false;
        for id in ids {
            any |= self.process_ready(id);
        }
        any
    }

    /// Delivers the oldest in-flight message (dropped if its link is cut). False when none left.
    pub fn deliver_one(&mut self) -> bool {
        let Some(envelope) = self.in_flight.pop_front() else {
            return false;
        };
        if self.cut_links.contains(&(envelope.from, envelope.to)) {
            return true;
        }
        if self.record_deliveries {
            self.delivered_log.push(envelope.clone());
        }
        if let Some(node) = self.nodes.get_mut(&envelope.to) {
            node.step(envelope);
        }
        true
    }

    /// Processes readies and delivers messages until nothing moves.
    pub fn settle(&mut self) {
        for _ in 0..MAX_SETTLE_DELIVERIES {
            self.process_all_ready();
            if !self.deliver_one() && !self.process_all_ready() {
                return;
            }
        }
        panic!("cluster did not settle after {MAX_SETTLE_DELIVERIES} deliveries");
    }

    pub fn tick(&mut self, id: NodeId) {
        self.node_mut(id).tick();
    }

    pub fn tick_all(&mut self) {
        for node in self.nodes.values_mut() {
            node.tick();
        }
    }

    /// Ticks `id` alone until it starts an election, then settles; returns the leader afterwards.
    pub fn campaign(&mut self, id: NodeId) -> Option<NodeId> {
        let max_ticks = 2 * self.node(id).config().election_timeout_ticks + 1;
        for _ in 0..max_ticks {
            self.tick(id);
            if self.node(id).role() != yizhi_engine::Role::Follower {
                break;
            }
        }
        self.settle();
        self.leader()
    }

    /// The leader of the highest term among nodes that think they lead.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.role() == yizhi_engine::Role::Leader)
            .max_by_key(|n| n.term())
            .map(|n| n.id())
    }

    pub fn isolate(&mut self, id: NodeId) {
        for &other in self.nodes.keys() {
            if other != id {
                self.cut_links.insert((id, other));
                self.cut_links.insert((other, id));
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut_links.clear();
    }
}
