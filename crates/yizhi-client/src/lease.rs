//! Leases: grant, revoke, time-to-live, and single keep-alives (a [`crate::Session`] keeps one
//! alive in the background).

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use yizhi_proto::etcdserverpb as pb;
use yizhi_proto::etcdserverpb::lease_client::LeaseClient;

use crate::client::{Client, MAX_RESPONSE_BYTES, Retry};
use crate::error::{Error, Result};

pub(crate) fn lease(channel: tonic::transport::Channel) -> LeaseClient<tonic::transport::Channel> {
    LeaseClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES)
}

/// A granted lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseGrant {
    pub id: i64,
    /// The TTL the server granted (it may raise a small request to its minimum).
    pub ttl_secs: i64,
}

impl Client {
    /// Grants a lease with a server-chosen id. A retried grant could leave an orphan lease, which
    /// simply expires, so grants are retried like reads.
    pub async fn lease_grant(&self, ttl_secs: i64) -> Result<LeaseGrant> {
        let request = pb::LeaseGrantRequest { ttl: ttl_secs, id: 0 };
        let response = self
            .unary("LeaseGrant", Retry::Safe, request, |ch, r| async move {
                lease(ch).lease_grant(r).await
            })
            .await?;
        if !response.error.is_empty() {
            return Err(Error::Server {
                code: tonic::Code::Unknown,
                message: response.error,
            });
        }
        if response.id == 0 || response.ttl <= 0 {
            return Err(Error::UnexpectedResponse(format!(
                "lease grant answered id {} ttl {}",
                response.id, response.ttl
            )));
        }
        Ok(LeaseGrant {
            id: response.id,
            ttl_secs: response.ttl,
        })
    }

    /// Revokes a lease, deleting its keys. Revoking twice is harmless (the second answers "not
    /// found"), so it is retried; a not-found answer after a retry is reported as the server's.
    pub async fn lease_revoke(&self, id: i64) -> Result<()> {
        let request = pb::LeaseRevokeRequest { id };
        self.unary("LeaseRevoke", Retry::Safe, request, |ch, r| async move {
            lease(ch).lease_revoke(r).await
        })
        .await?;
        Ok(())
    }

    /// The remaining TTL (`ttl == -1`: the lease does not exist) and, with `keys`, its keys.
    pub async fn lease_time_to_live(&self, id: i64, keys: bool) -> Result<pb::LeaseTimeToLiveResponse> {
        let request = pb::LeaseTimeToLiveRequest { id, keys };
        self.unary("LeaseTimeToLive", Retry::Safe, request, |ch, r| async move {
            lease(ch).lease_time_to_live(r).await
        })
        .await
    }

    /// One keep-alive over a short-lived stream; returns the new TTL (0: the lease is gone).
    pub async fn lease_keep_alive_once(&self, id: i64) -> Result<i64> {
        self.unary("LeaseKeepAlive", Retry::Safe, id, |ch, r| async move {
            let (requests, stream) = mpsc::channel(1);
            let metadata = r.metadata().clone();
            let _ = requests
                .send(pb::LeaseKeepAliveRequest { id: *r.get_ref() })
                .await;
            let mut request = tonic::Request::new(ReceiverStream::new(stream));
            *request.metadata_mut() = metadata;
            let mut answers = lease(ch).lease_keep_alive(request).await?.into_inner();
            match answers.message().await? {
                Some(answer) => Ok(tonic::Response::new(answer.ttl)),
                None => Err(tonic::Status::unavailable(
                    "keep-alive stream ended without an answer",
                )),
            }
        })
        .await
    }
}
