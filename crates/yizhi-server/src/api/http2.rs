//! The client API's HTTP/2 server: tonic's [`Routes`] (every gRPC service) served by hyper
//! directly, behind [`TakeGrpcTimeout`].
//!
//! Why not tonic's `Server`: its outermost layer enforces each request's `grpc-timeout` and
//! answers `Canceled` when it expires, outside any layer a user can add, and etcd's clients retry
//! a write answered that way (see [`super::deadline`]). The connection settings below are the
//! ones tonic's `Server` used (tonic 0.14.9, `Server::serve_internal` with our builder's
//! defaults), so nothing else about the API changes.

use std::time::Duration;

use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::service::Routes;

use super::deadline::TakeGrpcTimeout;

/// tonic's default HTTP/2 keep-alive timeout (inert while no keep-alive interval is set, as now).
const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// After a failed accept (out of file descriptors, say), a pause before the next, so the loop
/// does not spin on the error.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(10);

type ApiService = TowerToHyperService<TakeGrpcTimeout<Routes>>;

fn connection_builder() -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        // As tonic's server: no cap on concurrent streams (hyper's own default is 200, and one
        // etcd client multiplexes all its watches, keep-alives and calls over one connection).
        .max_concurrent_streams(None)
        .max_pending_accept_reset_streams(None)
        .max_local_error_reset_streams(None)
        .adaptive_window(false)
        .keep_alive_interval(None)
        .keep_alive_timeout(HTTP2_KEEPALIVE_TIMEOUT);
    builder
}

/// Serves `routes` to every connection `listener` accepts until `stop` turns true; then closes
/// the listener at once (new clients are refused rather than left hanging), asks every
/// connection to finish (HTTP/2 GOAWAY: calls in progress complete) and waits for them.
pub async fn serve(listener: TcpListener, routes: Routes, mut stop: watch::Receiver<bool>) {
    let builder = connection_builder();
    let service = TowerToHyperService::new(TakeGrpcTimeout::new(routes.prepare()));
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = stopped(&mut stop) => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let connection = serve_connection(builder.clone(), stream, service.clone(), stop.clone());
                connections.spawn(connection);
            }
            Err(e) => {
                tracing::debug!(error = %e, "accepting a client connection failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Resolves once `stop` turns true (or its sender is gone). The guard `wait_for` returns is
/// dropped here: held across an await it would make the connection's future not `Send`.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

async fn serve_connection(
    builder: http2::Builder<TokioExecutor>,
    stream: TcpStream,
    service: ApiService,
    mut stop: watch::Receiver<bool>,
) {
    // Replies are several small writes; without TCP_NODELAY the second one waits ~40 ms for the
    // client's delayed ACK (Nagle), which capped reads at a few hundred per second.
    let _ = stream.set_nodelay(true);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stopped(&mut stop) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "client connection ended with an error");
    }
}
