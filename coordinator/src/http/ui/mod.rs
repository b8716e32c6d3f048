//! The web dashboard under `/ui` on the HTTP listener: releases, a release with its
//! dependency graph, stages, batches, hosts, rollback and live events, the fleet and
//! the cluster. Every coordinator serves it from its own applied state (a follower's
//! pages lag the leader's by its replication lag), under the listener's TLS rules.
//!
//! - `GET /ui` — releases, newest first (`?state=all|active|succeeded|failed`).
//! - `GET /ui/releases/{id}` — a release; `?part=live` only its changing parts (what
//!   the page's script swaps in as events arrive).
//! - `GET /ui/releases/{id}/events` — its events as server-sent events (`text/event-stream`),
//!   from the same event log `Releases.Watch` streams, after `Last-Event-ID` (or
//!   `?after=N`): a reconnecting browser resumes where it stopped. The stream ends
//!   (`event: end`) once the release has finished and every event is sent.
//! - `GET /ui/fleet`, `GET /ui/cluster`.
//! - `GET /ui/assets/{style.css,app.js}` — embedded in the binary; no framework, no
//!   network.

mod graph;
mod pages;

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use flotilla_engine::HostState;
use flotilla_proto::v1;
use serde::Deserialize;

use super::Endpoints;
use crate::node::Node;
use crate::server::release_view;
use crate::state::{ReleaseRecord, State as ClusterState};

const STYLE: &str = include_str!("assets/style.css");
const SCRIPT: &str = include_str!("assets/app.js");

/// How often an idle event stream sends a comment, so proxies and the browser keep it.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The dashboard's routes.
pub(super) fn routes() -> Router<Endpoints> {
    Router::new()
        .route("/ui", get(releases))
        .route("/ui/", get(releases))
        .route("/ui/releases/{id}", get(release))
        .route("/ui/releases/{id}/events", get(events))
        .route("/ui/fleet", get(fleet))
        .route("/ui/cluster", get(cluster))
        .route("/ui/assets/{name}", get(asset))
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            // Nothing but this page's own script and style; no framing.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
                 form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    state: Option<String>,
}

async fn releases(State(e): State<Endpoints>, Query(q): Query<ListQuery>) -> Response {
    let filter = q.state.as_deref().unwrap_or("all");
    let Some((_, states)) = pages::FILTERS.iter().find(|(name, _)| *name == filter) else {
        let names: Vec<&str> = pages::FILTERS.iter().map(|f| f.0).collect();
        return html(
            StatusCode::BAD_REQUEST,
            pages::missing(&format!("no filter {filter}: the filters are {}", names.join(", ")), e.node.id()),
        );
    };
    let wanted = |state: v1::ReleaseState| states.is_empty() || states.contains(&state);
    let mut list: Vec<(u64, v1::ReleaseSummary, String)> = e.node.read_local(|s| {
        s.releases()
            .map(|r| {
                let summary = release_view::summary(r, crate::server::services_total(r));
                (r.created_index, summary, r.submitted.created_by.clone())
            })
            .chain(s.history().map(|c| (c.created_index, release_view::compacted_summary(c), c.created_by.clone())))
            .filter(|(_, summary, _)| wanted(summary.state()))
            .collect()
    });
    list.sort_by(|a, b| (b.0, &b.1.id).cmp(&(a.0, &a.1.id)));
    let rows: Vec<(v1::ReleaseSummary, String)> = list.into_iter().map(|(_, s, by)| (s, by)).collect();
    html(StatusCode::OK, pages::releases(&rows, filter, e.node.id(), now_ms()))
}

#[derive(Debug, Deserialize)]
struct ReleaseQuery {
    part: Option<String>,
}

/// The release's view as `Releases.Get` answers it, what the page adds, and its events.
fn read_release(s: &ClusterState, id: &str) -> Option<(v1::Release, pages::ReleaseExtra, Vec<v1::ReleaseEvent>)> {
    if let Some(r) = s.release(id) {
        let events = r.run.events.iter().map(|ev| release_view::event(id, ev)).collect();
        return Some((crate::server::release_page_view(r), extra(r), events));
    }
    s.compacted(id).map(|c| (release_view::compacted(c), pages::ReleaseExtra::default(), Vec::new()))
}

/// Per stage and service its batches and hosts, and the decided rollback.
fn extra(r: &ReleaseRecord) -> pages::ReleaseExtra {
    let run = &r.run;
    let mut out = pages::ReleaseExtra::default();
    for (index, stage) in run.stages.iter().enumerate() {
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        for (name, service) in &stage.services {
            let batches = service
                .batches
                .iter()
                .map(|b| pages::BatchRow {
                    name: b.name.clone(),
                    hosts: b
                        .hosts
                        .iter()
                        .map(|h| {
                            let state = service.hosts.get(h);
                            let (class, words) = match state {
                                None | Some(HostState::Waiting) => ("st-waiting", "waiting".to_owned()),
                                Some(HostState::Skipped) => ("st-done", "already at the version".to_owned()),
                                Some(HostState::Deploying(_)) => ("st-active", "deploying".to_owned()),
                                Some(HostState::Deployed) => ("st-active", "deployed, waiting to bake".to_owned()),
                                Some(HostState::Baking(_)) => ("st-active", "baking".to_owned()),
                                Some(HostState::Done) => ("st-done", "done".to_owned()),
                                Some(HostState::Failed(why)) => ("st-failed", format!("failed: {why}")),
                                Some(HostState::Cancelled) => ("st-cancelled", "cancelled".to_owned()),
                            };
                            pages::HostRow {
                                host: h.to_string(),
                                state: words,
                                class,
                                from: service.from.get(h).cloned().flatten(),
                            }
                        })
                        .collect(),
                })
                .collect();
            out.batches.insert((index, name.to_string()), batches);
        }
    }
    if let Some(rollback) = &run.rollback {
        out.rollback_members = rollback.members.iter().map(|(s, why)| (s.to_string(), why.clone())).collect();
        out.rollback_actions = rollback.actions.iter().map(ToString::to_string).collect();
        out.rollback_done = rollback.position.min(rollback.actions.len());
    }
    out
}

async fn release(State(e): State<Endpoints>, Path(id): Path<String>, Query(q): Query<ReleaseQuery>) -> Response {
    let node_id = e.node.id();
    let Some((view, extra, events)) = e.node.read_local(|s| read_release(s, &id)) else {
        return html(StatusCode::NOT_FOUND, pages::missing(&format!("No release {id} on this coordinator."), node_id));
    };
    match q.part.as_deref() {
        Some("live") => html(StatusCode::OK, pages::live(&view, &extra).into_string()),
        Some(other) => html(
            StatusCode::BAD_REQUEST,
            pages::missing(&format!("no part {other} of a release page: the one part is live"), node_id),
        ),
        None => html(StatusCode::OK, pages::release(&view, &extra, &events, node_id)),
    }
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    after: Option<u64>,
}

/// One server-sent event: its id (the event's index), type and JSON data.
fn sse(e: &v1::ReleaseEvent) -> String {
    let data = serde_json::json!({
        "index": e.index,
        "at_unix_ms": e.at_unix_ms,
        "message": e.message,
        "html": pages::event(e).into_string(),
    });
    format!("id: {}\nevent: release\ndata: {data}\n\n", e.index)
}

/// What one look at the release gives the stream: events after the last sent, whether
/// it has finished, and whether it is there at all.
fn events_after(node: &Node, id: &str, after: u64) -> Option<(Vec<v1::ReleaseEvent>, bool)> {
    node.read_local(|s| {
        if let Some(r) = s.release(id) {
            let start = usize::try_from(after).unwrap_or(usize::MAX).min(r.run.events.len());
            let events = r.run.events[start..].iter().map(|ev| release_view::event(id, ev)).collect();
            return Some((events, r.run.is_finished()));
        }
        s.compacted(id).map(|_| (Vec::new(), true))
    })
}

async fn events(
    State(e): State<Endpoints>,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Response {
    let resumed = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok());
    let mut after: u64 = resumed.or(q.after).unwrap_or(0);
    let node = e.node;
    if events_after(&node, &id, after).is_none() {
        return html(
            StatusCode::NOT_FOUND,
            pages::missing(&format!("No release {id} on this coordinator."), node.id()),
        );
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, Infallible>>(64);
    tokio::spawn(async move {
        let mut metrics = node.raft().metrics();
        let mut life = node.lifecycle_changes();
        // Tells the browser how long to wait before reconnecting.
        if tx.send(Ok("retry: 2000\n\n".to_owned())).await.is_err() {
            return;
        }
        loop {
            let Some((events, finished)) = events_after(&node, &id, after) else { return };
            for ev in &events {
                after = ev.index;
                if tx.send(Ok(sse(ev))).await.is_err() {
                    return;
                }
            }
            if finished {
                let _ = tx.send(Ok("event: end\ndata: {}\n\n".to_owned())).await;
                return;
            }
            if node.lifecycle() != crate::node::Lifecycle::Serving {
                return;
            }
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { return },
                _ = life.changed() => {}
                () = tokio::time::sleep(KEEP_ALIVE) => {
                    if tx.send(Ok(": keep-alive\n\n".to_owned())).await.is_err() {
                        return;
                    }
                }
                () = tx.closed() => return,
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        body,
    )
        .into_response()
}

async fn fleet(State(e): State<Endpoints>) -> Response {
    let hosts = e.node.read_local(|s| {
        s.fleet()
            .agents()
            .iter()
            .map(|(id, a)| crate::fleet::wire::host(id, a, e.hub.liveness(id, a.online), s.enrolment().host(id)))
            .collect::<Vec<_>>()
    });
    html(StatusCode::OK, pages::fleet(&hosts, e.node.id(), now_ms()))
}

async fn cluster(State(e): State<Endpoints>) -> Response {
    html(StatusCode::OK, pages::cluster(&crate::server::cluster_status(&e.node)))
}

async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "style.css" => (STYLE, "text/css; charset=utf-8"),
        "app.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "max-age=300"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests;
