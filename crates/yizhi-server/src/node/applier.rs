//! The applier: one OS thread that applies committed entries to the MVCC store, off the driver's
//! critical path. After each batch it wakes the watchers, answers the proposals that came from
//! this member and the reads whose index is now applied, and every `snapshot_count` entries (or
//! later, see [`SNAPSHOT_BYTES_PER_APPLIED_BYTE`]) it takes a snapshot so the driver can compact
//! the WAL.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use tokio::sync::oneshot;
use yizhi_engine::{EntryPayload, LogIndex, NodeId, Snapshot};

use super::fatal::fatal;
use super::request::{ProposeFailure, decode_entry};
use super::{Input, Shared};

/// A snapshot serializes the whole store, every revision of every key, so its cost grows with
/// the history while `snapshot_count` entries may be small: at 11k puts/s a 100k-entry interval
/// comes every 9 s, and with 1M revisions each snapshot is ~280 MB to write on every member. A
/// snapshot therefore also waits until the entries applied since the last one carry at least
/// 1/this of its size, which bounds the snapshot bytes written per applied byte (amortized) and
/// leaves the WAL at most that much longer than the state it replays onto.
pub const SNAPSHOT_BYTES_PER_APPLIED_BYTE: u64 = 2;

/// A read, answered `Ok` once the store has applied what the read must see.
pub type ReadReply = oneshot::Sender<Result<(), ProposeFailure>>;

#[derive(Debug)]
pub enum ApplyTask {
    Entries(Vec<yizhi_engine::Entry>),
    Snapshot(Snapshot),
    Reads {
        index: LogIndex,
        replies: Vec<ReadReply>,
    },
}

pub(crate) struct Applier<M> {
    pub tasks: Receiver<ApplyTask>,
    pub driver: Sender<Input<M>>,
    pub shared: Arc<Shared>,
    pub local_id: NodeId,
    /// Highest log index applied (noops and membership entries included).
    pub applied: LogIndex,
    pub last_snapshot_index: LogIndex,
    pub snapshot_count: u64,
    /// Size of the last snapshot taken or installed (0 before the first).
    pub last_snapshot_bytes: u64,
    /// Command bytes applied since then.
    pub applied_bytes_since_snapshot: u64,
    /// Reads waiting for `applied` to reach their index.
    pub parked_reads: BTreeMap<LogIndex, Vec<ReadReply>>,
}

impl<M> Applier<M> {
    pub fn run(mut self) {
        while let Ok(task) = self.tasks.recv() {
            match task {
                ApplyTask::Entries(entries) => self.apply_entries(entries),
                ApplyTask::Snapshot(snapshot) => self.install_snapshot(snapshot),
                ApplyTask::Reads { index, replies } => {
                    if index <= self.applied {
                        for reply in replies {
                            let _ = reply.send(Ok(()));
                        }
                    } else {
                        self.parked_reads.entry(index).or_default().extend(replies);
                    }
                }
            }
        }
        for (_, replies) in std::mem::take(&mut self.parked_reads) {
            for reply in replies {
                let _ = reply.send(Err(ProposeFailure::Stopped));
            }
        }
    }

    fn apply_entries(&mut self, entries: Vec<yizhi_engine::Entry>) {
        let mut answers = Vec::new();
        let mut events = Vec::new();
        {
            let mut store = self.shared.write_store();
            for entry in entries {
                assert!(
                    entry.index == self.applied + 1 || entry.index <= self.applied,
                    "entry {} handed out after {}",
                    entry.index,
                    self.applied
                );
                if entry.index <= self.applied || entry.index <= store.applied_index() {
                    // Replayed after a restart: the store has it already.
                    self.applied = self.applied.max(entry.index);
                    continue;
                }
                self.applied = entry.index;
                let EntryPayload::Normal(data) = &entry.payload else {
                    continue; // Noops and membership changes carry no command.
                };
                self.applied_bytes_since_snapshot += data.len() as u64;
                let (id, command_bytes, command) = match decode_entry(data) {
                    Ok(decoded) => decoded,
                    Err(e) => {
                        tracing::error!(index = entry.index, error = %e, "skipping an undecodable entry");
                        continue;
                    }
                };
                let applied = match store.apply(&command, entry.index) {
                    Ok(applied) => applied,
                    Err(e) => fatal(&format!("applying entry {}: {e}", entry.index)),
                };
                if !applied.events.is_empty() {
                    events.push(applied.events.clone());
                }
                if id.origin == self.local_id && id.request_id != 0 {
                    answers.push((id, command_bytes, applied));
                }
            }
            if let Err(e) = store.flush(false) {
                fatal(&format!("flushing the key-value backend: {e}"));
            }
        }
        if !events.is_empty() {
            let mut hub = self.shared.watch_hub.lock().expect("watch hub lock");
            for revision_events in &events {
                hub.notify(revision_events);
            }
            drop(hub);
            self.shared.deletions.notify(&events);
        }
        self.shared.wake_watchers();
        {
            // Only the waiter whose proposal this entry is: an entry an earlier boot of this member
            // proposed (replayed after a restart) names another boot id and answers nobody.
            let mut waiters = self.shared.waiters.lock().expect("waiters lock");
            for (id, command_bytes, applied) in answers {
                if let Some(reply) = waiters.take_applied(&id, &command_bytes) {
                    let _ = reply.send(Ok(applied)); // The client may have gone.
                }
            }
        }
        self.release_reads();
        self.shared.set_applied(self.applied);
        if self.snapshot_due() {
            self.take_snapshot();
        }
    }

    fn snapshot_due(&self) -> bool {
        snapshot_due(
            self.applied - self.last_snapshot_index,
            self.snapshot_count,
            self.applied_bytes_since_snapshot,
            self.last_snapshot_bytes,
        )
    }

    fn release_reads(&mut self) {
        while let Some(entry) = self.parked_reads.first_entry() {
            if *entry.key() > self.applied {
                break;
            }
            for reply in entry.remove() {
                let _ = reply.send(Ok(()));
            }
        }
    }

    fn install_snapshot(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        if index <= self.applied {
            return;
        }
        {
            let mut store = self.shared.write_store();
            if let Err(e) = store.install_snapshot(&snapshot.data) {
                fatal(&format!("installing the snapshot at {index}: {e}"));
            }
            if let Err(e) = store.flush(true) {
                fatal(&format!("flushing the installed snapshot: {e}"));
            }
        }
        tracing::info!(index, "installed a snapshot from the leader");
        self.applied = index;
        self.last_snapshot_index = index;
        self.last_snapshot_bytes = snapshot.data.len() as u64;
        self.applied_bytes_since_snapshot = 0;
        self.shared.wake_watchers();
        self.shared.deletions.notify_all();
        self.release_reads();
        self.shared.set_applied(index);
    }

    /// The WAL may only drop entries the backend holds durably: flush first, then snapshot.
    fn take_snapshot(&mut self) {
        {
            let mut store = self.shared.write_store();
            if let Err(e) = store.flush(true) {
                fatal(&format!("flushing before a snapshot: {e}"));
            }
        }
        // Serializing a large store takes seconds: under the read lock, so client reads (and the
        // async threads they run on, which the peer transport shares) go on meanwhile. Nothing
        // changes the store in between: this thread is its only writer.
        let data: Bytes = {
            let store = self.shared.read_store();
            match store.snapshot() {
                Ok(data) => Bytes::from(data),
                Err(e) => fatal(&format!("taking a snapshot: {e}")),
            }
        };
        self.last_snapshot_index = self.applied;
        self.last_snapshot_bytes = data.len() as u64;
        self.applied_bytes_since_snapshot = 0;
        let _ = self.driver.send(Input::Compact {
            index: self.applied,
            data,
        });
    }
}

/// The snapshot policy: `snapshot_count` entries since the last one, and enough applied bytes to
/// pay for it (see [`SNAPSHOT_BYTES_PER_APPLIED_BYTE`]).
fn snapshot_due(
    entries_since: u64,
    snapshot_count: u64,
    applied_bytes_since: u64,
    last_snapshot_bytes: u64,
) -> bool {
    entries_since >= snapshot_count
        && applied_bytes_since.saturating_mul(SNAPSHOT_BYTES_PER_APPLIED_BYTE) >= last_snapshot_bytes
}

#[cfg(test)]
mod tests {
    use super::snapshot_due;

    #[test]
    fn a_snapshot_waits_for_its_count_and_for_half_its_size_in_new_writes() {
        // The first snapshot (nothing taken yet) comes at the count.
        assert!(!snapshot_due(99, 100, 1 << 20, 0));
        assert!(snapshot_due(100, 100, 0, 0));
        // A 280 MB state: 100 entries of 300 B are not enough, 140 MB of them are.
        let state_bytes = 280_000_000;
        assert!(!snapshot_due(100, 100, 30_000, state_bytes));
        assert!(!snapshot_due(466_666, 100, 139_999_800, state_bytes));
        assert!(snapshot_due(466_667, 100, 140_000_100, state_bytes));
        // Bytes alone never trigger one before the count.
        assert!(!snapshot_due(50, 100, u64::MAX, 1));
    }
}
