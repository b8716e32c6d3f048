//! A local Prometheus server scraping the sample services, for the demo and the tests:
//! Debian's (or any) `prometheus` binary started on a loopback port with a generated
//! config that scrapes, once a second, every copy announced in a file-discovery
//! directory (the server's `--prometheus-sd DIR`). Stopped when dropped.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether a `prometheus` binary is on the PATH.
pub fn available() -> bool {
    Command::new("prometheus")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The config: scrape every target announced in `sd_dir` once a second, keeping the
/// labels the sample service sets (`service`, `version`, `host`).
pub fn config(sd_dir: &Path) -> String {
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: sample\n    honor_labels: true\n    file_sd_configs:\n      \
         - files: ['{}/*.json']\n        refresh_interval: 1s\n",
        sd_dir.display()
    )
}

/// A running Prometheus.
#[derive(Debug)]
pub struct LocalPrometheus {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl LocalPrometheus {
    /// Starts Prometheus on `127.0.0.1:port` with its config, data and log under `dir`,
    /// scraping what the sample services announce in `dir/targets`, and waits (up to
    /// `within`) until it answers ready.
    pub fn start(dir: &Path, port: u16, within: Duration) -> std::io::Result<Self> {
        let sd_dir = dir.join("targets");
        std::fs::create_dir_all(&sd_dir)?;
        std::fs::write(dir.join("prometheus.yml"), config(&sd_dir))?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("prometheus.log"))?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=1h")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut p = Self { dir: dir.to_owned(), port, child: Some(child) };
        p.wait_ready(within)?;
        Ok(p)
    }

    fn wait_ready(&mut self, within: Duration) -> std::io::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if self.ready() {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(std::io::Error::other(format!("prometheus exited ({status}):\n{}", self.log())));
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "prometheus was not ready within {within:?}:\n{}",
                    self.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether `/-/ready` answers 200.
    fn ready(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let request = format!("GET /-/ready HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n", self.port);
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
    }

    /// Its base URL, for a coordinator's `prometheus_url`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The directory the sample services announce their targets in (their
    /// `--prometheus-sd`).
    pub fn sd_dir(&self) -> PathBuf {
        self.dir.join("targets")
    }

    /// Its log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// Stops it (SIGKILL): queries fail from now on.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for LocalPrometheus {
    fn drop(&mut self) {
        self.stop();
    }
}
