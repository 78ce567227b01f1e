//! Process harness for the integration tests: a cluster of real `yizhi server` processes on
//! loopback, each with its own temp data dir and a log file (stdout + stderr), plus helpers to
//! kill -9 and restart members, find the leader, and run `etcdctl` against the cluster.
//!
//! Cleanup happens twice over: `Drop` kills the members and removes the directory (also when a
//! test panics, after printing the tail of every member's log), and a small shell reaper started
//! with each cluster does the same once the test process is gone — so a shared cluster in a
//! `static` (never dropped) or a test binary killed from outside leaves no servers behind.
#![allow(dead_code)] // Each test file uses a different part of the harness.

pub mod peer_proxy;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tonic::transport::Channel;
use yizhi_proto::etcdserverpb as pb;
use yizhi_proto::etcdserverpb::kv_client::KvClient;
use yizhi_proto::etcdserverpb::maintenance_client::MaintenanceClient;

use peer_proxy::PeerProxy;

/// Short timeouts, so elections (and the tests that cause them) are quick.
pub const HEARTBEAT_INTERVAL_MS: u64 = 50;
pub const ELECTION_TIMEOUT_MS: u64 = 500;
/// Generous: the machine has 2 cores shared with parallel tests and other builds.
pub const READY_DEADLINE: Duration = Duration::from_secs(45);
const START_ATTEMPTS: usize = 3;
/// Ports below Linux's ephemeral range (32768+), so outgoing connections never hold them.
const PORT_RANGE: std::ops::Range<u16> = 30_000..32_768;
const LOG_TAIL_LINES: usize = 400;
const ETCDCTL_DEADLINE: Duration = Duration::from_secs(60);

/// One member process of a [`Cluster`].
#[derive(Debug)]
pub struct Member {
    /// etcd member id: the 1-based position in `--initial-cluster`.
    pub id: u64,
    pub name: String,
    pub client_port: u16,
    /// The peer port the member advertises.
    pub peer_port: u16,
    /// Where it listens for peers: `peer_port`, unless a [`PeerProxy`] listens there.
    pub listen_peer_port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Member {
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    pub fn peer_addr(&self) -> String {
        format!("127.0.0.1:{}", self.peer_port)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

#[derive(Debug)]
pub struct Cluster {
    root: PathBuf,
    token: String,
    initial_cluster: String,
    extra_flags: Vec<String>,
    members: Mutex<Vec<Member>>,
    reaper: Mutex<Option<Child>>,
}

/// What an etcdctl run printed.
#[derive(Debug, Clone)]
pub struct CtlOutput {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

impl CtlOutput {
    /// Stdout lines, for exact comparisons.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    /// Panics with everything etcdctl said unless it exited 0.
    pub fn ok(self) -> CtlOutput {
        assert_eq!(self.code, 0, "etcdctl failed: {self:#?}");
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("etcdctl output is not JSON ({e}): {self:#?}"))
    }
}

/// Runs `f` on a fresh current-thread runtime (for the synchronous tests).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

impl Cluster {
    /// Starts `size` members with the short test timeouts plus `extra_flags` and waits until every
    /// member serves a linearizable read (so a leader exists and everyone knows it).
    pub async fn start(size: usize, extra_flags: &[&str]) -> Cluster {
        Cluster::start_attempts(|| (Cluster::spawn(size, extra_flags, None), ()))
            .await
            .0
    }

    /// Like [`Cluster::start`], with the members' peer traffic relayed by a [`PeerProxy`] (each
    /// member advertises the proxy's port and listens on a private one), so a test can cut links.
    pub async fn start_behind_peer_proxy(size: usize, extra_flags: &[&str]) -> (Cluster, PeerProxy) {
        Cluster::start_attempts(|| {
            let proxy = PeerProxy::start(size);
            (Cluster::spawn(size, extra_flags, Some(&proxy)), proxy)
        })
        .await
    }

    async fn start_attempts<T>(mut spawn: impl FnMut() -> (Cluster, T)) -> (Cluster, T) {
        let mut last_failure = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let (cluster, extra) = spawn();
            match cluster.wait_all_ready(READY_DEADLINE).await {
                Ok(()) => return (cluster, extra),
                Err(e) => {
                    // Most likely a port taken between our probe and the server's bind: retry on
                    // fresh ports, but show why.
                    eprintln!("cluster start attempt {attempt} failed: {e}");
                    cluster.dump_logs();
                    last_failure = e;
                }
            }
        }
        panic!("no cluster after {START_ATTEMPTS} attempts: {last_failure}");
    }

    pub fn start_blocking(size: usize, extra_flags: &[&str]) -> Cluster {
        block_on(Cluster::start(size, extra_flags))
    }

    fn spawn(size: usize, extra_flags: &[&str], proxy: Option<&PeerProxy>) -> Cluster {
        assert!(
            (1..=7).contains(&size),
            "a test cluster has 1..=7 members, not {size}"
        );
        let root = unique_temp_dir();
        let ports = free_ports(2 * size);
        let members: Vec<Member> = (0..size)
            .map(|i| {
                let name = format!("m{}", i + 1);
                let dir = root.join(&name);
                std::fs::create_dir_all(&dir).expect("member dir");
                Member {
                    id: i as u64 + 1,
                    name,
                    client_port: ports[2 * i],
                    peer_port: proxy.map_or(ports[2 * i + 1], |p| p.public_port(i)),
                    listen_peer_port: proxy.map_or(ports[2 * i + 1], |p| p.private_port(i)),
                    dir,
                    child: None,
                }
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://{}", m.name, m.peer_addr()))
            .collect::<Vec<_>>()
            .join(",");
        let token = root
            .file_name()
            .expect("temp dir name")
            .to_string_lossy()
            .into_owned();
        let cluster = Cluster {
            root,
            token,
            initial_cluster,
            extra_flags: extra_flags.iter().map(|s| s.to_string()).collect(),
            members: Mutex::new(members),
            reaper: Mutex::new(None),
        };
        cluster.start_reaper();
        for i in 0..size {
            cluster.spawn_member(i);
        }
        cluster
    }

    /// Watches the test process; once it is gone, kills the members still listed in pid files
    /// (checking that the pid still runs a yizhi server) and removes the directory.
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
            .args(["-c", script, "yizhi-test-reaper"])
            .arg(std::process::id().to_string())
            .arg(&self.root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the reaper shell");
        *self.reaper.lock().expect("reaper lock") = Some(reaper);
    }

    fn members(&self) -> MutexGuard<'_, Vec<Member>> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn size(&self) -> usize {
        self.members().len()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn client_url(&self, index: usize) -> String {
        self.members()[index].client_url()
    }

    pub fn peer_addr(&self, index: usize) -> String {
        self.members()[index].peer_addr()
    }

    pub fn member_id(&self, index: usize) -> u64 {
        self.members()[index].id
    }

    pub fn pid(&self, index: usize) -> Option<u32> {
        self.members()[index].pid()
    }

    pub fn is_running(&self, index: usize) -> bool {
        self.members()[index].child.is_some()
    }

    /// Client URLs of every member, running or not.
    pub fn client_urls(&self) -> Vec<String> {
        self.members().iter().map(Member::client_url).collect()
    }

    /// `host:port` of each member's client listener.
    pub fn client_addrs(&self) -> Vec<String> {
        self.members()
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// `--endpoints` for etcdctl: every member, as `host:port` (the README's form; etcdctl 3.4
    /// sends a whole `http://` URL as the HTTP/2 authority when it dials one endpoint alone, as
    /// move-leader does, which the server refuses).
    pub fn endpoints(&self) -> String {
        self.client_addrs().join(",")
    }

    pub fn running_indices(&self) -> Vec<usize> {
        let members = self.members();
        (0..members.len())
            .filter(|&i| members[i].child.is_some())
            .collect()
    }

    fn spawn_member(&self, index: usize) {
        let mut members = self.members();
        let m = &mut members[index];
        assert!(m.child.is_none(), "{} is already running", m.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(m.log_path())
            .expect("member log file");
        let client_url = m.client_url();
        let peer_url = format!("http://{}", m.peer_addr());
        let listen_peer_url = format!("http://127.0.0.1:{}", m.listen_peer_port);
        let child = Command::new(env!("CARGO_BIN_EXE_yizhi"))
            .arg("server")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(m.data_dir())
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &listen_peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-token", &self.token])
            .arg(format!("--heartbeat-interval={HEARTBEAT_INTERVAL_MS}"))
            .arg(format!("--election-timeout={ELECTION_TIMEOUT_MS}"))
            .args(&self.extra_flags)
            .env("YIZHI_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", env!("CARGO_BIN_EXE_yizhi")));
        std::fs::write(m.dir.join("server.pid"), child.id().to_string()).expect("pid file");
        m.child = Some(child);
    }

    /// `kill -9` of a member; its data dir stays for [`Cluster::restart`].
    pub fn kill(&self, index: usize) {
        let mut members = self.members();
        let m = &mut members[index];
        let mut child = m
            .child
            .take()
            .unwrap_or_else(|| panic!("{} is not running", m.name));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        let _ = std::fs::remove_file(m.dir.join("server.pid"));
    }

    /// Starts a killed member again on its data and ports, and waits until it serves reads.
    pub async fn restart(&self, index: usize) {
        self.spawn_member(index);
        let url = self.client_url(index);
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Err(e) = self.check_alive() {
                panic!("restarting member {index}: {e}");
            }
            if probe_read(&url).await.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "member {index} not ready after restart"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// An error naming any member that exited on its own.
    fn check_alive(&self) -> Result<(), String> {
        let mut members = self.members();
        for m in members.iter_mut() {
            if let Some(child) = m.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                m.child = None;
                return Err(format!("{} exited on its own: {status}", m.name));
            }
        }
        Ok(())
    }

    async fn wait_all_ready(&self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        let urls = self.client_urls();
        let mut ready = BTreeSet::new();
        while ready.len() < urls.len() {
            self.check_alive()?;
            for (i, url) in urls.iter().enumerate() {
                if !ready.contains(&i) && probe_read(url).await.is_ok() {
                    ready.insert(i);
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "members ready after {within:?}: {ready:?} of {}",
                    urls.len()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// The leader's index, as reported by a majority of the running members' Status; `None` while
    /// they do not agree (an election in progress).
    pub async fn leader(&self) -> Option<usize> {
        let running = self.running_indices();
        let mut votes: Vec<u64> = Vec::new();
        for i in &running {
            let url = self.client_url(*i);
            if let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(2), status(&url)).await
                && status.leader != 0
            {
                votes.push(status.leader);
            }
        }
        let majority = self.size() / 2 + 1;
        let leader_id = votes
            .iter()
            .copied()
            .find(|id| votes.iter().filter(|v| *v == id).count() >= majority)?;
        let index = self.members().iter().position(|m| m.id == leader_id)?;
        running.contains(&index).then_some(index)
    }

    /// Polls [`Cluster::leader`] until a majority agrees on a running leader.
    pub async fn wait_for_leader(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            if let Some(index) = self.leader().await {
                return index;
            }
            if let Err(e) = self.check_alive() {
                self.dump_logs();
                panic!("{e}");
            }
            if Instant::now() > deadline {
                self.dump_logs();
                panic!("no agreed leader within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn wait_for_leader_blocking(&self, within: Duration) -> usize {
        block_on(self.wait_for_leader(within))
    }

    pub fn kv_client(&self, index: usize) -> KvClient<Channel> {
        KvClient::new(channel(&self.client_url(index)))
    }

    /// Prints the last lines of every member's log to stderr (the test harness shows it on
    /// failure).
    /// The whole log of member `index` so far.
    pub fn log_text(&self, index: usize) -> String {
        std::fs::read_to_string(self.members()[index].log_path()).unwrap_or_default()
    }

    pub fn dump_logs(&self) {
        for m in self.members().iter() {
            let text = std::fs::read_to_string(m.log_path()).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(LOG_TAIL_LINES);
            eprintln!(
                "----- {} (id {}, client {}, peer {}, pid {:?}) last {} log lines of {}:",
                m.name,
                m.id,
                m.client_port,
                m.peer_port,
                m.pid(),
                lines.len() - from,
                m.log_path().display()
            );
            for line in &lines[from..] {
                eprintln!("{line}");
            }
        }
    }

    /// A guard that dumps the member logs if the test panics while it lives (for clusters shared
    /// by several tests, which are never dropped).
    pub fn logs_on_panic(&self) -> LogsOnPanic<'_> {
        LogsOnPanic { cluster: self }
    }

    /// `etcdctl` against every member.
    pub fn etcdctl(&self, args: &[&str]) -> CtlOutput {
        run_etcdctl(&self.endpoints(), args, None)
    }

    /// `etcdctl` for a command that runs long (`check perf`), killed after `deadline`.
    pub fn etcdctl_slow(&self, args: &[&str], deadline: Duration) -> CtlOutput {
        run_etcdctl_until(&self.endpoints(), args, None, deadline)
    }

    /// `etcdctl` with `stdin` as its input (the interactive txn).
    pub fn etcdctl_stdin(&self, args: &[&str], stdin: &str) -> CtlOutput {
        run_etcdctl(&self.endpoints(), args, Some(stdin))
    }

    /// `etcdctl` against one member only.
    pub fn etcdctl_at(&self, index: usize, args: &[&str]) -> CtlOutput {
        run_etcdctl(&self.client_addrs()[index], args, None)
    }

    /// A long-running etcdctl (watch, lease keep-alive) whose stdout is read line by line.
    pub fn spawn_etcdctl(&self, args: &[&str]) -> CtlProcess {
        CtlProcess::spawn(&self.endpoints(), args)
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

#[derive(Debug)]
pub struct LogsOnPanic<'a> {
    cluster: &'a Cluster,
}

impl Drop for LogsOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.cluster.dump_logs();
        }
    }
}

/// A lazily connecting channel with short timeouts (a dead member fails fast).
pub fn channel(url: &str) -> Channel {
    Channel::from_shared(url.to_string())
        .expect("valid URL")
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(5))
        .connect_lazy()
}

async fn probe_read(url: &str) -> Result<pb::RangeResponse, tonic::Status> {
    let mut client = KvClient::new(channel(url));
    let request = pb::RangeRequest {
        key: b"yizhi-harness-probe".to_vec(),
        ..Default::default()
    };
    match tokio::time::timeout(Duration::from_secs(3), client.range(request)).await {
        Ok(result) => result.map(tonic::Response::into_inner),
        Err(_) => Err(tonic::Status::deadline_exceeded("probe read timed out")),
    }
}

pub async fn status(url: &str) -> Result<pb::StatusResponse, tonic::Status> {
    let mut client = MaintenanceClient::new(channel(url));
    client
        .status(pb::StatusRequest {})
        .await
        .map(tonic::Response::into_inner)
}

/// Whether the etcdctl tests can run: etcdctl on PATH. Without it they skip with a message,
/// unless `YIZHI_REQUIRE_ETCDCTL` is set (CI), where a missing etcdctl fails the test.
pub fn etcdctl_available() -> bool {
    let found = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join("etcdctl").is_file()))
        .unwrap_or(false);
    if found {
        return true;
    }
    if std::env::var_os("YIZHI_REQUIRE_ETCDCTL").is_some() {
        panic!(
            "etcdctl is not on PATH but YIZHI_REQUIRE_ETCDCTL is set: install etcd-client (bash scripts/test.sh does)"
        );
    }
    eprintln!("SKIPPED: etcdctl is not on PATH (install etcd-client, or run bash scripts/test.sh)");
    false
}

fn etcdctl_command(endpoints: &str, args: &[&str]) -> Command {
    let mut command = Command::new("etcdctl");
    command
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg("--dial-timeout=5s")
        .arg("--command-timeout=20s")
        .args(args);
    command
}

pub fn run_etcdctl(endpoints: &str, args: &[&str], stdin: Option<&str>) -> CtlOutput {
    run_etcdctl_until(endpoints, args, stdin, ETCDCTL_DEADLINE)
}

pub fn run_etcdctl_until(
    endpoints: &str,
    args: &[&str],
    stdin: Option<&str>,
    deadline: Duration,
) -> CtlOutput {
    let mut child = etcdctl_command(endpoints, args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn etcdctl");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        pipe.write_all(input.as_bytes()).expect("write etcdctl stdin");
    }
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(deadline) {
        Ok(output) => output.expect("etcdctl output"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("etcdctl {args:?} still running after {deadline:?}");
        }
    };
    CtlOutput {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        code: output.status.code().unwrap_or(-1),
    }
}

/// A running etcdctl; stdout lines arrive through a channel. Killed on drop.
#[derive(Debug)]
pub struct CtlProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: std::sync::Arc<Mutex<String>>,
    pub seen: Vec<String>,
}

impl CtlProcess {
    fn spawn(endpoints: &str, args: &[&str]) -> CtlProcess {
        let mut child = etcdctl_command(endpoints, args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn etcdctl");
        let stdout = child.stdout.take().expect("stdout pipe");
        let mut stderr_pipe = child.stderr.take().expect("stderr pipe");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::sync::Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr_pipe.read_to_string(&mut text);
            sink.lock().unwrap_or_else(|e| e.into_inner()).push_str(&text);
        });
        CtlProcess {
            child,
            lines: rx,
            stderr,
            seen: Vec::new(),
        }
    }

    /// Reads until `count` lines in total have been seen (or panics after `within`), returning
    /// every line seen so far.
    pub fn read_lines(&mut self, count: usize, within: Duration) -> &[String] {
        let deadline = Instant::now() + within;
        while self.seen.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "etcdctl printed {} of {count} lines within {within:?}: {:?}\nstderr: {}",
                    self.seen.len(),
                    self.seen,
                    self.stderr.lock().unwrap_or_else(|e| e.into_inner())
                ),
            }
        }
        &self.seen
    }

    /// Reads until a line equal to `line` appears; returns its position.
    pub fn read_until(&mut self, line: &str, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            if let Some(at) = self.seen.iter().position(|l| l == line) {
                return at;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(next) => self.seen.push(next),
                Err(_) => panic!(
                    "etcdctl never printed {line:?} within {within:?}: {:?}\nstderr: {}",
                    self.seen,
                    self.stderr.lock().unwrap_or_else(|e| e.into_inner())
                ),
            }
        }
    }

    /// Lines that arrive within `within` (for asserting that nothing more comes).
    pub fn drain_for(&mut self, within: Duration) -> &[String] {
        let deadline = Instant::now() + within;
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line);
        }
        &self.seen
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for CtlProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unique_temp_dir() -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    for attempt in 0..1000u32 {
        let dir = std::env::temp_dir().join(format!("yizhi-test-{}-{nanos:x}-{attempt}", std::process::id()));
        if std::fs::create_dir(&dir).is_ok() {
            return dir;
        }
    }
    panic!(
        "cannot create a temp dir under {}",
        std::env::temp_dir().display()
    );
}

/// Ports handed out by this process (a probed port is free only until someone binds it).
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// `count` distinct ports in [`PORT_RANGE`] that are free right now.
pub fn free_ports(count: usize) -> Vec<u16> {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let mut state = u64::from(std::process::id())
        ^ SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
        ^ (handed_out.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut ports = Vec::with_capacity(count);
    let span = u64::from(PORT_RANGE.end - PORT_RANGE.start);
    for _ in 0..100_000 {
        if ports.len() == count {
            break;
        }
        // xorshift64*: only spreads tests over the range; nothing depends on the sequence.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let port = PORT_RANGE.start + (state.wrapping_mul(0x2545_F491_4F6C_DD1D) % span) as u16;
        // `yizhi up` puts member 4 on 32379/32380; leave those to people trying it out.
        if port % 10_000 == 2379 || port % 10_000 == 2380 || handed_out.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            ports.push(port);
        }
    }
    assert_eq!(ports.len(), count, "not enough free ports in {PORT_RANGE:?}");
    ports
}
