//! Time of a local deploy of a 10 MB artifact from `file://`: fetch (copy + sha256) +
//! verify + unpack + stop the previous version + switch + start, until the new process
//! accepts TCP connections (one passing `tcp` sample; `healthy_for` is 0).
//!
//! `cargo bench -p flotilla-agent --bench deploy`

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use flotilla_agent::step::{Action, Artifact, Deploy, HealthCheck, Hooks, Probe, RunSpec, Step, StepOutcome};
use flotilla_agent::{Executor, ExecutorConfig};
use flotilla_sample_service::{Behaviour, ExtraFile};

/// Incompressible padding: with the sample binary (~1.6 MB gzipped) the artifact is
/// about 10 MB.
const PADDING: usize = 8_400_000;

fn padding() -> Vec<u8> {
    // xorshift: cheap, deterministic, incompressible enough for gzip.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(PADDING);
    while out.len() < PADDING {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

fn deploy_10mb(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = flotilla_sample_service::build_binary(Path::new(env!("CARGO_TARGET_TMPDIR"))).expect("sample binary");
    // The behaviour has no version: the service reports FLOTILLA_VERSION, so one
    // artifact serves every version deployed below.
    let package = flotilla_sample_service::package_with(
        &dir.path().join("artifacts"),
        &bin,
        "bench",
        &Behaviour::default(),
        &[ExtraFile { path: "data/padding.bin".into(), content: padding(), mode: 0o644 }],
    )
    .expect("package");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let executor: Executor = runtime.block_on(async {
        Executor::open(ExecutorConfig::new(dir.path().join("data"), "bench")).await.expect("open").0
    });
    let mut n = 0u64;
    let mut group = c.benchmark_group("deploy");
    group.sample_size(10).measurement_time(Duration::from_secs(30)).warm_up_time(Duration::from_secs(3));
    group.bench_function(format!("file_{}mb", (package.size + 500_000) / 1_000_000), |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    n += 1;
                    let step = Step {
                        command_id: format!("bench-{n}"),
                        term: 1,
                        release_id: String::new(),
                        stage: String::new(),
                        action: Action::Deploy(Box::new(Deploy {
                            service: "bench".into(),
                            version: format!("1.0.{n}"),
                            artifact: Artifact { url: package.file_url(), sha256: package.sha256.clone() },
                            run: RunSpec {
                                command: "bin/sample".into(),
                                args: vec!["--port".into(), port.to_string()],
                                env: BTreeMap::new(),
                            },
                            hooks: Hooks::default(),
                            health: vec![HealthCheck {
                                probe: Probe::Tcp { addr: format!("127.0.0.1:{port}") },
                                interval_ms: 5,
                                timeout_ms: 1000,
                            }],
                            healthy_for_ms: 0,
                            healthy_deadline_ms: 30_000,
                            hook_timeout_ms: 0,
                            stop_timeout_ms: 5_000,
                            migrate: false,
                            provides: BTreeMap::new(),
                        })),
                    };
                    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
                    let start = Instant::now();
                    let result = executor.run(step, &tx).await;
                    total += start.elapsed();
                    assert_eq!(result.outcome, StepOutcome::Succeeded, "{result:?}");
                }
                total
            })
        });
    });
    group.finish();
    // Leave nothing running.
    runtime.block_on(async {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let stop = Step {
            command_id: "bench-stop".into(),
            term: 1,
            release_id: String::new(),
            stage: String::new(),
            action: Action::Stop(flotilla_agent::step::Stop { service: "bench".into(), stop_timeout_ms: 1000 }),
        };
        executor.run(stop, &tx).await;
    });
}

criterion_group!(benches, deploy_10mb);
criterion_main!(benches);
