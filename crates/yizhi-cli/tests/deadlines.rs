//! Client deadlines on a real 3-member cluster (issue 13, anomaly 1): a call that cannot complete
//! is answered as etcd answers it — Unavailable, "etcdserver: request timed out" (or "no leader"
//! once the member knows it has none) — never `Canceled`/`DeadlineExceeded` from the server, which
//! etcd's Go client would retry even for a Put; and a write forwarded to a leader that could not
//! take it before its client's deadline is never applied later.
//!
//! The client here speaks gRPC over a bare HTTP/2 connection: it sends the call's `grpc-timeout`
//! but, unlike tonic's `Channel`, does not enforce it itself, so what it receives at the deadline
//! is the server's own answer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::{Code, Request, Status};
use yizhi_proto::etcdserverpb as pb;
use yizhi_proto::etcdserverpb::kv_client::KvClient;
use yizhi_testkit::Cluster;

/// The client's timeout, sent as `grpc-timeout`.
const CLIENT_TIMEOUT: Duration = Duration::from_millis(300);
/// The server answers at its first tick past the deadline, or at worst a second later (the
/// handler's backstop); an answer later than this is a hang (a loaded 2-core machine included).
const ANSWER_WITHIN: Duration = Duration::from_secs(4);
const PUTS_WHILE_CUT_OFF: usize = 4;
const SETTLE: Duration = Duration::from_secs(30);

/// A gRPC transport that is one HTTP/2 connection and nothing else (no client-side timeout).
#[derive(Clone)]
struct BareHttp2(SendRequest<tonic::body::Body>);

type Answer = Result<http::Response<hyper::body::Incoming>, hyper::Error>;

impl tower_service::Service<http::Request<tonic::body::Body>> for BareHttp2 {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Answer> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(request))
    }
}

async fn bare_kv_client(url: &str) -> KvClient<BareHttp2> {
    let addr = url.trim_start_matches("http://");
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    KvClient::with_origin(BareHttp2(sender), url.parse().expect("origin"))
}

fn with_timeout<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(CLIENT_TIMEOUT);
    request
}

/// A put with the client's timeout; the server's answer and how long it took.
async fn timed_put(client: &mut KvClient<BareHttp2>, key: &str) -> (Result<(), Status>, Duration) {
    let started = Instant::now();
    let put = pb::PutRequest {
        key: key.as_bytes().to_vec(),
        value: b"written-once".to_vec(),
        ..Default::default()
    };
    let answer = tokio::time::timeout(ANSWER_WITHIN, client.put(with_timeout(put))).await;
    let answer = answer.unwrap_or_else(|_| panic!("no answer to put {key} within {ANSWER_WITHIN:?}"));
    (answer.map(|_| ()), started.elapsed())
}

/// What etcd's server answers a call it could not complete in time (or at all, with no leader).
fn assert_answered_like_etcd(what: &str, status: &Status, took: Duration) {
    assert!(
        !matches!(status.code(), Code::Cancelled | Code::DeadlineExceeded),
        "{what}: answered {status:?} (etcd's Go client retries that, a write too)"
    );
    assert_eq!(status.code(), Code::Unavailable, "{what}: {status:?}");
    let texts = [
        "etcdserver: request timed out",
        "etcdserver: no leader",
        "etcdserver: leader changed",
    ];
    assert!(texts.contains(&status.message()), "{what}: {status:?}");
    assert!(took < ANSWER_WITHIN, "{what}: answered after {took:?}");
}

yizhi_testkit::test_each_engine!(
    /// A follower cut off from the rest keeps forwarding to the leader it last heard of; its
    /// clients hear "request timed out" at their deadline, and once the others resume, the
    /// forwarded copies reach the leader past their deadline and are refused: none of those writes
    /// ever applies.
    raft_a_cut_off_member_answers_at_the_deadline_and_its_late_forwards_never_apply,
    /// The same through Multi-Paxos, whose followers also ask the leader for read indexes (frames).
    paxos_a_cut_off_member_answers_at_the_deadline_and_its_late_forwards_never_apply,
    cut_off_member
);

async fn cut_off_member(engine_flags: &[&str]) {
    let (cluster, leader) = Cluster::start_with_leader(3, engine_flags, SETTLE).await;
    let _logs = cluster.logs_on_panic();
    let (follower, other) = ((leader + 1) % 3, (leader + 2) % 3);
    let mut client = bare_kv_client(&cluster.client_url(follower)).await;
    let (healthy, _) = timed_put(&mut client, "deadline/healthy").await;
    healthy.expect("a put with a 300 ms timeout succeeds while the cluster is whole");

    let paused = cluster.pause(&[leader, other]);
    let mut timed_out = 0;
    for i in 0..PUTS_WHILE_CUT_OFF {
        let key = format!("deadline/cut-off/{i}");
        let (answer, took) = timed_put(&mut client, &key).await;
        let status = answer.expect_err("a put without a quorum cannot succeed");
        assert_answered_like_etcd(&key, &status, took);
        timed_out += usize::from(status.message() == "etcdserver: request timed out");
    }
    let range = pb::RangeRequest {
        key: b"deadline/healthy".to_vec(),
        ..Default::default()
    };
    let started = Instant::now();
    let read = tokio::time::timeout(ANSWER_WITHIN, client.range(with_timeout(range))).await;
    let read = read.expect("the linearizable read was answered");
    let status = read.expect_err("a linearizable read without a quorum cannot succeed");
    assert_answered_like_etcd("linearizable range", &status, started.elapsed());
    assert!(
        timed_out >= 1,
        "no put was forwarded and timed out: the test missed its path"
    );
    paused.resume();

    // A write through the follower, forwarded after the late ones on the same connection when
    // the leader is unchanged: once it applies, the leader has judged those too.
    cluster.wait_for_leader(SETTLE).await;
    let mut follower_client = cluster.kv_client(follower);
    let settled = Instant::now();
    loop {
        let marker = pb::PutRequest {
            key: b"deadline/marker".to_vec(),
            value: b"m".to_vec(),
            ..Default::default()
        };
        if follower_client.put(marker).await.is_ok() {
            break;
        }
        assert!(
            settled.elapsed() < SETTLE,
            "the cluster did not take writes again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 0..PUTS_WHILE_CUT_OFF {
        let range = pb::RangeRequest {
            key: format!("deadline/cut-off/{i}").into_bytes(),
            ..Default::default()
        };
        let found = follower_client.range(range).await.expect("read").into_inner();
        assert!(
            found.kvs.is_empty(),
            "deadline/cut-off/{i} was applied after its client gave up"
        );
    }
}
