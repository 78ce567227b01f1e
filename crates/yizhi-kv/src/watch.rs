//! The watch hub: per-replica (not replicated) bookkeeping of watchers over the store.
//!
//! Each watcher has a cursor, `next_revision`: every revision below it has been handed over or
//! buffered, none at or above it has. Live events are buffered only for a watcher whose cursor
//! is exactly at the revision being notified, so nothing is ever duplicated; any revision not
//! buffered (slow watcher, missed notify, watch from the past) is read back from the store's
//! history on [`WatchHub::poll`], so nothing is ever skipped. If compaction overtakes a cursor the
//! watcher is cancelled with the compact revision, as etcd does.
//!
//! Slow watchers: a watcher whose buffer would exceed `max_buffered_events` stops buffering (it
//! is *not* cancelled) and falls back to catch-up from history, which reads at most
//! `max_buffered_events` per poll (but always at least one whole revision). Memory per watcher is
//! thus bounded by the limit or by the largest single revision, whichever is larger.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use thiserror::Error;

use crate::backend::Backend;
use crate::error::KvError;
use crate::index::KeyRange;
use crate::revision::Revision;
use crate::store::MvccStore;
use crate::types::{Event, EventKind};

/// Watchers one hub serves (etcd bounds them per stream; a replica-wide bound protects memory).
pub const DEFAULT_MAX_WATCHERS: usize = 10_000;
/// Events buffered per watcher before it falls back to catch-up from history.
pub const DEFAULT_MAX_BUFFERED_EVENTS: usize = 1_000;
/// Revisions read from history in one step of a catch-up.
pub const CATCH_UP_WINDOW_REVISIONS: i64 = 256;

pub type WatchId = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchConfig {
    pub max_watchers: usize,
    pub max_buffered_events: usize,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            max_watchers: DEFAULT_MAX_WATCHERS,
            max_buffered_events: DEFAULT_MAX_BUFFERED_EVENTS,
        }
    }
}

/// etcd's `WatchCreateRequest`, less the fields that belong to the stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchRequest {
    pub key: Bytes,
    pub range_end: Bytes,
    /// 0 (or less): from the next revision on.
    pub start_revision: i64,
    pub no_put: bool,
    pub no_delete: bool,
    pub prev_kv: bool,
}

/// Either the events of one revision, or a cancellation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchResponse {
    pub watch_id: WatchId,
    /// The revision of `events`; for a cancellation, the store's current revision.
    pub revision: i64,
    pub events: Vec<Event>,
    /// Set when the watcher was cancelled because its revision was compacted.
    pub compact_revision: i64,
    pub canceled: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum WatchError {
    #[error("yizhi-kv: too many watchers (at most {max_watchers})")]
    TooManyWatchers { max_watchers: usize },
    #[error(transparent)]
    Kv(#[from] KvError),
}

#[derive(Debug)]
struct Watcher {
    range: KeyRange,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    /// Invariant: every revision below this was buffered or delivered (or matched nothing).
    next_revision: i64,
    buffer: VecDeque<WatchResponse>,
    buffered_events: usize,
}

impl Watcher {
    fn select(&self, events: &[Event]) -> Vec<Event> {
        events
            .iter()
            .filter(|e| self.range.contains(&e.kv.key))
            .filter(|e| match e.kind {
                EventKind::Put => !self.no_put,
                EventKind::Delete => !self.no_delete,
            })
            .map(|e| Event {
                prev_kv: if self.prev_kv { e.prev_kv.clone() } else { None },
                ..e.clone()
            })
            .collect()
    }
}

#[derive(Debug, Default)]
pub struct WatchHub {
    config: WatchConfig,
    watchers: BTreeMap<WatchId, Watcher>,
    next_id: WatchId,
}

impl WatchHub {
    pub fn new(config: WatchConfig) -> Self {
        assert!(
            config.max_watchers >= 1 && config.max_buffered_events >= 1,
            "{config:?}"
        );
        WatchHub {
            config,
            watchers: BTreeMap::new(),
            next_id: 1,
        }
    }

    pub fn len(&self) -> usize {
        self.watchers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.watchers.is_empty()
    }

    /// Registers a watcher. Its history (a start revision at or below the current one) and any
    /// compaction cancel are delivered by [`WatchHub::poll`].
    pub fn watch<B: Backend>(
        &mut self,
        store: &MvccStore<B>,
        req: &WatchRequest,
    ) -> Result<WatchId, WatchError> {
        let range = KeyRange::new(&req.key, &req.range_end)?;
        if self.watchers.len() >= self.config.max_watchers {
            return Err(WatchError::TooManyWatchers {
                max_watchers: self.config.max_watchers,
            });
        }
        let next_revision = if req.start_revision <= 0 {
            store.current_revision() + 1
        } else {
            req.start_revision
        };
        let id = self.next_id;
        self.next_id += 1;
        let watcher = Watcher {
            range,
            no_put: req.no_put,
            no_delete: req.no_delete,
            prev_kv: req.prev_kv,
            next_revision,
            buffer: VecDeque::new(),
            buffered_events: 0,
        };
        assert!(
            self.watchers.insert(id, watcher).is_none(),
            "watch id {id} reused"
        );
        Ok(id)
    }

    /// Removes a watcher; false if it did not exist.
    pub fn cancel(&mut self, id: WatchId) -> bool {
        self.watchers.remove(&id).is_some()
    }

    /// Hands the events one applied entry produced (all of one revision) to in-step watchers.
    pub fn notify(&mut self, events: &[Event]) {
        let Some(first) = events.first() else {
            return;
        };
        let revision = first.kv.mod_revision;
        assert!(
            events.iter().all(|e| e.kv.mod_revision == revision),
            "one notify carries one revision"
        );
        let max_buffered = self.config.max_buffered_events;
        for (&watch_id, watcher) in &mut self.watchers {
            if watcher.next_revision != revision {
                continue; // Behind (catching up) or ahead (its start is in the future).
            }
            let selected = watcher.select(events);
            if selected.is_empty() {
                watcher.next_revision = revision + 1;
            } else if watcher.buffered_events + selected.len() <= max_buffered {
                watcher.buffered_events += selected.len();
                watcher.buffer.push_back(WatchResponse {
                    watch_id,
                    revision,
                    events: selected,
                    compact_revision: 0,
                    canceled: false,
                });
                watcher.next_revision = revision + 1;
            }
            // Otherwise the cursor stays: the watcher catches up from history when polled.
        }
    }

    /// Everything ready for `id`: buffered revisions, then catch-up from history, one response
    /// per revision in order. A cancellation is the last response; the watcher is then gone.
    pub fn poll<B: Backend>(
        &mut self,
        store: &MvccStore<B>,
        id: WatchId,
    ) -> Result<Vec<WatchResponse>, KvError> {
        let max_events = self.config.max_buffered_events;
        let Some(watcher) = self.watchers.get_mut(&id) else {
            return Ok(Vec::new());
        };
        let mut out: Vec<WatchResponse> = watcher.buffer.drain(..).collect();
        watcher.buffered_events = 0;
        let cancelled = catch_up(store, id, watcher, max_events, &mut out)?;
        if cancelled {
            self.watchers.remove(&id);
        }
        Ok(out)
    }
}

/// Reads missed revisions from history into `out` until the watcher is in step or the per-poll
/// budget of `max_events` is spent. Returns whether the watcher was cancelled by compaction.
fn catch_up<B: Backend>(
    store: &MvccStore<B>,
    id: WatchId,
    watcher: &mut Watcher,
    max_events: usize,
    out: &mut Vec<WatchResponse>,
) -> Result<bool, KvError> {
    let current = store.current_revision();
    let start = watcher.next_revision;
    // The drained buffer counts against the same per-poll budget.
    let mut emitted: usize = out.iter().map(|r| r.events.len()).sum();
    while watcher.next_revision <= current {
        // Checked before the budget: a cancellation carries no events, so it is never deferred.
        if watcher.next_revision < store.compact_revision() {
            out.push(WatchResponse {
                watch_id: id,
                revision: current,
                events: Vec::new(),
                compact_revision: store.compact_revision(),
                canceled: true,
            });
            return Ok(true);
        }
        if emitted >= max_events {
            break;
        }
        let from = watcher.next_revision;
        let to = current.min(from + CATCH_UP_WINDOW_REVISIONS - 1);
        let history = store.history_events(&watcher.range, from, to)?;
        if !emit_revisions(id, watcher, &history, max_events, &mut emitted, out) {
            break;
        }
        watcher.next_revision = to + 1;
    }
    // Caught up, stopped by the budget, or a watch from a future revision (a client resuming on
    // a member that has not applied as far yet): its cursor waits where it is.
    assert!(watcher.next_revision <= current + 1 || watcher.next_revision == start);
    Ok(false)
}

/// Emits whole revisions of `history` while the budget allows; a revision is never split, and
/// one is always emitted when nothing was yet. Returns false when it stopped early, with the
/// cursor on the first revision not emitted.
fn emit_revisions(
    id: WatchId,
    watcher: &mut Watcher,
    history: &[(Revision, Event)],
    max_events: usize,
    emitted: &mut usize,
    out: &mut Vec<WatchResponse>,
) -> bool {
    for group in history.chunk_by(|a, b| a.0.main == b.0.main) {
        let revision = group[0].0.main;
        assert!(revision >= watcher.next_revision, "history before the cursor");
        let events: Vec<Event> = group.iter().map(|(_, e)| e.clone()).collect();
        let selected = watcher.select(&events);
        if *emitted > 0 && *emitted + selected.len() > max_events {
            watcher.next_revision = revision;
            return false;
        }
        *emitted += selected.len();
        if !selected.is_empty() {
            out.push(WatchResponse {
                watch_id: id,
                revision,
                events: selected,
                compact_revision: 0,
                canceled: false,
            });
        }
    }
    true
}
