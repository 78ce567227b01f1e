//! The byte encoding of [`Message`] (building blocks and rules in [`yizhi_engine::wire`]):
//!
//! ```text
//! version u8 = PAXOS_WIRE_VERSION | tag u8 | fields of the variant, in declaration order
//! ```
//!
//! A ballot is its `u64` term as a varint; `Option<Snapshot>` is a presence byte and then the
//! snapshot. A promise's accepted slots are strictly ascending and an accept's entries contiguous,
//! as the messages' producers guarantee and their handlers assume.

use yizhi_engine::wire::{EntryOrder, Reader, Sink, WireError, WireMessage, measure};

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

fn read_ballot(r: &mut Reader, what: &'static str) -> Result<Ballot, WireError> {
    Ok(Ballot::from_term(r.varint(what)?))
}

/// The tag and fields of `message`, into a buffer or a [`Measure`] (so `encoded_len` is exact).
/// A ballot goes as its term.
fn write<S: Sink>(message: &Message, out: &mut S) {
    out.u8(PAXOS_WIRE_VERSION);
    out.u8(tag(message));
    match message {
        Message::Prepare {
            ballot,
            first_unchosen,
        } => {
            out.varint(ballot.term());
            out.varint(*first_unchosen);
        }
        Message::Promise {
            ballot,
            commit,
            accepted,
            snapshot,
        } => {
            out.varint(ballot.term());
            out.varint(*commit);
            out.entries(accepted);
            out.option(snapshot.as_ref(), |out, snapshot| out.snapshot(snapshot));
        }
        Message::Accept {
            ballot,
            commit,
            entries,
        } => {
            out.varint(ballot.term());
            out.varint(*commit);
            out.entries(entries);
        }
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
        } => {
            out.varint(ballot.term());
            out.varint(*a);
            out.varint(*b);
        }
        Message::InstallSnapshot { ballot, snapshot } => {
            out.varint(ballot.term());
            out.snapshot(snapshot);
        }
        Message::Nack { promised: ballot } | Message::TimeoutNow { ballot } => out.varint(ballot.term()),
    }
}

impl WireMessage for Message {
    fn encode(&self, out: &mut Vec<u8>) {
        write(self, out);
    }

    fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes);
        r.version(PAXOS_WIRE_VERSION)?;
        let tag_offset = r.offset();
        let tag = r.u8("paxos message tag")?;
        if !(TAG_PREPARE..=TAG_TIMEOUT_NOW).contains(&tag) {
            return Err(WireError::UnknownTag {
                what: "paxos message",
                offset: tag_offset,
                tag,
            });
        }
        // Every message starts with a ballot; a nack's is the one its sender promised.
        let ballot = read_ballot(&mut r, if tag == TAG_NACK { "promised" } else { "ballot" })?;
        let message = match tag {
            TAG_PREPARE => Message::Prepare {
                ballot,
                first_unchosen: r.varint("first_unchosen")?,
            },
            TAG_PROMISE => Message::Promise {
                ballot,
                commit: r.varint("commit")?,
                accepted: r.ordered_entries(EntryOrder::Ascending)?,
                snapshot: if r.bool("snapshot present")? {
                    Some(r.snapshot()?)
                } else {
                    None
                },
            },
            TAG_ACCEPT => Message::Accept {
                ballot,
                commit: r.varint("commit")?,
                entries: r.ordered_entries(EntryOrder::Contiguous)?,
            },
            TAG_ACCEPTED => {
                let (matched, run_last) = (r.varint("matched")?, r.varint("run_last")?);
                Message::Accepted {
                    ballot,
                    matched,
                    run_last,
                }
            }
            TAG_HEARTBEAT => {
                let (commit, read_round) = (r.varint("commit")?, r.varint("read_round")?);
                Message::Heartbeat {
                    ballot,
                    commit,
                    read_round,
                }
            }
            TAG_HEARTBEAT_ACK => {
                let (matched, read_round) = (r.varint("matched")?, r.varint("read_round")?);
                Message::HeartbeatAck {
                    ballot,
                    matched,
                    read_round,
                }
            }
            TAG_INSTALL_SNAPSHOT => Message::InstallSnapshot {
                ballot,
                snapshot: r.snapshot()?,
            },
            TAG_NACK => Message::Nack { promised: ballot },
            TAG_TIMEOUT_NOW => Message::TimeoutNow { ballot },
            _ => unreachable!("tag {tag} was checked above"),
        };
        r.finish("paxos message")?;
        Ok(message)
    }

    fn encoded_len(&self) -> usize {
        measure(|out| write(self, out))
    }

    fn is_snapshot(&self) -> bool {
        matches!(self, Message::InstallSnapshot { .. })
    }
}
