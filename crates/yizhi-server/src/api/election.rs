//! `v3electionpb.Election`: Campaign, Proclaim, Leader, Observe and Resign, as etcd's server-side
//! v3election (which runs clientv3's `concurrency.Election`).
//!
//! Candidates queue exactly as lock waiters do ([`super::lock`]): the key `<name>/<lease hex>`
//! holds the candidate's value, the leader is the key with the lowest create revision, Campaign
//! returns once its key leads (confirmed linearizably, lease alive). A `LeaderKey` names the
//! leader's key and create revision; Proclaim and Resign act only while that exact incarnation
//! exists (Proclaim additionally only while it leads), so a leader whose lease expired can change
//! nothing. Errors carry etcd's texts ("election: not leader", "election: no leader").
//!
//! Observe follows etcd's client: the current leader's key-value, then every put to that key
//! (each Proclaim, through a hub watch, so none is skipped), and when it is deleted the next
//! leader's current key-value (or, with no candidate left, the first put under the prefix).

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};
use yizhi_kv::{EventKind, KeyValue, WatchError, WatchId, WatchRequest};
use yizhi_proto::etcdserverpb as pb;
use yizhi_proto::v3electionpb as epb;

use super::lock::{self, Queued, WaiterLimit};
use super::{Answer, Api, convert};
use crate::node::Shared;

/// Leader changes queued toward one observer before its task waits for it to read.
pub const OBSERVE_RESPONSE_QUEUE: usize = 16;

const NOT_LEADER: &str = "election: not leader";
const NO_LEADER: &str = "election: no leader";
const MISSING_LEADER_KEY: &str = "\"leader\" field must be provided";

#[derive(Debug)]
pub struct ElectionService {
    api: Api,
    waiters: WaiterLimit,
}

impl ElectionService {
    pub fn new(api: Api, waiters: WaiterLimit) -> Self {
        ElectionService { api, waiters }
    }
}

/// etcd's server returns the election package's plain errors, which gRPC sends as Unknown.
fn election_error(text: &str) -> Status {
    Status::unknown(text)
}

/// Replaces the value of `key` if it is still incarnation `create_revision`, and, with
/// `leading`, still the lowest create revision under `prefix`. False if it is not.
async fn put_value(
    api: &Api,
    prefix: &Bytes,
    key: &Bytes,
    create_revision: i64,
    lease: i64,
    value: &[u8],
    leading: bool,
) -> Result<(bool, i64), Status> {
    let mut compare = vec![lock::compare_create(key, create_revision)];
    if leading {
        // Every key of the election was created at or after ours: ours leads.
        compare.push(pb::Compare {
            result: pb::compare::CompareResult::Greater as i32,
            target: pb::compare::CompareTarget::Create as i32,
            key: prefix.to_vec(),
            range_end: lock::prefix_end(prefix).to_vec(),
            target_union: Some(pb::compare::TargetUnion::CreateRevision(create_revision - 1)),
        });
    }
    let request = pb::TxnRequest {
        compare,
        success: vec![lock::put_op(key, value, lease)],
        failure: Vec::new(),
    };
    let response = lock::txn(api, request).await?;
    Ok((response.succeeded, response.revision))
}

#[tonic::async_trait]
impl epb::election_server::Election for ElectionService {
    async fn campaign(&self, request: Request<epb::CampaignRequest>) -> Answer<epb::CampaignResponse> {
        let request = self.api.accept(request)?;
        let _permit = self.waiters.admit()?;
        let lease = lock::session_lease(&self.api, request.lease).await?;
        let prefix = lock::queue_prefix(&request.name);
        let value = Bytes::from(request.value);
        let (queued, withdraw) = lock::enqueue(&self.api, &prefix, lease, value.clone()).await?;
        if queued.value != value {
            // Campaigning again on the same lease with a new value updates it, as etcd does.
            let (updated, _) = put_value(
                &self.api,
                &prefix,
                &queued.key,
                queued.create_revision,
                lease,
                &value,
                false,
            )
            .await?;
            if !updated {
                return Err(election_error(NOT_LEADER));
            }
        }
        let revision = lock::wait_for_turn(&self.api, &prefix, &queued).await?;
        withdraw.keep();
        Ok(Response::new(epb::CampaignResponse {
            header: Some(self.api.header(revision)),
            leader: Some(leader_key(request.name, &queued)),
        }))
    }

    async fn proclaim(&self, request: Request<epb::ProclaimRequest>) -> Answer<epb::ProclaimResponse> {
        let request = self.api.accept(request)?;
        let leader = request.leader.ok_or_else(|| election_error(MISSING_LEADER_KEY))?;
        let prefix = lock::queue_prefix(&leader.name);
        let key = Bytes::from(leader.key);
        if !key.starts_with(&prefix) || leader.rev <= 0 {
            return Err(election_error(NOT_LEADER));
        }
        let (updated, revision) = put_value(
            &self.api,
            &prefix,
            &key,
            leader.rev,
            leader.lease,
            &request.value,
            true,
        )
        .await?;
        if !updated {
            return Err(election_error(NOT_LEADER));
        }
        Ok(Response::new(epb::ProclaimResponse {
            header: Some(self.api.header(revision)),
        }))
    }

    async fn leader(&self, request: Request<epb::LeaderRequest>) -> Answer<epb::LeaderResponse> {
        let deadline = self.api.deadline(&request);
        let request = self.api.accept(request)?;
        self.api.read_barrier(deadline).await?;
        let prefix = lock::queue_prefix(&request.name);
        let (leader, revision) = {
            let store = self.api.node.read_store();
            (lock::first_created(&store, &prefix)?, store.current_revision())
        };
        let leader = leader.ok_or_else(|| election_error(NO_LEADER))?;
        Ok(Response::new(epb::LeaderResponse {
            header: Some(self.api.header(revision)),
            kv: Some(convert::key_value(leader)),
        }))
    }

    type ObserveStream = BoxStream<epb::LeaderResponse>;

    async fn observe(&self, request: Request<epb::LeaderRequest>) -> Answer<Self::ObserveStream> {
        let deadline = self.api.deadline(&request);
        let request = self.api.accept(request)?;
        // Start from a linearizable view; the watches then follow this member's applies.
        self.api.read_barrier(deadline).await?;
        let (tx, rx) = mpsc::channel(OBSERVE_RESPONSE_QUEUE);
        let observer = Observer {
            api: self.api.clone(),
            prefix: lock::queue_prefix(&request.name),
            tx,
        };
        tokio::spawn(observer.run());
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn resign(&self, request: Request<epb::ResignRequest>) -> Answer<epb::ResignResponse> {
        let request = self.api.accept(request)?;
        let leader = request.leader.ok_or_else(|| election_error(MISSING_LEADER_KEY))?;
        let key = Bytes::from(leader.key);
        if key.is_empty() {
            return Err(super::kv_status(&yizhi_kv::KvError::EmptyKey));
        }
        // Only the incarnation named; resigning an already lost leadership is not an error.
        let request = pb::TxnRequest {
            compare: vec![lock::compare_create(&key, leader.rev)],
            success: vec![lock::delete_op(&key)],
            failure: Vec::new(),
        };
        let response = lock::txn(&self.api, request).await?;
        Ok(Response::new(epb::ResignResponse {
            header: Some(self.api.header(response.revision)),
        }))
    }
}

fn leader_key(name: Vec<u8>, queued: &Queued) -> epb::LeaderKey {
    epb::LeaderKey {
        name,
        key: queued.key.to_vec(),
        rev: queued.create_revision,
        lease: queued.lease,
    }
}

/// The client stream went away.
struct Gone;

/// One Observe stream's task.
struct Observer {
    api: Api,
    prefix: Bytes,
    tx: mpsc::Sender<Result<epb::LeaderResponse, Status>>,
}

impl Observer {
    async fn run(self) {
        let mut applied = self.api.node.shared.subscribe_applied();
        let closed = self.tx.clone();
        let outcome = tokio::select! {
            outcome = self.follow_leaders(&mut applied) => outcome,
            () = closed.closed() => Ok(Gone),
        };
        if let Err(status) = outcome {
            let _ = self.tx.send(Err(status)).await;
        }
    }

    /// Runs until the client goes away (`Ok`) or the member fails (`Err`).
    async fn follow_leaders(&self, applied: &mut watch::Receiver<u64>) -> Result<Gone, Status> {
        loop {
            let (leader, revision) = {
                let store = self.api.node.read_store();
                (
                    lock::first_created(&store, &self.prefix)?,
                    store.current_revision(),
                )
            };
            let found = match leader {
                Some(kv) => Some((kv, revision)),
                None => self.first_put(revision, applied).await?,
            };
            // None: the watch was cancelled by compaction; look at the current state again.
            let Some((leader, revision)) = found else {
                continue;
            };
            if self.send(revision, leader.clone()).await.is_err() {
                return Ok(Gone);
            }
            match self.follow(&leader.key, revision, applied).await? {
                Some(Gone) => return Ok(Gone),
                None => continue, // Deleted: the next leader.
            }
        }
    }

    async fn send(&self, revision: i64, kv: KeyValue) -> Result<(), Gone> {
        let response = epb::LeaderResponse {
            header: Some(self.api.header(revision)),
            kv: Some(convert::key_value(kv)),
        };
        self.tx.send(Ok(response)).await.map_err(|_| Gone)
    }

    /// With no candidate: the first key put under the prefix after `revision`, with its revision.
    async fn first_put(
        &self,
        revision: i64,
        applied: &mut watch::Receiver<u64>,
    ) -> Result<Option<(KeyValue, i64)>, Status> {
        let watch = HubWatch::register(
            &self.api,
            self.prefix.clone(),
            lock::prefix_end(&self.prefix),
            revision,
        )?;
        loop {
            for response in watch.next(applied).await? {
                if response.canceled {
                    return Ok(None);
                }
                // A delete cannot make a leader; only a put can.
                if let Some(event) = response.events.into_iter().find(|e| e.kind == EventKind::Put) {
                    let revision = event.kv.mod_revision;
                    return Ok(Some((event.kv, revision)));
                }
            }
        }
    }

    /// Sends every put to the leader's `key` after `revision`; returns `None` once it is deleted
    /// (or its watch is cancelled by compaction), `Some(Gone)` when the client left.
    async fn follow(
        &self,
        key: &Bytes,
        revision: i64,
        applied: &mut watch::Receiver<u64>,
    ) -> Result<Option<Gone>, Status> {
        let watch = HubWatch::register(&self.api, key.clone(), Bytes::new(), revision)?;
        loop {
            for response in watch.next(applied).await? {
                if response.canceled {
                    return Ok(None);
                }
                for event in response.events {
                    match event.kind {
                        EventKind::Delete => return Ok(None),
                        EventKind::Put => {
                            if self.send(response.revision, event.kv).await.is_err() {
                                return Ok(Some(Gone));
                            }
                        }
                    }
                }
            }
        }
    }
}

async fn wait_applied(applied: &mut watch::Receiver<u64>) -> Result<(), Status> {
    applied
        .changed()
        .await
        .map_err(|_| Status::unavailable("etcdserver: server stopped"))
}

/// A watcher in the member's hub, cancelled when dropped.
struct HubWatch {
    shared: Arc<Shared>,
    id: WatchId,
}

impl HubWatch {
    /// Watches `[key, range_end)` from the revision after `revision`.
    fn register(api: &Api, key: Bytes, range_end: Bytes, revision: i64) -> Result<HubWatch, Status> {
        let shared = api.node.shared.clone();
        let request = WatchRequest {
            key,
            range_end,
            start_revision: revision + 1,
            ..Default::default()
        };
        let id = {
            let store = shared.read_store();
            let mut hub = shared.watch_hub.lock().expect("watch hub lock");
            hub.watch(&store, &request)
        };
        let id = id.map_err(|e| match e {
            WatchError::TooManyWatchers { .. } => Status::resource_exhausted(e.to_string()),
            WatchError::Kv(e) => super::kv_status(&e),
        })?;
        Ok(HubWatch { shared, id })
    }

    /// What the hub has for this watch now (store, then hub locked: the order every poller uses).
    fn poll(&self) -> Result<Vec<yizhi_kv::WatchResponse>, Status> {
        let store = self.shared.read_store();
        let mut hub = self.shared.watch_hub.lock().expect("watch hub lock");
        hub.poll(&store, self.id)
            .map_err(|e| Status::internal(format!("etcdserver: {e}")))
    }

    /// What the hub has now, after waiting for the next apply when it had nothing (the caller
    /// polls again: an empty answer after the wait means "look again", not "nothing more").
    async fn next(&self, applied: &mut watch::Receiver<u64>) -> Result<Vec<yizhi_kv::WatchResponse>, Status> {
        let responses = self.poll()?;
        if responses.is_empty() {
            wait_applied(applied).await?;
        }
        Ok(responses)
    }
}

impl Drop for HubWatch {
    fn drop(&mut self) {
        self.shared
            .watch_hub
            .lock()
            .expect("watch hub lock")
            .cancel(self.id);
    }
}
