//! A simulated disk: what survived the last fsync, plus the writes issued since.
//!
//! - **Latency**: writes land in the engine's view at once; making them durable takes an fsync,
//!   whose duration the simulator draws per node (`NodeConfig::fsync_ms_max`). A `Ready` that must
//!   sync holds back its messages, applies and `advance()` until then.
//! - **Unsynced data is lost on crash**: a crash keeps the durable state and a prefix of the
//!   unsynced writes (a real disk may have flushed some of them on its own, but in order: the model
//!   is an ordered journal). An engine that sends a message before the state it promises is synced
//!   is caught by exactly this.
//! - **Torn writes** (a per-seed knob): the first unsynced write that did not survive may survive
//!   in part. For an `Append` of several entries, a strict prefix of them reaches the log, as a WAL
//!   whose torn tail record fails its checksum and is cut on recovery. None of those entries was
//!   acknowledged (their messages wait for the fsync), so the engine must treat them like any other
//!   unacknowledged suffix. A torn hard state, snapshot or compaction fails its checksum and is
//!   simply lost, which the plain prefix model already covers.

use std::collections::VecDeque;

use bytes::Bytes;
use yizhi_engine::{Entry, HardState, LogIndex, LogStorage, MemStorage, Membership, Snapshot};

/// Writes waiting for an fsync. Readies are synced one at a time, so this stays small; a backlog
/// this large means the runtime stopped syncing.
pub const MAX_UNSYNCED_WRITES: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskWrite {
    InstallSnapshot(Snapshot),
    Append(Vec<Entry>),
    HardState(HardState),
    Compact {
        index: LogIndex,
        membership: Membership,
        data: Bytes,
    },
}

#[derive(Debug)]
pub struct Disk {
    durable: MemStorage,
    unsynced: VecDeque<DiskWrite>,
}

impl Disk {
    pub fn new(initial: MemStorage) -> Self {
        Disk {
            durable: initial,
            unsynced: VecDeque::new(),
        }
    }

    pub fn durable(&self) -> &MemStorage {
        &self.durable
    }

    pub fn unsynced_len(&self) -> usize {
        self.unsynced.len()
    }

    pub fn write(&mut self, write: DiskWrite) {
        assert!(
            self.unsynced.len() < MAX_UNSYNCED_WRITES,
            "{} unsynced writes: the runtime stopped syncing",
            self.unsynced.len()
        );
        self.unsynced.push_back(write);
    }

    /// Makes every issued write durable.
    pub fn sync(&mut self) {
        while let Some(write) = self.unsynced.pop_front() {
            apply(&mut self.durable, write);
        }
        assert!(self.unsynced.is_empty());
    }

    /// Only for `Mutation::ForgetVote`: a disk that does not keep what it promised.
    pub fn forget_vote(&mut self) {
        let mut hard_state = self.durable.hard_state();
        hard_state.vote = None;
        self.durable.set_hard_state(hard_state);
    }

    /// Only for `Mutation::ForgetPromise`: the term (a Paxos promise) is lost with the vote, as if
    /// the hard state never reached the platter.
    pub fn forget_promise(&mut self) {
        let mut hard_state = self.durable.hard_state();
        hard_state.term = 0;
        hard_state.vote = None;
        self.durable.set_hard_state(hard_state);
    }

    /// Whether some unsynced write is an append a crash could tear.
    pub fn holds_tearable_append(&self) -> bool {
        (0..self.unsynced.len()).any(|i| self.tearable_entries(i).is_some())
    }

    /// The first index and the entry count of the write after the first `survivors` unsynced
    /// ones, if it is an `Append` that could be torn (two entries or more).
    pub fn tearable_entries(&self, survivors: usize) -> Option<(LogIndex, usize)> {
        match self.unsynced.get(survivors) {
            Some(DiskWrite::Append(entries)) if entries.len() >= 2 => Some((entries[0].index, entries.len())),
            _ => None,
        }
    }

    /// Power loss: the first `survivors` unsynced writes reached the platter, then the first
    /// `torn_entries` entries of the next one (an `Append`, see [`Disk::tearable_entries`]); the
    /// rest is gone.
    pub fn crash(&mut self, survivors: usize, torn_entries: usize) {
        let survivors = survivors.min(self.unsynced.len());
        let mut lost = self.unsynced.split_off(survivors);
        if torn_entries > 0 {
            let Some(DiskWrite::Append(mut entries)) = lost.pop_front() else {
                panic!("only an append can be torn");
            };
            assert!(
                torn_entries < entries.len(),
                "a torn append keeps a strict prefix: {torn_entries} of {}",
                entries.len()
            );
            entries.truncate(torn_entries);
            self.unsynced.push_back(DiskWrite::Append(entries));
        }
        self.sync();
        drop(lost);
        assert!(self.unsynced.is_empty());
    }
}

/// Applies one write to a storage image; used for both the durable image and the engine's view.
pub fn apply(storage: &mut MemStorage, write: DiskWrite) {
    match write {
        DiskWrite::InstallSnapshot(snapshot) => storage.apply_snapshot(snapshot),
        DiskWrite::Append(entries) => storage.append(&entries),
        DiskWrite::HardState(hard_state) => storage.set_hard_state(hard_state),
        DiskWrite::Compact {
            index,
            membership,
            data,
        } => {
            // A snapshot installed from the leader may already cover this index.
            if index > storage.snapshot_ref().meta.index && index <= storage.last_index() {
                storage.compact(index, membership, data);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yizhi_engine::EntryPayload;

    fn entry(index: LogIndex, term: u64) -> Entry {
        Entry {
            index,
            term,
            payload: EntryPayload::Noop,
        }
    }

    fn disk() -> Disk {
        Disk::new(MemStorage::new_with_membership(Membership::new([1, 2, 3])))
    }

    #[test]
    fn crash_loses_everything_unsynced() {
        let mut d = disk();
        d.write(DiskWrite::Append(vec![entry(1, 1)]));
        d.sync();
        d.write(DiskWrite::Append(vec![entry(2, 1)]));
        d.write(DiskWrite::HardState(HardState {
            term: 1,
            vote: Some(1),
            commit: 2,
        }));
        d.crash(0, 0);
        assert_eq!(d.durable().last_index(), 1);
        assert_eq!(d.durable().hard_state(), HardState::default());
    }

    #[test]
    fn crash_keeps_an_ordered_prefix() {
        let mut d = disk();
        d.write(DiskWrite::Append(vec![entry(1, 1), entry(2, 1)]));
        d.write(DiskWrite::HardState(HardState {
            term: 1,
            vote: None,
            commit: 2,
        }));
        d.crash(1, 0);
        assert_eq!(d.durable().last_index(), 2);
        assert_eq!(d.durable().hard_state().commit, 0);
        assert_eq!(d.unsynced_len(), 0);
    }

    #[test]
    fn a_torn_append_keeps_a_prefix_of_its_entries() {
        let mut d = disk();
        d.write(DiskWrite::HardState(HardState {
            term: 2,
            vote: Some(1),
            commit: 0,
        }));
        d.write(DiskWrite::Append(vec![entry(1, 2), entry(2, 2), entry(3, 2)]));
        d.write(DiskWrite::Append(vec![entry(4, 2), entry(5, 2)]));
        assert_eq!(d.tearable_entries(0), None, "a hard state is not torn");
        assert_eq!(d.tearable_entries(1), Some((1, 3)));
        assert_eq!(d.tearable_entries(3), None);
        d.crash(1, 2);
        assert_eq!(d.durable().last_index(), 2);
        assert_eq!(d.durable().hard_state().term, 2);
    }

    #[test]
    #[should_panic(expected = "strict prefix")]
    fn tearing_a_whole_append_is_a_bug() {
        let mut d = disk();
        d.write(DiskWrite::Append(vec![entry(1, 1), entry(2, 1)]));
        d.crash(0, 2);
    }

    #[test]
    fn compact_is_skipped_when_a_snapshot_already_covers_it() {
        let mut d = disk();
        d.write(DiskWrite::Append(vec![entry(1, 1), entry(2, 1), entry(3, 1)]));
        d.write(DiskWrite::Compact {
            index: 2,
            membership: Membership::new([1, 2, 3]),
            data: Bytes::new(),
        });
        d.write(DiskWrite::Compact {
            index: 1,
            membership: Membership::new([1, 2, 3]),
            data: Bytes::new(),
        });
        d.sync();
        assert_eq!(d.durable().first_index(), 3);
    }
}
