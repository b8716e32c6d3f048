//! The coordinator API as a plain gRPC client meets it, against a real 3-node cluster:
//! errors in the richer error model (read with `tonic-types`, as any standard client
//! reads them), idempotency keys reused for another spec, `Watch` and `Get` of unknown
//! or missing ids, `List` order and tokens, and `Cluster.Status` from a follower.

use std::time::{Duration, Instant};

use flotilla_net::channel;
use flotilla_proto::status::{ERROR_DOMAIN, leader_hint, spec_errors};
use flotilla_proto::v1::cluster_client::ClusterClient;
use flotilla_proto::v1::releases_client::ReleasesClient;
use flotilla_proto::v1::{self, MemberRole, RaftState};
use flotilla_tests::{ClusterOptions, TestCluster, tiny_spec};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

const ELECTION: Duration = Duration::from_secs(20);

/// A 3-node cluster with its leader and a follower elected and the stand-in host
/// registered.
async fn cluster() -> (TestCluster, u64, u64) {
    let cluster = TestCluster::start(3, ClusterOptions::default()).unwrap();
    let leader = cluster.wait_leader(ELECTION).await.unwrap();
    let follower = *cluster.nodes.keys().find(|&&id| id != leader).unwrap();
    (cluster, leader, follower)
}

fn channel_to(cluster: &TestCluster, id: u64) -> Channel {
    channel(&cluster.nodes[&id].addr, cluster.client_security()).unwrap()
}

fn releases(cluster: &TestCluster, id: u64) -> ReleasesClient<Channel> {
    ReleasesClient::new(channel_to(cluster, id))
}

/// The `ErrorInfo` every error carries, checked for the domain; returns its reason and
/// metadata.
fn reason(status: &Status) -> (String, std::collections::HashMap<String, String>) {
    let info = status.get_details_error_info().unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.domain, ERROR_DOMAIN, "{status:?}");
    // The google.rpc.Status in the details repeats the call's code and message.
    let rpc = flotilla_proto::status::rpc_status(status).unwrap();
    assert_eq!((rpc.code, rpc.message.as_str()), (status.code() as i32, status.message()));
    (info.reason, info.metadata)
}

async fn cluster_status(cluster: &TestCluster, node: u64, local: bool) -> v1::ClusterStatus {
    let answer = ClusterClient::new(channel_to(cluster, node)).status(v1::StatusRequest { local }).await;
    answer.unwrap().into_inner().status.unwrap()
}

fn create(spec: &str, key: &str) -> v1::CreateRequest {
    v1::CreateRequest { spec_toml: spec.to_owned(), file_name: "api.toml".to_owned(), idempotency_key: key.to_owned() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_the_richer_error_model_and_requests_are_checked() {
    let (cluster, leader, follower) = cluster().await;
    let mut client = releases(&cluster, follower);

    // A bad spec: INVALID_SPEC, a BadRequest violation of spec_toml per error with its
    // place, and the structured SpecErrors.
    let bad = "release = \"x\"\n[[service]]\nname = \"svc\"\nverison = \"1\"\n";
    let status = client
        .plan(v1::PlanRequest { spec_toml: bad.to_owned(), file_name: "bad.toml".to_owned(), offline: true })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(reason(&status).0, "INVALID_SPEC");
    let violations = status.get_details_bad_request().unwrap().field_violations;
    assert!(!violations.is_empty() && violations.iter().all(|v| v.field == "spec_toml"), "{violations:?}");
    assert!(violations.iter().any(|v| v.description.starts_with("bad.toml:4:")), "{violations:?}");
    let diagnostics = spec_errors(&status).unwrap().errors;
    assert_eq!(diagnostics.len(), violations.len());
    assert!(diagnostics.iter().any(|d| d.message.contains("verison")), "{diagnostics:?}");

    // Missing ids: INVALID_ARGUMENT naming the field, on every method that takes one.
    let status = client.get(v1::GetRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let (why, meta) = reason(&status);
    assert_eq!((why.as_str(), meta["field"].as_str()), ("INVALID_FIELD", "release_id"));
    assert_eq!(status.get_details_bad_request().unwrap().field_violations[0].field, "release_id");
    let status = client.pause(v1::PauseRequest::default()).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).0.as_str()), (Code::InvalidArgument, "INVALID_FIELD"));
    let status = client.watch(v1::WatchRequest::default()).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).0.as_str()), (Code::InvalidArgument, "INVALID_FIELD"));

    // An unknown release: NOT_FOUND with the resource named.
    let status = client.get(v1::GetRequest { release_id: "r-nope".to_owned() }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let (why, meta) = reason(&status);
    assert_eq!((why.as_str(), meta["release_id"].as_str()), ("RELEASE_NOT_FOUND", "r-nope"));
    let resource = status.get_details_resource_info().unwrap();
    assert_eq!((resource.resource_type.as_str(), resource.resource_name.as_str()), ("flotilla.v1.Release", "r-nope"));

    // A follower asked not to forward (as a call a follower already forwarded is):
    // UNAVAILABLE, NOT_LEADER with the leader's address, RetryInfo, and NotLeader.
    let mut req = tonic::Request::new(v1::GetRequest { release_id: "r-nope".to_owned() });
    req.metadata_mut().insert("x-flotilla-forwarded-by", "9".parse().unwrap());
    let status = client.get(req).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    let (why, meta) = reason(&status);
    assert_eq!(why, "NOT_LEADER");
    assert_eq!(meta["leader_addr"], cluster.nodes[&leader].addr);
    assert_eq!(status.get_details_retry_info().unwrap().retry_delay, Some(Duration::ZERO));
    assert_eq!(leader_hint(&status).map(|h| (h.leader_id, h.leader_addr)), Some((leader, meta["leader_addr"].clone())));

    // A bad page token names the field.
    let status =
        client.list(v1::ListRequest { page_token: "r-nope".to_owned(), ..Default::default() }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(reason(&status).1["field"], "page_token");

    // Approving a gate the release does not have: NOT_FOUND naming it.
    let id = cluster.write("api-approve").await.unwrap();
    let status = client
        .approve(v1::ApproveRequest {
            release_id: id.clone(),
            target: Some(v1::approve_request::Target::Gate("smoke".to_owned())),
            comment: String::new(),
        })
        .await
        .unwrap_err();
    let (why, meta) = reason(&status);
    assert_eq!(
        (status.code(), why.as_str(), meta["gate"].as_str()),
        (Code::NotFound, "RELEASE_PART_NOT_FOUND", "smoke")
    );
    assert!(status.message().contains("no gate smoke"), "{}", status.message());

    // A release judged by its metrics, on a cluster started without Prometheus: refused
    // at once, naming the services measured and the setting, and nothing created.
    let before = cluster.release_ids().await.unwrap();
    let measured = format!(
        "{}\n[[service.metric]]\nname = \"errors\"\nquery = 'sum(rate(errors{{host=~\"{{{{hosts}}}}\"}}[1m]))'\n",
        held_spec("measured", "2.0.0").split("\n\n[[service]]\nname = \"gated\"").next().unwrap()
    );
    let status = client.create(create(&measured, "")).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).0.as_str()), (Code::FailedPrecondition, "STATE_CONFLICT"), "{status:?}");
    let message = status.message();
    assert!(
        message.contains("canary analysis of svc needs Prometheus") && message.contains("prometheus_url"),
        "{message}"
    );
    assert_eq!(cluster.release_ids().await.unwrap(), before, "nothing was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_reused_with_another_spec_is_refused_naming_the_release() {
    let (cluster, _leader, follower) = cluster().await;
    let mut client = releases(&cluster, follower);
    let spec = tiny_spec("keyed");
    let first = client.create(create(&spec, "key-1")).await.unwrap().into_inner();
    assert!(first.created);
    let id = first.release.unwrap().id;

    // The same key and spec: the same release, not created again.
    let again = client.create(create(&spec, "key-1")).await.unwrap().into_inner();
    assert_eq!((again.release.unwrap().id, again.created), (id.clone(), false));

    // The same key, another spec: ALREADY_EXISTS naming the release; nothing created.
    let other = format!("{spec}\n# changed\n");
    let status = client.create(create(&other, "key-1")).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    let (why, meta) = reason(&status);
    assert_eq!(why, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!((meta["release_id"].as_str(), meta["idempotency_key"].as_str()), (id.as_str(), "key-1"));
    assert!(status.message().contains(&id), "{}", status.message());
    assert_eq!(status.get_details_resource_info().unwrap().resource_name, id);
    assert_eq!(cluster.release_ids().await.unwrap(), vec![id]);
}

/// A release of `svc` (at `version`) and `gated` to the stand-in host, waiting for an
/// approval between them: it stays unfinished until someone approves or aborts it.
fn held_spec(name: &str, version: &str) -> String {
    let artifact = format!("artifact = {{ url = \"file:///a.tgz\", sha256 = \"{}\" }}", "0".repeat(64));
    format!(
        "release = \"{name}\"\n\n[[service]]\nname = \"svc\"\nversion = \"{version}\"\n{artifact}\nrun = {{ command = \"bin/svc\" }}\n\n\
         [[service]]\nname = \"gated\"\nversion = \"{version}\"\n{artifact}\nrun = {{ command = \"bin/gated\" }}\n\
         depends_on = [{{ service = \"svc\", kind = \"soft\" }}]\n\n[[gate]]\nname = \"hold\"\nafter = [\"svc\"]\napproval = true\n"
    )
}

/// Two releases of one service to one host never run at once: the second is refused
/// at Create, naming the first and what they share, until the first has finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_over_the_services_and_hosts_of_an_unfinished_one_is_refused_naming_it() {
    let (cluster, _leader, follower) = cluster().await;
    let mut client = releases(&cluster, follower);
    let first = client.create(create(&held_spec("first", "2.0.0"), "")).await.unwrap().into_inner();
    let first_id = first.release.unwrap().id;

    let status = client.create(create(&held_spec("second", "3.0.0"), "")).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let (why, meta) = reason(&status);
    assert_eq!((why.as_str(), meta["release_id"].as_str()), ("RELEASE_CONFLICT", first_id.as_str()));
    let message = status.message();
    assert!(message.contains(&first_id) && message.contains("gated to test-host"), "{message}");
    assert_eq!(cluster.release_ids().await.unwrap(), vec![first_id.clone()], "nothing was created");

    client.abort(v1::AbortRequest { release_id: first_id.clone(), reason: "make room".into() }).await.unwrap();
    let second = client.create(create(&held_spec("second", "3.0.0"), "")).await.unwrap().into_inner();
    assert!(second.created, "accepted once the first has finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_answers_an_unknown_release_at_once_and_list_is_newest_first() {
    let (cluster, leader, follower) = cluster().await;
    for node in [leader, follower] {
        let started = Instant::now();
        let status = releases(&cluster, node)
            .watch(v1::WatchRequest { release_id: "r-does-not-exist".to_owned(), after_index: 0 })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "node {node}: {status:?}");
        assert_eq!(reason(&status).0, "RELEASE_NOT_FOUND");
        // Far below the former 5 s grace: a follower asks the leader instead of waiting.
        assert!(started.elapsed() < Duration::from_secs(2), "node {node} took {:?}", started.elapsed());
    }

    // A release created through the leader is watched at once from a follower, to its end.
    let ids = [cluster.write("list-a").await.unwrap(), cluster.write("list-b").await.unwrap()];
    let mut events = releases(&cluster, follower)
        .watch(v1::WatchRequest { release_id: ids[1].clone(), after_index: 0 })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(30), events.message()).await.unwrap().unwrap() {
        seen.push(e.index);
    }
    assert_eq!(seen, (1..=seen.len() as u64).collect::<Vec<_>>(), "every event once, in order, then the end");
    assert!(seen.len() >= 2, "{seen:?}");

    let listed = releases(&cluster, follower).list(v1::ListRequest::default()).await.unwrap().into_inner();
    let order: Vec<&str> = listed.releases.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(order, vec![ids[1].as_str(), ids[0].as_str()], "newest first");
    let page = releases(&cluster, follower)
        .list(v1::ListRequest { page_size: 1, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((page.releases.len(), page.next_page_token.as_str()), (1, ids[0].as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_status_from_a_follower_is_the_leaders_view_of_every_member() {
    let (cluster, leader, follower) = cluster().await;
    cluster.write("status").await.unwrap();
    let status = cluster_status(&cluster, follower, false).await;
    assert_eq!((status.node_id, status.leader_id), (leader, leader), "answered by the leader");
    assert_eq!(status.members.len(), 3);
    for m in &status.members {
        let want = if m.node_id == leader { RaftState::Leader } else { RaftState::Follower };
        assert_eq!(m.state, want as i32, "member {}: {m:?}", m.node_id);
        assert_eq!(m.role, MemberRole::Voter as i32);
        assert!(m.reachable, "member {}: {m:?}", m.node_id);
        let (last, applied) = (m.last_log_index.unwrap_or_default(), m.applied_index.unwrap_or_default());
        assert!(last > 0 && applied > 0 && applied <= last, "member {}: {m:?}", m.node_id);
        assert!(m.matched_index.is_some(), "member {}: {m:?}", m.node_id);
        assert_eq!(m.version.as_ref().map(|v| v.protocol_version), Some(flotilla_proto::PROTOCOL_VERSION));
    }

    // Asked locally, the follower answers from its own view: only its own indexes.
    let local = cluster_status(&cluster, follower, true).await;
    assert_eq!(local.node_id, follower);
    let other = local.members.iter().find(|m| m.node_id != follower && m.node_id != leader).unwrap();
    assert_eq!((other.last_log_index, other.applied_index), (None, None));
}
