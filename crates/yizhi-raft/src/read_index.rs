//! Leader-side bookkeeping for linearizable reads without writing the log (thesis §6.4) and for the
//! leader lease (thesis §6.4.1).
//!
//! Every heartbeat broadcast opens a numbered confirmation round. Reads registered before a round
//! is sent ride on it; when a quorum acknowledges round `r`, the leader knows it was still leader
//! when `r` was sent, so every read registered before `r` is safe at the commit index it recorded.
//! The send time of the newest confirmed round also starts the lease.

use std::collections::{BTreeSet, VecDeque};

use yizhi_engine::{LogIndex, NodeId};

/// Confirmation rounds kept waiting for acknowledgements. Older ones are dropped: a later round's
/// confirmation confirms everything before it, so dropping only delays.
pub const MAX_CONFIRM_ROUNDS: usize = 64;

#[derive(Clone, Debug)]
struct ConfirmRound {
    round: u64,
    sent_at_tick: u64,
    acks: BTreeSet<NodeId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingRead {
    pub read_id: u64,
    /// The leader's commit index when the read arrived: the read is answered at or after it.
    pub index: LogIndex,
    /// Who asked: the leader itself or a follower that forwarded it.
    pub from: NodeId,
    round: u64,
}

#[derive(Clone, Debug)]
pub struct ReadTracker {
    /// The round that the next heartbeat broadcast will open.
    next_round: u64,
    rounds: VecDeque<ConfirmRound>,
    /// Invariant: ordered by round.
    pending: VecDeque<PendingRead>,
    /// Tick at which the newest confirmed round was sent.
    pub lease_start_tick: Option<u64>,
}

impl Default for ReadTracker {
    fn default() -> Self {
        ReadTracker {
            next_round: 1,
            rounds: VecDeque::new(),
            pending: VecDeque::new(),
            lease_start_tick: None,
        }
    }
}

impl PendingRead {
    /// A read answered without a confirmation round (lease, or single-voter cluster).
    pub fn immediate(read_id: u64, index: LogIndex, from: NodeId) -> Self {
        PendingRead {
            read_id,
            index,
            from,
            round: 0,
        }
    }
}

impl ReadTracker {
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Registers a read to ride on the next round. The caller must broadcast a heartbeat soon.
    pub fn add_read(&mut self, read_id: u64, index: LogIndex, from: NodeId) {
        let round = self.next_round;
        if let Some(last) = self.pending.back() {
            assert!(last.round <= round, "pending reads out of round order");
        }
        self.pending.push_back(PendingRead {
            read_id,
            index,
            from,
            round,
        });
    }

    /// Opens a round for a heartbeat broadcast sent now; returns its number.
    pub fn open_round(&mut self, now_tick: u64, leader: NodeId) -> u64 {
        let round = self.next_round;
        self.next_round += 1;
        if self.rounds.len() >= MAX_CONFIRM_ROUNDS {
            self.rounds.pop_front();
        }
        self.rounds.push_back(ConfirmRound {
            round,
            sent_at_tick: now_tick,
            acks: BTreeSet::from([leader]),
        });
        round
    }

    /// Whether there are reads waiting for a round that has not been sent yet.
    pub fn needs_round(&self) -> bool {
        self.pending
            .back()
            .is_some_and(|read| read.round >= self.next_round)
    }

    /// Records `from`'s acknowledgement of `round`. `has_quorum` decides whether a set of acks is
    /// a quorum. Returns the reads that became safe.
    pub fn ack(
        &mut self,
        round: u64,
        from: NodeId,
        has_quorum: impl Fn(&BTreeSet<NodeId>) -> bool,
    ) -> Vec<PendingRead> {
        let Some(position) = self.rounds.iter().position(|r| r.round == round) else {
            return Vec::new();
        };
        self.rounds[position].acks.insert(from);
        if !has_quorum(&self.rounds[position].acks) {
            return Vec::new();
        }
        self.confirm(position)
    }

    /// For a cluster where the leader alone is a quorum: the newest round is confirmed at once.
    pub fn confirm_newest(&mut self) -> Vec<PendingRead> {
        match self.rounds.len() {
            0 => Vec::new(),
            n => self.confirm(n - 1),
        }
    }

    fn confirm(&mut self, position: usize) -> Vec<PendingRead> {
        let confirmed = self.rounds[position].clone();
        self.rounds.drain(..=position);
        assert!(
            self.lease_start_tick.is_none_or(|t| t <= confirmed.sent_at_tick),
            "rounds confirmed out of order: lease {:?} then {}",
            self.lease_start_tick,
            confirmed.sent_at_tick
        );
        self.lease_start_tick = Some(confirmed.sent_at_tick);
        let mut released = Vec::new();
        while self
            .pending
            .front()
            .is_some_and(|read| read.round <= confirmed.round)
        {
            released.extend(self.pending.pop_front());
        }
        released
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn majority_of_three(acks: &BTreeSet<NodeId>) -> bool {
        acks.len() >= 2
    }

    /// Read 1 (index 5, from node 1) waits on a round opened at `first_tick`, read 2 (index 6, from
    /// `second_from`) on one opened at the next tick. Returns both rounds.
    fn reads_in_two_rounds(first_tick: u64, second_from: NodeId) -> (ReadTracker, u64, u64) {
        let mut tracker = ReadTracker::default();
        tracker.add_read(1, 5, 1);
        let first = tracker.open_round(first_tick, 1);
        tracker.add_read(2, 6, second_from);
        let second = tracker.open_round(first_tick + 1, 1);
        (tracker, first, second)
    }

    fn read_ids(released: &[PendingRead]) -> Vec<u64> {
        released.iter().map(|r| r.read_id).collect()
    }

    #[test]
    fn thesis_6_4_reads_wait_for_a_quorum_of_the_round_sent_after_them() {
        let mut tracker = ReadTracker::default();
        tracker.add_read(7, 10, 1);
        assert!(tracker.needs_round());
        let round = tracker.open_round(100, 1);
        assert!(!tracker.needs_round());
        // A read that arrives after the round was sent must wait for the next round.
        tracker.add_read(8, 11, 1);
        let released = tracker.ack(round, 2, majority_of_three);
        assert_eq!(read_ids(&released), vec![7]);
        assert_eq!(tracker.lease_start_tick, Some(100));
        assert_eq!(tracker.pending_len(), 1);
    }

    #[test]
    fn confirming_a_later_round_releases_earlier_ones() {
        let (mut tracker, first, second) = reads_in_two_rounds(1, 3);
        assert!(tracker.ack(second, 2, majority_of_three).len() == 2);
        assert!(
            tracker.ack(first, 2, majority_of_three).is_empty(),
            "round already retired"
        );
    }

    #[test]
    fn acks_without_quorum_release_nothing() {
        let mut tracker = ReadTracker::default();
        tracker.add_read(1, 5, 1);
        let round = tracker.open_round(1, 1);
        assert!(
            tracker.ack(round, 1, majority_of_three).is_empty(),
            "the leader's own ack is not a quorum"
        );
        assert!(
            tracker.ack(round + 1, 2, majority_of_three).is_empty(),
            "unknown round"
        );
    }

    #[test]
    fn pending_len_counts_reads_until_their_round_is_confirmed() {
        let mut tracker = ReadTracker::default();
        assert_eq!(tracker.pending_len(), 0);
        tracker.add_read(1, 5, 1);
        tracker.add_read(2, 5, 3);
        assert_eq!(tracker.pending_len(), 2);
        let round = tracker.open_round(1, 1);
        assert_eq!(tracker.pending_len(), 2, "sent, not yet confirmed");
        assert_eq!(tracker.ack(round, 2, majority_of_three).len(), 2);
        assert_eq!(tracker.pending_len(), 0);
    }

    /// Several rounds may be open at once (heartbeats keep going while acks travel); an ack of
    /// the oldest still confirms it, and leaves the newer rounds open.
    #[test]
    fn ack_of_the_oldest_open_round_confirms_it() {
        let (mut tracker, oldest, newer) = reads_in_two_rounds(10, 1);
        let _newest = tracker.open_round(12, 1);
        let released = tracker.ack(oldest, 2, majority_of_three);
        assert_eq!(read_ids(&released), vec![1]);
        assert_eq!(tracker.lease_start_tick, Some(10));
        let released = tracker.ack(newer, 3, majority_of_three);
        assert_eq!(read_ids(&released), vec![2]);
        assert_eq!(tracker.lease_start_tick, Some(11));
    }

    /// At most MAX_CONFIRM_ROUNDS rounds are kept: opening one more forgets the oldest.
    #[test]
    fn only_the_newest_max_confirm_rounds_stay_open() {
        let mut tracker = ReadTracker::default();
        let rounds: Vec<u64> = (0..=MAX_CONFIRM_ROUNDS as u64)
            .map(|tick| tracker.open_round(tick, 1))
            .collect();
        assert!(
            tracker.ack(rounds[0], 2, majority_of_three).is_empty() && tracker.lease_start_tick.is_none(),
            "the oldest round was dropped"
        );
        tracker.ack(rounds[1], 2, majority_of_three);
        assert_eq!(tracker.lease_start_tick, Some(1), "the next oldest is still open");
    }
}
