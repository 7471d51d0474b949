//! The SOAP front end: the `LinkRegister` web service over HTTP, described by a hand-written
//! WSDL 1.1 (document/literal wrapped) and XSD, in the conventions CBSS clients know.
//!
//! ```text
//!   POST /soap/LinkRegister ─► content type ─► SOAP 1.1 | 1.2
//!        │ body ≤ 1 MiB, UTF-8, no DTD      (xml.rs)
//!        ▼
//!   Envelope ─► Header: WS-Security UsernameToken, mustUnderstand   (envelope.rs)
//!        │      Body: one operation element (SOAPAction must agree)
//!        ▼
//!   caller (UsernameToken or Authorization: Bearer) ─► messages::execute ─► Service
//!        ▼
//!   reply (status + payload)  |  Fault (systemError: severity, reasonCode, diagnostic)
//!   GET /soap/LinkRegister?wsdl, ?xsd ─► the contract, with this node's advertised address
//! ```
//!
//! Business outcomes are replies whose status says what happened; technical problems are
//! faults, in the SOAP version of the request. Errors become faults in [`SoapError::fault`]
//! only, and domain errors become statuses in `messages` only.

pub mod envelope;
pub mod messages;
pub mod xml;

use std::borrow::Cow;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use self::envelope::{UsernameToken, Version};
use self::messages::{Customer, Operation, Reply, Request};
use self::xml::{Writer, XmlError};
use super::auth::Authenticator;
use crate::domain::Caller;
use crate::domain::command::TICKET_MAX;
use crate::service::{Service, ServiceError};

/// The namespace of the service's messages; its last segment is the contract's version.
pub const NS: &str = "http://linkreg.be/soap/LinkRegister/v1";
pub const PATH: &str = "/soap/LinkRegister";
pub const BODY_MAX: usize = 1024 * 1024;

const WSDL: &str = include_str!("LinkRegister.wsdl");
const XSD: &str = include_str!("LinkRegister.xsd");

/// The one error type of the SOAP layer; each becomes a fault.
#[derive(Debug, thiserror::Error)]
pub enum SoapError {
    #[error("{0}")]
    Xml(#[from] XmlError),
    #[error("the message is larger than {BODY_MAX} bytes")]
    TooLarge,
    #[error("{0}")]
    MediaType(String),
    #[error("{0}")]
    VersionMismatch(String),
    #[error("the header block {0} must be understood and is not")]
    MustUnderstand(String),
    #[error("{0}")]
    Invalid(String),
    #[error("unknown operation {0}")]
    UnknownOperation(String),
    #[error("SOAPAction {sent:?} does not match the body's operation ({expected})")]
    ActionMismatch { sent: String, expected: String },
    #[error("authentication failed: {0}")]
    Unauthenticated(Cow<'static, str>),
    #[error("{0}")]
    PermissionDenied(String),
    #[error(transparent)]
    Service(ServiceError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Blame {
    Sender,
    Receiver,
    VersionMismatch,
    MustUnderstand,
}

/// What a fault says: whose fault, the stable reason, whether a retry may help.
#[derive(Debug)]
struct Fault {
    blame: Blame,
    reason_code: &'static str,
    severity: &'static str,
    diagnostic: String,
    http: StatusCode,
}

impl SoapError {
    /// The one mapping of errors to SOAP faults.
    fn fault(&self) -> Fault {
        use SoapError as E;
        let (blame, reason_code, http) = match self {
            E::Xml(_) => (Blame::Sender, "MALFORMED_MESSAGE", None),
            E::TooLarge => (
                Blame::Sender,
                "MESSAGE_TOO_LARGE",
                Some(StatusCode::PAYLOAD_TOO_LARGE),
            ),
            E::MediaType(_) => (
                Blame::Sender,
                "UNSUPPORTED_MEDIA_TYPE",
                Some(StatusCode::UNSUPPORTED_MEDIA_TYPE),
            ),
            E::VersionMismatch(_) => (Blame::VersionMismatch, "VERSION_MISMATCH", None),
            E::MustUnderstand(_) => (Blame::MustUnderstand, "MUST_UNDERSTAND", None),
            E::Invalid(_) => (Blame::Sender, "INVALID_MESSAGE", None),
            E::UnknownOperation(_) => (Blame::Sender, "UNKNOWN_OPERATION", None),
            E::ActionMismatch { .. } => (Blame::Sender, "ACTION_MISMATCH", None),
            E::Unauthenticated(_) => (Blame::Sender, "UNAUTHENTICATED", None),
            E::PermissionDenied(_) => (Blame::Sender, "PERMISSION_DENIED", None),
            E::Service(
                ServiceError::Unavailable(_) | ServiceError::NotInCluster | ServiceError::Replacing,
            ) => (Blame::Receiver, "UNAVAILABLE", None),
            E::Service(ServiceError::OutcomeUnknown(_)) => {
                (Blame::Receiver, "OUTCOME_UNKNOWN", None)
            }
            E::Service(_) => (Blame::Receiver, "INTERNAL", None),
        };
        let severity = match reason_code {
            // Nothing was applied, or a retry with the same client and request id tells.
            "UNAVAILABLE" | "OUTCOME_UNKNOWN" => "RETRYABLE",
            _ => "FATAL",
        };
        let diagnostic = match self {
            E::Service(ServiceError::Store(_) | ServiceError::Internal(_)) => {
                tracing::error!("internal error under SOAP: {self}");
                "internal error; see the node's log".to_string()
            }
            other => other.to_string(),
        };
        Fault {
            blame,
            reason_code,
            severity,
            diagnostic,
            http: http.unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        }
    }
}

/// What a SOAP request came to, attached to its HTTP response for `api::observe`, which
/// measures this router from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// The operation, once the body named a known one.
    pub operation: Option<&'static str>,
    /// The reply's status value (`OK`, `DATA_FOUND`, `NO_DATA_FOUND`, `NO_RESULT`), or
    /// [`Exchange::FAULT`].
    pub status: &'static str,
    /// The stable code of a `NO_RESULT` reply, or the reasonCode of a fault.
    pub code: Option<String>,
}

impl Exchange {
    pub const FAULT: &'static str = "FAULT";

    fn reply(status: &messages::Status) -> Exchange {
        Exchange {
            operation: None,
            status: status.value,
            code: (status.value == "NO_RESULT").then(|| status.code.clone()),
        }
    }
}

struct Soap {
    service: Arc<Service>,
    auth: Authenticator,
    wsdl: String,
}

/// The routes of the SOAP service; `advertised_http` (host:port) goes into the WSDL.
pub fn router(service: Arc<Service>, auth: Authenticator, advertised_http: &str) -> Router {
    let location = format!("http://{advertised_http}{PATH}");
    let wsdl = WSDL
        .replace("{SERVICE_LOCATION}", &location)
        .replace("{SCHEMA_LOCATION}", &format!("{location}?xsd"));
    let state = Arc::new(Soap {
        service,
        auth,
        wsdl,
    });
    Router::new()
        .route(PATH, get(describe).post(call))
        .with_state(state)
}

async fn describe(State(soap): State<Arc<Soap>>, RawQuery(query): RawQuery) -> Response {
    let xml =
        |text: String| ([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], text).into_response();
    match query.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("wsdl") => xml(soap.wsdl.clone()),
        Some("xsd") => xml(XSD.to_string()),
        _ => (
            StatusCode::OK,
            "linkreg LinkRegister SOAP service: POST SOAP 1.1 or 1.2 here; the contract is at ?wsdl\n",
        )
            .into_response(),
    }
}

/// The SOAP version a content type announces, and the action a SOAP 1.2 one carries.
fn version_of(headers: &HeaderMap) -> Result<(Version, Option<String>), SoapError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mut parts = content_type.split(';').map(str::trim);
    let media = parts.next().unwrap_or_default().to_ascii_lowercase();
    let mut action = None;
    for parameter in parts {
        let Some((key, value)) = parameter.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"');
        match key.trim().to_ascii_lowercase().as_str() {
            "charset" if !value.eq_ignore_ascii_case("utf-8") => {
                return Err(SoapError::MediaType(format!(
                    "charset {value} is not accepted, only utf-8"
                )));
            }
            "action" => action = Some(value.to_string()),
            _ => {}
        }
    }
    match media.as_str() {
        "text/xml" => {
            let action = headers
                .get("soapaction")
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().trim_matches('"').to_string());
            Ok((Version::Soap11, action))
        }
        "application/soap+xml" => Ok((Version::Soap12, action)),
        other => Err(SoapError::MediaType(format!(
            "content type {other:?}: send text/xml (SOAP 1.1) or application/soap+xml (SOAP 1.2)"
        ))),
    }
}

async fn call(State(soap): State<Arc<Soap>>, headers: HeaderMap, body: Body) -> Response {
    let received = OffsetDateTime::now_utc();
    let (version, action) = match version_of(&headers) {
        Ok(v) => v,
        // Without a SOAP content type, answer in SOAP 1.1, the older and more common one.
        Err(e) => return fault(Version::Soap11, &e),
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > DRAIN_MAX) {
        return fault(version, &SoapError::TooLarge);
    }
    // A client trickling its body must not hold a connection and a buffer for ever.
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, read_body(body)).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return fault(version, &e),
        Err(_) => {
            let late = SoapError::Invalid(format!(
                "the body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ));
            return fault(version, &late);
        }
    };
    let (envelope, request) = match inspect(&bytes, version, action) {
        Ok(inspected) => inspected,
        Err(e) => return fault(version, &e),
    };
    let operation = request.operation;
    let mut response = match handle(&soap, version, envelope, request, &headers, received).await {
        Ok((reply, exchange)) => {
            let mut response =
                ([(header::CONTENT_TYPE, version.content_type())], reply).into_response();
            response.extensions_mut().insert(exchange);
            response
        }
        Err(e) => fault(version, &e),
    };
    if let Some(exchange) = response.extensions_mut().get_mut::<Exchange>() {
        exchange.operation = Some(operation.name());
    }
    response
}

/// An oversized body is still read (up to this much) before the fault goes out, so the client
/// is not cut off mid-send and sees the fault rather than a reset connection.
const DRAIN_MAX: usize = 4 * BODY_MAX;
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

async fn read_body(body: Body) -> Result<Vec<u8>, SoapError> {
    use tokio_stream::StreamExt;
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| SoapError::Invalid(format!("reading the body: {e}")))?;
        total = total.saturating_add(chunk.len());
        if total > DRAIN_MAX {
            return Err(SoapError::TooLarge);
        }
        if total <= BODY_MAX {
            bytes.extend_from_slice(&chunk);
        }
    }
    if total > BODY_MAX {
        return Err(SoapError::TooLarge);
    }
    Ok(bytes)
}

async fn handle(
    soap: &Soap,
    version: Version,
    envelope: envelope::Envelope,
    request: Request,
    headers: &HeaderMap,
    received: OffsetDateTime,
) -> Result<(String, Exchange), SoapError> {
    let caller = authenticate(&soap.auth, envelope.security, headers)?;
    let operation = request.operation;
    let customer = request.common.customer.clone();
    let reply = messages::execute(&soap.service, caller, request, &envelope.operation).await?;
    let exchange = Exchange::reply(&reply.status);
    Ok((
        render(version, operation, &customer, received, reply),
        exchange,
    ))
}

/// Everything about a request that needs no register: well-formed, hardened XML, the envelope
/// of its version, a known operation agreeing with the SOAPAction, every element where the
/// schema puts it and of its type. Pure, so it can be fuzzed.
pub fn inspect(
    body: &[u8],
    version: Version,
    action: Option<String>,
) -> Result<(envelope::Envelope, Request), SoapError> {
    let envelope = envelope::open(xml::parse(body)?, version)?;
    let operation = Operation::of(&envelope.operation)?;
    if let Some(sent) = action.filter(|a| !a.is_empty())
        && sent != operation.action()
    {
        return Err(SoapError::ActionMismatch {
            sent,
            expected: operation.action(),
        });
    }
    let request = Request::read(operation, &envelope.operation)?;
    // The reply echoes informationCustomer: it must be valid for the schema as it came.
    let ticket = request.common.customer.ticket.chars().count();
    if !(1..=TICKET_MAX).contains(&ticket) {
        return Err(SoapError::Invalid(format!(
            "informationCustomer/ticket: must have 1 to {TICKET_MAX} characters, not {ticket}"
        )));
    }
    let sent = &request.common.customer.timestamp_sent;
    if !is_xs_date_time(sent) {
        return Err(SoapError::Invalid(format!(
            "informationCustomer/timestampSent: {sent:?} is not an xs:dateTime"
        )));
    }
    Ok((envelope, request))
}

fn authenticate(
    auth: &Authenticator,
    token: Option<UsernameToken>,
    headers: &HeaderMap,
) -> Result<Caller, SoapError> {
    let unknown = || SoapError::Unauthenticated("unknown token".into());
    if let Some(token) = token {
        let caller = auth.caller(&token.password).ok_or_else(unknown)?;
        if caller.organization.name != token.username {
            return Err(SoapError::Unauthenticated(
                "the Username is not the name of the token's caller".into(),
            ));
        }
        return Ok(caller);
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .ok_or(SoapError::Unauthenticated(
            "no credentials: send a WS-Security UsernameToken or Authorization: Bearer <token>"
                .into(),
        ))?
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or(SoapError::Unauthenticated(
            "Authorization must be \"Bearer <token>\"".into(),
        ))?;
    auth.caller(bearer).ok_or_else(unknown)
}

/// The lexical space of xs:dateTime: a date, `T`, a time with optional fraction, an optional
/// zone (`Z` or ±hh:mm).
fn is_xs_date_time(text: &str) -> bool {
    let text = text.trim();
    // RFC 3339 parsers accept a lowercase `t` and `z`; xs:dateTime does not.
    if text.contains(['t', 'z']) {
        return false;
    }
    if OffsetDateTime::parse(text, &Rfc3339).is_ok() {
        return true;
    }
    let format = time::macros::format_description!(
        version = 2,
        "[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]"
    );
    time::PrimitiveDateTime::parse(text, &format).is_ok()
}

fn timestamp(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

fn envelope_prefix(version: Version) -> &'static str {
    match version {
        Version::Soap11 => "soapenv",
        Version::Soap12 => "env",
    }
}

fn render(
    version: Version,
    operation: Operation,
    customer: &Customer,
    received: OffsetDateTime,
    reply: Reply,
) -> String {
    let env = envelope_prefix(version);
    let (envelope, body) = (format!("{env}:Envelope"), format!("{env}:Body"));
    let response = format!("lr:{}Response", operation.name());
    let mut w = Writer::new();
    w.open_with(
        &envelope,
        &[
            (&format!("xmlns:{env}"), version.namespace()),
            ("xmlns:lr", NS),
        ],
    )
    .open(&body)
    .open(&response)
    .open("lr:informationCustomer")
    .leaf("lr:ticket", &customer.ticket)
    .leaf("lr:timestampSent", &customer.timestamp_sent)
    .open("lr:customerIdentification")
    .leaf("lr:cbeNumber", &customer.cbe_number)
    .close("lr:customerIdentification")
    .close("lr:informationCustomer")
    .open("lr:informationServer")
    .leaf("lr:ticket", uuid::Uuid::new_v4())
    .leaf("lr:timestampReceive", timestamp(received))
    .leaf("lr:timestampReply", timestamp(OffsetDateTime::now_utc()))
    .close("lr:informationServer")
    .open("lr:status")
    .leaf("lr:value", reply.status.value)
    .leaf("lr:code", &reply.status.code)
    .leaf("lr:description", &reply.status.description);
    for (name, value) in &reply.status.information {
        w.open("lr:information")
            .leaf("lr:fieldName", name)
            .leaf("lr:fieldValue", value)
            .close("lr:information");
    }
    w.close("lr:status")
        .append(reply.payload)
        .close(&response)
        .close(&body)
        .close(&envelope);
    w.finish()
}

fn fault(version: Version, e: &SoapError) -> Response {
    let fault = e.fault();
    match fault.blame {
        Blame::Receiver => tracing::warn!("SOAP fault {}: {}", fault.reason_code, fault.diagnostic),
        _ => tracing::debug!("SOAP fault {}: {}", fault.reason_code, fault.diagnostic),
    }
    let env = envelope_prefix(version);
    let q = |name: &str| format!("{env}:{name}");
    let code = match (version, fault.blame) {
        (_, Blame::VersionMismatch) => q("VersionMismatch"),
        (_, Blame::MustUnderstand) => q("MustUnderstand"),
        (Version::Soap11, Blame::Sender) => q("Client"),
        (Version::Soap11, Blame::Receiver) => q("Server"),
        (Version::Soap12, Blame::Sender) => q("Sender"),
        (Version::Soap12, Blame::Receiver) => q("Receiver"),
    };
    let mut detail = Writer::fragment();
    detail
        .open_with("lr:systemError", &[("xmlns:lr", NS)])
        .leaf("lr:severity", fault.severity)
        .leaf("lr:reasonCode", fault.reason_code)
        .leaf("lr:diagnostic", &fault.diagnostic)
        .close("lr:systemError");
    let mut w = Writer::new();
    w.open_with(
        &q("Envelope"),
        &[(&format!("xmlns:{env}"), version.namespace())],
    )
    .open(&q("Body"))
    .open(&q("Fault"));
    let mut http = fault.http;
    match version {
        Version::Soap11 => {
            w.leaf("faultcode", &code)
                .leaf("faultstring", &fault.diagnostic)
                .open("detail")
                .append(detail)
                .close("detail");
        }
        Version::Soap12 => {
            w.open(&q("Code"))
                .leaf(&q("Value"), &code)
                .close(&q("Code"))
                .open(&q("Reason"))
                .open_with(&q("Text"), &[("xml:lang", "en")])
                .text(&fault.diagnostic)
                .close(&q("Text"))
                .close(&q("Reason"))
                .open(&q("Detail"))
                .append(detail)
                .close(&q("Detail"));
            // SOAP 1.2 over HTTP: the sender's faults are 400, the receiver's 500.
            if http == StatusCode::INTERNAL_SERVER_ERROR && fault.blame != Blame::Receiver {
                http = StatusCode::BAD_REQUEST;
            }
        }
    }
    w.close(&q("Fault")).close(&q("Body")).close(&q("Envelope"));
    let mut response = (
        http,
        [(header::CONTENT_TYPE, version.content_type())],
        w.finish(),
    )
        .into_response();
    response.extensions_mut().insert(Exchange {
        operation: None,
        status: Exchange::FAULT,
        code: Some(fault.reason_code.to_string()),
    });
    response
}

#[cfg(test)]
mod tests;
