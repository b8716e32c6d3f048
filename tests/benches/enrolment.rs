//! Enrolment benchmark on real processes: 1,000 agents join a three-coordinator cluster
//! (mutual TLS, fsync on) with one join token, as `flotilla-agent --join` does: a TLS
//! connection pinned to the cluster's CA, then `Enrolment.Join` with a certificate
//! request. Reports the wall time of the whole run, the latency of each join (p50, p99)
//! and the coordinators' CPU time per enrolment (all three processes, from `/proc`).
//! The agents' keys and requests are made before the clock starts: that work is the
//! hosts', not the cluster's.
//!
//! `cargo bench -p flotilla-tests --bench enrolment` runs `FLOTILLA_ENROL_RUNS` runs
//! (default 3) of `FLOTILLA_ENROL_AGENTS` joins (default 1,000), 16 at a time
//! (`FLOTILLA_ENROL_CONCURRENCY`), each run on a fresh cluster, and prints each run and
//! the medians.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_net::pki::{self, ClusterCa};
use flotilla_net::{CaPin, ClientSecurity, channel};
use flotilla_proto::v1;
use flotilla_proto::v1::enrolment_client::EnrolmentClient;
use flotilla_tests::fleet::{TestFleet, cpu_time};
use tokio::sync::Semaphore;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[allow(clippy::print_stdout)]
fn report(line: &str) {
    println!("{line}");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len().saturating_sub(1)) as f64 * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// One run's figures.
struct Run {
    wall: Duration,
    p50: Duration,
    p99: Duration,
    cpu_per_enrolment: Duration,
}

async fn run(agents: usize, concurrency: usize) -> Run {
    let fleet = TestFleet::start_enrolled(3, &[], Duration::from_secs(86_400)).await.expect("a cluster");
    let token = fleet
        .cli(&["agents", "token", "create", "--ttl", "1h", "--uses", &agents.to_string(), "--label", "bench=yes"])
        .await
        .expect("a token")
        .trim()
        .to_owned();
    let ca = ClusterCa::load(fleet.pki_dir().expect("enrolled")).expect("the CA");
    let pin: CaPin = ca.pin().parse().expect("a pin");
    let requests: Vec<(String, Vec<u8>)> = (0..agents)
        .map(|i| {
            let host = format!("host-{i:04}");
            let (_, csr) = pki::new_request(&host).expect("a request");
            (host, csr)
        })
        .collect();
    let addrs = fleet.addrs().to_vec();
    let pids: Vec<String> = fleet.coordinator_pids().iter().map(u32::to_string).collect();
    let cpu = || pids.iter().map(|p| cpu_time(p)).sum::<Duration>();
    let gate = Arc::new(Semaphore::new(concurrency));
    let cpu_before = cpu();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(agents);
    for (i, (host, csr)) in requests.into_iter().enumerate() {
        let permit = gate.clone().acquire_owned().await.expect("the semaphore");
        // Each agent dials a coordinator of its own (as a fleet does, spread over them);
        // followers forward the join to the leader.
        let addr = addrs[i % addrs.len()].clone();
        let (token, pin) = (token.clone(), pin.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let began = Instant::now();
            let ch = channel(&addr, &ClientSecurity::Pinned(pin)).expect("a channel");
            let req = v1::JoinRequest { token, host_id: host.clone(), csr_der: csr, version: None };
            let answer = EnrolmentClient::new(ch).join(req).await;
            if let Err(status) = answer {
                panic!("{host} was not enrolled: {status:?}");
            }
            began.elapsed()
        }));
    }
    let mut latencies = Vec::with_capacity(agents);
    for task in tasks {
        latencies.push(task.await.expect("a join task"));
    }
    let wall = started.elapsed();
    let cpu_used = cpu() - cpu_before;
    latencies.sort();
    let listed = fleet.cli(&["agents", "token", "list", "--all", "--output", "json"]).await.expect("the tokens");
    let uses = serde_json::from_str::<serde_json::Value>(&listed).expect("JSON")["tokens"][0]["uses"].as_u64();
    assert_eq!(uses, Some(agents as u64), "every join spent one use of the token");
    Run {
        wall,
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        cpu_per_enrolment: cpu_used / u32::try_from(agents.max(1)).unwrap_or(u32::MAX),
    }
}

fn main() {
    let runs = env("FLOTILLA_ENROL_RUNS", 3);
    let agents = env("FLOTILLA_ENROL_AGENTS", 1_000);
    let concurrency = env("FLOTILLA_ENROL_CONCURRENCY", 16);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
    let mut results = Vec::new();
    for i in 1..=runs {
        let r = rt.block_on(run(agents, concurrency));
        report(&format!(
            "run {i}: {agents} enrolments in {:.2} s ({:.0}/s), join p50 {:.1} ms p99 {:.1} ms, coordinator CPU {:.2} ms per enrolment",
            r.wall.as_secs_f64(),
            agents as f64 / r.wall.as_secs_f64(),
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
            r.cpu_per_enrolment.as_secs_f64() * 1e3,
        ));
        results.push(r);
    }
    let m = |f: fn(&Run) -> f64| median(results.iter().map(f).collect());
    report(&format!(
        "median of {runs}: {:.2} s per {agents} enrolments, p50 {:.1} ms, p99 {:.1} ms, coordinator CPU {:.2} ms per enrolment",
        m(|r| r.wall.as_secs_f64()),
        m(|r| r.p50.as_secs_f64() * 1e3),
        m(|r| r.p99.as_secs_f64() * 1e3),
        m(|r| r.cpu_per_enrolment.as_secs_f64() * 1e3),
    ));
}
