//! The Belgian social-security identification number (SSIN, INSZ/NISS).
//!
//! ```text
//!   Y Y M M D D C C C K K
//!   └┬┘ └┬┘ └┬┘ └─┬─┘ └┬┘
//!  year month day counter check = 97 − (first nine digits mod 97)
//!        │                         (prefixed with 2 for births from 2000)
//!        ├ 00–12  national register number (00: month unknown)
//!        ├ 20–32  BIS number, sex unknown   (month + 20)
//!        └ 40–52  BIS number, sex known     (month + 40)
//! ```
//!
//! Where the public rule sets disagree (python-stdnum accepts impossible days and ignores the
//! counter; the belgif validator rejects them), we follow belgif: a complete date must exist, a
//! national register number's counter is never 000 or 999, and a birth date cannot lie in the
//! future. "Future" needs a notion of today, which the caller supplies: the domain reads no clock.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::{Date, Month};

/// A valid SSIN, kept as its 11 normalized digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ssin([u8; 11]);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SsinKind {
    /// Rijksregisternummer / numéro de registre national.
    NationalRegister,
    /// Number of the Crossroads Bank register (BIS), for people not in the national register.
    Bis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sex {
    Male,
    Female,
}

/// A birth date of which the month and the day may be unknown (encoded as 00).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BirthDate {
    pub year: i32,
    pub month: Option<u8>,
    pub day: Option<u8>,
}

/// The rule an SSIN broke. Each carries what a person needs to fix the input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum SsinRule {
    #[error("only digits and the separators '.', '-' and space are allowed, found {found:?}")]
    Characters { found: char },
    #[error("an SSIN has 11 digits, found {found}")]
    Length { found: usize },
    #[error("check digits {found:02} do not match the first nine digits")]
    Checksum { found: u8 },
    #[error("month {found:02} is none of 00-12 (national register) or 20-32, 40-52 (BIS)")]
    Month { found: u8 },
    #[error("day {found:02} is greater than 31")]
    Day { found: u8 },
    #[error("birth date {year:04}-{month:02}-{day:02} does not exist")]
    Date { year: i32, month: u8, day: u8 },
    #[error("counter {found:03} is not allowed in a national register number")]
    Counter { found: u16 },
    #[error("birth date {birth} lies after {today}")]
    FutureDate { birth: String, today: String },
}

impl SsinRule {
    /// Stable name of the rule, for machine-readable output.
    pub fn name(&self) -> &'static str {
        match self {
            SsinRule::Characters { .. } => "characters",
            SsinRule::Length { .. } => "length",
            SsinRule::Checksum { .. } => "checksum",
            SsinRule::Month { .. } => "month",
            SsinRule::Day { .. } => "day",
            SsinRule::Date { .. } => "date",
            SsinRule::Counter { .. } => "counter",
            SsinRule::FutureDate { .. } => "future_date",
        }
    }
}

const SEPARATORS: [char; 3] = ['.', '-', ' '];
/// 2·10⁹: the `2` put in front of the nine digits for births from 2000 on.
const MILLENNIUM_PREFIX: u64 = 2_000_000_000;

fn check_digits(nine: u64, born_2000_or_later: bool) -> u8 {
    let base = if born_2000_or_later {
        MILLENNIUM_PREFIX + nine
    } else {
        nine
    };
    // A remainder of 0 gives 97, never 00.
    (97 - base % 97) as u8
}

fn number(digits: &[u8]) -> u64 {
    digits.iter().fold(0, |n, d| n * 10 + u64::from(*d))
}

impl Ssin {
    /// Parses an SSIN as people type it and applies every rule, with `today` bounding the birth date.
    pub fn parse(input: &str, today: Date) -> Result<Ssin, SsinRule> {
        let digits = Self::digits(input)?;
        let ssin = Self::structural(digits)?;
        let birth = ssin.birth_date();
        if birth.is_after(today) {
            return Err(SsinRule::FutureDate {
                birth: birth.to_string(),
                today: today.to_string(),
            });
        }
        Ok(ssin)
    }

    /// Builds the SSIN for the given fields, computing its check digits. `encoded_month` is the
    /// month as it appears in the number (so +20 or +40 for BIS). Used by data generators; every
    /// rule except the future-date one (which needs a today) is applied.
    pub fn compose(year: i32, encoded_month: u8, day: u8, counter: u16) -> Result<Ssin, SsinRule> {
        if !(1900..=2099).contains(&year) {
            return Err(SsinRule::Date {
                year,
                month: encoded_month % 20,
                day,
            });
        }
        if encoded_month > 99 {
            return Err(SsinRule::Month {
                found: encoded_month,
            });
        }
        if day > 99 {
            return Err(SsinRule::Day { found: day });
        }
        if counter > 999 {
            return Err(SsinRule::Counter { found: counter });
        }
        let yy = (year % 100) as u64;
        let nine = yy * 10_000_000
            + u64::from(encoded_month) * 100_000
            + u64::from(day) * 1000
            + u64::from(counter);
        let check = u64::from(check_digits(nine, year >= 2000));
        let full = nine * 100 + check;
        let mut digits = [0u8; 11];
        let mut rest = full;
        for slot in digits.iter_mut().rev() {
            *slot = (rest % 10) as u8;
            rest /= 10;
        }
        Self::structural(digits)
    }

    fn digits(input: &str) -> Result<[u8; 11], SsinRule> {
        let mut digits = [0u8; 11];
        let mut count = 0usize;
        for c in input.trim().chars() {
            if SEPARATORS.contains(&c) {
                continue;
            }
            let d = c.to_digit(10).ok_or(SsinRule::Characters { found: c })?;
            if count < digits.len() {
                digits[count] = d as u8;
            }
            count += 1;
        }
        if count != digits.len() {
            return Err(SsinRule::Length { found: count });
        }
        Ok(digits)
    }

    /// Every rule that does not depend on the current date.
    fn structural(digits: [u8; 11]) -> Result<Ssin, SsinRule> {
        let ssin = Ssin(digits);
        let nine = number(&digits[..9]);
        let check = number(&digits[9..]) as u8;
        // At most one century can match: 2·10⁹ is not a multiple of 97.
        if check != check_digits(nine, false) && check != check_digits(nine, true) {
            return Err(SsinRule::Checksum { found: check });
        }
        let mm = ssin.encoded_month();
        if !matches!(mm, 0..=12 | 20..=32 | 40..=52) {
            return Err(SsinRule::Month { found: mm });
        }
        let dd = number(&digits[4..6]) as u8;
        if dd > 31 {
            return Err(SsinRule::Day { found: dd });
        }
        let birth = ssin.birth_date();
        if let (Some(month), Some(day)) = (birth.month, birth.day)
            && birth.as_date().is_none()
        {
            return Err(SsinRule::Date {
                year: birth.year,
                month,
                day,
            });
        }
        let counter = ssin.counter();
        if ssin.kind() == SsinKind::NationalRegister && (counter == 0 || counter == 999) {
            return Err(SsinRule::Counter { found: counter });
        }
        Ok(ssin)
    }

    fn encoded_month(&self) -> u8 {
        number(&self.0[2..4]) as u8
    }

    fn counter(&self) -> u16 {
        number(&self.0[6..9]) as u16
    }

    fn born_2000_or_later(&self) -> bool {
        number(&self.0[9..]) as u8 != check_digits(number(&self.0[..9]), false)
    }

    pub fn kind(&self) -> SsinKind {
        if self.encoded_month() >= 20 {
            SsinKind::Bis
        } else {
            SsinKind::NationalRegister
        }
    }

    pub fn birth_date(&self) -> BirthDate {
        let century = if self.born_2000_or_later() {
            2000
        } else {
            1900
        };
        let month = self.encoded_month() % 20;
        let day = number(&self.0[4..6]) as u8;
        BirthDate {
            year: century + number(&self.0[..2]) as i32,
            month: (month != 0).then_some(month),
            day: (day != 0).then_some(day),
        }
    }

    /// The sex, where the number encodes it: always for national register numbers, and for BIS
    /// numbers whose month was raised by 40. An odd counter is male.
    pub fn sex(&self) -> Option<Sex> {
        let mm = self.encoded_month();
        if (20..40).contains(&mm) {
            return None;
        }
        Some(if self.counter() % 2 == 1 {
            Sex::Male
        } else {
            Sex::Female
        })
    }

    /// The 11 digits as ASCII bytes: the form storage keys use.
    pub fn ascii(&self) -> [u8; 11] {
        self.0.map(|d| b'0' + d)
    }

    /// The 11 digits as a string.
    pub fn as_str(&self) -> String {
        self.0.iter().map(|d| char::from(b'0' + d)).collect()
    }

    /// The usual printed form, `YY.MM.DD-CCC.KK`.
    pub fn formatted(&self) -> String {
        let s = self.as_str();
        format!(
            "{}.{}.{}-{}.{}",
            &s[0..2],
            &s[2..4],
            &s[4..6],
            &s[6..9],
            &s[9..11]
        )
    }
}

impl BirthDate {
    /// The full date, when month and day are known and the date exists.
    pub fn as_date(&self) -> Option<Date> {
        let month = Month::try_from(self.month?).ok()?;
        Date::from_calendar_date(self.year, month, self.day?).ok()
    }

    /// True when even the earliest date this partial date can stand for lies after `today`.
    pub fn is_after(&self, today: Date) -> bool {
        let known = (self.year, self.month.unwrap_or(1), self.day.unwrap_or(1));
        let now = (today.year(), u8::from(today.month()), today.day());
        match (self.month, self.day) {
            (Some(_), Some(_)) => known > now,
            (Some(_), None) => (known.0, known.1) > (now.0, now.1),
            (None, _) => known.0 > now.0,
        }
    }
}

impl fmt::Display for BirthDate {
    /// `YYYY-MM-DD`, `YYYY-MM` or `YYYY` as far as the date is known (a day without a month
    /// carries no meaning and is left out).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}", self.year)?;
        if let Some(month) = self.month {
            write!(f, "-{month:02}")?;
            if let Some(day) = self.day {
                write!(f, "-{day:02}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Ssin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

impl fmt::Debug for Ssin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ssin({self})")
    }
}

impl fmt::Display for SsinKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SsinKind::NationalRegister => "national_register",
            SsinKind::Bis => "bis",
        })
    }
}

impl fmt::Display for Sex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Sex::Male => "male",
            Sex::Female => "female",
        })
    }
}

/// Stored SSINs were validated when written; reading them back re-checks structure (a corrupted
/// value must not pass) but not the future-date rule, whose "today" has moved on.
impl FromStr for Ssin {
    type Err = SsinRule;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::structural(Self::digits(s)?)
    }
}

impl Serialize for Ssin {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.as_str())
    }
}

impl<'de> Deserialize<'de> for Ssin {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::date;

    /// Fixed, so that no test depends on the day it runs.
    const TODAY: Date = date!(2026 - 12 - 03);

    fn parse(s: &str) -> Result<Ssin, SsinRule> {
        Ssin::parse(s, TODAY)
    }

    #[test]
    fn valid_national_register_numbers() {
        let cases = [
            ("85073003328", "1985-07-30", Some(Sex::Male)),
            ("17073003384", "2017-07-30", Some(Sex::Male)),
            ("75060898009", "1975-06-08", Some(Sex::Female)),
            ("00000100166", "1900", Some(Sex::Male)),
            ("85.07.30-033.28", "1985-07-30", Some(Sex::Male)),
        ];
        for (input, birth, sex) in cases {
            let ssin = parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(ssin.kind(), SsinKind::NationalRegister, "{input}");
            assert_eq!(ssin.birth_date().to_string(), birth, "{input}");
            assert_eq!(ssin.sex(), sex, "{input}");
        }
        assert_eq!(parse("85.07.30-033.28").unwrap().as_str(), "85073003328");
        assert_eq!(
            parse(" 85 07 30 033 28 ").unwrap().formatted(),
            "85.07.30-033.28"
        );
        let wholly_unknown = parse("00000100166").unwrap().birth_date();
        assert_eq!((wholly_unknown.month, wholly_unknown.day), (None, Some(1)));
    }

    #[test]
    fn valid_bis_numbers() {
        let cases = [
            ("98472899765", "1998-07-28", Some(Sex::Male)),
            ("01490700185", "2001-09-07", Some(Sex::Male)),
            ("75460898095", "1975-06-08", Some(Sex::Female)),
            ("75260898052", "1975-06-08", None),
        ];
        for (input, birth, sex) in cases {
            let ssin = parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(ssin.kind(), SsinKind::Bis, "{input}");
            assert_eq!(ssin.birth_date().to_string(), birth, "{input}");
            assert_eq!(ssin.sex(), sex, "{input}");
        }
    }

    #[test]
    fn invalid_numbers_name_the_rule() {
        let cases = [
            ("12345678901", "checksum"),
            ("85133000105", "month"),
            ("81022903534", "date"),
            ("8507300332", "length"),
            ("850730033280", "length"),
            ("", "length"),
            ("85O73003328", "characters"),
            ("85/07/30/033/28", "characters"),
        ];
        for (input, rule) in cases {
            let err = parse(input).expect_err(input);
            assert_eq!(err.name(), rule, "{input}: {err}");
        }
        assert_eq!(
            parse("85133000105").unwrap_err(),
            SsinRule::Month { found: 13 }
        );
        assert_eq!(
            parse("81022903534").unwrap_err(),
            SsinRule::Date {
                year: 1981,
                month: 2,
                day: 29
            }
        );
    }

    fn composed(year: i32, mm: u8, dd: u8, counter: u16) -> String {
        Ssin::compose(year, mm, dd, counter)
            .map(|s| s.as_str())
            .unwrap_or_else(|e| panic!("{year}-{mm}-{dd}/{counter}: {e}"))
    }

    #[test]
    fn structural_rules_beyond_the_vectors() {
        // Months 33-39 and 53+ belong to no kind; days above 31 to no month.
        for mm in [13, 19, 33, 39, 53, 99] {
            let nine = format!("85{mm:02}01001");
            let n: u64 = nine.parse().unwrap();
            let s = format!("{nine}{:02}", 97 - n % 97);
            assert_eq!(parse(&s).unwrap_err(), SsinRule::Month { found: mm }, "{s}");
        }
        let n: u64 = 850_132_001;
        assert_eq!(
            parse(&format!("{n}{:02}", 97 - n % 97)).unwrap_err(),
            SsinRule::Day { found: 32 }
        );
        // 1900 was no leap year, 2000 was.
        assert!(Ssin::compose(1900, 2, 29, 1).is_err());
        assert!(parse(&composed(2000, 2, 29, 1)).is_ok());
        assert!(
            parse(&composed(2000, 42, 29, 1)).is_ok(),
            "BIS follows the same calendar"
        );
        // Unknown parts.
        assert!(parse(&composed(1985, 7, 0, 33)).is_ok());
        assert!(parse(&composed(1985, 0, 0, 33)).is_ok());
        assert!(
            parse(&composed(1985, 0, 31, 33)).is_ok(),
            "day of an unknown month"
        );
        assert!(parse(&composed(1985, 20, 0, 33)).is_ok());
        assert!(parse(&composed(1985, 40, 0, 33)).is_ok());
    }

    #[test]
    fn counters_000_and_999_only_for_bis() {
        for counter in [0, 999] {
            let nn = Ssin::compose(1985, 7, 30, counter).unwrap_err();
            assert_eq!(nn, SsinRule::Counter { found: counter });
            assert_eq!(nn.name(), "counter");
            assert!(parse(&composed(1985, 27, 30, counter)).is_ok());
            assert!(parse(&composed(1985, 47, 30, counter)).is_ok());
        }
    }

    #[test]
    fn remainder_zero_gives_check_digits_97() {
        let counter = (1..999u16)
            .find(|c| (850_730_000 + u64::from(*c)) % 97 == 0)
            .expect("some counter makes the nine digits a multiple of 97");
        let valid = composed(1985, 7, 30, counter);
        assert!(valid.ends_with("97"), "{valid}");
        assert!(parse(&valid).is_ok());
        let zero = format!("{}00", &valid[..9]);
        assert_eq!(parse(&zero).unwrap_err().name(), "checksum");
    }

    #[test]
    fn birth_date_may_not_lie_after_today() {
        assert!(parse(&composed(2026, 12, 3, 1)).is_ok());
        assert!(parse(&composed(2026, 12, 0, 1)).is_ok());
        assert!(parse(&composed(2026, 0, 0, 1)).is_ok());
        assert!(parse(&composed(2026, 52, 3, 1)).is_ok());
        for (y, m, d) in [
            (2026, 12, 4),
            (2027, 1, 1),
            (2027, 0, 0),
            (2027, 1, 0),
            (2099, 40, 0),
        ] {
            let err = parse(&composed(y, m, d, 1)).unwrap_err();
            assert_eq!(err.name(), "future_date", "{y}-{m}-{d}");
        }
        // The same number becomes valid once its day has come.
        let s = composed(2026, 12, 4, 1);
        assert!(Ssin::parse(&s, date!(2026 - 12 - 04)).is_ok());
        // Stored numbers are read back without the future-date rule.
        assert!(s.parse::<Ssin>().is_ok());
    }

    #[test]
    fn changing_the_year_digit_by_six_can_move_a_number_to_the_other_century() {
        // 2·10⁹ ≡ −6·10⁷ (mod 97): lowering the second digit by 6 keeps the check digits valid
        // for the 2000s. So "every single-digit change is rejected" holds within a century
        // only; this is the scheme's property, not a bug of ours.
        let s1926 = composed(1926, 5, 10, 123);
        let mut flipped = s1926.clone();
        flipped.replace_range(1..2, "0");
        let other = parse(&flipped).expect("valid in the 2000s");
        assert_eq!(other.birth_date().to_string(), "2020-05-10");
        assert_eq!(parse(&s1926).unwrap().birth_date().year, 1926);
    }

    #[test]
    fn serde_keeps_the_digits_and_rejects_corruption() {
        let ssin = parse("85.07.30-033.28").unwrap();
        let json = serde_json::to_string(&ssin).unwrap();
        assert_eq!(json, "\"85073003328\"");
        assert_eq!(serde_json::from_str::<Ssin>(&json).unwrap(), ssin);
        assert!(serde_json::from_str::<Ssin>("\"85073003329\"").is_err());
    }

    /// Our own check-digit computation, written independently of the code under test.
    fn oracle(year: i32, mm: u8, dd: u8, counter: u16) -> String {
        let nine = format!("{:02}{mm:02}{dd:02}{counter:03}", year % 100);
        let base: u64 = if year >= 2000 {
            format!("2{nine}").parse().unwrap()
        } else {
            nine.parse().unwrap()
        };
        format!("{nine}{:02}", 97 - base % 97)
    }

    prop_compose! {
        /// (year, encoded month, day, counter) of a valid SSIN born before TODAY.
        fn valid_fields()(
            year in 1900i32..=2025,
            kind in 0u8..3,
            month in prop::option::weighted(0.9, 1u8..=12),
            day_seed in prop::option::weighted(0.9, 0u8..31),
            counter_seed in 0u16..1000,
        ) -> (i32, u8, u8, u16) {
            let day = match (month, day_seed) {
                (_, None) => 0,
                (Some(m), Some(seed)) => {
                    let length = Month::try_from(m).unwrap().length(year);
                    1 + seed % length
                }
                (None, Some(seed)) => 1 + seed,
            };
            let encoded = month.unwrap_or(0) + [0, 20, 40][usize::from(kind)];
            let counter = if kind == 0 { 1 + counter_seed % 998 } else { counter_seed % 1000 };
            (year, encoded, day, counter)
        }
    }

    proptest! {
        #[test]
        fn generated_numbers_always_validate((year, mm, dd, counter) in valid_fields()) {
            let text = oracle(year, mm, dd, counter);
            let ssin = parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            prop_assert_eq!(ssin.as_str(), text.clone());
            prop_assert_eq!(Ssin::compose(year, mm, dd, counter).unwrap(), ssin);
            let birth = ssin.birth_date();
            prop_assert_eq!(birth.year, year);
            prop_assert_eq!(birth.month.unwrap_or(0), mm % 20);
            prop_assert_eq!(birth.day.unwrap_or(0), dd);
            prop_assert_eq!(ssin.kind() == SsinKind::Bis, mm >= 20);
            prop_assert_eq!(ssin.sex().is_none(), (20..40).contains(&mm));
            // Any spelling with separators is the same number.
            let spaced = format!("{}.{}.{}-{}.{}", &text[..2], &text[2..4], &text[4..6], &text[6..9], &text[9..]);
            prop_assert_eq!(parse(&spaced).unwrap(), ssin);
        }

        #[test]
        fn single_digit_changes_are_rejected_within_a_century(
            (year, mm, dd, counter) in valid_fields()
        ) {
            let text = oracle(year, mm, dd, counter);
            let original = parse(&text).unwrap();
            let century = original.birth_date().year / 100;
            for position in 0..11 {
                for digit in b'0'..=b'9' {
                    let mut bytes = text.clone().into_bytes();
                    if bytes[position] == digit {
                        continue;
                    }
                    bytes[position] = digit;
                    let changed = String::from_utf8(bytes).unwrap();
                    if let Ok(other) = parse(&changed) {
                        // Only the cross-century coincidence documented above may pass.
                        prop_assert_ne!(
                            other.birth_date().year / 100, century,
                            "{} -> {} accepted in the same century", text, changed
                        );
                    }
                }
            }
        }
    }
}
