//! Simulated clients: each keeps one operation in flight against some node, times out, retries
//! (a retry is a new operation), and records what it invoked and what came back.
//!
//! The workload is etcd's API over a few keys: put, get, delete, a compare-and-swap txn (compare
//! the key's `mod_revision` or value, then put, else read it), a range over a prefix, and now and
//! then a compaction. Every response carries the store's revision, and the checker verifies it.
//!
//! Reads come at the server's three consistency levels ([`ReadLevel`]): linearizable reads join the
//! judged history; serializable and bounded-staleness reads may be stale by design, so they stay
//! out of it and `reads::ReadChecker` holds them to their own promises instead.

use std::collections::BTreeMap;

use bytes::Bytes;
use yizhi_engine::{LogPosition, NodeId, SeededRng};
use yizhi_kv::{Command, CommandResponse, CompactionRequest, KvError, RangeRequest, RangeResponse};
use yizhi_lincheck::Operation;
use yizhi_lincheck::Outcome;
use yizhi_lincheck::mvcc::{CasCompare, MvccInput, MvccOutput};

use yizhi_member::{ProposeFailure, StatusCode};

use crate::kv;

/// Whether etcd's Go client (clientv3's retry interceptor, 3.4 and 3.5) re-sends a write answered
/// with `code` while its own deadline has not passed: it does for `Canceled` and
/// `DeadlineExceeded` (taken for a per-attempt timeout), whatever the request; `Unavailable` only
/// when no connection was available, which a server's answer never is.
pub fn go_client_retries_write(code: StatusCode) -> bool {
    code == StatusCode::Cancelled
}

/// Operations one run records; a run that reaches it stops issuing new ones (the checker's cost
/// grows with the history).
pub const MAX_HISTORY_OPS: usize = 20_000;
/// A compaction keeps at least this many revisions readable behind the newest one a client saw.
pub const COMPACT_KEEP_REVISIONS_MIN: u64 = 1;
pub const COMPACT_KEEP_REVISIONS_MAX: u64 = 20;
/// A bounded-staleness read allows between these many milliseconds of staleness.
pub const BOUNDED_STALENESS_MS_MIN: u64 = 50;
pub const BOUNDED_STALENESS_MS_MAX: u64 = 2_000;
/// A client sends its serializable and bounded reads to one node (a session) and moves to
/// another with this chance per read (in percent), or when the node stops answering.
pub const RELAXED_READ_NODE_SWITCH_PCT: u64 = 10;

/// How fresh a read must be, as the server offers per request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadLevel {
    /// A read barrier (ReadIndex, lease or Paxos quorum read), then the local state.
    Linearizable,
    /// The node's applied state at once, whatever its role or connectivity.
    Serializable,
    /// The local state at once if a read barrier started at most `max_staleness_ms` ago (on the
    /// node's own clock) has completed there; otherwise a barrier first.
    Bounded { max_staleness_ms: u64 },
}

/// What one seed's clients do; the percentages pick the operation, puts take the rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub key_count: u64,
    pub get_pct: u64,
    pub range_pct: u64,
    pub cas_pct: u64,
    pub delete_pct: u64,
    pub compact_pct: u64,
    pub think_ms_max: u64,
    pub timeout_ms: u64,
    pub retry_backoff_ms_max: u64,
    /// Of the reads, the share served at each relaxed level; the rest are linearizable.
    pub serializable_read_pct: u64,
    pub bounded_read_pct: u64,
}

impl Workload {
    pub fn assert_valid(&self) {
        assert!(self.key_count > 0 && self.key_count <= 10, "{self:?}");
        let total = self.get_pct + self.range_pct + self.cas_pct + self.delete_pct + self.compact_pct;
        assert!(total <= 100, "{self:?}");
        assert!(
            self.serializable_read_pct + self.bounded_read_pct <= 100,
            "{self:?}"
        );
        assert!(self.timeout_ms > 0 && self.retry_backoff_ms_max > 0, "{self:?}");
    }
}

/// What a client asks a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `payload` is `yizhi_kv::encode_command(&command)`: exactly what the log replicates.
    Write {
        command: Command,
        payload: Bytes,
    },
    Read {
        range: RangeRequest,
        level: ReadLevel,
    },
}

impl Request {
    fn write(command: Command) -> Request {
        let payload = Bytes::from(yizhi_kv::encode_command(&command));
        Request::Write { command, payload }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRequest {
    pub client_id: u64,
    pub op_id: u64,
    pub request: Request,
    /// When the client stops waiting (true simulated ms); the request carries the time left, as
    /// a grpc-timeout header does.
    pub deadline_ms: u64,
}

impl ClientRequest {
    /// A serializable or bounded read: served by the client's read-session node.
    pub fn is_relaxed_read(&self) -> bool {
        matches!(
            self.request,
            Request::Read {
                level: ReadLevel::Serializable | ReadLevel::Bounded { .. },
                ..
            }
        )
    }
}

/// What a node answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The write took effect at `position`; the state machine answered `response`.
    Wrote {
        position: LogPosition,
        response: Result<CommandResponse, KvError>,
    },
    /// The server's request path failed the write (`yizhi_member`); whether it may have taken
    /// effect is `failure.outcome_unknown()`.
    Failed {
        failure: ProposeFailure,
    },
    Read(RangeResponse),
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

/// One client operation. Compactions change nothing a read at the current revision can see (nor
/// the revision), so they are exercised but left out of the judged history; so are serializable
/// and bounded reads, which may be stale by design.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientOp {
    /// A write, or a linearizable read: judged by the linearizability checker.
    Checked(MvccInput),
    Compact {
        revision: i64,
    },
    /// A serializable or bounded-staleness read of a `Get` or `Range` input.
    RelaxedRead {
        input: MvccInput,
        level: ReadLevel,
    },
}

impl ClientOp {
    fn request(&self) -> Request {
        match self {
            ClientOp::Checked(input) => match kv::command_for(input) {
                Some(command) => Request::write(command),
                None => Request::Read {
                    range: kv::read_for(input).expect("an input is a write or a read"),
                    level: ReadLevel::Linearizable,
                },
            },
            ClientOp::RelaxedRead { input, level } => Request::Read {
                range: kv::read_for(input).expect("a relaxed read is a read"),
                level: *level,
            },
            ClientOp::Compact { revision } => Request::write(Command::Compact(CompactionRequest {
                revision: *revision,
                physical: false,
            })),
        }
    }

    fn is_read(&self) -> bool {
        matches!(
            self,
            ClientOp::Checked(MvccInput::Get { .. } | MvccInput::Range { .. }) | ClientOp::RelaxedRead { .. }
        )
    }
}

#[derive(Clone, Debug)]
struct InFlight {
    op_id: u64,
    op: ClientOp,
    /// The history's logical clock.
    invoke_time: u64,
    /// Simulated time, for the bounded-staleness promise.
    invoke_ms: u64,
    /// Simulated time of the first attempt at this operation's input (retries keep it): where
    /// the latency a user would see starts.
    first_invoke_ms: u64,
}

/// A read awaiting its answer, as the read checker needs it.
#[derive(Clone, Copy, Debug)]
pub struct ReadInFlight<'a> {
    pub input: &'a MvccInput,
    pub level: ReadLevel,
    pub invoke_ms: u64,
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

/// What a client last saw of a key: its value and `mod_revision`, or absent.
type Seen = Option<(String, i64)>;

#[derive(Debug)]
pub struct Client {
    pub id: u64,
    next_op_id: u64,
    in_flight: Option<InFlight>,
    /// The operation to retry, and when its first attempt started.
    pending_retry: Option<(ClientOp, u64)>,
    /// The operation a client library re-sends on its own (the same request, one operation in the
    /// history): the operation, its id, the history time of its invocation and its first attempt's
    /// start.
    transparent_retry: Option<(ClientOp, u64, u64, u64)>,
    pub leader_hint: Option<NodeId>,
    /// The node the last operation went to.
    pub last_target: Option<NodeId>,
    /// The node this client's serializable and bounded reads go to (its read session).
    pub relaxed_read_node: Option<NodeId>,
    /// Last state seen per key, so that compare-and-swap sometimes expects the right thing.
    known: BTreeMap<String, Seen>,
    /// The highest revision any response showed, for choosing compaction points.
    max_revision_seen: i64,
    pub acked_writes: u64,
}

impl Client {
    pub fn new(id: u64) -> Self {
        Client {
            id,
            next_op_id: 1,
            in_flight: None,
            pending_retry: None,
            transparent_retry: None,
            leader_hint: None,
            last_target: None,
            relaxed_read_node: None,
            known: BTreeMap::new(),
            max_revision_seen: 0,
            acked_writes: 0,
        }
    }

    pub fn is_busy(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Starts the next operation (the pending retry, or a fresh one) and returns the request.
    pub fn start(
        &mut self,
        workload: &Workload,
        rng: &mut SeededRng,
        invoke_time: u64,
        invoke_ms: u64,
    ) -> ClientRequest {
        assert!(
            self.in_flight.is_none(),
            "client {} already has an operation in flight",
            self.id
        );
        let mut invoke_time = invoke_time;
        let mut same_op_id = None;
        let (op, first_invoke_ms) = match (self.transparent_retry.take(), self.pending_retry.take()) {
            (Some((same, op_id, kept_invoke_time, first_invoke_ms)), _) => {
                // One operation for the history and for the entries its attempts applied.
                invoke_time = kept_invoke_time;
                same_op_id = Some(op_id);
                (same, first_invoke_ms)
            }
            (None, Some((retry, first_invoke_ms))) => (self.retagged(retry), first_invoke_ms),
            (None, None) => (self.pick_op(workload, rng), invoke_ms),
        };
        let op_id = same_op_id.unwrap_or_else(|| {
            self.next_op_id += 1;
            self.next_op_id - 1
        });
        let request = op.request();
        self.in_flight = Some(InFlight {
            op_id,
            op,
            invoke_time,
            invoke_ms,
            first_invoke_ms,
        });
        ClientRequest {
            client_id: self.id,
            op_id,
            request,
            deadline_ms: invoke_ms + workload.timeout_ms,
        }
    }

    /// A value no other operation writes.
    fn unique_value(&self) -> String {
        format!("c{}o{}", self.id, self.next_op_id)
    }

    /// A retried write carries a value of its own: with the timed-out attempt's value reused, the
    /// checker could not tell which of several identical unknown writes took effect, and its
    /// search grows exponentially in their number.
    fn retagged(&self, op: ClientOp) -> ClientOp {
        let unique = self.unique_value();
        match op {
            ClientOp::Checked(MvccInput::Put { key, .. }) => {
                ClientOp::Checked(MvccInput::Put { key, value: unique })
            }
            ClientOp::Checked(MvccInput::Cas { key, compare, .. }) => ClientOp::Checked(MvccInput::Cas {
                key,
                compare,
                value: unique,
            }),
            other => other,
        }
    }

    fn pick_op(&mut self, workload: &Workload, rng: &mut SeededRng) -> ClientOp {
        workload.assert_valid();
        let key = format!("k{}", rng.below(workload.key_count));
        let value = self.unique_value();
        let mut roll = rng.below(100);
        let mut pick = |pct: u64| {
            let hit = roll < pct;
            roll = roll.wrapping_sub(pct);
            hit
        };
        let input = if pick(workload.get_pct) {
            return Self::with_read_level(MvccInput::Get { key }, workload, rng);
        } else if pick(workload.range_pct) {
            let range = self.pick_range(workload, rng);
            return Self::with_read_level(range, workload, rng);
        } else if pick(workload.cas_pct) {
            let compare = self.pick_compare(&key, rng);
            MvccInput::Cas { key, compare, value }
        } else if pick(workload.delete_pct) {
            MvccInput::Delete { key }
        } else if pick(workload.compact_pct) && self.max_revision_seen > COMPACT_KEEP_REVISIONS_MAX as i64 {
            let keep = rng.range_inclusive(COMPACT_KEEP_REVISIONS_MIN, COMPACT_KEEP_REVISIONS_MAX);
            return ClientOp::Compact {
                revision: self.max_revision_seen - keep as i64,
            };
        } else {
            MvccInput::Put { key, value }
        };
        ClientOp::Checked(input)
    }

    fn with_read_level(input: MvccInput, workload: &Workload, rng: &mut SeededRng) -> ClientOp {
        let roll = rng.below(100);
        let level = if roll < workload.serializable_read_pct {
            ReadLevel::Serializable
        } else if roll < workload.serializable_read_pct + workload.bounded_read_pct {
            ReadLevel::Bounded {
                max_staleness_ms: rng.range_inclusive(BOUNDED_STALENESS_MS_MIN, BOUNDED_STALENESS_MS_MAX),
            }
        } else {
            return ClientOp::Checked(input);
        };
        ClientOp::RelaxedRead { input, level }
    }

    /// Half the time every key (the prefix `k`), otherwise two neighbouring keys.
    fn pick_range(&self, workload: &Workload, rng: &mut SeededRng) -> MvccInput {
        if rng.chance(1, 2) {
            return MvccInput::Range {
                start: "k".into(),
                end: "l".into(),
            };
        }
        let first = rng.below(workload.key_count);
        MvccInput::Range {
            start: format!("k{first}"),
            end: format!("k{}", first + 2),
        }
    }

    /// Usually what this client last saw (so the swap may win), sometimes a guess that the key is
    /// absent.
    fn pick_compare(&self, key: &str, rng: &mut SeededRng) -> CasCompare {
        match self.known.get(key) {
            Some(Some((value, mod_revision))) if rng.chance(3, 4) => {
                if rng.chance(1, 2) {
                    CasCompare::ModRevision(*mod_revision)
                } else {
                    CasCompare::Value(value.clone())
                }
            }
            _ => CasCompare::ModRevision(0),
        }
    }

    /// When the first attempt at the write `op_id` started, if it is the operation in flight and
    /// a write (puts, deletes and swaps; not compactions).
    pub fn write_started_ms(&self, op_id: u64) -> Option<u64> {
        let flight = self.in_flight.as_ref().filter(|f| f.op_id == op_id)?;
        match &flight.op {
            ClientOp::Checked(input) if !flight.op.is_read() && kv::command_for(input).is_some() => {
                Some(flight.first_invoke_ms)
            }
            _ => None,
        }
    }

    pub fn in_flight_op(&self) -> Option<u64> {
        self.in_flight.as_ref().map(|f| f.op_id)
    }

    /// The read `op_id`, at whatever level, if it is the one in flight.
    pub fn read_in_flight(&self, op_id: u64) -> Option<ReadInFlight<'_>> {
        let flight = self.in_flight.as_ref().filter(|f| f.op_id == op_id)?;
        let (input, level) = match &flight.op {
            ClientOp::RelaxedRead { input, level } => (input, *level),
            ClientOp::Checked(input @ (MvccInput::Get { .. } | MvccInput::Range { .. })) => {
                (input, ReadLevel::Linearizable)
            }
            ClientOp::Checked(_) | ClientOp::Compact { .. } => return None,
        };
        Some(ReadInFlight {
            input,
            level,
            invoke_ms: flight.invoke_ms,
        })
    }

    /// Handles a reply; records the operation in `history` when it completed.
    ///
    /// # Panics
    ///
    /// If the state machine refused one of the workload's commands (they are all valid) or
    /// answered with the wrong kind of response.
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
        let think = NextStep::Think {
            delay_ms: rng.range_inclusive(0, workload.think_ms_max),
        };
        let (input, output) = match (flight.op, &reply.reply) {
            (ClientOp::Compact { .. }, Reply::Wrote { .. }) => {
                // Refused ("compacted") when another client compacted further first: fine.
                self.acked_writes += 1;
                return think;
            }
            (ClientOp::Checked(input), Reply::Wrote { response, .. }) => {
                let response = response.as_ref().unwrap_or_else(|e| {
                    panic!("client {} op {}: {input:?} refused: {e}", self.id, reply.op_id)
                });
                self.acked_writes += 1;
                let output = kv::write_output(&input, response);
                (input, output)
            }
            (ClientOp::Checked(input), Reply::Read(response)) => {
                let output = kv::read_output(&input, response);
                (input, output)
            }
            (ClientOp::RelaxedRead { input, .. }, Reply::Read(response)) => {
                // Checked by the read checker, not the linearizability checker; still worth
                // remembering for compare-and-swap guesses.
                let output = kv::read_output(&input, response);
                self.remember(&input, &output);
                return think;
            }
            (op, answer) => {
                let flight = InFlight { op, ..flight };
                return self.on_refusal(flight, answer, backoff_ms, history);
            }
        };
        self.remember(&input, &output);
        history.returned(self.id, flight.op_id, input, flight.invoke_time, output);
        think
    }

    /// An answer that did not complete the operation: it is retried (as the same operation when
    /// the client library would re-send it, else as a new one), recorded first as of unknown
    /// outcome when it may have taken effect.
    fn on_refusal(
        &mut self,
        flight: InFlight,
        answer: &Reply,
        backoff_ms: u64,
        history: &mut History,
    ) -> NextStep {
        let first_invoke_ms = flight.first_invoke_ms;
        match (flight.op, answer) {
            (op, Reply::NotLeader { hint }) => {
                if matches!(op, ClientOp::RelaxedRead { .. }) {
                    // A bounded read whose barrier found no leader here: try the hinted node.
                    self.relaxed_read_node = *hint;
                }
                self.leader_hint = *hint;
                self.pending_retry = Some((op, first_invoke_ms));
                NextStep::Retry {
                    delay_ms: if hint.is_some() { 1 } else { backoff_ms },
                }
            }
            (op, Reply::Failed { failure }) if go_client_retries_write(failure.status_code()) => {
                // The library re-sends the very request: one operation, its first invocation.
                self.transparent_retry = Some((op, flight.op_id, flight.invoke_time, first_invoke_ms));
                NextStep::Retry { delay_ms: backoff_ms }
            }
            (ClientOp::Checked(input), Reply::Failed { failure }) if failure.outcome_unknown() => {
                history.unknown(self.id, flight.op_id, input.clone(), flight.invoke_time);
                if let Some(key) = written_key(&input) {
                    self.known.remove(key);
                }
                self.pending_retry = Some((ClientOp::Checked(input), first_invoke_ms));
                NextStep::Retry { delay_ms: backoff_ms }
            }
            // Definitely did not take effect: not part of the history, retried as a new operation.
            (op, Reply::Failed { .. } | Reply::Rejected) => {
                self.pending_retry = Some((op, first_invoke_ms));
                NextStep::Retry { delay_ms: backoff_ms }
            }
            (op, other) => panic!("client {} op {op:?} answered {other:?}", self.id),
        }
    }

    fn remember(&mut self, input: &MvccInput, output: &MvccOutput) {
        let seen = |record: &Option<yizhi_lincheck::mvcc::KeyRecord>| {
            record.as_ref().map(|r| (r.value.clone(), r.mod_revision))
        };
        let revision = match (input, output) {
            (MvccInput::Get { key }, MvccOutput::Get { revision, record }) => {
                self.known.insert(key.clone(), seen(record));
                *revision
            }
            (MvccInput::Put { key, value }, MvccOutput::Put { revision }) => {
                self.known.insert(key.clone(), Some((value.clone(), *revision)));
                *revision
            }
            (MvccInput::Delete { key }, MvccOutput::Delete { revision, .. }) => {
                self.known.insert(key.clone(), None);
                *revision
            }
            (
                MvccInput::Cas { key, value, .. },
                MvccOutput::Cas {
                    revision,
                    succeeded,
                    record,
                },
            ) => {
                let now = if *succeeded {
                    Some((value.clone(), *revision))
                } else {
                    seen(record)
                };
                self.known.insert(key.clone(), now);
                *revision
            }
            (
                MvccInput::Range { .. },
                MvccOutput::Range {
                    revision, records, ..
                },
            ) => {
                for (key, record) in records {
                    self.known
                        .insert(key.clone(), Some((record.value.clone(), record.mod_revision)));
                }
                *revision
            }
            (input, output) => panic!("{input:?} answered {output:?}"),
        };
        self.max_revision_seen = self.max_revision_seen.max(revision);
    }

    /// The operation timed out: its outcome is unknown (a read that never returned is left out:
    /// it cannot have changed anything; so is a compaction). Returns None if that operation had
    /// already finished.
    pub fn on_timeout(
        &mut self,
        op_id: u64,
        workload: &Workload,
        rng: &mut SeededRng,
        history: &mut History,
    ) -> Option<NextStep> {
        let flight = self.in_flight.take_if(|f| f.op_id == op_id)?;
        self.leader_hint = None;
        if matches!(flight.op, ClientOp::RelaxedRead { .. }) {
            self.relaxed_read_node = None;
        }
        if let ClientOp::Checked(input) = &flight.op
            && !flight.op.is_read()
        {
            history.unknown(self.id, flight.op_id, input.clone(), flight.invoke_time);
            if let Some(key) = written_key(input) {
                self.known.remove(key);
            }
        }
        self.pending_retry = Some((flight.op, flight.first_invoke_ms));
        Some(NextStep::Retry {
            delay_ms: rng.range_inclusive(1, workload.retry_backoff_ms_max),
        })
    }

    /// The run ended with this client's operation in flight: a write's outcome is unknown (it may
    /// still have taken effect), a read changed nothing and is left out.
    pub fn abandon(&mut self, history: &mut History) {
        if let Some(flight) = self.in_flight.take()
            && let ClientOp::Checked(input) = flight.op
            && kv::command_for(&input).is_some()
        {
            history.unknown(self.id, flight.op_id, input, flight.invoke_time);
        }
        self.drop_retry(history);
    }

    /// Stops retrying (the run is winding down); an in-flight operation stays in flight. A write
    /// the library was about to re-send may have taken effect already: its outcome is unknown.
    pub fn drop_retry(&mut self, history: &mut History) {
        self.pending_retry = None;
        if let Some((ClientOp::Checked(input), op_id, invoke_time, _)) = self.transparent_retry.take()
            && kv::command_for(&input).is_some()
        {
            history.unknown(self.id, op_id, input, invoke_time);
        }
    }
}

fn written_key(input: &MvccInput) -> Option<&str> {
    match input {
        MvccInput::Put { key, .. } | MvccInput::Delete { key } | MvccInput::Cas { key, .. } => Some(key),
        MvccInput::Get { .. } | MvccInput::Range { .. } => None,
    }
}

/// What the simulator knows of a write whose client timed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteKnowledge<'a> {
    /// A replica applied it, and the state machine answered this.
    Applied(&'a Result<CommandResponse, KvError>),
    /// No replica applied it.
    NeverApplied,
}

/// The invoke/complete history handed to the linearizability checker. Times are a logical clock
/// that advances at every invoke and return, so real-time order is exact.
#[derive(Clone, Debug, Default)]
pub struct History {
    clock: u64,
    ops: Vec<Operation<MvccInput, MvccOutput>>,
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

    pub fn ops(&self) -> &[Operation<MvccInput, MvccOutput>] {
        &self.ops
    }

    /// The history with every unknown-outcome write that no replica ever applied left out.
    ///
    /// The simulator sees what a real client cannot: a write that no state machine applied was never
    /// observed by anyone, so a history is linearizable with it (placed last) exactly when it is
    /// without it. Dropping such writes removes ambiguity only a client has; writes that were applied
    /// stay unknown, and the checker still decides where they fall.
    ///
    /// A timed-out write that a replica did apply is given the response the state machine produced
    /// ([`Outcome::Unacknowledged`]), as etcd's robustness tests patch such writes with the
    /// revision the WAL or a watch shows: the checker then verifies that response too, and needs
    /// not guess where the write fell (every entry names the proposal it carries, so an applied
    /// write is always known for what it is).
    ///
    /// # Panics
    ///
    /// If the state machine refused an applied write: the workload sends only valid commands.
    pub fn resolved<'a>(
        &self,
        knowledge: impl Fn(u64, u64) -> WriteKnowledge<'a>,
    ) -> Vec<Operation<MvccInput, MvccOutput>> {
        let resolve = |(op, &op_id): (&Operation<MvccInput, MvccOutput>, &u64)| {
            if op.outcome != Outcome::Unknown {
                return Some(op.clone());
            }
            let output = match knowledge(op.client_id, op_id) {
                WriteKnowledge::NeverApplied => return None,
                WriteKnowledge::Applied(Ok(response)) => kv::write_output(&op.input, response),
                WriteKnowledge::Applied(Err(e)) => panic!("applied {op:?} was refused: {e}"),
            };
            let outcome = Outcome::Unacknowledged { output };
            Some(Operation {
                outcome,
                ..op.clone()
            })
        };
        self.ops.iter().zip(&self.op_ids).filter_map(resolve).collect()
    }

    pub(crate) fn returned(
        &mut self,
        client_id: u64,
        op_id: u64,
        input: MvccInput,
        invoke_time: u64,
        output: MvccOutput,
    ) {
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

    pub(crate) fn unknown(&mut self, client_id: u64, op_id: u64, input: MvccInput, invoke_time: u64) {
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
            get_pct: 30,
            range_pct: 0,
            cas_pct: 20,
            delete_pct: 0,
            compact_pct: 0,
            think_ms_max: 10,
            timeout_ms: 500,
            retry_backoff_ms_max: 20,
            serializable_read_pct: 0,
            bounded_read_pct: 0,
        }
    }

    #[test]
    fn not_leader_retries_the_same_operation_with_a_fresh_value() {
        let (w, mut rng, mut h) = (workload(), SeededRng::new(1), History::default());
        let mut c = Client::new(1);
        let t = h.now();
        let first = c.start(&w, &mut rng, t, t);
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
        let second = c.start(&w, &mut rng, t + 1, t + 1);
        assert_ne!(first.op_id, second.op_id);
        match (&first.request, &second.request) {
            (Request::Write { command: a, .. }, Request::Write { command: b, .. }) => {
                assert_eq!(std::mem::discriminant(a), std::mem::discriminant(b));
                assert_ne!(a, b, "each attempt writes a value of its own");
            }
            (a, b) => assert_eq!(a, b),
        }
        assert!(h.is_empty(), "a refused operation is not history");
    }

    #[test]
    fn a_write_keeps_the_start_of_its_first_attempt_across_retries() {
        let (w, mut rng, mut h) = (workload(), SeededRng::new(3), History::default());
        let mut c = Client::new(1);
        let mut first = c.start(&w, &mut rng, h.now(), 100);
        while !matches!(first.request, Request::Write { .. }) {
            assert_eq!(c.write_started_ms(first.op_id), None, "a read is no write");
            c.on_timeout(first.op_id, &w, &mut rng, &mut h);
            c.drop_retry(&mut h);
            first = c.start(&w, &mut rng, h.now(), 100);
        }
        assert_eq!(c.write_started_ms(first.op_id), Some(100));
        let refused = ClientReply {
            client_id: 1,
            op_id: first.op_id,
            reply: Reply::NotLeader { hint: None },
        };
        c.on_reply(&refused, &w, &mut rng, &mut h);
        let second = c.start(&w, &mut rng, h.now(), 150);
        assert_eq!(c.write_started_ms(second.op_id), Some(100));
        assert_eq!(c.write_started_ms(first.op_id), None, "no longer in flight");
        c.on_timeout(second.op_id, &w, &mut rng, &mut h);
        let third = c.start(&w, &mut rng, h.now(), 1_200);
        assert_eq!(c.write_started_ms(third.op_id), Some(100));
        c.abandon(&mut h);
        let fresh = c.start(&w, &mut rng, h.now(), 2_000);
        let expected = matches!(fresh.request, Request::Write { .. }).then_some(2_000);
        assert_eq!(
            c.write_started_ms(fresh.op_id),
            expected,
            "a new operation starts anew"
        );
    }

    #[test]
    fn timeout_records_unknown_writes_and_ignores_late_replies() {
        let (w, mut rng, mut h) = (workload(), SeededRng::new(5), History::default());
        let mut c = Client::new(2);
        let mut req;
        loop {
            let t = h.now();
            req = c.start(&w, &mut rng, t, t);
            if matches!(req.request, Request::Write { .. }) {
                break;
            }
            c.on_timeout(req.op_id, &w, &mut rng, &mut h);
            c.drop_retry(&mut h);
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
        let put = |v: &str| MvccInput::Put {
            key: "k".into(),
            value: v.into(),
        };
        let t = h.now();
        h.unknown(1, 7, put("applied"), t);
        let t = h.now();
        h.unknown(1, 8, put("never-applied"), t);
        let t = h.now();
        let absent = MvccOutput::Get {
            revision: 1,
            record: None,
        };
        h.returned(2, 3, MvccInput::Get { key: "k".into() }, t, absent);
        let response = Ok(CommandResponse::Put(yizhi_kv::PutResponse {
            revision: 5,
            prev_kv: None,
        }));
        let resolved = h.resolved(|client, op| match (client, op) {
            (1, 7) => WriteKnowledge::Applied(&response),
            _ => WriteKnowledge::NeverApplied,
        });
        let kept: Vec<&MvccInput> = resolved.iter().map(|op| &op.input).collect();
        let get = MvccInput::Get { key: "k".into() };
        assert_eq!(kept, vec![&put("applied"), &get]);
        let answered = Outcome::Unacknowledged {
            output: MvccOutput::Put { revision: 5 },
        };
        assert_eq!(
            resolved[0].outcome, answered,
            "an applied write carries its answer"
        );
    }
}
