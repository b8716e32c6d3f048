//! Webhooks end to end: three coordinator processes, hooks set with the CLI and from
//! `[[notify]]` in the configuration file, and a real HTTP receiver in the test. The
//! receiver sees every event of its hooks' kinds under its delivery id, through an
//! outage of the receiver (the leader retries, and the failures show in `policy hook
//! list`, `release show` and `/metrics`) and through a `kill -9` of the leader with
//! deliveries pending (the next leader goes on from the committed cursors).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_proto::v1;
use flotilla_tests::{ClusterOptions, TestCluster, eventually};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(60);

/// One request the receiver took.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    delivery: String,
    body: serde_json::Value,
}

/// An HTTP/1.1 receiver on loopback: it records every POST and answers 200, or 503
/// while `down`.
#[derive(Clone)]
struct Receiver {
    port: u16,
    down: Arc<AtomicBool>,
    taken: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let port = listener.local_addr().expect("an address").port();
        let receiver = Self { port, down: Arc::default(), taken: Arc::default() };
        let r = receiver.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let r = r.clone();
                tokio::spawn(async move {
                    let _ = r.serve(socket).await;
                });
            }
        });
        receiver
    }

    async fn serve(&self, socket: tokio::net::TcpStream) -> std::io::Result<()> {
        let mut reader = BufReader::new(socket);
        let mut request_line = String::new();
        reader.read_line(&mut request_line).await?;
        let path = request_line.split_whitespace().nth(1).unwrap_or_default().to_owned();
        let (mut length, mut delivery) = (0usize, String::new());
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "x-flotilla-delivery" => delivery = value.trim().to_owned(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).await?;
        let status = if self.down.load(Ordering::SeqCst) {
            "503 Service Unavailable"
        } else {
            let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            self.taken.lock().expect("not poisoned").push(Received { path, delivery, body });
            "200 OK"
        };
        let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        reader.get_mut().write_all(answer.as_bytes()).await?;
        reader.get_mut().shutdown().await
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn ids(&self) -> BTreeSet<String> {
        self.taken.lock().expect("not poisoned").iter().map(|r| r.delivery.clone()).collect()
    }

    fn all(&self) -> Vec<Received> {
        self.taken.lock().expect("not poisoned").clone()
    }

    async fn wait_for(&self, ids: &BTreeSet<String>, what: &str) {
        eventually(WAIT, what, || async { ids.is_subset(&self.ids()).then_some(()) })
            .await
            .unwrap_or_else(|e| panic!("{e:#}: have {:?}, want {ids:?}", self.ids()));
    }
}

fn cli(cluster: &TestCluster, args: &[&str]) -> std::process::Output {
    std::process::Command::new(flotilla_tests::binary("flotilla"))
        .args(["--coordinators", &cluster.live_addrs().join(","), "--insecure"])
        .args(args)
        .output()
        .expect("flotilla runs")
}

fn cli_ok(cluster: &TestCluster, args: &[&str]) -> String {
    let out = cli(cluster, args);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "flotilla {}: {said}", args.join(" "));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn hooks(cluster: &TestCluster) -> BTreeMap<String, v1::Hook> {
    let listed: v1::ListHooksResponse =
        serde_json::from_str(&cli_ok(cluster, &["policy", "hook", "list", "--output", "json"])).expect("JSON");
    listed.hooks.into_iter().map(|h| (h.name.clone(), h)).collect()
}

/// The delivery ids a release's finished history gives each hook: `started` for the
/// hooks told about it, `succeeded` for all three.
async fn expected_ids(cluster: &TestCluster, id: &str) -> BTreeSet<String> {
    let events = eventually(WAIT, "the release to succeed", || async {
        let out = cli(cluster, &["release", "watch", id, "--output", "json"]);
        let events: Vec<v1::ReleaseEvent> =
            String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        events.iter().any(|e| e.kind == v1::EventKind::ReleaseSucceeded as i32).then_some(events)
    })
    .await
    .expect("the release succeeds");
    let index = |kind: v1::EventKind| events.iter().find(|e| e.kind == kind as i32).map(|e| e.index).unwrap();
    let (started, succeeded) = (index(v1::EventKind::ReleaseCreated), index(v1::EventKind::ReleaseSucceeded));
    [
        format!("{id}.{started}.ops"),
        format!("{id}.{succeeded}.ops"),
        format!("{id}.{succeeded}.chat"),
        format!("{id}.{succeeded}.configured"),
    ]
    .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_its_hooks_through_a_receiver_outage_and_a_leader_kill() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = dir.path().join("coordinator.toml");
    let notify = format!(
        "[[notify]]\nname = \"configured\"\nurl = \"{}\"\nevents = [\"succeeded\"]\n",
        receiver.url("/configured")
    );
    std::fs::write(&config, notify).expect("the config is written");
    let opts = ClusterOptions {
        http: true,
        args: vec!["--config".to_owned(), config.display().to_string()],
        ..ClusterOptions::default()
    };
    let mut cluster = TestCluster::start(3, opts).expect("the cluster starts");
    let first = cluster.wait_leader(WAIT).await.expect("a leader");

    // Two hooks by the CLI; the configured one set by the leader.
    let set = cli_ok(
        &cluster,
        &["policy", "hook", "set", "ops", "--url", &receiver.url("/ops"), "--events", "started,succeeded"],
    );
    assert!(set.starts_with("hook ops set: "), "{set}");
    let slack = receiver.url("/chat");
    cli_ok(&cluster, &["policy", "hook", "set", "chat", "--url", &slack, "--events", "succeeded", "--format", "slack"]);
    let configured = eventually(WAIT, "the configured hook", || async { hooks(&cluster).remove("configured") })
        .await
        .expect("the leader sets the [[notify]] hook");
    assert!(configured.from_config && configured.events == ["succeeded"], "{configured:?}");

    // A release while the receiver answers.
    let a = cluster.write("a").await.expect("release a");
    let mut want = expected_ids(&cluster, &a).await;
    receiver.wait_for(&want, "release a's deliveries").await;

    // The receiver is down: deliveries fail, are retried and are seen failing.
    receiver.down.store(true, Ordering::SeqCst);
    let b = cluster.write("b").await.expect("release b");
    let failing = eventually(WAIT, "a failed delivery of release b", || async {
        hooks(&cluster).remove("ops").filter(|h| h.failing_release_id == b && h.failed_attempts >= 2)
    })
    .await
    .expect("the leader retries");
    assert!(failing.last_error.contains("503"), "{failing:?}");
    let shown = cli_ok(&cluster, &["release", "show", &b]);
    assert!(shown.contains("hook ops: delivered up to event 0") && shown.contains("503"), "{shown}");
    let (_, metrics) = cluster.http_get(first, "/metrics").await.expect("metrics");
    assert!(metrics.contains("flotilla_notify_failed{hook=\"ops\"}"), "{metrics}");
    assert!(!metrics.contains("flotilla_notify_pending{hook=\"ops\"} 0"), "{metrics}");
    receiver.down.store(false, Ordering::SeqCst);
    want.extend(expected_ids(&cluster, &b).await);
    receiver.wait_for(&want, "release b's deliveries after the outage").await;

    // Down again, a release, and the leader killed with its deliveries pending: the
    // next leader delivers them.
    receiver.down.store(true, Ordering::SeqCst);
    let c = cluster.write("c").await.expect("release c");
    let c_ids = expected_ids(&cluster, &c).await;
    eventually(WAIT, "a failed delivery of release c", || async {
        hooks(&cluster).get("ops").is_some_and(|h| h.failing_release_id == c).then_some(())
    })
    .await
    .expect("the leader tried release c");
    let leader = cluster.wait_leader(WAIT).await.expect("a leader");
    cluster.kill9(leader);
    let next = cluster.wait_leader(WAIT).await.expect("a new leader");
    assert_ne!(next, leader);
    receiver.down.store(false, Ordering::SeqCst);
    want.extend(c_ids);
    receiver.wait_for(&want, "release c's deliveries from the new leader").await;

    // Each delivery id names one event of one hook; no other was sent.
    assert_eq!(receiver.ids(), want, "exactly the expected deliveries, each under its id");
    for r in receiver.all() {
        let hook = r.delivery.rsplit('.').next().unwrap_or_default();
        assert_eq!(r.path, format!("/{hook}"), "{r:?}");
        if hook == "chat" {
            let text = r.body["text"].as_str().unwrap_or_default();
            assert!(text.starts_with("Release ") && text.contains(" succeeded: "), "{r:?}");
        } else {
            assert_eq!(r.body["delivery_id"], r.delivery.as_str(), "{r:?}");
            assert_eq!(r.body["hook"], hook);
            let kind = r.body["kind"].as_str().unwrap_or_default();
            assert!(kind == "started" || kind == "succeeded", "{r:?}");
            assert!(r.delivery.starts_with(r.body["release"]["id"].as_str().unwrap_or("?")), "{r:?}");
        }
    }
    let after = eventually(WAIT, "nothing pending", || async {
        let hooks = hooks(&cluster);
        hooks.values().all(|h| h.pending == 0 && h.last_error.is_empty()).then_some(hooks)
    })
    .await
    .expect("every delivery is done");
    assert!(after["ops"].delivered >= 6 && after["ops"].failed >= 2, "{after:?}");

    // A hook removed is told nothing more.
    assert_eq!(cli_ok(&cluster, &["policy", "hook", "remove", "chat"]), "hook chat removed\n");
    assert!(!hooks(&cluster).contains_key("chat"));
}
