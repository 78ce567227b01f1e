//! The runtime around one engine: it handles each `Ready` in the documented order (persist → fsync
//! → send → apply → answer reads → advance), applies committed entries to the MVCC state machine
//! (`yizhi_kv`, exactly as the server will), compacts, answers clients, and can crash and restart
//! from its disk.
//!
//! Writes take the server's request path (`yizhi_member`, the same code the server runs): a write
//! registers a waiter under this boot's proposal identity with its client's deadline, is proposed
//! here or forwarded to the leader (which refuses it once the deadline has passed), and is answered
//! only by the applied entry that carries its identity, or "request timed out" at its deadline.
//! Linearizable reads take the server's read barriers (`yizhi_member::reads`): asked of the engine,
//! or of the leader with a `ReadRequest` frame when the engine confirms reads only as leader
//! (Multi-Paxos), failed at once when the leader changes, timed out after `READ_TIMEOUT_TICKS`.

use bytes::Bytes;
use yizhi_engine::{
    Engine, EntryPayload, Envelope, LogIndex, LogPosition, LogStorage, MemStorage, NodeId, Ready, Role,
    SeededRng, Term,
};

use yizhi_kv::{Command, CommandResponse, EventKind, KvError, RangeRequest, RangeResponse, decode_command};
use yizhi_member::{
    Confirmed, Deadline, Origin, ProposalId, ProposeFailure, ReadBarriers, ReadLimits, ReadResponse,
    ReadStart, Route, Waiters, decode_proposal, encode_proposal, first_id_of_boot, peek_proposal_id,
    place_proposal,
};

use crate::client::{ClientReply, ClientRequest, ReadLevel, Reply, Request};
use crate::clock::TICK_INTERVAL_MS;
use crate::disk::{self, Disk, DiskWrite};
use crate::engines::{EngineFactory, EngineStart, EngineTuning};
use crate::invariants::{Checker, Violation};
use crate::kv::{self, Store};
use crate::trace::Trace;

/// Writes a node waits on for clients at once; beyond it the node refuses new ones.
pub const MAX_PENDING_WRITES_PER_NODE: usize = 1024;
/// A node's wall clock reads true time plus an offset of at most this (clocks kept in step by
/// NTP, as forwarded deadlines assume).
pub const MAX_WALL_CLOCK_OFFSET_MS: u64 = 20;
pub const MAX_PENDING_READS_PER_NODE: usize = 1024;
/// Ticks a read barrier may wait: two of the longest election timeouts the simulator draws (the
/// server's rule: two election timeouts).
pub const READ_TIMEOUT_TICKS: u64 = 40;
const READ_LIMITS: ReadLimits = ReadLimits {
    max_own: MAX_PENDING_READS_PER_NODE,
    max_for_followers: MAX_PENDING_READS_PER_NODE,
    timeout_ticks: READ_TIMEOUT_TICKS,
};

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
    /// Proposals this node forwards to the leader it knows.
    pub forwards: Vec<Forward>,
    /// Forwarded proposals this node (as the supposed leader) refused, for their origin.
    pub forward_failures: Vec<ForwardFailure>,
    /// Read barriers asked of the leader, and the leader's answers.
    pub read_frames: Vec<ReadFrame>,
    /// This node answered a read from its lease, as leader of this term: the simulator checks at
    /// once that no quorum of the other nodes would elect another leader.
    pub lease_read_term: Option<Term>,
}

/// A read-barrier frame of the member runtime on the peer link `from → to`.
#[derive(Clone, Copy, Debug)]
pub struct ReadFrame {
    pub from: NodeId,
    pub to: NodeId,
    pub kind: ReadFrameKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFrameKind {
    /// Confirm a read index for the sender's read `read_id`.
    Request { read_id: u64 },
    /// The read index for the receiver's read `read_id`, or `None`: refused.
    Response { read_id: u64, index: Option<LogIndex> },
}

/// One applied log entry; `response` is None for an entry without a command.
#[derive(Clone, Debug)]
pub struct AppliedEntry {
    pub entry: yizhi_engine::Entry,
    pub response: Option<Result<CommandResponse, KvError>>,
    /// The values this entry put, with their revisions (what a watch from revision 1 would see).
    pub written: Vec<(Bytes, i64)>,
}

/// A proposal on its way to the leader, with its client's deadline on the sender's wall clock.
#[derive(Clone, Debug)]
pub struct Forward {
    pub from: NodeId,
    pub to: NodeId,
    pub data: Bytes,
    pub deadline: Deadline,
}

/// The leader's word that a forwarded proposal was never proposed.
#[derive(Clone, Debug)]
pub struct ForwardFailure {
    pub from: NodeId,
    pub to: NodeId,
    pub id: ProposalId,
    pub failure: ProposeFailure,
}

impl<M> Default for Outputs<M> {
    fn default() -> Self {
        Outputs {
            messages: Vec::new(),
            replies: Vec::new(),
            fsync_requested: false,
            applied_entries: Vec::new(),
            forwards: Vec::new(),
            forward_failures: Vec::new(),
            read_frames: Vec::new(),
            lease_read_term: None,
        }
    }
}

impl<M> Outputs<M> {
    fn extend(&mut self, more: Outputs<M>) {
        self.messages.extend(more.messages);
        self.replies.extend(more.replies);
        self.fsync_requested |= more.fsync_requested;
        self.applied_entries.extend(more.applied_entries);
        self.forwards.extend(more.forwards);
        self.forward_failures.extend(more.forward_failures);
        self.read_frames.extend(more.read_frames);
        self.lease_read_term = self.lease_read_term.or(more.lease_read_term);
    }
}

/// A client waiting for its write, as this node's waiter table holds it.
#[derive(Clone, Copy, Debug)]
struct WriteWaiter {
    client_id: u64,
    op_id: u64,
    registered_ms: u64,
}
#[derive(Clone, Debug)]
struct PendingRead {
    client_id: u64,
    op_id: u64,
    request: RangeRequest,
    /// When this read's barrier started (true ms; the node reads it through its own clock).
    barrier_started_ms: u64,
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
    /// When this node's next tick is due (true ms); the simulator gives every due tick before
    /// the node handles anything else.
    pub next_tick_due_ms: u64,
    pub tick_interval_ms: u64,
    pub fsync_ms_max: u64,
    compact_every_entries: u64,
    /// A Ready whose state is written but not yet synced; nothing else is processed until it is.
    awaiting_sync: Option<Ready<E::Message>>,
    /// This boot's writes waiting for their entries (the server's own table and rules).
    waiters: Waiters<WriteWaiter>,
    /// Added to true time to read this node's wall clock (deadlines are wall-clock instants).
    pub wall_offset_ms: u64,
    /// Ticks since this boot (read barriers time out in ticks).
    ticks: u64,
    /// Read barriers in flight, this node's and followers' (the server's table and rules).
    reads: ReadBarriers<PendingRead>,
    /// Reads confirmed by the engine, waiting for `applied` to reach their index.
    safe_reads: Vec<(LogIndex, PendingRead)>,
    /// The read id asked of the engine by the request being handled: released in the same call,
    /// it was answered without a round trip (a lease read).
    read_asked_now: Option<u64>,
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
    /// Read barriers this node asked of the leader with a `ReadRequest` (for reports).
    pub reads_asked_of_leader: u64,
    /// A deliberate runtime bug, to show the checks catch it (`Mutation::None` in real runs).
    pub mutation: Mutation,
    last_seen: Option<(Role, Term, Option<NodeId>)>,
}

impl<E: Engine<Storage = MemStorage>> Node<E> {
    /// `boot_id` is this first boot's (non-zero); a restart draws another.
    pub fn new(
        id: NodeId,
        engine: E,
        disk: Disk,
        timing: (u64, u64),
        compact_every_entries: u64,
        boot_id: u64,
    ) -> Self {
        assert!(timing.0 > 0 && compact_every_entries > 0);
        Node {
            id,
            engine: Some(engine),
            disk,
            kv: kv::empty_store(),
            applied: 0,
            incarnation: 0,
            paused_until_ms: 0,
            next_tick_due_ms: 0,
            tick_interval_ms: timing.0,
            fsync_ms_max: timing.1,
            compact_every_entries,
            awaiting_sync: None,
            waiters: Waiters::new(id, boot_id, MAX_PENDING_WRITES_PER_NODE),
            wall_offset_ms: 0,
            ticks: 0,
            reads: ReadBarriers::new(first_id_of_boot(boot_id), READ_LIMITS),
            safe_reads: Vec::new(),
            read_asked_now: None,
            completed_barrier_started_ms: None,
            stale_image: None,
            serializable_reads: 0,
            bounded_reads_served_locally: 0,
            reads_asked_of_leader: 0,
            mutation: Mutation::None,
            last_seen: None,
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
        self.waiters.len()
    }

    /// Whether a write registered before `ms` is still waiting for its outcome.
    pub fn has_pending_write_before(&self, ms: u64) -> bool {
        self.waiters.replies().any(|w| w.registered_ms < ms)
    }

    /// This node's wall clock at true time `now_ms`.
    pub fn wall_ms(&self, now_ms: u64) -> u64 {
        now_ms + self.wall_offset_ms
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

    /// A tick of the engine; writes whose deadline passed are answered "request timed out".
    pub fn tick(&mut self, ctx: &mut Ctx<'_>) -> Result<Outputs<E::Message>, Violation> {
        self.engine_mut().tick();
        self.ticks += 1;
        let mut out = self.pump(ctx)?;
        for (_, waiter) in self.waiters.take_expired(self.wall_ms(ctx.now_ms)) {
            out.replies.push(waiter.failed(ProposeFailure::TimedOut));
        }
        for read in self.reads.expire(self.ticks) {
            out.replies.push(read.failed(&ProposeFailure::TimedOut));
        }
        Ok(out)
    }

    /// Hands the engine one input that needs no more of the node (a message, a report about a
    /// peer or a snapshot) and does what the engine then asks.
    pub fn feed(
        &mut self,
        input: impl FnOnce(&mut E),
        ctx: &mut Ctx<'_>,
    ) -> Result<Outputs<E::Message>, Violation> {
        input(self.engine_mut());
        self.pump(ctx)
    }

    /// A client request arrived: propose a write or start a ReadIndex read.
    pub fn request(
        &mut self,
        req: ClientRequest,
        ctx: &mut Ctx<'_>,
    ) -> Result<Outputs<E::Message>, Violation> {
        let mut out = Outputs::default();
        let answer = match &req.request {
            Request::Write { command, payload } => self.propose(&req, command, payload, ctx, &mut out)?,
            Request::Read { range, level } => self.read(&req, range, *level, ctx.now_ms, &mut out),
        };
        let pumped = self.pump(ctx);
        self.read_asked_now = None;
        out.extend(pumped?);
        let reply = |reply| ClientReply {
            client_id: req.client_id,
            op_id: req.op_id,
            reply,
        };
        out.replies.extend(answer.map(reply));
        Ok(out)
    }

    /// Registers the write's waiter and places its proposal; returns the immediate answer, if any
    /// (a refusal, or a mutation's premature answer).
    fn propose(
        &mut self,
        req: &ClientRequest,
        command: &Command,
        payload: &Bytes,
        ctx: &mut Ctx<'_>,
        out: &mut Outputs<E::Message>,
    ) -> Result<Option<Reply>, Violation> {
        let command_bytes = match (self.mutation, command) {
            (Mutation::NoDedupe, Command::Deduped { command: inner, .. }) => {
                Bytes::from(yizhi_kv::encode_command(inner))
            }
            _ => payload.clone(),
        };
        let deadline = self.deadline_of(req, ctx.now_ms);
        let waiter = WriteWaiter {
            client_id: req.client_id,
            op_id: req.op_id,
            registered_ms: ctx.now_ms,
        };
        let id = match self.waiters.register(&command_bytes, deadline, waiter, |_| false) {
            Ok(id) => id,
            Err(failure) => return Ok(Some(Reply::Failed { failure })),
        };
        ctx.checker
            .observe_request(id, req.client_id, req.op_id, req.deadline_ms);
        let data = encode_proposal(&id, &command_bytes);
        let proposed = self.place(data, Origin::Local, deadline, ctx, out)?;
        if self.mutation == Mutation::AckOnPropose
            && let Some(position) = proposed
            && self.waiters.take_failed(&id).is_some()
        {
            let response = self.speculate(command, position.index);
            return Ok(Some(Reply::Wrote { position, response }));
        }
        Ok(None)
    }

    /// The client's deadline as this node's gRPC layer sees it: the remaining time the request
    /// carries (a grpc-timeout), measured on this node's clock, which may run fast or slow.
    fn deadline_of(&self, req: &ClientRequest, now_ms: u64) -> Deadline {
        let remaining_ms = req.deadline_ms.saturating_sub(now_ms);
        let measured_true_ms = remaining_ms * self.tick_interval_ms / TICK_INTERVAL_MS;
        Deadline {
            at_ms: self.wall_ms(now_ms + measured_true_ms),
        }
    }

    /// Hands a proposal to the engine, to the leader, or back as a failure, by the server's rules;
    /// returns its position when this node's engine took it.
    fn place(
        &mut self,
        data: Bytes,
        origin: Origin,
        deadline: Deadline,
        ctx: &mut Ctx<'_>,
        out: &mut Outputs<E::Message>,
    ) -> Result<Option<LogPosition>, Violation> {
        let id = peek_proposal_id(&data).expect("proposals carry an identity");
        let now_wall_ms = self.wall_ms(ctx.now_ms);
        let route = place_proposal(
            self.engine_mut(),
            data.clone(),
            origin,
            deadline,
            now_wall_ms,
            true,
        );
        match (route, origin) {
            (Route::Proposed(position), _) => {
                ctx.checker.observe_placed(&id, ctx.now_ms)?;
                return Ok(Some(position));
            }
            (Route::Forward { leader }, _) => out.forwards.push(Forward {
                from: self.id,
                to: leader,
                data,
                deadline,
            }),
            (Route::Refused(failure), Origin::Local | Origin::LocalLeaderOnly) => {
                if let Some(waiter) = self.waiters.take_failed(&id) {
                    out.replies.push(waiter.failed(failure));
                }
            }
            (Route::Refused(failure), Origin::ForwardedBy(from)) => {
                out.forward_failures.push(ForwardFailure {
                    from: self.id,
                    to: from,
                    id,
                    failure,
                })
            }
        }
        Ok(None)
    }

    /// A follower forwarded its client's proposal to this node.
    pub fn forwarded(
        &mut self,
        forward: Forward,
        ctx: &mut Ctx<'_>,
    ) -> Result<Outputs<E::Message>, Violation> {
        let mut out = Outputs::default();
        self.place(
            forward.data,
            Origin::ForwardedBy(forward.from),
            forward.deadline,
            ctx,
            &mut out,
        )?;
        out.extend(self.pump(ctx)?);
        Ok(out)
    }

    /// The leader refused a proposal this node forwarded: its client hears why.
    pub fn forward_failed(&mut self, failure: &ForwardFailure) -> Outputs<E::Message> {
        let mut out = Outputs::default();
        if let Some(waiter) = self.waiters.take_failed(&failure.id) {
            out.replies.push(waiter.failed(failure.failure.clone()));
        }
        out
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
        out: &mut Outputs<E::Message>,
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
        let pending = PendingRead {
            client_id: req.client_id,
            op_id: req.op_id,
            request: range.clone(),
            barrier_started_ms: now_ms,
        };
        let ticks = self.ticks;
        let reads = &mut self.reads;
        match reads.start(self.engine.as_mut().expect("node is up"), vec![pending], ticks) {
            Ok(ReadStart::Asked { read_id }) => {
                self.read_asked_now = Some(read_id);
                None
            }
            Ok(ReadStart::Forward { leader, read_id }) => {
                self.reads_asked_of_leader += 1;
                out.read_frames.push(ReadFrame {
                    from: self.id,
                    to: leader,
                    kind: ReadFrameKind::Request { read_id },
                });
                None
            }
            Err((failure, _)) => Some(read_failed(&failure)),
        }
    }

    /// A follower asks this node, as leader, to confirm a read.
    pub fn read_requested(
        &mut self,
        from: NodeId,
        their_read_id: u64,
        ctx: &mut Ctx<'_>,
    ) -> Result<Outputs<E::Message>, Violation> {
        let ticks = self.ticks;
        let engine = self.engine.as_mut().expect("node is up");
        let refusal = self
            .reads
            .confirm_for_follower(engine, from, their_read_id, ticks);
        let mut out = self.pump(ctx)?;
        out.read_frames.extend(refusal.map(|r| self.read_response(r)));
        Ok(out)
    }

    /// The leader answered a read barrier this node asked for.
    pub fn read_answered(&mut self, read_id: u64, index: Option<LogIndex>) -> Outputs<E::Message> {
        let mut out = Outputs::default();
        match self.reads.answered(read_id, index) {
            Some(Ok((index, reads))) => {
                self.safe_reads
                    .extend(reads.into_iter().map(|read| (index, read)));
                self.answer_reads(&mut out);
            }
            Some(Err((failure, reads))) => {
                out.replies
                    .extend(reads.into_iter().map(|read| read.failed(&failure)));
            }
            None => {}
        }
        out
    }

    fn read_response(&self, response: ReadResponse) -> ReadFrame {
        ReadFrame {
            from: self.id,
            to: response.to,
            kind: ReadFrameKind::Response {
                read_id: response.read_id,
                index: response.index,
            },
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
        self.notice_leader_change(&mut out);
        Ok(out)
    }

    /// When the leader this node knows changed, the reads it was confirming fail ("leader
    /// changed") and the barriers it confirmed for followers are refused, as the server does.
    fn notice_leader_change(&mut self, out: &mut Outputs<E::Message>) {
        let leader = self.engine_mut().status().leader;
        let (failed, refused) = self.reads.leader_is(leader);
        out.replies.extend(
            failed
                .into_iter()
                .map(|read| read.failed(&ProposeFailure::LeaderChanged)),
        );
        out.read_frames
            .extend(refused.into_iter().map(|response| self.read_response(response)));
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
        out.extend(self.pump(ctx)?);
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
            self.apply(entry, out);
        }
        for state in &ready.read_states {
            if self.read_asked_now == Some(state.read_id) {
                let term = self.engine_mut().status().term;
                ctx.checker.observe_local_read(self.id, term)?;
                out.lease_read_term = Some(term);
            }
            match self.reads.confirmed(state.read_id, state.index) {
                Confirmed::Own { index, replies } => {
                    self.safe_reads
                        .extend(replies.into_iter().map(|read| (index, read)));
                }
                Confirmed::Follower(response) => out.read_frames.push(self.read_response(response)),
                Confirmed::Nobody => {}
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
        // Writes applied inside the snapshot are never answered: their clients time out.
        ctx.trace.record(
            ctx.now_ms,
            Some(self.id),
            format_args!("installed snapshot at {index} term {term}"),
        );
        Ok(())
    }

    fn apply(&mut self, entry: &yizhi_engine::Entry, out: &mut Outputs<E::Message>) {
        assert_eq!(
            entry.index,
            self.applied + 1,
            "node {} applies out of order",
            self.id
        );
        let mut written = Vec::new();
        let mut response = None;
        if let EntryPayload::Normal(data) = &entry.payload {
            // Only the simulator's clients write the log, so bytes that do not decode are a bug.
            let (id, command_bytes) = decode_proposal(data)
                .unwrap_or_else(|e| panic!("node {}: entry {}: {e}", self.id, entry.index));
            let command = decode_command(&command_bytes)
                .unwrap_or_else(|e| panic!("node {}: entry {} does not decode: {e}", self.id, entry.index));
            let applied = self.kv.apply(&command, entry.index);
            let applied = applied.expect("the in-memory backend cannot fail");
            written = applied
                .events
                .iter()
                .filter(|event| event.kind == EventKind::Put)
                .map(|event| (event.kv.value.clone(), event.kv.mod_revision))
                .collect();
            if let Some(waiter) = self.waiters.take_applied(&id, &command_bytes) {
                out.replies.push(ClientReply {
                    client_id: waiter.client_id,
                    op_id: waiter.op_id,
                    reply: Reply::Wrote {
                        position: LogPosition {
                            index: entry.index,
                            term: entry.term,
                        },
                        response: applied.response.clone(),
                    },
                });
            }
            response = Some(applied.response);
        }
        out.applied_entries.push(AppliedEntry {
            entry: entry.clone(),
            response,
            written,
        });
        self.applied = entry.index;
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
        // The process is gone, and with it every waiting client's connection.
        self.waiters.drain();
        self.reads.drain();
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
        let mut rng = rng;
        // A new boot id at every start, as the server draws one: entries of the earlier boot,
        // re-applied below, must answer none of this boot's requests.
        let boot_id = rng.next_u64().max(1);
        self.waiters = Waiters::new(self.id, boot_id, MAX_PENDING_WRITES_PER_NODE);
        self.reads = ReadBarriers::new(first_id_of_boot(boot_id), READ_LIMITS);
        self.ticks = 0;
        let durable = self.disk.durable().clone();
        let snapshot = durable.snapshot_ref();
        self.kv = kv::store_from_snapshot(&snapshot.data)
            .unwrap_or_else(|e| panic!("node {}: durable snapshot does not restore: {e}", self.id));
        self.applied = snapshot.meta.index;
        checker.observe_restart(self.id, self.applied);
        self.engine = Some(factory.build(EngineStart {
            id: self.id,
            storage: durable,
            applied: self.applied,
            tuning,
            rng,
        }));
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

impl WriteWaiter {
    fn failed(self, failure: ProposeFailure) -> ClientReply {
        let reply = match failure {
            ProposeFailure::NoLeader => Reply::NotLeader { hint: None },
            failure => Reply::Failed { failure },
        };
        ClientReply {
            client_id: self.client_id,
            op_id: self.op_id,
            reply,
        }
    }
}

impl PendingRead {
    fn failed(self, failure: &ProposeFailure) -> ClientReply {
        ClientReply {
            client_id: self.client_id,
            op_id: self.op_id,
            reply: read_failed(failure),
        }
    }
}

/// A read that failed had no effect, whatever the failure: its client retries ("no leader"
/// sends it looking for one).
fn read_failed(failure: &ProposeFailure) -> Reply {
    match failure {
        ProposeFailure::NoLeader => Reply::NotLeader { hint: None },
        _ => Reply::Rejected,
    }
}
