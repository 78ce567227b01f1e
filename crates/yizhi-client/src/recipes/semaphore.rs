//! A distributed counting semaphore: at most N holders at once.
//!
//! **Protocol.** A contender creates `<prefix>/<lease hex>` under its session's lease. The
//! holders are the N keys with the lowest `create_revision`. A contender lists (keys only, at
//! most N) the keys created before its own, in a read at revision R; if fewer than N, it holds a
//! permit. Otherwise it watches the prefix from R + 1 for deletions and looks again after each
//! one. Before reporting acquisition it re-reads its key and checks its session. Release deletes
//! the key.
//!
//! **Guarantees.** At most N live sessions hold permits at once; contenders are admitted in
//! arrival (`create_revision`) order; a crashed holder's permit returns when its lease expires.
//! All N must agree on N: the semaphore does not store it.

use crate::error::Result;
use crate::kv::GetOptions;
use crate::session::Session;
use crate::watch::{EventType, WatchOptions};

use super::{acquire_in_turn, delete_own_key, dir, lease_key, wait_event};

/// The largest N a semaphore accepts (a bound on how many keys a contender counts).
pub const MAX_PERMITS: i64 = 10_000;

#[derive(Clone, Debug)]
pub struct Semaphore {
    dir: Vec<u8>,
    permits: i64,
}

/// One held permit.
#[derive(Debug)]
#[must_use = "the permit stays held until release() or the session ends"]
pub struct Permit {
    key: Vec<u8>,
    create_revision: i64,
}

impl Semaphore {
    pub fn new(prefix: impl AsRef<[u8]>, permits: i64) -> Result<Self> {
        super::check_size(permits, MAX_PERMITS, "permits")?;
        Ok(Semaphore {
            dir: dir(prefix.as_ref()),
            permits,
        })
    }

    pub async fn acquire(&self, session: &Session) -> Result<Permit> {
        let key = lease_key(&self.dir, session.lease_id());
        let wait_turn = |create_revision| self.wait_turn(session, create_revision);
        let create_revision = acquire_in_turn(session, &key, b"", wait_turn).await?;
        Ok(Permit { key, create_revision })
    }

    async fn wait_turn(&self, session: &Session, create_revision: i64) -> Result<()> {
        let client = session.client();
        loop {
            session.check_alive()?;
            let ahead = client
                .get(
                    self.dir.clone(),
                    GetOptions::new()
                        .prefix()
                        .max_create_revision(create_revision - 1)
                        .keys_only()
                        .limit(self.permits),
                )
                .await?;
            // Not `count_only`: etcd counts a range before applying the create-revision filter.
            if (ahead.kvs.len() as i64) < self.permits {
                return Ok(());
            }
            let read_at = crate::kv::header_revision(ahead.header.as_ref(), "range")?;
            let mut watcher = client
                .watch(
                    self.dir.clone(),
                    WatchOptions::new().prefix().start_revision(read_at + 1).no_put(),
                )
                .await?;
            // Any deletion may have freed a permit ahead of us: count again.
            wait_event(&mut watcher, EventType::Delete, Some(session)).await?;
        }
    }
}

impl Permit {
    pub async fn release(self, session: &Session) -> Result<()> {
        delete_own_key(session.client(), &self.key, self.create_revision).await
    }
}
