//! Builders for specs and fleets in code, for tests and benchmarks across the workspace.
//!
//! Specs built here skip TOML entirely; their values are valid but their spans are empty.

use std::collections::BTreeMap;
use std::time::Duration;

use semver::{Version, VersionReq};

use crate::inventory::{Fleet, Host, Installed};
use crate::model::{DepKind, HostId, LabelSelector, RollbackScope, ServiceName};
use crate::spec::{
    ApprovalRule, Artifact, Dependency, GateExec, GateSpec, Hooks, ReleaseSpec, Requirement, RolloutPolicy, RunSpec,
    ServiceSpec, Span, StageSpec,
};

/// A release named `name` with one catch-all stage and no services.
pub fn release(name: &str) -> ReleaseSpec {
    ReleaseSpec {
        release: name.to_owned(),
        changed_unix_ms: None,
        stages: vec![StageSpec {
            name: "all".to_owned(),
            hosts: None,
            approval: false,
            approval_by: ApprovalRule::default(),
            span: Span::default(),
        }],
        services: Vec::new(),
        gates: Vec::new(),
    }
}

/// A service at `version` on every host, with default policy and no dependencies.
pub fn service(name: &str, version: &str) -> ServiceSpec {
    ServiceSpec {
        name: ServiceName::from(name),
        version: Version::parse(version).expect("fixture versions are valid"),
        hosts: LabelSelector::all(),
        artifact: Artifact { url: format!("file:///artifacts/{name}-{version}.tar.gz"), sha256: "0".repeat(64) },
        run: RunSpec {
            command: format!("bin/{name}"),
            args: Vec::new(),
            env: BTreeMap::new(),
            stop_timeout: Duration::from_secs(10),
        },
        hooks: Hooks::default(),
        health: Vec::new(),
        provides: BTreeMap::new(),
        requires: BTreeMap::new(),
        depends_on: Vec::new(),
        policy: RolloutPolicy::default(),
        span: Span::default(),
    }
}

impl ServiceSpec {
    /// Adds a `depends_on` entry (fixture builder).
    pub fn depends(mut self, on: &str, kind: DepKind) -> Self {
        self.depends_on.push(Dependency { service: ServiceName::from(on), kind, span: Span::default() });
        self
    }

    /// Adds a contract this version provides (fixture builder).
    pub fn provides(mut self, contract: &str, version: &str) -> Self {
        self.provides.insert(contract.to_owned(), Version::parse(version).expect("valid fixture version"));
        self
    }

    /// Adds a contract this version requires (fixture builder).
    pub fn requires(mut self, contract: &str, range: &str) -> Self {
        let range = VersionReq::parse(range).expect("valid fixture range");
        self.requires.insert(contract.to_owned(), Requirement { range, span: Span::default() });
        self
    }

    /// Sets the rollback scope (fixture builder).
    pub fn scope(mut self, scope: RollbackScope) -> Self {
        self.policy.rollback_scope = scope;
        self
    }

    /// Sets the host selector to one label (fixture builder).
    pub fn on(mut self, key: &str, value: &str) -> Self {
        self.hosts.0.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Sets `migrate` and optionally `migrate_down` hooks (fixture builder).
    pub fn migrations(mut self, down: bool) -> Self {
        self.hooks.migrate = Some("bin/migrate up".to_owned());
        self.hooks.migrate_down = down.then(|| "bin/migrate down".to_owned());
        self
    }
}

impl ReleaseSpec {
    /// Adds a service (fixture builder).
    pub fn with(mut self, service: ServiceSpec) -> Self {
        self.services.push(service);
        self
    }

    /// Adds a gate after `after` running `command` on any host (fixture builder).
    pub fn gate(mut self, name: &str, after: &[&str]) -> Self {
        self.gates.push(GateSpec {
            name: name.to_owned(),
            after: after.iter().map(|&s| ServiceName::from(s)).collect(),
            exec: Some(GateExec {
                command: "scripts/smoke.sh".to_owned(),
                on: LabelSelector::all(),
                timeout: Duration::from_secs(120),
            }),
            approval: false,
            approval_by: ApprovalRule::default(),
            span: Span::default(),
        });
        self
    }

    /// Replaces the stages with selector stages on one label key, then a catch-all
    /// (fixture builder): `stages("cell", &["canary"])` gives `canary` then `rest`.
    pub fn stages(mut self, key: &str, values: &[&str]) -> Self {
        self.stages = values
            .iter()
            .map(|v| StageSpec {
                name: (*v).to_owned(),
                hosts: Some(LabelSelector([(key.to_owned(), (*v).to_owned())].into())),
                approval: false,
                approval_by: ApprovalRule::default(),
                span: Span::default(),
            })
            .chain(std::iter::once(StageSpec {
                name: "rest".to_owned(),
                hosts: None,
                approval: false,
                approval_by: ApprovalRule::default(),
                span: Span::default(),
            }))
            .collect();
        self
    }
}

/// A host with labels (`&[("role", "web")]`) and installed services (`&[("web", "1.0.0")]`).
pub fn host(id: &str, labels: &[(&str, &str)], services: &[(&str, &str)]) -> Host {
    Host {
        id: HostId::from(id),
        labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        services: services
            .iter()
            .map(|(s, v)| {
                (ServiceName::from(*s), Installed::Version(Version::parse(v).expect("valid fixture version")))
            })
            .collect(),
    }
}

/// A fleet of these hosts.
pub fn fleet(hosts: Vec<Host>) -> Fleet {
    Fleet { hosts }
}

/// A deterministic xorshift64 generator, so every run of a test or benchmark draws the
/// same values from the same seed (not for anything that needs real randomness).
#[derive(Debug, Clone)]
pub struct XorShift(pub u64);

impl XorShift {
    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `0..n` (`n` at least 1; slightly biased for huge `n`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `(0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}
