//! Whole-state snapshots: every kept revision, the leases and the meta row, so a restored replica
//! answers every read (including reads at past revisions) exactly as the source did.
//!
//! Layout: `SNAPSHOT_MAGIC`, version byte, meta, records in revision order, leases in ID order,
//! (version 2:) the session clients in ID order and their kept responses in `(client, seq)`
//! order, then a little-endian CRC-32 of everything before it. Version 2 also adds the session
//! clock to the meta. Version 1 images (no session table, clock 0) still install. The encoding is canonical (one state, one
//! byte string), which also makes it the input of [`MvccStore::state_hash`].

use std::collections::BTreeMap;

use bytes::Bytes;
use thiserror::Error;

use crate::backend::{
    Backend, BackendError, ClientRecord, FullState, LeaseRecord, Meta, RevisionRecord, SessionRows,
    check_record_shape,
};
use crate::response_codec::{decode_stored, encode_stored};
use crate::revision::Revision;
use crate::session::check_session_rows;
use crate::store::MvccStore;
use crate::wire::{DecodeError, Reader, Writer, crc32};

pub const SNAPSHOT_MAGIC: &[u8; 8] = b"YZKVSNAP";
/// The version written; versions 1 and 2 are read.
pub const SNAPSHOT_VERSION: u8 = 2;
const SNAPSHOT_VERSION_WITHOUT_SESSIONS: u8 = 1;
const CHECKSUM_BYTES: usize = 4;

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SnapshotError {
    #[error("snapshot is malformed: {0}")]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl<B: Backend> MvccStore<B> {
    pub fn snapshot(&self) -> Result<Vec<u8>, BackendError> {
        assert!(
            self.pending.records.is_empty(),
            "snapshot in the middle of an apply"
        );
        let mut w = Writer::default();
        w.buf.extend_from_slice(SNAPSHOT_MAGIC);
        w.u8(SNAPSHOT_VERSION);
        w.i64(self.meta.current_revision);
        w.i64(self.meta.compact_revision);
        w.varint(self.meta.applied_index);
        w.i64(self.meta.next_lease_id);
        w.varint(self.meta.session_clock_ms);
        // The count goes first, before the records are read: the index has one entry per record.
        let count = self.index.entry_count();
        w.varint(count);
        let mut written = 0u64;
        self.backend.for_each_record(&mut |revision, record| {
            w.i64(revision.main);
            w.i64(revision.sub);
            w.bytes(&record.key);
            w.flags(&[record.tombstone]);
            w.bytes(&record.value);
            w.i64(record.create_revision);
            w.i64(record.version);
            w.i64(record.lease);
            written += 1;
            Ok(())
        })?;
        if written != count {
            return Err(BackendError::Corrupt(format!(
                "the backend holds {written} records, the key index {count}"
            )));
        }
        w.varint(self.leases.len() as u64);
        for lease in self.leases.values() {
            w.i64(lease.id);
            w.i64(lease.granted_ttl_secs);
            w.varint(lease.expiry_ms);
        }
        let sessions = self.sessions.rows();
        w.varint(sessions.clients.len() as u64);
        for (id, client) in &sessions.clients {
            w.varint(*id);
            w.varint(client.floor);
            w.varint(client.last_seen_ms);
        }
        w.varint(sessions.responses.len() as u64);
        for ((id, seq), response) in &sessions.responses {
            w.varint(*id);
            w.varint(*seq);
            w.bytes(&encode_stored(response));
        }
        let checksum = crc32(&w.buf);
        w.buf.extend_from_slice(&checksum.to_le_bytes());
        Ok(w.buf)
    }

    /// Replaces this store's whole state with the snapshot's, after verifying its checksum and
    /// structure. On error the store is unchanged (unless the backend itself failed).
    pub fn install_snapshot(&mut self, data: &[u8]) -> Result<(), SnapshotError> {
        assert!(
            self.pending.records.is_empty(),
            "install in the middle of an apply"
        );
        let content = decode_snapshot(data)?;
        let meta = content.meta;
        self.backend.replace_all(content)?;
        self.load()?;
        assert_eq!(
            self.meta, meta,
            "the backend stored another meta than it was given"
        );
        Ok(())
    }

    /// FNV-1a 64 of the canonical snapshot: equal hashes mean equal replicated state.
    pub fn state_hash(&self) -> Result<u64, BackendError> {
        const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
        let bytes = self.snapshot()?;
        Ok(bytes
            .iter()
            .fold(FNV_OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)))
    }
}

fn decode_snapshot(data: &[u8]) -> Result<FullState, DecodeError> {
    let min_len = SNAPSHOT_MAGIC.len() + 1 + CHECKSUM_BYTES;
    if data.len() < min_len || !data.starts_with(SNAPSHOT_MAGIC) {
        return Err(DecodeError::BadMagic {
            what: "yizhi-kv snapshot",
        });
    }
    let (body, checksum) = data.split_at(data.len() - CHECKSUM_BYTES);
    let stored = u32::from_le_bytes([checksum[0], checksum[1], checksum[2], checksum[3]]);
    let computed = crc32(body);
    if stored != computed {
        return Err(DecodeError::Checksum { stored, computed });
    }
    let mut r = Reader::new(&body[SNAPSHOT_MAGIC.len()..]);
    let version = r.u8("snapshot version")?;
    if !(SNAPSHOT_VERSION_WITHOUT_SESSIONS..=SNAPSHOT_VERSION).contains(&version) {
        return Err(DecodeError::UnsupportedVersion {
            what: "snapshot",
            version,
        });
    }
    let with_sessions = version > SNAPSHOT_VERSION_WITHOUT_SESSIONS;
    let meta = Meta {
        current_revision: r.i64("current revision")?,
        compact_revision: r.i64("compact revision")?,
        applied_index: r.varint("applied index")?,
        next_lease_id: r.i64("next lease id")?,
        session_clock_ms: if with_sessions {
            r.varint("session clock")?
        } else {
            0
        },
    };
    let records = decode_records(&mut r)?;
    let lease_count = r.count("lease count")?;
    let mut leases = Vec::with_capacity(lease_count);
    for _ in 0..lease_count {
        leases.push(LeaseRecord {
            id: r.i64("lease id")?,
            granted_ttl_secs: r.i64("lease ttl")?,
            expiry_ms: r.varint("lease expiry")?,
        });
    }
    let sessions = if with_sessions {
        decode_sessions(&mut r)?
    } else {
        SessionRows::default()
    };
    r.finish("snapshot")?;
    validate(&meta, &records, &leases)?;
    check_session_rows(&sessions, meta.session_clock_ms).map_err(|detail| DecodeError::Invalid {
        what: "snapshot",
        detail,
    })?;
    Ok(FullState {
        meta,
        records,
        leases,
        sessions,
    })
}

fn decode_sessions(r: &mut Reader) -> Result<SessionRows, DecodeError> {
    let mut rows = SessionRows::default();
    let clients = r.count("session client count")?;
    rows.clients.reserve(clients);
    for _ in 0..clients {
        let id = r.varint("session client id")?;
        let record = ClientRecord {
            floor: r.varint("session floor")?,
            last_seen_ms: r.varint("session last seen")?,
        };
        rows.clients.push((id, record));
    }
    let responses = r.count("session response count")?;
    rows.responses.reserve(responses);
    for _ in 0..responses {
        let key = (r.varint("response client id")?, r.varint("response seq")?);
        let stored = decode_stored(&r.bytes("stored response")?)?;
        rows.responses.push((key, stored));
    }
    Ok(rows)
}

fn decode_records(r: &mut Reader) -> Result<Vec<(Revision, RevisionRecord)>, DecodeError> {
    let count = r.count("record count")?;
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        let revision = Revision::new(r.i64("record main")?, r.i64("record sub")?);
        let key = r.bytes("record key")?;
        let [tombstone] = r.flags("record flags")?;
        let record = RevisionRecord {
            key,
            tombstone,
            value: r.bytes("record value")?,
            create_revision: r.i64("record create")?,
            version: r.i64("record version")?,
            lease: r.i64("record lease")?,
        };
        records.push((revision, record));
    }
    Ok(records)
}

/// Structure a checksum cannot vouch for (a snapshot from a buggy writer): anything the index
/// would otherwise refuse with a panic is refused here with an error.
fn validate(
    meta: &Meta,
    records: &[(Revision, RevisionRecord)],
    leases: &[LeaseRecord],
) -> Result<(), DecodeError> {
    let invalid = |detail: String| DecodeError::Invalid {
        what: "snapshot",
        detail,
    };
    if meta.compact_revision > meta.current_revision || meta.current_revision < 1 {
        return Err(invalid(format!("meta {meta:?}")));
    }
    let mut last_tombstone: BTreeMap<&Bytes, bool> = BTreeMap::new();
    for (i, (revision, record)) in records.iter().enumerate() {
        if i > 0 && records[i - 1].0 >= *revision {
            return Err(invalid(format!("records out of order at {revision:?}")));
        }
        if revision.main < 1 || revision.main > meta.current_revision || revision.sub < 0 {
            return Err(invalid(format!("record revision {revision:?}")));
        }
        check_record_shape(*revision, record).map_err(|e| invalid(e.to_string()))?;
        let previous = last_tombstone.insert(&record.key, record.tombstone);
        if record.tombstone && previous == Some(true) {
            return Err(invalid(format!("two deletes in a row at {revision:?}")));
        }
    }
    for pair in leases.windows(2) {
        if pair[0].id >= pair[1].id {
            return Err(invalid(format!("leases out of order at {}", pair[1].id)));
        }
    }
    if leases.iter().any(|l| l.id <= 0 || l.granted_ttl_secs <= 0) {
        return Err(invalid("lease with a non-positive ID or TTL".to_string()));
    }
    Ok(())
}
