//! What a run is asked beyond its seed ([`RunOptions`]) and what it reports ([`RunReport`]).

use crate::invariants::Violation;
use crate::node::Mutation;
use crate::trace::TraceMode;

/// Per-run knobs beyond the seed.
#[derive(Clone, Copy, Debug)]
pub struct RunOptions {
    pub trace: TraceMode,
    /// Overrides the seed's fault-phase length (used to shrink a failing run).
    pub fault_phase_ms: Option<u64>,
    /// A deliberate runtime bug in every node (to test the checks themselves).
    pub mutation: Mutation,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            trace: TraceMode::HashOnly,
            fault_phase_ms: None,
            mutation: Mutation::None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LincheckVerdict {
    Linearizable,
    Undecided,
    /// Not checked because the run already failed.
    Skipped,
}

#[derive(Debug)]
pub struct RunReport {
    pub seed: u64,
    pub engine: &'static str,
    pub node_count: usize,
    pub fault_phase_ms: u64,
    pub simulated_ms: u64,
    pub events: u64,
    pub trace_hash: u64,
    pub ops: usize,
    pub committed_entries: usize,
    /// Reads whose answers the read checker verified: linearizable, serializable, bounded.
    pub reads_checked: [u64; 3],
    /// Bounded reads a node answered at once (a recent barrier covered them).
    pub bounded_reads_served_locally: u64,
    /// Read barriers followers asked of the leader (`ReadRequest` frames).
    pub reads_asked_of_leader: u64,
    /// Counter increments acknowledged, and the attempts (retries included) they took.
    pub counter_increments: u64,
    pub counter_attempts: u64,
    /// Crashes that struck while an unsynced append rewrote entries the node already held durably.
    pub crashes_during_rewrites: u64,
    /// Lost-connection hints a live engine received: after a crash of the peer, and wrong ones.
    pub hints_delivered: [u64; 2],
    /// The measurement window of a throughput run (`SimConfig::measure_window_ms`), once it closed.
    pub window: Option<WindowStats>,
    pub lincheck: LincheckVerdict,
    /// Wall-clock time the linearizability check took (0 when skipped). Not part of the run's
    /// deterministic outcome: for measuring the checker only.
    pub lincheck_wall_us: u64,
    /// The first broken invariant and the simulated time it broke at.
    pub violation: Option<(u64, Violation)>,
}

/// What a throughput run counts in its measurement window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WindowStats {
    /// When a leader first existed: the window's start.
    pub start_ms: u64,
    pub length_ms: u64,
    /// Log entries that became committed in the window (no-ops and counter increments included).
    pub committed_entries: u64,
    /// Writes of the regular clients begun (first attempt) and acknowledged in the window.
    pub acked_writes: u64,
    /// Per acknowledged write, from its first attempt to the acknowledgement (retries included).
    pub write_latencies_ms: Vec<u64>,
    /// The history reached `max_history_ops` during the window, so clients stopped early and the
    /// rates are too low.
    pub history_full: bool,
}
