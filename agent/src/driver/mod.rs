//! The driver boundary: how the agent starts, stops, supervises and re-adopts a
//! service's process, and runs hooks. [`process::ProcessDriver`] runs plain processes;
//! `systemd` and `docker` drivers implement the same [`Driver`] trait later.

pub mod process;

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::step::RunState;

/// Everything needed to start one version of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launch {
    /// The service.
    pub service: String,
    /// The version.
    pub version: String,
    /// Its release directory (the working directory).
    pub release_dir: PathBuf,
    /// The program: relative to the release directory when it contains a `/` and is
    /// not absolute, else looked up in `PATH`.
    pub command: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its full extra environment (step env plus `FLOTILLA_*`).
    pub env: BTreeMap<String, String>,
    /// The per-version log file that receives stdout and stderr.
    pub log_file: PathBuf,
    /// SIGTERM to SIGKILL delay when the supervisor stops it.
    pub stop_timeout_ms: u64,
}

/// A service's process as the driver sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessStatus {
    /// The version it runs (or last ran).
    pub version: String,
    /// Its pid; 0 when none runs.
    pub pid: u32,
    /// When it started; 0 when none runs.
    pub started_unix_ms: i64,
    /// Its state.
    pub state: RunState,
    /// Supervisor restarts since it was started by a step.
    pub restarts: u32,
    /// How the last process ended (`exit status: 3`), if one did.
    pub last_exit: Option<String>,
}

impl ProcessStatus {
    /// Whether a process runs now.
    pub fn is_running(&self) -> bool {
        self.pid != 0 && matches!(self.state, RunState::Running | RunState::Starting)
    }
}

/// What [`Driver::adopt`] found for a service after an agent (re)start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Adoption {
    /// Nothing recorded, or stopped on purpose.
    NotRunning,
    /// The recorded process is alive (same pid and start time) and now tracked.
    Adopted(ProcessStatus),
    /// The recorded process should run but is gone.
    Gone(Box<Launch>),
}

/// A hook (or gate check) to run once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookRun {
    /// Its name, for logs (`before_install`, `check smoke`).
    pub name: String,
    /// The command line, run by `/bin/sh -c`.
    pub command: String,
    /// Its working directory.
    pub cwd: PathBuf,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Killed (with its whole process group) after this.
    pub timeout: Duration,
    /// Receives its output.
    pub log_file: PathBuf,
}

/// How a hook ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookOutput {
    /// Its exit code; `None` when killed by a signal or on timeout.
    pub exit_code: Option<i32>,
    /// Whether it was killed at its timeout.
    pub timed_out: bool,
    /// The end of its output (at most 4 KiB).
    pub output_tail: String,
    /// How long it ran.
    pub duration: Duration,
}

/// Something the supervisor did on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverEvent {
    /// A supervised process exited unexpectedly; it is restarted after `restart_in`.
    Crashed {
        /// The service.
        service: String,
        /// Its version.
        version: String,
        /// The pid that exited.
        pid: u32,
        /// How it ended.
        exit: String,
        /// The backoff before the restart.
        restart_in: Duration,
    },
    /// A crashed process was started again.
    Restarted {
        /// The service.
        service: String,
        /// Its version.
        version: String,
        /// The new pid.
        pid: u32,
        /// Restarts so far.
        restarts: u32,
    },
    /// A restart failed to spawn; it is retried after the next backoff.
    RestartFailed {
        /// The service.
        service: String,
        /// Why.
        error: String,
    },
}

/// Why a driver operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The program could not be started.
    #[error("starting `{command}` in {}: {source}", cwd.display())]
    Spawn {
        /// The program.
        command: String,
        /// The working directory.
        cwd: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A process is already running for the service.
    #[error("{service} already runs (pid {pid}); stop it first")]
    AlreadyRunning {
        /// The service.
        service: String,
        /// Its pid.
        pid: u32,
    },
    /// The process did not exit even after SIGKILL.
    #[error("process {pid} of {service} did not exit after SIGKILL")]
    Unkillable {
        /// The service.
        service: String,
        /// Its pid.
        pid: u32,
    },
    /// Local I/O failed (log file, process record).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// How services run on this host. Operations on one service are not called
/// concurrently (the executor holds a per-service lock).
pub trait Driver: Send + Sync + 'static {
    /// The driver's name (`process`).
    fn name(&self) -> &'static str;

    /// Starts `launch` unsupervised (a crash is reported, not restarted, until
    /// [`Driver::supervise`]); the process must outlive the agent.
    fn start(&self, launch: &Launch) -> impl Future<Output = Result<ProcessStatus, DriverError>> + Send;

    /// Stops the service's process: SIGTERM to its group, `stop_timeout`, then SIGKILL.
    /// Returns how it ended, or `None` when nothing ran. The service stays stopped (also
    /// across agent restarts) until started again.
    fn stop(
        &self,
        service: &str,
        stop_timeout: Duration,
    ) -> impl Future<Output = Result<Option<String>, DriverError>> + Send;

    /// The service's process, if the driver tracks one.
    fn status(&self, service: &str) -> Option<ProcessStatus>;

    /// Turns crash restarts (with backoff) on or off.
    fn supervise(&self, service: &str, on: bool);

    /// After an agent start: re-adopts the service's recorded process if it still runs
    /// (same pid and start time) without restarting it.
    fn adopt(&self, service: &str) -> Result<Adoption, DriverError>;

    /// Runs a hook in its own process group; on timeout the whole group is killed.
    fn run_hook(&self, hook: &HookRun) -> impl Future<Output = Result<HookOutput, DriverError>> + Send;

    /// Kills processes left running in `dir` (their working directory) by an agent that
    /// died mid-step (a hook, a start that was never recorded), except the service's
    /// tracked process. Returns how many were killed.
    fn kill_leftovers(&self, service: &str, dir: &Path) -> usize;

    /// Supervisor events (crashes, restarts).
    fn subscribe(&self) -> broadcast::Receiver<DriverEvent>;
}
