//! A distributed FIFO queue (ZooKeeper's queue recipe, ordered by revision).
//!
//! **Protocol.** *Enqueue* creates `<prefix>/<handle nonce hex>-<sequence hex>` if absent (a
//! retried enqueue finds its own key, so an item is never enqueued twice by a retry). An item's
//! place is its key's `create_revision`: the order in which the cluster committed the enqueues.
//! *Dequeue* reads the oldest item at revision R and deletes it in a transaction guarded by its
//! `mod_revision`; of several consumers racing for one item exactly one transaction succeeds, the
//! others look again. On an empty queue the consumer watches the prefix from R + 1 for a put.
//!
//! **Guarantees.** Items are handed out in commit order of their enqueues (per producer, in the
//! order it enqueued them), each to exactly one consumer. Delivery is at most once: an item is
//! removed when it is handed out, so a consumer that crashes after its dequeue loses that item. A
//! dequeue whose outcome is unknown (the connection broke after the delete left) is reported as
//! [`crate::Error::Ambiguous`]; it becomes exactly-once with the server's request deduplication
//! ([`crate::client::RequestMetadataHook`]).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::kv::{Compare, CompareOp, DeleteOptions, GetOptions, Op, PutOptions, SortOrder, SortTarget, Txn};
use crate::pb::KeyValue;
use crate::watch::{EventType, WatchOptions};

use super::{dir, unique_nonce};

#[derive(Debug)]
pub struct Queue {
    dir: Vec<u8>,
    nonce: u64,
    sequence: AtomicU64,
}

impl Queue {
    pub fn new(prefix: impl AsRef<[u8]>) -> Self {
        Queue {
            dir: dir(prefix.as_ref()),
            nonce: unique_nonce(),
            sequence: AtomicU64::new(0),
        }
    }

    /// Appends `value`; returns the item's revision (its place in line).
    pub async fn enqueue(&self, client: &Client, value: impl AsRef<[u8]>) -> Result<i64> {
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        let mut key = self.dir.clone();
        key.extend_from_slice(format!("{:016x}-{sequence:016x}", self.nonce).as_bytes());
        put_unique(client, key, value.as_ref()).await
    }

    /// Removes and returns the oldest item, waiting while the queue is empty.
    pub async fn dequeue(&self, client: &Client) -> Result<Vec<u8>> {
        loop {
            let oldest = GetOptions::new()
                .prefix()
                .sort(SortTarget::Create, SortOrder::Ascend)
                .limit(1);
            let response = client.get(self.dir.clone(), oldest).await?;
            match response.kvs.into_iter().next() {
                Some(item) => {
                    if take(client, &item).await? {
                        return Ok(item.value);
                    }
                }
                None => {
                    let read_at = crate::kv::header_revision(response.header.as_ref(), "range")?;
                    wait_put(client, &self.dir, read_at).await?;
                }
            }
        }
    }
}

/// Creates `key` unless it exists; returns its create_revision. Safe to retry.
pub(crate) async fn put_unique(client: &Client, key: Vec<u8>, value: &[u8]) -> Result<i64> {
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([Op::put(key.clone(), value, PutOptions::new())])
        .or_else([Op::get(key, GetOptions::new())])
        .retry_safe();
    let response = client.txn(txn).await?;
    use crate::kv::TxnResponseExt;
    if response.succeeded {
        return Ok(response.revision());
    }
    // An earlier attempt of this very enqueue was applied.
    response
        .range(0)
        .and_then(|r| r.kvs.first())
        .map(|kv| kv.create_revision)
        .ok_or_else(|| Error::UnexpectedResponse("txn else-branch without the key".into()))
}

/// Deletes `item` if nobody took it first; `true` if this call took it.
pub(crate) async fn take(client: &Client, item: &KeyValue) -> Result<bool> {
    let txn = Txn::new()
        .when([Compare::mod_revision(
            item.key.clone(),
            CompareOp::Equal,
            item.mod_revision,
        )])
        .and_then([Op::delete(item.key.clone(), DeleteOptions::new())]);
    Ok(client.txn(txn).await?.succeeded)
}

/// Waits for a put under `dir` after revision `read_at`.
pub(crate) async fn wait_put(client: &Client, dir: &[u8], read_at: i64) -> Result<()> {
    let mut watcher = client
        .watch(
            dir,
            WatchOptions::new()
                .prefix()
                .start_revision(read_at + 1)
                .no_delete(),
        )
        .await?;
    super::wait_event(&mut watcher, EventType::Put, None).await
}
