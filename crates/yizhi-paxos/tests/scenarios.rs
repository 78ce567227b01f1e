//! Transcript-style scenarios for the classic Multi-Paxos cases ("Paxos Made Simple" §2–3,
//! "Paxos Made Moderately Complex" §3). Each test drives a real in-memory cluster through the
//! `Ready` contract and checks what every node applied, sent and persisted.

use bytes::Bytes;
use yizhi_engine::{Engine, Entry, EntryPayload, Envelope, LogStorage, Role};
use yizhi_paxos::testkit::MemCluster;
use yizhi_paxos::{Ballot, Message};

fn value(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn cluster() -> MemCluster {
    MemCluster::new(&[1, 2, 3], &[], 7, |_| {})
}

/// One heartbeat from `leader`, so followers learn the latest commit index.
fn heartbeat(c: &mut MemCluster, leader: u64) {
    c.node_mut(leader).tick();
    c.settle();
}

fn applied(c: &MemCluster, id: u64) -> Vec<(u64, Option<&'static str>)> {
    c.applied_values(id)
        .into_iter()
        .map(|(slot, v)| (slot, v.map(|b| &*String::from_utf8(b).unwrap().leak())))
        .collect()
}

#[test]
fn a_single_proposer_gets_its_value_chosen_and_applied_everywhere() {
    let mut c = cluster();
    assert_eq!(
        c.campaign(1),
        Some(1),
        "n1 wins phase 1 with every acceptor's promise"
    );
    let ballot = c.node(1).leading_ballot().expect("n1 leads");
    assert_eq!(ballot, Ballot::new(1, 1));
    let position = c
        .node_mut(1)
        .propose(value("x"))
        .expect("the leader takes proposals");
    assert_eq!((position.index, position.term), (1, ballot.term()));
    c.settle();
    assert_eq!(c.node(1).committed(), 1, "a majority accepted slot 1 in b1.1");
    heartbeat(&mut c, 1);
    for id in 1..=3 {
        assert_eq!(applied(&c, id), vec![(1, Some("x"))], "node {id}");
        assert_eq!(c.node(id).committed(), 1);
    }
}

#[test]
fn a_follower_refuses_proposals_and_names_the_leader() {
    let mut c = cluster();
    c.campaign(1);
    heartbeat(&mut c, 1);
    let err = c.node_mut(2).propose(value("y")).unwrap_err();
    assert_eq!(err, yizhi_engine::ProposeError::NotLeader { leader: Some(1) });
}

#[test]
fn a_promise_is_in_the_hard_state_of_the_same_ready_as_the_promise_reply() {
    let mut c = cluster();
    c.record_readies = true;
    c.node_mut(1).campaign_now();
    c.settle();
    let ballot = Ballot::new(1, 1);
    for id in [2, 3] {
        let (_, ready) = c
            .readies
            .iter()
            .find(|(n, r)| {
                *n == id
                    && r.messages
                        .iter()
                        .any(|m| matches!(m.msg, Message::Promise { .. }))
            })
            .expect("the acceptor promised");
        let hard_state = ready.hard_state.expect("the promise is persisted with its reply");
        assert_eq!(hard_state.term, ballot.term(), "node {id}");
        assert!(
            ready.must_sync,
            "node {id}: a promise must be synced before the reply leaves"
        );
    }
    c.crash(2);
    c.restart(2);
    assert_eq!(c.node(2).promised(), ballot, "the promise survives a crash");
}

#[test]
fn an_acceptor_refuses_an_accept_below_its_promise_and_names_the_promise() {
    let mut c = cluster();
    c.campaign(1);
    c.campaign(2);
    let b2 = Ballot::new(2, 2);
    assert_eq!(c.node(3).promised(), b2);
    let stale = Entry {
        index: 1,
        term: Ballot::new(1, 1).term(),
        payload: EntryPayload::Normal(value("stale")),
    };
    let accept = Message::Accept {
        ballot: Ballot::new(1, 1),
        commit: 0,
        entries: vec![stale],
    };
    c.node_mut(3).step(Envelope {
        from: 1,
        to: 3,
        msg: accept,
    });
    c.process_ready(3);
    let replies: Vec<_> = c.in_flight.drain(..).collect();
    assert_eq!(
        replies,
        vec![Envelope {
            from: 3,
            to: 1,
            msg: Message::Nack { promised: b2 }
        }]
    );
    assert_eq!(c.node(3).storage().last_index(), 0, "nothing was accepted");
}

#[test]
fn duelling_proposers_make_progress_once_one_backs_off() {
    let mut c = cluster();
    c.record_readies = true;
    c.campaign(1);
    let b1 = c.node(1).leading_ballot().unwrap();
    // n2 outbids n1 before n1's proposal reaches anyone.
    c.node_mut(1).propose(value("from-n1")).unwrap();
    c.node_mut(2).campaign_now();
    let b2 = c.node(2).promised();
    assert!(b2 > b1, "{b2:?} outbids {b1:?}");
    c.process_ready(2);
    // n2's prepares arrive first; n1's accepts then meet the higher promise and are refused.
    c.settle();
    c.process_ready(1);
    c.settle();
    assert_eq!(c.leader(), Some(2));
    let nacks_to_n1 = c
        .readies
        .iter()
        .flat_map(|(_, r)| &r.messages)
        .filter(|m| m.to == 1 && m.msg == Message::Nack { promised: b2 })
        .count();
    assert_eq!(nacks_to_n1, 2, "both acceptors refused n1's accept, naming b2");
    // n1 heard the Nacks and backed off; it follows n2 from its first heartbeat.
    heartbeat(&mut c, 2);
    assert_eq!(c.node(1).role(), Role::Follower, "n1 backed off");
    assert_eq!(c.node(1).leader(), Some(2));
    c.node_mut(2).propose(value("from-n2")).unwrap();
    c.settle();
    heartbeat(&mut c, 2);
    let expected = applied(&c, 2);
    assert!(expected.contains(&(2, Some("from-n2"))) || expected.contains(&(1, Some("from-n2"))));
    for id in 1..=3 {
        assert_eq!(applied(&c, id), expected, "node {id} applied the same sequence");
    }
}

#[test]
fn a_value_accepted_by_a_minority_before_a_crash_is_overwritten_and_never_applied() {
    let mut c = cluster();
    c.campaign(1);
    c.isolate(1);
    c.node_mut(1).propose(value("lost")).unwrap();
    c.settle();
    assert_eq!(c.node(1).storage().last_index(), 1, "only n1 accepted 'lost'");
    c.crash(1);
    c.heal();
    assert_eq!(c.campaign(2), Some(2));
    c.node_mut(2).propose(value("kept")).unwrap();
    c.settle();
    c.restart(1);
    heartbeat(&mut c, 2);
    heartbeat(&mut c, 2);
    for id in 1..=3 {
        assert_eq!(applied(&c, id), vec![(1, Some("kept"))], "node {id}");
    }
}

#[test]
fn a_value_accepted_by_a_majority_before_a_crash_is_chosen_by_the_next_leader() {
    let mut c = cluster();
    c.campaign(1);
    c.cut_links.insert((1, 3));
    c.node_mut(1).propose(value("x")).unwrap();
    c.process_ready(1);
    // n2 accepts, but n1 crashes before it learns that x was chosen.
    c.settle();
    c.crash(1);
    c.heal();
    assert!(c.node(2).storage().last_index() >= 1);
    assert_eq!(c.campaign(3), Some(3), "n3 wins with promises from n2 and n3");
    heartbeat(&mut c, 3);
    for id in [2, 3] {
        assert_eq!(
            applied(&c, id),
            vec![(1, Some("x"))],
            "node {id}: x stays chosen at slot 1"
        );
    }
    let ballot = c.node(3).leading_ballot().unwrap();
    let stored = c.node(3).storage().entries(1, 2, u64::MAX).unwrap();
    assert_eq!(stored[0].term, ballot.term(), "re-proposed in the new ballot");
}

#[test]
fn a_new_leader_re_proposes_the_highest_ballot_value_and_fills_holes_with_no_ops() {
    // Five acceptors, so that n1 needs both promises below (its own is the third).
    let mut c = MemCluster::new(&[1, 2, 3, 4, 5], &[], 7, |_| {});
    c.record_readies = true;
    c.node_mut(1).campaign_now();
    c.process_ready(1);
    c.in_flight.clear();
    let b = c.node(1).promised();
    let slot = |index, round: u64, v: &str| Entry {
        index,
        term: Ballot::new(round, 2).term(),
        payload: EntryPayload::Normal(value(v)),
    };
    // n2 accepted slot 1 in an old ballot and slot 3 later; n3 accepted slot 1 in a newer ballot.
    // Promise ballots are n1's; the accepted ballots (rounds 0 and below n1's round) are older.
    let promise_2 = Message::Promise {
        ballot: b,
        commit: 0,
        accepted: vec![slot(1, 0, "old"), slot(3, 0, "c")],
        snapshot: None,
    };
    let promise_3 = Message::Promise {
        ballot: b,
        commit: 0,
        accepted: vec![Entry {
            term: Ballot::new(0, 3).term(),
            ..slot(1, 0, "newer")
        }],
        snapshot: None,
    };
    c.node_mut(1).step(Envelope {
        from: 2,
        to: 1,
        msg: promise_2,
    });
    c.node_mut(1).step(Envelope {
        from: 3,
        to: 1,
        msg: promise_3,
    });
    assert_eq!(c.node(1).role(), Role::Leader);
    c.process_ready(1);
    let (_, ready) = c.readies.last().unwrap();
    let proposed: Vec<(u64, u64, EntryPayload)> = ready
        .entries
        .iter()
        .map(|e| (e.index, e.term, e.payload.clone()))
        .collect();
    assert_eq!(
        proposed,
        vec![
            (1, b.term(), EntryPayload::Normal(value("newer"))),
            (2, b.term(), EntryPayload::Noop),
            (3, b.term(), EntryPayload::Normal(value("c"))),
        ],
        "highest accepted ballot wins slot 1, slot 2 is a hole, slot 3 is adopted"
    );
    let accepts = ready
        .messages
        .iter()
        .filter(|m| matches!(&m.msg, Message::Accept { entries, .. } if entries.len() == 3))
        .count();
    assert_eq!(accepts, 4, "one batched run of slots 1..=3 to each acceptor");
}

#[test]
fn reads_are_answered_only_after_a_majority_confirms_the_leadership() {
    let mut c = cluster();
    c.campaign(1);
    c.node_mut(1).propose(value("x")).unwrap();
    c.settle();
    c.isolate(1);
    c.node_mut(1).read_index(42).unwrap();
    c.settle();
    assert!(
        c.read_states[&1].is_empty(),
        "no majority confirmed: the read waits"
    );
    c.heal();
    heartbeat(&mut c, 1);
    let states = &c.read_states[&1];
    assert_eq!(states.len(), 1);
    assert_eq!(
        (states[0].read_id, states[0].index),
        (42, 1),
        "read at the commit index"
    );
}

#[test]
fn a_deposed_leader_cannot_confirm_reads() {
    let mut c = cluster();
    c.campaign(1);
    c.isolate(1);
    c.node_mut(1).read_index(7).unwrap();
    c.process_ready(1);
    c.in_flight.clear();
    c.heal();
    c.cut_links.insert((2, 1));
    c.cut_links.insert((3, 1));
    c.campaign(2);
    c.heal();
    heartbeat(&mut c, 1);
    assert!(
        c.read_states[&1].is_empty(),
        "acceptors promised b2 and refuse b1's round"
    );
    assert_ne!(c.node(1).role(), Role::Leader);
}
