//! The `linkreg` binary as a user runs it.

use std::process::{Command, Output};

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
