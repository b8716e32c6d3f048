//! Hosts without containers: the systemd units (`deploy/systemd/`), the example
//! configurations (`deploy/config/`) and the Debian packages (`deploy/packages/`).
//!
//! - The example configurations pass the daemons' own `--check-config` (with real TLS
//!   files), agree with their units (data directory, stop timeout, command line), and
//!   `systemd-analyze verify` accepts both units (when `systemd-analyze` is installed).
//! - With Docker: a fresh Debian 12 root file system (`debootstrap --variant=minbase`,
//!   cached under `target/packages-test/`) imported as a local image, the packages built
//!   by `deploy/packages/build`, and every command of deploy/packages/README.md's "Install
//!   an agent on a fresh host" run in a container from that image: the package installs
//!   its binary, unit (enabled, not started), example config and the `flotilla` user;
//!   the agent configured as the README says, started with its unit's `ExecStart=` as
//!   its `User=` (systemd does not run in the container), registers with a real
//!   mutual-TLS coordinator on the host. Then the other two packages install beside it,
//!   and removal keeps data while purge deletes it and, last, the user.
//!
//! Without Docker the container test is skipped with a note, unless
//! `FLOTILLA_REQUIRE_DOCKER=1`, which makes every missing prerequisite a failure.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use flotilla_net::LeaderClient;
use flotilla_net::pki::Role;
use flotilla_proto::v1;
use flotilla_tests::{ClusterOptions, TestCa, TestCluster, binary, eventually};

/// The local image the fresh root file system is imported as.
const IMAGE: &str = "flotilla-test-debian:bookworm";
/// The Debian mirror debootstrap fetches from.
const MIRROR: &str = "http://deb.debian.org/debian";
/// The README section whose commands the container test runs.
const INSTALL_SECTION: &str = "## Install an agent on a fresh host";
/// The coordinators' addresses in the README's commands, replaced by the test's own.
const README_COORDINATORS: &str = "coord-1.internal:7600,coord-2.internal:7600,coord-3.internal:7600";
/// The host id the README gives the agent.
const README_HOST: &str = "web-3";

const CHECK: Duration = Duration::from_secs(60);
const DOCKER: Duration = Duration::from_secs(120);
const APT: Duration = Duration::from_secs(300);
const DEBOOTSTRAP: Duration = Duration::from_secs(1_200);
/// Building the packages cold is a full optimized build of three binaries.
const BUILD: Duration = Duration::from_secs(3_600);
const REGISTER: Duration = Duration::from_secs(60);

/// A progress note or the reason a check is skipped, on the test's stderr.
#[allow(clippy::print_stderr, reason = "a skipped check must say so where the test runner shows it")]
fn note(text: &str) {
    eprintln!("packages: {text}");
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the workspace").to_path_buf()
}

/// The cargo target directory this test runs from (`target/<profile>/deps/<test>`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its path");
    exe.ancestors().nth(3).expect("the test runs from target/<profile>/deps").to_path_buf()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Runs `cmd` to completion with its output captured; it is killed, and the call fails,
/// after `timeout`.
fn run(cmd: &mut Command, timeout: Duration) -> anyhow::Result<Output> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("timed out after {timeout:?}: {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    Ok(Output { status, stdout, stderr })
}

/// As [`run`], and the command must succeed.
fn run_ok(cmd: &mut Command, timeout: Duration) -> anyhow::Result<Output> {
    let what = format!("{cmd:?}");
    let out = run(cmd, timeout)?;
    ensure!(out.status.success(), "{what} failed ({}):\n{}", out.status, text(&out));
    Ok(out)
}

/// The value of `key` in a unit file's lines (`Key=value`), the last one given.
fn unit_value<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines().filter_map(|line| line.trim().strip_prefix(key)?.strip_prefix('=')).next_back()
}

/// A `TimeoutStopSec=` value (`30s`, `2min`, `90`) in milliseconds.
fn unit_duration_ms(value: &str) -> Option<u64> {
    let value = value.trim();
    let digits = value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len());
    let number: u64 = value[..digits].parse().ok()?;
    let factor = match value[digits..].trim() {
        "" | "s" | "sec" => 1_000,
        "ms" | "msec" => 1,
        "min" | "m" => 60_000,
        _ => return None,
    };
    Some(number * factor)
}

/// The value of `key = ...` in printed config TOML.
fn toml_value<'a>(config: &'a str, key: &str) -> Option<&'a str> {
    config.lines().find_map(|line| line.strip_prefix(key)?.trim_start().strip_prefix('=').map(str::trim))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// `--check-config` of `daemon` with `--config FILE` and `extra` flags: the printed
/// effective configuration.
fn check_config(daemon: &str, file: &Path, extra: &[&Path]) -> String {
    let mut cmd = Command::new(binary(daemon));
    cmd.arg("--check-config").arg("--config").arg(file);
    for (flag, path) in ["--tls-ca", "--tls-cert", "--tls-key"].iter().zip(extra) {
        cmd.arg(flag).arg(path);
    }
    let out = run(&mut cmd, CHECK).unwrap();
    assert!(out.status.success(), "{daemon} --check-config --config {}: {}", file.display(), text(&out));
    String::from_utf8(out.stdout).expect("the effective config is UTF-8")
}

#[test]
fn the_example_configs_pass_check_config_and_agree_with_the_units_which_systemd_accepts() {
    let root = workspace();
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::new(&tmp.path().join("pki"), "flotilla").unwrap();

    for (daemon, user) in [("flotilla-coordinator", "flotilla"), ("flotilla-agent", "root")] {
        let name = daemon.trim_start_matches("flotilla-");
        let example = root.join(format!("deploy/config/{name}.toml"));
        let unit_path = root.join(format!("deploy/systemd/{daemon}.service"));
        let unit = read(&unit_path);

        // As shipped: TLS on, with the placeholder paths under /etc/flotilla/pki/.
        let shipped = check_config(daemon, &example, &[]);
        assert_eq!(toml_value(&shipped, "insecure"), Some("false"), "{shipped}");
        for key in ["tls_ca", "tls_cert", "tls_key"] {
            let value = toml_value(&shipped, key).unwrap_or_else(|| panic!("{daemon}: no {key} in\n{shipped}"));
            assert!(value.starts_with("\"/etc/flotilla/pki/"), "{daemon}: {key} = {value}");
        }
        // With TLS files that exist (made by a test CA) in their place, naming the
        // holder the example configures: the coordinator's node id, the agent's host id.
        let (role, id_key) = match name {
            "coordinator" => (Role::Coordinator, "node_id"),
            _ => (Role::Agent, "host_id"),
        };
        let holder = toml_value(&shipped, id_key).unwrap_or_else(|| panic!("{daemon}: no {id_key} in\n{shipped}"));
        let tls = ca.issue(role, holder.trim_matches('"')).unwrap();
        let effective = check_config(daemon, &example, &[&tls.ca, &tls.cert, &tls.key]);
        assert_eq!(toml_value(&effective, "tls_key"), Some(format!("{:?}", tls.key.display().to_string()).as_str()));

        // The unit runs the daemon on the file the package installs the example for...
        assert_eq!(
            unit_value(&unit, "ExecStart"),
            Some(format!("/usr/bin/{daemon} --config /etc/flotilla/{name}.toml").as_str()),
            "{}",
            unit_path.display()
        );
        assert_eq!(unit_value(&unit, "ConditionPathExists"), Some(format!("/etc/flotilla/{name}.toml").as_str()));
        assert_eq!(unit_value(&unit, "User"), Some(user));
        // ...gives it the config's data directory...
        let state = unit_value(&unit, "StateDirectory").expect("a StateDirectory=");
        assert_eq!(toml_value(&effective, "data_dir"), Some(format!("\"/var/lib/{state}\"").as_str()));
        assert_eq!(state, format!("flotilla/{name}"));
        // ...stops it gracefully, restarts it when it fails, and not for a bad config.
        assert_eq!(unit_value(&unit, "KillSignal"), Some("SIGTERM"));
        assert_eq!(unit_value(&unit, "Restart"), Some("on-failure"));
        assert_eq!(unit_value(&unit, "RestartPreventExitStatus"), Some("2"));
        assert_eq!(unit_value(&unit, "NoNewPrivileges"), Some("yes"));
        assert_eq!(unit_value(&unit, "WantedBy"), Some("multi-user.target"));
    }

    // The coordinator's stop (SIGTERM) is bounded by shutdown_timeout_ms; systemd must
    // wait longer before it kills.
    let coordinator_unit = read(&root.join("deploy/systemd/flotilla-coordinator.service"));
    let shipped = check_config("flotilla-coordinator", &root.join("deploy/config/coordinator.toml"), &[]);
    let shutdown_ms: u64 = toml_value(&shipped, "shutdown_timeout_ms").and_then(|v| v.parse().ok()).expect("ms");
    let stop_ms = unit_value(&coordinator_unit, "TimeoutStopSec").and_then(unit_duration_ms).expect("TimeoutStopSec=");
    assert!(stop_ms > shutdown_ms, "TimeoutStopSec ({stop_ms} ms) must exceed shutdown_timeout_ms ({shutdown_ms})");
    assert_eq!(unit_value(&coordinator_unit, "ProtectSystem"), Some("strict"));
    // The agent's services outlive the agent.
    let agent_unit = read(&root.join("deploy/systemd/flotilla-agent.service"));
    assert_eq!(unit_value(&agent_unit, "KillMode"), Some("process"));

    systemd_analyze_verify(&root, tmp.path());
}

/// `systemd-analyze verify` on both units, in a scratch root that holds them, stand-ins
/// for the binaries they name, and this machine's system units (for their
/// dependencies). Any complaint about the units fails; without `systemd-analyze` the
/// check is skipped with a note.
fn systemd_analyze_verify(root: &Path, tmp: &Path) {
    let present = Command::new("systemd-analyze")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        note("systemd-analyze is not installed (apt package `systemd`): the units were not verified");
        return;
    }
    let scratch = tmp.join("verify-root");
    let units = ["flotilla-coordinator.service", "flotilla-agent.service"];
    std::fs::create_dir_all(scratch.join("etc/systemd/system")).unwrap();
    std::fs::create_dir_all(scratch.join("usr/bin")).unwrap();
    for unit in units {
        std::fs::copy(root.join("deploy/systemd").join(unit), scratch.join("etc/systemd/system").join(unit)).unwrap();
        let exe = scratch.join("usr/bin").join(unit.trim_end_matches(".service"));
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let system = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.join("multi-user.target").exists())
        .expect("systemd-analyze without the system's units");
    let lib = scratch.join("usr/lib/systemd");
    std::fs::create_dir_all(&lib).unwrap();
    run_ok(Command::new("cp").arg("-a").arg(system).arg(lib.join("system")), CHECK).unwrap();

    let out =
        run(Command::new("systemd-analyze").arg("verify").arg("--root").arg(&scratch).args(units), CHECK).unwrap();
    let said = text(&out);
    let complaints: Vec<&str> = said.lines().filter(|l| l.contains("flotilla-")).collect();
    assert!(out.status.success() && complaints.is_empty(), "systemd-analyze verify ({}):\n{said}", out.status);
}

// ---------------------------------------------------------------------------------
// The container test.

fn docker_required() -> bool {
    std::env::var("FLOTILLA_REQUIRE_DOCKER").is_ok_and(|v| v == "1")
}

/// A prerequisite of the container test is missing: skip it with a note, or fail when
/// `FLOTILLA_REQUIRE_DOCKER=1`.
fn missing(why: &str) {
    assert!(!docker_required(), "FLOTILLA_REQUIRE_DOCKER=1, but {why}");
    note(&format!("skipping the Debian container test: {why} (FLOTILLA_REQUIRE_DOCKER=1 makes this a failure)"));
}

fn docker() -> Command {
    Command::new("docker")
}

fn docker_works() -> bool {
    run(docker().args(["version", "--format", "{{.Server.Version}}"]), Duration::from_secs(30))
        .is_ok_and(|out| out.status.success())
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The local image of a fresh Debian 12 (bookworm) minbase root file system: reused
/// when present, else imported from the cached tarball, else debootstrapped (a few
/// minutes; the tarball is kept under `cache`). `Ok(None)`: a prerequisite is missing
/// (already reported).
fn fresh_debian_image(cache: &Path) -> anyhow::Result<Option<()>> {
    if run(docker().args(["image", "inspect", IMAGE]), DOCKER)?.status.success() {
        return Ok(Some(()));
    }
    let tarball = cache.join("debian-bookworm-minbase.tar");
    if !tarball.exists() {
        if !have("debootstrap") {
            missing("debootstrap is not installed (apt package `debootstrap`)");
            return Ok(None);
        }
        let uid = run(Command::new("id").arg("-u"), CHECK)?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            missing("debootstrap needs root");
            return Ok(None);
        }
        note("debootstrapping a fresh Debian bookworm root file system (cached for the next runs)");
        let rootfs = cache.join("rootfs.partial");
        if rootfs.exists() {
            std::fs::remove_dir_all(&rootfs)?;
        }
        std::fs::create_dir_all(cache)?;
        run_ok(
            Command::new("debootstrap").args(["--variant=minbase", "bookworm"]).arg(&rootfs).arg(MIRROR),
            DEBOOTSTRAP,
        )?;
        let partial = cache.join("debian-bookworm-minbase.tar.partial");
        run_ok(
            Command::new("tar").arg("--numeric-owner").arg("-C").arg(&rootfs).arg("-cf").arg(&partial).arg("."),
            APT,
        )?;
        std::fs::rename(&partial, &tarball)?;
        std::fs::remove_dir_all(&rootfs)?;
    }
    run_ok(docker().arg("import").arg(&tarball).arg(IMAGE), APT)?;
    Ok(Some(()))
}

/// The packages `deploy/packages/build OUT` writes, by package name.
fn build_packages(out: &Path) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let built = run_ok(flotilla_tests::workspace_script(&workspace().join("deploy/packages/build")).arg(out), BUILD)?;
    let mut debs = BTreeMap::new();
    for line in String::from_utf8_lossy(&built.stdout).lines() {
        let path = PathBuf::from(line.trim());
        let file = path.file_name().and_then(|f| f.to_str()).unwrap_or_default().to_owned();
        let Some((package, _)) = file.split_once('_') else { bail!("the build printed `{line}`, not a .deb path") };
        ensure!(path.is_file() && file.ends_with(".deb"), "the build printed `{line}`, not a .deb it wrote");
        debs.insert(package.to_owned(), path);
    }
    for package in ["flotilla-coordinator", "flotilla-agent", "flotilla"] {
        ensure!(debs.contains_key(package), "the build wrote no {package} package: {debs:?}");
    }
    Ok(debs)
}

/// The shell commands of the README's install section, in order (continued lines
/// joined).
fn readme_install_commands() -> Vec<String> {
    let readme = read(&workspace().join("deploy/packages/README.md"));
    let start = readme.find(INSTALL_SECTION).expect("deploy/packages/README.md has the install section");
    let section = &readme[start + INSTALL_SECTION.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in section.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block && line.trim() == "```sh";
            continue;
        }
        if !in_block || line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        match line.trim_end().strip_suffix('\\') {
            Some(head) => {
                pending.push_str(head.trim_start());
                pending.push(' ');
            }
            None => {
                pending.push_str(line.trim());
                commands.push(std::mem::take(&mut pending));
            }
        }
    }
    commands
}

/// A container of the fresh image, removed when dropped (also when the test fails).
#[derive(Debug)]
struct Container {
    name: String,
}

impl Container {
    /// Starts a container that idles, with `mount` at `/install`, on the host's network
    /// (so its agent reaches the host's coordinator on 127.0.0.1).
    fn start(mount: &Path) -> anyhow::Result<Self> {
        let container = Self { name: format!("flotilla-packages-test-{}", std::process::id()) };
        let _ = run(docker().args(["rm", "-f", &container.name]), DOCKER);
        run_ok(
            docker()
                .args(["run", "-d", "--name", &container.name, "--network", "host", "-v"])
                .arg(format!("{}:/install", mount.display()))
                .args(["-w", "/install", IMAGE, "sleep", "infinity"]),
            DOCKER,
        )?;
        Ok(container)
    }

    /// Runs `script` with bash in /install as `user`; its output, whatever the outcome.
    fn bash_as(&self, user: &str, script: &str, timeout: Duration) -> anyhow::Result<Output> {
        run(docker().args(["exec", "-u", user, "-w", "/install", &self.name, "bash", "-c", script]), timeout)
    }

    /// Runs `script` as root; it must succeed. Its stdout.
    fn sh(&self, script: &str) -> anyhow::Result<String> {
        let out = self.bash_as("root", script, APT)?;
        ensure!(out.status.success(), "in the container, `{script}` failed ({}):\n{}", out.status, text(&out));
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Whether `test EXPR` holds in the container.
    fn test(&self, expr: &str) -> anyhow::Result<bool> {
        Ok(self.bash_as("root", &format!("test {expr}"), DOCKER)?.status.success())
    }

    /// The pids of processes named `name`.
    fn pids(&self, name: &str) -> anyhow::Result<Vec<String>> {
        let script = format!(
            "for p in /proc/[0-9]*; do [ \"$(cat $p/comm 2>/dev/null)\" = {name} ] && echo ${{p#/proc/}}; done; true"
        );
        Ok(self.sh(&script)?.split_whitespace().map(str::to_owned).collect())
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = run(docker().args(["rm", "-f", &self.name]), DOCKER);
    }
}

/// The hosts the cluster lists (online and lost).
async fn hosts(client: &LeaderClient) -> anyhow::Result<Vec<v1::Host>> {
    let listed = client
        .call(|ch| async move {
            let mut req = tonic::Request::new(v1::ListAgentsRequest { include_lost: true, ..Default::default() });
            req.set_timeout(Duration::from_secs(5));
            v1::fleet_client::FleetClient::new(ch).list_agents(req).await.map(tonic::Response::into_inner)
        })
        .await?;
    Ok(listed.hosts)
}

#[test]
fn the_agent_package_installs_on_a_fresh_debian_as_documented_and_its_host_registers() {
    if !docker_works() {
        missing("docker is not available (no `docker` command, or no daemon answering)");
        return;
    }
    let cache = target_dir().join("packages-test");
    std::fs::create_dir_all(&cache).unwrap();
    let started = Instant::now();
    if fresh_debian_image(&cache).unwrap_or_else(|e| panic!("making the fresh Debian image: {e:#}")).is_none() {
        return;
    }
    note(&format!("fresh Debian image ready after {:?}", started.elapsed()));
    let debs = build_packages(&cache.join("debs")).unwrap_or_else(|e| panic!("building the packages: {e:#}"));
    note(&format!("packages built after {:?}", started.elapsed()));

    let commands = readme_install_commands();
    let agent_deb = debs["flotilla-agent"].file_name().and_then(|f| f.to_str()).expect("a file name").to_owned();
    assert_eq!(
        commands.first().map(String::as_str),
        Some(format!("apt-get install ./{agent_deb}").as_str()),
        "the README's install starts with the one-line install of the package the build writes"
    );
    assert_eq!(commands.iter().filter(|c| c.contains(README_COORDINATORS)).count(), 1, "{commands:#?}");

    // A coordinator on the host, mutual TLS, and the agent's files from its CA, named
    // as the README has them, next to the packages.
    let cluster = TestCluster::start(1, ClusterOptions { tls: true, ..ClusterOptions::default() }).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(cluster.wait_leader(Duration::from_secs(30))).unwrap();
    let install = tempfile::tempdir_in(&cache).unwrap();
    // apt reads the packages as its unprivileged user `_apt`.
    std::fs::set_permissions(install.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for deb in debs.values() {
        std::fs::copy(deb, install.path().join(deb.file_name().expect("a file name"))).unwrap();
    }
    let tls = cluster.ca().expect("a TLS cluster").issue(Role::Agent, README_HOST).unwrap();
    std::fs::copy(&tls.ca, install.path().join("ca.pem")).unwrap();
    std::fs::copy(&tls.cert, install.path().join(format!("{README_HOST}.pem"))).unwrap();
    std::fs::copy(&tls.key, install.path().join(format!("{README_HOST}.key"))).unwrap();
    let coordinator = cluster.live_addrs().join(",");

    let container = Container::start(install.path()).unwrap();
    let c = &container;
    let wants = "/etc/systemd/system/multi-user.target.wants";
    let mut agent_started = false;
    for command in &commands {
        if command == "systemctl enable --now flotilla-agent" {
            start_as_the_unit_does(c, wants).unwrap();
            agent_started = true;
            continue;
        }
        let command = command.replace(README_COORDINATORS, &coordinator);
        let out = c.bash_as("root", &command, APT).unwrap();
        assert!(out.status.success(), "README command `{command}` failed ({}):\n{}", out.status, text(&out));
        if command.starts_with("apt-get install ") {
            installed_but_not_started(c, wants).unwrap();
        }
    }
    assert!(agent_started, "the README's install ends with `systemctl enable --now flotilla-agent`: {commands:#?}");

    // The installed agent, configured as documented, registers with the coordinator.
    let client = LeaderClient::new(cluster.live_addrs(), cluster.client_security().clone());
    let registered = runtime.block_on(eventually(REGISTER, "the container's agent registered and online", || async {
        let hosts = hosts(&client).await.ok()?;
        hosts.into_iter().find(|h| h.host_id == README_HOST && h.state == v1::HostState::Online as i32)
    }));
    let host = registered.unwrap_or_else(|e| {
        let log = c.sh("cat /var/log/flotilla-agent.log").unwrap_or_default();
        panic!("{e:#}\nagent log:\n{log}\ncoordinator log:\n{}", cluster.log_of(1))
    });
    let labels: BTreeMap<&str, &str> = host.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(labels, BTreeMap::from([("role", "web"), ("zone", "a")]));
    assert_eq!(host.agent_version.map(|v| v.software_version).as_deref(), Some(env!("CARGO_PKG_VERSION")));

    // SIGTERM (the unit's KillSignal) stops it.
    for pid in c.pids("flotilla-agent").unwrap() {
        c.sh(&format!("kill -TERM {pid}")).unwrap();
    }
    runtime
        .block_on(eventually(Duration::from_secs(20), "the agent to stop on SIGTERM", || async {
            c.pids("flotilla-agent").ok()?.is_empty().then_some(())
        }))
        .unwrap();

    the_other_packages_install_and_purge_cleans_up(c, &debs, wants).unwrap();
    note(&format!("container test done after {:?}", started.elapsed()));
}

/// Right after `apt-get install` of the agent: the binary, the example config, the unit
/// (enabled), the `flotilla` user and the data directory are there, no live config is,
/// and nothing started the agent.
fn installed_but_not_started(c: &Container, wants: &str) -> anyhow::Result<()> {
    let version = c.sh("flotilla-agent --version")?;
    ensure!(version.trim() == format!("flotilla-agent {}", env!("CARGO_PKG_VERSION")), "version: {version}");
    ensure!(c.test("-f /etc/flotilla/agent.toml.example")?, "no /etc/flotilla/agent.toml.example");
    ensure!(c.test("! -e /etc/flotilla/agent.toml")?, "the package installed a live /etc/flotilla/agent.toml");
    let unit = c.sh("cat /usr/lib/systemd/system/flotilla-agent.service")?;
    ensure!(unit == read(&workspace().join("deploy/systemd/flotilla-agent.service")), "the installed unit differs");
    let link = c.sh(&format!("readlink {wants}/flotilla-agent.service"))?;
    ensure!(link.trim().ends_with("/lib/systemd/system/flotilla-agent.service"), "enabled as {link}");
    let user = c.sh("getent passwd flotilla")?;
    ensure!(user.trim().ends_with(":/var/lib/flotilla:/usr/sbin/nologin"), "user: {user}");
    ensure!(
        c.sh("stat -c '%U:%G %a' /var/lib/flotilla/agent /etc/flotilla/pki")? == "root:root 755\nroot:flotilla 750\n"
    );
    let running = c.pids("flotilla-agent")?;
    ensure!(running.is_empty(), "the package started the agent: pids {running:?}");
    Ok(())
}

/// What `systemctl enable --now flotilla-agent` does, without systemd: the unit is
/// enabled (its `WantedBy=` link exists), its condition now holds, and its
/// `ExecStart=` runs as its `User=`, in the background, logging to a file.
fn start_as_the_unit_does(c: &Container, wants: &str) -> anyhow::Result<()> {
    ensure!(c.test(&format!("-L {wants}/flotilla-agent.service"))?, "the agent unit is not enabled");
    ensure!(c.pids("flotilla-agent")?.is_empty(), "the agent runs before it was started");
    let unit = c.sh("cat /usr/lib/systemd/system/flotilla-agent.service")?;
    let condition = unit_value(&unit, "ConditionPathExists").context("no ConditionPathExists=")?;
    ensure!(c.test(&format!("-f {condition}"))?, "the README's commands did not write {condition}");
    let exec = unit_value(&unit, "ExecStart").context("no ExecStart=")?;
    let user = unit_value(&unit, "User").unwrap_or("root");
    // Checked first, so that a config the agent refuses fails here with its reasons.
    c.sh(&format!("{exec} --check-config >/dev/null"))?;
    run_ok(
        docker()
            .args(["exec", "-d", "-u", user, &c.name, "bash", "-c"])
            .arg(format!("exec {exec} >/var/log/flotilla-agent.log 2>&1")),
        DOCKER,
    )?;
    Ok(())
}

/// The coordinator and CLI packages install beside the agent; removing a package keeps
/// its data and the user, purging deletes its data, and the user goes with the last
/// daemon package purged.
fn the_other_packages_install_and_purge_cleans_up(
    c: &Container,
    debs: &BTreeMap<String, PathBuf>,
    wants: &str,
) -> anyhow::Result<()> {
    let file = |package: &str| debs[package].file_name().and_then(|f| f.to_str()).unwrap_or_default().to_owned();
    c.sh(&format!("apt-get install ./{} ./{}", file("flotilla-coordinator"), file("flotilla")))?;
    let version = env!("CARGO_PKG_VERSION");
    ensure!(c.sh("flotilla-coordinator --version")?.trim() == format!("flotilla-coordinator {version}"));
    ensure!(c.sh("flotilla --version")?.trim() == format!("flotilla {version}"));
    ensure!(c.test("-f /etc/flotilla/coordinator.toml.example")?, "no coordinator.toml.example");
    ensure!(c.test(&format!("-L {wants}/flotilla-coordinator.service"))?, "the coordinator unit is not enabled");
    ensure!(c.sh("stat -c '%U:%G %a' /var/lib/flotilla/coordinator")? == "flotilla:flotilla 750\n");
    ensure!(c.pids("flotilla-coordinator")?.is_empty(), "the package started the coordinator");
    // The installed coordinator's example passes its --check-config as is.
    c.sh("flotilla-coordinator --config /etc/flotilla/coordinator.toml.example --check-config >/dev/null")?;

    c.sh("dpkg --remove flotilla-agent")?;
    ensure!(c.test("! -e /usr/bin/flotilla-agent")?, "the binary survived a removal");
    ensure!(c.test("-d /var/lib/flotilla/agent")?, "a removal deleted the agent's data");
    c.sh("dpkg --purge flotilla-agent")?;
    ensure!(c.test("! -e /var/lib/flotilla/agent")?, "a purge kept the agent's data");
    ensure!(c.test(&format!("! -e {wants}/flotilla-agent.service"))?, "a purge kept the agent's unit link");
    ensure!(c.test("! -L /etc/systemd/system/flotilla-agent.service")?, "a purge kept the agent's unit masked");
    c.sh("getent passwd flotilla >/dev/null").context("purging the agent removed the coordinator's user")?;

    c.sh("dpkg --purge flotilla-coordinator")?;
    ensure!(c.test("! -e /var/lib/flotilla")?, "a purge kept /var/lib/flotilla");
    ensure!(c.test("! -e /usr/bin/flotilla-coordinator")?, "a purge kept the binary");
    let user = c.bash_as("root", "getent passwd flotilla || getent group flotilla", DOCKER)?;
    ensure!(!user.status.success(), "the last purge kept the flotilla user or group: {}", text(&user));
    // What the administrator wrote stays.
    ensure!(c.test("-f /etc/flotilla/agent.toml")?, "a purge deleted the administrator's agent.toml");
    Ok(())
}
