//! One `AgentLink` session on the coordinator's side: the `Register` handshake, the
//! registration transition, `Welcome`, then heartbeats, progress and results until the
//! stream ends or the hub closes it.
//!
//! The outgoing stream is returned to the agent at once (so an agent that waits for
//! response headers before sending `Register` works too); refusals travel on it: a
//! `LeaderHint` then the end, or an error status (FAILED_PRECONDITION for a protocol
//! mismatch, INVALID_ARGUMENT for a session that does not start with `Register`,
//! PERMISSION_DENIED for an agent registering as another host than its certificate
//! names or claiming labels its enrolment does not grant, UNAUTHENTICATED for a
//! certificate that is not the enrolled host's current one).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::task::{Context, Poll};

use flotilla_net::pki::Role;
use flotilla_proto::status::Reason;
use flotilla_proto::v1::{self, agent_message, coordinator_message::Msg};
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use super::hub::{AgentHub, AgentReport, Close, Outbound, Queued};
use super::model::Registration;
use super::wire;
use crate::auth::Caller;
use crate::error::CoordinatorError;
use crate::state::{AgentRecord, FleetOp};

/// Why a session was refused.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The agent speaks a protocol revision this coordinator does not.
    #[error(
        "protocol mismatch: agent {host} speaks flotilla.v1 protocol {agent} (flotilla-agent {agent_software}); \
         this coordinator speaks protocol {ours} and accepts {min} to {ours} (flotilla-coordinator {ours_software})"
    )]
    ProtocolMismatch {
        /// The host.
        host: String,
        /// The agent's protocol revision (0 when it sent none).
        agent: u32,
        /// The agent's software version.
        agent_software: String,
        /// This coordinator's protocol revision.
        ours: u32,
        /// The oldest revision this coordinator accepts.
        min: u32,
        /// This coordinator's software version.
        ours_software: &'static str,
    },
    /// The first message was not a `Register`, or it was incomplete.
    #[error("{0}")]
    BadRegister(String),
    /// No `Register` arrived in time.
    #[error("no Register within {0:?}: a session starts with Register")]
    RegisterTimeout(std::time::Duration),
}

impl From<SessionError> for CoordinatorError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::ProtocolMismatch { .. } => {
                CoordinatorError::precondition(Reason::ProtocolUnsupported, e.to_string())
            }
            SessionError::BadRegister(_) | SessionError::RegisterTimeout(_) => {
                CoordinatorError::InvalidArgument(e.to_string())
            }
        }
    }
}

/// The coordinator's half of a session, as a stream of messages for tonic.
#[derive(Debug)]
pub struct OutboundStream(mpsc::Receiver<Queued>);

impl Stream for OutboundStream {
    type Item = Outbound;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Outbound>> {
        self.0.poll_recv(cx).map(|item| item.map(|queued| *queued))
    }
}

impl AgentHub {
    /// Serves one session whose incoming messages are `inbound`; returns the outgoing
    /// stream at once and runs the session in a task.
    /// `caller` is who the connection's certificate names: the session may register as
    /// that host only.
    pub fn open_session<S>(&self, inbound: S, caller: Caller) -> OutboundStream
    where
        S: Stream<Item = Result<v1::AgentMessage, Status>> + Send + Unpin + 'static,
    {
        let (tx, rx) = mpsc::channel(self.settings().session_buffer.max(2));
        tokio::spawn(run(self.clone(), inbound, tx, caller));
        OutboundStream(rx)
    }
}

fn hint(h: v1::LeaderHint) -> Queued {
    Box::new(Ok(v1::CoordinatorMessage { msg: Some(Msg::LeaderHint(h)) }))
}

fn refuse(e: impl Into<CoordinatorError>) -> Queued {
    Box::new(Err(Status::from(e.into())))
}

async fn first_register<S>(hub: &AgentHub, inbound: &mut S) -> Result<Option<v1::Register>, SessionError>
where
    S: Stream<Item = Result<v1::AgentMessage, Status>> + Unpin,
{
    let lease = hub.settings().lease;
    let first = tokio::time::timeout(lease, inbound.next()).await.map_err(|_| SessionError::RegisterTimeout(lease))?;
    let register = match first {
        None | Some(Err(_)) => return Ok(None),
        Some(Ok(v1::AgentMessage { msg: Some(agent_message::Msg::Register(r)) })) => r,
        Some(Ok(_)) => {
            return Err(SessionError::BadRegister("the first message of a session must be Register".to_owned()));
        }
    };
    if register.host_id.trim().is_empty() {
        return Err(SessionError::BadRegister("Register.host_id is empty".to_owned()));
    }
    let version = register.version.clone().unwrap_or_default();
    if !flotilla_proto::protocol_supported(version.protocol_version) {
        return Err(SessionError::ProtocolMismatch {
            host: register.host_id,
            agent: version.protocol_version,
            agent_software: if version.software_version.is_empty() {
                "version unknown".to_owned()
            } else {
                version.software_version
            },
            ours: flotilla_proto::PROTOCOL_VERSION,
            min: flotilla_proto::MIN_PROTOCOL_VERSION,
            ours_software: env!("CARGO_PKG_VERSION"),
        });
    }
    Ok(Some(register))
}

/// Why a registration must be committed, or `None` when the record already says it all.
fn seen_reason(record: Option<&AgentRecord>, agent: &Registration) -> Option<String> {
    let Some(record) = record else { return Some("first registration".to_owned()) };
    if !record.online {
        let after = record.lost_reason.as_deref().unwrap_or("being offline");
        return Some(format!("new session after {after}"));
    }
    if record.instance_id != agent.instance_id {
        return Some("the agent restarted (new instance id)".to_owned());
    }
    let mut changed = Vec::new();
    if record.labels != agent.labels {
        changed.push("labels");
    }
    if record.version != agent.version {
        changed.push("agent version");
    }
    if record.services != agent.services {
        changed.push("inventory");
    }
    if changed.is_empty() { None } else { Some(format!("{} changed", changed.join(", "))) }
}

/// Whether `caller` may register as the host `register` names, with its labels; the
/// labels to register when it may (an enrolled host that claims none gets its
/// enrolment's).
fn check_identity(
    hub: &AgentHub,
    caller: &Caller,
    register: &v1::Register,
) -> Result<BTreeMap<String, String>, CoordinatorError> {
    let claimed: BTreeMap<String, String> = register.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let Caller::Identified { identity, cert } = caller else { return Ok(claimed) };
    let host = &register.host_id;
    if identity.role != Role::Agent || identity.name != *host {
        return Err(CoordinatorError::permission_denied(
            Reason::PermissionDenied,
            format!(
                "{identity} may not register as host {host}: a session registers only as the host its certificate names"
            ),
        ));
    }
    let now = crate::node::now_unix_ms();
    let enrolled = hub.node().read_local(|s| {
        let e = s.enrolment();
        (e.key_revoked(&cert.key_sha256, now), e.host(host).cloned())
    });
    match enrolled {
        (true, _) => Err(CoordinatorError::unauthenticated(
            Reason::Unauthenticated,
            format!("the certificate of {identity} was revoked when its enrolment was forgotten; enrol the host again"),
        )),
        (false, Some(e)) if e.key_sha256 != cert.key_sha256 => Err(CoordinatorError::unauthenticated(
            Reason::Unauthenticated,
            format!(
                "{identity} presents a certificate for key {}, but the host is enrolled with key {}",
                cert.key_sha256, e.key_sha256
            ),
        )),
        (false, Some(e)) => {
            if let Some((k, v)) = claimed.iter().find(|(k, v)| e.labels.get(*k) != Some(*v)) {
                let granted: Vec<String> = e.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                return Err(CoordinatorError::permission_denied(
                    Reason::PermissionDenied,
                    format!(
                        "{identity} claims label {k}={v}, which its enrolment does not grant (granted: {}); re-enrol it with a token that carries the label",
                        if granted.is_empty() { "none".to_owned() } else { granted.join(", ") }
                    ),
                ));
            }
            Ok(if claimed.is_empty() { e.labels } else { claimed })
        }
        (false, None) => Ok(claimed),
    }
}

async fn run<S>(hub: AgentHub, mut inbound: S, tx: mpsc::Sender<Queued>, caller: Caller)
where
    S: Stream<Item = Result<v1::AgentMessage, Status>> + Send + Unpin,
{
    let mut register = match first_register(&hub, &mut inbound).await {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "agent session refused");
            let _ = tx.send(refuse(e)).await;
            return;
        }
    };
    match check_identity(&hub, &caller, &register) {
        Ok(labels) => register.labels = labels.into_iter().collect(),
        Err(e) => {
            tracing::warn!(host = %register.host_id, "agent session refused: {e}");
            let _ = tx.send(refuse(e)).await;
            return;
        }
    }
    let host = register.host_id.clone();
    let term = match hub.await_leadership().await {
        Ok(term) => term,
        Err(h) => {
            tracing::debug!(%host, leader = h.leader_id, "not the leader: answering with a leader hint");
            let _ = tx.send(hint(h)).await;
            return;
        }
    };

    // Commit the transition (if any), then accept the session, under the host's lock
    // so a lease expiry cannot cross it.
    let agent = wire::registration(&register);
    let lock = hub.host_lock(&host);
    let guard = lock.lock().await;
    let reason = hub.node().read_local(|s| seen_reason(s.fleet().agent(&host), &agent));
    if let Some(reason) = reason {
        match hub.propose(FleetOp::AgentSeen { host: host.clone(), agent, reason }).await {
            Ok(_) => {}
            Err(CoordinatorError::NotLeader { leader_id, leader_addr }) => {
                let _ = tx.send(hint(v1::LeaderHint { leader_id, leader_addr })).await;
                return;
            }
            Err(CoordinatorError::NoLeader) => {
                let _ = tx.send(hint(v1::LeaderHint::default())).await;
                return;
            }
            Err(e) => {
                tracing::warn!(%host, error = %e, "could not commit the agent's registration");
                let _ = tx.send(refuse(e)).await;
                return;
            }
        }
    }
    let id = hub.next_session_id();
    let (close_tx, mut close_rx) = oneshot::channel();
    if tx.send(Box::new(Ok(hub.welcome(term)))).await.is_err() {
        return; // The agent hung up.
    }
    if let Err(h) = hub.attach(&host, id, term, tx.clone(), close_tx) {
        let _ = tx.send(hint(h)).await;
        return;
    }
    drop(guard);
    tracing::info!(%host, session = id, term, instance = %register.instance_id, "agent session accepted");
    hub.report(AgentReport::Connected {
        host: host.clone(),
        instance_id: register.instance_id.clone(),
        running_command_ids: register.running_command_ids.clone(),
    })
    .await;

    let closed = |close: Result<Close, oneshot::error::RecvError>| match close {
        Ok(Close::NotLeader(h)) => {
            let _ = tx.try_send(hint(h));
            tracing::info!(%host, session = id, "session closed: this node no longer leads");
        }
        Ok(Close::Refused(status)) => {
            tracing::info!(%host, session = id, "session ended: {}", status.message());
            let _ = tx.try_send(Box::new(Err(status)));
        }
        Ok(why) => tracing::info!(%host, session = id, ?why, "session closed by the hub"),
        Err(_) => tracing::debug!(%host, session = id, "session dropped by the hub"),
    };
    loop {
        tokio::select! {
            close = &mut close_rx => {
                closed(close);
                return;
            }
            next = inbound.next() => match next {
                Some(Ok(message)) => {
                    hub.touch(&host, id);
                    // A message may wait on Raft (an inventory change is committed): the
                    // hub can still close the session meanwhile, as when this node loses
                    // its quorum and the proposal would wait for the partition to heal.
                    tokio::select! {
                        close = &mut close_rx => {
                            closed(close);
                            return;
                        }
                        () = handle(&hub, &host, message) => {}
                    }
                }
                Some(Err(status)) => {
                    tracing::info!(%host, session = id, error = %status.message(), "agent stream failed");
                    break;
                }
                None => {
                    tracing::info!(%host, session = id, "agent closed its session");
                    break;
                }
            }
        }
    }
    if hub.detach(&host, id) {
        hub.report(AgentReport::Disconnected { host }).await;
    }
}

async fn handle(hub: &AgentHub, host: &str, message: v1::AgentMessage) {
    match message.msg {
        Some(agent_message::Msg::Heartbeat(hb)) => {
            if let Some(inventory) = hb.inventory
                && let Err(e) = hub.inventory_changed(host, wire::inventory(&inventory.services)).await
            {
                tracing::warn!(%host, error = %e, "could not commit the agent's inventory change");
            }
        }
        Some(agent_message::Msg::Progress(progress)) => {
            hub.report_now(AgentReport::Progress { host: host.to_owned(), progress });
        }
        Some(agent_message::Msg::Result(result)) => {
            hub.report(AgentReport::Result { host: host.to_owned(), result }).await;
        }
        Some(agent_message::Msg::Register(_)) => {
            tracing::warn!(%host, "a second Register in one session is ignored");
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::fleet::model::AgentVersion;

    fn record(instance: &str, online: bool) -> AgentRecord {
        AgentRecord {
            labels: BTreeMap::new(),
            version: AgentVersion { software: "0.1.0".into(), protocol: 1, features: Vec::new() },
            instance_id: instance.into(),
            services: Vec::new(),
            online,
            registered_unix_ms: 0,
            since_unix_ms: 0,
            lost_reason: (!online).then(|| "lease expired".to_owned()),
            drain: None,
        }
    }

    fn agent(instance: &str) -> Registration {
        Registration {
            labels: BTreeMap::new(),
            version: AgentVersion { software: "0.1.0".into(), protocol: 1, features: Vec::new() },
            instance_id: instance.into(),
            services: Vec::new(),
        }
    }

    #[test]
    fn only_unknown_lost_restarted_or_changed_hosts_are_committed() {
        assert_eq!(seen_reason(None, &agent("a")).as_deref(), Some("first registration"));
        assert_eq!(
            seen_reason(Some(&record("a", false)), &agent("a")).as_deref(),
            Some("new session after lease expired")
        );
        assert_eq!(
            seen_reason(Some(&record("a", true)), &agent("b")).as_deref(),
            Some("the agent restarted (new instance id)")
        );
        let mut relabelled = agent("a");
        relabelled.labels.insert("zone".into(), "b".into());
        relabelled.version.software = "0.2.0".into();
        assert_eq!(
            seen_reason(Some(&record("a", true)), &relabelled).as_deref(),
            Some("labels, agent version changed")
        );
        assert_eq!(seen_reason(Some(&record("a", true)), &agent("a")), None, "a plain reconnect is not committed");
    }
}
