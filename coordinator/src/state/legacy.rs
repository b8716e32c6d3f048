//! The state as older on-disk formats wrote it, read from their snapshots and migrated
//! to the current [`State`] (see `store::spaces::FORMAT_VERSION` for what each format
//! changed). The binary codec is positional, so each layout that changed is spelled out
//! here as it was; only the parts that differ are mirrored.
//!
//! - Formats 2 to 4 recorded release events without the term that committed them, and
//!   releases without their footprint: their events are read as [`EventV4`] and
//!   migrated with term 0 ("not known"), and each footprint is planned again from the
//!   release's spec and fleet.
//! - Formats 2 and 3 declared an audit list no build wrote to; format 4 replaced it
//!   with operator tokens and the audit trail.
//! - Format 2 had no enrolment.
//! - Formats 2 to 6 stored the fleet a release was planned against as JSON, and kept
//!   the submission's fields beside the run rather than the submission itself; format
//!   7 stores the fleet typed ([`crate::plans::StoredFleet`]), keeps the submission
//!   once, and adds the compacted releases at the end of the state. A format-6 log's
//!   release submissions are [`NewReleaseV6`] (the first operation variant), still
//!   applied.
//! - Formats 2 to 7 had no canary analyses in a release's run ([`RunV7`]); format 8
//!   adds them at the end of the run.
//! - Formats 7 and 8 compacted releases without the change time, and their services
//!   without when they finished ([`CompactedReleaseV8`]); format 9 adds both at the
//!   end (0: not known).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{
    AccessState, CompactedRelease, EnrolmentState, FleetState, Footprint, NewRelease, PolicyState, ReleaseId,
    ReleaseRecord, ServiceOutcome, State, footprint_of,
};
use crate::engine::{
    Approval, CommandId, Event, EventKind, Failure, Phase, RollbackRun, Run, ServiceState, StageRun, Status,
    StepRecord, Steps, Terminal,
};
use crate::plans::{PlanCell, StoredFleet};
use flotilla_shared::model::{HostId, ServiceName};

/// A release event as formats 2 to 4 wrote it: without its term.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventV4 {
    index: u64,
    at_unix_ms: i64,
    kind: EventKind,
    message: String,
    stage: String,
    services: Vec<ServiceName>,
    gate: String,
    batch: String,
    hosts: Vec<HostId>,
    command_ids: Vec<CommandId>,
    version: String,
    actor: String,
    status: Status,
}

impl From<EventV4> for Event {
    fn from(old: EventV4) -> Self {
        let EventV4 {
            index,
            at_unix_ms,
            kind,
            message,
            stage,
            services,
            gate,
            batch,
            hosts,
            command_ids,
            version,
            actor,
            status,
        } = old;
        Self {
            index,
            at_unix_ms,
            kind,
            message,
            stage,
            services,
            gate,
            batch,
            hosts,
            command_ids,
            version,
            actor,
            status,
            term: 0,
        }
    }
}

/// A release's run as formats 2 to 4 wrote it (its events without terms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunV4 {
    version: u64,
    next_command: u64,
    phase: Phase,
    paused: Option<String>,
    reason: String,
    stage: usize,
    stages: Vec<StageRun>,
    steps: BTreeMap<CommandId, StepRecord>,
    migrated: Vec<ServiceName>,
    approvals: Vec<Approval>,
    failure: Option<Failure>,
    rollback: Option<RollbackRun>,
    events: Vec<EventV4>,
    updated_unix_ms: i64,
    finished_unix_ms: i64,
}

impl From<RunV4> for RunV7 {
    fn from(old: RunV4) -> Self {
        let RunV4 {
            version,
            next_command,
            phase,
            paused,
            reason,
            stage,
            stages,
            steps,
            migrated,
            approvals,
            failure,
            rollback,
            events,
            updated_unix_ms,
            finished_unix_ms,
        } = old;
        Self {
            version,
            next_command,
            phase,
            paused,
            reason,
            stage,
            stages,
            steps: steps.into(),
            migrated,
            approvals,
            failure,
            rollback,
            events: events.into_iter().map(Event::from).collect(),
            updated_unix_ms,
            finished_unix_ms,
        }
    }
}

/// A release's run as formats 2 to 7 wrote it (formats 2 to 4 see [`RunV4`]): before
/// canary analyses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunV7 {
    version: u64,
    next_command: u64,
    phase: Phase,
    paused: Option<String>,
    reason: String,
    stage: usize,
    stages: Vec<StageRun>,
    steps: Steps,
    migrated: Vec<ServiceName>,
    approvals: Vec<Approval>,
    failure: Option<Failure>,
    rollback: Option<RollbackRun>,
    events: Vec<Event>,
    updated_unix_ms: i64,
    finished_unix_ms: i64,
}

/// A current run as format 7 wrote it: without its analyses (for tests of migrations).
#[cfg(test)]
impl From<Run> for RunV7 {
    fn from(run: Run) -> Self {
        let Run {
            version,
            next_command,
            phase,
            paused,
            reason,
            stage,
            stages,
            steps,
            migrated,
            approvals,
            failure,
            rollback,
            events,
            updated_unix_ms,
            finished_unix_ms,
            analyses: _,
        } = run;
        Self {
            version,
            next_command,
            phase,
            paused,
            reason,
            stage,
            stages,
            steps,
            migrated,
            approvals,
            failure,
            rollback,
            events,
            updated_unix_ms,
            finished_unix_ms,
        }
    }
}

impl From<RunV7> for Run {
    fn from(old: RunV7) -> Self {
        let RunV7 {
            version,
            next_command,
            phase,
            paused,
            reason,
            stage,
            stages,
            steps,
            migrated,
            approvals,
            failure,
            rollback,
            events,
            updated_unix_ms,
            finished_unix_ms,
        } = old;
        Self {
            version,
            next_command,
            phase,
            paused,
            reason,
            stage,
            stages,
            steps,
            migrated,
            approvals,
            failure,
            rollback,
            events,
            updated_unix_ms,
            finished_unix_ms,
            analyses: Vec::new(),
        }
    }
}

/// A release record as formats 2 to 4 wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRecordV4 {
    id: ReleaseId,
    name: String,
    file_name: String,
    spec_text: String,
    fleet_json: String,
    idempotency_key: String,
    created_by: String,
    created_unix_ms: i64,
    created_index: u64,
    run: RunV4,
}

impl From<ReleaseRecordV4> for ReleaseRecordV6 {
    fn from(old: ReleaseRecordV4) -> Self {
        let ReleaseRecordV4 {
            id,
            name,
            file_name,
            spec_text,
            fleet_json,
            idempotency_key,
            created_by,
            created_unix_ms,
            created_index,
            run,
        } = old;
        let fleet = fleet_from_json(&id, &fleet_json);
        Self {
            footprint: footprint_of(&crate::plans::replan(&spec_text, &file_name, &fleet).map(Arc::new)),
            id,
            name,
            file_name,
            spec_text,
            fleet_json,
            idempotency_key,
            created_by,
            created_unix_ms,
            created_index,
            run: run.into(),
        }
    }
}

fn migrate<R: Into<ReleaseRecord>>(releases: BTreeMap<ReleaseId, R>) -> BTreeMap<ReleaseId, ReleaseRecord> {
    releases.into_iter().map(|(id, r)| (id, r.into())).collect()
}

impl From<ReleaseRecordV4> for ReleaseRecord {
    fn from(old: ReleaseRecordV4) -> Self {
        ReleaseRecordV6::from(old).into()
    }
}

/// The fleet a format-6-or-older release was planned against, from its JSON. The
/// coordinator wrote that JSON itself, so it parses; were it damaged, the release is
/// kept with no hosts (it would not have planned before either) and a warning says so.
fn fleet_from_json(release: &str, json: &str) -> StoredFleet {
    if json.is_empty() {
        return StoredFleet::default();
    }
    match serde_json::from_str::<flotilla_shared::inventory::Fleet>(json) {
        Ok(fleet) => StoredFleet::from(&fleet),
        Err(e) => {
            tracing::warn!(release, error = %e, "the stored planning fleet of a release does not parse; it is kept without hosts");
            StoredFleet::default()
        }
    }
}

/// A release submission as formats 2 to 6 proposed it: the planning fleet as JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewReleaseV6 {
    /// The id the leader chose.
    pub id: ReleaseId,
    /// The client's idempotency key; empty means none.
    pub idempotency_key: String,
    /// The release name from the spec.
    pub name: String,
    /// The spec's file name.
    pub file_name: String,
    /// The spec's text.
    pub spec_text: String,
    /// The planning fleet (`flotilla_shared::inventory::Fleet`) as JSON.
    pub fleet_json: String,
    /// Who submitted it; empty when unknown.
    pub created_by: String,
}

impl From<&NewReleaseV6> for NewRelease {
    fn from(old: &NewReleaseV6) -> Self {
        Self {
            id: old.id.clone(),
            idempotency_key: old.idempotency_key.clone(),
            name: old.name.clone(),
            file_name: old.file_name.clone(),
            spec_text: old.spec_text.clone(),
            fleet: fleet_from_json(&old.id, &old.fleet_json),
            created_by: old.created_by.clone(),
        }
    }
}

/// A release record as formats 5 and 6 wrote it (formats 2 to 4 without the footprint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRecordV6 {
    id: ReleaseId,
    name: String,
    file_name: String,
    spec_text: String,
    fleet_json: String,
    idempotency_key: String,
    created_by: String,
    created_unix_ms: i64,
    created_index: u64,
    run: RunV7,
    footprint: Footprint,
}

impl From<ReleaseRecordV6> for ReleaseRecord {
    fn from(old: ReleaseRecordV6) -> Self {
        let ReleaseRecordV6 {
            id,
            name,
            file_name,
            spec_text,
            fleet_json,
            idempotency_key,
            created_by,
            created_unix_ms,
            created_index,
            run,
            footprint,
        } = old;
        let fleet = fleet_from_json(&id, &fleet_json);
        Self {
            submitted: NewRelease { id, idempotency_key, name, file_name, spec_text, fleet, created_by },
            created_unix_ms,
            created_index,
            run: run.into(),
            footprint,
            planned: PlanCell::default(),
        }
    }
}

/// A release record as format 7 wrote it (its run before canary analyses).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRecordV7 {
    submitted: NewRelease,
    created_unix_ms: i64,
    created_index: u64,
    run: RunV7,
    footprint: Footprint,
}

impl From<ReleaseRecordV7> for ReleaseRecord {
    fn from(old: ReleaseRecordV7) -> Self {
        let ReleaseRecordV7 { submitted, created_unix_ms, created_index, run, footprint } = old;
        Self { submitted, created_unix_ms, created_index, run: run.into(), footprint, planned: PlanCell::default() }
    }
}

/// One service of one stage of a compacted release as formats 7 and 8 wrote it:
/// without when it finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceOutcomeV8 {
    stage: String,
    service: ServiceName,
    version: String,
    from_versions: Vec<String>,
    state: ServiceState,
    hosts: u32,
    hosts_done: u32,
    hosts_failed: u32,
}

/// A compacted release as formats 7 and 8 wrote it: without the change time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactedReleaseV8 {
    id: ReleaseId,
    name: String,
    file_name: String,
    created_by: String,
    created_unix_ms: i64,
    created_index: u64,
    finished_unix_ms: i64,
    outcome: Terminal,
    reason: String,
    last_event_index: u64,
    services: Vec<ServiceOutcomeV8>,
    actors: Vec<String>,
    compacted_unix_ms: i64,
}

impl From<CompactedReleaseV8> for CompactedRelease {
    fn from(old: CompactedReleaseV8) -> Self {
        let CompactedReleaseV8 {
            id,
            name,
            file_name,
            created_by,
            created_unix_ms,
            created_index,
            finished_unix_ms,
            outcome,
            reason,
            last_event_index,
            services,
            actors,
            compacted_unix_ms,
        } = old;
        let services =
            services
                .into_iter()
                .map(|s| {
                    let ServiceOutcomeV8 {
                        stage,
                        service,
                        version,
                        from_versions,
                        state,
                        hosts,
                        hosts_done,
                        hosts_failed,
                    } = s;
                    ServiceOutcome {
                        stage,
                        service,
                        version,
                        from_versions,
                        state,
                        hosts,
                        hosts_done,
                        hosts_failed,
                        finished_unix_ms: 0,
                    }
                })
                .collect();
        Self {
            id,
            name,
            file_name,
            created_by,
            created_unix_ms,
            created_index,
            finished_unix_ms,
            outcome,
            reason,
            last_event_index,
            services,
            actors,
            compacted_unix_ms,
            changed_unix_ms: 0,
        }
    }
}

/// A current compacted release as format 8 wrote it (for tests of migrations).
#[cfg(test)]
impl From<CompactedRelease> for CompactedReleaseV8 {
    fn from(c: CompactedRelease) -> Self {
        Self {
            id: c.id,
            name: c.name,
            file_name: c.file_name,
            created_by: c.created_by,
            created_unix_ms: c.created_unix_ms,
            created_index: c.created_index,
            finished_unix_ms: c.finished_unix_ms,
            outcome: c.outcome,
            reason: c.reason,
            last_event_index: c.last_event_index,
            services: c
                .services
                .into_iter()
                .map(|s| ServiceOutcomeV8 {
                    stage: s.stage,
                    service: s.service,
                    version: s.version,
                    from_versions: s.from_versions,
                    state: s.state,
                    hosts: s.hosts,
                    hosts_done: s.hosts_done,
                    hosts_failed: s.hosts_failed,
                })
                .collect(),
            actors: c.actors,
            compacted_unix_ms: c.compacted_unix_ms,
        }
    }
}

fn migrate_history(history: BTreeMap<ReleaseId, CompactedReleaseV8>) -> BTreeMap<ReleaseId, CompactedRelease> {
    history.into_iter().map(|(id, c)| (id, c.into())).collect()
}

/// The state as format 9 wrote it (before the release policy).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateV9 {
    releases: BTreeMap<ReleaseId, ReleaseRecord>,
    active: BTreeSet<ReleaseId>,
    by_idempotency_key: BTreeMap<String, ReleaseId>,
    fleet: FleetState,
    enrolment: EnrolmentState,
    access: AccessState,
    members_seen: BTreeSet<u64>,
    history: BTreeMap<ReleaseId, CompactedRelease>,
}

impl From<StateV9> for State {
    fn from(old: StateV9) -> Self {
        let StateV9 { releases, active, by_idempotency_key, fleet, enrolment, access, members_seen, history } = old;
        Self {
            releases,
            active,
            by_idempotency_key,
            fleet,
            enrolment,
            access,
            members_seen,
            history,
            policy: PolicyState::default(),
        }
    }
}

/// The state as format 8 wrote it (compacted releases before change times).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateV8 {
    releases: BTreeMap<ReleaseId, ReleaseRecord>,
    active: BTreeSet<ReleaseId>,
    by_idempotency_key: BTreeMap<String, ReleaseId>,
    fleet: FleetState,
    enrolment: EnrolmentState,
    access: AccessState,
    members_seen: BTreeSet<u64>,
    history: BTreeMap<ReleaseId, CompactedReleaseV8>,
}

impl From<StateV8> for State {
    fn from(old: StateV8) -> Self {
        let StateV8 { releases, active, by_idempotency_key, fleet, enrolment, access, members_seen, history } = old;
        Self {
            releases,
            active,
            by_idempotency_key,
            fleet,
            enrolment,
            access,
            members_seen,
            history: migrate_history(history),
            policy: PolicyState::default(),
        }
    }
}

/// The state as format 7 wrote it (runs before canary analyses).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateV7 {
    releases: BTreeMap<ReleaseId, ReleaseRecordV7>,
    active: BTreeSet<ReleaseId>,
    by_idempotency_key: BTreeMap<String, ReleaseId>,
    fleet: FleetState,
    enrolment: EnrolmentState,
    access: AccessState,
    members_seen: BTreeSet<u64>,
    history: BTreeMap<ReleaseId, CompactedReleaseV8>,
}

impl From<StateV7> for State {
    fn from(old: StateV7) -> Self {
        let StateV7 { releases, active, by_idempotency_key, fleet, enrolment, access, members_seen, history } = old;
        Self {
            releases: migrate(releases),
            active,
            by_idempotency_key,
            fleet,
            enrolment,
            access,
            members_seen,
            history: migrate_history(history),
            policy: PolicyState::default(),
        }
    }
}

/// The state as formats 5 and 6 wrote it (before compacted releases).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateV6 {
    releases: BTreeMap<ReleaseId, ReleaseRecordV6>,
    active: BTreeSet<ReleaseId>,
    by_idempotency_key: BTreeMap<String, ReleaseId>,
    fleet: FleetState,
    enrolment: EnrolmentState,
    access: AccessState,
    members_seen: BTreeSet<u64>,
}

impl From<StateV6> for State {
    fn from(old: StateV6) -> Self {
        let StateV6 { releases, active, by_idempotency_key, fleet, enrolment, access, members_seen } = old;
        Self {
            releases: migrate(releases),
            active,
            by_idempotency_key,
            fleet,
            enrolment,
            access,
            members_seen,
            history: BTreeMap::new(),
            policy: PolicyState::default(),
        }
    }
}

/// The state as format 4 wrote it (release events without terms).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateV4 {
    releases: BTreeMap<ReleaseId, ReleaseRecordV4>,
    active: BTreeSet<ReleaseId>,
    by_idempotency_key: BTreeMap<String, ReleaseId>,
    fleet: FleetState,
    enrolment: EnrolmentState,
    access: AccessState,
}

impl From<StateV4> for State {
    fn from(old: StateV4) -> Self {
        let StateV4 { releases, active, by_idempotency_key, fleet, enrolment, access } = old;
        // Which members held a log was not recorded: the leader records each again
        // as soon as it acknowledges an entry.
        Self {
            releases: migrate(releases),
            active,
            by_idempotency_key,
            fleet,
            enrolment,
            access,
            members_seen: BTreeSet::new(),
            history: BTreeMap::new(),
            policy: PolicyState::default(),
        }
    }
}

/// The audit list formats 2 and 3 declared (never written to: always empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntryV3 {
    at_unix_ms: i64,
    actor: String,
    action: String,
}

/// The state as format 3 wrote it (before operator tokens and the audit trail).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateV3 {
    releases: BTreeMap<ReleaseId, ReleaseRecordV4>,
    active: BTreeSet<ReleaseId>,
    by_idempotency_key: BTreeMap<String, ReleaseId>,
    fleet: FleetState,
    audit: Vec<AuditEntryV3>,
    enrolment: EnrolmentState,
}

impl From<StateV3> for State {
    fn from(old: StateV3) -> Self {
        let StateV3 { releases, active, by_idempotency_key, fleet, audit: _, enrolment } = old;
        StateV4 { releases, active, by_idempotency_key, fleet, enrolment, access: AccessState::default() }.into()
    }
}

/// The state as format 2 wrote it (before enrolment).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateV2 {
    releases: BTreeMap<ReleaseId, ReleaseRecordV4>,
    active: BTreeSet<ReleaseId>,
    by_idempotency_key: BTreeMap<String, ReleaseId>,
    fleet: FleetState,
    audit: Vec<AuditEntryV3>,
}

impl From<StateV2> for State {
    fn from(old: StateV2) -> Self {
        let StateV2 { releases, active, by_idempotency_key, fleet, audit } = old;
        StateV3 { releases, active, by_idempotency_key, fleet, audit, enrolment: EnrolmentState::default() }.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::codec;
    use crate::state::{Command, NewRelease, Op};

    /// A format-4 snapshot state (events without terms) reads back as the same releases
    /// with every event's term unknown (0).
    #[test]
    fn format_4_events_migrate_with_no_term() {
        let mut state = State::default();
        let create = Command {
            at_unix_ms: 10,
            op: Op::CreateRelease(NewRelease {
                id: "r-1".into(),
                name: "shop".into(),
                file_name: "shop.toml".into(),
                spec_text: String::new(),
                fleet: StoredFleet::default(),
                idempotency_key: String::new(),
                created_by: "ops".into(),
            }),
        };
        state.apply(1, 7, &create);
        let now = state.release("r-1").expect("created").clone();
        assert_eq!(now.run.events[0].term, 7, "a committed event carries its entry's term");

        // The same release as format 4 wrote it.
        let e = &now.run.events[0];
        let old = StateV4 {
            releases: BTreeMap::from([(
                "r-1".to_owned(),
                ReleaseRecordV4 {
                    id: now.submitted.id.clone(),
                    name: now.submitted.name.clone(),
                    file_name: now.submitted.file_name.clone(),
                    spec_text: now.submitted.spec_text.clone(),
                    fleet_json: String::new(),
                    idempotency_key: now.submitted.idempotency_key.clone(),
                    created_by: now.submitted.created_by.clone(),
                    created_unix_ms: now.created_unix_ms,
                    created_index: now.created_index,
                    run: RunV4 {
                        version: now.run.version,
                        next_command: now.run.next_command,
                        phase: now.run.phase,
                        paused: None,
                        reason: now.run.reason.clone(),
                        stage: now.run.stage,
                        stages: Vec::new(),
                        steps: BTreeMap::new(),
                        migrated: Vec::new(),
                        approvals: Vec::new(),
                        failure: None,
                        rollback: None,
                        events: vec![EventV4 {
                            index: e.index,
                            at_unix_ms: e.at_unix_ms,
                            kind: e.kind,
                            message: e.message.clone(),
                            stage: e.stage.clone(),
                            services: Vec::new(),
                            gate: String::new(),
                            batch: String::new(),
                            hosts: Vec::new(),
                            command_ids: Vec::new(),
                            version: String::new(),
                            actor: e.actor.clone(),
                            status: e.status,
                        }],
                        updated_unix_ms: now.run.updated_unix_ms,
                        finished_unix_ms: now.run.finished_unix_ms,
                    },
                },
            )]),
            active: BTreeSet::from(["r-1".to_owned()]),
            ..StateV4::default()
        };
        let bytes = codec::encode(&old).expect("encodes");
        let migrated: State = codec::decode::<StateV4>(&bytes).expect("a format-4 state decodes").into();
        let mut expected = now;
        expected.run.events[0].term = 0;
        assert_eq!(migrated.release("r-1"), Some(&expected));
    }

    /// A format-6 snapshot state keeps each release's planning fleet as JSON: it reads
    /// back with the fleet typed and the same plan, and with no compacted releases.
    #[test]
    fn format_6_fleets_migrate_to_the_typed_form() {
        use flotilla_shared::fixtures::{fleet, host};
        let hosts = fleet(vec![host("h-1", &[("zone", "a")], &[("api", "1.0.0")]), host("h-2", &[], &[])]);
        let spec = format!(
            "release = \"shop\"\n[[service]]\nname = \"api\"\nversion = \"2.0.0\"\n\
             artifact = {{ url = \"https://a.example/api.tar.gz\", sha256 = \"{}\" }}\n\
             run = {{ command = \"bin/api\" }}\n",
            "0".repeat(64)
        );
        let old = ReleaseRecordV6 {
            id: "r-1".into(),
            name: "shop".into(),
            file_name: "shop.toml".into(),
            spec_text: spec.clone(),
            fleet_json: serde_json::to_string(&hosts).unwrap(),
            idempotency_key: "k".into(),
            created_by: "ops".into(),
            created_unix_ms: 5,
            created_index: 3,
            run: Run::new().into(),
            footprint: Footprint::new(),
        };
        let v6 = StateV6 {
            releases: BTreeMap::from([("r-1".to_owned(), old)]),
            active: BTreeSet::from(["r-1".to_owned()]),
            by_idempotency_key: BTreeMap::from([("k".to_owned(), "r-1".to_owned())]),
            ..StateV6::default()
        };
        let bytes = codec::encode(&v6).unwrap();
        let state: State = codec::decode::<StateV6>(&bytes).expect("a format-6 state decodes").into();
        let r = state.release("r-1").expect("kept");
        assert_eq!(r.submitted.fleet.to_fleet(), Ok(hosts));
        assert_eq!((r.submitted.spec_text.as_str(), r.created_index), (spec.as_str(), 3));
        assert_eq!(r.plan().expect("plans").0.footprint().len(), 1, "api is deployed");
        assert_eq!(state.release_by_key("k").map(|r| r.id().as_str()), Some("r-1"));
        assert_eq!(state.history().count(), 0);
    }

    /// A format-7 snapshot state (runs without canary analyses) reads back as the same
    /// state, every run with no analyses.
    #[test]
    fn format_7_runs_migrate_with_no_analyses() {
        let mut now = State::default();
        let create = Command {
            at_unix_ms: 10,
            op: Op::CreateRelease(NewRelease {
                id: "r-1".into(),
                name: "shop".into(),
                file_name: "shop.toml".into(),
                spec_text: String::new(),
                fleet: StoredFleet::default(),
                idempotency_key: "k".into(),
                created_by: "ops".into(),
            }),
        };
        now.apply(1, 7, &create);
        let v7 = StateV7 {
            releases: now
                .releases
                .iter()
                .map(|(id, r)| {
                    let old = ReleaseRecordV7 {
                        submitted: r.submitted.clone(),
                        created_unix_ms: r.created_unix_ms,
                        created_index: r.created_index,
                        run: r.run.clone().into(),
                        footprint: r.footprint.clone(),
                    };
                    (id.clone(), old)
                })
                .collect(),
            active: now.active.clone(),
            by_idempotency_key: now.by_idempotency_key.clone(),
            fleet: now.fleet.clone(),
            enrolment: now.enrolment.clone(),
            access: now.access.clone(),
            members_seen: now.members_seen.clone(),
            history: now.history.iter().map(|(id, c)| (id.clone(), c.clone().into())).collect(),
        };
        let bytes = codec::encode(&v7).unwrap();
        let back: State = codec::decode::<StateV7>(&bytes).expect("a format-7 state decodes").into();
        assert_eq!(back, now);
        assert!(back.release("r-1").expect("kept").run.analyses.is_empty());
        assert!(codec::decode::<State>(&bytes).is_err(), "format 7 is not the current layout");
    }
}
