//! The command codec: every command round-trips; malformed input is an error, never a panic.

use bytes::Bytes;
use yizhi_engine::SeededRng;
use yizhi_kv::*;

fn bytes(rng: &mut SeededRng) -> Bytes {
    let len = rng.below(5) as usize;
    (0..len).map(|_| rng.below(256) as u8).collect::<Vec<_>>().into()
}

fn int(rng: &mut SeededRng) -> i64 {
    match rng.below(4) {
        0 => 0,
        1 => i64::MIN,
        2 => i64::MAX,
        _ => rng.next_u64() as i64,
    }
}

fn range(rng: &mut SeededRng) -> RangeRequest {
    let orders = [SortOrder::None, SortOrder::Ascend, SortOrder::Descend];
    let targets = [
        SortTarget::Key,
        SortTarget::Version,
        SortTarget::Create,
        SortTarget::Mod,
        SortTarget::Value,
    ];
    RangeRequest {
        key: bytes(rng),
        range_end: bytes(rng),
        limit: int(rng),
        revision: int(rng),
        sort_order: orders[rng.below(3) as usize],
        sort_target: targets[rng.below(5) as usize],
        serializable: rng.chance(1, 2),
        keys_only: rng.chance(1, 2),
        count_only: rng.chance(1, 2),
        min_mod_revision: int(rng),
        max_mod_revision: int(rng),
        min_create_revision: int(rng),
        max_create_revision: int(rng),
    }
}

fn put(rng: &mut SeededRng) -> PutRequest {
    PutRequest {
        key: bytes(rng),
        value: bytes(rng),
        lease: int(rng),
        prev_kv: rng.chance(1, 2),
        ignore_value: rng.chance(1, 2),
        ignore_lease: rng.chance(1, 2),
    }
}

fn delete(rng: &mut SeededRng) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: bytes(rng),
        range_end: bytes(rng),
        prev_kv: rng.chance(1, 2),
    }
}

fn compare(rng: &mut SeededRng) -> Compare {
    let results = [
        CompareResult::Equal,
        CompareResult::Greater,
        CompareResult::Less,
        CompareResult::NotEqual,
    ];
    let target = match rng.below(5) {
        0 => CompareTarget::Version(int(rng)),
        1 => CompareTarget::Create(int(rng)),
        2 => CompareTarget::Mod(int(rng)),
        3 => CompareTarget::Value(bytes(rng)),
        _ => CompareTarget::Lease(int(rng)),
    };
    Compare {
        result: results[rng.below(4) as usize],
        target,
        key: bytes(rng),
        range_end: bytes(rng),
    }
}

fn txn(rng: &mut SeededRng, depth: usize) -> TxnRequest {
    let ops = |rng: &mut SeededRng| -> Vec<RequestOp> {
        (0..rng.below(3))
            .map(|_| match rng.below(if depth < 3 { 4 } else { 3 }) {
                0 => RequestOp::Range(range(rng)),
                1 => RequestOp::Put(put(rng)),
                2 => RequestOp::DeleteRange(delete(rng)),
                _ => RequestOp::Txn(txn(rng, depth + 1)),
            })
            .collect()
    };
    TxnRequest {
        compare: (0..rng.below(3)).map(|_| compare(rng)).collect(),
        success: ops(rng),
        failure: ops(rng),
    }
}

fn uint(rng: &mut SeededRng) -> u64 {
    match rng.below(4) {
        0 => 0,
        1 => 1,
        2 => u64::MAX,
        _ => rng.next_u64(),
    }
}

/// Any command, a third of them wrapped in `Deduped`.
fn command(rng: &mut SeededRng) -> Command {
    let plain = plain_command(rng);
    if !rng.chance(1, 3) {
        return plain;
    }
    Command::Deduped {
        request: ClientSeq {
            client_id: uint(rng),
            seq: uint(rng),
            acked_below: uint(rng),
        },
        now_ms: uint(rng),
        command: Box::new(plain),
    }
}

fn plain_command(rng: &mut SeededRng) -> Command {
    match rng.below(8) {
        0 => Command::Range(range(rng)),
        1 => Command::Put(put(rng)),
        2 => Command::DeleteRange(delete(rng)),
        3 => Command::Txn(txn(rng, 0)),
        4 => Command::Compact(CompactionRequest {
            revision: int(rng),
            physical: rng.chance(1, 2),
        }),
        5 => Command::LeaseGrant(LeaseGrantRequest {
            id: int(rng),
            ttl_secs: int(rng),
            now_ms: rng.next_u64(),
        }),
        6 => Command::LeaseRevoke { id: int(rng) },
        _ => Command::LeaseKeepAlive {
            id: int(rng),
            now_ms: rng.next_u64(),
        },
    }
}

#[test]
fn every_command_round_trips() {
    let mut rng = SeededRng::new(1);
    for _ in 0..5_000 {
        let c = command(&mut rng);
        let encoded = encode_command(&c);
        // The lowest version that can carry the command, so older members read it.
        let version = if matches!(c, Command::Deduped { .. }) {
            2
        } else {
            1
        };
        assert_eq!(encoded[0], version, "{c:?}");
        assert_eq!(decode_command(&encoded), Ok(c));
    }
}

#[test]
fn every_strict_prefix_and_any_trailing_byte_is_refused() {
    let mut rng = SeededRng::new(2);
    for _ in 0..300 {
        let encoded = encode_command(&command(&mut rng));
        assert_only_the_whole_encoding_decodes(&encoded, decode_command);
    }
}

/// Every strict prefix of `encoded` is refused, and so is `encoded` with one byte more.
fn assert_only_the_whole_encoding_decodes<T: std::fmt::Debug>(
    encoded: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, DecodeError>,
) {
    for cut in 0..encoded.len() {
        assert!(decode(&encoded[..cut]).is_err(), "prefix of {cut} bytes");
    }
    let mut longer = encoded.to_vec();
    longer.push(0);
    assert!(matches!(
        decode(&longer),
        Err(DecodeError::TrailingBytes { count: 1, .. })
    ));
}

#[test]
fn mutated_and_random_input_never_panics() {
    let mut rng = SeededRng::new(3);
    for _ in 0..20_000 {
        let mut data = encode_command(&command(&mut rng));
        for _ in 0..=rng.below(3) {
            let at = rng.below(data.len() as u64) as usize;
            data[at] = rng.below(256) as u8;
        }
        let _ = decode_command(&data);
        let noise: Vec<u8> = (0..rng.below(40)).map(|_| rng.below(256) as u8).collect();
        let _ = decode_command(&noise);
    }
}

#[test]
fn malformed_input_gets_a_specific_error() {
    assert_eq!(decode_command(&[]), Err(DecodeError::Empty));
    assert_eq!(
        decode_command(&[9, 2]),
        Err(DecodeError::UnsupportedVersion {
            what: "command",
            version: 9
        })
    );
    assert_eq!(
        decode_command(&[COMMAND_CODEC_VERSION, 200]),
        Err(DecodeError::UnknownTag {
            what: "command",
            tag: 200
        })
    );
    // A put whose key claims a gigabyte: refused without allocating it.
    let huge_len = [COMMAND_CODEC_VERSION, 2, 0x80, 0x80, 0x80, 0x80, 0x04];
    assert!(matches!(
        decode_command(&huge_len),
        Err(DecodeError::Truncated { .. })
    ));
    // A compact command whose flag byte sets a bit no version defines.
    let bad_flags = [COMMAND_CODEC_VERSION, 5, 0, 0b10];
    assert!(matches!(
        decode_command(&bad_flags),
        Err(DecodeError::UnknownFlags { .. })
    ));
}

#[test]
fn the_encoding_is_compact() {
    let put = Command::Put(PutRequest {
        key: Bytes::from_static(b"key"),
        value: Bytes::from_static(b"value"),
        ..Default::default()
    });
    // version, tag, 1+3 key, 1+5 value, lease, flags.
    assert_eq!(encode_command(&put).len(), 14);
}

#[test]
fn version_one_entries_still_decode_and_cannot_carry_deduped() {
    let put = Command::Put(PutRequest {
        key: Bytes::from_static(b"k"),
        value: Bytes::from_static(b"v"),
        ..Default::default()
    });
    // Bytes as a version-1 writer produced them: version, tag, key, value, lease, flags.
    let v1 = [1, 2, 1, b'k', 1, b'v', 0, 0];
    assert_eq!(decode_command(&v1), Ok(put.clone()));
    assert_eq!(encode_command(&put), v1);
    // The same body under version 2 is accepted too (and re-encodes as version 1).
    let mut v2 = v1;
    v2[0] = 2;
    assert_eq!(decode_command(&v2), Ok(put.clone()));
    let deduped = Command::Deduped {
        request: ClientSeq {
            client_id: 7,
            seq: 3,
            acked_below: 2,
        },
        now_ms: 1000,
        command: Box::new(put),
    };
    let mut encoded = encode_command(&deduped);
    assert_eq!(encoded[..6], [2, 9, 7, 3, 2, 0xe8]);
    encoded[0] = 1;
    assert_eq!(
        decode_command(&encoded),
        Err(DecodeError::UnknownTag {
            what: "command",
            tag: 9
        })
    );
    assert!(matches!(
        decode_command(&[3, 2]),
        Err(DecodeError::UnsupportedVersion { version: 3, .. })
    ));
}

#[test]
fn a_deduped_command_inside_a_deduped_command_is_refused() {
    // version 2, Deduped(client 1, seq 1, acked 1, now 0), wrapping Deduped(...) wrapping a revoke.
    let nested = [2, 9, 1, 1, 1, 0, 9, 1, 1, 1, 0, 7, 2];
    assert!(matches!(
        decode_command(&nested),
        Err(DecodeError::Invalid { what: "command", .. })
    ));
    let inner_alone = [2, 9, 1, 1, 1, 0, 7, 2];
    assert_eq!(
        decode_command(&inner_alone),
        Ok(Command::Deduped {
            request: ClientSeq {
                client_id: 1,
                seq: 1,
                acked_below: 1
            },
            now_ms: 0,
            command: Box::new(Command::LeaseRevoke { id: 1 }),
        })
    );
}

fn kv(rng: &mut SeededRng) -> KeyValue {
    KeyValue {
        key: bytes(rng),
        create_revision: int(rng),
        mod_revision: int(rng),
        version: int(rng),
        value: bytes(rng),
        lease: int(rng),
    }
}

fn kvs(rng: &mut SeededRng) -> Vec<KeyValue> {
    (0..rng.below(3)).map(|_| kv(rng)).collect()
}

fn range_response(rng: &mut SeededRng) -> RangeResponse {
    RangeResponse {
        revision: int(rng),
        kvs: kvs(rng),
        more: rng.chance(1, 2),
        count: int(rng),
    }
}

fn put_response(rng: &mut SeededRng) -> PutResponse {
    PutResponse {
        revision: int(rng),
        prev_kv: rng.chance(1, 2).then(|| kv(rng)),
    }
}

fn delete_response(rng: &mut SeededRng) -> DeleteRangeResponse {
    DeleteRangeResponse {
        revision: int(rng),
        deleted: int(rng),
        prev_kvs: kvs(rng),
    }
}

fn txn_response(rng: &mut SeededRng, depth: usize) -> TxnResponse {
    let responses = (0..rng.below(4))
        .map(|_| match rng.below(if depth < 3 { 4 } else { 3 }) {
            0 => ResponseOp::Range(range_response(rng)),
            1 => ResponseOp::Put(put_response(rng)),
            2 => ResponseOp::DeleteRange(delete_response(rng)),
            _ => ResponseOp::Txn(txn_response(rng, depth + 1)),
        })
        .collect();
    TxnResponse {
        revision: int(rng),
        succeeded: rng.chance(1, 2),
        responses,
    }
}

fn kv_error(rng: &mut SeededRng) -> KvError {
    let all = [
        KvError::EmptyKey,
        KvError::ValueProvided,
        KvError::LeaseProvided,
        KvError::KeyNotFound,
        KvError::LeaseNotFound,
        KvError::LeaseExists,
        KvError::LeaseTtlTooLarge,
        KvError::TooManyOps,
        KvError::DuplicateKey,
        KvError::Compacted {
            compact_revision: int(rng),
        },
        KvError::FutureRevision,
        KvError::TxnTooDeep { max_depth: 16 },
        KvError::InvalidLeaseId { id: int(rng) },
        KvError::Backend(BackendError::Io("disk on fire".to_string())),
        KvError::Backend(BackendError::Corrupt("bad page ✓".to_string())),
        KvError::InvalidClientSeq,
        KvError::ClientSessionExpired { client_id: uint(rng) },
        KvError::SequenceAcknowledged {
            seq: uint(rng),
            floor: uint(rng),
        },
        KvError::TooManyClientSessions,
        KvError::TooManyUnacknowledged { client_id: uint(rng) },
        KvError::SessionMemoryFull,
        KvError::DuplicateResponseNotRetained { seq: uint(rng) },
    ];
    all[rng.below(all.len() as u64) as usize].clone()
}

fn response(rng: &mut SeededRng) -> Result<CommandResponse, KvError> {
    Ok(match rng.below(9) {
        0 => CommandResponse::Range(range_response(rng)),
        1 => CommandResponse::Put(put_response(rng)),
        2 => CommandResponse::DeleteRange(delete_response(rng)),
        3 => CommandResponse::Txn(txn_response(rng, 0)),
        4 => CommandResponse::Compact(CompactionResponse { revision: int(rng) }),
        5 => CommandResponse::LeaseGrant(LeaseGrantResponse {
            revision: int(rng),
            id: int(rng),
            ttl_secs: int(rng),
        }),
        6 => CommandResponse::LeaseRevoke(LeaseRevokeResponse { revision: int(rng) }),
        7 => CommandResponse::LeaseKeepAlive(LeaseKeepAliveResponse {
            revision: int(rng),
            id: int(rng),
            ttl_secs: int(rng),
        }),
        _ => return Err(kv_error(rng)),
    })
}

#[test]
fn every_response_round_trips_and_malformed_responses_are_errors() {
    let mut rng = SeededRng::new(4);
    for _ in 0..5_000 {
        let r = response(&mut rng);
        let encoded = encode_response(&r);
        assert_eq!(encoded[0], RESPONSE_CODEC_VERSION);
        assert_eq!(decode_response(&encoded), Ok(r));
        assert_only_the_whole_encoding_decodes(&encoded, decode_response);
        let mut mutated = encoded;
        let at = rng.below(mutated.len() as u64) as usize;
        mutated[at] = rng.below(256) as u8;
        let _ = decode_response(&mutated);
    }
    assert_eq!(decode_response(&[]), Err(DecodeError::Empty));
    assert!(matches!(
        decode_response(&[9, 0]),
        Err(DecodeError::UnsupportedVersion { version: 9, .. })
    ));
    assert!(matches!(
        decode_response(&[RESPONSE_CODEC_VERSION, 2]),
        Err(DecodeError::UnknownTag { .. })
    ));
    assert!(matches!(
        decode_response(&[RESPONSE_CODEC_VERSION, 1, 200]),
        Err(DecodeError::UnknownTag { what: "error", .. })
    ));
    // A range response claiming 2^28 key-values in a few bytes: refused before allocating.
    assert!(matches!(
        decode_response(&[RESPONSE_CODEC_VERSION, 0, 1, 0, 0x80, 0x80, 0x80, 0x80, 0x01]),
        Err(DecodeError::Truncated { .. })
    ));
    // An error detail that is not UTF-8.
    assert!(matches!(
        decode_response(&[RESPONSE_CODEC_VERSION, 1, 14, 1, 0xff]),
        Err(DecodeError::Invalid { .. })
    ));
}

#[test]
fn response_nesting_is_bounded() {
    // Txn responses nested one level deeper than any txn can be.
    let mut data = vec![RESPONSE_CODEC_VERSION, 0];
    for _ in 0..=MAX_TXN_DEPTH {
        data.extend_from_slice(&[4, 0, 0, 1]);
    }
    data.extend_from_slice(&[4, 0, 0, 0]);
    assert!(matches!(decode_response(&data), Err(DecodeError::TooDeep { .. })));
}
