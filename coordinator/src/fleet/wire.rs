//! Conversions between the `flotilla.v1` fleet messages and the fleet's plain data.

use flotilla_proto::v1::{self, HostState, ServiceRunState};

use super::model::{AgentVersion, InstalledService, Registration, RunState, normalize};
use crate::state::{AgentRecord, HostEnrolment, JoinTokenRecord};

/// A wire run state as the state keeps it.
pub fn run_state(state: i32) -> RunState {
    match ServiceRunState::try_from(state).unwrap_or(ServiceRunState::Unspecified) {
        ServiceRunState::Unspecified => RunState::Unknown,
        ServiceRunState::Starting => RunState::Starting,
        ServiceRunState::Running => RunState::Running,
        ServiceRunState::Stopped => RunState::Stopped,
        ServiceRunState::Crashed => RunState::Crashed,
        ServiceRunState::Failed => RunState::Failed,
    }
}

fn wire_run_state(state: RunState) -> ServiceRunState {
    match state {
        RunState::Unknown => ServiceRunState::Unspecified,
        RunState::Starting => ServiceRunState::Starting,
        RunState::Running => ServiceRunState::Running,
        RunState::Stopped => ServiceRunState::Stopped,
        RunState::Crashed => ServiceRunState::Crashed,
        RunState::Failed => ServiceRunState::Failed,
    }
}

/// An agent's inventory entry as the state keeps it (process details dropped).
pub fn installed(s: &v1::ServiceInstance) -> InstalledService {
    InstalledService {
        name: s.service.clone(),
        version: s.version.clone(),
        state: run_state(s.state),
        provides: s.provides.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        kept_versions: s.kept_versions.clone(),
    }
}

/// A whole inventory, ordered by name.
pub fn inventory(services: &[v1::ServiceInstance]) -> Vec<InstalledService> {
    normalize(services.iter().map(installed).collect())
}

/// What a `Register` says, as the state keeps it.
pub fn registration(r: &v1::Register) -> Registration {
    let version = r.version.clone().unwrap_or_default();
    Registration {
        labels: r.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        version: AgentVersion {
            software: version.software_version,
            protocol: version.protocol_version,
            features: version.features,
        },
        instance_id: r.instance_id.clone(),
        services: inventory(&r.inventory),
    }
}

/// A service as the fleet API shows it (the process details are the agent's, not kept).
pub fn service_instance(s: &InstalledService) -> v1::ServiceInstance {
    v1::ServiceInstance {
        service: s.name.clone(),
        version: s.version.clone(),
        state: wire_run_state(s.state) as i32,
        provides: s.provides.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        kept_versions: s.kept_versions.clone(),
        ..Default::default()
    }
}

/// What the cluster knows of a host besides its replicated record.
#[derive(Debug, Clone, Copy, Default)]
pub struct Liveness {
    /// The coordinator its stream is connected to; 0 when none.
    pub connected_node_id: u64,
    /// When the leader last heard from it; 0 when unknown (or not the leader).
    pub last_seen_unix_ms: i64,
}

/// A host as the fleet API shows it, with its enrolment if it enrolled with a token.
pub fn host(id: &str, a: &AgentRecord, live: Liveness, enrolment: Option<&HostEnrolment>) -> v1::Host {
    v1::Host {
        host_id: id.to_owned(),
        labels: a.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        state: if a.online { HostState::Online } else { HostState::Lost } as i32,
        drained: a.drained(),
        drain_reason: a.drain.as_ref().map(|d| d.reason.clone()).unwrap_or_default(),
        agent_version: Some(v1::VersionInfo {
            protocol_version: a.version.protocol,
            software_version: a.version.software.clone(),
            features: a.version.features.clone(),
        }),
        connected_node_id: live.connected_node_id,
        registered_unix_ms: a.registered_unix_ms,
        state_changed_unix_ms: a.since_unix_ms,
        last_seen_unix_ms: live.last_seen_unix_ms,
        services: a.services.iter().map(service_instance).collect(),
        pending_command_ids: Vec::new(),
        enrolment: enrolment.map(host_enrolment),
    }
}

/// A host's enrolment as the fleet API shows it.
pub fn host_enrolment(e: &HostEnrolment) -> v1::HostEnrolment {
    v1::HostEnrolment {
        token_id: e.token_id.clone(),
        key_sha256: e.key_sha256.clone(),
        labels: e.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        enrolled_unix_ms: e.enrolled_unix_ms,
        issued_unix_ms: e.issued_unix_ms,
        expires_unix_ms: e.expires_unix_ms,
        renewals: e.renewals,
    }
}

/// A join token as the fleet API shows it (never its secret).
pub fn join_token(t: &JoinTokenRecord) -> v1::JoinToken {
    v1::JoinToken {
        id: t.id.clone(),
        created_unix_ms: t.created_unix_ms,
        expires_unix_ms: t.expires_unix_ms,
        uses_allowed: t.uses_allowed,
        uses: t.uses,
        labels: t.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        host_id_pattern: t.host_id_pattern.clone(),
        revoked: t.revoked,
        created_by: t.created_by.clone(),
        enrolled_hosts: t.enrolled_hosts.clone(),
        ca_pin: t.ca_pin.clone(),
    }
}
