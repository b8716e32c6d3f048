//! Config files of the daemons (`flotilla-coordinator`, `flotilla-agent`): reading and
//! parsing one as TOML of the config's shape, and the error that says what is wrong
//! and where. Each daemon brings its own config type and its own rules (`P`).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a configuration could not be used; `P` is one broken rule of the daemon's.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError<P: fmt::Display> {
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML of the config's shape (unknown key, bad value).
    #[error("config file {}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The merged configuration breaks one or more rules.
    #[error("invalid configuration:\n{}", problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// Every problem found.
        problems: Vec<P>,
    },
}

/// Reads the config file at `path` (not validated).
pub fn read<T: DeserializeOwned, P: fmt::Display>(path: &Path) -> Result<T, ConfigError<P>> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    parse(&text, path)
}

/// Parses config TOML (not validated); `origin` names it in errors.
pub fn parse<T: DeserializeOwned, P: fmt::Display>(text: &str, origin: &Path) -> Result<T, ConfigError<P>> {
    toml::from_str(text).map_err(|e| ConfigError::Parse { path: origin.to_owned(), message: e.to_string() })
}

/// A configuration as TOML (what `--check-config` prints).
pub fn to_toml<T: Serialize>(config: &T) -> String {
    toml::to_string(config).expect("a config serializes to TOML")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, Serialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Config {
        port: u16,
    }

    type Error = ConfigError<String>;

    #[test]
    fn a_file_reads_back_as_printed_and_each_failure_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("d.toml");
        std::fs::write(&path, to_toml(&Config { port: 7600 })).expect("write");
        assert_eq!(read::<Config, String>(&path).expect("reads"), Config { port: 7600 });

        let missing = dir.path().join("missing.toml");
        let err = read::<Config, String>(&missing).expect_err("no file");
        assert!(matches!(err, Error::Read { .. }), "{err:?}");
        assert!(err.to_string().starts_with(&format!("cannot read config file {}: ", missing.display())), "{err}");

        let err = parse::<Config, String>("port = 7600\nprot = 1\n", &path).expect_err("unknown key");
        let text = err.to_string();
        assert!(text.starts_with(&format!("config file {}: ", path.display())) && text.contains("prot"), "{text}");

        let err = Error::Invalid { problems: vec!["one".into(), "two".into()] };
        assert_eq!(err.to_string(), "invalid configuration:\n  - one\n  - two");
    }
}
