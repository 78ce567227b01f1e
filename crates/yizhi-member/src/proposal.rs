//! What a log entry says about who proposed it.
//!
//! Every replica applies every entry; the member that proposed an entry answers its waiting client
//! with the response its own state machine computed (etcd's request-id scheme). The entry must
//! therefore name its proposal unambiguously, for the whole life of the log: a member killed and
//! restarted re-applies entries its earlier incarnation proposed, and its new requests must not be
//! answered by them (issue 13, anomaly 2). Hence the boot id: a non-zero number drawn afresh at
//! every start (the server from the OS's randomness, the simulator from its seed).
//!
//! Layout (version 2): `version u8 = 2 | origin u64 LE | boot_id u64 LE | request_id u64 LE |
//! command`. Version 1 (`1 | origin | request_id | command`, written before boot ids existed)
//! still decodes, with boot id 0, which no running member has: such entries answer nobody.
//! Entries the member proposes for itself (lease expiry) carry request id 0 and answer nobody.

use bytes::{BufMut, Bytes, BytesMut};
use yizhi_engine::NodeId;

const VERSION_WITHOUT_BOOT_ID: u8 = 1;
const VERSION: u8 = 2;
const V1_HEADER_BYTES: usize = 17;
const HEADER_BYTES: usize = 25;

/// One proposal's identity, unique across the members and the restarts of a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProposalId {
    pub origin: NodeId,
    /// Drawn at the origin's start; 0 only in entries of format version 1.
    pub boot_id: u64,
    /// Unique within one boot of the origin; 0 for entries nobody waits for.
    pub request_id: u64,
}

pub fn encode_proposal(id: &ProposalId, command: &[u8]) -> Bytes {
    assert_ne!(id.boot_id, 0, "a new proposal of {id:?} without a boot id");
    let mut out = BytesMut::with_capacity(HEADER_BYTES + command.len());
    out.put_u8(VERSION);
    out.put_u64_le(id.origin);
    out.put_u64_le(id.boot_id);
    out.put_u64_le(id.request_id);
    out.put_slice(command);
    out.freeze()
}

fn word_at(data: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&data[at..at + 8]);
    u64::from_le_bytes(bytes)
}

/// The identity alone, and where the command starts; None for bytes that are not a proposal.
fn header(data: &[u8]) -> Option<(ProposalId, usize)> {
    match *data.first()? {
        VERSION if data.len() >= HEADER_BYTES => Some((
            ProposalId {
                origin: word_at(data, 1),
                boot_id: word_at(data, 9),
                request_id: word_at(data, 17),
            },
            HEADER_BYTES,
        )),
        VERSION_WITHOUT_BOOT_ID if data.len() >= V1_HEADER_BYTES => Some((
            ProposalId {
                origin: word_at(data, 1),
                boot_id: 0,
                request_id: word_at(data, 9),
            },
            V1_HEADER_BYTES,
        )),
        _ => None,
    }
}

/// The identity alone (the driver needs it for a proposal it cannot place).
pub fn peek_proposal_id(data: &[u8]) -> Option<ProposalId> {
    header(data).map(|(id, _)| id)
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposalError {
    #[error("proposal of {0} bytes is shorter than its header or of an unknown version")]
    Malformed(usize),
}

/// The identity and the command bytes. A committed entry that does not decode is the same garbage
/// on every replica: every replica skips it alike.
pub fn decode_proposal(data: &Bytes) -> Result<(ProposalId, Bytes), ProposalError> {
    let (id, command_at) = header(data).ok_or(ProposalError::Malformed(data.len()))?;
    Ok((id, data.slice(command_at..)))
}

/// A 64-bit FNV-1a hash of a command: a waiter keeps it to assert that the entry answering it
/// carries its own command.
pub fn fingerprint(command: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    command.iter().fold(OFFSET_BASIS, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proposals_round_trip_and_every_cut_is_an_error() {
        let id = ProposalId {
            origin: 3,
            boot_id: 0xdead_beef,
            request_id: u64::MAX,
        };
        let bytes = encode_proposal(&id, b"command");
        assert_eq!(decode_proposal(&bytes), Ok((id, Bytes::from_static(b"command"))));
        assert_eq!(peek_proposal_id(&bytes), Some(id));
        for cut in 0..HEADER_BYTES {
            assert!(decode_proposal(&bytes.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut wrong_version = bytes.to_vec();
        wrong_version[0] = 9;
        assert!(decode_proposal(&Bytes::from(wrong_version)).is_err());
    }

    #[test]
    fn version_one_entries_decode_with_boot_id_zero() {
        let mut v1 = vec![VERSION_WITHOUT_BOOT_ID];
        v1.extend_from_slice(&7u64.to_le_bytes());
        v1.extend_from_slice(&42u64.to_le_bytes());
        v1.extend_from_slice(b"cmd");
        let (id, command) = decode_proposal(&Bytes::from(v1)).expect("v1 decodes");
        let expected = ProposalId {
            origin: 7,
            boot_id: 0,
            request_id: 42,
        };
        assert_eq!((id, command), (expected, Bytes::from_static(b"cmd")));
    }

    #[test]
    fn fingerprints_tell_commands_apart() {
        assert_ne!(fingerprint(b"put a 1"), fingerprint(b"put a 2"));
        assert_eq!(fingerprint(b""), 0xcbf2_9ce4_8422_2325);
    }
}
