//! Torn writes: a crash may keep only a strict prefix of the entries of the last unsynced append,
//! and a write at slot i replaces every stored slot from i on. An acceptor must never hand the
//! runtime a write whose tear could cut a slot it already acknowledged.

use bytes::Bytes;
use yizhi_engine::{
    Engine, Entry, EntryPayload, Envelope, LogIndex, LogStorage, MemStorage, Membership, SeededRng,
};
use yizhi_paxos::{Ballot, Message, PaxosConfig, PaxosNode};

fn acceptor(storage: MemStorage) -> PaxosNode<MemStorage> {
    PaxosNode::new(PaxosConfig::new(2), storage, SeededRng::new(3)).expect("valid node")
}

fn entry(index: LogIndex, ballot: Ballot, v: &str) -> Entry {
    Entry {
        index,
        term: ballot.term(),
        payload: EntryPayload::Normal(Bytes::copy_from_slice(v.as_bytes())),
    }
}

fn accept(n: &mut PaxosNode<MemStorage>, ballot: Ballot, entries: Vec<Entry>) {
    let msg = Message::Accept {
        ballot,
        commit: 0,
        entries,
    };
    n.step(Envelope { from: 1, to: 2, msg });
}

/// Persists one Ready whole (as the runtime does before sending) and returns what it sent.
fn persist(n: &mut PaxosNode<MemStorage>) -> Vec<Message> {
    let ready = n.ready();
    n.storage_mut().append(&ready.entries);
    if let Some(hs) = ready.hard_state {
        n.storage_mut().set_hard_state(hs);
    }
    n.advance();
    ready.messages.into_iter().map(|e| e.msg).collect()
}

/// Every way a crash can tear the next Ready's append (a strict, non-empty prefix of its entries
/// reaches storage, nothing after it): the durable log must still hold each of `acknowledged`.
/// Then persists the Ready whole; returns how many entries it wrote and the messages it sent.
fn assert_no_tear_loses(n: &mut PaxosNode<MemStorage>, acknowledged: &[Entry]) -> (usize, Vec<Message>) {
    let durable = n.storage().clone();
    let ready = n.ready();
    for kept in 1..ready.entries.len() {
        let mut torn = durable.clone();
        torn.append(&ready.entries[..kept]);
        for held in acknowledged {
            let after = torn
                .entries(held.index, held.index + 1, u64::MAX)
                .unwrap_or_default();
            assert_eq!(
                after.first(),
                Some(held),
                "a tear after {kept} of the entries {:?} loses acknowledged slot {} (durable last {} -> {})",
                ready.entries.iter().map(|e| e.index).collect::<Vec<_>>(),
                held.index,
                durable.last_index(),
                torn.last_index()
            );
        }
    }
    n.storage_mut().append(&ready.entries);
    if let Some(hs) = ready.hard_state {
        n.storage_mut().set_hard_state(hs);
    }
    n.advance();
    let sent = ready.messages.into_iter().map(|e| e.msg).collect();
    (ready.entries.len(), sent)
}

#[test]
fn runs_resent_after_an_overwriting_accept_never_put_acknowledged_slots_in_a_tearable_write() {
    let old = Ballot::new(1, 3);
    let b = Ballot::new(2, 1);
    let mut n = acceptor(MemStorage::new_with_membership(Membership::new([1, 2, 3])));
    // Slots 1..=4 accepted in an older ballot.
    accept(&mut n, old, (1..=4).map(|i| entry(i, old, "old")).collect());
    persist(&mut n);
    // The new leader re-proposes 1..=2 with the held value, then 3..=4 with new values: its run
    // overwrites everything this acceptor holds, which then acknowledges 1..=4 in ballot b.
    let run: Vec<Entry> = vec![
        entry(1, b, "old"),
        entry(2, b, "old"),
        entry(3, b, "x"),
        entry(4, b, "y"),
    ];
    accept(&mut n, b, run.clone());
    let (written, _) = assert_no_tear_loses(&mut n, &[]);
    assert_eq!(written, 4, "every held slot changes ballot");
    assert_eq!(n.storage().last_index(), 4);
    // Retransmissions (a heartbeat found the pipeline stalled), duplicates and a reordered shorter
    // run of the same ballot: each is acknowledged again, and none may rewrite the held slots.
    for resent in [
        run.clone(),
        run[..2].to_vec(),
        run[1..3].to_vec(),
        run[3..].to_vec(),
    ] {
        let run_last = resent.last().unwrap().index;
        accept(&mut n, b, resent);
        let (written, replies) = assert_no_tear_loses(&mut n, &run);
        assert_eq!(written, 0, "held slots are not written again");
        assert_eq!(
            replies,
            vec![Message::Accepted {
                ballot: b,
                matched: 4,
                run_last
            }]
        );
    }
    // A longer run appends after what is held; a tear then only cuts the new slot.
    let mut longer = run.clone();
    longer.push(entry(5, b, "z"));
    accept(&mut n, b, longer);
    assert_eq!(assert_no_tear_loses(&mut n, &run).0, 1);
    assert_eq!(n.storage().last_index(), 5);
}

#[test]
fn an_acceptor_restarted_from_any_tear_of_a_resend_still_promises_every_acknowledged_slot() {
    let b = Ballot::new(1, 1);
    let mut n = acceptor(MemStorage::new_with_membership(Membership::new([1, 2, 3])));
    let run: Vec<Entry> = (1..=3).map(|i| entry(i, b, "v")).collect();
    accept(&mut n, b, run.clone());
    persist(&mut n);
    accept(&mut n, b, run.clone());
    // Tear the resend's Ready at every point, restart from that disk, and ask for a promise.
    let durable = n.storage().clone();
    let ready = n.ready();
    for kept in 0..ready.entries.len().max(1) {
        let mut disk = durable.clone();
        disk.append(&ready.entries[..kept.min(ready.entries.len())]);
        let mut restarted = acceptor(disk);
        let higher = Ballot::new(2, 3);
        let msg = Message::Prepare {
            ballot: higher,
            first_unchosen: 1,
        };
        restarted.step(Envelope { from: 3, to: 2, msg });
        let promised = restarted.ready().messages;
        match &promised[..] {
            [
                Envelope {
                    msg: Message::Promise { accepted, .. },
                    ..
                },
            ] => assert_eq!(accepted, &run, "tear after {kept}"),
            other => panic!("expected one Promise, got {other:?}"),
        }
    }
}
