//! `yizhi`: the server, and the commands around it.

use clap::{Parser, Subcommand};

use yizhi_cli::up::UpArgs;
use yizhi_server::config::{ServerConfig, config_file_args};

#[derive(Debug, Parser)]
#[command(
    name = "yizhi",
    version,
    about = "Yizhi: a strongly consistent key-value store that speaks etcd's v3 API"
)]
#[command(args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one member (flags as etcd's; also YIZHI_<FLAG> variables and --config-file).
    Server(Box<ServerConfig>),
    /// Start a local cluster of server processes on loopback and wait for Ctrl-C.
    Up(UpArgs),
    /// Benchmark an etcd v3 endpoint (Yizhi or etcd): put, range, txn, lease, watch, failover, floor.
    Bench(yizhi_cli::bench::BenchArgs),
    /// Hold a lock while a command runs: `yizhi lock NAME [--ttl SECS] -- CMD ARGS...`.
    Lock(yizhi_cli::coord::LockArgs),
    /// Campaign in an election (`yizhi elect NAME PROPOSAL`) or observe it (`-l NAME`).
    Elect(yizhi_cli::coord::ElectArgs),
}

fn main() {
    let cli = match parse_with_config_file() {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("yizhi: {e}");
            std::process::exit(2);
        }
    };
    let code = match cli.command {
        Command::Server(config) => yizhi_server::server::run(*config),
        Command::Up(args) => yizhi_cli::up::run(args),
        Command::Bench(args) => yizhi_cli::bench::run(args),
        Command::Lock(args) => yizhi_cli::coord::run_lock(args),
        Command::Elect(args) => yizhi_cli::coord::run_elect(args),
    };
    std::process::exit(code);
}

/// A `--config-file` (flag or variable) contributes flags placed before the user's own, so the
/// command line wins over the file and the file over the environment.
fn parse_with_config_file() -> Result<Cli, String> {
    let args: Vec<String> = std::env::args().collect();
    let first = Cli::try_parse_from(&args).unwrap_or_else(|e| e.exit());
    let Command::Server(config) = &first.command else {
        return Ok(first);
    };
    let Some(path) = &config.config_file else {
        return Ok(first);
    };
    let file_args = config_file_args(path).map_err(|e| e.to_string())?;
    let position = args
        .iter()
        .position(|a| a == "server")
        .expect("server subcommand");
    let mut merged = args[..=position].to_vec();
    merged.extend(file_args);
    merged.extend_from_slice(&args[position + 1..]);
    Cli::try_parse_from(&merged).map_err(|e| e.to_string())
}
