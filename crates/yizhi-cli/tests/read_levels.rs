//! Per-read consistency levels through gRPC metadata (`yizhi-consistency`,
//! `yizhi-max-staleness-ms`) on a real 3-member cluster: what each level answers when the member
//! is current, and what it does once the member has lost its quorum — serializable still answers,
//! a bounded read answers only while its bound covers the last completed read barrier, a
//! linearizable read refuses.

use std::time::{Duration, Instant};

use tonic::Request;
use yizhi_proto::etcdserverpb as pb;
use yizhi_testkit::{Cluster, kv};

fn get(key: &str, metadata: &[(&'static str, &str)]) -> Request<pb::RangeRequest> {
    kv::with_metadata(kv::range_request(key), metadata)
}

fn value_of(response: &pb::RangeResponse) -> Option<String> {
    response
        .kvs
        .first()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_level_reads_a_write_acknowledged_before_it_and_bad_metadata_is_refused() {
    let (cluster, leader) = Cluster::start_with_leader(3, &[], Duration::from_secs(10)).await;
    let _logs = cluster.logs_on_panic();
    let mut on_leader = cluster.kv_client(leader);
    let follower = (leader + 1) % 3;
    let mut on_follower = cluster.kv_client(follower);

    let revision = kv::put(&mut on_leader, "level/k", "v1").await;
    for metadata in [
        &[][..],
        &[("yizhi-consistency", "linearizable")][..],
        &[("yizhi-consistency", "bounded"), ("yizhi-max-staleness-ms", "0")][..],
        &[("yizhi-max-staleness-ms", "0")][..],
    ] {
        let response = on_follower
            .range(get("level/k", metadata))
            .await
            .unwrap_or_else(|e| panic!("{metadata:?}: {e}"))
            .into_inner();
        assert_eq!(value_of(&response).as_deref(), Some("v1"), "{metadata:?}");
        let served = response.header.expect("header").revision;
        assert!(
            served >= revision,
            "{metadata:?}: served {served} < written {revision}"
        );
    }
    // A serializable read may be stale, but on the leader that wrote it the write is applied.
    let serializable = get("level/k", &[("yizhi-consistency", "serializable")]);
    let response = on_leader.range(serializable).await.expect("serializable get");
    assert_eq!(value_of(response.get_ref()).as_deref(), Some("v1"));

    for (metadata, text) in [
        (
            &[("yizhi-consistency", "strong")][..],
            "must be linearizable, serializable or bounded",
        ),
        (
            &[("yizhi-consistency", "bounded")][..],
            "bounded needs yizhi-max-staleness-ms",
        ),
        (
            &[("yizhi-max-staleness-ms", "soon")][..],
            "whole number of milliseconds",
        ),
    ] {
        let status = on_follower
            .range(get("level/k", metadata))
            .await
            .expect_err("bad metadata");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{metadata:?}");
        assert!(
            status.message().contains(text),
            "{metadata:?}: {}",
            status.message()
        );
    }
    // The member keeps serving after refusing.
    on_follower
        .range(get("level/k", &[]))
        .await
        .expect("get after refusals");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_without_quorum_serves_serializable_and_fresh_bounded_reads_only() {
    let (cluster, leader) = Cluster::start_with_leader(3, &[], Duration::from_secs(10)).await;
    let _logs = cluster.logs_on_panic();
    let survivor = (leader + 1) % 3;
    let mut kv = cluster.kv_client(survivor);
    kv::put(&mut kv, "level/q", "before").await;
    // A linearizable read completes a barrier on the survivor: bounded reads may lean on it.
    kv.range(get("level/q", &[])).await.expect("linearizable get");
    let barrier_done = Instant::now();

    for index in 0..3 {
        if index != survivor {
            cluster.kill(index);
        }
    }
    let generous = [("yizhi-max-staleness-ms", "600000")];
    let response = kv
        .range(get("level/q", &generous))
        .await
        .expect("a bounded read within its bound answers without a quorum")
        .into_inner();
    assert_eq!(value_of(&response).as_deref(), Some("before"));
    // The same through yizhi-client's read option.
    let client = yizhi_client::Client::connect(&[cluster.client_url(survivor)])
        .await
        .expect("client");
    let options = yizhi_client::GetOptions::new().bounded_staleness(Duration::from_secs(600));
    let response = client
        .get("level/q", options)
        .await
        .expect("bounded get through the client");
    assert_eq!(value_of(&response).as_deref(), Some("before"));
    let response = kv
        .range(get("level/q", &[("yizhi-consistency", "serializable")]))
        .await
        .expect("a serializable read answers without a quorum")
        .into_inner();
    assert_eq!(value_of(&response).as_deref(), Some("before"));

    // A bound shorter than the time since the last barrier needs a new barrier, which cannot
    // complete without a quorum; neither can a linearizable read.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let elapsed_ms = barrier_done.elapsed().as_millis().to_string();
    let tight = [("yizhi-max-staleness-ms", "100")];
    assert!(elapsed_ms.parse::<u64>().expect("ms") > 100);
    for metadata in [&tight[..], &[][..]] {
        let status = kv
            .range(get("level/q", metadata))
            .await
            .expect_err("no quorum, no fresh barrier");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{metadata:?}: {status}");
    }
}
