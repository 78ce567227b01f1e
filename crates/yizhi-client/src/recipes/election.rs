//! Leader election with proclaim, resign and observe (etcd's election API, as a recipe).
//!
//! **Protocol.** A candidate creates `<prefix>/<lease hex>` holding its value, under its
//! session's lease. The candidate whose key has the lowest `create_revision` leads. `campaign`
//! waits for every older key to go, predecessor by predecessor, then re-reads its key and checks
//! its session before returning. `proclaim` rewrites the leader's value only if its key still
//! has the campaign's `create_revision` (so a deposed leader's proclaim fails with
//! [`Error::NotLeader`]). `resign` deletes the key. The leader's key vanishes with its lease if it
//! crashes, and the next candidate in line takes over.
//!
//! **Observe.** An observer reads the oldest key (the leader) at revision R and watches the
//! prefix from R + 1: a put to the leader's key is a new value, a deletion of it means a new
//! leader (read again). Observers see every leader change and every proclaimed value in order;
//! the same value is not delivered twice.
//!
//! **Guarantees.** At most one live session leads at a time (as long as leases are honoured).
//! A leader that stalled past its lease can still believe it leads; its [`Leadership::still_leader`]
//! guard makes its writes conditional on leading.

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::kv::{Compare, CompareOp, GetOptions, Op, PutOptions, SortOrder, SortTarget, Txn};
use crate::pb::KeyValue;
use crate::session::Session;
use crate::watch::{EventType, WatchOptions};

use super::{acquire_in_turn, delete_own_key, dir, lease_key, wait_predecessors};

/// Leader observations buffered toward a slow observer.
pub const OBSERVE_BUFFER: usize = 16;

#[derive(Clone, Debug)]
pub struct Election {
    dir: Vec<u8>,
}

/// Proof of having won a campaign.
#[derive(Clone, Debug)]
pub struct Leadership {
    key: Vec<u8>,
    create_revision: i64,
    lease_id: i64,
}

/// A stream of leaders (`KeyValue` of the leader's key: its value and revisions).
#[derive(Debug)]
pub struct Observer {
    leaders: mpsc::Receiver<Result<KeyValue>>,
    task: JoinHandle<()>,
}

impl Election {
    pub fn new(prefix: impl AsRef<[u8]>) -> Self {
        Election {
            dir: dir(prefix.as_ref()),
        }
    }

    /// Waits until this session leads, announcing `value`.
    pub async fn campaign(&self, session: &Session, value: impl AsRef<[u8]>) -> Result<Leadership> {
        let key = lease_key(&self.dir, session.lease_id());
        let wait_turn = |create_revision| wait_predecessors(session, &self.dir, create_revision);
        let create_revision = acquire_in_turn(session, &key, value.as_ref(), wait_turn).await?;
        Ok(Leadership {
            key,
            create_revision,
            lease_id: session.lease_id(),
        })
    }

    /// Announces a new value; fails with [`Error::NotLeader`] if this leadership has ended.
    pub async fn proclaim(
        &self,
        client: &Client,
        leadership: &Leadership,
        value: impl AsRef<[u8]>,
    ) -> Result<i64> {
        let txn = Txn::new()
            .when([leadership.still_leader()])
            .and_then([Op::put(
                leadership.key.clone(),
                value.as_ref(),
                PutOptions::new().lease(leadership.lease_id),
            )])
            .retry_safe();
        let response = client.txn(txn).await?;
        if !response.succeeded {
            return Err(Error::NotLeader);
        }
        crate::kv::header_revision(response.header.as_ref(), "txn")
    }

    /// Gives up leadership (the next candidate takes over at once).
    pub async fn resign(&self, client: &Client, leadership: Leadership) -> Result<()> {
        delete_own_key(client, &leadership.key, leadership.create_revision).await
    }

    /// The current leader's key-value, if anyone leads.
    pub async fn leader(&self, client: &Client) -> Result<Option<KeyValue>> {
        Ok(self.oldest(client).await?.0)
    }

    async fn oldest(&self, client: &Client) -> Result<(Option<KeyValue>, i64)> {
        let options = GetOptions::new()
            .prefix()
            .sort(SortTarget::Create, SortOrder::Ascend)
            .limit(1);
        let response = client.get(self.dir.clone(), options).await?;
        let read_at = crate::kv::header_revision(response.header.as_ref(), "range")?;
        Ok((response.kvs.into_iter().next(), read_at))
    }

    /// Follows the leader: each new leader and each proclaimed value, in order.
    pub async fn observe(&self, client: &Client) -> Result<Observer> {
        let (tx, leaders) = mpsc::channel(OBSERVE_BUFFER);
        let election = self.clone();
        let client = client.clone();
        let task = tokio::spawn(async move {
            if let Err(error) = election.follow(&client, &tx).await {
                let _ = tx.send(Err(error)).await;
            }
        });
        Ok(Observer { leaders, task })
    }

    /// Runs until the observer is dropped (`Ok`) or something fails.
    async fn follow(&self, client: &Client, tx: &mpsc::Sender<Result<KeyValue>>) -> Result<()> {
        let mut last_sent: Option<(Vec<u8>, i64)> = None;
        loop {
            let (mut leader, read_at) = self.oldest(client).await?;
            let mut watcher = client
                .watch(
                    self.dir.clone(),
                    WatchOptions::new().prefix().start_revision(read_at + 1),
                )
                .await?;
            loop {
                if let Some(kv) = &leader {
                    let id = (kv.key.clone(), kv.mod_revision);
                    if last_sent.as_ref() != Some(&id) {
                        last_sent = Some(id);
                        if tx.send(Ok(kv.clone())).await.is_err() {
                            return Ok(());
                        }
                    }
                }
                let batch = watcher
                    .next()
                    .await
                    .ok_or_else(|| Error::Stopped("watch ended".into()))??;
                let mut leader_gone = false;
                for event in batch.events {
                    let Some(kv) = event.kv else { continue };
                    let put = event.r#type == EventType::Put as i32;
                    match &leader {
                        // Nobody led at R, so the first key created since leads.
                        None if put => leader = Some(kv),
                        Some(current) if current.key == kv.key && put => leader = Some(kv),
                        Some(current) if current.key == kv.key => leader_gone = true,
                        _ => {}
                    }
                }
                if leader_gone {
                    break;
                }
            }
        }
    }
}

impl Leadership {
    /// A transaction guard true exactly while this leadership lasts.
    pub fn still_leader(&self) -> Compare {
        Compare::create_revision(self.key.clone(), CompareOp::Equal, self.create_revision)
    }

    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The campaign key's create_revision: increasing across successive leaders (a fencing token).
    pub fn create_revision(&self) -> i64 {
        self.create_revision
    }
}

impl Observer {
    /// The next leader observation; `None` after an error was delivered.
    pub async fn next(&mut self) -> Option<Result<KeyValue>> {
        self.leaders.recv().await
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leadership_guard_compares_the_campaign_revision() {
        let leadership = Leadership {
            key: b"e/00000000000000ff".to_vec(),
            create_revision: 42,
            lease_id: 0xff,
        };
        let debug = format!("{:?}", leadership.still_leader());
        assert!(debug.contains("CreateRevision(42)"), "{debug}");
    }
}
