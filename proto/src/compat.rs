//! API compatibility of the contract: which changes between two versions of a
//! `FileDescriptorSet` would break clients built against the older one.
//!
//! [`breaking_changes`] compares an old set (the golden of the last released API,
//! `proto/api/flotilla_v1.binpb`) with a new one, in the spirit of buf's `WIRE_JSON`
//! rules: what a released client sends or reads, in the binary or the JSON encoding,
//! and the RPCs it calls, must keep meaning the same thing.
//!
//! - A message, an enum and a service (each by full name, nested ones included) must
//!   still exist. Map entry messages are checked through the map field that uses them.
//! - Every field number of a message must still exist, with the same name (and JSON
//!   name), type (scalar kind, or message/enum type name), cardinality (singular,
//!   `optional`, `repeated`, `required`) and oneof. A field may only go away with both
//!   its number and its name `reserved`. A field whose name is now at another number
//!   is reported as renumbered.
//! - Every enum value number must still exist with the same name; removal needs both
//!   its number and its name reserved.
//! - Every method of a service must still exist with the same request and response
//!   types and the same client and server streaming.
//! - A file must keep its package.
//! - A number or a name that the old set reserved must not be used by the new one.
//!
//! Additions (files, messages, fields, enums, values, services, methods) never break.
//!
//! The test `api_compat` (`proto/tests/api_compat.rs`) enforces this against the
//! golden. When a new API version is released on purpose, record the golden again with
//! `FLOTILLA_BLESS_API=1 cargo test -p flotilla-proto --test api_compat`, which writes
//! it with [`write_golden`] (see `docs/api-compatibility.md`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::{fmt, fs, io};

use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet,
    ServiceDescriptorProto,
};

use crate::PACKAGE;

/// The golden descriptor set's path, relative to the `flotilla-proto` crate.
pub const GOLDEN_PATH: &str = "api/flotilla_v1.binpb";

/// The environment variable that makes the `api_compat` test record the golden from
/// the current descriptors (when set to `1`) instead of comparing against it.
pub const BLESS_ENV: &str = "FLOTILLA_BLESS_API";

/// One change that breaks clients of the old API: what changed ([`Element`]) and how
/// ([`Change`]). Its `Display` names both, e.g. ``message flotilla.v1.Release: field 3
/// `state` was removed without reserving its number and name``.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breaking {
    /// The file, message, enum or service that changed.
    pub element: Element,
    /// How it changed.
    pub change: Change,
}

/// An element of the API, by its full name (package included, no leading dot).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Element {
    /// A `.proto` file, by its name in the set (`flotilla/v1/common.proto`).
    File(String),
    /// A message, e.g. `flotilla.v1.LabelSelector`.
    Message(String),
    /// An enum, e.g. `flotilla.v1.StepOutcome`.
    Enum(String),
    /// A service, e.g. `flotilla.v1.Releases`.
    Service(String),
}

impl Element {
    /// What a numbered member of this element is called: `value` in an enum, `field`
    /// elsewhere.
    fn member(&self) -> &'static str {
        match self {
            Self::Enum(_) => "value",
            _ => "field",
        }
    }
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(name) => write!(f, "file {name}"),
            Self::Message(name) => write!(f, "message {name}"),
            Self::Enum(name) => write!(f, "enum {name}"),
            Self::Service(name) => write!(f, "service {name}"),
        }
    }
}

/// How an [`Element`] changed. "Member" is a message's field or an enum's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The message, enum or service is gone.
    Removed,
    /// The file declares another package.
    PackageChanged {
        /// The package it declared.
        old: String,
        /// The package it declares now.
        new: String,
    },
    /// A member's number is gone, and not both its number and its name are reserved.
    NumberRemoved {
        /// The number.
        number: i32,
        /// The member's name at that number.
        name: String,
        /// Whether the new version reserves the number.
        number_reserved: bool,
        /// Whether the new version reserves the name.
        name_reserved: bool,
    },
    /// A member kept its name but moved to another number.
    Renumbered {
        /// The member's name.
        name: String,
        /// Its number before.
        old: i32,
        /// Its number now.
        new: i32,
    },
    /// The member at a number has another name (for a field: another JSON key).
    Renamed {
        /// The number.
        number: i32,
        /// The name it had.
        old: String,
        /// The name it has now.
        new: String,
    },
    /// A field kept its name but has another JSON name (the `json_name` option).
    JsonNameChanged {
        /// The field number.
        number: i32,
        /// The field name.
        name: String,
        /// The JSON name it had.
        old: String,
        /// The JSON name it has now.
        new: String,
    },
    /// A field has another type: another scalar, or another message or enum.
    TypeChanged {
        /// The field number.
        number: i32,
        /// The field name.
        name: String,
        /// The type it had (`int32`, `message flotilla.v1.VersionInfo`, ...).
        old: String,
        /// The type it has now.
        new: String,
    },
    /// A field has another cardinality.
    CardinalityChanged {
        /// The field number.
        number: i32,
        /// The field name.
        name: String,
        /// The cardinality it had.
        old: Cardinality,
        /// The cardinality it has now.
        new: Cardinality,
    },
    /// A field moved into, out of or between oneofs.
    OneofChanged {
        /// The field number.
        number: i32,
        /// The field name.
        name: String,
        /// The oneof it was in (`None`: none).
        old: Option<String>,
        /// The oneof it is in now.
        new: Option<String>,
    },
    /// A member uses a number that the old version reserved.
    ReservedNumberReused {
        /// The number.
        number: i32,
        /// The member now using it.
        name: String,
    },
    /// A member uses a name that the old version reserved.
    ReservedNameReused {
        /// The member's number.
        number: i32,
        /// The name.
        name: String,
    },
    /// A service's method is gone.
    MethodRemoved {
        /// The method name.
        method: String,
    },
    /// A method takes another request message.
    MethodInputChanged {
        /// The method name.
        method: String,
        /// The request type it had (full name).
        old: String,
        /// The request type it has now.
        new: String,
    },
    /// A method returns another response message.
    MethodOutputChanged {
        /// The method name.
        method: String,
        /// The response type it had (full name).
        old: String,
        /// The response type it has now.
        new: String,
    },
    /// A method streams on one side where it did not, or the reverse.
    MethodStreamingChanged {
        /// The method name.
        method: String,
        /// Which side's streaming changed.
        side: StreamSide,
        /// Whether that side streams now.
        streaming: bool,
    },
}

/// A field's cardinality, as written in the `.proto` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cardinality {
    /// A proto3 field without a label (implicit presence for scalars).
    Singular,
    /// An `optional` field (explicit presence), or a proto2 field without `required`.
    Optional,
    /// A `repeated` (or `map`) field.
    Repeated,
    /// A proto2 `required` field.
    Required,
}

impl fmt::Display for Cardinality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Singular => "singular",
            Self::Optional => "optional",
            Self::Repeated => "repeated",
            Self::Required => "required",
        })
    }
}

/// One side of an RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamSide {
    /// The client's requests.
    Client,
    /// The server's responses.
    Server,
}

impl fmt::Display for Breaking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.element)?;
        let member = self.element.member();
        match &self.change {
            Change::Removed => f.write_str("was removed"),
            Change::PackageChanged { old, new } => write!(f, "package changed from `{old}` to `{new}`"),
            Change::NumberRemoved { number, name, number_reserved, name_reserved } => {
                write!(f, "{member} {number} `{name}` was removed")?;
                match (number_reserved, name_reserved) {
                    (false, false) => f.write_str(" without reserving its number and name"),
                    (true, false) => f.write_str("; its number is reserved but its name is not"),
                    (false, true) => f.write_str("; its name is reserved but its number is not"),
                    (true, true) => Ok(()),
                }
            }
            Change::Renumbered { name, old, new } => write!(f, "{member} `{name}` was renumbered from {old} to {new}"),
            Change::Renamed { number, old, new } => write!(f, "{member} {number} was renamed from `{old}` to `{new}`"),
            Change::JsonNameChanged { number, name, old, new } => {
                write!(f, "{member} {number} `{name}` changed its JSON name from `{old}` to `{new}`")
            }
            Change::TypeChanged { number, name, old, new } => {
                write!(f, "{member} {number} `{name}` changed type from {old} to {new}")
            }
            Change::CardinalityChanged { number, name, old, new } => {
                write!(f, "{member} {number} `{name}` changed from {old} to {new}")
            }
            Change::OneofChanged { number, name, old, new } => {
                let oneof = |o: &Option<String>| o.as_ref().map_or("no oneof".to_owned(), |o| format!("oneof `{o}`"));
                write!(f, "{member} {number} `{name}` moved from {} to {}", oneof(old), oneof(new))
            }
            Change::ReservedNumberReused { number, name } => {
                write!(f, "{member} {number} `{name}` uses the number {number}, which was reserved")
            }
            Change::ReservedNameReused { number, name } => {
                write!(f, "{member} {number} `{name}` uses the name `{name}`, which was reserved")
            }
            Change::MethodRemoved { method } => write!(f, "method `{method}` was removed"),
            Change::MethodInputChanged { method, old, new } => {
                write!(f, "method `{method}` changed its request type from `{old}` to `{new}`")
            }
            Change::MethodOutputChanged { method, old, new } => {
                write!(f, "method `{method}` changed its response type from `{old}` to `{new}`")
            }
            Change::MethodStreamingChanged { method, side, streaming } => {
                let now = if *streaming { "now streams" } else { "no longer streams" };
                let what = match side {
                    StreamSide::Client => "requests",
                    StreamSide::Server => "responses",
                };
                write!(f, "method `{method}` {now} its {what}")
            }
        }
    }
}

/// Every change from `old` to `new` that breaks clients of `old`: package changes in
/// file order, then messages, enums and services, each by full name. Empty when `new`
/// only adds to `old`. Types are matched by full name across all files of each set, so
/// moving a type to another file of the same package is not a break.
pub fn breaking_changes(old: &FileDescriptorSet, new: &FileDescriptorSet) -> Vec<Breaking> {
    let (old_index, new_index) = (Index::of(old), Index::of(new));
    let mut out = Vec::new();

    let new_files: HashMap<&str, &FileDescriptorProto> = new.file.iter().map(|file| (file.name(), file)).collect();
    for file in &old.file {
        let Some(now) = new_files.get(file.name()) else { continue };
        if now.package() != file.package() {
            out.push(Breaking {
                element: Element::File(file.name().to_owned()),
                change: Change::PackageChanged { old: file.package().to_owned(), new: now.package().to_owned() },
            });
        }
    }

    for (name, message) in &old_index.messages {
        let element = Element::Message(name.clone());
        match new_index.messages.get(name) {
            Some(now) => compare_messages(&element, message, now, &mut out),
            // A map's entry message goes with its field, which is checked on its own.
            None if is_map_entry(message.descriptor) => {}
            None => out.push(Breaking { element, change: Change::Removed }),
        }
    }
    for (name, enumeration) in &old_index.enums {
        let element = Element::Enum(name.clone());
        match new_index.enums.get(name) {
            Some(now) => compare_enums(&element, enumeration, now, &mut out),
            None => out.push(Breaking { element, change: Change::Removed }),
        }
    }
    for (name, service) in &old_index.services {
        let element = Element::Service(name.clone());
        match new_index.services.get(name) {
            Some(now) => compare_services(&element, service, now, &mut out),
            None => out.push(Breaking { element, change: Change::Removed }),
        }
    }
    out
}

/// The API snapshot of `set` that a golden records: the files of `package`, without
/// `source_code_info` (comments and spans do not make a break, and would make every
/// comment edit change the golden).
pub fn api_snapshot(set: &FileDescriptorSet, package: &str) -> FileDescriptorSet {
    FileDescriptorSet {
        file: set
            .file
            .iter()
            .filter(|file| file.package() == package)
            .map(|file| FileDescriptorProto { source_code_info: None, ..file.clone() })
            .collect(),
    }
}

/// Records the `flotilla.v1` API of `current` (its [`api_snapshot`]) as the golden at
/// `path`, encoded: written to a temporary file next to it, then renamed over it.
/// Creates the parent directory when needed.
pub fn write_golden(path: &Path, current: &FileDescriptorSet) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    fs::write(&temp, api_snapshot(current, PACKAGE).encode_to_vec())?;
    fs::rename(&temp, path)
}

/// Reads a golden written by [`write_golden`]; an undecodable file is
/// [`io::ErrorKind::InvalidData`].
pub fn read_golden(path: &Path) -> io::Result<FileDescriptorSet> {
    let bytes = fs::read(path)?;
    FileDescriptorSet::decode(bytes.as_slice()).map_err(|err| {
        io::Error::new(io::ErrorKind::InvalidData, format!("{} is not a FileDescriptorSet: {err}", path.display()))
    })
}

// ---------------------------------------------------------------- index

/// A message and whether its file is proto3 (which decides its fields' cardinality).
#[derive(Debug, Clone, Copy)]
struct MessageRef<'a> {
    descriptor: &'a DescriptorProto,
    proto3: bool,
}

/// Every message, enum and service of a set by full name.
#[derive(Debug, Default)]
struct Index<'a> {
    messages: BTreeMap<String, MessageRef<'a>>,
    enums: BTreeMap<String, &'a EnumDescriptorProto>,
    services: BTreeMap<String, &'a ServiceDescriptorProto>,
}

impl<'a> Index<'a> {
    fn of(set: &'a FileDescriptorSet) -> Self {
        let mut index = Self::default();
        for file in &set.file {
            let package = file.package();
            let proto3 = file.syntax() == "proto3";
            for message in &file.message_type {
                index.add_message(package, message, proto3);
            }
            for enumeration in &file.enum_type {
                index.enums.insert(full_name(package, enumeration.name()), enumeration);
            }
            for service in &file.service {
                index.services.insert(full_name(package, service.name()), service);
            }
        }
        index
    }

    fn add_message(&mut self, scope: &str, message: &'a DescriptorProto, proto3: bool) {
        let name = full_name(scope, message.name());
        for nested in &message.nested_type {
            self.add_message(&name, nested, proto3);
        }
        for enumeration in &message.enum_type {
            self.enums.insert(full_name(&name, enumeration.name()), enumeration);
        }
        self.messages.insert(name, MessageRef { descriptor: message, proto3 });
    }
}

fn full_name(scope: &str, name: &str) -> String {
    if scope.is_empty() { name.to_owned() } else { format!("{scope}.{name}") }
}

fn is_map_entry(message: &DescriptorProto) -> bool {
    message.options.as_ref().is_some_and(|options| options.map_entry())
}

// ---------------------------------------------------------------- messages

fn compare_messages(element: &Element, old: &MessageRef<'_>, new: &MessageRef<'_>, out: &mut Vec<Breaking>) {
    let (old_message, new_message) = (old.descriptor, new.descriptor);
    let mut push = |change| out.push(Breaking { element: element.clone(), change });
    let new_by_number: HashMap<i32, &FieldDescriptorProto> =
        new_message.field.iter().map(|field| (field.number(), field)).collect();
    let new_by_name: HashMap<&str, &FieldDescriptorProto> =
        new_message.field.iter().map(|field| (field.name(), field)).collect();

    for field in &old_message.field {
        let (number, name) = (field.number(), field.name());
        let Some(now) = new_by_number.get(&number) else {
            if let Some(moved) = new_by_name.get(name) {
                push(Change::Renumbered { name: name.to_owned(), old: number, new: moved.number() });
            } else {
                let number_reserved =
                    new_message.reserved_range.iter().any(|r| r.start() <= number && number < r.end());
                let name_reserved = new_message.reserved_name.iter().any(|reserved| reserved == name);
                if !(number_reserved && name_reserved) {
                    push(Change::NumberRemoved { number, name: name.to_owned(), number_reserved, name_reserved });
                }
            }
            continue;
        };
        if now.name() != name {
            push(Change::Renamed { number, old: name.to_owned(), new: now.name().to_owned() });
        } else if json_name(now) != json_name(field) {
            push(Change::JsonNameChanged { number, name: name.to_owned(), old: json_name(field), new: json_name(now) });
        }
        let (old_type, new_type) = (type_text(field), type_text(now));
        if old_type != new_type {
            push(Change::TypeChanged { number, name: name.to_owned(), old: old_type, new: new_type });
        }
        let (old_card, new_card) = (cardinality(field, old.proto3), cardinality(now, new.proto3));
        if old_card != new_card {
            push(Change::CardinalityChanged { number, name: name.to_owned(), old: old_card, new: new_card });
        }
        let (old_oneof, new_oneof) = (oneof(old_message, field), oneof(new_message, now));
        if old_oneof != new_oneof {
            push(Change::OneofChanged {
                number,
                name: name.to_owned(),
                old: old_oneof.map(str::to_owned),
                new: new_oneof.map(str::to_owned),
            });
        }
    }

    let old_numbers: Vec<i32> = old_message.field.iter().map(|field| field.number()).collect();
    let old_names: Vec<&str> = old_message.field.iter().map(|field| field.name()).collect();
    for field in &new_message.field {
        let (number, name) = (field.number(), field.name());
        if !old_numbers.contains(&number)
            && old_message.reserved_range.iter().any(|r| r.start() <= number && number < r.end())
        {
            push(Change::ReservedNumberReused { number, name: name.to_owned() });
        }
        if !old_names.contains(&name) && old_message.reserved_name.iter().any(|reserved| reserved == name) {
            push(Change::ReservedNameReused { number, name: name.to_owned() });
        }
    }
}

/// A field's JSON name: the `json_name` the compiler recorded, else the lowerCamelCase
/// of its name that protobuf's JSON mapping uses.
fn json_name(field: &FieldDescriptorProto) -> String {
    if let Some(json) = &field.json_name {
        return json.clone();
    }
    let mut json = String::with_capacity(field.name().len());
    let mut upper_next = false;
    for c in field.name().chars() {
        if c == '_' {
            upper_next = true;
        } else if upper_next {
            json.push(c.to_ascii_uppercase());
            upper_next = false;
        } else {
            json.push(c);
        }
    }
    json
}

/// A field's type as text: the scalar's name, or `message`/`enum` and the full name.
fn type_text(field: &FieldDescriptorProto) -> String {
    let type_name = field.type_name().trim_start_matches('.');
    let Some(kind) = field.r#type.and_then(|t| Type::try_from(t).ok()) else {
        return if type_name.is_empty() { "an unknown type".to_owned() } else { type_name.to_owned() };
    };
    let scalar = match kind {
        Type::Message => return format!("message {type_name}"),
        Type::Enum => return format!("enum {type_name}"),
        Type::Group => return format!("group {type_name}"),
        Type::Double => "double",
        Type::Float => "float",
        Type::Int64 => "int64",
        Type::Uint64 => "uint64",
        Type::Int32 => "int32",
        Type::Fixed64 => "fixed64",
        Type::Fixed32 => "fixed32",
        Type::Bool => "bool",
        Type::String => "string",
        Type::Bytes => "bytes",
        Type::Uint32 => "uint32",
        Type::Sfixed32 => "sfixed32",
        Type::Sfixed64 => "sfixed64",
        Type::Sint32 => "sint32",
        Type::Sint64 => "sint64",
    };
    scalar.to_owned()
}

fn cardinality(field: &FieldDescriptorProto, proto3: bool) -> Cardinality {
    match field.label.and_then(|label| Label::try_from(label).ok()) {
        Some(Label::Repeated) => Cardinality::Repeated,
        Some(Label::Required) => Cardinality::Required,
        _ if field.proto3_optional() => Cardinality::Optional,
        _ if proto3 => Cardinality::Singular,
        _ => Cardinality::Optional,
    }
}

/// The name of the (real, not synthetic `optional`) oneof a field belongs to.
fn oneof<'a>(message: &'a DescriptorProto, field: &FieldDescriptorProto) -> Option<&'a str> {
    if field.proto3_optional() {
        return None;
    }
    let index = usize::try_from(field.oneof_index?).ok()?;
    Some(message.oneof_decl.get(index).map_or("", |oneof| oneof.name()))
}

// ---------------------------------------------------------------- enums

fn compare_enums(element: &Element, old: &EnumDescriptorProto, new: &EnumDescriptorProto, out: &mut Vec<Breaking>) {
    let mut push = |change| out.push(Breaking { element: element.clone(), change });
    // Enum reserved ranges include their end, unlike message ones.
    let reserved = |e: &EnumDescriptorProto, number: i32| {
        e.reserved_range.iter().any(|r| r.start() <= number && number <= r.end())
    };

    for value in &old.value {
        let (number, name) = (value.number(), value.name());
        let at_number: Vec<&str> = new.value.iter().filter(|v| v.number() == number).map(|v| v.name()).collect();
        if let Some(first) = at_number.first() {
            if !at_number.contains(&name) {
                push(Change::Renamed { number, old: name.to_owned(), new: (*first).to_owned() });
            }
        } else if let Some(moved) = new.value.iter().find(|v| v.name() == name) {
            push(Change::Renumbered { name: name.to_owned(), old: number, new: moved.number() });
        } else {
            let number_reserved = reserved(new, number);
            let name_reserved = new.reserved_name.iter().any(|reserved| reserved == name);
            if !(number_reserved && name_reserved) {
                push(Change::NumberRemoved { number, name: name.to_owned(), number_reserved, name_reserved });
            }
        }
    }

    for value in &new.value {
        let (number, name) = (value.number(), value.name());
        if !old.value.iter().any(|v| v.number() == number) && reserved(old, number) {
            push(Change::ReservedNumberReused { number, name: name.to_owned() });
        }
        if !old.value.iter().any(|v| v.name() == name) && old.reserved_name.iter().any(|reserved| reserved == name) {
            push(Change::ReservedNameReused { number, name: name.to_owned() });
        }
    }
}

// ---------------------------------------------------------------- services

fn compare_services(
    element: &Element,
    old: &ServiceDescriptorProto,
    new: &ServiceDescriptorProto,
    out: &mut Vec<Breaking>,
) {
    let mut push = |change| out.push(Breaking { element: element.clone(), change });
    for method in &old.method {
        let name = method.name().to_owned();
        let Some(now) = new.method.iter().find(|m| m.name() == method.name()) else {
            push(Change::MethodRemoved { method: name });
            continue;
        };
        let type_of = |t: &str| t.trim_start_matches('.').to_owned();
        if now.input_type() != method.input_type() {
            push(Change::MethodInputChanged {
                method: name.clone(),
                old: type_of(method.input_type()),
                new: type_of(now.input_type()),
            });
        }
        if now.output_type() != method.output_type() {
            push(Change::MethodOutputChanged {
                method: name.clone(),
                old: type_of(method.output_type()),
                new: type_of(now.output_type()),
            });
        }
        if now.client_streaming() != method.client_streaming() {
            push(Change::MethodStreamingChanged {
                method: name.clone(),
                side: StreamSide::Client,
                streaming: now.client_streaming(),
            });
        }
        if now.server_streaming() != method.server_streaming() {
            push(Change::MethodStreamingChanged {
                method: name,
                side: StreamSide::Server,
                streaming: now.server_streaming(),
            });
        }
    }
}
