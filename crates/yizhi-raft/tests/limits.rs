//! Limits on what a client can ask of the engine: proposal size, uncommitted backlog, and where
//! proposals may be made at all (paper §8: clients talk to the leader).

mod common;

use bytes::Bytes;
use common::*;
use yizhi_engine::{ENTRY_OVERHEAD_BYTES, Engine, LogStorage, NodeId, ProposeError};
use yizhi_raft::testkit::MemCluster;

const VOTERS: [NodeId; 3] = [1, 2, 3];

/// A proposal over `max_proposal_bytes` (counted with the per-entry overhead) is refused with
/// both sizes, and leaves no trace in the log.
#[test]
fn proposal_larger_than_max_proposal_bytes_is_refused_with_too_large() {
    const MAX_PROPOSAL_BYTES: u64 = 100;
    let mut cluster =
        MemCluster::new(&VOTERS, &[], 1, |c| c.max_proposal_bytes = MAX_PROPOSAL_BYTES).elected(1);
    let last_index = cluster.node(1).storage().last_index();

    let fits = (MAX_PROPOSAL_BYTES - ENTRY_OVERHEAD_BYTES) as usize;
    let refused = cluster.node_mut(1).propose(Bytes::from(vec![0; fits + 1]));
    assert_eq!(
        refused,
        Err(ProposeError::TooLarge {
            size_bytes: MAX_PROPOSAL_BYTES + 1,
            limit_bytes: MAX_PROPOSAL_BYTES
        })
    );
    assert!(!cluster.node(1).has_ready(), "nothing to persist or send");
    assert_eq!(cluster.node(1).storage().last_index(), last_index);

    let accepted = cluster
        .node_mut(1)
        .propose(Bytes::from(vec![0; fits]))
        .expect("exactly at the limit");
    assert_eq!(accepted.index, last_index + 1);
}

/// Proposals on a follower are refused with the leader it knows, so the runtime can forward.
#[test]
fn proposal_on_a_follower_returns_not_leader_with_the_hint() {
    let mut cluster = MemCluster::new(&VOTERS, &[], 1, |_| {});
    assert_eq!(
        cluster.node_mut(2).propose(Bytes::from_static(b"x")),
        Err(ProposeError::NotLeader { leader: None }),
        "no leader known yet"
    );
    assert_eq!(cluster.campaign(1), Some(1));
    assert_eq!(
        cluster.node_mut(2).propose(Bytes::from_static(b"x")),
        Err(ProposeError::NotLeader { leader: Some(1) })
    );
}

/// The uncommitted backlog is bounded: with followers unreachable, proposals are refused with
/// Backpressure once `max_uncommitted_bytes` would be exceeded, and accepted again after commit.
#[test]
fn uncommitted_backlog_over_the_limit_is_refused_with_backpressure() {
    const MAX_UNCOMMITTED_BYTES: u64 = 200;
    let mut cluster = MemCluster::new(&VOTERS, &[], 1, |c| {
        c.max_uncommitted_bytes = MAX_UNCOMMITTED_BYTES;
        c.max_proposal_bytes = MAX_UNCOMMITTED_BYTES;
    });
    assert_eq!(cluster.campaign(1), Some(1));
    cluster.isolate(1);
    let entry_bytes = 100 - ENTRY_OVERHEAD_BYTES as usize;
    for _ in 0..2 {
        cluster
            .node_mut(1)
            .propose(Bytes::from(vec![0; entry_bytes]))
            .expect("within the backlog");
    }
    assert_eq!(
        cluster.node_mut(1).propose(Bytes::from(vec![0; entry_bytes])),
        Err(ProposeError::Backpressure {
            limit_bytes: MAX_UNCOMMITTED_BYTES
        })
    );
    cluster.heal();
    tick_all_and_settle(&mut cluster, 1);
    cluster
        .node_mut(1)
        .propose(Bytes::from(vec![0; entry_bytes]))
        .expect("backlog drained by commit");
}
