//! Webhooks on the leader: tells each hook of the replicated policy about the release
//! events of its kinds, at least once and in order per hook.
//!
//! For each hook the leader takes the oldest event still pending (after the hook's
//! cursor for that release, see `state::policy`), POSTs it, and only once the receiver
//! answered 2xx commits `HookDelivered`, which moves the cursor; then the next. A
//! failure is committed as `HookFailed` (so `release show` and `/metrics` on every
//! coordinator see it) and the hook waits, doubling from [`FIRST_RETRY`] up to
//! [`MAX_RETRY`] between attempts, before the same event is tried again. A leader that
//! dies between a receiver's answer and the commit leaves the cursor where it was, and
//! the next leader sends that event again: receivers drop a second delivery by its id
//! (`<release>.<event index>.<hook>`, in the `X-Flotilla-Delivery` header and the JSON
//! body).
//!
//! The `[[notify]]` hooks of this coordinator's configuration are set into the policy
//! when it starts leading (when they differ from what the policy holds).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::engine::Event;
use crate::node::Node;
use crate::state::{Hook, HookFormat, NotifyKind, Op, PolicyOp, State};

/// The first wait after a failed delivery.
pub const FIRST_RETRY: Duration = Duration::from_millis(500);

/// The longest wait between two attempts.
pub const MAX_RETRY: Duration = Duration::from_secs(30);

/// How long a receiver has to answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the leader looks for events to deliver.
const TICK: Duration = Duration::from_millis(200);

/// Most deliveries to one hook per look.
const BATCH: usize = 32;

/// One event to tell one hook about.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `<release>.<event index>.<hook>`.
    pub id: String,
    /// The hook's name.
    pub hook: String,
    /// Where it goes.
    pub url: String,
    /// Its body's format.
    pub format: HookFormat,
    /// What kind of notification it is.
    pub kind: NotifyKind,
    /// The release.
    pub release: String,
    /// The release's name.
    pub release_name: String,
    /// The event.
    pub event: Event,
}

/// Every hook's pending deliveries, oldest first (at most [`BATCH`] per hook).
pub fn pending(state: &State) -> Vec<(String, Vec<Delivery>)> {
    state
        .policy()
        .hooks()
        .map(|h| {
            let mut all: Vec<Delivery> = state
                .releases()
                .flat_map(|r| {
                    h.pending(r.id(), &r.run.events).map(move |(e, kind)| Delivery {
                        id: h.delivery_id(r.id(), e.index),
                        hook: h.hook.name.clone(),
                        url: h.hook.url.clone(),
                        format: h.hook.format,
                        kind,
                        release: r.id().clone(),
                        release_name: r.submitted.name.clone(),
                        event: e.clone(),
                    })
                })
                .collect();
            all.sort_by(|a, b| {
                (a.event.at_unix_ms, &a.release, a.event.index).cmp(&(b.event.at_unix_ms, &b.release, b.event.index))
            });
            all.truncate(BATCH);
            (h.hook.name.clone(), all)
        })
        .collect()
}

/// The body of a delivery, in its hook's format.
pub fn body(d: &Delivery) -> serde_json::Value {
    let e = &d.event;
    match d.format {
        HookFormat::Json => json!({
            "delivery_id": d.id,
            "hook": d.hook,
            "kind": d.kind.name(),
            "release": { "id": d.release, "name": d.release_name, "state": crate::http::release_state_name(e.status) },
            "event": {
                "index": e.index,
                "at": flotilla_shared::window::format_instant(e.at_unix_ms),
                "at_unix_ms": e.at_unix_ms,
                "message": e.message,
                "actor": e.actor,
                "stage": e.stage,
                "services": e.services.iter().map(ToString::to_string).collect::<Vec<_>>(),
            },
        }),
        HookFormat::Slack => {
            let what = match d.kind {
                NotifyKind::Started => "started",
                NotifyKind::NeedsApproval => "needs approval",
                NotifyKind::Paused => "paused",
                NotifyKind::Failed => "failed",
                NotifyKind::RolledBack => "rolled back",
                NotifyKind::Succeeded => "succeeded",
                NotifyKind::Aborted => "was aborted",
            };
            json!({ "text": format!("Release {} ({}) {what}: {}", d.release_name, d.release, e.message) })
        }
    }
}

/// POSTs one delivery; `Err` says why it did not count as delivered.
pub async fn send(client: &reqwest::Client, d: &Delivery) -> Result<(), String> {
    let resp = client
        .post(&d.url)
        .header("X-Flotilla-Delivery", &d.id)
        .header("X-Flotilla-Event", d.kind.name())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body(d).to_string())
        .send()
        .await
        .map_err(|e| {
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                why.push_str(&format!(": {s}"));
                source = s.source();
            }
            why
        })?;
    let status = resp.status();
    if status.is_success() { Ok(()) } else { Err(format!("{} answered {status}", d.url)) }
}

/// The wait after `failures` failed attempts in a row.
pub fn backoff(failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    FIRST_RETRY.saturating_mul(factor).min(MAX_RETRY)
}

/// Starts the notifier: it delivers whenever this node leads.
pub fn spawn(node: Node, configured: Vec<Hook>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = match reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("flotilla-coordinator/", env!("CARGO_PKG_VERSION")))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "no HTTP client for webhooks; none is delivered by this node");
                return;
            }
        };
        let mut leadership = node.leadership();
        loop {
            let term = {
                let l = leadership.borrow_and_update();
                l.leading.then_some(l.term)
            };
            if let Some(term) = term {
                lead(&node, &client, &configured, term, &mut leadership).await;
                // A commit that failed while still leading: look again a little later.
                tokio::time::sleep(TICK).await;
            } else if leadership.changed().await.is_err() {
                return;
            }
        }
    })
}

/// Delivers while this node leads in `term`.
async fn lead(
    node: &Node,
    client: &reqwest::Client,
    configured: &[Hook],
    term: u64,
    leadership: &mut tokio::sync::watch::Receiver<crate::leadership::Leadership>,
) {
    let still = |l: &crate::leadership::Leadership| l.leading && l.term == term;
    // The configured hooks, where the policy does not hold them as configured.
    for hook in configured {
        let stored = node.read_local(|s| s.policy().hook(&hook.name).map(|r| r.hook.clone()));
        if stored.as_ref() != Some(hook) {
            let actor = format!("coordinator {} ([[notify]])", node.id());
            if let Err(e) = node.propose(Op::Policy(PolicyOp::SetHook { hook: hook.clone(), actor })).await {
                tracing::warn!(hook = %hook.name, error = %e, "the configured webhook was not set");
            }
        }
    }
    // Per hook: failures in a row, and when to try again.
    let mut waiting: HashMap<String, (u32, Instant)> = HashMap::new();
    loop {
        if !still(&leadership.borrow()) {
            return;
        }
        let work = node.read_local(pending);
        let now = Instant::now();
        let due: Vec<(String, Vec<Delivery>)> = work
            .into_iter()
            .filter(|(hook, ds)| !ds.is_empty() && waiting.get(hook).is_none_or(|(_, at)| *at <= now))
            .collect();
        let results = futures::future::join_all(due.into_iter().map(|(hook, ds)| async move {
            for d in ds {
                match send(client, &d).await {
                    Ok(()) => {
                        let op = PolicyOp::HookDelivered {
                            hook: d.hook.clone(),
                            release: d.release.clone(),
                            event: d.event.index,
                        };
                        if let Err(e) = node.propose(Op::Policy(op)).await {
                            return (hook, Err(format!("not committed: {e}")), false);
                        }
                        tracing::debug!(delivery = %d.id, "webhook delivered");
                    }
                    Err(why) => {
                        tracing::info!(delivery = %d.id, error = %why, "webhook not delivered; tried again later");
                        let op = PolicyOp::HookFailed {
                            hook: d.hook.clone(),
                            release: d.release.clone(),
                            event: d.event.index,
                            error: why.clone(),
                        };
                        let _ = node.propose(Op::Policy(op)).await;
                        return (hook, Err(why), true);
                    }
                }
            }
            (hook, Ok(()), false)
        }))
        .await;
        for (hook, result, failed) in results {
            match (result, failed) {
                (Ok(()), _) => {
                    waiting.remove(&hook);
                }
                (Err(_), true) => {
                    let failures = waiting.get(&hook).map_or(0, |(n, _)| *n) + 1;
                    waiting.insert(hook, (failures, Instant::now() + backoff(failures)));
                }
                (Err(why), false) => {
                    tracing::debug!(hook, error = %why, "the delivery was not committed");
                    return;
                }
            }
        }
        tokio::select! {
            changed = leadership.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(TICK) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{EventKind, Status};

    fn delivery(format: HookFormat) -> Delivery {
        let mut event = Event::new(7, 1_800_000_000_000, EventKind::ReleaseSucceeded, "release succeeded".into());
        event.status = Status::Succeeded;
        Delivery {
            id: "r-1.7.ops".into(),
            hook: "ops".into(),
            url: "http://127.0.0.1:9/".into(),
            format,
            kind: NotifyKind::Succeeded,
            release: "r-1".into(),
            release_name: "shop".into(),
            event,
        }
    }

    #[test]
    fn a_json_body_names_the_delivery_the_release_and_the_event() {
        let b = body(&delivery(HookFormat::Json));
        assert_eq!(b["delivery_id"], "r-1.7.ops");
        assert_eq!(b["kind"], "succeeded");
        assert_eq!(b["release"], json!({"id": "r-1", "name": "shop", "state": "succeeded"}));
        assert_eq!(b["event"]["index"], 7);
        assert_eq!(b["event"]["at"], "2027-01-15T08:00:00Z");
        assert_eq!(b["event"]["message"], "release succeeded");
    }

    #[test]
    fn a_slack_body_is_one_line_of_text() {
        let b = body(&delivery(HookFormat::Slack));
        assert_eq!(b, json!({"text": "Release shop (r-1) succeeded: release succeeded"}));
    }

    #[test]
    fn retries_back_off_doubling_up_to_the_cap() {
        let waits: Vec<u64> = (1..=9).map(|n| backoff(n).as_millis() as u64).collect();
        assert_eq!(waits, [500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000]);
        assert_eq!(backoff(u32::MAX), MAX_RETRY);
    }
}
