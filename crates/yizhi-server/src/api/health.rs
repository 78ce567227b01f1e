//! `grpc.health.v1.Health`: SERVING while this member knows a leader (it can then serve
//! linearizable requests), NOT_SERVING otherwise. Every service name gets the member's answer.

use std::pin::Pin;
use std::time::Duration;

use tonic::{Request, Response, Status};
use yizhi_proto::grpc_health_v1::health_check_response::ServingStatus;
use yizhi_proto::grpc_health_v1::{self as health, HealthCheckRequest, HealthCheckResponse};

use super::Api;

/// How often a Watch stream looks at the member's status.
pub const HEALTH_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Answers a Watch stream may hold unsent (only changes are sent, so one is plenty).
const WATCH_QUEUE_MESSAGES: usize = 4;

#[derive(Debug)]
pub struct HealthService {
    api: Api,
}

impl HealthService {
    pub fn new(api: Api) -> Self {
        HealthService { api }
    }
}

fn serving_status(api: &Api) -> ServingStatus {
    match api.node.shared.status().leader {
        Some(_) => ServingStatus::Serving,
        None => ServingStatus::NotServing,
    }
}

type WatchStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl health::health_server::Health for HealthService {
    async fn check(&self, _: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(HealthCheckResponse {
            status: serving_status(&self.api) as i32,
        }))
    }

    type WatchStream = WatchStream;

    /// Sends the status now and again whenever it changes, until the client goes away.
    async fn watch(&self, _: Request<HealthCheckRequest>) -> Result<Response<WatchStream>, Status> {
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_QUEUE_MESSAGES);
        let api = self.api.clone();
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let status = serving_status(&api);
                if last != Some(status) {
                    last = Some(status);
                    let answer = HealthCheckResponse {
                        status: status as i32,
                    };
                    if tx.send(Ok(answer)).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(HEALTH_POLL_INTERVAL) => {}
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
