//! `yizhi server`: settings → identity check → node runtime → gRPC services, until SIGINT/SIGTERM.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use yizhi_engine::NodeId;
use yizhi_paxos::PaxosNode;
use yizhi_raft::RaftNode;
use yizhi_storage::WalStorage;

use crate::cluster::{ClusterError, ClusterSpec, Identity, UrlError, parse_url};
use crate::config::{ClusterState, ConfigError, EngineKind, LogFormat, ServerConfig};
use crate::metrics::MetricsListenError;
use crate::node::{self, NodeHandle, NodeOptions, StartError};

/// Runs a member until it is told to stop; returns the process exit code.
pub fn run(config: ServerConfig) -> i32 {
    init_logging(config.log_format);
    match try_run(config) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("yizhi: {e}");
            1
        }
    }
}

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("YIZHI_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Why a member did not start, or stopped serving: printed at exit.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("{}: {source}", dir.display())]
    DataDir { dir: PathBuf, source: std::io::Error },
    #[error(
        "{} belongs to member {:x} of cluster {:016x}, not member {:x} of cluster {:016x}: \
         check --name, --initial-cluster and --initial-cluster-token",
        dir.display(),
        stored.member_id,
        stored.cluster_id,
        ours.member_id,
        ours.cluster_id
    )]
    OtherMember {
        dir: PathBuf,
        stored: Identity,
        ours: Identity,
    },
    #[error(
        "--initial-cluster-state existing needs this member's data directory \
         (adding members to a running cluster is not supported yet)"
    )]
    ExistingWithoutData,
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error("tokio runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Metrics(#[from] MetricsListenError),
    #[error(transparent)]
    Api(#[from] crate::api::ServeError),
}

fn try_run(config: ServerConfig) -> Result<(), ServerError> {
    config.validate()?;
    let cluster = ClusterSpec::parse(&config.initial_cluster(), &config.initial_cluster_token)?;
    let me = cluster.member_by_name(&config.name)?.clone();
    let data_dir = config.data_dir();
    std::fs::create_dir_all(&data_dir).map_err(|source| ServerError::DataDir {
        dir: data_dir.clone(),
        source,
    })?;
    let identity = Identity {
        cluster_id: cluster.cluster_id,
        member_id: me.id,
    };
    check_identity(&config, &data_dir, &identity)?;
    let listeners = Listeners::parse(&config)?;
    let options = node_options(&config, cluster, me.id, &data_dir, listeners.peer.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("yizhi-io")
        .build()
        .map_err(ServerError::Runtime)?;
    runtime.block_on(serve_member(config, options, listeners))
}

/// A data directory belongs to one member of one cluster: refuse another's, and create no
/// new member's where an existing one was expected.
fn check_identity(config: &ServerConfig, data_dir: &Path, identity: &Identity) -> Result<(), ServerError> {
    match Identity::load(data_dir)? {
        Some(stored) if stored == *identity => Ok(()),
        Some(stored) => Err(ServerError::OtherMember {
            dir: data_dir.to_path_buf(),
            stored,
            ours: *identity,
        }),
        None if config.initial_cluster_state == ClusterState::Existing => {
            Err(ServerError::ExistingWithoutData)
        }
        None => identity.store(data_dir).map_err(|source| ServerError::DataDir {
            dir: data_dir.to_path_buf(),
            source,
        }),
    }
}

/// The addresses the member listens on, parsed from its URLs.
struct Listeners {
    clients: Vec<String>,
    metrics: Vec<String>,
    /// The first of `--listen-peer-urls`.
    peer: String,
}

impl Listeners {
    fn parse(config: &ServerConfig) -> Result<Listeners, UrlError> {
        let clients: Vec<String> = config
            .listen_client_urls
            .split(',')
            .map(|u| parse_url(u.trim()))
            .collect::<Result<_, _>>()?;
        let metrics: Vec<String> = config
            .listen_metrics_urls
            .iter()
            .flat_map(|urls| urls.split(','))
            .map(|u| parse_url(u.trim()))
            .collect::<Result<_, _>>()?;
        let peer = parse_url(
            config
                .listen_peer_urls
                .split(',')
                .next()
                .unwrap_or_default()
                .trim(),
        )?;
        Ok(Listeners {
            clients,
            metrics,
            peer,
        })
    }
}

fn node_options(
    config: &ServerConfig,
    cluster: ClusterSpec,
    local_id: NodeId,
    data_dir: &Path,
    peer_addr: String,
) -> NodeOptions {
    NodeOptions {
        data_dir: data_dir.to_path_buf(),
        cluster,
        local_id,
        local_name: config.name.clone(),
        local_client_urls: config.advertise_client_urls(),
        peer_listener_addr: peer_addr,
        tick: config.tick(),
        election_timeout_ticks: config.election_timeout_ticks(),
        snapshot_count: config.snapshot_count,
        max_request_bytes: config.max_request_bytes,
        kv: yizhi_kv::KvConfig {
            max_txn_ops: config.max_txn_ops,
            ..Default::default()
        },
    }
}

/// Starts the member's runtime, its metrics and its gRPC services, and serves until a signal.
async fn serve_member(
    config: ServerConfig,
    options: NodeOptions,
    listeners: Listeners,
) -> Result<(), ServerError> {
    let (local_id, data_dir) = (options.local_id, options.data_dir.clone());
    let handle = match config.engine {
        EngineKind::Raft => node::start::<RaftNode<WalStorage>>(options).await,
        EngineKind::Paxos => node::start::<PaxosNode<WalStorage>>(options).await,
    }?;
    tracing::info!(
        name = %config.name,
        id = local_id,
        engine = ?config.engine,
        data_dir = %data_dir.display(),
        clients = %config.listen_client_urls,
        peers = %config.listen_peer_urls,
        "member started"
    );
    crate::metrics::serve(handle.clone(), listeners.metrics).await?;
    let api = crate::api::ApiConfig {
        max_request_bytes: config.max_request_bytes,
        quota_backend_bytes: config.quota_backend_bytes,
    };
    let serving = crate::api::serve(handle.clone(), api, listeners.clients, shutdown_signal());
    let result = serving.await;
    stop(&handle);
    Ok(result?)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

/// Stops the driver and makes everything applied durable, so a restart replays little.
fn stop(handle: &NodeHandle) {
    handle.shutdown();
    let shared: &Arc<node::Shared> = &handle.shared;
    let mut store = shared.write_store();
    if let Err(e) = store.flush(true) {
        tracing::error!(error = %e, "final flush of the key-value store failed");
    }
}
