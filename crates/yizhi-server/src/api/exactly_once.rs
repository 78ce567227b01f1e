//! Exactly-once writes: the request metadata that turns a write into a `Command::Deduped`.
//!
//! A client tags a mutating call (Put, DeleteRange, Txn, LeaseGrant, LeaseRevoke) with
//!
//! | metadata            | value (decimal u64)                                                       |
//! |---------------------|---------------------------------------------------------------------------|
//! | `yizhi-client-id`   | non-zero, unique per client                                                |
//! | `yizhi-seq`         | per client, from 1, one per write (the same on every retry of that write)  |
//! | `yizhi-acked-below` | optional: the client will never retry a sequence below it (default: `yizhi-seq`, i.e. one write at a time) |
//!
//! and the state machine applies each (client id, seq) at most once, answering a repeat with the
//! response it stored the first time (`yizhi_kv`'s session table: Raft thesis §6.3). The server
//! answers every tagged call with `yizhi-exactly-once: 1` in the response metadata, which is how a
//! client learns it may retry an ambiguous failure. Untagged calls behave exactly as in etcd.
//!
//! The command carries the proposing member's wall clock (unix ms): the state machine expires a
//! client idle longer than its limit by the largest clock it has applied, the same on every
//! replica. A member whose clock runs far ahead shortens how long idle clients are remembered;
//! it cannot break a guarantee silently, because a retry from a forgotten client that had
//! acknowledged writes (`yizhi-acked-below` > 1) is refused as "session expired".

use tonic::Status;
use tonic::metadata::MetadataMap;
use yizhi_kv::{ClientSeq, Command};

use crate::node::lessor::wall_clock_ms;

pub const CLIENT_ID_KEY: &str = "yizhi-client-id";
pub const SEQ_KEY: &str = "yizhi-seq";
pub const ACKED_BELOW_KEY: &str = "yizhi-acked-below";
/// Response metadata of a tagged call.
pub const CONFIRMED_KEY: &str = "yizhi-exactly-once";

/// The tag of a call, if it has one. A partial or malformed tag is an error, never ignored: a
/// client that meant to be deduplicated must not silently lose that.
pub fn client_seq(metadata: &MetadataMap) -> Result<Option<ClientSeq>, Status> {
    let client_id = number(metadata, CLIENT_ID_KEY)?;
    let seq = number(metadata, SEQ_KEY)?;
    let acked_below = number(metadata, ACKED_BELOW_KEY)?;
    let (client_id, seq) = match (client_id, seq) {
        (None, None) if acked_below.is_none() => return Ok(None),
        (Some(client_id), Some(seq)) => (client_id, seq),
        _ => {
            return Err(Status::invalid_argument(format!(
                "yizhi: exactly-once writes need both {CLIENT_ID_KEY} and {SEQ_KEY}"
            )));
        }
    };
    let acked_below = acked_below.unwrap_or(seq);
    if client_id == 0 || seq == 0 || acked_below == 0 || acked_below > seq {
        return Err(Status::invalid_argument(format!(
            "yizhi: {CLIENT_ID_KEY} and {SEQ_KEY} must be non-zero and {ACKED_BELOW_KEY} between 1 and {SEQ_KEY}"
        )));
    }
    Ok(Some(ClientSeq {
        client_id,
        seq,
        acked_below,
    }))
}

/// `command`, wrapped when the call is tagged.
pub fn wrap(command: Command, tag: Option<ClientSeq>) -> Command {
    match tag {
        None => command,
        Some(request) => Command::Deduped {
            request,
            now_ms: wall_clock_ms(),
            command: Box::new(command),
        },
    }
}

/// The response of a call, marked when the call is tagged.
pub fn confirmed<T>(message: T, tag: Option<ClientSeq>) -> tonic::Response<T> {
    let mut response = tonic::Response::new(message);
    if tag.is_some() {
        response
            .metadata_mut()
            .insert(CONFIRMED_KEY, tonic::metadata::MetadataValue::from_static("1"));
    }
    response
}

fn number(metadata: &MetadataMap, key: &str) -> Result<Option<u64>, Status> {
    super::metadata_text(metadata, key)?
        .map(|text| {
            text.parse::<u64>().map_err(|_| {
                Status::invalid_argument(format!("yizhi: {key} must be a decimal unsigned 64-bit number"))
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::api::metadata_of as metadata;

    #[test]
    fn untagged_calls_stay_plain_and_tagged_ones_are_wrapped() {
        assert_eq!(client_seq(&metadata(&[])).unwrap(), None);
        let tag = client_seq(&metadata(&[(CLIENT_ID_KEY, "9"), (SEQ_KEY, "4")])).unwrap();
        assert_eq!(
            tag,
            Some(ClientSeq {
                client_id: 9,
                seq: 4,
                acked_below: 4
            })
        );
        let tag = client_seq(&metadata(&[
            (CLIENT_ID_KEY, "9"),
            (SEQ_KEY, "4"),
            (ACKED_BELOW_KEY, "2"),
        ]))
        .unwrap()
        .expect("tagged");
        assert_eq!(tag.acked_below, 2);
        let put = Command::LeaseRevoke { id: 1 };
        assert_eq!(wrap(put.clone(), None), put);
        match wrap(put.clone(), Some(tag)) {
            Command::Deduped { request, command, .. } => assert_eq!((request, *command), (tag, put)),
            other => panic!("not wrapped: {other:?}"),
        }
    }

    #[test]
    fn partial_or_malformed_tags_are_refused() {
        let cases = [
            &[(CLIENT_ID_KEY, "9")][..],
            &[(SEQ_KEY, "9")][..],
            &[(ACKED_BELOW_KEY, "1")][..],
            &[(CLIENT_ID_KEY, "0"), (SEQ_KEY, "1")][..],
            &[(CLIENT_ID_KEY, "1"), (SEQ_KEY, "0")][..],
            &[(CLIENT_ID_KEY, "1"), (SEQ_KEY, "3"), (ACKED_BELOW_KEY, "4")][..],
            &[(CLIENT_ID_KEY, "x1"), (SEQ_KEY, "3")][..],
            &[(CLIENT_ID_KEY, "1"), (SEQ_KEY, "-3")][..],
        ];
        crate::api::assert_metadata_refused(&cases, client_seq);
    }
}
