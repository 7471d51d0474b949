//! Compiles every `.proto` under `proto/` with the vendored `protoc`, so building needs no
//! system protobuf compiler.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let mut protos = Vec::new();
    collect(Path::new("proto"), &mut protos)?;
    if protos.is_empty() {
        return Ok(());
    }
    protos.sort();
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts run single-threaded; nothing else reads the environment meanwhile.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let includes = [PathBuf::from("proto")];
    let (public, internal): (Vec<PathBuf>, Vec<PathBuf>) = protos
        .into_iter()
        .partition(|p| p.starts_with("proto/linkreg"));
    // The public API's descriptor set serves gRPC reflection on the client listener, so generic
    // tools can call it; the internal peer API stays out of it.
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("linkreg_descriptor.bin"))
        .compile_protos(&public, &includes)?;
    if !internal.is_empty() {
        tonic_prost_build::configure().compile_protos(&internal, &includes)?;
    }
    Ok(())
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
