//! Approval rules of stages and gates: `approval = true`, `false` and every form of
//! `approval = { by = ... }` parse to the right [`ApprovalRule`]; every bad form is
//! refused at its line and column with a message naming the problem and help.

use flotilla_shared::spec::{ApprovalRule, ApproverRole, ReleaseSpec};

use super::{ARTIFACT, SourceFile, assert_error, assert_help, err, errors, lines, parse, render};

/// One valid service `payments`, five lines.
const SERVICE: [&str; 5] =
    ["[[service]]", r#"name = "payments""#, r#"version = "1.0.0""#, ARTIFACT, r#"run = { command = "bin/payments" }"#];

/// A spec whose one stage `prod` has `approval` on line 4 (`extra` after it, from line 5),
/// then the service.
fn stage_with(approval: &[&str]) -> String {
    lines(&[&[r#"release = "r""#, "[[stage]]", r#"name = "prod""#], approval, &SERVICE[..]].concat())
}

/// A spec with the service on lines 2 to 6 and a gate `db-ok` after it on lines 7 to 9,
/// its `approval` from line 10.
fn gate_with(approval: &[&str]) -> String {
    lines(
        &[&[r#"release = "r""#], &SERVICE[..], &["[[gate]]", r#"name = "db-ok""#, r#"after = ["payments"]"#], approval]
            .concat(),
    )
}

/// Parses a spec that must be valid.
fn parse_ok(text: &str) -> ReleaseSpec {
    match parse(&SourceFile::new("release.toml", text)) {
        Ok(spec) => spec,
        Err(errors) => panic!("the spec should parse:\n{errors}"),
    }
}

/// The stage's `(approval, approval_by)` of a spec that must parse.
fn stage_approval(approval: &[&str]) -> (bool, ApprovalRule) {
    let stage = parse_ok(&stage_with(approval)).stages.remove(0);
    (stage.approval, stage.approval_by)
}

/// The gate's `(approval, approval_by)` of a spec that must parse.
fn gate_approval(approval: &[&str]) -> (bool, ApprovalRule) {
    let gate = parse_ok(&gate_with(approval)).gates.remove(0);
    (gate.approval, gate.approval_by)
}

/// A rule from its two conditions.
fn rule(other_than_author: bool, role: Option<ApproverRole>) -> ApprovalRule {
    ApprovalRule { other_than_author, role }
}

// ---- accepted forms ----

#[test]
fn approval_true_asks_for_any_approver_and_false_or_absent_for_none() {
    let open = ApprovalRule::default();
    assert_eq!(stage_approval(&["approval = true"]), (true, open));
    assert_eq!(stage_approval(&["approval = false"]), (false, open));
    assert_eq!(stage_approval(&[]), (false, open));
    assert_eq!(gate_approval(&["approval = true"]), (true, open));
    assert_eq!(parse_ok(&lines(&[&[r#"release = "r""#], &SERVICE[..]].concat())).stages[0].approval_by, open);
}

#[test]
fn by_one_condition_parses_to_that_condition_on_stages_and_gates() {
    let cases = [
        (r#"approval = { by = "other-than-author" }"#, rule(true, None)),
        (r#"approval = { by = "admin" }"#, rule(false, Some(ApproverRole::Admin))),
        (r#"approval = { by = "deployer" }"#, rule(false, Some(ApproverRole::Deployer))),
        (r#"approval = { by = ["admin"] }"#, rule(false, Some(ApproverRole::Admin))),
    ];
    for (line, expected) in cases {
        assert_eq!(stage_approval(&[line]), (true, expected), "{line}");
        assert_eq!(gate_approval(&[line]), (true, expected), "{line}");
    }
}

#[test]
fn by_several_conditions_must_all_hold_in_any_order() {
    let both = rule(true, Some(ApproverRole::Admin));
    assert_eq!(stage_approval(&[r#"approval = { by = ["other-than-author", "admin"] }"#]), (true, both));
    assert_eq!(gate_approval(&[r#"approval = { by = ["admin", "other-than-author"] }"#]), (true, both));
    assert_eq!(
        stage_approval(&[r#"approval = { by = ["deployer", "other-than-author"] }"#]),
        (true, rule(true, Some(ApproverRole::Deployer)))
    );
}

#[test]
fn approval_may_be_written_as_a_sub_table() {
    let text = lines(
        &[&[r#"release = "r""#, "[[stage]]", r#"name = "prod""#, "[stage.approval]", r#"by = "admin""#], &SERVICE[..]]
            .concat(),
    );
    let stage = parse_ok(&text).stages.remove(0);
    assert_eq!((stage.approval, stage.approval_by), (true, rule(false, Some(ApproverRole::Admin))));
}

#[test]
fn a_gate_with_only_an_approval_rule_checks_something() {
    let gate = parse_ok(&gate_with(&[r#"approval = { by = "other-than-author" }"#])).gates.remove(0);
    assert!(gate.exec.is_none());
    assert!(gate.approval);
}

#[test]
fn rules_describe_who_may_approve() {
    assert!(ApprovalRule::default().is_open());
    assert_eq!(ApprovalRule::default().describe(), "anyone who may approve");
    assert!(!rule(true, None).is_open());
    assert!(!rule(false, Some(ApproverRole::Deployer)).is_open());
    assert_eq!(rule(false, Some(ApproverRole::Admin)).describe(), "an admin");
    assert_eq!(rule(false, Some(ApproverRole::Deployer)).describe(), "a deployer");
    assert_eq!(rule(true, None).describe(), "someone other than the release's author");
    assert_eq!(
        rule(true, Some(ApproverRole::Admin)).describe(),
        "someone other than the release's author holding the admin role"
    );
    assert_eq!(ApproverRole::Admin.to_string(), "admin");
    assert_eq!(ApproverRole::Deployer.as_str(), "deployer");
    assert!(ApproverRole::Admin > ApproverRole::Deployer, "admin is the higher role");
}

// ---- refused forms ----

#[test]
fn unknown_key_in_an_approval_names_the_table_and_the_stage() {
    let e = err(&stage_with(&[r#"approval = { by = "admin", who = "alice" }"#]));
    assert_error(&e, "unknown key `who` in `approval` of [[stage]] `prod`", 4, 28);
    assert_help(&e, "remove it, or use one of: `by`");
}

#[test]
fn misspelt_by_suggests_by() {
    let e = err(&gate_with(&[r#"approval = { bye = "admin" }"#]));
    assert_error(&e, "unknown key `bye` in `approval` of [[gate]] `db-ok`", 10, 14);
    assert_help(&e, "did you mean `by`?");
}

#[test]
fn approval_table_without_by_is_refused() {
    let e = err(&stage_with(&["approval = {}"]));
    assert_error(&e, "missing key `by` in `approval` of [[stage]] `prod`", 4, 12);
    assert_help(&e, r#"add `by = "other-than-author"`"#);
}

#[test]
fn approval_of_the_wrong_type_shows_both_forms() {
    let e = err(&stage_with(&[r#"approval = "admin""#]));
    assert_error(&e, "wrong type for `approval` in [[stage]] `prod`: expected true, false or a table", 4, 12);
    assert_help(&e, r#"write it like `approval = true` or `approval = { by = "other-than-author" }`"#);
}

#[test]
fn a_date_time_is_not_an_approval() {
    let e = err(&stage_with(&["approval = 1979-05-27"]));
    assert_error(&e, "wrong type for `approval` in [[stage]] `prod`: expected true, false or a table", 4, 12);
    assert!(e.message.ends_with("found a date-time"), "{e}");
}

#[test]
fn by_of_the_wrong_type_shows_both_forms() {
    let e = err(&stage_with(&["approval = { by = 2 }"]));
    assert_error(&e, "wrong type for `by` in `approval` of [[stage]] `prod`", 4, 19);
    assert_help(&e, r#"write it like `by = "other-than-author"` or `by = ["other-than-author", "admin"]`"#);

    let e = err(&stage_with(&[r#"approval = { by = ["admin", 2] }"#]));
    assert_error(&e, "wrong type for `by` entry 2 in `approval` of [[stage]] `prod`: expected a string", 4, 29);
}

#[test]
fn unknown_condition_suggests_the_closest_and_lists_them() {
    let e = err(&stage_with(&[r#"approval = { by = "admins" }"#]));
    assert_error(&e, "unknown `approval.by` value `admins`", 4, 19);
    assert_help(&e, "did you mean `admin`? expected one of other-than-author, deployer, admin");

    let e = err(&gate_with(&[r#"approval = { by = ["other-than-author", "owner"] }"#]));
    assert_error(&e, "unknown `approval.by` value `owner`", 10, 41);
    assert_help(&e, "expected one of other-than-author, deployer, admin");
}

#[test]
fn viewer_cannot_approve() {
    let e = err(&stage_with(&[r#"approval = { by = "viewer" }"#]));
    assert_error(&e, "`viewer` cannot approve", 4, 19);
    assert_help(&e, "`deployer` (any deployer or admin) or `admin`");

    let e = err(&gate_with(&[r#"approval = { by = ["other-than-author", "viewer"] }"#]));
    assert_error(&e, "`viewer` cannot approve", 10, 41);
}

#[test]
fn empty_by_is_refused() {
    let e = err(&stage_with(&["approval = { by = [] }"]));
    assert_error(&e, "`approval.by` is empty", 4, 19);
    assert_help(&e, "for any approver write approval = true");
}

#[test]
fn a_condition_listed_twice_is_refused_at_the_repeat() {
    let e = err(&stage_with(&[r#"approval = { by = ["admin", "other-than-author", "admin"] }"#]));
    assert_error(&e, "`admin` is listed twice in `approval.by`", 4, 50);
    assert_help(&e, "the first `admin` is on line 4; list each condition once");
}

#[test]
fn both_roles_together_are_refused() {
    let e = err(&stage_with(&[r#"approval = { by = ["deployer", "admin"] }"#]));
    assert_error(&e, "`approval.by` names both `deployer` and `admin`", 4, 32);
    assert_help(&e, "keep `admin` for admins only, or `deployer` for any deployer");

    let e = err(&gate_with(&[r#"approval = { by = ["admin", "other-than-author", "deployer"] }"#]));
    assert_error(&e, "`approval.by` names both `admin` and `deployer`", 10, 50);
}

#[test]
fn every_bad_condition_of_one_rule_is_reported() {
    let all = errors(&stage_with(&[r#"approval = { by = ["deployer", "viewer", "admin", "viewer"] }"#]));
    let found: Vec<(&str, usize)> = all.iter().map(|e| (e.message.as_str(), e.column)).collect();
    assert_eq!(
        found,
        [
            ("`viewer` cannot approve: the viewer role may only read", 32),
            ("`approval.by` names both `deployer` and `admin`", 42),
            ("`viewer` is listed twice in `approval.by`", 51),
            ("`viewer` cannot approve: the viewer role may only read", 51),
        ],
        "{}",
        render(&all)
    );
}

#[test]
fn bad_rules_of_a_stage_and_a_gate_are_all_reported() {
    let text = lines(
        &[
            &[r#"release = "r""#, "[[stage]]", r#"name = "prod""#, r#"approval = { by = "root" }"#],
            &SERVICE[..],
            &["[[gate]]", r#"name = "db-ok""#, r#"after = ["payments"]"#, r#"approval = { by = [] }"#],
        ]
        .concat(),
    );
    let all = errors(&text);
    assert_eq!(all.len(), 2, "{}", render(&all));
    assert_error(&all[0], "unknown `approval.by` value `root`", 4, 19);
    assert_error(&all[1], "`approval.by` is empty", 13, 19);
}
