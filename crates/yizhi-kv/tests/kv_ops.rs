//! One test per operation and option, with etcd's exact error strings.

mod common;

use bytes::Bytes;
use common::*;
use yizhi_kv::*;

#[test]
fn an_empty_store_is_at_revision_one_and_the_first_put_lands_at_two() {
    let mut kv = Kv::new();
    assert_eq!(kv.store.current_revision(), INITIAL_REVISION);
    assert_eq!(kv.range("a", "", 0).unwrap().revision, 1);
    let r = kv.put("a", "1");
    assert_eq!(r.revision, 2);
    let got = kv.get("a").unwrap();
    assert_eq!(
        got,
        KeyValue {
            key: b("a"),
            create_revision: 2,
            mod_revision: 2,
            version: 1,
            value: b("1"),
            lease: 0
        }
    );
}

#[test]
fn put_keeps_create_revision_and_counts_versions_until_a_delete_resets_them() {
    let mut kv = Kv::new();
    kv.put("a", "1"); // rev 2
    kv.put("a", "2"); // rev 3
    let a = kv.get("a").unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version), (2, 3, 2));
    kv.delete("a", ""); // rev 4
    assert_eq!(kv.get("a"), None);
    kv.put("a", "3"); // rev 5: a new generation
    let a = kv.get("a").unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version), (5, 5, 1));
}

#[test]
fn put_prev_kv_returns_the_overwritten_pair_only_when_asked() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    let req = |prev_kv| PutRequest {
        key: b("a"),
        value: b("2"),
        prev_kv,
        ..Default::default()
    };
    assert_eq!(kv.put_req(req(false)).unwrap().prev_kv, None);
    let prev = kv.put_req(req(true)).unwrap().prev_kv.unwrap();
    assert_eq!((prev.value, prev.version), (b("2"), 2));
    let fresh = kv
        .put_req(PutRequest {
            key: b("new"),
            prev_kv: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(fresh.prev_kv, None);
}

#[test]
fn put_errors_use_etcds_wording() {
    let mut kv = Kv::new();
    let err = |kv: &mut Kv, req: PutRequest| kv.put_req(req).unwrap_err().to_string();
    let empty = PutRequest::default();
    assert_eq!(err(&mut kv, empty), "etcdserver: key is not provided");
    let value_given = PutRequest {
        key: b("a"),
        value: b("x"),
        ignore_value: true,
        ..Default::default()
    };
    assert_eq!(err(&mut kv, value_given), "etcdserver: value is provided");
    let lease_given = PutRequest {
        key: b("a"),
        lease: 7,
        ignore_lease: true,
        ..Default::default()
    };
    assert_eq!(err(&mut kv, lease_given), "etcdserver: lease is provided");
    let missing = PutRequest {
        key: b("a"),
        ignore_value: true,
        ..Default::default()
    };
    assert_eq!(err(&mut kv, missing), "etcdserver: key not found");
    let unknown_lease = PutRequest {
        key: b("a"),
        lease: 7,
        ..Default::default()
    };
    assert_eq!(
        err(&mut kv, unknown_lease),
        "etcdserver: requested lease not found"
    );
    // Refused commands are applied (the index advances) but change nothing.
    assert_eq!(kv.store.current_revision(), 1);
    assert_eq!(kv.store.applied_index(), 5);
}

#[test]
fn ignore_value_and_ignore_lease_keep_the_old_ones() {
    let mut kv = Kv::new();
    let lease = grant(&mut kv, 10);
    kv.put_req(PutRequest {
        key: b("a"),
        value: b("v"),
        lease,
        ..Default::default()
    })
    .unwrap();
    kv.put_req(PutRequest {
        key: b("a"),
        ignore_value: true,
        ignore_lease: true,
        ..Default::default()
    })
    .unwrap();
    let a = kv.get("a").unwrap();
    assert_eq!((a.value, a.lease, a.version), (b("v"), lease, 2));
    kv.put_req(PutRequest {
        key: b("a"),
        value: b("w"),
        ignore_lease: true,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(kv.get("a").unwrap().lease, lease);
    // A plain put detaches the lease.
    kv.put("a", "x");
    assert_eq!(kv.get("a").unwrap().lease, 0);
    let ttl = kv.store.lease_time_to_live(lease, 0).unwrap();
    assert!(ttl.keys.is_empty());
}

fn grant(kv: &mut Kv, ttl_secs: i64) -> LeaseId {
    match kv
        .apply(Command::LeaseGrant(LeaseGrantRequest {
            id: 0,
            ttl_secs,
            now_ms: 0,
        }))
        .unwrap()
    {
        CommandResponse::LeaseGrant(g) => g.id,
        other => panic!("{other:?}"),
    }
}

fn fill(kv: &mut Kv, keys: &[&str]) {
    for k in keys {
        kv.put(k, &format!("v-{k}"));
    }
}

#[test]
fn range_end_selects_single_key_half_open_range_from_key_and_everything() {
    let mut kv = Kv::new();
    fill(&mut kv, &["a", "ab", "abc", "b", "c"]);
    let keys = |key: &str, end: &str| {
        kv.keys(&RangeRequest {
            key: b(key),
            range_end: b(end),
            ..Default::default()
        })
    };
    assert_eq!(keys("ab", ""), ["ab"]);
    assert_eq!(keys("a", "b"), ["a", "ab", "abc"]);
    // The prefix "ab" is [ab, ac).
    assert_eq!(keys("ab", "ac"), ["ab", "abc"]);
    assert_eq!(keys("b", "\0"), ["b", "c"]);
    assert_eq!(keys("", "\0"), ["a", "ab", "abc", "b", "c"]);
    assert!(
        keys("c", "a").is_empty(),
        "an inverted range is empty, as in etcd"
    );
    assert_eq!(
        kv.range("", "", 0).unwrap_err().to_string(),
        "etcdserver: key is not provided"
    );
}

#[test]
fn limit_sets_more_and_count_reports_the_whole_range() {
    let mut kv = Kv::new();
    fill(&mut kv, &["a", "b", "c", "d"]);
    let r = kv
        .store
        .range(&RangeRequest {
            key: b("a"),
            range_end: b("\0"),
            limit: 2,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.kvs.len(), 2);
    assert!(r.more);
    assert_eq!(r.count, 4);
    let exact = RangeRequest {
        key: b("a"),
        range_end: b("\0"),
        limit: 4,
        ..Default::default()
    };
    assert!(!kv.store.range(&exact).unwrap().more);
}

#[test]
fn keys_only_and_count_only() {
    let mut kv = Kv::new();
    fill(&mut kv, &["a", "b"]);
    let base = RangeRequest {
        key: b("a"),
        range_end: b("\0"),
        ..Default::default()
    };
    let keys_only = kv
        .store
        .range(&RangeRequest {
            keys_only: true,
            ..base.clone()
        })
        .unwrap();
    assert!(keys_only.kvs.iter().all(|kv| kv.value.is_empty()));
    assert_eq!(keys_only.kvs[1].mod_revision, 3);
    let count_only = kv
        .store
        .range(&RangeRequest {
            count_only: true,
            ..base
        })
        .unwrap();
    assert!(count_only.kvs.is_empty());
    assert_eq!((count_only.count, count_only.more), (2, false));
}

#[test]
fn sort_targets_orders_and_etcds_defaults() {
    let mut kv = Kv::new();
    kv.put("c", "1"); // rev 2
    kv.put("a", "3"); // rev 3
    kv.put("b", "2"); // rev 4
    kv.put("c", "0"); // rev 5, version 2
    let sorted = |order, target| {
        kv.keys(&RangeRequest {
            key: b("a"),
            range_end: b("\0"),
            sort_order: order,
            sort_target: target,
            ..Default::default()
        })
    };
    use SortOrder::*;
    use SortTarget::*;
    assert_eq!(sorted(None, Key), ["a", "b", "c"]);
    assert_eq!(sorted(Ascend, Key), ["a", "b", "c"]);
    assert_eq!(sorted(Descend, Key), ["c", "b", "a"]);
    assert_eq!(sorted(Ascend, Value), ["c", "b", "a"]);
    // No order with a non-key target means ascending (etcd's default).
    assert_eq!(sorted(None, Value), ["c", "b", "a"]);
    assert_eq!(sorted(Descend, Value), ["a", "b", "c"]);
    assert_eq!(sorted(Ascend, Create), ["c", "a", "b"]);
    assert_eq!(sorted(Descend, Mod), ["c", "b", "a"]);
    // Ties (version 1 for a and b) keep key order in both directions.
    assert_eq!(sorted(Descend, Version), ["c", "a", "b"]);
    assert_eq!(sorted(Ascend, Version), ["a", "b", "c"]);
}

#[test]
fn sorting_happens_before_the_limit() {
    let mut kv = Kv::new();
    fill(&mut kv, &["a", "b", "c"]);
    let r = kv
        .store
        .range(&RangeRequest {
            key: b("a"),
            range_end: b("\0"),
            limit: 1,
            sort_order: SortOrder::Descend,
            sort_target: SortTarget::Key,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.kvs[0].key, b("c"));
    assert!(r.more);
}

#[test]
fn min_max_revision_filters_do_not_change_count() {
    let mut kv = Kv::new();
    fill(&mut kv, &["a", "b", "c"]); // revs 2, 3, 4
    kv.put("a", "again"); // rev 5: a is created at 2, modified at 5
    let filtered = |f: fn(&mut RangeRequest)| {
        let mut req = RangeRequest {
            key: b("a"),
            range_end: b("\0"),
            ..Default::default()
        };
        f(&mut req);
        let r = kv.store.range(&req).unwrap();
        assert_eq!(r.count, 3, "count ignores the filters");
        r.kvs
            .iter()
            .map(|kv| String::from_utf8(kv.key.to_vec()).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(filtered(|r| r.min_mod_revision = 4), ["a", "c"]);
    assert_eq!(filtered(|r| r.max_mod_revision = 3), ["b"]);
    assert_eq!(filtered(|r| r.min_create_revision = 3), ["b", "c"]);
    assert_eq!(filtered(|r| r.max_create_revision = 3), ["a", "b"]);
}

#[test]
fn range_at_a_past_revision_sees_history_and_future_revisions_fail() {
    let mut kv = Kv::new();
    kv.put("a", "1"); // 2
    kv.put("a", "2"); // 3
    kv.delete("a", ""); // 4
    let at = |kv: &Kv, rev| kv.range("a", "", rev).unwrap().kvs;
    assert_eq!(at(&kv, 2)[0].value, b("1"));
    assert_eq!(at(&kv, 3)[0].value, b("2"));
    assert!(at(&kv, 4).is_empty());
    assert!(at(&kv, 1).is_empty());
    assert_eq!(
        kv.range("a", "", 4).unwrap().revision,
        4,
        "header is the current revision"
    );
    assert_eq!(
        kv.range("a", "", 5).unwrap_err().to_string(),
        "mvcc: required revision is a future revision"
    );
}

#[test]
fn delete_range_counts_returns_prev_kvs_and_bumps_revision_only_when_it_deleted() {
    let mut kv = Kv::new();
    fill(&mut kv, &["a", "b", "c"]);
    let r = kv
        .delete_req(DeleteRangeRequest {
            key: b("a"),
            range_end: b("c"),
            prev_kv: true,
        })
        .unwrap();
    assert_eq!(r.deleted, 2);
    assert_eq!(r.revision, 5);
    let prev: Vec<Bytes> = r.prev_kvs.iter().map(|kv| kv.value.clone()).collect();
    assert_eq!(prev, [b("v-a"), b("v-b")]);
    let none = kv.delete("x", "");
    assert_eq!((none.deleted, none.revision), (0, 5));
    assert_eq!(kv.store.current_revision(), 5);
    assert_eq!(
        kv.delete("", "\0").deleted,
        1,
        "empty key with \\0 deletes everything"
    );
    let err = kv.delete_req(DeleteRangeRequest::default()).unwrap_err();
    assert_eq!(err.to_string(), "etcdserver: key is not provided");
}

#[test]
fn compaction_hides_old_revisions_and_rejects_stale_or_future_points() {
    let mut kv = Kv::new();
    kv.put("a", "1"); // 2
    kv.put("a", "2"); // 3
    kv.put("b", "1"); // 4
    kv.delete("b", ""); // 5
    kv.put("c", "1"); // 6
    assert_eq!(kv.compact(5).unwrap().revision, 6);
    assert_eq!(kv.store.current_revision(), 6, "compaction writes no revision");
    let compacted = "mvcc: required revision has been compacted";
    assert_eq!(kv.range("a", "", 4).unwrap_err().to_string(), compacted);
    assert_eq!(
        kv.range("a", "", 4).unwrap_err(),
        KvError::Compacted { compact_revision: 5 }
    );
    // Reading exactly at the compaction point still works.
    assert_eq!(kv.range("a", "", 5).unwrap().kvs[0].value, b("2"));
    assert!(kv.range("b", "", 5).unwrap().kvs.is_empty());
    assert_eq!(kv.compact(5).unwrap_err().to_string(), compacted);
    assert_eq!(kv.compact(3).unwrap_err().to_string(), compacted);
    let future = "mvcc: required revision is a future revision";
    assert_eq!(kv.compact(7).unwrap_err().to_string(), future);
    assert_eq!(kv.compact(6).unwrap().revision, 6);
    assert_eq!(kv.get("a").unwrap().value, b("2"));
}

#[test]
fn compaction_drops_superseded_values_from_the_backend() {
    let mut kv = Kv::new();
    for i in 0..10 {
        kv.put("a", &i.to_string());
    }
    kv.put("gone", "x");
    kv.delete("gone", "");
    let before = kv.store.backend().all_records().unwrap().len();
    assert_eq!(before, 12);
    kv.compact(kv.store.current_revision()).unwrap();
    // Kept: the newest "a", and the delete at the compaction point (for watchers starting there).
    assert_eq!(kv.store.backend().all_records().unwrap().len(), 2);
    kv.put("z", "1");
    kv.compact(kv.store.current_revision()).unwrap();
    assert_eq!(kv.store.backend().all_records().unwrap().len(), 2);
}

#[test]
fn reopening_over_the_same_backend_restores_everything() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    let lease = grant(&mut kv, 60);
    kv.put_req(PutRequest {
        key: b("l"),
        lease,
        ..Default::default()
    })
    .unwrap();
    kv.compact(2).unwrap();
    let backend = kv.store.backend().clone();
    let reopened = MvccStore::open(backend, KvConfig::default()).unwrap();
    assert_eq!(reopened.state_hash().unwrap(), kv.store.state_hash().unwrap());
    assert_eq!(reopened.applied_index(), kv.store.applied_index());
    let ttl = reopened.lease_time_to_live(lease, 0).unwrap();
    assert_eq!(ttl.keys, [b("l")]);
}
