//! The client fleet: the regular clients, then the liveness probe last. Which of them may start an
//! operation in each phase of the run, which node each request goes to, and when it arrives there
//! and times out. (One client's own logic, its operations and its history, is `client.rs`.)

use yizhi_engine::{Engine, MemStorage, NodeId, SeededRng};

use crate::client::{Client, ClientRequest, History, NextStep, RELAXED_READ_NODE_SWITCH_PCT, Workload};
use crate::config::CLIENT_DELAY_MS_MAX;
use crate::faults::Phase;
use crate::node::Node;

/// What a client's next request draws on: the time, the workload, the cluster's size, the clients'
/// random stream and the history its operations enter.
pub(crate) struct ClientEnv<'a> {
    pub now_ms: u64,
    pub workload: &'a Workload,
    pub node_count: u64,
    pub rng: &'a mut SeededRng,
    pub history: &'a mut History,
}

impl<'a> ClientEnv<'a> {
    pub fn new(
        now_ms: u64,
        workload: &'a Workload,
        node_count: u64,
        rng: &'a mut SeededRng,
        history: &'a mut History,
    ) -> Self {
        ClientEnv {
            now_ms,
            workload,
            node_count,
            rng,
            history,
        }
    }

    /// `request` leaves for `node` now: it arrives after the client link's delay, and its client
    /// stops waiting for it after the workload's timeout.
    pub fn send(&mut self, node: NodeId, request: ClientRequest) -> Sending {
        let arrive_ms = self.now_ms + self.rng.range_inclusive(1, CLIENT_DELAY_MS_MAX);
        Sending {
            node,
            request,
            arrive_ms,
            timeout_ms: self.now_ms + self.workload.timeout_ms,
        }
    }
}

/// A request on its way to a node.
#[derive(Debug)]
pub(crate) struct Sending {
    pub node: NodeId,
    pub request: ClientRequest,
    pub arrive_ms: u64,
    /// When its client gives up on it.
    pub timeout_ms: u64,
}

/// The leader hint, else the nodes in turn (as real clients do), so that a run of bad luck cannot
/// keep a client knocking at the same dead node.
pub(crate) fn next_target(
    leader_hint: Option<NodeId>,
    last_target: Option<NodeId>,
    node_count: u64,
    rng: &mut SeededRng,
) -> NodeId {
    match (leader_hint, last_target) {
        (Some(hint), _) => hint,
        (None, Some(last)) => last % node_count + 1,
        (None, None) => rng.range_inclusive(1, node_count),
    }
}

/// Regular clients, then the liveness probe last.
#[derive(Debug)]
pub(crate) struct Clients {
    // Invariant: at least one client, the probe.
    list: Vec<Client>,
}

impl Clients {
    /// `regular` clients with ids 1..=regular, then the probe.
    pub fn new(regular: u64) -> Self {
        Clients {
            list: (1..=regular + 1).map(Client::new).collect(),
        }
    }

    pub fn probe_index(&self) -> usize {
        self.list.len() - 1
    }

    pub fn probe(&self) -> &Client {
        self.list.last().expect("the probe client exists")
    }

    pub fn is_probe(&self, client: usize) -> bool {
        client == self.probe_index()
    }

    pub fn get(&self, client: usize) -> &Client {
        &self.list[client]
    }

    pub fn get_mut(&mut self, client: usize) -> &mut Client {
        &mut self.list[client]
    }

    /// Gives up every operation in flight (the run is over).
    pub fn abandon_all(&mut self, history: &mut History) {
        for client in self.list.iter_mut() {
            client.abandon(history);
        }
    }

    /// During the faults the regular clients run; after the heal only the probe, while it must.
    /// `room`: the history may take another operation.
    fn may_start<E: Engine<Storage = MemStorage>>(
        &self,
        client: usize,
        room: bool,
        phase: Phase,
        nodes: &[Node<E>],
    ) -> bool {
        match phase {
            Phase::Faults => room && !self.is_probe(client),
            Phase::Liveness { healed_at_ms } => {
                room && self.is_probe(client) && self.probe_should_write(healed_at_ms, nodes)
            }
            Phase::Done => false,
        }
    }

    /// The probe writes until one write got through and no write proposed before the heal is still
    /// waiting (those resolve only once the log grows past them).
    fn probe_should_write<E: Engine<Storage = MemStorage>>(
        &self,
        healed_at_ms: u64,
        nodes: &[Node<E>],
    ) -> bool {
        self.probe().acked_writes == 0 || nodes.iter().any(|n| n.has_pending_write_before(healed_at_ms))
    }

    /// `client` wakes: it starts its next operation if it may and is idle, else drops its retry.
    pub fn wake<E: Engine<Storage = MemStorage>>(
        &mut self,
        client: usize,
        room: bool,
        phase: Phase,
        nodes: &[Node<E>],
        env: &mut ClientEnv<'_>,
    ) -> Option<Sending> {
        if !self.may_start(client, room, phase, nodes) || self.list[client].is_busy() {
            self.list[client].drop_retry(env.history);
            return None;
        }
        let invoke_time = env.history.now();
        let request = self.list[client].start(env.workload, env.rng, invoke_time, env.now_ms);
        let target = if request.is_relaxed_read() {
            self.relaxed_read_target(client, env)
        } else {
            let c = &self.list[client];
            next_target(c.leader_hint, c.last_target, env.node_count, env.rng)
        };
        self.list[client].last_target = Some(target);
        Some(env.send(target, request))
    }

    /// Serializable and bounded reads stay with one node (any role, even cut off) for a while, so
    /// that read sessions are long enough to go wrong.
    fn relaxed_read_target(&mut self, client: usize, env: &mut ClientEnv<'_>) -> NodeId {
        let switch = env.rng.chance(RELAXED_READ_NODE_SWITCH_PCT, 100);
        let c = &mut self.list[client];
        let node = match c.relaxed_read_node {
            Some(node) if !switch => node,
            _ => env.rng.range_inclusive(1, env.node_count),
        };
        c.relaxed_read_node = Some(node);
        node
    }

    /// `client`'s operation `op_id` timed out: the delay before it retries, if it does.
    pub fn timeout(&mut self, client: usize, op_id: u64, env: &mut ClientEnv<'_>) -> Option<u64> {
        let next = self.list[client].on_timeout(op_id, env.workload, env.rng, env.history);
        match next {
            Some(NextStep::Retry { delay_ms }) => Some(delay_ms),
            _ => None,
        }
    }
}
