//! Code generated from `proto/` by `build.rs`.

#[allow(clippy::all, clippy::pedantic)]
pub mod raft {
    tonic::include_proto!("raft.v1");
}

#[allow(clippy::all, clippy::pedantic)]
pub mod linkreg {
    tonic::include_proto!("linkreg.v1");
}

/// Every message and service of `proto/`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("linkreg_descriptor");
