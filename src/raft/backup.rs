//! Backups: a point-in-time copy of a node's state machine, and seeding a new cluster from one.
//!
//! A backup is a snapshot file (`snapshot.rs` format: framed rows, metadata trailer, CRC-32)
//! written from one RocksDB point-in-time view, with the digest of the same rows. It holds the
//! register, its audit trail and the client sessions at one applied log index; the raft log is
//! not in it (every entry up to that index is already applied in the rows).
//!
//! Restoring seeds an empty data directory as a *new single-voter cluster* at that index: the
//! rows are loaded as they were, except the membership, which becomes just the restored node;
//! raft's own state says the log starts after the backup's index. The node then elects itself
//! in a newer term and other nodes join it as they would any cluster (through the snapshot
//! written here, since the new cluster has no log before that index to send them).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use openraft::Membership;

use super::log_store;
use super::node::{db_dir, snapshot_dir};
use super::snapshot::{self as file, SnapshotFileError, SnapshotWriter};
use super::state_machine::{
    self, BACKUP_FILE_PREFIX, CURRENT, Digest, StateMachineError, StateReader, is_membership_row,
    sync_dir, unique_suffix,
};
use super::{LogId, NodeId, NodeInfo, SnapshotMeta, StoredMembership};
use crate::store::{Store, StoreError, codec};

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    StateMachine(#[from] StateMachineError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("backup file")]
    File(#[from] SnapshotFileError),
    #[error("backup I/O")]
    Io(#[from] std::io::Error),
    #[error("the backup holds no applied entry: there is nothing to restore")]
    Empty,
    #[error("{} already holds a node's state: restore only seeds an empty data directory", .0.display())]
    NotEmpty(PathBuf),
    #[error("digest {found} differs from the expected {expected}; nothing was restored")]
    Mismatch { expected: String, found: String },
}

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    /// The last entry applied in it.
    pub last_log_id: LogId,
    /// The source cluster's membership at that entry.
    pub membership: StoredMembership,
    /// Digest of its rows, equal to `cluster digest` of the source at that index.
    pub digest: Digest,
    pub bytes: u64,
}

/// A backup file on the node's disk, removed when dropped (after it has been streamed).
#[derive(Debug)]
pub struct BackupFile {
    pub path: PathBuf,
    pub info: BackupInfo,
}

impl Drop for BackupFile {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("removing backup file {}: {e}", self.path.display());
        }
    }
}

fn info(meta: SnapshotMeta, digest: Digest, path: &Path) -> Result<BackupInfo, BackupError> {
    Ok(BackupInfo {
        last_log_id: meta.last_log_id.ok_or(BackupError::Empty)?,
        membership: meta.last_membership,
        digest,
        bytes: fs::metadata(path)?.len(),
    })
}

/// Writes a backup of `store`'s state as of now into `snapshots` (the node's snapshot directory;
/// leftovers of a crash there are removed at the next start).
pub fn create(store: &Store, snapshots: &Path) -> Result<BackupFile, BackupError> {
    let path = snapshots.join(format!("{BACKUP_FILE_PREFIX}{}.tmp", unique_suffix()));
    let steady = store.steady()?;
    let written = state_machine::write_state_file(store, &steady, &path, "backup-")
        .map_err(BackupError::from)
        .and_then(|(meta, digest)| info(meta, digest, &path));
    match written {
        Ok(info) => Ok(BackupFile { path, info }),
        Err(e) => {
            let _ = fs::remove_file(&path);
            Err(e)
        }
    }
}

/// Reads a backup file whole: checks its framing and checksum and recomputes its digest.
pub fn verify(path: &Path) -> Result<BackupInfo, BackupError> {
    let mut reader = StateReader::default();
    let meta = file::read_rows(path, |cf, key, value| reader.row(cf, &key, &value))?;
    let (digest, _) = reader.finish();
    if digest.applied != meta.last_log_id {
        return Err(SnapshotFileError::Malformed(format!(
            "rows are at {:?}, metadata says {:?}",
            digest.applied, meta.last_log_id
        ))
        .into());
    }
    info(meta, digest, path)
}

/// Seeds the empty `data_dir` from the backup file `backup` as a one-voter cluster of node `id`
/// reachable at `node`. The backup is verified whole (and its digest checked against `expected`,
/// when given) before anything is written; on failure whatever this created is removed again.
/// Returns the backup's description; the restored state's digest has been checked equal to it.
pub fn restore(
    backup: &Path,
    data_dir: &Path,
    id: NodeId,
    node: NodeInfo,
    expected: Option<&str>,
) -> Result<BackupInfo, BackupError> {
    let db = db_dir(data_dir);
    let snapshots = snapshot_dir(data_dir);
    for existing in [&db, &snapshots] {
        if existing.exists() {
            return Err(BackupError::NotEmpty(data_dir.to_path_buf()));
        }
    }
    let source = verify(backup)?;
    if let Some(expected) = expected
        && expected != source.digest.sha256
    {
        return Err(BackupError::Mismatch {
            expected: expected.to_string(),
            found: source.digest.sha256,
        });
    }
    let result = seed(backup, &source, &db, &snapshots, id, node);
    if result.is_err() {
        let _ = fs::remove_dir_all(&db);
        let _ = fs::remove_dir_all(&snapshots);
    }
    result.map(|()| source)
}

fn seed(
    backup: &Path,
    source: &BackupInfo,
    db: &Path,
    snapshots: &Path,
    id: NodeId,
    node: NodeInfo,
) -> Result<(), BackupError> {
    let last = source.last_log_id;
    let membership = StoredMembership::new(
        Some(last),
        Membership::new(vec![BTreeSet::from([id])], BTreeMap::from([(id, node)])),
    );
    let membership_row =
        codec::encode(&membership).map_err(|e| SnapshotFileError::Malformed(e.to_string()))?;
    fs::create_dir_all(snapshots)?;
    let store = Store::open(db)?;
    // A new store is seeded with the default catalogue; the backup's rows replace it.
    store.clear_state()?;
    let tmp = snapshots.join(format!("restore-{}.tmp", unique_suffix()));
    let mut writer = SnapshotWriter::new(File::create(&tmp)?)?;
    state_machine::load_file(&store, backup, |cf, key, value| {
        let value = if is_membership_row(cf, key) {
            membership_row.clone()
        } else {
            value
        };
        writer.row(cf, key, &value)?;
        Ok(value)
    })?;
    writer.finish(&SnapshotMeta {
        last_log_id: Some(last),
        last_membership: membership,
        snapshot_id: format!(
            "restored-{}-{}-{}",
            last.leader_id.term,
            last.index,
            unique_suffix()
        ),
    })?;
    store.sync()?;
    fs::rename(&tmp, snapshots.join(CURRENT))?;
    sync_dir(snapshots)?;
    log_store::seed_restored(&store, id, last)?;
    let restored = state_machine::digest(&store)?;
    if restored.sha256 != source.digest.sha256 || restored.applied != Some(last) {
        return Err(BackupError::Mismatch {
            expected: source.digest.sha256.clone(),
            found: restored.sha256,
        });
    }
    Ok(())
}
