//! One member's runtime: the driver thread (engine + WAL), the applier thread (MVCC store), the
//! peer transport, and the handle the gRPC services use to propose and read.
//!
//! A Put: gRPC handler → [`NodeHandle::propose`] registers a waiter under the proposal's identity
//! (member, boot id, request id) with the client's deadline and queues the proposal → driver
//! proposes it (or forwards it, with its deadline, to the leader over the peer transport), unless
//! the deadline has passed → the engine replicates it; the `Ready` that commits it is persisted
//! and sent → the applier applies it on every member → the member it came from answers the
//! waiter of that identity with the applied response. A waiter still there at its deadline is
//! answered "request timed out" by the driver's tick.
//!
//! A linearizable Range: [`NodeHandle::read_barrier`] queues a read → the driver asks the engine
//! for one read index covering all reads of its round → the `ReadState` goes to the applier,
//! which answers once it has applied that index → the handler reads the store locally.

pub mod applier;
mod boot;
pub mod deletions;
pub mod driver;
pub mod engines;
mod fatal;
pub mod lessor;
pub mod request;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::Sender;
use tokio::sync::{oneshot, watch};
use yizhi_engine::{LogIndex, NodeId, Role, Status, WireMessage};
use yizhi_kv::{Command, MvccStore, WatchConfig, WatchHub};

use crate::transport::{Frame, Inbound, PeerDirectory, Transport};
use applier::ReadReply;
use lessor::wall_clock_ms;
use request::{ApplyResult, Deadline, Origin, ProposalId, ProposeFailure, Waiters};

pub use boot::{NodeOptions, StartError, StoreError, Timeouts, start};

/// The key-value backend the server stores its state machine in.
pub type KvBackend = yizhi_kv::RedbBackend;
pub type Store = MvccStore<KvBackend>;

/// Inputs queued for the driver; beyond this, new requests are refused ("too many requests").
pub const DRIVER_QUEUE_INPUTS: usize = 65_536;
/// Batches of committed entries queued for the applier (each at most the engine's per-Ready limit).
pub const APPLIER_QUEUE_TASKS: usize = 1024;
/// Clients waiting for their writes to apply.
pub const MAX_WAITING_PROPOSALS: usize = 100_000;
/// How long past its deadline a client still waits for the driver's answer before it answers
/// itself "request timed out". The driver answers at its first tick after the deadline; this only
/// bounds the wait when the driver is stalled (a long fsync), so no client hangs forever.
pub const DRIVER_STALL_GRACE: Duration = Duration::from_secs(1);

pub type TransferReply = oneshot::Sender<Result<(), yizhi_engine::TransferError>>;

/// Why a leadership transfer did not start.
#[derive(Debug, thiserror::Error)]
pub enum TransferFailure {
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error(transparent)]
    Engine(#[from] yizhi_engine::TransferError),
}

#[derive(Debug)]
pub enum Input<M> {
    Peer {
        from: NodeId,
        msg: M,
    },
    /// A proposal of a local client (the data names this member as its origin), to be placed
    /// only before its client's deadline.
    Propose {
        data: Bytes,
        deadline: Deadline,
        /// `Local`, or `LocalLeaderOnly` for what only a leader may propose.
        origin: Origin,
    },
    /// A proposal a follower forwarded to us, with its client's deadline.
    Forwarded {
        from: NodeId,
        data: Bytes,
        deadline: Deadline,
    },
    Read {
        reply: ReadReply,
    },
    /// A follower asks this member (as leader) for a read index.
    ReadRequest {
        from: NodeId,
        read_id: u64,
    },
    /// The leader's answer to our `ReadRequest`.
    ReadResponse {
        read_id: u64,
        index: Option<LogIndex>,
    },
    /// The transport's connection to `peer` closed: a hint that its process stopped.
    ConnectionLost {
        peer: NodeId,
    },
    /// A snapshot stream to `peer` ended (`ok`: every byte was written).
    SnapshotSent {
        peer: NodeId,
        ok: bool,
    },
    /// The applier took a snapshot at `index`: the WAL may drop what it covers.
    Compact {
        index: LogIndex,
        data: Bytes,
    },
    TransferLeadership {
        to: NodeId,
        reply: TransferReply,
    },
    Shutdown,
}

/// What the driver last saw of the engine, for status answers and routing.
#[derive(Clone, Debug, Default)]
pub struct NodeStatus {
    pub leader: Option<NodeId>,
    pub role: Option<Role>,
    pub term: u64,
    pub commit: LogIndex,
    pub last_index: LogIndex,
}

/// State shared by the driver, the applier and the gRPC services.
#[derive(Debug)]
pub struct Shared {
    pub local_id: NodeId,
    pub store: RwLock<Store>,
    pub watch_hub: Mutex<WatchHub>,
    pub waiters: Mutex<Waiters>,
    status: Mutex<NodeStatus>,
    applied: AtomicU64,
    /// Bumped after every applied batch; watch streams wait on it.
    applied_signal: watch::Sender<u64>,
    /// When the latest read barrier that has since completed was started. Everything
    /// acknowledged before that instant is applied here, which is what a bounded-staleness read
    /// relies on ([`NodeHandle::bounded_read_barrier`]).
    completed_barrier_start: Mutex<Option<Instant>>,
    /// Tasks waiting for a key's deletion (Lock and Campaign waiters).
    pub deletions: deletions::DeletionWaiters,
    /// The leader's in-memory lease expiries (L), set by keep-alives it answered itself.
    pub local_leases: Mutex<lessor::LocalLeases>,
    /// Keep-alives this member (a follower) forwarded to the leader, awaiting its answer.
    pub forwarded_keep_alives: Mutex<lessor::ForwardedKeepAlives>,
}

impl Shared {
    /// The state of a member whose store has applied up to `applied`, in its boot `boot_id`.
    pub(crate) fn new(local_id: NodeId, boot_id: u64, store: Store, applied: LogIndex) -> Shared {
        let (applied_signal, _) = watch::channel(0);
        Shared {
            local_id,
            store: RwLock::new(store),
            watch_hub: Mutex::new(WatchHub::new(WatchConfig::default())),
            waiters: Mutex::new(Waiters::new(local_id, boot_id, MAX_WAITING_PROPOSALS)),
            status: Mutex::new(NodeStatus::default()),
            applied: AtomicU64::new(applied),
            applied_signal,
            completed_barrier_start: Mutex::new(None),
            deletions: Default::default(),
            local_leases: Mutex::new(lessor::LocalLeases::default()),
            forwarded_keep_alives: Mutex::new(lessor::ForwardedKeepAlives::starting_at(
                request::first_id_of_boot(boot_id),
            )),
        }
    }

    pub(crate) fn publish_status(&self, status: Status) {
        let mut current = self.status.lock().expect("status lock");
        if current.leader != status.leader {
            // What an operator looks for first when writes stall (etcd logs the same).
            tracing::info!(leader = ?status.leader, term = status.term, role = ?status.role, "leader changed");
        }
        current.leader = status.leader;
        current.role = Some(status.role);
        current.term = status.term;
        current.commit = status.commit;
        current.last_index = status.last_index;
    }

    pub fn status(&self) -> NodeStatus {
        self.status.lock().expect("status lock").clone()
    }

    /// The state machine, for reading (held briefly: the applier waits for it).
    pub fn read_store(&self) -> RwLockReadGuard<'_, Store> {
        self.store.read().expect("store lock")
    }

    /// The state machine, for the applier's writes and the maintenance calls that rewrite it.
    pub fn write_store(&self) -> RwLockWriteGuard<'_, Store> {
        self.store.write().expect("store lock")
    }

    pub fn applied(&self) -> LogIndex {
        self.applied.load(Ordering::Acquire)
    }

    pub(crate) fn set_applied(&self, index: LogIndex) {
        self.applied.store(index, Ordering::Release);
    }

    pub(crate) fn wake_watchers(&self) {
        self.applied_signal.send_modify(|n| *n += 1);
    }

    pub fn subscribe_applied(&self) -> watch::Receiver<u64> {
        self.applied_signal.subscribe()
    }

    fn barrier_completed(&self, started: Instant) {
        let mut latest = self.completed_barrier_start.lock().expect("barrier lock");
        if latest.is_none_or(|t| t < started) {
            *latest = Some(started);
        }
    }

    /// True if a read barrier started at most `max_staleness` ago has completed on this member.
    pub fn barrier_fresh_within(&self, max_staleness: Duration) -> bool {
        let latest = *self.completed_barrier_start.lock().expect("barrier lock");
        latest.is_some_and(|started| started.elapsed() <= max_staleness)
    }
}

/// What the gRPC services hold: cheap to clone.
#[derive(Clone)]
pub struct NodeHandle {
    pub shared: Arc<Shared>,
    pub cluster: Arc<crate::cluster::ClusterSpec>,
    pub directory: PeerDirectory,
    pub local_client_urls: String,
    proposals: ProposalSender,
    pub request_timeout: Duration,
    /// Heartbeat interval × election ticks: how long a follower waits for its leader.
    pub election_timeout: Duration,
    /// Sends keep-alives to the leader (the driver has its own clone for engine traffic).
    transport: Transport,
    /// How long a forwarded keep-alive waits for the leader before it goes through the log.
    keep_alive_forward_timeout: Duration,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("local_id", &self.shared.local_id)
            .finish_non_exhaustive()
    }
}

/// The driver's input channel with the engine's message type erased, so handles are not generic.
#[derive(Clone)]
struct ProposalSender {
    propose: Arc<dyn Fn(Bytes, Deadline, Origin) -> bool + Send + Sync>,
    read: Arc<dyn Fn(ReadReply) -> bool + Send + Sync>,
    transfer: Arc<dyn Fn(NodeId, TransferReply) -> bool + Send + Sync>,
    shutdown: Arc<dyn Fn() + Send + Sync>,
}

impl NodeHandle {
    /// When a request that arrives now stops waiting: its client's deadline (the gRPC timeout it
    /// sent, if any) or this member's request timeout, whichever comes first.
    pub fn deadline(&self, client: Option<Deadline>) -> Deadline {
        let timeout_ms = u64::try_from(self.request_timeout.as_millis()).unwrap_or(u64::MAX);
        let server = Deadline {
            at_ms: wall_clock_ms().saturating_add(timeout_ms),
        };
        client.map_or(server, |client| client.min(server))
    }

    /// Replicates `command` and returns its applied response (from this member's own apply).
    /// Nothing proposes it after `deadline`; once that has passed the answer is "request timed
    /// out", and the write may or may not apply (it was proposed before).
    pub async fn propose(&self, command: &Command, deadline: Deadline) -> ApplyResult {
        self.propose_from(command, deadline, Origin::Local).await
    }

    /// As [`NodeHandle::propose`], but only if this member leads: never forwarded (lease
    /// revocations, which a deposed leader must not push onto the new one).
    pub async fn propose_as_leader(&self, command: &Command, deadline: Deadline) -> ApplyResult {
        self.propose_from(command, deadline, Origin::LocalLeaderOnly)
            .await
    }

    async fn propose_from(&self, command: &Command, deadline: Deadline, origin: Origin) -> ApplyResult {
        assert!(origin.is_local(), "{origin:?} is not a local proposal");
        let command_bytes = yizhi_kv::encode_command(command);
        let (tx, rx) = oneshot::channel();
        let id = self.shared.waiters.lock().expect("waiters lock").register(
            &command_bytes,
            deadline,
            tx,
            // A client that went away (its call was cancelled) frees its slot when the table is full.
            |reply| reply.is_closed(),
        )?;
        let data = yizhi_member::encode_proposal(&id, &command_bytes);
        if !(self.proposals.propose)(data, deadline, origin) {
            self.forget(&id);
            return Err(ProposeFailure::TooManyRequests);
        }
        match tokio::time::timeout(time_until(deadline) + DRIVER_STALL_GRACE, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ProposeFailure::Stopped),
            Err(_) => {
                self.forget(&id);
                Err(ProposeFailure::TimedOut)
            }
        }
    }

    /// Drops the waiter of a proposal its client no longer waits for.
    fn forget(&self, id: &ProposalId) {
        let _ = self.shared.waiters.lock().expect("waiters lock").take_failed(id);
    }

    /// Waits until this member's store reflects every write acknowledged before the call
    /// (ReadIndex, Raft thesis §6.4), or answers "request timed out" at `deadline`: a read has no
    /// effect, so giving up on it is always safe, and the driver skips a read whose caller left.
    pub async fn read_barrier(&self, deadline: Deadline) -> Result<(), ProposeFailure> {
        let started = Instant::now();
        let (tx, rx) = oneshot::channel();
        if !(self.proposals.read)(tx) {
            return Err(ProposeFailure::TooManyRequests);
        }
        let result = match tokio::time::timeout(time_until(deadline), rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ProposeFailure::Stopped),
            Err(_) => Err(ProposeFailure::TimedOut),
        };
        if result.is_ok() {
            self.shared.barrier_completed(started);
        }
        result
    }

    /// Waits until this member's store reflects every write acknowledged more than
    /// `max_staleness` before the call: at once if a read barrier started within that bound has
    /// completed here (its start is the point the store is known to be current as of), else after
    /// a fresh barrier. Under load the barriers of linearizable reads keep it fresh, so most
    /// bounded reads wait for nothing.
    pub async fn bounded_read_barrier(
        &self,
        max_staleness: Duration,
        deadline: Deadline,
    ) -> Result<(), ProposeFailure> {
        if self.shared.barrier_fresh_within(max_staleness) {
            return Ok(());
        }
        self.read_barrier(deadline).await
    }

    /// Asks the leader to answer a keep-alive from its memory ([`lessor::keep_alive_from_memory`]).
    /// `Ok(Some(ttl))`: answered; `Ok(None)`: this member leads or knows no leader, the leader
    /// declined, or it did not answer in time (a lost frame, a leader change): the caller then
    /// proposes the keep-alive through the log, which has its own errors for those cases.
    pub async fn forward_keep_alive(&self, lease_id: i64) -> Result<Option<i64>, ProposeFailure> {
        let leader = match self.shared.status().leader {
            Some(leader) if leader != self.local_id() => leader,
            _ => return Ok(None),
        };
        let registered = self
            .shared
            .forwarded_keep_alives
            .lock()
            .expect("forwarded keep-alives lock")
            .register(lease_id);
        let (request_id, rx) = registered.ok_or(ProposeFailure::TooManyRequests)?;
        let frame = Frame::KeepAliveRequest { request_id, lease_id };
        let answer = match self.transport.send(leader, &frame) {
            Ok(()) => tokio::time::timeout(self.keep_alive_forward_timeout, rx).await,
            Err(_) => Ok(Ok(None)),
        };
        self.shared
            .forwarded_keep_alives
            .lock()
            .expect("forwarded keep-alives lock")
            .forget(request_id);
        Ok(match answer {
            Ok(Ok(ttl_secs)) => ttl_secs,
            Ok(Err(_)) | Err(_) => None,
        })
    }

    pub async fn transfer_leadership(&self, to: NodeId) -> Result<(), TransferFailure> {
        let (tx, rx) = oneshot::channel();
        if !(self.proposals.transfer)(to, tx) {
            return Err(TransferFailure::TooManyRequests);
        }
        Ok(rx.await.map_err(|_| TransferFailure::Stopped)??)
    }

    pub fn shutdown(&self) {
        (self.proposals.shutdown)()
    }

    pub fn local_id(&self) -> NodeId {
        self.shared.local_id
    }

    /// The member's state machine, for reading ([`Shared::read_store`]).
    pub fn read_store(&self) -> RwLockReadGuard<'_, Store> {
        self.shared.read_store()
    }
}

/// Forwarded keep-alives queued for the leader's answering task; beyond it they are dropped
/// and the follower, after its timeout, proposes them through the log.
const KEEP_ALIVE_QUEUE_REQUESTS: usize = 4096;

/// A follower's keep-alive request: (follower, request ID, lease ID).
type KeepAliveQuery = (NodeId, u64, i64);

/// Frames from peers, decoded and queued for the driver (never blocking the network task).
struct InboundQueue<M> {
    driver: Sender<Input<M>>,
    shared: Arc<Shared>,
    /// To [`answer_keep_alives`], off the network task: answering takes the store lock.
    keep_alives: tokio::sync::mpsc::Sender<KeepAliveQuery>,
}

/// The leader's side of forwarded keep-alives: answers each from memory if it may, else tells
/// the follower to propose it.
async fn answer_keep_alives(
    shared: Arc<Shared>,
    transport: Transport,
    mut queries: tokio::sync::mpsc::Receiver<KeepAliveQuery>,
) {
    while let Some((from, request_id, lease_id)) = queries.recv().await {
        let ttl_secs = lessor::keep_alive_from_memory(&shared, lease_id).map(|a| a.ttl_secs);
        // Lost: the follower times out and proposes the keep-alive.
        let answer = Frame::KeepAliveResponse {
            request_id,
            lease_id,
            ttl_secs,
        };
        let _ = transport.send(from, &answer);
    }
}

impl<M> InboundQueue<M> {
    /// The leader did not propose our forwarded proposal `id`: its client hears why. A failure
    /// of another boot's proposal (sent to our previous incarnation) answers nobody.
    fn forward_failed(&self, id: &ProposalId, reason: u8) {
        // The leader proposed nothing: every code says so, an unknown one too.
        let failure = ProposeFailure::from_code(reason).unwrap_or(ProposeFailure::NoLeader);
        let waiter = self.shared.waiters.lock().expect("waiters lock").take_failed(id);
        if let Some(reply) = waiter {
            let _ = reply.send(Err(failure)); // The client may have gone.
        }
    }
}

impl<M: WireMessage + Send + 'static> Inbound for InboundQueue<M> {
    fn deliver(&self, from: NodeId, frame: Frame) {
        let input = match frame {
            Frame::Engine(bytes) => match M::decode(&bytes) {
                Ok(msg) => Input::Peer { from, msg },
                Err(e) => {
                    tracing::warn!(from, error = %e, "dropping a malformed engine message");
                    return;
                }
            },
            Frame::Forward {
                deadline_unix_ms,
                data,
            } => Input::Forwarded {
                from,
                data,
                deadline: Deadline {
                    at_ms: deadline_unix_ms,
                },
            },
            Frame::ForwardFailed {
                boot_id,
                request_id,
                reason,
            } => {
                let id = ProposalId {
                    origin: self.shared.local_id,
                    boot_id,
                    request_id,
                };
                return self.forward_failed(&id, reason);
            }
            Frame::ReadRequest { read_id } => Input::ReadRequest { from, read_id },
            Frame::ReadResponse { read_id, index } => Input::ReadResponse { read_id, index },
            Frame::KeepAliveRequest { request_id, lease_id } => {
                let _ = self.keep_alives.try_send((from, request_id, lease_id));
                return;
            }
            Frame::KeepAliveResponse {
                request_id,
                lease_id,
                ttl_secs,
            } => {
                self.shared
                    .forwarded_keep_alives
                    .lock()
                    .expect("forwarded keep-alives lock")
                    .resolve(request_id, lease_id, ttl_secs);
                return;
            }
            // The transport assembles chunks into an `Engine` frame before delivering.
            Frame::Hello(_) | Frame::SnapshotChunk { .. } | Frame::SnapshotEnd { .. } => return,
        };
        // A full queue drops peer traffic; the engines retransmit.
        let _ = self.driver.try_send(input);
    }

    fn connection_lost(&self, peer: NodeId) {
        // Dropped when the queue is full: the engine then waits out its election timeout.
        let _ = self.driver.try_send(Input::ConnectionLost { peer });
    }
}

/// How long from now until `deadline` (zero once it has passed).
fn time_until(deadline: Deadline) -> Duration {
    Duration::from_millis(deadline.at_ms.saturating_sub(wall_clock_ms()))
}

#[cfg(test)]
mod tests {
    use yizhi_kv::KvConfig;

    use super::boot::open_store;
    use super::*;

    /// A forward failure names the proposal by boot id and request id: one that an earlier
    /// incarnation's proposal earned, arriving after a restart, fails nothing of this boot.
    #[test]
    fn a_forward_failure_answers_only_the_proposal_of_its_boot() {
        let dir = std::env::temp_dir().join(format!(
            "yizhi-inbound-{}-{}",
            std::process::id(),
            wall_clock_ms()
        ));
        let store = open_store(&dir, KvConfig::default()).expect("store");
        let shared = Arc::new(Shared::new(2, 0xb007, store, 0));
        let (driver, _inputs) = crossbeam_channel::bounded::<Input<yizhi_raft::Message>>(1);
        let (keep_alives, _queries) = tokio::sync::mpsc::channel(1);
        let inbound = InboundQueue {
            driver,
            shared: shared.clone(),
            keep_alives,
        };
        let (tx, mut rx) = oneshot::channel();
        let deadline = Deadline { at_ms: u64::MAX };
        let id = shared
            .waiters
            .lock()
            .expect("waiters lock")
            .register(b"put", deadline, tx, |_| false);
        let id = id.expect("room");
        let failure = |boot_id| Frame::ForwardFailed {
            boot_id,
            request_id: id.request_id,
            reason: ProposeFailure::TimedOut.code(),
        };
        inbound.deliver(1, failure(0xb006));
        assert!(
            rx.try_recv().is_err(),
            "an earlier boot's failure answered a new request"
        );
        inbound.deliver(1, failure(0xb007));
        assert_eq!(rx.try_recv().expect("answered"), Err(ProposeFailure::TimedOut));
        drop(shared);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
