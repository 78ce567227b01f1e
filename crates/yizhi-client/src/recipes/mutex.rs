//! A distributed mutex with fencing tokens.
//!
//! **Protocol.** A contender creates `<prefix>/<lease id hex>` under its session's lease (if
//! absent). Contenders are ordered by their key's `create_revision`; the lowest owns the lock.
//! Everyone else waits for the deletion of its immediate predecessor only (the newest key created
//! before its own), then checks again — so a release wakes one waiter. Before reporting
//! acquisition the contender re-reads its key (linearizably) and checks that its session is
//! alive. Unlock deletes the key; a crashed holder's key goes when its lease expires.
//!
//! **Guarantees.** While the cluster keeps its promises about leases, at most one live session
//! holds the lock. A holder that was paused past its lease may still *believe* it holds it, which
//! no lease-based lock can prevent; the fencing token is the defence: it is the key's
//! `create_revision`, strictly increasing across successive holders (a later holder's key was
//! necessarily created after every earlier holder's), so a resource that remembers the highest
//! token it has seen can refuse a stale holder. For data in the same cluster,
//! [`MutexGuard::still_held`] is a transaction guard that does the same atomically. Waiting
//! contenders are served in `create_revision` order (FIFO). A session holds a given mutex at most
//! once (locking twice with one session finds the same key: not reentrant counting).

use crate::error::Result;
use crate::kv::{Compare, CompareOp};
use crate::session::Session;

use super::{
    acquire_in_turn, confirm_owned, create_leased_key, delete_own_key, dir, lease_key, wait_predecessors,
};

/// A mutex named by its key prefix.
#[derive(Clone, Debug)]
pub struct Mutex {
    dir: Vec<u8>,
}

/// A held lock; [`MutexGuard::unlock`] releases it (dropping it does not: the lease would).
#[derive(Debug)]
#[must_use = "the lock stays held until unlock() or the session ends"]
pub struct MutexGuard {
    key: Vec<u8>,
    fencing_token: i64,
}

impl Mutex {
    pub fn new(prefix: impl AsRef<[u8]>) -> Self {
        Mutex {
            dir: dir(prefix.as_ref()),
        }
    }

    /// Waits until this session holds the lock. On failure (session lost, cluster unreachable)
    /// the contender's key is removed when possible, so it does not block others.
    pub async fn lock(&self, session: &Session) -> Result<MutexGuard> {
        let key = lease_key(&self.dir, session.lease_id());
        let wait_turn = |create_revision| wait_predecessors(session, &self.dir, create_revision);
        let create_revision = acquire_in_turn(session, &key, b"", wait_turn).await?;
        Ok(MutexGuard {
            key,
            fencing_token: create_revision,
        })
    }

    /// Takes the lock if nobody holds or waits for it; `None` otherwise (nothing is left behind).
    pub async fn try_lock(&self, session: &Session) -> Result<Option<MutexGuard>> {
        let key = lease_key(&self.dir, session.lease_id());
        let (create_revision, _) = create_leased_key(session, &key, b"").await?;
        let (predecessor, _) = super::newest_before(session.client(), &self.dir, create_revision).await?;
        if predecessor.is_some() {
            delete_own_key(session.client(), &key, create_revision).await?;
            return Ok(None);
        }
        confirm_owned(session, &key, create_revision).await?;
        Ok(Some(MutexGuard {
            key,
            fencing_token: create_revision,
        }))
    }
}

impl MutexGuard {
    /// Strictly increasing across successive holders of this mutex.
    pub fn fencing_token(&self) -> i64 {
        self.fencing_token
    }

    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// A transaction guard true exactly while this guard's key is the one holding the lock.
    pub fn still_held(&self) -> Compare {
        Compare::create_revision(self.key.clone(), CompareOp::Equal, self.fencing_token)
    }

    /// Releases the lock (idempotent; a lock already lost with its session stays released).
    pub async fn unlock(self, session: &Session) -> Result<()> {
        delete_own_key(session.client(), &self.key, self.fencing_token).await
    }
}
