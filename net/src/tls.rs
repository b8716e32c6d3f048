//! Mutual TLS material read from PEM files and turned into rustls (ring) configs for
//! Flotilla's servers and clients, reloadable in place: [`TlsMaterial::reload`] reads
//! the files again and the next handshake uses them, while connections already open
//! keep the certificates they were made with.
//!
//! A server made from the material asks every client for a certificate but lets the
//! handshake finish without one, or with one it does not trust, as long as the client
//! proves it holds the certificate's key: what the certificate is worth is decided
//! once per connection by [`TlsMaterial::verify_peer`] (see `crate::peer`), so a
//! refused client gets a gRPC status that says why instead of a broken handshake, and
//! a host that is not enrolled yet can reach the one call that needs no certificate.
//! A server also sends the CA certificates after its own chain, so a joining host can
//! find the CA its token pins among them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use flotilla_shared::transport::TlsFiles;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::HandshakeSignatureValid;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::{
    self, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::pki::{CertInfo, PeerIdentity};

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
    /// The material is readable but unusable (a key that is not the certificate's, a
    /// CA that is not a CA).
    #[error("TLS material: {0}")]
    Unusable(String),
    /// An address is not usable as an endpoint.
    #[error("bad address `{addr}`: {why}")]
    BadAddress {
        /// The address.
        addr: String,
        /// Why.
        why: String,
    },
}

/// The CA, certificate chain and key of one side of a mutual-TLS connection, and the
/// rustls configs made from them. Clones share one state: a reload is seen by all.
#[derive(Clone)]
pub struct TlsMaterial {
    shared: Arc<Shared>,
}

struct Shared {
    /// Where the material was read from, for reloads (none for PEM given in memory).
    files: Option<TlsFiles>,
    current: RwLock<Arc<Loaded>>,
}

/// One generation of material.
struct Loaded {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
    /// The leaf certificate, read back.
    own: CertInfo,
    server: Arc<ServerConfig>,
    /// For HTTP listeners: as `server` (a client certificate asked for, judged per
    /// connection), `h2` and `http/1.1`.
    http_server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    /// The CA's real client-certificate check, run once per connection.
    verifier: Arc<dyn ClientCertVerifier>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let current = self.current();
        f.debug_struct("TlsMaterial")
            .field("files", &self.shared.files)
            .field("identity", &current.own.identities.first())
            .finish_non_exhaustive()
    }
}

/// What the CA thinks of a client's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerVerdict {
    /// Issued by the CA, valid now.
    Trusted(CertInfo),
    /// Refused: why, in words (`expired`, `not issued by this cluster's CA`).
    Refused(String),
}

impl TlsMaterial {
    /// Reads and checks the three PEM files and builds the configs.
    pub fn load(files: &TlsFiles) -> Result<Self, NetError> {
        let loaded = read_files(files)?;
        Ok(Self { shared: Arc::new(Shared { files: Some(files.clone()), current: RwLock::new(Arc::new(loaded)) }) })
    }

    /// From PEM text already in memory (generated material, tests).
    pub fn from_pem(
        ca: impl Into<Vec<u8>>,
        cert: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> Result<Self, NetError> {
        let loaded = build(ca.into(), cert.into(), key.into())?;
        Ok(Self { shared: Arc::new(Shared { files: None, current: RwLock::new(Arc::new(loaded)) }) })
    }

    /// Reads the files again; the next handshake uses them. A file that is missing or
    /// unusable leaves the current material in place and is the error.
    pub fn reload(&self) -> Result<(), NetError> {
        let Some(files) = &self.shared.files else {
            return Err(NetError::Unusable("the material was not read from files, so it cannot be reloaded".into()));
        };
        let loaded = read_files(files)?;
        *self.shared.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(loaded);
        Ok(())
    }

    /// The files it was read from, if any.
    pub fn files(&self) -> Option<&TlsFiles> {
        self.shared.files.as_ref()
    }

    fn current(&self) -> Arc<Loaded> {
        self.shared.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// This side's own certificate, read back (identity, validity, key digest).
    pub fn own_certificate(&self) -> CertInfo {
        self.current().own.clone()
    }

    /// The Flotilla identity this side's certificate names, if it names one.
    pub fn identity(&self) -> Option<PeerIdentity> {
        self.current().own.identities.first().cloned()
    }

    /// The CA certificates (PEM) peers are checked against.
    pub fn ca_pem(&self) -> Vec<u8> {
        self.current().ca.clone()
    }

    /// The rustls server config of the moment: this side's chain followed by the CA
    /// certificates, `h2`, and client certificates asked for but judged per
    /// connection by [`TlsMaterial::verify_peer`].
    pub fn rustls_server(&self) -> Arc<ServerConfig> {
        self.current().server.clone()
    }

    /// The rustls server config of the moment for an HTTP listener: like
    /// [`TlsMaterial::rustls_server`] it asks for a client certificate without requiring
    /// one (a browser signs in with an operator token instead) and leaves the verdict to
    /// [`crate::peer::judge`]; `h2` and `http/1.1`.
    pub fn rustls_http_server(&self) -> Arc<ServerConfig> {
        self.current().http_server.clone()
    }

    /// The rustls client config of the moment: trusts only the CA, presents this side's
    /// certificate, `h2`.
    pub fn rustls_client(&self) -> Arc<ClientConfig> {
        self.current().client.clone()
    }

    /// Judges a client's certificate chain against the CA of the moment.
    pub fn verify_peer(&self, chain: &[CertificateDer<'static>]) -> PeerVerdict {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return PeerVerdict::Refused("no certificate".into());
        };
        let Some(info) = CertInfo::parse(leaf) else {
            return PeerVerdict::Refused("the certificate cannot be parsed".into());
        };
        match self.current().verifier.verify_client_cert(leaf, intermediates, UnixTime::now()) {
            Ok(_) => PeerVerdict::Trusted(info),
            Err(e) => PeerVerdict::Refused(describe_refusal(&e, &info)),
        }
    }

    /// A tonic server config that requires every client to present a certificate
    /// signed by the CA (for small servers that judge nothing per call).
    pub fn server_config(&self) -> ServerTlsConfig {
        let current = self.current();
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&current.cert, &current.key))
            .client_ca_root(Certificate::from_pem(&current.ca))
    }

    /// A tonic client config that trusts only the CA and presents this side's
    /// certificate. `domain` is the name the server's certificate must carry.
    pub fn client_config(&self, domain: &str) -> ClientTlsConfig {
        let current = self.current();
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&current.ca))
            .identity(Identity::from_pem(&current.cert, &current.key))
            .domain_name(domain)
    }
}

/// The CA certificates (PEM) a client checks coordinators against when it presents
/// no certificate of its own: an operator who authenticates with a token. The server's
/// chain must lead to the CA and its certificate must name the host dialled, exactly
/// as with [`TlsMaterial`]; only the client's side of mutual TLS is left out.
#[derive(Clone)]
pub struct ServerTrust {
    /// Where the CA was read from, if from a file.
    path: Option<PathBuf>,
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for ServerTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTrust").field("path", &self.path).finish_non_exhaustive()
    }
}

impl ServerTrust {
    /// Reads and checks the CA certificate file (PEM).
    pub fn load(ca: &Path) -> Result<Self, NetError> {
        let pem = read_pem(ca, "CA certificate", &["CERTIFICATE"])?;
        Ok(Self { path: Some(ca.to_owned()), ..Self::from_pem(pem)? })
    }

    /// From CA certificates (PEM) already in memory.
    pub fn from_pem(ca: impl Into<Vec<u8>>) -> Result<Self, NetError> {
        let unusable = |what: &str, e: &dyn std::fmt::Display| NetError::Unusable(format!("{what}: {e}"));
        let (_, roots) = ca_roots(&ca.into())?;
        let provider = provider();
        let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| unusable("CA certificate", &e))?;
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| unusable("TLS versions", &e))?
            .with_webpki_verifier(verifier)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self { path: None, config: Arc::new(config) })
    }

    /// The rustls client config: trusts only the CA, presents no certificate, `h2`.
    pub fn rustls_client(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }
}

/// The CA certificates of PEM text, and a root store of them.
fn ca_roots(ca: &[u8]) -> Result<(Vec<CertificateDer<'static>>, Arc<RootCertStore>), NetError> {
    let unusable = |e: &dyn std::fmt::Display| NetError::Unusable(format!("CA certificate: {e}"));
    let certs = CertificateDer::pem_slice_iter(ca).collect::<Result<Vec<_>, _>>().map_err(|e| unusable(&e))?;
    if certs.is_empty() {
        return Err(unusable(&"no PEM CERTIFICATE block"));
    }
    let mut roots = RootCertStore::empty();
    for cert in &certs {
        roots.add(cert.clone()).map_err(|e| unusable(&e))?;
    }
    Ok((certs, Arc::new(roots)))
}

fn describe_refusal(error: &rustls::Error, info: &CertInfo) -> String {
    use rustls::CertificateError as E;
    let who = info.describe();
    match error {
        rustls::Error::InvalidCertificate(E::Expired | E::ExpiredContext { .. }) => {
            format!("the certificate of {who} expired at {}", crate::pki::format_unix(info.not_after))
        }
        rustls::Error::InvalidCertificate(E::NotValidYet | E::NotValidYetContext { .. }) => {
            format!("the certificate of {who} is not valid before {}", crate::pki::format_unix(info.not_before))
        }
        rustls::Error::InvalidCertificate(E::UnknownIssuer | E::BadSignature) => {
            format!("the certificate of {who} is not issued by this cluster's CA")
        }
        other => format!("the certificate of {who} is refused: {other}"),
    }
}

fn read_files(files: &TlsFiles) -> Result<Loaded, NetError> {
    build(
        read_pem(&files.ca, "CA certificate", &["CERTIFICATE"])?,
        read_pem(&files.cert, "certificate", &["CERTIFICATE"])?,
        read_pem(&files.key, "private key", &["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"])?,
    )
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn build(ca: Vec<u8>, cert: Vec<u8>, key: Vec<u8>) -> Result<Loaded, NetError> {
    let unusable = |what: &str, e: &dyn std::fmt::Display| NetError::Unusable(format!("{what}: {e}"));
    let certs = |pem: &[u8], what: &str| -> Result<Vec<CertificateDer<'static>>, NetError> {
        let certs =
            CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|e| unusable(what, &e))?;
        if certs.is_empty() {
            return Err(unusable(what, &"no PEM CERTIFICATE block"));
        }
        Ok(certs)
    };
    let (ca_certs, roots) = ca_roots(&ca)?;
    let chain = certs(&cert, "certificate")?;
    let own = CertInfo::parse(&chain[0]).ok_or_else(|| unusable("certificate", &"cannot be parsed"))?;
    let private = || PrivateKeyDer::from_pem_slice(&key).map_err(|e| unusable("private key", &e));

    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| unusable("CA certificate", &e))?;

    // The CA certificates follow the chain so a joining host finds the one it pins.
    let mut served = chain.clone();
    for ca in &ca_certs {
        if !served.contains(ca) {
            served.push(ca.clone());
        }
    }
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| unusable("TLS versions", &e))?
        .with_client_cert_verifier(Arc::new(JudgedLater(verifier.clone())))
        .with_single_cert(served, private()?)
        .map_err(|e| unusable("certificate and key", &e))?;
    server.alpn_protocols = vec![b"h2".to_vec()];

    let mut http_server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| unusable("TLS versions", &e))?
        .with_client_cert_verifier(Arc::new(JudgedLater(verifier.clone())))
        .with_single_cert(chain.clone(), private()?)
        .map_err(|e| unusable("certificate and key", &e))?;
    http_server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

    let server_verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| unusable("CA certificate", &e))?;
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| unusable("TLS versions", &e))?
        .dangerous()
        .with_custom_certificate_verifier(server_verifier)
        .with_client_auth_cert(chain, private()?)
        .map_err(|e| unusable("certificate and key", &e))?;
    client.alpn_protocols = vec![b"h2".to_vec()];

    Ok(Loaded {
        ca,
        cert,
        key,
        own,
        server: Arc::new(server),
        http_server: Arc::new(http_server),
        client: Arc::new(client),
        verifier,
    })
}

/// The handshake's client-certificate check: the client must prove it holds the key of
/// the certificate it presents (the handshake signatures are verified), but whether
/// the CA vouches for it is judged after the handshake, per connection.
#[derive(Debug)]
struct JudgedLater(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for JudgedLater {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{AGENT_LIFETIME, CA_LIFETIME, ClusterCa, OperatorRole, Role};

    fn material(ca: &ClusterCa, role: Role, name: &str) -> TlsMaterial {
        let issued = ca.issue(role, name, &["127.0.0.1".parse().unwrap()], AGENT_LIFETIME).unwrap();
        TlsMaterial::from_pem(ca.cert_pem(), issued.cert_pem, issued.key_pem).unwrap()
    }

    fn chain(m: &TlsMaterial) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(&m.current().cert).collect::<Result<_, _>>().unwrap()
    }

    #[test]
    fn a_peer_of_the_ca_is_trusted_and_one_of_another_ca_is_refused_with_its_name() {
        let ca = ClusterCa::create("prod", CA_LIFETIME).unwrap();
        let server = material(&ca, Role::Coordinator, "1");
        let agent = material(&ca, Role::Agent, "web-1");
        match server.verify_peer(&chain(&agent)) {
            PeerVerdict::Trusted(info) => assert_eq!(info.identities[0].name, "web-1"),
            other => panic!("{other:?}"),
        }
        let other = ClusterCa::create("prod", CA_LIFETIME).unwrap();
        let intruder = material(&other, Role::Agent, "web-1");
        match server.verify_peer(&chain(&intruder)) {
            PeerVerdict::Refused(why) => {
                assert_eq!(why, "the certificate of agent web-1 is not issued by this cluster's CA")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(server.verify_peer(&[]), PeerVerdict::Refused("no certificate".into()));
    }

    #[test]
    fn a_reload_reads_the_files_again_and_keeps_the_old_material_when_they_are_unusable() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::create("prod", CA_LIFETIME).unwrap();
        let files =
            TlsFiles { ca: dir.path().join("ca.pem"), cert: dir.path().join("a.pem"), key: dir.path().join("a.key") };
        let write = |name: &str| {
            let issued = ca.issue(Role::Agent, name, &[], AGENT_LIFETIME).unwrap();
            std::fs::write(&files.cert, issued.cert_pem).unwrap();
            std::fs::write(&files.key, issued.key_pem).unwrap();
        };
        std::fs::write(&files.ca, ca.cert_pem()).unwrap();
        write("web-1");
        let material = TlsMaterial::load(&files).unwrap();
        let clone = material.clone();
        write("web-2");
        assert_eq!(clone.identity().unwrap().name, "web-1", "nothing changes before the reload");
        material.reload().unwrap();
        assert_eq!(clone.identity().unwrap().name, "web-2", "every clone sees the reload");

        std::fs::write(&files.key, "-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n").unwrap();
        assert!(material.reload().is_err());
        assert_eq!(material.identity().unwrap().name, "web-2", "unusable files leave the material in use");
    }

    /// A TLS handshake on loopback between `server` and a client with `client`, dialling
    /// `name`: whether it succeeded, and the certificates the client presented.
    async fn handshake(server: &TlsMaterial, client: Arc<ClientConfig>, name: &str) -> Result<usize, std::io::Error> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(server.rustls_server());
        let accept = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            let tls = acceptor.accept(tcp).await?;
            Ok::<_, std::io::Error>(tls.get_ref().1.peer_certificates().map_or(0, <[_]>::len))
        });
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from(name.to_owned()).expect("a server name");
        let connected = tokio_rustls::TlsConnector::from(client).connect(name, tcp).await;
        match connected {
            Ok(_stream) => accept.await.expect("the acceptor runs"),
            Err(e) => {
                accept.abort();
                Err(e)
            }
        }
    }

    #[tokio::test]
    async fn server_trust_checks_the_server_against_the_ca_and_presents_no_certificate() {
        let ca = ClusterCa::create("prod", CA_LIFETIME).unwrap();
        let coordinator = material(&ca, Role::Coordinator, "1");
        let trust = ServerTrust::from_pem(ca.cert_pem()).unwrap();
        assert_eq!(handshake(&coordinator, trust.rustls_client(), "127.0.0.1").await.unwrap(), 0, "no certificate");
        // The mutual config of the same CA presents one, for comparison.
        let agent = material(&ca, Role::Agent, "web-1");
        assert!(handshake(&coordinator, agent.rustls_client(), "127.0.0.1").await.unwrap() > 0);

        // A name the certificate does not carry, or a server of another CA: refused.
        let err = handshake(&coordinator, trust.rustls_client(), "coord-9.example.net").await.unwrap_err();
        assert!(err.to_string().contains("not valid for name"), "{err}");
        let other = ServerTrust::from_pem(ClusterCa::create("prod", CA_LIFETIME).unwrap().cert_pem()).unwrap();
        let err = handshake(&coordinator, other.rustls_client(), "127.0.0.1").await.unwrap_err();
        // Same CA name, another key: its signature does not verify.
        assert!(err.to_string().contains("invalid peer certificate"), "{err}");

        assert!(matches!(ServerTrust::from_pem("not a certificate"), Err(NetError::Unusable(_))));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "nothing").unwrap();
        assert!(matches!(ServerTrust::load(&path), Err(NetError::NotPem { .. })));
        assert!(matches!(ServerTrust::load(&dir.path().join("missing.pem")), Err(NetError::Read { .. })));
    }

    #[test]
    fn material_from_pem_cannot_be_reloaded_and_a_wrong_key_is_refused() {
        let ca = ClusterCa::create("prod", CA_LIFETIME).unwrap();
        let alice = ca.issue_operator("alice", OperatorRole::Deployer, AGENT_LIFETIME).unwrap();
        let m = TlsMaterial::from_pem(ca.cert_pem(), alice.cert_pem, alice.key_pem).unwrap();
        assert!(m.reload().is_err());
        assert_eq!(m.identity().unwrap().name, "alice");
        assert_eq!(m.own_certificate().operator_role, Some(OperatorRole::Deployer));
        let a = ca.issue_operator("a", OperatorRole::Viewer, AGENT_LIFETIME).unwrap();
        let b = ca.issue_operator("b", OperatorRole::Viewer, AGENT_LIFETIME).unwrap();
        let err = TlsMaterial::from_pem(ca.cert_pem(), a.cert_pem, b.key_pem).unwrap_err().to_string();
        assert!(err.contains("certificate and key"), "{err}");
    }
}
