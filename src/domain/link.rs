//! A link between an SSIN and a foreign key.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::caller::{Organization, Timestamp};
use super::foreign_key::ForeignKey;
use super::period::ValidityPeriod;
use super::ssin::Ssin;

/// Assigned by the state machine, in commit order, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LinkId(pub u64);

impl fmt::Display for LinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub id: LinkId,
    pub ssin: Ssin,
    pub foreign_key: ForeignKey,
    pub validity: ValidityPeriod,
    pub created_by: Organization,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// 1 at creation, bumped by every change of the validity period.
    pub version: u64,
}
