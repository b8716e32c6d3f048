//! `flotilla-check` run as a process: a clean history exits 0, a violating one exits 1
//! naming the rule, a malformed or unreadable file exits 2 naming the file; `--output
//! json` prints the report as one JSON document.

#[allow(dead_code)]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use flotilla_check::History;

fn flotilla_check(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flotilla-check")).args(args).output().expect("flotilla-check runs")
}

fn said(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn write(dir: &tempfile::TempDir, name: &str, h: &History) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, serde_json::to_string_pretty(h).expect("serializes")).expect("written");
    path.display().to_string()
}

#[test]
fn a_clean_history_exits_0() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write(&dir, "clean.json", &support::clean());
    let o = flotilla_check(&[&path]);
    assert_eq!(o.status.code(), Some(0), "{}", said(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("0 violations"), "{}", said(&o));
    assert!(out.contains("(seed 42)"), "{}", said(&o));
    assert!(out.contains("rollback-order-and-set"), "{}", said(&o));
}

#[test]
fn the_hand_written_fixture_exits_0() {
    let o = flotilla_check(&[data("one-service.json").to_str().expect("utf-8")]);
    assert_eq!(o.status.code(), Some(0), "{}", said(&o));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("cannot check"), "{}", said(&o));
}

#[test]
fn a_violating_history_exits_1_naming_the_rule_and_the_record() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut h = support::clean();
    support::inventory(&mut h, "app-3", "api").version = "1.0.0".to_owned();
    let path = write(&dir, "violating.json", &h);
    let o = flotilla_check(&[&path]);
    assert_eq!(o.status.code(), Some(1), "{}", said(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("violation [final-versions]"), "{}", said(&o));
    assert!(out.contains("host app-3 inventory: api 1.0.0"), "{}", said(&o));
}

#[test]
fn json_output_is_the_report_as_one_document() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut h = support::rolled_back();
    support::inventory(&mut h, "db-2", "db").version = "2.0.0".to_owned();
    let path = write(&dir, "violating.json", &h);
    let o = flotilla_check(&[&path, "--output", "json", "--skew-ms", "5"]);
    assert_eq!(o.status.code(), Some(1), "{}", said(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", said(&o)));
    assert_eq!(v["clean"], false);
    assert_eq!(v["seed"], 7);
    assert_eq!(v["violations"], 1);
    assert_eq!(v["findings"][0]["rule"], "final-versions");
    assert_eq!(v["findings"][0]["severity"], "violation");
    assert_eq!(v["findings"][0]["records"][0]["record"], "inventory");
    let rules = v["rules"].as_array().expect("rules");
    assert_eq!(rules.len(), 9);
    assert!(rules.iter().all(|r| r["checked"].as_object().is_some_and(|c| !c.is_empty())), "{v}");
}

#[test]
fn strict_fails_on_parts_that_cannot_be_checked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut h = support::clean();
    for e in support::events(&mut h, "r1") {
        e.term = 0;
    }
    let path = write(&dir, "unstamped.json", &h);
    let o = flotilla_check(&[&path]);
    assert_eq!(o.status.code(), Some(0), "{}", said(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("cannot check [term-fencing]"), "{}", said(&o));
    let o = flotilla_check(&[&path, "--strict"]);
    assert_eq!(o.status.code(), Some(1), "{}", said(&o));
}

#[test]
fn a_malformed_file_exits_2_naming_the_file_line_and_column() {
    let path = data("malformed.json");
    let o = flotilla_check(&[path.to_str().expect("utf-8")]);
    assert_eq!(o.status.code(), Some(2), "{}", said(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("malformed.json"), "{}", said(&o));
    assert!(err.contains("not valid JSON") && err.contains("line 7 column 5"), "{}", said(&o));
    assert!(o.stdout.is_empty(), "{}", said(&o));
}

#[test]
fn another_format_exits_2() {
    let o = flotilla_check(&[data("format-2.json").to_str().expect("utf-8")]);
    assert_eq!(o.status.code(), Some(2), "{}", said(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("format-2.json: history format 2 is not supported"), "{}", said(&o));
}

#[test]
fn a_missing_file_exits_2() {
    let o = flotilla_check(&["/nonexistent/history.json"]);
    assert_eq!(o.status.code(), Some(2), "{}", said(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot read /nonexistent/history.json"), "{}", said(&o));
}

#[test]
fn bad_usage_exits_2() {
    let o = flotilla_check(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", said(&o));
    let o = flotilla_check(&["x.json", "--output", "yaml"]);
    assert_eq!(o.status.code(), Some(2), "{}", said(&o));
}
