//! The `LinkRegister` gRPC service: authentication, protobuf mapping, and the single mapping of
//! domain and service errors to gRPC statuses. No business rule lives here.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::auth::Authenticator;
use crate::domain::command::{
    AddKeyType, CreateLink, DeleteLink, FormatRuleInput, ImportLinks, SetFormatRule,
    SetKeyTypeActive, UpdateLinkValidity,
};
use crate::domain::foreign_key::FormatRule;
use crate::domain::query::{ForeignKeyQuery, SsinQuery};
use crate::domain::{
    Action, Caller, Change, DomainError, KeyType, Link, Outcome, Role, RowOutcome,
};
use crate::proto::linkreg as pb;
use crate::proto::linkreg::link_register_server::LinkRegister;
use crate::raft::AuditEvent;
use crate::service::{
    self, Call, Consistency, ReadMeta, ReadOptions, Service, ServiceError, WriteOutcome,
};

pub const ERROR_DOMAIN: &str = "linkreg";

/// Links per export message: about 300 KiB, well under the message limit.
const EXPORT_CHUNK: usize = 1000;

fn import_row(outcome: &RowOutcome) -> pb::ImportRowResult {
    use pb::ImportRowStatus as S;
    let (status, link_id, error) = match outcome {
        RowOutcome::Created(id) => (S::ImportRowCreated, id.0, None),
        RowOutcome::AlreadyPresent(id) => (S::ImportRowAlreadyPresent, id.0, None),
        RowOutcome::Rejected(e) => (S::ImportRowRejected, 0, Some(e)),
    };
    pb::ImportRowResult {
        status: status as i32,
        link_id,
        code: error.map(|e| e.code().to_string()).unwrap_or_default(),
        field: error
            .and_then(|e| e.field())
            .map(|f| f.as_str().to_string())
            .unwrap_or_default(),
        message: error.map(|e| e.to_string()).unwrap_or_default(),
    }
}

pub struct LinkRegisterService {
    service: Arc<Service>,
    auth: Authenticator,
}

impl LinkRegisterService {
    pub fn new(service: Arc<Service>, auth: Authenticator) -> LinkRegisterService {
        LinkRegisterService { service, auth }
    }

    /// The caller and the client's deadline of a write.
    fn call<T>(&self, request: &Request<T>) -> Result<Call, Status> {
        Ok(Call {
            caller: authenticated(&self.auth, request)?,
            context: None,
            deadline: client_deadline(request.metadata()),
        })
    }

    /// An authenticated read's options.
    fn read<T>(&self, request: &Request<T>, consistency: i32) -> Result<ReadOptions, Status> {
        authenticated(&self.auth, request)?;
        Ok(ReadOptions {
            consistency: self::consistency(consistency),
            deadline: client_deadline(request.metadata()),
        })
    }

    async fn write(
        &self,
        call: Call,
        action: Action,
        client_id: Option<String>,
        request_id: Option<u64>,
    ) -> Result<(Outcome, u64), Status> {
        let (outcome, log_index, _) = self
            .write_replayed(call, action, client_id, request_id)
            .await?;
        Ok((outcome, log_index))
    }

    /// `write`, also telling whether the answer was recorded by an earlier attempt.
    async fn write_replayed(
        &self,
        call: Call,
        action: Action,
        client_id: Option<String>,
        request_id: Option<u64>,
    ) -> Result<(Outcome, u64, bool), Status> {
        let session = service::session(client_id, request_id).map_err(|e| service_status(&e))?;
        let WriteOutcome {
            verdict,
            log_index,
            replayed,
        } = self
            .service
            .write(call, action, session)
            .await
            .map_err(|e| service_status(&e))?;
        let decision = verdict.map_err(|e| domain_status(&e))?;
        Ok((decision.outcome, log_index.unwrap_or_default(), replayed))
    }
}

/// The caller of a request, or UNAUTHENTICATED.
pub fn authenticated<T>(auth: &Authenticator, request: &Request<T>) -> Result<Caller, Status> {
    auth.authenticate(request.metadata())
        .map_err(|why| error(Code::Unauthenticated, "UNAUTHENTICATED", why))
}

/// The caller of a request if it has at least `required`, or UNAUTHENTICATED / PERMISSION_DENIED.
pub fn authorized<T>(
    auth: &Authenticator,
    request: &Request<T>,
    required: crate::domain::Role,
    action: &str,
) -> Result<Caller, Status> {
    let caller = authenticated(auth, request)?;
    if caller.role.allows(required) {
        Ok(caller)
    } else {
        Err(domain_status(&DomainError::PermissionDenied {
            role: caller.role,
            required,
            action: action.to_string(),
        }))
    }
}

fn error(code: Code, reason: &str, message: impl Into<String>) -> Status {
    let mut details = ErrorDetails::new();
    details.set_error_info(reason, ERROR_DOMAIN, HashMap::new());
    Status::with_error_details(code, message, details)
}

fn invalid_field(field: &str, rule: &str) -> Status {
    let mut details = ErrorDetails::new();
    details
        .set_error_info("INVALID_ARGUMENT", ERROR_DOMAIN, HashMap::new())
        .add_bad_request_violation(field, rule);
    Status::with_error_details(Code::InvalidArgument, format!("{field}: {rule}"), details)
}

/// The one mapping of domain errors to gRPC.
pub fn domain_status(e: &DomainError) -> Status {
    use DomainError as D;
    let code = match e {
        D::InvalidSsin { .. }
        | D::UnknownCountry { .. }
        | D::InvalidKeyTypeCode { .. }
        | D::UnknownKeyType { .. }
        | D::InvalidForeignKey { .. }
        | D::InvalidFormatRule { .. }
        | D::InvalidDate { .. }
        | D::InvalidPeriod { .. }
        | D::InvalidText { .. }
        | D::InvalidCbeNumber { .. }
        | D::TooManyRows { .. } => Code::InvalidArgument,
        D::LinkExists { .. } | D::KeyTypeExists { .. } => Code::AlreadyExists,
        D::LinkConflict { .. } | D::VersionMismatch { .. } | D::KeyTypeInactive { .. } => {
            Code::FailedPrecondition
        }
        D::LinkNotFound { .. } => Code::NotFound,
        D::PermissionDenied { .. } => Code::PermissionDenied,
    };
    let mut metadata = HashMap::new();
    if let Some(id) = e.link_id() {
        metadata.insert("link_id".to_string(), id.to_string());
    }
    if let Some(field) = e.field() {
        metadata.insert("field".to_string(), field.as_str().to_string());
    }
    let mut details = ErrorDetails::new();
    details.set_error_info(e.code(), ERROR_DOMAIN, metadata);
    if code == Code::InvalidArgument
        && let Some(field) = e.field()
    {
        details.add_bad_request_violation(field.as_str(), e.to_string());
    }
    Status::with_error_details(code, e.to_string(), details)
}

/// The one mapping of service errors to gRPC.
pub fn service_status(e: &ServiceError) -> Status {
    match e {
        ServiceError::Unavailable(_) | ServiceError::NotInCluster | ServiceError::Replacing => {
            error(Code::Unavailable, "UNAVAILABLE", e.to_string())
        }
        ServiceError::OutcomeUnknown(_) => {
            error(Code::DeadlineExceeded, "OUTCOME_UNKNOWN", e.to_string())
        }
        ServiceError::StaleRequest { .. } => {
            error(Code::FailedPrecondition, "STALE_REQUEST", e.to_string())
        }
        ServiceError::InvalidSession { field, rule } => invalid_field(field, rule),
        ServiceError::Store(_) | ServiceError::Internal(_) => {
            tracing::error!("internal error: {e}");
            error(
                Code::Internal,
                "INTERNAL",
                "internal error; see the node's log",
            )
        }
    }
}

/// The deadline a gRPC client set (`grpc-timeout`: an integer and a unit letter).
fn client_deadline(metadata: &tonic::metadata::MetadataMap) -> Option<tokio::time::Instant> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = digits.parse().ok()?;
    let timeout = match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    };
    tokio::time::Instant::now().checked_add(timeout)
}

fn consistency(value: i32) -> Consistency {
    if value == pb::Consistency::Linearizable as i32 {
        Consistency::Linearizable
    } else {
        Consistency::Local
    }
}

fn read_info(meta: ReadMeta) -> Option<pb::ReadInfo> {
    Some(pb::ReadInfo {
        node_id: meta.node_id,
        applied_index: meta.applied_index,
    })
}

pub fn link(l: &Link) -> pb::Link {
    pb::Link {
        id: l.id.0,
        ssin: l.ssin.to_string(),
        country: l.foreign_key.country.to_string(),
        key_type: l.foreign_key.key_type.to_string(),
        value: l.foreign_key.value.entered().to_string(),
        normalized_value: l.foreign_key.value.normalized().to_string(),
        valid_from: l.validity.begin().map(|d| d.to_string()),
        valid_to: l.validity.end().map(|d| d.to_string()),
        created_by: l.created_by.name.clone(),
        created_by_cbe: l.created_by.cbe.as_str().to_string(),
        created_at: l.created_at.to_string(),
        updated_at: l.updated_at.to_string(),
        version: l.version,
    }
}

fn key_type(k: &KeyType) -> pb::KeyType {
    pb::KeyType {
        code: k.code.to_string(),
        label_nl: k.labels.nl.clone(),
        label_fr: k.labels.fr.clone(),
        label_de: k.labels.de.clone(),
        label_en: k.labels.en.clone(),
        active: k.active,
    }
}

fn format_rule(r: &FormatRule) -> pb::FormatRule {
    pb::FormatRule {
        min_length: u32::from(r.min_length),
        max_length: u32::from(r.max_length),
        pattern: r.pattern.as_ref().map(|p| p.as_str().to_string()),
    }
}

fn audit_event(e: &AuditEvent) -> pb::AuditEvent {
    let (before, after, reason) = match &e.change {
        Change::LinkCreated { link: l } => (None, Some(link(l)), None),
        Change::LinkValidityChanged { before, after } => {
            (Some(link(before)), Some(link(after)), None)
        }
        Change::LinkDeleted { link: l, reason } => (Some(link(l)), None, Some(reason.clone())),
        _ => (None, None, None),
    };
    let caller = &e.command.caller;
    pb::AuditEvent {
        log_index: e.log_index,
        at: e.command.at.to_string(),
        action: e.command.action.name().to_string(),
        caller_organization: caller.organization.name.clone(),
        caller_cbe: caller.organization.cbe.as_str().to_string(),
        caller_role: caller.role.as_str().to_string(),
        ticket: e.command.context.as_ref().map(|c| c.ticket.clone()),
        legal_context: e.command.context.as_ref().map(|c| c.legal_context.clone()),
        before,
        after,
        reason,
    }
}

fn unexpected(outcome: &Outcome) -> Status {
    tracing::error!("unexpected outcome for the command: {outcome:?}");
    error(
        Code::Internal,
        "INTERNAL",
        "internal error; see the node's log",
    )
}

fn link_response(outcome: Outcome, log_index: u64) -> Result<Response<pb::LinkResponse>, Status> {
    match outcome {
        Outcome::Link(l) => Ok(Response::new(pb::LinkResponse {
            link: Some(link(&l)),
            log_index,
        })),
        other => Err(unexpected(&other)),
    }
}

fn key_type_response(
    outcome: Outcome,
    log_index: u64,
) -> Result<Response<pb::KeyTypeResponse>, Status> {
    match outcome {
        Outcome::KeyType(k) => Ok(Response::new(pb::KeyTypeResponse {
            key_type: Some(key_type(&k)),
            log_index,
        })),
        other => Err(unexpected(&other)),
    }
}

/// Narrows a u32 length from the wire to the domain's u16 (an out-of-range value is refused by
/// the rules as such, not truncated into a valid one).
fn length(value: u32) -> u16 {
    u16::try_from(value).unwrap_or(u16::MAX)
}

#[tonic::async_trait]
impl LinkRegister for LinkRegisterService {
    async fn search_links_by_ssin(
        &self,
        request: Request<pb::SearchLinksBySsinRequest>,
    ) -> Result<Response<pb::SearchLinksResponse>, Status> {
        let options = self.read(&request, request.get_ref().consistency)?;
        let r = request.into_inner();
        let query = SsinQuery {
            ssin: r.ssin,
            country: r.country,
            key_type: r.key_type,
            valid_on: r.valid_on,
        };
        let (links, meta) = self
            .service
            .search_by_ssin(&query, options)
            .await
            .map_err(|e| service_status(&e))?;
        let links = links.map_err(|e| domain_status(&e))?;
        Ok(Response::new(pb::SearchLinksResponse {
            links: links.iter().map(link).collect(),
            read: read_info(meta),
        }))
    }

    async fn search_links_by_foreign_key(
        &self,
        request: Request<pb::SearchLinksByForeignKeyRequest>,
    ) -> Result<Response<pb::SearchLinksResponse>, Status> {
        let options = self.read(&request, request.get_ref().consistency)?;
        let r = request.into_inner();
        let query = ForeignKeyQuery {
            country: r.country,
            value: r.value,
            key_type: r.key_type,
            valid_on: r.valid_on,
        };
        let (links, meta) = self
            .service
            .search_by_foreign_key(&query, options)
            .await
            .map_err(|e| service_status(&e))?;
        let links = links.map_err(|e| domain_status(&e))?;
        Ok(Response::new(pb::SearchLinksResponse {
            links: links.iter().map(link).collect(),
            read: read_info(meta),
        }))
    }

    async fn get_link(
        &self,
        request: Request<pb::GetLinkRequest>,
    ) -> Result<Response<pb::GetLinkResponse>, Status> {
        let options = self.read(&request, request.get_ref().consistency)?;
        let (found, meta) = self
            .service
            .get_link(request.get_ref().id, options)
            .await
            .map_err(|e| service_status(&e))?;
        let found = found.map_err(|e| domain_status(&e))?;
        Ok(Response::new(pb::GetLinkResponse {
            link: Some(link(&found)),
            read: read_info(meta),
        }))
    }

    async fn create_link(
        &self,
        request: Request<pb::CreateLinkRequest>,
    ) -> Result<Response<pb::LinkResponse>, Status> {
        let call = self.call(&request)?;
        let r = request.into_inner();
        let action = Action::CreateLink(CreateLink {
            ssin: r.ssin,
            country: r.country,
            key_type: r.key_type,
            value: r.value,
            valid_from: r.valid_from,
            valid_to: r.valid_to,
        });
        let (outcome, log_index) = self.write(call, action, r.client_id, r.request_id).await?;
        link_response(outcome, log_index)
    }

    async fn update_link_validity(
        &self,
        request: Request<pb::UpdateLinkValidityRequest>,
    ) -> Result<Response<pb::LinkResponse>, Status> {
        let call = self.call(&request)?;
        let r = request.into_inner();
        let action = Action::UpdateLinkValidity(UpdateLinkValidity {
            id: r.id,
            valid_from: r.valid_from,
            valid_to: r.valid_to,
            expected_version: r.expected_version,
        });
        let (outcome, log_index) = self.write(call, action, r.client_id, r.request_id).await?;
        link_response(outcome, log_index)
    }

    async fn delete_link(
        &self,
        request: Request<pb::DeleteLinkRequest>,
    ) -> Result<Response<pb::DeleteLinkResponse>, Status> {
        let call = self.call(&request)?;
        let r = request.into_inner();
        let action = Action::DeleteLink(DeleteLink {
            id: r.id,
            reason: r.reason,
        });
        match self.write(call, action, r.client_id, r.request_id).await? {
            (Outcome::LinkDeleted(id), log_index) => Ok(Response::new(pb::DeleteLinkResponse {
                id: id.0,
                log_index,
            })),
            (other, _) => Err(unexpected(&other)),
        }
    }

    async fn get_link_history(
        &self,
        request: Request<pb::GetLinkHistoryRequest>,
    ) -> Result<Response<pb::GetLinkHistoryResponse>, Status> {
        let options = self.read(&request, request.get_ref().consistency)?;
        let (events, meta) = self
            .service
            .link_history(request.get_ref().id, options)
            .await
            .map_err(|e| service_status(&e))?;
        let events = events.map_err(|e| domain_status(&e))?;
        Ok(Response::new(pb::GetLinkHistoryResponse {
            events: events.iter().map(audit_event).collect(),
            read: read_info(meta),
        }))
    }

    async fn list_key_types(
        &self,
        request: Request<pb::ListKeyTypesRequest>,
    ) -> Result<Response<pb::ListKeyTypesResponse>, Status> {
        let options = self.read(&request, request.get_ref().consistency)?;
        let (types, meta) = self
            .service
            .key_types(options)
            .await
            .map_err(|e| service_status(&e))?;
        Ok(Response::new(pb::ListKeyTypesResponse {
            key_types: types.iter().map(key_type).collect(),
            read: read_info(meta),
        }))
    }

    async fn add_key_type(
        &self,
        request: Request<pb::AddKeyTypeRequest>,
    ) -> Result<Response<pb::KeyTypeResponse>, Status> {
        let call = self.call(&request)?;
        let r = request.into_inner();
        let action = Action::AddKeyType(AddKeyType {
            code: r.code,
            label_nl: r.label_nl,
            label_fr: r.label_fr,
            label_de: r.label_de,
            label_en: r.label_en,
        });
        let (outcome, log_index) = self.write(call, action, r.client_id, r.request_id).await?;
        key_type_response(outcome, log_index)
    }

    async fn set_key_type_active(
        &self,
        request: Request<pb::SetKeyTypeActiveRequest>,
    ) -> Result<Response<pb::KeyTypeResponse>, Status> {
        let call = self.call(&request)?;
        let r = request.into_inner();
        let action = Action::SetKeyTypeActive(SetKeyTypeActive {
            code: r.code,
            active: r.active,
        });
        let (outcome, log_index) = self.write(call, action, r.client_id, r.request_id).await?;
        key_type_response(outcome, log_index)
    }

    async fn list_format_rules(
        &self,
        request: Request<pb::ListFormatRulesRequest>,
    ) -> Result<Response<pb::ListFormatRulesResponse>, Status> {
        let options = self.read(&request, request.get_ref().consistency)?;
        let (rules, meta) = self
            .service
            .format_rules(options)
            .await
            .map_err(|e| service_status(&e))?;
        Ok(Response::new(pb::ListFormatRulesResponse {
            rules: rules
                .iter()
                .map(|(country, key_type, rule)| pb::CountryFormatRule {
                    country: country.to_string(),
                    key_type: key_type.to_string(),
                    rule: Some(format_rule(rule)),
                })
                .collect(),
            default_rule: Some(format_rule(&FormatRule::default_rule())),
            read: read_info(meta),
        }))
    }

    async fn set_format_rule(
        &self,
        request: Request<pb::SetFormatRuleRequest>,
    ) -> Result<Response<pb::FormatRuleResponse>, Status> {
        let call = self.call(&request)?;
        let r = request.into_inner();
        let action = Action::SetFormatRule(SetFormatRule {
            country: r.country,
            key_type: r.key_type,
            rule: r.rule.map(|rule| FormatRuleInput {
                min_length: length(rule.min_length),
                max_length: length(rule.max_length),
                pattern: rule.pattern,
            }),
        });
        match self.write(call, action, r.client_id, r.request_id).await? {
            (
                Outcome::FormatRule {
                    country,
                    key_type,
                    rule,
                },
                log_index,
            ) => Ok(Response::new(pb::FormatRuleResponse {
                country: country.to_string(),
                key_type: key_type.to_string(),
                rule: rule.as_ref().map(format_rule),
                log_index,
            })),
            (other, _) => Err(unexpected(&other)),
        }
    }

    async fn import_links(
        &self,
        request: Request<pb::ImportLinksRequest>,
    ) -> Result<Response<pb::ImportLinksResponse>, Status> {
        let call = self.call(&request)?;
        let r = request.into_inner();
        let rows = r
            .rows
            .into_iter()
            .map(|row| CreateLink {
                ssin: row.ssin,
                country: row.country,
                key_type: row.key_type,
                value: row.value,
                valid_from: row.valid_from,
                valid_to: row.valid_to,
            })
            .collect();
        let action = Action::ImportLinks(ImportLinks { rows });
        let written = self
            .write_replayed(call, action, r.client_id, r.request_id)
            .await?;
        match written {
            (Outcome::Imported(outcomes), log_index, replayed) => {
                Ok(Response::new(pb::ImportLinksResponse {
                    rows: outcomes.iter().map(import_row).collect(),
                    log_index,
                    replayed,
                }))
            }
            (other, ..) => Err(unexpected(&other)),
        }
    }

    type ExportLinksStream = ReceiverStream<Result<pb::ExportLinksResponse, Status>>;

    async fn export_links(
        &self,
        request: Request<pb::ExportLinksRequest>,
    ) -> Result<Response<Self::ExportLinksStream>, Status> {
        authorized(&self.auth, &request, Role::Keeper, "export_links")?;
        let (tx, rx) = mpsc::channel(4);
        let service = self.service.clone();
        tokio::task::spawn_blocking(move || {
            let mut chunk = Vec::with_capacity(EXPORT_CHUNK);
            let result = service.export_links(|l| {
                chunk.push(link(&l));
                if chunk.len() < EXPORT_CHUNK {
                    return true;
                }
                let links = std::mem::replace(&mut chunk, Vec::with_capacity(EXPORT_CHUNK));
                // A client that went away stops the scan.
                tx.blocking_send(Ok(pb::ExportLinksResponse { links }))
                    .is_ok()
            });
            let last = match result {
                Ok(()) if chunk.is_empty() => return,
                Ok(()) => Ok(pb::ExportLinksResponse { links: chunk }),
                Err(e) => Err(service_status(&e)),
            };
            let _ = tx.blocking_send(last);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
