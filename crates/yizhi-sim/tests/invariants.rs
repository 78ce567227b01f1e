//! Proof that the invariant checker can fail: hand-made states that break each invariant, and
//! the exact violation each one must produce.

use bytes::Bytes;
use yizhi_engine::{Entry, EntryPayload, LogIndex, LogPosition, MemStorage, Membership, Term};
use yizhi_sim::invariants::{Checker, Violation, check_log_matching};

fn entry(index: LogIndex, term: Term, data: &'static str) -> Entry {
    Entry {
        index,
        term,
        payload: EntryPayload::Normal(Bytes::from_static(data.as_bytes())),
    }
}

fn log(entries: &[Entry]) -> MemStorage {
    let mut s = MemStorage::new_with_membership(Membership::new([1, 2, 3]));
    s.append(entries);
    s
}

/// A checker that saw node 1 commit "a" and "b" at indexes 1 and 2 in term 1.
fn committed_a_b() -> Checker {
    let mut c = Checker::default();
    c.observe_committed(1, 1, &[entry(1, 1, "a"), entry(2, 1, "b")])
        .unwrap();
    c
}

#[test]
fn two_leaders_in_one_term_are_reported() {
    let mut c = Checker::default();
    assert_eq!(c.observe_leader(1, 4), Ok(true));
    assert_eq!(c.observe_leader(1, 4), Ok(false));
    assert_eq!(c.observe_leader(2, 5), Ok(true));
    assert_eq!(
        c.observe_leader(3, 4),
        Err(Violation::TwoLeaders {
            term: 4,
            first: 1,
            second: 3
        })
    );
}

#[test]
fn disagreeing_committed_entries_are_reported() {
    let mut c = committed_a_b();
    c.observe_committed(2, 1, &[entry(1, 1, "a")]).unwrap();
    let err = c.observe_committed(3, 2, &[entry(2, 2, "c")]).unwrap_err();
    assert!(
        matches!(
            err,
            Violation::CommittedEntryMismatch {
                index: 2,
                node: 3,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_non_prefix_applied_sequence_is_reported() {
    let mut c = committed_a_b();
    c.observe_applied(2, &entry(1, 1, "a")).unwrap();
    let wrong = c.observe_applied(2, &entry(2, 1, "x")).unwrap_err();
    assert!(
        matches!(
            wrong,
            Violation::AppliedNotCommitted {
                node: 2,
                index: 2,
                ..
            }
        ),
        "{wrong}"
    );
    let skipped = c.observe_applied(3, &entry(2, 1, "b")).unwrap_err();
    assert_eq!(
        skipped,
        Violation::AppliedOutOfOrder {
            node: 3,
            expected_index: 1,
            applied_index: 2
        }
    );
    let uncommitted = c
        .observe_applied(1, &entry(1, 1, "a"))
        .and_then(|_| c.observe_applied(1, &entry(2, 1, "b")));
    assert_eq!(uncommitted, Ok(()));
    let beyond = c.observe_applied(1, &entry(3, 1, "c")).unwrap_err();
    assert!(matches!(
        beyond,
        Violation::AppliedNotCommitted { committed: None, .. }
    ));
}

#[test]
fn a_lost_acknowledged_write_is_reported() {
    let mut c = Checker::default();
    c.observe_committed(1, 2, &[entry(1, 2, "a")]).unwrap();
    assert_eq!(c.observe_ack(7, 1, LogPosition { index: 1, term: 2 }), Ok(()));
    let lost = c
        .observe_ack(7, 2, LogPosition { index: 2, term: 2 })
        .unwrap_err();
    assert!(matches!(
        lost,
        Violation::AckedWriteLost {
            client_id: 7,
            op_id: 2,
            committed: None,
            ..
        }
    ));
    let overwritten = c
        .observe_ack(7, 3, LogPosition { index: 1, term: 1 })
        .unwrap_err();
    assert!(matches!(
        overwritten,
        Violation::AckedWriteLost {
            committed: Some(_),
            ..
        }
    ));
    assert!(c.check_acked_writes().is_err());
}

#[test]
fn commit_going_backwards_or_below_durable_is_reported() {
    let mut c = Checker::default();
    c.observe_commit(1, 5, 3).unwrap();
    assert_eq!(
        c.observe_commit(1, 4, 3),
        Err(Violation::CommitDecreased {
            node: 1,
            from: 5,
            to: 4
        })
    );
    c.observe_restart(1, 0);
    assert_eq!(
        c.observe_commit(1, 2, 3),
        Err(Violation::CommitBelowDurable {
            node: 1,
            commit: 2,
            durable_commit: 3
        })
    );
    assert_eq!(c.observe_commit(1, 3, 3), Ok(()));
}

#[test]
fn a_leader_missing_an_earlier_committed_entry_is_reported() {
    let mut c = Checker::default();
    c.observe_committed(1, 2, &[entry(1, 1, "a"), entry(2, 2, "b")])
        .unwrap();
    let complete = log(&[entry(1, 1, "a"), entry(2, 2, "b"), entry(3, 3, "z")]);
    assert_eq!(c.check_leader_complete(1, 3, &complete), Ok(()));
    let missing = log(&[entry(1, 1, "a")]);
    let err = c.check_leader_complete(3, 3, &missing).unwrap_err();
    assert_eq!(
        err,
        Violation::LeaderIncomplete {
            leader: 3,
            term: 3,
            index: 2,
            committed_term: 2,
            found: None
        }
    );
    assert_eq!(
        c.check_leader_complete(3, 2, &missing),
        Ok(()),
        "reported in term 2: not yet binding"
    );
}

#[test]
fn log_matching_catches_a_divergent_prefix() {
    let a = log(&[entry(1, 1, "a"), entry(2, 1, "b"), entry(3, 2, "c")]);
    let b = log(&[entry(1, 1, "a"), entry(2, 1, "b"), entry(3, 3, "d")]);
    let bad = log(&[entry(1, 1, "x"), entry(2, 1, "b"), entry(3, 2, "c")]);
    assert_eq!(check_log_matching(&[(1, &a), (2, &b)]), Ok(()));
    let err = check_log_matching(&[(1, &a), (2, &b), (3, &bad)]).unwrap_err();
    assert_eq!(
        err,
        Violation::LogMatching {
            a: 1,
            b: 3,
            matching_index: 3,
            diverging_index: 1
        }
    );
}

#[test]
fn snapshot_with_wrong_term_is_reported() {
    let mut c = committed_a_b();
    assert_eq!(c.observe_snapshot_installed(2, 2, 1), Ok(()));
    c.observe_applied(2, &entry(3, 1, "c")).unwrap_err();
    assert!(c.observe_snapshot_installed(3, 2, 5).is_err());
}

/// Multi-Paxos: one chosen value may be re-proposed in a later ballot, so nodes hand it over with
/// different terms; only a different payload at a committed slot is a violation.
#[test]
fn without_term_identity_values_are_compared_by_payload() {
    let mut c = Checker::new(false);
    c.observe_committed(1, 5, &[entry(1, 5, "a")]).unwrap();
    c.observe_committed(2, 9, &[entry(1, 9, "a")]).unwrap();
    c.observe_applied(2, &entry(1, 9, "a")).unwrap();
    let err = c.observe_committed(3, 9, &[entry(1, 9, "b")]).unwrap_err();
    assert!(
        matches!(
            err,
            Violation::CommittedEntryMismatch {
                index: 1,
                node: 3,
                ..
            }
        ),
        "{err}"
    );
    let leader_log = log(&[entry(1, 12, "a")]);
    assert_eq!(c.check_leader_complete(4, 12, &leader_log), Ok(()));
    let incomplete = log(&[entry(1, 12, "z")]);
    assert!(c.check_leader_complete(4, 12, &incomplete).is_err());
    let mut raft = Checker::default();
    raft.observe_committed(1, 5, &[entry(1, 5, "a")]).unwrap();
    assert!(
        raft.observe_committed(2, 9, &[entry(1, 9, "a")]).is_err(),
        "Raft keeps term identity"
    );
}

#[test]
fn replicas_with_different_states_at_one_applied_index_are_reported() {
    let mut c = Checker::default();
    c.observe_state_hash(1, 5, 0xaaaa).unwrap();
    c.observe_state_hash(2, 5, 0xaaaa).unwrap();
    c.observe_state_hash(2, 6, 0xbbbb).unwrap();
    assert_eq!(
        c.observe_state_hash(3, 5, 0xcccc),
        Err(Violation::StateDiverged {
            index: 5,
            node: 3,
            hash: 0xcccc,
            first_node: 1,
            first_hash: 0xaaaa
        })
    );
}

#[test]
fn applied_entries_are_attributed_by_the_proposal_identity_they_carry() {
    let id = |boot_id, request_id| yizhi_member::ProposalId {
        origin: 2,
        boot_id,
        request_id,
    };
    let proposal = |index, term, id| Entry {
        index,
        term,
        payload: EntryPayload::Normal(yizhi_member::encode_proposal(&id, b"del k")),
    };
    for terms_identify_values in [true, false] {
        let mut checker = Checker::new(terms_identify_values);
        checker.observe_request(id(5, 1), 7, 1, 1_000);
        checker.observe_request(id(6, 1), 8, 1, 1_000);
        // The same command and request id from two boots are two operations.
        assert_eq!(checker.attribute(&proposal(3, 2, id(5, 1))), Some((7, 1)));
        assert_eq!(checker.attribute(&proposal(9, 4, id(6, 1))), Some((8, 1)));
        assert_eq!(checker.attribute(&proposal(3, 2, id(5, 2))), None);
    }
}

#[test]
fn a_value_written_at_two_revisions_is_a_violation() {
    let mut checker = Checker::default();
    let value = Bytes::from_static(b"c1o4");
    checker.observe_written(&value, 10).unwrap();
    checker.observe_written(&value, 10).unwrap(); // Another replica applying the same entry.
    assert_eq!(
        checker.observe_written(&value, 12),
        Err(Violation::WrittenTwice {
            value: "c1o4".into(),
            first_revision: 10,
            second_revision: 12
        })
    );
}

#[test]
fn a_proposal_placed_after_its_clients_deadline_and_slack_is_a_violation() {
    let mut checker = Checker::default();
    checker.set_deadline_slack_ms(50);
    let id = yizhi_member::ProposalId {
        origin: 1,
        boot_id: 3,
        request_id: 9,
    };
    checker.observe_request(id, 4, 2, 1_000);
    checker.observe_placed(&id, 1_050).unwrap();
    assert_eq!(
        checker.observe_placed(&id, 1_051),
        Err(Violation::ProposedAfterDeadline {
            client_id: 4,
            op_id: 2,
            deadline_ms: 1_000,
            proposed_ms: 1_051
        })
    );
}

#[test]
fn a_lease_read_after_a_later_leader_was_elected_is_a_violation() {
    let mut checker = Checker::default();
    assert_eq!(checker.observe_leader(1, 3), Ok(true));
    checker.observe_local_read(1, 3).unwrap();
    assert_eq!(checker.observe_leader(2, 4), Ok(true));
    assert_eq!(
        checker.observe_local_read(1, 3),
        Err(Violation::LeaseOverlap {
            node: 1,
            term: 3,
            newer_term: 4,
            newer_leader: 2
        })
    );
    checker.observe_local_read(2, 4).unwrap();
}
