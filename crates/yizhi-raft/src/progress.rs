//! The leader's view of each follower's log (etcd-io/raft's Progress), and the bounded window of
//! appends in flight to it.

use std::collections::VecDeque;

use yizhi_engine::LogIndex;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// Position unknown: one append at a time, waiting for its answer before the next.
    Probe,
    /// Position known: appends are pipelined up to the inflight window.
    Replicate,
    /// Too far behind for the log: a snapshot at `pending_index` is on its way.
    Snapshot { pending_index: LogIndex },
}

/// The last indexes of appends sent but not yet acknowledged, oldest first. Bounded so that a slow
/// follower cannot make the leader queue unbounded data in the network.
#[derive(Clone, Debug)]
pub struct Inflights {
    last_indexes: VecDeque<LogIndex>,
    capacity: usize,
}

impl Inflights {
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "an empty inflight window could never send");
        Inflights {
            last_indexes: VecDeque::with_capacity(capacity.min(64)),
            capacity,
        }
    }

    pub fn is_full(&self) -> bool {
        self.last_indexes.len() >= self.capacity
    }

    pub fn len(&self) -> usize {
        self.last_indexes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last_indexes.is_empty()
    }

    pub fn add(&mut self, last_index: LogIndex) {
        assert!(!self.is_full(), "inflight window overflow at {last_index}");
        if let Some(&newest) = self.last_indexes.back() {
            assert!(
                newest < last_index,
                "inflights must grow: {newest} then {last_index}"
            );
        }
        self.last_indexes.push_back(last_index);
    }

    /// Frees every append whose last index is at or below `acked_index`.
    pub fn free_up_to(&mut self, acked_index: LogIndex) {
        while self.last_indexes.front().is_some_and(|&i| i <= acked_index) {
            self.last_indexes.pop_front();
        }
    }

    pub fn clear(&mut self) {
        self.last_indexes.clear();
    }
}

#[derive(Clone, Debug)]
pub struct Progress {
    /// Highest index known to be replicated on the follower.
    /// Invariant: `matched < next`.
    pub matched: LogIndex,
    /// Next index to send.
    pub next: LogIndex,
    pub state: ProgressState,
    /// In Probe: an append is out, wait for its answer (or a heartbeat answer) before the next.
    pub probe_sent: bool,
    pub inflights: Inflights,
    /// Heard from since the last CheckQuorum (thesis §6.2).
    pub recent_active: bool,
    /// Ticks spent in Snapshot state; a snapshot lost in transit is retried after a bound.
    pub snapshot_elapsed_ticks: u64,
}

impl Progress {
    pub fn new(next: LogIndex, max_inflight_msgs: usize) -> Self {
        assert!(next >= 1, "next index starts at 1");
        Progress {
            matched: 0,
            next,
            state: ProgressState::Probe,
            probe_sent: false,
            inflights: Inflights::new(max_inflight_msgs),
            recent_active: false,
            snapshot_elapsed_ticks: 0,
        }
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.probe_sent = false;
        self.state = state;
        self.inflights.clear();
        self.snapshot_elapsed_ticks = 0;
    }

    pub fn become_probe(&mut self) {
        // After a snapshot, resume right after it (the follower must have at least that much).
        let next = match self.state {
            ProgressState::Snapshot { pending_index } => (self.matched + 1).max(pending_index + 1),
            _ => self.matched + 1,
        };
        self.reset_state(ProgressState::Probe);
        self.next = next;
        self.assert_invariants();
    }

    pub fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next = self.matched + 1;
        self.assert_invariants();
    }

    pub fn become_snapshot(&mut self, pending_index: LogIndex) {
        self.reset_state(ProgressState::Snapshot { pending_index });
    }

    /// Records an acknowledgement of `index`; false if it told us nothing new.
    pub fn maybe_update(&mut self, index: LogIndex) -> bool {
        let updated = index > self.matched;
        if updated {
            self.matched = index;
            self.probe_sent = false;
        }
        self.next = self.next.max(index + 1);
        self.assert_invariants();
        updated
    }

    /// Handles a rejected append of `rejected_index`. `hint_next` is where the follower's log may
    /// match (from its hint). Returns false when the rejection is stale (already handled).
    pub fn maybe_decrease_to(&mut self, rejected_index: LogIndex, hint_next: LogIndex) -> bool {
        if self.state == ProgressState::Replicate {
            // A rejection below what is known matched is a stale (reordered) reply.
            if rejected_index <= self.matched {
                return false;
            }
            self.next = self.matched + 1;
            return true;
        }
        // In Probe only the answer to the outstanding probe (at next - 1) counts.
        if self.next - 1 != rejected_index {
            return false;
        }
        self.next = hint_next.min(rejected_index).max(self.matched + 1);
        self.probe_sent = false;
        self.assert_invariants();
        true
    }

    /// Whether the leader must hold further appends to this follower.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.is_full(),
            ProgressState::Snapshot { .. } => true,
        }
    }

    /// Records that an append ending at `last_index` was sent.
    pub fn sent_entries(&mut self, last_index: Option<LogIndex>) {
        match self.state {
            ProgressState::Replicate => {
                if let Some(last) = last_index {
                    self.next = last + 1;
                    self.inflights.add(last);
                }
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot { .. } => {
                panic!("sending entries to a follower in snapshot state: {self:?}")
            }
        }
        self.assert_invariants();
    }

    pub fn assert_invariants(&self) {
        assert!(
            self.matched < self.next,
            "progress invariant matched < next broken: {self:?}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflights_free_in_order_and_report_full() {
        let mut window = Inflights::new(3);
        window.add(5);
        window.add(7);
        assert!(!window.is_empty() && !window.is_full());
        window.add(9);
        assert!(window.is_full());
        window.free_up_to(7);
        assert_eq!(window.len(), 1);
        window.free_up_to(100);
        assert!(window.is_empty());
    }

    #[test]
    fn replicate_rejection_resets_next_to_match_plus_one() {
        let mut pr = Progress::new(10, 4);
        pr.maybe_update(5);
        pr.become_replicate();
        pr.sent_entries(Some(9));
        assert_eq!(pr.next, 10);
        assert!(
            !pr.maybe_decrease_to(5, 3),
            "rejection at or below match is stale"
        );
        assert!(pr.maybe_decrease_to(8, 3));
        assert_eq!(pr.next, 6);
    }

    #[test]
    fn probe_only_accepts_rejection_of_outstanding_probe() {
        let mut pr = Progress::new(10, 4);
        pr.sent_entries(Some(12));
        assert!(pr.probe_sent);
        assert!(!pr.maybe_decrease_to(4, 2), "not the probe we sent");
        assert!(pr.maybe_decrease_to(9, 4));
        assert_eq!(pr.next, 4);
        assert!(!pr.probe_sent);
    }

    #[test]
    fn snapshot_state_pauses_and_resumes_after_snapshot_index() {
        let mut pr = Progress::new(3, 4);
        pr.become_snapshot(20);
        assert!(pr.is_paused());
        pr.become_probe();
        assert_eq!(pr.next, 21);
        assert!(!pr.is_paused());
    }

    #[test]
    fn duplicate_ack_tells_nothing_new() {
        let mut pr = Progress::new(10, 4);
        assert!(pr.maybe_update(5));
        assert!(!pr.maybe_update(5), "the same index again");
        assert!(!pr.maybe_update(3), "an older index");
        assert_eq!((pr.matched, pr.next), (5, 10));
        assert!(pr.maybe_update(12));
        assert_eq!((pr.matched, pr.next), (12, 13));
    }

    #[test]
    #[should_panic(expected = "progress invariant matched < next broken")]
    fn progress_with_next_at_matched_is_a_bug() {
        let mut pr = Progress::new(5, 4);
        pr.matched = 5;
        pr.assert_invariants();
    }
}
