//! The agent hub: the live `AgentLink` sessions on the leader, their leases, and the
//! channel through which the release engine talks to agents.
//!
//! Design:
//! - One session per host; a second session for the same host replaces the first.
//!   Each session has a bounded queue of outgoing messages; [`AgentHub::send`] never
//!   waits (a full queue closes the session, the agent reconnects).
//! - Liveness is a lease per host held by the leader (default 10 s, renewed by any
//!   message, agents heartbeat every 2 s). Only transitions go through Raft: a
//!   registration of an unknown, lost or changed host proposes `AgentSeen`, an
//!   inventory change in a heartbeat proposes `InventoryChanged`, and an expired lease
//!   proposes `AgentLost` (and closes the session). Proposals about one host are
//!   serialized by a per-host lock, so a loss and a re-registration never cross.
//! - The hub follows the node's leadership (`Node::leadership`: the Raft leader that
//!   still hears from a quorum of coordinators): on becoming leader it
//!   first makes its applied state current (`ensure_linearizable`), then starts a lease
//!   for every host the state says is online (a host that never reconnects is marked
//!   lost one lease later); on losing leadership, or the quorum, every session gets a
//!   `LeaderHint` (empty when no other leader is known: the agent tries the other
//!   coordinators) and is closed. A follower answers every session with a `LeaderHint`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use flotilla_proto::v1::{self, coordinator_message::Msg};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tonic::Status;

use super::wire::Liveness;
use crate::error::CoordinatorError;
use crate::leadership::Leadership;
use crate::node::{Node, now_unix_ms};
use crate::state::{FleetOp, Op};

/// Lease and queue settings of the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubSettings {
    /// How long the leader keeps a host's lease without hearing from its agent.
    /// Default 10 s.
    pub lease: Duration,
    /// How often agents send a heartbeat (told in `Welcome`). Default 2 s.
    pub heartbeat_interval: Duration,
    /// Messages queued per session before it counts as stuck and is closed. Default 1024.
    pub session_buffer: usize,
    /// Reports queued for the subscriber. Default 4096.
    pub report_buffer: usize,
}

impl Default for HubSettings {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(2),
            session_buffer: 1024,
            report_buffer: 4096,
        }
    }
}

impl HubSettings {
    /// How often leases are checked: a quarter lease or a heartbeat, whichever is shorter.
    fn check_interval(&self) -> Duration {
        (self.lease / 4).min(self.heartbeat_interval).max(Duration::from_millis(5))
    }

    fn ms(d: Duration) -> u64 {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
    }
}

/// A message could not be handed to a host's agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("host {host} is not connected to this coordinator: {reason}")]
pub struct HostNotConnected {
    /// The host.
    pub host: String,
    /// Why (`no session`, `its send queue is full`).
    pub reason: String,
}

/// What agents tell the leader, for the release engine ([`AgentHub::subscribe`]).
// Reports are moved once through a channel; the shape is the engine's contract.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum AgentReport {
    /// A session was accepted (`Welcome` sent). Sent for every new session, also one
    /// that replaced an earlier session of the same host.
    Connected {
        /// The host.
        host: String,
        /// The agent process's instance id (a new one means the agent restarted).
        instance_id: String,
        /// Steps the agent says it is executing now.
        running_command_ids: Vec<String>,
    },
    /// A step moved to a new phase (best effort: dropped when the queue is full).
    Progress {
        /// The host.
        host: String,
        /// The progress.
        progress: v1::StepProgress,
    },
    /// A step finished (or a repeat was answered from the agent's journal). The agent
    /// re-sends it until [`AgentHub::ack`] confirms it was committed.
    Result {
        /// The host.
        host: String,
        /// The result.
        result: v1::StepResult,
    },
    /// The host's session ended (stream closed, lease expired, queue full, or this
    /// node stopped leading). Not sent when a newer session replaced it.
    Disconnected {
        /// The host.
        host: String,
    },
}

/// One item of a session's outgoing stream.
pub(crate) type Outbound = Result<v1::CoordinatorMessage, Status>;

/// An item as a session's queue holds it: boxed, because the queue allocates its
/// first block of 32 slots when the session opens, and 32 unboxed items (576 bytes
/// each) were 18 KiB of every idle agent's session.
pub(crate) type Queued = Box<Outbound>;

/// Why the hub closes a session.
#[derive(Debug)]
pub(crate) enum Close {
    /// A newer session of the same host took its place.
    Replaced,
    /// No message within the lease.
    LeaseExpired,
    /// Its send queue was full.
    Overloaded,
    /// This node does not lead (any more): tell the agent where to go.
    NotLeader(v1::LeaderHint),
    /// The agent may no longer connect (its enrolment was forgotten): end the session
    /// with this status.
    Refused(Status),
}

/// A live session as the hub holds it.
#[derive(Debug)]
struct SessionHandle {
    id: u64,
    tx: mpsc::Sender<Queued>,
    close: Option<oneshot::Sender<Close>>,
}

impl SessionHandle {
    fn close(mut self, why: Close) {
        if let Some(close) = self.close.take() {
            let _ = close.send(why);
        }
    }
}

/// The leader's lease on a host.
#[derive(Debug, Clone, Copy)]
struct Lease {
    expires: Instant,
    last_seen_unix_ms: i64,
}

/// What the sessions, the lease checker and the leadership watcher share.
#[derive(Debug, Default)]
struct Shared {
    /// The term this node leads in, once its state is current; `None` when not leading.
    leader_term: Option<u64>,
    /// Set by [`AgentHub::shutdown`]: no new sessions.
    closed: bool,
    sessions: HashMap<String, SessionHandle>,
    leases: HashMap<String, Lease>,
}

struct Inner {
    node: Node,
    settings: HubSettings,
    shared: Mutex<Shared>,
    reports: Mutex<Option<mpsc::Sender<AgentReport>>>,
    host_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    ready: watch::Sender<Option<u64>>,
    next_session: AtomicU64,
}

/// The live agent sessions of this coordinator, and the release engine's way to reach
/// agents. Cheap to clone; every clone is the same hub.
#[derive(Clone)]
pub struct AgentHub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AgentHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentHub")
            .field("node", &self.inner.node.id())
            .field("settings", &self.inner.settings)
            .field("leader_term", &self.lock().leader_term)
            .finish_non_exhaustive()
    }
}

fn message(msg: Msg) -> v1::CoordinatorMessage {
    v1::CoordinatorMessage { msg: Some(msg) }
}

impl AgentHub {
    /// A hub for `node`; starts following its leadership and checking leases. Must be
    /// called inside a Tokio runtime. The background tasks end when every clone of the
    /// hub is dropped.
    pub fn start(node: Node, settings: HubSettings) -> Self {
        let leadership = node.leadership();
        let hub = Self {
            inner: Arc::new(Inner {
                node,
                settings,
                shared: Mutex::default(),
                reports: Mutex::default(),
                host_locks: Mutex::default(),
                ready: watch::Sender::new(None),
                next_session: AtomicU64::new(1),
            }),
        };
        tokio::spawn(watch_leadership(Arc::downgrade(&hub.inner), leadership));
        tokio::spawn(check_leases(Arc::downgrade(&hub.inner), hub.inner.settings.check_interval()));
        hub
    }

    /// The hub's settings.
    pub fn settings(&self) -> &HubSettings {
        &self.inner.settings
    }

    /// The node the hub serves.
    pub fn node(&self) -> &Node {
        &self.inner.node
    }

    /// Queues `step` on the host's session. Never waits: fails when the host has no
    /// session on this node, or when its queue is full (the session is then closed and
    /// the agent reconnects). A success means queued, not delivered: the step's
    /// `StepResult` (or the host's next `Connected` with its running command ids) says
    /// what became of it.
    pub fn send(&self, host: &str, step: v1::Step) -> Result<(), HostNotConnected> {
        self.deliver(host, Msg::Step(step))
    }

    /// Asks the host's agent to stop executing a step, or never to execute it when it
    /// has not received it (best effort: nothing happens when the host is not
    /// connected; the cancel is sent again when it is back).
    pub fn cancel(&self, host: &str, command_id: &str, term: u64, reason: &str) {
        let cancel = v1::Cancel { command_id: command_id.to_owned(), reason: reason.to_owned(), term };
        if let Err(e) = self.deliver(host, Msg::Cancel(cancel)) {
            tracing::debug!(%host, command_id, error = %e, "cancel not sent");
        }
    }

    /// Tells the host's agent that these results are committed, so it stops re-sending
    /// them (best effort: a host that is not connected re-sends them on its next
    /// session, and they are acknowledged again).
    pub fn ack(&self, host: &str, command_ids: Vec<String>) {
        if command_ids.is_empty() {
            return;
        }
        if let Err(e) = self.deliver(host, Msg::Ack(v1::ResultAck { command_ids })) {
            tracing::debug!(%host, error = %e, "ack not sent");
        }
    }

    /// The reports of every session, in a bounded channel for one consumer. A later
    /// call replaces the earlier subscriber (its receiver ends). Reports made while
    /// nobody subscribes are dropped, so subscribe first, then read
    /// [`AgentHub::connected_hosts`]. A result that cannot be queued within half a
    /// lease is dropped too (the agent re-sends it on its next session).
    pub fn subscribe(&self) -> mpsc::Receiver<AgentReport> {
        let (tx, rx) = mpsc::channel(self.inner.settings.report_buffer.max(1));
        *self.inner.reports.lock().unwrap_or_else(PoisonError::into_inner) = Some(tx);
        rx
    }

    /// Hosts with a live session on this node, ordered by host id.
    pub fn connected_hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self.lock().sessions.keys().cloned().collect();
        hosts.sort();
        hosts
    }

    /// Whether the host has a live session on this node.
    pub fn is_connected(&self, host: &str) -> bool {
        self.lock().sessions.contains_key(host)
    }

    /// The term this node leads in once its hub accepts sessions; `None` otherwise.
    pub fn leader_term(&self) -> Option<u64> {
        self.lock().leader_term
    }

    /// Where a host's agent is connected and when the leader last heard from it, for a
    /// host the state says is `online` or not. Exact on the leader; on another node an
    /// online host is reported connected to the current leader, last seen unknown (0).
    pub fn liveness(&self, host: &str, online: bool) -> Liveness {
        let shared = self.lock();
        if shared.leader_term.is_some() {
            return Liveness {
                connected_node_id: if shared.sessions.contains_key(host) { self.inner.node.id() } else { 0 },
                last_seen_unix_ms: shared.leases.get(host).map_or(0, |l| l.last_seen_unix_ms),
            };
        }
        drop(shared);
        let leader = self.inner.node.raft().server_metrics().borrow().current_leader;
        Liveness { connected_node_id: if online { leader.unwrap_or(0) } else { 0 }, last_seen_unix_ms: 0 }
    }

    /// Ends the host's session, if it has one here, with UNAUTHENTICATED and `why`:
    /// the agent's certificate is no longer good (its enrolment was forgotten).
    pub fn disconnect(&self, host: &str, why: &str) {
        let Some(session) = self.lock().sessions.remove(host) else { return };
        let status = CoordinatorError::unauthenticated(
            flotilla_proto::status::Reason::Unauthenticated,
            format!("the session of agent {host} was ended: {why}"),
        );
        session.close(Close::Refused(status.into()));
        self.report_now(AgentReport::Disconnected { host: host.to_owned() });
    }

    /// Stops accepting sessions and closes the open ones with a `LeaderHint` naming the
    /// leader when another node leads (after a hand-over), or none, so agents try the
    /// other coordinators. For a coordinator shutting down.
    pub fn shutdown(&self) {
        let closed = {
            let mut shared = self.lock();
            shared.closed = true;
            self.take_all(&mut shared)
        };
        let hint = self.leader_hint();
        tracing::info!(sessions = closed.len(), leader = hint.leader_id, "agent hub shutting down");
        for (host, session) in closed {
            session.close(Close::NotLeader(hint.clone()));
            self.report_now(AgentReport::Disconnected { host });
        }
    }

    // ------------------------------------------------------------------ internals

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.inner.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take_all(&self, shared: &mut Shared) -> Vec<(String, SessionHandle)> {
        shared.leader_term = None;
        shared.leases.clear();
        self.inner.ready.send_replace(None);
        shared.sessions.drain().collect()
    }

    fn deliver(&self, host: &str, msg: Msg) -> Result<(), HostNotConnected> {
        let not_connected = |reason: &str| HostNotConnected { host: host.to_owned(), reason: reason.to_owned() };
        let mut shared = self.lock();
        let Some(session) = shared.sessions.get(host) else {
            return Err(not_connected("no session"));
        };
        match session.tx.try_send(Box::new(Ok(message(msg)))) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(not_connected("its session just ended")),
            Err(mpsc::error::TrySendError::Full(_)) => {
                if let Some(session) = shared.sessions.remove(host) {
                    session.close(Close::Overloaded);
                }
                drop(shared);
                tracing::warn!(%host, "agent session queue full; closing the session");
                self.report_now(AgentReport::Disconnected { host: host.to_owned() });
                Err(not_connected("its send queue is full; the session was closed"))
            }
        }
    }

    fn subscriber(&self) -> Option<mpsc::Sender<AgentReport>> {
        self.inner.reports.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Queues a report without waiting; dropped when nobody subscribes or the queue is full.
    pub(crate) fn report_now(&self, report: AgentReport) {
        match self.subscriber() {
            Some(tx) => {
                if let Err(mpsc::error::TrySendError::Full(r)) = tx.try_send(report) {
                    tracing::warn!(report = ?r, "agent report queue full; report dropped");
                }
            }
            None => tracing::trace!(?report, "no subscriber; report dropped"),
        }
    }

    /// Queues a report, waiting at most half a lease for room.
    pub(crate) async fn report(&self, report: AgentReport) {
        let Some(tx) = self.subscriber() else {
            tracing::trace!(?report, "no subscriber; report dropped");
            return;
        };
        match tokio::time::timeout(self.inner.settings.lease / 2, tx.reserve()).await {
            Ok(Ok(permit)) => permit.send(report),
            Ok(Err(_)) => tracing::trace!(?report, "subscriber gone; report dropped"),
            Err(_) => tracing::warn!(?report, "agent report queue stayed full; report dropped"),
        }
    }

    pub(crate) fn next_session_id(&self) -> u64 {
        self.inner.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// The lock that serializes fleet proposals about one host.
    pub(crate) fn host_lock(&self, host: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.inner.host_locks.lock().unwrap_or_else(PoisonError::into_inner);
        locks.entry(host.to_owned()).or_default().clone()
    }

    /// Where to send an agent when this node does not lead (0 / empty when unknown).
    pub(crate) fn leader_hint(&self) -> v1::LeaderHint {
        match self.inner.node.check_leader() {
            Err(CoordinatorError::NotLeader { leader_id, leader_addr }) => v1::LeaderHint { leader_id, leader_addr },
            _ => v1::LeaderHint::default(),
        }
    }

    /// The term to accept a session in: waits (up to a lease) for this node's hub to
    /// be ready when it leads; otherwise where the agent should go.
    pub(crate) async fn await_leadership(&self) -> Result<u64, v1::LeaderHint> {
        if self.lock().closed {
            return Err(self.leader_hint());
        }
        self.inner.node.check_leader().map_err(|_| self.leader_hint())?;
        let mut ready = self.inner.ready.subscribe();
        match tokio::time::timeout(self.inner.settings.lease, ready.wait_for(Option::is_some)).await {
            Ok(Ok(term)) => Ok(term.unwrap_or_default()),
            _ => Err(self.leader_hint()),
        }
    }

    /// The `Welcome` of a session accepted in `term`.
    pub(crate) fn welcome(&self, term: u64) -> v1::CoordinatorMessage {
        message(Msg::Welcome(v1::Welcome {
            node_id: self.inner.node.id(),
            term,
            lease_ms: HubSettings::ms(self.inner.settings.lease),
            heartbeat_interval_ms: HubSettings::ms(self.inner.settings.heartbeat_interval),
            version: Some(flotilla_proto::version_info(env!("CARGO_PKG_VERSION"), [])),
        }))
    }

    /// Makes a session the host's live one (replacing an earlier one) and renews the
    /// host's lease, if this node still leads in `term`.
    pub(crate) fn attach(
        &self,
        host: &str,
        id: u64,
        term: u64,
        tx: mpsc::Sender<Queued>,
        close: oneshot::Sender<Close>,
    ) -> Result<(), v1::LeaderHint> {
        let mut shared = self.lock();
        if shared.closed || shared.leader_term != Some(term) {
            drop(shared);
            return Err(self.leader_hint());
        }
        if let Some(old) = shared.sessions.insert(host.to_owned(), SessionHandle { id, tx, close: Some(close) }) {
            tracing::info!(%host, old = old.id, new = id, "a new session replaces the host's earlier one");
            old.close(Close::Replaced);
        }
        let lease = self.fresh_lease();
        shared.leases.insert(host.to_owned(), lease);
        Ok(())
    }

    fn fresh_lease(&self) -> Lease {
        Lease { expires: Instant::now() + self.inner.settings.lease, last_seen_unix_ms: now_unix_ms() }
    }

    /// Renews the host's lease if `id` is still its live session.
    pub(crate) fn touch(&self, host: &str, id: u64) {
        let lease = self.fresh_lease();
        let mut shared = self.lock();
        if shared.sessions.get(host).is_some_and(|s| s.id == id) {
            shared.leases.insert(host.to_owned(), lease);
        }
    }

    /// Removes the session if `id` is still the host's live one; the lease stays and
    /// expires unless the agent comes back. Returns whether it was removed.
    pub(crate) fn detach(&self, host: &str, id: u64) -> bool {
        let mut shared = self.lock();
        if shared.sessions.get(host).is_some_and(|s| s.id == id) {
            shared.sessions.remove(host);
            true
        } else {
            false
        }
    }

    /// Proposes a fleet change; `Ok(false)` when the state refused it.
    pub(crate) async fn propose(&self, op: FleetOp) -> Result<bool, CoordinatorError> {
        let host = op.host().to_owned();
        let what = op.to_string();
        match self.inner.node.propose(Op::Fleet(op)).await? {
            crate::state::Response::Refused { reason } => {
                tracing::warn!(%host, %reason, "fleet change refused: {what}");
                Ok(false)
            }
            _ => {
                tracing::info!(%host, "committed: {what}");
                Ok(true)
            }
        }
    }

    /// Commits a heartbeat's inventory when it differs from the host's record.
    pub(crate) async fn inventory_changed(
        &self,
        host: &str,
        services: Vec<crate::fleet::model::InstalledService>,
    ) -> Result<(), CoordinatorError> {
        let lock = self.host_lock(host);
        let _guard = lock.lock().await;
        let changed = self.inner.node.read_local(|s| s.fleet().agent(host).is_some_and(|a| a.services != services));
        if changed {
            self.propose(FleetOp::InventoryChanged { host: host.to_owned(), services }).await?;
        }
        Ok(())
    }

    /// Marks a host whose lease expired as lost, unless it registered again meanwhile.
    async fn expire(self, host: String) {
        let lock = self.host_lock(&host);
        let _guard = lock.lock().await;
        if self.lock().leases.contains_key(&host) {
            return; // A new session registered since the lease was taken.
        }
        if !self.inner.node.read_local(|s| s.fleet().agent(&host).is_some_and(|a| a.online)) {
            return;
        }
        let reason = format!("no message from its agent for {:?} (lease expired)", self.inner.settings.lease);
        match self.propose(FleetOp::AgentLost { host: host.clone(), reason }).await {
            Ok(_) => {}
            Err(e @ (CoordinatorError::NotLeader { .. } | CoordinatorError::NoLeader)) => {
                tracing::debug!(%host, error = %e, "lost leadership before marking the host lost");
            }
            Err(e) => {
                tracing::warn!(%host, error = %e, "could not mark the host lost; retrying");
                let mut shared = self.lock();
                if shared.leader_term.is_some() {
                    shared.leases.entry(host).or_insert(Lease { expires: Instant::now(), last_seen_unix_ms: 0 });
                }
            }
        }
    }

    /// Takes the expired leases (and their sessions) out.
    fn take_expired(&self, now: Instant) -> Vec<(String, Option<SessionHandle>)> {
        let mut shared = self.lock();
        if shared.leader_term.is_none() {
            return Vec::new();
        }
        let expired: Vec<String> =
            shared.leases.iter().filter(|(_, l)| l.expires <= now).map(|(h, _)| h.clone()).collect();
        expired
            .into_iter()
            .map(|host| {
                shared.leases.remove(&host);
                let session = shared.sessions.remove(&host);
                (host, session)
            })
            .collect()
    }

    /// Follows one view of Raft leadership.
    async fn on_leadership(&self, view: LeaderView) {
        let current = self.lock().leader_term;
        if view.leading {
            if current == Some(view.term) || self.lock().closed {
                return;
            }
            if current.is_some() {
                // A new term without an observed step-down: start over.
                self.step_down(&v1::LeaderHint {
                    leader_id: self.inner.node.id(),
                    leader_addr: self.inner.node.advertise().to_owned(),
                });
            }
            // Apply everything committed before this term, so the state read below
            // (and by registrations) is current.
            loop {
                match self.inner.node.raft().ensure_linearizable().await {
                    Ok(_) => break,
                    Err(e) => {
                        let still = LeaderView::of(&self.inner.node.leadership().borrow());
                        if !still.leading || still.term != view.term {
                            tracing::debug!(error = %e, "leadership ended before the state was current");
                            return;
                        }
                        tokio::time::sleep(self.inner.settings.check_interval()).await;
                    }
                }
            }
            let online: Vec<String> = self
                .inner
                .node
                .read_local(|s| s.fleet().agents().iter().filter(|(_, a)| a.online).map(|(h, _)| h.clone()).collect());
            // Agents first have to find this new leader (their old session ended with the
            // old leader, and followers may still hint at it): they get two leases, not
            // one, before they count as lost.
            let lease = Lease { expires: Instant::now() + self.inner.settings.lease * 2, last_seen_unix_ms: 0 };
            let mut shared = self.lock();
            if shared.closed {
                return;
            }
            shared.leader_term = Some(view.term);
            for host in &online {
                shared.leases.entry(host.clone()).or_insert(lease);
            }
            self.inner.ready.send_replace(Some(view.term));
            drop(shared);
            tracing::info!(term = view.term, online_hosts = online.len(), "leading: accepting agent sessions");
        } else if current.is_some() {
            self.step_down(&view.hint);
        }
    }

    /// Stops leading: every session gets `hint` and is closed; leases are dropped.
    fn step_down(&self, hint: &v1::LeaderHint) {
        let closed = {
            let mut shared = self.lock();
            self.take_all(&mut shared)
        };
        tracing::info!(
            sessions = closed.len(),
            leader = hint.leader_id,
            "no longer leading: closing agent sessions with a leader hint"
        );
        for (host, session) in closed {
            session.close(Close::NotLeader(hint.clone()));
            self.report_now(AgentReport::Disconnected { host });
        }
    }
}

/// Leadership as the hub acts on it.
#[derive(Debug, Clone)]
struct LeaderView {
    leading: bool,
    term: u64,
    hint: v1::LeaderHint,
}

impl LeaderView {
    fn of(l: &Leadership) -> Self {
        let hint = l
            .leader
            .as_ref()
            .map(|(id, addr)| v1::LeaderHint { leader_id: *id, leader_addr: addr.clone() })
            .unwrap_or_default();
        Self { leading: l.leading, term: l.term, hint }
    }
}

async fn watch_leadership(inner: Weak<Inner>, mut leadership: watch::Receiver<Leadership>) {
    loop {
        let view = LeaderView::of(&leadership.borrow_and_update());
        let Some(strong) = inner.upgrade() else { return };
        let hub = AgentHub { inner: strong };
        hub.on_leadership(view).await;
        drop(hub);
        if leadership.changed().await.is_err() {
            // The node stopped.
            if let Some(strong) = inner.upgrade() {
                AgentHub { inner: strong }.step_down(&v1::LeaderHint::default());
            }
            return;
        }
    }
}

async fn check_leases(inner: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let hub = AgentHub { inner };
        for (host, session) in hub.take_expired(Instant::now()) {
            if let Some(session) = session {
                tracing::warn!(%host, "lease expired; closing the agent's session");
                session.close(Close::LeaseExpired);
                hub.report_now(AgentReport::Disconnected { host: host.clone() });
            } else {
                tracing::warn!(%host, "lease expired");
            }
            tokio::spawn(hub.clone().expire(host));
        }
    }
}
