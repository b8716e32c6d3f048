//! Flotilla's gRPC plumbing shared by the coordinator, the agent and the CLI: the
//! cluster's certificate authority and identities, loading mutual-TLS material,
//! building endpoints, and calls that follow the Raft leader.

pub mod endpoint;
pub mod leader;
pub mod pki;
pub mod tls;

pub use endpoint::{ClientSecurity, channel, endpoint};
pub use leader::{LEADER_CLIENT_AGENT, LeaderClient, LeaderError, call_leader};
pub use tls::{NetError, TlsMaterial};
