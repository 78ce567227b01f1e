//! Helpers shared by the storage integration tests.
#![allow(dead_code)]

pub mod corpus;
pub mod kill9;

use yizhi_storage::{WalConfig, WalStorageConfig};

/// A WAL small enough that a test's few hundred entries roll segments: `segment_kib` KiB
/// segments, records of at most `record_kib` KiB, `cache_kib` KiB of entries cached in memory.
pub fn small_wal_config(segment_kib: u64, record_kib: usize, cache_kib: u64) -> WalStorageConfig {
    WalStorageConfig {
        wal: WalConfig {
            segment_bytes: segment_kib * 1024,
            max_record_bytes: record_kib * 1024,
            ..WalConfig::default()
        },
        max_cached_entry_bytes: cache_kib * 1024,
    }
}
