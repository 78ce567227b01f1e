//! Committed entries per second and allocations per entry for a 3-node cluster driven through the
//! engine alone: no IO, no simulated faults, messages delivered in memory in batches.
//!
//! Run: `cargo bench -p yizhi-raft --bench engine_throughput` (add `-- --entries N` to change size).

use std::alloc::System;
use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use yizhi_engine::{Engine, Envelope, MemStorage, Membership, NodeId, Role, SeededRng};
use yizhi_raft::{Message, RaftConfig, RaftNode};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const PAYLOAD_BYTES: usize = 16;
const VOTERS: [NodeId; 3] = [1, 2, 3];

struct Cluster {
    nodes: BTreeMap<NodeId, RaftNode<MemStorage>>,
    mailbox: Vec<Envelope<Message>>,
    applied_entries: u64,
}

impl Cluster {
    fn new() -> Self {
        let membership = Membership::new(VOTERS);
        let mut rng = SeededRng::new(1);
        let nodes = VOTERS
            .iter()
            .map(|&id| {
                let storage = MemStorage::new_with_membership(membership.clone());
                let node = RaftNode::new(RaftConfig::new(id), storage, rng.fork()).expect("valid config");
                (id, node)
            })
            .collect();
        Cluster {
            nodes,
            mailbox: Vec::new(),
            applied_entries: 0,
        }
    }

    /// One round: every node handles its Ready (persist, send, apply, advance), then every queued
    /// message is delivered.
    fn round(&mut self) {
        for node in self.nodes.values_mut() {
            if !node.has_ready() {
                continue;
            }
            let ready = node.ready();
            let storage = node.storage_mut();
            storage.append_owned(ready.entries);
            if let Some(hard_state) = ready.hard_state {
                storage.set_hard_state(hard_state);
            }
            self.mailbox.extend(ready.messages);
            self.applied_entries += ready.committed_entries.len() as u64;
            node.advance();
        }
        for envelope in self.mailbox.drain(..) {
            let to = envelope.to;
            self.nodes.get_mut(&to).expect("known node").step(envelope);
        }
    }

    fn elect(&mut self, id: NodeId) {
        while self.nodes[&id].role() != Role::Leader {
            self.nodes.get_mut(&id).expect("known").tick();
            self.round();
        }
        for _ in 0..4 {
            self.round();
        }
    }
}

struct Measurement {
    entries_per_sec: f64,
    allocs_per_entry: f64,
    bytes_allocated_per_entry: f64,
}

/// Keeps `proposers` proposals outstanding until `total_entries` have committed on the leader.
fn run(proposers: u64, total_entries: u64) -> Measurement {
    let mut cluster = Cluster::new();
    cluster.elect(1);
    let payload = Bytes::from(vec![7u8; PAYLOAD_BYTES]);
    let start_commit = cluster.nodes[&1].committed();
    let target_commit = start_commit + total_entries;
    let mut proposed_last = cluster.nodes[&1].status().last_index;
    let region = Region::new(GLOBAL);
    let started = Instant::now();
    while cluster.nodes[&1].committed() < target_commit {
        let leader = cluster.nodes.get_mut(&1).expect("leader");
        while proposed_last - leader.committed() < proposers && proposed_last < target_commit {
            proposed_last = leader.propose(payload.clone()).expect("leader accepts").index;
        }
        cluster.round();
    }
    let elapsed = started.elapsed();
    let stats = region.change();
    let committed = (cluster.nodes[&1].committed() - start_commit) as f64;
    Measurement {
        entries_per_sec: committed / elapsed.as_secs_f64(),
        allocs_per_entry: stats.allocations as f64 / committed,
        bytes_allocated_per_entry: stats.bytes_allocated as f64 / committed,
    }
}

fn main() {
    let mut total_entries: u64 = 2_000_000;
    let args: Vec<String> = std::env::args().collect();
    if let Some(position) = args.iter().position(|a| a == "--entries") {
        total_entries = args
            .get(position + 1)
            .and_then(|v| v.parse().ok())
            .expect("--entries N");
    }
    println!("engine-only 3-node cluster, {PAYLOAD_BYTES}-byte entries, one core");
    println!(
        "{:>10} {:>12} {:>16} {:>14} {:>18}",
        "proposers", "entries", "entries/s", "allocs/entry", "bytes alloc/entry"
    );
    for proposers in [1u64, 1024] {
        // The closed loop with one proposer is latency-bound; give it fewer entries.
        let entries = if proposers == 1 {
            total_entries / 20
        } else {
            total_entries
        };
        let m = run(proposers, entries);
        println!(
            "{proposers:>10} {entries:>12} {:>16.0} {:>14.2} {:>18.1}",
            m.entries_per_sec, m.allocs_per_entry, m.bytes_allocated_per_entry
        );
    }
}
