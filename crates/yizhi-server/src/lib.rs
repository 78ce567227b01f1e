//! The `yizhi` server: a member's runtime (engine driver, applier, peer transport) and the etcd v3
//! gRPC services on top of it. See ARCHITECTURE.md for how a request flows through it.

pub mod api;
pub mod bench;
pub mod cluster;
pub mod config;
pub mod coord;
pub mod metrics;
pub mod node;
pub mod server;
pub mod transport;
pub mod up;
