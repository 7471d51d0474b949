//! Validity periods of links: calendar dates, both ends inclusive, either end open.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::Date;
use time::macros::format_description;

use super::error::{DomainError, Field};

/// `begin..=end`; `None` is unbounded on that side. The default, open on both sides, is a link
/// without a validity period: valid at any date.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidityPeriod {
    begin: Option<Date>,
    end: Option<Date>,
}

impl ValidityPeriod {
    pub fn new(begin: Option<Date>, end: Option<Date>) -> Result<ValidityPeriod, DomainError> {
        if let (Some(b), Some(e)) = (begin, end)
            && e < b
        {
            return Err(DomainError::InvalidPeriod {
                field: Field::ValidTo,
                begin: b.to_string(),
                end: e.to_string(),
            });
        }
        Ok(ValidityPeriod { begin, end })
    }

    /// Parses the two optional `YYYY-MM-DD` inputs of a request.
    pub fn parse(
        valid_from: Option<&str>,
        valid_to: Option<&str>,
    ) -> Result<ValidityPeriod, DomainError> {
        ValidityPeriod::new(
            parse_optional_date(Field::ValidFrom, valid_from)?,
            parse_optional_date(Field::ValidTo, valid_to)?,
        )
    }

    pub fn begin(&self) -> Option<Date> {
        self.begin
    }

    pub fn end(&self) -> Option<Date> {
        self.end
    }

    pub fn contains(&self, date: Date) -> bool {
        self.begin.is_none_or(|b| b <= date) && self.end.is_none_or(|e| date <= e)
    }

    /// True when at least one day lies in both periods.
    pub fn overlaps(&self, other: &ValidityPeriod) -> bool {
        let starts_before_other_ends = match (self.begin, other.end) {
            (Some(b), Some(e)) => b <= e,
            _ => true,
        };
        let other_starts_before_self_ends = match (other.begin, self.end) {
            (Some(b), Some(e)) => b <= e,
            _ => true,
        };
        starts_before_other_ends && other_starts_before_self_ends
    }
}

impl fmt::Display for ValidityPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = |d: Option<Date>| d.map(|d| d.to_string()).unwrap_or_else(|| "…".into());
        write!(f, "[{}, {}]", side(self.begin), side(self.end))
    }
}

/// A strict `YYYY-MM-DD` calendar date.
pub fn parse_date(field: Field, input: &str) -> Result<Date, DomainError> {
    let text = input.trim();
    let invalid = || DomainError::InvalidDate {
        field,
        value: input.to_string(),
    };
    // The format parser alone would also take a sign or a five-digit year.
    let shape = text.len() == 10
        && text.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if !shape {
        return Err(invalid());
    }
    Date::parse(text, format_description!("[year]-[month]-[day]")).map_err(|_| invalid())
}

/// An absent or blank input is no date: front ends differ in how they send "not given".
pub fn parse_optional_date(field: Field, input: Option<&str>) -> Result<Option<Date>, DomainError> {
    match input.map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => parse_date(field, text).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn p(b: Option<&str>, e: Option<&str>) -> ValidityPeriod {
        ValidityPeriod::parse(b, e).unwrap()
    }

    #[test]
    fn begin_must_not_follow_end() {
        assert!(ValidityPeriod::parse(Some("2020-01-01"), Some("2020-01-01")).is_ok());
        let err = ValidityPeriod::parse(Some("2020-01-02"), Some("2020-01-01")).unwrap_err();
        assert_eq!(err.code(), "INVALID_PERIOD");
        assert_eq!(err.field(), Some(Field::ValidTo));
    }

    #[test]
    fn dates_are_strict_and_name_their_field() {
        for bad in [
            "2020-1-01",
            "20200101",
            "2020-02-30",
            "+2020-01-01",
            "2020-13-01",
            "x",
        ] {
            let err = ValidityPeriod::parse(Some(bad), None).unwrap_err();
            assert_eq!(err.code(), "INVALID_DATE", "{bad}");
            assert_eq!(err.field(), Some(Field::ValidFrom));
            let err = ValidityPeriod::parse(None, Some(bad)).unwrap_err();
            assert_eq!(err.field(), Some(Field::ValidTo));
        }
        assert_eq!(p(Some(" "), Some("")), ValidityPeriod::default());
        assert_eq!(
            p(Some("2024-02-29"), None).begin(),
            Some(date!(2024 - 02 - 29))
        );
    }

    #[test]
    fn contains_is_inclusive_at_both_ends() {
        let period = p(Some("2020-01-01"), Some("2020-12-31"));
        assert!(!period.contains(date!(2019 - 12 - 31)));
        assert!(period.contains(date!(2020 - 01 - 01)));
        assert!(period.contains(date!(2020 - 12 - 31)));
        assert!(!period.contains(date!(2021 - 01 - 01)));
        assert!(ValidityPeriod::default().contains(date!(1800 - 01 - 01)));
        assert!(p(None, Some("2020-01-01")).contains(date!(1900 - 01 - 01)));
        assert!(!p(None, Some("2020-01-01")).contains(date!(2020 - 01 - 02)));
        assert!(p(Some("2020-01-01"), None).contains(date!(2999 - 01 - 01)));
    }

    #[test]
    fn overlaps_at_the_edges() {
        let y2020 = p(Some("2020-01-01"), Some("2020-12-31"));
        // Sharing a single day is an overlap; touching end-to-start across midnight is not.
        assert!(y2020.overlaps(&p(Some("2020-12-31"), Some("2021-12-31"))));
        assert!(!y2020.overlaps(&p(Some("2021-01-01"), Some("2021-12-31"))));
        assert!(y2020.overlaps(&p(Some("2019-01-01"), Some("2020-01-01"))));
        assert!(!y2020.overlaps(&p(Some("2019-01-01"), Some("2019-12-31"))));
        // Open ends.
        assert!(y2020.overlaps(&ValidityPeriod::default()));
        assert!(y2020.overlaps(&p(None, Some("2020-06-01"))));
        assert!(!y2020.overlaps(&p(None, Some("2019-12-31"))));
        assert!(!y2020.overlaps(&p(Some("2021-01-01"), None)));
        assert!(p(None, Some("2000-01-01")).overlaps(&p(None, Some("1990-01-01"))));
        assert!(!p(None, Some("2000-01-01")).overlaps(&p(Some("2000-01-02"), None)));
        // Containment, both ways, and symmetry.
        let june = p(Some("2020-06-01"), Some("2020-06-30"));
        assert!(y2020.overlaps(&june) && june.overlaps(&y2020));
    }
}
