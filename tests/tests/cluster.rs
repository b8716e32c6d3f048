//! The coordinator cluster as real processes on loopback: elections, `kill -9`,
//! full restarts, forwarding, membership changes with snapshot catch-up, and mTLS.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla_net::pki::Role;
use flotilla_net::{ClientSecurity, LeaderClient, channel};
use flotilla_proto::v1::cluster_client::ClusterClient;
use flotilla_proto::v1::raft_peer_client::RaftPeerClient;
use flotilla_proto::v1::releases_client::ReleasesClient;
use flotilla_proto::v1::{self, RaftState};
use flotilla_tests::{ClusterOptions, TestCa, TestCluster, eventually, tiny_spec};
use tokio::sync::Mutex;

const ELECTION: Duration = Duration::from_secs(20);
const CATCH_UP: Duration = Duration::from_secs(30);

async fn write_n(cluster: &TestCluster, prefix: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let id = cluster.write(&format!("{prefix}-{i}")).await.unwrap_or_else(|e| panic!("write {i}: {e:#}"));
        ids.push(id);
    }
    ids
}

/// Runs `flotilla cluster add|remove ...` against `members` (as the operations guide
/// does) and returns the cluster status it prints.
fn cluster_cli(members: &str, args: &[&str]) -> v1::ClusterStatus {
    let out = std::process::Command::new(flotilla_tests::binary("flotilla"))
        .args(["--coordinators", members, "--insecure"])
        .args(args)
        .args(["--output", "json"])
        .output()
        .expect("flotilla runs");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "flotilla {}: {said}", args.join(" "));
    // `cluster add` prints an `AddNodeResponse`, `cluster remove` a
    // `RemoveNodeResponse`: both a `status` and nothing else.
    serde_json::from_slice::<v1::AddNodeResponse>(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {said}"))
        .status
        .unwrap_or_else(|| panic!("no status: {said}"))
}

async fn leader_committed(cluster: &TestCluster, leader: u64) -> u64 {
    cluster.status_of(leader).await.map(|s| s.committed_index).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_a_leader_survive_its_kill9_and_the_killed_node_catches_up() {
    let mut cluster = TestCluster::start(3, ClusterOptions::default()).unwrap();
    let first = cluster.wait_leader(ELECTION).await.unwrap();
    let before = write_n(&cluster, "before", 20).await;

    cluster.kill9(first);
    let second = cluster.wait_leader(ELECTION).await.unwrap();
    assert_ne!(second, first, "a new leader is elected among the survivors");
    let after = write_n(&cluster, "after", 20).await;

    cluster.restart(first).unwrap();
    let committed = leader_committed(&cluster, second).await;
    cluster
        .wait_applied(first, committed, CATCH_UP)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.log_of(first)));
    assert_eq!(
        cluster.raft_state(first).await,
        Some(RaftState::Follower),
        "the restarted node rejoins as a follower (its --bootstrap is ignored)"
    );
    let listed = cluster.release_ids().await.unwrap();
    for id in before.iter().chain(&after) {
        assert!(listed.contains(id), "acknowledged release {id} is listed");
    }
    assert_eq!(listed.len(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill9_of_every_node_under_load() {
    let mut cluster = TestCluster::start(3, ClusterOptions::default()).unwrap();
    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    for cycle in 0..3 {
        cluster.wait_leader(ELECTION).await.unwrap();
        let stop = Arc::new(tokio::sync::Notify::new());
        let cluster_ref = &cluster;
        // Four writers keep writing until told to stop; every acknowledged write is recorded.
        let writers = (0..4).map(|w| {
            let (acked, stop) = (acked.clone(), stop.clone());
            async move {
                for i in 0.. {
                    let key = format!("c{cycle}-w{w}-{i}");
                    tokio::select! {
                        _ = stop.notified() => break,
                        r = cluster_ref.write(&key) => match r {
                            Ok(id) => { acked.lock().await.insert(key, id); }
                            Err(_) => break,
                        },
                    }
                }
            }
        });
        let load = futures::future::join_all(writers);
        let killer = async {
            eventually(Duration::from_secs(30), "60 acknowledged writes this cycle", || async {
                let n = acked.lock().await.keys().filter(|k| k.starts_with(&format!("c{cycle}-"))).count();
                (n >= 60).then_some(())
            })
            .await
            .unwrap();
            // Kill every node while the writers are still writing.
            for id in [1, 2, 3] {
                cluster_ref.kill9_shared(id);
            }
            stop.notify_waiters();
        };
        tokio::join!(load, killer);
        for id in [1, 2, 3] {
            cluster.kill9(id);
            cluster.restart(id).unwrap();
        }
        cluster.wait_leader(ELECTION).await.unwrap();
        // Durability and freshness: the first listing that succeeds after the restart
        // (a linearizable read) holds every acknowledged write.
        let acked = acked.lock().await.clone();
        let listed = cluster.first_listing(ELECTION).await.unwrap();
        let missing: Vec<&String> = acked.values().filter(|id| !listed.contains(id)).collect();
        if !missing.is_empty() {
            panic!(
                "cycle {cycle}: the first listing after the restart misses acknowledged releases: {missing:?}\n{}",
                [1, 2, 3].map(|id| format!("--- node {id}\n{}", cluster.log_of(id))).join("\n")
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_sent_to_a_follower_is_forwarded_to_the_leader() {
    let cluster = TestCluster::start(3, ClusterOptions::default()).unwrap();
    let leader = cluster.wait_leader(ELECTION).await.unwrap();
    let follower = cluster.nodes.keys().copied().find(|&id| id != leader).unwrap();
    let ch = channel(&cluster.nodes[&follower].addr, cluster.client_security()).unwrap();
    // A plain client that never follows hints: the follower must do the work.
    let resp = ReleasesClient::new(ch.clone())
        .create(v1::CreateRequest {
            spec_toml: tiny_spec("fwd"),
            file_name: "fwd.toml".into(),
            idempotency_key: "fwd".into(),
        })
        .await
        .expect("the follower forwards the write")
        .into_inner();
    assert!(resp.created);
    let id = resp.release.unwrap().id;
    let got = ReleasesClient::new(ch).get(v1::GetRequest { release_id: id.clone() }).await.unwrap().into_inner();
    assert_eq!(got.release.unwrap().id, id, "reads through a follower are forwarded too");

    // Flotilla's leader client is sent to the leader instead, and stays there.
    let follower_addr = cluster.nodes[&follower].addr.clone();
    let leader_addr = cluster.nodes[&leader].addr.clone();
    let client = LeaderClient::new(vec![follower_addr, leader_addr.clone()], cluster.client_security().clone());
    let again = client
        .call(|ch| {
            let id = id.clone();
            async move { ReleasesClient::new(ch).get(v1::GetRequest { release_id: id }).await.map(|r| r.into_inner()) }
        })
        .await
        .expect("the leader client reaches the leader");
    assert_eq!(again.release.unwrap().id, id);
    assert_eq!(client.preferred(), Some(leader_addr), "the leader client follows the hint and stays with the leader");

    // A bad spec is refused with the location, whoever receives it.
    let err = ReleasesClient::new(channel(&cluster.nodes[&follower].addr, cluster.client_security()).unwrap())
        .create(v1::CreateRequest {
            spec_toml: "release = 3\n".into(),
            file_name: "bad.toml".into(),
            idempotency_key: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("bad.toml:1:11"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_added_after_compaction_catches_up_by_snapshot_and_a_removed_node_is_left_behind() {
    let opts = ClusterOptions { snapshot_logs: 50, keep_logs: 5, ..ClusterOptions::default() };
    let mut cluster = TestCluster::start(3, opts).unwrap();
    let leader = cluster.wait_leader(ELECTION).await.unwrap();
    write_n(&cluster, "early", 150).await;

    // As the operations guide does it: the CLI's `cluster add` and `cluster remove`.
    let addr = cluster.start_joiner(4).unwrap();
    let members = cluster.live_addrs().join(",");
    let flotilla = |args: &[&str]| cluster_cli(&members, args);
    let status = flotilla(&["cluster", "add", &format!("4={addr}")]);
    let joined = status.members.iter().find(|m| m.node_id == 4);
    assert_eq!(joined.map(|m| m.role), Some(v1::MemberRole::Voter as i32), "{status:?}");
    let committed = leader_committed(&cluster, leader).await;
    cluster.wait_applied(4, committed, CATCH_UP).await.unwrap();
    assert!(
        cluster.log_of(4).contains("snapshot installed"),
        "node 4 caught up through a snapshot, the leader's log before it being purged:\n{}",
        cluster.log_of(4)
    );

    let status = flotilla(&["cluster", "remove", "4"]);
    assert!(status.members.iter().all(|m| m.node_id != 4), "{status:?}");
    let left_at = cluster
        .status_of(4)
        .await
        .and_then(|s| s.members.iter().find(|m| m.node_id == 4).and_then(|m| m.applied_index));
    write_n(&cluster, "late", 30).await;
    let now = cluster
        .status_of(4)
        .await
        .and_then(|s| s.members.iter().find(|m| m.node_id == 4).and_then(|m| m.applied_index));
    let leader_view = cluster.status_of(leader).await.unwrap();
    assert!(leader_view.members.iter().all(|m| m.node_id != 4), "node 4 is no longer a member");
    assert!(
        now.unwrap_or_default() <= left_at.unwrap_or_default() + 2,
        "node 4 receives no new entries after removal ({left_at:?} -> {now:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_the_clusters_ca_and_refuses_others() {
    let mut cluster = TestCluster::start(3, ClusterOptions { tls: true, ..ClusterOptions::default() }).unwrap();
    let leader = cluster.wait_leader(ELECTION).await.unwrap();
    let ids = write_n(&cluster, "tls", 3).await;
    assert_eq!(ids.len(), 3, "peers replicate and clients write over mTLS");

    let addr = cluster.nodes[&leader].addr.clone();
    // Another CA of the same trust domain, issuing the same kinds of names.
    let rogue_ca = TestCa::new(&cluster.dir().join("rogue"), "rogue").unwrap();
    let rogue = rogue_ca.issue(Role::Operator, "intruder").unwrap().security();
    let refused = ClusterClient::new(channel(&addr, &rogue).unwrap()).status(v1::StatusRequest { local: true }).await;
    assert!(refused.is_err(), "a client with another CA's certificate is refused");
    let rogue_peer = rogue_ca.issue(Role::Coordinator, &leader.to_string()).unwrap().security();
    let peer = RaftPeerClient::new(channel(&addr, &rogue_peer).unwrap())
        .vote(v1::VoteRequest { envelope: None, payload: b"{}".to_vec() })
        .await;
    assert!(peer.is_err(), "a peer with another CA's certificate is refused");
    let plaintext = ClusterClient::new(channel(&addr, &ClientSecurity::Insecure).unwrap())
        .status(v1::StatusRequest { local: true })
        .await;
    assert!(plaintext.is_err(), "plaintext is refused by a TLS coordinator");

    assert_eq!(cluster.terminate(leader), Some(0), "SIGTERM shuts a coordinator down cleanly");
    let next = cluster.wait_leader(ELECTION).await.unwrap();
    assert_ne!(next, leader);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_bootstrapped_with_another_member_list_is_refused_and_disturbs_nothing() {
    let mut cluster = TestCluster::start(2, ClusterOptions::default()).unwrap();
    let leader = cluster.wait_leader(ELECTION).await.unwrap();
    write_n(&cluster, "before", 5).await;
    let term = cluster.status_of(leader).await.unwrap().term;

    // Node 3 forms "its" cluster of 1, 2 and 3: it asks 1 and 2 for votes, which they
    // must refuse (their cluster was formed from 1 and 2 only).
    cluster.start_with_other_bootstrap(3).unwrap();
    let c = &cluster;
    eventually(CATCH_UP, "both members refuse node 3 as being of another cluster", || async move {
        [1, 2]
            .iter()
            .all(|&id| {
                let log = c.log_of(id);
                log.contains("node 3 belongs to cluster") && log.contains("different --bootstrap lists")
            })
            .then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\nnode 1:\n{}\nnode 3:\n{}", cluster.log_of(1), cluster.log_of(3)));

    write_n(&cluster, "after", 5).await;
    let status = cluster.status_of(leader).await.unwrap();
    assert_eq!(status.term, term, "node 3's elections did not disturb the cluster");
    assert_eq!(status.leader_id, leader);
    assert!(status.members.iter().all(|m| m.node_id != 3), "node 3 is no member: {status:?}");
    assert!(cluster.is_running(3), "node 3 keeps running, refused:\n{}", cluster.log_of(3));
    for id in [1, 2] {
        assert!(cluster.is_running(id), "node {id} runs:\n{}", cluster.log_of(id));
    }
    let listed = cluster.release_ids().await.unwrap();
    assert_eq!(listed.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_that_lost_its_data_stays_out_of_raft_until_removed_and_returns_as_a_new_member() {
    let mut cluster = TestCluster::start(3, ClusterOptions::default()).unwrap();
    let leader = cluster.wait_leader(ELECTION).await.unwrap();
    let before = write_n(&cluster, "before", 5).await;
    let lost = *cluster.nodes.keys().find(|&&id| id != leader).unwrap();
    let addr = cluster.nodes[&lost].addr.clone();
    let c = &cluster;
    eventually(CATCH_UP, "the leader to record every member as holding a log", || async move {
        let s = c.status_of(leader).await?;
        (s.members.len() == 3 && s.members.iter().all(|m| m.holds_log)).then_some(())
    })
    .await
    .unwrap();

    // Its disk is lost; it starts again with the same bootstrap list and an empty
    // data directory. It must neither form a cluster nor vote or take entries as the
    // member it was.
    cluster.kill9(lost);
    cluster.wipe(lost).unwrap();
    cluster.restart(lost).unwrap();
    let c = &cluster;
    eventually(CATCH_UP, "the wiped node to say it lost its data", || async move {
        c.log_of(lost).contains("its data directory was lost or wiped").then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.log_of(lost)));
    let term = cluster.status_of(leader).await.unwrap().term;
    let during = write_n(&cluster, "during", 5).await;
    let own = cluster.status_of(lost).await.expect("the wiped node answers status");
    assert!(own.members.is_empty() && own.term == 0, "the wiped node holds no log and cast no vote: {own:?}");
    let status = cluster.status_of(leader).await.unwrap();
    assert_eq!((status.leader_id, status.term), (leader, term), "the cluster kept its leader and term");
    assert!(cluster.log_of(lost).contains("cluster remove"), "the node says how to bring it back");

    // Removed, it waits to be added; added, it catches up as a new member and votes.
    let members = cluster.live_addrs().join(",");
    let status = cluster_cli(&members, &["cluster", "remove", &lost.to_string()]);
    assert!(status.members.iter().all(|m| m.node_id != lost), "{status:?}");
    let c = &cluster;
    eventually(CATCH_UP, "the removed node to wait to be added", || async move {
        c.log_of(lost).contains("waiting to be added").then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.log_of(lost)));
    let status = cluster_cli(&members, &["cluster", "add", &format!("{lost}={addr}")]);
    let back = status.members.iter().find(|m| m.node_id == lost);
    assert_eq!(back.map(|m| m.role), Some(v1::MemberRole::Voter as i32), "{status:?}");
    let committed = leader_committed(&cluster, leader).await;
    cluster.wait_applied(lost, committed, CATCH_UP).await.unwrap();
    let c = &cluster;
    eventually(CATCH_UP, "the new member to be recorded as holding a log", || async move {
        let s = c.status_of(leader).await?;
        s.members.iter().any(|m| m.node_id == lost && m.holds_log).then_some(())
    })
    .await
    .unwrap();
    let listed = cluster.release_ids().await.unwrap();
    for id in before.iter().chain(&during) {
        assert!(listed.contains(id), "acknowledged release {id} is listed");
    }
    // The whole cluster again: the leader can be lost and the others elect one.
    cluster.kill9(leader);
    let next = cluster.wait_leader(ELECTION).await.unwrap();
    assert_ne!(next, leader);
    write_n(&cluster, "after", 3).await;
}
