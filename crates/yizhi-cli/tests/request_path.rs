//! Issue 13: the request path under real faults. A Jepsen-style run against a real 3-member
//! cluster (`yizhi server` processes, engine from `YIZHI_ENGINE`), its peer traffic relayed by
//! a userspace proxy (`common/peer_proxy.rs`) that partitions members as `iptables -j DROP`
//! does: bytes held, connections kept open, everything delivered at the heal.
//!
//! Clients behave like etcd's Go client (clientv3 3.4/3.5): every Put carries a 1.5 s deadline
//! in its `grpc-timeout` header, and the retry interceptor's rules decide what is sent again
//! (see [`retry_rule`]). Faults: a follower's peer links are cut while clients keep sending
//! Puts to it, then healed; a member is killed with -9 and restarted while clients keep writing
//! through it; several rounds. At the end a watch from revision 1 gives the whole history, which
//! must show:
//!
//! - no value written at two revisions (anomaly 1: a Put queued on a partitioned follower and
//!   applied after the heal although its client had retried it elsewhere);
//! - every acknowledged Put's header revision is the revision its own value was written at
//!   (anomaly 2: a restarted member answering a new Put with a replayed entry's result);
//! - no client's acknowledged revisions going backwards;
//! - every acknowledged Put in the history.
//!
//! On the code before the fixes (f34155b) it failed both ways on both engines: in 5 runs
//! each, anomaly 1 in 5 of 5 (Raft) and 4 of 5 (Multi-Paxos), anomaly 2 in 5 of 5 for both,
//! about 38 s a run. Passing needs a server that answers no context error for a write whose
//! outcome is unknown, drops a forwarded Put once its client's deadline has passed, and answers
//! a waiter only with its own entry.

use std::collections::BTreeMap;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Status};
use yizhi_proto::etcdserverpb as pb;
use yizhi_proto::etcdserverpb::kv_client::KvClient;
use yizhi_proto::etcdserverpb::watch_client::WatchClient;
use yizhi_testkit::Cluster;
use yizhi_testkit::peer_proxy::{LinkState, PeerProxy};

const CLIENTS: usize = 8;
const KEYS: usize = 4;
const PREFIX: &str = "rp/";
/// Each Put's deadline, as the Jepsen clients had.
const PUT_DEADLINE: Duration = Duration::from_millis(1500);
/// How late the Go client notices its own deadline. Its retry interceptor asks `ctx.Err()`, which
/// turns non-nil only when the Go runtime runs the context's timer: on a loaded machine, commonly
/// some milliseconds after the deadline. The server's Canceled for a Put that waited out its
/// `grpc-timeout` arrives 1-2 ms after the deadline here, inside that gap, and is retried —
/// the "slightly before the client's own deadline" as the client saw it. (Tokio fires a
/// timer in the same turn that reads the network, so the gap has to be stated.)
const GO_CONTEXT_TIMER_LAG: Duration = Duration::from_millis(5);
/// clientv3's `roundRobinQuorumBackoff`: before attempt `n` (0-based), a pause if `n` is a
/// multiple of the quorum (2 of 3 endpoints); so the first retry goes out at once.
const RETRY_BACKOFF: Duration = Duration::from_millis(25);
const QUORUM: u32 = 2;
/// Between a client's Puts: keeps 8 clients from saturating a 2-core machine.
const PAUSE_BETWEEN_PUTS: Duration = Duration::from_millis(2);
const FAULT_ROUNDS: usize = 6;
/// A little over the Put deadline: Puts queued on the cut member expire (and are retried
/// elsewhere) before the heal delivers them.
const PARTITION: Duration = Duration::from_millis(2200);
const DOWN: Duration = Duration::from_millis(500);
/// Writes between faults: the victim's proposals pile up for the next restart to replay.
const CALM: Duration = Duration::from_millis(1500);
/// For the cluster to elect, heal and catch up; for the final reads and the watch.
const SETTLE_DEADLINE: Duration = Duration::from_secs(30);

/// One Put its client saw acknowledged.
#[derive(Clone, Debug)]
struct Ack {
    client: usize,
    value: String,
    revision: i64,
    member: usize,
    attempts: u32,
}

#[derive(Debug, Default)]
struct History {
    acks: Mutex<Vec<Ack>>,
    puts: AtomicU64,
    /// Attempts sent again after the server's Canceled/DeadlineExceeded (the Go client's rule).
    retried_after_server_timeout: AtomicU64,
    /// Attempts sent again because nothing had been sent (no connection).
    retried_unsent: AtomicU64,
    /// Puts ended by an error the server answered and the Go client returns ("no leader", …).
    answered_error: AtomicU64,
    /// Puts ended without the server's answer (the client's deadline, a broken connection).
    unanswered: AtomicU64,
    stop: AtomicBool,
}

/// What etcd's Go client does after an attempt of a Put fails (clientv3's retry interceptor:
/// `isContextError`, then `isSafeRetryMutableRPC`).
#[derive(Debug, PartialEq, Eq)]
enum Retry {
    /// Canceled or DeadlineExceeded while the client's own context is still alive: the
    /// interceptor takes it for the attempt's own deadline and tries again, even for a Put.
    AfterServerTimeout,
    /// Unavailable before anything was sent ("there is no address/connection available").
    Unsent,
    /// Anything else is returned to the caller.
    No,
}

/// Tonic marks errors it made itself (its own `grpc-timeout` enforcement, a refused connect) with
/// a transport error as their source; a status decoded from the server's answer has none.
fn from_server(status: &Status) -> bool {
    std::error::Error::source(status).is_none()
}

/// `own_deadline_passed` is Go's `ctx.Err() != nil` (see [`GO_CONTEXT_TIMER_LAG`]).
fn retry_rule(status: &Status, own_deadline_passed: bool) -> Retry {
    match status.code() {
        _ if own_deadline_passed => Retry::No,
        Code::Cancelled | Code::DeadlineExceeded if from_server(status) => Retry::AfterServerTimeout,
        Code::Unavailable if !from_server(status) && status.message().contains("connect error") => {
            Retry::Unsent
        }
        _ => Retry::No,
    }
}

/// One Put as etcd's Go client makes it: a deadline carried as `grpc-timeout`, attempts on
/// successive members while [`retry_rule`] allows. `Some((revision, member, attempts))` if
/// acknowledged.
async fn put_like_go_client(
    kvs: &mut [KvClient<Channel>],
    first_member: usize,
    key: &str,
    value: &str,
    history: &History,
) -> Option<(i64, usize, u32)> {
    let deadline = tokio::time::Instant::now() + PUT_DEADLINE;
    // The client's context: when it fires, the client stops waiting (tonic's own enforcement of
    // the grpc-timeout header usually ends the attempt first, with a transport error).
    let context_fired_at = deadline + GO_CONTEXT_TIMER_LAG;
    let mut context = pin!(tokio::time::sleep_until(context_fired_at));
    let mut member = first_member;
    let mut attempts = 0;
    loop {
        if attempts > 0 && attempts % QUORUM == 0 {
            tokio::select! {
                biased;
                () = &mut context => {
                    history.unanswered.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                () = tokio::time::sleep(RETRY_BACKOFF) => {}
            }
        }
        attempts += 1;
        let mut request = tonic::Request::new(pb::PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            ..Default::default()
        });
        // grpc-go sends the time left whatever it is, zero included.
        request.set_timeout(deadline.saturating_duration_since(tokio::time::Instant::now()));
        let result = tokio::select! {
            biased;
            result = kvs[member].put(request) => result,
            () = &mut context => {
                history.unanswered.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        let status = match result {
            Ok(response) => {
                let header = response.into_inner().header.expect("a Put answer has a header");
                return Some((header.revision, member, attempts));
            }
            Err(status) => status,
        };
        let retry = retry_rule(&status, tokio::time::Instant::now() >= context_fired_at);
        let counter = match retry {
            Retry::AfterServerTimeout => &history.retried_after_server_timeout,
            Retry::Unsent => &history.retried_unsent,
            Retry::No if from_server(&status) => &history.answered_error,
            Retry::No => &history.unanswered,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if retry == Retry::No {
            return None;
        }
        member = (member + 1) % kvs.len();
    }
}

/// Puts unique values (`c<client>-<n>`) to a few keys until told to stop. Like the Go client's
/// round-robin balancer, each Put starts on the next member.
async fn client(id: usize, urls: Vec<String>, history: Arc<History>) {
    let mut kvs: Vec<KvClient<Channel>> = urls
        .iter()
        .map(|u| KvClient::new(yizhi_testkit::channel(u)))
        .collect();
    let mut n = 0usize;
    while !history.stop.load(Ordering::Relaxed) {
        n += 1;
        let key = format!("{PREFIX}k{}", (id * 7 + n) % KEYS);
        let value = format!("c{id}-{n}");
        history.puts.fetch_add(1, Ordering::Relaxed);
        if let Some((revision, member, attempts)) =
            put_like_go_client(&mut kvs, (id + n) % urls.len(), &key, &value, &history).await
        {
            history.acks.lock().expect("acks").push(Ack {
                client: id,
                value,
                revision,
                member,
                attempts,
            });
        }
        tokio::time::sleep(PAUSE_BETWEEN_PUTS).await;
    }
}

/// Rounds of: cut a follower's peer links (held bytes) while clients write to it, heal; kill -9
/// a member and restart it while clients write through it. Returns what was done.
async fn inject_faults(cluster: &Cluster, proxy: &PeerProxy) -> Vec<String> {
    let mut faults = Vec::new();
    // The same member is killed every round: each restart replays the proposals of the
    // incarnations before it.
    let leader = cluster.wait_for_leader(SETTLE_DEADLINE).await;
    let victim = (leader + 1) % cluster.size();
    for round in 0..FAULT_ROUNDS {
        tokio::time::sleep(CALM).await;
        let leader = cluster.wait_for_leader(SETTLE_DEADLINE).await;
        let cut = if victim != leader {
            victim
        } else {
            (leader + 1 + round % 2) % cluster.size()
        };
        proxy.isolate(cut, LinkState::Held);
        tokio::time::sleep(PARTITION).await;
        proxy.heal_all();
        faults.push(format!(
            "round {round}: member {cut} cut from the others (leader {leader}), healed"
        ));

        tokio::time::sleep(CALM).await;
        cluster.kill(victim);
        tokio::time::sleep(DOWN).await;
        cluster.restart(victim).await;
        faults.push(format!("round {round}: member {victim} killed -9 and restarted"));
    }
    faults
}

/// Every Put under [`PREFIX`] in the cluster's history, from a watch from revision 1: (revision,
/// value), in revision order. Compaction is off, so nothing is missing.
async fn whole_history(cluster: &Cluster) -> Vec<(i64, String)> {
    let deadline = Instant::now() + SETTLE_DEADLINE;
    let leader = cluster.wait_for_leader(SETTLE_DEADLINE).await;
    let url = cluster.client_url(leader);
    let mut range_end = PREFIX.as_bytes().to_vec();
    *range_end.last_mut().expect("non-empty prefix") += 1;
    let last_revision = loop {
        let request = pb::RangeRequest {
            key: PREFIX.as_bytes().to_vec(),
            range_end: range_end.clone(),
            count_only: true,
            ..Default::default()
        };
        match KvClient::new(yizhi_testkit::channel(&url)).range(request).await {
            Ok(response) => break response.into_inner().header.expect("header").revision,
            Err(status) if Instant::now() < deadline => {
                eprintln!("final read: {status}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) => panic!("no final read within {SETTLE_DEADLINE:?}: {status}"),
        }
    };
    let create = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: PREFIX.as_bytes().to_vec(),
                range_end,
                start_revision: 1,
                ..Default::default()
            },
        )),
    };
    // The request stream stays open (holding `_requests`) while we read.
    let (_requests, requests_rx) = tokio::sync::mpsc::channel(1);
    let requests =
        tokio_stream::iter([create]).chain(tokio_stream::wrappers::ReceiverStream::new(requests_rx));
    let mut stream = WatchClient::new(yizhi_testkit::channel(&url))
        .watch(requests)
        .await
        .unwrap_or_else(|s| panic!("watch on {url}: {s}"))
        .into_inner();
    let mut events = Vec::new();
    while events
        .last()
        .is_none_or(|(revision, _)| *revision < last_revision)
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let response = match tokio::time::timeout(left, stream.next()).await {
            Ok(Some(Ok(response))) => response,
            other => panic!(
                "the watch from revision 1 ended at {:?} of {last_revision}: {other:?}",
                events.last()
            ),
        };
        assert!(!response.canceled, "watch canceled: {response:?}");
        for event in response.events {
            let kv = event.kv.expect("event kv");
            events.push((kv.mod_revision, String::from_utf8(kv.value).expect("utf-8 value")));
        }
    }
    events
}

/// The four properties of the module docs; one line per violation (a few of each kind).
fn violations(acks: &[Ack], events: &[(i64, String)]) -> Vec<String> {
    const SHOWN: usize = 8;
    let mut written_at: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for (revision, value) in events {
        written_at.entry(value).or_default().push(*revision);
    }
    let value_at: BTreeMap<i64, &str> = events.iter().map(|(r, v)| (*r, v.as_str())).collect();
    let mut found = Vec::new();
    let twice = written_at
        .iter()
        .filter(|(_, revisions)| revisions.len() > 1)
        .map(|(value, revisions)| format!("anomaly 1: value {value} written at revisions {revisions:?}"));
    found.extend(twice.take(SHOWN));
    // A Put's answer carries the revision it wrote; anything else is another write's answer.
    let misanswered = acks.iter().filter_map(|ack| {
        let revisions = written_at.get(ack.value.as_str());
        if revisions.is_some_and(|r| r.contains(&ack.revision)) {
            return None;
        }
        Some(format!(
            "anomaly 2: client {}'s put of {} was acknowledged by member {} (attempt {}) with revision {}, \
             which holds {:?}; the value was written at {:?}",
            ack.client,
            ack.value,
            ack.member,
            ack.attempts,
            ack.revision,
            value_at.get(&ack.revision),
            revisions.map_or(&[][..], Vec::as_slice),
        ))
    });
    found.extend(misanswered.take(SHOWN));
    let mut last_by_client: BTreeMap<usize, &Ack> = BTreeMap::new();
    let mut backwards = Vec::new();
    for ack in acks {
        if let Some(previous) = last_by_client.insert(ack.client, ack)
            && previous.revision >= ack.revision
        {
            backwards.push(format!(
                "client {}'s revisions went backwards: {} acknowledged at {}, then {} at {}",
                ack.client, previous.value, previous.revision, ack.value, ack.revision
            ));
        }
    }
    found.extend(backwards.into_iter().take(SHOWN));
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_and_restarts_neither_apply_a_put_twice_nor_misanswer_one() {
    let started = Instant::now();
    let engine = std::env::var("YIZHI_ENGINE").unwrap_or_else(|_| "raft".into());
    let (cluster, proxy) = Cluster::start_behind_peer_proxy(3, &[]).await;
    let history = Arc::new(History::default());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| tokio::spawn(client(id, cluster.client_urls(), history.clone())))
        .collect();
    let faults = inject_faults(&cluster, &proxy).await;
    tokio::time::sleep(CALM).await;
    history.stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("client task");
    }
    proxy.heal_all();
    let events = whole_history(&cluster).await;
    let acks = history.acks.lock().expect("acks").clone();

    let through_retry = acks.iter().filter(|a| a.attempts > 1).count();
    eprintln!(
        "request path ({engine}): {} puts, {} acknowledged ({through_retry} after a retry), {} ended by the \
         server's error, {} unanswered; attempts retried: {} after the server's Canceled/DeadlineExceeded, \
         {} unsent; {} events up to revision {}; proxy: {} connections, {} bytes held, {} resets; {} \
         faults; {:.1?} in all",
        history.puts.load(Ordering::Relaxed),
        acks.len(),
        history.answered_error.load(Ordering::Relaxed),
        history.unanswered.load(Ordering::Relaxed),
        history.retried_after_server_timeout.load(Ordering::Relaxed),
        history.retried_unsent.load(Ordering::Relaxed),
        events.len(),
        events.last().map_or(0, |e| e.0),
        proxy.stats().connections.load(Ordering::Relaxed),
        proxy.stats().held_bytes.load(Ordering::Relaxed),
        proxy.stats().resets.load(Ordering::Relaxed),
        faults.len(),
        started.elapsed(),
    );
    for fault in &faults {
        eprintln!("  {fault}");
    }
    assert!(!acks.is_empty(), "no Put was acknowledged");
    let found = violations(&acks, &events);
    assert!(
        found.is_empty(),
        "the history breaks the request path's guarantees ({} shown):\n{}",
        found.len(),
        found.join("\n")
    );
}
