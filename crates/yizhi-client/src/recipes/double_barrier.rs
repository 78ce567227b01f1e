//! A double barrier (ZooKeeper's recipe): N parties enter together and leave together.
//!
//! **Protocol.** Participants register `<prefix>/waiters/<lease hex>` under their session lease.
//! *Enter*: register, count the waiters; the one that sees N or more creates `<prefix>/ready`
//! (under its lease); everyone else waits for `ready` to appear (read at R, watch from R + 1).
//! *Leave*: list the waiters in `create_revision` order. If only this participant is left, it
//! deletes its key and `ready`, and leaves. If it is the lowest, it waits for the highest key to
//! go; otherwise it deletes its own key and waits for the lowest to go. Then it looks again.
//! The lowest leaves last, so the others leave once everyone has arrived at the leave phase.
//!
//! **Guarantees.** No participant returns from `enter` before N have registered, and none returns
//! from `leave` before every other registered participant has started leaving. A participant
//! that crashes inside the barrier leaves with its lease (its key expires), so the others are
//! held up by at most one TTL. A prefix serves one round: reuse needs a fresh prefix, because a
//! leftover `ready` key (of a crashed participant, until its lease ends) would open the next
//! round early.

use crate::error::Result;
use crate::kv::{Compare, CompareOp, DeleteOptions, GetOptions, Op, PutOptions, SortOrder, SortTarget, Txn};
use crate::session::Session;
use crate::watch::EventType;

use super::{create_leased_key, delete_own_key, dir, lease_key, wait_delete, wait_for_event};

/// The most participants a double barrier takes (a bound on the waiter listing).
pub const MAX_PARTICIPANTS: i64 = 1_000;

#[derive(Clone, Debug)]
pub struct DoubleBarrier {
    waiters: Vec<u8>,
    ready: Vec<u8>,
    count: i64,
}

impl DoubleBarrier {
    pub fn new(prefix: impl AsRef<[u8]>, count: i64) -> Result<Self> {
        super::check_size(count, MAX_PARTICIPANTS, "participants")?;
        let base = dir(prefix.as_ref());
        let mut waiters = base.clone();
        waiters.extend_from_slice(b"waiters/");
        let mut ready = base;
        ready.extend_from_slice(b"ready");
        Ok(DoubleBarrier {
            waiters,
            ready,
            count,
        })
    }

    /// Returns once `count` participants have entered.
    pub async fn enter(&self, session: &Session) -> Result<()> {
        let client = session.client();
        let key = lease_key(&self.waiters, session.lease_id());
        create_leased_key(session, &key, b"").await?;
        let waiting = client
            .get(self.waiters.clone(), GetOptions::new().prefix().count_only())
            .await?;
        if waiting.count >= self.count {
            let txn = Txn::new()
                .when([Compare::create_revision(self.ready.clone(), CompareOp::Equal, 0)])
                .and_then([Op::put(
                    self.ready.clone(),
                    b"",
                    PutOptions::new().lease(session.lease_id()),
                )])
                .retry_safe();
            client.txn(txn).await?;
            return Ok(());
        }
        let response = client.get(self.ready.clone(), GetOptions::new()).await?;
        if !response.kvs.is_empty() {
            return Ok(());
        }
        let read_at = crate::kv::header_revision(response.header.as_ref(), "range")?;
        wait_for_event(client, self.ready.clone(), read_at, EventType::Put, Some(session)).await
    }

    /// Returns once every participant has left (or crashed out).
    pub async fn leave(&self, session: &Session) -> Result<()> {
        let client = session.client();
        let own = lease_key(&self.waiters, session.lease_id());
        loop {
            let listing = GetOptions::new()
                .prefix()
                .sort(SortTarget::Create, SortOrder::Ascend)
                .keys_only()
                .limit(MAX_PARTICIPANTS + 1);
            let response = client.get(self.waiters.clone(), listing).await?;
            let read_at = crate::kv::header_revision(response.header.as_ref(), "range")?;
            let keys = response.kvs;
            let (Some(lowest), Some(highest)) = (keys.first(), keys.last()) else {
                return Ok(());
            };
            let own_entry = keys.iter().find(|kv| kv.key == own);
            if keys.len() == 1 && own_entry.is_some() {
                let txn = Txn::new()
                    .and_then([
                        Op::delete(own.clone(), DeleteOptions::new()),
                        Op::delete(self.ready.clone(), DeleteOptions::new()),
                    ])
                    .retry_safe();
                client.txn(txn).await?;
                return Ok(());
            }
            if lowest.key == own {
                wait_delete(session, &highest.key, read_at).await?;
                continue;
            }
            if let Some(entry) = own_entry {
                delete_own_key(client, &own, entry.create_revision).await?;
            }
            wait_delete(session, &lowest.key, read_at).await?;
        }
    }
}
