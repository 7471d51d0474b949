//! The raw storage operations the raft layer builds its log store and state machine on. Values
//! still go through `codec`; what they mean (log entries, votes, membership) is the raft layer's
//! business, so these functions are generic over the stored type.

use rocksdb::{IteratorMode, WriteBatch};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Steady, Store, StoreError, cf, codec, keys};

/// A decoded value with its raw key.
pub type Keyed<T> = (Box<[u8]>, T);

/// Greater than every 8-byte log-index key: the exclusive end of "everything from here on".
const PAST_LAST_INDEX: [u8; 9] = [0xFF; 9];

impl Store {
    /// Appends log entries and returns once they are on disk: raft may acknowledge them then.
    pub fn append_log<'a, T, I>(&self, entries: I) -> Result<(), StoreError>
    where
        T: Serialize + 'a,
        I: IntoIterator<Item = (u64, &'a T)>,
    {
        let mut batch = WriteBatch::default();
        for (index, entry) in entries {
            self.put(&mut batch, cf::RAFT_LOG, &keys::u64_key(index), entry)?;
        }
        self.write_synced(batch)
    }

    /// Log entries with `from <= index < to`, in index order.
    pub fn read_log<T: DeserializeOwned>(&self, from: u64, to: u64) -> Result<Vec<T>, StoreError> {
        if from >= to {
            return Ok(Vec::new());
        }
        let mut options = rocksdb::ReadOptions::default();
        options.set_iterate_upper_bound(keys::u64_key(to).to_vec());
        let start = keys::u64_key(from);
        let rows = self.db.iterator_cf_opt(
            self.cf(cf::RAFT_LOG)?,
            options,
            IteratorMode::From(&start, rocksdb::Direction::Forward),
        );
        rows.map(|row| {
            let (key, value) = row?;
            decode_row(cf::RAFT_LOG, &key, &value)
        })
        .collect()
    }

    pub fn last_log<T: DeserializeOwned>(&self) -> Result<Option<T>, StoreError> {
        let mut rows = self
            .db
            .iterator_cf(self.cf(cf::RAFT_LOG)?, IteratorMode::End);
        match rows.next() {
            None => Ok(None),
            Some(row) => {
                let (key, value) = row?;
                decode_row(cf::RAFT_LOG, &key, &value).map(Some)
            }
        }
    }

    /// Removes the entries at `from` and after (conflicting entries a new leader overrides).
    pub fn truncate_log(&self, from: u64) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            self.cf(cf::RAFT_LOG)?,
            &keys::u64_key(from)[..],
            &PAST_LAST_INDEX[..],
        );
        self.write_synced(batch)
    }

    /// Records `last_purged` and removes the entries up to and including `upto`, atomically: a
    /// restarted node must know where its log now begins.
    pub fn purge_log<T: Serialize>(
        &self,
        upto: u64,
        meta_key: &[u8],
        last_purged: &T,
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        self.put(&mut batch, cf::RAFT_META, meta_key, last_purged)?;
        let end = upto
            .checked_add(1)
            .map(|n| keys::u64_key(n).to_vec())
            .unwrap_or_else(|| PAST_LAST_INDEX.to_vec());
        batch.delete_range_cf(self.cf(cf::RAFT_LOG)?, &keys::u64_key(0)[..], &end[..]);
        self.write_synced(batch)
    }

    pub fn raft_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        self.get(cf::RAFT_META, key)
    }

    /// Durable before it returns (votes must never be forgotten).
    pub fn set_raft_meta<T: Serialize>(&self, key: &[u8], value: &T) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        self.put(&mut batch, cf::RAFT_META, key, value)?;
        self.write_synced(batch)
    }

    pub fn set_raft_meta_unsynced<T: Serialize>(
        &self,
        key: &[u8],
        value: &T,
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        self.put(&mut batch, cf::RAFT_META, key, value)?;
        self.write(batch)
    }

    pub fn delete_raft_meta(&self, key: &[u8]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(cf::RAFT_META)?, key);
        self.write_synced(batch)
    }

    pub fn sm_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        self.get(cf::SM_META, key)
    }

    pub fn stage_sm_meta<T: Serialize>(
        &self,
        batch: &mut WriteBatch,
        key: &[u8],
        value: &T,
    ) -> Result<(), StoreError> {
        self.put(batch, cf::SM_META, key, value)
    }

    /// `key` from `keys::audit_link` or `keys::audit_catalogue`.
    pub fn stage_audit<T: Serialize>(
        &self,
        batch: &mut WriteBatch,
        key: &[u8],
        event: &T,
    ) -> Result<(), StoreError> {
        self.put(batch, cf::AUDIT, key, event)
    }

    /// Audit events whose key starts with `prefix`, in log order.
    pub fn audit_events<T: DeserializeOwned>(&self, prefix: &[u8]) -> Result<Vec<T>, StoreError> {
        self.latest().audit_events(prefix)
    }

    pub fn session<T: DeserializeOwned>(&self, client_id: &str) -> Result<Option<T>, StoreError> {
        self.get(cf::CLIENT_SESSIONS, client_id.as_bytes())
    }

    pub fn stage_session<T: Serialize>(
        &self,
        batch: &mut WriteBatch,
        client_id: &str,
        record: &T,
    ) -> Result<(), StoreError> {
        self.put(batch, cf::CLIENT_SESSIONS, client_id.as_bytes(), record)
    }

    pub fn stage_session_removal(
        &self,
        batch: &mut WriteBatch,
        client_id: &[u8],
    ) -> Result<(), StoreError> {
        batch.delete_cf(self.cf(cf::CLIENT_SESSIONS)?, client_id);
        Ok(())
    }

    /// Every client session (their number is bounded by expiry).
    pub fn sessions<T: DeserializeOwned>(&self) -> Result<Vec<Keyed<T>>, StoreError> {
        self.scan(cf::CLIENT_SESSIONS, &[])?
            .into_iter()
            .map(|(key, value)| {
                let record = decode_row(cf::CLIENT_SESSIONS, &key, &value)?;
                Ok((key, record))
            })
            .collect()
    }

    /// Writes a batch without waiting for the disk. For state-machine applies, which the synced
    /// raft log can replay.
    pub fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.db.write(batch)?;
        Ok(())
    }

    /// Writes every memtable out to table files, so that reads go where a long-running node's
    /// go (benchmarks).
    pub fn flush(&self) -> Result<(), StoreError> {
        for name in cf::ALL {
            self.db.flush_cf(self.cf(name)?)?;
        }
        Ok(())
    }

    /// Makes every write so far durable.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.db.flush_wal(true)?;
        Ok(())
    }

    /// Every row of the state-machine column families as of one instant (a RocksDB snapshot), in
    /// column-family then key order. `visit` gets the index into `cf::STATE_MACHINE`.
    pub fn export_state<E>(
        &self,
        _steady: &Steady<'_>,
        mut visit: impl FnMut(u8, &[u8], &[u8]) -> Result<(), E>,
    ) -> Result<Result<(), E>, StoreError> {
        let view = self.db.snapshot();
        for (index, name) in cf::STATE_MACHINE.iter().enumerate() {
            for row in view.iterator_cf_opt(
                self.cf(name)?,
                super::options::full_scan(),
                IteratorMode::Start,
            ) {
                let (key, value) = row?;
                if let Err(e) = visit(index as u8, &key, &value) {
                    return Ok(Err(e));
                }
            }
        }
        Ok(Ok(()))
    }

    /// Removes every row of the state-machine column families (not synced: installing a snapshot
    /// syncs once at its end).
    pub fn clear_state(&self) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        for name in cf::STATE_MACHINE {
            let handle = self.cf(name)?;
            let last = self
                .db
                .iterator_cf_opt(handle, super::options::full_scan(), IteratorMode::End)
                .next();
            if let Some(row) = last {
                let (key, _) = row?;
                let mut end = key.to_vec();
                end.push(0);
                batch.delete_range_cf(handle, &[] as &[u8], &end[..]);
            }
        }
        self.write(batch)
    }

    /// Loads exported rows (already encoded) into the state-machine column families.
    pub fn load_state(&self, rows: &[(u8, Vec<u8>, Vec<u8>)]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        for (index, key, value) in rows {
            let name = cf::STATE_MACHINE.get(usize::from(*index)).ok_or(
                StoreError::MissingColumnFamily("(unknown state-machine index)"),
            )?;
            batch.put_cf(self.cf(name)?, key, value);
        }
        self.write(batch)
    }
}

pub(super) fn decode_row<T: DeserializeOwned>(
    cf: &'static str,
    key: &[u8],
    value: &[u8],
) -> Result<T, StoreError> {
    codec::decode(value).map_err(|source| StoreError::Value {
        cf,
        key: key.to_vec(),
        source,
    })
}
