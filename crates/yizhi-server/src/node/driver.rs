//! The driver: one OS thread that owns the engine and the WAL. It takes inputs (peer messages,
//! proposals, reads, ticks), and handles each `Ready` in the order the engine contract requires:
//! persist (fsync) → send → hand committed entries to the applier → hand read states to the
//! applier → advance. Inputs that arrive together are handled together, so one fsync covers
//! every proposal of a round (group commit) and one ReadIndex round covers every read.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError, select};
use yizhi_engine::{Envelope, LogIndex, NodeId, ProposeError, SnapshotStatus, WireMessage};

use super::applier::{ApplyTask, ReadReply};
use super::engines::ServerEngine;
use super::request::{ProposeFailure, peek_header};
use super::{Input, Shared};
use crate::transport::{Frame, Transport};

/// Inputs handled before the next `Ready`: bounds the latency one round adds to the first input.
const MAX_INPUTS_PER_ROUND: usize = 4096;
/// Followers' reads a leader confirms at once (each is one batch of a follower's reads).
const MAX_FORWARDED_READS: usize = 65_536;
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
    /// Reads waiting for the engine's answer, by read id, with the tick they were asked at.
    pub pending_reads: BTreeMap<u64, (u64, Vec<ReadReply>)>,
    /// Reads that arrived this round; one read-index request covers them all.
    pub new_reads: Vec<ReadReply>,
    pub next_read_id: u64,
    /// Read ids this member (as leader) asked its engine for on behalf of followers: the
    /// follower and its own read id.
    /// Bounded by [`MAX_FORWARDED_READS`] and expired like `pending_reads`.
    pub forwarded_reads: BTreeMap<u64, (NodeId, u64, u64)>,
    pub ticks: u64,
    /// Reads not confirmed within this many ticks are answered "timed out" (the request was
    /// lost with a leader); clients retry.
    pub read_timeout_ticks: u64,
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
            self.issue_reads();
            while self.engine.has_ready() {
                self.handle_ready();
            }
            self.shared.publish_status(self.engine.status());
        }
        self.stop()
    }

    fn stop(self) {
        for (_, (_, replies)) in self.pending_reads {
            for reply in replies {
                let _ = reply.send(Err(ProposeFailure::Stopped));
            }
        }
        self.shared
            .waiters
            .lock()
            .expect("waiters lock")
            .fail_all(ProposeFailure::Stopped);
        tracing::info!("driver stopped");
    }

    fn on_tick(&mut self) {
        self.engine.tick();
        self.ticks += 1;
        let deadline = self.ticks.saturating_sub(self.read_timeout_ticks);
        let expired: Vec<u64> = self
            .pending_reads
            .iter()
            .filter(|(_, (asked_at, _))| *asked_at < deadline)
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            if let Some((_, replies)) = self.pending_reads.remove(&id) {
                for reply in replies {
                    let _ = reply.send(Err(ProposeFailure::TimedOut));
                }
            }
        }
        // The follower has given up on these by now; forget them.
        self.forwarded_reads
            .retain(|_, (_, _, asked_at)| *asked_at >= deadline);
    }

    fn handle(&mut self, input: Input<E::Message>) {
        match input {
            Input::Peer { from, msg } => self.engine.step(Envelope {
                from,
                to: self.engine.id(),
                msg,
            }),
            Input::Propose { data } => self.propose(data, None),
            Input::Forwarded { from, data } => self.propose(data, Some(from)),
            Input::Read { reply } => self.new_reads.push(reply),
            Input::ReadRequest { from, read_id } => self.read_for_follower(from, read_id),
            Input::ReadResponse { read_id, index } => {
                if let Some((_, replies)) = self.pending_reads.remove(&read_id) {
                    match index {
                        Some(index) => self.send_to_applier(ApplyTask::Reads { index, replies }),
                        None => {
                            for reply in replies {
                                let _ = reply.send(Err(ProposeFailure::NoLeader));
                            }
                        }
                    }
                }
            }
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
                let _ = reply.send(self.engine.transfer_leadership(to).map_err(|e| e.to_string()));
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

    /// Proposes locally, forwards to the leader, or fails the proposal's client. `forwarded_by` is
    /// the follower that sent it here: failures go back to it (a forwarded proposal is never
    /// forwarded again, so a stale leader hint cannot make it loop).
    fn propose(&mut self, data: Bytes, forwarded_by: Option<NodeId>) {
        let Some(header) = peek_header(&data) else {
            tracing::warn!(?forwarded_by, "dropping a proposal without a header");
            return;
        };
        // The applier is far behind: take no more work until it catches up. (A short backlog is
        // normal under load; refusing as soon as one forms would fail clients a queue would serve.)
        let proposed = if self.apply_backlog_entries < REFUSE_PROPOSALS_AT_BACKLOG_ENTRIES {
            self.engine.propose(data.clone()).map(|_| ())
        } else {
            Err(ProposeError::Backpressure { limit_bytes: 0 })
        };
        let failure = match proposed {
            Ok(_) => return,
            Err(ProposeError::NotLeader { leader: Some(leader) }) if forwarded_by.is_none() => {
                match self.transport.send(leader, &Frame::Forward { data }) {
                    Ok(()) => return,
                    Err(_) => ProposeFailure::NoLeader,
                }
            }
            Err(ProposeError::NotLeader { .. }) => ProposeFailure::NoLeader,
            Err(ProposeError::TransferInProgress) => ProposeFailure::LeaderChanged,
            Err(ProposeError::TooLarge { .. }) => ProposeFailure::TooLarge,
            Err(ProposeError::Backpressure { .. } | ProposeError::TooManyPendingReads { .. }) => {
                ProposeFailure::TooManyRequests
            }
        };
        match forwarded_by {
            None => self
                .shared
                .waiters
                .lock()
                .expect("waiters lock")
                .resolve(header.request_id, Err(failure)),
            Some(from) => {
                let frame = Frame::ForwardFailed {
                    request_id: header.request_id,
                    reason: failure.code(),
                };
                let _ = self.transport.send(from, &frame); // Else the client times out.
            }
        }
    }

    fn issue_reads(&mut self) {
        if self.new_reads.is_empty() {
            return;
        }
        let replies = std::mem::take(&mut self.new_reads);
        let read_id = self.next_read_id;
        self.next_read_id += 1;
        match self.engine.read_index(read_id) {
            Ok(()) => {
                self.pending_reads.insert(read_id, (self.ticks, replies));
            }
            // An engine that confirms reads only as leader (Multi-Paxos): ask the leader.
            Err(ProposeError::NotLeader { leader: Some(leader) })
                if self
                    .transport
                    .send(leader, &Frame::ReadRequest { read_id })
                    .is_ok() =>
            {
                self.pending_reads.insert(read_id, (self.ticks, replies));
            }
            Err(e) => {
                let failure = match e {
                    ProposeError::NotLeader { .. } => ProposeFailure::NoLeader,
                    ProposeError::TransferInProgress => ProposeFailure::LeaderChanged,
                    _ => ProposeFailure::TooManyRequests,
                };
                for reply in replies {
                    let _ = reply.send(Err(failure.clone()));
                }
            }
        }
    }

    /// Registers a follower's read with the engine under a fresh local id; the `ReadState` for it
    /// goes back to the follower instead of to the applier.
    fn read_for_follower(&mut self, from: NodeId, their_read_id: u64) {
        let read_id = self.next_read_id;
        self.next_read_id += 1;
        let accepted =
            self.forwarded_reads.len() < MAX_FORWARDED_READS && self.engine.read_index(read_id).is_ok();
        match accepted {
            true => {
                self.forwarded_reads
                    .insert(read_id, (from, their_read_id, self.ticks));
            }
            false => {
                let frame = Frame::ReadResponse {
                    read_id: their_read_id,
                    index: None,
                };
                let _ = self.transport.send(from, &frame);
            }
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
            if let Some((follower, their_read_id, _)) = self.forwarded_reads.remove(&read_state.read_id) {
                let frame = Frame::ReadResponse {
                    read_id: their_read_id,
                    index: Some(read_state.index),
                };
                let _ = self.transport.send(follower, &frame); // Lost: the follower times out.
                continue;
            }
            if let Some((_, replies)) = self.pending_reads.remove(&read_state.read_id) {
                self.send_to_applier(ApplyTask::Reads {
                    index: read_state.index,
                    replies,
                });
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

fn task_weight(task: &ApplyTask) -> usize {
    match task {
        ApplyTask::Entries(entries) => entries.len().max(1),
        _ => 1,
    }
}

/// A storage failure leaves the node unable to keep its promises: stop, never retry (fsyncgate).
pub(crate) fn fatal(what: &str) -> ! {
    tracing::error!("fatal: {what}; stopping the node");
    eprintln!("yizhi: fatal: {what}; stopping the node");
    std::process::exit(2)
}
