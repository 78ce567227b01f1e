//! Coordination recipes over the etcd v3 API, in the style of ZooKeeper's recipes and etcd's
//! `concurrency` package: ephemeral keys are keys attached to a [`Session`]'s lease, and order
//! comes from revisions (a key's `create_revision` is its place in line).
//!
//! Waiting is always on one specific key's deletion (the predecessor), found by a read at some
//! revision R and watched from R + 1, so no deletion can slip between the read and the watch,
//! and no wake-up storm follows a release ("herd effect", ZooKeeper's lock recipe).
//!
//! Every wait also watches the session: if its lease is lost, the wait ends with
//! [`Error::SessionLost`], because whatever place in line the session held is gone.

pub mod barrier;
pub mod config;
pub mod double_barrier;
pub mod election;
pub mod mutex;
pub mod priority_queue;
pub mod queue;
pub mod rwlock;
pub mod semaphore;

use std::sync::atomic::{AtomicU64, Ordering};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::kv::{Compare, CompareOp, GetOptions, Op, PutOptions, SortOrder, SortTarget, Txn, TxnResponseExt};
use crate::pb::KeyValue;
use crate::session::{Session, wait_lost};
use crate::watch::{EventType, WatchOptions, Watcher};

/// `prefix` with exactly one trailing `/`.
pub(crate) fn dir(prefix: &[u8]) -> Vec<u8> {
    let mut dir = prefix.to_vec();
    while dir.last() == Some(&b'/') {
        dir.pop();
    }
    dir.push(b'/');
    dir
}

/// `<dir>/<lease id in hex>`: the one key a session owns under a recipe's prefix.
pub(crate) fn lease_key(dir: &[u8], lease_id: i64) -> Vec<u8> {
    let mut key = dir.to_vec();
    key.extend_from_slice(format!("{lease_id:016x}").as_bytes());
    key
}

/// A number unlikely to be shared by two queue handles anywhere (process id, clock, counter): it
/// makes enqueued keys unique so that a retried enqueue is recognised by its own key.
pub(crate) fn unique_nonce() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    // splitmix64 finaliser: spreads the inputs over all bits.
    let mut z = nanos ^ (u64::from(std::process::id()) << 32) ^ count.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Creates `key` under the session's lease unless it exists; returns its create_revision and
/// the revision of the answer. Retrying is safe: a second attempt finds the key and reads it.
pub(crate) async fn create_leased_key(session: &Session, key: &[u8], value: &[u8]) -> Result<(i64, i64)> {
    let client = session.client();
    let txn = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, 0)])
        .and_then([Op::put(key, value, PutOptions::new().lease(session.lease_id()))])
        .or_else([Op::get(key, GetOptions::new())])
        .retry_safe();
    let response = client.txn(txn).await?;
    let revision = response.revision();
    if response.succeeded {
        return Ok((revision, revision));
    }
    let kv = response
        .range(0)
        .and_then(|r| r.kvs.first())
        .ok_or_else(|| Error::UnexpectedResponse("txn else-branch without the key".into()))?;
    if kv.lease != session.lease_id() {
        return Err(Error::InvalidArgument(format!(
            "key {} belongs to lease {:x}, not this session's",
            String::from_utf8_lossy(key),
            kv.lease
        )));
    }
    Ok((kv.create_revision, revision))
}

/// The newest key under `dir` created before `revision`, and the revision of the read.
pub(crate) async fn newest_before(
    client: &Client,
    dir: &[u8],
    revision: i64,
) -> Result<(Option<KeyValue>, i64)> {
    let options = GetOptions::new()
        .prefix()
        .max_create_revision(revision - 1)
        .sort(SortTarget::Create, SortOrder::Descend)
        .limit(1)
        .keys_only();
    let response = client.get(dir, options).await?;
    let read_at = crate::kv::header_revision(response.header.as_ref(), "range")?;
    Ok((response.kvs.into_iter().next(), read_at))
}

/// Waits until `key`, seen alive at revision `seen_at`, is deleted; fails if the session is lost
/// first.
pub(crate) async fn wait_delete(session: &Session, key: &[u8], seen_at: i64) -> Result<()> {
    wait_for_event(session.client(), key, seen_at, EventType::Delete, Some(session)).await
}

/// Waits for an event of type `kind` on `key` after revision `seen_at` (the server filters out
/// the other type); with a session, fails once the session is lost.
pub(crate) async fn wait_for_event(
    client: &Client,
    key: impl Into<Vec<u8>>,
    seen_at: i64,
    kind: EventType,
    session: Option<&Session>,
) -> Result<()> {
    let options = WatchOptions::new().start_revision(seen_at + 1);
    let options = match kind {
        EventType::Delete => options.no_put(),
        EventType::Put => options.no_delete(),
    };
    let mut watcher = client.watch(key, options).await?;
    wait_event(&mut watcher, kind, session).await
}

/// Refuses a recipe's size parameter outside `1..=max` (`what` names its unit).
pub(crate) fn check_size(value: i64, max: i64, what: &str) -> Result<()> {
    if !(1..=max).contains(&value) {
        return Err(Error::InvalidArgument(format!("{value} {what} (1..={max})")));
    }
    Ok(())
}

/// Waits until `watcher` delivers an event of type `kind`. With a session, fails once the session
/// is lost: whatever the caller waits for no longer concerns it.
pub(crate) async fn wait_event(
    watcher: &mut Watcher,
    kind: EventType,
    session: Option<&Session>,
) -> Result<()> {
    let lost = async {
        match session {
            Some(session) => {
                wait_lost(session.lost_signal()).await;
                Error::SessionLost {
                    lease_id: session.lease_id(),
                }
            }
            None => std::future::pending().await,
        }
    };
    tokio::pin!(lost);
    loop {
        tokio::select! {
            batch = watcher.next() => {
                let batch = batch.ok_or_else(|| Error::Stopped("watch ended".into()))??;
                if batch.events.iter().any(|e| e.r#type == kind as i32) {
                    return Ok(());
                }
            }
            error = &mut lost => return Err(error),
        }
    }
}

/// Queues the session's `key` (holding `value`) and waits with `wait_turn` (given the key's
/// create revision) until its turn, then confirms the key is still owned; returns the create
/// revision. On a failure the key is deleted while the session lives, so it blocks nobody.
pub(crate) async fn acquire_in_turn<Wait>(
    session: &Session,
    key: &[u8],
    value: &[u8],
    wait_turn: impl FnOnce(i64) -> Wait,
) -> Result<i64>
where
    Wait: std::future::Future<Output = Result<()>>,
{
    let (create_revision, _) = create_leased_key(session, key, value).await?;
    let acquired = async {
        wait_turn(create_revision).await?;
        confirm_owned(session, key, create_revision).await
    }
    .await;
    if let Err(error) = acquired {
        if session.is_alive() {
            let _ = delete_own_key(session.client(), key, create_revision).await;
        }
        return Err(error);
    }
    Ok(create_revision)
}

/// Waits until no key under `dir` older than `revision` remains, one predecessor at a time.
pub(crate) async fn wait_predecessors(session: &Session, dir: &[u8], revision: i64) -> Result<()> {
    loop {
        session.check_alive()?;
        match newest_before(session.client(), dir, revision).await? {
            (None, _) => return Ok(()),
            (Some(predecessor), read_at) => wait_delete(session, &predecessor.key, read_at).await?,
        }
    }
}

/// The acquisition check every recipe makes before reporting success: the session is alive and
/// its key still exists with the expected create_revision (a linearizable read, so the lease was
/// alive at a moment after the wait ended).
pub(crate) async fn confirm_owned(session: &Session, key: &[u8], create_revision: i64) -> Result<()> {
    session.check_alive()?;
    let response = session.client().get(key, GetOptions::new()).await?;
    match response.kvs.first() {
        Some(kv) if kv.create_revision == create_revision && kv.lease == session.lease_id() => Ok(()),
        _ => Err(Error::SessionLost {
            lease_id: session.lease_id(),
        }),
    }
}

/// Deletes `key` if it still has `create_revision` (never someone else's later key); idempotent.
pub(crate) async fn delete_own_key(client: &Client, key: &[u8], create_revision: i64) -> Result<()> {
    let txn = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, create_revision)])
        .and_then([Op::delete(key, Default::default())])
        .retry_safe();
    client.txn(txn).await?;
    Ok(())
}
