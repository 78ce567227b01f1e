//! What the replicated log carries and what applying it answers: plain data, below the store,
//! the session table and the codecs that all name it.

use crate::error::KvError;
use crate::types::{
    ClientSeq, CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, Event,
    LeaseGrantRequest, LeaseGrantResponse, LeaseId, LeaseKeepAliveResponse, LeaseRevokeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};

/// What the replicated log carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// A read through the log: linearizable without read-index support.
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
    LeaseGrant(LeaseGrantRequest),
    LeaseRevoke {
        id: LeaseId,
    },
    /// `now_ms` is the leader's logical clock when it accepted the keep-alive.
    LeaseKeepAlive {
        id: LeaseId,
        now_ms: u64,
    },
    /// `command`, applied at most once per `request` (Raft thesis §6.3; see the `session`
    /// module). `now_ms` is the proposing member's wall clock (unix ms), carried in the log so
    /// that every replica expires idle sessions alike. `command` is never itself `Deduped`.
    Deduped {
        request: ClientSeq,
        now_ms: u64,
        command: Box<Command>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandResponse {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    LeaseKeepAlive(LeaseKeepAliveResponse),
}

/// The outcome of applying one entry. A failed command is still applied: it advances the applied
/// index and changes nothing else, on every replica alike.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub response: Result<CommandResponse, KvError>,
    /// The writes of this entry in revision order, for the watch hub.
    pub events: Vec<Event>,
}
