//! Everything one seed decides before the run starts: cluster size, per-node clocks and disks,
//! per-link networks, clients and workload, and how long the fault phase lasts.

use yizhi_engine::{NodeId, SeededRng};

use crate::client::{MAX_HISTORY_OPS, Workload};
use crate::clock::{TICK_INTERVAL_MS, TICK_SKEW_PCT_MAX};
use crate::engines::EngineTuning;
use crate::faults::FaultProfile;
use crate::network::LinkParams;

pub const CLIENTS_MAX: u64 = 5;
pub const FAULT_PHASE_MS_MIN: u64 = 4_000;
pub const FAULT_PHASE_MS_MAX: u64 = 8_000;
/// Client↔node one-way delay.
pub const CLIENT_DELAY_MS_MAX: u64 = 10;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    pub id: NodeId,
    pub tick_interval_ms: u64,
    pub fsync_ms_max: u64,
    pub compact_every_entries: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimConfig {
    pub seed: u64,
    pub profile: FaultProfile,
    pub nodes: Vec<NodeConfig>,
    /// Indexed by `(from - 1) * node_count + (to - 1)`.
    pub links: Vec<LinkParams>,
    pub client_count: u64,
    pub workload: Workload,
    pub fault_phase_ms: u64,
    /// The engine's own knobs (inflight window, message size, timeouts), the same on every node;
    /// drawn from the seed, so that the limits themselves are exercised under faults.
    pub engine_tuning: EngineTuning,
    /// Operations the run records at most (the checker's cost grows with the history).
    pub max_history_ops: usize,
    /// A throughput measurement: the fault phase ends this long after a leader first exists, and
    /// the simulator counts commits, acknowledgements and latencies in that window.
    pub measure_window_ms: Option<u64>,
}

impl SimConfig {
    /// Every draw, in a fixed order: a seed must keep drawing the same numbers, so a step added
    /// later goes after the others (as the read levels did).
    pub fn from_seed(seed: u64, profile: FaultProfile) -> Self {
        profile.assert_valid();
        // A stream of its own: the run's other streams fork from the seed independently.
        let mut rng = SeededRng::new(seed ^ 0x5EED_C0F1_6000_0001);
        let node_count = match rng.below(20) {
            0 => 1,
            1..=8 => 3,
            9..=16 => 5,
            _ => 7,
        };
        let nodes = (1..=node_count)
            .map(|id| node_config(&mut rng, id, &profile))
            .collect();
        let links = draw_links(&mut rng, node_count, &profile);
        let workload = draw_workload(&mut rng);
        let mut config = SimConfig {
            seed,
            profile,
            nodes,
            links,
            client_count: rng.range_inclusive(1, CLIENTS_MAX),
            workload,
            fault_phase_ms: rng.range_inclusive(FAULT_PHASE_MS_MIN, FAULT_PHASE_MS_MAX),
            engine_tuning: EngineTuning::Drawn {
                seed: rng.next_u64(),
                shortest_timeout: false,
            },
            max_history_ops: MAX_HISTORY_OPS,
            measure_window_ms: None,
        };
        // Drawn last, so that the draws above stay what they were before read levels existed.
        // Every seed mixes all three levels; most reads stay linearizable.
        config.workload.serializable_read_pct = rng.range_inclusive(5, 25);
        config.workload.bounded_read_pct = rng.range_inclusive(5, 25);
        skew_clocks_to_the_bound(&mut rng, &mut config.nodes);
        config.maybe_use_shortest_timeout(&mut rng);
        config.workload.assert_valid();
        config
    }

    /// A third of the runs whose every link's round trip stays under the shortest election
    /// timeout use that timeout (on slower links it would be a misconfiguration: elections that
    /// never finish, which the liveness check would report).
    fn maybe_use_shortest_timeout(&mut self, rng: &mut SeededRng) {
        let round_trips_fit = self.links.iter().all(|link| {
            2 * link.max_delay_ms < crate::engines::ELECTION_TIMEOUT_TICKS_MIN * TICK_INTERVAL_MS
        });
        if let EngineTuning::Drawn { seed, .. } = self.engine_tuning
            && round_trips_fit
            && rng.chance(1, 3)
        {
            self.engine_tuning = EngineTuning::Drawn {
                seed,
                shortest_timeout: true,
            };
        }
    }

    pub fn node_ids(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    pub fn link(&self, from: NodeId, to: NodeId) -> LinkParams {
        let n = self.nodes.len() as u64;
        assert!(
            from >= 1 && from <= n && to >= 1 && to <= n,
            "link {from}->{to} outside 1..={n}"
        );
        self.links[((from - 1) * n + (to - 1)) as usize]
    }
}

/// One link per ordered pair of nodes; one drawn scale sets how close to the profile's maxima
/// this run's loss, duplication and spikes come.
fn draw_links(rng: &mut SeededRng, node_count: u64, profile: &FaultProfile) -> Vec<LinkParams> {
    let scale_pct = rng.range_inclusive(0, 100);
    let scaled = |max: u64| max * scale_pct / 100;
    let mut links = Vec::new();
    for _ in 0..node_count * node_count {
        let max_delay_ms = rng.range_inclusive(1, profile.delay_ms_max.max(1));
        links.push(LinkParams {
            min_delay_ms: rng.range_inclusive(0, max_delay_ms / 2),
            max_delay_ms,
            loss_ppm: rng.range_inclusive(0, scaled(profile.loss_ppm_max)),
            duplicate_ppm: rng.range_inclusive(0, scaled(profile.duplicate_ppm_max)),
            spike_ppm: rng.range_inclusive(0, scaled(profile.spike_ppm_max)),
        });
    }
    links
}

/// The read levels are left at 0 here: `from_seed` draws them last.
fn draw_workload(rng: &mut SeededRng) -> Workload {
    Workload {
        key_count: rng.range_inclusive(1, 5),
        get_pct: rng.range_inclusive(10, 40),
        range_pct: rng.range_inclusive(0, 10),
        cas_pct: rng.range_inclusive(0, 25),
        delete_pct: rng.range_inclusive(0, 15),
        compact_pct: rng.range_inclusive(0, 3),
        think_ms_max: rng.range_inclusive(0, 50),
        timeout_ms: rng.range_inclusive(300, 1_500),
        retry_backoff_ms_max: rng.range_inclusive(5, 100),
        serializable_read_pct: 0,
        bounded_read_pct: 0,
    }
}

/// Half the runs put every clock at one end of the skew bound: timing bugs (a lease a tick too
/// long, a timeout at its minimum) show where two clocks drift apart the most.
fn skew_clocks_to_the_bound(rng: &mut SeededRng, nodes: &mut [NodeConfig]) {
    if rng.chance(1, 2) {
        let skew_ms = TICK_INTERVAL_MS * TICK_SKEW_PCT_MAX / 100;
        for node in nodes {
            let fast = rng.chance(1, 2);
            node.tick_interval_ms = if fast {
                TICK_INTERVAL_MS - skew_ms
            } else {
                TICK_INTERVAL_MS + skew_ms
            };
        }
    }
}

fn node_config(rng: &mut SeededRng, id: NodeId, profile: &FaultProfile) -> NodeConfig {
    let skew_ms = TICK_INTERVAL_MS * TICK_SKEW_PCT_MAX / 100;
    NodeConfig {
        id,
        tick_interval_ms: rng.range_inclusive(TICK_INTERVAL_MS - skew_ms, TICK_INTERVAL_MS + skew_ms),
        fsync_ms_max: rng.range_inclusive(1, profile.fsync_ms_max.max(1)),
        compact_every_entries: rng.range_inclusive(5, 100),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::PROFILE_STANDARD;

    #[test]
    fn same_seed_same_config_and_sizes_are_odd() {
        assert_eq!(
            SimConfig::from_seed(42, PROFILE_STANDARD),
            SimConfig::from_seed(42, PROFILE_STANDARD)
        );
        let mut sizes = std::collections::BTreeSet::new();
        for seed in 0..200 {
            let c = SimConfig::from_seed(seed, PROFILE_STANDARD);
            sizes.insert(c.nodes.len());
            assert_eq!(c.links.len(), c.nodes.len() * c.nodes.len());
            assert!(c.nodes.iter().all(|n| (9..=11).contains(&n.tick_interval_ms)));
        }
        assert_eq!(sizes.into_iter().collect::<Vec<_>>(), vec![1, 3, 5, 7]);
    }
}
