//! Configuration changes, computed the same way by both engines (docs/design-membership.md).
//!
//! A change of the voter set always passes through a joint configuration (Raft thesis §4.3):
//! [`Membership::enter_joint`] turns `C_old` into `C_old,new`, whose decisions need a majority of
//! both halves, and [`Membership::leave_joint`] turns that into `C_new`. A change of learners
//! alone moves no quorum and takes effect in one step ([`Membership::apply_simple`]). One path for
//! every change of voters is less to prove than the one-voter shortcut of thesis §4.1, which needs
//! an extra rule (the leader's own-term commit first) to be safe.

use std::collections::BTreeSet;

use crate::types::{Membership, NodeId};

/// Voters and learners together, at most: a bound on what one configuration (and so one entry,
/// one snapshot header, one quorum computation) can hold.
pub const MEMBERS_MAX: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConfChangeKind {
    /// A new voter (etcd's `MemberAdd`).
    AddVoter,
    /// A new learner: receives the log, never votes (etcd's `MemberAdd` with `is_learner`).
    AddLearner,
    /// A learner becomes a voter (etcd's `MemberPromote`).
    PromoteLearner,
    /// A voter or learner leaves (etcd's `MemberRemove`).
    Remove,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConfChange {
    pub kind: ConfChangeKind,
    pub node: NodeId,
}

impl ConfChange {
    pub fn new(kind: ConfChangeKind, node: NodeId) -> Self {
        ConfChange { kind, node }
    }

    /// Whether this change moves the voter set (and so must go through a joint configuration).
    pub fn changes_voters(&self, current: &Membership) -> bool {
        match self.kind {
            ConfChangeKind::AddVoter | ConfChangeKind::PromoteLearner => true,
            ConfChangeKind::AddLearner => false,
            ConfChangeKind::Remove => current.voters.contains(&self.node),
        }
    }
}

/// Why a change was refused. Nothing changes when one is returned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfChangeError {
    #[error("node id 0 is reserved")]
    ZeroNodeId,
    #[error("no change given")]
    Empty,
    #[error("node {0} is named by more than one change")]
    NamedTwice(NodeId),
    #[error("node {0} is already a member")]
    AlreadyMember(NodeId),
    #[error("node {0} is not a member")]
    NotMember(NodeId),
    #[error("node {0} is not a learner")]
    NotLearner(NodeId),
    #[error("the configuration is joint; it must be left before another change")]
    Joint,
    #[error("the configuration is not joint; there is nothing to leave")]
    NotJoint,
    #[error("the change leaves no voter")]
    NoVoterLeft,
    #[error("the change would make {count} members, more than {MEMBERS_MAX}")]
    TooManyMembers { count: usize },
    #[error("the change moves voters; it must go through a joint configuration")]
    NeedsJoint,
}

impl Membership {
    /// `C_old` → `C_old,new`: the voters after `changes` become `voters`, today's voters become
    /// `voters_outgoing`. Learners change at once (a learner promoted leaves `learners`; a voter
    /// removed stays in `voters_outgoing` until the joint configuration is left).
    pub fn enter_joint(&self, changes: &[ConfChange]) -> Result<Membership, ConfChangeError> {
        if self.is_joint() {
            return Err(ConfChangeError::Joint);
        }
        let next = self.with_changes(changes)?;
        let joint = Membership {
            voters: next.voters,
            voters_outgoing: self.voters.clone(),
            learners: next.learners,
        };
        joint.assert_valid();
        Ok(joint)
    }

    /// `C_old,new` → `C_new`.
    pub fn leave_joint(&self) -> Result<Membership, ConfChangeError> {
        if !self.is_joint() {
            return Err(ConfChangeError::NotJoint);
        }
        let next = Membership {
            voters: self.voters.clone(),
            voters_outgoing: BTreeSet::new(),
            learners: self.learners.clone(),
        };
        next.assert_valid();
        Ok(next)
    }

    /// Changes that move no voter (learners added or removed), in one step.
    pub fn apply_simple(&self, changes: &[ConfChange]) -> Result<Membership, ConfChangeError> {
        if self.is_joint() {
            return Err(ConfChangeError::Joint);
        }
        if changes.iter().any(|change| change.changes_voters(self)) {
            return Err(ConfChangeError::NeedsJoint);
        }
        self.with_changes(changes)
    }

    /// The configuration `changes` lead to, checked one by one against what they find.
    fn with_changes(&self, changes: &[ConfChange]) -> Result<Membership, ConfChangeError> {
        check_change_list(changes)?;
        let mut next = self.clone();
        for change in changes {
            next.apply_one(*change)?;
        }
        if next.voters.is_empty() {
            return Err(ConfChangeError::NoVoterLeft);
        }
        // Outgoing voters still take part until the joint configuration is left.
        let count = next.members().union(&self.voters).count();
        if count > MEMBERS_MAX {
            return Err(ConfChangeError::TooManyMembers { count });
        }
        next.assert_valid();
        Ok(next)
    }

    fn apply_one(&mut self, change: ConfChange) -> Result<(), ConfChangeError> {
        let node = change.node;
        match change.kind {
            ConfChangeKind::AddVoter | ConfChangeKind::AddLearner if self.contains(node) => {
                Err(ConfChangeError::AlreadyMember(node))
            }
            ConfChangeKind::AddVoter => {
                self.voters.insert(node);
                Ok(())
            }
            ConfChangeKind::AddLearner => {
                self.learners.insert(node);
                Ok(())
            }
            ConfChangeKind::PromoteLearner if !self.learners.remove(&node) => {
                Err(ConfChangeError::NotLearner(node))
            }
            ConfChangeKind::PromoteLearner => {
                self.voters.insert(node);
                Ok(())
            }
            ConfChangeKind::Remove if !self.contains(node) => Err(ConfChangeError::NotMember(node)),
            ConfChangeKind::Remove => {
                self.voters.remove(&node);
                self.learners.remove(&node);
                Ok(())
            }
        }
    }
}

/// A list of changes is refused as a whole when it is empty, names node 0, or names a node twice
/// (the order of two changes to one node would decide the outcome: etcd refuses that too).
fn check_change_list(changes: &[ConfChange]) -> Result<(), ConfChangeError> {
    if changes.is_empty() {
        return Err(ConfChangeError::Empty);
    }
    let mut seen = BTreeSet::new();
    for change in changes {
        if change.node == 0 {
            return Err(ConfChangeError::ZeroNodeId);
        }
        if !seen.insert(change.node) {
            return Err(ConfChangeError::NamedTwice(change.node));
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "conf_change_tests.rs"]
mod tests;
