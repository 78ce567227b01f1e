//! `etcdserverpb.Watch`: one bidirectional stream carries many watches.
//!
//! Each client stream is served by one task. Watches live in the member's [`WatchHub`], whose
//! cursor model guarantees that every event is handed out exactly once and in revision order:
//! live events are buffered for watchers in step, everything else is read back from history. The
//! task polls the hub whenever the applier signals a new batch (`subscribe_applied`), and sends
//! one response per revision, after the watch's `created` response.
//!
//! Bounds: responses queued toward one client are [`STREAM_RESPONSE_QUEUE`]; when the client
//! reads slowly the task waits, the hub stops buffering for its watchers at their limit and they
//! catch up from history later (nothing is lost, nothing is cancelled unless compaction overtakes
//! them). A stream holds at most [`MAX_WATCHES_PER_STREAM`] watches (etcd has no limit; the
//! member-wide hub limit stays the last word).
//!
//! Progress: a watch created with `progress_notify` gets an empty response carrying the current
//! revision every [`PROGRESS_NOTIFY_INTERVAL`] when it is in step and had no events in that
//! interval. A progress request is answered with `watch_id` -1 (as etcd 3.5) once every watch of
//! the stream has been handed everything up to the revision it names, so a client may rely on it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};
use yizhi_kv::{WatchError, WatchHub, WatchId};
use yizhi_proto::etcdserverpb as pb;

use super::{Api, convert};
use crate::node::Shared;

/// Watches one client stream may hold (etcd: unlimited). Beyond it a create is refused with a
/// `created` + `canceled` response carrying the reason, as etcd answers any refused create.
pub const MAX_WATCHES_PER_STREAM: usize = 1_000;
/// How often a `progress_notify` watch in step hears the current revision. etcd's default is
/// 10 minutes; ours is shorter so a client resuming after a disconnect loses little, and each
/// notification is one small message per watch.
pub const PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_secs(10);
/// Responses buffered toward one client before the stream's task waits for it to read.
pub const STREAM_RESPONSE_QUEUE: usize = 64;
/// etcd answers a progress request, and marks a refused create, with this id.
pub const INVALID_WATCH_ID: i64 = -1;

const DUPLICATE_WATCH_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
/// A watch whose range end is not after its key (etcd's text).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("mvcc: watcher range is empty")]
struct EmptyWatcherRange;

#[derive(Debug)]
pub struct WatchService {
    api: Api,
}

impl WatchService {
    pub fn new(api: Api) -> Self {
        WatchService { api }
    }
}

#[tonic::async_trait]
impl pb::watch_server::Watch for WatchService {
    type WatchStream = BoxStream<pb::WatchResponse>;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let require_leader = requires_leader(request.metadata());
        if require_leader && self.api.node.shared.status().leader.is_none() {
            return Err(Status::unavailable(NO_LEADER));
        }
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_RESPONSE_QUEUE);
        let mut session = Session::new(self.api.clone(), tx);
        session.require_leader = require_leader;
        tokio::spawn(session.run(inbound));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

const NO_LEADER: &str = "etcdserver: no leader";
/// Leader checks in a row that found none before a leader-requiring stream is ended (etcd's
/// `maxNoLeaderCnt`, one check per election timeout).
const NO_LEADER_CHECKS_MAX: u32 = 3;

/// etcd clients' `WithRequireLeader`: gRPC metadata `hasleader: true`. Such a stream is refused
/// on a member without a leader and ended with "etcdserver: no leader" once it has had none for a
/// while, so that the client moves to a member that still hears the leader (audit F8).
fn requires_leader(metadata: &tonic::metadata::MetadataMap) -> bool {
    metadata
        .get("hasleader")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value == "true")
}

/// The client went away (or the stream failed): the session ends.
#[derive(Debug)]
struct Gone;

#[derive(Debug)]
struct StreamWatch {
    hub_id: WatchId,
    progress_notify: bool,
    fragment: bool,
    /// The revision up to which the last poll found this watch in step (nothing left to send).
    synced_at: Option<i64>,
    /// Whether events went out since the last progress tick (etcd elides the notification then).
    sent_events_since_tick: bool,
}

/// One client stream: its watches by client-visible id, and the channel toward the client.
struct Session {
    api: Api,
    out: mpsc::Sender<Result<pb::WatchResponse, Status>>,
    /// Invariant: every `hub_id` here is registered in the hub, and no other session holds it.
    watches: BTreeMap<i64, StreamWatch>,
    next_auto_id: i64,
    /// A progress request waits until every watch is in step.
    progress_requested: bool,
    /// The hub may hold more for us: poll again.
    dirty: bool,
    /// The client asked for `hasleader`: end the stream when this member has no leader.
    require_leader: bool,
    /// Consecutive leader checks that found none.
    no_leader_checks: u32,
}

impl Drop for Session {
    /// However the stream ends, its watches leave the hub.
    fn drop(&mut self) {
        if self.watches.is_empty() {
            return;
        }
        let mut hub = self.api.node.shared.watch_hub.lock().expect("watch hub lock");
        for watch in self.watches.values() {
            hub.cancel(watch.hub_id);
        }
    }
}

impl Session {
    fn new(api: Api, out: mpsc::Sender<Result<pb::WatchResponse, Status>>) -> Self {
        Session {
            api,
            out,
            watches: BTreeMap::new(),
            next_auto_id: 0,
            progress_requested: false,
            dirty: false,
            require_leader: false,
            no_leader_checks: 0,
        }
    }

    async fn run(mut self, mut inbound: Streaming<pb::WatchRequest>) {
        let mut applied = self.api.node.shared.subscribe_applied();
        let start = tokio::time::Instant::now() + PROGRESS_NOTIFY_INTERVAL;
        let mut ticker = tokio::time::interval_at(start, PROGRESS_NOTIFY_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let election_timeout = self
            .api
            .node
            .election_timeout
            .max(std::time::Duration::from_millis(1));
        let mut leader_checks =
            tokio::time::interval_at(tokio::time::Instant::now() + election_timeout, election_timeout);
        let closed = self.out.clone();
        loop {
            let dirty = self.dirty;
            let step = tokio::select! {
                message = inbound.next() => match message {
                    Some(Ok(request)) => self.handle(request).await,
                    // etcd ends the stream when the client closes its side, or on an error.
                    Some(Err(_)) | None => Err(Gone),
                },
                changed = applied.changed() => match changed {
                    Ok(()) => {
                        self.dirty = true;
                        Ok(())
                    }
                    Err(_) => Err(Gone),
                },
                _ = ticker.tick() => self.progress_tick().await,
                _ = leader_checks.tick(), if self.require_leader => self.check_leader().await,
                () = std::future::ready(()), if dirty => self.pump().await,
                () = closed.closed() => Err(Gone),
            };
            if step.is_err() {
                break;
            }
        }
        // Drop cancels the session's watches in the hub.
    }

    async fn handle(&mut self, request: pb::WatchRequest) -> Result<(), Gone> {
        use pb::watch_request::RequestUnion;
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => {
                let response = self.create(create);
                self.send(response).await
            }
            Some(RequestUnion::CancelRequest(cancel)) => {
                let Some(watch) = self.watches.remove(&cancel.watch_id) else {
                    return Ok(()); // etcd answers nothing for an unknown id.
                };
                self.hub().cancel(watch.hub_id);
                let header = self.api.header(self.api.current_revision());
                self.send(pb::WatchResponse {
                    header: Some(header),
                    watch_id: cancel.watch_id,
                    canceled: true,
                    ..Default::default()
                })
                .await
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                self.progress_requested = true;
                self.dirty = true;
                Ok(())
            }
            None => Ok(()), // etcd ignores an empty request rather than ending the stream.
        }
    }

    fn hub(&self) -> std::sync::MutexGuard<'_, WatchHub> {
        self.api.node.shared.watch_hub.lock().expect("watch hub lock")
    }

    /// Registers a watch; the answer is `created`, and also `canceled` with a reason if refused.
    fn create(&mut self, create: pb::WatchCreateRequest) -> pb::WatchResponse {
        let refuse = |api: &Api, reason: String| pb::WatchResponse {
            header: Some(api.header(api.current_revision())),
            watch_id: INVALID_WATCH_ID,
            created: true,
            canceled: true,
            cancel_reason: reason,
            ..Default::default()
        };
        let id = if create.watch_id == 0 {
            while self.watches.contains_key(&self.next_auto_id) {
                self.next_auto_id += 1;
            }
            self.next_auto_id
        } else if self.watches.contains_key(&create.watch_id) {
            return refuse(&self.api, DUPLICATE_WATCH_ID.into());
        } else {
            create.watch_id
        };
        if self.watches.len() >= MAX_WATCHES_PER_STREAM {
            return refuse(
                &self.api,
                format!("yizhi: too many watches on one stream (at most {MAX_WATCHES_PER_STREAM})"),
            );
        }
        let request = match watch_request(&create) {
            Ok(request) => request,
            Err(reason) => return refuse(&self.api, reason.to_string()),
        };
        let registered = {
            let store = self.api.node.read_store();
            let mut hub = self.hub();
            hub.watch(&store, &request)
                .map(|hub_id| (hub_id, store.current_revision()))
        };
        let (hub_id, revision) = match registered {
            Ok(registered) => registered,
            Err(WatchError::Kv(e)) => return refuse(&self.api, e.to_string()),
            Err(e @ WatchError::TooManyWatchers { .. }) => return refuse(&self.api, e.to_string()),
        };
        if create.watch_id == 0 {
            self.next_auto_id += 1;
        }
        let previous = self.watches.insert(
            id,
            StreamWatch {
                hub_id,
                progress_notify: create.progress_notify,
                fragment: create.fragment,
                synced_at: None,
                sent_events_since_tick: false,
            },
        );
        assert!(previous.is_none(), "watch id {id} registered twice on a stream");
        self.dirty = true;
        pb::WatchResponse {
            header: Some(self.api.header(revision)),
            watch_id: id,
            created: true,
            ..Default::default()
        }
    }

    /// One round: every watch of the stream polled once, its responses sent in order.
    async fn pump(&mut self) -> Result<(), Gone> {
        let round = match poll_round(&self.api.node.shared, &mut self.watches) {
            Ok(round) => round,
            Err(status) => {
                let _ = self.out.send(Err(status)).await;
                return Err(Gone);
            }
        };
        // A watch cut short by the hub's per-poll budget has more: keep polling until quiet.
        self.dirty = !round.responses.is_empty();
        for (id, fragment, response) in round.responses {
            if let Some(watch) = self.watches.get_mut(&id) {
                watch.sent_events_since_tick |= !response.events.is_empty();
            }
            let response = self.response(id, response);
            if fragment {
                let limit = self.api.config.max_request_bytes as usize;
                for part in fragments(response, limit) {
                    self.send(part).await?;
                }
            } else {
                self.send(response).await?;
            }
        }
        if self.progress_requested && round.all_synced {
            self.progress_requested = false;
            self.send_progress(INVALID_WATCH_ID, round.revision).await?;
        }
        Ok(())
    }

    fn response(&self, id: i64, response: yizhi_kv::WatchResponse) -> pb::WatchResponse {
        pb::WatchResponse {
            header: Some(self.api.header(response.revision)),
            watch_id: id,
            canceled: response.canceled,
            compact_revision: response.compact_revision,
            events: response.events.into_iter().map(convert::event).collect(),
            ..Default::default()
        }
    }

    /// Every `progress_notify` watch in step and quiet since the last tick hears the revision.
    async fn progress_tick(&mut self) -> Result<(), Gone> {
        self.pump().await?;
        let mut due = Vec::new();
        for (&id, watch) in &mut self.watches {
            if watch.progress_notify
                && !watch.sent_events_since_tick
                && let Some(revision) = watch.synced_at
            {
                due.push((id, revision));
            }
            watch.sent_events_since_tick = false;
        }
        for (id, revision) in due {
            self.send_progress(id, revision).await?;
        }
        Ok(())
    }

    /// A progress notification: a response with no events, saying `watch_id` has seen `revision`.
    async fn send_progress(&self, watch_id: i64, revision: i64) -> Result<(), Gone> {
        self.send(pb::WatchResponse {
            header: Some(self.api.header(revision)),
            watch_id,
            ..Default::default()
        })
        .await
    }

    /// Ends a leader-requiring stream after [`NO_LEADER_CHECKS_MAX`] checks in a row without one.
    async fn check_leader(&mut self) -> Result<(), Gone> {
        if self.api.node.shared.status().leader.is_some() {
            self.no_leader_checks = 0;
            return Ok(());
        }
        self.no_leader_checks += 1;
        if self.no_leader_checks < NO_LEADER_CHECKS_MAX {
            return Ok(());
        }
        let _ = self.out.send(Err(Status::unavailable(NO_LEADER))).await;
        Err(Gone)
    }

    async fn send(&self, response: pb::WatchResponse) -> Result<(), Gone> {
        self.out.send(Ok(response)).await.map_err(|_| Gone)
    }
}

/// What one poll of every watch produced, under one view of the store.
struct Round {
    /// Client watch id, whether the watch asked for fragmentation, the response.
    responses: Vec<(i64, bool, yizhi_kv::WatchResponse)>,
    /// The store's revision during the poll.
    revision: i64,
    /// No watch had anything left at or below `revision`.
    all_synced: bool,
}

/// Polls each watch once with the store and the hub locked (in that order; the applier never
/// holds both), so a watch found empty is in step with `revision`.
fn poll_round(shared: &Arc<Shared>, watches: &mut BTreeMap<i64, StreamWatch>) -> Result<Round, Status> {
    let store = shared.read_store();
    let mut hub = shared.watch_hub.lock().expect("watch hub lock");
    let revision = store.current_revision();
    let mut responses = Vec::new();
    let mut all_synced = true;
    let mut cancelled = Vec::new();
    for (&id, watch) in watches.iter_mut() {
        let polled = hub
            .poll(&store, watch.hub_id)
            .map_err(|e| Status::internal(format!("etcdserver: {e}")))?;
        if polled.is_empty() {
            watch.synced_at = Some(revision);
            continue;
        }
        watch.synced_at = None;
        all_synced = false;
        for response in polled {
            if response.canceled {
                cancelled.push(id);
            }
            responses.push((id, watch.fragment, response));
        }
    }
    for id in cancelled {
        // The hub dropped the watcher with its cancellation.
        watches.remove(&id);
    }
    Ok(Round {
        responses,
        revision,
        all_synced,
    })
}

/// The hub's request from etcd's create request. Filters etcd does not know are ignored, as etcd
/// does.
fn watch_request(create: &pb::WatchCreateRequest) -> Result<yizhi_kv::WatchRequest, EmptyWatcherRange> {
    use pb::watch_create_request::FilterType;
    let range_end = Bytes::copy_from_slice(&create.range_end);
    if !range_end.is_empty() && range_end.as_ref() != b"\0" && create.key.as_slice() >= range_end.as_ref() {
        return Err(EmptyWatcherRange);
    }
    Ok(yizhi_kv::WatchRequest {
        key: Bytes::copy_from_slice(&create.key),
        range_end,
        start_revision: create.start_revision,
        no_put: create.filters.contains(&(FilterType::Noput as i32)),
        no_delete: create.filters.contains(&(FilterType::Nodelete as i32)),
        prev_kv: create.prev_kv,
    })
}

/// etcd's fragmentation: a response of two or more events whose encoding reaches `limit_bytes`
/// is split into parts each below the limit (or holding a single event), every part but the last
/// marked `fragment`. Events keep their order; each part carries the header and ids.
pub fn fragments(response: pb::WatchResponse, limit_bytes: usize) -> Vec<pb::WatchResponse> {
    if response.encoded_len() < limit_bytes || response.events.len() < 2 {
        return vec![response];
    }
    let mut empty = response.clone();
    empty.events = Vec::new();
    empty.fragment = true;
    // An event's share of a message: its bytes plus the field tag and length prefix.
    let event_bytes = |e: &yizhi_proto::mvccpb::Event| {
        let len = e.encoded_len();
        1 + prost::length_delimiter_len(len) + len
    };
    let base_bytes = empty.encoded_len();
    let event_count = response.events.len();
    let mut parts = Vec::new();
    let mut current = empty.clone();
    let mut current_bytes = base_bytes;
    for event in response.events {
        let bytes = event_bytes(&event);
        if !current.events.is_empty() && current_bytes + bytes >= limit_bytes {
            parts.push(std::mem::replace(&mut current, empty.clone()));
            current_bytes = base_bytes;
        }
        current_bytes += bytes;
        current.events.push(event);
    }
    current.fragment = false;
    parts.push(current);
    assert_eq!(parts.iter().map(|p| p.events.len()).sum::<usize>(), event_count);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use yizhi_proto::mvccpb;

    fn response_of(event_value_bytes: &[usize]) -> pb::WatchResponse {
        pb::WatchResponse {
            header: Some(pb::ResponseHeader {
                revision: 7,
                ..Default::default()
            }),
            watch_id: 3,
            events: event_value_bytes
                .iter()
                .enumerate()
                .map(|(i, &n)| mvccpb::Event {
                    r#type: 0,
                    kv: Some(mvccpb::KeyValue {
                        key: format!("k{i}").into_bytes(),
                        value: vec![b'v'; n],
                        mod_revision: 7,
                        ..Default::default()
                    }),
                    prev_kv: None,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn keys(parts: &[pb::WatchResponse]) -> Vec<Vec<u8>> {
        parts
            .iter()
            .flat_map(|p| p.events.iter().map(|e| e.kv.as_ref().unwrap().key.clone()))
            .collect()
    }

    #[test]
    fn small_or_single_event_responses_are_not_split() {
        let small = response_of(&[10, 10]);
        assert_eq!(fragments(small.clone(), 1024), vec![small]);
        let single = response_of(&[5000]);
        assert_eq!(fragments(single.clone(), 1024), vec![single]);
    }

    #[test]
    fn large_responses_split_in_order_with_fragment_on_all_but_the_last() {
        let original = response_of(&[300; 20]);
        let parts = fragments(original.clone(), 1024);
        assert!(parts.len() > 2, "{} parts", parts.len());
        assert_eq!(keys(&parts), keys(std::slice::from_ref(&original)));
        for (i, part) in parts.iter().enumerate() {
            assert_eq!(part.fragment, i + 1 < parts.len());
            assert_eq!(part.watch_id, 3);
            assert_eq!(part.header, original.header);
            assert!(part.encoded_len() < 1024 || part.events.len() == 1, "part {i}");
        }
    }

    #[test]
    fn an_oversize_event_travels_alone() {
        let parts = fragments(response_of(&[10, 4000, 10]), 1024);
        let sizes: Vec<usize> = parts.iter().map(|p| p.events.len()).collect();
        assert_eq!(sizes, vec![1, 1, 1]);
        assert_eq!(
            parts.iter().map(|p| p.fragment).collect::<Vec<_>>(),
            vec![true, true, false]
        );
    }

    #[test]
    fn empty_ranges_are_refused_like_etcd() {
        let create = |key: &str, end: &str| pb::WatchCreateRequest {
            key: key.into(),
            range_end: end.into(),
            ..Default::default()
        };
        assert_eq!(watch_request(&create("b", "a")).unwrap_err(), EmptyWatcherRange);
        assert_eq!(watch_request(&create("a", "a")).unwrap_err(), EmptyWatcherRange);
        assert!(watch_request(&create("a", "\0")).is_ok());
        assert!(watch_request(&create("a", "b")).is_ok());
        let filtered = watch_request(&pb::WatchCreateRequest {
            key: b"a".to_vec(),
            filters: vec![1],
            ..Default::default()
        })
        .unwrap();
        assert!(filtered.no_delete && !filtered.no_put);
    }
}
