//! The request/response workloads: what one operation of each sends, and the setup some need
//! (prefilled keys for reads, granted leases and open streams for keep-alives).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, mpsc};
use tonic::Streaming;
use tonic::transport::Channel;
use yizhi_proto::etcdserverpb::kv_client::KvClient;
use yizhi_proto::etcdserverpb::lease_client::LeaseClient;
use yizhi_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse, PutRequest, RangeRequest, RequestOp,
    TxnRequest, request_op,
};

use super::load::{KeySpace, Plan, Rng, drive};

/// Leases granted for keep-alive runs live this long if the run dies without revoking them.
const BENCH_LEASE_TTL_S: i64 = 60;
/// A setup step (lease grant, stream open) without an answer after this long fails the run.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Clients that prefill the key space of a read workload.
const PREFILL_CLIENTS: usize = 64;

/// One operation of a request/response workload.
#[derive(Clone, Copy, Debug)]
pub enum KvOp {
    Put,
    Range {
        serializable: bool,
    },
    /// A txn without compares whose success branch puts `ops` distinct keys.
    TxnPut {
        ops: usize,
    },
    /// A txn that reads one key with probability `read_ratio`, else puts it.
    TxnMixed {
        read_ratio: f64,
    },
    /// A plain Range with probability `read_ratio`, else a Put.
    Mixed {
        read_ratio: f64,
        serializable: bool,
    },
}

impl KvOp {
    pub fn reads(&self) -> bool {
        matches!(
            self,
            KvOp::Range { .. } | KvOp::TxnMixed { .. } | KvOp::Mixed { .. }
        )
    }
}

/// What every op of a KV workload shares.
#[derive(Debug)]
pub struct KvTarget {
    pub clients: Vec<KvClient<Channel>>,
    pub keys: KeySpace,
    pub sequential: bool,
    pub seed: u64,
    pub value: Vec<u8>,
}

impl KvTarget {
    pub fn client(&self, client_index: usize) -> KvClient<Channel> {
        self.clients[client_index % self.clients.len()].clone()
    }

    /// The key index of a ticket: the next in order, or a seeded draw (the same run with the same
    /// seed asks for the same keys).
    pub fn key_index(&self, ticket: u64, salt: u64) -> u64 {
        if self.sequential {
            ticket % self.keys.count
        } else {
            Rng::new(self.seed ^ ticket.wrapping_mul(0x9E37_79B9) ^ salt.rotate_left(32))
                .below(self.keys.count)
        }
    }

    fn put(&self, key: Vec<u8>) -> PutRequest {
        PutRequest {
            key,
            value: self.value.clone(),
            ..Default::default()
        }
    }

    fn range(&self, key: Vec<u8>, serializable: bool) -> RangeRequest {
        RangeRequest {
            key,
            serializable,
            ..Default::default()
        }
    }

    pub async fn run_op(&self, op: KvOp, client_index: usize, ticket: u64) -> Result<(), String> {
        let mut kv = self.client(client_index);
        let key = self.keys.key(self.key_index(ticket, 0));
        let status = |e: tonic::Status| format!("{:?}: {}", e.code(), e.message());
        match op {
            KvOp::Put => kv.put(self.put(key)).await.map(drop).map_err(status),
            KvOp::Range { serializable } => kv
                .range(self.range(key, serializable))
                .await
                .map(drop)
                .map_err(status),
            KvOp::TxnPut { ops } => {
                let mut indexes: Vec<u64> = (0..ops as u64).map(|i| self.key_index(ticket, i)).collect();
                // A txn may not put one key twice ("duplicate key given in txn request").
                indexes.sort_unstable();
                indexes.dedup();
                let success = indexes
                    .into_iter()
                    .map(|i| RequestOp {
                        request: Some(request_op::Request::RequestPut(self.put(self.keys.key(i)))),
                    })
                    .collect();
                let txn = TxnRequest {
                    success,
                    ..Default::default()
                };
                kv.txn(txn).await.map(drop).map_err(status)
            }
            KvOp::TxnMixed { read_ratio } => {
                let request = if Rng::new(self.seed ^ ticket).chance(read_ratio) {
                    request_op::Request::RequestRange(self.range(key, false))
                } else {
                    request_op::Request::RequestPut(self.put(key))
                };
                let txn = TxnRequest {
                    success: vec![RequestOp {
                        request: Some(request),
                    }],
                    ..Default::default()
                };
                kv.txn(txn).await.map(drop).map_err(status)
            }
            KvOp::Mixed {
                read_ratio,
                serializable,
            } => {
                if Rng::new(self.seed ^ ticket).chance(read_ratio) {
                    kv.range(self.range(key, serializable))
                        .await
                        .map(drop)
                        .map_err(status)
                } else {
                    kv.put(self.put(key)).await.map(drop).map_err(status)
                }
            }
        }
    }

    /// Puts every key of the space once, so reads find what they ask for.
    pub async fn prefill(self: &Arc<Self>, op_timeout: Duration) -> Result<(), String> {
        let plan = Plan {
            total: Some(self.keys.count),
            duration: None,
            rate: None,
            op_timeout,
        };
        let target = self.clone();
        let (tallies, elapsed) = drive(PREFILL_CLIENTS, plan, "prefill", move |client, ticket| {
            let target = target.clone();
            async move {
                let mut kv = target.client(client);
                kv.put(target.put(target.keys.key(ticket)))
                    .await
                    .map(drop)
                    .map_err(|e| e.message().to_string())
            }
        })
        .await;
        let all = super::load::merge(tallies);
        if all.errors.count > 0 {
            let first = all.errors.by_message.keys().next().cloned().unwrap_or_default();
            return Err(format!(
                "prefill of {} keys: {} errors (first: {first})",
                self.keys.count, all.errors.count
            ));
        }
        eprintln!(
            "prefilled {} keys in {:.1} s",
            self.keys.count,
            elapsed.as_secs_f64()
        );
        Ok(())
    }
}

/// One client's keep-alive stream for its own lease.
#[derive(Debug)]
pub struct KeepAliveStream {
    lease_id: i64,
    requests: mpsc::Sender<LeaseKeepAliveRequest>,
    responses: Streaming<LeaseKeepAliveResponse>,
}

/// Grants a lease per client and opens its keep-alive stream.
pub async fn open_keepalives(
    channels: &[Channel],
    clients: usize,
) -> Result<Arc<Vec<Mutex<KeepAliveStream>>>, String> {
    let mut streams = Vec::with_capacity(clients);
    for client in 0..clients {
        let mut lease = LeaseClient::new(channels[client % channels.len()].clone());
        let granted = tokio::time::timeout(
            SETUP_TIMEOUT,
            lease.lease_grant(LeaseGrantRequest {
                ttl: BENCH_LEASE_TTL_S,
                id: 0,
            }),
        )
        .await
        .map_err(|_| "LeaseGrant: no answer".to_string())?
        .map_err(|e| format!("LeaseGrant: {:?}: {}", e.code(), e.message()))?
        .into_inner();
        // One request in flight per client: a queue of one is all the stream needs.
        let (requests, receiver) = mpsc::channel(1);
        // A server may hold the response headers back until it answers a first message (grpc-go
        // does), and the call resolves only on those headers: queue one keep-alive before calling.
        requests
            .send(LeaseKeepAliveRequest { id: granted.id })
            .await
            .map_err(|_| "keep-alive queue closed".to_string())?;
        let responses = tokio::time::timeout(
            SETUP_TIMEOUT,
            lease.lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(receiver)),
        )
        .await
        .map_err(|_| "LeaseKeepAlive: no stream".to_string())?
        .map_err(|e| format!("LeaseKeepAlive: {:?}: {}", e.code(), e.message()))?
        .into_inner();
        let stream = Mutex::new(KeepAliveStream {
            lease_id: granted.id,
            requests,
            responses,
        });
        tokio::time::timeout(SETUP_TIMEOUT, receive_keepalive(&mut *stream.lock().await))
            .await
            .map_err(|_| "first keep-alive: no answer".to_string())??;
        streams.push(stream);
    }
    Ok(Arc::new(streams))
}

/// One keep-alive round trip on a client's stream.
pub async fn keepalive_once(stream: &Mutex<KeepAliveStream>) -> Result<(), String> {
    let mut stream = stream.lock().await;
    let id = stream.lease_id;
    stream
        .requests
        .send(LeaseKeepAliveRequest { id })
        .await
        .map_err(|_| "keep-alive stream closed".to_string())?;
    receive_keepalive(&mut stream).await
}

async fn receive_keepalive(stream: &mut KeepAliveStream) -> Result<(), String> {
    let id = stream.lease_id;
    match stream.responses.message().await {
        Ok(Some(response)) if response.id == id && response.ttl > 0 => Ok(()),
        Ok(Some(response)) => Err(format!(
            "keep-alive of lease {id:x} answered for {:x} with ttl {}",
            response.id, response.ttl
        )),
        Ok(None) => Err("keep-alive stream ended".into()),
        Err(e) => Err(format!("{:?}: {}", e.code(), e.message())),
    }
}
