//! Spec problems only the planner can see (cycles, the fleet), each located at the
//! line and column of the text that causes it.

use flotilla_shared::Fleet;
use flotilla_shared::fixtures::{fleet, host};
use flotilla_shared::plan::Plan;
use flotilla_shared::spec::{self, SourceFile, SpecError};

const HEAD: &str = r#"release = "r"
"#;

fn svc(name: &str, extra: &str) -> String {
    format!(
        "\n[[service]]\nname = \"{name}\"\nversion = \"1.0.0\"\nartifact = {{ url = \"file:///a.tgz\", sha256 = \"{}\" }}\nrun = {{ command = \"bin/x\" }}\n{extra}",
        "a".repeat(64)
    )
}

/// The first planning error of `text` against `fleet`, located.
fn plan_err(text: &str, fleet: Option<&Fleet>) -> SpecError {
    let source = SourceFile::new("r.toml", text);
    let spec = spec::parse(&source).unwrap_or_else(|e| panic!("the spec itself is valid:\n{e}"));
    let diags = Plan::build(&spec, fleet).expect_err("planning fails");
    source.locate_all(diags).0.remove(0)
}

fn web_fleet() -> Fleet {
    fleet(vec![host("web-1", &[("role", "web")], &[]), host("web-2", &[("role", "web")], &[])])
}

#[test]
fn a_dependency_cycle_points_at_a_dependency_on_the_cycle_and_prints_it() {
    let text = format!(
        "{HEAD}{}{}{}",
        svc("a", "depends_on = [{ service = \"b\" }]\n"),
        svc("b", "depends_on = [{ service = \"c\", kind = \"soft\" }]\n"),
        svc("c", "depends_on = [{ service = \"a\", kind = \"config\" }]\n"),
    );
    let e = plan_err(&text, None);
    assert!(e.message.starts_with("dependency cycle: "), "{e}");
    for edge in ["a -> b", "b -> c", "c -> a"] {
        assert!(e.message.contains(edge), "{e}");
    }
    assert_eq!(e.column, 15, "{e}");
    assert!(e.source_line.starts_with("depends_on = [{"), "{e}");
    assert!(e.help.as_deref().unwrap().contains("(soft)"), "{e}");
}

#[test]
fn a_dependency_neither_in_the_release_nor_in_the_fleet_points_at_the_entry() {
    let text = format!("{HEAD}{}", svc("web", "depends_on = [{ service = \"cache\", kind = \"hard\" }]\n"));
    let e = plan_err(&text, Some(&web_fleet()));
    assert_eq!(e.message, "`web` depends on `cache`, which is neither in this release nor running in the fleet");
    assert_eq!((e.line, e.column), (8, 15));
}

#[test]
fn a_requirement_nothing_provides_points_at_the_range() {
    let text = format!("{HEAD}{}", svc("web", "requires = { \"auth-api\" = \"^3.1\" }\n"));
    let e = plan_err(&text, Some(&web_fleet()));
    assert_eq!(e.message, "`web` requires `auth-api` ^3.1, which nothing in the release provides or the fleet serves");
    assert_eq!((e.line, e.column), (8, 27));
    assert!(e.help.as_deref().unwrap().contains("relax the range"), "{e}");
}

#[test]
fn a_requirement_the_release_breaks_names_what_the_release_ships() {
    let text = format!(
        "{HEAD}{}{}",
        svc("auth", "provides = { \"auth-api\" = \"4.0.0\" }\n"),
        svc("web", "requires = { \"auth-api\" = \"^3.1\" }\n")
    );
    let e = plan_err(&text, None);
    assert!(e.message.contains("(auth 1.0.0 provides `auth-api` 4.0.0)"), "{e}");
    assert_eq!((e.line, e.column), (15, 27));
}

#[test]
fn a_service_selector_matching_no_host_points_at_the_service() {
    let text = format!("{HEAD}{}", svc("api", "hosts = { role = \"api\" }\n"));
    let e = plan_err(&text, Some(&web_fleet()));
    assert_eq!(e.message, "`api` selects hosts role=api but no host in the fleet matches");
    assert_eq!((e.line, e.column, e.source_line.as_str()), (3, 1, "[[service]]"));
}

#[test]
fn a_stage_selector_matching_no_host_points_at_the_stage() {
    let text = format!(
        "{HEAD}\n[[stage]]\nname = \"blue\"\nhosts = {{ cell = \"blue\" }}\n\n[[stage]]\nname = \"rest\"\n{}",
        svc("web", "")
    );
    let e = plan_err(&text, Some(&web_fleet()));
    assert_eq!(e.message, "stage `blue` has no hosts");
    assert_eq!((e.line, e.column), (3, 1));
    assert!(e.help.as_deref().unwrap().contains("cell=blue"), "{e}");
}

#[test]
fn a_gate_whose_command_no_host_can_run_points_at_the_gate() {
    let text = format!(
        "{HEAD}{}\n[[gate]]\nname = \"smoke\"\nafter = [\"web\"]\nexec = {{ command = \"smoke.sh\", on = {{ role = \"db\" }} }}\n",
        svc("web", "")
    );
    let e = plan_err(&text, Some(&web_fleet()));
    assert_eq!(e.message, "gate `smoke` runs on hosts role=db but no host in the fleet matches");
    assert_eq!((e.line, e.column, e.source_line.as_str()), (9, 1, "[[gate]]"));
}

#[test]
fn a_gate_that_waits_for_its_own_dependents_points_at_the_gate() {
    let text = format!(
        "{HEAD}{}{}{}\n[[gate]]\nname = \"smoke\"\nafter = [\"auth\", \"web\"]\napproval = true\n",
        svc("auth", ""),
        svc("cache", "depends_on = [{ service = \"auth\" }]\n"),
        svc("web", "depends_on = [{ service = \"cache\" }]\n"),
    );
    let e = plan_err(&text, None);
    assert!(e.message.starts_with("gate `smoke` can never open: "), "{e}");
    assert_eq!((e.line, e.column, e.source_line.as_str()), (23, 1, "[[gate]]"));
}
