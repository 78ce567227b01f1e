//! A cluster of real `yizhi server` processes for the client tests.
//!
//! The binary: `$YIZHI_BIN` if set, else `yizhi` next to this test's profile directory
//! (`<target>/<profile>/yizhi`, where `cargo test --workspace` builds it before running any test,
//! because yizhi-cli's own integration tests need it). When it is missing — `cargo test -p
//! yizhi-client` alone — the harness builds it once with `cargo build -p yizhi-cli --bin yizhi`
//! in the same profile and target directory.
//!
//! Cleanup: `Drop` kills the members; a shared cluster in a `static` is never dropped, so each
//! cluster also starts a small shell reaper that kills its members and removes the directory once
//! the test process is gone.
#![allow(dead_code)] // Each test file uses a different part of the harness.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use yizhi_client::{Client, GetOptions};

pub const HEARTBEAT_INTERVAL_MS: u64 = 50;
pub const ELECTION_TIMEOUT_MS: u64 = 500;
/// Generous: 2 cores shared with parallel tests and builds.
pub const READY_DEADLINE: Duration = Duration::from_secs(45);
/// The brief's port range for this crate's tests.
const PORT_RANGE: std::ops::Range<u16> = 20_000..30_000;
const LOG_TAIL_LINES: usize = 40;

#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Member {
    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }
}

#[derive(Debug)]
pub struct Cluster {
    root: PathBuf,
    initial_cluster: String,
    token: String,
    members: Mutex<Vec<Member>>,
    reaper: Mutex<Option<Child>>,
}

/// Runs a test body on a small multi-threaded runtime (several tests share 2 cores).
pub fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// One 3-member cluster shared by every test of a test binary.
pub fn shared_cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| run(Cluster::start(3)))
}

fn yizhi_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(locate_or_build).clone()
}

fn locate_or_build() -> PathBuf {
    if let Some(path) = std::env::var_os("YIZHI_BIN") {
        return PathBuf::from(path);
    }
    // This test runs as <target>/<profile>/deps/<test>-<hash>.
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("<target>/<profile>");
    let binary = profile_dir.join("yizhi");
    if binary.is_file() {
        return binary;
    }
    let target_dir = profile_dir.parent().expect("<target>");
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("profile dir name");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args(["build", "-p", "yizhi-cli", "--bin", "yizhi"])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    match profile {
        "debug" => {}
        "release" => {
            build.arg("--release");
        }
        other => {
            build.args(["--profile", other]);
        }
    }
    eprintln!("building the yizhi binary: {build:?}");
    let status = build.status().expect("run cargo build");
    assert!(
        status.success(),
        "cargo build of the yizhi binary failed: {status}"
    );
    assert!(binary.is_file(), "{} missing after the build", binary.display());
    binary
}

impl Cluster {
    pub async fn start(size: usize) -> Cluster {
        let mut last = String::new();
        for attempt in 1..=3 {
            let cluster = Cluster::spawn(size);
            match cluster.wait_ready(READY_DEADLINE).await {
                Ok(()) => return cluster,
                Err(e) => {
                    eprintln!("cluster start attempt {attempt} failed: {e}");
                    cluster.dump_logs();
                    last = e;
                }
            }
        }
        panic!("no cluster after 3 attempts: {last}");
    }

    fn spawn(size: usize) -> Cluster {
        let binary = yizhi_binary();
        let root = unique_temp_dir();
        let ports = free_ports(2 * size);
        let members: Vec<Member> = (0..size)
            .map(|i| {
                let name = format!("m{}", i + 1);
                let dir = root.join(&name);
                std::fs::create_dir_all(&dir).expect("member dir");
                Member {
                    name,
                    client_port: ports[2 * i],
                    peer_port: ports[2 * i + 1],
                    dir,
                    child: None,
                }
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let token = root.file_name().expect("dir name").to_string_lossy().into_owned();
        let cluster = Cluster {
            root,
            initial_cluster,
            token,
            members: Mutex::new(members),
            reaper: Mutex::new(None),
        };
        cluster.start_reaper();
        for i in 0..size {
            cluster.spawn_member(i, &binary);
        }
        cluster
    }

    fn start_reaper(&self) {
        let script = r#"
            while kill -0 "$1" 2>/dev/null && [ -d "$2" ]; do sleep 0.5; done
            for f in "$2"/*/server.pid; do
                [ -f "$f" ] || continue
                p=$(cat "$f")
                if tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | grep -q "yizhi server"; then kill -9 "$p"; fi
            done
            rm -rf "$2"
        "#;
        let reaper = Command::new("sh")
            .args(["-c", script, "yizhi-client-test-reaper"])
            .arg(std::process::id().to_string())
            .arg(&self.root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the reaper");
        *self.reaper.lock().expect("reaper lock") = Some(reaper);
    }

    fn members(&self) -> MutexGuard<'_, Vec<Member>> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn spawn_member(&self, index: usize, binary: &Path) {
        let mut members = self.members();
        let m = &mut members[index];
        assert!(m.child.is_none(), "{} is already running", m.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(m.dir.join("server.log"))
            .expect("log file");
        let client_url = m.client_url();
        let peer_url = format!("http://127.0.0.1:{}", m.peer_port);
        let child = Command::new(binary)
            .arg("server")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(m.dir.join("data"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-token", &self.token])
            .arg(format!("--heartbeat-interval={HEARTBEAT_INTERVAL_MS}"))
            .arg(format!("--election-timeout={ELECTION_TIMEOUT_MS}"))
            .env("YIZHI_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", binary.display()));
        std::fs::write(m.dir.join("server.pid"), child.id().to_string()).expect("pid file");
        m.child = Some(child);
    }

    pub fn client_urls(&self) -> Vec<String> {
        self.members().iter().map(Member::client_url).collect()
    }

    /// Client URLs starting at member `first` (so a client prefers that member).
    pub fn urls_from(&self, first: usize) -> Vec<String> {
        let mut urls = self.client_urls();
        urls.rotate_left(first);
        urls
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.client_urls()).await.expect("client")
    }

    /// kill -9 of a member; its data stays for [`Cluster::restart`].
    pub fn kill(&self, index: usize) {
        let mut members = self.members();
        let m = &mut members[index];
        let mut child = m.child.take().expect("member is running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        let _ = std::fs::remove_file(m.dir.join("server.pid"));
    }

    pub async fn restart(&self, index: usize) {
        self.spawn_member(index, &yizhi_binary());
        let url = self.members()[index].client_url();
        let deadline = Instant::now() + READY_DEADLINE;
        while probe(&url).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "member {index} not ready after restart"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_ready(&self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        for url in self.client_urls() {
            loop {
                self.check_alive()?;
                if probe(&url).await.is_ok() {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("{url} not ready within {within:?}"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    fn check_alive(&self) -> Result<(), String> {
        for m in self.members().iter_mut() {
            if let Some(child) = m.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                m.child = None;
                return Err(format!("{} exited on its own: {status}", m.name));
            }
        }
        Ok(())
    }

    pub fn dump_logs(&self) {
        for m in self.members().iter() {
            let text = std::fs::read_to_string(m.dir.join("server.log")).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(LOG_TAIL_LINES);
            eprintln!("----- {} (client port {}) log tail:", m.name, m.client_port);
            for line in &lines[from..] {
                eprintln!("{line}");
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        for m in self.members().iter_mut() {
            if let Some(mut child) = m.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
        if let Some(mut reaper) = self.reaper.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = reaper.kill();
            let _ = reaper.wait();
        }
    }
}

/// A linearizable read on one member: it has a leader and has caught up.
async fn probe(url: &str) -> Result<(), String> {
    let options = yizhi_client::ClientOptions {
        max_attempts: 1,
        request_timeout: Duration::from_secs(3),
        ..Default::default()
    };
    let client = Client::connect_with(&[url], options)
        .await
        .map_err(|e| e.to_string())?;
    client
        .get("yizhi-client-probe", GetOptions::new())
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn unique_temp_dir() -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    for attempt in 0..1000u32 {
        let dir = std::env::temp_dir().join(format!(
            "yizhi-client-test-{}-{nanos:x}-{attempt}",
            std::process::id()
        ));
        if std::fs::create_dir(&dir).is_ok() {
            return dir;
        }
    }
    panic!("cannot create a temp dir");
}

/// `count` distinct ports in [`PORT_RANGE`] that are free now.
fn free_ports(count: usize) -> Vec<u16> {
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let mut state = u64::from(std::process::id())
        ^ SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
    let span = u64::from(PORT_RANGE.end - PORT_RANGE.start);
    let mut ports = Vec::with_capacity(count);
    for _ in 0..100_000 {
        if ports.len() == count {
            break;
        }
        // xorshift64: spreads parallel test processes over the range; nothing depends on it.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let port = PORT_RANGE.start + (state % span) as u16;
        if handed_out.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.push(port);
            ports.push(port);
        }
    }
    assert_eq!(ports.len(), count, "not enough free ports");
    ports
}

/// Polls `condition` until it holds or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !condition().await {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
