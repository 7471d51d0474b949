//! Register commands as they are replicated: the raw inputs of a request, who sent it and when.
//!
//! Inputs stay raw text until the rules run so that validation happens in one place
//! ([`super::rules::decide`]) and names each field the way the request spelled it. The caller and
//! the timestamp are fixed by the accepting node before replication, so every node applying the
//! command later reaches the same verdict without reading a clock.

use serde::{Deserialize, Serialize};

use super::caller::{Caller, Role, Timestamp};
use super::error::{DomainError, Field, TextRule};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub caller: Caller,
    pub at: Timestamp,
    pub action: Action,
    /// Why and under which reference the caller asks, when its front end carries it (SOAP
    /// always does); kept with the command so the audit trail can answer for every change.
    pub context: Option<RequestContext>,
}

pub const TICKET_MAX: usize = 100;
pub const LEGAL_CONTEXT_MAX: usize = 200;

/// The caller's own reference of a request (its ticket) and the legal ground it invokes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestContext {
    pub ticket: String,
    pub legal_context: String,
}

impl RequestContext {
    pub fn new(ticket: &str, legal_context: &str) -> Result<RequestContext, DomainError> {
        Ok(RequestContext {
            ticket: TextRule::check(Field::Ticket, ticket, TICKET_MAX, false)?,
            legal_context: TextRule::check(
                Field::LegalContext,
                legal_context,
                LEGAL_CONTEXT_MAX,
                false,
            )?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    CreateLink(CreateLink),
    UpdateLinkValidity(UpdateLinkValidity),
    DeleteLink(DeleteLink),
    AddKeyType(AddKeyType),
    SetKeyTypeActive(SetKeyTypeActive),
    SetFormatRule(SetFormatRule),
    ImportLinks(ImportLinks),
}

/// Rows of a bulk load in one command (one raft entry), so the log and the apply loop handle
/// thousands of links per entry instead of one.
pub const IMPORT_ROWS_MAX: usize = 5_000;

/// Many links at once. Each row is decided on its own, in order, as a `CreateLink` that sees the
/// rows before it: a refused row does not sink the others, and a row whose link already exists
/// is reported as present rather than refused, so loading the same rows again adds nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportLinks {
    pub rows: Vec<CreateLink>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateLink {
    pub ssin: String,
    pub country: String,
    pub key_type: String,
    pub value: String,
    pub valid_from: Option<String>,
    pub valid_to: Option<String>,
}

/// Replaces the validity period (both ends; an absent end is open). Nothing else of a link can
/// change: another SSIN or foreign key is another link.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateLinkValidity {
    pub id: u64,
    pub valid_from: Option<String>,
    pub valid_to: Option<String>,
    /// Optimistic concurrency: refuse the update unless the link is still at this version.
    pub expected_version: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteLink {
    pub id: u64,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddKeyType {
    pub code: String,
    pub label_nl: String,
    pub label_fr: String,
    pub label_de: String,
    pub label_en: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetKeyTypeActive {
    pub code: String,
    pub active: bool,
}

/// Sets the format of one (country, key type); `rule: None` removes it, so the default applies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetFormatRule {
    pub country: String,
    pub key_type: String,
    pub rule: Option<FormatRuleInput>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormatRuleInput {
    pub min_length: u16,
    pub max_length: u16,
    pub pattern: Option<String>,
}

impl Action {
    pub fn required_role(&self) -> Role {
        match self {
            Action::CreateLink(_) | Action::UpdateLinkValidity(_) | Action::ImportLinks(_) => {
                Role::Writer
            }
            Action::DeleteLink(_)
            | Action::AddKeyType(_)
            | Action::SetKeyTypeActive(_)
            | Action::SetFormatRule(_) => Role::Keeper,
        }
    }

    /// Stable name, for audit records and error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Action::CreateLink(_) => "create_link",
            Action::UpdateLinkValidity(_) => "update_link_validity",
            Action::DeleteLink(_) => "delete_link",
            Action::AddKeyType(_) => "add_key_type",
            Action::SetKeyTypeActive(_) => "set_key_type_active",
            Action::SetFormatRule(_) => "set_format_rule",
            Action::ImportLinks(_) => "import_links",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_context_needs_a_ticket_and_a_legal_context() {
        let ok = RequestContext::new(" T-1 ", "Art. 5 law of 15 January 1990").unwrap();
        assert_eq!(ok.ticket, "T-1");
        let err = RequestContext::new("", "x").unwrap_err();
        assert_eq!(err.field(), Some(Field::Ticket));
        let err = RequestContext::new("T", &"l".repeat(LEGAL_CONTEXT_MAX + 1)).unwrap_err();
        assert_eq!(err.field(), Some(Field::LegalContext));
        assert_eq!(err.code(), "INVALID_TEXT");
        let err = RequestContext::new("T\u{1b}", "x").unwrap_err();
        assert_eq!(err.field(), Some(Field::Ticket));
    }
}
