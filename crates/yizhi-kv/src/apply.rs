//! The replicated entry point: one decoded log entry in, one response out, the same on every
//! replica.

use yizhi_engine::LogIndex;

use crate::backend::{Backend, BackendError};
use crate::command::{Applied, Command, CommandResponse};
use crate::error::KvError;
use crate::store::MvccStore;
use crate::types::ClientSeq;

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

    /// Applies `command` at most once per `request`; the steps are in the `session` module's
    /// documentation, the table's part of them in [`SessionTable`](crate::session::SessionTable).
    pub(crate) fn apply_deduped(
        &mut self,
        request: &ClientSeq,
        now_ms: u64,
        command: &Command,
    ) -> Result<CommandResponse, KvError> {
        assert!(
            !matches!(command, Command::Deduped { .. }),
            "a Deduped command wraps another: {command:?}"
        );
        self.meta.session_clock_ms = self.meta.session_clock_ms.max(now_ms);
        let clock_ms = self.meta.session_clock_ms;
        let changes = &mut self.pending.sessions;
        if let Some(answer) = self.sessions.admit(request, clock_ms, &self.config, changes)? {
            return answer;
        }
        let response = self.apply_plain(command);
        if matches!(response, Err(KvError::Backend(_))) {
            return response;
        }
        let changes = &mut self.pending.sessions;
        self.sessions
            .record(request, clock_ms, &response, &self.config, changes);
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
