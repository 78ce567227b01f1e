//! Every way the WAL can fail, each naming the file (and where it matters, the byte offset) involved.

use std::io;
use std::path::PathBuf;

use yizhi_engine::{LogIndex, Term};

use crate::codec::DecodeError;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("corrupt WAL record in {path} at byte offset {offset}: {reason}")]
    CorruptRecord {
        path: PathBuf,
        offset: u64,
        reason: DecodeError,
    },
    #[error(
        "WAL segment {path} has format version {version}; this build reads only version {}",
        crate::codec::SEGMENT_VERSION
    )]
    UnsupportedVersion { path: PathBuf, version: u32 },
    #[error("corrupt WAL segment header in {path}: {reason}")]
    CorruptHeader { path: PathBuf, reason: DecodeError },
    #[error("WAL in {dir} is inconsistent: {reason}")]
    Inconsistent { dir: PathBuf, reason: String },
    #[error("snapshot file {path} refused: {reason}")]
    CorruptSnapshot { path: PathBuf, reason: String },
    #[error("no snapshot file for index {index} term {term} in {dir}, but the WAL refers to it")]
    MissingSnapshot {
        dir: PathBuf,
        index: LogIndex,
        term: Term,
    },
    #[error("record of {bytes} bytes exceeds the limit of {limit} bytes")]
    RecordTooLarge { bytes: usize, limit: usize },
    #[error("append of {records} records, {bytes} bytes, exceeds the batch limit of {limit} bytes")]
    BatchTooLarge { records: usize, bytes: u64, limit: u64 },
    #[error("{dir} already holds a WAL; open it instead of creating one")]
    AlreadyExists { dir: PathBuf },
    #[error("{dir} holds no WAL segment; create one first")]
    NotFound { dir: PathBuf },
    #[error("invalid WAL configuration: {0}")]
    BadConfig(String),
    /// A failed fsync or write leaves the page cache in an unknown state (fsyncgate, 2018): retrying
    /// could report durability that never happened. Only a restart and recovery from disk is safe.
    #[error("WAL is poisoned by an earlier failure and refuses all work until restarted: {cause}")]
    Fatal { cause: String },
}

impl WalError {
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        WalError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub fn is_fatal(&self) -> bool {
        matches!(self, WalError::Fatal { .. })
    }
}

pub type Result<T, E = WalError> = std::result::Result<T, E>;
