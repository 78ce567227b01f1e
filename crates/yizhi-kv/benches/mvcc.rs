//! The state machine alone, without consensus or network: puts/s while loading `KEYS` keys of
//! `VALUE_BYTES`-byte values, then single-key gets/s and 100-key ranges/s, and resident memory
//! per key, for `MemBackend` and `RedbBackend`.
//!
//! Each backend runs in its own child process (this binary re-executed), so resident memory is
//! measured from a clean start. `YIZHI_KV_BENCH_KEYS` overrides the key count (default 1M);
//! `YIZHI_KV_BENCH_PENDING` the redb overlay's entry bound; `YIZHI_KV_BENCH_CACHE_MIB` redb's page
//! cache; `YIZHI_KV_BENCH_ONLY=redb` (or `mem`) runs one backend.
//!
//! Run: `cargo bench -p yizhi-kv --bench mvcc`.

use std::io::Write;
use std::process::Command as Process;
use std::time::Instant;

use bytes::Bytes;
use yizhi_engine::SeededRng;
use yizhi_kv::*;

const DEFAULT_KEYS: u64 = 1_000_000;
const VALUE_BYTES: usize = 256;
const GETS: u64 = 200_000;
const RANGES: u64 = 20_000;
const RANGE_KEYS: u64 = 100;
const BACKEND_ENV: &str = "YIZHI_KV_BENCH_BACKEND";
const KEYS_ENV: &str = "YIZHI_KV_BENCH_KEYS";
const PENDING_ENV: &str = "YIZHI_KV_BENCH_PENDING";
const CACHE_ENV: &str = "YIZHI_KV_BENCH_CACHE_MIB";
const ONLY_ENV: &str = "YIZHI_KV_BENCH_ONLY";
/// A prime: `i * SCATTER mod keys` is a permutation (keys out of order) unless it divides `keys`.
const SCATTER: u64 = 2_654_435_761;

fn key(i: u64) -> Bytes {
    Bytes::from(format!("/registry/pods/default/{i:010}"))
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

struct Measured {
    load_secs: f64,
    puts_per_sec: f64,
    gets_per_sec: f64,
    ranges_per_sec: f64,
    rss_bytes_per_key: f64,
    extra: String,
}

fn load<B: Backend>(store: &mut MvccStore<B>, keys: u64) -> f64 {
    let scatter = if keys.is_multiple_of(SCATTER) {
        1
    } else {
        SCATTER % keys
    };
    let start = Instant::now();
    for i in 0..keys {
        let k = ((u128::from(i) * u128::from(scatter) + 7) % u128::from(keys)) as u64;
        // A fresh buffer per value, as a decoded log entry would carry.
        let value = Bytes::from(vec![(k % 251) as u8; VALUE_BYTES]);
        let put = Command::Put(PutRequest {
            key: key(k),
            value,
            ..Default::default()
        });
        let applied = store.apply(&put, i + 1).expect("apply");
        assert!(applied.response.is_ok());
    }
    start.elapsed().as_secs_f64()
}

fn reads<B: Backend>(store: &MvccStore<B>, keys: u64) -> (f64, f64) {
    let mut rng = SeededRng::new(42);
    let start = Instant::now();
    for _ in 0..GETS {
        let k = rng.below(keys);
        let got = store
            .range(&RangeRequest {
                key: key(k),
                ..Default::default()
            })
            .expect("get");
        assert_eq!(got.kvs.len(), 1);
        assert_eq!(got.kvs[0].value.len(), VALUE_BYTES);
    }
    let gets_per_sec = GETS as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    for _ in 0..RANGES {
        let k = rng.below(keys - RANGE_KEYS);
        let got = store
            .range(&RangeRequest {
                key: key(k),
                range_end: key(k + RANGE_KEYS),
                ..Default::default()
            })
            .expect("range");
        assert_eq!(got.kvs.len() as u64, RANGE_KEYS);
    }
    (gets_per_sec, RANGES as f64 / start.elapsed().as_secs_f64())
}

fn run_child(backend: &str) -> Measured {
    let keys = env_u64(KEYS_ENV, DEFAULT_KEYS);
    assert!(keys > RANGE_KEYS, "need more than {RANGE_KEYS} keys");
    let rss_before = rss_bytes();
    let (load_secs, gets_per_sec, ranges_per_sec, extra) = match backend {
        "mem" => {
            let mut store = MvccStore::open(MemBackend::new(), KvConfig::default()).expect("open");
            let load_secs = load(&mut store, keys);
            let (g, r) = reads(&store, keys);
            (load_secs, g, r, String::new())
        }
        "redb" => {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("bench.redb");
            let defaults = RedbConfig::default();
            let config = RedbConfig {
                max_pending_entries: env_u64(PENDING_ENV, defaults.max_pending_entries as u64) as usize,
                cache_bytes: (env_u64(CACHE_ENV, defaults.cache_bytes as u64 >> 20) << 20) as usize,
                ..defaults
            };
            let backend = RedbBackend::open_with(&path, config).expect("open redb");
            let mut store = MvccStore::open(backend, KvConfig::default()).expect("open");
            let mut load_secs = load(&mut store, keys);
            let flush_start = Instant::now();
            store.flush(true).expect("durable flush");
            let flush_secs = flush_start.elapsed().as_secs_f64();
            load_secs += flush_secs;
            let (g, r) = reads(&store, keys);
            let file_bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
            let extra = format!(
                "pending<={} entries/{} MiB, cache {} MiB, final durable flush {flush_secs:.2} s, file {} MiB",
                config.max_pending_entries,
                config.max_pending_bytes >> 20,
                config.cache_bytes >> 20,
                file_bytes >> 20
            );
            (load_secs, g, r, extra)
        }
        other => panic!("unknown backend {other}"),
    };
    let rss_after = rss_bytes();
    Measured {
        load_secs,
        puts_per_sec: keys as f64 / load_secs,
        gets_per_sec,
        ranges_per_sec,
        rss_bytes_per_key: rss_after.saturating_sub(rss_before) as f64 / keys as f64,
        extra,
    }
}

fn main() {
    if let Ok(backend) = std::env::var(BACKEND_ENV) {
        let m = run_child(&backend);
        println!(
            "result {} {} {} {} {} {}",
            m.load_secs, m.puts_per_sec, m.gets_per_sec, m.ranges_per_sec, m.rss_bytes_per_key, m.extra
        );
        return;
    }
    let keys = env_u64(KEYS_ENV, DEFAULT_KEYS);
    println!("yizhi-kv state machine, {keys} keys x {VALUE_BYTES} B values, one thread");
    println!(
        "{:<8} {:>10} {:>12} {:>12} {:>16} {:>14}  notes",
        "backend", "load s", "puts/s", "gets/s", "100-key ranges/s", "RSS B/key"
    );
    let only = std::env::var(ONLY_ENV).ok();
    for backend in ["mem", "redb"] {
        if only.as_deref().is_some_and(|o| o != backend) {
            continue;
        }
        let output = Process::new(std::env::current_exe().expect("bench binary"))
            .env(BACKEND_ENV, backend)
            .output()
            .expect("run child");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let Some(line) = stdout.lines().find_map(|l| l.strip_prefix("result ")) else {
            panic!(
                "{backend} child failed: {}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        };
        let fields: Vec<&str> = line.splitn(6, ' ').collect();
        let num = |i: usize| fields[i].parse::<f64>().expect("number");
        println!(
            "{backend:<8} {:>10.1} {:>12.0} {:>12.0} {:>16.0} {:>14.0}  {}",
            num(0),
            num(1),
            num(2),
            num(3),
            num(4),
            fields.get(5).unwrap_or(&"")
        );
        std::io::stdout().flush().expect("stdout");
    }
}
