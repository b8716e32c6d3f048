//! `flotilla plan` as a user runs it: the real binary on the example specs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use flotilla_proto::v1;

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

/// docs/canary-analysis.md's command: the canary example plans against the inventory
/// and says which metrics judge each service's batches.
#[test]
fn the_canary_example_plans_and_shows_what_each_batch_is_judged_by() {
    let out = flotilla(&["plan", "deploy/examples/canary.toml", "--hosts", HOSTS]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for needle in [
        "payments  canary [api-1] -> 50% [api-2] -> 100% [api-3, api-4]  (bake 2m; analysis of error_ratio, p99_latency, p99_ceiling every 10s)",
        "checkout  canary [web-1] -> 50% [web-2] -> 100% [web-3, web-4]  (bake 2m; analysis of error_ratio, p99_latency every 10s)",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    let doc = std::fs::read_to_string(repo().join("docs/canary-analysis.md")).expect("the doc");
    assert!(doc.contains("plan deploy/examples/canary.toml --hosts deploy/examples/shop-hosts.toml"));
}

/// `--output json` prints the `flotilla.v1.Plan` message (format 2) in the canonical
/// protobuf JSON mapping, as docs/plan-json.md documents it.
#[test]
fn json_output_is_the_plan_message_in_the_canonical_mapping() {
    let out = flotilla(&["plan", SPEC, "--hosts", HOSTS, "--output", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: v1::Plan = serde_json::from_slice(&out.stdout).expect("a flotilla.v1.Plan");
    assert_eq!(plan.format, 2);
    assert_eq!(plan.release, "shop-2026-11-23");
    assert!(plan.fleet_known);
    let mut seen = Vec::new();
    for (i, wave) in plan.waves.iter().enumerate() {
        assert_eq!(wave.wave as usize, i + 1, "waves numbered from 1 in order");
        seen.extend(wave.services.iter().cloned());
    }
    seen.sort();
    let mut expected: Vec<String> = plan.services.iter().map(|s| s.name.clone()).collect();
    expected.sort();
    assert_eq!(seen, expected, "every service in exactly one wave");
    assert_eq!(plan.gates[0].name, "checkout-smoke");
    assert_eq!(plan.gates[0].blocks, ["web", "notifications"]);
    let canary = &plan.stages[0];
    assert_eq!((canary.name.as_str(), canary.approval), ("canary-cell", true));
    assert_eq!(canary.hosts, ["web-c1", "api-c1", "db-c1", "search-c1"]);
    let web = plan.stages[1].rollouts.iter().find(|r| r.service == "web").expect("web's rollout in the second stage");
    let batches: Vec<(&str, &[String])> = web.batches.iter().map(|b| (b.name.as_str(), b.hosts.as_slice())).collect();
    assert_eq!(
        batches,
        [
            ("canary", &["web-1".to_owned()][..]),
            ("30%", &["web-2".to_owned()][..]),
            ("100%", &["web-3".to_owned(), "web-4".to_owned()][..])
        ]
    );
    assert_eq!(plan.rollbacks.len(), plan.services.len(), "what each service's failure rolls back");

    // The raw document: lowerCamelCase names, enums by name, 64-bit integers as strings,
    // fields at their default value present.
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(doc["fleetKnown"], true);
    let catalog = doc["services"].as_array().unwrap().iter().find(|s| s["name"] == "catalog").unwrap();
    assert_eq!(catalog["bakeMs"], "30000", "uint64 as a string");
    assert_eq!(catalog["wave"], 2, "uint32 as a number");
    assert_eq!(catalog["gatedBy"], serde_json::json!([]));
    assert_eq!(catalog["hosts"]["matchLabels"], serde_json::json!({"role": "api"}));
    let data_edge = doc["edges"].as_array().unwrap().iter().find(|e| e["dependent"] == "catalog").unwrap();
    assert_eq!(data_edge["kind"], "EDGE_KIND_DATA");
    assert_eq!(data_edge["contract"], "");
    let pause = doc["rollbacks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["steps"].as_array().unwrap())
        .find(|s| s["action"] == "ROLLBACK_ACTION_PAUSE");
    assert!(
        pause.is_some_and(|s| s["service"] == "catalog-db"),
        "catalog-db's irreversible migration pauses a rollback"
    );
    assert!(doc.get("fleet_known").is_none() && doc.get("rollouts").is_none(), "no names of format 1: {doc}");
}

#[test]
fn json_output_offline_has_batches_by_size_and_no_hosts() {
    let out = flotilla(&["plan", SPEC, "--output", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: v1::Plan = serde_json::from_slice(&out.stdout).expect("a flotilla.v1.Plan");
    assert_eq!(plan.format, 2);
    assert!(!plan.fleet_known);
    assert!(plan.stages.iter().all(|s| s.hosts.is_empty()));
    assert_eq!(plan.waves[0].services, ["orders-db", "catalog-db", "auth", "feature-flags", "search"]);
    assert_eq!(plan.rollback_order.first().map(String::as_str), Some("web"), "dependents first");
    // Offline, every stage has a rollout for every service, in wave order, its batches
    // described by size and without hosts.
    let in_wave_order: Vec<String> = plan.waves.iter().flat_map(|w| w.services.clone()).collect();
    for stage in &plan.stages {
        assert_eq!(stage.rollouts.iter().map(|r| r.service.clone()).collect::<Vec<_>>(), in_wave_order);
    }
    let orders_db = &plan.stages[0].rollouts[0];
    let names: Vec<&str> = orders_db.batches.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["canary (1 host)", "25%", "100%"]);
    assert!(orders_db.batches.iter().all(|b| b.hosts.is_empty()));
}

/// The example in docs/plan-json.md is what the command it names prints, with lists
/// cut where a `// …` line says so: every value it shows is in the real output, in
/// the same place and order.
#[test]
fn the_documented_example_is_the_real_output_trimmed() {
    let doc = std::fs::read_to_string(repo().join("docs/plan-json.md")).expect("docs/plan-json.md");
    assert!(doc.contains("`cargo run --bin flotilla -- plan deploy/examples/shop.toml --output json`"));
    let block = doc.split("```jsonc\n").nth(1).and_then(|b| b.split("```").next()).expect("a jsonc example");
    let json: String = block.lines().filter(|l| !l.trim_start().starts_with("//")).map(|l| format!("{l}\n")).collect();
    let example: serde_json::Value = serde_json::from_str(&json).expect("the example is JSON once cut lines go");
    let out = flotilla(&["plan", SPEC, "--output", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let real: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    if let Err(why) = trimmed_from(&example, &real, "$") {
        panic!("docs/plan-json.md's example is not the real output: {why}");
    }
    assert_eq!(example["format"], 2);
    // Only lists are cut: the example has every field of each object it shows.
    assert_eq!(example.as_object().map(|o| o.len()), real.as_object().map(|o| o.len()));
}

/// Whether `part` is `whole` with list items left out (objects keep every key); if not,
/// where they differ.
fn trimmed_from(part: &serde_json::Value, whole: &serde_json::Value, path: &str) -> Result<(), String> {
    use serde_json::Value;
    match (part, whole) {
        (Value::Object(p), Value::Object(w)) => {
            if p.keys().ne(w.keys()) {
                return Err(format!("{path} has the keys {:?}, not {:?}", p.keys(), w.keys()));
            }
            p.iter().try_for_each(|(k, v)| trimmed_from(v, &w[k], &format!("{path}.{k}")))
        }
        (Value::Array(p), Value::Array(w)) => {
            let mut rest = w.iter();
            for (i, item) in p.iter().enumerate() {
                if !rest.any(|candidate| trimmed_from(item, candidate, path).is_ok()) {
                    return Err(format!("{path}[{i}] is not in the real output (in order): {item}"));
                }
            }
            Ok(())
        }
        _ if part == whole => Ok(()),
        _ => Err(format!("{path} is {part} in the example but {whole} in the output")),
    }
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
