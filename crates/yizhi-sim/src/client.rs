//! Simulated clients: each keeps one operation in flight against some node, times out, retries
//! (a retry is a new operation), and records what it invoked and what came back.

use std::collections::BTreeMap;

use yizhi_engine::{LogPosition, NodeId, SeededRng};
use yizhi_lincheck::Operation;
use yizhi_lincheck::Outcome;
use yizhi_lincheck::kv::{KvInput, KvOutput};

use crate::kv::{KvCommand, KvOp, KvResult};

/// Operations one run records; a run that reaches it stops issuing new ones (the checker's cost
/// grows with the history).
pub const MAX_HISTORY_OPS: usize = 20_000;
/// Longest value a client writes; appends stop growing a value past it.
pub const MAX_WRITTEN_VALUE_BYTES: usize = 4 * 1024;

/// What one seed's clients do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub key_count: u64,
    pub read_pct: u64,
    pub cas_pct: u64,
    pub append_pct: u64,
    pub think_ms_max: u64,
    pub timeout_ms: u64,
    pub retry_backoff_ms_max: u64,
}

impl Workload {
    pub fn assert_valid(&self) {
        assert!(self.key_count > 0, "{self:?}");
        assert!(self.read_pct + self.cas_pct + self.append_pct <= 100, "{self:?}");
        assert!(self.timeout_ms > 0 && self.retry_backoff_ms_max > 0, "{self:?}");
    }
}

/// What a client asks a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Write(KvCommand),
    Read { key: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRequest {
    pub client_id: u64,
    pub op_id: u64,
    pub request: Request,
}

/// What a node answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The write took effect at `position` with `result`.
    Wrote {
        position: LogPosition,
        result: KvResult,
    },
    /// Another entry committed where the write was placed: it definitely did not take effect.
    WriteFailed,
    ReadValue(Option<String>),
    NotLeader {
        hint: Option<NodeId>,
    },
    /// Backpressure or a similar refusal; nothing happened.
    Rejected,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientReply {
    pub client_id: u64,
    pub op_id: u64,
    pub reply: Reply,
}

#[derive(Clone, Debug)]
struct InFlight {
    op_id: u64,
    input: KvInput,
    invoke_time: u64,
}

/// What the simulator should do next for a client after a reply or a timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextStep {
    /// Send the same input again as a new operation, after the given delay.
    Retry { delay_ms: u64 },
    /// Pick a new operation after thinking.
    Think { delay_ms: u64 },
    /// The reply was for an operation already given up on.
    Ignore,
}

#[derive(Debug)]
pub struct Client {
    pub id: u64,
    next_op_id: u64,
    in_flight: Option<InFlight>,
    pending_retry: Option<KvInput>,
    pub leader_hint: Option<NodeId>,
    /// The node the last operation went to.
    pub last_target: Option<NodeId>,
    /// Last value seen per key, so compare-and-swap sometimes expects the right thing.
    known: BTreeMap<String, Option<String>>,
    pub acked_writes: u64,
}

impl Client {
    pub fn new(id: u64) -> Self {
        Client {
            id,
            next_op_id: 1,
            in_flight: None,
            pending_retry: None,
            leader_hint: None,
            last_target: None,
            known: BTreeMap::new(),
            acked_writes: 0,
        }
    }

    pub fn is_busy(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Starts the next operation (the pending retry, or a fresh one) and returns the request.
    pub fn start(&mut self, workload: &Workload, rng: &mut SeededRng, invoke_time: u64) -> ClientRequest {
        assert!(
            self.in_flight.is_none(),
            "client {} already has an operation in flight",
            self.id
        );
        let input = match self.pending_retry.take() {
            Some(retry) => self.retagged(retry),
            None => self.pick_input(workload, rng),
        };
        let op_id = self.next_op_id;
        self.next_op_id += 1;
        let request = match &input {
            KvInput::Get { key } => Request::Read { key: key.clone() },
            KvInput::Put { key, value } => self.write(
                op_id,
                KvOp::Put {
                    key: key.clone(),
                    value: value.clone(),
                },
            ),
            KvInput::Cas { key, expected, new } => self.write(
                op_id,
                KvOp::Cas {
                    key: key.clone(),
                    expected: expected.clone(),
                    new: new.clone(),
                },
            ),
            KvInput::Append { key, suffix } => self.write(
                op_id,
                KvOp::Append {
                    key: key.clone(),
                    suffix: suffix.clone(),
                },
            ),
        };
        self.in_flight = Some(InFlight {
            op_id,
            input,
            invoke_time,
        });
        ClientRequest {
            client_id: self.id,
            op_id,
            request,
        }
    }

    fn write(&self, op_id: u64, op: KvOp) -> Request {
        Request::Write(KvCommand {
            client_id: self.id,
            op_id,
            op,
        })
    }

    /// A retried write carries a value of its own: with the timed-out attempt's value reused, the
    /// checker could not tell which of several identical unknown writes took effect, and its
    /// search grows exponentially in their number.
    fn retagged(&self, input: KvInput) -> KvInput {
        let unique = format!("c{}o{}", self.id, self.next_op_id);
        match input {
            KvInput::Get { key } => KvInput::Get { key },
            KvInput::Put { key, .. } => KvInput::Put { key, value: unique },
            KvInput::Cas { key, expected, .. } => KvInput::Cas {
                key,
                expected,
                new: unique,
            },
            KvInput::Append { key, .. } => KvInput::Append {
                key,
                suffix: format!("{unique};"),
            },
        }
    }

    fn pick_input(&mut self, workload: &Workload, rng: &mut SeededRng) -> KvInput {
        workload.assert_valid();
        let key = format!("k{}", rng.below(workload.key_count));
        let unique = format!("c{}o{}", self.id, self.next_op_id);
        let known = self.known.get(&key).cloned().flatten();
        let roll = rng.below(100);
        if roll < workload.read_pct {
            KvInput::Get { key }
        } else if roll < workload.read_pct + workload.cas_pct {
            let expected = if rng.chance(3, 4) { known } else { None };
            KvInput::Cas {
                key,
                expected,
                new: unique,
            }
        } else if roll < workload.read_pct + workload.cas_pct + workload.append_pct
            && known.is_none_or(|v| v.len() < MAX_WRITTEN_VALUE_BYTES)
        {
            KvInput::Append {
                key,
                suffix: format!("{unique};"),
            }
        } else {
            KvInput::Put { key, value: unique }
        }
    }

    pub fn in_flight_op(&self) -> Option<u64> {
        self.in_flight.as_ref().map(|f| f.op_id)
    }

    /// Handles a reply; records the operation in `history` when it completed.
    pub fn on_reply(
        &mut self,
        reply: &ClientReply,
        workload: &Workload,
        rng: &mut SeededRng,
        history: &mut History,
    ) -> NextStep {
        let Some(flight) = self.in_flight.take_if(|f| f.op_id == reply.op_id) else {
            return NextStep::Ignore;
        };
        let backoff_ms = rng.range_inclusive(1, workload.retry_backoff_ms_max);
        let output = match &reply.reply {
            Reply::Wrote {
                result: KvResult::Ok, ..
            } => KvOutput::Ok,
            Reply::Wrote {
                result: KvResult::CasResult { succeeded },
                ..
            } => KvOutput::CasResult {
                succeeded: *succeeded,
            },
            Reply::ReadValue(value) => KvOutput::Value(value.clone()),
            Reply::NotLeader { hint } => {
                self.leader_hint = *hint;
                self.pending_retry = Some(flight.input);
                return NextStep::Retry {
                    delay_ms: if hint.is_some() { 1 } else { backoff_ms },
                };
            }
            // Definitely did not take effect: not part of the history, retried as a new operation.
            Reply::WriteFailed | Reply::Rejected => {
                self.pending_retry = Some(flight.input);
                return NextStep::Retry { delay_ms: backoff_ms };
            }
        };
        if matches!(reply.reply, Reply::Wrote { .. }) {
            self.acked_writes += 1;
        }
        self.remember(&flight.input, &output);
        history.returned(self.id, flight.op_id, flight.input, flight.invoke_time, output);
        NextStep::Think {
            delay_ms: rng.range_inclusive(0, workload.think_ms_max),
        }
    }

    fn remember(&mut self, input: &KvInput, output: &KvOutput) {
        let key = input.key().to_string();
        match (input, output) {
            (KvInput::Get { .. }, KvOutput::Value(v)) => {
                self.known.insert(key, v.clone());
            }
            (KvInput::Put { value, .. }, _)
            | (KvInput::Cas { new: value, .. }, KvOutput::CasResult { succeeded: true }) => {
                self.known.insert(key, Some(value.clone()));
            }
            _ => {
                self.known.remove(&key);
            }
        }
    }

    /// The operation timed out: its outcome is unknown (a read that never returned is left out:
    /// it cannot have changed anything). Returns false if that operation had already finished.
    pub fn on_timeout(
        &mut self,
        op_id: u64,
        workload: &Workload,
        rng: &mut SeededRng,
        history: &mut History,
    ) -> Option<NextStep> {
        let flight = self.in_flight.take_if(|f| f.op_id == op_id)?;
        self.leader_hint = None;
        if !matches!(flight.input, KvInput::Get { .. }) {
            history.unknown(self.id, flight.op_id, flight.input.clone(), flight.invoke_time);
            self.known.remove(flight.input.key());
        }
        self.pending_retry = Some(flight.input);
        Some(NextStep::Retry {
            delay_ms: rng.range_inclusive(1, workload.retry_backoff_ms_max),
        })
    }

    /// The run ended with this client's operation in flight: a write's outcome is unknown (it may
    /// still have taken effect), a read changed nothing and is left out.
    pub fn abandon(&mut self, history: &mut History) {
        if let Some(flight) = self.in_flight.take()
            && !matches!(flight.input, KvInput::Get { .. })
        {
            history.unknown(self.id, flight.op_id, flight.input, flight.invoke_time);
        }
        self.pending_retry = None;
    }

    /// Stops retrying (the run is winding down); an in-flight operation stays in flight.
    pub fn drop_retry(&mut self) {
        self.pending_retry = None;
    }
}

/// The invoke/complete history handed to the linearizability checker. Times are a logical clock
/// that advances at every invoke and return, so real-time order is exact.
#[derive(Clone, Debug, Default)]
pub struct History {
    clock: u64,
    ops: Vec<Operation<KvInput, KvOutput>>,
    /// The client's op id of each operation in `ops`, to match writes against what was applied.
    op_ids: Vec<u64>,
}

impl History {
    /// A fresh timestamp, strictly after every earlier one.
    pub fn now(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn ops(&self) -> &[Operation<KvInput, KvOutput>] {
        &self.ops
    }

    /// The history with every unknown-outcome write that no replica ever applied left out.
    ///
    /// The simulator sees what a real client cannot: a write that no state machine applied was never
    /// observed by anyone, so a history is linearizable with it (placed last) exactly when it is
    /// without it. Dropping such writes removes ambiguity only a client has; writes that were applied
    /// stay unknown, and the checker still decides where they fall.
    pub fn resolved(&self, was_applied: impl Fn(u64, u64) -> bool) -> Vec<Operation<KvInput, KvOutput>> {
        self.ops
            .iter()
            .zip(&self.op_ids)
            .filter(|&(op, &op_id)| {
                !matches!(op.outcome, Outcome::Unknown) || was_applied(op.client_id, op_id)
            })
            .map(|(op, _)| op.clone())
            .collect()
    }

    fn returned(&mut self, client_id: u64, op_id: u64, input: KvInput, invoke_time: u64, output: KvOutput) {
        let return_time = self.now();
        assert!(return_time > invoke_time);
        self.op_ids.push(op_id);
        self.ops.push(Operation {
            client_id,
            input,
            invoke_time,
            outcome: Outcome::Returned { output, return_time },
        });
    }

    fn unknown(&mut self, client_id: u64, op_id: u64, input: KvInput, invoke_time: u64) {
        self.op_ids.push(op_id);
        self.ops.push(Operation {
            client_id,
            input,
            invoke_time,
            outcome: Outcome::Unknown,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload() -> Workload {
        Workload {
            key_count: 2,
            read_pct: 30,
            cas_pct: 20,
            append_pct: 20,
            think_ms_max: 10,
            timeout_ms: 500,
            retry_backoff_ms_max: 20,
        }
    }

    #[test]
    fn not_leader_retries_the_same_operation_with_a_fresh_value() {
        let (w, mut rng, mut h) = (workload(), SeededRng::new(1), History::default());
        let mut c = Client::new(1);
        let t = h.now();
        let first = c.start(&w, &mut rng, t);
        let reply = ClientReply {
            client_id: 1,
            op_id: first.op_id,
            reply: Reply::NotLeader { hint: Some(3) },
        };
        assert_eq!(
            c.on_reply(&reply, &w, &mut rng, &mut h),
            NextStep::Retry { delay_ms: 1 }
        );
        assert_eq!(c.leader_hint, Some(3));
        let second = c.start(&w, &mut rng, t + 1);
        assert_ne!(first.op_id, second.op_id);
        match (&first.request, &second.request) {
            (Request::Write(a), Request::Write(b)) => {
                assert_eq!(std::mem::discriminant(&a.op), std::mem::discriminant(&b.op));
                assert_eq!(a.op.key(), b.op.key());
                assert_ne!(a.op, b.op, "each attempt writes a value of its own");
            }
            (a, b) => assert_eq!(a, b),
        }
        assert!(h.is_empty(), "a refused operation is not history");
    }

    #[test]
    fn timeout_records_unknown_writes_and_ignores_late_replies() {
        let (w, mut rng, mut h) = (workload(), SeededRng::new(5), History::default());
        let mut c = Client::new(2);
        let mut req;
        loop {
            let t = h.now();
            req = c.start(&w, &mut rng, t);
            if matches!(req.request, Request::Write(_)) {
                break;
            }
            c.on_timeout(req.op_id, &w, &mut rng, &mut h);
            c.drop_retry();
        }
        assert!(h.is_empty(), "timed-out reads are left out");
        assert!(c.on_timeout(req.op_id, &w, &mut rng, &mut h).is_some());
        assert_eq!(h.len(), 1);
        assert!(matches!(h.ops()[0].outcome, Outcome::Unknown));
        let late = ClientReply {
            client_id: 2,
            op_id: req.op_id,
            reply: Reply::Rejected,
        };
        assert_eq!(c.on_reply(&late, &w, &mut rng, &mut h), NextStep::Ignore);
    }

    #[test]
    fn resolved_history_drops_only_unknown_writes_that_were_never_applied() {
        let mut h = History::default();
        let put = |v: &str| KvInput::Put {
            key: "k".into(),
            value: v.into(),
        };
        let t = h.now();
        h.unknown(1, 7, put("applied"), t);
        let t = h.now();
        h.unknown(1, 8, put("never-applied"), t);
        let t = h.now();
        h.returned(2, 3, KvInput::Get { key: "k".into() }, t, KvOutput::Value(None));
        let resolved = h.resolved(|client, op| (client, op) == (1, 7));
        let kept: Vec<&KvInput> = resolved.iter().map(|op| &op.input).collect();
        assert_eq!(kept, vec![&put("applied"), &KvInput::Get { key: "k".into() }]);
        assert!(
            matches!(resolved[0].outcome, Outcome::Unknown),
            "an applied write stays unknown"
        );
    }
}
