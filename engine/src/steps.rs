//! Every step a release sent, by command id, with the indexes that keep the work of
//! one report, one dispatch or one host's reconnection independent of how many steps
//! the release has. Stored as the map of steps alone; the indexes are rebuilt when it
//! is read back, so they cannot disagree with it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use flotilla_shared::model::HostId;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::fact::{CommandId, Outcome};
use super::run::{StepKind, StepRecord};

/// The steps of one release.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Steps {
    all: BTreeMap<CommandId, StepRecord>,
    /// Per host, its steps in command order (a host gets a few steps per service).
    by_host: HashMap<HostId, Vec<CommandId>>,
    /// How many steps have no result.
    outstanding: usize,
    /// Steps without a result that the release asked to stop.
    cancelling: BTreeSet<CommandId>,
}

impl Steps {
    /// No steps.
    pub fn new() -> Self {
        Self::default()
    }

    /// The step `id`.
    pub fn get(&self, id: &CommandId) -> Option<&StepRecord> {
        self.all.get(id)
    }

    /// Every step, in command order.
    pub fn iter(&self) -> impl Iterator<Item = (&CommandId, &StepRecord)> {
        self.all.iter()
    }

    /// Every step's record, in command order.
    pub fn values(&self) -> impl Iterator<Item = &StepRecord> {
        self.all.values()
    }

    /// How many steps were sent.
    pub fn len(&self) -> usize {
        self.all.len()
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Whether any step has no result.
    pub fn any_outstanding(&self) -> bool {
        self.outstanding > 0
    }

    /// Steps without a result, in command order.
    pub fn outstanding(&self) -> impl Iterator<Item = (&CommandId, &StepRecord)> {
        self.all.iter().filter(|(_, s)| s.outcome.is_none())
    }

    /// `host`'s steps, in command order.
    pub fn on_host<'a>(&'a self, host: &HostId) -> impl Iterator<Item = (&'a CommandId, &'a StepRecord)> + 'a {
        self.by_host.get(host).into_iter().flatten().filter_map(|id| self.all.get(id).map(|s| (id, s)))
    }

    /// Steps without a result that the release asked to stop, in command order.
    pub fn cancelling(&self) -> impl Iterator<Item = (&CommandId, &StepRecord)> {
        self.cancelling.iter().filter_map(|id| self.all.get(id).map(|s| (id, s)))
    }

    /// How many steps of `kind` in `stage` were sent to `host` (a step the agent could
    /// not finish is sent again as a new one).
    pub fn attempts(&self, stage: usize, host: &HostId, kind: &StepKind) -> usize {
        self.on_host(host).filter(|(_, s)| s.stage == stage && &s.kind == kind).count()
    }

    /// Adds a step (a command id is never reused).
    pub(crate) fn insert(&mut self, id: CommandId, step: StepRecord) {
        if let Some(old) = self.all.remove(&id) {
            // Not reached by the engine; kept consistent regardless.
            self.unindex(&id, &old);
        }
        self.index(&id, &step);
        self.all.insert(id, step);
    }

    /// Records how step `id` ended; `None` when there is no such step.
    pub(crate) fn finish(
        &mut self,
        id: &CommandId,
        outcome: Outcome,
        reason: &str,
        at: i64,
    ) -> Option<Result<&StepRecord, ()>> {
        let step = self.all.get_mut(id)?;
        if step.outcome.is_some() {
            return Some(Err(()));
        }
        step.outcome = Some((outcome, reason.to_owned()));
        step.finished_unix_ms = at;
        self.outstanding -= 1;
        self.cancelling.remove(id);
        Some(Ok(step))
    }

    /// Asks every step without a result for which `stops` holds to stop; returns the
    /// ones newly asked, with their hosts.
    pub(crate) fn cancel_where(&mut self, stops: impl Fn(&StepKind) -> bool) -> Vec<(CommandId, HostId)> {
        let mut asked = Vec::new();
        for (id, step) in &mut self.all {
            if step.outcome.is_none() && !step.cancel && stops(&step.kind) {
                step.cancel = true;
                self.cancelling.insert(id.clone());
                asked.push((id.clone(), step.host.clone()));
            }
        }
        asked
    }

    fn index(&mut self, id: &CommandId, step: &StepRecord) {
        let ids = self.by_host.entry(step.host.clone()).or_default();
        // Steps are added in command order; the position keeps it when one is not.
        let at = ids.partition_point(|x| x < id);
        ids.insert(at, id.clone());
        if step.outcome.is_none() {
            self.outstanding += 1;
            if step.cancel {
                self.cancelling.insert(id.clone());
            }
        }
    }

    fn unindex(&mut self, id: &CommandId, step: &StepRecord) {
        if let Some(ids) = self.by_host.get_mut(&step.host)
            && let Some(at) = ids.iter().position(|x| x == id)
        {
            ids.remove(at);
        }
        if step.outcome.is_none() {
            self.outstanding -= 1;
            self.cancelling.remove(id);
        }
    }
}

impl From<BTreeMap<CommandId, StepRecord>> for Steps {
    fn from(all: BTreeMap<CommandId, StepRecord>) -> Self {
        let mut steps = Steps { all: BTreeMap::new(), ..Steps::default() };
        for (id, step) in &all {
            steps.index(id, step);
        }
        steps.all = all;
        steps
    }
}

impl std::ops::Index<&CommandId> for Steps {
    type Output = StepRecord;

    /// The step `id`; panics when there is none (as a map does).
    fn index(&self, id: &CommandId) -> &StepRecord {
        self.all.get(id).unwrap_or_else(|| panic!("no step {id}"))
    }
}

impl Serialize for Steps {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.all.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Steps {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        BTreeMap::<CommandId, StepRecord>::deserialize(deserializer).map(Steps::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_shared::model::ServiceName;

    fn step(host: &str, kind: StepKind) -> StepRecord {
        StepRecord {
            host: HostId::new(host),
            stage: 0,
            kind,
            sent_unix_ms: 1,
            outcome: None,
            finished_unix_ms: 0,
            cancel: false,
        }
    }

    fn deploy(s: &str) -> StepKind {
        StepKind::Deploy(ServiceName::new(s))
    }

    #[test]
    fn the_indexes_follow_every_change_and_are_rebuilt_when_read_back() {
        let mut steps = Steps::new();
        let id = |n| CommandId::new("r", n);
        steps.insert(id(1), step("a", deploy("web")));
        steps.insert(id(2), step("b", deploy("web")));
        steps.insert(id(10), step("a", deploy("web")));
        steps.insert(id(3), step("a", StepKind::Check("smoke".into())));
        let on_a: Vec<u64> = steps.on_host(&HostId::new("a")).map(|(c, _)| c.number()).collect();
        assert_eq!(on_a, [1, 3, 10], "in command order, numbers compared as numbers");
        assert_eq!(steps.attempts(0, &HostId::new("a"), &deploy("web")), 2);
        assert_eq!(steps.attempts(1, &HostId::new("a"), &deploy("web")), 0);
        assert!(steps.any_outstanding());

        assert!(matches!(steps.finish(&id(1), Outcome::Succeeded, "", 5), Some(Ok(_))));
        assert!(matches!(steps.finish(&id(1), Outcome::Failed, "again", 6), Some(Err(()))), "one result only");
        assert!(steps.finish(&id(99), Outcome::Succeeded, "", 5).is_none());
        let asked = steps.cancel_where(|k| matches!(k, StepKind::Deploy(_)));
        assert_eq!(asked, [(id(2), HostId::new("b")), (id(10), HostId::new("a"))], "not the finished one");
        assert!(steps.cancel_where(|_| true).iter().all(|(c, _)| *c == id(3)), "each step is asked once");
        let cancelling: Vec<u64> = steps.cancelling().map(|(c, _)| c.number()).collect();
        assert_eq!(cancelling, [2, 3, 10]);
        assert!(matches!(steps.finish(&id(2), Outcome::Cancelled, "", 7), Some(Ok(_))));

        let back = Steps::from(steps.all.clone());
        assert_eq!(back, steps, "indexes rebuilt from the map equal the ones kept up to date");
        for n in [3, 10] {
            steps.finish(&id(n), Outcome::Succeeded, "", 8);
        }
        assert!(!steps.any_outstanding());
        assert_eq!(steps.cancelling().count(), 0);
        assert_eq!(steps.outstanding().count(), 0);
    }
}
