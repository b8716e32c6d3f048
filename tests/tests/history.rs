//! Release history kept to its retention, through real coordinator processes: with a
//! small retention (`--finished-release-max-count 3 --compacted-release-max-count 4`)
//! the oldest finished releases are compacted to their summary and the oldest summaries
//! forgotten, the same on every coordinator (read from a new leader after the old one is
//! killed, and after a restart of the whole cluster from its snapshots); a compacted
//! release reads back through the API and the CLI as a summary and refuses to be acted
//! on, each refusal naming why.

use std::process::Command;
use std::time::Duration;

use flotilla_net::{ClientSecurity, channel};
use flotilla_proto::status::Reason;
use flotilla_proto::v1::releases_client::ReleasesClient;
use flotilla_proto::v1::{self, ReleaseState};
use flotilla_tests::{ClusterOptions, TestCluster, binary, eventually, refused, write_via};
use tonic::Code;

/// Releases the test runs, oldest first.
const RELEASES: usize = 9;

/// What `List` shows from `addr`, newest first: (id, compacted).
async fn listed(addr: &str, security: &ClientSecurity) -> anyhow::Result<Vec<(String, bool)>> {
    let mut client = ReleasesClient::new(channel(addr, security)?);
    let list = client.list(v1::ListRequest::default()).await?.into_inner();
    Ok(list.releases.into_iter().map(|r| (r.id, r.compacted)).collect())
}

async fn get(addr: &str, security: &ClientSecurity, id: &str) -> Result<v1::Release, tonic::Status> {
    let mut client = ReleasesClient::new(channel(addr, security).unwrap());
    let req = v1::GetRequest { release_id: id.to_owned() };
    client.get(req).await.map(|r| r.into_inner().release.unwrap_or_default())
}

/// The list the retention must leave of `ids` (oldest first): the newest three whole,
/// the four before them compacted, the rest forgotten.
fn expected(ids: &[String]) -> Vec<(String, bool)> {
    ids.iter().rev().take(7).enumerate().map(|(i, id)| (id.clone(), i >= 3)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_releases_beyond_the_retention_are_compacted_alike_on_every_coordinator() {
    let args = ["--finished-release-max-count", "3", "--compacted-release-max-count", "4"];
    let opts = ClusterOptions {
        // Snapshots every few entries: the restart below reads the history from one.
        snapshot_logs: 20,
        keep_logs: 5,
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        ..ClusterOptions::default()
    };
    let mut cluster = TestCluster::start(3, opts).unwrap();
    let leader = cluster.wait_leader(Duration::from_secs(30)).await.unwrap();
    let security = cluster.client_security().clone();
    let client = cluster.new_client();

    // Releases one after the other, each waited for until it succeeds (the stand-in
    // host already runs what they deploy, so each finishes at once).
    let mut ids = Vec::new();
    for i in 0..RELEASES {
        let id = write_via(&client, &format!("history-{i}")).await.unwrap();
        let at = cluster.nodes[&leader].addr.clone();
        eventually(Duration::from_secs(15), "the release to succeed", || async {
            let r = get(&at, &security, &id).await.ok()?;
            (r.state == ReleaseState::Succeeded as i32).then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.log_of(leader)));
        ids.push(id);
    }
    let want = expected(&ids);
    let at_leader = cluster.nodes[&leader].addr.clone();
    let kept = eventually(Duration::from_secs(15), "the history kept to the retention", || async {
        let now = listed(&at_leader, &security).await.ok()?;
        (now == want).then_some(())
    })
    .await;
    if let Err(e) = kept {
        panic!("{e:#}: {:?}\n{}", listed(&at_leader, &security).await, cluster.log_of(leader));
    }

    // A kept release has its events; a compacted one its summary.
    let whole = get(&at_leader, &security, &ids[RELEASES - 1]).await.unwrap();
    assert!(!whole.compacted && !whole.spec_toml.is_empty() && whole.plan.is_some(), "{whole:?}");
    let compacted_id = &ids[RELEASES - 4];
    let summary = get(&at_leader, &security, compacted_id).await.unwrap();
    assert!(summary.compacted, "{summary:?}");
    assert_eq!(summary.state, ReleaseState::Succeeded as i32);
    assert!(summary.spec_toml.is_empty() && summary.plan.is_none(), "the spec and plan are dropped");
    assert!(summary.last_event_index >= 2, "it still says how many events it had: {summary:?}");
    assert!(summary.finished_unix_ms >= summary.created_unix_ms && summary.finished_unix_ms > 0);
    let services: Vec<(&str, &str)> = summary
        .stages
        .iter()
        .flat_map(|st| st.services.iter().map(|s| (s.service.as_str(), s.target_version.as_str())))
        .collect();
    assert_eq!(services, [("svc", "1.0.0")], "what each stage did to each service stays");
    refused(get(&at_leader, &security, &ids[0]).await, Code::NotFound, Reason::ReleaseNotFound);

    // A compacted release is not acted on, and says why.
    let mut releases = ReleasesClient::new(channel(&at_leader, &security).unwrap());
    let why = refused(
        releases.annotate(v1::AnnotateRequest { release_id: compacted_id.clone(), text: "too late".into() }).await,
        Code::FailedPrecondition,
        Reason::ReleaseStateConflict,
    );
    assert!(why.contains(&format!("release {compacted_id} finished and was compacted")), "{why}");
    let why = refused(
        releases.rollback(v1::RollbackRequest { release_id: compacted_id.clone(), ..Default::default() }).await,
        Code::FailedPrecondition,
        Reason::ReleaseStateConflict,
    );
    assert!(why.contains("compacted"), "{why}");
    let mut watch = releases
        .watch(v1::WatchRequest { release_id: compacted_id.clone(), after_index: 0 })
        .await
        .expect("a compacted release is known")
        .into_inner();
    let ended = watch.message().await;
    let status = ended.expect_err("its events are gone");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("are no longer kept"), "{status:?}");

    // The CLI shows the same.
    let cli = |args: &[&str]| {
        let out = Command::new(binary("flotilla"))
            .args(args)
            .env("FLOTILLA_COORDINATORS", &at_leader)
            .env("FLOTILLA_INSECURE", "1")
            .output()
            .expect("flotilla runs");
        assert!(out.status.success(), "flotilla {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let list = cli(&["release", "list"]);
    let compacted_line =
        list.lines().find(|l| l.starts_with(compacted_id.as_str())).unwrap_or_else(|| panic!("{list}"));
    assert!(compacted_line.ends_with("(compacted)"), "{list}");
    let newest = list.lines().find(|l| l.starts_with(ids[RELEASES - 1].as_str())).unwrap_or_else(|| panic!("{list}"));
    assert!(!newest.contains("compacted"), "{list}");
    let show = cli(&["release", "show", compacted_id]);
    assert!(show.contains("compacted: the cluster keeps only this summary"), "{show}");
    assert!(show.contains("svc") && show.contains("1.0.0"), "{show}");

    // Every coordinator compacted the same releases: a new leader shows the same list...
    cluster.kill9(leader);
    let new_leader = cluster.wait_leader(Duration::from_secs(30)).await.unwrap();
    let at_new = cluster.nodes[&new_leader].addr.clone();
    eventually(Duration::from_secs(15), "the same history on the new leader", || async {
        (listed(&at_new, &security).await.ok()? == want).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.log_of(new_leader)));

    // ... and so does the whole cluster restarted from its snapshots and logs.
    cluster.restart(leader).unwrap();
    let all: Vec<u64> = cluster.nodes.keys().copied().collect();
    for id in &all {
        cluster.terminate(*id);
    }
    for id in &all {
        cluster.restart(*id).unwrap();
    }
    let back = cluster.wait_leader(Duration::from_secs(30)).await.unwrap();
    let at_back = cluster.nodes[&back].addr.clone();
    eventually(Duration::from_secs(15), "the same history after a full restart", || async {
        (listed(&at_back, &security).await.ok()? == want).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.log_of(back)));
    let summary_back = get(&at_back, &security, compacted_id).await.unwrap();
    assert_eq!(summary_back, summary, "the summary survives the restart as it was");
}
