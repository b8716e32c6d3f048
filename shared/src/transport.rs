//! How a daemon or client secures its gRPC connections, and `HOST:PORT` addresses:
//! the rules every binary's configuration shares. Pure: no file is read here.

use std::path::PathBuf;

/// Mutual TLS with three files, or plaintext asked for explicitly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// Mutual TLS with these files.
    Tls(TlsFiles),
    /// Plaintext, explicitly asked for with `insecure`.
    Insecure,
}

/// The three TLS files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificate (PEM) that peers' certificates must chain to.
    pub ca: PathBuf,
    /// This side's certificate chain (PEM).
    pub cert: PathBuf,
    /// This side's private key (PEM).
    pub key: PathBuf,
}

/// A broken TLS rule: either all three TLS files, or `insecure`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsProblem {
    /// Neither TLS nor `insecure`.
    #[error(
        "no transport security configured: pass --tls-ca, --tls-cert and --tls-key, or --insecure to run plaintext on purpose"
    )]
    Unconfigured,
    /// Some TLS files but not all.
    #[error("incomplete TLS: {} missing (TLS needs --tls-ca, --tls-cert and --tls-key together)", missing.join(", "))]
    Incomplete {
        /// The flags missing (`--tls-key`).
        missing: Vec<&'static str>,
    },
    /// TLS files and `insecure` together.
    #[error("--insecure conflicts with {}: choose TLS or plaintext", given.join(", "))]
    InsecureWithTls {
        /// The TLS flags given.
        given: Vec<&'static str>,
    },
}

impl Transport {
    /// The TLS rule: all three files, or `insecure`, and nothing else.
    pub fn from_settings(
        ca: Option<&PathBuf>,
        cert: Option<&PathBuf>,
        key: Option<&PathBuf>,
        insecure: bool,
    ) -> Result<Transport, TlsProblem> {
        let files = [("--tls-ca", ca), ("--tls-cert", cert), ("--tls-key", key)];
        let given: Vec<&'static str> = files.iter().filter(|(_, f)| f.is_some()).map(|(n, _)| *n).collect();
        if insecure {
            return if given.is_empty() { Ok(Transport::Insecure) } else { Err(TlsProblem::InsecureWithTls { given }) };
        }
        match (ca, cert, key) {
            (Some(ca), Some(cert), Some(key)) => {
                Ok(Transport::Tls(TlsFiles { ca: ca.clone(), cert: cert.clone(), key: key.clone() }))
            }
            (None, None, None) => Err(TlsProblem::Unconfigured),
            _ => Err(TlsProblem::Incomplete {
                missing: files.iter().filter(|(_, f)| f.is_none()).map(|(n, _)| *n).collect(),
            }),
        }
    }
}

/// Checks `HOST:PORT` (a name, an IPv4 address, or `[IPv6]`, and a port 1..=65535);
/// the error says what is wrong.
pub fn check_host_port(value: &str) -> Result<(), String> {
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err("expected HOST:PORT (e.g. 10.0.0.1:7600 or coord-1.internal:7600)".to_owned());
    };
    if host.is_empty() {
        return Err("the host part is empty (expected HOST:PORT)".to_owned());
    }
    if host.contains("://") || host.contains('/') {
        return Err("expected HOST:PORT without a scheme or path".to_owned());
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err("an IPv6 address must be in brackets: [ADDR]:PORT".to_owned());
    }
    if host.chars().any(char::is_whitespace) {
        return Err("the host contains whitespace".to_owned());
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("port `{port}` is not a number between 1 and 65535")),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Option<PathBuf> {
        Some(PathBuf::from(s))
    }

    #[test]
    fn tls_needs_all_three_files_or_insecure() {
        let (ca, cert, key) = (p("ca.pem"), p("c.pem"), p("k.pem"));
        assert!(matches!(
            Transport::from_settings(ca.as_ref(), cert.as_ref(), key.as_ref(), false),
            Ok(Transport::Tls(_))
        ));
        assert_eq!(Transport::from_settings(None, None, None, true), Ok(Transport::Insecure));
        assert_eq!(Transport::from_settings(None, None, None, false), Err(TlsProblem::Unconfigured));
        assert_eq!(
            Transport::from_settings(ca.as_ref(), None, None, false),
            Err(TlsProblem::Incomplete { missing: vec!["--tls-cert", "--tls-key"] })
        );
        assert_eq!(
            Transport::from_settings(ca.as_ref(), None, None, true),
            Err(TlsProblem::InsecureWithTls { given: vec!["--tls-ca"] })
        );
    }

    #[test]
    fn host_port_forms() {
        assert!(check_host_port("10.0.0.1:7600").is_ok());
        assert!(check_host_port("[::1]:7600").is_ok());
        assert!(check_host_port("coord-1.internal:7600").is_ok());
        assert!(check_host_port("::1:7600").unwrap_err().contains("brackets"));
        assert!(check_host_port("http://a:1").unwrap_err().contains("scheme"));
        assert!(check_host_port("a:0").unwrap_err().contains("between 1 and 65535"));
        assert!(check_host_port("a").unwrap_err().contains("HOST:PORT"));
    }
}
