//! Yizhi's MVCC key-value state machine: etcd v3's data model (revisions, ranges, txns,
//! compaction, leases, watches), deterministic and IO-free at its core.
//!
//! # What it is
//!
//! The replicated log carries [`Command`]s encoded with [`encode_command`]; every replica decodes
//! them ([`decode_command`], a pure function over bytes) and hands them to
//! [`MvccStore::apply`] with their log index. Given the same commands, every replica produces the
//! same responses and the same state ([`MvccStore::state_hash`]); no clock, randomness or IO is
//! consulted. Reads ([`MvccStore::range`]), lease queries and the [`WatchHub`] are local.
//!
//! The etcd API maps one to one: `RangeRequest` → [`RangeRequest`] / [`MvccStore::range`] (or
//! [`Command::Range`] for a read through the log), `Put`/`DeleteRange`/`Txn`/`Compact` →
//! [`Command`]s, `LeaseGrant`/`LeaseRevoke`/`LeaseKeepAlive` → commands,
//! `LeaseTimeToLive`/`LeaseLeases` → [`MvccStore::lease_time_to_live`] / [`MvccStore::lease_ids`],
//! `Watch` → [`WatchHub`]. Error messages are etcd's ([`KvError`]).
//!
//! # Modules
//!
//! - `types`: requests/responses mirroring etcd's protos; `revision`: `(main, sub)`; `command`:
//!   what the log carries ([`Command`]) and what applying it answers; `config`: [`KvConfig`] and
//!   the limits. Plain data at the bottom of the crate: the modules above import them, and
//!   they import none of those.
//! - `index`: the in-memory key index (etcd's `treeIndex`): per key, the revisions that wrote it.
//! - `store` (reads), `write` (put, delete, txn, compaction), `lease`, `apply` (the entry point).
//! - [`backend`]: the [`Backend`] trait and [`MemBackend`]. Values live there keyed by revision,
//!   as in etcd's `key` bucket; one applied entry is one [`backend::WriteBatch`] carrying its
//!   log index, so a transactional backend stores data and applied index atomically.
//! - [`redb_backend`]: [`RedbBackend`], the persistent backend (one redb file), and why it need
//!   not fsync each entry (the server's WAL is the durable record; see the module doc).
//! - [`codec`] and `wire`: the versioned binary command encoding; [`snapshot`]: whole-state
//!   snapshots with a CRC-32, restored with [`MvccStore::install_snapshot`].
//! - [`watch`]: the watch hub.
//! - `session`: client sessions, exactly-once application of retried writes
//!   ([`Command::Deduped`]); the table keeps its own books and never reaches into the store,
//!   `apply` drives it; `response_codec`: the encoding of the responses they keep.
//!
//! # Semantics, and where etcd was unclear
//!
//! - The store starts at revision 1; the first write is revision 2. A request that writes nothing
//!   (a delete that matched nothing, a txn of reads, a lease revoke with no keys, a grant) does
//!   not move the revision. A refused command still advances the applied index and nothing else.
//! - Range: `count` counts the keys in the range at the read revision *before* the min/max
//!   filters (as etcd's mvcc layer does); filters, then sort, then `limit`; `more` means the
//!   limit cut something. Sort order `NONE` with a non-key target sorts ascending; ascending by
//!   key needs no sort. Sorting is stable, so ties keep key order in both directions (etcd leaves
//!   ties unspecified). `keys_only` blanks values after sorting (so sorting by value works).
//!   The response revision is the store's current revision, not the read revision.
//! - An empty key is refused with "key is not provided" except together with `range_end = "\0"`,
//!   which means every key (etcd's clients send `"\0"` as key there; we accept both).
//!   A `range_end` at or below `key` selects nothing.
//! - Txn: as etcd, the compares of the txn *and of every nested txn* are evaluated against the
//!   state before the txn; the chosen path is then validated (leases exist, `ignore_*` keys
//!   exist, read revisions are valid) and only then executed, so a failing op fails the whole
//!   txn with nothing written. Ranges inside a txn see the txn's earlier writes. Limits: each of
//!   compare/success/failure may hold at most [`KvConfig::max_txn_ops`] (etcd's 128); nesting at
//!   most [`MAX_TXN_DEPTH`] (ours; etcd only bounds request size). Duplicate detection follows
//!   etcd's `checkIntervals`: within one op list, two puts of a key or a put inside a deleted
//!   range is a duplicate; overlapping deletes are fine; a nested txn contributes the writes of
//!   both its branches. All responses of a txn carry the revision the txn ended at.
//! - Compaction is synchronous: it drops every version no read at or above the compaction point
//!   can see. A delete *exactly at* the compaction point is kept until the next compaction, so a
//!   watch may start at the compact revision (etcd allows it) and still see that delete.
//! - Leases: IDs requested as 0 are assigned from a persisted counter (etcd uses random IDs;
//!   replicas must agree). Negative IDs are refused. TTLs are raised to
//!   [`KvConfig::min_lease_ttl_secs`] (etcd's minimum) and capped at [`MAX_LEASE_TTL_SECS`].
//!   Time is the leader's logical clock, carried in grant and keep-alive commands (`now_ms`);
//!   [`MvccStore::expired_leases`] tells the leader what to revoke, and the revoke is replicated.
//!   A keep-alive that reaches the store is replicated and never shortens an expiry; the server's
//!   leader answers most keep-alives from memory and replicates one only when the replicated
//!   expiry is within half a TTL (yizhi-server's `node::lessor`), and after a leader change it
//!   extends every lease before expiring any, as etcd's `Promote` does.
//! - Client sessions (Raft thesis §6.3; not in etcd, whose clients may apply a retried write
//!   twice): a command wrapped in [`Command::Deduped`] with a [`ClientSeq`] applies at most once
//!   per `(client_id, seq)`. The replicated session table keeps, per client, the floor below
//!   which the client promised never to retry and the response of every applied seq above it;
//!   a retry gets that response again, errors included, with nothing applied and no events.
//!   Sessions idle longer than [`KvConfig::client_idle_expiry_ms`] by the session clock (the
//!   largest `now_ms` any `Deduped` entry carried, so it never moves back) are forgotten; a
//!   request the table can no longer judge is refused ([`KvError::ClientSessionExpired`],
//!   [`KvError::SequenceAcknowledged`]). The table is bounded in clients, unacknowledged
//!   responses per client and bytes ([`MvccStore::session_stats`]); a request that would
//!   exceed a bound is refused *before* it applies, so it can be retried and still apply once.
//!   The table is part of snapshots, the state hash and both backends' atomic batches. Details
//!   and the one known gap (a client whose session expired before any request was
//!   acknowledged) are in the `session` module's documentation.
//! - Watch: see [`watch`]. A slow watcher is not cancelled; it stops buffering at its limit and
//!   catches up from history, and is cancelled (with the compact revision) only if compaction
//!   overtakes it.
//!
//! # Who uses it
//!
//! The simulator (`yizhi-sim`) applies it on every simulated node and judges the histories with
//! revisions; the server (`yizhi-server`) applies it on redb and translates etcd's gRPC messages
//! to and from these types (`api/convert.rs`).

mod apply;
pub mod backend;
pub mod codec;
mod command;
mod config;
mod error;
mod index;
mod lease;
pub mod redb_backend;
mod response_codec;
pub mod revision;
mod session;
pub mod snapshot;
mod store;
pub mod types;
pub mod watch;
mod wire;
mod write;

pub use backend::{Backend, BackendError, MemBackend, StoredResponse};
pub use codec::{
    COMMAND_CODEC_VERSION, RESPONSE_CODEC_VERSION, decode_command, decode_response, encode_command,
    encode_response,
};
pub use command::{Applied, Command, CommandResponse};
pub use config::{
    DEFAULT_CLIENT_IDLE_EXPIRY_MS, DEFAULT_MAX_CLIENT_SESSIONS, DEFAULT_MAX_SESSION_BYTES,
    DEFAULT_MAX_STORED_RESPONSE_BYTES, DEFAULT_MAX_TXN_OPS, DEFAULT_MAX_UNACKNOWLEDGED_PER_CLIENT,
    DEFAULT_MIN_LEASE_TTL_SECS, KvConfig, MAX_LEASE_TTL_SECS, MAX_TXN_DEPTH,
};
pub use error::KvError;
pub use redb_backend::{RedbBackend, RedbConfig};
pub use revision::{INITIAL_REVISION, Revision};
pub use session::{CLIENT_OVERHEAD_BYTES, RESPONSE_OVERHEAD_BYTES};
pub use snapshot::{SNAPSHOT_MAGIC, SNAPSHOT_VERSION, SnapshotError};
pub use store::MvccStore;
pub use types::*;
pub use watch::{WatchConfig, WatchError, WatchHub, WatchId, WatchRequest, WatchResponse};
pub use wire::DecodeError;
