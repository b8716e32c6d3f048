//! Artifacts: fetching (`http://`, `https://`, `file://`) with a size limit and a
//! timeout, sha256 verification BEFORE anything is unpacked, and safe unpacking of tar
//! and tar.gz archives (gzip detected by its magic bytes) into a temporary directory
//! that is renamed into `releases/<version>` only when every entry was accepted.
//!
//! Unpacking refuses, naming the entry: absolute paths, `..` components, symlinks whose
//! target is absolute or leaves the release directory (checked lexically per entry and
//! again on the unpacked tree, so chains of links cannot escape either), hard links to
//! anything outside it, device and fifo entries, and more unpacked bytes than allowed.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek as _, SeekFrom, Write as _};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

use crate::layout::sync_dir;

/// Default of [`ArtifactLimits::max_bytes`]: 1 GiB (config `max_artifact_bytes`).
pub const DEFAULT_MAX_ARTIFACT_BYTES: u64 = crate::config::DEFAULT_MAX_ARTIFACT_BYTES;

/// Default of [`ArtifactLimits::timeout`]: 10 minutes (config `fetch_timeout_ms`).
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_millis(crate::config::DEFAULT_FETCH_TIMEOUT_MS);

/// Limits applied to every artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArtifactLimits {
    /// Largest artifact (compressed) accepted.
    pub max_bytes: u64,
    /// Largest total size of the unpacked files (a gzip bomb guard).
    pub max_unpacked_bytes: u64,
    /// The whole download must finish within this.
    pub timeout: Duration,
}

impl Default for ArtifactLimits {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_ARTIFACT_BYTES,
            max_unpacked_bytes: 4 * DEFAULT_MAX_ARTIFACT_BYTES,
            timeout: DEFAULT_FETCH_TIMEOUT,
        }
    }
}

/// Why an artifact could not be fetched, verified or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// Not an `http://`, `https://` or `file://` URL.
    #[error("artifact URL {url} is not supported: use http://, https:// or file://")]
    UnsupportedUrl {
        /// The URL.
        url: String,
    },
    /// The download failed (connection, HTTP status, broken body, missing file).
    #[error("fetching {url}: {reason}")]
    Fetch {
        /// The URL.
        url: String,
        /// Why, with the underlying causes.
        reason: String,
    },
    /// The download did not finish in time.
    #[error("fetching {url}: timed out after {}", crate::health::fmt_duration(*after))]
    Timeout {
        /// The URL.
        url: String,
        /// The timeout.
        after: Duration,
    },
    /// Larger than the limit.
    #[error("fetching {url}: artifact is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The limit.
        limit: u64,
    },
    /// The download ended before the announced length.
    #[error("fetching {url}: download truncated: got {got} of {expected} bytes")]
    Truncated {
        /// The URL.
        url: String,
        /// Bytes received.
        got: u64,
        /// Bytes announced (`Content-Length`).
        expected: u64,
    },
    /// The expected sha256 is not 64 hex digits.
    #[error("artifact sha256 `{0}` is not 64 hex digits")]
    BadSha256(String),
    /// The sha256 does not match.
    #[error("sha256 mismatch for {url}: expected {expected}, got {actual} ({size} bytes)")]
    Checksum {
        /// The URL.
        url: String,
        /// The sha256 the step asked for.
        expected: String,
        /// The sha256 of what was downloaded.
        actual: String,
        /// Its size.
        size: u64,
    },
    /// An entry that would leave the release directory, or an unsupported entry.
    #[error("archive entry {entry:?}: {reason}")]
    UnsafeEntry {
        /// The entry's path as stored in the archive.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The archive could not be read.
    #[error("unpacking the archive: {0}")]
    Unpack(String),
    /// Local I/O failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
}

impl ArtifactError {
    fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}

/// A downloaded artifact (not yet verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The local copy.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its sha256, lowercase hex, computed while it was written.
    pub sha256: String,
}

/// Downloads `url` into the file `dest` (created or truncated), within `limits`, and
/// computes its sha256 on the way. `file://` URLs are copied, so that what is verified
/// is exactly what is unpacked.
pub async fn fetch(
    client: &reqwest::Client,
    url: &str,
    dest: &Path,
    limits: &ArtifactLimits,
) -> Result<Fetched, ArtifactError> {
    let work = async {
        if let Some(path) = file_url_path(url)? {
            let (path, dest, limits, owned_url) = (path, dest.to_owned(), *limits, url.to_owned());
            tokio::task::spawn_blocking(move || copy_file(&owned_url, &path, &dest, &limits))
                .await
                .map_err(|e| ArtifactError::Fetch { url: url.to_owned(), reason: format!("copy task failed: {e}") })?
        } else if url.starts_with("http://") || url.starts_with("https://") {
            download(client, url, dest, limits).await
        } else {
            Err(ArtifactError::UnsupportedUrl { url: url.to_owned() })
        }
    };
    match tokio::time::timeout(limits.timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(ArtifactError::Timeout { url: url.to_owned(), after: limits.timeout }),
    }
}

/// Checks a fetched artifact against the sha256 the step asked for.
pub fn verify(url: &str, fetched: &Fetched, expected: &str) -> Result<(), ArtifactError> {
    let expected_lc = expected.to_ascii_lowercase();
    if expected_lc.len() != 64 || !expected_lc.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ArtifactError::BadSha256(expected.to_owned()));
    }
    if fetched.sha256 != expected_lc {
        return Err(ArtifactError::Checksum {
            url: url.to_owned(),
            expected: expected_lc,
            actual: fetched.sha256.clone(),
            size: fetched.size,
        });
    }
    Ok(())
}

/// The path of a `file://` URL; `Ok(None)` for other schemes.
fn file_url_path(url: &str) -> Result<Option<PathBuf>, ArtifactError> {
    let Some(rest) = url.strip_prefix("file://") else { return Ok(None) };
    let path = rest.strip_prefix("localhost").unwrap_or(rest);
    if !path.starts_with('/') {
        return Err(ArtifactError::Fetch {
            url: url.to_owned(),
            reason: "a file:// URL needs an absolute path (file:///path/to/artifact.tar.gz)".to_owned(),
        });
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) =
                (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    Ok(Some(PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))))
}

fn copy_file(url: &str, src: &Path, dest: &Path, limits: &ArtifactLimits) -> Result<Fetched, ArtifactError> {
    let fetch_err = |e: io::Error| ArtifactError::Fetch { url: url.to_owned(), reason: e.to_string() };
    let mut input = File::open(src).map_err(fetch_err)?;
    let len = input.metadata().map_err(fetch_err)?.len();
    if len > limits.max_bytes {
        return Err(ArtifactError::TooLarge { url: url.to_owned(), limit: limits.max_bytes });
    }
    let mut output = File::create(dest).map_err(ArtifactError::io(format!("creating {}", dest.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = input.read(&mut buf).map_err(fetch_err)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        if size > limits.max_bytes {
            return Err(ArtifactError::TooLarge { url: url.to_owned(), limit: limits.max_bytes });
        }
        hasher.update(&buf[..n]);
        output.write_all(&buf[..n]).map_err(ArtifactError::io(format!("writing {}", dest.display())))?;
    }
    output.sync_all().map_err(ArtifactError::io(format!("syncing {}", dest.display())))?;
    Ok(Fetched { path: dest.to_owned(), size, sha256: hex(&hasher.finalize()) })
}

async fn download(
    client: &reqwest::Client,
    url: &str,
    dest: &Path,
    limits: &ArtifactLimits,
) -> Result<Fetched, ArtifactError> {
    let fetch_err = |reason: String| ArtifactError::Fetch { url: url.to_owned(), reason };
    let mut response = client.get(url).send().await.map_err(|e| fetch_err(flotilla_net::errors::chain(&e)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(fetch_err(format!("HTTP status {status}")));
    }
    let expected = response.content_length();
    if expected.is_some_and(|len| len > limits.max_bytes) {
        return Err(ArtifactError::TooLarge { url: url.to_owned(), limit: limits.max_bytes });
    }
    let file =
        tokio::fs::File::create(dest).await.map_err(ArtifactError::io(format!("creating {}", dest.display())))?;
    let mut output = tokio::io::BufWriter::with_capacity(256 * 1024, file);
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                if let Some(expected) = expected
                    && size < expected
                {
                    return Err(ArtifactError::Truncated { url: url.to_owned(), got: size, expected });
                }
                return Err(fetch_err(format!(
                    "download broke after {size} bytes: {}",
                    flotilla_net::errors::chain(&e)
                )));
            }
        };
        size += chunk.len() as u64;
        if size > limits.max_bytes {
            return Err(ArtifactError::TooLarge { url: url.to_owned(), limit: limits.max_bytes });
        }
        hasher.update(&chunk);
        output.write_all(&chunk).await.map_err(ArtifactError::io(format!("writing {}", dest.display())))?;
    }
    if let Some(expected) = expected
        && size != expected
    {
        return Err(ArtifactError::Truncated { url: url.to_owned(), got: size, expected });
    }
    output.flush().await.map_err(ArtifactError::io(format!("writing {}", dest.display())))?;
    output.get_ref().sync_all().await.map_err(ArtifactError::io(format!("syncing {}", dest.display())))?;
    Ok(Fetched { path: dest.to_owned(), size, sha256: hex(&hasher.finalize()) })
}

/// Unpacks the tar or tar.gz `archive` into a fresh temporary directory inside
/// `work_dir`, checking every entry, then renames it to `release_dir` (which must not
/// exist). On any error nothing is left behind. Blocking.
pub fn unpack(
    archive: &Path,
    work_dir: &Path,
    release_dir: &Path,
    max_unpacked_bytes: u64,
) -> Result<(), ArtifactError> {
    let mut file = File::open(archive).map_err(ArtifactError::io(format!("opening {}", archive.display())))?;
    let mut magic = [0u8; 2];
    let gzip = matches!(file.read(&mut magic), Ok(2)) && magic == [0x1f, 0x8b];
    file.seek(SeekFrom::Start(0)).map_err(ArtifactError::io(format!("reading {}", archive.display())))?;
    let reader: Box<dyn Read> = if gzip {
        Box::new(flate2::read::GzDecoder::new(BufReader::with_capacity(256 * 1024, file)))
    } else {
        Box::new(BufReader::with_capacity(256 * 1024, file))
    };
    fs::create_dir_all(work_dir).map_err(ArtifactError::io(format!("creating {}", work_dir.display())))?;
    let tmp = tempfile::Builder::new()
        .prefix("unpack-")
        .tempdir_in(work_dir)
        .map_err(ArtifactError::io(format!("creating a directory in {}", work_dir.display())))?;
    let root = tmp.path().canonicalize().map_err(ArtifactError::io("resolving the unpack directory"))?;
    unpack_entries(reader, &root, max_unpacked_bytes)?;
    if let Some(parent) = release_dir.parent() {
        fs::create_dir_all(parent).map_err(ArtifactError::io(format!("creating {}", parent.display())))?;
    }
    fs::rename(tmp.path(), release_dir)
        .map_err(ArtifactError::io(format!("renaming the unpacked release into {}", release_dir.display())))?;
    // The directory now lives under its final name; nothing is left to clean up.
    let _ = tmp.keep();
    if let Some(parent) = release_dir.parent() {
        sync_dir(parent).map_err(ArtifactError::io(format!("syncing {}", parent.display())))?;
    }
    Ok(())
}

fn unpack_entries(reader: Box<dyn Read>, root: &Path, max_unpacked_bytes: u64) -> Result<(), ArtifactError> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(false);
    archive.set_unpack_xattrs(false);
    let mut total = 0u64;
    let mut links = Vec::new();
    let entries = archive.entries().map_err(|e| ArtifactError::Unpack(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| ArtifactError::Unpack(flotilla_net::errors::chain(&e)))?;
        let raw = entry.path_bytes();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let unsafe_entry = |reason: String| ArtifactError::UnsafeEntry { entry: shown.clone(), reason };
        let path = PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(raw.into_owned()));
        let rel = safe_relative(&path).map_err(&unsafe_entry)?;
        let kind = entry.header().entry_type();
        if rel.as_os_str().is_empty() {
            if kind.is_dir() {
                continue;
            }
            return Err(unsafe_entry("entry has an empty path".to_owned()));
        }
        let dest = root.join(&rel);
        match kind {
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => continue,
            tar::EntryType::Directory => {
                ensure_dir_inside(root, &rel).map_err(&unsafe_entry)?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                total = total.saturating_add(entry.header().size().unwrap_or(0));
                if total > max_unpacked_bytes {
                    return Err(unsafe_entry(format!(
                        "the unpacked files exceed the limit of {max_unpacked_bytes} bytes"
                    )));
                }
                prepare_dest(root, &rel).map_err(&unsafe_entry)?;
                entry
                    .unpack(&dest)
                    .map_err(|e| unsafe_entry(format!("cannot unpack: {}", flotilla_net::errors::chain(&e))))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| unsafe_entry(format!("unreadable link target: {e}")))?
                    .ok_or_else(|| unsafe_entry("symlink without a target".to_owned()))?
                    .into_owned();
                check_symlink_target(&rel, &target).map_err(&unsafe_entry)?;
                prepare_dest(root, &rel).map_err(&unsafe_entry)?;
                std::os::unix::fs::symlink(&target, &dest)
                    .map_err(|e| unsafe_entry(format!("cannot create symlink: {e}")))?;
                links.push((shown.clone(), dest, target));
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| unsafe_entry(format!("unreadable link target: {e}")))?
                    .ok_or_else(|| unsafe_entry("hard link without a target".to_owned()))?
                    .into_owned();
                let target_rel = safe_relative(&target)
                    .map_err(|why| unsafe_entry(format!("hard link target {target:?} escapes: {why}")))?;
                let source = root.join(&target_rel);
                let resolved = source
                    .canonicalize()
                    .map_err(|e| unsafe_entry(format!("hard link target {target:?} is not in the archive: {e}")))?;
                if !resolved.starts_with(root) {
                    return Err(unsafe_entry(format!(
                        "hard link target {target:?} escapes the release directory (resolves to {})",
                        resolved.display()
                    )));
                }
                prepare_dest(root, &rel).map_err(&unsafe_entry)?;
                fs::hard_link(&resolved, &dest).map_err(|e| unsafe_entry(format!("cannot create hard link: {e}")))?;
            }
            other => {
                return Err(unsafe_entry(format!(
                    "unsupported entry type {other:?} (only files, directories and links)"
                )));
            }
        }
    }
    // Each link was checked on its own; a chain of links (`a -> b/..`, `b -> .`) can
    // still resolve outside. Resolve every link on the finished tree.
    for (shown, link, target) in links {
        if let Ok(resolved) = link.canonicalize()
            && !resolved.starts_with(root)
        {
            return Err(ArtifactError::UnsafeEntry {
                entry: shown,
                reason: format!("symlink target {target:?} escapes the release directory through other links"),
            });
        }
    }
    Ok(())
}

/// The normal components of an archive path; refuses absolute paths and `..`.
fn safe_relative(path: &Path) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Prefix(_) | Component::RootDir => {
                return Err("absolute path (entries must be relative to the release directory)".to_owned());
            }
            Component::ParentDir => return Err("path has a `..` component".to_owned()),
            Component::CurDir => {}
            Component::Normal(part) => out.push(part),
        }
    }
    Ok(out)
}

/// Refuses a symlink target that is absolute or climbs out of the release directory
/// from the link's own directory.
fn check_symlink_target(link: &Path, target: &Path) -> Result<(), String> {
    let mut depth: Vec<&std::ffi::OsStr> = Vec::new();
    if let Some(parent) = link.parent() {
        depth.extend(parent.components().filter_map(|c| match c {
            Component::Normal(p) => Some(p),
            _ => None,
        }));
    }
    for component in target.components() {
        match component {
            Component::Prefix(_) | Component::RootDir => {
                return Err(format!("symlink target {target:?} is absolute (it escapes the release directory)"));
            }
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return Err(format!("symlink target {target:?} escapes the release directory"));
                }
            }
            Component::CurDir => {}
            Component::Normal(part) => depth.push(part),
        }
    }
    Ok(())
}

/// Makes sure every directory above `rel` exists and lies inside `root` (a parent that
/// is a symlink must resolve inside), and removes an earlier non-directory at `rel`.
fn prepare_dest(root: &Path, rel: &Path) -> Result<(), String> {
    if let Some(parent) = rel.parent()
        && !parent.as_os_str().is_empty()
    {
        ensure_dir_inside(root, parent)?;
    }
    let dest = root.join(rel);
    if let Ok(meta) = fs::symlink_metadata(&dest) {
        if meta.is_dir() {
            return Err("a directory of the same name was unpacked before".to_owned());
        }
        fs::remove_file(&dest).map_err(|e| format!("cannot replace an earlier entry: {e}"))?;
    }
    Ok(())
}

/// Creates `root/rel` as a directory, one component at a time, refusing to go through
/// a symlink that resolves outside `root`.
fn ensure_dir_inside(root: &Path, rel: &Path) -> Result<(), String> {
    let mut current = root.to_path_buf();
    for component in rel.components() {
        current.push(component);
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.is_dir() => {}
            Ok(meta) if meta.file_type().is_symlink() => {
                let resolved = current.canonicalize().map_err(|e| format!("goes through a dangling symlink: {e}"))?;
                if !resolved.starts_with(root) || !resolved.is_dir() {
                    return Err(format!(
                        "goes through a symlink that leaves the release directory ({})",
                        resolved.display()
                    ));
                }
                current = resolved;
            }
            Ok(_) => return Err(format!("{} is a file, not a directory", current.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&current).map_err(|e| format!("cannot create directory: {e}"))?;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_paths_are_checked() {
        assert_eq!(safe_relative(Path::new("./bin/app")), Ok(PathBuf::from("bin/app")));
        assert!(safe_relative(Path::new("/etc/passwd")).expect_err("abs").contains("absolute"));
        assert!(safe_relative(Path::new("a/../../x")).expect_err("dotdot").contains("`..`"));
    }

    #[test]
    fn symlink_targets_must_stay_inside() {
        assert!(check_symlink_target(Path::new("lib/libx.so"), Path::new("libx.so.1")).is_ok());
        assert!(check_symlink_target(Path::new("bin/app"), Path::new("../lib/app")).is_ok());
        assert!(check_symlink_target(Path::new("bin/app"), Path::new("../../etc")).is_err());
        assert!(check_symlink_target(Path::new("app"), Path::new("..")).is_err());
        assert!(
            check_symlink_target(Path::new("app"), Path::new("/usr/bin/env")).expect_err("abs").contains("absolute")
        );
    }

    #[test]
    fn file_urls_decode() {
        assert_eq!(file_url_path("file:///tmp/a%20b.tgz").expect("ok"), Some(PathBuf::from("/tmp/a b.tgz")));
        assert_eq!(file_url_path("file://localhost/x").expect("ok"), Some(PathBuf::from("/x")));
        assert!(file_url_path("file://rel/x").is_err());
        assert_eq!(file_url_path("https://x").expect("ok"), None);
    }
}
