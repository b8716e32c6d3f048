//! Canary analysis in the spec: `[defaults.analysis]`, `[[defaults.metric]]` and their
//! per-service forms parse to the policy the engine judges with (a service's metric
//! replaces the default of the same name, its analysis keys override one by one); every
//! bad value is refused at its line and column with what to write instead.

use flotilla_shared::analysis::{Check, Direction};
use flotilla_shared::spec::ReleaseSpec;

use super::{SourceFile, assert_error, assert_help, err, errors, lines, parse, render, with_service};

/// A valid compare metric's query (selects the side's hosts).
const QUERY: &str = r#"query = 'rate(errors{host=~"{{hosts}}"}[1m])'"#;

fn parse_ok(text: &str) -> ReleaseSpec {
    match parse(&SourceFile::new("release.toml", text)) {
        Ok(spec) => spec,
        Err(errors) => panic!("the spec should parse:\n{errors}"),
    }
}

/// The service `payments` (lines 2 to 6), then `[[defaults.metric]]` lines from line 7.
fn with_default_metric(keys: &[&str]) -> String {
    with_service(&[&["[[defaults.metric]]"], keys].concat())
}

#[test]
fn the_example_spec_parses_with_every_metric_where_it_belongs() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples/canary.toml"))
        .expect("the example is readable");
    let spec = parse_ok(&text);
    let names = |service: &str| -> Vec<String> {
        spec.service(service).unwrap().policy.metrics.iter().map(|m| m.criteria.name.clone()).collect()
    };
    assert_eq!(names("payments"), ["error_ratio", "p99_latency", "p99_ceiling"]);
    assert_eq!(names("checkout"), ["error_ratio", "p99_latency"]);
    let payments = &spec.service("payments").unwrap().policy;
    let checkout = &spec.service("checkout").unwrap().policy;
    assert!(payments.analyses() && checkout.analyses());
    assert_eq!(payments.analysis.settings.samples, 6);
    assert_eq!((checkout.analysis.settings.samples, checkout.analysis.settings.marginal_score), (10, 60.0));
    assert_eq!(checkout.analysis.settings.pass_score, 95.0, "keys a service does not set come from the defaults");
    let error_ratio = &payments.metrics[0].criteria;
    assert!(error_ratio.critical && error_ratio.must_have_data);
    assert_eq!(
        error_ratio.check,
        Check::Compare { direction: Direction::Increase, allowed_change: None, critical_change: None }
    );
    assert_eq!(
        payments.metrics[1].criteria.check,
        Check::Compare { direction: Direction::Increase, allowed_change: Some(1.2), critical_change: Some(3.0) }
    );
    assert_eq!(payments.metrics[2].criteria.check, Check::Threshold { max: Some(0.5), min: None });
}

#[test]
fn a_service_metric_replaces_the_default_of_its_name_and_analysis_can_be_turned_off() {
    let text = lines(&[
        r#"release = "r""#,
        "[[defaults.metric]]",
        r#"name = "errors""#,
        QUERY,
        "[[service]]",
        r#"name = "a""#,
        r#"version = "1.0.0""#,
        super::ARTIFACT,
        r#"run = { command = "bin/a" }"#,
        "[[service.metric]]",
        r#"name = "errors""#,
        QUERY,
        r#"direction = "either""#,
        "[[service]]",
        r#"name = "b""#,
        r#"version = "1.0.0""#,
        super::ARTIFACT,
        r#"run = { command = "bin/b" }"#,
        "[service.analysis]",
        "enabled = false",
    ]);
    let spec = parse_ok(&text);
    let a = &spec.service("a").unwrap().policy;
    assert_eq!(a.metrics.len(), 1, "replaced, not added");
    assert!(matches!(a.metrics[0].criteria.check, Check::Compare { direction: Direction::Either, .. }));
    let b = &spec.service("b").unwrap().policy;
    assert_eq!(b.metrics.len(), 1);
    assert!(!b.analyses(), "enabled = false turns analysis off");
}

#[test]
fn an_unknown_placeholder_is_refused_where_it_is_written() {
    let e = err(&with_default_metric(&[r#"name = "errors""#, r#"query = 'rate(errors{host=~"{{host}}"}[1m])'"#]));
    assert_error(&e, "bad placeholder in `query`: unknown placeholder `{{host}}`", 9, 29);
    assert_help(&e, "a query may use {{service}}, {{version}}, {{hosts}}, {{interval}}");
}

#[test]
fn a_comparison_whose_query_is_the_same_on_both_sides_is_refused() {
    let e =
        err(&with_default_metric(&[r#"name = "errors""#, r#"query = 'sum(rate(errors{service="{{service}}"}[1m]))'"#]));
    assert_error(&e, "the query of metric `errors` is the same for the canary and the baseline", 9, 9);
    assert_help(&e, r#"host=~"{{hosts}}""#);
}

#[test]
fn a_metric_is_a_comparison_or_a_threshold_never_both() {
    let e = err(&with_default_metric(&[r#"name = "errors""#, QUERY, "max = 0.1", r#"direction = "increase""#]));
    assert_error(&e, "metric `errors` sets both a threshold and a comparison", 11, 13);
    assert_help(&e, "split it into two metrics");
}

#[test]
fn bad_metric_values_are_each_refused_at_once() {
    let text = with_default_metric(&[
        r#"name = "Errors!""#,
        QUERY,
        r#"direction = "up""#,
        "allowed_change = 0.5",
        "weight = 0",
    ]);
    let all = errors(&text);
    let text = render(&all);
    assert_eq!(all.len(), 4, "{text}");
    assert_error(&all[0], "invalid metric name `Errors!`", 8, 8);
    assert_error(&all[1], "unknown `direction` value `up`", 10, 13);
    assert_help(&all[1], "expected one of increase, decrease, either");
    assert_error(&all[2], "`allowed_change` cannot be 0.5", 11, 18);
    assert_error(&all[3], "`weight` must be a whole number of at least 1, not 0", 12, 10);
}

#[test]
fn critical_change_must_be_beyond_allowed_change() {
    let e = err(&with_default_metric(&[r#"name = "errors""#, QUERY, "allowed_change = 2.0", "critical_change = 1.5"]));
    assert_error(&e, "`critical_change` (1.5) is not above `allowed_change` (2)", 11, 19);
}

#[test]
fn a_threshold_with_min_above_max_is_refused() {
    let e = err(&with_default_metric(&[r#"name = "latency""#, "query = 'latency'", "max = 0.1", "min = 0.5"]));
    assert_error(&e, "`min` (0.5) is above `max` (0.1)", 11, 7);
}

#[test]
fn duplicate_metric_names_in_one_table_are_refused() {
    let e = err(&with_service(&[
        "[[defaults.metric]]",
        r#"name = "errors""#,
        QUERY,
        "[[defaults.metric]]",
        r#"name = "errors""#,
        QUERY,
    ]));
    assert_error(&e, "duplicate metric name `errors`", 11, 8);
    assert_help(&e, "the first metric `errors` is defined on line 8");
}

#[test]
fn bad_analysis_settings_are_each_refused_at_once() {
    let all = errors(&with_service(&[
        "[defaults.analysis]",
        "confidence = 1.5",
        "pass_score = 120",
        "samples = 0",
        r#"interval = "0s""#,
    ]));
    let text = render(&all);
    assert_eq!(all.len(), 4, "{text}");
    assert_error(&all[0], "`confidence` cannot be 1.5", 8, 14);
    assert_help(&all[0], "above 0 and below 1, like confidence = 0.98");
    assert_error(&all[1], "`pass_score` cannot be 120", 9, 14);
    assert_error(&all[2], "`samples` must be a whole number of at least 1, not 0", 10, 11);
    assert_error(&all[3], "`interval` cannot be zero", 11, 12);
}

#[test]
fn a_marginal_score_above_the_pass_score_is_refused() {
    let e = err(&with_service(&["[defaults.analysis]", "pass_score = 80", "marginal_score = 90"]));
    assert_error(&e, "`marginal_score` (90) is above `pass_score` (80)", 9, 18);
}

#[test]
fn an_unknown_analysis_key_suggests_the_closest() {
    let e = err(&with_service(&["[defaults.analysis]", r#"intervall = "10s""#]));
    assert_error(&e, "unknown key `intervall`", 8, 1);
    assert_help(&e, "did you mean `interval`?");
}
