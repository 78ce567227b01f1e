//! A barrier: one party holds it closed, any number wait until it is released.
//!
//! **Protocol.** The barrier is one key. [`Barrier::hold`] creates it under the holder's session
//! lease; [`Barrier::release`] deletes it. [`Barrier::wait`] reads the key at revision R: absent
//! means open; present means watch it from R + 1 until it is deleted.
//!
//! **Guarantees.** Every waiter returns once the key is gone — released, or expired with a
//! crashed holder's lease, so a dead holder cannot keep everyone waiting longer than its TTL.
//! Waiters that arrive after the release pass at once.

use crate::client::Client;
use crate::error::Result;
use crate::kv::{DeleteOptions, GetOptions};
use crate::session::Session;
use crate::watch::EventType;

use super::create_leased_key;

#[derive(Clone, Debug)]
pub struct Barrier {
    key: Vec<u8>,
}

impl Barrier {
    pub fn new(key: impl AsRef<[u8]>) -> Self {
        Barrier {
            key: key.as_ref().to_vec(),
        }
    }

    /// Closes the barrier (held for as long as `session` lives, or until released).
    pub async fn hold(&self, session: &Session) -> Result<()> {
        create_leased_key(session, &self.key, b"").await.map(|_| ())
    }

    /// Opens the barrier for every waiter.
    pub async fn release(&self, client: &Client) -> Result<()> {
        client
            .delete(self.key.clone(), DeleteOptions::new())
            .await
            .map(|_| ())
    }

    /// Returns once the barrier is open.
    pub async fn wait(&self, client: &Client) -> Result<()> {
        let response = client.get(self.key.clone(), GetOptions::new()).await?;
        if response.kvs.is_empty() {
            return Ok(());
        }
        let read_at = crate::kv::header_revision(response.header.as_ref(), "range")?;
        super::wait_for_event(client, self.key.clone(), read_at, EventType::Delete, None).await
    }
}
