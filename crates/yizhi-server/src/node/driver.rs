//! The driver: one OS thread that owns the engine and the WAL. It takes inputs (peer messages,
//! proposals, reads, ticks), and handles each `Ready` in the order the engine contract requires:
//! persist (fsync) → send → hand committed entries to the applier → hand read states to the
//! applier → advance. Inputs that arrive together are handled together, so one fsync covers
//! every proposal of a round (group commit) and one ReadIndex round covers every read.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError, select};
use yizhi_engine::{Envelope, LogIndex, NodeId, SnapshotStatus, WireMessage};
use yizhi_member::{Confirmed, ReadBarriers, ReadResponse, ReadStart, Route, place_proposal};

use super::applier::{ApplyTask, ReadReply};
use super::engines::ServerEngine;
use super::fatal::fatal;
use super::lessor::wall_clock_ms;
use super::request::{Deadline, Origin, ProposalId, ProposeFailure};
use super::{Input, Shared};
use crate::transport::{Frame, Transport};

/// Inputs handled before the next `Ready`: bounds the latency one round adds to the first input.
const MAX_INPUTS_PER_ROUND: usize = 4096;
/// Followers' reads a leader confirms at once (each is one batch of a follower's reads).
pub const MAX_FORWARDED_READS: usize = 65_536;
/// This member's read barriers in flight (each covers every read of one round).
pub const MAX_OWN_READ_BARRIERS: usize = 65_536;
/// Committed entries the driver holds while the applier's queue is full (the applier is taking a
/// snapshot, say). Below this the driver keeps stepping, ticking and heartbeating — blocking there
/// would silence a leader for the whole pause and cost an election — and past a quarter of it
/// refuses new proposals; above it, it waits for the applier.
pub const MAX_APPLY_BACKLOG_ENTRIES: usize = 262_144;
/// Backlog at which new proposals are refused ("too many requests").
const REFUSE_PROPOSALS_AT_BACKLOG_ENTRIES: usize = MAX_APPLY_BACKLOG_ENTRIES / 4;
/// How often a driver with a backlog retries handing it over.
const BACKLOG_RETRY: Duration = Duration::from_millis(1);

pub(crate) struct Driver<E: ServerEngine> {
    pub engine: E,
    pub inputs: Receiver<Input<E::Message>>,
    /// For tasks that report back to the driver (snapshot streams).
    pub self_sender: Sender<Input<E::Message>>,
    pub tick: Duration,
    pub transport: Transport,
    pub applier: Sender<ApplyTask>,
    pub shared: Arc<Shared>,
    /// Read barriers in flight, this member's and followers' (`yizhi_member::reads`, the code
    /// the simulator runs): ids from a random start per boot, timeouts, "leader changed".
    pub reads: ReadBarriers<ReadReply>,
    /// Reads that arrived this round; one read-index request covers them all.
    pub new_reads: Vec<ReadReply>,
    pub ticks: u64,
    /// Tasks for the applier that did not fit in its queue, oldest first (order is kept: once
    /// anything waits here, every later task queues behind it).
    pub apply_backlog: VecDeque<ApplyTask>,
    /// Entries in `apply_backlog` (other tasks count one): bounded by MAX_APPLY_BACKLOG_ENTRIES.
    pub apply_backlog_entries: usize,
}

impl<E: ServerEngine> Driver<E> {
    pub fn run(mut self) {
        let ticker = crossbeam_channel::tick(self.tick);
        loop {
            self.drain_apply_backlog();
            let retry_after = if self.apply_backlog.is_empty() {
                Duration::MAX
            } else {
                BACKLOG_RETRY
            };
            select! {
                recv(self.inputs) -> input => match input {
                    Ok(Input::Shutdown) | Err(_) => break,
                    Ok(input) => self.handle(input),
                },
                recv(ticker) -> _ => self.on_tick(),
                default(retry_after) => {}
            }
            for _ in 0..MAX_INPUTS_PER_ROUND {
                match self.inputs.try_recv() {
                    Ok(Input::Shutdown) => return self.stop(),
                    Ok(input) => self.handle(input),
                    Err(_) => break,
                }
            }
            self.notice_leader_change();
            self.issue_reads();
            while self.engine.has_ready() {
                self.handle_ready();
            }
            self.shared.publish_status(self.engine.status());
        }
        self.stop()
    }

    fn stop(mut self) {
        for reply in self.reads.drain().into_iter().chain(self.new_reads.drain(..)) {
            let _ = reply.send(Err(ProposeFailure::Stopped));
        }
        let waiting = self.shared.waiters.lock().expect("waiters lock").drain();
        for reply in waiting {
            let _ = reply.send(Err(ProposeFailure::Stopped));
        }
        tracing::info!("driver stopped");
    }

    fn on_tick(&mut self) {
        self.engine.tick();
        self.ticks += 1;
        // Reads whose confirmation was lost with a leader: their clients retry.
        for reply in self.reads.expire(self.ticks) {
            let _ = reply.send(Err(ProposeFailure::TimedOut));
        }
        self.expire_waiters();
    }

    /// Answers the clients whose deadline has passed "request timed out" (etcd's ErrTimeout): the
    /// outcome of their write is unknown, as etcd's own answer says. An entry that commits later
    /// answers nobody.
    fn expire_waiters(&mut self) {
        let expired = self
            .shared
            .waiters
            .lock()
            .expect("waiters lock")
            .take_expired(wall_clock_ms());
        for (_, reply) in expired {
            let _ = reply.send(Err(ProposeFailure::TimedOut)); // The client may have gone.
        }
    }

    /// When the leader changed, the pending reads fail now with "leader changed", as etcd's
    /// linearizable reads do, and their clients retry (a read has no effect). Writes are not
    /// failed here: a proposal forwarded to, or made by, the old leader may still commit, so its
    /// outcome is unknown until its deadline.
    fn notice_leader_change(&mut self) {
        let (failed, refused) = self.reads.leader_is(self.engine.status().leader);
        for reply in failed {
            let _ = reply.send(Err(ProposeFailure::LeaderChanged));
        }
        for response in refused {
            self.send_read_response(response);
        }
    }

    fn send_read_response(&self, response: ReadResponse) {
        let frame = Frame::ReadResponse {
            read_id: response.read_id,
            index: response.index,
        };
        let _ = self.transport.send(response.to, &frame); // Lost: the follower times out.
    }

    fn handle(&mut self, input: Input<E::Message>) {
        match input {
            Input::Peer { from, msg } => self.engine.step(Envelope {
                from,
                to: self.engine.id(),
                msg,
            }),
            Input::Propose {
                data,
                deadline,
                origin,
            } => self.propose(data, deadline, origin),
            Input::Forwarded { from, data, deadline } => {
                self.propose(data, deadline, Origin::ForwardedBy(from))
            }
            Input::Read { reply } => self.new_reads.push(reply),
            Input::ReadRequest { from, read_id } => {
                let refusal = self
                    .reads
                    .confirm_for_follower(&mut self.engine, from, read_id, self.ticks);
                if let Some(refusal) = refusal {
                    self.send_read_response(refusal);
                }
            }
            Input::ReadResponse { read_id, index } => match self.reads.answered(read_id, index) {
                Some(Ok((index, replies))) => self.send_to_applier(ApplyTask::Reads { index, replies }),
                Some(Err((failure, replies))) => fail_reads(replies, &failure),
                None => {} // Timed out or failed already.
            },
            Input::Compact { index, data } => self.compact(index, data),
            Input::ConnectionLost { peer } => self.connection_lost(peer),
            Input::SnapshotSent { peer, ok } => {
                let status = if ok {
                    SnapshotStatus::Finished
                } else {
                    SnapshotStatus::Failed
                };
                self.engine.report_snapshot(peer, status);
            }
            Input::TransferLeadership { to, reply } => {
                let _ = reply.send(self.engine.transfer_leadership(to));
            }
            Input::Shutdown => unreachable!("handled by the loop"),
        }
    }

    /// The transport saw `peer`'s connection close. The engine decides what the hint is worth
    /// (a follower of `peer` may campaign early); an operator sees when it was about the leader.
    fn connection_lost(&mut self, peer: NodeId) {
        let leader_before = self.engine.status().leader;
        self.engine.report_connection_lost(peer);
        if leader_before == Some(peer) {
            let campaigning_early = self.engine.status().leader.is_none();
            tracing::info!(
                peer,
                campaigning_early,
                "connection to the leader lost{}",
                if campaigning_early {
                    "; campaigning early"
                } else {
                    ""
                }
            );
        } else {
            tracing::debug!(peer, "connection to a peer lost");
        }
    }

    /// Proposes locally, forwards to the leader, or fails the proposal (`yizhi_member`'s routing:
    /// never after its client's deadline, never forwarded twice). A forwarded proposal's failure
    /// goes back to the follower that sent it.
    fn propose(&mut self, data: Bytes, deadline: Deadline, origin: Origin) {
        let Some(id) = yizhi_member::peek_proposal_id(&data) else {
            tracing::warn!(?origin, "dropping a proposal without a header");
            return;
        };
        if let Origin::ForwardedBy(from) = origin
            && id.origin != from
        {
            tracing::warn!(from, ?id, "dropping a forwarded proposal of another member");
            return;
        }
        // The applier is far behind: take no more work until it catches up. (A short backlog is
        // normal under load; refusing as soon as one forms would fail clients a queue would serve.)
        let accepting = self.apply_backlog_entries < REFUSE_PROPOSALS_AT_BACKLOG_ENTRIES;
        let now_ms = wall_clock_ms();
        let route = place_proposal(
            &mut self.engine,
            data.clone(),
            origin,
            deadline,
            now_ms,
            accepting,
        );
        let failure = match route {
            Route::Proposed(_) => return,
            Route::Forward { leader } => {
                let frame = Frame::Forward {
                    deadline_unix_ms: deadline.at_ms,
                    data,
                };
                match self.transport.send(leader, &frame) {
                    Ok(()) => return,
                    Err(_) => ProposeFailure::NoLeader, // Not queued: nothing was proposed.
                }
            }
            Route::Refused(failure) => failure,
        };
        self.fail_proposal(id, origin, failure);
    }

    /// Tells whoever waits for a proposal that was not proposed anywhere.
    fn fail_proposal(&self, id: ProposalId, origin: Origin, failure: ProposeFailure) {
        match origin {
            Origin::Local | Origin::LocalLeaderOnly => {
                let waiter = self.shared.waiters.lock().expect("waiters lock").take_failed(&id);
                if let Some(reply) = waiter {
                    let _ = reply.send(Err(failure));
                }
            }
            Origin::ForwardedBy(from) => {
                let frame = Frame::ForwardFailed {
                    boot_id: id.boot_id,
                    request_id: id.request_id,
                    reason: failure.code(),
                };
                let _ = self.transport.send(from, &frame); // Else the client times out.
            }
        }
    }

    fn issue_reads(&mut self) {
        // A caller that stopped waiting (its deadline passed) needs no read index.
        self.new_reads.retain(|reply| !reply.is_closed());
        if self.new_reads.is_empty() {
            return;
        }
        let replies = std::mem::take(&mut self.new_reads);
        match self.reads.start(&mut self.engine, replies, self.ticks) {
            Ok(ReadStart::Asked { .. }) => {}
            Ok(ReadStart::Forward { leader, read_id }) => {
                if self
                    .transport
                    .send(leader, &Frame::ReadRequest { read_id })
                    .is_err()
                {
                    fail_reads(self.reads.unsent(read_id), &ProposeFailure::NoLeader);
                }
            }
            Err((failure, replies)) => fail_reads(replies, &failure),
        }
    }

    fn compact(&mut self, index: LogIndex, data: Bytes) {
        let membership = self.engine.status().membership;
        if let Err(e) = self.engine.storage_mut().compact(index, membership, data) {
            fatal(&format!("compacting the log at {index}: {e}"));
        }
        tracing::info!(index, "snapshot taken, log compacted");
    }

    fn handle_ready(&mut self) {
        let ready = self.engine.ready();
        let mut unreachable = Vec::new();
        // 0. A leader's appends may leave before its own write (Raft thesis §10.2.1): the leader
        //    counts its own log toward a quorum only at `advance`, after the write is durable.
        let (early, late): (Vec<_>, Vec<_>) = ready
            .messages
            .iter()
            .partition(|envelope| E::may_send_before_persist(&envelope.msg));
        for envelope in early {
            self.send(envelope, &mut unreachable);
        }
        // 1. Durable before anything else leaves: a vote or an acknowledgement must survive a crash.
        if let Err(e) = self.engine.storage_mut().persist_ready(&ready) {
            fatal(&format!("persisting a Ready: {e}"));
        }
        // 2. Send. A full queue drops the message; the engine retries (after being told).
        for envelope in late {
            self.send(envelope, &mut unreachable);
        }
        // 3. Apply, off this thread. A snapshot from the leader goes first.
        if let Some(snapshot) = &ready.snapshot {
            self.send_to_applier(ApplyTask::Snapshot(snapshot.clone()));
        }
        if !ready.committed_entries.is_empty() {
            self.send_to_applier(ApplyTask::Entries(ready.committed_entries));
        }
        // 4. Reads, answered by the applier once it has applied their index.
        for read_state in ready.read_states {
            match self.reads.confirmed(read_state.read_id, read_state.index) {
                Confirmed::Own { index, replies } => {
                    self.send_to_applier(ApplyTask::Reads { index, replies })
                }
                Confirmed::Follower(response) => self.send_read_response(response),
                Confirmed::Nobody => {}
            }
        }
        self.engine.advance();
        unreachable.dedup();
        for peer in unreachable {
            self.engine.report_unreachable(peer);
        }
    }

    fn send(&self, envelope: &Envelope<E::Message>, unreachable: &mut Vec<NodeId>) {
        let mut buf = Vec::with_capacity(envelope.msg.encoded_len());
        envelope.msg.encode(&mut buf);
        let bytes = Bytes::from(buf);
        if E::is_snapshot(&envelope.msg) {
            // Its own stream; the engine hears how it went when the stream ends.
            let (peer, driver) = (envelope.to, self.self_sender.clone());
            let done = Box::new(move |ok: bool| {
                let _ = driver.try_send(Input::SnapshotSent { peer, ok });
            });
            self.transport.send_snapshot(peer, bytes, done);
        } else if self.transport.send(envelope.to, &Frame::Engine(bytes)).is_err() {
            unreachable.push(envelope.to);
        }
    }

    /// Blocks when the applier is behind: backpressure instead of an unbounded queue.
    /// Hands `task` to the applier in order, without blocking unless the backlog is full.
    fn send_to_applier(&mut self, task: ApplyTask) {
        let task = if self.apply_backlog.is_empty() {
            match self.applier.try_send(task) {
                Ok(()) => return,
                Err(TrySendError::Full(task)) => task,
                Err(TrySendError::Disconnected(_)) => fatal("the applier stopped"),
            }
        } else {
            task
        };
        self.apply_backlog_entries += task_weight(&task);
        self.apply_backlog.push_back(task);
        while self.apply_backlog_entries > MAX_APPLY_BACKLOG_ENTRIES {
            let oldest = self
                .apply_backlog
                .pop_front()
                .expect("a backlog over its limit is not empty");
            self.apply_backlog_entries -= task_weight(&oldest);
            if self.applier.send(oldest).is_err() {
                fatal("the applier stopped");
            }
        }
    }

    /// Moves what fits from the backlog into the applier's queue.
    fn drain_apply_backlog(&mut self) {
        while let Some(oldest) = self.apply_backlog.pop_front() {
            let weight = task_weight(&oldest);
            match self.applier.try_send(oldest) {
                Ok(()) => self.apply_backlog_entries -= weight,
                Err(TrySendError::Full(oldest)) => {
                    self.apply_backlog.push_front(oldest);
                    return;
                }
                Err(TrySendError::Disconnected(_)) => fatal("the applier stopped"),
            }
        }
        assert_eq!(self.apply_backlog_entries, 0, "backlog weight without tasks");
    }
}

/// The read table's bounds, with reads timing out after `timeout_ticks`
/// ([`super::Timeouts::read_timeout_ticks`]).
pub(crate) fn read_limits(timeout_ticks: u64) -> yizhi_member::ReadLimits {
    yizhi_member::ReadLimits {
        max_own: MAX_OWN_READ_BARRIERS,
        max_for_followers: MAX_FORWARDED_READS,
        timeout_ticks,
    }
}

fn fail_reads(replies: Vec<ReadReply>, failure: &ProposeFailure) {
    for reply in replies {
        let _ = reply.send(Err(failure.clone())); // The client may have gone.
    }
}

fn task_weight(task: &ApplyTask) -> usize {
    match task {
        ApplyTask::Entries(entries) => entries.len().max(1),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::oneshot;
    use yizhi_engine::Engine;
    use yizhi_raft::RaftNode;
    use yizhi_storage::{WalStorage, WalStorageConfig};

    use super::*;
    use crate::node::engines::EngineSettings;
    use crate::node::request::ApplyResult;
    use crate::transport::{Inbound, TransportConfig};

    const BOOT_ID: u64 = 0x5eed;
    /// Member 2's boot, as it stamps the proposals it forwards.
    const FOLLOWER_BOOT_ID: u64 = 0xb007;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let nanos = wall_clock_ms();
            let dir = std::env::temp_dir().join(format!("yizhi-{name}-{}-{nanos}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("create the test directory");
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    struct Deaf;

    impl Inbound for Deaf {
        fn deliver(&self, _from: NodeId, _frame: Frame) {}
        fn connection_lost(&self, _peer: NodeId) {}
    }

    /// Member 1, the only voter of its cluster and so its leader, with a transport to member 2
    /// (played by the test: `from_leader` is the connection member 1 dialed, past its hello).
    async fn sole_leader(dir: &TempDir) -> (Driver<RaftNode<WalStorage>>, TcpStream, Receiver<ApplyTask>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let config = TransportConfig {
            cluster_id: 7,
            local_id: 1,
            local_name: "one".into(),
            local_client_urls: "127.0.0.1:1".into(),
            peers: BTreeMap::from([(2, listener.local_addr().expect("address").to_string())]),
        };
        let transport = Transport::start(&config, Arc::new(Deaf));
        let (mut from_leader, _) = listener.accept().await.expect("member 1 dials member 2");
        assert!(matches!(next_frame(&mut from_leader).await, Frame::Hello(_)));

        let membership = yizhi_engine::Membership::new([1]);
        let wal =
            WalStorage::create(&dir.0.join("wal"), WalStorageConfig::default(), membership).expect("wal");
        let settings = EngineSettings {
            id: 1,
            election_timeout_ticks: 10,
            applied: 0,
            max_proposal_bytes: 1 << 20,
            seed: 1,
        };
        let engine = <RaftNode<WalStorage> as ServerEngine>::build(settings, wal).expect("engine");
        let store = super::super::boot::open_store(&dir.0, yizhi_kv::KvConfig::default()).expect("store");
        let (input_tx, input_rx) = crossbeam_channel::bounded(16);
        let (apply_tx, apply_rx) = crossbeam_channel::bounded(1024);
        let mut driver = Driver {
            engine,
            inputs: input_rx,
            self_sender: input_tx,
            tick: Duration::from_millis(100),
            transport,
            applier: apply_tx,
            shared: Arc::new(Shared::new(1, BOOT_ID, store, 0)),
            reads: ReadBarriers::new(1, read_limits(2 * 10)),
            new_reads: Vec::new(),
            ticks: 0,
            apply_backlog: Default::default(),
            apply_backlog_entries: 0,
        };
        while driver.engine.status().leader != Some(1) {
            assert!(driver.ticks < 100, "a sole voter did not elect itself");
            driver.on_tick();
            driver.settle();
        }
        // Committed entries pile up unread in `apply_rx`: nothing applies here.
        (driver, from_leader, apply_rx)
    }

    impl Driver<RaftNode<WalStorage>> {
        fn settle(&mut self) {
            while self.engine.has_ready() {
                self.handle_ready();
            }
        }

        fn last_index(&self) -> LogIndex {
            self.engine.status().last_index
        }

        /// Registers a local client waiting for `command`, as `NodeHandle::propose` does.
        fn local_client(
            &self,
            command: &[u8],
            deadline: Deadline,
        ) -> (Bytes, oneshot::Receiver<ApplyResult>) {
            let (tx, rx) = oneshot::channel();
            let mut waiters = self.shared.waiters.lock().expect("waiters lock");
            let id = waiters.register(command, deadline, tx, |_| false).expect("room");
            (yizhi_member::encode_proposal(&id, command), rx)
        }
    }

    async fn next_frame(stream: &mut TcpStream) -> Frame {
        let len = stream.read_u32_le().await.expect("a frame's length") as usize;
        let mut body = vec![0; len];
        stream.read_exact(&mut body).await.expect("a frame's body");
        Frame::decode(Bytes::from(body)).expect("a well-formed frame")
    }

    fn in_ms(from_now_ms: i64) -> Deadline {
        Deadline {
            at_ms: wall_clock_ms().saturating_add_signed(from_now_ms),
        }
    }

    /// Issue 13, anomaly 1, at the leader: a forwarded proposal whose client's deadline has passed
    /// (it sat in a partitioned link) never enters the log; the follower hears why, with the
    /// proposal's boot id and request id. The same proposal with time left is proposed.
    #[tokio::test]
    async fn the_leader_refuses_an_expired_forwarded_proposal_and_names_it_back() {
        let dir = TempDir::new("driver-forward");
        let (mut driver, mut from_leader, _applier) = sole_leader(&dir).await;
        let id = ProposalId {
            origin: 2,
            boot_id: FOLLOWER_BOOT_ID,
            request_id: 41,
        };
        let data = yizhi_member::encode_proposal(&id, b"put k v");
        let before = driver.last_index();

        let late = Input::Forwarded {
            from: 2,
            data: data.clone(),
            deadline: in_ms(-1),
        };
        driver.handle(late);
        driver.settle();
        assert_eq!(driver.last_index(), before, "an expired proposal entered the log");
        let refusal = Frame::ForwardFailed {
            boot_id: FOLLOWER_BOOT_ID,
            request_id: 41,
            reason: ProposeFailure::TimedOut.code(),
        };
        assert_eq!(next_frame(&mut from_leader).await, refusal);

        let in_time = Input::Forwarded {
            from: 2,
            data,
            deadline: in_ms(60_000),
        };
        driver.handle(in_time);
        driver.settle();
        assert_eq!(
            driver.last_index(),
            before + 1,
            "a live proposal was not proposed"
        );
    }

    /// A local proposal past its deadline is answered "timed out" and not proposed; a waiter whose
    /// deadline has passed while its entry was in flight is answered at the next tick (its entry,
    /// should it commit later, then answers nobody), and one with time left is not.
    #[tokio::test]
    async fn local_proposals_past_their_deadline_time_out_and_are_never_proposed() {
        let dir = TempDir::new("driver-local");
        let (mut driver, _from_leader, _applier) = sole_leader(&dir).await;
        let before = driver.last_index();
        let (data, mut late) = driver.local_client(b"late", in_ms(-1));
        let propose = Input::Propose {
            data,
            deadline: in_ms(-1),
            origin: Origin::Local,
        };
        driver.handle(propose);
        driver.settle();
        assert_eq!(late.try_recv().expect("answered"), Err(ProposeFailure::TimedOut));
        assert_eq!(driver.last_index(), before);

        let (_, mut waiting) = driver.local_client(b"waiting", in_ms(60_000));
        let (_, mut expired) = driver.local_client(b"expired", in_ms(-1));
        driver.on_tick();
        assert_eq!(
            expired.try_recv().expect("answered"),
            Err(ProposeFailure::TimedOut)
        );
        assert!(waiting.try_recv().is_err(), "answered before its deadline");
        assert_eq!(driver.shared.waiters.lock().expect("waiters lock").len(), 1);
    }

    /// A forwarded proposal names its origin; one naming another member than the sender is not
    /// proposed (a follower forwards only its own clients' proposals).
    #[tokio::test]
    async fn a_forwarded_proposal_must_come_from_its_origin() {
        let dir = TempDir::new("driver-origin");
        let (mut driver, _from_leader, _applier) = sole_leader(&dir).await;
        let before = driver.last_index();
        let other = ProposalId {
            origin: 3,
            boot_id: FOLLOWER_BOOT_ID,
            request_id: 1,
        };
        let forwarded = Input::Forwarded {
            from: 2,
            data: yizhi_member::encode_proposal(&other, b"x"),
            deadline: in_ms(60_000),
        };
        driver.handle(forwarded);
        driver.settle();
        assert_eq!(driver.last_index(), before);
    }
}
