//! Exactly-once writes on a real 3-member cluster: a tagged write repeated (on another member)
//! is answered from the session table and applied once; bad tags are refused; and
//! `yizhi-client`'s counter — increments as Puts, so the key's version counts them — ends at
//! exactly the number of acknowledged increments although the leader is killed mid-way and the
//! client retries whatever failed ambiguously.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use yizhi_client::{Client, ClientOptions, GetOptions, PutOptions};
use yizhi_proto::etcdserverpb as pb;
use yizhi_testkit::{Cluster, kv};

use yizhi_testkit::kv::with_metadata as tagged;

fn put_request(key: &str, value: &str) -> pb::PutRequest {
    pb::PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        prev_kv: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_tagged_write_is_answered_from_the_table_and_applied_once() {
    let (cluster, leader) = Cluster::start_with_leader(3, &[], Duration::from_secs(10)).await;
    let _logs = cluster.logs_on_panic();
    let follower = (leader + 1) % 3;
    let tag = [("yizhi-client-id", "77"), ("yizhi-seq", "1")];

    let first = cluster
        .kv_client(leader)
        .put(tagged(put_request("once/k", "a"), &tag))
        .await
        .expect("first put");
    assert_eq!(
        first
            .metadata()
            .get("yizhi-exactly-once")
            .map(|v| v.to_str().ok()),
        Some(Some("1"))
    );
    let first = first.into_inner();
    // Another write in between: a real second apply would now return it as prev_kv.
    cluster
        .kv_client(leader)
        .put(put_request("once/k", "b"))
        .await
        .expect("untagged put");
    // The "retry", through another member, with a different value even: it is the same request.
    let repeat = cluster
        .kv_client(follower)
        .put(tagged(put_request("once/k", "a"), &tag))
        .await
        .expect("repeated put")
        .into_inner();
    assert_eq!(
        repeat.header.expect("header").revision,
        first.header.expect("header").revision
    );
    assert_eq!(repeat.prev_kv, first.prev_kv);
    let now = kv::get(&mut cluster.kv_client(follower), "once/k").await;
    let kv = &now[0];
    assert_eq!(
        (kv.value.as_slice(), kv.version),
        (&b"b"[..], 2),
        "applied once: {kv:?}"
    );

    // A txn too, and the next sequence number applies normally.
    let txn = pb::TxnRequest {
        success: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(put_request("once/t", "x"))),
        }],
        ..Default::default()
    };
    let tag2 = [
        ("yizhi-client-id", "77"),
        ("yizhi-seq", "2"),
        ("yizhi-acked-below", "2"),
    ];
    let a = cluster
        .kv_client(leader)
        .txn(tagged(txn.clone(), &tag2))
        .await
        .expect("txn")
        .into_inner();
    let b = cluster
        .kv_client(follower)
        .txn(tagged(txn, &tag2))
        .await
        .expect("txn again")
        .into_inner();
    // The same answer (each member fills in its own member id in the header).
    let revision = |r: &pb::TxnResponse| r.header.as_ref().expect("header").revision;
    assert_eq!(
        (a.succeeded, a.responses.len(), revision(&a)),
        (b.succeeded, b.responses.len(), revision(&b))
    );
    // Below the acknowledged floor: refused, and nothing is applied.
    let status = cluster
        .kv_client(leader)
        .put(tagged(put_request("once/k", "c"), &tag))
        .await
        .expect_err("seq 1 is below the floor 2");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status}");
    assert!(status.message().contains("already acknowledged"), "{status}");

    for bad in [
        &[("yizhi-client-id", "77")][..],
        &[("yizhi-client-id", "0"), ("yizhi-seq", "1")][..],
        &[("yizhi-client-id", "77"), ("yizhi-seq", "one")][..],
    ] {
        let status = cluster
            .kv_client(leader)
            .put(tagged(put_request("once/k", "d"), bad))
            .await
            .expect_err("bad tag");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{bad:?}: {status}");
    }
    let after = kv::get(&mut cluster.kv_client(leader), "once/k").await;
    assert_eq!(after[0].version, 2, "refused writes applied nothing");
}

const COUNTERS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_ends_at_exactly_its_acknowledged_increments_across_a_leader_kill() {
    let (cluster, leader) = Cluster::start_with_leader(3, &[], Duration::from_secs(10)).await;
    let _logs = cluster.logs_on_panic();
    let options = ClientOptions {
        request_timeout: Duration::from_secs(3),
        max_attempts: 30,
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..Default::default()
    };
    // Every counter client starts on the leader, so the kill catches increments in flight.
    let mut endpoints = cluster.client_urls();
    endpoints.rotate_left(leader);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for worker in 0..COUNTERS {
        let client = Client::connect_with(&endpoints, options.clone())
            .await
            .expect("client");
        let (stop, acked) = (stop.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match client
                    .put("once/counter", format!("w{worker}"), PutOptions::new())
                    .await
                {
                    Ok(_) => {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures.push(e.to_string()),
                }
            }
            failures
        }));
    }
    while acked.load(Ordering::Relaxed) < 50 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cluster.kill(leader);
    let at_kill = acked.load(Ordering::Relaxed);
    while acked.load(Ordering::Relaxed) < at_kill + 100 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let failures = task.await.expect("worker");
        assert!(failures.is_empty(), "a write failed for good: {failures:?}");
    }
    let client = Client::connect(&cluster.client_urls()).await.expect("client");
    let counter = client
        .get("once/counter", GetOptions::new())
        .await
        .expect("get counter");
    let version = counter.kvs[0].version;
    assert_eq!(
        version as u64,
        acked.load(Ordering::Relaxed),
        "every acknowledged increment applied exactly once"
    );
}

fn scrape(addr: &str) -> String {
    let text = http_get(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    text
}

/// Sends `request` to the metrics port at `addr`; the whole answer.
fn http_get(addr: &str, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("metrics port");
    stream.write_all(request).expect("request");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("response");
    text
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_table_is_counted_in_the_metrics() {
    let port = yizhi_testkit::free_ports(1)[0];
    let addr = format!("127.0.0.1:{port}");
    let url = format!("http://{addr}");
    let cluster = Cluster::start(1, &["--listen-metrics-urls", &url]).await;
    let _logs = cluster.logs_on_panic();
    let before = scrape(&addr);
    assert_eq!(metric(&before, "yizhi_session_clients"), 0);
    for seq in ["1", "1", "2"] {
        cluster
            .kv_client(0)
            .put(tagged(
                put_request("m/k", "v"),
                &[("yizhi-client-id", "5"), ("yizhi-seq", seq)],
            ))
            .await
            .expect("tagged put");
    }
    let after = scrape(&addr);
    assert_eq!(metric(&after, "yizhi_session_clients"), 1);
    assert_eq!(metric(&after, "yizhi_session_duplicates_answered_total"), 1);
    assert!(metric(&after, "yizhi_session_stored_responses") >= 1);
    assert!(metric(&after, "yizhi_session_stored_bytes") > 0);
    assert_eq!(metric(&after, "yizhi_server_is_leader"), 1);
    assert!(metric(&after, "yizhi_server_applied_index") > metric(&before, "yizhi_server_applied_index"));
    let text = http_get(&addr, b"GET /secrets HTTP/1.1\r\n\r\n");
    assert!(text.starts_with("HTTP/1.1 404"), "{text}");
}
