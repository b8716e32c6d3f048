//! Core vocabulary shared by every layer: names, labels, selectors and host counts.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The name of a service, unique within a release (`payments`, `ledger-db`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ServiceName(pub String);

impl ServiceName {
    /// Creates a service name. Validation of the spelling happens in the spec layer.
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for ServiceName {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// The identity of a host, as its agent registers it (`web-3`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HostId(pub String);

impl HostId {
    /// Creates a host id.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for HostId {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// The labels of a host (`role = "web"`, `zone = "a"`).
pub type Labels = BTreeMap<String, String>;

/// A label selector: a host matches when it carries every listed label with the listed value.
/// The empty selector matches every host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LabelSelector(pub BTreeMap<String, String>);

impl LabelSelector {
    /// A selector that matches every host.
    pub fn all() -> Self {
        Self::default()
    }

    /// Whether the selector has no terms (matches everything).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a host with these labels is selected.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.0.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("*");
        }
        let mut first = true;
        for (k, v) in &self.0 {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

/// A number of hosts, either absolute or as a share of the hosts a service runs on in a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostCount {
    /// An absolute number of hosts (`canary = 1`).
    Hosts(u32),
    /// A percentage in hundredths of a percent (`"12.5%"` is 1250), 1..=10000.
    Percent(u32),
}

impl HostCount {
    /// 100 %: every host.
    pub const ALL: HostCount = HostCount::Percent(10_000);

    /// How many of `total` hosts this count means. Percentages round up, so any share
    /// above zero of a non-empty set is at least one host; the result never exceeds `total`.
    pub fn of(self, total: usize) -> usize {
        match self {
            HostCount::Hosts(n) => (n as usize).min(total),
            HostCount::Percent(bp) => {
                let bp = bp as usize;
                (total * bp).div_ceil(10_000).min(total)
            }
        }
    }

    /// Whether this count is zero hosts.
    pub fn is_zero(self) -> bool {
        matches!(self, HostCount::Hosts(0) | HostCount::Percent(0))
    }
}

impl fmt::Display for HostCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            HostCount::Hosts(n) => write!(f, "{n}"),
            HostCount::Percent(bp) if bp % 100 == 0 => write!(f, "{}%", bp / 100),
            HostCount::Percent(bp) => {
                let s = format!("{}.{:02}", bp / 100, bp % 100);
                write!(f, "{}%", s.trim_end_matches('0'))
            }
        }
    }
}

impl Serialize for HostCount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            HostCount::Hosts(n) => s.serialize_u32(n),
            HostCount::Percent(_) => s.serialize_str(&self.to_string()),
        }
    }
}

/// How one service depends on another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DepKind {
    /// The dependent starts only after the dependency finished; cascades on rollback.
    Hard,
    /// As hard, and the dependency's `migrate` hook must have succeeded; its rollback
    /// runs `migrate_down` after the dependents are back, or pauses when there is none.
    Data,
    /// Per host: the dependency's new version is applied first on hosts running both.
    Config,
    /// Dependency first when both are in the release; no cascade.
    Soft,
}

impl DepKind {
    /// Every kind, in the order the spec documents them.
    pub const ALL: [DepKind; 4] = [DepKind::Hard, DepKind::Data, DepKind::Config, DepKind::Soft];

    /// The spelling used in specs and output.
    pub fn as_str(self) -> &'static str {
        match self {
            DepKind::Hard => "hard",
            DepKind::Data => "data",
            DepKind::Config => "config",
            DepKind::Soft => "soft",
        }
    }

    /// Whether a rollback of the dependency pulls the dependent into a `cascade` rollback.
    pub fn cascades(self) -> bool {
        !matches!(self, DepKind::Soft)
    }
}

impl fmt::Display for DepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the engine does when a service fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Compute the rollback set and roll it back.
    Rollback,
    /// Wait for a human to resume, roll back or abort.
    Pause,
}

impl fmt::Display for OnFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OnFailure::Rollback => "rollback",
            OnFailure::Pause => "pause",
        })
    }
}

/// Which services a failure rolls back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RollbackScope {
    /// The failed service and every started service that reaches it through
    /// hard, data or config edges or contracts, transitively.
    Cascade,
    /// Only the failed service.
    Service,
    /// Every started service of the release.
    Release,
}

impl RollbackScope {
    /// The spelling used in specs and output.
    pub fn as_str(self) -> &'static str {
        match self {
            RollbackScope::Cascade => "cascade",
            RollbackScope::Service => "service",
            RollbackScope::Release => "release",
        }
    }
}

impl fmt::Display for RollbackScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A duration as Flotilla writes it in messages and events (`1m 30s`, `250ms`): the
/// form a spec's durations are written in.
pub fn format_duration(d: std::time::Duration) -> impl fmt::Display {
    humantime::format_duration(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_up_and_never_exceed_the_total() {
        assert_eq!(HostCount::Percent(2_500).of(8), 2);
        assert_eq!(HostCount::Percent(2_500).of(9), 3);
        assert_eq!(HostCount::Percent(100).of(3), 1);
        assert_eq!(HostCount::ALL.of(7), 7);
        assert_eq!(HostCount::Percent(1).of(0), 0);
        assert_eq!(HostCount::Hosts(5).of(3), 3);
    }

    #[test]
    fn host_counts_print_as_written() {
        assert_eq!(HostCount::Percent(1_250).to_string(), "12.5%");
        assert_eq!(HostCount::Percent(10_000).to_string(), "100%");
        assert_eq!(HostCount::Percent(1).to_string(), "0.01%");
        assert_eq!(HostCount::Hosts(3).to_string(), "3");
    }

    #[test]
    fn selectors_need_every_label() {
        let labels: Labels =
            [("role", "web"), ("zone", "a")].into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        let sel = LabelSelector([("role".to_owned(), "web".to_owned())].into());
        assert!(sel.matches(&labels));
        assert!(LabelSelector::all().matches(&labels));
        let miss = LabelSelector([("role".to_owned(), "db".to_owned())].into());
        assert!(!miss.matches(&labels));
    }
}
