//! The LinkRegister gRPC API over a real socket, against a real node: every RPC under every
//! role, the error mapping, and bad input leaving the register unchanged.

mod common;

use std::sync::Arc;
use std::time::Duration;

use linkreg::api::admin::LEADER_METADATA;
use linkreg::api::auth::{Authenticator, Callers};
use linkreg::domain::{Caller, Organization, Role};
use linkreg::proto::linkreg as pb;
use linkreg::proto::linkreg::link_register_client::LinkRegisterClient;
use linkreg::raft::network::Faults;
use linkreg::server::{self, Running};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

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
    let n = start(true, Duration::from_secs(5)).await;
    n.running
        .node
        .raft
        .wait(Some(Duration::from_secs(10)))
        .current_leader(1, "leader")
        .await
        .unwrap();
    n
}

/// A node with neither `init` nor `join`: up and answering, but with no cluster and no leader.
async fn leaderless(write_timeout: Duration) -> Node {
    start(false, write_timeout).await
}

async fn start(init: bool, write_timeout: Duration) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(1, dir.path(), init, None, write_timeout);
    let client = config.client_addr;
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
    let before = common::register(&n.running);
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
    assert_eq!(common::register(&n.running), before);
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
    assert_eq!(common::register(&n.running), before);
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

fn admin_client(running: &Running) -> impl std::future::Future<Output = AdminClient> {
    let addr = format!("http://{}", running.client_addr);
    async move { AdminClient::connect(addr).await.unwrap() }
}

type AdminClient = linkreg::proto::linkreg::cluster_admin_client::ClusterAdminClient<Channel>;

/// Creates one link as the writer and waits until the metrics show it applied.
async fn one_link(n: &mut Node) -> u64 {
    let created = n
        .client
        .create_link(as_role(Some("writer"), create("85073003328", "NX123456")))
        .await
        .unwrap()
        .into_inner();
    n.running
        .node
        .raft
        .wait(Some(Duration::from_secs(5)))
        .applied_index_at_least(Some(created.log_index), "create applied")
        .await
        .unwrap();
    created.link.unwrap().id
}

/// Every read RPC once with `token` (`None`: no authorization header); each answer by name.
async fn every_read(
    c: &mut LinkRegisterClient<Channel>,
    token: Option<&str>,
    id: u64,
) -> Vec<(&'static str, Result<usize, Status>)> {
    let by_ssin = pb::SearchLinksBySsinRequest {
        ssin: "85073003328".into(),
        ..Default::default()
    };
    let by_key = pb::SearchLinksByForeignKeyRequest {
        country: "NL".into(),
        value: "NX123456".into(),
        ..Default::default()
    };
    let get = pb::GetLinkRequest {
        id,
        ..Default::default()
    };
    let history = pb::GetLinkHistoryRequest {
        id,
        ..Default::default()
    };
    vec![
        (
            "SearchLinksBySsin",
            c.search_links_by_ssin(as_role(token, by_ssin))
                .await
                .map(|r| r.into_inner().links.len()),
        ),
        (
            "SearchLinksByForeignKey",
            c.search_links_by_foreign_key(as_role(token, by_key))
                .await
                .map(|r| r.into_inner().links.len()),
        ),
        (
            "GetLink",
            c.get_link(as_role(token, get))
                .await
                .map(|r| usize::from(r.into_inner().link.is_some_and(|l| l.id == id))),
        ),
        (
            "GetLinkHistory",
            c.get_link_history(as_role(token, history))
                .await
                .map(|r| r.into_inner().events.len()),
        ),
        (
            "ListKeyTypes",
            c.list_key_types(as_role(token, pb::ListKeyTypesRequest::default()))
                .await
                .map(|r| r.into_inner().key_types.len()),
        ),
        (
            "ListFormatRules",
            c.list_format_rules(as_role(token, pb::ListFormatRulesRequest::default()))
                .await
                .map(|r| usize::from(r.into_inner().default_rule.is_some())),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_needs_a_valid_token_and_any_role() {
    let mut n = node().await;
    let id = one_link(&mut n).await;
    for token in [None, Some("wrong"), Some("")] {
        for (rpc, answer) in every_read(&mut n.client, token, id).await {
            let err = answer.expect_err(rpc);
            assert_eq!(
                (err.code(), reason(&err).as_str()),
                (Code::Unauthenticated, "UNAUTHENTICATED"),
                "{rpc} with token {token:?}: {err:?}"
            );
        }
    }
    for role in ["reader", "writer", "keeper"] {
        let answers = every_read(&mut n.client, Some(role), id).await;
        let counts: Vec<(&str, usize)> = answers
            .into_iter()
            .map(|(rpc, a)| (rpc, a.unwrap_or_else(|e| panic!("{rpc} as {role}: {e:?}"))))
            .collect();
        let key_types = counts[4].1;
        assert!(key_types >= 9, "{counts:?}");
        assert_eq!(
            counts,
            [
                ("SearchLinksBySsin", 1),
                ("SearchLinksByForeignKey", 1),
                ("GetLink", 1),
                ("GetLinkHistory", 1),
                ("ListKeyTypes", key_types),
                ("ListFormatRules", 1),
            ],
            "as {role}"
        );
    }
    n.running.stop().await;
}

/// Every ClusterAdmin RPC once with `token`; each answer by name, as debug text when it succeeds.
async fn every_admin_call(
    admin: &mut AdminClient,
    token: Option<&str>,
) -> Vec<(&'static str, Result<String, Status>)> {
    let no_peer = pb::AddLearnerRequest {
        id: 2,
        peer_addr: " ".into(),
        client_addr: "127.0.0.1:1".into(),
        http_addr: String::new(),
    };
    let stranger = pb::MemberRequest { id: 9 };
    vec![
        (
            "Status",
            admin
                .status(as_role(token, pb::StatusRequest {}))
                .await
                .map(|r| format!("{:?}", r.into_inner())),
        ),
        (
            "AddLearner",
            admin
                .add_learner(as_role(token, no_peer))
                .await
                .map(|r| format!("{:?}", r.into_inner())),
        ),
        (
            "Promote",
            admin
                .promote(as_role(token, stranger))
                .await
                .map(|r| format!("{:?}", r.into_inner())),
        ),
        (
            "Remove",
            admin
                .remove(as_role(token, stranger))
                .await
                .map(|r| format!("{:?}", r.into_inner())),
        ),
        (
            "Snapshot",
            admin
                .snapshot(as_role(token, pb::SnapshotRequest {}))
                .await
                .map(|r| format!("{:?}", r.into_inner())),
        ),
        (
            "Digest",
            admin
                .digest(as_role(token, pb::DigestRequest {}))
                .await
                .map(|r| format!("{:?}", r.into_inner())),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cluster_admin_rpc_is_the_keepers() {
    let n = node().await;
    let mut admin = admin_client(&n.running).await;
    for token in [None, Some("wrong")] {
        for (rpc, answer) in every_admin_call(&mut admin, token).await {
            let err = answer.expect_err(rpc);
            assert_eq!(
                (err.code(), reason(&err).as_str()),
                (Code::Unauthenticated, "UNAUTHENTICATED"),
                "{rpc} with {token:?}"
            );
        }
    }
    for role in ["reader", "writer"] {
        for (rpc, answer) in every_admin_call(&mut admin, Some(role)).await {
            let err = answer.expect_err(rpc);
            assert_eq!(
                (err.code(), reason(&err).as_str()),
                (Code::PermissionDenied, "PERMISSION_DENIED"),
                "{rpc} as {role}"
            );
        }
    }
    // The keeper reaches every handler: what comes back is the cluster's own answer.
    let answers = every_admin_call(&mut admin, Some("keeper")).await;
    let outcome = |rpc: &str| &answers.iter().find(|(name, _)| *name == rpc).unwrap().1;
    let status = outcome("Status").as_ref().unwrap();
    assert!(
        status.contains("state: \"leader\"") && status.contains("leader_id: Some(1)"),
        "{status}"
    );
    let err = outcome("AddLearner").as_ref().unwrap_err();
    assert_eq!(
        (
            err.code(),
            reason(err).as_str(),
            violated_field(err).as_deref()
        ),
        (Code::InvalidArgument, "INVALID_ARGUMENT", Some("peer_addr")),
        "{err:?}"
    );
    for rpc in ["Promote", "Remove"] {
        let err = outcome(rpc).as_ref().unwrap_err();
        assert_eq!(
            (err.code(), reason(err).as_str()),
            (Code::FailedPrecondition, "MEMBERSHIP_REFUSED"),
            "{rpc}: {err:?}"
        );
        let info = err.get_details_error_info().unwrap();
        assert_eq!(info.domain, "linkreg");
    }
    assert!(
        outcome("Remove")
            .as_ref()
            .unwrap_err()
            .message()
            .contains("node 9 is not a member"),
        "{:?}",
        outcome("Remove")
    );
    let snapshot = outcome("Snapshot").as_ref().unwrap();
    assert!(snapshot.contains("snapshot_index: Some("), "{snapshot}");
    let digest = outcome("Digest").as_ref().unwrap();
    assert!(digest.contains("node_id: 1"), "{digest}");

    // The last voter cannot be removed; a node id 0 is malformed.
    let err = admin
        .remove(as_role(Some("keeper"), pb::MemberRequest { id: 1 }))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "MEMBERSHIP_REFUSED", "{err:?}");
    assert!(err.message().contains("last voter"), "{err:?}");
    let zero = pb::AddLearnerRequest {
        id: 0,
        peer_addr: "127.0.0.1:1".into(),
        ..Default::default()
    };
    let err = admin
        .add_learner(as_role(Some("keeper"), zero))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), violated_field(&err).as_deref()),
        (Code::InvalidArgument, Some("id"))
    );
    // Nothing of it changed the membership.
    let members = admin
        .status(as_role(Some("keeper"), pb::StatusRequest {}))
        .await
        .unwrap()
        .into_inner()
        .members;
    assert_eq!(
        members
            .iter()
            .map(|m| (m.id, m.role.as_str()))
            .collect::<Vec<_>>(),
        [(1, "voter")]
    );
    n.running.stop().await;
}

/// One valid request of each write RPC, which the keeper could apply as it is.
#[derive(Clone, Debug)]
enum Write {
    Create(pb::CreateLinkRequest),
    Update(pb::UpdateLinkValidityRequest),
    Delete(pb::DeleteLinkRequest),
    AddKeyType(pb::AddKeyTypeRequest),
    SetKeyTypeActive(pb::SetKeyTypeActiveRequest),
    SetFormatRule(pb::SetFormatRuleRequest),
}

fn every_write(id: u64) -> Vec<Write> {
    vec![
        Write::Create(create("75060898009", "NX999999")),
        Write::Update(pb::UpdateLinkValidityRequest {
            id,
            valid_to: Some("2031-01-01".into()),
            ..Default::default()
        }),
        Write::Delete(pb::DeleteLinkRequest {
            id,
            reason: "entered twice".into(),
            ..Default::default()
        }),
        Write::AddKeyType(pb::AddKeyTypeRequest {
            code: "VISA".into(),
            label_nl: "Visum".into(),
            label_fr: "Visa".into(),
            label_de: "Visum".into(),
            label_en: "Visa".into(),
            ..Default::default()
        }),
        Write::SetKeyTypeActive(pb::SetKeyTypeActiveRequest {
            code: "PASSPORT".into(),
            active: false,
            ..Default::default()
        }),
        Write::SetFormatRule(pb::SetFormatRuleRequest {
            country: "DE".into(),
            key_type: "PASSPORT".into(),
            rule: Some(pb::FormatRule {
                min_length: 9,
                max_length: 9,
                pattern: None,
            }),
            ..Default::default()
        }),
    ]
}

impl Write {
    fn with_session(mut self, client_id: Option<&str>, request_id: Option<u64>) -> Write {
        let client_id = client_id.map(str::to_string);
        match &mut self {
            Write::Create(r) => (r.client_id, r.request_id) = (client_id, request_id),
            Write::Update(r) => (r.client_id, r.request_id) = (client_id, request_id),
            Write::Delete(r) => (r.client_id, r.request_id) = (client_id, request_id),
            Write::AddKeyType(r) => (r.client_id, r.request_id) = (client_id, request_id),
            Write::SetKeyTypeActive(r) => (r.client_id, r.request_id) = (client_id, request_id),
            Write::SetFormatRule(r) => (r.client_id, r.request_id) = (client_id, request_id),
        }
        self
    }

    /// Sends it as `role`; the log index of the change when it is applied.
    async fn send(self, c: &mut LinkRegisterClient<Channel>, role: &str) -> Result<u64, Status> {
        let role = Some(role);
        Ok(match self {
            Write::Create(r) => {
                c.create_link(as_role(role, r))
                    .await?
                    .into_inner()
                    .log_index
            }
            Write::Update(r) => {
                c.update_link_validity(as_role(role, r))
                    .await?
                    .into_inner()
                    .log_index
            }
            Write::Delete(r) => {
                c.delete_link(as_role(role, r))
                    .await?
                    .into_inner()
                    .log_index
            }
            Write::AddKeyType(r) => {
                c.add_key_type(as_role(role, r))
                    .await?
                    .into_inner()
                    .log_index
            }
            Write::SetKeyTypeActive(r) => {
                c.set_key_type_active(as_role(role, r))
                    .await?
                    .into_inner()
                    .log_index
            }
            Write::SetFormatRule(r) => {
                c.set_format_rule(as_role(role, r))
                    .await?
                    .into_inner()
                    .log_index
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_names_a_bad_or_unpaired_session_id_and_changes_nothing() {
    let mut n = node().await;
    let id = one_link(&mut n).await;
    let before = common::register(&n.running);
    let long = "c".repeat(129);
    let sessions: [(Option<&str>, Option<u64>, &str); 5] = [
        (Some(""), Some(1), "client_id"),
        (Some("   "), Some(1), "client_id"),
        (Some(&long), Some(1), "client_id"),
        (Some("batch-1"), None, "request_id"),
        (None, Some(1), "client_id"),
    ];
    for write in every_write(id) {
        for (client_id, request_id, field) in sessions {
            let request = write.clone().with_session(client_id, request_id);
            let err = request
                .clone()
                .send(&mut n.client, "keeper")
                .await
                .expect_err(&format!("{request:?}"));
            assert_eq!(
                (
                    err.code(),
                    violated_field(&err).as_deref(),
                    reason(&err).as_str()
                ),
                (Code::InvalidArgument, Some(field), "INVALID_ARGUMENT"),
                "{request:?}: {err:?}"
            );
        }
    }
    assert_eq!(common::register(&n.running), before);
    // The same requests with a well-formed session are applied: the refusals above were about
    // the session alone. (128 characters is the longest client id.)
    let longest = "c".repeat(128);
    for (i, write) in every_write(id).into_iter().enumerate() {
        let request = write.with_session(Some(&longest), Some(i as u64 + 1));
        request
            .clone()
            .send(&mut n.client, "keeper")
            .await
            .unwrap_or_else(|e| panic!("{request:?}: {e:?}"));
    }
    assert_ne!(common::register(&n.running), before);
    n.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_key_types_and_inverted_lengths_are_named_and_change_nothing() {
    let mut n = node().await;
    one_link(&mut n).await;
    let before = common::register(&n.running);
    let log_before = n.running.node.raft.metrics().borrow().last_log_index;
    for bad in ["pass port", "x", "", "PASSPORT!"] {
        let request = pb::CreateLinkRequest {
            key_type: bad.into(),
            ..create("75060898009", "NX999999")
        };
        let err = n
            .client
            .create_link(as_role(Some("writer"), request))
            .await
            .unwrap_err();
        assert_eq!(
            (
                err.code(),
                violated_field(&err).as_deref(),
                reason(&err).as_str()
            ),
            (
                Code::InvalidArgument,
                Some("key_type"),
                "INVALID_KEY_TYPE_CODE"
            ),
            "{bad:?}: {err:?}"
        );
    }
    // min_length above max_length: the domain names max_length, the bound that is wrong for
    // the given minimum.
    let inverted = pb::SetFormatRuleRequest {
        country: "DE".into(),
        key_type: "PASSPORT".into(),
        rule: Some(pb::FormatRule {
            min_length: 9,
            max_length: 5,
            pattern: None,
        }),
        ..Default::default()
    };
    let err = n
        .client
        .set_format_rule(as_role(Some("keeper"), inverted))
        .await
        .unwrap_err();
    assert_eq!(
        (
            err.code(),
            violated_field(&err).as_deref(),
            reason(&err).as_str()
        ),
        (
            Code::InvalidArgument,
            Some("max_length"),
            "INVALID_FORMAT_RULE"
        ),
        "{err:?}"
    );
    assert_eq!(common::register(&n.running), before);
    assert_eq!(
        n.running.node.raft.metrics().borrow().last_log_index,
        log_before
    );
    n.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_over_four_mib_are_refused_and_change_nothing() {
    let mut n = node().await;
    one_link(&mut n).await;
    let before = common::register(&n.running);
    let huge = "A1".repeat(5 * 1024 * 1024 / 2);
    let err = n
        .client
        .create_link(as_role(Some("writer"), create("75060898009", &huge)))
        .await
        .unwrap_err();
    // Refused by the size limit while decoding, not by the 64-character rule of the domain.
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(err.message().contains("too large"), "{err:?}");
    let mut admin = admin_client(&n.running).await;
    let err = admin
        .add_learner(as_role(
            Some("keeper"),
            pb::AddLearnerRequest {
                id: 2,
                peer_addr: huge.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    // Just under the limit the request reaches the rules, which refuse the value.
    let big = "A1".repeat(3 * 1024 * 1024 / 2);
    let err = n
        .client
        .create_link(as_role(Some("writer"), create("75060898009", &big)))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), violated_field(&err).as_deref()),
        (Code::InvalidArgument, Some("value"))
    );
    assert_eq!(common::register(&n.running), before);
    n.running.stop().await;
}

async fn health_client(running: &Running) -> HealthClient<Channel> {
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", running.client_addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
    HealthClient::new(channel)
}

async fn serving(
    health: &mut HealthClient<Channel>,
    service: &str,
) -> Result<ServingStatus, Status> {
    let request = HealthCheckRequest {
        service: service.into(),
    };
    Ok(health.check(request).await?.into_inner().status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_not_serving_as_soon_as_stop_begins() {
    let n = node().await;
    let mut health = health_client(&n.running).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    for service in ["", "linkreg.v1.LinkRegister"] {
        while serving(&mut health, service).await.unwrap() != ServingStatus::Serving {
            assert!(tokio::time::Instant::now() < deadline, "never SERVING");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let stopping = tokio::spawn(n.running.stop());
    let mut seen = Vec::new();
    loop {
        let both = (
            serving(&mut health, "").await,
            serving(&mut health, "linkreg.v1.LinkRegister").await,
        );
        match both {
            (Ok(whole), Ok(api)) => {
                seen.push((whole, api));
                if (whole, api) == (ServingStatus::NotServing, ServingStatus::NotServing) {
                    break;
                }
            }
            other => panic!("the listener closed before NOT_SERVING was seen: {seen:?} {other:?}"),
        }
        assert!(tokio::time::Instant::now() < deadline, "{seen:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stopping.await.unwrap();
    assert!(
        serving(&mut health, "").await.is_err(),
        "still answering after stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_leader_is_not_serving_and_refuses_writes_as_unavailable() {
    let mut n = leaderless(Duration::from_millis(300)).await;
    let mut health = health_client(&n.running).await;
    for service in ["", "linkreg.v1.LinkRegister"] {
        // The reporter publishes its first status right after start.
        let mut status = serving(&mut health, service).await;
        for _ in 0..50 {
            if status.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            status = serving(&mut health, service).await;
        }
        assert_eq!(status.unwrap(), ServingStatus::NotServing, "{service:?}");
    }
    let err = n
        .client
        .create_link(as_role(Some("writer"), create("75060898009", "NX999999")))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::Unavailable, "UNAVAILABLE"),
        "{err:?}"
    );
    let linearizable = pb::ListKeyTypesRequest {
        consistency: pb::Consistency::Linearizable as i32,
    };
    let err = n
        .client
        .list_key_types(as_role(Some("reader"), linearizable))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "UNAVAILABLE", "{err:?}");
    // Nor does it answer local reads as if the register were empty.
    let err = n
        .client
        .get_link(as_role(
            Some("reader"),
            pb::GetLinkRequest {
                id: 1,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::Unavailable, "UNAVAILABLE"),
        "{err:?}"
    );
    // Membership changes are refused with the cluster's reason, not an internal error, and
    // no leader is suggested since none is known.
    let mut admin = admin_client(&n.running).await;
    let err = admin
        .promote(as_role(Some("keeper"), pb::MemberRequest { id: 2 }))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::FailedPrecondition, "MEMBERSHIP_REFUSED"),
        "{err:?}"
    );
    assert!(err.message().contains("Learner 2 not found"), "{err:?}");
    assert!(err.metadata().get(LEADER_METADATA).is_none(), "{err:?}");
    n.running.stop().await;
}
