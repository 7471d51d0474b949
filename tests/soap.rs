//! The SOAP front end over a real HTTP socket, against a real node: the contract it serves,
//! business outcomes as statuses, technical ones as faults, hostile input changing nothing, and
//! the audit trail keeping the client's ticket and legal context.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use linkreg::api::auth::Callers;
use linkreg::api::soap::{BODY_MAX, NS};
use linkreg::domain::{Caller, Organization, RegisterView, Role};
use linkreg::server::Running;
use linkreg::service::Consistency;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const S11: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const S12: &str = "http://www.w3.org/2003/05/soap-envelope";
const WSSE: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
const CBE: &str = "0123456749";

fn caller(name: &str, role: Role, cbe: &str) -> Caller {
    Caller {
        organization: Organization::new(name, cbe).unwrap(),
        role,
    }
}

struct Node {
    _dir: tempfile::TempDir,
    running: Running,
}

async fn node() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(1, dir.path(), true, None, Duration::from_secs(5));
    let callers = Callers::from_tokens(&[
        ("reader-token", caller("Reader org", Role::Reader, CBE)),
        ("writer-token", caller("Writer org", Role::Writer, CBE)),
        ("keeper-token", caller("Keeper org", Role::Keeper, CBE)),
        // Another organization, to show the declared CBE number must be the caller's.
        (
            "other-token",
            caller("Other org", Role::Writer, "0206653946"),
        ),
    ]);
    let running = common::serve(config, callers).await;
    Node { _dir: dir, running }
}

/// Everything a command could have changed, and the log's length.
fn register(running: &Running) -> String {
    let log = running.node.raft.metrics().borrow().last_log_index;
    format!("{}\n{log:?}", common::register(running))
}

struct Reply {
    status: u16,
    content_type: String,
    body: String,
}

impl Reply {
    /// The text of the first element with this local name.
    fn text(&self, name: &str) -> Option<String> {
        let open = format!("<lr:{name}>");
        let start = self.body.find(&open)? + open.len();
        let end = self.body[start..].find("</")?;
        Some(self.body[start..start + end].to_string())
    }

    fn all(&self, name: &str) -> Vec<String> {
        let open = format!("<lr:{name}>");
        let mut found = Vec::new();
        let mut rest = self.body.as_str();
        while let Some(at) = rest.find(&open) {
            rest = &rest[at + open.len()..];
            if let Some(end) = rest.find("</") {
                found.push(rest[..end].to_string());
            }
        }
        found
    }

    fn is_fault(&self) -> bool {
        self.body.contains(":Fault>")
    }

    fn reason_code(&self) -> Option<String> {
        self.text("reasonCode")
    }
}

async fn http(addr: SocketAddr, head: &str, body: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{head}\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // The server may answer (413) before reading all of a too-large body.
    let _ = stream.write_all(body).await;
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = headers
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let content_type = headers
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    Reply {
        status,
        content_type,
        body: body.to_string(),
    }
}

#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    UsernameToken(&'a str, &'a str),
    Bearer(&'a str),
}

fn information_customer(ticket: &str, cbe: &str) -> String {
    format!(
        "<lr:informationCustomer><lr:ticket>{ticket}</lr:ticket>\
         <lr:timestampSent>2026-12-03T10:00:00+01:00</lr:timestampSent>\
         <lr:customerIdentification><lr:cbeNumber>{cbe}</lr:cbeNumber></lr:customerIdentification>\
         </lr:informationCustomer><lr:legalContext>Art. 5 Law of 15 January 1990</lr:legalContext>"
    )
}

fn envelope(soap: &str, auth: Auth<'_>, operation: &str, payload: &str) -> String {
    let header = match auth {
        Auth::UsernameToken(user, password) => format!(
            "<s:Header><wsse:Security xmlns:wsse=\"{WSSE}\"><wsse:UsernameToken>\
             <wsse:Username>{user}</wsse:Username><wsse:Password>{password}</wsse:Password>\
             </wsse:UsernameToken></wsse:Security></s:Header>"
        ),
        _ => String::new(),
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><s:Envelope xmlns:s=\"{soap}\" xmlns:lr=\"{NS}\">\
         {header}<s:Body><lr:{operation}Request>{}{payload}</lr:{operation}Request></s:Body></s:Envelope>",
        information_customer("T-42", CBE)
    )
}

async fn soap11(addr: SocketAddr, auth: Auth<'_>, operation: &str, payload: &str) -> Reply {
    let body = envelope(S11, auth, operation, payload);
    post(addr, S11, auth, operation, body.as_bytes()).await
}

async fn soap12(addr: SocketAddr, auth: Auth<'_>, operation: &str, payload: &str) -> Reply {
    let body = envelope(S12, auth, operation, payload);
    post(addr, S12, auth, operation, body.as_bytes()).await
}

async fn post(addr: SocketAddr, soap: &str, auth: Auth<'_>, operation: &str, body: &[u8]) -> Reply {
    // An empty SOAPAction leaves the body to say which operation it is.
    let action = if operation.is_empty() {
        String::new()
    } else {
        format!("{NS}/{operation}")
    };
    let mut head = String::from("POST /soap/LinkRegister HTTP/1.1");
    if soap == S11 {
        head.push_str(&format!(
            "\r\nContent-Type: text/xml; charset=utf-8\r\nSOAPAction: \"{action}\""
        ));
    } else {
        head.push_str(&format!(
            "\r\nContent-Type: application/soap+xml; charset=utf-8; action=\"{action}\""
        ));
    }
    if let Auth::Bearer(token) = auth {
        head.push_str(&format!("\r\nAuthorization: Bearer {token}"));
    }
    http(addr, &head, body).await
}

const WRITER: Auth<'static> = Auth::UsernameToken("Writer org", "writer-token");
const KEEPER: Auth<'static> = Auth::UsernameToken("Keeper org", "keeper-token");
const CREATE: &str = "<lr:ssin>85073003328</lr:ssin><lr:country>nl</lr:country>\
    <lr:keyType>PASSPORT</lr:keyType><lr:value>NX-123.456</lr:value>\
    <lr:validityPeriod><lr:beginDate>2020-01-01</lr:beginDate></lr:validityPeriod>";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_is_served_with_the_nodes_address() {
    let n = node().await;
    let addr = n.running.http_addr;
    let wsdl = http(addr, "GET /soap/LinkRegister?wsdl HTTP/1.1", b"").await;
    assert_eq!(wsdl.status, 200);
    assert!(
        wsdl.content_type.starts_with("text/xml"),
        "{}",
        wsdl.content_type
    );
    let location = format!("location=\"http://{addr}/soap/LinkRegister\"");
    assert_eq!(wsdl.body.matches(&location).count(), 2, "{}", wsdl.body);
    assert!(wsdl.body.contains(&format!(
        "schemaLocation=\"http://{addr}/soap/LinkRegister?xsd\""
    )));
    let xsd = http(addr, "GET /soap/LinkRegister?xsd HTTP/1.1", b"").await;
    assert_eq!(xsd.status, 200);
    assert!(xsd.body.contains(&format!("targetNamespace=\"{NS}\"")));
    n.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_search_update_delete_and_the_audit_trail() {
    let n = node().await;
    let addr = n.running.http_addr;
    let created = soap11(addr, WRITER, "createLink", CREATE).await;
    assert_eq!(created.status, 200, "{}", created.body);
    assert!(created.content_type.starts_with("text/xml"));
    assert_eq!(
        created.text("value").as_deref(),
        Some("OK"),
        "{}",
        created.body
    );
    assert_eq!(created.text("ticket").as_deref(), Some("T-42"));
    let server_ticket = created.all("ticket")[1].clone();
    assert_eq!(server_ticket.len(), 36, "a UUID: {server_ticket}");
    assert_eq!(created.text("country").as_deref(), Some("NL"));
    assert_eq!(created.text("normalizedValue").as_deref(), Some("NX123456"));
    let id: u64 = created.text("id").unwrap().parse().unwrap();

    // The same search in SOAP 1.2 with a bearer token.
    let found = soap12(
        addr,
        Auth::Bearer("reader-token"),
        "searchLinksBySsin",
        "<lr:ssin>85.07.30-033.28</lr:ssin><lr:consistency>LINEARIZABLE</lr:consistency>",
    )
    .await;
    assert_eq!(found.status, 200, "{}", found.body);
    assert!(found.content_type.starts_with("application/soap+xml"));
    assert_eq!(found.text("value").as_deref(), Some("DATA_FOUND"));
    assert_eq!(found.all("link").len(), 1, "{}", found.body);
    assert_eq!(found.text("nodeId").as_deref(), Some("1"));

    let updated = soap11(
        addr,
        WRITER,
        "updateLinkValidity",
        &format!(
            "<lr:id>{id}</lr:id><lr:validityPeriod><lr:beginDate>2020-01-01</lr:beginDate>\
             <lr:endDate>2030-12-31</lr:endDate></lr:validityPeriod><lr:expectedVersion>1</lr:expectedVersion>"
        ),
    )
    .await;
    assert_eq!(
        updated.text("value").as_deref(),
        Some("OK"),
        "{}",
        updated.body
    );
    assert_eq!(updated.text("endDate").as_deref(), Some("2030-12-31"));
    assert_eq!(updated.text("version").as_deref(), Some("2"));

    let deleted = soap11(
        addr,
        KEEPER,
        "deleteLink",
        &format!("<lr:id>{id}</lr:id><lr:reason>entered by mistake</lr:reason>"),
    )
    .await;
    assert_eq!(
        deleted.text("value").as_deref(),
        Some("OK"),
        "{}",
        deleted.body
    );

    // The audit trail names the caller, its ticket and legal context, for every change.
    let (events, _) = n
        .running
        .service
        .link_history(id, Consistency::Local)
        .await
        .unwrap();
    let events = events.unwrap();
    assert_eq!(events.len(), 3);
    for (event, who) in events
        .iter()
        .zip(["Writer org", "Writer org", "Keeper org"])
    {
        assert_eq!(event.command.caller.organization.name, who);
        let context = event.command.context.as_ref().expect("a SOAP context");
        assert_eq!(
            (context.ticket.as_str(), context.legal_context.as_str()),
            ("T-42", "Art. 5 Law of 15 January 1990")
        );
    }
    let history = soap11(
        addr,
        Auth::Bearer("reader-token"),
        "getLinkHistory",
        &format!("<lr:id>{id}</lr:id>"),
    )
    .await;
    assert_eq!(history.all("event").len(), 3, "{}", history.body);
    assert_eq!(history.all("legalContext").len(), 3);
    n.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn business_outcomes_are_statuses_naming_the_field() {
    let n = node().await;
    let addr = n.running.http_addr;
    let before = register(&n.running);
    let bad = soap11(
        addr,
        WRITER,
        "createLink",
        &CREATE.replace("85073003328", "12345678901"),
    )
    .await;
    assert_eq!(bad.status, 200, "{}", bad.body);
    assert!(!bad.is_fault());
    assert_eq!(bad.text("value").as_deref(), Some("NO_RESULT"));
    assert_eq!(bad.text("code").as_deref(), Some("INVALID_SSIN"));
    assert_eq!(bad.text("fieldName").as_deref(), Some("ssin"));
    assert_eq!(bad.text("fieldValue").as_deref(), Some("12345678901"));
    let bad_date = soap11(
        addr,
        WRITER,
        "createLink",
        &CREATE.replace("2020-01-01", "2021-02-30"),
    )
    .await;
    assert_eq!(bad_date.text("code").as_deref(), Some("INVALID_DATE"));
    assert_eq!(
        bad_date.text("fieldName").as_deref(),
        Some("validityPeriod/beginDate")
    );
    assert_eq!(bad_date.text("fieldValue").as_deref(), Some("2021-02-30"));
    let body = envelope(S11, WRITER, "createLink", CREATE).replace("T-42", "  ");
    let bad_context = post(addr, S11, WRITER, "createLink", body.as_bytes()).await;
    assert_eq!(
        bad_context.text("code").as_deref(),
        Some("INVALID_TEXT"),
        "{}",
        bad_context.body
    );
    assert_eq!(
        bad_context.text("fieldName").as_deref(),
        Some("informationCustomer/ticket")
    );
    assert_eq!(
        register(&n.running),
        before,
        "a refused request changed the register"
    );

    let created = soap11(addr, WRITER, "createLink", CREATE).await;
    let id = created.text("id").unwrap();
    let again = soap11(addr, WRITER, "createLink", CREATE).await;
    assert_eq!(again.text("code").as_deref(), Some("LINK_EXISTS"));
    assert_eq!(again.text("fieldName").as_deref(), Some("existingLinkId"));
    assert_eq!(again.text("fieldValue").as_deref(), Some(id.as_str()));
    let missing = soap11(addr, WRITER, "getLink", "<lr:id>999</lr:id>").await;
    assert_eq!(missing.text("code").as_deref(), Some("LINK_NOT_FOUND"));
    assert_eq!(missing.text("fieldValue").as_deref(), Some("999"));
    let none = soap11(
        addr,
        WRITER,
        "searchLinksBySsin",
        "<lr:ssin>17073003384</lr:ssin>",
    )
    .await;
    assert_eq!(none.text("value").as_deref(), Some("NO_DATA_FOUND"));
    n.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn technical_errors_are_faults_in_the_requests_version() {
    let n = node().await;
    let addr = n.running.http_addr;
    let before = register(&n.running);
    let cases = [
        (Auth::None, "UNAUTHENTICATED"),
        (
            Auth::UsernameToken("Writer org", "guess"),
            "UNAUTHENTICATED",
        ),
        (
            Auth::UsernameToken("Keeper org", "writer-token"),
            "UNAUTHENTICATED",
        ),
        (Auth::Bearer("guess"), "UNAUTHENTICATED"),
        (
            Auth::UsernameToken("Other org", "other-token"),
            "PERMISSION_DENIED",
        ),
    ];
    for (auth, reason) in cases {
        let r11 = soap11(addr, auth, "createLink", CREATE).await;
        assert_eq!(
            (r11.status, r11.reason_code().as_deref()),
            (500, Some(reason)),
            "{}",
            r11.body
        );
        assert!(
            r11.body.contains("<faultcode>soapenv:Client</faultcode>"),
            "{}",
            r11.body
        );
        let r12 = soap12(addr, auth, "createLink", CREATE).await;
        assert_eq!(
            (r12.status, r12.reason_code().as_deref()),
            (400, Some(reason)),
            "{}",
            r12.body
        );
        assert!(
            r12.body.contains("<env:Value>env:Sender</env:Value>"),
            "{}",
            r12.body
        );
    }
    // A writer may not delete, nor change the catalogue.
    let denied = soap11(
        addr,
        WRITER,
        "deleteLink",
        "<lr:id>1</lr:id><lr:reason>x</lr:reason>",
    )
    .await;
    assert_eq!(
        denied.reason_code().as_deref(),
        Some("PERMISSION_DENIED"),
        "{}",
        denied.body
    );
    assert!(denied.text("diagnostic").unwrap().contains("keeper"));
    let denied = soap11(
        addr,
        WRITER,
        "setKeyTypeActive",
        "<lr:code>PASSPORT</lr:code><lr:active>false</lr:active>",
    )
    .await;
    assert_eq!(denied.reason_code().as_deref(), Some("PERMISSION_DENIED"));
    assert_eq!(register(&n.running), before);
    n.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_gets_a_fault_and_changes_nothing() {
    let n = node().await;
    let addr = n.running.http_addr;
    let before = register(&n.running);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/soap/corpus");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let Some(rest) = name.strip_prefix("bad-") else {
            continue;
        };
        let reason = rest.split('-').next().unwrap();
        let soap = if name.contains("soap12") { S12 } else { S11 };
        let body = std::fs::read(&path).unwrap();
        let reply = post(addr, soap, Auth::Bearer("keeper-token"), "", &body).await;
        assert!(reply.is_fault(), "{name}: {}", reply.body);
        assert_eq!(
            reply.reason_code().as_deref(),
            Some(reason),
            "{name}: {}",
            reply.body
        );
        assert!(!reply.body.contains("passwd") && !reply.body.contains("lollol"));
        checked += 1;
    }
    assert!(checked >= 15);

    // Too large, before the body is even parsed.
    let huge = envelope(S11, KEEPER, "createLink", &" ".repeat(BODY_MAX));
    let reply = post(addr, S11, KEEPER, "createLink", huge.as_bytes()).await;
    assert_eq!(
        (reply.status, reply.reason_code().as_deref()),
        (413, Some("MESSAGE_TOO_LARGE"))
    );
    // Not SOAP at all.
    let reply = http(
        addr,
        "POST /soap/LinkRegister HTTP/1.1\r\nContent-Type: application/json",
        b"{\"ssin\": \"85073003328\"}",
    )
    .await;
    assert_eq!(
        (reply.status, reply.reason_code().as_deref()),
        (415, Some("UNSUPPORTED_MEDIA_TYPE"))
    );
    // A SOAPAction that contradicts the body.
    let body = envelope(S11, KEEPER, "createLink", CREATE);
    let reply = post(addr, S11, KEEPER, "deleteLink", body.as_bytes()).await;
    assert_eq!(reply.reason_code().as_deref(), Some("ACTION_MISMATCH"));
    // A mandatory element missing.
    let reply = soap11(addr, KEEPER, "createLink", "<lr:ssin>85073003328</lr:ssin>").await;
    assert_eq!(reply.reason_code().as_deref(), Some("INVALID_MESSAGE"));
    assert!(
        reply.text("diagnostic").unwrap().contains("country"),
        "{}",
        reply.body
    );
    assert_eq!(
        register(&n.running),
        before,
        "hostile input changed the register"
    );
    n.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_soap_write_is_applied_once() {
    let n = node().await;
    let addr = n.running.http_addr;
    let payload =
        format!("<lr:clientId>soap-client</lr:clientId><lr:requestId>7</lr:requestId>{CREATE}");
    let first = soap11(addr, WRITER, "createLink", &payload).await;
    let second = soap11(addr, WRITER, "createLink", &payload).await;
    assert_eq!(first.text("value").as_deref(), Some("OK"), "{}", first.body);
    assert_eq!(
        second.text("value").as_deref(),
        Some("OK"),
        "{}",
        second.body
    );
    assert_eq!(first.text("id"), second.text("id"));
    assert_eq!(first.text("logIndex"), second.text("logIndex"));
    assert_eq!(n.running.node.store.next_link_id().unwrap().0, 2);
    // The same ids for another request: not a retry, refused, and the answer says which field.
    let id = first.text("id").unwrap();
    let reused = soap11(
        addr,
        WRITER,
        "updateLinkValidity",
        &format!("<lr:clientId>soap-client</lr:clientId><lr:requestId>7</lr:requestId><lr:id>{id}</lr:id>"),
    )
    .await;
    assert_eq!(
        reused.text("code").as_deref(),
        Some("INVALID_SESSION"),
        "{}",
        reused.body
    );
    assert_eq!(reused.text("fieldName").as_deref(), Some("requestId"));
    assert_eq!(reused.text("fieldValue").as_deref(), Some("7"));
    n.running.stop().await;
}
