//! Human-readable and Graphviz renderings of a plan.

use std::fmt::Write;

use flotilla_shared::plan::{EdgeKind, Plan, RollbackStep, describe_batches};
use flotilla_shared::{HostId, SourceFile};

/// The plan as text for a terminal.
pub fn table(plan: &Plan, source: &SourceFile) -> String {
    let spec = plan.spec();
    let graph = plan.graph();
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "release {}: {} services, {} waves, {} stage(s), {} gate(s){}",
        spec.release,
        spec.services.len(),
        graph.wave_count(),
        plan.stages().len(),
        plan.gates().len(),
        if plan.fleet_known() { "" } else { " (offline: no --hosts, batches by size only)" }
    );

    section(w, "Stages");
    for (i, stage) in plan.stages().iter().enumerate() {
        let selector =
            stage.selector.as_ref().map_or("every host not in an earlier stage".to_owned(), |s| s.to_string());
        let _ = write!(w, "  {}. {:<16} {}", i + 1, stage.name, selector);
        if let Some(hosts) = &stage.hosts {
            let _ = write!(w, "  ({} host(s): {})", hosts.len(), list(hosts));
        }
        if stage.approval {
            let _ = write!(w, "  [approval before the next stage]");
        }
        let _ = writeln!(w);
    }

    section(w, "Waves (a service starts in a stage as soon as its own dependencies are done there)");
    for (nodes, wave) in graph.waves().iter().zip(1..) {
        let names: Vec<String> = nodes.iter().map(|&v| graph.name(v).to_string()).collect();
        let _ = writeln!(w, "  wave {wave}: {}", names.join(", "));
        for gate in plan.gates().iter().filter(|g| g.after_wave == wave) {
            let _ = writeln!(w, "    gate {} opens after this wave", gate.name);
        }
    }

    section(w, "Services");
    let width = spec.services.iter().map(|s| s.name.as_str().len()).max().unwrap_or(4).max(7);
    let _ = writeln!(w, "  {:<width$}  {:<10} {:>4}  {:<14} DEPENDS ON", "SERVICE", "VERSION", "WAVE", "HOSTS");
    for (v, svc) in spec.services.iter().enumerate() {
        let deps: Vec<String> = graph
            .dependencies(v)
            .map(|e| match &e.kind {
                EdgeKind::Dep(kind) => format!("{} ({kind})", graph.name(e.dependency)),
                EdgeKind::Contract { contract, .. } => format!("{} (contract {contract})", graph.name(e.dependency)),
            })
            .chain(plan.gated_by(v).iter().map(|&g| format!("gate {}", plan.gates()[g].name)))
            .collect();
        let _ = writeln!(
            w,
            "  {:<width$}  {:<10} {:>4}  {:<14} {}",
            svc.name.as_str(),
            svc.version.to_string(),
            graph.wave(v),
            svc.hosts.to_string(),
            if deps.is_empty() { "-".to_owned() } else { deps.join(", ") }
        );
    }

    section(w, "Rollouts (batches are cumulative; each is baked before the next)");
    for (si, stage) in plan.stages().iter().enumerate() {
        let _ = writeln!(w, "  stage {}:", stage.name);
        for (v, svc) in spec.services.iter().enumerate() {
            let policy = &svc.policy;
            let mut bake = humantime::format_duration(policy.bake).to_string();
            if policy.analyses() {
                let names: Vec<&str> = policy.metrics.iter().map(|m| m.criteria.name.as_str()).collect();
                bake.push_str(&format!(
                    "; analysis of {} every {}",
                    names.join(", "),
                    humantime::format_duration(policy.analysis.interval)
                ));
            }
            if !plan.fleet_known() {
                let _ = writeln!(
                    w,
                    "    {:<width$}  {}  (bake {bake})",
                    svc.name.as_str(),
                    describe_batches(policy).join(" -> ")
                );
                continue;
            }
            let Some(rollout) = plan.rollout(si, v) else { continue };
            let batches: Vec<String> =
                rollout.batches.iter().map(|b| format!("{} [{}]", b.name, list(&b.hosts))).collect();
            let body = if batches.is_empty() { "nothing to do".to_owned() } else { batches.join(" -> ") };
            let _ = write!(w, "    {:<width$}  {body}  (bake {bake})", svc.name.as_str());
            if !rollout.skipped.is_empty() {
                let _ = write!(w, "; already at {}: {}", svc.version, list(&rollout.skipped));
            }
            let _ = writeln!(w);
        }
    }

    if !plan.gates().is_empty() {
        section(w, "Gates (run in every stage once their services are done there)");
        for (gate, gs) in plan.gates().iter().zip(&spec.gates) {
            let after: Vec<&str> = gate.after.iter().map(|&v| graph.name(v).as_str()).collect();
            let blocks: Vec<&str> = gate.blocks.iter().map(|&v| graph.name(v).as_str()).collect();
            let mut what = Vec::new();
            if let Some(exec) = &gs.exec {
                what.push(format!("run `{}` on one host matching {}", exec.command, exec.on));
            }
            if gs.approval {
                what.push("wait for approval".to_owned());
            }
            let _ = writeln!(
                w,
                "  {}: after {}; {}; holds back {}",
                gate.name,
                after.join(", "),
                what.join(", then "),
                if blocks.is_empty() { "nothing".to_owned() } else { blocks.join(", ") }
            );
        }
    }

    section(w, "Rollback if a service fails (assuming every service has started)");
    for v in 0..graph.len() {
        let rb = plan.rollback_if_failed(v);
        let steps: Vec<String> = rb
            .steps
            .iter()
            .map(|s| match s {
                RollbackStep::Rollback { service } => service.to_string(),
                RollbackStep::MigrateDown { service } => format!("{service} migrate_down"),
                RollbackStep::Pause { service, .. } => format!("PAUSE at {service}"),
            })
            .collect();
        let _ = writeln!(w, "  {:<width$}  {:<8} {}", graph.name(v).as_str(), rb.scope.as_str(), steps.join(" -> "));
        for step in &rb.steps {
            if let RollbackStep::Pause { service, reason } = step {
                let _ = writeln!(w, "  {:<width$}           {service}: {reason}", "");
            }
        }
    }

    if !plan.warnings().is_empty() {
        section(w, "Warnings");
        for warning in plan.warnings() {
            let e = source.locate(warning.clone());
            let _ = writeln!(w, "  {}:{}:{}: {}", e.file, e.line, e.column, e.message);
        }
    }
    out
}

/// The dependency graph in Graphviz: an arrow from each service to what it depends on.
pub fn dot(plan: &Plan) -> String {
    let graph = plan.graph();
    let spec = plan.spec();
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "digraph {} {{", quote(&spec.release));
    let _ = writeln!(w, "  rankdir=BT;\n  node [shape=box, fontname=\"Helvetica\"];");
    for (nodes, wave) in graph.waves().iter().zip(1..) {
        let _ = writeln!(w, "  subgraph wave_{wave} {{ rank=same;");
        for &v in nodes {
            let label = format!("{}\\n{}", graph.name(v), spec.services[v].version);
            let _ = writeln!(w, "    {} [label=\"{label}\"];", quote(graph.name(v).as_str()));
        }
        let _ = writeln!(w, "  }}");
    }
    for e in graph.edges() {
        let style = match &e.kind {
            EdgeKind::Dep(flotilla_shared::DepKind::Soft) => "style=dashed, ",
            EdgeKind::Contract { .. } => "style=dotted, color=blue, ",
            EdgeKind::Dep(_) => "",
        };
        let _ = writeln!(
            w,
            "  {} -> {} [{style}label={}];",
            quote(graph.name(e.dependent).as_str()),
            quote(graph.name(e.dependency).as_str()),
            quote(&e.kind.to_string())
        );
    }
    for gate in plan.gates() {
        let id = quote(&format!("gate:{}", gate.name));
        let _ = writeln!(w, "  {id} [shape=diamond, label={}];", quote(&gate.name));
        for &a in &gate.after {
            let _ = writeln!(w, "  {id} -> {} [color=gray];", quote(graph.name(a).as_str()));
        }
        for &b in &gate.blocks {
            let _ = writeln!(w, "  {} -> {id} [color=gray];", quote(graph.name(b).as_str()));
        }
    }
    let _ = writeln!(w, "}}");
    out
}

fn section(w: &mut String, title: &str) {
    let _ = writeln!(w, "\n{title}");
}

fn list(hosts: &[HostId]) -> String {
    hosts.iter().map(HostId::as_str).collect::<Vec<_>>().join(", ")
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}
