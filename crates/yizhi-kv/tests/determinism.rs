//! Determinism: replicas fed one command sequence (leases, expiry, txns, compaction included)
//! answer alike and end with one state hash, including a replica that joined from a snapshot.

mod common;

use common::*;
use yizhi_engine::SeededRng;
use yizhi_kv::*;

const SEEDS: u64 = 40;
const STEPS_PER_SEED: u64 = 300;
const KEYS: [&str; 4] = ["a", "b", "c", "d"];

fn command(rng: &mut SeededRng, now_ms: u64, store: &MvccStore<MemBackend>) -> Command {
    let key = b(KEYS[rng.below(KEYS.len() as u64) as usize]);
    let lease = rng.below(6) as i64; // 0 (none), live leases, and some that never existed
    match rng.below(12) {
        0..=3 => Command::Put(PutRequest {
            key,
            value: b("v"),
            lease,
            ignore_lease: lease == 0 && rng.chance(1, 4),
            ..Default::default()
        }),
        4 => Command::DeleteRange(DeleteRangeRequest {
            key,
            range_end: b("\0"),
            prev_kv: true,
        }),
        5..=6 => Command::LeaseGrant(LeaseGrantRequest {
            id: if rng.chance(1, 2) { 0 } else { lease },
            ttl_secs: rng.below(8) as i64,
            now_ms,
        }),
        7 => Command::LeaseKeepAlive { id: lease, now_ms },
        // What a leader does: revoke what has expired by its clock.
        8..=9 => match store.expired_leases(now_ms).first() {
            Some(&id) => Command::LeaseRevoke { id },
            None => Command::LeaseRevoke { id: lease },
        },
        10 => Command::Txn(TxnRequest {
            compare: vec![cmp("a", CompareResult::Greater, CompareTarget::Version(1))],
            success: vec![put_op("b", "s"), delete_op("c", "")],
            failure: vec![put_op("c", "f")],
        }),
        _ => Command::Compact(CompactionRequest {
            revision: store.current_revision() - rng.below(3) as i64,
            physical: false,
        }),
    }
}

fn run(seed: u64) {
    let mut rng = SeededRng::new(seed);
    let open = || MvccStore::open(MemBackend::new(), KvConfig::default()).unwrap();
    let (mut a, mut b_store) = (open(), open());
    let mut late: Option<MvccStore<MemBackend>> = None;
    let mut now_ms = 0;
    for index in 1..=STEPS_PER_SEED {
        now_ms += rng.below(1_500);
        let cmd = command(&mut rng, now_ms, &a);
        let bytes = encode_command(&cmd);
        let on_a = a.apply(&cmd, index).unwrap();
        let on_b = b_store.apply(&decode_command(&bytes).unwrap(), index).unwrap();
        assert_eq!(on_a, on_b, "seed {seed} index {index}: {cmd:?}");
        if let Some(l) = late.as_mut() {
            assert_eq!(
                l.apply(&cmd, index).unwrap(),
                on_a,
                "seed {seed}: snapshot replica"
            );
        }
        if index == STEPS_PER_SEED / 2 {
            let mut joined = open();
            joined.install_snapshot(&a.snapshot().unwrap()).unwrap();
            late = Some(joined);
        }
        assert_eq!(a.expired_leases(now_ms), b_store.expired_leases(now_ms));
    }
    let hash = a.state_hash().unwrap();
    assert_eq!(hash, b_store.state_hash().unwrap(), "seed {seed}");
    assert_eq!(hash, late.unwrap().state_hash().unwrap(), "seed {seed}");
    // Attached keys always belong to live leases and name keys that carry that lease.
    for id in a.lease_ids() {
        for key in a.lease_time_to_live(id, now_ms).unwrap().keys {
            let got = a
                .range(&RangeRequest {
                    key,
                    ..Default::default()
                })
                .unwrap();
            assert_eq!(got.kvs[0].lease, id, "seed {seed}");
        }
    }
    let all = RangeRequest {
        key: b(""),
        range_end: b("\0"),
        ..Default::default()
    };
    for kv in a.range(&all).unwrap().kvs {
        assert!(
            kv.lease == 0 || a.lease_ids().contains(&kv.lease),
            "seed {seed}: {kv:?}"
        );
    }
}

#[test]
fn replicas_applying_one_sequence_agree_on_every_answer_and_on_the_state_hash() {
    for seed in 0..SEEDS {
        run(seed);
    }
}
