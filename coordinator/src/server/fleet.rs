//! The `Fleet` service: hosts and their agents as the replicated state knows them
//! (any coordinator answers reads from its applied state), and draining a host (a
//! write: run on the leader, or forwarded there).

use flotilla_proto::v1;
use flotilla_proto::v1::fleet_client::FleetClient;
use flotilla_proto::v1::fleet_server::Fleet;
use flotilla_shared::model::HostId;
use tonic::{Request, Response, Status};

use super::on_leader;
use crate::audit::AuditNote;
use crate::auth::Actor;
use crate::engine::{CommandId, Outcome, StepKind, StepRecord};
use crate::enrolment::{Enroller, TokenRequest, refusal};
use crate::error::CoordinatorError;
use crate::fleet::{AgentHub, wire};
use crate::node::Node;
use crate::state::{AgentRecord, EnrolmentOp, FleetOp, HostEnrolment, Op, Response as Applied, State};

/// Serves `Fleet` for one node.
#[derive(Debug, Clone)]
pub struct FleetService {
    node: Node,
    hub: AgentHub,
    enroller: Enroller,
}

impl FleetService {
    /// The service of `hub`'s node; join tokens pin `enroller`'s CA.
    pub fn new(hub: AgentHub, enroller: Enroller) -> Self {
        Self { node: hub.node().clone(), hub, enroller }
    }

    fn read_token(&self, id: &str) -> Result<v1::JoinToken, CoordinatorError> {
        self.node
            .read_local(|s| s.enrolment().token(id).map(wire::join_token))
            .ok_or_else(|| refusal(crate::state::EnrolmentRefusal::NoSuchToken(id.to_owned())))
    }

    fn host(&self, id: &str, record: &AgentRecord, enrolment: Option<&HostEnrolment>) -> v1::Host {
        wire::host(id, record, self.hub.liveness(id, record.online), enrolment)
    }

    fn read_host(&self, id: &str) -> Result<v1::Host, CoordinatorError> {
        self.node
            .read_local(|s| s.fleet().agent(id).cloned().map(|a| (a, s.enrolment().host(id).cloned())))
            .map(|(record, enrolment)| self.host(id, &record, enrolment.as_ref()))
            .ok_or_else(|| CoordinatorError::no_host(id, format!("no host {id} has registered")))
    }
}

/// A host's steps across the releases `state` holds: the `limit` most recently sent,
/// newest first, and the command ids of every one still waiting for a result.
pub(crate) fn host_history(state: &State, host: &HostId, limit: usize) -> (Vec<v1::HostStep>, Vec<String>) {
    let mut steps: Vec<v1::HostStep> =
        state.releases().flat_map(|r| r.run.steps.on_host(host).map(|(id, st)| host_step(id, st))).collect();
    let pending = steps
        .iter()
        .filter(|st| st.outcome == v1::StepOutcome::Unspecified as i32)
        .map(|st| st.command_id.clone())
        .collect();
    steps.sort_by_key(|st| std::cmp::Reverse(st.sent_unix_ms));
    steps.truncate(limit);
    (steps, pending)
}

/// A host's most recently sent step across the releases `state` holds, if any.
pub(crate) fn newest_step(state: &State, host: &HostId) -> Option<v1::HostStep> {
    state
        .releases()
        .flat_map(|r| r.run.steps.on_host(host))
        .min_by_key(|(_, st)| std::cmp::Reverse(st.sent_unix_ms))
        .map(|(id, st)| host_step(id, st))
}

/// A release step as a host's history shows it.
fn host_step(command_id: &CommandId, st: &StepRecord) -> v1::HostStep {
    let (action, service, version) = match &st.kind {
        StepKind::Deploy(s) => ("deploy", s.to_string(), String::new()),
        StepKind::Bake(s, _) => ("bake", s.to_string(), String::new()),
        StepKind::Migrate(s) | StepKind::MigrateDown(s) => ("run_hook", s.to_string(), String::new()),
        StepKind::Rollback(s, to) => ("rollback", s.to_string(), to.clone().unwrap_or_default()),
        StepKind::Check(_) => ("run_check", String::new(), String::new()),
    };
    let (outcome, reason) = match &st.outcome {
        None => (v1::StepOutcome::Unspecified, String::new()),
        Some((Outcome::Succeeded, _)) => (v1::StepOutcome::Succeeded, String::new()),
        Some((Outcome::Failed, why)) => (v1::StepOutcome::Failed, why.clone()),
        Some((Outcome::Cancelled, why)) => (v1::StepOutcome::Cancelled, why.clone()),
        Some((Outcome::Refused, why)) => (v1::StepOutcome::Refused, why.clone()),
        Some((Outcome::Interrupted, why)) => (v1::StepOutcome::Failed, why.clone()),
    };
    v1::HostStep {
        command_id: command_id.to_string(),
        release_id: command_id.release().to_owned(),
        service,
        action: action.to_owned(),
        version,
        outcome: outcome as i32,
        reason,
        sent_unix_ms: st.sent_unix_ms,
        finished_unix_ms: st.finished_unix_ms,
    }
}

/// Whether a host carries every label of `selector` with its value.
fn matches(record: &AgentRecord, selector: &std::collections::HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| record.labels.get(k) == Some(v))
}

#[tonic::async_trait]
impl Fleet for FleetService {
    /// Hosts ordered by id, from this node's applied state: online ones, or all with
    /// `include_lost`, filtered by labels.
    async fn list_agents(
        &self,
        request: Request<v1::ListAgentsRequest>,
    ) -> Result<Response<v1::ListAgentsResponse>, Status> {
        let req = request.into_inner();
        let records: Vec<(String, AgentRecord, Option<HostEnrolment>)> = self.node.read_local(|s| {
            s.fleet()
                .agents()
                .iter()
                .filter(|(_, a)| (a.online || req.include_lost) && matches(a, &req.labels))
                .map(|(id, a)| (id.clone(), a.clone(), s.enrolment().host(id).cloned()))
                .collect()
        });
        let hosts = records.iter().map(|(id, a, e)| self.host(id, a, e.as_ref())).collect();
        Ok(Response::new(v1::ListAgentsResponse { hosts }))
    }

    /// One host from this node's applied state, with its most recent steps across
    /// releases (newest first) and the ones still waiting for a result.
    async fn get_host(&self, request: Request<v1::GetHostRequest>) -> Result<Response<v1::GetHostResponse>, Status> {
        let req = request.into_inner();
        if req.host_id.is_empty() {
            return Err(CoordinatorError::missing("host_id").into());
        }
        let mut host = self.read_host(&req.host_id)?;
        let limit = if req.recent_steps == 0 { 20 } else { req.recent_steps.min(1_000) } as usize;
        let host_id = HostId::new(req.host_id.as_str());
        let (steps, pending) = self.node.read_local(|s| host_history(s, &host_id, limit));
        host.pending_command_ids = pending;
        Ok(Response::new(v1::GetHostResponse { host: Some(host), recent_steps: steps }))
    }

    /// Sets or clears a host's drain mark through Raft; answers with the host as
    /// committed.
    async fn drain(&self, request: Request<v1::DrainRequest>) -> Result<Response<v1::DrainResponse>, Status> {
        let this = self.clone();
        AuditNote::of(&request).target(format!("host {}", request.get_ref().host_id));
        on_leader(
            &self.node,
            request,
            |req| async move {
                if req.host_id.trim().is_empty() {
                    return Err(CoordinatorError::missing("host_id"));
                }
                let op = if req.undrain {
                    FleetOp::Undrain { host: req.host_id.clone(), reason: req.reason }
                } else {
                    FleetOp::Drain { host: req.host_id.clone(), reason: req.reason }
                };
                match this.node.propose(Op::Fleet(op)).await? {
                    Applied::Refused { reason } => Err(CoordinatorError::no_host(&req.host_id, reason)),
                    _ => Ok(v1::DrainResponse { host: Some(this.read_host(&req.host_id)?) }),
                }
            },
            |ch, req| async move { FleetClient::new(ch).drain(req).await },
        )
        .await
    }

    /// Makes a join token on the leader: the secret is drawn there, its digest
    /// committed, the token answered once.
    async fn create_join_token(
        &self,
        request: Request<v1::CreateJoinTokenRequest>,
    ) -> Result<Response<v1::CreateJoinTokenResponse>, Status> {
        let this = self.clone();
        let actor = Actor::of(&request).name;
        let note = AuditNote::of(&request);
        let made = on_leader(
            &self.node,
            request,
            |req| async move {
                let ask = TokenRequest {
                    ttl: std::time::Duration::from_millis(req.ttl_ms),
                    uses: req.uses,
                    labels: req.labels.into_iter().collect(),
                    host_id_pattern: req.host_id_pattern,
                };
                let (token, record) = this.enroller.new_token(&ask, actor, crate::node::now_unix_ms())?;
                let id = record.id.clone();
                match this.node.propose(Op::Enrolment(EnrolmentOp::CreateToken(record))).await? {
                    Applied::Refused { reason } => Err(CoordinatorError::Internal(reason)),
                    _ => {
                        tracing::info!(token = %id, "join token created");
                        Ok(v1::CreateJoinTokenResponse {
                            token: token.to_string(),
                            join_token: Some(this.read_token(&id)?),
                        })
                    }
                }
            },
            |ch, req| async move { FleetClient::new(ch).create_join_token(req).await },
        )
        .await;
        if let Ok(Some(t)) = made.as_ref().map(|r| r.get_ref().join_token.as_ref()) {
            note.target(format!("join token {}", t.id));
        }
        made
    }

    /// Tokens from this node's applied state, oldest first.
    async fn list_join_tokens(
        &self,
        request: Request<v1::ListJoinTokensRequest>,
    ) -> Result<Response<v1::ListJoinTokensResponse>, Status> {
        let req = request.into_inner();
        let now = crate::node::now_unix_ms();
        let tokens = self.node.read_local(|s| {
            s.enrolment()
                .tokens()
                .into_iter()
                .filter(|t| req.include_spent || t.usable(now).is_ok())
                .map(wire::join_token)
                .collect()
        });
        Ok(Response::new(v1::ListJoinTokensResponse { tokens }))
    }

    /// Revokes a token through Raft.
    async fn revoke_join_token(
        &self,
        request: Request<v1::RevokeJoinTokenRequest>,
    ) -> Result<Response<v1::RevokeJoinTokenResponse>, Status> {
        let this = self.clone();
        AuditNote::of(&request).target(format!("join token {}", request.get_ref().id));
        on_leader(
            &self.node,
            request,
            |req| async move {
                if req.id.trim().is_empty() {
                    return Err(CoordinatorError::missing("id"));
                }
                match this.node.propose(Op::Enrolment(EnrolmentOp::RevokeToken { id: req.id.clone() })).await? {
                    Applied::EnrolmentRefused(why) => Err(refusal(why)),
                    _ => Ok(v1::RevokeJoinTokenResponse { join_token: Some(this.read_token(&req.id)?) }),
                }
            },
            |ch, req| async move { FleetClient::new(ch).revoke_join_token(req).await },
        )
        .await
    }

    /// Forgets a host's enrolment through Raft and ends its agent's session, so the
    /// old certificate is refused at once.
    async fn forget_host(
        &self,
        request: Request<v1::ForgetHostRequest>,
    ) -> Result<Response<v1::ForgetHostResponse>, Status> {
        let this = self.clone();
        AuditNote::of(&request).target(format!("host {}", request.get_ref().host_id));
        on_leader(
            &self.node,
            request,
            |req| async move {
                if req.host_id.trim().is_empty() {
                    return Err(CoordinatorError::missing("host_id"));
                }
                let before = this.node.read_local(|s| s.enrolment().host(&req.host_id).cloned());
                match this.node.propose(Op::Enrolment(EnrolmentOp::Forget { host: req.host_id.clone() })).await? {
                    Applied::EnrolmentRefused(why) => Err(refusal(why)),
                    _ => {
                        tracing::info!(host = %req.host_id, "enrolment forgotten");
                        this.hub.disconnect(&req.host_id, "its enrolment was forgotten");
                        Ok(v1::ForgetHostResponse { enrolment: before.as_ref().map(wire::host_enrolment) })
                    }
                }
            },
            |ch, req| async move { FleetClient::new(ch).forget_host(req).await },
        )
        .await
    }
}
