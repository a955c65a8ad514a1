//! The wire contract: generated gRPC/protobuf code and its descriptor set.
//! Domain rejections become gRPC statuses and HTTP codes in one place, the
//! gateway's `error.rs`.

#![allow(clippy::all, clippy::pedantic)]

pub mod v1 {
    tonic::include_proto!("usher.v1");
}

pub mod events {
    tonic::include_proto!("usher.events.v1");
}

/// Node to node, inside one cluster (never for clients).
pub mod cluster {
    tonic::include_proto!("usher.cluster.v1");
}

/// Encoded `FileDescriptorSet` of every Usher proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("usher_descriptor");
