//! The simulator must catch a broken runtime: each deliberate bug below breaks a rule the engine
//! relies on, and some seed must report it. A harness that passes these runs cannot be vacuous.

use yizhi_sim::faults::{FaultProfile, PROFILE_HARSH, PROFILE_STANDARD};
use yizhi_sim::invariants::Violation;
use yizhi_sim::node::Mutation;
use yizhi_sim::{RaftFactory, RunOptions, run_seed};

/// Seeds tried before giving up on finding the bug.
const MAX_SEEDS: u64 = 1_000;

/// The first seed whose run reports a violation, with that violation.
fn first_violation(mutation: Mutation, profile: FaultProfile) -> Option<(u64, Violation)> {
    (0..MAX_SEEDS).find_map(|seed| {
        let options = RunOptions {
            mutation,
            ..RunOptions::default()
        };
        run_seed(&RaftFactory::SAFE_READS, seed, profile, options)
            .violation
            .map(|(_, v)| (seed, v))
    })
}

#[test]
fn acknowledging_writes_before_commit_is_caught() {
    let found = first_violation(Mutation::AckOnPropose, PROFILE_STANDARD);
    assert!(
        matches!(
            found,
            Some((
                _,
                Violation::AckedWriteLost { .. } | Violation::NotLinearizable { .. }
            ))
        ),
        "{found:?}"
    );
}

#[test]
fn reads_without_read_index_are_caught_by_linearizability() {
    let found = first_violation(Mutation::StaleReads, PROFILE_STANDARD);
    assert!(
        matches!(found, Some((_, Violation::NotLinearizable { .. }))),
        "{found:?}"
    );
}

#[test]
fn sending_before_fsync_is_caught() {
    let found = first_violation(Mutation::SendBeforeSync, PROFILE_STANDARD);
    assert!(
        found.is_some(),
        "no seed noticed messages leaving before their fsync"
    );
}

#[test]
fn forgetting_the_vote_in_a_crash_elects_two_leaders() {
    let found = first_violation(Mutation::ForgetVote, PROFILE_HARSH);
    assert!(
        matches!(found, Some((_, Violation::TwoLeaders { .. }))),
        "{found:?}"
    );
}

#[test]
fn mutation_none_is_the_default() {
    assert_eq!(RunOptions::default().mutation, Mutation::None);
    assert_eq!(Mutation::by_name("forget-vote"), Some(Mutation::ForgetVote));
}
