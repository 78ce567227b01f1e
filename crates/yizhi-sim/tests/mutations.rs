//! The simulator must catch a broken runtime: each deliberate bug below breaks a rule the engine
//! relies on, and some seed must report it. A harness that passes these runs cannot be vacuous.

use yizhi_sim::engines::PaxosFactory;
use yizhi_sim::faults::{FaultProfile, PROFILE_HARSH, PROFILE_STANDARD};
use yizhi_sim::invariants::Violation;
use yizhi_sim::node::Mutation;
use yizhi_sim::{EngineFactory, RaftFactory, RunOptions, run_seed};

/// Seeds tried before giving up on finding the bug.
const MAX_SEEDS: u64 = 1_000;

const RAFT: RaftFactory = RaftFactory::SAFE_READS;

/// The first seed whose run reports a violation, with that violation.
fn first_violation_of<F: EngineFactory>(
    factory: &F,
    mutation: Mutation,
    profile: FaultProfile,
) -> Option<(u64, Violation)> {
    (0..MAX_SEEDS).find_map(|seed| {
        let options = RunOptions {
            mutation,
            ..RunOptions::default()
        };
        run_seed(factory, seed, profile, options)
            .violation
            .map(|(_, v)| (seed, v))
    })
}

/// Some seed's run of `factory` with `mutation` under `profile` reports a violation that
/// `expected` accepts.
fn assert_caught<F: EngineFactory>(
    factory: &F,
    mutation: Mutation,
    profile: FaultProfile,
    expected: fn(&Violation) -> bool,
) {
    let found = first_violation_of(factory, mutation, profile);
    assert!(
        found.as_ref().is_some_and(|(_, v)| expected(v)),
        "{mutation:?}: {found:?}"
    );
}

#[test]
fn acknowledging_writes_before_commit_is_caught() {
    assert_caught(&RAFT, Mutation::AckOnPropose, PROFILE_STANDARD, |v| {
        matches!(
            v,
            Violation::AckedWriteLost { .. } | Violation::NotLinearizable { .. }
        )
    });
}

#[test]
fn reads_without_read_index_are_caught_by_linearizability() {
    assert_caught(&RAFT, Mutation::StaleReads, PROFILE_STANDARD, |v| {
        matches!(v, Violation::NotLinearizable { .. })
    });
}

#[test]
fn sending_before_fsync_is_caught() {
    let found = first_violation_of(&RAFT, Mutation::SendBeforeSync, PROFILE_STANDARD);
    assert!(
        found.is_some(),
        "no seed noticed messages leaving before their fsync"
    );
}

#[test]
fn forgetting_the_vote_in_a_crash_elects_two_leaders() {
    assert_caught(&RAFT, Mutation::ForgetVote, PROFILE_HARSH, |v| {
        matches!(v, Violation::TwoLeaders { .. })
    });
}

/// Paxos keeps its promise in the hard state's term; an acceptor that forgets it can accept below
/// a ballot it promised, and a later leader can miss a chosen value.
#[test]
fn forgetting_the_promise_in_a_crash_is_caught_for_paxos() {
    let found = first_violation_of(&PaxosFactory, Mutation::ForgetPromise, PROFILE_HARSH);
    assert!(
        found.is_some(),
        "no seed noticed acceptors forgetting their promises"
    );
}

#[test]
fn mutation_none_is_the_default() {
    assert_eq!(RunOptions::default().mutation, Mutation::None);
    assert_eq!(Mutation::by_name("forget-vote"), Some(Mutation::ForgetVote));
}

#[test]
fn bounded_reads_that_ignore_their_bound_are_caught() {
    assert_caught(&RAFT, Mutation::BoundedIgnoresBound, PROFILE_STANDARD, |v| {
        matches!(v, Violation::BoundedReadTooStale { .. })
    });
}

#[test]
fn serializable_reads_from_an_older_state_are_caught_by_the_session() {
    assert_caught(&RAFT, Mutation::SerializableGoesBack, PROFILE_STANDARD, |v| {
        matches!(v, Violation::ReadWentBackwards { .. })
    });
}

#[test]
fn serializable_reads_claiming_a_revision_they_do_not_show_are_caught_for_paxos() {
    assert_caught(
        &PaxosFactory,
        Mutation::SerializableMisdated,
        PROFILE_STANDARD,
        |v| matches!(v, Violation::ReadStateNeverExisted { .. }),
    );
}

/// With the `Deduped` wrapper stripped, a retried increment that had applied applies again: its
/// value is written at a second revision (what a watch would show first), and the counter ends
/// above the acknowledged count.
#[test]
fn retries_applied_twice_without_dedupe_are_caught_by_the_counter() {
    let applied_twice = |v: &Violation| {
        matches!(
            v,
            Violation::CounterNotExact { .. } | Violation::WrittenTwice { .. }
        )
    };
    assert_caught(&RAFT, Mutation::NoDedupe, PROFILE_STANDARD, applied_twice);
    assert_caught(&PaxosFactory, Mutation::NoDedupe, PROFILE_STANDARD, applied_twice);
}
