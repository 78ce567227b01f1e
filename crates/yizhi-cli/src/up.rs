//! `yizhi up`: a local cluster of `yizhi server` processes on loopback, for trying Yizhi out and
//! for tests. Member i (from 1) serves clients on `base_port + 10000·(i−1)` and peers on the port
//! after it (2379/2380, 12379/12380, 22379/22380 by default). Data lives in `<data-dir>/<name>`;
//! running `yizhi up` again on the same directory restarts the same cluster with its data.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use yizhi_server::config::{EngineKind, LogFormat};
use yizhi_server::server::{init_logging, shutdown_signal};

/// Members a local cluster may have (ports must stay below 65536).
pub const MAX_UP_NODES: usize = 6;
const LEADER_WAIT: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Args)]
pub struct UpArgs {
    /// Members to start (1 to 6).
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    #[arg(long, default_value = "./yizhi-data")]
    pub data_dir: PathBuf,
    #[arg(long, value_enum, default_value = "raft")]
    pub engine: EngineKind,
    /// Client port of the first member.
    #[arg(long, default_value_t = 2379)]
    pub base_port: u16,
    /// Extra flags passed to every `yizhi server` (e.g. "--snapshot-count=1000").
    #[arg(long, allow_hyphen_values = true)]
    pub server_flag: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct LocalMember {
    pub name: String,
    pub client_url: String,
    pub peer_url: String,
    pub data_dir: PathBuf,
}

pub fn members(args: &UpArgs) -> Result<Vec<LocalMember>, String> {
    if args.nodes == 0 || args.nodes > MAX_UP_NODES {
        return Err(format!("--nodes must be within 1..={MAX_UP_NODES}"));
    }
    (0..args.nodes)
        .map(|i| {
            let client_port = u32::from(args.base_port) + 10_000 * i as u32;
            if client_port + 1 > u32::from(u16::MAX) {
                return Err(format!(
                    "--base-port {} leaves no room for {} members",
                    args.base_port, args.nodes
                ));
            }
            let name = format!("node{}", i + 1);
            Ok(LocalMember {
                data_dir: args.data_dir.join(&name),
                client_url: format!("http://127.0.0.1:{client_port}"),
                peer_url: format!("http://127.0.0.1:{}", client_port + 1),
                name,
            })
        })
        .collect()
}

pub fn run(args: UpArgs) -> i32 {
    init_logging(LogFormat::Human);
    match try_run(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("yizhi up: {e}");
            1
        }
    }
}

fn try_run(args: &UpArgs) -> Result<(), String> {
    let members = members(args)?;
    std::fs::create_dir_all(&args.data_dir).map_err(|e| format!("{}: {e}", args.data_dir.display()))?;
    let mut children = spawn_members(args, &members)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let endpoints: Vec<String> = members.iter().map(|m| m.client_url.clone()).collect();
    let outcome = runtime.block_on(async {
        let leader = tokio::select! {
            leader = wait_for_leader(&endpoints) => leader,
            _ = shutdown_signal() => return Ok(()),
        };
        print_cluster(args, &members, &endpoints, leader?);
        shutdown_signal().await;
        Ok(())
    });
    stop_all(&mut children);
    outcome
}

/// Starts a `yizhi server` process for each member, its output appended to `<name>.log`; on a
/// failure stops those already started.
fn spawn_members(args: &UpArgs, members: &[LocalMember]) -> Result<Vec<(String, Child)>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    let initial_cluster = members
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer_url))
        .collect::<Vec<_>>()
        .join(",");
    let mut children: Vec<(String, Child)> = Vec::new();
    for m in members {
        let log_path = args.data_dir.join(format!("{}.log", m.name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("{}: {e}", log_path.display()))?;
        let child = Command::new(&exe)
            .arg("server")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &m.client_url])
            .args(["--advertise-client-urls", &m.client_url])
            .args(["--listen-peer-urls", &m.peer_url])
            .args(["--initial-advertise-peer-urls", &m.peer_url])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-token", "yizhi-up"])
            .arg(format!("--engine={}", engine_flag(args.engine)))
            .args(&args.server_flag)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn();
        match child {
            Ok(child) => children.push((m.name.clone(), child)),
            Err(e) => {
                stop_all(&mut children);
                return Err(format!("starting {}: {e}", m.name));
            }
        }
    }
    Ok(children)
}

/// What is up, where, and how to try it.
fn print_cluster(args: &UpArgs, members: &[LocalMember], endpoints: &[String], leader: u64) {
    let plain: Vec<String> = endpoints
        .iter()
        .map(|e| e.trim_start_matches("http://").to_string())
        .collect();
    println!(
        "yizhi: {} members up ({} engine), leader is member {leader:x}",
        members.len(),
        engine_flag(args.engine)
    );
    for m in members {
        println!(
            "  {}  clients {}  peers {}  data {}",
            m.name,
            m.client_url,
            m.peer_url,
            m.data_dir.display()
        );
    }
    println!(
        "Try:  ETCDCTL_API=3 etcdctl --endpoints={} put hello world",
        plain.join(",")
    );
    println!("Logs in {}. Ctrl-C stops every member.", args.data_dir.display());
}

fn engine_flag(engine: EngineKind) -> &'static str {
    match engine {
        EngineKind::Raft => "raft",
        EngineKind::Paxos => "paxos",
    }
}

/// Polls every member's Status until one reports a leader.
async fn wait_for_leader(endpoints: &[String]) -> Result<u64, String> {
    use yizhi_proto::etcdserverpb::StatusRequest;
    use yizhi_proto::etcdserverpb::maintenance_client::MaintenanceClient;
    let deadline = Instant::now() + LEADER_WAIT;
    while Instant::now() < deadline {
        for endpoint in endpoints {
            let Ok(mut client) = MaintenanceClient::connect(endpoint.clone()).await else {
                continue;
            };
            if let Ok(status) = client.status(StatusRequest {}).await {
                let leader = status.into_inner().leader;
                if leader != 0 {
                    return Ok(leader);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!(
        "no leader after {} s (see the logs)",
        LEADER_WAIT.as_secs()
    ))
}

/// SIGTERM to each member, then SIGKILL to any still running after the grace period.
fn stop_all(children: &mut [(String, Child)]) {
    for (_, child) in children.iter() {
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    }
    let deadline = Instant::now() + STOP_GRACE;
    for (name, child) in children.iter_mut() {
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    println!("yizhi: {name} stopped ({status})");
                    break;
                }
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    println!("yizhi: {name} killed after {} s", STOP_GRACE.as_secs());
                    break;
                }
            }
        }
    }
}
