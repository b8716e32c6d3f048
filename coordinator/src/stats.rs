//! Delivery figures, DORA's four keys, computed from the release history the state
//! keeps (finished releases kept whole and the compacted summaries of older ones, so
//! the figures survive the retention's compaction): deployment frequency, lead time,
//! change failure rate and time to restore, per service and overall, over a period.
//!
//! What counts, per service of a release that ended (aborted releases do not count):
//! - a **failed change** of a service: it failed or was rolled back in some stage;
//! - a **deployment** of a service: it reached its target (done) in every stage it ran
//!   in, and failed in none;
//! - services a release skipped everywhere (already at the target) or never started
//!   are not counted.
//!
//! **Lead time** runs from the change's time (the spec's `changed_at`, which
//! `flotilla release start --changed-at` sets) or, when the spec does not give it, from
//! the release's creation, to the service finishing its last stage; the figures say
//! how many lead times had each start. **Time to restore** runs from the end of the
//! first release of a run of failed changes of a service to the end of the next release
//! that deployed it. Pure: the state and the period come in, figures go out.

use std::collections::BTreeMap;

use flotilla_proto::v1;
use flotilla_shared::model::ServiceName;

use crate::engine::{ServiceState, Terminal};
use crate::state::{CompactedRelease, State};

/// The period figures cover when none is asked for: 30 days.
pub const DEFAULT_PERIOD_MS: i64 = 30 * 24 * 3_600_000;

/// One service's change in one ended release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The release.
    pub release: String,
    /// The service.
    pub service: ServiceName,
    /// Deployed (true) or a failed change (false).
    pub deployed: bool,
    /// When the release was created.
    pub created_unix_ms: i64,
    /// When the change was made (`changed_at`); 0 when not known.
    pub changed_unix_ms: i64,
    /// When the release ended.
    pub release_finished_unix_ms: i64,
    /// When the service finished its last stage (deployed only; 0 when not known).
    pub finished_unix_ms: i64,
}

/// The changes of every ended release the state keeps, whole or compacted.
pub fn changes(state: &State) -> Vec<Change> {
    let mut out = Vec::new();
    for r in state.releases().filter(|r| r.run.is_finished()) {
        out.extend(changes_of(&CompactedRelease::of(r, 0)));
    }
    for c in state.history() {
        out.extend(changes_of(c));
    }
    out
}

/// The changes one ended release made, one per service it changed.
pub fn changes_of(c: &CompactedRelease) -> Vec<Change> {
    if c.outcome == Terminal::Aborted {
        return Vec::new();
    }
    let mut by_service: BTreeMap<&ServiceName, (bool, bool, i64)> = BTreeMap::new();
    for s in &c.services {
        let (failed, done, finished) = by_service.entry(&s.service).or_insert((false, false, 0));
        match s.state {
            ServiceState::Failed | ServiceState::RolledBack | ServiceState::RollingBack => *failed = true,
            ServiceState::Done => {
                *done = true;
                *finished = (*finished).max(s.finished_unix_ms);
            }
            _ => {}
        }
    }
    by_service
        .into_iter()
        .filter(|(_, (failed, done, _))| *failed || *done)
        .map(|(service, (failed, _, finished))| Change {
            release: c.id.clone(),
            service: service.clone(),
            deployed: !failed,
            created_unix_ms: c.created_unix_ms,
            changed_unix_ms: c.changed_unix_ms,
            release_finished_unix_ms: c.finished_unix_ms,
            finished_unix_ms: if failed { 0 } else { finished },
        })
        .collect()
}

/// The four keys over one period, for one service or for all.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Figures {
    /// The service; `None` for all services.
    pub service: Option<ServiceName>,
    /// Releases (overall) or changes of the service that ended in the period,
    /// deployed or failed.
    pub changes: u32,
    /// Of them, failed.
    pub failed: u32,
    /// Deployments per day over the period.
    pub deployments_per_day: f64,
    /// The median lead time, in ms; `None` without a deployment.
    pub lead_time_median_ms: Option<i64>,
    /// Lead times measured from the change's time.
    pub lead_times_from_change: u32,
    /// Lead times measured from the release's creation (no change time given).
    pub lead_times_from_creation: u32,
    /// Failed ÷ changes; `None` without a change.
    pub change_failure_rate: Option<f64>,
    /// The median time to restore, in ms; `None` without a restore.
    pub time_to_restore_median_ms: Option<i64>,
    /// Restores measured (failures followed by a deployment).
    pub restores: u32,
    /// Runs of failed changes no deployment has followed yet.
    pub unrestored: u32,
}

/// The figures of `changes` whose release ended within `[from, to]`: overall, then per
/// service in name order (only `service` when given).
pub fn figures(changes: &[Change], from: i64, to: i64, service: Option<&str>) -> (Figures, Vec<Figures>) {
    let in_period = |c: &&Change| (from..=to).contains(&c.release_finished_unix_ms);
    let days = (to.saturating_sub(from)).max(1) as f64 / 86_400_000.0;
    let mut services: BTreeMap<&ServiceName, Vec<&Change>> = BTreeMap::new();
    for c in changes.iter().filter(|c| service.is_none_or(|s| c.service.as_str() == s)) {
        services.entry(&c.service).or_default().push(c);
    }
    let mut per_service = Vec::new();
    let mut all_leads = (Vec::new(), 0, 0);
    let mut all_restores = Vec::new();
    let mut all_unrestored = 0;
    for (name, mut list) in services {
        list.sort_by_key(|c| (c.release_finished_unix_ms, c.release.clone()));
        let period: Vec<&Change> = list.iter().copied().filter(in_period).collect();
        let leads = lead_times(&period);
        let (restores, unrestored) = restores(&list, from, to);
        let f = summarize(Some(name.clone()), &period, days, &leads, &restores, unrestored);
        all_leads.0.extend(leads.0);
        all_leads.1 += leads.1;
        all_leads.2 += leads.2;
        all_restores.extend(restores);
        all_unrestored += unrestored;
        per_service.push(f);
    }
    // Overall, a release is one change: failed when any of its services failed.
    let mut releases: BTreeMap<&str, bool> = BTreeMap::new();
    for c in changes.iter().filter(in_period).filter(|c| service.is_none_or(|s| c.service.as_str() == s)) {
        *releases.entry(c.release.as_str()).or_insert(true) &= c.deployed;
    }
    let count = |b: bool| u32::try_from(releases.values().filter(|d| **d == b).count()).unwrap_or(u32::MAX);
    let (changes_n, deployed) = (count(true) + count(false), count(true));
    let overall = Figures {
        service: None,
        changes: changes_n,
        failed: changes_n - deployed,
        deployments_per_day: f64::from(deployed) / days,
        lead_time_median_ms: median(&mut all_leads.0),
        lead_times_from_change: all_leads.1,
        lead_times_from_creation: all_leads.2,
        change_failure_rate: (changes_n > 0).then(|| f64::from(changes_n - deployed) / f64::from(changes_n)),
        time_to_restore_median_ms: median(&mut all_restores),
        restores: u32::try_from(all_restores.len()).unwrap_or(u32::MAX),
        unrestored: all_unrestored,
    };
    (overall, per_service)
}

/// The wire form of `f`.
pub fn wire(f: &Figures) -> v1::DeliveryFigures {
    v1::DeliveryFigures {
        service: f.service.as_ref().map(ToString::to_string).unwrap_or_default(),
        changes: f.changes,
        failed: f.failed,
        deployments_per_day: f.deployments_per_day,
        lead_time_median_ms: f.lead_time_median_ms,
        lead_times_from_change: f.lead_times_from_change,
        lead_times_from_creation: f.lead_times_from_creation,
        change_failure_rate: f.change_failure_rate,
        time_to_restore_median_ms: f.time_to_restore_median_ms,
        restores: f.restores,
        unrestored: f.unrestored,
    }
}

fn summarize(
    service: Option<ServiceName>,
    period: &[&Change],
    days: f64,
    leads: &(Vec<i64>, u32, u32),
    restores: &[i64],
    unrestored: u32,
) -> Figures {
    let changes = u32::try_from(period.len()).unwrap_or(u32::MAX);
    let deployed = u32::try_from(period.iter().filter(|c| c.deployed).count()).unwrap_or(u32::MAX);
    Figures {
        service,
        changes,
        failed: changes - deployed,
        deployments_per_day: f64::from(deployed) / days,
        lead_time_median_ms: median(&mut leads.0.clone()),
        lead_times_from_change: leads.1,
        lead_times_from_creation: leads.2,
        change_failure_rate: (changes > 0).then(|| f64::from(changes - deployed) / f64::from(changes)),
        time_to_restore_median_ms: median(&mut restores.to_vec()),
        restores: u32::try_from(restores.len()).unwrap_or(u32::MAX),
        unrestored,
    }
}

/// The lead times of the deployments among `period`, and how many started from the
/// change's time and from the release's creation.
fn lead_times(period: &[&Change]) -> (Vec<i64>, u32, u32) {
    let (mut times, mut from_change, mut from_creation) = (Vec::new(), 0, 0);
    for c in period.iter().filter(|c| c.deployed && c.finished_unix_ms > 0) {
        let start = if c.changed_unix_ms > 0 {
            from_change += 1;
            c.changed_unix_ms
        } else {
            from_creation += 1;
            c.created_unix_ms
        };
        times.push(c.finished_unix_ms.saturating_sub(start).max(0));
    }
    (times, from_change, from_creation)
}

/// One service's restores whose failure ended within `[from, to]` (`changes` in the
/// order their releases ended): from the end of the first failed change of a run to
/// the end of the next deployment; and the runs no deployment has followed yet.
fn restores(changes: &[&Change], from: i64, to: i64) -> (Vec<i64>, u32) {
    let (mut times, mut unrestored) = (Vec::new(), 0);
    let mut failing_since: Option<i64> = None;
    for c in changes {
        match (c.deployed, failing_since) {
            (false, None) => failing_since = Some(c.release_finished_unix_ms),
            (true, Some(since)) => {
                if (from..=to).contains(&since) {
                    times.push(c.release_finished_unix_ms.saturating_sub(since));
                }
                failing_since = None;
            }
            _ => {}
        }
    }
    if failing_since.is_some_and(|since| (from..=to).contains(&since)) {
        unrestored += 1;
    }
    (times, unrestored)
}

/// The median of `values` (the mean of the two middle ones for an even count).
fn median(values: &mut [i64]) -> Option<i64> {
    values.sort_unstable();
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => {
            let mean = (i128::from(values[n / 2 - 1]) + i128::from(values[n / 2])) / 2;
            Some(i64::try_from(mean).unwrap_or(values[n / 2]))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use flotilla_shared::fixtures::{fleet, host};
    use flotilla_shared::model::HostId;

    use super::*;
    use crate::engine::{Context, Env, Fact, Outcome, decide};
    use crate::plans::StoredFleet;
    use crate::state::{Command, NewRelease, Op, ReleaseRetention};

    const HOUR: i64 = 3_600_000;
    const DAY: i64 = 24 * HOUR;

    fn change(release: &str, service: &str, deployed: bool, created: i64, changed: i64, ended: i64) -> Change {
        Change {
            release: release.to_owned(),
            service: ServiceName::from(service),
            deployed,
            created_unix_ms: created,
            changed_unix_ms: changed,
            release_finished_unix_ms: ended,
            finished_unix_ms: if deployed { ended } else { 0 },
        }
    }

    /// A scripted history over four days with answers worked out by hand:
    /// - r1 (day 0): api deployed, changed 2 h before it ended;
    /// - r2 (day 1): api fails; web deployed, lead time from creation (1 h);
    /// - r3 (day 2): api fails again (the same run of failures);
    /// - r4 (day 3): api deployed (restored 2 days after r2 ended), created 30 min before
    ///   it ended, no change time;
    /// - r5 (day 3.5): web fails, nothing follows (unrestored);
    /// - r0 (before the period): a failure of api, restored by r1, outside the period.
    #[test]
    fn figures_of_a_scripted_history_are_the_ones_worked_out_by_hand() {
        let from = 0;
        let to = 4 * DAY;
        let changes = vec![
            change("r0", "api", false, -DAY, 0, -DAY + HOUR),
            change("r1", "api", true, HOUR, 0, 3 * HOUR).with_changed(HOUR),
            change("r2", "api", false, DAY, 0, DAY + HOUR),
            change("r2", "web", true, DAY, 0, DAY + HOUR),
            change("r3", "api", false, 2 * DAY, 0, 2 * DAY + HOUR),
            change("r4", "api", true, 3 * DAY + HOUR / 2, 0, 3 * DAY + HOUR),
            change("r5", "web", false, 3 * DAY + 12 * HOUR, 0, 3 * DAY + 13 * HOUR),
        ];
        let (overall, per_service) = figures(&changes, from, to, None);
        let api = &per_service[0];
        assert_eq!(api.service.as_ref().map(ServiceName::as_str), Some("api"));
        assert_eq!((api.changes, api.failed), (4, 2), "r1..r4; r0 ended before the period");
        assert_eq!(api.deployments_per_day, 0.5, "2 deployments over 4 days");
        // Lead times: r1 2 h (from its change time), r4 30 min (from creation).
        assert_eq!(api.lead_time_median_ms, Some((2 * HOUR + HOUR / 2) / 2));
        assert_eq!((api.lead_times_from_change, api.lead_times_from_creation), (1, 1));
        assert_eq!(api.change_failure_rate, Some(0.5));
        // Restored from r2's end (day 1 + 1 h) to r4's end (day 3 + 1 h); r0's restore
        // began before the period.
        assert_eq!((api.time_to_restore_median_ms, api.restores, api.unrestored), (Some(2 * DAY), 1, 0));

        let web = &per_service[1];
        assert_eq!((web.changes, web.failed, web.restores, web.unrestored), (2, 1, 0, 1));
        assert_eq!(web.lead_time_median_ms, Some(HOUR));
        assert_eq!(web.time_to_restore_median_ms, None, "never restored");

        // Overall a release is one change: r1 ok, r2 failed (api), r3 failed, r4 ok, r5 failed.
        assert_eq!((overall.changes, overall.failed), (5, 3));
        assert_eq!(overall.deployments_per_day, 0.5);
        assert_eq!(overall.change_failure_rate, Some(0.6));
        assert_eq!(overall.lead_time_median_ms, Some(HOUR), "median of 2 h, 1 h and 30 min");
        assert_eq!((overall.lead_times_from_change, overall.lead_times_from_creation), (1, 2));
        assert_eq!((overall.time_to_restore_median_ms, overall.restores, overall.unrestored), (Some(2 * DAY), 1, 1));

        // One service only.
        let (only, list) = figures(&changes, from, to, Some("web"));
        assert_eq!(list.len(), 1);
        assert_eq!((only.changes, only.failed), (2, 1), "overall of web alone");
        // Nothing in the period: no figures, not zeros.
        let (empty, _) = figures(&changes, 10 * DAY, 11 * DAY, None);
        assert_eq!((empty.changes, empty.lead_time_median_ms, empty.change_failure_rate), (0, None, None));
    }

    impl Change {
        fn with_changed(mut self, at: i64) -> Self {
            self.changed_unix_ms = at;
            self
        }
    }

    /// Runs release `id` (services `api` and `web` at `version`, one host each time) to
    /// its end through the state and the engine, its agents failing every deploy of
    /// `failing`; returns the next log index.
    fn run_release(s: &mut State, mut index: u64, id: &str, at: i64, changed_at: &str, failing: &str) -> u64 {
        let mut spec = format!("release = \"{id}\"\n{changed_at}\n[defaults]\nbake = \"0s\"\n");
        for name in ["api", "web"] {
            spec.push_str(&format!(
                "[[service]]\nname = \"{name}\"\nversion = \"{index}.0.0\"\n\
                 artifact = {{ url = \"https://a.example/{name}.tar.gz\", sha256 = \"{}\" }}\n\
                 run = {{ command = \"bin/{name}\" }}\n",
                "0".repeat(64)
            ));
        }
        let fleet = fleet(vec![host("h-1", &[], &[])]);
        let create = NewRelease {
            id: id.to_owned(),
            name: id.to_owned(),
            file_name: format!("{id}.toml"),
            spec_text: spec,
            fleet: StoredFleet::from(&fleet),
            ..NewRelease::default()
        };
        s.apply(index, 1, &Command { at_unix_ms: at, op: Op::CreateRelease(create) });
        let mut now = at;
        for _ in 0..1_000 {
            index += 1;
            now += 60_000;
            let record = s.release(id).expect("created");
            if record.run.is_finished() {
                return index;
            }
            let planned = record.plan().expect("it plans");
            let online = |_: &HostId| true;
            let ctx = Context { release: id, plan: &planned.0, fleet: &planned.1 };
            let mut facts = decide(&record.run, ctx, &Env::new(now, &online)).facts;
            let outstanding: Vec<(crate::engine::CommandId, bool)> = record
                .run
                .outstanding()
                .map(|(c, step)| {
                    (c.clone(), matches!(&step.kind, crate::engine::StepKind::Deploy(x) if x.as_str() == failing))
                })
                .collect();
            facts.extend(outstanding.into_iter().map(|(command_id, fails)| Fact::StepReported {
                command_id,
                outcome: if fails { Outcome::Failed } else { Outcome::Succeeded },
                reason: if fails { "broken".to_owned() } else { String::new() },
            }));
            for fact in facts {
                s.apply(
                    index,
                    1,
                    &Command { at_unix_ms: now, op: Op::Release { release: id.into(), expect: None, fact } },
                );
            }
        }
        panic!("release {id} never ended")
    }

    /// Releases run through the state give the figures their timeline implies, and the
    /// same figures once the retention has compacted them.
    #[test]
    fn figures_come_from_the_releases_run_and_survive_their_compaction() {
        let mut s = State::default();
        let mut index = 1;
        index = run_release(&mut s, index, "r-1", DAY, "changed_at = 1970-01-01T12:00:00Z", "");
        index = run_release(&mut s, index, "r-2", 2 * DAY, "", "web");
        index = run_release(&mut s, index, "r-3", 3 * DAY, "", "");
        let before = changes(&s);
        let by_release: BTreeSet<(&str, &str, bool)> =
            before.iter().map(|c| (c.release.as_str(), c.service.as_str(), c.deployed)).collect();
        assert!(
            by_release.contains(&("r-1", "api", true)) && by_release.contains(&("r-2", "web", false)),
            "{before:?}"
        );
        assert!(before.iter().any(|c| c.release == "r-1" && c.changed_unix_ms == 12 * HOUR), "{before:?}");
        let (overall, _) = figures(&before, 0, 4 * DAY, None);
        assert_eq!((overall.changes, overall.failed), (3, 1), "{overall:?}");
        assert_eq!((overall.restores, overall.unrestored), (1, 0), "r-3 restored web: {overall:?}");
        // r-1's two services from its change time; r-3's from its creation (r-2's
        // rollback cancelled api before it started: not a change).
        assert!(!by_release.iter().any(|(r, s, _)| *r == "r-2" && *s == "api"), "{before:?}");
        assert_eq!((overall.lead_times_from_change, overall.lead_times_from_creation), (2, 2), "{overall:?}");

        let retention = ReleaseRetention { max_finished: 0, max_age_ms: 0, max_compacted: 100 };
        s.apply(index, 1, &Command { at_unix_ms: 5 * DAY, op: Op::CompactReleases(retention) });
        assert_eq!(s.releases().count(), 0, "every release compacted");
        let after = changes(&s);
        assert_eq!(after, before, "compaction keeps what the figures need");
        assert_eq!(figures(&after, 0, 4 * DAY, None), figures(&before, 0, 4 * DAY, None));
    }
}
