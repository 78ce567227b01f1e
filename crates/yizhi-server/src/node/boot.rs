//! A member's boot, in the order of the architecture: open its storage (the WAL and the MVCC
//! store), build the engine over the WAL, draw the boot id, start the peer transport, start the
//! driver and the applier threads, and hand out the handle the gRPC services use (with the lessor
//! running on it). Every timeout is derived once, in [`Timeouts`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use yizhi_engine::{LogIndex, NodeId, WireMessage};
use yizhi_kv::{KvConfig, MvccStore};
use yizhi_storage::WalStorage;

use super::engines::{EngineBuildError, EngineSettings, ServerEngine};
use super::{
    APPLIER_QUEUE_TASKS, DRIVER_QUEUE_INPUTS, InboundQueue, Input, KEEP_ALIVE_QUEUE_REQUESTS, KvBackend,
    NodeHandle, ProposalSender, Shared, Store, answer_keep_alives, applier, driver, lessor, request,
};
use crate::transport::{self, Inbound, PeerDirectory, Transport, TransportConfig};

/// Everything `start` needs.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub data_dir: std::path::PathBuf,
    pub cluster: crate::cluster::ClusterSpec,
    pub local_id: NodeId,
    pub local_name: String,
    pub local_client_urls: String,
    pub peer_listener_addr: String,
    pub tick: Duration,
    pub election_timeout_ticks: u64,
    pub snapshot_count: u64,
    pub max_request_bytes: u64,
    pub kv: KvConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("storage: {0}")]
    Wal(#[from] yizhi_storage::WalError),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("engine: {0}")]
    Engine(#[from] EngineBuildError),
    #[error("peer listener on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error(transparent)]
    BootId(#[from] request::BootIdError),
}

/// A member's timeouts, all derived from its tick and its election timeout in ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// One unit of the engine's logical time.
    pub tick: Duration,
    pub election_timeout_ticks: u64,
    /// Tick × election ticks: how long a follower waits for its leader.
    pub election: Duration,
    /// How long a request waits when its client sent no earlier deadline: two elections and a
    /// margin, so a write survives one leader change.
    pub request: Duration,
    /// How long a forwarded keep-alive waits for the leader before it goes through the log: an
    /// answer takes one round trip; past an election timeout the leader is likely gone.
    pub keep_alive_forward: Duration,
    /// Read barriers time out after two election timeouts (the leader that was confirming them
    /// is gone by then).
    pub read_timeout_ticks: u64,
}

impl Timeouts {
    pub fn new(tick: Duration, election_timeout_ticks: u64) -> Timeouts {
        let election = tick * (election_timeout_ticks as u32);
        Timeouts {
            tick,
            election_timeout_ticks,
            election,
            request: election * 2 + Duration::from_secs(5),
            keep_alive_forward: election,
            read_timeout_ticks: 2 * election_timeout_ticks,
        }
    }
}

/// Opens (or creates) the member's storage, starts its threads and its peer transport (on a
/// runtime of its own), and returns the handle the services use.
pub async fn start<E: ServerEngine>(options: NodeOptions) -> Result<NodeHandle, StartError>
where
    E::Message: WireMessage,
{
    let timeouts = Timeouts::new(options.tick, options.election_timeout_ticks);
    let (wal, store) = open_storage(&options)?;
    let applied = store.applied_index().max(wal.snapshot_meta().index);
    let engine = build_engine::<E>(&options, wal, applied)?;
    let boot_id = draw_boot_id(options.local_id)?;
    let (inputs, input_rx) = crossbeam_channel::bounded::<Input<E::Message>>(DRIVER_QUEUE_INPUTS);
    let boot = Boot {
        shared: Arc::new(Shared::new(options.local_id, boot_id, store, applied)),
        options,
        timeouts,
        boot_id,
        applied,
        inputs,
    };
    let peers = boot.start_transport()?;
    boot.start_driver_and_applier(engine, input_rx, peers.transport.clone());
    let handle = boot.into_handle(peers);
    tokio::spawn(lessor::Lessor::new(handle.clone(), timeouts.election).run());
    Ok(handle)
}

/// The WAL (created on first boot) and the MVCC store.
fn open_storage(options: &NodeOptions) -> Result<(WalStorage, Store), StartError> {
    let wal_dir = options.data_dir.join("wal");
    let wal = open_wal(&wal_dir, options)?;
    let store = open_store(&options.data_dir, options.kv)?;
    Ok((wal, store))
}

fn build_engine<E: ServerEngine>(
    options: &NodeOptions,
    wal: WalStorage,
    applied: LogIndex,
) -> Result<E, StartError> {
    let settings = EngineSettings {
        id: options.local_id,
        election_timeout_ticks: options.election_timeout_ticks,
        applied,
        max_proposal_bytes: options.max_request_bytes + 64,
        seed: seed_for(options.local_id),
    };
    Ok(E::build(settings, wal)?)
}

/// Fresh at every start: entries this member proposed before a restart, replayed now, carry the
/// old boot id and answer none of this incarnation's clients (issue 13, anomaly 2).
fn draw_boot_id(local_id: NodeId) -> Result<u64, StartError> {
    let boot_id = request::draw_boot_id()?;
    tracing::info!(
        member = local_id,
        boot_id = format_args!("{boot_id:016x}"),
        "boot id drawn"
    );
    Ok(boot_id)
}

/// What the boot steps after the storage and the engine share.
struct Boot<M> {
    options: NodeOptions,
    timeouts: Timeouts,
    boot_id: u64,
    applied: LogIndex,
    shared: Arc<Shared>,
    /// The driver's input queue.
    inputs: Sender<Input<M>>,
}

/// The member's side of the peer network.
struct PeerLinks {
    transport: Transport,
    directory: PeerDirectory,
}

impl<M: WireMessage + Send + 'static> Boot<M> {
    /// Binds the peer listener and starts the transport on a runtime of its own; frames from
    /// peers go to the driver's queue, forwarded keep-alives to a task on the caller's runtime.
    fn start_transport(&self) -> Result<PeerLinks, StartError> {
        let options = &self.options;
        let transport_config = self.transport_config();
        let listen_err = |source| StartError::Listen {
            addr: options.peer_listener_addr.clone(),
            source,
        };
        let listener = std::net::TcpListener::bind(&options.peer_listener_addr).map_err(listen_err)?;
        listener.set_nonblocking(true).map_err(listen_err)?;
        let peer_runtime = peer_runtime().map_err(listen_err)?;
        let (keep_alive_tx, keep_alive_rx) = tokio::sync::mpsc::channel(KEEP_ALIVE_QUEUE_REQUESTS);
        let inbound: Arc<dyn Inbound> = Arc::new(InboundQueue {
            driver: self.inputs.clone(),
            shared: self.shared.clone(),
            keep_alives: keep_alive_tx,
        });
        let (transport, listener) = {
            let _peer_context = peer_runtime.enter();
            let listener = tokio::net::TcpListener::from_std(listener).map_err(listen_err)?;
            (Transport::start(&transport_config, inbound.clone()), listener)
        };
        let directory = PeerDirectory::default();
        directory.set(options.local_id, options.local_client_urls.clone());

        peer_runtime.spawn(transport::serve(
            listener,
            transport_config,
            directory.clone(),
            inbound,
        ));

        tokio::spawn(answer_keep_alives(
            self.shared.clone(),
            transport.clone(),
            keep_alive_rx,
        ));
        Ok(PeerLinks { transport, directory })
    }

    fn transport_config(&self) -> TransportConfig {
        let options = &self.options;
        let peers: BTreeMap<NodeId, String> = options
            .cluster
            .members
            .iter()
            .filter(|m| m.id != options.local_id)
            .map(|m| {
                let addr = crate::cluster::parse_url(&m.peer_urls[0]).expect("validated when parsed");
                (m.id, addr)
            })
            .collect();
        TransportConfig {
            cluster_id: options.cluster.cluster_id,
            local_id: options.local_id,
            local_name: options.local_name.clone(),
            local_client_urls: options.local_client_urls.clone(),
            peers,
        }
    }

    /// The driver thread (engine and WAL) and the applier thread (MVCC store), joined by the
    /// applier's queue.
    fn start_driver_and_applier<E>(&self, engine: E, inputs: Receiver<Input<M>>, transport: Transport)
    where
        E: ServerEngine<Message = M>,
    {
        let (apply_tx, apply_rx) = crossbeam_channel::bounded(APPLIER_QUEUE_TASKS);
        let driver = driver::Driver {
            engine,
            inputs,
            self_sender: self.inputs.clone(),
            tick: self.timeouts.tick,
            transport,
            applier: apply_tx,
            shared: self.shared.clone(),
            reads: yizhi_member::ReadBarriers::new(
                request::first_id_of_boot(self.boot_id),
                driver::read_limits(self.timeouts.read_timeout_ticks),
            ),
            new_reads: Vec::new(),
            ticks: 0,
            apply_backlog: Default::default(),
            apply_backlog_entries: 0,
        };
        let applier = applier::Applier {
            tasks: apply_rx,
            driver: self.inputs.clone(),
            shared: self.shared.clone(),
            local_id: self.options.local_id,
            applied: self.applied,
            last_snapshot_index: self.applied,
            last_snapshot_bytes: 0,
            applied_bytes_since_snapshot: 0,
            snapshot_count: self.options.snapshot_count,
            parked_reads: BTreeMap::new(),
        };
        std::thread::Builder::new()
            .name("yizhi-driver".into())
            .spawn(move || driver.run())
            .expect("spawn the driver thread");
        std::thread::Builder::new()
            .name("yizhi-applier".into())
            .spawn(move || applier.run())
            .expect("spawn the applier thread");
    }

    /// The handle the gRPC services hold: the driver's queue behind type-erased senders.
    fn into_handle(self, peers: PeerLinks) -> NodeHandle {
        let (propose_tx, read_tx, transfer_tx, shutdown_tx) = (
            self.inputs.clone(),
            self.inputs.clone(),
            self.inputs.clone(),
            self.inputs,
        );
        let proposals = ProposalSender {
            propose: Arc::new(move |data, deadline, origin| {
                let input = Input::Propose {
                    data,
                    deadline,
                    origin,
                };
                propose_tx.try_send(input).is_ok()
            }),
            read: Arc::new(move |reply| read_tx.try_send(Input::Read { reply }).is_ok()),
            transfer: Arc::new(move |to, reply| {
                transfer_tx
                    .try_send(Input::TransferLeadership { to, reply })
                    .is_ok()
            }),
            shutdown: Arc::new(move || {
                let _ = shutdown_tx.send(Input::Shutdown);
            }),
        };
        NodeHandle {
            shared: self.shared,
            cluster: Arc::new(self.options.cluster),
            directory: peers.directory,
            local_client_urls: self.options.local_client_urls,
            proposals,
            request_timeout: self.timeouts.request,
            transport: peers.transport,
            keep_alive_forward_timeout: self.timeouts.keep_alive_forward,
            election_timeout: self.timeouts.election,
        }
    }
}

/// Peer traffic runs on threads of its own: client handlers that block their async threads (a
/// store lock held by a long read or a snapshot) must not delay heartbeats, or followers time out
/// and elect a new leader in the middle of a load. One runtime per member for the life of the
/// process, hence leaked (dropping a runtime inside another is not allowed).
fn peer_runtime() -> std::io::Result<&'static tokio::runtime::Runtime> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("yizhi-peer")
        .enable_all()
        .build()?;
    Ok(Box::leak(Box::new(runtime)))
}

fn open_wal(dir: &Path, options: &NodeOptions) -> Result<yizhi_storage::WalStorage, yizhi_storage::WalError> {
    use yizhi_storage::{WalStorage, WalStorageConfig};
    let config = WalStorageConfig::default();
    if dir.join("LOCK").exists() || has_segments(dir) {
        let (storage, report) = WalStorage::open(dir, config)?;
        if let Some(torn) = &report.torn_tail {
            tracing::warn!(?torn, "cut a torn tail off the WAL (an unacknowledged write)");
        }
        Ok(storage)
    } else {
        std::fs::create_dir_all(dir).map_err(|e| yizhi_storage::WalError::Io {
            op: "create directory",
            path: dir.into(),
            source: e,
        })?;
        let membership = yizhi_engine::Membership::new(options.cluster.ids());
        WalStorage::create(dir, config, membership)
    }
}

fn has_segments(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().ends_with(".wal"))
        })
        .unwrap_or(false)
}

/// Why the MVCC store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: {source}", dir.display())]
    CreateDir {
        dir: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Backend(#[from] yizhi_kv::BackendError),
}

pub(crate) fn open_store(data_dir: &Path, kv: KvConfig) -> Result<Store, StoreError> {
    std::fs::create_dir_all(data_dir).map_err(|source| StoreError::CreateDir {
        dir: data_dir.to_path_buf(),
        source,
    })?;
    let backend = KvBackend::open(data_dir.join("kv.redb"))?;
    Ok(MvccStore::open(backend, kv)?)
}

/// Election timeouts are randomized from this seed; distinct per member so they rarely tie.
fn seed_for(id: NodeId) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}
