//! Compiles `proto/` with protox (pure Rust: no protoc binary needed) and generates the
//! prost/tonic code, plus the encoded descriptor set served by gRPC reflection.

use prost::Message as _;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        root.join("idmesh/v1/registry.proto"),
        root.join("idmesh/v1/token.proto"),
        root.join("idmesh/v1/mesh.proto"),
        root.join("idmesh/v1/policy.proto"),
        root.join("idmesh/v1/delegation.proto"),
        root.join("idmesh/v1/audit.proto"),
        root.join("idmesh/peer/v1/sync.proto"),
        root.join("idmesh/peer/v1/raft.proto"),
        root.join("idmesh/peer/v1/audit.proto"),
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let fds = protox::compile(&files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("idmesh_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .bytes(".idmesh.peer.v1")
        .compile_fds(fds)?;
    Ok(())
}
