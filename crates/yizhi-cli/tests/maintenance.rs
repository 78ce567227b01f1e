//! Maintenance, Cluster, Health and Auth services against a real 3-member cluster of `yizhi`
//! processes, driven by the generated tonic clients and by Debian's stock `etcdctl` (3.4).
//!
//! One cluster serves every phase, in an order where no phase disturbs the next: status and
//! health, member list, hashes, snapshot, move-leader, defragment, the refused services, and last
//! the space quota (member 3 runs with a small `--quota-backend-bytes` and is filled until NOSPACE).
//!
//! The etcdctl phases are skipped when etcdctl is not on PATH, unless YIZHI_REQUIRE_ETCDCTL is
//! set (CI sets it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tonic::Code;
use tonic::transport::Channel;
use yizhi_proto::etcdserverpb as pb;
use yizhi_proto::etcdserverpb::alarm_request::AlarmAction;
use yizhi_proto::etcdserverpb::auth_client::AuthClient;
use yizhi_proto::etcdserverpb::cluster_client::ClusterClient;
use yizhi_proto::etcdserverpb::kv_client::KvClient;
use yizhi_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use yizhi_proto::grpc_health_v1::health_check_response::ServingStatus;
use yizhi_proto::grpc_health_v1::health_client::HealthClient;
use yizhi_proto::grpc_health_v1::{HealthCheckRequest, HealthCheckResponse};
use yizhi_testkit::{CtlOutput, etcdctl_available, kv, run_etcdctl};

const MEMBERS: usize = 3;
/// Generous: the machine has 2 cores shared with parallel builds and tests.
const DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);
/// An empty member's redb file is about 74 kB; the phases before the quota phase write a few kB.
const SMALL_QUOTA_BYTES: u64 = 2 * 1024 * 1024;
const BIG_VALUE_BYTES: usize = 100_000;

struct Member {
    id: u64,
    client_port: u16,
}

impl Member {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// How MemberList lists the member (host:port; see api/cluster.rs).
    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }
}

/// The members (started by yizhi-testkit, which kills them and removes their directory on drop,
/// with log tails printed first when the test is failing), as this suite addresses them.
struct Cluster {
    root: PathBuf,
    members: Vec<Member>,
    _processes: yizhi_testkit::Cluster,
}

/// The server's default timeouts, after the harness's short test ones (the last flag wins): the
/// phases here are timed against them.
const DEFAULT_TIMEOUT_FLAGS: [&str; 2] = ["--heartbeat-interval=100", "--election-timeout=1000"];

fn start_cluster(quota_of_member_3: u64) -> Cluster {
    let quota = format!("--quota-backend-bytes={quota_of_member_3}");
    let mut member_3 = DEFAULT_TIMEOUT_FLAGS.to_vec();
    member_3.push(&quota);
    let flags: [&[&str]; MEMBERS] = [&DEFAULT_TIMEOUT_FLAGS, &DEFAULT_TIMEOUT_FLAGS, &member_3];
    let processes = yizhi_testkit::block_on(yizhi_testkit::Cluster::start_each(&flags));
    let members = (0..MEMBERS)
        .map(|i| Member {
            id: processes.member_id(i),
            client_port: processes.client_port(i),
        })
        .collect();
    Cluster {
        root: processes.root().to_path_buf(),
        members,
        _processes: processes,
    }
}

async fn maintenance(m: &Member) -> MaintenanceClient<Channel> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match MaintenanceClient::connect(m.url()).await {
            Ok(client) => return client,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(POLL).await;
            }
            Err(e) => panic!("member {} does not accept connections: {e}", m.id),
        }
    }
}

async fn channel(m: &Member) -> Channel {
    Channel::from_shared(m.url())
        .expect("url")
        .connect()
        .await
        .expect("connect")
}

async fn statuses(cluster: &Cluster) -> Vec<Option<pb::StatusResponse>> {
    let mut all = Vec::new();
    for m in &cluster.members {
        let status = maintenance(m).await.status(pb::StatusRequest {}).await;
        all.push(status.ok().map(|r| r.into_inner()));
    }
    all
}

/// Polls every member's Status until all name the same leader (and, if given, that one).
async fn agreed_leader(cluster: &Cluster, expected: Option<u64>) -> u64 {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let all = statuses(cluster).await;
        let leaders: Vec<u64> = all.iter().flatten().map(|s| s.leader).collect();
        let agreed = leaders.len() == MEMBERS && leaders.iter().all(|&l| l == leaders[0] && l != 0);
        if agreed && expected.is_none_or(|e| e == leaders[0]) {
            return leaders[0];
        }
        assert!(
            Instant::now() < deadline,
            "members do not agree on a leader ({expected:?}): {all:#?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

fn etcdctl(endpoints: &[&Member], args: &[&str]) -> CtlOutput {
    let endpoints: Vec<String> = endpoints.iter().map(|m| m.endpoint()).collect();
    run_etcdctl(&endpoints.join(","), args, None)
}

fn etcdctl_ok(endpoints: &[&Member], args: &[&str]) -> CtlOutput {
    let out = etcdctl(endpoints, args);
    assert_eq!(out.code, 0, "etcdctl {args:?} failed: {out:#?}");
    out
}

#[test]
fn maintenance_cluster_health_and_auth_services_on_a_live_cluster() {
    let with_etcdctl = etcdctl_available();
    let cluster = start_cluster(SMALL_QUOTA_BYTES);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let leader = status_names_one_leader(&cluster).await;
        health_serves(&cluster).await;
        member_list_has_every_member(&cluster).await;
        hash_kv_agrees_across_members(&cluster, with_etcdctl).await;
        if with_etcdctl {
            etcdctl_endpoint_commands(&cluster);
            etcdctl_snapshot_save(&cluster).await;
        }
        move_leader(&cluster, leader, with_etcdctl).await;
        defragment_keeps_every_member_serving(&cluster, with_etcdctl).await;
        refused_services_say_why(&cluster).await;
        quota_raises_a_member_local_nospace_alarm(&cluster, with_etcdctl).await;
    });
}

async fn status_names_one_leader(cluster: &Cluster) -> u64 {
    let leader = agreed_leader(cluster, None).await;
    let all = statuses(cluster).await;
    for (m, status) in cluster.members.iter().zip(&all) {
        let status = status.as_ref().expect("status");
        let header = status.header.as_ref().expect("header");
        assert_eq!(header.member_id, m.id);
        assert_eq!(status.version, "3.5.0");
        assert!(status.db_size > 0 && status.db_size_in_use > 0, "{status:?}");
        assert!(status.raft_term >= 1 && status.raft_index >= 1, "{status:?}");
        assert!(status.raft_applied_index <= status.raft_index, "{status:?}");
        assert!(status.errors.is_empty(), "{status:?}");
    }
    assert!(
        cluster.members.iter().any(|m| m.id == leader),
        "the leader {leader} is a member"
    );
    leader
}

async fn health_serves(cluster: &Cluster) {
    for m in &cluster.members {
        let mut health = HealthClient::new(channel(m).await);
        for service in ["", "etcdserverpb.KV"] {
            let answer = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .expect("check")
                .into_inner();
            assert_eq!(answer.status, ServingStatus::Serving as i32, "member {}", m.id);
        }
        let mut watch = health
            .watch(HealthCheckRequest::default())
            .await
            .expect("watch")
            .into_inner();
        let first: HealthCheckResponse = tokio::time::timeout(DEADLINE, watch.message())
            .await
            .expect("a first health answer in time")
            .expect("stream")
            .expect("an answer");
        assert_eq!(first.status, ServingStatus::Serving as i32);
    }
}

async fn member_list_has_every_member(cluster: &Cluster) {
    let mut client = ClusterClient::new(channel(&cluster.members[0]).await);
    let deadline = Instant::now() + DEADLINE;
    // Client URLs of peers are learnt when they connect: poll until every member announced.
    let members = loop {
        let list = client
            .member_list(pb::MemberListRequest { linearizable: true })
            .await
            .expect("member list")
            .into_inner();
        if list.members.iter().all(|m| !m.client_ur_ls.is_empty()) {
            break list.members;
        }
        assert!(Instant::now() < deadline, "{list:#?}");
        tokio::time::sleep(POLL).await;
    };
    assert_eq!(members.len(), MEMBERS);
    for (listed, m) in members.iter().zip(&cluster.members) {
        assert_eq!(listed.id, m.id);
        assert_eq!(listed.name, format!("m{}", m.id));
        assert_eq!(listed.client_ur_ls, vec![m.endpoint()]);
        assert_eq!(listed.peer_ur_ls.len(), 1);
        assert!(!listed.is_learner);
    }
}

async fn hash_kv_agrees_across_members(cluster: &Cluster, with_etcdctl: bool) {
    let mut kv = KvClient::new(channel(&cluster.members[0]).await);
    let mut revision = 0;
    for i in 0..20 {
        revision = kv::put(&mut kv, &format!("hash/{i}"), &format!("value {i}")).await;
    }
    kv::delete(&mut kv, "hash/3").await;
    let last = revision + 1;
    let mut hashes = Vec::new();
    for m in &cluster.members {
        let mut client = maintenance(m).await;
        let deadline = Instant::now() + DEADLINE;
        // A follower may not have applied `last` yet ("future revision"): retry.
        let answer = loop {
            match client.hash_kv(pb::HashKvRequest { revision: last }).await {
                Ok(answer) => break answer.into_inner(),
                Err(e) if e.code() == Code::OutOfRange && Instant::now() < deadline => {
                    tokio::time::sleep(POLL).await
                }
                Err(e) => panic!("hashkv on member {}: {e}", m.id),
            }
        };
        assert_eq!(answer.hash_revision, last);
        assert_eq!(answer.compact_revision, 0);
        hashes.push(answer.hash);
        let earlier = client
            .hash_kv(pb::HashKvRequest { revision })
            .await
            .expect("hashkv")
            .into_inner();
        assert_ne!(
            earlier.hash, answer.hash,
            "the delete at {last} is part of the hash"
        );
    }
    assert!(hashes.iter().all(|&h| h == hashes[0]), "{hashes:?}");
    let future = maintenance(&cluster.members[0])
        .await
        .hash_kv(pb::HashKvRequest {
            revision: last + 1000,
        })
        .await
        .expect_err("a future revision");
    assert_eq!(
        future.message(),
        "etcdserver: mvcc: required revision is a future revision"
    );

    if with_etcdctl {
        let out = etcdctl_ok(
            &[&cluster.members[0]],
            &["endpoint", "hashkv", "--cluster", &format!("--rev={last}")],
        );
        let rows: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(rows.len(), MEMBERS, "{out:#?}");
        for (row, m) in rows.iter().zip(&cluster.members) {
            assert_eq!(*row, format!("{}, {}", m.endpoint(), hashes[0]), "{out:#?}");
        }
    }
}

fn etcdctl_endpoint_commands(cluster: &Cluster) {
    let first = &cluster.members[0];
    let status = etcdctl_ok(&[first], &["endpoint", "status", "--cluster"]);
    let rows: Vec<Vec<&str>> = status.stdout.lines().map(|l| l.split(", ").collect()).collect();
    assert_eq!(rows.len(), MEMBERS, "{status:#?}");
    let leaders = rows.iter().filter(|r| r.get(4) == Some(&"true")).count();
    assert_eq!(leaders, 1, "{status:#?}");
    for (row, m) in rows.iter().zip(&cluster.members) {
        assert_eq!(row[0], m.endpoint());
        assert_eq!(row[2], "3.5.0");
    }
    let health = etcdctl_ok(&[first], &["endpoint", "health", "--cluster"]);
    for m in &cluster.members {
        assert!(
            health.stderr.contains(&format!(
                "{} is healthy: successfully committed proposal",
                m.endpoint()
            )),
            "{health:#?}"
        );
    }
}

async fn etcdctl_snapshot_save(cluster: &Cluster) {
    let first = &cluster.members[0];
    let mut kv = KvClient::new(channel(first).await);
    kv::put(&mut kv, "snapshot/marker", "written before the snapshot").await;
    let path = cluster.root.join("saved.db");
    let path_text = path.to_string_lossy().into_owned();
    let out = etcdctl_ok(&[first], &["snapshot", "save", &path_text]);
    assert!(
        out.stdout.contains(&format!("Snapshot saved at {path_text}")),
        "{out:#?}"
    );

    let bytes = std::fs::read(&path).expect("snapshot file");
    assert_eq!(bytes.len() % 512, 32, "etcd's layout: 512-byte multiple + sha256");
    let (image, digest) = bytes.split_at(bytes.len() - 32);
    assert_eq!(
        hex(digest),
        sha256sum(&cluster.root, image),
        "digest of the image"
    );
    let encoded = yizhi_server::api::maintenance::snapshot_from_image(image).expect("image");
    let mut restored =
        yizhi_kv::MvccStore::open(yizhi_kv::MemBackend::new(), yizhi_kv::KvConfig::default()).expect("store");
    restored
        .install_snapshot(encoded)
        .expect("a valid yizhi-kv snapshot");
    let read = restored
        .range(&yizhi_kv::RangeRequest {
            key: b"snapshot/marker".to_vec().into(),
            ..Default::default()
        })
        .expect("range");
    assert_eq!(read.kvs.len(), 1);
    assert_eq!(&read.kvs[0].value[..], b"written before the snapshot");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// coreutils' sha256sum, an implementation independent of ours.
fn sha256sum(dir: &Path, data: &[u8]) -> String {
    let path = dir.join("sha256-input");
    std::fs::write(&path, data).expect("write");
    let out = Command::new("sha256sum").arg(&path).output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_string()
}

async fn move_leader(cluster: &Cluster, leader: u64, with_etcdctl: bool) {
    let leader = agreed_leader(cluster, Some(leader)).await;
    let follower = cluster
        .members
        .iter()
        .find(|m| m.id != leader)
        .expect("a follower");
    let not_leader = maintenance(follower)
        .await
        .move_leader(pb::MoveLeaderRequest { target_id: leader })
        .await
        .expect_err("a follower cannot move leadership");
    assert_eq!(not_leader.code(), Code::FailedPrecondition);
    assert_eq!(not_leader.message(), "etcdserver: not leader");
    let leader_member = &cluster.members[leader as usize - 1];
    let bad = maintenance(leader_member)
        .await
        .move_leader(pb::MoveLeaderRequest { target_id: 99 })
        .await
        .expect_err("no member 99");
    assert_eq!(bad.message(), "etcdserver: bad leader transferee");

    let target = follower.id;
    if with_etcdctl {
        let all: Vec<&Member> = cluster.members.iter().collect();
        let out = etcdctl_ok(&all, &["move-leader", &format!("{target:x}")]);
        assert!(
            out.stdout
                .contains(&format!("Leadership transferred from {leader:x} to {target:x}")),
            "{out:#?}"
        );
    } else {
        maintenance(leader_member)
            .await
            .move_leader(pb::MoveLeaderRequest { target_id: target })
            .await
            .expect("move leader");
    }
    // MoveLeader answers once the target leads; every member learns it soon after.
    agreed_leader(cluster, Some(target)).await;
}

async fn refused_services_say_why(cluster: &Cluster) {
    let m = &cluster.members[0];
    let mut auth = AuthClient::new(channel(m).await);
    let status = auth
        .auth_status(pb::AuthStatusRequest {})
        .await
        .expect("auth status");
    assert!(!status.into_inner().enabled);
    let refused = auth
        .user_list(pb::AuthUserListRequest {})
        .await
        .expect_err("no auth");
    assert_eq!(refused.code(), Code::Unimplemented);
    assert_eq!(
        refused.message(),
        "etcdserver: authentication is not supported yet"
    );
    let refused = ClusterClient::new(channel(m).await)
        .member_add(pb::MemberAddRequest::default())
        .await
        .expect_err("static membership");
    assert_eq!(refused.code(), Code::Unimplemented);
    assert_eq!(refused.message(), "membership changes are not supported yet");
}

/// The keys under `prefix` (ending in '/') and their values as `m` serves them.
async fn prefix_contents(m: &Member, prefix: &str) -> Vec<(String, Vec<u8>)> {
    let range = pb::RangeRequest {
        key: prefix.as_bytes().to_vec(),
        range_end: format!("{}0", prefix.trim_end_matches('/')).into_bytes(),
        ..Default::default()
    };
    let kvs = KvClient::new(channel(m).await)
        .range(range)
        .await
        .expect("range")
        .into_inner()
        .kvs;
    kvs.into_iter()
        .map(|kv| (String::from_utf8(kv.key).expect("utf-8 key"), kv.value))
        .collect()
}

async fn db_sizes(cluster: &Cluster) -> Vec<i64> {
    let all = statuses(cluster).await;
    all.iter().map(|s| s.as_ref().expect("status").db_size).collect()
}

/// Writes, deletes most of it and compacts, then defragments every member (etcdctl's `defrag
/// --cluster` or the tonic client): each answers, every file shrinks, and every member still serves
/// the surviving keys and takes new writes.
async fn defragment_keeps_every_member_serving(cluster: &Cluster, with_etcdctl: bool) {
    const KEYS: usize = 30;
    const KEPT_EVERY: usize = 6;
    // Small enough to leave member 3 well under its quota for the quota phase.
    const VALUE_BYTES: usize = 10_000;
    let value = |i: usize| vec![b'a' + (i % 26) as u8; VALUE_BYTES];
    let first = &cluster.members[0];
    let mut kv = KvClient::new(channel(first).await);
    for i in 0..KEYS {
        let put = pb::PutRequest {
            key: format!("defrag/{i:02}").into_bytes(),
            value: value(i),
            ..Default::default()
        };
        kv.put(put).await.expect("put");
    }
    let mut revision = 0;
    for i in (0..KEYS).filter(|i| i % KEPT_EVERY != 0) {
        let deleted = kv::delete(&mut kv, format!("defrag/{i:02}")).await;
        revision = deleted.header.expect("header").revision;
    }
    kv.compact(pb::CompactionRequest {
        revision,
        physical: true,
    })
    .await
    .expect("compact");
    let expected: Vec<(String, Vec<u8>)> = (0..KEYS)
        .filter(|i| i % KEPT_EVERY == 0)
        .map(|i| (format!("defrag/{i:02}"), value(i)))
        .collect();
    // Every member has applied the compaction once it serves the surviving keys only.
    for m in &cluster.members {
        let deadline = Instant::now() + DEADLINE;
        while prefix_contents(m, "defrag/").await != expected {
            assert!(Instant::now() < deadline, "member {} never caught up", m.id);
            tokio::time::sleep(POLL).await;
        }
    }

    let before = db_sizes(cluster).await;
    if with_etcdctl {
        let out = etcdctl_ok(&[first], &["defrag", "--cluster"]);
        for m in &cluster.members {
            assert!(
                out.stdout
                    .contains(&format!("Finished defragmenting etcd member[{}]", m.endpoint())),
                "{out:#?}"
            );
        }
    } else {
        for m in &cluster.members {
            let answer = maintenance(m)
                .await
                .defragment(pb::DefragmentRequest {})
                .await
                .unwrap_or_else(|e| panic!("defragment member {}: {e}", m.id))
                .into_inner();
            assert!(answer.header.is_some());
        }
    }
    let after = db_sizes(cluster).await;
    eprintln!("defragment: db sizes {before:?} -> {after:?}");
    for (b, a) in before.iter().zip(&after) {
        // 250 kB of values were deleted and compacted away: far more than a page or two.
        assert!(
            a < b,
            "a defragmented file did not shrink: {before:?} -> {after:?}"
        );
    }

    // A write after defragment.
    kv::put(&mut kv, "defrag/late", "after defrag").await;
    let mut expected = expected;
    expected.push(("defrag/late".to_string(), b"after defrag".to_vec()));
    for m in &cluster.members {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let served = prefix_contents(m, "defrag/").await;
            if served == expected {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "member {} after defragment serves {} keys",
                m.id,
                served.len()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

/// The alarms answered to a NOSPACE `action` (on `member_id`; 0: every member); `what` names the
/// call if it fails.
async fn alarm(
    client: &mut MaintenanceClient<Channel>,
    action: AlarmAction,
    member_id: u64,
    what: &str,
) -> Vec<pb::AlarmMember> {
    let request = pb::AlarmRequest {
        action: action as i32,
        member_id,
        alarm: pb::AlarmType::Nospace as i32,
    };
    client.alarm(request).await.expect(what).into_inner().alarms
}

async fn quota_raises_a_member_local_nospace_alarm(cluster: &Cluster, with_etcdctl: bool) {
    let small = &cluster.members[2];
    let mut kv = KvClient::new(channel(small).await);
    let mut refused = None;
    for i in 0..(4 * SMALL_QUOTA_BYTES as usize / BIG_VALUE_BYTES) {
        let put = pb::PutRequest {
            key: format!("big/{i}").into_bytes(),
            value: vec![b'x'; BIG_VALUE_BYTES],
            ..Default::default()
        };
        if let Err(e) = kv.put(put).await {
            refused = Some(e);
            break;
        }
    }
    let refused = refused.expect("member 3 refuses writes beyond its quota");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(refused.message(), "etcdserver: mvcc: database space exceeded");

    let mut small_maintenance = maintenance(small).await;
    let alarms = alarm(&mut small_maintenance, AlarmAction::Get, 0, "alarm list").await;
    assert_eq!(
        alarms,
        vec![pb::AlarmMember {
            member_id: 3,
            alarm: pb::AlarmType::Nospace as i32
        }]
    );
    let status = small_maintenance
        .status(pb::StatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.errors, vec!["memberID:3 alarm:NOSPACE"]);
    // Raised by the write that would have crossed the quota.
    assert!(
        status.db_size as u64 + BIG_VALUE_BYTES as u64 > SMALL_QUOTA_BYTES,
        "{status:?}"
    );

    // Deletes still pass; writes elsewhere too (each member judges its own quota).
    let delete = pb::DeleteRangeRequest {
        key: b"big/0".to_vec(),
        ..Default::default()
    };
    kv.delete_range(delete)
        .await
        .expect("deletes are allowed under NOSPACE");
    let put = pb::PutRequest {
        key: b"elsewhere".to_vec(),
        value: b"fine".to_vec(),
        ..Default::default()
    };
    KvClient::new(channel(&cluster.members[0]).await)
        .put(put)
        .await
        .expect("member 1 has the default quota");
    let mut elsewhere_maintenance = maintenance(&cluster.members[0]).await;
    let elsewhere = alarm(&mut elsewhere_maintenance, AlarmAction::Get, 0, "alarm list").await;
    assert!(elsewhere.is_empty(), "{elsewhere:?}");

    if with_etcdctl {
        let out = etcdctl_ok(&[small], &["alarm", "list"]);
        assert_eq!(out.stdout.trim(), "memberID:3 alarm:NOSPACE", "{out:#?}");
        let out = etcdctl(&[small], &["put", "more", "data"]);
        assert!(
            out.stderr.contains("etcdserver: mvcc: database space exceeded"),
            "{out:#?}"
        );
    }
    let disarmed = alarm(&mut small_maintenance, AlarmAction::Deactivate, 3, "disarm").await;
    assert_eq!(disarmed.len(), 1);
    let alarms = alarm(&mut small_maintenance, AlarmAction::Get, 0, "alarm list").await;
    assert!(alarms.is_empty(), "{alarms:?}");
}
