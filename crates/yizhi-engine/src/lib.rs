//! The contract between Yizhi's consensus engines and everything that drives them.
//!
//! - [`Engine`]: the sans-IO interface (tick, step, propose, read_index, transfer, ready/advance).
//! - [`Ready`]: one batch of work, handled persist → send → apply → answer reads.
//! - [`LogStorage`]: read access to the durable log; [`MemStorage`] keeps it in memory.
//! - [`quorum`]: majority and joint quorum arithmetic shared by both engines.
//! - [`conf_change`]: configuration changes (joint for voters, one step for learners), shared too.
//! - [`SeededRng`]: the only source of randomness an engine may use.
//! - [`wire`]: the byte encoding of engine messages ([`WireMessage`]) and its shared building blocks.
//! - `testkit` (cargo feature `testkit`, for tests only): `MemCluster`, one in-memory cluster driver
//!   for every engine; and `wire::suite`, the codec property suite for every engine's messages.

pub mod conf_change;
pub mod engine;
pub mod quorum;
pub mod ready;
pub mod rng;
pub mod storage;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod types;
pub mod wire;

pub use conf_change::{ConfChange, ConfChangeError, ConfChangeKind};
pub use engine::{Engine, ProposeError, SnapshotStatus, TransferError};
pub use ready::Ready;
pub use rng::SeededRng;
pub use storage::{LogStorage, MemStorage, StorageError};
pub use types::*;
pub use wire::{WireError, WireMessage};
