//! Code generated from `proto/` by `build.rs`.

#[allow(clippy::all, clippy::pedantic)]
pub mod raft {
    tonic::include_proto!("raft.v1");
}

#[allow(clippy::all, clippy::pedantic)]
pub mod linkreg {
    tonic::include_proto!("linkreg.v1");
}
