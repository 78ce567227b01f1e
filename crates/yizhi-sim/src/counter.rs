//! The exactly-once proof: a counter client increments a key of its own by `Put` (each put raises
//! the key's `version` by one, so the version is the count), every increment wrapped in
//! `Command::Deduped` with a fixed client id and `seq` = the increment's number. It retries the
//! very same bytes (the same `ClientSeq`) after a timeout, a refusal or a lost slot, to any node,
//! until the increment is acknowledged; the network duplicates messages and leaders crash as
//! usual. After the heal it finishes its in-flight increment, and then every up replica that
//! applied everything must hold the key at a version equal to the acknowledged increments.
//!
//! Each increment bumps the store's revision, which every other operation reports, so the
//! increments are in the judged history too: one `Put` of a value of its own per increment, from
//! its first attempt to its acknowledgement, with the revision the state machine answered (a
//! duplicate is answered the first application's response). That is sound exactly when the
//! increment applied once, inside that interval.

use bytes::Bytes;
use yizhi_engine::{Engine, MemStorage, NodeId, SeededRng};
use yizhi_kv::{ClientSeq, Command, CommandResponse, KvError, PutRequest, RangeRequest};

use yizhi_lincheck::mvcc::{MvccInput, MvccOutput};

use crate::client::{ClientReply, ClientRequest, History, NextStep, Reply, Request, Workload};
use crate::clients::{ClientEnv, Sending, next_target};
use crate::invariants::Violation;
use crate::node::Node;

/// The reserved key: outside the workload's keys and ranges (`k…`), so the linearizability
/// model never sees it.
pub const COUNTER_KEY: &str = "counter";
/// The counter's session id in the state machine (any nonzero value of its own).
pub const COUNTER_SESSION_ID: u64 = 0xC004_17E5;

/// What the simulator does next for the counter after a reply or a timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterStep {
    /// Send the same increment again after the delay.
    Retry,
    /// The increment was acknowledged; the next may start.
    Acknowledged,
    /// A reply for an attempt already given up on.
    Ignore,
}

#[derive(Clone, Debug)]
struct Increment {
    seq: u64,
    /// When the first attempt was invoked, on the history's clock.
    invoke_time: u64,
    /// The exact bytes every attempt sends.
    command: Command,
    payload: Bytes,
    /// The attempt whose reply is awaited, if one is out.
    attempt_op_id: Option<u64>,
}

#[derive(Debug)]
pub struct CounterClient {
    /// The simulator's client id (for routing replies), not the session id.
    pub client_id: u64,
    next_op_id: u64,
    /// Invariant: every increment below `current.seq` (or all issued, when none is current) was
    /// acknowledged.
    current: Option<Increment>,
    pub acknowledged: u64,
    pub attempts: u64,
    pub leader_hint: Option<NodeId>,
    pub last_target: Option<NodeId>,
}

impl CounterClient {
    pub fn new(client_id: u64) -> Self {
        CounterClient {
            client_id,
            next_op_id: 1,
            current: None,
            acknowledged: 0,
            attempts: 0,
            leader_hint: None,
            last_target: None,
        }
    }

    /// An increment was started and is not yet acknowledged.
    pub fn has_unacknowledged(&self) -> bool {
        self.current.is_some()
    }

    pub fn is_waiting(&self) -> bool {
        self.current.as_ref().is_some_and(|i| i.attempt_op_id.is_some())
    }

    /// Starts a new increment, stamped with `now_ms` (the session clock it carries), invoked at
    /// `invoke_time` on the history's clock.
    pub fn begin_increment(&mut self, now_ms: u64, invoke_time: u64) {
        assert!(self.current.is_none(), "the counter has an increment in flight");
        let seq = self.acknowledged + 1;
        let command = Command::Deduped {
            // Everything below `seq` was acknowledged: no retry below it will ever come.
            request: ClientSeq {
                client_id: COUNTER_SESSION_ID,
                seq,
                acked_below: seq,
            },
            now_ms,
            command: Box::new(Command::Put(PutRequest {
                key: Bytes::from_static(COUNTER_KEY.as_bytes()),
                value: Bytes::from(increment_value(seq)),
                ..PutRequest::default()
            })),
        };
        let payload = Bytes::from(yizhi_kv::encode_command(&command));
        self.current = Some(Increment {
            seq,
            invoke_time,
            command,
            payload,
            attempt_op_id: None,
        });
    }

    /// The next attempt of the current increment: the same bytes as every earlier one. The
    /// client stops waiting for it at `deadline_ms`.
    pub fn attempt(&mut self, deadline_ms: u64) -> ClientRequest {
        let op_id = self.next_op_id;
        self.next_op_id += 1;
        self.attempts += 1;
        let increment = self.current.as_mut().expect("an increment to attempt");
        assert!(increment.attempt_op_id.is_none(), "one attempt at a time");
        increment.attempt_op_id = Some(op_id);
        ClientRequest {
            client_id: self.client_id,
            op_id,
            request: Request::Write {
                command: increment.command.clone(),
                payload: increment.payload.clone(),
            },
            deadline_ms,
        }
    }

    /// Handles a reply, recording an acknowledged increment in `history`; a refusal that breaks
    /// exactly-once is a violation.
    pub fn on_reply(&mut self, reply: &ClientReply, history: &mut History) -> Result<CounterStep, Violation> {
        let Some(increment) = self
            .current
            .as_mut()
            .filter(|i| i.attempt_op_id == Some(reply.op_id))
        else {
            return Ok(CounterStep::Ignore);
        };
        increment.attempt_op_id = None;
        let (seq, invoke_time) = (increment.seq, increment.invoke_time);
        let input = MvccInput::Put {
            key: COUNTER_KEY.into(),
            value: increment_value(seq),
        };
        match &reply.reply {
            Reply::Wrote { response, .. } => match response {
                Ok(CommandResponse::Put(put)) => {
                    let output = MvccOutput::Put {
                        revision: put.revision,
                    };
                    history.returned(self.client_id, seq, input, invoke_time, output);
                    self.acknowledge(seq);
                    Ok(CounterStep::Acknowledged)
                }
                Err(KvError::DuplicateResponseNotRetained { .. }) => {
                    // Applied once, but its answer was too large to keep (never for a put this
                    // small): the revision is unknown to the history.
                    history.unknown(self.client_id, seq, input, invoke_time);
                    self.acknowledge(seq);
                    Ok(CounterStep::Acknowledged)
                }
                // Nothing applied: the table was full; the same request applies later, once.
                Err(
                    KvError::TooManyClientSessions
                    | KvError::TooManyUnacknowledged { .. }
                    | KvError::SessionMemoryFull,
                ) => Ok(CounterStep::Retry),
                other => Err(Violation::CounterNotExact {
                    node: None,
                    version: None,
                    acknowledged: self.acknowledged,
                    detail: format!("increment {seq} was answered {other:?}"),
                }),
            },
            Reply::NotLeader { hint } => {
                self.leader_hint = *hint;
                Ok(CounterStep::Retry)
            }
            Reply::Failed { .. } | Reply::Rejected => Ok(CounterStep::Retry),
            Reply::Read(_) => panic!("counter increment {seq} answered with a read"),
        }
    }

    fn acknowledge(&mut self, seq: u64) {
        self.current = None;
        self.acknowledged += 1;
        assert_eq!(self.acknowledged, seq, "increments are acknowledged in order");
    }

    /// The attempt `op_id` timed out: its outcome is unknown, the same bytes go again.
    pub fn on_timeout(&mut self, op_id: u64) -> bool {
        let Some(increment) = self.current.as_mut().filter(|i| i.attempt_op_id == Some(op_id)) else {
            return false;
        };
        increment.attempt_op_id = None;
        self.leader_hint = None;
        true
    }

    /// The counter wakes: during the fault phase (`may_begin`, while the history has room) it
    /// starts an increment when the last one is acknowledged; afterwards it only finishes the
    /// increment it started, retrying the same request until it is acknowledged (`done`: the run
    /// is over). Returns the attempt to send, if any.
    pub(crate) fn wake(&mut self, may_begin: bool, done: bool, env: &mut ClientEnv<'_>) -> Option<Sending> {
        if self.is_waiting() {
            return None;
        }
        if !self.has_unacknowledged() {
            if !may_begin {
                return None;
            }
            let invoke_time = env.history.now();
            self.begin_increment(env.now_ms, invoke_time);
        }
        if done {
            return None;
        }
        let request = self.attempt(env.now_ms + env.workload.timeout_ms);
        let target = next_target(self.leader_hint, self.last_target, env.node_count, env.rng);
        self.last_target = Some(target);
        Some(env.send(target, request))
    }

    /// The delay before the counter's next attempt (a retry, at once to a known leader) or
    /// increment (a think).
    pub fn wake_delay_ms(&self, step: NextStep, workload: &Workload, rng: &mut SeededRng) -> Option<u64> {
        match step {
            NextStep::Retry { .. } if self.leader_hint.is_some() => Some(1),
            NextStep::Retry { .. } => Some(rng.range_inclusive(1, workload.retry_backoff_ms_max)),
            NextStep::Think { .. } => Some(rng.range_inclusive(0, workload.think_ms_max)),
            NextStep::Ignore => None,
        }
    }

    /// At any time no replica counts more increments than were ever issued: a retry that
    /// applied twice shows here first.
    pub fn check_bound<E: Engine<Storage = MemStorage>>(&self, nodes: &[Node<E>]) -> Result<(), Violation> {
        let issued = self.acknowledged + u64::from(self.has_unacknowledged());
        let read = CounterClient::read_request();
        for n in nodes.iter().filter(|n| n.is_up()) {
            let version = n.key_version(&read);
            if version > issued as i64 {
                return Err(Violation::CounterNotExact {
                    node: Some(n.id),
                    version: Some(version),
                    acknowledged: self.acknowledged,
                    detail: format!("more increments applied than the {issued} issued"),
                });
            }
        }
        Ok(())
    }

    /// The counter proof: with every increment acknowledged, each up replica that applied
    /// everything counts exactly the acknowledged increments.
    pub fn check_exact<E: Engine<Storage = MemStorage>>(&self, nodes: &[Node<E>]) -> Result<(), Violation> {
        assert!(
            !self.has_unacknowledged(),
            "the run ended with an increment unfinished"
        );
        let newest = nodes.iter().filter(|n| n.is_up()).map(|n| n.applied()).max();
        let read = CounterClient::read_request();
        for n in nodes.iter().filter(|n| n.is_up() && Some(n.applied()) == newest) {
            let version = n.key_version(&read);
            if version != self.acknowledged as i64 {
                return Err(Violation::CounterNotExact {
                    node: Some(n.id),
                    version: Some(version),
                    acknowledged: self.acknowledged,
                    detail: format!("after {} attempts", self.attempts),
                });
            }
        }
        Ok(())
    }

    /// The request that reads the counter back from a replica (the version is the count).
    pub fn read_request() -> RangeRequest {
        RangeRequest {
            key: Bytes::from_static(COUNTER_KEY.as_bytes()),
            ..RangeRequest::default()
        }
    }
}

fn increment_value(seq: u64) -> String {
    format!("increment {seq}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use yizhi_engine::LogPosition;
    use yizhi_kv::PutResponse;

    fn reply(op_id: u64, reply: Reply) -> ClientReply {
        ClientReply {
            client_id: 9,
            op_id,
            reply,
        }
    }

    #[test]
    fn a_retry_sends_the_very_same_bytes_and_the_next_increment_new_ones() {
        let (mut c, mut h) = (CounterClient::new(9), History::default());
        c.begin_increment(100, h.now());
        let first = c.attempt(1_000);
        assert!(c.on_timeout(first.op_id));
        assert!(!c.on_timeout(first.op_id), "already given up on");
        let second = c.attempt(1_000);
        assert_ne!(first.op_id, second.op_id);
        assert_eq!(first.request, second.request);
        let late = reply(first.op_id, Reply::Rejected);
        assert_eq!(c.on_reply(&late, &mut h), Ok(CounterStep::Ignore));
        let wrote = Reply::Wrote {
            position: LogPosition { index: 3, term: 1 },
            response: Ok(CommandResponse::Put(PutResponse {
                revision: 2,
                prev_kv: None,
            })),
        };
        assert_eq!(
            c.on_reply(&reply(second.op_id, wrote), &mut h),
            Ok(CounterStep::Acknowledged)
        );
        assert_eq!(c.acknowledged, 1);
        assert_eq!(h.len(), 1, "one increment, one operation, however many attempts");
        c.begin_increment(200, h.now());
        let third = c.attempt(1_000);
        assert_ne!(third.request, second.request);
        let Request::Write {
            command: Command::Deduped { request, .. },
            ..
        } = third.request
        else {
            panic!("{third:?}");
        };
        assert_eq!((request.seq, request.acked_below), (2, 2));
    }

    #[test]
    fn a_refusal_that_may_have_applied_is_a_violation() {
        let (mut c, mut h) = (CounterClient::new(9), History::default());
        c.begin_increment(0, h.now());
        let attempt = c.attempt(1_000);
        let expired = Reply::Wrote {
            position: LogPosition { index: 3, term: 1 },
            response: Err(KvError::ClientSessionExpired {
                client_id: COUNTER_SESSION_ID,
            }),
        };
        let result = c.on_reply(&reply(attempt.op_id, expired), &mut h);
        assert!(
            matches!(result, Err(Violation::CounterNotExact { .. })),
            "{result:?}"
        );
    }
}
