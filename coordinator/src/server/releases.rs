//! The `Releases` service: plan, submit, read, list and watch releases, and the
//! operator actions (approve, pause, resume, abort, rollback), each committed through
//! Raft as a fact the release engine then acts on.

use flotilla_net::pki::OperatorRole;
use flotilla_proto::status::Reason;
use flotilla_proto::v1::releases_client::ReleasesClient;
use flotilla_proto::v1::releases_server::Releases;
use flotilla_proto::v1::{self, Severity};
use flotilla_shared::inventory::Fleet;
use flotilla_shared::model::HostId;
use flotilla_shared::plan::Plan;
use flotilla_shared::spec::{self, ApprovalRule, ApproverRole, SourceFile, SpecErrors};
use futures::Stream;
use tonic::{Request, Response, Status};

use super::on_leader;
use crate::audit::AuditNote;
use crate::auth::Actor;
use crate::engine::{self, ApprovalKind, Fact, Phase, Refusal};
use crate::error::CoordinatorError;
use crate::node::{Lifecycle, Node};
use crate::plans::StoredFleet;
use crate::server::release_view;
use crate::state::{CompactedRelease, NewRelease, Op, ReleaseRecord, Response as Applied, State};
use crate::stats;

/// Serves `Releases` for one node.
#[derive(Debug, Clone)]
pub struct ReleasesService {
    node: Node,
    /// Whether this coordinator can query Prometheus for canary analysis.
    prometheus: bool,
}

impl ReleasesService {
    /// The service of `node`, which has no Prometheus to query.
    pub fn new(node: Node) -> Self {
        Self { node, prometheus: false }
    }

    /// The same service, able (or not) to query Prometheus.
    #[must_use]
    pub fn with_prometheus(mut self, configured: bool) -> Self {
        self.prometheus = configured;
        self
    }
}

/// A release whose services are judged by their metrics needs a Prometheus to query:
/// refused on a leader without one, naming those services, rather than created and
/// paused at its first canary. (Leadership may still move to a coordinator without one
/// later; its analyses then pause saying so.)
fn require_prometheus(plan: &Plan, configured: bool) -> Result<(), CoordinatorError> {
    if configured {
        return Ok(());
    }
    let measured: Vec<&str> =
        plan.spec().services.iter().filter(|s| s.policy.analyses()).map(|s| s.name.as_str()).collect();
    if measured.is_empty() {
        return Ok(());
    }
    Err(CoordinatorError::precondition(
        Reason::StateConflict,
        format!(
            "canary analysis of {} needs Prometheus, and this coordinator has none configured: set \
             prometheus_url in its configuration (or --prometheus-url), or turn analysis off with \
             `enabled = false` under [defaults.analysis]",
            measured.join(", ")
        ),
    ))
}

/// A spec's file name as errors show it.
fn file_name(given: &str) -> String {
    if given.is_empty() { "spec.toml".to_owned() } else { given.to_owned() }
}

/// Parses and plans a spec offline; a bad spec becomes INVALID_ARGUMENT with the same
/// text the CLI prints.
fn check_spec(text: &str, name: &str) -> Result<(SourceFile, Plan), CoordinatorError> {
    let source = SourceFile::new(name, text);
    let planned = spec::parse(&source).and_then(|s| Plan::build(&s, None).map_err(|d| source.locate_all(d)));
    match planned {
        Ok(plan) => Ok((source, plan)),
        Err(errors) => Err(bad_spec(&errors)),
    }
}

/// Parses and plans a spec against a fleet (the live one for submissions).
fn plan_against(text: &str, name: &str, fleet: &Fleet) -> Result<(SourceFile, Plan), CoordinatorError> {
    let source = SourceFile::new(name, text);
    let planned = spec::parse(&source).and_then(|s| Plan::build(&s, Some(fleet)).map_err(|d| source.locate_all(d)));
    match planned {
        Ok(plan) => Ok((source, plan)),
        Err(errors) => Err(bad_spec(&errors)),
    }
}

fn bad_spec(errors: &SpecErrors) -> CoordinatorError {
    let diagnostics = errors
        .0
        .iter()
        .map(|e| v1::Diagnostic {
            severity: Severity::Error as i32,
            location: Some(v1::SourceLocation {
                file: e.file.clone(),
                line: u32::try_from(e.line).unwrap_or(u32::MAX),
                column: u32::try_from(e.column).unwrap_or(u32::MAX),
            }),
            message: e.message.clone(),
            rendered: e.to_string(),
        })
        .collect();
    CoordinatorError::BadSpec { rendered: errors.to_string(), errors: v1::SpecErrors { errors: diagnostics } }
}

/// The status a stream of a stopping node ends with: UNAVAILABLE, with the leader's
/// address when another node leads, so the client resumes there.
fn leaving(node: &Node) -> Status {
    match node.check_leader() {
        Err(e @ CoordinatorError::NotLeader { .. }) => e.into(),
        _ => CoordinatorError::ShuttingDown { node_id: node.id() }.into(),
    }
}

/// Completes when the node starts closing its streams (or is gone).
async fn closing(life: &mut tokio::sync::watch::Receiver<Lifecycle>) {
    let _ = life.wait_for(|l| *l == Lifecycle::Closing).await.map(|_| ());
}

/// How long `Watch` on a follower waits for a release the leader knows to reach this
/// node's applied state (it is committed, so this is replication lag).
const WATCH_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) fn view(r: &ReleaseRecord) -> v1::Release {
    let planned = r.plan().ok();
    let mut release = release_view::release(r, planned.as_ref().map(|p| &p.0));
    release.plan =
        planned.map(|p| super::plan_view::plan(&p.0, &SourceFile::new(&r.submitted.file_name, &r.submitted.spec_text)));
    release
}

fn get_view(s: &State, id: &str) -> Result<v1::Release, CoordinatorError> {
    match (s.release(id), s.compacted(id)) {
        (Some(r), _) => {
            let mut release = view(r);
            release.notifications = super::policy::notifications(s.policy(), r);
            Ok(release)
        }
        (None, Some(c)) => Ok(release_view::compacted(c)),
        (None, None) => Err(CoordinatorError::no_release(id)),
    }
}

/// The error for an action on release `id`, which `s` does not hold whole: a
/// compacted release cannot be acted on, an unknown one is not found.
fn not_held(s: &State, id: &str) -> CoordinatorError {
    if s.compacted(id).is_some() {
        CoordinatorError::precondition(
            Reason::ReleaseStateConflict,
            format!(
                "release {id} finished and was compacted: the cluster keeps only its summary, which cannot be acted on"
            ),
        )
    } else {
        CoordinatorError::no_release(id)
    }
}

/// INVALID_ARGUMENT for a request without a release id.
fn require_id(id: &str) -> Result<(), CoordinatorError> {
    if id.is_empty() { Err(CoordinatorError::missing("release_id")) } else { Ok(()) }
}

/// Whether the cluster knows release `id`: from this node's applied state, else
/// asked of the leader (a linearizable read here when this node leads, a `Get`
/// forwarded to it otherwise), so a follower that has not applied a new release yet
/// does not call it unknown.
async fn known_to_cluster(node: &Node, id: &str) -> Result<bool, Status> {
    let known = |s: &State| s.release(id).is_some() || s.compacted(id).is_some();
    if node.read_local(known) {
        return Ok(true);
    }
    match node.check_leader() {
        Ok(()) => Ok(node.read(known).await?),
        Err(CoordinatorError::NotLeader { leader_id, leader_addr }) => {
            let ch = node
                .forward_channel(&leader_addr)
                .map_err(|_| Status::from(CoordinatorError::NotLeader { leader_id, leader_addr }))?;
            let mut req = Request::new(v1::GetRequest { release_id: id.to_owned() });
            req.metadata_mut()
                .insert(super::FORWARDED, node.id().to_string().parse().expect("a number is valid metadata"));
            match ReleasesClient::new(ch).get(req).await {
                Ok(_) => Ok(true),
                Err(status) if status.code() == tonic::Code::NotFound => Ok(false),
                Err(status) => Err(status),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// A release in a list: kept whole, or only its summary.
enum Listed<'a> {
    Whole(&'a ReleaseRecord),
    Compacted(&'a CompactedRelease),
}

pub(crate) fn services_total(r: &ReleaseRecord) -> usize {
    r.run.stages.first().map_or_else(|| r.plan().map_or(0, |p| p.0.spec().services.len()), |st| st.services.len())
}

/// Commits an operator's fact and answers with the release after it.
async fn act(node: &Node, id: &str, fact: Fact) -> Result<v1::Release, CoordinatorError> {
    require_id(id)?;
    node.read(|s| s.release(id).map(|_| ()).ok_or_else(|| not_held(s, id))).await??;
    match node.propose(Op::Release { release: id.to_owned(), expect: None, fact }).await? {
        Applied::Applied { .. } => node.read_local(|s| get_view(s, id)),
        other => Err(fact_not_applied(id, other)),
    }
}

/// The host a guided-failure call names.
fn required_host(host: &str) -> Result<HostId, CoordinatorError> {
    if host.is_empty() { Err(CoordinatorError::missing("host")) } else { Ok(HostId::from(host)) }
}

/// The longest note `Releases.Annotate` takes, in bytes.
pub const MAX_NOTE_BYTES: usize = 1024;

/// Commits an operator's note on release `id`. No read first: the state machine
/// refuses a note on a release it does not hold, so a note is one log entry and one
/// round trip to a quorum.
async fn note(node: &Node, id: &str, actor: String, text: String) -> Result<(), CoordinatorError> {
    require_id(id)?;
    if text.trim().is_empty() {
        return Err(CoordinatorError::missing("text"));
    }
    if text.len() > MAX_NOTE_BYTES {
        return Err(CoordinatorError::InvalidField {
            field: "text",
            message: format!("a note is {} bytes, more than the {MAX_NOTE_BYTES} a note may have", text.len()),
        });
    }
    let fact = Fact::Noted { actor, text };
    match node.propose(Op::Release { release: id.to_owned(), expect: None, fact }).await? {
        Applied::Applied { .. } => Ok(()),
        other => Err(fact_not_applied(id, other)),
    }
}

/// The error for a fact about release `id` that was not applied.
fn fact_not_applied(id: &str, response: Applied) -> CoordinatorError {
    match response {
        Applied::NoRelease { .. } => CoordinatorError::no_release(id),
        Applied::FactRefused(refusal) => {
            CoordinatorError::precondition(Reason::ReleaseStateConflict, refusal.to_string())
        }
        Applied::ReleaseConflict(conflict) => CoordinatorError::ReleaseConflict(conflict),
        other => CoordinatorError::Internal(format!("unexpected result {other:?}")),
    }
}

/// The largest answer a forwarded call takes from the leader: a release's view
/// carries its whole plan (a 10,000-service release's is several megabytes).
const MAX_FORWARDED_ANSWER: usize = 256 * 1024 * 1024;

macro_rules! forward {
    ($method:ident) => {
        |ch, req| async move {
            ReleasesClient::new(ch).max_decoding_message_size(MAX_FORWARDED_ANSWER).$method(req).await
        }
    };
}

#[tonic::async_trait]
impl Releases for ReleasesService {
    async fn plan(&self, request: Request<v1::PlanRequest>) -> Result<Response<v1::PlanResponse>, Status> {
        let req = request.into_inner();
        let name = file_name(&req.file_name);
        let (source, plan) = if req.offline {
            check_spec(&req.spec_toml, &name)?
        } else {
            let fleet = self.node.read_local(|s| s.fleet().planning_fleet());
            plan_against(&req.spec_toml, &name, &fleet)?
        };
        Ok(Response::new(v1::PlanResponse { plan: Some(super::plan_view::plan(&plan, &source)) }))
    }

    async fn create(&self, request: Request<v1::CreateRequest>) -> Result<Response<v1::CreateResponse>, Status> {
        let node = self.node.clone();
        let prometheus = self.prometheus;
        let created_by = Actor::of(&request).name;
        let note = AuditNote::of(&request);
        let created = on_leader(
            &self.node,
            request,
            |req| async move {
                let name = file_name(&req.file_name);
                let key = req.idempotency_key.clone();
                // A key seen before answers without planning again: the same spec gets
                // its release back, another spec is refused.
                let seen = node
                    .read_for_write(|s| {
                        s.release_by_key(&key).map(|r| (r.submitted.id.clone(), r.submitted.spec_text == req.spec_toml))
                    })
                    .await?;
                match seen {
                    _ if key.is_empty() => {}
                    Some((id, true)) => {
                        let release = node.read_local(|s| get_view(s, &id))?;
                        return Ok(v1::CreateResponse { release: Some(release), created: false });
                    }
                    Some((release_id, false)) => return Err(CoordinatorError::KeyReused { key, release_id }),
                    None => {}
                }
                // Planned against the live fleet as this leader has applied it; the
                // create itself is ordered by Raft (see `Node::read_for_write`).
                let fleet = node.read_for_write(|s| s.fleet().planning_fleet()).await?;
                let (_, plan) = plan_against(&req.spec_toml, &name, &fleet)?;
                require_prometheus(&plan, prometheus)?;
                let op = Op::CreateRelease(NewRelease {
                    id: node.next_release_id(),
                    idempotency_key: req.idempotency_key,
                    name: plan.spec().release.clone(),
                    file_name: name,
                    spec_text: req.spec_toml,
                    fleet: StoredFleet::from(&fleet),
                    created_by,
                });
                match node.propose(op).await? {
                    Applied::Release { id, created } => {
                        let release = node.read_local(|s| get_view(s, &id))?;
                        Ok(v1::CreateResponse { release: Some(release), created })
                    }
                    Applied::KeyReused { id } => Err(CoordinatorError::KeyReused { key, release_id: id }),
                    Applied::ReleaseConflict(conflict) => Err(CoordinatorError::ReleaseConflict(conflict)),
                    Applied::Refused { reason } => Err(CoordinatorError::precondition(Reason::StateConflict, reason)),
                    other => Err(CoordinatorError::Internal(format!("unexpected result {other:?}"))),
                }
            },
            forward!(create),
        )
        .await;
        // Also when a follower forwarded the call: the answer names the release.
        if let Ok(Some(release)) = created.as_ref().map(|r| r.get_ref().release.as_ref()) {
            note.release(&release.id);
        }
        created
    }

    async fn get(&self, request: Request<v1::GetRequest>) -> Result<Response<v1::GetResponse>, Status> {
        let node = self.node.clone();
        on_leader(
            &self.node,
            request,
            |req| async move {
                require_id(&req.release_id)?;
                let release = node.read(|s| get_view(s, &req.release_id)).await??;
                Ok(v1::GetResponse { release: Some(release) })
            },
            forward!(get),
        )
        .await
    }

    async fn list(&self, request: Request<v1::ListRequest>) -> Result<Response<v1::ListResponse>, Status> {
        let node = self.node.clone();
        on_leader(
            &self.node,
            request,
            |req| async move {
                let page = if req.page_size == 0 { 100 } else { req.page_size.min(1_000) } as usize;
                let wanted: Vec<i32> = req.states.clone();
                let listed = node
                    .read(|s| {
                        // Newest first, compacted ones among the others by creation; a
                        // page starts at the release its token names.
                        let mut all: Vec<(u64, &str, v1::ReleaseState, Listed<'_>)> = s
                            .releases()
                            .map(|r| {
                                (
                                    r.created_index,
                                    r.submitted.id.as_str(),
                                    release_view::release_state(&r.run),
                                    Listed::Whole(r),
                                )
                            })
                            .chain(s.history().map(|c| {
                                (
                                    c.created_index,
                                    c.id.as_str(),
                                    release_view::terminal_state(c.outcome),
                                    Listed::Compacted(c),
                                )
                            }))
                            .collect();
                        all.sort_by(|a, b| (b.0, b.1).cmp(&(a.0, a.1)));
                        let start = if req.page_token.is_empty() {
                            0
                        } else {
                            all.iter().position(|(_, id, _, _)| *id == req.page_token)?
                        };
                        let mut rest = all[start..]
                            .iter()
                            .filter(|(_, _, state, _)| wanted.is_empty() || wanted.contains(&(*state as i32)));
                        let page: Vec<v1::ReleaseSummary> = rest
                            .by_ref()
                            .take(page)
                            .map(|(_, _, _, r)| match r {
                                Listed::Whole(r) => release_view::summary(r, services_total(r)),
                                Listed::Compacted(c) => release_view::compacted_summary(c),
                            })
                            .collect();
                        Some((page, rest.next().map(|(_, id, _, _)| (*id).to_owned()).unwrap_or_default()))
                    })
                    .await?;
                let (releases, next) = listed.ok_or_else(|| CoordinatorError::InvalidField {
                    field: "page_token",
                    message: format!("page token `{}` names no release; start again without it", req.page_token),
                })?;
                Ok(v1::ListResponse { releases, next_page_token: next })
            },
            forward!(list),
        )
        .await
    }

    type WatchStream = std::pin::Pin<Box<dyn Stream<Item = Result<v1::ReleaseEvent, Status>> + Send>>;

    /// Streams a release's events after `after_index` from this node's applied state
    /// (events are committed, so any coordinator serves them), then follows new ones
    /// until the release ends.
    async fn watch(&self, request: Request<v1::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let req = request.into_inner();
        let node = self.node.clone();
        if node.lifecycle() != Lifecycle::Serving {
            return Err(leaving(&node));
        }
        require_id(&req.release_id)?;
        if !known_to_cluster(&node, &req.release_id).await? {
            return Err(CoordinatorError::no_release(&req.release_id).into());
        }
        // The leader knows it; this node may not have applied its creation yet (the
        // client just created it through the leader).
        let mut metrics = node.raft().metrics();
        let deadline = tokio::time::Instant::now() + WATCH_CATCH_UP;
        while node.read_local(|s| s.release(&req.release_id).is_none() && s.compacted(&req.release_id).is_none()) {
            if !matches!(tokio::time::timeout_at(deadline, metrics.changed()).await, Ok(Ok(()))) {
                return Err(CoordinatorError::Internal(format!(
                    "release {} is committed but this coordinator has not applied it within {:?}",
                    req.release_id, WATCH_CATCH_UP
                ))
                .into());
            }
        }
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            let mut metrics = node.raft().metrics();
            let mut life = node.lifecycle_changes();
            let mut after = req.after_index;
            loop {
                let (events, finished) = node.read_local(|s| {
                    let Some(r) = s.release(&req.release_id) else {
                        // Compacted, now or while it was watched: the events it had
                        // that this stream has not sent are gone.
                        let gone = s.compacted(&req.release_id).filter(|c| c.last_event_index > after).map(|c| {
                            Err(CoordinatorError::precondition(
                                Reason::ReleaseStateConflict,
                                format!(
                                    "release {} finished and was compacted: its events after {after} (to {}) are no \
                                     longer kept; `Get` shows its summary",
                                    c.id, c.last_event_index
                                ),
                            )
                            .into())
                        });
                        return (gone.into_iter().collect(), true);
                    };
                    let start = usize::try_from(after).unwrap_or(usize::MAX).min(r.run.events.len());
                    let events: Vec<Result<v1::ReleaseEvent, Status>> =
                        r.run.events[start..].iter().map(|e| Ok(release_view::event(&r.submitted.id, e))).collect();
                    (events, r.run.is_finished())
                });
                for e in events {
                    if let Ok(e) = &e {
                        after = e.index;
                    }
                    if tx.send(e).await.is_err() {
                        return;
                    }
                }
                if finished {
                    return;
                }
                tokio::select! {
                    changed = metrics.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                    // The node is stopping: the watcher resumes elsewhere from `after`.
                    () = closing(&mut life) => {
                        let _ = tx.send(Err(leaving(&node))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn approve(&self, request: Request<v1::ApproveRequest>) -> Result<Response<v1::ApproveResponse>, Status> {
        let node = self.node.clone();
        let approver = Actor::of(&request);
        let who = approver.name.clone();
        AuditNote::of(&request).release(&request.get_ref().release_id);
        on_leader(
            &self.node,
            request,
            |req| async move {
                require_id(&req.release_id)?;
                let (pending, (gates, stages), author) = node
                    .read(|s| {
                        s.release(&req.release_id)
                            .map(|r| (r.run.approvals.clone(), approvable(r), r.submitted.created_by.clone()))
                            .ok_or_else(|| not_held(s, &req.release_id))
                    })
                    .await??;
                let wanted = match &req.target {
                    Some(v1::approve_request::Target::Gate(g)) => Some((ApprovalKind::Gate, g.clone())),
                    Some(v1::approve_request::Target::Stage(st)) => Some((ApprovalKind::Stage, st.clone())),
                    None => None,
                };
                match &wanted {
                    Some((ApprovalKind::Gate, g)) if !gates.iter().any(|(n, _)| n == g) => {
                        let msg = format!("release {} has no gate {g} (gates: {})", req.release_id, listed(&gates));
                        return Err(CoordinatorError::no_part("gate", g, msg));
                    }
                    Some((ApprovalKind::Stage, st)) if !stages.iter().any(|(n, _)| n == st) => {
                        let msg = format!("release {} has no stage {st} (stages: {})", req.release_id, listed(&stages));
                        return Err(CoordinatorError::no_part("stage", st, msg));
                    }
                    _ => {}
                }
                let (kind, name) = match wanted {
                    Some(w) => w,
                    None => match pending.as_slice() {
                        [one] => (one.kind, one.name.clone()),
                        [] => {
                            return Err(CoordinatorError::precondition(
                                Reason::ApprovalNotPending,
                                format!("release {} waits for no approval", req.release_id),
                            ));
                        }
                        many => {
                            let names: Vec<String> = many.iter().map(|a| format!("{} {}", a.kind, a.name)).collect();
                            return Err(CoordinatorError::precondition(
                                Reason::ApprovalNotPending,
                                format!(
                                    "release {} waits for several approvals ({}); name one with --gate or --stage",
                                    req.release_id,
                                    names.join(", ")
                                ),
                            ));
                        }
                    },
                };
                let rule = match kind {
                    ApprovalKind::Gate => gates.iter().find(|(g, _)| *g == name),
                    ApprovalKind::Stage => stages.iter().find(|(st, _)| *st == name),
                }
                .map(|(_, rule)| *rule)
                .unwrap_or_default();
                may_approve(rule, &author, &approver, &req.release_id, &format!("{kind} {name}"))?;
                let release =
                    act(&node, &req.release_id, Fact::Approved { kind, name, actor: who, comment: req.comment })
                        .await?;
                Ok(v1::ApproveResponse { release: Some(release) })
            },
            forward!(approve),
        )
        .await
    }

    async fn pause(&self, request: Request<v1::PauseRequest>) -> Result<Response<v1::PauseResponse>, Status> {
        let node = self.node.clone();
        let who = Actor::of(&request).name;
        AuditNote::of(&request).release(&request.get_ref().release_id);
        on_leader(
            &self.node,
            request,
            |req| async move {
                let reason = if req.reason.is_empty() { "asked by an operator".to_owned() } else { req.reason };
                let release = act(&node, &req.release_id, Fact::Paused { actor: who, reason }).await?;
                Ok(v1::PauseResponse { release: Some(release) })
            },
            forward!(pause),
        )
        .await
    }

    async fn annotate(&self, request: Request<v1::AnnotateRequest>) -> Result<Response<v1::AnnotateResponse>, Status> {
        let node = self.node.clone();
        let who = Actor::of(&request).name;
        AuditNote::of(&request).release(&request.get_ref().release_id);
        on_leader(
            &self.node,
            request,
            |req| async move {
                note(&node, &req.release_id, who, req.text).await?;
                Ok(v1::AnnotateResponse {})
            },
            forward!(annotate),
        )
        .await
    }

    async fn retry_host(
        &self,
        request: Request<v1::RetryHostRequest>,
    ) -> Result<Response<v1::RetryHostResponse>, Status> {
        let node = self.node.clone();
        let who = Actor::of(&request).name;
        AuditNote::of(&request).release(&request.get_ref().release_id);
        on_leader(
            &self.node,
            request,
            |req| async move {
                let host = required_host(&req.host)?;
                let fact = Fact::HostRetried { host, actor: who, reason: req.reason };
                let release = act(&node, &req.release_id, fact).await?;
                Ok(v1::RetryHostResponse { release: Some(release) })
            },
            forward!(retry_host),
        )
        .await
    }

    async fn exclude_host(
        &self,
        request: Request<v1::ExcludeHostRequest>,
    ) -> Result<Response<v1::ExcludeHostResponse>, Status> {
        let node = self.node.clone();
        let who = Actor::of(&request).name;
        AuditNote::of(&request).release(&request.get_ref().release_id);
        on_leader(
            &self.node,
            request,
            |req| async move {
                let host = required_host(&req.host)?;
                let fact = Fact::HostExcluded { host, actor: who, reason: req.reason };
                let release = act(&node, &req.release_id, fact).await?;
                Ok(v1::ExcludeHostResponse { release: Some(release) })
            },
            forward!(exclude_host),
        )
        .await
    }

    async fn stats(&self, request: Request<v1::StatsRequest>) -> Result<Response<v1::StatsResponse>, Status> {
        let node = self.node.clone();
        on_leader(
            &self.node,
            request,
            |req| async move {
                if req.since_ms < 0 {
                    return Err(CoordinatorError::InvalidField {
                        field: "since_ms",
                        message: format!("`since_ms` is {}; a period is 0 (30 days) or more", req.since_ms),
                    });
                }
                let since = if req.since_ms == 0 { stats::DEFAULT_PERIOD_MS } else { req.since_ms };
                let to = crate::node::now_unix_ms();
                let from = to.saturating_sub(since);
                let changes = node.read(stats::changes).await?;
                let service = (!req.service.is_empty()).then_some(req.service.as_str());
                let (overall, services) = stats::figures(&changes, from, to, service);
                Ok(v1::StatsResponse {
                    from_unix_ms: from,
                    to_unix_ms: to,
                    overall: Some(stats::wire(&overall)),
                    services: services.iter().map(stats::wire).collect(),
                })
            },
            forward!(stats),
        )
        .await
    }

    async fn resume(&self, request: Request<v1::ResumeRequest>) -> Result<Response<v1::ResumeResponse>, Status> {
        let node = self.node.clone();
        let who = Actor::of(&request).name;
        AuditNote::of(&request).release(&request.get_ref().release_id);
        on_leader(
            &self.node,
            request,
            |req| async move {
                let release = act(&node, &req.release_id, Fact::Resumed { actor: who, reason: req.reason }).await?;
                Ok(v1::ResumeResponse { release: Some(release) })
            },
            forward!(resume),
        )
        .await
    }

    async fn abort(&self, request: Request<v1::AbortRequest>) -> Result<Response<v1::AbortResponse>, Status> {
        let node = self.node.clone();
        let who = Actor::of(&request).name;
        AuditNote::of(&request).release(&request.get_ref().release_id);
        on_leader(
            &self.node,
            request,
            |req| async move {
                let release = act(&node, &req.release_id, Fact::Aborted { actor: who, reason: req.reason }).await?;
                Ok(v1::AbortResponse { release: Some(release) })
            },
            forward!(abort),
        )
        .await
    }

    async fn rollback(&self, request: Request<v1::RollbackRequest>) -> Result<Response<v1::RollbackResponse>, Status> {
        let node = self.node.clone();
        let who = Actor::of(&request).name;
        AuditNote::of(&request).release(&request.get_ref().release_id);
        on_leader(
            &self.node,
            request,
            |req| async move {
                require_id(&req.release_id)?;
                // Decided against the run as read; retried if the engine moved it meanwhile.
                for _ in 0..5 {
                    let decided = node
                        .read(|s| match s.release(&req.release_id) {
                            Some(r) => rollback_fact(r, req.service.as_deref(), &who, &req.reason),
                            None => Err(not_held(s, &req.release_id)),
                        })
                        .await??;
                    let (version, fact) = decided;
                    let services = match &fact {
                        Fact::RollbackDecided { members, .. } => members.iter().map(|(s, _)| s.to_string()).collect(),
                        _ => Vec::new(),
                    };
                    let op = Op::Release { release: req.release_id.clone(), expect: Some(version), fact };
                    match node.propose(op).await? {
                        Applied::Applied { .. } => {
                            let release = node.read_local(|s| get_view(s, &req.release_id))?;
                            return Ok(v1::RollbackResponse { release: Some(release), services });
                        }
                        Applied::FactRefused(Refusal::Stale { .. }) => continue,
                        other => return Err(fact_not_applied(&req.release_id, other)),
                    }
                }
                Err(CoordinatorError::precondition(
                    Reason::ReleaseStateConflict,
                    "the release kept changing while the rollback was decided; try again",
                ))
            },
            forward!(rollback),
        )
        .await
    }
}

/// Names and approval rules of the gates and stages of a release's plan (what
/// `Approve` may name).
type Approvable = Vec<(String, ApprovalRule)>;

fn approvable(r: &ReleaseRecord) -> (Approvable, Approvable) {
    match r.plan() {
        Ok(planned) => {
            let plan = &planned.0;
            let rule_of_stage =
                |name: &str| plan.spec().stages.iter().find(|st| st.name == name).map(|st| st.approval_by);
            (
                plan.spec().gates.iter().map(|g| (g.name.to_string(), g.approval_by)).collect(),
                plan.stages().iter().map(|st| (st.name.clone(), rule_of_stage(&st.name).unwrap_or_default())).collect(),
            )
        }
        Err(_) => (Vec::new(), Vec::new()),
    }
}

fn listed(names: &Approvable) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
    }
}

/// Whether `approver` may give the approval of `what` (`gate db-ok`) of release
/// `release`, which `author` created, under `rule`.
fn may_approve(
    rule: ApprovalRule,
    author: &str,
    approver: &Actor,
    release: &str,
    what: &str,
) -> Result<(), CoordinatorError> {
    if rule.is_open() {
        return Ok(());
    }
    let refuse = |why: String| {
        Err(CoordinatorError::permission_denied(
            Reason::ApproverNotAllowed,
            format!("{} may not approve {what} of release {release}: {why}", approver.name),
        ))
    };
    let needs = format!("the spec wants the approval from {}", rule.describe());
    if approver.is_insecure() {
        return refuse(format!("{needs}, and this cluster runs --insecure, so it knows nobody's identity"));
    }
    if rule.other_than_author && approver.name == author {
        return refuse(format!("{needs}, and {author} created the release"));
    }
    if let Some(least) = rule.role {
        let least = match least {
            ApproverRole::Deployer => OperatorRole::Deployer,
            ApproverRole::Admin => OperatorRole::Admin,
        };
        if approver.role.is_none_or(|held| held < least) {
            let held = approver.role.map_or_else(|| "no operator role".to_owned(), |r| format!("the {r} role"));
            return refuse(format!("{needs}, and the approver holds {held}"));
        }
    }
    Ok(())
}

/// The rollback an operator asked for, decided against the release's current run.
fn rollback_fact(
    r: &ReleaseRecord,
    service: Option<&str>,
    actor: &str,
    reason: &str,
) -> Result<(u64, Fact), CoordinatorError> {
    match r.run.phase {
        Phase::RollingBack => {
            return Err(CoordinatorError::precondition(
                Reason::ReleaseStateConflict,
                format!("release {} is already rolling back", r.submitted.id),
            ));
        }
        Phase::Finished(t) if t != engine::Terminal::Succeeded => {
            return Err(CoordinatorError::precondition(
                Reason::ReleaseStateConflict,
                format!(
                    "release {} ended {t:?}; only a release in progress or succeeded can be rolled back",
                    r.submitted.id
                ),
            ));
        }
        _ => {}
    }
    let planned = r.plan().map_err(CoordinatorError::Internal)?;
    let (plan, fleet) = (&planned.0, &planned.1);
    let failed: Vec<flotilla_shared::model::ServiceName> = match service {
        Some(s) => {
            if plan.spec().service(s).is_none() {
                return Err(CoordinatorError::no_part(
                    "service",
                    s,
                    format!("release {} has no service {s}", r.submitted.id),
                ));
            }
            vec![s.into()]
        }
        None => Vec::new(),
    };
    let why = match (service, reason.is_empty()) {
        (Some(s), true) => format!("an operator rolled back {s}"),
        (Some(s), false) => format!("an operator rolled back {s}: {reason}"),
        (None, true) => "an operator rolled back the release".to_owned(),
        (None, false) => format!("an operator rolled back the release: {reason}"),
    };
    let ctx = engine::Context { release: &r.submitted.id, plan, fleet };
    let fact = engine::rollback_decision(
        &r.run,
        ctx,
        crate::node::now_unix_ms(),
        &failed,
        flotilla_shared::model::RollbackScope::Cascade,
        actor,
        why,
    );
    Ok((r.run.version, fact))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operator(name: &str, role: Option<OperatorRole>) -> Actor {
        Actor { name: format!("operator {name}"), role, authenticated_by: "certificate".into(), expires_unix_ms: 0 }
    }

    fn refused(rule: ApprovalRule, author: &str, approver: &Actor) -> Option<String> {
        may_approve(rule, author, approver, "r-1", "gate db-ok").err().map(|e| Status::from(e).message().to_owned())
    }

    #[test]
    fn an_approval_rule_refuses_the_author_and_lesser_roles_and_says_why() {
        let alice = operator("alice", Some(OperatorRole::Deployer));
        let bob = operator("bob", Some(OperatorRole::Deployer));
        let root = operator("root", Some(OperatorRole::Admin));
        let other = ApprovalRule { other_than_author: true, role: None };
        let admin = ApprovalRule { other_than_author: false, role: Some(ApproverRole::Admin) };
        let both = ApprovalRule { other_than_author: true, role: Some(ApproverRole::Admin) };

        assert_eq!(refused(ApprovalRule::default(), "operator alice", &alice), None, "an open rule takes the author");
        let self_approval = refused(other, "operator alice", &alice).expect("refused");
        assert_eq!(
            self_approval,
            "operator alice may not approve gate db-ok of release r-1: the spec wants the approval from someone other than the release's author, and operator alice created the release"
        );
        assert_eq!(refused(other, "operator alice", &bob), None);
        assert!(refused(admin, "operator alice", &bob).expect("refused").contains("holds the deployer role"));
        assert_eq!(refused(admin, "operator alice", &root), None);
        assert!(refused(both, "operator root", &root).is_some());
        assert_eq!(refused(both, "operator alice", &root), None);
        let nobody = Actor { authenticated_by: "insecure".into(), ..operator("x", None) };
        assert!(refused(other, "anonymous", &nobody).expect("refused").contains("--insecure"));
        let status = Status::from(may_approve(other, "operator alice", &alice, "r-1", "stage prod").unwrap_err());
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert!(flotilla_proto::status::has_reason(&status, Reason::ApproverNotAllowed));
    }
}
