//! `yizhi-sim`: run seeds through the deterministic simulator, or replay one with a trace.
//!
//! ```text
//! yizhi-sim --seeds 0..1000 --engine raft --faults standard
//! yizhi-sim --replay 42 --trace
//! yizhi-sim throughput --engine both --loss 0,1,5,10 --seeds 0..20
//! ```

use std::process::ExitCode;
use std::time::Instant;

use yizhi_sim::engines::{ENGINE_NAMES, PaxosFactory, RaftFactory};
use yizhi_sim::faults::{FaultProfile, PROFILE_STANDARD, PROFILES, profile_by_name};
use yizhi_sim::node::Mutation;
use yizhi_sim::report::LincheckVerdict;
use yizhi_sim::run::{run_with_trace, shrink, trace_window};
use yizhi_sim::throughput::{ThroughputRow, markdown_table, summarize};
use yizhi_sim::trace::TraceMode;
use yizhi_sim::{EngineFactory, RunOptions, RunReport, ThroughputScenario, run_seed, run_throughput};

/// Trace shown around a violation: this much simulated time before it.
const VIOLATION_WINDOW_MS: u64 = 300;
const USAGE: &str = "usage: yizhi-sim [--seeds A..B | --seeds N] [--engine raft|raft-lease|paxos|both] \
[--faults none|mild|standard|harsh] [--replay SEED [--trace]] [--progress-every N] [--no-shrink] [--every-seed] \
[--mutation send-before-sync|ack-on-propose|stale-reads|forget-vote|forget-promise|bounded-ignores-bound|\
serializable-goes-back|serializable-misdated]
       yizhi-sim throughput [--engine raft|raft-lease|paxos|both] [--loss PCT,PCT,..] [--nodes N,N,..] \
[--seeds A..B | --seeds N] [--clients N] [--window-s S]";

#[derive(Debug)]
struct Args {
    seeds: std::ops::Range<u64>,
    engine: String,
    profile: FaultProfile,
    replay: Option<u64>,
    trace: bool,
    progress_every: u64,
    shrink: bool,
    /// Print every seed's report line (trace hash included), not only the failing ones: two
    /// builds that must behave the same are compared by these lines.
    every_seed: bool,
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
        every_seed: false,
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
            "--every-seed" => args.every_seed = true,
            "--mutation" => {
                let name = value()?;
                args.mutation = Mutation::by_name(&name).ok_or(format!("unknown mutation {name:?}"))?;
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    check_engine(&args.engine, "")?;
    Ok(args)
}

/// `--engine` names one of [`ENGINE_NAMES`] or "both"; `or_both` is what the error adds to the list.
fn check_engine(engine: &str, or_both: &str) -> Result<(), String> {
    if engine != "both" && !ENGINE_NAMES.contains(&engine) {
        return Err(format!(
            "unknown engine {engine:?} (one of {ENGINE_NAMES:?}{or_both})"
        ));
    }
    Ok(())
}

/// What `yizhi-sim throughput` measures: every engine × cluster size × loss rate, over the seeds.
#[derive(Debug)]
struct ThroughputArgs {
    engine: String,
    loss_pcts: Vec<u64>,
    node_counts: Vec<u64>,
    seeds: std::ops::Range<u64>,
    clients: u64,
    window_s: u64,
}

/// Values of a comma-separated list flag.
const MAX_LIST_VALUES: usize = 16;

fn parse_list(flag: &str, text: &str) -> Result<Vec<u64>, String> {
    let values = text
        .split(',')
        .map(|v| v.trim().parse::<u64>().map_err(|e| format!("{flag} {v:?}: {e}")))
        .collect::<Result<Vec<u64>, String>>()?;
    if values.len() > MAX_LIST_VALUES {
        return Err(format!("{flag}: at most {MAX_LIST_VALUES} values"));
    }
    Ok(values)
}

fn parse_throughput_args(mut raw: impl Iterator<Item = String>) -> Result<ThroughputArgs, String> {
    let mut args = ThroughputArgs {
        engine: "both".into(),
        loss_pcts: vec![0, 1, 5, 10],
        node_counts: vec![3],
        seeds: 0..20,
        clients: yizhi_sim::throughput::CLIENTS_DEFAULT,
        window_s: yizhi_sim::throughput::MEASURE_MS_DEFAULT / 1000,
    };
    while let Some(flag) = raw.next() {
        let mut value = || raw.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--engine" => args.engine = value()?,
            "--loss" => args.loss_pcts = parse_list("--loss", &value()?)?,
            "--nodes" => args.node_counts = parse_list("--nodes", &value()?)?,
            "--seeds" => args.seeds = parse_seeds(&value()?)?,
            "--clients" => args.clients = value()?.parse().map_err(|e| format!("--clients: {e}"))?,
            "--window-s" => args.window_s = value()?.parse().map_err(|e| format!("--window-s: {e}"))?,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    check_engine(&args.engine, " or both")?;
    if args.seeds.is_empty() {
        return Err("--seeds: no seeds".into());
    }
    for scenario in scenarios(&args) {
        scenario.validate()?;
    }
    Ok(args)
}

fn scenarios(args: &ThroughputArgs) -> Vec<ThroughputScenario> {
    let mut out = Vec::new();
    for &nodes in &args.node_counts {
        for &loss in &args.loss_pcts {
            out.push(ThroughputScenario {
                clients: args.clients,
                measure_ms: args.window_s.saturating_mul(1000),
                ..ThroughputScenario::new(nodes, loss)
            });
        }
    }
    out
}

fn main() -> ExitCode {
    let mut raw = std::env::args().skip(1).peekable();
    if raw.peek().map(String::as_str) == Some("throughput") {
        raw.next();
        return match parse_throughput_args(raw) {
            Ok(args) => throughput(&args),
            Err(message) => {
                eprintln!("{message}");
                ExitCode::from(2)
            }
        };
    }
    let args = match parse_args(raw) {
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

/// Measures and prints the table; fails if any run broke a check or measured nothing.
fn throughput(args: &ThroughputArgs) -> ExitCode {
    std::panic::set_hook(Box::new(|info| eprintln!("panic: {info}")));
    let started = Instant::now();
    let mut rows = Vec::new();
    for scenario in scenarios(args) {
        let mut measure = |factory: &dyn Fn(u64) -> RunReport, name: &'static str| {
            let reports: Vec<RunReport> = args.seeds.clone().map(factory).collect();
            let row = summarize(name, &scenario, &reports);
            eprintln!(
                "{name} nodes {} loss {}%: {} seeds measured, {:.1} s wall so far",
                scenario.node_count,
                scenario.loss_pct,
                row.measured_seeds,
                started.elapsed().as_secs_f64()
            );
            rows.push(row);
        };
        let raft = |seed| run_throughput(&RaftFactory::SAFE_READS, seed, &scenario);
        let lease = |seed| run_throughput(&RaftFactory::LEASE_READS, seed, &scenario);
        let paxos = |seed| run_throughput(&PaxosFactory, seed, &scenario);
        match args.engine.as_str() {
            "raft" => measure(&raft, "raft"),
            "raft-lease" => measure(&lease, "raft-lease"),
            "paxos" => measure(&paxos, "paxos"),
            _ => {
                measure(&raft, "raft");
                measure(&paxos, "paxos");
            }
        }
    }
    print_throughput(args, &rows);
    if rows.iter().all(|r| r.failures.is_empty()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_throughput(args: &ThroughputArgs, rows: &[ThroughputRow]) {
    let scenario = ThroughputScenario::new(0, 0);
    println!(
        "Seeds {}..{}; {} closed-loop put clients (plus the exactly-once counter client) on {} keys; \
         a {} s window from the first leader; every link {}–{} ms uniform delay and the given loss, \
         nothing else (no crashes, partitions, duplicates); fsync 1–{} ms; tick 10 ms ± 10%; \
         engine defaults; no compaction. Every check stays on: invariants after every event, the \
         counter, the liveness phase and the linearizability check of the whole history. Committed \
         entries include no-ops and the counter's increments; acked writes and latencies count the \
         put clients' writes begun in the window, from the first attempt to the acknowledgement \
         (retries included).\n",
        args.seeds.start,
        args.seeds.end,
        args.clients,
        scenario.key_count,
        args.window_s,
        scenario.link_delay_ms_min,
        scenario.link_delay_ms_max,
        scenario.fsync_ms_max,
    );
    print!("{}", markdown_table(rows));
    let losses: Vec<String> = args.loss_pcts.iter().map(u64::to_string).collect();
    let nodes: Vec<String> = args.node_counts.iter().map(u64::to_string).collect();
    println!(
        "\nDeterministic: the same command prints exactly these numbers again \
         (`yizhi-sim throughput --engine {} --nodes {} --loss {} --seeds {}..{} --clients {} --window-s {}`).",
        args.engine,
        nodes.join(","),
        losses.join(","),
        args.seeds.start,
        args.seeds.end,
        args.clients,
        args.window_s
    );
    for row in rows {
        for failure in &row.failures {
            println!(
                "FAILED {} nodes {} loss {}%: {failure}",
                row.engine, row.node_count, row.loss_pct
            );
        }
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
    let (mut reads_checked, mut bounded_local, mut asked_of_leader) = ([0u64; 3], 0u64, 0u64);
    let (mut increments, mut attempts, mut seeds_without_increment) = (0u64, 0u64, 0u64);
    let mut crashes_during_rewrites = 0u64;
    let mut hints = [0u64; 2];
    for seed in args.seeds.clone() {
        let report = run_seed(factory, seed, args.profile, options(args));
        runs += 1;
        simulated_ms += report.simulated_ms;
        ops += report.ops as u64;
        for (total, n) in reads_checked.iter_mut().zip(report.reads_checked) {
            *total += n;
        }
        bounded_local += report.bounded_reads_served_locally;
        asked_of_leader += report.reads_asked_of_leader;
        increments += report.counter_increments;
        attempts += report.counter_attempts;
        seeds_without_increment += u64::from(report.counter_increments == 0);
        crashes_during_rewrites += report.crashes_during_rewrites;
        hints[0] += report.hints_delivered[0];
        hints[1] += report.hints_delivered[1];
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
        } else if args.every_seed {
            print_report_line(&report);
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
         ({bounded_local} bounded answered without a barrier of their own, {asked_of_leader} barriers asked of \
         the leader), counter {increments} increments \
         exactly once in {attempts} attempts ({seeds_without_increment} seeds without one), \
         {crashes_during_rewrites} crashes while rewriting durable entries, lost-connection hints {} after \
         crashes / {} wrong, {:.1} s wall ({:.1} s checking linearizability, slowest seed {} at {:.1} ms)",
        factory.name(),
        args.profile.name,
        simulated_ms as f64 / 1000.0,
        reads_checked[0],
        reads_checked[1],
        reads_checked[2],
        hints[0],
        hints[1],
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
