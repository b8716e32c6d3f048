//! Hosts without containers: the systemd units (`deploy/systemd/`), the example
//! configurations (`deploy/config/`) and the Debian packages (`deploy/packages/`).
//!
//! - The example configurations pass the daemons' own `--check-config` (with real TLS
//!   files), agree with their units (data directory, stop timeout, command line), and
//!   `systemd-analyze verify` accepts both units (when `systemd-analyze` is installed).
//! - With Docker: a fresh Debian 12 root file system (`debootstrap --variant=minbase`,
//!   cached under `target/packages-test/`) imported as a local image, the packages built
//!   by `deploy/packages/build`, and every command of deploy/packages/README.md's two
//!   agent installs, against a real mutual-TLS coordinator on the host with enrolment
//!   on. "Install an agent on a fresh host": the `flotilla` commands run as an operator
//!   on the host machine (a join token for `web-3`, then the listing), the others as
//!   root in a container named `web-3`, where the one-line install with the token
//!   configures the agent, starts it, sees it enrol, deletes the token and restarts it;
//!   the host registers with its token's labels. "Install an agent with certificates
//!   you issue", in a second container: the package installs its binary, unit
//!   (enabled, not started), example config and the `flotilla` user; the agent
//!   configured with TLS files as the README says registers with the labels it
//!   claims. Systemd does not run in the containers: a stand-in `systemctl` runs the
//!   unit's `ExecStart=` as its `User=` with its `EnvironmentFile=`. Then the other two
//!   packages install beside the agent, and removal keeps data while purge deletes it
//!   (and what the install wrote, not what the administrator wrote) and, last, the user.
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
/// The README section of the install with a join token.
const INSTALL_SECTION: &str = "## Install an agent on a fresh host";
/// The README section of the install with TLS files issued by hand.
const FILES_SECTION: &str = "## Install an agent with certificates you issue";
/// The coordinators' addresses in the README's commands, replaced by the test's own.
const README_COORDINATORS: &str = "coord-1.internal:7600,coord-2.internal:7600,coord-3.internal:7600";
/// The host the README enrols with a token (the container's host name).
const README_HOST: &str = "web-3";
/// The host the README gives certificates by hand.
const FILES_HOST: &str = "web-4";
/// What stands for the join token in the README's install command.
const TOKEN_PLACEHOLDER: &str = "FLOTILLA_JOIN_TOKEN=TOKEN ";
/// The lifetime of the agent certificates the test cluster issues.
const AGENT_CERT_TTL_MS: u64 = 86_400_000;
/// The unit's optional environment file, where the install puts the join token.
const TOKEN_FILE: &str = "/etc/flotilla/agent.env";

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

        // As shipped: TLS on, with the placeholder paths under /etc/flotilla/pki/; for
        // the agent, commented out: it runs on the certificate it enrolled for.
        let shipped = check_config(daemon, &example, &[]);
        assert_eq!(toml_value(&shipped, "insecure"), Some("false"), "{shipped}");
        let text = read(&example);
        for key in ["tls_ca", "tls_cert", "tls_key"] {
            let value = match name {
                "agent" => {
                    assert_eq!(toml_value(&shipped, key), None, "{daemon}: {key} is set in\n{shipped}");
                    text.lines().find_map(|l| toml_value(l.strip_prefix('#')?, key))
                }
                _ => toml_value(&shipped, key),
            };
            let value = value.unwrap_or_else(|| panic!("{daemon}: no {key} in {}", example.display()));
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
    // The agent's services outlive the agent; a join token reaches it through the
    // environment, from a file that need not exist.
    let agent_unit = read(&root.join("deploy/systemd/flotilla-agent.service"));
    assert_eq!(unit_value(&agent_unit, "KillMode"), Some("process"));
    assert_eq!(unit_value(&agent_unit, "EnvironmentFile"), Some(format!("-{TOKEN_FILE}").as_str()));

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

/// The text of the section under `heading` (up to the next `## ` heading).
fn section<'a>(text: &'a str, heading: &str) -> Option<&'a str> {
    let rest = &text[text.find(heading)? + heading.len()..];
    Some(&rest[..rest.find("\n## ").unwrap_or(rest.len())])
}

/// The commands of the `sh` blocks of `text`, in order (continued lines joined; blank
/// and comment lines left out).
fn sh_commands(text: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in text.lines() {
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

/// The shell commands of a README section, in order (continued lines joined).
fn readme_commands(heading: &str) -> Vec<String> {
    let readme = read(&workspace().join("deploy/packages/README.md"));
    let text = section(&readme, heading).unwrap_or_else(|| panic!("deploy/packages/README.md has `{heading}`"));
    sh_commands(text)
}

/// The commands docs/operations.md shows for agents on hosts are the README's, which
/// the container test runs.
#[test]
fn the_operations_guide_shows_the_commands_of_the_readme() {
    let guide = read(&workspace().join("docs/operations.md"));
    let heading = "## Agents on fleet hosts";
    let shown = sh_commands(section(&guide, heading).expect("docs/operations.md has the agents' section"));
    let readme = readme_commands(INSTALL_SECTION);
    assert!(!shown.is_empty(), "no commands in docs/operations.md's `{heading}`");
    for command in shown {
        assert!(
            readme.contains(&command),
            "docs/operations.md shows `{command}`, which the README does not: {readme:#?}"
        );
    }
}

/// Where the enabled units' links are.
const WANTS: &str = "/etc/systemd/system/multi-user.target.wants";

/// A stand-in for `systemctl` in a container without systemd (with /run/systemd/system,
/// by which maintainer scripts tell that systemd runs): `flotilla-agent.service` (the
/// unit as installed, `unit`) is started as systemd would start it (once its
/// `ConditionPathExists=` holds, in an environment of its `EnvironmentFile=` only, its
/// `ExecStart=` run as its `User=`, logging to /var/log/flotilla-agent.log), stopped with its
/// `KillSignal=`, and answers `is-enabled` (its `WantedBy=` link) and `is-active`;
/// `preset` enables any unit. Every other call succeeds without doing anything. Calls
/// are logged to /var/log/systemctl.log.
fn stand_in_systemctl(unit: &str) -> anyhow::Result<String> {
    let exec = unit_value(unit, "ExecStart").context("no ExecStart=")?;
    let user = unit_value(unit, "User").unwrap_or("root");
    let condition = unit_value(unit, "ConditionPathExists").context("no ConditionPathExists=")?;
    let signal = unit_value(unit, "KillSignal").unwrap_or("SIGTERM").trim_start_matches("SIG");
    let env_file = unit_value(unit, "EnvironmentFile").map_or("", |f| f.trim_start_matches('-'));
    let run = if user == "root" { format!("exec {exec}") } else { format!("exec runuser -u {user} -- {exec}") };
    Ok(format!(
        r#"#!/bin/bash
# systemctl for a container without systemd: see tests/tests/packages.rs.
set -u
echo "systemctl $*" >>/var/log/systemctl.log
verb='' unit='' now='' quiet=''
for arg in "$@"; do
    case $arg in
        --now) now=1 ;;
        --quiet | -q) quiet=1 ;;
        -*) ;;
        *) if [ -z "$verb" ]; then verb=$arg; elif [ -z "$unit" ]; then unit=${{arg%.service}}; fi ;;
    esac
done
pidfile=/run/flotilla-agent.pid
running() {{ [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }}
say() {{ [ -n "$quiet" ] || echo "$1"; }}
start() {{
    running && return 0
    if [ ! -e {condition} ]; then
        echo "systemctl: {condition} does not exist: flotilla-agent.service not started" >&2
        return 0
    fi
    (
        for fd in /proc/$BASHPID/fd/*; do
            fd=${{fd##*/}}
            if [ "$fd" -gt 2 ]; then eval "exec $fd>&-" 2>/dev/null; fi
        done
        # systemd's environment: its own PATH and the EnvironmentFile=, nothing of
        # the caller's.
        for var in $(compgen -e); do unset "$var"; done
        export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
        if [ -n "{env_file}" ] && [ -f "{env_file}" ]; then set -a; . "{env_file}"; set +a; fi
        {run}
    ) </dev/null >>/var/log/flotilla-agent.log 2>&1 &
    echo $! >"$pidfile"
    echo "started flotilla-agent.service: pid $!" >>/var/log/systemctl.log
}}
stop() {{
    running || return 0
    kill -{signal} "$(cat "$pidfile")"
    for _ in $(seq 150); do running || break; sleep 0.1; done
    rm -f "$pidfile"
}}
# deb-systemd-helper enables a unit with `preset` where systemctl exists: Debian's
# preset enables every unit (its WantedBy= links).
if [ "$verb" = preset ] && [ -n "$unit" ]; then
    file=/lib/systemd/system/$unit.service
    for target in $(sed -n 's/^WantedBy=//p' "$file"); do
        mkdir -p "/etc/systemd/system/$target.wants"
        ln -sf "$file" "/etc/systemd/system/$target.wants/$unit.service"
    done
    exit 0
fi
[ "$unit" = flotilla-agent ] || exit 0
enabled() {{ [ -L {WANTS}/flotilla-agent.service ]; }}
case $verb in
    is-enabled) if enabled; then say enabled; else say disabled; exit 1; fi ;;
    is-active) if running; then say active; else say inactive; exit 3; fi ;;
    enable)
        enabled || {{ echo "systemctl: the package did not enable flotilla-agent.service" >&2; exit 1; }}
        if [ -n "$now" ]; then start; fi ;;
    start) start ;;
    stop) stop ;;
    restart) stop; start ;;
esac
exit 0
"#
    ))
}

#[test]
fn the_stand_in_systemctl_is_valid_bash() {
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("systemctl");
    let unit = read(&workspace().join("deploy/systemd/flotilla-agent.service"));
    std::fs::write(&script, stand_in_systemctl(&unit).unwrap()).unwrap();
    run_ok(Command::new("bash").arg("-n").arg(&script), CHECK).unwrap();
}

/// A container of the fresh image, removed when dropped (also when the test fails).
#[derive(Debug)]
struct Container {
    name: String,
}

impl Container {
    /// Starts a container named `hostname` that idles, with `mount` at `/install`, on
    /// the host's network (so its agent reaches the host's coordinator on 127.0.0.1),
    /// with an init that reaps what the stand-in `systemctl` starts, and that stand-in
    /// in place (see [`stand_in_systemctl`]; in /usr/bin, where systemd's is: apt runs
    /// maintainer scripts with `DPkg::Path`, without /usr/local).
    fn start(mount: &Path, hostname: &str, systemctl: &str) -> anyhow::Result<Self> {
        let container = Self { name: format!("flotilla-packages-test-{}-{hostname}", std::process::id()) };
        let _ = run(docker().args(["rm", "-f", &container.name]), DOCKER);
        run_ok(
            docker()
                .args(["run", "-d", "--init", "--name", &container.name, "--hostname", hostname])
                .args(["--network", "host", "-v"])
                .arg(format!("{}:/install", mount.display()))
                .args(["-w", "/install", IMAGE, "sleep", "infinity"]),
            DOCKER,
        )?;
        container
            .sh(&format!("mkdir -p /run/systemd/system && install -m 0755 /install/{systemctl} /usr/bin/systemctl"))?;
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

    /// Runs a README `command` as root, as the README says to; it must succeed. Its
    /// output.
    #[track_caller]
    fn run_readme(&self, command: &str) -> Output {
        let out = self.bash_as("root", command, APT).unwrap();
        assert!(
            out.status.success(),
            "README command `{command}` failed ({}):\n{}\n{}",
            out.status,
            text(&out),
            self.logs()
        );
        out
    }

    /// Whether `test EXPR` holds in the container.
    fn test(&self, expr: &str) -> anyhow::Result<bool> {
        Ok(self.bash_as("root", &format!("test {expr}"), DOCKER)?.status.success())
    }

    /// The pids of processes named `name` (zombies left out).
    fn pids(&self, name: &str) -> anyhow::Result<Vec<String>> {
        let script = format!(
            "for p in /proc/[0-9]*; do [ \"$(cat $p/comm 2>/dev/null)\" = {name} ] && ! grep -q '^State:.*Z' $p/status 2>/dev/null && echo ${{p#/proc/}}; done; true"
        );
        Ok(self.sh(&script)?.split_whitespace().map(str::to_owned).collect())
    }

    /// What the stand-in `systemctl` and the agent it started wrote, for failures.
    fn logs(&self) -> String {
        let out =
            self.bash_as("root", "tail -n 40 /var/log/systemctl.log /var/log/flotilla-agent.log 2>&1; true", DOCKER);
        out.map(|o| text(&o)).unwrap_or_default()
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

/// The `flotilla` CLI on the test machine as an operator of `cluster`: a README command
/// run with bash, the CLI first on the `PATH`, configured through its environment.
fn operator_command(cluster: &TestCluster, command: &str) -> Command {
    let tls = cluster.operator_tls().expect("a TLS cluster");
    let cli = binary("flotilla");
    let bin = cli.parent().expect("the CLI's directory");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![bin.to_path_buf()];
    paths.extend(std::env::split_paths(&path));
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(command)
        .env("PATH", std::env::join_paths(paths).expect("a PATH"))
        .env("FLOTILLA_COORDINATORS", cluster.live_addrs().join(","))
        .env("FLOTILLA_TLS_CA", &tls.ca)
        .env("FLOTILLA_TLS_CERT", &tls.cert)
        .env("FLOTILLA_TLS_KEY", &tls.key);
    cmd
}

/// Waits until the cluster lists `host` online; its record.
fn registered(runtime: &tokio::runtime::Runtime, cluster: &TestCluster, c: &Container, host: &str) -> v1::Host {
    let client = LeaderClient::new(cluster.live_addrs(), cluster.client_security().clone());
    let found = runtime.block_on(eventually(REGISTER, &format!("{host} registered and online"), || async {
        let hosts = hosts(&client).await.ok()?;
        hosts.into_iter().find(|h| h.host_id == host && h.state == v1::HostState::Online as i32)
    }));
    found.unwrap_or_else(|e| panic!("{e:#}\n{}\ncoordinator log:\n{}", c.logs(), cluster.log_of(1)))
}

fn labels_of(host: &v1::Host) -> BTreeMap<&str, &str> {
    host.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
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

    let agent_deb = debs["flotilla-agent"].file_name().and_then(|f| f.to_str()).expect("a file name").to_owned();
    let plain_install = format!("apt-get install ./{agent_deb}");
    // The install with a token: an operator's token, the one-line install, the listing.
    let commands = readme_commands(INSTALL_SECTION);
    assert!(
        commands.first().is_some_and(|c| c.starts_with("flotilla agents token create ")),
        "the README's install starts with the operator's token: {commands:#?}"
    );
    let host_commands: Vec<&String> = commands.iter().filter(|c| !c.starts_with("flotilla ")).collect();
    assert!(
        matches!(host_commands.as_slice(), [one] if one.starts_with(TOKEN_PLACEHOLDER)
            && one.contains(README_COORDINATORS) && one.ends_with(&plain_install)),
        "on the host, the README's install is one command, the install of the package the build writes with the token and the coordinators: {commands:#?}"
    );
    // The install with TLS files issued by hand.
    let files_commands = readme_commands(FILES_SECTION);
    assert_eq!(files_commands.first(), Some(&plain_install), "{files_commands:#?}");
    assert_eq!(files_commands.iter().filter(|c| c.contains(README_COORDINATORS)).count(), 1, "{files_commands:#?}");
    assert_eq!(files_commands.last().map(String::as_str), Some("systemctl enable --now flotilla-agent"));

    // A coordinator on the host: mutual TLS, enrolment on.
    let cluster = TestCluster::start(
        1,
        ClusterOptions { tls: true, agent_cert_ttl_ms: Some(AGENT_CERT_TTL_MS), ..ClusterOptions::default() },
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(cluster.wait_leader(Duration::from_secs(30))).unwrap();
    let coordinator = cluster.live_addrs().join(",");
    // Next to the packages: the second host's TLS files, named as the README has them,
    // and the stand-in systemctl.
    let install = tempfile::tempdir_in(&cache).unwrap();
    // apt reads the packages as its unprivileged user `_apt`.
    std::fs::set_permissions(install.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for deb in debs.values() {
        std::fs::copy(deb, install.path().join(deb.file_name().expect("a file name"))).unwrap();
    }
    let tls = cluster.ca().expect("a TLS cluster").issue(Role::Agent, FILES_HOST).unwrap();
    std::fs::copy(&tls.ca, install.path().join("ca.pem")).unwrap();
    std::fs::copy(&tls.cert, install.path().join(format!("{FILES_HOST}.pem"))).unwrap();
    std::fs::copy(&tls.key, install.path().join(format!("{FILES_HOST}.key"))).unwrap();
    let unit = read(&workspace().join("deploy/systemd/flotilla-agent.service"));
    std::fs::write(install.path().join("systemctl"), stand_in_systemctl(&unit).unwrap()).unwrap();

    // 1. With a join token, on the host `web-3`.
    let c = Container::start(install.path(), README_HOST, "systemctl").unwrap();
    let mut token = None;
    for command in &commands {
        if command.starts_with("flotilla ") {
            let out = run_ok(&mut operator_command(&cluster, command), CHECK).unwrap();
            if command.starts_with("flotilla agents token create ") {
                let printed = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                assert!(
                    printed.starts_with("flotilla-join-v1.") && !printed.contains(char::is_whitespace),
                    "{printed}"
                );
                token = Some(printed);
            }
            if command == "flotilla agents" {
                // The host is listed, online with its token's labels, once it has
                // registered after the install's restart.
                let listed = |out: &Output| {
                    String::from_utf8_lossy(&out.stdout).lines().any(|l| {
                        l.starts_with(&format!("{README_HOST} "))
                            && l.contains("online")
                            && l.contains("role=web,zone=a")
                    })
                };
                let mut out = out;
                let deadline = Instant::now() + REGISTER;
                while !listed(&out) {
                    assert!(
                        Instant::now() < deadline,
                        "`{command}` never listed {README_HOST}:\n{}\n{}",
                        text(&out),
                        c.logs()
                    );
                    std::thread::sleep(Duration::from_millis(200));
                    out = run_ok(&mut operator_command(&cluster, command), CHECK).unwrap();
                }
            }
            continue;
        }
        let token = token.as_deref().expect("the token was made before the install");
        let command = command
            .replacen(TOKEN_PLACEHOLDER, &format!("FLOTILLA_JOIN_TOKEN={token} "), 1)
            .replace(README_COORDINATORS, &coordinator);
        let out = c.run_readme(&command);
        let said = text(&out);
        assert!(said.contains(&format!("host {README_HOST} enrolled")), "the install says the host enrolled:\n{said}");
        enrolled_by_the_install(&c, &coordinator, token).unwrap_or_else(|e| panic!("{e:#}\n{said}\n{}", c.logs()));
    }
    // The host registered with its token's labels, claiming none itself.
    let host = registered(&runtime, &cluster, &c, README_HOST);
    assert_eq!(labels_of(&host), BTreeMap::from([("role", "web"), ("zone", "a")]));
    assert_eq!(host.agent_version.map(|v| v.software_version).as_deref(), Some(env!("CARGO_PKG_VERSION")));
    stop_the_agent(&runtime, &c).unwrap();
    the_other_packages_install_and_purge_cleans_up(&c, &debs).unwrap();
    drop(c);
    note(&format!("the install with a token done after {:?}", started.elapsed()));

    // 2. With TLS files issued by hand, in a second fresh container.
    let c = Container::start(install.path(), FILES_HOST, "systemctl").unwrap();
    for command in &files_commands {
        let command = command.replace(README_COORDINATORS, &coordinator);
        c.run_readme(&command);
        if command == plain_install {
            installed_but_not_started(&c).unwrap();
        }
    }
    let host = registered(&runtime, &cluster, &c, FILES_HOST);
    assert_eq!(labels_of(&host), BTreeMap::from([("role", "web"), ("zone", "b")]));
    stop_the_agent(&runtime, &c).unwrap();
    // What the administrator wrote outlives a purge.
    c.sh("dpkg --purge flotilla-agent").unwrap();
    assert!(c.test("-f /etc/flotilla/agent.toml").unwrap(), "a purge deleted the administrator's agent.toml");
    assert!(c.test("-f /etc/flotilla/pki/agent.key").unwrap(), "a purge deleted the administrator's key");
    note(&format!("container test done after {:?}", started.elapsed()));
}

/// Right after `apt-get install` of the agent: the binary, the example config, the unit
/// (enabled), the `flotilla` user and the data directory are there, no live config is,
/// and nothing started the agent.
fn installed_but_not_started(c: &Container) -> anyhow::Result<()> {
    installed(c)?;
    ensure!(c.test("! -e /etc/flotilla/agent.toml")?, "the package installed a live /etc/flotilla/agent.toml");
    ensure!(c.test(&format!("! -e {TOKEN_FILE}"))?, "the package wrote {TOKEN_FILE}");
    let running = c.pids("flotilla-agent")?;
    ensure!(running.is_empty(), "the package started the agent: pids {running:?}");
    Ok(())
}

/// What every install of the agent package leaves.
fn installed(c: &Container) -> anyhow::Result<()> {
    let version = c.sh("flotilla-agent --version")?;
    ensure!(version.trim() == format!("flotilla-agent {}", env!("CARGO_PKG_VERSION")), "version: {version}");
    ensure!(c.test("-f /etc/flotilla/agent.toml.example")?, "no /etc/flotilla/agent.toml.example");
    let unit = c.sh("cat /usr/lib/systemd/system/flotilla-agent.service")?;
    ensure!(unit == read(&workspace().join("deploy/systemd/flotilla-agent.service")), "the installed unit differs");
    let link = c.sh(&format!("readlink {WANTS}/flotilla-agent.service"))?;
    ensure!(link.trim().ends_with("/lib/systemd/system/flotilla-agent.service"), "enabled as {link}");
    let user = c.sh("getent passwd flotilla")?;
    ensure!(user.trim().ends_with(":/var/lib/flotilla:/usr/sbin/nologin"), "user: {user}");
    ensure!(
        c.sh("stat -c '%U:%G %a' /var/lib/flotilla/agent /etc/flotilla/pki")? == "root:root 755\nroot:flotilla 750\n"
    );
    Ok(())
}

/// Right after the one-line install with a token: the package is installed, its
/// configuration names the coordinators (the host id is the host name), the agent runs
/// on the identity it enrolled for (key made here, readable by root only), and the
/// token is gone from the disk and from the agent's environment.
fn enrolled_by_the_install(c: &Container, coordinator: &str, token: &str) -> anyhow::Result<()> {
    installed(c)?;
    let config = c.sh("cat /etc/flotilla/agent.toml")?;
    ensure!(config.starts_with("# Written by the flotilla-agent package"), "agent.toml:\n{config}");
    let coordinators =
        format!("[{}]", coordinator.split(',').map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", "));
    ensure!(toml_value(&config, "coordinators") == Some(coordinators.as_str()), "agent.toml:\n{config}");
    ensure!(toml_value(&config, "host_id").is_none(), "agent.toml:\n{config}");
    let effective = c.sh("flotilla-agent --config /etc/flotilla/agent.toml --check-config")?;
    ensure!(toml_value(&effective, "host_id") == Some(format!("\"{README_HOST}\"").as_str()), "{effective}");
    ensure!(c.sh("stat -c '%U:%G %a' /etc/flotilla/agent.toml")? == "root:root 644\n");
    let identity = "/var/lib/flotilla/agent/identity";
    ensure!(
        c.sh(&format!("stat -c '%n %a' {identity} {identity}/agent.key {identity}/agent.pem {identity}/ca.pem"))?
            == format!("{identity} 700\n{identity}/agent.key 600\n{identity}/agent.pem 644\n{identity}/ca.pem 644\n"),
        "the enrolled identity's files"
    );
    ensure!(c.test(&format!("! -e {TOKEN_FILE}"))?, "the install left the spent token in {TOKEN_FILE}");
    let pids = c.pids("flotilla-agent")?;
    let [pid] = pids.as_slice() else { bail!("one agent runs, not {pids:?}") };
    let environ = c.sh(&format!("tr '\\0' '\\n' </proc/{pid}/environ"))?;
    ensure!(
        !environ.contains(token) && !environ.contains("FLOTILLA_JOIN_TOKEN"),
        "the agent's environment:\n{environ}"
    );
    let calls = c.sh("cat /var/log/systemctl.log")?;
    ensure!(calls.matches("started flotilla-agent.service").count() == 2, "started, then restarted:\n{calls}");
    let log = c.sh("cat /var/log/flotilla-agent.log")?;
    ensure!(log.contains("enrolled") && !log.contains(token), "the agent's log:\n{log}");
    Ok(())
}

/// Stops the agent as its unit would (KillSignal=SIGTERM), and it stops.
fn stop_the_agent(runtime: &tokio::runtime::Runtime, c: &Container) -> anyhow::Result<()> {
    ensure!(!c.pids("flotilla-agent")?.is_empty(), "the agent is not running: {}", c.logs());
    c.sh("systemctl stop flotilla-agent")?;
    runtime.block_on(eventually(Duration::from_secs(20), "the agent to stop on SIGTERM", || async {
        c.pids("flotilla-agent").ok()?.is_empty().then_some(())
    }))?;
    Ok(())
}

/// The coordinator and CLI packages install beside the agent; removing a package keeps
/// its data and the user, purging deletes its data (and the configuration the agent's
/// install wrote), and the user goes with the last daemon package purged.
fn the_other_packages_install_and_purge_cleans_up(
    c: &Container,
    debs: &BTreeMap<String, PathBuf>,
) -> anyhow::Result<()> {
    let file = |package: &str| debs[package].file_name().and_then(|f| f.to_str()).unwrap_or_default().to_owned();
    c.sh(&format!("apt-get install ./{} ./{}", file("flotilla-coordinator"), file("flotilla")))?;
    let version = env!("CARGO_PKG_VERSION");
    ensure!(c.sh("flotilla-coordinator --version")?.trim() == format!("flotilla-coordinator {version}"));
    ensure!(c.sh("flotilla --version")?.trim() == format!("flotilla {version}"));
    ensure!(c.test("-f /etc/flotilla/coordinator.toml.example")?, "no coordinator.toml.example");
    ensure!(c.test(&format!("-L {WANTS}/flotilla-coordinator.service"))?, "the coordinator unit is not enabled");
    ensure!(c.sh("stat -c '%U:%G %a' /var/lib/flotilla/coordinator")? == "flotilla:flotilla 750\n");
    ensure!(c.pids("flotilla-coordinator")?.is_empty(), "the package started the coordinator");
    // The installed coordinator's example passes its --check-config as is.
    c.sh("flotilla-coordinator --config /etc/flotilla/coordinator.toml.example --check-config >/dev/null")?;

    c.sh("dpkg --remove flotilla-agent")?;
    ensure!(c.test("! -e /usr/bin/flotilla-agent")?, "the binary survived a removal");
    ensure!(c.test("-f /var/lib/flotilla/agent/identity/agent.key")?, "a removal deleted the agent's identity");
    ensure!(c.test("-f /etc/flotilla/agent.toml")?, "a removal deleted the configuration");
    c.sh("dpkg --purge flotilla-agent")?;
    ensure!(c.test("! -e /var/lib/flotilla/agent")?, "a purge kept the agent's data");
    ensure!(c.test("! -e /etc/flotilla/agent.toml")?, "a purge kept the agent.toml the install wrote");
    ensure!(c.test(&format!("! -e {WANTS}/flotilla-agent.service"))?, "a purge kept the agent's unit link");
    ensure!(c.test("! -L /etc/systemd/system/flotilla-agent.service")?, "a purge kept the agent's unit masked");
    c.sh("getent passwd flotilla >/dev/null").context("purging the agent removed the coordinator's user")?;

    c.sh("dpkg --purge flotilla-coordinator")?;
    ensure!(c.test("! -e /var/lib/flotilla")?, "a purge kept /var/lib/flotilla");
    ensure!(c.test("! -e /usr/bin/flotilla-coordinator")?, "a purge kept the binary");
    let user = c.bash_as("root", "getent passwd flotilla || getent group flotilla", DOCKER)?;
    ensure!(!user.status.success(), "the last purge kept the flotilla user or group: {}", text(&user));
    Ok(())
}
