//! The byte encoding of Multi-Paxos messages: the codec property suite every engine passes
//! (`yizhi_engine::wire::suite`: round trips, truncation, trailing bytes, version and tag damage,
//! random input, the fuzz seed corpus), slot order in accepts and promises, and pinned bytes.

use std::collections::BTreeSet;

use bytes::Bytes;
use yizhi_engine::wire::suite::CodecSpec;
use yizhi_engine::wire::testkit::{interesting_u64, random_payload, random_run, random_snapshot};
use yizhi_engine::{
    Entry, EntryPayload, Membership, SeededRng, Snapshot, SnapshotMeta, WireError, WireMessage,
};
use yizhi_paxos::{Ballot, Message, PAXOS_WIRE_VERSION};

/// How many `Message` variants `random_message` draws from.
const KINDS: usize = 9;

/// The position of a message's variant among `KINDS`. Exhaustive on purpose: a new variant stops
/// this compiling, and then `every_variant_is_generated` fails until the generator draws it.
fn kind_index(message: &Message) -> usize {
    match message {
        Message::Prepare { .. } => 0,
        Message::Promise { .. } => 1,
        Message::Accept { .. } => 2,
        Message::Accepted { .. } => 3,
        Message::Heartbeat { .. } => 4,
        Message::HeartbeatAck { .. } => 5,
        Message::InstallSnapshot { .. } => 6,
        Message::Nack { .. } => 7,
        Message::TimeoutNow { .. } => 8,
    }
}

fn random_ballot(rng: &mut SeededRng) -> Ballot {
    Ballot::from_term(interesting_u64(rng))
}

fn random_message(rng: &mut SeededRng) -> Message {
    let n = interesting_u64;
    let b = random_ballot;
    match rng.below(KINDS as u64) {
        0 => Message::Prepare {
            ballot: b(rng),
            first_unchosen: n(rng),
        },
        1 => Message::Promise {
            ballot: b(rng),
            commit: n(rng),
            accepted: random_ascending_entries(rng),
            snapshot: rng.chance(1, 2).then(|| random_snapshot(rng)),
        },
        2 => Message::Accept {
            ballot: b(rng),
            commit: n(rng),
            entries: random_run(rng, 4),
        },
        3 => Message::Accepted {
            ballot: b(rng),
            matched: n(rng),
            run_last: n(rng),
        },
        4 => Message::Heartbeat {
            ballot: b(rng),
            commit: n(rng),
            read_round: n(rng),
        },
        5 => Message::HeartbeatAck {
            ballot: b(rng),
            matched: n(rng),
            read_round: n(rng),
        },
        6 => Message::InstallSnapshot {
            ballot: b(rng),
            snapshot: random_snapshot(rng),
        },
        7 => Message::Nack { promised: b(rng) },
        _ => Message::TimeoutNow { ballot: b(rng) },
    }
}

/// Strictly ascending slots with gaps, as an acceptor holding scattered slots might report them.
fn random_ascending_entries(rng: &mut SeededRng) -> Vec<Entry> {
    let slots: BTreeSet<u64> = (0..rng.below(5)).map(|_| interesting_u64(rng).max(1)).collect();
    slots
        .into_iter()
        .map(|index| Entry {
            index,
            term: interesting_u64(rng),
            payload: random_payload(rng),
        })
        .collect()
}

fn entries_carried(message: &Message) -> usize {
    match message {
        Message::Accept { entries, .. }
        | Message::Promise {
            accepted: entries, ..
        } => entries.len(),
        _ => 0,
    }
}

const SPEC: CodecSpec<Message> = CodecSpec {
    what: "paxos message",
    version: PAXOS_WIRE_VERSION,
    variants: KINDS,
    variant_index: kind_index,
    random: random_message,
    entries_carried,
    corpus_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/paxos_message"),
};

yizhi_engine::codec_suite!(SPEC);

#[test]
fn out_of_order_slots_are_refused() {
    let entry = |index| Entry {
        index,
        term: 1,
        payload: EntryPayload::Noop,
    };
    let ballot = Ballot::new(1, 1);
    let accept = |indexes: &[u64]| Message::Accept {
        ballot,
        commit: 0,
        entries: indexes.iter().copied().map(entry).collect(),
    };
    let promise = |indexes: &[u64]| Message::Promise {
        ballot,
        commit: 0,
        accepted: indexes.iter().copied().map(entry).collect(),
        snapshot: None,
    };
    let refused = |message: Message| {
        matches!(
            Message::decode(&message.to_bytes()),
            Err(WireError::Invalid {
                what: "entry index",
                ..
            })
        )
    };
    assert!(refused(accept(&[3, 5])));
    assert!(refused(accept(&[3, 3])));
    assert!(refused(promise(&[3, 3])));
    assert!(refused(promise(&[4, 3])));
    assert_eq!(
        Message::decode(&promise(&[3, 5]).to_bytes()),
        Ok(promise(&[3, 5]))
    );
    assert_eq!(Message::decode(&accept(&[3, 4]).to_bytes()), Ok(accept(&[3, 4])));
}

/// The exact bytes of a few messages. If this fails, the format changed: bump `PAXOS_WIRE_VERSION`
/// (old peers must refuse the new bytes) and update the expectation.
#[test]
fn golden_bytes() {
    // Ballot (1, 2) is term 1 << 16 | 2 = 65538 = varint 0x82 0x80 0x04.
    let ballot = Ballot::new(1, 2);
    let promise = Message::Promise {
        ballot,
        commit: 5,
        accepted: vec![
            Entry {
                index: 6,
                term: ballot.term(),
                payload: EntryPayload::Normal(Bytes::from_static(b"v")),
            },
            Entry {
                index: 9,
                term: 1,
                payload: EntryPayload::Noop,
            },
        ],
        snapshot: Some(Snapshot {
            meta: SnapshotMeta {
                index: 5,
                term: 1,
                membership: Membership::new([1, 2, 3]),
            },
            data: Bytes::from_static(b"s"),
        }),
    };
    #[rustfmt::skip]
    let promise_bytes = [
        1, 2,                         // version, tag Promise
        0x82, 0x80, 0x04, 5,          // ballot, commit 5
        2,                            // two accepted slots
        6, 0x82, 0x80, 0x04, 1, 1, b'v', // slot 6, normal "v"
        9, 1, 0,                      // slot 9, term 1, noop
        1,                            // a snapshot follows
        5, 1, 3, 1, 2, 3, 0, 0, 1, b's', // index 5, term 1, voters {1,2,3}, data "s"
    ];
    let accepted = Message::Accepted {
        ballot: Ballot::from_term(u64::MAX),
        matched: 0,
        run_last: 128,
    };
    let accepted_bytes = [
        1, 4, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0, 0x80, 0x01,
    ];
    let nack = Message::Nack { promised: ballot };
    let accept = Message::Accept {
        ballot,
        commit: 0,
        entries: vec![],
    };
    for (message, bytes) in [
        (promise, &promise_bytes[..]),
        (accepted, &accepted_bytes[..]),
        (nack, &[1, 8, 0x82, 0x80, 0x04][..]),
        (accept, &[1, 3, 0x82, 0x80, 0x04, 0, 0][..]),
    ] {
        assert_eq!(message.to_bytes(), bytes, "{message:?}");
        assert_eq!(Message::decode(bytes), Ok(message));
    }
}
