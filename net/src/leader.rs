//! Calls that must reach the Raft leader: try the known coordinators, follow
//! `NotLeader` hints, remember who answered, and give up with every reason seen.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use flotilla_proto::status::leader_hint;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::endpoint::{ClientSecurity, endpoint};
use crate::tls::NetError;

/// The user agent of [`LeaderClient`]'s calls. It tells a follower that this client
/// follows leader hints, so the follower answers with the leader's address instead of
/// forwarding the call: the client then talks to the leader directly, one hop less on
/// every later call. Other clients (grpcurl, a plain tonic client) are forwarded.
pub const LEADER_CLIENT_AGENT: &str = "flotilla-leader-client";

/// Why no coordinator answered.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// No address was given.
    #[error("no coordinator address given (use --coordinators or FLOTILLA_COORDINATORS)")]
    NoAddress,
    /// The call failed with a status that retrying elsewhere cannot fix.
    #[error("{}", .0.message())]
    Status(Status),
    /// Every coordinator was tried.
    #[error("no coordinator could serve the call: {}", tried.join("; "))]
    Exhausted {
        /// `addr: reason` per attempt.
        tried: Vec<String>,
    },
}

/// How many attempts a call may make (coordinators plus leader hints) before giving up.
const MAX_HOPS: usize = 8;

/// A client of the coordinator cluster that keeps one multiplexed channel per
/// coordinator and sends calls to the last one that answered, following leader hints.
#[derive(Debug)]
pub struct LeaderClient {
    addrs: Vec<String>,
    security: ClientSecurity,
    channels: Mutex<HashMap<String, Channel>>,
    preferred: Mutex<Option<String>>,
}

impl LeaderClient {
    /// A client of the coordinators at `addrs`.
    pub fn new(addrs: Vec<String>, security: ClientSecurity) -> Self {
        Self { addrs, security, channels: Mutex::default(), preferred: Mutex::default() }
    }

    fn channel(&self, addr: &str) -> Result<Channel, NetError> {
        let mut channels = self.channels.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(ch) = channels.get(addr) {
            return Ok(ch.clone());
        }
        let ch = endpoint(addr, &self.security)?
            .configure(|ep| ep.user_agent(LEADER_CLIENT_AGENT).expect("the user agent is a valid header value"))
            .connect_lazy();
        channels.insert(addr.to_owned(), ch.clone());
        Ok(ch)
    }

    /// The coordinator that answered the last call, if any.
    pub fn preferred(&self) -> Option<String> {
        self.preferred.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Takes note of the status a stream (or a call made outside [`LeaderClient::call`])
    /// ended with: a leader hint becomes the coordinator the next call tries first;
    /// any other UNAVAILABLE drops the preference, so the next call starts with the
    /// whole list rather than a coordinator that is going away.
    pub fn note_status(&self, status: &Status) {
        if status.code() != Code::Unavailable {
            return;
        }
        let mut preferred = self.preferred.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *preferred = leader_hint(status).map(|hint| hint.leader_addr);
    }

    /// Calls `call` on the leader: the coordinator that answered last first, then the
    /// others in order, following hints. Returns the first success, or the first
    /// status that is not UNAVAILABLE.
    pub async fn call<T, F, Fut>(&self, mut call: F) -> Result<T, LeaderError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        if self.addrs.is_empty() {
            return Err(LeaderError::NoAddress);
        }
        let preferred = self.preferred.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let mut queue: Vec<String> = self.addrs.iter().rev().cloned().collect();
        queue.extend(preferred);
        let mut tried = Vec::new();
        while let Some(addr) = queue.pop() {
            if tried.len() >= MAX_HOPS {
                break;
            }
            let ch = match self.channel(&addr) {
                Ok(ch) => ch,
                Err(e) => {
                    tried.push(format!("{addr}: {e}"));
                    continue;
                }
            };
            match call(ch).await {
                Ok(v) => {
                    *self.preferred.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(addr);
                    return Ok(v);
                }
                Err(status) if status.code() == Code::Unavailable => {
                    if let Some(hint) = leader_hint(&status)
                        && hint.leader_addr != addr
                    {
                        tracing::debug!(%addr, leader = %hint.leader_addr, "following leader hint");
                        queue.push(hint.leader_addr);
                    }
                    tried.push(format!("{addr}: {}", status.message()));
                }
                Err(status) => return Err(LeaderError::Status(status)),
            }
        }
        Err(LeaderError::Exhausted { tried })
    }
}

/// One call on the leader of the coordinators at `addrs` (see [`LeaderClient::call`]).
pub async fn call_leader<T, F, Fut>(addrs: &[String], security: &ClientSecurity, call: F) -> Result<T, LeaderError>
where
    F: FnMut(Channel) -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    LeaderClient::new(addrs.to_vec(), security.clone()).call(call).await
}
