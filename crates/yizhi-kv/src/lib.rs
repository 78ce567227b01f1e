//! Yizhi's MVCC key-value state machine (docs filled in below).

mod apply;
pub mod backend;
pub mod codec;
mod error;
mod index;
mod lease;
pub mod revision;
pub mod snapshot;
mod store;
pub mod types;
pub mod watch;
mod wire;
mod write;

pub use apply::{Applied, Command, CommandResponse};
pub use backend::{Backend, BackendError, MemBackend};
pub use codec::{COMMAND_CODEC_VERSION, decode_command, encode_command};
pub use error::KvError;
pub use revision::{INITIAL_REVISION, Revision};
pub use snapshot::{SNAPSHOT_MAGIC, SNAPSHOT_VERSION, SnapshotError};
pub use store::{
    DEFAULT_MAX_TXN_OPS, DEFAULT_MIN_LEASE_TTL_SECS, KvConfig, MAX_LEASE_TTL_SECS, MAX_TXN_DEPTH, MvccStore,
};
pub use types::*;
pub use watch::{WatchConfig, WatchError, WatchHub, WatchId, WatchRequest, WatchResponse};
pub use wire::DecodeError;
