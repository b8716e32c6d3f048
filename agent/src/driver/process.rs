//! The `process` driver: services are plain child processes in their own process group
//! (`process_group(0)`), so they keep running when the agent stops or crashes. Each
//! running process is recorded in `<data>/services/<svc>/process.json` with its pid
//! and its start time (field 22 of `/proc/<pid>/stat`); a restarted agent re-adopts a
//! process only when both match, so a recycled pid is never mistaken for the service.
//!
//! A monitor task per process notices its exit (by `wait` for our own children, by
//! polling `/proc` for adopted ones); supervised processes are restarted with
//! exponential backoff (capped) and every crash and restart is broadcast.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::{Adoption, Driver, DriverError, DriverEvent, HookOutput, HookRun, Launch, ProcessStatus};
use crate::layout::{Layout, STATE_FORMAT, now_unix_ms, read_json, write_json_atomic};
use crate::step::RunState;

/// How much of a hook's output is kept for reports.
pub const OUTPUT_TAIL_BYTES: usize = 4096;

/// How often an adopted (not our child) process is checked for liveness.
const ADOPTED_POLL: Duration = Duration::from_millis(500);

/// A process that ran at least this long before crashing resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// Restart backoff of supervised processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first restart.
    pub initial: Duration,
    /// Largest delay (doubling stops here).
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { initial: Duration::from_secs(1), max: Duration::from_secs(60) }
    }
}

impl Backoff {
    /// The delay before restart number `attempt` (1-based) of a crash loop.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.saturating_sub(1).min(16)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// `process.json`: the process a service runs (or ran), durable across agent restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// [`STATE_FORMAT`].
    pub format: u32,
    /// How it was started (to restart it).
    pub launch: Launch,
    /// Its pid; 0 when stopped.
    pub pid: u32,
    /// Its start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub start_ticks: u64,
    /// When it started.
    pub started_unix_ms: i64,
    /// Whether it should run (false after a stop).
    pub running: bool,
    /// Supervisor restarts since a step started it.
    pub restarts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Proc {
    pid: u32,
    ticks: u64,
    started_unix_ms: i64,
    spawned_at: Instant,
    /// Spawned by this driver: its monitor reaps it and so learns its exit status
    /// (an adopted process is only polled, and its status is never known).
    ours: bool,
}

#[derive(Debug)]
struct Slot {
    launch: Launch,
    proc: Option<Proc>,
    state: RunState,
    supervise: bool,
    restarts: u32,
    /// Consecutive quick crashes (for the backoff).
    crash_streak: u32,
    last_exit: Option<String>,
    monitor: Option<AbortHandle>,
}

impl Slot {
    fn status(&self) -> ProcessStatus {
        ProcessStatus {
            version: self.launch.version.clone(),
            pid: self.proc.map_or(0, |p| p.pid),
            started_unix_ms: self.proc.map_or(0, |p| p.started_unix_ms),
            state: self.state,
            restarts: self.restarts,
            last_exit: self.last_exit.clone(),
        }
    }
}

#[derive(Debug)]
struct Shared {
    layout: Layout,
    backoff: Backoff,
    slots: Mutex<HashMap<String, Slot>>,
    events: broadcast::Sender<DriverEvent>,
}

impl Shared {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write_record(&self, slot: &Slot) -> Result<(), DriverError> {
        let path = self.layout.process_file(&slot.launch.service);
        let record = ProcessRecord {
            format: STATE_FORMAT,
            launch: slot.launch.clone(),
            pid: slot.proc.map_or(0, |p| p.pid),
            start_ticks: slot.proc.map_or(0, |p| p.ticks),
            started_unix_ms: slot.proc.map_or(0, |p| p.started_unix_ms),
            running: slot.proc.is_some() || slot.state == RunState::Crashed,
            restarts: slot.restarts,
        };
        write_json_atomic(&path, &record)
            .map_err(|source| DriverError::Io { what: format!("writing {}", path.display()), source })
    }
}

/// The `process` driver. Dropping it stops its monitor tasks but never the services.
#[derive(Debug)]
pub struct ProcessDriver {
    shared: Arc<Shared>,
}

impl ProcessDriver {
    /// A driver keeping its records in `layout`, restarting crashed processes with `backoff`.
    pub fn new(layout: Layout, backoff: Backoff) -> Self {
        let (events, _) = broadcast::channel(256);
        Self { shared: Arc::new(Shared { layout, backoff, slots: Mutex::new(HashMap::new()), events }) }
    }

    /// The recorded process of `service` (`process.json`), if any.
    pub fn record(&self, service: &str) -> io::Result<Option<ProcessRecord>> {
        read_json(&self.shared.layout.process_file(service))
    }
}

impl Drop for ProcessDriver {
    fn drop(&mut self) {
        for slot in self.shared.slots().values_mut() {
            if let Some(monitor) = slot.monitor.take() {
                monitor.abort();
            }
        }
    }
}

/// Spawns `launch` in its own process group with output appended to its log file.
fn spawn(launch: &Launch, host_note: &str) -> Result<(tokio::process::Child, Proc), DriverError> {
    let log = open_log(&launch.log_file)?;
    let _ = writeln!(&log, "=== flotilla: {} {} {host_note} at {} ===", launch.service, launch.version, now_unix_ms());
    let program = resolve_program(&launch.release_dir, &launch.command);
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&launch.args);
    let child = spawn_detached(cmd, &launch.release_dir, &launch.env, log, &launch.command)?;
    let pid = child.id().unwrap_or(0);
    let ticks = proc_start_ticks(pid).unwrap_or(0);
    Ok((child, Proc { pid, ticks, started_unix_ms: now_unix_ms(), spawned_at: Instant::now(), ours: true }))
}

/// Spawns `cmd` in `cwd` with `env`, in its own process group (so it outlives the
/// agent and can be signalled as a group), stdout and stderr appended to `log`.
fn spawn_detached<K, V>(
    mut cmd: tokio::process::Command,
    cwd: &Path,
    env: impl IntoIterator<Item = (K, V)>,
    log: File,
    command: &str,
) -> Result<tokio::process::Child, DriverError>
where
    K: AsRef<std::ffi::OsStr>,
    V: AsRef<std::ffi::OsStr>,
{
    let err_log =
        log.try_clone().map_err(|source| DriverError::Io { what: "duplicating the log file".to_owned(), source })?;
    cmd.current_dir(cwd)
        // The agent's join token is its own: no service or hook inherits it.
        .env_remove(crate::config::JOIN_TOKEN_ENV)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err_log))
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
        .map_err(|source| DriverError::Spawn { command: command.to_owned(), cwd: cwd.to_owned(), source })
}

fn resolve_program(release_dir: &Path, command: &str) -> PathBuf {
    let path = Path::new(command);
    if path.is_absolute() || !command.contains('/') { path.to_owned() } else { release_dir.join(path) }
}

fn open_log(path: &Path) -> Result<File, DriverError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)
            .map_err(|source| DriverError::Io { what: format!("creating {}", dir.display()), source })?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| DriverError::Io { what: format!("opening log {}", path.display()), source })
}

/// The fields of `/proc/<pid>/stat` from field 3 (state) on: the text after the last
/// `)`, since the command name (field 2) may hold spaces and parentheses.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat[stat.rfind(')')? + 1..].split_whitespace().map(str::to_owned).collect())
}

/// The start time (clock ticks since boot) of a live, non-zombie `pid`.
pub fn proc_start_ticks(pid: u32) -> Option<u64> {
    if pid == 0 {
        return None;
    }
    let fields = stat_fields(pid)?;
    if matches!(fields.first().map(String::as_str), Some("Z" | "X" | "x")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Whether `pid` is alive and is the process that started at `ticks`.
pub fn is_alive(pid: u32, ticks: u64) -> bool {
    proc_start_ticks(pid).is_some_and(|t| t == ticks)
}

/// How the process `pid` that started at `ticks` ended, while it is a zombie (exited,
/// not yet reaped), in the words of [`std::process::ExitStatus`]'s `Display`
/// (`exit status: 3`, `signal: 9 (SIGKILL)`): `/proc/<pid>/stat` field 52 is its wait
/// status. `None` once it is reaped, or while it runs.
fn zombie_exit(pid: u32, ticks: u64) -> Option<String> {
    use std::os::unix::process::ExitStatusExt;
    let fields = stat_fields(pid)?;
    if fields.first().map(String::as_str) != Some("Z") || fields.get(19)?.parse::<u64>().ok()? != ticks {
        return None;
    }
    let wait_status: i32 = fields.get(49)?.parse().ok()?;
    Some(std::process::ExitStatus::from_raw(wait_status).to_string())
}

/// Kills the process group it holds when dropped (a hook whose wait was abandoned).
struct KillGroupOnDrop(Option<u32>);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            tracing::info!(pgid, "killing an abandoned hook's process group");
            kill_group(pgid, Signal::SIGKILL);
        }
    }
}

/// How long a killed hook's process group may take to be gone before the step goes on
/// regardless.
const GROUP_GONE_WITHIN: Duration = Duration::from_secs(2);

/// Waits until no process of group `pgid` is left (SIGKILL is delivered, not awaited),
/// or `within` has passed.
async fn wait_group_gone(pgid: u32, within: Duration) {
    let Ok(raw) = i32::try_from(pgid) else { return };
    if raw <= 1 {
        return;
    }
    let deadline = Instant::now() + within;
    while killpg(Pid::from_raw(raw), None).is_ok() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Sends `signal` to the process group `pgid` (errors such as "no such group" ignored).
pub fn kill_group(pgid: u32, signal: Signal) {
    if let Ok(raw) = i32::try_from(pgid)
        && raw > 1
    {
        let _ = killpg(Pid::from_raw(raw), signal);
    }
}

async fn wait_dead(pid: u32, ticks: u64, within: Duration) -> bool {
    let start = Instant::now();
    let deadline = start + within;
    loop {
        if !is_alive(pid, ticks) {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        // Most processes exit within milliseconds of SIGTERM: poll fast at first.
        let poll = if now.duration_since(start) < Duration::from_millis(200) { 2 } else { 20 };
        tokio::time::sleep(Duration::from_millis(poll).min(deadline - now)).await;
    }
}

/// Watches one process; on exit either records a stop, reports a crash, or restarts it.
async fn monitor(shared: Arc<Shared>, service: String, mut child: Option<tokio::process::Child>, mut proc: Proc) {
    loop {
        let exit = match child.as_mut() {
            Some(c) => match c.wait().await {
                Ok(status) => status.to_string(),
                Err(e) => format!("unknown exit ({e})"),
            },
            None => {
                while is_alive(proc.pid, proc.ticks) {
                    tokio::time::sleep(ADOPTED_POLL).await;
                }
                "exited (adopted process: status unknown)".to_owned()
            }
        };
        let delay = {
            let mut slots = shared.slots();
            let Some(slot) = slots.get_mut(&service) else { return };
            if slot.proc.map(|p| p.pid) != Some(proc.pid) {
                return; // stopped on purpose or replaced
            }
            slot.proc = None;
            slot.last_exit = Some(exit.clone());
            if !slot.supervise {
                slot.state = RunState::Failed;
                tracing::warn!(%service, pid = proc.pid, %exit, "process exited (not supervised)");
                slot.monitor = None;
                return;
            }
            slot.state = RunState::Crashed;
            slot.crash_streak =
                if proc.spawned_at.elapsed() >= STABLE_AFTER { 1 } else { slot.crash_streak.saturating_add(1) };
            let delay = shared.backoff.delay(slot.crash_streak);
            let _ = shared.write_record(slot);
            tracing::warn!(%service, pid = proc.pid, %exit, restart_in = ?delay, "supervised process crashed");
            let _ = shared.events.send(DriverEvent::Crashed {
                service: service.clone(),
                version: slot.launch.version.clone(),
                pid: proc.pid,
                exit,
                restart_in: delay,
            });
            delay
        };
        tokio::time::sleep(delay).await;
        let mut slots = shared.slots();
        let Some(slot) = slots.get_mut(&service) else { return };
        if slot.state != RunState::Crashed || !slot.supervise || slot.proc.is_some() {
            return; // stopped or started by a step meanwhile
        }
        match spawn(&slot.launch, "restart after crash") {
            Ok((new_child, new_proc)) => {
                slot.proc = Some(new_proc);
                slot.state = RunState::Running;
                slot.restarts = slot.restarts.saturating_add(1);
                let _ = shared.write_record(slot);
                tracing::info!(%service, pid = new_proc.pid, restarts = slot.restarts, "restarted crashed process");
                let _ = shared.events.send(DriverEvent::Restarted {
                    service: service.clone(),
                    version: slot.launch.version.clone(),
                    pid: new_proc.pid,
                    restarts: slot.restarts,
                });
                child = Some(new_child);
                proc = new_proc;
            }
            Err(e) => {
                let error = e.to_string();
                tracing::warn!(%service, %error, "restart failed");
                let _ = shared.events.send(DriverEvent::RestartFailed { service: service.clone(), error });
                slot.crash_streak = slot.crash_streak.saturating_add(1);
                // Try again after the next backoff: pretend the failed spawn was a crash.
                child = None;
                proc = Proc { pid: 0, ticks: 0, started_unix_ms: 0, spawned_at: Instant::now(), ours: true };
                slot.proc = Some(proc);
            }
        }
    }
}

impl Driver for ProcessDriver {
    fn name(&self) -> &'static str {
        "process"
    }

    async fn start(&self, launch: &Launch) -> Result<ProcessStatus, DriverError> {
        let mut slots = self.shared.slots();
        if let Some(slot) = slots.get(&launch.service)
            && let Some(p) = slot.proc
            && is_alive(p.pid, p.ticks)
        {
            return Err(DriverError::AlreadyRunning { service: launch.service.clone(), pid: p.pid });
        }
        if let Some(old) = slots.remove(&launch.service)
            && let Some(m) = old.monitor
        {
            m.abort();
        }
        let (child, proc) = spawn(launch, "start")?;
        let mut slot = Slot {
            launch: launch.clone(),
            proc: Some(proc),
            state: RunState::Running,
            supervise: false,
            restarts: 0,
            crash_streak: 0,
            last_exit: None,
            monitor: None,
        };
        self.shared.write_record(&slot)?;
        let task = tokio::spawn(monitor(Arc::clone(&self.shared), launch.service.clone(), Some(child), proc));
        slot.monitor = Some(task.abort_handle());
        let status = slot.status();
        slots.insert(launch.service.clone(), slot);
        tracing::info!(service = %launch.service, version = %launch.version, pid = proc.pid, "started");
        Ok(status)
    }

    async fn stop(&self, service: &str, stop_timeout: Duration) -> Result<Option<String>, DriverError> {
        let proc = {
            let mut slots = self.shared.slots();
            let Some(slot) = slots.get_mut(service) else { return Ok(None) };
            let proc = slot.proc.take();
            slot.state = RunState::Stopped;
            if let Some(m) = slot.monitor.take() {
                m.abort();
            }
            self.shared.write_record(slot)?;
            proc
        };
        let Some(proc) = proc.filter(|p| is_alive(p.pid, p.ticks)) else { return Ok(None) };
        kill_group(proc.pid, Signal::SIGTERM);
        if wait_dead(proc.pid, proc.ticks, stop_timeout).await {
            tracing::info!(%service, pid = proc.pid, "stopped with SIGTERM");
            return Ok(Some(format!("pid {} stopped with SIGTERM", proc.pid)));
        }
        kill_group(proc.pid, Signal::SIGKILL);
        if wait_dead(proc.pid, proc.ticks, Duration::from_secs(10)).await {
            tracing::warn!(%service, pid = proc.pid, "killed with SIGKILL after the stop timeout");
            return Ok(Some(format!(
                "pid {} killed with SIGKILL after {}",
                proc.pid,
                crate::health::fmt_duration(stop_timeout)
            )));
        }
        Err(DriverError::Unkillable { service: service.to_owned(), pid: proc.pid })
    }

    fn status(&self, service: &str) -> Option<ProcessStatus> {
        let mut slots = self.shared.slots();
        let slot = slots.get_mut(service)?;
        // Between the exit and the monitor recording it, report what /proc says.
        if let Some(p) = slot.proc
            && p.pid != 0
            && !is_alive(p.pid, p.ticks)
        {
            let last_exit = if p.ours {
                match zombie_exit(p.pid, p.ticks) {
                    // Exited, not yet reaped: the kernel still holds its exit status.
                    Some(exit) => Some(exit),
                    // Reaped: only the monitor does that, and it records the status as
                    // soon as it has this lock, with nothing to wait for in between.
                    // Until then it counts as running, so no caller sees an exit
                    // without its status.
                    None => return Some(slot.status()),
                }
            } else {
                None
            };
            let mut status = slot.status();
            status.pid = 0;
            status.state = if slot.supervise { RunState::Crashed } else { RunState::Failed };
            status.last_exit = last_exit;
            return Some(status);
        }
        Some(slot.status())
    }

    fn supervise(&self, service: &str, on: bool) {
        let mut slots = self.shared.slots();
        let Some(slot) = slots.get_mut(service) else { return };
        slot.supervise = on;
        // A process that already exited while unsupervised is restarted now.
        if on && slot.proc.is_none() && slot.state == RunState::Failed {
            slot.state = RunState::Crashed;
            let task = tokio::spawn(restart_later(Arc::clone(&self.shared), service.to_owned()));
            slot.monitor = Some(task.abort_handle());
        }
    }

    fn adopt(&self, service: &str) -> Result<Adoption, DriverError> {
        let path = self.shared.layout.process_file(service);
        let record: Option<ProcessRecord> = read_json(&path)
            .map_err(|source| DriverError::Io { what: format!("reading {}", path.display()), source })?;
        let Some(record) = record else { return Ok(Adoption::NotRunning) };
        let mut slots = self.shared.slots();
        if let Some(old) = slots.remove(service)
            && let Some(m) = old.monitor
        {
            m.abort();
        }
        if !record.running {
            slots.insert(
                service.to_owned(),
                Slot {
                    launch: record.launch,
                    proc: None,
                    state: RunState::Stopped,
                    supervise: false,
                    restarts: record.restarts,
                    crash_streak: 0,
                    last_exit: None,
                    monitor: None,
                },
            );
            return Ok(Adoption::NotRunning);
        }
        if record.pid == 0 || !is_alive(record.pid, record.start_ticks) {
            return Ok(Adoption::Gone(Box::new(record.launch)));
        }
        let proc = Proc {
            pid: record.pid,
            ticks: record.start_ticks,
            started_unix_ms: record.started_unix_ms,
            spawned_at: Instant::now(),
            ours: false,
        };
        let mut slot = Slot {
            launch: record.launch,
            proc: Some(proc),
            state: RunState::Running,
            supervise: false,
            restarts: record.restarts,
            crash_streak: 0,
            last_exit: None,
            monitor: None,
        };
        let task = tokio::spawn(monitor(Arc::clone(&self.shared), service.to_owned(), None, proc));
        slot.monitor = Some(task.abort_handle());
        let status = slot.status();
        slots.insert(service.to_owned(), slot);
        tracing::info!(%service, pid = proc.pid, version = %status.version, "re-adopted running process");
        Ok(Adoption::Adopted(status))
    }

    async fn run_hook(&self, hook: &HookRun) -> Result<HookOutput, DriverError> {
        let log = open_log(&hook.log_file)?;
        let offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = writeln!(&log, "=== flotilla: hook {} at {}: {} ===", hook.name, now_unix_ms(), hook.command);
        let start_offset = offset;
        let started = Instant::now();
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c").arg(&hook.command);
        let mut child = spawn_detached(cmd, &hook.cwd, &hook.env, log, &hook.command)?;
        let pid = child.id().unwrap_or(0);
        // A hook whose step is cancelled (this future dropped) must not run on: its
        // whole group is killed then. An agent that dies instead leaves it to recovery.
        let mut guard = KillGroupOnDrop(Some(pid));
        let (exit_code, timed_out) = match tokio::time::timeout(hook.timeout, child.wait()).await {
            Ok(Ok(status)) => (status.code(), false),
            Ok(Err(source)) => return Err(DriverError::Io { what: format!("waiting for hook {}", hook.name), source }),
            Err(_) => {
                kill_group(pid, Signal::SIGKILL);
                let _ = child.wait().await;
                // The hook's own children die with it, but not in the same instant:
                // the step reports once the whole group is gone.
                wait_group_gone(pid, GROUP_GONE_WITHIN).await;
                (None, true)
            }
        };
        guard.0 = None;
        let duration = started.elapsed();
        let output_tail = read_tail(&hook.log_file, start_offset, OUTPUT_TAIL_BYTES);
        Ok(HookOutput { exit_code, timed_out, output_tail, duration })
    }

    fn kill_leftovers(&self, service: &str, dir: &Path) -> usize {
        let keep = self.status(service).map_or(0, |s| s.pid);
        let Ok(dir) = dir.canonicalize() else { return 0 };
        let me = std::process::id();
        let mut killed = 0;
        let Ok(entries) = fs::read_dir("/proc") else { return 0 };
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            if pid == me || pid == keep {
                continue;
            }
            let Ok(cwd) = fs::read_link(format!("/proc/{pid}/cwd")) else { continue };
            if cwd != dir {
                continue;
            }
            let pgid = process_group_of(pid);
            if keep != 0 && pgid == Some(keep) {
                continue;
            }
            match pgid {
                Some(g) if g == pid => kill_group(g, Signal::SIGKILL),
                _ => {
                    if let Ok(raw) = i32::try_from(pid) {
                        let _ = nix::sys::signal::kill(Pid::from_raw(raw), Signal::SIGKILL);
                    }
                }
            }
            tracing::warn!(%service, pid, dir = %dir.display(), "killed a process left behind by an interrupted step");
            killed += 1;
        }
        killed
    }

    fn subscribe(&self) -> broadcast::Receiver<DriverEvent> {
        self.shared.events.subscribe()
    }
}

/// Restarts a process that exited while unsupervised, once supervision is turned on.
async fn restart_later(shared: Arc<Shared>, service: String) {
    let delay = shared.backoff.delay(1);
    tokio::time::sleep(delay).await;
    let (child, proc) = {
        let mut slots = shared.slots();
        let Some(slot) = slots.get_mut(&service) else { return };
        if slot.state != RunState::Crashed || slot.proc.is_some() || !slot.supervise {
            return;
        }
        match spawn(&slot.launch, "restart after crash") {
            Ok((child, proc)) => {
                slot.proc = Some(proc);
                slot.state = RunState::Running;
                slot.restarts = slot.restarts.saturating_add(1);
                let _ = shared.write_record(slot);
                let _ = shared.events.send(DriverEvent::Restarted {
                    service: service.clone(),
                    version: slot.launch.version.clone(),
                    pid: proc.pid,
                    restarts: slot.restarts,
                });
                (child, proc)
            }
            Err(e) => {
                let _ =
                    shared.events.send(DriverEvent::RestartFailed { service: service.clone(), error: e.to_string() });
                return;
            }
        }
    };
    monitor(shared, service, Some(child), proc).await;
}

/// Field 5 (pgrp) of `/proc/<pid>/stat`.
fn process_group_of(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(2)?.parse().ok()
}

/// The last `max` bytes of `path` written after `from`, cut at a line start.
pub fn read_tail(path: &Path, from: u64, max: usize) -> String {
    let Ok(mut file) = File::open(path) else { return String::new() };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = from.max(len.saturating_sub(max as u64));
    if file.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = file.take(max as u64).read_to_end(&mut buf);
    let mut text = String::from_utf8_lossy(&buf).into_owned();
    if start > from
        && let Some(newline) = text.find('\n')
    {
        text.drain(..=newline);
    }
    text
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(1) };
        let delays: Vec<u128> = (1..=6).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn own_start_time_is_readable() {
        let me = std::process::id();
        let ticks = proc_start_ticks(me).expect("own stat");
        assert!(is_alive(me, ticks));
        assert!(!is_alive(me, ticks + 1));
        assert_eq!(process_group_of(me).map(|g| g > 0), Some(true));
    }

    /// Waits (bounded) until `pid` shows as a zombie in `/proc`.
    fn wait_zombie(pid: u32) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat of an unreaped child");
            if stat[stat.rfind(')').expect("comm") + 1..].trim_start().starts_with('Z') {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "{pid} did not exit: {stat}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_zombie_tells_how_it_ended_until_it_is_reaped() {
        for (script, expect) in [("read _; exit 3", "exit status: 3"), ("read _; kill -9 $$", "signal: 9 (SIGKILL)")] {
            // It waits for its stdin to close, so its start time is read while it runs.
            let mut child = std::process::Command::new("/bin/sh")
                .args(["-c", script])
                .stdin(Stdio::piped())
                .spawn()
                .expect("spawn sh");
            let pid = child.id();
            let ticks = proc_start_ticks(pid).expect("start time of a running child");
            drop(child.stdin.take());
            wait_zombie(pid);
            assert!(!is_alive(pid, ticks));
            assert_eq!(zombie_exit(pid, ticks).as_deref(), Some(expect));
            assert_eq!(zombie_exit(pid, ticks + 1), None, "another process's start time");
            let status = child.wait().expect("reap");
            assert_eq!(status.to_string(), expect, "the monitor's words");
            assert_eq!(zombie_exit(pid, ticks), None, "reaped");
        }
        assert_eq!(zombie_exit(std::process::id(), proc_start_ticks(std::process::id()).expect("own")), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_process_seen_gone_always_comes_with_its_exit_status() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(dir.path());
        layout.create().expect("layout");
        let driver = ProcessDriver::new(layout, Backoff::default());
        let release_dir = dir.path().join("release");
        fs::create_dir_all(&release_dir).expect("release dir");
        // Each round races the status poll against the exit and the monitor's reaping.
        for round in 0..50 {
            let launch = Launch {
                service: "web".to_owned(),
                version: format!("1.0.{round}"),
                release_dir: release_dir.clone(),
                command: "/bin/sh".to_owned(),
                args: vec!["-c".to_owned(), "exit 3".to_owned()],
                env: BTreeMap::new(),
                log_file: dir.path().join("web.log"),
                stop_timeout_ms: 1000,
            };
            driver.start(&launch).await.expect("start");
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let status = loop {
                let status = driver.status("web").expect("a slot");
                if !status.is_running() {
                    break status;
                }
                assert!(std::time::Instant::now() < deadline, "round {round}: still running: {status:?}");
                tokio::task::yield_now().await;
            };
            assert_eq!(status.last_exit.as_deref(), Some("exit status: 3"), "round {round}: {status:?}");
            assert_eq!(status.state, RunState::Failed, "round {round}");
        }
    }

    #[test]
    fn tails_start_at_a_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        fs::write(&path, "old\nline one\nline two\nline three\n").expect("write");
        assert_eq!(read_tail(&path, 4, 1000), "line one\nline two\nline three\n");
        assert_eq!(read_tail(&path, 0, 15), "line three\n");
    }
}
