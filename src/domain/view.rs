//! What the rules may read of the register. The storage layer implements it over RocksDB; the
//! in-memory [`super::memory::MemoryRegister`] implements it for tests.

use super::country::Country;
use super::foreign_key::FormatRule;
use super::key_type::{KeyType, KeyTypeCode};
use super::link::{Link, LinkId};
use super::ssin::Ssin;

/// A read-only view of the register's current state. Lists come back ordered by link id (or by
/// code for the catalogue), so rules that pick "the first" are deterministic across stores.
pub trait RegisterView {
    /// Failure of the underlying store, as opposed to a rule the input broke.
    type Error;

    fn link(&self, id: LinkId) -> Result<Option<Link>, Self::Error>;

    fn links_by_ssin(&self, ssin: &Ssin) -> Result<Vec<Link>, Self::Error>;

    /// Links whose foreign key is exactly (country, key type, normalized value).
    fn links_by_foreign_key(
        &self,
        country: Country,
        key_type: &KeyTypeCode,
        normalized_value: &str,
    ) -> Result<Vec<Link>, Self::Error>;

    fn key_type(&self, code: &KeyTypeCode) -> Result<Option<KeyType>, Self::Error>;

    fn key_types(&self) -> Result<Vec<KeyType>, Self::Error>;

    /// The rule configured by the keeper, if any (the default applies otherwise).
    fn format_rule(
        &self,
        country: Country,
        key_type: &KeyTypeCode,
    ) -> Result<Option<FormatRule>, Self::Error>;

    fn format_rules(&self) -> Result<Vec<(Country, KeyTypeCode, FormatRule)>, Self::Error>;

    /// The id the next created link receives.
    fn next_link_id(&self) -> Result<LinkId, Self::Error>;
}
