//! `flotilla plan` as a user runs it: the real binary on the example specs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn flotilla(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flotilla")).args(args).current_dir(repo()).output().expect("flotilla runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const SPEC: &str = "deploy/examples/shop.toml";
const HOSTS: &str = "deploy/examples/shop-hosts.toml";

#[test]
fn the_example_plans_offline_with_stages_waves_gates_and_rollback_order() {
    let out = flotilla(&["plan", SPEC]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for needle in [
        "release shop-2026-11-23: 10 services",
        "1. canary-cell",
        "[approval before the next stage]",
        "wave 1: orders-db, catalog-db, auth, feature-flags, search",
        "gate checkout-smoke opens after this wave",
        "canary (1 host) -> 25% -> 100%",
        "Rollback if a service fails",
        "PAUSE at catalog-db",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn the_example_plans_against_an_inventory_with_hosts_per_batch() {
    let out = flotilla(&["plan", SPEC, "--hosts", HOSTS]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("(4 host(s): web-c1, api-c1, db-c1, search-c1)"), "{text}");
    assert!(text.contains("canary [web-1] -> 30% [web-2] -> 100% [web-3, web-4]"), "{text}");
    assert!(text.contains("already at 1.4.2: api-c1"), "notifications is already at target on api-c1:\n{text}");
}

#[test]
fn json_output_has_the_documented_shape() {
    let out = flotilla(&["plan", SPEC, "--hosts", HOSTS, "--output", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(doc["format"], 1);
    assert_eq!(doc["release"], "shop-2026-11-23");
    let waves = doc["waves"].as_array().unwrap();
    let mut seen = Vec::new();
    for (i, wave) in waves.iter().enumerate() {
        assert_eq!(wave["wave"], i + 1, "waves numbered from 1 in order");
        seen.extend(wave["services"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()));
    }
    seen.sort();
    let mut expected: Vec<String> =
        doc["services"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_owned()).collect();
    expected.sort();
    assert_eq!(seen, expected, "every service in exactly one wave");
    assert_eq!(doc["gates"][0]["blocks"], serde_json::json!(["web", "notifications"]));
    assert!(doc["rollouts"].as_array().unwrap().iter().any(|r| r["batches"][0]["hosts"].is_array()));
}

#[test]
fn dot_output_is_a_graph_of_the_release() {
    let out = flotilla(&["plan", SPEC, "--output", "dot"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("digraph \"shop-2026-11-23\" {"), "{text}");
    assert!(text.contains("\"catalog\" -> \"catalog-db\" [label=\"data\"];"), "{text}");
    assert!(text.trim_end().ends_with('}'));
}

#[test]
fn a_broken_spec_exits_2_with_file_line_and_column() {
    let dir = std::env::temp_dir().join(format!("flotilla-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = dir.join("broken.toml");
    let text = std::fs::read_to_string(repo().join(SPEC)).unwrap().replace("bake = \"30s\"", "bake = \"30 parsecs\"");
    std::fs::write(&spec, text).unwrap();
    let out = flotilla(&["plan", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("--> {}:10:8", spec.display())), "{err}");
    assert!(out.stdout.is_empty(), "nothing is printed on stdout for a bad spec");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_cycle_is_printed_as_a_path() {
    let dir = std::env::temp_dir().join(format!("flotilla-cycle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = dir.join("cycle.toml");
    let text = std::fs::read_to_string(repo().join(SPEC)).unwrap().replace(
        "{ service = \"auth\", kind = \"hard\" },",
        "{ service = \"auth\", kind = \"hard\" },\n  { service = \"web\", kind = \"soft\" },",
    );
    std::fs::write(&spec, text).unwrap();
    let out = flotilla(&["plan", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("dependency cycle: orders -> web -> orders"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_missing_spec_file_is_a_usage_error() {
    let out = flotilla(&["plan", "deploy/examples/nope.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot read deploy/examples/nope.toml"), "{}", stderr(&out));
}
