//! Tests of the HTTP endpoints' views and rendering, without a listener.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, CommittedLeaderId, LogId, Membership, RaftMetrics, ServerState, StoredMembership};

use super::*;
use crate::engine::Status;
use crate::http::view::HookView;
use crate::raft::NodeId;
use crate::state::{Command, NewRelease, Op, State};

fn member(id: NodeId, voter: bool, matched_index: Option<u64>) -> MemberView {
    MemberView { id, addr: format!("10.0.0.{id}:7600"), voter, matched_index }
}

/// Node 1 leading a cluster of three voters and a learner, in term 7.
fn leader_view() -> StatusView {
    let mut releases_by_state = [0; RELEASE_STATES.len()];
    releases_by_state[1] = 2; // running
    releases_by_state[5] = 5; // succeeded
    StatusView {
        node_id: 1,
        advertise: "10.0.0.1:7600".to_owned(),
        version: "9.8.7",
        raft_error: None,
        role: Role::Leader,
        leader_id: Some(1),
        term: 7,
        last_log_index: Some(120),
        committed_index: Some(119),
        core_answered: true,
        applied_index: Some(118),
        snapshot_index: Some(100),
        purged_index: None,
        quorum_ack_age: Some(Duration::from_millis(1_500)),
        members: vec![
            member(1, true, None),
            member(2, true, Some(120)),
            member(3, true, Some(97)),
            member(4, false, None),
        ],
        agents_known: 4,
        agents_online: 3,
        sessions_open: 3,
        releases_by_state,
        active_releases: vec![ReleaseView {
            id: "r-1".to_owned(),
            name: "shop".to_owned(),
            status: Status::Running,
            created_by: "ops".to_owned(),
            created_unix_ms: 1_700_000_000_000,
        }],
        active_total: 2,
        audit_committed: 17,
        audit_dropped: 1,
        hooks: vec![HookView { name: "ops".to_owned(), delivered: 12, failed: 3, pending: 1 }],
        delivery: vec![
            crate::stats::Figures {
                changes: 5,
                failed: 1,
                deployments_per_day: 4.0 / 30.0,
                lead_time_median_ms: Some(5_400_000),
                change_failure_rate: Some(0.2),
                time_to_restore_median_ms: None,
                ..crate::stats::Figures::default()
            },
            crate::stats::Figures {
                service: Some("api".into()),
                changes: 2,
                failed: 1,
                deployments_per_day: 1.0 / 30.0,
                lead_time_median_ms: Some(600_000),
                change_failure_rate: Some(0.5),
                time_to_restore_median_ms: Some(7_200_000),
                ..crate::stats::Figures::default()
            },
        ],
    }
}

/// Node 2 of the same cluster, following node 1.
fn follower_view() -> StatusView {
    StatusView {
        node_id: 2,
        advertise: "10.0.0.2:7600".to_owned(),
        role: Role::Follower,
        quorum_ack_age: None,
        members: vec![member(1, true, None), member(2, true, None), member(3, true, None), member(4, false, None)],
        sessions_open: 0,
        ..leader_view()
    }
}

/// The sample lines of an exposition, without comments.
fn samples(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.starts_with('#')).collect()
}

#[test]
fn http_metrics_of_a_leader_carry_every_family_with_its_value() {
    let text = render_metrics(&leader_view());
    let lines = samples(&text);
    let build_info = format!(
        "flotilla_build_info{{version=\"9.8.7\",protocol_version=\"{}\",peer_protocol_version=\"{}\"}} 1",
        flotilla_proto::PROTOCOL_VERSION,
        flotilla_proto::PEER_PROTOCOL_VERSION
    );
    assert!(lines.contains(&build_info.as_str()), "missing `{build_info}` in:\n{text}");
    for expected in [
        "flotilla_raft_node_id 1",
        "flotilla_raft_is_leader 1",
        "flotilla_raft_server_state{state=\"leader\"} 1",
        "flotilla_raft_server_state{state=\"follower\"} 0",
        "flotilla_raft_has_leader 1",
        "flotilla_raft_leader_id 1",
        "flotilla_raft_term 7",
        "flotilla_raft_last_log_index 120",
        "flotilla_raft_committed_index 119",
        "flotilla_raft_applied_index 118",
        "flotilla_raft_snapshot_index 100",
        "flotilla_raft_voters 3",
        "flotilla_raft_learners 1",
        "flotilla_raft_quorum_ack_age_seconds 1.5",
        "flotilla_raft_replication_matched_index{follower=\"2\"} 120",
        "flotilla_raft_replication_matched_index{follower=\"3\"} 97",
        "flotilla_agents_known 4",
        "flotilla_agents_online 3",
        "flotilla_agent_sessions 3",
        "flotilla_releases{state=\"running\"} 2",
        "flotilla_releases{state=\"succeeded\"} 5",
        "flotilla_releases{state=\"rolled_back\"} 0",
        "flotilla_delivery_changes{service=\"*\"} 5",
        "flotilla_delivery_changes{service=\"api\"} 2",
        "flotilla_delivery_lead_time_seconds{service=\"*\"} 5400.0",
        "flotilla_delivery_lead_time_seconds{service=\"api\"} 600.0",
        "flotilla_delivery_change_failure_ratio{service=\"*\"} 0.2",
        "flotilla_delivery_change_failure_ratio{service=\"api\"} 0.5",
        "flotilla_delivery_time_to_restore_seconds{service=\"api\"} 7200.0",
        "flotilla_notify_delivered{hook=\"ops\"} 12",
        "flotilla_notify_failed{hook=\"ops\"} 3",
        "flotilla_notify_pending{hook=\"ops\"} 1",
    ] {
        assert!(lines.contains(&expected), "missing `{expected}` in:\n{text}");
    }
    assert!(
        !text.contains("flotilla_delivery_time_to_restore_seconds{service=\"*\"}"),
        "a figure without data is left out:\n{text}"
    );
    assert!(text.contains("# TYPE flotilla_raft_term gauge"), "gauges are typed:\n{text}");
    assert!(text.contains("# UNIT flotilla_raft_quorum_ack_age_seconds seconds"), "the unit is declared:\n{text}");
    assert!(text.ends_with("# EOF\n"), "an OpenMetrics exposition ends with EOF");
    assert!(!text.contains("flotilla_raft_purged_index"), "an index that does not exist is left out");
    let every_state = lines.iter().filter(|l| l.starts_with("flotilla_releases{")).count();
    assert_eq!(every_state, RELEASE_STATES.len(), "every release state has a series, zeros included");
}

#[test]
fn http_metrics_of_a_follower_leave_out_the_leader_only_families() {
    let text = render_metrics(&follower_view());
    let lines = samples(&text);
    assert!(lines.contains(&"flotilla_raft_is_leader 0"), "{text}");
    assert!(lines.contains(&"flotilla_raft_leader_id 1"), "{text}");
    assert!(lines.contains(&"flotilla_raft_node_id 2"), "{text}");
    assert!(!text.contains("flotilla_raft_quorum_ack_age"), "{text}");
    assert!(!text.contains("flotilla_raft_replication_matched_index"), "{text}");
}

#[test]
fn http_metrics_without_a_leader_say_so() {
    let view = StatusView { leader_id: None, role: Role::Candidate, ..follower_view() };
    let lines_text = render_metrics(&view);
    let lines = samples(&lines_text);
    assert!(lines.contains(&"flotilla_raft_has_leader 0"));
    assert!(lines.contains(&"flotilla_raft_leader_id 0"));
    assert!(lines.contains(&"flotilla_raft_server_state{state=\"candidate\"} 1"));
}

#[test]
fn http_readiness_needs_a_leader_and_the_committed_log_applied() {
    assert!(leader_view().readiness().is_ok(), "the leader is ready");

    let caught_up = StatusView { applied_index: Some(119), ..follower_view() };
    let ready = caught_up.readiness().expect("a follower that applied its committed log is ready");
    assert!(ready.contains("following leader 1"), "{ready}");

    let behind = StatusView { applied_index: Some(118), ..follower_view() };
    let why = behind.readiness().expect_err("a follower behind its committed index is not ready");
    assert_eq!(why, "applied index 118 is behind committed index 119");

    let no_leader = StatusView { leader_id: None, role: Role::Candidate, ..follower_view() };
    let why = no_leader.readiness().expect_err("no leader, not ready");
    assert_eq!(why, "no leader is known in term 7 (this node is candidate)");

    let silent =
        StatusView { core_answered: false, committed_index: None, applied_index: Some(119), ..follower_view() };
    assert!(silent.readiness().is_err(), "a core that does not answer is not ready");

    let stopped = StatusView { raft_error: Some("storage failed".to_owned()), ..leader_view() };
    assert_eq!(stopped.readiness().expect_err("stopped"), "raft has stopped: storage failed");
    for result in [leader_view().readiness(), behind.readiness()] {
        let line = result.unwrap_or_else(|e| e);
        assert!(!line.contains('\n'), "a reason is one line: {line:?}");
    }
}

#[test]
fn http_page_shows_the_node_and_escapes_what_comes_from_the_state() {
    let mut view = leader_view();
    view.active_releases[0].name = "<script>alert('x')</script> & co".to_owned();
    view.active_releases[0].created_by = "\"ops\"".to_owned();
    view.members[1].addr = "<b>10.0.0.2:7600</b>".to_owned();
    let page = render_page(&view);
    assert!(page.starts_with("<!doctype html>"), "{page}");
    assert!(page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; co"), "{page}");
    assert!(page.contains("&quot;ops&quot;"), "{page}");
    assert!(page.contains("&lt;b&gt;10.0.0.2:7600&lt;/b&gt;"), "{page}");
    assert!(!page.contains("<script"), "nothing from the state runs");
    assert!(!page.contains("<b>"), "nothing from the state is markup");
    for expected in ["node 1", "leader", "term</th><td>7", "applied index</th><td>118", "3 online of 4 known"] {
        assert!(page.contains(expected), "missing `{expected}` in:\n{page}");
    }
    assert!(page.contains("Active releases (2)"), "{page}");
    assert!(page.contains("2023-11-14T22:13:20Z"), "the submission time is shown in UTC:\n{page}");
    assert!(!page.contains("http://") && !page.contains("https://"), "no external assets");
}

#[test]
fn http_escape_html_replaces_every_markup_character() {
    assert_eq!(escape_html(r#"<a href="x">'&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    assert_eq!(escape_html("plain ünïcode"), "plain ünïcode");
}

fn create(id: &str, name: &str) -> Command {
    Command {
        at_unix_ms: 1_000,
        op: Op::CreateRelease(NewRelease {
            id: id.to_owned(),
            name: name.to_owned(),
            file_name: format!("{name}.toml"),
            ..NewRelease::default()
        }),
    }
}

#[test]
fn http_view_is_read_from_raft_metrics_and_the_state() {
    let log_id = |index| LogId::new(CommittedLeaderId::new(3, 2), index);
    let nodes: BTreeMap<NodeId, BasicNode> =
        (1..=4).map(|id| (id, BasicNode { addr: format!("127.0.0.1:76{id:02}") })).collect();
    let membership = Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes);
    let mut metrics = RaftMetrics::<NodeId, BasicNode>::new_initial(2);
    metrics.state = ServerState::Leader;
    metrics.current_leader = Some(2);
    metrics.current_term = 3;
    metrics.last_log_index = Some(42);
    metrics.last_applied = Some(log_id(41));
    metrics.snapshot = Some(log_id(30));
    metrics.purged = Some(log_id(20));
    metrics.millis_since_quorum_ack = Some(25);
    metrics.membership_config = Arc::new(StoredMembership::new(Some(log_id(1)), membership));
    metrics.replication =
        Some(BTreeMap::from([(1, Some(log_id(42))), (2, Some(log_id(42))), (3, None), (4, Some(log_id(40)))]));

    let mut state = State::default();
    state.apply(5, 1, &create("r-a", "alpha"));
    state.apply(6, 1, &create("r-b", "beta"));

    let view = StatusView::from_parts("127.0.0.1:7602", &metrics, Some(Some(41)), &state, 2);
    assert_eq!(view.node_id, 2);
    assert_eq!(view.role, Role::Leader);
    assert_eq!(view.leader_addr(), Some("127.0.0.1:7602"));
    assert_eq!((view.last_log_index, view.committed_index, view.applied_index), (Some(42), Some(41), Some(41)));
    assert_eq!((view.snapshot_index, view.purged_index), (Some(30), Some(20)));
    assert_eq!(view.quorum_ack_age, Some(Duration::from_millis(25)));
    assert_eq!((view.voters(), view.learners()), (3, 1));
    let matched: Vec<(NodeId, Option<u64>)> = view.members.iter().map(|m| (m.id, m.matched_index)).collect();
    assert_eq!(matched, [(1, Some(42)), (2, None), (3, None), (4, Some(40))], "this node is not its own follower");
    assert_eq!(view.sessions_open, 2);
    let pending = RELEASE_STATES.iter().position(|s| *s == Status::Pending).expect("pending is a state");
    assert_eq!(view.releases_by_state[pending], 2);
    assert_eq!(view.releases_by_state.iter().sum::<u64>(), 2);
    let active: Vec<&str> = view.active_releases.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(active, ["alpha", "beta"]);
    assert!(view.core_answered);

    let unanswered = StatusView::from_parts("127.0.0.1:7602", &metrics, None, &state, 0);
    assert!(!unanswered.core_answered);
    assert_eq!(unanswered.committed_index, None);
}
