//! WAL throughput and commit latency on this machine, against the disk's own floor.
//!
//! Run: `cargo bench -p yizhi-storage --bench wal` (set `YIZHI_BENCH_DIR` to measure another disk).
//! First the floor: a 4 KiB pwrite + fdatasync on a preallocated file, p50/p99. Then 4 KiB records
//! appended and committed through the WAL by 1, 16 and 256 concurrent writers (group commit), and the
//! single writer's commit latency relative to the floor.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use yizhi_engine::{Entry, EntryPayload};
use yizhi_storage::codec::FRAME_HEADER_BYTES;
use yizhi_storage::{Record, Wal, WalConfig};

const RECORD_BYTES: usize = 4096;
/// Entry body overhead: index, term, payload kind.
const ENTRY_FIXED_BYTES: usize = 17;
const FLOOR_SAMPLES: usize = 400;
const RUN_DURATION: Duration = Duration::from_secs(3);
const WRITER_COUNTS: [usize; 3] = [1, 16, 256];
const FLOOR_FILE_BYTES: u64 = 64 * 1024 * 1024;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    assert!(!sorted.is_empty());
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The disk's floor: what one durable 4 KiB append costs without any WAL logic.
fn measure_floor(dir: &Path) -> (Duration, Duration) {
    let path = dir.join("floor.bin");
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .expect("open");
    yizhi_storage::segment::preallocate(&file, &path, FLOOR_FILE_BYTES).expect("preallocate");
    file.sync_all().expect("sync");
    let block = vec![0xabu8; RECORD_BYTES];
    let mut samples = Vec::with_capacity(FLOOR_SAMPLES);
    for i in 0..FLOOR_SAMPLES {
        let started = Instant::now();
        file.write_all_at(&block, (i * RECORD_BYTES) as u64)
            .expect("write");
        file.sync_data().expect("fdatasync");
        samples.push(started.elapsed());
    }
    samples.sort();
    std::fs::remove_file(&path).expect("remove");
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

fn record(index: u64) -> Record {
    let payload = vec![index as u8; RECORD_BYTES - FRAME_HEADER_BYTES - ENTRY_FIXED_BYTES];
    Record::Entry(Entry {
        index: index + 1,
        term: 1,
        payload: EntryPayload::Normal(Bytes::from(payload)),
    })
}

struct RunResult {
    commits: u64,
    elapsed: Duration,
    fsyncs: u64,
    mean_bytes_per_fsync: u64,
    latencies: Vec<Duration>,
}

/// `writers` threads each append one 4 KiB record and wait for it to be durable, in a loop.
fn run_writers(dir: &Path, writers: usize) -> RunResult {
    let wal_dir = dir.join(format!("wal-{writers}"));
    let wal = Wal::create(&wal_dir, WalConfig::default()).expect("create wal");
    let stop = AtomicBool::new(false);
    let commits = AtomicU64::new(0);
    let started = Instant::now();
    let latencies = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..writers)
            .map(|writer| {
                let (wal, stop, commits) = (&wal, &stop, &commits);
                scope.spawn(move || {
                    let mut latencies = Vec::new();
                    let mut n = writer as u64;
                    while !stop.load(Ordering::Relaxed) {
                        let begun = Instant::now();
                        wal.append_sync(&[record(n)]).expect("append");
                        latencies.push(begun.elapsed());
                        commits.fetch_add(1, Ordering::Relaxed);
                        n += writers as u64;
                    }
                    latencies
                })
            })
            .collect();
        std::thread::sleep(RUN_DURATION);
        stop.store(true, Ordering::Relaxed);
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("writer"))
            .collect::<Vec<_>>()
    });
    let elapsed = started.elapsed();
    let metrics = wal.metrics();
    drop(wal);
    std::fs::remove_dir_all(&wal_dir).expect("cleanup");
    let mut latencies = latencies;
    latencies.sort();
    RunResult {
        commits: commits.load(Ordering::Relaxed),
        elapsed,
        fsyncs: metrics.fsyncs,
        mean_bytes_per_fsync: metrics.mean_bytes_per_fsync(),
        latencies,
    }
}

fn main() {
    let base = std::env::var_os("YIZHI_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let dir = tempfile::tempdir_in(&base).expect("bench dir");
    println!(
        "WAL benchmark in {} ({RECORD_BYTES}-byte records)",
        dir.path().display()
    );
    let (floor_p50, floor_p99) = measure_floor(dir.path());
    println!(
        "floor: 4 KiB pwrite + fdatasync  p50 {:.0} us  p99 {:.0} us  ({:.0} syncs/s at p50)",
        micros(floor_p50),
        micros(floor_p99),
        1.0 / floor_p50.as_secs_f64()
    );
    println!();
    println!("writers  commits/s     MB/s  fsyncs/s  KiB/fsync  commit p50 us  commit p99 us");
    let mut single_p50 = Duration::ZERO;
    for writers in WRITER_COUNTS {
        let run = run_writers(dir.path(), writers);
        let seconds = run.elapsed.as_secs_f64();
        let p50 = percentile(&run.latencies, 0.5);
        if writers == 1 {
            single_p50 = p50;
        }
        println!(
            "{writers:>7}  {:>9.0}  {:>7.1}  {:>8.0}  {:>9.1}  {:>13.0}  {:>13.0}",
            run.commits as f64 / seconds,
            run.commits as f64 * RECORD_BYTES as f64 / seconds / 1e6,
            run.fsyncs as f64 / seconds,
            run.mean_bytes_per_fsync as f64 / 1024.0,
            micros(p50),
            micros(percentile(&run.latencies, 0.99)),
        );
    }
    // The disk is shared with other work on this machine: measure the floor again to show drift.
    let (again_p50, again_p99) = measure_floor(dir.path());
    println!();
    println!(
        "floor again: p50 {:.0} us  p99 {:.0} us",
        micros(again_p50),
        micros(again_p99)
    );
    let floor = floor_p50.min(again_p50);
    println!(
        "single-writer commit p50 = {:.2} x the lower floor p50",
        single_p50.as_secs_f64() / floor.as_secs_f64()
    );
}
