//! Observability against a real node: `/metrics` scraped over HTTP and parsed, its figures
//! checked against the calls made and the node's own raft state; `/healthz` and `/readyz`; and
//! the one log line a refused write leaves.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use linkreg::api::auth::Callers;
use linkreg::domain::{Caller, Organization, Role};
use linkreg::proto::linkreg as pb;
use linkreg::proto::linkreg::cluster_admin_client::ClusterAdminClient;
use linkreg::proto::linkreg::link_register_client::LinkRegisterClient;
use linkreg::server::Running;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::{Code, Request};

const CBE: &str = "0123456749";
const NS: &str = "http://linkreg.be/soap/LinkRegister/v1";
const S11: &str = "http://schemas.xmlsoap.org/soap/envelope/";

fn caller(name: &str, role: Role) -> Caller {
    Caller {
        organization: Organization::new(name, CBE).unwrap(),
        role,
    }
}

/// Log lines of this test binary, as JSON objects, in the format `serve --log-format json`
/// writes.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> &'static Logs {
    static LOGS: OnceLock<Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_env_filter("info,openraft=warn")
            .with_writer(move || writer.clone())
            .json()
            .flatten_event(true)
            .init();
        logs
    })
}

fn log_lines() -> Vec<serde_json::Value> {
    let bytes = logs().0.lock().unwrap().clone();
    String::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).expect("every log line is a JSON object"))
        .collect()
}

struct Node {
    _dir: tempfile::TempDir,
    running: Running,
}

async fn start(init: bool) -> Node {
    start_node(1, init, None).await
}

/// Node `id`, bootstrapping a cluster (`init`), joining one through a peer address, or neither.
async fn start_node(id: u64, init: bool, join: Option<String>) -> Node {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(id, dir.path(), init, join, Duration::from_secs(5));
    let callers = Callers::from_tokens(&[
        ("reader-token", caller("Reader org", Role::Reader)),
        ("writer-token", caller("Writer org", Role::Writer)),
        ("keeper-token", caller("Keeper org", Role::Keeper)),
    ]);
    let running = common::serve(config, callers).await;
    Node { _dir: dir, running }
}

fn as_role<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    let value = format!("Bearer {token}-token").parse().unwrap();
    request.metadata_mut().insert("authorization", value);
    request
}

struct Reply {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

/// One HTTP/1.1 exchange on a fresh connection.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .expect("a complete HTTP response");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    assert!(
        !headers.contains_key("transfer-encoding"),
        "this reader expects a Content-Length body"
    );
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

async fn soap_search(addr: SocketAddr, token: &str, ssin: &str) -> Reply {
    let envelope = format!(
        "<s:Envelope xmlns:s=\"{S11}\" xmlns:lr=\"{NS}\"><s:Body><lr:searchLinksBySsinRequest>\
         <lr:informationCustomer><lr:ticket>T-1</lr:ticket>\
         <lr:timestampSent>2026-12-03T10:00:00+01:00</lr:timestampSent>\
         <lr:customerIdentification><lr:cbeNumber>{CBE}</lr:cbeNumber></lr:customerIdentification>\
         </lr:informationCustomer><lr:legalContext>test</lr:legalContext>\
         <lr:ssin>{ssin}</lr:ssin></lr:searchLinksBySsinRequest></s:Body></s:Envelope>"
    );
    let action = format!("\"{NS}/searchLinksBySsin\"");
    let bearer = format!("Bearer {token}");
    http(
        addr,
        "POST",
        "/soap/LinkRegister",
        &[
            ("Content-Type", "text/xml; charset=utf-8"),
            ("SOAPAction", &action),
            ("Authorization", &bearer),
        ],
        &envelope,
    )
    .await
}

/// One sample of the exposition: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples and the declared type of each family of a Prometheus text exposition (format
/// 0.0.4). Panics on a line that is not a comment, a blank or a well-formed sample.
fn parse(text: &str) -> (Vec<Sample>, HashMap<String, String>) {
    let mut samples = Vec::new();
    let mut types = HashMap::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            if words.next() == Some("TYPE") {
                let name = words.next().expect("TYPE names a family");
                let kind = words.next().expect("TYPE gives a type");
                assert!(
                    types.insert(name.to_string(), kind.to_string()).is_none(),
                    "family {name} declared twice"
                );
            }
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        samples.push(parse_sample(line).unwrap_or_else(|why| panic!("{why}: {line:?}")));
    }
    (samples, types)
}

fn parse_sample(line: &str) -> Result<Sample, &'static str> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return Err("bad metric name");
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        loop {
            match chars.peek() {
                Some((_, '}')) => {
                    chars.next();
                    break;
                }
                Some((_, ',')) => {
                    chars.next();
                    continue;
                }
                None => return Err("unterminated labels"),
                _ => {}
            }
            let mut key = String::new();
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err("label value not quoted");
            }
            let mut value = String::new();
            loop {
                match chars.next().map(|(_, c)| c) {
                    Some('"') => break,
                    Some('\\') => match chars.next().map(|(_, c)| c) {
                        Some('n') => value.push('\n'),
                        Some(c @ ('\\' | '"')) => value.push(c),
                        _ => return Err("bad escape"),
                    },
                    Some(c) => value.push(c),
                    None => return Err("unterminated label value"),
                }
            }
            if labels.insert(key, value).is_some() {
                return Err("label repeated");
            }
        }
        let consumed = chars.peek().map_or(after.len(), |(i, _)| *i);
        rest = &after[consumed..];
    }
    let value = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().map_err(|_| "value is not a number")?,
    };
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

struct Scrape {
    samples: Vec<Sample>,
    types: HashMap<String, String>,
}

impl Scrape {
    /// The value of the one sample with this name and at least these labels.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        match found.as_slice() {
            [one] => one.value,
            other => panic!("{} samples {name} {labels:?}: {other:?}", other.len()),
        }
    }

    fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name == name)
    }
}

async fn scrape(addr: SocketAddr) -> Scrape {
    let reply = http(addr, "GET", "/metrics", &[], "").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.headers.get("content-type").map(String::as_str),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let (samples, types) = parse(&reply.body);
    // Every sample belongs to a declared family.
    for s in &samples {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                s.name
                    .strip_suffix(suffix)
                    .filter(|f| types.get(*f).map(String::as_str) == Some("histogram"))
            })
            .unwrap_or(&s.name);
        assert!(types.contains_key(family), "{} has no TYPE line", s.name);
    }
    Scrape { samples, types }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_calls_errors_and_show_the_nodes_raft_state() {
    let n = start(true).await;
    let client_addr = n.running.client_addr;
    let http_addr = n.running.http_addr;
    let mut client = LinkRegisterClient::connect(format!("http://{client_addr}"))
        .await
        .unwrap();
    let create = pb::CreateLinkRequest {
        ssin: "85073003328".into(),
        country: "NL".into(),
        key_type: "PASSPORT".into(),
        value: "NX123456".into(),
        ..Default::default()
    };
    client
        .create_link(as_role("writer", create.clone()))
        .await
        .unwrap();
    let found = client
        .search_links_by_ssin(as_role(
            "reader",
            pb::SearchLinksBySsinRequest {
                ssin: "85073003328".into(),
                consistency: pb::Consistency::Linearizable as i32,
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    assert_eq!(found.get_ref().links.len(), 1);
    let refused = client
        .create_link(as_role("writer", create))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::AlreadyExists);

    let reply = soap_search(http_addr, "reader-token", "85073003328").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.body.contains("DATA_FOUND"), "{}", reply.body);
    let reply = soap_search(http_addr, "wrong-token", "85073003328").await;
    assert_eq!(reply.status, 500, "{}", reply.body);
    assert!(reply.body.contains("UNAUTHENTICATED"), "{}", reply.body);

    let applied_before = n.running.node.raft.metrics().borrow().last_applied;
    let m = scrape(http_addr).await;
    let applied = n.running.node.raft.metrics().borrow().last_applied;
    assert_eq!(
        applied_before, applied,
        "nothing was written during the scrape"
    );
    let applied = applied.expect("entries were applied").index as f64;

    // Both creations went through group commit, one after the other: two groups of one.
    assert_eq!(m.types["linkreg_write_groups_total"], "counter");
    assert_eq!(m.value("linkreg_write_groups_total", &[]), 2.0);
    assert_eq!(m.value("linkreg_write_grouped_creations_total", &[]), 2.0);
    // The one linearizable search took one read-index round of its own.
    assert_eq!(m.types["linkreg_linearizable_read_rounds_total"], "counter");
    assert_eq!(m.value("linkreg_linearizable_read_rounds_total", &[]), 1.0);
    assert_eq!(m.value("linkreg_linearizable_reads_total", &[]), 1.0);

    let register = ("service", "linkreg.v1.LinkRegister");
    let create_rpc = [register, ("rpc", "CreateLink")];
    let with = |labels: &[(&'static str, &'static str)], more: &[(&'static str, &'static str)]| {
        let mut all = labels.to_vec();
        all.extend_from_slice(more);
        all
    };
    assert_eq!(m.types["linkreg_grpc_requests_total"], "counter");
    assert_eq!(
        m.value(
            "linkreg_grpc_requests_total",
            &with(&create_rpc, &[("code", "OK")])
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "linkreg_grpc_requests_total",
            &with(&create_rpc, &[("code", "ALREADY_EXISTS")])
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "linkreg_grpc_errors_total",
            &with(
                &create_rpc,
                &[("code", "ALREADY_EXISTS"), ("reason", "LINK_EXISTS")]
            )
        ),
        1.0
    );
    assert!(
        !m.samples
            .iter()
            .any(|s| s.name == "linkreg_grpc_errors_total"
                && s.labels.get("rpc").map(String::as_str) == Some("SearchLinksBySsin"))
    );
    // The histogram holds both creates; its buckets only grow, up to the count.
    assert_eq!(
        m.types["linkreg_grpc_request_duration_seconds"],
        "histogram"
    );
    assert_eq!(
        m.value("linkreg_grpc_request_duration_seconds_count", &create_rpc),
        2.0
    );
    let mut buckets: Vec<(f64, f64)> = m
        .samples
        .iter()
        .filter(|s| {
            s.name == "linkreg_grpc_request_duration_seconds_bucket"
                && s.labels.get("rpc").map(String::as_str) == Some("CreateLink")
        })
        .map(|s| {
            let le = match s.labels["le"].as_str() {
                "+Inf" => f64::INFINITY,
                le => le.parse().unwrap(),
            };
            (le, s.value)
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(buckets.len() > 5, "{buckets:?}");
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    assert_eq!(buckets.last(), Some(&(f64::INFINITY, 2.0)));
    let sum = m.value("linkreg_grpc_request_duration_seconds_sum", &create_rpc);
    assert!(sum > 0.0 && sum < 10.0, "{sum}");
    let search_rpc = [register, ("rpc", "SearchLinksBySsin")];
    assert_eq!(
        m.value(
            "linkreg_grpc_requests_total",
            &with(&search_rpc, &[("code", "OK")])
        ),
        1.0
    );
    assert_eq!(
        m.value("linkreg_grpc_request_duration_seconds_count", &search_rpc),
        1.0
    );
    // Health checks and reflection are not RPCs of the register.
    assert!(!m.samples.iter().any(|s| {
        s.labels
            .get("service")
            .is_some_and(|s| s.starts_with("grpc."))
    }));

    let search_op = [("operation", "searchLinksBySsin")];
    assert_eq!(
        m.value(
            "linkreg_soap_requests_total",
            &with(&search_op, &[("status", "DATA_FOUND")])
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "linkreg_soap_requests_total",
            &with(&search_op, &[("status", "FAULT")])
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "linkreg_soap_errors_total",
            &with(
                &search_op,
                &[("kind", "fault"), ("code", "UNAUTHENTICATED")]
            )
        ),
        1.0
    );
    assert_eq!(
        m.value("linkreg_soap_request_duration_seconds_count", &search_op),
        2.0
    );

    assert!(m.value("linkreg_raft_term", &[]) >= 1.0);
    assert_eq!(m.value("linkreg_raft_is_leader", &[]), 1.0);
    assert_eq!(m.value("linkreg_raft_leader_id", &[]), 1.0);
    assert_eq!(m.value("linkreg_raft_node_id", &[]), 1.0);
    assert_eq!(m.value("linkreg_raft_state", &[("state", "leader")]), 1.0);
    assert_eq!(m.value("linkreg_raft_applied_index", &[]), applied);
    assert_eq!(m.value("linkreg_raft_committed_index", &[]), applied);
    assert_eq!(m.value("linkreg_raft_last_log_index", &[]), applied);
    assert_eq!(m.value("linkreg_ready", &[]), 1.0);
    assert_eq!(m.value("linkreg_raft_members", &[("kind", "voter")]), 1.0);
    // A single voter has no follower to lag.
    assert!(!m.has("linkreg_raft_replication_lag"));
    assert!(m.value("linkreg_rocksdb_sst_bytes", &[("cf", "links")]) >= 0.0);
    assert!(m.value("linkreg_rocksdb_estimated_keys", &[("cf", "links")]) >= 1.0);
    assert!(m.value("linkreg_rocksdb_memtable_bytes", &[("cf", "raft_log")]) > 0.0);
    if cfg!(target_os = "linux") {
        assert!(m.value("process_resident_memory_bytes", &[]) > 0.0);
        assert!(m.value("process_open_fds", &[]) > 0.0);
    }

    // A snapshot through ClusterAdmin: counted as an RPC and as a raft snapshot.
    let mut admin = ClusterAdminClient::connect(format!("http://{client_addr}"))
        .await
        .unwrap();
    let snapshot = admin
        .snapshot(as_role("keeper", pb::SnapshotRequest {}))
        .await
        .unwrap();
    let index = snapshot.get_ref().snapshot_index.expect("a snapshot index") as f64;
    let mut m = scrape(http_addr).await;
    for _ in 0..50 {
        if m.value("linkreg_raft_snapshots_total", &[]) >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        m = scrape(http_addr).await;
    }
    assert_eq!(m.value("linkreg_raft_snapshots_total", &[]), 1.0);
    assert_eq!(m.value("linkreg_raft_snapshot_index", &[]), index);
    assert_eq!(
        m.value(
            "linkreg_grpc_requests_total",
            &[
                ("service", "linkreg.v1.ClusterAdmin"),
                ("rpc", "Snapshot"),
                ("code", "OK")
            ]
        ),
        1.0
    );

    let health = http(http_addr, "GET", "/healthz", &[], "").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let ready = http(http_addr, "GET", "/readyz", &[], "").await;
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));

    // OpenMetrics for a scraper that asks for it.
    let open = http(
        http_addr,
        "GET",
        "/metrics",
        &[("Accept", "application/openmetrics-text; version=1.0.0")],
        "",
    )
    .await;
    assert!(open.headers["content-type"].starts_with("application/openmetrics-text"));
    assert!(open.body.ends_with("# EOF\n"));

    // The refused create left exactly one log line, with its code and caller.
    let refusals: Vec<_> = log_lines()
        .into_iter()
        .filter(|l| l["message"] == "write refused")
        .collect();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    let line = &refusals[0];
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["code"], "LINK_EXISTS");
    assert_eq!(line["action"], "create_link");
    assert_eq!(line["organization"], "Writer org");
    assert_eq!(line["cbe"], CBE);
    assert_eq!(line["role"], "writer");
    assert!(line["log_index"].as_u64().is_some(), "{line}");
    assert!(
        !line.to_string().contains("NX123456"),
        "no key value in the log: {line}"
    );

    n.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_cluster_is_alive_but_not_ready() {
    let n = start(false).await;
    let http_addr = n.running.http_addr;
    let health = http(http_addr, "GET", "/healthz", &[], "").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let ready = http(http_addr, "GET", "/readyz", &[], "").await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.body, "not ready: no leader is known\n");
    let m = scrape(http_addr).await;
    assert_eq!(m.value("linkreg_raft_is_leader", &[]), 0.0);
    assert_eq!(m.value("linkreg_raft_leader_id", &[]), -1.0);
    assert_eq!(m.value("linkreg_ready", &[]), 0.0);
    assert_eq!(m.value("linkreg_raft_applied_index", &[]), -1.0);
    assert_eq!(m.value("linkreg_raft_members", &[("kind", "voter")]), 0.0);
    n.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_reports_how_far_each_follower_lags() {
    let n1 = start(true).await;
    let peer = Some(n1.running.peer_addr.to_string());
    let n2 = start_node(2, false, peer.clone()).await;
    let n3 = start_node(3, false, peer).await;
    let mut client = LinkRegisterClient::connect(format!("http://{}", n1.running.client_addr))
        .await
        .unwrap();
    let create = |value: &str| pb::CreateLinkRequest {
        ssin: "85073003328".into(),
        country: "NL".into(),
        key_type: "PASSPORT".into(),
        value: value.into(),
        ..Default::default()
    };
    client
        .create_link(as_role("writer", create("NX100001")))
        .await
        .unwrap();
    // Node 3 goes down: the leader keeps appending, with node 2 as its quorum.
    n3.running.stop().await;
    for value in ["NX100002", "NX100003", "NX100004"] {
        client
            .create_link(as_role("writer", create(value)))
            .await
            .unwrap();
    }
    let last = n1
        .running
        .node
        .raft
        .metrics()
        .borrow()
        .last_log_index
        .unwrap() as f64;
    let mut m = scrape(n1.running.http_addr).await;
    // Node 2's acknowledgement of the last entry may reach the metrics a moment after it
    // counted for the commit.
    for _ in 0..50 {
        if m.value("linkreg_raft_replication_lag", &[("member", "2")]) == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        m = scrape(n1.running.http_addr).await;
    }
    assert_eq!(m.value("linkreg_raft_last_log_index", &[]), last);
    assert_eq!(m.value("linkreg_raft_members", &[("kind", "voter")]), 3.0);
    assert_eq!(
        m.value("linkreg_raft_replication_lag", &[("member", "2")]),
        0.0
    );
    assert_eq!(
        m.value("linkreg_raft_matched_index", &[("member", "2")]),
        last
    );
    let matched3 = m.value("linkreg_raft_matched_index", &[("member", "3")]);
    let lag3 = m.value("linkreg_raft_replication_lag", &[("member", "3")]);
    assert!(
        lag3 >= 3.0,
        "three entries were appended while node 3 was down: {lag3}"
    );
    assert_eq!(lag3, last - matched3);
    // The leader does not list itself.
    assert!(
        !m.samples
            .iter()
            .any(|s| s.labels.get("member").map(String::as_str) == Some("1"))
    );

    // A follower knows the leader but not the replication state.
    let f = scrape(n2.running.http_addr).await;
    assert_eq!(f.value("linkreg_raft_is_leader", &[]), 0.0);
    assert_eq!(f.value("linkreg_raft_leader_id", &[]), 1.0);
    assert_eq!(f.value("linkreg_raft_state", &[("state", "follower")]), 1.0);
    assert!(!f.has("linkreg_raft_replication_lag"));
    assert!(!f.has("linkreg_raft_matched_index"));
    let ready = http(n2.running.http_addr, "GET", "/readyz", &[], "").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    n2.running.stop().await;
    n1.running.stop().await;
}

#[test]
fn the_parser_reads_labels_escapes_and_special_values() {
    let text = "# HELP x_total A counter.\n# TYPE x_total counter\n\
        x_total{a=\"1\",b=\"q\\\"uo\\\\te\\n\"} 3\n\
        # TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.5\ny -1\n\n";
    let (samples, types) = parse(text);
    assert_eq!(types["x_total"], "counter");
    assert_eq!(samples.len(), 4);
    assert_eq!(samples[0].labels["b"], "q\"uo\\te\n");
    assert_eq!(samples[0].value, 3.0);
    assert_eq!(samples[1].labels["le"], "+Inf");
    assert_eq!(samples[3].value, -1.0);
    for bad in ["x{a=1} 2", "x{a=\"1\" 2", "x", "x{a=\"1\"}2", "x{} nope"] {
        assert!(parse_sample(bad).is_err(), "{bad}");
    }
}
