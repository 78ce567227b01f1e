//! Keep-alives answered by the leader from memory (lessor module docs): while a lease's
//! replicated expiry R is more than half a TTL away, a keep-alive on the leader adds nothing to
//! the log and extends only the leader's in-memory expiry L; the lease then lives until
//! `max(L, R)` without a leader change, and a new leader (which cannot know L) keeps it until
//! `R + TTL/2`, which covers every acknowledged keep-alive.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use yizhi_proto::etcdserverpb as pb;
use yizhi_proto::etcdserverpb::lease_client::LeaseClient;
use yizhi_testkit::{Cluster, ELECTION_TIMEOUT_MS};

/// The server's lessor round (`LESSOR_INTERVAL`).
const LESSOR_INTERVAL: Duration = Duration::from_millis(500);
/// Scheduling, the revoke's own replication, and the test's polling.
const SLACK: Duration = Duration::from_millis(1500);
/// How much before its promised end a lease is checked to be alive.
const MARGIN: Duration = Duration::from_millis(500);

/// One keep-alive stream to one member.
struct KeepAlives {
    requests: mpsc::Sender<pb::LeaseKeepAliveRequest>,
    answers: Streaming<pb::LeaseKeepAliveResponse>,
}

impl KeepAlives {
    async fn open(url: &str) -> KeepAlives {
        let (requests, rx) = mpsc::channel(4);
        let answers = LeaseClient::new(yizhi_testkit::channel(url))
            .lease_keep_alive(ReceiverStream::new(rx))
            .await
            .expect("keep-alive stream")
            .into_inner();
        KeepAlives { requests, answers }
    }

    /// The TTL the server answered.
    async fn keep_alive(&mut self, id: i64) -> i64 {
        self.requests
            .send(pb::LeaseKeepAliveRequest { id })
            .await
            .expect("send a keep-alive");
        let answer = self
            .answers
            .message()
            .await
            .expect("keep-alive answer")
            .expect("keep-alive stream open");
        assert_eq!(answer.id, id);
        answer.ttl
    }
}

async fn raft_index(cluster: &Cluster, member: usize) -> u64 {
    yizhi_testkit::status(&cluster.client_url(member))
        .await
        .expect("status")
        .raft_index
}

async fn grant(cluster: &Cluster, member: usize, ttl: i64) -> i64 {
    let mut lease = LeaseClient::new(yizhi_testkit::channel(&cluster.client_url(member)));
    let granted = lease
        .lease_grant(pb::LeaseGrantRequest { ttl, id: 0 })
        .await
        .expect("grant")
        .into_inner();
    assert_eq!(granted.ttl, ttl);
    granted.id
}

/// The lease's remaining TTL as `member` sees it; -1 once it is gone.
async fn time_to_live(cluster: &Cluster, member: usize, id: i64) -> i64 {
    let mut lease = LeaseClient::new(yizhi_testkit::channel(&cluster.client_url(member)));
    lease
        .lease_time_to_live(pb::LeaseTimeToLiveRequest { id, keys: false })
        .await
        .expect("time to live")
        .into_inner()
        .ttl
}

/// Polls until the lease is gone on `member`; the time it was first seen gone.
async fn wait_revoked(cluster: &Cluster, member: usize, id: i64, deadline: Instant) -> Instant {
    loop {
        if time_to_live(cluster, member, id).await == -1 {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "lease {id} still alive at its deadline"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The leases these tests keep alive live this long.
const TTL_SECS: i64 = 6;

const TTL: Duration = Duration::from_secs(TTL_SECS as u64);

/// A 3-member cluster whose leader has taken over the leases, one lease granted on it, and a
/// keep-alive stream to the leader and one through a follower (which forwards to the leader).
struct LeasedCluster {
    cluster: Cluster,
    leader: usize,
    id: i64,
    granted_at: Instant,
    stream: KeepAlives,
    via_follower: KeepAlives,
    /// The leader's Raft index once all this is set up.
    index_at_start: u64,
}

impl LeasedCluster {
    async fn start() -> LeasedCluster {
        let (cluster, leader) = Cluster::start_with_leader(3, &[], Duration::from_secs(10)).await;
        // The new leader's lessor takes over the leases after applying its log; give it a round.
        tokio::time::sleep(LESSOR_INTERVAL * 3).await;
        let id = grant(&cluster, leader, TTL_SECS).await;
        let granted_at = Instant::now();
        let stream = KeepAlives::open(&cluster.client_url(leader)).await;
        let via_follower = KeepAlives::open(&cluster.client_url((leader + 1) % 3)).await;
        let index_at_start = raft_index(&cluster, leader).await;
        LeasedCluster {
            cluster,
            leader,
            id,
            granted_at,
            stream,
            via_follower,
            index_at_start,
        }
    }
}

/// (a) 40 keep-alives on the leader and a follower within the first half of the TTL add no log entry, one past
/// it goes through the log; (c) without a leader change the lease lives a full TTL after its last
/// keep-alive (from L, although R is earlier) and is revoked soon after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alives_on_the_leader_add_no_log_entries_and_extend_the_lease() {
    let LeasedCluster {
        cluster,
        leader,
        id,
        granted_at,
        mut stream,
        mut via_follower,
        index_at_start: before,
    } = LeasedCluster::start().await;
    let _logs = cluster.logs_on_panic();
    let mut last_keep_alive = Instant::now();
    for i in 0..40 {
        last_keep_alive = Instant::now();
        let to = if i % 2 == 0 {
            &mut stream
        } else {
            &mut via_follower
        };
        assert_eq!(to.keep_alive(id).await, TTL_SECS);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = raft_index(&cluster, leader).await;
    assert!(
        granted_at.elapsed() < TTL / 2,
        "the keep-alives took too long to test the in-memory path"
    );
    assert!(
        after <= before + 1,
        "40 keep-alives within half a TTL grew the log from {before} to {after}"
    );
    // The lease lives until the last keep-alive + TTL, past its replicated expiry (grant + TTL).
    let alive_until = last_keep_alive + TTL - MARGIN;
    tokio::time::sleep_until((granted_at + TTL + MARGIN).into()).await;
    assert!(
        time_to_live(&cluster, leader, id).await >= 0,
        "lease revoked at its replicated expiry"
    );
    tokio::time::sleep_until(alive_until.into()).await;
    assert!(
        time_to_live(&cluster, leader, id).await >= 0,
        "lease revoked early"
    );
    let gone_at = wait_revoked(
        &cluster,
        leader,
        id,
        last_keep_alive + TTL + LESSOR_INTERVAL + SLACK,
    )
    .await;
    assert!(gone_at >= last_keep_alive + TTL - MARGIN);

    // Past half the TTL the keep-alive goes through the log again.
    let id = grant(&cluster, leader, TTL_SECS).await;
    tokio::time::sleep(TTL / 2 + MARGIN).await;
    let before = raft_index(&cluster, leader).await;
    assert_eq!(stream.keep_alive(id).await, TTL_SECS);
    let after = raft_index(&cluster, leader).await;
    assert!(
        after > before,
        "a keep-alive past half the TTL did not go through the log"
    );
}

/// (b) A lease kept alive only from the leader's memory survives a kill -9 of that leader until
/// its last keep-alive + TTL; (c) then it is revoked within TTL + TTL/2 + an election timeout +
/// a lessor round + slack of that keep-alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_kept_alive_from_memory_survives_a_leader_crash() {
    let LeasedCluster {
        index_at_start: before,
        cluster,
        leader,
        id,
        mut stream,
        mut via_follower,
        ..
    } = LeasedCluster::start().await;
    let _logs = cluster.logs_on_panic();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(stream.keep_alive(id).await, TTL_SECS);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let last_keep_alive = Instant::now();
    assert_eq!(via_follower.keep_alive(id).await, TTL_SECS);
    assert_eq!(
        raft_index(&cluster, leader).await,
        before,
        "the keep-alives were not answered from memory"
    );
    cluster.kill(leader);
    let new_leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    assert_ne!(new_leader, leader);
    // The replicated expiry (grant + TTL) passes; the lease must outlive it.
    tokio::time::sleep_until((last_keep_alive + TTL - MARGIN).into()).await;
    assert!(
        time_to_live(&cluster, new_leader, id).await >= 0,
        "the new leader revoked a lease before its last acknowledged keep-alive + TTL"
    );
    let bound = TTL + TTL / 2 + Duration::from_millis(ELECTION_TIMEOUT_MS) + LESSOR_INTERVAL + SLACK;
    wait_revoked(&cluster, new_leader, id, last_keep_alive + bound).await;
}
