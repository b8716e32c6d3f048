//! The `Releases` service. Submitting, reading and listing releases are served here;
//! driving them (watch, approvals, pause, rollback) arrives with the release engine.

use flotilla_proto::v1::releases_client::ReleasesClient;
use flotilla_proto::v1::releases_server::Releases;
use flotilla_proto::v1::{self, ReleaseState, Severity};
use flotilla_shared::plan::Plan;
use flotilla_shared::spec::{self, SourceFile, SpecErrors};
use futures::Stream;
use tonic::{Request, Response, Status};

use super::on_leader;
use crate::error::CoordinatorError;
use crate::node::Node;
use crate::state::{Op, ReleaseRecord, Response as Applied};

/// Serves `Releases` for one node.
#[derive(Debug, Clone)]
pub struct ReleasesService {
    node: Node,
}

impl ReleasesService {
    /// The service of `node`.
    pub fn new(node: Node) -> Self {
        Self { node }
    }
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

fn release_message(r: &ReleaseRecord, last_event_index: u64) -> v1::Release {
    v1::Release {
        id: r.id.clone(),
        name: r.name.clone(),
        state: ReleaseState::Pending as i32,
        reason: "submitted; the release engine has not started it".to_owned(),
        spec_toml: r.spec_text.clone(),
        file_name: r.file_name.clone(),
        created_unix_ms: r.created_unix_ms,
        updated_unix_ms: r.created_unix_ms,
        last_event_index,
        ..Default::default()
    }
}

fn engine_pending(what: &str) -> Status {
    Status::unimplemented(format!("{what} arrives with the release engine; this coordinator stores and lists releases"))
}

#[tonic::async_trait]
impl Releases for ReleasesService {
    async fn plan(&self, request: Request<v1::PlanRequest>) -> Result<Response<v1::PlanResponse>, Status> {
        let req = request.into_inner();
        let (source, plan) = check_spec(&req.spec_toml, &file_name(&req.file_name))?;
        let report = flotilla_shared::plan::PlanReport::new(&plan, &source);
        let plan_json = serde_json::to_string_pretty(&report).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(v1::PlanResponse { plan: None, plan_json }))
    }

    async fn create(&self, request: Request<v1::CreateRequest>) -> Result<Response<v1::CreateResponse>, Status> {
        let node = self.node.clone();
        on_leader(
            &self.node,
            request,
            |req| async move {
                let name = file_name(&req.file_name);
                let (_, plan) = check_spec(&req.spec_toml, &name)?;
                let op = Op::CreateRelease {
                    id: node.next_release_id(),
                    idempotency_key: req.idempotency_key,
                    name: plan.spec().release.clone(),
                    file_name: name,
                    spec_text: req.spec_toml,
                };
                match node.propose(op).await? {
                    Applied::Release { id, created } => {
                        let release =
                            node.read_local(|s| s.release(&id).map(|r| release_message(r, s.last_event_index())));
                        Ok(v1::CreateResponse { release, created })
                    }
                    Applied::Refused { reason } => Err(CoordinatorError::FailedPrecondition(reason)),
                    other => Err(CoordinatorError::Internal(format!("unexpected result {other:?}"))),
                }
            },
            |ch, req| async move { ReleasesClient::new(ch).create(req).await },
        )
        .await
    }

    async fn get(&self, request: Request<v1::GetRequest>) -> Result<Response<v1::GetResponse>, Status> {
        let node = self.node.clone();
        on_leader(
            &self.node,
            request,
            |req| async move {
                let release = node
                    .read(|s| s.release(&req.release_id).map(|r| release_message(r, s.last_event_index())))
                    .await?
                    .ok_or_else(|| CoordinatorError::NotFound(format!("no release {}", req.release_id)))?;
                Ok(v1::GetResponse { release: Some(release) })
            },
            |ch, req| async move { ReleasesClient::new(ch).get(req).await },
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
                let (releases, next) = node
                    .read(|s| {
                        let mut all = s.releases().skip_while(|r| !req.page_token.is_empty() && r.id != req.page_token);
                        let page: Vec<v1::ReleaseSummary> = all
                            .by_ref()
                            .take(page)
                            .map(|r| v1::ReleaseSummary {
                                id: r.id.clone(),
                                name: r.name.clone(),
                                state: ReleaseState::Pending as i32,
                                created_unix_ms: r.created_unix_ms,
                                updated_unix_ms: r.created_unix_ms,
                                ..Default::default()
                            })
                            .collect();
                        (page, all.next().map(|r| r.id.clone()).unwrap_or_default())
                    })
                    .await?;
                Ok(v1::ListResponse { releases, next_page_token: next })
            },
            |ch, req| async move { ReleasesClient::new(ch).list(req).await },
        )
        .await
    }

    type WatchStream = std::pin::Pin<Box<dyn Stream<Item = Result<v1::ReleaseEvent, Status>> + Send>>;

    async fn watch(&self, _request: Request<v1::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        Err(engine_pending("watching a release"))
    }

    async fn approve(&self, _request: Request<v1::ApproveRequest>) -> Result<Response<v1::ApproveResponse>, Status> {
        Err(engine_pending("approving"))
    }

    async fn pause(&self, _request: Request<v1::PauseRequest>) -> Result<Response<v1::PauseResponse>, Status> {
        Err(engine_pending("pausing"))
    }

    async fn resume(&self, _request: Request<v1::ResumeRequest>) -> Result<Response<v1::ResumeResponse>, Status> {
        Err(engine_pending("resuming"))
    }

    async fn abort(&self, _request: Request<v1::AbortRequest>) -> Result<Response<v1::AbortResponse>, Status> {
        Err(engine_pending("aborting"))
    }

    async fn rollback(&self, _request: Request<v1::RollbackRequest>) -> Result<Response<v1::RollbackResponse>, Status> {
        Err(engine_pending("rolling back"))
    }
}
