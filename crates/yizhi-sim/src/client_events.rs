//! The clients' events: wake-ups, timeouts and replies of the regular clients, the probe and the
//! counter. Each decides through the struct that owns its state (`Clients`, `CounterClient`, the
//! throughput `Window`); this file hands them what they need, runs the checks an answer is due,
//! and schedules what they return, in the order they return it.

use yizhi_engine::NodeId;

use crate::client::{ClientReply, NextStep, Reply};
use crate::clients::{ClientEnv, Clients, Sending};
use crate::counter::{CounterClient, CounterStep};
use crate::engines::EngineFactory;
use crate::faults::Phase;
use crate::invariants::Violation;
use crate::node::Node;
use crate::sim::{Event, Msg, Sim};

impl<F: EngineFactory> Sim<'_, F> {
    /// The client fleet, the counter, the nodes and what the clients' next requests draw on,
    /// borrowed apart.
    fn client_parts(&mut self) -> (&mut Clients, &mut CounterClient, &[Node<F::E>], ClientEnv<'_>) {
        let env = ClientEnv::new(
            self.now_ms,
            &self.config.workload,
            self.nodes.len() as u64,
            &mut self.rng.clients,
            &mut self.history,
        );
        (&mut self.clients, &mut self.counter, &self.nodes, env)
    }

    pub(crate) fn on_reply(
        &mut self,
        reply: ClientReply,
        from: NodeId,
        incarnation: u64,
    ) -> Result<(), Violation> {
        self.trace.record(
            self.now_ms,
            None,
            format_args!(
                "client {} op {} got {:?}",
                reply.client_id, reply.op_id, reply.reply
            ),
        );
        self.check_write_answer(&reply)?;
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
        self.check_read_answer(&reply, index, from, incarnation)?;
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

    pub(crate) fn on_client_wake(&mut self, client: usize) {
        let room = self.history.len() < self.config.max_history_ops;
        if !room && let Some(window) = self.window.as_mut() {
            window.note_history_full();
        }
        let phase = self.phase;
        let (clients, _, nodes, mut env) = self.client_parts();
        let Some(sending) = clients.wake(client, room, phase, nodes, &mut env) else {
            return;
        };
        let op_id = sending.request.op_id;
        self.send_request(sending, Event::ClientTimeout { client, op_id });
    }

    /// A client's request leaves for its node, and its timeout is set.
    pub(crate) fn send_request(&mut self, sending: Sending, timeout: Event<Msg<F>>) {
        let Sending {
            node,
            request,
            arrive_ms,
            timeout_ms,
        } = sending;
        self.schedule(arrive_ms, Event::Request { node, request });
        self.schedule(timeout_ms, timeout);
    }

    pub(crate) fn on_client_timeout(&mut self, client: usize, op_id: u64) {
        let (clients, _, _, mut env) = self.client_parts();
        let Some(delay_ms) = clients.timeout(client, op_id, &mut env) else {
            return;
        };
        self.trace.record(
            self.now_ms,
            None,
            format_args!("client {} op {op_id} timed out", client + 1),
        );
        self.schedule(self.now_ms + delay_ms, Event::ClientWake { client });
    }

    /// Draws the delay before the counter's next attempt (a retry) or increment (a think).
    pub(crate) fn schedule_counter_wake(&mut self, step: NextStep) {
        let delay = self
            .counter
            .wake_delay_ms(step, &self.config.workload, &mut self.rng.clients);
        if let Some(delay_ms) = delay {
            self.schedule(self.now_ms + delay_ms, Event::CounterWake);
        }
    }

    pub(crate) fn on_counter_wake(&mut self) {
        let room = self.history.len() < self.config.max_history_ops;
        let may_begin = self.phase == Phase::Faults && room;
        let done = self.phase == Phase::Done;
        let (_, counter, _, mut env) = self.client_parts();
        let Some(sending) = counter.wake(may_begin, done, &mut env) else {
            return;
        };
        let op_id = sending.request.op_id;
        self.send_request(sending, Event::CounterTimeout { op_id });
    }

    pub(crate) fn on_counter_timeout(&mut self, op_id: u64) {
        if self.counter.on_timeout(op_id) {
            self.trace
                .record(self.now_ms, None, format_args!("counter op {op_id} timed out"));
            self.schedule_counter_wake(NextStep::Retry { delay_ms: 0 });
        }
    }

    /// A regular client's write was acknowledged: counted, with its latency, if it began and ended
    /// inside the window.
    pub(crate) fn count_acked_write(&mut self, client: usize, started_ms: u64) {
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
}
