//! Release engine benchmarks on real processes: a 3-node `flotilla-coordinator` cluster
//! (the harness; loopback, plaintext, fsync on) and simulated agents in this process,
//! each a tonic client holding its own `AgentLink.Session` stream (own TCP connection).
//!
//! - `overhead`: a release of one no-op service to 1,000 simulated agents, canary 1%,
//!   then 10%, 100%, bake 0; time from `Releases.Create` to the `RELEASE_SUCCEEDED`
//!   event (watched on the leader), the leader's CPU time and RSS during the release,
//!   and where the time goes per batch (from the events' `at_unix_ms` and the agents'
//!   own receive/answer times).
//! - `failover`: `kill -9` of the leader in the middle of a many-batch release whose
//!   agents hold each step a little; time until the first `Step` from the new leader
//!   (a term above every term seen before the kill) reaches any agent; the release must
//!   still succeed with every host deploying exactly one command. The killed node is
//!   restarted between trials. `FLOTILLA_FAILOVER_STOP=term` stops the leader with
//!   SIGTERM instead (the graceful stop that hands the leadership over), `both`
//!   alternates the two (kill -9 on odd trials) and reports each series.
//!
//! - `history`: many releases of the same no-op service to every simulated agent, one
//!   after the other (`FLOTILLA_BENCH_RELEASES`, 200); after each, the leader's RSS
//!   and the size of its newest snapshot file (the cluster snapshots every 200 log
//!   entries here). With `FLOTILLA_BENCH_KEEP=N` the coordinators keep N finished
//!   releases whole (`--finished-release-max-count N`) and compact the rest; unset,
//!   their own default (a build without release retention takes no such flag).
//!
//! - `services`: one release of many services (`FLOTILLA_BENCH_SERVICES`, 50, in chains
//!   of five hard dependencies, none installed before) to every simulated agent, each
//!   canary 1 %, then 10 %, 100 %, bake 0; Create to `RELEASE_SUCCEEDED`, and the CPU
//!   time of the leader and of each follower (`FLOTILLA_BENCH_RUNS` runs, 3).
//!
//! - `dashboard`: the web dashboard (coordinators with `--http`): the page of a finished
//!   `services` × agents release (and its live part) fetched 20 times from the leader and
//!   from a follower, time and bytes; then releases watched by `FLOTILLA_BENCH_VIEWERS`
//!   (20) simulated browsers (the event stream, and the live part fetched again on new
//!   events as `app.js` does: at most every 2 s) alternating with unwatched ones, and the CPU time of the
//!   coordinator watched, leader then follower (`FLOTILLA_BENCH_RUNS` pairs, 2).
//!
//! `cargo bench -p flotilla-tests --bench orchestration` (all five), or with one
//! argument: `overhead`, `failover`, `history`, `services` or `dashboard`. Knobs: `FLOTILLA_BENCH_AGENTS` (1000), `FLOTILLA_BENCH_RUNS`
//! (5), `FLOTILLA_FAILOVER_TRIALS` (20), `FLOTILLA_FAILOVER_AGENTS` (100),
//! `FLOTILLA_FAILOVER_HOLD_MS` (300), `FLOTILLA_FAILOVER_SETTLE_MS` (3000: pause after the
//! killed node is restarted and caught up, before the next trial); for diagnosis, `FLOTILLA_SIM_INVENTORY=0` (heartbeats
//! never carry the inventory), `FLOTILLA_SIM_SPAWN_RATE` (agents started per second,
//! 1000), `FLOTILLA_SIM_BACKOFF_MS` / `FLOTILLA_SIM_BACKOFF_MAX_MS`
//! (the agents' reconnect backoff), `FLOTILLA_SIM_TRACE=3,17` (print those agents'
//! session ends) and `FLOTILLA_BENCH_LOGS=DIR` (keep the coordinators' logs). Without `--bench` (e.g. under `cargo test --all-targets`) it does nothing.
//!
//! The simulated agent follows the protocol of `agent.proto` like `flotilla-agent`
//! does: `Register` (host id, labels, inventory, highest term, running steps), then
//! heartbeats at the `Welcome` interval carrying the inventory when it changed; each
//! `Step` answered with a SUCCEEDED `StepResult` (after the hold; a `Deploy` result
//! carries the new `ServiceInstance`), deduplicated by command id and fenced by term;
//! results re-sent on every session until a `ResultAck`; reconnects follow leader
//! hints (a new leader at once), else the coordinators in turn, with the agent's
//! backoff (full jitter, 100 ms doubling to 5 s once per pass over the coordinators in
//! which every dial failed, reset after a 10 s session or one in a newer term).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use flotilla_net::{ClientSecurity, channel, endpoint};
use flotilla_proto::v1::agent_link_client::AgentLinkClient;
use flotilla_proto::v1::coordinator_message::Msg as In;
use flotilla_proto::v1::fleet_client::FleetClient;
use flotilla_proto::v1::releases_client::ReleasesClient;
use flotilla_proto::v1::{self, EventKind, agent_message::Msg as Out, step::Action};
use flotilla_tests::{ClusterOptions, TestCluster, eventually};
use tokio::sync::{mpsc, watch};

const SERVICE: &str = "noop";
const FIRST_VERSION: &str = "1.0.0";

// ---------------------------------------------------------------- small helpers

#[allow(clippy::print_stdout)]
fn report(line: &str) {
    println!("{line}");
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// `median (min–max, MAD)` of `values`, in the unit given.
fn spread(values: &[f64], unit: &str) -> String {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let med = percentile(&v, 0.5);
    let mut dev: Vec<f64> = v.iter().map(|x| (x - med).abs()).collect();
    dev.sort_by(f64::total_cmp);
    let p = if unit == "s" { 2 } else { 1 };
    format!(
        "median {med:.p$} {unit} (min {:.p$}, max {:.p$}, MAD {:.p$}, n={})",
        v.first().copied().unwrap_or(f64::NAN),
        v.last().copied().unwrap_or(f64::NAN),
        percentile(&dev, 0.5),
        v.len()
    )
}

/// A small xorshift generator for jitter (no dependency, seeded per agent).
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `[0, cap]`.
    fn upto(&mut self, cap: Duration) -> Duration {
        let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(if nanos == 0 { 0 } else { self.next() % (nanos + 1) })
    }
}

// ---------------------------------------------------------------- /proc

/// CPU time and memory of one process, from `/proc/PID/stat` and `/proc/PID/status`.
#[derive(Debug, Clone, Copy, Default)]
struct ProcSample {
    cpu_ticks: u64,
    rss_kb: u64,
    hwm_kb: u64,
}

fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

fn proc_sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after "(comm)": state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(ProcSample { cpu_ticks: utime + stime, rss_kb: kb("VmRSS:"), hwm_kb: kb("VmHWM:") })
}

/// The pid of the coordinator process listening on `addr` (found by its command line).
fn coordinator_pid(addr: &str) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_coordinator = args.first().is_some_and(|a| a.ends_with(b"flotilla-coordinator"));
        let listens = args.windows(2).any(|w| w[0] == b"--listen" && w[1] == addr.as_bytes());
        if is_coordinator && listens {
            return Some(pid);
        }
    }
    None
}

/// Copies the coordinators' logs into `$FLOTILLA_BENCH_LOGS` when set.
fn keep_logs(cluster: &TestCluster, bench: &str) {
    let Ok(dir) = std::env::var("FLOTILLA_BENCH_LOGS") else { return };
    let _ = std::fs::create_dir_all(&dir);
    for id in cluster.nodes.keys() {
        let _ = std::fs::write(format!("{dir}/{bench}-node-{id}.log"), cluster.log_of(*id));
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.trim().to_owned()).unwrap_or_default()
}

// ---------------------------------------------------------------- the simulated fleet

/// What the failover probe saw after it was armed.
#[derive(Debug, Default)]
struct Probe {
    armed: bool,
    term_floor: u64,
    first_higher_term_step: Option<Instant>,
    first_new_command: Option<Instant>,
    first_welcome: Option<Instant>,
}

/// State shared by every simulated agent and the benchmark.
#[derive(Debug)]
struct Sim {
    addrs: Vec<String>,
    hold: Duration,
    /// Whether heartbeats carry the inventory after it changed (as `flotilla-agent`
    /// does); `FLOTILLA_SIM_INVENTORY=0` turns it off, to measure what it costs.
    send_inventory: bool,
    /// Reconnect backoff: first cap and largest cap (`FLOTILLA_SIM_BACKOFF_MS`,
    /// `FLOTILLA_SIM_BACKOFF_MAX_MS`; default 100 ms and 5 s like `flotilla-agent`).
    backoff: (Duration, Duration),
    /// Agents whose every session end is printed (`FLOTILLA_SIM_TRACE=3,17`), for diagnosis.
    trace: Vec<usize>,
    /// Per agent: the node id of its live session, 0 when none.
    welcomed: Vec<AtomicU64>,
    max_term: AtomicU64,
    steps: AtomicU64,
    results: AtomicU64,
    sessions: AtomicU64,
    /// How sessions ended: [stream ended after Welcome, ended before Welcome, hint, no leader].
    ends: [AtomicU64; 4],
    probe: Mutex<Probe>,
    /// Every command id received, with when it first arrived (unix ms).
    arrivals: Mutex<HashMap<String, i64>>,
    /// When the first result of a command was sent (unix ms).
    answered: Mutex<HashMap<String, i64>>,
    /// Per release: per agent, the command ids it executed.
    executed: Mutex<HashMap<String, BTreeMap<usize, Vec<String>>>>,
}

impl Sim {
    fn new(addrs: Vec<String>, hold: Duration, agents: usize) -> Arc<Self> {
        Arc::new(Self {
            addrs,
            hold,
            send_inventory: env_or("FLOTILLA_SIM_INVENTORY", 1) != 0,
            backoff: (
                Duration::from_millis(env_or("FLOTILLA_SIM_BACKOFF_MS", 100)),
                Duration::from_millis(env_or("FLOTILLA_SIM_BACKOFF_MAX_MS", 5_000)),
            ),
            trace: std::env::var("FLOTILLA_SIM_TRACE")
                .unwrap_or_default()
                .split(',')
                .filter_map(|v| v.trim().parse().ok())
                .collect(),
            welcomed: (0..agents).map(|_| AtomicU64::new(0)).collect(),
            max_term: AtomicU64::new(0),
            steps: AtomicU64::new(0),
            results: AtomicU64::new(0),
            sessions: AtomicU64::new(0),
            ends: Default::default(),
            probe: Mutex::default(),
            arrivals: Mutex::default(),
            answered: Mutex::default(),
            executed: Mutex::default(),
        })
    }

    fn saw_step(&self, step: &v1::Step, at: Instant) {
        self.steps.fetch_add(1, Ordering::Relaxed);
        self.max_term.fetch_max(step.term, Ordering::Relaxed);
        let new = {
            let mut arrivals = lock(&self.arrivals);
            let new = !arrivals.contains_key(&step.command_id);
            if new {
                arrivals.insert(step.command_id.clone(), now_ms());
            }
            new
        };
        let mut p = lock(&self.probe);
        if p.armed {
            if step.term > p.term_floor && p.first_higher_term_step.is_none() {
                p.first_higher_term_step = Some(at);
            }
            if new && p.first_new_command.is_none() {
                p.first_new_command = Some(at);
            }
        }
    }

    fn saw_welcome(&self, agent: usize, w: &v1::Welcome, at: Instant) {
        self.sessions.fetch_add(1, Ordering::Relaxed);
        self.max_term.fetch_max(w.term, Ordering::Relaxed);
        self.welcomed[agent].store(w.node_id, Ordering::Relaxed);
        let mut p = lock(&self.probe);
        if p.armed && w.term > p.term_floor && p.first_welcome.is_none() {
            p.first_welcome = Some(at);
        }
    }

    fn arm(&self) -> u64 {
        let floor = self.max_term.load(Ordering::Relaxed);
        *lock(&self.probe) = Probe { armed: true, term_floor: floor, ..Probe::default() };
        floor
    }

    fn traffic(&self) -> String {
        let e = |i: usize| self.ends[i].load(Ordering::Relaxed);
        format!(
            "{} steps received, {} results sent, {} sessions welcomed; sessions ended: {} after Welcome, {} before \
             Welcome (connect/stream error), {} with a leader hint, {} with no leader known",
            self.steps.load(Ordering::Relaxed),
            self.results.load(Ordering::Relaxed),
            self.sessions.load(Ordering::Relaxed),
            e(0),
            e(1),
            e(2),
            e(3)
        )
    }

    fn connected_to(&self, node: u64) -> usize {
        self.welcomed.iter().filter(|w| w.load(Ordering::Relaxed) == node).count()
    }
}

/// How a session ended.
enum End {
    Hint(String),
    NoLeader,
    Ended { welcomed: bool },
    Stop,
}

/// One simulated agent.
struct Agent {
    sim: Arc<Sim>,
    idx: usize,
    host: String,
    instance: String,
    version: String,
    since_unix_ms: i64,
    highest_term: u64,
    finished: HashMap<String, v1::StepResult>,
    running: HashSet<String>,
    unacked: BTreeMap<String, v1::StepResult>,
    inventory_dirty: bool,
    done_tx: mpsc::UnboundedSender<v1::StepResult>,
    done_rx: mpsc::UnboundedReceiver<v1::StepResult>,
    next_addr: usize,
    rng: Rng,
    stop: watch::Receiver<bool>,
}

impl Agent {
    fn new(sim: Arc<Sim>, idx: usize, stop: watch::Receiver<bool>) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let mut rng = Rng::new(idx as u64 + 1 + now_ms().unsigned_abs());
        let instance = format!("{:016x}{:016x}", rng.next(), rng.next());
        let next_addr = idx % sim.addrs.len();
        Self {
            sim,
            idx,
            host: format!("sim-{idx:04}"),
            instance,
            version: FIRST_VERSION.to_owned(),
            since_unix_ms: now_ms(),
            highest_term: 0,
            finished: HashMap::new(),
            running: HashSet::new(),
            unacked: BTreeMap::new(),
            inventory_dirty: false,
            done_tx,
            done_rx,
            next_addr,
            rng,
            stop,
        }
    }

    fn instance(&self) -> v1::ServiceInstance {
        v1::ServiceInstance {
            service: SERVICE.to_owned(),
            version: self.version.clone(),
            state: v1::ServiceRunState::Running as i32,
            pid: 10_000 + u32::try_from(self.idx).unwrap_or(0),
            started_unix_ms: self.since_unix_ms,
            ..Default::default()
        }
    }

    fn register(&self) -> v1::AgentMessage {
        v1::AgentMessage {
            msg: Some(Out::Register(v1::Register {
                host_id: self.host.clone(),
                labels: HashMap::from([("role".to_owned(), "sim".to_owned())]),
                version: Some(flotilla_proto::version_info(env!("CARGO_PKG_VERSION"), ["driver.sim".to_owned()])),
                instance_id: self.instance.clone(),
                inventory: vec![self.instance()],
                highest_term: self.highest_term,
                running_command_ids: self.running.iter().cloned().collect(),
            })),
        }
    }

    async fn run(mut self) {
        let mut attempt: u32 = 0;
        let mut hint: Option<String> = None;
        // Like `flotilla-agent`: dials that fail inside one pass over the coordinators
        // wait a short jitter; only a pass in which all failed takes the next doubling;
        // a hint naming a new leader is followed at once.
        let mut failed_in_pass = 0;
        let mut last_hint: Option<String> = None;
        let mut welcomed_term = 0;
        loop {
            let addr = hint.take().unwrap_or_else(|| {
                let a = self.sim.addrs[self.next_addr % self.sim.addrs.len()].clone();
                self.next_addr += 1;
                a
            });
            let started = Instant::now();
            let end = self.session(&addr).await;
            let newer_term = self.highest_term > welcomed_term;
            welcomed_term = welcomed_term.max(self.highest_term);
            if self.sim.trace.contains(&self.idx) {
                let what = match &end {
                    End::Ended { welcomed } => format!("ended (welcomed: {welcomed})"),
                    End::Hint(a) => format!("hint to {a}"),
                    End::NoLeader => "no leader known".to_owned(),
                    End::Stop => "stop".to_owned(),
                };
                report(&format!("  [sim-{:04} at {}] session with {addr}: {what}", self.idx, now_ms()));
            }
            self.sim.welcomed[self.idx].store(0, Ordering::Relaxed);
            let kind = match &end {
                End::Ended { welcomed: true } => 0,
                End::Ended { welcomed: false } => 1,
                End::Hint(_) => 2,
                End::NoLeader => 3,
                End::Stop => return,
            };
            self.sim.ends[kind].fetch_add(1, Ordering::Relaxed);
            let (first, max) = self.sim.backoff;
            let doubling = |attempt: &mut u32| {
                let cap = (first * (1u32 << (*attempt).min(16))).min(max);
                *attempt = attempt.saturating_add(1);
                cap
            };
            let pass = self.sim.addrs.len();
            let failed_dial = |failed: &mut usize, attempt: &mut u32| {
                *failed += 1;
                if *failed >= pass {
                    *failed = 0;
                    doubling(attempt)
                } else {
                    first
                }
            };
            let cap = match end {
                End::Stop => return,
                End::Hint(leader) => {
                    let again = last_hint.as_deref() == Some(leader.as_str());
                    last_hint = Some(leader.clone());
                    hint = Some(leader);
                    if again { failed_dial(&mut failed_in_pass, &mut attempt) } else { Duration::ZERO }
                }
                End::NoLeader | End::Ended { welcomed: false } => failed_dial(&mut failed_in_pass, &mut attempt),
                End::Ended { welcomed: true } => {
                    failed_in_pass = 0;
                    last_hint = None;
                    if started.elapsed() >= Duration::from_secs(10) || newer_term {
                        attempt = 0;
                    }
                    doubling(&mut attempt)
                }
            };
            let delay = self.rng.upto(cap);
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    () = &mut sleep => break,
                    Some(result) = self.done_rx.recv() => self.complete(result, None),
                    _ = self.stop.changed() => return,
                }
            }
        }
    }

    /// A held step finished: keep its result until acknowledged, send it if possible.
    fn complete(&mut self, result: v1::StepResult, live: Option<&mpsc::Sender<v1::AgentMessage>>) {
        self.running.remove(&result.command_id);
        if let Some(svc) = &result.service
            && svc.service == SERVICE
            && svc.version != self.version
        {
            self.version.clone_from(&svc.version);
            self.since_unix_ms = svc.started_unix_ms;
            self.inventory_dirty = true;
        }
        self.finished.insert(result.command_id.clone(), result.clone());
        self.unacked.insert(result.command_id.clone(), result.clone());
        if let Some(tx) = live {
            self.send_result(tx, result);
        }
    }

    fn send_result(&self, tx: &mpsc::Sender<v1::AgentMessage>, result: v1::StepResult) {
        lock(&self.sim.answered).entry(result.command_id.clone()).or_insert_with(now_ms);
        self.sim.results.fetch_add(1, Ordering::Relaxed);
        let _ = tx.try_send(v1::AgentMessage { msg: Some(Out::Result(result)) });
    }

    fn result_for(&self, step: &v1::Step) -> v1::StepResult {
        let now = now_ms();
        let service = match &step.action {
            Some(Action::Deploy(d)) => Some(v1::ServiceInstance {
                service: d.service.clone(),
                version: d.version.clone(),
                state: v1::ServiceRunState::Running as i32,
                pid: 20_000 + u32::try_from(self.idx).unwrap_or(0),
                started_unix_ms: now,
                provides: d.provides.clone(),
                kept_versions: vec![self.version.clone()],
                restarts: 0,
            }),
            Some(Action::Rollback(r)) if !r.to_version.is_empty() => {
                Some(v1::ServiceInstance { version: r.to_version.clone(), started_unix_ms: now, ..self.instance() })
            }
            Some(Action::Bake(_) | Action::Rollback(_)) => Some(self.instance()),
            _ => None,
        };
        v1::StepResult {
            command_id: step.command_id.clone(),
            term: step.term,
            outcome: v1::StepOutcome::Succeeded as i32,
            service,
            started_unix_ms: now,
            finished_unix_ms: now,
            ..Default::default()
        }
    }

    fn on_step(&mut self, step: &v1::Step, tx: &mpsc::Sender<v1::AgentMessage>) {
        self.sim.saw_step(step, Instant::now());
        if step.term < self.highest_term {
            let refused = v1::StepResult {
                command_id: step.command_id.clone(),
                term: step.term,
                outcome: v1::StepOutcome::Refused as i32,
                reason: format!("term {} is below the highest term seen, {}", step.term, self.highest_term),
                ..Default::default()
            };
            self.send_result(tx, refused);
            return;
        }
        self.highest_term = step.term;
        if let Some(done) = self.finished.get(&step.command_id) {
            let replay = v1::StepResult { replayed: true, ..done.clone() };
            self.send_result(tx, replay);
            return;
        }
        if !self.running.insert(step.command_id.clone()) {
            return; // Still executing: its result comes when it is done.
        }
        lock(&self.sim.executed)
            .entry(step.release_id.clone())
            .or_default()
            .entry(self.idx)
            .or_default()
            .push(step.command_id.clone());
        let hold = self.sim.hold;
        if hold.is_zero() {
            let result = self.result_for(step);
            self.complete(result, Some(tx));
        } else {
            let done = self.done_tx.clone();
            let mut result = self.result_for(step);
            tokio::spawn(async move {
                tokio::time::sleep(hold).await;
                let now = now_ms();
                result.finished_unix_ms = now;
                if let Some(s) = result.service.as_mut() {
                    s.started_unix_ms = now;
                }
                let _ = done.send(result);
            });
        }
    }

    async fn session(&mut self, addr: &str) -> End {
        let Ok(ep) = endpoint(addr, &ClientSecurity::Insecure) else { return End::Ended { welcomed: false } };
        let connected = tokio::select! {
            c = ep.connect() => c,
            _ = self.stop.changed() => return End::Stop,
        };
        let Ok(ch) = connected else { return End::Ended { welcomed: false } };
        let (tx, rx) = mpsc::channel::<v1::AgentMessage>(1024);
        let _ = tx.try_send(self.register());
        let outgoing = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
        let mut client = AgentLinkClient::new(ch);
        let opened = tokio::select! {
            o = client.session(outgoing) => o,
            _ = self.stop.changed() => return End::Stop,
        };
        let Ok(resp) = opened else { return End::Ended { welcomed: false } };
        let mut inbound = resp.into_inner();
        let first = tokio::select! {
            f = tokio::time::timeout(Duration::from_secs(15), inbound.message()) => f,
            _ = self.stop.changed() => return End::Stop,
        };
        let welcome = match first {
            Ok(Ok(Some(v1::CoordinatorMessage { msg: Some(In::Welcome(w)) }))) => w,
            Ok(Ok(Some(v1::CoordinatorMessage { msg: Some(In::LeaderHint(h)) }))) => {
                return if h.leader_id != 0 && !h.leader_addr.is_empty() {
                    End::Hint(h.leader_addr)
                } else {
                    End::NoLeader
                };
            }
            _ => return End::Ended { welcomed: false },
        };
        self.sim.saw_welcome(self.idx, &welcome, Instant::now());
        if self.sim.trace.contains(&self.idx) {
            report(&format!("  [sim-{:04} at {}] welcomed by {addr} (node {})", self.idx, now_ms(), welcome.node_id));
        }
        self.highest_term = self.highest_term.max(welcome.term);
        self.inventory_dirty = false; // Register carried it.
        for result in self.unacked.values() {
            self.send_result(&tx, result.clone());
        }
        let every = Duration::from_millis(welcome.heartbeat_interval_ms.max(100));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seq = 0;
        loop {
            tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(v1::CoordinatorMessage { msg: Some(msg) })) => match msg {
                        In::Step(step) => self.on_step(&step, &tx),
                        In::Ack(ack) => {
                            for cid in ack.command_ids {
                                self.unacked.remove(&cid);
                            }
                        }
                        In::LeaderHint(h) if h.leader_id != 0 && !h.leader_addr.is_empty() => {
                            return End::Hint(h.leader_addr);
                        }
                        In::LeaderHint(_) => return End::NoLeader,
                        In::Cancel(_) | In::Welcome(_) => {}
                    },
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => return End::Ended { welcomed: true },
                },
                Some(result) = self.done_rx.recv() => self.complete(result, Some(&tx)),
                _ = ticker.tick() => {
                    seq += 1;
                    let inventory = (self.inventory_dirty && self.sim.send_inventory)
                        .then(|| v1::Inventory { services: vec![self.instance()] });
                    let hb = v1::Heartbeat {
                        seq,
                        sent_unix_ms: now_ms(),
                        running_command_ids: self.running.iter().cloned().collect(),
                        inventory,
                    };
                    if tx.try_send(v1::AgentMessage { msg: Some(Out::Heartbeat(hb)) }).is_ok() {
                        self.inventory_dirty = false;
                    }
                }
                _ = self.stop.changed() => return End::Stop,
            }
        }
    }
}

/// Starts `n` agents, a few milliseconds apart.
/// Starts `n` agents, `FLOTILLA_SIM_SPAWN_RATE` a second (1,000; in steps of 50, as
/// a fleet's agents start over a while, not in one instant).
/// Starts `agents` simulated agents and waits until leader `leader` (at `addr`) has
/// welcomed every one and its fleet shows them all at the first version.
async fn welcome_all(
    sim: &Arc<Sim>,
    agents: usize,
    stop: &watch::Receiver<bool>,
    leader: u64,
    addr: &str,
) -> anyhow::Result<()> {
    spawn_agents(sim, agents, stop).await;
    eventually(Duration::from_secs(120), "every agent welcomed by the leader", || {
        let n = sim.connected_to(leader);
        async move { (n == agents).then_some(()) }
    })
    .await?;
    fleet_at(addr, agents, Some(FIRST_VERSION), Duration::from_secs(60)).await
}

async fn spawn_agents(sim: &Arc<Sim>, n: usize, stop: &watch::Receiver<bool>) {
    const STEP: usize = 50;
    let rate = env_or("FLOTILLA_SIM_SPAWN_RATE", 1_000).max(1);
    let pause = Duration::from_secs_f64(STEP as f64 / rate as f64);
    for idx in 0..n {
        let agent = Agent::new(sim.clone(), idx, stop.clone());
        tokio::spawn(agent.run());
        if idx % STEP == STEP - 1 {
            tokio::time::sleep(pause).await;
        }
    }
}

// ---------------------------------------------------------------- cluster helpers

fn addrs(cluster: &TestCluster) -> Vec<String> {
    cluster.nodes.values().map(|n| n.addr.clone()).collect()
}

fn addr_of(cluster: &TestCluster, id: u64) -> anyhow::Result<String> {
    cluster.nodes.get(&id).map(|n| n.addr.clone()).ok_or_else(|| anyhow!("no node {id}"))
}

fn spec(name: &str, version: &str, canary: &str, batches: &[&str]) -> String {
    let batches: Vec<String> = batches.iter().map(|b| format!("\"{b}\"")).collect();
    format!(
        "release = \"{name}\"\n\n[[service]]\nname = \"{SERVICE}\"\nversion = \"{version}\"\nhosts = {{ role = \"sim\" }}\n\
         artifact = {{ url = \"file:///noop.tgz\", sha256 = \"{}\" }}\nrun = {{ command = \"bin/noop\" }}\n\
         canary = {canary}\nbatches = [{}]\nbake = \"0s\"\n",
        "0".repeat(64),
        batches.join(", ")
    )
}

async fn create(addr: &str, name: &str, spec_toml: String) -> anyhow::Result<String> {
    let mut client = ReleasesClient::new(channel(addr, &ClientSecurity::Insecure)?);
    let req = v1::CreateRequest { spec_toml, file_name: format!("{name}.toml"), idempotency_key: name.to_owned() };
    let resp = client.create(req).await.map_err(|s| anyhow!("Create: {}", s.message()))?.into_inner();
    resp.release.map(|r| r.id).ok_or_else(|| anyhow!("Create answered no release"))
}

fn terminal(kind: i32) -> bool {
    matches!(
        EventKind::try_from(kind),
        Ok(EventKind::ReleaseSucceeded
            | EventKind::ReleaseRolledBack
            | EventKind::ReleaseFailed
            | EventKind::ReleaseAborted)
    )
}

/// Follows a release's events into `tx` (with the instant each arrived), resuming on
/// another node when a stream breaks, until the terminal event.
async fn follow(addrs: Vec<String>, release: String, tx: mpsc::UnboundedSender<(v1::ReleaseEvent, Instant)>) {
    let mut after = 0;
    let mut turn = 0;
    loop {
        let addr = &addrs[turn % addrs.len()];
        if let Ok(ch) = channel(addr, &ClientSecurity::Insecure) {
            let mut client = ReleasesClient::new(ch);
            let req = v1::WatchRequest { release_id: release.clone(), after_index: after };
            if let Ok(resp) = client.watch(req).await {
                let mut stream = resp.into_inner();
                while let Ok(Some(e)) = stream.message().await {
                    after = e.index;
                    let end = terminal(e.kind);
                    if tx.send((e, Instant::now())).is_err() || end {
                        return;
                    }
                }
            }
        }
        turn += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the leader's fleet lists `n` online hosts all running `version`.
async fn fleet_at(addr: &str, n: usize, version: Option<&str>, timeout: Duration) -> anyhow::Result<()> {
    let ch = channel(addr, &ClientSecurity::Insecure)?;
    eventually(timeout, &format!("{n} online hosts at {SERVICE} {version:?}"), || {
        let mut client = FleetClient::new(ch.clone());
        async move {
            let req = v1::ListAgentsRequest { labels: HashMap::new(), include_lost: false };
            let hosts = client.list_agents(req).await.ok()?.into_inner().hosts;
            let at = hosts
                .iter()
                .filter(|h| h.state == v1::HostState::Online as i32)
                .filter(|h| h.services.iter().any(|s| s.service == SERVICE && version.is_none_or(|v| s.version == v)))
                .count();
            (at >= n).then_some(())
        }
    })
    .await
}

// ---------------------------------------------------------------- overhead

/// One batch as the events show it (times in ms since the release's creation event).
#[derive(Debug, Default)]
struct BatchTimes {
    name: String,
    hosts: usize,
    started: i64,
    last_arrival: i64,
    last_answer: i64,
    last_success: i64,
    done: i64,
}

fn ms_between(a: i64, b: i64) -> f64 {
    (b - a) as f64
}

fn batch_times(sim: &Sim, events: &[v1::ReleaseEvent], base: i64) -> Vec<BatchTimes> {
    let arrivals = lock(&sim.arrivals);
    let answered = lock(&sim.answered);
    let mut out: Vec<BatchTimes> = Vec::new();
    for e in events {
        match EventKind::try_from(e.kind) {
            Ok(EventKind::BatchStarted) => {
                let last = |m: &HashMap<String, i64>| {
                    e.command_ids.iter().filter_map(|c| m.get(c)).max().map_or(-1, |t| t - base)
                };
                out.push(BatchTimes {
                    name: e.batch.clone(),
                    hosts: e.command_ids.len(),
                    started: e.at_unix_ms - base,
                    last_arrival: last(&arrivals),
                    last_answer: last(&answered),
                    ..BatchTimes::default()
                });
            }
            Ok(EventKind::HostSucceeded | EventKind::HostBaked) => {
                if let Some(b) = out.last_mut() {
                    b.last_success = e.at_unix_ms - base;
                }
            }
            Ok(EventKind::BatchDone) => {
                if let Some(b) = out.last_mut() {
                    b.done = e.at_unix_ms - base;
                }
            }
            _ => {}
        }
    }
    out
}

/// The leader once elected: its node id, address and process id, and the followers'
/// process ids.
async fn leader_processes(cluster: &TestCluster) -> anyhow::Result<(u64, String, u32, Vec<u32>)> {
    let leader = cluster.wait_leader(Duration::from_secs(60)).await?;
    let leader_addr = addr_of(cluster, leader)?;
    let pid = coordinator_pid(&leader_addr).ok_or_else(|| anyhow!("no process listens on {leader_addr}"))?;
    let followers: Vec<u32> =
        addrs(cluster).iter().filter(|a| **a != leader_addr).filter_map(|a| coordinator_pid(a)).collect();
    Ok((leader, leader_addr, pid, followers))
}

async fn overhead(cluster: &TestCluster, agents: usize, runs: usize) -> anyhow::Result<()> {
    let (leader, leader_addr, pid, followers) = leader_processes(cluster).await?;
    let tck = clock_ticks() as f64;
    let sim = Sim::new(addrs(cluster), Duration::ZERO, agents);
    let (stop_tx, stop) = watch::channel(false);
    let me = std::process::id();
    let registering = Instant::now();
    let before_reg = proc_sample(pid).unwrap_or_default();
    welcome_all(&sim, agents, &stop, leader, &leader_addr).await?;
    let after_reg = proc_sample(pid).unwrap_or_default();
    report(&format!(
        "overhead: {agents} agents registered in {:.1} s (leader node {leader}, pid {pid}: cpu {:.2} s, rss {} -> {} KiB); loadavg {}",
        registering.elapsed().as_secs_f64(),
        (after_reg.cpu_ticks - before_reg.cpu_ticks) as f64 / tck,
        before_reg.rss_kb,
        after_reg.rss_kb,
        loadavg()
    ));
    report(&format!("  agent traffic: {}", sim.traffic()));
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut totals = Vec::new();
    let mut by_events = Vec::new();
    let mut cpus = Vec::new();
    let mut follower_cpus = Vec::new();
    let mut self_cpus = Vec::new();
    let mut peaks = Vec::new();
    let mut rss_after = Vec::new();
    let mut phases: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut previous = FIRST_VERSION.to_owned();
    for run in 1..=runs {
        let version = format!("1.{run}.0");
        fleet_at(&leader_addr, agents, sim.send_inventory.then_some(previous.as_str()), Duration::from_secs(60))
            .await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let load = loadavg();
        let before = proc_sample(pid).ok_or_else(|| anyhow!("leader pid {pid} gone"))?;
        let before_f: u64 = followers.iter().filter_map(|p| proc_sample(*p)).map(|s| s.cpu_ticks).sum();
        let before_me = proc_sample(me).unwrap_or_default();
        let (peak_tx, peak_rx) = watch::channel(false);
        let sampler = tokio::spawn(async move {
            let mut peak = 0;
            loop {
                if let Some(s) = proc_sample(pid) {
                    peak = peak.max(s.rss_kb);
                }
                if *peak_rx.borrow() {
                    return peak;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });

        let name = format!("overhead-{run}-{}", now_ms());
        let t0 = Instant::now();
        let id = create(&leader_addr, &name, spec(&name, &version, "\"1%\"", &["10%", "100%"])).await?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(follow(vec![leader_addr.clone()], id.clone(), tx));
        let mut events = Vec::new();
        let mut finished_at = None;
        while let Some((e, at)) = tokio::time::timeout(Duration::from_secs(300), rx.recv()).await? {
            let end = terminal(e.kind);
            events.push(e);
            if end {
                finished_at = Some(at);
                break;
            }
        }
        let finished_at = finished_at.ok_or_else(|| anyhow!("the event stream of {id} ended early"))?;
        let total = finished_at - t0;
        let after = proc_sample(pid).ok_or_else(|| anyhow!("leader pid {pid} gone"))?;
        let after_f: u64 = followers.iter().filter_map(|p| proc_sample(*p)).map(|s| s.cpu_ticks).sum();
        let after_me = proc_sample(me).unwrap_or_default();
        let _ = peak_tx.send(true);
        let peak = sampler.await.unwrap_or(0);
        let last = events.last().ok_or_else(|| anyhow!("no events"))?;
        if EventKind::try_from(last.kind) != Ok(EventKind::ReleaseSucceeded) {
            bail!("release {id} ended with {:?}: {}", EventKind::try_from(last.kind), last.message);
        }
        let base = events.first().map_or(0, |e| e.at_unix_ms);
        let committed_span = last.at_unix_ms - base;
        let cpu = (after.cpu_ticks - before.cpu_ticks) as f64 / tck;
        totals.push(total.as_secs_f64() * 1e3);
        by_events.push(committed_span as f64);
        cpus.push(cpu);
        follower_cpus.push((after_f - before_f) as f64 / tck / followers.len().max(1) as f64);
        self_cpus.push((after_me.cpu_ticks - before_me.cpu_ticks) as f64 / tck);
        peaks.push(peak as f64 / 1024.0);
        rss_after.push(after.rss_kb as f64 / 1024.0);
        report(&format!(
            "overhead run {run}: Create -> SUCCEEDED {:.0} ms (events: created -> succeeded {committed_span} ms); \
             leader cpu {cpu:.2} s, rss {:.1} -> {:.1} MiB (peak {:.1}, VmHWM {:.1}); followers {:.2} s cpu each; \
             agents (this process) {:.2} s cpu; {} events ({} LEADER_CHANGED); loadavg before {load}",
            total.as_secs_f64() * 1e3,
            before.rss_kb as f64 / 1024.0,
            after.rss_kb as f64 / 1024.0,
            peak as f64 / 1024.0,
            after.hwm_kb as f64 / 1024.0,
            follower_cpus.last().copied().unwrap_or_default(),
            self_cpus.last().copied().unwrap_or_default(),
            events.len(),
            events.iter().filter(|e| EventKind::try_from(e.kind) == Ok(EventKind::LeaderChanged)).count()
        ));
        report(&format!("  agent traffic so far: {}", sim.traffic()));
        let batches = batch_times(&sim, &events, base);
        let mut prev_done = 0;
        for b in &batches {
            report(&format!(
                "  batch {:>6} ({:>4} hosts): +{:>5} started (gap {:>4} ms) | last step received +{:>5} | last result sent +{:>5} | \
                 last host committed +{:>5} | done +{:>5}  => dispatch {:>4} ms, results committed {:>5} ms, decide {:>3} ms",
                b.name,
                b.hosts,
                b.started,
                b.started - prev_done,
                b.last_arrival,
                b.last_answer,
                b.last_success,
                b.done,
                b.last_arrival - b.started,
                b.last_success - b.last_answer,
                b.done - b.last_success,
            ));
            let p = |k: &str| format!("{}:{k}", b.name);
            phases.entry(p("0 gap before start")).or_default().push(ms_between(prev_done, b.started));
            phases.entry(p("1 dispatch")).or_default().push(ms_between(b.started, b.last_arrival));
            phases.entry(p("2 answer")).or_default().push(ms_between(b.last_arrival, b.last_answer));
            phases.entry(p("3 commit results")).or_default().push(ms_between(b.last_answer, b.last_success));
            phases.entry(p("4 decide done")).or_default().push(ms_between(b.last_success, b.done));
            phases.entry(p("batch total")).or_default().push(ms_between(b.started, b.done));
            prev_done = b.done;
        }
        phases
            .entry("end: last batch done -> succeeded".to_owned())
            .or_default()
            .push(ms_between(prev_done, committed_span));
        previous = version;
    }
    report(&format!("overhead summary ({agents} agents, {runs} runs, batches 1% / 10% / 100%, bake 0):"));
    report(&format!("  Create -> SUCCEEDED seen by the client: {}", spread(&totals, "ms")));
    report(&format!("  created -> succeeded (event timestamps): {}", spread(&by_events, "ms")));
    report(&format!("  leader CPU time during the release: {}", spread(&cpus, "s")));
    report(&format!("  follower CPU time (each): {}", spread(&follower_cpus, "s")));
    report(&format!("  simulated agents (this process) CPU time: {}", spread(&self_cpus, "s")));
    report(&format!("  leader RSS peak during the release: {}", spread(&peaks, "MiB")));
    report(&format!("  leader RSS after the release: {}", spread(&rss_after, "MiB")));
    for (phase, v) in &phases {
        report(&format!("  {phase}: {}", spread(v, "ms")));
    }
    report(&format!("  agent traffic: {}", sim.traffic()));
    let _ = stop_tx.send(true);
    Ok(())
}

// ---------------------------------------------------------------- services

/// A release of `services` no-op services (`svc-00`, ...) at `version` to every
/// simulated host, in chains of five hard dependencies.
fn many_services_spec(name: &str, services: usize, version: &str) -> String {
    let mut spec = format!("release = \"{name}\"\n");
    for i in 0..services {
        spec.push_str(&format!(
            "\n[[service]]\nname = \"svc-{i:02}\"\nversion = \"{version}\"\nhosts = {{ role = \"sim\" }}\n\
             artifact = {{ url = \"file:///noop.tgz\", sha256 = \"{}\" }}\nrun = {{ command = \"bin/noop\" }}\n\
             canary = \"1%\"\nbatches = [\"10%\", \"100%\"]\nbake = \"0s\"\n",
            "0".repeat(64)
        ));
        if i % 5 != 0 {
            spec.push_str(&format!("depends_on = [{{ service = \"svc-{:02}\", kind = \"hard\" }}]\n", i - 1));
        }
    }
    spec
}

async fn many_services(cluster: &TestCluster, agents: usize, services: usize, runs: usize) -> anyhow::Result<()> {
    let (leader, leader_addr, pid, followers) = leader_processes(cluster).await?;
    let tck = clock_ticks() as f64;
    let sim = Sim::new(addrs(cluster), Duration::ZERO, agents);
    let (stop_tx, stop) = watch::channel(false);
    welcome_all(&sim, agents, &stop, leader, &leader_addr).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (mut totals, mut cpus, mut follower_cpus) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=runs {
        let load = loadavg();
        let before = proc_sample(pid).ok_or_else(|| anyhow!("leader pid {pid} gone"))?;
        let before_f: u64 = followers.iter().filter_map(|p| proc_sample(*p)).map(|s| s.cpu_ticks).sum();
        let name = format!("services-{run}-{}", now_ms());
        let t0 = Instant::now();
        let id = create(&leader_addr, &name, many_services_spec(&name, services, &format!("1.{run}.0"))).await?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(follow(vec![leader_addr.clone()], id.clone(), tx));
        let mut last = None;
        let mut events = 0;
        while let Some((e, _)) = tokio::time::timeout(Duration::from_secs(600), rx.recv()).await? {
            events += 1;
            let end = terminal(e.kind);
            last = Some(e);
            if end {
                break;
            }
        }
        let took = t0.elapsed();
        let last = last.ok_or_else(|| anyhow!("no events for {id}"))?;
        if EventKind::try_from(last.kind) != Ok(EventKind::ReleaseSucceeded) {
            bail!("release {id} ended with {:?}: {}", EventKind::try_from(last.kind), last.message);
        }
        let after = proc_sample(pid).ok_or_else(|| anyhow!("leader pid {pid} gone"))?;
        let after_f: u64 = followers.iter().filter_map(|p| proc_sample(*p)).map(|s| s.cpu_ticks).sum();
        totals.push(took.as_secs_f64() * 1e3);
        cpus.push((after.cpu_ticks - before.cpu_ticks) as f64 / tck);
        follower_cpus.push((after_f - before_f) as f64 / tck / followers.len().max(1) as f64);
        report(&format!(
            "services run {run}: {services} services x {agents} hosts, Create -> SUCCEEDED {:.0} ms; leader cpu {:.2} s, \
             rss {:.1} -> {:.1} MiB; followers {:.2} s cpu each; {events} events; loadavg before {load}",
            took.as_secs_f64() * 1e3,
            cpus[run - 1],
            before.rss_kb as f64 / 1024.0,
            after.rss_kb as f64 / 1024.0,
            follower_cpus[run - 1],
        ));
    }
    report(&format!("services summary ({services} services x {agents} hosts, {runs} runs):"));
    report(&format!("  Create -> SUCCEEDED: {}", spread(&totals, "ms")));
    report(&format!("  leader CPU time: {}", spread(&cpus, "s")));
    report(&format!("  follower CPU time (each): {}", spread(&follower_cpus, "s")));
    report(&format!("  agent traffic: {}", sim.traffic()));
    let _ = stop_tx.send(true);
    Ok(())
}

// ---------------------------------------------------------------- dashboard

/// `GET url` `n` times, one after the other: each answer's time (ms) and the bytes of
/// the last.
async fn fetch_times(client: &reqwest::Client, url: &str, n: usize) -> anyhow::Result<(Vec<f64>, usize)> {
    let (mut times, mut bytes) = (Vec::new(), 0);
    for _ in 0..n {
        let t0 = Instant::now();
        let resp = client.get(url).send().await?;
        if !resp.status().is_success() {
            bail!("GET {url}: {}", resp.status());
        }
        bytes = resp.bytes().await?.len();
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok((times, bytes))
}

/// A browser on a release page, as `app.js` behaves: follows the event stream and, on
/// each batch of events, fetches the live part again (one fetch at a time, one more if
/// events came meanwhile). Counts the fetches and their bytes until `stop`.
async fn viewer(
    client: reqwest::Client,
    base: String,
    id: String,
    fetches: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    stop: watch::Receiver<bool>,
) {
    let Ok(mut stream) = client.get(format!("{base}/ui/releases/{id}/events")).send().await else { return };
    let pending = Arc::new(tokio::sync::Notify::new());
    let refresher = {
        let (client, pending, fetches, bytes, mut stop) =
            (client.clone(), pending.clone(), fetches.clone(), bytes.clone(), stop.clone());
        let url = format!("{base}/ui/releases/{id}?part=live");
        tokio::spawn(async move {
            // As app.js: at most every 2 s, and no more often than ten times as long as
            // the last fetch took.
            let mut gap = Duration::ZERO;
            loop {
                tokio::select! {
                    () = pending.notified() => {}
                    _ = stop.changed() => return,
                }
                tokio::time::sleep(gap).await;
                let t0 = Instant::now();
                if let Ok(resp) = client.get(&url).send().await
                    && let Ok(body) = resp.bytes().await
                {
                    fetches.fetch_add(1, Ordering::Relaxed);
                    bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                }
                gap = (t0.elapsed() * 10).max(Duration::from_secs(2));
            }
        })
    };
    let mut stop = stop;
    loop {
        tokio::select! {
            chunk = stream.chunk() => match chunk {
                Ok(Some(c)) if c.windows(14).any(|w| w == b"event: release") => pending.notify_one(),
                Ok(Some(_)) => {}
                _ => break,
            },
            _ = stop.changed() => break,
        }
    }
    refresher.abort();
}

/// The dashboard: the release page of a `services` × `agents` release (render time and
/// bytes, on the leader and a follower), and what each connected viewer costs the
/// coordinator it watches on during such a release (its CPU time with `viewers` browsers
/// on it against none, alternating).
async fn dashboard(
    cluster: &TestCluster,
    agents: usize,
    services: usize,
    viewers: usize,
    runs: usize,
) -> anyhow::Result<()> {
    let (leader, leader_addr, leader_pid, _) = leader_processes(cluster).await?;
    let follower = cluster.nodes.keys().copied().find(|&id| id != leader).ok_or_else(|| anyhow!("no follower"))?;
    let follower_pid = coordinator_pid(&addr_of(cluster, follower)?).ok_or_else(|| anyhow!("no follower process"))?;
    let tck = clock_ticks() as f64;
    let sim = Sim::new(addrs(cluster), Duration::ZERO, agents);
    let (stop_tx, stop) = watch::channel(false);
    welcome_all(&sim, agents, &stop, leader, &leader_addr).await?;
    // Settle time: the registrations' burst of entries is applied and snapshotted
    // before anything is measured.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
    let release = |version: String| {
        let name = format!("dashboard-{}-{}", version.replace('.', "-"), now_ms());
        let spec = many_services_spec(&name, services, &version);
        let addr = leader_addr.clone();
        async move { create(&addr, &name, spec).await }
    };
    let finish = |id: String| {
        let addr = leader_addr.clone();
        async move {
            let (tx, mut rx) = mpsc::unbounded_channel();
            tokio::spawn(follow(vec![addr], id.clone(), tx));
            while let Some((e, _)) = tokio::time::timeout(Duration::from_secs(600), rx.recv()).await? {
                if terminal(e.kind) {
                    return if EventKind::try_from(e.kind) == Ok(EventKind::ReleaseSucceeded) {
                        Ok(())
                    } else {
                        Err(anyhow!("release {id} ended: {}", e.message))
                    };
                }
            }
            Err(anyhow!("release {id}: its events stopped"))
        }
    };

    // The page of a finished release, every host of every service on it.
    let id = release("1.1.0".into()).await?;
    finish(id.clone()).await?;
    for (node, name) in [(leader, "leader"), (follower, "follower")] {
        let url = cluster.http_url(node, &format!("/ui/releases/{id}")).ok_or_else(|| anyhow!("no --http"))?;
        fetch_times(&http, &url, 3).await?; // warm
        let (page, bytes) = fetch_times(&http, &url, 20).await?;
        let (live, live_bytes) = fetch_times(&http, &format!("{url}?part=live"), 20).await?;
        report(&format!(
            "dashboard page on the {name} ({services} services x {agents} hosts): {}, {:.0} kB; live part: {}, {:.0} kB",
            spread(&page, "ms"),
            bytes as f64 / 1024.0,
            spread(&live, "ms"),
            live_bytes as f64 / 1024.0
        ));
    }

    // Viewers during a release: the watched coordinator's CPU with them against none.
    for (node, name, pid) in [(leader, "leader", leader_pid), (follower, "follower", follower_pid)] {
        let base = cluster.http_url(node, "").ok_or_else(|| anyhow!("no --http"))?;
        let (mut with, mut without, mut fetched) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..runs * 2 {
            let watched = run % 2 == 1;
            let id = release(format!("2.{}.{run}", node)).await?;
            let (fetches, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
            let (viewers_stop, viewers_stopped) = watch::channel(false);
            let before = proc_sample(pid).ok_or_else(|| anyhow!("pid {pid} gone"))?;
            if watched {
                for _ in 0..viewers {
                    let args = (http.clone(), base.clone(), id.clone(), fetches.clone(), bytes.clone());
                    tokio::spawn(viewer(args.0, args.1, args.2, args.3, args.4, viewers_stopped.clone()));
                }
            }
            finish(id).await?;
            // The viewers' last refreshes after the end.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = viewers_stop.send(true);
            let after = proc_sample(pid).ok_or_else(|| anyhow!("pid {pid} gone"))?;
            let cpu = (after.cpu_ticks - before.cpu_ticks) as f64 / tck;
            if watched {
                with.push(cpu);
                let n = fetches.load(Ordering::Relaxed);
                fetched.push(n as f64 / viewers as f64);
                report(&format!(
                    "dashboard {name} run {run}: {viewers} viewers, cpu {cpu:.2} s, {n} live fetches ({:.0} kB)",
                    bytes.load(Ordering::Relaxed) as f64 / 1024.0
                ));
            } else {
                without.push(cpu);
                report(&format!("dashboard {name} run {run}: no viewer, cpu {cpu:.2} s"));
            }
        }
        let per = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        report(&format!(
            "dashboard summary on the {name}: release cpu with {viewers} viewers {}, without {}; about {:.1} ms of cpu per viewer per release, {:.1} live fetches each",
            spread(&with, "s"),
            spread(&without, "s"),
            (per(&with) - per(&without)) * 1e3 / viewers as f64,
            per(&fetched),
        ));
    }
    let _ = stop_tx.send(true);
    Ok(())
}

// ---------------------------------------------------------------- history

/// The size of the newest snapshot file in `dir` (bytes), if any.
fn newest_snapshot(dir: &std::path::Path) -> Option<u64> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().ends_with(".tmp"))
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            meta.is_file().then(|| (meta.modified().ok(), meta.len()))
        })
        .max()
        .map(|(_, len)| len)
}

async fn history(cluster: &TestCluster, agents: usize, releases: usize) -> anyhow::Result<()> {
    let leader = cluster.wait_leader(Duration::from_secs(60)).await?;
    let leader_addr = addr_of(cluster, leader)?;
    let pid = coordinator_pid(&leader_addr).ok_or_else(|| anyhow!("no process listens on {leader_addr}"))?;
    let snapshots = cluster.dir().join(format!("node-{leader}")).join("snapshots");
    let sim = Sim::new(addrs(cluster), Duration::ZERO, agents);
    let (stop_tx, stop) = watch::channel(false);
    welcome_all(&sim, agents, &stop, leader, &leader_addr).await?;
    let started = Instant::now();
    let mut rss = Vec::new();
    let mut snap = Vec::new();
    let mut took = Vec::new();
    let mut previous = FIRST_VERSION.to_owned();
    for run in 1..=releases {
        let version = format!("1.{run}.0");
        fleet_at(&leader_addr, agents, sim.send_inventory.then_some(previous.as_str()), Duration::from_secs(60))
            .await?;
        let name = format!("history-{run}");
        let t0 = Instant::now();
        let id = create(&leader_addr, &name, spec(&name, &version, "\"1%\"", &["10%", "100%"])).await?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(follow(vec![leader_addr.clone()], id.clone(), tx));
        let mut last = None;
        while let Some((e, _)) = tokio::time::timeout(Duration::from_secs(300), rx.recv()).await? {
            let end = terminal(e.kind);
            last = Some(e);
            if end {
                break;
            }
        }
        let last = last.ok_or_else(|| anyhow!("no events for {id}"))?;
        if EventKind::try_from(last.kind) != Ok(EventKind::ReleaseSucceeded) {
            bail!("release {id} ended with {:?}: {}", EventKind::try_from(last.kind), last.message);
        }
        took.push(t0.elapsed().as_secs_f64() * 1e3);
        let sample = proc_sample(pid).ok_or_else(|| anyhow!("leader pid {pid} gone"))?;
        rss.push(sample.rss_kb as f64 / 1024.0);
        snap.push(newest_snapshot(&snapshots).unwrap_or(0) as f64 / 1024.0);
        if run % 10 == 0 || run == 1 {
            report(&format!(
                "history: {run} releases of {agents} hosts ({:.0} s): leader rss {:.1} MiB, newest snapshot {:.0} KiB, \
                 this release {:.0} ms; loadavg {}",
                started.elapsed().as_secs_f64(),
                rss[run - 1],
                snap[run - 1],
                took[run - 1],
                loadavg()
            ));
        }
        previous = version;
    }
    // Flat or not: the median of the 20 releases after the first 20 beside the median
    // of the last 20 (single samples swing with the allocator's timing).
    let window = |v: &[f64], from: usize| {
        let mut w: Vec<f64> = v[from.min(v.len() - 1)..(from + 20).min(v.len())].to_vec();
        w.sort_by(f64::total_cmp);
        w[w.len() / 2]
    };
    let growth = |v: &[f64]| {
        let early = window(v, 20);
        let late = window(v, v.len().saturating_sub(20));
        let max = v.iter().skip(20).copied().fold(f64::MIN, f64::max);
        format!(
            "median of releases 21-40 {early:.1}, of the last 20 {late:.1} ({:+.1} %); highest after release 20 {max:.1}",
            (late - early) / early * 100.0
        )
    };
    report(&format!("history summary ({releases} releases of {agents} hosts each, one after the other):"));
    report(&format!("  leader RSS (MiB) {}", growth(&rss)));
    report(&format!("  newest snapshot (KiB) {}", growth(&snap)));
    report(&format!("  Create -> SUCCEEDED: {}", spread(&took, "ms")));
    let _ = stop_tx.send(true);
    Ok(())
}

// ---------------------------------------------------------------- failover

/// How the failover bench stops the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// `kill -9`.
    Kill,
    /// SIGTERM: the graceful stop, which hands the leadership over.
    Term,
    /// Alternating, `kill -9` on odd trials and SIGTERM on even ones.
    Both,
}

impl Stop {
    fn from_env() -> anyhow::Result<Self> {
        match std::env::var("FLOTILLA_FAILOVER_STOP").as_deref() {
            Err(_) | Ok("kill") => Ok(Self::Kill),
            Ok("term") => Ok(Self::Term),
            Ok("both") => Ok(Self::Both),
            Ok(other) => bail!("FLOTILLA_FAILOVER_STOP={other}: use kill, term or both"),
        }
    }
}

async fn failover(
    cluster: &mut TestCluster,
    trials: usize,
    agents: usize,
    hold: Duration,
    settle: Duration,
    stopping: Stop,
) -> anyhow::Result<()> {
    let first = cluster.wait_leader(Duration::from_secs(60)).await?;
    let all = addrs(cluster);
    let sim = Sim::new(all.clone(), hold, agents);
    let (stop_tx, stop) = watch::channel(false);
    welcome_all(&sim, agents, &stop, first, &addr_of(cluster, first)?).await?;

    let batches = ["10%", "20%", "30%", "40%", "50%", "60%", "70%", "80%", "90%", "100%"];
    let kill_at_batch = 3; // the third BATCH_STARTED: canary, 10%, then 20%
    // Per series: [kill -9, SIGTERM].
    let mut to_step = [Vec::new(), Vec::new()];
    let mut to_new_command = [Vec::new(), Vec::new()];
    let mut to_welcome = [Vec::new(), Vec::new()];
    let mut to_taken_over = [Vec::new(), Vec::new()];
    let mut release_times = Vec::new();
    for trial in 1..=trials {
        let leader = cluster.wait_leader(Duration::from_secs(60)).await?;
        eventually(Duration::from_secs(60), "every agent connected to the leader", || {
            let n = sim.connected_to(leader);
            async move { (n == agents).then_some(()) }
        })
        .await?;
        let leader_addr = addr_of(cluster, leader)?;
        let name = format!("failover-{trial}-{}", now_ms());
        let version = format!("1.{trial}.0");
        let t0 = Instant::now();
        let id = create(&leader_addr, &name, spec(&name, &version, "1", &batches)).await?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        // The leader first (to see the batch start at once), then the others after the kill.
        let mut order = vec![leader_addr.clone()];
        order.extend(all.iter().filter(|a| **a != leader_addr).cloned());
        tokio::spawn(follow(order, id.clone(), tx));
        let mut events = Vec::new();
        let mut started = 0;
        while started < kill_at_batch {
            let (e, _) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
                .await?
                .ok_or_else(|| anyhow!("event stream ended before batch {kill_at_batch}"))?;
            if EventKind::try_from(e.kind) == Ok(EventKind::BatchStarted) {
                started += 1;
            }
            if terminal(e.kind) {
                bail!("release {id} ended before the kill: {}", e.message);
            }
            events.push(e);
        }
        // Somewhere inside the batch (its agents hold their steps for `hold`).
        let jitter = Rng::new(now_ms().unsigned_abs()).upto(hold / 2);
        tokio::time::sleep(jitter).await;
        let floor = sim.arm();
        let killed_unix = now_ms();
        let killed_at = Instant::now();
        let graceful = match stopping {
            Stop::Kill => false,
            Stop::Term => true,
            Stop::Both => trial % 2 == 0,
        };
        let how = if graceful { "SIGTERM" } else { "kill -9" };
        report(&format!("  stopping node {leader} with {how} at {killed_unix}"));
        if graceful {
            cluster.sigterm(leader);
        } else {
            cluster.kill9(leader);
        }
        let probe = eventually(Duration::from_secs(60), "a step from the new leader", || {
            let p = lock(&sim.probe).first_higher_term_step;
            async move { p }
        })
        .await?;
        let step_ms = (probe - killed_at).as_secs_f64() * 1e3;
        // Let the release finish, then check it.
        loop {
            let (e, _) = tokio::time::timeout(Duration::from_secs(120), rx.recv())
                .await?
                .ok_or_else(|| anyhow!("event stream of {id} ended"))?;
            let end = terminal(e.kind);
            events.push(e);
            if end {
                break;
            }
        }
        release_times.push(t0.elapsed().as_secs_f64() * 1e3);
        let last = events.last().ok_or_else(|| anyhow!("no events"))?;
        if EventKind::try_from(last.kind) != Ok(EventKind::ReleaseSucceeded) {
            bail!("trial {trial}: release {id} ended {:?}: {}", EventKind::try_from(last.kind), last.message);
        }
        let (new_cmd, welcome) = {
            let mut p = lock(&sim.probe);
            p.armed = false;
            (p.first_new_command, p.first_welcome)
        };
        let taken_over = events
            .iter()
            .find(|e| EventKind::try_from(e.kind) == Ok(EventKind::LeaderChanged))
            .map(|e| (e.at_unix_ms - killed_unix) as f64);
        let executed = lock(&sim.executed).get(&id).cloned().unwrap_or_default();
        let once = executed.len() == agents && executed.values().all(|c| c.len() == 1);
        if !once {
            let twice: Vec<String> =
                executed.iter().filter(|(_, c)| c.len() != 1).map(|(h, c)| format!("sim-{h:04}: {c:?}")).collect();
            bail!("trial {trial}: {} of {agents} hosts executed a step; not exactly once: {twice:?}", executed.len());
        }
        let ms = |t: Option<Instant>| t.map(|t| (t - killed_at).as_secs_f64() * 1e3);
        report(&format!(
            "failover trial {trial:>2}: {how} of node {leader} (term {floor}) {:>3} ms into batch 20%; first step from the new leader after {step_ms:.0} ms; \
             first new command {:?} ms; first agent welcomed {:?} ms; LEADER_CHANGED committed at +{:?} ms; release {:.0} ms, every host once",
            jitter.as_millis(),
            ms(new_cmd).map(|v| v.round()),
            ms(welcome).map(|v| v.round()),
            taken_over,
            release_times.last().copied().unwrap_or_default()
        ));
        let timeline: Vec<String> = events
            .iter()
            .filter(|e| e.at_unix_ms >= killed_unix && !is_host_success(e.kind))
            .take(8)
            .map(|e| {
                let kind = EventKind::try_from(e.kind).map_or_else(|_| "?".to_owned(), |k| format!("{k:?}"));
                let what = if e.hosts.len() == 1 { e.hosts[0].clone() } else { e.batch.clone() };
                format!("+{} {kind} {what}", e.at_unix_ms - killed_unix)
            })
            .collect();
        let successes: Vec<i64> = events
            .iter()
            .filter(|e| e.at_unix_ms >= killed_unix && is_host_success(e.kind))
            .map(|e| e.at_unix_ms - killed_unix)
            .collect();
        report(&format!(
            "  after the kill: {}; first host result committed +{:?} ms",
            timeline.join(", "),
            successes.first()
        ));
        let series = usize::from(graceful);
        to_step[series].push(step_ms);
        if let Some(v) = ms(new_cmd) {
            to_new_command[series].push(v);
        }
        if let Some(v) = ms(welcome) {
            to_welcome[series].push(v);
        }
        if let Some(v) = taken_over {
            to_taken_over[series].push(v);
        }
        if graceful {
            let code = cluster.wait_exited(leader, Duration::from_secs(30)).await?;
            if code != Some(0) {
                bail!("trial {trial}: node {leader} exited with {code:?} after SIGTERM");
            }
        }
        cluster.restart(leader)?;
        // Let the restarted node rejoin and settle before the next kill (a node that
        // restarted a moment ago and wins the next election is measured separately:
        // FLOTILLA_FAILOVER_SETTLE_MS=0).
        let next = cluster.wait_leader(Duration::from_secs(60)).await?;
        let applied = cluster
            .status_of(next)
            .await
            .and_then(|s| s.members.into_iter().find(|m| m.node_id == next))
            .and_then(|m| m.applied_index)
            .unwrap_or(0);
        cluster.wait_applied(leader, applied, Duration::from_secs(60)).await?;
        tokio::time::sleep(settle).await;
    }
    let line = |what: &str, v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        format!(
            "  {what}: p50 {:.0} ms, p99 {:.0} ms, min {:.0} ms, max {:.0} ms (n={})",
            percentile(&s, 0.5),
            percentile(&s, 0.99),
            s.first().copied().unwrap_or(f64::NAN),
            s.last().copied().unwrap_or(f64::NAN),
            s.len()
        )
    };
    report(&format!(
        "failover summary ({trials} trials, {agents} agents, hold {} ms, canary 1 then 10%..100%, settle {} ms after each restart):",
        hold.as_millis(),
        settle.as_millis()
    ));
    for (series, how) in ["kill -9", "SIGTERM"].into_iter().enumerate() {
        if to_step[series].is_empty() {
            continue;
        }
        report(&line(&format!("{how} -> first step from the new leader at an agent"), &to_step[series]));
        report(&line(&format!("{how} -> first agent welcomed by the new leader"), &to_welcome[series]));
        report(&line(&format!("{how} -> LEADER_CHANGED committed (event timestamp)"), &to_taken_over[series]));
        report(&line(&format!("{how} -> first step with a new command id"), &to_new_command[series]));
    }
    report(&line("whole release (Create -> SUCCEEDED, with the failover)", &release_times));
    report(&format!("  agent traffic: {}", sim.traffic()));
    let _ = stop_tx.send(true);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        return Ok(()); // Not under `cargo bench`: these take minutes and need the release build.
    }
    let which: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let wants = |name: &str| which.is_empty() || which.iter().any(|w| *w == name);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("runtime")?;
    rt.block_on(async {
        if wants("overhead") {
            let agents = usize::try_from(env_or("FLOTILLA_BENCH_AGENTS", 1_000))?;
            let runs = usize::try_from(env_or("FLOTILLA_BENCH_RUNS", 5))?;
            let cluster = TestCluster::start(3, ClusterOptions::default())?;
            let result = overhead(&cluster, agents, runs).await;
            keep_logs(&cluster, "overhead");
            result?;
        }
        if wants("services") {
            let agents = usize::try_from(env_or("FLOTILLA_BENCH_AGENTS", 1_000))?;
            let services = usize::try_from(env_or("FLOTILLA_BENCH_SERVICES", 50))?.max(1);
            let runs = usize::try_from(env_or("FLOTILLA_BENCH_RUNS", 3))?.max(1);
            let cluster = TestCluster::start(3, ClusterOptions::default())?;
            let result = many_services(&cluster, agents, services, runs).await;
            keep_logs(&cluster, "services");
            result?;
        }
        if wants("dashboard") {
            let agents = usize::try_from(env_or("FLOTILLA_BENCH_AGENTS", 1_000))?;
            let services = usize::try_from(env_or("FLOTILLA_BENCH_SERVICES", 50))?.max(1);
            let viewers = usize::try_from(env_or("FLOTILLA_BENCH_VIEWERS", 20))?.max(1);
            let runs = usize::try_from(env_or("FLOTILLA_BENCH_RUNS", 2))?.max(1);
            let cluster = TestCluster::start(3, ClusterOptions { http: true, ..ClusterOptions::default() })?;
            let result = dashboard(&cluster, agents, services, viewers, runs).await;
            keep_logs(&cluster, "dashboard");
            result?;
        }
        if wants("history") {
            let agents = usize::try_from(env_or("FLOTILLA_BENCH_AGENTS", 1_000))?;
            let releases = usize::try_from(env_or("FLOTILLA_BENCH_RELEASES", 200))?.max(1);
            let args = match std::env::var("FLOTILLA_BENCH_KEEP") {
                Ok(keep) if !keep.is_empty() => vec!["--finished-release-max-count".to_owned(), keep],
                _ => Vec::new(),
            };
            let cluster = TestCluster::start(
                3,
                ClusterOptions { snapshot_logs: 200, keep_logs: 100, args, ..ClusterOptions::default() },
            )?;
            let result = history(&cluster, agents, releases).await;
            keep_logs(&cluster, "history");
            result?;
        }
        if wants("failover") {
            let trials = usize::try_from(env_or("FLOTILLA_FAILOVER_TRIALS", 20))?;
            let agents = usize::try_from(env_or("FLOTILLA_FAILOVER_AGENTS", 100))?;
            let hold = Duration::from_millis(env_or("FLOTILLA_FAILOVER_HOLD_MS", 300));
            let mut cluster = TestCluster::start(3, ClusterOptions::default())?;
            let settle = Duration::from_millis(env_or("FLOTILLA_FAILOVER_SETTLE_MS", 3_000));
            let stop = Stop::from_env()?;
            let result = failover(&mut cluster, trials, agents, hold, settle, stop).await;
            keep_logs(&cluster, "failover");
            result?;
        }
        Ok(())
    })
}

/// Whether an event kind reports one host's step succeeding (deployed, baked).
fn is_host_success(kind: i32) -> bool {
    matches!(EventKind::try_from(kind), Ok(EventKind::HostSucceeded | EventKind::HostBaked))
}
