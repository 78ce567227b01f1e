//! Bad input against a real 3-member cluster: etcd's gRPC codes and error texts for refused
//! requests (what etcd's clients match on), and garbage on the peer and client ports — after each,
//! the members keep serving and nothing written earlier is lost.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use tonic::Code;
use yizhi_proto::etcdserverpb as pb;
use yizhi_server::transport::{Frame, Hello};
use yizhi_testkit::{Cluster, block_on};

const MAX_REQUEST_BYTES: usize = 64 * 1024;
const MAX_TXN_OPS: usize = 8;
/// The server's gRPC decode limit sits this far above `--max-request-bytes` (etcd's allowance for
/// gRPC framing), so only requests beyond it are refused by the transport rather than the check.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        Cluster::start_blocking(
            3,
            &[
                &format!("--max-request-bytes={MAX_REQUEST_BYTES}"),
                &format!("--max-txn-ops={MAX_TXN_OPS}"),
            ],
        )
    })
}

/// Runs `test` on the shared cluster; the members' logs are shown if it panics.
fn on_cluster<F: std::future::Future>(test: impl FnOnce(&'static Cluster) -> F) -> F::Output {
    let cluster = cluster();
    let _logs = cluster.logs_on_panic();
    block_on(test(cluster))
}

fn put_request(key: &str, value: &[u8]) -> pb::PutRequest {
    pb::PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.to_vec(),
        ..Default::default()
    }
}

async fn put(cluster: &Cluster, index: usize, request: pb::PutRequest) -> Result<i64, tonic::Status> {
    let response = cluster.kv_client(index).put(request).await?.into_inner();
    Ok(response.header.expect("header").revision)
}

async fn get(cluster: &Cluster, index: usize, key: &str) -> Option<Vec<u8>> {
    let response = cluster
        .kv_client(index)
        .range(yizhi_testkit::kv::range_request(key))
        .await
        .unwrap_or_else(|s| panic!("get {key} on member {index}: {s}"))
        .into_inner();
    response.kvs.into_iter().next().map(|kv| kv.value)
}

#[track_caller]
fn assert_status(result: Result<impl std::fmt::Debug, tonic::Status>, code: Code, message: &str) {
    match result {
        Ok(ok) => panic!("expected {code:?} {message:?}, got success {ok:?}"),
        Err(status) => {
            assert_eq!((status.code(), status.message()), (code, message), "{status:?}");
        }
    }
}

/// Every member answers a write and a linearizable read of it.
async fn assert_serving(cluster: &Cluster, tag: &str) {
    for index in 0..cluster.size() {
        let key = format!("alive/{tag}/{index}");
        put(cluster, index, put_request(&key, b"ok"))
            .await
            .unwrap_or_else(|s| panic!("member {index} stopped taking writes after {tag}: {s}"));
        for reader in 0..cluster.size() {
            assert_eq!(
                get(cluster, reader, &key).await.as_deref(),
                Some(&b"ok"[..]),
                "member {reader}"
            );
        }
    }
}

#[test]
fn oversize_put_is_refused_and_the_member_keeps_serving() {
    on_cluster(|cluster| async move {
        let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
        let follower = (leader + 1) % cluster.size();
        for index in [leader, follower] {
            let value = vec![b'x'; MAX_REQUEST_BYTES + 1];
            assert_status(
                put(cluster, index, put_request("big/k", &value)).await,
                Code::InvalidArgument,
                "etcdserver: request is too large",
            );
            // Past the gRPC allowance the transport refuses the message before our check sees it.
            let value = vec![b'x'; MAX_REQUEST_BYTES + GRPC_OVERHEAD_BYTES + 1];
            let refused = put(cluster, index, put_request("big/k", &value)).await;
            let status = refused.expect_err("a message past the decode limit");
            eprintln!(
                "past the decode limit: {:?} {:?}",
                status.code(),
                status.message()
            );
            assert!(
                matches!(status.code(), Code::ResourceExhausted | Code::OutOfRange),
                "{status:?}"
            );
            // Just under the limit is fine.
            let fits = vec![b'y'; MAX_REQUEST_BYTES - 1024];
            put(cluster, index, put_request("big/fits", &fits))
                .await
                .expect("a put under the limit");
        }
        assert_eq!(get(cluster, follower, "big/k").await, None);
        assert_serving(cluster, "oversize").await;
    });
}

#[test]
fn empty_keys_unknown_leases_and_oversize_txns_get_etcds_errors() {
    on_cluster(|cluster| async move {
        assert_status(
            put(cluster, 0, put_request("", b"v")).await,
            Code::InvalidArgument,
            "etcdserver: key is not provided",
        );
        let empty_range = pb::RangeRequest::default();
        assert_status(
            cluster.kv_client(1).range(empty_range).await,
            Code::InvalidArgument,
            "etcdserver: key is not provided",
        );
        let empty_delete = pb::DeleteRangeRequest::default();
        assert_status(
            cluster.kv_client(2).delete_range(empty_delete).await,
            Code::InvalidArgument,
            "etcdserver: key is not provided",
        );

        let leased = pb::PutRequest {
            lease: 0x1234_5678,
            ..put_request("bad/leased", b"v")
        };
        assert_status(
            put(cluster, 1, leased).await,
            Code::NotFound,
            "etcdserver: requested lease not found",
        );
        assert_eq!(
            get(cluster, 0, "bad/leased").await,
            None,
            "a refused put left its key"
        );

        let op = |i: usize| pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(put_request(
                &format!("bad/txn/{i}"),
                b"v",
            ))),
        };
        let too_many = pb::TxnRequest {
            success: (0..=MAX_TXN_OPS).map(op).collect(),
            ..Default::default()
        };
        assert_status(
            cluster.kv_client(0).txn(too_many).await,
            Code::InvalidArgument,
            "etcdserver: too many operations in txn request",
        );
        let just_enough = pb::TxnRequest {
            success: (0..MAX_TXN_OPS).map(op).collect(),
            ..Default::default()
        };
        let response = cluster
            .kv_client(0)
            .txn(just_enough)
            .await
            .expect("a txn at the limit");
        assert!(response.into_inner().succeeded);
        assert_eq!(get(cluster, 2, "bad/txn/7").await.as_deref(), Some(&b"v"[..]));
        assert_eq!(
            get(cluster, 2, "bad/txn/8").await,
            None,
            "the refused txn applied"
        );
    });
}

#[test]
fn reads_below_the_compaction_or_beyond_the_head_are_out_of_range() {
    on_cluster(|cluster| async move {
        let r1 = put(cluster, 0, put_request("cmp/k", b"1")).await.expect("put");
        let r2 = put(cluster, 0, put_request("cmp/k", b"2")).await.expect("put");
        let compact = pb::CompactionRequest {
            revision: r2,
            physical: true,
        };
        cluster.kv_client(1).compact(compact).await.expect("compact");
        for index in 0..cluster.size() {
            for (revision, text) in [
                (r1, "etcdserver: mvcc: required revision has been compacted"),
                (
                    1 << 40,
                    "etcdserver: mvcc: required revision is a future revision",
                ),
            ] {
                let request = pb::RangeRequest {
                    revision,
                    ..yizhi_testkit::kv::range_request("cmp/k")
                };
                assert_status(
                    cluster.kv_client(index).range(request).await,
                    Code::OutOfRange,
                    text,
                );
            }
        }
        let again = pb::CompactionRequest {
            revision: r1,
            physical: false,
        };
        assert_status(
            cluster.kv_client(2).compact(again).await,
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        );
        assert_eq!(get(cluster, 2, "cmp/k").await.as_deref(), Some(&b"2"[..]));
    });
}

/// Sends `bytes` to a peer port and reports whether the member dropped the connection within
/// `within` (EOF or reset on read), writing nothing back.
fn dropped_after(addr: &str, bytes: &[u8], within: Duration) -> bool {
    let mut stream = TcpStream::connect(addr).expect("connect to the peer port");
    // The member may close while we are still writing: that is a drop too.
    if stream.write_all(bytes).is_err() {
        return true;
    }
    stream.set_read_timeout(Some(within)).expect("read timeout");
    let mut reply = [0u8; 64];
    match stream.read(&mut reply) {
        Ok(0) => true,
        Ok(n) => panic!("the peer port answered garbage with {n} bytes"),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            false
        }
        Err(_) => true,
    }
}

/// Deterministic filler (xorshift64) for the garbage tests.
fn garbage(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + body.len());
    out.put_u32_le(body.len() as u32 + 1);
    out.put_u8(kind);
    out.put_slice(body);
    out
}

fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kib * 1024
}

#[test]
fn garbage_on_the_peer_port_drops_the_connection_and_loses_nothing() {
    let cluster = cluster();
    let _logs = cluster.logs_on_panic();
    let (cluster_id, leader) = block_on(async {
        for i in 0..20 {
            put(
                cluster,
                i % 3,
                put_request(&format!("peer/before/{i:02}"), format!("v{i}").as_bytes()),
            )
            .await
            .expect("put before");
        }
        let header = cluster
            .kv_client(0)
            .range(pb::RangeRequest {
                key: b"peer/before/00".to_vec(),
                ..Default::default()
            })
            .await
            .expect("range")
            .into_inner()
            .header
            .expect("header");
        (
            header.cluster_id,
            cluster.wait_for_leader(Duration::from_secs(20)).await,
        )
    });
    let hello_deadline = Duration::from_secs(10); // The member's hello timeout is 5 s.
    for target in [leader, (leader + 1) % cluster.size()] {
        let addr = cluster.peer_addr(target);
        // Random bytes, including a random length prefix.
        assert!(dropped_after(
            &addr,
            &garbage(4096, 0x9e37_79b9 + target as u64),
            hello_deadline
        ));
        // A plausible length with garbage behind it, and a frame of an unknown kind.
        let mut plausible = 64u32.to_le_bytes().to_vec();
        plausible.extend(garbage(64, 7));
        assert!(
            dropped_after(&addr, &plausible, hello_deadline),
            "plausible length + garbage"
        );
        assert!(
            dropped_after(&addr, &frame(0xee, b"??"), hello_deadline),
            "unknown kind"
        );
        // A length beyond any frame.
        assert!(
            dropped_after(&addr, &u32::MAX.to_le_bytes(), hello_deadline),
            "huge length"
        );
        // A hello for another cluster, and a hello with a broken magic.
        let foreign = Frame::Hello(Hello {
            cluster_id: cluster_id ^ 1,
            from: 2,
            to: cluster.member_id(target),
            name: "intruder".into(),
            client_urls: String::new(),
        });
        assert!(
            dropped_after(&addr, &foreign.encode(), hello_deadline),
            "foreign cluster"
        );
        assert!(
            dropped_after(&addr, &frame(1, b"YZPEER00garbage"), hello_deadline),
            "bad magic"
        );
    }

    // A frame that announces nearly the maximum and then stalls: the member must not reserve the
    // announced size before the bytes arrive.
    let pid = cluster.pid(leader).expect("leader pid");
    let before = resident_bytes(pid);
    let mut stalls = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(cluster.peer_addr(leader)).expect("connect");
        stream
            .write_all(&(60u32 << 20).to_le_bytes())
            .expect("write length");
        stream.write_all(&[1u8; 100]).expect("write a little");
        stalls.push(stream);
    }
    std::thread::sleep(Duration::from_millis(500));
    let during = resident_bytes(pid);
    eprintln!("leader resident: {before} bytes before, {during} with 4 stalled 60 MiB frame announcements");
    assert!(
        during < before + (64 << 20),
        "4 stalled 60 MiB frame announcements grew the leader from {before} to {during} bytes resident"
    );
    drop(stalls);

    // A peer that says a valid hello (impersonating member 2 or 3) and then sends garbage engine
    // messages, a garbage forwarded proposal, and an unknown request's forward failure.
    let impersonated = if cluster.member_id(leader) == 2 { 3 } else { 2 };
    let hello = Frame::Hello(Hello {
        cluster_id,
        from: impersonated,
        to: cluster.member_id(leader),
        name: format!("m{impersonated}"),
        client_urls: cluster.client_url(impersonated as usize - 1),
    });
    // The probe tells a drop from a live connection: a valid hello alone is kept open.
    assert!(
        !dropped_after(
            &cluster.peer_addr(leader),
            &hello.encode(),
            Duration::from_secs(1)
        ),
        "a valid hello was dropped"
    );
    let mut stream = TcpStream::connect(cluster.peer_addr(leader)).expect("connect");
    let mut bytes = hello.encode().to_vec();
    for seed in 0..16 {
        bytes.extend(Frame::Engine(Bytes::from(garbage(1 + seed as usize * 37, seed))).encode());
    }
    bytes.extend(
        Frame::Forward {
            deadline_unix_ms: u64::MAX,
            data: Bytes::from(garbage(100, 99)),
        }
        .encode(),
    );
    bytes.extend(
        Frame::ForwardFailed {
            boot_id: 0xfeed,
            request_id: 0xdead_beef,
            reason: 200,
        }
        .encode(),
    );
    let _ = stream.write_all(&bytes);
    drop(stream);

    block_on(async {
        assert_serving(cluster, "peer-garbage").await;
        for index in 0..cluster.size() {
            for i in 0..20 {
                assert_eq!(
                    get(cluster, index, &format!("peer/before/{i:02}")).await,
                    Some(format!("v{i}").into_bytes()),
                    "member {index} lost peer/before/{i:02}"
                );
            }
        }
    });
}

/// Raw bytes in, raw bytes out: lets a test put a malformed protobuf body in a real gRPC call.
#[derive(Clone, Copy, Debug, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

async fn raw_call(url: &str, path: &'static str, body: Vec<u8>) -> Result<Vec<u8>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(yizhi_testkit::channel(url));
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    grpc.unary(tonic::Request::new(body), path, RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

#[test]
fn malformed_protobuf_on_the_client_port_is_an_error_not_a_crash() {
    on_cluster(|cluster| async move {
        let url = cluster.client_url(0);
        let bodies: [(&str, Vec<u8>); 4] = [
            ("wire type 7", vec![0xff; 16]),
            (
                "a key field claiming 1000 bytes, 2 present",
                vec![0x0a, 0xe8, 0x07, b'a', b'b'],
            ),
            ("an unterminated varint", vec![0x10, 0xff, 0xff, 0xff]),
            ("random bytes", garbage(300, 42)),
        ];
        for (what, body) in bodies {
            for path in [
                "/etcdserverpb.KV/Put",
                "/etcdserverpb.KV/Range",
                "/etcdserverpb.KV/Txn",
            ] {
                let status = raw_call(&url, path, body.clone())
                    .await
                    .expect_err(&format!("{what} to {path} was accepted"));
                assert_eq!(status.code(), Code::Internal, "{what} to {path}: {status:?}");
            }
        }
        // A well-formed body through the same raw path works, so the errors above were the body's.
        let mut good = Vec::new();
        prost::Message::encode(&put_request("raw/k", b"raw-v"), &mut good).expect("encode");
        raw_call(&url, "/etcdserverpb.KV/Put", good)
            .await
            .expect("a valid raw put");
        assert_eq!(get(cluster, 1, "raw/k").await.as_deref(), Some(&b"raw-v"[..]));
        assert_serving(cluster, "malformed-protobuf").await;
    });
}
