//! The dashboard's pages rendered from views full of markup: everything shown is text.

use flotilla_proto::v1;

use super::pages::{self, BatchRow, Chrome, Controls, HostRow, ReleaseExtra};
use super::shared::frame;
use super::{extra, read_release};
use crate::state::{Command, NewRelease, Op, State};

/// Markup that would close an attribute and open a script element.
const EVIL: &str = "\"'><script>alert(1)</script>";

/// No markup from the data made it through: no script element, no attribute closed,
/// while the data's text is there escaped.
fn assert_inert(html: &str) {
    assert!(!html.contains("<script>alert"), "a script element got through:\n{html}");
    assert!(!html.contains("\"'>"), "an attribute was broken out of:\n{html}");
    // maud leaves `'` alone: its attributes are always double-quoted.
    let shown =
        ["&quot;&#39;&gt;&lt;script&gt;alert(1)&lt;/script&gt;", "&quot;'&gt;&lt;script&gt;alert(1)&lt;/script&gt;"];
    assert!(shown.iter().any(|t| html.contains(t)), "the text is not shown:\n{html}");
}

fn evil_release() -> v1::Release {
    let service =
        |name: &str| v1::PlannedService { name: name.to_owned(), version: "2.0.0".into(), ..Default::default() };
    v1::Release {
        id: "r-1".into(),
        name: format!("shop {EVIL}"),
        state: v1::ReleaseState::AwaitingApproval as i32,
        reason: format!("waiting for {EVIL}"),
        created_by: format!("operator {EVIL}"),
        file_name: format!("{EVIL}.toml"),
        plan: Some(v1::Plan {
            services: vec![service(EVIL), service("web")],
            waves: vec![
                v1::PlanWave { wave: 1, services: vec![EVIL.into()] },
                v1::PlanWave { wave: 2, services: vec!["web".into()] },
            ],
            edges: vec![v1::PlanEdge {
                dependency: EVIL.into(),
                dependent: "web".into(),
                kind: v1::EdgeKind::Contract as i32,
                contract: format!("api {EVIL}"),
                ..Default::default()
            }],
            ..Default::default()
        }),
        stages: vec![v1::StageStatus {
            index: 0,
            name: format!("canary {EVIL}"),
            state: v1::StageState::AwaitingApproval as i32,
            services: vec![v1::ServiceStatus {
                service: EVIL.into(),
                target_version: "2.0.0".into(),
                from_versions: vec![format!("1.0.0 {EVIL}")],
                state: v1::ServiceState::Failed as i32,
                reason: format!("health check said {EVIL}"),
                batches_total: 1,
                hosts_total: 1,
                ..Default::default()
            }],
            gates: vec![v1::GateStatus { gate: EVIL.into(), state: 1, reason: EVIL.into() }],
        }],
        pending_approvals: vec![v1::PendingApproval {
            kind: v1::ApprovalKind::Stage as i32,
            name: EVIL.into(),
            approvers: EVIL.into(),
            ..Default::default()
        }],
        analyses: vec![v1::CanaryAnalysis {
            service: EVIL.into(),
            batch: "canary".into(),
            reason: EVIL.into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn evil_extra() -> ReleaseExtra {
    let mut extra = ReleaseExtra::default();
    extra.batches.insert(
        (0, EVIL.to_owned()),
        vec![BatchRow {
            name: EVIL.into(),
            total: 1,
            counts: vec![("failed".into(), 1)],
            hosts: vec![HostRow {
                host: EVIL.into(),
                state: format!("failed: {EVIL}"),
                class: "st-failed",
                from: Some(EVIL.into()),
            }],
        }],
    );
    extra.rollback_members = vec![(EVIL.into(), EVIL.into())];
    extra.rollback_actions = vec![format!("roll back {EVIL}")];
    extra
}

fn evil_event(index: u64) -> v1::ReleaseEvent {
    v1::ReleaseEvent { index, at_unix_ms: 1_700_000_000_000, message: format!("{EVIL} failed"), ..Default::default() }
}

#[test]
fn ui_release_page_shows_names_and_messages_as_text() {
    let chrome = Chrome { node_id: 3, who: Some(format!("operator {EVIL} (viewer)")), sign_out: None };
    let page =
        pages::release(&evil_release(), &evil_extra(), &[evil_event(1), evil_event(2)], &chrome, None, Some(EVIL));
    assert_inert(&page);
    assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
    assert!(
        page.contains(r#"<ol id="events" start="1" data-after="2">"#),
        "the stream resumes after the last event shown: {page}"
    );
    assert!(page.contains("Waiting for approval"), "{page}");
    assert!(page.contains("Rollback"), "{page}");
    assert!(page.contains("<svg class=\"graph\""), "{page}");
    assert!(page.contains(r#"<tr class="wave"><th colspan="6" scope="rowgroup">Wave 1</th></tr>"#), "{page}");
    assert!(!page.contains("<form"), "a viewer gets no action: {page}");
    assert_inert(&pages::live(&evil_release(), &evil_extra(), None).into_string());
}

#[test]
fn ui_actions_are_offered_to_those_who_may_act_with_their_form_token() {
    let controls = Controls { form_token: "f00d".into() };
    let live = pages::live(&evil_release(), &evil_extra(), Some(&controls)).into_string();
    assert_inert(&live);
    // The pending stage approval, and what an awaiting release allows.
    let approve = live.find(r#"name="action" value="approve""#).unwrap_or_else(|| panic!("{live}"));
    assert!(live[approve..].contains(r#"name="target" value="stage:&quot;'&gt;&lt;script&gt;"#), "{live}");
    for action in ["pause", "rollback", "abort"] {
        assert!(live.contains(&format!(r#"data-action="{action}""#)), "{action}: {live}");
    }
    assert!(!live.contains(r#"data-action="resume""#), "only a paused release resumes");
    assert_eq!(live.matches(r#"name="form_token" value="f00d""#).count(), live.matches("<form").count());
    assert!(live.contains("data-confirm="), "every action asks first");
    let mut done = evil_release();
    done.state = v1::ReleaseState::Succeeded as i32;
    done.pending_approvals.clear();
    let live = pages::live(&done, &ReleaseExtra::default(), Some(&controls)).into_string();
    assert!(!live.contains("<form"), "a finished release has no actions: {live}");
}

#[test]
fn ui_offers_to_retry_or_exclude_each_host_a_paused_release_failed_on() {
    let controls = Controls { form_token: "f00d".into() };
    let mut paused = evil_release();
    paused.state = v1::ReleaseState::Paused as i32;
    paused.pending_approvals.clear();
    let stage = &mut paused.stages[0];
    stage.state = v1::StageState::Running as i32;
    stage.services[0].failed_hosts = vec![
        v1::FailedHost { host: EVIL.into(), reason: "deploy failed".into() },
        v1::FailedHost { host: "host-5".into(), reason: "health check failed".into() },
    ];
    let live = pages::live(&paused, &evil_extra(), Some(&controls)).into_string();
    assert_inert(&live);
    for action in ["retry", "exclude"] {
        assert!(live.contains(&format!(r#"data-action="{action}" data-target="host-5""#)), "{action}: {live}");
    }
    assert!(live.contains(r#"data-action="resume""#));
    assert!(!live.contains(r#"data-action="pause""#), "{live}");
    // Nothing to retry while the release runs.
    let running = pages::live(&evil_release(), &evil_extra(), Some(&controls)).into_string();
    assert!(!running.contains(r#"data-action="retry""#), "{running}");
}

#[test]
fn ui_lists_and_fleet_and_cluster_show_names_as_text() {
    let summary = v1::ReleaseSummary {
        id: format!("r-{EVIL}"),
        name: EVIL.into(),
        state: v1::ReleaseState::Running as i32,
        stage: EVIL.into(),
        services_total: 3,
        services_done: 1,
        ..Default::default()
    };
    let chrome = Chrome { node_id: 1, who: None, sign_out: Some(EVIL.into()) };
    let delivery = [
        crate::stats::Figures { changes: 3, failed: 1, lead_time_median_ms: Some(5_400_000), ..Default::default() },
        crate::stats::Figures {
            service: Some(EVIL.into()),
            changes: 3,
            failed: 1,
            change_failure_rate: Some(1.0 / 3.0),
            unrestored: 1,
            ..Default::default()
        },
    ];
    let list = pages::releases(&[(summary, format!("operator {EVIL}"))], "all", &delivery, &chrome, 1_700_000_000_000);
    assert_inert(&list);
    assert!(list.contains(r#"value="1""#) && list.contains("1/3"), "{list}");
    assert!(list.contains("Delivery over the last 30 days") && list.contains("1h 30m"), "{list}");
    assert!(list.contains("33 %") && list.contains("1 not restored yet"), "{list}");
    let quiet = pages::releases(&[], "all", &[crate::stats::Figures::default()], &chrome, 0);
    assert!(!quiet.contains("Delivery"), "no panel without a change: {quiet}");

    let host = v1::Host {
        host_id: EVIL.into(),
        labels: [(EVIL.to_owned(), EVIL.to_owned())].into(),
        state: v1::HostState::Online as i32,
        drained: true,
        drain_reason: EVIL.into(),
        services: vec![v1::ServiceInstance { service: EVIL.into(), version: "1.0.0".into(), ..Default::default() }],
        ..Default::default()
    };
    let step = v1::HostStep {
        command_id: format!("c-{EVIL}"),
        release_id: format!("r-{EVIL}"),
        service: EVIL.into(),
        action: "deploy".into(),
        version: "2.0.0".into(),
        outcome: v1::StepOutcome::Failed as i32,
        reason: format!("health check said {EVIL}"),
        sent_unix_ms: 1_699_999_940_000,
        finished_unix_ms: 1_699_999_950_000,
    };
    let fleet = pages::fleet(&[(host.clone(), Some(step.clone()))], &chrome, 1_700_000_000_000);
    assert_inert(&fleet);
    assert!(fleet.contains("1 hosts, 1 online"), "{fleet}");
    assert!(fleet.contains(r#"<span class="step-failed">failed</span> · 1m ago"#), "the newest step: {fleet}");

    let page = pages::host(&host, &[step], 0, &chrome, 1_700_000_000_000);
    assert_inert(&page);
    assert!(page.contains("2023-11-14 22:12:20") && page.contains("deploy"), "the step is listed: {page}");

    let status = v1::ClusterStatus {
        node_id: 2,
        leader_id: 1,
        leader_addr: EVIL.into(),
        term: 4,
        committed_index: 10,
        members: vec![v1::ClusterMember {
            node_id: 1,
            addr: EVIL.into(),
            matched_index: Some(7),
            reachable: true,
            ..Default::default()
        }],
        ..Default::default()
    };
    let cluster = pages::cluster(&status, &chrome);
    assert_inert(&cluster);
    assert!(cluster.contains("<td>3</td>"), "the lag is committed minus matched: {cluster}");
}

#[test]
fn ui_events_are_sent_with_their_index_and_escaped_markup() {
    let text = frame(&evil_event(7));
    assert!(text.starts_with("id: 7\nevent: release\ndata: {"), "{text}");
    assert!(text.ends_with("}\n\n") && text.matches('\n').count() == 4, "one data line: {text}");
    let data: serde_json::Value =
        serde_json::from_str(text.lines().nth(2).unwrap().trim_start_matches("data: ")).unwrap();
    assert_eq!(data["index"], 7);
    assert_eq!(data["message"], format!("{EVIL} failed"), "the message as data, for scripts");
    assert_inert(data["html"].as_str().unwrap());
}

#[test]
fn ui_a_release_is_read_from_the_applied_state() {
    let mut state = State::default();
    let create = Command {
        at_unix_ms: 1_000,
        op: Op::CreateRelease(NewRelease {
            id: "r-a".to_owned(),
            name: EVIL.to_owned(),
            file_name: "a.toml".to_owned(),
            created_by: "operator ops".to_owned(),
            ..NewRelease::default()
        }),
    };
    state.apply(5, 1, &create);
    let (view, more, events) = read_release(&state, "r-a").expect("the release is there");
    assert_eq!((view.id.as_str(), view.name.as_str(), view.created_by.as_str()), ("r-a", EVIL, "operator ops"));
    assert_eq!(events.len(), view.last_event_index as usize, "every event of the run");
    assert!(more.rollback_members.is_empty());
    assert_eq!(extra(state.release("r-a").unwrap(), None).batches.len(), 0, "no stage started");
    assert!(read_release(&state, "r-nope").is_none());
    assert_inert(&pages::release(&view, &more, &events, &Chrome::default(), None, None));
}

#[test]
fn ui_a_live_part_is_shared_until_the_next_event_each_viewer_with_their_own_form_token() {
    use super::shared::{FORM_TOKEN_SLOT, LiveParts};
    let parts = LiveParts::default();
    let release = evil_release();
    let slot = Controls { form_token: FORM_TOKEN_SLOT.to_owned() };
    let made = pages::live(&release, &evil_extra(), Some(&slot)).into_string();
    assert!(made.contains(FORM_TOKEN_SLOT), "{made}");
    assert_eq!(parts.get("r-1", true, 5, "alice-token"), None, "nothing made yet");
    let alice = parts.put("r-1", true, 5, made, "alice-token");
    assert!(alice.contains(r#"value="alice-token""#) && !alice.contains(FORM_TOKEN_SLOT), "{alice}");
    let carol = parts.get("r-1", true, 5, "carol-token").expect("shared at the same event");
    assert_eq!(carol, alice.replace("alice-token", "carol-token"), "the same part with carol's token");
    assert_eq!(parts.get("r-1", true, 6, "carol-token"), None, "a new event: made again");
    assert_eq!(parts.get("r-1", false, 5, ""), None, "viewers who may not act have their own");
    let viewers = parts.put("r-1", false, 5, pages::live(&release, &evil_extra(), None).into_string(), "");
    assert!(!viewers.contains("<form"), "{viewers}");
    assert!(parts.get("r-1", true, 5, "carol-token").is_some(), "the deployers' part stays");
}
