//! Release plans as the coordinator keeps them: built from the stored spec text and
//! the fleet it was planned against, once per release, and shared by whoever reads
//! them (the API's views, the engine's driver, the state machine's conflict check).

use std::sync::{Arc, OnceLock};

use flotilla_shared::inventory::Fleet;
use flotilla_shared::plan::Plan;
use flotilla_shared::spec::{self, SourceFile};

/// A release's plan and the fleet it was planned against.
pub type Planned = Arc<(Plan, Fleet)>;

/// Rebuilds a release's plan from what the state machine keeps: the spec text and the
/// fleet it was planned against. Deterministic, so every leader executes the same plan.
pub fn replan(spec_text: &str, file_name: &str, fleet_json: &str) -> Result<(Plan, Fleet), String> {
    let fleet: Fleet = if fleet_json.is_empty() {
        Fleet::default()
    } else {
        serde_json::from_str(fleet_json).map_err(|e| format!("the stored fleet does not parse: {e}"))?
    };
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
    pub fn get(&self, spec_text: &str, file_name: &str, fleet_json: &str) -> Result<Planned, String> {
        self.0.get_or_init(|| replan(spec_text, file_name, fleet_json).map(Arc::new)).clone()
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
