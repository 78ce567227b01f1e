//! `etcdserverpb.Cluster`: MemberList from the static cluster spec. Membership is fixed at
//! bootstrap (`--initial-cluster`), so MemberAdd/Remove/Update/Promote are refused.

use tonic::{Request, Response};
use yizhi_proto::etcdserverpb as pb;

use super::{Answer, Api};

const MEMBERSHIP_UNSUPPORTED: &str = "membership changes are not supported yet";

#[derive(Debug)]
pub struct ClusterService {
    api: Api,
}

impl ClusterService {
    pub fn new(api: Api) -> Self {
        ClusterService { api }
    }

    /// Every member of the spec. Client URLs are what each member announced when it connected
    /// to us (ours from our own flags): empty for a peer we have not heard from yet. They are
    /// listed as `host:port`, without `http://`: etcdctl 3.4's `--cluster` commands dial each
    /// listed URL with the whole URL as the HTTP/2 `:authority`, which grpc-go servers ignore
    /// but our HTTP/2 server (h2) refuses as malformed; `host:port` is an endpoint every etcd
    /// client accepts as plain-text gRPC, which is all we serve.
    fn members(&self) -> Vec<pb::Member> {
        let node = &self.api.node;
        node.cluster
            .members
            .iter()
            .map(|member| pb::Member {
                id: member.id,
                name: member.name.clone(),
                peer_ur_ls: member.peer_urls.clone(),
                client_ur_ls: node
                    .directory
                    .client_urls(member.id)
                    .map(|urls| {
                        urls.split(',')
                            .map(str::trim)
                            .filter(|url| !url.is_empty())
                            .map(|url| url.strip_prefix("http://").unwrap_or(url).to_string())
                            .collect()
                    })
                    .unwrap_or_default(),
                is_learner: false,
            })
            .collect()
    }
}

// MemberList answers from the spec; every membership change is refused.
super::impl_refusing! {
    ClusterService: pb::cluster_server::Cluster {
        async fn member_list(&self, request: Request<pb::MemberListRequest>) -> Answer<pb::MemberListResponse> {
            let deadline = self.api.deadline(&request);
            if request.into_inner().linearizable {
                self.api.read_barrier(deadline).await?;
            }
            Ok(Response::new(pb::MemberListResponse {
                header: Some(self.api.header(self.api.current_revision())),
                members: self.members(),
            }))
        }
    }
    refused with MEMBERSHIP_UNSUPPORTED => {
        member_add: pb::MemberAddRequest => pb::MemberAddResponse;
        member_remove: pb::MemberRemoveRequest => pb::MemberRemoveResponse;
        member_update: pb::MemberUpdateRequest => pb::MemberUpdateResponse;
        member_promote: pb::MemberPromoteRequest => pb::MemberPromoteResponse;
    }
}
