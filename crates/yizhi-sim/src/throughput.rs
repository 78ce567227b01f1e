//! Engine throughput under message loss (issue 6: Raft against Multi-Paxos, in the simulator).
//!
//! One fixed scenario per engine, cluster size and loss rate ([`ThroughputScenario`],
//! [`crate::config::SimConfig::for_throughput`]): no crashes, pauses, partitions, clogs or
//! duplicates, the same loss and delays on every link, the engines' default settings, and
//! closed-loop clients that only put. The measurement window opens when a leader first exists and
//! lasts `measure_ms`; then the network heals and the run ends as every run does. Nothing is
//! switched off: invariants after every event, the read and exactly-once counter checks, the
//! liveness phase and the linearizability check of the whole history (puts carry their revisions,
//! so it stays cheap). The simulator is deterministic, so every number replays exactly from the
//! engine, the scenario and the seed.

use yizhi_engine::{LogIndex, SeededRng};

use crate::client::Workload;
use crate::clock::{TICK_INTERVAL_MS, TICK_SKEW_PCT_MAX};
use crate::config::{NodeConfig, SimConfig};
use crate::engines::EngineTuning;
use crate::faults::PROFILE_NONE;
use crate::network::{LinkParams, PPM};
use crate::report::{LincheckVerdict, RunReport, WindowStats};

pub const CLIENTS_DEFAULT: u64 = 16;
pub const MEASURE_MS_DEFAULT: u64 = 20_000;
pub const CLIENTS_MAX: u64 = 256;
pub const MEASURE_MS_MAX: u64 = 600_000;
/// Above this, elections stop converging within the leader wait and nothing is measured.
pub const LOSS_PCT_MAX: u64 = 50;
pub const NODE_COUNT_MAX: u64 = 7;
/// A throughput run records far more operations than a fault run: the history may hold this
/// many (the window must not fill it, or clients would stop early).
pub const HISTORY_OPS_MAX: usize = 400_000;

/// No compaction inside a window: the simulator compacts right up to the applied index (no
/// catch-up tail, to make lagging followers need snapshots under faults), so a follower a few
/// entries behind would be sent a whole snapshot, a cost of the fault hunt rather than of either
/// engine.
pub const COMPACT_EVERY_ENTRIES: u64 = 1_000_000;

/// Everything a throughput run fixes; the seed decides only clocks' skew, per-message delays and
/// losses, fsync latencies, the engines' randomized timeouts and the clients' keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThroughputScenario {
    pub node_count: u64,
    /// Every message between nodes is lost with this chance (client links are reliable).
    pub loss_pct: u64,
    pub clients: u64,
    pub measure_ms: u64,
    /// Without a leader by then, the run measures nothing and counts as failed.
    pub leader_wait_ms_max: u64,
    /// Each message between nodes takes a uniform delay in this range (so messages reorder).
    pub link_delay_ms_min: u64,
    pub link_delay_ms_max: u64,
    /// Each fsync takes a uniform 1..=this many ms.
    pub fsync_ms_max: u64,
    pub compact_every_entries: u64,
    pub key_count: u64,
    pub client_timeout_ms: u64,
    pub retry_backoff_ms_max: u64,
    pub max_history_ops: usize,
}

impl ThroughputScenario {
    pub fn new(node_count: u64, loss_pct: u64) -> Self {
        ThroughputScenario {
            node_count,
            loss_pct,
            clients: CLIENTS_DEFAULT,
            measure_ms: MEASURE_MS_DEFAULT,
            leader_wait_ms_max: 10_000,
            link_delay_ms_min: 1,
            link_delay_ms_max: 10,
            fsync_ms_max: 5,
            compact_every_entries: COMPACT_EVERY_ENTRIES,
            key_count: 10,
            client_timeout_ms: 1_000,
            retry_backoff_ms_max: 20,
            max_history_ops: HISTORY_OPS_MAX,
        }
    }

    /// Bounds on what the command line may ask for.
    pub fn validate(&self) -> Result<(), String> {
        if self.node_count == 0 || self.node_count > NODE_COUNT_MAX {
            return Err(format!("nodes {} outside 1..={NODE_COUNT_MAX}", self.node_count));
        }
        if self.loss_pct > LOSS_PCT_MAX {
            return Err(format!("loss {}% above {LOSS_PCT_MAX}%", self.loss_pct));
        }
        if self.clients == 0 || self.clients > CLIENTS_MAX {
            return Err(format!("clients {} outside 1..={CLIENTS_MAX}", self.clients));
        }
        if self.measure_ms == 0 || self.measure_ms > MEASURE_MS_MAX {
            return Err(format!(
                "window {} ms outside 1..={MEASURE_MS_MAX}",
                self.measure_ms
            ));
        }
        Ok(())
    }

    pub fn assert_valid(&self) {
        if let Err(e) = self.validate() {
            panic!("invalid throughput scenario {self:?}: {e}");
        }
        assert!(self.link_delay_ms_min <= self.link_delay_ms_max, "{self:?}");
        assert!(self.max_history_ops <= HISTORY_OPS_MAX, "{self:?}");
    }
}

impl SimConfig {
    /// The fixed scenario of a throughput measurement: no crashes, pauses, partitions, clogs,
    /// duplicates or spikes, the same loss and delays on every link, the same fsync bound on every
    /// node, the engines' default settings, and closed-loop clients that only put. The seed still
    /// draws the clocks' skew, each message's delay and fate, each fsync's latency, the engines'
    /// randomized timeouts and the clients' keys.
    pub fn for_throughput(seed: u64, scenario: &ThroughputScenario) -> Self {
        scenario.assert_valid();
        let mut rng = SeededRng::new(seed ^ 0x7E57_7A11_0000_0006);
        let skew_ms = TICK_INTERVAL_MS * TICK_SKEW_PCT_MAX / 100;
        let nodes = (1..=scenario.node_count)
            .map(|id| NodeConfig {
                id,
                tick_interval_ms: rng.range_inclusive(TICK_INTERVAL_MS - skew_ms, TICK_INTERVAL_MS + skew_ms),
                fsync_ms_max: scenario.fsync_ms_max,
                compact_every_entries: scenario.compact_every_entries,
            })
            .collect();
        let link = LinkParams {
            min_delay_ms: scenario.link_delay_ms_min,
            max_delay_ms: scenario.link_delay_ms_max,
            loss_ppm: scenario.loss_pct * (PPM / 100),
            duplicate_ppm: 0,
            spike_ppm: 0,
        };
        let workload = Workload {
            key_count: scenario.key_count,
            get_pct: 0,
            range_pct: 0,
            cas_pct: 0,
            delete_pct: 0,
            compact_pct: 0,
            think_ms_max: 0,
            timeout_ms: scenario.client_timeout_ms,
            retry_backoff_ms_max: scenario.retry_backoff_ms_max,
            serializable_read_pct: 0,
            bounded_read_pct: 0,
        };
        workload.assert_valid();
        SimConfig {
            seed,
            profile: PROFILE_NONE,
            nodes,
            links: vec![link; (scenario.node_count * scenario.node_count) as usize],
            client_count: scenario.clients,
            workload,
            // Until a leader exists; then the window's end replaces it.
            fault_phase_ms: scenario.leader_wait_ms_max + scenario.measure_ms,
            engine_tuning: EngineTuning::Defaults,
            max_history_ops: scenario.max_history_ops,
            measure_window_ms: Some(scenario.measure_ms),
        }
    }
}

/// A throughput run's measurement window, from when a leader first exists until the heal that
/// ends it: what it counts stays open to change until then.
#[derive(Debug)]
pub(crate) struct Window {
    stats: WindowStats,
    committed_index_at_start: LogIndex,
    closed: bool,
}

impl Window {
    pub(crate) fn open(now_ms: u64, length_ms: u64, committed_index: LogIndex) -> Window {
        Window {
            stats: WindowStats {
                start_ms: now_ms,
                length_ms,
                ..WindowStats::default()
            },
            committed_index_at_start: committed_index,
            closed: false,
        }
    }

    /// The history filled up while the window was open: its clients stopped early.
    pub(crate) fn note_history_full(&mut self) {
        if !self.closed {
            self.stats.history_full = true;
        }
    }

    pub(crate) fn close(&mut self, committed_index: LogIndex) {
        self.stats.committed_entries = committed_index - self.committed_index_at_start;
        self.closed = true;
    }

    /// A regular client's write acknowledged at `now_ms`: counted, with its latency, if it began
    /// and ended inside the window.
    pub(crate) fn count_acked_write(&mut self, now_ms: u64, started_ms: u64, max_history_ops: usize) {
        assert!(started_ms <= now_ms, "a write acknowledged before it started");
        // A write begun before the window waited for the first election: not the steady state.
        if self.closed || started_ms < self.stats.start_ms {
            return;
        }
        assert!(
            self.stats.write_latencies_ms.len() < max_history_ops,
            "more acknowledged writes than operations the history may hold"
        );
        self.stats.acked_writes += 1;
        self.stats.write_latencies_ms.push(now_ms - started_ms);
    }

    /// What the window counted, once it has closed.
    pub(crate) fn closed_stats(&self) -> Option<WindowStats> {
        self.closed.then(|| self.stats.clone())
    }
}

/// Mean, minimum and maximum of a per-seed rate.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Spread {
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Spread {
        if values.is_empty() {
            return Spread::default();
        }
        let sum: f64 = values.iter().sum();
        Spread {
            mean: sum / values.len() as f64,
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// One line of the table: one engine, cluster size and loss rate over all seeds.
#[derive(Clone, Debug, PartialEq)]
pub struct ThroughputRow {
    pub engine: &'static str,
    pub node_count: u64,
    pub loss_pct: u64,
    /// Seeds whose window completed cleanly (the rates are over these).
    pub measured_seeds: usize,
    pub committed_per_s: Spread,
    pub acked_per_s: Spread,
    /// Over every acknowledged write of every measured seed (nearest rank).
    pub latency_p50_ms: u64,
    pub latency_p99_ms: u64,
    /// Seeds that broke an invariant, left the linearizability check undecided, never elected a
    /// leader or filled the history: each with why. Any of them makes the whole table suspect.
    pub failures: Vec<String>,
}

/// Folds the runs of one engine, size and loss rate into a row.
pub fn summarize(
    engine: &'static str,
    scenario: &ThroughputScenario,
    reports: &[RunReport],
) -> ThroughputRow {
    let (mut committed, mut acked, mut latencies, mut failures) = (vec![], vec![], vec![], vec![]);
    for report in reports {
        let problem = match (&report.violation, &report.lincheck, &report.window) {
            (Some((at_ms, v)), _, _) => Some(format!("violation at {at_ms} ms: {v}")),
            (None, LincheckVerdict::Undecided, _) => Some("linearizability check undecided".into()),
            (None, _, None) => Some("no leader within the wait, nothing measured".into()),
            (None, _, Some(w)) if w.history_full => Some("history full inside the window".into()),
            (None, _, Some(_)) => None,
        };
        if let Some(problem) = problem {
            failures.push(format!("seed {}: {problem}", report.seed));
            continue;
        }
        let window = report.window.as_ref().expect("a clean run has its window");
        let seconds = window.length_ms as f64 / 1000.0;
        committed.push(window.committed_entries as f64 / seconds);
        acked.push(window.acked_writes as f64 / seconds);
        latencies.extend_from_slice(&window.write_latencies_ms);
    }
    latencies.sort_unstable();
    ThroughputRow {
        engine,
        node_count: scenario.node_count,
        loss_pct: scenario.loss_pct,
        measured_seeds: committed.len(),
        committed_per_s: Spread::of(&committed),
        acked_per_s: Spread::of(&acked),
        latency_p50_ms: nearest_rank(&latencies, 50),
        latency_p99_ms: nearest_rank(&latencies, 99),
        failures,
    }
}

/// The `pct`-th percentile of sorted values by nearest rank (0 for none).
pub fn nearest_rank(sorted: &[u64], pct: u64) -> u64 {
    assert!(pct > 0 && pct <= 100, "percentile {pct}");
    assert!(sorted.is_sorted(), "percentiles need sorted values");
    if sorted.is_empty() {
        return 0;
    }
    let rank = (pct as usize * sorted.len()).div_ceil(100);
    sorted[rank - 1]
}

/// The rows as a Markdown table.
pub fn markdown_table(rows: &[ThroughputRow]) -> String {
    let mut out = String::from(
        "| engine | nodes | loss | seeds | committed entries/s: mean (min–max) | acked writes/s: mean (min–max) \
         | write latency p50 / p99 |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    let spread = |s: &Spread| format!("{:.0} ({:.0}–{:.0})", s.mean, s.min, s.max);
    for row in rows {
        let failed = if row.failures.is_empty() {
            String::new()
        } else {
            format!(" ({} failed)", row.failures.len())
        };
        out.push_str(&format!(
            "| {} | {} | {}% | {}{failed} | {} | {} | {} / {} ms |\n",
            row.engine,
            row.node_count,
            row.loss_pct,
            row.measured_seeds,
            spread(&row.committed_per_s),
            spread(&row.acked_per_s),
            row.latency_p50_ms,
            row.latency_p99_ms,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_picks_the_covering_value() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(nearest_rank(&values, 50), 50);
        assert_eq!(nearest_rank(&values, 99), 99);
        assert_eq!(nearest_rank(&values, 100), 100);
        assert_eq!(nearest_rank(&[7], 1), 7);
        assert_eq!(nearest_rank(&[3, 9], 50), 3);
        assert_eq!(nearest_rank(&[3, 9], 51), 9);
        assert_eq!(nearest_rank(&[], 99), 0);
    }

    #[test]
    fn spread_of_rates() {
        let s = Spread::of(&[10.0, 30.0, 20.0]);
        assert_eq!((s.mean, s.min, s.max), (20.0, 10.0, 30.0));
        assert_eq!(Spread::of(&[]), Spread::default());
    }

    #[test]
    fn the_command_line_cannot_ask_for_unbounded_runs() {
        assert!(ThroughputScenario::new(3, 10).validate().is_ok());
        assert!(ThroughputScenario::new(0, 10).validate().is_err());
        assert!(ThroughputScenario::new(9, 10).validate().is_err());
        assert!(ThroughputScenario::new(3, LOSS_PCT_MAX + 1).validate().is_err());
        let many = ThroughputScenario {
            clients: CLIENTS_MAX + 1,
            ..ThroughputScenario::new(3, 0)
        };
        assert!(many.validate().is_err());
    }
}
