//! openraft's log storage on the `raft_log` and `raft_meta` column families.
//!
//! Durability points: `append` reports completion only after the batch is fsynced; `save_vote`
//! returns only after the vote is fsynced; `purge` records `last_purged` in the same synced batch
//! that deletes the entries, so a restarted node knows where its log begins.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader, StorageIOError, Vote};
use tokio::sync::watch;

use super::{Entry, LogId, NodeId, StorageError, TypeConfig};
use crate::store::{Store, StoreError};

const VOTE: &[u8] = b"vote";
const LAST_PURGED: &[u8] = b"last_purged";
const COMMITTED: &[u8] = b"committed";

#[derive(Clone)]
pub struct LogStore {
    store: Arc<Store>,
    /// The commit index openraft last told us about, for health reporting.
    committed: Arc<watch::Sender<Option<u64>>>,
}

impl LogStore {
    pub fn new(store: Arc<Store>) -> LogStore {
        LogStore {
            store,
            committed: Arc::new(watch::Sender::new(None)),
        }
    }

    /// Follows the highest log index this node knows to be committed.
    pub fn committed(&self) -> watch::Receiver<Option<u64>> {
        self.committed.subscribe()
    }
}

/// Raft's own state for a node seeded from a backup (`raft::backup::restore`): its log starts
/// after `last` (purged up to it, committed up to it), and it has voted for itself in `last`'s
/// term, so its first election opens a newer term than any entry it holds. Synced.
pub fn seed_restored(store: &Store, node: NodeId, last: LogId) -> Result<(), StoreError> {
    store.set_raft_meta(LAST_PURGED, &last)?;
    store.set_raft_meta(COMMITTED, &Some(last))?;
    store.set_raft_meta(VOTE, &Vote::new(last.leader_id.term, node))
}

/// Runs a blocking (fsyncing) store call off the async workers.
async fn blocking<T, F>(f: F) -> Result<T, StoreError>
where
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(join) => Err(StoreError::Task(join.to_string())),
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let from = match range.start_bound() {
            Bound::Included(n) => *n,
            Bound::Excluded(n) => n.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let to = match range.end_bound() {
            Bound::Included(n) => n.saturating_add(1),
            Bound::Excluded(n) => *n,
            Bound::Unbounded => u64::MAX,
        };
        self.store
            .read_log(from, to)
            .map_err(|e| StorageIOError::read_logs(&e).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let read = |e: StoreError| StorageError::from(StorageIOError::read_logs(&e));
        let last_purged: Option<LogId> = self.store.raft_meta(LAST_PURGED).map_err(read)?;
        let last: Option<Entry> = self.store.last_log().map_err(read)?;
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.map(|e| e.log_id).or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let store = self.store.clone();
        let vote = *vote;
        blocking(move || store.set_raft_meta(VOTE, &vote))
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.store
            .raft_meta(VOTE)
            .map_err(|e| StorageIOError::read_vote(&e).into())
    }

    /// Not synced: losing it only means a restarted node learns the commit index from the
    /// leader instead of re-applying up to it before the first election.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.committed.send_replace(committed.map(|l| l.index));
        self.store
            .set_raft_meta_unsynced(COMMITTED, &committed)
            .map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let stored: Option<Option<LogId>> = self
            .store
            .raft_meta(COMMITTED)
            .map_err(|e| StorageError::from(StorageIOError::read(&e)))?;
        Ok(stored.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let store = self.store.clone();
        let result =
            blocking(move || store.append_log(entries.iter().map(|e| (e.log_id.index, e)))).await;
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(&e).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let store = self.store.clone();
        blocking(move || store.truncate_log(log_id.index))
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let store = self.store.clone();
        blocking(move || store.purge_log(log_id.index, LAST_PURGED, &log_id))
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}
