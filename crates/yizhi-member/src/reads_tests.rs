use super::*;
use yizhi_engine::ReadState;

const LIMITS: ReadLimits = ReadLimits {
    max_own: 2,
    max_for_followers: 1,
    timeout_ticks: 10,
};

/// A three-node Raft cluster with node 1 leading.
fn raft() -> yizhi_raft::testkit::MemCluster {
    let mut cluster = yizhi_raft::testkit::MemCluster::new(&[1, 2, 3], &[], 7, |_| {});
    assert_eq!(cluster.campaign(1), Some(1));
    cluster
}

/// A three-node Multi-Paxos cluster with node 1 leading: its followers confirm no reads.
fn paxos() -> yizhi_paxos::testkit::MemCluster {
    let mut cluster = yizhi_paxos::testkit::MemCluster::new(&[1, 2, 3], &[], 7, |_| {});
    assert_eq!(cluster.campaign(1), Some(1));
    cluster
}

fn taken_read_states(states: &mut BTreeMap<NodeId, Vec<ReadState>>, id: NodeId) -> Vec<ReadState> {
    std::mem::take(states.get_mut(&id).expect("known node"))
}

#[test]
fn a_raft_follower_asks_its_engine_and_gets_its_replies_back_with_the_index() {
    let mut cluster = raft();
    let mut reads = ReadBarriers::new(100, LIMITS);
    let start = reads.start(cluster.node_mut(2), vec!["a", "b"], 0);
    assert_eq!(start, Ok(ReadStart::Asked { read_id: 100 }));
    cluster.settle();
    let states = taken_read_states(&mut cluster.read_states, 2);
    assert_eq!(states.len(), 1, "{states:?}");
    assert_eq!(states[0].read_id, 100);
    let confirmed = reads.confirmed(states[0].read_id, states[0].index);
    assert_eq!(
        confirmed,
        Confirmed::Own {
            index: states[0].index,
            replies: vec!["a", "b"]
        }
    );
    assert_eq!(reads.own_len(), 0);
}

#[test]
fn a_paxos_follower_forwards_and_the_leader_confirms_for_it() {
    let mut cluster = paxos();
    let mut follower = ReadBarriers::new(500, LIMITS);
    let mut leader = ReadBarriers::<&str>::new(9_000, LIMITS);
    let start = follower.start(cluster.node_mut(2), vec!["r"], 0);
    assert_eq!(
        start,
        Ok(ReadStart::Forward {
            leader: 1,
            read_id: 500
        })
    );
    assert_eq!(leader.confirm_for_follower(cluster.node_mut(1), 2, 500, 0), None);
    cluster.settle();
    let states = taken_read_states(&mut cluster.read_states, 1);
    assert_eq!(states.len(), 1, "{states:?}");
    let Confirmed::Follower(response) = leader.confirmed(states[0].read_id, states[0].index) else {
        panic!("the leader's read state is the follower's");
    };
    assert_eq!(
        response,
        ReadResponse {
            to: 2,
            read_id: 500,
            index: Some(states[0].index)
        }
    );
    let answer = follower.answered(response.read_id, response.index);
    assert_eq!(answer, Some(Ok((states[0].index, vec!["r"]))));
    assert_eq!(follower.answered(500, Some(1)), None, "answered once");
}

#[test]
fn a_late_answer_for_an_earlier_boot_matches_no_read_of_this_one() {
    let mut cluster = paxos();
    let earlier = first_id_of_boot(0x1234_5678_9abc_def1);
    let mut this_boot = ReadBarriers::new(first_id_of_boot(0x0fed_cba9_8765_4321), LIMITS);
    let Ok(ReadStart::Forward { read_id, .. }) = this_boot.start(cluster.node_mut(2), vec!["r"], 0) else {
        panic!("a follower forwards");
    };
    assert_ne!(read_id, earlier);
    assert_eq!(this_boot.answered(earlier, Some(1)), None);
    assert_eq!(this_boot.own_len(), 1, "the read still waits for its own answer");
}

#[test]
fn a_refusal_from_the_leader_fails_the_reads_with_no_leader() {
    let mut cluster = paxos();
    let mut reads = ReadBarriers::new(1, LIMITS);
    let Ok(ReadStart::Forward { read_id, .. }) = reads.start(cluster.node_mut(3), vec![7], 0) else {
        panic!("a follower forwards");
    };
    assert_eq!(
        reads.answered(read_id, None),
        Some(Err((ProposeFailure::NoLeader, vec![7])))
    );
}

#[test]
fn a_leader_change_fails_own_reads_and_refuses_followers_reads() {
    let mut cluster = raft();
    let mut reads = ReadBarriers::new(1, LIMITS);
    assert_eq!(reads.leader_is(Some(1)), (vec![], vec![]));
    reads
        .start(cluster.node_mut(1), vec!["mine"], 0)
        .expect("the leader asks");
    assert_eq!(reads.confirm_for_follower(cluster.node_mut(1), 3, 44, 0), None);
    assert_eq!(
        reads.leader_is(Some(1)),
        (vec![], vec![]),
        "no change, nothing fails"
    );
    let (failed, refused) = reads.leader_is(Some(2));
    assert_eq!(failed, vec!["mine"]);
    assert_eq!(
        refused,
        vec![ReadResponse {
            to: 3,
            read_id: 44,
            index: None
        }]
    );
    assert_eq!((reads.own_len(), reads.for_followers_len()), (0, 0));
}

#[test]
fn reads_time_out_after_their_ticks_and_followers_barriers_are_forgotten() {
    let mut cluster = raft();
    let mut reads = ReadBarriers::new(1, LIMITS);
    reads.start(cluster.node_mut(1), vec!["old"], 0).expect("asked");
    reads.start(cluster.node_mut(1), vec!["new"], 5).expect("asked");
    assert_eq!(reads.confirm_for_follower(cluster.node_mut(1), 2, 9, 0), None);
    assert!(
        reads.expire(LIMITS.timeout_ticks).is_empty(),
        "not older than the timeout yet"
    );
    assert_eq!(reads.expire(LIMITS.timeout_ticks + 1), vec!["old"]);
    assert_eq!(reads.for_followers_len(), 0);
    assert_eq!(reads.expire(LIMITS.timeout_ticks + 6), vec!["new"]);
}

#[test]
fn the_tables_are_bounded() {
    let mut cluster = raft();
    let mut reads = ReadBarriers::new(1, LIMITS);
    for n in 0..LIMITS.max_own {
        reads.start(cluster.node_mut(1), vec![n], 0).expect("room");
    }
    assert_eq!(
        reads.start(cluster.node_mut(1), vec![99], 0),
        Err((ProposeFailure::TooManyRequests, vec![99]))
    );
    assert_eq!(reads.confirm_for_follower(cluster.node_mut(1), 2, 1, 0), None);
    let refused = reads.confirm_for_follower(cluster.node_mut(1), 2, 2, 0);
    assert_eq!(
        refused,
        Some(ReadResponse {
            to: 2,
            read_id: 2,
            index: None
        })
    );
}

#[test]
fn without_a_leader_reads_fail_at_once_and_an_unsent_request_gives_its_reads_back() {
    let mut cluster = raft();
    cluster.isolate(3);
    for _ in 0..100 {
        cluster.tick(3);
        cluster.settle();
    }
    assert_eq!(
        cluster.node(3).status().leader,
        None,
        "the cut-off member lost its leader"
    );
    let mut reads = ReadBarriers::new(1, LIMITS);
    assert_eq!(
        reads.start(cluster.node_mut(3), vec!["r"], 0),
        Err((ProposeFailure::NoLeader, vec!["r"]))
    );
    let mut paxos = paxos();
    let Ok(ReadStart::Forward { read_id, .. }) = reads.start(paxos.node_mut(2), vec!["s"], 0) else {
        panic!("a follower forwards");
    };
    assert_eq!(reads.unsent(read_id), vec!["s"]);
    assert_eq!(reads.own_len(), 0);
}
