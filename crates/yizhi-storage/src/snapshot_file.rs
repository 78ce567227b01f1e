//! Snapshot files: written under a temp name, fsynced, renamed, directory fsynced; verified on load.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use yizhi_engine::{LogIndex, Snapshot, SnapshotMeta, Term};

use crate::codec::{decode_membership, encode_membership, read_u32, read_u64};
use crate::error::{Result, WalError};
use crate::segment::{TEMP_SUFFIX, sync_dir};

pub const SNAPSHOT_MAGIC: [u8; 8] = *b"YIZHISNP";
pub const SNAPSHOT_VERSION: u32 = 1;
/// `magic[8] | version u32 | membership_len u32 | index u64 | term u64 | data_len u64 | data_crc32c u32`.
const FIXED_HEADER_BYTES: usize = 44;
/// Largest snapshot loaded into memory; a larger length field is corruption, not a reason to allocate.
pub const MAX_SNAPSHOT_DATA_BYTES: u64 = 4 * 1024 * 1024 * 1024;
const SNAPSHOT_PREFIX: &str = "snap-";
const SNAPSHOT_SUFFIX: &str = ".snap";

pub fn snapshot_path(dir: &Path, index: LogIndex, term: Term) -> PathBuf {
    dir.join(format!(
        "{SNAPSHOT_PREFIX}{index:016x}-{term:016x}{SNAPSHOT_SUFFIX}"
    ))
}

fn parse_snapshot_name(name: &str) -> Option<(LogIndex, Term)> {
    let stem = name
        .strip_prefix(SNAPSHOT_PREFIX)?
        .strip_suffix(SNAPSHOT_SUFFIX)?;
    let (index, term) = stem.split_once('-')?;
    if index.len() != 16 || term.len() != 16 {
        return None;
    }
    Some((
        u64::from_str_radix(index, 16).ok()?,
        u64::from_str_radix(term, 16).ok()?,
    ))
}

/// Layout: fixed header, membership (codec encoding), `meta_crc32c u32` over all of that, then data.
pub fn encode_snapshot(snapshot: &Snapshot) -> Vec<u8> {
    let mut out = encode_header(snapshot);
    out.extend_from_slice(&snapshot.data);
    out
}

/// Everything in the file before the data (which follows unchanged).
fn encode_header(snapshot: &Snapshot) -> Vec<u8> {
    let mut membership = Vec::new();
    encode_membership(&snapshot.meta.membership, &mut membership);
    let mut out = Vec::with_capacity(FIXED_HEADER_BYTES + membership.len() + 4);
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    out.extend_from_slice(&(membership.len() as u32).to_le_bytes());
    out.extend_from_slice(&snapshot.meta.index.to_le_bytes());
    out.extend_from_slice(&snapshot.meta.term.to_le_bytes());
    out.extend_from_slice(&(snapshot.data.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&snapshot.data).to_le_bytes());
    assert_eq!(out.len(), FIXED_HEADER_BYTES);
    out.extend_from_slice(&membership);
    let meta_crc = crc32c::crc32c(&out);
    out.extend_from_slice(&meta_crc.to_le_bytes());
    out
}

/// Decodes and verifies a whole snapshot file. Pure, so it can be fuzzed; the error is the reason.
pub fn decode_snapshot(bytes: &[u8]) -> Result<Snapshot, String> {
    let fixed = bytes.get(..FIXED_HEADER_BYTES).ok_or_else(|| {
        format!(
            "{} bytes is shorter than the {FIXED_HEADER_BYTES}-byte header",
            bytes.len()
        )
    })?;
    if fixed[0..8] != SNAPSHOT_MAGIC {
        return Err(format!("bad magic {:02x?}", &fixed[0..8]));
    }
    let version = read_u32(&fixed[8..12]);
    if version != SNAPSHOT_VERSION {
        return Err(format!("unsupported version {version}"));
    }
    let membership_len = read_u32(&fixed[12..16]) as usize;
    let meta_end = FIXED_HEADER_BYTES
        .checked_add(membership_len)
        .filter(|end| end.checked_add(4).is_some_and(|with_crc| with_crc <= bytes.len()))
        .ok_or_else(|| format!("membership length {membership_len} runs past the end of the file"))?;
    let stored_meta_crc = read_u32(&bytes[meta_end..meta_end + 4]);
    let computed_meta_crc = crc32c::crc32c(&bytes[..meta_end]);
    if stored_meta_crc != computed_meta_crc {
        return Err(format!(
            "header checksum mismatch: stored {stored_meta_crc:#010x}, computed {computed_meta_crc:#010x}"
        ));
    }
    let (membership, used) =
        decode_membership(&bytes[FIXED_HEADER_BYTES..meta_end]).map_err(|e| format!("membership: {e}"))?;
    if used != membership_len {
        return Err(format!("membership uses {used} of its {membership_len} bytes"));
    }
    let data_len = read_u64(&fixed[32..40]);
    let data = &bytes[meta_end + 4..];
    if data_len > MAX_SNAPSHOT_DATA_BYTES || data.len() as u64 != data_len {
        return Err(format!(
            "header says {data_len} data bytes, the file holds {}",
            data.len()
        ));
    }
    let stored_data_crc = read_u32(&fixed[40..44]);
    let computed_data_crc = crc32c::crc32c(data);
    if stored_data_crc != computed_data_crc {
        return Err(format!(
            "data checksum mismatch: stored {stored_data_crc:#010x}, computed {computed_data_crc:#010x}"
        ));
    }
    let meta = SnapshotMeta {
        index: read_u64(&fixed[16..24]),
        term: read_u64(&fixed[24..32]),
        membership,
    };
    Ok(Snapshot {
        meta,
        data: Bytes::copy_from_slice(data),
    })
}

/// Writes `snapshot` durably: temp file, fsync, rename, fsync of the directory.
pub fn write_snapshot(dir: &Path, snapshot: &Snapshot) -> Result<PathBuf> {
    let path = snapshot_path(dir, snapshot.meta.index, snapshot.meta.term);
    let temp = path.with_extension(&TEMP_SUFFIX[1..]);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)
        .map_err(|e| WalError::io("creating snapshot", &temp, e))?;
    // The header and the data separately: the data is the whole state machine (hundreds of MB
    // at a million keys), and joining them would hold it twice.
    file.write_all(&encode_header(snapshot))
        .and_then(|()| file.write_all(&snapshot.data))
        .map_err(|e| WalError::io("writing snapshot", &temp, e))?;
    file.sync_all()
        .map_err(|e| WalError::io("fsync of snapshot", &temp, e))?;
    drop(file);
    fs::rename(&temp, &path).map_err(|e| WalError::io("renaming snapshot", &temp, e))?;
    sync_dir(dir)?;
    Ok(path)
}

/// Loads and verifies a snapshot file; refuses one whose name and contents disagree.
pub fn read_snapshot(path: &Path) -> Result<Snapshot> {
    let bytes = fs::read(path).map_err(|e| WalError::io("reading snapshot", path, e))?;
    let corrupt = |reason: String| WalError::CorruptSnapshot {
        path: path.into(),
        reason,
    };
    let snapshot = decode_snapshot(&bytes).map_err(corrupt)?;
    let named = path
        .file_name()
        .and_then(|name| name.to_str())
        .and_then(parse_snapshot_name);
    if named != Some((snapshot.meta.index, snapshot.meta.term)) {
        return Err(corrupt(format!(
            "file name does not match its contents (index {}, term {})",
            snapshot.meta.index, snapshot.meta.term
        )));
    }
    Ok(snapshot)
}

/// Snapshot files in `dir` as (index, term, path), ascending by index.
pub fn list_snapshots(dir: &Path) -> Result<Vec<(LogIndex, Term, PathBuf)>> {
    let mut found = Vec::new();
    for item in fs::read_dir(dir).map_err(|e| WalError::io("listing", dir, e))? {
        let item = item.map_err(|e| WalError::io("listing", dir, e))?;
        if let Some((index, term)) = item.file_name().to_str().and_then(parse_snapshot_name) {
            found.push((index, term, item.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Removes snapshot files other than the one for (`index`, `term`) at or below `index`: a durable
/// marker for the newer snapshot makes them unreachable. Newer ones (written, marker not yet
/// durable) are left for the next snapshot to replace.
pub fn remove_superseded(dir: &Path, index: LogIndex, term: Term) -> Result<()> {
    for (old_index, old_term, path) in list_snapshots(dir)? {
        if old_index <= index && (old_index, old_term) != (index, term) {
            fs::remove_file(&path).map_err(|e| WalError::io("removing old snapshot", &path, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use yizhi_engine::Membership;

    fn sample() -> Snapshot {
        Snapshot {
            meta: SnapshotMeta {
                index: 12,
                term: 3,
                membership: Membership::new([1, 2, 3]).with_learners([4]),
            },
            data: Bytes::from_static(b"state machine image"),
        }
    }

    /// The file is written in two parts; it must be exactly what `encode_snapshot` describes.
    #[test]
    fn the_written_file_is_the_encoding() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_snapshot(dir.path(), &sample()).expect("write");
        assert_eq!(fs::read(&path).expect("read"), encode_snapshot(&sample()));
        assert_eq!(read_snapshot(&path).expect("load"), sample());
    }

    #[test]
    fn round_trips_and_every_byte_flip_is_refused() {
        let bytes = encode_snapshot(&sample());
        assert_eq!(decode_snapshot(&bytes), Ok(sample()));
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x41;
            assert!(decode_snapshot(&damaged).is_err(), "flip at {at} went unnoticed");
        }
        for cut in 0..bytes.len() {
            assert!(
                decode_snapshot(&bytes[..cut]).is_err(),
                "cut at {cut} went unnoticed"
            );
        }
    }

    #[test]
    fn names_round_trip() {
        let path = snapshot_path(Path::new("/d"), 12, 3);
        let name = path.file_name().and_then(|n| n.to_str()).expect("utf-8");
        assert_eq!(parse_snapshot_name(name), Some((12, 3)));
        assert_eq!(parse_snapshot_name("snap-12-3.snap"), None);
    }
}
