//! Quorum arithmetic. A `MajorityConfig` answers for one voter set; a `JointConfig` for two at once
//! (Raft thesis §4.3), so that joint-consensus membership changes need no change to callers.

use std::collections::BTreeSet;

use crate::types::{LogIndex, Membership, NodeId};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    Won,
    Lost,
    /// Not decided yet: enough voters have not answered.
    Pending,
}

/// Up to this many voters the commit computation sorts on the stack (no allocation per call).
const STACK_VOTERS_MAX: usize = 16;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MajorityConfig {
    pub voters: BTreeSet<NodeId>,
}

impl MajorityConfig {
    pub fn new(voters: BTreeSet<NodeId>) -> Self {
        MajorityConfig { voters }
    }

    pub fn quorum_size(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// The highest index that a majority of voters has acknowledged. `acked(id)` gives a voter's
    /// acknowledged index (None counts as 0). An empty config returns `LogIndex::MAX`, so that in a
    /// joint config the other half alone decides.
    pub fn committed_index(&self, acked: impl Fn(NodeId) -> Option<LogIndex>) -> LogIndex {
        let n = self.voters.len();
        if n == 0 {
            return LogIndex::MAX;
        }
        let mut stack = [0 as LogIndex; STACK_VOTERS_MAX];
        let mut heap = Vec::new();
        let values: &mut [LogIndex] = if n <= STACK_VOTERS_MAX {
            &mut stack[..n]
        } else {
            heap.resize(n, 0);
            &mut heap
        };
        for (slot, id) in values.iter_mut().zip(&self.voters) {
            *slot = acked(*id).unwrap_or(0);
        }
        values.sort_unstable();
        // Sorted ascending: the value at n - quorum is acknowledged by at least `quorum` voters.
        values[n - self.quorum_size()]
    }

    pub fn vote_result(&self, vote: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
        if self.voters.is_empty() {
            return VoteResult::Won;
        }
        let (mut yes, mut missing) = (0, 0);
        for id in &self.voters {
            match vote(*id) {
                Some(true) => yes += 1,
                Some(false) => {}
                None => missing += 1,
            }
        }
        let quorum = self.quorum_size();
        if yes >= quorum {
            VoteResult::Won
        } else if yes + missing >= quorum {
            VoteResult::Pending
        } else {
            VoteResult::Lost
        }
    }
}

/// Two majority configs that must both agree. With `outgoing` empty it is a plain majority.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JointConfig {
    pub incoming: MajorityConfig,
    pub outgoing: MajorityConfig,
}

impl JointConfig {
    pub fn from_membership(membership: &Membership) -> Self {
        JointConfig {
            incoming: MajorityConfig::new(membership.voters.clone()),
            outgoing: MajorityConfig::new(membership.voters_outgoing.clone()),
        }
    }

    pub fn is_voter(&self, id: NodeId) -> bool {
        self.incoming.voters.contains(&id) || self.outgoing.voters.contains(&id)
    }

    pub fn voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.incoming.voters.union(&self.outgoing.voters).copied()
    }

    pub fn committed_index(&self, acked: impl Fn(NodeId) -> Option<LogIndex> + Copy) -> LogIndex {
        let index = self
            .incoming
            .committed_index(acked)
            .min(self.outgoing.committed_index(acked));
        // Both halves empty is not a cluster; callers never build one.
        assert!(index != LogIndex::MAX, "joint config has no voters at all");
        index
    }

    pub fn vote_result(&self, vote: impl Fn(NodeId) -> Option<bool> + Copy) -> VoteResult {
        match (self.incoming.vote_result(vote), self.outgoing.vote_result(vote)) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SeededRng;
    use std::collections::BTreeMap;

    /// The definition, computed the slow way: the largest index that at least a majority has reached.
    fn naive_committed(voters: &BTreeSet<NodeId>, acked: &BTreeMap<NodeId, LogIndex>) -> LogIndex {
        if voters.is_empty() {
            return LogIndex::MAX;
        }
        let mut best = 0;
        for candidate in voters.iter().map(|id| acked.get(id).copied().unwrap_or(0)) {
            let count = voters
                .iter()
                .filter(|id| acked.get(id).copied().unwrap_or(0) >= candidate)
                .count();
            if count > voters.len() / 2 {
                best = best.max(candidate);
            }
        }
        best
    }

    fn naive_vote(voters: &BTreeSet<NodeId>, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
        let yes = voters.iter().filter(|id| votes.get(id) == Some(&true)).count();
        let no = voters.iter().filter(|id| votes.get(id) == Some(&false)).count();
        if voters.is_empty() || 2 * yes > voters.len() {
            VoteResult::Won
        } else if 2 * no >= voters.len() {
            // A majority can no longer say yes (with an even count, a tie loses).
            VoteResult::Lost
        } else {
            VoteResult::Pending
        }
    }

    fn random_voters(rng: &mut SeededRng, max: u64) -> BTreeSet<NodeId> {
        (1..=max).filter(|_| rng.chance(1, 2)).collect()
    }

    #[test]
    fn differential_committed_index_matches_naive_definition() {
        let mut rng = SeededRng::new(0xC0FFEE);
        for _ in 0..20_000 {
            let incoming = random_voters(&mut rng, 20);
            let outgoing = if rng.chance(1, 3) {
                random_voters(&mut rng, 20)
            } else {
                BTreeSet::new()
            };
            if incoming.is_empty() && outgoing.is_empty() {
                continue;
            }
            let mut acked = BTreeMap::new();
            for id in 1..=20 {
                if rng.chance(4, 5) {
                    acked.insert(id, rng.below(50));
                }
            }
            let joint = JointConfig {
                incoming: MajorityConfig::new(incoming.clone()),
                outgoing: MajorityConfig::new(outgoing.clone()),
            };
            let fast = joint.committed_index(|id| acked.get(&id).copied());
            let slow = naive_committed(&incoming, &acked).min(naive_committed(&outgoing, &acked));
            assert_eq!(
                fast, slow,
                "incoming={incoming:?} outgoing={outgoing:?} acked={acked:?}"
            );
        }
    }

    #[test]
    fn differential_vote_result_matches_naive_definition() {
        let mut rng = SeededRng::new(42);
        for _ in 0..20_000 {
            let voters = random_voters(&mut rng, 9);
            let mut votes = BTreeMap::new();
            for id in 1..=9 {
                if rng.chance(2, 3) {
                    votes.insert(id, rng.chance(1, 2));
                }
            }
            let fast = MajorityConfig::new(voters.clone()).vote_result(|id| votes.get(&id).copied());
            assert_eq!(
                fast,
                naive_vote(&voters, &votes),
                "voters={voters:?} votes={votes:?}"
            );
        }
    }

    #[test]
    fn joint_config_needs_both_majorities() {
        let joint = JointConfig {
            incoming: MajorityConfig::new([1, 2, 3].into()),
            outgoing: MajorityConfig::new([3, 4, 5].into()),
        };
        // 1, 2, 3 say yes: incoming wins but outgoing has only node 3.
        let votes = |id| match id {
            1..=3 => Some(true),
            _ => None,
        };
        assert_eq!(joint.vote_result(votes), VoteResult::Pending);
        let acked = |id| Some(if id <= 3 { 10 } else { 2 });
        assert_eq!(joint.committed_index(acked), 2);
    }
}
