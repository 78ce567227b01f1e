//! watch-latency: `--watchers` watch streams over the key space; putters write values that carry
//! their send time, and every watcher records, per event, how long after the put was sent it
//! arrived. Events that never arrive are errors.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tonic::Streaming;
use tonic::transport::Channel;
use yizhi_proto::etcdserverpb::watch_client::WatchClient;
use yizhi_proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse, watch_request};

use super::load::{ClientTally, KeySpace, join_tallies};
use super::report::ErrorLog;

/// Bytes at the start of each value holding the put's send time (ns since the run started).
pub const STAMP_BYTES: usize = 8;
/// How long watchers get, after the last put was answered, to deliver its events.
const DRAIN_WAIT: Duration = Duration::from_secs(5);
const CREATE_WAIT: Duration = Duration::from_secs(10);

pub fn stamp(value: &mut [u8], start: Instant) {
    assert!(value.len() >= STAMP_BYTES, "value too short for a timestamp");
    let ns = start.elapsed().as_nanos() as u64;
    value[..STAMP_BYTES].copy_from_slice(&ns.to_be_bytes());
}

pub fn read_stamp(value: &[u8]) -> Option<Duration> {
    let bytes: [u8; STAMP_BYTES] = value.get(..STAMP_BYTES)?.try_into().ok()?;
    Some(Duration::from_nanos(u64::from_be_bytes(bytes)))
}

/// Running watchers: they stop when `stop` turns true or when they have seen `expected` events.
#[derive(Debug)]
pub struct Watchers {
    pub delivered: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<ClientTally>>,
}

/// Opens `count` watch streams on the key space (stream i on channel i mod n) and waits until
/// every one is created.
pub async fn start(
    channels: &[Channel],
    count: usize,
    keys: &KeySpace,
    start: Instant,
) -> Result<Watchers, String> {
    let (stop, stop_rx) = watch::channel(false);
    let delivered = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let (requests, responses) = open(&channels[i % channels.len()], i, keys).await?;
        let (delivered, stop_rx) = (delivered.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            // The stream's request side stays open (dropping it would end the watch).
            let _keep_open = requests;
            receive(responses, start, delivered, stop_rx).await
        }));
    }
    Ok(Watchers {
        delivered,
        stop,
        tasks,
    })
}

/// Opens watcher `i`'s stream over the whole key space and waits for its creation; returns the
/// stream's request side (which must stay open) and its responses.
async fn open(
    channel: &Channel,
    i: usize,
    keys: &KeySpace,
) -> Result<(mpsc::Sender<WatchRequest>, Streaming<WatchResponse>), String> {
    let mut client = WatchClient::new(channel.clone());
    let (key, range_end) = keys.range();
    // The request side carries one message.
    let (requests, receiver) = mpsc::channel(1);
    let create = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(WatchCreateRequest {
            key,
            range_end,
            ..Default::default()
        })),
    };
    requests
        .send(create)
        .await
        .map_err(|_| "watch request queue closed".to_string())?;
    let mut responses = tokio::time::timeout(
        CREATE_WAIT,
        client.watch(tokio_stream::wrappers::ReceiverStream::new(receiver)),
    )
    .await
    .map_err(|_| format!("watcher {i}: no stream within {} s", CREATE_WAIT.as_secs()))?
    .map_err(|e| format!("Watch: {:?}: {}", e.code(), e.message()))?
    .into_inner();
    let first = tokio::time::timeout(CREATE_WAIT, responses.message())
        .await
        .map_err(|_| format!("watcher {i}: not created within {} s", CREATE_WAIT.as_secs()))?
        .map_err(|e| format!("Watch: {:?}: {}", e.code(), e.message()))?;
    match first {
        Some(r) if r.created && !r.canceled => Ok((requests, responses)),
        Some(r) => Err(format!("watcher {i} not created: {}", r.cancel_reason)),
        None => Err(format!("watcher {i}: stream ended before it was created")),
    }
}

/// One watcher's task: records each event's delay since its put was sent, until `stop` or the
/// stream ends.
async fn receive(
    mut responses: Streaming<WatchResponse>,
    start: Instant,
    delivered: Arc<AtomicU64>,
    mut stop_rx: watch::Receiver<bool>,
) -> ClientTally {
    let mut tally = ClientTally::empty();
    loop {
        let message = tokio::select! {
            m = responses.message() => m,
            _ = stop_rx.wait_for(|s| *s) => break,
        };
        let response = match message {
            Ok(Some(response)) => response,
            Ok(None) => {
                tally.errors.record("watch stream ended");
                break;
            }
            Err(e) => {
                tally
                    .errors
                    .record(&format!("watch: {:?}: {}", e.code(), e.message()));
                break;
            }
        };
        if response.canceled {
            tally
                .errors
                .record(&format!("watch canceled: {}", response.cancel_reason));
            break;
        }
        for event in response.events {
            let Some(sent) = event.kv.as_ref().and_then(|kv| read_stamp(&kv.value)) else {
                tally.errors.record("event without a bench timestamp");
                continue;
            };
            tally.record_ok(start.elapsed().saturating_sub(sent));
            delivered.fetch_add(1, Ordering::Relaxed);
        }
    }
    tally
}

impl Watchers {
    /// Waits (at most `DRAIN_WAIT`) for `expected` deliveries, stops the watchers, and returns their
    /// tallies plus one error per missing delivery.
    pub async fn finish(self, expected: u64) -> Vec<ClientTally> {
        let deadline = Instant::now() + DRAIN_WAIT;
        while self.delivered.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = self.stop.send(true);
        let mut tallies = join_tallies(self.tasks, "watcher").await;
        let delivered: u64 = tallies.iter().map(|t| t.ok_ops).sum();
        if delivered < expected {
            let mut errors = ErrorLog::default();
            errors.record_n("event not delivered", expected - delivered);
            tallies.push(ClientTally::of_errors(errors));
        }
        tallies
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stamp_reads_back_as_the_time_it_was_written() {
        let start = Instant::now();
        tokio::time::sleep(Duration::from_millis(2)).await;
        let mut value = vec![0u8; 32];
        stamp(&mut value, start);
        let sent = read_stamp(&value).expect("stamped");
        assert!(sent >= Duration::from_millis(2) && sent <= start.elapsed());
        assert_eq!(read_stamp(&value[..7]), None);
    }
}
