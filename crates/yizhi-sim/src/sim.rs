//! The event loop: one queue ordered by (simulated ms, sequence number), one thread, one seed.
//!
//! A run has three phases. Faults: clients run, the fault schedule re-decides the network, crashes
//! and pauses every epoch. Liveness: the network heals, crashed nodes restart (all but at most a
//! minority), and a probe client must get writes through within a bound. Final: log matching,
//! acknowledged writes and linearizability of the whole history.

use std::collections::{BTreeMap, BTreeSet};

use yizhi_engine::{Engine, Envelope, LogStorage, NodeId, Role, SeededRng, SnapshotStatus};

use yizhi_kv::{CommandResponse, KvError};

use crate::client::{ClientReply, ClientRequest, History, NextStep, Reply, Request, WriteKnowledge};
use crate::clients::{ClientEnv, Clients, Sending};
use crate::clock::TICK_SKEW_PCT_MAX;
use crate::config::{CLIENT_DELAY_MS_MAX, SimConfig};
use crate::counter::{CounterClient, CounterStep};
use crate::disk::Disk;
use crate::engines::EngineFactory;
use crate::faults::{Phase, plan_epoch};
use crate::invariants::{Checker, Violation, check_log_matching};
use crate::network::{Arrival, DropReason, HELD_RECHECK_MS, Network, SendOutcome};
use crate::node::{
    Ctx, Forward, ForwardFailure, MAX_WALL_CLOCK_OFFSET_MS, Mutation, Node, Outputs, ReadFrame, ReadFrameKind,
};
use crate::reads::{ReadChecker, ServedRead};
use crate::report::{LincheckVerdict, RunOptions, RunReport};
use crate::throughput::Window;
use crate::trace::Trace;

/// Events queued at once; more means something floods the queue.
pub const MAX_QUEUED_EVENTS: usize = 1_000_000;
/// How often log matching and the liveness conditions are checked.
pub const CHECK_PERIOD_MS: u64 = 100;
/// After the heal, a leader must be elected within this long...
pub const LIVENESS_LEADER_BOUND_MS: u64 = 5_000;
/// ...and a probe write acknowledged, with every pending write resolved, within this long.
pub const LIVENESS_PROGRESS_BOUND_MS: u64 = 10_000;
/// A snapshot stream that lost its message is reported failed after this long.
pub const SNAPSHOT_STREAM_TIMEOUT_MS: u64 = 100;
/// A peer's transport sees a crashed node's connection close within this long (the kernel closes
/// a dead process's sockets at once; the reset still has to cross the link).
pub const CONNECTION_CLOSE_SEEN_MS_MAX: u64 = 5;

pub type Msg<F> = <<F as EngineFactory>::E as Engine>::Message;

#[derive(Debug)]
enum Event<M> {
    /// `node`'s next tick is due (see `Node::next_tick_due_ms`).
    Tick {
        node: NodeId,
        incarnation: u64,
    },
    Deliver {
        envelope: Envelope<M>,
        snapshot: bool,
    },
    FsyncDone {
        node: NodeId,
        incarnation: u64,
    },
    SnapshotReport {
        node: NodeId,
        incarnation: u64,
        peer: NodeId,
        status: SnapshotStatus,
    },
    Unreachable {
        node: NodeId,
        incarnation: u64,
        peer: NodeId,
    },
    /// `node`'s transport saw its connection to `peer` close: after `peer` crashed, or (a wrong
    /// hint) while it is alive.
    ConnectionLost {
        node: NodeId,
        incarnation: u64,
        peer: NodeId,
        /// `peer` was alive: the hint is wrong.
        wrong: bool,
    },
    Request {
        node: NodeId,
        request: ClientRequest,
    },
    /// A proposal forwarded to the leader over the peer transport (a TCP stream: never
    /// duplicated, lost with the link or the receiving process).
    Forward(Forward),
    ForwardFailed(ForwardFailure),
    /// A read barrier asked of the leader, or its answer (a stream frame, as `Forward`).
    Read(ReadFrame),
    Reply {
        reply: ClientReply,
        /// The node process that answered: a read session lasts one process lifetime.
        from: NodeId,
        incarnation: u64,
    },
    ClientWake {
        client: usize,
    },
    ClientTimeout {
        client: usize,
        op_id: u64,
    },
    CounterWake,
    CounterTimeout {
        op_id: u64,
    },
    FaultEpoch,
    Restart {
        node: NodeId,
    },
    Heal,
    Check,
}

impl<M> Event<M> {
    /// The node whose process handles the event (deferred while that node is paused).
    fn target(&self) -> Option<NodeId> {
        match self {
            Event::Tick { node, .. }
            | Event::FsyncDone { node, .. }
            | Event::SnapshotReport { node, .. }
            | Event::Unreachable { node, .. }
            | Event::ConnectionLost { node, .. }
            | Event::Request { node, .. } => Some(*node),
            Event::Forward(forward) => Some(forward.to),
            Event::ForwardFailed(failure) => Some(failure.to),
            Event::Read(frame) => Some(frame.to),
            Event::Deliver { envelope, .. } => Some(envelope.to),
            _ => None,
        }
    }
}

struct Rngs {
    network: SeededRng,
    faults: SeededRng,
    clients: SeededRng,
    disk: SeededRng,
    engines: SeededRng,
    /// Lost-connection hints, true and wrong: a stream of its own, so that adding them left every
    /// other stream's draws as they were.
    hints: SeededRng,
}

pub(crate) struct Sim<'f, F: EngineFactory> {
    factory: &'f F,
    config: SimConfig,
    now_ms: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Event<Msg<F>>>,
    nodes: Vec<Node<F::E>>,
    network: Network,
    clients: Clients,
    /// The exactly-once counter client (its id follows the probe's).
    counter: CounterClient,
    history: History,
    /// What the state machine answered each client write some replica applied (the first to apply
    /// it), by `(client_id, op_id)`.
    applied_writes: BTreeMap<(u64, u64), Result<CommandResponse, KvError>>,
    /// Writes that may have been applied: their bytes were, but another operation sent them too.
    /// A violation found while routing a node's outputs, reported after the event.
    deferred_violation: Option<Violation>,
    checker: Checker,
    /// The promises of each read level (session monotonicity, real states, bounded staleness).
    reads: ReadChecker,
    pub(crate) trace: Trace,
    rng: Rngs,
    phase: Phase,
    kept_down: BTreeSet<NodeId>,
    /// Crashes that wait for the node's next fsync request, with how long the node stays down:
    /// power lost while writes are in flight, so that unsynced writes are lost often, not only
    /// when an epoch boundary happens to fall inside an fsync.
    crash_at_next_fsync: BTreeMap<NodeId, u64>,
    /// Crashes that struck while an unsynced append was rewriting entries already durable.
    crashes_during_rewrites: u64,
    /// Lost-connection hints delivered to a live engine: true ones, wrong ones.
    hints_delivered: [u64; 2],
    /// A throughput run's measurement window, from when a leader first exists.
    window: Option<Window>,
}

impl<'f, F: EngineFactory> Sim<'f, F> {
    pub(crate) fn new(factory: &'f F, mut config: SimConfig, options: RunOptions) -> Self {
        if let Some(ms) = options.fault_phase_ms {
            config.fault_phase_ms = ms;
        }
        let mut root = SeededRng::new(config.seed);
        let mut rng = Rngs {
            network: root.fork(),
            faults: root.fork(),
            clients: root.fork(),
            disk: root.fork(),
            engines: root.fork(),
            hints: root.fork(),
        };
        let ids = config.node_ids();
        let membership = yizhi_engine::Membership::new(ids.iter().copied());
        let nodes = config
            .nodes
            .iter()
            .map(|nc| {
                let storage = yizhi_engine::MemStorage::new_with_membership(membership.clone());
                let engine = factory.build(
                    nc.id,
                    storage.clone(),
                    0,
                    config.engine_tuning,
                    rng.engines.fork(),
                );
                let timing = (nc.tick_interval_ms, nc.fsync_ms_max);
                let boot_id = rng.engines.next_u64().max(1);
                let mut node = Node::new(
                    nc.id,
                    engine,
                    Disk::new(storage),
                    timing,
                    nc.compact_every_entries,
                    boot_id,
                );
                node.mutation = options.mutation;
                node.wall_offset_ms = rng.engines.range_inclusive(0, MAX_WALL_CLOCK_OFFSET_MS);
                node
            })
            .collect();
        let network = Network::new(&ids, |from, to| config.link(from, to));
        let clients = Clients::new(config.client_count);
        let counter = CounterClient::new(config.client_count + 2);
        let mut checker = Checker::new(factory.term_identifies_value());
        // A node measures a request's time left on a clock up to TICK_SKEW_PCT_MAX % slow, and
        // compares forwarded deadlines on wall clocks up to MAX_WALL_CLOCK_OFFSET_MS apart.
        let skew_ms = config.workload.timeout_ms * TICK_SKEW_PCT_MAX / 100;
        checker.set_deadline_slack_ms(skew_ms + MAX_WALL_CLOCK_OFFSET_MS);
        Sim {
            factory,
            config,
            now_ms: 0,
            seq: 0,
            queue: BTreeMap::new(),
            nodes,
            network,
            clients,
            counter,
            history: History::default(),
            applied_writes: BTreeMap::new(),
            deferred_violation: None,
            checker,
            reads: ReadChecker::default(),
            trace: Trace::new(options.trace),
            rng,
            phase: Phase::Faults,
            kept_down: BTreeSet::new(),
            crash_at_next_fsync: BTreeMap::new(),
            crashes_during_rewrites: 0,
            hints_delivered: [0; 2],
            window: None,
        }
    }

    fn schedule(&mut self, at_ms: u64, event: Event<Msg<F>>) {
        assert!(
            at_ms >= self.now_ms,
            "event scheduled in the past: {at_ms} < {}",
            self.now_ms
        );
        assert!(
            self.queue.len() < MAX_QUEUED_EVENTS,
            "event queue overflow at {} ms",
            self.now_ms
        );
        self.seq += 1;
        self.queue.insert((at_ms, self.seq), event);
    }

    fn node(&mut self, id: NodeId) -> &mut Node<F::E> {
        &mut self.nodes[(id - 1) as usize]
    }

    fn start(&mut self) {
        for i in 0..self.nodes.len() {
            let (id, interval) = (self.nodes[i].id, self.nodes[i].tick_interval_ms);
            let first = self.rng.engines.range_inclusive(1, interval);
            self.nodes[i].next_tick_due_ms = first;
            self.schedule(
                first,
                Event::Tick {
                    node: id,
                    incarnation: 0,
                },
            );
        }
        for client in 0..self.config.client_count as usize {
            let at = self.rng.clients.range_inclusive(0, 100);
            self.schedule(at, Event::ClientWake { client });
        }
        let counter_at = self.rng.clients.range_inclusive(0, 100);
        self.schedule(counter_at, Event::CounterWake);
        self.schedule(0, Event::FaultEpoch);
        self.schedule(self.config.fault_phase_ms, Event::Heal);
        self.schedule(CHECK_PERIOD_MS, Event::Check);
    }

    /// Runs to completion or to the first violation.
    pub(crate) fn run(&mut self) -> Option<(u64, Violation)> {
        self.start();
        while let Some(((at_ms, _), event)) = self.queue.pop_first() {
            assert!(at_ms >= self.now_ms, "time went backwards");
            // A measurement window shortens the fault phase once it opens.
            let deadline_ms = self.config.fault_phase_ms + LIVENESS_PROGRESS_BOUND_MS + 10 * CHECK_PERIOD_MS;
            assert!(
                at_ms <= deadline_ms,
                "run passed its deadline without a liveness verdict"
            );
            self.now_ms = at_ms;
            if let Some(node) = event.target() {
                let paused_until = self.node(node).paused_until_ms;
                if paused_until > at_ms {
                    self.schedule(paused_until, event);
                    continue;
                }
            }
            let result = self.dispatch(event).and_then(|()| self.check_nodes());
            let result = result.and_then(|()| self.deferred_violation.take().map_or(Ok(()), Err));
            if let Err(violation) = result {
                return Some((self.now_ms, violation));
            }
            self.open_window_at_first_leader();
            if self.phase == Phase::Done {
                return self.final_checks().err().map(|v| (self.now_ms, v));
            }
        }
        unreachable!("the queue always holds the next check until the run is done")
    }

    fn dispatch(&mut self, event: Event<Msg<F>>) -> Result<(), Violation> {
        if let Some(node) = event.target()
            && !matches!(event, Event::Tick { .. })
        {
            self.catch_up_ticks(node)?;
        }
        match event {
            Event::Tick { node, incarnation } => self.on_tick(node, incarnation),
            Event::Deliver { envelope, snapshot } => self.on_deliver(envelope, snapshot),
            Event::FsyncDone { node, incarnation } => {
                self.with_node(node, incarnation, "fsync done", |n, ctx| n.fsync_done(ctx))
            }
            Event::SnapshotReport {
                node,
                incarnation,
                peer,
                status,
            } => {
                let what = format!("snapshot to {peer} {status:?}");
                self.with_node(node, incarnation, &what, |n, ctx| {
                    n.report_snapshot(peer, status, ctx)
                })
            }
            Event::Unreachable {
                node,
                incarnation,
                peer,
            } => {
                let what = format!("unreachable {peer}");
                self.with_node(node, incarnation, &what, |n, ctx| n.report_unreachable(peer, ctx))
            }
            Event::ConnectionLost {
                node,
                incarnation,
                peer,
                wrong,
            } => {
                let n = &self.nodes[(node - 1) as usize];
                if n.is_up() && n.incarnation == incarnation {
                    self.hints_delivered[usize::from(wrong)] += 1;
                }
                let what = format!("connection to {peer} lost{}", if wrong { " (wrong)" } else { "" });
                self.with_node(node, incarnation, &what, |n, ctx| {
                    n.report_connection_lost(peer, ctx)
                })
            }
            Event::Request { node, request } => self.on_request(node, request),
            Event::Forward(forward) => self.on_forward(forward),
            Event::Read(frame) => self.on_read_frame(frame),
            Event::ForwardFailed(failure) => {
                let (from, node) = (failure.from, failure.to);
                match self.network.arrive(from, node) {
                    Arrival::Held => {
                        self.schedule(self.now_ms + HELD_RECHECK_MS, Event::ForwardFailed(failure));
                        return Ok(());
                    }
                    Arrival::Drop => return Ok(()),
                    Arrival::Deliver => {}
                }
                let incarnation = self.node(node).incarnation;
                let what = format!("forward of {:?} failed: {}", failure.id, failure.failure);
                self.with_node(node, incarnation, &what, |n, _| Ok(n.forward_failed(&failure)))
            }
            Event::Reply {
                reply,
                from,
                incarnation,
            } => self.on_reply(reply, from, incarnation),
            Event::ClientWake { client } => {
                self.on_client_wake(client);
                Ok(())
            }
            Event::ClientTimeout { client, op_id } => {
                self.on_client_timeout(client, op_id);
                Ok(())
            }
            Event::CounterWake => {
                self.on_counter_wake();
                Ok(())
            }
            Event::CounterTimeout { op_id } => {
                if self.counter.on_timeout(op_id) {
                    self.trace
                        .record(self.now_ms, None, format_args!("counter op {op_id} timed out"));
                    self.schedule_counter_wake(NextStep::Retry { delay_ms: 0 });
                }
                Ok(())
            }
            Event::FaultEpoch => {
                self.on_fault_epoch();
                Ok(())
            }
            Event::Restart { node } => {
                if self.phase == Phase::Faults && !self.node(node).is_up() {
                    self.restart(node);
                }
                Ok(())
            }
            Event::Heal => {
                self.on_heal();
                Ok(())
            }
            Event::Check => self.on_check(),
        }
    }

    /// Runs `f` on a node if it is still the incarnation the event was meant for.
    fn with_node(
        &mut self,
        node: NodeId,
        incarnation: u64,
        what: &str,
        f: impl FnOnce(&mut Node<F::E>, &mut Ctx<'_>) -> Result<Outputs<Msg<F>>, Violation>,
    ) -> Result<(), Violation> {
        let n = &mut self.nodes[(node - 1) as usize];
        if !n.is_up() || n.incarnation != incarnation {
            return Ok(());
        }
        self.trace.record(self.now_ms, Some(node), format_args!("{what}"));
        let mut ctx = Ctx {
            now_ms: self.now_ms,
            checker: &mut self.checker,
            trace: &mut self.trace,
        };
        let out = f(n, &mut ctx)?;
        self.route(node, out);
        Ok(())
    }

    fn on_tick(&mut self, node: NodeId, incarnation: u64) -> Result<(), Violation> {
        let n = &self.nodes[(node - 1) as usize];
        if !n.is_up() || n.incarnation != incarnation {
            return Ok(());
        }
        self.catch_up_ticks(node)?;
        let n = &self.nodes[(node - 1) as usize];
        if !n.is_up() || n.incarnation != incarnation {
            return Ok(()); // Crashed at an fsync a tick asked for.
        }
        let due_ms = n.next_tick_due_ms;
        self.schedule(due_ms, Event::Tick { node, incarnation });
        self.maybe_wrong_hint(node, incarnation);
        Ok(())
    }

    /// Gives `node` every tick that has come due: ticks are the engines' clock, and a pause stops
    /// the process, not time. A runtime reads its monotonic clock before it acts on anything, so
    /// the catch-up runs before whatever event the node handles first after a pause (a lease read
    /// served before it would trust a lease that has run out).
    fn catch_up_ticks(&mut self, node: NodeId) -> Result<(), Violation> {
        loop {
            let n = &mut self.nodes[(node - 1) as usize];
            if !n.is_up() || n.next_tick_due_ms > self.now_ms {
                return Ok(());
            }
            n.next_tick_due_ms += n.tick_interval_ms;
            self.trace.note(self.now_ms, Some(node), "tick");
            let mut ctx = Ctx {
                now_ms: self.now_ms,
                checker: &mut self.checker,
                trace: &mut self.trace,
            };
            let out = n.tick(&mut ctx)?;
            self.route(node, out);
        }
    }

    /// Now and then during the faults, tells a node that its leader's connection closed although
    /// the leader lives: the engines must stay safe whatever the hint says.
    fn maybe_wrong_hint(&mut self, node: NodeId, incarnation: u64) {
        let ppm = self.config.profile.spurious_hint_ppm;
        if self.phase != Phase::Faults || !self.rng.hints.chance(ppm, crate::network::PPM) {
            return;
        }
        let leader = self.node(node).engine().and_then(|e| e.status().leader);
        let peer = match leader.filter(|&l| l != node) {
            Some(leader) => leader,
            None if self.nodes.len() > 1 => {
                let others: Vec<NodeId> = self
                    .config
                    .node_ids()
                    .into_iter()
                    .filter(|&p| p != node)
                    .collect();
                others[self.rng.hints.below(others.len() as u64) as usize]
            }
            None => return,
        };
        let at = self.now_ms + self.rng.hints.range_inclusive(1, CONNECTION_CLOSE_SEEN_MS_MAX);
        let event = Event::ConnectionLost {
            node,
            incarnation,
            peer,
            wrong: true,
        };
        self.schedule(at, event);
    }

    /// A crashed process's sockets close: every live peer whose link from it still carries
    /// packets sees the connection go, shortly after.
    fn announce_crash(&mut self, crashed: NodeId) {
        for peer in self.config.node_ids() {
            if peer == crashed || !self.node(peer).is_up() || self.network.is_blocked(crashed, peer) {
                continue;
            }
            let incarnation = self.node(peer).incarnation;
            let at = self.now_ms + self.rng.hints.range_inclusive(1, CONNECTION_CLOSE_SEEN_MS_MAX);
            let event = Event::ConnectionLost {
                node: peer,
                incarnation,
                peer: crashed,
                wrong: false,
            };
            self.schedule(at, event);
        }
    }

    fn on_deliver(&mut self, envelope: Envelope<Msg<F>>, snapshot: bool) -> Result<(), Violation> {
        let (from, to) = (envelope.from, envelope.to);
        let arrival = self.network.arrive(from, to);
        if arrival == Arrival::Held {
            let event = Event::Deliver { envelope, snapshot };
            self.schedule(self.now_ms + HELD_RECHECK_MS, event);
            return Ok(());
        }
        let arrived = arrival == Arrival::Deliver && self.node(to).is_up();
        if !arrived {
            self.trace
                .record(self.now_ms, Some(to), format_args!("lost in flight from {from}"));
            if snapshot {
                self.report_snapshot_later(from, to, SnapshotStatus::Failed, SNAPSHOT_STREAM_TIMEOUT_MS);
            }
            return Ok(());
        }
        self.trace
            .record(self.now_ms, Some(to), format_args!("recv {:?}", envelope.msg));
        let n = &mut self.nodes[(to - 1) as usize];
        let mut ctx = Ctx {
            now_ms: self.now_ms,
            checker: &mut self.checker,
            trace: &mut self.trace,
        };
        let out = n.step(envelope, &mut ctx)?;
        self.route(to, out);
        if snapshot {
            self.report_snapshot_later(from, to, SnapshotStatus::Finished, 0);
        }
        Ok(())
    }

    fn report_snapshot_later(&mut self, node: NodeId, peer: NodeId, status: SnapshotStatus, delay_ms: u64) {
        let incarnation = self.node(node).incarnation;
        self.schedule(
            self.now_ms + delay_ms,
            Event::SnapshotReport {
                node,
                incarnation,
                peer,
                status,
            },
        );
    }

    /// Sends a node's messages, schedules its fsync and its client replies.
    fn route(&mut self, node: NodeId, out: Outputs<Msg<F>>) {
        for envelope in out.messages {
            assert_eq!(
                envelope.from, node,
                "node {node} sent a message as {}",
                envelope.from
            );
            self.send(envelope);
        }
        for forward in out.forwards {
            self.send_peer_frame(forward.from, forward.to, Event::Forward(forward));
        }
        for failure in out.forward_failures {
            self.send_peer_frame(failure.from, failure.to, Event::ForwardFailed(failure));
        }
        for frame in out.read_frames {
            self.send_peer_frame(frame.from, frame.to, Event::Read(frame));
        }
        for applied in out.applied_entries {
            self.reads.observe_applied(&applied.entry);
            for (value, revision) in &applied.written {
                if let Err(violation) = self.checker.observe_written(value, *revision) {
                    self.deferred_violation.get_or_insert(violation);
                }
            }
            let Some(response) = applied.response else {
                continue;
            };
            if let Some(op) = self.checker.attribute(&applied.entry) {
                self.applied_writes.entry(op).or_insert(response);
            }
        }
        let incarnation = self.node(node).incarnation;
        for reply in out.replies {
            let at = self.now_ms + self.rng.clients.range_inclusive(1, CLIENT_DELAY_MS_MAX);
            let event = Event::Reply {
                reply,
                from: node,
                incarnation,
            };
            self.schedule(at, event);
        }
        let crash_now = out
            .fsync_requested
            .then(|| self.crash_at_next_fsync.remove(&node));
        if let Some(Some(down_ms)) = crash_now {
            self.crash(node, down_ms);
        } else if out.fsync_requested {
            let n = &self.nodes[(node - 1) as usize];
            let (max, incarnation) = (n.fsync_ms_max, n.incarnation);
            let at = self.now_ms + self.rng.disk.range_inclusive(1, max);
            self.schedule(at, Event::FsyncDone { node, incarnation });
        }
    }

    /// A frame of the member runtime (not an engine message) on the peer link `from → to`: it
    /// takes the link's delay and faults, but is never duplicated (TCP does not duplicate).
    fn send_peer_frame(&mut self, from: NodeId, to: NodeId, event: Event<Msg<F>>) {
        match self
            .network
            .send_once(from, to, self.now_ms, &mut self.rng.network)
        {
            SendOutcome::Deliver(times) => {
                assert_eq!(times.len(), 1, "a stream frame was duplicated");
                self.schedule(times[0], event);
            }
            SendOutcome::Dropped(reason) => {
                self.trace.record(
                    self.now_ms,
                    Some(from),
                    format_args!("frame to {to} dropped ({reason:?})"),
                );
            }
        }
    }

    fn on_forward(&mut self, forward: Forward) -> Result<(), Violation> {
        let (from, to) = (forward.from, forward.to);
        let arrival = self.network.arrive(from, to);
        if arrival == Arrival::Held {
            self.schedule(self.now_ms + HELD_RECHECK_MS, Event::Forward(forward));
            return Ok(());
        }
        if !(arrival == Arrival::Deliver && self.node(to).is_up()) {
            self.trace.record(
                self.now_ms,
                Some(to),
                format_args!("forward from {from} lost in flight"),
            );
            return Ok(());
        }
        let incarnation = self.node(to).incarnation;
        let what = format!(
            "forwarded {:?} from {from}",
            yizhi_member::peek_proposal_id(&forward.data)
        );
        self.with_node(to, incarnation, &what, |n, ctx| n.forwarded(forward, ctx))
    }

    /// A read-barrier frame reaches its node (the process running there now: the sender's queue
    /// outlives a restart of the receiver, as the server's transport does).
    fn on_read_frame(&mut self, frame: ReadFrame) -> Result<(), Violation> {
        let (from, to) = (frame.from, frame.to);
        match self.network.arrive(from, to) {
            Arrival::Held => {
                self.schedule(self.now_ms + HELD_RECHECK_MS, Event::Read(frame));
                return Ok(());
            }
            Arrival::Drop => return Ok(()),
            Arrival::Deliver => {}
        }
        let incarnation = self.node(to).incarnation;
        let what = format!("{:?} from {from}", frame.kind);
        self.with_node(to, incarnation, &what, |n, ctx| match frame.kind {
            ReadFrameKind::Request { read_id } => n.read_requested(from, read_id, ctx),
            ReadFrameKind::Response { read_id, index } => Ok(n.read_answered(read_id, index)),
        })
    }

    fn send(&mut self, envelope: Envelope<Msg<F>>) {
        let (from, to) = (envelope.from, envelope.to);
        let snapshot = self.factory.is_snapshot(&envelope.msg);
        match self.network.send(from, to, self.now_ms, &mut self.rng.network) {
            SendOutcome::Deliver(times) => {
                for at in times {
                    self.schedule(
                        at,
                        Event::Deliver {
                            envelope: envelope.clone(),
                            snapshot,
                        },
                    );
                }
            }
            SendOutcome::Dropped(reason) => {
                self.trace
                    .record(self.now_ms, Some(from), format_args!("drop to {to} ({reason:?})"));
                if reason == DropReason::Partitioned {
                    let incarnation = self.node(from).incarnation;
                    self.schedule(
                        self.now_ms + 1,
                        Event::Unreachable {
                            node: from,
                            incarnation,
                            peer: to,
                        },
                    );
                }
                if snapshot {
                    self.report_snapshot_later(from, to, SnapshotStatus::Failed, SNAPSHOT_STREAM_TIMEOUT_MS);
                }
            }
        }
    }

    fn on_request(&mut self, node: NodeId, request: ClientRequest) -> Result<(), Violation> {
        if !self.node(node).is_up() {
            let (client, op) = (request.client_id, request.op_id);
            self.trace.record(
                self.now_ms,
                Some(node),
                format_args!("client {client} op {op} lost: node is down"),
            );
            return Ok(());
        }
        let (client, op) = (request.client_id, request.op_id);
        match &request.request {
            Request::Write { command, .. } => self.trace.record(
                self.now_ms,
                Some(node),
                format_args!("client {client} op {op} {command:?}"),
            ),
            Request::Read { range, level } => self.trace.record(
                self.now_ms,
                Some(node),
                format_args!(
                    "client {client} op {op} read {:?}..{:?} {level:?}",
                    range.key, range.range_end
                ),
            ),
        }
        let n = &mut self.nodes[(node - 1) as usize];
        let mut ctx = Ctx {
            now_ms: self.now_ms,
            checker: &mut self.checker,
            trace: &mut self.trace,
        };
        let out = n.request(request, &mut ctx)?;
        self.route(node, out);
        Ok(())
    }

    fn on_reply(&mut self, reply: ClientReply, from: NodeId, incarnation: u64) -> Result<(), Violation> {
        self.trace.record(
            self.now_ms,
            None,
            format_args!(
                "client {} op {} got {:?}",
                reply.client_id, reply.op_id, reply.reply
            ),
        );
        if let Reply::Wrote { position, response } = &reply.reply {
            self.checker
                .observe_ack(reply.client_id, reply.op_id, *position)?;
            self.check_ack_is_own_write(&reply, response)?;
            if let Ok(response) = response {
                self.reads.observe_ack(self.now_ms, response);
            }
        }
        if reply.client_id == self.counter.client_id {
            let step = match self.counter.on_reply(&reply, &mut self.history)? {
                CounterStep::Ignore => return Ok(()),
                CounterStep::Retry => NextStep::Retry { delay_ms: 0 },
                CounterStep::Acknowledged => NextStep::Think { delay_ms: 0 },
            };
            self.schedule_counter_wake(step);
            return Ok(());
        }
        let index = (reply.client_id - 1) as usize;
        if let Reply::Wrote { .. } = &reply.reply
            && let Some(started_ms) = self.clients.get(index).write_started_ms(reply.op_id)
        {
            self.count_acked_write(index, started_ms);
        }
        if let Reply::Read(response) = &reply.reply
            && let Some(read) = self.clients.get(index).read_in_flight(reply.op_id)
        {
            let request = crate::kv::read_for(read.input).expect("a read input");
            let served = ServedRead {
                client_id: reply.client_id,
                node: from,
                incarnation,
                node_tick_interval_ms: self.nodes[(from - 1) as usize].tick_interval_ms,
                level: read.level,
                invoke_ms: read.invoke_ms,
                request: &request,
                response,
            };
            self.reads.check(&served)?;
        }
        let client = self.clients.get_mut(index);
        match client.on_reply(
            &reply,
            &self.config.workload,
            &mut self.rng.clients,
            &mut self.history,
        ) {
            NextStep::Ignore => {}
            NextStep::Retry { delay_ms } | NextStep::Think { delay_ms } => {
                self.schedule(self.now_ms + delay_ms, Event::ClientWake { client: index });
            }
        }
        Ok(())
    }

    /// The answer a client got for its write is the one its own entry produced: that entry was
    /// applied (by some replica, before the answer) with this very response.
    fn check_ack_is_own_write(
        &self,
        reply: &ClientReply,
        response: &Result<CommandResponse, KvError>,
    ) -> Result<(), Violation> {
        if self.config_mutation_acks_early() {
            return Ok(());
        }
        match self.applied_writes.get(&(reply.client_id, reply.op_id)) {
            Some(own) if own == response => Ok(()),
            own => Err(Violation::AckNotOwnWrite {
                client_id: reply.client_id,
                op_id: reply.op_id,
                detail: format!("answered {response:?}, its own entry applied as {own:?}"),
            }),
        }
    }

    /// `Mutation::AckOnPropose` answers before anything is applied; other checks catch it.
    fn config_mutation_acks_early(&self) -> bool {
        self.nodes
            .first()
            .is_some_and(|n| n.mutation == Mutation::AckOnPropose)
    }

    fn on_client_wake(&mut self, client: usize) {
        let room = self.history.len() < self.config.max_history_ops;
        if !room && let Some(window) = self.window.as_mut() {
            window.note_history_full();
        }
        let mut env = ClientEnv::new(
            self.now_ms,
            &self.config.workload,
            self.nodes.len() as u64,
            &mut self.rng.clients,
            &mut self.history,
        );
        let Some(sending) = self.clients.wake(client, room, self.phase, &self.nodes, &mut env) else {
            return;
        };
        let op_id = sending.request.op_id;
        self.send_request(sending, Event::ClientTimeout { client, op_id });
    }

    /// A client's request leaves for its node, and its timeout is set.
    fn send_request(&mut self, sending: Sending, timeout: Event<Msg<F>>) {
        let Sending {
            node,
            request,
            arrive_ms,
            timeout_ms,
        } = sending;
        self.schedule(arrive_ms, Event::Request { node, request });
        self.schedule(timeout_ms, timeout);
    }

    /// Draws the delay before the counter's next attempt (a retry) or increment (a think).
    fn schedule_counter_wake(&mut self, step: NextStep) {
        let delay = self
            .counter
            .wake_delay_ms(step, &self.config.workload, &mut self.rng.clients);
        if let Some(delay_ms) = delay {
            self.schedule(self.now_ms + delay_ms, Event::CounterWake);
        }
    }

    fn on_counter_wake(&mut self) {
        let room = self.history.len() < self.config.max_history_ops;
        let may_begin = self.phase == Phase::Faults && room;
        let done = self.phase == Phase::Done;
        let mut env = ClientEnv::new(
            self.now_ms,
            &self.config.workload,
            self.nodes.len() as u64,
            &mut self.rng.clients,
            &mut self.history,
        );
        let Some(sending) = self.counter.wake(may_begin, done, &mut env) else {
            return;
        };
        let op_id = sending.request.op_id;
        self.send_request(sending, Event::CounterTimeout { op_id });
    }

    fn on_client_timeout(&mut self, client: usize, op_id: u64) {
        let mut env = ClientEnv::new(
            self.now_ms,
            &self.config.workload,
            self.nodes.len() as u64,
            &mut self.rng.clients,
            &mut self.history,
        );
        let Some(delay_ms) = self.clients.timeout(client, op_id, &mut env) else {
            return;
        };
        self.trace.record(
            self.now_ms,
            None,
            format_args!("client {} op {op_id} timed out", client + 1),
        );
        self.schedule(self.now_ms + delay_ms, Event::ClientWake { client });
    }

    fn current_leader(&self) -> Option<NodeId> {
        let up = self.nodes.iter().filter_map(|n| n.engine().map(|e| e.status()));
        let max_term = up.clone().map(|s| s.term).max()?;
        up.filter(|s| s.role == Role::Leader && s.term == max_term)
            .map(|s| s.id)
            .next()
    }

    fn on_fault_epoch(&mut self) {
        if self.phase != Phase::Faults {
            return;
        }
        let ids = self.config.node_ids();
        let live: BTreeSet<NodeId> = self.nodes.iter().filter(|n| n.is_up()).map(|n| n.id).collect();
        let leader = self.current_leader();
        let plan = plan_epoch(&self.config.profile, &mut self.rng.faults, &ids, &live, leader);
        self.trace
            .record(self.now_ms, None, format_args!("fault epoch {plan:?}"));
        self.network
            .set_blocked(&plan.topology.blocked_links(&ids), plan.partition_holds);
        for clog in &plan.clogs {
            self.network.clog(
                clog.from,
                clog.to,
                self.now_ms + clog.duration_ms,
                clog.extra_delay_ms,
            );
        }
        for &(node, down_ms) in &plan.crashes {
            if self.rng.disk.chance(1, 2) {
                self.crash_at_next_fsync.insert(node, down_ms);
            } else {
                self.crash_at_next_fsync.remove(&node);
                self.crash(node, down_ms);
            }
        }
        for &(node, pause_ms) in &plan.pauses {
            self.node(node).paused_until_ms = self.now_ms + pause_ms;
        }
        let next = self.now_ms + plan.duration_ms;
        if next < self.config.fault_phase_ms {
            self.schedule(next, Event::FaultEpoch);
        }
    }

    /// Power loss: a random prefix of the unsynced writes survives, each write whole (the WAL
    /// keeps an append entirely or drops it).
    fn crash(&mut self, node: NodeId, down_ms: u64) {
        assert_eq!(self.phase, Phase::Faults, "crashes belong to the fault phase");
        let unsynced = self.node(node).disk.unsynced_len() as u64;
        let survivors = self.rng.disk.range_inclusive(0, unsynced) as usize;
        let rewriting = self.node(node).disk.holds_rewrite_of_durable_entries();
        self.crashes_during_rewrites += u64::from(rewriting);
        let durable_last = self.node(node).disk.durable().last_index();
        self.node(node).crash(survivors);
        let now_last = self.node(node).disk.durable().last_index();
        self.trace.record(
            self.now_ms,
            Some(node),
            format_args!(
                "crash ({survivors} of {unsynced} unsynced writes survive{}; durable last index \
                 {durable_last} -> {now_last})",
                if rewriting {
                    ", one of them rewrote durable entries"
                } else {
                    ""
                }
            ),
        );
        self.schedule(self.now_ms + down_ms, Event::Restart { node });
        self.announce_crash(node);
    }

    fn restart(&mut self, node: NodeId) {
        let rng = self.rng.engines.fork();
        let tuning = self.config.engine_tuning;
        let n = &mut self.nodes[(node - 1) as usize];
        n.restart(self.factory, tuning, rng, &mut self.checker);
        let (incarnation, interval) = (n.incarnation, n.tick_interval_ms);
        self.trace.record(
            self.now_ms,
            Some(node),
            format_args!("restarted (incarnation {incarnation})"),
        );
        let due_ms = self.now_ms + interval;
        self.node(node).next_tick_due_ms = due_ms;
        self.schedule(due_ms, Event::Tick { node, incarnation });
    }

    /// End of the fault phase: heal the network, bring back all but at most a minority of the
    /// crashed nodes, unpause everyone, and let only the probe client issue new operations.
    fn on_heal(&mut self) {
        // A throughput run schedules a fallback heal as well as its window's end: the first wins.
        if self.phase != Phase::Faults {
            return;
        }
        if let Some(window) = self.window.as_mut() {
            window.close(self.checker.last_committed_index());
        }
        self.phase = Phase::Liveness {
            healed_at_ms: self.now_ms,
        };
        self.network.make_reliable();
        self.crash_at_next_fsync.clear();
        let may_stay_down = (self.nodes.len() - 1) / 2;
        for id in self.config.node_ids() {
            self.node(id).paused_until_ms = 0;
            if self.node(id).is_up() {
                continue;
            }
            if self.kept_down.len() < may_stay_down && self.rng.faults.chance(1, 3) {
                self.kept_down.insert(id);
            } else {
                self.restart(id);
            }
        }
        self.trace.record(
            self.now_ms,
            None,
            format_args!("heal; kept down {:?}", self.kept_down),
        );
        let probe = self.clients.probe_index();
        self.schedule(self.now_ms, Event::ClientWake { client: probe });
    }

    /// A throughput run measures from the moment a leader first exists for `measure_window_ms`;
    /// the heal at its end stops the regular clients and the loss.
    fn open_window_at_first_leader(&mut self) {
        let Some(length_ms) = self.config.measure_window_ms else {
            return;
        };
        if self.window.is_some() || self.phase != Phase::Faults || self.current_leader().is_none() {
            return;
        }
        let end_ms = self.now_ms + length_ms;
        assert!(
            end_ms <= self.config.fault_phase_ms,
            "the window opened after its fallback heal was due"
        );
        self.window = Some(Window::open(
            self.now_ms,
            length_ms,
            self.checker.last_committed_index(),
        ));
        self.config.fault_phase_ms = end_ms;
        self.trace.record(
            self.now_ms,
            None,
            format_args!("measurement window opens until {end_ms} ms"),
        );
        self.schedule(end_ms, Event::Heal);
    }

    /// A regular client's write was acknowledged: counted, with its latency, if it began and ended
    /// inside the window.
    fn count_acked_write(&mut self, client: usize, started_ms: u64) {
        if self.clients.is_probe(client) {
            return;
        }
        assert!(
            started_ms <= self.now_ms,
            "a write acknowledged before it started"
        );
        if let Some(window) = self.window.as_mut() {
            window.count_acked_write(self.now_ms, started_ms, self.config.max_history_ops);
        }
    }

    fn on_check(&mut self) -> Result<(), Violation> {
        let logs: Vec<(NodeId, &yizhi_engine::MemStorage)> =
            self.nodes.iter().map(|n| (n.id, n.log())).collect();
        if self.factory.term_identifies_value() {
            check_log_matching(&logs)?;
        }
        self.checker.check_acked_writes()?;
        self.check_state_hashes()?;
        self.counter.check_bound(&self.nodes)?;
        if let Phase::Liveness { healed_at_ms } = self.phase {
            self.check_liveness(healed_at_ms)?;
        }
        if self.phase != Phase::Done {
            self.schedule(self.now_ms + CHECK_PERIOD_MS, Event::Check);
        }
        Ok(())
    }

    /// After the heal: a leader within a bound, then a probe write acknowledged, every write
    /// proposed before the heal resolved, and every live node caught up, within a bound.
    fn check_liveness(&mut self, healed_at_ms: u64) -> Result<(), Violation> {
        let waited_ms = self.now_ms - healed_at_ms;
        let Some(leader) = self.current_leader() else {
            if waited_ms > LIVENESS_LEADER_BOUND_MS {
                return Err(Violation::NoLeaderAfterHeal { waited_ms });
            }
            return Ok(());
        };
        let probe = self.clients.probe();
        let probe_done = probe.acked_writes > 0 && !probe.is_busy() && !self.counter.has_unacknowledged();
        let leader_commit = self.node(leader).engine().map_or(0, |e| e.status().commit);
        let lagging: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.is_up())
            .filter(|n| n.has_pending_write_before(healed_at_ms) || n.applied() < leader_commit)
            .map(|n| {
                format!(
                    "n{} applied {} writes pending from before the heal {}",
                    n.id,
                    n.applied(),
                    n.has_pending_write_before(healed_at_ms)
                )
            })
            .collect();
        if probe_done && lagging.is_empty() {
            self.phase = Phase::Done;
            return Ok(());
        }
        if waited_ms > LIVENESS_PROGRESS_BOUND_MS {
            let detail = format!(
                "leader n{leader} commit {leader_commit}, probe done {probe_done}, lagging {lagging:?}"
            );
            return Err(Violation::NoProgressAfterHeal { waited_ms, detail });
        }
        Ok(())
    }

    /// The invariants that hold after every step: one leader per term, leader completeness at
    /// each new leadership, commit monotonic and never below the durable commit.
    fn check_nodes(&mut self) -> Result<(), Violation> {
        for n in self.nodes.iter_mut() {
            let mut ctx = Ctx {
                now_ms: self.now_ms,
                checker: &mut self.checker,
                trace: &mut self.trace,
            };
            let Some(status) = n.observe(&mut ctx) else {
                continue;
            };
            if status.role == Role::Leader && self.checker.observe_leader(n.id, status.term)? {
                let log = n.engine().expect("observed node is up").storage();
                self.checker.check_leader_complete(n.id, status.term, log)?;
            }
            let durable_commit = n.disk.durable().hard_state().commit;
            self.checker.observe_commit(n.id, status.commit, durable_commit)?;
        }
        Ok(())
    }

    /// Replicas at the same applied index must hold the same state machine state.
    fn check_state_hashes(&mut self) -> Result<(), Violation> {
        for n in self.nodes.iter().filter(|n| n.is_up()) {
            self.checker
                .observe_state_hash(n.id, n.applied(), n.state_hash())?;
        }
        Ok(())
    }

    fn final_checks(&mut self) -> Result<(), Violation> {
        self.check_state_hashes()?;
        self.counter.check_exact(&self.nodes)?;
        self.clients.abandon_all(&mut self.history);
        let logs: Vec<(NodeId, &yizhi_engine::MemStorage)> =
            self.nodes.iter().map(|n| (n.id, n.log())).collect();
        if self.factory.term_identifies_value() {
            check_log_matching(&logs)?;
        }
        self.checker.check_acked_writes()
    }

    pub(crate) fn report(&self, violation: Option<(u64, Violation)>, lincheck: LincheckVerdict) -> RunReport {
        RunReport {
            seed: self.config.seed,
            engine: self.factory.name(),
            node_count: self.nodes.len(),
            fault_phase_ms: self.config.fault_phase_ms,
            simulated_ms: self.now_ms,
            events: self.trace.events(),
            trace_hash: self.trace.hash(),
            ops: self.history.len(),
            committed_entries: self.checker.committed_len(),
            reads_checked: self.reads.checked_by_level,
            bounded_reads_served_locally: self.nodes.iter().map(|n| n.bounded_reads_served_locally).sum(),
            reads_asked_of_leader: self.nodes.iter().map(|n| n.reads_asked_of_leader).sum(),
            counter_increments: self.counter.acknowledged,
            counter_attempts: self.counter.attempts,
            crashes_during_rewrites: self.crashes_during_rewrites,
            hints_delivered: self.hints_delivered,
            window: self.window.as_ref().and_then(Window::closed_stats),
            lincheck,
            lincheck_wall_us: 0,
            violation,
        }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// The history for the linearizability check, with never-applied unknown writes left out.
    pub(crate) fn history_for_check(
        &self,
    ) -> Vec<yizhi_lincheck::Operation<yizhi_lincheck::mvcc::MvccInput, yizhi_lincheck::mvcc::MvccOutput>>
    {
        self.history.resolved(|client, op| {
            if let Some(response) = self.applied_writes.get(&(client, op)) {
                WriteKnowledge::Applied(response)
            } else {
                WriteKnowledge::NeverApplied
            }
        })
    }
}
