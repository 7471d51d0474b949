//! A node's RocksDB instance: column families, key encodings, value codec, and the register's
//! state read through [`RegisterView`] and written as [`Change`]s staged into a `WriteBatch`.
//!
//! ```text
//!   domain::decide(StoreView, command) ─► Change ─► Store::stage(batch, change) ─► one WriteBatch
//!                                                    (+ raft bookkeeping, later)
//! ```
//!
//! Only this module touches RocksDB column families; only `codec` encodes values.

pub mod cf;
pub mod codec;
pub mod keys;
mod options;
mod raft_io;
pub mod stats;

use std::path::Path;

use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use rocksdb::{
    ColumnFamily, DB, Direction, IteratorMode, ReadOptions, SnapshotWithThreadMode, WriteBatch,
    WriteOptions,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::domain::key_type::seed_catalogue;
use crate::domain::{
    Change, Country, FormatRule, KeyType, KeyTypeCode, Link, LinkId, RegisterView, Ssin,
};
use codec::CodecError;
use keys::KeyError;
pub use options::StoreTuning;

const NEXT_LINK_ID: &[u8] = b"next_link_id";

/// A key and its value, as RocksDB hands them out.
type Row = (Box<[u8]>, Box<[u8]>);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("RocksDB: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("column family {0} is missing")]
    MissingColumnFamily(&'static str),
    #[error("corrupt value in {cf} at key {key:02x?}: {source}")]
    Value {
        cf: &'static str,
        key: Vec<u8>,
        source: CodecError,
    },
    #[error("cannot encode a value for {cf}: {source}")]
    Encode {
        cf: &'static str,
        source: CodecError,
    },
    #[error("in {cf}: {source}")]
    Key { cf: &'static str, source: KeyError },
    #[error("{cf} names link {id}, which is not stored")]
    DanglingIndex { cf: &'static str, id: LinkId },
    #[error("the register is being replaced by a snapshot install, or one failed")]
    Replacing,
    #[error("storage task failed: {0}")]
    Task(String),
}

pub struct Store {
    db: DB,
    /// Whether the state is whole: false while it is replaced wholesale (a snapshot install)
    /// and after a replacement that failed. Held exclusively by a replacement; shared by a view
    /// while it takes its snapshot (never waiting) and by whole-state exports (snapshot builds,
    /// backups, digests) for as long as they read, which may wait for it.
    whole: RwLock<bool>,
}

impl Store {
    /// Opens (or creates) the store in `dir` with the default memory budget.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_tuned(dir, &StoreTuning::default())
    }

    /// Opens (or creates) the store in `dir`. A new store starts with the seed key-type catalogue.
    pub fn open_tuned(dir: &Path, tuning: &StoreTuning) -> Result<Store, StoreError> {
        let db = DB::open_cf_descriptors(
            &options::db_options(tuning),
            dir,
            options::descriptors(tuning),
        )?;
        let store = Store {
            db,
            whole: RwLock::new(true),
        };
        store.seed_if_new()?;
        Ok(store)
    }

    fn seed_if_new(&self) -> Result<(), StoreError> {
        if self
            .db
            .get_cf(self.cf(cf::SM_META)?, NEXT_LINK_ID)?
            .is_some()
        {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        for key_type in seed_catalogue() {
            self.put(
                &mut batch,
                cf::KEY_TYPES,
                &keys::key_type(&key_type.code),
                &key_type,
            )?;
        }
        self.put(&mut batch, cf::SM_META, NEXT_LINK_ID, &1u64)?;
        self.write_synced(batch)
    }

    fn cf(&self, name: &'static str) -> Result<&ColumnFamily, StoreError> {
        self.db
            .cf_handle(name)
            .ok_or(StoreError::MissingColumnFamily(name))
    }

    fn put<T: Serialize>(
        &self,
        batch: &mut WriteBatch,
        cf: &'static str,
        key: &[u8],
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes = codec::encode(value).map_err(|source| StoreError::Encode { cf, source })?;
        batch.put_cf(self.cf(cf)?, key, bytes);
        Ok(())
    }

    fn get<T: DeserializeOwned>(
        &self,
        cf: &'static str,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        self.latest().get(cf, key)
    }

    fn scan(&self, cf: &'static str, prefix: &[u8]) -> Result<Vec<Row>, StoreError> {
        self.latest().scan(cf, prefix)
    }

    /// The register as of this instant, for readers beside the state machine (searches, a
    /// command's early check): every read through it sees one RocksDB snapshot, so a search by
    /// foreign key over several key types, or an index row and its link, never meet two states.
    /// `None` while the state is being replaced (`begin_replacing`): it holds part of a
    /// snapshot, an answer from it would be wrong.
    pub fn view(&self) -> Option<View<'_>> {
        // Poisoned like in `steady`: the flag itself says whether the state is whole.
        let whole = match self.whole.try_read() {
            Ok(whole) => whole,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        if !*whole {
            return None;
        }
        let snapshot = self.db.snapshot();
        drop(whole);
        Some(View {
            store: self,
            snapshot: Some(snapshot),
        })
    }

    /// Starts replacing the whole state: waits for exports under way, then hands out no view
    /// and lets no export start until the replacement completes. One that is dropped
    /// uncompleted (it failed) keeps views and exports refused, so the half state it left is
    /// never read.
    pub fn begin_replacing(&self) -> Replacement<'_> {
        let mut whole = self.whole.write().unwrap_or_else(PoisonError::into_inner);
        *whole = false;
        Replacement { whole }
    }

    /// The state is whole and stays so while the returned guard lives: what a whole-state
    /// export holds from its first read to its last step (a snapshot build's rename).
    pub fn steady(&self) -> Result<Steady<'_>, StoreError> {
        let whole = self.whole.read().unwrap_or_else(PoisonError::into_inner);
        if !*whole {
            return Err(StoreError::Replacing);
        }
        Ok(Steady { _whole: whole })
    }

    /// Reads of whatever is stored when each read runs: for the state machine, the only
    /// writer, which reads between its own writes.
    fn latest(&self) -> View<'_> {
        View {
            store: self,
            snapshot: None,
        }
    }

    /// Adds the writes of `change` (data and every index) to `batch`. The caller writes the batch,
    /// together with whatever bookkeeping must be atomic with it.
    pub fn stage(&self, batch: &mut WriteBatch, change: &Change) -> Result<(), StoreError> {
        match change {
            Change::LinkCreated { link } => {
                self.stage_created(batch, std::slice::from_ref(link))?
            }
            Change::LinksImported { links } => self.stage_created(batch, links)?,
            // Only the validity changes, and no index covers it.
            Change::LinkValidityChanged { after, .. } => {
                self.put(batch, cf::LINKS, &keys::link(after.id), after)?;
            }
            Change::LinkDeleted { link, .. } => {
                batch.delete_cf(self.cf(cf::LINKS)?, keys::link(link.id));
                for (cf, key) in index_rows(link) {
                    batch.delete_cf(self.cf(cf)?, key);
                }
            }
            Change::KeyTypeAdded { key_type }
            | Change::KeyTypeActiveChanged {
                after: key_type, ..
            } => {
                self.put(
                    batch,
                    cf::KEY_TYPES,
                    &keys::key_type(&key_type.code),
                    key_type,
                )?;
            }
            Change::FormatRuleSet {
                country,
                key_type,
                after,
                ..
            } => {
                let key = keys::format_rule(*country, key_type);
                match after {
                    Some(rule) => self.put(batch, cf::KEY_TYPES, &key, rule)?,
                    None => batch.delete_cf(self.cf(cf::KEY_TYPES)?, key),
                }
            }
        }
        Ok(())
    }

    /// New links (consecutive ids) with their index rows, each index's rows put in key order:
    /// RocksDB's memtable inserts a key next to the one before it cheaply, while random keys make
    /// it search its skip list again (most of a replica's write cost, by profile). The rows have
    /// distinct keys, so their order in the batch changes nothing else. The last link sets
    /// `next_link_id`, once, since the memtable keeps every overwritten version until a flush.
    fn stage_created(&self, batch: &mut WriteBatch, links: &[Link]) -> Result<(), StoreError> {
        let mut by_ssin = Vec::with_capacity(links.len());
        let mut by_key = Vec::with_capacity(links.len());
        for link in links {
            self.put(batch, cf::LINKS, &keys::link(link.id), link)?;
            let [ssin, key] = index_rows(link);
            by_ssin.push(ssin.1);
            by_key.push(key.1);
        }
        for (name, mut rows) in [
            (cf::LINKS_BY_SSIN, by_ssin),
            (cf::LINKS_BY_FOREIGN_KEY, by_key),
        ] {
            rows.sort_unstable();
            let handle = self.cf(name)?;
            for row in rows {
                batch.put_cf(handle, row, []);
            }
        }
        match links.last() {
            Some(last) => self.put(
                batch,
                cf::SM_META,
                NEXT_LINK_ID,
                &last.id.0.saturating_add(1),
            ),
            None => Ok(()),
        }
    }

    /// Writes `batch` atomically and returns only once it is on disk (WAL fsynced).
    pub fn write_synced(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(batch, &options)?;
        Ok(())
    }
}

/// Read options for a walk over the rows under `prefix`.
fn prefix_scan(prefix: &[u8]) -> ReadOptions {
    let mut options = ReadOptions::default();
    if let Some(bound) = keys::prefix_upper_bound(prefix) {
        options.set_iterate_upper_bound(bound);
    }
    // Lets the index column families' prefix blooms skip files without the prefix; where a
    // family has no prefix extractor it changes nothing.
    options.set_prefix_same_as_start(true);
    options
}

/// The index rows a link has, by column family: written with it, deleted with it.
fn index_rows(link: &Link) -> [(&'static str, Vec<u8>); 2] {
    let fk = &link.foreign_key;
    [
        (cf::LINKS_BY_SSIN, keys::ssin_index(&link.ssin, link.id)),
        (
            cf::LINKS_BY_FOREIGN_KEY,
            keys::foreign_key_index(fk.country, &fk.key_type, fk.value.normalized(), link.id),
        ),
    ]
}

/// A replacement of the whole state under way (`Store::begin_replacing`).
pub struct Replacement<'a> {
    whole: RwLockWriteGuard<'a, bool>,
}

impl Replacement<'_> {
    /// The new state is whole: views and exports may read it.
    pub fn complete(mut self) {
        *self.whole = true;
    }
}

/// Proof that no replacement runs (`Store::steady`).
pub struct Steady<'a> {
    _whole: RwLockReadGuard<'a, bool>,
}

/// Reads of the register: as of one snapshot (`Store::view`), or of the latest state.
pub struct View<'a> {
    store: &'a Store,
    snapshot: Option<SnapshotWithThreadMode<'a, DB>>,
}

impl View<'_> {
    /// Every link in id order; `visit` returns false to stop early.
    pub fn for_each_link(&self, mut visit: impl FnMut(Link) -> bool) -> Result<(), StoreError> {
        for row in self.store.db.iterator_cf_opt(
            self.store.cf(cf::LINKS)?,
            self.at(options::full_scan()),
            IteratorMode::Start,
        ) {
            let (key, value) = row?;
            if !visit(raft_io::decode_row(cf::LINKS, &key, &value)?) {
                break;
            }
        }
        Ok(())
    }

    /// The audit events under `prefix`, in key order.
    pub fn audit_events<T: DeserializeOwned>(&self, prefix: &[u8]) -> Result<Vec<T>, StoreError> {
        self.scan(cf::AUDIT, prefix)?
            .into_iter()
            .map(|(key, value)| raft_io::decode_row(cf::AUDIT, &key, &value))
            .collect()
    }

    fn at(&self, mut options: ReadOptions) -> ReadOptions {
        if let Some(snapshot) = &self.snapshot {
            options.set_snapshot(snapshot);
        }
        options
    }

    fn get<T: DeserializeOwned>(
        &self,
        cf: &'static str,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        let options = self.at(ReadOptions::default());
        match self
            .store
            .db
            .get_pinned_cf_opt(self.store.cf(cf)?, key, &options)?
        {
            None => Ok(None),
            Some(bytes) => codec::decode(&bytes)
                .map(Some)
                .map_err(|source| StoreError::Value {
                    cf,
                    key: key.to_vec(),
                    source,
                }),
        }
    }

    /// Keys and values of every row whose key starts with `prefix`, in key order. Bounded above
    /// so RocksDB stops at the end of the prefix instead of scanning on.
    fn scan(&self, cf: &'static str, prefix: &[u8]) -> Result<Vec<Row>, StoreError> {
        let rows = self.store.db.iterator_cf_opt(
            self.store.cf(cf)?,
            self.at(prefix_scan(prefix)),
            IteratorMode::From(prefix, Direction::Forward),
        );
        rows.map(|row| row.map_err(StoreError::from)).collect()
    }

    /// The links an index prefix names. Read through a snapshot, a link deleted while the
    /// search runs is absent or whole; read latest, a deletion applied between the index scan
    /// and the link reads would leave an index row without its link (a failed search).
    fn links_from_index(&self, cf: &'static str, prefix: &[u8]) -> Result<Vec<Link>, StoreError> {
        let db = &self.store.db;
        let mut rows = db.raw_iterator_cf_opt(self.store.cf(cf)?, self.at(prefix_scan(prefix)));
        let mut ids = Vec::new();
        rows.seek(prefix);
        while let Some(key) = rows.key() {
            let id = keys::index_link_id(prefix, key)
                .map_err(|source| StoreError::Key { cf, source })?;
            ids.push(id);
            rows.next();
        }
        rows.status()?;
        let link_keys: Vec<_> = ids.iter().map(|id| keys::link(*id)).collect();
        // Rows under one prefix are in link id order, and so are the link keys: RocksDB may
        // skip sorting them.
        let found = db.batched_multi_get_cf_opt(
            self.store.cf(cf::LINKS)?,
            &link_keys,
            true,
            &self.at(ReadOptions::default()),
        );
        ids.iter()
            .zip(found)
            .map(|(id, found)| {
                let bytes = found?.ok_or(StoreError::DanglingIndex { cf, id: *id })?;
                codec::decode(&bytes).map_err(|source| StoreError::Value {
                    cf: cf::LINKS,
                    key: keys::link(*id).to_vec(),
                    source,
                })
            })
            .collect()
    }
}

impl RegisterView for View<'_> {
    type Error = StoreError;

    fn link(&self, id: LinkId) -> Result<Option<Link>, StoreError> {
        self.get(cf::LINKS, &keys::link(id))
    }

    fn links_by_ssin(&self, ssin: &Ssin) -> Result<Vec<Link>, StoreError> {
        self.links_from_index(cf::LINKS_BY_SSIN, &keys::ssin_prefix(ssin))
    }

    fn links_by_foreign_key(
        &self,
        country: Country,
        key_type: &KeyTypeCode,
        normalized_value: &str,
    ) -> Result<Vec<Link>, StoreError> {
        let prefix = keys::foreign_key_prefix(country, key_type, normalized_value);
        self.links_from_index(cf::LINKS_BY_FOREIGN_KEY, &prefix)
    }

    fn key_type(&self, code: &KeyTypeCode) -> Result<Option<KeyType>, StoreError> {
        self.get(cf::KEY_TYPES, &keys::key_type(code))
    }

    fn key_types(&self) -> Result<Vec<KeyType>, StoreError> {
        self.scan(cf::KEY_TYPES, &[keys::KEY_TYPE_TAG])?
            .into_iter()
            .map(|(key, value)| {
                codec::decode(&value).map_err(|source| StoreError::Value {
                    cf: cf::KEY_TYPES,
                    key: key.to_vec(),
                    source,
                })
            })
            .collect()
    }

    fn format_rule(
        &self,
        country: Country,
        key_type: &KeyTypeCode,
    ) -> Result<Option<FormatRule>, StoreError> {
        self.get(cf::KEY_TYPES, &keys::format_rule(country, key_type))
    }

    fn format_rules(&self) -> Result<Vec<(Country, KeyTypeCode, FormatRule)>, StoreError> {
        let mut rules = Vec::new();
        for (key, value) in self.scan(cf::KEY_TYPES, &[keys::FORMAT_RULE_TAG])? {
            let corrupt = |source| StoreError::Value {
                cf: cf::KEY_TYPES,
                key: key.to_vec(),
                source,
            };
            let rule: FormatRule = codec::decode(&value).map_err(corrupt)?;
            let (country, code) =
                keys::decode_format_rule(&key).map_err(|source| StoreError::Key {
                    cf: cf::KEY_TYPES,
                    source,
                })?;
            rules.push((country, code, rule));
        }
        Ok(rules)
    }

    fn next_link_id(&self) -> Result<LinkId, StoreError> {
        Ok(LinkId(self.get(cf::SM_META, NEXT_LINK_ID)?.unwrap_or(1)))
    }
}

/// The latest state: see `Store::view` for readers beside the state machine.
impl RegisterView for Store {
    type Error = StoreError;

    fn link(&self, id: LinkId) -> Result<Option<Link>, StoreError> {
        self.latest().link(id)
    }

    fn links_by_ssin(&self, ssin: &Ssin) -> Result<Vec<Link>, StoreError> {
        self.latest().links_by_ssin(ssin)
    }

    fn links_by_foreign_key(
        &self,
        country: Country,
        key_type: &KeyTypeCode,
        normalized_value: &str,
    ) -> Result<Vec<Link>, StoreError> {
        self.latest()
            .links_by_foreign_key(country, key_type, normalized_value)
    }

    fn key_type(&self, code: &KeyTypeCode) -> Result<Option<KeyType>, StoreError> {
        self.latest().key_type(code)
    }

    fn key_types(&self) -> Result<Vec<KeyType>, StoreError> {
        self.latest().key_types()
    }

    fn format_rule(
        &self,
        country: Country,
        key_type: &KeyTypeCode,
    ) -> Result<Option<FormatRule>, StoreError> {
        self.latest().format_rule(country, key_type)
    }

    fn format_rules(&self) -> Result<Vec<(Country, KeyTypeCode, FormatRule)>, StoreError> {
        self.latest().format_rules()
    }

    fn next_link_id(&self) -> Result<LinkId, StoreError> {
        self.latest().next_link_id()
    }
}

#[cfg(test)]
mod tests;
