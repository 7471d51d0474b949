//! Three real `linkreg serve` processes on loopback, driven with `linkreg cluster`: the way an
//! operator starts a cluster by hand (see the README).

mod common;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_linkreg");

fn free_port() -> u16 {
    common::free_addr().port()
}

struct Proc {
    child: Child,
    client: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(id: u64, dir: &std::path::Path, peer: &str, client: &str, extra: &[&str]) -> Proc {
    let child = Command::new(BIN)
        .args(["serve", "--dev", "--id", &id.to_string()])
        .arg("--data-dir")
        .arg(dir.join(format!("node-{id}")))
        .args(["--peer-addr", peer, "--client-addr", client])
        .args(["--http-addr", &format!("127.0.0.1:{}", free_port())])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("linkreg serve starts");
    Proc {
        child,
        client: client.to_string(),
    }
}

fn cluster(server: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(["cluster", "--json", "--server", server])
        .env("LINKREG_TOKEN", "dev-keeper")
        .args(args)
        .output()
        .expect("linkreg cluster runs")
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// Polls `status` on `server` until `ok` holds (or fails the test after a minute).
fn wait_status(server: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = cluster(server, &["status"]);
        let value = json(&out);
        if out.status.success() && ok(&value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: last status {value}, stderr {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn voters(status: &Value) -> usize {
    status["members"]
        .as_array()
        .map_or(0, |m| m.iter().filter(|m| m["role"] == "voter").count())
}

#[test]
fn three_processes_form_a_cluster_survive_a_restart_and_agree_on_the_digest() {
    let dir = tempfile::tempdir().unwrap();
    let addr = |_| format!("127.0.0.1:{}", free_port());
    let peers: Vec<String> = (0..3).map(addr).collect();
    let clients: Vec<String> = (0..3).map(addr).collect();
    let mut nodes = vec![serve(1, dir.path(), &peers[0], &clients[0], &["--init"])];
    for i in 1..3 {
        nodes.push(serve(
            i as u64 + 1,
            dir.path(),
            &peers[i],
            &clients[i],
            &["--join", &peers[0]],
        ));
    }
    let status = wait_status(&clients[0], "three voters", |s| {
        voters(s) == 3 && !s["leader_id"].is_null()
    });
    let leader = status["leader_id"].as_u64().unwrap();
    // Each member reports its own applied index.
    let status = wait_status(&clients[0], "every member's applied index", |s| {
        s["members"]
            .as_array()
            .is_some_and(|m| m.iter().all(|m| m["applied_index"].is_u64()))
    });
    assert_eq!(status["members"].as_array().unwrap().len(), 3);
    for c in &clients {
        let s = wait_status(c, "same leader everywhere", |s| {
            s["leader_id"].as_u64() == Some(leader)
        });
        assert_eq!(voters(&s), 3);
    }

    // Node 2 stops gracefully and comes back from its data dir with no operator action.
    let term = Command::new("kill")
        .args(["-TERM", &nodes[1].child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let exit = nodes[1].child.wait().unwrap();
    assert!(
        exit.success(),
        "SIGTERM should stop the node cleanly: {exit:?}"
    );
    nodes[1] = serve(
        2,
        dir.path(),
        &peers[1],
        &clients[1],
        &["--join", &peers[0]],
    );
    wait_status(&clients[1], "node 2 back as a follower", |s| {
        s["state"] == "follower" && s["leader_id"].as_u64().is_some()
    });

    // All three report the same digest at the same applied index.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let digests: Vec<Value> = nodes
            .iter()
            .map(|n| json(&cluster(&n.client, &["digest"])))
            .collect();
        let same = digests.windows(2).all(|w| {
            w[0]["sha256"] == w[1]["sha256"] && w[0]["applied_index"] == w[1]["applied_index"]
        });
        if same && digests[0]["sha256"].is_string() {
            break;
        }
        assert!(Instant::now() < deadline, "digests differ: {digests:?}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Administration is the keeper's: a writer is refused.
    let out = Command::new(BIN)
        .args([
            "cluster",
            "--server",
            &clients[0],
            "--token",
            "dev-writer",
            "status",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("permission denied"),
        "{out:?}"
    );

    // A refused membership change says why, with a non-zero exit.
    let out = cluster(&clients[2], &["remove", "--id", "9"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a member"));
}

fn cli(args: &[&str], token: &str, servers: &[String]) -> Output {
    Command::new(BIN)
        .args(args)
        .args(["--json", "--server", &servers.join(",")])
        .env("LINKREG_TOKEN", token)
        .output()
        .expect("linkreg runs")
}

fn start_cluster(dir: &std::path::Path) -> (Vec<Proc>, Vec<String>, Vec<String>) {
    let addr = |_| format!("127.0.0.1:{}", free_port());
    let peers: Vec<String> = (0..3).map(addr).collect();
    let clients: Vec<String> = (0..3).map(addr).collect();
    let mut nodes = vec![serve(1, dir, &peers[0], &clients[0], &["--init"])];
    for i in 1..3 {
        nodes.push(serve(
            i as u64 + 1,
            dir,
            &peers[i],
            &clients[i],
            &["--join", &peers[0]],
        ));
    }
    wait_status(&clients[0], "three voters", |s| {
        voters(s) == 3 && !s["leader_id"].is_null()
    });
    (nodes, peers, clients)
}

#[test]
fn the_client_commands_work_against_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let (_nodes, _peers, clients) = start_cluster(dir.path());
    // A dead first server is skipped.
    let servers = vec![format!("127.0.0.1:{}", free_port()), clients[1].clone()];
    let created = cli(
        &[
            "link",
            "create",
            "--ssin",
            "85.07.30-033.28",
            "--country",
            "nl",
            "--type",
            "PASSPORT",
            "--value",
            "nx-123456",
            "--from",
            "2020-01-01",
        ],
        "dev-writer",
        &servers,
    );
    assert!(created.status.success(), "{created:?}");
    let id = json(&created)["link"]["id"].as_u64().unwrap();
    let found = json(&cli(
        &["link", "search", "--ssin", "85073003328", "--linearizable"],
        "dev-writer",
        &clients[2..],
    ));
    assert_eq!(found["links"][0]["id"].as_u64(), Some(id));
    let found = json(&cli(
        &["link", "search", "--country", "NL", "--key", "NX123456"],
        "dev-writer",
        &clients,
    ));
    assert_eq!(found["links"][0]["normalized_value"], "NX123456");
    let updated = json(&cli(
        &[
            "link",
            "update",
            &id.to_string(),
            "--from",
            "2020-01-01",
            "--to",
            "2030-12-31",
            "--expected-version",
            "1",
        ],
        "dev-writer",
        &clients,
    ));
    assert_eq!(updated["link"]["version"], 2);
    // Errors: non-zero exit with the stable code.
    let dup = cli(
        &[
            "link",
            "create",
            "--ssin",
            "85073003328",
            "--country",
            "NL",
            "--type",
            "PASSPORT",
            "--value",
            "NX123456",
        ],
        "dev-writer",
        &clients,
    );
    assert!(!dup.status.success());
    assert_eq!(json(&dup)["error"]["code"], "LINK_EXISTS");
    assert_eq!(json(&dup)["error"]["link_id"], id.to_string());
    let denied = cli(
        &["link", "delete", &id.to_string(), "--reason", "test"],
        "dev-writer",
        &clients,
    );
    assert_eq!(json(&denied)["error"]["code"], "PERMISSION_DENIED");
    let bad = cli(
        &[
            "link",
            "create",
            "--ssin",
            "12345678901",
            "--country",
            "NL",
            "--type",
            "PASSPORT",
            "--value",
            "NX9",
        ],
        "dev-writer",
        &clients,
    );
    assert_eq!(
        (
            json(&bad)["error"]["code"].as_str(),
            json(&bad)["error"]["field"].as_str()
        ),
        (Some("INVALID_SSIN"), Some("ssin"))
    );
    // Keeper commands.
    let rule = cli(
        &[
            "format-rule",
            "set",
            "--country",
            "DE",
            "--type",
            "PASSPORT",
            "--min",
            "9",
            "--max",
            "9",
            "--pattern",
            "[CFGHJK][0-9A-Z]{8}",
        ],
        "dev-keeper",
        &clients,
    );
    assert!(rule.status.success(), "{rule:?}");
    let rules = json(&cli(&["format-rule", "list"], "dev-writer", &clients));
    assert_eq!(rules["rules"][0]["rule"]["min_length"], 9);
    let added = cli(
        &[
            "key-type",
            "add",
            "VISA_NUMBER",
            "--nl",
            "Visumnummer",
            "--fr",
            "Numéro de visa",
            "--de",
            "Visumnummer",
            "--en",
            "Visa number",
        ],
        "dev-keeper",
        &clients,
    );
    assert!(added.status.success(), "{added:?}");
    let deactivated = json(&cli(
        &["key-type", "deactivate", "VISA_NUMBER"],
        "dev-keeper",
        &clients,
    ));
    assert_eq!(deactivated["key_types"][0]["active"], false);
    let deleted = cli(
        &[
            "link",
            "delete",
            &id.to_string(),
            "--reason",
            "wrong person",
        ],
        "dev-keeper",
        &clients,
    );
    assert!(deleted.status.success(), "{deleted:?}");
    let history = json(&cli(
        &["link", "history", &id.to_string()],
        "dev-writer",
        &clients,
    ));
    let actions: Vec<&str> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["create_link", "update_link_validity", "delete_link"]
    );
    // Text output is a table.
    let table = Command::new(BIN)
        .args(["key-type", "list", "--server", &clients[0]])
        .env("LINKREG_TOKEN", "dev-writer")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.lines().next().unwrap().starts_with("CODE") && text.contains("VISA_NUMBER"),
        "{text}"
    );
}

/// Writes from several clients while the leader is killed with SIGKILL and restarted: every
/// acknowledged create is on every node exactly once, and the replicas end identical.
#[test]
fn acknowledged_creates_survive_kill_9_of_the_leader() {
    use linkreg::proto::linkreg as pb;
    use linkreg::proto::linkreg::link_register_client::LinkRegisterClient;
    use std::sync::{Arc, Mutex};

    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, peers, clients) = start_cluster(dir.path());
    let leader = json(&cluster(&clients[0], &["status"]))["leader_id"]
        .as_u64()
        .unwrap() as usize;
    let acked: Arc<Mutex<Vec<(u64, u64)>>> = Arc::new(Mutex::new(Vec::new()));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let workers: Vec<_> = (0..4u64)
        .map(|w| {
            let clients = clients.clone();
            let acked = acked.clone();
            runtime.spawn(async move {
                for i in 0..40u64 {
                    let person = w * 1000 + i;
                    let request = pb::CreateLinkRequest {
                        ssin: ssin(person),
                        country: "BE".into(),
                        key_type: "TAX_NUMBER".into(),
                        value: format!("TX{person:08}"),
                        client_id: Some(format!("worker-{w}")),
                        request_id: Some(i + 1),
                        ..Default::default()
                    };
                    // Retry the same request id on any node until it is decided.
                    for attempt in 0..200usize {
                        let server = &clients[(attempt + w as usize) % clients.len()];
                        let Ok(mut c) =
                            LinkRegisterClient::connect(format!("http://{server}")).await
                        else {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        };
                        let mut req = tonic::Request::new(request.clone());
                        req.metadata_mut()
                            .insert("authorization", "Bearer dev-writer".parse().unwrap());
                        match c.create_link(req).await {
                            Ok(r) => {
                                acked
                                    .lock()
                                    .unwrap()
                                    .push((person, r.into_inner().link.unwrap().id));
                                break;
                            }
                            Err(s)
                                if matches!(
                                    s.code(),
                                    tonic::Code::Unavailable
                                        | tonic::Code::DeadlineExceeded
                                        | tonic::Code::Unknown
                                        | tonic::Code::Cancelled
                                ) =>
                            {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            Err(s) => panic!("worker {w} person {person}: {s:?}"),
                        }
                    }
                }
            })
        })
        .collect();
    // Mid-load: once a quarter of the creates are acknowledged.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 40 {
        assert!(Instant::now() < deadline, "the load did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    nodes[leader - 1].child.kill().unwrap(); // SIGKILL
    let at_kill = acked.lock().unwrap().len();
    nodes[leader - 1].child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    nodes[leader - 1] = serve(
        leader as u64,
        dir.path(),
        &peers[leader - 1],
        &clients[leader - 1],
        &[],
    );
    for w in workers {
        runtime.block_on(w).unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), 160, "every create was eventually acknowledged");
    assert!(
        at_kill < 160,
        "the leader was killed after the load had finished"
    );
    // Converged: same digest at the same index everywhere.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let digests: Vec<Value> = clients
            .iter()
            .map(|c| json(&cluster(c, &["digest"])))
            .collect();
        if digests.windows(2).all(|w| {
            w[0]["sha256"] == w[1]["sha256"] && w[0]["applied_index"] == w[1]["applied_index"]
        }) && digests[0]["sha256"].is_string()
        {
            break;
        }
        assert!(Instant::now() < deadline, "replicas differ: {digests:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
    for client in &clients {
        for (person, id) in &acked {
            let out = cli(
                &["link", "search", "--ssin", &ssin(*person)],
                "dev-writer",
                std::slice::from_ref(client),
            );
            let ids: Vec<u64> = json(&out)["links"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["id"].as_u64().unwrap())
                .collect();
            assert_eq!(ids, [*id], "{client}: person {person}");
        }
    }
}

fn ssin(n: u64) -> String {
    let year = 1950 + (n % 50) as i32;
    let month = 1 + ((n / 50) % 12) as u8;
    let day = 1 + ((n / 600) % 28) as u8;
    let counter = 1 + (n % 997) as u16;
    linkreg::domain::Ssin::compose(year, month, day, counter)
        .unwrap()
        .as_str()
}

/// A leader that stops answering without closing its connections (here SIGSTOP; a host that
/// froze or whose packets vanish looks the same): a linearizable read on a follower gives up on
/// it and is answered through the leader the other two elect, well within the node's deadline.
#[test]
fn a_linearizable_read_outlives_a_leader_that_stops_answering() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, _peers, clients) = start_cluster(dir.path());
    let leader = json(&cluster(&clients[0], &["status"]))["leader_id"]
        .as_u64()
        .unwrap() as usize;
    let follower = clients[leader % 3].clone();
    let person = ssin(4242);
    let created = cli(
        &[
            "link",
            "create",
            "--ssin",
            &person,
            "--country",
            "BE",
            "--type",
            "TAX_NUMBER",
            "--value",
            "TX4242",
        ],
        "dev-writer",
        &clients,
    );
    assert!(created.status.success(), "{created:?}");
    let id = json(&created)["link"]["id"].as_u64();
    // The follower has talked to this leader already (the create was replicated through it),
    // so its connection to the leader is open when the leader freezes.
    let search = |linearizable: bool| {
        let mut args = vec!["link", "search", "--ssin", &person];
        if linearizable {
            args.push("--linearizable");
        }
        cli(&args, "dev-writer", std::slice::from_ref(&follower))
    };
    let before = search(true);
    assert_eq!(json(&before)["links"][0]["id"].as_u64(), id, "{before:?}");

    let stop = |signal: &str| {
        let pid = nodes[leader - 1].child.id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(status.success());
    };
    stop("-STOP");
    let started = Instant::now();
    let during = search(true);
    let took = started.elapsed();
    stop("-CONT");
    assert!(during.status.success(), "{during:?}");
    assert_eq!(json(&during)["links"][0]["id"].as_u64(), id, "{during:?}");
    // The node's own deadline is 10 s; a read that waited on the frozen leader would reach it.
    assert!(took < Duration::from_secs(9), "the read took {took:?}");
}
