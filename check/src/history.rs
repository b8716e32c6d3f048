//! The HISTORY document a chaos round leaves behind: every release as `Releases.Get`
//! returns it at the end, every release's event log, every host's execution history
//! and final inventory, and the API writes the client made. One JSON document,
//! [`HISTORY_FORMAT`]; readers refuse any other format.
//!
//! Releases and events are the `flotilla.v1` messages in the canonical protobuf JSON
//! mapping (what `flotilla --output json` prints: lowerCamelCase fields, enums by name,
//! 64-bit integers as strings); host lines are the agent's own
//! [`HostHistoryRecord`](flotilla_shared::history::HostHistoryRecord)s. The document's
//! own fields are snake_case and unknown ones are refused, so a misspelt key cannot
//! leave a part of the history silently unread.

use std::collections::{BTreeMap, BTreeSet};

use flotilla_proto::v1;
use flotilla_shared::history::{HOST_HISTORY_FORMAT, HostHistoryRecord};
use serde::{Deserialize, Serialize};

/// The format of the HISTORY document this checker reads.
pub const HISTORY_FORMAT: u32 = 1;

/// The method of the API write that creates a release.
pub const CREATE_METHOD: &str = "flotilla.v1.Releases/Create";

/// Everything a chaos round recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct History {
    /// [`HISTORY_FORMAT`].
    pub format: u32,
    /// The seed of the chaos schedule that produced the history, echoed in the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// The final state of every release, as `Releases.Get` returns it (with its plan).
    #[serde(default)]
    pub releases: Vec<v1::Release>,
    /// Per release id, its whole event log in index order.
    #[serde(default)]
    pub events: BTreeMap<String, Vec<v1::ReleaseEvent>>,
    /// Every host's execution history and final inventory.
    #[serde(default)]
    pub hosts: Vec<HostRecord>,
    /// The API writes the client made, in the order it made them.
    #[serde(default)]
    pub writes: Vec<Write>,
}

/// One host: what its agent executed and what it runs at the end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostRecord {
    /// The host id.
    pub host: String,
    /// The agent's execution history, in the order the agent wrote it (line 1 first).
    #[serde(default)]
    pub history: Vec<HostHistoryRecord>,
    /// What the host runs at the end, from the agent's inventory (`flotilla.v1.ServiceInstance`
    /// in canonical JSON; `service` and `version` are enough, `state` is read when given).
    #[serde(default)]
    pub services: Vec<v1::ServiceInstance>,
}

/// One API write the client made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Write {
    /// The full gRPC method, e.g. `flotilla.v1.Releases/Create`.
    pub method: String,
    /// The release it created or acted on; empty when the answer named none.
    #[serde(default)]
    pub release_id: String,
    /// Whether the server acknowledged it (answered OK).
    pub acknowledged: bool,
}

/// Why a document is not a history this checker can read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// Not JSON at all (serde says where).
    #[error("not valid JSON: {0}")]
    Syntax(serde_json::Error),
    /// JSON, but not shaped like a history document (serde says where).
    #[error("not a history document: {0}")]
    Shape(serde_json::Error),
    /// The document has no `format` field.
    #[error("no `format` field: a history document starts with \"format\": {HISTORY_FORMAT}")]
    NoFormat,
    /// Another format than [`HISTORY_FORMAT`].
    #[error("history format {found} is not supported: this checker reads format {HISTORY_FORMAT}")]
    Format {
        /// The format the document declares.
        found: u64,
    },
    /// Well-formed, but inconsistent in a way that makes checking meaningless.
    #[error("{place}: {problem}")]
    Invalid {
        /// Where, as a path into the document (`hosts[1] (web-2).history line 4`).
        place: String,
        /// What is wrong.
        problem: String,
    },
}

impl HistoryError {
    /// The 1-based line and column serde reported, for JSON errors.
    pub fn line_column(&self) -> Option<(usize, usize)> {
        match self {
            HistoryError::Syntax(e) | HistoryError::Shape(e) if e.line() > 0 => Some((e.line(), e.column())),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
struct FormatProbe {
    #[serde(default)]
    format: Option<u64>,
}

impl History {
    /// An empty history of the current format.
    pub fn new() -> Self {
        Self {
            format: HISTORY_FORMAT,
            seed: None,
            releases: Vec::new(),
            events: BTreeMap::new(),
            hosts: Vec::new(),
            writes: Vec::new(),
        }
    }

    /// Reads a history document: the format first (so a document of another format is
    /// refused as such, whatever its shape), then the whole document, then the
    /// consistency [`History::validate`] demands.
    pub fn from_json(text: &str) -> Result<Self, HistoryError> {
        let probe: FormatProbe = serde_json::from_str(text).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => HistoryError::Shape(e),
            _ => HistoryError::Syntax(e),
        })?;
        match probe.format {
            None => return Err(HistoryError::NoFormat),
            Some(f) if f != u64::from(HISTORY_FORMAT) => return Err(HistoryError::Format { found: f }),
            Some(_) => {}
        }
        let history: History = serde_json::from_str(text).map_err(HistoryError::Shape)?;
        history.validate()?;
        Ok(history)
    }

    /// Checks what serde cannot: the format, unique release and host ids, host lines of
    /// the format this checker knows, events filed under their own release, one
    /// inventory entry per service and host.
    pub fn validate(&self) -> Result<(), HistoryError> {
        let invalid = |place: String, problem: String| Err(HistoryError::Invalid { place, problem });
        if self.format != HISTORY_FORMAT {
            return Err(HistoryError::Format { found: u64::from(self.format) });
        }
        let mut ids = BTreeSet::new();
        for (i, r) in self.releases.iter().enumerate() {
            if r.id.is_empty() {
                return invalid(format!("releases[{i}]"), "the release has no id".to_owned());
            }
            if !ids.insert(r.id.as_str()) {
                return invalid(format!("releases[{i}]"), format!("release {} appears twice", r.id));
            }
        }
        for (id, events) in &self.events {
            for (i, e) in events.iter().enumerate() {
                if !e.release_id.is_empty() && e.release_id != *id {
                    return invalid(
                        format!("events.{id}[{i}]"),
                        format!("the event belongs to release {}, not {id}", e.release_id),
                    );
                }
            }
        }
        let mut hosts = BTreeSet::new();
        for (i, h) in self.hosts.iter().enumerate() {
            if h.host.is_empty() {
                return invalid(format!("hosts[{i}]"), "the host has no name".to_owned());
            }
            if !hosts.insert(h.host.as_str()) {
                return invalid(format!("hosts[{i}]"), format!("host {} appears twice", h.host));
            }
            for (n, line) in h.history.iter().enumerate() {
                if line.format != HOST_HISTORY_FORMAT {
                    return invalid(
                        format!("hosts[{i}] ({}).history line {}", h.host, n + 1),
                        format!(
                            "host history format {} is not supported: this checker reads format {HOST_HISTORY_FORMAT}",
                            line.format
                        ),
                    );
                }
            }
            let mut services = BTreeSet::new();
            for s in &h.services {
                if !services.insert(s.service.as_str()) {
                    return invalid(
                        format!("hosts[{i}] ({}).services", h.host),
                        format!("service {} is listed twice", s.service),
                    );
                }
            }
        }
        Ok(())
    }
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}
