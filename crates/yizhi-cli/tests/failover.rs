//! kill -9 of the leader of a real 3-member cluster under load: writes resume on a new leader
//! within 2 s (at the test's 50 ms heartbeat / 500 ms election timeout), no acknowledged write is
//! lost — on the survivors, and on the killed member once it restarts and catches up — and a watch
//! that was served by the dead leader resumes on another member from its last revision without
//! a gap.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_stream::StreamExt;
use yizhi_proto::etcdserverpb as pb;
use yizhi_proto::etcdserverpb::kv_client::KvClient;
use yizhi_proto::etcdserverpb::watch_client::WatchClient;
use yizhi_testkit::Cluster;

const WRITERS: usize = 4;
/// A write not answered within this is retried (on the next member): a dead leader must not
/// hold a writer for the whole server-side request timeout.
const WRITE_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1000);
const MAX_FAILOVER: Duration = Duration::from_secs(2);
const DEADLINE: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
struct Ack {
    key: String,
    value: String,
    revision: i64,
    /// When the attempt that was acknowledged was sent.
    sent_at: Instant,
    acked_at: Instant,
}

#[derive(Default, Debug)]
struct Load {
    acks: Mutex<Vec<Ack>>,
    errors: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Load {
    fn ack_count(&self) -> usize {
        self.acks.lock().expect("acks").len()
    }

    fn acks(&self) -> Vec<Ack> {
        self.acks.lock().expect("acks").clone()
    }

    /// Keeps the load on until `more` further writes are acknowledged, then stops the writers.
    async fn stop_after(&self, what: &str, more: usize, writers: Vec<tokio::task::JoinHandle<()>>) {
        let acked_before = self.ack_count();
        wait_until(what, || self.ack_count() >= acked_before + more).await;
        self.stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.await.expect("writer task");
        }
    }
}

/// Writes `<prefix><writer>/<seq>` = `v<seq>` one after another, retrying each write (same key,
/// same value) on the next member until it is acknowledged.
async fn writer(urls: Vec<String>, prefix: String, id: usize, load: Arc<Load>) {
    let mut clients: Vec<KvClient<_>> = urls
        .iter()
        .map(|u| KvClient::new(yizhi_testkit::channel(u)))
        .collect();
    let mut member = id % clients.len();
    let mut seq = 0u64;
    while !load.stop.load(Ordering::Relaxed) {
        let key = format!("{prefix}{id}/{seq:06}");
        let value = format!("v{seq}");
        loop {
            let request = pb::PutRequest {
                key: key.clone().into_bytes(),
                value: value.clone().into_bytes(),
                ..Default::default()
            };
            let sent_at = Instant::now();
            match tokio::time::timeout(WRITE_ATTEMPT_TIMEOUT, clients[member].put(request)).await {
                Ok(Ok(response)) => {
                    let revision = response.into_inner().header.expect("put header").revision;
                    load.acks.lock().expect("acks").push(Ack {
                        key,
                        value,
                        revision,
                        sent_at,
                        acked_at: Instant::now(),
                    });
                    break;
                }
                Ok(Err(status)) => {
                    load.errors.lock().expect("errors").push(format!(
                        "{}: {:?} {}",
                        urls[member],
                        status.code(),
                        status.message()
                    ));
                }
                Err(_) => load
                    .errors
                    .lock()
                    .expect("errors")
                    .push(format!("{}: attempt timed out", urls[member])),
            }
            member = (member + 1) % clients.len();
            if load.stop.load(Ordering::Relaxed) {
                return; // An unacknowledged write may or may not have happened: not counted.
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        seq += 1;
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every key under `prefix` on member `index`, read linearizably or serializably.
async fn read_prefix(
    cluster: &Cluster,
    index: usize,
    prefix: &str,
    serializable: bool,
) -> (i64, BTreeMap<String, String>) {
    let mut range_end = prefix.as_bytes().to_vec();
    *range_end.last_mut().expect("non-empty prefix") += 1;
    let request = pb::RangeRequest {
        key: prefix.as_bytes().to_vec(),
        range_end,
        serializable,
        ..Default::default()
    };
    let response = cluster
        .kv_client(index)
        .range(request)
        .await
        .unwrap_or_else(|s| panic!("range on member {index}: {s}"))
        .into_inner();
    let kvs = response
        .kvs
        .into_iter()
        .map(|kv| {
            (
                String::from_utf8(kv.key).expect("utf-8 key"),
                String::from_utf8(kv.value).expect("utf-8 value"),
            )
        })
        .collect();
    (response.header.expect("header").revision, kvs)
}

fn assert_all_present(acks: &[Ack], kvs: &BTreeMap<String, String>, whom: &str) {
    let missing: Vec<&Ack> = acks
        .iter()
        .filter(|a| kvs.get(&a.key) != Some(&a.value))
        .collect();
    assert!(
        missing.is_empty(),
        "{whom} lacks {} of {} acknowledged writes, e.g. {:?}",
        missing.len(),
        acks.len(),
        &missing[..missing.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_under_write_load_loses_no_acknowledged_write() {
    let cluster = Cluster::start(3, &[]).await;
    let load = Arc::new(Load::default());
    let writers: Vec<_> = (0..WRITERS)
        .map(|id| tokio::spawn(writer(cluster.client_urls(), "fo/".into(), id, load.clone())))
        .collect();
    wait_until("writes before the kill", || load.ack_count() >= 200).await;

    let leader = cluster.wait_for_leader(DEADLINE).await;
    let killed_at = Instant::now();
    cluster.kill(leader);
    wait_until("a write sent after the kill to be acknowledged", || {
        load.acks().iter().any(|a| a.sent_at >= killed_at)
    })
    .await;
    let failover = load
        .acks()
        .iter()
        .filter(|a| a.sent_at >= killed_at)
        .map(|a| a.acked_at - killed_at)
        .min()
        .expect("an ack after the kill");
    // Keep the load on the new leader for a while before checking.
    load.stop_after("writes on the new leader", 200, writers).await;
    let new_leader = cluster.wait_for_leader(DEADLINE).await;
    let acks = load.acks();
    let errors = load.errors.lock().expect("errors").len();
    eprintln!(
        "failover: first write acknowledged {failover:?} after kill -9 of member {leader}; new leader member \
         {new_leader}; {} writes acknowledged, {errors} failed attempts retried",
        acks.len()
    );
    assert_ne!(new_leader, leader);
    assert!(
        failover < MAX_FAILOVER,
        "writes resumed {failover:?} after the leader was killed (limit {MAX_FAILOVER:?})"
    );

    for index in cluster.running_indices() {
        let (_, kvs) = read_prefix(&cluster, index, "fo/", false).await;
        assert_all_present(&acks, &kvs, &format!("member {index} (linearizable)"));
    }

    // The killed member comes back on its data, catches up, and then holds every write on its own.
    cluster.restart(leader).await;
    let max_revision = acks.iter().map(|a| a.revision).max().expect("acks");
    let deadline = Instant::now() + DEADLINE;
    let kvs = loop {
        let (revision, kvs) = read_prefix(&cluster, leader, "fo/", true).await;
        if revision >= max_revision {
            break kvs;
        }
        assert!(
            Instant::now() < deadline,
            "restarted member stuck at revision {revision} < {max_revision}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_all_present(&acks, &kvs, "the restarted member (serializable)");
}

/// A watch stream's events: (revision, key) in arrival order.
type Seen = Arc<Mutex<Vec<(i64, String)>>>;

/// Watches `prefix` on `url` from `start_revision` and appends events to `seen` until the stream
/// breaks (its member died); returns why it ended.
async fn watch_until_broken(url: String, prefix: &str, start_revision: i64, seen: Seen) -> String {
    let mut range_end = prefix.as_bytes().to_vec();
    *range_end.last_mut().expect("non-empty prefix") += 1;
    let create = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: prefix.as_bytes().to_vec(),
                range_end,
                start_revision,
                ..Default::default()
            },
        )),
    };
    // The request stream stays open (holding `_requests`) for as long as we watch.
    let (_requests, requests_rx) = tokio::sync::mpsc::channel(1);
    let requests =
        tokio_stream::iter([create]).chain(tokio_stream::wrappers::ReceiverStream::new(requests_rx));
    let mut client = WatchClient::new(yizhi_testkit::channel(&url));
    let mut stream = match client.watch(requests).await {
        Ok(response) => response.into_inner(),
        Err(status) => return format!("watch on {url} refused: {status}"),
    };
    loop {
        match stream.next().await {
            Some(Ok(response)) => {
                assert!(!response.canceled, "watch canceled: {response:?}");
                let mut seen = seen.lock().expect("seen");
                for event in response.events {
                    let kv = event.kv.expect("event kv");
                    seen.push((kv.mod_revision, String::from_utf8(kv.key).expect("utf-8 key")));
                }
            }
            Some(Err(status)) => return format!("stream error: {status}"),
            None => return "stream ended".into(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_on_another_member_without_gaps() {
    let cluster = Cluster::start(3, &[]).await;
    let leader = cluster.wait_for_leader(DEADLINE).await;
    let seen: Seen = Arc::default();
    let first_watch = tokio::spawn(watch_until_broken(
        cluster.client_url(leader),
        "fw/",
        0,
        seen.clone(),
    ));
    let load = Arc::new(Load::default());
    let writers: Vec<_> = (0..2)
        .map(|id| tokio::spawn(writer(cluster.client_urls(), "fw/".into(), id, load.clone())))
        .collect();
    wait_until("events on the first watch", || {
        seen.lock().expect("seen").len() >= 100
    })
    .await;

    cluster.kill(cluster.wait_for_leader(DEADLINE).await);
    let why = tokio::time::timeout(DEADLINE, first_watch)
        .await
        .expect("the watch on the killed member ends")
        .expect("watch task");
    let last_revision = seen.lock().expect("seen").last().expect("events").0;
    // Resume on a survivor right after the last revision we saw, as etcd's clients do.
    let survivor = cluster.running_indices()[0];
    let second_watch = tokio::spawn(watch_until_broken(
        cluster.client_url(survivor),
        "fw/",
        last_revision + 1,
        seen.clone(),
    ));
    load.stop_after("writes after the failover", 100, writers).await;
    let acks = load.acks();
    let max_revision = acks.iter().map(|a| a.revision).max().expect("acks");
    wait_until("the resumed watch to reach the last acknowledged write", || {
        seen.lock().expect("seen").last().map(|e| e.0) >= Some(max_revision)
    })
    .await;
    second_watch.abort();

    let seen = seen.lock().expect("seen").clone();
    eprintln!(
        "watch: first stream ended ({why}) after revision {last_revision}; {} events in all, up to revision {max_revision}",
        seen.len()
    );
    // Nothing but these writers changes this cluster, so the revisions of `fw/` are consecutive:
    // a gap or a repeat across the reconnect would show here.
    for pair in seen.windows(2) {
        assert_eq!(
            pair[1].0,
            pair[0].0 + 1,
            "events jump from {:?} to {:?} (first stream ended after {last_revision})",
            pair[0],
            pair[1]
        );
    }
    let by_revision: BTreeMap<i64, &str> = seen.iter().map(|(r, k)| (*r, k.as_str())).collect();
    let first_seen = seen.first().expect("events").0;
    for ack in acks.iter().filter(|a| a.revision >= first_seen) {
        assert_eq!(
            by_revision.get(&ack.revision).copied(),
            Some(ack.key.as_str()),
            "acknowledged write {ack:?} is not in the watch"
        );
    }
}
