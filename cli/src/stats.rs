//! `flotilla stats`: delivery figures (DORA's four keys) from the cluster's release
//! history, overall and per service, as a table or (`--output json`) the
//! `StatsResponse` the leader answered.

use std::time::Duration;

use flotilla_proto::v1;
use flotilla_proto::v1::releases_client::ReleasesClient;

use crate::remote::{Calls as _, Channel, Connection, print, remote_failure, runtime};
use crate::{Failure, TextOrJson, json};

/// `flotilla stats`
#[derive(Debug, Clone, clap::Args)]
pub struct StatsArgs {
    /// The period: releases that ended in the last DURATION (`30d`, `12w`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "30d")]
    since: Duration,
    /// Only this service.
    #[arg(long, value_name = "SERVICE")]
    service: Option<String>,
    /// How to print the result.
    #[arg(long, short, value_enum, default_value_t = TextOrJson::Table)]
    output: TextOrJson,
}

/// Runs `stats`.
pub fn run(conn: &Connection, args: &StatsArgs) -> Result<(), Failure> {
    let since_ms = i64::try_from(args.since.as_millis()).unwrap_or(i64::MAX).max(1);
    let req = v1::StatsRequest { since_ms, service: args.service.clone().unwrap_or_default() };
    let remote = conn.remote()?;
    let resp = runtime()?.block_on(async {
        remote
            .on_leader(|ch| {
                let req = req.clone();
                async move { ReleasesClient::<Channel>::new(ch).stats(req).await.map(tonic::Response::into_inner) }
            })
            .await
            .map_err(remote_failure)
    })?;
    match args.output {
        TextOrJson::Json => print(&json::pretty(&resp)?),
        TextOrJson::Table => print(&table(&resp, &humantime::format_duration(args.since).to_string())),
    }
}

/// The figures as a table: one line for all services, then one per service.
fn table(resp: &v1::StatsResponse, period: &str) -> String {
    let mut out = format!(
        "delivery over the last {period}\n{:<20} {:>7} {:>7} {:>9} {:>12} {:>9} {:>12}  lead time from\n",
        "SERVICE", "CHANGES", "FAILED", "DEPLOYS/D", "LEAD TIME", "FAILURES", "RESTORE"
    );
    let all = resp.overall.clone().unwrap_or_default();
    for f in std::iter::once(&all).chain(&resp.services) {
        let name = if f.service.is_empty() { "(all)" } else { f.service.as_str() };
        let restore = match (f.time_to_restore_median_ms, f.unrestored) {
            (Some(ms), 0) => duration(ms),
            (Some(ms), n) => format!("{} +{n} open", duration(ms)),
            (None, 0) => "-".to_owned(),
            (None, n) => format!("{n} open"),
        };
        out.push_str(&format!(
            "{name:<20} {:>7} {:>7} {:>9.2} {:>12} {:>9} {:>14}  {}\n",
            f.changes,
            f.failed,
            f.deployments_per_day,
            f.lead_time_median_ms.map_or_else(|| "-".to_owned(), duration),
            f.change_failure_rate.map_or_else(|| "-".to_owned(), |r| format!("{:.0}%", r * 100.0)),
            restore,
            basis(f),
        ));
    }
    if resp.services.is_empty() {
        out.push_str("no release ended in the period\n");
    }
    out
}

/// Where the lead times started: the change's time, the release's creation, or both.
fn basis(f: &v1::DeliveryFigures) -> String {
    match (f.lead_times_from_change, f.lead_times_from_creation) {
        (0, 0) => String::new(),
        (_, 0) => "change".to_owned(),
        (0, _) => "creation (no changed_at)".to_owned(),
        (c, r) => format!("change ({c}), creation ({r})"),
    }
}

/// A median in ms as `2h 5m`, to the second.
fn duration(ms: i64) -> String {
    let secs = u64::try_from(ms).unwrap_or(0) / 1_000;
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_says_each_figure_and_where_lead_times_started() {
        let figures = |service: &str, lead: Option<i64>, restore: Option<i64>, unrestored| v1::DeliveryFigures {
            service: service.to_owned(),
            changes: 4,
            failed: 1,
            deployments_per_day: 0.1,
            lead_time_median_ms: lead,
            lead_times_from_change: 1,
            lead_times_from_creation: 2,
            change_failure_rate: Some(0.25),
            time_to_restore_median_ms: restore,
            restores: u32::from(restore.is_some()),
            unrestored,
        };
        let resp = v1::StatsResponse {
            from_unix_ms: 0,
            to_unix_ms: 1,
            overall: Some(figures("", Some(7_500_000), Some(86_400_000), 1)),
            services: vec![figures("api", Some(90_000), None, 1)],
        };
        let text = table(&resp, "30days");
        assert!(text.starts_with("delivery over the last 30days\n"), "{text}");
        let line = |name: &str| text.lines().find(|l| l.starts_with(name)).unwrap_or_default().to_owned();
        let words = |l: String| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>().join(" ");
        assert!(words(line("(all)")).starts_with("(all) 4 1 0.10 2h 5m 25% 1day +1 open change (1)"), "{text}");
        assert!(words(line("api")).starts_with("api 4 1 0.10 1m 30s 25% 1 open"), "{text}");
        assert!(text.contains("change (1), creation (2)"), "{text}");
        let empty = v1::StatsResponse::default();
        assert!(table(&empty, "7days").contains("no release ended in the period"));
    }
}
