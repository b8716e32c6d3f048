//! Who may do what on the cluster (`flotilla.v1.Access`): `flotilla whoami`, operator
//! tokens (`flotilla tokens create|list|revoke`) and the audit trail (`flotilla
//! audit`).
//!
//! `tokens create` prints the token alone on standard output (so a script can capture
//! it: `TOKEN=$(flotilla tokens create ...)`) and what it is on standard error. With
//! `--output json` each command prints the answer of the call it made.

use std::future::Future;
use std::io::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use flotilla_net::pki::{OperatorRole, format_unix};
use flotilla_proto::v1;
use flotilla_proto::v1::access_client::AccessClient;

use crate::remote::{Calls as _, Channel, Connection, now_unix_ms, print, remote_failure, runtime};
use crate::{Failure, TextOrJson, json};

/// `flotilla tokens ...`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum TokensCommand {
    /// Make an operator token: calls made with it (`--token`) have its role and are
    /// recorded as `token NAME`. It is printed once: the cluster keeps only a digest of
    /// its secret.
    ///
    /// The token alone goes to standard output, so `TOKEN=$(flotilla tokens create
    /// ...)` captures it; a note on what it is goes to standard error.
    Create(CreateArgs),
    /// List operator tokens that still work, newest first (`--all`: every one).
    List {
        /// Also expired and revoked tokens.
        #[arg(long)]
        all: bool,
    },
    /// Revoke an operator token: every call made with it is refused from then on.
    Revoke {
        /// The token's id (the third part of the token; `tokens list` shows it).
        id: String,
    },
}

/// `flotilla tokens create`
#[derive(Debug, Clone, clap::Args)]
pub struct CreateArgs {
    /// What calls with the token may do: `viewer` reads only; `deployer` also drives
    /// releases and drains hosts; `admin` may do everything.
    #[arg(long, value_name = "viewer|deployer|admin")]
    role: OperatorRole,
    /// How long it works (`12h`, `30d`; at most a year).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// The name its calls are recorded under (letters, digits, `.`, `_`, `-`, `@`; at
    /// most 64); without one, its id.
    #[arg(long)]
    name: Option<String>,
}

/// `flotilla audit`
#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    /// Only records of the last DURATION (`2h`, `7d`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    since: Option<Duration>,
    /// Only records about this release.
    #[arg(long, value_name = "ID")]
    release: Option<String>,
    /// Only records of this actor: its name (`alice`, `ci-bot`) or the whole actor
    /// (`operator alice`, `token ci-bot`).
    #[arg(long, value_name = "NAME")]
    actor: Option<String>,
    /// At most N records, the newest (the cluster's default: 100; at most 10000).
    #[arg(long, value_name = "N")]
    limit: Option<u32>,
    /// How to print the result.
    #[arg(long, short, value_enum, default_value_t = TextOrJson::Table)]
    output: TextOrJson,
}

/// `flotilla whoami`
#[derive(Debug, Clone, clap::Args)]
pub struct WhoAmIArgs {
    /// How to print the result.
    #[arg(long, short, value_enum, default_value_t = TextOrJson::Table)]
    output: TextOrJson,
}

/// Runs a `tokens` command.
pub fn tokens(conn: &Connection, command: &TokensCommand, output: TextOrJson) -> Result<(), Failure> {
    match command {
        TokensCommand::Create(args) => create(conn, args, output),
        TokensCommand::List { all } => {
            let req = v1::ListTokensRequest { include_dead: *all };
            let resp = access(conn, move |mut c| async move { c.list_tokens(req).await })?;
            match output {
                TextOrJson::Json => print(&json::pretty(&resp)?),
                TextOrJson::Table => print(&token_table(&resp.tokens, *all, now_unix_ms())),
            }
        }
        TokensCommand::Revoke { id } => {
            let req = v1::RevokeTokenRequest { id: id.clone() };
            let resp = access(conn, move |mut c| {
                let req = req.clone();
                async move { c.revoke_token(req).await }
            })?;
            match output {
                TextOrJson::Json => print(&json::pretty(&resp)?),
                TextOrJson::Table => {
                    let name = resp.operator_token.as_ref().map_or(String::new(), |t| format!(" ({})", t.name));
                    print(&format!("operator token {id}{name} revoked: calls made with it are refused from now on\n"))
                }
            }
        }
    }
}

fn create(conn: &Connection, args: &CreateArgs, output: TextOrJson) -> Result<(), Failure> {
    let req = v1::CreateTokenRequest {
        role: role_to_proto(args.role) as i32,
        ttl_ms: u64::try_from(args.ttl.as_millis()).unwrap_or(u64::MAX),
        name: args.name.clone().unwrap_or_default(),
    };
    let resp = access(conn, move |mut c| {
        let req = req.clone();
        async move { c.create_token(req).await }
    })?;
    if output == TextOrJson::Json {
        return print(&json::pretty(&resp)?);
    }
    print(&format!("{}\n", resp.token))?;
    if let Some(t) = &resp.operator_token {
        let note = format!(
            "operator token {} (name {}, role {}) works until {}; it is shown once: the cluster keeps only a digest of it\n",
            t.id,
            t.name,
            role_name(t.role),
            format_unix(t.expires_unix_ms / 1_000),
        );
        let _ = std::io::stderr().write_all(note.as_bytes());
    }
    Ok(())
}

/// Runs `audit`.
pub fn audit(conn: &Connection, args: &AuditArgs) -> Result<(), Failure> {
    let req = v1::ListAuditRequest {
        since_unix_ms: args.since.map_or(0, |d| since_unix_ms(now_unix_ms(), d)),
        release_id: args.release.clone().unwrap_or_default(),
        actor: args.actor.clone().unwrap_or_default(),
        limit: args.limit.unwrap_or(0),
    };
    let resp = access(conn, move |mut c| {
        let req = req.clone();
        async move { c.list_audit(req).await }
    })?;
    match args.output {
        TextOrJson::Json => print(&json::pretty(&resp)?),
        TextOrJson::Table => print(&audit_table(&resp)),
    }
}

/// Runs `whoami`.
pub fn whoami(conn: &Connection, args: &WhoAmIArgs) -> Result<(), Failure> {
    let resp = access(conn, |mut c| async move { c.who_am_i(v1::WhoAmIRequest {}).await })?;
    match args.output {
        TextOrJson::Json => print(&json::pretty(&resp)?),
        TextOrJson::Table => print(&whoami_text(&resp)),
    }
}

/// Calls an `Access` method on the leader (following hints).
fn access<T, F, Fut>(conn: &Connection, call: F) -> Result<T, Failure>
where
    F: Fn(AccessClient<Channel>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let remote = conn.remote()?;
    runtime()?.block_on(async {
        remote
            .on_leader(|ch| {
                let fut = call(AccessClient::new(ch));
                async move { fut.await.map(tonic::Response::into_inner) }
            })
            .await
            .map_err(remote_failure)
    })
}

/// `--since DURATION`: the instant DURATION before `now_ms` (never before the epoch).
fn since_unix_ms(now_ms: i64, ago: Duration) -> i64 {
    let ago = i64::try_from(ago.as_millis()).unwrap_or(i64::MAX);
    now_ms.saturating_sub(ago).max(1)
}

fn role_to_proto(role: OperatorRole) -> v1::OperatorRole {
    match role {
        OperatorRole::Viewer => v1::OperatorRole::Viewer,
        OperatorRole::Deployer => v1::OperatorRole::Deployer,
        OperatorRole::Admin => v1::OperatorRole::Admin,
    }
}

/// `viewer`, `deployer`, `admin`; `-` when unset.
fn role_name(role: i32) -> &'static str {
    match v1::OperatorRole::try_from(role).unwrap_or(v1::OperatorRole::Unspecified) {
        v1::OperatorRole::Viewer => "viewer",
        v1::OperatorRole::Deployer => "deployer",
        v1::OperatorRole::Admin => "admin",
        v1::OperatorRole::Unspecified => "-",
    }
}

/// `2027-01-01 00:00:00 UTC`.
fn utc(unix_ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(unix_ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string().replace('T', " ").replace('Z', " UTC")
}

fn whoami_text(w: &v1::WhoAmIResponse) -> String {
    let role = match role_name(w.role) {
        "-" => String::new(),
        name => format!(" (role {name})"),
    };
    let how = match w.authenticated_by.as_str() {
        "" | "none" => "not authenticated (no client certificate or operator token was presented)".to_owned(),
        "insecure" => "not authenticated (the cluster runs --insecure and checks no identities)".to_owned(),
        by => format!("authenticated by {by}"),
    };
    let expires = if w.expires_unix_ms > 0 { format!(", expires {}", utc(w.expires_unix_ms)) } else { String::new() };
    format!("{}{role}, {how}{expires}\n", w.actor)
}

/// Whether a token still works, or since when it does not.
fn token_state(t: &v1::OperatorToken, now_ms: i64) -> String {
    if t.revoked {
        let by = if t.revoked_by.is_empty() { String::new() } else { format!(" by {}", t.revoked_by) };
        format!("revoked {}{by}", format_unix(t.revoked_unix_ms / 1_000))
    } else if now_ms >= t.expires_unix_ms {
        format!("expired {}", format_unix(t.expires_unix_ms / 1_000))
    } else {
        format!("expires {}", format_unix(t.expires_unix_ms / 1_000))
    }
}

fn token_table(tokens: &[v1::OperatorToken], all: bool, now_ms: i64) -> String {
    if tokens.is_empty() {
        return if all {
            "no operator tokens\n".to_owned()
        } else {
            "no operator tokens that still work (--all also lists expired and revoked ones)\n".to_owned()
        };
    }
    let header = ["ID", "NAME", "ROLE", "CREATED BY", "CREATED", "STATE"].map(str::to_owned);
    let rows: Vec<[String; 6]> = tokens
        .iter()
        .map(|t| {
            [
                t.id.clone(),
                t.name.clone(),
                role_name(t.role).to_owned(),
                dash(&t.created_by),
                format_unix(t.created_unix_ms / 1_000),
                token_state(t, now_ms),
            ]
        })
        .collect();
    crate::agents::aligned(&header, &rows)
}

fn dash(text: &str) -> String {
    if text.is_empty() { "-".to_owned() } else { text.to_owned() }
}

/// How long the message of a refusal may be in the audit table.
const OUTCOME_WIDTH: usize = 60;

/// `ok`, or `CODE: message` with the message shortened to fit a table.
fn outcome(r: &v1::AuditRecord) -> String {
    if r.code.is_empty() || r.code.eq_ignore_ascii_case("ok") {
        return "ok".to_owned();
    }
    if r.message.is_empty() {
        return r.code.clone();
    }
    format!("{}: {}", r.code, shorten(&r.message, OUTCOME_WIDTH))
}

/// `text` on one line, cut to `max` characters with an ellipsis.
fn shorten(text: &str, max: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
    cut.truncate(cut.trim_end().len());
    cut.push('…');
    cut
}

fn audit_table(resp: &v1::ListAuditResponse) -> String {
    if resp.records.is_empty() {
        return "no audit records match\n".to_owned();
    }
    let header = ["TIME", "ACTOR", "ROLE", "METHOD", "TARGET", "OUTCOME", "NODE", "PEER"].map(str::to_owned);
    let rows: Vec<[String; 8]> = resp
        .records
        .iter()
        .map(|r| {
            [
                format_unix(r.at_unix_ms / 1_000),
                dash(&r.actor),
                dash(&r.role),
                dash(&r.method),
                dash(&r.target),
                outcome(r),
                r.node_id.to_string(),
                dash(&r.peer),
            ]
        })
        .collect();
    let mut out = crate::agents::aligned(&header, &rows);
    if resp.truncated {
        out.push_str(&format!(
            "older records were left out: narrow the search (--since, --release, --actor) or raise --limit (at most {})\n",
            MAX_LIMIT
        ));
    }
    out
}

/// The most records one `ListAudit` returns.
const MAX_LIMIT: u32 = 10_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_that_long_before_now() {
        let now = 1_800_000_000_000;
        assert_eq!(since_unix_ms(now, humantime::parse_duration("2h").unwrap()), now - 7_200_000);
        assert_eq!(since_unix_ms(now, humantime::parse_duration("30m").unwrap()), now - 1_800_000);
        // Further back than the epoch: from the start (0 would mean no filter at all).
        assert_eq!(since_unix_ms(now, Duration::from_secs(u64::MAX)), 1);
    }

    #[test]
    fn whoami_says_who_how_and_until_when() {
        let w = v1::WhoAmIResponse {
            actor: "operator alice".into(),
            role: v1::OperatorRole::Deployer as i32,
            authenticated_by: "certificate".into(),
            expires_unix_ms: 1_798_761_600_000,
        };
        assert_eq!(
            whoami_text(&w),
            "operator alice (role deployer), authenticated by certificate, expires 2027-01-01 00:00:00 UTC\n"
        );
        let token = v1::WhoAmIResponse {
            actor: "token bob".into(),
            role: v1::OperatorRole::Viewer as i32,
            authenticated_by: "token 0a1b2c3d".into(),
            expires_unix_ms: 1_798_765_200_000,
        };
        assert_eq!(
            whoami_text(&token),
            "token bob (role viewer), authenticated by token 0a1b2c3d, expires 2027-01-01 01:00:00 UTC\n"
        );
        let nobody =
            v1::WhoAmIResponse { actor: "anonymous".into(), authenticated_by: "none".into(), ..Default::default() };
        assert_eq!(
            whoami_text(&nobody),
            "anonymous, not authenticated (no client certificate or operator token was presented)\n"
        );
        let agent = v1::WhoAmIResponse {
            actor: "agent web-1".into(),
            authenticated_by: "certificate".into(),
            ..Default::default()
        };
        assert_eq!(whoami_text(&agent), "agent web-1, authenticated by certificate\n");
    }

    #[test]
    fn the_token_table_says_which_tokens_still_work() {
        let token = |id: &str, name: &str, role: v1::OperatorRole| v1::OperatorToken {
            id: id.into(),
            name: name.into(),
            role: role as i32,
            created_unix_ms: 1_790_000_000_000,
            expires_unix_ms: 1_800_000_000_000,
            created_by: "operator admin".into(),
            ..Default::default()
        };
        let revoked = v1::OperatorToken {
            revoked: true,
            revoked_by: "token root".into(),
            revoked_unix_ms: 1_795_000_000_000,
            ..token("ffff0000", "old", v1::OperatorRole::Admin)
        };
        let text = token_table(
            &[
                token("0a1b2c3d", "ci-bot", v1::OperatorRole::Deployer),
                token("12345678", "bob", v1::OperatorRole::Viewer),
                revoked,
            ],
            true,
            1_795_000_000_000,
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "ID        NAME    ROLE      CREATED BY      CREATED               STATE");
        assert_eq!(
            lines[1],
            "0a1b2c3d  ci-bot  deployer  operator admin  2026-09-21T14:13:20Z  expires 2027-01-15T08:00:00Z"
        );
        assert_eq!(
            lines[3],
            "ffff0000  old     admin     operator admin  2026-09-21T14:13:20Z  revoked 2026-11-18T11:06:40Z by token root"
        );
        assert_eq!(
            token_state(&token("x", "x", v1::OperatorRole::Viewer), 1_800_000_000_000),
            "expired 2027-01-15T08:00:00Z"
        );
        assert!(token_table(&[], false, 0).contains("--all"));
        assert_eq!(token_table(&[], true, 0), "no operator tokens\n");
    }

    #[test]
    fn the_audit_table_is_newest_first_with_outcomes_shortened() {
        let record = |seq: u64, actor: &str, code: &str, message: &str| v1::AuditRecord {
            seq,
            at_unix_ms: 1_790_000_000_000 + i64::try_from(seq).unwrap() * 1_000,
            actor: actor.into(),
            role: if actor.starts_with("agent") { String::new() } else { "viewer".into() },
            method: "Access/CreateToken".into(),
            target: String::new(),
            peer: "127.0.0.1:50000".into(),
            node_id: 1,
            code: code.into(),
            reason: String::new(),
            message: message.into(),
            ..Default::default()
        };
        let long = "token bob (role viewer) may not call flotilla.v1.Access/CreateToken: it needs the admin role";
        let resp = v1::ListAuditResponse {
            records: vec![record(2, "token bob", "PERMISSION_DENIED", long), record(1, "agent web-1", "OK", "")],
            truncated: true,
        };
        let text = audit_table(&resp);
        let lines: Vec<&str> = text.lines().collect();
        let denied = "PERMISSION_DENIED: token bob (role viewer) may not call flotilla.v1.Access/Cre…";
        assert_eq!(denied.chars().count(), "PERMISSION_DENIED: ".len() + OUTCOME_WIDTH);
        let w = denied.chars().count();
        assert_eq!(
            lines[0],
            format!(
                "TIME                  ACTOR        ROLE    METHOD              TARGET  {:<w$}  NODE  PEER",
                "OUTCOME"
            )
        );
        assert_eq!(
            lines[1],
            format!(
                "2026-09-21T14:13:22Z  token bob    viewer  Access/CreateToken  -       {denied}  1     127.0.0.1:50000"
            )
        );
        assert_eq!(
            lines[2],
            format!(
                "2026-09-21T14:13:21Z  agent web-1  -       Access/CreateToken  -       {:<w$}  1     127.0.0.1:50000",
                "ok"
            )
        );
        assert!(lines[3].starts_with("older records were left out"), "{text}");
        assert_eq!(audit_table(&v1::ListAuditResponse::default()), "no audit records match\n");
    }

    #[test]
    fn shortening_keeps_short_text_and_cuts_long_text_on_one_line() {
        assert_eq!(shorten("short", 10), "short");
        assert_eq!(shorten("two\nlines", 10), "two lines");
        assert_eq!(shorten("abcdefghijkl", 5), "abcd…");
        assert_eq!(shorten("abc defghijkl", 5), "abc…");
    }
}
