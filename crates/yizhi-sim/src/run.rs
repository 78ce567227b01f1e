//! Running seeds: one run with its final linearizability check, the determinism check, and
//! shrinking a failing run to the shortest fault phase that still fails.

use std::panic::{AssertUnwindSafe, catch_unwind};

use yizhi_engine::NodeId;
use yizhi_lincheck::mvcc::MvccModel;
use yizhi_lincheck::{CheckResult, check_operations};

use crate::config::SimConfig;
use crate::engines::EngineFactory;
use crate::faults::FaultProfile;
use crate::invariants::Violation;
use crate::report::{LincheckVerdict, RunOptions, RunReport};
use crate::sim::Sim;
use crate::throughput::ThroughputScenario;
use crate::trace::{TraceLine, TraceMode};

/// Search steps the linearizability checker may spend on a history; beyond it the verdict is
/// undecided.
pub const MAX_LINCHECK_STEPS: u64 = 2_000_000;
/// Fault-phase lengths tried when shrinking, as a fraction of the original (in 1/16ths).
pub const SHRINK_STEPS: u64 = 16;

/// Runs one seed to its verdict. An engine panic is reported as a violation, not propagated.
pub fn run_seed<F: EngineFactory>(
    factory: &F,
    seed: u64,
    profile: FaultProfile,
    options: RunOptions,
) -> RunReport {
    run_with_trace(factory, seed, profile, options).0
}

/// Runs one seed, returning the captured trace lines as well (empty unless capturing).
pub fn run_with_trace<F: EngineFactory>(
    factory: &F,
    seed: u64,
    profile: FaultProfile,
    options: RunOptions,
) -> (RunReport, Vec<TraceLine>) {
    run_config(factory, SimConfig::from_seed(seed, profile), options)
}

/// Runs one configuration (a seed's draw, or a fixed scenario such as a throughput measurement)
/// to its verdict, with the final linearizability check.
pub fn run_config<F: EngineFactory>(
    factory: &F,
    config: SimConfig,
    options: RunOptions,
) -> (RunReport, Vec<TraceLine>) {
    let mut sim = Sim::new(factory, config, options);
    let outcome = catch_unwind(AssertUnwindSafe(|| sim.run()));
    let violation = match outcome {
        Ok(violation) => violation,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic".into());
            Some((sim.now_ms(), Violation::Panic { message }))
        }
    };
    let started = std::time::Instant::now();
    let (violation, lincheck) = match violation {
        Some(v) => (Some(v), LincheckVerdict::Skipped),
        None => match check_operations(&lincheck_model(), &sim.history_for_check(), MAX_LINCHECK_STEPS) {
            CheckResult::Linearizable => (None, LincheckVerdict::Linearizable),
            CheckResult::Undecided { .. } => (None, LincheckVerdict::Undecided),
            CheckResult::NotLinearizable { explanation, .. } => (
                Some((sim.now_ms(), Violation::NotLinearizable { explanation })),
                LincheckVerdict::Skipped,
            ),
        },
    };
    let lincheck_wall_us = started.elapsed().as_micros() as u64;
    let report = RunReport {
        lincheck_wall_us,
        ..sim.report(violation, lincheck)
    };
    let lines = sim.trace.lines().cloned().collect();
    (report, lines)
}

/// Runs one seed of the scenario, with every check of a normal run.
pub fn run_throughput<F: EngineFactory>(factory: &F, seed: u64, scenario: &ThroughputScenario) -> RunReport {
    let config = SimConfig::for_throughput(seed, scenario);
    run_config(factory, config, RunOptions::default()).0
}

/// The sequential specification the history is judged against: etcd's API with revisions, from
/// the revision an empty `yizhi_kv` store starts at.
pub fn lincheck_model() -> MvccModel {
    MvccModel {
        initial_revision: yizhi_kv::INITIAL_REVISION,
    }
}

/// Runs `seed` twice and compares trace hashes. Returns the hash, or both hashes if they differ.
pub fn check_determinism<F: EngineFactory>(
    factory: &F,
    seed: u64,
    profile: FaultProfile,
) -> Result<u64, (u64, u64)> {
    let first = run_seed(factory, seed, profile, RunOptions::default());
    let second = run_seed(factory, seed, profile, RunOptions::default());
    if first.trace_hash == second.trace_hash && first.events == second.events {
        Ok(first.trace_hash)
    } else {
        Err((first.trace_hash, second.trace_hash))
    }
}

/// The shortest fault phase (tried in sixteenths of the original) whose run breaks the same
/// invariant. A shorter fault phase replays the same prefix, so the failure stays recognisable.
pub fn shrink<F: EngineFactory>(
    factory: &F,
    report: &RunReport,
    profile: FaultProfile,
    options: RunOptions,
) -> Option<u64> {
    let options = RunOptions {
        trace: TraceMode::HashOnly,
        ..options
    };
    let kind = report.violation.as_ref()?.1.kind();
    for step in 1..SHRINK_STEPS {
        let fault_phase_ms = report.fault_phase_ms * step / SHRINK_STEPS;
        let options = RunOptions {
            fault_phase_ms: Some(fault_phase_ms),
            ..options
        };
        let attempt = run_seed(factory, report.seed, profile, options);
        if attempt.violation.as_ref().is_some_and(|(_, v)| v.kind() == kind) {
            return Some(fault_phase_ms);
        }
    }
    Some(report.fault_phase_ms)
}

/// The trace lines from the last `window_ms` before `at_ms`, restricted to `nodes` (plus
/// simulator-wide lines) when `nodes` is non-empty.
pub fn trace_window(lines: &[TraceLine], at_ms: u64, window_ms: u64, nodes: &[NodeId]) -> Vec<TraceLine> {
    let from_ms = at_ms.saturating_sub(window_ms);
    lines
        .iter()
        .filter(|l| l.time_ms >= from_ms && l.time_ms <= at_ms)
        .filter(|l| nodes.is_empty() || l.node.is_none_or(|n| nodes.contains(&n)))
        .cloned()
        .collect()
}
