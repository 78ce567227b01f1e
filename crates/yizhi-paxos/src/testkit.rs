//! A synchronous, in-memory cluster driver for scenario tests: it runs the real engine through the
//! real `Ready`/`advance` contract over `MemStorage`, with a message queue the test controls
//! (cut links, hold, deliver one by one, crash and restart). No IO, no time: the test ticks.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use yizhi_engine::{
    Engine, Entry, Envelope, MemStorage, Membership, NodeId, ReadState, Ready, Role, SeededRng,
};

use crate::config::PaxosConfig;
use crate::message::Message;
use crate::paxos::PaxosNode;

/// Deliveries in one `settle()` call before it gives up: a livelock in a test is a bug to see.
pub const MAX_SETTLE_DELIVERIES: usize = 1_000_000;

#[derive(Debug)]
pub struct MemCluster {
    pub nodes: BTreeMap<NodeId, PaxosNode<MemStorage>>,
    /// Nodes that crashed: only their durable storage is left.
    pub crashed: BTreeMap<NodeId, MemStorage>,
    /// Entries each node applied, in order.
    pub applied: BTreeMap<NodeId, Vec<Entry>>,
    pub read_states: BTreeMap<NodeId, Vec<ReadState>>,
    /// Messages sent and not yet delivered, in send order.
    pub in_flight: VecDeque<Envelope<Message>>,
    /// Links (from, to) whose messages are dropped.
    pub cut_links: BTreeSet<(NodeId, NodeId)>,
    /// Every Ready each node handed out, for transcript assertions (when `record_readies`).
    pub readies: Vec<(NodeId, Ready<Message>)>,
    pub record_readies: bool,
    /// Settings every node starts with (its id filled in).
    template: PaxosConfig,
    rng: SeededRng,
}

impl MemCluster {
    pub fn new(voters: &[NodeId], seed: u64, tune: impl Fn(&mut PaxosConfig)) -> Self {
        let membership = Membership::new(voters.iter().copied());
        let mut template = PaxosConfig::new(1);
        tune(&mut template);
        let mut cluster = MemCluster {
            nodes: BTreeMap::new(),
            crashed: BTreeMap::new(),
            applied: BTreeMap::new(),
            read_states: BTreeMap::new(),
            in_flight: VecDeque::new(),
            cut_links: BTreeSet::new(),
            readies: Vec::new(),
            record_readies: false,
            template,
            rng: SeededRng::new(seed),
        };
        for &id in voters {
            cluster
                .crashed
                .insert(id, MemStorage::new_with_membership(membership.clone()));
            cluster.restart(id);
        }
        cluster
    }

    pub fn node(&self, id: NodeId) -> &PaxosNode<MemStorage> {
        &self.nodes[&id]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut PaxosNode<MemStorage> {
        self.nodes.get_mut(&id).expect("node is up")
    }

    /// Power loss: everything not in storage is gone (every handled Ready was fully persisted).
    pub fn crash(&mut self, id: NodeId) {
        let node = self.nodes.remove(&id).expect("crashing a running node");
        self.crashed.insert(id, node.storage().clone());
    }

    /// Restarts from durable storage; the state machine restarts empty (no snapshot in tests).
    pub fn restart(&mut self, id: NodeId) {
        let storage = self.crashed.remove(&id).expect("restarting a crashed node");
        let mut config = self.template.clone();
        config.id = id;
        config.applied = storage.snapshot_ref().meta.index;
        let node = PaxosNode::new(config, storage, self.rng.fork()).expect("valid durable state");
        self.applied.insert(id, Vec::new());
        self.read_states.entry(id).or_default();
        self.nodes.insert(id, node);
    }

    /// Handles one node's `Ready` the way a runtime must: persist, send, apply, then advance.
    pub fn process_ready(&mut self, id: NodeId) -> bool {
        let Some(node) = self.nodes.get_mut(&id) else {
            return false;
        };
        if !node.has_ready() {
            return false;
        }
        let ready = node.ready();
        let storage = node.storage_mut();
        if let Some(snapshot) = ready.snapshot.clone() {
            storage.apply_snapshot(snapshot);
        }
        storage.append(&ready.entries);
        if let Some(hard_state) = ready.hard_state {
            storage.set_hard_state(hard_state);
        }
        self.in_flight.extend(ready.messages.iter().cloned());
        self.applied
            .entry(id)
            .or_default()
            .extend(ready.committed_entries.iter().cloned());
        self.read_states
            .entry(id)
            .or_default()
            .extend(ready.read_states.iter().copied());
        node.advance();
        if self.record_readies {
            self.readies.push((id, ready));
        }
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

    /// Delivers the oldest in-flight message (dropped if its link is cut or its target is down).
    pub fn deliver_one(&mut self) -> bool {
        let Some(envelope) = self.in_flight.pop_front() else {
            return false;
        };
        if self.cut_links.contains(&(envelope.from, envelope.to)) {
            return true;
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

    pub fn tick_all(&mut self) {
        for node in self.nodes.values_mut() {
            node.tick();
        }
    }

    /// `id` starts phase 1 now; the cluster settles. Returns the leader afterwards.
    pub fn campaign(&mut self, id: NodeId) -> Option<NodeId> {
        self.node_mut(id).campaign_now();
        self.settle();
        self.leader()
    }

    /// The node leading with the highest ballot.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.role() == Role::Leader)
            .max_by_key(|n| n.promised())
            .map(|n| n.status().id)
    }

    pub fn isolate(&mut self, id: NodeId) {
        let ids: Vec<NodeId> = self.nodes.keys().chain(self.crashed.keys()).copied().collect();
        for other in ids {
            if other != id {
                self.cut_links.insert((id, other));
                self.cut_links.insert((other, id));
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut_links.clear();
    }

    /// The values a node applied, as `(slot, payload)` with the payload's bytes (None for no-ops).
    pub fn applied_values(&self, id: NodeId) -> Vec<(u64, Option<Vec<u8>>)> {
        self.applied[&id]
            .iter()
            .map(|e| {
                let value = match &e.payload {
                    yizhi_engine::EntryPayload::Normal(d) => Some(d.to_vec()),
                    _ => None,
                };
                (e.index, value)
            })
            .collect()
    }
}
