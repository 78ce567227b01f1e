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

fn command(rng: &mut SeededRng) -> Command {
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
        assert_eq!(encoded[0], COMMAND_CODEC_VERSION);
        assert_eq!(decode_command(&encoded), Ok(c));
    }
}

#[test]
fn every_strict_prefix_and_any_trailing_byte_is_refused() {
    let mut rng = SeededRng::new(2);
    for _ in 0..300 {
        let encoded = encode_command(&command(&mut rng));
        for cut in 0..encoded.len() {
            assert!(decode_command(&encoded[..cut]).is_err(), "prefix of {cut} bytes");
        }
        let mut longer = encoded.clone();
        longer.push(0);
        assert!(matches!(
            decode_command(&longer),
            Err(DecodeError::TrailingBytes { count: 1, .. })
        ));
    }
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
