//! Backup and restore of a coordinator cluster as real processes (the operations
//! guide's procedure): `flotilla-coordinator snapshot save` from a running mutual-TLS
//! cluster, every node killed and its data directory wiped, `snapshot restore` on each
//! node from the same file, and the cluster comes back with every release and event and
//! takes new writes. A restore never overwrites a data directory, and a damaged backup
//! is refused.

use std::time::Duration;

use flotilla_net::LeaderClient;
use flotilla_proto::v1;
use flotilla_proto::v1::releases_client::ReleasesClient;
use flotilla_tests::{ClusterOptions, TestCluster, eventually};

const ELECTION: Duration = Duration::from_secs(20);
const SETTLE: Duration = Duration::from_secs(30);

/// A release's status and its whole event history, as the cluster serves them.
async fn history(client: &LeaderClient, id: &str) -> anyhow::Result<(v1::Release, Vec<v1::ReleaseEvent>)> {
    let get = v1::GetRequest { release_id: id.to_owned() };
    let release = client
        .call(|ch| {
            let get = get.clone();
            async move { ReleasesClient::new(ch).get(get).await.map(tonic::Response::into_inner) }
        })
        .await?
        .release
        .ok_or_else(|| anyhow::anyhow!("no release {id}"))?;
    let watch = v1::WatchRequest { release_id: id.to_owned(), after_index: 0 };
    let mut stream = client
        .call(|ch| {
            let watch = watch.clone();
            async move { ReleasesClient::new(ch).watch(watch).await.map(tonic::Response::into_inner) }
        })
        .await?;
    let mut events = Vec::new();
    // A finished release's stream ends after its last event.
    while let Some(e) = tokio::time::timeout(SETTLE, stream.message()).await?? {
        events.push(e);
    }
    Ok((release, events))
}

async fn histories(cluster: &TestCluster, ids: &[String]) -> Vec<(v1::Release, Vec<v1::ReleaseEvent>)> {
    let client = LeaderClient::new(cluster.live_addrs(), cluster.client_security().clone());
    let mut out = Vec::new();
    for id in ids {
        let finished = eventually(SETTLE, &format!("release {id} to finish"), || async {
            let (r, events) = history(&client, id).await.ok()?;
            (r.finished_unix_ms != 0).then_some((r, events))
        })
        .await;
        out.push(finished.unwrap_or_else(|e| panic!("{e:#}")));
    }
    out
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restored_on_every_wiped_node_brings_the_cluster_back_with_every_release_and_event() {
    let mut cluster = TestCluster::start(3, ClusterOptions { tls: true, ..ClusterOptions::default() }).unwrap();
    let leader = cluster.wait_leader(ELECTION).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(cluster.write(&format!("before-backup-{i}")).await.unwrap_or_else(|e| panic!("write {i}: {e:#}")));
    }
    let before = histories(&cluster, &ids).await;
    assert!(before.iter().all(|(r, events)| r.state == v1::ReleaseState::Succeeded as i32 && events.len() > 2));

    // Back up a follower: any node serves a backup of what it has applied.
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let applied = cluster.status_of(leader).await.map(|s| s.committed_index).unwrap_or_default();
    cluster.wait_applied(follower, applied, SETTLE).await.unwrap();
    let file = cluster.dir().join("cluster.backup");
    let file_arg = file.to_str().expect("a utf-8 path").to_owned();
    let saved = cluster.run_tool(follower, &["snapshot", "save", &file_arg]).unwrap();
    assert!(saved.status.success(), "snapshot save: {}", text(&saved));
    let said = text(&saved);
    assert!(said.contains(&format!("node {follower} at log index")) && said.contains("5 releases"), "{said}");

    // Every disk is lost.
    for id in 1..=3 {
        cluster.kill9(id);
        cluster.wipe(id).unwrap();
    }
    // A damaged backup is refused, naming the file.
    let bytes = std::fs::read(&file).unwrap();
    let damaged = cluster.dir().join("damaged.backup");
    std::fs::write(&damaged, &bytes[..bytes.len() / 2]).unwrap();
    let refused = cluster.run_tool(1, &["snapshot", "restore", damaged.to_str().unwrap()]).unwrap();
    assert!(!refused.status.success(), "a truncated backup restores: {}", text(&refused));
    assert!(text(&refused).contains("damaged.backup: malformed snapshot"), "{}", text(&refused));
    cluster.wipe(1).unwrap();

    for id in 1..=3 {
        let restored = cluster.run_tool(id, &["snapshot", "restore", &file_arg]).unwrap();
        assert!(restored.status.success(), "restore of node {id}: {}", text(&restored));
        assert!(text(&restored).contains("5 releases"), "{}", text(&restored));
    }
    // A restore never overwrites a node's data.
    let again = cluster.run_tool(1, &["snapshot", "restore", &file_arg]).unwrap();
    assert!(!again.status.success(), "a second restore into the same directory: {}", text(&again));
    assert!(text(&again).contains("is not empty"), "{}", text(&again));

    for id in 1..=3 {
        cluster.restart(id).unwrap();
    }
    cluster.wait_leader(ELECTION).await.unwrap();
    let after = histories(&cluster, &ids).await;
    assert_eq!(after, before, "every release and every event is back");
    let listed =
        eventually(SETTLE, "the restored cluster to list its releases", || async { cluster.release_ids().await.ok() })
            .await
            .unwrap();
    let mut want = ids.clone();
    want.sort();
    let mut got = listed.clone();
    got.sort();
    assert_eq!(got, want);
    // It is a working cluster: it takes new releases and runs them.
    let new =
        eventually(SETTLE, "a write to the restored cluster", || async { cluster.write("after-restore").await.ok() })
            .await
            .unwrap();
    let done = histories(&cluster, &[new]).await;
    assert_eq!(done[0].0.state, v1::ReleaseState::Succeeded as i32);
}
