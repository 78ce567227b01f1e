//! Many writers, one fdatasync: the first writer to wait becomes the sync leader and makes durable
//! every byte written before its fsync started; the others wait on a condvar and find their bytes
//! covered (the "group commit" of database logs, e.g. PostgreSQL's commit_delay-free variant).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::error::{Result, WalError};

/// Set forever by the first failed fsync or write. Never cleared: after a failed fsync the kernel
/// may have dropped the dirty pages and marked them clean, so a retry could "succeed" without the
/// data ever reaching the disk (fsyncgate, PostgreSQL 2018).
#[derive(Debug, Default)]
pub struct Poison {
    poisoned: AtomicBool,
    cause: Mutex<Option<String>>,
}

impl Poison {
    pub fn check(&self) -> Result<()> {
        if !self.poisoned.load(Ordering::Acquire) {
            return Ok(());
        }
        let cause = self.cause.lock().expect("poison lock").clone();
        Err(WalError::Fatal {
            cause: cause.unwrap_or_default(),
        })
    }

    /// Poisons the WAL with `error` and returns the Fatal error every later call will see.
    pub fn poison(&self, error: &WalError) -> WalError {
        let mut cause = self.cause.lock().expect("poison lock");
        if cause.is_none() {
            *cause = Some(error.to_string());
        }
        self.poisoned.store(true, Ordering::Release);
        WalError::Fatal {
            cause: cause.clone().unwrap_or_default(),
        }
    }
}

#[derive(Debug, Default)]
struct SyncState {
    /// Every logical byte position below this is durable.
    durable_position: u64,
    /// Invariant: at most one fsync runs at a time, done by the writer that set this.
    leader_active: bool,
}

#[derive(Debug, Default)]
pub struct GroupCommit {
    state: Mutex<SyncState>,
    synced: Condvar,
}

impl GroupCommit {
    pub fn durable_position(&self) -> u64 {
        self.lock().durable_position
    }

    /// Records that an fsync outside the group (at segment roll) made everything below `position`
    /// durable.
    pub fn mark_durable(&self, position: u64) {
        let mut state = self.lock();
        state.durable_position = state.durable_position.max(position);
        self.synced.notify_all();
    }

    /// Returns once every byte below `target` is durable. `sync_now` performs one fsync and returns
    /// the position it covered (the written position read *before* the fsync started).
    pub fn wait_durable(
        &self,
        target: u64,
        poison: &Poison,
        sync_now: impl Fn() -> Result<u64>,
    ) -> Result<()> {
        loop {
            let mut state = self.lock();
            loop {
                poison.check()?;
                if state.durable_position >= target {
                    return Ok(());
                }
                if !state.leader_active {
                    break;
                }
                state = self.synced.wait(state).expect("group commit lock");
            }
            state.leader_active = true;
            drop(state);
            let result = sync_now();
            let mut state = self.lock();
            assert!(state.leader_active, "two sync leaders at once");
            state.leader_active = false;
            let outcome = match result {
                Ok(covered) => {
                    state.durable_position = state.durable_position.max(covered);
                    Ok(())
                }
                Err(error) => Err(poison.poison(&error)),
            };
            self.synced.notify_all();
            outcome?;
        }
    }

    fn lock(&self) -> MutexGuard<'_, SyncState> {
        self.state.lock().expect("group commit lock poisoned by a panic")
    }
}
