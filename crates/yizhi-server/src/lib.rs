//! The `yizhi` server: a member's runtime (engine driver, applier, peer transport) and the etcd v3
//! gRPC services on top of it. See ARCHITECTURE.md for how a request flows through it. A library:
//! the `yizhi` binary (crate `yizhi-cli`) runs a member with [`server::run`].

pub mod api;
pub mod cluster;
pub mod config;
pub mod metrics;
pub mod node;
pub mod server;
pub mod transport;
