//! Compiles `proto/` with protox (pure Rust, so no `protoc` binary is needed) and generates prost
//! messages plus tonic clients and servers from the resulting descriptor set.

use std::path::PathBuf;

use protox::prost::Message as _;

/// Every file compiled; imports between them resolve against `proto/`.
const PROTO_FILES: &[&str] = &[
    "mvccpb/kv.proto",
    "authpb/auth.proto",
    "etcdserverpb/rpc.proto",
    "v3lockpb/v3lock.proto",
    "v3electionpb/v3election.proto",
    "grpc/health/v1/health.proto",
];

/// Name of the encoded descriptor set in `OUT_DIR`, included by `lib.rs`.
const DESCRIPTOR_SET_FILE: &str = "yizhi_descriptor_set.bin";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_dir = manifest_dir.join("proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    // Cargo scans a directory recursively, so editing or adding any proto file reruns this script.
    println!("cargo:rerun-if-changed={}", proto_dir.display());
    println!("cargo:rerun-if-changed=build.rs");

    // protox reports errors with miette; its Display alone is enough for a build failure.
    let descriptor_set = protox::compile(PROTO_FILES, [&proto_dir]).map_err(|e| format!("{e:?}"))?;

    // Reflection only needs the definitions; source info (comments, spans) would just bloat the
    // binary, so it is stripped from the exported copy but kept for codegen (doc comments).
    let mut exported = descriptor_set.clone();
    for file in &mut exported.file {
        file.source_code_info = None;
    }
    std::fs::write(out_dir.join(DESCRIPTOR_SET_FILE), exported.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptor_set)?;
    Ok(())
}
