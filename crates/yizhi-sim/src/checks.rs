//! The checks the simulator runs over the whole cluster, with `invariants.rs`'s `Checker` keeping
//! what they compare against: after every event (one leader per term, leader completeness, commit
//! monotonic), periodically (log matching, acknowledged writes durable, equal state at equal
//! applied index, the counter's bound), on every write answer (its own entry's response) and at
//! the end.

use yizhi_engine::{Engine, NodeId, Role, Term};
use yizhi_kv::{CommandResponse, KvError};

use crate::client::{ClientReply, Reply};
use crate::engines::EngineFactory;
use crate::faults::Phase;
use crate::invariants::{Violation, check_log_matching};
use crate::node::{Ctx, Mutation};
use crate::reads::ServedRead;
use crate::sim::{CHECK_PERIOD_MS, Event, Sim};

impl<F: EngineFactory> Sim<'_, F> {
    /// A write's answer: the acknowledged position must stay committed, and the response must be
    /// the one its own entry produced; the read checker learns what was acknowledged when.
    pub(crate) fn check_write_answer(&mut self, reply: &ClientReply) -> Result<(), Violation> {
        if let Reply::Wrote { position, response } = &reply.reply {
            self.checker
                .observe_ack(reply.client_id, reply.op_id, *position)?;
            self.check_ack_is_own_write(reply, response)?;
            if let Ok(response) = response {
                self.reads.observe_ack(self.now_ms, response);
            }
        }
        Ok(())
    }

    /// A read's answer to regular client `index`, from the node process `(node, incarnation)`,
    /// held to the promises of its read level.
    pub(crate) fn check_read_answer(
        &mut self,
        reply: &ClientReply,
        index: usize,
        node: NodeId,
        incarnation: u64,
    ) -> Result<(), Violation> {
        let Reply::Read(response) = &reply.reply else {
            return Ok(());
        };
        let Some(read) = self.clients.get(index).read_in_flight(reply.op_id) else {
            return Ok(());
        };
        let request = crate::kv::read_for(read.input).expect("a read input");
        let served = ServedRead {
            client_id: reply.client_id,
            node,
            incarnation,
            node_tick_interval_ms: self.nodes[(node - 1) as usize].tick_interval_ms,
            level: read.level,
            invoke_ms: read.invoke_ms,
            request: &request,
            response,
        };
        self.reads.check(&served)
    }

    /// The answer a client got for its write is the one its own entry produced: that entry was
    /// applied (by some replica, before the answer) with this very response.
    pub(crate) fn check_ack_is_own_write(
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
    /// `node` answered a read from its lease in `term`: sound only while the other nodes that
    /// would vote for a new leader at this instant (up, not paused, bound by no promise) are
    /// fewer than a quorum. Checked from the engines' own state, so a lease that outlives the
    /// promises is found the moment it is used, not only when a rival leader happens to exist.
    pub(crate) fn check_lease_read(&mut self, node: NodeId, term: Term) {
        let would_vote: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|n| n.id != node && n.paused_until_ms <= self.now_ms)
            .filter(|n| {
                n.engine()
                    .is_some_and(|engine| self.factory.refuses_votes(engine) == Some(false))
            })
            .map(|n| n.id)
            .collect();
        let checked = self
            .checker
            .observe_lease_read(node, term, would_vote, self.nodes.len());
        if let Err(violation) = checked {
            self.deferred_violation.get_or_insert(violation);
        }
    }

    pub(crate) fn config_mutation_acks_early(&self) -> bool {
        self.nodes
            .first()
            .is_some_and(|n| n.mutation == Mutation::AckOnPropose)
    }

    pub(crate) fn on_check(&mut self) -> Result<(), Violation> {
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

    /// The invariants that hold after every step: one leader per term, leader completeness at
    /// each new leadership, commit monotonic and never below the durable commit.
    pub(crate) fn check_nodes(&mut self) -> Result<(), Violation> {
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
    pub(crate) fn check_state_hashes(&mut self) -> Result<(), Violation> {
        for n in self.nodes.iter().filter(|n| n.is_up()) {
            self.checker
                .observe_state_hash(n.id, n.applied(), n.state_hash())?;
        }
        Ok(())
    }

    pub(crate) fn final_checks(&mut self) -> Result<(), Violation> {
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
}
