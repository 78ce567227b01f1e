//! A simulated disk: what survived the last fsync, plus the writes issued since.
//!
//! - **Latency**: writes land in the engine's view at once; making them durable takes an fsync,
//!   whose duration the simulator draws per node (`NodeConfig::fsync_ms_max`). A `Ready` that must
//!   sync holds back its messages, applies and `advance()` until then.
//! - **Unsynced data is lost on crash**: a crash keeps the durable state and a prefix of the
//!   unsynced writes (a real disk may have flushed some of them on its own, but in order: the model
//!   is an ordered journal). An engine that sends a message before the state it promises is synced
//!   is caught by exactly this.
//! - **An append is atomic**: the WAL (`yizhi-storage`) frames the records of one append as a
//!   batch that recovery keeps entirely or drops, so a crash keeps each unsynced write whole or
//!   loses it whole; with the ordered prefix above, the writes lost are always a suffix of the
//!   queue. The disk keeps a Ready's `Append` and `HardState` as separate writes, so a crash may
//!   keep one without the other: a superset of what the WAL allows (it writes them as one batch),
//!   and so still a sound test.

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

    /// Whether some unsynced append would overwrite entries the durable log already holds (a new
    /// leader's rewrite, or a Paxos acceptor re-accepting slots under a higher ballot): a crash
    /// now must leave the old entries or the new ones, never fewer.
    pub fn holds_rewrite_of_durable_entries(&self) -> bool {
        let durable = (self.durable.snapshot_ref().meta.index, self.durable.last_index());
        self.unsynced.iter().any(|write| match write {
            DiskWrite::Append(entries) => entries
                .first()
                .is_some_and(|e| e.index > durable.0 && e.index <= durable.1),
            _ => false,
        })
    }

    /// Power loss: the first `survivors` unsynced writes reached the platter whole, the rest is gone.
    pub fn crash(&mut self, survivors: usize) {
        let survivors = survivors.min(self.unsynced.len());
        let lost = self.unsynced.split_off(survivors);
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
        assert!(!d.holds_rewrite_of_durable_entries(), "2 extends the durable log");
        d.write(DiskWrite::HardState(HardState {
            term: 1,
            vote: Some(1),
            commit: 2,
        }));
        d.crash(0);
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
        d.crash(1);
        assert_eq!(d.durable().last_index(), 2);
        assert_eq!(d.durable().hard_state().commit, 0);
        assert_eq!(d.unsynced_len(), 0);
    }

    #[test]
    fn a_crash_keeps_an_append_whole_or_not_at_all() {
        let mut d = disk();
        d.write(DiskWrite::Append(vec![entry(1, 1), entry(2, 1), entry(3, 1)]));
        d.sync();
        // A new leader's rewrite of 2..=4: the old log survives, or all of the new one.
        d.write(DiskWrite::Append(vec![entry(2, 2), entry(3, 2), entry(4, 2)]));
        assert!(d.holds_rewrite_of_durable_entries());
        d.crash(0);
        let terms = |d: &Disk| -> Vec<u64> {
            (1..=d.durable().last_index())
                .map(|i| d.durable().term(i).expect("term"))
                .collect()
        };
        assert_eq!(terms(&d), [1, 1, 1]);
        d.write(DiskWrite::Append(vec![entry(2, 2), entry(3, 2), entry(4, 2)]));
        d.crash(1);
        assert_eq!(terms(&d), [1, 2, 2, 2]);
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
