//! `flotilla plan`: plan a release offline, optionally against a host inventory.
//! `--output json` prints the `flotilla.v1.Plan` message `Releases.Plan` answers with,
//! made by the coordinator's own conversion (docs/plan-json.md).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use flotilla_coordinator::plan_view;
use flotilla_shared::plan::Plan;
use flotilla_shared::{Fleet, SourceFile};

use crate::{Failure, Output, json, render};

/// Arguments of `flotilla plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// The release spec (TOML).
    spec: PathBuf,
    /// A host inventory (TOML or JSON, by extension): `[[host]]` tables with `id`,
    /// `labels` and `services`, so hosts and batches can be shown without a cluster.
    #[arg(long, value_name = "FILE")]
    hosts: Option<PathBuf>,
    /// How to print the plan.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    output: Output,
}

/// Runs `flotilla plan`.
pub fn run(args: &PlanArgs) -> Result<(), Failure> {
    let text = read(&args.spec)?;
    let source = SourceFile::new(args.spec.display().to_string(), text);
    let fleet = args.hosts.as_deref().map(read_inventory).transpose()?;
    let spec = flotilla_shared::spec::parse(&source).map_err(|e| Failure::Usage(e.into()))?;
    let plan = Plan::build(&spec, fleet.as_ref()).map_err(|diags| Failure::Usage(source.locate_all(diags).into()))?;

    let rendered = match args.output {
        Output::Json => json::pretty(&plan_view::plan(&plan, &source))?,
        Output::Table => render::table(&plan, &source),
        Output::Dot => render::dot(&plan),
    };
    std::io::stdout()
        .lock()
        .write_all(rendered.as_bytes())
        .context("writing the plan to standard output")
        .map_err(Failure::Operational)
}

fn read(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| Failure::Usage(anyhow!("cannot read {}: {e}", path.display())))
}

fn read_inventory(path: &Path) -> Result<Fleet, Failure> {
    let text = read(path)?;
    let parsed = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => Fleet::from_json(&text),
        _ => Fleet::from_toml(&text),
    };
    parsed.map_err(|e| Failure::Usage(anyhow!("bad host inventory {}: {e}", path.display())))
}
