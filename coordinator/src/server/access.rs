//! The `Access` service: who the caller is, operator tokens (made, listed, revoked
//! through Raft) and the audit trail.

use flotilla_proto::status::Reason;
use flotilla_proto::v1;
use flotilla_proto::v1::access_client::AccessClient;
use flotilla_proto::v1::access_server::Access;
use tonic::{Request, Response, Status};

use super::on_leader;
use crate::access::{self, TokenRequest};
use crate::audit::{AuditNote, record_wire};
use crate::auth::Actor;
use crate::error::CoordinatorError;
use crate::node::Node;
use crate::state::{AccessOp, AuditRecord, Op, Response as Applied};

/// The most audit records one `ListAudit` answers.
const MAX_AUDIT_PAGE: usize = 10_000;

/// Serves `Access` for one node.
#[derive(Debug, Clone)]
pub struct AccessService {
    node: Node,
}

impl AccessService {
    /// The service of `node`.
    pub fn new(node: Node) -> Self {
        Self { node }
    }

    fn read_token(&self, id: &str) -> Result<v1::OperatorToken, CoordinatorError> {
        self.node.read_local(|s| s.access().token(id).map(access::token_wire)).ok_or_else(|| no_token(id))
    }
}

fn no_token(id: &str) -> CoordinatorError {
    CoordinatorError::NotFound {
        reason: Reason::TokenNotFound,
        resource_type: "flotilla.v1.OperatorToken",
        name: id.to_owned(),
        message: format!("no operator token {id}"),
    }
}

/// Whether `r` passes the filters of `req`.
fn matches(r: &AuditRecord, req: &v1::ListAuditRequest) -> bool {
    (req.since_unix_ms == 0 || r.at_unix_ms >= req.since_unix_ms)
        && (req.release_id.is_empty() || r.release_id == req.release_id)
        && (req.actor.is_empty()
            || r.actor == req.actor
            || r.actor.split_once(' ').is_some_and(|(_, name)| name == req.actor))
}

#[tonic::async_trait]
impl Access for AccessService {
    async fn who_am_i(&self, request: Request<v1::WhoAmIRequest>) -> Result<Response<v1::WhoAmIResponse>, Status> {
        let actor = Actor::of(&request);
        Ok(Response::new(v1::WhoAmIResponse {
            role: access::role_wire(actor.role) as i32,
            actor: actor.name,
            authenticated_by: actor.authenticated_by,
            expires_unix_ms: actor.expires_unix_ms,
        }))
    }

    /// Makes a token on the leader: the secret is drawn there, its digest committed,
    /// the token answered once.
    async fn create_token(
        &self,
        request: Request<v1::CreateTokenRequest>,
    ) -> Result<Response<v1::CreateTokenResponse>, Status> {
        let this = self.clone();
        let actor = Actor::of(&request).name;
        let note = AuditNote::of(&request);
        let made = on_leader(
            &self.node,
            request,
            |req| async move {
                let ask = TokenRequest::from_wire(&req)?;
                let cluster = this.node.identity().current().map(|c| c.id).ok_or_else(|| {
                    CoordinatorError::precondition(
                        Reason::StateConflict,
                        "this cluster has no cluster id yet (it was formed by an older build and no leader has recorded one); operator tokens name their cluster",
                    )
                })?;
                let (token, record) = access::make_token(&cluster, &ask, actor, crate::node::now_unix_ms())?;
                let id = record.id.clone();
                match this.node.propose(Op::Access(AccessOp::CreateToken(record))).await? {
                    Applied::Refused { reason } => Err(CoordinatorError::Internal(reason)),
                    _ => {
                        tracing::info!(token = %id, "operator token created");
                        Ok(v1::CreateTokenResponse {
                            token: token.to_string(),
                            operator_token: Some(this.read_token(&id)?),
                        })
                    }
                }
            },
            |ch, req| async move { AccessClient::new(ch).create_token(req).await },
        )
        .await;
        if let Ok(Some(t)) = made.as_ref().map(|r| r.get_ref().operator_token.as_ref()) {
            note.target(format!("token {} ({})", t.id, t.name));
        }
        made
    }

    /// Tokens from this node's applied state, newest first.
    async fn list_tokens(
        &self,
        request: Request<v1::ListTokensRequest>,
    ) -> Result<Response<v1::ListTokensResponse>, Status> {
        let req = request.into_inner();
        let now = crate::node::now_unix_ms();
        let tokens = self.node.read_local(|s| {
            s.access()
                .tokens()
                .into_iter()
                .filter(|t| req.include_dead || t.live(now))
                .map(access::token_wire)
                .collect()
        });
        Ok(Response::new(v1::ListTokensResponse { tokens }))
    }

    /// Revokes a token through Raft.
    async fn revoke_token(
        &self,
        request: Request<v1::RevokeTokenRequest>,
    ) -> Result<Response<v1::RevokeTokenResponse>, Status> {
        let this = self.clone();
        let actor = Actor::of(&request).name;
        AuditNote::of(&request).target(format!("token {}", request.get_ref().id.trim()));
        on_leader(
            &self.node,
            request,
            |req| async move {
                let id = req.id.trim().to_ascii_lowercase();
                if id.is_empty() {
                    return Err(CoordinatorError::missing("id"));
                }
                match this.node.propose(Op::Access(AccessOp::RevokeToken { id: id.clone(), by: actor })).await? {
                    Applied::Refused { .. } => Err(no_token(&id)),
                    _ => {
                        tracing::info!(token = %id, "operator token revoked");
                        Ok(v1::RevokeTokenResponse { operator_token: Some(this.read_token(&id)?) })
                    }
                }
            },
            |ch, req| async move { AccessClient::new(ch).revoke_token(req).await },
        )
        .await
    }

    /// The trail as the leader has applied it, newest first.
    async fn list_audit(
        &self,
        request: Request<v1::ListAuditRequest>,
    ) -> Result<Response<v1::ListAuditResponse>, Status> {
        let node = self.node.clone();
        on_leader(
            &self.node,
            request,
            |req| async move {
                let limit = if req.limit == 0 { 100 } else { (req.limit as usize).min(MAX_AUDIT_PAGE) };
                let (records, truncated) = node
                    .read(|s| {
                        let mut matching = s.access().audit().rev().filter(|r| matches(r, &req));
                        let page: Vec<v1::AuditRecord> = matching.by_ref().take(limit).map(record_wire).collect();
                        (page, matching.next().is_some())
                    })
                    .await?;
                Ok(v1::ListAuditResponse { records, truncated })
            },
            |ch, req| async move { AccessClient::new(ch).list_audit(req).await },
        )
        .await
    }
}
