//! Operator tokens, roles and the audit trail as a user drives them with the CLI: a real
//! coordinator serving TLS with a `flotilla tls --dev` set; the admin of the set makes a
//! viewer token, which works with `--tls-ca` alone, within its role, until revoked;
//! `audit` shows what was refused; an operator certificate with a role says who it is.

#[allow(dead_code)]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Coordinator, DEADLINE};

/// Runs the CLI with `args` and nothing from the environment that would change who it is.
fn flotilla(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flotilla"));
    for var in ["FLOTILLA_TOKEN", "FLOTILLA_TLS_CA", "FLOTILLA_TLS_CERT", "FLOTILLA_TLS_KEY", "FLOTILLA_INSECURE"] {
        cmd.env_remove(var);
    }
    cmd.args(args).output().expect("flotilla runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn said(o: &Output) -> String {
    format!("exit {:?}\n{}{}", o.status.code(), stdout(o), stderr(o))
}

fn json(o: &Output) -> Value {
    assert!(o.status.success(), "{}", said(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", said(o)))
}

/// Who calls: the flags that reach the coordinator with some credentials.
struct Caller {
    flags: Vec<String>,
}

impl Caller {
    fn certificate(addr: &str, ca: &Path, cert: &Path, key: &Path) -> Self {
        let flags = [("--tls-ca", ca), ("--tls-cert", cert), ("--tls-key", key)]
            .iter()
            .flat_map(|(flag, p)| [(*flag).to_owned(), p.display().to_string()])
            .chain(["--coordinators".to_owned(), addr.to_owned()])
            .collect();
        Self { flags }
    }

    /// The token and the CA, no certificate.
    fn token(addr: &str, ca: &Path, token: &str) -> Self {
        let flags = ["--tls-ca", &ca.display().to_string(), "--token", token, "--coordinators", addr]
            .map(str::to_owned)
            .to_vec();
        Self { flags }
    }

    fn run(&self, args: &[&str]) -> Output {
        let flags: Vec<&str> = self.flags.iter().map(String::as_str).collect();
        flotilla(&[&flags[..], args].concat())
    }
}

/// Polls `audit --output json` (as `admin`, with `filter`) until a record satisfies
/// `wanted`; records are committed a moment after the call they record.
fn audited(admin: &Caller, filter: &[&str], wanted: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let out = admin.run(&[&["audit", "--output", "json"], filter].concat());
        let doc = json(&out);
        if let Some(record) = doc["records"].as_array().and_then(|rs| rs.iter().find(|r| wanted(r))) {
            return record.clone();
        }
        assert!(Instant::now() < deadline, "no such audit record: {}", said(&out));
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_viewer_token_works_with_the_ca_alone_within_its_role_until_revoked_and_the_trail_shows_it() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let pki_dir = dir.path().join("dev");
    let d = pki_dir.to_str().expect("UTF-8");
    let out = flotilla(&["tls", "--dev", d]);
    assert!(out.status.success(), "{}", said(&out));
    let f = |name: &str| -> PathBuf { pki_dir.join(name) };
    let ca = f("ca.pem");
    let coordinator = Coordinator::start_tls(&ca, &f("coordinator-1.pem"), &f("coordinator-1.key"));
    let addr = coordinator.addr.as_str();
    let admin = Caller::certificate(addr, &ca, &f("operator-admin.pem"), &f("operator-admin.key"));
    let deadline = Instant::now() + DEADLINE;
    loop {
        let out = admin.run(&["cluster", "status", "--output", "json"]);
        let doc: Option<Value> = serde_json::from_slice(&out.stdout).ok();
        if out.status.success() && doc.as_ref().is_some_and(|d| d["status"]["leaderId"] == "1") {
            break;
        }
        assert!(Instant::now() < deadline, "no leader: {}", said(&out));
        std::thread::sleep(Duration::from_millis(100));
    }

    let out = admin.run(&["whoami"]);
    assert!(out.status.success(), "{}", said(&out));
    assert!(
        stdout(&out).starts_with("operator admin (role admin), authenticated by certificate, expires "),
        "{}",
        said(&out)
    );

    // The token alone on standard output; what it is on standard error.
    let out = admin.run(&["tokens", "create", "--role", "viewer", "--ttl", "1h", "--name", "bob"]);
    assert!(out.status.success(), "{}", said(&out));
    let token = stdout(&out).trim().to_owned();
    assert!(token.starts_with("flotilla-token-v1.") && !token.contains('\n'), "{}", said(&out));
    let note = stderr(&out);
    assert!(
        note.contains("(name bob, role viewer)") && note.contains("shown once") && !note.contains(&token),
        "{note}"
    );
    let id = token.split('.').nth(2).expect("FORMAT.CLUSTER.ID.SECRET").to_owned();
    assert!(note.contains(&format!("operator token {id} ")), "{note}");

    // With the token, the CA alone reaches the cluster as `token bob`, a viewer.
    let bob = Caller::token(addr, &ca, &token);
    let out = bob.run(&["whoami"]);
    assert!(out.status.success(), "{}", said(&out));
    assert!(
        stdout(&out).starts_with(&format!("token bob (role viewer), authenticated by token {id}, expires ")),
        "{}",
        said(&out)
    );
    let me = json(&bob.run(&["whoami", "--output", "json"]));
    assert_eq!(me["actor"], "token bob");
    assert_eq!(me["role"], "OPERATOR_ROLE_VIEWER");
    // The token outweighs a certificate presented with it.
    let both = Caller { flags: [&admin.flags[..], &["--token".to_owned(), token.clone()]].concat() };
    assert_eq!(json(&both.run(&["whoami", "--output", "json"]))["actor"], "token bob");

    // A viewer reads...
    let out = bob.run(&["release", "list"]);
    assert!(out.status.success(), "{}", said(&out));
    assert_eq!(stdout(&out), "no releases\n");
    let out = bob.run(&["tokens", "list"]);
    assert!(out.status.success() && stdout(&out).contains("bob"), "{}", said(&out));
    // ...and may not make tokens: refused as the CLI prints any refusal, naming the role.
    let out = bob.run(&["tokens", "create", "--role", "admin", "--ttl", "1h", "--name", "escalate"]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(
        stderr(&out).starts_with("error: token bob (role viewer) may not call")
            && stderr(&out).contains("needs the admin role"),
        "{}",
        said(&out)
    );
    assert!(stdout(&out).is_empty(), "{}", said(&out));

    // The trail names who was refused what, and why.
    let refused = audited(&admin, &[], |r| r["actor"] == "token bob" && r["code"] == "PERMISSION_DENIED");
    assert_eq!(refused["role"], "viewer");
    assert!(refused["method"].as_str().is_some_and(|m| m.contains("CreateToken")), "{refused}");
    let out = admin.run(&["audit"]);
    assert!(out.status.success(), "{}", said(&out));
    let table = stdout(&out);
    let header = table.lines().next().unwrap_or_default();
    for column in ["TIME", "ACTOR", "ROLE", "METHOD", "TARGET", "OUTCOME", "NODE", "PEER"] {
        assert!(header.contains(column), "{column}: {table}");
    }
    assert!(
        table.lines().any(|l| l.contains("token bob") && l.contains("viewer") && l.contains("PERMISSION_DENIED: ")),
        "{table}"
    );
    // The admin's token creation is there too, allowed: newest first, so after bob's refusal.
    let made = table.lines().position(|l| l.contains("operator admin") && l.contains(" ok "));
    let denied = table.lines().position(|l| l.contains("PERMISSION_DENIED"));
    assert!(made.is_some() && denied < made, "{table}");
    // Filters: by actor name, by time; a limit says what it left out.
    let only_bob = json(&admin.run(&["audit", "--actor", "bob", "--since", "1h", "--output", "json"]));
    let records = only_bob["records"].as_array().expect("records");
    assert!(!records.is_empty() && records.iter().all(|r| r["actor"] == "token bob"), "{only_bob}");
    let none = admin.run(&["audit", "--actor", "nobody"]);
    assert!(none.status.success(), "{}", said(&none));
    assert_eq!(stdout(&none), "no audit records match\n");
    let one = json(&admin.run(&["audit", "--limit", "1", "--output", "json"]));
    assert_eq!(one["records"].as_array().map(Vec::len), Some(1), "{one}");
    assert_eq!(one["truncated"], true, "{one}");
    let out = admin.run(&["audit", "--limit", "1"]);
    assert!(stdout(&out).contains("older records were left out"), "{}", said(&out));

    // Revoked: every call with the token is refused from then on.
    let out = admin.run(&["tokens", "revoke", &id]);
    assert!(out.status.success(), "{}", said(&out));
    assert!(stdout(&out).contains(&format!("operator token {id} (bob) revoked")), "{}", said(&out));
    let out = bob.run(&["release", "list"]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(stderr(&out).contains("was revoked by operator admin"), "{}", said(&out));
    let out = bob.run(&["tokens", "create", "--role", "viewer", "--ttl", "1h"]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    audited(&admin, &["--actor", "token bob"], |r| r["code"] == "UNAUTHENTICATED");
    let out = admin.run(&["tokens", "list"]);
    assert!(out.status.success() && !stdout(&out).contains("bob"), "{}", said(&out));
    let out = admin.run(&["tokens", "list", "--all"]);
    assert!(
        stdout(&out).lines().any(|l| l.starts_with(&id) && l.contains("revoked") && l.contains("by operator admin")),
        "{}",
        said(&out)
    );
    let all = json(&admin.run(&["tokens", "list", "--all", "--output", "json"]));
    assert_eq!(all["tokens"][0]["revoked"], true, "{all}");

    // An operator certificate with a role: who it is, and what it may not do.
    let out = flotilla(&["tls", "operator", "carol", "--role", "viewer", "--dir", d]);
    assert!(out.status.success(), "{}", said(&out));
    let carol = Caller::certificate(addr, &ca, &f("operator-carol.pem"), &f("operator-carol.key"));
    let out = carol.run(&["whoami"]);
    assert!(out.status.success(), "{}", said(&out));
    assert!(
        stdout(&out).starts_with("operator carol (role viewer), authenticated by certificate, expires "),
        "{}",
        said(&out)
    );
    let out = carol.run(&["tokens", "revoke", &id]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(stderr(&out).contains("operator carol (role viewer)") && stderr(&out).contains("admin"), "{}", said(&out));

    // A token is never sent in plaintext, nor without a CA to check the server with.
    for (args, says) in [
        (vec!["--insecure", "--token", &token, "--coordinators", addr, "whoami"], "needs TLS"),
        (vec!["--token", &token, "--coordinators", addr, "whoami"], "--tls-ca"),
    ] {
        let out = flotilla(&args);
        assert_eq!(out.status.code(), Some(2), "{}", said(&out));
        assert!(stderr(&out).contains(says) && !said(&out).contains(&token), "{}", said(&out));
    }
}
