//! Release history and its retention: finished releases the cluster no longer keeps
//! whole are compacted to a [`CompactedRelease`] (outcome, versions, timings, who),
//! their events, steps, spec and planning fleet dropped, so the state's memory and
//! snapshots stay flat however many releases the cluster has run.
//!
//! Like the audit trail's, the retention travels in the command
//! ([`super::Op::CompactReleases`]): the leader proposes it with its own configuration
//! and every replica compacts exactly the same releases.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use flotilla_shared::model::ServiceName;

use super::{ReleaseId, ReleaseRecord};
use crate::engine::{EventKind, HostState, Phase, ServiceState, Terminal};

/// How much release history every replica keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRetention {
    /// Finished releases kept whole (with their events, steps and spec), the most
    /// recently finished first; older ones are compacted.
    pub max_finished: u64,
    /// Finished releases whose end is older than this (milliseconds) are compacted
    /// whatever their number; 0 keeps them by number only.
    pub max_age_ms: u64,
    /// Compacted releases kept; the oldest beyond it are forgotten.
    pub max_compacted: u64,
}

impl Default for ReleaseRetention {
    fn default() -> Self {
        Self { max_finished: 100, max_age_ms: 30 * 24 * 3_600_000, max_compacted: 10_000 }
    }
}

/// What history keeps of a finished release once its full record is dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactedRelease {
    /// Its id.
    pub id: ReleaseId,
    /// The release name from the spec.
    pub name: String,
    /// The spec's file name.
    pub file_name: String,
    /// Who submitted it; empty when unknown.
    pub created_by: String,
    /// When it was submitted (leader's clock).
    pub created_unix_ms: i64,
    /// The Raft log index it was committed at.
    pub created_index: u64,
    /// When it finished.
    pub finished_unix_ms: i64,
    /// How it ended.
    pub outcome: Terminal,
    /// Why it ended as it did (the run's last reason).
    pub reason: String,
    /// The index of its last event: how many events it had.
    pub last_event_index: u64,
    /// What each stage did to each service.
    pub services: Vec<ServiceOutcome>,
    /// Who acted on it while it ran (approvals, pauses, aborts, rollbacks, notes), in
    /// the order they first did.
    pub actors: Vec<String>,
    /// When it was compacted.
    pub compacted_unix_ms: i64,
    /// When the change it shipped was made (the spec's `changed_at`); 0 when the spec
    /// did not say (or a format 8 build compacted it).
    pub changed_unix_ms: i64,
}

/// One service of one stage of a compacted release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceOutcome {
    /// The stage.
    pub stage: String,
    /// The service.
    pub service: ServiceName,
    /// The version the release deployed; empty when the run never resolved it.
    pub version: String,
    /// The versions its hosts ran before, each once, sorted.
    pub from_versions: Vec<String>,
    /// Where the service ended.
    pub state: ServiceState,
    /// Hosts it was to reach.
    pub hosts: u32,
    /// Hosts that took it.
    pub hosts_done: u32,
    /// Hosts where it failed.
    pub hosts_failed: u32,
    /// When it reached its final state in the stage; 0 when it never did (or a format 8
    /// build compacted it).
    pub finished_unix_ms: i64,
}

impl CompactedRelease {
    /// The summary of finished release `r`, compacted at `at`.
    pub fn of(r: &ReleaseRecord, at: i64) -> Self {
        let changed_unix_ms = changed_at(r);
        let run = &r.run;
        let outcome = match run.phase {
            Phase::Finished(t) => t,
            // Only finished releases are compacted; a run that is not is recorded as
            // failed rather than invented as a success.
            _ => Terminal::Failed,
        };
        let count = |hosts: &BTreeMap<_, HostState>, f: fn(&HostState) -> bool| {
            u32::try_from(hosts.values().filter(|h| f(h)).count()).unwrap_or(u32::MAX)
        };
        let services = run
            .stages
            .iter()
            .flat_map(|st| {
                st.services.iter().map(|(name, s)| {
                    let mut from_versions: Vec<String> = s.from.values().filter_map(Clone::clone).collect();
                    from_versions.sort();
                    from_versions.dedup();
                    ServiceOutcome {
                        stage: st.name.clone(),
                        service: name.clone(),
                        version: s.version.clone(),
                        from_versions,
                        state: s.state,
                        hosts: u32::try_from(s.hosts.len()).unwrap_or(u32::MAX),
                        hosts_done: count(&s.hosts, |h| matches!(h, HostState::Done)),
                        hosts_failed: count(&s.hosts, |h| matches!(h, HostState::Failed(_))),
                        finished_unix_ms: s.finished_unix_ms,
                    }
                })
            })
            .collect();
        let mut actors: Vec<String> = Vec::new();
        for e in &run.events {
            let acted = !matches!(e.kind, EventKind::ReleaseCreated);
            if acted && !e.actor.is_empty() && !actors.contains(&e.actor) {
                actors.push(e.actor.clone());
            }
        }
        Self {
            id: r.submitted.id.clone(),
            name: r.submitted.name.clone(),
            file_name: r.submitted.file_name.clone(),
            created_by: r.submitted.created_by.clone(),
            created_unix_ms: r.created_unix_ms,
            created_index: r.created_index,
            finished_unix_ms: run.finished_unix_ms,
            outcome,
            reason: run.reason.clone(),
            last_event_index: run.last_event_index(),
            services,
            actors,
            compacted_unix_ms: at,
            changed_unix_ms,
        }
    }
}

/// When the change release `r` ships was made (its spec's `changed_at`); 0 when the
/// spec does not say.
pub fn changed_at(r: &ReleaseRecord) -> i64 {
    let source = flotilla_shared::spec::SourceFile::new(&r.submitted.file_name, &r.submitted.spec_text);
    flotilla_shared::spec::parse(&source).ok().and_then(|spec| spec.changed_unix_ms).unwrap_or(0)
}

/// Which finished releases `retention` no longer keeps whole at `at`, given as
/// `(id, finished_unix_ms, created_index)` in any order: all but the `max_finished`
/// most recently finished, and any that finished longer ago than `max_age_ms`.
pub(super) fn beyond<'a>(
    finished: impl Iterator<Item = (&'a ReleaseId, i64, u64)>,
    at: i64,
    retention: &ReleaseRetention,
) -> Vec<ReleaseId> {
    let mut finished: Vec<(&ReleaseId, i64, u64)> = finished.collect();
    // Most recently finished first; ties by creation, newest first (deterministic).
    finished.sort_by_key(|&(_, finished_at, created)| std::cmp::Reverse((finished_at, created)));
    let keep = usize::try_from(retention.max_finished).unwrap_or(usize::MAX);
    let oldest =
        (retention.max_age_ms > 0).then(|| at.saturating_sub(i64::try_from(retention.max_age_ms).unwrap_or(i64::MAX)));
    finished
        .into_iter()
        .enumerate()
        .filter(|(rank, (_, finished_at, _))| *rank >= keep || oldest.is_some_and(|o| *finished_at < o))
        .map(|(_, (id, _, _))| id.clone())
        .collect()
}

/// The compacted releases `retention` no longer keeps: the oldest-created beyond
/// `max_compacted`.
pub(super) fn forgotten(
    history: &BTreeMap<ReleaseId, CompactedRelease>,
    retention: &ReleaseRetention,
) -> Vec<ReleaseId> {
    let keep = usize::try_from(retention.max_compacted).unwrap_or(usize::MAX);
    if history.len() <= keep {
        return Vec::new();
    }
    let mut by_age: Vec<(u64, &ReleaseId)> = history.values().map(|c| (c.created_index, &c.id)).collect();
    by_age.sort();
    by_age.into_iter().take(history.len() - keep).map(|(_, id)| id.clone()).collect()
}
