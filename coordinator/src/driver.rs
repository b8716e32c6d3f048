//! The release engine's async shell on the leader: it commits the
//! engine's decisions through Raft, performs the [`Action`]s the committed facts
//! imply (send a step, cancel one) through the [`AgentHub`], commits every agent
//! report before the engine reacts to it, and after a leader change (or when an agent
//! connects) performs what the engine says is owed for the steps without a result.
//! It knows nothing of the facts it commits: what to send comes from the engine.
//!
//! All state lives in the replicated state machine; this task keeps only caches
//! (which cancels it has sent) and can be restarted at any time.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use flotilla_proto::v1;
use flotilla_shared::model::{HostId, ServiceName};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::engine::{self, Action, CommandId, Context, Env, Fact, Outcome, Sample, SampleRequest};
use crate::error::CoordinatorError;
use crate::fleet::{AgentHub, AgentReport};
use crate::leadership::Leadership;
use crate::node::{Node, now_unix_ms};
use crate::plans::Planned;
use crate::prometheus::Prometheus;
use crate::state::{Op, ReleaseId, ReleaseRetention, Response, State};

/// How often the engine looks at its releases when nothing happens.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// How often the leader checks the release history against its retention.
const HISTORY_CHECK: Duration = Duration::from_secs(1);

/// Most decision rounds per pass (a guard against a decision loop).
const MAX_ROUNDS: usize = 256;

/// What an agent is told about a step the release has asked it to stop.
const CANCEL_REASON: &str = "the release is rolling back this service";

/// Most agent reports committed in one log entry. Reports that arrive while one entry
/// is being committed go into the next, so under load a batch of a thousand hosts
/// costs a few round trips, not a thousand.
const MAX_REPORTS_PER_ENTRY: usize = 512;

/// Starts the engine driver: it runs whenever this node leads, and keeps the release
/// history to `retention`.
pub fn spawn(
    node: Node,
    hub: AgentHub,
    retention: ReleaseRetention,
    prometheus: Prometheus,
) -> tokio::task::JoinHandle<()> {
    let reports = hub.subscribe();
    tokio::spawn(async move { run(node, hub, reports, retention, prometheus).await })
}

async fn run(
    node: Node,
    hub: AgentHub,
    mut reports: mpsc::Receiver<AgentReport>,
    retention: ReleaseRetention,
    prometheus: Prometheus,
) {
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
                let mut leader = Leader::new(node.clone(), hub.clone(), term, retention, prometheus.clone());
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
    cancels_sent: BTreeSet<CommandId>,
    last_applied: Option<u64>,
    /// Per release, the run version at which the engine last decided nothing, and the
    /// deadline it asked to be woken at.
    quiet: HashMap<ReleaseId, (u64, Option<i64>)>,
    /// The release history to keep.
    retention: ReleaseRetention,
    /// The revision of the release policy the quiet releases were decided under.
    policy_revision: Option<u64>,
    /// When the history was last checked against the retention.
    history_checked: Option<Instant>,
    /// Where canary analyses' queries go.
    prometheus: Prometheus,
    /// Rounds of analysis queries running, so a round is queried once.
    sampling: HashSet<Sampling>,
    /// Rounds whose queries answered, to commit.
    sampled: (mpsc::UnboundedSender<Sampled>, mpsc::UnboundedReceiver<Sampled>),
}

/// A round of a batch's analysis: release, stage, service, batch, round.
type Sampling = (ReleaseId, usize, ServiceName, usize, usize);

/// What a round's queries returned.
struct Sampled {
    id: ReleaseId,
    request: SampleRequest,
    samples: Vec<Sample>,
}

impl Leader {
    fn new(node: Node, hub: AgentHub, term: u64, retention: ReleaseRetention, prometheus: Prometheus) -> Self {
        Self {
            prometheus,
            sampling: HashSet::new(),
            sampled: mpsc::unbounded_channel(),
            node,
            hub,
            term,
            cancels_sent: BTreeSet::new(),
            last_applied: None,
            quiet: HashMap::new(),
            retention,
            policy_revision: None,
            history_checked: None,
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
                Some(sampled) = self.sampled.1.recv() => self.on_sampled(sampled).await?,
                () = tokio::time::sleep_until(Instant::now() + sleep) => {}
            }
        }
    }

    /// Ids of releases that have not finished.
    fn active(&self) -> Vec<ReleaseId> {
        self.node.read_local(|s| s.active_releases().map(|r| r.submitted.id.clone()).collect())
    }

    /// Ids of active releases worth deciding on now: changed since the engine last had
    /// nothing to say about them, or with a deadline due.
    fn due(&self, now: i64) -> Vec<ReleaseId> {
        self.node.read_local(|s| {
            s.active_releases()
                .filter(|r| match self.quiet.get(&r.submitted.id) {
                    Some(&(version, wake)) => version != r.run.version || wake.is_some_and(|w| w <= now),
                    None => true,
                })
                .map(|r| r.submitted.id.clone())
                .collect()
        })
    }

    /// The plan of a release the state holds (built once, shared with the API); `None`
    /// (logged) for a stored release that no longer plans.
    fn planned(state: &State, id: &str) -> Option<Planned> {
        match state.release(id)?.plan() {
            Ok(p) => Some(p),
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
            let (started, owed) = self.node.read_local(|s| match s.release(&id) {
                Some(r) => (r.run.version > 0, r.run.resend(None)),
                None => (false, Vec::new()),
            });
            let outstanding: Vec<CommandId> = owed.iter().map(|a| a.command().clone()).collect();
            let sent_now = self.perform(&id, &owed);
            tracing::info!(release = id, outstanding = outstanding.len(), sent_now, "took the release over");
            if started {
                let fact = Fact::LeaderChanged { node: self.node.id(), resent: outstanding };
                self.propose(&id, None, fact).await?;
            }
        }
        Ok(())
    }

    /// Performs `actions` of release `id`: builds each step to send from the run's
    /// record of it and the release's spec, and sends it or its cancel through the hub
    /// (a host without a session gets its step when it connects). Returns how many
    /// steps were sent.
    fn perform(&mut self, id: &str, actions: &[Action]) -> usize {
        if actions.is_empty() {
            return 0;
        }
        let term = self.term;
        let node = self.node.clone();
        let built: Vec<(&Action, Option<v1::Step>)> = node.read_local(|s| {
            let rec = s.release(id);
            // Only a step to send needs the plan (a finished release's is built per call).
            let planned =
                actions.iter().any(|a| matches!(a, Action::Send { .. })).then(|| Self::planned(s, id)).flatten();
            actions
                .iter()
                .map(|action| {
                    let step = match action {
                        Action::Send { command, .. } => rec.zip(planned.as_ref()).and_then(|(rec, p)| {
                            let st = rec.run.steps.get(command)?;
                            let stage = rec.run.stages.get(st.stage).map(|x| x.name.as_str()).unwrap_or_default();
                            crate::steps::build(id, &command.to_string(), term, st, p.0.spec(), stage)
                        }),
                        Action::Cancel { .. } => None,
                    };
                    (action, step)
                })
                .collect()
        });
        let mut sent = 0;
        for (action, step) in built {
            match (action, step) {
                (Action::Cancel { command, host }, _) => {
                    self.hub.cancel(host.as_str(), &command.to_string(), term, CANCEL_REASON);
                    self.cancels_sent.insert(command.clone());
                }
                (Action::Send { command, host }, Some(step)) => match self.hub.send(host.as_str(), step) {
                    Ok(()) => sent += 1,
                    Err(e) => tracing::debug!(
                        %host,
                        %command,
                        reason = e.reason,
                        "step not sent now; sent when the agent is back"
                    ),
                },
                (Action::Send { command, .. }, None) => {
                    tracing::error!(%command, "the stored release lacks what this step needs; not sent");
                }
            }
        }
        sent
    }

    async fn propose(&self, id: &str, expect: Option<u64>, fact: Fact) -> Result<Response, CoordinatorError> {
        let what = fact.to_string();
        let resp = self.node.propose(Op::Release { release: id.to_owned(), expect, fact }).await?;
        match (&resp, resp.refused_why()) {
            (Response::Applied { .. }, _) => tracing::info!(release = id, "{what}"),
            (_, Some(reason)) => tracing::debug!(release = id, reason, "not applied: {what}"),
            _ => {}
        }
        Ok(resp)
    }

    /// Commits the decisions of one round, each made against run `version` of its
    /// release, in one log entry: each fact of a decision expects the version the one
    /// before it leaves, so a decision's facts apply in order or, from the first that
    /// finds the run moved on, not at all (the other releases' decisions are not
    /// affected). Performs the actions of the facts that applied; returns the releases
    /// whose every fact applied.
    async fn commit_decisions(&mut self, decisions: Vec<Decided>) -> Result<Vec<ReleaseId>, CoordinatorError> {
        let mut ops = Vec::new();
        let mut expected = Vec::with_capacity(decisions.len());
        for Decided { id, version, facts } in decisions {
            let shown: Vec<String> = facts.iter().map(ToString::to_string).collect();
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
            let mut actions = Vec::new();
            for what in shown {
                match responses.next() {
                    Some(Response::Applied { actions: more, .. }) => {
                        tracing::info!(release = id, "{what}");
                        actions.extend(more);
                    }
                    other => {
                        let reason = other.as_ref().and_then(Response::refused_why).unwrap_or_default();
                        tracing::debug!(release = id, reason, "not applied: {what}");
                        applied = false;
                    }
                }
            }
            self.perform(&id, &actions);
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
        self.cancels_sent.retain(|c| active.contains(c.release()));
        // The windows changed: a release they held (or did not) is decided again.
        let revision = self.node.read_local(|s| s.policy().revision());
        if self.policy_revision != Some(revision) {
            self.quiet.clear();
            self.policy_revision = Some(revision);
        }
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
                let decided = self.node.read_local(|s| {
                    let rec = s.release(&id)?;
                    let p = Self::planned(s, &id)?;
                    let fleet = s.fleet();
                    let online = |h: &HostId| fleet.agent(h.as_str()).is_some_and(|a| a.online && !a.drained());
                    // Windows select hosts by the labels the release was planned with,
                    // indexed when a window first asks (never without windows).
                    let by_id = std::cell::OnceCell::new();
                    let labels = |h: &HostId| {
                        by_id
                            .get_or_init(|| p.1.hosts.iter().map(|x| (&x.id, &x.labels)).collect::<HashMap<_, _>>())
                            .get(h)
                            .copied()
                    };
                    let hold = |svc: &ServiceName, hosts: &[HostId]| s.policy().hold(svc, hosts, labels, now);
                    let ctx = Context { release: &id, plan: &p.0, fleet: &p.1 };
                    let env = Env::new(now, &online).with_windows(&hold);
                    Some((rec.run.version, engine::decide(&rec.run, ctx, &env)))
                });
                let Some((version, mut decision)) = decided else { continue };
                for request in std::mem::take(&mut decision.samples) {
                    self.sample(&id, request);
                }
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
        self.keep_history().await?;
        Ok(wake)
    }

    /// Runs a round of analysis queries in the background, unless it runs already; its
    /// answers come back through `sampled`.
    fn sample(&mut self, id: &ReleaseId, request: SampleRequest) {
        let key = (id.clone(), request.stage, request.service.clone(), request.batch, request.round);
        if !self.sampling.insert(key) {
            return;
        }
        let (prometheus, tx, id) = (self.prometheus.clone(), self.sampled.0.clone(), id.clone());
        tokio::spawn(async move {
            let samples = prometheus.sample(&request, now_unix_ms()).await;
            let _ = tx.send(Sampled { id, request, samples });
        });
    }

    /// Commits a round of analysis samples (refused harmlessly if the analysis moved on).
    async fn on_sampled(&mut self, sampled: Sampled) -> Result<(), CoordinatorError> {
        let Sampled { id, request, samples } = sampled;
        let SampleRequest { stage, service, batch, round, .. } = request;
        self.sampling.remove(&(id.clone(), stage, service.clone(), batch, round));
        let errors = samples.iter().filter(|s| s.error.is_some()).count();
        if errors > 0 {
            tracing::warn!(release = id, %service, batch, round, errors, "canary analysis queries failed");
        }
        self.propose(&id, None, Fact::AnalysisSampled { stage, service, batch, round, samples }).await?;
        Ok(())
    }

    /// Compacts the finished releases the retention no longer keeps whole, checking at
    /// most once per [`HISTORY_CHECK`].
    async fn keep_history(&mut self) -> Result<(), CoordinatorError> {
        if self.history_checked.is_some_and(|at| at.elapsed() < HISTORY_CHECK) {
            return Ok(());
        }
        self.history_checked = Some(Instant::now());
        let retention = self.retention;
        if !self.node.read_local(|s| s.needs_compaction(now_unix_ms(), &retention)) {
            return Ok(());
        }
        let response = self.node.propose(Op::CompactReleases(retention)).await?;
        if let Response::Compacted { compacted, forgotten } = &response {
            tracing::info!(compacted = compacted.len(), forgotten, "compacted finished releases");
        }
        Ok(())
    }

    /// Sends the cancels the release owes that this leader has not sent (a rollback an
    /// operator decided asks running steps to stop).
    fn send_cancels(&mut self, id: &str) {
        let owed: Vec<Action> = self.node.read_local(|s| {
            s.release(id)
                .map(|r| r.run.cancels().filter(|a| !self.cancels_sent.contains(a.command())).collect())
                .unwrap_or_default()
        });
        self.perform(id, &owed);
    }

    /// Commits the agents' results among `reports` in one log entry (reported facts
    /// are checked on their own terms, so one refused does not hold up the others),
    /// acknowledges them to their agents once committed, then re-sends outstanding steps
    /// to the hosts that connected.
    async fn on_reports(&mut self, reports: Vec<AgentReport>) -> Result<(), CoordinatorError> {
        let mut ops = Vec::new();
        let mut releases = Vec::new();
        let mut acks: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut not_ours: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut connected = Vec::new();
        for report in reports {
            match report {
                AgentReport::Connected { host, .. } => connected.push(host),
                AgentReport::Result { host, result } => match reported(&result) {
                    Some((release, fact)) => {
                        releases.push(release.clone());
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
            let responses = match resp {
                Response::Batch(all) => all,
                one => vec![one],
            };
            for (release, response) in releases.iter().zip(responses) {
                if let Response::Applied { actions, .. } = response {
                    self.perform(release, &actions);
                }
            }
        }
        for host in connected {
            let host = HostId::new(host);
            for id in self.active() {
                let owed = self.node.read_local(|s| s.release(&id).map(|r| r.run.resend(Some(&host))));
                self.perform(&id, &owed.unwrap_or_default());
            }
        }
        Ok(())
    }
}

/// The release and the fact an agent's result stands for; `None` for a command id
/// that names no release.
fn reported(result: &v1::StepResult) -> Option<(ReleaseId, Fact)> {
    let command_id: CommandId = result.command_id.parse().ok()?;
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
    Some((command_id.release().to_owned(), Fact::StepReported { command_id, outcome, reason }))
}

/// Logs what a committed batch of reports did: applied facts at info, refusals at debug.
fn log_response(shown: &str, resp: &Response) {
    match resp {
        Response::Batch(all) => {
            let refused: Vec<String> = all.iter().filter_map(Response::refused_why).collect();
            tracing::info!(reports = all.len(), refused = refused.len(), "committed agent reports: {shown}");
            for reason in refused {
                tracing::debug!(reason, "report not applied");
            }
        }
        one => match one.refused_why() {
            Some(reason) => tracing::debug!(reason, "not applied: {shown}"),
            None => tracing::info!("{shown}"),
        },
    }
}
