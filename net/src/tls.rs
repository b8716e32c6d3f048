//! Mutual TLS material read from PEM files, turned into tonic server and client configs
//! (rustls with the ring backend).

use std::path::{Path, PathBuf};

use flotilla_shared::transport::TlsFiles;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// A problem loading TLS material or reaching a peer.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A PEM file could not be read.
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        /// Which file (`CA certificate`, `certificate`, `private key`).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file does not hold what it should.
    #[error("{what} {} does not contain a PEM {expected} block", path.display())]
    NotPem {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The block expected (`CERTIFICATE`, `PRIVATE KEY`).
        expected: &'static str,
    },
    /// An address is not usable as an endpoint.
    #[error("bad address `{addr}`: {why}")]
    BadAddress {
        /// The address.
        addr: String,
        /// Why.
        why: String,
    },
}

/// The CA, certificate chain and key of one side of a mutual-TLS connection.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl TlsMaterial {
    /// Reads and sanity-checks the three PEM files.
    pub fn load(files: &TlsFiles) -> Result<Self, NetError> {
        Ok(Self {
            ca: read_pem(&files.ca, "CA certificate", &["CERTIFICATE"])?,
            cert: read_pem(&files.cert, "certificate", &["CERTIFICATE"])?,
            key: read_pem(&files.key, "private key", &["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"])?,
        })
    }

    /// From PEM text already in memory (tests, generated material).
    pub fn from_pem(ca: impl Into<Vec<u8>>, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        Self { ca: ca.into(), cert: cert.into(), key: key.into() }
    }

    /// A server config that requires every client to present a certificate signed by the CA.
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert, &self.key))
            .client_ca_root(Certificate::from_pem(&self.ca))
    }

    /// A client config that trusts only the CA and presents this side's certificate.
    /// `domain` is the name the server's certificate must carry (a DNS name or an IP).
    pub fn client_config(&self, domain: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca))
            .identity(Identity::from_pem(&self.cert, &self.key))
            .domain_name(domain)
    }
}

fn read_pem(path: &Path, what: &'static str, blocks: &[&'static str]) -> Result<Vec<u8>, NetError> {
    let bytes = std::fs::read(path).map_err(|source| NetError::Read { what, path: path.to_owned(), source })?;
    let text = String::from_utf8_lossy(&bytes);
    if blocks.iter().any(|b| text.contains(&format!("-----BEGIN {b}-----"))) {
        Ok(bytes)
    } else {
        Err(NetError::NotPem { what, path: path.to_owned(), expected: blocks[0] })
    }
}
