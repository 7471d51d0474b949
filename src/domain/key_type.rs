//! The catalogue of foreign-key types. It is fixed in the sense that only the register keeper
//! extends it; a type is never deleted, because links keep referring to it, only deactivated.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::error::{DomainError, Field, TextRule};

/// Code of a key type: `[A-Z0-9_]{2,32}`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyTypeCode(String);

pub const KEY_TYPE_CODE_MIN: usize = 2;
pub const KEY_TYPE_CODE_MAX: usize = 32;
/// Labels are shown in lists and forms; 100 characters is generous for a type name.
pub const LABEL_MAX: usize = 100;

impl KeyTypeCode {
    /// Codes are identifiers, not free text: no case folding, so `passport` is refused rather
    /// than silently becoming `PASSPORT`.
    pub fn parse(field: Field, input: &str) -> Result<KeyTypeCode, DomainError> {
        let well_formed = (KEY_TYPE_CODE_MIN..=KEY_TYPE_CODE_MAX).contains(&input.len())
            && input
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if well_formed {
            Ok(KeyTypeCode(input.to_string()))
        } else {
            Err(DomainError::InvalidKeyTypeCode {
                field,
                value: input.to_string(),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyTypeCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyTypeCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyTypeCode({})", self.0)
    }
}

impl Serialize for KeyTypeCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for KeyTypeCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        KeyTypeCode::parse(Field::KeyType, &text).map_err(serde::de::Error::custom)
    }
}

/// The type's name in the three national languages and English.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Labels {
    pub nl: String,
    pub fr: String,
    pub de: String,
    pub en: String,
}

impl Labels {
    /// Every language is required: the register serves all three communities.
    pub fn new(nl: &str, fr: &str, de: &str, en: &str) -> Result<Labels, DomainError> {
        Ok(Labels {
            nl: label(Field::LabelNl, nl)?,
            fr: label(Field::LabelFr, fr)?,
            de: label(Field::LabelDe, de)?,
            en: label(Field::LabelEn, en)?,
        })
    }
}

fn label(field: Field, input: &str) -> Result<String, DomainError> {
    TextRule::check(field, input, LABEL_MAX, false)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyType {
    pub code: KeyTypeCode,
    pub labels: Labels,
    /// An inactive type keeps its links but refuses new ones.
    pub active: bool,
}

/// The catalogue every register starts with (the types the CBSS LinkRegister lists).
pub fn seed_catalogue() -> Vec<KeyType> {
    const SEED: [(&str, &str, &str, &str, &str); 9] = [
        (
            "NATIONAL_NUMBER",
            "Nationaal nummer",
            "Numéro national",
            "Nationale Nummer",
            "National number",
        ),
        (
            "PASSPORT",
            "Paspoortnummer",
            "Numéro de passeport",
            "Reisepassnummer",
            "Passport number",
        ),
        (
            "IDENTITY_CARD",
            "Nummer van de identiteitskaart",
            "Numéro de carte d'identité",
            "Personalausweisnummer",
            "Identity card number",
        ),
        (
            "DRIVING_LICENCE",
            "Nummer van het rijbewijs",
            "Numéro de permis de conduire",
            "Führerscheinnummer",
            "Driving licence number",
        ),
        (
            "SOCIAL_SECURITY_NUMBER",
            "Identificatie van de sociale zekerheid",
            "Identification de sécurité sociale",
            "Sozialversicherungsnummer",
            "Social security identification",
        ),
        (
            "PENSION_NUMBER",
            "Pensioenidentificatie",
            "Identification de pension",
            "Rentenidentifikation",
            "Pension identification",
        ),
        (
            "TAX_NUMBER",
            "Fiscaal nummer",
            "Numéro fiscal",
            "Steuernummer",
            "Tax number",
        ),
        (
            "BIRTH_CERTIFICATE",
            "Geboortecertificaat",
            "Acte de naissance",
            "Geburtsurkunde",
            "Birth certificate",
        ),
        (
            "EIDAS_IDENTIFIER",
            "eIDAS-identificatie",
            "Identifiant eIDAS",
            "eIDAS-Kennung",
            "eIDAS PersonIdentifier",
        ),
    ];
    SEED.iter()
        .map(|(code, nl, fr, de, en)| KeyType {
            code: KeyTypeCode(code.to_string()),
            labels: Labels {
                nl: nl.to_string(),
                fr: fr.to_string(),
                de: de.to_string(),
                en: en.to_string(),
            },
            active: true,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_pattern() {
        for ok in ["PASSPORT", "AB", "X_1", &"A".repeat(32)] {
            assert!(KeyTypeCode::parse(Field::Code, ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "A",
            "passport",
            "PASS PORT",
            "PASS-PORT",
            "É_X",
            &"A".repeat(33),
        ] {
            let err = KeyTypeCode::parse(Field::Code, bad).expect_err(bad);
            assert_eq!(err.code(), "INVALID_KEY_TYPE_CODE");
            assert_eq!(err.field(), Some(Field::Code));
        }
    }

    #[test]
    fn seed_catalogue_is_valid_and_complete() {
        let seed = seed_catalogue();
        let codes: Vec<_> = seed.iter().map(|k| k.code.as_str().to_string()).collect();
        assert_eq!(
            codes,
            [
                "NATIONAL_NUMBER",
                "PASSPORT",
                "IDENTITY_CARD",
                "DRIVING_LICENCE",
                "SOCIAL_SECURITY_NUMBER",
                "PENSION_NUMBER",
                "TAX_NUMBER",
                "BIRTH_CERTIFICATE",
                "EIDAS_IDENTIFIER"
            ]
        );
        for k in &seed {
            // The seed bypasses the constructors; make sure it would have passed them.
            assert_eq!(
                KeyTypeCode::parse(Field::Code, k.code.as_str()).unwrap(),
                k.code
            );
            let l = &k.labels;
            assert_eq!(Labels::new(&l.nl, &l.fr, &l.de, &l.en).unwrap(), *l);
            assert!(k.active);
        }
    }

    #[test]
    fn labels_are_required_in_every_language() {
        let err = Labels::new("Paspoort", "Passeport", " ", "Passport").unwrap_err();
        assert_eq!(err.field(), Some(Field::LabelDe));
        assert_eq!(err.code(), "INVALID_TEXT");
        let err = Labels::new("a\u{7}", "b", "c", "d").unwrap_err();
        assert_eq!(err.field(), Some(Field::LabelNl));
        let err = Labels::new("a", "b", "c", &"e".repeat(101)).unwrap_err();
        assert_eq!(err.field(), Some(Field::LabelEn));
        assert_eq!(
            Labels::new(" a ", "b", "c", "d").unwrap().nl,
            "a",
            "labels are trimmed"
        );
    }
}
