//! linkreg: a replicated register of links between Belgian SSINs and foreign identification keys.
//!
//! Layers, with dependencies pointing one way only:
//!
//! ```text
//!   api (gRPC, SOAP) ──► service ──► raft ──► store ──► domain
//! ```
//!
//! So far: [`domain`], the pure rules every other layer builds on, and [`store`], the RocksDB
//! column families they are kept in.

pub mod api;
pub mod cluster;
pub mod domain;
pub mod proto;
pub mod raft;
pub mod server;
pub mod service;
pub mod store;

#[cfg(test)]
mod layering {
    use std::fs;
    use std::path::Path;

    /// The domain must stay plain Rust: testable in microseconds, deterministic when replayed.
    #[test]
    fn domain_imports_no_io_clock_storage_or_network() {
        let forbidden = [
            "tokio",
            "rocksdb",
            "openraft",
            "tonic",
            "prost",
            "std::fs",
            "std::net",
            "std::io",
            "std::time",
            "std::env",
            "std::process",
            "std::thread",
            "now_utc",
            "now_local",
            "SystemTime",
            "Instant",
            "rand",
        ];
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/domain");
        let mut checked = 0;
        for entry in fs::read_dir(&dir).expect("src/domain is readable") {
            let path = entry.expect("directory entry").path();
            if path.extension().is_some_and(|e| e == "rs") {
                let text = fs::read_to_string(&path).expect("source is UTF-8");
                for word in forbidden {
                    let hit = text.lines().find(|line| {
                        line.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                            .any(|token| token == word || token.starts_with(&format!("{word}::")))
                    });
                    assert!(hit.is_none(), "{} uses {word}: {hit:?}", path.display());
                }
                checked += 1;
            }
        }
        assert!(
            checked >= 10,
            "only {checked} files found in {}",
            dir.display()
        );
    }
}
