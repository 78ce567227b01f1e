//! The one interface every consensus engine implements. The simulator, the storage runtime and the
//! server are generic over it and never learn which protocol they drive.

use std::fmt::Debug;

use bytes::Bytes;

use crate::ready::Ready;
use crate::storage::LogStorage;
use crate::types::{Envelope, LogPosition, NodeId, Status};
use crate::wire::WireMessage;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// Only the leader takes proposals; the runtime forwards to `leader` when known.
    #[error("not the leader (leader hint: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// A leadership transfer is in progress; new proposals would only delay it (thesis §3.10).
    #[error("leadership transfer in progress")]
    TransferInProgress,
    #[error("proposal of {size_bytes} bytes exceeds the limit of {limit_bytes} bytes")]
    TooLarge { size_bytes: u64, limit_bytes: u64 },
    /// The uncommitted backlog is full; the client should back off and retry.
    #[error("too many uncommitted bytes on the leader ({limit_bytes} byte limit)")]
    Backpressure { limit_bytes: u64 },
    /// Too many reads are waiting for confirmation.
    #[error("too many pending reads ({limit} limit)")]
    TooManyPendingReads { limit: usize },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error("not the leader")]
    NotLeader,
    #[error("node {0} is not a voter")]
    NotVoter(NodeId),
    #[error("node {0} is already the leader")]
    AlreadyLeader(NodeId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotStatus {
    Finished,
    Failed,
}

/// A sans-IO consensus engine (the contract of etcd-io/raft's `RawNode`, in Rust).
///
/// The engine owns no thread, file, socket, clock or global RNG. Time arrives as `tick()`,
/// randomness from the seeded RNG it was built with, messages through `step()`. Its outputs are
/// collected in a [`Ready`], handled by the runtime in the documented order, then acknowledged by
/// `advance()`.
pub trait Engine {
    /// The protocol's peer messages; [`WireMessage`] is how they cross process boundaries.
    type Message: WireMessage + Clone + Debug + Send + 'static;
    /// Where the durable log is read from. The runtime writes it (through `storage_mut`) while
    /// handling a `Ready`; the engine only reads.
    type Storage: LogStorage;

    fn id(&self) -> NodeId;

    /// One unit of logical time has passed. Timeouts are counted in ticks.
    fn tick(&mut self);

    /// Handles one message from a peer. Messages from unknown or stale senders are dropped.
    fn step(&mut self, envelope: Envelope<Self::Message>);

    /// Appends `data` to the log if this node leads, and says where it landed.
    fn propose(&mut self, data: Bytes) -> Result<LogPosition, ProposeError>;

    /// Requests a linearizable read. When it is safe, a `ReadState { read_id, index }` appears in a
    /// `Ready`. On a follower the request is forwarded to the leader.
    fn read_index(&mut self, read_id: u64) -> Result<(), ProposeError>;

    /// Hands leadership to `to` once it has caught up (thesis §3.10).
    fn transfer_leadership(&mut self, to: NodeId) -> Result<(), TransferError>;

    /// The transport could not reach `peer`; replicate to it cautiously.
    fn report_unreachable(&mut self, peer: NodeId);

    /// The transport saw its open connection to `peer` close: its process has likely stopped.
    /// Only a hint, which may be wrong (a connection reset to a live peer): an engine may use it
    /// to stop waiting for a leader it lost, never for anything safety depends on.
    fn report_connection_lost(&mut self, peer: NodeId);

    /// The runtime finished (or gave up) streaming a snapshot to `peer`.
    fn report_snapshot(&mut self, peer: NodeId, status: SnapshotStatus);

    fn has_ready(&self) -> bool;

    /// Collects pending work. Call `advance()` after handling it and before the next `ready()`.
    fn ready(&mut self) -> Ready<Self::Message>;

    /// Acknowledges the last `Ready`: its state is durable, its messages sent, its entries applied.
    fn advance(&mut self);

    fn status(&self) -> Status;

    fn storage(&self) -> &Self::Storage;
    fn storage_mut(&mut self) -> &mut Self::Storage;
}
