//! `flotilla policy window set|list|remove` and `flotilla policy hook set|list|remove`:
//! the cluster's deployment windows and freezes, and its webhooks (`flotilla.v1.Policy`).
//! With `--output json` each command prints the answer of the call it made.

use std::collections::BTreeMap;
use std::future::Future;

use anyhow::anyhow;
use flotilla_proto::v1;
use flotilla_proto::v1::policy_client::PolicyClient;
use flotilla_shared::window::{self, When};

use crate::remote::{Calls as _, Channel, Connection, now_unix_ms, print, remote_failure, runtime};
use crate::{Failure, TextOrJson, json};

/// `flotilla policy ...`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum PolicyCommand {
    /// Deployment windows and freezes: when rollouts may run. A batch that a freeze
    /// covers, or that allow windows cover and none is open, waits at its batch
    /// boundary and goes on by itself when the windows let it; rollbacks never wait.
    Window {
        #[command(subcommand)]
        command: WindowCommand,
    },
    /// Webhooks: the leader POSTs each release event of a hook's kinds to its URL, at
    /// least once and in order, retrying with backoff; each request carries a delivery
    /// id (`<release>.<event index>.<hook>`) to drop a second delivery by.
    Hook {
        #[command(subcommand)]
        command: HookCommand,
    },
}

/// `flotilla policy hook ...`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum HookCommand {
    /// Set a webhook (one of the same name is replaced and keeps where its deliveries
    /// are). It is told about events from now on.
    Set {
        /// Its name (letters, digits, `-`, `_`, `.`).
        name: String,
        /// Where requests go (`http://` or `https://`).
        #[arg(long)]
        url: String,
        /// What it is told about, comma-separated: started, needs_approval, paused,
        /// failed, rolled_back, succeeded, aborted.
        #[arg(long, value_delimiter = ',', required = true)]
        events: Vec<String>,
        /// The body: Flotilla's JSON document, or a Slack incoming-webhook message.
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
    },
    /// List the webhooks: deliveries, failures, what is pending, the last error.
    List,
    /// Remove a webhook; what it was not told yet is dropped.
    Remove {
        /// The hook's name.
        name: String,
    },
}

/// A webhook's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Flotilla's JSON document.
    Json,
    /// `{"text": ...}` for a Slack incoming webhook.
    Slack,
}

/// `flotilla policy window ...`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum WindowCommand {
    /// Set a window (one of the same name is replaced): `--deny` for a freeze,
    /// `--allow` for when rollouts may run; one-off (`--until`, `--from`) or weekly
    /// (`--days`, `--start`, `--end`, `--tz`).
    Set(Box<SetArgs>),
    /// List the windows: what each covers, when, and whether it is in effect now.
    List,
    /// Remove a window: releases it held go on at their next look (within a second).
    Remove {
        /// The window's name.
        name: String,
    },
}

/// `flotilla policy window set`
#[derive(Debug, Clone, clap::Args)]
pub struct SetArgs {
    /// Its name (letters, digits, `-`, `_`, `.`).
    name: String,
    /// A freeze: rollouts it covers wait while it is in effect.
    #[arg(long, conflicts_with = "allow", required_unless_present = "allow")]
    deny: bool,
    /// Rollouts it covers run only inside it (or inside another allow window).
    #[arg(long)]
    allow: bool,
    /// Only this service (repeat for more); without it, every service.
    #[arg(long = "service", value_name = "SERVICE")]
    services: Vec<String>,
    /// Only hosts with these labels (`env=prod,region=eu`); without it, every host.
    #[arg(long, value_name = "LABELS")]
    hosts: Option<String>,
    /// One-off: from this instant (RFC 3339 with offset; default now).
    #[arg(long, value_name = "INSTANT", requires = "until", conflicts_with_all = ["days", "start", "end", "tz"])]
    from: Option<String>,
    /// One-off: until this instant (RFC 3339 with offset, like 2026-12-27T00:00:00Z), or
    /// for this long from now (`2h`, `3d`).
    #[arg(long, value_name = "INSTANT|DURATION", conflicts_with_all = ["days", "start", "end", "tz"])]
    until: Option<String>,
    /// Weekly: the days it starts on (`mon-fri`, `sat,sun`, `daily`).
    #[arg(long, value_name = "DAYS", requires_all = ["start", "end", "tz"])]
    days: Option<String>,
    /// Weekly: local start, HH:MM.
    #[arg(long, value_name = "HH:MM", requires = "days")]
    start: Option<String>,
    /// Weekly: local end, HH:MM (24:00 is midnight; an end before the start is on the
    /// next day).
    #[arg(long, value_name = "HH:MM", requires = "days")]
    end: Option<String>,
    /// Weekly: the IANA time zone of the local times (`Europe/Berlin`, `UTC`).
    #[arg(long, value_name = "ZONE", requires = "days")]
    tz: Option<String>,
    /// Why (shown to everyone it holds).
    #[arg(long, default_value = "")]
    reason: String,
}

/// Runs a `policy` command.
pub fn run(conn: &Connection, command: &PolicyCommand, output: TextOrJson) -> Result<(), Failure> {
    match command {
        PolicyCommand::Window { command } => windows(conn, command, output),
        PolicyCommand::Hook { command } => hooks(conn, command, output),
    }
}

fn hooks(conn: &Connection, command: &HookCommand, output: TextOrJson) -> Result<(), Failure> {
    match command {
        HookCommand::Set { name, url, events, format } => {
            let hook = v1::Hook {
                name: name.clone(),
                url: url.clone(),
                events: events.iter().map(|e| e.trim().to_owned()).filter(|e| !e.is_empty()).collect(),
                format: match format {
                    Format::Json => v1::HookFormat::Json,
                    Format::Slack => v1::HookFormat::Slack,
                } as i32,
                ..Default::default()
            };
            let req = v1::SetHookRequest { hook: Some(hook) };
            let resp = policy(conn, move |mut c| {
                let req = req.clone();
                async move { c.set_hook(req).await }
            })?;
            match output {
                TextOrJson::Json => print(&json::pretty(&resp)?),
                TextOrJson::Table => {
                    let h = resp.hook.unwrap_or_default();
                    print(&format!("hook {} set: {} is told about {}\n", h.name, h.url, h.events.join(", ")))
                }
            }
        }
        HookCommand::List => {
            let resp = policy(conn, |mut c| async move { c.list_hooks(v1::ListHooksRequest {}).await })?;
            match output {
                TextOrJson::Json => print(&json::pretty(&resp)?),
                TextOrJson::Table => print(&hook_table(&resp.hooks)),
            }
        }
        HookCommand::Remove { name } => {
            let req = v1::RemoveHookRequest { name: name.clone() };
            let resp = policy(conn, move |mut c| {
                let req = req.clone();
                async move { c.remove_hook(req).await }
            })?;
            match output {
                TextOrJson::Json => print(&json::pretty(&resp)?),
                TextOrJson::Table => print(&format!("hook {name} removed\n")),
            }
        }
    }
}

/// The hooks as a table, with the failing delivery of each under it.
fn hook_table(hooks: &[v1::Hook]) -> String {
    if hooks.is_empty() {
        return "no webhooks\n".to_owned();
    }
    let mut out = format!(
        "{:<16} {:<6} {:>9} {:>7} {:>7}  {:<40} {}\n",
        "NAME", "FORMAT", "DELIVERED", "FAILED", "PENDING", "URL", "EVENTS"
    );
    for h in hooks {
        let format = if h.format == v1::HookFormat::Slack as i32 { "slack" } else { "json" };
        let from = if h.from_config { " (from [[notify]])" } else { "" };
        out.push_str(&format!(
            "{:<16} {:<6} {:>9} {:>7} {:>7}  {:<40} {}{from}\n",
            h.name,
            format,
            h.delivered,
            h.failed,
            h.pending,
            h.url,
            h.events.join(",")
        ));
        if !h.last_error.is_empty() {
            out.push_str(&format!(
                "  failing: event {} of {}, {} attempts, last at {}: {}\n",
                h.failing_event_index,
                h.failing_release_id,
                h.failed_attempts,
                window::format_instant(h.last_error_unix_ms),
                h.last_error
            ));
        }
    }
    out
}

fn windows(conn: &Connection, command: &WindowCommand, output: TextOrJson) -> Result<(), Failure> {
    match command {
        WindowCommand::Set(args) => {
            let req = v1::SetWindowRequest { window: Some(window_of(args, now_unix_ms()).map_err(Failure::Usage)?) };
            let resp = policy(conn, move |mut c| {
                let req = req.clone();
                async move { c.set_window(req).await }
            })?;
            match output {
                TextOrJson::Json => print(&json::pretty(&resp)?),
                TextOrJson::Table => {
                    let w = resp.window.unwrap_or_default();
                    print(&format!("window {} set: {}\n", w.name, describe(&w)))
                }
            }
        }
        WindowCommand::List => {
            let resp = policy(conn, |mut c| async move { c.list_windows(v1::ListWindowsRequest {}).await })?;
            match output {
                TextOrJson::Json => print(&json::pretty(&resp)?),
                TextOrJson::Table => print(&table(&resp.windows)),
            }
        }
        WindowCommand::Remove { name } => {
            let req = v1::RemoveWindowRequest { name: name.clone() };
            let resp = policy(conn, move |mut c| {
                let req = req.clone();
                async move { c.remove_window(req).await }
            })?;
            match output {
                TextOrJson::Json => print(&json::pretty(&resp)?),
                TextOrJson::Table => print(&format!("window {name} removed\n")),
            }
        }
    }
}

/// The window `set` asks for, checked here first so a mistake is named before any call.
fn window_of(args: &SetArgs, now: i64) -> anyhow::Result<v1::Window> {
    let (once, weekly) = match (&args.until, &args.days) {
        (Some(until), None) => {
            let until_unix_ms = match humantime::parse_duration(until) {
                Ok(d) => now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
                Err(_) => window::parse_instant(until).map_err(|e| anyhow!("--until: {e}"))?,
            };
            let from_unix_ms = match &args.from {
                Some(from) => window::parse_instant(from).map_err(|e| anyhow!("--from: {e}"))?,
                None => now,
            };
            if until_unix_ms <= from_unix_ms {
                return Err(anyhow!(
                    "--until ({}) is not after --from ({})",
                    window::format_instant(until_unix_ms),
                    window::format_instant(from_unix_ms)
                ));
            }
            (Some(v1::OnceWindow { from_unix_ms, until_unix_ms }), None)
        }
        (None, Some(days)) => {
            let (start, end, tz) = (
                args.start.clone().unwrap_or_default(),
                args.end.clone().unwrap_or_default(),
                args.tz.clone().unwrap_or_default(),
            );
            When::weekly(days, &start, &end, &tz).map_err(|e| anyhow!("{e}"))?;
            (None, Some(v1::WeeklyWindow { days: days.clone(), start, end, time_zone: tz }))
        }
        _ => {
            return Err(anyhow!(
                "say when: --until (and --from) for a one-off window, or --days, --start, --end and --tz for a weekly one"
            ));
        }
    };
    let mut host_labels = BTreeMap::new();
    for term in args.hosts.iter().flat_map(|h| h.split(',')).map(str::trim).filter(|t| !t.is_empty()) {
        let (k, v) = term
            .split_once('=')
            .ok_or_else(|| anyhow!("--hosts: `{term}` is not a label: write KEY=VALUE[,KEY=VALUE...]"))?;
        host_labels.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    Ok(v1::Window {
        name: args.name.clone(),
        effect: if args.allow { v1::WindowEffect::Allow } else { v1::WindowEffect::Deny } as i32,
        services: args.services.clone(),
        host_labels: host_labels.into_iter().collect(),
        once,
        weekly,
        reason: args.reason.clone(),
        ..Default::default()
    })
}

fn policy<T, F, Fut>(conn: &Connection, call: F) -> Result<T, Failure>
where
    F: Fn(PolicyClient<Channel>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let remote = conn.remote()?;
    runtime()?.block_on(async {
        remote
            .on_leader(|ch| {
                let fut = call(PolicyClient::new(ch));
                async move { fut.await.map(tonic::Response::into_inner) }
            })
            .await
            .map_err(remote_failure)
    })
}

fn effect(w: &v1::Window) -> &'static str {
    match v1::WindowEffect::try_from(w.effect) {
        Ok(v1::WindowEffect::Allow) => "allow",
        Ok(v1::WindowEffect::Deny) => "deny",
        _ => "?",
    }
}

fn when(w: &v1::Window) -> String {
    match (&w.once, &w.weekly) {
        (Some(o), _) => {
            format!("{} to {}", window::format_instant(o.from_unix_ms), window::format_instant(o.until_unix_ms))
        }
        (_, Some(wk)) => format!("{} {}-{} {}", wk.days, wk.start, wk.end, wk.time_zone),
        _ => "-".to_owned(),
    }
}

fn scope(w: &v1::Window) -> (String, String) {
    let services = if w.services.is_empty() { "*".to_owned() } else { w.services.join(",") };
    let hosts = if w.host_labels.is_empty() {
        "*".to_owned()
    } else {
        let mut labels: Vec<String> = w.host_labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        labels.join(",")
    };
    (services, hosts)
}

fn now_and_next(w: &v1::Window) -> String {
    let next = if w.next_change_unix_ms == 0 {
        "never again".to_owned()
    } else {
        window::format_instant(w.next_change_unix_ms)
    };
    if w.in_effect { format!("in effect until {next}") } else { format!("not in effect; next {next}") }
}

/// One window in a sentence.
fn describe(w: &v1::Window) -> String {
    let (services, hosts) = scope(w);
    format!("{} {} (services {services}, hosts {hosts}); {}", effect(w), when(w), now_and_next(w))
}

/// The windows as a table.
fn table(windows: &[v1::Window]) -> String {
    if windows.is_empty() {
        return "no deployment windows: releases run whenever they are started\n".to_owned();
    }
    let mut out =
        format!("{:<16} {:<6} {:<16} {:<16} {:<50} {}\n", "NAME", "EFFECT", "SERVICES", "HOSTS", "WHEN", "NOW");
    for w in windows {
        let (services, hosts) = scope(w);
        out.push_str(&format!(
            "{:<16} {:<6} {:<16} {:<16} {:<50} {}\n",
            w.name,
            effect(w),
            services,
            hosts,
            when(w),
            now_and_next(w)
        ));
        if !w.reason.is_empty() {
            out.push_str(&format!("  {}\n", w.reason));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(name: &str) -> SetArgs {
        SetArgs {
            name: name.to_owned(),
            deny: true,
            allow: false,
            services: Vec::new(),
            hosts: None,
            from: None,
            until: None,
            days: None,
            start: None,
            end: None,
            tz: None,
            reason: String::new(),
        }
    }

    #[test]
    fn until_takes_an_instant_or_a_duration_from_now() {
        let mut a = args("f");
        a.until = Some("2h".to_owned());
        let w = window_of(&a, 1_000).unwrap();
        assert_eq!(w.once, Some(v1::OnceWindow { from_unix_ms: 1_000, until_unix_ms: 1_000 + 7_200_000 }));
        a.until = Some("2026-12-27T00:00:00Z".to_owned());
        a.from = Some("2026-12-24T00:00:00+01:00".to_owned());
        let w = window_of(&a, 1_000).unwrap();
        assert_eq!(w.once.unwrap().from_unix_ms, window::parse_instant("2026-12-23T23:00:00Z").unwrap());
    }

    #[test]
    fn mistakes_are_named_before_any_call() {
        let e = window_of(&args("f"), 0).unwrap_err().to_string();
        assert!(e.contains("say when"), "{e}");
        let mut a = args("f");
        a.until = Some("tomorrow".to_owned());
        let e = window_of(&a, 0).unwrap_err().to_string();
        assert!(e.contains("--until: `tomorrow` is not an instant"), "{e}");
        let mut a = args("f");
        a.days = Some("mon-fri".to_owned());
        a.start = Some("09:00".to_owned());
        a.end = Some("17:00".to_owned());
        a.tz = Some("Europe/Pariss".to_owned());
        assert!(window_of(&a, 0).unwrap_err().to_string().contains("is not a time zone"));
        a.tz = Some("Europe/Paris".to_owned());
        a.hosts = Some("env=prod,prod".to_owned());
        let e = window_of(&a, 0).unwrap_err().to_string();
        assert!(e.contains("--hosts: `prod` is not a label"), "{e}");
    }

    #[test]
    fn the_table_says_what_each_window_covers_and_whether_it_holds_now() {
        let w = v1::Window {
            name: "year-end".to_owned(),
            effect: v1::WindowEffect::Deny as i32,
            services: vec!["payments".to_owned()],
            once: Some(v1::OnceWindow { from_unix_ms: 0, until_unix_ms: 86_400_000 }),
            reason: "peak".to_owned(),
            in_effect: true,
            next_change_unix_ms: 86_400_000,
            ..Default::default()
        };
        let t = table(&[w]);
        assert!(t.contains("year-end"), "{t}");
        assert!(t.contains("1970-01-01T00:00:00Z to 1970-01-02T00:00:00Z"), "{t}");
        assert!(t.contains("in effect until 1970-01-02T00:00:00Z"), "{t}");
        assert!(t.contains("  peak"), "{t}");
        assert!(table(&[]).contains("no deployment windows"));
    }
}
