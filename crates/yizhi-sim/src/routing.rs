//! Frames between the nodes and to the clients: a node's outputs leave through the network
//! (engine messages, which it may duplicate; the member runtime's stream frames, which it never
//! does), replies take the client link, and what arrives is handed to the process running at the
//! receiving node when it arrives.

use yizhi_engine::{Engine, Envelope, NodeId, SnapshotStatus};

use crate::client::{ClientRequest, Request};
use crate::config::CLIENT_DELAY_MS_MAX;
use crate::engines::EngineFactory;
use crate::invariants::Violation;
use crate::network::{Arrival, DropReason, HELD_RECHECK_MS, SendOutcome};
use crate::node::{Forward, ForwardFailure, Outputs, ReadFrame, ReadFrameKind};
use crate::sim::{Event, Msg, Sim};

/// A snapshot stream that lost its message is reported failed after this long.
pub const SNAPSHOT_STREAM_TIMEOUT_MS: u64 = 100;

impl<F: EngineFactory> Sim<'_, F> {
    pub(crate) fn on_deliver(&mut self, envelope: Envelope<Msg<F>>, snapshot: bool) -> Result<(), Violation> {
        let (from, to) = (envelope.from, envelope.to);
        let arrival = self.network.arrive(from, to);
        if arrival == Arrival::Held {
            let event = Event::Deliver { envelope, snapshot };
            self.schedule(self.now_ms + HELD_RECHECK_MS, event);
            return Ok(());
        }
        let arrived = arrival == Arrival::Deliver && self.node(to).is_up();
        if !arrived {
            self.trace
                .record(self.now_ms, Some(to), format_args!("lost in flight from {from}"));
            if snapshot {
                self.report_snapshot_later(from, to, SnapshotStatus::Failed, SNAPSHOT_STREAM_TIMEOUT_MS);
            }
            return Ok(());
        }
        self.trace
            .record(self.now_ms, Some(to), format_args!("recv {:?}", envelope.msg));
        self.drive_node(to, |n, ctx| n.feed(|e| e.step(envelope), ctx))?;
        if snapshot {
            self.report_snapshot_later(from, to, SnapshotStatus::Finished, 0);
        }
        Ok(())
    }

    pub(crate) fn report_snapshot_later(
        &mut self,
        node: NodeId,
        peer: NodeId,
        status: SnapshotStatus,
        delay_ms: u64,
    ) {
        let incarnation = self.node(node).incarnation;
        self.schedule(
            self.now_ms + delay_ms,
            Event::SnapshotReport {
                node,
                incarnation,
                peer,
                status,
            },
        );
    }

    /// Sends a node's messages, schedules its fsync and its client replies.
    pub(crate) fn route(&mut self, node: NodeId, out: Outputs<Msg<F>>) {
        if let Some(term) = out.lease_read_term {
            self.check_lease_read(node, term);
        }
        for envelope in out.messages {
            assert_eq!(
                envelope.from, node,
                "node {node} sent a message as {}",
                envelope.from
            );
            self.send(envelope);
        }
        for forward in out.forwards {
            self.send_peer_frame(forward.from, forward.to, Event::Forward(forward));
        }
        for failure in out.forward_failures {
            self.send_peer_frame(failure.from, failure.to, Event::ForwardFailed(failure));
        }
        for frame in out.read_frames {
            self.send_peer_frame(frame.from, frame.to, Event::Read(frame));
        }
        for applied in out.applied_entries {
            self.reads.observe_applied(&applied.entry);
            for (value, revision) in &applied.written {
                if let Err(violation) = self.checker.observe_written(value, *revision) {
                    self.deferred_violation.get_or_insert(violation);
                }
            }
            let Some(response) = applied.response else {
                continue;
            };
            if let Some(op) = self.checker.attribute(&applied.entry) {
                self.applied_writes.entry(op).or_insert(response);
            }
        }
        let incarnation = self.node(node).incarnation;
        for reply in out.replies {
            let at = self.now_ms + self.rng.clients.range_inclusive(1, CLIENT_DELAY_MS_MAX);
            let event = Event::Reply {
                reply,
                from: node,
                incarnation,
            };
            self.schedule(at, event);
        }
        let crash_now = out.fsync_requested.then(|| self.faults.take_crash_at_fsync(node));
        if let Some(Some(down_ms)) = crash_now {
            self.crash(node, down_ms);
        } else if out.fsync_requested {
            let n = &self.nodes[(node - 1) as usize];
            let (max, incarnation) = (n.fsync_ms_max, n.incarnation);
            let at = self.now_ms + self.rng.disk.range_inclusive(1, max);
            self.schedule(at, Event::FsyncDone { node, incarnation });
        }
    }

    /// A frame of the member runtime (not an engine message) on the peer link `from → to`: it
    /// takes the link's delay and faults, but is never duplicated (TCP does not duplicate).
    pub(crate) fn send_peer_frame(&mut self, from: NodeId, to: NodeId, event: Event<Msg<F>>) {
        match self
            .network
            .send_once(from, to, self.now_ms, &mut self.rng.network)
        {
            SendOutcome::Deliver(times) => {
                assert_eq!(times.len(), 1, "a stream frame was duplicated");
                self.schedule(times[0], event);
            }
            SendOutcome::Dropped(reason) => {
                self.trace.record(
                    self.now_ms,
                    Some(from),
                    format_args!("frame to {to} dropped ({reason:?})"),
                );
            }
        }
    }

    pub(crate) fn on_forward(&mut self, forward: Forward) -> Result<(), Violation> {
        let (from, to) = (forward.from, forward.to);
        let arrival = self.network.arrive(from, to);
        if arrival == Arrival::Held {
            self.schedule(self.now_ms + HELD_RECHECK_MS, Event::Forward(forward));
            return Ok(());
        }
        if !(arrival == Arrival::Deliver && self.node(to).is_up()) {
            self.trace.record(
                self.now_ms,
                Some(to),
                format_args!("forward from {from} lost in flight"),
            );
            return Ok(());
        }
        let incarnation = self.node(to).incarnation;
        let what = format!(
            "forwarded {:?} from {from}",
            yizhi_member::peek_proposal_id(&forward.data)
        );
        self.with_node(to, incarnation, &what, |n, ctx| n.forwarded(forward, ctx))
    }

    pub(crate) fn on_snapshot_report(
        &mut self,
        node: NodeId,
        incarnation: u64,
        peer: NodeId,
        status: SnapshotStatus,
    ) -> Result<(), Violation> {
        let what = format!("snapshot to {peer} {status:?}");
        self.with_node(node, incarnation, &what, |n, ctx| {
            n.feed(|e| e.report_snapshot(peer, status), ctx)
        })
    }

    /// A stream frame reaches the end of its link `from → to`: returned if it arrives; a frame
    /// the link holds waits (re-checked until the link heals), one it drops is gone.
    fn frame_arrives<T>(
        &mut self,
        from: NodeId,
        to: NodeId,
        frame: T,
        event: impl FnOnce(T) -> Event<Msg<F>>,
    ) -> Option<T> {
        match self.network.arrive(from, to) {
            Arrival::Held => {
                self.schedule(self.now_ms + HELD_RECHECK_MS, event(frame));
                None
            }
            Arrival::Drop => None,
            Arrival::Deliver => Some(frame),
        }
    }

    pub(crate) fn on_forward_failed(&mut self, failure: ForwardFailure) -> Result<(), Violation> {
        let (from, node) = (failure.from, failure.to);
        let Some(failure) = self.frame_arrives(from, node, failure, Event::ForwardFailed) else {
            return Ok(());
        };
        let incarnation = self.node(node).incarnation;
        let what = format!("forward of {:?} failed: {}", failure.id, failure.failure);
        self.with_node(node, incarnation, &what, |n, _| Ok(n.forward_failed(&failure)))
    }

    /// A read-barrier frame reaches its node (the process running there now: the sender's queue
    /// outlives a restart of the receiver, as the server's transport does).
    pub(crate) fn on_read_frame(&mut self, frame: ReadFrame) -> Result<(), Violation> {
        let (from, to) = (frame.from, frame.to);
        let Some(frame) = self.frame_arrives(from, to, frame, Event::Read) else {
            return Ok(());
        };
        let incarnation = self.node(to).incarnation;
        let what = format!("{:?} from {from}", frame.kind);
        self.with_node(to, incarnation, &what, |n, ctx| match frame.kind {
            ReadFrameKind::Request { read_id } => n.read_requested(from, read_id, ctx),
            ReadFrameKind::Response { read_id, index } => Ok(n.read_answered(read_id, index)),
        })
    }

    pub(crate) fn send(&mut self, envelope: Envelope<Msg<F>>) {
        let (from, to) = (envelope.from, envelope.to);
        let snapshot = self.factory.is_snapshot(&envelope.msg);
        match self.network.send(from, to, self.now_ms, &mut self.rng.network) {
            SendOutcome::Deliver(times) => {
                for at in times {
                    self.schedule(
                        at,
                        Event::Deliver {
                            envelope: envelope.clone(),
                            snapshot,
                        },
                    );
                }
            }
            SendOutcome::Dropped(reason) => {
                self.trace
                    .record(self.now_ms, Some(from), format_args!("drop to {to} ({reason:?})"));
                if reason == DropReason::Partitioned {
                    let incarnation = self.node(from).incarnation;
                    self.schedule(
                        self.now_ms + 1,
                        Event::Unreachable {
                            node: from,
                            incarnation,
                            peer: to,
                        },
                    );
                }
                if snapshot {
                    self.report_snapshot_later(from, to, SnapshotStatus::Failed, SNAPSHOT_STREAM_TIMEOUT_MS);
                }
            }
        }
    }

    pub(crate) fn on_request(&mut self, node: NodeId, request: ClientRequest) -> Result<(), Violation> {
        if !self.node(node).is_up() {
            let (client, op) = (request.client_id, request.op_id);
            self.trace.record(
                self.now_ms,
                Some(node),
                format_args!("client {client} op {op} lost: node is down"),
            );
            return Ok(());
        }
        let (client, op) = (request.client_id, request.op_id);
        match &request.request {
            Request::Write { command, .. } => self.trace.record(
                self.now_ms,
                Some(node),
                format_args!("client {client} op {op} {command:?}"),
            ),
            Request::Read { range, level } => self.trace.record(
                self.now_ms,
                Some(node),
                format_args!(
                    "client {client} op {op} read {:?}..{:?} {level:?}",
                    range.key, range.range_end
                ),
            ),
        }
        self.drive_node(node, |n, ctx| n.request(request, ctx))
    }
}
