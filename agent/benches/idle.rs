//! The idle agent's footprint: a real `flotilla-agent` daemon with one service and a
//! session open to an in-test `AgentLink` server (heartbeat every second), measured
//! from /proc over 30 heartbeats. Run: `cargo bench -p flotilla-agent --bench idle`.

#![allow(clippy::print_stdout, missing_docs)]

#[path = "../tests/support/link.rs"]
mod link;
#[path = "../tests/support/mod.rs"]
mod support;

use std::io::BufRead as _;

use link::{AgentProcess, TestServer};
use support::{World, deploy_step, local_deploy};

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(measure());
}

async fn measure() {
    let world = World::new();
    let v1 = world.package("1.0.0");
    local_deploy(&world, &deploy_step("d1", 1, world.deploy("d1", "1.0.0", &v1)));
    let mut server = TestServer::start(None);
    let agent = AgentProcess::start(world.dir.path(), &world.data(), &[server.address()], None);
    let mut s = server.next_session().await;
    s.register().await;
    // A heartbeat a second, as a coordinator would ask for.
    s.welcome(1000).await;
    s.next_result().await;
    s.ack(&["d1"]).await;
    // Settle, then measure over a window of heartbeats.
    for _ in 0..3 {
        s.next_heartbeat().await;
    }
    let pid = agent.pid();
    let (cpu0, t0) = (cpu_ticks(pid), std::time::Instant::now());
    let beats = 30;
    for _ in 0..beats {
        s.next_heartbeat().await;
    }
    let (cpu1, elapsed) = (cpu_ticks(pid), t0.elapsed());
    let ticks_per_s = 100.0; // USER_HZ on Linux
    #[allow(clippy::cast_precision_loss)]
    let cpu_pct = (cpu1 - cpu0) as f64 / ticks_per_s / elapsed.as_secs_f64() * 100.0;
    let (rss, hwm) = (status_kb(pid, "VmRSS:"), status_kb(pid, "VmHWM:"));
    let (anon, file) = (status_kb(pid, "RssAnon:"), status_kb(pid, "RssFile:"));
    let threads = status_kb(pid, "Threads:");
    println!(
        "idle agent (1 service, session open, heartbeat 1 s): RSS {rss} kB (anon {anon} kB, file {file} kB, peak {hwm} kB, {threads} threads), CPU {cpu_pct:.2}% over {:.1} s ({} ticks)",
        elapsed.as_secs_f64(),
        cpu1 - cpu0
    );
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the comm.
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

fn status_kb(pid: u32, key: &str) -> u64 {
    let file = std::fs::File::open(format!("/proc/{pid}/status")).expect("status");
    std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .expect("field")
}
