//! Yizhi's durable storage: a segmented, checksummed write-ahead log with group commit, crash recovery and snapshot files.
