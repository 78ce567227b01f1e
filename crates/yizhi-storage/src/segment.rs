//! Segment files on disk: naming, atomic creation with a header, preallocation, listing.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::codec::{SEGMENT_HEADER_BYTES, encode_segment_header};
use crate::error::{Result, WalError};

pub const SEGMENT_SUFFIX: &str = ".wal";
/// Files being created end in this; a crash can leave one behind and open removes it.
pub const TEMP_SUFFIX: &str = ".tmp";

pub fn segment_path(dir: &Path, sequence: u64) -> PathBuf {
    dir.join(format!("{sequence:016x}{SEGMENT_SUFFIX}"))
}

/// Parses `0000000000000007.wal` into 7; anything else is not a segment.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(SEGMENT_SUFFIX)?;
    if stem.len() != 16 {
        return None;
    }
    u64::from_str_radix(stem, 16).ok()
}

/// Segment sequence numbers in `dir`, ascending, and the temp files left by an interrupted creation.
pub fn list_dir(dir: &Path) -> Result<(Vec<u64>, Vec<PathBuf>)> {
    let mut sequences = Vec::new();
    let mut temps = Vec::new();
    let read = fs::read_dir(dir).map_err(|e| WalError::io("listing", dir, e))?;
    for item in read {
        let item = item.map_err(|e| WalError::io("listing", dir, e))?;
        let name = item.file_name().to_string_lossy().into_owned();
        if let Some(sequence) = parse_segment_name(&name) {
            sequences.push(sequence);
        } else if name.ends_with(TEMP_SUFFIX) {
            temps.push(item.path());
        }
    }
    sequences.sort_unstable();
    Ok((sequences, temps))
}

/// fsync of a directory makes a rename or unlink in it durable (POSIX leaves it to the caller).
pub fn sync_dir(dir: &Path) -> Result<()> {
    let handle = File::open(dir).map_err(|e| WalError::io("opening directory", dir, e))?;
    handle
        .sync_all()
        .map_err(|e| WalError::io("fsync of directory", dir, e))
}

/// Reserves `len` bytes so that appends never change the file size: fdatasync then need not flush
/// a size change, and a full disk shows up when a segment is created, not mid-append.
pub fn preallocate(file: &File, path: &Path, len: u64) -> Result<()> {
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(()),
        // Some file systems (tmpfs on old kernels, some FUSE) cannot preallocate; a sparse file of the
        // right size keeps the layout identical, it only loses the early ENOSPC.
        Err(rustix::io::Errno::OPNOTSUPP) => file
            .set_len(len)
            .map_err(|e| WalError::io("extending segment", path, e)),
        Err(errno) => Err(WalError::io("preallocating segment", path, errno.into())),
    }
}

/// Creates segment `sequence` atomically: header and preallocation are fsynced under a temp name,
/// then renamed into place and the directory fsynced, so a segment file always has a valid header.
pub fn create_segment(dir: &Path, sequence: u64, segment_bytes: u64) -> Result<(File, PathBuf)> {
    assert!(
        segment_bytes > SEGMENT_HEADER_BYTES as u64,
        "segment of {segment_bytes} bytes"
    );
    let path = segment_path(dir, sequence);
    let temp = path.with_extension(&TEMP_SUFFIX[1..]);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)
        .map_err(|e| WalError::io("creating segment", &temp, e))?;
    file.write_all(&encode_segment_header(sequence))
        .map_err(|e| WalError::io("writing segment header", &temp, e))?;
    preallocate(&file, &temp, segment_bytes)?;
    file.sync_all()
        .map_err(|e| WalError::io("fsync of new segment", &temp, e))?;
    fs::rename(&temp, &path).map_err(|e| WalError::io("renaming new segment", &temp, e))?;
    sync_dir(dir)?;
    Ok((file, path))
}

pub fn open_segment(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| WalError::io("opening segment", path, e))
}

/// Cuts a torn tail off: everything from `valid_end` on reads as zeros again, durably. Returns the
/// file's new size: `segment_bytes`, or `valid_end` if that is more (a segment grown for a batch).
pub fn zero_tail(file: &File, path: &Path, valid_end: u64, segment_bytes: u64) -> Result<u64> {
    assert!(
        valid_end >= SEGMENT_HEADER_BYTES as u64,
        "valid end {valid_end} inside the header"
    );
    file.set_len(valid_end)
        .map_err(|e| WalError::io("truncating torn tail", path, e))?;
    let len = segment_bytes.max(valid_end);
    preallocate(file, path, len)?;
    file.sync_all()
        .map_err(|e| WalError::io("fsync after truncating torn tail", path, e))?;
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_strangers_are_ignored() {
        let path = segment_path(Path::new("/x"), 0xabc);
        let name = path.file_name().and_then(|n| n.to_str()).expect("utf-8 name");
        assert_eq!(name, "0000000000000abc.wal");
        assert_eq!(parse_segment_name(name), Some(0xabc));
        assert_eq!(parse_segment_name("abc.wal"), None);
        assert_eq!(parse_segment_name("0000000000000abc.tmp"), None);
        assert_eq!(parse_segment_name("zzzzzzzzzzzzzzzz.wal"), None);
    }
}
