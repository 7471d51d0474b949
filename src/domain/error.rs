//! The one error type of the domain layer. Every variant has a stable code (what clients branch
//! on) and, where the fault lies in one input, the field that carries it (what people fix). Both
//! front ends map this enum to their wire format in exactly one place each.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::caller::Role;
use super::link::LinkId;
use super::ssin::SsinRule;

/// Names of the inputs a rule can point at, spelled as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Field {
    Ssin,
    Country,
    KeyType,
    Value,
    ValidFrom,
    ValidTo,
    ValidOn,
    Id,
    ExpectedVersion,
    Reason,
    Code,
    LabelNl,
    LabelFr,
    LabelDe,
    LabelEn,
    MinLength,
    MaxLength,
    Pattern,
    Organization,
    CbeNumber,
    Ticket,
    LegalContext,
    Rows,
}

impl Field {
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Ssin => "ssin",
            Field::Country => "country",
            Field::KeyType => "key_type",
            Field::Value => "value",
            Field::ValidFrom => "valid_from",
            Field::ValidTo => "valid_to",
            Field::ValidOn => "valid_on",
            Field::Id => "id",
            Field::ExpectedVersion => "expected_version",
            Field::Reason => "reason",
            Field::Code => "code",
            Field::LabelNl => "labels.nl",
            Field::LabelFr => "labels.fr",
            Field::LabelDe => "labels.de",
            Field::LabelEn => "labels.en",
            Field::MinLength => "min_length",
            Field::MaxLength => "max_length",
            Field::Pattern => "pattern",
            Field::Organization => "organization",
            Field::CbeNumber => "cbe_number",
            Field::Ticket => "ticket",
            Field::Rows => "rows",
            Field::LegalContext => "legal_context",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Rules for short free texts (labels, reasons, organization names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum TextRule {
    #[error("must not be empty")]
    Empty,
    #[error("must not be longer than {max} characters")]
    TooLong { max: usize },
    #[error("must not contain control characters")]
    ControlCharacter,
}

impl TextRule {
    /// Checks a short free text, trimmed: not empty, at most `max` characters, no control
    /// characters (a line break only where `multiline`). Returns the trimmed text.
    pub fn check(
        field: Field,
        input: &str,
        max: usize,
        multiline: bool,
    ) -> Result<String, DomainError> {
        let text = input.trim();
        let rule = if text.is_empty() {
            Some(TextRule::Empty)
        } else if text.chars().count() > max {
            Some(TextRule::TooLong { max })
        } else if text
            .chars()
            .any(|ch| ch.is_control() && !(multiline && ch == '\n'))
        {
            Some(TextRule::ControlCharacter)
        } else {
            None
        };
        match rule {
            Some(rule) => Err(DomainError::InvalidText { field, rule }),
            None => Ok(text.to_string()),
        }
    }
}

/// Rules a foreign key value breaks, either always (syntax) or under its format rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ForeignKeyRule {
    #[error("must contain at least one character besides blanks, dots, hyphens and slashes")]
    Empty,
    #[error("must not be longer than {max} characters")]
    TooLong { max: usize },
    #[error("must not contain control characters")]
    ControlCharacter,
    #[error(
        "has {found} characters once normalized, the format for {country}/{key_type} requires at least {min}"
    )]
    TooShort {
        found: usize,
        min: u16,
        country: String,
        key_type: String,
    },
    #[error(
        "has {found} characters once normalized, the format for {country}/{key_type} allows at most {max}"
    )]
    TooLongForFormat {
        found: usize,
        max: u16,
        country: String,
        key_type: String,
    },
    #[error("{normalized:?} does not match the format {pattern:?} for {country}/{key_type}")]
    Pattern {
        normalized: String,
        pattern: String,
        country: String,
        key_type: String,
    },
}

/// Rules a format rule itself must follow when the keeper sets it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum FormatRuleRule {
    #[error("must be between 1 and {max}")]
    LengthRange { max: u16 },
    #[error("minimum length {min} is greater than maximum length {max}")]
    MinAboveMax { min: u16, max: u16 },
    #[error("is not a valid regular expression: {reason}")]
    Regex { reason: String },
    #[error("must not be longer than {max} characters")]
    PatternTooLong { max: usize },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum DomainError {
    #[error("{field}: invalid SSIN: {rule}")]
    InvalidSsin { field: Field, rule: SsinRule },
    #[error("{field}: {value:?} is not an ISO 3166-1 alpha-2 country code")]
    UnknownCountry { field: Field, value: String },
    #[error("{field}: {value:?} is not a key type code ([A-Z0-9_]{{2,32}})")]
    InvalidKeyTypeCode { field: Field, value: String },
    #[error("{field}: key type {code} is not in the catalogue")]
    UnknownKeyType { field: Field, code: String },
    #[error("{field}: key type {code} is inactive and accepts no new links")]
    KeyTypeInactive { field: Field, code: String },
    #[error("{field}: key type {code} already exists")]
    KeyTypeExists { field: Field, code: String },
    #[error("{field}: invalid foreign key: {rule}")]
    InvalidForeignKey { field: Field, rule: ForeignKeyRule },
    #[error("{field}: invalid format rule: {rule}")]
    InvalidFormatRule { field: Field, rule: FormatRuleRule },
    #[error("{field}: {value:?} is not a calendar date (YYYY-MM-DD)")]
    InvalidDate { field: Field, value: String },
    #[error("{field}: the validity period ends ({end}) before it begins ({begin})")]
    InvalidPeriod {
        field: Field,
        begin: String,
        end: String,
    },
    #[error("{field}: {rule}")]
    InvalidText { field: Field, rule: TextRule },
    #[error("{field}: {value:?} is not a valid CBE enterprise number")]
    InvalidCbeNumber { field: Field, value: String },
    #[error("the same link already exists as link {existing}")]
    LinkExists { existing: LinkId },
    #[error(
        "this foreign key is already linked to another SSIN in an overlapping period, by link {existing}"
    )]
    LinkConflict { existing: LinkId },
    #[error("{field}: there is no link {id}")]
    LinkNotFound { field: Field, id: LinkId },
    #[error("{field}: link {id} is at version {actual}, not the expected {expected}")]
    VersionMismatch {
        field: Field,
        id: LinkId,
        expected: u64,
        actual: u64,
    },
    #[error("{field}: {found} rows in one batch; at most {max}")]
    TooManyRows {
        field: Field,
        max: usize,
        found: usize,
    },
    #[error("role {role} may not {action}; it needs role {required}")]
    PermissionDenied {
        role: Role,
        required: Role,
        action: String,
    },
}

impl DomainError {
    /// The stable code clients may branch on. Never rename one: it is part of the API.
    pub fn code(&self) -> &'static str {
        match self {
            DomainError::InvalidSsin { .. } => "INVALID_SSIN",
            DomainError::UnknownCountry { .. } => "UNKNOWN_COUNTRY",
            DomainError::InvalidKeyTypeCode { .. } => "INVALID_KEY_TYPE_CODE",
            DomainError::UnknownKeyType { .. } => "UNKNOWN_KEY_TYPE",
            DomainError::KeyTypeInactive { .. } => "KEY_TYPE_INACTIVE",
            DomainError::KeyTypeExists { .. } => "KEY_TYPE_EXISTS",
            DomainError::InvalidForeignKey { .. } => "INVALID_FOREIGN_KEY",
            DomainError::InvalidFormatRule { .. } => "INVALID_FORMAT_RULE",
            DomainError::InvalidDate { .. } => "INVALID_DATE",
            DomainError::InvalidPeriod { .. } => "INVALID_PERIOD",
            DomainError::InvalidText { .. } => "INVALID_TEXT",
            DomainError::InvalidCbeNumber { .. } => "INVALID_CBE_NUMBER",
            DomainError::LinkExists { .. } => "LINK_EXISTS",
            DomainError::LinkConflict { .. } => "LINK_CONFLICT",
            DomainError::LinkNotFound { .. } => "LINK_NOT_FOUND",
            DomainError::VersionMismatch { .. } => "VERSION_MISMATCH",
            DomainError::PermissionDenied { .. } => "PERMISSION_DENIED",
            DomainError::TooManyRows { .. } => "TOO_MANY_ROWS",
        }
    }

    /// The input at fault, when one is.
    pub fn field(&self) -> Option<Field> {
        match self {
            DomainError::InvalidSsin { field, .. }
            | DomainError::UnknownCountry { field, .. }
            | DomainError::InvalidKeyTypeCode { field, .. }
            | DomainError::UnknownKeyType { field, .. }
            | DomainError::KeyTypeInactive { field, .. }
            | DomainError::KeyTypeExists { field, .. }
            | DomainError::InvalidForeignKey { field, .. }
            | DomainError::InvalidFormatRule { field, .. }
            | DomainError::InvalidDate { field, .. }
            | DomainError::InvalidPeriod { field, .. }
            | DomainError::InvalidText { field, .. }
            | DomainError::InvalidCbeNumber { field, .. }
            | DomainError::LinkNotFound { field, .. }
            | DomainError::VersionMismatch { field, .. }
            | DomainError::TooManyRows { field, .. } => Some(*field),
            DomainError::LinkExists { .. }
            | DomainError::LinkConflict { .. }
            | DomainError::PermissionDenied { .. } => None,
        }
    }

    /// True when the input is wrong whatever the register holds (a malformed SSIN, date, code,
    /// text, or a caller without the role), as opposed to a clash with the register's state
    /// (unknown or inactive key type, format rule of a country, existing links). Front ends may
    /// refuse such input before it takes a log entry: every replica would refuse it alike.
    pub fn is_input_error(&self) -> bool {
        match self {
            DomainError::InvalidSsin { .. }
            | DomainError::UnknownCountry { .. }
            | DomainError::InvalidKeyTypeCode { .. }
            | DomainError::InvalidFormatRule { .. }
            | DomainError::InvalidDate { .. }
            | DomainError::InvalidPeriod { .. }
            | DomainError::InvalidText { .. }
            | DomainError::InvalidCbeNumber { .. }
            | DomainError::TooManyRows { .. }
            | DomainError::PermissionDenied { .. } => true,
            DomainError::InvalidForeignKey { rule, .. } => matches!(
                rule,
                ForeignKeyRule::Empty
                    | ForeignKeyRule::TooLong { .. }
                    | ForeignKeyRule::ControlCharacter
            ),
            DomainError::UnknownKeyType { .. }
            | DomainError::KeyTypeInactive { .. }
            | DomainError::KeyTypeExists { .. }
            | DomainError::LinkExists { .. }
            | DomainError::LinkConflict { .. }
            | DomainError::LinkNotFound { .. }
            | DomainError::VersionMismatch { .. } => false,
        }
    }

    /// The link the error is about, for the conflict family (clients need it to resolve them).
    pub fn link_id(&self) -> Option<LinkId> {
        match self {
            DomainError::LinkExists { existing } | DomainError::LinkConflict { existing } => {
                Some(*existing)
            }
            DomainError::LinkNotFound { id, .. } | DomainError::VersionMismatch { id, .. } => {
                Some(*id)
            }
            _ => None,
        }
    }
}
