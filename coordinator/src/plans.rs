//! Release plans as the coordinator keeps them: rebuilt from the stored spec text and
//! the fleet it was planned against.

use flotilla_shared::inventory::Fleet;
use flotilla_shared::plan::Plan;
use flotilla_shared::spec::{self, SourceFile};

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
