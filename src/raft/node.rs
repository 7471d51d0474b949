//! One member: its store, log store, state machine, network, and the openraft instance over them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::{Config, Raft, SnapshotPolicy};

use super::network::{Faults, MAX_MESSAGE, Network, PeerTransport};
use super::peer::PeerService;
use super::{LogStore, NodeId, NodeInfo, StateMachine, StateMachineError, TypeConfig};
use crate::proto::raft::raft_peer_server::RaftPeerServer;
use crate::store::{Store, StoreError, StoreTuning};

/// Timing and compaction knobs. Defaults suit a LAN or containers on a busy two-core machine;
/// tests shrink the snapshot threshold to exercise snapshots.
#[derive(Debug, Clone)]
pub struct Tuning {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Build a snapshot after this many entries since the last one.
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot, so slightly lagging followers need no snapshot.
    pub keep_behind_snapshot: u64,
    /// openraft purges only once this many entries can go at once.
    pub purge_batch: u64,
    /// Bytes an append request may carry before it is split into shorter runs of entries.
    pub append_budget: usize,
    /// How long one data chunk of a snapshot transfer may take. The last chunk, answered once
    /// the receiver has installed the snapshot, is not bound by it (`network::INSTALL_TIMEOUT`).
    pub snapshot_chunk_ms: u64,
    /// The store's memory budget.
    pub store: StoreTuning,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            heartbeat_ms: 100,
            election_min_ms: 500,
            election_max_ms: 1000,
            snapshot_every: 20_000,
            keep_behind_snapshot: 5_000,
            append_budget: 4 * 1024 * 1024,
            // A chunk may queue behind appends on a loaded machine; 200 ms (openraft's default)
            // makes large snapshot transfers restart forever.
            snapshot_chunk_ms: 10_000,
            purge_batch: 256,
            store: StoreTuning::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    StateMachine(#[from] StateMachineError),
    #[error("raft configuration: {0}")]
    Config(String),
    #[error("raft stopped: {0}")]
    Fatal(String),
}

/// Held while a membership change runs through this node, so that it runs one at a time.
///
/// openraft refuses a change only while the previous membership entry is uncommitted. But
/// `change_membership` commits a joint configuration and then the final one in two steps, and
/// `add_learner` waits for the learner to catch up after its entry committed: a second change
/// slipping into either gap would be applied on top of a half-finished one. So a node runs one
/// change at a time (administration and joins alike) and refuses another at once.
#[derive(Debug, Clone, Default)]
pub struct ChangeLock(Arc<std::sync::atomic::AtomicBool>);

/// Dropping it (also when the caller gives up and drops the future) lets the next change in.
pub struct ChangeGuard(Arc<std::sync::atomic::AtomicBool>);

impl ChangeLock {
    pub fn try_begin(&self) -> Option<ChangeGuard> {
        use std::sync::atomic::Ordering;
        self.0
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| ChangeGuard(self.0.clone()))
    }
}

impl Drop for ChangeGuard {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }
}

pub struct RaftNode {
    pub id: NodeId,
    pub info: NodeInfo,
    pub raft: Raft<TypeConfig>,
    pub store: Arc<Store>,
    pub faults: Arc<Faults>,
    /// The highest index this node knows to be committed.
    pub committed: tokio::sync::watch::Receiver<Option<u64>>,
    /// How this node dials the other members.
    pub transport: PeerTransport,
    pub membership_change: ChangeLock,
    /// Where snapshot (and backup) files live.
    pub snapshot_dir: PathBuf,
}

/// The node's RocksDB instance inside its data directory.
pub fn db_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("db")
}

/// Snapshot files inside the data directory.
pub fn snapshot_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("snapshots")
}

impl RaftNode {
    /// Opens (or creates) the node's state in `data_dir` and starts raft. A restarted node
    /// recovers from its own data: the log, its vote and its state machine.
    pub async fn start(
        id: NodeId,
        info: NodeInfo,
        data_dir: &Path,
        tuning: &Tuning,
        faults: Arc<Faults>,
        transport: PeerTransport,
    ) -> Result<RaftNode, NodeError> {
        let config = Config {
            cluster_name: "linkreg".into(),
            heartbeat_interval: tuning.heartbeat_ms,
            election_timeout_min: tuning.election_min_ms,
            election_timeout_max: tuning.election_max_ms,
            install_snapshot_timeout: tuning.snapshot_chunk_ms,
            snapshot_max_chunk_size: 4 * 1024 * 1024,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(tuning.snapshot_every),
            max_in_snapshot_log_to_keep: tuning.keep_behind_snapshot,
            purge_batch_size: tuning.purge_batch,
            max_payload_entries: 1000,
            ..Default::default()
        }
        .validate()
        .map_err(|e| NodeError::Config(e.to_string()))?;
        debug_assert!(config.snapshot_max_chunk_size as usize <= MAX_MESSAGE);
        let dir = db_dir(data_dir);
        let store_tuning = tuning.store;
        let store = tokio::task::spawn_blocking(move || Store::open_tuned(&dir, &store_tuning))
            .await
            .map_err(|e| NodeError::Fatal(e.to_string()))??;
        let store = Arc::new(store);
        let sm = StateMachine::open(store.clone(), &snapshot_dir(data_dir))?;
        let network = Network {
            append_budget: tuning.append_budget,
            from: id,
            faults: faults.clone(),
            transport: transport.clone(),
        };
        let log_store = LogStore::new(store.clone());
        let committed = log_store.committed();
        let raft = Raft::new(id, Arc::new(config), network, log_store, sm)
            .await
            .map_err(|e| NodeError::Fatal(e.to_string()))?;
        Ok(RaftNode {
            id,
            info,
            raft,
            store,
            faults,
            committed,
            transport,
            membership_change: ChangeLock::default(),
            snapshot_dir: snapshot_dir(data_dir),
        })
    }

    /// Makes this node a one-voter cluster if it has never been part of one. Returns whether it
    /// did; safe to call on every start.
    pub async fn initialize_if_new(&self) -> Result<bool, NodeError> {
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|e| NodeError::Fatal(e.to_string()))?;
        if initialized {
            return Ok(false);
        }
        let members = BTreeMap::from([(self.id, self.info.clone())]);
        self.raft
            .initialize(members)
            .await
            .map_err(|e| NodeError::Fatal(e.to_string()))?;
        Ok(true)
    }

    pub fn peer_service(&self) -> RaftPeerServer<PeerService> {
        RaftPeerServer::new(PeerService::new(
            self.raft.clone(),
            self.membership_change.clone(),
        ))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
    }

    /// Whether fault injection lets this node talk to `peer` (always, outside tests).
    pub fn faults_allow(&self, peer: &NodeInfo) -> Result<(), String> {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let target = membership
            .nodes()
            .find(|(_, n)| n.peer_addr == peer.peer_addr)
            .map(|(id, _)| *id);
        match target {
            Some(to) => self.faults.allows(self.id, to),
            None => Ok(()),
        }
    }

    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(node = self.id, "raft shutdown: {e}");
        }
    }
}
