//! `flotilla-sample-service`: a tiny HTTP/1.1 server (`/healthz`, `/version`,
//! `/contract`) whose behaviour comes from `behaviour.toml` in its working directory
//! and/or flags. Std-only, so tests of other crates can build it with plain `rustc`.
//!
//! ```text
//! flotilla-sample-service [--port N] [--behaviour FILE] [--version V] [--unhealthy]
//!     [--start-delay-ms N] [--crash-after-ms N] [--exit-code N]
//!     [--contract NAME=VERSION] [--require URL=REQ]
//! ```
//! The port comes from `--port`, else `$PORT`, else 8080. Flags override the file.
//! Port 0 takes any free port and writes it to `./port`, so that several hosts'
//! copies can share one machine (the demo); `flotilla-sample-service --check`
//! then probes `/healthz` on the port in `./port` and exits 0 only on `200`, for
//! use as an `exec` health check.

#[path = "behaviour.rs"]
#[allow(dead_code)]
mod behaviour;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use behaviour::{Behaviour, version_matches};

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
            "--version" | "--start-delay-ms" | "--crash-after-ms" | "--exit-code" | "--contract" | "--require" => {
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
            _ => unreachable!("only known flags are collected"),
        }
    }
    if let Ok(host) = std::env::var("FLOTILLA_HOST")
        && b.unhealthy_on.contains(&host)
    {
        b.unhealthy = true;
    }
    if b.version.is_none() {
        b.version = Some(std::env::var("FLOTILLA_VERSION").unwrap_or_else(|_| "unknown".to_owned()));
    }
    serve(b, port)
}

fn serve(b: Behaviour, port: u16) -> Result<(), String> {
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
    let b = Arc::new(b);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let b = Arc::clone(&b);
        std::thread::spawn(move || {
            let _ = handle(stream, &b);
        });
    }
    Ok(())
}

fn handle(mut stream: TcpStream, b: &Behaviour) -> std::io::Result<()> {
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
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let version = b.version.as_deref().unwrap_or("unknown");
    let (status, body) = match path {
        "/healthz" if b.unhealthy => ("503 Service Unavailable", "unhealthy\n".to_owned()),
        "/healthz" => ("200 OK", "ok\n".to_owned()),
        "/version" => ("200 OK", format!("{version}\n")),
        "/contract" => match &b.contract {
            Some((name, v)) => ("200 OK", format!("{{\"name\":\"{name}\",\"version\":\"{v}\"}}\n")),
            None => ("404 Not Found", "no contract\n".to_owned()),
        },
        _ => ("404 Not Found", "not found\n".to_owned()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
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
