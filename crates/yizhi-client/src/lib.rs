//! An async client for the etcd v3 API — it talks to yizhi and to etcd alike — and coordination
//! recipes built on it.
//!
//! - [`Client`]: endpoints with failover and a bounded retry policy ([`client`]), the KV facade
//!   ([`kv`]: get, put, delete, txn with builders), resumable watches ([`watch`]) and leases
//!   ([`lease`]).
//! - [`Session`]: a lease kept alive in the background, with a signal when it is lost.
//! - [`recipes`]: mutex, read-write lock, semaphore, leader election, barriers, queues and a
//!   config watcher, each with its protocol and guarantees in its module doc.
//!
//! - [`exactly_once`]: writes carry a client id and sequence number, so a yizhi server applies
//!   each once and the client may retry after an ambiguous failure.

pub mod client;
pub mod error;
pub mod exactly_once;
pub mod kv;
pub mod lease;
pub mod recipes;
pub mod session;
pub mod watch;

pub use client::{Client, ClientOptions, RequestMetadataHook, Retry};
pub use error::{Error, Result};
pub use kv::{
    Compare, CompareOp, DeleteOptions, GetOptions, Op, PutOptions, SortOrder, SortTarget, Txn, TxnResponseExt,
};
pub use lease::LeaseGrant;
pub use session::Session;
pub use watch::{EventType, WatchBatch, WatchOptions, Watcher};

/// etcd's protobuf messages, as the responses carry them.
pub mod pb {
    pub use yizhi_proto::etcdserverpb::*;
    pub use yizhi_proto::mvccpb::{Event, KeyValue};
}
