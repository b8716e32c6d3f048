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
//! ```

use std::fmt::Write as _;

/// The behaviour of one sample service version.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
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
}

impl Behaviour {
    /// A healthy service that reports `version`.
    pub fn healthy(version: &str) -> Self {
        Self { version: Some(version.to_owned()), ..Self::default() }
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
        out
    }

    /// Parses `behaviour.toml` text (a flat table of strings, integers and booleans).
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
        };
        assert_eq!(Behaviour::parse(&b.to_toml()), Ok(b));
        assert_eq!(Behaviour::parse(&Behaviour::default().to_toml()), Ok(Behaviour::default()));
        let err = Behaviour::parse("healthy = yes\n").expect_err("bad bool");
        assert!(err.contains("line 1"), "{err}");
        assert!(Behaviour::parse("colour = \"red\"").expect_err("unknown").contains("unknown key `colour`"));
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
