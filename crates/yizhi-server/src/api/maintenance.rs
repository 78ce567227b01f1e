//! `etcdserverpb.Maintenance`: Status, Alarm, Hash, HashKV, Snapshot, Defragment, MoveLeader,
//! Downgrade; and the space quota the KV service consults before a write.
//!
//! Where we differ from etcd, and why:
//! - **Alarms are member-local.** etcd replicates alarms through raft so every member refuses
//!   writes once any member is out of space. Here each member raises NOSPACE from its *own* db
//!   file size (members apply the same log, so their files grow alike) and keeps its alarm list
//!   in memory; ACTIVATE/DEACTIVATE change only the member asked. A restart clears the list;
//!   the next write that finds the file over quota raises the alarm again.
//! - **Snapshot** streams our own consistent image of the store, taken under the store's read
//!   lock at one applied index, followed by a sha256 of the image as the final message, as etcd
//!   does. Image layout: yizhi-kv's snapshot encoding (which carries its own CRC-32), zero
//!   padding, then the encoding's length as a little-endian u64, the whole a multiple of
//!   512 bytes, because etcdctl accepts a download only if `size % 512 == 32` (bbolt pages
//!   plus the digest). `etcdctl snapshot save` therefore works; `etcdctl snapshot
//!   restore/status` do not, since they open the file as bbolt.
//! - **HashKV** is a 32-bit fold of FNV-1a 64 over every stored record (revision, key, value,
//!   create revision, version, lease, tombstone) at or below the requested revision, so members
//!   with the same compaction point agree regardless of what they applied after it. **Hash**
//!   folds yizhi-kv's `state_hash` (the whole replicated state, leases and applied index too).
//! - **Defragment** compacts this member's redb file (flushing the backend durably first) under
//!   the store's write lock, so the applier, and every read of the store, waits until it is
//!   done: etcd's defrag likewise blocks the member's reads and writes meanwhile.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prost::Message;
use tonic::{Request, Response, Status};
use yizhi_kv::{Backend, KvError};
use yizhi_proto::etcdserverpb as pb;
use yizhi_proto::etcdserverpb::alarm_request::AlarmAction;
use yizhi_proto::etcdserverpb::{AlarmType, ResponseHeader};

use super::{Api, kv_status};

/// The etcd API level we speak, not Yizhi's version: etcd clients gate features on it.
pub const API_VERSION: &str = "3.5.0";
/// Blob bytes per snapshot message (etcd's `snapshotSendBufferSize`).
pub const SNAPSHOT_CHUNK_BYTES: usize = 32 * 1024;
/// A snapshot image is a multiple of this (etcd clients check `size % 512 == sha256 size`).
pub const SNAPSHOT_ALIGN_BYTES: usize = 512;
const SNAPSHOT_LENGTH_TRAILER_BYTES: usize = 8;
/// What etcd charges a put beyond its encoding (revision and bucket overhead, its `kvOverhead`).
pub const PUT_OVERHEAD_BYTES: usize = 256;
/// What etcd charges a lease grant (its `leaseOverhead`).
pub const LEASE_GRANT_COST_BYTES: usize = 64;
/// How often MoveLeader looks whether the transfer is done.
const MOVE_LEADER_POLL: Duration = Duration::from_millis(20);
pub const NO_SPACE_MESSAGE: &str = "etcdserver: mvcc: database space exceeded";
pub const NO_LEADER_MESSAGE: &str = "etcdserver: no leader";

/// This member's active alarms: `(member id, alarm type)`. Bounded: ids are checked against the
/// cluster spec and types against the two real alarms.
#[derive(Debug, Default)]
pub struct Alarms {
    active: Mutex<BTreeSet<(u64, i32)>>,
}

impl Alarms {
    /// Returns whether the alarm was newly raised.
    pub fn activate(&self, member_id: u64, alarm: AlarmType) -> bool {
        assert_ne!(alarm, AlarmType::None, "NONE is not an alarm");
        let mut active = self.active.lock().expect("alarms lock");
        let raised = active.insert((member_id, alarm as i32));
        assert!(active.len() <= 2 * crate::cluster::MAX_MEMBERS, "{active:?}");
        raised
    }

    /// Returns whether the alarm was active.
    pub fn deactivate(&self, member_id: u64, alarm: AlarmType) -> bool {
        self.active
            .lock()
            .expect("alarms lock")
            .remove(&(member_id, alarm as i32))
    }

    pub fn list(&self) -> Vec<pb::AlarmMember> {
        self.active
            .lock()
            .expect("alarms lock")
            .iter()
            .map(|&(member_id, alarm)| pb::AlarmMember { member_id, alarm })
            .collect()
    }

    pub fn no_space(&self) -> bool {
        self.active
            .lock()
            .expect("alarms lock")
            .iter()
            .any(|&(_, alarm)| alarm == AlarmType::Nospace as i32)
    }
}

fn no_space() -> Status {
    Status::resource_exhausted(NO_SPACE_MESSAGE)
}

/// The quota check before a write that costs `write_cost_bytes` (0 for a request that writes
/// nothing, which always passes, as in etcd): refused while a NOSPACE alarm is active, and the
/// alarm is raised when the db file plus the write would exceed `--quota-backend-bytes`.
pub fn check_space(api: &Api, write_cost_bytes: usize) -> Result<(), Status> {
    if write_cost_bytes == 0 {
        return Ok(());
    }
    if api.alarms.no_space() {
        return Err(no_space());
    }
    let db_bytes = db_size_bytes(api).map_err(|e| Status::internal(format!("etcdserver: {e}")))?;
    let quota_bytes = quota_bytes(api);
    if db_bytes.saturating_add(write_cost_bytes as u64) > quota_bytes {
        if api.alarms.activate(api.node.local_id(), AlarmType::Nospace) {
            tracing::warn!(
                db_bytes,
                quota_bytes,
                "database space exceeded: NOSPACE alarm raised"
            );
        }
        return Err(no_space());
    }
    Ok(())
}

/// etcd's quota cost of a put.
pub fn put_cost(request: &pb::PutRequest) -> usize {
    PUT_OVERHEAD_BYTES + request.encoded_len()
}

/// etcd's quota cost of a txn: its costlier branch's puts (nested txns included); 0 for a txn
/// that cannot write a key.
pub fn txn_cost(request: &pb::TxnRequest) -> usize {
    let branch = |ops: &[pb::RequestOp]| -> usize {
        ops.iter()
            .map(|op| match &op.request {
                Some(pb::request_op::Request::RequestPut(put)) => put_cost(put),
                Some(pb::request_op::Request::RequestTxn(txn)) => txn_cost(txn),
                _ => 0,
            })
            .sum()
    };
    branch(&request.success).max(branch(&request.failure))
}

/// `--quota-backend-bytes`; 0 means etcd's default, as in etcd.
fn quota_bytes(api: &Api) -> u64 {
    match api.config.quota_backend_bytes {
        0 => crate::config::DEFAULT_QUOTA_BACKEND_BYTES,
        quota => quota,
    }
}

/// Size of the redb file. It trails the store by at most one applied batch: the applier writes
/// the backend's memory overlay to redb (without fsync) after every batch.
pub fn db_size_bytes(api: &Api) -> std::io::Result<u64> {
    Ok(std::fs::metadata(&api.db_path)?.len())
}

#[derive(Debug)]
pub struct MaintenanceService {
    api: Api,
}

impl MaintenanceService {
    pub fn new(api: Api) -> Self {
        MaintenanceService { api }
    }

    fn header(&self) -> ResponseHeader {
        self.api.header(self.api.current_revision())
    }

    /// Runs `read` on the store on a blocking thread: hashing and snapshots read every record,
    /// and hold the store's read lock (pausing the applier) while they do.
    async fn with_store<T: Send + 'static>(
        &self,
        read: impl FnOnce(&crate::node::Store) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        let shared = self.api.node.shared.clone();
        tokio::task::spawn_blocking(move || read(&shared.read_store()))
            .await
            .map_err(|e| Status::internal(format!("etcdserver: {e}")))?
    }

    fn alarm_target(&self, request: &pb::AlarmRequest) -> Result<(u64, AlarmType), Status> {
        let alarm = match AlarmType::try_from(request.alarm) {
            Ok(AlarmType::Nospace) => AlarmType::Nospace,
            Ok(AlarmType::Corrupt) => AlarmType::Corrupt,
            _ => return Err(Status::invalid_argument("etcdserver: unknown alarm type")),
        };
        if self.api.node.cluster.member(request.member_id).is_none() {
            return Err(Status::not_found("etcdserver: member not found"));
        }
        Ok((request.member_id, alarm))
    }

    /// Waits until `target` leads, as etcd's MoveLeader does.
    async fn await_leader(&self, target: u64) -> Result<(), Status> {
        let deadline = Instant::now() + self.api.node.request_timeout;
        while self.api.node.shared.status().leader != Some(target) {
            if Instant::now() >= deadline {
                return Err(Status::unavailable(
                    "etcdserver: request timed out, leader transfer took too long",
                ));
            }
            tokio::time::sleep(MOVE_LEADER_POLL).await;
        }
        Ok(())
    }
}

type SnapshotStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::maintenance_server::Maintenance for MaintenanceService {
    async fn alarm(&self, request: Request<pb::AlarmRequest>) -> Result<Response<pb::AlarmResponse>, Status> {
        let request = request.into_inner();
        let alarms = &self.api.alarms;
        let changed = match AlarmAction::try_from(request.action) {
            Ok(AlarmAction::Get) => alarms.list(),
            Ok(AlarmAction::Activate) => {
                let (member_id, alarm) = self.alarm_target(&request)?;
                alarms.activate(member_id, alarm);
                vec![pb::AlarmMember {
                    member_id,
                    alarm: alarm as i32,
                }]
            }
            Ok(AlarmAction::Deactivate) => {
                let (member_id, alarm) = self.alarm_target(&request)?;
                match alarms.deactivate(member_id, alarm) {
                    true => vec![pb::AlarmMember {
                        member_id,
                        alarm: alarm as i32,
                    }],
                    false => Vec::new(),
                }
            }
            Err(_) => return Err(Status::invalid_argument("etcdserver: unknown alarm action")),
        };
        Ok(Response::new(pb::AlarmResponse {
            header: Some(self.header()),
            alarms: changed,
        }))
    }

    async fn status(&self, _: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let status = self.api.node.shared.status();
        let db_size = db_size_bytes(&self.api).map_err(|e| Status::internal(format!("etcdserver: {e}")))?;
        let mut errors = Vec::new();
        if status.leader.is_none() {
            errors.push(NO_LEADER_MESSAGE.to_string());
        }
        for alarm in self.api.alarms.list() {
            let name = AlarmType::try_from(alarm.alarm).map_or("UNKNOWN", |a| a.as_str_name());
            errors.push(format!("memberID:{} alarm:{name}", alarm.member_id));
        }
        let db_size = i64::try_from(db_size).unwrap_or(i64::MAX);
        Ok(Response::new(pb::StatusResponse {
            header: Some(self.header()),
            version: API_VERSION.to_string(),
            db_size,
            // redb's free pages are not visible through the backend: the file size is the bound.
            db_size_in_use: db_size,
            leader: status.leader.unwrap_or(0),
            raft_index: status.last_index,
            raft_term: status.term,
            raft_applied_index: self.api.node.shared.applied(),
            errors,
            is_learner: false,
        }))
    }

    async fn defragment(
        &self,
        _: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        let shared = self.api.node.shared.clone();
        let started = Instant::now();
        // The write lock pauses the applier (and reads) for the whole compaction, as etcd's
        // defrag blocks writes: redb compacts only with no read transaction open, and the
        // store holds its read snapshot between commands.
        let report = tokio::task::spawn_blocking(move || shared.write_store().defragment())
            .await
            .map_err(|e| Status::internal(format!("etcdserver: {e}")))?
            .map_err(|e| kv_status(&KvError::Backend(e)))?;
        tracing::info!(
            size_before_bytes = report.size_before_bytes,
            size_after_bytes = report.size_after_bytes,
            took_ms = started.elapsed().as_millis() as u64,
            "defragmented the key-value backend"
        );
        Ok(Response::new(pb::DefragmentResponse {
            header: Some(self.header()),
        }))
    }

    async fn hash(&self, _: Request<pb::HashRequest>) -> Result<Response<pb::HashResponse>, Status> {
        let hash = self
            .with_store(|store| store.state_hash().map_err(|e| kv_status(&KvError::Backend(e))))
            .await?;
        Ok(Response::new(pb::HashResponse {
            header: Some(self.header()),
            hash: fold_to_u32(hash),
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        let requested = request.into_inner().revision;
        let (hash, compact_revision, hash_revision, current) = self
            .with_store(move |store| {
                let (current, compacted) = (store.current_revision(), store.compact_revision());
                let revision = if requested <= 0 { current } else { requested };
                if revision > current {
                    return Err(kv_status(&KvError::FutureRevision));
                }
                if requested > 0 && revision <= compacted {
                    return Err(kv_status(&KvError::Compacted {
                        compact_revision: compacted,
                    }));
                }
                let records = store
                    .backend()
                    .all_records()
                    .map_err(|e| kv_status(&KvError::Backend(e)))?;
                Ok((hash_records(&records, revision), compacted, revision, current))
            })
            .await?;
        Ok(Response::new(pb::HashKvResponse {
            header: Some(self.api.header(current)),
            hash,
            compact_revision,
            hash_revision,
        }))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        // Stronger than etcd (which saves whatever its member has applied): the image holds every
        // write acknowledged before the call, whichever member serves it.
        self.api.read_barrier(self.api.deadline(&request)).await?;
        let header = self.header();
        let (data, digest) = self
            .with_store(|store| {
                let data = store.snapshot().map_err(|e| kv_status(&KvError::Backend(e)))?;
                let data = snapshot_image(data);
                let digest = sha256::digest(&data);
                Ok((data, digest))
            })
            .await?;
        Ok(Response::new(snapshot_stream(data, digest, header)))
    }

    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        let target = request.into_inner().target_id;
        let local = self.api.node.local_id();
        if self.api.node.shared.status().leader != Some(local) {
            return Err(Status::failed_precondition("etcdserver: not leader"));
        }
        if self.api.node.cluster.member(target).is_none() {
            return Err(Status::failed_precondition("etcdserver: bad leader transferee"));
        }
        if target != local {
            self.api
                .node
                .transfer_leadership(target)
                .await
                .map_err(|e| Status::failed_precondition(format!("etcdserver: {e}")))?;
            self.await_leader(target).await?;
        }
        Ok(Response::new(pb::MoveLeaderResponse {
            header: Some(self.header()),
        }))
    }

    async fn downgrade(
        &self,
        _: Request<pb::DowngradeRequest>,
    ) -> Result<Response<pb::DowngradeResponse>, Status> {
        Err(Status::unimplemented(
            "etcdserver: cluster downgrade is not supported",
        ))
    }
}

/// `encoded`, zero padding, and `encoded`'s length (u64 LE), a multiple of
/// [`SNAPSHOT_ALIGN_BYTES`] in all.
pub fn snapshot_image(mut encoded: Vec<u8>) -> Vec<u8> {
    let length = encoded.len() as u64;
    let image_bytes = (encoded.len() + SNAPSHOT_LENGTH_TRAILER_BYTES).next_multiple_of(SNAPSHOT_ALIGN_BYTES);
    encoded.resize(image_bytes - SNAPSHOT_LENGTH_TRAILER_BYTES, 0);
    encoded.extend_from_slice(&length.to_le_bytes());
    assert!(encoded.len().is_multiple_of(SNAPSHOT_ALIGN_BYTES));
    encoded
}

/// The yizhi-kv snapshot encoding inside an image, or why the image is malformed.
pub fn snapshot_from_image(image: &[u8]) -> Result<&[u8], ImageError> {
    if image.is_empty() || !image.len().is_multiple_of(SNAPSHOT_ALIGN_BYTES) {
        return Err(ImageError::Unaligned(image.len()));
    }
    let (body, trailer) = image.split_at(image.len() - SNAPSHOT_LENGTH_TRAILER_BYTES);
    let length = u64::from_le_bytes(trailer.try_into().expect("8 bytes"));
    let length = usize::try_from(length)
        .ok()
        .filter(|&n| n <= body.len())
        .ok_or(ImageError::LengthBeyondImage(length))?;
    if body[length..].iter().any(|&b| b != 0) {
        return Err(ImageError::NonZeroPadding);
    }
    Ok(&body[..length])
}

/// Why a snapshot image is malformed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    #[error("{0} bytes is not a positive multiple of {SNAPSHOT_ALIGN_BYTES}")]
    Unaligned(usize),
    #[error("length trailer {0} exceeds the image")]
    LengthBeyondImage(u64),
    #[error("padding is not zero")]
    NonZeroPadding,
}

/// The snapshot in chunks (each telling how many bytes follow it), then its sha256 digest as a
/// last message with nothing remaining: the layout etcd's server sends and its clients save.
fn snapshot_stream(data: Vec<u8>, digest: [u8; 32], header: ResponseHeader) -> SnapshotStream {
    let total_bytes = data.len();
    let chunks = total_bytes.div_ceil(SNAPSHOT_CHUNK_BYTES);
    let blobs = (0..chunks).map(move |i| {
        let start = i * SNAPSHOT_CHUNK_BYTES;
        let end = (start + SNAPSHOT_CHUNK_BYTES).min(total_bytes);
        Ok(pb::SnapshotResponse {
            header: (i == 0).then_some(header),
            remaining_bytes: (total_bytes - end) as u64,
            blob: data[start..end].to_vec(),
        })
    });
    let checksum = std::iter::once(Ok(pb::SnapshotResponse {
        header: None,
        remaining_bytes: 0,
        blob: digest.to_vec(),
    }));
    Box::pin(tokio_stream::iter(blobs.chain(checksum)))
}

/// FNV-1a 64, fed incrementally.
struct Fnv64(u64);

impl Fnv64 {
    fn new() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn write_i64(&mut self, value: i64) {
        self.write(&value.to_le_bytes());
    }

    /// Length first, so that no two sequences of fields hash the same bytes.
    fn write_field(&mut self, bytes: &[u8]) {
        self.write(&(bytes.len() as u64).to_le_bytes());
        self.write(bytes);
    }
}

fn fold_to_u32(hash: u64) -> u32 {
    (hash >> 32) as u32 ^ hash as u32
}

/// HashKV's hash: every record at or below `revision`, in revision order.
fn hash_records(records: &[(yizhi_kv::Revision, yizhi_kv::backend::RevisionRecord)], revision: i64) -> u32 {
    let mut hash = Fnv64::new();
    for (at, record) in records.iter().take_while(|(at, _)| at.main <= revision) {
        hash.write_i64(at.main);
        hash.write_i64(at.sub);
        hash.write_field(&record.key);
        hash.write(&[u8::from(record.tombstone)]);
        hash.write_field(&record.value);
        hash.write_i64(record.create_revision);
        hash.write_i64(record.version);
        hash.write_i64(record.lease);
    }
    fold_to_u32(hash.0)
}

/// SHA-256 (FIPS 180-4), for the digest etcd's snapshot stream ends with.
mod sha256 {
    const ROUND_CONSTANTS: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    ];
    const INITIAL_STATE: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
    ];
    const BLOCK_BYTES: usize = 64;

    pub fn digest(data: &[u8]) -> [u8; 32] {
        let mut state = INITIAL_STATE;
        let mut blocks = data.chunks_exact(BLOCK_BYTES);
        for block in &mut blocks {
            compress(&mut state, block);
        }
        // Padding: 0x80, zeros, then the message length in bits, filling one or two blocks.
        let rest = blocks.remainder();
        let mut tail = [0u8; 2 * BLOCK_BYTES];
        tail[..rest.len()].copy_from_slice(rest);
        tail[rest.len()] = 0x80;
        let tail_len = if rest.len() + 1 + 8 <= BLOCK_BYTES {
            BLOCK_BYTES
        } else {
            2 * BLOCK_BYTES
        };
        let bit_len = (data.len() as u64).wrapping_mul(8);
        tail[tail_len - 8..tail_len].copy_from_slice(&bit_len.to_be_bytes());
        for block in tail[..tail_len].chunks_exact(BLOCK_BYTES) {
            compress(&mut state, block);
        }
        let mut out = [0u8; 32];
        for (word, bytes) in state.iter().zip(out.chunks_exact_mut(4)) {
            bytes.copy_from_slice(&word.to_be_bytes());
        }
        out
    }

    fn compress(state: &mut [u32; 8], block: &[u8]) {
        assert_eq!(block.len(), BLOCK_BYTES);
        let mut w = [0u32; 64];
        for (word, bytes) in w.iter_mut().zip(block.chunks_exact(4)) {
            *word = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let choice = (e & f) ^ (!e & g);
            let t1 = h
                .wrapping_add(s1)
                .wrapping_add(choice)
                .wrapping_add(ROUND_CONSTANTS[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let majority = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(majority);
            h = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (word, add) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *word = word.wrapping_add(add);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn sha256_matches_the_fips_vectors_at_every_padding_boundary() {
        assert_eq!(
            hex(&sha256::digest(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&sha256::digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // 56 bytes: the length no longer fits in the first block.
        assert_eq!(
            hex(&sha256::digest(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        assert_eq!(
            hex(&sha256::digest(&vec![b'a'; 1_000_000])),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
    }

    #[test]
    fn snapshot_stream_counts_down_and_ends_with_the_digest() {
        use tokio_stream::StreamExt;
        let data: Vec<u8> = (0..2 * SNAPSHOT_CHUNK_BYTES + 10).map(|i| i as u8).collect();
        let digest = sha256::digest(&data);
        let stream = snapshot_stream(data.clone(), digest, ResponseHeader::default());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let messages: Vec<pb::SnapshotResponse> =
            runtime.block_on(async { stream.map(|m| m.expect("no error")).collect::<Vec<_>>().await });
        let remaining: Vec<u64> = messages.iter().map(|m| m.remaining_bytes).collect();
        assert_eq!(remaining, vec![SNAPSHOT_CHUNK_BYTES as u64 + 10, 10, 0, 0]);
        assert!(messages[0].header.is_some());
        let body: Vec<u8> = messages[..3].iter().flat_map(|m| m.blob.clone()).collect();
        assert_eq!(body, data);
        assert_eq!(messages[3].blob, digest);
    }

    #[test]
    fn snapshot_images_are_aligned_and_give_back_the_encoding() {
        for len in [0, 1, 503, 504, 505, 512, 4096, 10_000] {
            let encoded: Vec<u8> = (0..len).map(|i| (i % 251) as u8 + 1).collect();
            let image = snapshot_image(encoded.clone());
            assert_eq!(image.len() % SNAPSHOT_ALIGN_BYTES, 0, "{len}");
            assert!(image.len() < len + SNAPSHOT_ALIGN_BYTES + SNAPSHOT_LENGTH_TRAILER_BYTES);
            assert_eq!(snapshot_from_image(&image), Ok(encoded.as_slice()), "{len}");
        }
        let mut image = snapshot_image(vec![7; 10]);
        image[11] = 1;
        assert!(snapshot_from_image(&image).is_err(), "non-zero padding");
        let mut image = snapshot_image(vec![7; 10]);
        let at = image.len() - 8;
        image[at..].copy_from_slice(&600u64.to_le_bytes());
        assert!(snapshot_from_image(&image).is_err(), "length beyond the image");
        assert!(snapshot_from_image(&[0; 100]).is_err(), "unaligned");
    }

    #[test]
    fn hash_kv_covers_records_up_to_the_revision_and_every_field() {
        use yizhi_kv::Revision;
        use yizhi_kv::backend::RevisionRecord;
        let record = |key: &str, value: &str| RevisionRecord {
            key: key.as_bytes().to_vec().into(),
            tombstone: false,
            value: value.as_bytes().to_vec().into(),
            create_revision: 2,
            version: 1,
            lease: 0,
        };
        let records = vec![
            (Revision::new(2, 0), record("a", "1")),
            (Revision::new(3, 0), record("b", "2")),
        ];
        assert_eq!(hash_records(&records, 2), hash_records(&records[..1], 5));
        assert_ne!(hash_records(&records, 2), hash_records(&records, 3));
        let mut other = records.clone();
        other[0].1.value = "x".as_bytes().to_vec().into();
        assert_ne!(hash_records(&records, 3), hash_records(&other, 3));
        // Field boundaries count: key "ab" + value "" differs from key "a" + value "b".
        let mut moved = records.clone();
        moved[0].1 = record("a1", "");
        assert_ne!(hash_records(&records, 3), hash_records(&moved, 3));
    }

    #[test]
    fn txn_cost_is_the_costlier_branch_of_puts() {
        let put = |key: &str| pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            })),
        };
        let range = pb::RequestOp {
            request: Some(pb::request_op::Request::RequestRange(pb::RangeRequest::default())),
        };
        let read_only = pb::TxnRequest {
            success: vec![range.clone()],
            ..Default::default()
        };
        assert_eq!(txn_cost(&read_only), 0);
        let writes = pb::TxnRequest {
            success: vec![put("a")],
            failure: vec![
                put("bb"),
                range,
                pb::RequestOp {
                    request: Some(pb::request_op::Request::RequestTxn(pb::TxnRequest {
                        success: vec![put("c")],
                        ..Default::default()
                    })),
                },
            ],
            ..Default::default()
        };
        let one_put = |key: &str| {
            put_cost(&pb::PutRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            })
        };
        assert_eq!(txn_cost(&writes), one_put("bb") + one_put("c"));
    }

    #[test]
    fn alarms_activate_once_and_deactivate() {
        let alarms = Alarms::default();
        assert!(!alarms.no_space());
        assert!(alarms.activate(2, AlarmType::Nospace));
        assert!(!alarms.activate(2, AlarmType::Nospace));
        assert!(alarms.activate(1, AlarmType::Corrupt));
        assert!(alarms.no_space());
        assert_eq!(alarms.list().len(), 2);
        assert!(alarms.deactivate(2, AlarmType::Nospace));
        assert!(!alarms.deactivate(2, AlarmType::Nospace));
        assert!(!alarms.no_space());
        assert_eq!(
            alarms.list(),
            vec![pb::AlarmMember {
                member_id: 1,
                alarm: AlarmType::Corrupt as i32
            }]
        );
    }
}
