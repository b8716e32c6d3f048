//! Release policy, replicated: the deployment windows and freezes every release's
//! rollout obeys (`flotilla policy window`).
//!
//! The leader evaluates the windows with its clock at each batch boundary and commits
//! what they said as a release fact, so the state only keeps the windows themselves;
//! `revision` counts the changes, so the leader knows to decide again when the windows
//! change under a waiting release.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use flotilla_shared::model::{HostId, ServiceName};
use flotilla_shared::window::{self, Hold, Window};

use super::Response;

/// The most windows a cluster keeps (each batch boundary evaluates every one).
pub const MAX_WINDOWS: usize = 256;

/// A window as the cluster keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowRecord {
    /// The window.
    pub window: Window,
    /// Who set it.
    pub set_by: String,
    /// When it was set (leader's clock).
    pub set_unix_ms: i64,
}

/// A change to the release policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyOp {
    /// Sets a window (a window of the same name is replaced).
    SetWindow {
        /// The window, checked by the leader.
        window: Window,
        /// Who.
        actor: String,
    },
    /// Removes a window.
    RemoveWindow {
        /// Its name.
        name: String,
        /// Who.
        actor: String,
    },
}

impl fmt::Display for PolicyOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyOp::SetWindow { window, actor } => {
                write!(f, "{actor} set {} window {} ({})", window.effect, window.name, window.when)
            }
            PolicyOp::RemoveWindow { name, actor } => write!(f, "{actor} removed window {name}"),
        }
    }
}

/// The release policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyState {
    windows: BTreeMap<String, WindowRecord>,
    /// How many changes were applied.
    revision: u64,
}

impl PolicyState {
    pub(super) fn apply(&mut self, at: i64, op: &PolicyOp) -> Response {
        match op {
            PolicyOp::SetWindow { window, actor } => {
                if window.name.is_empty() {
                    return Response::Refused { reason: "a window needs a name".to_owned() };
                }
                if !self.windows.contains_key(&window.name) && self.windows.len() >= MAX_WINDOWS {
                    return Response::Refused {
                        reason: format!("the cluster keeps at most {MAX_WINDOWS} windows: remove one first"),
                    };
                }
                let record = WindowRecord { window: window.clone(), set_by: actor.clone(), set_unix_ms: at };
                self.windows.insert(window.name.clone(), record);
            }
            PolicyOp::RemoveWindow { name, .. } => {
                if self.windows.remove(name).is_none() {
                    return Response::Refused { reason: format!("there is no window {name}") };
                }
            }
        }
        self.revision += 1;
        Response::Done
    }

    /// The windows, by name.
    pub fn windows(&self) -> impl Iterator<Item = &WindowRecord> {
        self.windows.values()
    }

    /// A window by name.
    pub fn window(&self, name: &str) -> Option<&WindowRecord> {
        self.windows.get(name)
    }

    /// How many changes were applied: a leader decides again when it moves.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Whether the windows hold a batch of `service` on `hosts` at `now`; `labels`
    /// gives a host's labels.
    pub fn hold<'l>(
        &self,
        service: &ServiceName,
        hosts: &[HostId],
        labels: impl Fn(&HostId) -> Option<&'l flotilla_shared::model::Labels>,
        now: i64,
    ) -> Option<Hold> {
        if self.windows.is_empty() {
            return None;
        }
        let labels: Vec<&flotilla_shared::model::Labels> = hosts.iter().filter_map(labels).collect();
        window::hold(self.windows.values().map(|r| &r.window), service, &labels, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_shared::window::{Effect, When};

    fn freeze(name: &str) -> Window {
        Window {
            name: name.to_owned(),
            effect: Effect::Deny,
            services: Default::default(),
            hosts: Default::default(),
            when: When::Once { from_unix_ms: 1_000, until_unix_ms: 2_000 },
            reason: "audit".to_owned(),
        }
    }

    #[test]
    fn windows_are_set_replaced_and_removed_and_each_change_moves_the_revision() {
        let mut p = PolicyState::default();
        let set = |w: Window| PolicyOp::SetWindow { window: w, actor: "ops".to_owned() };
        assert_eq!(p.apply(5, &set(freeze("a"))), Response::Done);
        let mut later = freeze("a");
        later.when = When::Once { from_unix_ms: 3_000, until_unix_ms: 4_000 };
        assert_eq!(p.apply(6, &set(later.clone())), Response::Done);
        assert_eq!(p.window("a").unwrap().window, later);
        assert_eq!(p.window("a").unwrap().set_unix_ms, 6);
        assert_eq!(p.revision(), 2);
        let remove = |n: &str| PolicyOp::RemoveWindow { name: n.to_owned(), actor: "ops".to_owned() };
        assert_eq!(p.apply(7, &remove("b")), Response::Refused { reason: "there is no window b".to_owned() });
        assert_eq!(p.revision(), 2, "a refused change changes nothing");
        assert_eq!(p.apply(8, &remove("a")), Response::Done);
        assert_eq!(p.windows().count(), 0);
        assert_eq!(p.revision(), 3);
    }

    #[test]
    fn a_freeze_holds_a_batch_while_in_effect() {
        let mut p = PolicyState::default();
        p.apply(0, &PolicyOp::SetWindow { window: freeze("a"), actor: "ops".to_owned() });
        let svc = ServiceName::new("api");
        let hosts = [HostId::new("h1")];
        let h = p.hold(&svc, &hosts, |_| None, 1_500).unwrap();
        assert_eq!(h.until_unix_ms, Some(2_000));
        assert!(p.hold(&svc, &hosts, |_| None, 2_000).is_none());
    }
}
