//! The byte encoding of [`Message`] (building blocks and rules in [`yizhi_engine::wire`]):
//!
//! ```text
//! version u8 = PAXOS_WIRE_VERSION | tag u8 | fields of the variant, in declaration order
//! ```
//!
//! A ballot is its `u64` term as a varint; `Option<Snapshot>` is a presence byte and then the
//! snapshot. A promise's accepted slots are strictly ascending and an accept's entries contiguous,
//! as the messages' producers guarantee and their handlers assume.

use yizhi_engine::wire::{
    EntryOrder, Reader, WireError, WireMessage, entries_len, put_bool, put_entries, put_snapshot, put_u8,
    put_varint, snapshot_len, varint_len,
};

use crate::ballot::Ballot;
use crate::message::Message;

/// Bumped on any change to the layout of a Paxos message or of a building block it uses.
pub const PAXOS_WIRE_VERSION: u8 = 1;

// Tag 0 is never used, so that zeroed memory is not a message.
const TAG_PREPARE: u8 = 1;
const TAG_PROMISE: u8 = 2;
const TAG_ACCEPT: u8 = 3;
const TAG_ACCEPTED: u8 = 4;
const TAG_HEARTBEAT: u8 = 5;
const TAG_HEARTBEAT_ACK: u8 = 6;
const TAG_INSTALL_SNAPSHOT: u8 = 7;
const TAG_NACK: u8 = 8;
const TAG_TIMEOUT_NOW: u8 = 9;

fn tag(message: &Message) -> u8 {
    match message {
        Message::Prepare { .. } => TAG_PREPARE,
        Message::Promise { .. } => TAG_PROMISE,
        Message::Accept { .. } => TAG_ACCEPT,
        Message::Accepted { .. } => TAG_ACCEPTED,
        Message::Heartbeat { .. } => TAG_HEARTBEAT,
        Message::HeartbeatAck { .. } => TAG_HEARTBEAT_ACK,
        Message::InstallSnapshot { .. } => TAG_INSTALL_SNAPSHOT,
        Message::Nack { .. } => TAG_NACK,
        Message::TimeoutNow { .. } => TAG_TIMEOUT_NOW,
    }
}

fn put_ballot(out: &mut Vec<u8>, ballot: Ballot) {
    put_varint(out, ballot.term());
}

fn ballot_len(ballot: Ballot) -> usize {
    varint_len(ballot.term())
}

fn read_ballot(r: &mut Reader, what: &'static str) -> Result<Ballot, WireError> {
    Ok(Ballot::from_term(r.varint(what)?))
}

impl WireMessage for Message {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u8(out, PAXOS_WIRE_VERSION);
        put_u8(out, tag(self));
        match self {
            Message::Prepare {
                ballot,
                first_unchosen,
            } => {
                put_ballot(out, *ballot);
                put_varint(out, *first_unchosen);
            }
            Message::Promise {
                ballot,
                commit,
                accepted,
                snapshot,
            } => {
                put_ballot(out, *ballot);
                put_varint(out, *commit);
                put_entries(out, accepted);
                put_bool(out, snapshot.is_some());
                if let Some(snapshot) = snapshot {
                    put_snapshot(out, snapshot);
                }
            }
            Message::Accept {
                ballot,
                commit,
                entries,
            } => {
                put_ballot(out, *ballot);
                put_varint(out, *commit);
                put_entries(out, entries);
            }
            Message::Accepted {
                ballot,
                matched,
                run_last,
            } => {
                put_ballot(out, *ballot);
                put_varint(out, *matched);
                put_varint(out, *run_last);
            }
            Message::Heartbeat {
                ballot,
                commit,
                read_round,
            } => {
                put_ballot(out, *ballot);
                put_varint(out, *commit);
                put_varint(out, *read_round);
            }
            Message::HeartbeatAck {
                ballot,
                matched,
                read_round,
            } => {
                put_ballot(out, *ballot);
                put_varint(out, *matched);
                put_varint(out, *read_round);
            }
            Message::InstallSnapshot { ballot, snapshot } => {
                put_ballot(out, *ballot);
                put_snapshot(out, snapshot);
            }
            Message::Nack { promised } => put_ballot(out, *promised),
            Message::TimeoutNow { ballot } => put_ballot(out, *ballot),
        }
    }

    fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes);
        r.version(PAXOS_WIRE_VERSION)?;
        let tag_offset = r.offset();
        let message = match r.u8("paxos message tag")? {
            TAG_PREPARE => Message::Prepare {
                ballot: read_ballot(&mut r, "ballot")?,
                first_unchosen: r.varint("first_unchosen")?,
            },
            TAG_PROMISE => Message::Promise {
                ballot: read_ballot(&mut r, "ballot")?,
                commit: r.varint("commit")?,
                accepted: r.ordered_entries(EntryOrder::Ascending)?,
                snapshot: if r.bool("snapshot present")? {
                    Some(r.snapshot()?)
                } else {
                    None
                },
            },
            TAG_ACCEPT => Message::Accept {
                ballot: read_ballot(&mut r, "ballot")?,
                commit: r.varint("commit")?,
                entries: r.ordered_entries(EntryOrder::Contiguous)?,
            },
            TAG_ACCEPTED => Message::Accepted {
                ballot: read_ballot(&mut r, "ballot")?,
                matched: r.varint("matched")?,
                run_last: r.varint("run_last")?,
            },
            TAG_HEARTBEAT => Message::Heartbeat {
                ballot: read_ballot(&mut r, "ballot")?,
                commit: r.varint("commit")?,
                read_round: r.varint("read_round")?,
            },
            TAG_HEARTBEAT_ACK => Message::HeartbeatAck {
                ballot: read_ballot(&mut r, "ballot")?,
                matched: r.varint("matched")?,
                read_round: r.varint("read_round")?,
            },
            TAG_INSTALL_SNAPSHOT => Message::InstallSnapshot {
                ballot: read_ballot(&mut r, "ballot")?,
                snapshot: r.snapshot()?,
            },
            TAG_NACK => Message::Nack {
                promised: read_ballot(&mut r, "promised")?,
            },
            TAG_TIMEOUT_NOW => Message::TimeoutNow {
                ballot: read_ballot(&mut r, "ballot")?,
            },
            tag => {
                return Err(WireError::UnknownTag {
                    what: "paxos message",
                    offset: tag_offset,
                    tag,
                });
            }
        };
        r.finish("paxos message")?;
        Ok(message)
    }

    fn encoded_len(&self) -> usize {
        let fields = match self {
            Message::Prepare {
                ballot,
                first_unchosen,
            } => ballot_len(*ballot) + varint_len(*first_unchosen),
            Message::Promise {
                ballot,
                commit,
                accepted,
                snapshot,
            } => {
                ballot_len(*ballot)
                    + varint_len(*commit)
                    + entries_len(accepted)
                    + 1
                    + snapshot.as_ref().map_or(0, snapshot_len)
            }
            Message::Accept {
                ballot,
                commit,
                entries,
            } => ballot_len(*ballot) + varint_len(*commit) + entries_len(entries),
            Message::Accepted {
                ballot,
                matched: a,
                run_last: b,
            }
            | Message::Heartbeat {
                ballot,
                commit: a,
                read_round: b,
            }
            | Message::HeartbeatAck {
                ballot,
                matched: a,
                read_round: b,
            } => ballot_len(*ballot) + varint_len(*a) + varint_len(*b),
            Message::InstallSnapshot { ballot, snapshot } => ballot_len(*ballot) + snapshot_len(snapshot),
            Message::Nack { promised: ballot } | Message::TimeoutNow { ballot } => ballot_len(*ballot),
        };
        2 + fields
    }

    fn is_snapshot(&self) -> bool {
        matches!(self, Message::InstallSnapshot { .. })
    }
}
