//! Hand-written histories, each a transcript of what clients saw, with the verdict it must get.
//! Times are ticks; `done(client, input, invoked, returned, output)`.

mod common;

use common::*;
use yizhi_lincheck::kv::KvModel;
use yizhi_lincheck::{CheckResult, Model, Operation, Outcome, check_operations};

#[test]
fn empty_history_is_linearizable() {
    assert_linearizable(&[]);
}

#[test]
fn sequential_history_is_linearizable() {
    assert_linearizable(&[
        done(1, get("x"), 0, 1, ABSENT),
        done(1, put("x", "a"), 2, 3, OK),
        done(2, append("x", "b"), 4, 5, OK),
        done(1, get("x"), 6, 7, value("ab")),
        done(2, cas("x", Some("ab"), "c"), 8, 9, CAS_WON),
        done(1, cas("x", Some("ab"), "d"), 10, 11, CAS_LOST),
        done(2, get("x"), 12, 13, value("c")),
    ]);
}

#[test]
fn a_read_overlapping_a_write_may_see_either_value() {
    for seen in [ABSENT, value("1")] {
        assert_linearizable(&[done(1, put("x", "1"), 0, 10, OK), done(2, get("x"), 2, 5, seen)]);
    }
}

#[test]
fn overlapping_writes_may_take_effect_in_either_order() {
    // Client 2's put was invoked later but may have taken effect first.
    for last in ["1", "2"] {
        assert_linearizable(&[
            done(1, put("x", "1"), 0, 10, OK),
            done(2, put("x", "2"), 1, 5, OK),
            done(3, get("x"), 11, 12, value(last)),
        ]);
    }
}

#[test]
fn stale_read_after_a_completed_write_is_rejected() {
    let history = [
        done(1, put("x", "0"), 0, 1, OK),
        done(1, put("x", "1"), 2, 5, OK),
        done(2, get("x"), 6, 8, value("0")),
    ];
    let (partition, explanation) = assert_rejected(&history);
    assert_eq!(partition, 0);
    assert!(
        explanation.contains("op 2 "),
        "the stale read should be named: {explanation}"
    );
}

#[test]
fn tie_rule_an_op_invoked_at_the_tick_another_returns_is_concurrent_with_it() {
    // Invoked at the write's return tick: concurrent, so the old value is still allowed.
    assert_linearizable(&[done(1, put("x", "1"), 0, 5, OK), done(2, get("x"), 5, 8, ABSENT)]);
    // One tick later the write has certainly completed.
    assert_rejected(&[done(1, put("x", "1"), 0, 5, OK), done(2, get("x"), 6, 8, ABSENT)]);
}

#[test]
fn a_read_may_not_see_an_older_value_than_an_earlier_read() {
    let history = [
        done(1, put("x", "1"), 0, 100, OK),
        done(2, get("x"), 10, 20, value("1")),
        done(3, get("x"), 30, 40, ABSENT),
    ];
    let (_, explanation) = assert_rejected(&history);
    assert!(
        explanation.contains("op 2 "),
        "the second read cannot be placed: {explanation}"
    );
    // Swapping what the reads saw is fine: the write lands between them.
    assert_linearizable(&[
        done(1, put("x", "1"), 0, 100, OK),
        done(2, get("x"), 10, 20, ABSENT),
        done(3, get("x"), 30, 40, value("1")),
    ]);
}

#[test]
fn a_lost_append_is_rejected() {
    let appends = [
        done(1, append("x", "a"), 0, 5, OK),
        done(2, append("x", "b"), 1, 6, OK),
    ];
    for lost in ["a", "b"] {
        let mut history = appends.to_vec();
        history.push(done(3, get("x"), 10, 11, value(lost)));
        assert_rejected(&history);
    }
    for both in ["ab", "ba"] {
        let mut history = appends.to_vec();
        history.push(done(3, get("x"), 10, 11, value(both)));
        assert_linearizable(&history);
    }
}

#[test]
fn a_lost_put_is_rejected() {
    // Client 2's write completed after client 1's, strictly, so the final value must be "2".
    assert_rejected(&[
        done(1, put("x", "1"), 0, 2, OK),
        done(2, put("x", "2"), 3, 5, OK),
        done(3, get("x"), 6, 7, value("1")),
    ]);
}

#[test]
fn two_successful_cas_from_the_same_expected_value_are_rejected() {
    let setup = done(1, put("x", "0"), 0, 1, OK);
    let first = done(2, cas("x", Some("0"), "1"), 10, 20, CAS_WON);
    let second = done(3, cas("x", Some("0"), "2"), 30, 40, CAS_WON);
    assert_rejected(&[setup.clone(), first.clone(), second.clone()]);
    // Overlapping does not help: whichever goes second finds the other's value.
    let overlapping = done(3, cas("x", Some("0"), "2"), 15, 40, CAS_WON);
    assert_rejected(&[setup.clone(), first.clone(), overlapping]);
    // A put of "0" between them makes the same two wins legal.
    assert_linearizable(&[setup.clone(), first, done(4, put("x", "0"), 22, 25, OK), second]);
}

#[test]
fn cas_aba_is_checked_by_value_not_by_history() {
    // X, Y and Z overlap; only X, Y, Z (A -> B -> A -> B) lets all three win, so the value ends at B.
    let setup = [
        done(1, put("x", "A"), 0, 1, OK),
        done(2, cas("x", Some("A"), "B"), 2, 10, CAS_WON),
        done(3, cas("x", Some("B"), "A"), 2, 10, CAS_WON),
        done(4, cas("x", Some("A"), "B"), 2, 10, CAS_WON),
    ];
    let mut ends_at_b = setup.to_vec();
    ends_at_b.push(done(5, get("x"), 11, 12, value("B")));
    assert_linearizable(&ends_at_b);
    let mut ends_at_a = setup.to_vec();
    ends_at_a.push(done(5, get("x"), 11, 12, value("A")));
    assert_rejected(&ends_at_a);
}

#[test]
fn a_timed_out_write_may_or_may_not_have_taken_effect() {
    for seen in [value("1"), ABSENT] {
        assert_linearizable(&[timed_out(1, put("x", "1"), 0), done(2, get("x"), 5, 6, seen)]);
    }
}

#[test]
fn a_timed_out_write_may_take_effect_long_after_its_client_gave_up() {
    assert_linearizable(&[
        timed_out(1, put("x", "1"), 0),
        done(2, get("x"), 10, 11, ABSENT),
        done(2, get("x"), 20, 21, ABSENT),
        done(3, get("x"), 30, 31, value("1")),
    ]);
}

#[test]
fn a_timed_out_write_cannot_be_observed_and_then_unobserved() {
    let history = [
        done(1, put("x", "0"), 0, 1, OK),
        timed_out(2, put("x", "1"), 2),
        done(3, get("x"), 5, 6, value("1")),
        done(3, get("x"), 7, 8, value("0")),
    ];
    assert_rejected(&history);
}

#[test]
fn a_timed_out_write_cannot_take_effect_before_its_invocation() {
    assert_rejected(&[
        done(1, get("x"), 0, 1, value("1")),
        timed_out(2, put("x", "1"), 2),
    ]);
}

#[test]
fn timed_out_reads_and_cas_constrain_nothing_they_do_not_change() {
    assert_linearizable(&[
        done(1, put("x", "0"), 0, 1, OK),
        timed_out(2, get("x"), 2),
        timed_out(3, cas("x", Some("7"), "8"), 3),
        done(1, get("x"), 4, 5, value("0")),
    ]);
}

#[test]
fn a_timed_out_cas_that_took_effect_explains_the_value() {
    let history = [
        done(1, put("x", "0"), 0, 1, OK),
        timed_out(2, cas("x", Some("0"), "1"), 2),
        done(3, cas("x", Some("0"), "2"), 4, 5, CAS_LOST),
        done(3, get("x"), 6, 7, value("1")),
    ];
    assert_linearizable(&history);
}

#[test]
fn the_failing_key_is_reported_with_original_history_indices() {
    let history = [
        done(1, put("a", "1"), 0, 1, OK),
        done(1, put("b", "1"), 2, 3, OK),
        done(2, get("a"), 4, 5, value("1")),
        done(2, get("b"), 6, 7, ABSENT),
    ];
    let (partition, explanation) = assert_rejected(&history);
    assert_eq!(partition, 1, "key b is the second key to appear");
    assert!(
        explanation.contains("[1]"),
        "the prefix is the put of b, op 1: {explanation}"
    );
    assert!(
        explanation.contains("op 3 "),
        "the stale read of b is op 3: {explanation}"
    );
}

#[test]
fn a_violation_is_reported_even_if_an_earlier_partition_is_undecided() {
    // Key "slow" needs at least one step per operation; key "bad" fails within a few steps.
    let mut history: Vec<_> = (0..100).map(|t| done(1, put("slow", "v"), t, t, OK)).collect();
    history.push(done(2, put("bad", "1"), 0, 1, OK));
    history.push(done(2, get("bad"), 2, 3, ABSENT));
    match check_operations(&KvModel, &history, 20) {
        CheckResult::NotLinearizable { partition, .. } => assert_eq!(partition, 1),
        other => panic!("expected the violation in partition 1, got {other:?}"),
    }
    let only_slow = &history[..100];
    assert_eq!(
        check_operations(&KvModel, only_slow, 20),
        CheckResult::Undecided {
            partition: 0,
            steps: 20
        }
    );
}

/// A register model with no partition override: the default puts every op in one partition.
#[derive(Debug)]
struct Register;

impl Model for Register {
    type State = u8;
    type Input = Option<u8>;
    type Output = u8;

    fn init(&self) -> u8 {
        0
    }

    /// `Some(v)` writes v and answers v; `None` reads.
    fn step(&self, state: &u8, input: &Option<u8>, output: Option<&u8>) -> Option<u8> {
        let next = input.unwrap_or(*state);
        let answer = if input.is_some() { next } else { *state };
        if output.is_some_and(|output| *output != answer) {
            None
        } else {
            Some(next)
        }
    }
}

#[test]
fn the_default_partition_checks_everything_together() {
    let op = |input, invoke_time, output, return_time| Operation {
        client_id: 0,
        input,
        invoke_time,
        outcome: Outcome::Returned { output, return_time },
    };
    assert_eq!(
        Register.partition(&[op(None, 0, 0, 1), op(Some(1), 2, 1, 3)]),
        vec![vec![0, 1]]
    );
    let stale = [op(Some(1), 0, 1, 1), op(None, 2, 0, 3)];
    assert!(matches!(
        check_operations(&Register, &stale, 100),
        CheckResult::NotLinearizable { partition: 0, .. }
    ));
    let fresh = [op(Some(1), 0, 1, 1), op(None, 2, 1, 3)];
    assert_eq!(
        check_operations(&Register, &fresh, 100),
        CheckResult::Linearizable
    );
}

#[test]
fn a_long_prefix_is_elided_in_the_explanation() {
    // 50 sequential puts, then a read of a value overwritten long ago.
    let mut history: Vec<_> = (0..50)
        .map(|t| done(1, put("x", &t.to_string()), 2 * t, 2 * t + 1, OK))
        .collect();
    history.push(done(2, get("x"), 200, 201, value("3")));
    let (_, explanation) = assert_rejected(&history);
    assert!(
        explanation.contains("prefix has 50 op(s) [... 18 more, 18, 19,"),
        "{explanation}"
    );
    assert!(
        explanation.contains("leaves the state at Some(\"49\")"),
        "{explanation}"
    );
    assert!(explanation.contains("op 50 (client 2, Get"), "{explanation}");
}

#[test]
fn timed_out_reads_do_not_multiply_the_work_of_a_failing_search() {
    // Placing or skipping each of 40 timed-out reads would be 2^40 combinations to exhaust before
    // the stale read could be declared impossible; reads change nothing, so none need placing.
    let mut history = vec![done(1, put("x", "1"), 0, 1, OK)];
    history.extend((0..40).map(|client| timed_out(client + 10, get("x"), 2 + client)));
    history.push(done(2, get("x"), 50, 51, ABSENT));
    assert_rejected(&history);
}
