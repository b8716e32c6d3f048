//! `flotilla tls` as a user runs it: a CA and certificates that name their holders (and an
//! operator's role), never overwritten, refused with exit 2 for bad names, a missing or
//! unknown role or a missing CA, and a `--dev` set a real coordinator serves mutual TLS
//! with while the CLI drives it with the operator's certificate.

#[allow(dead_code)]
mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

use flotilla_net::pki::{self, CertInfo, OperatorRole, PeerIdentity, Role};
use support::{Coordinator, DEADLINE};

fn flotilla(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flotilla")).args(args).output().expect("flotilla runs")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn identities(path: &Path) -> Vec<PeerIdentity> {
    pki::identities_of(&std::fs::read_to_string(path).expect("a certificate file"))
}

/// The operator role the certificate in `path` carries.
fn operator_role(path: &Path) -> Option<OperatorRole> {
    CertInfo::parse_pem(&std::fs::read_to_string(path).expect("a certificate file"))
        .expect("a certificate")
        .operator_role
}

fn id(domain: &str, role: Role, name: &str) -> PeerIdentity {
    PeerIdentity::new(domain, role, name).expect("a valid identity")
}

#[test]
fn init_and_issue_name_each_holder_and_never_overwrite() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let pki_dir = dir.path().join("pki");
    let d = pki_dir.to_str().expect("UTF-8");

    let out = flotilla(&["tls", "init", "--dir", d, "--trust-domain", "prod"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("CA pin sha256:"), "{}", text(&out));
    let ca_before = std::fs::read(pki_dir.join("ca.pem")).expect("ca.pem");

    let out = flotilla(&["tls", "coordinator", "4", "--san", "coord-4.example.net", "--san", "10.0.0.4", "--dir", d]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(identities(&pki_dir.join("coordinator-4.pem")), [id("prod", Role::Coordinator, "4")]);
    let out = flotilla(&["tls", "operator", "alice", "--role", "deployer", "--dir", d]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("(spiffe://prod/operator/alice, role deployer)"), "{}", text(&out));
    assert_eq!(identities(&pki_dir.join("operator-alice.pem")), [id("prod", Role::Operator, "alice")]);
    assert_eq!(operator_role(&pki_dir.join("operator-alice.pem")), Some(OperatorRole::Deployer));
    for (name, role) in [("vic", "viewer"), ("ada", "admin")] {
        let out = flotilla(&["tls", "operator", name, "--dir", d, "--role", role]);
        assert!(out.status.success(), "{}", text(&out));
        let cert = pki_dir.join(format!("operator-{name}.pem"));
        assert_eq!(identities(&cert), [id("prod", Role::Operator, name)], "one identity: the role is not one");
        assert_eq!(operator_role(&cert), Some(role.parse().expect("a role")));
    }
    let out = flotilla(&["tls", "agent", "web-1", "--dir", d, "--valid-for", "1h"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(identities(&pki_dir.join("agent-web-1.pem")), [id("prod", Role::Agent, "web-1")]);
    for holder in ["coordinator-4.pem", "agent-web-1.pem"] {
        assert_eq!(operator_role(&pki_dir.join(holder)), None, "{holder}");
    }
    #[cfg(unix)]
    for key in ["ca.key", "coordinator-4.key", "operator-alice.key", "agent-web-1.key"] {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(pki_dir.join(key)).expect("the key").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }

    // Refusals: exit 2, saying what to change, and nothing written or replaced.
    for (args, says) in [
        (vec!["tls", "init", "--dir", d], "exists already"),
        (vec!["tls", "operator", "alice", "--role", "admin", "--dir", d], "exists already"),
        (vec!["tls", "operator", "bad name", "--role", "viewer", "--dir", d], "cannot be used"),
        (vec!["tls", "coordinator", "5", "--san", "http://x", "--dir", d], "neither an IP address nor a DNS name"),
        (vec!["tls", "coordinator", "5", "--san", "x"], "flotilla tls init"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args(&args)
            .current_dir(dir.path())
            .env_remove("FLOTILLA_PKI_DIR")
            .output()
            .expect("flotilla runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(says), "{args:?}: {}", text(&out));
    }
    assert_eq!(std::fs::read(pki_dir.join("ca.pem")).expect("ca.pem"), ca_before, "the CA was kept");
    assert!(!pki_dir.join("operator-bad name.pem").exists() && !pki_dir.join("coordinator-5.pem").exists());
    assert!(!dir.path().join("flotilla-pki").exists(), "a refused issue creates no directory");
}

#[test]
fn an_operator_needs_a_known_role_and_without_one_nothing_is_written() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let pki_dir = dir.path().join("pki");
    let d = pki_dir.to_str().expect("UTF-8");
    let out = flotilla(&["tls", "init", "--dir", d]);
    assert!(out.status.success(), "{}", text(&out));
    for (args, says) in [
        (vec!["tls", "operator", "alice", "--dir", d], "--role"),
        (vec!["tls", "operator", "alice", "--role", "root", "--dir", d], "viewer, deployer or admin"),
        (vec!["tls", "operator", "alice", "--role", "Admin", "--dir", d], "viewer, deployer or admin"),
        (vec!["tls", "operator", "alice", "--role", "", "--dir", d], "viewer, deployer or admin"),
    ] {
        let out = flotilla(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(says), "{args:?}: {}", text(&out));
        assert!(!pki_dir.join("operator-alice.pem").exists() && !pki_dir.join("operator-alice.key").exists());
    }
    let help = flotilla(&["tls", "operator", "--help"]);
    assert!(help.status.success(), "{}", text(&help));
    for says in ["--role", "viewer", "deployer", "admin", "reads only", "drains hosts"] {
        assert!(text(&help).contains(says), "{says}: {}", text(&help));
    }
}

#[test]
fn a_dev_set_serves_mutual_tls_and_the_operator_drives_the_cluster_with_it() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let pki_dir = dir.path().join("dev");
    let d = pki_dir.to_str().expect("UTF-8");
    let out = flotilla(&["tls", "--dev", d, "--agent", "web-1", "--agent", "web-2"]);
    assert!(out.status.success(), "{}", text(&out));
    for n in ["1", "2", "3"] {
        assert_eq!(
            identities(&pki_dir.join(format!("coordinator-{n}.pem"))),
            [id(pki::DEFAULT_TRUST_DOMAIN, Role::Coordinator, n)]
        );
    }
    assert_eq!(identities(&pki_dir.join("operator-admin.pem")), [id("flotilla", Role::Operator, "admin")]);
    assert_eq!(operator_role(&pki_dir.join("operator-admin.pem")), Some(OperatorRole::Admin));
    assert!(text(&out).contains("(spiffe://flotilla/operator/admin, role admin)"), "{}", text(&out));
    assert_eq!(identities(&pki_dir.join("agent-web-2.pem")), [id("flotilla", Role::Agent, "web-2")]);
    assert_eq!(operator_role(&pki_dir.join("agent-web-2.pem")), None);
    let again = flotilla(&["tls", "--dev", d]);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));

    let f = |name: &str| pki_dir.join(name);
    let coordinator = Coordinator::start_tls(&f("ca.pem"), &f("coordinator-1.pem"), &f("coordinator-1.key"));
    let [ca, cert, key] = ["ca.pem", "operator-admin.pem", "operator-admin.key"].map(|n| f(n).display().to_string());
    let as_admin = |args: &[&str]| {
        let tls = ["--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key, "--coordinators", &coordinator.addr];
        flotilla(&[&tls[..], args].concat())
    };
    let deadline = Instant::now() + DEADLINE;
    loop {
        let out = as_admin(&["cluster", "status", "--output", "json"]);
        let doc: Option<serde_json::Value> = serde_json::from_slice(&out.stdout).ok();
        if out.status.success() && doc.as_ref().is_some_and(|d| d["status"]["leaderId"] == "1") {
            break;
        }
        assert!(Instant::now() < deadline, "no leader over mutual TLS: {}", text(&out));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // Without a certificate, or plaintext, the coordinator is not reached.
    let plain = flotilla(&["--coordinators", &coordinator.addr, "--insecure", "cluster", "status"]);
    assert_eq!(plain.status.code(), Some(1), "{}", text(&plain));
    // A certificate of another CA is refused by the handshake.
    let other = dir.path().join("other");
    let out = flotilla(&["tls", "--dev", other.to_str().expect("UTF-8")]);
    assert!(out.status.success(), "{}", text(&out));
    let o = |name: &str| other.join(name).display().to_string();
    let stranger = flotilla(&[
        "--tls-ca",
        &ca,
        "--tls-cert",
        &o("operator-admin.pem"),
        "--tls-key",
        &o("operator-admin.key"),
        "--coordinators",
        &coordinator.addr,
        "cluster",
        "status",
    ]);
    assert_eq!(stranger.status.code(), Some(1), "{}", text(&stranger));
}
