//! The runtime around one engine: it handles each `Ready` in the documented order (persist → fsync
//! → send → apply → answer reads → advance), applies committed entries to the MVCC state machine
//! (`yizhi_kv`, exactly as the server will), compacts, answers clients, and can crash and restart
//! from its disk.

use std::collections::BTreeMap;

use bytes::Bytes;
use yizhi_engine::{
    Engine, EntryPayload, Envelope, LogIndex, LogPosition, LogStorage, MemStorage, NodeId, ProposeError,
    Ready, Role, SeededRng, Term,
};

use yizhi_kv::{Command, CommandResponse, KvError, RangeRequest, RangeResponse, decode_command};

use crate::client::{ClientReply, ClientRequest, ReadLevel, Reply, Request};
use crate::config::TICK_INTERVAL_MS;
use crate::disk::{self, Disk, DiskWrite};
use crate::engines::EngineTuning;
use crate::invariants::{Checker, Violation};
use crate::kv::{self, Store};
use crate::trace::Trace;

/// Writes a node waits on for clients at once; beyond it the node refuses new ones.
pub const MAX_PENDING_WRITES_PER_NODE: usize = 1024;
pub const MAX_PENDING_READS_PER_NODE: usize = 1024;

/// Deliberate runtime bugs. Each breaks a rule of the `Ready` contract or of client handling;
/// a simulator that cannot catch them cannot catch the engine's bugs either.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mutation {
    #[default]
    None,
    /// Release a Ready's messages before its fsync (votes and acks promise what a crash forgets).
    SendBeforeSync,
    /// Acknowledge a write as soon as it is proposed, before it commits.
    AckOnPropose,
    /// Answer reads from the local state machine without ReadIndex.
    StaleReads,
    /// Lose the durable vote in a crash, so a node can vote twice in one term.
    ForgetVote,
    /// Lose the durable term and vote in a crash: a Paxos acceptor forgets its promise and can
    /// accept below it.
    ForgetPromise,
    /// Answer bounded-staleness reads from local state always, however old the last barrier.
    BoundedIgnoresBound,
    /// Answer every other serializable read from the state machine as of the node's last
    /// compaction snapshot: an old state, so a read session sees revisions go backwards.
    SerializableGoesBack,
    /// Answer serializable reads with the data one revision back but the current revision in the
    /// header: a state that never existed at the revision it claims.
    SerializableMisdated,
    /// Strip the `Deduped` wrapper before proposing, so a retried request applies again.
    NoDedupe,
}

impl Mutation {
    pub const ALL: [Mutation; 9] = [
        Mutation::SendBeforeSync,
        Mutation::AckOnPropose,
        Mutation::StaleReads,
        Mutation::ForgetVote,
        Mutation::ForgetPromise,
        Mutation::BoundedIgnoresBound,
        Mutation::SerializableGoesBack,
        Mutation::SerializableMisdated,
        Mutation::NoDedupe,
    ];

    pub fn by_name(name: &str) -> Option<Mutation> {
        Mutation::ALL
            .into_iter()
            .chain([Mutation::None])
            .find(|m| m.name() == name)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Mutation::None => "none",
            Mutation::SendBeforeSync => "send-before-sync",
            Mutation::AckOnPropose => "ack-on-propose",
            Mutation::StaleReads => "stale-reads",
            Mutation::ForgetVote => "forget-vote",
            Mutation::ForgetPromise => "forget-promise",
            Mutation::BoundedIgnoresBound => "bounded-ignores-bound",
            Mutation::SerializableGoesBack => "serializable-goes-back",
            Mutation::SerializableMisdated => "serializable-misdated",
            Mutation::NoDedupe => "no-dedupe",
        }
    }
}

/// Builds engines for the simulator, so it never learns which protocol it drives.
pub trait EngineFactory {
    type E: Engine<Storage = MemStorage>;
    fn name(&self) -> &'static str;
    /// A node starting (or restarting) from `storage`, whose state machine is at `applied`.
    /// `tuning` decides the engine's settings (the same for every node).
    fn build(
        &self,
        id: NodeId,
        storage: MemStorage,
        applied: LogIndex,
        tuning: EngineTuning,
        rng: SeededRng,
    ) -> Self::E;
    /// Snapshot messages are reported back to the sender when delivered or lost, as a transport
    /// streaming them would.
    fn is_snapshot(&self, msg: &<Self::E as Engine>::Message) -> bool;
    /// Raft: an entry keeps the term it was proposed in, so `(index, term)` names one proposal and
    /// logs obey Log Matching. Multi-Paxos: `Entry.term` is the ballot a node last accepted the
    /// slot in, and a new leader re-proposes an accepted value in its own ballot, so one chosen
    /// value can carry different terms on different nodes; only the payload names it, and Log
    /// Matching (a Raft property) does not hold. The checks adapt to this answer.
    fn term_identifies_value(&self) -> bool {
        true
    }
}

/// The simulator's shared per-event context.
#[derive(Debug)]
pub struct Ctx<'a> {
    pub now_ms: u64,
    pub checker: &'a mut Checker,
    pub trace: &'a mut Trace,
}

/// What a node asks the simulator to do after handling an event.
#[derive(Debug)]
pub struct Outputs<M> {
    pub messages: Vec<Envelope<M>>,
    pub replies: Vec<ClientReply>,
    pub fsync_requested: bool,
    /// Every entry this node's state machine applied (no-ops included, so that the read
    /// checker's reference replica can follow the log index by index), with the response of
    /// those that carry a command.
    pub applied_entries: Vec<AppliedEntry>,
}

/// One applied log entry; `response` is None for an entry without a command.
#[derive(Clone, Debug)]
pub struct AppliedEntry {
    pub entry: yizhi_engine::Entry,
    pub response: Option<Result<CommandResponse, KvError>>,
}

impl<M> Default for Outputs<M> {
    fn default() -> Self {
        Outputs {
            messages: Vec::new(),
            replies: Vec::new(),
            fsync_requested: false,
            applied_entries: Vec::new(),
        }
    }
}

#[derive(Clone, Debug)]
struct PendingWrite {
    client_id: u64,
    op_id: u64,
    position: LogPosition,
    proposed_at_ms: u64,
    /// The proposed command, to recognise it where the term alone cannot (Paxos re-proposals).
    data: Bytes,
    /// A `Deduped` command: identical bytes are one request however many attempts sent them, so
    /// a slot holding them answers every attempt alike (the state machine applies them once).
    deduped: bool,
}

#[derive(Clone, Debug)]
struct PendingRead {
    client_id: u64,
    op_id: u64,
    request: RangeRequest,
    /// When this read's barrier started (true ms; the node reads it through its own clock).
    barrier_started_ms: u64,
}

/// What became of a pending write when its slot was applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WriteFate {
    TookEffect,
    Failed,
    /// Multi-Paxos only: the slot holds the same bytes, re-proposed under another ballot, and
    /// another client proposed those very bytes too (two deletes of one key), so whose command
    /// was chosen cannot be told. The client is not answered and times out: unknown outcome.
    Ambiguous,
}

#[derive(Debug)]
pub struct Node<E: Engine> {
    pub id: NodeId,
    engine: Option<E>,
    pub disk: Disk,
    kv: Store,
    /// Invariant: the store reflects exactly the committed entries up to `applied`.
    applied: LogIndex,
    /// Bumped at every crash, so stale timers and fsync completions are recognised.
    pub incarnation: u64,
    pub paused_until_ms: u64,
    pub tick_interval_ms: u64,
    pub fsync_ms_max: u64,
    compact_every_entries: u64,
    /// A Ready whose state is written but not yet synced; nothing else is processed until it is.
    awaiting_sync: Option<Ready<E::Message>>,
    pending_writes: BTreeMap<LogIndex, Vec<PendingWrite>>,
    pending_reads: BTreeMap<u64, PendingRead>,
    /// Reads confirmed by the engine, waiting for `applied` to reach their index.
    safe_reads: Vec<(LogIndex, PendingRead)>,
    next_read_id: u64,
    /// The start of the latest read barrier that has completed here (its read index applied):
    /// every write acknowledged before that instant is applied, which bounded reads rely on.
    /// Forgotten in a crash, as the server keeps it in memory.
    completed_barrier_started_ms: Option<u64>,
    /// Only for `Mutation::SerializableGoesBack`: the state machine as of the last compaction,
    /// and how many serializable reads were answered (every other one is answered from it).
    stale_image: Option<Store>,
    serializable_reads: u64,
    /// Bounded reads answered from local state without a barrier of their own (for reports).
    pub bounded_reads_served_locally: u64,
    /// A deliberate runtime bug, to show the checks catch it (`Mutation::None` in real runs).
    pub mutation: Mutation,
    last_seen: Option<(Role, Term, Option<NodeId>)>,
    /// See `EngineFactory::term_identifies_value`: when false, a write's outcome is decided by
    /// whether its own command was applied at its slot, whatever term the slot carries.
    pub term_identifies_value: bool,
}

impl<E: Engine<Storage = MemStorage>> Node<E> {
    pub fn new(id: NodeId, engine: E, disk: Disk, timing: (u64, u64), compact_every_entries: u64) -> Self {
        assert!(timing.0 > 0 && compact_every_entries > 0);
        Node {
            id,
            engine: Some(engine),
            disk,
            kv: kv::empty_store(),
            applied: 0,
            incarnation: 0,
            paused_until_ms: 0,
            tick_interval_ms: timing.0,
            fsync_ms_max: timing.1,
            compact_every_entries,
            awaiting_sync: None,
            pending_writes: BTreeMap::new(),
            pending_reads: BTreeMap::new(),
            safe_reads: Vec::new(),
            next_read_id: 1,
            completed_barrier_started_ms: None,
            stale_image: None,
            serializable_reads: 0,
            bounded_reads_served_locally: 0,
            mutation: Mutation::None,
            last_seen: None,
            term_identifies_value: true,
        }
    }

    pub fn is_up(&self) -> bool {
        self.engine.is_some()
    }

    pub fn engine(&self) -> Option<&E> {
        self.engine.as_ref()
    }

    pub fn applied(&self) -> LogIndex {
        self.applied
    }

    /// A hash of the replicated state (`MvccStore::state_hash`): equal at equal `applied` on
    /// every replica.
    pub fn state_hash(&self) -> u64 {
        self.kv.state_hash().expect("the in-memory backend cannot fail")
    }

    pub fn pending_write_count(&self) -> usize {
        self.pending_writes.values().map(Vec::len).sum()
    }

    /// The lowest index of a write proposed before `ms` that is still waiting for its outcome.
    pub fn oldest_pending_write_before(&self, ms: u64) -> Option<LogIndex> {
        let mut waiting = self.pending_writes.iter();
        waiting
            .find(|(_, writes)| writes.iter().any(|w| w.proposed_at_ms < ms))
            .map(|(&index, _)| index)
    }

    /// The log as this node sees it: the engine's storage when up, the durable image when down.
    pub fn log(&self) -> &MemStorage {
        match &self.engine {
            Some(engine) => engine.storage(),
            None => self.disk.durable(),
        }
    }

    fn engine_mut(&mut self) -> &mut E {
        self.engine
            .as_mut()
            .unwrap_or_else(|| panic!("node {} is down", self.id))
    }

    pub fn tick(&mut self, ctx: &mut Ctx<'_>) -> Result<Outputs<E::Message>, Violation> {
        self.engine_mut().tick();
        self.pump(ctx)
    }

    pub fn step(
        &mut self,
        envelope: Envelope<E::Message>,
        ctx: &mut Ctx<'_>,
    ) -> Result<Outputs<E::Message>, Violation> {
        self.engine_mut().step(envelope);
        self.pump(ctx)
    }

    pub fn report_snapshot(
        &mut self,
        peer: NodeId,
        status: yizhi_engine::SnapshotStatus,
        ctx: &mut Ctx<'_>,
    ) -> Result<Outputs<E::Message>, Violation> {
        self.engine_mut().report_snapshot(peer, status);
        self.pump(ctx)
    }

    pub fn report_unreachable(
        &mut self,
        peer: NodeId,
        ctx: &mut Ctx<'_>,
    ) -> Result<Outputs<E::Message>, Violation> {
        self.engine_mut().report_unreachable(peer);
        self.pump(ctx)
    }

    pub fn report_connection_lost(
        &mut self,
        peer: NodeId,
        ctx: &mut Ctx<'_>,
    ) -> Result<Outputs<E::Message>, Violation> {
        self.engine_mut().report_connection_lost(peer);
        self.pump(ctx)
    }

    /// A client request arrived: propose a write or start a ReadIndex read.
    pub fn request(
        &mut self,
        req: ClientRequest,
        ctx: &mut Ctx<'_>,
    ) -> Result<Outputs<E::Message>, Violation> {
        let answer = match &req.request {
            Request::Write { command, payload } => self.propose(&req, command, payload, ctx),
            Request::Read { range, level } => self.read(&req, range, *level, ctx.now_ms),
        };
        let mut out = self.pump(ctx)?;
        let reply = |reply| ClientReply {
            client_id: req.client_id,
            op_id: req.op_id,
            reply,
        };
        out.replies.extend(answer.map(reply));
        Ok(out)
    }

    /// Returns the immediate answer, if any (a refusal, or a mutation's premature answer).
    fn propose(
        &mut self,
        req: &ClientRequest,
        command: &Command,
        data: &Bytes,
        ctx: &mut Ctx<'_>,
    ) -> Option<Reply> {
        if self.pending_write_count() >= MAX_PENDING_WRITES_PER_NODE {
            return Some(Reply::Rejected);
        }
        let data = match (self.mutation, command) {
            (Mutation::NoDedupe, Command::Deduped { command: inner, .. }) => {
                Bytes::from(yizhi_kv::encode_command(inner))
            }
            _ => data.clone(),
        };
        let proposed = self.engine_mut().propose(data.clone());
        if let Ok(position) = proposed {
            ctx.checker
                .observe_proposed_at(position, req.client_id, req.op_id);
        }
        match proposed {
            Ok(position) if self.mutation == Mutation::AckOnPropose => Some(Reply::Wrote {
                position,
                response: self.speculate(command, position.index),
            }),
            Ok(position) => {
                let pending = PendingWrite {
                    client_id: req.client_id,
                    op_id: req.op_id,
                    position,
                    proposed_at_ms: ctx.now_ms,
                    data,
                    deduped: matches!(command, Command::Deduped { .. }),
                };
                self.pending_writes
                    .entry(position.index)
                    .or_default()
                    .push(pending);
                None
            }
            Err(e) => Some(refusal(e)),
        }
    }

    /// Only for `Mutation::AckOnPropose`: the answer the command would get if nothing else were
    /// applied before it, from a scratch copy of the store.
    fn speculate(&self, command: &Command, index: LogIndex) -> Result<CommandResponse, KvError> {
        let mut scratch = kv::store_from_snapshot(&kv::snapshot_of(&self.kv)).expect("own snapshot restores");
        let applied = scratch
            .apply(command, index)
            .expect("the in-memory backend cannot fail");
        applied.response
    }

    /// Answers a read at once when its level allows, else starts a read barrier for it.
    fn read(
        &mut self,
        req: &ClientRequest,
        range: &RangeRequest,
        level: ReadLevel,
        now_ms: u64,
    ) -> Option<Reply> {
        let local_now = match level {
            ReadLevel::Linearizable => self.mutation == Mutation::StaleReads,
            ReadLevel::Serializable => return Some(Reply::Read(self.serializable_range(range))),
            ReadLevel::Bounded { max_staleness_ms } => {
                self.mutation == Mutation::BoundedIgnoresBound
                    || self.completed_barrier_started_ms.is_some_and(|started_ms| {
                        self.local_elapsed_within(started_ms, now_ms, max_staleness_ms)
                    })
            }
        };
        if local_now {
            if matches!(level, ReadLevel::Bounded { .. }) {
                self.bounded_reads_served_locally += 1;
            }
            return Some(Reply::Read(self.range(range)));
        }
        if self.pending_reads.len() >= MAX_PENDING_READS_PER_NODE {
            return Some(Reply::Rejected);
        }
        let read_id = self.next_read_id;
        self.next_read_id += 1;
        match self.engine_mut().read_index(read_id) {
            Ok(()) => {
                let pending = PendingRead {
                    client_id: req.client_id,
                    op_id: req.op_id,
                    request: range.clone(),
                    barrier_started_ms: now_ms,
                };
                self.pending_reads.insert(read_id, pending);
                None
            }
            Err(e) => Some(refusal(e)),
        }
    }

    /// Takes Readies until one needs an fsync (then waits for `fsync_done`) or none is left.
    fn pump(&mut self, ctx: &mut Ctx<'_>) -> Result<Outputs<E::Message>, Violation> {
        let mut out = Outputs::default();
        while self.awaiting_sync.is_none() && self.engine_mut().has_ready() {
            let ready = self.engine_mut().ready();
            self.persist(&ready, ctx)?;
            if ready.must_sync {
                let mut ready = ready;
                if self.mutation == Mutation::SendBeforeSync {
                    out.messages.append(&mut ready.messages);
                }
                self.awaiting_sync = Some(ready);
                out.fsync_requested = true;
            } else {
                self.finish(ready, ctx, &mut out)?;
            }
        }
        Ok(out)
    }

    /// The fsync issued for the waiting Ready completed.
    pub fn fsync_done(&mut self, ctx: &mut Ctx<'_>) -> Result<Outputs<E::Message>, Violation> {
        let ready = self
            .awaiting_sync
            .take()
            .expect("fsync completion without a waiting Ready");
        self.disk.sync();
        let mut out = Outputs::default();
        self.finish(ready, ctx, &mut out)?;
        let more = self.pump(ctx)?;
        out.messages.extend(more.messages);
        out.replies.extend(more.replies);
        out.applied_entries.extend(more.applied_entries);
        out.fsync_requested |= more.fsync_requested;
        Ok(out)
    }

    /// Step 1 of a Ready: write it to the engine's storage now and to the disk's unsynced queue.
    fn persist(&mut self, ready: &Ready<E::Message>, ctx: &mut Ctx<'_>) -> Result<(), Violation> {
        let id = self.id;
        let node_term = self.engine_mut().status().term;
        if let Some(soft) = ready.soft_state {
            ctx.trace.record(
                ctx.now_ms,
                Some(id),
                format_args!("soft state {:?} leader {:?}", soft.role, soft.leader),
            );
        }
        let mut writes = Vec::new();
        if let Some(snapshot) = &ready.snapshot {
            writes.push(DiskWrite::InstallSnapshot(snapshot.clone()));
        }
        if !ready.entries.is_empty() {
            writes.push(DiskWrite::Append(ready.entries.clone()));
        }
        if let Some(hard_state) = ready.hard_state {
            writes.push(DiskWrite::HardState(hard_state));
        }
        for write in writes {
            disk::apply(self.engine_mut().storage_mut(), write.clone());
            self.disk.write(write);
        }
        ctx.checker
            .observe_committed(id, node_term, &ready.committed_entries)
    }

    /// Steps 2–5 of a Ready, after its state is durable.
    fn finish(
        &mut self,
        ready: Ready<E::Message>,
        ctx: &mut Ctx<'_>,
        out: &mut Outputs<E::Message>,
    ) -> Result<(), Violation> {
        out.messages.extend(ready.messages);
        if let Some(snapshot) = &ready.snapshot {
            self.install_snapshot(snapshot.meta.index, snapshot.meta.term, &snapshot.data, ctx)?;
        }
        let snapshot_index = ready.snapshot.as_ref().map_or(0, |s| s.meta.index);
        for entry in &ready.committed_entries {
            if entry.index <= snapshot_index {
                // Covered by the snapshot installed from this same Ready.
                continue;
            }
            ctx.checker.observe_applied(self.id, entry)?;
            self.apply(entry, ctx.checker, out);
        }
        for state in &ready.read_states {
            if let Some(read) = self.pending_reads.remove(&state.read_id) {
                self.safe_reads.push((state.index, read));
            }
        }
        self.answer_reads(out);
        self.engine_mut().advance();
        self.maybe_compact();
        Ok(())
    }

    fn install_snapshot(
        &mut self,
        index: LogIndex,
        term: Term,
        data: &[u8],
        ctx: &mut Ctx<'_>,
    ) -> Result<(), Violation> {
        ctx.checker.observe_snapshot_installed(self.id, index, term)?;
        self.kv = kv::store_from_snapshot(data)
            .unwrap_or_else(|e| panic!("node {}: snapshot at {index} does not restore: {e}", self.id));
        self.applied = index;
        ctx.checker
            .observe_state_hash(self.id, index, self.state_hash())?;
        // Writes placed at or below the snapshot can no longer be told apart: their clients time out.
        self.pending_writes.retain(|&i, _| i > index);
        ctx.trace.record(
            ctx.now_ms,
            Some(self.id),
            format_args!("installed snapshot at {index} term {term}"),
        );
        Ok(())
    }

    fn apply(&mut self, entry: &yizhi_engine::Entry, checker: &Checker, out: &mut Outputs<E::Message>) {
        assert_eq!(
            entry.index,
            self.applied + 1,
            "node {} applies out of order",
            self.id
        );
        let response = match &entry.payload {
            EntryPayload::Normal(data) => {
                // Only the simulator's clients write the log, so bytes that do not decode are a bug.
                let command = decode_command(data).unwrap_or_else(|e| {
                    panic!("node {}: entry {} does not decode: {e}", self.id, entry.index)
                });
                let applied = self.kv.apply(&command, entry.index);
                Some(applied.expect("the in-memory backend cannot fail").response)
            }
            EntryPayload::Noop | EntryPayload::Membership(_) => None,
        };
        out.applied_entries.push(AppliedEntry {
            entry: entry.clone(),
            response: response.clone(),
        });
        self.applied = entry.index;
        for pending in self.pending_writes.remove(&entry.index).unwrap_or_default() {
            let reply = match (self.fate(&pending, entry, checker), &response) {
                (WriteFate::TookEffect, Some(response)) => Reply::Wrote {
                    position: pending.position,
                    response: response.clone(),
                },
                (WriteFate::Ambiguous, Some(_)) => continue,
                _ => Reply::WriteFailed,
            };
            out.replies.push(ClientReply {
                client_id: pending.client_id,
                op_id: pending.op_id,
                reply,
            });
        }
    }

    /// Raft: the proposal took effect iff the applied entry has its term. Multi-Paxos: iff the
    /// slot holds its bytes; a term match (its own ballot) or bytes nobody else proposed prove
    /// those bytes are this proposal's, and for a `Deduped` request any attempt's bytes are it.
    fn fate(&self, pending: &PendingWrite, entry: &yizhi_engine::Entry, checker: &Checker) -> WriteFate {
        let same_term = pending.position.term == entry.term;
        if self.term_identifies_value {
            return if same_term {
                WriteFate::TookEffect
            } else {
                WriteFate::Failed
            };
        }
        let same_bytes = matches!(&entry.payload, EntryPayload::Normal(d) if *d == pending.data);
        if !same_bytes {
            WriteFate::Failed
        } else if same_term || pending.deduped || checker.proposers_of(&pending.data) == 1 {
            WriteFate::TookEffect
        } else {
            WriteFate::Ambiguous
        }
    }

    /// The `version` of the one key `request` reads (0 when absent): the exactly-once counter.
    pub fn key_version(&self, request: &RangeRequest) -> i64 {
        let response = self.range(request);
        assert!(response.kvs.len() <= 1, "a one-key read returned {response:?}");
        response.kvs.first().map_or(0, |kv| kv.version)
    }

    fn range(&self, request: &RangeRequest) -> RangeResponse {
        self.kv
            .range(request)
            .unwrap_or_else(|e| panic!("node {}: {request:?} refused: {e}", self.id))
    }

    /// The node's clock runs at `TICK_INTERVAL_MS / tick_interval_ms` of true time (a skewed
    /// tick is a skewed clock): whether at most `bound_ms` passed on it between two instants.
    /// Exact, so that the bounded-staleness check can be exact too.
    fn local_elapsed_within(&self, since_ms: u64, now_ms: u64, bound_ms: u64) -> bool {
        assert!(
            since_ms <= now_ms,
            "node {}: barrier started in the future",
            self.id
        );
        (now_ms - since_ms) * TICK_INTERVAL_MS <= bound_ms * self.tick_interval_ms
    }

    fn serializable_range(&mut self, request: &RangeRequest) -> RangeResponse {
        self.serializable_reads += 1;
        match self.mutation {
            Mutation::SerializableGoesBack if self.serializable_reads.is_multiple_of(2) => {
                if let Some(image) = &self.stale_image {
                    return image
                        .range(request)
                        .expect("the stale image serves the workload's reads");
                }
            }
            Mutation::SerializableMisdated => {
                let behind = RangeRequest {
                    revision: self.kv.current_revision() - 1,
                    ..request.clone()
                };
                // Refused when that revision is compacted away; then the read is honest.
                if let Ok(response) = self.kv.range(&behind) {
                    return response;
                }
            }
            _ => {}
        }
        self.range(request)
    }

    fn answer_reads(&mut self, out: &mut Outputs<E::Message>) {
        let applied = self.applied;
        let (ready, waiting): (Vec<_>, Vec<_>) = self
            .safe_reads
            .drain(..)
            .partition(|(index, _)| *index <= applied);
        self.safe_reads = waiting;
        for (_, read) in ready {
            // A completed barrier: this node holds everything acknowledged before it started.
            let latest = self
                .completed_barrier_started_ms
                .max(Some(read.barrier_started_ms));
            self.completed_barrier_started_ms = latest;
            let reply = Reply::Read(self.range(&read.request));
            out.replies.push(ClientReply {
                client_id: read.client_id,
                op_id: read.op_id,
                reply,
            });
        }
    }

    /// Snapshots the KV map at `applied` every so often, so that lagging followers need
    /// InstallSnapshot. The compaction reaches the disk through the same unsynced queue.
    fn maybe_compact(&mut self) {
        let applied = self.applied;
        let engine = self.engine.as_mut().expect("compacting a running node");
        let snapshot_index = engine.storage().snapshot_ref().meta.index;
        if applied < snapshot_index + self.compact_every_entries || applied > engine.storage().last_index() {
            return;
        }
        let membership = engine.status().membership;
        let data = kv::snapshot_of(&self.kv);
        if self.mutation == Mutation::SerializableGoesBack {
            self.stale_image = Some(kv::store_from_snapshot(&data).expect("own snapshot restores"));
        }
        engine
            .storage_mut()
            .compact(applied, membership.clone(), data.clone());
        self.disk.write(DiskWrite::Compact {
            index: applied,
            membership,
            data,
        });
    }

    /// Power loss: the engine and everything in memory are gone; the disk keeps what was synced
    /// plus the first `survivors` of the unsynced writes, each whole.
    pub fn crash(&mut self, survivors: usize) {
        assert!(self.is_up(), "node {} crashed twice", self.id);
        self.engine = None;
        self.disk.crash(survivors);
        match self.mutation {
            Mutation::ForgetVote => self.disk.forget_vote(),
            Mutation::ForgetPromise => self.disk.forget_promise(),
            _ => {}
        }
        self.incarnation += 1;
        self.awaiting_sync = None;
        self.pending_writes.clear();
        self.pending_reads.clear();
        self.safe_reads.clear();
        self.completed_barrier_started_ms = None;
        self.last_seen = None;
        self.paused_until_ms = 0;
    }

    /// Restarts from the durable state: the state machine from the durable snapshot, the engine
    /// from the durable log.
    pub fn restart<F: EngineFactory<E = E>>(
        &mut self,
        factory: &F,
        tuning: EngineTuning,
        rng: SeededRng,
        checker: &mut Checker,
    ) {
        assert!(!self.is_up(), "node {} restarted while up", self.id);
        let durable = self.disk.durable().clone();
        let snapshot = durable.snapshot_ref();
        self.kv = kv::store_from_snapshot(&snapshot.data)
            .unwrap_or_else(|e| panic!("node {}: durable snapshot does not restore: {e}", self.id));
        self.applied = snapshot.meta.index;
        checker.observe_restart(self.id, self.applied);
        self.engine = Some(factory.build(self.id, durable, self.applied, tuning, rng));
    }

    /// Records role, term and leader changes in the trace; returns the status for the checks.
    pub fn observe(&mut self, ctx: &mut Ctx<'_>) -> Option<yizhi_engine::Status> {
        let status = self.engine.as_ref()?.status();
        let seen = (status.role, status.term, status.leader);
        if self.last_seen != Some(seen) {
            ctx.trace.record(
                ctx.now_ms,
                Some(self.id),
                format_args!(
                    "{:?} term {} leader {:?} commit {} last {}",
                    seen.0, seen.1, seen.2, status.commit, status.last_index
                ),
            );
            self.last_seen = Some(seen);
        }
        Some(status)
    }
}

fn refusal(e: ProposeError) -> Reply {
    match e {
        ProposeError::NotLeader { leader } => Reply::NotLeader { hint: leader },
        _ => Reply::Rejected,
    }
}
