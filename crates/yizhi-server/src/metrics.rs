//! `GET /metrics` in Prometheus' text format on `--listen-metrics-urls` (etcd's flag; off unless
//! given). A deliberately small HTTP/1 responder: one request per connection, a bounded request
//! head, a bounded number of connections at once; anything but `GET /metrics` is a 404.
//!
//! What it reports is what an operator needs to see that the member is healthy and that the
//! bounded tables stay within their limits: the engine's term, commit and applied index, the
//! store's revision, and the exactly-once session table (clients, stored answers and their bytes,
//! duplicates answered, clients expired).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::node::NodeHandle;

/// Connections served at once; more wait in the listen queue.
pub const MAX_CONNECTIONS: usize = 16;
/// The request head we read; a scrape's is a few hundred bytes.
pub const MAX_REQUEST_HEAD_BYTES: usize = 8 * 1024;
/// A client must send its request head within this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The metrics listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("listening for metrics on {addr}: {source}")]
pub struct MetricsListenError {
    pub addr: String,
    pub source: std::io::Error,
}

/// Serves every address until the process stops (the listeners die with the runtime).
pub async fn serve(node: NodeHandle, addrs: Vec<String>) -> Result<(), MetricsListenError> {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    for addr in addrs {
        let listener = match tokio::net::TcpListener::bind(&addr).await {
            Ok(listener) => listener,
            Err(source) => return Err(MetricsListenError { addr, source }),
        };
        let (node, slots) = (node.clone(), slots.clone());
        tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let node = node.clone();
                tokio::spawn(async move {
                    let _ = answer(stream, &node).await;
                    drop(slot);
                });
            }
        });
    }
    Ok(())
}

async fn answer(mut stream: TcpStream, node: &NodeHandle) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read_head = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_HEAD_BYTES {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    if tokio::time::timeout(REQUEST_TIMEOUT, read_head).await.is_err() {
        return Ok(());
    }
    let request_line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let (status, body) = if request_line.starts_with(b"GET /metrics ") || request_line == b"GET /metrics" {
        ("200 OK", render(node))
    } else {
        ("404 Not Found", "only GET /metrics is served here\n".to_string())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// The exposition text.
pub fn render(node: &NodeHandle) -> String {
    let status = node.shared.status();
    let (revision, sessions) = {
        let store = node.read_store();
        (store.current_revision(), store.session_stats())
    };
    let is_leader = u64::from(status.leader == Some(node.local_id()));
    let gauges: [(&str, &str, u64); 10] = [
        ("yizhi_server_is_leader", "1 if this member leads", is_leader),
        (
            "yizhi_server_term",
            "the engine's term (Raft) or ballot round (Paxos)",
            status.term,
        ),
        (
            "yizhi_server_commit_index",
            "highest log index known committed here",
            status.commit,
        ),
        (
            "yizhi_server_applied_index",
            "highest log index applied here",
            node.shared.applied(),
        ),
        (
            "yizhi_mvcc_revision",
            "the store's current revision",
            revision.max(0) as u64,
        ),
        (
            "yizhi_session_clients",
            "exactly-once clients remembered",
            sessions.clients as u64,
        ),
        (
            "yizhi_session_stored_responses",
            "answers kept for retries",
            sessions.stored_responses as u64,
        ),
        (
            "yizhi_session_stored_bytes",
            "bytes charged to the session table (bounded by its limit)",
            sessions.stored_bytes,
        ),
        (
            "yizhi_session_duplicates_answered_total",
            "retries answered from the table since this member started",
            sessions.duplicates_answered,
        ),
        (
            "yizhi_session_expired_clients_total",
            "idle clients forgotten since this member started",
            sessions.expired_clients,
        ),
    ];
    let mut text = String::new();
    for (name, help, value) in gauges {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        let _ = write!(
            text,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    }
    text
}
