//! The fleet as the replicated state knows it: every host's agent, its labels and
//! whether the leader holds a live lease on it. Only transitions are replicated
//! (registered, lost, back), never heartbeats (DESIGN §8).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::Response;

/// A change to the fleet, proposed by the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FleetOp {
    /// An agent registered or came back.
    AgentSeen {
        /// The host.
        host: String,
        /// Its labels.
        labels: BTreeMap<String, String>,
        /// The agent's software version.
        agent_version: String,
    },
    /// The leader's lease on an agent expired.
    AgentLost {
        /// The host.
        host: String,
        /// Why the leader considers it lost.
        reason: String,
    },
}

impl fmt::Display for FleetOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FleetOp::AgentSeen { host, .. } => write!(f, "agent {host} seen"),
            FleetOp::AgentLost { host, .. } => write!(f, "agent {host} lost"),
        }
    }
}

/// A host's agent as the state machine keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its software version.
    pub agent_version: String,
    /// Whether the leader holds a live lease on it.
    pub online: bool,
    /// When it last changed state.
    pub since_unix_ms: i64,
    /// Why it went offline, when it is.
    pub lost_reason: Option<String>,
}

/// One fleet transition, for operators (`agent h1 is offline: lease expired`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetEvent {
    /// When (leader's clock).
    pub at_unix_ms: i64,
    /// The host.
    pub host: String,
    /// What happened, as a sentence.
    pub message: String,
}

/// Every known host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetState {
    agents: BTreeMap<String, AgentRecord>,
    history: Vec<FleetEvent>,
}

impl FleetState {
    /// Applies one fleet change stamped `at` by the leader.
    pub fn apply(&mut self, at: i64, op: &FleetOp) -> Response {
        match op {
            FleetOp::AgentSeen { host, labels, agent_version } => {
                let was_online = self.agents.get(host).is_some_and(|a| a.online);
                self.agents.insert(
                    host.clone(),
                    AgentRecord {
                        labels: labels.clone(),
                        agent_version: agent_version.clone(),
                        online: true,
                        since_unix_ms: at,
                        lost_reason: None,
                    },
                );
                if !was_online {
                    self.record(at, host, format!("agent {host} ({agent_version}) is online"));
                }
                Response::Done
            }
            FleetOp::AgentLost { host, reason } => match self.agents.get_mut(host) {
                Some(agent) if agent.online => {
                    agent.online = false;
                    agent.since_unix_ms = at;
                    agent.lost_reason = Some(reason.clone());
                    self.record(at, host, format!("agent {host} is offline: {reason}"));
                    Response::Done
                }
                Some(_) => Response::Done,
                None => Response::Refused { reason: format!("no agent {host}") },
            },
        }
    }

    fn record(&mut self, at: i64, host: &str, message: String) {
        self.history.push(FleetEvent { at_unix_ms: at, host: host.to_owned(), message });
    }

    /// Every agent by host id.
    pub fn agents(&self) -> &BTreeMap<String, AgentRecord> {
        &self.agents
    }

    /// Fleet transitions, oldest first.
    pub fn history(&self) -> &[FleetEvent] {
        &self.history
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_transitions_are_recorded_and_repeats_are_not() {
        let mut fleet = FleetState::default();
        let seen = FleetOp::AgentSeen { host: "h1".into(), labels: BTreeMap::new(), agent_version: "0.1.0".into() };
        let lost = FleetOp::AgentLost { host: "h1".into(), reason: "lease expired".into() };
        fleet.apply(5, &seen);
        fleet.apply(6, &seen);
        fleet.apply(9, &lost);
        fleet.apply(10, &lost);
        let messages: Vec<&str> = fleet.history().iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages, ["agent h1 (0.1.0) is online", "agent h1 is offline: lease expired"]);
        assert!(!fleet.agents()["h1"].online);
        assert!(matches!(
            fleet.apply(11, &FleetOp::AgentLost { host: "h9".into(), reason: String::new() }),
            Response::Refused { .. }
        ));
    }
}
