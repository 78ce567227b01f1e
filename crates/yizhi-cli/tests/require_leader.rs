//! etcd's `WithRequireLeader` (gRPC metadata `hasleader: true`) on watches: a member that has lost
//! its leader ends such a stream with Unavailable "etcdserver: no leader" (so the client moves to
//! a member that still hears the leader) and refuses new ones; a stream without the metadata
//! stays open, as in etcd.
//!
//! And the rest of issue 13's "while there": a member cut off from the leader answers new writes
//! and linearizable reads with "etcdserver: no leader" as soon as it knows it has none (within an
//! election timeout of losing it), not at the client's deadline, so the client moves on.

use std::time::Duration;

use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;
use yizhi_proto::etcdserverpb as pb;
use yizhi_proto::etcdserverpb::kv_client::KvClient;
use yizhi_proto::etcdserverpb::watch_client::WatchClient;
use yizhi_testkit::Cluster;
use yizhi_testkit::peer_proxy::LinkState;

/// The deadline the client gives its calls on a member without a leader: the answer must come
/// long before it ("no leader"), not at it ("request timed out").
const LONG_CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

/// Three leader checks of one election timeout each, after the election timeout that makes the
/// member notice; generous for a loaded 2-core machine.
const ENDED_WITHIN: Duration = Duration::from_secs(30);

async fn open_watch(
    url: &str,
    require_leader: bool,
) -> Result<tonic::Streaming<pb::WatchResponse>, tonic::Status> {
    let channel = Channel::from_shared(url.to_string())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let create = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: b"require-leader".to_vec(),
                ..Default::default()
            },
        )),
    };
    let mut request = tonic::Request::new(tokio_stream::iter([create]).chain(tokio_stream::pending()));
    if require_leader {
        request
            .metadata_mut()
            .insert("hasleader", "true".parse().expect("ascii"));
    }
    let mut stream = WatchClient::new(channel).watch(request).await?.into_inner();
    let created = stream.next().await.expect("an answer")?;
    assert!(created.created, "{created:?}");
    Ok(stream)
}

#[test]
fn a_member_without_a_leader_ends_leader_requiring_watches_and_refuses_new_ones() {
    yizhi_testkit::block_on(async {
        let (cluster, leader) = Cluster::start_with_leader(3, &[], Duration::from_secs(20)).await;
        let _logs = cluster.logs_on_panic();
        let follower = (0..3).find(|&i| i != leader).expect("a follower");
        let url = cluster.client_url(follower);
        let mut requiring = open_watch(&url, true)
            .await
            .expect("opened while there is a leader");
        let mut plain = open_watch(&url, false).await.expect("opened");
        for other in (0..3).filter(|&i| i != follower) {
            cluster.kill(other);
        }
        let ended = tokio::time::timeout(ENDED_WITHIN, requiring.next())
            .await
            .expect("the leader-requiring stream ends");
        let status = ended.expect("an answer").expect_err("ended with an error");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert_eq!(status.message(), "etcdserver: no leader");
        let refused = open_watch(&url, true)
            .await
            .expect_err("refused without a leader");
        assert_eq!(
            (refused.code(), refused.message()),
            (Code::Unavailable, "etcdserver: no leader")
        );
        // Without the metadata the stream stays, as etcd's does.
        let still_open = tokio::time::timeout(Duration::from_millis(200), plain.next()).await;
        assert!(still_open.is_err(), "the plain watch ended: {still_open:?}");
    });
}

yizhi_testkit::test_each_engine!(
    raft_a_member_cut_off_from_the_leader_refuses_writes_and_reads_at_once,
    paxos_a_member_cut_off_from_the_leader_refuses_writes_and_reads_at_once,
    cut_off_member_refuses_at_once
);

/// Holds every byte between one follower and the others (a black hole, as `iptables -j DROP`:
/// connections stay open, so no connection-lost hint helps), waits until the follower reports no
/// leader, then checks that a Put and a linearizable Get with a long deadline are refused with
/// "no leader" before it.
async fn cut_off_member_refuses_at_once(engine_flags: &[&str]) {
    let (cluster, proxy) = Cluster::start_behind_peer_proxy(3, engine_flags).await;
    let _logs = cluster.logs_on_panic();
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let follower = (0..3).find(|&i| i != leader).expect("a follower");
    let url = cluster.client_url(follower);
    proxy.isolate(follower, LinkState::Held);
    let lost_by = tokio::time::Instant::now() + ENDED_WITHIN;
    loop {
        let status = yizhi_testkit::status(&url)
            .await
            .expect("the cut-off member answers Status");
        if status.leader == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < lost_by,
            "the member still names leader {}",
            status.leader
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let channel = Channel::from_shared(url)
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut kv = KvClient::new(channel);
    let mut put = tonic::Request::new(pb::PutRequest {
        key: b"cut-off".to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    });
    put.set_timeout(LONG_CLIENT_TIMEOUT);
    let mut get = tonic::Request::new(pb::RangeRequest {
        key: b"cut-off".to_vec(),
        ..Default::default()
    });
    get.set_timeout(LONG_CLIENT_TIMEOUT);
    let put = kv.put(put).await.expect_err("no leader, no write");
    let get = kv.range(get).await.expect_err("no leader, no linearizable read");
    for (what, status) in [("put", put), ("get", get)] {
        assert_eq!(
            (status.code(), status.message()),
            (Code::Unavailable, "etcdserver: no leader"),
            "{what}: {status:?}"
        );
    }
    proxy.heal_all();
}
