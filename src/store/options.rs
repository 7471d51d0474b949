//! RocksDB options per column family: one shared block cache, bloom filters where a lookup may
//! miss, prefix blooms on the two indexes, LZ4 everywhere, and a memtable budget for the whole
//! instance. Each choice is measured in `BENCHMARKS.md`.

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBCompressionType, Options, ReadOptions,
    SliceTransform,
};

use super::cf;
use super::keys::{self, SSIN_LEN};

/// Memory a node's store may use, beside what the process itself needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreTuning {
    /// Shared by every column family; holds data, index and filter blocks.
    pub block_cache_bytes: usize,
    /// All memtables together; past it the largest is flushed.
    pub write_buffer_bytes: usize,
}

impl Default for StoreTuning {
    fn default() -> StoreTuning {
        StoreTuning {
            block_cache_bytes: 256 << 20,
            write_buffer_bytes: 128 << 20,
        }
    }
}

/// Read options for a walk over a whole column family: in total key order across prefixes,
/// which a family with a prefix extractor guarantees only when asked.
pub(super) fn full_scan() -> ReadOptions {
    let mut options = ReadOptions::default();
    options.set_total_order_seek(true);
    options
}

pub(super) fn db_options(tuning: &StoreTuning) -> Options {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_db_write_buffer_size(tuning.write_buffer_bytes);
    // Both cores for flushes and compactions: a falling-behind compaction is what makes a long
    // import slow down.
    opts.increase_parallelism(2);
    // Spreads the writeback of new SST files instead of one large flush at their end.
    opts.set_bytes_per_sync(1 << 20);
    opts
}

pub(super) fn descriptors(tuning: &StoreTuning) -> Vec<ColumnFamilyDescriptor> {
    let cache = Cache::new_lru_cache(tuning.block_cache_bytes);
    cf::ALL
        .iter()
        .map(|name| ColumnFamilyDescriptor::new(*name, cf_options(name, &cache)))
        .collect()
}

fn cf_options(name: &str, cache: &Cache) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    // Filters and indexes stay with their open table files, outside the cache (about 1.3
    // bytes per key at 10 bits). In the cache, a full filter block of a large file was evicted
    // by data blocks once the store passed 4M links, and every later search read and
    // checksummed whole filter blocks again: the import rate fell from 21k to 1.2k links/s.
    table.set_cache_index_and_filter_blocks(false);
    table.set_bloom_filter(10.0, false);
    let mut opts = Options::default();
    opts.set_compression_type(DBCompressionType::Lz4);
    opts.set_bottommost_compression_type(DBCompressionType::Lz4);
    opts.set_level_compaction_dynamic_level_bytes(true);
    match name {
        // Index rows are only ever found by prefix: a whole-key filter would never be asked.
        cf::LINKS_BY_SSIN => {
            table.set_whole_key_filtering(false);
            opts.set_prefix_extractor(SliceTransform::create_fixed_prefix(SSIN_LEN));
            opts.set_memtable_prefix_bloom_ratio(0.05);
        }
        cf::LINKS_BY_FOREIGN_KEY => {
            table.set_whole_key_filtering(false);
            opts.set_prefix_extractor(SliceTransform::create(
                "linkreg.foreign_key.v1",
                keys::foreign_key_search_prefix,
                Some(keys::is_foreign_key_row),
            ));
            opts.set_memtable_prefix_bloom_ratio(0.05);
        }
        _ => {}
    }
    opts.set_block_based_table_factory(&table);
    opts
}

#[cfg(test)]
mod tests {
    use crate::domain::{Country, KeyTypeCode, LinkId};
    use crate::store::keys;

    #[test]
    fn the_foreign_key_prefix_of_a_row_is_its_search_prefix_whatever_the_id() {
        let code = KeyTypeCode::parse(crate::domain::Field::KeyType, "PASSPORT").unwrap();
        let country = Country::parse("FR").unwrap();
        let prefix = keys::foreign_key_prefix(country, &code, "AB123");
        for id in [0, 1, 256, 0x0100_0000_0000_0000, u64::MAX] {
            let row = keys::foreign_key_index(country, &code, "AB123", LinkId(id));
            assert!(keys::is_foreign_key_row(&row));
            assert_eq!(
                keys::foreign_key_search_prefix(&row),
                &prefix[..],
                "id {id}"
            );
        }
        assert!(keys::is_foreign_key_row(&prefix));
        assert_eq!(keys::foreign_key_search_prefix(&prefix), &prefix[..]);
        assert!(!keys::is_foreign_key_row(b"FRPASSPORT"));
    }
}
