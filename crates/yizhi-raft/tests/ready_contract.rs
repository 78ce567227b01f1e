//! The `Ready`/`advance` contract (etcd-io/raft's `RawNode`): `has_ready()` is true exactly when
//! there is work for the runtime, whatever kind it is; `must_sync` is set whenever a vote or term
//! must be durable; and the `yizhi_engine::Engine` trait reaches the real engine.

mod common;

use bytes::Bytes;
use common::*;
use yizhi_engine::{Engine, Envelope, HardState, NodeId, ReadState, Role, SoftState, TransferError};
use yizhi_raft::testkit::MemCluster;
use yizhi_raft::{Message, MessageKind};

const VOTERS: [NodeId; 3] = [1, 2, 3];

/// Node 2, a follower without a leader, that has just learned term 4 from a message it otherwise
/// ignores (a stray heartbeat response); its `Ready` is not handled yet.
fn follower_hearing_term_4() -> Node {
    let mut node = fresh_node(2, &VOTERS, defaults);
    node.step(envelope(3, 2, 4, MessageKind::HeartbeatResponse { round: 1 }));
    node
}

/// Asserts the `Ready` carries nothing but what the caller checked already.
fn assert_nothing_to_persist_or_apply(ready: &yizhi_engine::Ready<Message>) {
    assert!(ready.snapshot.is_none());
    assert!(ready.entries.is_empty());
    assert!(ready.committed_entries.is_empty());
}

// ---- has_ready(): each kind of pending work alone ----

/// A read answered by the leader is work for the runtime even when nothing else changed.
#[test]
fn has_ready_for_a_read_state_alone() {
    let mut node = fresh_node(2, &VOTERS, defaults);
    assert!(!node.has_ready(), "a fresh node has nothing to do");
    node.step(envelope(
        1,
        2,
        0,
        MessageKind::ReadIndexResponse { read_id: 7, index: 0 },
    ));
    assert!(node.has_ready());
    let ready = handle_ready(&mut node);
    assert_eq!(ready.read_states, vec![ReadState { read_id: 7, index: 0 }]);
    assert_eq!((ready.soft_state, ready.hard_state), (None, None));
    assert!(ready.messages.is_empty() && !ready.must_sync);
    assert_nothing_to_persist_or_apply(&ready);
    assert!(!node.has_ready());
}

/// A follower that learns a higher term from a message it otherwise ignores (a stray heartbeat
/// response) must persist the term, though its role and leader (none) stay the same.
#[test]
fn has_ready_for_a_hard_state_change_alone() {
    let mut node = follower_hearing_term_4();
    assert!(node.has_ready());
    let ready = handle_ready(&mut node);
    assert_eq!(ready.hard_state, Some(hard_state(4, None, 0)));
    assert!(ready.must_sync, "a new term must be durable");
    assert_eq!(ready.soft_state, None, "still a follower without a leader");
    assert!(ready.messages.is_empty() && ready.read_states.is_empty());
    assert_nothing_to_persist_or_apply(&ready);
    assert!(!node.has_ready());
}

/// A reply is work on its own: a lower-term pre-vote gets an explicit refusal and nothing changes.
#[test]
fn has_ready_for_an_outgoing_message_alone() {
    let mut node = node_with_log(2, &VOTERS, &[], hard_state(4, None, 0), defaults);
    assert!(!node.has_ready());
    node.step(envelope(
        3,
        2,
        2,
        MessageKind::PreVote {
            last_index: 0,
            last_term: 0,
        },
    ));
    assert!(node.has_ready());
    let ready = handle_ready(&mut node);
    assert_eq!(
        sent(&ready),
        vec![(3, 4, MessageKind::PreVoteResponse { granted: false })]
    );
    assert_eq!((ready.soft_state, ready.hard_state), (None, None));
    assert!(!ready.must_sync && ready.read_states.is_empty());
    assert_nothing_to_persist_or_apply(&ready);
    assert!(!node.has_ready());
}

/// Thesis §6.2: the leader that stepped down on CheckQuorum changes only its role and leader — no
/// term, no message — and the runtime must still hear of it.
#[test]
fn has_ready_for_a_soft_state_change_alone() {
    let mut cluster = MemCluster::new(&VOTERS, &[], 5, |_| {}).elected(1);
    cluster.isolate(1);
    let term = cluster.node(1).term();
    for _ in 0..4 * cluster.node(1).config().election_timeout_ticks {
        cluster.process_ready(1);
        assert!(!cluster.node(1).has_ready());
        cluster.tick(1);
        if cluster.node(1).role() != Role::Leader {
            break;
        }
    }
    let node = cluster.node_mut(1);
    assert_eq!(node.role(), Role::Follower, "stepped down");
    assert!(node.has_ready());
    let ready = handle_ready(node);
    assert_eq!(
        ready.soft_state,
        Some(SoftState {
            leader: None,
            role: Role::Follower
        })
    );
    assert_eq!(ready.hard_state, None, "the term {term} stays");
    assert!(ready.messages.is_empty() && ready.read_states.is_empty() && !ready.must_sync);
    assert_nothing_to_persist_or_apply(&ready);
    assert!(!node.has_ready());
}

/// `max_committed_bytes_per_ready` splits applying across Readies: committed entries keep coming,
/// one Ready after another, and `has_ready()` stays true while any remain unapplied.
#[test]
fn has_ready_while_committed_entries_remain_to_apply() {
    let mut cluster = MemCluster::new(&[1], &[], 5, |c| c.max_committed_bytes_per_ready = 1).elected(1);
    let node = cluster.node_mut(1);
    let first = node.propose(Bytes::from_static(b"a")).expect("leader").index;
    for data in [b"b", b"c"] {
        node.propose(Bytes::from_static(data)).expect("leader");
    }
    let ready = handle_ready(node);
    assert_eq!(ready.entries.len(), 3);
    assert!(ready.committed_entries.is_empty(), "committed only once durable");

    let ready = handle_ready(node);
    assert_eq!(ready.hard_state.map(|h| h.commit), Some(first + 2));
    assert_eq!(committed_indexes(&ready), vec![first]);
    for index in [first + 1, first + 2] {
        assert!(node.has_ready(), "entry {index} is committed, not applied");
        let ready = handle_ready(node);
        assert_eq!(committed_indexes(&ready), vec![index]);
        assert_eq!((ready.soft_state, ready.hard_state), (None, None));
        assert!(ready.messages.is_empty() && ready.entries.is_empty());
    }
    assert!(!node.has_ready());
    assert_eq!(node.status().applied, first + 2);
}

/// Thesis §6.4: a read at the leader needs a heartbeat round; that alone is a reason for a Ready,
/// whose only content is the round's heartbeats.
#[test]
fn has_ready_for_a_read_waiting_for_its_round_alone() {
    let mut cluster = MemCluster::new(&VOTERS, &[], 5, |_| {}).elected(1);
    let (term, commit) = (cluster.node(1).term(), cluster.node(1).committed());
    let node = cluster.node_mut(1);
    assert!(!node.has_ready());
    node.read_index(7).expect("leader");
    assert!(node.has_ready());
    let ready = handle_ready(node);
    let round = match ready.messages.first().map(|e| &e.msg.kind) {
        Some(MessageKind::Heartbeat { round, .. }) => *round,
        other => panic!("expected a heartbeat, got {other:?}"),
    };
    assert_eq!(
        sent(&ready),
        vec![
            (2, term, MessageKind::Heartbeat { commit, round }),
            (3, term, MessageKind::Heartbeat { commit, round }),
        ]
    );
    assert_eq!((ready.soft_state, ready.hard_state), (None, None));
    assert!(ready.read_states.is_empty());
    assert_nothing_to_persist_or_apply(&ready);
    assert!(!node.has_ready());
}

// ---- must_sync ----

/// Paper §5.2 / Figure 2: `votedFor` is persistent state. A vote cast in a term the node already
/// persisted (it learned the term earlier) changes only `vote` — and must still be fsynced before
/// the grant leaves.
#[test]
fn vote_alone_in_an_already_durable_term_must_sync() {
    let mut node = follower_hearing_term_4();
    let ready = handle_ready(&mut node);
    assert_eq!(ready.hard_state, Some(hard_state(4, None, 0)));

    node.step(envelope(
        3,
        2,
        4,
        MessageKind::Vote {
            last_index: 0,
            last_term: 0,
            transfer: false,
        },
    ));
    let ready = handle_ready(&mut node);
    assert_eq!(
        ready.hard_state,
        Some(HardState {
            term: 4,
            vote: Some(3),
            commit: 0
        })
    );
    assert!(
        ready.must_sync,
        "the vote must be durable before its grant leaves"
    );
    assert_eq!(
        sent(&ready),
        vec![(3, 4, MessageKind::VoteResponse { granted: true })]
    );
}

// ---- the Engine trait reaches the engine ----

fn id_of<E: Engine>(engine: &E) -> NodeId {
    engine.id()
}

fn tick_through_engine<E: Engine>(engine: &mut E) {
    engine.tick();
}

fn step_through_engine<E: Engine>(engine: &mut E, envelope: Envelope<E::Message>) {
    engine.step(envelope);
}

fn read_through_engine<E: Engine>(engine: &mut E, read_id: u64) -> Result<(), yizhi_engine::ProposeError> {
    engine.read_index(read_id)
}

fn transfer_through_engine<E: Engine>(engine: &mut E, to: NodeId) -> Result<(), TransferError> {
    engine.transfer_leadership(to)
}

#[test]
fn engine_id_is_the_configured_id() {
    let cluster = MemCluster::new(&VOTERS, &[], 5, |_| {});
    for id in VOTERS {
        assert_eq!(id_of(cluster.node(id)), id);
    }
}

#[test]
fn engine_tick_runs_the_election_timer() {
    let mut node = fresh_node(1, &VOTERS, defaults);
    let timeout = node.config().election_timeout_ticks;
    for _ in 0..2 * timeout {
        tick_through_engine(&mut node);
        if node.status().role != Role::Follower {
            break;
        }
    }
    assert_eq!(node.status().role, Role::PreCandidate);
    let ready = handle_ready(&mut node);
    assert_eq!(
        sent(&ready)
            .into_iter()
            .map(|(to, term, _)| (to, term))
            .collect::<Vec<_>>(),
        vec![(2, 1), (3, 1)],
        "pre-votes for term 1"
    );
}

#[test]
fn engine_step_delivers_a_message() {
    let mut node = fresh_node(2, &VOTERS, defaults);
    step_through_engine(
        &mut node,
        envelope(1, 2, 3, MessageKind::Heartbeat { commit: 0, round: 9 }),
    );
    let status = node.status();
    assert_eq!((status.term, status.leader), (3, Some(1)));
    let ready = handle_ready(&mut node);
    assert_eq!(
        sent(&ready),
        vec![(1, 3, MessageKind::HeartbeatResponse { round: 9 })]
    );
}

#[test]
fn engine_read_index_registers_the_read_at_leader_and_follower() {
    let mut cluster = MemCluster::new(&VOTERS, &[], 5, |_| {}).elected(1);
    let commit = cluster.node(1).committed();
    read_through_engine(cluster.node_mut(1), 7).expect("leader");
    read_through_engine(cluster.node_mut(2), 8).expect("follower forwards");
    cluster.settle();
    assert_eq!(
        cluster.read_states[&1],
        vec![ReadState {
            read_id: 7,
            index: commit
        }]
    );
    assert_eq!(
        cluster.read_states[&2],
        vec![ReadState {
            read_id: 8,
            index: commit
        }]
    );
}

#[test]
fn engine_transfer_leadership_hands_over_and_refuses_at_a_follower() {
    let mut cluster = MemCluster::new(&VOTERS, &[], 5, |_| {}).elected(1);
    assert_eq!(
        transfer_through_engine(cluster.node_mut(2), 3),
        Err(TransferError::NotLeader)
    );
    assert_eq!(transfer_through_engine(cluster.node_mut(1), 2), Ok(()));
    cluster.settle();
    assert_eq!(cluster.leader(), Some(2));
}
