//! The same server through the Rust `etcd-client` crate: an independent etcd v3 client with its
//! own generated protos (built with the system `protoc`). KV with options, a txn, a watch stream, a
//! lease keep-alive stream, TimeToLive with keys, revoke, and an error text, on a 3-member cluster.

use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, LeaseTimeToLiveOptions, PutOptions, Txn, TxnOp,
    WatchOptions,
};
use yizhi_testkit::Cluster;

const DEADLINE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etcd_client_crate_reads_writes_watches_and_keeps_leases_alive() {
    let cluster = Cluster::start(3, &[]).await;
    let _logs = cluster.logs_on_panic();
    let mut client = Client::connect(cluster.client_addrs(), None)
        .await
        .expect("connect");

    // KV with prev_kv and a prefix read.
    client.put("ec/a", "1", None).await.expect("put a");
    let put = client
        .put("ec/a", "2", Some(PutOptions::new().with_prev_key()))
        .await
        .expect("put a again");
    assert_eq!(put.prev_key().expect("prev kv").value(), b"1");
    client.put("ec/b", "3", None).await.expect("put b");
    let got = client
        .get("ec/", Some(GetOptions::new().with_prefix()))
        .await
        .expect("get prefix");
    let pairs: Vec<(&[u8], &[u8])> = got.kvs().iter().map(|kv| (kv.key(), kv.value())).collect();
    assert_eq!(pairs, vec![(&b"ec/a"[..], &b"2"[..]), (&b"ec/b"[..], &b"3"[..])]);
    assert_eq!(got.kvs()[0].version(), 2);

    // A txn whose compare holds.
    let txn = Txn::new()
        .when([Compare::value("ec/a", CompareOp::Equal, "2")])
        .and_then([TxnOp::put("ec/c", "4", None)])
        .or_else([TxnOp::get("ec/a", None)]);
    assert!(client.txn(txn).await.expect("txn").succeeded());
    let c = client.get("ec/c", None).await.expect("get c");
    assert_eq!(c.kvs()[0].value(), b"4");

    // A watch stream sees puts and deletes in order.
    let mut stream = client
        .watch("ec/w", Some(WatchOptions::new().with_prefix()))
        .await
        .expect("watch");
    // The client does not wait for the server's `created`; events start after it.
    let created = tokio::time::timeout(DEADLINE, stream.message())
        .await
        .expect("created in time")
        .expect("watch stream")
        .expect("stream open");
    assert!(created.created(), "first watch response is not `created`");
    let watch_id = created.watch_id();
    client.put("ec/w1", "x", None).await.expect("put w1");
    client.put("ec/w2", "y", None).await.expect("put w2");
    client.delete("ec/w1", None).await.expect("delete w1");
    let mut seen = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while seen.len() < 3 {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(remaining, stream.message())
            .await
            .expect("watch events in time")
            .expect("watch stream")
            .expect("stream open");
        for event in message.events() {
            let key = String::from_utf8_lossy(event.kv().expect("kv").key()).to_string();
            seen.push((event.event_type(), key));
        }
    }
    assert_eq!(
        seen,
        vec![
            (EventType::Put, "ec/w1".to_string()),
            (EventType::Put, "ec/w2".to_string()),
            (EventType::Delete, "ec/w1".to_string()),
        ]
    );
    stream.cancel(watch_id).await.expect("cancel watch");

    // A lease kept alive past its TTL through the keep-alive stream, then revoked.
    let lease = client.lease_grant(2, None).await.expect("grant");
    let id = lease.id();
    client
        .put("ec/l", "leased", Some(PutOptions::new().with_lease(id)))
        .await
        .expect("put with lease");
    let (mut keeper, mut answers) = client.lease_keep_alive(id).await.expect("keep-alive stream");
    let kept_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < kept_until {
        keeper.keep_alive().await.expect("send keep-alive");
        let answer = tokio::time::timeout(DEADLINE, answers.message())
            .await
            .expect("keep-alive answer in time")
            .expect("keep-alive stream")
            .expect("stream open");
        assert_eq!(answer.id(), id);
        assert!(answer.ttl() > 0, "lease {id} not found while kept alive");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let still = client.get("ec/l", None).await.expect("get leased key");
    assert_eq!(still.kvs().len(), 1, "the kept-alive lease expired");
    let ttl = client
        .lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .expect("time to live");
    assert_eq!(ttl.keys(), [b"ec/l".to_vec()]);
    client.lease_revoke(id).await.expect("revoke");
    let gone = client.get("ec/l", None).await.expect("get after revoke");
    assert!(gone.kvs().is_empty(), "revoking the lease kept its key");

    // etcd's error text reaches the client.
    let error = client.put("", "v", None).await.expect_err("empty key accepted");
    assert!(
        error.to_string().contains("etcdserver: key is not provided"),
        "{error}"
    );
}
