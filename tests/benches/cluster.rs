//! Coordinator cluster benchmarks on real processes (3 nodes, loopback, fsync on):
//! committed writes per second with p50/p99 commit latency at 1, 16 and 256 writers,
//! time from `kill -9` of the leader to the first write committed by its successor,
//! and a kill-everything-and-restart soak that checks no acknowledged write is lost.
//!
//! `cargo bench -p flotilla-tests --bench cluster` (all), or with one argument:
//! `throughput`, `failover` or `soak` (`FLOTILLA_SOAK_CYCLES`, default 20).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_tests::{ClusterOptions, TestCluster, eventually};
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

async fn throughput(cluster: &TestCluster, writers: usize, total: usize) {
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let per_writer = total / writers;
    let started = Instant::now();
    let tasks = (0..writers).map(|w| {
        let latencies = latencies.clone();
        async move {
            for i in 0..per_writer {
                let t = Instant::now();
                cluster.write(&format!("tp{writers}-{w}-{i}-{}", started.elapsed().as_nanos())).await.expect("write");
                latencies.lock().await.push(t.elapsed());
            }
        }
    });
    futures::future::join_all(tasks).await;
    let elapsed = started.elapsed();
    let mut lat = latencies.lock().await.clone();
    lat.sort();
    report(&format!(
        "throughput writers={writers:>3} writes={:>6} elapsed={:>8} rate={:>8.0}/s p50={} p99={}",
        lat.len(),
        ms(elapsed),
        lat.len() as f64 / elapsed.as_secs_f64(),
        ms(percentile(&lat, 0.50)),
        ms(percentile(&lat, 0.99)),
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
        cluster.restart(leader).expect("restart");
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
        let listed: BTreeSet<String> = cluster.release_ids().await.expect("list").into_iter().collect();
        let acked = acked.lock().await;
        let stale = acked.difference(&listed).count();
        // A listing right after a full restart has been seen to miss the newest entries
        // for a moment; count those, and fail only on writes that stay missing.
        let c = &cluster;
        let settled = eventually(Duration::from_secs(10), "every acknowledged write listed", || async {
            let listed: BTreeSet<String> = c.release_ids().await.ok()?.into_iter().collect();
            let lost: Vec<String> = acked.difference(&listed).cloned().collect();
            lost.is_empty().then_some(())
        })
        .await;
        assert!(settled.is_ok(), "cycle {cycle}: acknowledged writes lost");
        if stale > 0 {
            report(&format!(
                "soak cycle {cycle}: first listing after restart missed {stale} acknowledged writes (listed later)"
            ));
        }
        report(&format!("soak cycle {cycle}: {} acknowledged writes, all present", acked.len()));
    }
}

fn main() {
    let which: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let wants = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        if wants("throughput") {
            let cluster = TestCluster::start(3, ClusterOptions::default()).expect("cluster");
            cluster.wait_leader(Duration::from_secs(30)).await.expect("leader");
            throughput(&cluster, 1, 2_000).await;
            throughput(&cluster, 16, 16_000).await;
            throughput(&cluster, 256, 51_200).await;
        }
        if wants("failover") {
            failover(20).await;
        }
        if wants("soak") {
            let cycles = std::env::var("FLOTILLA_SOAK_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
            soak(cycles).await;
        }
    });
}
