//! Yizhi's durable storage: a segmented, checksummed write-ahead log with group commit, crash recovery and snapshot files.

pub mod codec;
pub mod entry_index;
pub mod error;
pub mod group_commit;
pub mod metrics;
pub mod recovery;
pub mod segment;
pub mod snapshot_file;
pub mod storage;
pub mod wal;

pub use codec::{Record, SnapshotMarker};
pub use error::WalError;
pub use metrics::WalMetricsSnapshot;
pub use recovery::{RecoveryReport, TornTail};
pub use storage::{WalStorage, WalStorageConfig};
pub use wal::{RecordLocation, SyncFaults, Wal, WalConfig};
