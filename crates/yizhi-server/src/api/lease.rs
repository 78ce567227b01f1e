//! `etcdserverpb.Lease`: LeaseGrant, LeaseRevoke, LeaseKeepAlive, LeaseTimeToLive, LeaseLeases.
//!
//! Grants, revokes and keep-alives go through the log, stamped with this member's wall clock
//! ([`wall_clock_ms`]; see [`crate::node::lessor`] for the clock assumption and for who expires
//! leases). TimeToLive and Leases read the local store after a read barrier, so they see every
//! acknowledged grant, keep-alive and revoke. As in etcd, an unknown lease is an error for a
//! revoke ("etcdserver: requested lease not found", NotFound), `TTL: 0` for a keep-alive and
//! `TTL: -1` for a TimeToLive.

use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};
use yizhi_kv::{Command, CommandResponse, KvError};
use yizhi_proto::etcdserverpb as pb;

use super::{Api, kv_status, propose_status};
use crate::node::lessor::wall_clock_ms;

/// Keep-alive answers queued toward one client before its stream's task waits for it to read.
pub const KEEP_ALIVE_RESPONSE_QUEUE: usize = 16;

#[derive(Debug)]
pub struct LeaseService {
    api: Api,
}

impl LeaseService {
    pub fn new(api: Api) -> Self {
        LeaseService { api }
    }
}

fn unexpected(what: &str) -> Status {
    Status::internal(format!("etcdserver: unexpected response to a {what}"))
}

async fn write(api: &Api, command: Command) -> Result<Result<CommandResponse, KvError>, Status> {
    let applied = api.node.propose(&command).await.map_err(|f| propose_status(&f))?;
    Ok(applied.response)
}

/// One keep-alive through the log; `TTL: 0` for a lease that does not exist (etcd's answer).
async fn keep_alive(api: &Api, id: i64) -> Result<pb::LeaseKeepAliveResponse, Status> {
    let command = Command::LeaseKeepAlive {
        id,
        now_ms: wall_clock_ms(),
    };
    match write(api, command).await? {
        Ok(CommandResponse::LeaseKeepAlive(r)) => Ok(pb::LeaseKeepAliveResponse {
            header: Some(api.header(r.revision)),
            id: r.id,
            ttl: r.ttl_secs,
        }),
        Err(KvError::LeaseNotFound) => Ok(pb::LeaseKeepAliveResponse {
            header: Some(api.header(api.current_revision())),
            id,
            ttl: 0,
        }),
        Err(e) => Err(kv_status(&e)),
        Ok(_) => Err(unexpected("lease keep-alive")),
    }
}

#[tonic::async_trait]
impl pb::lease_server::Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let request = request.into_inner();
        self.api.check_size(request.encoded_len())?;
        let command = Command::LeaseGrant(yizhi_kv::LeaseGrantRequest {
            id: request.id,
            ttl_secs: request.ttl,
            now_ms: wall_clock_ms(),
        });
        match write(&self.api, command).await?.map_err(|e| kv_status(&e))? {
            CommandResponse::LeaseGrant(r) => Ok(Response::new(pb::LeaseGrantResponse {
                header: Some(self.api.header(r.revision)),
                id: r.id,
                ttl: r.ttl_secs,
                error: String::new(),
            })),
            _ => Err(unexpected("lease grant")),
        }
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let id = request.into_inner().id;
        match write(&self.api, Command::LeaseRevoke { id })
            .await?
            .map_err(|e| kv_status(&e))?
        {
            CommandResponse::LeaseRevoke(r) => Ok(Response::new(pb::LeaseRevokeResponse {
                header: Some(self.api.header(r.revision)),
            })),
            _ => Err(unexpected("lease revoke")),
        }
    }

    type LeaseKeepAliveStream = BoxStream<pb::LeaseKeepAliveResponse>;

    /// Answers each keep-alive in order; a failure to replicate ends the stream with its status
    /// (etcd's clients then open a new one).
    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(KEEP_ALIVE_RESPONSE_QUEUE);
        let api = self.api.clone();
        tokio::spawn(async move {
            loop {
                let request = tokio::select! {
                    message = inbound.next() => match message {
                        Some(Ok(request)) => request,
                        Some(Err(_)) | None => return,
                    },
                    () = tx.closed() => return,
                };
                let answer = keep_alive(&api, request.id).await;
                let failed = answer.is_err();
                if tx.send(answer).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let request = request.into_inner();
        self.api
            .node
            .read_barrier()
            .await
            .map_err(|f| propose_status(&f))?;
        let found = {
            let store = self.api.node.shared.store.read().expect("store lock");
            store.lease_time_to_live(request.id, wall_clock_ms())
        };
        let response = match found {
            Ok(lease) => pb::LeaseTimeToLiveResponse {
                header: Some(self.api.header(lease.revision)),
                id: lease.id,
                ttl: lease.ttl_secs,
                granted_ttl: lease.granted_ttl_secs,
                keys: if request.keys {
                    lease.keys.into_iter().map(|k| k.to_vec()).collect()
                } else {
                    Vec::new()
                },
            },
            Err(KvError::LeaseNotFound) => pb::LeaseTimeToLiveResponse {
                header: Some(self.api.header(self.api.current_revision())),
                id: request.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
            Err(e) => return Err(kv_status(&e)),
        };
        Ok(Response::new(response))
    }

    async fn lease_leases(
        &self,
        _request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        self.api
            .node
            .read_barrier()
            .await
            .map_err(|f| propose_status(&f))?;
        let (ids, revision) = {
            let store = self.api.node.shared.store.read().expect("store lock");
            (store.lease_ids(), store.current_revision())
        };
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: Some(self.api.header(revision)),
            leases: ids.into_iter().map(|id| pb::LeaseStatus { id }).collect(),
        }))
    }
}
