//! Test certificates (feature `testing`, for the workspace's tests only): a cluster CA
//! of its own writing PEM files into a directory, and the three files of each party it
//! issues. Every certificate names its holder (`spiffe://flotilla/ROLE/NAME`), as the
//! coordinator requires.

use std::io;
use std::path::{Path, PathBuf};

use flotilla_shared::transport::TlsFiles;

use crate::pki::{
    AGENT_LIFETIME, CA_KEY_FILE, CA_LIFETIME, COORDINATOR_LIFETIME, ClusterCa, Issued, OPERATOR_LIFETIME, OperatorRole,
    Role, ServerName,
};
use crate::{ClientSecurity, TlsMaterial};

/// The trust domain of test CAs.
pub const TRUST_DOMAIN: &str = "flotilla";

/// A cluster certificate authority ([`ClusterCa`], trust domain [`TRUST_DOMAIN`]) and
/// the certificates it issues, written as PEM files.
#[derive(Debug)]
pub struct TestCa {
    dir: PathBuf,
    name: String,
    ca: ClusterCa,
}

/// Paths of one party's TLS files.
#[derive(Debug, Clone)]
pub struct TlsPaths {
    /// The CA certificate.
    pub ca: PathBuf,
    /// The party's certificate.
    pub cert: PathBuf,
    /// The party's key.
    pub key: PathBuf,
}

impl TlsPaths {
    /// The files as TLS material (as a daemon loads them).
    pub fn material(&self) -> TlsMaterial {
        let files = TlsFiles { ca: self.ca.clone(), cert: self.cert.clone(), key: self.key.clone() };
        TlsMaterial::load(&files).expect("usable generated TLS files")
    }

    /// The files as a client's security.
    pub fn security(&self) -> ClientSecurity {
        ClientSecurity::Tls(self.material())
    }
}

fn pki_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl TestCa {
    /// A new CA named `name` writing into `dir`; its certificate is `{dir}/{name}-ca.pem`
    /// and its key `{dir}/{name}-ca.key` (mode 0600, see [`TestCa::key_file`]).
    /// Two CAs made with this are independent, though they share the trust domain.
    pub fn new(dir: &Path, name: &str) -> io::Result<Self> {
        let ca = ClusterCa::create(TRUST_DOMAIN, CA_LIFETIME).map_err(pki_error)?;
        std::fs::create_dir_all(dir)?;
        let this = Self { dir: dir.to_owned(), name: name.to_owned(), ca };
        std::fs::write(this.ca_file(), this.ca.cert_pem())?;
        // `ClusterCa::write` is the one way to the key's PEM: it writes `ca.pem` and
        // `ca.key` (0600) into a fresh directory, from which the key is moved.
        let scratch = dir.join(format!(".{name}-ca-write"));
        if scratch.exists() {
            std::fs::remove_dir_all(&scratch)?;
        }
        this.ca.write(&scratch).map_err(pki_error)?;
        std::fs::rename(scratch.join(CA_KEY_FILE), this.key_file())?;
        std::fs::remove_dir_all(&scratch)?;
        Ok(this)
    }

    /// The CA certificate's file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    /// The CA's private key (PEM, mode 0600): what a coordinator's `--tls-ca-key`
    /// takes to enrol agents that join with a token.
    pub fn key_file(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.key", self.name))
    }

    /// The CA itself.
    pub fn cluster_ca(&self) -> &ClusterCa {
        &self.ca
    }

    /// Issues a certificate naming `role` `name` (a coordinator's node id, an agent's
    /// host id, an operator's name), written as `{dir}/{ca}-{role}-{name}.pem` and
    /// `.key` (replacing earlier files of the same holder). A coordinator's also
    /// answers to `127.0.0.1` and `localhost`; agents and operators only dial. An
    /// operator is an admin: [`TestCa::issue_operator`] issues another role.
    pub fn issue(&self, role: Role, name: &str) -> io::Result<TlsPaths> {
        let issued = match role {
            Role::Coordinator => self.ca.issue(
                role,
                name,
                &[ServerName::Ip(std::net::Ipv4Addr::LOCALHOST.into()), ServerName::Dns("localhost".to_owned())],
                COORDINATOR_LIFETIME,
            ),
            Role::Agent => self.ca.issue(role, name, &[], AGENT_LIFETIME),
            Role::Operator => self.ca.issue_operator(name, OperatorRole::Admin, OPERATOR_LIFETIME),
        }
        .map_err(pki_error)?;
        self.write(&issued)
    }

    /// Issues the certificate of the operator `name` who may do what `role` allows,
    /// written like [`TestCa::issue`]'s.
    pub fn issue_operator(&self, name: &str, role: OperatorRole) -> io::Result<TlsPaths> {
        let issued = self.ca.issue_operator(name, role, OPERATOR_LIFETIME).map_err(pki_error)?;
        self.write(&issued)
    }

    fn write(&self, issued: &Issued) -> io::Result<TlsPaths> {
        let stem = format!("{}-{}", self.name, issued.identity.file_stem());
        let paths = TlsPaths {
            ca: self.ca_file(),
            cert: self.dir.join(format!("{stem}.pem")),
            key: self.dir.join(format!("{stem}.key")),
        };
        std::fs::write(&paths.cert, &issued.cert_pem)?;
        std::fs::write(&paths.key, &issued.key_pem)?;
        Ok(paths)
    }
}
