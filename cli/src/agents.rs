//! `flotilla agents`: the fleet's hosts and their agents, as the cluster knows them
//! (`Fleet.ListAgents`): state, drain mark, agent version, labels and what each runs.
//! `--output json` prints the `ListAgentsResponse` itself. Its subcommands (`token`,
//! `forget`) are in `tokens.rs`.

use std::collections::BTreeMap;

use flotilla_proto::v1::fleet_client::FleetClient;
use flotilla_proto::v1::{self, HostState, ServiceRunState};

use crate::remote::{Calls as _, Connection, print, remote_failure, runtime};
use crate::{Failure, TextOrJson, json};

/// `flotilla agents [--label K=V]... [--all]`, or one of its subcommands.
#[derive(Debug, Clone, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentsArgs {
    /// Enrolment: join tokens and forgetting hosts.
    #[command(subcommand)]
    command: Option<AgentsCommand>,
    /// Only hosts carrying this label with this value (repeatable: every one must match).
    #[arg(long = "label", value_name = "K=V", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Also hosts whose agent is lost (by default only online ones are listed).
    #[arg(long)]
    all: bool,
    /// How to print the result.
    #[arg(long, short, value_enum, default_value_t = TextOrJson::Table)]
    output: TextOrJson,
}

/// `flotilla agents ...` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AgentsCommand {
    /// Join tokens, with which hosts enrol their agents (`flotilla-agent --join TOKEN`).
    #[command(subcommand)]
    Token(crate::tokens::TokenCommand),
    /// Forget a host's enrolment: its certificate is refused from now on and the host
    /// id may enrol again, with a new token and a new key.
    Forget(crate::tokens::ForgetArgs),
}

pub(crate) fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!("`{text}` is not a label: expected KEY=VALUE (e.g. role=web)")),
    }
}

/// Lists the hosts, or runs the subcommand.
pub fn run(conn: &Connection, args: &AgentsArgs) -> Result<(), Failure> {
    match &args.command {
        Some(AgentsCommand::Token(command)) => return crate::tokens::token(conn, command),
        Some(AgentsCommand::Forget(forget)) => return crate::tokens::forget(conn, forget),
        None => {}
    }
    let remote = conn.remote()?;
    let req = v1::ListAgentsRequest { labels: args.labels.iter().cloned().collect(), include_lost: args.all };
    runtime()?.block_on(async {
        // Any coordinator answers from its applied state; the leader is followed when hinted.
        let resp = remote
            .on_leader(|ch| {
                let req = req.clone();
                async move { FleetClient::new(ch).list_agents(req).await.map(|r| r.into_inner()) }
            })
            .await
            .map_err(remote_failure)?;
        let text = match args.output {
            TextOrJson::Json => json::pretty(&resp)?,
            TextOrJson::Table => table(&resp.hosts, args),
        };
        print(&text)
    })
}

fn host_state(h: &v1::Host) -> &'static str {
    match HostState::try_from(h.state).unwrap_or(HostState::Unspecified) {
        HostState::Online => "online",
        HostState::Lost => "lost",
        HostState::Unspecified => "unknown",
    }
}

fn run_state(state: i32) -> &'static str {
    match ServiceRunState::try_from(state).unwrap_or(ServiceRunState::Unspecified) {
        ServiceRunState::Unspecified => "unknown",
        ServiceRunState::Starting => "starting",
        ServiceRunState::Running => "running",
        ServiceRunState::Stopped => "stopped",
        ServiceRunState::Crashed => "crashed",
        ServiceRunState::Failed => "failed",
    }
}

fn sorted(map: &std::collections::HashMap<String, String>) -> BTreeMap<&str, &str> {
    map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn state_cell(h: &v1::Host) -> String {
    if h.drained {
        let reason = if h.drain_reason.is_empty() { String::new() } else { format!(": {}", h.drain_reason) };
        format!("{}, drained{reason}", host_state(h))
    } else {
        host_state(h).to_owned()
    }
}

fn services_cell(h: &v1::Host) -> String {
    if h.services.is_empty() {
        return "-".to_owned();
    }
    h.services
        .iter()
        .map(|s| {
            if s.state == ServiceRunState::Running as i32 {
                format!("{} {}", s.service, s.version)
            } else {
                format!("{} {} ({})", s.service, s.version, run_state(s.state))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn labels_cell(h: &v1::Host) -> String {
    let labels = sorted(&h.labels);
    if labels.is_empty() {
        return "-".to_owned();
    }
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

fn table(hosts: &[v1::Host], args: &AgentsArgs) -> String {
    if hosts.is_empty() {
        let which = if args.all { "" } else { "online " };
        let filter = if args.labels.is_empty() { "" } else { " match the labels" };
        let hint = if args.all { "" } else { " (--all also lists lost ones)" };
        return format!("no {which}hosts{filter}{hint}\n");
    }
    let header = ["HOST", "STATE", "AGENT", "LABELS", "SERVICES"].map(str::to_owned);
    let rows: Vec<[String; 5]> = hosts
        .iter()
        .map(|h| {
            let agent = h.agent_version.as_ref().map_or("-".to_owned(), |v| v.software_version.clone());
            [h.host_id.clone(), state_cell(h), agent, labels_cell(h), services_cell(h)]
        })
        .collect();
    aligned(&header, &rows)
}

/// A table with columns aligned to their widest cell (the last one not padded).
pub(crate) fn aligned<const N: usize>(header: &[String; N], rows: &[[String; N]]) -> String {
    let mut widths = header.clone().map(|c| c.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String; N]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    };
    let mut out = line(header);
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(id: &str, state: HostState, drained: bool) -> v1::Host {
        v1::Host {
            host_id: id.to_owned(),
            labels: [("role".to_owned(), "web".to_owned()), ("az".to_owned(), "b".to_owned())].into(),
            state: state as i32,
            drained,
            drain_reason: if drained { "disk swap".to_owned() } else { String::new() },
            agent_version: Some(flotilla_proto::version_info("0.1.0", [])),
            services: vec![
                v1::ServiceInstance {
                    service: "web".into(),
                    version: "1.4.0".into(),
                    state: ServiceRunState::Running as i32,
                    ..Default::default()
                },
                v1::ServiceInstance {
                    service: "cron".into(),
                    version: "0.3.0".into(),
                    state: ServiceRunState::Crashed as i32,
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    fn args(all: bool) -> AgentsArgs {
        AgentsArgs { command: None, labels: Vec::new(), all, output: TextOrJson::Table }
    }

    #[test]
    fn the_table_shows_state_drain_labels_and_services_aligned() {
        let text =
            table(&[host("web-1", HostState::Online, false), host("web-22", HostState::Lost, true)], &args(true));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "HOST    STATE                     AGENT  LABELS         SERVICES");
        assert_eq!(lines[1], "web-1   online                    0.1.0  az=b,role=web  web 1.4.0, cron 0.3.0 (crashed)");
        assert_eq!(lines[2], "web-22  lost, drained: disk swap  0.1.0  az=b,role=web  web 1.4.0, cron 0.3.0 (crashed)");
    }

    #[test]
    fn an_empty_listing_says_what_was_asked() {
        assert_eq!(table(&[], &args(false)), "no online hosts (--all also lists lost ones)\n");
        let filtered = AgentsArgs {
            command: None,
            labels: vec![("role".into(), "db".into())],
            all: true,
            output: TextOrJson::Table,
        };
        assert_eq!(table(&[], &filtered), "no hosts match the labels\n");
    }

    #[test]
    fn labels_must_be_key_value() {
        assert_eq!(parse_label(" role = web "), Ok(("role".into(), "web".into())));
        assert_eq!(parse_label("empty="), Ok(("empty".into(), String::new())));
        assert!(parse_label("role").unwrap_err().contains("expected KEY=VALUE"));
        assert!(parse_label("=web").is_err());
    }

    #[test]
    fn json_is_the_list_agents_response_in_the_canonical_mapping() {
        let resp = v1::ListAgentsResponse { hosts: vec![host("web-1", HostState::Lost, true)] };
        let doc: serde_json::Value = serde_json::from_str(&json::pretty(&resp).unwrap()).unwrap();
        let h = &doc["hosts"][0];
        assert_eq!(h["hostId"], "web-1");
        assert_eq!(h["state"], "HOST_STATE_LOST");
        assert_eq!(h["drainReason"], "disk swap");
        assert_eq!(h["labels"]["role"], "web");
        assert_eq!(h["agentVersion"]["softwareVersion"], "0.1.0");
        assert_eq!(h["connectedNodeId"], "0");
        assert_eq!(h["services"][1]["state"], "SERVICE_RUN_STATE_CRASHED");
    }
}
