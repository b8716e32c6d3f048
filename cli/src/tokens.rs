//! `flotilla agents token create|list|revoke` and `flotilla agents forget HOST`: join
//! tokens with which hosts enrol their agents, and forgetting a host's enrolment
//! (`Fleet.CreateJoinToken`, `ListJoinTokens`, `RevokeJoinToken`, `ForgetHost`).
//!
//! `token create` prints the token alone on standard output (so a script can capture
//! it) and what it allows, with the command that installs an agent with it, on
//! standard error.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write as _;
use std::time::Duration;

use flotilla_net::pki::format_unix;
use flotilla_proto::v1;
use flotilla_proto::v1::fleet_client::FleetClient;

use crate::remote::{Calls as _, Channel, Connection, now_unix_ms, print, remote_failure, runtime};
use crate::{Failure, TextOrJson, json};

/// `flotilla agents token ...`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum TokenCommand {
    /// Make a join token. It is printed once: the cluster keeps only a digest of it.
    Create(CreateArgs),
    /// List join tokens that can still enrol hosts (`--all`: every one).
    List {
        /// Also expired, used-up and revoked tokens.
        #[arg(long)]
        all: bool,
        /// How to print the result.
        #[arg(long, short, value_enum, default_value_t = TextOrJson::Table)]
        output: TextOrJson,
    },
    /// Revoke a join token: it enrols no more hosts (those it enrolled stay).
    Revoke {
        /// The token's id (the third part of the token; `token list` shows it).
        id: String,
        /// How to print the result.
        #[arg(long, short, value_enum, default_value_t = TextOrJson::Table)]
        output: TextOrJson,
    },
}

/// `flotilla agents token create`
#[derive(Debug, Clone, clap::Args)]
pub struct CreateArgs {
    /// How long the token enrols hosts (`30m`, `1h`, `7d`; at most 30 days).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// How many hosts it may enrol.
    #[arg(long, value_name = "N", default_value_t = 1)]
    uses: u32,
    /// A label the hosts it enrols may claim (repeatable); they may claim no other.
    #[arg(long = "label", value_name = "K=V", value_parser = crate::agents::parse_label)]
    labels: Vec<(String, String)>,
    /// Host ids it may enrol; `*` matches any run of characters (`web-*`).
    #[arg(long, value_name = "PATTERN")]
    host_id: Option<String>,
    /// How to print the result.
    #[arg(long, short, value_enum, default_value_t = TextOrJson::Table)]
    output: TextOrJson,
}

/// `flotilla agents forget HOST`
#[derive(Debug, Clone, clap::Args)]
pub struct ForgetArgs {
    /// The host id.
    host: String,
    /// How to print the result.
    #[arg(long, short, value_enum, default_value_t = TextOrJson::Table)]
    output: TextOrJson,
}

/// Runs a `token` command.
pub fn token(conn: &Connection, command: &TokenCommand) -> Result<(), Failure> {
    match command {
        TokenCommand::Create(args) => create(conn, args),
        TokenCommand::List { all, output } => {
            let req = v1::ListJoinTokensRequest { include_spent: *all };
            let resp = fleet(conn, move |mut c| async move { c.list_join_tokens(req).await })?;
            match output {
                TextOrJson::Json => print(&json::pretty(&resp)?),
                TextOrJson::Table => print(&token_table(&resp.tokens, now_unix_ms())),
            }
        }
        TokenCommand::Revoke { id, output } => {
            let req = v1::RevokeJoinTokenRequest { id: id.clone() };
            let resp = fleet(conn, move |mut c| {
                let req = req.clone();
                async move { c.revoke_join_token(req).await }
            })?;
            match output {
                TextOrJson::Json => print(&json::pretty(&resp)?),
                TextOrJson::Table => print(&format!("join token {id} revoked\n")),
            }
        }
    }
}

/// Runs `forget`.
pub fn forget(conn: &Connection, args: &ForgetArgs) -> Result<(), Failure> {
    let req = v1::ForgetHostRequest { host_id: args.host.clone() };
    let resp = fleet(conn, move |mut c| {
        let req = req.clone();
        async move { c.forget_host(req).await }
    })?;
    match args.output {
        TextOrJson::Json => print(&json::pretty(&resp)?),
        TextOrJson::Table => print(&format!(
            "host {} forgotten: its certificate is refused from now on; it may enrol again with a new token\n",
            args.host
        )),
    }
}

fn create(conn: &Connection, args: &CreateArgs) -> Result<(), Failure> {
    let req = v1::CreateJoinTokenRequest {
        ttl_ms: u64::try_from(args.ttl.as_millis()).unwrap_or(u64::MAX),
        uses: args.uses,
        labels: args.labels.iter().cloned().collect(),
        host_id_pattern: args.host_id.clone().unwrap_or_default(),
    };
    let resp = fleet(conn, move |mut c| {
        let req = req.clone();
        async move { c.create_join_token(req).await }
    })?;
    if args.output == TextOrJson::Json {
        return print(&json::pretty(&resp)?);
    }
    print(&format!("{}\n", resp.token))?;
    if let Some(t) = &resp.join_token {
        let hosts = if t.host_id_pattern.is_empty() {
            "any host id".to_owned()
        } else {
            format!("host ids `{}`", t.host_id_pattern)
        };
        let note = format!(
            "join token {}: enrols {} host{} ({hosts}) until {}, labels {}\ninstall an agent with: flotilla-agent --coordinators {} --join TOKEN\n",
            t.id,
            t.uses_allowed,
            if t.uses_allowed == 1 { "" } else { "s" },
            format_unix(t.expires_unix_ms / 1_000),
            labels(&t.labels),
            conn.addrs()?.join(","),
        );
        let _ = std::io::stderr().write_all(note.as_bytes());
    }
    Ok(())
}

/// Calls a `Fleet` method on the leader (writes) or any coordinator (reads).
fn fleet<T, F, Fut>(conn: &Connection, call: F) -> Result<T, Failure>
where
    F: Fn(FleetClient<Channel>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let remote = conn.remote()?;
    runtime()?.block_on(async {
        remote
            .on_leader(|ch| {
                let fut = call(FleetClient::new(ch));
                async move { fut.await.map(tonic::Response::into_inner) }
            })
            .await
            .map_err(remote_failure)
    })
}

fn labels(map: &std::collections::HashMap<String, String>) -> String {
    let sorted: BTreeMap<&String, &String> = map.iter().collect();
    if sorted.is_empty() {
        return "none".to_owned();
    }
    sorted.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

fn token_state(t: &v1::JoinToken, now_ms: i64) -> &'static str {
    if t.revoked {
        "revoked"
    } else if now_ms >= t.expires_unix_ms {
        "expired"
    } else if t.uses >= t.uses_allowed {
        "used up"
    } else {
        "usable"
    }
}

fn token_table(tokens: &[v1::JoinToken], now_ms: i64) -> String {
    if tokens.is_empty() {
        return "no usable join tokens (--all also lists spent ones)\n".to_owned();
    }
    let header = ["ID", "STATE", "USES", "EXPIRES", "HOST IDS", "LABELS", "ENROLLED"].map(str::to_owned);
    let rows: Vec<[String; 7]> = tokens
        .iter()
        .map(|t| {
            [
                t.id.clone(),
                token_state(t, now_ms).to_owned(),
                format!("{}/{}", t.uses, t.uses_allowed),
                format_unix(t.expires_unix_ms / 1_000),
                if t.host_id_pattern.is_empty() { "*".to_owned() } else { t.host_id_pattern.clone() },
                labels(&t.labels),
                if t.enrolled_hosts.is_empty() { "-".to_owned() } else { t.enrolled_hosts.join(",") },
            ]
        })
        .collect();
    crate::agents::aligned(&header, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_table_says_which_tokens_can_still_enrol() {
        let token = |id: &str, uses: u32, revoked: bool| v1::JoinToken {
            id: id.into(),
            expires_unix_ms: 1_800_000_000_000,
            uses_allowed: 2,
            uses,
            labels: [("zone".to_owned(), "a".to_owned())].into(),
            revoked,
            enrolled_hosts: (0..uses).map(|i| format!("web-{i}")).collect(),
            ..Default::default()
        };
        let text =
            token_table(&[token("0a1b2c3d", 1, false), token("ffff0000", 2, false), token("12345678", 0, true)], 0);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "ID        STATE    USES  EXPIRES               HOST IDS  LABELS  ENROLLED");
        assert_eq!(lines[1], "0a1b2c3d  usable   1/2   2027-01-15T08:00:00Z  *         zone=a  web-0");
        assert_eq!(lines[2], "ffff0000  used up  2/2   2027-01-15T08:00:00Z  *         zone=a  web-0,web-1");
        assert_eq!(lines[3], "12345678  revoked  0/2   2027-01-15T08:00:00Z  *         zone=a  -");
        assert_eq!(token_state(&token("x", 0, false), 1_800_000_000_000), "expired");
    }
}
