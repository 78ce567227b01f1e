//! Txn: compares over keys and ranges, branches, nesting, one revision, limits and duplicates.

mod common;

use bytes::Bytes;
use common::*;
use yizhi_kv::*;

use CompareResult::*;

fn txn(compare: Vec<Compare>, success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
    TxnRequest {
        compare,
        success,
        failure,
    }
}

#[test]
fn all_writes_of_a_txn_share_one_revision_with_increasing_sub_revisions() {
    let mut kv = Kv::new();
    kv.put("old", "x"); // 2
    let r = kv
        .txn(txn(
            vec![],
            vec![put_op("a", "1"), put_op("b", "2"), delete_op("old", "")],
            vec![],
        ))
        .unwrap();
    assert!(r.succeeded);
    assert_eq!(r.revision, 3);
    assert_eq!(kv.get("a").unwrap().mod_revision, 3);
    assert_eq!(kv.get("b").unwrap().mod_revision, 3);
    let events = kv.events.last().unwrap();
    assert_eq!(events.len(), 3, "one event per write, in sub-revision order");
    assert_eq!(events[2].kind, EventKind::Delete);
    let subs: Vec<i64> = kv
        .store
        .backend()
        .all_records()
        .unwrap()
        .iter()
        .filter(|(r, _)| r.main == 3)
        .map(|(r, _)| r.sub)
        .collect();
    assert_eq!(subs, [0, 1, 2]);
}

#[test]
fn a_txn_without_writes_does_not_move_the_revision() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    let r = kv.txn(txn(vec![], vec![range_op("a", "")], vec![])).unwrap();
    assert_eq!(r.revision, 2);
    assert_eq!(kv.store.current_revision(), 2);
    let ResponseOp::Range(range) = &r.responses[0] else {
        panic!("{r:?}")
    };
    assert_eq!(range.kvs[0].value, b("1"));
}

#[test]
fn compares_choose_the_branch() {
    let mut kv = Kv::new();
    kv.put("a", "10"); // 2
    kv.put("a", "20"); // 3, version 2
    let cases = [
        (cmp("a", Equal, CompareTarget::Version(2)), true),
        (cmp("a", Greater, CompareTarget::Version(1)), true),
        (cmp("a", Less, CompareTarget::Version(2)), false),
        (cmp("a", NotEqual, CompareTarget::Version(2)), false),
        (cmp("a", Equal, CompareTarget::Create(2)), true),
        (cmp("a", Equal, CompareTarget::Mod(3)), true),
        (cmp("a", Less, CompareTarget::Mod(3)), false),
        (cmp("a", Equal, CompareTarget::Value(b("20"))), true),
        (cmp("a", Greater, CompareTarget::Value(b("1"))), true),
        (cmp("a", Less, CompareTarget::Value(b("3"))), true),
        (cmp("a", Equal, CompareTarget::Lease(0)), true),
        (cmp("a", NotEqual, CompareTarget::Lease(0)), false),
        // A missing key compares as a zero key-value, except on value, which always fails.
        (cmp("nope", Equal, CompareTarget::Version(0)), true),
        (cmp("nope", Equal, CompareTarget::Create(0)), true),
        (cmp("nope", Equal, CompareTarget::Value(Bytes::new())), false),
        (cmp("nope", NotEqual, CompareTarget::Value(b("x"))), false),
    ];
    for (compare, expected) in cases {
        let r = kv
            .txn(txn(vec![compare.clone()], vec![range_op("a", "")], vec![]))
            .unwrap();
        assert_eq!(r.succeeded, expected, "{compare:?}");
        assert_eq!(r.responses.len(), usize::from(expected));
    }
}

#[test]
fn a_range_compare_holds_only_when_every_key_in_the_range_does() {
    let mut kv = Kv::new();
    kv.put("k1", "a");
    kv.put("k2", "a");
    kv.put("k2", "b");
    let over_range = |result, target| Compare {
        result,
        target,
        key: b("k"),
        range_end: b("l"),
    };
    let check = |kv: &mut Kv, c: Compare| kv.txn(txn(vec![c], vec![], vec![])).unwrap().succeeded;
    assert!(check(&mut kv, over_range(Greater, CompareTarget::Version(0))));
    assert!(!check(&mut kv, over_range(Equal, CompareTarget::Version(1))));
    assert!(!check(&mut kv, over_range(Equal, CompareTarget::Value(b("a")))));
    kv.put("k2", "a");
    assert!(check(&mut kv, over_range(Equal, CompareTarget::Value(b("a")))));
}

#[test]
fn failure_branch_runs_when_any_compare_fails() {
    let mut kv = Kv::new();
    let r = kv
        .txn(txn(
            vec![
                cmp("a", Equal, CompareTarget::Version(0)),
                cmp("a", Equal, CompareTarget::Version(5)),
            ],
            vec![put_op("s", "1")],
            vec![put_op("f", "1")],
        ))
        .unwrap();
    assert!(!r.succeeded);
    assert!(kv.get("s").is_none());
    assert!(kv.get("f").is_some());
}

#[test]
fn later_ops_see_earlier_writes_and_nested_compares_see_the_state_before_the_txn() {
    let mut kv = Kv::new();
    let nested = txn(
        vec![cmp("a", Equal, CompareTarget::Version(0))],
        vec![put_op("nested-saw-no-a", "1")],
        vec![put_op("nested-saw-a", "1")],
    );
    let r = kv
        .txn(txn(
            vec![],
            vec![put_op("a", "1"), range_op("a", ""), RequestOp::Txn(nested)],
            vec![],
        ))
        .unwrap();
    let ResponseOp::Range(range) = &r.responses[1] else {
        panic!("{r:?}")
    };
    assert_eq!(range.kvs[0].value, b("1"), "a range sees the put before it");
    // etcd decides every branch, nested ones included, against the state before the txn.
    assert!(kv.get("nested-saw-no-a").is_some());
    let ResponseOp::Txn(inner) = &r.responses[2] else {
        panic!("{r:?}")
    };
    assert!(inner.succeeded);
    assert_eq!(inner.revision, 2);
}

#[test]
fn too_many_ops_is_refused_per_list_with_a_configurable_limit() {
    let mut kv = Kv::new();
    let ops = |n: usize| (0..n).map(|i| put_op(&format!("k{i}"), "v")).collect();
    assert!(kv.txn(txn(vec![], ops(DEFAULT_MAX_TXN_OPS), vec![])).is_ok());
    let err = kv
        .txn(txn(vec![], ops(DEFAULT_MAX_TXN_OPS + 1), vec![]))
        .unwrap_err();
    assert_eq!(err.to_string(), "etcdserver: too many operations in txn request");
    let err = kv.txn(txn(vec![], vec![], ops(129))).unwrap_err();
    assert_eq!(err, KvError::TooManyOps, "the branch not taken counts too");
    let mut small = Kv::with_config(KvConfig {
        max_txn_ops: 2,
        ..KvConfig::default()
    });
    assert_eq!(small.txn(txn(vec![], ops(3), vec![])), Err(KvError::TooManyOps));
    let nested = RequestOp::Txn(txn(vec![], ops(3), vec![]));
    assert_eq!(
        small.txn(txn(vec![], vec![nested], vec![])),
        Err(KvError::TooManyOps)
    );
}

#[test]
fn overlapping_writes_in_one_list_are_duplicates() {
    let mut kv = Kv::new();
    let dup = "etcdserver: duplicate key given in txn request";
    let refuse = |kv: &mut Kv, ops: Vec<RequestOp>| kv.txn(txn(vec![], ops, vec![])).unwrap_err().to_string();
    assert_eq!(refuse(&mut kv, vec![put_op("a", "1"), put_op("a", "2")]), dup);
    assert_eq!(refuse(&mut kv, vec![put_op("ab", "1"), delete_op("a", "b")]), dup);
    assert_eq!(
        refuse(&mut kv, vec![delete_op("a", "\0"), put_op("zz", "1")]),
        dup
    );
    let nested = RequestOp::Txn(txn(vec![], vec![], vec![put_op("a", "2")]));
    assert_eq!(refuse(&mut kv, vec![put_op("a", "1"), nested]), dup);
    // Allowed: deletes overlapping deletes, a put next to a range, and the same key in the two
    // branches of one txn (only one of them runs).
    let ok = vec![delete_op("a", "c"), delete_op("b", "d"), put_op("d", "1")];
    assert!(kv.txn(txn(vec![], ok.clone(), ok)).is_ok());
    let both_branches = RequestOp::Txn(txn(vec![], vec![put_op("x", "1")], vec![put_op("x", "2")]));
    assert!(kv.txn(txn(vec![], vec![both_branches], vec![])).is_ok());
    assert_eq!(kv.get("x").unwrap().value, b("1"));
}

#[test]
fn a_failing_op_on_the_chosen_path_fails_the_whole_txn_and_writes_nothing() {
    let mut kv = Kv::new();
    let before = kv.store.state_hash().unwrap();
    // A put of "a", then `failing`, on the success path.
    let refuse_after_a_put = |kv: &mut Kv, failing: RequestOp| {
        kv.txn(txn(vec![], vec![put_op("a", "1"), failing], vec![]))
            .unwrap_err()
    };
    let bad_lease = PutRequest {
        key: b("b"),
        lease: 99,
        ..Default::default()
    };
    let err = refuse_after_a_put(&mut kv, RequestOp::Put(bad_lease));
    assert_eq!(err.to_string(), "etcdserver: requested lease not found");
    let future_read = RangeRequest {
        key: b("a"),
        revision: 50,
        ..Default::default()
    };
    let err = refuse_after_a_put(&mut kv, RequestOp::Range(future_read));
    assert_eq!(err, KvError::FutureRevision);
    let empty_key = RequestOp::DeleteRange(DeleteRangeRequest::default());
    let err = kv.txn(txn(vec![], vec![], vec![empty_key])).unwrap_err();
    assert_eq!(err, KvError::EmptyKey, "shape is checked on both branches");
    assert!(kv.get("a").is_none());
    // The applied index moved (it is in the hash), nothing else did.
    let mut fresh = Kv::new();
    assert_ne!(before, kv.store.state_hash().unwrap());
    for _ in 0..3 {
        fresh.apply(Command::LeaseRevoke { id: 1 }).unwrap_err();
    }
    assert_eq!(fresh.store.state_hash().unwrap(), kv.store.state_hash().unwrap());
}

#[test]
fn nesting_is_bounded() {
    let mut kv = Kv::new();
    let mut req = txn(vec![], vec![put_op("deep", "1")], vec![]);
    for _ in 0..MAX_TXN_DEPTH {
        req = txn(vec![], vec![RequestOp::Txn(req)], vec![]);
    }
    let store_err = kv.store.apply(&Command::Txn(req.clone()), 1).unwrap().response;
    assert_eq!(
        store_err.unwrap_err(),
        KvError::TxnTooDeep {
            max_depth: MAX_TXN_DEPTH
        }
    );
    let encoded = encode_command(&Command::Txn(req));
    assert!(matches!(
        decode_command(&encoded),
        Err(DecodeError::TooDeep { .. })
    ));
}
