//! Debian's stock `etcdctl` (3.4) against a [`Cluster`]: one-shot runs with their output, and
//! long-running ones (watch, elect, lock; `yizhi lock` too) read line by line.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::Cluster;

const ETCDCTL_DEADLINE: Duration = Duration::from_secs(60);

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

impl Cluster {
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
        CtlProcess::spawn_command(etcdctl_command(endpoints, args))
    }

    /// Any long-running command-line tool (`etcdctl elect` without the harness's timeouts, `yizhi
    /// lock`), its stdout read line by line.
    pub fn spawn_command(mut command: Command) -> CtlProcess {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
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

    /// The next `count` lines (after every line seen so far), or a panic naming what came.
    pub fn next_lines(&mut self, count: usize, within: Duration) -> Vec<String> {
        let from = self.seen.len();
        self.read_lines(from + count, within)[from..].to_vec()
    }

    /// Panics if a line comes within `within`.
    pub fn assert_silent_for(&mut self, within: Duration) {
        if let Ok(line) = self.lines.recv_timeout(within) {
            panic!("unexpected output {line:?} (after {:?})", self.seen);
        }
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = i32::try_from(self.child.id()).expect("pid fits an i32");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
            .unwrap_or_else(|e| panic!("{signal} to {pid}: {e}"));
    }

    /// Waits for the process to exit on its own; panics after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "still running after {within:?}");
            std::thread::sleep(Duration::from_millis(50));
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
