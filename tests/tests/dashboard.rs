//! The dashboard in a real browser: Debian's headless `chromium` driven through
//! `chromedriver` (WebDriver), against three real coordinators over TLS and six agents
//! running the sample app. A deployer signs in with an operator token and follows a
//! staged release: the graph is drawn, a service's node changes state without the page
//! being reloaded, the canary stage's approval appears; a viewer signed in meanwhile
//! sees it with no action button, and an approval posted in their name is refused with
//! the server's message; clicking Approve (and confirming) as the deployer starts the
//! main stage, where a service breaks and the page shows the cascading rollback, its
//! members and its order, dependents first. The fleet page lists every agent.
//!
//! Screenshots are kept in `target/tmp/dashboard/` for a person to look at. Without
//! `chromium` and `chromedriver` on the PATH the test passes with a note, unless
//! `FLOTILLA_REQUIRE_BROWSER=1` (as CI sets).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use flotilla_proto::v1::ReleaseState;
use flotilla_sample_service::Behaviour;
use flotilla_tests::fleet::{AppSpec, TestFleet, describe, shop_hosts};
use flotilla_tests::{eventually, free_port};

const RELEASE: Duration = Duration::from_secs(180);
const PAGE: Duration = Duration::from_secs(20);

/// `name` on the PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

/// Chromium and its driver; `None` (with a note) when they are missing and not required.
#[allow(clippy::print_stderr, reason = "a skipped test must say so where the test runner shows it")]
fn browser_or_skip() -> Option<(PathBuf, PathBuf)> {
    match (on_path("chromium"), on_path("chromedriver")) {
        (Some(browser), Some(driver)) => Some((browser, driver)),
        _ => {
            assert!(
                std::env::var("FLOTILLA_REQUIRE_BROWSER").as_deref() != Ok("1"),
                "FLOTILLA_REQUIRE_BROWSER=1 but `chromium` or `chromedriver` is not on the PATH \
                 (Debian: apt-get install chromium chromium-driver)"
            );
            eprintln!("no chromium and chromedriver on the PATH: skipping the dashboard's browser test");
            None
        }
    }
}

/// A chromedriver process, killed when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts chromedriver and a headless Chromium session with a profile in `dir`. The
/// session accepts the cluster's certificates (its CA is not the system's).
async fn browser(browser: &Path, driver: &Path, dir: &Path, name: &str) -> (Driver, Client) {
    let port = free_port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting chromedriver");
    let driver = Driver(child);
    let profile = dir.join(format!("chromium-{name}"));
    let capabilities = serde_json::json!({
        "acceptInsecureCerts": true,
        "goog:chromeOptions": {
            "binary": browser,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1400", format!("--user-data-dir={}", profile.display()),
            ],
        },
    });
    let serde_json::Value::Object(capabilities) = capabilities else { unreachable!("an object") };
    let url = format!("http://127.0.0.1:{port}");
    let client = eventually(PAGE, "a chromium session through chromedriver", || async {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector).capabilities(capabilities.clone()).connect(&url).await.ok()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    (driver, client)
}

/// Where the screenshots go.
fn shots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&dir).expect("the screenshot directory");
    dir
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("a screenshot");
    std::fs::write(shots().join(format!("{name}.png")), png).expect("writing a screenshot");
}

/// The value of `attribute` of the first element matching `css`, if there is one.
async fn attr(client: &Client, css: &str, attribute: &str) -> Option<String> {
    client.find(Locator::Css(css)).await.ok()?.attr(attribute).await.ok()?
}

/// Signs in at `base` with `token`; returns the page the browser lands on.
async fn sign_in(client: &Client, base: &str, token: &str) -> String {
    client.goto(&format!("{base}/ui/login")).await.expect("the sign-in page");
    client.find(Locator::Css("#token")).await.expect("the token field").send_keys(token).await.unwrap();
    client.find(Locator::Css("form.signin button")).await.unwrap().click().await.unwrap();
    eventually(PAGE, "the releases page after signing in", || async {
        let url = client.current_url().await.ok()?;
        url.path().eq("/ui").then_some(())?;
        client.find(Locator::Css("#who")).await.ok()?.text().await.ok()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// An operator token made with the CLI (`flotilla tokens create`).
async fn token(fleet: &TestFleet, name: &str, role: &str) -> String {
    let out = fleet.ok(fleet.cli(&["tokens", "create", "--role", role, "--ttl", "1h", "--name", name]).await);
    out.lines().next().expect("the token on the first line").trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployer_follows_a_release_live_and_approves_its_next_stage_in_a_browser() {
    let Some((chromium, chromedriver)) = browser_or_skip() else { return };
    let fleet = TestFleet::start_with_dashboard(3, &shop_hosts(6))
        .await
        .unwrap_or_else(|e| panic!("starting the fleet: {e:#}"));
    let id = fleet.ok(fleet.submit("shop-v1.toml", &fleet.ok(AppSpec::install(1).toml())).await);
    let r = fleet.ok(fleet.wait_finished(&id, RELEASE).await);
    assert_eq!(r.state, ReleaseState::Succeeded as i32, "installing version 1: {}\n{}", describe(&r), fleet.logs());

    let alice = token(&fleet, "alice", "deployer").await;
    let bob = token(&fleet, "bob", "viewer").await;
    // The page is read from a follower's applied state as well as the leader's; use the
    // first coordinator, whichever it is.
    let base = fleet.http_url(1, "").expect("the fleet serves HTTP");
    let (_driver, client) = browser(&chromium, &chromedriver, fleet.dir(), "alice").await;
    let who = sign_in(&client, &base, &alice).await;
    assert_eq!(who, "token alice (deployer)");

    // Version 2 in two stages; the canary stage waits for an approval before main, where
    // ledger turns out broken: a cascading rollback follows.
    let hosts = shop_hosts(6);
    let broken = Behaviour {
        unhealthy_on: hosts.iter().filter(|h| h.label("cell") != "canary").map(|h| h.id.clone()).collect(),
        ..Behaviour::default()
    };
    let spec = fleet.ok(AppSpec::staged(2).canary_approval().behaviour("ledger", broken).toml());
    let id = fleet.ok(fleet.submit("shop-v2.toml", &spec).await);
    client.goto(&format!("{base}/ui/releases/{id}")).await.unwrap();
    client.wait().at_most(PAGE).for_element(Locator::Css("svg.graph g.node")).await.expect("the graph");
    let nodes = client.find_all(Locator::Css("svg.graph g.node")).await.unwrap();
    assert_eq!(nodes.len(), 6, "a node per service");
    // A marker the page keeps until it is reloaded.
    client.execute("window.__notReloaded = true; return true;", vec![]).await.unwrap();
    screenshot(&client, "1-release-started").await;

    // web comes last in the canary stage: it is seen waiting, then moving on, live.
    let web = "svg.graph g.node[data-service=\"web\"]";
    // The live page swaps the graph as events arrive: a read that meets the node being
    // replaced finds nothing, so read until one answers.
    let first = eventually(PAGE, "web's node's state", || attr(&client, web, "data-state")).await.ok();
    let moved = eventually(RELEASE, "web's node leaving `waiting` without a reload", || async {
        let state = attr(&client, web, "data-state").await?;
        (state != "waiting").then_some(state)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", fleet.logs()));
    let kept = client.execute("return window.__notReloaded === true;", vec![]).await.unwrap();
    assert_eq!(kept, serde_json::Value::Bool(true), "the page was not reloaded");
    assert_eq!(first.as_deref(), Some("waiting"), "web waited for its dependencies first (then {moved})");
    let streamed = client.find_all(Locator::Css("#events li")).await.unwrap().len();
    assert!(streamed > 5, "events arrived over the stream: {streamed}");
    screenshot(&client, "2-canary-stage-live").await;

    // The canary stage's approval appears with its button; Approve, confirm.
    let approve = "li[data-approval=\"canary\"] button[data-action=\"approve\"]";
    client.wait().at_most(RELEASE).for_element(Locator::Css(approve)).await.unwrap_or_else(|e| {
        panic!("no Approve button for the canary stage: {e}\n{}", fleet.logs());
    });
    screenshot(&client, "3-approval-pending").await;
    let before = fleet.ok(fleet.release(&id).await);
    assert_eq!(before.pending_approvals.len(), 1, "{}", describe(&before));
    assert!(before.stages.get(1).is_none_or(|s| s.services.is_empty()), "main has not started");
    // Meanwhile a viewer sees the same release and its approval, with no action button.
    let (_viewer_driver, viewer) = browser(&chromium, &chromedriver, fleet.dir(), "bob").await;
    assert_eq!(sign_in(&viewer, &base, &bob).await, "token bob (viewer)");
    viewer.goto(&format!("{base}/ui/releases/{id}")).await.unwrap();
    viewer.wait().at_most(PAGE).for_element(Locator::Css("li[data-approval=\"canary\"]")).await.unwrap();
    let buttons = viewer.find_all(Locator::Css("button[data-action]")).await.unwrap();
    assert!(buttons.is_empty(), "a viewer gets no action button");
    screenshot(&viewer, "6-viewer").await;
    // Posting the approval anyway (with the form token of their sign-out form): refused,
    // with the server's reason, and nothing approved.
    let posted = viewer
        .execute(
            "const form = new FormData(); \
             form.append('form_token', document.querySelector('input[name=form_token]').value); \
             form.append('action', 'approve'); form.append('target', 'stage:canary'); \
             return fetch(location.pathname + '/act', { method: 'POST', body: new URLSearchParams(form) }) \
               .then(async r => [r.status, await r.text()]);",
            vec![],
        )
        .await
        .unwrap();
    let (status, page) = (posted[0].as_u64(), posted[1].as_str().unwrap_or_default().to_owned());
    assert_eq!(status, Some(403), "{page}");
    assert!(page.contains("may not call flotilla.v1.Releases/Approve: it needs the deployer role"), "{page}");
    let still = fleet.ok(fleet.release(&id).await);
    assert_eq!((still.pending_approvals.len(), still.approvals.len()), (1, 0), "{}", describe(&still));
    // Once bob's token is revoked, his session ends: the next page is the sign-in form,
    // saying why.
    let bob_id = bob.split('.').nth(2).expect("FORMAT.CLUSTER.ID.SECRET");
    fleet.ok(fleet.cli(&["tokens", "revoke", bob_id]).await);
    let ended = eventually(PAGE, "the viewer's session ended", || async {
        viewer.goto(&format!("{base}/ui")).await.ok()?;
        let text = viewer.find(Locator::Css("main")).await.ok()?.text().await.ok()?;
        text.contains("Your session has ended").then_some(text)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(ended.contains("revoked"), "{ended}");
    viewer.find(Locator::Css("form.signin #token")).await.expect("the sign-in form");
    viewer.close().await.unwrap();

    // The live part is swapped in as events arrive: find the button again if it went.
    eventually(PAGE, "clicking Approve", || async {
        client.find(Locator::Css(approve)).await.ok()?.click().await.ok()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    client.accept_alert().await.expect("the confirmation");
    let started = fleet.ok(fleet
        .wait_release(&id, "the main stage started", RELEASE, |r| {
            r.stages.get(1).is_some_and(|s| !s.services.is_empty())
        })
        .await);
    assert_eq!(started.approvals.len(), 1);
    assert_eq!(started.approvals[0].approved_by, "token alice", "approved as the signed-in operator");
    client
        .wait()
        .at_most(PAGE)
        .for_element(Locator::Css("article.stage[data-stage=\"main\"] tr[data-service]"))
        .await
        .expect("the page showing the main stage's services");
    screenshot(&client, "4-main-stage-approved").await;

    // ledger fails in main: the page shows the cascading rollback, its members and order,
    // as it happens.
    let done = fleet.ok(fleet.wait_finished(&id, RELEASE).await);
    assert_eq!(done.state, ReleaseState::RolledBack as i32, "{}\n{}", describe(&done), fleet.logs());
    let state = "span[data-release-state]";
    eventually(PAGE, "the page saying the release rolled back", || async {
        (attr(&client, state, "data-release-state").await? == "rolled back").then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let kept = client.execute("return window.__notReloaded === true;", vec![]).await.unwrap();
    assert_eq!(kept, serde_json::Value::Bool(false), "the approval's form post loaded the page once");
    let members =
        client.find(Locator::Css("section.rollback")).await.expect("the rollback section").text().await.unwrap();
    assert!(members.contains("ledger") && members.contains("web"), "ledger and its dependents: {members}");
    let order = client.find_all(Locator::Css("section.rollback ol li")).await.unwrap();
    let mut steps = Vec::new();
    for li in &order {
        steps.push(li.text().await.unwrap());
    }
    let at = |name: &str| steps.iter().position(|s| s == &format!("roll back {name}"));
    assert!(at("web") < at("ledger") && at("web").is_some(), "dependents first: {steps:?}");
    let ledger = attr(&client, "svg.graph g.node[data-service=\"ledger\"]", "data-state").await;
    assert_eq!(ledger.as_deref(), Some("rolled back"), "{steps:?}");
    screenshot(&client, "5-rolled-back").await;

    // Every agent on the fleet page.
    client.goto(&format!("{base}/ui/fleet")).await.unwrap();
    let hosts = client.find_all(Locator::Css("table.fleet tr[data-host]")).await.unwrap();
    assert_eq!(hosts.len(), 6, "every agent listed");
    for row in &hosts {
        let last = row.find(Locator::Css("td[data-last-step]")).await.ok();
        assert!(last.is_some(), "each host's newest step: {}", row.text().await.unwrap());
    }
    screenshot(&client, "7-fleet").await;
    // A host's page lists its steps of this release.
    let host = &shop_hosts(6)[0].id;
    client.find(Locator::Css(&format!("tr[data-host=\"{host}\"] a"))).await.unwrap().click().await.unwrap();
    client.wait().at_most(PAGE).for_element(Locator::Css("table.steps tr[data-command]")).await.unwrap();
    let steps = client.find(Locator::Css("table.steps")).await.unwrap().text().await.unwrap();
    assert!(steps.contains(&id) && steps.contains("deploy"), "{steps}");
    screenshot(&client, "8-host").await;

    // On a phone's screen the release page fits its width: wide tables and the graph
    // scroll inside themselves.
    client.set_window_size(390, 844).await.unwrap();
    client.goto(&format!("{base}/ui/releases/{id}")).await.unwrap();
    client.wait().at_most(PAGE).for_element(Locator::Css("svg.graph g.node")).await.unwrap();
    let widths = client
        .execute("return [document.documentElement.scrollWidth, document.documentElement.clientWidth];", vec![])
        .await
        .unwrap();
    let (scrolled, width) = (widths[0].as_u64().unwrap_or(u64::MAX), widths[1].as_u64().unwrap_or(0));
    assert!(scrolled <= width, "the page is {scrolled}px wide on a {width}px screen");
    screenshot(&client, "9-phone").await;
    client.close().await.unwrap();
}
