//! The byte encoding of [`Message`] (building blocks and rules in [`yizhi_engine::wire`]):
//!
//! ```text
//! version u8 = RAFT_WIRE_VERSION | tag u8 | term varint | fields of the kind, in declaration order
//! ```
//!
//! Integers are varints, booleans one byte (0/1), `reject: Option<RejectHint>` a presence byte and
//! then the hint's three fields. An append's entries must continue contiguously from `prev_index`,
//! as `step` assumes of them.

use yizhi_engine::wire::{
    EntryOrder, Reader, WireError, WireMessage, entries_len, put_bool, put_entries, put_snapshot, put_u8,
    put_varint, snapshot_len, varint_len,
};

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
        put_u8(out, RAFT_WIRE_VERSION);
        put_u8(out, tag(&self.kind));
        put_varint(out, self.term);
        match &self.kind {
            MessageKind::PreVote {
                last_index,
                last_term,
            } => {
                put_varint(out, *last_index);
                put_varint(out, *last_term);
            }
            MessageKind::PreVoteResponse { granted } | MessageKind::VoteResponse { granted } => {
                put_bool(out, *granted);
            }
            MessageKind::Vote {
                last_index,
                last_term,
                transfer,
            } => {
                put_varint(out, *last_index);
                put_varint(out, *last_term);
                put_bool(out, *transfer);
            }
            MessageKind::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                put_varint(out, *prev_index);
                put_varint(out, *prev_term);
                put_entries(out, entries);
                put_varint(out, *commit);
            }
            MessageKind::AppendResponse { index, reject } => {
                put_varint(out, *index);
                put_bool(out, reject.is_some());
                if let Some(hint) = reject {
                    put_varint(out, hint.rejected_index);
                    put_varint(out, hint.hint_index);
                    put_varint(out, hint.hint_term);
                }
            }
            MessageKind::Heartbeat { commit, round } => {
                put_varint(out, *commit);
                put_varint(out, *round);
            }
            MessageKind::HeartbeatResponse { round } => put_varint(out, *round),
            MessageKind::InstallSnapshot { snapshot } => put_snapshot(out, snapshot),
            MessageKind::TimeoutNow => {}
            MessageKind::ReadIndex { read_id } => put_varint(out, *read_id),
            MessageKind::ReadIndexResponse { read_id, index } => {
                put_varint(out, *read_id);
                put_varint(out, *index);
            }
        }
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
        let fields = match &self.kind {
            MessageKind::PreVote {
                last_index,
                last_term,
            } => varint_len(*last_index) + varint_len(*last_term),
            MessageKind::PreVoteResponse { .. } | MessageKind::VoteResponse { .. } => 1,
            MessageKind::Vote {
                last_index,
                last_term,
                ..
            } => varint_len(*last_index) + varint_len(*last_term) + 1,
            MessageKind::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                varint_len(*prev_index) + varint_len(*prev_term) + entries_len(entries) + varint_len(*commit)
            }
            MessageKind::AppendResponse { index, reject } => {
                let hint = reject.map_or(0, |h| {
                    varint_len(h.rejected_index) + varint_len(h.hint_index) + varint_len(h.hint_term)
                });
                varint_len(*index) + 1 + hint
            }
            MessageKind::Heartbeat { commit, round } => varint_len(*commit) + varint_len(*round),
            MessageKind::HeartbeatResponse { round } => varint_len(*round),
            MessageKind::InstallSnapshot { snapshot } => snapshot_len(snapshot),
            MessageKind::TimeoutNow => 0,
            MessageKind::ReadIndex { read_id } => varint_len(*read_id),
            MessageKind::ReadIndexResponse { read_id, index } => varint_len(*read_id) + varint_len(*index),
        };
        2 + varint_len(self.term) + fields
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
