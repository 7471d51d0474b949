//! One member: its store, log store, state machine, network, and the openraft instance over them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use openraft::{Config, Raft, SnapshotPolicy};

use super::network::{Faults, MAX_MESSAGE, Network, PeerTransport};
use super::peer::{PeerService, ReadIndexResult};
use super::rounds::Rounds;
use super::{LogStore, NodeId, NodeInfo, StateMachine, StateMachineError, TypeConfig};
use crate::proto::raft::raft_peer_server::RaftPeerServer;
use crate::store::{Store, StoreError, StoreTuning, cf};

/// Timing and compaction knobs. Defaults suit a LAN or containers on a busy two-core machine;
/// tests shrink the snapshot threshold to exercise snapshots.
#[derive(Debug, Clone)]
pub struct Tuning {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Build a snapshot after at least this many entries since the last one, once the log
    /// since then is also large next to the register (see `snapshot_when_due`).
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
    /// Leadership confirmations for linearizable reads, one round for every reader waiting
    /// (this node's own and followers' `ReadIndex` calls); `None` when a round timed out.
    pub read_index: Rounds<Option<ReadIndexResult>>,
}

/// How long the leader may take to confirm its leadership for a read: many heartbeat round
/// trips even under load, and about when the other members have elected a new leader in place
/// of one that stopped answering. A reader may wait for the round under way and then its own,
/// so for up to twice this at each level (a follower's round, the leader's) before it asks
/// again.
pub const READ_INDEX_ROUND: std::time::Duration = std::time::Duration::from_secs(2);

/// Below this the register is cheap to snapshot, and the entry count alone decides.
const SMALL_STATE_BYTES: u64 = 64 * 1024 * 1024;

/// Whether a snapshot is due: `every` entries since the last one at least, and, once the
/// register is large, a log since then at least half its size. openraft's own policy counts
/// entries only, but a snapshot costs in proportion to the register (4 GB written, about 30 s
/// of a core per node at 10M links) while an entry may hold a single creation: with 20,000
/// entries, creates at 10M links set off a snapshot on every node every 20 s or so, which cut
/// them from 5,194/s to about 1,700/s (measured).
fn snapshot_due(since: u64, every: u64, log_bytes: u64, state_bytes: u64) -> bool {
    since >= every
        && (state_bytes < SMALL_STATE_BYTES || log_bytes.saturating_mul(2) >= state_bytes)
}

/// Asks openraft for a snapshot whenever [`snapshot_due`] says so; ends with the node. Holds
/// the store weakly, so that it does not keep a stopped node's RocksDB open.
async fn snapshot_when_due(raft: Raft<TypeConfig>, store: Weak<Store>, every: u64) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
    loop {
        tick.tick().await;
        // Gone once the node has stopped.
        let Some(store) = store.upgrade() else {
            return;
        };
        let (applied, snapshot) = {
            let m = raft.metrics();
            let m = m.borrow();
            (m.last_applied.map(|l| l.index), m.snapshot.map(|l| l.index))
        };
        let since = applied.unwrap_or(0).saturating_sub(snapshot.unwrap_or(0));
        if since < every {
            continue;
        }
        let stats = match store.column_family_stats() {
            Ok(stats) => stats,
            Err(e) => {
                tracing::warn!("snapshot policy: no store sizes: {e}");
                continue;
            }
        };
        drop(store);
        let bytes = |families: &[&str]| -> u64 {
            stats
                .iter()
                .filter(|s| families.contains(&s.name))
                .map(|s| s.sst_bytes.unwrap_or(0) + s.memtable_bytes.unwrap_or(0))
                .sum()
        };
        let (log_bytes, state_bytes) = (bytes(&[cf::RAFT_LOG]), bytes(&cf::STATE_MACHINE));
        if snapshot_due(since, every, log_bytes, state_bytes)
            && raft.trigger().snapshot().await.is_err()
        {
            // Raft has stopped.
            return;
        }
    }
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
            // Triggered by `snapshot_when_due` instead.
            snapshot_policy: SnapshotPolicy::Never,
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
        tokio::spawn(snapshot_when_due(
            raft.clone(),
            Arc::downgrade(&store),
            tuning.snapshot_every,
        ));
        let read_index = {
            let raft = raft.clone();
            Rounds::new(move || {
                let raft = raft.clone();
                async move {
                    match tokio::time::timeout(READ_INDEX_ROUND, raft.get_read_log_id()).await {
                        Ok(Ok((read, _applied))) => Some(Ok(read)),
                        Ok(Err(e)) => Some(Err(e)),
                        Err(_elapsed) => None,
                    }
                }
            })
        };
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
            read_index,
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
            self.read_index.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn a_snapshot_is_due_by_entries_and_for_a_large_register_by_log_size() {
        // Too few entries: never, whatever the sizes.
        assert!(!snapshot_due(19_999, 20_000, 10_000 * MIB, MIB));
        // A small register: the entry count decides.
        assert!(snapshot_due(20_000, 20_000, MIB, 60 * MIB));
        // A large register (10M links: about 2 GB of state): not before the log is half of it.
        assert!(!snapshot_due(200_000, 20_000, 900 * MIB, 2_000 * MIB));
        assert!(snapshot_due(200_000, 20_000, 1_000 * MIB, 2_000 * MIB));
    }
}
