//! Per-read consistency levels, chosen with gRPC metadata on a Range call.
//!
//! | metadata                                         | level                | what the member does                   |
//! |--------------------------------------------------|----------------------|----------------------------------------|
//! | none (and `serializable: false`)                 | linearizable         | read barrier (ReadIndex), then reads   |
//! | `serializable: true` in the request              | serializable         | reads its applied state at once        |
//! | `yizhi-consistency: linearizable`                | linearizable         | as above, whatever the request says    |
//! | `yizhi-consistency: serializable`                | serializable         |                                        |
//! | `yizhi-consistency: bounded` + `yizhi-max-staleness-ms: N` (or the latter alone) | bounded staleness | reads at once if a read barrier started at most N ms ago has completed here, else runs one first |
//!
//! The metadata, when present, decides over the request's `serializable` field, so a client can
//! pick a level without changing the etcd message. Every response carries the revision it was
//! served at in its header, as etcd's do.
//!
//! Why the bounded level is sound: a read barrier started at instant `s` and completed means this
//! member has applied every write acknowledged (by any member) before `s`. A read served while
//! `now - s <= N` therefore reflects every write acknowledged more than N ms before it started.
//! Barriers of linearizable reads keep `s` fresh on a busy member; an idle one pays one barrier.

use std::time::Duration;

use tonic::Status;
use tonic::metadata::MetadataMap;

/// Metadata key naming the level.
pub const CONSISTENCY_KEY: &str = "yizhi-consistency";
/// Metadata key with the staleness bound of a bounded read, in milliseconds.
pub const MAX_STALENESS_KEY: &str = "yizhi-max-staleness-ms";
/// Largest bound accepted: beyond an hour a caller wants a serializable read and should say so.
pub const MAX_STALENESS_LIMIT_MS: u64 = 3_600_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadLevel {
    Linearizable,
    Serializable,
    BoundedStaleness { max_staleness: Duration },
}

/// The level a Range asks for: metadata first, then etcd's `serializable` flag.
pub fn read_level(metadata: &MetadataMap, serializable_flag: bool) -> Result<ReadLevel, Status> {
    let level = text(metadata, CONSISTENCY_KEY)?;
    let staleness = text(metadata, MAX_STALENESS_KEY)?
        .map(|ms| {
            ms.parse::<u64>()
                .ok()
                .filter(|ms| *ms <= MAX_STALENESS_LIMIT_MS)
                .ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "yizhi: {MAX_STALENESS_KEY} must be a whole number of milliseconds \
                         from 0 to {MAX_STALENESS_LIMIT_MS}, got {ms:?}"
                    ))
                })
        })
        .transpose()?;
    let bounded = |ms: u64| ReadLevel::BoundedStaleness {
        max_staleness: Duration::from_millis(ms),
    };
    match (level.as_deref(), staleness) {
        (None, None) if serializable_flag => Ok(ReadLevel::Serializable),
        (None, None) => Ok(ReadLevel::Linearizable),
        (None | Some("bounded"), Some(ms)) => Ok(bounded(ms)),
        (Some("bounded"), None) => Err(Status::invalid_argument(format!(
            "yizhi: {CONSISTENCY_KEY}: bounded needs {MAX_STALENESS_KEY}"
        ))),
        (Some("linearizable"), None) => Ok(ReadLevel::Linearizable),
        (Some("serializable"), None) => Ok(ReadLevel::Serializable),
        (Some(level @ ("linearizable" | "serializable")), Some(_)) => Err(Status::invalid_argument(format!(
            "yizhi: {MAX_STALENESS_KEY} applies only to bounded reads, not {level}"
        ))),
        (Some(other), _) => Err(Status::invalid_argument(format!(
            "yizhi: {CONSISTENCY_KEY} must be linearizable, serializable or bounded, got {other:?}"
        ))),
    }
}

fn text(metadata: &MetadataMap, key: &str) -> Result<Option<String>, Status> {
    Ok(super::metadata_text(metadata, key)?.map(str::to_ascii_lowercase))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::api::metadata_of as metadata;

    #[test]
    fn without_metadata_the_etcd_flag_decides() {
        assert_eq!(
            read_level(&metadata(&[]), false).unwrap(),
            ReadLevel::Linearizable
        );
        assert_eq!(read_level(&metadata(&[]), true).unwrap(), ReadLevel::Serializable);
    }

    #[test]
    fn metadata_decides_over_the_flag() {
        let lin = metadata(&[(CONSISTENCY_KEY, "Linearizable")]);
        assert_eq!(read_level(&lin, true).unwrap(), ReadLevel::Linearizable);
        let ser = metadata(&[(CONSISTENCY_KEY, "serializable")]);
        assert_eq!(read_level(&ser, false).unwrap(), ReadLevel::Serializable);
        let bounded = metadata(&[(CONSISTENCY_KEY, "bounded"), (MAX_STALENESS_KEY, "250")]);
        assert_eq!(
            read_level(&bounded, true).unwrap(),
            ReadLevel::BoundedStaleness {
                max_staleness: Duration::from_millis(250)
            }
        );
        let implied = metadata(&[(MAX_STALENESS_KEY, "0")]);
        assert_eq!(
            read_level(&implied, false).unwrap(),
            ReadLevel::BoundedStaleness {
                max_staleness: Duration::ZERO
            }
        );
    }

    #[test]
    fn bad_metadata_is_invalid_argument_with_a_clear_text() {
        let cases = [
            &[(CONSISTENCY_KEY, "strong")][..],
            &[(CONSISTENCY_KEY, "bounded")][..],
            &[(MAX_STALENESS_KEY, "-5")][..],
            &[(MAX_STALENESS_KEY, "3600001")][..],
            &[(CONSISTENCY_KEY, "serializable"), (MAX_STALENESS_KEY, "5")][..],
        ];
        crate::api::assert_metadata_refused(&cases, |metadata| read_level(metadata, false));
    }
}
