//! `linkreg gen` and `linkreg bench` through the binary. Smoke and behaviour only: nothing here
//! asserts a speed.

use std::process::{Command, Output};
use std::time::Duration;

use linkreg::api::auth::Callers;
use linkreg::domain::{Caller, LinkId, Organization, RegisterView, Role};
use linkreg::server::Running;
use serde_json::Value;

mod common;

fn linkreg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_linkreg"))
        .args(args)
        .env_remove("LINKREG_SERVER")
        .env_remove("LINKREG_TOKEN")
        .output()
        .expect("the linkreg binary runs")
}

/// One self-initialized node accepting `writer-token`, leader once this returns.
async fn start(dir: &std::path::Path) -> Running {
    let config = common::config(1, dir, true, None, Duration::from_secs(5));
    let writer = Caller {
        organization: Organization::new("Writer org", "0123456749").unwrap(),
        role: Role::Writer,
    };
    let callers = Callers::from_tokens(&[("writer-token", writer)]);
    common::serve(config, callers).await
}

/// (all links, those the bench created during its run) in the node's store.
fn stored_links(running: &Running) -> (u64, u64) {
    let store = &running.node.store;
    let (mut all, mut bench) = (0, 0);
    for id in 1..store.next_link_id().unwrap().0 {
        if let Some(link) = store.link(LinkId(id)).unwrap() {
            all += 1;
            if link.foreign_key.value.normalized().starts_with("BENCH") {
                bench += 1;
            }
        }
    }
    (all, bench)
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

#[test]
fn bench_mixed_reports_latencies_and_its_creates_land_in_the_store() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let running = runtime.block_on(start(dir.path()));
    let addr = running.client_addr.to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_linkreg"))
        .args([
            "bench",
            "--workload",
            "mixed",
            "--clients",
            "4",
            "--duration",
            "2s",
            "--warmup",
            "500ms",
            "--preload",
            "200",
            "--json",
            "--servers",
            &addr,
        ])
        .env("LINKREG_TOKEN", "writer-token")
        .env_remove("LINKREG_SERVER")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("one JSON document ({e}): {out:?}"));

    assert!(u(&report["ops"]) > 0, "{report}");
    assert_eq!(u(&report["errors"]), 0, "{report}");
    assert_eq!(report["errors_by_code"], serde_json::json!({}), "{report}");
    assert_eq!(u(&report["ok"]), u(&report["ops"]));
    assert!(report["ops_per_s"].as_f64().unwrap() > 0.0);
    let latency = &report["latency_us"];
    let (p50, p90, p99, p999, max) = (
        u(&latency["p50"]),
        u(&latency["p90"]),
        u(&latency["p99"]),
        u(&latency["p999"]),
        u(&latency["max"]),
    );
    assert!(
        0 < p50 && p50 <= p90 && p90 <= p99 && p99 <= p999 && p999 <= max,
        "{latency}"
    );
    // Every search finds the preloaded links.
    assert_eq!(u(&report["searches_empty"]), 0, "{report}");
    for op in ["search_ssin", "search_key", "create"] {
        assert!(u(&report["by_op"][op]["ok"]) > 0, "{op}: {report}");
    }

    // The preload and every successful create are in the store, nothing else.
    let preload = &report["preload"];
    assert_eq!(u(&preload["created"]), 200, "{report}");
    assert_eq!(u(&preload["errors"]), 0, "{report}");
    let creates = u(&report["by_op"]["create"]["ok"]) + u(&report["warmup"]["creates_ok"]);
    let (all, bench) = stored_links(&running);
    assert_eq!(bench, creates, "{report}");
    assert_eq!(all, 200 + creates, "{report}");

    // Again with the same seed: the working set is already there, and is kept.
    let again = Command::new(env!("CARGO_BIN_EXE_linkreg"))
        .args([
            "bench",
            "--workload",
            "search-key",
            "--clients",
            "2",
            "--duration",
            "500ms",
            "--warmup",
            "0s",
            "--preload",
            "200",
            "--consistency",
            "linearizable",
            "--json",
            "--servers",
            &addr,
        ])
        .env("LINKREG_TOKEN", "writer-token")
        .env_remove("LINKREG_SERVER")
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(0), "{again:?}");
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(u(&again["preload"]["existing"]), 200, "{again}");
    assert_eq!(u(&again["errors"]), 0, "{again}");
    assert_eq!(u(&again["searches_empty"]), 0, "{again}");
    assert_eq!(stored_links(&running).0, all);
}

#[test]
fn bench_exits_1_with_the_first_error_when_everything_fails() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let running = runtime.block_on(start(dir.path()));
    let addr = running.client_addr.to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_linkreg"))
        .args([
            "bench",
            "--workload",
            "create",
            "--clients",
            "2",
            "--duration",
            "300ms",
            "--warmup",
            "0s",
            "--servers",
            &addr,
        ])
        .env("LINKREG_TOKEN", "not-a-token")
        .env_remove("LINKREG_SERVER")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("UNAUTHENTICATED"), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("UNAUTHENTICATED"),
        "{out:?}"
    );
}

#[test]
fn gen_through_the_binary_is_deterministic_for_a_seed() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let run = |seed: &str, out: &str| {
        let o = linkreg(&["gen", "--links", "1000", "--seed", seed, "--out", out]);
        assert_eq!(o.status.code(), Some(0), "{o:?}");
        std::fs::read_to_string(out).unwrap()
    };
    let a = run("7", &path("a.csv"));
    let b = run("7", &path("b.csv"));
    let c = run("8", &path("c.csv"));
    assert_eq!(a, b);
    assert_ne!(a, c);
    let lines: Vec<&str> = a.lines().collect();
    assert_eq!(lines.len(), 1001);
    assert_eq!(lines[0], "ssin,country,key_type,value,valid_from,valid_to");
    assert!(lines[1..].iter().all(|l| l.split(',').count() == 6));

    // Not .csv: NDJSON, the same links; stdout without --out.
    let ndjson = run("7", &path("a.ndjson"));
    let stdout = linkreg(&["gen", "--links", "1000", "--seed", "7"]);
    assert_eq!(String::from_utf8(stdout.stdout).unwrap(), ndjson);
    let objects: Vec<Value> = ndjson
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objects.len(), 1000);
    for (object, line) in objects.iter().zip(&lines[1..]) {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(object["ssin"], cells[0]);
        assert_eq!(object["country"], cells[1]);
        assert_eq!(object["key_type"], cells[2]);
        assert_eq!(object["value"], cells[3]);
        let optional = |v: &Value| v.as_str().unwrap_or("").to_string();
        assert_eq!(optional(&object["valid_from"]), cells[4]);
        assert_eq!(optional(&object["valid_to"]), cells[5]);
    }
    let forced = linkreg(&["gen", "--links", "3", "--seed", "7", "--format", "csv"]);
    assert!(
        String::from_utf8(forced.stdout)
            .unwrap()
            .starts_with("ssin,country")
    );
}
