//! Client sessions (Raft thesis §6.3): a retried write applies once and gets the first answer
//! again; floors, expiry by the replicated session clock, and every limit refuse without applying;
//! the table survives reopen and snapshot install and is part of the state hash.

mod common;

use bytes::Bytes;
use common::*;
use yizhi_kv::*;

const T0_MS: u64 = 1_700_000_000_000;

fn put(key: &str, value: &str) -> Command {
    Command::Put(PutRequest {
        key: b(key),
        value: b(value),
        prev_kv: true,
        ..Default::default()
    })
}

/// What the observations below compare (the state hash covers the applied index, so it is
/// compared against a twin instead).
#[derive(Debug, PartialEq)]
struct Observed {
    revision: i64,
    event_batches: usize,
    leases: Vec<LeaseId>,
    kvs: Vec<KeyValue>,
}

fn observe(kv: &Kv) -> Observed {
    Observed {
        revision: kv.store.current_revision(),
        event_batches: kv.events.len(),
        leases: kv.store.lease_ids(),
        kvs: kv.range("", "\0", 0).unwrap().kvs,
    }
}

/// The replicated part of the session statistics.
fn table_size(kv: &Kv) -> (usize, usize, u64) {
    let s = kv.store.session_stats();
    (s.clients, s.stored_responses, s.stored_bytes)
}

/// Applies `command` and checks that it changed nothing but the applied index: a twin restored
/// from a snapshot, which applies a refused no-op at the same index instead, ends with the same
/// state hash.
fn applies_nothing(kv: &mut Kv, command: Command) -> Result<CommandResponse, KvError> {
    let mut twin = Kv::with_config(kv.store.config());
    twin.store
        .install_snapshot(&kv.store.snapshot().unwrap())
        .unwrap();
    twin.log_index = kv.log_index;
    let before = observe(kv);
    let response = kv.apply(command.clone());
    assert_eq!(
        twin.apply(Command::LeaseRevoke { id: i64::MAX }),
        Err(KvError::LeaseNotFound)
    );
    assert_eq!(observe(kv), before, "{command:?}");
    assert_eq!(table_size(kv), table_size(&twin), "{command:?}");
    assert_eq!(
        kv.store.state_hash().unwrap(),
        twin.store.state_hash().unwrap(),
        "{command:?} changed the replicated state"
    );
    response
}

/// Applies `command` once, then again at a later log index, and checks the retry changed
/// nothing and got the first answer. Returns that answer.
fn apply_twice(kv: &mut Kv, command: Command) -> Result<CommandResponse, KvError> {
    let first = kv.apply(command.clone());
    let duplicates = kv.store.session_stats().duplicates_answered;
    let second = applies_nothing(kv, command.clone());
    assert_eq!(second, first, "{command:?}");
    assert_eq!(kv.store.session_stats().duplicates_answered, duplicates + 1);
    first
}

#[test]
fn a_retried_put_txn_delete_and_grant_apply_once() {
    let mut kv = Kv::new();
    let first = apply_twice(&mut kv, deduped(7, 1, 1, T0_MS, put("k", "v1"))).unwrap();
    assert!(matches!(
        first,
        CommandResponse::Put(PutResponse {
            revision: 2,
            prev_kv: None
        })
    ));
    assert_eq!(kv.get("k").unwrap().version, 1);
    // Retried puts of the same key must not bump its version.
    apply_twice(&mut kv, deduped(7, 2, 1, T0_MS, put("k", "v2"))).unwrap();
    assert_eq!(kv.get("k").unwrap().version, 2);
    let txn = Command::Txn(TxnRequest {
        compare: vec![cmp("k", CompareResult::Equal, CompareTarget::Version(2))],
        success: vec![put_op("k", "v3"), put_op("t", "x")],
        failure: vec![],
    });
    match apply_twice(&mut kv, deduped(7, 3, 2, T0_MS, txn)).unwrap() {
        CommandResponse::Txn(t) => assert!(t.succeeded),
        other => panic!("{other:?}"),
    }
    assert_eq!(kv.get("k").unwrap().version, 3);
    let delete = Command::DeleteRange(DeleteRangeRequest {
        key: b("t"),
        range_end: Bytes::new(),
        prev_kv: true,
    });
    match apply_twice(&mut kv, deduped(7, 4, 4, T0_MS, delete)).unwrap() {
        CommandResponse::DeleteRange(d) => assert_eq!((d.deleted, d.prev_kvs.len()), (1, 1)),
        other => panic!("{other:?}"),
    }
    // A grant asking the state machine for an ID would create a second lease if applied twice.
    let grant = Command::LeaseGrant(LeaseGrantRequest {
        id: 0,
        ttl_secs: 60,
        now_ms: T0_MS,
    });
    apply_twice(&mut kv, deduped(7, 5, 5, T0_MS, grant)).unwrap();
    assert_eq!(kv.store.lease_ids().len(), 1);
    let stats = kv.store.session_stats();
    assert_eq!((stats.clients, stats.stored_responses), (1, 1), "{stats:?}");
}

#[test]
fn a_stored_error_is_answered_again_even_after_the_cause_went_away() {
    let mut kv = Kv::new();
    let with_lease = Command::Put(PutRequest {
        key: b("k"),
        value: b("v"),
        lease: 99,
        ..Default::default()
    });
    let request = deduped(3, 1, 1, T0_MS, with_lease);
    assert_eq!(kv.apply(request.clone()), Err(KvError::LeaseNotFound));
    kv.apply(Command::LeaseGrant(LeaseGrantRequest {
        id: 99,
        ttl_secs: 60,
        now_ms: T0_MS,
    }))
    .unwrap();
    // Applying the put now would succeed; the retry must get the first answer instead.
    assert_eq!(applies_nothing(&mut kv, request), Err(KvError::LeaseNotFound));
    assert!(kv.get("k").is_none());
}

#[test]
fn out_of_order_requests_apply_once_and_the_floor_releases_responses() {
    let mut kv = Kv::new();
    kv.apply(deduped(5, 2, 1, T0_MS, put("b", "2"))).unwrap();
    kv.apply(deduped(5, 1, 1, T0_MS, put("a", "1"))).unwrap();
    assert_eq!(kv.store.current_revision(), 3);
    apply_twice(&mut kv, deduped(5, 2, 1, T0_MS, put("b", "2"))).unwrap();
    apply_twice(&mut kv, deduped(5, 1, 1, T0_MS, put("a", "1"))).unwrap();
    assert_eq!(kv.store.session_stats().stored_responses, 2);
    // Acknowledging everything below 3 releases both kept responses.
    kv.apply(deduped(5, 3, 3, T0_MS, put("c", "3"))).unwrap();
    let stats = kv.store.session_stats();
    assert_eq!(stats.stored_responses, 1, "{stats:?}");
    assert_eq!(
        applies_nothing(&mut kv, deduped(5, 1, 1, T0_MS, put("a", "1"))),
        Err(KvError::SequenceAcknowledged { seq: 1, floor: 3 })
    );
    assert_eq!(
        KvError::SequenceAcknowledged { seq: 1, floor: 3 }.to_string(),
        "yizhi: request sequence 1 was already acknowledged (client floor 3)"
    );
}

#[test]
fn malformed_client_sequences_are_refused() {
    let mut kv = Kv::new();
    kv.apply(deduped(1, 1, 1, T0_MS, put("a", "1"))).unwrap();
    for (client_id, seq, acked_below) in [(0, 1, 1), (2, 0, 0), (2, 3, 4), (1, 3, 4)] {
        assert_eq!(
            applies_nothing(
                &mut kv,
                deduped(client_id, seq, acked_below, T0_MS, put("x", "y"))
            ),
            Err(KvError::InvalidClientSeq)
        );
    }
}

#[test]
fn idle_clients_expire_by_the_session_clock_which_never_moves_back() {
    let config = KvConfig::default();
    let expiry_ms = config.client_idle_expiry_ms;
    let mut kv = Kv::with_config(config);
    kv.apply(deduped(1, 1, 1, T0_MS, put("a", "1"))).unwrap();
    // Client 2's member has a clock far behind: the session clock stays at T0, so client 2 is
    // last seen at T0 too, not at its own idea of now.
    kv.apply(deduped(2, 1, 1, 0, put("b", "1"))).unwrap();
    // Exactly the expiry later, nobody is idle *longer* than it.
    kv.apply(deduped(3, 1, 1, T0_MS + expiry_ms, put("c", "1")))
        .unwrap();
    assert_eq!(kv.store.session_stats().clients, 3);
    kv.apply(deduped(3, 2, 2, T0_MS + expiry_ms + 1, put("c", "2")))
        .unwrap();
    let stats = kv.store.session_stats();
    assert_eq!((stats.clients, stats.expired_clients), (1, 2), "{stats:?}");
    // Client 1 had seq 1 acknowledged (it sends acked_below 2): its retry of seq 2 cannot be
    // recognised any more, so it is refused rather than risk a second application.
    let expired = applies_nothing(&mut kv, deduped(1, 2, 2, T0_MS + expiry_ms + 1, put("a", "2")));
    assert_eq!(expired, Err(KvError::ClientSessionExpired { client_id: 1 }));
    assert_eq!(
        expired.unwrap_err().to_string(),
        "yizhi: client session 0x1 expired; the request may or may not have been applied"
    );
    // Client 2 never had an answer acknowledged: to the table it is a new client.
    kv.apply(deduped(2, 2, 1, T0_MS + expiry_ms + 1, put("b", "2")))
        .unwrap();
    assert_eq!(kv.get("b").unwrap().version, 2);
}

/// Applies `command`, which the limit must refuse with `error`, leaving everything unchanged.
fn refused(kv: &mut Kv, command: Command, error: KvError) {
    assert_eq!(applies_nothing(kv, command), Err(error));
}

#[test]
fn too_many_clients_is_refused_until_one_expires() {
    let config = KvConfig {
        max_client_sessions: 2,
        ..KvConfig::default()
    };
    let mut kv = Kv::with_config(config);
    kv.apply(deduped(1, 1, 1, T0_MS, put("a", "1"))).unwrap();
    kv.apply(deduped(2, 1, 1, T0_MS, put("b", "1"))).unwrap();
    refused(
        &mut kv,
        deduped(3, 1, 1, T0_MS, put("c", "1")),
        KvError::TooManyClientSessions,
    );
    // Known clients still get through; a new one does once another has expired.
    kv.apply(deduped(1, 2, 2, T0_MS + 100, put("a", "2"))).unwrap();
    let later = T0_MS + config.client_idle_expiry_ms + 1;
    kv.apply(deduped(3, 1, 1, later, put("c", "1"))).unwrap();
    assert_eq!(kv.get("c").unwrap().version, 1);
    assert_eq!(kv.store.session_stats().expired_clients, 1);
}

#[test]
fn too_many_unacknowledged_is_refused_until_the_client_acknowledges() {
    let config = KvConfig {
        max_unacknowledged_per_client: 2,
        ..KvConfig::default()
    };
    let mut kv = Kv::with_config(config);
    kv.apply(deduped(1, 1, 1, T0_MS, put("a", "1"))).unwrap();
    kv.apply(deduped(1, 2, 1, T0_MS, put("a", "2"))).unwrap();
    refused(
        &mut kv,
        deduped(1, 3, 1, T0_MS, put("a", "3")),
        KvError::TooManyUnacknowledged { client_id: 1 },
    );
    // The same request, now acknowledging seq 1, has room: it applies once.
    kv.apply(deduped(1, 3, 2, T0_MS, put("a", "3"))).unwrap();
    assert_eq!(kv.get("a").unwrap().version, 3);
    assert_eq!(kv.store.session_stats().stored_responses, 2);
}

#[test]
fn a_full_session_memory_is_refused_until_responses_are_acknowledged() {
    let max_stored_response_bytes = 200;
    let config = KvConfig {
        max_stored_response_bytes,
        max_session_bytes: CLIENT_OVERHEAD_BYTES + 4 * (RESPONSE_OVERHEAD_BYTES + max_stored_response_bytes),
        ..KvConfig::default()
    };
    let mut kv = Kv::with_config(config);
    let mut seq = 1;
    loop {
        let request = deduped(1, seq, 1, T0_MS, put("k", "v"));
        let stats = kv.store.session_stats();
        match kv.apply(request.clone()) {
            Ok(_) => seq += 1,
            Err(e) => {
                assert_eq!(e, KvError::SessionMemoryFull);
                assert_eq!(kv.store.session_stats(), stats);
                // And again, checked against a twin.
                refused(&mut kv, request, KvError::SessionMemoryFull);
                break;
            }
        }
        assert!(seq < 100, "the memory bound never refused");
    }
    let stats = kv.store.session_stats();
    assert!(
        seq > 2 && stats.stored_bytes <= config.max_session_bytes,
        "{stats:?}"
    );
    refused(
        &mut kv,
        deduped(2, 1, 1, T0_MS, put("x", "y")),
        KvError::SessionMemoryFull,
    );
    kv.apply(deduped(1, seq, seq, T0_MS, put("k", "last"))).unwrap();
    assert_eq!(kv.store.session_stats().stored_responses, 1);
}

#[test]
fn a_response_too_large_to_keep_still_applies_once() {
    let config = KvConfig {
        max_stored_response_bytes: 200,
        ..KvConfig::default()
    };
    let mut kv = Kv::with_config(config);
    kv.put("big", &"x".repeat(300));
    // With prev_kv, the put's response carries the 300-byte value.
    let request = deduped(1, 1, 1, T0_MS, put("big", "small"));
    kv.apply(request.clone()).unwrap();
    assert_eq!(
        applies_nothing(&mut kv, request),
        Err(KvError::DuplicateResponseNotRetained { seq: 1 })
    );
    assert_eq!(kv.get("big").unwrap().version, 2);
}

#[test]
fn the_state_hash_covers_the_session_table() {
    let mut plain = Kv::new();
    let mut with_session = Kv::new();
    plain.apply(put("k", "v")).unwrap();
    // Clock 0, so the data and the meta row equal the plain store's; only the table differs.
    with_session.apply(deduped(1, 1, 1, 0, put("k", "v"))).unwrap();
    assert_eq!(observe(&plain).kvs, observe(&with_session).kvs);
    assert_eq!(
        plain.store.current_revision(),
        with_session.store.current_revision()
    );
    assert_ne!(plain.store.state_hash(), with_session.store.state_hash());
    // The floor alone is state too.
    let mut other_floor = Kv::new();
    other_floor.apply(deduped(1, 1, 0, 0, put("k", "v"))).unwrap();
    assert_eq!(other_floor.store.state_hash(), with_session.store.state_hash());
    with_session.apply(deduped(1, 1, 1, 0, put("k", "v"))).unwrap();
    other_floor.apply(deduped(1, 1, 1, 0, put("k", "v"))).unwrap();
    assert_eq!(other_floor.store.state_hash(), with_session.store.state_hash());
}

#[test]
fn a_snapshot_carries_the_table_and_its_clock() {
    let mut source = Kv::new();
    source.apply(deduped(1, 1, 1, T0_MS, put("a", "1"))).unwrap();
    source.apply(deduped(2, 4, 1, T0_MS + 5, put("b", "1"))).unwrap();
    let image = source.store.snapshot().unwrap();
    let mut target = Kv::new();
    target.store.install_snapshot(&image).unwrap();
    target.log_index = source.log_index;
    assert_eq!(target.store.state_hash(), source.store.state_hash());
    let (s, t) = (source.store.session_stats(), target.store.session_stats());
    assert_eq!(
        (s.clients, s.stored_responses, s.stored_bytes),
        (t.clients, t.stored_responses, t.stored_bytes)
    );
    // The installed table answers the retry without applying it.
    let expected = source.apply(deduped(2, 4, 1, T0_MS, put("b", "1")));
    assert!(expected.is_ok());
    assert_eq!(
        applies_nothing(&mut target, deduped(2, 4, 1, T0_MS, put("b", "1"))),
        expected
    );
    // The clock came along: both expire client 1 alike.
    let later = T0_MS + KvConfig::default().client_idle_expiry_ms + 1;
    let a = source.apply(deduped(1, 2, 2, later, put("a", "2")));
    let b = target.apply(deduped(1, 2, 2, later, put("a", "2")));
    assert_eq!(a, Err(KvError::ClientSessionExpired { client_id: 1 }));
    assert_eq!(a, b);
    assert_eq!(target.store.state_hash(), source.store.state_hash());
}

#[test]
fn a_reopened_redb_store_answers_retries_from_its_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.redb");
    let open = || MvccStore::open(RedbBackend::open(&path).unwrap(), KvConfig::default()).unwrap();
    let mut store = open();
    let request = deduped(9, 1, 1, T0_MS, put("k", "v"));
    let first = store.apply(&request, 1).unwrap().response;
    store.apply(&deduped(9, 2, 1, T0_MS, put("j", "v")), 2).unwrap();
    let hash = store.state_hash().unwrap();
    store.flush(true).unwrap();
    drop(store);
    let mut reopened = open();
    assert_eq!(reopened.state_hash().unwrap(), hash);
    let again = reopened.apply(&request, 3).unwrap();
    assert_eq!(again.response, first);
    assert!(again.events.is_empty());
    assert_eq!(reopened.current_revision(), 3);
    // Releasing seq 1 deletes its row: after another reopen it is refused, not re-applied.
    reopened
        .apply(&deduped(9, 3, 2, T0_MS, put("i", "v")), 4)
        .unwrap();
    reopened.flush(true).unwrap();
    drop(reopened);
    let mut reopened = open();
    assert_eq!(reopened.session_stats().stored_responses, 2);
    assert_eq!(
        reopened.apply(&request, 5).unwrap().response,
        Err(KvError::SequenceAcknowledged { seq: 1, floor: 2 })
    );
}
