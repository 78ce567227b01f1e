//! Yizhi's durable storage: a segmented, checksummed write-ahead log with group commit, crash recovery and snapshot files.
//!
//! - [`Wal`]: thread-safe log of [`Record`]s — `append` (all or nothing), `sync`/`sync_to` (group commit: one
//!   fdatasync for every writer whose bytes were written before it started), `append_sync`,
//!   `release_through` (compaction), `read` by [`RecordLocation`], [`WalMetricsSnapshot`].
//! - [`WalStorage`]: the engine's `LogStorage` over a `Wal` and snapshot files, with `MemStorage`'s
//!   write methods (`append`, `set_hard_state`, `apply_snapshot`, `compact`) plus `sync` and
//!   `persist_ready` (step 1 of a `Ready`: its entries and hard state are one append, so a crash
//!   keeps all of them or none).
//!
//! # On-disk layout (one directory per node)
//!
//! ```text
//! LOCK                                  flock'd while a Wal is open (one process per directory)
//! 0000000000000001.wal ...              segments, sequence number in hex; contiguous, oldest first
//! snap-<index:016x>-<term:016x>.snap    snapshot files; the newest one named by the WAL is live
//! *.tmp                                 interrupted creations; removed on open
//! ```
//!
//! **Segment** (default 64 MiB, `WalConfig::segment_bytes`): created under a temp name with its header,
//! preallocated with fallocate to full size, fsynced, renamed, directory fsynced — so every segment file
//! has a valid header. Header, 32 bytes, little endian:
//! `magic "YIZHIWAL" | version u32 = 2 | reserved u32 | sequence u64 | crc32c u32 (of bytes 0..24) | reserved u32`.
//! Frames follow back to back; the never-written rest is zeros. Version 1 (no batches) is refused
//! with `WalError::UnsupportedVersion` naming the file: no version-1 WAL was ever deployed.
//!
//! **Record frame**: `len u32 | crc32c u32 | type u8 | body[len]`. The CRC32C (Castagnoli) is per
//! record, over `type ++ body`, not chained: segments are never reused and recovery zeroes a cut tail,
//! so stale records cannot follow the live ones. `len` is 1..=8 MiB (`codec::MAX_RECORD_BODY_BYTES`);
//! an all-zero frame header marks the end of the written log. Bodies:
//!
//! - type 1, entry: `index u64 | term u64 | kind u8 | payload` — kind 0 noop (empty), 1 normal (the
//!   bytes, to the end of the body), 2 membership (voters, outgoing voters, learners, each
//!   `count u32 | count × id u64`, strictly ascending, ids non-zero, at most 1024 per set).
//! - type 2, hard state: `term u64 | vote u64 (0 = none) | commit u64`.
//! - type 3, snapshot marker: `index u64 | term u64 | discard_suffix u8` — entries up to `index` are
//!   covered by `snap-<index>-<term>.snap`; `discard_suffix` = the install also dropped all later
//!   entries (the local log disagreed with the leader's snapshot).
//! - type 4, batch header: `records u32 | bytes u64` — the next `records` frames, `bytes` long in
//!   all, are one `Wal::append`, kept whole or not at all. Written before every append of two records
//!   or more (a single record is its own all-or-nothing unit); `records >= 2`, `bytes` between
//!   `records` smallest and largest frames and at most `MAX_BATCH_BYTES` (1 GiB). A batch never
//!   straddles segments: the segment rolls before a batch that does not fit, and a batch larger than
//!   `segment_bytes` gets a segment preallocated to fit it (`WalConfig::max_batch_bytes` bounds it;
//!   an append above it is refused with `WalError::BatchTooLarge` before anything is written).
//!
//! **Replay rules**: an entry record at index i supersedes every earlier record at >= i; the last hard
//! state wins; a marker drops entries <= its index (all entries if `discard_suffix`). Each new segment
//! starts by restating the current hard state and marker, so releasing older segments never loses them.
//!
//! **Durability**: a segment is fdatasynced before the next one is created, so only the last segment
//! can have a torn tail. A failed fsync or write poisons the `Wal`: every later call returns
//! `WalError::Fatal` and nothing is retried (fsyncgate).
//!
//! **Recovery**: segments are scanned in order. A batch counts only once all of its records are valid;
//! damage inside one stops the valid log at its header. Where the valid frames of a segment stop, the
//! rest is (a) all zeros: clean end; (b) in the last segment, damage followed by no valid frame up to
//! the end (for damage inside a batch: none after the batch's announced extent, because a disk may
//! persist the pages of one write out of order): a torn tail, cut from the record or batch header on
//! (zeroed, fsynced) and reported in `RecoveryReport::torn_tail`; (c) anything else — damage followed
//! by a valid frame, damage in an earlier segment, valid frames that contradict their batch header, a
//! bad segment header, a missing segment — is an error naming the file and the damaged frame's byte
//! offset, and nothing is dropped. Corollary: a bit flip in the very last record or batch is
//! indistinguishable from a torn write and is cut with a warning. A batch whose header page was lost
//! while later pages landed is reported as corruption, as before batches.
//!
//! **Snapshot file**: `magic "YIZHISNP" | version u32 = 1 | membership_len u32 | index u64 | term u64 |
//! data_len u64 | data crc32c u32 | membership | meta crc32c u32 (of everything before) | data`. Written
//! under a temp name, fsynced, renamed, directory fsynced, and only then is its marker appended and
//! synced; older snapshot files and covered segments are deleted after that. Loading verifies both
//! checksums, the lengths and that the name matches the contents.
//!
//! **Compaction**: `Wal::release_through(index)` deletes the oldest segments whose entries are all
//! `<= index`, stopping at the first one that must stay (only a prefix goes, which keeps replay exact)
//! and never the active one. Replay accepts that a remaining segment's entries may start above, or
//! truncate into, what was released; the final marker must cover every such gap or open fails.
//!
//! **Memory** (`WalStorage`): a 40-byte slot (term, location, size) per entry after the snapshot; whole
//! entries only for the newest `max_cached_entry_bytes` (default 16 MiB), older ones are read back from
//! their segment (CRC-checked) on demand; of the latest snapshot only its metadata (its data is read
//! from the snapshot file when a follower needs it).

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
pub use metrics::{WalMetrics, WalMetricsSnapshot};
pub use recovery::{RecoveryReport, TornTail};
pub use storage::{WalStorage, WalStorageConfig};
pub use wal::{RecordLocation, SyncFaults, Wal, WalConfig};
