//! The event loop: one queue ordered by (simulated ms, sequence number), one thread, one seed.
//!
//! A run has three phases. Faults: clients run, the fault schedule re-decides the network, crashes
//! and pauses every epoch. Liveness: the network heals, crashed nodes restart (all but at most a
//! minority), and a probe client must get writes through within a bound. Final: log matching,
//! acknowledged writes and linearizability of the whole history.

use std::collections::BTreeMap;

use yizhi_engine::{Engine, Envelope, NodeId, SeededRng, SnapshotStatus};

use yizhi_kv::{CommandResponse, KvError};

use crate::client::{ClientReply, ClientRequest, History, WriteKnowledge};
use crate::clients::Clients;
use crate::clock::TICK_SKEW_PCT_MAX;
use crate::config::SimConfig;
use crate::counter::CounterClient;
use crate::disk::Disk;
use crate::engines::{EngineFactory, EngineStart};
use crate::faults::{FaultState, Phase};
use crate::invariants::{Checker, Violation};
use crate::network::Network;
use crate::node::{
    Ctx, Forward, ForwardFailure, MAX_WALL_CLOCK_OFFSET_MS, Mutation, Node, Outputs, ReadFrame,
};
use crate::reads::ReadChecker;
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

pub type Msg<F> = <<F as EngineFactory>::E as Engine>::Message;

#[derive(Debug)]
pub(crate) enum Event<M> {
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

/// The nodes of a fresh cluster, each with its engine, an empty disk, a boot id and a wall-clock
/// offset drawn from the engines' stream (in this order: the seed replays them).
fn boot_nodes<F: EngineFactory>(
    factory: &F,
    config: &SimConfig,
    mutation: Mutation,
    rng: &mut SeededRng,
) -> Vec<Node<F::E>> {
    let membership = yizhi_engine::Membership::new(config.node_ids());
    config
        .nodes
        .iter()
        .map(|nc| {
            let storage = yizhi_engine::MemStorage::new_with_membership(membership.clone());
            let engine = factory.build(EngineStart {
                id: nc.id,
                storage: storage.clone(),
                applied: 0,
                tuning: config.engine_tuning,
                rng: rng.fork(),
            });
            let timing = (nc.tick_interval_ms, nc.fsync_ms_max);
            let boot_id = rng.next_u64().max(1);
            let mut node = Node::new(
                nc.id,
                engine,
                Disk::new(storage),
                timing,
                nc.compact_every_entries,
                boot_id,
            );
            node.mutation = mutation;
            node.wall_offset_ms = rng.range_inclusive(0, MAX_WALL_CLOCK_OFFSET_MS);
            node
        })
        .collect()
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

pub(crate) struct Rngs {
    pub(crate) network: SeededRng,
    pub(crate) clients: SeededRng,
    pub(crate) disk: SeededRng,
    pub(crate) engines: SeededRng,
}

pub(crate) struct Sim<'f, F: EngineFactory> {
    pub(crate) factory: &'f F,
    pub(crate) config: SimConfig,
    pub(crate) now_ms: u64,
    pub(crate) seq: u64,
    pub(crate) queue: BTreeMap<(u64, u64), Event<Msg<F>>>,
    pub(crate) nodes: Vec<Node<F::E>>,
    pub(crate) network: Network,
    pub(crate) clients: Clients,
    /// The exactly-once counter client (its id follows the probe's).
    pub(crate) counter: CounterClient,
    pub(crate) history: History,
    /// What the state machine answered each client write some replica applied (the first to apply
    /// it), by `(client_id, op_id)`.
    pub(crate) applied_writes: BTreeMap<(u64, u64), Result<CommandResponse, KvError>>,
    /// A violation found while routing a node's outputs, reported after the event.
    pub(crate) deferred_violation: Option<Violation>,
    pub(crate) checker: Checker,
    /// The promises of each read level (session monotonicity, real states, bounded staleness).
    pub(crate) reads: ReadChecker,
    pub(crate) trace: Trace,
    pub(crate) rng: Rngs,
    pub(crate) phase: Phase,
    pub(crate) faults: FaultState,
    /// A throughput run's measurement window, from when a leader first exists.
    pub(crate) window: Option<Window>,
}

impl<'f, F: EngineFactory> Sim<'f, F> {
    pub(crate) fn new(factory: &'f F, mut config: SimConfig, options: RunOptions) -> Self {
        if let Some(ms) = options.fault_phase_ms {
            config.fault_phase_ms = ms;
        }
        let mut root = SeededRng::new(config.seed);
        // Forked in this order, whoever owns each stream: the seed replays them.
        let network = root.fork();
        let faults = root.fork();
        let clients = root.fork();
        let disk = root.fork();
        let engines = root.fork();
        let hints = root.fork();
        let faults = FaultState::new(faults, hints);
        let mut rng = Rngs {
            network,
            clients,
            disk,
            engines,
        };
        let ids = config.node_ids();
        let nodes = boot_nodes(factory, &config, options.mutation, &mut rng.engines);
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
            faults,
            window: None,
        }
    }

    pub(crate) fn schedule(&mut self, at_ms: u64, event: Event<Msg<F>>) {
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

    pub(crate) fn node(&mut self, id: NodeId) -> &mut Node<F::E> {
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
            } => self.on_snapshot_report(node, incarnation, peer, status),
            Event::Unreachable {
                node,
                incarnation,
                peer,
            } => {
                let what = format!("unreachable {peer}");
                self.with_node(node, incarnation, &what, |n, ctx| {
                    n.feed(|e| e.report_unreachable(peer), ctx)
                })
            }
            Event::ConnectionLost {
                node,
                incarnation,
                peer,
                wrong,
            } => self.on_connection_lost(node, incarnation, peer, wrong),
            Event::Request { node, request } => self.on_request(node, request),
            Event::Forward(forward) => self.on_forward(forward),
            Event::Read(frame) => self.on_read_frame(frame),
            Event::ForwardFailed(failure) => self.on_forward_failed(failure),
            Event::Reply {
                reply,
                from,
                incarnation,
            } => self.on_reply(reply, from, incarnation),
            Event::Check => self.on_check(),
            timer => {
                self.on_timer(timer);
                Ok(())
            }
        }
    }

    /// The events no node handles and no check can fail at: clients', the counter's and the
    /// fault schedule's timers.
    fn on_timer(&mut self, event: Event<Msg<F>>) {
        match event {
            Event::ClientWake { client } => self.on_client_wake(client),
            Event::ClientTimeout { client, op_id } => self.on_client_timeout(client, op_id),
            Event::CounterWake => self.on_counter_wake(),
            Event::CounterTimeout { op_id } => self.on_counter_timeout(op_id),
            Event::FaultEpoch => self.on_fault_epoch(),
            Event::Restart { node } => self.on_restart(node),
            Event::Heal => self.on_heal(),
            other => unreachable!("{other:?} is not a timer"),
        }
    }

    /// Runs `f` on a node if it is still the incarnation the event was meant for.
    pub(crate) fn with_node(
        &mut self,
        node: NodeId,
        incarnation: u64,
        what: &str,
        f: impl FnOnce(&mut Node<F::E>, &mut Ctx<'_>) -> Result<Outputs<Msg<F>>, Violation>,
    ) -> Result<(), Violation> {
        let n = &self.nodes[(node - 1) as usize];
        if !n.is_up() || n.incarnation != incarnation {
            return Ok(());
        }
        self.trace.record(self.now_ms, Some(node), format_args!("{what}"));
        self.drive_node(node, f)
    }

    /// Runs `f` on `node`'s process with this event's context, then routes what it asked for.
    pub(crate) fn drive_node(
        &mut self,
        node: NodeId,
        f: impl FnOnce(&mut Node<F::E>, &mut Ctx<'_>) -> Result<Outputs<Msg<F>>, Violation>,
    ) -> Result<(), Violation> {
        let n = &mut self.nodes[(node - 1) as usize];
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
            self.drive_node(node, |n, ctx| n.tick(ctx))?;
        }
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
            crashes_during_rewrites: self.faults.crashes_during_rewrites,
            hints_delivered: self.faults.hints_delivered,
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
