//! The run's phases on the cluster: each fault epoch applies `faults.rs`'s plan (links, clogs,
//! crashes now or at the next fsync, pauses) and its lost-connection hints, true and wrong; the
//! heal ends the faults (early, at the end of a throughput window); the liveness check ends the
//! run once the healed cluster shows progress.

use std::collections::BTreeSet;

use yizhi_engine::{Engine, LogStorage, NodeId, Role};

use crate::engines::EngineFactory;
use crate::faults::Phase;
use crate::invariants::Violation;
use crate::sim::{Event, LIVENESS_LEADER_BOUND_MS, LIVENESS_PROGRESS_BOUND_MS, Sim};
use crate::throughput::Window;

impl<F: EngineFactory> Sim<'_, F> {
    pub(crate) fn on_connection_lost(
        &mut self,
        node: NodeId,
        incarnation: u64,
        peer: NodeId,
        wrong: bool,
    ) -> Result<(), Violation> {
        let n = &self.nodes[(node - 1) as usize];
        if n.is_up() && n.incarnation == incarnation {
            self.faults.hints_delivered[usize::from(wrong)] += 1;
        }
        let what = format!("connection to {peer} lost{}", if wrong { " (wrong)" } else { "" });
        self.with_node(node, incarnation, &what, |n, ctx| {
            n.feed(|e| e.report_connection_lost(peer), ctx)
        })
    }

    /// Now and then during the faults, tells a node that its leader's connection closed although
    /// the leader lives: the engines must stay safe whatever the hint says.
    pub(crate) fn maybe_wrong_hint(&mut self, node: NodeId, incarnation: u64) {
        if self.phase != Phase::Faults {
            return;
        }
        let ppm = self.config.profile.spurious_hint_ppm;
        let leader = self.node(node).engine().and_then(|e| e.status().leader);
        let ids = self.config.node_ids();
        let Some(peer) = self.faults.wrong_hint_peer(ppm, node, leader, &ids) else {
            return;
        };
        let at = self.now_ms + self.faults.connection_close_delay_ms();
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
    pub(crate) fn announce_crash(&mut self, crashed: NodeId) {
        for peer in self.config.node_ids() {
            if peer == crashed || !self.node(peer).is_up() || self.network.is_blocked(crashed, peer) {
                continue;
            }
            let incarnation = self.node(peer).incarnation;
            let at = self.now_ms + self.faults.connection_close_delay_ms();
            let event = Event::ConnectionLost {
                node: peer,
                incarnation,
                peer: crashed,
                wrong: false,
            };
            self.schedule(at, event);
        }
    }

    pub(crate) fn current_leader(&self) -> Option<NodeId> {
        let up = self.nodes.iter().filter_map(|n| n.engine().map(|e| e.status()));
        let max_term = up.clone().map(|s| s.term).max()?;
        up.filter(|s| s.role == Role::Leader && s.term == max_term)
            .map(|s| s.id)
            .next()
    }

    pub(crate) fn on_fault_epoch(&mut self) {
        if self.phase != Phase::Faults {
            return;
        }
        let ids = self.config.node_ids();
        let live: BTreeSet<NodeId> = self.nodes.iter().filter(|n| n.is_up()).map(|n| n.id).collect();
        let leader = self.current_leader();
        let plan = self.faults.plan_epoch(&self.config.profile, &ids, &live, leader);
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
                self.faults.arm_crash_at_next_fsync(node, Some(down_ms));
            } else {
                self.faults.arm_crash_at_next_fsync(node, None);
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
    pub(crate) fn crash(&mut self, node: NodeId, down_ms: u64) {
        assert_eq!(self.phase, Phase::Faults, "crashes belong to the fault phase");
        let unsynced = self.node(node).disk.unsynced_len() as u64;
        let survivors = self.rng.disk.range_inclusive(0, unsynced) as usize;
        let rewriting = self.node(node).disk.holds_rewrite_of_durable_entries();
        self.faults.crashes_during_rewrites += u64::from(rewriting);
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

    pub(crate) fn restart(&mut self, node: NodeId) {
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

    pub(crate) fn on_restart(&mut self, node: NodeId) {
        if self.phase == Phase::Faults && !self.node(node).is_up() {
            self.restart(node);
        }
    }

    /// End of the fault phase: heal the network, bring back all but at most a minority of the
    /// crashed nodes, unpause everyone, and let only the probe client issue new operations.
    pub(crate) fn on_heal(&mut self) {
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
        self.faults.heal();
        let may_stay_down = (self.nodes.len() - 1) / 2;
        for id in self.config.node_ids() {
            self.node(id).paused_until_ms = 0;
            if self.node(id).is_up() {
                continue;
            }
            if !self.faults.keeps_down(id, may_stay_down) {
                self.restart(id);
            }
        }
        self.trace.record(
            self.now_ms,
            None,
            format_args!("heal; kept down {:?}", self.faults.kept_down()),
        );
        let probe = self.clients.probe_index();
        self.schedule(self.now_ms, Event::ClientWake { client: probe });
    }

    /// A throughput run measures from the moment a leader first exists for `measure_window_ms`;
    /// the heal at its end stops the regular clients and the loss.
    pub(crate) fn open_window_at_first_leader(&mut self) {
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

    /// After the heal: a leader within a bound, then a probe write acknowledged, every write
    /// proposed before the heal resolved, and every live node caught up, within a bound.
    pub(crate) fn check_liveness(&mut self, healed_at_ms: u64) -> Result<(), Violation> {
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
}
