//! Who asks, and when. Both travel inside every replicated command so that applying it later,
//! on any node, needs neither a session nor a clock.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::{Date, Duration, OffsetDateTime};

use super::error::{DomainError, Field, TextRule};

/// What a caller may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Search and get.
    Reader,
    /// Also create links and update their validity.
    Writer,
    /// The register keeper: also delete links, maintain the key-type catalogue and format rules,
    /// administer the cluster.
    Keeper,
}

impl Role {
    pub fn allows(self, required: Role) -> bool {
        self >= required
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Keeper => "keeper",
        }
    }

    pub fn parse(input: &str) -> Option<Role> {
        match input.trim().to_ascii_lowercase().as_str() {
            "reader" => Some(Role::Reader),
            "writer" => Some(Role::Writer),
            "keeper" => Some(Role::Keeper),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Belgian enterprise number (KBO/BCE/CBE): ten digits starting with 0 or 1, the last two being
/// 97 − (first eight mod 97).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CbeNumber(String);

impl CbeNumber {
    /// Accepts the usual spellings: `0123.456.749`, `BE 0123 456 749`, `0123456749`.
    pub fn parse(input: &str) -> Result<CbeNumber, DomainError> {
        let invalid = || DomainError::InvalidCbeNumber {
            field: Field::CbeNumber,
            value: input.to_string(),
        };
        let text = input.trim();
        let text = text
            .strip_prefix("BE")
            .or_else(|| text.strip_prefix("be"))
            .unwrap_or(text);
        let digits: String = text.chars().filter(|c| !matches!(c, '.' | ' ')).collect();
        if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        if !digits.starts_with(['0', '1']) {
            return Err(invalid());
        }
        let head: u64 = digits[..8].parse().map_err(|_| invalid())?;
        let check: u64 = digits[8..].parse().map_err(|_| invalid())?;
        if 97 - head % 97 != check {
            return Err(invalid());
        }
        Ok(CbeNumber(digits))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CbeNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", &self.0[..4], &self.0[4..7], &self.0[7..])
    }
}

impl fmt::Debug for CbeNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CbeNumber({})", self.0)
    }
}

impl Serialize for CbeNumber {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for CbeNumber {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        CbeNumber::parse(&text).map_err(serde::de::Error::custom)
    }
}

pub const ORGANIZATION_NAME_MAX: usize = 200;

/// An institution or service integrator that calls the register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Organization {
    pub name: String,
    pub cbe: CbeNumber,
}

impl Organization {
    pub fn new(name: &str, cbe: &str) -> Result<Organization, DomainError> {
        let name = TextRule::check(Field::Organization, name, ORGANIZATION_NAME_MAX, false)?;
        Ok(Organization {
            name,
            cbe: CbeNumber::parse(cbe)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub organization: Organization,
    pub role: Role,
}

/// Milliseconds since the Unix epoch, UTC. Chosen by the node that accepts a command, before it
/// is replicated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn from_datetime(at: OffsetDateTime) -> Timestamp {
        Timestamp((at.unix_timestamp_nanos() / 1_000_000) as i64)
    }

    pub fn to_datetime(self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// The latest calendar date it can be in Belgium at this instant (UTC+2 in summer): birth
    /// dates up to this day are not "in the future". Being a day lenient for an hour in winter
    /// is harmless; refusing a newborn registered just after midnight would not be.
    pub fn belgian_date_bound(self) -> Date {
        (self.to_datetime() + Duration::hours(2)).date()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.to_datetime();
        match at.format(&time::format_description::well_known::Rfc3339) {
            Ok(text) => f.write_str(&text),
            Err(_) => write!(f, "{}ms", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    #[test]
    fn cbe_numbers_are_checked() {
        for ok in [
            "0123456749",
            "0123.456.749",
            "BE 0123.456.749",
            "be0123456749",
        ] {
            assert_eq!(CbeNumber::parse(ok).unwrap().as_str(), "0123456749", "{ok}");
        }
        for bad in [
            "0123456748",
            "2123456749",
            "012345674",
            "01234567490",
            "0123x56749",
            "",
        ] {
            let err = CbeNumber::parse(bad).expect_err(bad);
            assert_eq!(err.code(), "INVALID_CBE_NUMBER");
            assert_eq!(err.field(), Some(Field::CbeNumber));
        }
        assert_eq!(
            CbeNumber::parse("0123456749").unwrap().to_string(),
            "0123.456.749"
        );
    }

    #[test]
    fn roles_include_the_lower_ones() {
        assert!(Role::Keeper.allows(Role::Writer) && Role::Keeper.allows(Role::Reader));
        assert!(Role::Writer.allows(Role::Reader) && !Role::Writer.allows(Role::Keeper));
        assert!(!Role::Reader.allows(Role::Writer));
        assert_eq!(Role::parse(" Keeper "), Some(Role::Keeper));
        assert_eq!(Role::parse("admin"), None);
    }

    #[test]
    fn organizations_need_a_name() {
        let err = Organization::new("  ", "0123456749").unwrap_err();
        assert_eq!(err.field(), Some(Field::Organization));
        assert_eq!(
            Organization::new(" RIZIV ", "0123456749").unwrap().name,
            "RIZIV"
        );
    }

    #[test]
    fn belgian_date_bound_runs_ahead_of_utc() {
        let t = Timestamp::from_datetime(datetime!(2026-06-30 22:30 UTC));
        assert_eq!(t.belgian_date_bound(), date!(2026 - 07 - 01));
        let t = Timestamp::from_datetime(datetime!(2026-06-30 21:59 UTC));
        assert_eq!(t.belgian_date_bound(), date!(2026 - 06 - 30));
        assert_eq!(t.to_string(), "2026-06-30T21:59:00Z");
    }
}
