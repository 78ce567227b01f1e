//! The byte encoding of Multi-Paxos messages: seeded round trips of every variant, truncation,
//! trailing bytes, version and tag damage, random input, pinned bytes, and replay of the fuzz seed
//! corpus.

use std::collections::BTreeSet;
use std::path::PathBuf;

use bytes::Bytes;
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

/// Decoding arbitrary bytes must not panic; whatever decodes is canonical (re-encodes to the same
/// bytes, so it also decodes to the same value again).
fn check_arbitrary_input(bytes: &[u8]) -> Option<Message> {
    let message = Message::decode(bytes).ok()?;
    let encoded = message.to_bytes();
    assert_eq!(
        encoded, bytes,
        "{message:?} decoded from bytes it does not encode to"
    );
    assert_eq!(message.encoded_len(), bytes.len());
    Some(message)
}

fn seeded_messages(seed: u64, count: usize) -> Vec<Message> {
    let mut rng = SeededRng::new(seed);
    (0..count).map(|_| random_message(&mut rng)).collect()
}

#[test]
fn every_variant_round_trips_with_the_predicted_length() {
    for message in seeded_messages(1, 20_000) {
        let bytes = message.to_bytes();
        assert_eq!(bytes.len(), message.encoded_len(), "{message:?}");
        assert_eq!(Message::decode(&bytes), Ok(message.clone()));
        // `encode` appends; it never touches what is already in the buffer.
        let mut out = vec![0xAA];
        message.encode(&mut out);
        assert_eq!(out[1..], bytes[..]);
    }
}

#[test]
fn every_variant_is_generated() {
    let mut seen = [false; KINDS];
    let mut with_entries = false;
    for message in seeded_messages(2, 2_000) {
        seen[kind_index(&message)] = true;
        if let Message::Accept { entries, .. }
        | Message::Promise {
            accepted: entries, ..
        } = &message
        {
            with_entries |= entries.len() > 1;
        }
    }
    assert_eq!(seen, [true; KINDS]);
    assert!(with_entries);
}

#[test]
fn every_strict_prefix_is_an_error() {
    for message in seeded_messages(3, 2_000) {
        let bytes = message.to_bytes();
        for cut in 0..bytes.len() {
            assert!(
                Message::decode(&bytes[..cut]).is_err(),
                "prefix {cut}/{} of {message:?}",
                bytes.len()
            );
        }
    }
}

#[test]
fn trailing_bytes_are_an_error() {
    for message in seeded_messages(4, 1_000) {
        let mut bytes = message.to_bytes();
        let end = bytes.len();
        bytes.push(0);
        assert_eq!(
            Message::decode(&bytes),
            Err(WireError::TrailingBytes {
                what: "paxos message",
                offset: end,
                count: 1
            })
        );
    }
}

#[test]
fn any_other_version_is_refused() {
    for message in seeded_messages(5, 50) {
        let mut bytes = message.to_bytes();
        for version in (0..=u8::MAX).filter(|v| *v != PAXOS_WIRE_VERSION) {
            bytes[0] = version;
            assert!(matches!(
                Message::decode(&bytes),
                Err(WireError::UnsupportedVersion { offset: 0, .. })
            ));
        }
    }
}

#[test]
fn unknown_tags_are_refused_and_known_ones_never_give_back_the_message() {
    for message in seeded_messages(6, 200) {
        let original = message.to_bytes();
        for tag in (0..=u8::MAX).filter(|t| *t != original[1]) {
            let mut bytes = original.clone();
            bytes[1] = tag;
            let decoded = Message::decode(&bytes);
            if tag == 0 || tag as usize > KINDS {
                assert_eq!(
                    decoded,
                    Err(WireError::UnknownTag {
                        what: "paxos message",
                        offset: 1,
                        tag
                    })
                );
            } else if let Ok(other) = decoded {
                assert_ne!(other, message);
                check_arbitrary_input(&bytes);
            }
        }
    }
}

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

#[test]
fn random_bytes_never_panic() {
    let mut rng = SeededRng::new(7);
    let mut decoded = 0;
    for _ in 0..100_000 {
        let len = rng.below(48) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        // Mostly valid version and tag bytes, so the fields behind them get exercised too.
        if len > 0 && rng.chance(3, 4) {
            bytes[0] = PAXOS_WIRE_VERSION;
        }
        if len > 1 && rng.chance(3, 4) {
            bytes[1] = rng.range_inclusive(1, KINDS as u64) as u8;
        }
        decoded += usize::from(check_arbitrary_input(&bytes).is_some());
    }
    assert!(
        decoded > 100,
        "only {decoded} random inputs decoded: the test explores too little"
    );
}

#[test]
fn damaged_encodings_never_panic() {
    let mut rng = SeededRng::new(8);
    for message in seeded_messages(9, 5_000) {
        let mut bytes = message.to_bytes();
        for _ in 0..rng.range_inclusive(1, 3) {
            let at = rng.below(bytes.len() as u64) as usize;
            bytes[at] ^= 1 << rng.below(8);
        }
        check_arbitrary_input(&bytes);
    }
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

// ---- The fuzz seed corpus (`fuzz/corpus/paxos_message`), replayed here because CI has no libFuzzer ----

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/paxos_message")
}

#[test]
fn fuzz_corpus_replays_without_panics() {
    let mut files = 0;
    let mut valid = 0;
    for entry in std::fs::read_dir(corpus_dir()).expect("the seed corpus is checked in") {
        let path = entry.expect("readable corpus directory").path();
        let bytes = std::fs::read(&path).expect("readable corpus file");
        files += 1;
        valid += usize::from(check_arbitrary_input(&bytes).is_some());
    }
    assert!(files >= KINDS, "only {files} corpus files");
    assert!(valid >= KINDS, "only {valid} corpus files decode");
}

/// Regenerates the seed corpus: one valid encoding of every variant, a few larger ones, and some
/// truncated. Run by hand: `cargo test -p yizhi-paxos --test codec -- --ignored write_seed_corpus`.
#[test]
#[ignore = "writes files into fuzz/corpus; run by hand after a format change"]
fn write_seed_corpus() {
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = SeededRng::new(10);
    let mut written = [0usize; KINDS];
    while written.iter().any(|n| *n < 2) {
        let message = random_message(&mut rng);
        let kind = kind_index(&message);
        if written[kind] >= 2 {
            continue;
        }
        let bytes = message.to_bytes();
        std::fs::write(dir.join(format!("valid-{kind:02}-{}", written[kind])), &bytes).unwrap();
        if written[kind] == 0 && bytes.len() > 2 {
            let cut = rng.range_inclusive(1, bytes.len() as u64 - 1) as usize;
            std::fs::write(dir.join(format!("truncated-{kind:02}")), &bytes[..cut]).unwrap();
        }
        written[kind] += 1;
    }
}
