//! The release spec's TOML shape, before any value is checked, and clear
//! errors for TOML that does not have that shape.
//!
//! Every table refuses unknown keys. Every value that [`super::validate`] checks later is
//! wrapped in [`Spanned`], so its errors point at the exact text. Syntax errors and shape
//! errors (unknown key, missing key, wrong type) are turned into one [`Diagnostic`] by
//! [`read`], which names the table they are in.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use serde::de::{self, Unexpected, Visitor};
use serde::{Deserialize, Deserializer};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::source::{Diagnostic, Span};

/// A table of strings whose keys and values are both checked: label selectors,
/// `provides` and `requires`.
pub(crate) type RawStringMap = BTreeMap<Spanned<String>, Spanned<String>>;

/// A whole spec file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a release spec")]
pub(crate) struct RawSpec {
    /// `release = "checkout-2026-11-22"`.
    pub(crate) release: Spanned<String>,
    /// `changed_at = 2026-12-01T09:30:00Z`: when the change this release ships was made
    /// (merged, committed), for lead time.
    #[serde(default)]
    pub(crate) changed_at: Option<Spanned<toml::value::Datetime>>,
    /// `[defaults]`: the rollout policy every service starts from.
    #[serde(default)]
    pub(crate) defaults: RawRollout,
    /// `[[stage]]` tables, in order.
    #[serde(default)]
    pub(crate) stage: Vec<Spanned<RawStage>>,
    /// `[[service]]` tables, in order.
    #[serde(default)]
    pub(crate) service: Vec<Spanned<RawService>>,
    /// `[[gate]]` tables, in order.
    #[serde(default)]
    pub(crate) gate: Vec<Spanned<RawGate>>,
}

/// Declares the rollout policy keys once: [`RawRollout`] (the `[defaults]` table) has
/// exactly these keys, and the service table named in the invocation has them after its
/// own, with a `rollout()` method returning the ones it overrides as a [`RawRollout`].
macro_rules! rollout_keys {
    (
        $(#[$service_attr:meta])*
        struct $service:ident { $($(#[$field_attr:meta])* $field:ident: $field_ty:ty,)* }
        rollout { $($(#[$key_attr:meta])* $key:ident: $key_ty:ty,)* }
    ) => {
        /// The rollout policy keys: the whole `[defaults]` table, or the keys one
        /// `[[service]]` overrides. A missing key keeps the value from below.
        #[derive(Debug, Clone, Default, Deserialize)]
        #[serde(deny_unknown_fields, expecting = "a table of rollout settings")]
        pub(crate) struct RawRollout {
            $($(#[$key_attr])* #[serde(default)] pub(crate) $key: Option<Spanned<$key_ty>>,)*
        }

        $(#[$service_attr])*
        pub(crate) struct $service {
            $($(#[$field_attr])* pub(crate) $field: $field_ty,)*
            $($(#[$key_attr])* #[serde(default)] pub(crate) $key: Option<Spanned<$key_ty>>,)*
        }

        impl $service {
            /// The rollout keys this service sets itself.
            pub(crate) fn rollout(&self) -> RawRollout {
                RawRollout { $($key: self.$key.clone(),)* }
            }
        }
    };
}

rollout_keys! {
    /// One `[[service]]` table.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, expecting = "a [[service]] table")]
    struct RawService {
        /// `name = "payments"`.
        name: Spanned<String>,
        /// `version = "2.4.0"`.
        version: Spanned<String>,
        /// `hosts = { role = "payments" }`.
        #[serde(default)]
        hosts: Option<Spanned<RawStringMap>>,
        /// `artifact = { url, sha256 }`.
        artifact: RawArtifact,
        /// `run = { command, args, env, stop_timeout }`.
        run: RawRun,
        /// `hooks = { before_install, after_install, migrate, migrate_down, validate }`.
        #[serde(default)]
        hooks: RawHooks,
        /// `health = [ { http = ... }, { tcp = ... }, { exec = ... } ]`.
        #[serde(default)]
        health: Vec<Spanned<RawHealth>>,
        /// `provides = { "payments-api" = "2.4.0" }`.
        #[serde(default)]
        provides: RawStringMap,
        /// `requires = { "auth-api" = "^3.1" }`.
        #[serde(default)]
        requires: RawStringMap,
        /// `depends_on = [ { service = "auth", kind = "hard" } ]`.
        #[serde(default)]
        depends_on: Vec<Spanned<RawDependency>>,
    }
    rollout {
        /// `canary = 1` or `"10%"`.
        canary: RawCount,
        /// `batches = ["25%", "100%"]`.
        batches: Vec<Spanned<RawCount>>,
        /// `bake = "30s"`.
        bake: String,
        /// `max_failed = 0`.
        max_failed: i64,
        /// `progress_deadline = "10m"`.
        progress_deadline: String,
        /// `on_failure = "rollback"`.
        on_failure: String,
        /// `rollback_scope = "cascade"`.
        rollback_scope: String,
        /// `rollback_window = "1h"`.
        rollback_window: String,
        /// `healthy_for = "5s"`.
        healthy_for: String,
        /// `healthy_deadline = "2m"`.
        healthy_deadline: String,
        /// `hook_timeout = "5m"`.
        hook_timeout: String,
        /// `[defaults.analysis]` or `[service.analysis]`: how canary analysis samples
        /// and judges (each key overrides the one below).
        analysis: RawAnalysis,
        /// `[[defaults.metric]]` or `[[service.metric]]`: what canary analysis
        /// measures (a service's metric replaces the default of the same name).
        metric: Vec<Spanned<RawMetric>>,
    }
}

/// `[defaults.analysis]` / `[service.analysis]`: the settings of canary analysis.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table of canary analysis settings")]
pub(crate) struct RawAnalysis {
    /// `enabled = false` turns analysis off (for one service, say).
    #[serde(default)]
    pub(crate) enabled: Option<Spanned<bool>>,
    /// `interval = "10s"`: time between samples.
    #[serde(default)]
    pub(crate) interval: Option<Spanned<String>>,
    /// `lookback = "5m"`: only samples this recent are judged.
    #[serde(default)]
    pub(crate) lookback: Option<Spanned<String>>,
    /// `samples = 5`: samples needed per side.
    #[serde(default)]
    pub(crate) samples: Option<Spanned<i64>>,
    /// `confidence = 0.98`.
    #[serde(default)]
    pub(crate) confidence: Option<Spanned<f64>>,
    /// `pass_score = 95`.
    #[serde(default)]
    pub(crate) pass_score: Option<Spanned<f64>>,
    /// `marginal_score = 75`.
    #[serde(default)]
    pub(crate) marginal_score: Option<Spanned<f64>>,
    /// `query_error_limit = 2`.
    #[serde(default)]
    pub(crate) query_error_limit: Option<Spanned<i64>>,
    /// `outliers = 3.0`: Tukey's fence factor (none: keep every sample).
    #[serde(default)]
    pub(crate) outliers: Option<Spanned<f64>>,
}

/// One `[[defaults.metric]]` / `[[service.metric]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[metric]] table")]
pub(crate) struct RawMetric {
    /// `name = "error_ratio"`.
    pub(crate) name: Spanned<String>,
    /// `query = 'sum(rate(...{host=~"{{hosts}}"}[1m]))'`: a PromQL template.
    pub(crate) query: Spanned<String>,
    /// `direction = "increase"`: which change is bad.
    #[serde(default)]
    pub(crate) direction: Option<Spanned<String>>,
    /// `critical = true`: failing it fails the whole analysis.
    #[serde(default)]
    pub(crate) critical: Option<Spanned<bool>>,
    /// `must_have_data = true`: no data is inconclusive, never a pass.
    #[serde(default)]
    pub(crate) must_have_data: Option<Spanned<bool>>,
    /// `allowed_change = 1.2`.
    #[serde(default)]
    pub(crate) allowed_change: Option<Spanned<f64>>,
    /// `critical_change = 3.0`.
    #[serde(default)]
    pub(crate) critical_change: Option<Spanned<f64>>,
    /// `max = 0.5`: a threshold, no baseline.
    #[serde(default)]
    pub(crate) max: Option<Spanned<f64>>,
    /// `min = 10`: a threshold, no baseline.
    #[serde(default)]
    pub(crate) min: Option<Spanned<f64>>,
    /// `weight = 1`.
    #[serde(default)]
    pub(crate) weight: Option<Spanned<i64>>,
}

/// `artifact = { url = "...", sha256 = "..." }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table like { url = \"https://...\", sha256 = \"...\" }")]
pub(crate) struct RawArtifact {
    /// Where to fetch the artifact.
    pub(crate) url: Spanned<String>,
    /// Its expected SHA-256.
    pub(crate) sha256: Spanned<String>,
}

/// `run = { command = "...", args = [...], env = {...}, stop_timeout = "10s" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table like { command = \"bin/app\" }")]
pub(crate) struct RawRun {
    /// The program to start.
    pub(crate) command: Spanned<String>,
    /// Its arguments.
    #[serde(default)]
    pub(crate) args: Vec<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub(crate) env: BTreeMap<String, String>,
    /// Time between SIGTERM and SIGKILL.
    #[serde(default)]
    pub(crate) stop_timeout: Option<Spanned<String>>,
}

/// `hooks = { ... }`: each hook is a shell command.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table of hook commands")]
pub(crate) struct RawHooks {
    /// Before the release is unpacked into place.
    #[serde(default)]
    pub(crate) before_install: Option<Spanned<String>>,
    /// After unpacking.
    #[serde(default)]
    pub(crate) after_install: Option<Spanned<String>>,
    /// The migration, once per release.
    #[serde(default)]
    pub(crate) migrate: Option<Spanned<String>>,
    /// Undoes the migration in a rollback.
    #[serde(default)]
    pub(crate) migrate_down: Option<Spanned<String>>,
    /// After the new process started.
    #[serde(default)]
    pub(crate) validate: Option<Spanned<String>>,
}

/// One entry of `health`: exactly one of `http`, `tcp`, `exec` plus its settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table like { http = \"http://127.0.0.1:8080/healthz\" }")]
pub(crate) struct RawHealth {
    /// URL of an HTTP check.
    #[serde(default)]
    pub(crate) http: Option<Spanned<String>>,
    /// `host:port` of a TCP check.
    #[serde(default)]
    pub(crate) tcp: Option<Spanned<String>>,
    /// Command of an exec check.
    #[serde(default)]
    pub(crate) exec: Option<Spanned<String>>,
    /// Healthy HTTP status.
    #[serde(default)]
    pub(crate) expect_status: Option<Spanned<i64>>,
    /// Substring the HTTP body must contain.
    #[serde(default)]
    pub(crate) body: Option<Spanned<String>>,
    /// Time between samples.
    #[serde(default)]
    pub(crate) interval: Option<Spanned<String>>,
    /// Time limit of one sample.
    #[serde(default)]
    pub(crate) timeout: Option<Spanned<String>>,
}

/// One entry of `depends_on`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table like { service = \"auth\", kind = \"hard\" }")]
pub(crate) struct RawDependency {
    /// The service depended on.
    pub(crate) service: Spanned<String>,
    /// `hard` (the default), `data`, `config` or `soft`.
    #[serde(default)]
    pub(crate) kind: Option<Spanned<String>>,
}

/// One `[[stage]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[stage]] table")]
pub(crate) struct RawStage {
    /// The stage name.
    pub(crate) name: Spanned<String>,
    /// Its hosts; none means every host not covered yet.
    #[serde(default)]
    pub(crate) hosts: Option<Spanned<RawStringMap>>,
    /// Human approval before the next stage: `true`, or who may give it.
    #[serde(default)]
    pub(crate) approval: RawApproval,
}

/// One `[[gate]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[gate]] table")]
pub(crate) struct RawGate {
    /// The gate name.
    pub(crate) name: Spanned<String>,
    /// The services the gate waits for.
    pub(crate) after: Spanned<Vec<Spanned<String>>>,
    /// The command to run, if any.
    #[serde(default)]
    pub(crate) exec: Option<RawGateExec>,
    /// Whether a human must approve: `true`, or who may.
    #[serde(default)]
    pub(crate) approval: RawApproval,
}

/// `approval` of a stage or gate as written: `true`/`false`, or a table saying who may
/// approve (`{ by = "admin" }`), checked later.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RawApproval {
    /// `approval = true` (any approver) or `approval = false` (none).
    Flag(bool),
    /// `approval = { by = ... }`.
    Rule(RawApprovalRule),
}

impl Default for RawApproval {
    /// No `approval` key: no approval.
    fn default() -> Self {
        RawApproval::Flag(false)
    }
}

impl RawApproval {
    /// Whether an approval is asked for at all.
    pub(crate) fn required(&self) -> bool {
        match self {
            RawApproval::Flag(required) => *required,
            RawApproval::Rule(_) => true,
        }
    }
}

impl<'de> Deserialize<'de> for RawApproval {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// Accepts booleans and tables; anything else is a type error naming both forms.
        struct ApprovalVisitor;

        impl<'de> Visitor<'de> for ApprovalVisitor {
            type Value = RawApproval;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true, false or a table like { by = \"other-than-author\" }")
            }

            fn visit_bool<E: de::Error>(self, required: bool) -> Result<RawApproval, E> {
                Ok(RawApproval::Flag(required))
            }

            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<RawApproval, A::Error> {
                let mut by = None;
                while let Some(key) = map.next_key::<ApprovalKey>()? {
                    match key {
                        ApprovalKey::By => by = Some(map.next_value()?),
                        // toml hands a date-time over as a map with one private key.
                        ApprovalKey::DateTime => {
                            return Err(de::Error::invalid_type(Unexpected::Other("a date-time"), &self));
                        }
                    }
                }
                let by = by.ok_or_else(|| de::Error::missing_field("by"))?;
                Ok(RawApproval::Rule(RawApprovalRule { by }))
            }
        }

        deserializer.deserialize_any(ApprovalVisitor)
    }
}

/// A key of an `approval` table. Any other key is refused while the key is read, so the
/// error points at it.
enum ApprovalKey {
    /// `by`.
    By,
    /// The key toml uses to pass a date-time as a map: the value was not a table.
    DateTime,
}

impl<'de> Deserialize<'de> for ApprovalKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// Accepts `by` and the date-time marker; refuses the rest as unknown keys.
        struct KeyVisitor;

        impl Visitor<'_> for KeyVisitor {
            type Value = ApprovalKey;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`by`")
            }

            fn visit_str<E: de::Error>(self, key: &str) -> Result<ApprovalKey, E> {
                match key {
                    "by" => Ok(ApprovalKey::By),
                    "$__toml_private_datetime" => Ok(ApprovalKey::DateTime),
                    _ => Err(E::unknown_field(key, &["by"])),
                }
            }
        }

        deserializer.deserialize_identifier(KeyVisitor)
    }
}

/// `approval = { by = "other-than-author" }`: who may approve.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawApprovalRule {
    /// The conditions, all of which must hold.
    pub(crate) by: Spanned<RawApprovers>,
}

/// `by` of an approval as written: one condition or an array of them, checked later.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RawApprovers {
    /// `by = "admin"`.
    One(String),
    /// `by = ["other-than-author", "admin"]`, possibly empty.
    Many(Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for RawApprovers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// Accepts a string or an array of strings.
        struct ApproversVisitor;

        impl<'de> Visitor<'de> for ApproversVisitor {
            type Value = RawApprovers;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a condition like \"admin\" or an array of them like [\"other-than-author\", \"admin\"]")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawApprovers, E> {
                Ok(RawApprovers::One(s.to_owned()))
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawApprovers, A::Error> {
                let mut conditions = Vec::new();
                while let Some(condition) = seq.next_element::<Spanned<String>>()? {
                    conditions.push(condition);
                }
                Ok(RawApprovers::Many(conditions))
            }
        }

        deserializer.deserialize_any(ApproversVisitor)
    }
}

/// `exec = { command = "...", on = {...}, timeout = "5m" }` of a gate.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table like { command = \"scripts/smoke.sh\" }")]
pub(crate) struct RawGateExec {
    /// The shell command.
    pub(crate) command: Spanned<String>,
    /// Which agents may run it.
    #[serde(default)]
    pub(crate) on: Option<Spanned<RawStringMap>>,
    /// Time limit.
    #[serde(default)]
    pub(crate) timeout: Option<Spanned<String>>,
}

/// A host count as written: an integer (`1`) or a string (`"10%"`), checked later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RawCount {
    /// An integer, possibly negative.
    Number(i64),
    /// A string, meant to be a percentage.
    Text(String),
}

impl<'de> Deserialize<'de> for RawCount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// Accepts integers and strings; anything else is a type error naming both forms.
        struct CountVisitor;

        impl Visitor<'_> for CountVisitor {
            type Value = RawCount;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of hosts like 1 or a percentage like \"10%\"")
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> Result<RawCount, E> {
                Ok(RawCount::Number(n))
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> Result<RawCount, E> {
                i64::try_from(n).map(RawCount::Number).map_err(|_| E::invalid_value(Unexpected::Unsigned(n), &self))
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawCount, E> {
                Ok(RawCount::Text(s.to_owned()))
            }
        }

        deserializer.deserialize_any(CountVisitor)
    }
}

/// Reads a spec's text into its raw shape, or explains the first syntax or shape error.
pub(crate) fn read(text: &str) -> Result<RawSpec, Diagnostic> {
    let doc = DeTable::parse(text).map_err(|e| syntax_error(text, &e))?;
    RawSpec::deserialize(toml::de::Deserializer::from(doc.clone())).map_err(|e| shape_error(&doc, &e))
}

/// A TOML syntax error, keeping toml's span.
fn syntax_error(text: &str, error: &toml::de::Error) -> Diagnostic {
    let span = error_span(error);
    if error.message() == "duplicate key" {
        let key = text.get(span.start..span.end).unwrap_or_default().trim_matches('"');
        return Diagnostic::new(span, format!("duplicate key `{key}`"))
            .with_help("a key may be set only once in a table (and a [table] declared only once); remove one of them");
    }
    Diagnostic::new(span, format!("invalid TOML: {}", error.message()))
        .with_help("fix the TOML syntax (https://toml.io): strings need quotes, tables are written [name] or [[name]]")
}

/// The span of a toml error; errors without one point at the start of the file.
fn error_span(error: &toml::de::Error) -> Span {
    error.span().map_or_else(Span::default, Span::from)
}

/// A shape error (unknown key, missing key, wrong type), reworded to name the table it is
/// in and say what to write instead.
fn shape_error(doc: &Spanned<DeTable<'_>>, error: &toml::de::Error) -> Diagnostic {
    let span = error_span(error);
    let place = Place::find(doc, span.start..span.end);
    let message = error.message();
    let context = place.table_description();

    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (key, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let valid = backticked(expected);
        let listed = valid.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ");
        let help = match closest(key, &valid) {
            Some(near) => format!("did you mean `{near}`? expected one of: {listed}"),
            None if valid.is_empty() => "remove it: this table takes no keys".to_owned(),
            None => format!("remove it, or use one of: {listed}"),
        };
        return Diagnostic::new(span, format!("unknown key `{key}` {context}")).with_help(help);
    }

    if let Some(rest) = message.strip_prefix("missing field `") {
        let key = rest.trim_end_matches('`');
        let help = match written_like(key) {
            Some(example) => format!("add {example}"),
            None => format!("add `{key} = ...`"),
        };
        return Diagnostic::new(span, format!("missing key `{key}` {context}")).with_help(help);
    }

    let what = place.key_description();
    if let Some((found, expected)) = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))
        .and_then(|rest| rest.split_once(", expected "))
    {
        let message =
            format!("wrong type for {what} {context}: expected {}, found {}", plain_type(expected), plain_type(found));
        let diag = Diagnostic::new(span, message);
        return match place.last_key().and_then(written_like) {
            Some(example) => diag.with_help(format!("write it like {example}")),
            None => diag,
        };
    }
    Diagnostic::new(span, format!("{message} (at {what} {context})"))
}

/// Rewords serde's type names the way a TOML author knows them.
fn plain_type(serde_type: &str) -> String {
    match serde_type {
        "a sequence" | "sequence" => "an array".to_owned(),
        "a map" | "map" => "a table".to_owned(),
        other => other.to_owned(),
    }
}

/// The names in backticks in serde's "expected ..." list.
fn backticked(list: &str) -> Vec<&str> {
    list.split('`').skip(1).step_by(2).collect()
}

/// The candidate closest to `word`, if it is close enough to be a likely typo.
pub(crate) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(word, c), *c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// How a key is written, for help texts: its sample line in backticks, and its other
/// form when it has one (`` `approval = true` or `approval = { by = "..." }` ``).
fn written_like(key: &str) -> Option<String> {
    let sample = example(key)?;
    Some(match other_form(key) {
        Some(other) => format!("`{sample}` or `{other}`"),
        None => format!("`{sample}`"),
    })
}

/// The second way to write a key that takes two shapes.
fn other_form(key: &str) -> Option<&'static str> {
    Some(match key {
        "approval" => "approval = { by = \"other-than-author\" }",
        "by" => "by = [\"other-than-author\", \"admin\"]",
        _ => return None,
    })
}

/// A sample line for a key, for help texts.
fn example(key: &str) -> Option<&'static str> {
    Some(match key {
        "release" => "release = \"checkout-2026-11-22\"",
        "name" => "name = \"payments\"",
        "version" => "version = \"2.4.0\"",
        "hosts" => "hosts = { role = \"web\" }",
        "on" => "on = { role = \"web\" }",
        "artifact" => "artifact = { url = \"https://...\", sha256 = \"<64 hex digits>\" }",
        "url" => "url = \"https://artifacts.example.com/app-1.0.0.tar.gz\"",
        "sha256" => "sha256 = \"<64 hex digits>\"",
        "run" => "run = { command = \"bin/app\" }",
        "command" => "command = \"bin/app\"",
        "args" => "args = [\"--port\", \"8080\"]",
        "env" => "env = { RUST_LOG = \"info\" }",
        "health" => "health = [{ http = \"http://127.0.0.1:8080/healthz\" }]",
        "expect_status" => "expect_status = 200",
        "provides" => "provides = { \"payments-api\" = \"2.4.0\" }",
        "requires" => "requires = { \"auth-api\" = \"^3.1\" }",
        "depends_on" => "depends_on = [{ service = \"auth\", kind = \"hard\" }]",
        "kind" => "kind = \"hard\"",
        "after" => "after = [\"payments\"]",
        "approval" => "approval = true",
        "by" => "by = \"other-than-author\"",
        "canary" => "canary = 1",
        "batches" => "batches = [\"25%\", \"100%\"]",
        "max_failed" => "max_failed = 0",
        "on_failure" => "on_failure = \"rollback\"",
        "rollback_scope" => "rollback_scope = \"cascade\"",
        "bake" => "bake = \"30s\"",
        "progress_deadline" => "progress_deadline = \"10m\"",
        "rollback_window" => "rollback_window = \"1h\"",
        "healthy_for" => "healthy_for = \"5s\"",
        "healthy_deadline" => "healthy_deadline = \"2m\"",
        "hook_timeout" => "hook_timeout = \"5m\"",
        "timeout" => "timeout = \"500ms\"",
        "interval" => "interval = \"1s\"",
        "stop_timeout" => "stop_timeout = \"10s\"",
        "analysis" => "[defaults.analysis]",
        "metric" => "[[defaults.metric]]",
        "enabled" => "enabled = true",
        "lookback" => "lookback = \"5m\"",
        "samples" => "samples = 5",
        "confidence" => "confidence = 0.98",
        "pass_score" => "pass_score = 95",
        "marginal_score" => "marginal_score = 75",
        "query_error_limit" => "query_error_limit = 2",
        "outliers" => "outliers = 3.0",
        "query" => "query = 'sum(rate(http_requests_total{host=~\"{{hosts}}\"}[1m]))'",
        "direction" => "direction = \"increase\"",
        "critical" => "critical = true",
        "must_have_data" => "must_have_data = true",
        "allowed_change" => "allowed_change = 1.2",
        "critical_change" => "critical_change = 3.0",
        "max" => "max = 0.5",
        "min" => "min = 10",
        "weight" => "weight = 1",
        _ => return None,
    })
}

/// One step of a path into the document.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// A key of a table.
    Key(String),
    /// An element of an array, from 0.
    Index(usize),
}

/// Where in the document an error is: the table it is in, and the key (or array entry)
/// inside that table.
#[derive(Debug, Default)]
struct Place {
    /// Path from the root to the innermost table holding the error.
    table: Vec<Step>,
    /// The `name` of the top-level `[[...]]` table on the path, if it has one.
    owner_name: Option<String>,
    /// Path from that table to the offending key or value; empty when the error is about
    /// the table itself (a missing key).
    key: Vec<Step>,
}

impl Place {
    /// Finds the innermost table holding `span`, and the key path to it inside the table.
    fn find(doc: &Spanned<DeTable<'_>>, span: Range<usize>) -> Place {
        let mut place = Place::default();
        let mut table = doc.get_ref();
        let mut path = Vec::new();
        'tables: loop {
            for (key, value) in table {
                if key.span().contains(&span.start) {
                    path.push(Step::Key(key.get_ref().to_string()));
                    break 'tables;
                }
                if !holds(value, &span) {
                    continue;
                }
                path.push(Step::Key(key.get_ref().to_string()));
                let mut value = value;
                while let DeValue::Array(items) = value.get_ref() {
                    let Some((i, item)) = items.iter().enumerate().find(|(_, item)| holds(item, &span)) else {
                        break;
                    };
                    path.push(Step::Index(i));
                    value = item;
                }
                let DeValue::Table(inner) = value.get_ref() else {
                    break 'tables;
                };
                if path.len() == 2 {
                    place.owner_name = inner.get("name").and_then(|n| n.get_ref().as_str()).map(str::to_owned);
                }
                place.table.clone_from(&path);
                table = inner;
                continue 'tables;
            }
            break;
        }
        place.key = path.split_off(place.table.len());
        place
    }

    /// "in [defaults]", "in `run` of [[service]] `payments`", "at the top level".
    fn table_description(&self) -> String {
        match self.table.as_slice() {
            [] => "at the top level".to_owned(),
            [Step::Key(table)] => format!("in [{table}]"),
            [Step::Key(table), Step::Index(i), rest @ ..] => {
                let owner = match &self.owner_name {
                    Some(name) => format!("[[{table}]] `{name}`"),
                    None => format!("[[{table}]] number {}", i + 1),
                };
                if rest.is_empty() { format!("in {owner}") } else { format!("in {} of {owner}", describe_steps(rest)) }
            }
            steps => format!("in {}", describe_steps(steps)),
        }
    }

    /// "`release`", "`args` entry 2", or "this table" when the error is the table itself.
    fn key_description(&self) -> String {
        if self.key.is_empty() { "this table".to_owned() } else { describe_steps(&self.key) }
    }

    /// The last key named on the path to the error.
    fn last_key(&self) -> Option<&str> {
        self.table.iter().chain(&self.key).rev().find_map(|step| match step {
            Step::Key(k) => Some(k.as_str()),
            Step::Index(_) => None,
        })
    }
}

/// Whether a value, or anything inside it, is where `span` is: scalars contain its start,
/// tables and arrays either are exactly `span` (a missing key, a header) or hold it.
fn holds(value: &Spanned<DeValue<'_>>, span: &Range<usize>) -> bool {
    match value.get_ref() {
        DeValue::Table(table) => {
            value.span() == *span || table.iter().any(|(k, v)| k.span().contains(&span.start) || holds(v, span))
        }
        DeValue::Array(items) => value.span() == *span || items.iter().any(|item| holds(item, span)),
        _ => value.span().contains(&span.start),
    }
}

/// "`run`", "`health` entry 1", "`env.HOME`".
fn describe_steps(steps: &[Step]) -> String {
    let mut out = String::new();
    let mut open = false;
    for step in steps {
        match step {
            Step::Key(key) => {
                out.push_str(if open {
                    "."
                } else if out.is_empty() {
                    "`"
                } else {
                    " `"
                });
                out.push_str(key);
                open = true;
            }
            Step::Index(i) => {
                if open {
                    out.push('`');
                    open = false;
                }
                out.push_str(&format!(" entry {}", i + 1));
            }
        }
    }
    if open {
        out.push('`');
    }
    out
}
