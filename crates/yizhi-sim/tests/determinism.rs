//! One seed, one run: two runs of a seed produce the same trace hash, and different seeds differ.

use yizhi_sim::faults::{PROFILE_HARSH, PROFILE_STANDARD};
use yizhi_sim::{RaftFactory, RunOptions, check_determinism, run_seed};

#[test]
fn the_same_seed_replays_identically() {
    for seed in [0, 1, 7, 42, 1234] {
        for profile in [PROFILE_STANDARD, PROFILE_HARSH] {
            let hash = check_determinism(&RaftFactory::SAFE_READS, seed, profile);
            assert!(hash.is_ok(), "seed {seed} ({}) diverged: {hash:?}", profile.name);
        }
    }
}

#[test]
fn different_seeds_take_different_paths() {
    let a = run_seed(
        &RaftFactory::SAFE_READS,
        3,
        PROFILE_STANDARD,
        RunOptions::default(),
    );
    let b = run_seed(
        &RaftFactory::SAFE_READS,
        4,
        PROFILE_STANDARD,
        RunOptions::default(),
    );
    assert_ne!(a.trace_hash, b.trace_hash);
    assert!(
        a.events > 1_000 && b.events > 1_000,
        "runs too short to mean anything: {a:?} {b:?}"
    );
}

#[test]
fn a_shorter_fault_phase_replays_the_same_prefix_differently_only_after_it() {
    let full = run_seed(
        &RaftFactory::SAFE_READS,
        11,
        PROFILE_STANDARD,
        RunOptions::default(),
    );
    let options = RunOptions {
        fault_phase_ms: Some(full.fault_phase_ms / 2),
        ..RunOptions::default()
    };
    let short = run_seed(&RaftFactory::SAFE_READS, 11, PROFILE_STANDARD, options);
    assert_ne!(full.trace_hash, short.trace_hash);
    assert!(short.violation.is_none(), "{:?}", short.violation);
}
