//! `flotilla-sample-service`: a tiny HTTP/1.1 server (`/healthz`, `/version`,
//! `/contract`, `/work`, `/metrics`) whose behaviour comes from `behaviour.toml` in its
//! working directory and/or flags. Std-only, so tests of other crates can build it with
//! plain `rustc`.
//!
//! ```text
//! flotilla-sample-service [--port N] [--behaviour FILE] [--version V] [--unhealthy]
//!     [--start-delay-ms N] [--crash-after-ms N] [--exit-code N]
//!     [--contract NAME=VERSION] [--require URL=REQ]
//!     [--error-ratio F] [--latency-ms N] [--extra-latency-ms N] [--traffic-rps N]
//!     [--prometheus-sd DIR]
//! ```
//! The port comes from `--port`, else `$PORT`, else 8080. Flags override the file
//! (`--error-ratio` is `error_ratio`, and so on; see `behaviour.rs`). Port 0 takes any
//! free port and writes it to `./port`, so that several hosts' copies can share one
//! machine (the demo); `flotilla-sample-service --check` then probes `/healthz` on the
//! port in `./port` and exits 0 only on `200`, for use as an `exec` health check.
//!
//! `/work` is a real request: it waits `latency_ms + extra_latency_ms` (plus a jitter of
//! 0–3 ms) and answers 200, or 500 in the deterministic share `error_ratio`. The service
//! also sends itself `traffic_rps` requests per second (default 20; 0: none) through the
//! same handler, in-process, recording their latency instead of sleeping it, so its
//! metrics move without any client. `/healthz` ignores both: it answers 200 unless
//! `healthy = false` or `unhealthy_on` names this host.
//!
//! `/metrics` answers the Prometheus text format 0.0.4 (`flotilla_sample_requests_total`
//! by `code`, the `flotilla_sample_request_duration_seconds` histogram and
//! `flotilla_sample_up`; see `metrics.rs`), every series labelled `service`, `version`
//! and `host` from `$FLOTILLA_SERVICE`, the behaviour's version (else
//! `$FLOTILLA_VERSION`) and `$FLOTILLA_HOST`, empty when unset.
//!
//! `--prometheus-sd DIR` (else `$FLOTILLA_SAMPLE_PROMETHEUS_SD`): once listening, the
//! service writes `DIR/<host>-<service>.json` (just the one that is set, or the port
//! when neither is; other characters than `A-Za-z0-9._-` become `_`) atomically, as a
//! Prometheus `file_sd` target list `[{"targets":["127.0.0.1:PORT"],"labels":{}}]`, so
//! a Prometheus with `file_sd_configs: [{files: ["DIR/*.json"]}]` scrapes every copy; a
//! new process of the same host and service replaces the file. `DIR` is created if
//! missing; the file is left behind on exit (its target is then down).

#[path = "behaviour.rs"]
#[allow(dead_code)]
mod behaviour;
#[path = "metrics.rs"]
#[allow(dead_code)]
mod metrics;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use behaviour::{Behaviour, Outcomes, parse_ratio, version_matches};
use metrics::{Labels, Metrics};

/// How often the traffic generator wakes to send the requests that are due.
const TRAFFIC_TICK: Duration = Duration::from_millis(100);

/// The environment variable that names the `file_sd` directory when no flag does.
const SD_ENV: &str = "FLOTILLA_SAMPLE_PROMETHEUS_SD";

fn main() {
    let code = match run() {
        Ok(()) => 0,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "flotilla-sample-service: {err}");
            2
        }
    };
    std::process::exit(code);
}

fn run() -> Result<(), String> {
    if std::env::args().nth(1).is_some_and(|a| a == "--check") {
        return check();
    }
    let mut args = std::env::args().skip(1);
    let mut port: Option<u16> = None;
    let mut file: Option<PathBuf> = None;
    let mut sd_dir: Option<PathBuf> = None;
    let mut overrides: Vec<(String, String)> = Vec::new();
    while let Some(flag) = args.next() {
        if flag == "--unhealthy" {
            overrides.push((flag, String::new()));
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--port" => port = Some(value.parse().map_err(|_| format!("--port {value}: not a port"))?),
            "--behaviour" => file = Some(PathBuf::from(value)),
            "--prometheus-sd" => sd_dir = Some(PathBuf::from(value)),
            "--version" | "--start-delay-ms" | "--crash-after-ms" | "--exit-code" | "--contract" | "--require"
            | "--error-ratio" | "--latency-ms" | "--extra-latency-ms" | "--traffic-rps" => {
                overrides.push((flag, value));
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let port = match port {
        Some(p) => p,
        None => match std::env::var("PORT") {
            Ok(p) => p.parse().map_err(|_| format!("PORT={p}: not a port"))?,
            Err(_) => 8080,
        },
    };
    let path = file.unwrap_or_else(|| PathBuf::from("behaviour.toml"));
    let mut b = match std::fs::read_to_string(&path) {
        Ok(text) => Behaviour::parse(&text)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Behaviour::default(),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    for (flag, value) in overrides {
        let num = |v: &str| v.parse::<u64>().map_err(|_| format!("{flag} {v}: not a number"));
        match flag.as_str() {
            "--unhealthy" => b.unhealthy = true,
            "--version" => b.version = Some(value),
            "--start-delay-ms" => b.start_delay_ms = num(&value)?,
            "--crash-after-ms" => b.crash_after_ms = Some(num(&value)?),
            "--exit-code" => b.exit_code = value.parse().map_err(|_| format!("--exit-code {value}: not a number"))?,
            "--contract" | "--require" => {
                let (k, v) = value.split_once('=').ok_or_else(|| format!("{flag} {value}: expected A=B"))?;
                let pair = Some((k.to_owned(), v.to_owned()));
                if flag == "--contract" { b.contract = pair } else { b.requires = pair }
            }
            "--error-ratio" => b.error_ratio = parse_ratio(&value).map_err(|why| format!("--error-ratio: {why}"))?,
            "--latency-ms" => b.latency_ms = num(&value)?,
            "--extra-latency-ms" => b.extra_latency_ms = num(&value)?,
            "--traffic-rps" => {
                b.traffic_rps = value.parse().map_err(|_| format!("--traffic-rps {value}: not a number"))?
            }
            _ => unreachable!("only known flags are collected"),
        }
    }
    if let Ok(host) = std::env::var("FLOTILLA_HOST")
        && b.unhealthy_on.contains(&host)
    {
        b.unhealthy = true;
    }
    let env = |name: &str| std::env::var(name).unwrap_or_default();
    let labels = Labels {
        service: env("FLOTILLA_SERVICE"),
        version: b.version.clone().unwrap_or_else(|| env("FLOTILLA_VERSION")),
        host: env("FLOTILLA_HOST"),
    };
    if b.version.is_none() {
        b.version = Some(std::env::var("FLOTILLA_VERSION").unwrap_or_else(|_| "unknown".to_owned()));
    }
    let sd_dir = sd_dir.or_else(|| std::env::var_os(SD_ENV).filter(|d| !d.is_empty()).map(PathBuf::from));
    serve(b, labels, port, sd_dir.as_deref())
}

/// The running service: its behaviour, the labels of its metrics, and the state that
/// its requests share.
#[derive(Debug)]
struct Service {
    behaviour: Behaviour,
    labels: Labels,
    state: Mutex<State>,
}

/// Where the next `/work` request stands in the error pattern, and what was served.
#[derive(Debug)]
struct State {
    outcomes: Outcomes,
    metrics: Metrics,
}

impl Service {
    fn new(behaviour: Behaviour, labels: Labels) -> Self {
        let state = Mutex::new(State { outcomes: Outcomes::new(&behaviour), metrics: Metrics::new() });
        Self { behaviour, labels, state }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The `/work` handler, for real requests (`wait`: sleeps the latency and records
    /// the time taken) and generated ones (records the simulated latency); returns the
    /// status.
    fn work(&self, wait: bool) -> u16 {
        let started = Instant::now();
        let outcome = self.state().outcomes.next_outcome();
        let latency = if wait {
            std::thread::sleep(outcome.latency);
            started.elapsed()
        } else {
            outcome.latency
        };
        self.state().metrics.observe(outcome.status, latency);
        outcome.status
    }

    /// `/metrics`: the exposition text.
    fn metrics(&self) -> String {
        self.state().metrics.render(&self.labels)
    }
}

/// Sends the service `rps` requests per second through its `/work` handler, forever:
/// each tick, as many as are due since the start (a steady average, whatever the tick).
fn generate_traffic(service: &Service, rps: u32) {
    let start = Instant::now();
    let mut sent: u64 = 0;
    loop {
        let due = u64::try_from(start.elapsed().as_millis() * u128::from(rps) / 1000).unwrap_or(u64::MAX);
        while sent < due {
            service.work(false);
            sent += 1;
        }
        std::thread::sleep(TRAFFIC_TICK);
    }
}

/// Writes the Prometheus `file_sd` target of this copy into `dir` atomically; returns
/// the file's path.
fn write_sd_target(dir: &Path, labels: &Labels, port: u16) -> Result<PathBuf, String> {
    let parts: Vec<&str> =
        [labels.host.as_str(), labels.service.as_str()].into_iter().filter(|p| !p.is_empty()).collect();
    let name = if parts.is_empty() { port.to_string() } else { parts.join("-") };
    let name: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' }).collect();
    let path = dir.join(format!("{name}.json"));
    // Not `*.json` while half-written, and unique per process.
    let tmp = dir.join(format!(".{name}.json.{}.tmp", std::process::id()));
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&tmp, format!("[{{\"targets\":[\"127.0.0.1:{port}\"],\"labels\":{{}}}}]\n")))
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| format!("cannot write the Prometheus target {}: {e}", path.display()))?;
    Ok(path)
}

fn serve(b: Behaviour, labels: Labels, port: u16, sd_dir: Option<&Path>) -> Result<(), String> {
    let exit_code = if b.exit_code == 0 { 3 } else { b.exit_code };
    log(&format!("version {} starting (pid {})", b.version.as_deref().unwrap_or("?"), std::process::id()));
    if b.crash_after_ms == Some(0) {
        log(&format!("crashing at once with exit code {exit_code}"));
        std::process::exit(exit_code);
    }
    if let Some((url, req)) = &b.requires {
        check_dependency(url, req)?;
    }
    if b.start_delay_ms > 0 {
        std::thread::sleep(Duration::from_millis(b.start_delay_ms));
    }
    if let Some(ms) = b.crash_after_ms {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(ms));
            log(&format!("crashing after {ms} ms with exit code {exit_code}"));
            std::process::exit(exit_code);
        });
    }
    let listener = TcpListener::bind(("127.0.0.1", port)).map_err(|e| format!("cannot listen on port {port}: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    // Written atomically, so a check never reads half a number.
    std::fs::write(".port.tmp", format!("{port}\n"))
        .and_then(|()| std::fs::rename(".port.tmp", PORT_FILE))
        .map_err(|e| format!("cannot write ./{PORT_FILE}: {e}"))?;
    log(&format!("listening on 127.0.0.1:{port}"));
    let rps = b.traffic_rps;
    let service = Arc::new(Service::new(b, labels));
    if let Some(dir) = sd_dir {
        let path = write_sd_target(dir, &service.labels, port)?;
        log(&format!("Prometheus target written to {}", path.display()));
    }
    if rps > 0 {
        let service = Arc::clone(&service);
        std::thread::spawn(move || generate_traffic(&service, rps));
    }
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let service = Arc::clone(&service);
        std::thread::spawn(move || {
            let _ = handle(stream, &service);
        });
    }
    Ok(())
}

fn handle(mut stream: TcpStream, service: &Service) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    let path = target.split_once('?').map_or(target, |(path, _query)| path);
    let b = &service.behaviour;
    let version = b.version.as_deref().unwrap_or("unknown");
    let mut content_type = "text/plain";
    let (status, body) = match path {
        "/healthz" if b.unhealthy => ("503 Service Unavailable", "unhealthy\n".to_owned()),
        "/healthz" => ("200 OK", "ok\n".to_owned()),
        "/version" => ("200 OK", format!("{version}\n")),
        "/contract" => match &b.contract {
            Some((name, v)) => ("200 OK", format!("{{\"name\":\"{name}\",\"version\":\"{v}\"}}\n")),
            None => ("404 Not Found", "no contract\n".to_owned()),
        },
        "/work" => match service.work(true) {
            500 => ("500 Internal Server Error", "error\n".to_owned()),
            _ => ("200 OK", "ok\n".to_owned()),
        },
        "/metrics" => {
            content_type = metrics::CONTENT_TYPE;
            ("200 OK", service.metrics())
        }
        _ => ("404 Not Found", "not found\n".to_owned()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// Refuses to start unless `url` answers a contract whose version matches `req`.
fn check_dependency(url: &str, req: &str) -> Result<(), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("require_url {url}: only http:// is supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let fail = |why: String| format!("refusing to start: dependency contract at {url} {why}");
    let mut stream = TcpStream::connect(authority).map_err(|e| fail(format!("is unreachable: {e}")))?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| fail(e.to_string()))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n")
        .map_err(|e| fail(e.to_string()))?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(|e| fail(e.to_string()))?;
    if !response.starts_with("HTTP/1.1 200") && !response.starts_with("HTTP/1.0 200") {
        return Err(fail(format!("answered `{}`", response.lines().next().unwrap_or(""))));
    }
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let version = body
        .split("\"version\":\"")
        .nth(1)
        .and_then(|v| v.split('"').next())
        .ok_or_else(|| fail(format!("answered no version: {body}")))?;
    if !version_matches(version, req) {
        return Err(fail(format!("serves version {version}, which does not match {req}")));
    }
    log(&format!("dependency {url} serves {version} (matches {req})"));
    Ok(())
}

/// Where a running server writes its port (in its working directory).
const PORT_FILE: &str = "port";

/// `--check`: GET `/healthz` on the port in `./port`; exit 0 only on `200`.
fn check() -> Result<(), String> {
    let text = std::fs::read_to_string(PORT_FILE).map_err(|e| format!("no ./{PORT_FILE} (not started?): {e}"))?;
    let port: u16 = text.trim().parse().map_err(|_| format!("./{PORT_FILE} holds `{}`, not a port", text.trim()))?;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("127.0.0.1:{port}: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
    write!(stream, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(|e| e.to_string())?;
    let status = response.lines().next().unwrap_or("").to_owned();
    if status.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!("127.0.0.1:{port}/healthz answered `{status}`"))
    }
}

fn log(message: &str) {
    let _ = writeln!(std::io::stderr(), "sample: {message}");
}
