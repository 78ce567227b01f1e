//! A cluster of real `yizhi server` processes on loopback, each with its own temp data dir and a
//! log file (stdout + stderr): start, `kill -9`, pause (SIGSTOP/SIGCONT) and restart members, find
//! the leader.
//!
//! Cleanup happens twice over: `Drop` kills the members and removes the directory (also when a
//! test panics, after printing the tail of every member's log), and a small shell reaper started
//! with each cluster does the same once the test process is gone — so a shared cluster in a
//! `static` (never dropped) or a test binary killed from outside leaves no servers behind.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tonic::transport::Channel;
use yizhi_proto::etcdserverpb as pb;
use yizhi_proto::etcdserverpb::kv_client::KvClient;
use yizhi_proto::etcdserverpb::maintenance_client::MaintenanceClient;

use crate::peer_proxy::PeerProxy;
use crate::ports::free_ports;
use crate::{block_on, yizhi_binary};

/// Short timeouts, so elections (and the tests that cause them) are quick.
pub const HEARTBEAT_INTERVAL_MS: u64 = 50;
pub const ELECTION_TIMEOUT_MS: u64 = 500;
/// Generous: the machine has 2 cores shared with parallel tests and other builds.
pub const READY_DEADLINE: Duration = Duration::from_secs(45);
const START_ATTEMPTS: usize = 3;
const LOG_TAIL_LINES: usize = 400;
/// Members of one test cluster.
const MAX_MEMBERS: usize = 7;

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
    /// Flags after the harness's own, on every start of this member.
    flags: Vec<String>,
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
    members: Mutex<Vec<Member>>,
    reaper: Mutex<Option<Child>>,
}

impl Cluster {
    /// Starts `size` members with the short test timeouts plus `extra_flags` and waits until every
    /// member serves a linearizable read (so a leader exists and everyone knows it).
    pub async fn start(size: usize, extra_flags: &[&str]) -> Cluster {
        Cluster::start_each(&vec![extra_flags; size]).await
    }

    /// [`Cluster::start`], then the index of the leader a majority agrees on (waiting up to `within`).
    pub async fn start_with_leader(size: usize, extra_flags: &[&str], within: Duration) -> (Cluster, usize) {
        let cluster = Cluster::start(size, extra_flags).await;
        let leader = cluster.wait_for_leader(within).await;
        (cluster, leader)
    }

    /// Like [`Cluster::start`], with flags of its own for each member (`member_flags[i]` for member
    /// `i`; the cluster has `member_flags.len()` members).
    pub async fn start_each(member_flags: &[&[&str]]) -> Cluster {
        Cluster::start_attempts(|| (Cluster::spawn(member_flags, None), ()))
            .await
            .0
    }

    /// Like [`Cluster::start`], with the members' peer traffic relayed by a [`PeerProxy`] (each
    /// member advertises the proxy's port and listens on a private one), so a test can cut links.
    pub async fn start_behind_peer_proxy(size: usize, extra_flags: &[&str]) -> (Cluster, PeerProxy) {
        Cluster::start_attempts(|| {
            let proxy = PeerProxy::start(size);
            (Cluster::spawn(&vec![extra_flags; size], Some(&proxy)), proxy)
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

    fn spawn(member_flags: &[&[&str]], proxy: Option<&PeerProxy>) -> Cluster {
        let size = member_flags.len();
        assert!(
            (1..=MAX_MEMBERS).contains(&size),
            "a test cluster has 1..={MAX_MEMBERS} members, not {size}"
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
                    flags: member_flags[i].iter().map(|s| s.to_string()).collect(),
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

    pub fn client_port(&self, index: usize) -> u16 {
        self.members()[index].client_port
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

    /// Client URLs starting at member `first` (so a client prefers that member).
    pub fn urls_from(&self, first: usize) -> Vec<String> {
        let mut urls = self.client_urls();
        urls.rotate_left(first);
        urls
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
        let binary = yizhi_binary();
        let child = Command::new(&binary)
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
            .args(&m.flags)
            .env("YIZHI_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", binary.display()));
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

    /// Stops (SIGSTOP) the members at `indices` until the returned guard is dropped or resumed:
    /// their sockets stay open, so nobody learns they are gone until timeouts say so — a
    /// partition, as a cut-off member sees it.
    pub fn pause(&self, indices: &[usize]) -> Paused<'_> {
        let pids: Vec<u32> = indices
            .iter()
            .map(|&i| self.pid(i).unwrap_or_else(|| panic!("member {i} is not running")))
            .collect();
        for &pid in &pids {
            signal(pid, Signal::SIGSTOP).unwrap_or_else(|e| panic!("SIGSTOP to {pid}: {e}"));
        }
        Paused { _cluster: self, pids }
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

/// Members stopped with SIGSTOP by [`Cluster::pause`]; SIGCONT when dropped.
#[derive(Debug)]
#[must_use = "the members resume as soon as the guard is dropped"]
pub struct Paused<'a> {
    // Borrowed so that the cluster (which kills the members) outlives the pause.
    _cluster: &'a Cluster,
    pids: Vec<u32>,
}

impl Paused<'_> {
    /// SIGCONT to every paused member now.
    pub fn resume(self) {}
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        for &pid in &self.pids {
            // A member killed while paused has no one left to continue.
            let _ = signal(pid, Signal::SIGCONT);
        }
    }
}

fn signal(pid: u32, signal: Signal) -> nix::Result<()> {
    let raw = i32::try_from(pid).unwrap_or_else(|_| panic!("pid {pid} out of range"));
    kill(Pid::from_raw(raw), signal)
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
