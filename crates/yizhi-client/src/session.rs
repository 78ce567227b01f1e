//! A session: one lease kept alive in the background, with a clear signal when it is lost.
//!
//! Keys a recipe writes under the session's lease live exactly as long as the lease. The
//! keep-alive task sends a keep-alive every TTL/3 on one long-lived stream (moving to the next
//! endpoint when the stream breaks) and tracks a conservative expiry: the send time of the last
//! acknowledged keep-alive plus the TTL the server granted then. The session is **lost** when
//! the server answers TTL 0 (the lease is gone) or when that expiry passes without a renewal (the
//! leader may have revoked it); either way the signal flips to `true` and stays there, and the
//! task stops. [`Session::close`] revokes the lease; dropping a session (or
//! [`Session::abandon`]) only stops the keep-alives, and the lease then expires on its own — what
//! a crashed client looks like to everyone else.

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use yizhi_proto::etcdserverpb as pb;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::lease::lease;

/// Keep-alives are never sent more often than this, whatever the TTL.
const MIN_KEEP_ALIVE_PERIOD: Duration = Duration::from_millis(100);

/// A lease kept alive until closed, dropped or lost.
#[derive(Debug)]
pub struct Session {
    client: Client,
    lease_id: i64,
    ttl_secs: i64,
    lost: watch::Receiver<bool>,
    keep_alive: JoinHandle<()>,
}

/// Why one keep-alive stream stopped.
enum StreamEnd {
    /// The lease is gone (TTL 0) or its expiry passed: the session is lost.
    Lost,
    /// The stream failed; another endpoint may do better.
    Broken,
}

impl Session {
    /// Grants a lease of `ttl_secs` and starts keeping it alive.
    pub async fn new(client: &Client, ttl_secs: i64) -> Result<Session> {
        if ttl_secs <= 0 {
            return Err(Error::InvalidArgument(format!("session TTL {ttl_secs} s")));
        }
        let asked_at = Instant::now();
        let grant = client.lease_grant(ttl_secs).await?;
        let (lost_tx, lost) = watch::channel(false);
        let expires_at = asked_at + Duration::from_secs(grant.ttl_secs as u64);
        let keep_alive = tokio::spawn(keep_alive(
            client.clone(),
            grant.id,
            grant.ttl_secs,
            expires_at,
            lost_tx,
        ));
        Ok(Session {
            client: client.clone(),
            lease_id: grant.id,
            ttl_secs: grant.ttl_secs,
            lost,
            keep_alive,
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn lease_id(&self) -> i64 {
        self.lease_id
    }

    pub fn ttl_secs(&self) -> i64 {
        self.ttl_secs
    }

    /// Whether the lease is still being kept alive (a local judgement: `true` may be stale by up
    /// to one keep-alive period; `false` is final).
    pub fn is_alive(&self) -> bool {
        !*self.lost.borrow() && !self.keep_alive.is_finished()
    }

    /// A receiver that turns `true` once the session is lost (or the session is dropped).
    pub fn lost_signal(&self) -> watch::Receiver<bool> {
        self.lost.clone()
    }

    /// Resolves when the session is lost.
    pub async fn lost(&self) {
        wait_lost(self.lost.clone()).await;
    }

    /// Returns [`Error::SessionLost`] unless the session is alive.
    pub fn check_alive(&self) -> Result<()> {
        if self.is_alive() {
            Ok(())
        } else {
            Err(Error::SessionLost {
                lease_id: self.lease_id,
            })
        }
    }

    /// Stops the keep-alives and revokes the lease, deleting every key attached to it.
    pub async fn close(self) -> Result<()> {
        self.keep_alive.abort();
        self.client.lease_revoke(self.lease_id).await
    }

    /// Stops the keep-alives without revoking: the lease expires after its TTL, as when the
    /// client crashed. Returns the lease id.
    pub fn abandon(self) -> i64 {
        self.keep_alive.abort();
        self.lease_id
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.keep_alive.abort();
    }
}

/// Resolves once `lost` reads `true` or its sender is gone (the keep-alive task stopped).
pub(crate) async fn wait_lost(mut lost: watch::Receiver<bool>) {
    let _ = lost.wait_for(|lost| *lost).await;
}

async fn keep_alive(
    client: Client,
    id: i64,
    ttl_secs: i64,
    mut expires_at: Instant,
    lost: watch::Sender<bool>,
) {
    let period = Duration::from_millis((ttl_secs.max(1) as u64) * 1000 / 3).max(MIN_KEEP_ALIVE_PERIOD);
    let mut failures = 0u32;
    loop {
        if Instant::now() >= expires_at {
            break;
        }
        let (index, channel) = client.current();
        match keep_alive_stream(channel, id, period, &mut expires_at).await {
            StreamEnd::Lost => break,
            StreamEnd::Broken => {
                failures = failures.saturating_add(1);
                client.rotate_from(index);
                let pause = client.backoff(failures).min(period);
                tokio::time::sleep_until((Instant::now() + pause).min(expires_at)).await;
            }
        }
    }
    let _ = lost.send(true);
}

/// Keeps `id` alive on one stream until it breaks or the lease is lost.
async fn keep_alive_stream(
    channel: tonic::transport::Channel,
    id: i64,
    period: Duration,
    expires_at: &mut Instant,
) -> StreamEnd {
    let (requests, request_stream) = mpsc::channel(1);
    let opened = tokio::time::timeout_at(
        *expires_at,
        lease(channel).lease_keep_alive(ReceiverStream::new(request_stream)),
    )
    .await;
    let mut answers = match opened {
        Ok(Ok(response)) => response.into_inner(),
        Ok(Err(_)) => return StreamEnd::Broken,
        Err(_) => return StreamEnd::Lost,
    };
    loop {
        let sent_at = Instant::now();
        if requests.send(pb::LeaseKeepAliveRequest { id }).await.is_err() {
            return StreamEnd::Broken;
        }
        match tokio::time::timeout_at(*expires_at, answers.message()).await {
            Ok(Ok(Some(answer))) if answer.ttl > 0 => {
                // Counted from the send: the server's clock started no earlier than that.
                *expires_at = sent_at + Duration::from_secs(answer.ttl as u64);
            }
            Ok(Ok(Some(_))) => return StreamEnd::Lost,
            Ok(Ok(None)) | Ok(Err(_)) => return StreamEnd::Broken,
            Err(_) => return StreamEnd::Lost,
        }
        tokio::time::sleep_until(sent_at + period).await;
    }
}
