//! `yizhi lock` and `yizhi elect`: clients of the Lock and Election services (any etcd v3
//! server that has them), each on the lease of a `yizhi_client::Session`, which keeps it alive
//! and says when it is lost.
//!
//! `yizhi lock NAME [--ttl SECS] -- CMD ARGS...` acquires the lock, runs CMD with the lock key and
//! its fencing token in the environment (`YIZHI_LOCK_KEY`, `YIZHI_FENCING_TOKEN` = the key's create
//! revision; `ETCD_LOCK_KEY`, `ETCD_LOCK_REV` = the grant's header revision, as etcdctl sets),
//! releases the lock when CMD exits and exits with CMD's status (128 + N when a signal N ended it).
//!
//! If the lease is lost while CMD runs (keep-alives failed for a whole TTL, or the server says the
//! lease is gone), others may take the lock at any moment, so the command is told to stop: a
//! message on stderr and SIGTERM to CMD. The exit status is then CMD's, or 1 if CMD exited 0, so
//! a run that lost its lock never reports success. (Fencing tokens are still what makes the
//! protected resource safe: SIGTERM arrives late if this process is paused or partitioned.)
//!
//! `yizhi elect NAME PROPOSAL` campaigns, prints the leader key and value once elected (as
//! etcdctl does) and stays leader until Ctrl-C (or SIGTERM), then resigns; `yizhi elect -l NAME` prints the
//! key and value of each leader and each proclamation.

use std::process::ExitStatus;
use std::time::Duration;

use clap::Args;
use yizhi_client::{Client, Error, GetOptions, Session};
use yizhi_proto::v3electionpb as epb;
use yizhi_proto::v3electionpb::election_client::ElectionClient;
use yizhi_proto::v3lockpb as lockpb;
use yizhi_proto::v3lockpb::lock_client::LockClient;

use crate::bench::cluster::parse_endpoints;

/// Unlock, resign and the lease's revocation on the way out are best effort, bounded by this.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);
/// Exit status when Ctrl-C ends a wait (the shell's convention for SIGINT).
const INTERRUPTED_EXIT: i32 = 130;

#[derive(Clone, Debug, Args)]
pub struct LockArgs {
    /// The lock's name; waiters' keys live under NAME/.
    pub name: String,
    /// The command to run while holding the lock, with its arguments (after `--`).
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
    /// Client URLs of the cluster, comma separated.
    #[arg(long, default_value = "127.0.0.1:2379")]
    pub endpoints: String,
    /// Lease TTL in seconds (the server raises it to its minimum, 2 s by default).
    #[arg(long, default_value_t = 10)]
    pub ttl: i64,
}

#[derive(Clone, Debug, Args)]
pub struct ElectArgs {
    /// The election's name; candidates' keys live under NAME/.
    pub name: String,
    /// This candidate's value (required unless -l).
    pub proposal: Option<String>,
    /// Observe: print each leader's key and value instead of campaigning.
    #[arg(short = 'l', long)]
    pub listen: bool,
    /// Client URLs of the cluster, comma separated.
    #[arg(long, default_value = "127.0.0.1:2379")]
    pub endpoints: String,
    /// Lease TTL in seconds of the candidacy.
    #[arg(long, default_value_t = 10)]
    pub ttl: i64,
}

pub fn run_lock(args: LockArgs) -> i32 {
    run("lock", lock_main(args))
}

pub fn run_elect(args: ElectArgs) -> i32 {
    match (args.listen, args.proposal.clone()) {
        (true, None) => run("elect", observe_main(args)),
        (false, Some(proposal)) => run("elect", campaign_main(args, proposal)),
        (true, Some(_)) => {
            eprintln!("yizhi elect: -l takes no proposal");
            2
        }
        (false, None) => {
            eprintln!("yizhi elect: a proposal is required (or -l to observe)");
            2
        }
    }
}

fn run(what: &str, work: impl Future<Output = Result<i32, String>>) -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("yizhi {what}: tokio runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(work) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("yizhi {what}: {e}");
            1
        }
    }
}

/// A client over `--endpoints` (failover between them is the client's).
async fn connect(endpoints: &str) -> Result<Client, String> {
    let endpoints = parse_endpoints(endpoints)?;
    Client::connect(&endpoints)
        .await
        .map_err(|e| format!("connecting to {endpoints:?}: {e}"))
}

/// The client's lease session (granted, kept alive in the background until closed or lost).
/// A TTL below 1 s is asked as 1 s: the server raises it to its minimum either way.
async fn open_session(client: &Client, ttl_secs: i64) -> Result<Session, String> {
    Session::new(client, ttl_secs.max(1))
        .await
        .map_err(|e| format!("lease grant: {e}"))
}

/// Why the session ended, once it has.
async fn session_lost(session: &Session) -> String {
    session.lost().await;
    let lease_id = session.lease_id();
    Error::SessionLost { lease_id }.to_string()
}

/// Revokes the lease (deleting its keys); best effort, bounded by [`RELEASE_TIMEOUT`].
async fn close(session: Session) {
    let lease_id = session.lease_id();
    match tokio::time::timeout(RELEASE_TIMEOUT, session.close()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("yizhi: revoking lease {lease_id:x}: {e}"),
        Err(_) => eprintln!("yizhi: revoking lease {lease_id:x}: timed out"),
    }
}

/// Waits for `work` unless the lease is lost or Ctrl-C comes first.
enum Raced<T> {
    Done(T),
    Lost(String),
    Interrupted,
}

/// The answer to a Lock or Campaign `call` on `name`, raced against the session's loss and an
/// interrupt; otherwise what the command exits with (once it has closed the session).
async fn answer<T>(
    session: &Session,
    call: impl Future<Output = Result<T, tonic::Status>>,
    what: &str,
    name: &str,
) -> Result<T, Result<i32, String>> {
    match race(session, call).await {
        Raced::Done(Ok(response)) => Ok(response),
        Raced::Done(Err(e)) => Err(Err(format!("{what} {name}: {}", e.message()))),
        Raced::Lost(reason) => Err(Err(reason)),
        Raced::Interrupted => Err(Ok(INTERRUPTED_EXIT)),
    }
}

async fn race<T>(session: &Session, work: impl Future<Output = T>) -> Raced<T> {
    tokio::select! {
        done = work => Raced::Done(done),
        reason = session_lost(session) => Raced::Lost(reason),
        () = interrupted() => Raced::Interrupted,
    }
}

/// Ctrl-C (SIGINT) or SIGTERM: both end a wait in order, releasing what we hold.
async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn lock_main(args: LockArgs) -> Result<i32, String> {
    let client = connect(&args.endpoints).await?;
    let session = open_session(&client, args.ttl).await?;
    let request = lockpb::LockRequest {
        name: args.name.clone().into_bytes(),
        lease: session.lease_id(),
    };
    let mut lock_client = LockClient::new(client.channel());
    let granted = match answer(&session, lock_client.lock(request), "lock", &args.name).await {
        Ok(response) => response.into_inner(),
        Err(exit) => {
            close(session).await;
            return exit;
        }
    };
    let token = match fencing_token(&client, &granted.key).await {
        Ok(token) => token,
        Err(e) => {
            close(session).await;
            return Err(e);
        }
    };
    let status = run_holding(&session, &args.command, &granted, token).await;
    let unlock = lock_client.unlock(lockpb::UnlockRequest {
        key: granted.key.clone(),
    });
    let _ = tokio::time::timeout(RELEASE_TIMEOUT, unlock).await;
    close(session).await;
    status
}

/// The create revision of the lock key, read after the grant.
async fn fencing_token(client: &Client, key: &[u8]) -> Result<i64, String> {
    let response = client
        .get(key, GetOptions::new())
        .await
        .map_err(|e| format!("reading the lock key: {e}"))?;
    match response.kvs.first() {
        Some(kv) => Ok(kv.create_revision),
        None => Err("the lock key vanished right after the grant (lease lost)".into()),
    }
}

/// Runs the command holding the lock; its exit status as ours.
async fn run_holding(
    session: &Session,
    command: &[String],
    granted: &lockpb::LockResponse,
    token: i64,
) -> Result<i32, String> {
    let key = String::from_utf8_lossy(&granted.key).into_owned();
    let header_revision = granted.header.map(|h| h.revision).unwrap_or(0);
    let (program, arguments) = command.split_first().ok_or("no command")?;
    let mut child = std::process::Command::new(program)
        .args(arguments)
        .env("YIZHI_LOCK_KEY", &key)
        .env("YIZHI_FENCING_TOKEN", token.to_string())
        .env("ETCD_LOCK_KEY", &key)
        .env("ETCD_LOCK_REV", header_revision.to_string())
        .spawn()
        .map_err(|e| format!("running {program}: {e}"))?;
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let mut exited = tokio::task::spawn_blocking(move || child.wait());
    let mut lease_lost = false;
    let mut signal_forwarded = false;
    let waited = loop {
        tokio::select! {
            waited = &mut exited => break waited,
            reason = session_lost(session), if !lease_lost => {
                eprintln!("yizhi lock: {reason}; the lock is no longer held: sending SIGTERM to {program} (pid {pid})");
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                lease_lost = true;
            }
            // A terminal's Ctrl-C reaches the command too; a signal sent to us alone is passed on.
            () = interrupted(), if !signal_forwarded => {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                signal_forwarded = true;
            }
        }
    };
    let status = waited
        .map_err(|e| format!("waiting for {program}: {e}"))?
        .map_err(|e| format!("waiting for {program}: {e}"))?;
    let code = exit_code(status);
    Ok(if lease_lost && code == 0 { 1 } else { code })
}

fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    }
}

fn print_kv(kv: &yizhi_proto::mvccpb::KeyValue) {
    println!("{}", String::from_utf8_lossy(&kv.key));
    println!("{}", String::from_utf8_lossy(&kv.value));
}

async fn campaign_main(args: ElectArgs, proposal: String) -> Result<i32, String> {
    let client = connect(&args.endpoints).await?;
    let session = open_session(&client, args.ttl).await?;
    let request = epb::CampaignRequest {
        name: args.name.clone().into_bytes(),
        lease: session.lease_id(),
        value: proposal.clone().into_bytes(),
    };
    let mut election = ElectionClient::new(client.channel());
    let leader = match answer(&session, election.campaign(request), "campaign", &args.name).await {
        Ok(response) => response.into_inner().leader,
        Err(exit) => {
            close(session).await;
            return exit;
        }
    };
    let leader = leader.ok_or("campaign answered without a leader key")?;
    print_kv(&yizhi_proto::mvccpb::KeyValue {
        key: leader.key.clone(),
        value: proposal.into_bytes(),
        ..Default::default()
    });
    let code = match race(&session, std::future::pending::<()>()).await {
        Raced::Lost(reason) => {
            eprintln!("yizhi elect: {reason}; no longer the leader");
            1
        }
        Raced::Done(()) | Raced::Interrupted => {
            let resign = election.resign(epb::ResignRequest { leader: Some(leader) });
            let _ = tokio::time::timeout(RELEASE_TIMEOUT, resign).await;
            0
        }
    };
    close(session).await;
    Ok(code)
}

async fn observe_main(args: ElectArgs) -> Result<i32, String> {
    let client = connect(&args.endpoints).await?;
    let mut election = ElectionClient::new(client.channel());
    let request = epb::LeaderRequest {
        name: args.name.clone().into_bytes(),
    };
    let mut stream = election
        .observe(request)
        .await
        .map_err(|e| format!("observe {}: {}", args.name, e.message()))?
        .into_inner();
    loop {
        tokio::select! {
            next = stream.message() => match next {
                Ok(Some(response)) => {
                    if let Some(kv) = &response.kv {
                        print_kv(kv);
                    }
                }
                Ok(None) => return Ok(0),
                Err(e) => return Err(format!("observe {}: {}", args.name, e.message())),
            },
            () = interrupted() => return Ok(0),
        }
    }
}
