//! What a log entry carries for the server: who proposed it (member id and a request id unique on
//! that member) and the key-value command. Every replica applies every entry; the member that
//! proposed it finds the waiting client by request id and answers it with the applied response
//! (etcd's request-id scheme). Entries proposed by the server itself (lease expiry) carry id 0.
//!
//! Layout: `version u8 = 1 | origin u64 LE | request_id u64 LE | command` (yizhi-kv's codec).

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::oneshot;
use yizhi_engine::NodeId;
use yizhi_kv::{Applied, Command};

const PROPOSAL_VERSION: u8 = 1;
const HEADER_BYTES: usize = 17;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProposalHeader {
    pub origin: NodeId,
    pub request_id: u64,
}

pub fn encode_proposal(header: &ProposalHeader, command: &Command) -> Bytes {
    let body = yizhi_kv::encode_command(command);
    let mut out = BytesMut::with_capacity(HEADER_BYTES + body.len());
    out.put_u8(PROPOSAL_VERSION);
    out.put_u64_le(header.origin);
    out.put_u64_le(header.request_id);
    out.put_slice(&body);
    out.freeze()
}

/// The header alone (the driver needs the request id of a proposal it cannot place).
pub fn peek_header(data: &[u8]) -> Option<ProposalHeader> {
    if data.len() < HEADER_BYTES || data[0] != PROPOSAL_VERSION {
        return None;
    }
    let word = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&data[at..at + 8]);
        u64::from_le_bytes(bytes)
    };
    Some(ProposalHeader {
        origin: word(1),
        request_id: word(9),
    })
}

/// A committed entry that does not decode is the same garbage on every replica (every replica
/// skips it alike); it is reported, not applied.
pub fn decode_proposal(data: &[u8]) -> Result<(ProposalHeader, Command), String> {
    if data.len() < HEADER_BYTES {
        return Err(format!(
            "proposal of {} bytes is shorter than its header",
            data.len()
        ));
    }
    if data[0] != PROPOSAL_VERSION {
        return Err(format!("unknown proposal version {}", data[0]));
    }
    let header = peek_header(data).ok_or_else(|| "malformed proposal header".to_string())?;
    let command = yizhi_kv::decode_command(&data[HEADER_BYTES..]).map_err(|e| e.to_string())?;
    Ok((header, command))
}

/// Why a proposal was not applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeFailure {
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    #[error("etcdserver: request is too large")]
    TooLarge,
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error("etcdserver: request timed out")]
    TimedOut,
}

impl ProposeFailure {
    const ALL: [ProposeFailure; 6] = [
        ProposeFailure::NoLeader,
        ProposeFailure::LeaderChanged,
        ProposeFailure::TooLarge,
        ProposeFailure::TooManyRequests,
        ProposeFailure::Stopped,
        ProposeFailure::TimedOut,
    ];

    /// A stable one-byte code, for telling a follower why its forwarded proposal failed.
    pub fn code(&self) -> u8 {
        Self::ALL.iter().position(|f| f == self).expect("listed") as u8 + 1
    }

    pub fn from_code(code: u8) -> Option<ProposeFailure> {
        Self::ALL.get(usize::from(code).checked_sub(1)?).cloned()
    }
}

pub type ApplyResult = Result<Applied, ProposeFailure>;

/// Clients waiting for their proposals, by request id. Bounded: beyond `max_waiting` a new
/// request is refused ("too many requests") instead of queueing without limit.
#[derive(Debug)]
pub struct Waiters {
    waiting: HashMap<u64, oneshot::Sender<ApplyResult>>,
    next_request_id: u64,
    max_waiting: usize,
}

impl Waiters {
    pub fn new(max_waiting: usize) -> Self {
        assert!(max_waiting >= 1);
        Waiters {
            waiting: HashMap::new(),
            next_request_id: 1,
            max_waiting,
        }
    }

    /// Registers a client; the receiver resolves when its entry is applied or fails.
    pub fn register(&mut self) -> Result<(u64, oneshot::Receiver<ApplyResult>), ProposeFailure> {
        if self.waiting.len() >= self.max_waiting {
            // Clients that gave up (timed out) leave closed senders behind: reclaim them first.
            self.waiting.retain(|_, tx| !tx.is_closed());
            if self.waiting.len() >= self.max_waiting {
                return Err(ProposeFailure::TooManyRequests);
            }
        }
        let id = self.next_request_id;
        self.next_request_id += 1;
        let (tx, rx) = oneshot::channel();
        let previous = self.waiting.insert(id, tx);
        assert!(previous.is_none(), "request id {id} reused");
        Ok((id, rx))
    }

    pub fn resolve(&mut self, request_id: u64, result: ApplyResult) {
        if let Some(tx) = self.waiting.remove(&request_id) {
            let _ = tx.send(result); // The client may have given up; nothing to do then.
        }
    }

    /// On shutdown every waiting client is told, rather than left hanging.
    pub fn fail_all(&mut self, failure: ProposeFailure) {
        for (_, tx) in self.waiting.drain() {
            let _ = tx.send(Err(failure.clone()));
        }
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yizhi_kv::PutRequest;

    #[test]
    fn proposals_round_trip_and_damage_is_an_error() {
        let header = ProposalHeader {
            origin: 3,
            request_id: u64::MAX,
        };
        let command = Command::Put(PutRequest {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
            ..Default::default()
        });
        let bytes = encode_proposal(&header, &command);
        assert_eq!(decode_proposal(&bytes), Ok((header, command)));
        for cut in 0..bytes.len() {
            assert!(
                decode_proposal(&bytes[..cut]).is_err(),
                "prefix of {cut} bytes decoded"
            );
        }
        let mut wrong_version = bytes.to_vec();
        wrong_version[0] = 9;
        assert!(decode_proposal(&wrong_version).is_err());
    }

    #[test]
    fn failure_codes_round_trip() {
        for failure in ProposeFailure::ALL {
            assert_eq!(ProposeFailure::from_code(failure.code()), Some(failure));
        }
        assert_eq!(ProposeFailure::from_code(0), None);
        assert_eq!(ProposeFailure::from_code(200), None);
    }

    #[test]
    fn waiters_are_bounded_and_reclaim_abandoned_slots() {
        let mut waiters = Waiters::new(2);
        let (a, rx_a) = waiters.register().expect("room");
        let (_b, _rx_b) = waiters.register().expect("room");
        assert_eq!(waiters.register().err(), Some(ProposeFailure::TooManyRequests));
        drop(rx_a); // The client of `a` gave up.
        let (c, mut rx_c) = waiters.register().expect("a's slot reclaimed");
        assert_ne!(a, c);
        waiters.resolve(c, Err(ProposeFailure::LeaderChanged));
        assert_eq!(
            rx_c.try_recv().expect("resolved"),
            Err(ProposeFailure::LeaderChanged)
        );
        waiters.fail_all(ProposeFailure::Stopped);
        assert!(waiters.is_empty());
    }
}
