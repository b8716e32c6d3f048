//! A release too big for gRPC's default answer limit, as a user submits and reads it:
//! the real `flotilla` binary against a real `flotilla-coordinator`. The answer to
//! `Releases.Create` and `Releases.Get` carries the release's whole plan; for thousands
//! of services that is more than tonic's 4 MiB default, which the CLI once refused
//! after the release had been created.

#[allow(dead_code)]
mod support;

use support::{Coordinator, flotilla, obliging_agent, registration, stdout};

/// Services in the spec: enough for a plan view well above 4 MiB.
const SERVICES: usize = 9_000;

/// `SERVICES` services in chains of five hard dependencies.
fn big_spec() -> String {
    let mut spec = String::from("release = \"big\"\n");
    for i in 0..SERVICES {
        spec.push_str(&format!(
            "\n[[service]]\nname = \"svc-{i:05}\"\nversion = \"1.0.0\"\n\
             artifact = {{ url = \"https://artifacts.example/svc.tar.gz\", sha256 = \"{}\" }}\n\
             run = {{ command = \"bin/svc\" }}\n",
            "0".repeat(64)
        ));
        if i % 5 != 0 {
            spec.push_str(&format!("depends_on = [{{ service = \"svc-{:05}\", kind = \"hard\" }}]\n", i - 1));
        }
    }
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_whose_plan_is_larger_than_four_mebibytes_is_submitted_and_shown() {
    let coordinator = Coordinator::start();
    let addr = coordinator.addr.clone();
    obliging_agent(&addr, registration("h-1", &[])).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let spec = dir.path().join("big.toml");
    std::fs::write(&spec, big_spec()).expect("the spec is written");

    let out = flotilla(&addr, &["release", "start", spec.to_str().expect("a UTF-8 path")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = stdout(&out);
    let id = said.trim().strip_prefix("release big submitted as ").unwrap_or_else(|| panic!("{said}")).to_owned();

    // Get answers with the same plan: well over 4 MiB of protobuf.
    let out = flotilla(&addr, &["release", "show", &id, "--output", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown: flotilla_proto::v1::GetResponse = serde_json::from_slice(&out.stdout).expect("a GetResponse");
    let wire = prost::Message::encoded_len(&shown);
    assert!(wire > 4 * 1024 * 1024, "the answer is as large as meant: {wire} bytes of protobuf");
    let plan = shown.release.and_then(|r| r.plan).expect("the release carries its plan");
    assert_eq!(plan.services.len(), SERVICES);

    let out = flotilla(&addr, &["release", "abort", &id, "--reason", "big enough"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
