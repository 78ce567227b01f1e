//! A random but reproducible command stream: the command at `index` depends only on the seed,
//! the index and the state of the store it is about to be applied to, so two stores in the same
//! state draw the same command (a store in another state drawing another one shows up as a
//! different answer or hash anyway).

use bytes::Bytes;
use yizhi_engine::SeededRng;
use yizhi_kv::*;

const KEYS: u64 = 12;
const LEASE_IDS: u64 = 8;
const MS_PER_INDEX: u64 = 250;

fn key(rng: &mut SeededRng) -> Bytes {
    Bytes::from(format!("k{:02}", rng.below(KEYS)))
}

/// Mostly small values, sometimes large ones (to cross the overlay's byte limit).
fn value(rng: &mut SeededRng, index: u64) -> Bytes {
    let len = if rng.chance(1, 10) {
        rng.range_inclusive(1000, 4000)
    } else {
        rng.below(300)
    };
    Bytes::from(vec![(index % 251) as u8; len as usize])
}

fn range_end(rng: &mut SeededRng, start: &Bytes) -> Bytes {
    match rng.below(4) {
        0 => Bytes::new(),
        1 => Bytes::from_static(b"\0"),
        _ => {
            let mut end = start.to_vec();
            *end.last_mut().expect("keys are not empty") += rng.range_inclusive(1, 5) as u8;
            Bytes::from(end)
        }
    }
}

pub fn now_ms(index: u64) -> u64 {
    index * MS_PER_INDEX
}

fn put(rng: &mut SeededRng, index: u64) -> PutRequest {
    let ignore = rng.chance(1, 12);
    PutRequest {
        key: key(rng),
        value: if ignore { Bytes::new() } else { value(rng, index) },
        lease: if rng.chance(1, 3) {
            rng.below(LEASE_IDS) as i64
        } else {
            NO_LEASE
        },
        prev_kv: rng.chance(1, 2),
        ignore_value: ignore,
        ignore_lease: false,
    }
}

fn range(rng: &mut SeededRng, current_revision: i64) -> RangeRequest {
    let key = key(rng);
    RangeRequest {
        range_end: range_end(rng, &key),
        key,
        limit: rng.below(4) as i64,
        revision: if rng.chance(1, 3) {
            current_revision - rng.below(6) as i64
        } else {
            0
        },
        sort_order: if rng.chance(1, 4) {
            SortOrder::Descend
        } else {
            SortOrder::None
        },
        sort_target: if rng.chance(1, 4) {
            SortTarget::Value
        } else {
            SortTarget::Key
        },
        keys_only: rng.chance(1, 6),
        count_only: rng.chance(1, 10),
        ..Default::default()
    }
}

fn txn(rng: &mut SeededRng, index: u64, current_revision: i64) -> TxnRequest {
    let target = if rng.chance(1, 2) {
        CompareTarget::Version(rng.below(3) as i64)
    } else {
        CompareTarget::Value(value(rng, index))
    };
    let compare = vec![Compare {
        result: if rng.chance(1, 2) {
            CompareResult::Greater
        } else {
            CompareResult::Equal
        },
        target,
        key: key(rng),
        range_end: Bytes::new(),
    }];
    let delete_key = key(rng);
    let mut success = vec![
        RequestOp::Put(put(rng, index)),
        RequestOp::Range(range(rng, current_revision)),
    ];
    if rng.chance(1, 2) {
        success.push(RequestOp::DeleteRange(DeleteRangeRequest {
            key: delete_key,
            range_end: Bytes::new(),
            prev_kv: true,
        }));
    }
    TxnRequest {
        compare,
        success,
        failure: vec![RequestOp::Put(put(rng, index))],
    }
}

/// Clients of deduplicated commands; few enough that duplicates hit kept responses, many enough
/// that some stay idle past the expiry.
const CLIENTS: u64 = 40;
/// The clock deduplicated commands carry runs faster than the lease clock, so that sessions
/// expire within a run (default expiry: 300 s, 150 indexes).
const DEDUPED_MS_PER_INDEX: u64 = 2_000;

/// A third of the commands come wrapped in `Deduped`: mostly new requests, often retries of an
/// earlier seq (answered from the table, or refused below the floor or after expiry), with
/// clocks that sometimes run behind.
pub fn command<B: Backend>(seed: u64, index: u64, store: &MvccStore<B>) -> Command {
    let plain = plain_command(seed, index, store);
    let mut rng = SeededRng::new(seed.wrapping_mul(0xA24B_AED4_963E_E407) ^ index);
    if !rng.chance(1, 3) {
        return plain;
    }
    let seq = if rng.chance(1, 3) {
        index.saturating_sub(rng.below(12)).max(1)
    } else {
        index
    };
    let acked_below = match rng.below(4) {
        0 => 1,
        _ => seq.saturating_sub(rng.below(20)).max(1),
    };
    let now_ms = (index * DEDUPED_MS_PER_INDEX).saturating_sub(rng.below(4) * 10_000);
    Command::Deduped {
        request: ClientSeq {
            // A seq belongs to one client, so a retry of it goes to the same client.
            client_id: 1 + SeededRng::new(seed ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15)).below(CLIENTS),
            seq,
            acked_below,
        },
        now_ms,
        command: Box::new(plain),
    }
}

fn plain_command<B: Backend>(seed: u64, index: u64, store: &MvccStore<B>) -> Command {
    let mut rng = SeededRng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index);
    let now = now_ms(index);
    let lease = rng.below(LEASE_IDS) as i64;
    match rng.below(100) {
        0..=37 => Command::Put(put(&mut rng, index)),
        38..=45 => {
            let key = key(&mut rng);
            Command::DeleteRange(DeleteRangeRequest {
                range_end: range_end(&mut rng, &key),
                key,
                prev_kv: rng.chance(1, 2),
            })
        }
        46..=57 => Command::Txn(txn(&mut rng, index, store.current_revision())),
        58..=63 => Command::Compact(CompactionRequest {
            revision: store.current_revision() - rng.below(6) as i64,
            physical: false,
        }),
        64..=73 => Command::LeaseGrant(LeaseGrantRequest {
            id: if rng.chance(1, 2) { 0 } else { lease },
            ttl_secs: rng.range_inclusive(1, 10) as i64,
            now_ms: now,
        }),
        74..=81 => match store.expired_leases(now).first() {
            Some(&id) => Command::LeaseRevoke { id },
            None => Command::LeaseRevoke { id: lease },
        },
        82..=87 => Command::LeaseKeepAlive {
            id: lease,
            now_ms: now,
        },
        _ => Command::Range(range(&mut rng, store.current_revision())),
    }
}

/// A read drawn from the same distribution, for comparing stores outside the log.
pub fn read(seed: u64, index: u64, current_revision: i64) -> RangeRequest {
    let mut rng = SeededRng::new(seed.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ index);
    range(&mut rng, current_revision)
}
