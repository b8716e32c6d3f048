//! Chaos rounds over the compose cluster: a seeded schedule of faults, each injected
//! into the containers during a multi-service release, and the whole history checked
//! by `flotilla-check` afterwards.
//!
//! Each round releases the chaos app (five services with every dependency kind — data,
//! config, hard, soft and an API contract — two stages, a gate with a check, and a
//! migration) to the next version, injects one fault a seeded while after the start,
//! holds it a seeded while, heals it, and waits for the release to end as its spec
//! says: SUCCEEDED for a good version, ROLLED_BACK for the broken one (2.0.1, whose
//! health check fails), or SUCCEEDED and then ROLLED_BACK by an operator's rollback of
//! the whole release (every service back, dependents first). Faults: the leader killed, a follower killed, the leader
//! paused past the election timeout, the leader cut off from the other coordinators
//! (agents still reach it), a follower cut off, an agent cut off from every
//! coordinator, an agent killed in the middle of its steps, every coordinator killed at
//! once, a follower's whole data directory lost (it must stay out of Raft until an
//! operator removes it and adds it again as a new member), and an agent killed as it
//! enters a deploy phase: the artifact fetched and verified but not unpacked, unpacked
//! with the old process still running, migrating, the new process started but not yet
//! judged healthy (the chaos app's hooks mark each phase and linger in it).
//!
//! After the rounds, [`Chaos::history`] gathers what the checker reads — every release
//! with its events (each with its term), each agent's execution history and final
//! inventory, and every API write with whether it was acknowledged — and
//! [`Chaos::check`] runs the checker and writes the history and the report under the
//! target directory. A failure names the seed (`FLOTILLA_CHAOS_SEED`) that replays the
//! schedule.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use flotilla_check::{CREATE_METHOD, HISTORY_FORMAT, History, HostRecord, Options, Report, Write};
use flotilla_proto::v1;
use flotilla_shared::history::{HostHistoryEntry, HostHistoryRecord};

use crate::compose::{AGENTS, COORDINATORS, FORM, Project, all_online, text};

/// Longest one release may take, faults included.
pub const RELEASE: Duration = Duration::from_secs(300);

/// The versions the sample artifacts come in: two good ones and a broken one.
const GOOD: [&str; 2] = ["1.0.0", "2.0.0"];
const BAD: &str = "2.0.1";

/// Where an agent keeps its execution history (in its container).
const HISTORY_FILES: [&str; 2] =
    ["/var/lib/flotilla/agent/journal/history.1.jsonl", "/var/lib/flotilla/agent/journal/history.jsonl"];

/// A fault a round injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// SIGKILL of the leader's container; started again after the hold.
    KillLeader,
    /// SIGKILL of a follower's container; started again after the hold.
    KillFollower,
    /// `docker pause` of the leader for the hold (past the election timeout), then
    /// unpaused: it wakes up deposed.
    PauseLeader,
    /// The leader cut off from the other coordinators; agents still reach it.
    IsolateLeader,
    /// A follower cut off from the other coordinators.
    IsolateFollower,
    /// An agent cut off from every coordinator.
    IsolateAgent,
    /// SIGKILL of an agent's container (its services' processes die with it); started
    /// again after the hold.
    KillAgent,
    /// SIGKILL of every coordinator at once; all started again after the hold.
    RestartCoordinators,
    /// A follower's whole data directory lost: killed, its volume emptied, started
    /// again after the hold. It must stay out of Raft; an operator then removes it
    /// and adds it again as a new member, which catches up.
    LoseFollowerData,
    /// An agent killed in a deploy phase, at the moment it enters it (the chaos app
    /// marks each phase from a hook that then lingers), started again after the hold.
    KillAgentIn(Phase),
}

/// A deploy phase an agent is killed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// The artifact fetched and verified, not unpacked yet (`before_install`).
    BeforeInstall,
    /// Unpacked, the old process still running (`after_install`).
    AfterInstall,
    /// Running the migration (`migrate`).
    Migrate,
    /// The new process started, its health checks not counted yet (`validate`).
    Validate,
}

impl Phase {
    /// The hook of `db` (the first service, deployed whatever the round's ending) that
    /// marks it.
    fn hook(self) -> &'static str {
        match self {
            Phase::BeforeInstall => "before_install",
            Phase::AfterInstall => "after_install",
            Phase::Migrate => "migrate",
            Phase::Validate => "validate",
        }
    }
}

impl Fault {
    /// Every fault, in the order a schedule draws from.
    pub const ALL: [Fault; 13] = [
        Fault::KillLeader,
        Fault::KillFollower,
        Fault::PauseLeader,
        Fault::IsolateLeader,
        Fault::IsolateFollower,
        Fault::IsolateAgent,
        Fault::KillAgent,
        Fault::RestartCoordinators,
        Fault::LoseFollowerData,
        Fault::KillAgentIn(Phase::BeforeInstall),
        Fault::KillAgentIn(Phase::AfterInstall),
        Fault::KillAgentIn(Phase::Migrate),
        Fault::KillAgentIn(Phase::Validate),
    ];

    /// Whether it takes an agent away from the coordinators for a while.
    pub fn downs_an_agent(self) -> bool {
        matches!(self, Fault::IsolateAgent | Fault::KillAgent | Fault::KillAgentIn(_))
    }

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Fault::KillLeader => "kill-leader",
            Fault::KillFollower => "kill-follower",
            Fault::PauseLeader => "pause-leader",
            Fault::IsolateLeader => "isolate-leader",
            Fault::IsolateFollower => "isolate-follower",
            Fault::IsolateAgent => "isolate-agent",
            Fault::KillAgent => "kill-agent",
            Fault::RestartCoordinators => "restart-coordinators",
            Fault::LoseFollowerData => "lose-follower-data",
            Fault::KillAgentIn(Phase::BeforeInstall) => "kill-agent-before-install",
            Fault::KillAgentIn(Phase::AfterInstall) => "kill-agent-after-install",
            Fault::KillAgentIn(Phase::Migrate) => "kill-agent-migrating",
            Fault::KillAgentIn(Phase::Validate) => "kill-agent-validating",
        }
    }
}

/// One round of a schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Round {
    /// Its position, from 0.
    pub index: usize,
    /// What to inject.
    pub fault: Fault,
    /// How long after the release starts.
    pub after: Duration,
    /// How long the fault lasts.
    pub hold: Duration,
    /// How the round's release must end.
    pub ending: Ending,
    /// The agent an agent fault hits (index into [`AGENTS`]).
    pub agent: usize,
}

/// How a round's release must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The next good version, which succeeds.
    Succeeds,
    /// The broken version, whose health check fails: the engine rolls it back.
    RollsBack,
    /// The next good version, which succeeds; then an operator rolls the whole release
    /// back (every service goes back, dependents first).
    RolledBackByOperator,
}

/// The schedule of `rounds` rounds drawn from `seed`: the same seed gives the same
/// schedule.
pub fn schedule(seed: u64, rounds: usize) -> Vec<Round> {
    schedule_of(seed, rounds, &Fault::ALL)
}

/// The schedule of `rounds` rounds drawn from `seed`, of faults among `faults` only.
pub fn schedule_of(seed: u64, rounds: usize, faults: &[Fault]) -> Vec<Round> {
    assert!(!faults.is_empty(), "a schedule needs faults to draw from");
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..rounds)
        .map(|index| Round {
            index,
            fault: faults[rng.usize(..faults.len())],
            after: Duration::from_millis(rng.u64(500..6_000)),
            hold: Duration::from_millis(rng.u64(2_000..10_000)),
            ending: match rng.u8(..4) {
                0 => Ending::RollsBack,
                1 => Ending::RolledBackByOperator,
                _ => Ending::Succeeds,
            },
            agent: rng.usize(..AGENTS.len()),
        })
        .collect()
}

/// The faults `FLOTILLA_CHAOS_FAULTS` names (comma-separated, as in reports), else
/// every fault.
pub fn faults_from_env() -> anyhow::Result<Vec<Fault>> {
    let Ok(names) = std::env::var("FLOTILLA_CHAOS_FAULTS") else { return Ok(Fault::ALL.to_vec()) };
    names
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|name| {
            Fault::ALL.into_iter().find(|f| f.name() == name).ok_or_else(|| {
                let known: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
                anyhow!("FLOTILLA_CHAOS_FAULTS: no fault {name:?}; the faults are {}", known.join(", "))
            })
        })
        .collect()
}

/// The seed of a run: `FLOTILLA_CHAOS_SEED`, else `default`.
pub fn seed_from_env(default: u64) -> u64 {
    std::env::var("FLOTILLA_CHAOS_SEED").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(default)
}

/// What one round did.
#[derive(Debug, Clone)]
pub struct RoundResult {
    /// The round.
    pub round: Round,
    /// The release it made.
    pub release_id: String,
    /// How the release ended (`RELEASE_STATE_...`).
    pub state: String,
    /// When the fault was injected (Unix ms).
    pub fault_unix_ms: i64,
    /// What the fault hit (a container).
    pub target: String,
}

/// The compose cluster under chaos, and what it has recorded.
#[derive(Debug)]
pub struct Chaos {
    /// The compose project.
    pub project: Project,
    seed: u64,
    sums: BTreeMap<&'static str, String>,
    /// The version every host runs now.
    current: &'static str,
    releases: Vec<String>,
    writes: Vec<Write>,
    /// The rounds run so far.
    pub results: Vec<RoundResult>,
    /// The agents' container ids (a container killed and started keeps its id).
    agent_containers: Vec<(&'static str, String)>,
}

fn now_unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Chaos {
    /// Starts the compose cluster (images built already) and installs the chaos app at
    /// 1.0.0 on every agent.
    pub fn start(seed: u64) -> anyhow::Result<Self> {
        let project = Project::new("flotilla-chaos");
        project.start();
        let mut sums = BTreeMap::new();
        for (file, version) in [("shop-v1.toml", "1.0.0"), ("shop-v2.toml", "2.0.0"), ("shop-bad.toml", BAD)] {
            let spec = std::fs::read_to_string(project.work.path().join(file)).context("a spec the setup wrote")?;
            let sum = spec
                .split("sha256 = \"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .ok_or_else(|| anyhow!("{file} names no sha256"))?;
            sums.insert(version, sum.to_owned());
        }
        let mut chaos = Self {
            project,
            seed,
            sums,
            current: GOOD[0],
            releases: Vec::new(),
            writes: Vec::new(),
            results: Vec::new(),
            agent_containers: Vec::new(),
        };
        chaos.agent_containers = chaos.project.containers(&AGENTS);
        let id = chaos.release("chaos-install", GOOD[0])?;
        let state = chaos.wait_finished(&id, RELEASE)?;
        if state != "RELEASE_STATE_SUCCEEDED" {
            bail!("installing 1.0.0 ended {state}\n{}", chaos.project.logs());
        }
        Ok(chaos)
    }

    /// The seed the run's schedule came from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The good version the hosts do not run now: what the next release installs.
    pub fn next_version(&self) -> &'static str {
        GOOD.into_iter().find(|v| *v != self.current).expect("two versions")
    }

    /// Records that every host runs `version` now (a release of it succeeded).
    pub fn installed(&mut self, version: &'static str) {
        self.current = version;
    }

    /// The chaos app's spec at `version`; with `marked`, `db`'s hooks mark their phase
    /// (`/tmp/NAME.HOOK`) and linger, so a fault can hit the agent in it (`db` is
    /// deployed first, whatever the round's ending).
    fn spec(&self, name: &str, version: &str, marked: bool) -> String {
        let mark = |hook: &str, then: &str| format!("touch /tmp/{name}.{hook}; sleep 3; {then}");
        let sum = &self.sums[version];
        let mut spec = format!(
            "# The chaos app: every dependency kind, two stages, a gated migration.\n\
             release = \"{name}\"\n\n[defaults]\ncanary = 1\nbatches = [\"100%\"]\nbake = \"1s\"\n\
             healthy_for = \"1s\"\nhealthy_deadline = \"20s\"\nprogress_deadline = \"4m\"\n\
             rollback_scope = \"cascade\"\non_failure = \"rollback\"\n\n\
             [[stage]]\nname = \"canary\"\nhosts = {{ cell = \"canary\" }}\n\n[[stage]]\nname = \"main\"\n\n\
             [[gate]]\nname = \"schema\"\nafter = [\"db\"]\nexec = {{ command = \"true\", on = {{ role = \"db\" }} }}\n"
        );
        let services = [
            (
                "db",
                "db",
                if marked {
                    format!(
                        "hooks = {{ migrate = \"{}\", migrate_down = \"echo migrating it back\", \
                         before_install = \"{}\", after_install = \"{}\", validate = \"{}\" }}",
                        mark("migrate", "echo migrating the schema"),
                        mark("before_install", "true"),
                        mark("after_install", "true"),
                        mark("validate", "true")
                    )
                } else {
                    String::from(
                        "hooks = { migrate = \"echo migrating the schema\", migrate_down = \"echo migrating it back\" }",
                    )
                },
            ),
            ("settings", "app", String::new()),
            (
                "api",
                "app",
                format!(
                    "depends_on = [{{ service = \"db\", kind = \"data\" }}, {{ service = \"settings\", kind = \"config\" }}]\n\
                     provides = {{ \"orders-api\" = \"{version}\" }}"
                ),
            ),
            (
                "web",
                "app",
                String::from(
                    "depends_on = [{ service = \"api\", kind = \"hard\" }]\nrequires = { \"orders-api\" = \">=1.0.0\" }",
                ),
            ),
            ("worker", "app", String::from("depends_on = [{ service = \"web\", kind = \"soft\" }]")),
        ];
        for (svc, role, extra) in services {
            spec.push_str(&format!(
                "\n[[service]]\nname = \"{svc}\"\nversion = \"{version}\"\nhosts = {{ role = \"{role}\" }}\n\
                 artifact = {{ url = \"http://artifacts:8080/sample-{version}.tar.gz\", sha256 = \"{sum}\" }}\n\
                 run = {{ command = \"bin/sample\", args = [\"--port\", \"0\"], stop_timeout = \"2s\" }}\n\
                 health = [{{ exec = \"bin/sample --check\", interval = \"200ms\", timeout = \"2s\" }}]\n{extra}\n"
            ));
        }
        spec
    }

    /// Submits the chaos app at `version` as release `name` (idempotency key `name`),
    /// retrying through faults until a coordinator acknowledges it; its id.
    pub fn release(&mut self, name: &str, version: &str) -> anyhow::Result<String> {
        self.release_marked(name, version, false)
    }

    /// [`Self::release`], with the phases of `db` marked when `marked`.
    fn release_marked(&mut self, name: &str, version: &str, marked: bool) -> anyhow::Result<String> {
        let file = format!("{name}.toml");
        std::fs::write(self.project.work.path().join(&file), self.spec(name, version, marked))
            .context("writing the spec")?;
        let deadline = Instant::now() + RELEASE;
        loop {
            let out = self.project.cli(&[
                "release",
                "start",
                &format!("/work/{file}"),
                "--idempotency-key",
                name,
                "--output",
                "json",
            ]);
            let created = out
                .status
                .success()
                .then(|| serde_json::from_slice::<v1::CreateResponse>(&out.stdout).ok())
                .flatten()
                .and_then(|r| r.release)
                .map(|r| r.id);
            if let Some(id) = created {
                self.writes.push(Write { method: CREATE_METHOD.into(), release_id: id.clone(), acknowledged: true });
                self.releases.push(id.clone());
                return Ok(id);
            }
            if Instant::now() > deadline {
                bail!("release {name} was never acknowledged: {}", text(&out));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The release's state once it has ended (`RELEASE_STATE_...`), asking until
    /// `within` (calls that fail during a fault are asked again).
    pub fn wait_finished(&self, id: &str, within: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + within;
        loop {
            let last = match self.project.cli_json(&["release", "show", id]) {
                Ok(v) => {
                    let state = v["release"]["state"].as_str().unwrap_or_default().to_owned();
                    let ended = ["SUCCEEDED", "FAILED", "ROLLED_BACK", "ABORTED"]
                        .iter()
                        .any(|s| state == format!("RELEASE_STATE_{s}"));
                    if ended {
                        return Ok(state);
                    }
                    format!("{state}: {}", v["release"]["reason"])
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                bail!("release {id} did not end within {within:?}; last: {last}\n{}", self.project.logs());
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Rolls the whole release back as an operator, retrying until acknowledged.
    fn operator_rollback(&mut self, id: &str) -> anyhow::Result<()> {
        self.operator(&["release", "rollback", id, "--reason", "chaos: an operator's rollback"])?;
        self.writes.push(Write {
            method: "flotilla.v1.Releases/Rollback".into(),
            release_id: id.to_owned(),
            acknowledged: true,
        });
        Ok(())
    }

    /// Runs `flotilla ARGS` as an operator would through a fault: again until it
    /// succeeds, for at most [`RELEASE`].
    fn operator(&self, args: &[&str]) -> anyhow::Result<()> {
        let deadline = Instant::now() + RELEASE;
        loop {
            let out = self.project.cli(args);
            if out.status.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("flotilla {} never succeeded: {}", args.join(" "), text(&out));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The current leader's container, asking until there is one (bounded).
    fn leader(&self) -> anyhow::Result<&'static str> {
        let deadline = Instant::now() + FORM;
        loop {
            match self.project.leader() {
                Ok((id, _)) => {
                    return COORDINATORS
                        .get(usize::try_from(id).unwrap_or(0).wrapping_sub(1))
                        .copied()
                        .ok_or_else(|| anyhow!("leader id {id} is no container"));
                }
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }

    /// Injects `fault` during release `name`, holds it `hold`, heals it; what it hit
    /// and when.
    pub fn inject(&self, fault: Fault, hold: Duration, agent: usize, name: &str) -> anyhow::Result<(String, i64)> {
        let p = &self.project;
        let leader = self.leader()?;
        let follower = COORDINATORS.iter().copied().find(|c| *c != leader).expect("three coordinators");
        let others = |me: &str| COORDINATORS.iter().copied().filter(|c| *c != me).collect::<Vec<_>>();
        let agent = AGENTS[agent];
        let at = now_unix_ms();
        let target = match fault {
            Fault::KillLeader | Fault::KillFollower | Fault::KillAgent => {
                let target = match fault {
                    Fault::KillLeader => leader,
                    Fault::KillFollower => follower,
                    _ => agent,
                };
                p.container_action("kill", target)?;
                std::thread::sleep(hold);
                p.container_action("start", target)?;
                target.to_owned()
            }
            Fault::PauseLeader => {
                p.container_action("pause", leader)?;
                std::thread::sleep(hold);
                p.container_action("unpause", leader)?;
                leader.to_owned()
            }
            Fault::IsolateLeader | Fault::IsolateFollower => {
                let target = if fault == Fault::IsolateLeader { leader } else { follower };
                p.cut(target, &others(target))?;
                std::thread::sleep(hold);
                p.heal(target)?;
                target.to_owned()
            }
            Fault::IsolateAgent => {
                p.cut(agent, &COORDINATORS)?;
                std::thread::sleep(hold);
                p.heal(agent)?;
                agent.to_owned()
            }
            Fault::RestartCoordinators => {
                for c in COORDINATORS {
                    p.container_action("kill", c)?;
                }
                std::thread::sleep(hold);
                for c in COORDINATORS {
                    p.container_action("start", c)?;
                }
                "every coordinator".to_owned()
            }
            Fault::KillAgentIn(phase) => {
                let hook = phase.hook();
                let (target, id) = self.wait_for_mark(&format!("/tmp/{name}.{hook}"))?;
                p.action_on("kill", &id)?;
                let at = now_unix_ms();
                std::thread::sleep(hold);
                p.action_on("start", &id)?;
                return Ok((target.to_owned(), at));
            }
            Fault::LoseFollowerData => {
                p.container_action("kill", follower)?;
                p.wipe_volume(follower, "/var/lib/flotilla/coordinator")?;
                std::thread::sleep(hold);
                p.container_action("start", follower)?;
                self.replace_lost(follower)?;
                follower.to_owned()
            }
        };
        Ok((target, at))
    }

    /// The first agent on which file `mark` appears (a phase's hook made it), and its
    /// container id.
    fn wait_for_mark(&self, mark: &str) -> anyhow::Result<(&'static str, String)> {
        let deadline = Instant::now() + RELEASE;
        loop {
            if let Some(agent) = Project::having_file(&self.agent_containers, mark).first() {
                let id = self.agent_containers.iter().find(|(a, _)| a == agent).map(|(_, id)| id.clone());
                return Ok((agent, id.unwrap_or_default()));
            }
            if Instant::now() > deadline {
                bail!("no agent entered the phase that makes {mark}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Brings `coordinator`, started again with an empty data directory, back as an
    /// operator would: it must say it lost its data (and take no part in Raft), then it
    /// is removed, waits to be added, and is added again as a new member.
    fn replace_lost(&self, coordinator: &str) -> anyhow::Result<()> {
        let p = &self.project;
        let id = COORDINATORS.iter().position(|c| *c == coordinator).map(|i| i + 1).expect("a coordinator");
        let says = |what: &str| {
            let deadline = Instant::now() + FORM;
            while !p.log_of(coordinator).contains(what) {
                if Instant::now() > deadline {
                    bail!("{coordinator} never logged {what:?}:\n{}", p.log_of(coordinator));
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            Ok(())
        };
        says("its data directory was lost or wiped")?;
        self.operator(&["cluster", "remove", &id.to_string()])?;
        says("waiting to be added")?;
        self.operator(&["cluster", "add", &format!("{id}={coordinator}:7600")])
    }

    /// Runs one round: a release, its fault, and the wait for its end as the spec says.
    pub fn run_round(&mut self, round: &Round) -> anyhow::Result<RoundResult> {
        let version = if round.ending == Ending::RollsBack { BAD } else { self.next_version() };
        let name = format!("chaos-{}-{}", self.seed, round.index);
        let marked = matches!(round.fault, Fault::KillAgentIn(_));
        let id = self.release_marked(&name, version, marked)?;
        if !marked {
            std::thread::sleep(round.after);
        }
        let (target, fault_unix_ms) = self.inject(round.fault, round.hold, round.agent, &name)?;
        let state = self.wait_finished(&id, RELEASE)?;
        let expected =
            if round.ending == Ending::RollsBack { "RELEASE_STATE_ROLLED_BACK" } else { "RELEASE_STATE_SUCCEEDED" };
        let mut ending = round.ending;
        if state != expected {
            let shown = text(&self.project.cli(&["release", "show", &id]));
            // A host that is offline when its batch starts counts as failed: an agent the
            // fault took down at that moment fails its batch, and the release rolls back
            // as its spec says for a failed host.
            let offline = format!("host {target} was offline when its batch started");
            if round.fault.downs_an_agent() && state == "RELEASE_STATE_ROLLED_BACK" && shown.contains(&offline) {
                ending = Ending::RollsBack;
            } else {
                bail!(
                    "round {} ({}, {target}): release {id} of {version} ended {state}, not {expected}\n{shown}\n{}",
                    round.index,
                    round.fault.name(),
                    self.project.logs()
                );
            }
        }
        let state = match ending {
            Ending::Succeeds => {
                self.installed(version);
                state
            }
            Ending::RollsBack => state,
            Ending::RolledBackByOperator => {
                self.operator_rollback(&id)?;
                let state = self.wait_finished(&id, RELEASE)?;
                if state != "RELEASE_STATE_ROLLED_BACK" {
                    bail!(
                        "round {}: the operator's rollback of {id} ended {state}\n{}",
                        round.index,
                        self.project.logs()
                    );
                }
                state
            }
        };
        // The next round starts from a whole cluster.
        self.project.wait_cluster(FORM);
        self.project.wait_json(&["agents", "--output", "json"], FORM, "four agents online", all_online);
        let result =
            RoundResult { round: Round { ending, ..round.clone() }, release_id: id, state, fault_unix_ms, target };
        self.results.push(result.clone());
        Ok(result)
    }

    /// Everything the checker reads, gathered from the cluster and the agents now.
    pub fn history(&self) -> anyhow::Result<History> {
        let mut releases = Vec::new();
        let mut events = BTreeMap::new();
        for id in &self.releases {
            let got: v1::GetResponse = serde_json::from_value(self.project.cli_json(&["release", "show", id])?)
                .with_context(|| format!("release {id}"))?;
            releases.push(got.release.ok_or_else(|| anyhow!("release {id} came back empty"))?);
            let out = self.project.cli(&["release", "watch", id, "--output", "json"]);
            // Exit 3: the release ended without succeeding (its events are printed all the same).
            if !matches!(out.status.code(), Some(0 | 3)) {
                bail!("release watch {id}: {}", text(&out));
            }
            let list = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(serde_json::from_str::<v1::ReleaseEvent>)
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("the events of {id}"))?;
            events.insert(id.clone(), list);
        }
        let agents: v1::ListAgentsResponse = serde_json::from_value(self.project.cli_json(&["agents"])?)?;
        let mut hosts = Vec::new();
        for agent in AGENTS {
            let mut history = Vec::new();
            for file in HISTORY_FILES {
                let Some(body) = self.project.read_file(agent, file)? else { continue };
                // A line without its newline was cut by a crash during its append.
                let whole = body.rfind('\n').map_or("", |end| &body[..end]);
                for (n, line) in whole.lines().enumerate() {
                    let record: HostHistoryRecord =
                        serde_json::from_str(line).with_context(|| format!("{agent}:{file}:{}", n + 1))?;
                    history.push(record);
                }
            }
            let services =
                agents.hosts.iter().find(|h| h.host_id == agent).map(|h| h.services.clone()).unwrap_or_default();
            hosts.push(HostRecord { host: agent.to_owned(), history, services });
        }
        Ok(History {
            format: HISTORY_FORMAT,
            seed: Some(self.seed),
            releases,
            events,
            hosts,
            writes: self.writes.clone(),
        })
    }

    /// Where this run's history, report and logs are written.
    pub fn out_dir(&self) -> PathBuf {
        crate::compose::repo().join(format!("target/chaos/seed-{}", self.seed))
    }

    /// Writes every container's log under [`Self::out_dir`]; the directory.
    pub fn save_logs(&self) -> PathBuf {
        let dir = self.out_dir().join("logs");
        if let Err(e) = self.project.save_logs(&dir) {
            return PathBuf::from(format!("(logs not saved: {e})"));
        }
        dir
    }

    /// Checks the history; writes it and the report to
    /// `target/chaos/seed-SEED/{history.json,report.txt}` and returns the report.
    pub fn check(&self) -> anyhow::Result<(Report, History, PathBuf)> {
        let history = self.history()?;
        let report = flotilla_check::check(&history, &Options::default());
        let dir = self.out_dir();
        std::fs::create_dir_all(&dir)?;
        self.save_logs();
        std::fs::write(dir.join("history.json"), serde_json::to_vec_pretty(&history)?)?;
        let by_fault = by_fault(&self.results, &history);
        std::fs::write(dir.join("report.txt"), format!("{report}\n{}\n{by_fault}", self.summary(Some(&history))))?;
        Ok((report, history, dir))
    }

    /// Per round: the fault, its target, the outcome, and (from `history`) the time from
    /// the fault to the next step any agent began.
    pub fn summary(&self, history: Option<&History>) -> String {
        let mut out = format!("seed {} ({} rounds)\n", self.seed, self.results.len());
        for r in &self.results {
            out.push_str(&round_line(r, history));
        }
        out
    }
}

/// One round's line of a summary.
pub fn round_line(r: &RoundResult, history: Option<&History>) -> String {
    let next = history.and_then(|h| next_step_after(h, r.fault_unix_ms));
    format!(
        "round {:>3}  {:<26} {:<14} hold {:>5} ms  {:<26} next step after the fault: {}\n",
        r.round.index,
        r.round.fault.name(),
        r.target,
        r.round.hold.as_millis(),
        r.state,
        next.map_or_else(
            || if history.is_some() { "none".to_owned() } else { "-".to_owned() },
            |ms| format!("{ms} ms")
        ),
    )
}

/// Per fault kind: rounds, and the milliseconds from the fault to the next step an
/// agent began (median and 99th percentile over the rounds that had one).
pub fn by_fault(results: &[RoundResult], history: &History) -> String {
    let mut out = String::from(
        "fault                      rounds  next step after the fault: p50      p99     (rounds with one)\n",
    );
    for fault in Fault::ALL {
        let of: Vec<&RoundResult> = results.iter().filter(|r| r.round.fault == fault).collect();
        if of.is_empty() {
            continue;
        }
        let mut next: Vec<i64> = of.iter().filter_map(|r| next_step_after(history, r.fault_unix_ms)).collect();
        next.sort_unstable();
        let pick = |q: f64| {
            if next.is_empty() {
                return "-".to_owned();
            }
            // Nearest rank.
            let rank = ((q * next.len() as f64).ceil() as usize).clamp(1, next.len());
            format!("{} ms", next[rank - 1])
        };
        out.push_str(&format!(
            "{:<26} {:>6}  {:>34} {:>8}     ({})\n",
            fault.name(),
            of.len(),
            pick(0.5),
            pick(0.99),
            next.len()
        ));
    }
    out
}

/// Milliseconds from `at` to the first step any agent began after it.
pub fn next_step_after(history: &History, at: i64) -> Option<i64> {
    history
        .hosts
        .iter()
        .flat_map(|h| &h.history)
        .filter(|r| matches!(r.entry, HostHistoryEntry::Started { .. }) && r.at_unix_ms > at)
        .map(|r| r.at_unix_ms - at)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_schedule_and_another_seed_another() {
        assert_eq!(schedule(7, 20), schedule(7, 20));
        assert_ne!(schedule(7, 20), schedule(8, 20));
        let all: std::collections::BTreeSet<Fault> = schedule(7, 200).iter().map(|r| r.fault).collect();
        assert_eq!(all.len(), Fault::ALL.len(), "every fault is drawn");
        let names: std::collections::BTreeSet<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
        assert_eq!(names.len(), Fault::ALL.len(), "each fault has a name of its own (FLOTILLA_CHAOS_FAULTS)");
        let phases = [Fault::KillAgentIn(Phase::Migrate), Fault::LoseFollowerData];
        assert!(schedule_of(7, 50, &phases).iter().all(|r| phases.contains(&r.fault)), "only the faults asked for");
    }
}
