//! The release engine's async shell on the leader: it commits the
//! engine's decisions through Raft, sends the steps they create to agents through the
//! [`AgentHub`], commits every agent report before the engine reacts to it, and after
//! a leader change re-sends every step that has no committed result.
//!
//! All state lives in the replicated state machine; this task keeps only caches
//! (rebuilt plans, which cancels it has sent) and can be restarted at any time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::v1;
use flotilla_shared::inventory::Fleet;
use flotilla_shared::model::HostId;
use flotilla_shared::plan::Plan;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::engine::{self, Context, Env, Fact, Outcome};
use crate::error::CoordinatorError;
use crate::fleet::{AgentHub, AgentReport};
use crate::leadership::Leadership;
use crate::node::{Node, now_unix_ms};
use crate::state::{Op, ReleaseId, Response, State};

/// How often the engine looks at its releases when nothing happens.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// Most decision rounds per pass (a guard against a decision loop).
const MAX_ROUNDS: usize = 256;

/// What an agent is told about a step the release has asked it to stop.
const CANCEL_REASON: &str = "the release is rolling back this service";

/// Most agent reports committed in one log entry. Reports that arrive while one entry
/// is being committed go into the next, so under load a batch of a thousand hosts
/// costs a few round trips, not a thousand.
const MAX_REPORTS_PER_ENTRY: usize = 512;

/// Starts the engine driver: it runs whenever this node leads.
pub fn spawn(node: Node, hub: AgentHub) -> tokio::task::JoinHandle<()> {
    let reports = hub.subscribe();
    tokio::spawn(async move { run(node, hub, reports).await })
}

async fn run(node: Node, hub: AgentHub, mut reports: mpsc::Receiver<AgentReport>) {
    let mut metrics = node.raft().metrics();
    // Leading means leading with a quorum: a leader cut off from the others stops here.
    let mut leadership = node.leadership();
    loop {
        let term = {
            let l = leadership.borrow_and_update();
            l.leading.then_some(l.term)
        };
        match term {
            Some(term) => {
                let mut leader = Leader::new(node.clone(), hub.clone(), term);
                match leader.lead(&mut reports, &mut metrics, &mut leadership).await {
                    Ok(()) => tracing::info!(term, "no longer the leader; the release engine stops here"),
                    Err(e) => tracing::warn!(term, error = %e, "the release engine stopped"),
                }
            }
            None => {
                tokio::select! {
                    changed = leadership.changed() => if changed.is_err() { return },
                    // Reports only come while leading; drop stragglers.
                    report = reports.recv() => if report.is_none() { return },
                }
            }
        }
    }
}

/// Cached plan and planning fleet of a release.
type Planned = Arc<(Plan, Fleet)>;

/// The facts the engine decided for a release against run `version`.
struct Decided {
    id: ReleaseId,
    version: u64,
    facts: Vec<Fact>,
}

struct Leader {
    node: Node,
    hub: AgentHub,
    term: u64,
    plans: HashMap<ReleaseId, Planned>,
    cancels_sent: BTreeSet<String>,
    last_applied: Option<u64>,
    /// Per release, the run version at which the engine last decided nothing, and the
    /// deadline it asked to be woken at.
    quiet: HashMap<ReleaseId, (u64, Option<i64>)>,
}

impl Leader {
    fn new(node: Node, hub: AgentHub, term: u64) -> Self {
        Self {
            node,
            hub,
            term,
            plans: HashMap::new(),
            cancels_sent: BTreeSet::new(),
            last_applied: None,
            quiet: HashMap::new(),
        }
    }

    fn still_leading(&self, m: &openraft::RaftMetrics<crate::raft::NodeId, openraft::BasicNode>) -> bool {
        m.current_leader == Some(self.node.id()) && m.current_term == self.term
    }

    async fn lead(
        &mut self,
        reports: &mut mpsc::Receiver<AgentReport>,
        metrics: &mut tokio::sync::watch::Receiver<openraft::RaftMetrics<crate::raft::NodeId, openraft::BasicNode>>,
        leadership: &mut tokio::sync::watch::Receiver<Leadership>,
    ) -> Result<(), CoordinatorError> {
        // Make sure everything committed by earlier leaders is applied here first.
        self.node.read(|_| ()).await?;
        tracing::info!(term = self.term, "leading: the release engine takes over");
        self.take_over().await?;
        loop {
            let wake = self.pass().await?;
            let sleep = wake.map_or(IDLE_TICK, |at| {
                Duration::from_millis(u64::try_from(at.saturating_sub(now_unix_ms())).unwrap_or(0)).min(IDLE_TICK)
            });
            tokio::select! {
                report = reports.recv() => match report {
                    Some(first) => {
                        // Whatever else has queued meanwhile goes into the same entry.
                        let mut batch = vec![first];
                        while batch.len() < MAX_REPORTS_PER_ENTRY {
                            match reports.try_recv() {
                                Ok(r) => batch.push(r),
                                Err(_) => break,
                            }
                        }
                        self.on_reports(batch).await?;
                    }
                    None => return Ok(()),
                },
                changed = metrics.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    let m = metrics.borrow_and_update().clone();
                    if !self.still_leading(&m) {
                        return Ok(());
                    }
                    let applied = m.last_applied.map(|l| l.index);
                    if applied == self.last_applied {
                        // Replication progress only; nothing new to decide on.
                        continue;
                    }
                    self.last_applied = applied;
                }
                changed = leadership.changed() => {
                    let l = leadership.borrow_and_update().clone();
                    if changed.is_err() || !l.leading || l.term != self.term {
                        return Ok(());
                    }
                }
                () = tokio::time::sleep_until(Instant::now() + sleep) => {}
            }
        }
    }

    /// Ids of releases that have not finished.
    fn active(&self) -> Vec<ReleaseId> {
        self.node.read_local(|s| s.active_releases().map(|r| r.id.clone()).collect())
    }

    /// Ids of active releases worth deciding on now: changed since the engine last had
    /// nothing to say about them, or with a deadline due.
    fn due(&self, now: i64) -> Vec<ReleaseId> {
        self.node.read_local(|s| {
            s.active_releases()
                .filter(|r| match self.quiet.get(&r.id) {
                    Some(&(version, wake)) => version != r.run.version || wake.is_some_and(|w| w <= now),
                    None => true,
                })
                .map(|r| r.id.clone())
                .collect()
        })
    }

    fn planned(&mut self, state: &State, id: &str) -> Option<Planned> {
        if let Some(p) = self.plans.get(id) {
            return Some(p.clone());
        }
        let rec = state.release(id)?;
        match crate::plans::replan(&rec.spec_text, &rec.file_name, &rec.fleet_json) {
            Ok(p) => {
                let p = Arc::new(p);
                self.plans.insert(id.to_owned(), p.clone());
                Some(p)
            }
            Err(e) => {
                tracing::error!(release = id, error = %e, "the stored release no longer plans; it cannot be driven");
                None
            }
        }
    }

    /// A new leader re-sends every step without a committed result and says so: the
    /// event lists them all, the ones sent now and the ones whose agent has no session
    /// with this leader yet (sent when it registers).
    async fn take_over(&mut self) -> Result<(), CoordinatorError> {
        for id in self.active() {
            let (started, outstanding) = self.node.read_local(|s| match s.release(&id) {
                Some(r) => (r.run.version > 0, r.run.outstanding().map(|(cid, _)| cid.clone()).collect()),
                None => (false, Vec::new()),
            });
            let sent_now = self.send_outstanding(&id, None);
            tracing::info!(
                release = id,
                outstanding = outstanding.len(),
                sent_now = sent_now.len(),
                "took the release over"
            );
            if started {
                let fact = Fact::LeaderChanged { node: self.node.id(), resent: outstanding };
                self.propose(&id, None, fact).await?;
            }
        }
        Ok(())
    }

    /// Sends the release's steps that have no result (to `only` when given), or the
    /// cancel of those marked for cancellation; returns the ids of the steps sent.
    fn send_outstanding(&mut self, id: &str, only: Option<&str>) -> Vec<String> {
        let term = self.term;
        let mut planned = None;
        let node = self.node.clone();
        let resends: Vec<Resend> = node.read_local(|s| {
            let Some(rec) = s.release(id) else { return Vec::new() };
            planned = self.planned(s, id);
            let Some(p) = &planned else { return Vec::new() };
            resends(rec.run.outstanding(), only, |cid, st| {
                let stage = rec.run.stages.get(st.stage).map(|x| x.name.clone()).unwrap_or_default();
                crate::steps::build(id, cid, term, st, p.0.spec(), &stage)
            })
        });
        let mut sent = Vec::new();
        for resend in resends {
            match resend {
                Resend::Cancel { command_id, host } => {
                    self.hub.cancel(&host, &command_id, term, CANCEL_REASON);
                    self.cancels_sent.insert(command_id);
                }
                Resend::Step { command_id, host, step: Some(step) } => match self.hub.send(&host, *step) {
                    Ok(()) => sent.push(command_id),
                    Err(e) => tracing::debug!(
                        host,
                        command_id,
                        reason = e.reason,
                        "step not sent now; sent when the agent is back"
                    ),
                },
                Resend::Step { command_id, step: None, .. } => {
                    tracing::error!(command_id, "the spec lacks what this step needs; not sent");
                }
            }
        }
        sent
    }

    async fn propose(&self, id: &str, expect: Option<u64>, fact: Fact) -> Result<Response, CoordinatorError> {
        let what = fact.to_string();
        let resp = self.node.propose(Op::Release { release: id.to_owned(), expect, fact }).await?;
        match &resp {
            Response::Applied { .. } => tracing::info!(release = id, "{what}"),
            Response::Refused { reason } => tracing::debug!(release = id, reason, "not applied: {what}"),
            _ => {}
        }
        Ok(resp)
    }

    /// Commits the decisions of one round, each made against run `version` of its
    /// release, in one log entry: each fact of a decision expects the version the one
    /// before it leaves, so a decision's facts apply in order or, from the first that
    /// finds the run moved on, not at all (the other releases' decisions are not
    /// affected). Sends the steps of the facts that applied; returns the releases whose
    /// every fact applied.
    async fn commit_decisions(&mut self, decisions: Vec<Decided>) -> Result<Vec<ReleaseId>, CoordinatorError> {
        let mut ops = Vec::new();
        let mut expected = Vec::with_capacity(decisions.len());
        for Decided { id, version, facts } in decisions {
            let shown: Vec<(String, Vec<String>)> = facts.iter().map(|f| (f.to_string(), dispatches_of(f))).collect();
            for (i, fact) in facts.into_iter().enumerate() {
                ops.push(Op::Release { release: id.clone(), expect: Some(version + i as u64), fact });
            }
            expected.push((id, shown));
        }
        let mut responses = match self.node.propose(if ops.len() == 1 { ops.remove(0) } else { Op::Batch(ops) }).await?
        {
            Response::Batch(all) => all,
            one => vec![one],
        }
        .into_iter();
        let mut all_applied = Vec::new();
        for (id, shown) in expected {
            let mut applied = true;
            for (what, hosts) in shown {
                match responses.next() {
                    Some(Response::Applied { .. }) => {
                        tracing::info!(release = id, "{what}");
                        for host in hosts {
                            self.send_outstanding(&id, Some(&host));
                        }
                    }
                    Some(Response::Refused { reason }) => {
                        tracing::debug!(release = id, reason, "not applied: {what}");
                        applied = false;
                    }
                    _ => applied = false,
                }
            }
            if applied {
                all_applied.push(id);
            }
        }
        Ok(all_applied)
    }

    /// Decides and commits for every active release that is due; returns the earliest
    /// wake time. Each round decides for every release still moving and commits all
    /// their decisions in one log entry, so many releases moving at once cost one round
    /// trip per round, not one per release.
    async fn pass(&mut self) -> Result<Option<i64>, CoordinatorError> {
        let active: BTreeSet<ReleaseId> = self.active().into_iter().collect();
        self.quiet.retain(|id, _| active.contains(id));
        self.plans.retain(|id, _| active.contains(id));
        let mut wake: Option<i64> = self.quiet.values().filter_map(|(_, w)| *w).min();
        let due = self.due(now_unix_ms());
        let mut moving = due.clone();
        for _ in 0..MAX_ROUNDS {
            if moving.is_empty() {
                break;
            }
            let now = now_unix_ms();
            let mut decisions = Vec::new();
            for id in moving {
                let mut planned = None;
                let node = self.node.clone();
                let decided = node.read_local(|s| {
                    let rec = s.release(&id)?;
                    planned = self.planned(s, &id);
                    let p = planned.as_ref()?;
                    let fleet = s.fleet();
                    let online = |h: &HostId| fleet.agent(h.as_str()).is_some_and(|a| a.online && !a.drained());
                    let ctx = Context { release: &id, plan: &p.0, fleet: &p.1 };
                    Some((rec.run.version, engine::decide(&rec.run, ctx, &Env { now_unix_ms: now, online: &online })))
                });
                let Some((version, decision)) = decided else { continue };
                if decision.facts.is_empty() {
                    if let Some(at) = decision.wake_at {
                        wake = Some(wake.map_or(at, |w| w.min(at)));
                    }
                    self.quiet.insert(id, (version, decision.wake_at));
                } else {
                    self.quiet.remove(&id);
                    decisions.push(Decided { id, version, facts: decision.facts });
                }
            }
            if decisions.is_empty() {
                break;
            }
            moving = self.commit_decisions(decisions).await?;
        }
        for id in &due {
            self.send_cancels(id);
        }
        Ok(wake)
    }

    fn send_cancels(&mut self, id: &str) {
        let cancels: Vec<(String, String)> = self.node.read_local(|s| {
            s.release(id)
                .map(|r| {
                    r.run
                        .outstanding()
                        .filter(|(cid, st)| st.cancel && !self.cancels_sent.contains(*cid))
                        .map(|(cid, st)| (cid.clone(), st.host.to_string()))
                        .collect()
                })
                .unwrap_or_default()
        });
        for (cid, host) in cancels {
            self.hub.cancel(&host, &cid, self.term, CANCEL_REASON);
            self.cancels_sent.insert(cid);
        }
    }

    /// Commits the agents' results among `reports` in one log entry (reported facts
    /// are checked on their own terms, so one refused does not hold up the others),
    /// acknowledges them to their agents once committed, then re-sends outstanding steps
    /// to the hosts that connected.
    async fn on_reports(&mut self, reports: Vec<AgentReport>) -> Result<(), CoordinatorError> {
        let mut ops = Vec::new();
        let mut acks: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut not_ours: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut connected = Vec::new();
        for report in reports {
            match report {
                AgentReport::Connected { host, .. } => connected.push(host),
                AgentReport::Result { host, result } => match reported(&result) {
                    Some((release, fact)) => {
                        ops.push(Op::Release { release, expect: None, fact });
                        acks.entry(host).or_default().push(result.command_id);
                    }
                    None => not_ours.entry(host).or_default().push(result.command_id),
                },
                AgentReport::Progress { .. } | AgentReport::Disconnected { .. } => {}
            }
        }
        for (host, cids) in not_ours {
            self.hub.ack(&host, cids);
        }
        if !ops.is_empty() {
            let op = if ops.len() == 1 { ops.remove(0) } else { Op::Batch(ops) };
            let shown = op.to_string();
            let resp = self.node.propose(op).await?;
            log_response(&shown, &resp);
            // Committed (or already known, or not ours): the agents may stop re-sending.
            for (host, cids) in acks {
                self.hub.ack(&host, cids);
            }
        }
        for host in connected {
            for id in self.active() {
                self.send_outstanding(&id, Some(&host));
            }
        }
        Ok(())
    }
}

/// The release and the fact an agent's result stands for; `None` for a command id
/// that names no release.
fn reported(result: &v1::StepResult) -> Option<(ReleaseId, Fact)> {
    let (release, _) = result.command_id.rsplit_once('.')?;
    let outcome = match v1::StepOutcome::try_from(result.outcome) {
        Ok(v1::StepOutcome::Succeeded | v1::StepOutcome::Skipped) => Outcome::Succeeded,
        Ok(v1::StepOutcome::Cancelled) => Outcome::Cancelled,
        Ok(v1::StepOutcome::Refused) => Outcome::Refused,
        // The agent's own trouble (it restarted mid-step, I/O): worth another try.
        _ if result.failure == v1::StepFailure::Internal as i32 => Outcome::Interrupted,
        _ => Outcome::Failed,
    };
    let mut reason = result.reason.clone();
    if reason.is_empty() && outcome == Outcome::Failed {
        reason = "the agent reported a failure without a reason".to_owned();
    }
    Some((release.to_owned(), Fact::StepReported { command_id: result.command_id.clone(), outcome, reason }))
}

/// Logs what a committed batch of reports did: applied facts at info, refusals at debug.
fn log_response(shown: &str, resp: &Response) {
    match resp {
        Response::Batch(all) => {
            let refused: Vec<&str> = all
                .iter()
                .filter_map(|r| match r {
                    Response::Refused { reason } => Some(reason.as_str()),
                    _ => None,
                })
                .collect();
            tracing::info!(reports = all.len(), refused = refused.len(), "committed agent reports: {shown}");
            for reason in refused {
                tracing::debug!(reason, "report not applied");
            }
        }
        Response::Refused { reason } => tracing::debug!(reason, "not applied: {shown}"),
        _ => tracing::info!("{shown}"),
    }
}

/// Hosts that a fact sends steps to.
fn dispatches_of(fact: &Fact) -> Vec<String> {
    let hosts = |d: &[engine::Dispatch]| d.iter().map(|d| d.host.to_string()).collect();
    match fact {
        Fact::MigrationStarted { dispatch, .. } | Fact::GateStarted { dispatch, .. } => {
            vec![dispatch.host.to_string()]
        }
        Fact::BatchStarted { dispatches, .. }
        | Fact::BakeStarted { dispatches, .. }
        | Fact::RollbackStarted { dispatches, .. } => hosts(dispatches),
        _ => Vec::new(),
    }
}

/// What to send again for one outstanding step.
#[derive(Debug, PartialEq)]
enum Resend {
    /// The step itself (`None`: it could not be built from the spec).
    Step { command_id: String, host: String, step: Option<Box<v1::Step>> },
    /// Only its cancel: a step marked for cancellation is never sent again, so an agent
    /// that had not received it never runs it.
    Cancel { command_id: String, host: String },
}

/// The resends for `outstanding` steps (to `only` when given), building each step that
/// is sent with `build`.
fn resends<'a>(
    outstanding: impl Iterator<Item = (&'a engine::CommandId, &'a engine::StepRecord)>,
    only: Option<&str>,
    mut build: impl FnMut(&engine::CommandId, &engine::StepRecord) -> Option<v1::Step>,
) -> Vec<Resend> {
    outstanding
        .filter(|(_, st)| only.is_none_or(|h| st.host.as_str() == h))
        .map(|(cid, st)| {
            let (command_id, host) = (cid.clone(), st.host.to_string());
            if st.cancel {
                Resend::Cancel { command_id, host }
            } else {
                Resend::Step { step: build(cid, st).map(Box::new), command_id, host }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{StepKind, StepRecord};

    fn record(host: &str, cancel: bool) -> StepRecord {
        StepRecord {
            host: HostId::new(host),
            stage: 0,
            kind: StepKind::Check("smoke".into()),
            sent_unix_ms: 1,
            outcome: None,
            finished_unix_ms: 0,
            cancel,
        }
    }

    #[test]
    fn a_step_marked_for_cancellation_is_cancelled_and_never_sent_again() {
        let steps = [("r.1".to_owned(), record("web-1", true)), ("r.2".to_owned(), record("web-1", false))];
        let mut built = Vec::new();
        let out = resends(steps.iter().map(|(c, s)| (c, s)), None, |cid, _| {
            built.push(cid.clone());
            Some(v1::Step { command_id: cid.clone(), ..Default::default() })
        });
        assert_eq!(built, ["r.2"], "only the step not marked for cancellation is built");
        assert_eq!(
            out,
            [
                Resend::Cancel { command_id: "r.1".into(), host: "web-1".into() },
                Resend::Step {
                    command_id: "r.2".into(),
                    host: "web-1".into(),
                    step: Some(Box::new(v1::Step { command_id: "r.2".into(), ..Default::default() })),
                },
            ]
        );
    }

    #[test]
    fn resends_to_one_host_leave_the_others_alone() {
        let steps = [("r.1".to_owned(), record("web-1", true)), ("r.2".to_owned(), record("web-2", false))];
        let out = resends(steps.iter().map(|(c, s)| (c, s)), Some("web-2"), |_, _| None);
        assert_eq!(out, [Resend::Step { command_id: "r.2".into(), host: "web-2".into(), step: None }]);
    }
}
