//! The watch hub: history then live, grouped per revision, no duplicates or gaps, compaction
//! cancels, and the limits.

mod common;

use common::*;
use yizhi_kv::*;

/// A store and a hub wired as the server wires them: every applied entry's events go to notify.
struct Watched {
    kv: Kv,
    hub: WatchHub,
}

impl Watched {
    fn new(config: WatchConfig) -> Self {
        Watched {
            kv: Kv::new(),
            hub: WatchHub::new(config),
        }
    }

    fn put(&mut self, key: &str, value: &str) {
        self.kv.put(key, value);
        self.hub.notify(self.kv.events.last().unwrap());
    }

    fn delete(&mut self, key: &str, end: &str) {
        let deleted = self.kv.delete(key, end).deleted;
        if deleted > 0 {
            self.hub.notify(self.kv.events.last().unwrap());
        }
    }

    fn watch(&mut self, key: &str, end: &str, start_revision: i64) -> WatchId {
        let req = WatchRequest {
            key: b(key),
            range_end: b(end),
            start_revision,
            ..Default::default()
        };
        self.hub.watch(&self.kv.store, &req).unwrap()
    }

    fn poll(&mut self, id: WatchId) -> Vec<WatchResponse> {
        self.hub.poll(&self.kv.store, id).unwrap()
    }
}

/// (revision, [(kind, key)]) per response: the shape the tests compare.
fn shape(responses: &[WatchResponse]) -> Vec<(i64, Vec<(EventKind, String)>)> {
    responses
        .iter()
        .map(|r| {
            let events = r
                .events
                .iter()
                .map(|e| (e.kind, String::from_utf8(e.kv.key.to_vec()).unwrap()))
                .collect();
            (r.revision, events)
        })
        .collect()
}

use EventKind::{Delete, Put};

#[test]
fn history_is_replayed_then_live_events_follow_without_gap_or_repeat() {
    let mut w = Watched::new(WatchConfig::default());
    w.put("a", "1"); // 2
    w.put("b", "1"); // 3
    w.put("a", "2"); // 4
    let id = w.watch("a", "", 3);
    w.put("a", "3"); // 5: buffered? No: the watcher is behind (at 3), so it comes from history.
    let first = w.poll(id);
    assert_eq!(
        shape(&first),
        [(4, vec![(Put, "a".into())]), (5, vec![(Put, "a".into())])]
    );
    w.delete("a", ""); // 6: live
    w.put("b", "2"); // 7: not in range
    w.put("a", "4"); // 8: live
    assert_eq!(
        shape(&w.poll(id)),
        [(6, vec![(Delete, "a".into())]), (8, vec![(Put, "a".into())])]
    );
    assert!(w.poll(id).is_empty(), "nothing twice");
}

#[test]
fn a_watch_from_now_sees_only_later_revisions() {
    let mut w = Watched::new(WatchConfig::default());
    w.put("a", "1");
    let id = w.watch("a", "\0", 0);
    assert!(w.poll(id).is_empty());
    w.put("b", "1");
    assert_eq!(shape(&w.poll(id)), [(3, vec![(Put, "b".into())])]);
}

/// A client resuming its watch on a member that lags asks for a revision this member has not
/// reached yet: nothing until then, then everything from exactly that revision on.
#[test]
fn a_watch_from_a_future_revision_can_be_polled_before_it_is_reached() {
    let mut w = Watched::new(WatchConfig::default());
    w.put("a", "1"); // 2
    let id = w.watch("a", "\0", 5);
    assert!(w.poll(id).is_empty());
    w.put("a", "2"); // 3
    w.put("b", "1"); // 4
    assert!(
        w.poll(id).is_empty(),
        "revisions before the start are not delivered"
    );
    w.put("c", "1"); // 5
    w.put("a", "3"); // 6
    assert_eq!(
        shape(&w.poll(id)),
        [(5, vec![(Put, "c".into())]), (6, vec![(Put, "a".into())])]
    );
}

#[test]
fn events_of_one_revision_arrive_together_in_sub_revision_order() {
    let mut w = Watched::new(WatchConfig::default());
    let live = w.watch("k", "l", 0);
    w.kv.txn(TxnRequest {
        compare: vec![],
        success: vec![put_op("k2", "x"), put_op("k1", "x"), put_op("other", "x")],
        failure: vec![],
    })
    .unwrap();
    w.hub.notify(w.kv.events.last().unwrap());
    let replay = w.watch("k", "l", 1);
    let expected = [(2, vec![(Put, "k2".to_string()), (Put, "k1".to_string())])];
    assert_eq!(shape(&w.poll(live)), expected);
    assert_eq!(shape(&w.poll(replay)), expected, "history groups the same way");
}

#[test]
fn filters_and_prev_kv() {
    let mut w = Watched::new(WatchConfig::default());
    w.put("a", "old");
    let mut req = WatchRequest {
        key: b("a"),
        start_revision: 0,
        no_put: true,
        prev_kv: true,
        ..Default::default()
    };
    let no_put = w.hub.watch(&w.kv.store, &req).unwrap();
    req.no_put = false;
    req.no_delete = true;
    req.prev_kv = false;
    let no_delete = w.hub.watch(&w.kv.store, &req).unwrap();
    w.put("a", "new"); // 3
    w.delete("a", ""); // 4
    let deletes = w.poll(no_put);
    assert_eq!(shape(&deletes), [(4, vec![(Delete, "a".into())])]);
    let prev = deletes[0].events[0].prev_kv.as_ref().unwrap();
    assert_eq!(prev.value, b("new"));
    let puts = w.poll(no_delete);
    assert_eq!(shape(&puts), [(3, vec![(Put, "a".into())])]);
    assert_eq!(puts[0].events[0].prev_kv, None, "prev_kv only when asked");
    // History carries prev_kv too.
    let replay = w
        .hub
        .watch(
            &w.kv.store,
            &WatchRequest {
                key: b("a"),
                start_revision: 3,
                prev_kv: true,
                ..Default::default()
            },
        )
        .unwrap();
    let replayed = w.poll(replay);
    assert_eq!(replayed[0].events[0].prev_kv.as_ref().unwrap().value, b("old"));
    assert_eq!(replayed[1].events[0].prev_kv.as_ref().unwrap().value, b("new"));
}

#[test]
fn a_watch_below_the_compaction_point_is_cancelled_with_it() {
    let mut w = Watched::new(WatchConfig::default());
    w.put("a", "1"); // 2
    w.put("a", "2"); // 3
    w.delete("a", ""); // 4
    w.kv.compact(4).unwrap();
    let stale = w.watch("a", "", 3);
    let responses = w.poll(stale);
    assert_eq!(responses.len(), 1);
    assert!(responses[0].canceled);
    assert_eq!(responses[0].compact_revision, 4);
    assert!(w.poll(stale).is_empty(), "the cancelled watcher is gone");
    assert!(w.hub.is_empty());
    // Starting exactly at the compaction point is allowed, and still sees the delete there.
    let at_point = w.watch("a", "", 4);
    assert_eq!(shape(&w.poll(at_point)), [(4, vec![(Delete, "a".into())])]);
}

#[test]
fn the_number_of_watchers_is_bounded() {
    let mut w = Watched::new(WatchConfig {
        max_watchers: 2,
        ..WatchConfig::default()
    });
    let first = w.watch("a", "", 0);
    w.watch("b", "", 0);
    let req = WatchRequest {
        key: b("c"),
        ..Default::default()
    };
    let err = w.hub.watch(&w.kv.store, &req).unwrap_err();
    assert_eq!(err, WatchError::TooManyWatchers { max_watchers: 2 });
    assert!(w.hub.cancel(first));
    assert!(w.hub.watch(&w.kv.store, &req).is_ok());
    let empty = WatchRequest::default();
    assert!(!w.hub.cancel(first), "cancelling twice");
    assert_eq!(
        w.hub.watch(&w.kv.store, &empty).unwrap_err(),
        WatchError::Kv(KvError::EmptyKey)
    );
}

#[test]
fn a_slow_watcher_stops_buffering_and_catches_up_from_history_in_bounded_polls() {
    let max = 4;
    let mut w = Watched::new(WatchConfig {
        max_buffered_events: max,
        ..WatchConfig::default()
    });
    let slow = w.watch("k", "l", 0);
    for i in 0..10 {
        w.put(&format!("k{i}"), "v"); // revisions 2..=11
    }
    let mut seen = Vec::new();
    loop {
        let batch = w.poll(slow);
        if batch.is_empty() {
            break;
        }
        let events: usize = batch.iter().map(|r| r.events.len()).sum();
        assert!(events <= max, "a poll hands over at most the limit");
        seen.extend(batch.iter().map(|r| r.revision));
        w.put("unrelated", "x"); // the world moves on between polls
    }
    assert_eq!(
        seen,
        (2..=11).collect::<Vec<_>>(),
        "every revision once, in order"
    );
}

#[test]
fn a_slow_watcher_overtaken_by_compaction_is_cancelled() {
    let mut w = Watched::new(WatchConfig {
        max_buffered_events: 1,
        ..WatchConfig::default()
    });
    let slow = w.watch("k", "\0", 0);
    w.put("k", "1"); // 2: buffered
    w.put("k", "2"); // 3: over the limit, left for catch-up
    w.put("k", "3"); // 4
    w.kv.compact(4).unwrap();
    let responses = w.poll(slow);
    assert_eq!(responses[0].revision, 2);
    assert!(responses[1].canceled);
    assert_eq!(responses[1].compact_revision, 4);
}

#[test]
fn a_missed_notify_is_recovered_from_history() {
    let mut w = Watched::new(WatchConfig::default());
    let id = w.watch("a", "", 0);
    w.kv.put("a", "1"); // 2: applied, but the hub is never told
    w.put("a", "2"); // 3
    assert_eq!(
        shape(&w.poll(id)),
        [(2, vec![(Put, "a".into())]), (3, vec![(Put, "a".into())])]
    );
}

#[test]
fn a_watch_from_a_future_revision_waits_for_it() {
    let mut w = Watched::new(WatchConfig::default());
    let id = w.watch("a", "", 4);
    w.put("a", "1"); // 2
    w.put("a", "2"); // 3
    w.put("a", "3"); // 4
    assert_eq!(shape(&w.poll(id)), [(4, vec![(Put, "a".into())])]);
}
