//! The byte encoding of Raft messages: the codec property suite every engine passes
//! (`yizhi_engine::wire::suite`: round trips, truncation, trailing bytes, version and tag damage,
//! random input, the fuzz seed corpus), an append's entry order, and pinned bytes.

use bytes::Bytes;
use yizhi_engine::wire::suite::CodecSpec;
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

fn entries_carried(message: &Message) -> usize {
    match &message.kind {
        MessageKind::Append { entries, .. } => entries.len(),
        _ => 0,
    }
}

const SPEC: CodecSpec<Message> = CodecSpec {
    what: "raft message",
    version: RAFT_WIRE_VERSION,
    variants: KINDS,
    variant_index: |message| kind_index(&message.kind),
    random: random_message,
    entries_carried,
    corpus_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/raft_message"),
};

yizhi_engine::codec_suite!(SPEC);

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
