//! The gRPC surface: service and method names, request/response types and streaming shapes as
//! etcd v3.5 declares them (expected values copied from etcd's rpc.proto, v3lock.proto,
//! v3election.proto and grpc's health.proto), checked through the exported descriptor set; then
//! generated clients call generated servers in-process, and the HTTP/2 paths they use are recorded.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use prost::Message as _;
use prost_types::FileDescriptorSet;
use tonic::codegen::BoxStream;
use tonic::codegen::tokio_stream::{self, StreamExt as _};
use tonic::{Request, Response, Status, Streaming};
use yizhi_proto::FILE_DESCRIPTOR_SET;
use yizhi_proto::etcdserverpb::{self as pb, kv_client, kv_server, lease_client, lease_server};
use yizhi_proto::etcdserverpb::{maintenance_client, maintenance_server, watch_client, watch_server};
use yizhi_proto::grpc_health_v1::{self as health, health_client, health_server};
use yizhi_proto::v3electionpb::{self as election, election_client, election_server};
use yizhi_proto::v3lockpb::{self as lock, lock_client, lock_server};

/// `(method, input type, output type, client streams, server streams)`.
type MethodRow = (&'static str, &'static str, &'static str, bool, bool);

/// [`MethodRow`] as read from the descriptor set.
type Method = (String, String, String, bool, bool);

/// Services by full name, each with its methods in declaration order.
type Services = BTreeMap<String, Vec<Method>>;

/// A unary method whose types are `.{pkg}.{Req}` / `.{pkg}.{Resp}`.
const fn unary(name: &'static str, req: &'static str, resp: &'static str) -> MethodRow {
    (name, req, resp, false, false)
}

fn descriptor_set() -> FileDescriptorSet {
    FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("FILE_DESCRIPTOR_SET decodes")
}

/// Every service in the descriptor set, by full name, with its methods in declaration order.
fn services() -> Services {
    let mut out = BTreeMap::new();
    for file in descriptor_set().file {
        for service in &file.service {
            let full_name = format!("{}.{}", file.package(), service.name());
            let methods = service
                .method
                .iter()
                .map(|m| {
                    let strip = |t: &str| t.trim_start_matches('.').to_owned();
                    (
                        m.name().to_owned(),
                        strip(m.input_type()),
                        strip(m.output_type()),
                        m.client_streaming(),
                        m.server_streaming(),
                    )
                })
                .collect();
            assert!(
                out.insert(full_name.clone(), methods).is_none(),
                "service {full_name} declared twice"
            );
        }
    }
    out
}

fn assert_methods(all: &Services, service: &str, pkg: &str, expected: &[MethodRow]) {
    let actual = all
        .get(service)
        .unwrap_or_else(|| panic!("service {service} missing"));
    let expected: Vec<_> = expected
        .iter()
        .map(|(name, req, resp, cs, ss)| {
            (
                (*name).to_owned(),
                format!("{pkg}.{req}"),
                format!("{pkg}.{resp}"),
                *cs,
                *ss,
            )
        })
        .collect();
    assert_eq!(actual, &expected, "methods of {service}");
}

#[test]
fn every_service_and_method_matches_etcd() {
    let all = services();
    let names: Vec<&str> = all.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "etcdserverpb.Auth",
            "etcdserverpb.Cluster",
            "etcdserverpb.KV",
            "etcdserverpb.Lease",
            "etcdserverpb.Maintenance",
            "etcdserverpb.Watch",
            "grpc.health.v1.Health",
            "v3electionpb.Election",
            "v3lockpb.Lock",
        ]
    );
    let e = "etcdserverpb";
    assert_methods(
        &all,
        "etcdserverpb.KV",
        e,
        &[
            unary("Range", "RangeRequest", "RangeResponse"),
            unary("Put", "PutRequest", "PutResponse"),
            unary("DeleteRange", "DeleteRangeRequest", "DeleteRangeResponse"),
            unary("Txn", "TxnRequest", "TxnResponse"),
            unary("Compact", "CompactionRequest", "CompactionResponse"),
        ],
    );
    assert_methods(
        &all,
        "etcdserverpb.Watch",
        e,
        &[("Watch", "WatchRequest", "WatchResponse", true, true)],
    );
    assert_methods(
        &all,
        "etcdserverpb.Lease",
        e,
        &[
            unary("LeaseGrant", "LeaseGrantRequest", "LeaseGrantResponse"),
            unary("LeaseRevoke", "LeaseRevokeRequest", "LeaseRevokeResponse"),
            (
                "LeaseKeepAlive",
                "LeaseKeepAliveRequest",
                "LeaseKeepAliveResponse",
                true,
                true,
            ),
            unary(
                "LeaseTimeToLive",
                "LeaseTimeToLiveRequest",
                "LeaseTimeToLiveResponse",
            ),
            unary("LeaseLeases", "LeaseLeasesRequest", "LeaseLeasesResponse"),
        ],
    );
    assert_methods(
        &all,
        "etcdserverpb.Cluster",
        e,
        &[
            unary("MemberAdd", "MemberAddRequest", "MemberAddResponse"),
            unary("MemberRemove", "MemberRemoveRequest", "MemberRemoveResponse"),
            unary("MemberUpdate", "MemberUpdateRequest", "MemberUpdateResponse"),
            unary("MemberList", "MemberListRequest", "MemberListResponse"),
            unary("MemberPromote", "MemberPromoteRequest", "MemberPromoteResponse"),
        ],
    );
    assert_methods(
        &all,
        "etcdserverpb.Maintenance",
        e,
        &[
            unary("Alarm", "AlarmRequest", "AlarmResponse"),
            unary("Status", "StatusRequest", "StatusResponse"),
            unary("Defragment", "DefragmentRequest", "DefragmentResponse"),
            unary("Hash", "HashRequest", "HashResponse"),
            unary("HashKV", "HashKVRequest", "HashKVResponse"),
            ("Snapshot", "SnapshotRequest", "SnapshotResponse", false, true),
            unary("MoveLeader", "MoveLeaderRequest", "MoveLeaderResponse"),
            unary("Downgrade", "DowngradeRequest", "DowngradeResponse"),
        ],
    );
    assert_methods(
        &all,
        "etcdserverpb.Auth",
        e,
        &[
            unary("AuthEnable", "AuthEnableRequest", "AuthEnableResponse"),
            unary("AuthDisable", "AuthDisableRequest", "AuthDisableResponse"),
            unary("AuthStatus", "AuthStatusRequest", "AuthStatusResponse"),
            unary("Authenticate", "AuthenticateRequest", "AuthenticateResponse"),
            unary("UserAdd", "AuthUserAddRequest", "AuthUserAddResponse"),
            unary("UserGet", "AuthUserGetRequest", "AuthUserGetResponse"),
            unary("UserList", "AuthUserListRequest", "AuthUserListResponse"),
            unary("UserDelete", "AuthUserDeleteRequest", "AuthUserDeleteResponse"),
            unary(
                "UserChangePassword",
                "AuthUserChangePasswordRequest",
                "AuthUserChangePasswordResponse",
            ),
            unary(
                "UserGrantRole",
                "AuthUserGrantRoleRequest",
                "AuthUserGrantRoleResponse",
            ),
            unary(
                "UserRevokeRole",
                "AuthUserRevokeRoleRequest",
                "AuthUserRevokeRoleResponse",
            ),
            unary("RoleAdd", "AuthRoleAddRequest", "AuthRoleAddResponse"),
            unary("RoleGet", "AuthRoleGetRequest", "AuthRoleGetResponse"),
            unary("RoleList", "AuthRoleListRequest", "AuthRoleListResponse"),
            unary("RoleDelete", "AuthRoleDeleteRequest", "AuthRoleDeleteResponse"),
            unary(
                "RoleGrantPermission",
                "AuthRoleGrantPermissionRequest",
                "AuthRoleGrantPermissionResponse",
            ),
            unary(
                "RoleRevokePermission",
                "AuthRoleRevokePermissionRequest",
                "AuthRoleRevokePermissionResponse",
            ),
        ],
    );
    assert_methods(
        &all,
        "v3lockpb.Lock",
        "v3lockpb",
        &[
            unary("Lock", "LockRequest", "LockResponse"),
            unary("Unlock", "UnlockRequest", "UnlockResponse"),
        ],
    );
    assert_methods(
        &all,
        "v3electionpb.Election",
        "v3electionpb",
        &[
            unary("Campaign", "CampaignRequest", "CampaignResponse"),
            unary("Proclaim", "ProclaimRequest", "ProclaimResponse"),
            unary("Leader", "LeaderRequest", "LeaderResponse"),
            ("Observe", "LeaderRequest", "LeaderResponse", false, true),
            unary("Resign", "ResignRequest", "ResignResponse"),
        ],
    );
    assert_methods(
        &all,
        "grpc.health.v1.Health",
        "grpc.health.v1",
        &[
            unary("Check", "HealthCheckRequest", "HealthCheckResponse"),
            ("Watch", "HealthCheckRequest", "HealthCheckResponse", false, true),
        ],
    );
}

/// etcd 3.5's rpc.proto declares exactly these top-level messages and enums.
#[test]
fn etcdserverpb_declares_etcds_messages() {
    let set = descriptor_set();
    let file = set
        .file
        .iter()
        .find(|f| f.package() == "etcdserverpb")
        .expect("etcdserverpb file");
    let messages: BTreeSet<String> = file.message_type.iter().map(|m| m.name().to_owned()).collect();
    let mut expected: BTreeSet<String> = [
        "ResponseHeader",
        "RangeRequest",
        "RangeResponse",
        "PutRequest",
        "PutResponse",
        "DeleteRangeRequest",
        "DeleteRangeResponse",
        "RequestOp",
        "ResponseOp",
        "Compare",
        "TxnRequest",
        "TxnResponse",
        "CompactionRequest",
        "CompactionResponse",
        "HashRequest",
        "HashKVRequest",
        "HashKVResponse",
        "HashResponse",
        "SnapshotRequest",
        "SnapshotResponse",
        "WatchRequest",
        "WatchCreateRequest",
        "WatchCancelRequest",
        "WatchProgressRequest",
        "WatchResponse",
        "LeaseGrantRequest",
        "LeaseGrantResponse",
        "LeaseRevokeRequest",
        "LeaseRevokeResponse",
        "LeaseCheckpoint",
        "LeaseCheckpointRequest",
        "LeaseCheckpointResponse",
        "LeaseKeepAliveRequest",
        "LeaseKeepAliveResponse",
        "LeaseTimeToLiveRequest",
        "LeaseTimeToLiveResponse",
        "LeaseLeasesRequest",
        "LeaseStatus",
        "LeaseLeasesResponse",
        "Member",
        "MemberAddRequest",
        "MemberAddResponse",
        "MemberRemoveRequest",
        "MemberRemoveResponse",
        "MemberUpdateRequest",
        "MemberUpdateResponse",
        "MemberListRequest",
        "MemberListResponse",
        "MemberPromoteRequest",
        "MemberPromoteResponse",
        "DefragmentRequest",
        "DefragmentResponse",
        "MoveLeaderRequest",
        "MoveLeaderResponse",
        "AlarmRequest",
        "AlarmMember",
        "AlarmResponse",
        "DowngradeRequest",
        "DowngradeResponse",
        "StatusRequest",
        "StatusResponse",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    for op in [
        "AuthEnable",
        "AuthDisable",
        "AuthStatus",
        "Authenticate",
        "AuthUserAdd",
        "AuthUserGet",
        "AuthUserDelete",
        "AuthUserChangePassword",
        "AuthUserGrantRole",
        "AuthUserRevokeRole",
        "AuthRoleAdd",
        "AuthRoleGet",
        "AuthUserList",
        "AuthRoleList",
        "AuthRoleDelete",
        "AuthRoleGrantPermission",
        "AuthRoleRevokePermission",
    ] {
        expected.insert(format!("{op}Request"));
        expected.insert(format!("{op}Response"));
    }
    assert_eq!(messages, expected);
    let enums: Vec<&str> = file.enum_type.iter().map(|e| e.name()).collect();
    assert_eq!(enums, ["AlarmType"]);
}

#[test]
fn generated_service_name_consts() {
    assert_eq!(kv_server::SERVICE_NAME, "etcdserverpb.KV");
    assert_eq!(watch_server::SERVICE_NAME, "etcdserverpb.Watch");
    assert_eq!(lease_server::SERVICE_NAME, "etcdserverpb.Lease");
    assert_eq!(
        yizhi_proto::etcdserverpb::cluster_server::SERVICE_NAME,
        "etcdserverpb.Cluster"
    );
    assert_eq!(maintenance_server::SERVICE_NAME, "etcdserverpb.Maintenance");
    assert_eq!(
        yizhi_proto::etcdserverpb::auth_server::SERVICE_NAME,
        "etcdserverpb.Auth"
    );
    assert_eq!(lock_server::SERVICE_NAME, "v3lockpb.Lock");
    assert_eq!(election_server::SERVICE_NAME, "v3electionpb.Election");
    assert_eq!(health_server::SERVICE_NAME, "grpc.health.v1.Health");
}

// ---- In-process loopback: generated client -> path recorder -> generated server ----

/// Forwards to a generated server and records the request path of every call.
#[derive(Clone, Debug)]
struct Recorder<S> {
    inner: S,
    paths: Arc<Mutex<Vec<String>>>,
}

impl<S> Recorder<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            paths: Arc::default(),
        }
    }

    fn paths(&self) -> Vec<String> {
        self.paths.lock().expect("not poisoned").clone()
    }
}

impl<S, B> tower_service::Service<http::Request<B>> for Recorder<S>
where
    S: tower_service::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        self.paths
            .lock()
            .expect("not poisoned")
            .push(request.uri().path().to_owned());
        self.inner.call(request)
    }
}

type Rpc<T> = Result<Response<T>, Status>;

fn not_under_test<T>() -> Rpc<T> {
    Err(Status::internal("not under test"))
}

/// Answers the RPCs under test with values derived from the request, so a reply proves the
/// server decoded the request and the client decoded the reply.
#[derive(Debug)]
struct Echo;

fn header(revision: i64) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        revision,
        ..Default::default()
    })
}

#[tonic::async_trait]
impl kv_server::Kv for Echo {
    async fn range(&self, request: Request<pb::RangeRequest>) -> Rpc<pb::RangeResponse> {
        let req = request.into_inner();
        let kv = yizhi_proto::mvccpb::KeyValue {
            key: req.key,
            mod_revision: req.revision,
            ..Default::default()
        };
        Ok(Response::new(pb::RangeResponse {
            header: header(req.revision),
            kvs: vec![kv],
            more: false,
            count: 1,
        }))
    }
    async fn put(&self, _: Request<pb::PutRequest>) -> Rpc<pb::PutResponse> {
        not_under_test()
    }
    async fn delete_range(&self, _: Request<pb::DeleteRangeRequest>) -> Rpc<pb::DeleteRangeResponse> {
        not_under_test()
    }
    async fn txn(&self, _: Request<pb::TxnRequest>) -> Rpc<pb::TxnResponse> {
        not_under_test()
    }
    async fn compact(&self, _: Request<pb::CompactionRequest>) -> Rpc<pb::CompactionResponse> {
        not_under_test()
    }
}

#[tonic::async_trait]
impl watch_server::Watch for Echo {
    type WatchStream = BoxStream<pb::WatchResponse>;

    /// Acknowledges every create request with its watch_id, in order.
    async fn watch(&self, request: Request<Streaming<pb::WatchRequest>>) -> Rpc<Self::WatchStream> {
        let mut inbound = request.into_inner();
        let mut replies = Vec::new();
        while let Some(req) = inbound.message().await? {
            if let Some(pb::watch_request::RequestUnion::CreateRequest(create)) = req.request_union {
                replies.push(Ok(pb::WatchResponse {
                    watch_id: create.watch_id,
                    created: true,
                    ..Default::default()
                }));
            }
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(replies))))
    }
}

#[tonic::async_trait]
impl lease_server::Lease for Echo {
    type LeaseKeepAliveStream = BoxStream<pb::LeaseKeepAliveResponse>;

    async fn lease_grant(&self, _: Request<pb::LeaseGrantRequest>) -> Rpc<pb::LeaseGrantResponse> {
        not_under_test()
    }
    async fn lease_revoke(&self, _: Request<pb::LeaseRevokeRequest>) -> Rpc<pb::LeaseRevokeResponse> {
        not_under_test()
    }
    /// Answers each keep-alive with TTL = 10 * ID.
    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Rpc<Self::LeaseKeepAliveStream> {
        let stream = request.into_inner().map(|req| {
            req.map(|r| pb::LeaseKeepAliveResponse {
                header: None,
                id: r.id,
                ttl: r.id * 10,
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }
    async fn lease_time_to_live(
        &self,
        _: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Rpc<pb::LeaseTimeToLiveResponse> {
        not_under_test()
    }
    async fn lease_leases(&self, _: Request<pb::LeaseLeasesRequest>) -> Rpc<pb::LeaseLeasesResponse> {
        not_under_test()
    }
}

#[tonic::async_trait]
impl maintenance_server::Maintenance for Echo {
    type SnapshotStream = BoxStream<pb::SnapshotResponse>;

    async fn alarm(&self, _: Request<pb::AlarmRequest>) -> Rpc<pb::AlarmResponse> {
        not_under_test()
    }
    async fn status(&self, _: Request<pb::StatusRequest>) -> Rpc<pb::StatusResponse> {
        not_under_test()
    }
    async fn defragment(&self, _: Request<pb::DefragmentRequest>) -> Rpc<pb::DefragmentResponse> {
        not_under_test()
    }
    async fn hash(&self, _: Request<pb::HashRequest>) -> Rpc<pb::HashResponse> {
        not_under_test()
    }
    async fn hash_kv(&self, _: Request<pb::HashKvRequest>) -> Rpc<pb::HashKvResponse> {
        not_under_test()
    }
    /// Two chunks, "ab" then "c", with remaining_bytes counting down.
    async fn snapshot(&self, _: Request<pb::SnapshotRequest>) -> Rpc<Self::SnapshotStream> {
        let chunks = [(b"ab".to_vec(), 1), (b"c".to_vec(), 0)].map(|(blob, remaining_bytes)| {
            Ok(pb::SnapshotResponse {
                header: header(9),
                remaining_bytes,
                blob,
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
    async fn move_leader(&self, _: Request<pb::MoveLeaderRequest>) -> Rpc<pb::MoveLeaderResponse> {
        not_under_test()
    }
    async fn downgrade(&self, _: Request<pb::DowngradeRequest>) -> Rpc<pb::DowngradeResponse> {
        not_under_test()
    }
}

#[tonic::async_trait]
impl lock_server::Lock for Echo {
    async fn lock(&self, request: Request<lock::LockRequest>) -> Rpc<lock::LockResponse> {
        let req = request.into_inner();
        let mut key = req.name;
        key.extend_from_slice(format!("/{:x}", req.lease).as_bytes());
        Ok(Response::new(lock::LockResponse {
            header: header(1),
            key,
        }))
    }
    async fn unlock(&self, _: Request<lock::UnlockRequest>) -> Rpc<lock::UnlockResponse> {
        not_under_test()
    }
}

#[tonic::async_trait]
impl election_server::Election for Echo {
    type ObserveStream = BoxStream<election::LeaderResponse>;

    async fn campaign(&self, request: Request<election::CampaignRequest>) -> Rpc<election::CampaignResponse> {
        let req = request.into_inner();
        let leader = election::LeaderKey {
            name: req.name,
            key: req.value,
            rev: 3,
            lease: req.lease,
        };
        Ok(Response::new(election::CampaignResponse {
            header: header(3),
            leader: Some(leader),
        }))
    }
    async fn proclaim(&self, _: Request<election::ProclaimRequest>) -> Rpc<election::ProclaimResponse> {
        not_under_test()
    }
    async fn leader(&self, _: Request<election::LeaderRequest>) -> Rpc<election::LeaderResponse> {
        not_under_test()
    }
    async fn observe(&self, _: Request<election::LeaderRequest>) -> Rpc<Self::ObserveStream> {
        not_under_test()
    }
    async fn resign(&self, _: Request<election::ResignRequest>) -> Rpc<election::ResignResponse> {
        not_under_test()
    }
}

#[tonic::async_trait]
impl health_server::Health for Echo {
    type WatchStream = BoxStream<health::HealthCheckResponse>;

    async fn check(&self, request: Request<health::HealthCheckRequest>) -> Rpc<health::HealthCheckResponse> {
        use health::health_check_response::ServingStatus;
        let status = if request.into_inner().service.is_empty() {
            ServingStatus::Serving
        } else {
            ServingStatus::ServiceUnknown
        };
        Ok(Response::new(health::HealthCheckResponse {
            status: status as i32,
        }))
    }
    async fn watch(&self, _: Request<health::HealthCheckRequest>) -> Rpc<Self::WatchStream> {
        not_under_test()
    }
}

#[tokio::test]
async fn kv_range_unary_loopback() {
    let server = Recorder::new(kv_server::KvServer::new(Echo));
    let mut client = kv_client::KvClient::new(server.clone());
    let request = pb::RangeRequest {
        key: b"foo".to_vec(),
        revision: 5,
        ..Default::default()
    };
    let reply = client.range(request).await.expect("range").into_inner();
    assert_eq!(reply.header.expect("header").revision, 5);
    assert_eq!(reply.kvs[0].key, b"foo");
    assert_eq!(reply.count, 1);
    // A method the server does not answer still reaches it under etcd's path.
    let status = client
        .put(pb::PutRequest::default())
        .await
        .expect_err("put is not under test");
    assert_eq!(status.code(), tonic::Code::Internal);
    assert_eq!(server.paths(), ["/etcdserverpb.KV/Range", "/etcdserverpb.KV/Put"]);
}

#[tokio::test]
async fn watch_bidirectional_loopback() {
    let server = Recorder::new(watch_server::WatchServer::new(Echo));
    let mut client = watch_client::WatchClient::new(server.clone());
    let create = |watch_id| pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: b"k".to_vec(),
                watch_id,
                ..Default::default()
            },
        )),
    };
    let cancel = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CancelRequest(
            pb::WatchCancelRequest { watch_id: 7 },
        )),
    };
    let outbound = tokio_stream::iter([create(7), cancel, create(8)]);
    let mut inbound = client.watch(outbound).await.expect("watch").into_inner();
    let mut acked = Vec::new();
    while let Some(reply) = inbound.message().await.expect("stream item") {
        assert!(reply.created);
        acked.push(reply.watch_id);
    }
    assert_eq!(acked, [7, 8]);
    assert_eq!(server.paths(), ["/etcdserverpb.Watch/Watch"]);
}

#[tokio::test]
async fn lease_keep_alive_bidirectional_loopback() {
    let server = Recorder::new(lease_server::LeaseServer::new(Echo));
    let mut client = lease_client::LeaseClient::new(server.clone());
    let outbound = tokio_stream::iter([1, 2, 3].map(|id| pb::LeaseKeepAliveRequest { id }));
    let mut inbound = client
        .lease_keep_alive(outbound)
        .await
        .expect("keepalive")
        .into_inner();
    let mut ttls = Vec::new();
    while let Some(reply) = inbound.message().await.expect("stream item") {
        ttls.push((reply.id, reply.ttl));
    }
    assert_eq!(ttls, [(1, 10), (2, 20), (3, 30)]);
    assert_eq!(server.paths(), ["/etcdserverpb.Lease/LeaseKeepAlive"]);
}

#[tokio::test]
async fn snapshot_server_stream_loopback() {
    let server = Recorder::new(maintenance_server::MaintenanceServer::new(Echo));
    let mut client = maintenance_client::MaintenanceClient::new(server.clone());
    let mut inbound = client
        .snapshot(pb::SnapshotRequest {})
        .await
        .expect("snapshot")
        .into_inner();
    let mut blob = Vec::new();
    let mut remaining = Vec::new();
    while let Some(chunk) = inbound.message().await.expect("stream item") {
        blob.extend_from_slice(&chunk.blob);
        remaining.push(chunk.remaining_bytes);
    }
    assert_eq!(blob, b"abc");
    assert_eq!(remaining, [1, 0]);
    assert_eq!(server.paths(), ["/etcdserverpb.Maintenance/Snapshot"]);
}

#[tokio::test]
async fn lock_election_health_loopback() {
    let lock_service = Recorder::new(lock_server::LockServer::new(Echo));
    let reply = lock_client::LockClient::new(lock_service.clone())
        .lock(lock::LockRequest {
            name: b"mylock".to_vec(),
            lease: 0x1f,
        })
        .await
        .expect("lock")
        .into_inner();
    assert_eq!(reply.key, b"mylock/1f");
    assert_eq!(lock_service.paths(), ["/v3lockpb.Lock/Lock"]);

    let election_service = Recorder::new(election_server::ElectionServer::new(Echo));
    let request = election::CampaignRequest {
        name: b"e".to_vec(),
        lease: 4,
        value: b"me".to_vec(),
    };
    let reply = election_client::ElectionClient::new(election_service.clone())
        .campaign(request)
        .await
        .expect("campaign")
        .into_inner();
    let leader = reply.leader.expect("leader key");
    assert_eq!(
        (leader.name, leader.key, leader.rev, leader.lease),
        (b"e".to_vec(), b"me".to_vec(), 3, 4)
    );
    assert_eq!(election_service.paths(), ["/v3electionpb.Election/Campaign"]);

    use health::health_check_response::ServingStatus;
    let health_service = Recorder::new(health_server::HealthServer::new(Echo));
    let mut client = health_client::HealthClient::new(health_service.clone());
    let overall = client
        .check(health::HealthCheckRequest::default())
        .await
        .expect("check")
        .into_inner();
    assert_eq!(overall.status(), ServingStatus::Serving);
    let named = client
        .check(health::HealthCheckRequest {
            service: "nope".into(),
        })
        .await
        .expect("check")
        .into_inner();
    assert_eq!(named.status(), ServingStatus::ServiceUnknown);
    assert_eq!(
        health_service.paths(),
        ["/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Check"]
    );
}
