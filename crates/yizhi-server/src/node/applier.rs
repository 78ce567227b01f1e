//! The applier: one OS thread that applies committed entries to the MVCC store, off the driver's
//! critical path. After each batch it wakes the watchers, answers the proposals that came from
//! this member and the reads whose index is now applied, and every `snapshot_count` entries it
//! takes a snapshot so the driver can compact the WAL.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use tokio::sync::oneshot;
use yizhi_engine::{EntryPayload, LogIndex, NodeId, Snapshot};

use super::driver::fatal;
use super::request::{ProposeFailure, decode_proposal};
use super::{Input, Shared};

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
            let mut store = self.shared.store.write().expect("store lock");
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
                let (header, command) = match decode_proposal(data) {
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
                if header.origin == self.local_id && header.request_id != 0 {
                    answers.push((header.request_id, applied));
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
            let mut waiters = self.shared.waiters.lock().expect("waiters lock");
            for (request_id, applied) in answers {
                waiters.resolve(request_id, Ok(applied));
            }
        }
        self.release_reads();
        self.shared.set_applied(self.applied);
        if self.applied - self.last_snapshot_index >= self.snapshot_count {
            self.take_snapshot();
        }
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
            let mut store = self.shared.store.write().expect("store lock");
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
        self.shared.wake_watchers();
        self.shared.deletions.notify_all();
        self.release_reads();
        self.shared.set_applied(index);
    }

    /// The WAL may only drop entries the backend holds durably: flush first, then snapshot.
    fn take_snapshot(&mut self) {
        {
            let mut store = self.shared.store.write().expect("store lock");
            if let Err(e) = store.flush(true) {
                fatal(&format!("flushing before a snapshot: {e}"));
            }
        }
        // Serializing a large store takes seconds: under the read lock, so client reads (and the
        // async threads they run on, which the peer transport shares) go on meanwhile. Nothing
        // changes the store in between: this thread is its only writer.
        let data: Bytes = {
            let store = self.shared.store.read().expect("store lock");
            match store.snapshot() {
                Ok(data) => Bytes::from(data),
                Err(e) => fatal(&format!("taking a snapshot: {e}")),
            }
        };
        self.last_snapshot_index = self.applied;
        let _ = self.driver.send(Input::Compact {
            index: self.applied,
            data,
        });
    }
}
