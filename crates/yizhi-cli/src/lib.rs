//! The `yizhi` command's tools around the server: `yizhi up` (a local cluster of `yizhi server`
//! processes), `yizhi bench` (a load generator for any etcd v3 endpoint) and `yizhi lock` /
//! `yizhi elect` (clients of the Lock and Election services on a `yizhi-client` session). The
//! member itself, `yizhi server`, is `yizhi_server::server::run`.

pub mod bench;
pub mod coord;
pub mod up;
