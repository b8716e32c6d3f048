//! Coordinator cluster benchmarks on real processes (3 nodes, loopback, fsync on):
//! committed writes per second with p50/p99 commit latency at 1, 16 and 256 writers,
//! time from `kill -9` of the leader to the first write committed by its successor,
//! and a kill-everything-and-restart soak that checks no acknowledged write is lost.
//!
//! `cargo bench -p flotilla-tests --bench cluster` (all), or with one argument:
//! `throughput` (release creates), `entries` (the smallest replicated entry: a
//! 256-byte note on one release, `Releases.Annotate`, to compare one for one with a
//! key-value store's put), `failover` (`FLOTILLA_FAILOVER_TRIALS`, default 20) or
//! `soak` (`FLOTILLA_SOAK_CYCLES`, default 20). `FLOTILLA_BENCH_WRITERS` (e.g. `1,16`)
//! narrows the writer counts of `throughput` and `entries`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_net::LeaderClient;
use flotilla_tests::fleet::cpu_time;
use flotilla_tests::{ClusterOptions, TestCluster, eventually, note_via, write_via};
use tokio::sync::Mutex;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

#[allow(clippy::print_stdout)]
fn report(line: &str) {
    println!("{line}");
}

/// What one throughput run writes.
#[derive(Clone, PartialEq, Eq)]
enum Load {
    /// A release create per write (parsed, planned and run by the engine).
    Creates,
    /// A 256-byte note on this release per write.
    Notes(String),
}

/// How many writers share one client connection, as in the etcd load generator the
/// figures are compared with (a pool of real clients, not one connection for all).
const WRITERS_PER_CONNECTION: usize = 16;

/// Notes one 256-byte note, retrying failed calls for up to 30 s; returns how many
/// calls failed. (A note is not idempotent: a retried call may have committed too.)
async fn note_retrying(client: &LeaderClient, id: &str, text: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut failed = 0;
    loop {
        match note_via(client, id, text).await {
            Ok(()) => return failed,
            Err(e) if Instant::now() >= deadline => panic!("note on {id}: {e:#}"),
            Err(_) => failed += 1,
        }
    }
}

/// Writes `key`, retrying failed calls (an election under load) for up to 30 s with
/// the same idempotency key; returns the release id and how many calls failed.
async fn write_retrying(client: &LeaderClient, key: &str) -> (String, usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut failed = 0;
    loop {
        match write_via(client, key).await {
            Ok(id) => return (id, failed),
            Err(e) if Instant::now() >= deadline => panic!("write {key}: {e:#}"),
            Err(_) => failed += 1,
        }
    }
}

/// CPU time used by the cluster's coordinators and by this load generator.
fn cpu_times(cluster: &TestCluster) -> (Duration, Duration) {
    (cluster.pids().iter().map(|p| cpu_time(&p.to_string())).sum(), cpu_time("self"))
}

async fn term(cluster: &TestCluster) -> u64 {
    let mut term = 0;
    for &id in cluster.nodes.keys() {
        term = term.max(cluster.status_of(id).await.map_or(0, |s| s.term));
    }
    term
}

/// The highest committed log index any node reports.
async fn committed(cluster: &TestCluster) -> u64 {
    let mut index = 0;
    for &id in cluster.nodes.keys() {
        index = index.max(cluster.status_of(id).await.map_or(0, |s| s.committed_index));
    }
    index
}

async fn throughput(cluster: &TestCluster, load: Load, writers: usize, total: usize) {
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let retries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let per_writer = total / writers;
    let clients: Vec<Arc<LeaderClient>> =
        (0..writers.div_ceil(WRITERS_PER_CONNECTION)).map(|_| Arc::new(cluster.new_client())).collect();
    // Each connection is opened (and finds the leader) before the clock starts.
    for (c, client) in clients.iter().enumerate() {
        let key = format!("warm-{writers}-{c}");
        match &load {
            Load::Creates => write_retrying(client, &key).await.1,
            Load::Notes(id) => note_retrying(client, id, &key).await,
        };
    }
    let term_before = term(cluster).await;
    let committed_before = committed(cluster).await;
    let cpu_before = cpu_times(cluster);
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (latencies, retries, load) = (latencies.clone(), retries.clone(), load.clone());
            let client = clients[w % clients.len()].clone();
            tokio::spawn(async move {
                for i in 0..per_writer {
                    let t = Instant::now();
                    let key = format!("tp{writers}-{w}-{i}-{}", started.elapsed().as_nanos());
                    let failed = match &load {
                        Load::Creates => write_retrying(&client, &key).await.1,
                        Load::Notes(id) => note_retrying(&client, id, &format!("{key:-<256.256}")).await,
                    };
                    retries.fetch_add(failed, std::sync::atomic::Ordering::Relaxed);
                    latencies.lock().await.push(t.elapsed());
                }
            })
        })
        .collect();
    for task in futures::future::join_all(tasks).await {
        task.expect("a writer finishes");
    }
    let elapsed = started.elapsed();
    let cpu_after = cpu_times(cluster);
    let per_write = |before: Duration, after: Duration| {
        format!("{:.0} us", after.saturating_sub(before).as_secs_f64() * 1e6 / total as f64)
    };
    let elections = term(cluster).await.saturating_sub(term_before);
    // Each created release is one entry, and the engine then commits its own facts
    // (started, skipped hosts at target, done): the log's rate as well as the clients'.
    // A note is one entry; audit records of the calls are committed in batches beside.
    let entries = committed(cluster).await.saturating_sub(committed_before);
    let mut lat = latencies.lock().await.clone();
    lat.sort();
    report(&format!(
        "{} writers={writers:>3} writes={:>6} elapsed={:>8} rate={:>8.0}/s p50={} p99={} log entries={entries} ({:.0}/s) cpu/write: coordinators={} client={} retried={} elections={elections}",
        if matches!(load, Load::Creates) { "throughput" } else { "entries   " },
        lat.len(),
        ms(elapsed),
        lat.len() as f64 / elapsed.as_secs_f64(),
        ms(percentile(&lat, 0.50)),
        ms(percentile(&lat, 0.99)),
        entries as f64 / elapsed.as_secs_f64(),
        per_write(cpu_before.0, cpu_after.0),
        per_write(cpu_before.1, cpu_after.1),
        retries.load(std::sync::atomic::Ordering::Relaxed),
    ));
}

async fn failover(trials: usize) {
    let mut cluster = TestCluster::start(3, ClusterOptions::default()).expect("cluster");
    let mut samples = Vec::new();
    let mut elections = Vec::new();
    for trial in 0..trials {
        let leader = cluster.wait_leader(Duration::from_secs(30)).await.expect("leader");
        cluster.write(&format!("warm-{trial}")).await.expect("warm-up write");
        let killed_at = Instant::now();
        cluster.kill9(leader);
        let c = &cluster;
        let elected = c.wait_leader(Duration::from_secs(30)).await.expect("a new leader");
        elections.push(killed_at.elapsed());
        assert_ne!(elected, leader);
        eventually(Duration::from_secs(30), "a write on the new leader", || async move {
            c.write(&format!("failover-{trial}")).await.ok()
        })
        .await
        .expect("a new leader commits");
        samples.push(killed_at.elapsed());
        // The killed node comes back and catches up before the next trial, so each
        // trial starts from a healthy cluster (not from one still recovering from the
        // previous failover, whose lagging node would run for leader with a short log).
        cluster.restart(leader).expect("restart");
        let committed = cluster.status_of(elected).await.map_or(0, |s| s.committed_index);
        cluster.wait_applied(leader, committed, Duration::from_secs(30)).await.expect("the restarted node catches up");
    }
    samples.sort();
    elections.sort();
    report(&format!(
        "election (all survivors agree on a new leader) trials={} p50={} p99={}",
        elections.len(),
        ms(percentile(&elections, 0.50)),
        ms(percentile(&elections, 0.99))
    ));
    report(&format!(
        "failover (kill -9 to first committed write) trials={} p50={} p99={} min={} max={}",
        samples.len(),
        ms(percentile(&samples, 0.50)),
        ms(percentile(&samples, 0.99)),
        ms(samples[0]),
        ms(samples[samples.len() - 1])
    ));
}

async fn soak(cycles: usize) {
    let mut cluster = TestCluster::start(3, ClusterOptions::default()).expect("cluster");
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let mut resumed = 0;
    for cycle in 0..cycles {
        cluster.wait_leader(Duration::from_secs(30)).await.expect("leader");
        let deadline = Instant::now() + Duration::from_millis(500);
        let c = &cluster;
        let writers = (0..8).map(|w| {
            let acked = acked.clone();
            async move {
                for i in 0.. {
                    match c.write(&format!("soak-{cycle}-{w}-{i}")).await {
                        Ok(id) => {
                            acked.lock().await.insert(id);
                        }
                        Err(_) => break,
                    }
                    if Instant::now() > deadline {
                        for id in [1, 2, 3] {
                            c.kill9_shared(id);
                        }
                    }
                }
            }
        });
        futures::future::join_all(writers).await;
        for id in [1, 2, 3] {
            cluster.restart(id).expect("restart");
        }
        cluster.wait_leader(Duration::from_secs(30)).await.expect("leader after restart");
        // The first listing that succeeds after the restart (a linearizable read) must
        // hold every acknowledged write: missing ones are lost or read stale, both bugs.
        let listed: BTreeSet<String> =
            cluster.first_listing(Duration::from_secs(30)).await.expect("list").into_iter().collect();
        let acked = acked.lock().await;
        let missing: Vec<&String> = acked.difference(&listed).collect();
        assert!(
            missing.is_empty(),
            "cycle {cycle}: the first listing after the restart misses {} acknowledged writes: {missing:?}",
            missing.len()
        );
        // Whether the old leader resumed its leadership without an election (the case
        // that used to serve a stale first read): it logs so on start.
        let resumed_now: usize =
            cluster.nodes.keys().map(|&id| cluster.log_of(id).matches("resuming the leadership").count()).sum();
        let how = if resumed_now > resumed { "the old leader resumed without an election" } else { "a new leader" };
        resumed = resumed_now;
        report(&format!("soak cycle {cycle}: {} acknowledged writes, all in the first listing ({how})", acked.len()));
    }
}

fn main() {
    let which: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let wants = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let writer_counts: Vec<usize> = std::env::var("FLOTILLA_BENCH_WRITERS")
            .ok()
            .map(|v| v.split(',').filter_map(|w| w.trim().parse().ok()).collect())
            .unwrap_or_else(|| vec![1, 16, 256]);
        let total = |writers: usize| match writers {
            1 => 2_000,
            w => (w * 1_000).min(51_200),
        };
        if wants("throughput") {
            let cluster = TestCluster::start(3, ClusterOptions::default()).expect("cluster");
            cluster.wait_leader(Duration::from_secs(30)).await.expect("leader");
            for &writers in &writer_counts {
                throughput(&cluster, Load::Creates, writers, total(writers)).await;
            }
        }
        if wants("entries") {
            let cluster = TestCluster::start(3, ClusterOptions::default()).expect("cluster");
            cluster.wait_leader(Duration::from_secs(30)).await.expect("leader");
            let (id, _) = write_retrying(&cluster.new_client(), "entries-target").await;
            for &writers in &writer_counts {
                throughput(&cluster, Load::Notes(id.clone()), writers, total(writers)).await;
            }
        }
        if wants("failover") {
            let trials = std::env::var("FLOTILLA_FAILOVER_TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
            failover(trials).await;
        }
        if wants("soak") {
            let cycles = std::env::var("FLOTILLA_SOAK_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
            soak(cycles).await;
        }
    });
}
