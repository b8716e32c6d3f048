//! The `Policy` service: deployment windows and freezes, and webhooks, set and removed
//! through Raft, listed from the applied state.

use std::collections::BTreeMap;

use flotilla_proto::status::Reason;
use flotilla_proto::v1;
use flotilla_proto::v1::policy_client::PolicyClient;
use flotilla_proto::v1::policy_server::Policy;
use flotilla_shared::model::{LabelSelector, ServiceName};
use flotilla_shared::window::{self, Effect, When, Window, WindowError, format_time_of_day};
use tonic::{Request, Response, Status};

use super::on_leader;
use crate::audit::AuditNote;
use crate::auth::Actor;
use crate::error::CoordinatorError;
use crate::node::{Node, now_unix_ms};
use crate::state::{
    Hook, HookFormat, HookRecord, NotifyKind, Op, PolicyOp, PolicyState, ReleaseRecord, Response as Applied, State,
    WindowRecord, valid_name,
};

/// Serves `Policy` for one node.
#[derive(Debug, Clone)]
pub struct PolicyService {
    node: Node,
}

impl PolicyService {
    /// The service of `node`.
    pub fn new(node: Node) -> Self {
        Self { node }
    }
}

fn no_window(name: &str) -> CoordinatorError {
    CoordinatorError::NotFound {
        reason: Reason::WindowNotFound,
        resource_type: "flotilla.v1.Window",
        name: name.to_owned(),
        message: format!("there is no window {name}: `flotilla policy window list` shows them"),
    }
}

fn invalid(field: &'static str) -> impl Fn(WindowError) -> CoordinatorError {
    move |e| CoordinatorError::InvalidField { field, message: format!("`{field}`: {e}") }
}

/// A window from the wire, checked; every error names its field.
pub fn window_from_wire(w: &v1::Window) -> Result<Window, CoordinatorError> {
    let name = checked_name("window.name", &w.name)?;
    let effect = match v1::WindowEffect::try_from(w.effect) {
        Ok(v1::WindowEffect::Allow) => Effect::Allow,
        Ok(v1::WindowEffect::Deny) => Effect::Deny,
        _ => {
            return Err(CoordinatorError::InvalidField {
                field: "window.effect",
                message: "`window.effect` must be ALLOW or DENY".to_owned(),
            });
        }
    };
    let when = match (&w.once, &w.weekly) {
        (Some(o), None) => {
            if o.until_unix_ms <= o.from_unix_ms {
                return Err(CoordinatorError::InvalidField {
                    field: "window.once",
                    message: format!(
                        "`window.once` ends ({}) before it starts ({})",
                        window::format_instant(o.until_unix_ms),
                        window::format_instant(o.from_unix_ms)
                    ),
                });
            }
            When::Once { from_unix_ms: o.from_unix_ms, until_unix_ms: o.until_unix_ms }
        }
        (None, Some(wk)) => {
            When::weekly(&wk.days, &wk.start, &wk.end, wk.time_zone.trim()).map_err(invalid("window.weekly"))?
        }
        _ => {
            return Err(CoordinatorError::InvalidField {
                field: "window",
                message: "a window is either `once` (two instants) or `weekly` (days, times, time zone): give one"
                    .to_owned(),
            });
        }
    };
    let mut services = std::collections::BTreeSet::new();
    for s in &w.services {
        let s = s.trim();
        if s.is_empty() {
            return Err(CoordinatorError::InvalidField {
                field: "window.services",
                message: "`window.services` holds an empty name".to_owned(),
            });
        }
        services.insert(ServiceName::new(s));
    }
    let mut hosts = BTreeMap::new();
    for (k, v) in &w.host_labels {
        if k.trim().is_empty() {
            return Err(CoordinatorError::InvalidField {
                field: "window.host_labels",
                message: format!("`window.host_labels` has a label with no name (value `{v}`)"),
            });
        }
        hosts.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    Ok(Window { name, effect, services, hosts: LabelSelector(hosts), when, reason: w.reason.trim().to_owned() })
}

/// A stored window on the wire, with whether it is in effect at `now`.
pub fn window_wire(r: &WindowRecord, now: i64) -> v1::Window {
    let w = &r.window;
    let (once, weekly) = match &w.when {
        When::Once { from_unix_ms, until_unix_ms } => {
            (Some(v1::OnceWindow { from_unix_ms: *from_unix_ms, until_unix_ms: *until_unix_ms }), None)
        }
        When::Weekly { days, start, end, time_zone } => (
            None,
            Some(v1::WeeklyWindow {
                days: days.to_string(),
                start: format_time_of_day(*start),
                end: format_time_of_day(*end),
                time_zone: time_zone.clone(),
            }),
        ),
    };
    let current = w.when.in_effect(now);
    v1::Window {
        name: w.name.clone(),
        effect: match w.effect {
            Effect::Allow => v1::WindowEffect::Allow,
            Effect::Deny => v1::WindowEffect::Deny,
        } as i32,
        services: w.services.iter().map(ToString::to_string).collect(),
        host_labels: w.hosts.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        once,
        weekly,
        reason: w.reason.clone(),
        set_by: r.set_by.clone(),
        set_unix_ms: r.set_unix_ms,
        in_effect: current.is_some(),
        next_change_unix_ms: current.map(|(_, end)| end).or_else(|| w.when.next_start(now)).unwrap_or(0),
    }
}

fn no_hook(name: &str) -> CoordinatorError {
    CoordinatorError::NotFound {
        reason: Reason::HookNotFound,
        resource_type: "flotilla.v1.Hook",
        name: name.to_owned(),
        message: format!("there is no hook {name}: `flotilla policy hook list` shows them"),
    }
}

/// A window's or a hook's name: 1 to 63 letters, digits, `-`, `_` or `.`.
fn checked_name(field: &'static str, name: &str) -> Result<String, CoordinatorError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(CoordinatorError::missing(field));
    }
    if !valid_name(name) {
        return Err(CoordinatorError::InvalidField {
            field,
            message: format!("`{field}` is `{name}`: a name is 1 to 63 letters, digits, `-`, `_` or `.`"),
        });
    }
    Ok(name.to_owned())
}

/// Checks a webhook's URL: `http://` or `https://` with a host.
pub fn check_hook_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{url}` is not an http:// or https:// URL with a host"));
    }
    Ok(())
}

/// A hook from the wire, checked; every error names its field.
pub fn hook_from_wire(h: &v1::Hook) -> Result<Hook, CoordinatorError> {
    let name = checked_name("hook.name", &h.name)?;
    let url = h.url.trim().to_owned();
    check_hook_url(&url).map_err(|message| CoordinatorError::InvalidField { field: "hook.url", message })?;
    let mut kinds = std::collections::BTreeSet::new();
    for e in &h.events {
        kinds.insert(
            NotifyKind::parse(e).map_err(|m| CoordinatorError::InvalidField { field: "hook.events", message: m })?,
        );
    }
    if kinds.is_empty() {
        return Err(CoordinatorError::InvalidField {
            field: "hook.events",
            message: "`hook.events` is empty: name what the hook is told about (started, succeeded, ...)".to_owned(),
        });
    }
    let format = match v1::HookFormat::try_from(h.format) {
        Ok(v1::HookFormat::Json) => HookFormat::Json,
        Ok(v1::HookFormat::Slack) => HookFormat::Slack,
        _ => {
            return Err(CoordinatorError::InvalidField {
                field: "hook.format",
                message: "`hook.format` must be JSON or SLACK".to_owned(),
            });
        }
    };
    Ok(Hook { name, url, kinds, format, from_config: false })
}

/// A stored hook on the wire, with how many events of the releases `state` keeps whole
/// it is still to be told about.
pub fn hook_wire(r: &HookRecord, state: &State) -> v1::Hook {
    let failing = r.failing.as_ref();
    v1::Hook {
        name: r.hook.name.clone(),
        url: r.hook.url.clone(),
        events: r.hook.kinds.iter().map(|k| k.name().to_owned()).collect(),
        format: match r.hook.format {
            HookFormat::Json => v1::HookFormat::Json,
            HookFormat::Slack => v1::HookFormat::Slack,
        } as i32,
        from_config: r.hook.from_config,
        set_by: r.set_by.clone(),
        created_unix_ms: r.created_unix_ms,
        delivered: r.delivered,
        failed: r.failed,
        failing_release_id: failing.map(|f| f.release.clone()).unwrap_or_default(),
        failing_event_index: failing.map_or(0, |f| f.event),
        failed_attempts: failing.map_or(0, |f| f.attempts),
        last_error: failing.map(|f| f.error.clone()).unwrap_or_default(),
        last_error_unix_ms: failing.map_or(0, |f| f.at_unix_ms),
        pending: state.undelivered(r),
    }
}

/// Where each hook is with a release's events (hooks with nothing of it left out).
pub fn notifications(policy: &PolicyState, r: &ReleaseRecord) -> Vec<v1::Notification> {
    policy
        .hooks()
        .filter_map(|h| {
            let delivered_up_to = h.cursors.get(r.id()).copied().unwrap_or(0);
            let pending = h.pending(r.id(), &r.run.events).count();
            let failing = h.failing.as_ref().filter(|f| &f.release == r.id());
            if delivered_up_to == 0 && pending == 0 && failing.is_none() {
                return None;
            }
            Some(v1::Notification {
                hook: h.hook.name.clone(),
                delivered_up_to,
                pending: u32::try_from(pending).unwrap_or(u32::MAX),
                failed_attempts: failing.map_or(0, |f| f.attempts),
                last_error: failing.map(|f| f.error.clone()).unwrap_or_default(),
                last_error_unix_ms: failing.map_or(0, |f| f.at_unix_ms),
            })
        })
        .collect()
}

/// Commits a change to the policy (this node leads); a refusal becomes `refused(why)`.
async fn change(
    node: &Node,
    op: PolicyOp,
    refused: impl FnOnce(String) -> CoordinatorError,
) -> Result<(), CoordinatorError> {
    match node.propose(Op::Policy(op)).await? {
        Applied::Refused { reason } => Err(refused(reason)),
        _ => Ok(()),
    }
}

#[tonic::async_trait]
impl Policy for PolicyService {
    async fn set_window(
        &self,
        request: Request<v1::SetWindowRequest>,
    ) -> Result<Response<v1::SetWindowResponse>, Status> {
        let node = self.node.clone();
        let actor = Actor::of(&request).name;
        let name = request.get_ref().window.as_ref().map(|w| w.name.trim().to_owned()).unwrap_or_default();
        AuditNote::of(&request).target(format!("window {name}"));
        on_leader(
            &self.node,
            request,
            |req| async move {
                let wire = req.window.ok_or_else(|| CoordinatorError::missing("window"))?;
                let window = window_from_wire(&wire)?;
                let name = window.name.clone();
                change(&node, PolicyOp::SetWindow { window, actor }, |why| {
                    CoordinatorError::precondition(Reason::StateConflict, why)
                })
                .await?;
                tracing::info!(window = %name, "deployment window set");
                let stored = node
                    .read_local(|s| s.policy().window(&name).map(|r| window_wire(r, now_unix_ms())))
                    .ok_or_else(|| no_window(&name))?;
                Ok(v1::SetWindowResponse { window: Some(stored) })
            },
            |ch, req| async move { PolicyClient::new(ch).set_window(req).await },
        )
        .await
    }

    async fn remove_window(
        &self,
        request: Request<v1::RemoveWindowRequest>,
    ) -> Result<Response<v1::RemoveWindowResponse>, Status> {
        let node = self.node.clone();
        let actor = Actor::of(&request).name;
        AuditNote::of(&request).target(format!("window {}", request.get_ref().name.trim()));
        on_leader(
            &self.node,
            request,
            |req| async move {
                let name = req.name.trim().to_owned();
                if name.is_empty() {
                    return Err(CoordinatorError::missing("name"));
                }
                change(&node, PolicyOp::RemoveWindow { name: name.clone(), actor }, |_| no_window(&name)).await?;
                tracing::info!(window = %name, "deployment window removed");
                Ok(v1::RemoveWindowResponse {})
            },
            |ch, req| async move { PolicyClient::new(ch).remove_window(req).await },
        )
        .await
    }

    /// The windows from this node's applied state.
    async fn list_windows(
        &self,
        _request: Request<v1::ListWindowsRequest>,
    ) -> Result<Response<v1::ListWindowsResponse>, Status> {
        let now = now_unix_ms();
        let windows = self.node.read_local(|s| s.policy().windows().map(|r| window_wire(r, now)).collect());
        Ok(Response::new(v1::ListWindowsResponse { windows }))
    }

    async fn set_hook(&self, request: Request<v1::SetHookRequest>) -> Result<Response<v1::SetHookResponse>, Status> {
        let node = self.node.clone();
        let actor = Actor::of(&request).name;
        let name = request.get_ref().hook.as_ref().map(|h| h.name.trim().to_owned()).unwrap_or_default();
        AuditNote::of(&request).target(format!("hook {name}"));
        on_leader(
            &self.node,
            request,
            |req| async move {
                let wire = req.hook.ok_or_else(|| CoordinatorError::missing("hook"))?;
                let hook = hook_from_wire(&wire)?;
                let name = hook.name.clone();
                change(&node, PolicyOp::SetHook { hook, actor }, |why| {
                    CoordinatorError::precondition(Reason::StateConflict, why)
                })
                .await?;
                tracing::info!(hook = %name, "webhook set");
                let stored = node
                    .read_local(|s| s.policy().hook(&name).map(|r| hook_wire(r, s)))
                    .ok_or_else(|| no_hook(&name))?;
                Ok(v1::SetHookResponse { hook: Some(stored) })
            },
            |ch, req| async move { PolicyClient::new(ch).set_hook(req).await },
        )
        .await
    }

    async fn remove_hook(
        &self,
        request: Request<v1::RemoveHookRequest>,
    ) -> Result<Response<v1::RemoveHookResponse>, Status> {
        let node = self.node.clone();
        let actor = Actor::of(&request).name;
        AuditNote::of(&request).target(format!("hook {}", request.get_ref().name.trim()));
        on_leader(
            &self.node,
            request,
            |req| async move {
                let name = req.name.trim().to_owned();
                if name.is_empty() {
                    return Err(CoordinatorError::missing("name"));
                }
                change(&node, PolicyOp::RemoveHook { name: name.clone(), actor }, |_| no_hook(&name)).await?;
                tracing::info!(hook = %name, "webhook removed");
                Ok(v1::RemoveHookResponse {})
            },
            |ch, req| async move { PolicyClient::new(ch).remove_hook(req).await },
        )
        .await
    }

    /// The hooks from this node's applied state.
    async fn list_hooks(
        &self,
        _request: Request<v1::ListHooksRequest>,
    ) -> Result<Response<v1::ListHooksResponse>, Status> {
        let hooks = self.node.read_local(|s| s.policy().hooks().map(|r| hook_wire(r, s)).collect());
        Ok(Response::new(v1::ListHooksResponse { hooks }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weekly(days: &str, start: &str, end: &str, tz: &str) -> v1::Window {
        v1::Window {
            name: "office".to_owned(),
            effect: v1::WindowEffect::Allow as i32,
            weekly: Some(v1::WeeklyWindow {
                days: days.to_owned(),
                start: start.to_owned(),
                end: end.to_owned(),
                time_zone: tz.to_owned(),
            }),
            ..Default::default()
        }
    }

    fn field_of(e: CoordinatorError) -> (&'static str, String) {
        match e {
            CoordinatorError::InvalidField { field, message } => (field, message),
            other => panic!("not a field error: {other}"),
        }
    }

    #[test]
    fn a_window_reads_from_the_wire_and_back() {
        let mut w = weekly("mon-fri", "09:00", "17:30", "Europe/Berlin");
        w.services = vec!["payments".to_owned()];
        w.host_labels = [("env".to_owned(), "prod".to_owned())].into();
        w.reason = "office hours".to_owned();
        let window = window_from_wire(&w).unwrap();
        assert_eq!(window.when.to_string(), "mon,tue,wed,thu,fri 09:00-17:30 Europe/Berlin");
        let record = WindowRecord { window, set_by: "operator ada".to_owned(), set_unix_ms: 7 };
        let back = window_wire(&record, 0);
        assert_eq!(back.weekly.as_ref().unwrap().days, "mon,tue,wed,thu,fri");
        assert_eq!((back.services, back.host_labels, back.reason), (w.services, w.host_labels, w.reason));
        assert!(!back.in_effect, "1970-01-01 was a Thursday, 00:00 UTC is 01:00 in Berlin");
        assert_eq!(back.next_change_unix_ms, 8 * 3_600_000, "it opens at 09:00 Berlin, 08:00 UTC");
    }

    #[test]
    fn a_bad_window_names_its_field() {
        let (f, m) = field_of(window_from_wire(&weekly("mon", "09:00", "17:00", "Europe/Berln")).unwrap_err());
        assert_eq!(f, "window.weekly");
        assert!(m.contains("`Europe/Berln` is not a time zone"), "{m}");
        let mut w = weekly("mon", "09:00", "17:00", "UTC");
        w.once = Some(v1::OnceWindow { from_unix_ms: 1, until_unix_ms: 2 });
        assert_eq!(field_of(window_from_wire(&w).unwrap_err()).0, "window");
        let mut w = weekly("mon", "09:00", "17:00", "UTC");
        w.effect = 0;
        assert_eq!(field_of(window_from_wire(&w).unwrap_err()).0, "window.effect");
        let mut w = weekly("mon", "09:00", "17:00", "UTC");
        w.name = "two words".to_owned();
        assert_eq!(field_of(window_from_wire(&w).unwrap_err()).0, "window.name");
        let w = v1::Window {
            name: "x".to_owned(),
            effect: v1::WindowEffect::Deny as i32,
            once: Some(v1::OnceWindow { from_unix_ms: 5, until_unix_ms: 5 }),
            ..Default::default()
        };
        let (f, m) = field_of(window_from_wire(&w).unwrap_err());
        assert_eq!(f, "window.once");
        assert!(m.contains("ends"), "{m}");
    }
}
