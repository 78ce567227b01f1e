//! failover: finds the leader, `kill -9`s its process, and measures the time until the cluster
//! acknowledges a write again. Puts go to the surviving endpoints every `ATTEMPT_INTERVAL`, each
//! left to finish on its own, so the first acknowledgement is seen whenever it comes.

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use yizhi_proto::etcdserverpb::PutRequest;
use yizhi_proto::etcdserverpb::kv_client::KvClient;

use super::cluster::{connect, find_leader};
use super::report::{ErrorLog, fmt_us};

const ATTEMPT_INTERVAL: Duration = Duration::from_millis(10);
/// Puts in flight at once while no leader answers.
const MAX_INFLIGHT_ATTEMPTS: usize = 256;
const FAILOVER_KEY: &[u8] = b"yizhi-bench/failover";

#[derive(Debug)]
pub struct FailoverOutcome {
    pub killed_index: usize,
    pub killed_pid: i32,
    /// None: no write was acknowledged within the timeout.
    pub failover: Option<Duration>,
    pub attempts: u64,
    pub attempt_errors: ErrorLog,
}

impl FailoverOutcome {
    pub fn to_json(&self) -> Value {
        let errors = self.attempt_errors.to_json();
        json!({
            "workload": "failover",
            "killed_index": self.killed_index,
            "killed_pid": self.killed_pid,
            "failover_ms": self.failover.map(|d| d.as_secs_f64() * 1e3),
            "attempts": self.attempts,
            "attempt_error_count": self.attempt_errors.count,
            "attempt_errors": errors,
            "error_count": u64::from(self.failover.is_none()),
        })
    }

    pub fn to_text(&self) -> String {
        let took = match self.failover {
            Some(d) => fmt_us(d.as_micros() as u64),
            None => "NO WRITE ACKNOWLEDGED (timed out)".into(),
        };
        let mut out = format!(
            "Failover: killed endpoint {} (pid {}); first acknowledged write after {took} ({} attempts, {} failed)\n",
            self.killed_index, self.killed_pid, self.attempts, self.attempt_errors.count
        );
        for (message, n) in &self.attempt_errors.by_message {
            out.push_str(&format!("    {n} × {message}\n"));
        }
        out
    }
}

pub async fn run(endpoints: &[String], pids: &[i32], timeout: Duration) -> Result<FailoverOutcome, String> {
    if endpoints.len() != pids.len() || endpoints.len() < 2 {
        return Err(
            "failover needs ≥ 2 endpoints and one --pids entry per endpoint, in the same order".into(),
        );
    }
    let leader = find_leader(endpoints, Duration::from_secs(30)).await?;
    let mut survivors = Vec::new();
    for (i, url) in endpoints.iter().enumerate() {
        if i != leader {
            survivors.push(KvClient::new(connect(url).await?));
        }
    }
    // A write before the kill proves the survivors' connections and the cluster work.
    let put = PutRequest {
        key: FAILOVER_KEY.to_vec(),
        value: b"before".to_vec(),
        ..Default::default()
    };
    let mut first = survivors[0].clone();
    tokio::time::timeout(timeout, first.put(put.clone()))
        .await
        .map_err(|_| "put before the kill: no answer".to_string())?
        .map_err(|e| format!("put before the kill: {}", e.message()))?;
    kill(Pid::from_raw(pids[leader]), Signal::SIGKILL)
        .map_err(|e| format!("kill -9 {}: {e}", pids[leader]))?;
    let killed_at = Instant::now();
    let (acks, mut acked) = mpsc::channel::<Result<Instant, String>>(MAX_INFLIGHT_ATTEMPTS);
    let inflight = Arc::new(Semaphore::new(MAX_INFLIGHT_ATTEMPTS));
    let mut errors = ErrorLog::default();
    let mut attempts = 0u64;
    let mut next_attempt = killed_at;
    let deadline = killed_at + timeout;
    let failover = loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next_attempt) => {
                next_attempt += ATTEMPT_INTERVAL;
                if let Ok(permit) = inflight.clone().try_acquire_owned() {
                    let mut client = survivors[attempts as usize % survivors.len()].clone();
                    let (acks, put) = (acks.clone(), put.clone());
                    attempts += 1;
                    tokio::spawn(async move {
                        let outcome = client.put(put).await.map(|_| Instant::now()).map_err(|e| e.message().to_string());
                        let _ = acks.send(outcome).await;
                        drop(permit);
                    });
                }
            }
            Some(outcome) = acked.recv() => match outcome {
                Ok(at) => break Some(at.duration_since(killed_at)),
                Err(message) => errors.record(&message),
            },
            _ = tokio::time::sleep_until(deadline) => break None,
        }
    };
    Ok(FailoverOutcome {
        killed_index: leader,
        killed_pid: pids[leader],
        failover,
        attempts,
        attempt_errors: errors,
    })
}
