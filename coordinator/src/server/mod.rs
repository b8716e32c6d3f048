//! The coordinator's gRPC surface: `RaftPeer`, `Cluster`, `Releases`, `AgentLink`,
//! `Fleet`, `Enrolment`, `Access`, `Policy`, the standard health service and reflection (v1 and
//! v1alpha), on one port, over mutual TLS unless `--insecure`. Connections are
//! accepted by `flotilla_net::incoming` (the TLS material of the moment, the peer
//! judged once per connection) and every call passes [`crate::auth::AuthLayer`] first,
//! which also records the calls that ask for a change in the audit trail.

mod access;
mod agent_link;
mod cluster;
mod enrolment;
pub(crate) mod fleet;
pub mod plan_view;
pub mod policy;
mod raft_peer;
pub(crate) mod release_view;
mod releases;

use std::future::Future;

use flotilla_net::TlsMaterial;
use flotilla_proto::v1::access_server::AccessServer;
use flotilla_proto::v1::agent_link_server::AgentLinkServer;
use flotilla_proto::v1::cluster_server::ClusterServer;
use flotilla_proto::v1::enrolment_server::EnrolmentServer;
use flotilla_proto::v1::fleet_server::FleetServer;
use flotilla_proto::v1::policy_server::PolicyServer;
use flotilla_proto::v1::raft_peer_server::RaftPeerServer;
use flotilla_proto::v1::releases_server::ReleasesServer;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};

pub use access::AccessService;
pub use agent_link::AgentLinkService;
pub use cluster::ClusterService;
pub use enrolment::EnrolmentService;
pub use fleet::FleetService;
pub use policy::PolicyService;
pub use raft_peer::RaftPeerService;
pub use releases::ReleasesService;
// The dashboard shows what the API answers.
pub(crate) use cluster::status as cluster_status;
pub(crate) use releases::{services_total, view as release_page_view};

use crate::audit::Auditor;
use crate::auth::AuthLayer;
use crate::enrolment::Enroller;
use crate::error::CoordinatorError;
use crate::fleet::AgentHub;
use crate::node::Node;
use crate::raft::network::MAX_PEER_MESSAGE;
use crate::state::Retention;

/// Metadata key set on a call a follower forwarded to the leader, so it is forwarded
/// at most once.
pub const FORWARDED: &str = "x-flotilla-forwarded-by";

/// Largest client request (a release spec).
const MAX_CLIENT_MESSAGE: usize = 16 * 1024 * 1024;

/// What the services need of the coordinator besides its node and agent hub.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Audit records go to this auditor.
    pub auditor: Auditor,
    /// Audit records followers send this node as leader are committed keeping this.
    pub retention: Retention,
    /// Whether this coordinator can query Prometheus (`prometheus_url`): without it a
    /// release whose spec measures metrics is refused when it is submitted here.
    pub prometheus: bool,
}

/// Serves every service of `node` on `listener` until `shutdown` completes; agent
/// sessions go to `hub` (call [`AgentHub::shutdown`] when shutting down, or the open
/// agent streams keep the server from stopping); agent certificates are signed by
/// `enroller`.
pub async fn serve(
    node: Node,
    hub: AgentHub,
    listener: tokio::net::TcpListener,
    tls: Option<TlsMaterial>,
    enroller: Enroller,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<RaftPeerServer<RaftPeerService>>().await;
    health.set_serving::<ClusterServer<ClusterService>>().await;
    health.set_serving::<ReleasesServer<ReleasesService>>().await;
    health.set_serving::<AgentLinkServer<AgentLinkService>>().await;
    health.set_serving::<FleetServer<FleetService>>().await;
    health.set_serving::<EnrolmentServer<EnrolmentService>>().await;
    health.set_serving::<AccessServer<AccessService>>().await;
    health.set_serving::<PolicyServer<PolicyService>>().await;
    // Both reflection revisions: `v1` for current clients, `v1alpha` for the many
    // stock clients that still speak only it (grpcurl before 1.9, grpcio-reflection's
    // descriptor database, Postman).
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(flotilla_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().expect("the embedded descriptor sets are valid");
    let reflection_v1alpha = reflection().build_v1alpha().expect("the embedded descriptor sets are valid");

    let node_for_enrolment = node.clone();
    let trust_domain = tls.as_ref().and_then(TlsMaterial::identity).map(|id| id.trust_domain);
    let incoming = flotilla_net::incoming(listener, tls);
    let ServeOptions { auditor, retention, prometheus } = options;
    Server::builder()
        .layer(AuthLayer::new(trust_domain).with_cluster(node.clone(), auditor.clone()))
        .add_service(
            RaftPeerServer::new(
                RaftPeerService::new(node.raft().clone(), node.identity().clone()).with_node(node.clone(), retention),
            )
            .max_decoding_message_size(MAX_PEER_MESSAGE)
            .max_encoding_message_size(MAX_PEER_MESSAGE),
        )
        .add_service(ClusterServer::new(ClusterService::new(node.clone())))
        .add_service(
            ReleasesServer::new(ReleasesService::new(node.clone()).with_prometheus(prometheus))
                .max_decoding_message_size(MAX_CLIENT_MESSAGE),
        )
        .add_service(AgentLinkServer::new(AgentLinkService::new(hub.clone())))
        .add_service(FleetServer::new(FleetService::new(hub, enroller.clone())))
        .add_service(EnrolmentServer::new(EnrolmentService::new(node_for_enrolment, enroller)))
        .add_service(AccessServer::new(AccessService::new(node.clone())))
        .add_service(PolicyServer::new(PolicyService::new(node.clone())))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// Runs a write on the leader: here when this node leads, otherwise forwarded once to
/// the leader; a call that was already forwarded, one from Flotilla's leader client
/// (which follows hints), or one with no leader known gets an UNAVAILABLE answer
/// carrying the leader's address for the client to follow.
pub(crate) async fn on_leader<Req, Resp, L, LF, R, RF>(
    node: &Node,
    request: Request<Req>,
    local: L,
    remote: R,
) -> Result<Response<Resp>, Status>
where
    L: FnOnce(Req) -> LF,
    LF: Future<Output = Result<Resp, CoordinatorError>>,
    R: FnOnce(Channel, Request<Req>) -> RF,
    RF: Future<Output = Result<Response<Resp>, Status>>,
{
    let forwarded = request.metadata().contains_key(FORWARDED);
    // Flotilla's own clients follow the leader's address themselves and then stay with
    // the leader; forwarding their calls would keep them on this follower.
    let follows_hints = request
        .metadata()
        .get("user-agent")
        .and_then(|ua| ua.to_str().ok())
        .is_some_and(|ua| ua.starts_with(flotilla_net::LEADER_CLIENT_AGENT));
    match node.check_leader() {
        Ok(()) => local(request.into_inner()).await.map(Response::new).map_err(Status::from),
        Err(CoordinatorError::NotLeader { leader_id, leader_addr }) if !forwarded && !follows_hints => {
            let ch = node.forward_channel(&leader_addr).map_err(|_| {
                Status::from(CoordinatorError::NotLeader { leader_id, leader_addr: leader_addr.clone() })
            })?;
            let actor = crate::auth::Actor::of(&request).forwarded();
            let mut req = Request::new(request.into_inner());
            req.metadata_mut().insert(FORWARDED, node.id().to_string().parse().expect("a number is valid metadata"));
            if let Some(Ok(actor)) = actor.map(|a| a.parse()) {
                req.metadata_mut().insert(crate::auth::ON_BEHALF_OF, actor);
            }
            tracing::debug!(leader = %leader_addr, "forwarding a write to the leader");
            remote(ch, req).await
        }
        Err(e) => Err(e.into()),
    }
}
