//! The `AgentLink` service: each agent's bidirectional session, handed to the
//! [`AgentHub`] (which answers `LeaderHint` on a follower, and on the leader
//! registers the host, holds its lease and carries steps and reports).

use flotilla_proto::v1;
use flotilla_proto::v1::agent_link_server::AgentLink;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::Caller;
use crate::fleet::{AgentHub, OutboundStream};

/// Serves `AgentLink` for one node.
#[derive(Debug, Clone)]
pub struct AgentLinkService {
    hub: AgentHub,
}

impl AgentLinkService {
    /// The service of `hub`'s node.
    pub fn new(hub: AgentHub) -> Self {
        Self { hub }
    }
}

#[tonic::async_trait]
impl AgentLink for AgentLinkService {
    type SessionStream = OutboundStream;

    async fn session(
        &self,
        request: Request<Streaming<v1::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let caller = Caller::of(&request);
        tracing::debug!(caller = %crate::auth::Actor::of(&request).name, "agent session opened");
        Ok(Response::new(self.hub.open_session(request.into_inner(), caller)))
    }
}
