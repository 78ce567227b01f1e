//! Locks and elections on a real 3-member cluster: the Lock and Election services through the
//! generated tonic clients, Debian's stock `etcdctl lock`/`elect` (which build the same queue from
//! KV, Watch and Lease calls, so they interoperate with the server-side services), and the
//! `yizhi lock`/`yizhi elect` commands.
//!
//! The tests share one cluster and each keeps to its own lock or election name. Leases that must
//! expire use the minimum TTL (2 s); waits poll with generous deadlines (the machine has 2 cores
//! shared with parallel tests and builds).

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use yizhi_proto::etcdserverpb as pb;
use yizhi_proto::etcdserverpb::kv_client::KvClient;
use yizhi_proto::etcdserverpb::lease_client::LeaseClient;
use yizhi_proto::v3electionpb as epb;
use yizhi_proto::v3electionpb::election_client::ElectionClient;
use yizhi_proto::v3lockpb as lockpb;
use yizhi_proto::v3lockpb::lock_client::LockClient;
use yizhi_testkit::{Cluster, CtlProcess};

/// The longest any single expected event may take on a loaded machine.
const EVENT_DEADLINE: Duration = Duration::from_secs(20);
/// How long a waiter must stay blocked to count as "not granted".
const STAYS_BLOCKED: Duration = Duration::from_millis(1500);
/// Leases that must outlive their test (nobody keeps them alive).
const LONG_TTL_SECS: i64 = 60;
/// Leases that must expire: the server's minimum.
const SHORT_TTL_SECS: i64 = 2;

fn shared() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| Cluster::start_blocking(3, &[]))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn rt<F: std::future::Future>(work: F) -> F::Output {
    runtime().block_on(work)
}

/// A channel without a per-call timeout: Lock and Campaign block as long as they must.
fn channel(cluster: &Cluster, index: usize) -> Channel {
    Endpoint::from_shared(cluster.client_url(index % cluster.size()))
        .expect("valid URL")
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy()
}

async fn grant(channel: &Channel, ttl_secs: i64) -> i64 {
    let response = LeaseClient::new(channel.clone())
        .lease_grant(pb::LeaseGrantRequest { ttl: ttl_secs, id: 0 })
        .await
        .expect("lease grant")
        .into_inner();
    assert!(response.ttl >= ttl_secs, "{response:?}");
    response.id
}

async fn revoke(channel: &Channel, lease: i64) {
    let _ = LeaseClient::new(channel.clone())
        .lease_revoke(pb::LeaseRevokeRequest { id: lease })
        .await;
}

/// Lock `name` on `lease`: the key and its create revision (the fencing token).
async fn lock(channel: &Channel, name: &str, lease: i64) -> Result<(Vec<u8>, i64), tonic::Status> {
    let response = LockClient::new(channel.clone())
        .lock(lockpb::LockRequest {
            name: name.as_bytes().to_vec(),
            lease,
        })
        .await?
        .into_inner();
    let key = response.key;
    let kv = get(channel, &key).await.expect("the granted key exists");
    let header_revision = response.header.expect("header").revision;
    assert!(
        kv.create_revision <= header_revision,
        "{kv:?} granted at {header_revision}"
    );
    assert_eq!(kv.lease, lease);
    Ok((key, kv.create_revision))
}

async fn unlock(channel: &Channel, key: &[u8]) {
    LockClient::new(channel.clone())
        .unlock(lockpb::UnlockRequest { key: key.to_vec() })
        .await
        .expect("unlock");
}

async fn get(channel: &Channel, key: &[u8]) -> Option<yizhi_proto::mvccpb::KeyValue> {
    let mut kv = KvClient::new(channel.clone());
    yizhi_testkit::kv::get(&mut kv, key).await.into_iter().next()
}

async fn keys_under(channel: &Channel, prefix: &str) -> Vec<yizhi_proto::mvccpb::KeyValue> {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().expect("non-empty prefix") += 1;
    KvClient::new(channel.clone())
        .range(pb::RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: end,
            sort_order: pb::range_request::SortOrder::Ascend as i32,
            sort_target: pb::range_request::SortTarget::Create as i32,
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner()
        .kvs
}

/// Polls until `prefix` holds `count` keys.
async fn wait_for_keys(channel: &Channel, prefix: &str, count: usize) {
    let deadline = Instant::now() + EVENT_DEADLINE;
    loop {
        let found = keys_under(channel, prefix).await.len();
        if found == count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{prefix} holds {found} keys, not {count}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The fenced write: put `key` only while the lock key still has create revision `token`.
async fn fenced_put(channel: &Channel, lock_key: &[u8], token: i64, key: &str, value: &str) -> bool {
    let request = pb::TxnRequest {
        compare: vec![pb::Compare {
            key: lock_key.to_vec(),
            target: pb::compare::CompareTarget::Create as i32,
            result: pb::compare::CompareResult::Equal as i32,
            target_union: Some(pb::compare::TargetUnion::CreateRevision(token)),
            ..Default::default()
        }],
        success: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: key.as_bytes().to_vec(),
                value: value.as_bytes().to_vec(),
                ..Default::default()
            })),
        }],
        failure: Vec::new(),
    };
    KvClient::new(channel.clone())
        .txn(request)
        .await
        .expect("txn")
        .into_inner()
        .succeeded
}

fn lease_of_key(key: &str) -> i64 {
    let hex = key.rsplit('/').next().expect("a lock key has a slash");
    i64::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("{key}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Lock service

#[test]
fn five_lockers_increment_a_counter_without_losing_an_update() {
    const LOCKERS: usize = 5;
    const ROUNDS: usize = 4;
    let cluster = shared();
    let _logs = cluster.logs_on_panic();
    rt(async {
        let in_section = Arc::new(AtomicBool::new(false));
        let tokens = Arc::new(Mutex::new(Vec::new()));
        let mut lockers = Vec::new();
        for i in 0..LOCKERS {
            // Spread over the members: grants must agree however they are reached.
            let channel = channel(cluster, i);
            let (in_section, tokens) = (in_section.clone(), tokens.clone());
            lockers.push(tokio::spawn(async move {
                let lease = grant(&channel, LONG_TTL_SECS).await;
                for _ in 0..ROUNDS {
                    let (key, token) = lock(&channel, "mx", lease).await.expect("lock");
                    assert!(!in_section.swap(true, Ordering::SeqCst), "two holders at once");
                    tokens.lock().expect("tokens").push(token);
                    // Read-modify-write with a pause between: only the lock prevents lost updates.
                    let count: u64 = match get(&channel, b"mx-counter").await {
                        Some(kv) => String::from_utf8(kv.value)
                            .expect("utf-8")
                            .parse()
                            .expect("number"),
                        None => 0,
                    };
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    assert!(fenced_put(&channel, &key, token, "mx-counter", &(count + 1).to_string()).await);
                    in_section.store(false, Ordering::SeqCst);
                    unlock(&channel, &key).await;
                }
                revoke(&channel, lease).await;
            }));
        }
        for locker in lockers {
            locker.await.expect("locker task");
        }
        let channel = channel(cluster, 0);
        let counter = get(&channel, b"mx-counter").await.expect("counter");
        assert_eq!(counter.value, (LOCKERS * ROUNDS).to_string().into_bytes());
        // Fencing tokens grow from grant to grant.
        let tokens = tokens.lock().expect("tokens").clone();
        assert_eq!(tokens.len(), LOCKERS * ROUNDS);
        assert!(
            tokens.windows(2).all(|w| w[0] < w[1]),
            "tokens not increasing: {tokens:?}"
        );
        assert!(keys_under(&channel, "mx/").await.is_empty());
    });
}

#[test]
fn a_release_wakes_exactly_the_next_waiter_in_create_revision_order() {
    let cluster = shared();
    let _logs = cluster.logs_on_panic();
    rt(async {
        let ch = channel(cluster, 0);
        let holder_lease = grant(&ch, LONG_TTL_SECS).await;
        let (holder_key, _) = lock(&ch, "fifo", holder_lease).await.expect("lock");
        // Three waiters, each queued (its key visible) before the next starts.
        let (granted_tx, mut granted_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut leases = Vec::new();
        for i in 0..3 {
            let channel = channel(cluster, i + 1);
            let lease = grant(&channel, LONG_TTL_SECS).await;
            leases.push(lease);
            let granted_tx = granted_tx.clone();
            tokio::spawn(async move {
                let outcome = lock(&channel, "fifo", lease).await;
                let _ = granted_tx.send((i, outcome));
            });
            wait_for_keys(&ch, "fifo/", i + 2).await;
        }
        let queue = keys_under(&ch, "fifo/").await;
        let queued_leases: Vec<i64> = queue.iter().map(|kv| kv.lease).collect();
        assert_eq!(queued_leases[1..], leases[..], "queue order is arrival order");

        // Deleting a middle waiter's key wakes its successor, which finds a new predecessor and
        // keeps waiting; the deleted waiter's call fails.
        unlock(&ch, &queue[2].key).await;
        let (who, outcome) = recv_within(&mut granted_rx, EVENT_DEADLINE).await;
        assert_eq!(who, 1);
        let status = outcome.expect_err("a waiter whose key was deleted is not granted");
        assert_eq!(status.message(), "session: expired");
        assert_nothing_within(&mut granted_rx, STAYS_BLOCKED).await;

        // The holder's release grants waiter 0 alone, then waiter 0's grants waiter 2.
        unlock(&ch, &holder_key).await;
        let (who, outcome) = recv_within(&mut granted_rx, EVENT_DEADLINE).await;
        assert_eq!(who, 0);
        let (key0, token0) = outcome.expect("waiter 0 granted");
        assert_nothing_within(&mut granted_rx, STAYS_BLOCKED).await;
        unlock(&ch, &key0).await;
        let (who, outcome) = recv_within(&mut granted_rx, EVENT_DEADLINE).await;
        assert_eq!(who, 2);
        let (key2, token2) = outcome.expect("waiter 2 granted");
        assert!(token0 < token2);
        unlock(&ch, &key2).await;
        for lease in [holder_lease].iter().chain(&leases) {
            revoke(&ch, *lease).await;
        }
    });
}

type Granted = (usize, Result<(Vec<u8>, i64), tonic::Status>);

async fn recv_within(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Granted>, within: Duration) -> Granted {
    tokio::time::timeout(within, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no lock call returned within {within:?}"))
        .expect("senders alive")
}

async fn assert_nothing_within(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Granted>, within: Duration) {
    if let Ok(Some((who, outcome))) = tokio::time::timeout(within, rx.recv()).await {
        panic!("waiter {who} returned early: {outcome:?}");
    }
}

#[test]
fn an_expired_holder_loses_the_lock_and_its_fencing_token_is_refused() {
    let cluster = shared();
    let _logs = cluster.logs_on_panic();
    rt(async {
        let ch = channel(cluster, 1);
        // The holder's client "dies": nobody keeps its lease alive.
        let holder_lease = grant(&ch, SHORT_TTL_SECS).await;
        let (holder_key, holder_token) = lock(&ch, "exp", holder_lease).await.expect("lock");
        let granted_at = Instant::now();
        assert!(fenced_put(&ch, &holder_key, holder_token, "exp-resource", "holder").await);

        let waiter_ch = channel(cluster, 2);
        let waiter_lease = grant(&waiter_ch, LONG_TTL_SECS).await;
        let (waiter_key, waiter_token) =
            tokio::time::timeout(EVENT_DEADLINE, lock(&waiter_ch, "exp", waiter_lease))
                .await
                .expect("the waiter is granted once the holder's lease expires")
                .expect("lock");
        let waited = granted_at.elapsed();
        assert!(
            waited >= Duration::from_millis(1500),
            "granted after {waited:?}, before the holder's 2 s lease could expire"
        );
        assert!(
            get(&ch, &holder_key).await.is_none(),
            "the expired holder's key is gone"
        );
        assert!(waiter_token > holder_token);

        // The old holder wakes up and writes with its token: refused. The new holder's works.
        assert!(!fenced_put(&ch, &holder_key, holder_token, "exp-resource", "stale holder").await);
        assert!(fenced_put(&ch, &waiter_key, waiter_token, "exp-resource", "waiter").await);
        assert_eq!(
            get(&ch, b"exp-resource").await.expect("resource").value,
            b"waiter"
        );
        unlock(&ch, &waiter_key).await;
        revoke(&ch, waiter_lease).await;
    });
}

#[test]
fn a_waiter_whose_lease_expires_is_not_granted_and_leaves_the_queue() {
    let cluster = shared();
    let _logs = cluster.logs_on_panic();
    rt(async {
        let ch = channel(cluster, 2);
        let holder_lease = grant(&ch, LONG_TTL_SECS).await;
        let (holder_key, _) = lock(&ch, "wexp", holder_lease).await.expect("lock");
        let doomed_lease = grant(&ch, SHORT_TTL_SECS).await;
        let doomed = {
            let ch = channel(cluster, 0);
            tokio::spawn(async move { lock(&ch, "wexp", doomed_lease).await })
        };
        wait_for_keys(&ch, "wexp/", 2).await;
        let next_lease = grant(&ch, LONG_TTL_SECS).await;
        let next = {
            let ch = channel(cluster, 1);
            tokio::spawn(async move { lock(&ch, "wexp", next_lease).await })
        };
        wait_for_keys(&ch, "wexp/", 3).await;

        let status = tokio::time::timeout(EVENT_DEADLINE, doomed)
            .await
            .expect("the doomed waiter's call ends when its lease expires")
            .expect("task")
            .expect_err("a waiter whose lease expired is not granted");
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        assert_eq!(status.message(), "etcdserver: requested lease not found");
        wait_for_keys(&ch, "wexp/", 2).await;
        assert!(!next.is_finished(), "the holder still holds the lock");

        unlock(&ch, &holder_key).await;
        let (next_key, _) = tokio::time::timeout(EVENT_DEADLINE, next)
            .await
            .expect("the next waiter is granted")
            .expect("task")
            .expect("lock");
        assert_eq!(
            lease_of_key(std::str::from_utf8(&next_key).expect("utf-8")),
            next_lease
        );
        unlock(&ch, &next_key).await;
        revoke(&ch, holder_lease).await;
        revoke(&ch, next_lease).await;
    });
}

#[test]
fn a_cancelled_lock_call_withdraws_its_key_and_blocks_nobody() {
    let cluster = shared();
    let _logs = cluster.logs_on_panic();
    rt(async {
        let ch = channel(cluster, 0);
        let holder_lease = grant(&ch, LONG_TTL_SECS).await;
        let (holder_key, _) = lock(&ch, "cancel", holder_lease).await.expect("lock");
        let quitter_lease = grant(&ch, LONG_TTL_SECS).await;
        let quitter = {
            let ch = channel(cluster, 1);
            tokio::spawn(async move { lock(&ch, "cancel", quitter_lease).await })
        };
        wait_for_keys(&ch, "cancel/", 2).await;
        quitter.abort(); // Drops the call: the client resets the stream.
        wait_for_keys(&ch, "cancel/", 1).await;
        // The quitter's lease lives on, but its place in the queue is gone.
        unlock(&ch, &holder_key).await;
        let late_lease = grant(&ch, LONG_TTL_SECS).await;
        let (late_key, _) = tokio::time::timeout(EVENT_DEADLINE, lock(&ch, "cancel", late_lease))
            .await
            .expect("nobody blocks the lock")
            .expect("lock");
        unlock(&ch, &late_key).await;
        for lease in [holder_lease, quitter_lease, late_lease] {
            revoke(&ch, lease).await;
        }
    });
}

/// A client retries a Lock call (same lease) while its first call still waits, then the first call
/// is cancelled: the retry adopted the key, so the first call's withdraw must leave it alone
/// (audit F5b: otherwise the key is deleted and the lock passes to the next waiter while the retry
/// believes it is queued — two holders).
#[test]
fn a_retry_adopts_its_key_and_the_cancelled_first_call_does_not_withdraw_it() {
    let cluster = shared();
    let _logs = cluster.logs_on_panic();
    rt(async {
        let ch = channel(cluster, 0);
        let holder_lease = grant(&ch, LONG_TTL_SECS).await;
        let (holder_key, _) = lock(&ch, "adopt", holder_lease).await.expect("lock");
        let lease = grant(&ch, LONG_TTL_SECS).await;
        let first = {
            let ch = channel(cluster, 1);
            tokio::spawn(async move { lock(&ch, "adopt", lease).await })
        };
        wait_for_keys(&ch, "adopt/", 2).await;
        let queued_key = format!("adopt/{lease:x}");
        let created = get(&ch, queued_key.as_bytes()).await.expect("queued");
        let retry = {
            let ch = channel(cluster, 2);
            tokio::spawn(async move { lock(&ch, "adopt", lease).await })
        };
        let deadline = Instant::now() + EVENT_DEADLINE;
        while get(&ch, queued_key.as_bytes())
            .await
            .expect("queued")
            .mod_revision
            == created.mod_revision
        {
            assert!(Instant::now() < deadline, "the retry never adopted the key");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        first.abort();
        unlock(&ch, &holder_key).await;
        let (key, _) = tokio::time::timeout(EVENT_DEADLINE, retry)
            .await
            .expect("the retry is granted")
            .expect("task")
            .expect("lock");
        assert_eq!(key, queued_key.as_bytes());
        let held = get(&ch, &key).await.expect("the granted key still exists");
        assert_eq!(
            held.create_revision, created.create_revision,
            "the adopted incarnation"
        );
        unlock(&ch, &key).await;
        for lease in [holder_lease, lease] {
            revoke(&ch, lease).await;
        }
    });
}

#[test]
fn a_lock_on_a_missing_lease_is_refused_with_etcds_error() {
    let cluster = shared();
    rt(async {
        let ch = channel(cluster, 1);
        let status = lock(&ch, "nolease", 0x7777_7777)
            .await
            .expect_err("no such lease");
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "etcdserver: requested lease not found");
        assert!(keys_under(&ch, "nolease/").await.is_empty());
    });
}

// ---------------------------------------------------------------------------------------------
// Election service

async fn campaign(
    channel: &Channel,
    name: &str,
    lease: i64,
    value: &str,
) -> Result<epb::LeaderKey, tonic::Status> {
    let response = ElectionClient::new(channel.clone())
        .campaign(epb::CampaignRequest {
            name: name.as_bytes().to_vec(),
            lease,
            value: value.as_bytes().to_vec(),
        })
        .await?
        .into_inner();
    Ok(response.leader.expect("leader key"))
}

async fn proclaim(channel: &Channel, leader: &epb::LeaderKey, value: &str) -> Result<(), tonic::Status> {
    ElectionClient::new(channel.clone())
        .proclaim(epb::ProclaimRequest {
            leader: Some(leader.clone()),
            value: value.as_bytes().to_vec(),
        })
        .await
        .map(|_| ())
}

async fn leader_value(channel: &Channel, name: &str) -> Result<String, tonic::Status> {
    let response = ElectionClient::new(channel.clone())
        .leader(epb::LeaderRequest {
            name: name.as_bytes().to_vec(),
        })
        .await?
        .into_inner();
    Ok(String::from_utf8(response.kv.expect("kv").value).expect("utf-8"))
}

async fn next_observed(observer: &mut tonic::Streaming<epb::LeaderResponse>) -> String {
    let response = tokio::time::timeout(EVENT_DEADLINE, observer.message())
        .await
        .expect("observe stalled")
        .expect("observe stream")
        .expect("open");
    String::from_utf8(response.kv.expect("kv").value).expect("utf-8")
}

#[test]
fn campaign_proclaim_resign_observe_and_etcds_errors() {
    let cluster = shared();
    let _logs = cluster.logs_on_panic();
    rt(async {
        let ch = channel(cluster, 0);
        let status = leader_value(&ch, "el").await.expect_err("nobody campaigns yet");
        assert_eq!(status.message(), "election: no leader");

        let mut observer = ElectionClient::new(channel(cluster, 2))
            .observe(epb::LeaderRequest { name: b"el".to_vec() })
            .await
            .expect("observe")
            .into_inner();
        let first_lease = grant(&ch, LONG_TTL_SECS).await;
        let first = campaign(&ch, "el", first_lease, "one").await.expect("campaign");
        assert_eq!(next_observed(&mut observer).await, "one");
        assert_eq!(first.key, format!("el/{first_lease:x}").into_bytes());
        let second_lease = grant(&ch, LONG_TTL_SECS).await;
        let second = {
            let ch = channel(cluster, 1);
            tokio::spawn(async move { campaign(&ch, "el", second_lease, "two").await })
        };
        wait_for_keys(&ch, "el/", 2).await;
        assert_eq!(leader_value(&ch, "el").await.expect("leader"), "one");

        // A waiting candidate's own key is no leader key.
        let waiting_key = epb::LeaderKey {
            name: b"el".to_vec(),
            key: format!("el/{second_lease:x}").into_bytes(),
            rev: keys_under(&ch, "el/").await[1].create_revision,
            lease: second_lease,
        };
        let status = proclaim(&ch, &waiting_key, "usurper")
            .await
            .expect_err("not the leader");
        assert_eq!(status.code(), Code::Unknown);
        assert_eq!(status.message(), "election: not leader");

        proclaim(&ch, &first, "one-b")
            .await
            .expect("the leader proclaims");
        assert_eq!(leader_value(&ch, "el").await.expect("leader"), "one-b");
        assert_eq!(next_observed(&mut observer).await, "one-b");
        ElectionClient::new(ch.clone())
            .resign(epb::ResignRequest {
                leader: Some(first.clone()),
            })
            .await
            .expect("resign");
        let second = tokio::time::timeout(EVENT_DEADLINE, second)
            .await
            .expect("the second candidate leads after the resignation")
            .expect("task")
            .expect("campaign");
        // The resigned leader can change nothing any more.
        let status = proclaim(&ch, &first, "one-c").await.expect_err("resigned");
        assert_eq!(status.message(), "election: not leader");
        assert_eq!(next_observed(&mut observer).await, "two");
        // Two proclamations in a row: the observer sees each (it watches the leader key).
        proclaim(&ch, &second, "two-b")
            .await
            .expect("the new leader proclaims");
        proclaim(&ch, &second, "two-c")
            .await
            .expect("the new leader proclaims");
        assert_eq!(next_observed(&mut observer).await, "two-b");
        assert_eq!(next_observed(&mut observer).await, "two-c");
        for lease in [first_lease, second_lease] {
            revoke(&ch, lease).await;
        }
        let status = leader_value(&ch, "el").await.expect_err("everyone left");
        assert_eq!(status.message(), "election: no leader");
    });
}

// ---------------------------------------------------------------------------------------------
// etcdctl and the yizhi commands

/// etcdctl without the harness's command timeout: a lock or a campaign may wait long.
fn etcdctl_process(cluster: &Cluster, args: &[&str]) -> CtlProcess {
    let mut command = Command::new("etcdctl");
    command
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", cluster.endpoints()))
        .args(args);
    CtlProcess::spawn_command(command)
}

/// A `yizhi lock` or `yizhi elect` against the cluster.
fn yizhi_process(cluster: &Cluster, args: &[&str]) -> CtlProcess {
    let mut command = Command::new(env!("CARGO_BIN_EXE_yizhi"));
    // The endpoints go before the subcommand's own arguments: a lock's command takes the rest.
    let (subcommand, rest) = args.split_first().expect("a subcommand");
    command
        .arg(subcommand)
        .arg("--endpoints")
        .arg(cluster.endpoints())
        .args(rest);
    CtlProcess::spawn_command(command)
}

fn is_lock_key(line: &str, name: &str) -> bool {
    line.strip_prefix(&format!("{name}/"))
        .is_some_and(|hex| !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()))
}

#[test]
fn etcdctl_lock_runs_a_command_and_prints_the_key_and_waits_for_a_server_side_holder() {
    if !yizhi_testkit::etcdctl_available() {
        return;
    }
    let cluster = shared();
    let _logs = cluster.logs_on_panic();
    assert_eq!(
        cluster.etcdctl(&["lock", "ctl-lock", "echo", "hi"]).ok().lines(),
        ["hi"]
    );
    let out = cluster
        .etcdctl(&[
            "lock",
            "ctl-lock",
            "--",
            "sh",
            "-c",
            "echo $ETCD_LOCK_KEY; echo hi",
        ])
        .ok();
    assert_eq!(out.lines().len(), 2, "{out:?}");
    assert!(is_lock_key(out.lines()[0], "ctl-lock"), "{out:?}");
    assert_eq!(out.lines()[1], "hi");

    // A holder through the Lock service blocks etcdctl's client-side mutex, and the other way.
    let runtime = runtime();
    let _context = runtime.enter(); // The channel's connection lives on this runtime.
    let ch = channel(cluster, 0);
    let (lease, key) = runtime.block_on(async {
        let lease = grant(&ch, LONG_TTL_SECS).await;
        (lease, lock(&ch, "ctl-lock", lease).await.expect("lock").0)
    });
    let mut waiting = etcdctl_process(cluster, &["lock", "ctl-lock"]);
    waiting.assert_silent_for(STAYS_BLOCKED);
    runtime.block_on(unlock(&ch, &key));
    let key_line = waiting.next_lines(1, EVENT_DEADLINE).remove(0);
    assert!(is_lock_key(&key_line, "ctl-lock"), "{key_line}");
    let blocked = runtime.block_on(async {
        let other = grant(&ch, LONG_TTL_SECS).await;
        let attempt = tokio::time::timeout(STAYS_BLOCKED, lock(&ch, "ctl-lock", other)).await;
        revoke(&ch, other).await;
        attempt.is_err()
    });
    assert!(blocked, "the Lock service granted a lock etcdctl holds");
    // SIGTERM: etcdctl releases the lock and exits.
    waiting.signal(nix::sys::signal::Signal::SIGTERM);
    waiting.wait_exit(EVENT_DEADLINE);
    runtime.block_on(async {
        revoke(&ch, lease).await;
        wait_for_keys(&ch, "ctl-lock/", 0).await;
    });
}

#[test]
fn etcdctl_elect_two_candidates_take_turns_and_observers_see_each_leader() {
    if !yizhi_testkit::etcdctl_available() {
        return;
    }
    let cluster = shared();
    let _logs = cluster.logs_on_panic();
    let mut observer = etcdctl_process(cluster, &["elect", "-l", "ctl-elect"]);
    // Alice campaigns through `yizhi elect` on a 2 s lease, so her death is quick to notice.
    let mut alice = yizhi_process(cluster, &["elect", "ctl-elect", "alice", "--ttl", "2"]);
    let lines = alice.next_lines(2, EVENT_DEADLINE);
    assert!(is_lock_key(&lines[0], "ctl-elect"), "{lines:?}");
    assert_eq!(lines[1], "alice");
    let mut bob = etcdctl_process(cluster, &["elect", "ctl-elect", "bob"]);
    bob.assert_silent_for(STAYS_BLOCKED);

    // Alice is killed: no resignation, no keep-alives; bob leads once her lease expires.
    alice.signal(nix::sys::signal::Signal::SIGKILL);
    let lines = bob.next_lines(2, EVENT_DEADLINE);
    assert!(is_lock_key(&lines[0], "ctl-elect"), "{lines:?}");
    assert_eq!(lines[1], "bob");

    // Bob stops cleanly (SIGTERM: etcdctl resigns); carol takes over at once.
    let mut carol = etcdctl_process(cluster, &["elect", "ctl-elect", "carol"]);
    carol.assert_silent_for(Duration::from_millis(500));
    bob.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(carol.next_lines(2, EVENT_DEADLINE)[1], "carol");

    let seen = observer.next_lines(6, EVENT_DEADLINE);
    let values: Vec<&str> = seen.iter().skip(1).step_by(2).map(String::as_str).collect();
    assert_eq!(values, ["alice", "bob", "carol"], "{seen:?}");
    // `yizhi elect -l` sees the current leader too.
    let mut listener = yizhi_process(cluster, &["elect", "-l", "ctl-elect"]);
    assert_eq!(listener.next_lines(2, EVENT_DEADLINE)[1], "carol");
}

#[test]
fn yizhi_lock_hands_the_command_its_fencing_token_and_its_exit_status() {
    let cluster = shared();
    let _logs = cluster.logs_on_panic();
    let mut run = yizhi_process(
        cluster,
        &[
            "lock",
            "cli-lock",
            "--",
            "sh",
            "-c",
            "echo $YIZHI_LOCK_KEY $YIZHI_FENCING_TOKEN; exit 7",
        ],
    );
    let line = run.next_lines(1, EVENT_DEADLINE).remove(0);
    let (key, token) = line.split_once(' ').expect("key and token");
    assert!(is_lock_key(key, "cli-lock"), "{line}");
    let token: i64 = token.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
    assert!(token > 1);
    assert_eq!(run.wait_exit(EVENT_DEADLINE).code(), Some(7));
    // Released on exit.
    assert!(rt(async { keys_under(&channel(cluster, 0), "cli-lock/").await }).is_empty());
}

#[test]
fn yizhi_lock_terminates_the_command_when_its_lease_is_lost() {
    let cluster = shared();
    let _logs = cluster.logs_on_panic();
    let mut run = yizhi_process(
        cluster,
        &[
            "lock",
            "cli-lost",
            "--ttl",
            "3",
            "--",
            "sh",
            "-c",
            "echo $YIZHI_LOCK_KEY; exec sleep 60",
        ],
    );
    let key = run.next_lines(1, EVENT_DEADLINE).remove(0);
    assert!(is_lock_key(&key, "cli-lost"), "{key}");
    // The lease is revoked behind the command's back (as if it had expired).
    rt(async { revoke(&channel(cluster, 1), lease_of_key(&key)).await });
    let status = run.wait_exit(EVENT_DEADLINE);
    assert_ne!(status.code(), Some(0), "a lost lock never reports success");
    assert!(
        run.stderr()
            .contains("the lock is no longer held: sending SIGTERM"),
        "{}",
        run.stderr()
    );
}
