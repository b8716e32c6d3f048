//! Reading HISTORY documents: the format is checked first, the document's own keys are
//! strict, host lines must be of a known format, and every error says where.

#[allow(dead_code)]
mod support;

use flotilla_check::{History, HistoryError};

fn read(text: &str) -> Result<History, HistoryError> {
    History::from_json(text)
}

#[test]
fn another_format_is_refused_whatever_its_shape() {
    let e = read(r#"{"format": 2, "releases": "a new shape"}"#).expect_err("refused");
    assert!(matches!(e, HistoryError::Format { found: 2 }), "{e}");
    assert_eq!(e.to_string(), "history format 2 is not supported: this checker reads format 1");
}

#[test]
fn a_document_without_format_is_refused() {
    let e = read(r#"{"releases": []}"#).expect_err("refused");
    assert!(matches!(e, HistoryError::NoFormat), "{e}");
}

#[test]
fn unknown_keys_are_refused_with_their_place() {
    let e = read("{\"format\": 1,\n \"host\": []}").expect_err("refused");
    assert!(matches!(e, HistoryError::Shape(_)), "{e}");
    assert!(e.to_string().contains("unknown field `host`"), "{e}");
    assert_eq!(e.line_column().map(|(l, _)| l), Some(2), "{e}");
}

#[test]
fn syntax_errors_say_line_and_column() {
    let e = read("{\"format\": 1,\n\"releases\": [}").expect_err("refused");
    assert!(matches!(e, HistoryError::Syntax(_)), "{e}");
    assert_eq!(e.line_column(), Some((2, 14)), "{e}");
}

#[test]
fn a_host_line_of_another_format_is_refused_naming_host_and_line() {
    let mut h = support::clean();
    support::host(&mut h, "app-2").history[3].format = 2;
    let text = serde_json::to_string(&h).expect("serializes");
    let e = read(&text).expect_err("refused");
    assert!(
        e.to_string().starts_with("hosts[1] (app-2).history line 4: host history format 2 is not supported"),
        "{e}"
    );
}

#[test]
fn events_filed_under_another_release_are_refused() {
    let mut h = support::clean();
    support::events(&mut h, "r1")[2].release_id = "r0".to_owned();
    let e = h.validate().expect_err("refused");
    assert_eq!(e.to_string(), "events.r1[2]: the event belongs to release r0, not r1");
}

#[test]
fn a_release_listed_twice_is_refused() {
    let mut h = support::clean();
    let again = h.releases[0].clone();
    h.releases.push(again);
    assert_eq!(h.validate().expect_err("refused").to_string(), "releases[2]: release r0 appears twice");
}

#[test]
fn releases_and_events_are_read_in_canonical_protobuf_json() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/one-service.json"))
        .expect("the fixture");
    let h = read(&text).expect("reads");
    assert_eq!(h.seed, Some(1));
    assert_eq!(h.releases[0].last_event_index, 9);
    let e = &h.events["r1"][3];
    assert_eq!(e.kind, flotilla_proto::v1::EventKind::BatchStarted as i32);
    assert_eq!((e.index, e.term), (4, 3));
    assert_eq!(h.hosts[0].history.len(), 2);
}
