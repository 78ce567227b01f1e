//! Randomized watch test: whatever the buffer limit, poll timing, missed notifications and
//! compactions, every watcher receives exactly the history of its range from its start revision,
//! once each, grouped per revision and in order, unless it is cancelled by compaction, which
//! only happens when its cursor fell below the compaction point.

mod common;

use std::collections::BTreeMap;

use common::*;
use yizhi_engine::SeededRng;
use yizhi_kv::*;

const SEEDS: u64 = 60;
const STEPS_PER_SEED: usize = 200;
const KEYS: [&str; 5] = ["a", "b", "c", "d", "e"];

struct Tracked {
    key: &'static str,
    range_end: &'static str,
    start: i64,
    /// (revision, key, kind) received so far.
    received: Vec<(i64, String, EventKind)>,
    cancelled_at: Option<i64>,
}

/// Every write in the log, as (revision, key, kind), in order.
fn full_history(kv: &Kv) -> Vec<(i64, String, EventKind)> {
    kv.events
        .iter()
        .flatten()
        .map(|e| {
            (
                e.kv.mod_revision,
                String::from_utf8(e.kv.key.to_vec()).unwrap(),
                e.kind,
            )
        })
        .collect()
}

fn in_range(key: &str, start: &str, end: &str) -> bool {
    match end {
        "" => key == start,
        "\0" => key >= start,
        _ => key >= start && key < end,
    }
}

fn step(kv: &mut Kv, hub: &mut WatchHub, rng: &mut SeededRng) {
    let key = KEYS[rng.below(KEYS.len() as u64) as usize];
    let before = kv.events.len();
    match rng.below(10) {
        0..=5 => {
            kv.put(key, "v");
        }
        6..=7 => {
            kv.delete(key, if rng.chance(1, 2) { "" } else { "\0" });
        }
        8 => {
            let ops = KEYS
                .iter()
                .take(1 + rng.below(3) as usize)
                .map(|k| put_op(k, "t"))
                .collect();
            kv.txn(TxnRequest {
                compare: vec![],
                success: ops,
                failure: vec![],
            })
            .unwrap();
        }
        _ => {
            let current = kv.store.current_revision();
            let _ = kv.compact(current - rng.below(4) as i64);
        }
    }
    // One notification in ten is lost; history must cover for it.
    if kv.events.len() > before && !rng.chance(1, 10) {
        hub.notify(kv.events.last().unwrap());
    }
}

fn poll(kv: &Kv, hub: &mut WatchHub, id: WatchId, t: &mut Tracked, max_events: usize) {
    let responses = hub.poll(&kv.store, id).unwrap();
    let mut last = t.received.last().map_or(0, |r| r.0);
    let events: usize = responses.iter().map(|r| r.events.len()).sum();
    let largest = responses.iter().map(|r| r.events.len()).max().unwrap_or(0);
    assert!(
        events <= max_events.max(largest),
        "a poll stays within its budget"
    );
    for r in responses {
        assert!(t.cancelled_at.is_none(), "nothing after a cancellation");
        if r.canceled {
            assert_eq!(r.compact_revision, kv.store.compact_revision());
            t.cancelled_at = Some(r.compact_revision);
            continue;
        }
        assert!(
            r.revision > last,
            "revisions strictly increase: {} after {last}",
            r.revision
        );
        last = r.revision;
        for e in r.events {
            assert_eq!(e.kv.mod_revision, r.revision, "one revision per response");
            t.received
                .push((r.revision, String::from_utf8(e.kv.key.to_vec()).unwrap(), e.kind));
        }
    }
}

fn check(kv: &Kv, t: &Tracked, seed: u64) {
    let expected: Vec<_> = full_history(kv)
        .into_iter()
        .filter(|(rev, key, _)| *rev >= t.start && in_range(key, t.key, t.range_end))
        .collect();
    match t.cancelled_at {
        None => assert_eq!(t.received, expected, "seed {seed}"),
        Some(compact) => {
            // What arrived is an exact prefix, and the gap really was compacted away.
            assert_eq!(t.received[..], expected[..t.received.len()], "seed {seed}");
            let resume = t.received.last().map_or(t.start, |r| r.0 + 1);
            assert!(
                resume < compact,
                "seed {seed}: cancelled at {resume} >= {compact}"
            );
        }
    }
}

fn run(seed: u64) {
    let mut rng = SeededRng::new(seed);
    let max_events = 1 + rng.below(6) as usize;
    let mut kv = Kv::new();
    let mut hub = WatchHub::new(WatchConfig {
        max_buffered_events: max_events,
        ..WatchConfig::default()
    });
    let mut watchers: BTreeMap<WatchId, Tracked> = BTreeMap::new();
    for _ in 0..STEPS_PER_SEED {
        step(&mut kv, &mut hub, &mut rng);
        if rng.chance(1, 15) {
            let key = KEYS[rng.below(KEYS.len() as u64) as usize];
            let range_end = ["", "\0", "d"][rng.below(3) as usize];
            let current = kv.store.current_revision();
            let start = (current + 1 - rng.below(8) as i64).max(1);
            let req = WatchRequest {
                key: b(key),
                range_end: b(range_end),
                start_revision: start,
                ..Default::default()
            };
            let id = hub.watch(&kv.store, &req).unwrap();
            let tracked = Tracked {
                key,
                range_end,
                start,
                received: Vec::new(),
                cancelled_at: None,
            };
            watchers.insert(id, tracked);
        }
        for (&id, t) in watchers.iter_mut() {
            if rng.chance(1, 3) {
                poll(&kv, &mut hub, id, t, max_events);
            }
        }
    }
    for (&id, t) in watchers.iter_mut() {
        // Drain: a bounded number of polls, each bringing the watcher closer.
        for _ in 0..STEPS_PER_SEED {
            poll(&kv, &mut hub, id, t, max_events);
        }
        check(&kv, t, seed);
    }
}

#[test]
fn every_watcher_sees_its_history_exactly_once_in_order() {
    for seed in 0..SEEDS {
        run(seed);
    }
}
