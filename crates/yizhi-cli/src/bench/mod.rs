//! `yizhi bench`: load generator for anything that speaks etcd's v3 API (Yizhi and etcd alike), in
//! the spirit of etcd's `benchmark` tool. Each workload reports throughput, a latency histogram of
//! the successful operations (hdrhistogram, µs), every error (counted, first distinct messages
//! kept) and, with `--pids`, the servers' CPU time and memory. `--json` prints one JSON object.

pub mod cluster;
pub mod failover;
pub mod floor;
pub mod load;
pub mod procs;
pub mod report;
pub mod watch;
pub mod workloads;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use tonic::transport::Channel;
use yizhi_proto::etcdserverpb::kv_client::KvClient;

use load::{ClientTally, KeySpace, Plan, drive, merge};
use report::Report;
use workloads::{KvOp, KvTarget};

/// Limits on what one bench process sets up.
pub const MAX_CLIENTS: usize = 10_000;
pub const MAX_CONNS: usize = 1_000;
pub const MAX_WATCHERS: usize = 10_000;
pub const MAX_VALUE_BYTES: usize = 1_572_864;
pub const MAX_KEY_BYTES: usize = 4_096;
pub const MAX_KEY_SPACE: u64 = 100_000_000;
/// Operations of a run given neither --total nor --duration.
const DEFAULT_TOTAL: u64 = 10_000;

#[derive(Clone, Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub workload: Workload,
}

#[derive(Clone, Debug, Subcommand)]
pub enum Workload {
    /// Puts of keys drawn from the key space (or in order with --sequential-keys).
    Put(LoadArgs),
    /// Single-key Ranges over a prefilled key space.
    Range(RangeArgs),
    /// Txns without compares putting --txn-ops keys each.
    TxnPut(TxnPutArgs),
    /// Txns that read a key (with probability --read-ratio) or put it; prefilled key space.
    TxnMixed(MixedArgs),
    /// Keep-alive round trips, one lease and one stream per client.
    LeaseKeepalive(LoadArgs),
    /// Put → watch event latency: --watchers streams see every put of the --clients putters.
    WatchLatency(WatchArgs),
    /// Ranges (with probability --read-ratio) and Puts; prefilled key space.
    Mixed(MixedArgs),
    /// kill -9 the leader's process and time the first acknowledged write after it.
    Failover(FailoverArgs),
    /// The machine's floor: fdatasync of 4 KiB appends and a loopback TCP round trip.
    Floor(FloorArgs),
}

#[derive(Clone, Debug, Args)]
pub struct LoadArgs {
    /// Comma-separated client URLs (`host:port` or `http://host:port`).
    #[arg(long, default_value = "127.0.0.1:2379")]
    pub endpoints: String,
    /// gRPC connections, spread over the endpoints; clients share them round-robin.
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// Concurrent clients (tokio tasks), each with one request in flight.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Operations to run [default: 10000 unless --duration is given].
    #[arg(long, conflicts_with = "duration")]
    pub total: Option<u64>,
    /// Seconds to run.
    #[arg(long)]
    pub duration: Option<f64>,
    #[arg(long, default_value_t = 16)]
    pub key_size: usize,
    #[arg(long, default_value_t = 256)]
    pub val_size: usize,
    /// Distinct keys the workload draws from.
    #[arg(long, default_value_t = 10_000)]
    pub key_space: u64,
    /// Keys in order (0, 1, 2, …, wrapping) instead of seeded random draws.
    #[arg(long)]
    pub sequential_keys: bool,
    /// Send everything to the leader (found with Maintenance.Status).
    #[arg(long)]
    pub target_leader: bool,
    /// Open loop: operations per second across all clients (latency counts from the scheduled start).
    #[arg(long)]
    pub rate: Option<f64>,
    /// An operation without an answer after this long counts as an error.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Seed of the key draws.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Server PIDs (comma-separated) whose CPU time and memory are sampled before and after.
    #[arg(long)]
    pub pids: Option<String>,
    /// Print one JSON object instead of the text summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Consistency {
    /// Linearizable (a read barrier through the leader).
    L,
    /// Serializable (the contacted member's local state).
    S,
}

#[derive(Clone, Debug, Args)]
pub struct RangeArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
}

#[derive(Clone, Debug, Args)]
pub struct TxnPutArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Puts per txn.
    #[arg(long, default_value_t = 1)]
    pub txn_ops: usize,
}

#[derive(Clone, Debug, Args)]
pub struct MixedArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Fraction of operations that read (0 to 1).
    #[arg(long, default_value_t = 0.5)]
    pub read_ratio: f64,
    /// Consistency of the reads (mixed only; a txn's reads are always linearizable).
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
}

#[derive(Clone, Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Watch streams, each seeing every put.
    #[arg(long, default_value_t = 100)]
    pub watchers: usize,
}

#[derive(Clone, Debug, Args)]
pub struct FailoverArgs {
    /// Every member's client URL, comma-separated.
    #[arg(long)]
    pub endpoints: String,
    /// Every member's PID, in the order of --endpoints.
    #[arg(long)]
    pub pids: String,
    /// Give up if no write is acknowledged this long after the kill.
    #[arg(long, default_value_t = 30_000)]
    pub timeout_ms: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Debug, Args)]
pub struct FloorArgs {
    /// A directory on the file system the servers' data lives on.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    #[arg(long, default_value_t = 200)]
    pub samples: usize,
    #[arg(long)]
    pub json: bool,
}

/// Runs a bench subcommand; returns the process exit code (1: setup failed or the run had errors).
pub fn run(args: BenchArgs) -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("yizhi bench: tokio runtime: {e}");
            return 1;
        }
    };
    let json = match &args.workload {
        Workload::Put(a) | Workload::LeaseKeepalive(a) => a.json,
        Workload::Range(a) => a.load.json,
        Workload::TxnPut(a) => a.load.json,
        Workload::TxnMixed(a) | Workload::Mixed(a) => a.load.json,
        Workload::WatchLatency(a) => a.load.json,
        Workload::Failover(a) => a.json,
        Workload::Floor(a) => a.json,
    };
    match runtime.block_on(run_workload(args.workload)) {
        Ok((text, value)) => {
            if json {
                println!("{value}");
            } else {
                print!("{text}");
            }
            let errors = value.get("error_count").and_then(Value::as_u64).unwrap_or(0);
            i32::from(errors > 0)
        }
        Err(e) => {
            eprintln!("yizhi bench: {e}");
            1
        }
    }
}

async fn run_workload(workload: Workload) -> Result<(String, Value), String> {
    let report = match workload {
        Workload::Put(load) => run_kv(&load, KvOp::Put, "put", vec![]).await?,
        Workload::Range(a) => {
            let serializable = a.consistency == Consistency::S;
            let consistency = json!(if serializable { "s" } else { "l" });
            run_kv(
                &a.load,
                KvOp::Range { serializable },
                "range",
                vec![("consistency", consistency)],
            )
            .await?
        }
        Workload::TxnPut(a) => {
            if a.txn_ops == 0 || a.txn_ops > 128 {
                return Err("--txn-ops must be within 1..=128".into());
            }
            let op = KvOp::TxnPut { ops: a.txn_ops };
            run_kv(&a.load, op, "txn-put", vec![("txn_ops", json!(a.txn_ops))]).await?
        }
        Workload::TxnMixed(a) => {
            let op = KvOp::TxnMixed {
                read_ratio: read_ratio(a.read_ratio)?,
            };
            run_kv(
                &a.load,
                op,
                "txn-mixed",
                vec![("read_ratio", json!(a.read_ratio))],
            )
            .await?
        }
        Workload::Mixed(a) => {
            let serializable = a.consistency == Consistency::S;
            let op = KvOp::Mixed {
                read_ratio: read_ratio(a.read_ratio)?,
                serializable,
            };
            let settings = vec![
                ("read_ratio", json!(a.read_ratio)),
                ("consistency", json!(if serializable { "s" } else { "l" })),
            ];
            run_kv(&a.load, op, "mixed", settings).await?
        }
        Workload::LeaseKeepalive(load) => run_lease(&load).await?,
        Workload::WatchLatency(a) => run_watch(&a).await?,
        Workload::Failover(a) => {
            let endpoints = cluster::parse_endpoints(&a.endpoints)?;
            let pids = parse_pids(&a.pids)?;
            let outcome = failover::run(&endpoints, &pids, Duration::from_millis(a.timeout_ms)).await?;
            return Ok((outcome.to_text(), outcome.to_json()));
        }
        Workload::Floor(a) => {
            if a.samples == 0 || a.samples > floor::MAX_FLOOR_SAMPLES {
                return Err(format!(
                    "--samples must be within 1..={}",
                    floor::MAX_FLOOR_SAMPLES
                ));
            }
            let dir = a.dir.clone();
            let measured = tokio::task::spawn_blocking(move || floor::measure(&dir, a.samples))
                .await
                .map_err(|e| format!("floor task: {e}"))??;
            return Ok((measured.to_text(&a.dir), measured.to_json(&a.dir)));
        }
    };
    Ok((report.to_text(), report.to_json()))
}

fn read_ratio(ratio: f64) -> Result<f64, String> {
    if (0.0..=1.0).contains(&ratio) {
        Ok(ratio)
    } else {
        Err(format!("--read-ratio {ratio} is not within 0..=1"))
    }
}

fn parse_pids(list: &str) -> Result<Vec<i32>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.parse::<i32>() {
            Ok(pid) if pid > 0 => Ok(pid),
            _ => Err(format!("bad pid {p:?}")),
        })
        .collect()
}

/// Everything a load run needs, checked and connected.
struct Setup {
    channels: Vec<Channel>,
    endpoints: Vec<String>,
    keys: KeySpace,
    plan: Plan,
    pids: Vec<i32>,
}

impl LoadArgs {
    fn validate(&self) -> Result<(), String> {
        let within = |name: &str, value: usize, low: usize, high: usize| {
            if (low..=high).contains(&value) {
                Ok(())
            } else {
                Err(format!("--{name} {value} is not within {low}..={high}"))
            }
        };
        within("clients", self.clients, 1, MAX_CLIENTS)?;
        within("conns", self.conns, 1, MAX_CONNS)?;
        within("key-size", self.key_size, 1, MAX_KEY_BYTES)?;
        within("val-size", self.val_size, 0, MAX_VALUE_BYTES)?;
        if self.key_space > MAX_KEY_SPACE {
            return Err(format!("--key-space is at most {MAX_KEY_SPACE}"));
        }
        if self.duration.is_some_and(|d| !(d > 0.0 && d <= 86_400.0)) {
            return Err("--duration must be within (0, 86400] seconds".into());
        }
        if self.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            return Err("--rate must be a positive number".into());
        }
        if self.timeout_ms == 0 {
            return Err("--timeout-ms must be at least 1".into());
        }
        Ok(())
    }

    async fn setup(&self) -> Result<Setup, String> {
        self.validate()?;
        let mut endpoints = cluster::parse_endpoints(&self.endpoints)?;
        if self.target_leader {
            let leader = cluster::find_leader(&endpoints, Duration::from_secs(10)).await?;
            endpoints = vec![endpoints[leader].clone()];
        }
        let channels = cluster::connect_all(&endpoints, self.conns).await?;
        let plan = Plan {
            total: match (self.total, self.duration) {
                (Some(total), _) => Some(total),
                (None, Some(_)) => None,
                (None, None) => Some(DEFAULT_TOTAL),
            },
            duration: self.duration.map(Duration::from_secs_f64),
            rate: self.rate,
            op_timeout: Duration::from_millis(self.timeout_ms),
        };
        Ok(Setup {
            channels,
            endpoints,
            keys: KeySpace::new(self.key_size, self.key_space)?,
            plan,
            pids: self
                .pids
                .as_deref()
                .map(parse_pids)
                .transpose()?
                .unwrap_or_default(),
        })
    }

    fn settings(&self, setup: &Setup, extra: Vec<(&str, Value)>) -> Vec<(String, Value)> {
        let mut settings = vec![
            ("endpoints".to_string(), json!(setup.endpoints.join(","))),
            ("conns".into(), json!(self.conns)),
            ("clients".into(), json!(self.clients)),
            ("total".into(), json!(setup.plan.total)),
            ("duration_s".into(), json!(self.duration)),
            ("rate".into(), json!(self.rate)),
            ("key_size".into(), json!(self.key_size)),
            ("val_size".into(), json!(self.val_size)),
            ("key_space".into(), json!(self.key_space)),
            ("sequential_keys".into(), json!(self.sequential_keys)),
            ("target_leader".into(), json!(self.target_leader)),
        ];
        settings.extend(extra.into_iter().map(|(k, v)| (k.to_string(), v)));
        settings
    }
}

/// The servers' (`--pids`), this bench process's and the whole machine's use, sampled at the
/// start of a run.
struct ProcSamples {
    servers: Vec<procs::ProcSample>,
    client: procs::ProcSample,
    machine_busy_seconds: f64,
}

fn sample_procs(pids: &[i32]) -> Result<ProcSamples, String> {
    Ok(ProcSamples {
        servers: pids
            .iter()
            .map(|pid| procs::sample(*pid))
            .collect::<Result<_, _>>()?,
        client: procs::sample(std::process::id() as i32)?,
        machine_busy_seconds: procs::machine_busy_seconds()?,
    })
}

/// What a run used: each server since `before`, the bench client itself (on a small machine it
/// competes with the servers for the same cores, which bounds what any server can reach), and
/// the whole machine (what is left after both is other work that disturbed the run).
struct RunUsage {
    servers: Vec<procs::ProcUsage>,
    client_cpu_seconds: f64,
    machine_busy_cpu_seconds: f64,
}

fn proc_usage(pids: &[i32], before: &ProcSamples) -> Result<RunUsage, String> {
    let after = sample_procs(pids)?;
    let servers = pids
        .iter()
        .zip(before.servers.iter().zip(after.servers))
        .map(|(pid, (b, a))| procs::ProcUsage::between(*pid, *b, a))
        .collect();
    Ok(RunUsage {
        servers,
        client_cpu_seconds: (after.client.cpu_seconds - before.client.cpu_seconds).max(0.0),
        machine_busy_cpu_seconds: (after.machine_busy_seconds - before.machine_busy_seconds).max(0.0),
    })
}

/// The report of a run whose driven operations are also its samples (`all`, merged).
fn report(
    workload: &str,
    settings: Vec<(String, Value)>,
    elapsed: Duration,
    all: ClientTally,
    usage: RunUsage,
) -> Report {
    Report {
        workload: workload.to_string(),
        settings,
        elapsed,
        ok_ops: all.ok_ops,
        latency_us: all.latency_us,
        errors: all.errors,
        procs: usage.servers,
        client_cpu_seconds: usage.client_cpu_seconds,
        machine_busy_cpu_seconds: usage.machine_busy_cpu_seconds,
        extra: vec![],
    }
}

impl LoadArgs {
    /// The KV clients and keys of a run, with this run's value.
    fn kv_target(&self, setup: &Setup) -> Arc<KvTarget> {
        Arc::new(KvTarget {
            clients: setup.channels.iter().cloned().map(KvClient::new).collect(),
            keys: setup.keys.clone(),
            sequential: self.sequential_keys,
            seed: self.seed,
            value: vec![b'v'; self.val_size],
        })
    }
}

async fn run_kv(load: &LoadArgs, op: KvOp, name: &str, extra: Vec<(&str, Value)>) -> Result<Report, String> {
    let setup = load.setup().await?;
    let target = load.kv_target(&setup);
    if op.reads() {
        target.prefill(setup.plan.op_timeout).await?;
    }
    let before = sample_procs(&setup.pids)?;
    let runner = target.clone();
    let (tallies, elapsed) = drive(load.clients, setup.plan, name, move |client, ticket| {
        let target = runner.clone();
        async move { target.run_op(op, client, ticket).await }
    })
    .await;
    let usage = proc_usage(&setup.pids, &before)?;
    Ok(report(
        name,
        load.settings(&setup, extra),
        elapsed,
        merge(tallies),
        usage,
    ))
}

async fn run_lease(load: &LoadArgs) -> Result<Report, String> {
    let setup = load.setup().await?;
    let streams = workloads::open_keepalives(&setup.channels, load.clients).await?;
    let before = sample_procs(&setup.pids)?;
    let (tallies, elapsed) = drive(load.clients, setup.plan, "lease-keepalive", move |client, _| {
        let streams = streams.clone();
        async move { workloads::keepalive_once(&streams[client]).await }
    })
    .await;
    let usage = proc_usage(&setup.pids, &before)?;
    let settings = load.settings(&setup, vec![]);
    Ok(report(
        "lease-keepalive",
        settings,
        elapsed,
        merge(tallies),
        usage,
    ))
}

/// Putters drive the load; the latency samples are the watchers' deliveries.
async fn run_watch(args: &WatchArgs) -> Result<Report, String> {
    let load = &args.load;
    check_watch_args(args)?;
    let setup = load.setup().await?;
    let start = tokio::time::Instant::now();
    let watchers = watch::start(&setup.channels, args.watchers, &setup.keys, start).await?;
    let target = load.kv_target(&setup);
    let before = sample_procs(&setup.pids)?;
    let (put_tallies, elapsed) = drive(
        load.clients,
        setup.plan,
        "watch-latency",
        move |client, ticket| stamped_put(target.clone(), start, client, ticket),
    )
    .await;
    let puts = merge(put_tallies);
    let expected = puts.ok_ops * args.watchers as u64;
    let deliveries = merge(watchers.finish(expected).await);
    let usage = proc_usage(&setup.pids, &before)?;
    let mut errors = puts.errors.clone();
    errors.merge(&deliveries.errors);
    let extra = vec![
        ("puts_acknowledged".to_string(), json!(puts.ok_ops)),
        ("events_delivered".to_string(), json!(deliveries.ok_ops)),
        ("events_expected".to_string(), json!(expected)),
        (
            "put_latency_p50_us".to_string(),
            json!(puts.latency_us.value_at_quantile(0.5)),
        ),
    ];
    // The count is of puts, the samples of deliveries.
    let all = ClientTally {
        ok_ops: puts.ok_ops,
        latency_us: deliveries.latency_us,
        errors,
    };
    let settings = load.settings(&setup, vec![("watchers", json!(args.watchers))]);
    Ok(Report {
        extra,
        ..report("watch-latency", settings, elapsed, all, usage)
    })
}

fn check_watch_args(args: &WatchArgs) -> Result<(), String> {
    if args.watchers == 0 || args.watchers > MAX_WATCHERS {
        return Err(format!("--watchers must be within 1..={MAX_WATCHERS}"));
    }
    if args.load.val_size < watch::STAMP_BYTES {
        return Err(format!(
            "--val-size must be at least {} for watch-latency",
            watch::STAMP_BYTES
        ));
    }
    Ok(())
}

/// One put of watch-latency: its value carries the time it was sent (the watchers' sample).
async fn stamped_put(
    target: Arc<KvTarget>,
    start: tokio::time::Instant,
    client: usize,
    ticket: u64,
) -> Result<(), String> {
    let mut value = target.value.clone();
    watch::stamp(&mut value, start);
    let key = target.keys.key(target.key_index(ticket, 0));
    let put = yizhi_proto::etcdserverpb::PutRequest {
        key,
        value,
        ..Default::default()
    };
    target
        .client(client)
        .put(put)
        .await
        .map(drop)
        .map_err(|e| format!("put: {:?}: {}", e.code(), e.message()))
}
