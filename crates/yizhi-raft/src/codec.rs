//! The byte encoding of [`Message`] (building blocks and rules in [`yizhi_engine::wire`]):
//!
//! ```text
//! version u8 = RAFT_WIRE_VERSION | tag u8 | term varint | fields of the kind, in declaration order
//! ```
//!
//! Integers are varints, booleans one byte (0/1), `reject: Option<RejectHint>` a presence byte and
//! then the hint's three fields. An append's entries must continue contiguously from `prev_index`,
//! as `step` assumes of them.

use yizhi_engine::wire::{EntryOrder, Reader, Sink, WireError, WireMessage, measure};

use crate::message::{Message, MessageKind, RejectHint};

/// Bumped on any change to the layout of a Raft message or of a building block it uses.
pub const RAFT_WIRE_VERSION: u8 = 1;

// Tag 0 is never used, so that zeroed memory is not a message.
const TAG_PRE_VOTE: u8 = 1;
const TAG_PRE_VOTE_RESPONSE: u8 = 2;
const TAG_VOTE: u8 = 3;
const TAG_VOTE_RESPONSE: u8 = 4;
const TAG_APPEND: u8 = 5;
const TAG_APPEND_RESPONSE: u8 = 6;
const TAG_HEARTBEAT: u8 = 7;
const TAG_HEARTBEAT_RESPONSE: u8 = 8;
const TAG_INSTALL_SNAPSHOT: u8 = 9;
const TAG_TIMEOUT_NOW: u8 = 10;
const TAG_READ_INDEX: u8 = 11;
const TAG_READ_INDEX_RESPONSE: u8 = 12;

/// The tag and fields of `message`, into a buffer or a [`Measure`] (so `encoded_len` is exact).
fn write<S: Sink>(message: &Message, out: &mut S) {
    out.u8(RAFT_WIRE_VERSION);
    out.u8(tag(&message.kind));
    out.varint(message.term);
    match &message.kind {
        MessageKind::PreVote {
            last_index,
            last_term,
        } => {
            out.varint(*last_index);
            out.varint(*last_term);
        }
        MessageKind::PreVoteResponse { granted } | MessageKind::VoteResponse { granted } => {
            out.bool(*granted)
        }
        MessageKind::Vote {
            last_index,
            last_term,
            transfer,
        } => {
            out.varint(*last_index);
            out.varint(*last_term);
            out.bool(*transfer);
        }
        MessageKind::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => {
            out.varint(*prev_index);
            out.varint(*prev_term);
            out.entries(entries);
            out.varint(*commit);
        }
        MessageKind::AppendResponse { index, reject } => {
            out.varint(*index);
            out.option(reject.as_ref(), |out, hint| {
                for field in [hint.rejected_index, hint.hint_index, hint.hint_term] {
                    out.varint(field);
                }
            });
        }
        MessageKind::Heartbeat { commit: a, round: b }
        | MessageKind::ReadIndexResponse { read_id: a, index: b } => {
            out.varint(*a);
            out.varint(*b);
        }
        MessageKind::HeartbeatResponse { round: value } | MessageKind::ReadIndex { read_id: value } => {
            out.varint(*value)
        }
        MessageKind::InstallSnapshot { snapshot } => out.snapshot(snapshot),
        MessageKind::TimeoutNow => {}
    }
}

fn tag(kind: &MessageKind) -> u8 {
    match kind {
        MessageKind::PreVote { .. } => TAG_PRE_VOTE,
        MessageKind::PreVoteResponse { .. } => TAG_PRE_VOTE_RESPONSE,
        MessageKind::Vote { .. } => TAG_VOTE,
        MessageKind::VoteResponse { .. } => TAG_VOTE_RESPONSE,
        MessageKind::Append { .. } => TAG_APPEND,
        MessageKind::AppendResponse { .. } => TAG_APPEND_RESPONSE,
        MessageKind::Heartbeat { .. } => TAG_HEARTBEAT,
        MessageKind::HeartbeatResponse { .. } => TAG_HEARTBEAT_RESPONSE,
        MessageKind::InstallSnapshot { .. } => TAG_INSTALL_SNAPSHOT,
        MessageKind::TimeoutNow => TAG_TIMEOUT_NOW,
        MessageKind::ReadIndex { .. } => TAG_READ_INDEX,
        MessageKind::ReadIndexResponse { .. } => TAG_READ_INDEX_RESPONSE,
    }
}

impl WireMessage for Message {
    fn encode(&self, out: &mut Vec<u8>) {
        write(self, out);
    }

    fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes);
        r.version(RAFT_WIRE_VERSION)?;
        let tag_offset = r.offset();
        let tag = r.u8("raft message tag")?;
        let term = r.varint("term")?;
        let kind = match tag {
            TAG_PRE_VOTE => MessageKind::PreVote {
                last_index: r.varint("last_index")?,
                last_term: r.varint("last_term")?,
            },
            TAG_PRE_VOTE_RESPONSE => MessageKind::PreVoteResponse {
                granted: r.bool("granted")?,
            },
            TAG_VOTE => MessageKind::Vote {
                last_index: r.varint("last_index")?,
                last_term: r.varint("last_term")?,
                transfer: r.bool("transfer")?,
            },
            TAG_VOTE_RESPONSE => MessageKind::VoteResponse {
                granted: r.bool("granted")?,
            },
            TAG_APPEND => {
                let prev_index = r.varint("prev_index")?;
                MessageKind::Append {
                    prev_index,
                    prev_term: r.varint("prev_term")?,
                    entries: r.ordered_entries(EntryOrder::ContiguousAfter(prev_index))?,
                    commit: r.varint("commit")?,
                }
            }
            TAG_APPEND_RESPONSE => MessageKind::AppendResponse {
                index: r.varint("index")?,
                reject: decode_reject(&mut r)?,
            },
            TAG_HEARTBEAT => MessageKind::Heartbeat {
                commit: r.varint("commit")?,
                round: r.varint("round")?,
            },
            TAG_HEARTBEAT_RESPONSE => MessageKind::HeartbeatResponse {
                round: r.varint("round")?,
            },
            TAG_INSTALL_SNAPSHOT => MessageKind::InstallSnapshot {
                snapshot: r.snapshot()?,
            },
            TAG_TIMEOUT_NOW => MessageKind::TimeoutNow,
            TAG_READ_INDEX => MessageKind::ReadIndex {
                read_id: r.varint("read_id")?,
            },
            TAG_READ_INDEX_RESPONSE => MessageKind::ReadIndexResponse {
                read_id: r.varint("read_id")?,
                index: r.varint("index")?,
            },
            tag => {
                return Err(WireError::UnknownTag {
                    what: "raft message",
                    offset: tag_offset,
                    tag,
                });
            }
        };
        r.finish("raft message")?;
        Ok(Message { term, kind })
    }

    fn encoded_len(&self) -> usize {
        measure(|out| write(self, out))
    }

    fn is_snapshot(&self) -> bool {
        matches!(self.kind, MessageKind::InstallSnapshot { .. })
    }
}

fn decode_reject(r: &mut Reader) -> Result<Option<RejectHint>, WireError> {
    if !r.bool("reject present")? {
        return Ok(None);
    }
    Ok(Some(RejectHint {
        rejected_index: r.varint("rejected_index")?,
        hint_index: r.varint("hint_index")?,
        hint_term: r.varint("hint_term")?,
    }))
}
