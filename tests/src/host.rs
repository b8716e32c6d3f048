//! A stand-in host for cluster tests: an in-process `AgentLink` client that registers
//! one host already running the test release's service, heartbeats, answers every step
//! with success, and reconnects (following leader hints) whenever its coordinator goes
//! away. Releases are planned against the live fleet, so a cluster with no host at all
//! would refuse every submission; with this host, [`crate::tiny_spec`] releases plan,
//! and run to success without deploying anything (the host is already at the target).

use std::time::Duration;

use flotilla_net::{ClientSecurity, channel};
use flotilla_proto::v1::agent_link_client::AgentLinkClient;
use flotilla_proto::v1::agent_message::Msg as Out;
use flotilla_proto::v1::coordinator_message::Msg as In;
use flotilla_proto::v1::{self, AgentMessage};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// The stand-in host's id.
pub const TEST_HOST: &str = "test-host";

/// The service (and version) the stand-in host runs: what [`crate::tiny_spec`] deploys.
pub const TEST_SERVICE: (&str, &str) = ("svc", "1.0.0");

/// Runs the stand-in host against `addrs` until the task is dropped. In TLS mode
/// `security` holds an agent certificate for exactly [`TEST_HOST`], the host id it
/// registers with ([`crate::TestCluster::start`] issues it).
pub async fn run(addrs: Vec<String>, security: ClientSecurity) {
    let instance = format!("{:x}", std::process::id());
    let mut next: Option<String> = None;
    let mut turn = 0usize;
    loop {
        let addr = next.take().unwrap_or_else(|| {
            turn += 1;
            addrs[turn % addrs.len()].clone()
        });
        if let Some(hint) = session(&addr, &security, &instance).await {
            next = Some(hint);
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn inventory() -> Vec<v1::ServiceInstance> {
    vec![v1::ServiceInstance {
        service: TEST_SERVICE.0.to_owned(),
        version: TEST_SERVICE.1.to_owned(),
        state: v1::ServiceRunState::Running as i32,
        ..Default::default()
    }]
}

/// One session; returns the leader's address when told to go there.
async fn session(addr: &str, security: &ClientSecurity, instance: &str) -> Option<String> {
    let ch = channel(addr, security).ok()?;
    let (tx, rx) = mpsc::channel::<AgentMessage>(64);
    let register = v1::Register {
        host_id: TEST_HOST.to_owned(),
        labels: [("role".to_owned(), "test".to_owned())].into_iter().collect(),
        version: Some(flotilla_proto::version_info(env!("CARGO_PKG_VERSION"), [])),
        instance_id: instance.to_owned(),
        inventory: inventory(),
        highest_term: 0,
        running_command_ids: Vec::new(),
    };
    tx.send(AgentMessage { msg: Some(Out::Register(register)) }).await.ok()?;
    let mut inbound = AgentLinkClient::new(ch).session(ReceiverStream::new(rx)).await.ok()?.into_inner();
    let mut beat = tokio::time::interval(Duration::from_secs(3600));
    let mut seq = 0u64;
    loop {
        tokio::select! {
            message = inbound.message() => {
                let msg = message.ok()??.msg?;
                match msg {
                    In::Welcome(w) => {
                        let every = Duration::from_millis(w.heartbeat_interval_ms.max(50));
                        beat = tokio::time::interval(every);
                    }
                    In::LeaderHint(h) => return (!h.leader_addr.is_empty()).then_some(h.leader_addr),
                    In::Step(step) => {
                        let result = v1::StepResult {
                            command_id: step.command_id,
                            term: step.term,
                            outcome: v1::StepOutcome::Succeeded as i32,
                            ..Default::default()
                        };
                        tx.send(AgentMessage { msg: Some(Out::Result(result)) }).await.ok()?;
                    }
                    In::Cancel(_) | In::Ack(_) => {}
                }
            }
            _ = beat.tick() => {
                seq += 1;
                let hb = v1::Heartbeat { seq, running_command_ids: Vec::new(), ..Default::default() };
                tx.send(AgentMessage { msg: Some(Out::Heartbeat(hb)) }).await.ok()?;
            }
        }
    }
}
