//! The sample service's Prometheus metrics and their text exposition format (version
//! 0.0.4), std-only like `behaviour.rs` (the binary includes this file too).
//!
//! Every series carries the labels `service`, `version` and `host` ([`Labels`]):
//!
//! ```text
//! # HELP flotilla_sample_requests_total /work requests answered (real and self-generated), by status code.
//! # TYPE flotilla_sample_requests_total counter
//! flotilla_sample_requests_total{service="web",version="2.0.0",host="web-1",code="200"} 95
//! flotilla_sample_requests_total{service="web",version="2.0.0",host="web-1",code="500"} 5
//! # HELP flotilla_sample_request_duration_seconds The latency of /work requests (simulated for self-generated ones).
//! # TYPE flotilla_sample_request_duration_seconds histogram
//! flotilla_sample_request_duration_seconds_bucket{service="web",version="2.0.0",host="web-1",le="0.005"} 0
//! ... le="0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf" (cumulative)
//! flotilla_sample_request_duration_seconds_sum{service="web",version="2.0.0",host="web-1"} 0.65
//! flotilla_sample_request_duration_seconds_count{service="web",version="2.0.0",host="web-1"} 100
//! # HELP flotilla_sample_up Whether the sample service is serving (1 while it runs).
//! # TYPE flotilla_sample_up gauge
//! flotilla_sample_up{service="web",version="2.0.0",host="web-1"} 1
//! ```
//!
//! Both `code` series exist from the start (at 0), so an error rate is 0, not absent.
//! A canary query: `sum(rate(flotilla_sample_requests_total{code="500"}[1m])) by (version)
//! / sum(rate(flotilla_sample_requests_total[1m])) by (version)`.

use std::fmt::Write as _;
use std::time::Duration;

/// The requests counter, labelled `code` (`"200"`, `"500"`).
pub const REQUESTS_TOTAL: &str = "flotilla_sample_requests_total";
/// The latency histogram (`_bucket`, `_sum`, `_count`).
pub const REQUEST_DURATION_SECONDS: &str = "flotilla_sample_request_duration_seconds";
/// The gauge that is 1 while the service runs.
pub const UP: &str = "flotilla_sample_up";
/// The `Content-Type` of the exposition text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// The histogram's upper bounds: as written in `le`, and in nanoseconds.
pub const BUCKETS: [(&str, u64); 9] = [
    ("0.005", 5_000_000),
    ("0.01", 10_000_000),
    ("0.025", 25_000_000),
    ("0.05", 50_000_000),
    ("0.1", 100_000_000),
    ("0.25", 250_000_000),
    ("0.5", 500_000_000),
    ("1", 1_000_000_000),
    ("2.5", 2_500_000_000),
];

/// The status codes whose counters always exist.
const CODES: [u16; 2] = [200, 500];

/// The labels of every series: from `$FLOTILLA_SERVICE`, the behaviour's version (else
/// `$FLOTILLA_VERSION`) and `$FLOTILLA_HOST`; empty strings when unset.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Labels {
    /// The `service` label.
    pub service: String,
    /// The `version` label.
    pub version: String,
    /// The `host` label.
    pub host: String,
}

impl Labels {
    /// `service="…",version="…",host="…"`, escaped.
    fn render(&self) -> String {
        format!(
            "service=\"{}\",version=\"{}\",host=\"{}\"",
            escape_label_value(&self.service),
            escape_label_value(&self.version),
            escape_label_value(&self.host)
        )
    }
}

/// The counters and histogram of `/work` requests.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Requests by status code (other than [`CODES`] only if observed).
    by_code: Vec<(u16, u64)>,
    /// Non-cumulative bucket counts, one per [`BUCKETS`] entry (the rest is `+Inf`).
    buckets: [u64; BUCKETS.len()],
    /// The total latency in nanoseconds (exact; written as seconds).
    sum_nanos: u128,
    /// Requests observed.
    count: u64,
}

impl Metrics {
    /// No requests yet.
    pub fn new() -> Self {
        Self { by_code: CODES.iter().map(|&c| (c, 0)).collect(), ..Self::default() }
    }

    /// Records one request answered `status` after `latency`.
    pub fn observe(&mut self, status: u16, latency: Duration) {
        match self.by_code.iter_mut().find(|(c, _)| *c == status) {
            Some((_, n)) => *n += 1,
            None => {
                self.by_code.push((status, 1));
                self.by_code.sort_unstable();
            }
        }
        let nanos = latency.as_nanos();
        if let Some(i) = BUCKETS.iter().position(|&(_, le)| nanos <= u128::from(le)) {
            self.buckets[i] += 1;
        }
        self.sum_nanos += nanos;
        self.count += 1;
    }

    /// Requests observed so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Requests answered `status` so far.
    pub fn count_of(&self, status: u16) -> u64 {
        self.by_code.iter().find(|(c, _)| *c == status).map_or(0, |&(_, n)| n)
    }

    /// The exposition text (format 0.0.4) of these metrics with `labels`.
    pub fn render(&self, labels: &Labels) -> String {
        let l = labels.render();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP {REQUESTS_TOTAL} /work requests answered (real and self-generated), by status code.\n\
             # TYPE {REQUESTS_TOTAL} counter"
        );
        // A `Default` value has no codes yet: render 200 and 500 at 0 all the same.
        let by_code = if self.by_code.is_empty() { Self::new().by_code } else { self.by_code.clone() };
        for (code, n) in by_code {
            let _ = writeln!(out, "{REQUESTS_TOTAL}{{{l},code=\"{code}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP {REQUEST_DURATION_SECONDS} The latency of /work requests (simulated for self-generated ones).\n\
             # TYPE {REQUEST_DURATION_SECONDS} histogram"
        );
        let mut cumulative = 0;
        for (&(le, _), n) in BUCKETS.iter().zip(self.buckets) {
            cumulative += n;
            let _ = writeln!(out, "{REQUEST_DURATION_SECONDS}_bucket{{{l},le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{REQUEST_DURATION_SECONDS}_bucket{{{l},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{REQUEST_DURATION_SECONDS}_sum{{{l}}} {}", seconds(self.sum_nanos));
        let _ = writeln!(out, "{REQUEST_DURATION_SECONDS}_count{{{l}}} {}", self.count);
        let _ = writeln!(
            out,
            "# HELP {UP} Whether the sample service is serving (1 while it runs).\n\
             # TYPE {UP} gauge\n\
             {UP}{{{l}}} 1"
        );
        out
    }
}

/// Nanoseconds as decimal seconds without exponent or trailing zeros (`0`, `0.005`,
/// `12.000000001`).
fn seconds(nanos: u128) -> String {
    let (whole, frac) = (nanos / 1_000_000_000, nanos % 1_000_000_000);
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:09}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// A label value escaped for the exposition format: `\` → `\\`, `"` → `\"`, newline →
/// `\n`.
pub fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The sum of the samples of `name` in exposition `text` whose labels include all of
/// `matchers` (exact values, unescaped); 0 when none match. A small reader for tests
/// that look at `/metrics` without a Prometheus.
pub fn sum_samples(text: &str, name: &str, matchers: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(parse_sample)
        .filter(|s| s.name == name && matchers.iter().all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v)))
        .map(|s| s.value)
        .sum()
}

/// One sample of the exposition text.
#[derive(Debug)]
struct Sample {
    name: String,
    /// Names and unescaped values.
    labels: Vec<(String, String)>,
    value: f64,
}

/// One sample line; `None` if it is not one.
fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    let name_end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        loop {
            // key="value", then `,` or `}`
            let (key_start, c) = chars.next()?;
            if c == '}' {
                rest = &inner[key_start + 1..];
                break;
            }
            let eq = inner[key_start..].find('=')? + key_start;
            let key = inner[key_start..eq].trim_start_matches(',').trim().to_owned();
            while chars.next()?.0 < eq {}
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                match chars.next()?.1 {
                    '"' => break,
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    other => value.push(other),
                }
            }
            labels.push((key, value));
            match chars.next()? {
                (_, ',') => {}
                (i, '}') => {
                    rest = &inner[i + 1..];
                    break;
                }
                _ => return None,
            }
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample { name: name.to_owned(), labels, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Labels {
        Labels { service: "web".into(), version: "2.0.0".into(), host: "web-1".into() }
    }

    #[test]
    fn renders_the_exposition_format() {
        let mut m = Metrics::new();
        for ms in [4, 5, 7, 30, 3000] {
            m.observe(200, Duration::from_millis(ms));
        }
        m.observe(500, Duration::from_nanos(5_000_001));
        let text = m.render(&labels());
        let l = r#"service="web",version="2.0.0",host="web-1""#;
        let expected = format!(
            "# HELP flotilla_sample_requests_total /work requests answered (real and self-generated), by status code.
# TYPE flotilla_sample_requests_total counter
flotilla_sample_requests_total{{{l},code=\"200\"}} 5
flotilla_sample_requests_total{{{l},code=\"500\"}} 1
# HELP flotilla_sample_request_duration_seconds The latency of /work requests (simulated for self-generated ones).
# TYPE flotilla_sample_request_duration_seconds histogram
flotilla_sample_request_duration_seconds_bucket{{{l},le=\"0.005\"}} 2
flotilla_sample_request_duration_seconds_bucket{{{l},le=\"0.01\"}} 4
flotilla_sample_request_duration_seconds_bucket{{{l},le=\"0.025\"}} 4
flotilla_sample_request_duration_seconds_bucket{{{l},le=\"0.05\"}} 5
flotilla_sample_request_duration_seconds_bucket{{{l},le=\"0.1\"}} 5
flotilla_sample_request_duration_seconds_bucket{{{l},le=\"0.25\"}} 5
flotilla_sample_request_duration_seconds_bucket{{{l},le=\"0.5\"}} 5
flotilla_sample_request_duration_seconds_bucket{{{l},le=\"1\"}} 5
flotilla_sample_request_duration_seconds_bucket{{{l},le=\"2.5\"}} 5
flotilla_sample_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} 6
flotilla_sample_request_duration_seconds_sum{{{l}}} 3.051000001
flotilla_sample_request_duration_seconds_count{{{l}}} 6
# HELP flotilla_sample_up Whether the sample service is serving (1 while it runs).
# TYPE flotilla_sample_up gauge
flotilla_sample_up{{{l}}} 1
"
        );
        assert_eq!(text, expected);
        assert_eq!((m.count(), m.count_of(200), m.count_of(500), m.count_of(404)), (6, 5, 1, 0));
    }

    #[test]
    fn both_codes_exist_before_any_request() {
        let text = Metrics::new().render(&Labels::default());
        assert!(text.contains("flotilla_sample_requests_total{service=\"\",version=\"\",host=\"\",code=\"200\"} 0\n"));
        assert!(text.contains("flotilla_sample_requests_total{service=\"\",version=\"\",host=\"\",code=\"500\"} 0\n"));
        assert!(text.contains("flotilla_sample_request_duration_seconds_sum{service=\"\",version=\"\",host=\"\"} 0\n"));
        // A default (not `new`) value renders the same.
        assert_eq!(Metrics::default().render(&Labels::default()), text);
    }

    #[test]
    fn escapes_label_values() {
        assert_eq!(escape_label_value(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label_value("x\ny"), "x\\ny");
        assert_eq!(escape_label_value("plain-1.0"), "plain-1.0");
        let odd = Labels { service: "we\"b".into(), version: "1\\2".into(), host: "h\n1".into() };
        let text = Metrics::new().render(&odd);
        assert!(text.contains(r#"flotilla_sample_up{service="we\"b",version="1\\2",host="h\n1"} 1"#), "{text}");
        // And they read back.
        assert_eq!(sum_samples(&text, UP, &[("service", "we\"b"), ("version", "1\\2"), ("host", "h\n1")]), 1.0);
    }

    #[test]
    fn sums_matching_samples() {
        let mut m = Metrics::new();
        for status in [200, 200, 500] {
            m.observe(status, Duration::from_millis(1));
        }
        let text = m.render(&labels());
        assert_eq!(sum_samples(&text, REQUESTS_TOTAL, &[]), 3.0);
        assert_eq!(sum_samples(&text, REQUESTS_TOTAL, &[("code", "500")]), 1.0);
        assert_eq!(sum_samples(&text, REQUESTS_TOTAL, &[("code", "500"), ("host", "web-2")]), 0.0);
        assert_eq!(sum_samples(&text, "flotilla_sample_request_duration_seconds_bucket", &[("le", "+Inf")]), 3.0);
        assert_eq!(sum_samples(&text, "flotilla_sample_request_duration_seconds_sum", &[]), 0.003);
        assert_eq!(sum_samples("plain 4\nplain{a=\"b\"} 2.5 1700000000\n", "plain", &[]), 6.5);
    }

    #[test]
    fn writes_seconds_exactly() {
        assert_eq!(seconds(0), "0");
        assert_eq!(seconds(5_000_000), "0.005");
        assert_eq!(seconds(2_000_000_000), "2");
        assert_eq!(seconds(12_000_000_001), "12.000000001");
    }
}
