//! Country of a foreign key: an ISO 3166-1 alpha-2 code, checked against the `celes` table.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An ISO 3166-1 alpha-2 code, stored uppercase.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Country([u8; 2]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not an ISO 3166-1 alpha-2 country code")]
pub struct UnknownCountry {
    pub input: String,
}

impl Country {
    /// Accepts any letter case and surrounding blanks.
    pub fn parse(input: &str) -> Result<Country, UnknownCountry> {
        let unknown = || UnknownCountry {
            input: input.to_string(),
        };
        let code = input.trim();
        // celes also resolves names and aliases in `from_str`; only the alpha-2 table is ours.
        if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(unknown());
        }
        let country = celes::Country::from_alpha2(code).map_err(|_| unknown())?;
        let bytes = country.alpha2.as_bytes();
        Ok(Country([
            bytes[0].to_ascii_uppercase(),
            bytes[1].to_ascii_uppercase(),
        ]))
    }

    pub fn code(&self) -> &str {
        // Only ASCII letters are ever stored (see `parse`).
        std::str::from_utf8(&self.0).unwrap_or("??")
    }

    /// The English short name, for people reading a listing.
    pub fn name(&self) -> &'static str {
        celes::Country::from_alpha2(self.code())
            .map(|c| c.long_name)
            .unwrap_or("")
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Debug for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Country({})", self.code())
    }
}

impl Serialize for Country {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Country {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Country::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_any_case_and_stores_uppercase() {
        for input in ["be", "BE", "Be", " nl "] {
            let c = Country::parse(input).expect(input);
            assert_eq!(c.code(), input.trim().to_uppercase());
        }
        assert_eq!(Country::parse("de").unwrap().name(), "Germany");
    }

    #[test]
    fn rejects_unknown_codes_names_and_alpha3() {
        for input in ["", "B", "XX", "ZZ", "BEL", "Belgium", "b1", "uk", "ÉÉ"] {
            let err = Country::parse(input).expect_err(input);
            assert_eq!(err.input, input);
        }
    }

    #[test]
    fn serde_round_trip_revalidates() {
        let c = Country::parse("fr").unwrap();
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, "\"FR\"");
        assert_eq!(serde_json::from_str::<Country>(&json).unwrap(), c);
        assert!(serde_json::from_str::<Country>("\"QQ\"").is_err());
    }
}
