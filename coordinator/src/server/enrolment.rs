//! The `Enrolment` service: a host trades a join token and a certificate request for
//! its agent certificate (`Join`, forwarded to the leader like every write), and an
//! enrolled agent renews its certificate for a new key (`Renew`, on the leader only:
//! a forwarded call would carry the follower's identity, not the agent's).

use flotilla_net::JoinToken;
use flotilla_proto::v1;
use flotilla_proto::v1::enrolment_client::EnrolmentClient;
use flotilla_proto::v1::enrolment_server::Enrolment;
use tonic::{Request, Response, Status};

use super::on_leader;
use crate::audit::AuditNote;
use crate::auth::Caller;
use crate::enrolment::{Enroller, refusal};
use crate::error::CoordinatorError;
use crate::node::Node;
use crate::state::{EnrolmentOp, Op, Response as Applied};

/// Serves `Enrolment` for one node.
#[derive(Debug, Clone)]
pub struct EnrolmentService {
    node: Node,
    enroller: Enroller,
}

impl EnrolmentService {
    /// The service of `node`, signing with `enroller`.
    pub fn new(node: Node, enroller: Enroller) -> Self {
        Self { node, enroller }
    }

    async fn join_here(&self, req: v1::JoinRequest) -> Result<v1::JoinResponse, CoordinatorError> {
        let token: JoinToken =
            req.token.parse().map_err(|message| CoordinatorError::InvalidField { field: "token", message })?;
        if req.host_id.trim().is_empty() {
            return Err(CoordinatorError::missing("host_id"));
        }
        self.enroller.check_pin(&token)?;
        let signed = self.enroller.sign(&req.csr_der, &req.host_id)?;
        let op = EnrolmentOp::Enrol {
            token_id: token.id.clone(),
            secret_sha256: token.secret_sha256(),
            host: req.host_id.clone(),
            key_sha256: signed.key_sha256.clone(),
            expires_unix_ms: signed.not_after.saturating_mul(1_000),
        };
        match self.node.propose(Op::Enrolment(op)).await? {
            Applied::EnrolmentRefused(why) => {
                tracing::info!(host = %req.host_id, token = %token.id, "enrolment refused: {why}");
                Err(refusal(why))
            }
            _ => {
                let labels = self
                    .node
                    .read_local(|s| s.enrolment().host(&req.host_id).map(|e| e.labels.clone()))
                    .unwrap_or_default();
                tracing::info!(host = %req.host_id, token = %token.id, "agent enrolled");
                Ok(v1::JoinResponse {
                    certificate_pem: signed.cert_pem,
                    ca_pem: self.enroller.trust_bundle(),
                    expires_unix_ms: signed.not_after.saturating_mul(1_000),
                    labels: labels.into_iter().collect(),
                })
            }
        }
    }
}

#[tonic::async_trait]
impl Enrolment for EnrolmentService {
    async fn join(&self, request: Request<v1::JoinRequest>) -> Result<Response<v1::JoinResponse>, Status> {
        let this = self.clone();
        let token_id = request.get_ref().token.parse::<JoinToken>().map(|t| t.id).unwrap_or_default();
        AuditNote::of(&request).target(format!("host {} (join token {token_id})", request.get_ref().host_id));
        on_leader(
            &self.node,
            request,
            |req| async move { this.join_here(req).await },
            |ch, req| async move { EnrolmentClient::new(ch).join(req).await },
        )
        .await
    }

    async fn renew(&self, request: Request<v1::RenewRequest>) -> Result<Response<v1::RenewResponse>, Status> {
        let caller = Caller::of(&request);
        if let Some(identity) = caller.identity() {
            AuditNote::of(&request).target(format!("host {}", identity.name));
        }
        let Caller::Identified { identity, cert } = caller else {
            return Err(CoordinatorError::unauthenticated(
                flotilla_proto::status::Reason::Unauthenticated,
                "Enrolment/Renew needs the agent's current certificate",
            )
            .into());
        };
        self.node.check_leader()?;
        let host = identity.name.clone();
        if self.node.read_local(|s| s.enrolment().host(&host).is_none()) {
            return Err(CoordinatorError::no_host(
                &host,
                format!(
                    "host {host} is not enrolled (forgotten, or its certificate was issued by hand): it cannot renew"
                ),
            )
            .into());
        }
        let req = request.into_inner();
        let signed = self.enroller.sign(&req.csr_der, &host)?;
        let op = EnrolmentOp::Renew {
            host: host.clone(),
            old_key_sha256: cert.key_sha256.clone(),
            key_sha256: signed.key_sha256.clone(),
            expires_unix_ms: signed.not_after.saturating_mul(1_000),
        };
        match self.node.propose(Op::Enrolment(op)).await? {
            Applied::EnrolmentRefused(why) => Err(refusal(why).into()),
            _ => {
                tracing::debug!(%host, "agent certificate renewed");
                Ok(Response::new(v1::RenewResponse {
                    certificate_pem: signed.cert_pem,
                    ca_pem: self.enroller.trust_bundle(),
                    expires_unix_ms: signed.not_after.saturating_mul(1_000),
                }))
            }
        }
    }
}
