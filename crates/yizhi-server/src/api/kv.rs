//! `etcdserverpb.KV`: Range, Put, DeleteRange, Txn, Compact.
//!
//! Writes go through the log ([`NodeHandle::propose`](crate::node::NodeHandle::propose)) and answer
//! with what this member applied. Ranges are linearizable by default (a read barrier, then a local
//! read); `serializable: true` skips the barrier and may be stale, as in etcd; gRPC metadata picks
//! a level too, bounded staleness included ([`consistency`]). Writes tagged with a client id and
//! sequence number apply at most once ([`exactly_once`]).

use tonic::{Request, Response};
use yizhi_kv::{Command, CommandResponse};
use yizhi_proto::etcdserverpb as pb;

use super::consistency::{self, ReadLevel};
use super::exactly_once;
use super::{Answer, Api, convert, kv_status, maintenance, propose_status, unexpected};

#[derive(Debug)]
pub struct KvService {
    api: Api,
}

impl KvService {
    pub fn new(api: Api) -> Self {
        KvService { api }
    }
}

#[tonic::async_trait]
impl pb::kv_server::Kv for KvService {
    async fn range(&self, request: Request<pb::RangeRequest>) -> Answer<pb::RangeResponse> {
        let level = consistency::read_level(request.metadata(), request.get_ref().serializable)?;
        let deadline = self.api.deadline(&request);
        let request = convert::range_request(self.api.accept(request)?)?;
        let node = &self.api.node;
        match level {
            ReadLevel::Linearizable => node.read_barrier(deadline).await,
            ReadLevel::Serializable => Ok(()),
            ReadLevel::BoundedStaleness { max_staleness } => {
                node.bounded_read_barrier(max_staleness, deadline).await
            }
        }
        .map_err(|f| propose_status(&f))?;
        let response = {
            let store = self.api.node.read_store();
            store.range(&request).map_err(|e| kv_status(&e))?
        };
        let header = self.api.header(response.revision);
        Ok(Response::new(convert::range_response(response, &header)))
    }

    async fn put(&self, request: Request<pb::PutRequest>) -> Answer<pb::PutResponse> {
        let (request, tag, deadline) = self.api.accept_write(request)?;
        if request.key.is_empty() {
            return Err(kv_status(&yizhi_kv::KvError::EmptyKey));
        }
        maintenance::check_space(&self.api, maintenance::put_cost(&request))?;
        let command = Command::Put(convert::put_request(request));
        let CommandResponse::Put(r) = self.api.write(command, tag, deadline).await? else {
            return Err(unexpected("put"));
        };
        let header = self.api.header(r.revision);
        Ok(exactly_once::confirmed(convert::put_response(r, &header), tag))
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Answer<pb::DeleteRangeResponse> {
        let (request, tag, deadline) = self.api.accept_write(request)?;
        if request.key.is_empty() {
            return Err(kv_status(&yizhi_kv::KvError::EmptyKey));
        }
        let command = Command::DeleteRange(convert::delete_request(request));
        let CommandResponse::DeleteRange(r) = self.api.write(command, tag, deadline).await? else {
            return Err(unexpected("delete"));
        };
        let header = self.api.header(r.revision);
        Ok(exactly_once::confirmed(convert::delete_response(r, &header), tag))
    }

    async fn txn(&self, request: Request<pb::TxnRequest>) -> Answer<pb::TxnResponse> {
        let (request, tag, deadline) = self.api.accept_write(request)?;
        maintenance::check_space(&self.api, maintenance::txn_cost(&request))?;
        let request = convert::txn_request(request)?;
        let CommandResponse::Txn(r) = self.api.write(Command::Txn(request), tag, deadline).await? else {
            return Err(unexpected("txn"));
        };
        let header = self.api.header(r.revision);
        Ok(exactly_once::confirmed(convert::txn_response(r, &header), tag))
    }

    async fn compact(&self, request: Request<pb::CompactionRequest>) -> Answer<pb::CompactionResponse> {
        let deadline = self.api.deadline(&request);
        let request = request.into_inner();
        let command = Command::Compact(yizhi_kv::CompactionRequest {
            revision: request.revision,
            physical: request.physical,
        });
        match self.api.write(command, None, deadline).await? {
            CommandResponse::Compact(r) => Ok(Response::new(pb::CompactionResponse {
                header: Some(self.api.header(r.revision)),
            })),
            _ => Err(unexpected("compaction")),
        }
    }
}
