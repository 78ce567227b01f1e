//! A distributed read-write lock (ZooKeeper's shared-lock recipe on revisions).
//!
//! **Protocol.** Readers create `<prefix>/r/<lease hex>`, writers `<prefix>/w/<lease hex>`, under
//! their session's lease. Revisions are global, so `create_revision` orders both kinds in one
//! line. A reader waits for the newest *writer* key created before its own to go (then looks
//! again); a writer waits for the newest key of *either* kind created before its own. Before
//! reporting acquisition each re-reads its key and checks its session, as the mutex does.
//!
//! **Guarantees.** A writer holds the lock alone; readers share it with readers only. Order is
//! arrival order: a reader that arrives after a waiting writer waits for that writer, so writers
//! are not starved. A crashed holder's key expires with its lease and its successors proceed.

use crate::error::Result;
use crate::session::Session;

use super::{acquire_in_turn, delete_own_key, dir, lease_key, wait_predecessors};

/// A read-write lock named by its key prefix.
#[derive(Clone, Debug)]
pub struct RwLock {
    dir: Vec<u8>,
    readers: Vec<u8>,
    writers: Vec<u8>,
}

/// Which kind of hold a guard is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RwMode {
    Read,
    Write,
}

/// A held read or write lock.
#[derive(Debug)]
#[must_use = "the lock stays held until unlock() or the session ends"]
pub struct RwLockGuard {
    key: Vec<u8>,
    create_revision: i64,
    mode: RwMode,
}

impl RwLock {
    pub fn new(prefix: impl AsRef<[u8]>) -> Self {
        let dir = dir(prefix.as_ref());
        let mut readers = dir.clone();
        readers.extend_from_slice(b"r/");
        let mut writers = dir.clone();
        writers.extend_from_slice(b"w/");
        RwLock {
            dir,
            readers,
            writers,
        }
    }

    pub async fn read(&self, session: &Session) -> Result<RwLockGuard> {
        self.acquire(session, RwMode::Read).await
    }

    pub async fn write(&self, session: &Session) -> Result<RwLockGuard> {
        self.acquire(session, RwMode::Write).await
    }

    async fn acquire(&self, session: &Session, mode: RwMode) -> Result<RwLockGuard> {
        let (own_dir, blockers) = match mode {
            RwMode::Read => (&self.readers, &self.writers),
            RwMode::Write => (&self.writers, &self.dir),
        };
        let key = lease_key(own_dir, session.lease_id());
        let wait_turn = |create_revision| wait_predecessors(session, blockers, create_revision);
        let create_revision = acquire_in_turn(session, &key, b"", wait_turn).await?;
        Ok(RwLockGuard {
            key,
            create_revision,
            mode,
        })
    }
}

impl RwLockGuard {
    pub fn mode(&self) -> RwMode {
        self.mode
    }

    /// The key's create_revision: increasing across successive writers.
    pub fn fencing_token(&self) -> i64 {
        self.create_revision
    }

    pub async fn unlock(self, session: &Session) -> Result<()> {
        delete_own_key(session.client(), &self.key, self.create_revision).await
    }
}
