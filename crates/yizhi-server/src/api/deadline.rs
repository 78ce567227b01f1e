//! A client's deadline, taken from its `grpc-timeout` header before any gRPC machinery sees it.
//!
//! etcd's Go client retries a call answered `Canceled` or `DeadlineExceeded` while its own context
//! is still alive, a Put included (its retry interceptor reads them as the attempt's own timeout).
//! tonic's server enforces `grpc-timeout` itself and answers `Canceled: Timeout expired` a moment
//! before the client's deadline, so a write whose outcome was unknown was sent again and applied
//! twice (issue 13, anomaly 1; etcd-io/etcd#18424). We therefore serve without tonic's server
//! ([`super::http2`]), and [`TakeGrpcTimeout`] removes the header from every request and keeps
//! the deadline it names as a [`ClientDeadline`] extension. The handlers pass that deadline with
//! their proposals ([`super::Api::deadline`]), the driver proposes nothing after it, and a client
//! still waiting at it is answered as etcd answers: "etcdserver: request timed out" (Unavailable).

use std::task::{Context, Poll};
use std::time::Duration;

use http::HeaderValue;
use tower_service::Service;
use yizhi_member::Deadline;

use crate::node::lessor::wall_clock_ms;

pub const GRPC_TIMEOUT_HEADER: &str = "grpc-timeout";
/// gRPC over HTTP/2: "TimeoutValue → {positive integer as ASCII string of at most 8 digits}".
const MAX_TIMEOUT_DIGITS: usize = 8;

/// The deadline a client's `grpc-timeout` named, on this member's wall clock, fixed when the
/// request arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientDeadline(pub Deadline);

/// The duration a `grpc-timeout` value names; None for a malformed one (ignored, as tonic and
/// grpc-go's server do: the client still enforces its own deadline).
pub fn parse_grpc_timeout(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?;
    let unit_at = text.len().checked_sub(1)?;
    let (digits, unit) = text.split_at(unit_at);
    if digits.is_empty() || digits.len() > MAX_TIMEOUT_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Removes `grpc-timeout` from each request and records its deadline as a [`ClientDeadline`]
/// extension (the outermost layer: nothing below may see the header and act on it).
#[derive(Clone, Debug)]
pub struct TakeGrpcTimeout<S> {
    inner: S,
}

impl<S> TakeGrpcTimeout<S> {
    pub fn new(inner: S) -> Self {
        TakeGrpcTimeout { inner }
    }
}

/// The request with `grpc-timeout` taken out and its deadline (counted from `now_ms`) put in.
fn take_grpc_timeout<B>(request: &mut http::Request<B>, now_ms: u64) {
    let Some(value) = request.headers_mut().remove(GRPC_TIMEOUT_HEADER) else {
        return;
    };
    assert!(
        !request.headers().contains_key(GRPC_TIMEOUT_HEADER),
        "every value is removed"
    );
    if let Some(timeout) = parse_grpc_timeout(&value) {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let deadline = Deadline {
            at_ms: now_ms.saturating_add(timeout_ms),
        };
        request.extensions_mut().insert(ClientDeadline(deadline));
    }
}

impl<S, B> Service<http::Request<B>> for TakeGrpcTimeout<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        take_grpc_timeout(&mut request, wall_clock_ms());
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout(text: &'static str) -> Option<Duration> {
        parse_grpc_timeout(&HeaderValue::from_static(text))
    }

    #[test]
    fn grpc_timeouts_parse_in_every_unit_and_malformed_ones_are_ignored() {
        assert_eq!(timeout("300m"), Some(Duration::from_millis(300)));
        assert_eq!(timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(timeout("99999999S"), Some(Duration::from_secs(99_999_999)));
        assert_eq!(timeout("1500u"), Some(Duration::from_micros(1500)));
        assert_eq!(timeout("7n"), Some(Duration::from_nanos(7)));
        for malformed in ["", "m", "300", "300x", "-1S", "+1S", "1.5S", "123456789m", " 1S"] {
            assert_eq!(timeout(malformed), None, "{malformed:?}");
        }
    }

    #[test]
    fn the_header_is_taken_out_and_its_deadline_put_in() {
        let mut request = http::Request::builder()
            .header(GRPC_TIMEOUT_HEADER, "300m")
            .header("te", "trailers")
            .body(())
            .expect("request");
        take_grpc_timeout(&mut request, 1_000);
        assert!(request.headers().get(GRPC_TIMEOUT_HEADER).is_none());
        assert!(request.headers().get("te").is_some(), "other headers stay");
        let deadline = request.extensions().get::<ClientDeadline>();
        assert_eq!(deadline, Some(&ClientDeadline(Deadline { at_ms: 1_300 })));

        let mut malformed = http::Request::builder()
            .header(GRPC_TIMEOUT_HEADER, "soon")
            .body(())
            .expect("request");
        take_grpc_timeout(&mut malformed, 1_000);
        assert!(malformed.headers().get(GRPC_TIMEOUT_HEADER).is_none());
        assert!(malformed.extensions().get::<ClientDeadline>().is_none());
    }
}
