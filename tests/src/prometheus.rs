//! A real Prometheus server for tests (Debian's `prometheus` package), scraping the
//! sample services that announce themselves in its discovery directory
//! ([`flotilla_sample_service::prometheus::LocalPrometheus`]), and the rule for tests
//! that need one.

use std::path::Path;
use std::time::Duration;

use flotilla_sample_service::prometheus::{self, LocalPrometheus};

use crate::free_port;

/// Whether a `prometheus` binary is on the PATH. Without one, Prometheus tests pass with
/// a note, unless `FLOTILLA_REQUIRE_PROMETHEUS=1` (as CI sets), which makes it a failure.
#[allow(clippy::print_stderr, reason = "a skipped test must say so where the test runner shows it")]
pub fn prometheus_or_skip() -> bool {
    let found = prometheus::available();
    if !found {
        assert!(
            std::env::var("FLOTILLA_REQUIRE_PROMETHEUS").as_deref() != Ok("1"),
            "FLOTILLA_REQUIRE_PROMETHEUS=1 but no `prometheus` is on the PATH (Debian: apt-get install prometheus)"
        );
        eprintln!("no prometheus on the PATH: skipping a canary analysis test");
    }
    found
}

/// Starts Prometheus under `dir` on a free loopback port (see [`LocalPrometheus::start`]).
pub async fn start(dir: &Path) -> anyhow::Result<LocalPrometheus> {
    let dir = dir.to_owned();
    let p = tokio::task::spawn_blocking(move || LocalPrometheus::start(&dir, free_port(), Duration::from_secs(30)))
        .await??;
    Ok(p)
}
