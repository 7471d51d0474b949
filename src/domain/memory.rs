//! An in-memory register: the reference implementation of [`RegisterView`] that rule tests run
//! against, and a model to compare the RocksDB store with.

use std::collections::BTreeMap;
use std::convert::Infallible;

use super::command::Command;
use super::country::Country;
use super::foreign_key::FormatRule;
use super::key_type::{KeyType, KeyTypeCode, seed_catalogue};
use super::link::{Link, LinkId};
use super::rules::{Change, Verdict, decide};
use super::ssin::Ssin;
use super::view::RegisterView;

#[derive(Debug, Clone)]
pub struct MemoryRegister {
    links: BTreeMap<LinkId, Link>,
    key_types: BTreeMap<KeyTypeCode, KeyType>,
    format_rules: BTreeMap<(Country, KeyTypeCode), FormatRule>,
    next_link_id: LinkId,
}

impl Default for MemoryRegister {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryRegister {
    /// An empty register with the seed catalogue, as a new cluster starts.
    pub fn new() -> Self {
        MemoryRegister {
            links: BTreeMap::new(),
            key_types: seed_catalogue()
                .into_iter()
                .map(|k| (k.code.clone(), k))
                .collect(),
            format_rules: BTreeMap::new(),
            next_link_id: LinkId(1),
        }
    }

    /// Decides the command and, when the verdict is a change, applies it.
    pub fn execute(&mut self, command: &Command) -> Verdict {
        let verdict = match decide(self, command) {
            Ok(verdict) => verdict,
            Err(never) => match never {},
        };
        if let Ok(decision) = &verdict
            && let Some(change) = &decision.change
        {
            self.apply(change);
        }
        verdict
    }

    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::LinkCreated { link } => self.insert_created(link),
            Change::LinksImported { links } => {
                for link in links {
                    self.insert_created(link);
                }
            }
            Change::LinkValidityChanged { after, .. } => {
                self.links.insert(after.id, after.clone());
            }
            Change::LinkDeleted { link, .. } => {
                self.links.remove(&link.id);
            }
            Change::KeyTypeAdded { key_type }
            | Change::KeyTypeActiveChanged {
                after: key_type, ..
            } => {
                self.key_types
                    .insert(key_type.code.clone(), key_type.clone());
            }
            Change::FormatRuleSet {
                country,
                key_type,
                after,
                ..
            } => {
                let key = (*country, key_type.clone());
                match after {
                    Some(rule) => self.format_rules.insert(key, rule.clone()),
                    None => self.format_rules.remove(&key),
                };
            }
        }
    }

    fn insert_created(&mut self, link: &Link) {
        self.next_link_id = LinkId(self.next_link_id.0.max(link.id.0 + 1));
        self.links.insert(link.id, link.clone());
    }

    pub fn links(&self) -> impl Iterator<Item = &Link> {
        self.links.values()
    }
}

impl RegisterView for MemoryRegister {
    type Error = Infallible;

    fn link(&self, id: LinkId) -> Result<Option<Link>, Infallible> {
        Ok(self.links.get(&id).cloned())
    }

    fn links_by_ssin(&self, ssin: &Ssin) -> Result<Vec<Link>, Infallible> {
        Ok(self
            .links
            .values()
            .filter(|l| l.ssin == *ssin)
            .cloned()
            .collect())
    }

    fn links_by_foreign_key(
        &self,
        country: Country,
        key_type: &KeyTypeCode,
        normalized_value: &str,
    ) -> Result<Vec<Link>, Infallible> {
        Ok(self
            .links
            .values()
            .filter(|l| {
                let fk = &l.foreign_key;
                fk.country == country
                    && fk.key_type == *key_type
                    && fk.value.normalized() == normalized_value
            })
            .cloned()
            .collect())
    }

    fn key_type(&self, code: &KeyTypeCode) -> Result<Option<KeyType>, Infallible> {
        Ok(self.key_types.get(code).cloned())
    }

    fn key_types(&self) -> Result<Vec<KeyType>, Infallible> {
        Ok(self.key_types.values().cloned().collect())
    }

    fn format_rule(
        &self,
        country: Country,
        key_type: &KeyTypeCode,
    ) -> Result<Option<FormatRule>, Infallible> {
        Ok(self.format_rules.get(&(country, key_type.clone())).cloned())
    }

    fn format_rules(&self) -> Result<Vec<(Country, KeyTypeCode, FormatRule)>, Infallible> {
        Ok(self
            .format_rules
            .iter()
            .map(|((c, k), r)| (*c, k.clone(), r.clone()))
            .collect())
    }

    fn next_link_id(&self) -> Result<LinkId, Infallible> {
        Ok(self.next_link_id)
    }
}
