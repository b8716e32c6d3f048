//! Release plans as the coordinator keeps them: built from the stored spec text and
//! the fleet it was planned against, once per release, and shared by whoever reads
//! them (the API's views, the engine's driver, the state machine's conflict check);
//! and the fleet a release was planned against, in the form the state stores it.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use flotilla_shared::inventory::{Fleet, Host, Installed};
use flotilla_shared::model::{HostId, Labels, ServiceName};
use flotilla_shared::plan::Plan;
use flotilla_shared::spec::{self, SourceFile};

/// A release's plan and the fleet it was planned against.
pub type Planned = Arc<(Plan, Fleet)>;

/// The fleet a release was planned against, as the state stores it: the planner's
/// [`Fleet`] in serde's default representations (the inventory's shorthand for a bare
/// version is an untagged enum, which the state's positional codec cannot carry).
/// Converts to and from [`Fleet`] without loss.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFleet {
    /// The hosts, in the fleet's order.
    pub hosts: Vec<StoredHost>,
}

/// One host of a [`StoredFleet`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredHost {
    /// The host's id.
    pub id: HostId,
    /// Its labels.
    pub labels: Labels,
    /// What it ran, by service: the version, and the contracts it serves (each with
    /// its version) when known (`None` for the inventory's bare-version form).
    /// Versions are kept as text, as semver writes them.
    pub services: BTreeMap<ServiceName, (String, Option<BTreeMap<String, String>>)>,
}

impl From<&Fleet> for StoredFleet {
    fn from(fleet: &Fleet) -> Self {
        let hosts = fleet
            .hosts
            .iter()
            .map(|h| StoredHost {
                id: h.id.clone(),
                labels: h.labels.clone(),
                services: h
                    .services
                    .iter()
                    .map(|(name, installed)| {
                        let provides = installed
                            .provides()
                            .map(|p| p.iter().map(|(contract, v)| (contract.clone(), v.to_string())).collect());
                        (name.clone(), (installed.version().to_string(), provides))
                    })
                    .collect(),
            })
            .collect();
        Self { hosts }
    }
}

impl StoredFleet {
    /// The planner's fleet. Fails only for a version that is not semver, which a
    /// fleet built by [`StoredFleet::from`] never holds.
    pub fn to_fleet(&self) -> Result<Fleet, String> {
        let version = |host: &HostId, v: &str| {
            semver::Version::parse(v).map_err(|e| format!("the stored fleet's host {host} has version `{v}`: {e}"))
        };
        let mut hosts = Vec::with_capacity(self.hosts.len());
        for h in &self.hosts {
            let mut services = BTreeMap::new();
            for (name, (v, provides)) in &h.services {
                let installed = match provides {
                    None => Installed::Version(version(&h.id, v)?),
                    Some(provides) => Installed::Detailed {
                        version: version(&h.id, v)?,
                        provides: provides
                            .iter()
                            .map(|(contract, v)| Ok((contract.clone(), version(&h.id, v)?)))
                            .collect::<Result<_, String>>()?,
                    },
                };
                services.insert(name.clone(), installed);
            }
            hosts.push(Host { id: h.id.clone(), labels: h.labels.clone(), services });
        }
        Ok(Fleet { hosts })
    }
}

/// Rebuilds a release's plan from what the state machine keeps: the spec text and the
/// fleet it was planned against. Deterministic, so every leader executes the same plan.
pub fn replan(spec_text: &str, file_name: &str, fleet: &StoredFleet) -> Result<(Plan, Fleet), String> {
    let fleet = fleet.to_fleet()?;
    let source = SourceFile::new(file_name, spec_text);
    let spec = spec::parse(&source).map_err(|e| e.to_string())?;
    let plan = Plan::build(&spec, Some(&fleet)).map_err(|d| source.locate_all(d).to_string())?;
    Ok((plan, fleet))
}

/// The plan of one stored release, built on first use and kept beside its record.
/// Never stored: a snapshot holds the spec text and fleet it is built from, so the
/// cell of a restored record starts empty. Records compare equal whatever their
/// cells hold (the plan is a function of the record).
#[derive(Clone, Default)]
pub struct PlanCell(OnceLock<Result<Planned, String>>);

impl PlanCell {
    /// A cell holding `planned` already (the state machine plans a release it creates).
    pub fn built(planned: Result<Planned, String>) -> Self {
        let cell = OnceLock::new();
        let _ = cell.set(planned);
        Self(cell)
    }

    /// The plan, built from the spec text and fleet on first use.
    pub fn get(&self, spec_text: &str, file_name: &str, fleet: &StoredFleet) -> Result<Planned, String> {
        self.0.get_or_init(|| replan(spec_text, file_name, fleet).map(Arc::new)).clone()
    }
}

impl PartialEq for PlanCell {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for PlanCell {}

impl std::fmt::Debug for PlanCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0.get() {
            None => "PlanCell(not built)",
            Some(Ok(_)) => "PlanCell(built)",
            Some(Err(_)) => "PlanCell(does not plan)",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fleet survives the state's codec whole, both forms of an installed service
    /// included, so every node plans a stored release against the same hosts.
    #[test]
    fn a_stored_fleet_round_trips_through_the_state_codec() {
        let fleet = Fleet::from_toml(
            r#"
            [[host]]
            id = "h-1"
            labels = { zone = "a" }
            services = { web = "1.4.0", auth = { version = "3.1.0", provides = { "auth-api" = "3.1.0" } } }
            [[host]]
            id = "h-2"
            "#,
        )
        .expect("an inventory");
        let bytes = crate::raft::codec::encode(&StoredFleet::from(&fleet)).expect("encodes");
        let back: StoredFleet = crate::raft::codec::decode(&bytes).expect("decodes");
        assert_eq!(back.to_fleet(), Ok(fleet));
    }
}
