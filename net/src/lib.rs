//! Flotilla's gRPC plumbing shared by the coordinator, the agent and the CLI: the
//! cluster's certificate authority and identities, loading mutual-TLS material,
//! building endpoints, accepting connections and judging their peers, and calls that
//! follow the Raft leader; and the daemons' config-file plumbing.

pub mod config;
pub mod endpoint;
pub mod errors;
pub mod leader;
pub mod peer;
pub mod pin;
pub mod pki;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;

pub use endpoint::{ClientSecurity, Dial, channel, endpoint};
pub use leader::{LEADER_CLIENT_AGENT, LeaderClient, LeaderError, call_leader};
pub use peer::{Peer, PeerInfo, ServerConn, incoming};
pub use pin::{CaPin, JoinToken};
pub use tls::{NetError, PeerVerdict, ServerTrust, TlsMaterial};
