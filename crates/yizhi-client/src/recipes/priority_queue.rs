//! A distributed priority queue: lowest priority number first, FIFO within a priority.
//!
//! **Protocol.** *Enqueue* creates `<prefix>/<priority as 4 hex digits>/<nonce hex>-<sequence
//! hex>` if absent (retry-safe, as [`super::queue`]). *Dequeue* finds the smallest key under the
//! prefix (keys sort by priority first), then the oldest item (lowest `create_revision`) of that
//! priority, and takes it with a delete guarded by its `mod_revision`; a lost race means look
//! again. On an empty queue it watches the prefix for a put.
//!
//! **Guarantees.** A dequeue returns an item of the best priority present when it read, and,
//! within a priority, the earliest committed. Each item goes to exactly one consumer, at most once
//! (see [`super::queue`] for what a crash or an ambiguous failure means).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::kv::{GetOptions, SortOrder, SortTarget};

use super::queue::{put_unique, take, wait_put};
use super::{dir, unique_nonce};

#[derive(Debug)]
pub struct PriorityQueue {
    dir: Vec<u8>,
    nonce: u64,
    sequence: AtomicU64,
}

impl PriorityQueue {
    pub fn new(prefix: impl AsRef<[u8]>) -> Self {
        PriorityQueue {
            dir: dir(prefix.as_ref()),
            nonce: unique_nonce(),
            sequence: AtomicU64::new(0),
        }
    }

    fn priority_dir(&self, priority: u16) -> Vec<u8> {
        let mut key = self.dir.clone();
        key.extend_from_slice(format!("{priority:04x}/").as_bytes());
        key
    }

    /// Adds `value` at `priority` (0 is served first); returns its revision.
    pub async fn enqueue(&self, client: &Client, value: impl AsRef<[u8]>, priority: u16) -> Result<i64> {
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        let mut key = self.priority_dir(priority);
        key.extend_from_slice(format!("{:016x}-{sequence:016x}", self.nonce).as_bytes());
        put_unique(client, key, value.as_ref()).await
    }

    /// Removes and returns `(priority, value)` of the best item, waiting while the queue is empty.
    pub async fn dequeue(&self, client: &Client) -> Result<(u16, Vec<u8>)> {
        loop {
            let smallest = GetOptions::new()
                .prefix()
                .sort(SortTarget::Key, SortOrder::Ascend)
                .limit(1)
                .keys_only();
            let response = client.get(self.dir.clone(), smallest).await?;
            let Some(first) = response.kvs.first() else {
                let read_at = crate::kv::header_revision(response.header.as_ref(), "range")?;
                wait_put(client, &self.dir, read_at).await?;
                continue;
            };
            let priority = self.parse_priority(&first.key)?;
            let oldest = GetOptions::new()
                .prefix()
                .sort(SortTarget::Create, SortOrder::Ascend)
                .limit(1);
            let response = client.get(self.priority_dir(priority), oldest).await?;
            if let Some(item) = response.kvs.into_iter().next()
                && take(client, &item).await?
            {
                return Ok((priority, item.value));
            }
        }
    }

    fn parse_priority(&self, key: &[u8]) -> Result<u16> {
        let rest = key.strip_prefix(self.dir.as_slice()).unwrap_or_default();
        rest.get(..4)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u16::from_str_radix(hex, 16).ok())
            .ok_or_else(|| {
                Error::UnexpectedResponse(format!(
                    "not a priority queue key: {}",
                    String::from_utf8_lossy(key)
                ))
            })
    }
}
