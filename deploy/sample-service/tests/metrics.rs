//! The real binary's Prometheus side: `/metrics` moves by the service's own traffic, the
//! share of 500s follows `error_ratio` while `/healthz` stays 200, `/work` waits the
//! latency, the `file_sd` target file names the port (and a new copy replaces it), and
//! `promtool check metrics` accepts the text when it is installed
//! (`FLOTILLA_REQUIRE_PROMETHEUS=1` makes its absence a failure).

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flotilla_sample_service::Behaviour;
use flotilla_sample_service::metrics::{self, REQUESTS_TOTAL, sum_samples};

const BIN: &str = env!("CARGO_BIN_EXE_flotilla-sample-service");

/// How long anything may take to happen on a busy machine.
const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `f` every 20 ms until it gives a value; fails after [`DEADLINE`].
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An HTTP answer: status, headers (lowercase names) and body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

fn get(port: u16, path: &str) -> Answer {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n\r\n").expect("send");
    let mut response = String::new();
    s.read_to_string(&mut response).expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).expect("status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer { status, headers, body: body.to_owned() }
}

struct Server {
    child: Child,
    dir: PathBuf,
}

impl Server {
    /// Starts the binary on port 0 in `dir` with `behaviour.toml` and `args`, the
    /// environment cleared of Flotilla's variables and then given `env`.
    fn start(dir: &Path, behaviour: &Behaviour, args: &[&str], env: &[(&str, &str)]) -> Self {
        std::fs::write(dir.join("behaviour.toml"), behaviour.to_toml()).expect("write behaviour");
        let _ = std::fs::remove_file(dir.join("port"));
        let mut cmd = Command::new(BIN);
        cmd.current_dir(dir).args(["--port", "0"]).args(args);
        for var in ["FLOTILLA_SERVICE", "FLOTILLA_VERSION", "FLOTILLA_HOST", "FLOTILLA_SAMPLE_PROMETHEUS_SD", "PORT"] {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().copied());
        let log = std::fs::File::create(dir.join("stderr.log")).expect("log");
        let child = cmd.stdout(Stdio::null()).stderr(log).spawn().expect("spawn");
        Self { child, dir: dir.to_owned() }
    }

    /// The port from `./port`, once the server has written it.
    fn port(&mut self) -> u16 {
        let port_file = self.dir.join("port");
        let dir = self.dir.clone();
        let child = &mut self.child;
        eventually("./port", || {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
                panic!("the server exited with {status}: {log}");
            }
            std::fs::read_to_string(&port_file).ok()?.trim().parse().ok()
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `promtool check metrics` accepts `text`, when promtool is installed.
fn promtool_accepts(text: &str) {
    let installed = Command::new("promtool").arg("--version").output().is_ok_and(|o| o.status.success());
    if !installed {
        assert!(
            std::env::var("FLOTILLA_REQUIRE_PROMETHEUS").as_deref() != Ok("1"),
            "FLOTILLA_REQUIRE_PROMETHEUS=1 but promtool is not on PATH (Debian: apt-get install prometheus)"
        );
        let _ = writeln!(std::io::stderr(), "promtool is not on PATH: skipped `promtool check metrics`");
        return;
    }
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("feed promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn errors_show_in_the_metrics_while_healthz_stays_green() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sd = dir.path().join("prometheus-sd");
    let sd_arg = sd.to_str().expect("utf-8 path");
    // The file says no errors and no traffic; the flags override it.
    let behaviour = Behaviour::healthy("2.0.0").with_traffic_rps(0);
    let env = [("FLOTILLA_SERVICE", "web"), ("FLOTILLA_HOST", "web-1")];
    let args = ["--error-ratio", "0.25", "--traffic-rps", "200", "--prometheus-sd", sd_arg];
    let mut server = Server::start(dir.path(), &behaviour, &args, &env);
    let port = server.port();

    // The file_sd target names the port (the directory did not exist).
    let target = sd.join("web-1-web.json");
    let text = eventually("the file_sd target", || std::fs::read_to_string(&target).ok());
    assert_eq!(text.trim(), format!(r#"[{{"targets":["127.0.0.1:{port}"],"labels":{{}}}}]"#));

    // Real requests answer 200 or 500; the health check stays green throughout.
    for _ in 0..8 {
        assert!(matches!(get(port, "/work").status, 200 | 500));
        assert_eq!(get(port, "/healthz").status, 200);
    }

    // The service's own traffic moves the counters; a quarter of them are 500s.
    let labels = [("service", "web"), ("version", "2.0.0"), ("host", "web-1")];
    let scrape = eventually("400 requests in the metrics", || {
        let answer = get(port, "/metrics");
        (sum_samples(&answer.body, REQUESTS_TOTAL, &labels) >= 400.0).then_some(answer)
    });
    assert_eq!(scrape.status, 200);
    assert_eq!(scrape.header("content-type"), Some(metrics::CONTENT_TYPE));
    let total = sum_samples(&scrape.body, REQUESTS_TOTAL, &labels);
    let errors = sum_samples(&scrape.body, REQUESTS_TOTAL, &[("code", "500")]);
    let ok = sum_samples(&scrape.body, REQUESTS_TOTAL, &[("code", "200")]);
    assert_eq!(ok + errors, total);
    // The pattern is exact (±1); one real request may be in flight between its outcome
    // and its observation.
    assert!((errors - total * 0.25).abs() <= 2.0, "{errors} of {total} failed:\n{}", scrape.body);
    let histogram_count = sum_samples(&scrape.body, "flotilla_sample_request_duration_seconds_count", &labels);
    assert_eq!(histogram_count, total);
    let inf = sum_samples(&scrape.body, "flotilla_sample_request_duration_seconds_bucket", &[("le", "+Inf")]);
    assert_eq!(inf, total);
    // Default latency: 5–8 ms, so every request is in the 0.01 bucket.
    let le_10ms = sum_samples(&scrape.body, "flotilla_sample_request_duration_seconds_bucket", &[("le", "0.01")]);
    assert!(le_10ms >= total - 8.0, "{le_10ms} of {total} within 10 ms:\n{}", scrape.body);
    assert_eq!(sum_samples(&scrape.body, "flotilla_sample_up", &labels), 1.0);
    assert_eq!(get(port, "/healthz").status, 200);
    promtool_accepts(&scrape.body);

    // A new copy of the same host and service replaces the target.
    let second_dir = tempfile::tempdir().expect("tempdir");
    let mut second = Server::start(second_dir.path(), &behaviour, &["--prometheus-sd", sd_arg], &env);
    let second_port = second.port();
    assert_ne!(second_port, port);
    let want = format!(r#"[{{"targets":["127.0.0.1:{second_port}"],"labels":{{}}}}]"#);
    eventually("the replaced target", || (std::fs::read_to_string(&target).ok()?.trim() == want).then_some(()));
    let files: Vec<String> = std::fs::read_dir(&sd)
        .expect("read sd dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, vec!["web-1-web.json"], "no temporary files are left");
}

#[test]
fn a_slow_failing_version_waits_and_records_its_latency() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sd = dir.path().join("sd");
    // Every request fails after 150 ms (+0–3); no traffic of its own; the target comes
    // from the environment and, with no host or service, is named by the port.
    let behaviour = Behaviour::slow("3.0.0", 150).with_error_ratio(1.0).with_traffic_rps(0);
    let sd_env = sd.to_str().expect("utf-8 path");
    let mut server = Server::start(
        dir.path(),
        &behaviour,
        &[],
        &[("FLOTILLA_SAMPLE_PROMETHEUS_SD", sd_env), ("FLOTILLA_VERSION", "ignored")],
    );
    let port = server.port();
    let target = sd.join(format!("{port}.json"));
    let text = eventually("the file_sd target", || std::fs::read_to_string(&target).ok());
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");

    let empty = get(port, "/metrics").body;
    assert_eq!(sum_samples(&empty, REQUESTS_TOTAL, &[]), 0.0);
    assert!(empty.contains("code=\"500\"} 0\n"), "both codes exist at 0:\n{empty}");

    let started = Instant::now();
    let answer = get(port, "/work");
    let took = started.elapsed();
    assert_eq!((answer.status, answer.body.as_str()), (500, "error\n"));
    assert!(took >= Duration::from_millis(150), "took {took:?}");
    assert_eq!(get(port, "/healthz").status, 200, "failing by metrics only");

    let body = get(port, "/metrics").body;
    let labels = [("service", ""), ("version", "3.0.0"), ("host", "")];
    assert_eq!(sum_samples(&body, REQUESTS_TOTAL, &[("code", "500")]), 1.0, "{body}");
    assert_eq!(sum_samples(&body, REQUESTS_TOTAL, &labels), 1.0, "{body}");
    let bucket = |le: &str| sum_samples(&body, "flotilla_sample_request_duration_seconds_bucket", &[("le", le)]);
    assert_eq!((bucket("0.1"), bucket("0.25"), bucket("+Inf")), (0.0, 1.0, 1.0), "{body}");
    let sum = sum_samples(&body, "flotilla_sample_request_duration_seconds_sum", &labels);
    assert!((0.15..0.25).contains(&sum), "{sum}");
    promtool_accepts(&body);
}

#[test]
fn bad_ratios_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN).args(["--port", "0", "--error-ratio", "1.5"]).current_dir(dir.path()).output();
    let out = out.expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--error-ratio: must be between 0.0 and 1.0, not 1.5"), "{stderr}");

    std::fs::write(dir.path().join("behaviour.toml"), "version = \"1.0.0\"\nerror_ratio = 2\n").expect("write");
    let out = Command::new(BIN).args(["--port", "0"]).current_dir(dir.path()).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("behaviour.toml line 2: `error_ratio` must be between 0.0 and 1.0, not 2"), "{stderr}");
    assert!(!dir.path().join("port").exists(), "it never listened");
}
