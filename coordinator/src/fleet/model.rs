//! Plain data of the fleet as the replicated state stores it: an agent's registration,
//! its version and its inventory of installed services.
//!
//! These types are part of the Raft log and snapshots (`state::fleet` uses them), so
//! they follow the state's encoding rule: serde's default representations only (no
//! `tag`, `untagged`, `flatten` or skipped fields). Wire conversions live in
//! [`super::wire`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The run state of a service process on a host (`flotilla.v1.ServiceRunState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// The agent did not say.
    Unknown,
    /// Started; health not yet established.
    Starting,
    /// Running.
    Running,
    /// Stopped on purpose.
    Stopped,
    /// Exited unexpectedly; the agent restarts it with backoff.
    Crashed,
    /// Never started, or the agent gave up restarting it.
    Failed,
}

impl RunState {
    /// Whether the process serves: running, or started and not yet checked.
    pub fn runs(self) -> bool {
        matches!(self, RunState::Running | RunState::Starting)
    }

    /// The state as operators read it (`running`).
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Unknown => "unknown",
            RunState::Starting => "starting",
            RunState::Running => "running",
            RunState::Stopped => "stopped",
            RunState::Crashed => "crashed",
            RunState::Failed => "failed",
        }
    }
}

/// One service installed on a host. Process details that change on every restart
/// (pid, start time, restart count) are not replicated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledService {
    /// The service name.
    pub name: String,
    /// The version `current` points at (semver text); empty when none.
    pub version: String,
    /// Whether its process runs.
    pub state: RunState,
    /// Contracts the installed version serves: contract -> semver version.
    pub provides: BTreeMap<String, String>,
    /// Other versions kept on disk for a local rollback, newest first.
    pub kept_versions: Vec<String>,
}

/// The software and protocol an agent speaks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentVersion {
    /// The agent's release version (`0.1.0`).
    pub software: String,
    /// The `flotilla.v1` protocol revision.
    pub protocol: u32,
    /// Optional capabilities, by name.
    pub features: Vec<String>,
}

/// What an agent says about itself when it registers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The host's labels.
    pub labels: BTreeMap<String, String>,
    /// The agent's version.
    pub version: AgentVersion,
    /// Random per agent process start: tells a reconnect from a restart.
    pub instance_id: String,
    /// Every installed service, ordered by name.
    pub services: Vec<InstalledService>,
}

/// Orders services by name (the form the state keeps, so equal inventories compare equal).
pub fn normalize(mut services: Vec<InstalledService>) -> Vec<InstalledService> {
    services.sort_by(|a, b| a.name.cmp(&b.name));
    services
}
