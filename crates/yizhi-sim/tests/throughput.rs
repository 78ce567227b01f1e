//! The throughput mode (issue 6's Raft-against-Paxos comparison under message loss): its runs keep
//! every check, measure only after a leader exists, replay exactly, and feel the loss they are
//! given.

use yizhi_sim::report::LincheckVerdict;
use yizhi_sim::throughput::summarize;
use yizhi_sim::{EngineFactory, PaxosFactory, RaftFactory, RunReport, ThroughputScenario, run_throughput};

/// Short windows keep the test quick; the shape of the scenario is the one the table uses.
fn scenario(loss_pct: u64) -> ThroughputScenario {
    ThroughputScenario {
        measure_ms: 3_000,
        ..ThroughputScenario::new(3, loss_pct)
    }
}

fn clean_run<F: EngineFactory>(factory: &F, seed: u64, scenario: &ThroughputScenario) -> RunReport {
    let report = run_throughput(factory, seed, scenario);
    assert!(report.violation.is_none(), "seed {seed}: {:?}", report.violation);
    assert_eq!(report.lincheck, LincheckVerdict::Linearizable, "seed {seed}");
    report
}

#[test]
fn a_window_opens_at_the_first_leader_and_counts_what_the_clients_saw() {
    let s = scenario(5);
    for report in [
        clean_run(&RaftFactory::SAFE_READS, 1, &s),
        clean_run(&PaxosFactory, 1, &s),
    ] {
        let w = report.window.as_ref().expect("a leader was elected");
        assert!(w.start_ms > 0, "{}: no leader exists at time 0", report.engine);
        assert_eq!(w.length_ms, s.measure_ms);
        assert!(!w.history_full);
        assert_eq!(w.write_latencies_ms.len() as u64, w.acked_writes);
        assert!(
            w.acked_writes > 100,
            "{}: {} writes in 3 s",
            report.engine,
            w.acked_writes
        );
        // Every acknowledged write is a committed entry; at most one per client was committed
        // before the window opened.
        assert!(w.committed_entries + s.clients >= w.acked_writes, "{w:?}");
        // The liveness phase ran after the window and the whole history was judged.
        assert!(report.simulated_ms > w.start_ms + w.length_ms);
        assert!(report.ops as u64 >= w.acked_writes);
    }
}

#[test]
fn throughput_runs_replay_exactly() {
    let s = scenario(10);
    let first = clean_run(&PaxosFactory, 7, &s);
    let second = clean_run(&PaxosFactory, 7, &s);
    assert_eq!(first.trace_hash, second.trace_hash);
    assert_eq!(first.window, second.window);
    let other = clean_run(&PaxosFactory, 8, &s);
    assert_ne!(first.trace_hash, other.trace_hash, "the seed decides the run");
}

#[test]
fn loss_slows_the_slowest_writes() {
    for engine in ["raft", "paxos"] {
        let tail_ms = |loss_pct: u64| {
            let s = scenario(loss_pct);
            let reports: Vec<RunReport> = (0..2)
                .map(|seed| match engine {
                    "raft" => clean_run(&RaftFactory::SAFE_READS, seed, &s),
                    _ => clean_run(&PaxosFactory, seed, &s),
                })
                .collect();
            let row = summarize("t", &s, &reports);
            assert!(row.failures.is_empty(), "{:?}", row.failures);
            row.latency_p99_ms
        };
        let (clean_ms, lossy_ms) = (tail_ms(0), tail_ms(30));
        assert!(
            lossy_ms > clean_ms,
            "{engine}: p99 {lossy_ms} ms at 30% loss, {clean_ms} ms without"
        );
    }
}
