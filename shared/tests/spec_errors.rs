//! Every kind of bad release spec is refused with a clear message, the line and column
//! of the offending text, and help that says what to do.

use flotilla_shared::spec::{SourceFile, SpecError, SpecErrors, parse};

/// Approval rules (`approval = { by = ... }`), good and bad.
#[path = "spec_errors/approvals.rs"]
mod approvals;

/// Canary analysis settings and metrics, good and bad.
#[path = "spec_errors/analysis.rs"]
mod analysis;

/// A valid artifact line (64 hex digits).
const ARTIFACT: &str = r#"artifact = { url = "https://example.com/p.tar.gz", sha256 = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" }"#;

/// Joins lines into a spec, so each test shows its line numbers plainly.
fn lines(lines: &[&str]) -> String {
    lines.join("\n") + "\n"
}

/// A spec with one valid service `payments` on lines 2 to 6; `extra` starts on line 7.
fn with_service(extra: &[&str]) -> String {
    let base = [
        r#"release = "r""#,
        "[[service]]",
        r#"name = "payments""#,
        r#"version = "1.0.0""#,
        ARTIFACT,
        r#"run = { command = "bin/payments" }"#,
    ];
    lines(&[&base[..], extra].concat())
}

/// Every error of a spec that must not parse.
fn errors(text: &str) -> Vec<SpecError> {
    match parse(&SourceFile::new("release.toml", text)) {
        Ok(spec) => panic!("the spec parsed, expected errors: {spec:#?}"),
        Err(errors) => errors.0,
    }
}

/// Renders errors the way the CLI prints them, for assertion messages.
fn render(errors: &[SpecError]) -> String {
    SpecErrors(errors.to_vec()).to_string()
}

/// The one error of a spec that must not parse.
fn err(text: &str) -> SpecError {
    let mut all = errors(text);
    assert_eq!(all.len(), 1, "expected exactly one error, got:\n{}", render(&all));
    all.remove(0)
}

/// Asserts the message contains `message` and the error is at `line`:`column`.
#[track_caller]
fn assert_error(error: &SpecError, message: &str, line: usize, column: usize) {
    assert!(error.message.contains(message), "message lacks {message:?}:\n{error}");
    assert_eq!((error.line, error.column), (line, column), "wrong position:\n{error}");
}

/// Asserts the help contains `help`.
#[track_caller]
fn assert_help(error: &SpecError, help: &str) {
    let actual = error.help.as_deref().unwrap_or_default();
    assert!(actual.contains(help), "help lacks {help:?}:\n{error}");
}

// ---- unknown keys ----

#[test]
fn unknown_top_level_key_suggests_the_closest_key() {
    let e = err(&lines(&[r#"release = "r""#, "[[services]]", r#"name = "a""#]));
    assert_error(&e, "unknown key `services` at the top level", 2, 3);
    assert_help(&e, "did you mean `service`?");
}

#[test]
fn unknown_key_in_defaults_suggests_the_closest_key_and_lists_the_valid_ones() {
    let e = err(&lines(&[r#"release = "r""#, "[defaults]", "canry = 1"]));
    assert_error(&e, "unknown key `canry` in [defaults]", 3, 1);
    assert_help(&e, "did you mean `canary`? expected one of: `canary`, `batches`, `bake`");
}

#[test]
fn unknown_key_in_a_service_names_the_service() {
    let e = err(&with_service(&["helth = []"]));
    assert_error(&e, "unknown key `helth` in [[service]] `payments`", 7, 1);
    assert_help(&e, "did you mean `health`?");
}

#[test]
fn unknown_key_in_run_names_the_table_and_the_service() {
    let e = err(&lines(&[
        r#"release = "r""#,
        "[[service]]",
        r#"name = "payments""#,
        r#"version = "1.0.0""#,
        ARTIFACT,
        r#"run = { command = "bin/payments", arg = ["-v"] }"#,
    ]));
    assert_error(&e, "unknown key `arg` in `run` of [[service]] `payments`", 6, 35);
    assert_help(&e, "did you mean `args`?");
}

#[test]
fn unknown_key_in_artifact_names_the_table() {
    let e = err(&lines(&[
        r#"release = "r""#,
        "[[service]]",
        r#"name = "payments""#,
        r#"version = "1.0.0""#,
        r#"artifact = { url = "https://example.com/p.tar.gz", sha265 = "aa" }"#,
        r#"run = { command = "bin/payments" }"#,
    ]));
    assert_error(&e, "unknown key `sha265` in `artifact` of [[service]] `payments`", 5, 52);
    assert_help(&e, "did you mean `sha256`?");
}

#[test]
fn unknown_key_in_hooks_suggests_the_hook() {
    let e = err(&with_service(&[r#"hooks = { migrat = "bin/migrate up" }"#]));
    assert_error(&e, "unknown key `migrat` in `hooks` of [[service]] `payments`", 7, 11);
    assert_help(&e, "did you mean `migrate`?");
}

#[test]
fn unknown_key_in_a_health_check_names_which_check() {
    let e = err(&with_service(&[r#"health = [{ tcp = "127.0.0.1:80" }, { exec = "bin/ping", intervall = "2s" }]"#]));
    assert_error(&e, "unknown key `intervall` in `health` entry 2 of [[service]] `payments`", 7, 58);
    assert_help(&e, "did you mean `interval`?");
}

#[test]
fn unknown_key_in_a_stage_names_the_stage() {
    let e = err(&lines(&[r#"release = "r""#, "[[stage]]", r#"name = "canary""#, r#"host = { cell = "canary" }"#]));
    assert_error(&e, "unknown key `host` in [[stage]] `canary`", 4, 1);
    assert_help(&e, "did you mean `hosts`?");
}

#[test]
fn unknown_key_in_a_gate_names_the_gate() {
    let e = err(&with_service(&["[[gate]]", r#"name = "smoke""#, r#"aftr = ["payments"]"#]));
    assert_error(&e, "unknown key `aftr` in [[gate]] `smoke`", 9, 1);
    assert_help(&e, "did you mean `after`?");
}

#[test]
fn unknown_key_in_a_dependency_names_the_entry() {
    let e = err(&with_service(&[r#"depends_on = [{ service = "auth", knd = "data" }]"#]));
    assert_error(&e, "unknown key `knd` in `depends_on` entry 1 of [[service]] `payments`", 7, 35);
    assert_help(&e, "did you mean `kind`?");
}

// ---- missing keys ----

#[test]
fn missing_release_points_at_the_start_of_the_file() {
    let e = err(&lines(&["[defaults]", "canary = 1"]));
    assert_error(&e, "missing key `release` at the top level", 1, 1);
    assert_help(&e, "add `release = ");
}

#[test]
fn missing_service_name_points_at_the_service_table() {
    let e = err(&lines(&[
        r#"release = "r""#,
        "[[service]]",
        r#"version = "1.0.0""#,
        ARTIFACT,
        r#"run = { command = "bin/payments" }"#,
    ]));
    assert_error(&e, "missing key `name` in [[service]] number 1", 2, 1);
    assert_help(&e, "add `name = ");
}

#[test]
fn missing_service_version_names_the_service() {
    let e = err(&lines(&[
        r#"release = "r""#,
        "[[service]]",
        r#"name = "payments""#,
        ARTIFACT,
        r#"run = { command = "bin/payments" }"#,
    ]));
    assert_error(&e, "missing key `version` in [[service]] `payments`", 2, 1);
    assert_help(&e, r#"add `version = "2.4.0"`"#);
}

#[test]
fn missing_artifact_names_the_service() {
    let e = err(&lines(&[
        r#"release = "r""#,
        "[[service]]",
        r#"name = "payments""#,
        r#"version = "1.0.0""#,
        r#"run = { command = "bin/payments" }"#,
    ]));
    assert_error(&e, "missing key `artifact` in [[service]] `payments`", 2, 1);
    assert_help(&e, "add `artifact = { url = ");
}

#[test]
fn missing_run_names_the_service() {
    let e = err(&lines(&[r#"release = "r""#, "[[service]]", r#"name = "payments""#, r#"version = "1.0.0""#, ARTIFACT]));
    assert_error(&e, "missing key `run` in [[service]] `payments`", 2, 1);
    assert_help(&e, r#"add `run = { command = "bin/app" }`"#);
}

#[test]
fn missing_artifact_url_points_at_the_artifact_table() {
    let e = err(&lines(&[
        r#"release = "r""#,
        "[[service]]",
        r#"name = "payments""#,
        r#"version = "1.0.0""#,
        r#"artifact = { sha256 = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" }"#,
        r#"run = { command = "bin/payments" }"#,
    ]));
    assert_error(&e, "missing key `url` in `artifact` of [[service]] `payments`", 5, 12);
}

#[test]
fn missing_artifact_sha256_points_at_the_artifact_table() {
    let e = err(&lines(&[
        r#"release = "r""#,
        "[[service]]",
        r#"name = "payments""#,
        r#"version = "1.0.0""#,
        "[service.artifact]",
        r#"url = "https://example.com/p.tar.gz""#,
        "[service.run]",
        r#"command = "bin/payments""#,
    ]));
    assert_error(&e, "missing key `sha256` in `artifact` of [[service]] `payments`", 5, 1);
    assert_help(&e, "add `sha256 = ");
}

#[test]
fn missing_run_command_points_at_the_run_table() {
    let e = err(&lines(&[
        r#"release = "r""#,
        "[[service]]",
        r#"name = "payments""#,
        r#"version = "1.0.0""#,
        ARTIFACT,
        r#"run = { args = ["-v"] }"#,
    ]));
    assert_error(&e, "missing key `command` in `run` of [[service]] `payments`", 6, 7);
}

// ---- TOML shape and syntax ----

#[test]
fn wrong_type_names_the_key_and_both_types() {
    let e = err(&lines(&["release = 3"]));
    assert_error(&e, "wrong type for `release` at the top level: expected a string, found integer `3`", 1, 11);
    assert_help(&e, r#"write it like `release = "#);
}

#[test]
fn toml_syntax_errors_keep_tomls_position() {
    let e = err(&lines(&[r#"release = "r""#, "[defaults", "canary = 1"]));
    assert_error(&e, "invalid TOML", 2, 10);
}

#[test]
fn a_key_set_twice_is_named() {
    let e = err(&lines(&[r#"release = "r""#, r#"release = "s""#]));
    assert_error(&e, "duplicate key `release`", 2, 1);
}

// ---- names ----

#[test]
fn release_name_must_match_the_name_rule() {
    let e = err(&lines(&[r#"release = "Checkout_2026""#]));
    assert_error(&e, "invalid release name `Checkout_2026`: `C` is not allowed", 1, 11);
    assert!(e.message.contains("[a-z0-9-]{1,63}"), "{e}");
    assert_help(&e, "like `checkout-2026`");
}

#[test]
fn service_name_longer_than_63_characters_is_refused() {
    let long = "a".repeat(64);
    let name = format!(r#"name = "{long}""#);
    let e = err(&lines(&[
        r#"release = "r""#,
        "[[service]]",
        &name,
        r#"version = "1.0.0""#,
        ARTIFACT,
        r#"run = { command = "bin/payments" }"#,
    ]));
    assert_error(&e, "it has 64 characters; service names must match [a-z0-9-]{1,63}", 3, 8);
}

// ---- duplicates ----

#[test]
fn duplicate_service_names_point_at_the_second_definition() {
    let e = err(&with_service(&[
        "[[service]]",
        r#"name = "payments""#,
        r#"version = "1.0.1""#,
        ARTIFACT,
        r#"run = { command = "bin/payments" }"#,
    ]));
    assert_error(&e, "duplicate service name `payments`", 8, 8);
    assert_help(&e, "the first service `payments` is defined on line 3");
}

#[test]
fn duplicate_stage_names_point_at_the_second_definition() {
    let e = err(&lines(&[
        r#"release = "r""#,
        "[[stage]]",
        r#"name = "zone-a""#,
        r#"hosts = { zone = "a" }"#,
        "[[stage]]",
        r#"name = "zone-a""#,
    ]));
    assert_error(&e, "duplicate stage name `zone-a`", 6, 8);
    assert_help(&e, "line 3");
}

#[test]
fn duplicate_gate_names_point_at_the_second_definition() {
    let e = err(&with_service(&[
        "[[gate]]",
        r#"name = "smoke""#,
        r#"after = ["payments"]"#,
        "approval = true",
        "[[gate]]",
        r#"name = "smoke""#,
        r#"after = ["payments"]"#,
        "approval = true",
    ]));
    assert_error(&e, "duplicate gate name `smoke`", 12, 8);
    assert_help(&e, "line 8");
}

// ---- versions ----

#[test]
fn bad_semver_version_is_refused_with_an_example() {
    let e = err(&lines(&[
        r#"release = "r""#,
        "[[service]]",
        r#"name = "payments""#,
        r#"version = "2.4""#,
        ARTIFACT,
        r#"run = { command = "bin/payments" }"#,
    ]));
    assert_error(&e, "invalid version `2.4` for `version`", 4, 11);
    assert_help(&e, r#"like "2.4.0""#);
}

#[test]
fn bad_semver_range_in_requires_names_the_contract() {
    let e = err(&with_service(&[r#"requires = { "auth-api" = "three" }"#]));
    assert_error(&e, "invalid semver range `three` for contract `auth-api` in `requires`", 7, 27);
    assert_help(&e, r#""^3.1""#);
}

#[test]
fn bad_version_in_provides_names_the_contract() {
    let e = err(&with_service(&[r#"provides = { "payments-api" = "2.4" }"#]));
    assert_error(&e, "invalid version `2.4` for contract `payments-api` in `provides`", 7, 31);
}

// ---- durations ----

#[test]
fn bad_duration_names_the_key_and_the_format() {
    let e = err(&with_service(&[r#"bake = "30""#]));
    assert_error(&e, "invalid duration `30` for `bake`", 7, 8);
    assert_help(&e, r#""30s", "10m", "1h30m" or "500ms""#);
}

#[test]
fn zero_durations_that_could_never_be_met_are_refused() {
    let all = errors(&lines(&[
        r#"release = "r""#,
        "[defaults]",
        r#"progress_deadline = "0s""#,
        r#"healthy_deadline = "0s""#,
        "[[service]]",
        r#"name = "payments""#,
        r#"version = "1.0.0""#,
        ARTIFACT,
        r#"run = { command = "bin/payments" }"#,
        r#"health = [{ tcp = "127.0.0.1:8080", interval = "0s", timeout = "0ms" }]"#,
    ]));
    assert_eq!(all.len(), 4, "{}", render(&all));
    assert_error(&all[0], "`progress_deadline` cannot be zero", 3, 21);
    assert_error(&all[1], "`healthy_deadline` cannot be zero", 4, 20);
    assert_error(&all[2], "`interval` cannot be zero", 10, 48);
    assert_error(&all[3], "`timeout` cannot be zero", 10, 64);
    assert_help(&all[3], "positive duration");
}

// ---- counts and batches ----

#[test]
fn percentage_above_100_is_refused() {
    let e = err(&lines(&[r#"release = "r""#, "[defaults]", r#"canary = "150%""#]));
    assert_error(&e, r#"invalid percentage "150%" for `canary`: it is more than 100%"#, 3, 10);
    assert_help(&e, r#"like "10%" or "12.5%""#);
}

#[test]
fn zero_percent_is_refused() {
    let e = err(&lines(&[r#"release = "r""#, "[defaults]", r#"batches = ["0%", "100%"]"#]));
    assert_error(&e, r#"invalid percentage "0%" for `batches`: it must be more than 0%"#, 3, 12);
}

#[test]
fn negative_host_count_is_refused() {
    let e = err(&with_service(&["canary = -1"]));
    assert_error(&e, "`canary` cannot be negative", 7, 10);
}

#[test]
fn non_numeric_percentage_is_refused() {
    let e = err(&with_service(&[r#"canary = "ten%""#]));
    assert_error(&e, "`ten` is not a number", 7, 10);
}

#[test]
fn quoted_count_without_percent_sign_is_refused() {
    let e = err(&with_service(&[r#"canary = "3""#]));
    assert_error(&e, "a quoted count must be a percentage ending in `%`", 7, 10);
    assert_help(&e, "without quotes");
}

#[test]
fn percentage_batches_must_grow() {
    let e = err(&lines(&[r#"release = "r""#, "[defaults]", r#"batches = ["50%", "25%"]"#]));
    assert_error(&e, "batch size 25% is not larger than the 50% before it", 3, 19);
    assert_help(&e, "cumulative");
}

#[test]
fn host_count_batches_must_grow() {
    let e = err(&lines(&[r#"release = "r""#, "[defaults]", r#"batches = [5, "50%", 2, "100%"]"#]));
    assert_error(&e, "batch size 2 is not larger than the 5 before it", 3, 22);
}

#[test]
fn empty_batches_list_is_refused() {
    let e = err(&lines(&[r#"release = "r""#, "[defaults]", "batches = []"]));
    assert_error(&e, "`batches` is empty", 3, 11);
    assert_help(&e, r#"batches = ["25%", "100%"]"#);
}

// ---- artifact ----

#[test]
fn sha256_of_the_wrong_length_says_how_many_characters_it_had() {
    let e = err(&lines(&[
        r#"release = "r""#,
        "[[service]]",
        r#"name = "payments""#,
        r#"version = "1.0.0""#,
        r#"artifact = { url = "https://example.com/p.tar.gz", sha256 = "abc123" }"#,
        r#"run = { command = "bin/payments" }"#,
    ]));
    assert_error(&e, "sha256 must be 64 hex digits, this one has 6 characters", 5, 61);
    assert_help(&e, "sha256sum");
}

#[test]
fn sha256_with_a_non_hex_digit_names_it() {
    let sha = format!("{}g", "a".repeat(63));
    let artifact = format!(r#"artifact = {{ url = "https://example.com/p.tar.gz", sha256 = "{sha}" }}"#);
    let e = err(&lines(&[
        r#"release = "r""#,
        "[[service]]",
        r#"name = "payments""#,
        r#"version = "1.0.0""#,
        &artifact,
        r#"run = { command = "bin/payments" }"#,
    ]));
    assert_error(&e, "sha256 contains `g`, which is not a hex digit", 5, 61);
}

#[test]
fn artifact_url_scheme_must_be_http_https_or_file() {
    let e = err(&lines(&[
        r#"release = "r""#,
        "[[service]]",
        r#"name = "payments""#,
        r#"version = "1.0.0""#,
        r#"artifact = { url = "ftp://example.com/p.tar.gz", sha256 = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" }"#,
        r#"run = { command = "bin/payments" }"#,
    ]));
    assert_error(&e, "artifact url scheme `ftp` is not supported", 5, 20);
    assert_help(&e, "http://, https:// or file://");
}

// ---- dependencies ----

#[test]
fn a_service_depending_on_itself_is_refused() {
    let e = err(&with_service(&[r#"depends_on = [{ service = "payments" }]"#]));
    assert_error(&e, "service `payments` depends on itself", 7, 27);
    assert_help(&e, "remove this entry");
}

#[test]
fn the_same_dependency_listed_twice_points_at_the_second() {
    let e = err(&with_service(&[r#"depends_on = [{ service = "auth" }, { service = "auth", kind = "soft" }]"#]));
    assert_error(&e, "`auth` is listed twice in `depends_on`", 7, 49);
    assert_help(&e, "line 7");
}

#[test]
fn unknown_dependency_kind_lists_the_kinds() {
    let e = err(&with_service(&[r#"depends_on = [{ service = "auth", kind = "hrd" }]"#]));
    assert_error(&e, "unknown dependency kind `hrd`", 7, 42);
    assert_help(&e, "did you mean `hard`? expected one of hard, data, config, soft");
}

#[test]
fn data_dependency_on_a_service_without_migrate_is_refused() {
    let e = err(&with_service(&[
        r#"depends_on = [{ service = "ledger-db", kind = "data" }]"#,
        "[[service]]",
        r#"name = "ledger-db""#,
        r#"version = "1.0.0""#,
        ARTIFACT,
        r#"run = { command = "bin/ledger" }"#,
    ]));
    assert_error(&e, "`payments` has a data dependency on `ledger-db`, which has no `migrate` hook", 7, 47);
    assert_help(&e, r#"add hooks.migrate to ledger-db or use kind = "hard""#);
}

// ---- policies ----

#[test]
fn on_failure_outside_its_set_lists_the_choices() {
    let e = err(&lines(&[r#"release = "r""#, "[defaults]", r#"on_failure = "retry""#]));
    assert_error(&e, "unknown `on_failure` value `retry`", 3, 14);
    assert_help(&e, "expected one of rollback, pause");
}

#[test]
fn rollback_scope_outside_its_set_lists_the_choices() {
    let e = err(&with_service(&[r#"rollback_scope = "everything""#]));
    assert_error(&e, "unknown `rollback_scope` value `everything`", 7, 18);
    assert_help(&e, "expected one of cascade, service, release");
}

// ---- health checks ----

#[test]
fn health_check_without_a_probe_is_refused() {
    let e = err(&with_service(&[r#"health = [{ interval = "2s" }]"#]));
    assert_error(&e, "health check has none of `http`, `tcp` or `exec`", 7, 11);
    assert_help(&e, "exactly one probe");
}

#[test]
fn health_check_with_two_probes_points_at_the_second() {
    let e = err(&with_service(&[r#"health = [{ http = "http://127.0.0.1:8080/healthz", tcp = "127.0.0.1:8080" }]"#]));
    assert_error(&e, "health check sets both `http` and `tcp`", 7, 59);
}

#[test]
fn expect_status_outside_100_to_599_is_refused() {
    let e = err(&with_service(&[r#"health = [{ http = "http://127.0.0.1:8080/healthz", expect_status = 700 }]"#]));
    assert_error(&e, "`expect_status` 700 is not an HTTP status code", 7, 69);
    assert_help(&e, "between 100 and 599");
}

#[test]
fn expect_status_on_a_tcp_check_is_refused() {
    let e = err(&with_service(&[r#"health = [{ tcp = "127.0.0.1:8080", expect_status = 200 }]"#]));
    assert_error(&e, "`expect_status` only applies to http checks, this is a tcp check", 7, 53);
}

#[test]
fn tcp_check_without_a_port_is_refused() {
    let e = err(&with_service(&[r#"health = [{ tcp = "127.0.0.1" }]"#]));
    assert_error(&e, "tcp check address `127.0.0.1` is not host:port", 7, 19);
    assert_help(&e, "127.0.0.1:8080");
}

// ---- gates ----

#[test]
fn gate_with_an_empty_after_list_is_refused() {
    let e = err(&with_service(&["[[gate]]", r#"name = "smoke""#, "after = []", "approval = true"]));
    assert_error(&e, "gate `smoke` has an empty `after` list", 9, 9);
}

#[test]
fn gate_after_a_service_not_in_the_spec_suggests_one_that_is() {
    let e = err(&with_service(&["[[gate]]", r#"name = "smoke""#, r#"after = ["paymnts"]"#, "approval = true"]));
    assert_error(&e, "gate `smoke` runs after `paymnts`, which is not a service in this release", 9, 10);
    assert_help(&e, "did you mean `payments`?");
}

#[test]
fn gate_with_neither_exec_nor_approval_is_refused() {
    let e = err(&with_service(&["[[gate]]", r#"name = "smoke""#, r#"after = ["payments"]"#]));
    assert_error(&e, "gate `smoke` has neither `exec` nor `approval = true`", 7, 1);
    assert_help(&e, "approval = true");
}

// ---- selectors and commands ----

#[test]
fn empty_label_name_in_a_selector_is_refused() {
    let e = err(&with_service(&[r#"hosts = { "" = "web" }"#]));
    assert_error(&e, "empty label name in `hosts`", 7, 11);
}

#[test]
fn empty_label_value_in_a_selector_is_refused() {
    let e = err(&lines(&[r#"release = "r""#, "[[stage]]", r#"name = "canary""#, r#"hosts = { cell = "" }"#]));
    assert_error(&e, "empty value for label `cell` in `hosts`", 4, 18);
}

#[test]
fn empty_run_command_is_refused() {
    let e = err(&lines(&[
        r#"release = "r""#,
        "[[service]]",
        r#"name = "payments""#,
        r#"version = "1.0.0""#,
        ARTIFACT,
        r#"run = { command = "" }"#,
    ]));
    assert_error(&e, "`run.command` is empty", 6, 19);
}

// ---- stages ----

#[test]
fn catch_all_stage_that_is_not_last_is_refused() {
    let e = err(&lines(&[
        r#"release = "r""#,
        "[[stage]]",
        r#"name = "rest""#,
        "[[stage]]",
        r#"name = "canary""#,
        r#"hosts = { cell = "canary" }"#,
    ]));
    assert_error(&e, "stage `rest` has no `hosts`", 2, 1);
    assert_help(&e, "move this catch-all stage to the end");
}

// ---- several at once ----

#[test]
fn several_independent_errors_are_all_reported_in_file_order() {
    let all = errors(&lines(&[
        r#"release = "Bad Name""#,
        "[defaults]",
        r#"bake = "soon""#,
        "[[service]]",
        r#"name = "payments""#,
        r#"version = "one""#,
        r#"artifact = { url = "https://example.com/p.tar.gz", sha256 = "abc" }"#,
        r#"run = { command = "bin/payments" }"#,
        "[[gate]]",
        r#"name = "smoke""#,
        r#"after = ["ledger"]"#,
        "approval = true",
    ]));
    let found: Vec<(usize, &str)> = all.iter().map(|e| (e.line, e.message.as_str())).collect();
    assert_eq!(all.len(), 5, "{}", render(&all));
    assert!(found[0].0 == 1 && found[0].1.contains("invalid release name"), "{found:?}");
    assert!(found[1].0 == 3 && found[1].1.contains("invalid duration `soon`"), "{found:?}");
    assert!(found[2].0 == 6 && found[2].1.contains("invalid version `one`"), "{found:?}");
    assert!(found[3].0 == 7 && found[3].1.contains("sha256 must be 64 hex digits"), "{found:?}");
    assert!(found[4].0 == 11 && found[4].1.contains("runs after `ledger`"), "{found:?}");
    let rendered = render(&all);
    assert!(rendered.ends_with("5 errors in release.toml"), "{rendered}");
}

#[test]
fn a_changed_at_that_is_not_a_point_in_time_is_refused_where_it_is() {
    let e = err(&lines(&[r#"release = "r""#, "changed_at = 2026-12-01"]));
    assert_error(&e, "`changed_at` is 2026-12-01, which is not a point in time", 2, 14);
    let e = err(&lines(&[r#"release = "r""#, "changed_at = 2026-12-01T09:30:00"]));
    assert_error(&e, "not a point in time", 2, 14);
    let e = err(&lines(&[r#"release = "r""#, r#"changed_at = "yesterday""#]));
    assert!(e.message.contains("changed_at"), "{e}");
}
