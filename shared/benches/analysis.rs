//! Canary analysis benchmark: judging 20 comparison metrics with 10,000 samples on each
//! side (the target is well under 10 ms for all 20), and one Mann-Whitney test with its
//! Hodges-Lehmann interval at 10,000 a side.
//!
//! Run with `cargo bench -p flotilla-shared --bench analysis`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use flotilla_shared::analysis::{Criteria, Direction, Samples, Settings, judge, mann_whitney};
use flotilla_shared::fixtures::XorShift;

/// `n` samples of metric `kind` (0..4): latencies (log-normal around 20 ms, rounded to
/// 0.1 ms, so ties occur), error ratios that are mostly exactly zero, request rates
/// (continuous), and CPU percentages rounded to 0.5; `shift` scales the canary's.
fn metric(rng: &mut XorShift, kind: usize, n: usize, shift: f64) -> Vec<f64> {
    (0..n)
        .map(|_| match kind {
            0 => (20.0 * shift * (0.3 * rng.normal()).exp() * 10.0).round() / 10.0,
            1 => {
                if rng.uniform() < 0.7 {
                    0.0
                } else {
                    0.002 * shift * rng.uniform()
                }
            }
            2 => 1000.0 * shift + 40.0 * rng.normal(),
            _ => ((50.0 * shift + 8.0 * rng.normal()) * 2.0).round() / 2.0,
        })
        .collect()
}

fn analysis(c: &mut Criterion) {
    let mut rng = XorShift(0x5eed_ca9a_11e5);
    let n = 10_000;
    let data: Vec<(Criteria, Vec<f64>, Vec<f64>)> = (0..20)
        .map(|i| {
            let kind = i % 4;
            // Every fifth metric regresses by 2%.
            let shift = if i % 5 == 0 { 1.02 } else { 1.0 };
            let direction = if kind == 2 { Direction::Decrease } else { Direction::Increase };
            let canary = metric(&mut rng, kind, n, shift);
            let baseline = metric(&mut rng, kind, n, 1.0);
            (Criteria::compare(format!("metric_{i}"), direction), canary, baseline)
        })
        .collect();
    let metrics: Vec<(Criteria, Samples<'_>)> =
        data.iter().map(|(criteria, canary, baseline)| (criteria.clone(), Samples::new(canary, baseline))).collect();
    let settings = Settings::default();

    let mut group = c.benchmark_group("analysis");
    group.bench_function("judge 20 metrics x 10k samples per side", |b| {
        b.iter(|| judge(black_box(&settings), black_box(&metrics)));
    });
    let (canary, baseline) = (&data[2].1, &data[2].2);
    group.bench_function("mann_whitney 10k vs 10k (normal data)", |b| {
        b.iter(|| mann_whitney(black_box(canary), black_box(baseline), 0.98));
    });
    group.finish();
}

criterion_group!(benches, analysis);
criterion_main!(benches);
