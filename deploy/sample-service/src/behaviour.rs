//! What a sample service version does, read from `behaviour.toml` (std-only: the
//! binary is built with a plain `rustc` call, so this file uses no crate).
//!
//! The file is a flat TOML table; every key is optional:
//!
//! ```toml
//! version = "1.2.0"            # what /version answers (default: $FLOTILLA_VERSION)
//! healthy = true               # false: /healthz answers 503
//! unhealthy_on = "web-3,web-4"  # /healthz answers 503 on these hosts ($FLOTILLA_HOST)
//! start_delay_ms = 0           # wait this long before listening (slow start)
//! crash_after_ms = 5000        # exit with `exit_code` this long after start (0: at once)
//! exit_code = 3
//! contract_name = "payments-api"   # served at /contract
//! contract_version = "2.4.0"
//! require_url = "http://127.0.0.1:9000/contract"  # refuse to start unless it answers
//! require_version = "^2.4"     # ... a version matching this (`1.2.3`, `=1.2.3`, `^1.2`, `1.*`)
//! error_ratio = 0.05           # share of /work requests answered 500 (0.0 to 1.0; default 0.0)
//! latency_ms = 5               # base latency of a /work request (default 5)
//! extra_latency_ms = 0         # added on top: a slow version (default 0)
//! traffic_rps = 20             # requests per second the service sends itself (default 20; 0: none)
//! ```
//!
//! Values are strings, integers, booleans and (for `error_ratio`) decimal numbers
//! (`0.05`, `1`, `2.5e-2`); a ratio outside `[0, 1]` is refused with the key and line.
//!
//! The error pattern and the latency are deterministic ([`Outcomes`]): of the first `n`
//! requests exactly `round(n × error_ratio)` fail, so any `n` consecutive requests hold
//! `n × error_ratio` failures ±1, with no randomness; each request takes `latency_ms +
//! extra_latency_ms` plus a jitter of 0–3 ms that cycles with the request number (no
//! jitter when both are 0). `/healthz` is not affected by either: a version can fail
//! by its metrics while its health check stays green.

use std::fmt::Write as _;
use std::time::Duration;

/// The default of [`Behaviour::latency_ms`].
pub const DEFAULT_LATENCY_MS: u64 = 5;

/// The default of [`Behaviour::traffic_rps`]: enough for a rate over a 15 s scrape
/// interval to be steady, cheap enough for dozens of copies on one machine.
pub const DEFAULT_TRAFFIC_RPS: u32 = 20;

/// The behaviour of one sample service version.
#[derive(Debug, Clone, PartialEq)]
pub struct Behaviour {
    /// What `/version` answers; `None`: the `FLOTILLA_VERSION` environment variable.
    pub version: Option<String>,
    /// `false`: `/healthz` answers 503.
    pub unhealthy: bool,
    /// Hosts (by `FLOTILLA_HOST`) where `/healthz` answers 503 even when `healthy`:
    /// a version that breaks only on part of the fleet.
    pub unhealthy_on: Vec<String>,
    /// Delay before the server listens.
    pub start_delay_ms: u64,
    /// Exit this long after start (`Some(0)`: before listening).
    pub crash_after_ms: Option<u64>,
    /// The exit code of a crash (default 3 when 0).
    pub exit_code: i32,
    /// The contract served at `/contract`: name and version.
    pub contract: Option<(String, String)>,
    /// Refuse to start unless this URL answers a contract whose version matches the
    /// requirement: (url, requirement).
    pub requires: Option<(String, String)>,
    /// The share of `/work` requests (real and self-generated) answered 500, in
    /// `[0, 1]`; see [`Outcomes`] for the exact pattern.
    pub error_ratio: f64,
    /// The base latency of a `/work` request, in milliseconds.
    pub latency_ms: u64,
    /// Milliseconds added to every `/work` request on top of `latency_ms` (a slow version).
    pub extra_latency_ms: u64,
    /// Requests per second the service sends itself through its `/work` handler
    /// (in-process; their latency is recorded, not slept), so its metrics move without
    /// any client; 0: none.
    pub traffic_rps: u32,
}

impl Default for Behaviour {
    /// Healthy, no errors, [`DEFAULT_LATENCY_MS`] of latency, [`DEFAULT_TRAFFIC_RPS`]
    /// requests per second of its own traffic; the version from `$FLOTILLA_VERSION`.
    fn default() -> Self {
        Self {
            version: None,
            unhealthy: false,
            unhealthy_on: Vec::new(),
            start_delay_ms: 0,
            crash_after_ms: None,
            exit_code: 0,
            contract: None,
            requires: None,
            error_ratio: 0.0,
            latency_ms: DEFAULT_LATENCY_MS,
            extra_latency_ms: 0,
            traffic_rps: DEFAULT_TRAFFIC_RPS,
        }
    }
}

impl Behaviour {
    /// A healthy service that reports `version`.
    pub fn healthy(version: &str) -> Self {
        Self { version: Some(version.to_owned()), ..Self::default() }
    }

    /// A version that fails by its metrics only: `/healthz` stays 200 while `ratio` of
    /// its `/work` requests (and of its own traffic) answer 500.
    ///
    /// # Panics
    ///
    /// If `ratio` is not within `[0, 1]`.
    pub fn with_errors(version: &str, ratio: f64) -> Self {
        Self::healthy(version).with_error_ratio(ratio)
    }

    /// A version that is slow by its metrics only: `/healthz` stays 200 while every
    /// `/work` request takes `extra_ms` longer.
    pub fn slow(version: &str, extra_ms: u64) -> Self {
        Self::healthy(version).with_extra_latency_ms(extra_ms)
    }

    /// This behaviour with `ratio` of its `/work` requests answered 500.
    ///
    /// # Panics
    ///
    /// If `ratio` is not within `[0, 1]`.
    #[must_use]
    pub fn with_error_ratio(mut self, ratio: f64) -> Self {
        assert!((0.0..=1.0).contains(&ratio), "error ratio {ratio} is not within [0, 1]");
        self.error_ratio = ratio;
        self
    }

    /// This behaviour with a base latency of `ms` per `/work` request.
    #[must_use]
    pub fn with_latency_ms(mut self, ms: u64) -> Self {
        self.latency_ms = ms;
        self
    }

    /// This behaviour with `ms` added to every `/work` request.
    #[must_use]
    pub fn with_extra_latency_ms(mut self, ms: u64) -> Self {
        self.extra_latency_ms = ms;
        self
    }

    /// This behaviour sending itself `rps` requests per second (0: none).
    #[must_use]
    pub fn with_traffic_rps(mut self, rps: u32) -> Self {
        self.traffic_rps = rps;
        self
    }

    /// The `behaviour.toml` text of this behaviour.
    pub fn to_toml(&self) -> String {
        let mut out = String::from("# flotilla sample service behaviour\n");
        if let Some(version) = &self.version {
            let _ = writeln!(out, "version = {}", quote(version));
        }
        let _ = writeln!(out, "healthy = {}", !self.unhealthy);
        if !self.unhealthy_on.is_empty() {
            let _ = writeln!(out, "unhealthy_on = {}", quote(&self.unhealthy_on.join(",")));
        }
        let _ = writeln!(out, "start_delay_ms = {}", self.start_delay_ms);
        if let Some(ms) = self.crash_after_ms {
            let _ = writeln!(out, "crash_after_ms = {ms}");
        }
        if self.exit_code != 0 {
            let _ = writeln!(out, "exit_code = {}", self.exit_code);
        }
        if let Some((name, version)) = &self.contract {
            let _ = writeln!(out, "contract_name = {}\ncontract_version = {}", quote(name), quote(version));
        }
        if let Some((url, req)) = &self.requires {
            let _ = writeln!(out, "require_url = {}\nrequire_version = {}", quote(url), quote(req));
        }
        // `{:?}` always writes a TOML float (`0.0`, `0.05`, `1e-7`) that reads back exactly.
        let _ = writeln!(out, "error_ratio = {:?}", self.error_ratio);
        let _ = writeln!(out, "latency_ms = {}", self.latency_ms);
        let _ = writeln!(out, "extra_latency_ms = {}", self.extra_latency_ms);
        let _ = writeln!(out, "traffic_rps = {}", self.traffic_rps);
        out
    }

    /// Parses `behaviour.toml` text (a flat table of strings, integers, booleans and
    /// decimal numbers).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut b = Self::default();
        let (mut contract_name, mut contract_version, mut require_url, mut require_version) = (None, None, None, None);
        for (n, raw) in text.lines().enumerate() {
            let line = strip_comment(raw).trim();
            if line.is_empty() {
                continue;
            }
            let at = |why: &str| format!("behaviour.toml line {}: {why}", n + 1);
            let (key, value) = line.split_once('=').ok_or_else(|| at("expected `key = value`"))?;
            let (key, value) = (key.trim(), value.trim());
            let string = || unquote(value).ok_or_else(|| at(&format!("`{key}` must be a quoted string")));
            let int = || value.parse::<i64>().map_err(|_| at(&format!("`{key}` must be an integer")));
            let uint =
                || int().and_then(|v| u64::try_from(v).map_err(|_| at(&format!("`{key}` must not be negative"))));
            let float = || parse_float(value).ok_or_else(|| at(&format!("`{key}` must be a number")));
            match key {
                "version" => b.version = Some(string()?),
                "healthy" => {
                    b.unhealthy = match value {
                        "true" => false,
                        "false" => true,
                        _ => return Err(at("`healthy` must be true or false")),
                    }
                }
                "unhealthy_on" => {
                    b.unhealthy_on =
                        string()?.split(',').map(str::trim).filter(|h| !h.is_empty()).map(str::to_owned).collect();
                }
                "start_delay_ms" => b.start_delay_ms = uint()?,
                "crash_after_ms" => b.crash_after_ms = Some(uint()?),
                "exit_code" => b.exit_code = i32::try_from(int()?).map_err(|_| at("`exit_code` is out of range"))?,
                "contract_name" => contract_name = Some(string()?),
                "contract_version" => contract_version = Some(string()?),
                "require_url" => require_url = Some(string()?),
                "require_version" => require_version = Some(string()?),
                "error_ratio" => b.error_ratio = check_ratio(float()?).map_err(|why| at(&format!("`{key}` {why}")))?,
                "latency_ms" => b.latency_ms = uint()?,
                "extra_latency_ms" => b.extra_latency_ms = uint()?,
                "traffic_rps" => {
                    b.traffic_rps = u32::try_from(uint()?).map_err(|_| at("`traffic_rps` is out of range"))?;
                }
                other => return Err(at(&format!("unknown key `{other}`"))),
            }
        }
        b.contract = match (contract_name, contract_version) {
            (Some(n), Some(v)) => Some((n, v)),
            (None, None) => None,
            _ => return Err("behaviour.toml: contract_name and contract_version go together".to_owned()),
        };
        b.requires = match (require_url, require_version) {
            (Some(u), Some(v)) => Some((u, v)),
            (None, None) => None,
            _ => return Err("behaviour.toml: require_url and require_version go together".to_owned()),
        };
        Ok(b)
    }
}

/// Reads an error ratio given as a flag or in the environment: a decimal number in
/// `[0, 1]`; the error says why not (without naming the source).
pub fn parse_ratio(text: &str) -> Result<f64, String> {
    check_ratio(parse_float(text.trim()).ok_or_else(|| format!("`{text}` is not a number"))?)
}

/// `ratio` if it is within `[0, 1]` (NaN is not).
fn check_ratio(ratio: f64) -> Result<f64, String> {
    if (0.0..=1.0).contains(&ratio) { Ok(ratio) } else { Err(format!("must be between 0.0 and 1.0, not {ratio}")) }
}

/// A TOML number as `f64`: decimal integers and floats with an optional sign, fraction
/// and exponent, `_` between digits, and `inf`/`nan` (which no range admits).
fn parse_float(text: &str) -> Option<f64> {
    let bytes = text.as_bytes();
    let digit_at = |i: Option<usize>| i.and_then(|i| bytes.get(i)).is_some_and(u8::is_ascii_digit);
    let mut clean = String::with_capacity(text.len());
    for (i, c) in text.char_indices() {
        match c {
            '_' if digit_at(i.checked_sub(1)) && digit_at(Some(i + 1)) => {}
            '0'..='9' | '+' | '-' | '.' | 'e' | 'E' => clean.push(c),
            _ => {
                let special = matches!(text, "inf" | "+inf" | "-inf" | "nan" | "+nan" | "-nan");
                return if special { text.parse().ok() } else { None };
            }
        }
    }
    let unsigned = clean.trim_start_matches(['+', '-']);
    // TOML wants a digit on both sides of the point: `.5` and `5.` are not numbers.
    let point_ok = unsigned
        .split_once('.')
        .is_none_or(|(int, frac)| !int.is_empty() && frac.as_bytes().first().is_some_and(u8::is_ascii_digit));
    if !unsigned.as_bytes().first().is_some_and(u8::is_ascii_digit) || !point_ok {
        return None;
    }
    clean.parse().ok()
}

/// What one `/work` request does: its status and how long it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// 200 or 500.
    pub status: u16,
    /// The simulated latency (slept by a real request, only recorded for the service's
    /// own traffic).
    pub latency: Duration,
}

/// The deterministic sequence of `/work` outcomes of a behaviour. Request `k` (from 1)
/// fails when `round(k × ratio)` exceeds `round((k - 1) × ratio)`: an error-diffusion
/// pattern in which the first `n` requests hold exactly `round(n × ratio)` failures and
/// any `n` consecutive ones `n × ratio` ±1. The latency is `latency_ms +
/// extra_latency_ms` plus 0, 2, 1, 3 ms in turn (no jitter when the sum is 0).
#[derive(Debug, Clone)]
pub struct Outcomes {
    error_ratio: f64,
    latency_ms: u64,
    served: u64,
}

impl Outcomes {
    /// The outcomes of `behaviour`, from its first request.
    pub fn new(behaviour: &Behaviour) -> Self {
        Self {
            error_ratio: behaviour.error_ratio.clamp(0.0, 1.0),
            latency_ms: behaviour.latency_ms.saturating_add(behaviour.extra_latency_ms),
            served: 0,
        }
    }

    /// How many failures the first `n` requests hold: `round(n × ratio)`.
    pub fn failures_in_first(&self, n: u64) -> u64 {
        // Exact enough: n × ratio is off by far less than 0.5 below 2^50 requests.
        #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let failures = (n as f64 * self.error_ratio).round() as u64;
        failures
    }

    /// The outcome of the next request.
    pub fn next_outcome(&mut self) -> Outcome {
        let k = self.served;
        self.served += 1;
        let fails = self.failures_in_first(k + 1) > self.failures_in_first(k);
        let jitter = if self.latency_ms == 0 { 0 } else { [0, 2, 1, 3][(k % 4) as usize] };
        Outcome {
            status: if fails { 500 } else { 200 },
            latency: Duration::from_millis(self.latency_ms.saturating_add(jitter)),
        }
    }
}

/// Whether `version` (`1.2.3`) matches `requirement`: `1.2.3` or `=1.2.3` (exact),
/// `^1.2` (same major, at least 1.2; for 0.x the same minor), `1.*` (same major).
pub fn version_matches(version: &str, requirement: &str) -> bool {
    let Some(have) = numbers(version) else { return false };
    let req = requirement.trim();
    if let Some(prefix) = req.strip_suffix(".*") {
        let parts = prefix.split('.').count();
        return numbers(prefix).is_some_and(|want| have.iter().zip(&want).take(parts).all(|(a, b)| a == b));
    }
    if let Some(rest) = req.strip_prefix('^') {
        let Some(want) = numbers(rest) else { return false };
        let same_major = have[0] == want[0] && (want[0] != 0 || have[1] == want[1]);
        return same_major && have >= want;
    }
    numbers(req.strip_prefix('=').unwrap_or(req)).is_some_and(|want| want == have)
}

/// `1.2.3` → `[1, 2, 3]`; missing parts are 0; a pre-release or build suffix is ignored.
fn numbers(text: &str) -> Option<[u64; 3]> {
    let core = text.trim().split(['-', '+']).next()?;
    let mut out = [0; 3];
    for (i, part) in core.split('.').enumerate() {
        *out.get_mut(i)? = part.parse().ok()?;
    }
    Some(out)
}

fn strip_comment(line: &str) -> &str {
    let mut in_string = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => in_string = !in_string,
            '#' if !in_string => return &line[..i],
            _ => {}
        }
    }
    line
}

fn quote(s: &str) -> String {
    let mut out = String::from('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn unquote(s: &str) -> Option<String> {
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.push(chars.next()?);
        } else {
            out.push(c);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_toml() {
        let b = Behaviour {
            version: Some("2.0.0".into()),
            unhealthy: true,
            unhealthy_on: vec!["web-3".into(), "web-4".into()],
            start_delay_ms: 250,
            crash_after_ms: Some(0),
            exit_code: 7,
            contract: Some(("pay-api".into(), "2.0.0".into())),
            requires: Some(("http://127.0.0.1:1/contract".into(), "^1.2".into())),
            error_ratio: 0.05,
            latency_ms: 12,
            extra_latency_ms: 250,
            traffic_rps: 0,
        };
        assert_eq!(Behaviour::parse(&b.to_toml()), Ok(b));
        assert_eq!(Behaviour::parse(&Behaviour::default().to_toml()), Ok(Behaviour::default()));
        for ratio in [0.0, 1.0, 0.1, 1.0 / 3.0, 1e-7, 0.999_999_999_999] {
            let b = Behaviour::with_errors("1.0.0", ratio);
            assert_eq!(Behaviour::parse(&b.to_toml()), Ok(b), "{ratio}");
        }
        // A file without the new keys (an older artifact) keeps today's behaviour.
        let old = Behaviour::parse("version = \"1.0.0\"\nhealthy = true\nstart_delay_ms = 0\n").expect("old");
        assert_eq!(old, Behaviour::healthy("1.0.0"));
        assert_eq!((old.error_ratio, old.latency_ms, old.extra_latency_ms, old.traffic_rps), (0.0, 5, 0, 20));
        let err = Behaviour::parse("healthy = yes\n").expect_err("bad bool");
        assert!(err.contains("line 1"), "{err}");
        assert!(Behaviour::parse("colour = \"red\"").expect_err("unknown").contains("unknown key `colour`"));
    }

    #[test]
    fn builds_failing_and_slow_versions() {
        let b = Behaviour::with_errors("2.0.0", 0.25);
        assert_eq!((b.version.as_deref(), b.unhealthy, b.error_ratio), (Some("2.0.0"), false, 0.25));
        let b = Behaviour::slow("2.0.0", 300).with_traffic_rps(50).with_latency_ms(1).with_error_ratio(0.5);
        assert_eq!((b.extra_latency_ms, b.traffic_rps, b.latency_ms, b.error_ratio), (300, 50, 1, 0.5));
        assert!(!b.unhealthy);
        let text = b.to_toml();
        for line in ["error_ratio = 0.5\n", "latency_ms = 1\n", "extra_latency_ms = 300\n", "traffic_rps = 50\n"] {
            assert!(text.contains(line), "{line} in {text}");
        }
        let panic = std::panic::catch_unwind(|| Behaviour::with_errors("2.0.0", 1.5));
        assert!(panic.is_err(), "a ratio above 1 is refused");
    }

    #[test]
    fn reads_floats() {
        for (text, want) in [
            ("0.05", 0.05),
            ("1", 1.0),
            ("0", 0.0),
            ("+0.5", 0.5),
            ("5e-2", 0.05),
            ("2.5E-1", 0.25),
            ("0.000_5", 0.0005),
            ("1.0", 1.0),
        ] {
            assert_eq!(parse_float(text), Some(want), "{text}");
            let b = Behaviour::parse(&format!("error_ratio = {text} # comment")).expect(text);
            assert_eq!(b.error_ratio, want, "{text}");
        }
        assert_eq!(parse_float("-3.5"), Some(-3.5));
        assert_eq!(parse_float("inf"), Some(f64::INFINITY));
        assert!(parse_float("nan").is_some_and(f64::is_nan));
        for bad in ["", ".5", "5.", "\"0.5\"", "0.5x", "1__0", "_1", "1_", "e5", "0x10", "true", "Infinity", "1.2.3"] {
            assert_eq!(parse_float(bad), None, "{bad:?}");
        }
        assert_eq!(parse_ratio(" 0.3 "), Ok(0.3));
        assert_eq!(parse_ratio("2"), Err("must be between 0.0 and 1.0, not 2".to_owned()));
        assert_eq!(parse_ratio("lots"), Err("`lots` is not a number".to_owned()));
    }

    #[test]
    fn refuses_bad_ratios_naming_key_and_line() {
        let cases = [
            ("error_ratio = 1.5", "behaviour.toml line 2: `error_ratio` must be between 0.0 and 1.0, not 1.5"),
            ("error_ratio = -0.1", "behaviour.toml line 2: `error_ratio` must be between 0.0 and 1.0, not -0.1"),
            ("error_ratio = nan", "behaviour.toml line 2: `error_ratio` must be between 0.0 and 1.0, not NaN"),
            ("error_ratio = inf", "behaviour.toml line 2: `error_ratio` must be between 0.0 and 1.0, not inf"),
            ("error_ratio = \"0.5\"", "behaviour.toml line 2: `error_ratio` must be a number"),
            ("error_ratio = lots", "behaviour.toml line 2: `error_ratio` must be a number"),
            ("latency_ms = 2.5", "behaviour.toml line 2: `latency_ms` must be an integer"),
            ("extra_latency_ms = -1", "behaviour.toml line 2: `extra_latency_ms` must not be negative"),
            ("traffic_rps = 5000000000", "behaviour.toml line 2: `traffic_rps` is out of range"),
        ];
        for (line, want) in cases {
            assert_eq!(Behaviour::parse(&format!("healthy = true\n{line}\n")), Err(want.to_owned()), "{line}");
        }
    }

    /// The failures among requests `from..from + n` (0-based) of `ratio`.
    fn failures(ratio: f64, from: usize, n: usize) -> u64 {
        let mut outcomes = Outcomes::new(&Behaviour::with_errors("1.0.0", ratio));
        let all: Vec<Outcome> = (0..from + n).map(|_| outcomes.next_outcome()).collect();
        all[from..].iter().filter(|o| o.status == 500).count() as u64
    }

    #[test]
    fn errors_follow_the_ratio_exactly() {
        for ratio in [0.0, 0.01, 0.05, 0.1, 0.25, 1.0 / 3.0, 0.5, 0.9, 0.99, 1.0] {
            // The first n hold exactly round(n × ratio).
            for n in [1, 7, 20, 100, 1000, 1234] {
                let want = (n as f64 * ratio).round() as u64;
                assert_eq!(failures(ratio, 0, n), want, "ratio {ratio}, first {n}");
            }
            // Any window holds n × ratio ±1.
            for from in [1, 13, 99, 500] {
                for n in [1, 10, 20, 33, 100, 400] {
                    let got = failures(ratio, from, n) as f64;
                    assert!((got - n as f64 * ratio).abs() <= 1.0, "ratio {ratio}, {n} from {from}: {got}");
                }
            }
        }
        // 5%: one in twenty, evenly spread.
        let mut outcomes = Outcomes::new(&Behaviour::with_errors("1.0.0", 0.05));
        let failed: Vec<usize> = (1..=100).filter(|_| outcomes.next_outcome().status == 500).collect();
        assert_eq!(failed, vec![10, 30, 50, 70, 90]);
        assert_eq!(failures(0.0, 0, 10_000), 0);
        assert_eq!(failures(1.0, 0, 10_000), 10_000);
    }

    #[test]
    fn latency_is_base_plus_extra_plus_a_small_cycle() {
        let ms = |b: &Behaviour| {
            let mut outcomes = Outcomes::new(b);
            (0..6).map(|_| outcomes.next_outcome().latency.as_millis()).collect::<Vec<_>>()
        };
        assert_eq!(ms(&Behaviour::default()), vec![5, 7, 6, 8, 5, 7]);
        assert_eq!(ms(&Behaviour::slow("2.0.0", 200)), vec![205, 207, 206, 208, 205, 207]);
        assert_eq!(ms(&Behaviour::default().with_latency_ms(0)), vec![0; 6]);
    }

    #[test]
    fn versions_match_requirements() {
        assert!(version_matches("1.2.3", "1.2.3"));
        assert!(version_matches("1.2.3", "=1.2.3"));
        assert!(!version_matches("1.2.4", "1.2.3"));
        assert!(version_matches("1.4.0", "^1.2"));
        assert!(!version_matches("1.1.9", "^1.2"));
        assert!(!version_matches("2.0.0", "^1.2"));
        assert!(!version_matches("0.3.0", "^0.2"));
        assert!(version_matches("1.9.9", "1.*"));
        assert!(!version_matches("2.0.0", "1.*"));
    }
}
