//! The coordinator's `--http` listener on real processes: metrics that name exactly one
//! leader, agreeing terms, readiness on every node, the status page and the dashboard,
//! an endpoint that goes away with its process, the cluster's credentials like the gRPC
//! port (or plaintext with `--insecure`), and a clear start failure when the address is
//! taken.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use flotilla_net::pki::Role;
use flotilla_tests::{ClusterOptions, TestCa, TestCluster, binary, eventually, free_port, http_client, http_get};

const ELECTION: Duration = Duration::from_secs(30);

/// The value of the unlabelled sample `name` in an exposition.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// What every node's `/metrics` and `/readyz` say, once all of them answer 200 with one
/// leader among them and one term; `None` until then.
async fn agreeing_scrapes(cluster: &TestCluster, ids: &[u64], seen: &Mutex<String>) -> Option<BTreeMap<u64, String>> {
    let mut scrapes = BTreeMap::new();
    let mut report = String::new();
    for &id in ids {
        let metrics = cluster.http_get(id, "/metrics").await;
        let ready = cluster.http_get(id, "/readyz").await;
        report.push_str(&format!(
            "node {id}: metrics {:?}, readyz {:?}\n",
            metrics.as_ref().map(|(s, body)| (
                s,
                sample(body, "flotilla_raft_is_leader"),
                sample(body, "flotilla_raft_term")
            )),
            ready
        ));
        if let (Ok((200, body)), Ok((200, _))) = (metrics, ready) {
            scrapes.insert(id, body);
        }
    }
    *seen.lock().unwrap() = report;
    if scrapes.len() != ids.len() {
        return None;
    }
    let leaders = scrapes.values().filter(|m| sample(m, "flotilla_raft_is_leader") == Some(1.0)).count();
    let terms: Vec<Option<f64>> = scrapes.values().map(|m| sample(m, "flotilla_raft_term")).collect();
    (leaders == 1 && terms.iter().all(|t| t.is_some() && *t == terms[0])).then_some(scrapes)
}

/// Starts three nodes with `--http` (TLS or not), waits for a leader, and checks what
/// every node serves over HTTP; then kills a follower and checks its endpoint is gone.
async fn three_nodes_serve_metrics_probes_and_a_page(tls: bool) -> TestCluster {
    let mut cluster = TestCluster::start(3, ClusterOptions { tls, http: true, ..ClusterOptions::default() }).unwrap();
    let leader = cluster.wait_leader(ELECTION).await.unwrap();
    let ids: Vec<u64> = cluster.nodes.keys().copied().collect();

    let seen = Mutex::new(String::new());
    let scrapes = eventually(ELECTION, "every node ready over HTTP, one leader, one term", || {
        agreeing_scrapes(&cluster, &ids, &seen)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; last seen:\n{}", seen.lock().unwrap()));

    let leaders: Vec<u64> =
        scrapes.iter().filter(|(_, m)| sample(m, "flotilla_raft_is_leader") == Some(1.0)).map(|(&id, _)| id).collect();
    assert_eq!(leaders, [leader], "exactly the agreed leader reports flotilla_raft_is_leader 1");
    let term = sample(&scrapes[&leader], "flotilla_raft_term").expect("a term");
    for (&id, m) in &scrapes {
        assert_eq!(sample(m, "flotilla_raft_node_id"), Some(id as f64), "node {id} names itself");
        assert_eq!(sample(m, "flotilla_raft_leader_id"), Some(leader as f64), "node {id} names the leader");
        assert_eq!(sample(m, "flotilla_raft_term"), Some(term), "node {id} is in the leader's term");
        assert_eq!(sample(m, "flotilla_raft_voters"), Some(3.0), "node {id} counts three voters");
        assert!(sample(m, "flotilla_raft_applied_index").is_some(), "node {id} exports its applied index:\n{m}");
        assert!(m.contains("flotilla_build_info{version=\""), "node {id} exports its build:\n{m}");
        assert!(m.contains("flotilla_releases{state=\"running\"}"), "node {id} counts releases by state:\n{m}");
    }
    let on_leader = &scrapes[&leader];
    assert!(on_leader.contains("flotilla_raft_replication_matched_index{follower="), "{on_leader}");
    assert!(sample(on_leader, "flotilla_raft_quorum_ack_age_seconds").is_some(), "{on_leader}");

    // The stand-in host registered with the leader: every node's state knows it, and its
    // session is open on the leader.
    eventually(ELECTION, "the stand-in host counted online on every node", || async {
        for &id in &ids {
            let (_, m) = cluster.http_get(id, "/metrics").await.ok()?;
            (sample(&m, "flotilla_agents_online")? >= 1.0).then_some(())?;
        }
        let (_, m) = cluster.http_get(leader, "/metrics").await.ok()?;
        (sample(&m, "flotilla_agent_sessions")? >= 1.0).then_some(())
    })
    .await
    .unwrap();

    for &id in &ids {
        let (status, body) = cluster.http_get(id, "/healthz").await.unwrap();
        assert_eq!((status, body.as_str()), (200, "ok\n"), "node {id} is live");
        let (status, page) = cluster.http_get(id, "/").await.unwrap();
        assert_eq!(status, 200, "node {id} serves its status page");
        assert!(page.contains(&format!("Flotilla coordinator, node {id}")), "{page}");
        assert!(page.contains(&format!("term</th><td>{term}")), "{page}");
        let (status, _) = cluster.http_get(id, "/no-such-page").await.unwrap();
        assert_eq!(status, 404, "node {id} knows no other page");
    }

    let follower = ids.iter().copied().find(|&id| id != leader).expect("a follower");
    dashboard_pages_and_events(&cluster, leader, follower).await;
    cluster.kill9(follower);
    let gone = cluster.http_get(follower, "/healthz").await;
    assert!(gone.is_err(), "a killed node's endpoint is gone, not {gone:?}");
    let (status, body) = cluster.http_get(leader, "/readyz").await.unwrap();
    assert_eq!(status, 200, "the leader still has a quorum and stays ready: {body}");
    cluster
}

/// The dashboard on the leader and on a follower: a release in the list, its page with
/// the graph, its events streamed from the first (as a browser's `EventSource` gets
/// them), the fleet with the stand-in host and the cluster with every member.
async fn dashboard_pages_and_events(cluster: &TestCluster, leader: u64, follower: u64) {
    let id = cluster.write("dashboard").await.expect("a release");
    for node in [leader, follower] {
        let page = eventually(ELECTION, "the release on the dashboard's list", || async {
            let (status, page) = cluster.http_get(node, "/ui?state=all").await.ok()?;
            (status == 200 && page.contains(&format!("/ui/releases/{id}"))).then_some(page)
        })
        .await
        .unwrap_or_else(|e| panic!("node {node}: {e}"));
        assert!(page.contains("<table class=\"releases\">"), "{page}");
        let (status, page) = cluster.http_get(node, &format!("/ui/releases/{id}")).await.unwrap();
        assert_eq!(status, 200, "{page}");
        assert!(page.contains("<svg class=\"graph\"") && page.contains("data-service=\"svc\""), "{page}");
        let (status, live) = cluster.http_get(node, &format!("/ui/releases/{id}?part=live")).await.unwrap();
        assert!(status == 200 && !live.contains("<html") && live.contains("Stages"), "{live}");
        let (status, _) = cluster.http_get(node, "/ui/releases/r-nope").await.unwrap();
        assert_eq!(status, 404, "an unknown release is not found");
        let (status, fleet) = cluster.http_get(node, "/ui/fleet").await.unwrap();
        assert!(status == 200 && fleet.contains("data-host=\"test-host\""), "{fleet}");
        let (status, host) = cluster.http_get(node, "/ui/fleet/test-host").await.unwrap();
        assert!(status == 200 && host.contains("Host test-host") && host.contains("Recent steps"), "{host}");
        let (status, _) = cluster.http_get(node, "/ui/fleet/no-such-host").await.unwrap();
        assert_eq!(status, 404, "an unknown host is not found");
        let (status, members) = cluster.http_get(node, "/ui/cluster").await.unwrap();
        assert_eq!(status, 200);
        for m in cluster.nodes.keys() {
            assert!(members.contains(&format!("data-node=\"{m}\"")), "member {m} listed: {members}");
        }

        // The first events, as server-sent events, in order and numbered.
        let url = cluster.http_url(node, &format!("/ui/releases/{id}/events")).unwrap();
        let mut stream = cluster.http_client().unwrap().get(&url).send().await.unwrap();
        let kind = stream.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        assert_eq!(kind, "text/event-stream");
        let mut text = String::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !text.contains("id: 2\n") {
            let chunk = tokio::time::timeout_at(deadline, stream.chunk()).await;
            match chunk {
                Ok(Ok(Some(bytes))) => text.push_str(&String::from_utf8_lossy(&bytes)),
                other => panic!("node {node}: the stream stopped before its second event ({other:?}):\n{text}"),
            }
        }
        let first = text.find("id: 1\nevent: release\ndata: {").unwrap_or_else(|| panic!("{text}"));
        assert!(first < text.find("id: 2\n").unwrap(), "{text}");
        assert!(text.contains("submitted as"), "the first event says the release was submitted: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_endpoints_over_mutual_tls_report_one_leader_and_refuse_strangers() {
    let cluster = three_nodes_serve_metrics_probes_and_a_page(true).await;
    let leader = cluster.wait_leader(ELECTION).await.unwrap();
    let url = cluster.http_url(leader, "/healthz").unwrap();
    assert!(url.starts_with("https://"), "{url}");

    let ca_file = cluster.ca().expect("TLS mode has a CA").issue(Role::Operator, "bystander").unwrap().ca;
    let trusting_no_cert = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca_file).unwrap()).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    // The handshake asks for a certificate without requiring one (a browser signs in to
    // the dashboard with a token instead); the request is then refused.
    let (status, body) = http_get(&trusting_no_cert, &url).await.unwrap();
    assert_eq!(status, 401, "a client without a certificate is refused: {body}");
    assert!(body.contains("needs a client certificate from the cluster's CA or an operator token"), "{body}");
    let (status, _) = http_get(&trusting_no_cert, &url.replace("/healthz", "/metrics")).await.unwrap();
    assert_eq!(status, 401, "the metrics too");
    let (status, page) = http_get(&trusting_no_cert, &url.replace("/healthz", "/ui")).await.unwrap();
    assert!(status == 200 && page.contains("Sign in"), "the dashboard sends a stranger to sign in: {page}");

    // A client that trusts the cluster's CA but presents another CA's certificate.
    let mut rogue =
        TestCa::new(&cluster.dir().join("rogue"), "rogue").unwrap().issue(Role::Operator, "intruder").unwrap();
    rogue.ca = ca_file.clone();
    let (status, body) = http_get(&http_client(Some(&rogue)).unwrap(), &url).await.unwrap();
    assert_eq!(status, 401, "a client with another CA's certificate is refused: {body}");
    assert!(body.contains("refused"), "{body}");

    let plaintext = url.replacen("https://", "http://", 1);
    let refused = http_get(&http_client(None).unwrap(), &plaintext).await;
    assert!(refused.is_err(), "plaintext is refused by a TLS listener, not {refused:?}");

    let (status, _) = cluster.http_get(leader, "/healthz").await.unwrap();
    assert_eq!(status, 200, "the cluster's own client certificate is admitted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_endpoints_in_insecure_mode_report_one_leader_over_plaintext() {
    let cluster = three_nodes_serve_metrics_probes_and_a_page(false).await;
    let leader = cluster.wait_leader(ELECTION).await.unwrap();
    let url = cluster.http_url(leader, "/metrics").unwrap();
    assert!(url.starts_with("http://"), "{url}");
    let resp = http_client(None).unwrap().get(&url).send().await.unwrap();
    let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
}

#[test]
fn http_address_taken_fails_the_start_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let listen = format!("127.0.0.1:{}", free_port());
    let out = Command::new(binary("flotilla-coordinator"))
        .args(["--node-id", "1", "--listen", &listen, "--http", &http, "--insecure", "--data-dir"])
        .arg(&data_dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the coordinator does not start without its HTTP address: {stderr}");
    assert!(stderr.contains(&format!("cannot listen for HTTP on {http}")), "the error names the address: {stderr}");
    assert!(!data_dir.exists(), "nothing else started: no storage was opened");
}
