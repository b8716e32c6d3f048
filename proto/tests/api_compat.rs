//! The `flotilla.v1` API stays compatible with the last released one: the current
//! descriptors are compared with the golden `proto/api/flotilla_v1.binpb` by
//! `flotilla_proto::compat`, and the checker is shown to catch every kind of break on
//! edited copies of the descriptors (and to let additions and reserved removals pass).
//!
//! When a new API version is released on purpose, record the golden again with
//! `FLOTILLA_BLESS_API=1 cargo test -p flotilla-proto --test api_compat`: with the
//! variable set to `1`, the comparison test writes the golden from the current
//! descriptors instead of comparing (see `docs/api-compatibility.md`). Additions pass
//! without recording it again.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::{env, fs, process};

use flotilla_proto::compat::{self, BLESS_ENV, Breaking, Cardinality, Change, Element, StreamSide};
use flotilla_proto::{FILE_DESCRIPTOR_SET, PACKAGE};
use prost::Message as _;
use prost_types::descriptor_proto::ReservedRange;
use prost_types::enum_descriptor_proto::EnumReservedRange;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{
    DescriptorProto, EnumDescriptorProto, EnumValueDescriptorProto, FieldDescriptorProto, FileDescriptorProto,
    FileDescriptorSet, MethodDescriptorProto, ServiceDescriptorProto,
};

/// The command that records the golden; `docs/api-compatibility.md` tells it.
const BLESS_COMMAND: &str = "FLOTILLA_BLESS_API=1 cargo test -p flotilla-proto --test api_compat";

fn current() -> FileDescriptorSet {
    FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("FILE_DESCRIPTOR_SET decodes")
}

fn golden_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(compat::GOLDEN_PATH)
}

/// Whether the value of [`BLESS_ENV`] asks to record the golden: only `1` does.
fn bless_requested(value: Option<&OsStr>) -> bool {
    value == Some(OsStr::new("1"))
}

/// Records the current API as the golden at `golden` (`bless`), or compares the
/// current API with it and returns every breaking change, with how to proceed.
fn check_or_bless(golden: &Path, bless: bool) -> Result<(), String> {
    let current = current();
    if bless {
        return compat::write_golden(golden, &current).map_err(|err| format!("writing {}: {err}", golden.display()));
    }
    let recorded = compat::read_golden(golden).map_err(|err| {
        format!(
            "cannot read the golden API {}: {err}\nRecord it from the current descriptors with:\n  {BLESS_COMMAND}",
            golden.display()
        )
    })?;
    let breaking = compat::breaking_changes(&recorded, &current);
    if breaking.is_empty() {
        return Ok(());
    }
    let list: String = breaking.iter().map(|change| format!("  - {change}\n")).collect();
    Err(format!(
        "the {PACKAGE} API breaks clients of the released API recorded in {}:\n{list}\n\
         Keep what released clients use; delete a field or an enum value only with both its \
         number and its name `reserved`. Additions need nothing.\n\
         If this is a new API version on purpose, record the current API as the golden with\n  \
         {BLESS_COMMAND}\nand commit the file (see docs/api-compatibility.md).",
        golden.display()
    ))
}

// ---------------------------------------------------------------- the golden

#[test]
fn api_is_compatible_with_the_golden() {
    let bless = bless_requested(env::var_os(BLESS_ENV).as_deref());
    if let Err(message) = check_or_bless(&golden_path(), bless) {
        panic!("{message}");
    }
}

#[test]
fn golden_holds_only_the_package_without_source_info() {
    if bless_requested(env::var_os(BLESS_ENV).as_deref()) {
        return; // `api_is_compatible_with_the_golden` is writing it.
    }
    let golden = compat::read_golden(&golden_path()).expect("the golden API is recorded; see the module doc");
    assert!(!golden.file.is_empty(), "the golden has no files");
    for file in &golden.file {
        assert_eq!(file.package(), PACKAGE, "{} in the golden", file.name());
        assert!(file.source_code_info.is_none(), "{} in the golden keeps source info", file.name());
    }
}

#[test]
fn blessing_writes_the_current_api_without_source_info() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("api_compat-{}", process::id()));
    let _ = fs::remove_dir_all(&dir);
    // A directory that does not exist yet: the writer creates it.
    let golden = dir.join("api").join("flotilla_v1.binpb");

    check_or_bless(&golden, true).expect("bless");
    let bytes = fs::read(&golden).expect("the golden was written");
    let written = FileDescriptorSet::decode(bytes.as_slice()).expect("the golden decodes");

    let current = current();
    let expected: Vec<FileDescriptorProto> = current
        .file
        .iter()
        .filter(|file| file.package() == PACKAGE)
        .map(|file| FileDescriptorProto { source_code_info: None, ..file.clone() })
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(written.file, expected, "the golden is the current {PACKAGE} set minus source info");
    assert_eq!(written, compat::api_snapshot(&current, PACKAGE));
    assert_eq!(compat::read_golden(&golden).expect("read_golden"), written);

    // Recording is stable, and the freshly recorded golden passes the comparison.
    check_or_bless(&golden, true).expect("bless again");
    assert_eq!(fs::read(&golden).expect("read again"), bytes, "blessing twice writes the same bytes");
    check_or_bless(&golden, false).expect("the current API is compatible with itself");
    assert!(!dir.join("api").join("flotilla_v1.binpb.tmp").exists(), "the temporary file is renamed away");

    fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn only_the_value_1_blesses() {
    assert!(bless_requested(Some(OsStr::new("1"))));
    for value in ["", "0", "true", "yes", " 1"] {
        assert!(!bless_requested(Some(OsStr::new(value))), "{value:?}");
    }
    assert!(!bless_requested(None));
}

#[test]
fn the_documented_command_runs_this_test_in_bless_mode() {
    assert_eq!(BLESS_ENV, "FLOTILLA_BLESS_API");
    assert_eq!(BLESS_COMMAND, format!("{BLESS_ENV}=1 cargo test -p {} --test api_compat", env!("CARGO_PKG_NAME")));
    let this_test = Path::new(file!()).file_stem().and_then(OsStr::to_str);
    assert_eq!(this_test, Some("api_compat"));
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/api-compatibility.md");
    let doc = fs::read_to_string(&doc_path).expect("docs/api-compatibility.md");
    assert!(doc.contains(BLESS_COMMAND), "the doc tells `{BLESS_COMMAND}`");
    assert!(doc.contains(compat::GOLDEN_PATH), "the doc names the golden file");
}

#[test]
fn a_missing_or_broken_golden_fails_with_how_to_record_it() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("api_compat-missing-{}", process::id()));
    let _ = fs::remove_dir_all(&dir);
    let missing = check_or_bless(&dir.join("none.binpb"), false).expect_err("no golden");
    assert!(missing.contains(BLESS_COMMAND), "{missing}");

    fs::create_dir_all(&dir).expect("mkdir");
    let garbage = dir.join("garbage.binpb");
    fs::write(&garbage, [0xff, 0xff, 0xff]).expect("write");
    let err = compat::read_golden(&garbage).expect_err("not a descriptor set");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn a_golden_with_more_api_fails_listing_each_break_and_how_to_bless() {
    // A golden recorded from an API with one more field, value and method than the
    // current one: the current API removed them.
    let mut richer = current();
    let (f, m) = message_where(&richer, |_| true);
    let message = format!("{PACKAGE}.{}", richer.file[f].message_type[m].name());
    let number = next_field_number(&richer.file[f].message_type[m]);
    richer.file[f].message_type[m].field.push(scalar_field("dropped_later", number, Type::String));
    let (sf, s) = service_where(&richer, |_| true);
    let service = format!("{PACKAGE}.{}", richer.file[sf].service[s].name());
    let template = richer.file[sf].service[s].method[0].clone();
    richer.file[sf].service[s].method.push(MethodDescriptorProto { name: Some("DroppedLater".to_owned()), ..template });

    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("api_compat-richer-{}", process::id()));
    let golden = dir.join("flotilla_v1.binpb");
    compat::write_golden(&golden, &richer).expect("write");
    let err = check_or_bless(&golden, false).expect_err("removals break");
    fs::remove_dir_all(&dir).expect("clean up");

    assert!(
        err.contains(&format!(
            "message {message}: field {number} `dropped_later` was removed without reserving its number and name"
        )),
        "{err}"
    );
    assert!(err.contains(&format!("service {service}: method `DroppedLater` was removed")), "{err}");
    assert!(err.contains(BLESS_COMMAND), "{err}");
    assert_eq!(err.matches("\n  - ").count(), 2, "exactly the two breaks are listed: {err}");
}

#[test]
fn a_golden_with_less_api_passes_without_blessing() {
    // A golden recorded before a field, an enum value and a method were added.
    let mut older = current();
    let (f, m) = message_where(&older, |message| message.field.len() > 1);
    older.file[f].message_type[m].field.pop();
    let (ef, e) = enum_where(&older, |enumeration| enumeration.value.len() > 1);
    older.file[ef].enum_type[e].value.pop();
    let (sf, s) = service_where(&older, |service| service.method.len() > 1);
    older.file[sf].service[s].method.pop();

    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("api_compat-older-{}", process::id()));
    let golden = dir.join("flotilla_v1.binpb");
    compat::write_golden(&golden, &older).expect("write");
    let result = check_or_bless(&golden, false);
    fs::remove_dir_all(&dir).expect("clean up");
    result.expect("additions pass");
}

// ---------------------------------------------------------------- finding things to edit

/// The first top-level message of the package that `matches`: (file, message) indexes.
fn message_where(set: &FileDescriptorSet, matches: impl Fn(&DescriptorProto) -> bool) -> (usize, usize) {
    for (f, file) in set.file.iter().enumerate().filter(|(_, file)| file.package() == PACKAGE) {
        if let Some(m) = file.message_type.iter().position(&matches) {
            return (f, m);
        }
    }
    panic!("no message of {PACKAGE} fits this test");
}

/// The first field of a top-level message that `matches`: (file, message, field) indexes.
fn field_where(
    set: &FileDescriptorSet,
    matches: impl Fn(&DescriptorProto, &FieldDescriptorProto) -> bool,
) -> (usize, usize, usize) {
    let (f, m) = message_where(set, |message| message.field.iter().any(|field| matches(message, field)));
    let message = &set.file[f].message_type[m];
    (f, m, message.field.iter().position(|field| matches(message, field)).expect("found"))
}

/// The first top-level enum of the package that `matches`: (file, enum) indexes.
fn enum_where(set: &FileDescriptorSet, matches: impl Fn(&EnumDescriptorProto) -> bool) -> (usize, usize) {
    for (f, file) in set.file.iter().enumerate().filter(|(_, file)| file.package() == PACKAGE) {
        if let Some(e) = file.enum_type.iter().position(&matches) {
            return (f, e);
        }
    }
    panic!("no enum of {PACKAGE} fits this test");
}

/// The first service of the package that `matches`: (file, service) indexes.
fn service_where(set: &FileDescriptorSet, matches: impl Fn(&ServiceDescriptorProto) -> bool) -> (usize, usize) {
    for (f, file) in set.file.iter().enumerate().filter(|(_, file)| file.package() == PACKAGE) {
        if let Some(s) = file.service.iter().position(&matches) {
            return (f, s);
        }
    }
    panic!("no service of {PACKAGE} fits this test");
}

/// A plain field: singular in proto3, not in a oneof.
fn is_plain(field: &FieldDescriptorProto) -> bool {
    field.label() == Label::Optional && field.oneof_index.is_none() && !field.proto3_optional()
}

/// A number no field of `message` uses or reserves.
fn next_field_number(message: &DescriptorProto) -> i32 {
    let used = message.field.iter().map(FieldDescriptorProto::number).max().unwrap_or(0);
    let reserved = message.reserved_range.iter().map(|range| range.end() - 1).max().unwrap_or(0);
    used.max(reserved) + 1
}

fn scalar_field(name: &str, number: i32, kind: Type) -> FieldDescriptorProto {
    FieldDescriptorProto {
        name: Some(name.to_owned()),
        number: Some(number),
        label: Some(Label::Optional.into()),
        r#type: Some(kind.into()),
        json_name: Some(name.to_owned()),
        ..Default::default()
    }
}

fn message_element(set: &FileDescriptorSet, f: usize, m: usize) -> Element {
    Element::Message(format!("{}.{}", set.file[f].package(), set.file[f].message_type[m].name()))
}

fn enum_element(set: &FileDescriptorSet, f: usize, e: usize) -> Element {
    Element::Enum(format!("{}.{}", set.file[f].package(), set.file[f].enum_type[e].name()))
}

fn service_element(set: &FileDescriptorSet, f: usize, s: usize) -> Element {
    Element::Service(format!("{}.{}", set.file[f].package(), set.file[f].service[s].name()))
}

/// The breaking changes from the current set to `edit(current)`.
fn breaks_after(edit: impl FnOnce(&mut FileDescriptorSet)) -> Vec<Breaking> {
    let old = current();
    let mut new = old.clone();
    edit(&mut new);
    compat::breaking_changes(&old, &new)
}

// ---------------------------------------------------------------- breaks are caught

#[test]
fn the_current_api_is_compatible_with_itself() {
    let set = current();
    assert_eq!(compat::breaking_changes(&set, &set), vec![]);
    assert_eq!(compat::breaking_changes(&compat::api_snapshot(&set, PACKAGE), &set), vec![]);
}

#[test]
fn removing_a_field_breaks() {
    let set = current();
    let (f, m, i) = field_where(&set, |_, field| is_plain(field));
    let field = set.file[f].message_type[m].field[i].clone();
    let breaks = breaks_after(|new| {
        new.file[f].message_type[m].field.remove(i);
    });
    let expected = Breaking {
        element: message_element(&set, f, m),
        change: Change::NumberRemoved {
            number: field.number(),
            name: field.name().to_owned(),
            number_reserved: false,
            name_reserved: false,
        },
    };
    assert_eq!(breaks, vec![expected]);
    let text = breaks[0].to_string();
    assert_eq!(
        text,
        format!(
            "message {PACKAGE}.{}: field {} `{}` was removed without reserving its number and name",
            set.file[f].message_type[m].name(),
            field.number(),
            field.name()
        )
    );
}

#[test]
fn removing_a_field_reserving_only_its_number_or_name_breaks() {
    let set = current();
    let (f, m, i) = field_where(&set, |_, field| is_plain(field));
    let field = set.file[f].message_type[m].field[i].clone();
    let number = field.number();

    let only_number = breaks_after(|new| {
        let message = &mut new.file[f].message_type[m];
        message.field.remove(i);
        message.reserved_range.push(ReservedRange { start: Some(number), end: Some(number + 1) });
    });
    assert_eq!(
        only_number,
        vec![Breaking {
            element: message_element(&set, f, m),
            change: Change::NumberRemoved {
                number,
                name: field.name().to_owned(),
                number_reserved: true,
                name_reserved: false
            },
        }]
    );
    assert!(only_number[0].to_string().ends_with("its number is reserved but its name is not"), "{}", only_number[0]);

    let only_name = breaks_after(|new| {
        let message = &mut new.file[f].message_type[m];
        message.field.remove(i);
        message.reserved_name.push(field.name().to_owned());
    });
    assert!(
        matches!(
            &only_name[..],
            [Breaking { change: Change::NumberRemoved { number_reserved: false, name_reserved: true, .. }, .. }]
        ),
        "{only_name:?}"
    );
}

#[test]
fn renumbering_a_field_breaks() {
    let set = current();
    let (f, m, i) = field_where(&set, |_, field| is_plain(field));
    let field = set.file[f].message_type[m].field[i].clone();
    let to = next_field_number(&set.file[f].message_type[m]);
    let breaks = breaks_after(|new| new.file[f].message_type[m].field[i].number = Some(to));
    assert_eq!(
        breaks,
        vec![Breaking {
            element: message_element(&set, f, m),
            change: Change::Renumbered { name: field.name().to_owned(), old: field.number(), new: to },
        }]
    );
    assert!(breaks[0].to_string().contains(&format!(
        "field `{}` was renumbered from {} to {to}",
        field.name(),
        field.number()
    )));
}

#[test]
fn renaming_a_field_breaks_its_json_name() {
    let set = current();
    let (f, m, i) = field_where(&set, |_, field| is_plain(field));
    let field = set.file[f].message_type[m].field[i].clone();
    let breaks = breaks_after(|new| {
        let renamed = &mut new.file[f].message_type[m].field[i];
        renamed.name = Some("renamed_field".to_owned());
        renamed.json_name = Some("renamedField".to_owned());
    });
    assert_eq!(
        breaks,
        vec![Breaking {
            element: message_element(&set, f, m),
            change: Change::Renamed {
                number: field.number(),
                old: field.name().to_owned(),
                new: "renamed_field".to_owned()
            },
        }]
    );

    let json_only = breaks_after(|new| new.file[f].message_type[m].field[i].json_name = Some("customJson".to_owned()));
    assert!(
        matches!(&json_only[..], [Breaking { change: Change::JsonNameChanged { new, .. }, .. }] if new == "customJson"),
        "{json_only:?}"
    );
}

#[test]
fn changing_a_field_type_breaks() {
    let set = current();
    let (f, m, i) = field_where(&set, |_, field| is_plain(field) && field.r#type() == Type::String);
    let field = set.file[f].message_type[m].field[i].clone();
    let breaks = breaks_after(|new| new.file[f].message_type[m].field[i].r#type = Some(Type::Int64.into()));
    assert_eq!(
        breaks,
        vec![Breaking {
            element: message_element(&set, f, m),
            change: Change::TypeChanged {
                number: field.number(),
                name: field.name().to_owned(),
                old: "string".to_owned(),
                new: "int64".to_owned(),
            },
        }]
    );
    assert!(breaks[0].to_string().ends_with("changed type from string to int64"), "{}", breaks[0]);

    // Another message type of the same kind is another type too.
    let (mf, mm, mi) = field_where(&set, |_, field| field.r#type() == Type::Message);
    let was = set.file[mf].message_type[mm].field[mi].type_name().to_owned();
    let (of, om) = message_where(&set, |message| format!(".{PACKAGE}.{}", message.name()) != was);
    let other = format!(".{PACKAGE}.{}", set.file[of].message_type[om].name());
    let breaks = breaks_after(|new| new.file[mf].message_type[mm].field[mi].type_name = Some(other.clone()));
    assert!(
        matches!(&breaks[..], [Breaking { change: Change::TypeChanged { old, new, .. }, .. }]
            if *old == format!("message {}", &was[1..]) && *new == format!("message {}", &other[1..])),
        "{breaks:?}"
    );
}

#[test]
fn changing_a_field_cardinality_breaks() {
    let set = current();
    let (f, m, i) = field_where(&set, |_, field| is_plain(field));
    let breaks = breaks_after(|new| new.file[f].message_type[m].field[i].label = Some(Label::Repeated.into()));
    assert!(
        matches!(
            &breaks[..],
            [Breaking {
                change: Change::CardinalityChanged { old: Cardinality::Singular, new: Cardinality::Repeated, .. },
                ..
            }]
        ),
        "{breaks:?}"
    );
}

#[test]
fn moving_a_field_out_of_its_oneof_breaks() {
    let set = current();
    let (f, m, i) = field_where(&set, |_, field| field.oneof_index.is_some() && !field.proto3_optional());
    let message = &set.file[f].message_type[m];
    let oneof = message.oneof_decl[message.field[i].oneof_index() as usize].name().to_owned();
    let breaks = breaks_after(|new| new.file[f].message_type[m].field[i].oneof_index = None);
    assert!(
        matches!(
            &breaks[..],
            [Breaking { change: Change::OneofChanged { old: Some(old), new: None, .. }, .. }] if *old == oneof
        ),
        "{breaks:?}"
    );
    assert!(breaks[0].to_string().contains(&format!("moved from oneof `{oneof}` to no oneof")), "{}", breaks[0]);
}

#[test]
fn reusing_a_reserved_field_number_or_name_breaks() {
    let current = current();
    let (f, m) = message_where(&current, |_| true);
    let number = next_field_number(&current.file[f].message_type[m]);
    // The old API deleted a field `gone` at `number`, reserving both.
    let mut old = current.clone();
    old.file[f].message_type[m].reserved_range.push(ReservedRange { start: Some(number), end: Some(number + 1) });
    old.file[f].message_type[m].reserved_name.push("gone".to_owned());
    // The new one uses the number for another field, and the name at another number.
    let mut new = current.clone();
    new.file[f].message_type[m].field.push(scalar_field("reborn", number, Type::String));
    new.file[f].message_type[m].field.push(scalar_field("gone", number + 1, Type::String));

    let element = message_element(&current, f, m);
    assert_eq!(
        compat::breaking_changes(&old, &new),
        vec![
            Breaking {
                element: element.clone(),
                change: Change::ReservedNumberReused { number, name: "reborn".to_owned() }
            },
            Breaking { element, change: Change::ReservedNameReused { number: number + 1, name: "gone".to_owned() } },
        ]
    );
}

#[test]
fn removing_a_message_enum_or_service_breaks() {
    let set = current();
    let (f, m) = message_where(&set, |message| message.nested_type.is_empty() && message.enum_type.is_empty());
    let breaks = breaks_after(|new| {
        new.file[f].message_type.remove(m);
    });
    assert_eq!(breaks, vec![Breaking { element: message_element(&set, f, m), change: Change::Removed }]);

    let (ef, e) = enum_where(&set, |_| true);
    let breaks = breaks_after(|new| {
        new.file[ef].enum_type.remove(e);
    });
    assert_eq!(breaks, vec![Breaking { element: enum_element(&set, ef, e), change: Change::Removed }]);

    let (sf, s) = service_where(&set, |_| true);
    let breaks = breaks_after(|new| {
        new.file[sf].service.remove(s);
    });
    assert_eq!(breaks, vec![Breaking { element: service_element(&set, sf, s), change: Change::Removed }]);
    assert_eq!(breaks[0].to_string(), format!("service {PACKAGE}.{}: was removed", set.file[sf].service[s].name()));
}

#[test]
fn nested_messages_and_enums_are_checked() {
    // The contract may have no nested types of its own, so the old API gets some: a
    // message `Inner` with a field and an enum `Kind` inside a top-level message.
    let current = current();
    let (f, m) = message_where(&current, |_| true);
    let outer = format!("{PACKAGE}.{}", current.file[f].message_type[m].name());
    let inner = DescriptorProto {
        name: Some("Inner".to_owned()),
        field: vec![scalar_field("text", 1, Type::String), scalar_field("count", 2, Type::Uint32)],
        ..Default::default()
    };
    let kind = EnumDescriptorProto {
        name: Some("Kind".to_owned()),
        value: vec![
            EnumValueDescriptorProto {
                name: Some("KIND_UNSPECIFIED".to_owned()),
                number: Some(0),
                ..Default::default()
            },
            EnumValueDescriptorProto { name: Some("KIND_ONE".to_owned()), number: Some(1), ..Default::default() },
        ],
        ..Default::default()
    };
    let mut old = current.clone();
    old.file[f].message_type[m].nested_type.push(inner);
    old.file[f].message_type[m].enum_type.push(kind);

    let removed = compat::breaking_changes(&old, &current);
    assert_eq!(
        removed,
        vec![
            Breaking { element: Element::Message(format!("{outer}.Inner")), change: Change::Removed },
            Breaking { element: Element::Enum(format!("{outer}.Kind")), change: Change::Removed },
        ]
    );

    let mut new = old.clone();
    new.file[f].message_type[m].nested_type.last_mut().expect("inner").field.pop();
    new.file[f].message_type[m].enum_type.last_mut().expect("kind").value.pop();
    let changed = compat::breaking_changes(&old, &new);
    assert_eq!(
        changed,
        vec![
            Breaking {
                element: Element::Message(format!("{outer}.Inner")),
                change: Change::NumberRemoved {
                    number: 2,
                    name: "count".to_owned(),
                    number_reserved: false,
                    name_reserved: false
                },
            },
            Breaking {
                element: Element::Enum(format!("{outer}.Kind")),
                change: Change::NumberRemoved {
                    number: 1,
                    name: "KIND_ONE".to_owned(),
                    number_reserved: false,
                    name_reserved: false
                },
            },
        ]
    );
}

#[test]
fn removing_an_enum_value_breaks() {
    let set = current();
    let (f, e) = enum_where(&set, |enumeration| enumeration.value.len() > 1);
    let value = set.file[f].enum_type[e].value.last().expect("values").clone();
    let breaks = breaks_after(|new| {
        new.file[f].enum_type[e].value.pop();
    });
    assert_eq!(
        breaks,
        vec![Breaking {
            element: enum_element(&set, f, e),
            change: Change::NumberRemoved {
                number: value.number(),
                name: value.name().to_owned(),
                number_reserved: false,
                name_reserved: false,
            },
        }]
    );
    assert!(breaks[0].to_string().contains(&format!("value {} `{}` was removed", value.number(), value.name())));
}

#[test]
fn renaming_or_renumbering_an_enum_value_breaks() {
    let set = current();
    let (f, e) = enum_where(&set, |enumeration| enumeration.value.len() > 1);
    let value = set.file[f].enum_type[e].value[1].clone();
    let renamed = breaks_after(|new| new.file[f].enum_type[e].value[1].name = Some("RENAMED_VALUE".to_owned()));
    assert_eq!(
        renamed,
        vec![Breaking {
            element: enum_element(&set, f, e),
            change: Change::Renamed {
                number: value.number(),
                old: value.name().to_owned(),
                new: "RENAMED_VALUE".to_owned()
            },
        }]
    );
    let to = set.file[f].enum_type[e].value.iter().map(EnumValueDescriptorProto::number).max().expect("values") + 1;
    let renumbered = breaks_after(|new| new.file[f].enum_type[e].value[1].number = Some(to));
    assert_eq!(
        renumbered,
        vec![Breaking {
            element: enum_element(&set, f, e),
            change: Change::Renumbered { name: value.name().to_owned(), old: value.number(), new: to },
        }]
    );
}

#[test]
fn reusing_a_reserved_enum_number_breaks() {
    let current = current();
    let (f, e) = enum_where(&current, |_| true);
    let next = current.file[f].enum_type[e].value.iter().map(EnumValueDescriptorProto::number).max().unwrap_or(0) + 1;
    let mut old = current.clone();
    // Enum reserved ranges include their end: `reserved N;` is start = end = N.
    old.file[f].enum_type[e].reserved_range.push(EnumReservedRange { start: Some(next), end: Some(next) });
    let mut new = current.clone();
    new.file[f].enum_type[e].value.push(EnumValueDescriptorProto {
        name: Some("REBORN".to_owned()),
        number: Some(next),
        ..Default::default()
    });
    assert_eq!(
        compat::breaking_changes(&old, &new),
        vec![Breaking {
            element: enum_element(&current, f, e),
            change: Change::ReservedNumberReused { number: next, name: "REBORN".to_owned() },
        }]
    );
}

#[test]
fn removing_a_method_breaks() {
    let set = current();
    let (f, s) = service_where(&set, |_| true);
    let method = set.file[f].service[s].method[0].name().to_owned();
    let breaks = breaks_after(|new| {
        new.file[f].service[s].method.remove(0);
    });
    assert_eq!(
        breaks,
        vec![Breaking { element: service_element(&set, f, s), change: Change::MethodRemoved { method } }]
    );
}

#[test]
fn changing_method_streaming_breaks() {
    let set = current();
    let (f, s) = service_where(&set, |service| service.method.iter().any(|m| !m.server_streaming()));
    let i = set.file[f].service[s].method.iter().position(|m| !m.server_streaming()).expect("found");
    let method = set.file[f].service[s].method[i].name().to_owned();
    let breaks = breaks_after(|new| new.file[f].service[s].method[i].server_streaming = Some(true));
    assert_eq!(
        breaks,
        vec![Breaking {
            element: service_element(&set, f, s),
            change: Change::MethodStreamingChanged {
                method: method.clone(),
                side: StreamSide::Server,
                streaming: true
            },
        }]
    );
    assert!(breaks[0].to_string().ends_with(&format!("method `{method}` now streams its responses")), "{}", breaks[0]);

    let (f, s) = service_where(&set, |service| service.method.iter().any(|m| m.client_streaming()));
    let i = set.file[f].service[s].method.iter().position(|m| m.client_streaming()).expect("found");
    let method = set.file[f].service[s].method[i].name().to_owned();
    let breaks = breaks_after(|new| new.file[f].service[s].method[i].client_streaming = Some(false));
    assert_eq!(
        breaks,
        vec![Breaking {
            element: service_element(&set, f, s),
            change: Change::MethodStreamingChanged { method, side: StreamSide::Client, streaming: false },
        }]
    );
}

#[test]
fn changing_method_types_breaks() {
    let set = current();
    let differ = |m: &MethodDescriptorProto| m.input_type() != m.output_type();
    let (f, s) = service_where(&set, |service| service.method.iter().any(differ));
    let i = set.file[f].service[s].method.iter().position(differ).expect("found");
    let method = set.file[f].service[s].method[i].clone();
    let breaks = breaks_after(|new| {
        let changed = &mut new.file[f].service[s].method[i];
        changed.input_type = method.output_type.clone();
        changed.output_type = method.input_type.clone();
    });
    let strip = |t: &str| t.trim_start_matches('.').to_owned();
    assert_eq!(
        breaks,
        vec![
            Breaking {
                element: service_element(&set, f, s),
                change: Change::MethodInputChanged {
                    method: method.name().to_owned(),
                    old: strip(method.input_type()),
                    new: strip(method.output_type()),
                },
            },
            Breaking {
                element: service_element(&set, f, s),
                change: Change::MethodOutputChanged {
                    method: method.name().to_owned(),
                    old: strip(method.output_type()),
                    new: strip(method.input_type()),
                },
            },
        ]
    );
}

#[test]
fn changing_a_file_package_breaks() {
    let set = current();
    let (f, _) = message_where(&set, |_| true);
    let breaks = breaks_after(|new| new.file[f].package = Some("flotilla.v2".to_owned()));
    let expected = Breaking {
        element: Element::File(set.file[f].name().to_owned()),
        change: Change::PackageChanged { old: PACKAGE.to_owned(), new: "flotilla.v2".to_owned() },
    };
    assert_eq!(breaks.first(), Some(&expected), "{breaks:?}");
    // Its types now have other full names, so the old ones are gone.
    let first = format!("{PACKAGE}.{}", set.file[f].message_type[0].name());
    assert!(breaks.contains(&Breaking { element: Element::Message(first), change: Change::Removed }), "{breaks:?}");
}

// ---------------------------------------------------------------- what is allowed

#[test]
fn additions_are_compatible() {
    let set = current();
    let breaks = breaks_after(|new| {
        let (f, m) = message_where(new, |_| true);
        let number = next_field_number(&new.file[f].message_type[m]);
        new.file[f].message_type[m].field.push(scalar_field("added_field", number, Type::String));

        let (ef, e) = enum_where(new, |_| true);
        let enumeration = &mut new.file[ef].enum_type[e];
        let next = enumeration.value.iter().map(EnumValueDescriptorProto::number).max().unwrap_or(0) + 1;
        enumeration.value.push(EnumValueDescriptorProto {
            name: Some("ADDED_VALUE".to_owned()),
            number: Some(next),
            ..Default::default()
        });

        let (sf, s) = service_where(new, |_| true);
        let template = new.file[sf].service[s].method[0].clone();
        new.file[sf].service[s]
            .method
            .push(MethodDescriptorProto { name: Some("AddedMethod".to_owned()), ..template.clone() });

        new.file[f].message_type.push(DescriptorProto {
            name: Some("AddedMessage".to_owned()),
            field: vec![scalar_field("text", 1, Type::String)],
            ..Default::default()
        });
        new.file[sf].service.push(ServiceDescriptorProto {
            name: Some("AddedService".to_owned()),
            method: vec![MethodDescriptorProto { name: Some("Call".to_owned()), ..template }],
            ..Default::default()
        });
        new.file.push(FileDescriptorProto {
            name: Some("flotilla/v1/added.proto".to_owned()),
            package: Some(PACKAGE.to_owned()),
            syntax: Some("proto3".to_owned()),
            ..Default::default()
        });
    });
    assert_eq!(breaks, vec![], "additions break nothing");
    assert!(!set.file.is_empty());
}

#[test]
fn removal_with_number_and_name_reserved_is_compatible() {
    let set = current();
    let (f, m, i) = field_where(&set, |_, field| is_plain(field));
    let (ef, e) = enum_where(&set, |enumeration| enumeration.value.len() > 1);
    let breaks = breaks_after(|new| {
        let message = &mut new.file[f].message_type[m];
        let field = message.field.remove(i);
        message.reserved_range.push(ReservedRange { start: field.number, end: Some(field.number() + 1) });
        message.reserved_name.push(field.name().to_owned());

        let enumeration = &mut new.file[ef].enum_type[e];
        let value = enumeration.value.pop().expect("values");
        enumeration.reserved_range.push(EnumReservedRange { start: value.number, end: value.number });
        enumeration.reserved_name.push(value.name().to_owned());
    });
    assert_eq!(breaks, vec![]);
}

#[test]
fn removing_a_reserved_map_field_with_its_entry_is_compatible() {
    let set = current();
    let is_map = |message: &DescriptorProto, field: &FieldDescriptorProto| {
        field.label() == Label::Repeated
            && field.r#type() == Type::Message
            && message.nested_type.iter().any(|nested| {
                nested.options.as_ref().is_some_and(|o| o.map_entry())
                    && field.type_name().ends_with(&format!(".{}", nested.name()))
            })
    };
    let (f, m, i) = field_where(&set, is_map);
    let breaks = breaks_after(|new| {
        let message = &mut new.file[f].message_type[m];
        let field = message.field.remove(i);
        let entry = field.type_name().rsplit('.').next().expect("entry name").to_owned();
        message.nested_type.retain(|nested| nested.name() != entry);
        message.reserved_range.push(ReservedRange { start: field.number, end: Some(field.number() + 1) });
        message.reserved_name.push(field.name().to_owned());
    });
    assert_eq!(breaks, vec![]);

    // Without the reservation only the field is reported, not its entry message.
    let breaks = breaks_after(|new| {
        let message = &mut new.file[f].message_type[m];
        let field = message.field.remove(i);
        let entry = field.type_name().rsplit('.').next().expect("entry name").to_owned();
        message.nested_type.retain(|nested| nested.name() != entry);
    });
    assert!(matches!(&breaks[..], [Breaking { change: Change::NumberRemoved { .. }, .. }]), "{breaks:?}");
}

#[test]
fn moving_a_type_to_another_file_of_the_package_is_compatible() {
    let set = current();
    let (f, m) = message_where(&set, |_| true);
    let breaks = breaks_after(|new| {
        let message = new.file[f].message_type.remove(m);
        let other = new.file.iter().position(|file| file.package() == PACKAGE && file.name() != new.file[f].name());
        new.file[other.expect("two files in the package")].message_type.push(message);
    });
    assert_eq!(breaks, vec![]);
}
