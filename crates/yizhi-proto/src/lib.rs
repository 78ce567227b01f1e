//! etcd v3.5's gRPC wire protocol: protobuf messages and tonic clients/servers for the core API
//! (`etcdserverpb`), its record types (`mvccpb`, `authpb`), the lock and election services, and the
//! standard gRPC health service.
//!
//! The `.proto` sources live in `proto/` and are compiled at build time by protox, so no `protoc`
//! is needed. Names and field numbers are etcd's, so stock etcd clients can talk to a server built
//! on these types. The generated module tree mirrors the protobuf packages because generated code
//! refers to other packages through `super::`.

// Lints are relaxed only for generated code, which we do not write by hand.
macro_rules! generated_module {
    ($(#[$meta:meta])* $name:ident, $file:literal) => {
        $(#[$meta])*
        #[allow(
            clippy::all,
            clippy::pedantic,
            missing_docs,
            missing_debug_implementations,
            rustdoc::all
        )]
        pub mod $name {
            include!(concat!(env!("OUT_DIR"), "/", $file));
        }
    };
}

generated_module!(
    /// MVCC records: `KeyValue` and watch `Event`s.
    mvccpb,
    "mvccpb.rs"
);
generated_module!(
    /// Auth store records: users, roles, permissions.
    authpb,
    "authpb.rs"
);
generated_module!(
    /// The core etcd API: KV, Watch, Lease, Cluster, Maintenance and Auth services.
    etcdserverpb,
    "etcdserverpb.rs"
);
generated_module!(
    /// The Lock service (`etcdctl lock`).
    v3lockpb,
    "v3lockpb.rs"
);
generated_module!(
    /// The Election service (`etcdctl elect`).
    v3electionpb,
    "v3electionpb.rs"
);

generated_module!(
    /// The standard gRPC health service (`grpc.health.v1.Health`); it refers to no other package,
    /// so a flat module name works.
    grpc_health_v1,
    "grpc.health.v1.rs"
);

/// Encoded `google.protobuf.FileDescriptorSet` of every file in `proto/` (without source info),
/// for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/yizhi_descriptor_set.bin"));
