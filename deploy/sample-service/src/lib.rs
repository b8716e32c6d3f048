//! The Flotilla sample service: a tiny HTTP server whose behaviour per version is set
//! by a `behaviour.toml` shipped in its artifact ([`Behaviour`]), and [`package`],
//! which turns the server binary and a behaviour into a real `.tar.gz` artifact with
//! its sha256, as the agent's tests and the demo deploy it.
//!
//! Artifact layout: `bin/sample` (the server, mode 0755) and `behaviour.toml`; run it
//! as `bin/sample --port N` (or with `PORT` in the environment) from the release dir.
//!
//! For canary analysis the server exposes Prometheus metrics at `/metrics` ([`metrics`])
//! and sends itself steady traffic, so a version can fail by its metrics while its
//! health check stays green: [`Behaviour::with_errors`] (a share of requests answered
//! 500) and [`Behaviour::slow`] (extra latency) build such versions.

pub mod behaviour;
pub mod metrics;
pub mod prometheus;

use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;

pub use behaviour::{
    Behaviour, DEFAULT_LATENCY_MS, DEFAULT_TRAFFIC_RPS, Outcome, Outcomes, parse_ratio, version_matches,
};
use sha2::{Digest as _, Sha256};

/// The sample app that `flotilla demo` and the release tests deploy, every service of it
/// played by this server: service name, the role of its hosts, and extra spec lines
/// (`{V}` is the major version). `db` migrates (data dependency of `ledger`), `auth`
/// provides a contract `payments` requires, `payments` hard-depends on `ledger`, `web`
/// config-depends on `payments` and soft-depends on `search`.
pub const APP: &[(&str, &str, &str)] = &[
    ("db", "db", r#"hooks = { migrate = "echo migrating schema to v{V}", migrate_down = "echo reverting schema" }"#),
    ("auth", "api", r#"provides = { "auth-api" = "{V}.0.0" }"#),
    ("ledger", "api", r#"depends_on = [{ service = "db", kind = "data" }]"#),
    (
        "payments",
        "api",
        r#"depends_on = [{ service = "ledger", kind = "hard" }]
requires = { "auth-api" = "^{V}" }"#,
    ),
    ("search", "web", ""),
    (
        "web",
        "web",
        r#"depends_on = [{ service = "payments", kind = "config" }, { service = "search", kind = "soft" }]"#,
    ),
];

/// A packaged artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// The `.tar.gz` file.
    pub path: PathBuf,
    /// Its sha256, 64 lowercase hex digits.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

impl Package {
    /// The artifact's `file://` URL.
    pub fn file_url(&self) -> String {
        format!("file://{}", self.path.display())
    }
}

/// One extra file to put into an artifact.
#[derive(Debug, Clone)]
pub struct ExtraFile {
    /// Its path inside the archive (relative).
    pub path: String,
    /// Its content.
    pub content: Vec<u8>,
    /// Its Unix mode (e.g. `0o755` for a script).
    pub mode: u32,
}

/// Packages the sample server `binary` as `bin/sample` plus `behaviour.toml` into
/// `<dir>/sample-<version>.tar.gz`; returns its path and sha256.
pub fn package(dir: &Path, binary: &Path, version: &str, behaviour: &Behaviour) -> io::Result<Package> {
    package_with(dir, binary, version, behaviour, &[])
}

/// As [`package`], with extra files (scripts for hooks, padding for size benchmarks).
pub fn package_with(
    dir: &Path,
    binary: &Path,
    version: &str,
    behaviour: &Behaviour,
    extra: &[ExtraFile],
) -> io::Result<Package> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("sample-{version}.tar.gz"));
    let file = File::create(&path)?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let mut bin = Vec::new();
    File::open(binary)
        .map_err(|e| io::Error::new(e.kind(), format!("sample binary {}: {e}", binary.display())))?
        .read_to_end(&mut bin)?;
    append(&mut tar, "bin/sample", &bin, 0o755)?;
    append(&mut tar, "behaviour.toml", behaviour.to_toml().as_bytes(), 0o644)?;
    for file in extra {
        append(&mut tar, &file.path, &file.content, file.mode)?;
    }
    let mut gz = tar.into_inner()?;
    gz.flush()?;
    gz.finish()?.sync_all()?;
    let (sha256, size) = sha256_file(&path)?;
    Ok(Package { path, sha256, size })
}

fn append<W: io::Write>(tar: &mut tar::Builder<W>, path: &str, content: &[u8], mode: u32) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(mode);
    header.set_mtime(1_700_000_000);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, path, content)
}

/// The sha256 (lowercase hex) and size of a file.
pub fn sha256_file(path: &Path) -> io::Result<(String, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((hasher.finalize().iter().map(|b| format!("{b:02x}")).collect(), size))
}

/// The sample server binary for tests of other crates (Cargo only exposes a binary's
/// path to its own package's tests): `$FLOTILLA_SAMPLE_BIN` when set, else this
/// crate's `src/main.rs` compiled with `rustc -O` (std-only, a few seconds) into
/// `scratch_dir`, reused while newer than its sources.
pub fn build_binary(scratch_dir: &Path) -> io::Result<PathBuf> {
    if let Some(path) = std::env::var_os("FLOTILLA_SAMPLE_BIN") {
        return Ok(PathBuf::from(path));
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let out = scratch_dir.join("flotilla-sample-service");
    let newest_source = ["main.rs", "behaviour.rs", "metrics.rs"]
        .iter()
        .filter_map(|f| std::fs::metadata(src.join(f)).and_then(|m| m.modified()).ok())
        .max();
    let built = std::fs::metadata(&out).and_then(|m| m.modified()).ok();
    if let (Some(built), Some(newest)) = (built, newest_source)
        && built >= newest
    {
        return Ok(out);
    }
    std::fs::create_dir_all(scratch_dir)?;
    // Build under a unique name and rename, so that concurrent test binaries never run
    // a half-written file.
    let tmp = scratch_dir.join(format!("flotilla-sample-service.{}.tmp", std::process::id()));
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(rustc)
        .args(["--edition", "2024", "-O", "--crate-name", "flotilla_sample_service", "-o"])
        .arg(&tmp)
        .arg(src.join("main.rs"))
        .output()?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "rustc failed to build the sample service: {}",
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    std::fs::rename(&tmp, &out)?;
    Ok(out)
}
