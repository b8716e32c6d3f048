//! The web dashboard under `/ui` on the HTTP listener: releases, a release with its
//! dependency graph, stages, batches, hosts, rollback and live events, the fleet and
//! the cluster. Every coordinator serves it from its own applied state (a follower's
//! pages lag the leader's by its replication lag), under the listener's TLS rules.
//!
//! - `GET /ui` — releases, newest first (`?state=all|active|succeeded|failed`).
//! - `GET /ui/releases/{id}` — a release; `?part=live` only its changing parts (what
//!   the page's script swaps in as events arrive).
//! - `GET /ui/releases/{id}/hosts/{stage}/{service}` — every host of a service in a
//!   stage (the release page lists a dozen of each batch, failed ones first).
//! - `GET /ui/releases/{id}/events` — its events as server-sent events (`text/event-stream`),
//!   from the same event log `Releases.Watch` streams, after `Last-Event-ID` (or
//!   `?after=N`): a reconnecting browser resumes where it stopped. The stream ends
//!   (`event: end`) once the release has finished and every event is sent.
//! - `GET /ui/fleet` — every host with its newest step; `GET /ui/fleet/{host}` — one
//!   host with its recent steps across releases (what `Fleet.GetHost` answers).
//! - `GET /ui/cluster` — members, leader, term, indexes and lag.
//! - `POST /ui/releases/{id}/act` — approve, pause, resume, abort, roll back, or retry or
//!   exclude a failed host, as the
//!   visitor: the dashboard makes the same gRPC call the CLI would, to its own
//!   coordinator, with the visitor's token (or, for a certificate, on their behalf the
//!   way a follower forwards a call), so the roles, the approval rules, the audit trail
//!   and the forwarding to the leader are the API's own. Refusals are shown with the
//!   server's message.
//! - `GET`/`POST /ui/login`, `POST /ui/logout` — a session from an operator token
//!   ([`session`]).
//! - `GET /ui/assets/{style.css,app.js}` — embedded in the binary; no framework, no
//!   network.
//!
//! Pages need the viewer role (any operator); a visitor without a credential is sent to
//! the sign-in page. Action buttons are shown to deployers and admins only.

mod graph;
mod pages;
pub(super) mod session;
mod shared;

use std::convert::Infallible;
use std::time::Duration;

use axum::Form;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use flotilla_engine::HostState;
use flotilla_proto::v1;
use flotilla_shared::model::HostId;
use serde::Deserialize;

use flotilla_proto::v1::releases_client::ReleasesClient;

pub(super) use shared::{EventFrames, LiveParts};

use super::{ConnPeer, Endpoints, peer_of};
use crate::error::CoordinatorError;
use crate::server::fleet::{host_history, newest_step};
use crate::server::release_view;
use crate::state::{ReleaseRecord, State as ClusterState};
use crate::stats;
use session::Visitor;

const STYLE: &str = include_str!("assets/style.css");
const SCRIPT: &str = include_str!("assets/app.js");

/// How often an idle event stream sends a comment, so proxies and the browser keep it.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How long an event stream waits after the node applies an entry before it looks for
/// new events: a release applies entries in bursts, and each viewer looks once per
/// burst rather than once per entry.
const COALESCE: Duration = Duration::from_millis(100);

/// The dashboard's routes.
pub(super) fn routes() -> Router<Endpoints> {
    Router::new()
        .route("/ui", get(releases))
        .route("/ui/", get(releases))
        .route("/ui/releases/{id}", get(release))
        .route("/ui/releases/{id}/events", get(events))
        .route("/ui/releases/{id}/act", post(act))
        .route("/ui/releases/{id}/hosts/{stage}/{service}", get(service_hosts))
        .route("/ui/login", get(sign_in_page).post(sign_in))
        .route("/ui/logout", post(sign_out))
        .route("/ui/fleet", get(fleet))
        .route("/ui/fleet/{host}", get(host))
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

/// The gRPC method a page stands for: every page only reads.
const READ: &str = "/flotilla.v1.Releases/Get";

/// The header's part for `visitor`.
fn chrome(e: &Endpoints, visitor: &Visitor) -> pages::Chrome {
    pages::Chrome {
        node_id: e.node.id(),
        who: (visitor.verdict.is_ok() || visitor.token.is_some()).then(|| visitor.describe()),
        sign_out: visitor.token.is_some().then(|| session::form_token(e, visitor)),
    }
}

fn redirect(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned()), (header::CACHE_CONTROL, "no-store".to_owned())])
        .into_response()
}

/// The visitor of a page when they may read; otherwise the answer: the sign-in page for
/// someone without a credential or whose session's token no longer works (the session
/// ends), a refusal for a credential without an operator role.
fn reader(e: &Endpoints, peer: ConnPeer, headers: &HeaderMap) -> Result<(Visitor, pages::Chrome), Box<Response>> {
    let visitor = session::visitor(e, &peer_of(peer), headers, READ);
    let chrome = chrome(e, &visitor);
    match &visitor.verdict {
        Ok(()) => Ok((visitor, chrome)),
        Err(CoordinatorError::Denied { code: tonic::Code::Unauthenticated, .. }) if visitor.token.is_none() => {
            Err(Box::new(redirect("/ui/login")))
        }
        Err(refusal @ CoordinatorError::Denied { code: tonic::Code::Unauthenticated, .. }) => {
            // A session whose token no longer works (expired, revoked, or unknown to
            // this cluster) ends here: the visitor signs in again.
            let why = format!("Your session has ended: {refusal}");
            let mut answer = html(StatusCode::UNAUTHORIZED, pages::sign_in(&chrome, Some(&why)));
            if let Ok(cookie) = header::HeaderValue::from_str(&session::end_cookie(e.tls)) {
                answer.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            Err(Box::new(answer))
        }
        Err(refusal) => {
            Err(Box::new(html(StatusCode::FORBIDDEN, pages::problem("Not allowed", &refusal.to_string(), &chrome))))
        }
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    state: Option<String>,
}

async fn releases(
    State(e): State<Endpoints>,
    peer: ConnPeer,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    let (_, chrome) = match reader(&e, peer, &headers) {
        Ok(v) => v,
        Err(answer) => return *answer,
    };
    let filter = q.state.as_deref().unwrap_or("all");
    let Some((_, states)) = pages::FILTERS.iter().find(|(name, _)| *name == filter) else {
        let names: Vec<&str> = pages::FILTERS.iter().map(|f| f.0).collect();
        let why = format!("There is no filter {filter}: the filters are {}.", names.join(", "));
        return html(StatusCode::BAD_REQUEST, pages::problem("No such filter", &why, &chrome));
    };
    let wanted = |state: v1::ReleaseState| states.is_empty() || states.contains(&state);
    let (mut list, changes): (Vec<(u64, v1::ReleaseSummary, String)>, _) = e.node.read_local(|s| {
        let list = s
            .releases()
            .map(|r| {
                let summary = release_view::summary(r, crate::server::services_total(r));
                (r.created_index, summary, r.submitted.created_by.clone())
            })
            .chain(s.history().map(|c| (c.created_index, release_view::compacted_summary(c), c.created_by.clone())))
            .filter(|(_, summary, _)| wanted(summary.state()))
            .collect();
        (list, stats::changes(s))
    });
    let now = now_ms();
    let (overall, services) = stats::figures(&changes, now.saturating_sub(stats::DEFAULT_PERIOD_MS), now, None);
    let delivery: Vec<stats::Figures> = std::iter::once(overall).chain(services).collect();
    list.sort_by(|a, b| (b.0, &b.1.id).cmp(&(a.0, &a.1.id)));
    let rows: Vec<(v1::ReleaseSummary, String)> = list.into_iter().map(|(_, s, by)| (s, by)).collect();
    html(StatusCode::OK, pages::releases(&rows, filter, &delivery, &chrome, now))
}

#[derive(Debug, Deserialize)]
struct ReleaseQuery {
    part: Option<String>,
}

/// The newest events a release page shows; the stream carries on after them.
const EVENTS_SHOWN: usize = 200;

/// Hosts a batch lists by name on the release page (all of them on its service's
/// hosts page).
const HOSTS_SHOWN: usize = 12;

/// The release's view as `Releases.Get` answers it, what the page adds, and its newest
/// events.
fn read_release(s: &ClusterState, id: &str) -> Option<(v1::Release, pages::ReleaseExtra, Vec<v1::ReleaseEvent>)> {
    if let Some(r) = s.release(id) {
        let newest = r.run.events.len().saturating_sub(EVENTS_SHOWN);
        let events = r.run.events[newest..].iter().map(|ev| release_view::event(id, ev)).collect();
        return Some((crate::server::release_page_view(r), extra(r, Some(HOSTS_SHOWN)), events));
    }
    s.compacted(id).map(|c| (release_view::compacted(c), pages::ReleaseExtra::default(), Vec::new()))
}

/// One host's state as the page words it, with its CSS class and its order in a short
/// list (failed hosts first, then those at work).
fn host_state(state: Option<&HostState>) -> (&'static str, String, u8) {
    match state {
        None | Some(HostState::Waiting) => ("st-waiting", "waiting".to_owned(), 2),
        Some(HostState::Skipped) => ("st-done", "already at the version".to_owned(), 3),
        Some(HostState::Deploying(_)) => ("st-active", "deploying".to_owned(), 1),
        Some(HostState::Deployed) => ("st-active", "deployed, waiting to bake".to_owned(), 1),
        Some(HostState::Baking(_)) => ("st-active", "baking".to_owned(), 1),
        Some(HostState::Done) => ("st-done", "done".to_owned(), 3),
        Some(HostState::Failed(why)) => ("st-failed", format!("failed: {why}"), 0),
        Some(HostState::Cancelled) => ("st-cancelled", "cancelled".to_owned(), 3),
        Some(HostState::Excluded(why)) => ("st-cancelled", why.clone(), 0),
    }
}

/// Per stage and service its batches (each host listed, or at most `shown` of each
/// batch), and the decided rollback.
fn extra(r: &ReleaseRecord, shown: Option<usize>) -> pages::ReleaseExtra {
    let run = &r.run;
    let mut out = pages::ReleaseExtra::default();
    for (index, stage) in run.stages.iter().enumerate() {
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        for (name, service) in &stage.services {
            let batches = service.batches.iter().map(|b| batch_row(service, b, shown)).collect();
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

fn batch_row(
    service: &flotilla_engine::ServiceRun,
    b: &flotilla_engine::BatchSpec,
    shown: Option<usize>,
) -> pages::BatchRow {
    let mut counts: Vec<(String, usize)> = Vec::new();
    let mut rows: Vec<(u8, pages::HostRow)> = b
        .hosts
        .iter()
        .map(|h| {
            let (class, words, rank) = host_state(service.hosts.get(h));
            let counted = words.split(':').next().unwrap_or_default().to_owned();
            match counts.iter_mut().find(|(w, _)| *w == counted) {
                Some((_, n)) => *n += 1,
                None => counts.push((counted, 1)),
            }
            let from = service.from.get(h).cloned().flatten();
            (rank, pages::HostRow { host: h.to_string(), state: words, class, from })
        })
        .collect();
    if let Some(limit) = shown.filter(|&l| rows.len() > l) {
        rows.sort_by_key(|(rank, _)| *rank);
        rows.truncate(limit);
    }
    pages::BatchRow {
        name: b.name.clone(),
        total: b.hosts.len(),
        counts,
        hosts: rows.into_iter().map(|r| r.1).collect(),
    }
}

/// The release page for `visitor` (with their actions when they may act), or its live
/// part; `notice` is an action's refusal.
fn release_answer(
    e: &Endpoints,
    id: &str,
    visitor: &Visitor,
    chrome: &pages::Chrome,
    part: Option<&str>,
    notice: Option<(StatusCode, &str)>,
) -> Response {
    let may_act = visitor.may_act();
    let form_token = if may_act { session::form_token(e, visitor) } else { String::new() };
    if part == Some("live") {
        // The viewers of a release share its live part while nothing happened.
        let events = e.node.read_local(|s| s.release(id).map(|r| r.run.events.len()));
        let shared = events.and_then(|n| e.live.get(id, may_act, u64::try_from(n).ok()?, &form_token));
        if let Some(part) = shared {
            return html(StatusCode::OK, part);
        }
    }
    let Some((view, extra, events)) = e.node.read_local(|s| read_release(s, id)) else {
        let why = format!("This coordinator has no release {id}.");
        return html(StatusCode::NOT_FOUND, pages::problem("No such release", &why, chrome));
    };
    let controls = may_act.then(|| pages::Controls { form_token: form_token.clone() });
    match part {
        Some("live") if view.compacted => {
            html(StatusCode::OK, pages::live(&view, &extra, controls.as_ref()).into_string())
        }
        Some("live") => {
            let slot = may_act.then(|| pages::Controls { form_token: shared::FORM_TOKEN_SLOT.to_owned() });
            let part = pages::live(&view, &extra, slot.as_ref()).into_string();
            html(StatusCode::OK, e.live.put(id, may_act, view.last_event_index, part, &form_token))
        }
        Some(other) => {
            let why = format!("A release page has no part {other}; its one part is live.");
            html(StatusCode::BAD_REQUEST, pages::problem("No such part", &why, chrome))
        }
        None => {
            let status = notice.map_or(StatusCode::OK, |n| n.0);
            let page = pages::release(&view, &extra, &events, chrome, controls.as_ref(), notice.map(|n| n.1));
            html(status, page)
        }
    }
}

async fn release(
    State(e): State<Endpoints>,
    peer: ConnPeer,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<ReleaseQuery>,
) -> Response {
    match reader(&e, peer, &headers) {
        Ok((visitor, chrome)) => release_answer(&e, &id, &visitor, &chrome, q.part.as_deref(), None),
        Err(answer) => *answer,
    }
}

async fn service_hosts(
    State(e): State<Endpoints>,
    peer: ConnPeer,
    headers: HeaderMap,
    Path((id, stage, service)): Path<(String, u32, String)>,
) -> Response {
    let chrome = match reader(&e, peer, &headers) {
        Ok((_, chrome)) => chrome,
        Err(answer) => return *answer,
    };
    let found = e.node.read_local(|s| {
        let r = s.release(&id)?;
        let run = r.run.stages.get(usize::try_from(stage).ok()?)?;
        let svc = run.services.iter().find(|(name, _)| name.as_str() == service)?.1;
        let batches: Vec<pages::BatchRow> = svc.batches.iter().map(|b| batch_row(svc, b, None)).collect();
        Some((crate::server::release_page_view(r), run.name.clone(), batches))
    });
    match found {
        Some((view, stage_name, batches)) => {
            html(StatusCode::OK, pages::hosts(&view, &stage_name, &service, &batches, &chrome))
        }
        None => {
            let why = format!("Release {id} has no service {service} in a stage numbered {stage} here.");
            html(StatusCode::NOT_FOUND, pages::problem("No such service", &why, &chrome))
        }
    }
}

/// The refusal of a form whose token is not the visitor's.
const STALE_FORM: &str = "This form is stale or was not made by this dashboard for you: reload the page and try again.";

/// An action's form.
#[derive(Debug, Deserialize)]
struct ActForm {
    #[serde(default)]
    form_token: String,
    action: String,
    /// `stage:NAME` or `gate:NAME` to approve; a service to roll back alone.
    #[serde(default)]
    target: String,
    #[serde(default)]
    reason: String,
}

async fn act(
    State(e): State<Endpoints>,
    peer: ConnPeer,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ActForm>,
) -> Response {
    let method = match form.action.as_str() {
        "approve" => "Approve",
        "pause" => "Pause",
        "resume" => "Resume",
        "abort" => "Abort",
        "rollback" => "Rollback",
        "retry" => "RetryHost",
        "exclude" => "ExcludeHost",
        other => {
            let visitor = session::visitor(&e, &peer_of(peer), &headers, READ);
            let why =
                format!("There is no action {other}: approve, pause, resume, abort, rollback, retry and exclude are.");
            return html(StatusCode::BAD_REQUEST, pages::problem("No such action", &why, &chrome(&e, &visitor)));
        }
    };
    let visitor = session::visitor(&e, &peer_of(peer), &headers, &format!("/flotilla.v1.Releases/{method}"));
    let chrome = chrome(&e, &visitor);
    if !session::form_token_matches(&e, &visitor, &form.form_token) {
        return html(StatusCode::FORBIDDEN, pages::problem("Refused", STALE_FORM, &chrome));
    }
    if let Err(refusal) = &visitor.verdict {
        let why = refusal.to_string();
        return release_answer(&e, &id, &visitor, &chrome, None, Some((StatusCode::FORBIDDEN, &why)));
    }
    match call(&e, &visitor, &id, &form).await {
        Ok(()) => redirect(&format!("/ui/releases/{id}")),
        Err(status) => {
            tracing::info!(release = %id, action = %form.action, actor = %visitor.actor.name, "dashboard action refused: {}", status.message());
            let why = format!("{} refused: {}", form.action, status.message());
            release_answer(&e, &id, &visitor, &chrome, None, Some((StatusCode::CONFLICT, &why)))
        }
    }
}

/// Makes the action's gRPC call to this coordinator as the visitor.
async fn call(e: &Endpoints, visitor: &Visitor, id: &str, form: &ActForm) -> Result<(), tonic::Status> {
    let channel = flotilla_net::channel(e.node.advertise(), e.node.security())
        .map_err(|err| tonic::Status::unavailable(format!("cannot reach this coordinator's API: {err}")))?;
    let mut client = ReleasesClient::new(channel);
    let release_id = id.to_owned();
    let reason = form.reason.trim().to_owned();
    match form.action.as_str() {
        "approve" => {
            let target = match form.target.split_once(':') {
                Some(("stage", name)) => v1::approve_request::Target::Stage(name.to_owned()),
                Some(("gate", name)) => v1::approve_request::Target::Gate(name.to_owned()),
                _ => {
                    return Err(tonic::Status::invalid_argument(format!(
                        "`{}` is not stage:NAME or gate:NAME",
                        form.target
                    )));
                }
            };
            client
                .approve(as_visitor(visitor, v1::ApproveRequest { release_id, target: Some(target), comment: reason })?)
                .await?;
        }
        "pause" => {
            client.pause(as_visitor(visitor, v1::PauseRequest { release_id, reason })?).await?;
        }
        "resume" => {
            client.resume(as_visitor(visitor, v1::ResumeRequest { release_id, reason })?).await?;
        }
        "abort" => {
            client.abort(as_visitor(visitor, v1::AbortRequest { release_id, reason })?).await?;
        }
        "retry" => {
            let host = form.target.clone();
            client.retry_host(as_visitor(visitor, v1::RetryHostRequest { release_id, host, reason })?).await?;
        }
        "exclude" => {
            let host = form.target.clone();
            client.exclude_host(as_visitor(visitor, v1::ExcludeHostRequest { release_id, host, reason })?).await?;
        }
        _ => {
            let service = (!form.target.is_empty()).then(|| form.target.clone());
            client.rollback(as_visitor(visitor, v1::RollbackRequest { release_id, service, reason })?).await?;
        }
    }
    Ok(())
}

/// `message` as a call by `visitor`: with their session's token, or, for a visitor
/// known by their certificate, on their behalf the way a follower forwards a call (the
/// receiving coordinator checks their role again).
fn as_visitor<T>(visitor: &Visitor, message: T) -> Result<tonic::Request<T>, tonic::Status> {
    let bad = |_| tonic::Status::invalid_argument("the credential cannot be sent as gRPC metadata");
    let mut request = tonic::Request::new(message);
    if let Some(token) = &visitor.token {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().map_err(bad)?);
    } else if let Some(operator) = visitor.actor.forwarded() {
        request.metadata_mut().insert(crate::auth::ON_BEHALF_OF, operator.parse().map_err(bad)?);
    }
    request.set_timeout(ACTION_TIMEOUT);
    Ok(request)
}

/// How long an action's call may take (the leader commits it through Raft).
const ACTION_TIMEOUT: Duration = Duration::from_secs(15);

async fn sign_in_page(State(e): State<Endpoints>, peer: ConnPeer, headers: HeaderMap) -> Response {
    let visitor = session::visitor(&e, &peer_of(peer), &headers, READ);
    if visitor.verdict.is_ok() && !visitor.actor.is_insecure() && visitor.token.is_some() {
        return redirect("/ui");
    }
    html(StatusCode::OK, pages::sign_in(&chrome(&e, &visitor), None))
}

#[derive(Debug, Deserialize)]
struct SignInForm {
    token: String,
}

async fn sign_in(State(e): State<Endpoints>, peer: ConnPeer, Form(form): Form<SignInForm>) -> Response {
    let token = form.token.trim().to_owned();
    let visitor = session::visitor_with(&e, &peer_of(peer), Some(token.clone()), READ);
    if let Err(refusal) = &visitor.verdict {
        let chrome = pages::Chrome { node_id: e.node.id(), ..pages::Chrome::default() };
        return html(StatusCode::UNAUTHORIZED, pages::sign_in(&chrome, Some(&refusal.to_string())));
    }
    let left_s = (visitor.actor.expires_unix_ms > 0).then(|| (visitor.actor.expires_unix_ms - now_ms()) / 1000);
    let max_age = left_s.map_or(session::SESSION_MAX_AGE_S, |s| s.clamp(0, session::SESSION_MAX_AGE_S));
    tracing::info!(actor = %visitor.actor.name, "dashboard session started");
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, session::start_cookie(&token, e.tls, max_age)),
            (header::LOCATION, "/ui".to_owned()),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct SignOutForm {
    #[serde(default)]
    form_token: String,
}

async fn sign_out(
    State(e): State<Endpoints>,
    peer: ConnPeer,
    headers: HeaderMap,
    Form(form): Form<SignOutForm>,
) -> Response {
    let visitor = session::visitor(&e, &peer_of(peer), &headers, READ);
    if !session::form_token_matches(&e, &visitor, &form.form_token) {
        return html(StatusCode::FORBIDDEN, pages::problem("Refused", STALE_FORM, &chrome(&e, &visitor)));
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, session::end_cookie(e.tls)),
            (header::LOCATION, "/ui/login".to_owned()),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    after: Option<u64>,
}

async fn events(
    State(e): State<Endpoints>,
    peer: ConnPeer,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Response {
    let chrome = match reader(&e, peer, &headers) {
        Ok((_, chrome)) => chrome,
        Err(answer) => return *answer,
    };
    let resumed = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok());
    let mut after: u64 = resumed.or(q.after).unwrap_or(0);
    let (node, frames) = (e.node, e.frames);
    if frames.after(&node, &id, after).is_none() {
        let why = format!("This coordinator has no release {id}.");
        return html(StatusCode::NOT_FOUND, pages::problem("No such release", &why, &chrome));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(64);
    tokio::spawn(async move {
        let mut metrics = node.raft().metrics();
        let mut life = node.lifecycle_changes();
        // Tells the browser how long to wait before reconnecting.
        if tx.send(Ok(Bytes::from_static(b"retry: 2000\n\n"))).await.is_err() {
            return;
        }
        loop {
            let Some(look) = frames.after(&node, &id, after) else { return };
            after = look.last;
            for frame in look.frames {
                if tx.send(Ok(frame)).await.is_err() {
                    return;
                }
            }
            if look.finished {
                let _ = tx.send(Ok(Bytes::from_static(b"event: end\ndata: {}\n\n"))).await;
                return;
            }
            if node.lifecycle() != crate::node::Lifecycle::Serving {
                return;
            }
            tokio::select! {
                changed = metrics.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    // A release applies many entries in a burst: look once per burst.
                    tokio::time::sleep(COALESCE).await;
                }
                _ = life.changed() => {}
                () = tokio::time::sleep(KEEP_ALIVE) => {
                    if tx.send(Ok(Bytes::from_static(b": keep-alive\n\n"))).await.is_err() {
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

async fn fleet(State(e): State<Endpoints>, peer: ConnPeer, headers: HeaderMap) -> Response {
    let chrome = match reader(&e, peer, &headers) {
        Ok((_, chrome)) => chrome,
        Err(answer) => return *answer,
    };
    let hosts = e.node.read_local(|s| {
        s.fleet()
            .agents()
            .iter()
            .map(|(id, a)| {
                let host = crate::fleet::wire::host(id, a, e.hub.liveness(id, a.online), s.enrolment().host(id));
                (host, newest_step(s, &HostId::new(id.as_str())))
            })
            .collect::<Vec<_>>()
    });
    html(StatusCode::OK, pages::fleet(&hosts, &chrome, now_ms()))
}

/// How many of a host's steps its page lists.
const HOST_STEPS_SHOWN: usize = 50;

async fn host(State(e): State<Endpoints>, peer: ConnPeer, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let chrome = match reader(&e, peer, &headers) {
        Ok((_, chrome)) => chrome,
        Err(answer) => return *answer,
    };
    let found = e.node.read_local(|s| {
        let a = s.fleet().agent(&id)?;
        let host = crate::fleet::wire::host(&id, a, e.hub.liveness(&id, a.online), s.enrolment().host(&id));
        Some((host, host_history(s, &HostId::new(id.as_str()), HOST_STEPS_SHOWN)))
    });
    match found {
        Some((host, (steps, pending))) => {
            html(StatusCode::OK, pages::host(&host, &steps, pending.len(), &chrome, now_ms()))
        }
        None => html(
            StatusCode::NOT_FOUND,
            pages::problem("No such host", &format!("No host {id} has registered."), &chrome),
        ),
    }
}

async fn cluster(State(e): State<Endpoints>, peer: ConnPeer, headers: HeaderMap) -> Response {
    let chrome = match reader(&e, peer, &headers) {
        Ok((_, chrome)) => chrome,
        Err(answer) => return *answer,
    };
    html(StatusCode::OK, pages::cluster(&crate::server::cluster_status(&e.node), &chrome))
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
