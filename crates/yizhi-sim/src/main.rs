//! `yizhi-sim`: run seeds through the deterministic simulator, or replay one with a trace.
//!
//! ```text
//! yizhi-sim --seeds 0..1000 --engine raft --faults standard
//! yizhi-sim --replay 42 --trace
//! ```

use std::process::ExitCode;
use std::time::Instant;

use yizhi_sim::engines::{ENGINE_NAMES, PaxosFactory, RaftFactory};
use yizhi_sim::faults::{FaultProfile, PROFILE_STANDARD, PROFILES, profile_by_name};
use yizhi_sim::node::Mutation;
use yizhi_sim::run::{run_with_trace, shrink, trace_window};
use yizhi_sim::sim::LincheckVerdict;
use yizhi_sim::trace::TraceMode;
use yizhi_sim::{EngineFactory, RunOptions, RunReport, run_seed};

/// Trace shown around a violation: this much simulated time before it.
const VIOLATION_WINDOW_MS: u64 = 300;
const USAGE: &str = "usage: yizhi-sim [--seeds A..B | --seeds N] [--engine raft|raft-lease|paxos|both] \
[--faults none|mild|standard|harsh] [--replay SEED [--trace]] [--progress-every N] [--no-shrink] \
[--mutation send-before-sync|ack-on-propose|stale-reads|forget-vote|forget-promise|bounded-ignores-bound|\
serializable-goes-back|serializable-misdated]";

#[derive(Debug)]
struct Args {
    seeds: std::ops::Range<u64>,
    engine: String,
    profile: FaultProfile,
    replay: Option<u64>,
    trace: bool,
    progress_every: u64,
    shrink: bool,
    mutation: Mutation,
}

fn parse_seeds(text: &str) -> Result<std::ops::Range<u64>, String> {
    let number = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|e| format!("bad seed {s:?}: {e}"))
    };
    if let Some((a, b)) = text.split_once("..=") {
        return Ok(number(a)?..number(b)?.saturating_add(1));
    }
    if let Some((a, b)) = text.split_once("..") {
        return Ok(number(a)?..number(b)?);
    }
    let seed = number(text)?;
    Ok(seed..seed.saturating_add(1))
}

fn parse_args(mut raw: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        seeds: 0..100,
        engine: "raft".into(),
        profile: PROFILE_STANDARD,
        replay: None,
        trace: false,
        progress_every: 100,
        shrink: true,
        mutation: Mutation::None,
    };
    while let Some(flag) = raw.next() {
        let mut value = || raw.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--seeds" => args.seeds = parse_seeds(&value()?)?,
            "--engine" => args.engine = value()?,
            "--faults" => {
                let name = value()?;
                let names: Vec<&str> = PROFILES.iter().map(|p| p.name).collect();
                args.profile =
                    profile_by_name(&name).ok_or(format!("unknown profile {name:?} (one of {names:?})"))?;
            }
            "--replay" => args.replay = Some(parse_seeds(&value()?)?.start),
            "--trace" => args.trace = true,
            "--progress-every" => {
                args.progress_every = value()?.parse().map_err(|e| format!("--progress-every: {e}"))?
            }
            "--no-shrink" => args.shrink = false,
            "--mutation" => {
                let name = value()?;
                args.mutation = Mutation::by_name(&name).ok_or(format!("unknown mutation {name:?}"))?;
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if args.engine != "both" && !ENGINE_NAMES.contains(&args.engine.as_str()) {
        return Err(format!(
            "unknown engine {:?} (one of {ENGINE_NAMES:?})",
            args.engine
        ));
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    // An engine panic is caught and reported as the seed's violation; one line is enough here.
    std::panic::set_hook(Box::new(|info| eprintln!("panic: {info}")));
    let clean = match args.engine.as_str() {
        "raft" => drive(&RaftFactory::SAFE_READS, &args),
        "raft-lease" => drive(&RaftFactory::LEASE_READS, &args),
        "paxos" => drive(&PaxosFactory, &args),
        // The same seeds against both engines, one summary each (`&`, not `&&`: run both).
        "both" => drive(&RaftFactory::SAFE_READS, &args) & drive(&PaxosFactory, &args),
        other => unreachable!("engine {other} passed validation"),
    };
    if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Returns true when no seed broke an invariant.
fn drive<F: EngineFactory>(factory: &F, args: &Args) -> bool {
    match args.replay {
        Some(seed) => replay(factory, seed, args),
        None => sweep(factory, args),
    }
}

fn replay<F: EngineFactory>(factory: &F, seed: u64, args: &Args) -> bool {
    let mode = if args.trace {
        TraceMode::Print
    } else {
        TraceMode::HashOnly
    };
    let report = run_seed(
        factory,
        seed,
        args.profile,
        RunOptions {
            trace: mode,
            ..options(args)
        },
    );
    print_report_line(&report);
    match &report.violation {
        None => true,
        Some(_) => {
            explain(factory, &report, args);
            false
        }
    }
}

fn sweep<F: EngineFactory>(factory: &F, args: &Args) -> bool {
    let started = Instant::now();
    let (mut runs, mut violations, mut simulated_ms, mut ops, mut undecided) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut lincheck_us, mut slowest_lincheck) = (0u64, (0u64, 0u64));
    let (mut reads_checked, mut bounded_local) = ([0u64; 3], 0u64);
    let (mut increments, mut attempts, mut seeds_without_increment) = (0u64, 0u64, 0u64);
    let mut crashes_during_rewrites = 0u64;
    for seed in args.seeds.clone() {
        let report = run_seed(factory, seed, args.profile, options(args));
        runs += 1;
        simulated_ms += report.simulated_ms;
        ops += report.ops as u64;
        for (total, n) in reads_checked.iter_mut().zip(report.reads_checked) {
            *total += n;
        }
        bounded_local += report.bounded_reads_served_locally;
        increments += report.counter_increments;
        attempts += report.counter_attempts;
        seeds_without_increment += u64::from(report.counter_increments == 0);
        crashes_during_rewrites += report.crashes_during_rewrites;
        lincheck_us += report.lincheck_wall_us;
        slowest_lincheck = slowest_lincheck.max((report.lincheck_wall_us, seed));
        if report.lincheck == LincheckVerdict::Undecided {
            // Not a pass: the history was too ambiguous to search within the step budget.
            undecided += 1;
            println!("seed {seed}: linearizability check undecided (replay it to look closer)");
        }
        if report.violation.is_some() {
            violations += 1;
            print_report_line(&report);
            explain(factory, &report, args);
        }
        if args.progress_every > 0 && runs % args.progress_every == 0 {
            println!(
                "progress: {runs} seeds, {violations} violations, {:.1} s simulated, {:.1} s wall",
                simulated_ms as f64 / 1000.0,
                started.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "summary: engine {} faults {}: {runs} seeds, {violations} violations, {:.1} s simulated, {ops} ops checked \
         ({undecided} undecided), reads checked {} linearizable / {} serializable / {} bounded \
         ({bounded_local} bounded answered without a barrier of their own), counter {increments} increments \
         exactly once in {attempts} attempts ({seeds_without_increment} seeds without one), \
         {crashes_during_rewrites} crashes while rewriting durable entries, {:.1} s wall ({:.1} s checking linearizability, slowest seed {} at {:.1} ms)",
        factory.name(),
        args.profile.name,
        simulated_ms as f64 / 1000.0,
        reads_checked[0],
        reads_checked[1],
        reads_checked[2],
        started.elapsed().as_secs_f64(),
        lincheck_us as f64 / 1e6,
        slowest_lincheck.1,
        slowest_lincheck.0 as f64 / 1000.0,
    );
    violations == 0
}

fn options(args: &Args) -> RunOptions {
    RunOptions {
        mutation: args.mutation,
        ..RunOptions::default()
    }
}

fn print_report_line(report: &RunReport) {
    let verdict = match &report.violation {
        None => format!("ok (lincheck {:?})", report.lincheck),
        Some((at_ms, v)) => format!("VIOLATION at {at_ms} ms: {v}"),
    };
    println!(
        "seed {} engine {} nodes {} fault phase {} ms: {} events, {} ms simulated, {} ops, {} committed, trace {:016x}: {verdict}",
        report.seed,
        report.engine,
        report.node_count,
        report.fault_phase_ms,
        report.events,
        report.simulated_ms,
        report.ops,
        report.committed_entries,
        report.trace_hash
    );
}

/// Shrinks the failing run, replays the shortest version with a captured trace, and prints the
/// last moments before the violation for the nodes involved.
fn explain<F: EngineFactory>(factory: &F, report: &RunReport, args: &Args) {
    let Some((_, violation)) = &report.violation else {
        return;
    };
    let fault_phase_ms = if args.shrink {
        shrink(factory, report, args.profile, options(args))
    } else {
        None
    };
    let options = RunOptions {
        trace: TraceMode::Capture,
        fault_phase_ms,
        ..options(args)
    };
    let (short, lines) = run_with_trace(factory, report.seed, args.profile, options);
    println!(
        "  replay: yizhi-sim --replay {} --engine {} --faults {} --mutation {} --trace",
        report.seed,
        report.engine,
        args.profile.name,
        args.mutation.name()
    );
    let Some((at_ms, short_violation)) = &short.violation else {
        println!("  (the shrunk run no longer fails; showing nothing)");
        return;
    };
    println!(
        "  shortest fault phase that still fails: {} ms: {short_violation}",
        short.fault_phase_ms
    );
    let window = trace_window(&lines, *at_ms, VIOLATION_WINDOW_MS, &violation.nodes());
    println!(
        "  last {VIOLATION_WINDOW_MS} ms before it ({} lines):",
        window.len()
    );
    for line in window {
        println!("    {line}");
    }
}
