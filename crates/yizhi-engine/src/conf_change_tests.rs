use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::quorum::{JointConfig, VoteResult};
use crate::rng::SeededRng;

use ConfChangeKind::{AddLearner, AddVoter, PromoteLearner, Remove};

fn change(kind: ConfChangeKind, node: NodeId) -> ConfChange {
    ConfChange::new(kind, node)
}

fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
    ids.iter().copied().collect()
}

#[test]
fn adding_a_voter_goes_through_both_majorities_then_the_new_one() {
    let old = Membership::new([1, 2, 3]);
    let joint = old.enter_joint(&[change(AddVoter, 4)]).unwrap();
    assert_eq!(joint.voters, set(&[1, 2, 3, 4]));
    assert_eq!(joint.voters_outgoing, set(&[1, 2, 3]));
    assert!(joint.is_joint());
    let new = joint.leave_joint().unwrap();
    assert_eq!(new, Membership::new([1, 2, 3, 4]));
}

#[test]
fn a_removed_voter_keeps_voting_in_the_outgoing_half_until_the_joint_configuration_is_left() {
    let joint = Membership::new([1, 2, 3])
        .enter_joint(&[change(Remove, 3)])
        .unwrap();
    assert_eq!(joint.voters, set(&[1, 2]));
    assert_eq!(joint.voters_outgoing, set(&[1, 2, 3]));
    assert!(joint.is_voter(3));
    assert!(!joint.leave_joint().unwrap().contains(3));
}

#[test]
fn a_promoted_learner_leaves_the_learners_and_votes_in_the_incoming_half_only() {
    let old = Membership::new([1, 2, 3]).with_learners([4]);
    let joint = old.enter_joint(&[change(PromoteLearner, 4)]).unwrap();
    assert!(joint.learners.is_empty());
    assert_eq!(joint.voters, set(&[1, 2, 3, 4]));
    assert_eq!(joint.voters_outgoing, set(&[1, 2, 3]));
}

#[test]
fn learners_change_in_one_step_and_voters_never_do() {
    let old = Membership::new([1, 2, 3]);
    let with_learner = old.apply_simple(&[change(AddLearner, 4)]).unwrap();
    assert_eq!(with_learner, Membership::new([1, 2, 3]).with_learners([4]));
    assert_eq!(with_learner.apply_simple(&[change(Remove, 4)]).unwrap(), old);
    for voter_change in [change(AddVoter, 5), change(Remove, 1)] {
        assert_eq!(
            old.apply_simple(&[voter_change]),
            Err(ConfChangeError::NeedsJoint)
        );
    }
    assert_eq!(
        with_learner.apply_simple(&[change(PromoteLearner, 4)]),
        Err(ConfChangeError::NeedsJoint)
    );
}

#[test]
fn refusals_name_what_is_wrong_and_change_nothing() {
    let old = Membership::new([1, 2, 3]).with_learners([4]);
    let joint = old.enter_joint(&[change(AddVoter, 5)]).unwrap();
    let cases: Vec<(&Membership, Vec<ConfChange>, ConfChangeError)> = vec![
        (&old, vec![], ConfChangeError::Empty),
        (&old, vec![change(AddVoter, 0)], ConfChangeError::ZeroNodeId),
        (
            &old,
            vec![change(AddVoter, 6), change(Remove, 6)],
            ConfChangeError::NamedTwice(6),
        ),
        (&old, vec![change(AddVoter, 2)], ConfChangeError::AlreadyMember(2)),
        (&old, vec![change(AddVoter, 4)], ConfChangeError::AlreadyMember(4)),
        (&old, vec![change(Remove, 9)], ConfChangeError::NotMember(9)),
        (
            &old,
            vec![change(PromoteLearner, 1)],
            ConfChangeError::NotLearner(1),
        ),
        (
            &old,
            vec![change(Remove, 1), change(Remove, 2), change(Remove, 3)],
            ConfChangeError::NoVoterLeft,
        ),
        (&joint, vec![change(AddVoter, 6)], ConfChangeError::Joint),
    ];
    for (from, changes, expected) in cases {
        let before = from.clone();
        assert_eq!(from.enter_joint(&changes), Err(expected.clone()), "{changes:?}");
        assert_eq!(*from, before);
    }
    assert_eq!(old.leave_joint(), Err(ConfChangeError::NotJoint));
}

#[test]
fn a_configuration_holds_at_most_members_max_counting_outgoing_voters() {
    let voters: Vec<NodeId> = (1..=MEMBERS_MAX as NodeId).collect();
    let full = Membership::new(voters);
    let next = MEMBERS_MAX as NodeId + 1;
    assert_eq!(
        full.enter_joint(&[change(AddVoter, next)]),
        Err(ConfChangeError::TooManyMembers {
            count: MEMBERS_MAX + 1
        })
    );
    // Exactly MEMBERS_MAX is allowed.
    let almost: Vec<NodeId> = (1..MEMBERS_MAX as NodeId).collect();
    assert!(
        Membership::new(almost)
            .enter_joint(&[change(AddVoter, MEMBERS_MAX as NodeId)])
            .is_ok()
    );
    // Replacing a voter in one change: the removed one still votes in the outgoing half.
    assert_eq!(
        full.enter_joint(&[change(Remove, 1), change(AddVoter, next)]),
        Err(ConfChangeError::TooManyMembers {
            count: MEMBERS_MAX + 1
        })
    );
}

/// Every quorum of `config` (a majority of each non-empty half), as sets of node ids.
fn quorums(config: &Membership) -> Vec<BTreeSet<NodeId>> {
    let joint = JointConfig::from_membership(config);
    let voters: Vec<NodeId> = joint.voters().collect();
    assert!(voters.len() <= 12, "brute force over {} voters", voters.len());
    let mut all = Vec::new();
    for mask in 0u32..(1 << voters.len()) {
        let chosen: BTreeSet<NodeId> = (0..voters.len())
            .filter(|bit| mask & (1 << bit) != 0)
            .map(|bit| voters[bit])
            .collect();
        if joint.vote_result(|id| Some(chosen.contains(&id))) == VoteResult::Won {
            all.push(chosen);
        }
    }
    all
}

fn quorums_intersect(a: &Membership, b: &Membership) -> bool {
    let (qa, qb) = (quorums(a), quorums(b));
    qa.iter().all(|x| qb.iter().all(|y| !x.is_disjoint(y)))
}

/// The checker below can fail: two voters swapped at once without the joint phase leave two
/// disjoint majorities ({1, 2} of the old, {4, 5} of the new).
#[test]
fn switching_two_voters_directly_would_allow_disjoint_quorums() {
    let old = Membership::new([1, 2, 3]);
    let new = Membership::new([3, 4, 5]);
    assert!(!quorums_intersect(&old, &new));
    let joint = old.enter_joint(&[
        change(Remove, 1),
        change(Remove, 2),
        change(AddVoter, 4),
        change(AddVoter, 5),
    ]);
    let joint = joint.unwrap();
    assert!(quorums_intersect(&old, &joint));
    assert!(quorums_intersect(&joint, &joint.leave_joint().unwrap()));
}

fn random_changes(rng: &mut SeededRng, from: &Membership) -> Vec<ConfChange> {
    let mut changes = Vec::new();
    for node in 1..=8 {
        if !rng.chance(1, 3) {
            continue;
        }
        let kind = if from.is_learner(node) {
            [PromoteLearner, Remove][rng.below(2) as usize]
        } else if from.contains(node) {
            Remove
        } else {
            [AddVoter, AddLearner][rng.below(2) as usize]
        };
        changes.push(change(kind, node));
    }
    changes
}

/// Thesis §4.3: any two configurations that can be in force at once — consecutive ones of one log
/// — have intersecting quorums, so two leaders of one term or two different commits are
/// impossible across a change. Random chains of changes, up to eight nodes.
#[test]
fn consecutive_configurations_always_have_intersecting_quorums() {
    let mut rng = SeededRng::new(0x5EED_C0F1);
    let mut config = Membership::new([1, 2, 3]);
    let (mut steps, mut attempts) = (0, 0);
    while steps < 2_000 {
        attempts += 1;
        assert!(
            attempts < 100_000,
            "random changes are refused too often: {steps} taken"
        );
        let changes = random_changes(&mut rng, &config);
        let next = if config.is_joint() {
            config.leave_joint()
        } else if changes.iter().any(|c| c.changes_voters(&config)) {
            config.enter_joint(&changes)
        } else {
            config.apply_simple(&changes)
        };
        let Ok(next) = next else { continue };
        assert!(quorums_intersect(&config, &next), "{config:?} -> {next:?}");
        config = next;
        steps += 1;
    }
}

/// Learners never count: the committed index and any vote are the same whatever learners say.
#[test]
fn differential_learners_never_change_a_joint_decision() {
    let mut rng = SeededRng::new(0x1EA2);
    for _ in 0..5_000 {
        let mut config = Membership::new((1..=5).filter(|_| rng.chance(2, 3)).chain([6]));
        if rng.chance(1, 2) {
            let changes = random_changes(&mut rng, &config);
            if let Ok(joint) = config.enter_joint(&changes) {
                config = joint;
            }
        }
        let learners: Vec<NodeId> = (7..=9).filter(|id| !config.contains(*id)).collect();
        config = config.with_learners(learners);
        let joint = JointConfig::from_membership(&config);
        let acked: BTreeMap<NodeId, u64> = (1..=9).map(|id| (id, rng.below(40))).collect();
        let learner_says = |id: NodeId, value| if config.is_learner(id) { value } else { acked[&id] };
        assert_eq!(
            joint.committed_index(|id| Some(learner_says(id, 0))),
            joint.committed_index(|id| Some(learner_says(id, u64::MAX))),
            "{config:?}"
        );
        let votes: BTreeMap<NodeId, bool> = (1..=9).map(|id| (id, rng.chance(1, 2))).collect();
        let vote_with = |learner_vote| {
            joint.vote_result(|id| {
                Some(if config.is_learner(id) {
                    learner_vote
                } else {
                    votes[&id]
                })
            })
        };
        assert_eq!(vote_with(true), vote_with(false), "{config:?}");
    }
}
