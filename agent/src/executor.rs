//! The executor: runs [`Step`]s against the local host, at most once per `command_id`,
//! reporting progress per phase and a final [`StepResult`] with a precise reason.
//!
//! A deploy goes: fetch → verify → unpack → `before_install` → `after_install` →
//! `migrate` (only when asked) → stop the old process → switch `current` → start →
//! `validate` → health. Everything before the stop leaves the old version untouched;
//! any failure after it reverts locally (stop the new process, switch back, start the
//! old one and wait until it answers its checks), so the old version keeps serving.
//! Deploying the version that already runs healthily is a no-op (`Skipped`,
//! `already at <version>`).
//!
//! Crash safety: each phase is journaled before it starts. On [`Executor::open`] every
//! step left in progress is resolved: the service is put back on exactly one version
//! (the old one, unless the step had in fact completed: its activation was recorded
//! after health passed) and the step ends failed with `agent restarted during <phase>`.
//! Why not finish an interrupted deploy instead: its health was never confirmed, and
//! the engine treats the failed host like any other failure (retry or roll back).
//!
//! Cancellation ([`Executor::cancel`]): a step being cancelled stops at its next phase
//! boundary, or at once while it waits on something long (a download, a hook or gate
//! check, whose process group is killed, or health checks). It then takes the same
//! path as a failure: before the old process was stopped nothing was touched; after,
//! the step reverts to the previous version. The step ends with outcome `Cancelled`
//! and the host on exactly one version. Stopping, switching and starting a process are
//! short and are never interrupted halfway; neither is the revert itself. A step
//! cancelled while it waits for another step on the same service never runs (it is
//! journaled as cancelled, so a repeat is answered, not executed).
//!
//! A cancel of a step this agent never received ([`Executor::cancel_step`]) keeps it
//! from ever running: a tombstone is journaled (durably, before `cancel_step`
//! returns) with the result `Cancelled` (`cancelled before it was received:
//! <reason>`), which is reported like any result, and the step, if it arrives later, is
//! answered with that result and never executed. A cancel of a finished step changes
//! nothing; one whose term is below the highest seen (a deposed leader's) is ignored.
//!
//! Every step that begins, ends or is refused, and every tombstone, is appended to the
//! host's execution history ([`crate::history`]); a `started` line is durable before
//! the step does anything, and a step whose `started` line cannot be written fails
//! without acting.
//!
//! Drive it with [`Executor::execute`] (a progress stream and a result) or
//! [`Executor::run`].

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_shared::history::{HOST_HISTORY_FORMAT, HostHistoryEntry, HostHistoryRecord};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::artifact::{self, ArtifactError, ArtifactLimits};
use crate::driver::process::{Backoff, ProcessDriver, read_tail};
use crate::driver::{Adoption, Driver, DriverError, HookRun, Launch};
use crate::health::{HealthChecker, HealthFailure, HealthFailureKind, fmt_duration};
use crate::history::{self, HistoryLog};
use crate::journal::{Admission, Journal, JournalError, JournalRecord, Prior, RecordState, Tombstone};
use crate::layout::{self, Layout, STATE_FORMAT, now_unix_ms, read_json, valid_component, write_json_atomic};
use crate::step::{
    Action, Bake, Deploy, HealthCheckReport, HookKind, Probe, Rollback, RunCheck, RunHook, RunState, ServiceInstance,
    Step, StepFailure, StepOutcome, StepPhase, StepProgress, StepResult, Stop,
};

/// How many finished journal records are kept (older ones are pruned at open).
pub const DEFAULT_JOURNAL_KEEP: usize = 10_000;

/// Longest wait for the old version to answer its checks after a revert.
const REVERT_HEALTH_LIMIT: Duration = Duration::from_secs(30);

/// How many activations per service are remembered (for "previous version").
const HISTORY_LEN: usize = 32;

/// Where a test may freeze a step (`flotilla-agent local-deploy --pause-at`), to kill
/// the agent at a precise point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PausePoint {
    /// The phase.
    pub phase: StepPhase,
    /// `false`: right after the phase is journaled; `true`: when it has finished, before
    /// the next phase is journaled.
    pub at_end: bool,
}

impl std::str::FromStr for PausePoint {
    type Err = String;

    /// `installing` (start of the phase) or `installing:end`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, at_end) = match s.strip_suffix(":end") {
            Some(name) => (name, true),
            None => (s, false),
        };
        let phase = StepPhase::parse(name).ok_or_else(|| format!("unknown phase `{name}`"))?;
        Ok(Self { phase, at_end })
    }
}

/// The executor's settings.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// The agent's data directory.
    pub data_dir: PathBuf,
    /// This host's id (`FLOTILLA_HOST`).
    pub host_id: String,
    /// Releases kept per service, the running one included (at least 1; the running
    /// and the previous one are never deleted).
    pub keep_releases: u32,
    /// Artifact size and time limits.
    pub artifact_limits: ArtifactLimits,
    /// Restart backoff of crashed services.
    pub restart_backoff: Backoff,
    /// Finished journal records kept.
    pub journal_keep: usize,
    /// The bound of the execution history file (`history.jsonl`), in bytes.
    pub history_max_bytes: u64,
    /// Test only: freeze steps at this point.
    pub pause_at: Option<PausePoint>,
}

impl ExecutorConfig {
    /// Defaults for `data_dir` and `host_id`.
    pub fn new(data_dir: impl Into<PathBuf>, host_id: impl Into<String>) -> Self {
        Self {
            data_dir: data_dir.into(),
            host_id: host_id.into(),
            keep_releases: crate::config::DEFAULT_KEEP_RELEASES,
            artifact_limits: ArtifactLimits::default(),
            restart_backoff: Backoff::default(),
            journal_keep: DEFAULT_JOURNAL_KEEP,
            history_max_bytes: history::DEFAULT_MAX_BYTES,
            pause_at: None,
        }
    }
}

impl ExecutorConfig {
    /// The executor settings of a validated agent configuration.
    pub fn from_agent(config: &crate::AgentConfig) -> Self {
        let mut out = Self::new(&config.data_dir, config.host_id());
        out.keep_releases = config.keep_releases;
        out.artifact_limits.max_bytes = config.max_artifact_bytes;
        out.artifact_limits.max_unpacked_bytes = config.max_artifact_bytes.saturating_mul(4);
        out.artifact_limits.timeout = Duration::from_millis(config.fetch_timeout_ms);
        out
    }
}

/// Why the executor could not open.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// The journal is unusable.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The data directory is unusable.
    #[error("data directory {}: {source}", path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The HTTP client could not be built.
    #[error("building the HTTP client: {0}")]
    Http(String),
}

/// `deploys/<version>.json`: how an installed version runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployRecord {
    /// [`STATE_FORMAT`].
    pub format: u32,
    /// The deploy that installed it.
    pub deploy: Deploy,
    /// The sha256 of its artifact.
    pub sha256: String,
    /// When it was unpacked.
    pub installed_unix_ms: i64,
}

/// `service.json`: the versions a service was activated with, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceState {
    /// [`STATE_FORMAT`].
    pub format: u32,
    /// Versions in activation order (the last is the current one, when healthy); the
    /// most recent ones only.
    pub history: Vec<String>,
    /// How many activations were ever recorded.
    #[serde(default)]
    pub activations: u64,
}

impl ServiceState {
    /// The version that ran before `current`.
    pub fn previous(&self, current: Option<&str>) -> Option<&str> {
        self.history.iter().rev().map(String::as_str).find(|v| Some(*v) != current)
    }
}

/// A step started with [`Executor::execute`].
#[derive(Debug)]
pub struct StepHandle {
    /// Progress events, one per phase (ends when the step ends).
    pub progress: mpsc::UnboundedReceiver<StepProgress>,
    /// The final result.
    pub result: oneshot::Receiver<StepResult>,
}

impl StepHandle {
    /// Waits for the result, dropping progress events.
    pub async fn finish(self) -> StepResult {
        drop(self.progress);
        self.result.await.unwrap_or_else(|_| internal_result("the step's task ended without a result"))
    }
}

/// A failed step, before it becomes a [`StepResult`].
#[derive(Debug, Clone)]
struct Failure {
    kind: StepFailure,
    reason: String,
    health: Vec<HealthCheckReport>,
    exit_code: Option<i32>,
    output_tail: String,
    /// Stopped by [`Executor::cancel`]: the outcome is `Cancelled`, not `Failed`.
    cancelled: bool,
}

impl Failure {
    fn new(kind: StepFailure, reason: impl Into<String>) -> Self {
        Self {
            kind,
            reason: reason.into(),
            health: Vec::new(),
            exit_code: None,
            output_tail: String::new(),
            cancelled: false,
        }
    }

    fn cancelled(during: StepPhase, why: &str) -> Self {
        let mut f = Self::internal(if why.is_empty() {
            format!("cancelled during {during}")
        } else {
            format!("cancelled during {during}: {why}")
        });
        f.cancelled = true;
        f
    }

    fn internal(reason: impl Into<String>) -> Self {
        Self::new(StepFailure::Internal, reason)
    }
}

impl From<ArtifactError> for Failure {
    fn from(e: ArtifactError) -> Self {
        let kind = match &e {
            ArtifactError::UnsupportedUrl { .. }
            | ArtifactError::Fetch { .. }
            | ArtifactError::Timeout { .. }
            | ArtifactError::TooLarge { .. }
            | ArtifactError::Truncated { .. } => StepFailure::Fetch,
            ArtifactError::BadSha256(_) | ArtifactError::Checksum { .. } => StepFailure::Verify,
            ArtifactError::UnsafeEntry { .. } | ArtifactError::Unpack(_) => StepFailure::Unpack,
            ArtifactError::Io { .. } => StepFailure::Internal,
        };
        Self::new(kind, e.to_string())
    }
}

impl From<HealthFailure> for Failure {
    fn from(e: HealthFailure) -> Self {
        let kind = match e.kind {
            HealthFailureKind::Deadline => StepFailure::HealthDeadline,
            HealthFailureKind::Unhealthy => StepFailure::Unhealthy,
            HealthFailureKind::ProcessExited => StepFailure::ProcessExited,
        };
        Self {
            kind,
            reason: e.reason,
            health: e.reports,
            exit_code: None,
            output_tail: String::new(),
            cancelled: false,
        }
    }
}

/// What a successful action hands back.
#[derive(Debug, Default)]
struct Done {
    skipped: bool,
    note: String,
    health: Vec<HealthCheckReport>,
    exit_code: Option<i32>,
    output_tail: String,
}

/// What [`Executor::cancel_step`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancellation {
    /// The step is executing or waiting to: it stops and reports `Cancelled`.
    InFlight,
    /// The step was never received: its tombstone is journaled, and this is its result
    /// (to be reported and re-sent until acknowledged).
    Tombstoned(Box<StepResult>),
    /// The step is journaled already (finished, or tombstoned before): it keeps its
    /// result.
    Finished,
    /// The cancel's term is below the highest seen (a deposed leader's): ignored.
    Refused {
        /// The highest term seen.
        highest_term: u64,
    },
}

/// One step in flight: its journal record, progress channel and cancellation.
struct StepCtx<'a> {
    journal: &'a Journal,
    record: JournalRecord,
    progress: &'a mpsc::UnboundedSender<StepProgress>,
    pause_at: Option<PausePoint>,
    cancel: watch::Receiver<Option<String>>,
}

/// Waits until a cancellation reason is set (never returns while it is not).
async fn cancellation(rx: &mut watch::Receiver<Option<String>>) -> String {
    let reason = rx.wait_for(Option::is_some).await.map(|r| r.clone().unwrap_or_default());
    match reason {
        Ok(reason) => reason,
        Err(_) => std::future::pending().await,
    }
}

impl StepCtx<'_> {
    /// The cancellation, as a failure, if the step was cancelled.
    fn check_cancel(&self) -> Result<(), Failure> {
        match self.cancel.borrow().as_deref() {
            Some(why) => Err(Failure::cancelled(self.record.phase, why)),
            None => Ok(()),
        }
    }

    /// Runs `work`, abandoning it (dropping it) if the step is cancelled meanwhile.
    async fn interruptible<T>(&self, work: impl Future<Output = Result<T, Failure>>) -> Result<T, Failure> {
        let mut cancel = self.cancel.clone();
        tokio::select! {
            biased;
            out = work => out,
            why = cancellation(&mut cancel) => Err(Failure::cancelled(self.record.phase, &why)),
        }
    }

    /// Journals `phase` (durably, before it starts) and reports it. A cancelled step
    /// stops here instead (except to revert).
    async fn phase(&mut self, phase: StepPhase, detail: impl Into<String>) -> Result<(), Failure> {
        if phase != StepPhase::Reverting {
            self.check_cancel()?;
        }
        let previous = self.record.phase;
        if self.pause_at == Some(PausePoint { phase: previous, at_end: true }) {
            self.pause(previous, "end").await;
        }
        let detail = detail.into();
        self.record.phase = phase;
        self.record.detail.clone_from(&detail);
        self.record.updated_unix_ms = now_unix_ms();
        self.journal.write(&self.record).map_err(|e| Failure::internal(e.to_string()))?;
        tracing::info!(command_id = %self.record.command_id, phase = %phase, %detail, "step phase");
        let _ = self.progress.send(StepProgress {
            command_id: self.record.command_id.clone(),
            phase,
            detail,
            at_unix_ms: self.record.updated_unix_ms,
        });
        if self.pause_at == Some(PausePoint { phase, at_end: false }) {
            self.pause(phase, "start").await;
        }
        Ok(())
    }

    async fn pause(&self, phase: StepPhase, when: &str) {
        let _ = self.progress.send(StepProgress {
            command_id: self.record.command_id.clone(),
            phase,
            detail: format!("paused at {when} of {phase} (test)"),
            at_unix_ms: now_unix_ms(),
        });
        std::future::pending::<()>().await;
    }
}

struct Inner<D: Driver> {
    config: ExecutorConfig,
    layout: Layout,
    journal: Journal,
    history: HistoryLog,
    driver: D,
    client: reqwest::Client,
    health_client: reqwest::Client,
    service_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    running: Mutex<HashMap<String, watch::Receiver<Option<StepResult>>>>,
    cancels: Mutex<HashMap<String, CancelSlot>>,
}

/// Where [`Executor::cancel`] reaches the runs of one `command_id`.
struct CancelSlot {
    tx: watch::Sender<Option<String>>,
    /// Runs of this id registered (the executing one and repeats waiting for it).
    users: usize,
}

/// One run's registration in `Inner::cancels`; unregisters on drop.
struct CancelRegistration<D: Driver> {
    inner: Arc<Inner<D>>,
    command_id: String,
    rx: watch::Receiver<Option<String>>,
}

impl<D: Driver> Drop for CancelRegistration<D> {
    fn drop(&mut self) {
        let mut cancels = self.inner.cancels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = cancels.get_mut(&self.command_id) {
            slot.users = slot.users.saturating_sub(1);
            if slot.users == 0 {
                cancels.remove(&self.command_id);
            }
        }
    }
}

/// The local deploy engine. Cheap to clone; steps on different services run
/// concurrently, steps on one service one after the other. Dropping it leaves every
/// service running.
pub struct Executor<D: Driver = ProcessDriver> {
    inner: Arc<Inner<D>>,
}

impl<D: Driver> Clone for Executor<D> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner) }
    }
}

impl<D: Driver> std::fmt::Debug for Executor<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("data_dir", &self.inner.config.data_dir)
            .field("driver", &self.inner.driver.name())
            .finish_non_exhaustive()
    }
}

impl Executor<ProcessDriver> {
    /// Opens the executor with the `process` driver: re-adopts running services,
    /// resolves steps interrupted by an agent crash (returned, to be reported) and
    /// restarts services that should run but died while the agent was down.
    pub async fn open(config: ExecutorConfig) -> Result<(Self, Vec<StepResult>), ExecutorError> {
        let driver = ProcessDriver::new(Layout::new(&config.data_dir), config.restart_backoff);
        Self::open_with_driver(config, driver).await
    }
}

impl<D: Driver> Executor<D> {
    /// As [`Executor::open`], with any driver.
    pub async fn open_with_driver(config: ExecutorConfig, driver: D) -> Result<(Self, Vec<StepResult>), ExecutorError> {
        let layout = Layout::new(&config.data_dir);
        layout.create().map_err(|source| ExecutorError::DataDir { path: config.data_dir.clone(), source })?;
        let journal = Journal::open(&layout.journal_dir())?;
        let history = HistoryLog::with_max_bytes(layout.journal_dir(), config.history_max_bytes);
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ExecutorError::Http(e.to_string()))?;
        let health_client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| ExecutorError::Http(e.to_string()))?;
        let executor = Self {
            inner: Arc::new(Inner {
                config,
                layout,
                journal,
                history,
                driver,
                client,
                health_client,
                service_locks: Mutex::new(HashMap::new()),
                running: Mutex::new(HashMap::new()),
                cancels: Mutex::new(HashMap::new()),
            }),
        };
        let recovered = executor.recover().await?;
        if let Err(e) = executor.inner.journal.prune(executor.inner.config.journal_keep) {
            tracing::warn!(error = %e, "pruning the journal failed");
        }
        Ok((executor, recovered))
    }

    /// The driver.
    pub fn driver(&self) -> &D {
        &self.inner.driver
    }

    /// The data directory layout.
    pub fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    /// The highest leader term seen.
    pub fn highest_term(&self) -> u64 {
        self.inner.journal.highest_term()
    }

    /// Command ids of the steps executing now.
    pub fn running_command_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> =
            self.inner.running.lock().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Starts `step` on its own task: progress per phase (a bounded number of events:
    /// at most a few per phase), then the result. The step can be cancelled with
    /// [`Executor::cancel`] as soon as this returns.
    pub fn execute(&self, step: Step) -> StepHandle {
        let (progress_tx, progress) = mpsc::unbounded_channel();
        let (result_tx, result) = oneshot::channel();
        let this = self.clone();
        let registration = self.register_cancel(&step.command_id);
        tokio::spawn(async move {
            let outcome = this.run_registered(step, &progress_tx, registration).await;
            let _ = result_tx.send(outcome);
        });
        StepHandle { progress, result }
    }

    /// Cancels the step `command_id` if it is executing or waiting to execute: it ends
    /// with outcome `Cancelled` and the host on exactly one version (see the module
    /// documentation). Returns `false` when no such step is in flight (one that already
    /// finished keeps its result); [`Executor::cancel_step`] also keeps a step not
    /// received yet from ever running.
    pub fn cancel(&self, command_id: &str, reason: &str) -> bool {
        let cancels = self.inner.cancels.lock().unwrap_or_else(|e| e.into_inner());
        match cancels.get(command_id) {
            Some(slot) => {
                tracing::info!(%command_id, %reason, "cancelling step");
                slot.tx.send_replace(Some(reason.to_owned()));
                true
            }
            None => false,
        }
    }

    /// Handles a coordinator's cancel of `command_id` (sent in `term`, because of
    /// `reason`): a step executing or waiting to is stopped as by [`Executor::cancel`];
    /// a step never received gets a tombstone, journaled (durably) before this returns,
    /// so that it never runs: its result ([`Cancellation::Tombstoned`]) is to be
    /// reported like any step's. A finished step keeps its result. Blocks on the
    /// journal's fsyncs.
    pub fn cancel_step(&self, command_id: &str, term: u64, reason: &str) -> Result<Cancellation, JournalError> {
        if self.cancel(command_id, reason) {
            return Ok(Cancellation::InFlight);
        }
        let now = now_unix_ms();
        let why = if reason.is_empty() {
            "cancelled before it was received".to_owned()
        } else {
            format!("cancelled before it was received: {reason}")
        };
        let result = StepResult::ended_at_once(command_id.to_owned(), term, StepOutcome::Cancelled, why, now);
        match self.inner.journal.tombstone(&result)? {
            Tombstone::Written(_) => {
                tracing::warn!(%command_id, term, %reason, "cancel of a step not received: it is journaled as cancelled and will never run");
                let line = HostHistoryRecord {
                    format: HOST_HISTORY_FORMAT,
                    at_unix_ms: now,
                    command_id: command_id.to_owned(),
                    term,
                    release_id: String::new(),
                    stage: String::new(),
                    entry: HostHistoryEntry::CancelledUnreceived { reason: reason.to_owned() },
                };
                self.append_history_or_warn(&line);
                Ok(Cancellation::Tombstoned(Box::new(result)))
            }
            // Admitted since the `cancel` above: a step registers its cancellation before
            // it is admitted, so it is reachable now, unless its action already ended.
            Tombstone::Known(record) if record.state == RecordState::InProgress && self.cancel(command_id, reason) => {
                Ok(Cancellation::InFlight)
            }
            Tombstone::Known(_) => Ok(Cancellation::Finished),
            Tombstone::Refused { highest_term } => {
                tracing::warn!(%command_id, term, highest_term, %reason, "ignoring a cancel from a leader older than the highest term seen");
                Ok(Cancellation::Refused { highest_term })
            }
        }
    }

    fn register_cancel(&self, command_id: &str) -> CancelRegistration<D> {
        let mut cancels = self.inner.cancels.lock().unwrap_or_else(|e| e.into_inner());
        let slot =
            cancels.entry(command_id.to_owned()).or_insert_with(|| CancelSlot { tx: watch::channel(None).0, users: 0 });
        slot.users += 1;
        let rx = slot.tx.subscribe();
        CancelRegistration { inner: Arc::clone(&self.inner), command_id: command_id.to_owned(), rx }
    }

    /// Runs `step` to its end, sending a progress event per phase. A `command_id` seen
    /// before is not executed again: its recorded result is returned with `replayed`
    /// set (waiting for it when it is still executing). A term below the highest seen
    /// is refused.
    pub async fn run(&self, step: Step, progress: &mpsc::UnboundedSender<StepProgress>) -> StepResult {
        let registration = self.register_cancel(&step.command_id);
        self.run_registered(step, progress, registration).await
    }

    async fn run_registered(
        &self,
        step: Step,
        progress: &mpsc::UnboundedSender<StepProgress>,
        registration: CancelRegistration<D>,
    ) -> StepResult {
        if let Some(result) = self.wait_running(&step.command_id).await {
            return result;
        }
        let mut cancel = registration.rx.clone();
        let lock = step.action.service().map(|s| self.service_lock(s));
        // A step cancelled while it waits for the service is journaled and ends at once
        // (its first phase sees the cancellation), without the lock.
        let guard = match &lock {
            Some(lock) => tokio::select! {
                guard = lock.lock() => Some(guard),
                _ = cancellation(&mut cancel) => None,
            },
            None => None,
        };
        let now = now_unix_ms();
        let prior = match &step.action {
            Action::Deploy(d) => self.prior(&d.service, &d.version),
            Action::Rollback(r) => self.prior(&r.service, &r.to_version),
            _ => None,
        };
        let record = match self.inner.journal.admit(&step, prior, now) {
            Err(e) => {
                let mut result = StepResult::new(&step, StepOutcome::Failed, now);
                result.failure = Some(StepFailure::Internal);
                result.reason = format!("cannot journal the step: {e}");
                return result;
            }
            Ok(Admission::Refused { highest_term }) => {
                let mut result = StepResult::new(&step, StepOutcome::Refused, now);
                result.reason = format!(
                    "term {} is lower than the highest term this agent has seen ({highest_term}): a newer leader exists",
                    step.term
                );
                tracing::warn!(command_id = %step.command_id, reason = %result.reason, "step refused");
                self.append_history_or_warn(&history::record_for(&step, HostHistoryEntry::Refused { highest_term }));
                return result;
            }
            Ok(Admission::Known(record)) => {
                return match record.result {
                    Some(mut result) => {
                        result.replayed = true;
                        result
                    }
                    None => {
                        // Journaled, not finished and not running here: only possible if
                        // a repeat raced the admission; report it as in progress.
                        let mut result = StepResult::new(&step, StepOutcome::Failed, now);
                        result.failure = Some(StepFailure::Internal);
                        result.reason = format!("step {} is still in progress ({})", step.command_id, record.phase);
                        result.replayed = true;
                        result
                    }
                };
            }
            Ok(Admission::Admitted(record)) => *record,
        };
        let (done_tx, done_rx) = watch::channel(None);
        self.inner.running.lock().unwrap_or_else(|e| e.into_inner()).insert(step.command_id.clone(), done_rx);
        // The step begins once it holds its service (one cancelled while it waited never
        // does): `started` is durable before it acts, or it does not act.
        let begins = lock.is_none() || guard.is_some();
        let started = if begins {
            self.inner
                .history
                .append(&history::record_for(&step, self.started_entry(&step)))
                .map_err(|e| Failure::internal(format!("cannot record the step in the host history: {e}")))
        } else {
            Ok(())
        };
        tracing::info!(command_id = %step.command_id, action = step.action.name(), service = ?step.action.service(), "executing step");
        let _ = progress.send(StepProgress {
            command_id: step.command_id.clone(),
            phase: StepPhase::Accepted,
            detail: format!("{} journaled", step.action.name()),
            at_unix_ms: record.started_unix_ms,
        });
        let mut ctx = StepCtx {
            journal: &self.inner.journal,
            record,
            progress,
            pause_at: self.inner.config.pause_at,
            cancel: registration.rx.clone(),
        };
        let outcome = match started.and_then(|()| ctx.check_cancel()) {
            Err(failure) => Err(failure),
            Ok(()) => self.act(&mut ctx, &step).await,
        };
        drop(registration);
        if ctx.pause_at == Some(PausePoint { phase: ctx.record.phase, at_end: true }) {
            ctx.pause(ctx.record.phase, "end").await;
        }
        let result = self.finish(&mut ctx, &step, outcome);
        if let Err(e) = self.inner.journal.write(&ctx.record) {
            tracing::error!(command_id = %step.command_id, error = %e, "cannot journal the step's result");
        }
        // Still holding the service: the next step's `started` comes after this.
        self.append_history_or_warn(&history::record_for(&step, self.finished_entry(&step, &result)));
        let _ = done_tx.send(Some(result.clone()));
        self.inner.running.lock().unwrap_or_else(|e| e.into_inner()).remove(&step.command_id);
        if let Some(service) = step.action.service()
            && result.is_success()
            && matches!(step.action, Action::Deploy(_) | Action::Rollback(_))
        {
            self.prune_releases(service);
        }
        tracing::info!(command_id = %step.command_id, outcome = ?result.outcome, reason = %result.reason, "step finished");
        drop(guard);
        result
    }

    /// The `started` history entry of `step`.
    fn started_entry(&self, step: &Step) -> HostHistoryEntry {
        let current = |svc: &str| self.inner.layout.current_version(svc).ok().flatten();
        let (version, hook) = match &step.action {
            Action::Deploy(d) => (Some(d.version.clone()), None),
            Action::Rollback(r) if !r.to_version.is_empty() => (Some(r.to_version.clone()), None),
            Action::Rollback(r) => {
                let now = current(&r.service);
                let previous = self.service_state(&r.service).previous(now.as_deref()).map(str::to_owned);
                (previous.or_else(|| r.fallback.as_ref().map(|f| f.version.clone())), None)
            }
            Action::RunHook(h) => (Some(h.version.clone()), Some(h.hook.as_str().to_owned())),
            Action::Bake(b) if !b.version.is_empty() => (Some(b.version.clone()), None),
            Action::Bake(b) => (current(&b.service), None),
            Action::Stop(s) => (current(&s.service), None),
            Action::RunCheck(_) => (None, None),
        };
        HostHistoryEntry::Started {
            action: step.action.name().to_owned(),
            service: step.action.service().map(str::to_owned),
            version,
            hook,
        }
    }

    /// The `finished` history entry of `step` ended with `result`.
    fn finished_entry(&self, step: &Step, result: &StepResult) -> HostHistoryEntry {
        let version = step
            .action
            .service()
            .filter(|svc| valid_component(svc))
            .and_then(|svc| self.inner.layout.current_version(svc).ok().flatten());
        HostHistoryEntry::Finished { outcome: result.outcome.as_str().to_owned(), version }
    }

    /// Appends a history line whose loss must not stop the agent (the step already
    /// ended or never acts): a failure is logged.
    fn append_history_or_warn(&self, line: &HostHistoryRecord) {
        if let Err(e) = self.inner.history.append(line) {
            tracing::warn!(command_id = %line.command_id, error = %e, "cannot append to the host's execution history");
        }
    }

    /// Runs the step's action.
    async fn act(&self, ctx: &mut StepCtx<'_>, step: &Step) -> Result<Done, Failure> {
        match &step.action {
            Action::Deploy(d) => self.deploy(ctx, d).await,
            Action::Rollback(r) => self.rollback(ctx, r).await,
            Action::Stop(s) => self.stop(ctx, s).await,
            Action::RunCheck(c) => self.run_check(ctx, c).await,
            Action::Bake(b) => self.bake(ctx, b).await,
            Action::RunHook(h) => self.run_hook(ctx, h).await,
        }
    }

    /// Marks the result of `command_id` acknowledged by the coordinators (durably), so
    /// that it is no longer re-sent. Returns whether a finished, unacknowledged result
    /// was marked.
    pub fn mark_acked(&self, command_id: &str) -> Result<bool, JournalError> {
        self.inner.journal.mark_acked(command_id)
    }

    /// The results of finished steps the coordinators have not acknowledged, oldest
    /// first (steps resolved at [`Executor::open`] included).
    pub fn unacked_results(&self) -> Result<Vec<StepResult>, JournalError> {
        self.inner.journal.unacked_results()
    }

    /// Whether `command_id` has a finished record in the journal (its result survives
    /// a restart); refusals and steps that could not be journaled have none.
    pub fn is_journaled(&self, command_id: &str) -> bool {
        matches!(self.inner.journal.get(command_id), Ok(Some(record)) if record.state == RecordState::Done)
    }

    /// The inventory: every installed service, its version and process.
    pub fn inventory(&self) -> Vec<ServiceInstance> {
        self.inner.layout.services().unwrap_or_default().iter().map(|s| self.instance(s)).collect()
    }

    // ------------------------------------------------------------------ internals

    async fn wait_running(&self, command_id: &str) -> Option<StepResult> {
        let rx = self.inner.running.lock().unwrap_or_else(|e| e.into_inner()).get(command_id).cloned();
        let mut rx = rx?;
        let result = rx.wait_for(Option::is_some).await.ok()?.clone();
        result.map(|mut r| {
            r.replayed = true;
            r
        })
    }

    fn service_lock(&self, service: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.inner.service_locks.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(locks.entry(service.to_owned()).or_default())
    }

    fn prior(&self, service: &str, target: &str) -> Option<Prior> {
        if !valid_component(service) {
            return None;
        }
        let version = self.inner.layout.current_version(service).ok().flatten();
        let running = self.inner.driver.status(service).is_some_and(|s| s.is_running());
        let activations = self.service_state(service).activations;
        Some(Prior { version, running, target: target.to_owned(), activations })
    }

    fn finish(&self, ctx: &mut StepCtx<'_>, step: &Step, outcome: Result<Done, Failure>) -> StepResult {
        let mut result = StepResult::new(step, StepOutcome::Succeeded, ctx.record.started_unix_ms);
        match outcome {
            Ok(done) => {
                if done.skipped {
                    result.outcome = StepOutcome::Skipped;
                }
                result.reason = done.note;
                result.health = done.health;
                result.exit_code = done.exit_code;
                result.output_tail = done.output_tail;
            }
            Err(failure) => {
                if failure.cancelled {
                    result.outcome = StepOutcome::Cancelled;
                } else {
                    result.outcome = StepOutcome::Failed;
                    result.failure = Some(failure.kind);
                }
                result.reason = failure.reason;
                result.health = failure.health;
                result.exit_code = failure.exit_code;
                result.output_tail = failure.output_tail;
            }
        }
        if let Some(service) = step.action.service()
            && !matches!(step.action, Action::RunHook(_))
            && valid_component(service)
        {
            result.service = Some(self.instance(service));
        }
        result.finished_unix_ms = now_unix_ms();
        ctx.record.state = RecordState::Done;
        ctx.record.updated_unix_ms = result.finished_unix_ms;
        ctx.record.result = Some(result.clone());
        result
    }

    fn instance(&self, service: &str) -> ServiceInstance {
        let layout = &self.inner.layout;
        let version = layout.current_version(service).ok().flatten().unwrap_or_default();
        let status = self.inner.driver.status(service);
        let (state, pid, started, restarts) = match &status {
            Some(s) if s.version == version || s.is_running() => (s.state, s.pid, s.started_unix_ms, s.restarts),
            _ => (RunState::Stopped, 0, 0, 0),
        };
        let provides = self.deploy_record(service, &version).map(|r| r.deploy.provides).unwrap_or_default();
        let history = self.service_state(service).history;
        let mut kept: Vec<String> =
            layout.installed_versions(service).unwrap_or_default().into_iter().filter(|v| *v != version).collect();
        kept.sort_by_key(|v| std::cmp::Reverse(history.iter().rposition(|h| h == v)));
        ServiceInstance {
            service: service.to_owned(),
            version,
            state,
            pid,
            started_unix_ms: started,
            provides,
            kept_versions: kept,
            restarts,
        }
    }

    fn deploy_record(&self, service: &str, version: &str) -> Option<DeployRecord> {
        if version.is_empty() {
            return None;
        }
        read_json(&self.inner.layout.deploy_record(service, version)).ok().flatten()
    }

    fn service_state(&self, service: &str) -> ServiceState {
        read_json(&self.inner.layout.service_state(service)).ok().flatten().unwrap_or_default()
    }

    fn record_activation(&self, service: &str, version: &str) -> Result<(), Failure> {
        let mut state = self.service_state(service);
        state.format = STATE_FORMAT;
        state.history.push(version.to_owned());
        state.activations += 1;
        let excess = state.history.len().saturating_sub(HISTORY_LEN);
        state.history.drain(..excess);
        write_json_atomic(&self.inner.layout.service_state(service), &state)
            .map_err(|e| Failure::internal(format!("recording the activation of {version}: {e}")))
    }

    fn launch_for(&self, deploy: &Deploy) -> Launch {
        let layout = &self.inner.layout;
        let mut env = deploy.run.env.clone();
        env.insert("FLOTILLA_SERVICE".to_owned(), deploy.service.clone());
        env.insert("FLOTILLA_VERSION".to_owned(), deploy.version.clone());
        env.insert("FLOTILLA_HOST".to_owned(), self.inner.config.host_id.clone());
        Launch {
            service: deploy.service.clone(),
            version: deploy.version.clone(),
            release_dir: layout.release_dir(&deploy.service, &deploy.version),
            command: deploy.run.command.clone(),
            args: deploy.run.args.clone(),
            env,
            log_file: layout.log_file(&deploy.service, &deploy.version),
            stop_timeout_ms: deploy.stop_timeout_ms,
        }
    }

    fn checker(&self, deploy: &Deploy) -> HealthChecker {
        let launch = self.launch_for(deploy);
        HealthChecker::new(self.inner.health_client.clone(), deploy.health.clone(), launch.release_dir, launch.env)
    }

    async fn hook(
        &self,
        ctx: &mut StepCtx<'_>,
        deploy: &Deploy,
        kind: HookKind,
        command: &str,
        timeout: Duration,
    ) -> Result<Option<(i32, String)>, Failure> {
        if command.trim().is_empty() {
            return Ok(None);
        }
        let phase = if matches!(kind, HookKind::Migrate | HookKind::MigrateDown) {
            StepPhase::Migrating
        } else {
            StepPhase::RunningHook
        };
        ctx.phase(phase, format!("hook {}", kind.as_str())).await?;
        let launch = self.launch_for(deploy);
        let run = HookRun {
            name: kind.as_str().to_owned(),
            command: command.to_owned(),
            cwd: launch.release_dir,
            env: launch.env,
            timeout,
            log_file: launch.log_file,
        };
        ctx.interruptible(self.run_hook_process(&run, StepFailure::Hook, &format!("hook {}", kind.as_str())))
            .await
            .map(Some)
    }

    /// Runs a hook or check; a non-zero exit or a timeout is a failure of `kind`
    /// (`Hook` becomes `HookTimeout` on timeout).
    async fn run_hook_process(&self, run: &HookRun, kind: StepFailure, what: &str) -> Result<(i32, String), Failure> {
        let out = self.inner.driver.run_hook(run).await.map_err(|e| Failure::internal(format!("{what}: {e}")))?;
        if out.timed_out {
            let kind = if kind == StepFailure::Hook { StepFailure::HookTimeout } else { kind };
            let mut f = Failure::new(
                kind,
                format!("{what} (`{}`) timed out after {} and was killed", run.command, fmt_duration(run.timeout)),
            );
            f.output_tail = out.output_tail;
            return Err(f);
        }
        match out.exit_code {
            Some(0) => Ok((0, out.output_tail)),
            code => {
                let how =
                    code.map_or_else(|| "was killed by a signal".to_owned(), |c| format!("exited with status {c}"));
                let last = out.output_tail.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_owned();
                let mut reason = format!("{what} (`{}`) {how}", run.command);
                if !last.is_empty() {
                    reason.push_str(&format!(": {last}"));
                }
                let mut f = Failure::new(kind, reason);
                f.exit_code = code;
                f.output_tail = out.output_tail;
                Err(f)
            }
        }
    }

    // ------------------------------------------------------------------ deploy

    async fn deploy(&self, ctx: &mut StepCtx<'_>, d: &Deploy) -> Result<Done, Failure> {
        validate_deploy(d)?;
        let layout = &self.inner.layout;
        let svc = d.service.as_str();
        if let Some(done) = self.already_at(svc, d).await {
            return Ok(done);
        }
        let release_dir = layout.release_dir(svc, &d.version);
        let kept = release_dir.is_dir()
            && self.deploy_record(svc, &d.version).is_some_and(|r| r.sha256.eq_ignore_ascii_case(&d.artifact.sha256));
        if kept {
            ctx.phase(StepPhase::Fetching, format!("{} is kept on this host; not fetched again", d.version)).await?;
        } else {
            self.install(ctx, d).await?;
        }
        let record = DeployRecord {
            format: STATE_FORMAT,
            deploy: d.clone(),
            sha256: d.artifact.sha256.to_ascii_lowercase(),
            installed_unix_ms: now_unix_ms(),
        };
        write_json_atomic(&layout.deploy_record(svc, &d.version), &record)
            .map_err(|e| Failure::internal(format!("recording how {} runs: {e}", d.version)))?;
        self.hook(ctx, d, HookKind::BeforeInstall, &d.hooks.before_install, d.hook_timeout()).await?;
        self.hook(ctx, d, HookKind::AfterInstall, &d.hooks.after_install, d.hook_timeout()).await?;
        if d.migrate {
            self.hook(ctx, d, HookKind::Migrate, &d.hooks.migrate, d.hook_timeout()).await?;
        }
        let prior = ctx.record.prior.clone().unwrap_or(Prior {
            version: None,
            running: false,
            target: d.version.clone(),
            activations: 0,
        });
        self.activate(ctx, d, &prior).await
    }

    /// A no-op when `d.version` is current, runs, and passes one sample of its checks.
    async fn already_at(&self, svc: &str, d: &Deploy) -> Option<Done> {
        let current = self.inner.layout.current_version(svc).ok().flatten()?;
        let status = self.inner.driver.status(svc)?;
        if current != d.version || status.version != d.version || !status.is_running() {
            return None;
        }
        let health = self.checker(d).probe_once().await.ok()?;
        Some(Done { skipped: true, note: format!("already at {}", d.version), health, ..Done::default() })
    }

    /// Fetch, verify and unpack into `releases/<version>`.
    async fn install(&self, ctx: &mut StepCtx<'_>, d: &Deploy) -> Result<(), Failure> {
        let layout = &self.inner.layout;
        let svc = d.service.as_str();
        let tmp = layout.tmp_dir(svc);
        fs::create_dir_all(&tmp).map_err(|e| Failure::internal(format!("creating {}: {e}", tmp.display())))?;
        ctx.phase(StepPhase::Fetching, d.artifact.url.clone()).await?;
        let download = tmp.join(format!("download-{}.part", d.version));
        let fetched = ctx
            .interruptible(async {
                artifact::fetch(&self.inner.client, &d.artifact.url, &download, &self.inner.config.artifact_limits)
                    .await
                    .map_err(Failure::from)
            })
            .await
            .inspect_err(|_| {
                let _ = fs::remove_file(&download);
            })?;
        ctx.phase(StepPhase::Verifying, format!("sha256 of {} bytes", fetched.size)).await?;
        if let Err(e) = artifact::verify(&d.artifact.url, &fetched, &d.artifact.sha256) {
            let _ = fs::remove_file(&download);
            return Err(e.into());
        }
        ctx.phase(StepPhase::Unpacking, format!("into releases/{}", d.version)).await?;
        let release_dir = layout.release_dir(svc, &d.version);
        if release_dir.exists() {
            // A different build of the same version: move the old tree aside (a process
            // running from it keeps its working directory) and delete it.
            let aside = tmp.join(format!("replaced-{}-{}", d.version, now_unix_ms()));
            fs::rename(&release_dir, &aside)
                .map_err(|e| Failure::internal(format!("moving the old {} aside: {e}", release_dir.display())))?;
            let _ = fs::remove_dir_all(&aside);
        }
        let (archive, work, dest, max) =
            (download.clone(), tmp.clone(), release_dir.clone(), self.inner.config.artifact_limits.max_unpacked_bytes);
        let unpacked = tokio::task::spawn_blocking(move || artifact::unpack(&archive, &work, &dest, max))
            .await
            .map_err(|e| Failure::internal(format!("unpack task failed: {e}")))?;
        let _ = fs::remove_file(&download);
        unpacked?;
        Ok(())
    }

    /// Stop the old process, switch, start, validate, health; on failure revert.
    async fn activate(&self, ctx: &mut StepCtx<'_>, d: &Deploy, prior: &Prior) -> Result<Done, Failure> {
        let svc = d.service.as_str();
        let attempt = self.activate_inner(ctx, d, prior).await;
        match attempt {
            Ok(health) => {
                self.record_activation(svc, &d.version)?;
                self.inner.driver.supervise(svc, true);
                Ok(Done { health, ..Done::default() })
            }
            Err(mut failure) => {
                match self.revert(ctx, svc, prior, d.stop_timeout()).await {
                    Err(revert_error) => failure
                        .reason
                        .push_str(&format!("; reverting to the previous version failed too: {revert_error}")),
                    Ok(()) if failure.cancelled => failure.reason.push_str(&format!(
                        "; {svc} is back on {}",
                        prior.version.as_deref().unwrap_or("nothing (it was not installed before)")
                    )),
                    Ok(()) => {}
                }
                Err(failure)
            }
        }
    }

    async fn activate_inner(
        &self,
        ctx: &mut StepCtx<'_>,
        d: &Deploy,
        prior: &Prior,
    ) -> Result<Vec<HealthCheckReport>, Failure> {
        let layout = &self.inner.layout;
        let driver = &self.inner.driver;
        let svc = d.service.as_str();
        let old = prior.version.as_deref().unwrap_or("nothing");
        ctx.phase(StepPhase::Stopping, format!("stopping {old}")).await?;
        driver
            .stop(svc, d.stop_timeout())
            .await
            .map_err(|e| Failure::internal(format!("stopping {svc} {old}: {e}")))?;
        ctx.phase(StepPhase::Installing, format!("current -> releases/{}", d.version)).await?;
        layout
            .switch_current(svc, &d.version)
            .map_err(|e| Failure::internal(format!("switching current to {}: {e}", d.version)))?;
        ctx.phase(StepPhase::Starting, format!("{} {}", d.run.command, d.run.args.join(" "))).await?;
        let launch = self.launch_for(d);
        driver.start(&launch).await.map_err(|e| Failure::new(StepFailure::Start, e.to_string()))?;
        if !d.hooks.validate.trim().is_empty() {
            self.hook(ctx, d, HookKind::Validate, &d.hooks.validate, d.hook_timeout()).await?;
        }
        ctx.phase(
            StepPhase::CheckingHealth,
            format!(
                "{} check(s), healthy for {} within {}",
                d.health.len(),
                fmt_duration(d.healthy_for()),
                fmt_duration(d.healthy_deadline())
            ),
        )
        .await?;
        let mut alive = self.liveness(svc, &launch);
        let checker = self.checker(d);
        ctx.interruptible(async {
            checker.wait_healthy(d.healthy_for(), d.healthy_deadline(), &mut alive).await.map_err(|e| {
                let mut f = Failure::from(e);
                if f.kind == StepFailure::ProcessExited {
                    f.output_tail = read_tail(&launch.log_file, 0, crate::driver::process::OUTPUT_TAIL_BYTES);
                }
                f
            })
        })
        .await
    }

    /// `Some(reason)` once the service's process is gone.
    fn liveness(&self, svc: &str, launch: &Launch) -> impl FnMut() -> Option<String> + Send + use<D> {
        let inner = Arc::clone(&self.inner);
        let (svc, version, log) = (svc.to_owned(), launch.version.clone(), launch.log_file.clone());
        move || {
            let status = inner.driver.status(&svc);
            match status {
                Some(s) if s.is_running() => None,
                other => {
                    let exit = other.and_then(|s| s.last_exit).unwrap_or_else(|| "exited".to_owned());
                    let tail = read_tail(&log, 0, 512);
                    let last = tail.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_owned();
                    let mut reason = format!("process of {svc} {version} exited ({exit})");
                    if !last.is_empty() {
                        reason.push_str(&format!("; last log line: {last}"));
                    }
                    Some(reason)
                }
            }
        }
    }

    /// Puts the service back on `prior`: stop whatever runs, kill leftovers in the
    /// target's directory, switch `current` back, start the old process and wait until
    /// it answers its checks (one passing sample). Idempotent (also used by recovery).
    async fn revert(
        &self,
        ctx: &mut StepCtx<'_>,
        svc: &str,
        prior: &Prior,
        stop_timeout: Duration,
    ) -> Result<(), String> {
        let _ =
            ctx.phase(StepPhase::Reverting, format!("back to {}", prior.version.as_deref().unwrap_or("nothing"))).await;
        self.put_back(svc, prior, stop_timeout).await
    }

    async fn put_back(&self, svc: &str, prior: &Prior, stop_timeout: Duration) -> Result<(), String> {
        let layout = &self.inner.layout;
        let driver = &self.inner.driver;
        let status = driver.status(svc);
        let old_runs = status.as_ref().is_some_and(|s| s.is_running() && Some(&s.version) == prior.version.as_ref());
        if !old_runs {
            driver.stop(svc, stop_timeout).await.map_err(|e| format!("stopping {svc}: {e}"))?;
        }
        if prior.version.as_deref() != Some(prior.target.as_str()) && !prior.target.is_empty() {
            driver.kill_leftovers(svc, &layout.release_dir(svc, &prior.target));
        }
        let Some(old) = prior.version.as_deref() else {
            layout.clear_current(svc).map_err(|e| format!("removing current: {e}"))?;
            return Ok(());
        };
        if layout.current_version(svc).ok().flatten().as_deref() != Some(old) {
            layout.switch_current(svc, old).map_err(|e| format!("switching current back to {old}: {e}"))?;
        }
        let should_run = prior.running || old_runs;
        if !should_run {
            return Ok(());
        }
        let record = self.deploy_record(svc, old).ok_or_else(|| format!("no record of how {svc} {old} runs"))?;
        if !old_runs {
            let launch = self.launch_for(&record.deploy);
            driver.start(&launch).await.map_err(|e| format!("starting {old} again: {e}"))?;
        }
        let launch = self.launch_for(&record.deploy);
        let mut alive = self.liveness(svc, &launch);
        let limit = record.deploy.healthy_deadline().min(REVERT_HEALTH_LIMIT);
        let result = self.checker(&record.deploy).wait_healthy(Duration::ZERO, limit, &mut alive).await;
        driver.supervise(svc, true);
        result.map(drop).map_err(|e| format!("{old} was started again but is not healthy: {}", e.reason))
    }

    // ------------------------------------------------------------------ other steps

    async fn rollback(&self, ctx: &mut StepCtx<'_>, r: &Rollback) -> Result<Done, Failure> {
        let layout = &self.inner.layout;
        let svc = r.service.as_str();
        if !valid_component(svc) {
            return Err(Failure::internal(format!("invalid service name {svc:?}")));
        }
        let current = layout.current_version(svc).ok().flatten();
        if !r.from_version.is_empty() && current.as_deref() != Some(r.from_version.as_str()) {
            return Err(Failure::internal(format!(
                "expected {svc} {} to run, but current is {}",
                r.from_version,
                current.as_deref().unwrap_or("nothing")
            )));
        }
        let target = if r.to_version.is_empty() {
            match self.service_state(svc).previous(current.as_deref()) {
                Some(v) => v.to_owned(),
                None => match &r.fallback {
                    Some(f) => f.version.clone(),
                    None => {
                        return Err(Failure::new(
                            StepFailure::NoPrevious,
                            format!("no version of {svc} ran before {}", current.as_deref().unwrap_or("nothing")),
                        ));
                    }
                },
            }
        } else {
            r.to_version.clone()
        };
        let mut prior = ctx.record.prior.clone().unwrap_or(Prior {
            version: current.clone(),
            running: false,
            target: target.clone(),
            activations: 0,
        });
        prior.target.clone_from(&target);
        ctx.record.prior = Some(prior.clone());
        let record = self.deploy_record(svc, &target).filter(|_| layout.release_dir(svc, &target).is_dir());
        let deploy = match (record, &r.fallback) {
            (Some(record), _) => record.deploy,
            (None, Some(fallback)) if fallback.version == target => {
                // Not kept: a full deploy of the fallback.
                return self.deploy(ctx, fallback).await;
            }
            (None, _) => {
                let kept = layout.installed_versions(svc).unwrap_or_default().join(", ");
                return Err(Failure::new(
                    StepFailure::NoPrevious,
                    format!("{svc} {target} is not kept on this host (kept: {kept}) and no fallback was given"),
                ));
            }
        };
        if let Some(done) = self.already_at(svc, &deploy).await {
            return Ok(done);
        }
        self.activate(ctx, &deploy, &prior).await
    }

    async fn stop(&self, ctx: &mut StepCtx<'_>, s: &Stop) -> Result<Done, Failure> {
        let svc = s.service.as_str();
        if !valid_component(svc) {
            return Err(Failure::internal(format!("invalid service name {svc:?}")));
        }
        ctx.phase(StepPhase::Stopping, format!("stopping {svc}")).await?;
        let recorded = self
            .inner
            .layout
            .current_version(svc)
            .ok()
            .flatten()
            .and_then(|v| self.deploy_record(svc, &v))
            .map(|r| r.deploy.stop_timeout());
        let timeout = if s.stop_timeout_ms > 0 {
            Duration::from_millis(s.stop_timeout_ms)
        } else {
            recorded.unwrap_or(Duration::from_secs(10))
        };
        let how = self.inner.driver.stop(svc, timeout).await.map_err(|e| Failure::internal(e.to_string()))?;
        Ok(Done { note: how.unwrap_or_else(|| format!("{svc} was not running")), ..Done::default() })
    }

    async fn run_check(&self, ctx: &mut StepCtx<'_>, c: &RunCheck) -> Result<Done, Failure> {
        ctx.phase(StepPhase::RunningCheck, format!("gate {}", c.gate)).await?;
        let name = format!("{}.log", sanitize(&ctx.record.command_id));
        let mut env = c.env.clone();
        env.insert("FLOTILLA_HOST".to_owned(), self.inner.config.host_id.clone());
        let run = HookRun {
            name: format!("check {}", c.gate),
            command: c.command.clone(),
            cwd: self.inner.layout.root().to_owned(),
            env,
            timeout: Duration::from_millis(if c.timeout_ms == 0 { 300_000 } else { c.timeout_ms }),
            log_file: self.inner.layout.checks_dir().join(name),
        };
        let (code, tail) =
            ctx.interruptible(self.run_hook_process(&run, StepFailure::Check, &format!("check {}", c.gate))).await?;
        Ok(Done { exit_code: Some(code), output_tail: tail, ..Done::default() })
    }

    async fn run_hook(&self, ctx: &mut StepCtx<'_>, h: &RunHook) -> Result<Done, Failure> {
        let layout = &self.inner.layout;
        let svc = h.service.as_str();
        if !valid_component(svc) || !valid_component(&h.version) {
            return Err(Failure::internal(format!("invalid service or version {svc:?} {:?}", h.version)));
        }
        let mut deploy = match self.deploy_record(svc, &h.version) {
            Some(record) if layout.release_dir(svc, &h.version).is_dir() => record.deploy,
            _ => {
                let Some(artifact) = &h.artifact else {
                    return Err(Failure::new(
                        StepFailure::NoPrevious,
                        format!("{svc} {} is not kept on this host and the step gives no artifact", h.version),
                    ));
                };
                let d = Deploy {
                    service: svc.to_owned(),
                    version: h.version.clone(),
                    artifact: artifact.clone(),
                    run: Default::default(),
                    hooks: Default::default(),
                    health: Vec::new(),
                    healthy_for_ms: 0,
                    healthy_deadline_ms: 0,
                    hook_timeout_ms: h.timeout_ms,
                    stop_timeout_ms: 0,
                    migrate: false,
                    provides: BTreeMap::new(),
                };
                self.install(ctx, &d).await?;
                d
            }
        };
        deploy.hook_timeout_ms = h.timeout_ms;
        let out = self.hook(ctx, &deploy, h.hook, &h.command, deploy.hook_timeout()).await?;
        let (code, tail) = out.unwrap_or((0, String::new()));
        Ok(Done { exit_code: Some(code), output_tail: tail, ..Done::default() })
    }

    async fn bake(&self, ctx: &mut StepCtx<'_>, b: &Bake) -> Result<Done, Failure> {
        let svc = b.service.as_str();
        if !valid_component(svc) {
            return Err(Failure::internal(format!("invalid service name {svc:?}")));
        }
        let current = self.inner.layout.current_version(svc).ok().flatten().unwrap_or_default();
        if !b.version.is_empty() && current != b.version {
            return Err(Failure::new(
                StepFailure::Unhealthy,
                format!(
                    "expected {svc} {} to run, but current is {}",
                    b.version,
                    if current.is_empty() { "nothing" } else { &current }
                ),
            ));
        }
        let mut deploy = self
            .deploy_record(svc, &current)
            .map(|r| r.deploy)
            .ok_or_else(|| Failure::new(StepFailure::Unhealthy, format!("{svc} has no installed version")))?;
        if !b.health.is_empty() {
            deploy.health.clone_from(&b.health);
        }
        ctx.phase(
            StepPhase::Baking,
            format!("{} check(s) for {}", deploy.health.len(), fmt_duration(Duration::from_millis(b.duration_ms))),
        )
        .await?;
        let launch = self.launch_for(&deploy);
        let mut alive = self.liveness(svc, &launch);
        let checker = self.checker(&deploy);
        let health = ctx
            .interruptible(async {
                checker.bake(Duration::from_millis(b.duration_ms), &mut alive).await.map_err(Failure::from)
            })
            .await?;
        Ok(Done { health, ..Done::default() })
    }

    // ------------------------------------------------------------------ retention

    /// Deletes releases beyond `keep_releases`, never the current or previous one.
    fn prune_releases(&self, svc: &str) {
        let layout = &self.inner.layout;
        let keep = usize::try_from(self.inner.config.keep_releases.max(1)).unwrap_or(usize::MAX);
        let current = layout.current_version(svc).ok().flatten();
        let history = self.service_state(svc).history;
        let previous = ServiceState { format: STATE_FORMAT, history: history.clone(), activations: 0 }
            .previous(current.as_deref())
            .map(str::to_owned);
        let mut installed = layout.installed_versions(svc).unwrap_or_default();
        // Most recently activated first; never-activated ones last.
        installed.sort_by_key(|v| std::cmp::Reverse(history.iter().rposition(|h| h == v)));
        let mut kept = 0usize;
        for version in installed {
            let protected = Some(&version) == current.as_ref() || Some(&version) == previous.as_ref();
            if protected || kept < keep {
                kept += 1;
                continue;
            }
            let dir = layout.release_dir(svc, &version);
            match fs::remove_dir_all(&dir) {
                Ok(()) => {
                    let _ = layout::remove_file_if_exists(&layout.deploy_record(svc, &version));
                    let _ = layout::remove_file_if_exists(&layout.log_file(svc, &version));
                    tracing::info!(service = %svc, %version, "deleted an old release");
                }
                Err(e) => tracing::warn!(service = %svc, %version, error = %e, "cannot delete an old release"),
            }
        }
    }

    // ------------------------------------------------------------------ recovery

    async fn recover(&self) -> Result<Vec<StepResult>, ExecutorError> {
        let layout = &self.inner.layout;
        let driver = &self.inner.driver;
        let services =
            layout.services().map_err(|source| ExecutorError::DataDir { path: layout.services_dir(), source })?;
        let mut gone: HashMap<String, Launch> = HashMap::new();
        for svc in &services {
            match driver.adopt(svc) {
                Ok(Adoption::Gone(launch)) => {
                    gone.insert(svc.clone(), *launch);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(service = %svc, error = %e, "cannot re-adopt"),
            }
            // Downloads and unpack directories of interrupted steps.
            let _ = fs::remove_dir_all(layout.tmp_dir(svc));
        }
        let mut recovered = Vec::new();
        for mut record in self.inner.journal.in_progress()? {
            let Some(step) = record.step.clone() else {
                // Only tombstones have no step, and they are written finished.
                tracing::warn!(command_id = %record.command_id, "a journal record in progress has no step; closing it");
                record.state = RecordState::Done;
                record.updated_unix_ms = now_unix_ms();
                self.inner.journal.write(&record)?;
                continue;
            };
            // A step that starts or stops the service's process settles it itself; a
            // bake or a check only watched it, so its service is started below like any
            // other that died while the agent was down.
            if !matches!(step.action, Action::Bake(_) | Action::RunCheck(_))
                && let Some(svc) = step.action.service()
            {
                gone.remove(svc);
            }
            let result = self.resolve(&mut record, &step).await;
            tracing::warn!(command_id = %step.command_id, phase = %record.phase, outcome = ?result.outcome, reason = %result.reason, "resolved a step interrupted by an agent restart");
            record.state = RecordState::Done;
            record.updated_unix_ms = result.finished_unix_ms;
            record.result = Some(result.clone());
            self.inner.journal.write(&record)?;
            self.append_history_or_warn(&history::record_for(&step, self.finished_entry(&step, &result)));
            recovered.push(result);
        }
        // Services that should run but died while the agent was down.
        for (svc, launch) in gone {
            if layout.current_version(&svc).ok().flatten().as_deref() != Some(launch.version.as_str()) {
                continue;
            }
            match driver.start(&launch).await {
                Ok(status) => {
                    tracing::warn!(service = %svc, pid = status.pid, "restarted a service that died while the agent was down")
                }
                Err(e) => {
                    tracing::error!(service = %svc, error = %e, "cannot restart a service that died while the agent was down")
                }
            }
        }
        for svc in &services {
            if driver.status(svc).is_some_and(|s| s.is_running()) {
                driver.supervise(svc, true);
            }
        }
        Ok(recovered)
    }

    /// Resolves one step interrupted by an agent crash.
    async fn resolve(&self, record: &mut JournalRecord, step: &Step) -> StepResult {
        let phase = record.phase;
        let mut result = StepResult::new(step, StepOutcome::Failed, record.started_unix_ms);
        result.failure = Some(StepFailure::Internal);
        result.reason = if record.detail.is_empty() {
            format!("agent restarted during {phase}")
        } else {
            format!("agent restarted during {phase} ({})", record.detail)
        };
        let layout = &self.inner.layout;
        let driver = &self.inner.driver;
        match &step.action {
            Action::Deploy(_) | Action::Rollback(_) => {
                let svc = step.action.service().unwrap_or_default().to_owned();
                if let Some(prior) = record.prior.clone() {
                    let history = self.service_state(&svc).history;
                    let completed = history.last() == Some(&prior.target)
                        && layout.current_version(&svc).ok().flatten().as_deref() == Some(prior.target.as_str())
                        && driver.status(&svc).is_some_and(|s| s.is_running() && s.version == prior.target)
                        && phase == StepPhase::CheckingHealth
                        && self.service_state(&svc).activations > prior.activations;
                    if completed {
                        driver.supervise(&svc, true);
                        result.outcome = StepOutcome::Succeeded;
                        result.failure = None;
                        result.reason =
                            format!("completed before the agent restarted ({} is active and healthy)", prior.target);
                    } else {
                        let stop_timeout = match &step.action {
                            Action::Deploy(d) => d.stop_timeout(),
                            _ => Duration::from_secs(10),
                        };
                        if let Err(e) = self.put_back(&svc, &prior, stop_timeout).await {
                            result.reason.push_str(&format!(
                                "; putting {svc} back on {} failed: {e}",
                                prior.version.as_deref().unwrap_or("nothing")
                            ));
                        }
                    }
                }
                result.service = Some(self.instance(&svc));
            }
            Action::Stop(s) => {
                if !driver.status(&s.service).is_some_and(|st| st.is_running()) {
                    result.outcome = StepOutcome::Succeeded;
                    result.failure = None;
                    result.reason = format!("{} was stopped before the agent restarted", s.service);
                }
                result.service = Some(self.instance(&s.service));
            }
            Action::RunHook(h) => {
                driver.kill_leftovers(&h.service, &layout.release_dir(&h.service, &h.version));
            }
            Action::RunCheck(_) | Action::Bake(_) => {}
        }
        result.finished_unix_ms = now_unix_ms();
        result
    }
}

fn validate_deploy(d: &Deploy) -> Result<(), Failure> {
    if !valid_component(&d.service) {
        return Err(Failure::internal(format!("invalid service name {:?}", d.service)));
    }
    if !valid_component(&d.version) {
        return Err(Failure::internal(format!(
            "invalid version {:?} (letters, digits, `.`, `_`, `+`, `-`)",
            d.version
        )));
    }
    if d.run.command.trim().is_empty() {
        return Err(Failure::internal("the deploy has no run command"));
    }
    if matches!(
        d.health.iter().find_map(|c| match &c.probe {
            Probe::Http { url, .. } if url.is_empty() => Some(()),
            _ => None,
        }),
        Some(())
    ) {
        return Err(Failure::internal("an http health check has no URL"));
    }
    Ok(())
}

fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .take(120)
        .collect()
}

fn internal_result(reason: &str) -> StepResult {
    StepResult {
        command_id: String::new(),
        term: 0,
        outcome: StepOutcome::Failed,
        failure: Some(StepFailure::Internal),
        reason: reason.to_owned(),
        health: Vec::new(),
        service: None,
        exit_code: None,
        output_tail: String::new(),
        started_unix_ms: 0,
        finished_unix_ms: now_unix_ms(),
        replayed: false,
    }
}

impl From<DriverError> for Failure {
    fn from(e: DriverError) -> Self {
        Self::internal(e.to_string())
    }
}
