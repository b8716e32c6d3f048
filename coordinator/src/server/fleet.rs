//! The `Fleet` service: hosts and their agents as the replicated state knows them
//! (any coordinator answers reads from its applied state), and draining a host (a
//! write: run on the leader, or forwarded there).

use flotilla_proto::v1;
use flotilla_proto::v1::fleet_client::FleetClient;
use flotilla_proto::v1::fleet_server::Fleet;
use tonic::{Request, Response, Status};

use super::on_leader;
use crate::engine::{Outcome, StepKind, StepRecord};
use crate::error::CoordinatorError;
use crate::fleet::{AgentHub, wire};
use crate::node::Node;
use crate::state::{AgentRecord, FleetOp, Response as Applied};

/// Serves `Fleet` for one node.
#[derive(Debug, Clone)]
pub struct FleetService {
    node: Node,
    hub: AgentHub,
}

impl FleetService {
    /// The service of `hub`'s node.
    pub fn new(hub: AgentHub) -> Self {
        Self { node: hub.node().clone(), hub }
    }

    fn host(&self, id: &str, record: &AgentRecord) -> v1::Host {
        wire::host(id, record, self.hub.liveness(id, record.online))
    }

    fn read_host(&self, id: &str) -> Result<v1::Host, CoordinatorError> {
        self.node
            .read_local(|s| s.fleet().agent(id).cloned())
            .map(|record| self.host(id, &record))
            .ok_or_else(|| CoordinatorError::no_host(id, format!("no host {id} has registered")))
    }
}

/// A release step as a host's history shows it.
fn host_step(release: &str, command_id: &str, st: &StepRecord) -> v1::HostStep {
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
        command_id: command_id.to_owned(),
        release_id: release.to_owned(),
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
        let records: Vec<(String, AgentRecord)> = self.node.read_local(|s| {
            s.fleet()
                .agents()
                .iter()
                .filter(|(_, a)| (a.online || req.include_lost) && matches(a, &req.labels))
                .map(|(id, a)| (id.clone(), a.clone()))
                .collect()
        });
        let hosts = records.iter().map(|(id, a)| self.host(id, a)).collect();
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
        let mut steps: Vec<v1::HostStep> = self.node.read_local(|s| {
            s.releases()
                .flat_map(|r| {
                    r.run
                        .steps
                        .iter()
                        .filter(|(_, st)| st.host.as_str() == req.host_id)
                        .map(|(id, st)| host_step(&r.id, id, st))
                })
                .collect()
        });
        host.pending_command_ids = steps
            .iter()
            .filter(|st| st.outcome == v1::StepOutcome::Unspecified as i32)
            .map(|st| st.command_id.clone())
            .collect();
        steps.sort_by_key(|st| std::cmp::Reverse(st.sent_unix_ms));
        steps.truncate(limit);
        Ok(Response::new(v1::GetHostResponse { host: Some(host), recent_steps: steps }))
    }

    /// Sets or clears a host's drain mark through Raft; answers with the host as
    /// committed.
    async fn drain(&self, request: Request<v1::DrainRequest>) -> Result<Response<v1::DrainResponse>, Status> {
        let this = self.clone();
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
                match this.node.propose(crate::state::Op::Fleet(op)).await? {
                    Applied::Refused { reason } => Err(CoordinatorError::no_host(&req.host_id, reason)),
                    _ => Ok(v1::DrainResponse { host: Some(this.read_host(&req.host_id)?) }),
                }
            },
            |ch, req| async move { FleetClient::new(ch).drain(req).await },
        )
        .await
    }
}
