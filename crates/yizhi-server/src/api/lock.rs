//! `v3lockpb.Lock`: Lock and Unlock, as etcd's server-side v3lock (which runs clientv3's
//! `concurrency.Mutex`), and the waiting queue the Election service shares.
//!
//! # The queue
//! A waiter's key is `<name>/<lease id in lowercase hex>`, created by one txn
//! (`create_revision == 0 ? put(key, lease) : get(key)`), so a lease queues at most once per name.
//! Keys under `<name>/` form a FIFO queue ordered by create revision; the owner is the key with the
//! lowest one. A waiter waits only for its *predecessor* (the key with the greatest create revision
//! below its own) to be deleted, then looks again: a release wakes exactly the next waiter, with no
//! herd of re-reads. When no predecessor is left, the grant is confirmed after a read barrier
//! (linearizable): the waiter's own key must still exist with its create revision, and its lease
//! must still be alive — neither revoked nor past its expiry. etcd once granted locks on expired
//! leases (etcd-io/etcd#11456, found by Jepsen); here a waiter whose lease is gone gets etcd's
//! "requested lease not found" and its key is deleted.
//!
//! Waiting registers the predecessor's key and the waiter's own key with the member's deletion
//! registry (`node::deletions`), which the applier consults for each applied delete: a release
//! wakes exactly the waiters of that key, whatever else is applied meanwhile, and a wake costs two
//! index lookups. Compared with a watch in the hub per waiter, this holds no hub slot (the hub's
//! limit is shared with client watches) and buffers no events. A local read may lag the cluster
//! but never goes backwards, and a deletion it shows is committed; the final check is
//! linearizable.
//!
//! Bounds: at most [`MAX_WAITERS`] Lock and Campaign calls wait at once per client listener (a
//! member serves one listener per client URL); beyond that a call fails with ResourceExhausted
//! "etcdserver: too many requests". A client that cancels its Lock while waiting has its key
//! deleted (etcd's client does the same on a cancelled context), so it blocks nobody.
//!
//! # Fencing tokens
//! The create revision of the lock key is a fencing token: grants follow create-revision order,
//! and a key created later always has a greater revision, so each holder's token is greater than
//! every earlier holder's. A lease can expire while its holder still believes it holds the lock
//! (a GC pause, a partition); what the lock protects must check the token:
//! - a resource in Yizhi itself: write with a Txn whose compare is
//!   `Compare { key: lock_key, target: CREATE, result: EQUAL, create_revision: token }`; once the
//!   lock key is gone (released, expired) or recreated, the compare fails and nothing is written;
//! - an external resource: it remembers the greatest token it has accepted and refuses requests
//!   carrying a smaller one.
//!
//! The response's header revision is the store revision at the grant (`etcdctl` exports it as
//! `ETCD_LOCK_REV`); it also grows from grant to grant, but only the create revision ties the
//! token to the key a compare can check.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tonic::{Request, Response, Status};
use yizhi_kv::{Command, CommandResponse, KeyValue, RangeRequest, ResponseOp, SortOrder, SortTarget};
use yizhi_proto::etcdserverpb as pb;
use yizhi_proto::v3lockpb as lockpb;

use super::{Answer, Api, convert, kv_status, maintenance, unexpected};
use crate::node::Store;
use crate::node::lessor::wall_clock_ms;

/// Lock and Campaign calls waiting at once on one client listener.
pub const MAX_WAITERS: usize = 10_000;
/// The lease etcd's server grants for a Lock or Campaign that names lease 0 (its default session
/// TTL); nobody keeps it alive, so such a lock lasts at most this long.
pub const DEFAULT_SESSION_TTL_SECS: i64 = 60;
/// etcd's `ErrSessionExpired`: the waiter's key vanished while its lease lives (someone deleted it).
const SESSION_EXPIRED: &str = "session: expired";
const MS_PER_SEC: u64 = 1000;

/// Admission of waiting calls, shared by the Lock and Election services of one listener.
#[derive(Clone, Debug)]
pub struct WaiterLimit {
    permits: Arc<Semaphore>,
}

impl WaiterLimit {
    pub fn new(max_waiters: usize) -> Self {
        assert!(max_waiters >= 1);
        WaiterLimit {
            permits: Arc::new(Semaphore::new(max_waiters)),
        }
    }

    pub(super) fn admit(&self) -> Result<OwnedSemaphorePermit, Status> {
        self.permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| Status::resource_exhausted("etcdserver: too many requests"))
    }
}

#[derive(Debug)]
pub struct LockService {
    api: Api,
    waiters: WaiterLimit,
}

impl LockService {
    pub fn new(api: Api, waiters: WaiterLimit) -> Self {
        LockService { api, waiters }
    }
}

#[tonic::async_trait]
impl lockpb::lock_server::Lock for LockService {
    async fn lock(&self, request: Request<lockpb::LockRequest>) -> Answer<lockpb::LockResponse> {
        let request = self.api.accept(request)?;
        let _permit = self.waiters.admit()?;
        let lease = session_lease(&self.api, request.lease).await?;
        let prefix = queue_prefix(&request.name);
        // `withdraw`, dropped on an error or a cancelled call, deletes the key this call created.
        let (queued, withdraw) = enqueue(&self.api, &prefix, lease, Bytes::new()).await?;
        let revision = wait_for_turn(&self.api, &prefix, &queued).await?;
        withdraw.keep();
        Ok(Response::new(lockpb::LockResponse {
            header: Some(self.api.header(revision)),
            key: queued.key.to_vec(),
        }))
    }

    async fn unlock(&self, request: Request<lockpb::UnlockRequest>) -> Answer<lockpb::UnlockResponse> {
        let request = self.api.accept(request)?;
        if request.key.is_empty() {
            return Err(kv_status(&yizhi_kv::KvError::EmptyKey));
        }
        let command = Command::DeleteRange(yizhi_kv::DeleteRangeRequest {
            key: Bytes::from(request.key),
            ..Default::default()
        });
        match propose(&self.api, command).await? {
            CommandResponse::DeleteRange(r) => Ok(Response::new(lockpb::UnlockResponse {
                header: Some(self.api.header(r.revision)),
            })),
            _ => Err(unexpected("unlock")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The queue, shared with the Election service.

/// A key in the queue under a prefix.
#[derive(Clone, Debug)]
pub(super) struct Queued {
    pub key: Bytes,
    pub create_revision: i64,
    pub lease: i64,
    /// The value the key holds after enqueueing.
    pub value: Bytes,
    /// This call created the key (rather than finding it, put by an earlier call on the lease).
    pub created: bool,
}

/// What the store says of a waiter's turn.
#[derive(Debug)]
enum Turn {
    Granted {
        revision: i64,
    },
    /// Waiting for `predecessor` to be deleted.
    Behind {
        predecessor: KeyValue,
    },
    Lost(Status),
}

/// `<name>/`: the prefix of the queue's keys.
pub(super) fn queue_prefix(name: &[u8]) -> Bytes {
    let mut prefix = Vec::with_capacity(name.len() + 1);
    prefix.extend_from_slice(name);
    prefix.push(b'/');
    Bytes::from(prefix)
}

/// The end of the range of every key starting with `prefix` (etcd's `GetPrefixRangeEnd`).
pub(super) fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bytes::from(end);
        }
    }
    Bytes::from_static(b"\0") // All 0xff: every key from `prefix` on.
}

/// Proposes one step of a Lock or Campaign call. Such a call outlives many of these steps (it
/// waits for its turn as long as its client does), so each step has the member's own request
/// timeout rather than the call's deadline; a step acting after its client left is what the
/// call's clean-up (`Withdraw`) is for.
pub(super) async fn propose(api: &Api, command: Command) -> Result<CommandResponse, Status> {
    let applied = api.propose(&command, api.node.deadline(None)).await?;
    applied.map_err(|e| kv_status(&e))
}

/// A Txn through the log, with the same quota check as the KV service's.
pub(super) async fn txn(api: &Api, request: pb::TxnRequest) -> Result<yizhi_kv::TxnResponse, Status> {
    maintenance::check_space(api, maintenance::txn_cost(&request))?;
    match propose(api, Command::Txn(convert::txn_request(request)?)).await? {
        CommandResponse::Txn(r) => Ok(r),
        _ => Err(unexpected("txn")),
    }
}

pub(super) fn compare_create(key: &Bytes, create_revision: i64) -> pb::Compare {
    pb::Compare {
        result: pb::compare::CompareResult::Equal as i32,
        target: pb::compare::CompareTarget::Create as i32,
        key: key.to_vec(),
        range_end: Vec::new(),
        target_union: Some(pb::compare::TargetUnion::CreateRevision(create_revision)),
    }
}

fn compare_mod(key: &Bytes, mod_revision: i64) -> pb::Compare {
    pb::Compare {
        target: pb::compare::CompareTarget::Mod as i32,
        target_union: Some(pb::compare::TargetUnion::ModRevision(mod_revision)),
        ..compare_create(key, 0)
    }
}

pub(super) fn put_op(key: &Bytes, value: &[u8], lease: i64) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
            ..Default::default()
        })),
    }
}

pub(super) fn delete_op(key: &Bytes) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestDeleteRange(
            pb::DeleteRangeRequest {
                key: key.to_vec(),
                ..Default::default()
            },
        )),
    }
}

/// The caller's lease; for 0, a new one of [`DEFAULT_SESSION_TTL_SECS`], as etcd's server grants.
pub(super) async fn session_lease(api: &Api, lease: i64) -> Result<i64, Status> {
    if lease != 0 {
        return Ok(lease);
    }
    let command = Command::LeaseGrant(yizhi_kv::LeaseGrantRequest {
        id: 0,
        ttl_secs: DEFAULT_SESSION_TTL_SECS,
        now_ms: wall_clock_ms(),
    });
    match propose(api, command).await? {
        CommandResponse::LeaseGrant(r) => Ok(r.id),
        _ => Err(unexpected("lease grant")),
    }
}

/// Puts the lease's key into the queue under `prefix` with `value`, or finds it there; with the
/// guard that deletes the key if this call created it and does not keep it.
///
/// The txn runs in a task of its own: a call cancelled while its txn is in flight must still learn
/// whether it created the key, and delete it then (the guard does, when the answer finds nobody).
pub(super) async fn enqueue(
    api: &Api,
    prefix: &Bytes,
    lease: i64,
    value: Bytes,
) -> Result<(Queued, Withdraw), Status> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (api, prefix) = (api.clone(), prefix.clone());
    tokio::spawn(async move {
        let outcome = queue_txn(&api, &prefix, lease, value).await.map(|queued| {
            let withdraw = Withdraw::new(&api, &queued);
            (queued, withdraw)
        });
        // Nobody listening: the call was cancelled; dropping the guard withdraws the key.
        drop(tx.send(outcome));
    });
    rx.await
        .map_err(|_| Status::unavailable("etcdserver: server stopped"))?
}

async fn queue_txn(api: &Api, prefix: &Bytes, lease: i64, value: Bytes) -> Result<Queued, Status> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    let key = Bytes::from(key);
    // A key that exists is adopted: this call re-puts it (same lease, its own value), which moves
    // its mod revision, so that the withdraw guard of the call that created it (cancelled, its
    // delete perhaps still on its way) sees the adoption and leaves the key alone (audit F5b).
    let request = pb::TxnRequest {
        compare: vec![compare_create(&key, 0)],
        success: vec![put_op(&key, &value, lease)],
        failure: vec![
            put_op(&key, &value, lease),
            pb::RequestOp {
                request: Some(pb::request_op::Request::RequestRange(pb::RangeRequest {
                    key: key.to_vec(),
                    ..Default::default()
                })),
            },
        ],
    };
    let response = txn(api, request).await?;
    if response.succeeded {
        return Ok(Queued {
            key,
            create_revision: response.revision,
            lease,
            value,
            created: true,
        });
    }
    let existing = match response.responses.into_iter().nth(1) {
        Some(ResponseOp::Range(r)) => r.kvs.into_iter().next(),
        _ => None,
    };
    // The compare failed, so the key existed at the txn's revision.
    let existing = existing.ok_or_else(|| unexpected("queue txn"))?;
    Ok(Queued {
        key,
        create_revision: existing.create_revision,
        lease,
        value: existing.value,
        created: false,
    })
}

/// Waits until `queued` owns the queue under `prefix`; returns the store revision of the grant.
pub(super) async fn wait_for_turn(api: &Api, prefix: &Bytes, queued: &Queued) -> Result<i64, Status> {
    loop {
        // This member applied the enqueue before answering it, so the local store has the key.
        let local = check_turn(&api.node.read_store(), prefix, queued);
        match local? {
            Turn::Lost(status) => return Err(status),
            Turn::Behind { predecessor, .. } => {
                wait_until_deleted(api, &predecessor, queued).await?;
                continue;
            }
            Turn::Granted { .. } => {}
        }
        // Confirm on a linearizable view: the lease may have expired, the key may be gone.
        api.read_barrier(api.node.deadline(None)).await?;
        let confirmed = check_turn(&api.node.read_store(), prefix, queued);
        match confirmed? {
            Turn::Granted { revision } => return Ok(revision),
            Turn::Lost(status) => return Err(status),
            // Keys below ours were gone in an older view of the store; none can be created.
            Turn::Behind { predecessor, .. } => panic!(
                "{:?} (create revision {}) reappeared ahead of {:?} (create revision {})",
                predecessor.key, predecessor.create_revision, queued.key, queued.create_revision
            ),
        }
    }
}

fn check_turn(store: &Store, prefix: &Bytes, queued: &Queued) -> Result<Turn, Status> {
    assert!(queued.create_revision >= 1, "{queued:?}");
    if !lease_alive(store, queued.lease, wall_clock_ms()) {
        return Ok(Turn::Lost(kv_status(&yizhi_kv::KvError::LeaseNotFound)));
    }
    if !holds_incarnation(store, &queued.key, queued.create_revision)? {
        return Ok(Turn::Lost(Status::unknown(SESSION_EXPIRED)));
    }
    let revision = store.current_revision();
    match predecessor(store, prefix, queued.create_revision)? {
        Some(predecessor) => Ok(Turn::Behind { predecessor }),
        None => Ok(Turn::Granted { revision }),
    }
}

/// Whether lease `id` exists and has not passed its expiry (it may await its revocation).
fn lease_alive(store: &Store, id: i64, now_ms: u64) -> bool {
    // The store reports whole seconds left, rounded down, from the time it is given: asked as of
    // one second less a millisecond earlier, it reports 0 exactly when expiry <= now (the
    // lessor's own test for expired).
    match store.lease_time_to_live(id, now_ms.saturating_sub(MS_PER_SEC - 1)) {
        Ok(lease) => lease.ttl_secs > 0,
        Err(_) => false,
    }
}

/// Whether `key` exists with this create revision (and not as a later incarnation).
fn holds_incarnation(store: &Store, key: &Bytes, create_revision: i64) -> Result<bool, Status> {
    let request = RangeRequest {
        key: key.clone(),
        min_create_revision: create_revision,
        max_create_revision: create_revision,
        keys_only: true,
        ..Default::default()
    };
    let response = store.range(&request).map_err(|e| kv_status(&e))?;
    Ok(!response.kvs.is_empty())
}

/// The key under `prefix` with the greatest create revision below `create_revision`.
fn predecessor(store: &Store, prefix: &Bytes, create_revision: i64) -> Result<Option<KeyValue>, Status> {
    assert!(create_revision >= 1);
    if create_revision == 1 {
        return Ok(None); // A filter of 0 would mean "no filter".
    }
    let request = RangeRequest {
        key: prefix.clone(),
        range_end: prefix_end(prefix),
        max_create_revision: create_revision - 1,
        sort_order: SortOrder::Descend,
        sort_target: SortTarget::Create,
        limit: 1,
        keys_only: true,
        ..Default::default()
    };
    let response = store.range(&request).map_err(|e| kv_status(&e))?;
    Ok(response.kvs.into_iter().next())
}

/// The key under `prefix` with the lowest create revision: the lock holder, the leader.
pub(super) fn first_created(store: &Store, prefix: &Bytes) -> Result<Option<KeyValue>, Status> {
    let request = RangeRequest {
        key: prefix.clone(),
        range_end: prefix_end(prefix),
        sort_order: SortOrder::Ascend,
        sort_target: SortTarget::Create,
        limit: 1,
        ..Default::default()
    };
    let response = store.range(&request).map_err(|e| kv_status(&e))?;
    Ok(response.kvs.into_iter().next())
}

/// Returns once `predecessor` is deleted (or our own key is: the caller then finds it lost).
async fn wait_until_deleted(api: &Api, predecessor: &KeyValue, queued: &Queued) -> Result<(), Status> {
    let deletions = &api.node.shared.deletions;
    let wake = Arc::new(Notify::new());
    // Registered before the store is read, so a delete applied in between leaves a permit.
    let registrations = (
        deletions.register(predecessor.key.clone(), wake.clone()),
        deletions.register(queued.key.clone(), wake.clone()),
    );
    let (Some(_predecessor_registration), Some(_own_registration)) = registrations else {
        return Err(Status::resource_exhausted("etcdserver: too many requests"));
    };
    loop {
        {
            let store = api.node.read_store();
            let predecessor_lives = holds_incarnation(&store, &predecessor.key, predecessor.create_revision)?;
            let own_lives = holds_incarnation(&store, &queued.key, queued.create_revision)?;
            if !predecessor_lives || !own_lives {
                return Ok(());
            }
        }
        wake.notified().await;
    }
}

/// Deletes a waiter's key unless told to keep it: the clean-up of a failed or cancelled call.
#[derive(Debug)]
pub(super) struct Withdraw {
    /// `None` once kept (or when the call did not create the key, so is not its to delete).
    api: Option<Api>,
    key: Bytes,
    create_revision: i64,
}

impl Withdraw {
    fn new(api: &Api, queued: &Queued) -> Self {
        Withdraw {
            api: queued.created.then(|| api.clone()),
            key: queued.key.clone(),
            create_revision: queued.create_revision,
        }
    }

    pub(super) fn keep(mut self) {
        self.api = None;
    }
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        let Some(api) = self.api.take() else {
            return;
        };
        // A cancelled call's future is dropped on the runtime; the delete outlives it.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (key, create_revision) = (self.key.clone(), self.create_revision);
        runtime.spawn(async move {
            // Only the incarnation this call created, and only if no later call adopted it (an
            // adoption re-puts the key): either belongs to a later call.
            let request = pb::TxnRequest {
                compare: vec![
                    compare_create(&key, create_revision),
                    compare_mod(&key, create_revision),
                ],
                success: vec![delete_op(&key)],
                failure: Vec::new(),
            };
            if let Err(status) = txn(&api, request).await {
                tracing::warn!(key = ?key, error = %status.message(), "could not delete an abandoned waiter key");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_follow_etcd() {
        assert_eq!(prefix_end(b"a/"), Bytes::from_static(b"a0"));
        assert_eq!(prefix_end(b"a\xff"), Bytes::from_static(b"b"));
        assert_eq!(prefix_end(b"\xff\xff"), Bytes::from_static(b"\0"));
        assert_eq!(queue_prefix(b"job"), Bytes::from_static(b"job/"));
    }

    #[test]
    fn waiters_beyond_the_limit_are_refused_until_one_leaves() {
        let limit = WaiterLimit::new(2);
        let first = limit.admit().expect("room");
        let _second = limit.admit().expect("room");
        let refused = limit.admit().expect_err("full");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert_eq!(refused.message(), "etcdserver: too many requests");
        drop(first);
        let _third = limit.admit().expect("a slot was freed");
    }
}
