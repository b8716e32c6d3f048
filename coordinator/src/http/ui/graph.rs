//! The release's dependency graph as SVG: services as boxes in columns by wave (a
//! service's wave is one more than its deepest dependency's), coloured by their state in
//! the current stage, and edges from each dependency to its dependent styled by kind.
//! Pure: the page gives it the plan and the states.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use flotilla_proto::v1;

use super::pages::{escape, state_class};

/// Width and height of a service's box, and the gaps between columns and rows.
const BOX_W: u32 = 168;
const BOX_H: u32 = 44;
const GAP_X: u32 = 72;
const GAP_Y: u32 = 18;
const MARGIN: u32 = 12;

/// The CSS class and the words of an edge kind.
pub(crate) fn edge_kind(kind: i32) -> (&'static str, &'static str) {
    match v1::EdgeKind::try_from(kind) {
        Ok(v1::EdgeKind::Hard) => ("edge-hard", "hard"),
        Ok(v1::EdgeKind::Data) => ("edge-data", "data"),
        Ok(v1::EdgeKind::Config) => ("edge-config", "config"),
        Ok(v1::EdgeKind::Soft) => ("edge-soft", "soft"),
        Ok(v1::EdgeKind::Contract) => ("edge-contract", "contract"),
        _ => ("edge-hard", "dependency"),
    }
}

/// The SVG of `plan`'s services and edges; `states` gives each service's state in the
/// current stage (a service not in it is drawn as waiting). Every name is escaped.
pub(crate) fn svg(plan: &v1::Plan, states: &BTreeMap<String, v1::ServiceState>) -> String {
    // Columns by wave, in the plan's order within a wave.
    let mut columns: BTreeMap<u32, Vec<&v1::PlannedService>> = BTreeMap::new();
    for s in &plan.services {
        columns.entry(s.wave).or_default().push(s);
    }
    let mut place: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
    let rows = columns.values().map(Vec::len).max().unwrap_or(0);
    for (column, (_, services)) in columns.iter().enumerate() {
        let column = u32::try_from(column).unwrap_or(u32::MAX);
        for (row, s) in services.iter().enumerate() {
            let row = u32::try_from(row).unwrap_or(u32::MAX);
            place.insert(s.name.as_str(), (MARGIN + column * (BOX_W + GAP_X), MARGIN + row * (BOX_H + GAP_Y)));
        }
    }
    let width = MARGIN * 2 + u32::try_from(columns.len()).unwrap_or(0).max(1) * (BOX_W + GAP_X) - GAP_X;
    let height = MARGIN * 2 + u32::try_from(rows).unwrap_or(0).max(1) * (BOX_H + GAP_Y) - GAP_Y;

    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="graph" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" aria-labelledby="graph-title"><title id="graph-title">Dependency graph of {} services; the table below lists every dependency</title>"#,
        plan.services.len()
    );
    out.push_str(
        r#"<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" class="arrow"/></marker></defs>"#,
    );
    for e in &plan.edges {
        let (Some(&(fx, fy)), Some(&(tx, ty))) = (place.get(e.dependency.as_str()), place.get(e.dependent.as_str()))
        else {
            continue;
        };
        let (class, words) = edge_kind(e.kind);
        let (x1, y1) = (fx + BOX_W, fy + BOX_H / 2);
        let (x2, y2) = (tx, ty + BOX_H / 2);
        // A dependent in the same column (never from the planner; kept drawable) gets a
        // curve around the boxes.
        let bend = if x2 > x1 { (x2 - x1) / 2 } else { GAP_X };
        let label = if e.contract.is_empty() { String::new() } else { format!(" ({})", escape(&e.contract)) };
        let _ = write!(
            out,
            r#"<path class="edge {class}" d="M {x1} {y1} C {} {y1}, {} {y2}, {x2} {y2}" marker-end="url(#arrow)"><title>{} needs {}: {words}{label}</title></path>"#,
            x1 + bend,
            x2.saturating_sub(bend),
            escape(&e.dependent),
            escape(&e.dependency),
        );
    }
    for s in &plan.services {
        let Some(&(x, y)) = place.get(s.name.as_str()) else { continue };
        let state = states.get(&s.name).copied().unwrap_or(v1::ServiceState::Waiting);
        let (class, words) = state_class(state);
        let name = escape(&s.name);
        let _ = write!(
            out,
            r#"<g class="node {class}" data-service="{name}" data-state="{words}"><rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6"/><text x="{}" y="{}" class="node-name">{}</text><text x="{}" y="{}" class="node-state">{} · {words}</text><title>{name} {}: {words}</title></g>"#,
            x + 10,
            y + 18,
            short(&name, 22),
            x + 10,
            y + 35,
            escape(&s.version),
            escape(&s.version),
        );
    }
    out.push_str("</svg>");
    out
}

/// `text` cut to about `max` characters with an ellipsis (already escaped text is cut
/// only outside its entities).
fn short(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out = String::new();
    let mut in_entity = false;
    for (n, c) in text.chars().enumerate() {
        if n >= max && !in_entity {
            out.push('…');
            break;
        }
        in_entity = (in_entity || c == '&') && c != ';';
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, wave: u32) -> v1::PlannedService {
        v1::PlannedService { name: name.to_owned(), version: "2.0.0".to_owned(), wave, ..Default::default() }
    }

    #[test]
    fn services_sit_in_columns_by_wave_with_an_edge_per_dependency() {
        let plan = v1::Plan {
            services: vec![service("db", 0), service("api", 1), service("web", 2), service("cache", 0)],
            edges: vec![
                v1::PlanEdge {
                    dependency: "db".into(),
                    dependent: "api".into(),
                    kind: v1::EdgeKind::Data as i32,
                    ..Default::default()
                },
                v1::PlanEdge {
                    dependency: "api".into(),
                    dependent: "web".into(),
                    kind: v1::EdgeKind::Contract as i32,
                    contract: "orders-api >=2".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let states = BTreeMap::from([("api".to_owned(), v1::ServiceState::Deploying)]);
        let svg = svg(&plan, &states);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<g class=\"node").count(), 4);
        assert_eq!(svg.matches("<path class=\"edge").count(), 2);
        assert!(svg.contains(r#"class="edge edge-data""#) && svg.contains(r#"class="edge edge-contract""#));
        assert!(svg.contains("web needs api: contract (orders-api &gt;=2)"), "{svg}");
        assert!(svg.contains(r#"data-service="api" data-state="deploying""#), "{svg}");
        assert!(svg.contains(r#"data-service="db" data-state="waiting""#), "{svg}");
        // db and cache share the first column; api is in the second.
        assert!(svg.contains(r#"<rect x="12" y="12""#) && svg.contains(r#"<rect x="12" y="74""#), "{svg}");
        assert!(svg.contains(r#"<rect x="252" y="12""#), "{svg}");
    }

    #[test]
    fn names_are_escaped_and_cut_outside_entities() {
        let plan = v1::Plan { services: vec![service("<script>alert(1)</script>", 0)], ..Default::default() };
        let svg = svg(&plan, &BTreeMap::new());
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"), "{svg}");
        assert_eq!(short("a&amp;bcdef", 2), "a&amp;…");
        assert_eq!(short("abc", 5), "abc");
    }
}
