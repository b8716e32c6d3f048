//! The fleet as the replicated state knows it: every host's agent, its labels, version
//! and inventory, whether the leader holds a live lease on it, and whether operators
//! drained it. Only transitions are replicated (registered, lost, back, restarted,
//! inventory changed, drained), never heartbeats.
//!
//! Apply is deterministic: time comes from the `at` argument (the leader's clock
//! stamped into the command), and nothing here reads a clock.

use std::collections::BTreeMap;
use std::fmt;

use flotilla_shared::inventory::{Fleet, Host, Installed};
use flotilla_shared::model::{HostId, ServiceName};
use serde::{Deserialize, Serialize};

use super::Response;
use crate::fleet::model::{AgentVersion, InstalledService, Registration, normalize};

/// How many fleet transitions the state keeps for operators (oldest dropped first).
pub const MAX_HISTORY: usize = 10_000;

/// A change to the fleet, proposed by the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FleetOp {
    /// An agent registered: for the first time, back after it was lost, restarted (a
    /// new instance id), or with changed labels, version or inventory.
    AgentSeen {
        /// The host.
        host: String,
        /// What the agent said about itself.
        agent: Registration,
        /// Why the leader proposes it (`first registration`, `agent restarted`).
        reason: String,
    },
    /// The leader's lease on an agent expired.
    AgentLost {
        /// The host.
        host: String,
        /// Why the leader considers it lost.
        reason: String,
    },
    /// A registered agent's installed services changed (sent with a heartbeat).
    InventoryChanged {
        /// The host.
        host: String,
        /// Every installed service now.
        services: Vec<InstalledService>,
    },
    /// An operator drained the host: no new step is sent to it.
    Drain {
        /// The host.
        host: String,
        /// Why.
        reason: String,
    },
    /// An operator cleared the drain mark.
    Undrain {
        /// The host.
        host: String,
        /// Why.
        reason: String,
    },
}

impl FleetOp {
    /// The host the change is about.
    pub fn host(&self) -> &str {
        match self {
            FleetOp::AgentSeen { host, .. }
            | FleetOp::AgentLost { host, .. }
            | FleetOp::InventoryChanged { host, .. }
            | FleetOp::Drain { host, .. }
            | FleetOp::Undrain { host, .. } => host,
        }
    }
}

impl fmt::Display for FleetOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FleetOp::AgentSeen { host, .. } => write!(f, "agent {host} seen"),
            FleetOp::AgentLost { host, .. } => write!(f, "agent {host} lost"),
            FleetOp::InventoryChanged { host, .. } => write!(f, "agent {host} inventory changed"),
            FleetOp::Drain { host, .. } => write!(f, "drain {host}"),
            FleetOp::Undrain { host, .. } => write!(f, "undrain {host}"),
        }
    }
}

/// An operator's drain mark on a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainMark {
    /// Why it was drained.
    pub reason: String,
    /// When (leader's clock).
    pub since_unix_ms: i64,
}

/// A host's agent as the state machine keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its software and protocol version.
    pub version: AgentVersion,
    /// The agent process's instance id at its last registration.
    pub instance_id: String,
    /// Its installed services, ordered by name.
    pub services: Vec<InstalledService>,
    /// Whether the leader holds a live lease on it.
    pub online: bool,
    /// When it first registered (leader's clock).
    pub registered_unix_ms: i64,
    /// When it last changed state (online / lost).
    pub since_unix_ms: i64,
    /// Why it went offline, when it is.
    pub lost_reason: Option<String>,
    /// The drain mark, when drained.
    pub drain: Option<DrainMark>,
}

impl AgentRecord {
    /// Whether a registration says anything the record does not (so it must be proposed).
    pub fn differs_from(&self, agent: &Registration) -> bool {
        self.labels != agent.labels
            || self.version != agent.version
            || self.instance_id != agent.instance_id
            || self.services != agent.services
    }

    /// Whether operators drained the host.
    pub fn drained(&self) -> bool {
        self.drain.is_some()
    }
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
    /// Applies one fleet change stamped `at` by the leader. A change about an unknown
    /// host (other than a registration) is refused; repeats change nothing.
    pub fn apply(&mut self, at: i64, op: &FleetOp) -> Response {
        match op {
            FleetOp::AgentSeen { host, agent, reason } => {
                let services = normalize(agent.services.clone());
                let message = match self.agents.get_mut(host) {
                    None => {
                        self.agents.insert(
                            host.clone(),
                            AgentRecord {
                                labels: agent.labels.clone(),
                                version: agent.version.clone(),
                                instance_id: agent.instance_id.clone(),
                                services,
                                online: true,
                                registered_unix_ms: at,
                                since_unix_ms: at,
                                lost_reason: None,
                                drain: None,
                            },
                        );
                        format!(
                            "agent {host} registered (flotilla-agent {}, protocol {}): {reason}",
                            agent.version.software, agent.version.protocol
                        )
                    }
                    Some(record) => {
                        let was_online = record.online;
                        record.labels.clone_from(&agent.labels);
                        record.version.clone_from(&agent.version);
                        record.instance_id.clone_from(&agent.instance_id);
                        record.services = services;
                        record.online = true;
                        record.lost_reason = None;
                        if was_online {
                            format!("agent {host} re-registered: {reason}")
                        } else {
                            record.since_unix_ms = at;
                            format!("agent {host} is back online: {reason}")
                        }
                    }
                };
                self.record(at, host, message);
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
                None => unknown(host),
            },
            FleetOp::InventoryChanged { host, services } => match self.agents.get_mut(host) {
                Some(agent) => {
                    agent.services = normalize(services.clone());
                    Response::Done
                }
                None => unknown(host),
            },
            FleetOp::Drain { host, reason } => match self.agents.get_mut(host) {
                Some(agent) => {
                    let since_unix_ms = agent.drain.as_ref().map_or(at, |d| d.since_unix_ms);
                    agent.drain = Some(DrainMark { reason: reason.clone(), since_unix_ms });
                    self.record(at, host, format!("host {host} drained: {reason}"));
                    Response::Done
                }
                None => unknown(host),
            },
            FleetOp::Undrain { host, reason } => match self.agents.get_mut(host) {
                Some(agent) if agent.drain.is_some() => {
                    agent.drain = None;
                    self.record(at, host, format!("host {host} undrained: {reason}"));
                    Response::Done
                }
                Some(_) => Response::Done,
                None => unknown(host),
            },
        }
    }

    fn record(&mut self, at: i64, host: &str, message: String) {
        if self.history.len() >= MAX_HISTORY {
            let excess = self.history.len() + 1 - MAX_HISTORY;
            self.history.drain(..excess);
        }
        self.history.push(FleetEvent { at_unix_ms: at, host: host.to_owned(), message });
    }

    /// Every agent by host id.
    pub fn agents(&self) -> &BTreeMap<String, AgentRecord> {
        &self.agents
    }

    /// One host's agent.
    pub fn agent(&self, host: &str) -> Option<&AgentRecord> {
        self.agents.get(host)
    }

    /// Fleet transitions, oldest first (at most [`MAX_HISTORY`]).
    pub fn history(&self) -> &[FleetEvent] {
        &self.history
    }

    /// The fleet a release is planned against: the online hosts (drained ones
    /// included: the engine fails a batch that needs one, and says why), their labels,
    /// and the services whose process runs (running or starting) at a semver version,
    /// with the contracts they serve. A stopped, crashed or failed service is left out,
    /// so the planner deploys it again rather than skipping the host. Versions or
    /// contract versions that are not semver are left out too.
    pub fn planning_fleet(&self) -> Fleet {
        let hosts = self
            .agents
            .iter()
            .filter(|(_, a)| a.online)
            .map(|(id, a)| Host {
                id: HostId(id.clone()),
                labels: a.labels.clone(),
                services: a
                    .services
                    .iter()
                    .filter(|s| s.state.runs())
                    .filter_map(|s| {
                        let installed = Installed::Detailed {
                            version: s.version.parse().ok()?,
                            provides: s
                                .provides
                                .iter()
                                .filter_map(|(contract, v)| Some((contract.clone(), v.parse().ok()?)))
                                .collect(),
                        };
                        Some((ServiceName(s.name.clone()), installed))
                    })
                    .collect(),
            })
            .collect();
        Fleet { hosts }
    }
}

fn unknown(host: &str) -> Response {
    Response::Refused { reason: format!("no host {host} has registered") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::model::RunState;

    fn service(name: &str, version: &str, state: RunState) -> InstalledService {
        InstalledService {
            name: name.into(),
            version: version.into(),
            state,
            provides: BTreeMap::new(),
            kept_versions: Vec::new(),
        }
    }

    fn registration(instance: &str, services: Vec<InstalledService>) -> Registration {
        Registration {
            labels: BTreeMap::from([("role".to_owned(), "web".to_owned())]),
            version: AgentVersion { software: "0.1.0".into(), protocol: 1, features: Vec::new() },
            instance_id: instance.into(),
            services,
        }
    }

    fn seen(host: &str, agent: Registration) -> FleetOp {
        FleetOp::AgentSeen { host: host.into(), agent, reason: "test".into() }
    }

    fn messages(fleet: &FleetState) -> Vec<&str> {
        fleet.history().iter().map(|e| e.message.as_str()).collect()
    }

    #[test]
    fn registration_lost_and_back_are_transitions_with_reasons() {
        let mut fleet = FleetState::default();
        let lost = FleetOp::AgentLost { host: "h1".into(), reason: "no heartbeat for 10s".into() };
        assert_eq!(fleet.apply(5, &seen("h1", registration("i-1", Vec::new()))), Response::Done);
        assert_eq!(fleet.apply(9, &lost), Response::Done);
        assert_eq!(fleet.apply(10, &lost), Response::Done, "a repeated loss changes nothing");
        let h1 = fleet.agent("h1").unwrap();
        assert!(!h1.online);
        assert_eq!((h1.registered_unix_ms, h1.since_unix_ms), (5, 9));
        assert_eq!(h1.lost_reason.as_deref(), Some("no heartbeat for 10s"));

        fleet.apply(
            12,
            &FleetOp::AgentSeen {
                host: "h1".into(),
                agent: registration("i-2", Vec::new()),
                reason: "new session".into(),
            },
        );
        let h1 = fleet.agent("h1").unwrap();
        assert!(h1.online);
        assert_eq!((h1.registered_unix_ms, h1.since_unix_ms, h1.lost_reason.as_ref()), (5, 12, None));
        assert_eq!(h1.instance_id, "i-2");
        assert_eq!(
            messages(&fleet),
            [
                "agent h1 registered (flotilla-agent 0.1.0, protocol 1): test",
                "agent h1 is offline: no heartbeat for 10s",
                "agent h1 is back online: new session",
            ]
        );
    }

    #[test]
    fn a_re_registration_while_online_keeps_the_state_change_time() {
        let mut fleet = FleetState::default();
        fleet.apply(5, &seen("h1", registration("i-1", Vec::new())));
        fleet.apply(8, &seen("h1", registration("i-2", Vec::new())));
        let h1 = fleet.agent("h1").unwrap();
        assert_eq!((h1.since_unix_ms, h1.instance_id.as_str()), (5, "i-2"));
        assert_eq!(messages(&fleet)[1], "agent h1 re-registered: test");
    }

    #[test]
    fn changes_about_unknown_hosts_are_refused() {
        let mut fleet = FleetState::default();
        for op in [
            FleetOp::AgentLost { host: "h9".into(), reason: String::new() },
            FleetOp::InventoryChanged { host: "h9".into(), services: Vec::new() },
            FleetOp::Drain { host: "h9".into(), reason: String::new() },
            FleetOp::Undrain { host: "h9".into(), reason: String::new() },
        ] {
            assert_eq!(fleet.apply(1, &op), Response::Refused { reason: "no host h9 has registered".into() }, "{op}");
        }
        assert_eq!(fleet, FleetState::default());
    }

    #[test]
    fn inventory_is_kept_ordered_by_name_and_replaced_on_change() {
        let mut fleet = FleetState::default();
        let inventory = vec![service("web", "1.0.0", RunState::Running), service("api", "2.0.0", RunState::Running)];
        fleet.apply(1, &seen("h1", registration("i-1", inventory.clone())));
        let names: Vec<&str> = fleet.agent("h1").unwrap().services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["api", "web"]);
        assert!(!fleet.agent("h1").unwrap().differs_from(&registration("i-1", normalize(inventory))));

        fleet.apply(
            2,
            &FleetOp::InventoryChanged {
                host: "h1".into(),
                services: vec![service("web", "1.0.0", RunState::Crashed)],
            },
        );
        assert_eq!(fleet.agent("h1").unwrap().services, [service("web", "1.0.0", RunState::Crashed)]);
        assert!(fleet.agent("h1").unwrap().differs_from(&registration("i-1", Vec::new())));
    }

    #[test]
    fn drain_survives_re_registration_and_undrain_clears_it() {
        let mut fleet = FleetState::default();
        fleet.apply(1, &seen("h1", registration("i-1", Vec::new())));
        fleet.apply(2, &FleetOp::Drain { host: "h1".into(), reason: "disk swap".into() });
        fleet.apply(3, &FleetOp::Drain { host: "h1".into(), reason: "disk swap, day 2".into() });
        fleet.apply(4, &seen("h1", registration("i-2", Vec::new())));
        let drain = fleet.agent("h1").unwrap().drain.clone().unwrap();
        assert_eq!(drain, DrainMark { reason: "disk swap, day 2".into(), since_unix_ms: 2 });
        fleet.apply(5, &FleetOp::Undrain { host: "h1".into(), reason: "done".into() });
        fleet.apply(6, &FleetOp::Undrain { host: "h1".into(), reason: "again".into() });
        assert!(!fleet.agent("h1").unwrap().drained());
        let m = messages(&fleet);
        assert_eq!(m[1..3], ["host h1 drained: disk swap", "host h1 drained: disk swap, day 2"]);
        assert_eq!(m.last(), Some(&"host h1 undrained: done"));
        assert_eq!(m.len(), 5, "a repeated undrain records nothing: {m:?}");
    }

    #[test]
    fn the_planning_fleet_has_online_hosts_and_running_services_only() {
        let mut fleet = FleetState::default();
        let mut auth = service("auth", "3.1.0", RunState::Running);
        auth.provides = BTreeMap::from([("auth-api".into(), "3.1.0".into()), ("legacy".into(), "v1".into())]);
        let inventory = vec![
            auth,
            service("web", "1.4.0", RunState::Starting),
            service("search", "2.0.0", RunState::Crashed),
            service("cron", "1.0.0", RunState::Stopped),
            service("odd", "latest", RunState::Running),
        ];
        fleet.apply(1, &seen("h1", registration("i-1", inventory)));
        fleet.apply(1, &seen("h2", registration("i-2", Vec::new())));
        fleet.apply(2, &seen("h3", registration("i-3", vec![service("web", "1.0.0", RunState::Running)])));
        fleet.apply(3, &FleetOp::AgentLost { host: "h3".into(), reason: "lease".into() });
        fleet.apply(4, &FleetOp::Drain { host: "h2".into(), reason: "maintenance".into() });

        let planning = fleet.planning_fleet();
        let ids: Vec<&str> = planning.hosts.iter().map(|h| h.id.0.as_str()).collect();
        assert_eq!(ids, ["h1", "h2"], "lost hosts are left out, drained ones are kept");
        let h1 = &planning.hosts[0];
        assert_eq!(h1.labels["role"], "web");
        let names: Vec<&str> = h1.services.keys().map(|s| s.0.as_str()).collect();
        assert_eq!(names, ["auth", "web"]);
        assert_eq!(h1.services[&ServiceName::from("web")].version().to_string(), "1.4.0");
        let provided: Vec<String> = planning.provided_versions("auth-api").map(ToString::to_string).collect();
        assert_eq!(provided, ["3.1.0"]);
        assert_eq!(planning.provided_versions("legacy").count(), 0);
    }

    #[test]
    fn history_is_bounded() {
        let mut fleet = FleetState::default();
        fleet.apply(0, &seen("h1", registration("i-1", Vec::new())));
        for i in 0..(MAX_HISTORY as i64 + 5) {
            fleet.apply(i, &FleetOp::Drain { host: "h1".into(), reason: format!("{i}") });
        }
        assert_eq!(fleet.history().len(), MAX_HISTORY);
        assert_eq!(fleet.history().last().unwrap().message, format!("host h1 drained: {}", MAX_HISTORY + 4));
    }

    #[test]
    fn the_same_ops_give_the_same_state() {
        let ops = [
            seen("h1", registration("i-1", vec![service("web", "1.0.0", RunState::Running)])),
            FleetOp::AgentLost { host: "h1".into(), reason: "lease".into() },
            seen("h2", registration("i-2", Vec::new())),
            FleetOp::Drain { host: "h2".into(), reason: "x".into() },
        ];
        let run = || {
            let mut fleet = FleetState::default();
            let out: Vec<Response> = ops.iter().enumerate().map(|(i, op)| fleet.apply(i as i64, op)).collect();
            (fleet, out)
        };
        assert_eq!(run(), run());
    }
}
