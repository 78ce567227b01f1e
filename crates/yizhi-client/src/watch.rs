//! Watches that survive a member going away.
//!
//! Each [`Watcher`] owns one gRPC watch stream, served by a background task. The task remembers
//! the next revision it owes the caller (one past the last event or progress notification it
//! delivered); when the stream breaks — the member died, restarted or was partitioned — it opens a
//! new stream on the next endpoint with `start_revision` set to that revision. So the caller sees
//! every event once, in revision order, across reconnections; if the history it still needs was
//! compacted meanwhile, it gets [`Error::Compacted`] and the watcher ends. Reconnection is
//! bounded: [`MAX_WATCH_RECONNECTS`] consecutive failures (with backoff) end the watcher with
//! [`Error::Unreachable`]. At most [`WATCH_BUFFER_BATCHES`] batches wait for a slow reader; then
//! the task stops reading the stream and the server holds back (nothing is dropped).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use yizhi_proto::etcdserverpb as pb;
use yizhi_proto::etcdserverpb::watch_client::WatchClient;
use yizhi_proto::mvccpb;

use crate::client::{Client, MAX_RESPONSE_BYTES};
use crate::error::{Error, Result};
use crate::kv::{option_builders, range_end_for};

/// Batches buffered toward a slow reader.
pub const WATCH_BUFFER_BATCHES: usize = 64;
/// Consecutive failed (re)connections before a watcher gives up.
pub const MAX_WATCH_RECONNECTS: u32 = 12;
/// Requests queued toward the server on one watch stream (a create; nothing else is sent).
const WATCH_REQUEST_QUEUE: usize = 4;

pub use mvccpb::event::EventType;

/// What to watch and from where.
#[derive(Clone, Debug, Default)]
pub struct WatchOptions {
    range_end: Vec<u8>,
    prefix: bool,
    start_revision: i64,
    prev_kv: bool,
    progress_notify: bool,
    no_put: bool,
    no_delete: bool,
}

impl WatchOptions {
    pub fn new() -> Self {
        Self::default()
    }
    option_builders! {
        key_range,
        /// Deliver events from this revision on (0: from the revision the watch is created at).
        start_revision: i64,
        prev_kv,
        /// Ask for periodic empty batches carrying the current revision while nothing happens.
        progress_notify,
        no_put,
        no_delete,
    }
}

/// Events of one revision (or, with no events, a progress notification: everything up to
/// `revision` has been delivered).
#[derive(Clone, Debug, PartialEq)]
pub struct WatchBatch {
    pub revision: i64,
    pub events: Vec<mvccpb::Event>,
}

/// A live watch; dropping it cancels the watch.
#[derive(Debug)]
pub struct Watcher {
    batches: mpsc::Receiver<Result<WatchBatch>>,
    task: JoinHandle<()>,
    resumes: Arc<AtomicU64>,
}

impl Watcher {
    /// The next batch; `None` once the watcher ended (after an error was delivered).
    pub async fn next(&mut self) -> Option<Result<WatchBatch>> {
        self.batches.recv().await
    }

    /// How many times the watch was re-created on a new stream after the first creation.
    pub fn resumes(&self) -> u64 {
        self.resumes.load(Ordering::Relaxed)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How one stream ended.
enum StreamEnd {
    /// The reader dropped the watcher.
    ReaderGone,
    /// The watch cannot continue anywhere (compaction, a refused create).
    Fatal(Error),
    /// The connection or the member failed: try the next endpoint.
    Broken(String),
}

struct WatchTask {
    client: Client,
    create: pb::WatchCreateRequest,
    /// The first revision not yet delivered (0 until the first create fixes it).
    next_revision: i64,
    out: mpsc::Sender<Result<WatchBatch>>,
    created: Option<oneshot::Sender<Result<()>>>,
    resumes: Arc<AtomicU64>,
}

impl Client {
    /// Watches `key` (or a range/prefix of keys); returns once the server has created the watch.
    pub async fn watch(&self, key: impl Into<Vec<u8>>, options: WatchOptions) -> Result<Watcher> {
        let key = key.into();
        let range_end = range_end_for(&key, options.prefix, &options.range_end);
        let mut filters = Vec::new();
        if options.no_put {
            filters.push(pb::watch_create_request::FilterType::Noput as i32);
        }
        if options.no_delete {
            filters.push(pb::watch_create_request::FilterType::Nodelete as i32);
        }
        let create = pb::WatchCreateRequest {
            key,
            range_end,
            start_revision: options.start_revision,
            progress_notify: options.progress_notify,
            filters,
            prev_kv: options.prev_kv,
            watch_id: 0,
            fragment: false,
        };
        let (out, batches) = mpsc::channel(WATCH_BUFFER_BATCHES);
        let (created_tx, created_rx) = oneshot::channel();
        let resumes = Arc::new(AtomicU64::new(0));
        let task = WatchTask {
            resumes: resumes.clone(),
            client: self.clone(),
            create,
            next_revision: options.start_revision,
            out,
            created: Some(created_tx),
        };
        let task = tokio::spawn(task.run());
        match created_rx.await {
            Ok(Ok(())) => Ok(Watcher {
                batches,
                task,
                resumes,
            }),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(Error::Stopped(
                "watch task ended before the watch was created".into(),
            )),
        }
    }
}

impl WatchTask {
    async fn run(mut self) {
        let mut failures = 0u32;
        loop {
            let (index, channel) = self.client.current();
            let (end, delivered) = self.stream_once(channel).await;
            match end {
                StreamEnd::ReaderGone => return,
                StreamEnd::Fatal(error) => return self.fail(error).await,
                StreamEnd::Broken(reason) => {
                    failures = if delivered { 1 } else { failures + 1 };
                    if failures > MAX_WATCH_RECONNECTS {
                        let error = Error::Unreachable {
                            attempts: failures,
                            last: reason,
                        };
                        return self.fail(error).await;
                    }
                    self.client.rotate_from(index);
                    tokio::time::sleep(self.client.backoff(failures)).await;
                }
            }
        }
    }

    async fn fail(mut self, error: Error) {
        match self.created.take() {
            Some(created) => {
                let _ = created.send(Err(error));
            }
            None => {
                let _ = self.out.send(Err(error)).await;
            }
        }
    }

    /// One stream on `channel`; also says whether it got as far as a created watch.
    async fn stream_once(&mut self, channel: tonic::transport::Channel) -> (StreamEnd, bool) {
        let (requests, request_stream) = mpsc::channel(WATCH_REQUEST_QUEUE);
        let mut create = self.create.clone();
        create.start_revision = self.next_revision;
        let request = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)),
        };
        if requests.send(request).await.is_err() {
            return (StreamEnd::Broken("request queue closed".into()), false);
        }
        let mut watch_client = WatchClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES);
        let connect_timeout = self.client.options().connect_timeout * 2;
        let opened = tokio::time::timeout(
            connect_timeout,
            watch_client.watch(ReceiverStream::new(request_stream)),
        )
        .await;
        let mut stream = match opened {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => return (status_end(&status), false),
            Err(_) => return (StreamEnd::Broken("watch stream not opened in time".into()), false),
        };
        let mut created = false;
        loop {
            let response = match stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) => return (StreamEnd::Broken("watch stream ended".into()), created),
                Err(status) => return (status_end(&status), created),
            };
            if let Some(end) = self.handle(response, &mut created).await {
                return (end, created);
            }
        }
    }

    /// Handles one response; `Some` ends the stream.
    async fn handle(&mut self, response: pb::WatchResponse, created: &mut bool) -> Option<StreamEnd> {
        if response.compact_revision > 0 {
            return Some(StreamEnd::Fatal(Error::Compacted {
                compact_revision: response.compact_revision,
            }));
        }
        if response.canceled {
            return Some(StreamEnd::Fatal(Error::WatchCanceled {
                reason: response.cancel_reason,
            }));
        }
        let Some(header) = response.header else {
            return Some(StreamEnd::Fatal(Error::UnexpectedResponse(
                "watch answer without a header".into(),
            )));
        };
        if response.created {
            *created = true;
            if self.next_revision == 0 {
                self.next_revision = header.revision + 1;
            }
            match self.created.take() {
                Some(signal) => {
                    let _ = signal.send(Ok(()));
                }
                None => {
                    self.resumes.fetch_add(1, Ordering::Relaxed);
                }
            }
            return None;
        }
        if !*created {
            return Some(StreamEnd::Fatal(Error::UnexpectedResponse(
                "watch events before the created answer".into(),
            )));
        }
        let revision = match response.events.last() {
            Some(event) => {
                let first = response.events[0].kv.as_ref().map_or(0, |kv| kv.mod_revision);
                let last = event.kv.as_ref().map_or(0, |kv| kv.mod_revision);
                // A gap or a repeat would break the one-delivery-in-order promise: refuse it.
                if first < self.next_revision || last < first {
                    return Some(StreamEnd::Fatal(Error::UnexpectedResponse(format!(
                        "watch events at revisions {first}..={last} while expecting {} or later",
                        self.next_revision
                    ))));
                }
                last
            }
            // Progress: everything up to the header's revision has been delivered.
            None => header.revision,
        };
        self.next_revision = self.next_revision.max(revision + 1);
        let batch = WatchBatch {
            revision,
            events: response.events,
        };
        if self.out.send(Ok(batch)).await.is_err() {
            return Some(StreamEnd::ReaderGone);
        }
        None
    }
}

/// A stream failure: transport trouble and unavailability are worth another endpoint; anything
/// else the server says is final.
fn status_end(status: &tonic::Status) -> StreamEnd {
    match status.code() {
        Code::Unavailable
        | Code::Unknown
        | Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::Internal => StreamEnd::Broken(status.to_string()),
        _ => StreamEnd::Fatal(Error::from_status(status)),
    }
}
