//! Fault profiles (how hostile a run may be) and the fault schedule: every few hundred simulated
//! milliseconds of the fault phase, a new epoch re-decides the topology, clogs, crashes and pauses.

use std::collections::{BTreeMap, BTreeSet};

use yizhi_engine::{NodeId, SeededRng};

use crate::network::PPM;

/// Upper bounds for one run; each seed draws its actual rates below them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultProfile {
    pub name: &'static str,
    pub loss_ppm_max: u64,
    pub duplicate_ppm_max: u64,
    pub spike_ppm_max: u64,
    pub delay_ms_max: u64,
    /// Chance per epoch that the epoch has a partition of some shape.
    pub partition_pct: u64,
    /// Chance per epoch per link of a clog.
    pub clog_pct: u64,
    /// Chance per epoch per live node of a crash, and of a pause.
    pub crash_pct: u64,
    pub pause_pct: u64,
    pub fsync_ms_max: u64,
    pub epoch_ms_min: u64,
    pub epoch_ms_max: u64,
    /// Chance per tick per node of a wrong lost-connection hint (`report_connection_lost`) about
    /// the leader it follows (a connection reset to a live peer), so that safety is checked under
    /// hints that lie. True hints follow every crash regardless.
    pub spurious_hint_ppm: u64,
}

pub const PROFILE_NONE: FaultProfile = FaultProfile {
    name: "none",
    loss_ppm_max: 0,
    duplicate_ppm_max: 0,
    spike_ppm_max: 0,
    delay_ms_max: 5,
    partition_pct: 0,
    clog_pct: 0,
    crash_pct: 0,
    pause_pct: 0,
    fsync_ms_max: 2,
    epoch_ms_min: 500,
    epoch_ms_max: 500,
    spurious_hint_ppm: 0,
};

pub const PROFILE_MILD: FaultProfile = FaultProfile {
    name: "mild",
    loss_ppm_max: 10_000,
    duplicate_ppm_max: 10_000,
    spike_ppm_max: 5_000,
    delay_ms_max: 15,
    partition_pct: 15,
    clog_pct: 2,
    crash_pct: 3,
    pause_pct: 3,
    fsync_ms_max: 5,
    epoch_ms_min: 400,
    epoch_ms_max: 1_000,
    spurious_hint_ppm: 1_000,
};

pub const PROFILE_STANDARD: FaultProfile = FaultProfile {
    name: "standard",
    loss_ppm_max: 50_000,
    duplicate_ppm_max: 30_000,
    spike_ppm_max: 20_000,
    delay_ms_max: 30,
    partition_pct: 35,
    clog_pct: 5,
    crash_pct: 8,
    pause_pct: 6,
    fsync_ms_max: 10,
    epoch_ms_min: 200,
    epoch_ms_max: 800,
    spurious_hint_ppm: 3_000,
};

pub const PROFILE_HARSH: FaultProfile = FaultProfile {
    name: "harsh",
    loss_ppm_max: 200_000,
    duplicate_ppm_max: 100_000,
    spike_ppm_max: 50_000,
    delay_ms_max: 60,
    partition_pct: 60,
    clog_pct: 10,
    crash_pct: 15,
    pause_pct: 10,
    fsync_ms_max: 20,
    epoch_ms_min: 150,
    epoch_ms_max: 500,
    spurious_hint_ppm: 10_000,
};

pub const PROFILES: [FaultProfile; 4] = [PROFILE_NONE, PROFILE_MILD, PROFILE_STANDARD, PROFILE_HARSH];

pub fn profile_by_name(name: &str) -> Option<FaultProfile> {
    PROFILES.iter().copied().find(|p| p.name == name)
}

impl FaultProfile {
    pub fn assert_valid(&self) {
        assert!(
            self.loss_ppm_max < PPM && self.duplicate_ppm_max < PPM && self.spurious_hint_ppm < PPM,
            "{self:?}"
        );
        assert!(self.partition_pct <= 100 && self.clog_pct <= 100, "{self:?}");
        assert!(self.crash_pct <= 100 && self.pause_pct <= 100, "{self:?}");
        assert!(
            self.epoch_ms_min > 0 && self.epoch_ms_min <= self.epoch_ms_max,
            "{self:?}"
        );
    }
}

/// How the cluster is cut during one epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Topology {
    Healthy,
    /// Two sides that cannot talk to each other.
    Split {
        side: BTreeSet<NodeId>,
    },
    /// Individual directed links that drop everything (asymmetric faults).
    OneWay {
        blocked: BTreeSet<(NodeId, NodeId)>,
    },
    /// The current leader (or a random node) cut off from everyone.
    Isolate {
        node: NodeId,
    },
    /// Two halves that only `bridge` connects: it sees both, they see only it.
    Bridge {
        left: BTreeSet<NodeId>,
        bridge: NodeId,
    },
}

impl Topology {
    /// The directed links this topology blocks.
    pub fn blocked_links(&self, nodes: &[NodeId]) -> BTreeSet<(NodeId, NodeId)> {
        let mut blocked = BTreeSet::new();
        for &a in nodes {
            for &b in nodes {
                if a != b && self.blocks(a, b) {
                    blocked.insert((a, b));
                }
            }
        }
        blocked
    }

    fn blocks(&self, from: NodeId, to: NodeId) -> bool {
        match self {
            Topology::Healthy => false,
            Topology::Split { side } => side.contains(&from) != side.contains(&to),
            Topology::OneWay { blocked } => blocked.contains(&(from, to)),
            Topology::Isolate { node } => from == *node || to == *node,
            Topology::Bridge { left, bridge } => {
                from != *bridge && to != *bridge && left.contains(&from) != left.contains(&to)
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clog {
    pub from: NodeId,
    pub to: NodeId,
    pub duration_ms: u64,
    pub extra_delay_ms: u64,
}

/// Everything one fault epoch changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochPlan {
    pub topology: Topology,
    /// The partition holds messages until it heals (TCP under an iptables DROP) rather than
    /// dropping them (connections reset).
    pub partition_holds: bool,
    pub clogs: Vec<Clog>,
    /// Node and how long it stays down.
    pub crashes: Vec<(NodeId, u64)>,
    /// Node and how long it stops processing.
    pub pauses: Vec<(NodeId, u64)>,
    pub duration_ms: u64,
}

/// A run's phases. Faults: clients run and the fault schedule re-decides the network, crashes
/// and pauses every epoch. Liveness: the network has healed and only the probe client writes,
/// until the cluster shows progress. Done: the final checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Faults,
    Liveness { healed_at_ms: u64 },
    Done,
}

/// Decides the next epoch. `live` are nodes that are up; `leader` the current leader if any.
pub fn plan_epoch(
    profile: &FaultProfile,
    rng: &mut SeededRng,
    nodes: &[NodeId],
    live: &BTreeSet<NodeId>,
    leader: Option<NodeId>,
) -> EpochPlan {
    profile.assert_valid();
    assert!(!nodes.is_empty());
    let duration_ms = rng.range_inclusive(profile.epoch_ms_min, profile.epoch_ms_max);
    let topology = if nodes.len() > 1 && rng.chance(profile.partition_pct, 100) {
        pick_topology(rng, nodes, leader)
    } else {
        Topology::Healthy
    };
    let partition_holds = topology != Topology::Healthy && rng.chance(1, 2);
    let mut clogs = Vec::new();
    for &from in nodes {
        for &to in nodes {
            if from != to && rng.chance(profile.clog_pct, 100) {
                let duration_ms = rng.range_inclusive(duration_ms / 4, duration_ms);
                clogs.push(Clog {
                    from,
                    to,
                    duration_ms,
                    extra_delay_ms: rng.range_inclusive(100, 1_000),
                });
            }
        }
    }
    let mut crashes = Vec::new();
    let mut pauses = Vec::new();
    for &node in live {
        if rng.chance(profile.crash_pct, 100) {
            // A third of the crashes are a supervisor's instant restart: back within the same
            // election, where a forgotten vote or promise does its damage.
            let down_ms = if rng.chance(1, 3) {
                rng.range_inclusive(1, 50)
            } else {
                rng.range_inclusive(50, 2 * duration_ms)
            };
            crashes.push((node, down_ms));
        } else if rng.chance(profile.pause_pct, 100) {
            pauses.push((node, rng.range_inclusive(20, duration_ms)));
        }
    }
    EpochPlan {
        topology,
        partition_holds,
        clogs,
        crashes,
        pauses,
        duration_ms,
    }
}

fn pick_topology(rng: &mut SeededRng, nodes: &[NodeId], leader: Option<NodeId>) -> Topology {
    let pick = |rng: &mut SeededRng| nodes[rng.below(nodes.len() as u64) as usize];
    match rng.below(4) {
        0 => {
            let mut side = BTreeSet::new();
            for &n in nodes {
                if rng.chance(1, 2) {
                    side.insert(n);
                }
            }
            Topology::Split { side }
        }
        1 => {
            let mut blocked = BTreeSet::new();
            for _ in 0..rng.range_inclusive(1, nodes.len() as u64) {
                let (a, b) = (pick(rng), pick(rng));
                if a != b {
                    blocked.insert((a, b));
                }
            }
            Topology::OneWay { blocked }
        }
        2 => Topology::Isolate {
            node: leader.unwrap_or_else(|| pick(rng)),
        },
        _ => {
            let bridge = leader.filter(|_| rng.chance(1, 2)).unwrap_or_else(|| pick(rng));
            let others: Vec<NodeId> = nodes.iter().copied().filter(|&n| n != bridge).collect();
            let left = others.iter().copied().take(others.len() / 2).collect();
            Topology::Bridge { left, bridge }
        }
    }
}

/// A peer's transport sees a crashed node's connection close within this long (the kernel closes
/// a dead process's sockets at once; the reset still has to cross the link).
pub const CONNECTION_CLOSE_SEEN_MS_MAX: u64 = 5;

/// What the fault schedule keeps between events: its random streams, the crashes armed for a
/// node's next fsync, the nodes the heal leaves down, and counts of what it dealt.
#[derive(Debug)]
pub struct FaultState {
    rng: SeededRng,
    /// Lost-connection hints, true and wrong: a stream of its own, so that adding them left every
    /// other stream's draws as they were.
    hints_rng: SeededRng,
    /// Crashes that wait for the node's next fsync request, with how long the node stays down:
    /// power lost while writes are in flight, so that unsynced writes are lost often, not only
    /// when an epoch boundary happens to fall inside an fsync.
    crash_at_next_fsync: BTreeMap<NodeId, u64>,
    /// Invariant: at most a minority, chosen at the heal.
    kept_down: BTreeSet<NodeId>,
    /// Crashes that struck while an unsynced append was rewriting entries already durable.
    pub crashes_during_rewrites: u64,
    /// Lost-connection hints delivered to a live engine: true ones, wrong ones.
    pub hints_delivered: [u64; 2],
}

impl FaultState {
    pub fn new(rng: SeededRng, hints_rng: SeededRng) -> Self {
        FaultState {
            rng,
            hints_rng,
            crash_at_next_fsync: BTreeMap::new(),
            kept_down: BTreeSet::new(),
            crashes_during_rewrites: 0,
            hints_delivered: [0; 2],
        }
    }

    /// The next epoch's plan ([`plan_epoch`]), from the schedule's own stream.
    pub fn plan_epoch(
        &mut self,
        profile: &FaultProfile,
        nodes: &[NodeId],
        live: &BTreeSet<NodeId>,
        leader: Option<NodeId>,
    ) -> EpochPlan {
        plan_epoch(profile, &mut self.rng, nodes, live, leader)
    }

    /// `node` crashes at its next fsync request, down for `down_ms`; `None` cancels that.
    pub fn arm_crash_at_next_fsync(&mut self, node: NodeId, down_ms: Option<u64>) {
        match down_ms {
            Some(down_ms) => self.crash_at_next_fsync.insert(node, down_ms),
            None => self.crash_at_next_fsync.remove(&node),
        };
    }

    /// `node` asks for an fsync: how long it stays down, if the power goes now.
    pub fn take_crash_at_fsync(&mut self, node: NodeId) -> Option<u64> {
        self.crash_at_next_fsync.remove(&node)
    }

    /// How long a peer's transport takes to see a connection close.
    pub fn connection_close_delay_ms(&mut self) -> u64 {
        self.hints_rng.range_inclusive(1, CONNECTION_CLOSE_SEEN_MS_MAX)
    }

    /// Now and then (`ppm`), the peer a wrong lost-connection hint to `node` names: its leader,
    /// else any other node.
    pub fn wrong_hint_peer(
        &mut self,
        ppm: u64,
        node: NodeId,
        leader: Option<NodeId>,
        nodes: &[NodeId],
    ) -> Option<NodeId> {
        if !self.hints_rng.chance(ppm, PPM) {
            return None;
        }
        match leader.filter(|&l| l != node) {
            Some(leader) => Some(leader),
            None if nodes.len() > 1 => {
                let others: Vec<NodeId> = nodes.iter().copied().filter(|&p| p != node).collect();
                Some(others[self.hints_rng.below(others.len() as u64) as usize])
            }
            None => None,
        }
    }

    /// The faults end: no crash stays armed.
    pub fn heal(&mut self) {
        self.crash_at_next_fsync.clear();
    }

    /// At the heal, a crashed node stays down (a third of the time, while fewer than
    /// `may_stay_down` do) or restarts.
    pub fn keeps_down(&mut self, node: NodeId, may_stay_down: usize) -> bool {
        if self.kept_down.len() < may_stay_down && self.rng.chance(1, 3) {
            self.kept_down.insert(node);
            return true;
        }
        false
    }

    pub fn kept_down(&self) -> &BTreeSet<NodeId> {
        &self.kept_down
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: [NodeId; 5] = [1, 2, 3, 4, 5];

    #[test]
    fn split_is_symmetric_and_isolate_cuts_every_link_of_the_node() {
        let split = Topology::Split {
            side: BTreeSet::from([1, 2]),
        };
        let blocked = split.blocked_links(&NODES);
        assert!(blocked.contains(&(1, 3)) && blocked.contains(&(3, 1)));
        assert!(!blocked.contains(&(1, 2)) && !blocked.contains(&(3, 4)));
        let isolate = Topology::Isolate { node: 4 }.blocked_links(&NODES);
        assert_eq!(isolate.len(), 8);
        assert!(isolate.iter().all(|&(a, b)| a == 4 || b == 4));
    }

    #[test]
    fn bridge_sees_both_halves_which_do_not_see_each_other() {
        let bridge = Topology::Bridge {
            left: BTreeSet::from([1, 2]),
            bridge: 3,
        };
        let blocked = bridge.blocked_links(&NODES);
        assert!(blocked.contains(&(1, 4)) && blocked.contains(&(5, 2)));
        assert!(!blocked.iter().any(|&(a, b)| a == 3 || b == 3));
        assert!(!blocked.contains(&(1, 2)) && !blocked.contains(&(4, 5)));
    }

    #[test]
    fn plans_are_deterministic_and_none_profile_is_quiet() {
        let live: BTreeSet<NodeId> = NODES.into_iter().collect();
        let a = plan_epoch(&PROFILE_HARSH, &mut SeededRng::new(9), &NODES, &live, Some(2));
        let b = plan_epoch(&PROFILE_HARSH, &mut SeededRng::new(9), &NODES, &live, Some(2));
        assert_eq!(a, b);
        let mut rng = SeededRng::new(10);
        for _ in 0..100 {
            let quiet = plan_epoch(&PROFILE_NONE, &mut rng, &NODES, &live, None);
            assert_eq!(quiet.topology, Topology::Healthy);
            assert!(quiet.clogs.is_empty() && quiet.crashes.is_empty() && quiet.pauses.is_empty());
        }
    }

    #[test]
    fn every_profile_is_valid_and_found_by_name() {
        for p in PROFILES {
            p.assert_valid();
            assert_eq!(profile_by_name(p.name), Some(p));
        }
        assert_eq!(profile_by_name("nope"), None);
    }
}
