//! Read-only size figures of the store, per column family, for metrics.

use rocksdb::properties;

use super::{Store, StoreError, cf};

/// What RocksDB reports about one column family. A figure RocksDB does not report is `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnFamilyStats {
    pub name: &'static str,
    /// Bytes in SST files on disk, every version included (`rocksdb.total-sst-files-size`).
    pub sst_bytes: Option<u64>,
    /// Bytes held in memtables not yet flushed (`rocksdb.cur-size-all-mem-tables`).
    pub memtable_bytes: Option<u64>,
    /// RocksDB's estimate of the number of keys (`rocksdb.estimate-num-keys`): deletions and
    /// overwrites not yet compacted away make it approximate.
    pub estimated_keys: Option<u64>,
}

impl Store {
    /// Size figures of every column family, in [`cf::ALL`] order. In-memory properties: cheap.
    pub fn column_family_stats(&self) -> Result<Vec<ColumnFamilyStats>, StoreError> {
        cf::ALL
            .iter()
            .map(|&name| {
                let handle = self.cf(name)?;
                Ok(ColumnFamilyStats {
                    name,
                    sst_bytes: self
                        .db
                        .property_int_value_cf(handle, properties::TOTAL_SST_FILES_SIZE)?,
                    memtable_bytes: self
                        .db
                        .property_int_value_cf(handle, properties::CUR_SIZE_ALL_MEM_TABLES)?,
                    estimated_keys: self
                        .db
                        .property_int_value_cf(handle, properties::ESTIMATE_NUM_KEYS)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_column_family_reports_its_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let stats = store.column_family_stats().unwrap();
        let names: Vec<_> = stats.iter().map(|s| s.name).collect();
        assert_eq!(names, cf::ALL);
        for s in &stats {
            assert!(s.sst_bytes.is_some() && s.memtable_bytes.is_some(), "{s:?}");
        }
        // A new store holds the seed catalogue, still in the memtable.
        let key_types = stats.iter().find(|s| s.name == cf::KEY_TYPES).unwrap();
        assert!(key_types.estimated_keys.unwrap_or(0) > 0, "{key_types:?}");
    }
}
