//! The `linkreg` binary as a user runs it.

use std::process::{Command, Output};

use linkreg::domain::RegisterView;

fn linkreg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_linkreg"))
        .args(args)
        .output()
        .expect("the linkreg binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("utf-8 output")
}

#[test]
fn ssin_check_reports_each_number_and_exits_0_when_all_are_valid() {
    let out = linkreg(&[
        "ssin",
        "check",
        "--today",
        "2026-12-03",
        "85.07.30-033.28",
        "75260898052",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].contains("85073003328"), "{text}");
    assert!(lines[0].contains("national_register"), "{text}");
    assert!(lines[0].contains("1985-07-30"), "{text}");
    assert!(lines[0].contains("male"), "{text}");
    assert!(
        lines[1].contains("bis") && lines[1].contains("sex unknown"),
        "{text}"
    );
}

#[test]
fn ssin_check_names_the_failed_rule_and_exits_1() {
    let out = linkreg(&[
        "ssin",
        "check",
        "--today",
        "2026-12-03",
        "85073003328",
        "12345678901",
        "81022903534",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].contains("valid"));
    assert!(lines[1].contains("invalid (checksum)"), "{text}");
    assert!(lines[2].contains("invalid (date)"), "{text}");
}

#[test]
fn ssin_check_json_prints_one_object_per_number() {
    let out = linkreg(&[
        "ssin",
        "check",
        "--json",
        "--today",
        "2026-12-03",
        "01490700185",
        "8507300332",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let objects: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(objects.len(), 2);
    let ok = &objects[0];
    assert_eq!(ok["input"], "01490700185");
    assert_eq!(ok["valid"], true);
    assert_eq!(ok["ssin"], "01490700185");
    assert_eq!(ok["kind"], "bis");
    assert_eq!(ok["birth_date"], "2001-09-07");
    assert_eq!(ok["sex"], "male");
    assert!(ok["error"].is_null());
    let bad = &objects[1];
    assert_eq!(bad["valid"], false);
    assert!(bad["ssin"].is_null() && bad["kind"].is_null() && bad["sex"].is_null());
    assert_eq!(bad["error"]["rule"], "length");
    assert!(bad["error"]["message"].as_str().unwrap().contains("10"));
}

#[test]
fn ssin_check_uses_today_for_future_births() {
    // Born 2026-12-04 (national register number, counter 001).
    let n: u64 = 2_261_204_001;
    let ssin = format!("{:09}{:02}", n - 2_000_000_000, 97 - n % 97);
    let before = linkreg(&["ssin", "check", "--today", "2026-12-03", &ssin]);
    assert_eq!(before.status.code(), Some(1));
    assert!(stdout(&before).contains("future_date"));
    let after = linkreg(&["ssin", "check", "--today", "2026-12-04", &ssin]);
    assert_eq!(after.status.code(), Some(0), "{}", stdout(&after));
}

#[test]
fn usage_errors_exit_2() {
    let out = linkreg(&["ssin", "check", "--today", "tomorrow", "85073003328"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--today"));
    assert_eq!(linkreg(&["ssin", "check"]).status.code(), Some(2));
    assert_eq!(linkreg(&["--help"]).status.code(), Some(0));
}

#[test]
fn callers_add_prints_a_token_once_and_stores_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("callers.toml");
    let file_arg = file.to_str().unwrap();
    let out = linkreg(&[
        "callers",
        "add",
        "RIZIV-INAMI",
        "--cbe",
        "0123.456.749",
        "--role",
        "writer",
        "--file",
        file_arg,
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let token = stdout(&out).trim().to_string();
    assert_eq!(token.len(), 64, "{token}");
    let stored = std::fs::read_to_string(&file).unwrap();
    assert!(!stored.contains(&token), "the token itself was stored");
    assert!(
        stored.contains("RIZIV-INAMI") && stored.contains("role = \"writer\""),
        "{stored}"
    );
    let bad = linkreg(&[
        "callers",
        "add",
        "X",
        "--cbe",
        "0123456748",
        "--role",
        "writer",
        "--file",
        file_arg,
    ]);
    assert_ne!(bad.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("CBE"),
        "{bad:?}"
    );
}

mod common;

/// In-process nodes the binary talks to over loopback.
mod nodes {
    use std::time::Duration;

    use linkreg::api::auth::Callers;
    use linkreg::domain::{Caller, Organization, Role};
    use linkreg::server::Running;

    fn caller(name: &str, role: Role) -> Caller {
        Caller {
            organization: Organization::new(name, "0123456749").unwrap(),
            role,
        }
    }

    pub struct Node {
        pub running: Running,
        pub addr: String,
        _dir: tempfile::TempDir,
    }

    /// A node accepting `writer-token` and `keeper-token`. With `init`, it is the leader of its
    /// own one-node cluster once this returns; without, it has no cluster and no leader.
    pub async fn start(id: u64, init: bool, write_timeout: Duration) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let config = super::common::config(id, dir.path(), init, None, write_timeout);
        let client = config.client_addr;
        let callers = Callers::from_tokens(&[
            ("writer-token", caller("Writer org", Role::Writer)),
            ("keeper-token", caller("Keeper org", Role::Keeper)),
        ]);
        let running = super::common::serve(config, callers).await;
        Node {
            addr: client.to_string(),
            running,
            _dir: dir,
        }
    }
}

/// `linkreg ARGS --json --server SERVERS` with `LINKREG_TOKEN=<role>-token`.
fn client(role: &str, servers: &[&str], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_linkreg"))
        .args(args)
        .args(["--json", "--server", &servers.join(",")])
        .env("LINKREG_TOKEN", format!("{role}-token"))
        .env_remove("LINKREG_SERVER")
        .output()
        .expect("the linkreg binary runs")
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}): {out:?}"))
}

fn ids(out: &Output) -> Vec<u64> {
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    json(out)["links"]
        .as_array()
        .unwrap_or_else(|| panic!("no links: {out:?}"))
        .iter()
        .map(|l| l["id"].as_u64().unwrap())
        .collect()
}

fn create_args<'a>(key_type: &'a str, country: &'a str, value: &'a str) -> Vec<&'a str> {
    vec![
        "link",
        "create",
        "--ssin",
        "85.07.30-033.28",
        "--country",
        country,
        "--type",
        key_type,
        "--value",
        value,
    ]
}

#[test]
fn link_get_search_filters_and_key_type_activation() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let node = runtime.block_on(nodes::start(1, true, std::time::Duration::from_secs(5)));
    let s = [node.addr.as_str()];
    let mut passport = create_args("PASSPORT", "NL", "NX123456");
    passport.extend(["--from", "2020-01-01", "--to", "2022-12-31"]);
    let a = client("writer", &s, &passport);
    assert_eq!(a.status.code(), Some(0), "{a:?}");
    let a = json(&a)["link"]["id"].as_u64().unwrap();
    let mut card = create_args("IDENTITY_CARD", "FR", "ID987654");
    card.extend(["--from", "2023-01-01"]);
    let b = json(&client("writer", &s, &card))["link"]["id"]
        .as_u64()
        .unwrap();

    // link get: the link and where it was read.
    let got = client("writer", &s, &["link", "get", &a.to_string()]);
    assert_eq!(got.status.code(), Some(0), "{got:?}");
    let got = json(&got);
    assert_eq!(got["link"]["id"], a);
    assert_eq!(got["link"]["ssin"], "85073003328");
    assert_eq!(got["link"]["key_type"], "PASSPORT");
    assert_eq!(got["link"]["normalized_value"], "NX123456");
    assert_eq!(got["link"]["valid_from"], "2020-01-01");
    assert_eq!(got["link"]["valid_to"], "2022-12-31");
    assert_eq!(got["link"]["created_by"], "Writer org");
    assert_eq!(got["read"]["node_id"], 1);
    let table = Command::new(env!("CARGO_BIN_EXE_linkreg"))
        .args(["link", "get", &b.to_string(), "--server", &node.addr])
        .env("LINKREG_TOKEN", "writer-token")
        .output()
        .unwrap();
    let text = stdout(&table);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("SSIN"),
        "{text}"
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        row,
        [
            b.to_string().as_str(),
            "85073003328",
            "FR",
            "IDENTITY_CARD",
            "ID987654",
            "2023-01-01",
            "-",
            "1"
        ],
        "{text}"
    );
    let missing = client("writer", &s, &["link", "get", "999"]);
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");
    assert_eq!(json(&missing)["error"]["code"], "LINK_NOT_FOUND");

    // link search --ssin with --valid-on and --type.
    let search = |extra: &[&str]| {
        let mut args = vec!["link", "search", "--ssin", "85073003328"];
        args.extend(extra);
        ids(&client("writer", &s, &args))
    };
    assert_eq!(search(&[]), [a, b]);
    assert_eq!(search(&["--valid-on", "2021-06-01"]), [a]);
    assert_eq!(search(&["--valid-on", "2022-12-31"]), [a]);
    assert_eq!(search(&["--valid-on", "2024-02-29"]), [b]);
    assert!(search(&["--valid-on", "2019-12-31"]).is_empty());
    assert_eq!(search(&["--type", "IDENTITY_CARD"]), [b]);
    assert_eq!(search(&["--type", "PASSPORT"]), [a]);
    assert!(search(&["--type", "PASSPORT", "--valid-on", "2024-01-01"]).is_empty());
    assert_eq!(search(&["--country", "NL"]), [a]);
    let bad = client(
        "writer",
        &s,
        &[
            "link",
            "search",
            "--ssin",
            "85073003328",
            "--valid-on",
            "soon",
        ],
    );
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    assert_eq!(json(&bad)["error"]["field"], "valid_on");

    // key-type deactivate / activate (keeper): an inactive type takes no new link.
    let denied = client("writer", &s, &["key-type", "deactivate", "PASSPORT"]);
    assert_eq!(json(&denied)["error"]["code"], "PERMISSION_DENIED");
    let off = client("keeper", &s, &["key-type", "deactivate", "DRIVING_LICENCE"]);
    assert_eq!(off.status.code(), Some(0), "{off:?}");
    let off = json(&off);
    assert_eq!(off["key_types"][0]["code"], "DRIVING_LICENCE");
    assert_eq!(off["key_types"][0]["active"], false);
    let listed = json(&client("writer", &s, &["key-type", "list"]));
    let active = |code: &str| {
        listed["key_types"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["code"] == code)
            .map(|k| k["active"].clone())
    };
    assert_eq!(active("DRIVING_LICENCE"), Some(false.into()));
    assert_eq!(active("PASSPORT"), Some(true.into()));
    let licence = create_args("DRIVING_LICENCE", "DE", "B072RRE2I55");
    let refused = client("writer", &s, &licence);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert_eq!(json(&refused)["error"]["code"], "KEY_TYPE_INACTIVE");
    let on = json(&client(
        "keeper",
        &s,
        &["key-type", "activate", "DRIVING_LICENCE"],
    ));
    assert_eq!(on["key_types"][0]["active"], true);
    let accepted = client("writer", &s, &licence);
    assert_eq!(accepted.status.code(), Some(0), "{accepted:?}");
    assert_eq!(json(&accepted)["link"]["key_type"], "DRIVING_LICENCE");
    runtime.block_on(node.running.stop());
}

#[test]
fn the_next_server_is_tried_when_one_answers_unavailable() {
    use std::time::{Duration, Instant};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Up and answering, but never initialized: it has no leader, so writes and linearizable
    // reads are refused with UNAVAILABLE once its (short) write timeout has passed.
    let lost = runtime.block_on(nodes::start(2, false, Duration::from_millis(300)));
    let good = runtime.block_on(nodes::start(1, true, Duration::from_secs(5)));
    let both = [lost.addr.as_str(), good.addr.as_str()];

    let started = Instant::now();
    let created = client("writer", &both, &create_args("PASSPORT", "NL", "NX123456"));
    assert_eq!(created.status.code(), Some(0), "{created:?}");
    let stderr = String::from_utf8_lossy(&created.stderr);
    assert!(
        stderr.contains(&format!("{}: ", lost.addr)) && stderr.contains("trying the next server"),
        "{stderr}"
    );
    let id = json(&created)["link"]["id"].as_u64().unwrap();
    assert!(
        good.running
            .node
            .store
            .link(linkreg::domain::LinkId(id))
            .unwrap()
            .is_some()
    );
    assert!(
        lost.running
            .node
            .store
            .link(linkreg::domain::LinkId(id))
            .unwrap()
            .is_none()
    );
    let read = client(
        "writer",
        &both,
        &["link", "get", &id.to_string(), "--linearizable"],
    );
    assert_eq!(read.status.code(), Some(0), "{read:?}");
    assert_eq!(json(&read)["read"]["node_id"], 1, "answered by the second");
    assert!(started.elapsed() < Duration::from_secs(10));

    // Alone, the unavailable node makes the command fail, naming why.
    let alone = client(
        "writer",
        &[lost.addr.as_str()],
        &create_args("PASSPORT", "NL", "NX654321"),
    );
    assert_eq!(alone.status.code(), Some(2), "{alone:?}");
    let stderr = String::from_utf8_lossy(&alone.stderr);
    assert!(
        stderr.contains("no server could answer") && stderr.contains("no leader"),
        "{stderr}"
    );
    runtime.block_on(lost.running.stop());
    runtime.block_on(good.running.stop());
}
