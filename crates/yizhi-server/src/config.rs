//! `yizhi server` settings: etcd's flag names, each also read from `YIZHI_<FLAG>` and from an
//! optional `--config-file` (flat YAML `key: value` lines with the flag names as keys, as etcd's
//! config file). Precedence: command-line flag > config file > environment > default.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// etcd's defaults, so a user moving over gets the cluster they expect.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 1_572_864;
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Lines of a config file we read; a longer file is not a config file.
const MAX_CONFIG_FILE_BYTES: u64 = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EngineKind {
    Raft,
    Paxos,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ClusterState {
    New,
    Existing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Clone, Debug, Args)]
pub struct ServerConfig {
    /// Human-readable name of this member (must appear in --initial-cluster).
    #[arg(long, env = "YIZHI_NAME", default_value = "default")]
    pub name: String,
    /// Where the WAL, snapshots and the key-value database live [default: ./<name>.yizhi].
    #[arg(long, env = "YIZHI_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Comma-separated URLs to serve clients (gRPC) on.
    #[arg(
        long,
        env = "YIZHI_LISTEN_CLIENT_URLS",
        default_value = "http://127.0.0.1:2379"
    )]
    pub listen_client_urls: String,
    /// Client URLs this member tells others about [default: --listen-client-urls].
    #[arg(long, env = "YIZHI_ADVERTISE_CLIENT_URLS")]
    pub advertise_client_urls: Option<String>,
    /// URL to accept peer connections on.
    #[arg(long, env = "YIZHI_LISTEN_PEER_URLS", default_value = "http://127.0.0.1:2380")]
    pub listen_peer_urls: String,
    /// Peer URLs of this member, as the others know it.
    #[arg(
        long,
        env = "YIZHI_INITIAL_ADVERTISE_PEER_URLS",
        default_value = "http://127.0.0.1:2380"
    )]
    pub initial_advertise_peer_urls: String,
    /// `name=peer-url,...` of every member [default: <name>=<initial-advertise-peer-urls>].
    #[arg(long, env = "YIZHI_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    #[arg(long, env = "YIZHI_INITIAL_CLUSTER_STATE", value_enum, default_value = "new")]
    pub initial_cluster_state: ClusterState,
    #[arg(long, env = "YIZHI_INITIAL_CLUSTER_TOKEN", default_value = "etcd-cluster")]
    pub initial_cluster_token: String,
    /// Milliseconds per tick; the leader heartbeats every tick.
    #[arg(long, env = "YIZHI_HEARTBEAT_INTERVAL", default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Milliseconds without a leader before a follower campaigns.
    #[arg(long, env = "YIZHI_ELECTION_TIMEOUT", default_value_t = 1000)]
    pub election_timeout: u64,
    /// Applied entries between two snapshots (after which the WAL is compacted); at least. A
    /// snapshot also waits until the commands applied since the last one are half its size, so
    /// that snapshotting a long history costs in proportion to the writes.
    #[arg(long, env = "YIZHI_SNAPSHOT_COUNT", default_value_t = 100_000)]
    pub snapshot_count: u64,
    /// The key-value database may grow to this many bytes; beyond it a NOSPACE alarm is raised.
    #[arg(long, env = "YIZHI_QUOTA_BACKEND_BYTES", default_value_t = DEFAULT_QUOTA_BACKEND_BYTES)]
    pub quota_backend_bytes: u64,
    /// Largest client request accepted.
    #[arg(long, env = "YIZHI_MAX_REQUEST_BYTES", default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: u64,
    /// Most operations in one txn (each of compare, success, failure).
    #[arg(long, env = "YIZHI_MAX_TXN_OPS", default_value_t = 128)]
    pub max_txn_ops: usize,
    /// Comma-separated URLs to serve Prometheus metrics on (`GET /metrics`) [default: none].
    #[arg(long, env = "YIZHI_LISTEN_METRICS_URLS")]
    pub listen_metrics_urls: Option<String>,
    /// Consensus protocol of a new cluster.
    #[arg(long, env = "YIZHI_ENGINE", value_enum, default_value = "raft")]
    pub engine: EngineKind,
    #[arg(long, env = "YIZHI_LOG_FORMAT", value_enum, default_value = "human")]
    pub log_format: LogFormat,
    /// Read settings from this file (flag names as keys).
    #[arg(long, env = "YIZHI_CONFIG_FILE")]
    pub config_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("{0}")]
    Invalid(String),
}

impl ServerConfig {
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.yizhi", self.name)))
    }

    pub fn advertise_client_urls(&self) -> String {
        self.advertise_client_urls
            .clone()
            .unwrap_or_else(|| self.listen_client_urls.clone())
    }

    pub fn initial_cluster(&self) -> String {
        self.initial_cluster
            .clone()
            .unwrap_or_else(|| format!("{}={}", self.name, self.initial_advertise_peer_urls))
    }

    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval)
    }

    pub fn election_timeout_ticks(&self) -> u64 {
        self.election_timeout / self.heartbeat_interval.max(1)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |s: String| Err(ConfigError::Invalid(s));
        if self.heartbeat_interval == 0 {
            return invalid("--heartbeat-interval must be at least 1 ms".into());
        }
        if self.election_timeout < 5 * self.heartbeat_interval {
            // etcd asks for ≥ 5× as well: fewer missed heartbeats would make elections flap.
            return invalid(format!(
                "--election-timeout ({} ms) must be at least 5 × --heartbeat-interval ({} ms)",
                self.election_timeout, self.heartbeat_interval
            ));
        }
        if self.max_txn_ops == 0 {
            return invalid("--max-txn-ops must be at least 1".into());
        }
        if self.max_request_bytes < 1024 || self.max_request_bytes > 64 * 1024 * 1024 {
            return invalid("--max-request-bytes must be within 1 KiB..64 MiB".into());
        }
        if self.snapshot_count == 0 {
            return invalid("--snapshot-count must be at least 1".into());
        }
        Ok(())
    }
}

/// Turns a config file into `--flag=value` arguments, placed before the user's own arguments so
/// that flags given on the command line win (the command is parsed with `args_override_self`).
pub fn config_file_args(path: &std::path::Path) -> Result<Vec<String>, ConfigError> {
    let err = |reason: String| ConfigError::File {
        path: path.display().to_string(),
        reason,
    };
    let size = std::fs::metadata(path).map_err(|e| err(e.to_string()))?.len();
    if size > MAX_CONFIG_FILE_BYTES {
        return Err(err(format!("{size} bytes, at most {MAX_CONFIG_FILE_BYTES}")));
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let mut args = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line == "---" {
            continue;
        }
        let (key, value) = line
            .split_once(':')
            .ok_or_else(|| err(format!("line {}: expected `key: value`", number + 1)))?;
        let key = key.trim();
        let value = value.trim().trim_matches(|c| c == '\'' || c == '"');
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(err(format!("line {}: bad key {key:?}", number + 1)));
        }
        if key == "config-file" {
            return Err(err(format!(
                "line {}: a config file cannot name another",
                number + 1
            )));
        }
        args.push(format!("--{key}={value}"));
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_file_lines_become_flags_and_junk_is_refused() {
        let dir = std::env::temp_dir().join(format!("yizhi-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("yizhi.yaml");
        std::fs::write(&path, "# comment\nname: n1\nheartbeat-interval: '50'\n\n").expect("write");
        assert_eq!(
            config_file_args(&path).expect("valid"),
            vec!["--name=n1", "--heartbeat-interval=50"]
        );
        std::fs::write(&path, "name n1\n").expect("write");
        assert!(config_file_args(&path).is_err());
        std::fs::write(&path, "config-file: other\n").expect("write");
        assert!(config_file_args(&path).is_err());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
