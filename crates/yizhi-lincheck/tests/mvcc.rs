//! Histories over etcd's API with revisions: the checks a per-key model cannot make.

use yizhi_lincheck::mvcc::{CasCompare, KeyRecord, MvccInput, MvccModel, MvccOutput};
use yizhi_lincheck::{CheckResult, Operation, Outcome, check_operations};

const MAX_STEPS: u64 = 100_000;

type Op = Operation<MvccInput, MvccOutput>;

fn op(client_id: u64, input: MvccInput, invoke_time: u64, outcome: Outcome<MvccOutput>) -> Op {
    Operation {
        client_id,
        input,
        invoke_time,
        outcome,
    }
}

fn done(client_id: u64, input: MvccInput, invoke_time: u64, return_time: u64, output: MvccOutput) -> Op {
    op(
        client_id,
        input,
        invoke_time,
        Outcome::Returned { output, return_time },
    )
}

fn timed_out(client_id: u64, input: MvccInput, invoke_time: u64) -> Op {
    op(client_id, input, invoke_time, Outcome::Unknown)
}

fn put(key: &str, value: &str) -> MvccInput {
    MvccInput::Put {
        key: key.into(),
        value: value.into(),
    }
}

fn get(key: &str) -> MvccInput {
    MvccInput::Get { key: key.into() }
}

fn wrote(revision: i64) -> MvccOutput {
    MvccOutput::Put { revision }
}

fn saw(revision: i64, value: &str, create_revision: i64, mod_revision: i64, version: i64) -> MvccOutput {
    let record = KeyRecord {
        value: value.into(),
        create_revision,
        mod_revision,
        version,
    };
    MvccOutput::Get {
        revision,
        record: Some(record),
    }
}

fn check(history: &[Operation<MvccInput, MvccOutput>]) -> CheckResult {
    check_operations(&MvccModel::default(), history, MAX_STEPS)
}

#[test]
fn concurrent_writes_to_different_keys_take_different_revisions() {
    let ordered = [
        done(1, put("a", "1"), 0, 10, wrote(3)),
        done(2, put("b", "1"), 1, 9, wrote(2)),
    ];
    assert_eq!(check(&ordered), CheckResult::Linearizable);
    // Each key alone is fine; together they claim one revision twice.
    let same = [
        done(1, put("a", "1"), 0, 10, wrote(2)),
        done(2, put("b", "1"), 1, 9, wrote(2)),
    ];
    assert!(
        matches!(check(&same), CheckResult::NotLinearizable { .. }),
        "{:?}",
        check(&same)
    );
}

#[test]
fn a_revision_gap_must_be_filled_by_an_unknown_write() {
    // Revision 2 went to somebody: only the timed-out put can have taken it.
    let with_unknown = [
        timed_out(1, put("b", "x"), 0),
        done(2, put("a", "1"), 1, 2, wrote(3)),
        done(2, get("b"), 3, 4, saw(3, "x", 2, 2, 1)),
    ];
    assert_eq!(check(&with_unknown), CheckResult::Linearizable);
    let without = [done(2, put("a", "1"), 1, 2, wrote(3))];
    assert!(matches!(check(&without), CheckResult::NotLinearizable { .. }));
}

#[test]
fn a_read_must_see_the_revision_of_its_moment() {
    let history = [
        done(1, put("a", "1"), 0, 1, wrote(2)),
        done(1, put("b", "1"), 2, 3, wrote(3)),
        // The value of `a` is right, but the store had already moved to revision 3.
        done(2, get("a"), 4, 5, saw(2, "1", 2, 2, 1)),
    ];
    assert!(matches!(check(&history), CheckResult::NotLinearizable { .. }));
}

#[test]
fn cas_on_mod_revision_loses_to_a_concurrent_put() {
    let cas = MvccInput::Cas {
        key: "a".into(),
        compare: CasCompare::ModRevision(2),
        value: "mine".into(),
    };
    let lost = MvccOutput::Cas {
        revision: 3,
        succeeded: false,
        record: Some(KeyRecord {
            value: "theirs".into(),
            create_revision: 2,
            mod_revision: 3,
            version: 2,
        }),
    };
    let history = [
        done(1, put("a", "1"), 0, 1, wrote(2)),
        done(2, put("a", "theirs"), 2, 6, wrote(3)),
        done(3, cas.clone(), 3, 5, lost.clone()),
    ];
    assert_eq!(check(&history), CheckResult::Linearizable);
    // Had the txn run before the put, it would have succeeded at revision 3.
    let won_too = [
        done(1, put("a", "1"), 0, 1, wrote(2)),
        done(2, put("a", "theirs"), 2, 6, wrote(3)),
        done(
            3,
            cas,
            3,
            5,
            MvccOutput::Cas {
                revision: 3,
                succeeded: true,
                record: None,
            },
        ),
    ];
    assert!(matches!(check(&won_too), CheckResult::NotLinearizable { .. }));
}

fn unacknowledged(client_id: u64, input: MvccInput, invoke_time: u64, output: MvccOutput) -> Op {
    op(client_id, input, invoke_time, Outcome::Unacknowledged { output })
}

#[test]
fn an_unacknowledged_write_is_checked_at_the_revision_it_was_given() {
    let history = [
        unacknowledged(1, put("b", "x"), 0, wrote(2)),
        done(2, put("a", "1"), 1, 2, wrote(3)),
        done(2, get("b"), 3, 4, saw(3, "x", 2, 2, 1)),
    ];
    assert_eq!(check(&history), CheckResult::Linearizable);
    // The same effect, but the state machine said it landed at a revision it cannot have had.
    let misplaced = [
        unacknowledged(1, put("b", "x"), 0, wrote(3)),
        done(2, put("a", "1"), 1, 2, wrote(3)),
        done(2, get("b"), 3, 4, saw(3, "x", 2, 2, 1)),
    ];
    assert!(matches!(check(&misplaced), CheckResult::NotLinearizable { .. }));
    // Nothing needs it: it may take effect after everything else.
    let late = [
        unacknowledged(1, put("b", "x"), 5, wrote(3)),
        done(2, put("a", "1"), 1, 2, wrote(2)),
    ];
    assert_eq!(check(&late), CheckResult::Linearizable);
}
