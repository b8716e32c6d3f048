//! The coordinator's side of the agents: the [`AgentHub`] of live `AgentLink` sessions
//! on the leader (leases, registration and loss transitions through Raft, steps out,
//! reports in), the fleet's plain data ([`model`]) and its wire conversions ([`wire`]).
//!
//! The release engine uses [`AgentHub::send`], [`AgentHub::cancel`], [`AgentHub::ack`],
//! [`AgentHub::subscribe`] and [`AgentHub::connected_hosts`]; the `AgentLink` service
//! hands each stream to [`AgentHub::open_session`].

mod hub;
pub mod model;
mod session;
pub mod wire;

pub use hub::{AgentHub, AgentReport, HostNotConnected, HubSettings};
pub use session::{OutboundStream, SessionError};
