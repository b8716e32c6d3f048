//! Planning benchmark: 10,000 services with 50,000 dependency edges; and the rollback a
//! failure of each service would trigger (what `flotilla plan` shows for every service)
//! on 10,000 services in chains of five hard dependencies.
//!
//! Run with `cargo bench -p flotilla-shared --bench planner`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use flotilla_shared::DepKind;
use flotilla_shared::ReleaseSpec;
use flotilla_shared::fixtures::{XorShift, fleet, host, release, service};
use flotilla_shared::plan::Plan;

/// `services` services and `edges` distinct edges, each from a later service to an
/// earlier one (acyclic), kinds mixed.
fn big_spec(services: usize, edges: usize) -> ReleaseSpec {
    let mut rng = XorShift(0x5eed_f107_111a);
    let mut deps: Vec<Vec<(usize, DepKind)>> = vec![Vec::new(); services];
    let mut seen = std::collections::HashSet::new();
    while seen.len() < edges {
        let a = 1 + rng.below(services - 1);
        // Mostly near neighbours, sometimes far: long chains and wide waves both.
        let span = if rng.below(4) == 0 { a } else { a.min(50) };
        let b = a - 1 - rng.below(span);
        if seen.insert((a, b)) {
            let kind = [DepKind::Hard, DepKind::Hard, DepKind::Config, DepKind::Soft][rng.below(4)];
            deps[a].push((b, kind));
        }
    }
    let mut spec = release("bench");
    for (v, list) in deps.iter().enumerate() {
        let mut svc = service(&format!("svc-{v:05}"), "1.0.0");
        for &(b, kind) in list {
            svc = svc.depends(&format!("svc-{b:05}"), kind);
        }
        spec = spec.with(svc);
    }
    spec
}

fn planning(c: &mut Criterion) {
    let spec = big_spec(10_000, 50_000);
    let mut group = c.benchmark_group("plan");
    group.sample_size(30);
    group.bench_function("10k_services_50k_edges", |b| b.iter(|| Plan::build(black_box(&spec), None).unwrap()));

    // The same graph against a fleet of 100 hosts in two stages: batches for every
    // service in every stage.
    let hosts =
        (0..100).map(|i| host(&format!("h{i:03}"), &[("cell", if i < 10 { "canary" } else { "main" })], &[])).collect();
    let fleet = fleet(hosts);
    let staged = spec.clone().stages("cell", &["canary"]);
    group.bench_function("10k_services_50k_edges_100_hosts", |b| {
        b.iter(|| Plan::build(black_box(&staged), Some(&fleet)).unwrap())
    });
    group.finish();
}

/// `services` services in chains of five: each depends (hard) on the one before it,
/// except every fifth, which starts a chain.
fn chains_spec(services: usize) -> ReleaseSpec {
    let mut spec = release("chains");
    for v in 0..services {
        let mut svc = service(&format!("svc-{v:05}"), "1.0.0");
        if v % 5 != 0 {
            svc = svc.depends(&format!("svc-{:05}", v - 1), DepKind::Hard);
        }
        spec = spec.with(svc);
    }
    spec
}

fn rollbacks(c: &mut Criterion) {
    let spec = chains_spec(10_000);
    let plan = Plan::build(&spec, None).unwrap();
    let mut group = c.benchmark_group("rollback");
    group.sample_size(20);
    group.bench_function("every_service_of_10k_in_chains_of_5", |b| {
        b.iter(|| (0..spec.services.len()).map(|v| plan.rollback_if_failed(black_box(v)).members.len()).sum::<usize>())
    });
    group.finish();
}

criterion_group!(benches, planning, rollbacks);
criterion_main!(benches);
