//! The shortest path through the engine: elect, replicate, commit, read.

use bytes::Bytes;
use yizhi_engine::{EntryPayload, Role};
use yizhi_raft::testkit::MemCluster;

#[test]
fn three_nodes_elect_replicate_and_read() {
    let mut cluster = MemCluster::new(&[1, 2, 3], &[], 1, |_| {}).elected(1);
    let position = cluster.propose(1, b"x");
    cluster.settle();
    for id in [1, 2, 3] {
        assert_eq!(cluster.node(id).committed(), position.index, "node {id}");
        let last = cluster.applied[&id].last().expect("applied something");
        assert_eq!(last.payload, EntryPayload::Normal(Bytes::from_static(b"x")));
    }
    cluster.node_mut(2).read_index(9).expect("follower forwards");
    cluster.settle();
    assert_eq!(
        cluster.read_states[&2].last().map(|r| (r.read_id, r.index)),
        Some((9, position.index))
    );
    assert_eq!(cluster.node(2).role(), Role::Follower);
}

#[test]
fn single_node_commits_alone() {
    let mut cluster = MemCluster::new(&[1], &[], 1, |_| {}).elected(1);
    let position = cluster.propose(1, b"solo");
    cluster.settle();
    assert_eq!(cluster.node(1).committed(), position.index);
    cluster.node_mut(1).read_index(1).expect("leader");
    cluster.settle();
    assert_eq!(cluster.read_states[&1].len(), 1);
}
