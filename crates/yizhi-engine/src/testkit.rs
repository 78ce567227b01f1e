//! A synchronous, in-memory cluster driver for engine scenario tests (cargo feature `testkit`). It
//! runs real engines through the real `Ready`/`advance` contract over [`MemStorage`], with a message
//! queue the test controls (cut links, hold, deliver one by one, crash and restart). No IO, no time:
//! the test decides every tick.
//!
//! One driver for every engine: [`MemCluster`] is generic over [`TestEngine`], the two things the
//! [`Engine`] contract leaves to each protocol (how a node is built from its settings, and how a
//! test makes it campaign now). Each engine implements it in its own `testkit` module.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Debug;

use bytes::Bytes;

use crate::engine::Engine;
use crate::ready::Ready;
use crate::rng::SeededRng;
use crate::storage::MemStorage;
use crate::types::{
    Entry, EntryPayload, Envelope, LogIndex, LogPosition, Membership, NodeId, ReadState, Role,
};

/// Deliveries in one `settle()` call before it gives up: a livelock in a test is a bug to see.
pub const MAX_SETTLE_DELIVERIES: usize = 1_000_000;

/// Makes a `Ready` durable the way a runtime must before it sends the messages: the snapshot
/// first, then the entries after it, then the hard state that may point into them.
pub fn persist<M>(storage: &mut MemStorage, ready: &Ready<M>) {
    if let Some(snapshot) = ready.snapshot.clone() {
        storage.apply_snapshot(snapshot);
    }
    storage.append(&ready.entries);
    if let Some(hard_state) = ready.hard_state {
        storage.set_hard_state(hard_state);
    }
}

/// What [`MemCluster`] needs from an engine beyond the [`Engine`] contract.
pub trait TestEngine: Engine<Storage = MemStorage> + Debug + Sized {
    /// The engine's settings. A cluster tunes one template and starts every node from a copy.
    type Config: Clone + Debug;

    /// The engine's default settings (node id 1: [`TestEngine::start`] sets each node's own).
    fn default_config() -> Self::Config;

    /// Starts node `id` over `storage` (fresh, or what a crash left) with `template`'s settings,
    /// its state machine holding every entry up to `applied`. A refusal is a bug in the test.
    fn start(
        template: &Self::Config,
        id: NodeId,
        applied: LogIndex,
        storage: MemStorage,
        rng: SeededRng,
    ) -> Self;

    /// Makes this node start an election now, by the engine's own path (Raft ticks it to its
    /// election timeout; Multi-Paxos starts phase 1).
    fn start_campaign(&mut self);
}

#[derive(Debug)]
pub struct MemCluster<E: TestEngine> {
    pub nodes: BTreeMap<NodeId, E>,
    /// Nodes that crashed: only their durable storage is left.
    pub crashed: BTreeMap<NodeId, MemStorage>,
    /// Entries each node applied, in order (since its last restart).
    pub applied: BTreeMap<NodeId, Vec<Entry>>,
    pub read_states: BTreeMap<NodeId, Vec<ReadState>>,
    /// Messages sent and not yet delivered, in send order.
    pub in_flight: VecDeque<Envelope<E::Message>>,
    /// Links (from, to) whose messages are dropped.
    pub cut_links: BTreeSet<(NodeId, NodeId)>,
    /// Every message delivered while `record_deliveries`, for transcript assertions.
    pub delivered_log: Vec<Envelope<E::Message>>,
    pub record_deliveries: bool,
    /// Every Ready each node handed out while `record_readies`, for transcript assertions.
    pub readies: Vec<(NodeId, Ready<E::Message>)>,
    pub record_readies: bool,
    /// Settings every node starts with (its id filled in by `TestEngine::start`).
    template: E::Config,
    rng: SeededRng,
}

impl<E: TestEngine> MemCluster<E> {
    /// `voters` and `learners` form the initial membership; `tune` adjusts the settings every
    /// node starts with. Each node draws its randomness from `seed`, forked in that order.
    pub fn new(voters: &[NodeId], learners: &[NodeId], seed: u64, tune: impl FnOnce(&mut E::Config)) -> Self {
        let membership = Membership::new(voters.iter().copied()).with_learners(learners.iter().copied());
        let mut template = E::default_config();
        tune(&mut template);
        let mut cluster = MemCluster {
            nodes: BTreeMap::new(),
            crashed: BTreeMap::new(),
            applied: BTreeMap::new(),
            read_states: BTreeMap::new(),
            in_flight: VecDeque::new(),
            cut_links: BTreeSet::new(),
            delivered_log: Vec::new(),
            record_deliveries: false,
            readies: Vec::new(),
            record_readies: false,
            template,
            rng: SeededRng::new(seed),
        };
        for &id in voters.iter().chain(learners) {
            cluster
                .crashed
                .insert(id, MemStorage::new_with_membership(membership.clone()));
            cluster.restart(id);
        }
        cluster
    }

    pub fn node(&self, id: NodeId) -> &E {
        &self.nodes[&id]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut E {
        self.nodes.get_mut(&id).expect("node is up")
    }

    /// Power loss: everything not in storage is gone (every handled Ready was fully persisted).
    pub fn crash(&mut self, id: NodeId) {
        let node = self.nodes.remove(&id).expect("crashing a running node");
        self.crashed.insert(id, node.storage().clone());
    }

    /// Restarts from durable storage; the state machine restarts from the snapshot, and `applied`
    /// lists only what the node applies from now on.
    pub fn restart(&mut self, id: NodeId) {
        let storage = self.crashed.remove(&id).expect("restarting a crashed node");
        let applied = storage.snapshot_ref().meta.index;
        let node = E::start(&self.template, id, applied, storage, self.rng.fork());
        assert_eq!(node.id(), id, "the engine started under another id");
        self.applied.insert(id, Vec::new());
        self.read_states.entry(id).or_default();
        self.nodes.insert(id, node);
    }

    /// This cluster once node `leader` has campaigned and won (most scenarios start there).
    pub fn elected(mut self, leader: NodeId) -> Self {
        assert_eq!(self.campaign(leader), Some(leader), "node {leader} did not win");
        self
    }

    /// Proposes `data` on node `id`, which must take it (it leads and has room).
    pub fn propose(&mut self, id: NodeId, data: &[u8]) -> LogPosition {
        self.node_mut(id)
            .propose(Bytes::copy_from_slice(data))
            .unwrap_or_else(|e| panic!("node {id} refused a proposal: {e:?}"))
    }

    /// Handles one node's `Ready` the way a runtime must: persist, send, apply, then advance.
    /// False when the node is down or has nothing to do.
    pub fn process_ready(&mut self, id: NodeId) -> bool {
        let Some(node) = self.nodes.get_mut(&id) else {
            return false;
        };
        if !node.has_ready() {
            return false;
        }
        let ready = node.ready();
        persist(node.storage_mut(), &ready);
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
    /// False when none is left.
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

    /// `id` starts an election now ([`TestEngine::start_campaign`]); the cluster settles. Returns
    /// the leader afterwards.
    pub fn campaign(&mut self, id: NodeId) -> Option<NodeId> {
        self.node_mut(id).start_campaign();
        self.settle();
        self.leader()
    }

    /// The leader of the highest term (ballot) among running nodes that think they lead.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .values()
            .map(|node| node.status())
            .filter(|status| status.role == Role::Leader)
            .max_by_key(|status| status.term)
            .map(|status| status.id)
    }

    /// Cuts every link to and from `id`, crashed peers' included.
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

    /// The values a node applied, as `(index, payload)` with the payload's bytes (None for no-ops
    /// and membership entries).
    pub fn applied_values(&self, id: NodeId) -> Vec<(LogIndex, Option<Vec<u8>>)> {
        self.applied[&id]
            .iter()
            .map(|e| {
                let value = match &e.payload {
                    EntryPayload::Normal(data) => Some(data.to_vec()),
                    _ => None,
                };
                (e.index, value)
            })
            .collect()
    }
}
