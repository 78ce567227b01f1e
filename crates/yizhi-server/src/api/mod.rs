//! The etcd v3 gRPC services over a member's [`NodeHandle`]. Each service lives in its own module;
//! this one holds what they share: etcd's error codes and texts, the response header, the request
//! size limit, and the server that binds them to the client URLs.

pub mod auth;
pub mod cluster;
pub mod consistency;
pub mod convert;
pub mod deadline;
pub mod election;
pub mod exactly_once;
pub mod health;
pub mod http2;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod watch;

use std::future::Future;
use std::net::SocketAddr;

use prost::Message;
use tonic::Status;
use yizhi_kv::{Command, CommandResponse, KvError};
use yizhi_proto::etcdserverpb::ResponseHeader;

use crate::node::NodeHandle;
pub use crate::node::request::{Deadline, ProposeFailure};

/// gRPC framing on top of `--max-request-bytes`, as etcd allows (its `grpcOverheadBytes`), so an
/// oversize request reaches our own check and gets etcd's "request is too large" text.
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;
/// Largest response message (a big Range); etcd's default is effectively unbounded (math.MaxInt32).
pub const MAX_RESPONSE_BYTES: usize = i32::MAX as usize;

#[derive(Clone, Copy, Debug)]
pub struct ApiConfig {
    pub max_request_bytes: u64,
    pub quota_backend_bytes: u64,
}

/// What a unary handler answers (spelled out, it would not fit a handler's signature on one line).
pub type Answer<T> = Result<tonic::Response<T>, Status>;

/// What every service holds.
#[derive(Clone, Debug)]
pub struct Api {
    pub node: NodeHandle,
    pub config: ApiConfig,
    /// This member's alarms (member-local: see [`maintenance`]).
    pub alarms: std::sync::Arc<maintenance::Alarms>,
    /// The store's database file, fixed for the store's life: the quota check stats it on every
    /// write, and reading it here spares each write the store's lock.
    pub db_path: std::sync::Arc<std::path::Path>,
}

impl Api {
    /// etcd's response header: cluster, member, current revision and term.
    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.node.cluster.cluster_id,
            member_id: self.node.local_id(),
            revision,
            raft_term: self.node.shared.status().term,
        }
    }

    pub fn current_revision(&self) -> i64 {
        self.node.read_store().current_revision()
    }

    /// When `request` stops waiting: its client's deadline (`grpc-timeout`, taken by
    /// [`deadline::TakeGrpcTimeout`]) or the member's request timeout, whichever is first.
    pub fn deadline<T>(&self, request: &tonic::Request<T>) -> Deadline {
        let client = request.extensions().get::<deadline::ClientDeadline>();
        self.node.deadline(client.map(|client| client.0))
    }

    /// etcd refuses a request whose encoding exceeds `--max-request-bytes`.
    pub fn check_size(&self, encoded_len: usize) -> Result<(), Status> {
        if encoded_len as u64 > self.config.max_request_bytes {
            return Err(Status::invalid_argument("etcdserver: request is too large"));
        }
        Ok(())
    }

    /// The message of `request`, refused if its encoding is over the size limit.
    pub fn accept<T: Message>(&self, request: tonic::Request<T>) -> Result<T, Status> {
        let message = request.into_inner();
        self.check_size(message.encoded_len())?;
        Ok(message)
    }

    /// A write's message with its exactly-once tag and its deadline, in the order etcd's checks
    /// (and ours) refuse a bad request: the tag's metadata first, then the size.
    pub fn accept_write<T: Message>(
        &self,
        request: tonic::Request<T>,
    ) -> Result<(T, Option<yizhi_kv::ClientSeq>, Deadline), Status> {
        let tag = exactly_once::client_seq(request.metadata())?;
        let deadline = self.deadline(&request);
        Ok((self.accept(request)?, tag, deadline))
    }

    /// Waits until this member has applied every write committed before the call (a linearizable
    /// read: Raft thesis §6.4, ReadIndex).
    pub async fn read_barrier(&self, deadline: Deadline) -> Result<(), Status> {
        self.node
            .read_barrier(deadline)
            .await
            .map_err(|f| propose_status(&f))
    }

    /// A write through the log, wrapped for exactly-once when the call is `tag`ged; a refusal by
    /// the store is the call's error.
    pub async fn write(
        &self,
        command: Command,
        tag: Option<yizhi_kv::ClientSeq>,
        deadline: Deadline,
    ) -> Result<CommandResponse, Status> {
        let command = exactly_once::wrap(command, tag);
        let applied = self.propose(&command, deadline).await?;
        applied.map_err(|e| kv_status(&e))
    }

    /// `command` through the log: the store's answer, a refusal by the store included.
    pub async fn propose(
        &self,
        command: &Command,
        deadline: Deadline,
    ) -> Result<Result<CommandResponse, KvError>, Status> {
        let applied = self
            .node
            .propose(command, deadline)
            .await
            .map_err(|f| propose_status(&f))?;
        Ok(applied.response)
    }
}

/// The value of request metadata `key`, if given. Values must be ASCII text (a non-ASCII one is
/// refused rather than ignored: the caller meant something by it).
pub fn metadata_text<'a>(
    metadata: &'a tonic::metadata::MetadataMap,
    key: &str,
) -> Result<Option<&'a str>, Status> {
    metadata
        .get(key)
        .map(|value| {
            value
                .to_str()
                .map_err(|_| Status::invalid_argument(format!("yizhi: {key} is not ASCII text")))
        })
        .transpose()
}

/// Request metadata from `(key, value)` pairs, for the services' tests.
#[cfg(test)]
pub fn metadata_of(pairs: &[(&'static str, &'static str)]) -> tonic::metadata::MetadataMap {
    let mut map = tonic::metadata::MetadataMap::new();
    for (k, v) in pairs {
        map.insert(*k, v.parse().expect("ascii"));
    }
    map
}

/// Asserts `parse` refuses the metadata of each of `cases` as an invalid argument whose text
/// starts with "yizhi: ", for the services' tests.
#[cfg(test)]
pub fn assert_metadata_refused<T: std::fmt::Debug>(
    cases: &[&[(&'static str, &'static str)]],
    parse: impl Fn(&tonic::metadata::MetadataMap) -> Result<T, Status>,
) {
    for pairs in cases {
        let status = parse(&metadata_of(pairs)).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{pairs:?}");
        assert!(status.message().starts_with("yizhi: "), "{}", status.message());
    }
}

/// etcd's gRPC status for each store error; the texts are what etcd's clients match on.
pub fn kv_status(error: &KvError) -> Status {
    match error {
        KvError::EmptyKey
        | KvError::ValueProvided
        | KvError::LeaseProvided
        | KvError::KeyNotFound
        | KvError::TooManyOps
        | KvError::DuplicateKey
        | KvError::TxnTooDeep { .. }
        | KvError::InvalidLeaseId { .. } => Status::invalid_argument(error.to_string()),
        KvError::LeaseNotFound => Status::not_found(error.to_string()),
        KvError::LeaseExists => Status::failed_precondition(error.to_string()),
        KvError::LeaseTtlTooLarge => Status::out_of_range(error.to_string()),
        KvError::Compacted { .. } | KvError::FutureRevision => {
            Status::out_of_range(format!("etcdserver: {error}"))
        }
        KvError::InvalidClientSeq => Status::invalid_argument(error.to_string()),
        KvError::ClientSessionExpired { .. }
        | KvError::SequenceAcknowledged { .. }
        | KvError::DuplicateResponseNotRetained { .. } => Status::failed_precondition(error.to_string()),
        // Refusals of the exactly-once table: nothing was applied, a later retry may succeed.
        KvError::TooManyClientSessions
        | KvError::TooManyUnacknowledged { .. }
        | KvError::SessionMemoryFull => Status::resource_exhausted(error.to_string()),
        KvError::Backend(_) => Status::internal(format!("etcdserver: {error}")),
    }
}

/// A store answer of the wrong kind for the command proposed: a bug, never a client's doing.
pub fn unexpected(what: &str) -> Status {
    Status::internal(format!("etcdserver: unexpected response to a {what}"))
}

/// A service's gRPC trait impl in which `refused` methods each answer Unimplemented with `text`.
/// The impl is generated whole so that `async_trait` sees the expanded methods.
macro_rules! impl_refusing {
    (
        $service:ident: $trait:path {
            $($methods:tt)*
        }
        refused with $text:expr => {
            $($method:ident: $request:ty => $response:ty;)*
        }
    ) => {
        #[tonic::async_trait]
        impl $trait for $service {
            $($methods)*

            $(
                async fn $method(&self, _: tonic::Request<$request>) -> $crate::api::Answer<$response> {
                    Err(tonic::Status::unimplemented($text))
                }
            )*
        }
    };
}
pub(crate) use impl_refusing;

/// etcd's code and text for each failure (its `togRPCError`). Never `Canceled` or
/// `DeadlineExceeded`: etcd's Go client retries those (a write too) while its own deadline has
/// not passed, and a write whose outcome is unknown must not be sent again (issue 13).
/// The code is `ProposeFailure::status_code`, the one mapping the simulator's clients react to.
pub fn propose_status(failure: &ProposeFailure) -> Status {
    let code = match failure.status_code() {
        yizhi_member::StatusCode::InvalidArgument => tonic::Code::InvalidArgument,
        yizhi_member::StatusCode::ResourceExhausted => tonic::Code::ResourceExhausted,
        yizhi_member::StatusCode::Unavailable => tonic::Code::Unavailable,
        yizhi_member::StatusCode::FailedPrecondition => tonic::Code::FailedPrecondition,
        yizhi_member::StatusCode::NotFound => tonic::Code::NotFound,
        yizhi_member::StatusCode::Cancelled => tonic::Code::Cancelled,
    };
    Status::new(code, failure.to_string())
}

/// Why the client services could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("client URL {addr}: {source}")]
    Resolve { addr: String, source: std::io::Error },
    #[error("client URL {addr} resolves to nothing")]
    NoAddress { addr: String },
    #[error("listening for clients on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error("gRPC server task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Serves every service on each client address until `shutdown` resolves.
pub async fn serve(
    node: NodeHandle,
    config: ApiConfig,
    addrs: Vec<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let db_path = node.read_store().backend().path().into();
    let api = Api {
        node,
        config,
        alarms: Default::default(),
        db_path,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers = Vec::new();
    for addr in addrs {
        let socket: SocketAddr = match tokio::net::lookup_host(&addr).await {
            Ok(mut sockets) => sockets
                .next()
                .ok_or_else(|| ServeError::NoAddress { addr: addr.clone() })?,
            Err(source) => {
                return Err(ServeError::Resolve {
                    addr: addr.clone(),
                    source,
                });
            }
        };
        let listener = match tokio::net::TcpListener::bind(socket).await {
            Ok(listener) => listener,
            Err(source) => return Err(ServeError::Listen { addr, source }),
        };
        servers.push(tokio::spawn(http2::serve(
            listener,
            routes(&api),
            stop_rx.clone(),
        )));
    }
    shutdown.await;
    let _ = stop_tx.send(true);
    for server in servers {
        server.await?;
    }
    Ok(())
}

fn routes(api: &Api) -> tonic::service::Routes {
    use yizhi_proto::etcdserverpb::kv_server::KvServer;
    let max_decoding = api.config.max_request_bytes as usize + GRPC_OVERHEAD_BYTES;
    // Lock and Campaign calls waiting on this listener, both services together.
    let waiters = lock::WaiterLimit::new(lock::MAX_WAITERS);
    tonic::service::Routes::default()
        .add_service(
            KvServer::new(kv::KvService::new(api.clone()))
                .max_decoding_message_size(max_decoding)
                .max_encoding_message_size(MAX_RESPONSE_BYTES),
        )
        .add_service(
            yizhi_proto::etcdserverpb::watch_server::WatchServer::new(watch::WatchService::new(api.clone()))
                .max_decoding_message_size(max_decoding)
                .max_encoding_message_size(MAX_RESPONSE_BYTES),
        )
        .add_service(
            yizhi_proto::etcdserverpb::lease_server::LeaseServer::new(lease::LeaseService::new(api.clone()))
                .max_decoding_message_size(max_decoding)
                .max_encoding_message_size(MAX_RESPONSE_BYTES),
        )
        .add_service(
            yizhi_proto::etcdserverpb::maintenance_server::MaintenanceServer::new(
                maintenance::MaintenanceService::new(api.clone()),
            ),
        )
        .add_service(yizhi_proto::etcdserverpb::cluster_server::ClusterServer::new(
            cluster::ClusterService::new(api.clone()),
        ))
        .add_service(yizhi_proto::etcdserverpb::auth_server::AuthServer::new(
            auth::AuthService::new(api.clone()),
        ))
        .add_service(yizhi_proto::grpc_health_v1::health_server::HealthServer::new(
            health::HealthService::new(api.clone()),
        ))
        .add_service(yizhi_proto::v3lockpb::lock_server::LockServer::new(
            lock::LockService::new(api.clone(), waiters.clone()),
        ))
        .add_service(yizhi_proto::v3electionpb::election_server::ElectionServer::new(
            election::ElectionService::new(api.clone(), waiters),
        ))
}
