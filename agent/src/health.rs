//! Health checks: `http` (status, optional body substring), `tcp` and
//! `exec` probes, each sampled on its own interval with a per-sample timeout.
//!
//! - [`HealthChecker::wait_healthy`]: passes once every check has passed continuously
//!   for `healthy_for` (any failing sample restarts the clock); fails at
//!   `healthy_deadline`, naming every check that was not passing and why.
//! - [`HealthChecker::bake`]: keeps checking for a duration and fails at the first
//!   unhealthy sample, naming the check and why
//!   (`http http://127.0.0.1:8080/healthz: status 503 (1 of 4 samples failed)`).
//!
//! Both also watch the process through a liveness callback and stop at once when it
//! exits. Every result carries per-check samples, failures, last error and latency
//! p50/p99 ([`HealthCheckReport`]).

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::time::Instant;

use crate::step::{HealthCheck, HealthCheckKind, HealthCheckReport, Probe};

/// How many latencies per check are kept for percentiles (the most recent).
const LATENCY_WINDOW: usize = 4096;

/// How often the liveness callback is polled while waiting for the next sample.
const LIVENESS_POLL: Duration = Duration::from_millis(100);

/// Largest HTTP body read when looking for a substring.
const MAX_BODY: usize = 64 * 1024;

/// How a health wait or bake ended badly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthFailureKind {
    /// Not healthy by the deadline.
    Deadline,
    /// A sample failed during a bake.
    Unhealthy,
    /// The process exited.
    ProcessExited,
}

/// A failed health wait or bake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct HealthFailure {
    /// How it failed.
    pub kind: HealthFailureKind,
    /// The precise reason.
    pub reason: String,
    /// What each check saw.
    pub reports: Vec<HealthCheckReport>,
}

/// The kind and human-readable target of a probe (`http http://127.0.0.1:8080/healthz`).
pub fn describe(probe: &Probe) -> (HealthCheckKind, String) {
    match probe {
        Probe::Http { url, body_contains, .. } if !body_contains.is_empty() => {
            (HealthCheckKind::Http, format!("http {url} (body contains {body_contains:?})"))
        }
        Probe::Http { url, .. } => (HealthCheckKind::Http, format!("http {url}")),
        Probe::Tcp { addr } => (HealthCheckKind::Tcp, format!("tcp {addr}")),
        Probe::Exec { command } => (HealthCheckKind::Exec, format!("exec {command}")),
    }
}

/// Formats a duration the way configs write them (`500ms`, `3s`, `1.5s`).
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// What one check has seen so far.
#[derive(Debug, Clone)]
struct CheckStats {
    kind: HealthCheckKind,
    target: String,
    samples: u32,
    failures: u32,
    latencies_us: VecDeque<u64>,
    last_error: String,
    passing: Option<bool>,
}

impl CheckStats {
    fn new(check: &HealthCheck) -> Self {
        let (kind, target) = describe(&check.probe);
        Self {
            kind,
            target,
            samples: 0,
            failures: 0,
            latencies_us: VecDeque::new(),
            last_error: String::new(),
            passing: None,
        }
    }

    fn record(&mut self, sample: &Result<(), String>, latency: Duration) {
        self.samples += 1;
        if self.latencies_us.len() == LATENCY_WINDOW {
            self.latencies_us.pop_front();
        }
        self.latencies_us.push_back(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
        match sample {
            Ok(()) => self.passing = Some(true),
            Err(e) => {
                self.failures += 1;
                self.last_error.clone_from(e);
                self.passing = Some(false);
            }
        }
    }

    /// `http ...: status 503 (3 of 3 samples failed)`.
    fn why(&self) -> String {
        match self.passing {
            None => format!("{}: no sample finished yet", self.target),
            _ => format!("{}: {} ({} of {} samples failed)", self.target, self.last_error, self.failures, self.samples),
        }
    }

    fn report(&self, index: usize) -> HealthCheckReport {
        let mut sorted: Vec<u64> = self.latencies_us.iter().copied().collect();
        sorted.sort_unstable();
        HealthCheckReport {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            kind: self.kind,
            target: self.target.clone(),
            samples: self.samples,
            failures: self.failures,
            latency_p50_us: percentile(&sorted, 50),
            latency_p99_us: percentile(&sorted, 99),
            last_error: self.last_error.clone(),
            passing: self.passing == Some(true),
        }
    }
}

/// The `p`th percentile (nearest rank) of sorted values; 0 when empty.
fn percentile(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank - 1]
}

/// Runs a service's health checks; exec probes run in `cwd` with `env`.
#[derive(Debug, Clone)]
pub struct HealthChecker {
    client: reqwest::Client,
    checks: Vec<HealthCheck>,
    cwd: PathBuf,
    env: BTreeMap<String, String>,
}

/// A liveness callback: `Some(reason)` once the process is gone.
pub type Liveness<'a> = &'a mut (dyn FnMut() -> Option<String> + Send);

impl HealthChecker {
    /// Checks `checks`; exec probes run in `cwd` with `env` added.
    pub fn new(client: reqwest::Client, checks: Vec<HealthCheck>, cwd: PathBuf, env: BTreeMap<String, String>) -> Self {
        Self { client, checks, cwd, env }
    }

    /// Waits until every check has passed continuously for `healthy_for` (with no
    /// checks: the process stays up that long); fails at `deadline` or when `alive`
    /// reports the process gone.
    pub async fn wait_healthy(
        &self,
        healthy_for: Duration,
        deadline: Duration,
        alive: Liveness<'_>,
    ) -> Result<Vec<HealthCheckReport>, HealthFailure> {
        self.run(Mode::UntilHealthy { healthy_for }, deadline, alive).await
    }

    /// Checks for `duration` and fails at the first failing sample (or when `alive`
    /// reports the process gone).
    pub async fn bake(&self, duration: Duration, alive: Liveness<'_>) -> Result<Vec<HealthCheckReport>, HealthFailure> {
        self.run(Mode::Bake, duration, alive).await
    }

    /// One sample of every check, concurrently: `Ok` when all pass.
    pub async fn probe_once(&self) -> Result<Vec<HealthCheckReport>, HealthFailure> {
        let mut stats: Vec<CheckStats> = self.checks.iter().map(CheckStats::new).collect();
        let results = futures::future::join_all(self.checks.iter().map(|c| self.sample(c))).await;
        for (s, (result, latency)) in stats.iter_mut().zip(results) {
            s.record(&result, latency);
        }
        let reports = reports(&stats);
        let failing: Vec<String> = stats.iter().filter(|s| s.passing != Some(true)).map(CheckStats::why).collect();
        if failing.is_empty() {
            Ok(reports)
        } else {
            Err(HealthFailure { kind: HealthFailureKind::Unhealthy, reason: failing.join("; "), reports })
        }
    }

    async fn run(
        &self,
        mode: Mode,
        limit: Duration,
        alive: Liveness<'_>,
    ) -> Result<Vec<HealthCheckReport>, HealthFailure> {
        let start = Instant::now();
        let end = start + limit;
        let mut stats: Vec<CheckStats> = self.checks.iter().map(CheckStats::new).collect();
        let mut due: Vec<Instant> = vec![start; self.checks.len()];
        // Since when every check's latest sample has passed.
        let mut passing_since = if self.checks.is_empty() { Some(start) } else { None };
        loop {
            if let Some(reason) = alive() {
                return Err(HealthFailure { kind: HealthFailureKind::ProcessExited, reason, reports: reports(&stats) });
            }
            let now = Instant::now();
            if let (Mode::UntilHealthy { healthy_for }, Some(since)) = (mode, passing_since)
                && now.duration_since(since) >= healthy_for
            {
                return Ok(reports(&stats));
            }
            if now >= end {
                return match mode {
                    Mode::Bake => Ok(reports(&stats)),
                    Mode::UntilHealthy { .. } => {
                        let failing: Vec<String> =
                            stats.iter().filter(|s| s.passing != Some(true)).map(CheckStats::why).collect();
                        let why = if failing.is_empty() {
                            "checks did not pass continuously for healthy_for".to_owned()
                        } else {
                            failing.join("; ")
                        };
                        Err(HealthFailure {
                            kind: HealthFailureKind::Deadline,
                            reason: format!("health not reached within {}: {why}", fmt_duration(limit)),
                            reports: reports(&stats),
                        })
                    }
                };
            }
            let ready: Vec<usize> = (0..self.checks.len()).filter(|&i| due[i] <= now).collect();
            if ready.is_empty() {
                let mut wake = end.min(now + LIVENESS_POLL);
                if let Some(next) = due.iter().min() {
                    wake = wake.min(*next);
                }
                if let (Mode::UntilHealthy { healthy_for }, Some(since)) = (mode, passing_since) {
                    wake = wake.min(since + healthy_for);
                }
                tokio::time::sleep_until(wake).await;
                continue;
            }
            let results = futures::future::join_all(ready.iter().map(|&i| self.sample(&self.checks[i]))).await;
            let after = Instant::now();
            for (&i, (result, latency)) in ready.iter().zip(results) {
                stats[i].record(&result, latency);
                due[i] = now + self.checks[i].interval();
                if result.is_err() {
                    passing_since = None;
                    if mode == Mode::Bake {
                        return Err(HealthFailure {
                            kind: HealthFailureKind::Unhealthy,
                            reason: stats[i].why(),
                            reports: reports(&stats),
                        });
                    }
                }
            }
            if passing_since.is_none() && stats.iter().all(|s| s.passing == Some(true)) {
                passing_since = Some(after);
            }
        }
    }

    /// One sample of one check: the outcome and its latency.
    async fn sample(&self, check: &HealthCheck) -> (Result<(), String>, Duration) {
        let start = Instant::now();
        let timeout = check.timeout();
        let result = match tokio::time::timeout(timeout, self.probe(&check.probe, timeout)).await {
            Ok(result) => result,
            Err(_) => Err(format!("timed out after {}", fmt_duration(timeout))),
        };
        (result, start.elapsed())
    }

    async fn probe(&self, probe: &Probe, timeout: Duration) -> Result<(), String> {
        match probe {
            Probe::Http { url, expect_status, body_contains } => {
                let mut response =
                    self.client.get(url).timeout(timeout).send().await.map_err(|e| describe_http_error(&e))?;
                let status = response.status().as_u16();
                let status_ok =
                    if *expect_status == 0 { (200..300).contains(&status) } else { status == *expect_status };
                if !status_ok {
                    return Err(format!("status {status}"));
                }
                if !body_contains.is_empty() {
                    let mut body = Vec::new();
                    while let Some(chunk) = response.chunk().await.map_err(|e| describe_http_error(&e))? {
                        body.extend_from_slice(&chunk);
                        if body.len() >= MAX_BODY {
                            break;
                        }
                    }
                    if !String::from_utf8_lossy(&body).contains(body_contains.as_str()) {
                        return Err(format!("status {status} but the body does not contain {body_contains:?}"));
                    }
                }
                Ok(())
            }
            Probe::Tcp { addr } => {
                tokio::net::TcpStream::connect(addr.as_str()).await.map(drop).map_err(|e| format!("connect: {e}"))
            }
            Probe::Exec { command } => {
                let mut child = tokio::process::Command::new("/bin/sh")
                    .arg("-c")
                    .arg(command)
                    .current_dir(&self.cwd)
                    .env_remove(crate::config::JOIN_TOKEN_ENV)
                    .envs(&self.env)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .process_group(0)
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(|e| format!("cannot run: {e}"))?;
                // Dropped (sample timed out) before the wait ends: kill the probe's group.
                let mut guard = GroupKiller(child.id());
                let status = child.wait().await.map_err(|e| format!("wait: {e}"))?;
                guard.0 = None;
                if status.success() { Ok(()) } else { Err(format!("exited with {status}")) }
            }
        }
    }
}

/// Kills a probe's process group when its sample is dropped (timed out).
struct GroupKiller(Option<u32>);

impl Drop for GroupKiller {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            crate::driver::process::kill_group(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

fn describe_http_error(e: &reqwest::Error) -> String {
    flotilla_net::errors::describe_request(e, e.is_timeout(), e.is_connect())
}

fn reports(stats: &[CheckStats]) -> Vec<HealthCheckReport> {
    stats.iter().enumerate().map(|(i, s)| s.report(i)).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    UntilHealthy { healthy_for: Duration },
    Bake,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        assert_eq!(percentile(&[], 50), 0);
        assert_eq!(percentile(&[7], 99), 7);
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), 50);
        assert_eq!(percentile(&v, 99), 99);
    }

    #[test]
    fn durations_format_like_configs() {
        assert_eq!(fmt_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(fmt_duration(Duration::from_secs(3)), "3s");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5s");
    }

    fn checker(checks: Vec<HealthCheck>) -> HealthChecker {
        HealthChecker::new(reqwest::Client::new(), checks, std::env::temp_dir(), BTreeMap::new())
    }

    fn exec(command: &str) -> HealthCheck {
        HealthCheck { probe: Probe::Exec { command: command.to_owned() }, interval_ms: 20, timeout_ms: 500 }
    }

    #[tokio::test]
    async fn healthy_after_passing_continuously() {
        let c = checker(vec![exec("true")]);
        let mut alive = || None;
        let reports = c.wait_healthy(Duration::from_millis(100), Duration::from_secs(5), &mut alive).await.expect("ok");
        assert!(reports[0].samples >= 5, "{reports:?}");
        assert_eq!(reports[0].failures, 0);
        assert!(reports[0].passing);
    }

    #[tokio::test]
    async fn deadline_names_the_failing_check() {
        let c = checker(vec![exec("true"), exec("exit 3")]);
        let mut alive = || None;
        let err = c.wait_healthy(Duration::ZERO, Duration::from_millis(200), &mut alive).await.expect_err("fails");
        assert_eq!(err.kind, HealthFailureKind::Deadline);
        assert!(
            err.reason.starts_with("health not reached within 200ms: exec exit 3: exited with exit status: 3 ("),
            "{}",
            err.reason
        );
        assert!(!err.reason.contains("exec true"), "{}", err.reason);
    }

    #[tokio::test]
    async fn bake_fails_at_the_first_bad_sample_and_exec_timeouts_kill() {
        let c = checker(vec![HealthCheck {
            probe: Probe::Exec { command: "sleep 5".into() },
            interval_ms: 20,
            timeout_ms: 100,
        }]);
        let mut alive = || None;
        let started = std::time::Instant::now();
        let err = c.bake(Duration::from_secs(10), &mut alive).await.expect_err("fails");
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(err.kind, HealthFailureKind::Unhealthy);
        assert_eq!(err.reason, "exec sleep 5: timed out after 100ms (1 of 1 samples failed)");
    }

    #[tokio::test]
    async fn liveness_stops_the_wait() {
        let c = checker(vec![]);
        let mut alive = || Some("process exited with exit status: 1".to_owned());
        let err =
            c.wait_healthy(Duration::from_secs(10), Duration::from_secs(10), &mut alive).await.expect_err("exits");
        assert_eq!(err.kind, HealthFailureKind::ProcessExited);
    }
}
