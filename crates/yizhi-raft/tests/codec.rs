//! The byte encoding of Raft messages: seeded round trips of every variant, truncation, trailing
//! bytes, version and tag damage, random input, pinned bytes, and replay of the fuzz seed corpus.

use std::path::PathBuf;

use bytes::Bytes;
use yizhi_engine::wire::testkit::{interesting_u64, random_entries, random_snapshot};
use yizhi_engine::{
    Entry, EntryPayload, Membership, SeededRng, Snapshot, SnapshotMeta, WireError, WireMessage,
};
use yizhi_raft::{Message, MessageKind, RAFT_WIRE_VERSION, RejectHint};

/// How many `MessageKind` variants `random_message` draws from.
const KINDS: usize = 12;

/// The position of a message's variant among `KINDS`. Exhaustive on purpose: a new variant stops
/// this compiling, and then `every_variant_is_generated` fails until the generator draws it.
fn kind_index(kind: &MessageKind) -> usize {
    match kind {
        MessageKind::PreVote { .. } => 0,
        MessageKind::PreVoteResponse { .. } => 1,
        MessageKind::Vote { .. } => 2,
        MessageKind::VoteResponse { .. } => 3,
        MessageKind::Append { .. } => 4,
        MessageKind::AppendResponse { .. } => 5,
        MessageKind::Heartbeat { .. } => 6,
        MessageKind::HeartbeatResponse { .. } => 7,
        MessageKind::InstallSnapshot { .. } => 8,
        MessageKind::TimeoutNow => 9,
        MessageKind::ReadIndex { .. } => 10,
        MessageKind::ReadIndexResponse { .. } => 11,
    }
}

fn random_message(rng: &mut SeededRng) -> Message {
    let n = interesting_u64;
    let kind = match rng.below(KINDS as u64) {
        0 => MessageKind::PreVote {
            last_index: n(rng),
            last_term: n(rng),
        },
        1 => MessageKind::PreVoteResponse {
            granted: rng.chance(1, 2),
        },
        2 => MessageKind::Vote {
            last_index: n(rng),
            last_term: n(rng),
            transfer: rng.chance(1, 2),
        },
        3 => MessageKind::VoteResponse {
            granted: rng.chance(1, 2),
        },
        4 => random_append(rng),
        5 => MessageKind::AppendResponse {
            index: n(rng),
            reject: rng.chance(1, 2).then(|| RejectHint {
                rejected_index: n(rng),
                hint_index: n(rng),
                hint_term: n(rng),
            }),
        },
        6 => MessageKind::Heartbeat {
            commit: n(rng),
            round: n(rng),
        },
        7 => MessageKind::HeartbeatResponse { round: n(rng) },
        8 => MessageKind::InstallSnapshot {
            snapshot: random_snapshot(rng),
        },
        9 => MessageKind::TimeoutNow,
        10 => MessageKind::ReadIndex { read_id: n(rng) },
        _ => MessageKind::ReadIndexResponse {
            read_id: n(rng),
            index: n(rng),
        },
    };
    Message::new(interesting_u64(rng), kind)
}

/// Entries continue from `prev_index`, as the decoder requires; `prev_index` may be anything when
/// there are none.
fn random_append(rng: &mut SeededRng) -> MessageKind {
    let count = rng.below(5);
    let prev_index = interesting_u64(rng).min(u64::MAX - count);
    MessageKind::Append {
        prev_index,
        prev_term: interesting_u64(rng),
        entries: random_entries(rng, prev_index.wrapping_add(1).max(1), count),
        commit: interesting_u64(rng),
    }
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
    let mut append_with_entries = false;
    for message in seeded_messages(2, 2_000) {
        seen[kind_index(&message.kind)] = true;
        if let MessageKind::Append { entries, .. } = &message.kind {
            append_with_entries |= entries.len() > 1;
        }
    }
    assert_eq!(seen, [true; KINDS]);
    assert!(append_with_entries);
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
                what: "raft message",
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
        for version in (0..=u8::MAX).filter(|v| *v != RAFT_WIRE_VERSION) {
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
                        what: "raft message",
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
fn an_append_whose_entries_do_not_follow_prev_index_is_refused() {
    let entry = |index| Entry {
        index,
        term: 1,
        payload: EntryPayload::Noop,
    };
    for (prev_index, indexes) in [(5, vec![7]), (5, vec![6, 8]), (5, vec![5]), (u64::MAX, vec![1])] {
        let message = Message::new(
            1,
            MessageKind::Append {
                prev_index,
                prev_term: 1,
                entries: indexes.into_iter().map(entry).collect(),
                commit: 0,
            },
        );
        assert!(matches!(
            Message::decode(&message.to_bytes()),
            Err(WireError::Invalid {
                what: "entry index",
                ..
            })
        ));
    }
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
            bytes[0] = RAFT_WIRE_VERSION;
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

/// The exact bytes of a few messages. If this fails, the format changed: bump `RAFT_WIRE_VERSION`
/// (old peers must refuse the new bytes) and update the expectation.
#[test]
fn golden_bytes() {
    let append = Message::new(
        3,
        MessageKind::Append {
            prev_index: 127,
            prev_term: 2,
            entries: vec![
                Entry {
                    index: 128,
                    term: 3,
                    payload: EntryPayload::Normal(Bytes::from_static(b"put")),
                },
                Entry {
                    index: 129,
                    term: 3,
                    payload: EntryPayload::Membership(Membership::new([1, 2, 3]).with_learners([4])),
                },
            ],
            commit: 300,
        },
    );
    #[rustfmt::skip]
    let append_bytes = [
        1, 5, 3,                      // version, tag Append, term
        0x7f, 2,                      // prev_index 127, prev_term 2
        2,                            // two entries
        0x80, 0x01, 3, 1, 3, b'p', b'u', b't', // 128, term 3, normal "put"
        0x81, 0x01, 3, 2, 3, 1, 2, 3, 0, 1, 4, // 129, term 3, membership {1,2,3} / {} / {4}
        0xac, 0x02,                   // commit 300
    ];
    let reject = Message::new(
        u64::MAX,
        MessageKind::AppendResponse {
            index: 9,
            reject: Some(RejectHint {
                rejected_index: 9,
                hint_index: 4,
                hint_term: 1,
            }),
        },
    );
    let reject_bytes = [
        1, 6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 9, 1, 9, 4, 1,
    ];
    let snapshot = Message::new(
        2,
        MessageKind::InstallSnapshot {
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    index: 10,
                    term: 2,
                    membership: Membership::new([1]),
                },
                data: Bytes::from_static(b"img"),
            },
        },
    );
    let snapshot_bytes = [1, 9, 2, 10, 2, 1, 1, 0, 0, 3, b'i', b'm', b'g'];
    let vote = Message::new(
        0,
        MessageKind::Vote {
            last_index: 0,
            last_term: 0,
            transfer: true,
        },
    );
    for (message, bytes) in [
        (append, &append_bytes[..]),
        (reject, &reject_bytes[..]),
        (snapshot, &snapshot_bytes[..]),
        (vote, &[1, 3, 0, 0, 0, 1][..]),
    ] {
        assert_eq!(message.to_bytes(), bytes, "{message:?}");
        assert_eq!(Message::decode(bytes), Ok(message));
    }
}

// ---- The fuzz seed corpus (`fuzz/corpus/raft_message`), replayed here because CI has no libFuzzer ----

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/raft_message")
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
/// truncated. Run by hand: `cargo test -p yizhi-raft --test codec -- --ignored write_seed_corpus`.
#[test]
#[ignore = "writes files into fuzz/corpus; run by hand after a format change"]
fn write_seed_corpus() {
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = SeededRng::new(10);
    let mut written = [0usize; KINDS];
    while written.iter().any(|n| *n < 2) {
        let message = random_message(&mut rng);
        let kind = kind_index(&message.kind);
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
