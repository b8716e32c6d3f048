//! Turns the raw TOML tables into a validated [`ReleaseSpec`], reporting every bad value
//! at once, each with the span of the offending text and what to do about it.
//!
//! Checks here need nothing but the file: value formats, names, duplicates, references
//! between tables of the same file. Checks against the dependency graph (cycles) or the
//! fleet (unknown dependencies, unmet `requires`, selectors matching no host) are the
//! planner's.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use semver::{Version, VersionReq};
use toml::Spanned;

use super::raw::{
    self, RawAnalysis, RawApproval, RawApprovers, RawArtifact, RawCount, RawGate, RawHealth, RawHooks, RawMetric,
    RawRollout, RawRun, RawService, RawSpec, RawStage, RawStringMap, closest,
};
use super::{
    AnalysisPolicy, ApprovalRule, ApproverRole, Artifact, Dependency, Diagnostic, GateExec, GateSpec, HealthCheck,
    Hooks, MetricSpec, Probe, ReleaseSpec, Requirement, RolloutPolicy, RunSpec, ServiceSpec, SourceFile, Span,
    SpecErrors, StageSpec,
};
use crate::analysis::{self, Check, Criteria, Direction};
use crate::model::{DepKind, HostCount, LabelSelector, OnFailure, RollbackScope, ServiceName};

/// Parses and validates a spec file; see [`super::parse`].
pub(crate) fn parse(source: &SourceFile) -> Result<ReleaseSpec, SpecErrors> {
    let raw = raw::read(source.text()).map_err(|diag| source.locate_all([diag]))?;
    let mut checker = Checker { source, diags: Vec::new() };
    let spec = checker.spec(&raw);
    match spec {
        Some(spec) if checker.diags.is_empty() => Ok(spec),
        _ if checker.diags.is_empty() => {
            Err(source.locate_all([Diagnostic::new(Span::default(), "the spec could not be validated")]))
        }
        _ => Err(source.locate_all(checker.diags)),
    }
}

/// How `stop_timeout` defaults when a service does not set it.
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a health check samples by default.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// How long one health sample may take by default.
const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a gate command may run by default.
const DEFAULT_GATE_TIMEOUT: Duration = Duration::from_secs(300);
/// The status an HTTP health check expects by default.
const DEFAULT_EXPECT_STATUS: u16 = 200;
/// The longest name a release, service, stage or gate may have.
const MAX_NAME_LEN: usize = 63;
/// The help for every malformed duration.
const DURATION_HELP: &str = "write a duration like \"30s\", \"10m\", \"1h30m\" or \"500ms\"";

/// One problem or several: what a check can report.
trait Problems {
    /// Appends the problems to `out`.
    fn report_into(self, out: &mut Vec<Diagnostic>);
}

impl Problems for Diagnostic {
    fn report_into(self, out: &mut Vec<Diagnostic>) {
        out.push(self);
    }
}

impl Problems for Vec<Diagnostic> {
    fn report_into(self, out: &mut Vec<Diagnostic>) {
        out.extend(self);
    }
}

/// Whether a zero duration is meaningful for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Zero {
    /// Zero is a valid choice (`bake = "0s"`: no bake).
    Allowed,
    /// Zero could never be met (`timeout = "0s"`).
    Refused,
}

/// Collects the problems of one file while building its [`ReleaseSpec`].
///
/// Builders return `None` when a part is invalid; every `None` comes with at least one
/// diagnostic, and builders check everything before giving up, so one run reports all.
struct Checker<'a> {
    source: &'a SourceFile,
    diags: Vec<Diagnostic>,
}

impl Checker<'_> {
    /// The value of a check, or `None` after recording its problems.
    fn ok<T, P: Problems>(&mut self, result: Result<T, P>) -> Option<T> {
        result.map_err(|problems| problems.report_into(&mut self.diags)).ok()
    }

    /// Records a problem.
    fn report(&mut self, diag: Diagnostic) {
        self.diags.push(diag);
    }

    /// Checks an optional value, giving `default` when it is absent.
    fn optional<R, T, P: Problems>(
        &mut self,
        raw: Option<&Spanned<R>>,
        default: T,
        check: impl FnOnce(&Spanned<R>) -> Result<T, P>,
    ) -> Option<T> {
        match raw {
            Some(raw) => self.ok(check(raw)),
            None => Some(default),
        }
    }

    /// Overwrites `slot` with the checked value of an override, if it is set and valid.
    fn set<R, T, P: Problems>(
        &mut self,
        slot: &mut T,
        raw: Option<&Spanned<R>>,
        check: impl FnOnce(&Spanned<R>) -> Result<T, P>,
    ) {
        if let Some(value) = raw.and_then(|raw| self.ok(check(raw))) {
            *slot = value;
        }
    }

    /// Reports every name that repeats an earlier one, at the repeat.
    fn no_repeats<'r>(
        &mut self,
        names: impl IntoIterator<Item = &'r Spanned<String>>,
        problem: impl Fn(&str, usize) -> (String, String),
    ) {
        let mut first_seen: HashMap<&str, Span> = HashMap::new();
        for name in names {
            match first_seen.get(name.get_ref().as_str()) {
                Some(first) => {
                    let (line, _) = self.source.line_col(first.start);
                    let (message, help) = problem(name.get_ref(), line);
                    self.report(Diagnostic::new(span(name), message).with_help(help));
                }
                None => {
                    first_seen.insert(name.get_ref(), span(name));
                }
            }
        }
    }

    /// Reports every service, stage or gate (`kind`) that reuses an earlier name.
    fn unique_names<'r>(&mut self, kind: &str, names: impl IntoIterator<Item = &'r Spanned<String>>) {
        self.no_repeats(names, |name, line| {
            (
                format!("duplicate {kind} name `{name}`"),
                format!("the first {kind} `{name}` is defined on line {line}; {kind} names must be unique"),
            )
        });
    }

    /// Checks every item without stopping at the first bad one.
    fn each<I, T>(&mut self, items: I, mut check: impl FnMut(&mut Self, I::Item) -> Option<T>) -> Option<Vec<T>>
    where
        I: IntoIterator,
    {
        let checked: Vec<Option<T>> = items.into_iter().map(|item| check(self, item)).collect();
        checked.into_iter().collect()
    }

    /// The whole spec.
    fn spec(&mut self, raw: &RawSpec) -> Option<ReleaseSpec> {
        let release = self.ok(name(&raw.release, "release"));
        let changed_unix_ms = match &raw.changed_at {
            Some(at) => self.ok(changed_at(at).map(Some)),
            None => Some(None),
        };
        let defaults = self.rollout(&RolloutPolicy::default(), &raw.defaults);
        let stages = self.stages(&raw.stage);

        self.unique_names("service", raw.service.iter().map(|s| &s.get_ref().name));
        let services = self.each(&raw.service, |c, service| c.service(service, &defaults));
        self.data_dependencies_migrate(&raw.service);

        let service_names: Vec<&str> = raw.service.iter().map(|s| s.get_ref().name.get_ref().as_str()).collect();
        self.unique_names("gate", raw.gate.iter().map(|g| &g.get_ref().name));
        let gates = self.each(&raw.gate, |c, gate| c.gate(gate, &service_names));

        Some(ReleaseSpec {
            release: release?,
            changed_unix_ms: changed_unix_ms?,
            stages: stages?,
            services: services?,
            gates: gates?,
        })
    }

    /// `[[stage]]` tables, or the single default stage over every host.
    fn stages(&mut self, raw: &[Spanned<RawStage>]) -> Option<Vec<StageSpec>> {
        if raw.is_empty() {
            let all = StageSpec {
                name: "all".to_owned(),
                hosts: None,
                approval: false,
                approval_by: ApprovalRule::default(),
                span: Span::new(0, 0),
            };
            return Some(vec![all]);
        }
        self.unique_names("stage", raw.iter().map(|s| &s.get_ref().name));
        let last = raw.len() - 1;
        self.each(raw.iter().enumerate(), |c, (i, stage)| c.stage(stage, i == last))
    }

    /// One `[[stage]]`; only the last may leave out `hosts`.
    fn stage(&mut self, raw: &Spanned<RawStage>, is_last: bool) -> Option<StageSpec> {
        let stage = raw.get_ref();
        let name = self.ok(name(&stage.name, "stage"));
        let hosts = match &stage.hosts {
            Some(hosts) => self.ok(selector(hosts, "hosts")).map(Some),
            None if is_last => Some(None),
            None => {
                self.report(
                    Diagnostic::new(
                        span(raw),
                        format!(
                            "stage `{}` has no `hosts`, so it takes every host not yet covered, but it is not the last stage",
                            stage.name.get_ref()
                        ),
                    )
                    .with_help("move this catch-all stage to the end, or give it hosts = { ... }"),
                );
                None
            }
        };
        let approval_by = self.approval(&stage.approval);
        Some(StageSpec {
            name: name?,
            hosts: hosts?,
            approval: stage.approval.required(),
            approval_by: approval_by?,
            span: span(raw),
        })
    }

    /// The rollout policy: `base` with every key `keys` sets replaced.
    fn rollout(&mut self, base: &RolloutPolicy, keys: &RawRollout) -> RolloutPolicy {
        let mut policy = base.clone();
        self.set(&mut policy.canary, keys.canary.as_ref(), |v| count(v, "canary"));
        self.set(&mut policy.batches, keys.batches.as_ref(), batches);
        self.set(&mut policy.bake, keys.bake.as_ref(), |v| duration(v, "bake", Zero::Allowed));
        self.set(&mut policy.max_failed, keys.max_failed.as_ref(), max_failed);
        self.set(&mut policy.progress_deadline, keys.progress_deadline.as_ref(), |v| {
            duration(v, "progress_deadline", Zero::Refused)
        });
        self.set(&mut policy.on_failure, keys.on_failure.as_ref(), |v| {
            one_of(v, "`on_failure` value", &[("rollback", OnFailure::Rollback), ("pause", OnFailure::Pause)])
        });
        self.set(&mut policy.rollback_scope, keys.rollback_scope.as_ref(), |v| {
            let scopes = [RollbackScope::Cascade, RollbackScope::Service, RollbackScope::Release];
            one_of(v, "`rollback_scope` value", &scopes.map(|s| (s.as_str(), s)))
        });
        self.set(&mut policy.rollback_window, keys.rollback_window.as_ref(), |v| {
            duration(v, "rollback_window", Zero::Allowed)
        });
        self.set(&mut policy.healthy_for, keys.healthy_for.as_ref(), |v| duration(v, "healthy_for", Zero::Allowed));
        self.set(&mut policy.healthy_deadline, keys.healthy_deadline.as_ref(), |v| {
            duration(v, "healthy_deadline", Zero::Refused)
        });
        self.set(&mut policy.hook_timeout, keys.hook_timeout.as_ref(), |v| duration(v, "hook_timeout", Zero::Refused));
        if let Some(analysis) = &keys.analysis {
            self.analysis(&mut policy.analysis, analysis.get_ref());
        }
        if let Some(metrics) = &keys.metric {
            self.metrics(&mut policy.metrics, metrics.get_ref());
        }
        policy
    }

    /// `[defaults.analysis]` / `[service.analysis]`: every key it sets replaced.
    fn analysis(&mut self, policy: &mut AnalysisPolicy, keys: &RawAnalysis) {
        self.set(&mut policy.enabled, keys.enabled.as_ref(), |v| Ok::<_, Diagnostic>(*v.get_ref()));
        self.set(&mut policy.interval, keys.interval.as_ref(), |v| duration(v, "interval", Zero::Refused));
        self.set(&mut policy.lookback, keys.lookback.as_ref(), |v| duration(v, "lookback", Zero::Refused).map(Some));
        let settings = &mut policy.settings;
        self.set(&mut settings.samples, keys.samples.as_ref(), |v| {
            whole(v, "samples", 1, "how many samples each side needs before judging, like samples = 5")
        });
        self.set(&mut settings.query_error_limit, keys.query_error_limit.as_ref(), |v| {
            whole(
                v,
                "query_error_limit",
                0,
                "how many failed queries of a metric to tolerate, like query_error_limit = 2",
            )
        });
        self.set(&mut settings.confidence, keys.confidence.as_ref(), |v| {
            real(v, "confidence", |c| c > 0.0 && c < 1.0, "above 0 and below 1, like confidence = 0.98")
        });
        let score = "from 0 to 100, like pass_score = 95";
        self.set(&mut settings.pass_score, keys.pass_score.as_ref(), |v| {
            real(v, "pass_score", |c| (0.0..=100.0).contains(&c), score)
        });
        self.set(&mut settings.marginal_score, keys.marginal_score.as_ref(), |v| {
            real(v, "marginal_score", |c| (0.0..=100.0).contains(&c), score)
        });
        self.set(&mut settings.outliers, keys.outliers.as_ref(), |v| {
            real(v, "outliers", |c| c > 0.0, "a positive factor of the interquartile range, like outliers = 3.0")
                .map(Some)
        });
        if settings.marginal_score > settings.pass_score {
            let at = keys.marginal_score.as_ref().or(keys.pass_score.as_ref());
            if let Some(at) = at {
                self.report(
                    Diagnostic::new(
                        span(at),
                        format!(
                            "`marginal_score` ({}) is above `pass_score` ({})",
                            settings.marginal_score, settings.pass_score
                        ),
                    )
                    .with_help("a score from marginal_score up to pass_score pauses for a human; keep marginal_score at or below pass_score"),
                );
            }
        }
    }

    /// `[[...metric]]` tables: each replaces the one of the same name below it, or adds
    /// to them.
    fn metrics(&mut self, metrics: &mut Vec<MetricSpec>, raw: &[Spanned<RawMetric>]) {
        self.no_repeats(raw.iter().map(|m| &m.get_ref().name), |name, line| {
            (
                format!("duplicate metric name `{name}`"),
                format!("the first metric `{name}` is defined on line {line}; metric names must be unique in a table"),
            )
        });
        for table in raw {
            let Some(metric) = self.metric(table) else { continue };
            match metrics.iter_mut().find(|m| m.criteria.name == metric.criteria.name) {
                Some(old) => *old = metric,
                None => metrics.push(metric),
            }
        }
    }

    /// One `[[metric]]`: a comparison with the baseline (`direction`) or a threshold
    /// (`max`/`min`), never both.
    fn metric(&mut self, raw: &Spanned<RawMetric>) -> Option<MetricSpec> {
        let m = raw.get_ref();
        let name = self.ok(metric_name(&m.name));
        let query = self.ok(metric_query(&m.query));
        let threshold = m.max.as_ref().or(m.min.as_ref());
        let comparison = [
            &m.direction.as_ref().map(span),
            &m.allowed_change.as_ref().map(span),
            &m.critical_change.as_ref().map(span),
        ]
        .into_iter()
        .flatten()
        .next()
        .copied();
        let check = match (threshold, comparison) {
            (Some(t), Some(c)) => {
                let _ = t;
                self.report(
                    Diagnostic::new(c, format!("metric `{}` sets both a threshold and a comparison", m.name.get_ref()))
                        .with_help("a metric is either held to `max`/`min` (no baseline) or compared with the baseline (`direction`, `allowed_change`, `critical_change`); split it into two metrics"),
                );
                None
            }
            (Some(_), None) => self.threshold(m),
            (None, _) => self.comparison(m),
        };
        if threshold.is_none() && query.is_some() && !analysis::query::tells_sides_apart(m.query.get_ref()) {
            self.report(
                Diagnostic::new(
                    span(&m.query),
                    format!("the query of metric `{}` is the same for the canary and the baseline", m.name.get_ref()),
                )
                .with_help("select the side's hosts or version, like host=~\"{{hosts}}\" or version=~\"{{version}}\", or hold the metric to a threshold with max/min"),
            );
            return None;
        }
        let weight = self.optional(m.weight.as_ref(), 1, |v| {
            whole(v, "weight", 1, "how much the metric counts in the score, like weight = 1")
        });
        let critical = m.critical.as_ref().is_some_and(|v| *v.get_ref());
        let must_have_data = m.must_have_data.as_ref().is_some_and(|v| *v.get_ref());
        Some(MetricSpec {
            query: query?,
            criteria: Criteria { name: name?, check: check?, critical, must_have_data, weight: weight? },
            span: span(raw),
        })
    }

    /// `max`/`min` of a threshold metric.
    fn threshold(&mut self, m: &RawMetric) -> Option<Check> {
        let max = m.max.as_ref().map(|v| *v.get_ref());
        let min = m.min.as_ref().map(|v| *v.get_ref());
        for v in [&m.max, &m.min].into_iter().flatten() {
            if !v.get_ref().is_finite() {
                self.report(
                    Diagnostic::new(span(v), format!("`{}` is not a finite number", v.get_ref()))
                        .with_help("write a number, like max = 0.5"),
                );
                return None;
            }
        }
        if let (Some(lo), Some(hi), Some(at)) = (min, max, m.min.as_ref()) {
            if lo > hi {
                self.report(
                    Diagnostic::new(span(at), format!("`min` ({lo}) is above `max` ({hi})"))
                        .with_help("no value could pass; make min at most max"),
                );
                return None;
            }
        }
        Some(Check::Threshold { max, min })
    }

    /// `direction`, `allowed_change`, `critical_change` of a comparison metric.
    fn comparison(&mut self, m: &RawMetric) -> Option<Check> {
        let directions =
            [("increase", Direction::Increase), ("decrease", Direction::Decrease), ("either", Direction::Either)];
        let direction =
            self.optional(m.direction.as_ref(), Direction::Increase, |v| one_of(v, "`direction` value", &directions));
        let factor = "a factor of at least 1 of the baseline's mean";
        let allowed_change = self.optional(m.allowed_change.as_ref(), None, |v| {
            real(v, "allowed_change", |c| c >= 1.0, &format!("{factor}, like allowed_change = 1.2")).map(Some)
        });
        let critical_change = self.optional(m.critical_change.as_ref(), None, |v| {
            real(
                v,
                "critical_change",
                |c| c > 1.0,
                "a factor above 1 of the baseline's mean, like critical_change = 3.0",
            )
            .map(Some)
        });
        if let (Some(Some(allowed)), Some(Some(critical)), Some(at)) =
            (allowed_change, critical_change, m.critical_change.as_ref())
        {
            if critical <= allowed {
                self.report(
                    Diagnostic::new(
                        span(at),
                        format!("`critical_change` ({critical}) is not above `allowed_change` ({allowed})"),
                    )
                    .with_help(
                        "a change the metric allows cannot also fail the whole analysis; make critical_change larger",
                    ),
                );
                return None;
            }
        }
        Some(Check::Compare {
            direction: direction?,
            allowed_change: allowed_change?,
            critical_change: critical_change?,
        })
    }

    /// One `[[service]]`.
    fn service(&mut self, raw: &Spanned<RawService>, defaults: &RolloutPolicy) -> Option<ServiceSpec> {
        let service = raw.get_ref();
        let name = self.ok(name(&service.name, "service"));
        let version = self.ok(parse_version(&service.version, "`version`"));
        let hosts = self.optional(service.hosts.as_ref(), LabelSelector::all(), |h| selector(h, "hosts"));
        let artifact = self.artifact(&service.artifact);
        let run = self.run(&service.run);
        let hooks = self.hooks(&service.hooks);
        let health = self.each(&service.health, Self::health_check);
        let provides = self.contracts(&service.provides, "provides", parse_version);
        let requires = self.contracts(&service.requires, "requires", |raw, what| {
            parse_range(raw, what).map(|range| Requirement { range, span: span(raw) })
        });
        let depends_on = self.dependencies(service);
        let policy = self.rollout(defaults, &service.rollout());
        Some(ServiceSpec {
            name: ServiceName::new(name?),
            version: version?,
            hosts: hosts?,
            artifact: artifact?,
            run: run?,
            hooks: hooks?,
            health: health?,
            provides: provides?,
            requires: requires?,
            depends_on: depends_on?,
            policy,
            span: span(raw),
        })
    }

    /// `artifact = { url, sha256 }`.
    fn artifact(&mut self, raw: &RawArtifact) -> Option<Artifact> {
        let url = self.ok(artifact_url(&raw.url));
        let sha256 = self.ok(sha256(&raw.sha256));
        Some(Artifact { url: url?, sha256: sha256? })
    }

    /// `run = { command, args, env, stop_timeout }`.
    fn run(&mut self, raw: &RawRun) -> Option<RunSpec> {
        let command = self.ok(command(&raw.command, "run.command"));
        let stop_timeout = self
            .optional(raw.stop_timeout.as_ref(), DEFAULT_STOP_TIMEOUT, |v| duration(v, "stop_timeout", Zero::Allowed));
        Some(RunSpec { command: command?, args: raw.args.clone(), env: raw.env.clone(), stop_timeout: stop_timeout? })
    }

    /// `hooks = { ... }`: each hook, when given, is a non-empty command.
    fn hooks(&mut self, raw: &RawHooks) -> Option<Hooks> {
        let mut hook = |raw: &Option<Spanned<String>>, key: &str| -> Option<Option<String>> {
            match raw {
                Some(raw) => self.ok(command(raw, key)).map(Some),
                None => Some(None),
            }
        };
        let before_install = hook(&raw.before_install, "hooks.before_install");
        let after_install = hook(&raw.after_install, "hooks.after_install");
        let migrate = hook(&raw.migrate, "hooks.migrate");
        let migrate_down = hook(&raw.migrate_down, "hooks.migrate_down");
        let validate = hook(&raw.validate, "hooks.validate");
        Some(Hooks {
            before_install: before_install?,
            after_install: after_install?,
            migrate: migrate?,
            migrate_down: migrate_down?,
            validate: validate?,
        })
    }

    /// One `health` entry: exactly one probe, plus its timing.
    fn health_check(&mut self, raw: &Spanned<RawHealth>) -> Option<HealthCheck> {
        let check = raw.get_ref();
        let probes: Vec<(&str, &Spanned<String>)> = [("http", &check.http), ("tcp", &check.tcp), ("exec", &check.exec)]
            .into_iter()
            .filter_map(|(kind, value)| value.as_ref().map(|v| (kind, v)))
            .collect();
        let probe = match probes.as_slice() {
            [] => {
                self.report(Diagnostic::new(span(raw), "health check has none of `http`, `tcp` or `exec`").with_help(
                    "give it exactly one probe: { http = \"http://127.0.0.1:8080/healthz\" }, \
                         { tcp = \"127.0.0.1:8080\" } or { exec = \"bin/check\" }",
                ));
                None
            }
            [(kind, value)] => self.probe(kind, value, check),
            [(first, _), (second, value), ..] => {
                self.report(
                    Diagnostic::new(span(value), format!("health check sets both `{first}` and `{second}`"))
                        .with_help("a check has exactly one probe: write one `health` entry per probe"),
                );
                None
            }
        };
        let interval =
            self.optional(check.interval.as_ref(), DEFAULT_INTERVAL, |v| duration(v, "interval", Zero::Refused));
        let timeout =
            self.optional(check.timeout.as_ref(), DEFAULT_CHECK_TIMEOUT, |v| duration(v, "timeout", Zero::Refused));
        Some(HealthCheck { probe: probe?, interval: interval?, timeout: timeout? })
    }

    /// The probe of a health check; `expect_status` and `body` belong to `http` only.
    fn probe(&mut self, kind: &str, value: &Spanned<String>, check: &RawHealth) -> Option<Probe> {
        if kind != "http" {
            let http_only =
                [("expect_status", check.expect_status.as_ref().map(span)), ("body", check.body.as_ref().map(span))];
            for (key, at) in http_only.into_iter().filter_map(|(key, at)| at.map(|at| (key, at))) {
                self.report(
                    Diagnostic::new(at, format!("`{key}` only applies to http checks, this is a {kind} check"))
                        .with_help(format!("remove `{key}`")),
                );
            }
        }
        match kind {
            "http" => {
                let url = self.ok(http_url(value));
                let expect_status = self.optional(check.expect_status.as_ref(), DEFAULT_EXPECT_STATUS, expect_status);
                let body = check.body.as_ref().map(|b| b.get_ref().clone());
                Some(Probe::Http { url: url?, expect_status: expect_status?, body })
            }
            "tcp" => self.ok(tcp_addr(value)).map(|addr| Probe::Tcp { addr }),
            _ => self.ok(command(value, "exec")).map(|command| Probe::Exec { command }),
        }
    }

    /// `provides` or `requires`: contract names with a version or range each.
    fn contracts<T>(
        &mut self,
        raw: &RawStringMap,
        key: &str,
        parse: impl Fn(&Spanned<String>, &str) -> Result<T, Diagnostic>,
    ) -> Option<BTreeMap<String, T>> {
        self.each(raw, |c, (contract, value)| {
            let name = c.ok(non_empty(
                contract,
                &format!("contract name in `{key}`"),
                "name the contract, like \"payments-api\"",
            ));
            let parsed = c.ok(parse(value, &format!("contract `{}` in `{key}`", contract.get_ref())));
            Some((name?, parsed?))
        })
        .map(|pairs| pairs.into_iter().collect())
    }

    /// `depends_on`: named services, each once, never the service itself.
    fn dependencies(&mut self, service: &RawService) -> Option<Vec<Dependency>> {
        self.no_repeats(service.depends_on.iter().map(|d| &d.get_ref().service), |name, line| {
            (
                format!("`{name}` is listed twice in `depends_on`"),
                format!("the first entry for `{name}` is on line {line}; list each dependency once"),
            )
        });
        let own_name = service.name.get_ref();
        self.each(&service.depends_on, |c, raw| {
            let dep = raw.get_ref();
            let target = c.ok(name(&dep.service, "service"));
            let kind = c.optional(dep.kind.as_ref(), DepKind::Hard, dep_kind);
            if dep.service.get_ref() == own_name {
                c.report(
                    Diagnostic::new(span(&dep.service), format!("service `{own_name}` depends on itself"))
                        .with_help("remove this entry: a service cannot depend on itself"),
                );
                return None;
            }
            Some(Dependency { service: ServiceName::new(target?), kind: kind?, span: span(raw) })
        })
    }

    /// A `data` dependency needs a migration to wait for: the dependency must have
    /// `hooks.migrate` when it is in this release.
    fn data_dependencies_migrate(&mut self, services: &[Spanned<RawService>]) {
        let mut migrates: HashMap<&str, bool> = HashMap::new();
        for service in services {
            let service = service.get_ref();
            migrates.entry(service.name.get_ref()).or_insert(service.hooks.migrate.is_some());
        }
        for service in services {
            let service = service.get_ref();
            for dep in service.depends_on.iter().map(Spanned::get_ref) {
                let Some(kind) = dep.kind.as_ref().filter(|k| k.get_ref() == DepKind::Data.as_str()) else {
                    continue;
                };
                let target = dep.service.get_ref();
                if migrates.get(target.as_str()) == Some(&false) {
                    self.report(
                        Diagnostic::new(
                            span(kind),
                            format!(
                                "`{}` has a data dependency on `{target}`, which has no `migrate` hook",
                                service.name.get_ref()
                            ),
                        )
                        .with_help(format!("add hooks.migrate to {target} or use kind = \"hard\"")),
                    );
                }
            }
        }
    }

    /// One `[[gate]]`: runs after services of this release; checks something.
    fn gate(&mut self, raw: &Spanned<RawGate>, services: &[&str]) -> Option<GateSpec> {
        let gate = raw.get_ref();
        let name = self.ok(name(&gate.name, "gate"));
        let after = self.gate_after(gate, services);
        let exec = match &gate.exec {
            Some(exec) => {
                let command = self.ok(command(&exec.command, "exec.command"));
                let on = self.optional(exec.on.as_ref(), LabelSelector::all(), |on| selector(on, "exec.on"));
                let timeout = self
                    .optional(exec.timeout.as_ref(), DEFAULT_GATE_TIMEOUT, |v| duration(v, "timeout", Zero::Refused));
                Some(Some(GateExec { command: command?, on: on?, timeout: timeout? }))
            }
            None if gate.approval.required() => Some(None),
            None => {
                self.report(
                    Diagnostic::new(
                        span(raw),
                        format!(
                            "gate `{}` has neither `exec` nor `approval = true`, so it checks nothing",
                            gate.name.get_ref()
                        ),
                    )
                    .with_help(
                        "add exec = { command = \"scripts/smoke.sh\" } or approval = true \
                         (or approval = { by = \"other-than-author\" }), or remove the gate",
                    ),
                );
                None
            }
        };
        let approval_by = self.approval(&gate.approval);
        Some(GateSpec {
            name: name?,
            after: after?,
            exec: exec?,
            approval: gate.approval.required(),
            approval_by: approval_by?,
            span: span(raw),
        })
    }

    /// Who may give the approval of a stage or gate: the open rule for `approval = true`
    /// or `false`; for `approval = { by = ... }`, each condition once, known, and not
    /// both roles.
    fn approval(&mut self, raw: &RawApproval) -> Option<ApprovalRule> {
        let RawApproval::Rule(written) = raw else {
            return Some(ApprovalRule::default());
        };
        let conditions = match written.by.get_ref() {
            RawApprovers::One(text) => vec![Spanned::new(written.by.span(), text.clone())],
            RawApprovers::Many(items) if items.is_empty() => {
                self.report(Diagnostic::new(span(&written.by), "`approval.by` is empty").with_help(
                    "name who may approve, like by = \"other-than-author\" or by = [\"other-than-author\", \"admin\"]; \
                     for any approver write approval = true",
                ));
                return None;
            }
            RawApprovers::Many(items) => items.clone(),
        };
        self.no_repeats(&conditions, |condition, line| {
            (
                format!("`{condition}` is listed twice in `approval.by`"),
                format!("the first `{condition}` is on line {line}; list each condition once"),
            )
        });
        let mut rule = ApprovalRule::default();
        let mut valid = true;
        for condition in &conditions {
            match self.ok(approval_condition(condition)) {
                None => valid = false,
                Some(Condition::OtherThanAuthor) => rule.other_than_author = true,
                Some(Condition::Role(role)) => match rule.role {
                    Some(first) if first != role => {
                        self.report(
                            Diagnostic::new(
                                span(condition),
                                format!("`approval.by` names both `{first}` and `{role}`"),
                            )
                            .with_help(
                                "an admin holds the deployer role too, so the two roles together say no more \
                                     than `admin`: keep `admin` for admins only, or `deployer` for any deployer",
                            ),
                        );
                        valid = false;
                    }
                    _ => rule.role = Some(role),
                },
            }
        }
        valid.then_some(rule)
    }

    /// A gate's `after`: a non-empty list of services in this release.
    fn gate_after(&mut self, gate: &RawGate, services: &[&str]) -> Option<Vec<ServiceName>> {
        let gate_name = gate.name.get_ref();
        if gate.after.get_ref().is_empty() {
            self.report(
                Diagnostic::new(span(&gate.after), format!("gate `{gate_name}` has an empty `after` list"))
                    .with_help("list the services it runs after, like after = [\"payments\"]"),
            );
            return None;
        }
        self.no_repeats(gate.after.get_ref(), |name, line| {
            (
                format!("`{name}` is listed twice in `after`"),
                format!("the first `{name}` is on line {line}; list each service once"),
            )
        });
        self.each(gate.after.get_ref(), |c, service| {
            let name = service.get_ref();
            if services.contains(&name.as_str()) {
                return Some(ServiceName::new(name.as_str()));
            }
            let help = match closest(name, services) {
                Some(near) => format!("did you mean `{near}`? a gate can only wait for services of this release"),
                None => format!("a gate can only wait for services of this release: {}", services.join(", ")),
            };
            c.report(
                Diagnostic::new(
                    span(service),
                    format!("gate `{gate_name}` runs after `{name}`, which is not a service in this release"),
                )
                .with_help(help),
            );
            None
        })
    }
}

/// One condition of `approval.by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    /// `other-than-author`.
    OtherThanAuthor,
    /// `deployer` or `admin`.
    Role(ApproverRole),
}

/// One entry of `approval.by`: `other-than-author` or a role that may approve.
fn approval_condition(raw: &Spanned<String>) -> Result<Condition, Diagnostic> {
    if raw.get_ref() == "viewer" {
        return Err(Diagnostic::new(span(raw), "`viewer` cannot approve: the viewer role may only read")
            .with_help("name a role that may approve: `deployer` (any deployer or admin) or `admin`"));
    }
    let roles = ApproverRole::ALL.map(|role| (role.as_str(), Condition::Role(role)));
    let options = [[("other-than-author", Condition::OtherThanAuthor)].as_slice(), &roles].concat();
    one_of(raw, "`approval.by` value", &options)
}

/// The span of a spanned value.
fn span<T>(value: &Spanned<T>) -> Span {
    Span::from(value.span())
}

/// A release, service, stage or gate name: `[a-z0-9-]{1,63}`.
/// `changed_at`: a TOML offset date-time (`2026-12-01T09:30:00Z`, or with `+01:00`), as
/// Unix milliseconds.
fn changed_at(raw: &Spanned<toml::value::Datetime>) -> Result<i64, Diagnostic> {
    let at = raw.get_ref();
    let bad = |why: &str| {
        Diagnostic::new(span(raw), format!("`changed_at` {why}"))
            .with_help("write a date, a time and an offset, like changed_at = 2026-12-01T09:30:00Z")
    };
    let (Some(date), Some(clock), Some(offset)) = (at.date, at.time, at.offset) else {
        return Err(bad(&format!("is {at}, which is not a point in time")));
    };
    let minutes = match offset {
        toml::value::Offset::Z => 0,
        toml::value::Offset::Custom { minutes } => minutes,
    };
    let month = time::Month::try_from(date.month).map_err(|e| bad(&format!("has a bad month: {e}")))?;
    let day = time::Date::from_calendar_date(i32::from(date.year), month, date.day)
        .map_err(|e| bad(&format!("is not a date: {e}")))?;
    let clock =
        time::Time::from_hms_nano(clock.hour, clock.minute, clock.second.unwrap_or(0), clock.nanosecond.unwrap_or(0))
            .map_err(|e| bad(&format!("is not a time of day: {e}")))?;
    let offset = time::UtcOffset::from_whole_seconds(i32::from(minutes) * 60)
        .map_err(|e| bad(&format!("has a bad offset: {e}")))?;
    let ms = time::PrimitiveDateTime::new(day, clock).assume_offset(offset).unix_timestamp_nanos() / 1_000_000;
    i64::try_from(ms).map_err(|_| bad("is out of range"))
}

fn name(raw: &Spanned<String>, what: &str) -> Result<String, Diagnostic> {
    let text = raw.get_ref();
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    let reason = if text.is_empty() {
        "it is empty".to_owned()
    } else if text.chars().count() > MAX_NAME_LEN {
        format!("it has {} characters", text.chars().count())
    } else if let Some(bad) = text.chars().find(|&c| !allowed(c)) {
        format!("`{bad}` is not allowed")
    } else {
        return Ok(text.clone());
    };
    let suggestion: String =
        text.to_lowercase().chars().map(|c| if allowed(c) { c } else { '-' }).take(MAX_NAME_LEN).collect();
    let rule = "use 1 to 63 lowercase letters, digits or `-`";
    let help = if suggestion.is_empty() || suggestion == *text {
        rule.to_owned()
    } else {
        format!("{rule}, like `{suggestion}`")
    };
    Err(Diagnostic::new(
        span(raw),
        format!("invalid {what} name `{text}`: {reason}; {what} names must match [a-z0-9-]{{1,63}}"),
    )
    .with_help(help))
}

/// A semantic version; `what` says whose (`` `version` ``, "contract `x` in `provides`").
fn parse_version(raw: &Spanned<String>, what: &str) -> Result<Version, Diagnostic> {
    Version::parse(raw.get_ref()).map_err(|e| {
        Diagnostic::new(span(raw), format!("invalid version `{}` for {what}: {e}", raw.get_ref()))
            .with_help("use a semantic version MAJOR.MINOR.PATCH, like \"2.4.0\"")
    })
}

/// A semver range of a `requires` entry.
fn parse_range(raw: &Spanned<String>, what: &str) -> Result<VersionReq, Diagnostic> {
    VersionReq::parse(raw.get_ref()).map_err(|e| {
        Diagnostic::new(span(raw), format!("invalid semver range `{}` for {what}: {e}", raw.get_ref()))
            .with_help("use a semver range like \"^3.1\", \">=2.0, <3\" or \"=1.4.2\"")
    })
}

/// A humantime duration (`"30s"`, `"1h30m"`, `"500ms"`).
fn duration(raw: &Spanned<String>, key: &str, zero: Zero) -> Result<Duration, Diagnostic> {
    let text = raw.get_ref();
    let value = humantime::parse_duration(text).map_err(|e| {
        Diagnostic::new(span(raw), format!("invalid duration `{text}` for `{key}`: {e}")).with_help(DURATION_HELP)
    })?;
    if zero == Zero::Refused && value.is_zero() {
        return Err(Diagnostic::new(span(raw), format!("`{key}` cannot be zero"))
            .with_help("a zero limit can never be met; use a positive duration like \"30s\""));
    }
    Ok(value)
}

/// A host count: hosts (`1`, 0 or more) or a percentage (`"10%"`, above 0, at most 100).
fn count(raw: &Spanned<RawCount>, key: &str) -> Result<HostCount, Diagnostic> {
    let help = "write a number of hosts without quotes, like 2, or a percentage above 0% and \
                at most 100%, like \"10%\" or \"12.5%\"";
    let problem = match raw.get_ref() {
        RawCount::Number(n) => match u32::try_from(*n) {
            Ok(hosts) => return Ok(HostCount::Hosts(hosts)),
            Err(_) if *n < 0 => format!("`{key}` cannot be negative ({n} hosts)"),
            Err(_) => format!("`{key}` of {n} hosts is too large"),
        },
        RawCount::Text(text) => match percent(text) {
            Ok(basis_points) => return Ok(HostCount::Percent(basis_points)),
            Err(reason) => format!("invalid percentage \"{text}\" for `{key}`: {reason}"),
        },
    };
    Err(Diagnostic::new(span(raw), problem).with_help(help))
}

/// A percentage in hundredths of a percent: `"12.5%"` is 1250.
fn percent(text: &str) -> Result<u32, String> {
    let number = text.trim().strip_suffix('%').ok_or("a quoted count must be a percentage ending in `%`")?;
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) {
        return Err(format!("`{number}` is not a number"));
    }
    if fraction.len() > 2 {
        return Err("use at most two decimal places".to_owned());
    }
    let whole: u32 = whole.parse().map_err(|_| "it is more than 100%".to_owned())?;
    let fraction: u32 = format!("{fraction:0<2}").parse().map_err(|_| format!("`{number}` is not a number"))?;
    match whole.checked_mul(100).and_then(|w| w.checked_add(fraction)) {
        Some(0) => Err("it must be more than 0%".to_owned()),
        Some(basis_points @ 1..=10_000) => Ok(basis_points),
        _ => Err("it is more than 100%".to_owned()),
    }
}

/// `batches`: a non-empty list of cumulative sizes, growing within each unit.
fn batches(raw: &Spanned<Vec<Spanned<RawCount>>>) -> Result<Vec<HostCount>, Vec<Diagnostic>> {
    if raw.get_ref().is_empty() {
        return Err(vec![
            Diagnostic::new(span(raw), "`batches` is empty")
                .with_help("list at least one cumulative size, like batches = [\"25%\", \"100%\"]"),
        ]);
    }
    let mut problems = Vec::new();
    let mut sizes = Vec::new();
    let (mut last_hosts, mut last_percent) = (None, None);
    for item in raw.get_ref() {
        let size = match count(item, "batches") {
            Ok(size) => size,
            Err(problem) => {
                problems.push(problem);
                continue;
            }
        };
        let (amount, last) = match size {
            HostCount::Hosts(n) => (n, &mut last_hosts),
            HostCount::Percent(bp) => (bp, &mut last_percent),
        };
        let problem = match *last {
            _ if amount == 0 => Some("a batch of 0 hosts deploys nothing".to_owned()),
            Some((previous, before)) if amount <= previous => {
                Some(format!("batch size {size} is not larger than the {before} before it"))
            }
            _ => None,
        };
        match problem {
            Some(problem) => problems.push(Diagnostic::new(span(item), problem).with_help(
                "batch sizes are cumulative: each must be larger than the earlier ones in the same unit, \
                 like [2, \"50%\", \"100%\"]",
            )),
            None => {
                *last = Some((amount, size));
                sizes.push(size);
            }
        }
    }
    if problems.is_empty() { Ok(sizes) } else { Err(problems) }
}

/// A metric's name: `[a-z0-9_-]{1,63}` (Prometheus-style names have underscores).
fn metric_name(raw: &Spanned<String>) -> Result<String, Diagnostic> {
    let text = raw.get_ref();
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    if !text.is_empty() && text.chars().count() <= MAX_NAME_LEN && text.chars().all(allowed) {
        return Ok(text.clone());
    }
    Err(Diagnostic::new(span(raw), format!("invalid metric name `{text}`; metric names must match [a-z0-9_-]{{1,63}}"))
        .with_help("use 1 to 63 lowercase letters, digits, `_` or `-`, like \"error_ratio\""))
}

/// A metric's PromQL template: not blank, placeholders known.
fn metric_query(raw: &Spanned<String>) -> Result<String, Diagnostic> {
    let text = non_empty(
        raw,
        "`query`",
        "give a PromQL query, like 'sum(rate(http_requests_total{host=~\"{{hosts}}\"}[1m]))'",
    )?;
    analysis::query::check(&text).map_err(|(range, why)| {
        // The template's bytes start after the opening quote(s) of the TOML string.
        let outer = raw.span();
        let quote = raw_quote_len(outer.end - outer.start, text.len());
        let at = Span::new(outer.start + quote + range.start, outer.start + quote + range.end);
        Diagnostic::new(at, format!("bad placeholder in `query`: {why}")).with_help(format!(
            "a query may use {}",
            analysis::query::PLACEHOLDERS.map(|p| format!("{{{{{p}}}}}")).join(", ")
        ))
    })?;
    Ok(text)
}

/// How many bytes of quotes open a TOML string of `span_len` bytes holding `text_len`
/// bytes of text: 1 or 3, when the string has no escapes; 0 when it cannot be told.
fn raw_quote_len(span_len: usize, text_len: usize) -> usize {
    match span_len.checked_sub(text_len) {
        Some(2) => 1,
        Some(6) => 3,
        _ => 0,
    }
}

/// A whole number of at least `min` that fits a `u32`.
fn whole(raw: &Spanned<i64>, key: &str, min: u32, help: &str) -> Result<u32, Diagnostic> {
    match u32::try_from(*raw.get_ref()) {
        Ok(n) if n >= min => Ok(n),
        _ => Err(Diagnostic::new(
            span(raw),
            format!("`{key}` must be a whole number of at least {min}, not {}", raw.get_ref()),
        )
        .with_help(help.to_owned())),
    }
}

/// A number that `ok` accepts (finite always).
fn real(raw: &Spanned<f64>, key: &str, ok: impl Fn(f64) -> bool, help: &str) -> Result<f64, Diagnostic> {
    let value = *raw.get_ref();
    if value.is_finite() && ok(value) {
        return Ok(value);
    }
    Err(Diagnostic::new(span(raw), format!("`{key}` cannot be {value}")).with_help(format!("write a number {help}")))
}

/// `max_failed`: a number of hosts, 0 or more.
fn max_failed(raw: &Spanned<i64>) -> Result<u32, Diagnostic> {
    u32::try_from(*raw.get_ref()).map_err(|_| {
        Diagnostic::new(span(raw), format!("`max_failed` must be 0 or more hosts, not {}", raw.get_ref()))
            .with_help("write how many failed hosts to tolerate per service per stage, like max_failed = 0")
    })
}

/// One of a fixed set of spellings.
fn one_of<T: Copy>(raw: &Spanned<String>, what: &str, options: &[(&str, T)]) -> Result<T, Diagnostic> {
    let text = raw.get_ref();
    if let Some((_, value)) = options.iter().find(|(spelling, _)| *spelling == text.as_str()) {
        return Ok(*value);
    }
    let spellings: Vec<&str> = options.iter().map(|(spelling, _)| *spelling).collect();
    let expected = format!("expected one of {}", spellings.join(", "));
    let help = match closest(text, &spellings) {
        Some(near) => format!("did you mean `{near}`? {expected}"),
        None => expected,
    };
    Err(Diagnostic::new(span(raw), format!("unknown {what} `{text}`")).with_help(help))
}

/// The `kind` of a dependency.
fn dep_kind(raw: &Spanned<String>) -> Result<DepKind, Diagnostic> {
    one_of(raw, "dependency kind", &DepKind::ALL.map(|k| (k.as_str(), k)))
}

/// A text that must not be blank.
fn non_empty(raw: &Spanned<String>, what: &str, help: &str) -> Result<String, Diagnostic> {
    if raw.get_ref().trim().is_empty() {
        return Err(Diagnostic::new(span(raw), format!("{what} is empty")).with_help(help.to_owned()));
    }
    Ok(raw.get_ref().clone())
}

/// A command to run (`run.command`, a hook, an exec check): not blank.
fn command(raw: &Spanned<String>, key: &str) -> Result<String, Diagnostic> {
    non_empty(raw, &format!("`{key}`"), "give the command to run, like \"bin/app --check\"")
}

/// A label selector: every label name and value non-empty.
fn selector(raw: &Spanned<RawStringMap>, key: &str) -> Result<LabelSelector, Vec<Diagnostic>> {
    let mut problems = Vec::new();
    for (label, value) in raw.get_ref() {
        if label.get_ref().trim().is_empty() {
            problems.push(
                Diagnostic::new(span(label), format!("empty label name in `{key}`"))
                    .with_help("select hosts by label name and value, like { role = \"web\" }"),
            );
        } else if value.get_ref().trim().is_empty() {
            problems.push(
                Diagnostic::new(span(value), format!("empty value for label `{}` in `{key}`", label.get_ref()))
                    .with_help(format!("give `{}` the value hosts must carry, or remove the label", label.get_ref())),
            );
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(LabelSelector(raw.get_ref().iter().map(|(k, v)| (k.get_ref().clone(), v.get_ref().clone())).collect()))
}

/// An artifact URL: `http://`, `https://` or `file://` with something after it.
fn artifact_url(raw: &Spanned<String>) -> Result<String, Diagnostic> {
    let url = raw.get_ref();
    let problem = match url.split_once("://") {
        None => format!("artifact url `{url}` has no scheme"),
        Some((_, "")) => format!("artifact url `{url}` has nothing after the scheme"),
        Some((scheme, _)) if ["http", "https", "file"].contains(&scheme.to_ascii_lowercase().as_str()) => {
            return Ok(url.clone());
        }
        Some((scheme, _)) => format!("artifact url scheme `{scheme}` is not supported"),
    };
    Err(Diagnostic::new(span(raw), problem).with_help("use an http://, https:// or file:// URL of a tar or tar.gz"))
}

/// An artifact's SHA-256: exactly 64 hex digits, stored lowercase.
fn sha256(raw: &Spanned<String>) -> Result<String, Diagnostic> {
    let text = raw.get_ref();
    let length = text.chars().count();
    let problem = if length != 64 {
        format!("sha256 must be 64 hex digits, this one has {length} characters")
    } else if let Some(bad) = text.chars().find(|c| !c.is_ascii_hexdigit()) {
        format!("sha256 contains `{bad}`, which is not a hex digit")
    } else {
        return Ok(text.to_ascii_lowercase());
    };
    Err(Diagnostic::new(span(raw), problem)
        .with_help("use the artifact's full SHA-256 in hex, as `sha256sum <artifact>` prints it"))
}

/// The URL of an http health check.
fn http_url(raw: &Spanned<String>) -> Result<String, Diagnostic> {
    let url = raw.get_ref();
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Ok(url.clone());
    }
    Err(Diagnostic::new(span(raw), format!("http check url `{url}` does not start with http:// or https://"))
        .with_help("write the full URL, like \"http://127.0.0.1:8080/healthz\""))
}

/// The `host:port` of a tcp health check.
fn tcp_addr(raw: &Spanned<String>) -> Result<String, Diagnostic> {
    let addr = raw.get_ref();
    let valid =
        addr.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if valid {
        return Ok(addr.clone());
    }
    Err(Diagnostic::new(span(raw), format!("tcp check address `{addr}` is not host:port"))
        .with_help("write the host and port to connect to, like \"127.0.0.1:8080\""))
}

/// An http check's `expect_status`: an HTTP status code, 100 to 599.
fn expect_status(raw: &Spanned<i64>) -> Result<u16, Diagnostic> {
    match u16::try_from(*raw.get_ref()) {
        Ok(status @ 100..=599) => Ok(status),
        _ => Err(Diagnostic::new(span(raw), format!("`expect_status` {} is not an HTTP status code", raw.get_ref()))
            .with_help("use a status between 100 and 599, like 200")),
    }
}
