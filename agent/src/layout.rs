//! The agent's data directory and the small state files in it, all written durably
//! (write a temporary file, fsync, rename over the target, fsync the directory).
//!
//! ```text
//! <data>/journal/<command>.json                step journal (see `journal`)
//! <data>/journal/term.json                     highest leader term seen
//! <data>/journal/history.jsonl                 execution history (see `history`)
//! <data>/journal/history.1.jsonl               the previous one, once it was full
//! <data>/checks/                               output of gate checks
//! <data>/services/<svc>/releases/<version>/    unpacked artifacts
//! <data>/services/<svc>/current -> releases/<version>   the active version
//! <data>/services/<svc>/logs/<version>.log     process and hook output per version
//! <data>/services/<svc>/deploys/<version>.json how each installed version runs
//! <data>/services/<svc>/service.json           activation history, desired state
//! <data>/services/<svc>/process.json           the supervised process (pid, start time)
//! <data>/services/<svc>/tmp/                   downloads and unpacking in progress
//! ```

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Format version of every JSON state file the agent writes.
pub const STATE_FORMAT: u32 = 1;

/// Paths inside the agent's data directory.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout rooted at `data_dir` (nothing is created).
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self { root: data_dir.into() }
    }

    /// Creates the top-level directories.
    pub fn create(&self) -> io::Result<()> {
        fs::create_dir_all(self.journal_dir())?;
        fs::create_dir_all(self.services_dir())?;
        fs::create_dir_all(self.checks_dir())
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<data>/journal`.
    pub fn journal_dir(&self) -> PathBuf {
        self.root.join("journal")
    }

    /// `<data>/checks`: output of gate checks.
    pub fn checks_dir(&self) -> PathBuf {
        self.root.join("checks")
    }

    /// `<data>/services`.
    pub fn services_dir(&self) -> PathBuf {
        self.root.join("services")
    }

    /// `<data>/services/<svc>`.
    pub fn service_dir(&self, service: &str) -> PathBuf {
        self.services_dir().join(service)
    }

    /// `<data>/services/<svc>/releases`.
    pub fn releases_dir(&self, service: &str) -> PathBuf {
        self.service_dir(service).join("releases")
    }

    /// `<data>/services/<svc>/releases/<version>`.
    pub fn release_dir(&self, service: &str, version: &str) -> PathBuf {
        self.releases_dir(service).join(version)
    }

    /// `<data>/services/<svc>/current` (a symlink to `releases/<version>`).
    pub fn current_link(&self, service: &str) -> PathBuf {
        self.service_dir(service).join("current")
    }

    /// `<data>/services/<svc>/logs/<version>.log`.
    pub fn log_file(&self, service: &str, version: &str) -> PathBuf {
        self.service_dir(service).join("logs").join(format!("{version}.log"))
    }

    /// `<data>/services/<svc>/deploys/<version>.json`.
    pub fn deploy_record(&self, service: &str, version: &str) -> PathBuf {
        self.service_dir(service).join("deploys").join(format!("{version}.json"))
    }

    /// `<data>/services/<svc>/service.json`.
    pub fn service_state(&self, service: &str) -> PathBuf {
        self.service_dir(service).join("service.json")
    }

    /// `<data>/services/<svc>/process.json`.
    pub fn process_file(&self, service: &str) -> PathBuf {
        self.service_dir(service).join("process.json")
    }

    /// `<data>/services/<svc>/tmp`.
    pub fn tmp_dir(&self, service: &str) -> PathBuf {
        self.service_dir(service).join("tmp")
    }

    /// Every service with a directory, sorted.
    pub fn services(&self) -> io::Result<Vec<String>> {
        list_names(&self.services_dir())
    }

    /// Every unpacked version of `service`, sorted by name.
    pub fn installed_versions(&self, service: &str) -> io::Result<Vec<String>> {
        list_names(&self.releases_dir(service))
    }

    /// The version the `current` symlink points at, if any.
    pub fn current_version(&self, service: &str) -> io::Result<Option<String>> {
        match fs::read_link(self.current_link(service)) {
            Ok(target) => Ok(target.file_name().and_then(|n| n.to_str()).map(str::to_owned)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Points `current` at `releases/<version>` atomically: a symlink under a temporary
    /// name is renamed over `current`, then the directory is synced.
    pub fn switch_current(&self, service: &str, version: &str) -> io::Result<()> {
        let dir = self.service_dir(service);
        let tmp = dir.join(format!(".current.{}.tmp", std::process::id()));
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(Path::new("releases").join(version), &tmp)?;
        fs::rename(&tmp, self.current_link(service))?;
        sync_dir(&dir)
    }

    /// Removes the `current` symlink (no version is active).
    pub fn clear_current(&self, service: &str) -> io::Result<()> {
        match fs::remove_file(self.current_link(service)) {
            Ok(()) => sync_dir(&self.service_dir(service)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Whether `name` is usable as one path component for a service name or version:
/// `[A-Za-z0-9][A-Za-z0-9._+-]*`, at most 128 bytes.
pub fn valid_component(name: &str) -> bool {
    name.len() <= 128
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'))
}

/// Writes `value` as JSON to `path` durably: temporary file, fsync, rename, fsync dir.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    write_atomic(path, &bytes)
}

/// Writes `bytes` to `path` durably: temporary file, fsync, rename, fsync dir.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().ok_or_else(|| io::Error::other(format!("{} has no parent", path.display())))?;
    fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    // Unique per write, so that concurrent writers never share a temporary file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
    {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// Reads a JSON file; `Ok(None)` when it does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes a file; a missing file is fine.
pub fn remove_file_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// fsyncs a directory, so that renames and creations in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The wall clock in milliseconds since the Unix epoch (for reports only).
pub fn now_unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn list_names(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    match fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry?;
                if let Some(name) = entry.file_name().to_str()
                    && valid_component(name)
                    && entry.file_type()?.is_dir()
                {
                    names.push(name.to_owned());
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_switches_atomically_and_reads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(dir.path());
        fs::create_dir_all(layout.release_dir("web", "1.0.0")).expect("mkdir");
        fs::create_dir_all(layout.release_dir("web", "1.1.0")).expect("mkdir");
        assert_eq!(layout.current_version("web").expect("read"), None);
        layout.switch_current("web", "1.0.0").expect("switch");
        assert_eq!(layout.current_version("web").expect("read").as_deref(), Some("1.0.0"));
        layout.switch_current("web", "1.1.0").expect("switch");
        assert_eq!(layout.current_version("web").expect("read").as_deref(), Some("1.1.0"));
        assert!(layout.current_link("web").join("..").exists());
        assert_eq!(layout.installed_versions("web").expect("list"), vec!["1.0.0", "1.1.0"]);
        layout.clear_current("web").expect("clear");
        assert_eq!(layout.current_version("web").expect("read"), None);
    }

    #[test]
    fn components_are_checked() {
        for ok in ["web", "1.2.3", "1.2.3-rc.1+build", "a_b"] {
            assert!(valid_component(ok), "{ok}");
        }
        for bad in ["", ".", "..", "../x", "a/b", ".hidden", "-x", "a b"] {
            assert!(!valid_component(bad), "{bad}");
        }
    }
}
