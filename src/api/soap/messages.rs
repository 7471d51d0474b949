//! The operations: request elements into service calls, results into reply elements.
//!
//! Structure (an element missing, unknown, repeated, or not of its XSD type) is checked here
//! and refused with a fault; content (an SSIN's checksum, a country code, dates in order) is
//! left to the domain, whose verdict comes back as the reply's status. No rule is decided here.

use super::xml::{Element, Writer};
use super::{NS, SoapError};
use crate::domain::command::{
    AddKeyType, CreateLink, DeleteLink, FormatRuleInput, SetFormatRule, SetKeyTypeActive,
    UpdateLinkValidity,
};
use crate::domain::query::{ForeignKeyQuery, SsinQuery};
use crate::domain::{
    Action, Caller, CbeNumber, Change, DomainError, Field, FormatRule, KeyType, Link, Outcome,
    RequestContext,
};
use crate::raft::AuditEvent;
use crate::service::{self, Call, Consistency, ReadMeta, ReadOptions, Service, ServiceError};

/// Prefix of our namespace in replies.
const P: &str = "lr";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    SearchLinksBySsin,
    SearchLinksByForeignKey,
    GetLink,
    CreateLink,
    UpdateLinkValidity,
    DeleteLink,
    GetLinkHistory,
    ListKeyTypes,
    AddKeyType,
    SetKeyTypeActive,
    ListFormatRules,
    SetFormatRule,
}

impl Operation {
    pub const ALL: [Operation; 12] = [
        Operation::SearchLinksBySsin,
        Operation::SearchLinksByForeignKey,
        Operation::GetLink,
        Operation::CreateLink,
        Operation::UpdateLinkValidity,
        Operation::DeleteLink,
        Operation::GetLinkHistory,
        Operation::ListKeyTypes,
        Operation::AddKeyType,
        Operation::SetKeyTypeActive,
        Operation::ListFormatRules,
        Operation::SetFormatRule,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Operation::SearchLinksBySsin => "searchLinksBySsin",
            Operation::SearchLinksByForeignKey => "searchLinksByForeignKey",
            Operation::GetLink => "getLink",
            Operation::CreateLink => "createLink",
            Operation::UpdateLinkValidity => "updateLinkValidity",
            Operation::DeleteLink => "deleteLink",
            Operation::GetLinkHistory => "getLinkHistory",
            Operation::ListKeyTypes => "listKeyTypes",
            Operation::AddKeyType => "addKeyType",
            Operation::SetKeyTypeActive => "setKeyTypeActive",
            Operation::ListFormatRules => "listFormatRules",
            Operation::SetFormatRule => "setFormatRule",
        }
    }

    /// The operation whose request element this is.
    pub fn of(element: &Element) -> Result<Operation, SoapError> {
        if element.ns.as_deref() != Some(NS) {
            return Err(SoapError::UnknownOperation(format!(
                "{} (operations are in namespace {NS})",
                element.qualified()
            )));
        }
        Operation::ALL
            .into_iter()
            .find(|op| element.name.strip_suffix("Request") == Some(op.name()))
            .ok_or_else(|| SoapError::UnknownOperation(element.qualified()))
    }

    /// The SOAPAction the WSDL declares for it.
    pub fn action(self) -> String {
        format!("{NS}/{}", self.name())
    }

    fn is_write(self) -> bool {
        matches!(
            self,
            Operation::CreateLink
                | Operation::UpdateLinkValidity
                | Operation::DeleteLink
                | Operation::AddKeyType
                | Operation::SetKeyTypeActive
                | Operation::SetFormatRule
        )
    }

    /// The elements of its request after the common ones.
    fn elements(self) -> &'static [&'static str] {
        match self {
            Operation::SearchLinksBySsin => &["ssin", "country", "keyType", "validOn"],
            Operation::SearchLinksByForeignKey => &["country", "value", "keyType", "validOn"],
            Operation::GetLink | Operation::GetLinkHistory => &["id"],
            Operation::CreateLink => &["ssin", "country", "keyType", "value", "validityPeriod"],
            Operation::UpdateLinkValidity => &["id", "validityPeriod", "expectedVersion"],
            Operation::DeleteLink => &["id", "reason"],
            Operation::ListKeyTypes | Operation::ListFormatRules => &[],
            Operation::AddKeyType => &["code", "labels"],
            Operation::SetKeyTypeActive => &["code", "active"],
            Operation::SetFormatRule => &["country", "keyType", "rule"],
        }
    }
}

/// Where each domain field sits in a request, for a status' `fieldName`.
fn field_path(field: Field) -> &'static str {
    match field {
        Field::Ssin => "ssin",
        Field::Country => "country",
        Field::KeyType => "keyType",
        Field::Value => "value",
        Field::ValidFrom => "validityPeriod/beginDate",
        Field::ValidTo => "validityPeriod/endDate",
        Field::ValidOn => "validOn",
        // Bulk import is a gRPC operation only.
        Field::Rows => "rows",
        Field::Id => "id",
        Field::ExpectedVersion => "expectedVersion",
        Field::Reason => "reason",
        Field::Code => "code",
        Field::LabelNl => "labels/nl",
        Field::LabelFr => "labels/fr",
        Field::LabelDe => "labels/de",
        Field::LabelEn => "labels/en",
        Field::MinLength => "rule/minLength",
        Field::MaxLength => "rule/maxLength",
        Field::Pattern => "rule/pattern",
        Field::Organization => "informationCustomer/customerIdentification",
        Field::CbeNumber => "informationCustomer/customerIdentification/cbeNumber",
        Field::Ticket => "informationCustomer/ticket",
        Field::LegalContext => "legalContext",
    }
}

/// The children of one element, checked against the names it may have.
struct Fields<'a> {
    element: &'a Element,
}

impl<'a> Fields<'a> {
    fn of(element: &'a Element, allowed: &[&str]) -> Result<Fields<'a>, SoapError> {
        let mut seen: Vec<&str> = Vec::new();
        for child in &element.children {
            if child.ns.as_deref() != Some(NS) || !allowed.contains(&child.name.as_str()) {
                return Err(SoapError::Invalid(format!(
                    "{}: unexpected element {}",
                    element.name,
                    child.qualified()
                )));
            }
            if seen.contains(&child.name.as_str()) {
                return Err(SoapError::Invalid(format!(
                    "{}: element {} appears more than once",
                    element.name, child.name
                )));
            }
            seen.push(&child.name);
        }
        Ok(Fields { element })
    }

    fn child(&self, name: &str) -> Option<&'a Element> {
        self.element.children.iter().find(|c| c.name == name)
    }

    fn required(&self, name: &str) -> Result<&'a Element, SoapError> {
        self.child(name).ok_or_else(|| {
            SoapError::Invalid(format!(
                "{}: the mandatory element {name} is missing",
                self.element.name
            ))
        })
    }

    fn text(&self, name: &str) -> Result<Option<String>, SoapError> {
        match self.child(name) {
            None => Ok(None),
            Some(leaf) if leaf.children.is_empty() => Ok(Some(leaf.text.clone())),
            Some(_) => Err(SoapError::Invalid(format!(
                "{}/{name}: expected text, found child elements",
                self.element.name
            ))),
        }
    }

    fn required_text(&self, name: &str) -> Result<String, SoapError> {
        self.required(name)?;
        self.text(name).map(Option::unwrap_or_default)
    }

    fn typed<T>(&self, name: &str, xsd: &str, parse: fn(&str) -> Option<T>) -> OptResult<T> {
        match self.text(name)? {
            None => Ok(None),
            Some(text) => parse(text.trim()).map(Some).ok_or_else(|| {
                SoapError::Invalid(format!(
                    "{}/{name}: {text:?} is not an {xsd}",
                    self.element.name
                ))
            }),
        }
    }

    fn unsigned(&self, name: &str) -> OptResult<u64> {
        // Rust's parser takes what xs:unsignedLong does: digits after an optional `+`.
        self.typed(name, "xs:unsignedLong", |t| t.parse().ok())
    }

    fn required_unsigned(&self, name: &str) -> Result<u64, SoapError> {
        self.required(name)?;
        self.unsigned(name).map(Option::unwrap_or_default)
    }

    fn short(&self, name: &str) -> Result<u16, SoapError> {
        self.required(name)?;
        self.typed(name, "xs:unsignedShort", |t| t.parse().ok())
            .map(Option::unwrap_or_default)
    }

    fn boolean(&self, name: &str) -> Result<bool, SoapError> {
        self.required(name)?;
        self.typed(name, "xs:boolean", |t| match t {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        })
        .map(Option::unwrap_or_default)
    }

    fn consistency(&self) -> Result<Consistency, SoapError> {
        self.typed("consistency", "LOCAL or LINEARIZABLE", |t| match t {
            "LOCAL" => Some(Consistency::Local),
            "LINEARIZABLE" => Some(Consistency::Linearizable),
            _ => None,
        })
        .map(Option::unwrap_or_default)
    }

    /// A PeriodType child: its begin and end dates as sent (the domain checks them).
    fn period(&self, name: &str) -> Result<(Option<String>, Option<String>), SoapError> {
        match self.child(name) {
            None => Ok((None, None)),
            Some(period) => {
                let fields = Fields::of(period, &["beginDate", "endDate"])?;
                Ok((fields.text("beginDate")?, fields.text("endDate")?))
            }
        }
    }
}

type OptResult<T> = Result<Option<T>, SoapError>;

/// The `informationCustomer` block, kept as sent so the reply can echo it.
#[derive(Debug, Clone)]
pub struct Customer {
    pub ticket: String,
    pub timestamp_sent: String,
    pub cbe_number: String,
}

/// What every request carries besides its payload.
#[derive(Debug)]
pub struct Common {
    pub customer: Customer,
    pub legal_context: String,
}

impl Common {
    fn read(operation: Operation, request: &Element) -> Result<Common, SoapError> {
        let mut allowed = vec!["informationCustomer", "legalContext"];
        allowed.extend_from_slice(if operation.is_write() {
            &["clientId", "requestId"]
        } else {
            &["consistency"]
        });
        allowed.extend_from_slice(operation.elements());
        let fields = Fields::of(request, &allowed)?;
        let info = Fields::of(
            fields.required("informationCustomer")?,
            &["ticket", "timestampSent", "customerIdentification"],
        )?;
        let customer = Fields::of(info.required("customerIdentification")?, &["cbeNumber"])?;
        Ok(Common {
            customer: Customer {
                ticket: info.required_text("ticket")?,
                timestamp_sent: info.required_text("timestampSent")?,
                cbe_number: customer.required_text("cbeNumber")?,
            },
            legal_context: fields.required_text("legalContext")?,
        })
    }

    /// The register's checks of the block: a valid context, and the organization the caller is.
    fn check(&self, caller: &Caller) -> Result<RequestContext, Refusal> {
        let context = RequestContext::new(&self.customer.ticket, &self.legal_context)?;
        let cbe = CbeNumber::parse(&self.customer.cbe_number)?;
        if cbe != caller.organization.cbe {
            return Err(Refusal::Fault(SoapError::PermissionDenied(format!(
                "customerIdentification/cbeNumber {} is not the caller's ({})",
                cbe.as_str(),
                caller.organization.cbe.as_str()
            ))));
        }
        Ok(context)
    }
}

/// `status` of a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub value: &'static str,
    pub code: String,
    pub description: String,
    pub information: Vec<(String, String)>,
}

impl Status {
    fn found(count: usize, what: &str) -> Status {
        Status {
            value: if count == 0 {
                "NO_DATA_FOUND"
            } else {
                "DATA_FOUND"
            },
            code: "OK".into(),
            description: format!("{count} {what} found"),
            information: Vec::new(),
        }
    }

    fn done(description: String) -> Status {
        Status {
            value: "OK",
            code: "OK".into(),
            description,
            information: Vec::new(),
        }
    }

    fn refused(code: &str, description: String, information: Vec<(String, String)>) -> Status {
        Status {
            value: "NO_RESULT",
            code: code.into(),
            description,
            information,
        }
    }
}

/// A request the register did not carry out: a business outcome reported in the status, or a
/// technical one that becomes a fault.
enum Refusal {
    Status(Status),
    Fault(SoapError),
}

impl From<SoapError> for Refusal {
    fn from(e: SoapError) -> Refusal {
        Refusal::Fault(e)
    }
}

/// The one mapping of domain errors to SOAP: a role the caller lacks is an authorization fault,
/// everything else a business status naming the element at fault (its value is filled in from
/// the request by [`with_values`]).
impl From<DomainError> for Refusal {
    fn from(e: DomainError) -> Refusal {
        if let DomainError::PermissionDenied { .. } = e {
            return Refusal::Fault(SoapError::PermissionDenied(e.to_string()));
        }
        let mut information = Vec::new();
        if let Some(field) = e.field() {
            information.push((field_path(field).to_string(), String::new()));
        }
        if let Some(id) = e.link_id()
            && e.field() != Some(Field::Id)
        {
            information.push(("existingLinkId".into(), id.to_string()));
        }
        Refusal::Status(Status::refused(e.code(), e.to_string(), information))
    }
}

impl From<ServiceError> for Refusal {
    fn from(e: ServiceError) -> Refusal {
        match e {
            ServiceError::InvalidSession { field, rule } => {
                let name = if field == "request_id" {
                    "requestId"
                } else {
                    "clientId"
                };
                Refusal::Status(Status::refused(
                    "INVALID_SESSION",
                    format!("{name}: {rule}"),
                    vec![(name.to_string(), String::new())],
                ))
            }
            ServiceError::StaleRequest { .. } => Refusal::Status(Status::refused(
                "STALE_REQUEST",
                e.to_string(),
                vec![("requestId".into(), String::new())],
            )),
            other => Refusal::Fault(SoapError::Service(other)),
        }
    }
}

/// Fills each `fieldValue` left empty with what the request sent at `fieldName`.
fn with_values(mut status: Status, request: &Element) -> Status {
    for (name, value) in &mut status.information {
        if value.is_empty() {
            let mut at = Some(request);
            for step in name.split('/') {
                at = at.and_then(|e| e.children.iter().find(|c| c.name == step));
            }
            if let Some(found) = at {
                value.clone_from(&found.text);
            }
        }
    }
    status
}

/// A reply's status and the elements that follow it.
pub struct Reply {
    pub status: Status,
    pub payload: Writer,
}

/// A request's payload, its structure checked, its content still as sent.
#[derive(Debug)]
pub enum Input {
    Write {
        action: Action,
        client_id: Option<String>,
        request_id: Option<u64>,
    },
    SearchBySsin(SsinQuery),
    SearchByForeignKey(ForeignKeyQuery),
    GetLink(u64),
    GetLinkHistory(u64),
    ListKeyTypes,
    ListFormatRules,
}

/// One request, taken apart: what every request carries, and its own inputs.
#[derive(Debug)]
pub struct Request {
    pub operation: Operation,
    pub common: Common,
    pub input: Input,
    pub consistency: Consistency,
}

impl Request {
    pub fn read(operation: Operation, element: &Element) -> Result<Request, SoapError> {
        let common = Common::read(operation, element)?;
        let f = Fields { element };
        let input = match operation {
            Operation::SearchLinksBySsin => Input::SearchBySsin(SsinQuery {
                ssin: f.required_text("ssin")?,
                country: f.text("country")?,
                key_type: f.text("keyType")?,
                valid_on: f.text("validOn")?,
            }),
            Operation::SearchLinksByForeignKey => Input::SearchByForeignKey(ForeignKeyQuery {
                country: f.required_text("country")?,
                value: f.required_text("value")?,
                key_type: f.text("keyType")?,
                valid_on: f.text("validOn")?,
            }),
            Operation::GetLink => Input::GetLink(f.required_unsigned("id")?),
            Operation::GetLinkHistory => Input::GetLinkHistory(f.required_unsigned("id")?),
            Operation::ListKeyTypes => Input::ListKeyTypes,
            Operation::ListFormatRules => Input::ListFormatRules,
            write => Input::Write {
                action: action(write, &f)?,
                client_id: f.text("clientId")?,
                request_id: f.unsigned("requestId")?,
            },
        };
        let consistency = if operation.is_write() {
            Consistency::default()
        } else {
            f.consistency()?
        };
        Ok(Request {
            operation,
            common,
            input,
            consistency,
        })
    }
}

/// Runs one request for an authenticated caller; `element` is the request as sent, for the
/// values a status names.
pub async fn execute(
    service: &Service,
    caller: Caller,
    request: Request,
    element: &Element,
) -> Result<Reply, SoapError> {
    let mut payload = Writer::fragment();
    match run(service, caller, request, &mut payload).await {
        Ok(status) => Ok(Reply { status, payload }),
        Err(Refusal::Status(status)) => Ok(Reply {
            status: with_values(status, element),
            payload: Writer::fragment(),
        }),
        Err(Refusal::Fault(e)) => Err(e),
    }
}

async fn run(
    service: &Service,
    caller: Caller,
    request: Request,
    out: &mut Writer,
) -> Result<Status, Refusal> {
    let context = request.common.check(&caller)?;
    let options = ReadOptions {
        consistency: request.consistency,
        deadline: None,
    };
    match request.input {
        Input::Write {
            action,
            client_id,
            request_id,
        } => {
            let session = service::session(client_id, request_id)?;
            let call = Call {
                caller,
                context: Some(context),
                deadline: None,
            };
            let outcome = service.write(call, action, session).await?;
            let decision = outcome.verdict?;
            let log_index = outcome.log_index.unwrap_or_default();
            Ok(write_reply(decision.outcome, log_index, out))
        }
        Input::SearchBySsin(query) => {
            let (links, meta) = service.search_by_ssin(&query, options).await?;
            Ok(links_reply(&links?, meta, out))
        }
        Input::SearchByForeignKey(query) => {
            let (links, meta) = service.search_by_foreign_key(&query, options).await?;
            Ok(links_reply(&links?, meta, out))
        }
        Input::GetLink(id) => {
            let (found, meta) = service.get_link(id, options).await?;
            Ok(links_reply(&[found?], meta, out))
        }
        Input::GetLinkHistory(id) => {
            let (events, meta) = service.link_history(id, options).await?;
            let events = events?;
            read_info(out, meta);
            for event in &events {
                audit_event(out, event);
            }
            Ok(Status::found(events.len(), "events"))
        }
        Input::ListKeyTypes => {
            let (types, meta) = service.key_types(options).await?;
            read_info(out, meta);
            for k in &types {
                key_type(out, "keyType", k);
            }
            Ok(Status::found(types.len(), "key types"))
        }
        Input::ListFormatRules => {
            let (rules, meta) = service.format_rules(options).await?;
            read_info(out, meta);
            format_rule(out, "defaultRule", &FormatRule::default_rule());
            for (country, code, rule) in &rules {
                out.open(&q("formatRule"))
                    .leaf(&q("country"), country)
                    .leaf(&q("keyType"), code);
                format_rule(out, "rule", rule);
                out.close(&q("formatRule"));
            }
            Ok(Status::found(rules.len(), "format rules"))
        }
    }
}

fn action(operation: Operation, f: &Fields<'_>) -> Result<Action, SoapError> {
    Ok(match operation {
        Operation::CreateLink => {
            let (valid_from, valid_to) = f.period("validityPeriod")?;
            Action::CreateLink(CreateLink {
                ssin: f.required_text("ssin")?,
                country: f.required_text("country")?,
                key_type: f.required_text("keyType")?,
                value: f.required_text("value")?,
                valid_from,
                valid_to,
            })
        }
        Operation::UpdateLinkValidity => {
            let (valid_from, valid_to) = f.period("validityPeriod")?;
            Action::UpdateLinkValidity(UpdateLinkValidity {
                id: f.required_unsigned("id")?,
                valid_from,
                valid_to,
                expected_version: f.unsigned("expectedVersion")?,
            })
        }
        Operation::DeleteLink => Action::DeleteLink(DeleteLink {
            id: f.required_unsigned("id")?,
            reason: f.required_text("reason")?,
        }),
        Operation::AddKeyType => {
            let labels = Fields::of(f.required("labels")?, &["nl", "fr", "de", "en"])?;
            Action::AddKeyType(AddKeyType {
                code: f.required_text("code")?,
                label_nl: labels.required_text("nl")?,
                label_fr: labels.required_text("fr")?,
                label_de: labels.required_text("de")?,
                label_en: labels.required_text("en")?,
            })
        }
        Operation::SetKeyTypeActive => Action::SetKeyTypeActive(SetKeyTypeActive {
            code: f.required_text("code")?,
            active: f.boolean("active")?,
        }),
        Operation::SetFormatRule => {
            let rule = match f.child("rule") {
                None => None,
                Some(rule) => {
                    let r = Fields::of(rule, &["minLength", "maxLength", "pattern"])?;
                    Some(FormatRuleInput {
                        min_length: r.short("minLength")?,
                        max_length: r.short("maxLength")?,
                        pattern: r.text("pattern")?,
                    })
                }
            };
            Action::SetFormatRule(SetFormatRule {
                country: f.required_text("country")?,
                key_type: f.required_text("keyType")?,
                rule,
            })
        }
        read => return Err(SoapError::UnknownOperation(read.name().into())),
    })
}

/// `lr:name`.
fn q(name: &str) -> String {
    format!("{P}:{name}")
}

fn write_reply(outcome: Outcome, log_index: u64, out: &mut Writer) -> Status {
    let description = match &outcome {
        Outcome::Link(l) => {
            link(out, "link", l);
            format!("link {} at version {}", l.id, l.version)
        }
        Outcome::LinkDeleted(id) => {
            out.leaf(&q("id"), id);
            format!("link {id} deleted")
        }
        Outcome::KeyType(k) => {
            key_type(out, "keyType", k);
            format!("key type {}", k.code)
        }
        Outcome::FormatRule {
            country,
            key_type,
            rule,
        } => {
            out.leaf(&q("country"), country)
                .leaf(&q("keyType"), key_type);
            match rule {
                Some(rule) => {
                    format_rule(out, "rule", rule);
                    format!("format rule of {country}/{key_type} set")
                }
                None => format!("format rule of {country}/{key_type} removed"),
            }
        }
        // No SOAP operation imports; answered for completeness only.
        Outcome::Imported(rows) => format!("{} rows decided", rows.len()),
    };
    out.leaf(&q("logIndex"), log_index);
    Status::done(description)
}

fn links_reply(links: &[Link], meta: ReadMeta, out: &mut Writer) -> Status {
    read_info(out, meta);
    for l in links {
        link(out, "link", l);
    }
    Status::found(links.len(), "links")
}

fn read_info(out: &mut Writer, meta: ReadMeta) {
    out.open(&q("read"))
        .leaf(&q("nodeId"), meta.node_id)
        .leaf_opt(&q("appliedIndex"), meta.applied_index)
        .close(&q("read"));
}

fn link(out: &mut Writer, name: &str, l: &Link) {
    out.open(&q(name))
        .leaf(&q("id"), l.id)
        .leaf(&q("ssin"), l.ssin)
        .leaf(&q("country"), l.foreign_key.country)
        .leaf(&q("keyType"), &l.foreign_key.key_type)
        .leaf(&q("value"), l.foreign_key.value.entered())
        .leaf(&q("normalizedValue"), l.foreign_key.value.normalized());
    if l.validity.begin().is_some() || l.validity.end().is_some() {
        out.open(&q("validityPeriod"))
            .leaf_opt(&q("beginDate"), l.validity.begin())
            .leaf_opt(&q("endDate"), l.validity.end())
            .close(&q("validityPeriod"));
    }
    out.leaf(&q("createdBy"), &l.created_by.name)
        .leaf(&q("createdByCbe"), l.created_by.cbe.as_str())
        .leaf(&q("createdAt"), l.created_at)
        .leaf(&q("updatedAt"), l.updated_at)
        .leaf(&q("version"), l.version)
        .close(&q(name));
}

fn key_type(out: &mut Writer, name: &str, k: &KeyType) {
    out.open(&q(name))
        .leaf(&q("code"), &k.code)
        .open(&q("labels"))
        .leaf(&q("nl"), &k.labels.nl)
        .leaf(&q("fr"), &k.labels.fr)
        .leaf(&q("de"), &k.labels.de)
        .leaf(&q("en"), &k.labels.en)
        .close(&q("labels"))
        .leaf(&q("active"), k.active)
        .close(&q(name));
}

fn format_rule(out: &mut Writer, name: &str, r: &FormatRule) {
    out.open(&q(name))
        .leaf(&q("minLength"), r.min_length)
        .leaf(&q("maxLength"), r.max_length)
        .leaf_opt(&q("pattern"), r.pattern.as_ref().map(|p| p.as_str()))
        .close(&q(name));
}

fn audit_event(out: &mut Writer, e: &AuditEvent) {
    let caller = &e.command.caller;
    let context = e.command.context.as_ref();
    out.open(&q("event"))
        .leaf(&q("logIndex"), e.log_index)
        .leaf(&q("at"), e.command.at)
        .leaf(&q("action"), e.command.action.name())
        .leaf(&q("callerOrganization"), &caller.organization.name)
        .leaf(&q("callerCbe"), caller.organization.cbe.as_str())
        .leaf(&q("callerRole"), caller.role)
        .leaf_opt(&q("ticket"), context.map(|c| &c.ticket))
        .leaf_opt(&q("legalContext"), context.map(|c| &c.legal_context));
    match &e.change {
        Change::LinkCreated { link: l } => link(out, "after", l),
        Change::LinkValidityChanged { before, after } => {
            link(out, "before", before);
            link(out, "after", after);
        }
        Change::LinkDeleted { link: l, reason } => {
            link(out, "before", l);
            out.leaf(&q("reason"), reason);
        }
        _ => {}
    }
    out.close(&q("event"));
}
