//! Three real `linkreg serve` processes on loopback, driven with `linkreg cluster`: the way an
//! operator starts a cluster by hand (see the README).

use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_linkreg");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
