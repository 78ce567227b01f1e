//! The parent's half of the `kill -9` tests of yizhi-storage and of yizhi-kv (which includes this
//! file by path: the two crates share no test-only crate).

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Runs this test binary again as a child running only the test `child_test`, with `env` set,
/// kills it with SIGKILL after `run_ms`, and returns the lines it printed before it died.
pub fn run_and_kill(child_test: &str, env: &[(&str, &OsStr)], run_ms: u64) -> Vec<String> {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([child_test, "--exact", "--nocapture", "--test-threads=1"])
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("piped stdout");
    let (sender, receiver) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    // Real time is the point here: the kill must land at an arbitrary moment of real IO.
    std::thread::sleep(Duration::from_millis(run_ms));
    child.kill().expect("kill -9 the child");
    let status = child.wait().expect("reap child");
    reader.join().expect("reader thread");
    assert!(
        !status.success(),
        "the child must die by the signal, not finish: {status:?}"
    );
    receiver.try_iter().collect()
}
