//! What a log entry carries for the server, and the clients waiting for theirs.
//!
//! The envelope (who proposed an entry: member, boot id, request id), the waiter table and the
//! ways a proposal fails are `yizhi-member`'s, the same code the simulator runs; the command
//! inside the envelope is yizhi-kv's encoding. This module adds what only the server has: the
//! channel a waiting client listens on, and the boot id drawn from the OS.

use bytes::Bytes;
use tokio::sync::oneshot;
use yizhi_kv::{Applied, Command};
pub use yizhi_member::{Deadline, Origin, ProposalId, ProposeFailure, first_id_of_boot};

pub type ApplyResult = Result<Applied, ProposeFailure>;

/// Where a waiting client hears its entry's applied response or the proposal's failure.
pub type ProposalReply = oneshot::Sender<ApplyResult>;

pub type Waiters = yizhi_member::Waiters<ProposalReply>;

#[derive(Debug, thiserror::Error)]
#[error("drawing a boot id from the OS's random source: {0}")]
pub struct BootIdError(String);

/// A fresh non-zero boot id. From the OS's random source (`getrandom`), not from the clock or the
/// pid: two incarnations of a member must not share one even when it restarts within a clock tick
/// or its pid is reused, and 64 random bits make a collision across a member's restarts
/// negligible (issue 13, anomaly 2). 0 is reserved for entries written before boot ids existed.
pub fn draw_boot_id() -> Result<u64, BootIdError> {
    loop {
        let boot_id = getrandom::u64().map_err(|e| BootIdError(e.to_string()))?;
        if boot_id != 0 {
            return Ok(boot_id);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error(transparent)]
    Envelope(#[from] yizhi_member::proposal::ProposalError),
    #[error("command: {0}")]
    Command(String),
}

/// A committed entry's proposal: its identity, the command's bytes (a waiter checks them against
/// its own) and the command. An entry that does not decode is the same garbage on every replica:
/// every replica skips it alike.
pub fn decode_entry(data: &Bytes) -> Result<(ProposalId, Bytes, Command), EntryError> {
    let (id, command_bytes) = yizhi_member::decode_proposal(data)?;
    let command = yizhi_kv::decode_command(&command_bytes).map_err(|e| EntryError::Command(e.to_string()))?;
    Ok((id, command_bytes, command))
}

#[cfg(test)]
mod tests {
    use super::*;
    use yizhi_kv::PutRequest;

    fn put() -> Command {
        Command::Put(PutRequest {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
            ..Default::default()
        })
    }

    #[test]
    fn entries_round_trip_through_the_member_envelope_and_damage_is_an_error() {
        let id = ProposalId {
            origin: 3,
            boot_id: draw_boot_id().expect("the OS has randomness"),
            request_id: u64::MAX,
        };
        let command_bytes = Bytes::from(yizhi_kv::encode_command(&put()));
        let bytes = yizhi_member::encode_proposal(&id, &command_bytes);
        let (decoded_id, decoded_bytes, command) = decode_entry(&bytes).expect("decodes");
        assert_eq!((decoded_id, decoded_bytes, command), (id, command_bytes, put()));
        for cut in 0..bytes.len() {
            assert!(
                decode_entry(&bytes.slice(..cut)).is_err(),
                "prefix of {cut} bytes decoded"
            );
        }
    }

    #[test]
    fn boot_ids_are_non_zero_and_differ_between_draws() {
        let (a, b) = (draw_boot_id().expect("random"), draw_boot_id().expect("random"));
        assert!(a != 0 && b != 0);
        assert_ne!(a, b, "two draws of 64 random bits collided");
        assert_ne!(first_id_of_boot(a), first_id_of_boot(b));
        assert_eq!(first_id_of_boot(1), 1, "ids start at 1 at the least");
        assert!(
            first_id_of_boot(u64::MAX) <= u64::MAX / 2,
            "room to count up without overflow"
        );
    }

    /// Anomaly 2 of issue 13, at the server's seam: an entry of the previous incarnation replayed
    /// after a restart carries the same origin and request id as a new request, and answers nobody.
    #[test]
    fn a_replayed_entry_of_an_earlier_boot_does_not_answer_a_new_request() {
        let command_bytes = yizhi_kv::encode_command(&put());
        let deadline = Deadline { at_ms: u64::MAX };
        let mut before = Waiters::new(1, 11, 8);
        let (tx, _rx) = oneshot::channel();
        let old = before
            .register(&command_bytes, deadline, tx, |r| r.is_closed())
            .expect("room");
        let mut after = Waiters::new(1, 12, 8);
        let (tx, mut rx) = oneshot::channel();
        let new = after
            .register(&command_bytes, deadline, tx, |r| r.is_closed())
            .expect("room");
        assert_eq!(
            old.request_id, new.request_id,
            "request ids restart with the process"
        );
        assert!(after.take_applied(&old, &command_bytes).is_none());
        assert!(after.take_failed(&old).is_none());
        assert!(rx.try_recv().is_err(), "nothing answered the new request");
        assert!(after.take_applied(&new, &command_bytes).is_some());
    }
}
