//! The replicated entry point: one decoded log entry in, one response out, the same on every
//! replica.

use yizhi_engine::LogIndex;

use crate::backend::{Backend, BackendError};
use crate::error::KvError;
use crate::store::MvccStore;
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

impl<B: Backend> MvccStore<B> {
    /// Applies the entry at `log_index`. Entries must arrive in order, each exactly once; an
    /// `Err` means the backend failed and this replica must stop.
    pub fn apply(&mut self, command: &Command, log_index: LogIndex) -> Result<Applied, BackendError> {
        assert!(
            log_index > self.meta.applied_index,
            "entry {log_index} applied after {}",
            self.meta.applied_index
        );
        assert!(self.pending.records.is_empty() && self.pending.events.is_empty());
        assert!(self.pending.sessions.is_empty());
        let response = match command {
            Command::Deduped {
                request,
                now_ms,
                command: inner,
            } => self.apply_deduped(request, *now_ms, inner),
            plain => self.apply_plain(plain),
        };
        if let Err(KvError::Backend(e)) = &response {
            return Err(e.clone());
        }
        if !self.pending.records.is_empty() {
            self.meta.current_revision += 1;
        }
        self.meta.applied_index = log_index;
        assert!(self.meta.compact_revision <= self.meta.current_revision);
        let pending = std::mem::take(&mut self.pending);
        let mut batch = pending.batch;
        batch.put_records = pending.records.into_iter().collect();
        batch.session_clients = pending.sessions.clients.into_iter().collect();
        batch.session_responses = pending.sessions.responses.into_iter().collect();
        batch.meta = self.meta;
        self.backend.apply(batch)?;
        Ok(Applied {
            response,
            events: pending.events,
        })
    }

    /// Applies a command that is not `Deduped`. A refused one leaves no writes behind.
    pub(crate) fn apply_plain(&mut self, command: &Command) -> Result<CommandResponse, KvError> {
        let before = self.meta;
        let response = self.dispatch(command);
        if let Err(e) = &response
            && !matches!(e, KvError::Backend(_))
        {
            // Validation precedes every mutation, so a refused command left nothing behind.
            assert!(
                self.pending.records.is_empty(),
                "failed command wrote: {command:?}"
            );
            assert_eq!(self.meta, before);
            self.pending.batch = Default::default();
        }
        response
    }

    fn dispatch(&mut self, command: &Command) -> Result<CommandResponse, KvError> {
        match command {
            Command::Range(r) => self.range(r).map(CommandResponse::Range),
            Command::Put(p) => {
                self.check_put(p)?;
                self.write_put(p).map(CommandResponse::Put)
            }
            Command::DeleteRange(d) => self.write_delete_range(d).map(CommandResponse::DeleteRange),
            Command::Txn(t) => self.txn(t).map(CommandResponse::Txn),
            Command::Compact(c) => self.compact(c).map(CommandResponse::Compact),
            Command::LeaseGrant(g) => self.lease_grant(g).map(CommandResponse::LeaseGrant),
            Command::LeaseRevoke { id } => self.lease_revoke(*id).map(CommandResponse::LeaseRevoke),
            Command::LeaseKeepAlive { id, now_ms } => self
                .lease_keep_alive(*id, *now_ms)
                .map(CommandResponse::LeaseKeepAlive),
            Command::Deduped { .. } => panic!("a Deduped command wraps another: {command:?}"),
        }
    }
}
