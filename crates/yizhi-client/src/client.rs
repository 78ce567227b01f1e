//! Connections, endpoint failover and the retry policy every call goes through.
//!
//! A [`Client`] holds one lazily connected gRPC channel per endpoint and a "current" endpoint.
//! A call runs on the current endpoint; when that endpoint is unreachable or unavailable the
//! client moves on to the next one and tries again, with exponential backoff, up to
//! [`ClientOptions::max_attempts`] attempts. Whether a failed attempt may be repeated depends on
//! the call's [`Retry`] class: a read, or a write built to be idempotent, is repeated after any
//! unavailability; a plain write only when the failure proves it never left (the connection could
//! not be made, or the server refused it before proposing it). Otherwise the caller gets
//! [`Error::Ambiguous`]: the write may or may not have happened (etcd's clientv3 draws the same
//! line between "repeatable" and "non-repeatable" requests). With exactly-once tagging on (the
//! default) and a server that confirmed it deduplicates, every write is repeatable
//! ([`crate::exactly_once`]).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::error::{Error, Result};
use crate::exactly_once::Sequencer;

/// Endpoints one client may be given.
pub const MAX_ENDPOINTS: usize = 64;
/// The largest response the client decodes (etcd's clients allow `math.MaxInt32`; a bounded
/// client must pick something: 64 MiB is far above yizhi's and etcd's request limits).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Whether a failed attempt of a call may be repeated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Repeating the call cannot change its effect (reads, keep-alives, guarded writes).
    Safe,
    /// Repeating could apply it twice: only retried when the attempt provably did not leave.
    OnlyIfUnsent,
}

/// Metadata of the caller's own attached to every attempt of a call (tracing ids, auth tokens...).
///
/// [`RequestMetadataHook::metadata`] is called once per call, before the first attempt, and the
/// same metadata goes with every retry of that call. Exactly-once writes do not need a hook: the
/// client attaches their metadata itself ([`crate::exactly_once`], [`ClientOptions::exactly_once`]).
pub trait RequestMetadataHook: Send + Sync + fmt::Debug {
    /// The metadata for one call of gRPC method `method` (e.g. `"Put"`, `"Txn"`).
    fn metadata(&self, method: &'static str, retry: Retry) -> MetadataMap;
}

/// Timeouts, retry budget and the optional metadata hook.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub connect_timeout: Duration,
    /// Per attempt of a unary call (streams are not bounded by it).
    pub request_timeout: Duration,
    /// Attempts of one call, across all endpoints, before [`Error::Unreachable`].
    pub max_attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub metadata_hook: Option<Arc<dyn RequestMetadataHook>>,
    /// Tag writes with a client id and sequence number so that a yizhi server applies each at most
    /// once, and retry ambiguous failures once a server has confirmed it deduplicates
    /// ([`crate::exactly_once`]). On by default; harmless against etcd, which ignores the tags.
    pub exactly_once: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(15),
            max_attempts: 10,
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(1),
            metadata_hook: None,
            exactly_once: true,
        }
    }
}

/// A handle on an etcd v3 cluster; cheap to clone (clones share connections).
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    urls: Vec<String>,
    channels: Vec<Channel>,
    /// Index into `channels` of the endpoint calls go to first. Invariant: < channels.len().
    current: AtomicUsize,
    options: ClientOptions,
    sequencer: Sequencer,
}

/// How one failed attempt is judged.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Retry,
    Fail(Error),
}

impl Client {
    /// A client over `endpoints` (`http://host:port` or `host:port`) with default options.
    /// Connections are made lazily, so this succeeds while members are down.
    pub async fn connect<S: AsRef<str>>(endpoints: &[S]) -> Result<Client> {
        Client::connect_with(endpoints, ClientOptions::default()).await
    }

    pub async fn connect_with<S: AsRef<str>>(endpoints: &[S], options: ClientOptions) -> Result<Client> {
        if endpoints.is_empty() || endpoints.len() > MAX_ENDPOINTS {
            return Err(Error::InvalidArgument(format!(
                "{} endpoints given, 1..={MAX_ENDPOINTS} allowed",
                endpoints.len()
            )));
        }
        if options.max_attempts == 0 {
            return Err(Error::InvalidArgument("max_attempts must be at least 1".into()));
        }
        let mut urls = Vec::with_capacity(endpoints.len());
        let mut channels = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let endpoint = endpoint.as_ref();
            let url = if endpoint.contains("://") {
                endpoint.to_string()
            } else {
                format!("http://{endpoint}")
            };
            let channel = Endpoint::from_shared(url.clone())
                .map_err(|e| Error::InvalidArgument(format!("endpoint {url:?}: {e}")))?
                .connect_timeout(options.connect_timeout)
                .tcp_nodelay(true)
                // Notices a peer that vanished without closing the connection (a partition).
                .http2_keep_alive_interval(Duration::from_secs(2))
                .keep_alive_timeout(Duration::from_secs(2))
                .keep_alive_while_idle(true)
                .connect_lazy();
            urls.push(url);
            channels.push(channel);
        }
        Ok(Client {
            inner: Arc::new(Inner {
                urls,
                channels,
                current: AtomicUsize::new(0),
                options,
                sequencer: Sequencer::new(),
            }),
        })
    }

    pub fn endpoints(&self) -> &[String] {
        &self.inner.urls
    }

    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// The id this client's writes carry for exactly-once application.
    pub fn client_id(&self) -> u64 {
        self.inner.sequencer.client_id()
    }

    /// The channel of the endpoint calls currently go to, for etcd services this client does not
    /// wrap (the Lock and Election services that `yizhi lock` / `yizhi elect` call).
    pub fn channel(&self) -> Channel {
        self.current().1
    }

    /// The endpoint index calls currently start from, and its channel.
    pub(crate) fn current(&self) -> (usize, Channel) {
        let index = self.inner.current.load(Ordering::Relaxed);
        assert!(
            index < self.inner.channels.len(),
            "current endpoint {index} out of range"
        );
        (index, self.inner.channels[index].clone())
    }

    /// Moves off `failed` (unless another call already did).
    pub(crate) fn rotate_from(&self, failed: usize) {
        let next = (failed + 1) % self.inner.channels.len();
        let _ = self
            .inner
            .current
            .compare_exchange(failed, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The pause before attempt `attempt` (1-based) after a failure.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let options = &self.inner.options;
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        options
            .backoff_initial
            .saturating_mul(factor)
            .min(options.backoff_max)
    }

    pub(crate) fn call_metadata(&self, method: &'static str, retry: Retry) -> MetadataMap {
        match &self.inner.options.metadata_hook {
            Some(hook) => hook.metadata(method, retry),
            None => MetadataMap::new(),
        }
    }

    /// Runs one unary call with failover: `send` is given the channel of the endpoint to try and
    /// the request (carrying the call's metadata) for each attempt.
    pub(crate) async fn unary<Req, Resp, F, Fut>(
        &self,
        method: &'static str,
        retry: Retry,
        request: Req,
        send: F,
    ) -> Result<Resp>
    where
        Req: Clone,
        F: FnMut(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<Resp>, Status>>,
    {
        self.unary_with_metadata(method, retry, MetadataMap::new(), request, send)
            .await
    }

    /// [`Client::unary`] with metadata of the call's own (`extra`) besides the hook's.
    pub(crate) async fn unary_with_metadata<Req, Resp, F, Fut>(
        &self,
        method: &'static str,
        retry: Retry,
        extra: MetadataMap,
        request: Req,
        mut send: F,
    ) -> Result<Resp>
    where
        Req: Clone,
        F: FnMut(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<Resp>, Status>>,
    {
        let metadata = self.merged_metadata(method, retry, extra);
        let sequencer = &self.inner.sequencer;
        // A write that could apply twice gets a sequence number, the same for all its attempts.
        let ticket = match retry {
            Retry::OnlyIfUnsent if self.inner.options.exactly_once => Some(sequencer.begin().await),
            _ => None,
        };
        let max_attempts = self.inner.options.max_attempts;
        let mut last = String::new();
        for attempt in 1..=max_attempts {
            let (index, channel) = self.current();
            let mut attempt_request = tonic::Request::new(request.clone());
            *attempt_request.metadata_mut() = metadata.clone();
            if let Some(ticket) = &ticket {
                sequencer.metadata(ticket, attempt_request.metadata_mut());
            }
            // Decided per attempt: a server may have confirmed deduplication meanwhile.
            let retry = match &ticket {
                Some(_) if sequencer.is_confirmed() => Retry::Safe,
                _ => retry,
            };
            let outcome =
                tokio::time::timeout(self.inner.options.request_timeout, send(channel, attempt_request))
                    .await;
            let verdict = match outcome {
                Ok(Ok(response)) => {
                    if ticket.is_some() {
                        sequencer.observe_response(response.metadata());
                    }
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) => {
                    last = format!("{}: {status}", self.inner.urls[index]);
                    judge(&status, retry)
                }
                Err(_) => {
                    last = format!(
                        "{}: no answer within {:?}",
                        self.inner.urls[index], self.inner.options.request_timeout
                    );
                    judge_timeout(&last, retry)
                }
            };
            if let Verdict::Fail(error) = verdict {
                return Err(error);
            }
            self.rotate_from(index);
            if attempt < max_attempts {
                tokio::time::sleep(self.backoff(attempt)).await;
            }
        }
        Err(Error::Unreachable {
            attempts: max_attempts,
            last,
        })
    }

    /// The hook's metadata of a call, with the call's own (`extra`, ASCII entries) over it.
    fn merged_metadata(&self, method: &'static str, retry: Retry, extra: MetadataMap) -> MetadataMap {
        let mut metadata = self.call_metadata(method, retry);
        for entry in extra.iter() {
            if let tonic::metadata::KeyAndValueRef::Ascii(key, value) = entry {
                metadata.insert(key.clone(), value.clone());
            }
        }
        metadata
    }
}

/// An attempt that got no answer in time may have been applied: only a safe call goes on.
fn judge_timeout(last: &str, retry: Retry) -> Verdict {
    match retry {
        Retry::Safe => Verdict::Retry,
        Retry::OnlyIfUnsent => Verdict::Fail(Error::Ambiguous(last.to_string())),
    }
}

/// Whether `status` came from an etcd server's own logic (as opposed to the transport).
fn from_server(status: &Status) -> bool {
    let message = status.message();
    message.starts_with("etcdserver:") || message.starts_with("mvcc:") || message.starts_with("lease:")
}

/// Whether the attempt provably never reached a server: the connection could not be made.
pub(crate) fn never_sent(status: &Status) -> bool {
    if status.code() != Code::Unavailable || from_server(status) {
        return false;
    }
    // The status and its source chain as text: tonic reports a failed dial only this way.
    let text = format!("{status:?}").to_ascii_lowercase();
    UNSENT_MARKERS.iter().any(|marker| text.contains(marker))
}

/// Phrases of a failed dial (hyper/tonic), as opposed to a connection that broke later.
const UNSENT_MARKERS: [&str; 5] = [
    "tcp connect error",
    "connection refused",
    "error trying to connect",
    "connecterror",
    "dns error",
];

/// How a yizhi server says it no longer remembers this client's writes.
const SESSION_PREFIX: &str = "yizhi: client session";

/// Whether another attempt (on the next endpoint) is allowed for `status`.
fn judge(status: &Status, retry: Retry) -> Verdict {
    let message = status.message();
    // Refused before anything was proposed: always safe to repeat elsewhere.
    // (yizhi's own ResourceExhausted texts are the exactly-once table's refusals: nothing applied.)
    let refused_unproposed = status.code() == Code::ResourceExhausted
        && (message == "etcdserver: too many requests" || message.starts_with("yizhi: "));
    let transient = matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded | Code::Aborted
    ) && (status.code() == Code::Unavailable || !from_server(status));
    if refused_unproposed || never_sent(status) {
        return Verdict::Retry;
    }
    if message.starts_with(SESSION_PREFIX) && message.contains("expired") {
        // The server forgot this client's answers, so it cannot tell a repeat from a new write.
        return Verdict::Fail(Error::Ambiguous(status.to_string()));
    }
    if !transient {
        return Verdict::Fail(Error::from_status(status));
    }
    match retry {
        Retry::Safe => Verdict::Retry,
        Retry::OnlyIfUnsent => Verdict::Fail(Error::Ambiguous(status.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_are_not_retried_and_keep_etcds_message() {
        let status = Status::out_of_range("etcdserver: mvcc: required revision has been compacted");
        assert_eq!(
            judge(&status, Retry::Safe),
            Verdict::Fail(Error::Server {
                code: Code::OutOfRange,
                message: "etcdserver: mvcc: required revision has been compacted".into()
            })
        );
    }

    #[test]
    fn unavailable_is_retried_only_when_safe_or_unsent() {
        let timed_out = Status::unavailable("etcdserver: request timed out");
        assert_eq!(judge(&timed_out, Retry::Safe), Verdict::Retry);
        assert!(matches!(
            judge(&timed_out, Retry::OnlyIfUnsent),
            Verdict::Fail(Error::Ambiguous(_))
        ));
        let refused = Status::unavailable("tcp connect error: Connection refused (os error 111)");
        assert_eq!(judge(&refused, Retry::OnlyIfUnsent), Verdict::Retry);
        let reset = Status::unavailable("error reading a body from connection: connection reset");
        assert!(matches!(
            judge(&reset, Retry::OnlyIfUnsent),
            Verdict::Fail(Error::Ambiguous(_))
        ));
        let busy = Status::resource_exhausted("etcdserver: too many requests");
        assert_eq!(judge(&busy, Retry::OnlyIfUnsent), Verdict::Retry);
    }

    #[tokio::test]
    async fn a_refused_dial_counts_as_never_sent() {
        let options = ClientOptions {
            max_attempts: 2,
            backoff_initial: Duration::from_millis(1),
            ..Default::default()
        };
        // Port 1 on loopback: nothing listens there.
        let client = Client::connect_with(&["127.0.0.1:1"], options)
            .await
            .expect("lazy connect");
        let result = client.put("k", "v", crate::kv::PutOptions::new()).await;
        assert!(
            matches!(result, Err(Error::Unreachable { attempts: 2, .. })),
            "a refused put is retried, then unreachable: {result:?}"
        );
        let error_text = Status::unavailable("error reading a body from connection");
        assert!(!never_sent(&error_text));
    }

    #[tokio::test]
    async fn backoff_doubles_up_to_its_cap() {
        let client = Client::connect(&["127.0.0.1:1"]).await.expect("lazy connect");
        let delays: Vec<u128> = (1..=7).map(|a| client.backoff(a).as_millis()).collect();
        assert_eq!(delays, vec![50, 100, 200, 400, 800, 1000, 1000]);
    }

    #[tokio::test]
    async fn connect_refuses_bad_endpoint_lists() {
        let none: [&str; 0] = [];
        assert!(matches!(
            Client::connect(&none).await,
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            Client::connect(&["http://[bad"]).await,
            Err(Error::InvalidArgument(_))
        ));
    }
}
