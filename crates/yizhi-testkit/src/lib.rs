//! The process-cluster harness of every test that needs real `yizhi` members (dev-only).
//!
//! - [`Cluster`]: members on loopback with short timeouts; start, `kill -9`, pause
//!   (SIGSTOP/SIGCONT, [`Cluster::pause`]) and restart them, find the leader, dump their logs.
//! - [`PeerProxy`]: the members' peer traffic through a proxy that can hold or reset each link
//!   (a partition without root).
//! - [`etcdctl`]: Debian's stock `etcdctl` against a cluster.
//! - [`kv`]: raw KV calls through the generated tonic client.
//!
//! **The binary.** The members run the `yizhi` binary of crate `yizhi-cli`. The tests that start
//! them live in that crate (`crates/yizhi-cli/tests`), because cargo builds a package's binary
//! before its integration tests and puts it at `<target>/<profile>/yizhi`, beside the test
//! executable's `deps/` directory: [`yizhi_binary`] takes it from there (assert_cmd's rule), or
//! from `$YIZHI_BIN` when set. yizhi-cli's `binary` test checks that this is the binary cargo
//! built (`CARGO_BIN_EXE_yizhi`).

pub mod cluster;
pub mod etcdctl;
pub mod kv;
pub mod peer_proxy;
pub mod ports;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use cluster::{
    Cluster, ELECTION_TIMEOUT_MS, HEARTBEAT_INTERVAL_MS, LogsOnPanic, Member, Paused, READY_DEADLINE,
    channel, status,
};
pub use etcdctl::{CtlOutput, CtlProcess, etcdctl_available, run_etcdctl, run_etcdctl_until};
pub use peer_proxy::{LinkState, PeerProxy};
pub use ports::free_ports;

/// The `yizhi` binary the members run: `$YIZHI_BIN`, else `yizhi` in the profile directory of
/// the running test (`<target>/<profile>/deps/<test>-<hash>` → `<target>/<profile>/yizhi`).
pub fn yizhi_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(locate_binary).clone()
}

fn locate_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("YIZHI_BIN") {
        return PathBuf::from(path);
    }
    let test = std::env::current_exe().expect("the test executable's path");
    let profile_dir = test
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap_or_else(|| panic!("{} is not in <target>/<profile>/deps", test.display()));
    let binary = profile_dir.join("yizhi");
    assert!(
        binary.is_file(),
        "{} is missing: tests that start members belong in crates/yizhi-cli/tests (cargo builds \
         the binary before them), or set YIZHI_BIN",
        binary.display()
    );
    binary
}

/// Runs `f` on a fresh current-thread runtime (for the synchronous tests).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// Runs `f` on a small multi-threaded runtime (two workers: several tests share 2 cores), for
/// tests whose background tasks must run while the test body blocks.
pub fn block_on_multi_thread<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// Two tests of one scenario, one per engine: `$raft` runs `$scenario(&["--engine", "raft"])`
/// and `$paxos` the same with `paxos`, each on [`block_on`]. Doc comments before a name document
/// that test.
#[macro_export]
macro_rules! test_each_engine {
    ($(#[$raft_doc:meta])* $raft:ident, $(#[$paxos_doc:meta])* $paxos:ident, $scenario:path) => {
        $(#[$raft_doc])*
        #[test]
        fn $raft() {
            $crate::block_on($scenario(&["--engine", "raft"]));
        }

        $(#[$paxos_doc])*
        #[test]
        fn $paxos() {
            $crate::block_on($scenario(&["--engine", "paxos"]));
        }
    };
}

/// Polls `condition` every 50 ms until it holds; panics naming `what` after `within`.
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
