//! openraft's state machine: applies committed commands through the domain rules and keeps the
//! result in the store's state-machine column families.
//!
//! Each entry is one `WriteBatch`: the change, its indexes, the audit event, the client session
//! and `last_applied` land together or not at all. Batches are not fsynced one by one: the raft
//! log is, and a node that loses unsynced applies after a power cut replays them from the log
//! (`last_applied` rolled back with them). Before a snapshot is handed to openraft (which may then
//! purge the log it covers) the WAL is synced, so nothing purged is ever needed for replay.

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder, StorageIOError};
use rocksdb::WriteBatch;

use super::snapshot::{self as file, SnapshotFileError, SnapshotWriter};
use super::{
    AuditEvent, Entry, LogId, Payload, Request, Response, SnapshotMeta, StorageError,
    StoredMembership, TypeConfig,
};
use crate::domain::{
    Action, Change, Command, Creations, Decision, Outcome, RowOutcome, Timestamp, Verdict, decide,
};
use crate::store::{Steady, Store, StoreError, cf, codec, keys};

const LAST_APPLIED: &[u8] = b"last_applied";
const MEMBERSHIP: &[u8] = b"membership";
const LAST_SESSION_SWEEP: &[u8] = b"last_session_sweep";
/// Set (in raft meta, which snapshots do not touch) while a snapshot is being loaded; a node that
/// finds it on start-up finishes the load before doing anything else.
const INSTALLING: &[u8] = b"installing_snapshot";

pub(crate) const CURRENT: &str = "current.snap";
const INSTALLING_FILE: &str = "installing.snap";
/// Prefix of a snapshot file being received.
const RECEIVING: &str = "receiving-";
/// Backup files are written beside snapshots, streamed to the client, then removed.
pub(crate) const BACKUP_FILE_PREFIX: &str = "backup-";

/// A client silent for this long (in log time) loses its session: a retry after a day is a new
/// request. Bounded table, deterministic on every node.
const SESSION_TTL_MS: i64 = 24 * 3600 * 1000;
const SESSION_SWEEP_EVERY_MS: i64 = 3600 * 1000;
/// Rows per write batch while loading a snapshot: bounds memory, not correctness.
const LOAD_BATCH_ROWS: usize = 10_000;

/// Recorded per client: the last request and its answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionRecord {
    pub request_id: u64,
    /// What was asked under that id: the same id with another request is a client's bug, not a
    /// retry, and must not be answered with this verdict.
    pub action: Action,
    /// The entry that decided the request: what a retry is told.
    pub log_index: u64,
    pub verdict: Verdict,
    pub last_seen: Timestamp,
}

/// The answer a request gets from its client's session without being decided again: its own
/// recorded verdict when retried, a refusal when its id is old or was used for another request.
/// `None`: decide it.
fn recorded_answer(request: &Request, recorded: Option<&SessionRecord>) -> Option<Response> {
    let (session, record) = (request.session.as_ref()?, recorded?);
    if session.request_id == record.request_id && record.action != request.command.action {
        return Some(Response::SessionReused {
            request_id: session.request_id,
        });
    }
    if session.request_id == record.request_id {
        return Some(Response::Verdict {
            verdict: Box::new(record.verdict.clone()),
            log_index: record.log_index,
            replayed: true,
        });
    }
    if session.request_id < record.request_id {
        return Some(Response::Stale {
            last_request_id: record.request_id,
        });
    }
    None
}

/// Client ids are the organization's own: two organizations choosing the same id do not share a
/// session.
pub fn session_key(organization: &crate::domain::Organization, client_id: &str) -> String {
    format!("{}/{client_id}", organization.cbe.as_str())
}

pub struct StateMachine {
    store: Arc<Store>,
    snapshot_dir: PathBuf,
}

fn sm_read(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_state_machine(&e).into()
}

fn snapshot_error(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::new(ErrorSubject::Snapshot(None), ErrorVerb::Write, &e).into()
}

impl StateMachine {
    /// Opens the state machine over `store`, keeping snapshot files in `snapshot_dir`. Finishes a
    /// snapshot installation that a crash interrupted.
    pub fn open(store: Arc<Store>, snapshot_dir: &Path) -> Result<StateMachine, StateMachineError> {
        fs::create_dir_all(snapshot_dir)?;
        let sm = StateMachine {
            store,
            snapshot_dir: snapshot_dir.to_path_buf(),
        };
        // A backup being written when the process died will never be streamed.
        remove_tmp_files(snapshot_dir, BACKUP_FILE_PREFIX)?;
        sm.remove_leftovers()?;
        let interrupted: Option<bool> = sm.store.raft_meta(INSTALLING)?;
        if interrupted.is_some() {
            tracing::warn!("finishing a snapshot installation interrupted by a restart");
            sm.load_installing()?;
        }
        Ok(sm)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.snapshot_dir.join(name)
    }

    fn apply_entry(&self, entry: &Entry) -> Result<Response, StoreError> {
        let mut batch = WriteBatch::default();
        let response = match &entry.payload {
            EntryPayload::Blank => Response::None,
            EntryPayload::Membership(membership) => {
                let stored = StoredMembership::new(Some(entry.log_id), membership.clone());
                self.store.stage_sm_meta(&mut batch, MEMBERSHIP, &stored)?;
                Response::None
            }
            EntryPayload::Normal(Payload::One(request)) => {
                self.apply_request(&mut batch, entry.log_id, request)?
            }
            EntryPayload::Normal(Payload::Creates(requests)) => {
                self.apply_creates(&mut batch, entry.log_id, requests)?
            }
        };
        self.store
            .stage_sm_meta(&mut batch, LAST_APPLIED, &entry.log_id)?;
        self.store.write(batch)?;
        Ok(response)
    }

    fn apply_request(
        &self,
        batch: &mut WriteBatch,
        log_id: LogId,
        request: &Request,
    ) -> Result<Response, StoreError> {
        // Before anything of this entry is staged: a sweep must not remove the session record
        // the entry itself writes (the batch applies in order).
        self.sweep_sessions(batch, request.command.at)?;
        self.apply_one(
            batch,
            log_id,
            request,
            &mut HashMap::new(),
            |batch, command| {
                let verdict = decide(&*self.store, command)?;
                if let Ok(decision) = &verdict
                    && let Some(change) = &decision.change
                {
                    self.store.stage(batch, change)?;
                }
                Ok(Some(verdict))
            },
        )
    }

    /// The creations of a group-commit entry, decided in order against the store plus the links
    /// the earlier ones created, all staged in the entry's one batch.
    fn apply_creates(
        &self,
        batch: &mut WriteBatch,
        log_id: LogId,
        requests: &[Request],
    ) -> Result<Response, StoreError> {
        if let Some(latest) = requests.iter().map(|r| r.command.at).max() {
            self.sweep_sessions(batch, latest)?;
        }
        let mut creations = Creations::new(&*self.store);
        let mut sessions = HashMap::new();
        let mut answers = Vec::with_capacity(requests.len());
        for request in requests {
            let answer = self.apply_one(batch, log_id, request, &mut sessions, |_, command| {
                creations.decide(command).transpose()
            })?;
            answers.push(answer);
        }
        let links = creations.into_created();
        self.store.stage(batch, &Change::LinksImported { links })?;
        Ok(Response::Creates(answers))
    }

    /// One request of an entry: answered from its client's session when that has the answer
    /// (`staged` holds the records this entry wrote so far, which the store does not show yet),
    /// else decided by `decide`, which stages the change, and then audited and recorded.
    /// `decide` returning `None` (a request it does not take) changes nothing.
    fn apply_one(
        &self,
        batch: &mut WriteBatch,
        log_id: LogId,
        request: &Request,
        staged: &mut HashMap<String, SessionRecord>,
        decide: impl FnOnce(&mut WriteBatch, &Command) -> Result<Option<Verdict>, StoreError>,
    ) -> Result<Response, StoreError> {
        let key = request
            .session
            .as_ref()
            .map(|s| session_key(&request.command.caller.organization, &s.client_id));
        let recorded = match &key {
            Some(key) => match staged.get(key) {
                Some(record) => Some(record.clone()),
                None => self.store.session::<SessionRecord>(key)?,
            },
            None => None,
        };
        if let Some(answer) = recorded_answer(request, recorded.as_ref()) {
            return Ok(answer);
        }
        let Some(verdict) = decide(batch, &request.command)? else {
            return Ok(Response::None);
        };
        if let Ok(decision) = &verdict
            && let Some(change) = &decision.change
        {
            for (key, event) in audit_events(log_id.index, &request.command, change, decision) {
                self.store.stage_audit(batch, &key, &event)?;
            }
        }
        if let (Some(key), Some(session)) = (key, &request.session) {
            let record = SessionRecord {
                request_id: session.request_id,
                action: request.command.action.clone(),
                log_index: log_id.index,
                verdict: verdict.clone(),
                last_seen: request.command.at,
            };
            self.store.stage_session(batch, &key, &record)?;
            staged.insert(key, record);
        }
        Ok(Response::Verdict {
            verdict: Box::new(verdict),
            log_index: log_id.index,
            replayed: false,
        })
    }

    /// Drops sessions idle for longer than the TTL, at most once per sweep interval of log time.
    fn sweep_sessions(&self, batch: &mut WriteBatch, now: Timestamp) -> Result<(), StoreError> {
        let last: Option<Timestamp> = self.store.sm_meta(LAST_SESSION_SWEEP)?;
        if last.is_some_and(|t| now.0 - t.0 < SESSION_SWEEP_EVERY_MS) {
            return Ok(());
        }
        for (client, record) in self.store.sessions::<SessionRecord>()? {
            if now.0 - record.last_seen.0 > SESSION_TTL_MS {
                self.store.stage_session_removal(batch, &client)?;
            }
        }
        self.store.stage_sm_meta(batch, LAST_SESSION_SWEEP, &now)
    }

    /// Loads `installing.snap` (or `current.snap` if a crash came after its rename) into the
    /// state-machine column families, then clears the marker.
    fn load_installing(&self) -> Result<(), StateMachineError> {
        let installing = self.path(INSTALLING_FILE);
        let source = if installing.exists() {
            installing.clone()
        } else {
            self.path(CURRENT)
        };
        // Readers beside us get no view, and exports no start, until the whole snapshot is in
        // (and none at all if this fails: the marker makes the next start load it again).
        let replacement = self.store.begin_replacing();
        self.store.clear_state()?;
        load_file(&self.store, &source, |_, _, value| Ok(value))?;
        self.store.sync()?;
        if source == installing {
            fs::rename(&installing, self.path(CURRENT))?;
            sync_dir(&self.snapshot_dir)?;
        }
        self.store.delete_raft_meta(INSTALLING)?;
        replacement.complete();
        Ok(())
    }

    fn current_snapshot(&self) -> Result<Option<Snapshot<TypeConfig>>, StateMachineError> {
        let path = self.path(CURRENT);
        let mut handle = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let meta = file::read_meta(&mut handle)?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(handle)),
        }))
    }
}

/// Loads every row of the snapshot file at `path` into the state-machine column families, in
/// bounded batches, each row's value as `each` returns it (it may also watch the rows go by).
/// Returns the file's metadata; the caller syncs.
pub(crate) fn load_file(
    store: &Store,
    path: &Path,
    mut each: impl FnMut(u8, &[u8], Vec<u8>) -> Result<Vec<u8>, SnapshotFileError>,
) -> Result<SnapshotMeta, StateMachineError> {
    let mut rows = Vec::with_capacity(LOAD_BATCH_ROWS);
    let meta = file::read_rows(path, |cf, key, value| {
        let value = each(cf, &key, value)?;
        rows.push((cf, key, value));
        if rows.len() >= LOAD_BATCH_ROWS {
            store
                .load_state(&rows)
                .map_err(|e| SnapshotFileError::Malformed(e.to_string()))?;
            rows.clear();
        }
        Ok(())
    })?;
    store.load_state(&rows)?;
    Ok(meta)
}

/// Removes the files of `dir` named `prefix…tmp`: work a crash or an abandoned transfer left.
fn remove_tmp_files(dir: &Path, prefix: &str) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(prefix) && name.ends_with(".tmp") {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Failures of the state machine's own file and store work, before openraft wraps them.
#[derive(Debug, thiserror::Error)]
pub enum StateMachineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    File(#[from] SnapshotFileError),
    #[error("snapshot I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("received snapshot is for {found:?}, expected {expected:?}")]
    WrongSnapshot {
        found: Option<LogId>,
        expected: Option<LogId>,
    },
}

pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

pub(crate) fn unique_suffix() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// The audit events of one applied change, with their keys. An import is recorded as one
/// `LinkCreated` event per created link, each with its own row as the command, so a link's
/// history reads the same however it was created (and an event never repeats the whole batch).
fn audit_events(
    log_index: u64,
    command: &Command,
    change: &Change,
    decision: &Decision,
) -> Vec<(Vec<u8>, AuditEvent)> {
    let single = |key: Vec<u8>| {
        let event = AuditEvent {
            log_index,
            command: command.clone(),
            change: change.clone(),
        };
        vec![(key, event)]
    };
    match change {
        Change::LinkCreated { link } | Change::LinkDeleted { link, .. } => {
            single(keys::audit_link(link.id, log_index))
        }
        Change::LinkValidityChanged { after, .. } => single(keys::audit_link(after.id, log_index)),
        Change::KeyTypeAdded { .. }
        | Change::KeyTypeActiveChanged { .. }
        | Change::FormatRuleSet { .. } => single(keys::audit_catalogue(log_index)),
        Change::LinksImported { links } => {
            let (Action::ImportLinks(import), Outcome::Imported(outcomes)) =
                (&command.action, &decision.outcome)
            else {
                return Vec::new();
            };
            let created =
                import
                    .rows
                    .iter()
                    .zip(outcomes)
                    .filter_map(|(row, outcome)| match outcome {
                        RowOutcome::Created(id) => Some((row, *id)),
                        _ => None,
                    });
            // Created ids are consecutive in row order.
            let first = links.first().map_or(0, |l| l.id.0);
            created
                .filter_map(|(row, id)| {
                    let position = usize::try_from(id.0.checked_sub(first)?).ok()?;
                    let link = links.get(position).filter(|l| l.id == id)?;
                    let event = AuditEvent {
                        log_index,
                        command: Command {
                            caller: command.caller.clone(),
                            at: command.at,
                            action: Action::CreateLink(row.clone()),
                            context: command.context.clone(),
                        },
                        change: Change::LinkCreated { link: link.clone() },
                    };
                    Some((keys::audit_link(id, log_index), event))
                })
                .collect()
        }
    }
}

/// Builds snapshots from a RocksDB point-in-time view, straight into a file.
pub struct SnapshotBuilder {
    store: Arc<Store>,
    snapshot_dir: PathBuf,
}

impl SnapshotBuilder {
    fn build(&self) -> Result<SnapshotMeta, StateMachineError> {
        let tmp = self
            .snapshot_dir
            .join(format!("build-{}.tmp", unique_suffix()));
        // Held to the rename: an install meanwhile would otherwise be overwritten by this older
        // file, or be read half-done.
        let steady = self.store.steady()?;
        let (meta, _) = write_state_file(&self.store, &steady, &tmp, "")?;
        // Make every apply the snapshot covers durable before openraft may purge its log.
        self.store.sync()?;
        fs::rename(&tmp, self.snapshot_dir.join(CURRENT))?;
        sync_dir(&self.snapshot_dir)?;
        Ok(meta)
    }
}

/// Writes every state-machine row of one RocksDB point-in-time view into a snapshot file at
/// `path` (fsynced), hashing the same rows on the way: the file and the digest describe the
/// same instant. `id_prefix` starts the snapshot id (empty for ordinary snapshots).
pub(crate) fn write_state_file(
    store: &Store,
    steady: &Steady<'_>,
    path: &Path,
    id_prefix: &str,
) -> Result<(SnapshotMeta, Digest), StateMachineError> {
    let mut writer = SnapshotWriter::new(File::create(path)?)?;
    let mut reader = StateReader::default();
    let exported = store.export_state(steady, |cf, key, value| {
        reader.row(cf, key, value)?;
        writer.row(cf, key, value)
    })?;
    exported?;
    let (digest, membership) = reader.finish();
    let meta = SnapshotMeta {
        last_log_id: digest.applied,
        last_membership: membership,
        snapshot_id: match digest.applied {
            Some(id) => format!(
                "{id_prefix}{}-{}-{}",
                id.leader_id.term,
                id.index,
                unique_suffix()
            ),
            None => format!("{id_prefix}empty-{}", unique_suffix()),
        },
    };
    writer.finish(&meta)?;
    Ok((meta, digest))
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let builder = SnapshotBuilder {
            store: self.store.clone(),
            snapshot_dir: self.snapshot_dir.clone(),
        };
        let built = tokio::task::spawn_blocking(move || {
            builder.build()?;
            let sm = StateMachine {
                store: builder.store.clone(),
                snapshot_dir: builder.snapshot_dir.clone(),
            };
            sm.current_snapshot()
        })
        .await
        .map_err(|e| snapshot_error(std::io::Error::other(e.to_string())))?;
        match built {
            Ok(Some(snapshot)) => Ok(snapshot),
            Ok(None) => Err(snapshot_error(std::io::Error::other("snapshot vanished"))),
            Err(e) => Err(snapshot_error(e)),
        }
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let last: Option<LogId> = self.store.sm_meta(LAST_APPLIED).map_err(sm_read)?;
        let membership: Option<StoredMembership> =
            self.store.sm_meta(MEMBERSHIP).map_err(sm_read)?;
        Ok((last, membership.unwrap_or_default()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut responses = Vec::new();
        for entry in entries {
            let response = self
                .apply_entry(&entry)
                .map_err(|e| StorageError::from(StorageIOError::apply(entry.log_id, &e)))?;
            responses.push(response);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            store: self.store.clone(),
            snapshot_dir: self.snapshot_dir.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        // openraft receives one snapshot at a time: a new transfer abandons any earlier one,
        // whose file (gigabytes for a large register) would otherwise stay until an install.
        // Off the async workers: deleting a file of gigabytes takes a while.
        let dir = self.snapshot_dir.clone();
        tokio::task::spawn_blocking(move || remove_tmp_files(&dir, RECEIVING))
            .await
            .map_err(snapshot_error)?
            .map_err(snapshot_error)?;
        let path = self.path(&format!("{RECEIVING}{}.tmp", unique_suffix()));
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(snapshot_error)?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let received = snapshot.into_std().await;
        let store = self.store.clone();
        let dir = self.snapshot_dir.clone();
        let expected = meta.last_log_id;
        let result = tokio::task::spawn_blocking(move || {
            let sm = StateMachine {
                store,
                snapshot_dir: dir,
            };
            sm.install_from(received, expected)
        })
        .await
        .map_err(|e| snapshot_error(std::io::Error::other(e.to_string())))?;
        result.map_err(snapshot_error)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        self.current_snapshot().map_err(snapshot_error)
    }
}

impl StateMachine {
    /// Copies the received file aside, verifies it whole, and only then replaces the state.
    fn install_from(
        &self,
        mut received: File,
        expected: Option<LogId>,
    ) -> Result<(), StateMachineError> {
        use std::io::{Seek, SeekFrom};
        received.sync_all()?;
        received.seek(SeekFrom::Start(0))?;
        let installing = self.path(INSTALLING_FILE);
        {
            let mut copy = File::create(&installing)?;
            std::io::copy(&mut received, &mut copy)?;
            copy.sync_all()?;
        }
        drop(received);
        self.remove_leftovers()?;
        let found = file::read_rows(&installing, |_, _, _| Ok(()))?.last_log_id;
        if found != expected {
            return Err(StateMachineError::WrongSnapshot { found, expected });
        }
        self.store.set_raft_meta(INSTALLING, &true)?;
        self.load_installing()
    }

    /// Received files that will never be used (an abandoned transfer, a crash). Build files are
    /// left alone: a build may be running.
    fn remove_leftovers(&self) -> std::io::Result<()> {
        remove_tmp_files(&self.snapshot_dir, RECEIVING)
    }
}

#[cfg(test)]
#[path = "state_machine_tests.rs"]
mod tests;

/// A hash of the replicated register at one applied index: equal on two nodes at the same index
/// means identical replicas.
///
/// Every state-machine row is hashed except raft's own bookkeeping, `last_applied` and the
/// membership: the applied index is reported beside the hash, and membership is raft's to keep
/// consistent (and differs, by design, in a cluster restored from a backup of another one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub applied: Option<LogId>,
    pub sha256: String,
    pub rows: u64,
}

/// Index of `sm_meta` in `cf::STATE_MACHINE`, as export and snapshot files number them.
pub(crate) fn sm_meta_index() -> u8 {
    cf::STATE_MACHINE
        .iter()
        .position(|name| *name == cf::SM_META)
        .unwrap_or(0) as u8
}

/// Whether a state-machine row is raft bookkeeping rather than register state.
pub(crate) fn is_membership_row(cf: u8, key: &[u8]) -> bool {
    cf == sm_meta_index() && key == MEMBERSHIP
}

/// Reads state-machine rows as they stream past (export, snapshot file): picks out the applied
/// log id and membership, and hashes the register rows into a `Digest`.
pub(crate) struct StateReader {
    hasher: sha2::Sha256,
    rows: u64,
    applied: Option<LogId>,
    membership: StoredMembership,
}

impl Default for StateReader {
    fn default() -> Self {
        use sha2::Digest as _;
        StateReader {
            hasher: sha2::Sha256::new(),
            rows: 0,
            applied: None,
            membership: StoredMembership::default(),
        }
    }
}

impl StateReader {
    pub(crate) fn row(
        &mut self,
        cf: u8,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), SnapshotFileError> {
        use sha2::Digest as _;
        if cf == sm_meta_index() {
            let malformed = |e: codec::CodecError| SnapshotFileError::Malformed(e.to_string());
            if key == LAST_APPLIED {
                self.applied = Some(codec::decode(value).map_err(malformed)?);
                return Ok(());
            }
            if is_membership_row(cf, key) {
                self.membership = codec::decode(value).map_err(malformed)?;
                return Ok(());
            }
        }
        self.hasher.update([cf]);
        self.hasher.update((key.len() as u64).to_be_bytes());
        self.hasher.update(key);
        self.hasher.update((value.len() as u64).to_be_bytes());
        self.hasher.update(value);
        self.rows += 1;
        Ok(())
    }

    pub(crate) fn finish(self) -> (Digest, StoredMembership) {
        use sha2::Digest as _;
        let digest = Digest {
            applied: self.applied,
            sha256: hex::encode(self.hasher.finalize()),
            rows: self.rows,
        };
        (digest, self.membership)
    }
}

pub fn digest(store: &Store) -> Result<Digest, StateMachineError> {
    let mut reader = StateReader::default();
    let steady = store.steady()?;
    store.export_state(&steady, |cf, key, value| reader.row(cf, key, value))??;
    Ok(reader.finish().0)
}
