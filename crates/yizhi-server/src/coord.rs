//! `yizhi lock` and `yizhi elect`: clients of the Lock and Election services (any etcd v3
//! server that has them), each on a lease it keeps alive.
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
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::transport::Channel;
use yizhi_proto::etcdserverpb as pb;
use yizhi_proto::etcdserverpb::kv_client::KvClient;
use yizhi_proto::etcdserverpb::lease_client::LeaseClient;
use yizhi_proto::v3electionpb as epb;
use yizhi_proto::v3electionpb::election_client::ElectionClient;
use yizhi_proto::v3lockpb as lockpb;
use yizhi_proto::v3lockpb::lock_client::LockClient;

use crate::bench::cluster::{connect, parse_endpoints};

/// One keep-alive round trip longer than this counts as failed (and the next endpoint is tried).
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause before trying the next endpoint after a failure.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
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

/// A channel to the first endpoint that answers, trying from `start` on; with its index.
async fn connect_any(endpoints: &[String], start: usize) -> Result<(usize, Channel), String> {
    let mut last_error = String::from("no endpoints");
    for offset in 0..endpoints.len() {
        let index = (start + offset) % endpoints.len();
        match connect(&endpoints[index]).await {
            Ok(channel) => return Ok((index, channel)),
            Err(e) => last_error = e,
        }
    }
    Err(last_error)
}

/// A lease kept alive in the background until dropped or lost.
struct Session {
    lease: i64,
    channel: Channel,
    /// Becomes `Some(reason)` once the lease is lost.
    lost: watch::Receiver<Option<String>>,
    keeper: tokio::task::JoinHandle<()>,
}

impl Session {
    async fn start(endpoints: Vec<String>, ttl_secs: i64) -> Result<Session, String> {
        let (index, channel) = connect_any(&endpoints, 0).await?;
        let sent_at = Instant::now();
        let granted = LeaseClient::new(channel.clone())
            .lease_grant(pb::LeaseGrantRequest { ttl: ttl_secs, id: 0 })
            .await
            .map_err(|e| format!("lease grant: {}", e.message()))?
            .into_inner();
        if granted.ttl <= 0 {
            return Err(format!("lease grant: TTL {}", granted.ttl));
        }
        let (lost_tx, lost) = watch::channel(None);
        let keeper = Keeper {
            endpoints,
            index,
            channel: channel.clone(),
            lease: granted.id,
            ttl: Duration::from_secs(granted.ttl as u64),
            // The server counts from when it applied the grant, which is after we sent it.
            expires_at: sent_at + Duration::from_secs(granted.ttl as u64),
        };
        let keeper = tokio::spawn(keeper.run(lost_tx));
        Ok(Session {
            lease: granted.id,
            channel,
            lost,
            keeper,
        })
    }

    /// Resolves with the reason once the lease is lost.
    async fn lost(&self) -> String {
        let mut lost = self.lost.clone();
        match lost.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => "lease keeper stopped".into(),
        }
    }

    /// Stops the keep-alives and revokes the lease (deleting its keys); best effort.
    async fn close(self) {
        self.keeper.abort();
        let mut client = LeaseClient::new(self.channel.clone());
        let revoke = client.lease_revoke(pb::LeaseRevokeRequest { id: self.lease });
        if let Ok(Err(e)) = tokio::time::timeout(KEEP_ALIVE_TIMEOUT, revoke).await {
            eprintln!("yizhi: revoking lease {:x}: {}", self.lease, e.message());
        }
    }
}

/// The keep-alive loop: renews every TTL/3, moves to the next endpoint on a failure, and gives
/// the lease up once a whole TTL passed since the last renewal's request was sent.
struct Keeper {
    endpoints: Vec<String>,
    index: usize,
    channel: Channel,
    lease: i64,
    ttl: Duration,
    expires_at: Instant,
}

impl Keeper {
    async fn run(mut self, lost: watch::Sender<Option<String>>) {
        let reason = loop {
            tokio::time::sleep_until(self.next_renewal()).await;
            if Instant::now() >= self.expires_at {
                break format!(
                    "lease {:x} expired: no keep-alive succeeded within its TTL",
                    self.lease
                );
            }
            let sent_at = Instant::now();
            match self.renew_once().await {
                Ok(ttl_secs) if ttl_secs > 0 => {
                    self.expires_at = sent_at + Duration::from_secs(ttl_secs as u64);
                }
                Ok(_) => break format!("lease {:x} is gone (expired or revoked)", self.lease),
                Err(e) => {
                    tracing::debug!(error = %e, "keep-alive failed; trying the next endpoint");
                    tokio::time::sleep(RETRY_PAUSE).await;
                    if let Ok((index, channel)) = connect_any(&self.endpoints, self.index + 1).await {
                        (self.index, self.channel) = (index, channel);
                    }
                }
            }
        };
        let _ = lost.send(Some(reason));
    }

    fn next_renewal(&self) -> Instant {
        let renew_at = self
            .expires_at
            .checked_sub(self.ttl * 2 / 3)
            .unwrap_or_else(Instant::now);
        renew_at.min(self.expires_at)
    }

    /// One keep-alive on a stream of its own; the TTL the server answered (0: lease gone).
    async fn renew_once(&self) -> Result<i64, String> {
        let request = pb::LeaseKeepAliveRequest { id: self.lease };
        let mut client = LeaseClient::new(self.channel.clone());
        let exchange = async {
            let mut responses = client
                .lease_keep_alive(tokio_stream::once(request))
                .await
                .map_err(|e| e.message().to_string())?
                .into_inner();
            match responses.message().await {
                Ok(Some(response)) => Ok(response.ttl),
                Ok(None) => Err("keep-alive stream ended".to_string()),
                Err(e) => Err(e.message().to_string()),
            }
        };
        tokio::time::timeout(KEEP_ALIVE_TIMEOUT, exchange)
            .await
            .map_err(|_| "keep-alive timed out".to_string())?
    }
}

/// Waits for `work` unless the lease is lost or Ctrl-C comes first.
enum Raced<T> {
    Done(T),
    Lost(String),
    Interrupted,
}

async fn race<T>(session: &Session, work: impl Future<Output = T>) -> Raced<T> {
    tokio::select! {
        done = work => Raced::Done(done),
        reason = session.lost() => Raced::Lost(reason),
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
    let endpoints = parse_endpoints(&args.endpoints)?;
    let session = Session::start(endpoints, args.ttl).await?;
    let request = lockpb::LockRequest {
        name: args.name.clone().into_bytes(),
        lease: session.lease,
    };
    let mut client = LockClient::new(session.channel.clone());
    let granted = match race(&session, client.lock(request)).await {
        Raced::Done(Ok(response)) => response.into_inner(),
        Raced::Done(Err(e)) => {
            session.close().await;
            return Err(format!("lock {}: {}", args.name, e.message()));
        }
        Raced::Lost(reason) => {
            session.close().await;
            return Err(reason);
        }
        Raced::Interrupted => {
            session.close().await;
            return Ok(INTERRUPTED_EXIT);
        }
    };
    let token = match fencing_token(&session.channel, &granted.key).await {
        Ok(token) => token,
        Err(e) => {
            session.close().await;
            return Err(e);
        }
    };
    let status = run_holding(&session, &args.command, &granted, token).await;
    let unlock = client.unlock(lockpb::UnlockRequest {
        key: granted.key.clone(),
    });
    let _ = tokio::time::timeout(KEEP_ALIVE_TIMEOUT, unlock).await;
    session.close().await;
    status
}

/// The create revision of the lock key, read after the grant.
async fn fencing_token(channel: &Channel, key: &[u8]) -> Result<i64, String> {
    let response = KvClient::new(channel.clone())
        .range(pb::RangeRequest {
            key: key.to_vec(),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("reading the lock key: {}", e.message()))?
        .into_inner();
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
            reason = session.lost(), if !lease_lost => {
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
    let endpoints = parse_endpoints(&args.endpoints)?;
    let session = Session::start(endpoints, args.ttl).await?;
    let request = epb::CampaignRequest {
        name: args.name.clone().into_bytes(),
        lease: session.lease,
        value: proposal.clone().into_bytes(),
    };
    let mut client = ElectionClient::new(session.channel.clone());
    let leader = match race(&session, client.campaign(request)).await {
        Raced::Done(Ok(response)) => response.into_inner().leader,
        Raced::Done(Err(e)) => {
            session.close().await;
            return Err(format!("campaign {}: {}", args.name, e.message()));
        }
        Raced::Lost(reason) => {
            session.close().await;
            return Err(reason);
        }
        Raced::Interrupted => {
            session.close().await;
            return Ok(INTERRUPTED_EXIT);
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
            let resign = client.resign(epb::ResignRequest { leader: Some(leader) });
            let _ = tokio::time::timeout(KEEP_ALIVE_TIMEOUT, resign).await;
            0
        }
    };
    session.close().await;
    Ok(code)
}

async fn observe_main(args: ElectArgs) -> Result<i32, String> {
    let endpoints = parse_endpoints(&args.endpoints)?;
    let (_, channel) = connect_any(&endpoints, 0).await?;
    let mut client = ElectionClient::new(channel);
    let request = epb::LeaderRequest {
        name: args.name.clone().into_bytes(),
    };
    let mut stream = client
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
