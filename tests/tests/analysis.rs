//! Canary analysis with real processes and a real Prometheus: three
//! `flotilla-coordinator`s started with `--prometheus-url`, four `flotilla-agent`s running
//! the sample service (which serves `/metrics`, sends itself 20 requests a second and
//! announces itself to Prometheus through file discovery), and Debian's `prometheus`
//! scraping every copy once a second. Each test installs version 1 of `api` on the four
//! hosts without analysis, then releases versions judged by the share of requests
//! answered 500, per host, canary against the hosts of the stage still on the old version.
//!
//! Without a `prometheus` on the PATH these tests pass with a note, unless
//! `FLOTILLA_REQUIRE_PROMETHEUS=1` (as CI sets).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use flotilla_proto::v1::{self, EventKind as K, ReleaseState};
use flotilla_sample_service::Behaviour;
use flotilla_sample_service::prometheus::LocalPrometheus;
use flotilla_tests::fleet::{HostSpec, TestFleet, artifact, describe, event_lines, events_of};
use flotilla_tests::prometheus::{self, prometheus_or_skip};

/// Longest a release may take.
const RELEASE: Duration = Duration::from_secs(120);

/// The error ratio per host of the side the query is rendered for, over 5 s.
const ERROR_RATIO: &str = r#"sum by (host) (rate(flotilla_sample_requests_total{service="{{service}}",version=~"{{version}}",host=~"{{hosts}}",code="500"}[5s])) / sum by (host) (rate(flotilla_sample_requests_total{service="{{service}}",version=~"{{version}}",host=~"{{hosts}}"}[5s]))"#;

fn hosts() -> Vec<HostSpec> {
    (1..=4)
        .map(|i| HostSpec { id: format!("api-{i}"), labels: [("role".to_owned(), "api".to_owned())].into() })
        .collect()
}

/// `api` at `major`.0.0 behaving as `behaviour`, on every host: a canary, then 50 %, then
/// the rest, 2 s bakes; with `analysis`, each batch judged on the error ratio every 2 s,
/// 4 rounds needed, critical and required.
fn spec(major: u32, behaviour: &Behaviour, sd: &Path, analysis: bool) -> String {
    let version = format!("{major}.0.0");
    let mut behaviour = behaviour.clone();
    behaviour.version = Some(version.clone());
    let pkg = artifact("api", &version, &behaviour).expect("packaging the sample service");
    let mut s = format!("release = \"api-v{major}\"\n\n[defaults]\n");
    s.push_str(if analysis {
        "canary = 1\nbatches = [\"50%\", \"100%\"]\nbake = \"2s\"\n"
    } else {
        "canary = 0\nbatches = [\"100%\"]\nbake = \"0s\"\n"
    });
    s.push_str("healthy_for = \"500ms\"\nhealthy_deadline = \"20s\"\nprogress_deadline = \"90s\"\non_failure = \"rollback\"\n\n");
    if analysis {
        s.push_str("[defaults.analysis]\ninterval = \"2s\"\nsamples = 4\nquery_error_limit = 2\n\n");
        let _ = writeln!(
            s,
            "[[defaults.metric]]\nname = \"error_ratio\"\nquery = '{ERROR_RATIO}'\ncritical = true\nmust_have_data = true\n"
        );
    }
    let _ = writeln!(s, "[[service]]\nname = \"api\"\nversion = \"{version}\"\nhosts = {{ role = \"api\" }}");
    let _ = writeln!(s, "artifact = {{ url = \"{}\", sha256 = \"{}\" }}", pkg.file_url(), pkg.sha256);
    let _ = writeln!(
        s,
        "run = {{ command = \"bin/sample\", args = [\"--port\", \"0\", \"--prometheus-sd\", \"{}\"], stop_timeout = \"2s\" }}",
        sd.display()
    );
    let _ = writeln!(s, "health = [{{ exec = \"bin/sample --check\", interval = \"200ms\", timeout = \"2s\" }}]");
    s
}

/// Prometheus, then the fleet with its coordinators pointed at it, with version 1 of
/// `api` installed everywhere; `None` when there is no Prometheus to test with.
async fn fleet_on_version_1(dir: &Path) -> Option<(LocalPrometheus, TestFleet)> {
    if !prometheus_or_skip() {
        return None;
    }
    let prometheus = prometheus::start(dir).await.unwrap_or_else(|e| panic!("starting prometheus: {e:#}"));
    let args =
        ["--prometheus-url".to_owned(), prometheus.url(), "--prometheus-timeout-ms".to_owned(), "1000".to_owned()];
    let fleet =
        TestFleet::start_with_args(3, &hosts(), &args).await.unwrap_or_else(|e| panic!("starting the fleet: {e:#}"));
    let id = fleet.ok(fleet.submit("api-v1.toml", &spec(1, &Behaviour::default(), &prometheus.sd_dir(), false)).await);
    let r = fleet.ok(fleet.wait_finished(&id, RELEASE).await);
    assert_eq!(r.state, ReleaseState::Succeeded as i32, "installing version 1: {}\n{}", describe(&r), fleet.logs());
    Some((prometheus, fleet))
}

/// The analyses of a release, as `service batch verdict`.
fn verdicts(r: &v1::Release) -> Vec<String> {
    r.analyses
        .iter()
        .map(|a| {
            let verdict = v1::AnalysisVerdict::try_from(a.verdict).map_or("?".to_owned(), |v| format!("{v:?}"));
            format!("{} {} {verdict}", a.service, a.batch)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_with_errors_fails_at_its_canary_and_a_healthy_one_passes_every_batch() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let Some((prometheus, fleet)) = fleet_on_version_1(dir.path()).await else { return };
    let sd = &prometheus.sd_dir();

    // 5 % of requests answer 500 while /healthz stays green.
    let id =
        fleet.ok(fleet.submit("api-v2.toml", &spec(2, &Behaviour::default().with_error_ratio(0.05), sd, true)).await);
    let r = fleet.ok(fleet.wait_finished(&id, RELEASE).await);
    let events = fleet.ok(fleet.events(&id).await);
    let context = format!("{}\n{}\n{}", describe(&r), event_lines(&events), prometheus.log());
    assert_eq!(r.state, ReleaseState::RolledBack as i32, "{context}");
    assert_eq!(verdicts(&r), ["api canary Fail"], "judged at the canary only: {context}");
    let failed = events_of(&events, K::AnalysisFailed);
    assert_eq!(failed.len(), 1, "{context}");
    let why = &failed[0].message;
    assert!(why.starts_with("api canary failed analysis"), "{why}");
    // The numbers, per metric: the canary's measured ratio is about the 5 % it answers
    // with errors (a median of real rates, never exactly), the baseline's 0.
    let lead = "error_ratio canary ";
    let at = why.find(lead).unwrap_or_else(|| panic!("no `{lead}` in {why}")) + lead.len();
    let (ratio, rest) = why[at..].split_once(' ').unwrap_or_else(|| panic!("no ratio in {why}"));
    let ratio: f64 = ratio.parse().unwrap_or_else(|e| panic!("`{ratio}` in {why}: {e}"));
    assert!((0.03..=0.08).contains(&ratio) && rest.starts_with("vs baseline 0 ("), "{why}");
    assert!(why.contains("critical"), "{why}");
    let analysis = &r.analyses[0];
    assert_eq!((analysis.canary_hosts.len(), analysis.baseline_hosts.len()), (1, 3), "{context}");
    assert_eq!(analysis.baseline_versions, ["1.0.0"]);
    let metric = &analysis.results[0];
    assert!(metric.tested && metric.p_value < 0.02 && metric.shift > 0.04, "{metric:?}");
    assert_eq!(events_of(&events, K::BatchStarted).len(), 1, "no host past the canary got version 2: {context}");
    assert!(!events_of(&events, K::ServiceRolledBack).is_empty(), "the canary went back to 1.0.0: {context}");

    // A healthy version passes each batch that has a baseline; the last has none (and
    // no threshold metric), so it is not analysed.
    let id = fleet.ok(fleet.submit("api-v3.toml", &spec(3, &Behaviour::default(), sd, true)).await);
    let r = fleet.ok(fleet.wait_finished(&id, RELEASE).await);
    let events = fleet.ok(fleet.events(&id).await);
    let context = format!("{}\n{}", describe(&r), event_lines(&events));
    assert_eq!(r.state, ReleaseState::Succeeded as i32, "{context}");
    assert_eq!(verdicts(&r), ["api canary Pass", "api 50% Pass"], "{context}");
    assert_eq!(r.analyses[1].canary_hosts.len(), 2, "the 50 % batch is judged with the canary host");
    assert_eq!(r.analyses[1].baseline_versions, ["1.0.0"], "version 2 was rolled back: the baseline runs 1.0.0");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_analysis_outlives_its_leader_and_pauses_when_prometheus_stops() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let Some((mut prometheus, fleet)) = fleet_on_version_1(dir.path()).await else { return };
    let sd = prometheus.sd_dir();

    // The leader dies once the canary's analysis has committed a round; the new leader
    // carries on from the committed rounds (the same analysis, not a new one).
    let id = fleet.ok(fleet.submit("api-v2.toml", &spec(2, &Behaviour::default(), &sd, true)).await);
    fleet.ok(fleet
        .wait_release(&id, "a committed round of the canary's analysis", RELEASE, |r| {
            r.analyses.first().is_some_and(|a| a.rounds >= 1)
        })
        .await);
    let killed = fleet.ok(fleet.kill9_leader().await);
    let r = fleet.ok(fleet.wait_finished(&id, RELEASE).await);
    let events = fleet.ok(fleet.events(&id).await);
    let context = format!("killed {killed}\n{}\n{}", describe(&r), event_lines(&events));
    assert_eq!(r.state, ReleaseState::Succeeded as i32, "{context}");
    assert_eq!(verdicts(&r), ["api canary Pass", "api 50% Pass"], "{context}");
    assert_eq!(events_of(&events, K::AnalysisStarted).len(), 2, "one analysis per batch, not restarted: {context}");
    let started = events.iter().position(|e| e.kind == K::AnalysisStarted as i32).unwrap();
    let passed = events.iter().position(|e| e.kind == K::AnalysisPassed as i32).unwrap();
    let took_over = events.iter().position(|e| e.kind == K::LeaderChanged as i32);
    assert!(took_over.is_some_and(|t| started < t && t < passed), "the new leader judged it: {context}");
    assert!(r.analyses[0].rounds >= 4, "{context}");

    // Prometheus stops mid-analysis: queries fail, and past the limit the analysis is
    // inconclusive and the release waits for a human, saying why.
    let id = fleet.ok(fleet.submit("api-v3.toml", &spec(3, &Behaviour::default(), &sd, true)).await);
    fleet.ok(fleet
        .wait_release(&id, "a committed round of the canary's analysis", RELEASE, |r| {
            r.analyses.first().is_some_and(|a| a.rounds >= 1)
        })
        .await);
    prometheus.stop();
    let r = fleet
        .ok(fleet.wait_release(&id, "the release to pause", RELEASE, |r| r.state == ReleaseState::Paused as i32).await);
    let events = fleet.ok(fleet.events(&id).await);
    let context = format!("{}\n{}", describe(&r), event_lines(&events));
    assert!(r.reason.contains("inconclusive") && r.reason.contains("query errors (limit 2)"), "{context}");
    assert_eq!(verdicts(&r), ["api canary Inconclusive"], "{context}");
    let failures = events_of(&events, K::AnalysisQueryFailed);
    assert!(failures.len() >= 3, "{context}");
    assert!(
        failures[0].message.contains("cannot connect") || failures[0].message.contains("Connection refused"),
        "{context}"
    );
}
