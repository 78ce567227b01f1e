//! `etcdserverpb.Lease`: LeaseGrant, LeaseRevoke, LeaseKeepAlive, LeaseTimeToLive, LeaseLeases.
//!
//! Grants and revokes go through the log, stamped with this member's wall clock
//! ([`wall_clock_ms`]; see [`crate::node::lessor`] for the clock assumption, the two expiries R and
//! L, and who expires leases). A keep-alive reaching the leader (once its lessor has taken over the
//! inherited leases) is answered from memory while the lease's replicated expiry is more than
//! half a TTL away, extending only the leader's in-memory expiry, as etcd's leader answers
//! keep-alives from its lessor. A follower forwards the keep-alive to the leader over the peer
//! transport ([`crate::node::NodeHandle::forward_keep_alive`]) and relays its answer. Otherwise
//! (near the replicated expiry, an unknown lease, no leader known, the leader did not answer
//! within an election timeout) the keep-alive goes through the log as a proposal, which is also
//! how an unknown lease gets its `TTL: 0`. The check needs only "this member leads and has
//! applied what it inherited", so it works the same with either engine.
//!
//! TimeToLive and Leases read the local store after a read barrier, so they see every
//! acknowledged grant, keep-alive that went through the log, and revoke. On the leader,
//! TimeToLive counts from `max(L, R)`; a follower knows only R, so its answer is conservative: up
//! to half a TTL less than the leader's. As in etcd, an unknown lease is an error for a revoke
//! ("etcdserver: requested lease not found", NotFound), `TTL: 0` for a keep-alive and `TTL: -1`
//! for a TimeToLive.

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::StreamExt;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};
use yizhi_kv::{Command, CommandResponse, KvError};
use yizhi_proto::etcdserverpb as pb;

use super::{Answer, Api, exactly_once, kv_status, propose_status, unexpected};
use crate::node::lessor::{keep_alive_from_memory, wall_clock_ms};

/// Keep-alive answers queued toward one client before its stream's task waits for it to read.
pub const KEEP_ALIVE_RESPONSE_QUEUE: usize = 16;
/// Keep-alives of one stream being replicated at once; further requests wait unread.
pub const MAX_KEEP_ALIVES_IN_FLIGHT: usize = 64;

#[derive(Debug)]
pub struct LeaseService {
    api: Api,
}

impl LeaseService {
    pub fn new(api: Api) -> Self {
        LeaseService { api }
    }
}

/// One keep-alive: from the leader's memory if it may ([`keep_alive_from_memory`]; a follower
/// asks the leader), else through the log; `TTL: 0` for a lease that does not exist (etcd's answer).
async fn keep_alive(api: &Api, id: i64) -> Result<pb::LeaseKeepAliveResponse, Status> {
    // The revision of the header: the leader's answer read it under the lock it already held.
    let answered = match keep_alive_from_memory(&api.node.shared, id) {
        Some(answer) => Some((answer.ttl_secs, answer.revision)),
        None => api
            .node
            .forward_keep_alive(id)
            .await
            .map_err(|f| propose_status(&f))?
            .map(|ttl_secs| (ttl_secs, api.current_revision())),
    };
    if let Some((ttl_secs, revision)) = answered {
        return Ok(pb::LeaseKeepAliveResponse {
            header: Some(api.header(revision)),
            id,
            ttl: ttl_secs,
        });
    }
    let command = Command::LeaseKeepAlive {
        id,
        now_ms: wall_clock_ms(),
    };
    // One message of a long-lived stream: it has no deadline of its own but the member's.
    match api.propose(&command, api.node.deadline(None)).await? {
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

type KeepAliveAnswers = mpsc::Sender<Result<pb::LeaseKeepAliveResponse, Status>>;

async fn serve_keep_alives(
    api: Api,
    mut inbound: Streaming<pb::LeaseKeepAliveRequest>,
    tx: KeepAliveAnswers,
) {
    let mut in_flight = JoinSet::new();
    let mut inbound_open = true;
    loop {
        let room = in_flight.len() < MAX_KEEP_ALIVES_IN_FLIGHT;
        tokio::select! {
            message = inbound.next(), if inbound_open && room => match message {
                Some(Ok(request)) => {
                    let api = api.clone();
                    in_flight.spawn(async move { keep_alive(&api, request.id).await });
                }
                Some(Err(_)) => return,
                // The client is done sending: answer what it sent, then end the stream.
                None => inbound_open = false,
            },
            Some(joined) = in_flight.join_next() => {
                let answer = joined.unwrap_or_else(|e| Err(Status::internal(format!("etcdserver: {e}"))));
                let failed = answer.is_err();
                if tx.send(answer).await.is_err() || failed {
                    return;
                }
            }
            () = tx.closed() => return,
        }
        if !inbound_open && in_flight.is_empty() {
            return;
        }
    }
}

#[tonic::async_trait]
impl pb::lease_server::Lease for LeaseService {
    async fn lease_grant(&self, request: Request<pb::LeaseGrantRequest>) -> Answer<pb::LeaseGrantResponse> {
        let (request, tag, deadline) = self.api.accept_write(request)?;
        super::maintenance::check_space(&self.api, super::maintenance::LEASE_GRANT_COST_BYTES)?;
        let command = Command::LeaseGrant(yizhi_kv::LeaseGrantRequest {
            id: request.id,
            ttl_secs: request.ttl,
            now_ms: wall_clock_ms(),
        });
        let CommandResponse::LeaseGrant(r) = self.api.write(command, tag, deadline).await? else {
            return Err(unexpected("lease grant"));
        };
        let response = pb::LeaseGrantResponse {
            header: Some(self.api.header(r.revision)),
            id: r.id,
            ttl: r.ttl_secs,
            error: String::new(),
        };
        Ok(exactly_once::confirmed(response, tag))
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Answer<pb::LeaseRevokeResponse> {
        let tag = exactly_once::client_seq(request.metadata())?;
        let deadline = self.api.deadline(&request);
        let id = request.into_inner().id;
        let command = Command::LeaseRevoke { id };
        let CommandResponse::LeaseRevoke(r) = self.api.write(command, tag, deadline).await? else {
            return Err(unexpected("lease revoke"));
        };
        let response = pb::LeaseRevokeResponse {
            header: Some(self.api.header(r.revision)),
        };
        Ok(exactly_once::confirmed(response, tag))
    }

    type LeaseKeepAliveStream = BoxStream<pb::LeaseKeepAliveResponse>;

    /// Answers keep-alives as they apply, up to [`MAX_KEEP_ALIVES_IN_FLIGHT`] at once (etcd's
    /// clients send every lease of a client down one stream). A failure to replicate ends the
    /// stream with its status; etcd's clients then open a new one.
    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Answer<Self::LeaseKeepAliveStream> {
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(KEEP_ALIVE_RESPONSE_QUEUE);
        tokio::spawn(serve_keep_alives(self.api.clone(), inbound, tx));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Answer<pb::LeaseTimeToLiveResponse> {
        let deadline = self.api.deadline(&request);
        let request = request.into_inner();
        self.api.read_barrier(deadline).await?;
        let found = {
            let store = self.api.node.read_store();
            let now_ms = wall_clock_ms();
            let local = self
                .api
                .node
                .shared
                .local_leases
                .lock()
                .expect("local leases lock");
            store.lease_time_to_live(request.id, now_ms).map(|mut lease| {
                // On the leader the lease lives until max(L, R); L is empty elsewhere.
                if let Some(l_ms) = local.expiry_ms(request.id) {
                    let from_l_secs = (l_ms.saturating_sub(now_ms) / 1000) as i64;
                    lease.ttl_secs = lease.ttl_secs.max(from_l_secs);
                }
                lease
            })
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
        request: Request<pb::LeaseLeasesRequest>,
    ) -> Answer<pb::LeaseLeasesResponse> {
        self.api.read_barrier(self.api.deadline(&request)).await?;
        let (ids, revision) = {
            let store = self.api.node.read_store();
            (store.lease_ids(), store.current_revision())
        };
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: Some(self.api.header(revision)),
            leases: ids.into_iter().map(|id| pb::LeaseStatus { id }).collect(),
        }))
    }
}
