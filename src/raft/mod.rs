//! Replication: openraft's type configuration, the RocksDB-backed log store and state machine.
//!
//! ```text
//!   client_write(Payload) ─► leader log ─► followers' logs (LogStore: append synced, then ack)
//!                                   │ committed
//!                                   ▼
//!        StateMachine::apply ─► domain::decide ─► Change + audit + session + last_applied
//!                                                  in ONE WriteBatch (store)
//! ```
//!
//! Business rules live in `domain`; this layer only orders, persists and replays commands.

pub mod backup;
pub mod log_store;
pub mod network;
pub mod node;
pub mod peer;
pub mod rounds;
pub mod snapshot;
pub mod state_machine;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::domain::{Command, Verdict};

pub use log_store::LogStore;
pub use state_machine::{StateMachine, StateMachineError};

openraft::declare_raft_types!(
    /// linkreg's openraft type configuration.
    pub TypeConfig:
        D = Payload,
        R = Response,
        NodeId = NodeId,
        Node = NodeInfo,
        SnapshotData = tokio::fs::File,
);

pub type NodeId = u64;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeInfo>;

/// Where a member can be reached. Kept in the membership, so every node knows every address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Raft RPCs between members.
    pub peer_addr: String,
    /// Client gRPC API.
    pub client_addr: String,
    /// SOAP and HTTP.
    pub http_addr: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer {}, client {}", self.peer_addr, self.client_addr)
    }
}

/// What one log entry carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// One client write (boxed: a group is a vector, three words).
    One(Box<Request>),
    /// Link creations of any number of clients in one entry (group commit): one append, one
    /// fsync per replica and one replication round for all of them. Applied in order, each
    /// seeing the links the earlier ones created, as if each had its entry; answered with
    /// [`Response::Creates`], one answer per request in the same order. Only creations are
    /// grouped: each makes a new link, so no two write the same audit key.
    Creates(Vec<Request>),
}

/// One client write: a register command, optionally tagged for exactly-once retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub command: Command,
    pub session: Option<ClientRequest>,
}

/// Identifies a client's request across retries (Raft dissertation §6.3): a retried request
/// carries the same pair and gets the recorded answer instead of being applied again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRequest {
    pub client_id: String,
    pub request_id: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Entries that carry no command (blank, membership).
    None,
    /// The verdict, freshly decided or recorded for a retried request, with the index of the
    /// entry that decided it.
    Verdict {
        verdict: Box<Verdict>,
        log_index: u64,
        /// Answered from the client's session: the verdict of this request's first attempt.
        replayed: bool,
    },
    /// The client has since sent a newer request; this one's answer is no longer kept.
    Stale { last_request_id: u64 },
    /// The client already used this request id for a different request.
    SessionReused { request_id: u64 },
    /// The answers to a [`Payload::Creates`] entry, in its order. A request in it that is not a
    /// creation (never sent by this code) is answered `None` and changes nothing.
    Creates(Vec<Response>),
}

/// What the audit column family records for each applied change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub log_index: u64,
    pub command: Command,
    pub change: crate::domain::Change,
}

#[cfg(test)]
mod suite_tests;
