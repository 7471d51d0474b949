//! Every column family of a node's RocksDB instance, declared once.

/// Raft log entries, keyed by big-endian log index.
pub const RAFT_LOG: &str = "raft_log";
/// Raft's own persistent state: vote, committed log id, last purged log id.
pub const RAFT_META: &str = "raft_meta";
/// State-machine bookkeeping: last applied log id, membership, next link id.
pub const SM_META: &str = "sm_meta";
/// Link id → link.
pub const LINKS: &str = "links";
/// SSIN ‖ link id → (empty).
pub const LINKS_BY_SSIN: &str = "links_by_ssin";
/// Country ‖ key type ‖ normalized value ‖ link id → (empty).
pub const LINKS_BY_FOREIGN_KEY: &str = "links_by_foreign_key";
/// Key-type catalogue (`T` ‖ code) and format rules (`R` ‖ country ‖ code).
pub const KEY_TYPES: &str = "key_types";
/// One event per applied change, keyed by log index.
pub const AUDIT: &str = "audit";
/// Per-client last request and its response, for exactly-once retries.
pub const CLIENT_SESSIONS: &str = "client_sessions";

pub const ALL: [&str; 9] = [
    RAFT_LOG,
    RAFT_META,
    SM_META,
    LINKS,
    LINKS_BY_SSIN,
    LINKS_BY_FOREIGN_KEY,
    KEY_TYPES,
    AUDIT,
    CLIENT_SESSIONS,
];

/// The column families that make up the replicated state machine: what a snapshot carries and
/// what a digest hashes. The raft log and raft meta are each node's own.
pub const STATE_MACHINE: [&str; 7] = [
    SM_META,
    LINKS,
    LINKS_BY_SSIN,
    LINKS_BY_FOREIGN_KEY,
    KEY_TYPES,
    AUDIT,
    CLIENT_SESSIONS,
];
