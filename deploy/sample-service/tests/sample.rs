//! The sample service binary answers `/healthz`, `/version` and `/contract` as its
//! behaviour says, refuses to start without a matching dependency contract, crashes on
//! request; `package` produces a real tar.gz with the binary and the behaviour.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flotilla_sample_service::{Behaviour, package};

const BIN: &str = env!("CARGO_BIN_EXE_flotilla-sample-service");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, response.split_once("\r\n\r\n")?.1.to_owned()))
}

fn wait_get(port: u16, path: &str) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(answer) = get(port, path) {
            return answer;
        }
        assert!(Instant::now() < deadline, "port {port} never answered");
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path, behaviour: &Behaviour, port: u16) -> Server {
    std::fs::write(dir.join("behaviour.toml"), behaviour.to_toml()).expect("write behaviour");
    Server(
        Command::new(BIN)
            .current_dir(dir)
            .env("PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    )
}

#[test]
fn serves_its_behaviour() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let behaviour = Behaviour { contract: Some(("pay-api".into(), "2.4.0".into())), ..Behaviour::healthy("2.4.0") };
    let _server = start(dir.path(), &behaviour, port);
    assert_eq!(wait_get(port, "/healthz"), (200, "ok\n".into()));
    assert_eq!(wait_get(port, "/version"), (200, "2.4.0\n".into()));
    assert_eq!(wait_get(port, "/contract"), (200, "{\"name\":\"pay-api\",\"version\":\"2.4.0\"}\n".into()));

    // A consumer that requires ^2.4 starts; one that requires ^3 refuses.
    let dep = format!("http://127.0.0.1:{port}/contract");
    let ok_dir = tempfile::tempdir().expect("tempdir");
    let ok_port = free_port();
    let _ok = start(
        ok_dir.path(),
        &Behaviour { requires: Some((dep.clone(), "^2.4".into())), ..Behaviour::healthy("1.0.0") },
        ok_port,
    );
    assert_eq!(wait_get(ok_port, "/version").0, 200);
    let output = Command::new(BIN)
        .args(["--port", &free_port().to_string(), "--require", &format!("{dep}=^3")])
        .current_dir(tempfile::tempdir().expect("tempdir").path())
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "refusing to start: dependency contract at {dep} serves version 2.4.0, which does not match ^3"
        )),
        "{stderr}"
    );
}

#[test]
fn unhealthy_slow_and_crashing_behaviours() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let started = Instant::now();
    let mut server = start(
        dir.path(),
        &Behaviour {
            unhealthy: true,
            start_delay_ms: 300,
            crash_after_ms: Some(1500),
            exit_code: 7,
            ..Behaviour::healthy("9.9.9")
        },
        port,
    );
    assert_eq!(wait_get(port, "/healthz").0, 503);
    assert!(started.elapsed() >= Duration::from_millis(300), "slow start");
    let status = server.0.wait().expect("wait");
    assert_eq!(status.code(), Some(7));
    assert!(started.elapsed() >= Duration::from_millis(1500));
}

#[test]
fn packages_a_real_tar_gz() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = package(dir.path(), Path::new(BIN), "1.2.3", &Behaviour::healthy("1.2.3")).expect("package");
    assert_eq!(p.path, dir.path().join("sample-1.2.3.tar.gz"));
    assert_eq!(flotilla_sample_service::sha256_file(&p.path).expect("sha"), (p.sha256.clone(), p.size));
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(std::fs::File::open(&p.path).expect("open")));
    let mut names = Vec::new();
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let name = entry.path().expect("path").display().to_string();
        if name == "bin/sample" {
            assert_eq!(entry.header().mode().expect("mode") & 0o777, 0o755);
        }
        if name == "behaviour.toml" {
            let mut text = String::new();
            entry.read_to_string(&mut text).expect("read");
            assert_eq!(Behaviour::parse(&text), Ok(Behaviour::healthy("1.2.3")));
        }
        names.push(name);
    }
    assert_eq!(names, vec!["bin/sample", "behaviour.toml"]);
}

#[test]
fn builds_itself_with_rustc() {
    let dir = tempfile::tempdir().expect("tempdir");
    if std::env::var_os("FLOTILLA_SAMPLE_BIN").is_some() {
        return;
    }
    let bin = flotilla_sample_service::build_binary(dir.path()).expect("build");
    let again = flotilla_sample_service::build_binary(dir.path()).expect("reuse");
    assert_eq!(bin, again);
    let output = Command::new(&bin).args(["--port", "x"]).output().expect("run");
    assert!(String::from_utf8_lossy(&output.stderr).contains("--port x: not a port"));
}

#[test]
fn port_zero_takes_a_free_port_and_check_probes_it_from_the_port_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let check = || Command::new(BIN).arg("--check").current_dir(dir.path()).output().expect("check runs");
    assert!(!check().status.success(), "no server yet: the check fails");
    let _healthy = start(dir.path(), &Behaviour::healthy("1.0.0"), 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let port: u16 = loop {
        if let Some(p) = std::fs::read_to_string(dir.path().join("port")).ok().and_then(|t| t.trim().parse().ok()) {
            break p;
        }
        assert!(Instant::now() < deadline, "no port file");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_ne!(port, 0);
    assert_eq!(wait_get(port, "/healthz").0, 200);
    assert!(check().status.success());

    let sick = tempfile::tempdir().expect("tempdir");
    let mut behaviour = Behaviour::healthy("2.0.0");
    behaviour.unhealthy = true;
    let _sick = start(sick.path(), &behaviour, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sick.path().join("port").exists() {
        assert!(Instant::now() < deadline, "no port file");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = Command::new(BIN).arg("--check").current_dir(sick.path()).output().expect("check runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("503"), "{}", String::from_utf8_lossy(&out.stderr));
}
