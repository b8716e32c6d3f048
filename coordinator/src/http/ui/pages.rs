//! The dashboard's pages, rendered on the server from the same views the gRPC API
//! answers with (`Releases.Get`, `Fleet.ListAgents`, `Cluster.Status`). Every value is
//! interpolated through maud, which escapes it; the SVG graph escapes its own text.
//! Pure: the handlers read the node and give these functions the views and the time.

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_proto::v1;
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::graph;
use crate::http::escape_html;
use crate::stats;

/// `text` escaped for HTML text and attribute values.
pub(crate) fn escape(text: &str) -> String {
    escape_html(text)
}

/// Which page the navigation marks as the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Releases,
    Fleet,
    Cluster,
}

/// What every page's header shows besides the navigation.
#[derive(Debug, Clone, Default)]
pub(crate) struct Chrome {
    /// The coordinator serving the page.
    pub node_id: u64,
    /// Who is looking (`operator alice (deployer)`), when known.
    pub who: Option<String>,
    /// The form token for signing out, when the visitor has a session to end.
    pub sign_out: Option<String>,
}

/// A whole page: the shared head, navigation and footer around `body`.
pub(crate) fn layout(title: &str, nav: Nav, chrome: &Chrome, body: &Markup) -> String {
    let link = |href: &str, name: &str, this: Nav| {
        html! {
            a href=(href) aria-current=[(nav == this).then_some("page")] { (name) }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Flotilla" }
                link rel="stylesheet" href="/ui/assets/style.css";
                script src="/ui/assets/app.js" defer {}
            }
            body {
                header.top {
                    nav aria-label="Sections" {
                        span.brand { "Flotilla" }
                        (link("/ui", "Releases", Nav::Releases))
                        (link("/ui/fleet", "Fleet", Nav::Fleet))
                        (link("/ui/cluster", "Cluster", Nav::Cluster))
                    }
                    span.node {
                        "coordinator " (chrome.node_id)
                        @if let Some(who) = &chrome.who { " · " span #who { (who) } }
                        @if let Some(token) = &chrome.sign_out {
                            form.inline method="post" action="/ui/logout" {
                                input type="hidden" name="form_token" value=(token);
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
    .into_string()
}

/// The lower-case name of a release state.
pub(crate) fn release_state(state: i32) -> &'static str {
    match v1::ReleaseState::try_from(state) {
        Ok(v1::ReleaseState::Pending) => "pending",
        Ok(v1::ReleaseState::Running) => "running",
        Ok(v1::ReleaseState::AwaitingApproval) => "awaiting approval",
        Ok(v1::ReleaseState::Paused) => "paused",
        Ok(v1::ReleaseState::RollingBack) => "rolling back",
        Ok(v1::ReleaseState::Succeeded) => "succeeded",
        Ok(v1::ReleaseState::RolledBack) => "rolled back",
        Ok(v1::ReleaseState::Failed) => "failed",
        Ok(v1::ReleaseState::Aborted) => "aborted",
        _ => "unknown",
    }
}

/// The filter names of the releases list, each with its states.
pub(crate) const FILTERS: [(&str, &[v1::ReleaseState]); 4] = [
    ("all", &[]),
    (
        "active",
        &[
            v1::ReleaseState::Pending,
            v1::ReleaseState::Running,
            v1::ReleaseState::AwaitingApproval,
            v1::ReleaseState::Paused,
            v1::ReleaseState::RollingBack,
        ],
    ),
    ("succeeded", &[v1::ReleaseState::Succeeded]),
    ("failed", &[v1::ReleaseState::RolledBack, v1::ReleaseState::Failed, v1::ReleaseState::Aborted]),
];

/// The CSS class and the words of a service state.
pub(crate) fn state_class(state: v1::ServiceState) -> (&'static str, &'static str) {
    match state {
        v1::ServiceState::Waiting | v1::ServiceState::Unspecified => ("st-waiting", "waiting"),
        v1::ServiceState::Migrating => ("st-active", "migrating"),
        v1::ServiceState::Deploying => ("st-active", "deploying"),
        v1::ServiceState::Baking => ("st-active", "baking"),
        v1::ServiceState::Done => ("st-done", "done"),
        v1::ServiceState::Failed => ("st-failed", "failed"),
        v1::ServiceState::RollingBack => ("st-failed", "rolling back"),
        v1::ServiceState::RolledBack => ("st-back", "rolled back"),
        v1::ServiceState::Cancelled => ("st-cancelled", "cancelled"),
        v1::ServiceState::Skipped => ("st-done", "skipped"),
    }
}

fn service_state(state: i32) -> (&'static str, &'static str) {
    state_class(v1::ServiceState::try_from(state).unwrap_or(v1::ServiceState::Unspecified))
}

fn stage_state(state: i32) -> &'static str {
    match v1::StageState::try_from(state) {
        Ok(v1::StageState::Pending) => "pending",
        Ok(v1::StageState::Running) => "running",
        Ok(v1::StageState::AwaitingApproval) => "awaiting approval",
        Ok(v1::StageState::Done) => "done",
        Ok(v1::StageState::Failed) => "failed",
        Ok(v1::StageState::Cancelled) => "cancelled",
        _ => "unknown",
    }
}

fn gate_state(state: i32) -> &'static str {
    match v1::GateState::try_from(state) {
        Ok(v1::GateState::Pending) => "pending",
        Ok(v1::GateState::Running) => "running",
        Ok(v1::GateState::AwaitingApproval) => "awaiting approval",
        Ok(v1::GateState::Passed) => "passed",
        Ok(v1::GateState::Failed) => "failed",
        Ok(v1::GateState::Cancelled) => "cancelled",
        _ => "unknown",
    }
}

/// `unix_ms` as UTC `YYYY-MM-DD HH:MM:SS` in a `<time>` element; nothing for 0.
fn time(unix_ms: i64) -> Markup {
    if unix_ms <= 0 {
        return html! { "–" };
    }
    let at = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(unix_ms).unwrap_or(0));
    let text = humantime::format_rfc3339_seconds(at).to_string();
    html! { time datetime=(text) { (text.replace('T', " ").trim_end_matches('Z')) } }
}

/// How long ago `unix_ms` was, in words (`3m ago`); `–` for 0 (not known here).
fn ago(unix_ms: i64, now_ms: i64) -> String {
    if unix_ms <= 0 { "–".to_owned() } else { format!("{} ago", age(unix_ms, now_ms)) }
}

/// How long ago `unix_ms` was, in words (`3m`, `2h 5m`).
fn age(unix_ms: i64, now_ms: i64) -> String {
    if unix_ms <= 0 {
        return "–".to_owned();
    }
    let seconds = u64::try_from(now_ms.saturating_sub(unix_ms) / 1000).unwrap_or(0);
    let (d, h, m, s) = (seconds / 86_400, seconds / 3600 % 24, seconds / 60 % 60, seconds % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// The releases list, newest first, each with who created it; `filter` is one of
/// [`FILTERS`]' names.
pub(crate) fn releases(
    list: &[(v1::ReleaseSummary, String)],
    filter: &str,
    delivery: &[stats::Figures],
    chrome: &Chrome,
    now_ms: i64,
) -> String {
    let body = html! {
        h1 { "Releases" }
        nav.filters aria-label="Filter by state" {
            @for (name, _) in FILTERS {
                a href={ "/ui?state=" (name) } aria-current=[(name == filter).then_some("true")] { (name) }
            }
        }
        @if list.is_empty() {
            p.empty { "No releases here." }
        } @else {
            table.releases {
                thead { tr {
                    th scope="col" { "Release" } th scope="col" { "State" } th scope="col" { "Progress" }
                    th scope="col" { "Stage" } th scope="col" { "Started by" } th scope="col" { "Age" }
                } }
                tbody {
                    @for (r, by) in list {
                        @let state = release_state(r.state);
                        tr {
                            td {
                                a href={ "/ui/releases/" (r.id) } { (r.name) }
                                " " span.id { (r.id) }
                                @if r.compacted { " " span.tag { "compacted" } }
                            }
                            td { span class={ "badge rs-" (state.replace(' ', "-")) } { (state) } }
                            td {
                                progress max=(r.services_total.max(1)) value=(r.services_done)
                                    aria-label={ (r.services_done) " of " (r.services_total) " services done" } {}
                                " " (r.services_done) "/" (r.services_total)
                            }
                            td { (r.stage) }
                            td { (by) }
                            td title={ "created " (r.created_unix_ms) } { (age(r.created_unix_ms, now_ms)) }
                        }
                    }
                }
            }
        }
        (delivery_panel(delivery))
    };
    layout("Releases", Nav::Releases, chrome, &body)
}

/// The delivery figures (DORA's four keys) over the last 30 days, every service
/// together first; nothing when no release ended in the period.
fn delivery_panel(delivery: &[stats::Figures]) -> Markup {
    let ms = |ms: Option<i64>| {
        ms.map_or_else(
            || "–".to_owned(),
            |ms| humantime::format_duration(Duration::from_secs(u64::try_from(ms).unwrap_or(0) / 1_000)).to_string(),
        )
    };
    html! {
        @if delivery.first().is_some_and(|all| all.changes > 0) {
            section.delivery aria-labelledby="delivery" {
                h2 #delivery { "Delivery over the last 30 days" }
                table.delivery {
                    thead { tr {
                        th scope="col" { "Service" } th scope="col" { "Changes" } th scope="col" { "Deploys per day" }
                        th scope="col" { "Lead time (median)" } th scope="col" { "Change failure rate" }
                        th scope="col" { "Time to restore (median)" }
                    } }
                    tbody {
                        @for f in delivery {
                            tr {
                                th scope="row" { (f.service.as_ref().map_or("all services", |s| s.as_str())) }
                                td { (f.changes) " (" (f.failed) " failed)" }
                                td { (format!("{:.2}", f.deployments_per_day)) }
                                td title={ (f.lead_times_from_change) " from the change's time, " (f.lead_times_from_creation) " from the release's creation" } {
                                    (ms(f.lead_time_median_ms))
                                }
                                td { (f.change_failure_rate.map_or_else(|| "–".to_owned(), |r| format!("{:.0} %", r * 100.0))) }
                                td {
                                    (ms(f.time_to_restore_median_ms))
                                    @if f.unrestored > 0 { " (" (f.unrestored) " not restored yet)" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One host of a service in a stage, as the release page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostRow {
    pub host: String,
    /// `waiting`, `deploying`, `done`, `failed: why`, ...
    pub state: String,
    pub class: &'static str,
    /// The version it had before the release, if any.
    pub from: Option<String>,
}

/// One batch of a service in a stage: its hosts counted by state, and some of them by
/// name (failed ones first, then those at work) when the batch is large.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BatchRow {
    pub name: String,
    /// How many hosts the batch has.
    pub total: usize,
    /// Hosts by state (`done`, `deploying`, ...), in the order first seen.
    pub counts: Vec<(String, usize)>,
    /// The hosts listed.
    pub hosts: Vec<HostRow>,
}

/// Everything the release page shows besides the API's view of the release: per stage
/// and service, its batches and hosts; and the decided rollback.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReleaseExtra {
    /// `(stage index, service)` → batches.
    pub batches: BTreeMap<(u32, String), Vec<BatchRow>>,
    /// The services rolled back, each with why.
    pub rollback_members: Vec<(String, String)>,
    /// The rollback's actions in order, and how many are done.
    pub rollback_actions: Vec<String>,
    pub rollback_done: usize,
}

/// The stage the graph colours: the last one started (the one running, or where the
/// release stopped), else the first.
fn current_stage(release: &v1::Release) -> Option<&v1::StageStatus> {
    release.stages.iter().rev().find(|s| !s.services.is_empty()).or_else(|| release.stages.first())
}

/// The parts of the release page that change as it runs (refreshed in place).
/// `controls` (for visitors who may act) adds the actions the release's state allows.
pub(crate) fn live(release: &v1::Release, extra: &ReleaseExtra, controls: Option<&Controls>) -> Markup {
    let state = release_state(release.state);
    let stage = current_stage(release);
    let states: BTreeMap<String, v1::ServiceState> = stage
        .map(|s| {
            s.services
                .iter()
                .map(|x| (x.service.clone(), v1::ServiceState::try_from(x.state).unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    // Each service's wave (the stages run their services wave by wave).
    let waves: BTreeMap<&str, u32> = release
        .plan
        .iter()
        .flat_map(|p| &p.waves)
        .flat_map(|w| w.services.iter().map(move |s| (s.as_str(), w.wave)))
        .collect();
    html! {
        section.summary aria-label="Release state" {
            p {
                span class={ "badge rs-" (state.replace(' ', "-")) } data-release-state=(state) { (state) }
                @if !release.reason.is_empty() { " " span.reason { (release.reason) } }
            }
            p.updated { "Updated " (time(release.updated_unix_ms)) " · last event " (release.last_event_index) }
        }
        @if let Some(controls) = controls { (release_controls(release, controls)) }
        @if !release.pending_approvals.is_empty() {
            section.approvals aria-labelledby="approvals-title" {
                h2 #approvals-title { "Waiting for approval" }
                ul {
                    @for a in &release.pending_approvals {
                        li data-approval=(a.name) {
                            @let kind = if a.kind == v1::ApprovalKind::Stage as i32 { "stage" } else { "gate" };
                            strong { (kind) " " (a.name) }
                            @if !a.stage.is_empty() && kind == "gate" { " in stage " (a.stage) }
                            " since " (time(a.since_unix_ms))
                            @if !a.approvers.is_empty() { " · approvers: " (a.approvers) }
                            @if let Some(controls) = controls {
                                (action_form(&release.id, controls, "approve", &format!("{kind}:{}", a.name), &format!("Approve {kind} {}", a.name), &format!("Approve {kind} {} of release {}?", a.name, release.name), false))
                            }
                        }
                    }
                }
            }
        }
        @if let Some(plan) = &release.plan {
            section.graph-box aria-labelledby="graph-heading" {
                h2 #graph-heading {
                    "Dependency graph"
                    @if let Some(s) = stage { " · stage " (s.name) }
                }
                div.graph-scroll { (PreEscaped(graph::svg(plan, &states))) }
                (legend())
                details.deps data-key="deps" {
                    summary { "Dependencies as a table" }
                    table {
                        thead { tr { th scope="col" { "Service" } th scope="col" { "Needs" } th scope="col" { "Kind" } th scope="col" { "State" } } }
                        tbody {
                            @for e in &plan.edges {
                                tr {
                                    td { (e.dependent) } td { (e.dependency) }
                                    td { (graph::edge_kind(e.kind).1) @if !e.contract.is_empty() { " (" (e.contract) ")" } }
                                    td { (state_class(states.get(&e.dependent).copied().unwrap_or_default()).1) }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if !extra.rollback_members.is_empty() {
            section.rollback aria-labelledby="rollback-title" {
                h2 #rollback-title { "Rollback" }
                p { "Rolled back, with why:" }
                ul { @for (s, why) in &extra.rollback_members { li { strong { (s) } ": " (why) } } }
                p { "In this order (" (extra.rollback_done) " of " (extra.rollback_actions.len()) " done):" }
                ol {
                    @for (i, a) in extra.rollback_actions.iter().enumerate() {
                        li class=(if i < extra.rollback_done { "done" } else { "todo" }) { (a) }
                    }
                }
            }
        }
        section.stages aria-labelledby="stages-title" {
            h2 #stages-title { "Stages" }
            @for stage in &release.stages {
                article.stage data-stage=(stage.name) {
                    h3 { "Stage " (stage.name) " " span.badge { (stage_state(stage.state)) } }
                    @if !stage.services.is_empty() {
                        table.services {
                            thead { tr {
                                th scope="col" { "Service" } th scope="col" { "Version" } th scope="col" { "State" }
                                th scope="col" { "Batch" } th scope="col" { "Hosts done / failed / total" } th scope="col" { "Why" }
                            } }
                            tbody {
                                @for (i, s) in stage.services.iter().enumerate() {
                                    @let wave = waves.get(s.service.as_str()).copied();
                                    @if wave.is_some() && (i == 0 || wave != waves.get(stage.services[i - 1].service.as_str()).copied()) {
                                        tr.wave { th colspan="6" scope="rowgroup" { "Wave " (wave.unwrap_or_default()) } }
                                    }
                                    @let (class, words) = service_state(s.state);
                                    tr class=(class) data-service=(s.service) data-state=(words) {
                                        th scope="row" { (s.service) }
                                        td { @if !s.from_versions.is_empty() { (s.from_versions.join(", ")) " → " } (s.target_version) }
                                        td { span class={ "badge " (class) } { (words) } }
                                        td { (s.batch + u32::from(s.batches_total > 0)) " of " (s.batches_total) }
                                        td { (s.hosts_done) " / " (s.hosts_failed) " / " (s.hosts_total) }
                                        td { (s.reason) }
                                    }
                                    @if let Some(batches) = extra.batches.get(&(stage.index, s.service.clone())) {
                                        tr.hosts { td colspan="6" {
                                            details data-key={ "hosts " (stage.index) " " (s.service) } {
                                                summary { "Batches and hosts of " (s.service) }
                                                @for b in batches {
                                                    div.batch {
                                                        span.batch-name { (b.name) }
                                                        " " span.counts {
                                                            (b.total) " hosts: "
                                                            (b.counts.iter().map(|(state, n)| format!("{n} {state}")).collect::<Vec<_>>().join(", "))
                                                        }
                                                        ul.hosts {
                                                            @for h in &b.hosts {
                                                                li class=(h.class) data-host=(h.host) {
                                                                    (h.host) ": " (h.state)
                                                                    @if let Some(from) = &h.from { " (was " (from) ")" }
                                                                }
                                                            }
                                                        }
                                                        @if b.hosts.len() < b.total {
                                                            a href={ "/ui/releases/" (release.id) "/hosts/" (stage.index) "/" (s.service) } {
                                                                "and " (b.total - b.hosts.len()) " more: every host of " (s.service) " in stage " (stage.name)
                                                            }
                                                        }
                                                    }
                                                }
                                            }
                                        } }
                                    }
                                }
                            }
                        }
                    }
                    @if !stage.gates.is_empty() {
                        ul.gates {
                            @for g in &stage.gates {
                                li { "gate " strong { (g.gate) } ": " (gate_state(g.state)) @if !g.reason.is_empty() { " — " (g.reason) } }
                            }
                        }
                    }
                }
            }
        }
        @if !release.analyses.is_empty() {
            section.analyses aria-labelledby="analyses-title" {
                h2 #analyses-title { "Canary analysis" }
                ul {
                    @for a in &release.analyses {
                        li { strong { (a.service) " " (a.batch) } " in stage " (a.stage) ": "
                            @if a.reason.is_empty() { (a.complete_rounds) " of its rounds in" } @else { (a.reason) } }
                    }
                }
            }
        }
    }
}

/// A key to the graph's colours and lines.
fn legend() -> Markup {
    html! {
        ul.legend aria-label="Legend" {
            @for (class, words) in [("st-waiting", "waiting"), ("st-active", "deploying or baking"), ("st-done", "done"), ("st-failed", "failed or rolling back"), ("st-back", "rolled back"), ("st-cancelled", "cancelled")] {
                li { span class={ "swatch " (class) } {} (words) }
            }
            @for kind in [v1::EdgeKind::Hard, v1::EdgeKind::Data, v1::EdgeKind::Config, v1::EdgeKind::Soft, v1::EdgeKind::Contract] {
                @let (class, words) = graph::edge_kind(kind as i32);
                li { svg.line width="28" height="8" aria-hidden="true" { line class={ "edge " (class) } x1="0" y1="4" x2="28" y2="4" {} } (words) }
            }
        }
    }
}

/// One event in the event list.
pub(crate) fn event(e: &v1::ReleaseEvent) -> Markup {
    html! {
        li data-index=(e.index) { (time(e.at_unix_ms)) " " span.message { (e.message) } }
    }
}

/// The release page: header, the live parts and the event list, which the page's
/// script keeps up to date from the event stream.
/// `notice` is the refusal of an action just tried, shown above everything else.
pub(crate) fn release(
    release: &v1::Release,
    extra: &ReleaseExtra,
    events: &[v1::ReleaseEvent],
    chrome: &Chrome,
    controls: Option<&Controls>,
    notice: Option<&str>,
) -> String {
    let body = html! {
        h1 { (release.name) " " span.id { (release.id) } }
        @if let Some(notice) = notice { p.error #notice role="alert" { (notice) } }
        p.meta {
            "Started by " (release.created_by) " at " (time(release.created_unix_ms))
            " from " code { (release.file_name) }
            @if release.finished_unix_ms > 0 { " · finished " (time(release.finished_unix_ms)) }
        }
        div #live data-release=(release.id) data-finished=(release.finished_unix_ms > 0) { (live(release, extra, controls)) }
        section.events aria-labelledby="events-title" {
            h2 #events-title { "Events" }
            p.stream #stream-state aria-live="polite" {}
            @let first = events.first().map_or(1, |e| e.index);
            @if first > 1 {
                p.earlier { "The " (first - 1) " earlier events are not shown here; " code { "flotilla release watch " (release.id) } " has them all." }
            }
            ol #events start=(first) data-after=(events.last().map_or(0, |e| e.index)) {
                @for e in events { (event(e)) }
            }
        }
    };
    layout(&release.name, Nav::Releases, chrome, &body)
}

/// The fleet page: every host that ever registered, each with its newest step.
pub(crate) fn fleet(hosts: &[(v1::Host, Option<v1::HostStep>)], chrome: &Chrome, now_ms: i64) -> String {
    let online = hosts.iter().filter(|(h, _)| h.state == v1::HostState::Online as i32).count();
    let body = html! {
        h1 { "Fleet" }
        p { (hosts.len()) " hosts, " (online) " online." }
        table.fleet {
            thead { tr {
                th scope="col" { "Host" } th scope="col" { "State" } th scope="col" { "Labels" }
                th scope="col" { "Agent" } th scope="col" { "Services" } th scope="col" { "Last step" } th scope="col" { "Last seen" }
            } }
            tbody {
                @for (h, last) in hosts {
                    tr data-host=(h.host_id) {
                        th scope="row" { a href={ "/ui/fleet/" (h.host_id) } { (h.host_id) } }
                        td { (host_state(h)) }
                        td { @for (k, v) in sorted(&h.labels) { span.label { (k) "=" (v) } " " } }
                        td { (h.agent_version.as_ref().map_or("", |v| v.software_version.as_str())) }
                        td { @for s in &h.services { span.svc { (s.service) " " (s.version) } " " } }
                        td data-last-step=[last.as_ref().map(|st| &st.command_id)] {
                            @if let Some(st) = last { (step_words(st)) " · " (ago(st.sent_unix_ms, now_ms)) } @else { "–" }
                        }
                        td title="as the leader heard it" { (ago(h.last_seen_unix_ms, now_ms)) }
                    }
                }
            }
        }
    };
    layout("Fleet", Nav::Fleet, chrome, &body)
}

/// A host's state as a badge, with its drain mark.
fn host_state(h: &v1::Host) -> Markup {
    let online = h.state == v1::HostState::Online as i32;
    html! {
        span class={ "badge " (if online { "st-done" } else { "st-failed" }) } { (if online { "online" } else { "lost" }) }
        @if h.drained { " " span.tag { "drained" } @if !h.drain_reason.is_empty() { " " (h.drain_reason) } }
    }
}

/// A step in a few words: `deploy api 2.0.0: failed`.
fn step_words(st: &v1::HostStep) -> Markup {
    html! { (step_name(st)) ": " (step_result(st)) }
}

/// What a step did: `deploy api 2.0.0`.
fn step_name(st: &v1::HostStep) -> Markup {
    html! { (st.action) @if !st.service.is_empty() { " " (st.service) } @if !st.version.is_empty() { " " (st.version) } }
}

/// A step's outcome, marked when it is a failure.
fn step_result(st: &v1::HostStep) -> Markup {
    let (outcome, failed) = step_outcome(st.outcome);
    html! { span class=(if failed { "step-failed" } else { "" }) { (outcome) } }
}

/// A step's outcome in words, and whether it is a failure.
fn step_outcome(outcome: i32) -> (&'static str, bool) {
    match v1::StepOutcome::try_from(outcome).unwrap_or_default() {
        v1::StepOutcome::Unspecified => ("pending", false),
        v1::StepOutcome::Succeeded => ("succeeded", false),
        v1::StepOutcome::Failed => ("failed", true),
        v1::StepOutcome::Cancelled => ("cancelled", false),
        v1::StepOutcome::Refused => ("refused", true),
        v1::StepOutcome::Skipped => ("skipped", false),
    }
}

/// One host: its labels, agent, services and versions, and its most recent steps
/// across releases (`pending` of them still waiting for a result).
pub(crate) fn host(h: &v1::Host, steps: &[v1::HostStep], pending: usize, chrome: &Chrome, now_ms: i64) -> String {
    let body = html! {
        p.meta { a href="/ui/fleet" { "Fleet" } " ›" }
        h1 { "Host " (h.host_id) }
        dl.facts {
            dt { "State" } dd { (host_state(h)) @if h.last_seen_unix_ms > 0 { " · last heard from " (ago(h.last_seen_unix_ms, now_ms)) } }
            dt { "Labels" } dd { @for (k, v) in sorted(&h.labels) { span.label { (k) "=" (v) } " " } @if h.labels.is_empty() { "none" } }
            dt { "Agent" } dd { (h.agent_version.as_ref().map_or("unknown", |v| v.software_version.as_str())) }
            dt { "Services" } dd {
                @for s in &h.services { span.svc { (s.service) " " (s.version) } " " }
                @if h.services.is_empty() { "none" }
            }
            dt { "Steps waiting for a result" } dd { (pending) }
        }
        h2 { "Recent steps" }
        @if steps.is_empty() {
            p { "No release has sent this host a step that is still kept." }
        } @else {
            table.steps {
                thead { tr {
                    th scope="col" { "Sent" } th scope="col" { "Release" } th scope="col" { "Step" }
                    th scope="col" { "Outcome" } th scope="col" { "Finished" } th scope="col" { "Why" }
                } }
                tbody {
                    @for st in steps {
                        tr data-command=(st.command_id) {
                            td { (time(st.sent_unix_ms)) }
                            td { @if st.release_id.is_empty() { "–" } @else { a href={ "/ui/releases/" (st.release_id) } { (st.release_id) } } }
                            td { (step_name(st)) }
                            td { (step_result(st)) }
                            td { (time(st.finished_unix_ms)) }
                            td { (st.reason) }
                        }
                    }
                }
            }
        }
    };
    layout(&format!("Host {}", h.host_id), Nav::Fleet, chrome, &body)
}

fn sorted(map: &std::collections::HashMap<String, String>) -> Vec<(&String, &String)> {
    let mut v: Vec<_> = map.iter().collect();
    v.sort();
    v
}

/// The cluster page: members, leader, term and indexes as this node sees them.
pub(crate) fn cluster(status: &v1::ClusterStatus, chrome: &Chrome) -> String {
    let body = html! {
        h1 { "Cluster" }
        p {
            "Leader: " @if status.leader_id == 0 { "none known" } @else { "coordinator " (status.leader_id) " at " code { (status.leader_addr) } }
            " · term " (status.term) " · applied index " (status.committed_index)
            @if status.membership_changing { " · " strong { "membership changing" } }
        }
        table.members {
            thead { tr {
                th scope="col" { "Node" } th scope="col" { "Address" } th scope="col" { "Role" } th scope="col" { "State" }
                th scope="col" { "Log index" } th scope="col" { "Applied" } th scope="col" { "Matched" } th scope="col" { "Lag" } th scope="col" { "Reachable" }
            } }
            tbody {
                @for m in &status.members {
                    @let lag = m.matched_index.map(|i| status.committed_index.saturating_sub(i));
                    tr data-node=(m.node_id) {
                        th scope="row" { (m.node_id) @if m.node_id == status.node_id { " (this one)" } }
                        td { code { (m.addr) } }
                        td { (if m.role == v1::MemberRole::Voter as i32 { "voter" } else { "learner" }) }
                        td { (raft_state(m.state)) }
                        td { (opt(m.last_log_index)) } td { (opt(m.applied_index)) } td { (opt(m.matched_index)) }
                        td { (opt(lag)) }
                        td { (if m.reachable { "yes" } else { "no" }) }
                    }
                }
            }
        }
    };
    layout("Cluster", Nav::Cluster, chrome, &body)
}

fn raft_state(state: i32) -> &'static str {
    match v1::RaftState::try_from(state) {
        Ok(v1::RaftState::Leader) => "leader",
        Ok(v1::RaftState::Follower) => "follower",
        Ok(v1::RaftState::Candidate) => "candidate",
        Ok(v1::RaftState::Learner) => "learner",
        Ok(v1::RaftState::Shutdown) => "shut down",
        _ => "–",
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| v.to_string())
}

/// A page saying what went wrong (an unknown release, a refusal).
pub(crate) fn problem(title: &str, what: &str, chrome: &Chrome) -> String {
    layout(title, Nav::Releases, chrome, &html! { h1 { (title) } p role="alert" { (what) } })
}

/// The sign-in page: an operator token makes a session; `problem` says why the last
/// try failed.
pub(crate) fn sign_in(chrome: &Chrome, problem: Option<&str>) -> String {
    let body = html! {
        h1 { "Sign in" }
        @if let Some(problem) = problem { p.error role="alert" { (problem) } }
        p { "Sign in with an operator token (" code { "flotilla tokens create --role ROLE --name NAME" } "), or use a client certificate of the cluster's CA in your browser." }
        form.signin method="post" action="/ui/login" {
            label for="token" { "Operator token" }
            input #token type="password" name="token" autocomplete="off" required;
            button type="submit" { "Sign in" }
        }
    };
    layout("Sign in", Nav::Releases, chrome, &body)
}

/// What a visitor who may act gets on a release page: the form token its forms carry.
#[derive(Debug, Clone)]
pub(crate) struct Controls {
    pub form_token: String,
}

/// One action's form: a button that posts `action` (with `target`) after the browser
/// confirms `confirm`, and an optional reason field.
fn action_form(
    release: &str,
    controls: &Controls,
    action: &str,
    target: &str,
    label: &str,
    confirm: &str,
    reason: bool,
) -> Markup {
    html! {
        form.action method="post" action={ "/ui/releases/" (release) "/act" } data-confirm=(confirm) {
            input type="hidden" name="form_token" value=(controls.form_token);
            input type="hidden" name="action" value=(action);
            input type="hidden" name="target" value=(target);
            @if reason {
                input type="text" name="reason" placeholder="reason (optional)" aria-label={ (label) ": reason" };
            }
            button type="submit" data-action=(action) data-target=(target) { (label) }
        }
    }
}

/// The release-wide actions its state allows.
fn release_controls(release: &v1::Release, controls: &Controls) -> Markup {
    use v1::ReleaseState as S;
    let state = v1::ReleaseState::try_from(release.state).unwrap_or_default();
    let finished = matches!(state, S::Succeeded | S::RolledBack | S::Failed | S::Aborted) || release.compacted;
    let id = &release.id;
    let services: Vec<&str> =
        release.plan.as_ref().map(|p| p.services.iter().map(|s| s.name.as_str()).collect()).unwrap_or_default();
    // Guided failure: the hosts a paused release failed on can be retried or excluded.
    let failed: std::collections::BTreeSet<&str> = release
        .stages
        .iter()
        .filter(|st| st.state == v1::StageState::Running as i32)
        .flat_map(|st| st.services.iter().flat_map(|s| s.failed_hosts.iter().map(|f| f.host.as_str())))
        .collect();
    html! {
        @if !finished {
            section.controls aria-label="Actions" {
                @if state == S::Paused {
                    (action_form(id, controls, "resume", "", "Resume", &format!("Resume release {}?", release.name), true))
                    @for host in &failed {
                        (action_form(id, controls, "retry", host, &format!("Retry {host}"), &format!("Deploy {host} again in every service it failed in?"), false))
                        (action_form(id, controls, "exclude", host, &format!("Exclude {host}"), &format!("Exclude {host} from the rest of release {}? It counts against max_failed.", release.name), false))
                    }
                } @else if state != S::RollingBack {
                    (action_form(id, controls, "pause", "", "Pause", &format!("Pause release {}?", release.name), true))
                }
                @if state != S::RollingBack {
                    (action_form(id, controls, "rollback", "", "Roll back the release", &format!("Roll back every service of release {}?", release.name), true))
                    details.more data-key="rollback-one" {
                        summary { "Roll back one service" }
                        @for s in &services {
                            (action_form(id, controls, "rollback", s, &format!("Roll back {s}"), &format!("Roll back {s} (and what depends on it)?"), false))
                        }
                    }
                }
                (action_form(id, controls, "abort", "", "Abort", &format!("Abort release {}? It stops where it is.", release.name), true))
            }
        }
    }
}

/// Every host of one service in one stage of a release.
pub(crate) fn hosts(
    release: &v1::Release,
    stage: &str,
    service: &str,
    batches: &[BatchRow],
    chrome: &Chrome,
) -> String {
    let body = html! {
        h1 { (service) " in stage " (stage) }
        p { a href={ "/ui/releases/" (release.id) } { "Back to release " (release.name) } }
        @for b in batches {
            h2 { "Batch " (b.name) " · " (b.total) " hosts" }
            table.hosts-all {
                thead { tr { th scope="col" { "Host" } th scope="col" { "State" } th scope="col" { "Had" } } }
                tbody {
                    @for h in &b.hosts {
                        tr class=(h.class) data-host=(h.host) {
                            th scope="row" { (h.host) } td { (h.state) } td { (h.from.as_deref().unwrap_or("–")) }
                        }
                    }
                }
            }
        }
    };
    layout(&format!("{service} in {stage}"), Nav::Releases, chrome, &body)
}
