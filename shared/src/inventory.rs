//! The fleet as the planner sees it: hosts, their labels, and what each one runs now.
//!
//! The coordinator builds a [`Fleet`] from registered agents; `flotilla plan --hosts FILE`
//! reads one from a small TOML or JSON inventory ([`Fleet::from_toml`], [`Fleet::from_json`]).

use std::collections::BTreeMap;

use semver::Version;
use serde::{Deserialize, Serialize};

use crate::model::{HostId, Labels, ServiceName};

/// Every host known to the planner.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    /// The hosts, in inventory order.
    #[serde(default, rename = "host")]
    pub hosts: Vec<Host>,
}

/// One host and what it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// The host's id.
    pub id: HostId,
    /// The host's labels.
    #[serde(default)]
    pub labels: Labels,
    /// Services installed on the host, by name.
    #[serde(default)]
    pub services: BTreeMap<ServiceName, Installed>,
}

/// A service as installed on a host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Installed {
    /// Just the version: `web = "1.4.0"`.
    Version(Version),
    /// The version and the contracts it serves: `auth = { version = "3.1.0", provides = { "auth-api" = "3.1.0" } }`.
    Detailed {
        /// The running version.
        version: Version,
        /// Contracts the running version serves.
        #[serde(default)]
        provides: BTreeMap<String, Version>,
    },
}

impl Installed {
    /// The running version.
    pub fn version(&self) -> &Version {
        match self {
            Installed::Version(v) | Installed::Detailed { version: v, .. } => v,
        }
    }

    /// The contracts the running version serves (none known for the short form).
    pub fn provides(&self) -> Option<&BTreeMap<String, Version>> {
        match self {
            Installed::Version(_) => None,
            Installed::Detailed { provides, .. } => Some(provides),
        }
    }
}

/// A problem reading an inventory file.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The TOML did not parse or did not have the inventory's shape.
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    /// The JSON did not parse or did not have the inventory's shape.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// Two hosts share an id.
    #[error("host `{0}` is listed twice")]
    DuplicateHost(HostId),
}

impl Fleet {
    /// Reads an inventory in TOML: `[[host]]` tables with `id`, `labels` and `services`.
    pub fn from_toml(text: &str) -> Result<Self, InventoryError> {
        let fleet: Fleet = toml::from_str(text)?;
        fleet.check()
    }

    /// Reads an inventory in JSON: `{"host": [{"id": ..., "labels": {...}, "services": {...}}]}`.
    pub fn from_json(text: &str) -> Result<Self, InventoryError> {
        let fleet: Fleet = serde_json::from_str(text)?;
        fleet.check()
    }

    fn check(self) -> Result<Self, InventoryError> {
        let mut seen = std::collections::BTreeSet::new();
        for h in &self.hosts {
            if !seen.insert(&h.id) {
                return Err(InventoryError::DuplicateHost(h.id.clone()));
            }
        }
        Ok(self)
    }

    /// Whether any host runs a service of this name.
    pub fn runs(&self, service: &ServiceName) -> bool {
        self.hosts.iter().any(|h| h.services.contains_key(service))
    }

    /// Every version of a contract served anywhere in the fleet now.
    pub fn provided_versions<'a>(&'a self, contract: &'a str) -> impl Iterator<Item = &'a Version> + 'a {
        self.hosts
            .iter()
            .flat_map(|h| h.services.values())
            .filter_map(move |s| s.provides().and_then(|p| p.get(contract)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_service_forms_from_toml() {
        let fleet = Fleet::from_toml(
            r#"
            [[host]]
            id = "web-1"
            labels = { role = "web" }
            services = { web = "1.4.0", auth = { version = "3.1.0", provides = { "auth-api" = "3.1.0" } } }
            "#,
        )
        .unwrap();
        let host = &fleet.hosts[0];
        assert_eq!(host.services[&ServiceName::from("web")].version(), &Version::new(1, 4, 0));
        assert_eq!(fleet.provided_versions("auth-api").collect::<Vec<_>>(), [&Version::new(3, 1, 0)]);
        assert!(fleet.runs(&ServiceName::from("auth")));
    }

    #[test]
    fn refuses_duplicate_hosts_and_unknown_keys() {
        let dup = Fleet::from_json(r#"{"host":[{"id":"a"},{"id":"a"}]}"#).unwrap_err();
        assert_eq!(dup.to_string(), "host `a` is listed twice");
        let unknown = Fleet::from_toml("[[host]]\nid = \"a\"\nlabel = {}\n").unwrap_err();
        assert!(unknown.to_string().contains("unknown field `label`"), "{unknown}");
    }
}
