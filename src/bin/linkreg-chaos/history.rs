//! The history file: one JSON document per line, written as the run goes, so a run that dies
//! half-way still leaves its evidence. The checker reads the same records back (`--recheck`).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Validity period as the API carries it: both ends optional, "YYYY-MM-DD".
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Validity {
    pub from: Option<String>,
    pub to: Option<String>,
}

impl std::fmt::Display for Validity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let end = |e: &Option<String>| e.clone().unwrap_or_else(|| "open".into());
        write!(f, "{}..{}", end(&self.from), end(&self.to))
    }
}

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    Create {
        ssin: String,
        value: String,
        validity: Validity,
    },
    Update {
        link_id: u64,
        validity: Validity,
    },
    Delete {
        link_id: u64,
    },
}

/// How an operation ended, after all its attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A server answered OK.
    Acknowledged,
    /// A server gave a definite business answer (NOT_FOUND, ...): not applied.
    Refused,
    /// Every attempt failed and at least one may have been applied (timeout, broken
    /// connection, OUTCOME_UNKNOWN): applied at most once, or not at all.
    Unknown,
    /// Every attempt was answered "nothing applied" (the server's own UNAVAILABLE) or could not
    /// be sent (no connection): by the API's contract, not applied.
    Failed,
}

/// One operation with its final outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpRecord {
    pub op: u64,
    pub client: String,
    pub client_id: String,
    pub request_id: u64,
    pub action: Action,
    /// Milliseconds since the start of the run.
    pub invoked_ms: u64,
    pub completed_ms: u64,
    pub outcome: Outcome,
    /// The stable code of a refusal, or the last error of an unknown or failed operation.
    #[serde(default)]
    pub code: Option<String>,
    /// The link the server answered with (creates and updates), or deleted.
    #[serde(default)]
    pub link_id: Option<u64>,
    #[serde(default)]
    pub log_index: Option<u64>,
    pub attempts: u32,
    /// When the attempt that was acknowledged started.
    #[serde(default)]
    pub acked_attempt_ms: Option<u64>,
}

/// How one attempt of an operation went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptResult {
    Ok,
    /// A definite business answer.
    Refused,
    /// Could not connect: nothing was sent.
    NotSent,
    /// The server said nothing was applied (its own UNAVAILABLE).
    NotApplied,
    /// Sent, fate unknown.
    Maybe,
    /// The server refused the session itself (STALE_REQUEST, request id reused): the test's
    /// session discipline or the server's session table is wrong.
    SessionAnomaly,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub op: u64,
    pub client_id: String,
    pub request_id: u64,
    pub attempt: u32,
    pub server: String,
    pub started_ms: u64,
    pub elapsed_ms: u64,
    pub result: AttemptResult,
    #[serde(default)]
    pub grpc: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// A link as one node reported it at the end of the run.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObservedLink {
    pub id: u64,
    pub ssin: String,
    pub value: String,
    pub validity: Validity,
    pub version: u64,
}

/// Everything one node reported after the final heal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    pub node_id: u64,
    pub applied_index: Option<u64>,
    pub sha256: String,
    pub rows: u64,
    pub links: Vec<ObservedLink>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultRecord {
    pub cycle: u32,
    pub fault: String,
    /// Node ids the fault was applied to.
    pub nodes: Vec<u64>,
    pub injected_ms: u64,
    pub held_ms: u64,
    pub healed_ms: u64,
    /// When the cluster was healthy again (leader, every voter reachable and caught up).
    #[serde(default)]
    pub healthy_ms: Option<u64>,
    /// Whether the fault took the leader away (`Fault::loses_leader`).
    #[serde(default)]
    pub loses_leader: bool,
    /// For faults that lose the leader: injection to the next acknowledged write.
    #[serde(default)]
    pub unavailable_ms: Option<u64>,
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    Start {
        seed: u64,
        run: String,
        servers: Vec<String>,
        containers: Vec<String>,
        clients: usize,
        unix_ms: u64,
    },
    Attempt(AttemptRecord),
    Op(OpRecord),
    Fault(FaultRecord),
    Event {
        t_ms: u64,
        message: String,
    },
    NodeState(NodeState),
    Verdict {
        summary: String,
        problems: Vec<String>,
    },
}

/// Appends records to the history file; safe to share between tasks.
pub struct History {
    out: Mutex<Option<BufWriter<File>>>,
}

impl History {
    pub fn create(path: Option<&Path>) -> anyhow::Result<History> {
        let out = match path {
            Some(p) => {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
                Some(BufWriter::new(
                    File::create(p).with_context(|| format!("creating {}", p.display()))?,
                ))
            }
            None => None,
        };
        Ok(History {
            out: Mutex::new(out),
        })
    }

    pub fn write(&self, record: &Record) {
        let mut guard = self.out.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(out) = guard.as_mut() {
            // A history that cannot be written is reported once per line but does not stop the
            // run: the verdict is computed from memory.
            let line = serde_json::to_string(record).unwrap_or_else(|e| {
                format!("{{\"type\":\"event\",\"t_ms\":0,\"message\":\"unserializable: {e}\"}}")
            });
            if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
                eprintln!("chaos: writing the history: {e}");
            }
        }
    }
}

/// The operations and final node states of a history file, for `--recheck`.
pub fn read(path: &Path) -> anyhow::Result<(Vec<OpRecord>, Vec<NodeState>)> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let (mut ops, mut nodes) = (Vec::new(), Vec::new());
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let record: Record = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not a history record", path.display(), n + 1))?;
        match record {
            Record::Op(op) => ops.push(op),
            Record::NodeState(state) => nodes.push(state),
            _ => {}
        }
    }
    Ok((ops, nodes))
}
