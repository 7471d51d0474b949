//! The LinkRegister gRPC API over a real socket, against a real node: every RPC under every
//! role, the error mapping, and bad input leaving the register unchanged.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use linkreg::api::auth::{Authenticator, Callers};
use linkreg::domain::{Caller, Organization, RegisterView, Role};
use linkreg::proto::linkreg as pb;
use linkreg::proto::linkreg::link_register_client::LinkRegisterClient;
use linkreg::raft::NodeInfo;
use linkreg::raft::network::Faults;
use linkreg::raft::node::Tuning;
use linkreg::server::{self, NodeConfig, Running};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn caller(name: &str, role: Role) -> Caller {
    Caller {
        organization: Organization::new(name, "0123456749").unwrap(),
        role,
    }
}

struct Node {
    _dir: tempfile::TempDir,
    running: Running,
    client: LinkRegisterClient<Channel>,
}

async fn node() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let (peer, client) = (free_addr(), free_addr());
    let config = NodeConfig {
        id: 1,
        data_dir: dir.path().to_path_buf(),
        client_addr: client,
        peer_addr: peer,
        http_addr: free_addr(),
        advertise: NodeInfo {
            peer_addr: peer.to_string(),
            client_addr: client.to_string(),
            http_addr: String::new(),
        },
        init: true,
        join: None,
        tuning: Tuning {
            heartbeat_ms: 50,
            election_min_ms: 300,
            election_max_ms: 600,
            ..Tuning::default()
        },
        write_timeout: Duration::from_secs(5),
        client_tls: None,
        peer_tls: None,
    };
    let callers = Callers::from_tokens(&[
        ("reader-token", caller("Reader org", Role::Reader)),
        ("writer-token", caller("Writer org", Role::Writer)),
        ("keeper-token", caller("Keeper org", Role::Keeper)),
    ]);
    let running = server::start(
        config,
        Authenticator::fixed(callers),
        Arc::new(Faults::default()),
    )
    .await
    .unwrap();
    running
        .node
        .raft
        .wait(Some(Duration::from_secs(10)))
        .current_leader(1, "leader")
        .await
        .unwrap();
    let client = LinkRegisterClient::connect(format!("http://{client}"))
        .await
        .unwrap();
    Node {
        _dir: dir,
        running,
        client,
    }
}

fn as_role<T>(role: Option<&str>, message: T) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = role {
        let value = format!("Bearer {token}-token").parse().unwrap();
        request.metadata_mut().insert("authorization", value);
    }
    request
}

fn create(ssin: &str, value: &str) -> pb::CreateLinkRequest {
    pb::CreateLinkRequest {
        ssin: ssin.into(),
        country: "NL".into(),
        key_type: "PASSPORT".into(),
        value: value.into(),
        ..Default::default()
    }
}

/// Everything a command could have changed: links, catalogue, format rules, next id.
fn register(running: &Running) -> String {
    let store = &running.node.store;
    let mut links = Vec::new();
    for id in 1..store.next_link_id().unwrap().0 {
        links.push(store.link(linkreg::domain::LinkId(id)).unwrap());
    }
    format!(
        "{links:?}\n{:?}\n{:?}",
        store.key_types().unwrap(),
        store.format_rules().unwrap()
    )
}

fn reason(status: &Status) -> String {
    status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

fn violated_field(status: &Status) -> Option<String> {
    status
        .get_details_bad_request()
        .and_then(|b| b.field_violations.first().map(|v| v.field.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_checks_the_callers_role() {
    let mut n = node().await;
    let c = &mut n.client;
    // Authentication first.
    let err = c
        .get_link(Request::new(pb::GetLinkRequest {
            id: 1,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = c
        .get_link(as_role(
            Some("wrong"),
            pb::GetLinkRequest {
                id: 1,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // Writes: reader denied, writer allowed.
    let err = c
        .create_link(as_role(Some("reader"), create("85073003328", "NX123456")))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::PermissionDenied, "PERMISSION_DENIED")
    );
    let created = c
        .create_link(as_role(Some("writer"), create("85073003328", "NX123456")))
        .await
        .unwrap()
        .into_inner();
    let link = created.link.unwrap();
    assert_eq!(
        (link.ssin.as_str(), link.created_by.as_str(), link.version),
        ("85073003328", "Writer org", 1)
    );
    let update = pb::UpdateLinkValidityRequest {
        id: link.id,
        valid_to: Some("2030-12-31".into()),
        ..Default::default()
    };
    assert_eq!(
        c.update_link_validity(as_role(Some("reader"), update.clone()))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    let updated = c
        .update_link_validity(as_role(Some("writer"), update))
        .await
        .unwrap()
        .into_inner()
        .link
        .unwrap();
    assert_eq!(
        (updated.version, updated.valid_to.as_deref()),
        (2, Some("2030-12-31"))
    );

    // Reads: every role.
    for role in ["reader", "writer", "keeper"] {
        let q = pb::SearchLinksBySsinRequest {
            ssin: "85.07.30-033.28".into(),
            ..Default::default()
        };
        let found = c
            .search_links_by_ssin(as_role(Some(role), q))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(found.links.len(), 1);
        assert_eq!(found.read.unwrap().node_id, 1);
        let q = pb::SearchLinksByForeignKeyRequest {
            country: "nl".into(),
            value: "nx-123456".into(),
            ..Default::default()
        };
        assert_eq!(
            c.search_links_by_foreign_key(as_role(Some(role), q))
                .await
                .unwrap()
                .into_inner()
                .links
                .len(),
            1
        );
        let got = c
            .get_link(as_role(
                Some(role),
                pb::GetLinkRequest {
                    id: link.id,
                    consistency: 1,
                },
            ))
            .await
            .unwrap();
        assert_eq!(got.into_inner().link.unwrap().version, 2);
        assert!(
            c.list_key_types(as_role(Some(role), pb::ListKeyTypesRequest::default()))
                .await
                .unwrap()
                .into_inner()
                .key_types
                .len()
                >= 9
        );
        let rules = c
            .list_format_rules(as_role(Some(role), pb::ListFormatRulesRequest::default()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(rules.default_rule.unwrap().min_length, 5);
        let history = c
            .get_link_history(as_role(
                Some(role),
                pb::GetLinkHistoryRequest {
                    id: link.id,
                    ..Default::default()
                },
            ))
            .await
            .unwrap();
        let actions: Vec<_> = history
            .into_inner()
            .events
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert_eq!(actions, ["create_link", "update_link_validity"]);
    }

    // Keeper-only writes.
    let add = pb::AddKeyTypeRequest {
        code: "VISA_NUMBER".into(),
        label_nl: "Visumnummer".into(),
        label_fr: "Numéro de visa".into(),
        label_de: "Visumnummer".into(),
        label_en: "Visa number".into(),
        ..Default::default()
    };
    let deactivate = pb::SetKeyTypeActiveRequest {
        code: "VISA_NUMBER".into(),
        active: false,
        ..Default::default()
    };
    let rule = pb::SetFormatRuleRequest {
        country: "DE".into(),
        key_type: "PASSPORT".into(),
        rule: Some(pb::FormatRule {
            min_length: 9,
            max_length: 9,
            pattern: Some("[CFGHJK][0-9A-Z]{8}".into()),
        }),
        ..Default::default()
    };
    let delete = pb::DeleteLinkRequest {
        id: link.id,
        reason: "entered for the wrong person".into(),
        ..Default::default()
    };
    for role in ["reader", "writer"] {
        assert_eq!(
            c.add_key_type(as_role(Some(role), add.clone()))
                .await
                .unwrap_err()
                .code(),
            Code::PermissionDenied
        );
        assert_eq!(
            c.set_key_type_active(as_role(Some(role), deactivate.clone()))
                .await
                .unwrap_err()
                .code(),
            Code::PermissionDenied
        );
        assert_eq!(
            c.set_format_rule(as_role(Some(role), rule.clone()))
                .await
                .unwrap_err()
                .code(),
            Code::PermissionDenied
        );
        assert_eq!(
            c.delete_link(as_role(Some(role), delete.clone()))
                .await
                .unwrap_err()
                .code(),
            Code::PermissionDenied
        );
    }
    assert!(
        c.add_key_type(as_role(Some("keeper"), add))
            .await
            .unwrap()
            .into_inner()
            .key_type
            .unwrap()
            .active
    );
    assert!(
        !c.set_key_type_active(as_role(Some("keeper"), deactivate))
            .await
            .unwrap()
            .into_inner()
            .key_type
            .unwrap()
            .active
    );
    let set = c
        .set_format_rule(as_role(Some("keeper"), rule))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set.rule.unwrap().min_length, 9);
    assert_eq!(
        c.delete_link(as_role(Some("keeper"), delete))
            .await
            .unwrap()
            .into_inner()
            .id,
        link.id
    );
    let err = c
        .get_link(as_role(
            Some("reader"),
            pb::GetLinkRequest {
                id: link.id,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::NotFound, "LINK_NOT_FOUND")
    );
    // Cluster administration is the keeper's.
    let addr = format!("http://{}", n.running.client_addr);
    let mut admin =
        linkreg::proto::linkreg::cluster_admin_client::ClusterAdminClient::connect(addr)
            .await
            .unwrap();
    for role in ["reader", "writer"] {
        let err = admin
            .status(as_role(Some(role), pb::StatusRequest {}))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
    }
    assert_eq!(
        admin
            .digest(Request::new(pb::DigestRequest {}))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    let status = admin
        .status(as_role(Some("keeper"), pb::StatusRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (status.state.as_str(), status.leader_id),
        ("leader", Some(1))
    );

    // The history outlives the link.
    let history = c
        .get_link_history(as_role(
            Some("reader"),
            pb::GetLinkHistoryRequest {
                id: link.id,
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let last = history.into_inner().events.pop().unwrap();
    assert_eq!(
        (last.action.as_str(), last.caller_role.as_str()),
        ("delete_link", "keeper")
    );
    assert_eq!(last.reason.as_deref(), Some("entered for the wrong person"));
    n.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_field_is_named_and_changes_nothing() {
    let mut n = node().await;
    let existing = n
        .client
        .create_link(as_role(Some("writer"), create("85073003328", "NX123456")))
        .await
        .unwrap();
    let existing = existing.into_inner();
    let id = existing.link.unwrap().id;
    // Metrics are published asynchronously: wait until they show the create.
    n.running
        .node
        .raft
        .wait(Some(Duration::from_secs(5)))
        .log_index_at_least(Some(existing.log_index), "create in metrics")
        .await
        .unwrap();
    let before = register(&n.running);
    let log_before = n.running.node.raft.metrics().borrow().last_log_index;

    let mut cases: Vec<(Status, &str, &str)> = Vec::new();
    let c = &mut n.client;
    let bad_creates = [
        (
            pb::CreateLinkRequest {
                ssin: "12345678901".into(),
                ..create("", "NX999999")
            },
            "ssin",
            "INVALID_SSIN",
        ),
        (
            pb::CreateLinkRequest {
                country: "XX".into(),
                ..create("75060898009", "NX999999")
            },
            "country",
            "UNKNOWN_COUNTRY",
        ),
        (
            create("75060898009", "A\u{0}B"),
            "value",
            "INVALID_FOREIGN_KEY",
        ),
        (
            pb::CreateLinkRequest {
                valid_from: Some("2020-02-30".into()),
                ..create("75060898009", "NX999999")
            },
            "valid_from",
            "INVALID_DATE",
        ),
        (
            pb::CreateLinkRequest {
                valid_to: Some("soon".into()),
                ..create("75060898009", "NX999999")
            },
            "valid_to",
            "INVALID_DATE",
        ),
        (
            pb::CreateLinkRequest {
                valid_from: Some("2021-01-01".into()),
                valid_to: Some("2020-01-01".into()),
                ..create("75060898009", "NX999999")
            },
            "valid_to",
            "INVALID_PERIOD",
        ),
        (
            pb::CreateLinkRequest {
                client_id: Some("c".into()),
                ..create("75060898009", "NX999999")
            },
            "request_id",
            "INVALID_ARGUMENT",
        ),
    ];
    for (request, field, code) in bad_creates {
        cases.push((
            c.create_link(as_role(Some("writer"), request))
                .await
                .unwrap_err(),
            field,
            code,
        ));
    }
    let update = |from: &str, to: &str| pb::UpdateLinkValidityRequest {
        id,
        valid_from: Some(from.into()),
        valid_to: Some(to.into()),
        ..Default::default()
    };
    cases.push((
        c.update_link_validity(as_role(Some("writer"), update("x", "")))
            .await
            .unwrap_err(),
        "valid_from",
        "INVALID_DATE",
    ));
    cases.push((
        c.update_link_validity(as_role(Some("writer"), update("2020-01-02", "2020-01-01")))
            .await
            .unwrap_err(),
        "valid_to",
        "INVALID_PERIOD",
    ));
    let delete = pb::DeleteLinkRequest {
        id,
        reason: " ".into(),
        ..Default::default()
    };
    cases.push((
        c.delete_link(as_role(Some("keeper"), delete))
            .await
            .unwrap_err(),
        "reason",
        "INVALID_TEXT",
    ));
    let add = pb::AddKeyTypeRequest {
        code: "visa".into(),
        label_nl: "a".into(),
        label_fr: "b".into(),
        label_de: "c".into(),
        label_en: "d".into(),
        ..Default::default()
    };
    cases.push((
        c.add_key_type(as_role(Some("keeper"), add.clone()))
            .await
            .unwrap_err(),
        "code",
        "INVALID_KEY_TYPE_CODE",
    ));
    for (field, blank) in [("labels.nl", 0), ("labels.de", 2), ("labels.en", 3)] {
        let mut request = pb::AddKeyTypeRequest {
            code: "VISA".into(),
            ..add.clone()
        };
        *[
            &mut request.label_nl,
            &mut request.label_fr,
            &mut request.label_de,
            &mut request.label_en,
        ][blank] = " ".into();
        cases.push((
            c.add_key_type(as_role(Some("keeper"), request))
                .await
                .unwrap_err(),
            field,
            "INVALID_TEXT",
        ));
    }
    let unlabeled = pb::AddKeyTypeRequest {
        code: "VISA".into(),
        label_fr: "".into(),
        ..add
    };
    cases.push((
        c.add_key_type(as_role(Some("keeper"), unlabeled))
            .await
            .unwrap_err(),
        "labels.fr",
        "INVALID_TEXT",
    ));
    let activate = pb::SetKeyTypeActiveRequest {
        code: "nope".into(),
        active: true,
        ..Default::default()
    };
    cases.push((
        c.set_key_type_active(as_role(Some("keeper"), activate))
            .await
            .unwrap_err(),
        "code",
        "INVALID_KEY_TYPE_CODE",
    ));
    let rule = |min, max, pattern: &str| pb::SetFormatRuleRequest {
        country: "DE".into(),
        key_type: "PASSPORT".into(),
        rule: Some(pb::FormatRule {
            min_length: min,
            max_length: max,
            pattern: Some(pattern.into()),
        }),
        ..Default::default()
    };
    cases.push((
        c.set_format_rule(as_role(Some("keeper"), rule(0, 9, "")))
            .await
            .unwrap_err(),
        "min_length",
        "INVALID_FORMAT_RULE",
    ));
    cases.push((
        c.set_format_rule(as_role(Some("keeper"), rule(1, 70_000, "")))
            .await
            .unwrap_err(),
        "max_length",
        "INVALID_FORMAT_RULE",
    ));
    cases.push((
        c.set_format_rule(as_role(Some("keeper"), rule(1, 9, "[A-")))
            .await
            .unwrap_err(),
        "pattern",
        "INVALID_FORMAT_RULE",
    ));
    let bad_type = pb::SetFormatRuleRequest {
        key_type: "Passport".into(),
        ..rule(1, 9, "")
    };
    cases.push((
        c.set_format_rule(as_role(Some("keeper"), bad_type))
            .await
            .unwrap_err(),
        "key_type",
        "INVALID_KEY_TYPE_CODE",
    ));
    let bad_country = pb::SetFormatRuleRequest {
        country: "QQ".into(),
        ..rule(1, 9, "")
    };
    cases.push((
        c.set_format_rule(as_role(Some("keeper"), bad_country))
            .await
            .unwrap_err(),
        "country",
        "UNKNOWN_COUNTRY",
    ));

    for (status, field, code) in &cases {
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert_eq!(
            violated_field(status).as_deref(),
            Some(*field),
            "{status:?}"
        );
        assert_eq!(reason(status), *code, "{status:?}");
    }
    // None of it changed the register, and none of it took a log entry: malformed input is
    // refused before replication.
    assert_eq!(register(&n.running), before);
    assert_eq!(
        n.running.node.raft.metrics().borrow().last_log_index,
        log_before
    );
    // A refusal that depends on the register's state goes through the log like any command,
    // and still changes nothing.
    let unknown_type = pb::CreateLinkRequest {
        key_type: "VISA".into(),
        ..create("75060898009", "NX999999")
    };
    let err = n
        .client
        .create_link(as_role(Some("writer"), unknown_type))
        .await
        .unwrap_err();
    assert_eq!(
        (violated_field(&err).as_deref(), reason(&err).as_str()),
        (Some("key_type"), "UNKNOWN_KEY_TYPE")
    );
    assert_eq!(register(&n.running), before);
    n.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_carry_the_other_link_and_retries_are_answered_once() {
    let mut n = node().await;
    let c = &mut n.client;
    let first = pb::CreateLinkRequest {
        client_id: Some("batch-7".into()),
        request_id: Some(1),
        ..create("85073003328", "NX123456")
    };
    let a = c
        .create_link(as_role(Some("writer"), first.clone()))
        .await
        .unwrap()
        .into_inner();
    let again = c
        .create_link(as_role(Some("writer"), first))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, a, "a retried request gets the first answer");
    let id = a.link.unwrap().id;
    let link_id = |s: &Status| {
        s.get_details_error_info()
            .and_then(|i| i.metadata.get("link_id").cloned())
    };

    let err = c
        .create_link(as_role(Some("writer"), create("85073003328", "nx 123 456")))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::AlreadyExists, "LINK_EXISTS")
    );
    assert_eq!(link_id(&err), Some(id.to_string()));
    let err = c
        .create_link(as_role(Some("writer"), create("75060898009", "NX123456")))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::FailedPrecondition, "LINK_CONFLICT")
    );
    assert_eq!(link_id(&err), Some(id.to_string()));
    let stale = pb::UpdateLinkValidityRequest {
        id,
        expected_version: Some(5),
        ..Default::default()
    };
    let err = c
        .update_link_validity(as_role(Some("writer"), stale))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::FailedPrecondition, "VERSION_MISMATCH")
    );
    let missing = pb::UpdateLinkValidityRequest {
        id: 999,
        ..Default::default()
    };
    let err = c
        .update_link_validity(as_role(Some("writer"), missing))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::NotFound, "LINK_NOT_FOUND")
    );
    let older = pb::CreateLinkRequest {
        client_id: Some("batch-7".into()),
        request_id: Some(0),
        ..create("75060898009", "ZZ111111")
    };
    let err = c
        .create_link(as_role(Some("writer"), older))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::FailedPrecondition, "STALE_REQUEST")
    );
    n.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_let_generic_tools_in() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let n = node().await;
    let addr = format!("http://{}", n.running.client_addr);
    let channel = tonic::transport::Endpoint::from_shared(addr)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    let check = |service: &str| HealthCheckRequest {
        service: service.into(),
    };
    let mut status = ServingStatus::Unknown;
    for _ in 0..50 {
        status = health
            .check(check("linkreg.v1.LinkRegister"))
            .await
            .unwrap()
            .into_inner()
            .status();
        if status == ServingStatus::Serving {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, ServingStatus::Serving);
    assert_eq!(
        health.check(check("")).await.unwrap().into_inner().status(),
        ServingStatus::Serving
    );

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reflection reply {reply:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "linkreg.v1.LinkRegister",
        "linkreg.v1.ClusterAdmin",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    assert!(
        !names.iter().any(|n| n.starts_with("raft.")),
        "the peer API must not be listed: {names:?}"
    );
    n.running.stop().await;
}
