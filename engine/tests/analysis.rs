//! Canary analysis through the engine, without a network: releases driven through
//! `decide` and `Run::apply` with simulated agents (a bake step ends when its time is
//! up) and a simulated Prometheus answering each round the engine asks for, asserting
//! what is judged when, what each verdict does to the release, and that the committed
//! facts replay to the same run.

use std::time::Duration;

use flotilla_engine::{
    Context, Env, EventKind, Fact, MetricQuery, Outcome, Phase, Refusal, Run, Sample, SampleRequest, StepKind,
    Terminal, decide,
};
use flotilla_shared::analysis::{Check, Criteria, Direction, Verdict};
use flotilla_shared::fixtures::{fleet, host, release, service};
use flotilla_shared::model::{HostCount, ServiceName};
use flotilla_shared::plan::Plan;
use flotilla_shared::spec::{MetricSpec, Span};
use flotilla_shared::{Fleet, ReleaseSpec};

/// Which side of the comparison a query is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Canary,
    Baseline,
}

/// What the simulated Prometheus answers: per round, metric and side, the values or
/// why the query failed.
type Source = Box<dyn FnMut(&SampleRequest, &MetricQuery, Side) -> Result<Vec<f64>, String>>;

struct Sim {
    plan: Plan,
    fleet: Fleet,
    run: Run,
    now: i64,
    /// Every fact applied, with the time it was applied at.
    log: Vec<(i64, Fact)>,
    source: Source,
}

impl Sim {
    fn new(spec: &ReleaseSpec, source: Source) -> Self {
        Self::with_fleet(
            spec,
            fleet((1..=4).map(|i| host(&format!("h{i}"), &[], &[("api", "1.0.0")])).collect()),
            source,
        )
    }

    fn with_fleet(spec: &ReleaseSpec, fleet: Fleet, source: Source) -> Self {
        let plan = Plan::build(spec, Some(&fleet)).expect("the spec plans");
        Self { plan, fleet, run: Run::new(), now: 1_000_000, log: Vec::new(), source }
    }

    fn apply(&mut self, fact: Fact) {
        if let Err(e) = self.run.apply(self.now, &fact) {
            panic!("the engine decided a fact that does not apply: {fact}: {e}");
        }
        self.log.push((self.now, fact));
    }

    /// Answers the steps that are due: deploys at once, bakes when their time is up.
    /// Returns when the next bake ends, if one is still running.
    fn answer(&mut self) -> (bool, Option<i64>) {
        let mut due = Vec::new();
        let mut next = None::<i64>;
        for (id, s) in self.run.outstanding() {
            let ends = match s.kind {
                StepKind::Bake(_, ms) => s.sent_unix_ms + i64::try_from(ms).unwrap(),
                _ => s.sent_unix_ms,
            };
            if ends <= self.now {
                due.push(id.clone());
            } else {
                next = Some(next.map_or(ends, |n| n.min(ends)));
            }
        }
        let any = !due.is_empty();
        for command_id in due {
            self.apply(Fact::StepReported { command_id, outcome: Outcome::Succeeded, reason: String::new() });
        }
        (any, next)
    }

    /// Runs the release until it finishes or pauses, moving the clock to each wake.
    fn run(&mut self) {
        for _ in 0..10_000 {
            let decision = {
                let ctx = Context { release: "r-1", plan: &self.plan, fleet: &self.fleet };
                decide(&self.run, ctx, &Env::new(self.now, &|_| true))
            };
            if !decision.facts.is_empty() {
                for f in decision.facts {
                    self.apply(f);
                }
                continue;
            }
            let (answered, bake_ends) = self.answer();
            if answered {
                continue;
            }
            if !decision.samples.is_empty() {
                for request in decision.samples {
                    let samples = request
                        .queries
                        .iter()
                        .map(|q| {
                            let canary = (self.source)(&request, q, Side::Canary);
                            let baseline = match q.baseline {
                                Some(_) => (self.source)(&request, q, Side::Baseline),
                                None => Ok(Vec::new()),
                            };
                            match (canary, baseline) {
                                (Ok(canary), Ok(baseline)) => {
                                    Sample { metric: q.metric.clone(), canary, baseline, error: None }
                                }
                                (Err(e), _) | (_, Err(e)) => Sample {
                                    metric: q.metric.clone(),
                                    canary: Vec::new(),
                                    baseline: Vec::new(),
                                    error: Some(e),
                                },
                            }
                        })
                        .collect();
                    let SampleRequest { stage, service, batch, round, .. } = request;
                    self.apply(Fact::AnalysisSampled { stage, service, batch, round, samples });
                }
                continue;
            }
            if self.run.is_finished() || self.run.paused.is_some() {
                return;
            }
            let next = [decision.wake_at, bake_ends].into_iter().flatten().min();
            match next {
                Some(at) if at > self.now => self.now = at,
                _ => panic!("the release is stuck at {}: {:#?}", self.now, self.run.events),
            }
        }
        panic!("the release never settled");
    }

    fn judged(&self) -> Vec<(usize, Verdict)> {
        self.log
            .iter()
            .filter_map(|(_, f)| match f {
                Fact::AnalysisJudged { batch, report, .. } => Some((*batch, report.verdict)),
                _ => None,
            })
            .collect()
    }

    fn events(&self, kind: EventKind) -> Vec<String> {
        self.run.events.iter().filter(|e| e.kind == kind).map(|e| e.message.clone()).collect()
    }

    fn terminal(&self) -> Option<Terminal> {
        match self.run.phase {
            Phase::Finished(t) => Some(t),
            _ => None,
        }
    }

    /// The committed facts applied again to a new run, at their times.
    fn replayed(&self) -> Run {
        let mut run = Run::new();
        for (at, fact) in &self.log {
            run.apply(*at, fact).expect("a committed fact applies again");
        }
        run
    }
}

fn compare(name: &str, critical: bool, must_have_data: bool) -> MetricSpec {
    MetricSpec {
        query: format!("{name}{{host=~\"{{{{hosts}}}}\"}}"),
        criteria: Criteria {
            name: name.to_owned(),
            check: Check::Compare { direction: Direction::Increase, allowed_change: None, critical_change: None },
            critical,
            must_have_data,
            weight: 1,
        },
        span: Span::new(0, 0),
    }
}

fn threshold(name: &str, max: f64) -> MetricSpec {
    MetricSpec {
        query: format!("{name}{{host=~\"{{{{hosts}}}}\"}}"),
        criteria: Criteria {
            name: name.to_owned(),
            check: Check::Threshold { max: Some(max), min: None },
            critical: false,
            must_have_data: true,
            weight: 1,
        },
        span: Span::new(0, 0),
    }
}

/// `api` 2.0.0 on four hosts: canary 1, then 50 %, then 100 %, baking 20 s per batch,
/// sampled every 10 s, judged on 5 rounds.
fn spec(metrics: Vec<MetricSpec>) -> ReleaseSpec {
    let mut api = service("api", "2.0.0");
    api.policy.canary = HostCount::Hosts(1);
    api.policy.batches = vec![HostCount::Percent(5_000), HostCount::ALL];
    api.policy.bake = Duration::from_secs(20);
    api.policy.analysis.interval = Duration::from_secs(10);
    api.policy.analysis.settings.samples = 5;
    api.policy.metrics = metrics;
    release("shop").with(api)
}

/// A value near `level` that differs a little each round and per host.
fn noisy(level: f64, round: usize, series: usize) -> f64 {
    level * (1.0 + 0.05 * (((round * 7 + series * 3) % 11) as f64 / 10.0 - 0.5))
}

/// Per series of a side (one per host), a value near `level`.
fn per_host(request: &SampleRequest, q: &MetricQuery, side: Side, canary: f64, baseline: f64) -> Vec<f64> {
    let hosts = if side == Side::Canary { &q.canary } else { q.baseline.as_ref().expect("a baseline query") };
    let n = hosts.matches('|').count() + 1;
    let level = if side == Side::Canary { canary } else { baseline };
    (0..n).map(|i| noisy(level, request.round, i)).collect()
}

#[test]
fn a_canary_worse_than_its_baseline_fails_at_the_canary_and_rolls_back() {
    let spec = spec(vec![compare("error_ratio", true, true), compare("latency", false, true)]);
    let source: Source = Box::new(|r, q, side| {
        let (c, b) = if q.metric == "error_ratio" { (0.05, 0.002) } else { (0.1, 0.1) };
        Ok(per_host(r, q, side, c, b))
    });
    let mut sim = Sim::new(&spec, source);
    sim.run();
    assert_eq!(sim.terminal(), Some(Terminal::RolledBack), "{:#?}", sim.run.events);
    assert_eq!(sim.judged(), vec![(0, Verdict::Fail)], "judged at the canary, and only there");
    let analysis = &sim.run.analyses[0];
    assert_eq!(analysis.canary.len(), 1);
    assert_eq!(analysis.baseline.len(), 3, "the other hosts of the stage, still on 1.0.0");
    assert_eq!(analysis.baseline_versions, vec!["1.0.0".to_owned()]);
    assert!(analysis.rounds.len() >= 5, "judged on at least the samples it needs");
    let failed = sim.events(EventKind::AnalysisFailed);
    assert_eq!(failed.len(), 1);
    assert!(failed[0].starts_with("api canary failed analysis"), "{}", failed[0]);
    assert!(failed[0].contains("error_ratio canary 0.05"), "says which metric and its numbers: {}", failed[0]);
    let why = sim.events(EventKind::ServiceFailed);
    assert!(why.iter().any(|m| m.contains("error_ratio")), "the service's failure names the metric: {why:?}");
    assert!(
        !sim.log.iter().any(|(_, f)| matches!(f, Fact::BatchStarted { batch: 1, .. })),
        "no host beyond the canary got the bad version"
    );
    assert_eq!(sim.replayed(), sim.run, "replaying the committed facts gives the same run");
}

#[test]
fn a_healthy_version_passes_every_batch_and_the_last_is_held_to_thresholds_only() {
    let spec = spec(vec![compare("error_ratio", true, true), threshold("latency", 0.5)]);
    let source: Source = Box::new(|r, q, side| {
        let level = if q.metric == "error_ratio" { 0.01 } else { 0.1 };
        Ok(per_host(r, q, side, level, level))
    });
    let mut sim = Sim::new(&spec, source);
    sim.run();
    assert_eq!(sim.terminal(), Some(Terminal::Succeeded), "{:#?}", sim.run.events);
    assert_eq!(sim.judged(), vec![(0, Verdict::Pass), (1, Verdict::Pass), (2, Verdict::Pass)]);
    let last = sim.run.analyses.last().expect("the last batch is analysed");
    assert!(last.baseline.is_empty(), "no host is left on the old version at the last batch");
    assert_eq!(last.metrics, vec!["latency".to_owned()], "only the threshold metric is judged there");
    let started = sim.events(EventKind::AnalysisStarted);
    assert!(started[2].contains("no baseline"), "{}", started[2]);
    // Each batch is done only after its analysis passed.
    for batch in 0..3 {
        let judged =
            sim.log.iter().position(|(_, f)| matches!(f, Fact::AnalysisJudged { batch: b, .. } if *b == batch));
        let done = sim.log.iter().position(|(_, f)| matches!(f, Fact::BatchDone { batch: b, .. } if *b == batch));
        assert!(judged < done, "batch {batch} finished before its analysis was judged");
    }
    assert_eq!(sim.replayed(), sim.run);
}

#[test]
fn queries_failing_beyond_the_limit_make_the_analysis_inconclusive_and_pause_the_release() {
    let spec = spec(vec![compare("error_ratio", true, true)]);
    let source: Source = Box::new(|r, q, side| {
        if r.round >= 1 {
            return Err("http://127.0.0.1:9/api/v1/query: cannot connect: Connection refused".to_owned());
        }
        Ok(per_host(r, q, side, 0.01, 0.01))
    });
    let mut sim = Sim::new(&spec, source);
    sim.run();
    assert_eq!(sim.run.paused.as_deref().map(|p| p.contains("inconclusive")), Some(true), "{:?}", sim.run.paused);
    let paused = sim.run.paused.clone().unwrap_or_default();
    assert!(paused.contains("3 query errors (limit 2)"), "says why: {paused}");
    assert!(
        paused.contains("Connection refused")
            || sim.events(EventKind::AnalysisQueryFailed)[0].contains("Connection refused")
    );
    assert_eq!(sim.judged(), vec![(0, Verdict::Inconclusive)], "judged as soon as the limit was passed");
    assert_eq!(sim.run.analyses[0].rounds.len(), 4, "one good round, then three failed ones");
    assert_eq!(sim.events(EventKind::AnalysisQueryFailed).len(), 3);

    // A human accepts the canary; Prometheus is back for the next batches.
    sim.source = Box::new(|r, q, side| Ok(per_host(r, q, side, 0.01, 0.01)));
    sim.apply(Fact::Resumed { actor: "operator alice".into(), reason: "prometheus was down".into() });
    let resumed = sim.events(EventKind::Resumed);
    assert!(resumed[0].contains("resumes past the analysis of api canary"), "{resumed:?}");
    assert_eq!(sim.run.analyses[0].accepted_by.as_deref(), Some("operator alice"));
    sim.run();
    assert_eq!(sim.terminal(), Some(Terminal::Succeeded), "{:#?}", sim.run.events);
    assert_eq!(sim.judged(), vec![(0, Verdict::Inconclusive), (1, Verdict::Pass)]);
    assert_eq!(sim.replayed(), sim.run);
}

#[test]
fn a_metric_that_must_have_data_and_has_none_is_never_a_pass() {
    let spec = spec(vec![compare("error_ratio", false, true)]);
    let source: Source = Box::new(|r, q, side| match side {
        Side::Canary => Ok(Vec::new()),
        Side::Baseline => Ok(per_host(r, q, side, 0.01, 0.01)),
    });
    let mut sim = Sim::new(&spec, source);
    sim.run();
    assert_eq!(sim.judged(), vec![(0, Verdict::Inconclusive)]);
    assert!(sim.run.paused.is_some(), "paused for a human");
    // It waited up to twice the samples for data before calling it missing.
    assert_eq!(sim.run.analyses[0].rounds.len(), 10);
    let paused = sim.run.paused.clone().unwrap_or_default();
    assert!(paused.contains("no data"), "{paused}");
}

#[test]
fn without_any_metric_with_data_nothing_is_judged_a_pass() {
    let spec = spec(vec![compare("error_ratio", false, false)]);
    let source: Source = Box::new(|_, _, _| Ok(Vec::new()));
    let mut sim = Sim::new(&spec, source);
    sim.run();
    assert_eq!(sim.judged(), vec![(0, Verdict::Inconclusive)], "a missing metric never counts as a pass");
    assert!(sim.run.paused.is_some());
}

#[test]
fn a_round_twice_out_of_order_or_not_finite_is_refused_and_changes_nothing() {
    let spec = spec(vec![compare("error_ratio", true, true)]);
    let mut sim = Sim::new(&spec, Box::new(|r, q, side| Ok(per_host(r, q, side, 0.01, 0.01))));
    // Run until the canary's analysis has taken a round.
    for _ in 0..1_000 {
        if sim.run.analyses.first().is_some_and(|a| !a.rounds.is_empty()) {
            break;
        }
        let ctx = Context { release: "r-1", plan: &sim.plan, fleet: &sim.fleet };
        let d = decide(&sim.run, ctx, &Env::new(sim.now, &|_| true));
        let moved = !d.facts.is_empty() || !d.samples.is_empty();
        for f in d.facts {
            sim.apply(f);
        }
        for r in d.samples {
            let SampleRequest { stage, service, batch, round, .. } = r;
            let samples =
                vec![Sample { metric: "error_ratio".into(), canary: vec![0.01], baseline: vec![0.01], error: None }];
            sim.apply(Fact::AnalysisSampled { stage, service, batch, round, samples });
        }
        let (answered, bake) = sim.answer();
        if !moved && !answered {
            sim.now = d.wake_at.into_iter().chain(bake).min().expect("something to wait for");
        }
    }
    let api = ServiceName::from("api");
    let sample = |metric: &str, value: f64| {
        vec![Sample { metric: metric.into(), canary: vec![value], baseline: vec![0.0], error: None }]
    };
    let cases = [
        (0, sample("error_ratio", 0.01), "round 0 of the analysis of api batch 0 is not the next (1)"),
        (5, sample("error_ratio", 0.01), "round 5 of the analysis of api batch 0 is not the next (1)"),
        (1, sample("latency", 0.01), "latency is not a metric of the analysis of api batch 0"),
        (1, sample("error_ratio", f64::NAN), "a sample is not a finite number"),
    ];
    for (round, samples, why) in cases {
        let before = sim.run.clone();
        let fact = Fact::AnalysisSampled { stage: 0, service: api.clone(), batch: 0, round, samples };
        assert_eq!(sim.run.apply(sim.now, &fact), Err(Refusal::Invalid(why.to_owned())));
        assert_eq!(sim.run, before, "a refused round changes nothing");
    }
    let before = sim.run.clone();
    let fact =
        Fact::AnalysisSampled { stage: 0, service: api, batch: 1, round: 0, samples: sample("error_ratio", 0.0) };
    assert!(sim.run.apply(sim.now, &fact).is_err(), "no analysis of batch 1 has started");
    assert_eq!(sim.run, before);
}

#[test]
fn a_canary_cell_with_no_other_host_is_compared_with_the_hosts_later_stages_will_deploy_to() {
    let spec = spec(vec![compare("error_ratio", true, true)]).stages("cell", &["canary"]);
    let mut hosts: Vec<_> = (1..=4).map(|i| host(&format!("h{i}"), &[], &[("api", "1.0.0")])).collect();
    hosts[0].labels.insert("cell".into(), "canary".into());
    let source: Source = Box::new(|r, q, side| Ok(per_host(r, q, side, 0.05, 0.002)));
    let mut sim = Sim::with_fleet(&spec, fleet(hosts), source);
    sim.run();
    assert_eq!(sim.terminal(), Some(Terminal::RolledBack), "{:#?}", sim.run.events);
    let first = &sim.run.analyses[0];
    assert_eq!((first.stage, first.canary.len()), (0, 1));
    let baseline: Vec<&str> = first.baseline.iter().map(|h| h.as_str()).collect();
    assert_eq!(baseline, ["h2", "h3", "h4"], "the next stage's hosts, still on 1.0.0");
    assert_eq!(sim.judged(), vec![(0, Verdict::Fail)], "caught in the canary cell");
    assert!(
        !sim.log.iter().any(|(_, f)| matches!(f, Fact::StageStarted { stage: 1, .. })),
        "the next stage never started"
    );
}
