//! The `Engine` contract for Raft: collecting a `Ready` and acknowledging it with `advance()`.

use bytes::Bytes;
use yizhi_engine::{
    Engine, Envelope, LogPosition, LogStorage, NodeId, ProposeError, Ready, Role, SnapshotStatus, Status,
    TransferError,
};

use crate::message::Message;
use crate::progress::ProgressState;
use crate::raft::{HandedOut, RaftNode};

impl<S: LogStorage> RaftNode<S> {
    fn flush_batches(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        if self.append_pending {
            self.broadcast_append();
        }
        if self.needs_read_round() {
            self.heartbeat_elapsed_ticks = 0;
            self.broadcast_heartbeat();
        }
    }

    fn collect_ready(&mut self) -> Ready<Message> {
        assert!(self.handed_out.is_none(), "ready() called again before advance()");
        // First, so that an entry leaving a joint configuration goes out with this batch.
        self.configs_committed();
        self.flush_batches();
        let (mut ready, prev) = self.reported.open_ready(self.soft_state(), self.hard_state());
        if let Some(hard_state) = ready.hard_state {
            ready.must_sync = hard_state.term != prev.term || hard_state.vote != prev.vote;
            assert!(
                hard_state.commit >= prev.commit,
                "commit index went backwards: {prev:?} -> {hard_state:?}"
            );
        }
        ready.snapshot = self.log.take_unstable_snapshot();
        ready.entries = self.log.unstable_to_persist();
        ready.must_sync |= ready.snapshot.is_some() || !ready.entries.is_empty();
        ready.committed_entries = self
            .log
            .committed_to_apply(self.config.max_committed_bytes_per_ready);
        ready.messages = std::mem::take(&mut self.msgs);
        ready.read_states = std::mem::take(&mut self.read_states);
        let applied_to = ready
            .committed_entries
            .last()
            .map_or(self.log.applied, |e| e.index);
        let uncommitted_bytes_released = if self.role == Role::Leader {
            ready
                .committed_entries
                .iter()
                .filter(|e| e.term == self.term)
                .map(|e| e.size_bytes())
                .sum()
        } else {
            0
        };
        self.handed_out = Some(HandedOut {
            snapshot_index: ready.snapshot.as_ref().map(|s| s.meta.index),
            applied_to,
            uncommitted_bytes_released,
        });
        ready
    }

    fn acknowledge_ready(&mut self) {
        let handed = self.handed_out.take().expect("advance() without a ready()");
        self.log.persisted(handed.snapshot_index);
        // A snapshot installed meanwhile may already have moved `applied` past what was handed out.
        self.log.applied_to(handed.applied_to.max(self.log.applied));
        self.uncommitted_bytes = self
            .uncommitted_bytes
            .saturating_sub(handed.uncommitted_bytes_released);
        if self.role == Role::Leader {
            // Only now is the leader's own copy durable, so only now does it count toward commit.
            let persisted = self.log.persisted_last_index();
            let id = self.id();
            let own = self.progress.get_mut(&id).expect("leader has its own progress");
            if own.maybe_update(persisted) && self.maybe_commit() {
                self.append_pending = true;
            }
        }
    }

    fn pending_work(&self) -> bool {
        !self.msgs.is_empty()
            || !self.read_states.is_empty()
            || self.log.has_unstable()
            || self.log.has_committed_to_apply()
            || self.reported.differs(self.soft_state(), self.hard_state())
            || self.needs_read_round()
    }

    fn snapshot_reported(&mut self, peer: NodeId, status: SnapshotStatus) {
        if self.role != Role::Leader {
            return;
        }
        let Some(pr) = self.progress.get_mut(&peer) else {
            return;
        };
        if let ProgressState::Snapshot { .. } = pr.state {
            if status == SnapshotStatus::Failed {
                pr.become_snapshot(0);
            }
            // Wait for the follower's answer before sending more (etcd-io/raft does the same).
            pr.become_probe();
            pr.probe_sent = true;
        }
    }

    /// What was in flight to `peer` is likely lost: probe before sending a window again.
    pub(crate) fn report_unreachable_peer(&mut self, peer: NodeId) {
        if self.role != Role::Leader {
            return;
        }
        if let Some(pr) = self.progress.get_mut(&peer)
            && pr.state == ProgressState::Replicate
        {
            pr.become_probe();
        }
    }

    fn node_status(&self) -> Status {
        Status {
            id: self.id(),
            role: self.role,
            term: self.term,
            leader: self.leader,
            commit: self.log.committed,
            applied: self.log.applied,
            last_index: self.log.last_index(),
            membership: self.membership.clone(),
        }
    }
}

impl<S: LogStorage> Engine for RaftNode<S> {
    type Message = Message;
    type Storage = S;

    fn id(&self) -> NodeId {
        RaftNode::id(self)
    }

    fn tick(&mut self) {
        RaftNode::tick(self)
    }

    fn step(&mut self, envelope: Envelope<Message>) {
        RaftNode::step(self, envelope)
    }

    fn propose(&mut self, data: Bytes) -> Result<LogPosition, ProposeError> {
        RaftNode::propose(self, data)
    }

    fn read_index(&mut self, read_id: u64) -> Result<(), ProposeError> {
        RaftNode::read_index(self, read_id)
    }

    fn transfer_leadership(&mut self, to: NodeId) -> Result<(), TransferError> {
        RaftNode::transfer_leadership(self, to)
    }

    fn report_unreachable(&mut self, peer: NodeId) {
        self.report_unreachable_peer(peer)
    }

    fn report_connection_lost(&mut self, peer: NodeId) {
        self.connection_lost(peer)
    }

    fn report_snapshot(&mut self, peer: NodeId, status: SnapshotStatus) {
        self.snapshot_reported(peer, status)
    }

    fn has_ready(&self) -> bool {
        self.handed_out.is_none() && self.pending_work()
    }

    fn ready(&mut self) -> Ready<Message> {
        self.collect_ready()
    }

    fn advance(&mut self) {
        self.acknowledge_ready()
    }

    fn status(&self) -> Status {
        self.node_status()
    }

    fn storage(&self) -> &S {
        &self.log.storage
    }

    fn storage_mut(&mut self) -> &mut S {
        &mut self.log.storage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::MemCluster;
    use bytes::Bytes;

    fn three_node_cluster_led_by_1() -> MemCluster {
        MemCluster::new(&[1, 2, 3], &[], 7, |_| {}).elected(1)
    }

    #[test]
    fn leader_counts_its_own_entry_only_after_advance() {
        let mut cluster = MemCluster::new(&[1], &[], 3, |_| {}).elected(1);
        let node = cluster.node_mut(1);
        let position = node.propose(Bytes::from_static(b"a")).expect("leader");
        let ready = node.ready();
        assert_eq!(ready.entries.last().map(|e| e.index), Some(position.index));
        assert!(ready.must_sync, "new entries must be fsynced");
        assert!(
            node.committed() < position.index,
            "not durable yet, so not committed"
        );
        node.storage_mut().append(&ready.entries);
        node.advance();
        assert_eq!(node.committed(), position.index);
        let next = node.ready();
        assert_eq!(
            next.committed_entries.last().map(|e| e.index),
            Some(position.index)
        );
        assert!(!next.must_sync, "a commit-only change needs no fsync");
        node.advance();
        assert!(!node.has_ready());
    }

    #[test]
    #[should_panic(expected = "before advance")]
    fn ready_twice_without_advance_is_a_bug() {
        let mut cluster = three_node_cluster_led_by_1();
        let node = cluster.node_mut(1);
        node.propose(Bytes::from_static(b"a")).expect("leader");
        let _first = node.ready();
        let _second = node.ready();
    }

    #[test]
    fn ready_order_vote_is_persisted_with_its_response() {
        let mut cluster = MemCluster::new(&[1, 2, 3], &[], 5, |c| c.pre_vote = false);
        cluster.tick_all();
        for _ in 0..20 {
            cluster.tick(1);
        }
        cluster.process_ready(1);
        let vote_request = cluster.in_flight.pop_front().expect("vote request sent");
        assert_eq!(vote_request.to, 2);
        cluster.node_mut(2).step(vote_request);
        let ready = cluster.node_mut(2).ready();
        assert_eq!(ready.hard_state.map(|h| h.vote), Some(Some(1)));
        assert!(
            ready.must_sync,
            "a vote must be durable before its response leaves"
        );
        assert!(matches!(
            ready.messages[0].msg.kind,
            crate::MessageKind::VoteResponse { granted: true }
        ));
    }

    #[test]
    fn unreachable_follower_drops_to_probe_and_snapshot_report_resumes_probing() {
        let mut cluster = three_node_cluster_led_by_1();
        cluster.propose(1, b"a");
        cluster.settle();
        assert_eq!(
            cluster.node(1).progress_of(2).map(|p| p.state),
            Some(ProgressState::Replicate)
        );
        cluster.node_mut(1).report_unreachable(2);
        assert_eq!(
            cluster.node(1).progress_of(2).map(|p| p.state),
            Some(ProgressState::Probe)
        );

        // Node 3 is sent a snapshot at index 9, whose outcome is then reported.
        let snapshot_to_3_ends = |cluster: &mut MemCluster, status| {
            let leader = cluster.node_mut(1);
            leader.progress.get_mut(&3).expect("peer").become_snapshot(9);
            leader.report_snapshot(3, status);
            leader.progress_of(3).expect("peer").clone()
        };
        let pr = snapshot_to_3_ends(&mut cluster, SnapshotStatus::Finished);
        assert_eq!(
            (pr.state, pr.next, pr.probe_sent),
            (ProgressState::Probe, 10, true)
        );

        let pr = snapshot_to_3_ends(&mut cluster, SnapshotStatus::Failed);
        assert_eq!(pr.state, ProgressState::Probe);
        assert!(
            pr.next <= pr.matched + 1,
            "a failed snapshot resumes from what the follower holds"
        );
    }

    #[test]
    fn status_reports_role_term_and_indexes() {
        let cluster = three_node_cluster_led_by_1();
        let status = cluster.node(1).status();
        assert_eq!(
            (status.id, status.role, status.leader),
            (1, Role::Leader, Some(1))
        );
        assert_eq!(status.commit, status.last_index, "the no-op committed");
        assert_eq!(status.applied, status.commit);
        assert_eq!(cluster.node(2).status().leader, Some(1));
        assert_eq!(cluster.node(2).status().term, status.term);
    }

    /// Thesis §6.4: reads reaching a new leader before an entry of its term commits wait, up to
    /// MAX_READS_AWAITING_COMMIT of them; the next is dropped (its client times out and retries).
    #[test]
    fn reads_before_the_first_commit_wait_up_to_the_limit() {
        use crate::raft::MAX_READS_AWAITING_COMMIT;
        let mut cluster = MemCluster::new(&[1], &[], 3, |_| {});
        while cluster.node(1).role() != Role::Leader {
            cluster.tick(1);
        }
        let node = cluster.node_mut(1);
        assert!(
            node.committed() < node.log.last_index(),
            "the no-op is not durable yet"
        );
        let over_limit = MAX_READS_AWAITING_COMMIT as u64 + 1;
        for read_id in 0..over_limit {
            node.read_index(read_id)
                .expect("leader with room for pending reads");
        }
        assert_eq!(node.reads_awaiting_commit.len(), MAX_READS_AWAITING_COMMIT);
        cluster.settle();
        let answered: Vec<u64> = cluster.read_states[&1].iter().map(|r| r.read_id).collect();
        assert_eq!(answered, (0..over_limit - 1).collect::<Vec<_>>());
    }
}
