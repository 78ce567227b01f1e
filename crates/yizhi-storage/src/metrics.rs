//! Counters that show whether group commit is working: fsyncs, and how many bytes each one covered.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct WalMetrics {
    appends: AtomicU64,
    appended_bytes: AtomicU64,
    fsyncs: AtomicU64,
    /// Bytes made durable, summed over fsyncs (each byte counted by the fsync that covered it).
    synced_bytes: AtomicU64,
    max_bytes_per_fsync: AtomicU64,
    fsync_nanos_total: AtomicU64,
}

/// A consistent-enough copy of the counters (each read is atomic, the set is not).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalMetricsSnapshot {
    pub appends: u64,
    pub appended_bytes: u64,
    pub fsyncs: u64,
    pub synced_bytes: u64,
    pub max_bytes_per_fsync: u64,
    pub fsync_nanos_total: u64,
}

impl WalMetricsSnapshot {
    pub fn mean_bytes_per_fsync(&self) -> u64 {
        self.synced_bytes.checked_div(self.fsyncs).unwrap_or(0)
    }
}

impl WalMetrics {
    pub fn record_append(&self, bytes: u64) {
        self.appends.fetch_add(1, Ordering::Relaxed);
        self.appended_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn record_fsync(&self, covered_bytes: u64, nanos: u64) {
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.synced_bytes.fetch_add(covered_bytes, Ordering::Relaxed);
        self.max_bytes_per_fsync
            .fetch_max(covered_bytes, Ordering::Relaxed);
        self.fsync_nanos_total.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> WalMetricsSnapshot {
        WalMetricsSnapshot {
            appends: self.appends.load(Ordering::Relaxed),
            appended_bytes: self.appended_bytes.load(Ordering::Relaxed),
            fsyncs: self.fsyncs.load(Ordering::Relaxed),
            synced_bytes: self.synced_bytes.load(Ordering::Relaxed),
            max_bytes_per_fsync: self.max_bytes_per_fsync.load(Ordering::Relaxed),
            fsync_nanos_total: self.fsync_nanos_total.load(Ordering::Relaxed),
        }
    }
}
