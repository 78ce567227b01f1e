//! The configurations a Raft log holds (thesis §4.1): the committed one and every configuration
//! entry past the commit index, in index order. The last is the one in force; a truncation takes
//! back the entries it removed; a commit folds what it covers into the base.

use yizhi_engine::{LogIndex, LogPosition, Membership, Term};

/// Configuration entries the log may hold past its commit index before the node refuses to track
/// more: each leader allows one uncommitted change at a time, so a longer list is a bug.
pub const MAX_UNCOMMITTED_CONFIGS: usize = 1 << 10;

/// The configurations of the log: the one in force at `base_index` (committed; from the
/// snapshot or the log) and every configuration entry after it, in index order.
#[derive(Clone, Debug)]
pub(crate) struct ConfigLog {
    base: Membership,
    base_index: LogIndex,
    entries: Vec<(LogPosition, Membership)>,
}

impl ConfigLog {
    pub(crate) fn new(base: Membership, base_index: LogIndex) -> Self {
        ConfigLog {
            base,
            base_index,
            entries: Vec::new(),
        }
    }

    /// The configuration in force: the last one in the log.
    pub(crate) fn in_force(&self) -> &Membership {
        self.entries.last().map_or(&self.base, |(_, m)| m)
    }

    /// The index of the last configuration entry, if one is past the base.
    pub(crate) fn last_index(&self) -> Option<LogIndex> {
        self.entries.last().map(|(position, _)| position.index)
    }

    /// Every configuration entry up to this index is tracked (or folded into the base).
    pub(crate) fn tracked_through(&self) -> LogIndex {
        self.last_index().unwrap_or(self.base_index)
    }

    pub(crate) fn push(&mut self, position: LogPosition, membership: Membership) {
        assert!(
            position.index > self.last_index().unwrap_or(self.base_index),
            "configuration entry {position:?} out of order: {self:?}"
        );
        assert!(
            self.entries.len() < MAX_UNCOMMITTED_CONFIGS,
            "more than {MAX_UNCOMMITTED_CONFIGS} configuration entries past the commit index"
        );
        self.entries.push((position, membership));
    }

    /// Forgets the configuration entries a truncation removed: those whose term the log no longer
    /// holds at their index (Log Matching: same index and term, same entry).
    pub(crate) fn keep_held(&mut self, term_at: impl Fn(LogIndex) -> Option<Term>) {
        let held = self
            .entries
            .iter()
            .take_while(|(position, _)| term_at(position.index) == Some(position.term))
            .count();
        self.entries.truncate(held);
    }

    /// Folds the committed entries into the base: no truncation reaches them any more.
    pub(crate) fn committed_to(&mut self, commit: LogIndex) {
        let committed = self
            .entries
            .partition_point(|(position, _)| position.index <= commit);
        if let Some((position, membership)) = self.entries.drain(..committed).next_back() {
            self.base = membership;
            self.base_index = position.index;
        }
    }
}
