//! `--output json`: every command prints one `flotilla.v1` message (JSON Lines of
//! messages for event streams) in the canonical protobuf JSON mapping, through the
//! serde implementations `flotilla-proto` generates with `pbjson-build`, so what a
//! script reads from the CLI is what it reads from the gRPC API (docs/json-output.md).

use anyhow::anyhow;
use serde::Serialize;

use crate::Failure;

/// `message` as indented JSON and a final newline: what one command prints.
pub(crate) fn pretty<T: Serialize>(message: &T) -> Result<String, Failure> {
    let mut text = serde_json::to_string_pretty(message).map_err(|e| unprintable(&e))?;
    text.push('\n');
    Ok(text)
}

/// `message` as one line of JSON and a newline: one line of a JSON Lines stream.
pub(crate) fn line<T: Serialize>(message: &T) -> Result<String, Failure> {
    let mut text = serde_json::to_string(message).map_err(|e| unprintable(&e))?;
    text.push('\n');
    Ok(text)
}

/// The generated serializers refuse only an enum number this build does not know (a
/// newer coordinator's); the message says so rather than printing half a document.
fn unprintable(e: &serde_json::Error) -> Failure {
    Failure::Operational(anyhow!("cannot print the answer as JSON: {e} (is the coordinator newer than this CLI?)"))
}

#[cfg(test)]
mod tests {
    use flotilla_proto::v1;

    use super::*;

    fn release() -> v1::Release {
        v1::Release {
            id: "r-1".into(),
            name: "shop".into(),
            state: v1::ReleaseState::AwaitingApproval as i32,
            created_unix_ms: 1_790_000_000_123,
            last_event_index: 7,
            pending_approvals: vec![v1::PendingApproval {
                kind: v1::ApprovalKind::Stage as i32,
                name: "canary".into(),
                stage: "canary".into(),
                since_unix_ms: 1_790_000_000_456,
                approvers: String::new(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn messages_print_in_the_canonical_mapping_with_every_field() {
        let resp = v1::CreateResponse { release: Some(release()), created: true };
        let doc: serde_json::Value = serde_json::from_str(&pretty(&resp).unwrap()).unwrap();
        let r = &doc["release"];
        // lowerCamelCase names, enums by their full names, 64-bit integers as strings.
        assert_eq!(r["state"], "RELEASE_STATE_AWAITING_APPROVAL");
        assert_eq!(r["createdUnixMs"], "1790000000123");
        assert_eq!(r["lastEventIndex"], "7");
        assert_eq!(r["pendingApprovals"][0]["kind"], "APPROVAL_KIND_STAGE");
        assert_eq!(r["pendingApprovals"][0]["sinceUnixMs"], "1790000000456");
        assert_eq!(doc["created"], true);
        // Fields at their default value are there too; unset messages are not.
        assert_eq!(r["reason"], "");
        assert_eq!(r["finishedUnixMs"], "0");
        assert_eq!(r["stages"], serde_json::json!([]));
        assert!(r.get("plan").is_none(), "an unset message field is left out: {r}");
        assert!(r.get("created_unix_ms").is_none(), "no proto field names: {r}");
    }

    #[test]
    fn what_is_printed_parses_back_into_the_same_message() {
        let resp = v1::CreateResponse { release: Some(release()), created: false };
        assert_eq!(serde_json::from_str::<v1::CreateResponse>(&pretty(&resp).unwrap()).unwrap(), resp);
        let event = v1::ReleaseEvent {
            release_id: "r-1".into(),
            index: 3,
            kind: v1::EventKind::BatchStarted as i32,
            release_state: v1::ReleaseState::Running as i32,
            hosts: vec!["web-1".into()],
            ..Default::default()
        };
        let text = line(&event).unwrap();
        assert_eq!(text.lines().count(), 1, "one event, one line: {text}");
        assert!(text.contains(r#""kind":"EVENT_KIND_BATCH_STARTED""#), "{text}");
        assert_eq!(serde_json::from_str::<v1::ReleaseEvent>(&text).unwrap(), event);
    }

    #[test]
    fn an_enum_number_this_build_does_not_know_is_an_operational_error() {
        let summary = v1::ReleaseSummary { state: 99, ..Default::default() };
        let Err(Failure::Operational(e)) = pretty(&summary) else { panic!("expected an operational failure") };
        assert!(e.to_string().contains("newer than this CLI"), "{e}");
    }
}
