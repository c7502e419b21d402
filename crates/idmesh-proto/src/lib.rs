//! The protobuf and gRPC code of idmesh, generated at build time from `proto/` (with protox, no
//! protoc), and the conversions between wire messages and domain types.
//!
//! Architecture invariant: no other crate depends on prost; domain types are never prost types.

#[allow(missing_docs, missing_debug_implementations, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("idmesh.v1");
}

#[allow(missing_docs, missing_debug_implementations, clippy::all, clippy::pedantic)]
pub mod peer {
    tonic::include_proto!("idmesh.peer.v1");
}

mod convert;

pub use convert::*;

/// The encoded `FileDescriptorSet` of every idmesh proto file, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/idmesh_descriptor.bin"));
