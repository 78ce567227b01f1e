//! Connections to the cluster under test: `--conns` gRPC channels spread over the endpoints (or all
//! to the leader), and finding the leader through Maintenance.Status, which etcd and Yizhi answer
//! alike.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use yizhi_proto::etcdserverpb::StatusRequest;
use yizhi_proto::etcdserverpb::maintenance_client::MaintenanceClient;

/// A connection attempt or Status call that takes longer is a dead endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// `host:port` or `http://host:port`, comma separated.
pub fn parse_endpoints(list: &str) -> Result<Vec<String>, String> {
    let endpoints: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            if e.contains("://") {
                e.to_string()
            } else {
                format!("http://{e}")
            }
        })
        .collect();
    if endpoints.is_empty() {
        return Err("--endpoints names no endpoint".into());
    }
    Ok(endpoints)
}

pub async fn connect(url: &str) -> Result<Channel, String> {
    Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("{url}: {e}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("connecting to {url}: {e}"))
}

/// `count` channels, channel i to endpoint i mod n.
pub async fn connect_all(endpoints: &[String], count: usize) -> Result<Vec<Channel>, String> {
    assert!(!endpoints.is_empty(), "no endpoints");
    let mut channels = Vec::with_capacity(count);
    for i in 0..count.max(1) {
        channels.push(connect(&endpoints[i % endpoints.len()]).await?);
    }
    Ok(channels)
}

/// The member an endpoint belongs to and the leader it knows of (0: none).
pub async fn member_and_leader(url: &str) -> Result<(u64, u64), String> {
    let channel = connect(url).await?;
    let mut client = MaintenanceClient::new(channel);
    let status = tokio::time::timeout(CONNECT_TIMEOUT, client.status(StatusRequest {}))
        .await
        .map_err(|_| format!("{url}: Status timed out"))?
        .map_err(|e| format!("{url}: Status: {}", e.message()))?
        .into_inner();
    let member = status.header.map(|h| h.member_id).unwrap_or(0);
    Ok((member, status.leader))
}

/// Index in `endpoints` of the leader's endpoint, waiting up to `wait` for one to be elected.
pub async fn find_leader(endpoints: &[String], wait: Duration) -> Result<usize, String> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut last_error = String::from("no endpoint answered");
    loop {
        let mut members = Vec::with_capacity(endpoints.len());
        let mut leader = 0;
        for url in endpoints {
            match member_and_leader(url).await {
                Ok((member, known_leader)) => {
                    members.push(Some(member));
                    if known_leader != 0 {
                        leader = known_leader;
                    }
                }
                Err(e) => {
                    last_error = e;
                    members.push(None);
                }
            }
        }
        if leader != 0 {
            if let Some(index) = members.iter().position(|m| *m == Some(leader)) {
                return Ok(index);
            }
            last_error = format!("leader {leader:x} is not among the endpoints");
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("no leader found: {last_error}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_a_scheme_and_blanks_are_dropped() {
        assert_eq!(
            parse_endpoints("127.0.0.1:2379, http://127.0.0.1:12379,").expect("valid"),
            vec!["http://127.0.0.1:2379", "http://127.0.0.1:12379"]
        );
        assert!(parse_endpoints(" , ").is_err());
    }
}
