//! Leases: grant, attach, keep-alive, expiry as a query, revoke deleting keys at one revision.

mod common;

use common::*;
use yizhi_kv::*;

fn grant(kv: &mut Kv, id: LeaseId, ttl_secs: i64, now_ms: u64) -> Result<LeaseGrantResponse, KvError> {
    match kv.apply(Command::LeaseGrant(LeaseGrantRequest { id, ttl_secs, now_ms }))? {
        CommandResponse::LeaseGrant(g) => Ok(g),
        other => panic!("{other:?}"),
    }
}

fn put_with_lease(kv: &mut Kv, key: &str, lease: LeaseId) -> Result<PutResponse, KvError> {
    kv.put_req(PutRequest {
        key: b(key),
        value: b("v"),
        lease,
        ..Default::default()
    })
}

#[test]
fn ids_are_assigned_deterministically_and_callers_may_choose_their_own() {
    let mut kv = Kv::new();
    assert_eq!(grant(&mut kv, 0, 10, 0).unwrap().id, 1);
    assert_eq!(grant(&mut kv, 2, 10, 0).unwrap().id, 2);
    assert_eq!(
        grant(&mut kv, 0, 10, 0).unwrap().id,
        3,
        "steps over the caller's 2"
    );
    assert_eq!(
        grant(&mut kv, 2, 10, 0).unwrap_err().to_string(),
        "etcdserver: lease already exists"
    );
    assert_eq!(
        grant(&mut kv, -4, 10, 0).unwrap_err(),
        KvError::InvalidLeaseId { id: -4 }
    );
    assert_eq!(kv.store.lease_ids(), [1, 2, 3]);
    assert_eq!(kv.store.current_revision(), 1, "grants write no revision");
}

#[test]
fn ttl_is_raised_to_the_minimum_and_capped_at_the_maximum() {
    let mut kv = Kv::new();
    assert_eq!(
        grant(&mut kv, 0, 0, 0).unwrap().ttl_secs,
        DEFAULT_MIN_LEASE_TTL_SECS
    );
    assert_eq!(grant(&mut kv, 0, 60, 0).unwrap().ttl_secs, 60);
    let err = grant(&mut kv, 0, MAX_LEASE_TTL_SECS + 1, 0).unwrap_err();
    assert_eq!(err.to_string(), "etcdserver: too large lease TTL");
}

#[test]
fn remaining_time_follows_the_logical_clock_and_keep_alive_resets_it() {
    let mut kv = Kv::new();
    let id = grant(&mut kv, 0, 10, 1_000).unwrap().id;
    let ttl = |kv: &Kv, now| kv.store.lease_time_to_live(id, now).unwrap();
    assert_eq!(
        (ttl(&kv, 1_000).ttl_secs, ttl(&kv, 1_000).granted_ttl_secs),
        (10, 10)
    );
    assert_eq!(ttl(&kv, 4_500).ttl_secs, 6, "rounded down");
    assert!(kv.store.expired_leases(10_999).is_empty());
    assert_eq!(kv.store.expired_leases(11_000), [id]);
    let r = kv.apply(Command::LeaseKeepAlive { id, now_ms: 9_000 }).unwrap();
    assert!(matches!(
        r,
        CommandResponse::LeaseKeepAlive(LeaseKeepAliveResponse { ttl_secs: 10, .. })
    ));
    assert!(kv.store.expired_leases(18_999).is_empty());
    // A keep-alive stamped by a slower clock never shortens the lease.
    kv.apply(Command::LeaseKeepAlive { id, now_ms: 5_000 }).unwrap();
    assert_eq!(kv.store.lease_expiry(id), Some((19_000, 10)));
    assert!(kv.store.expired_leases(18_999).is_empty());
    assert_eq!(ttl(&kv, 30_000).ttl_secs, 0, "expired but not revoked");
    let missing = kv
        .apply(Command::LeaseKeepAlive { id: 77, now_ms: 0 })
        .unwrap_err();
    assert_eq!(missing.to_string(), "etcdserver: requested lease not found");
    assert_eq!(
        kv.store.lease_time_to_live(77, 0).unwrap_err(),
        KvError::LeaseNotFound
    );
}

#[test]
fn expired_leases_are_listed_soonest_first() {
    let mut kv = Kv::new();
    let late = grant(&mut kv, 0, 30, 0).unwrap().id;
    let early = grant(&mut kv, 0, 10, 0).unwrap().id;
    let tie = grant(&mut kv, 9, 10, 0).unwrap().id;
    assert_eq!(kv.store.expired_leases(100_000), [early, tie, late]);
}

#[test]
fn revoke_deletes_every_attached_key_at_one_revision() {
    let mut kv = Kv::new();
    let id = grant(&mut kv, 0, 10, 0).unwrap().id;
    put_with_lease(&mut kv, "a", id).unwrap(); // 2
    put_with_lease(&mut kv, "b", id).unwrap(); // 3
    put_with_lease(&mut kv, "moved", id).unwrap(); // 4
    kv.put("moved", "no lease now"); // 5
    kv.put("other", "x"); // 6
    let keys = kv.store.lease_time_to_live(id, 0).unwrap().keys;
    assert_eq!(keys, [b("a"), b("b")]);
    let r = kv.apply(Command::LeaseRevoke { id }).unwrap();
    assert_eq!(
        r,
        CommandResponse::LeaseRevoke(LeaseRevokeResponse { revision: 7 })
    );
    assert!(kv.get("a").is_none() && kv.get("b").is_none());
    assert!(kv.get("moved").is_some() && kv.get("other").is_some());
    let events = kv.events.last().unwrap();
    assert!(
        events
            .iter()
            .all(|e| e.kind == EventKind::Delete && e.kv.mod_revision == 7)
    );
    assert_eq!(events.len(), 2);
    let again = kv.apply(Command::LeaseRevoke { id }).unwrap_err();
    assert_eq!(again.to_string(), "etcdserver: requested lease not found");
    assert_eq!(
        put_with_lease(&mut kv, "c", id).unwrap_err(),
        KvError::LeaseNotFound
    );
}

#[test]
fn revoking_a_lease_without_keys_writes_no_revision_and_deleting_a_key_detaches_it() {
    let mut kv = Kv::new();
    let id = grant(&mut kv, 0, 10, 0).unwrap().id;
    put_with_lease(&mut kv, "a", id).unwrap(); // 2
    kv.delete("a", ""); // 3
    assert!(kv.store.lease_time_to_live(id, 0).unwrap().keys.is_empty());
    kv.apply(Command::LeaseRevoke { id }).unwrap();
    assert_eq!(kv.store.current_revision(), 3);
}

#[test]
fn a_txn_compare_on_lease_and_a_put_with_lease_inside_a_txn() {
    let mut kv = Kv::new();
    let id = grant(&mut kv, 0, 10, 0).unwrap().id;
    let put = RequestOp::Put(PutRequest {
        key: b("a"),
        lease: id,
        ..Default::default()
    });
    kv.txn(TxnRequest {
        compare: vec![],
        success: vec![put],
        failure: vec![],
    })
    .unwrap();
    let holds = kv
        .txn(TxnRequest {
            compare: vec![cmp("a", CompareResult::Equal, CompareTarget::Lease(id))],
            success: vec![],
            failure: vec![],
        })
        .unwrap();
    assert!(holds.succeeded);
}
