//! The compose deployment (`deploy/compose`) driven from a test: one `docker-compose`
//! project per test with its own work directory (certificates, join tokens, specs), the
//! CLI container, and the faults a chaos round injects into its containers — kill and
//! start, `docker pause`, and network partitions made with iptables inside a
//! container's network namespace (`nsenter`), so a coordinator can be cut off from the
//! other coordinators while the agents still reach it.
//!
//! Every call is bounded in time (coreutils' `timeout`); the project is taken down with
//! its volumes when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};

/// Longest the cluster may take to form and see every agent.
pub const FORM: Duration = Duration::from_secs(180);

/// Longest any single docker or docker-compose call may take.
pub const CALL: Duration = Duration::from_secs(120);

/// The compose file's agent hosts.
pub const AGENTS: [&str; 4] = ["agent-1", "agent-2", "agent-3", "agent-4"];

/// The compose file's coordinators, by node id (1, 2, 3).
pub const COORDINATORS: [&str; 3] = ["coordinator-1", "coordinator-2", "coordinator-3"];

/// The workspace root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_owned()
}

/// A process's stdout and stderr together.
pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Whether a Docker engine answers. Without one, container tests pass with a note,
/// unless `FLOTILLA_REQUIRE_DOCKER=1` (as CI sets), which makes it a failure.
#[allow(clippy::print_stderr, reason = "a skipped test must say so where the test runner shows it")]
pub fn docker_or_skip() -> bool {
    let up = Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !up {
        assert!(
            std::env::var("FLOTILLA_REQUIRE_DOCKER").as_deref() != Ok("1"),
            "FLOTILLA_REQUIRE_DOCKER=1 but no Docker engine answers `docker info`"
        );
        eprintln!("no Docker engine: skipping a container test");
    }
    up
}

/// Builds the images (`deploy/images/build`); panics with its output when it fails.
pub fn build_images() {
    let built =
        crate::workspace_script(&repo().join("deploy/images/build")).output().expect("deploy/images/build runs");
    assert!(built.status.success(), "deploy/images/build: {}", text(&built));
}

/// Runs `program ARGS` ended after `within`; its output.
fn bounded(program: &str, args: &[&str], within: Duration) -> Output {
    Command::new("timeout")
        .arg("--kill-after=10")
        .arg(within.as_secs().max(1).to_string())
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program} {}: {e}", args.join(" ")))
}

/// One compose project, taken down (with its volumes) when dropped.
#[derive(Debug)]
pub struct Project {
    /// The project name (`docker-compose --project-name`).
    pub name: String,
    /// Its work directory: certificates, join tokens and specs (`/work` in the CLI
    /// container).
    pub work: tempfile::TempDir,
}

impl Project {
    /// A new project named `PREFIX-PID` with a fresh work directory; nothing runs yet.
    pub fn new(prefix: &str) -> Self {
        Self {
            name: format!("{prefix}-{}", std::process::id()),
            work: tempfile::Builder::new().prefix("flotilla-compose-").tempdir().expect("a temp dir"),
        }
    }

    /// `deploy/compose/setup` for this project: certificates, specs, the coordinators
    /// started and a join token per agent host.
    pub fn setup(&self) {
        let out = Command::new("timeout")
            .arg("--kill-after=10")
            .arg(FORM.as_secs().to_string())
            .arg(repo().join("deploy/compose/setup"))
            .env("FLOTILLA_COMPOSE_WORK", self.work.path())
            .env("COMPOSE_PROJECT_NAME", &self.name)
            .stdin(Stdio::null())
            .output()
            .expect("deploy/compose/setup runs");
        assert!(out.status.success(), "deploy/compose/setup: {}\n{}", text(&out), self.logs());
    }

    /// The setup, `up` of every container, and a wait until the cluster has a leader
    /// and every agent is online.
    pub fn start(&self) {
        self.setup();
        let up = self.run(&["up", "--detach", "--no-build"]);
        assert!(up.status.success(), "docker-compose up: {}", text(&up));
        self.wait_cluster(FORM);
        self.wait_json(&["agents", "--output", "json"], FORM, "four agents online", all_online);
    }

    /// `docker-compose` for this project, ended by coreutils' `timeout` after `within`.
    pub fn compose_within(&self, within: Duration) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.arg("--kill-after=10").arg(within.as_secs().to_string()).arg("docker-compose");
        cmd.arg("--project-name")
            .arg(&self.name)
            .arg("--file")
            .arg(repo().join("deploy/compose/docker-compose.yml"))
            .env("FLOTILLA_COMPOSE_WORK", self.work.path())
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `docker-compose ARGS` (at most [`CALL`]); its output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.compose_within(CALL).args(args).output().expect("docker-compose runs")
    }

    /// Runs the CLI container: `flotilla ARGS` (at most [`CALL`]).
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_within(args, CALL)
    }

    /// Runs the CLI container: `flotilla ARGS`, ended after `within`.
    pub fn cli_within(&self, args: &[&str], within: Duration) -> Output {
        self.compose_within(within).args(["run", "--rm", "-T", "cli"]).args(args).output().expect("docker-compose runs")
    }

    /// Runs the CLI and fails the test unless it exits 0; its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(out.status.success(), "flotilla {}: {}\n{}", args.join(" "), text(&out), self.logs());
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs the CLI with `--output json` appended; its parsed output, or why not.
    pub fn cli_json(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.cli(&all);
        if !out.status.success() {
            bail!("flotilla {}: {}", args.join(" "), text(&out));
        }
        serde_json::from_slice(&out.stdout).with_context(|| format!("flotilla {}: {}", args.join(" "), text(&out)))
    }

    /// The logs of one service's containers.
    pub fn log_of(&self, service: &str) -> String {
        String::from_utf8_lossy(&self.run(&["logs", "--no-color", service]).stdout).into_owned()
    }

    /// The last lines of every container's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for service in COORDINATORS.iter().chain(AGENTS.iter()) {
            let log = self.log_of(service);
            let lines: Vec<&str> = log.lines().collect();
            out.push_str(&format!("--- {service}:\n{}\n", lines[lines.len().saturating_sub(30)..].join("\n")));
        }
        out
    }

    /// Writes every container's whole log to `dir/SERVICE.log`.
    pub fn save_logs(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        for service in COORDINATORS.iter().chain(AGENTS.iter()) {
            std::fs::write(dir.join(format!("{service}.log")), self.log_of(service))?;
        }
        Ok(())
    }

    /// Polls the CLI with `args` until `done` accepts its JSON output.
    pub fn wait_json(&self, args: &[&str], within: Duration, what: &str, done: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            let out = self.cli(args);
            let last = text(&out);
            if out.status.success()
                && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout)
                && done(&v)
            {
                return;
            }
            assert!(Instant::now() < deadline, "{what} within {within:?}; last answer:\n{last}\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Waits until the coordinators agree on a leader that sees all three members.
    pub fn wait_cluster(&self, within: Duration) {
        self.wait_json(&["cluster", "status", "--output", "json"], within, "a leader with three members", |v| {
            // A `StatusResponse` in the canonical JSON mapping: uint64 as strings.
            let members = v["status"]["members"].as_array().map_or(0, Vec::len);
            v["status"]["leaderId"].as_str().is_some_and(|id| id != "0") && members == 3
        });
    }

    /// The leader's node id and term, as the cluster reports it now.
    pub fn leader(&self) -> anyhow::Result<(u64, u64)> {
        let v = self.cli_json(&["cluster", "status"])?;
        let num = |f: &str| v["status"][f].as_str().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        match (num("leaderId"), num("term")) {
            (0, _) => bail!("no leader: {v}"),
            (id, term) => Ok((id, term)),
        }
    }

    /// The container id of `service` (empty when it has none).
    pub fn container(&self, service: &str) -> String {
        String::from_utf8_lossy(&self.run(&["ps", "--quiet", service]).stdout).trim().to_owned()
    }

    fn docker(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = bounded("docker", args, CALL);
        if !out.status.success() {
            bail!("docker {}: {}", args.join(" "), text(&out));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// The address of `service` on the project's network.
    pub fn ip(&self, service: &str) -> anyhow::Result<String> {
        let id = self.container(service);
        let ip =
            self.docker(&["inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", &id])?;
        ip.split_whitespace().next().map(str::to_owned).ok_or_else(|| anyhow!("{service} has no address"))
    }

    /// `docker ACTION` of `service`'s container: `kill` (SIGKILL), `start`, `pause`,
    /// `unpause`, `stop`.
    pub fn container_action(&self, action: &str, service: &str) -> anyhow::Result<()> {
        let id = self.container(service);
        if id.is_empty() {
            bail!("{service} has no container");
        }
        self.docker(&[action, &id]).map(drop)
    }

    /// `docker ACTION ID` for a container whose id is known already (no lookup).
    pub fn action_on(&self, action: &str, id: &str) -> anyhow::Result<()> {
        self.docker(&[action, id]).map(drop)
    }

    /// The container ids of `services` (a service without a container is left out).
    pub fn containers(&self, services: &[&'static str]) -> Vec<(&'static str, String)> {
        services.iter().map(|s| (*s, self.container(s))).filter(|(_, id)| !id.is_empty()).collect()
    }

    /// Which of `containers` (service, id) have file `path`, asked of all of them at
    /// once (one `docker exec` each, in parallel; a container that cannot say has not).
    pub fn having_file(containers: &[(&'static str, String)], path: &str) -> Vec<&'static str> {
        let asks: Vec<_> = containers
            .iter()
            .filter_map(|(service, id)| {
                let child = Command::new("timeout")
                    .args(["5", "docker", "exec", id, "test", "-e", path])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .ok()?;
                Some((*service, child))
            })
            .collect();
        asks.into_iter()
            .filter_map(|(service, mut child)| child.wait().ok().filter(|s| s.success()).map(|_| service))
            .collect()
    }

    /// Empties directory `dir` on the volume of `service`'s stopped container (a lost
    /// disk), from a throwaway container of the coordinator image.
    pub fn wipe_volume(&self, service: &str, dir: &str) -> anyhow::Result<()> {
        let id = self.container(service);
        if id.is_empty() {
            bail!("{service} has no container");
        }
        let script = format!("rm -rf {dir}/* {dir}/.[!.]* && ls -A {dir}");
        let left = self.docker(&[
            "run",
            "--rm",
            "--volumes-from",
            &id,
            "--entrypoint",
            "/bin/sh",
            "flotilla-coordinator:latest",
            "-c",
            &script,
        ])?;
        if !left.is_empty() {
            bail!("{dir} of {service} still holds {left}");
        }
        Ok(())
    }

    /// Runs `iptables ARGS` inside `service`'s network namespace (the host's iptables,
    /// the container's rules).
    fn iptables(&self, service: &str, args: &[&str]) -> anyhow::Result<()> {
        let id = self.container(service);
        let pid = self.docker(&["inspect", "--format", "{{.State.Pid}}", &id])?;
        let mut all = vec!["-t", pid.as_str(), "-n", "iptables", "-w", "5"];
        all.extend(args);
        let out = bounded("nsenter", &all, CALL);
        if !out.status.success() {
            bail!("iptables {} in {service}: {}", args.join(" "), text(&out));
        }
        Ok(())
    }

    /// Cuts `service` off from each of `others` (both directions, every packet dropped
    /// in `service`'s namespace), leaving its other links alone. Undone by [`Self::heal`].
    pub fn cut(&self, service: &str, others: &[&str]) -> anyhow::Result<()> {
        for other in others {
            let ip = self.ip(other)?;
            self.iptables(service, &["-I", "INPUT", "-s", &ip, "-j", "DROP"])?;
            self.iptables(service, &["-I", "OUTPUT", "-d", &ip, "-j", "DROP"])?;
        }
        Ok(())
    }

    /// Removes every rule [`Self::cut`] added in `service`'s namespace.
    pub fn heal(&self, service: &str) -> anyhow::Result<()> {
        self.iptables(service, &["-F", "INPUT"])?;
        self.iptables(service, &["-F", "OUTPUT"])
    }

    /// The contents of `path` in `service`'s container, `None` when it does not exist.
    pub fn read_file(&self, service: &str, path: &str) -> anyhow::Result<Option<String>> {
        let id = self.container(service);
        let out =
            bounded("docker", &["exec", &id, "/bin/sh", "-c", &format!("[ -f {path} ] && cat {path} || true")], CALL);
        if !out.status.success() {
            bail!("reading {path} in {service}: {}", text(&out));
        }
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        Ok((!body.is_empty()).then_some(body))
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.compose_within(CALL).args(["down", "--volumes", "--remove-orphans", "--timeout", "5"]).output();
    }
}

/// Whether an `agents --output json` answer shows every agent online.
pub fn all_online(v: &serde_json::Value) -> bool {
    v["hosts"].as_array().is_some_and(|hosts| {
        hosts.len() == AGENTS.len() && hosts.iter().all(|h| h["state"].as_str() == Some("HOST_STATE_ONLINE"))
    })
}
