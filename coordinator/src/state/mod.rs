//! Flotilla's replicated state: the commands the leader proposes, and their
//! deterministic application to releases (their runs and histories), the fleet,
//! enrolment, operator tokens and the audit trail.
//!
//! Apply is a pure function of the state and the entry: it never reads a clock or a
//! random source. The leader stamps the time (`Command::at_unix_ms`) and every id into
//! the command before proposing it, so every node applies the same thing the same way.
//!
//! Encoding rule for every type stored here: serde's default representations only
//! (externally tagged enums; no `tag`, `untagged`, `flatten` or skipped fields), so the
//! log and snapshots can use a compact non-self-describing binary codec.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use flotilla_shared::model::{HostId, ServiceName};

use crate::engine::{EventKind, Fact, Phase, Refusal, Run, Terminal};
use crate::plans::{PlanCell, Planned, StoredFleet};

mod access;
mod enrolment;
mod fleet;
mod history;
mod legacy;
mod policy;

pub use access::{AccessOp, AccessState, AuditBatch, AuditRecord, OperatorTokenRecord, Retention, RoleRecord};
pub use enrolment::{EnrolmentOp, EnrolmentRefusal, EnrolmentState, HostEnrolment, JoinTokenRecord, glob_matches};
pub use fleet::{AgentRecord, FleetEvent, FleetOp, FleetState};
pub use history::{CompactedRelease, ReleaseRetention, ServiceOutcome, changed_at};
pub use legacy::{NewReleaseV6, StateV2, StateV3, StateV4, StateV6, StateV7, StateV8, StateV9};
pub use policy::{
    Hook, HookFailure, HookFormat, HookRecord, MAX_HOOKS, MAX_WINDOWS, NotifyKind, PolicyOp, PolicyState, WindowRecord,
    valid_name,
};

/// The id of a release, assigned by the leader (`r-…`).
pub type ReleaseId = String;

/// One command, as proposed by the leader and stored in the Raft log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// When the leader proposed it, in milliseconds since the Unix epoch.
    pub at_unix_ms: i64,
    /// What to do.
    pub op: Op,
}

/// The operations of the state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// A release submission as formats 6 and older proposed it, with the planning
    /// fleet as JSON: applied as [`Op::CreateRelease`] when an older log holds one;
    /// never proposed.
    CreateReleaseV6(NewReleaseV6),
    /// A fact about a release: an engine decision, an agent's report, an operator action.
    Release {
        /// The release.
        release: ReleaseId,
        /// For engine decisions: the run version the decision was made against; the
        /// fact is refused if the run has moved on. `None` for inputs (reports,
        /// operator actions), which are checked on their own terms.
        expect: Option<u64>,
        /// The fact.
        fact: Fact,
    },
    /// A change to the fleet (agents registered, lost, back).
    Fleet(FleetOp),
    /// Append records to the audit trail. (Format 3 declared this variant with other
    /// fields but no build ever proposed it, so no log holds one.)
    Audit(AuditBatch),
    /// Several operations committed as one log entry and applied in order, each on its
    /// own terms (one refused does not undo or stop the others): how the leader commits
    /// the agents' reports that arrive together, one round trip for all of them.
    Batch(Vec<Op>),
    /// A change to join tokens or enrolled hosts.
    Enrolment(EnrolmentOp),
    /// A change to operator tokens.
    Access(AccessOp),
    /// Coordinators the leader has seen hold a log (each acknowledged an entry): a
    /// member the cluster has seen and that starts again with no Raft state lost its
    /// data, and stays out of Raft until it is removed and added again.
    MembersSeen(BTreeSet<u64>),
    /// Submit a release. A second submission with the same idempotency key and the
    /// same spec text returns the first release instead of creating another; with
    /// another spec it is refused ([`Response::KeyReused`]).
    CreateRelease(NewRelease),
    /// Compact the finished releases this retention no longer keeps whole (and
    /// forget the compacted ones beyond it); see [`CompactedRelease`].
    CompactReleases(ReleaseRetention),
    /// A change to the release policy (deployment windows).
    Policy(PolicyOp),
}

/// A release submission, as the leader proposes it and the state keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRelease {
    /// The id the leader chose.
    pub id: ReleaseId,
    /// The client's idempotency key; empty means none.
    pub idempotency_key: String,
    /// The release name from the spec.
    pub name: String,
    /// The spec's file name, for error messages.
    pub file_name: String,
    /// The spec's text, as submitted.
    pub spec_text: String,
    /// The fleet the release was planned against: the plan is rebuilt from the spec
    /// and this, identically, on any leader.
    pub fleet: StoredFleet,
    /// Who submitted it; empty when unknown.
    pub created_by: String,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::CreateRelease(r) => write!(f, "create release {} as {}", r.name, r.id),
            Op::CreateReleaseV6(r) => write!(f, "create release {} as {}", r.name, r.id),
            Op::CompactReleases(retention) => write!(
                f,
                "compact finished releases beyond {} (or {} old)",
                retention.max_finished,
                flotilla_shared::model::format_duration(std::time::Duration::from_millis(retention.max_age_ms))
            ),
            Op::Release { release, fact, .. } => write!(f, "{release}: {fact}"),
            Op::Fleet(op) => op.fmt(f),
            Op::Audit(batch) => write!(f, "{} audit records", batch.records.len()),
            Op::Enrolment(op) => op.fmt(f),
            Op::Access(op) => op.fmt(f),
            Op::MembersSeen(ids) => write!(f, "coordinators {ids:?} hold a log"),
            Op::Policy(op) => op.fmt(f),
            Op::Batch(ops) => match ops.as_slice() {
                [] => write!(f, "an empty batch"),
                [one] => one.fmt(f),
                [first, rest @ ..] => write!(f, "{first} and {} more", rest.len()),
            },
        }
    }
}

/// What applying a command produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Membership changes and blank entries.
    #[default]
    None,
    /// A release submission: the release that stands for it.
    Release {
        /// Its id.
        id: ReleaseId,
        /// `false` when the idempotency key matched an earlier submission.
        created: bool,
    },
    /// A release fact was applied; the run is now at this version.
    Applied {
        /// The run's version after the fact.
        version: u64,
        /// What the leader must do now that the fact holds (steps to send or cancel).
        actions: Vec<crate::engine::Action>,
    },
    /// A fact about a release was refused by the engine; the run did not change.
    FactRefused(Refusal),
    /// A fact named a release this state does not hold.
    NoRelease {
        /// The release named.
        id: ReleaseId,
    },
    /// The command was refused; the state did not change.
    Refused {
        /// Why.
        reason: String,
    },
    /// Done, nothing to report.
    Done,
    /// The responses to the operations of a batch, in their order.
    Batch(Vec<Response>),
    /// A release submission whose idempotency key stands for another release with a
    /// different spec; nothing was created.
    KeyReused {
        /// The release the key stands for.
        id: ReleaseId,
    },
    /// A join, renewal, revocation or forget was refused; the state did not change.
    EnrolmentRefused(EnrolmentRefusal),
    /// A release submission (or the rollback of a finished release) was refused: an
    /// unfinished release deploys one of the same services to one of the same hosts.
    ReleaseConflict(ReleaseConflict),
    /// Finished releases were compacted (and compacted ones forgotten).
    Compacted {
        /// The releases compacted, oldest first.
        compacted: Vec<ReleaseId>,
        /// How many compacted releases were forgotten.
        forgotten: u64,
    },
}

impl Response {
    /// Why the command was not applied, for a refusal of the state or the engine.
    pub fn refused_why(&self) -> Option<String> {
        match self {
            Response::Refused { reason } => Some(reason.clone()),
            Response::FactRefused(refusal) => Some(refusal.to_string()),
            Response::NoRelease { id } => Some(format!("no release {id}")),
            _ => None,
        }
    }
}

/// Two releases that would deploy a service to a host at the same time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseConflict {
    /// The unfinished release in the way.
    pub release: ReleaseId,
    /// The services both deploy, each with the hosts both deploy it to.
    pub overlap: Vec<(ServiceName, Vec<HostId>)>,
}

impl fmt::Display for ReleaseConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .overlap
            .iter()
            .map(|(s, hosts)| format!("{s} to {}", crate::engine::join_hosts(hosts.iter())))
            .collect();
        write!(
            f,
            "release {} has not finished and also deploys {}; releases of a service to a host never overlap: \
             submit again once it has finished, or abort it",
            self.release,
            parts.join("; ")
        )
    }
}

/// What a release deploys where (`Plan::footprint`).
pub type Footprint = BTreeMap<ServiceName, BTreeSet<HostId>>;

/// The footprint of a release planned as `planned` (a release that no longer plans
/// touches nothing).
pub(crate) fn footprint_of(planned: &Result<Planned, String>) -> Footprint {
    planned.as_ref().map(|p| p.0.footprint()).unwrap_or_default()
}

/// A submitted release as the state machine keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRecord {
    /// The submission, as proposed (id, name, spec, planning fleet, who).
    pub submitted: NewRelease,
    /// When it was submitted (leader's clock).
    pub created_unix_ms: i64,
    /// The Raft log index it was committed at.
    pub created_index: u64,
    /// Its execution state.
    pub run: Run,
    /// What it deploys where: no other unfinished release may deploy one of these
    /// services to one of these hosts.
    pub footprint: Footprint,
    /// Its plan, built once (not stored; see [`ReleaseRecord::plan`]).
    #[serde(skip)]
    pub planned: PlanCell,
}

impl ReleaseRecord {
    /// Its plan and the fleet it was planned against (the leader planned the same text
    /// against the same fleet when it accepted the release, so this fails only for a
    /// release stored by a build that planned differently). Built once and kept while
    /// the release runs; a finished release's is built for each call and not kept, so
    /// history costs no memory for plans.
    pub fn plan(&self) -> Result<Planned, String> {
        let s = &self.submitted;
        if self.run.is_finished() {
            return crate::plans::replan(&s.spec_text, &s.file_name, &s.fleet).map(Arc::new);
        }
        self.planned.get(&s.spec_text, &s.file_name, &s.fleet)
    }

    /// Its id.
    pub fn id(&self) -> &ReleaseId {
        &self.submitted.id
    }
}

/// The whole replicated state. Serialized as a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    releases: BTreeMap<ReleaseId, ReleaseRecord>,
    /// Releases that have not finished: what the engine looks at.
    active: BTreeSet<ReleaseId>,
    by_idempotency_key: BTreeMap<String, ReleaseId>,
    fleet: FleetState,
    enrolment: EnrolmentState,
    access: AccessState,
    /// Coordinators the cluster has seen hold a log, among its current members.
    members_seen: BTreeSet<u64>,
    /// Finished releases compacted by the retention, by id.
    history: BTreeMap<ReleaseId, CompactedRelease>,
    /// Deployment windows.
    policy: PolicyState,
}

impl State {
    /// Applies one command committed at `log_index` by the leader of `term` (release
    /// events record that term). Deterministic: the result depends only on `self`,
    /// `log_index`, `term` and `cmd`.
    pub fn apply(&mut self, log_index: u64, term: u64, cmd: &Command) -> Response {
        self.apply_op(log_index, term, cmd.at_unix_ms, &cmd.op)
    }

    fn apply_op(&mut self, log_index: u64, term: u64, at: i64, op: &Op) -> Response {
        match op {
            Op::CreateReleaseV6(old) => self.create(log_index, term, at, &NewRelease::from(old)),
            Op::CreateRelease(new) => self.create(log_index, term, at, new),
            Op::CompactReleases(retention) => self.compact(at, retention),
            Op::Release { release, expect, fact } => {
                let Some(record) = self.releases.get_mut(release) else {
                    if self.history.contains_key(release) {
                        return Response::FactRefused(Refusal::Invalid(format!(
                            "release {release} finished and was compacted: the cluster keeps only its summary"
                        )));
                    }
                    return Response::NoRelease { id: release.clone() };
                };
                // A finished release that rolls back deploys again: not over another.
                if record.run.phase == Phase::Finished(Terminal::Succeeded)
                    && matches!(fact, Fact::RollbackDecided { .. })
                    && let Some(conflict) = {
                        let footprint = record.footprint.clone();
                        self.conflict(&footprint, release)
                    }
                {
                    return Response::ReleaseConflict(conflict);
                }
                let Some(record) = self.releases.get_mut(release) else {
                    return Response::NoRelease { id: release.clone() };
                };
                match record.run.apply_committed(at, term, *expect, fact) {
                    Ok(actions) => {
                        // A finished release can start again (an operator's rollback).
                        if record.run.is_finished() {
                            record.planned = PlanCell::default();
                            self.active.remove(release);
                        } else {
                            self.active.insert(release.clone());
                        }
                        Response::Applied { version: record.run.version, actions }
                    }
                    Err(refusal) => Response::FactRefused(refusal),
                }
            }
            Op::Fleet(op) => self.fleet.apply(at, op),
            Op::Audit(batch) => self.access.record(at, batch),
            Op::Batch(ops) => Response::Batch(ops.iter().map(|op| self.apply_op(log_index, term, at, op)).collect()),
            Op::Enrolment(op) => self.enrolment.apply(at, op),
            Op::Access(op) => self.access.apply(at, op),
            Op::MembersSeen(ids) => {
                self.members_seen.extend(ids);
                Response::None
            }
            Op::Policy(op) => self.policy.apply(at, op),
        }
    }

    /// Creates release `new` (or answers with the one its idempotency key stands for).
    fn create(&mut self, log_index: u64, term: u64, at: i64, new: &NewRelease) -> Response {
        if !new.idempotency_key.is_empty()
            && let Some(existing) = self.by_idempotency_key.get(&new.idempotency_key)
        {
            let same_spec = self.releases.get(existing).is_some_and(|r| r.submitted.spec_text == new.spec_text);
            return if same_spec {
                Response::Release { id: existing.clone(), created: false }
            } else {
                Response::KeyReused { id: existing.clone() }
            };
        }
        if self.releases.contains_key(&new.id) || self.history.contains_key(&new.id) {
            return Response::Refused { reason: format!("release id {} is taken", new.id) };
        }
        let planned = crate::plans::replan(&new.spec_text, &new.file_name, &new.fleet).map(Arc::new);
        let footprint = footprint_of(&planned);
        if let Some(conflict) = self.conflict(&footprint, &new.id) {
            return Response::ReleaseConflict(conflict);
        }
        let mut run = Run::new();
        let by = if new.created_by.is_empty() { String::new() } else { format!(" by {}", new.created_by) };
        let e = run.record(
            at,
            EventKind::ReleaseCreated,
            format!("release {} ({}) submitted as {}{by}", new.name, new.file_name, new.id),
        );
        e.term = term;
        if !new.created_by.is_empty() {
            e.actor = new.created_by.clone();
        }
        self.releases.insert(
            new.id.clone(),
            ReleaseRecord {
                submitted: new.clone(),
                created_unix_ms: at,
                created_index: log_index,
                run,
                footprint,
                planned: PlanCell::built(planned),
            },
        );
        if !new.idempotency_key.is_empty() {
            self.by_idempotency_key.insert(new.idempotency_key.clone(), new.id.clone());
        }
        self.active.insert(new.id.clone());
        Response::Release { id: new.id.clone(), created: true }
    }

    /// Compacts the finished releases `retention` no longer keeps whole at `at`, then
    /// forgets the compacted releases beyond it.
    fn compact(&mut self, at: i64, retention: &ReleaseRetention) -> Response {
        let mut compacted = Vec::new();
        for id in self.compactable(at, retention) {
            let Some(record) = self.releases.remove(&id) else { continue };
            let key = &record.submitted.idempotency_key;
            if !key.is_empty() && self.by_idempotency_key.get(key) == Some(&id) {
                self.by_idempotency_key.remove(key);
            }
            self.history.insert(id.clone(), CompactedRelease::of(&record, at));
            self.policy.forget_release(&id);
            compacted.push((record.created_index, id));
        }
        compacted.sort();
        let forgotten = history::forgotten(&self.history, retention);
        for id in &forgotten {
            self.history.remove(id);
        }
        Response::Compacted {
            compacted: compacted.into_iter().map(|(_, id)| id).collect(),
            forgotten: forgotten.len() as u64,
        }
    }

    /// The finished releases `retention` no longer keeps whole at `at`: what an
    /// [`Op::CompactReleases`] would compact now.
    pub fn compactable(&self, at: i64, retention: &ReleaseRetention) -> Vec<ReleaseId> {
        let finished = self
            .releases
            .values()
            .filter(|r| r.run.is_finished() && !self.active.contains(r.id()))
            .map(|r| (r.id(), r.run.finished_unix_ms, r.created_index));
        history::beyond(finished, at, retention)
    }

    /// Whether an [`Op::CompactReleases`] with `retention` would change anything at `at`.
    pub fn needs_compaction(&self, at: i64, retention: &ReleaseRetention) -> bool {
        !self.compactable(at, retention).is_empty()
            || u64::try_from(self.history.len()).unwrap_or(u64::MAX) > retention.max_compacted
    }

    /// A compacted release by id.
    pub fn compacted(&self, id: &str) -> Option<&CompactedRelease> {
        self.history.get(id)
    }

    /// Every compacted release, by id.
    pub fn history(&self) -> impl Iterator<Item = &CompactedRelease> {
        self.history.values()
    }

    /// Forgets the coordinators that are not in `members` (a membership change
    /// removed them): one added again later is seen anew.
    pub fn keep_members_seen(&mut self, members: &BTreeSet<u64>) {
        self.members_seen.retain(|id| members.contains(id));
    }

    /// Coordinators the cluster has seen hold a log.
    pub fn members_seen(&self) -> &BTreeSet<u64> {
        &self.members_seen
    }

    /// The first unfinished release other than `except` that deploys a service of
    /// `footprint` to one of its hosts, with what they share.
    fn conflict(&self, footprint: &Footprint, except: &str) -> Option<ReleaseConflict> {
        // A release that deploys nothing (every host at its target) meets no other.
        if footprint.is_empty() {
            return None;
        }
        self.active.iter().filter(|id| id.as_str() != except).find_map(|id| {
            let other = &self.releases.get(id)?.footprint;
            let overlap: Vec<(ServiceName, Vec<HostId>)> = footprint
                .iter()
                .filter_map(|(service, hosts)| {
                    let theirs = other.get(service)?;
                    let shared: Vec<HostId> = hosts.intersection(theirs).cloned().collect();
                    (!shared.is_empty()).then(|| (service.clone(), shared))
                })
                .collect();
            (!overlap.is_empty()).then(|| ReleaseConflict { release: id.clone(), overlap })
        })
    }

    /// A release by id.
    pub fn release(&self, id: &str) -> Option<&ReleaseRecord> {
        self.releases.get(id)
    }

    /// The release an idempotency key stands for.
    pub fn release_by_key(&self, idempotency_key: &str) -> Option<&ReleaseRecord> {
        self.by_idempotency_key.get(idempotency_key).and_then(|id| self.releases.get(id))
    }

    /// Every release, oldest first (releases created in one shared log entry, by id).
    pub fn releases(&self) -> impl Iterator<Item = &ReleaseRecord> {
        let mut all: Vec<&ReleaseRecord> = self.releases.values().collect();
        // Stable: ties keep the map's order, by id.
        all.sort_by_key(|r| r.created_index);
        all.into_iter()
    }

    /// Releases that have not finished, by id.
    pub fn active_releases(&self) -> impl Iterator<Item = &ReleaseRecord> {
        self.active.iter().filter_map(|id| self.releases.get(id))
    }

    /// The fleet: every host's agent.
    pub fn fleet(&self) -> &FleetState {
        &self.fleet
    }

    /// Operator tokens and the audit trail.
    pub fn access(&self) -> &AccessState {
        &self.access
    }

    /// The release policy (deployment windows).
    pub fn policy(&self) -> &PolicyState {
        &self.policy
    }

    /// How many events of the releases kept whole `hook` is still to be told about.
    pub fn undelivered(&self, hook: &HookRecord) -> u64 {
        self.releases.values().map(|r| hook.pending(r.id(), &r.run.events).count() as u64).sum()
    }

    /// Join tokens and enrolled hosts.
    pub fn enrolment(&self) -> &EnrolmentState {
        &self.enrolment
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Fact, Terminal};

    fn create(id: &str, key: &str) -> Command {
        Command {
            at_unix_ms: 1_000,
            op: Op::CreateRelease(NewRelease {
                id: id.to_owned(),
                idempotency_key: key.to_owned(),
                name: "shop".to_owned(),
                file_name: "shop.toml".to_owned(),
                spec_text: "release = \"shop\"".to_owned(),
                ..NewRelease::default()
            }),
        }
    }

    /// A release of `services` (each `name=version`, on every host) planned against
    /// `hosts`.
    fn create_on(id: &str, services: &[&str], hosts: &[&str]) -> Command {
        use flotilla_shared::fixtures::{fleet, host};
        let mut spec = format!("release = \"{id}\"\n");
        for s in services {
            let (name, version) = s.split_once('=').expect("name=version");
            spec.push_str(&format!(
                "[[service]]\nname = \"{name}\"\nversion = \"{version}\"\n\
                 artifact = {{ url = \"https://a.example/{name}.tar.gz\", sha256 = \"{}\" }}\n\
                 run = {{ command = \"bin/{name}\" }}\n",
                "0".repeat(64)
            ));
        }
        let fleet = fleet(hosts.iter().map(|h| host(h, &[], &[])).collect());
        Command {
            at_unix_ms: 1_000,
            op: Op::CreateRelease(NewRelease {
                id: id.to_owned(),
                name: id.to_owned(),
                file_name: format!("{id}.toml"),
                spec_text: spec,
                fleet: StoredFleet::from(&fleet),
                ..NewRelease::default()
            }),
        }
    }

    #[test]
    fn a_release_over_a_service_and_host_of_an_unfinished_one_is_refused_until_it_finishes() {
        let mut s = State::default();
        assert_eq!(
            s.apply(1, 1, &create_on("r-1", &["api=2.0.0", "web=2.0.0"], &["h-1", "h-2"])),
            Response::Release { id: "r-1".into(), created: true }
        );
        assert!(!s.release("r-1").unwrap().footprint.is_empty(), "the release knows what it deploys where");
        let Response::ReleaseConflict(conflict) = s.apply(2, 1, &create_on("r-2", &["api=3.0.0"], &["h-2", "h-3"]))
        else {
            panic!("api on h-2 is r-1's")
        };
        assert_eq!(conflict.release, "r-1");
        assert_eq!(conflict.overlap, [(ServiceName::from("api"), vec![HostId::from("h-2")])]);
        assert!(
            conflict.to_string().contains("release r-1 has not finished and also deploys api to h-2"),
            "{conflict}"
        );
        assert!(s.release("r-2").is_none(), "nothing was created");

        // Other services on the same hosts, and the same service elsewhere, go ahead.
        let other = s.apply(3, 1, &create_on("r-3", &["db=1.0.0"], &["h-1", "h-2"]));
        assert_eq!(other, Response::Release { id: "r-3".into(), created: true });
        let elsewhere = s.apply(4, 1, &create_on("r-4", &["api=3.0.0"], &["h-9"]));
        assert_eq!(elsewhere, Response::Release { id: "r-4".into(), created: true });

        // Once r-1 has finished, r-2 is accepted.
        s.apply(5, 1, &fact("r-1", None, Fact::Aborted { actor: "ops".into(), reason: "stop".into() }));
        let again = s.apply(6, 1, &create_on("r-2", &["api=3.0.0"], &["h-2", "h-3"]));
        assert_eq!(again, Response::Release { id: "r-2".into(), created: true });
    }

    /// Rolling a finished release back deploys again: refused while another release
    /// deploys one of its services to one of its hosts.
    #[test]
    fn the_rollback_of_a_finished_release_waits_for_a_release_over_the_same_hosts() {
        let mut s = State::default();
        s.apply(1, 1, &create_on("r-1", &["api=2.0.0"], &["h-1"]));
        let done = Fact::Finished { terminal: Terminal::Succeeded, reason: String::new() };
        assert!(matches!(s.apply(2, 1, &fact("r-1", None, done)), Response::Applied { .. }));
        s.apply(3, 1, &create_on("r-2", &["api=3.0.0"], &["h-1"]));
        let rollback = Fact::RollbackDecided {
            actor: "ops".into(),
            reason: "bad".into(),
            members: vec![(ServiceName::from("api"), "asked".into())],
            actions: Vec::new(),
            cancelled: Vec::new(),
        };
        let Response::ReleaseConflict(conflict) = s.apply(4, 1, &fact("r-1", None, rollback.clone())) else {
            panic!("r-2 deploys api to h-1")
        };
        assert_eq!(conflict.release, "r-2");
        assert_eq!(s.release("r-1").unwrap().run.phase, Phase::Finished(Terminal::Succeeded));
        s.apply(5, 1, &fact("r-2", None, Fact::Aborted { actor: "ops".into(), reason: "stop".into() }));
        assert!(matches!(s.apply(6, 1, &fact("r-1", None, rollback)), Response::Applied { .. }));
    }

    fn fact(release: &str, expect: Option<u64>, fact: Fact) -> Command {
        Command { at_unix_ms: 2_000, op: Op::Release { release: release.into(), expect, fact } }
    }

    #[test]
    fn an_idempotency_key_returns_the_first_release() {
        let mut s = State::default();
        assert_eq!(s.apply(1, 1, &create("r-1", "k")), Response::Release { id: "r-1".into(), created: true });
        assert_eq!(s.apply(2, 1, &create("r-2", "k")), Response::Release { id: "r-1".into(), created: false });
        assert_eq!(s.releases().count(), 1);
        assert_eq!(s.release_by_key("k").map(|r| r.id().as_str()), Some("r-1"));
        assert_eq!(s.apply(3, 1, &create("r-3", "")), Response::Release { id: "r-3".into(), created: true });
        assert_eq!(s.release("r-3").unwrap().created_index, 3);
    }

    #[test]
    fn an_idempotency_key_reused_for_another_spec_is_refused_and_changes_nothing() {
        let mut s = State::default();
        s.apply(1, 1, &create("r-1", "k"));
        let before = s.clone();
        let mut other = create("r-2", "k");
        if let Op::CreateRelease(new) = &mut other.op {
            new.spec_text = "release = \"shop\"\n# changed".to_owned();
        }
        assert_eq!(s.apply(2, 1, &other), Response::KeyReused { id: "r-1".into() });
        assert_eq!(s, before);
    }

    #[test]
    fn a_decision_against_an_old_run_version_is_refused_and_changes_nothing() {
        let mut s = State::default();
        s.apply(1, 1, &create("r-1", ""));
        let pause = |expect| fact("r-1", expect, Fact::Paused { actor: "engine".into(), reason: "x".into() });
        assert_eq!(s.apply(2, 1, &pause(Some(7))), Response::FactRefused(Refusal::Stale { expected: 7, version: 0 }));
        assert_eq!(s.release("r-1").unwrap().run.version, 0);
        assert_eq!(s.apply(3, 1, &pause(Some(0))), Response::Applied { version: 1, actions: Vec::new() });
        assert!(matches!(
            s.apply(4, 1, &fact("nope", None, Fact::Resumed { actor: "a".into(), reason: String::new() })),
            Response::NoRelease { .. }
        ));
    }

    #[test]
    fn a_batch_applies_each_operation_in_order_on_its_own_terms() {
        let mut s = State::default();
        s.apply(1, 1, &create("r-1", ""));
        let abort = Op::Release {
            release: "r-1".into(),
            expect: None,
            fact: Fact::Aborted { actor: "ops".into(), reason: "stop".into() },
        };
        let stale = Op::Release {
            release: "r-1".into(),
            expect: Some(0),
            fact: Fact::Paused { actor: "engine".into(), reason: "x".into() },
        };
        let unknown = Op::Release {
            release: "nope".into(),
            expect: None,
            fact: Fact::Resumed { actor: "a".into(), reason: String::new() },
        };
        let audit = Op::Audit(AuditBatch {
            records: vec![AuditRecord { actor: "operator ops".into(), ..AuditRecord::default() }],
            retention: Retention::default(),
        });
        let batch = Command { at_unix_ms: 3_000, op: Op::Batch(vec![abort, stale, unknown, audit]) };
        let Response::Batch(responses) = s.apply(2, 1, &batch) else { panic!("a batch answers with a batch") };
        assert_eq!(responses.len(), 4);
        assert_eq!(responses[0], Response::Applied { version: 1, actions: Vec::new() });
        // Decided against version 0, but the abort before it in the batch moved the run on.
        assert_eq!(responses[1], Response::FactRefused(Refusal::Stale { expected: 0, version: 1 }));
        assert_eq!(responses[2], Response::NoRelease { id: "nope".into() });
        assert_eq!(responses[3], Response::Done);
        assert_eq!(s.access().audit().count(), 1);
        assert_eq!(s.release("r-1").unwrap().run.events.last().unwrap().at_unix_ms, 3_000);
    }

    #[test]
    fn release_history_is_indexed_from_one() {
        let mut s = State::default();
        s.apply(1, 1, &create("r-1", ""));
        s.apply(2, 1, &fact("r-1", None, Fact::Aborted { actor: "ops".into(), reason: "stop".into() }));
        let run = &s.release("r-1").unwrap().run;
        let indexes: Vec<u64> = run.events.iter().map(|e| e.index).collect();
        assert_eq!(indexes, [1, 2]);
        assert_eq!(run.phase, Phase::Finished(Terminal::Aborted));
        assert_eq!(run.events[1].message, "aborted by ops: stop");
    }

    /// Each event records the term of the entry that committed it, so a history shows
    /// which leader decided what (the release is created in term 2, aborted in term 5).
    #[test]
    fn release_events_carry_the_term_that_committed_them() {
        let mut s = State::default();
        s.apply(1, 2, &create("r-1", ""));
        let abort = fact("r-1", None, Fact::Aborted { actor: "ops".into(), reason: "stop".into() });
        s.apply(2, 5, &Command { at_unix_ms: 2, op: Op::Batch(vec![abort.op]) });
        let terms: Vec<u64> = s.release("r-1").unwrap().run.events.iter().map(|e| e.term).collect();
        assert_eq!(terms, [2, 5]);
    }

    /// Ends release `id` at `at` (aborted by an operator).
    fn finish(s: &mut State, index: u64, id: &str, at: i64) {
        let abort = Op::Release {
            release: id.into(),
            expect: None,
            fact: Fact::Aborted { actor: "ops".into(), reason: "done with it".into() },
        };
        assert!(matches!(s.apply(index, 1, &Command { at_unix_ms: at, op: abort }), Response::Applied { .. }));
    }

    fn compact(s: &mut State, at: i64, retention: ReleaseRetention) -> Response {
        s.apply(1_000, 1, &Command { at_unix_ms: at, op: Op::CompactReleases(retention) })
    }

    /// Finished releases beyond the retention's count are compacted, the most recently
    /// finished kept whole; unfinished ones are never touched; the compacted ones keep
    /// outcome, versions, timings and who, and refuse to be acted on.
    #[test]
    fn finished_releases_beyond_the_count_are_compacted_to_their_summary() {
        let mut s = State::default();
        for i in 1..=5 {
            s.apply(i, 1, &create_on(&format!("r-{i}"), &[&format!("svc{i}=1.{i}.0")], &["h-1", "h-2"]));
        }
        // r-1..r-4 finish, r-2 last; r-5 keeps running.
        for (index, (id, at)) in [("r-1", 10), ("r-3", 20), ("r-4", 30), ("r-2", 40)].into_iter().enumerate() {
            finish(&mut s, 10 + index as u64, id, at);
        }
        let retention = ReleaseRetention { max_finished: 2, max_age_ms: 0, max_compacted: 100 };
        assert!(s.needs_compaction(50, &retention));
        assert_eq!(s.compactable(50, &retention), ["r-3", "r-1"], "all but the two most recently finished");
        let Response::Compacted { compacted, forgotten } = compact(&mut s, 50, retention) else {
            panic!("a compaction answers with what it compacted")
        };
        assert_eq!((compacted, forgotten), (vec!["r-1".to_owned(), "r-3".to_owned()], 0));
        assert!(s.release("r-1").is_none() && s.release("r-3").is_none());
        assert!(s.release("r-2").is_some() && s.release("r-4").is_some() && s.release("r-5").is_some());
        assert!(!s.needs_compaction(51, &retention), "nothing more to compact");

        let c = s.compacted("r-1").expect("a summary");
        assert_eq!(
            (c.name.as_str(), c.outcome, c.finished_unix_ms, c.created_index),
            ("r-1", Terminal::Aborted, 10, 1)
        );
        assert_eq!(c.actors, ["ops"]);
        assert_eq!(c.last_event_index, 2);
        assert_eq!(c.compacted_unix_ms, 50);
        assert_eq!(s.history().count(), 2);

        // Acting on a compacted release is refused and changes nothing; its id stays taken.
        let before = s.clone();
        let resume = Op::Release {
            release: "r-1".into(),
            expect: None,
            fact: Fact::Resumed { actor: "a".into(), reason: String::new() },
        };
        let Response::FactRefused(Refusal::Invalid(why)) = s.apply(60, 1, &Command { at_unix_ms: 60, op: resume })
        else {
            panic!("a compacted release cannot be acted on")
        };
        assert!(why.contains("release r-1 finished and was compacted"), "{why}");
        assert!(matches!(s.apply(61, 1, &create_on("r-1", &["x=1.0.0"], &["h-9"])), Response::Refused { .. }));
        assert_eq!(s, before);
    }

    /// Age compacts whatever the count, and the summaries themselves are bounded: the
    /// oldest created go first.
    #[test]
    fn old_finished_releases_are_compacted_and_the_oldest_summaries_forgotten() {
        let mut s = State::default();
        for i in 1..=4 {
            s.apply(i, 1, &create_on(&format!("r-{i}"), &[&format!("svc{i}=1.0.0")], &["h-1"]));
            finish(&mut s, 10 + i, &format!("r-{i}"), 1_000 * i as i64);
        }
        let by_age = ReleaseRetention { max_finished: 100, max_age_ms: 1_500, max_compacted: 100 };
        // At 3,600 the releases that finished before 2,100 (r-1 and r-2) are too old.
        assert_eq!(s.compactable(3_600, &by_age), ["r-2", "r-1"]);
        compact(&mut s, 3_600, by_age);
        assert_eq!(s.releases().count(), 2);
        let bounded = ReleaseRetention { max_finished: 0, max_age_ms: 0, max_compacted: 3 };
        let Response::Compacted { compacted, forgotten } = compact(&mut s, 3_700, bounded) else { panic!() };
        assert_eq!((compacted.len(), forgotten), (2, 1));
        let kept: Vec<&str> = s.history().map(|c| c.id.as_str()).collect();
        assert_eq!(kept, ["r-2", "r-3", "r-4"], "r-1, created first, is forgotten");
    }

    /// An idempotency key stands for its release while the release is kept whole; once
    /// it is compacted the key is free again.
    #[test]
    fn a_compacted_release_frees_its_idempotency_key() {
        let mut s = State::default();
        s.apply(1, 1, &create("r-1", "k"));
        finish(&mut s, 2, "r-1", 10);
        compact(&mut s, 20, ReleaseRetention { max_finished: 0, max_age_ms: 0, max_compacted: 10 });
        assert!(s.release_by_key("k").is_none());
        assert_eq!(s.apply(3, 1, &create("r-2", "k")), Response::Release { id: "r-2".into(), created: true });
    }

    /// Every replica compacts the same releases: the result depends on the command
    /// (its time and retention), never on the node.
    #[test]
    fn compaction_is_deterministic() {
        let build = || {
            let mut s = State::default();
            for i in 1..=6 {
                s.apply(i, 1, &create_on(&format!("r-{i}"), &[&format!("svc{i}=1.0.0")], &["h-1"]));
                finish(&mut s, 10 + i, &format!("r-{i}"), 100);
            }
            compact(&mut s, 200, ReleaseRetention { max_finished: 3, max_age_ms: 0, max_compacted: 2 });
            s
        };
        let (a, b) = (build(), build());
        assert_eq!(a, b);
        assert_eq!(
            a.releases().map(|r| r.id().as_str()).collect::<Vec<_>>(),
            ["r-4", "r-5", "r-6"],
            "same time: newest created kept"
        );
    }

    /// A snapshot state survives the codec with compacted releases in it.
    #[test]
    fn a_state_with_history_round_trips_through_the_codec() {
        let mut s = State::default();
        s.apply(1, 1, &create_on("r-1", &["api=2.0.0"], &["h-1", "h-2"]));
        s.apply(2, 1, &create_on("r-2", &["web=2.0.0"], &["h-1"]));
        finish(&mut s, 3, "r-1", 10);
        compact(&mut s, 20, ReleaseRetention { max_finished: 0, max_age_ms: 0, max_compacted: 10 });
        let bytes = crate::raft::codec::encode(&s).expect("encodes");
        let back: State = crate::raft::codec::decode(&bytes).expect("decodes");
        assert_eq!(back, s);
        assert_eq!(back.release("r-2").unwrap().plan().unwrap().0.footprint(), s.release("r-2").unwrap().footprint);
    }

    #[test]
    fn members_seen_holding_a_log_are_kept_until_a_membership_change_removes_them() {
        let mut s = State::default();
        s.apply(1, 1, &Command { at_unix_ms: 1, op: Op::MembersSeen(BTreeSet::from([1, 2])) });
        s.apply(2, 1, &Command { at_unix_ms: 2, op: Op::MembersSeen(BTreeSet::from([3])) });
        assert_eq!(s.members_seen(), &BTreeSet::from([1, 2, 3]));
        s.keep_members_seen(&BTreeSet::from([1, 2, 4]));
        assert_eq!(s.members_seen(), &BTreeSet::from([1, 2]), "node 3 was removed: added again, it is seen anew");
    }

    #[test]
    fn applying_the_same_log_twice_gives_the_same_state() {
        let log = [create("r-1", "k"), create("r-2", "k"), create("r-3", "")];
        let run = || {
            let mut s = State::default();
            let out: Vec<Response> = log.iter().enumerate().map(|(i, c)| s.apply(i as u64 + 1, 1, c)).collect();
            (s, out)
        };
        assert_eq!(run(), run());
    }
}
