//! PromQL query templates of canary analysis: the placeholders a metric's `query` may
//! hold, their check when a spec is read, and their filling in for one side (canary or
//! baseline) of one batch.
//!
//! | placeholder | becomes |
//! |---|---|
//! | `{{service}}` | the service's name |
//! | `{{version}}` | a regular expression matching the side's versions (the target for the canary, the versions it replaces for the baseline) |
//! | `{{hosts}}` | a regular expression matching exactly the side's host ids |
//! | `{{interval}}` | the analysis interval as a PromQL duration (`10s`), for `rate(...[{{interval}}])` |
//!
//! `{{version}}` and `{{hosts}}` are meant for regular-expression matchers inside a
//! double-quoted PromQL string (`host=~"{{hosts}}"`): each name is anchored by
//! Prometheus, regex metacharacters are escaped, and the backslashes that escaping
//! needs are doubled for the string literal.

use std::fmt::Write as _;
use std::time::Duration;

/// The placeholders a query may use.
pub const PLACEHOLDERS: [&str; 4] = ["service", "version", "hosts", "interval"];

/// One side of a batch's comparison, as a query sees it.
#[derive(Debug, Clone, Copy)]
pub struct Side<'a> {
    /// The service.
    pub service: &'a str,
    /// The versions this side runs.
    pub versions: &'a [String],
    /// The hosts of this side.
    pub hosts: &'a [String],
    /// The analysis interval.
    pub interval: Duration,
}

/// Checks a template: every `{{...}}` names a known placeholder. `Err` holds the byte
/// range of the first bad placeholder in `template` and why.
pub fn check(template: &str) -> Result<(), (std::ops::Range<usize>, String)> {
    for (range, name) in placeholders(template) {
        match name {
            None => return Err((range, "`{{` is not closed by `}}`".to_owned())),
            Some(name) if !PLACEHOLDERS.contains(&name.trim()) => {
                let known = PLACEHOLDERS.map(|p| format!("{{{{{p}}}}}")).join(", ");
                return Err((range, format!("unknown placeholder `{{{{{name}}}}}`; known: {known}")));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Whether a template uses a placeholder that differs between canary and baseline
/// (`{{hosts}}` or `{{version}}`): without one, both sides would run the same query.
pub fn tells_sides_apart(template: &str) -> bool {
    placeholders(template).any(|(_, name)| matches!(name.map(str::trim), Some("hosts" | "version")))
}

/// The query for one side: every placeholder filled in. Unknown placeholders (refused
/// when the spec is read) are left as written.
pub fn render(template: &str, side: &Side<'_>) -> String {
    let mut out = String::with_capacity(template.len() + 16 * side.hosts.len());
    let mut rest = 0;
    for (range, name) in placeholders(template) {
        out.push_str(&template[rest..range.start]);
        match name.map(str::trim) {
            Some("service") => out.push_str(side.service),
            Some("version") => out.push_str(&alternation(side.versions)),
            Some("hosts") => out.push_str(&alternation(side.hosts)),
            Some("interval") => out.push_str(&promql_duration(side.interval)),
            _ => out.push_str(&template[range.clone()]),
        }
        rest = range.end;
    }
    out.push_str(&template[rest..]);
    out
}

/// Each `{{...}}` in a template: its byte range and the name inside (`None`: not closed).
fn placeholders(template: &str) -> impl Iterator<Item = (std::ops::Range<usize>, Option<&str>)> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let start = at + template.get(at..)?.find("{{")?;
        let inner = start + 2;
        match template[inner..].find("}}") {
            Some(len) => {
                at = inner + len + 2;
                Some((start..at, Some(&template[inner..inner + len])))
            }
            None => {
                at = template.len();
                Some((start..template.len(), None))
            }
        }
    })
}

/// `a|b|c` with each name's regex metacharacters escaped for a double-quoted PromQL
/// string. No names gives a regex that matches nothing a label holds (`^$` would
/// match the empty label), so a side without hosts returns no data.
fn alternation(names: &[String]) -> String {
    if names.is_empty() {
        return "$^".to_owned();
    }
    let mut out = String::new();
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            out.push('|');
        }
        for c in name.chars() {
            match c {
                '\\' => out.push_str("\\\\\\\\"),
                '"' => out.push_str("\\\""),
                '.' | '+' | '*' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '|' | '^' | '$' => {
                    out.push_str("\\\\");
                    out.push(c);
                }
                _ => out.push(c),
            }
        }
    }
    out
}

/// A duration as PromQL writes it: whole milliseconds as `1m30s`-style units.
fn promql_duration(d: Duration) -> String {
    let mut ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if ms >= size {
            let _ = write!(out, "{}{unit}", ms / size);
            ms %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side<'a>(versions: &'a [String], hosts: &'a [String]) -> Side<'a> {
        Side { service: "payments", versions, hosts, interval: Duration::from_secs(90) }
    }

    #[test]
    fn placeholders_are_filled_in_and_escaped_for_a_promql_string() {
        let versions = vec!["2.4.0+build.1".to_owned()];
        let hosts = vec!["web-1.example".to_owned(), "web-2".to_owned()];
        let q = r#"rate(x{service="{{service}}",version=~"{{ version }}",host=~"{{hosts}}"}[{{interval}}])"#;
        assert_eq!(
            render(q, &side(&versions, &hosts)),
            r#"rate(x{service="payments",version=~"2\\.4\\.0\\+build\\.1",host=~"web-1\\.example|web-2"}[1m30s])"#
        );
        assert_eq!(render("{{hosts}}", &side(&versions, &[])), "$^", "no hosts match nothing");
        assert_eq!(render("up", &side(&versions, &hosts)), "up");
    }

    #[test]
    fn unknown_and_unclosed_placeholders_are_refused_where_they_are() {
        assert_eq!(check(r#"x{host=~"{{hosts}}"}"#), Ok(()));
        let (range, why) = check("a {{host}} b").unwrap_err();
        assert_eq!(range, 2..10);
        assert!(why.contains("unknown placeholder `{{host}}`") && why.contains("{{hosts}}"), "{why}");
        let (range, why) = check("a {{hosts").unwrap_err();
        assert_eq!((range, why.as_str()), (2..9, "`{{` is not closed by `}}`"));
    }

    #[test]
    fn only_hosts_and_version_tell_the_sides_apart() {
        assert!(tells_sides_apart("x{host=~\"{{hosts}}\"}"));
        assert!(tells_sides_apart("x{version=~\"{{version}}\"}"));
        assert!(!tells_sides_apart("x{service=\"{{service}}\"}[{{interval}}]"));
    }
}
