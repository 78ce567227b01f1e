//! Watch and Lease services end to end: real `yizhi server` processes on loopback, driven by the
//! generated tonic clients. Each test starts its own member(s) on free ports and stops them when
//! it ends (also on panic). Waits poll with generous deadlines: the machine has 2 cores shared
//! with parallel tests and builds.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Streaming};
use yizhi_proto::etcdserverpb as pb;
use yizhi_proto::etcdserverpb::kv_client::KvClient;
use yizhi_proto::etcdserverpb::lease_client::LeaseClient;
use yizhi_proto::etcdserverpb::watch_client::WatchClient;
use yizhi_proto::mvccpb;

/// Longest wait for one expected watch response.
const RESPONSE_DEADLINE: Duration = Duration::from_secs(20);
const PUT: i32 = mvccpb::event::EventType::Put as i32;
const DELETE: i32 = mvccpb::event::EventType::Delete as i32;

// ---------------------------------------------------------------------------------------------
// Harness

/// Members started by yizhi-testkit, with the server's default timeouts (heartbeat 100 ms,
/// election 1 s), which the lease TTLs here are measured against.
struct Cluster(yizhi_testkit::Cluster);

/// After the harness's short test timeouts: the last flag wins.
const DEFAULT_TIMEOUT_FLAGS: [&str; 2] = ["--heartbeat-interval=100", "--election-timeout=1000"];

impl Cluster {
    async fn start(size: usize, extra_flags: &[&str]) -> Cluster {
        let mut flags = DEFAULT_TIMEOUT_FLAGS.to_vec();
        flags.extend_from_slice(extra_flags);
        Cluster(yizhi_testkit::Cluster::start(size, &flags).await)
    }

    /// One member, and a KV client of it.
    async fn single(extra_flags: &[&str]) -> (Cluster, KvClient<Channel>) {
        let cluster = Cluster::start(1, extra_flags).await;
        let kv = cluster.kv(0).await;
        (cluster, kv)
    }

    async fn channel(&self, member: usize) -> Channel {
        Channel::from_shared(self.0.client_url(member))
            .expect("url")
            .connect()
            .await
            .expect("connect")
    }

    async fn kv(&self, member: usize) -> KvClient<Channel> {
        KvClient::new(self.channel(member).await)
    }

    async fn lease(&self, member: usize) -> LeaseClient<Channel> {
        LeaseClient::new(self.channel(member).await)
    }

    async fn watch(&self, member: usize) -> WatchStream {
        self.watch_with_window(member, None).await
    }

    /// A watch stream whose HTTP/2 receive windows are `window_bytes` (hyper's default if None).
    async fn watch_with_window(&self, member: usize, window_bytes: Option<u32>) -> WatchStream {
        let channel = Channel::from_shared(self.0.client_url(member))
            .expect("url")
            .initial_stream_window_size(window_bytes)
            .initial_connection_window_size(window_bytes)
            .connect()
            .await
            .expect("connect");
        let (tx, rx) = mpsc::channel(16);
        let mut client = WatchClient::new(channel);
        let inbound = client
            .watch(ReceiverStream::new(rx))
            .await
            .expect("open watch stream")
            .into_inner();
        WatchStream { tx, inbound }
    }
}

/// A client's watch stream: requests out, responses in.
struct WatchStream {
    tx: mpsc::Sender<pb::WatchRequest>,
    inbound: Streaming<pb::WatchResponse>,
}

impl WatchStream {
    async fn send(&self, request: pb::watch_request::RequestUnion) {
        self.tx
            .send(pb::WatchRequest {
                request_union: Some(request),
            })
            .await
            .expect("watch stream open");
    }

    async fn create(&self, create: pb::WatchCreateRequest) {
        self.send(pb::watch_request::RequestUnion::CreateRequest(create))
            .await;
    }

    /// Creates a watch and returns its `created` response.
    async fn create_ok(&mut self, create: pb::WatchCreateRequest) -> pb::WatchResponse {
        self.create(create).await;
        let created = self.next().await;
        assert!(created.created && !created.canceled, "not created: {created:?}");
        assert!(created.events.is_empty());
        created
    }

    async fn next(&mut self) -> pb::WatchResponse {
        match tokio::time::timeout(RESPONSE_DEADLINE, self.inbound.next()).await {
            Ok(Some(Ok(response))) => response,
            Ok(other) => panic!("watch stream ended: {other:?}"),
            Err(_) => panic!("no watch response within {RESPONSE_DEADLINE:?}"),
        }
    }
}

fn watch_prefix(prefix: &str, start_revision: i64) -> pb::WatchCreateRequest {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().expect("non-empty prefix") += 1;
    pb::WatchCreateRequest {
        key: prefix.as_bytes().to_vec(),
        range_end: end,
        start_revision,
        ..Default::default()
    }
}

async fn grant(lease: &mut LeaseClient<Channel>, ttl: i64) -> pb::LeaseGrantResponse {
    lease
        .lease_grant(pb::LeaseGrantRequest { ttl, id: 0 })
        .await
        .expect("grant")
        .into_inner()
}

fn revision(header: &Option<pb::ResponseHeader>) -> i64 {
    header.as_ref().expect("response header").revision
}

use yizhi_testkit::kv::{get, put_leased as put};

/// One txn putting `burst/t000`..`burst/t099`, all at one revision; returns that revision.
async fn txn_put_100(kv: &mut KvClient<Channel>, value: &str) -> i64 {
    let success: Vec<pb::RequestOp> = (0..100)
        .map(|i| pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: format!("burst/t{i:03}").into_bytes(),
                value: value.as_bytes().to_vec(),
                ..Default::default()
            })),
        })
        .collect();
    let txn = kv
        .txn(pb::TxnRequest {
            success,
            ..Default::default()
        })
        .await
        .expect("txn")
        .into_inner();
    revision(&txn.header)
}

/// An event as the tests compare them: (revision, type, key, value).
type Seen = (i64, i32, String, String);

/// A response's watch id and what its events say.
fn id_and_events(response: &pb::WatchResponse) -> (i64, Vec<Seen>) {
    (response.watch_id, response.events.iter().map(seen).collect())
}

fn seen(event: &mvccpb::Event) -> Seen {
    let kv = event.kv.as_ref().expect("event kv");
    (
        kv.mod_revision,
        event.r#type,
        String::from_utf8_lossy(&kv.key).into_owned(),
        String::from_utf8_lossy(&kv.value).into_owned(),
    )
}

// ---------------------------------------------------------------------------------------------
// Watch

/// A watch from a historical revision that the client does not read during a burst of writes
/// (big txns overflow the hub's buffer, so it catches up from history) still gets every event
/// exactly once, in revision order, one response per revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn historical_prefix_watch_sees_every_event_once_in_order_across_a_burst() {
    let (cluster, mut kv) = Cluster::single(&[]).await;
    let mut expected: Vec<Seen> = Vec::new();
    let first = put(&mut kv, "burst/a", "0", 0).await;
    expected.push((first, PUT, "burst/a".into(), "0".into()));
    put(&mut kv, "other", "not watched", 0).await;
    let rev = put(&mut kv, "burst/b", "0", 0).await;
    expected.push((rev, PUT, "burst/b".into(), "0".into()));

    let mut watch = cluster.watch_with_window(0, Some(65_535)).await;
    let created = watch.create_ok(watch_prefix("burst/", first)).await;
    assert_eq!(created.watch_id, 0, "the first auto id is 0, as in etcd");

    // The burst, written while the client reads nothing through a 64 KiB window: big txns fill
    // the window and the server's send buffer, single puts fill the stream's response queue,
    // then small txns (100 events at one revision each) overflow the hub's per-watcher buffer.
    for (txns, value_bytes, puts) in [(6, 1000, 100), (15, 10, 0)] {
        for _ in 0..txns {
            let value = "v".repeat(value_bytes);
            let rev = txn_put_100(&mut kv, &value).await;
            expected.extend((0..100).map(|i| (rev, PUT, format!("burst/t{i:03}"), value.clone())));
            put(&mut kv, "other", "not watched", 0).await;
        }
        for round in 0..puts {
            let rev = put(&mut kv, "burst/a", &round.to_string(), 0).await;
            expected.push((rev, PUT, "burst/a".into(), round.to_string()));
        }
    }
    let deleted = yizhi_testkit::kv::delete(&mut kv, "burst/b").await;
    let last = revision(&deleted.header);
    expected.push((last, DELETE, "burst/b".into(), String::new()));

    let mut got: Vec<Seen> = Vec::new();
    while got.last().map(|s| s.0) != Some(last) {
        let response = watch.next().await;
        assert_eq!(response.watch_id, 0);
        assert!(!response.canceled && !response.created, "{response:?}");
        assert!(!response.events.is_empty(), "an empty response: {response:?}");
        let rev = revision(&response.header);
        assert!(
            response.events.iter().all(|e| seen(e).0 == rev),
            "a response mixes revisions or mislabels them"
        );
        got.extend(response.events.iter().map(seen));
        assert!(got.len() <= expected.len(), "more events than written");
    }
    assert_eq!(got.len(), expected.len());
    assert_eq!(got, expected);
}

/// Several watches on one stream, client-chosen and automatic ids, a refused duplicate id, a
/// NOPUT filter, cancel, and a stream-wide progress request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_share_a_stream_and_cancel_one_by_one() {
    let (cluster, mut kv) = Cluster::single(&[]).await;
    let mut watch = cluster.watch(0).await;
    let single = pb::WatchCreateRequest {
        key: b"a".to_vec(),
        watch_id: 7,
        ..Default::default()
    };
    assert_eq!(watch.create_ok(single.clone()).await.watch_id, 7);
    assert_eq!(watch.create_ok(watch_prefix("b", 0)).await.watch_id, 0);
    let deletes_only = pb::WatchCreateRequest {
        filters: vec![pb::watch_create_request::FilterType::Noput as i32],
        ..watch_prefix("b", 0)
    };
    assert_eq!(watch.create_ok(deletes_only).await.watch_id, 1);

    watch.create(single).await;
    let duplicate = watch.next().await;
    assert!(duplicate.created && duplicate.canceled, "{duplicate:?}");
    assert_eq!(duplicate.watch_id, -1);
    assert_eq!(
        duplicate.cancel_reason,
        "mvcc: duplicate watch ID provided on the WatchStream"
    );

    let rev_a = put(&mut kv, "a", "1", 0).await;
    let response = watch.next().await;
    assert_eq!(
        id_and_events(&response),
        (7, vec![(rev_a, PUT, "a".into(), "1".into())])
    );
    let rev_b = put(&mut kv, "b1", "1", 0).await;
    let response = watch.next().await;
    assert_eq!(
        id_and_events(&response),
        (0, vec![(rev_b, PUT, "b1".into(), "1".into())])
    );

    watch
        .send(pb::watch_request::RequestUnion::CancelRequest(
            pb::WatchCancelRequest { watch_id: 7 },
        ))
        .await;
    let cancelled = watch.next().await;
    assert!(cancelled.canceled && !cancelled.created, "{cancelled:?}");
    assert_eq!(cancelled.watch_id, 7);

    put(&mut kv, "a", "2", 0).await; // Nobody watches it now.
    let deleted = yizhi_testkit::kv::delete(&mut kv, "b1").await;
    let rev_del = revision(&deleted.header);
    let mut by_watch = std::collections::BTreeMap::new();
    for _ in 0..2 {
        let response = watch.next().await;
        let events: Vec<Seen> = response.events.iter().map(seen).collect();
        assert!(by_watch.insert(response.watch_id, events).is_none());
    }
    let delete_event = vec![(rev_del, DELETE, "b1".to_string(), String::new())];
    assert_eq!(
        by_watch,
        [(0, delete_event.clone()), (1, delete_event)]
            .into_iter()
            .collect()
    );

    watch
        .send(pb::watch_request::RequestUnion::ProgressRequest(
            pb::WatchProgressRequest {},
        ))
        .await;
    let progress = watch.next().await;
    assert_eq!(progress.watch_id, -1, "{progress:?}");
    assert!(progress.events.is_empty() && !progress.canceled && !progress.created);
    assert_eq!(revision(&progress.header), rev_del);
}

/// A watch whose start revision was compacted is created, then cancelled with the compact
/// revision; `prev_kv` carries the previous value; a big revision is fragmented on request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_start_is_cancelled_prev_kv_is_carried_and_big_responses_fragment() {
    let (cluster, mut kv) = Cluster::single(&["--max-request-bytes", "1024"]).await;
    let first = put(&mut kv, "c", "1", 0).await;
    let compact_at = put(&mut kv, "c", "2", 0).await;
    kv.compact(pb::CompactionRequest {
        revision: compact_at,
        physical: false,
    })
    .await
    .expect("compact");

    let mut watch = cluster.watch(0).await;
    let created = watch
        .create_ok(pb::WatchCreateRequest {
            key: b"c".to_vec(),
            start_revision: first,
            ..Default::default()
        })
        .await;
    let cancelled = watch.next().await;
    assert_eq!(cancelled.watch_id, created.watch_id);
    assert!(cancelled.canceled, "{cancelled:?}");
    assert_eq!(cancelled.compact_revision, compact_at);
    assert!(cancelled.events.is_empty());

    let with_prev = pb::WatchCreateRequest {
        key: b"c".to_vec(),
        prev_kv: true,
        ..Default::default()
    };
    let id = watch.create_ok(with_prev).await.watch_id;
    let rev = put(&mut kv, "c", "3", 0).await;
    let response = watch.next().await;
    assert_eq!(response.watch_id, id);
    assert_eq!(
        response.events.iter().map(seen).collect::<Vec<_>>(),
        vec![(rev, PUT, "c".into(), "3".into())]
    );
    let prev = response.events[0].prev_kv.as_ref().expect("prev_kv");
    assert_eq!(
        (prev.value.as_slice(), prev.mod_revision),
        (&b"2"[..], compact_at)
    );

    // Ten 300-byte values deleted at one revision: ~3 KiB of prev_kvs against a 1 KiB limit.
    for i in 0..10 {
        put(&mut kv, &format!("f/{i}"), &"x".repeat(300), 0).await;
    }
    let fragmenting = pb::WatchCreateRequest {
        prev_kv: true,
        fragment: true,
        ..watch_prefix("f/", 0)
    };
    let id = watch.create_ok(fragmenting).await.watch_id;
    kv.delete_range(pb::DeleteRangeRequest {
        key: b"f/".to_vec(),
        range_end: b"f0".to_vec(),
        ..Default::default()
    })
    .await
    .expect("delete range");
    let mut keys = Vec::new();
    let mut parts = 0;
    loop {
        let part = watch.next().await;
        assert_eq!(part.watch_id, id);
        parts += 1;
        keys.extend(part.events.iter().map(|e| seen(e).2));
        if !part.fragment {
            break;
        }
    }
    assert!(parts >= 3, "{parts} fragments");
    let expected: Vec<String> = (0..10).map(|i| format!("f/{i}")).collect();
    assert_eq!(keys, expected);
}

/// A quiet `progress_notify` watch hears the current revision after one interval (10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_progress_notify_watch_hears_the_revision() {
    let (cluster, mut kv) = Cluster::single(&[]).await;
    let rev = put(&mut kv, "p", "1", 0).await;
    let mut watch = cluster.watch(0).await;
    let id = watch
        .create_ok(pb::WatchCreateRequest {
            key: b"p".to_vec(),
            progress_notify: true,
            ..Default::default()
        })
        .await
        .watch_id;
    let progress = watch.next().await;
    assert_eq!(progress.watch_id, id);
    assert!(progress.events.is_empty() && !progress.canceled, "{progress:?}");
    assert_eq!(revision(&progress.header), rev);
}

// ---------------------------------------------------------------------------------------------
// Lease

/// Grant → put with the lease → TimeToLive with keys → Leases → revoke: the keys are gone, a
/// watcher saw both deletes at one revision, and the unknown lease gets etcd's answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_lease_deletes_its_keys_and_watchers_see_it() {
    let (cluster, mut kv) = Cluster::single(&[]).await;
    let mut lease = cluster.lease(0).await;
    let granted = grant(&mut lease, 60).await;
    assert_eq!(granted.ttl, 60);
    let id = granted.id;
    assert!(id > 0);
    put(&mut kv, "l/1", "a", id).await;
    put(&mut kv, "l/2", "b", id).await;

    let ttl = lease
        .lease_time_to_live(pb::LeaseTimeToLiveRequest { id, keys: true })
        .await
        .expect("time to live")
        .into_inner();
    assert_eq!((ttl.id, ttl.granted_ttl), (id, 60));
    assert!((55..=60).contains(&ttl.ttl), "ttl {}", ttl.ttl);
    assert_eq!(ttl.keys, vec![b"l/1".to_vec(), b"l/2".to_vec()]);
    let leases = lease
        .lease_leases(pb::LeaseLeasesRequest {})
        .await
        .expect("leases")
        .into_inner();
    assert!(leases.leases.iter().any(|l| l.id == id));

    let mut watch = cluster.watch(0).await;
    watch.create_ok(watch_prefix("l/", 0)).await;
    let revoked = lease
        .lease_revoke(pb::LeaseRevokeRequest { id })
        .await
        .expect("revoke")
        .into_inner();
    let rev = revision(&revoked.header);
    let response = watch.next().await;
    assert_eq!(
        response.events.iter().map(seen).collect::<Vec<_>>(),
        vec![
            (rev, DELETE, "l/1".into(), String::new()),
            (rev, DELETE, "l/2".into(), String::new())
        ]
    );
    assert!(get(&mut kv, "l/1").await.is_empty());
    assert!(get(&mut kv, "l/2").await.is_empty());

    let gone = lease
        .lease_time_to_live(pb::LeaseTimeToLiveRequest { id, keys: true })
        .await
        .expect("time to live of a revoked lease")
        .into_inner();
    assert_eq!(gone.ttl, -1, "etcd answers TTL -1 for an unknown lease");
    let error = lease
        .lease_revoke(pb::LeaseRevokeRequest { id })
        .await
        .expect_err("second revoke");
    assert_eq!(error.code(), Code::NotFound);
    assert_eq!(error.message(), "etcdserver: requested lease not found");

    // One stream serves every lease of a client; answers are matched by id.
    let other = grant(&mut lease, 30).await.id;
    let (tx, rx) = mpsc::channel(2);
    let mut answers = lease
        .lease_keep_alive(ReceiverStream::new(rx))
        .await
        .expect("keep-alive stream")
        .into_inner();
    tx.send(pb::LeaseKeepAliveRequest { id }).await.expect("send");
    tx.send(pb::LeaseKeepAliveRequest { id: other })
        .await
        .expect("send");
    let mut ttls = std::collections::BTreeMap::new();
    for _ in 0..2 {
        let answer = answers.next().await.expect("an answer").expect("not an error");
        ttls.insert(answer.id, answer.ttl);
    }
    // etcd answers TTL 0 for an unknown lease.
    assert_eq!(ttls, [(id, 0), (other, 30)].into_iter().collect());
    drop(tx);
    assert!(
        answers.next().await.is_none(),
        "the stream ends when the client is done"
    );
}

/// A keep-alive stream keeps a 3 s lease (and its key) alive for twice its TTL; once the client
/// stops, the lessor revokes it and the key disappears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alives_hold_a_lease_past_its_ttl_then_it_expires() {
    let (cluster, mut kv) = Cluster::single(&[]).await;
    let mut lease = cluster.lease(0).await;
    let id = grant(&mut lease, 3).await.id;
    put(&mut kv, "ka", "alive", id).await;

    let (tx, rx) = mpsc::channel(4);
    let mut answers = lease
        .lease_keep_alive(ReceiverStream::new(rx))
        .await
        .expect("keep-alive stream")
        .into_inner();
    let kept_until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < kept_until {
        tx.send(pb::LeaseKeepAliveRequest { id }).await.expect("send");
        let answer = tokio::time::timeout(RESPONSE_DEADLINE, answers.next())
            .await
            .expect("keep-alive answered in time")
            .expect("an answer")
            .expect("not an error");
        assert_eq!((answer.id, answer.ttl), (id, 3));
        assert_eq!(
            get(&mut kv, "ka").await.len(),
            1,
            "key expired despite keep-alives"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    drop(tx);

    let deadline = Instant::now() + Duration::from_secs(20);
    while !get(&mut kv, "ka").await.is_empty() {
        assert!(Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gone = lease
        .lease_time_to_live(pb::LeaseTimeToLiveRequest { id, keys: false })
        .await
        .expect("time to live")
        .into_inner();
    assert_eq!(gone.ttl, -1);
}

/// On a 3-member cluster, a 2 s lease granted through each member (so at least two of the
/// grants, puts and reads go through followers) expires: its key vanishes on every member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_expire_on_a_three_member_cluster_asked_from_followers() {
    let cluster = Cluster::start(3, &[]).await;
    let mut leases = Vec::new();
    for member in 0..3 {
        let mut lease = cluster.lease(member).await;
        let id = grant(&mut lease, 2).await.id;
        let mut kv = cluster.kv(member).await;
        put(&mut kv, &format!("exp/{member}"), "v", id).await;
        leases.push(id);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    for member in 0..3 {
        let mut kv = cluster.kv(member).await;
        for key in 0..3 {
            let key = format!("exp/{key}");
            while !get(&mut kv, &key).await.is_empty() {
                assert!(Instant::now() < deadline, "{key} still there on member {member}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let mut lease = cluster.lease(member).await;
        let listed = lease
            .lease_leases(pb::LeaseLeasesRequest {})
            .await
            .expect("leases")
            .into_inner();
        assert!(
            listed.leases.iter().all(|l| !leases.contains(&l.id)),
            "member {member} still lists {:?}",
            listed.leases
        );
    }
}
