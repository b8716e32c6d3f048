//! `flotilla release ...`: submit, list, show, watch and steer releases.
//! `watch` (and `start --watch`) follows a release's event stream with live
//! per-service progress bars, resuming after a dropped stream or a leader change.
//! With `--output json` each command prints the answer of the call it made (one
//! `ReleaseEvent` per line for `watch`), as docs/json-output.md lists.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail};
use flotilla_net::LeaderError;
use flotilla_net::pki::format_unix;
use flotilla_proto::v1::releases_client::ReleasesClient;
use flotilla_proto::v1::{self, ReleaseState};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::remote::{Calls, Channel, Connection, print, remote_failure, runtime};
use crate::{Failure, json};

/// `flotilla release ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ReleaseCommand {
    /// Submit a release spec. Resubmitting the same spec with the same
    /// --idempotency-key returns the first submission; another spec with that key is
    /// refused.
    ///
    /// Exit codes: 0 submitted (with --watch: succeeded), 1 no coordinator answered,
    /// 2 bad spec or usage (a key used before for another spec included), 3 (with
    /// --watch) the release did not succeed.
    Start {
        /// The release spec (TOML).
        spec: PathBuf,
        /// Makes retries safe: the same key never creates a second release.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Follow the release with live progress until it ends.
        #[arg(long)]
        watch: bool,
        /// When the change this release ships was made (`2026-12-01T09:30:00Z`, an RFC
        /// 3339 time with its offset), for lead time in `flotilla stats`: recorded in the
        /// submitted spec as `changed_at`. Without it, the spec's own `changed_at`, if
        /// any, else the release's creation.
        #[arg(long, value_name = "TIME")]
        changed_at: Option<String>,
    },
    /// List releases, newest last.
    List,
    /// Show one release: state, stages, per-service progress, pending approvals.
    Show {
        /// The release id.
        id: String,
    },
    /// Follow a release's events with live progress until it ends (exit 0 when it
    /// succeeded, 3 when it rolled back, failed or was aborted).
    Watch {
        /// The release id.
        id: String,
        /// Start after this event index (0: the whole history).
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
    /// Approve what the release waits for: a gate or a stage (needed only when it
    /// waits for several).
    Approve {
        /// The release id.
        id: String,
        /// The gate to approve.
        #[arg(long, conflicts_with = "stage")]
        gate: Option<String>,
        /// The stage whose approval lets the next stage start.
        #[arg(long)]
        stage: Option<String>,
        /// A note recorded in the event.
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Stop dispatching new steps until resumed (steps already sent finish).
    Pause {
        /// The release id.
        id: String,
        /// Why, recorded in the event.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Resume a paused release (a failed service deploys its failed hosts again).
    Resume {
        /// The release id.
        id: String,
        /// Why, recorded in the event.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Deploy a host the paused release failed on again, in every service it failed in
    /// in the current stage; the release goes on (guided failure).
    Retry {
        /// The release id.
        id: String,
        /// The host that failed.
        #[arg(long)]
        host: String,
        /// Why, recorded in the event.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Exclude a host the paused release failed on from the rest of the release: nothing
    /// more of the rollout goes to it, it counts against each of its services'
    /// max_failed, and the release goes on (guided failure).
    Exclude {
        /// The release id.
        id: String,
        /// The host that failed.
        #[arg(long)]
        host: String,
        /// Why, recorded in the event and with the host's exclusion.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Stop the release for good; hosts stay as they are.
    Abort {
        /// The release id.
        id: String,
        /// Why, recorded in the event.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Add a note to the release's history (also after it finished): what you saw,
    /// decided or are looking into. It shows in `release show` and `release watch`.
    Note {
        /// The release id.
        id: String,
        /// The note (up to 1024 bytes); several words are joined with spaces.
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
    },
    /// Roll back the whole release, or one service and what depends on it (also after
    /// it succeeded, within each service's rollback_window).
    Rollback {
        /// The release id.
        id: String,
        /// Roll back only this service and its dependents.
        #[arg(long)]
        service: Option<String>,
        /// Why, recorded in the event.
        #[arg(long, default_value = "")]
        reason: String,
    },
}

/// Runs a `release` command.
pub fn run(conn: &Connection, cmd: &ReleaseCommand, json_out: bool) -> Result<(), Failure> {
    let client = conn.remote()?;
    runtime()?.block_on(async {
        match cmd {
            ReleaseCommand::Start { spec, idempotency_key, watch, changed_at } => {
                let text = std::fs::read_to_string(spec)
                    .map_err(|e| Failure::Usage(anyhow!("cannot read {}: {e}", spec.display())))?;
                let text = match changed_at {
                    Some(at) => with_changed_at(&text, at).map_err(|e| Failure::Usage(anyhow!("--changed-at: {e}")))?,
                    None => text,
                };
                let req = v1::CreateRequest {
                    spec_toml: text,
                    file_name: spec.display().to_string(),
                    // Without a key a retried call could submit twice: make one up.
                    idempotency_key: idempotency_key.clone().unwrap_or_else(fresh_key),
                };
                let resp = call(&client, move |mut c| {
                    let req = req.clone();
                    async move { c.create(req).await }
                })
                .await?;
                if json_out && !*watch {
                    return print(&json::pretty(&resp)?);
                }
                let release = resp.release.unwrap_or_default();
                if !*watch {
                    return print(&if resp.created {
                        format!("release {} submitted as {}\n", release.name, release.id)
                    } else {
                        format!(
                            "release {} was already submitted as {} (same idempotency key)\n",
                            release.name, release.id
                        )
                    });
                }
                if !json_out {
                    print(&format!("release {} submitted as {}\n", release.name, release.id))?;
                }
                watch_release(&client, &release.id, 0, json_out).await
            }
            ReleaseCommand::List => {
                let resp = call(&client, |mut c| async move {
                    c.list(v1::ListRequest { page_size: 1_000, ..Default::default() }).await
                })
                .await?;
                print(&if json_out { json::pretty(&resp)? } else { list_table(&resp.releases) })
            }
            ReleaseCommand::Show { id } => {
                let resp = get_response(&client, id).await?;
                if json_out {
                    return print(&json::pretty(&resp)?);
                }
                print(&show_text(&release_of(resp)?))
            }
            ReleaseCommand::Watch { id, after } => watch_release(&client, id, *after, json_out).await,
            ReleaseCommand::Approve { id, gate, stage, comment } => {
                let target = match (gate, stage) {
                    (Some(g), _) => Some(v1::approve_request::Target::Gate(g.clone())),
                    (None, Some(s)) => Some(v1::approve_request::Target::Stage(s.clone())),
                    (None, None) => None,
                };
                let req = v1::ApproveRequest { release_id: id.clone(), target, comment: comment.clone() };
                let resp = call(&client, move |mut c| {
                    let req = req.clone();
                    async move { c.approve(req).await }
                })
                .await?;
                after_action(&resp, resp.release.as_ref(), "approved", json_out)
            }
            ReleaseCommand::Note { id, text } => {
                let req = v1::AnnotateRequest { release_id: id.clone(), text: text.join(" ") };
                let resp = call(&client, move |mut c| {
                    let req = req.clone();
                    async move { c.annotate(req).await }
                })
                .await?;
                if json_out {
                    return print(&json::pretty(&resp)?);
                }
                print(&format!("note added to release {id}\n"))
            }
            ReleaseCommand::Pause { id, reason } => {
                let req = v1::PauseRequest { release_id: id.clone(), reason: reason.clone() };
                let resp = call(&client, move |mut c| {
                    let req = req.clone();
                    async move { c.pause(req).await }
                })
                .await?;
                after_action(&resp, resp.release.as_ref(), "paused", json_out)
            }
            ReleaseCommand::Resume { id, reason } => {
                let req = v1::ResumeRequest { release_id: id.clone(), reason: reason.clone() };
                let resp = call(&client, move |mut c| {
                    let req = req.clone();
                    async move { c.resume(req).await }
                })
                .await?;
                after_action(&resp, resp.release.as_ref(), "resumed", json_out)
            }
            ReleaseCommand::Retry { id, host, reason } => {
                let req = v1::RetryHostRequest { release_id: id.clone(), host: host.clone(), reason: reason.clone() };
                let resp = call(&client, move |mut c| {
                    let req = req.clone();
                    async move { c.retry_host(req).await }
                })
                .await?;
                host_action(&resp, resp.release.as_ref(), &format!("{host} deploys again"), json_out)
            }
            ReleaseCommand::Exclude { id, host, reason } => {
                let req = v1::ExcludeHostRequest { release_id: id.clone(), host: host.clone(), reason: reason.clone() };
                let resp = call(&client, move |mut c| {
                    let req = req.clone();
                    async move { c.exclude_host(req).await }
                })
                .await?;
                host_action(&resp, resp.release.as_ref(), &format!("{host} is excluded"), json_out)
            }
            ReleaseCommand::Abort { id, reason } => {
                let req = v1::AbortRequest { release_id: id.clone(), reason: reason.clone() };
                let resp = call(&client, move |mut c| {
                    let req = req.clone();
                    async move { c.abort(req).await }
                })
                .await?;
                after_action(&resp, resp.release.as_ref(), "aborted", json_out)
            }
            ReleaseCommand::Rollback { id, service, reason } => {
                let req =
                    v1::RollbackRequest { release_id: id.clone(), service: service.clone(), reason: reason.clone() };
                let resp = call(&client, move |mut c| {
                    let req = req.clone();
                    async move { c.rollback(req).await }
                })
                .await?;
                if json_out {
                    return print(&json::pretty(&resp)?);
                }
                let r = resp.release.unwrap_or_default();
                print(&format!(
                    "release {} is rolling back: {}\n",
                    r.id,
                    if resp.services.is_empty() {
                        "no service had started".to_owned()
                    } else {
                        resp.services.join(", ")
                    }
                ))
            }
        }
    })
}

/// Calls the leader (following hints) with a `Releases` client. While no coordinator
/// can serve it (an election is running), it tries again for up to [`ELECTION_WAIT`];
/// submissions carry an idempotency key, so this is safe.
async fn call<T, F, Fut>(client: &impl Calls, f: F) -> Result<T, Failure>
where
    F: Fn(ReleasesClient<Channel>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let deadline = Instant::now() + ELECTION_WAIT;
    loop {
        let answer = client
            .on_leader(|ch| {
                let fut = f(ReleasesClient::new(ch).max_decoding_message_size(MAX_ANSWER));
                async move { fut.await.map(tonic::Response::into_inner) }
            })
            .await;
        match answer {
            Err(LeaderError::Exhausted { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => return other.map_err(remote_failure),
        }
    }
}

/// How long a command waits for a leader to be elected before giving up.
const ELECTION_WAIT: Duration = Duration::from_secs(10);

/// The largest answer taken from a coordinator: a release carries its whole plan (a
/// 10,000-service release's is several megabytes, over tonic's 4 MiB default).
const MAX_ANSWER: usize = 256 * 1024 * 1024;

fn fresh_key() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("cli-{}-{nanos:x}", std::process::id())
}

async fn get_response(client: &impl Calls, id: &str) -> Result<v1::GetResponse, Failure> {
    let req = v1::GetRequest { release_id: id.to_owned() };
    call(client, move |mut c| {
        let req = req.clone();
        async move { c.get(req).await }
    })
    .await
}

fn release_of(resp: v1::GetResponse) -> Result<v1::Release, Failure> {
    resp.release.ok_or_else(|| Failure::Operational(anyhow!("the coordinator answered without a release")))
}

async fn get(client: &impl Calls, id: &str) -> Result<v1::Release, Failure> {
    release_of(get_response(client, id).await?)
}

/// Prints what an operator action answered: the response message itself as JSON, or
/// a line saying what the release does now.
fn after_action<T: Serialize>(
    resp: &T,
    release: Option<&v1::Release>,
    verb: &str,
    json_out: bool,
) -> Result<(), Failure> {
    answer_line(resp, release, json_out, |id| format!("release {id} {verb}"))
}

/// Prints the answer of a guided-failure action on a host: `release ID: WHAT; now STATE`.
fn host_action<T: Serialize>(
    resp: &T,
    release: Option<&v1::Release>,
    what: &str,
    json_out: bool,
) -> Result<(), Failure> {
    answer_line(resp, release, json_out, |id| format!("release {id}: {what}"))
}

/// The response as JSON, or `HEAD; now STATE[: reason]` with the head made from the
/// release's id.
fn answer_line<T: Serialize>(
    resp: &T,
    release: Option<&v1::Release>,
    json_out: bool,
    head: impl FnOnce(&str) -> String,
) -> Result<(), Failure> {
    if json_out {
        return print(&json::pretty(resp)?);
    }
    let r = release.cloned().unwrap_or_default();
    print(&format!("{}; now {}{}\n", head(&r.id), state_name(r.state), reason_suffix(&r.reason)))
}

/// `spec` with `changed_at = AT` as its first line: `at` must be an RFC 3339 time with
/// its offset, and the spec must not set `changed_at` itself.
fn with_changed_at(spec: &str, at: &str) -> anyhow::Result<String> {
    let parsed: toml::value::Datetime = at.parse().map_err(|e| anyhow!("{at:?} is not a date and time: {e}"))?;
    if parsed.date.is_none() || parsed.time.is_none() || parsed.offset.is_none() {
        bail!("{at:?} is not a point in time: give a date, a time and an offset, like 2026-12-01T09:30:00Z");
    }
    if let Ok(table) = spec.parse::<toml::Table>()
        && table.contains_key("changed_at")
    {
        bail!("the spec already sets changed_at; remove one of them");
    }
    Ok(format!("changed_at = {parsed}\n{spec}"))
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() { String::new() } else { format!(": {reason}") }
}

/// `running`, `rolled back`, ...
pub fn state_name(state: i32) -> &'static str {
    match ReleaseState::try_from(state).unwrap_or(ReleaseState::Unspecified) {
        ReleaseState::Unspecified => "unknown",
        ReleaseState::Pending => "pending",
        ReleaseState::Running => "running",
        ReleaseState::AwaitingApproval => "awaiting approval",
        ReleaseState::Paused => "paused",
        ReleaseState::RollingBack => "rolling back",
        ReleaseState::Succeeded => "succeeded",
        ReleaseState::RolledBack => "rolled back",
        ReleaseState::Failed => "failed",
        ReleaseState::Aborted => "aborted",
    }
}

fn service_state_name(state: i32) -> &'static str {
    use v1::ServiceState as S;
    match S::try_from(state).unwrap_or(S::Unspecified) {
        S::Unspecified => "unknown",
        S::Waiting => "waiting",
        S::Migrating => "migrating",
        S::Deploying => "deploying",
        S::Baking => "baking",
        S::Done => "done",
        S::Failed => "failed",
        S::RollingBack => "rolling back",
        S::RolledBack => "rolled back",
        S::Cancelled => "cancelled",
        S::Skipped => "skipped",
    }
}

fn terminal(state: i32) -> bool {
    matches!(
        ReleaseState::try_from(state),
        Ok(ReleaseState::Succeeded | ReleaseState::RolledBack | ReleaseState::Failed | ReleaseState::Aborted)
    )
}

fn list_table(releases: &[v1::ReleaseSummary]) -> String {
    if releases.is_empty() {
        return "no releases\n".to_owned();
    }
    let mut out = format!("{:<28} {:<24} {:<18} {:<12} {}\n", "ID", "NAME", "STATE", "STAGE", "SERVICES");
    for r in releases {
        out.push_str(&format!(
            "{:<28} {:<24} {:<18} {:<12} {}/{}\n",
            r.id,
            r.name,
            state_name(r.state),
            r.stage,
            r.services_done,
            r.services_total
        ));
        if r.compacted {
            out.pop();
            out.push_str(" (compacted)\n");
        }
    }
    out
}

fn show_text(r: &v1::Release) -> String {
    let mut out = format!("{}  {}  {}{}\n", r.id, r.name, state_name(r.state), reason_suffix(&r.reason));
    out.push_str(&format!("  spec: {}", r.file_name));
    if !r.created_by.is_empty() {
        out.push_str(&format!(", submitted by {}", r.created_by));
    }
    out.push('\n');
    if r.compacted {
        out.push_str(&format!(
            "  compacted: the cluster keeps only this summary ({} events, finished {})\n",
            r.last_event_index,
            format_unix(r.finished_unix_ms / 1_000)
        ));
    }
    for a in &r.approvals {
        let stage = if a.kind == v1::ApprovalKind::Gate as i32 && !a.stage.is_empty() {
            format!(" in stage {}", a.stage)
        } else {
            String::new()
        };
        out.push_str(&format!(
            "  approved {} {}{stage} by {} at {}\n",
            approval_kind(a.kind),
            a.name,
            if a.approved_by.is_empty() { "someone unknown" } else { &a.approved_by },
            format_unix(a.approved_unix_ms / 1_000)
        ));
    }
    for a in &r.pending_approvals {
        let from = if a.approvers.is_empty() { String::new() } else { format!(", from {}", a.approvers) };
        out.push_str(&format!(
            "  waits for approval of {} {}{from} (flotilla release approve {})\n",
            approval_kind(a.kind),
            a.name,
            r.id
        ));
    }
    for s in &r.stages {
        let st =
            format!("{:?}", v1::StageState::try_from(s.state).unwrap_or(v1::StageState::Unspecified)).to_lowercase();
        out.push_str(&format!("  stage {} ({st})\n", s.name));
        for x in &s.services {
            out.push_str(&format!(
                "    {:<20} {:<10} {:<13} hosts {}/{} done, {} failed, {} skipped{}\n",
                x.service,
                x.target_version,
                service_state_name(x.state),
                x.hosts_done,
                x.hosts_total,
                x.hosts_failed,
                x.hosts_skipped,
                reason_suffix(&x.reason)
            ));
            let paused = r.state == ReleaseState::Paused as i32;
            for f in &x.failed_hosts {
                let hint = if paused {
                    format!(" (flotilla release retry|exclude {} --host {})", r.id, f.host)
                } else {
                    String::new()
                };
                out.push_str(&format!("      failed on {}: {}{hint}\n", f.host, f.reason));
            }
            if !x.excluded_hosts.is_empty() {
                out.push_str(&format!("      excluded: {}\n", x.excluded_hosts.join(", ")));
            }
        }
        for g in &s.gates {
            let gs =
                format!("{:?}", v1::GateState::try_from(g.state).unwrap_or(v1::GateState::Unspecified)).to_lowercase();
            out.push_str(&format!("    gate {:<15} {gs}{}\n", g.gate, reason_suffix(&g.reason)));
        }
    }
    for a in &r.analyses {
        out.push_str(&analysis_text(a));
    }
    for n in &r.notifications {
        out.push_str(&format!("  hook {}: delivered up to event {}, {} pending", n.hook, n.delivered_up_to, n.pending));
        if !n.last_error.is_empty() {
            out.push_str(&format!(
                "; failing ({} {}, last at {}): {}",
                n.failed_attempts,
                if n.failed_attempts == 1 { "attempt" } else { "attempts" },
                clock(n.last_error_unix_ms),
                n.last_error
            ));
        }
        out.push('\n');
    }
    out
}

/// A batch's canary analysis: where it stands or its verdict, then each metric's result.
fn analysis_text(a: &v1::CanaryAnalysis) -> String {
    let sides = format!(
        "{} canary vs {} baseline {}",
        a.canary_hosts.len(),
        a.baseline_hosts.len(),
        if a.baseline_hosts.len() == 1 { "host" } else { "hosts" }
    );
    let mut out = format!("  analysis of {} {} in stage {} ({sides}): ", a.service, a.batch, a.stage);
    match v1::AnalysisVerdict::try_from(a.verdict).unwrap_or(v1::AnalysisVerdict::Unspecified) {
        v1::AnalysisVerdict::Unspecified => out.push_str(&format!(
            "sampling {}, {} {} taken ({} complete)\n",
            a.metrics.join(", "),
            a.rounds,
            if a.rounds == 1 { "round" } else { "rounds" },
            a.complete_rounds
        )),
        _ => {
            out.push_str(&a.reason);
            if !a.accepted_by.is_empty() {
                out.push_str(&format!(" (resumed past by {})", a.accepted_by));
            }
            out.push('\n');
        }
    }
    for m in &a.results {
        out.push_str(&format!("    {}\n", m.explanation));
    }
    out
}

fn approval_kind(kind: i32) -> &'static str {
    if kind == v1::ApprovalKind::Gate as i32 { "gate" } else { "stage" }
}

fn clock(at_unix_ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(at_unix_ms).unwrap_or(0));
    let text = humantime::format_rfc3339_seconds(t).to_string();
    text.get(11..19).unwrap_or(&text).to_owned()
}

/// Live progress: one bar per service of the current stage.
struct Progress {
    multi: MultiProgress,
    bars: BTreeMap<String, ProgressBar>,
    stage: String,
    tty: bool,
}

impl Progress {
    fn new() -> Self {
        let tty = std::io::stderr().is_terminal();
        let target = if tty { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        Self { multi: MultiProgress::with_draw_target(target), bars: BTreeMap::new(), stage: String::new(), tty }
    }

    fn line(&self, text: &str) {
        if self.tty {
            let _ = self.multi.println(text);
        } else {
            #[allow(clippy::print_stdout)]
            {
                println!("{text}");
            }
        }
    }

    fn update(&mut self, r: &v1::Release) {
        if !self.tty {
            return;
        }
        let current = r.stages.iter().rev().find(|s| !s.services.is_empty());
        let Some(stage) = current else { return };
        if stage.name != self.stage {
            for bar in std::mem::take(&mut self.bars).into_values() {
                bar.finish_and_clear();
            }
            self.stage = stage.name.clone();
        }
        let style = ProgressStyle::with_template("  {prefix:<20} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        for s in &stage.services {
            let bar = self.bars.entry(s.service.clone()).or_insert_with(|| {
                let b = self.multi.add(ProgressBar::new(u64::from(s.hosts_total)));
                b.set_style(style.clone());
                b.set_prefix(s.service.clone());
                b
            });
            bar.set_length(u64::from(s.hosts_total.max(1)));
            bar.set_position(u64::from(s.hosts_done + s.hosts_skipped));
            let mut msg = format!("{} {}", s.target_version, service_state_name(s.state));
            if s.batches_total > 0 && matches!(service_state_name(s.state), "deploying" | "baking") {
                msg.push_str(&format!(" (batch {}/{})", s.batch + 1, s.batches_total));
            }
            if s.hosts_failed > 0 {
                msg.push_str(&format!(", {} failed", s.hosts_failed));
            }
            bar.set_message(msg);
        }
    }

    fn finish(&mut self) {
        for bar in std::mem::take(&mut self.bars).into_values() {
            bar.finish();
        }
    }
}

/// Follows a release until it ends: events as lines (or JSON lines), bars on a
/// terminal. Exit 0 when it succeeded, 3 otherwise.
pub(crate) async fn watch_release(client: &impl Calls, id: &str, after: u64, json_out: bool) -> Result<(), Failure> {
    let mut progress = Progress::new();
    let mut last = after;
    let mut quiet_since = Instant::now();
    loop {
        let req = v1::WatchRequest { release_id: id.to_owned(), after_index: last };
        let stream = client
            .on_leader(|ch| {
                let req = req.clone();
                async move { ReleasesClient::new(ch).watch(req).await.map(tonic::Response::into_inner) }
            })
            .await;
        let mut stream = match stream {
            Ok(s) => s,
            Err(LeaderError::Status(s)) if s.code() == tonic::Code::NotFound => {
                return Err(Failure::Operational(anyhow!("{}", s.message())));
            }
            Err(e) if quiet_since.elapsed() > RECONNECT_FOR => return Err(remote_failure(e)),
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
        };
        let mut ended = false;
        loop {
            match stream.message().await {
                Ok(Some(e)) => {
                    quiet_since = Instant::now();
                    last = e.index;
                    if json_out {
                        print(&json::line(&e)?)?;
                    } else {
                        let stage = if e.stage.is_empty() { String::new() } else { format!("[{}] ", e.stage) };
                        progress.line(&format!("{}  {stage}{}", clock(e.at_unix_ms), e.message));
                    }
                    if terminal(e.release_state) {
                        ended = true;
                    }
                    if progress.tty
                        && let Ok(r) = get(client, id).await
                    {
                        progress.update(&r);
                    }
                }
                // The server ends the stream when the release has ended.
                Ok(None) => break,
                // A coordinator went away (a stopping one says where the leader is):
                // resume from the last event there, or on another coordinator.
                Err(status) => {
                    client.note_status(&status);
                    break;
                }
            }
        }
        if ended {
            break;
        }
        if quiet_since.elapsed() > RECONNECT_FOR {
            return Err(Failure::Operational(anyhow!("lost the event stream of {id} and could not resume it")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    progress.finish();
    let r = get(client, id).await?;
    if !json_out {
        print(&format!("release {} ended: {}\n", r.id, state_name(r.state)))?;
    }
    if r.state == ReleaseState::Succeeded as i32 {
        Ok(())
    } else {
        Err(Failure::NotSucceeded(anyhow!("release {} {}", r.id, state_name(r.state))))
    }
}

/// How long `watch` keeps trying to resume a dropped stream without hearing anything.
const RECONNECT_FOR: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {

    #[test]
    fn changed_at_goes_first_in_the_spec_and_only_as_a_point_in_time() {
        let spec = "release = \"shop\"\n";
        assert_eq!(
            with_changed_at(spec, "2026-12-01T09:30:00Z").unwrap(),
            "changed_at = 2026-12-01T09:30:00Z\nrelease = \"shop\"\n"
        );
        assert!(with_changed_at(spec, "2026-12-01").unwrap_err().to_string().contains("not a point in time"));
        assert!(with_changed_at(spec, "yesterday").unwrap_err().to_string().contains("not a date and time"));
        let already = "changed_at = 2026-12-01T09:30:00Z\nrelease = \"shop\"\n";
        assert!(with_changed_at(already, "2026-12-02T09:30:00Z").unwrap_err().to_string().contains("already sets"));
    }

    use super::*;

    #[test]
    fn show_names_who_approved_what_and_who_may_approve_what_waits() {
        let r = v1::Release {
            id: "r-0001".into(),
            name: "shop".into(),
            state: ReleaseState::AwaitingApproval as i32,
            file_name: "shop.toml".into(),
            created_by: "operator alice".into(),
            approvals: vec![
                v1::GivenApproval {
                    kind: v1::ApprovalKind::Gate as i32,
                    name: "smoke".into(),
                    stage: "canary".into(),
                    approved_by: "token ci-bot".into(),
                    approved_unix_ms: 1_790_000_000_000,
                },
                v1::GivenApproval {
                    kind: v1::ApprovalKind::Stage as i32,
                    name: "canary".into(),
                    stage: "canary".into(),
                    approved_by: "operator bob".into(),
                    approved_unix_ms: 1_790_000_060_000,
                },
            ],
            pending_approvals: vec![
                v1::PendingApproval {
                    kind: v1::ApprovalKind::Stage as i32,
                    name: "eu".into(),
                    stage: "eu".into(),
                    approvers: "someone other than the release's author".into(),
                    ..Default::default()
                },
                v1::PendingApproval { kind: v1::ApprovalKind::Gate as i32, name: "db".into(), ..Default::default() },
            ],
            ..Default::default()
        };
        let text = show_text(&r);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "  spec: shop.toml, submitted by operator alice");
        assert_eq!(lines[2], "  approved gate smoke in stage canary by token ci-bot at 2026-09-21T14:13:20Z");
        assert_eq!(lines[3], "  approved stage canary by operator bob at 2026-09-21T14:14:20Z");
        assert_eq!(
            lines[4],
            "  waits for approval of stage eu, from someone other than the release's author (flotilla release approve r-0001)"
        );
        assert_eq!(lines[5], "  waits for approval of gate db (flotilla release approve r-0001)");
    }

    #[test]
    fn show_lists_each_analysis_with_its_verdict_and_every_metric_explained() {
        let judged = v1::CanaryAnalysis {
            stage: "main".into(),
            service: "payments".into(),
            batch: "canary".into(),
            canary_hosts: vec!["h1".into()],
            baseline_hosts: vec!["h2".into(), "h3".into()],
            verdict: v1::AnalysisVerdict::Fail as i32,
            reason: "failed analysis: score 0 (pass 95, marginal 75); critical metric error_ratio failed".into(),
            results: vec![v1::MetricResult {
                explanation: "error_ratio canary 0.05 vs baseline 0 (U=25, p=0.004): higher, failed (critical)".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let sampling = v1::CanaryAnalysis {
            stage: "main".into(),
            service: "web".into(),
            batch: "50%".into(),
            canary_hosts: vec!["h4".into(), "h5".into()],
            baseline_hosts: vec!["h6".into()],
            metrics: vec!["error_ratio".into(), "p99".into()],
            rounds: 3,
            complete_rounds: 2,
            ..Default::default()
        };
        let accepted = v1::CanaryAnalysis {
            verdict: v1::AnalysisVerdict::Inconclusive as i32,
            reason: "inconclusive analysis".into(),
            accepted_by: "operator alice".into(),
            ..sampling.clone()
        };
        let r = v1::Release { id: "r-1".into(), analyses: vec![judged, sampling, accepted], ..Default::default() };
        let text = show_text(&r);
        let lines: Vec<&str> = text.lines().skip(2).collect();
        assert_eq!(
            lines,
            [
                "  analysis of payments canary in stage main (1 canary vs 2 baseline hosts): failed analysis: score 0 (pass 95, marginal 75); critical metric error_ratio failed",
                "    error_ratio canary 0.05 vs baseline 0 (U=25, p=0.004): higher, failed (critical)",
                "  analysis of web 50% in stage main (2 canary vs 1 baseline host): sampling error_ratio, p99, 3 rounds taken (2 complete)",
                "  analysis of web 50% in stage main (2 canary vs 1 baseline host): inconclusive analysis (resumed past by operator alice)",
            ]
        );
    }
}
