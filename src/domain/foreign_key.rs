//! Foreign keys (country, key type, value) and the per-(country, key type) format rules their
//! values must follow.
//!
//! A value is kept twice: as entered, for display, and normalized, for matching. Two values that
//! only differ in blanks, dots, hyphens, slashes or letter case are the same key
//! (`AB 12.34-5/6` and `ab12345 6` both match as `AB123456`).

use std::fmt;

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

use super::country::Country;
use super::error::{DomainError, Field, ForeignKeyRule, FormatRuleRule};
use super::key_type::KeyTypeCode;

/// Longest value accepted, counted in characters of the value as entered.
pub const VALUE_MAX: usize = 64;
/// A format rule's pattern is a short expression written by the keeper, not a program.
pub const PATTERN_MAX: usize = 256;
/// Compiled-size cap so a pathological pattern cannot make every create slow.
const REGEX_SIZE_LIMIT: usize = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForeignKeyValue {
    entered: String,
    normalized: String,
}

impl ForeignKeyValue {
    /// Applies the rules every value follows whatever its country and type.
    pub fn parse(input: &str) -> Result<ForeignKeyValue, DomainError> {
        let err = |rule| DomainError::InvalidForeignKey {
            field: Field::Value,
            rule,
        };
        let entered = input.trim();
        if entered.chars().count() > VALUE_MAX {
            return Err(err(ForeignKeyRule::TooLong { max: VALUE_MAX }));
        }
        if !entered.chars().all(printable) {
            return Err(err(ForeignKeyRule::ControlCharacter));
        }
        let normalized = normalize(entered);
        if normalized.is_empty() {
            return Err(err(ForeignKeyRule::Empty));
        }
        Ok(ForeignKeyValue {
            entered: entered.to_string(),
            normalized,
        })
    }

    pub fn entered(&self) -> &str {
        &self.entered
    }

    pub fn normalized(&self) -> &str {
        &self.normalized
    }
}

/// Control characters, and the invisible format characters (zero-width spaces and joiners,
/// direction marks, byte-order mark) that copy-paste smuggles into identifiers and that would make
/// two keys look equal but never match.
fn printable(c: char) -> bool {
    !c.is_control()
        && !matches!(
            c,
            '\u{00AD}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}'
        )
}

/// The matching form of a value: separators people type inconsistently are dropped, letters
/// uppercased.
pub fn normalize(value: &str) -> String {
    value
        .chars()
        .filter(|c| !(c.is_whitespace() || matches!(c, '.' | '-' | '/')))
        .flat_map(char::to_uppercase)
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForeignKey {
    pub country: Country,
    pub key_type: KeyTypeCode,
    pub value: ForeignKeyValue,
}

/// A regular expression that must match the whole normalized value. Kept as source text (what
/// the keeper wrote and what is stored) together with its compiled form.
#[derive(Clone)]
pub struct Pattern {
    source: String,
    regex: Regex,
}

/// Patterns already compiled, by source. Every create reads its format rule (or the default),
/// and compiling the regex each time was most of the cost of an import (found by profiling: a
/// DFA built per row). The set of patterns is the keeper's, so small; the bound is a guard.
static COMPILED: LazyLock<Mutex<HashMap<String, Regex>>> = LazyLock::new(Mutex::default);
const COMPILED_MAX: usize = 1024;

fn compiled(source: &str) -> Result<Regex, regex::Error> {
    if let Some(regex) = COMPILED.lock().ok().and_then(|c| c.get(source).cloned()) {
        return Ok(regex);
    }
    // Anchored here so the keeper cannot forget to: an unanchored `[0-9]{8}` would accept
    // any value that merely contains eight digits.
    let regex = RegexBuilder::new(&format!("^(?:{source})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()?;
    if let Ok(mut cache) = COMPILED.lock()
        && cache.len() < COMPILED_MAX
    {
        cache.insert(source.to_string(), regex.clone());
    }
    Ok(regex)
}

impl Pattern {
    pub fn parse(source: &str) -> Result<Pattern, DomainError> {
        let err = |rule| DomainError::InvalidFormatRule {
            field: Field::Pattern,
            rule,
        };
        if source.chars().count() > PATTERN_MAX {
            return Err(err(FormatRuleRule::PatternTooLong { max: PATTERN_MAX }));
        }
        let regex = compiled(source).map_err(|e| {
            err(FormatRuleRule::Regex {
                reason: e.to_string(),
            })
        })?;
        Ok(Pattern {
            source: source.to_string(),
            regex,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn is_match(&self, normalized: &str) -> bool {
        self.regex.is_match(normalized)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Pattern {}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.source)
    }
}

impl Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Pattern::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Allowed shape of the normalized values of one (country, key type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormatRule {
    pub min_length: u16,
    pub max_length: u16,
    pub pattern: Option<Pattern>,
}

impl FormatRule {
    pub fn new(
        min_length: u16,
        max_length: u16,
        pattern: Option<&str>,
    ) -> Result<FormatRule, DomainError> {
        let max = VALUE_MAX as u16;
        let range = |field| DomainError::InvalidFormatRule {
            field,
            rule: FormatRuleRule::LengthRange { max },
        };
        if !(1..=max).contains(&min_length) {
            return Err(range(Field::MinLength));
        }
        if !(1..=max).contains(&max_length) {
            return Err(range(Field::MaxLength));
        }
        if min_length > max_length {
            return Err(DomainError::InvalidFormatRule {
                field: Field::MaxLength,
                rule: FormatRuleRule::MinAboveMax {
                    min: min_length,
                    max: max_length,
                },
            });
        }
        let pattern = match pattern.map(str::trim) {
            None | Some("") => None,
            Some(source) => Some(Pattern::parse(source)?),
        };
        Ok(FormatRule {
            min_length,
            max_length,
            pattern,
        })
    }

    /// The rule for every (country, key type) the keeper has not configured: at least five
    /// characters, at least one of them a digit (the CBSS register's documented default).
    pub fn default_rule() -> FormatRule {
        FormatRule {
            min_length: 5,
            max_length: VALUE_MAX as u16,
            pattern: Some(Pattern::parse(".*[0-9].*").expect("the default pattern compiles")),
        }
    }

    pub fn check(
        &self,
        country: Country,
        key_type: &KeyTypeCode,
        value: &ForeignKeyValue,
    ) -> Result<(), DomainError> {
        let normalized = value.normalized();
        let found = normalized.chars().count();
        let rule = if found < usize::from(self.min_length) {
            Some(ForeignKeyRule::TooShort {
                found,
                min: self.min_length,
                country: country.to_string(),
                key_type: key_type.to_string(),
            })
        } else if found > usize::from(self.max_length) {
            Some(ForeignKeyRule::TooLongForFormat {
                found,
                max: self.max_length,
                country: country.to_string(),
                key_type: key_type.to_string(),
            })
        } else {
            self.pattern
                .as_ref()
                .filter(|p| !p.is_match(normalized))
                .map(|p| ForeignKeyRule::Pattern {
                    normalized: normalized.to_string(),
                    pattern: p.as_str().to_string(),
                    country: country.to_string(),
                    key_type: key_type.to_string(),
                })
        };
        match rule {
            Some(rule) => Err(DomainError::InvalidForeignKey {
                field: Field::Value,
                rule,
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be() -> Country {
        Country::parse("BE").unwrap()
    }

    fn passport() -> KeyTypeCode {
        KeyTypeCode::parse(Field::KeyType, "PASSPORT").unwrap()
    }

    fn rule_of(err: DomainError) -> ForeignKeyRule {
        match err {
            DomainError::InvalidForeignKey { field, rule } => {
                assert_eq!(field, Field::Value);
                rule
            }
            other => panic!("expected INVALID_FOREIGN_KEY, got {other:?}"),
        }
    }

    #[test]
    fn normalization_drops_separators_and_uppercases() {
        let v = ForeignKeyValue::parse("  ab 12.34-5/6 ").unwrap();
        assert_eq!(v.entered(), "ab 12.34-5/6");
        assert_eq!(v.normalized(), "AB123456");
        assert_eq!(
            ForeignKeyValue::parse("AB123456").unwrap().normalized(),
            v.normalized()
        );
        assert_eq!(normalize("straße"), "STRASSE");
    }

    #[test]
    fn syntax_rules() {
        assert_eq!(
            rule_of(ForeignKeyValue::parse(" .-/ ").unwrap_err()),
            ForeignKeyRule::Empty
        );
        assert_eq!(
            rule_of(ForeignKeyValue::parse("AB\u{0}12345").unwrap_err()),
            ForeignKeyRule::ControlCharacter
        );
        for invisible in [
            "AB\t12345",
            "AB\u{200B}12345",
            "\u{FEFF}AB12345",
            "AB12\u{202E}345",
        ] {
            assert_eq!(
                rule_of(ForeignKeyValue::parse(invisible).unwrap_err()),
                ForeignKeyRule::ControlCharacter,
                "{invisible:?}"
            );
        }
        assert!(ForeignKeyValue::parse(&"9".repeat(64)).is_ok());
        assert_eq!(
            rule_of(ForeignKeyValue::parse(&"9".repeat(65)).unwrap_err()),
            ForeignKeyRule::TooLong { max: 64 }
        );
        // Counted in characters, not bytes.
        assert!(ForeignKeyValue::parse(&"é".repeat(64)).is_ok());
    }

    #[test]
    fn default_rule_needs_five_characters_and_a_digit() {
        let rule = FormatRule::default_rule();
        let check = |v: &str| rule.check(be(), &passport(), &ForeignKeyValue::parse(v).unwrap());
        assert!(check("ABCD1").is_ok());
        assert!(check("12345").is_ok());
        assert!(check("1-2-3-4-5").is_ok());
        assert!(matches!(
            rule_of(check("AB12").unwrap_err()),
            ForeignKeyRule::TooShort {
                found: 4,
                min: 5,
                ..
            }
        ));
        assert!(matches!(
            rule_of(check("ABCDEF").unwrap_err()),
            ForeignKeyRule::Pattern { .. }
        ));
    }

    #[test]
    fn configured_rule_is_anchored_and_bounds_lengths() {
        let rule = FormatRule::new(8, 9, Some("[A-Z]{2}[0-9]{6,7}")).unwrap();
        let check = |v: &str| rule.check(be(), &passport(), &ForeignKeyValue::parse(v).unwrap());
        assert!(check("ab123456").is_ok());
        assert!(check("AB 123 4567").is_ok());
        assert!(matches!(
            rule_of(check("XAB123456").unwrap_err()),
            ForeignKeyRule::Pattern { .. }
        ));
        assert!(matches!(
            rule_of(check("AB1234567Z").unwrap_err()),
            ForeignKeyRule::TooLongForFormat { max: 9, .. }
        ));
        let msg = check("1234567890").unwrap_err().to_string();
        assert!(msg.contains("BE/PASSPORT"), "{msg}");
    }

    #[test]
    fn invalid_format_rules_name_their_field() {
        let field = |r: Result<FormatRule, DomainError>| {
            let e = r.unwrap_err();
            assert_eq!(e.code(), "INVALID_FORMAT_RULE");
            e.field().unwrap()
        };
        assert_eq!(field(FormatRule::new(0, 10, None)), Field::MinLength);
        assert_eq!(field(FormatRule::new(1, 65, None)), Field::MaxLength);
        assert_eq!(field(FormatRule::new(9, 8, None)), Field::MaxLength);
        assert_eq!(field(FormatRule::new(1, 8, Some("[A-"))), Field::Pattern);
        assert_eq!(
            field(FormatRule::new(1, 8, Some(&"a".repeat(257)))),
            Field::Pattern
        );
        assert_eq!(
            field(FormatRule::new(1, 8, Some("a{1000}{1000}"))),
            Field::Pattern
        );
        assert_eq!(FormatRule::new(1, 8, Some("  ")).unwrap().pattern, None);
    }

    #[test]
    fn pattern_serde_recompiles() {
        let rule = FormatRule::new(2, 10, Some("[0-9]+")).unwrap();
        let json = serde_json::to_string(&rule).unwrap();
        let back: FormatRule = serde_json::from_str(&json).unwrap();
        assert_eq!(back, rule);
        assert!(back.pattern.unwrap().is_match("123"));
        let broken = json.replace("[0-9]+", "[0-9");
        assert!(serde_json::from_str::<FormatRule>(&broken).is_err());
    }
}
