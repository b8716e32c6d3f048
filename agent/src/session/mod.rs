//! The agent's session with the coordinators: one `flotilla.v1.AgentLink.Session`
//! stream at a time, dialled out over mutual TLS (plaintext only with `--insecure`).
//!
//! The protocol (`proto/flotilla/v1/agent.proto`): the agent sends `Register` first; a
//! coordinator that is not the leader answers `LeaderHint` and ends the stream, and the
//! agent dials the leader (or, without a known leader, the next coordinator); the
//! leader answers `Welcome`, after which the agent heartbeats every
//! `heartbeat_interval_ms`, executes the `Step`s it receives (at most once per command
//! id and never for a lower term: the executor's journal sees to that), streams
//! `StepProgress` per phase and a `StepResult` at the end, stops a step on `Cancel`,
//! and re-sends every result until a `ResultAck` covers it.
//!
//! - **A cancel of a step not received yet** (the agent was away when a rollback
//!   cancelled it) journals a tombstone before the session reads its next message, so
//!   that the step, arriving later on this stream or another, is answered `Cancelled`
//!   (replayed) and never runs. The tombstone's own result (`Cancelled`, `cancelled
//!   before it was received: <reason>`, the `Cancel`'s term) is sent at once and re-sent
//!   until acknowledged, like any result. A cancel of a finished step changes nothing;
//!   one from a term below the highest seen is ignored.
//!
//! - **Steps outlive sessions.** A step runs on its own task; a session that breaks
//!   meanwhile does not stop it. Its progress is best effort (dropped while no session
//!   is open); its result is kept in the [`outbox`] and sent on the next session.
//! - **Acknowledgements are durable.** A `ResultAck` is written to the step journal;
//!   results the journal does not show acknowledged are loaded at start and re-sent,
//!   so a restarted agent still delivers them.
//! - **Reconnects** back off exponentially with full jitter ([`backoff`]: 100 ms
//!   doubling to 5 s by default), reset after a welcomed session that lasted 10 s or
//!   was the first in a newer term;
//!   the delay grows once per pass over the coordinators that all failed, not per
//!   refused dial, so a dead leader's address does not slow the way to the new one. A
//!   protocol mismatch (FAILED_PRECONDITION) is logged with both versions and retried
//!   slowly (about a minute): it needs an upgrade, not a retry storm.
//! - **Bounded memory.** Messages to the coordinator go through a queue of
//!   [`LinkConfig::outgoing_capacity`] messages. The session loop never waits on it:
//!   when it is full, progress events are dropped (they are best effort), results stay
//!   in the outbox for the next attempt, and a heartbeat is skipped; after
//!   [`MAX_STALLED_HEARTBEATS`] skipped heartbeats in a row the session is ended and
//!   dialled again (the stream is stuck). A few slots are kept free of results for
//!   heartbeats. Events from steps to the session loop go through a bounded channel
//!   too (progress dropped when full; a result waits for room, and is journaled anyway).
//! - **A silent coordinator is left.** The session's connection sends HTTP/2 pings every
//!   [`KEEP_ALIVE`] and ends when one is not answered within [`KEEP_ALIVE_TIMEOUT`]: a
//!   coordinator that froze (paused, or cut off by the network while its TCP peer
//!   stays quiet) is noticed within seconds, not when the kernel gives the connection
//!   up, and the agent dials the others, where a new leader took over.

pub mod backoff;
mod outbox;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use flotilla_net::{ClientSecurity, TlsMaterial};
use flotilla_proto::v1 as pb;
use flotilla_proto::v1::agent_link_client::AgentLinkClient;
use flotilla_proto::v1::agent_message::Msg as Out;
use flotilla_proto::v1::coordinator_message::Msg as In;
use flotilla_proto::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, coordinator_supported};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};

use self::backoff::{Backoff, BackoffPolicy, Passes, Targets, jitter};
use self::outbox::Outbox;
use crate::AgentConfig;
use crate::config::AgentSecurity;
use crate::driver::Driver;
use crate::driver::process::ProcessDriver;
use crate::executor::{Cancellation, Executor, ExecutorConfig, StepHandle};
use crate::identity::{self, IdentityDir};
use crate::layout::now_unix_ms;
use crate::step::{ServiceInstance, Step, StepFailure, StepOutcome, StepProgress, StepResult};

/// Capabilities announced in `Register.version.features`.
pub const FEATURES: [&str; 4] = ["driver.process", "artifact.file", "artifact.http", "step.cancel"];

/// Default of [`LinkConfig::outgoing_capacity`].
pub const DEFAULT_OUTGOING_CAPACITY: usize = 256;

/// Queue slots kept free of results, for heartbeats and progress.
const RESERVED_SLOTS: usize = 16;

/// Heartbeats skipped in a row (outgoing queue full) before the session is abandoned.
pub const MAX_STALLED_HEARTBEATS: u32 = 3;

/// The heartbeat interval when `Welcome` gives none.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);

/// The shortest heartbeat interval honoured.
const MIN_HEARTBEAT: Duration = Duration::from_millis(10);

/// A result unacknowledged this long on one session is sent again on it.
const RESEND_AFTER: Duration = Duration::from_secs(30);

/// Capacity of the channel from step tasks to the session loop.
const EVENT_CAPACITY: usize = 256;

/// How often the session's connection pings the coordinator.
pub const KEEP_ALIVE: Duration = Duration::from_secs(2);

/// How long a ping may go unanswered before the session is given up.
pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// How the agent reaches the coordinators.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// This host's id.
    pub host_id: String,
    /// This host's labels.
    pub labels: BTreeMap<String, String>,
    /// The coordinators, `HOST:PORT`, dialled in turn.
    pub coordinators: Vec<String>,
    /// TLS material, or plaintext.
    pub security: ClientSecurity,
    /// Reconnect backoff.
    pub backoff: BackoffPolicy,
    /// The delay (before jitter: half to all of it) after a protocol mismatch.
    pub mismatch_retry: Duration,
    /// How long a coordinator may take to answer `Register`.
    pub welcome_timeout: Duration,
    /// Messages the outgoing queue holds.
    pub outgoing_capacity: usize,
}

impl LinkConfig {
    /// The link settings of a validated agent configuration.
    pub fn from_agent(config: &AgentConfig, security: ClientSecurity) -> Self {
        Self {
            host_id: config.host_id().to_owned(),
            labels: config.labels.clone(),
            coordinators: config.coordinators.clone(),
            security,
            backoff: BackoffPolicy::default(),
            mismatch_retry: Duration::from_secs(60),
            welcome_timeout: Duration::from_secs(30),
            outgoing_capacity: DEFAULT_OUTGOING_CAPACITY,
        }
    }
}

/// Runs the agent daemon until `shutdown` turns true: loads the TLS material, opens the
/// executor (re-adopting services, resolving interrupted steps) and holds the session.
/// Services keep running when this returns.
pub async fn run_agent(config: &AgentConfig, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let security = match config.security() {
        Ok(AgentSecurity::Files(files)) => ClientSecurity::Tls(TlsMaterial::load(&files)?),
        Ok(AgentSecurity::Insecure) => {
            tracing::warn!("dialling the coordinators in plaintext (--insecure)");
            ClientSecurity::Insecure
        }
        Ok(AgentSecurity::Enrolled) => {
            let dir = IdentityDir::new(config.identity_dir());
            let material =
                identity::enrolled(&dir, config.host_id(), &config.coordinators, config.join.as_deref()).await?;
            tokio::spawn(identity::renew_forever(
                dir,
                material.clone(),
                config.host_id().to_owned(),
                config.coordinators.clone(),
                shutdown.clone(),
            ));
            ClientSecurity::Tls(material)
        }
        Err(problem) => anyhow::bail!("{problem}"),
    };
    if let ClientSecurity::Tls(material) = &security {
        tokio::spawn(reload_on_sighup(material.clone(), shutdown.clone()));
    }
    let (executor, recovered) = Executor::open(ExecutorConfig::from_agent(config)).await?;
    if !recovered.is_empty() {
        tracing::warn!(steps = recovered.len(), "steps interrupted by the last agent stop were resolved");
    }
    let link = Link::new(LinkConfig::from_agent(config, security), executor, shutdown)?;
    link.run().await;
    Ok(())
}

/// Reloads the TLS files on SIGHUP (certificates replaced by hand or by a CA
/// rotation); the next connection uses them, the open session goes on.
async fn reload_on_sighup(material: TlsMaterial, mut shutdown: watch::Receiver<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot install the SIGHUP handler; certificates reload only at restart");
        return;
    };
    loop {
        tokio::select! {
            _ = hangups.recv() => match material.reload() {
                Ok(()) => tracing::info!(expires = %flotilla_net::pki::format_unix(material.own_certificate().not_after), "SIGHUP: TLS files reloaded"),
                Err(e) => tracing::error!("SIGHUP: the TLS files could not be reloaded, the old ones stay in use: {e}"),
            },
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// What a step task tells the session loop.
#[derive(Debug)]
enum StepEvent {
    Progress(StepProgress),
    Finished(StepResult),
}

/// How one session ended.
#[derive(Debug)]
enum SessionEnd {
    /// The agent is stopping.
    Shutdown,
    /// Not the leader: go there (`leader_id` 0 / empty address: unknown).
    Hint { leader_id: u64, addr: String },
    /// The two sides speak different protocol revisions.
    Mismatch(String),
    /// Anything else (connect failure, stream error, closed stream).
    Ended { welcomed: bool, why: String },
}

fn ended(welcomed: bool, why: impl Into<String>) -> SessionEnd {
    SessionEnd::Ended { welcomed, why: why.into() }
}

fn status_end(status: &Status, welcomed: bool) -> SessionEnd {
    if status.code() == Code::FailedPrecondition {
        return SessionEnd::Mismatch(status.message().to_owned());
    }
    if let Some(hint) = flotilla_proto::status::leader_hint(status) {
        return SessionEnd::Hint { leader_id: hint.leader_id, addr: hint.leader_addr };
    }
    ended(welcomed, format!("{:?}: {}", status.code(), status.message()))
}

async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // An error means the sender is gone: stop too.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// One open session, after `Welcome`.
struct Live {
    tx: mpsc::Sender<pb::AgentMessage>,
    session: u64,
    seq: u64,
    last_inventory: Vec<ServiceInstance>,
    stalled: u32,
}

/// The agent's link to the coordinators (see the module documentation).
pub struct Link<D: Driver = ProcessDriver> {
    config: LinkConfig,
    executor: Executor<D>,
    instance_id: String,
    outbox: Outbox,
    events_tx: mpsc::Sender<StepEvent>,
    events: mpsc::Receiver<StepEvent>,
    shutdown: watch::Receiver<bool>,
    targets: Targets,
    sessions: u64,
    /// The term of the last `Welcome` (0 before the first).
    welcomed_term: u64,
}

impl<D: Driver> std::fmt::Debug for Link<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("host_id", &self.config.host_id)
            .field("instance_id", &self.instance_id)
            .field("unacknowledged", &self.outbox.len())
            .finish_non_exhaustive()
    }
}

impl<D: Driver> Link<D> {
    /// A link that will feed `executor`; unacknowledged results in its journal are
    /// queued to be sent. It stops when `shutdown` turns true.
    pub fn new(config: LinkConfig, executor: Executor<D>, shutdown: watch::Receiver<bool>) -> anyhow::Result<Self> {
        anyhow::ensure!(!config.coordinators.is_empty(), "no coordinator to dial");
        let mut outbox = Outbox::default();
        for result in executor.unacked_results()? {
            outbox.insert(result, true);
        }
        if !outbox.is_empty() {
            tracing::info!(results = outbox.len(), "results not acknowledged yet will be sent again");
        }
        let (events_tx, events) = mpsc::channel(EVENT_CAPACITY);
        let instance_id = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        Ok(Self {
            targets: Targets::new(config.coordinators.clone()),
            welcomed_term: 0,
            config,
            executor,
            instance_id,
            outbox,
            events_tx,
            events,
            shutdown,
            sessions: 0,
        })
    }

    /// This process's random instance id (sent in `Register`).
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Holds a session with the leader, reconnecting as needed, until shutdown.
    pub async fn run(mut self) {
        tracing::info!(host_id = %self.config.host_id, instance_id = %self.instance_id, coordinators = ?self.config.coordinators, "agent link starting");
        let mut backoff = Backoff::new(self.config.backoff);
        let mut passes = Passes::new(self.config.coordinators.len());
        // The leader the last hint named: a hint naming another one (a new leader was
        // elected) is followed at once, since the lease the old leader held on this host
        // is running out on the new one; the same one again (a follower that has not yet
        // noticed its leader died, or hints going round in circles) counts as a failed
        // dial of the pass.
        let mut last_hint: Option<u64> = None;
        while let Some(addr) = self.targets.next_addr() {
            let started = Instant::now();
            let term_before = self.welcomed_term;
            let end = self.session(&addr).await;
            let delay = match end {
                SessionEnd::Shutdown => break,
                SessionEnd::Hint { leader_id, addr: leader } if leader_id != 0 && !leader.is_empty() => {
                    tracing::info!(coordinator = %addr, leader_id, leader = %leader, "not the leader; following the hint");
                    self.targets.hint(leader);
                    if last_hint.replace(leader_id) == Some(leader_id) {
                        passes.failed(&mut backoff)
                    } else {
                        Duration::ZERO
                    }
                }
                SessionEnd::Hint { .. } => {
                    tracing::info!(coordinator = %addr, "not the leader and no leader known; trying the next coordinator");
                    passes.failed(&mut backoff)
                }
                SessionEnd::Mismatch(theirs) => {
                    let delay = self.config.mismatch_retry / 2 + jitter(self.config.mismatch_retry / 2);
                    tracing::error!(
                        coordinator = %addr,
                        agent_protocol = PROTOCOL_VERSION,
                        agent_min_protocol = MIN_PROTOCOL_VERSION,
                        agent_version = env!("CARGO_PKG_VERSION"),
                        coordinator_says = %theirs,
                        retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "protocol mismatch: this agent speaks flotilla.v1 protocol {PROTOCOL_VERSION} (and follows coordinators speaking {MIN_PROTOCOL_VERSION} or newer); upgrade the agent or the coordinators; retrying slowly"
                    );
                    delay
                }
                SessionEnd::Ended { welcomed: true, why } => {
                    last_hint = None;
                    passes.reset();
                    // A session that lasted, or the first in a newer term (a failover
                    // completed since the last one), starts the backoff over: the next
                    // loss is a new incident, not more of the last one.
                    if started.elapsed() >= backoff.policy().stable_after || self.welcomed_term > term_before {
                        backoff.reset();
                    }
                    tracing::warn!(coordinator = %addr, reason = %why, "session ended");
                    backoff.next_delay()
                }
                SessionEnd::Ended { welcomed: false, why } => {
                    tracing::warn!(coordinator = %addr, reason = %why, "session ended");
                    passes.failed(&mut backoff)
                }
            };
            tracing::info!(delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), "reconnecting");
            if self.drive(tokio::time::sleep(delay)).await.is_none() {
                break;
            }
        }
        tracing::info!(unacknowledged = self.outbox.len(), running = ?self.executor.running_command_ids(), "agent link stopped");
    }

    /// Drives `work` while handling step events (no session open) and watching for
    /// shutdown; `None` on shutdown.
    async fn drive<F: Future>(&mut self, work: F) -> Option<F::Output> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return Some(out),
                Some(event) = self.events.recv() => self.on_event(event, None),
                () = stopped(&mut self.shutdown) => return None,
            }
        }
    }

    /// One session with `addr`, from dialling to its end.
    async fn session(&mut self, addr: &str) -> SessionEnd {
        let endpoint = match flotilla_net::endpoint(addr, &self.config.security) {
            Ok(endpoint) => endpoint.configure(|e| {
                e.http2_keep_alive_interval(KEEP_ALIVE)
                    .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
                    .keep_alive_while_idle(true)
            }),
            Err(e) => return ended(false, e.to_string()),
        };
        tracing::debug!(coordinator = %addr, "dialling");
        let channel = match self.drive(endpoint.connect()).await {
            None => return SessionEnd::Shutdown,
            Some(Err(e)) => return ended(false, format!("connecting: {}", flotilla_net::errors::chain(&e))),
            Some(Ok(channel)) => channel,
        };
        self.sessions += 1;
        let (tx, rx) = mpsc::channel(self.config.outgoing_capacity.max(RESERVED_SLOTS + 1));
        let (register, inventory) = self.register();
        if tx.try_send(register).is_err() {
            return ended(false, "the outgoing queue refused Register");
        }
        let mut client = AgentLinkClient::new(channel);
        let opened = tokio::time::timeout(self.config.welcome_timeout, client.session(ReceiverStream::new(rx)));
        let mut inbound = match self.drive(opened).await {
            None => return SessionEnd::Shutdown,
            Some(Err(_)) => {
                return ended(false, format!("the stream was not accepted within {:?}", self.config.welcome_timeout));
            }
            Some(Ok(Err(status))) => return status_end(&status, false),
            Some(Ok(Ok(response))) => response.into_inner(),
        };
        let first = self.drive(tokio::time::timeout(self.config.welcome_timeout, inbound.message())).await;
        let welcome = match first {
            None => return SessionEnd::Shutdown,
            Some(Err(_)) => {
                return ended(false, format!("no Welcome within {:?} of Register", self.config.welcome_timeout));
            }
            Some(Ok(Err(status))) => return status_end(&status, false),
            Some(Ok(Ok(None))) => return ended(false, "the coordinator ended the stream before answering Register"),
            Some(Ok(Ok(Some(message)))) => match message.msg {
                Some(In::Welcome(welcome)) => welcome,
                Some(In::LeaderHint(hint)) => {
                    return SessionEnd::Hint { leader_id: hint.leader_id, addr: hint.leader_addr };
                }
                other => {
                    return ended(
                        false,
                        format!("protocol error: expected Welcome or LeaderHint first, got {}", name(other.as_ref())),
                    );
                }
            },
        };
        match &welcome.version {
            Some(v) if !coordinator_supported(v.protocol_version) => {
                return SessionEnd::Mismatch(format!(
                    "the coordinator speaks protocol {} (software {}), older than this agent accepts; upgrade the coordinators first, then the agents",
                    v.protocol_version, v.software_version
                ));
            }
            Some(_) => {}
            None => tracing::warn!(coordinator = %addr, "Welcome carries no version; assuming it matches"),
        }
        self.welcomed_term = self.welcomed_term.max(welcome.term);
        let interval = match welcome.heartbeat_interval_ms {
            0 => DEFAULT_HEARTBEAT,
            ms => Duration::from_millis(ms).max(MIN_HEARTBEAT),
        };
        tracing::info!(
            coordinator = %addr,
            leader_id = welcome.node_id,
            term = welcome.term,
            lease_ms = welcome.lease_ms,
            heartbeat_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            unacknowledged = self.outbox.len(),
            "session established"
        );
        let mut live = Live { tx, session: self.sessions, seq: 0, last_inventory: inventory, stalled: 0 };
        self.flush(&mut live);
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(message)) => {
                        if let Some(end) = self.on_message(message, &mut live).await {
                            return end;
                        }
                    }
                    Ok(None) => return ended(true, "the coordinator ended the session"),
                    Err(status) => return status_end(&status, true),
                },
                Some(event) = self.events.recv() => self.on_event(event, Some(&mut live)),
                _ = ticker.tick() => {
                    if let Err(why) = self.heartbeat(&mut live) {
                        return ended(true, why);
                    }
                }
                () = stopped(&mut self.shutdown) => return SessionEnd::Shutdown,
            }
        }
    }

    /// `Register`, and the inventory it carries.
    fn register(&self) -> (pb::AgentMessage, Vec<ServiceInstance>) {
        let inventory = self.executor.inventory();
        let register = pb::Register {
            host_id: self.config.host_id.clone(),
            labels: self.config.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            version: Some(flotilla_proto::version_info(
                env!("CARGO_PKG_VERSION"),
                FEATURES.iter().map(|f| (*f).to_owned()),
            )),
            instance_id: self.instance_id.clone(),
            inventory: inventory.iter().cloned().map(Into::into).collect(),
            highest_term: self.executor.highest_term(),
            running_command_ids: self.executor.running_command_ids(),
        };
        (pb::AgentMessage { msg: Some(Out::Register(register)) }, inventory)
    }

    /// Handles one message; the next is read only once this returns (a cancel's
    /// tombstone is durable before a step after it is looked at).
    async fn on_message(&mut self, message: pb::CoordinatorMessage, live: &mut Live) -> Option<SessionEnd> {
        match message.msg {
            Some(In::Step(step)) => {
                let (command_id, term) = (step.command_id.clone(), step.term);
                match Step::try_from(step) {
                    Ok(step) => self.start_step(step),
                    Err(e) => {
                        tracing::error!(%command_id, error = %e, "refusing an invalid step");
                        self.outbox.insert(invalid_step(command_id, term, &e.to_string()), false);
                        self.flush(live);
                    }
                }
            }
            Some(In::Cancel(cancel)) => self.on_cancel(cancel, live).await,
            Some(In::Ack(ack)) => {
                for id in &ack.command_ids {
                    self.outbox.ack(id);
                }
                // Durably, off the session loop (one fsync per record).
                let executor = self.executor.clone();
                tokio::task::spawn_blocking(move || {
                    for id in &ack.command_ids {
                        match executor.mark_acked(id) {
                            Ok(_) => tracing::debug!(command_id = %id, "result acknowledged"),
                            Err(e) => {
                                tracing::warn!(command_id = %id, error = %e, "cannot record an acknowledgement; the result will be sent again after a restart");
                            }
                        }
                    }
                });
                self.flush(live);
            }
            Some(In::LeaderHint(hint)) => {
                return Some(SessionEnd::Hint { leader_id: hint.leader_id, addr: hint.leader_addr });
            }
            Some(In::Welcome(_)) => tracing::warn!("ignoring a second Welcome on the session"),
            None => tracing::warn!("ignoring an empty coordinator message"),
        }
        None
    }

    /// Stops the step, or journals a tombstone for a step not received (off the async
    /// threads, but before the session reads on) and queues its result.
    async fn on_cancel(&mut self, cancel: pb::Cancel, live: &mut Live) {
        let executor = self.executor.clone();
        let (id, term, reason) = (cancel.command_id.clone(), cancel.term, cancel.reason.clone());
        let done = tokio::task::spawn_blocking(move || executor.cancel_step(&id, term, &reason)).await;
        match done {
            Ok(Ok(Cancellation::InFlight)) => {}
            Ok(Ok(Cancellation::Tombstoned(result))) => {
                self.outbox.insert(*result, true);
                self.flush(live);
            }
            Ok(Ok(Cancellation::Finished)) => {
                tracing::info!(command_id = %cancel.command_id, reason = %cancel.reason, "cancel of a finished step: it keeps its result");
            }
            Ok(Ok(Cancellation::Refused { .. })) => {}
            Ok(Err(e)) => {
                tracing::error!(command_id = %cancel.command_id, reason = %cancel.reason, error = %e, "cannot journal the cancel of a step not received; should the step arrive, it runs");
            }
            Err(e) => {
                tracing::error!(command_id = %cancel.command_id, error = %e, "the cancel's task failed");
            }
        }
    }

    /// Runs `step` on its own task, forwarding its progress and result to the loop.
    fn start_step(&self, step: Step) {
        tracing::info!(command_id = %step.command_id, term = step.term, action = step.action.name(), service = ?step.action.service(), "step received");
        let handle = self.executor.execute(step);
        tokio::spawn(forward(handle, self.events_tx.clone()));
    }

    fn on_event(&mut self, event: StepEvent, live: Option<&mut Live>) {
        match event {
            StepEvent::Progress(progress) => {
                if let Some(live) = live {
                    let message = pb::AgentMessage { msg: Some(Out::Progress(progress.into())) };
                    if let Err(TrySendError::Full(_)) = live.tx.try_send(message) {
                        tracing::debug!("outgoing queue full: a progress event was dropped");
                    }
                }
            }
            StepEvent::Finished(result) => {
                let durable = self.executor.is_journaled(&result.command_id);
                self.outbox.insert(result, durable);
                if let Some(live) = live {
                    self.flush(live);
                }
            }
        }
    }

    /// Sends the results that are due, leaving room for heartbeats.
    fn flush(&mut self, live: &mut Live) {
        let budget = live.tx.capacity().saturating_sub(RESERVED_SLOTS);
        for result in self.outbox.take_due(live.session, Instant::now(), RESEND_AFTER, budget) {
            let message = pb::AgentMessage { msg: Some(Out::Result(result.into())) };
            if live.tx.try_send(message).is_err() {
                // Only when the stream is closing; the next session sends it again.
                break;
            }
        }
    }

    fn heartbeat(&mut self, live: &mut Live) -> Result<(), String> {
        let inventory = self.executor.inventory();
        let changed = inventory != live.last_inventory;
        let heartbeat = pb::Heartbeat {
            seq: live.seq + 1,
            sent_unix_ms: now_unix_ms(),
            running_command_ids: self.executor.running_command_ids(),
            inventory: changed.then(|| pb::Inventory { services: inventory.iter().cloned().map(Into::into).collect() }),
        };
        match live.tx.try_send(pb::AgentMessage { msg: Some(Out::Heartbeat(heartbeat)) }) {
            Ok(()) => {
                live.seq += 1;
                live.stalled = 0;
                if changed {
                    live.last_inventory = inventory;
                }
            }
            Err(TrySendError::Full(_)) => {
                live.stalled += 1;
                tracing::warn!(stalled = live.stalled, "outgoing queue full: heartbeat skipped");
                if live.stalled >= MAX_STALLED_HEARTBEATS {
                    return Err(format!("the outgoing queue stayed full for {} heartbeats", live.stalled));
                }
            }
            Err(TrySendError::Closed(_)) => return Err("the stream's sending side closed".to_owned()),
        }
        self.flush(live);
        Ok(())
    }
}

/// Forwards a step's progress (best effort) and result (waits for room) to the loop.
async fn forward(handle: StepHandle, events: mpsc::Sender<StepEvent>) {
    let StepHandle { mut progress, result } = handle;
    while let Some(p) = progress.recv().await {
        if events.try_send(StepEvent::Progress(p)).is_err() {
            tracing::debug!("event queue full: a progress event was dropped");
        }
    }
    match result.await {
        Ok(result) => {
            let _ = events.send(StepEvent::Finished(result)).await;
        }
        Err(_) => tracing::error!("a step's task ended without a result; it is resolved at the next start"),
    }
}

/// The answer to a step that cannot be read (not journaled: it never runs).
fn invalid_step(command_id: String, term: u64, why: &str) -> StepResult {
    let mut result =
        StepResult::ended_at_once(command_id, term, StepOutcome::Failed, format!("invalid step: {why}"), now_unix_ms());
    result.failure = Some(StepFailure::Internal);
    result
}

fn name(msg: Option<&In>) -> &'static str {
    match msg {
        Some(In::Welcome(_)) => "Welcome",
        Some(In::LeaderHint(_)) => "LeaderHint",
        Some(In::Step(_)) => "Step",
        Some(In::Cancel(_)) => "Cancel",
        Some(In::Ack(_)) => "ResultAck",
        None => "an empty message",
    }
}
