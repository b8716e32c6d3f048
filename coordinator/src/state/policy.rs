//! Release policy, replicated: the deployment windows and freezes every release's
//! rollout obeys (`flotilla policy window`), and the webhooks told about releases
//! (`flotilla policy hook`, or `[[notify]]` in the coordinators' configuration).
//!
//! The leader evaluates the windows with its clock at each batch boundary and commits
//! what they said as a release fact, so the state only keeps the windows themselves;
//! `revision` counts the changes, so the leader knows to decide again when the windows
//! change under a waiting release.
//!
//! A hook keeps, per release, the index of the last event delivered to it (its
//! cursor), committed after the receiver answered: the leader delivers each event at
//! least once, in order, and a new leader goes on from the cursors. A hook is told
//! only about events after it was made. Cursors of a release go with its compaction.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use flotilla_shared::model::{HostId, ServiceName};
use flotilla_shared::window::{self, Hold, Window};

use super::{ReleaseId, Response};
use crate::engine::{Event, EventKind};

/// Whether `name` may name a window or a hook: 1 to 63 letters, digits, `-`, `_` or `.`.
pub fn valid_name(name: &str) -> bool {
    (1..=63).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The most webhooks a cluster keeps.
pub const MAX_HOOKS: usize = 64;

/// What a webhook can be told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyKind {
    /// A release was submitted.
    Started,
    /// A release waits for a human approval (a gate, a stage).
    NeedsApproval,
    /// A release paused (a failure with `on_failure = "pause"`, an inconclusive
    /// analysis, an operator).
    Paused,
    /// A release ended failed.
    Failed,
    /// A release ended rolled back.
    RolledBack,
    /// A release ended succeeded.
    Succeeded,
    /// An operator aborted a release.
    Aborted,
}

impl NotifyKind {
    /// Every kind, in order.
    pub const ALL: [NotifyKind; 7] = [
        NotifyKind::Started,
        NotifyKind::NeedsApproval,
        NotifyKind::Paused,
        NotifyKind::Failed,
        NotifyKind::RolledBack,
        NotifyKind::Succeeded,
        NotifyKind::Aborted,
    ];

    /// The kind of notification a release event is, if any.
    pub fn of(kind: EventKind) -> Option<NotifyKind> {
        Some(match kind {
            EventKind::ReleaseCreated => NotifyKind::Started,
            EventKind::ApprovalRequired => NotifyKind::NeedsApproval,
            EventKind::Paused => NotifyKind::Paused,
            EventKind::ReleaseFailed => NotifyKind::Failed,
            EventKind::ReleaseRolledBack => NotifyKind::RolledBack,
            EventKind::ReleaseSucceeded => NotifyKind::Succeeded,
            EventKind::ReleaseAborted => NotifyKind::Aborted,
            _ => return None,
        })
    }

    /// Its name (`needs_approval`), as written in configuration and on the wire.
    pub fn name(self) -> &'static str {
        match self {
            NotifyKind::Started => "started",
            NotifyKind::NeedsApproval => "needs_approval",
            NotifyKind::Paused => "paused",
            NotifyKind::Failed => "failed",
            NotifyKind::RolledBack => "rolled_back",
            NotifyKind::Succeeded => "succeeded",
            NotifyKind::Aborted => "aborted",
        }
    }

    /// Reads a name.
    pub fn parse(name: &str) -> Result<NotifyKind, String> {
        let name = name.trim();
        Self::ALL.into_iter().find(|k| k.name() == name).ok_or_else(|| {
            let all: Vec<&str> = Self::ALL.iter().map(|k| k.name()).collect();
            format!("`{name}` is not an event a hook can be told about: use {}", all.join(", "))
        })
    }
}

/// What a hook's requests carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookFormat {
    /// Flotilla's JSON document (`docs/operations.md`).
    Json,
    /// A Slack incoming-webhook message (`{"text": ...}`).
    Slack,
}

/// A webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hook {
    /// Its name, unique in the cluster (part of every delivery id).
    pub name: String,
    /// Where requests go (`http://` or `https://`).
    pub url: String,
    /// What it is told about.
    pub kinds: BTreeSet<NotifyKind>,
    /// The body of its requests.
    pub format: HookFormat,
    /// Set from the coordinators' configuration (`[[notify]]`), not through the API.
    pub from_config: bool,
}

/// A webhook as the cluster keeps it, with where its deliveries are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookRecord {
    /// The hook.
    pub hook: Hook,
    /// Who set it last.
    pub set_by: String,
    /// When it was first set: it is told about events from then on.
    pub created_unix_ms: i64,
    /// Per release, the index of the last event delivered.
    pub cursors: BTreeMap<ReleaseId, u64>,
    /// Deliveries the receiver accepted.
    pub delivered: u64,
    /// Attempts that failed.
    pub failed: u64,
    /// The last failure, while the delivery it concerns is still pending.
    pub failing: Option<HookFailure>,
}

/// A delivery that failed and is tried again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookFailure {
    /// The release.
    pub release: ReleaseId,
    /// The event's index.
    pub event: u64,
    /// How many attempts failed in a row.
    pub attempts: u64,
    /// What went wrong the last time.
    pub error: String,
    /// When (leader's clock).
    pub at_unix_ms: i64,
}

impl HookRecord {
    /// The events of `release` still to deliver to this hook, in order, with their kind.
    pub fn pending<'e>(&self, release: &str, events: &'e [Event]) -> impl Iterator<Item = (&'e Event, NotifyKind)> {
        let after = self.cursors.get(release).copied().unwrap_or(0);
        let since = self.created_unix_ms;
        let kinds = &self.hook.kinds;
        // Events are indexed from 1 without gaps: those after the cursor start at
        // position `after`. A release whose last event came before the hook has none.
        let start = usize::try_from(after).unwrap_or(usize::MAX).min(events.len());
        let rest = if events.last().is_some_and(|e| e.at_unix_ms >= since) { &events[start..] } else { &[] };
        rest.iter()
            .filter(move |e| e.index > after && e.at_unix_ms >= since)
            .filter_map(move |e| NotifyKind::of(e.kind).filter(|k| kinds.contains(k)).map(|k| (e, k)))
    }

    /// The delivery id of event `index` of `release` (`<release>.<index>.<hook>`):
    /// receivers drop a second delivery of the same id.
    pub fn delivery_id(&self, release: &str, index: u64) -> String {
        format!("{release}.{index}.{}", self.hook.name)
    }
}

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
    /// Sets a webhook (one of the same name is replaced, keeping where its deliveries
    /// are).
    SetHook {
        /// The hook, checked by the leader.
        hook: Hook,
        /// Who.
        actor: String,
    },
    /// Removes a webhook; what it was not told yet is dropped.
    RemoveHook {
        /// Its name.
        name: String,
        /// Who.
        actor: String,
    },
    /// A hook's receiver accepted an event of a release: its cursor moves there.
    HookDelivered {
        /// The hook.
        hook: String,
        /// The release.
        release: ReleaseId,
        /// The event's index.
        event: u64,
    },
    /// Delivering an event to a hook failed; it is tried again.
    HookFailed {
        /// The hook.
        hook: String,
        /// The release.
        release: ReleaseId,
        /// The event's index.
        event: u64,
        /// What went wrong.
        error: String,
    },
}

impl fmt::Display for PolicyOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyOp::SetWindow { window, actor } => {
                write!(f, "{actor} set {} window {} ({})", window.effect, window.name, window.when)
            }
            PolicyOp::RemoveWindow { name, actor } => write!(f, "{actor} removed window {name}"),
            PolicyOp::SetHook { hook, actor } => write!(f, "{actor} set hook {} ({})", hook.name, hook.url),
            PolicyOp::RemoveHook { name, actor } => write!(f, "{actor} removed hook {name}"),
            PolicyOp::HookDelivered { hook, release, event } => {
                write!(f, "event {event} of {release} delivered to hook {hook}")
            }
            PolicyOp::HookFailed { hook, release, event, .. } => {
                write!(f, "event {event} of {release} not delivered to hook {hook}")
            }
        }
    }
}

/// The release policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyState {
    windows: BTreeMap<String, WindowRecord>,
    /// How many changes to the windows were applied.
    revision: u64,
    hooks: BTreeMap<String, HookRecord>,
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
            PolicyOp::SetHook { hook, actor } => return self.set_hook(at, hook, actor),
            PolicyOp::RemoveHook { name, .. } => {
                return match self.hooks.remove(name) {
                    Some(_) => Response::Done,
                    None => Response::Refused { reason: format!("there is no hook {name}") },
                };
            }
            PolicyOp::HookDelivered { hook, release, event } => {
                let Some(h) = self.hooks.get_mut(hook) else {
                    return Response::Refused { reason: format!("there is no hook {hook}") };
                };
                let cursor = h.cursors.entry(release.clone()).or_default();
                *cursor = (*cursor).max(*event);
                h.delivered += 1;
                if h.failing.as_ref().is_some_and(|f| &f.release == release && f.event <= *event) {
                    h.failing = None;
                }
                return Response::Done;
            }
            PolicyOp::HookFailed { hook, release, event, error } => {
                let Some(h) = self.hooks.get_mut(hook) else {
                    return Response::Refused { reason: format!("there is no hook {hook}") };
                };
                h.failed += 1;
                let attempts = match &h.failing {
                    Some(f) if &f.release == release && f.event == *event => f.attempts + 1,
                    _ => 1,
                };
                h.failing = Some(HookFailure {
                    release: release.clone(),
                    event: *event,
                    attempts,
                    error: error.clone(),
                    at_unix_ms: at,
                });
                return Response::Done;
            }
        }
        self.revision += 1;
        Response::Done
    }

    fn set_hook(&mut self, at: i64, hook: &Hook, actor: &str) -> Response {
        if hook.name.is_empty() || hook.url.is_empty() {
            return Response::Refused { reason: "a hook needs a name and a URL".to_owned() };
        }
        match self.hooks.get_mut(&hook.name) {
            Some(existing) => {
                existing.hook = hook.clone();
                existing.set_by = actor.to_owned();
            }
            None => {
                if self.hooks.len() >= MAX_HOOKS {
                    return Response::Refused {
                        reason: format!("the cluster keeps at most {MAX_HOOKS} hooks: remove one first"),
                    };
                }
                self.hooks.insert(
                    hook.name.clone(),
                    HookRecord {
                        hook: hook.clone(),
                        set_by: actor.to_owned(),
                        created_unix_ms: at,
                        cursors: BTreeMap::new(),
                        delivered: 0,
                        failed: 0,
                        failing: None,
                    },
                );
            }
        }
        Response::Done
    }

    /// Forgets a release's cursors (it was compacted: nothing more is told about it).
    pub(super) fn forget_release(&mut self, release: &str) {
        for h in self.hooks.values_mut() {
            h.cursors.remove(release);
            if h.failing.as_ref().is_some_and(|f| f.release == release) {
                h.failing = None;
            }
        }
    }

    /// The webhooks, by name.
    pub fn hooks(&self) -> impl Iterator<Item = &HookRecord> {
        self.hooks.values()
    }

    /// A webhook by name.
    pub fn hook(&self, name: &str) -> Option<&HookRecord> {
        self.hooks.get(name)
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

    fn hook(name: &str, kinds: &[NotifyKind]) -> Hook {
        Hook {
            name: name.to_owned(),
            url: "http://127.0.0.1:9/hook".to_owned(),
            kinds: kinds.iter().copied().collect(),
            format: HookFormat::Json,
            from_config: false,
        }
    }

    fn event(index: u64, at: i64, kind: EventKind) -> Event {
        Event::new(index, at, kind, format!("event {index}"))
    }

    #[test]
    fn a_hook_is_told_the_events_of_its_kinds_after_it_was_made_from_its_cursor_on() {
        let mut p = PolicyState::default();
        let set =
            PolicyOp::SetHook { hook: hook("ops", &[NotifyKind::Started, NotifyKind::Succeeded]), actor: "a".into() };
        assert_eq!(p.apply(100, &set), Response::Done);
        let events = [
            event(1, 90, EventKind::ReleaseCreated),
            event(2, 100, EventKind::StageStarted),
            event(3, 110, EventKind::Paused),
            event(4, 120, EventKind::ReleaseSucceeded),
        ];
        let pending = |p: &PolicyState| -> Vec<u64> {
            p.hook("ops").unwrap().pending("r-1", &events).map(|(e, _)| e.index).collect()
        };
        assert_eq!(pending(&p), [4], "event 1 came before the hook, 2 and 3 are not its kinds");
        assert_eq!(p.hook("ops").unwrap().delivery_id("r-1", 4), "r-1.4.ops");

        let failed = |error: &str| PolicyOp::HookFailed {
            hook: "ops".into(),
            release: "r-1".into(),
            event: 4,
            error: error.into(),
        };
        p.apply(130, &failed("connection refused"));
        p.apply(131, &failed("status 503"));
        let f = p.hook("ops").unwrap().failing.clone().unwrap();
        assert_eq!((f.attempts, f.error.as_str(), f.at_unix_ms), (2, "status 503", 131));
        assert_eq!(pending(&p), [4], "a failed delivery is still pending");

        let delivered = PolicyOp::HookDelivered { hook: "ops".into(), release: "r-1".into(), event: 4 };
        assert_eq!(p.apply(140, &delivered), Response::Done);
        let h = p.hook("ops").unwrap();
        assert_eq!((h.delivered, h.failed, h.failing.clone()), (1, 2, None));
        assert!(pending(&p).is_empty());

        // Setting the hook again keeps its cursors; compaction forgets the release.
        p.apply(150, &set);
        assert!(pending(&p).is_empty());
        assert_eq!(p.hook("ops").unwrap().created_unix_ms, 100);
        p.forget_release("r-1");
        assert!(p.hook("ops").unwrap().cursors.is_empty());
        let gone = PolicyOp::RemoveHook { name: "ops".into(), actor: "a".into() };
        assert_eq!(p.apply(160, &gone), Response::Done);
        assert!(matches!(p.apply(161, &delivered), Response::Refused { .. }));
        assert_eq!(p.revision(), 0, "hooks do not make the engine decide again");
    }

    #[test]
    fn notify_kinds_read_back_and_name_the_choices_when_wrong() {
        for k in NotifyKind::ALL {
            assert_eq!(NotifyKind::parse(k.name()), Ok(k));
        }
        let e = NotifyKind::parse("deployed").unwrap_err();
        assert!(e.contains("`deployed` is not an event") && e.contains("needs_approval"), "{e}");
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
