use super::*;
use crate::store::cf;

fn has_line(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "no line {line:?} in:\n{text}"
    );
}

fn lacks(text: &str, fragment: &str) {
    assert!(!text.contains(fragment), "{fragment:?} in:\n{text}");
}

#[test]
fn every_rpc_of_the_client_api_and_cluster_admin_is_measured_and_nothing_else() {
    let metrics = Metrics::new();
    for path in [
        "/linkreg.v1.LinkRegister/CreateLink",
        "/linkreg.v1.LinkRegister/SearchLinksBySsin",
        "/linkreg.v1.LinkRegister/SetFormatRule",
        "/linkreg.v1.ClusterAdmin/Status",
        "/linkreg.v1.ClusterAdmin/Backup",
    ] {
        assert!(metrics.rpc(path).is_some(), "{path}");
    }
    for path in [
        "/grpc.health.v1.Health/Check",
        "/raft.v1.RaftPeer/Forward",
        "/linkreg.v1.LinkRegister/NoSuchRpc",
        "/linkreg.v1.LinkRegister/",
        "/",
    ] {
        assert!(metrics.rpc(path).is_none(), "{path}");
    }
}

#[test]
fn grpc_calls_are_counted_by_code_timed_and_errors_keep_their_reason() {
    let metrics = Metrics::new();
    let create = metrics.rpc("/linkreg.v1.LinkRegister/CreateLink").unwrap();
    metrics.grpc_finished(&create, Code::Ok, None, Duration::from_micros(700));
    metrics.grpc_finished(
        &create,
        Code::AlreadyExists,
        Some("LINK_EXISTS".into()),
        Duration::from_millis(3),
    );
    let text = metrics.encode(Format::Prometheus).unwrap();
    let labels = r#"service="linkreg.v1.LinkRegister",rpc="CreateLink""#;
    has_line(
        &text,
        &format!(r#"linkreg_grpc_requests_total{{{labels},code="OK"}} 1"#),
    );
    has_line(
        &text,
        &format!(r#"linkreg_grpc_requests_total{{{labels},code="ALREADY_EXISTS"}} 1"#),
    );
    has_line(
        &text,
        &format!(
            r#"linkreg_grpc_errors_total{{{labels},code="ALREADY_EXISTS",reason="LINK_EXISTS"}} 1"#
        ),
    );
    has_line(
        &text,
        &format!("linkreg_grpc_request_duration_seconds_count{{{labels}}} 2"),
    );
    has_line(
        &text,
        &format!(r#"linkreg_grpc_request_duration_seconds_bucket{{{labels},le="0.001"}} 1"#),
    );
    has_line(
        &text,
        &format!(r#"linkreg_grpc_request_duration_seconds_bucket{{{labels},le="0.005"}} 2"#),
    );
    // Every measured RPC is there from the start, at zero.
    has_line(
        &text,
        r#"linkreg_grpc_requests_total{service="linkreg.v1.ClusterAdmin",rpc="Status",code="OK"} 0"#,
    );
    has_line(&text, "# TYPE linkreg_grpc_requests_total counter");
    has_line(
        &text,
        "# TYPE linkreg_grpc_request_duration_seconds histogram",
    );
}

#[test]
fn soap_exchanges_are_counted_by_status_and_refusals_and_faults_by_code() {
    let metrics = Metrics::new();
    let exchange = |operation, status, code: Option<&str>| Exchange {
        operation,
        status,
        code: code.map(str::to_string),
    };
    let d = Duration::from_millis(2);
    metrics.soap_finished(&exchange(Some("createLink"), "OK", None), d);
    metrics.soap_finished(
        &exchange(Some("createLink"), "NO_RESULT", Some("LINK_EXISTS")),
        d,
    );
    metrics.soap_finished(
        &exchange(Some("getLink"), Exchange::FAULT, Some("UNAUTHENTICATED")),
        d,
    );
    metrics.soap_finished(
        &exchange(None, Exchange::FAULT, Some("MALFORMED_MESSAGE")),
        d,
    );
    let text = metrics.encode(Format::Prometheus).unwrap();
    has_line(
        &text,
        r#"linkreg_soap_requests_total{operation="createLink",status="OK"} 1"#,
    );
    has_line(
        &text,
        r#"linkreg_soap_requests_total{operation="createLink",status="NO_RESULT"} 1"#,
    );
    has_line(
        &text,
        r#"linkreg_soap_errors_total{operation="createLink",kind="refusal",code="LINK_EXISTS"} 1"#,
    );
    has_line(
        &text,
        r#"linkreg_soap_errors_total{operation="getLink",kind="fault",code="UNAUTHENTICATED"} 1"#,
    );
    has_line(
        &text,
        r#"linkreg_soap_errors_total{operation="unknown",kind="fault",code="MALFORMED_MESSAGE"} 1"#,
    );
    has_line(
        &text,
        r#"linkreg_soap_request_duration_seconds_count{operation="createLink"} 2"#,
    );
}

#[test]
fn raft_changes_count_new_snapshots_purges_and_leaders() {
    let metrics = Metrics::new();
    let log_id = |term, index| {
        Some(openraft::LogId::new(
            openraft::CommittedLeaderId::new(term, 1),
            index,
        ))
    };
    let start = Seen::default();
    let elected = Seen {
        leader: Some(1),
        ..start
    };
    let snapshot = Seen {
        snapshot: log_id(1, 100),
        ..elected
    };
    let purged = Seen {
        purged: log_id(1, 50),
        ..snapshot
    };
    let lost = Seen {
        leader: None,
        ..purged
    };
    let reelected = Seen {
        leader: Some(2),
        ..lost
    };
    for (before, after) in [
        (start, elected),
        (elected, snapshot),
        (snapshot, purged),
        (purged, purged),
        (purged, lost),
        (lost, reelected),
    ] {
        metrics.raft_changed(&before, &after);
    }
    let text = metrics.encode(Format::Prometheus).unwrap();
    has_line(&text, "linkreg_raft_snapshots_total 1");
    has_line(&text, "linkreg_raft_purges_total 1");
    has_line(&text, "linkreg_raft_leader_changes_total 2");
}

#[derive(Debug)]
struct Fixed(NodeFacts);

impl Collector for Fixed {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        self.0.encode(encoder)
    }
}

fn facts() -> NodeFacts {
    NodeFacts {
        node_id: 1,
        state: "leader",
        term: 3,
        leader: Some(1),
        last_log: Some(42),
        committed: Some(41),
        applied: Some(41),
        snapshot: None,
        purged: None,
        ready: true,
        followers: vec![(2, Some(40), Some(2)), (3, None, None)],
        voters: 2,
        learners: 1,
        column_families: vec![ColumnFamilyStats {
            name: cf::LINKS,
            sst_bytes: Some(4096),
            memtable_bytes: Some(2048),
            estimated_keys: None,
        }],
    }
}

fn encoded(facts: NodeFacts, format: Format) -> String {
    let mut metrics = Metrics::new();
    metrics.registry.register_collector(Box::new(Fixed(facts)));
    metrics.encode(format).unwrap()
}

#[test]
fn node_facts_become_gauges() {
    let text = encoded(facts(), Format::Prometheus);
    for line in [
        "linkreg_raft_node_id 1",
        "linkreg_raft_term 3",
        "linkreg_raft_leader_id 1",
        "linkreg_raft_is_leader 1",
        r#"linkreg_raft_state{state="leader"} 1"#,
        r#"linkreg_raft_state{state="follower"} 0"#,
        "linkreg_raft_last_log_index 42",
        "linkreg_raft_committed_index 41",
        "linkreg_raft_applied_index 41",
        "linkreg_raft_snapshot_index -1",
        "linkreg_raft_purged_index -1",
        "linkreg_ready 1",
        r#"linkreg_raft_members{kind="voter"} 2"#,
        r#"linkreg_raft_members{kind="learner"} 1"#,
        r#"linkreg_raft_matched_index{member="2"} 40"#,
        r#"linkreg_raft_replication_lag{member="2"} 2"#,
        r#"linkreg_rocksdb_sst_bytes{cf="links"} 4096"#,
        r#"linkreg_rocksdb_memtable_bytes{cf="links"} 2048"#,
        "# TYPE linkreg_raft_term gauge",
    ] {
        has_line(&text, line);
    }
    // What is not known is left out, not reported as zero.
    lacks(&text, r#"member="3""#);
    lacks(&text, r#"linkreg_rocksdb_estimated_keys{"#);
}

#[test]
fn a_follower_without_a_leader_reports_minus_one_and_no_lag() {
    let text = encoded(
        NodeFacts {
            state: "follower",
            leader: None,
            ready: false,
            followers: vec![(2, None, None)],
            ..facts()
        },
        Format::Prometheus,
    );
    has_line(&text, "linkreg_raft_leader_id -1");
    has_line(&text, "linkreg_raft_is_leader 0");
    has_line(&text, "linkreg_ready 0");
    lacks(&text, "linkreg_raft_replication_lag");
    lacks(&text, "linkreg_raft_matched_index");
}

#[test]
fn openmetrics_is_served_to_scrapers_that_ask_for_it() {
    assert_eq!(Format::accepted(""), Format::Prometheus);
    assert_eq!(
        Format::accepted("text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
        Format::Prometheus
    );
    let accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
    assert_eq!(Format::accepted(accept), Format::OpenMetrics);
    let text = encoded(facts(), Format::OpenMetrics);
    assert!(text.ends_with("# EOF\n"), "{text}");
    has_line(&text, "# TYPE linkreg_grpc_requests counter");
    assert!(
        Format::OpenMetrics
            .content_type()
            .starts_with("application/openmetrics-text")
    );
    assert!(
        Format::Prometheus
            .content_type()
            .starts_with("text/plain; version=0.0.4")
    );
}
