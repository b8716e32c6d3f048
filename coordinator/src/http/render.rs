//! Rendering a [`StatusView`]: the Prometheus/OpenMetrics exposition (through
//! `prometheus-client`) and the plain HTML status page. Pure: no I/O, no clock.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::time::{Duration, UNIX_EPOCH};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use super::view::{RELEASE_STATES, Role, StatusView, release_state_name};
use crate::stats;

/// The content type of [`render_metrics`]' output.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of [`render_page`]' output.
pub const PAGE_CONTENT_TYPE: &str = "text/html; charset=utf-8";

type IntGauge = Gauge<i64, AtomicI64>;
type FloatGauge = Gauge<f64, AtomicU64>;
type Labelled = Family<[(&'static str, String); 1], IntGauge>;

fn int_gauge(value: u64) -> IntGauge {
    let g = IntGauge::default();
    g.set(i64::try_from(value).unwrap_or(i64::MAX));
    g
}

fn labelled(label: &'static str, values: impl IntoIterator<Item = (String, u64)>) -> Labelled {
    let family = Labelled::default();
    for (value, n) in values {
        family.get_or_create(&[(label, value)]).set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    family
}

/// The metrics of `view` in the OpenMetrics text format, every family named
/// `flotilla_*`. Indexes that do not exist yet (no snapshot, nothing purged) and the
/// leader-only families on a follower are left out rather than shown as 0.
pub fn render_metrics(view: &StatusView) -> String {
    let mut r = Registry::with_prefix("flotilla");
    r.register(
        "build",
        "The coordinator's build: its version, the agent/client protocol and the coordinator protocol it speaks",
        Info::new(vec![
            ("version", view.version.to_owned()),
            ("protocol_version", flotilla_proto::PROTOCOL_VERSION.to_string()),
            ("peer_protocol_version", flotilla_proto::PEER_PROTOCOL_VERSION.to_string()),
        ]),
    );
    r.register("raft_node_id", "This coordinator's Raft node id", int_gauge(view.node_id));
    r.register(
        "raft_is_leader",
        "1 when this node is the Raft leader, else 0",
        int_gauge(u64::from(view.role == Role::Leader)),
    );
    r.register(
        "raft_server_state",
        "This node's Raft role: 1 for the current one, 0 for the others",
        labelled("state", Role::ALL.iter().map(|&role| (role.name().to_owned(), u64::from(role == view.role)))),
    );
    r.register(
        "raft_has_leader",
        "1 when this node knows a leader, else 0",
        int_gauge(u64::from(view.leader_id.is_some())),
    );
    r.register(
        "raft_leader_id",
        "The node id of the leader this node knows, 0 when none",
        int_gauge(view.leader_id.unwrap_or(0)),
    );
    r.register("raft_term", "The current Raft term", int_gauge(view.term));
    let indexes = [
        ("raft_last_log_index", "The last index in this node's Raft log", view.last_log_index),
        ("raft_committed_index", "The last Raft log index this node knows to be committed", view.committed_index),
        ("raft_applied_index", "The last Raft log index applied to this node's state machine", view.applied_index),
        ("raft_snapshot_index", "The last Raft log index included in this node's latest snapshot", view.snapshot_index),
        ("raft_purged_index", "The last Raft log index purged from this node's log", view.purged_index),
    ];
    for (name, help, index) in indexes {
        if let Some(index) = index {
            r.register(name, help, int_gauge(index));
        }
    }
    r.register("raft_voters", "Voting members of the cluster", int_gauge(view.voters() as u64));
    r.register("raft_learners", "Non-voting members (learners) of the cluster", int_gauge(view.learners() as u64));
    if let Some(age) = view.quorum_ack_age {
        let g = FloatGauge::default();
        g.set(age.as_secs_f64());
        r.register_with_unit(
            "raft_quorum_ack_age",
            "Leader only: time since a quorum last acknowledged this leader",
            Unit::Seconds,
            g,
        );
    }
    if view.role == Role::Leader {
        r.register(
            "raft_replication_matched_index",
            "Leader only: the last log index each other member is known to hold",
            labelled("follower", view.members.iter().filter_map(|m| Some((m.id.to_string(), m.matched_index?)))),
        );
    }
    let counter = |n: u64| {
        let c: Counter = Counter::default();
        c.inc_by(n);
        c
    };
    r.register(
        "audit_records_committed",
        "Audit records this coordinator recorded and had committed, since it started",
        counter(view.audit_committed),
    );
    r.register(
        "audit_records_dropped",
        "Audit records this coordinator dropped (its queue was full, or no leader took them in time), since it started",
        counter(view.audit_dropped),
    );
    r.register("agents_known", "Hosts whose agent ever registered", int_gauge(view.agents_known));
    r.register("agents_online", "Hosts whose agent the leader holds a live lease on", int_gauge(view.agents_online));
    r.register(
        "agent_sessions",
        "Agent sessions open on this node (only the leader accepts them)",
        int_gauge(view.sessions_open),
    );
    r.register(
        "releases",
        "Releases in the replicated state, by state",
        labelled(
            "state",
            RELEASE_STATES.iter().zip(view.releases_by_state).map(|(&s, n)| (release_state_name(s).to_owned(), n)),
        ),
    );
    register_delivery(&mut r, &view.delivery);
    if !view.hooks.is_empty() {
        let hooks =
            |f: fn(&super::view::HookView) -> u64| labelled("hook", view.hooks.iter().map(|h| (h.name.clone(), f(h))));
        r.register("notify_delivered", "Webhook deliveries the receiver accepted, per hook", hooks(|h| h.delivered));
        r.register("notify_failed", "Webhook delivery attempts that failed, per hook", hooks(|h| h.failed));
        r.register("notify_pending", "Release events still to deliver, per hook", hooks(|h| h.pending));
    }
    let mut out = String::new();
    encode(&mut out, &r).expect("encoding into a String cannot fail");
    out
}

/// The delivery figures (DORA's four keys over the last 30 days), labelled by service;
/// `service="*"` is every service together. A figure without data (no deployment, no
/// restore) is left out rather than shown as 0.
fn register_delivery(r: &mut Registry, delivery: &[stats::Figures]) {
    type Floats = Family<[(&'static str, String); 1], FloatGauge>;
    let (changes, per_day, lead, failure, restore) =
        (Labelled::default(), Floats::default(), Floats::default(), Floats::default(), Floats::default());
    for f in delivery {
        let label = [("service", f.service.as_ref().map_or_else(|| "*".to_owned(), ToString::to_string))];
        changes.get_or_create(&label).set(i64::from(f.changes));
        per_day.get_or_create(&label).set(f.deployments_per_day);
        if let Some(ms) = f.lead_time_median_ms {
            lead.get_or_create(&label).set(ms as f64 / 1_000.0);
        }
        if let Some(rate) = f.change_failure_rate {
            failure.get_or_create(&label).set(rate);
        }
        if let Some(ms) = f.time_to_restore_median_ms {
            restore.get_or_create(&label).set(ms as f64 / 1_000.0);
        }
    }
    r.register("delivery_changes", "Changes (deployed or failed) that ended in the last 30 days", changes);
    r.register("delivery_deployments_per_day", "Deployments per day over the last 30 days", per_day);
    r.register_with_unit(
        "delivery_lead_time",
        "Median lead time over the last 30 days: change (or release creation) to the service finishing its last stage",
        Unit::Seconds,
        lead,
    );
    r.register("delivery_change_failure_ratio", "Failed changes / changes over the last 30 days", failure);
    r.register_with_unit(
        "delivery_time_to_restore",
        "Median time from a failed change to the next deployment of the service, over the last 30 days",
        Unit::Seconds,
        restore,
    );
}

/// `text` with the characters that mean something in HTML replaced by entities.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn index(i: Option<u64>) -> String {
    i.map_or_else(|| "–".to_owned(), |i| i.to_string())
}

fn timestamp(unix_ms: i64) -> String {
    u64::try_from(unix_ms)
        .map(|ms| humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string())
        .unwrap_or_default()
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:60em}\
table{border-collapse:collapse;margin-bottom:1em}th,td{text-align:left;padding:.25em 1em .25em 0;\
border-bottom:1px solid #ddd}th{font-weight:600}.ok{color:#176b2c}.bad{color:#a11}code{font-size:.95em}";

/// A small self-contained HTML page: this node, its Raft state, the members, the
/// agents and the active releases. Every value from the state is escaped.
pub fn render_page(view: &StatusView) -> String {
    let e = escape_html;
    let mut h = String::new();
    let (ready_class, ready) = match view.readiness() {
        Ok(why) => ("ok", format!("ready: {why}")),
        Err(why) => ("bad", format!("not ready: {why}")),
    };
    let leader = match (view.leader_id, view.leader_addr()) {
        (Some(id), Some(addr)) if id == view.node_id => format!("node {id} at {} (this node)", e(addr)),
        (Some(id), Some(addr)) => format!("node {id} at {}", e(addr)),
        (Some(id), None) => format!("node {id}"),
        (None, _) => "none known".to_owned(),
    };
    // Writing into a String cannot fail.
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>Flotilla coordinator {id}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>Flotilla coordinator, node {id}</h1>\n\
         <p><code>{addr}</code> · {role} · version {version} · <span class=\"{ready_class}\">{ready}</span></p>\n",
        id = view.node_id,
        addr = e(&view.advertise),
        role = view.role.name(),
        version = e(view.version),
        ready = e(&ready),
    );
    if let Some(err) = &view.raft_error {
        let _ = writeln!(h, "<p class=\"bad\">Raft has stopped: {}</p>", e(err));
    }

    h.push_str("<h2>Raft</h2>\n<table>\n");
    let mut row = |k: &str, v: String| {
        let _ = writeln!(h, "<tr><th>{k}</th><td>{v}</td></tr>");
    };
    row("role", view.role.name().to_owned());
    row("leader", leader);
    row("term", view.term.to_string());
    row("last log index", index(view.last_log_index));
    row("committed index", index(view.committed_index));
    row("applied index", index(view.applied_index));
    row("snapshot index", index(view.snapshot_index));
    row("purged index", index(view.purged_index));
    if let Some(age) = view.quorum_ack_age {
        row("last quorum ack", format!("{} ms ago", age.as_millis()));
    }
    h.push_str("</table>\n");

    let _ = writeln!(h, "<h2>Members</h2>\n<p>Voters: {}; learners: {}.</p>", view.voters(), view.learners());
    h.push_str("<table>\n<tr><th>node</th><th>address</th><th>role</th><th>matched index</th></tr>\n");
    for m in &view.members {
        let mut role = if m.voter { "voter" } else { "learner" }.to_owned();
        if Some(m.id) == view.leader_id {
            role.push_str(", leader");
        }
        if m.id == view.node_id {
            role.push_str(", this node");
        }
        let matched = if m.id == view.node_id { index(view.last_log_index) } else { index(m.matched_index) };
        let _ = writeln!(h, "<tr><td>{}</td><td>{}</td><td>{role}</td><td>{matched}</td></tr>", m.id, e(&m.addr));
    }
    h.push_str("</table>\n");

    let _ = writeln!(
        h,
        "<h2>Agents</h2>\n<p>{} online of {} known; {} sessions open on this node.</p>",
        view.agents_online, view.agents_known, view.sessions_open
    );

    let _ = writeln!(h, "<h2>Active releases ({})</h2>", view.active_total);
    if view.active_releases.is_empty() {
        h.push_str("<p>None.</p>\n");
    } else {
        h.push_str("<table>\n<tr><th>id</th><th>name</th><th>state</th><th>submitted</th><th>by</th></tr>\n");
        for r in &view.active_releases {
            let _ = writeln!(
                h,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                e(&r.id),
                e(&r.name),
                release_state_name(r.status),
                timestamp(r.created_unix_ms),
                e(&r.created_by)
            );
        }
        h.push_str("</table>\n");
        if view.active_total > view.active_releases.len() {
            let _ = writeln!(h, "<p>and {} more.</p>", view.active_total - view.active_releases.len());
        }
    }
    h.push_str(
        "<p><a href=\"/metrics\">metrics</a> · <a href=\"/healthz\">healthz</a> · \
         <a href=\"/readyz\">readyz</a></p>\n</body>\n</html>\n",
    );
    h
}
