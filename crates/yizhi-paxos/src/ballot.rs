//! Ballots: `(round, node id)` compared lexicographically ("Paxos Made Simple" §2.2 needs proposal
//! numbers that are totally ordered and never reused by two proposers).
//!
//! Encoding into the engine's `u64` term: `round << NODE_ID_BITS | node_id`. Because the node id
//! sits in the low bits, comparing the encoded `u64`s compares `(round, node id)` lexicographically,
//! so `HardState.term` (the promised ballot) and `Entry.term` (the ballot a slot was accepted in)
//! order exactly as the ballots do. Node ids must be below `1 << NODE_ID_BITS`; `PaxosNode::new`
//! refuses others.

use std::fmt;

use yizhi_engine::{NodeId, Term};

/// Bits reserved for the proposer's node id in an encoded ballot.
pub const NODE_ID_BITS: u32 = 16;
/// Node ids must be below this to fit in a ballot.
pub const NODE_ID_LIMIT: NodeId = 1 << NODE_ID_BITS;
/// Rounds must stay below this so that `round << NODE_ID_BITS` fits in a `u64`.
pub const ROUND_LIMIT: u64 = 1 << (64 - NODE_ID_BITS);

/// Invariant: `node() < NODE_ID_LIMIT`. `Ballot::ZERO` (round 0, node 0) is below every real
/// ballot: nobody has promised or accepted anything yet.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Ballot(u64);

impl Ballot {
    pub const ZERO: Ballot = Ballot(0);

    pub fn new(round: u64, node: NodeId) -> Ballot {
        assert!(node < NODE_ID_LIMIT, "node id {node} does not fit in a ballot");
        assert!(round < ROUND_LIMIT, "ballot round {round} overflows");
        Ballot(round << NODE_ID_BITS | node)
    }

    pub fn from_term(term: Term) -> Ballot {
        Ballot(term)
    }

    pub fn term(self) -> Term {
        self.0
    }

    pub fn round(self) -> u64 {
        self.0 >> NODE_ID_BITS
    }

    /// The proposer that owns this ballot (and so the leader, once its phase 1 succeeds).
    pub fn node(self) -> NodeId {
        self.0 & (NODE_ID_LIMIT - 1)
    }
}

impl fmt::Debug for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b{}.{}", self.round(), self.node())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_order_is_lexicographic_round_then_node() {
        let cases = [(1, 2), (1, 3), (2, 1), (2, 65535), (3, 1)];
        for pair in cases.windows(2) {
            let (a, b) = (
                Ballot::new(pair[0].0, pair[0].1),
                Ballot::new(pair[1].0, pair[1].1),
            );
            assert!(a < b, "{a:?} should order below {b:?}");
            assert!(a.term() < b.term());
        }
        let b = Ballot::new(7, 42);
        assert_eq!((b.round(), b.node()), (7, 42));
        assert_eq!(Ballot::from_term(b.term()), b);
        assert!(Ballot::ZERO < Ballot::new(0, 1));
    }

    #[test]
    #[should_panic(expected = "does not fit")]
    fn node_ids_beyond_the_encoding_are_refused() {
        Ballot::new(1, NODE_ID_LIMIT);
    }

    #[test]
    fn rounds_use_every_bit_above_the_node_id() {
        let top = Ballot::new(ROUND_LIMIT - 1, 3);
        assert_eq!((top.round(), top.node()), ((1 << 48) - 1, 3));
        assert_eq!(ROUND_LIMIT, 1 << 48);
    }

    #[test]
    fn debug_shows_round_and_node() {
        assert_eq!(format!("{:?}", Ballot::new(3, 2)), "b3.2");
    }
}
