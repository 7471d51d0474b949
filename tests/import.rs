//! `linkreg import` and `linkreg export` against a real node: counts, the reject file, re-runs
//! and interruptions, and a round trip through a second register.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use linkreg::api::auth::Callers;
use linkreg::domain::{Caller, LinkId, Organization, RegisterView, Role};
use linkreg::proto::linkreg as pb;
use linkreg::server::Running;
use serde_json::Value;
use sha2::{Digest, Sha256};

async fn node(dir: &Path) -> Running {
    let caller = |role| Caller {
        organization: Organization::new("Loader", "0123456749").unwrap(),
        role,
    };
    let callers = Callers::from_tokens(&[
        ("writer-token", caller(Role::Writer)),
        ("keeper-token", caller(Role::Keeper)),
        ("reader-token", caller(Role::Reader)),
    ]);
    let config = common::config(1, dir, true, None, Duration::from_secs(10));
    common::serve(config, callers).await
}

fn linkreg(args: &[&str], token: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_linkreg"));
    command
        .args(args)
        .env("LINKREG_TOKEN", token)
        .env_remove("LINKREG_SERVER");
    command
}

fn run(args: &[&str], token: &str) -> Output {
    linkreg(args, token)
        .output()
        .expect("the linkreg binary runs")
}

fn counts(out: &Output) -> Value {
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out:?}"))
}

/// The n-th valid national register number of people born on 1985-07-30.
fn ssin(n: u64) -> String {
    let base = 850_730_000 + (n % 997) + 1;
    format!("{base:09}{:02}", 97 - base % 97)
}

fn link_count(node: &Running) -> u64 {
    let store = &node.node.store;
    (1..store.next_link_id().unwrap().0)
        .filter(|id| store.link(LinkId(*id)).unwrap().is_some())
        .count() as u64
}

fn import_command(file: &Path, server: &str, extra: &[&str], token: &str) -> Command {
    let mut args = vec!["import", file.to_str().unwrap(), "--server", server];
    args.extend_from_slice(extra);
    linkreg(&args, token)
}

fn import(file: &Path, node: &Running, extra: &[&str]) -> Output {
    let server = node.client_addr.to_string();
    let mut extra = extra.to_vec();
    extra.push("--json");
    import_command(file, &server, &extra, "writer-token")
        .output()
        .expect("the linkreg binary runs")
}

/// Starts an import in the background, its output kept for `wait_with_output`.
fn spawn_import(file: &Path, server: &str, extra: &[&str], token: &str) -> std::process::Child {
    import_command(file, server, extra, token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The child's exit status, or `None` (the child killed) once `limit` has passed.
async fn wait_at_most(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if started.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `rows` NDJSON rows of distinct generated people, each with a key `{prefix}{n:07}`.
fn ndjson_rows(rows: u64, country: &str, key_type: &str, prefix: &str) -> String {
    (0..rows)
        .map(|n| {
            format!(
                "{{\"ssin\":\"{}\",\"country\":\"{country}\",\"key_type\":\"{key_type}\",\"value\":\"{prefix}{n:07}\"}}\n",
                ssin(n)
            )
        })
        .collect()
}

fn export(node: &Running, out: &Path) -> Output {
    run(
        &[
            "export",
            "--server",
            &node.client_addr.to_string(),
            "--out",
            out.to_str().unwrap(),
        ],
        "keeper-token",
    )
}

/// Digest of an export's lines in sorted order: parallel batches apply in any order, so link ids
/// (the export's order) differ between two loads of the same rows.
fn sha256(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    hex::encode(Sha256::digest(lines.join("\n")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_rows_go_to_the_reject_file_and_a_rerun_adds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir.path().join("node")).await;
    let mut csv = String::from("ssin,country,key_type,value,valid_from,valid_to\n");
    for n in 0..30 {
        csv.push_str(&format!("{},FR,PASSPORT,P{n:07},,\n", ssin(n)));
    }
    // Lines 32.. (the header is line 1, the good rows 2..=31).
    let bad = [
        ("85073003329,FR,PASSPORT,X1234567,,", "INVALID_SSIN", "ssin"),
        (
            &format!("{},XX,PASSPORT,X1234568,,", ssin(1)),
            "UNKNOWN_COUNTRY",
            "country",
        ),
        (
            &format!("{},FR,SHOE_SIZE,X1234569,,", ssin(1)),
            "UNKNOWN_KEY_TYPE",
            "key_type",
        ),
        (
            &format!("{},FR,PASSPORT,AB1,,", ssin(1)),
            "INVALID_FOREIGN_KEY",
            "value",
        ),
        (
            &format!("{},FR,PASSPORT,X1234570,2020-13-01,", ssin(1)),
            "INVALID_DATE",
            "valid_from",
        ),
        ("only,three,fields", "UNREADABLE_ROW", ""),
        // The same foreign key as line 2, for another person: a contradiction.
        (
            &format!("{},FR,PASSPORT,P0000000,,", ssin(500)),
            "LINK_CONFLICT",
            "",
        ),
    ];
    for (line, _, _) in &bad {
        csv.push_str(line);
        csv.push('\n');
    }
    // Line 39: line 3 again, the same link.
    csv.push_str(&format!("{},FR,PASSPORT,P0000001,,\n", ssin(1)));
    let file = dir.path().join("links.csv");
    std::fs::write(&file, &csv).unwrap();

    let first = tokio::task::block_in_place(|| {
        counts(&import(&file, &node, &["--batch", "7", "--parallel", "3"]))
    });
    assert_eq!(first["read"], 38, "{first}");
    assert_eq!(first["accepted"], 30, "{first}");
    assert_eq!(first["already_present"], 1, "{first}");
    assert_eq!(first["rejected"], 7, "{first}");
    assert_eq!(first["complete"], true);
    assert_eq!(link_count(&node), 30);

    let rejects_file = dir.path().join("links.csv.rejects.ndjson");
    let mut rejects: Vec<Value> = std::fs::read_to_string(&rejects_file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    rejects.sort_by_key(|r| r["line"].as_u64());
    assert_eq!(rejects.len(), bad.len());
    // Of line 2 and line 38 (one foreign key, two people), whichever batch is applied second is
    // the conflict: `--parallel 3` applies batches in any order.
    let conflict = rejects
        .iter()
        .position(|r| r["code"] == "LINK_CONFLICT")
        .expect("a LINK_CONFLICT reject");
    let conflict = rejects.remove(conflict);
    assert!(
        conflict["line"] == 2 || conflict["line"] == 38,
        "{conflict}"
    );
    assert_eq!(conflict["field"].as_str().unwrap_or(""), "", "{conflict}");
    // The last bad row is the conflicting one, checked above.
    let others = &bad[..bad.len() - 1];
    for (i, (reject, (_, code, field))) in rejects.iter().zip(others).enumerate() {
        assert_eq!(reject["line"], 32 + i as u64, "{reject}");
        assert_eq!(reject["code"], *code, "{reject}");
        assert_eq!(reject["field"].as_str().unwrap_or(""), *field, "{reject}");
        assert!(!reject["reason"].as_str().unwrap().is_empty());
    }

    // The same file again: every good row is already there, the bad ones are refused again.
    let again = tokio::task::block_in_place(|| {
        counts(&import(&file, &node, &["--batch", "7", "--parallel", "3"]))
    });
    assert_eq!(again["read"], 38, "{again}");
    assert_eq!(again["accepted"], 0, "{again}");
    assert_eq!(again["already_present"], 31, "{again}");
    assert_eq!(again["rejected"], 7, "{again}");
    assert_eq!(link_count(&node), 30);

    // A different batching after the sessions moved on: still nothing twice.
    let rebatched =
        tokio::task::block_in_place(|| counts(&import(&file, &node, &["--batch", "5"])));
    assert_eq!(rebatched["accepted"], 0, "{rebatched}");
    assert_eq!(rebatched["already_present"], 31, "{rebatched}");
    assert_eq!(link_count(&node), 30);

    // Each imported link's history holds its own row, not the whole batch.
    let events = node
        .node
        .store
        .audit_events::<linkreg::raft::AuditEvent>(&linkreg::store::keys::audit_link_prefix(
            LinkId(5),
        ))
        .unwrap();
    assert_eq!(events.len(), 1, "one create event per imported link");
    // Batches run in parallel, so ids follow apply order, not file order.
    let link = node.node.store.link(LinkId(5)).unwrap().unwrap();
    match &events[0].command.action {
        linkreg::domain::Action::CreateLink(row) => {
            assert_eq!(row.value, link.foreign_key.value.entered())
        }
        other => panic!("the event records the row, not the batch: {other:?}"),
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_interrupted_import_run_again_adds_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir.path().join("node")).await;
    let rows = 3000;
    let file = dir.path().join("links.ndjson");
    std::fs::write(&file, ndjson_rows(rows, "DE", "IDENTITY_CARD", "L0")).unwrap();
    let server = node.client_addr.to_string();
    let extra = ["--batch", "25", "--parallel", "2"];
    let mut child = spawn_import(&file, &server, &extra, "writer-token");
    while link_count(&node) < 300 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before the kill"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = link_count(&node);
    assert!(before < rows, "the import was interrupted at {before}");

    let rerun = tokio::task::block_in_place(|| {
        counts(&import(&file, &node, &["--batch", "25", "--parallel", "2"]))
    });
    assert_eq!(rerun["read"], rows);
    assert_eq!(
        rerun["accepted"].as_u64().unwrap() + rerun["already_present"].as_u64().unwrap(),
        rows
    );
    assert!(rerun["already_present"].as_u64().unwrap() >= before);
    assert_eq!(rerun["rejected"], 0);
    assert_eq!(link_count(&node), rows);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_export_imported_elsewhere_exports_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let source = node(&dir.path().join("source")).await;
    let mut csv = String::from("ssin,country,key_type,value,valid_from,valid_to\n");
    for n in 0..250 {
        let period = match n % 3 {
            0 => ",".to_string(),
            1 => "2019-02-03,".to_string(),
            _ => "2001-01-01,2030-12-31".to_string(),
        };
        csv.push_str(&format!(
            "{},NL,DRIVING_LICENCE,R-{n:06},{period}\n",
            ssin(n)
        ));
    }
    let file = dir.path().join("links.csv");
    std::fs::write(&file, &csv).unwrap();
    let loaded =
        tokio::task::block_in_place(|| counts(&import(&file, &source, &["--batch", "40"])));
    assert_eq!(loaded["accepted"], 250);

    let first = dir.path().join("first.ndjson");
    let out = tokio::task::block_in_place(|| export(&source, &first));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let exported = std::fs::read_to_string(&first).unwrap();
    assert_eq!(exported.lines().count(), 250);
    let one: Value = exported
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|row| row["value"] == "R-000002")
        .unwrap();
    assert_eq!(one["valid_from"], "2001-01-01");
    assert_eq!(one["valid_to"], "2030-12-31");

    // Only the keeper may dump the register.
    let refused = tokio::task::block_in_place(|| {
        run(
            &[
                "export",
                "--server",
                &source.client_addr.to_string(),
                "--out",
                dir.path().join("no").to_str().unwrap(),
            ],
            "writer-token",
        )
    });
    assert_ne!(refused.status.code(), Some(0));

    let target = node(&dir.path().join("target")).await;
    let reloaded =
        tokio::task::block_in_place(|| counts(&import(&first, &target, &["--batch", "30"])));
    assert_eq!(reloaded["accepted"], 250);
    let second = dir.path().join("second.ndjson");
    let out = tokio::task::block_in_place(|| export(&target, &second));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(sha256(&first), sha256(&second));
    source.stop().await;
    target.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_import_stops_with_the_reason_instead_of_waiting_for_ever() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir.path().join("node")).await;
    let mut csv = String::from("ssin,country,key_type,value,valid_from,valid_to\n");
    for n in 0..40 {
        csv.push_str(&format!("{},FR,PASSPORT,Q{n:07},,\n", ssin(n)));
    }
    let file = dir.path().join("links.csv");
    std::fs::write(&file, &csv).unwrap();
    let server = node.client_addr.to_string();
    // Every pipeline's first batch is refused while more batches wait in each pipeline.
    let extra = ["--batch", "1", "--parallel", "2"];
    let mut child = spawn_import(&file, &server, &extra, "reader-token");
    let status = wait_at_most(&mut child, Duration::from_secs(30))
        .await
        .expect("the refused import did not stop");
    let out = child.wait_with_output().unwrap();
    assert!(!status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("permission denied"), "{stderr}");
    assert_eq!(link_count(&node), 0);
    node.stop().await;
}

/// A stand-in for a node that serves only `ImportLinks`, creating every row, on a schedule of
/// its own: the answers for every pipeline but the first come as soon as each pipeline has a
/// batch in flight (and a moment more), the first pipeline's only after many of the others'.
struct Scheduled {
    pipelines: usize,
    /// The client ids (one per pipeline) that have sent a batch.
    seen: std::sync::Mutex<std::collections::HashSet<String>>,
    /// When the last pipeline sent its first batch.
    all_in_flight: std::sync::OnceLock<tokio::time::Instant>,
    /// Answers given to the other pipelines.
    others_answered: std::sync::atomic::AtomicUsize,
    /// When enough of them had been answered.
    others_done: std::sync::OnceLock<tokio::time::Instant>,
}

impl Scheduled {
    /// How many answers to the other pipelines pipeline 0 waits for: more than the importer's
    /// 64 buffered reports, fewer than the others' 3 batches in flight or queued each.
    const OTHERS_FIRST: usize = 100;

    async fn wait_for(cell: &std::sync::OnceLock<tokio::time::Instant>, then: Duration) {
        loop {
            if let Some(at) = cell.get() {
                tokio::time::sleep_until(*at + then).await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

type Reply<T> = Result<tonic::Response<T>, tonic::Status>;

#[tonic::async_trait]
impl pb::link_register_server::LinkRegister for Scheduled {
    async fn import_links(
        &self,
        request: tonic::Request<pb::ImportLinksRequest>,
    ) -> Reply<pb::ImportLinksResponse> {
        let request = request.into_inner();
        let client = request.client_id.unwrap_or_default();
        let first = client.ends_with("-0");
        {
            let mut seen = self.seen.lock().unwrap();
            seen.insert(client);
            if seen.len() == self.pipelines {
                let _ = self.all_in_flight.set(tokio::time::Instant::now());
            }
        }
        // By then the importer has handed every pipeline a batch and filled its queue.
        Self::wait_for(&self.all_in_flight, Duration::from_millis(300)).await;
        if first {
            // By then the others' answers have reached the importer.
            Self::wait_for(&self.others_done, Duration::from_millis(300)).await;
        }
        let rows = request
            .rows
            .iter()
            .map(|_| pb::ImportRowResult {
                status: pb::ImportRowStatus::ImportRowCreated as i32,
                ..Default::default()
            })
            .collect();
        if !first {
            let answered = self.others_answered.fetch_add(1, Ordering::SeqCst) + 1;
            if answered == Self::OTHERS_FIRST {
                let _ = self.others_done.set(tokio::time::Instant::now());
            }
        }
        Ok(tonic::Response::new(pb::ImportLinksResponse {
            rows,
            log_index: 1,
            replayed: false,
        }))
    }

    type ExportLinksStream = tokio_stream::Empty<Result<pb::ExportLinksResponse, tonic::Status>>;

    async fn export_links(
        &self,
        _: tonic::Request<pb::ExportLinksRequest>,
    ) -> Reply<Self::ExportLinksStream> {
        Err(tonic::Status::unimplemented("import only"))
    }

    async fn search_links_by_ssin(
        &self,
        _: tonic::Request<pb::SearchLinksBySsinRequest>,
    ) -> Reply<pb::SearchLinksResponse> {
        Err(tonic::Status::unimplemented("import only"))
    }

    async fn search_links_by_foreign_key(
        &self,
        _: tonic::Request<pb::SearchLinksByForeignKeyRequest>,
    ) -> Reply<pb::SearchLinksResponse> {
        Err(tonic::Status::unimplemented("import only"))
    }

    async fn get_link(&self, _: tonic::Request<pb::GetLinkRequest>) -> Reply<pb::GetLinkResponse> {
        Err(tonic::Status::unimplemented("import only"))
    }

    async fn create_link(
        &self,
        _: tonic::Request<pb::CreateLinkRequest>,
    ) -> Reply<pb::LinkResponse> {
        Err(tonic::Status::unimplemented("import only"))
    }

    async fn update_link_validity(
        &self,
        _: tonic::Request<pb::UpdateLinkValidityRequest>,
    ) -> Reply<pb::LinkResponse> {
        Err(tonic::Status::unimplemented("import only"))
    }

    async fn delete_link(
        &self,
        _: tonic::Request<pb::DeleteLinkRequest>,
    ) -> Reply<pb::DeleteLinkResponse> {
        Err(tonic::Status::unimplemented("import only"))
    }

    async fn get_link_history(
        &self,
        _: tonic::Request<pb::GetLinkHistoryRequest>,
    ) -> Reply<pb::GetLinkHistoryResponse> {
        Err(tonic::Status::unimplemented("import only"))
    }

    async fn list_key_types(
        &self,
        _: tonic::Request<pb::ListKeyTypesRequest>,
    ) -> Reply<pb::ListKeyTypesResponse> {
        Err(tonic::Status::unimplemented("import only"))
    }

    async fn add_key_type(
        &self,
        _: tonic::Request<pb::AddKeyTypeRequest>,
    ) -> Reply<pb::KeyTypeResponse> {
        Err(tonic::Status::unimplemented("import only"))
    }

    async fn set_key_type_active(
        &self,
        _: tonic::Request<pb::SetKeyTypeActiveRequest>,
    ) -> Reply<pb::KeyTypeResponse> {
        Err(tonic::Status::unimplemented("import only"))
    }

    async fn list_format_rules(
        &self,
        _: tonic::Request<pb::ListFormatRulesRequest>,
    ) -> Reply<pb::ListFormatRulesResponse> {
        Err(tonic::Status::unimplemented("import only"))
    }

    async fn set_format_rule(
        &self,
        _: tonic::Request<pb::SetFormatRuleRequest>,
    ) -> Reply<pb::FormatRuleResponse> {
        Err(tonic::Status::unimplemented("import only"))
    }
}

/// The stall seen on a loaded cluster, made certain: one slow pipeline while the others answer
/// quickly. The importer waited for room in the slow pipeline's queue and meanwhile took no
/// reports; the others filled the report channel, the slow one, answered at last, waited for
/// room there, and nothing moved again. Now the main loop takes reports while it waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_pipeline_among_fast_ones_does_not_stall_the_import() {
    let pipelines = 64;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let scheduled = Scheduled {
        pipelines,
        seen: Default::default(),
        all_in_flight: Default::default(),
        others_answered: Default::default(),
        others_done: Default::default(),
    };
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::link_register_server::LinkRegisterServer::new(scheduled))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    // Four batches of one row per pipeline: three are in (or queued for) each pipeline when the
    // importer gets to the first pipeline's fourth.
    let dir = tempfile::tempdir().unwrap();
    let rows = 4 * pipelines as u64;
    let file = dir.path().join("links.ndjson");
    std::fs::write(&file, ndjson_rows(rows, "BE", "PASSPORT", "S")).unwrap();
    let parallel = pipelines.to_string();
    let extra = ["--batch", "1", "--parallel", &parallel, "--json"];
    let mut child = spawn_import(&file, &addr.to_string(), &extra, "writer-token");
    assert!(
        wait_at_most(&mut child, Duration::from_secs(15))
            .await
            .is_some(),
        "the import stalled: no pipeline can move"
    );
    let out = child.wait_with_output().unwrap();
    let done = counts(&out);
    assert_eq!(done["read"], rows, "{done}");
    assert_eq!(done["accepted"], rows, "{done}");
    assert_eq!(done["complete"], true, "{done}");
    server.abort();
}
