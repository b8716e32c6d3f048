//! The cluster's certificate authority and the certificates it issues: who each one
//! names, for how long, and for what.
//!
//! Every certificate Flotilla issues names its holder in a URI subject alternative
//! name, `spiffe://TRUST_DOMAIN/ROLE/NAME` ([`PeerIdentity`]): a coordinator by node id,
//! an agent by host id, an operator by name. The role decides the key usages: a
//! coordinator serves and dials (server and client authentication), agents and
//! operators only dial (client authentication). Keys are ECDSA P-256.
//!
//! An operator's certificate also says what the operator may do ([`OperatorRole`]) in
//! a second URI subject alternative name, `urn:flotilla:role:ROLE`
//! ([`ROLE_URI_PREFIX`] followed by `viewer`, `deployer` or `admin`), next to its
//! `spiffe://TRUST_DOMAIN/operator/NAME`: the SPIFFE URI stays the identity, the role
//! URI only grants rights. [`ClusterCa::issue_operator`] is the one way to issue an
//! operator's certificate, so none is issued without a role. [`CertInfo::operator_role`]
//! reads it back, and is `None` for a certificate that names no operator or whose role
//! is missing, repeated or unknown.
//!
//! A CA lives in a directory as `ca.pem` and `ca.key` (mode 0600); issued pairs are
//! written next to it as `ROLE-NAME.pem` and `ROLE-NAME.key`. Nothing is overwritten:
//! an existing file is an error naming it. [`ClusterCa::pin`] is the SHA-256 of the CA's
//! public key, what a join token carries so a new host can tell the real cluster from
//! any other server before it sends anything.

use std::fmt;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData as _, SanType,
};
use sha2::{Digest as _, Sha256};

/// The trust domain of identities when none is chosen.
pub const DEFAULT_TRUST_DOMAIN: &str = "flotilla";

/// How long a CA is valid unless told otherwise (ten years).
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);
/// How long a coordinator's certificate is valid unless told otherwise (one year).
pub const COORDINATOR_LIFETIME: Duration = Duration::from_secs(365 * 86_400);
/// How long an operator's certificate is valid unless told otherwise (90 days).
pub const OPERATOR_LIFETIME: Duration = Duration::from_secs(90 * 86_400);
/// How long an agent's certificate is valid unless told otherwise (24 hours: agents
/// renew theirs).
pub const AGENT_LIFETIME: Duration = Duration::from_secs(86_400);

/// A problem making, reading or writing certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done (`cannot read`, `cannot write`).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file that would be written exists already.
    #[error("{} exists already; Flotilla never overwrites keys or certificates (move it away first)", .0.display())]
    Exists(PathBuf),
    /// A file does not hold a usable certificate or key.
    #[error("{}: {why}", path.display())]
    Bad {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A name that cannot be used in an identity or a certificate.
    #[error("{0}")]
    Name(String),
    /// The certificate library refused.
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// An operator's role that is not one, or an operator certificate asked for
    /// without a role.
    #[error("{0}")]
    OperatorRole(String),
}

/// What a certificate's holder is to the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A coordinator (the name is its node id).
    Coordinator,
    /// A host's agent (the name is its host id).
    Agent,
    /// A person or tool that drives releases.
    Operator,
}

impl Role {
    /// The role's word in identities and file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Coordinator => "coordinator",
            Role::Agent => "agent",
            Role::Operator => "operator",
        }
    }

    fn parse(word: &str) -> Option<Role> {
        [Role::Coordinator, Role::Agent, Role::Operator].into_iter().find(|r| r.as_str() == word)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an operator may do; ordered: viewer < deployer < admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OperatorRole {
    /// Reads only: releases, hosts, the cluster's state and events.
    Viewer,
    /// A viewer who also starts, approves, pauses, resumes, aborts and rolls back
    /// releases and drains hosts.
    Deployer,
    /// Everything.
    Admin,
}

/// How an operator certificate's role URI starts: `urn:flotilla:role:ROLE`.
pub const ROLE_URI_PREFIX: &str = "urn:flotilla:role:";

impl OperatorRole {
    /// Every role, from the least to the most allowed.
    pub const ALL: [OperatorRole; 3] = [OperatorRole::Viewer, OperatorRole::Deployer, OperatorRole::Admin];

    /// The role's word in certificates and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            OperatorRole::Viewer => "viewer",
            OperatorRole::Deployer => "deployer",
            OperatorRole::Admin => "admin",
        }
    }

    /// The URI naming the role in a certificate: `urn:flotilla:role:ROLE`.
    pub fn uri(self) -> String {
        format!("{ROLE_URI_PREFIX}{}", self.as_str())
    }
}

impl fmt::Display for OperatorRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for OperatorRole {
    type Err = PkiError;

    fn from_str(s: &str) -> Result<Self, PkiError> {
        Self::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| {
            PkiError::OperatorRole(format!("`{s}` is not an operator role: use viewer, deployer or admin"))
        })
    }
}

/// Who a certificate names: a role and a name in a trust domain, written as the URI
/// `spiffe://TRUST_DOMAIN/ROLE/NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerIdentity {
    /// The cluster's trust domain (`flotilla` unless chosen at `tls init`).
    pub trust_domain: String,
    /// The role.
    pub role: Role,
    /// The node id, host id or operator name.
    pub name: String,
}

impl PeerIdentity {
    /// An identity, checked: names are 1 to 253 characters of letters, digits, `.`,
    /// `-` and `_` (what host ids and DNS labels use), so the URI needs no escaping.
    pub fn new(trust_domain: &str, role: Role, name: &str) -> Result<Self, PkiError> {
        check_name("trust domain", trust_domain)?;
        check_name(&format!("{role} name"), name)?;
        Ok(Self { trust_domain: trust_domain.to_owned(), role, name: name.to_owned() })
    }

    /// The identity's URI.
    pub fn uri(&self) -> String {
        format!("spiffe://{}/{}/{}", self.trust_domain, self.role, self.name)
    }

    /// The identity a URI names, if it is one of Flotilla's.
    pub fn from_uri(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix("spiffe://")?;
        let mut parts = rest.split('/');
        let (domain, role, name) = (parts.next()?, Role::parse(parts.next()?)?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        Self::new(domain, role, name).ok()
    }

    /// The stem of its files: `ROLE-NAME`.
    pub fn file_stem(&self) -> String {
        format!("{}-{}", self.role, self.name)
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.role, self.name)
    }
}

fn check_name(what: &str, name: &str) -> Result<(), PkiError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(PkiError::Name(format!("{what} `{name}` cannot be used: use 1 to 253 letters, digits, `.`, `-` or `_`")))
    }
}

/// A name a server certificate answers to: a DNS name or an IP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerName {
    /// A DNS name (`coord-1.example.net`, `localhost`).
    Dns(String),
    /// An IP address.
    Ip(IpAddr),
}

impl std::str::FromStr for ServerName {
    type Err = PkiError;

    fn from_str(s: &str) -> Result<Self, PkiError> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(ServerName::Ip(ip));
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !s.is_empty() && s.len() <= 253 && s.split('.').all(label_ok) {
            Ok(ServerName::Dns(s.to_ascii_lowercase()))
        } else {
            Err(PkiError::Name(format!("`{s}` is neither an IP address nor a DNS name")))
        }
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerName::Dns(d) => f.write_str(d),
            ServerName::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// A certificate and its private key, as PEM text.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Who it names.
    pub identity: PeerIdentity,
    /// The certificate.
    pub cert_pem: String,
    /// The private key.
    pub key_pem: String,
}

impl Issued {
    /// Writes `ROLE-NAME.pem` and `ROLE-NAME.key` (0600) into `dir`; returns their paths.
    pub fn write(&self, dir: &Path) -> Result<(PathBuf, PathBuf), PkiError> {
        let stem = self.identity.file_stem();
        let (cert, key) = (dir.join(format!("{stem}.pem")), dir.join(format!("{stem}.key")));
        refuse_existing(&[&cert, &key])?;
        write_new(&key, self.key_pem.as_bytes(), true)?;
        write_new(&cert, self.cert_pem.as_bytes(), false)?;
        Ok((cert, key))
    }
}

/// The cluster's certificate authority: its certificate, its key and its trust domain.
pub struct ClusterCa {
    cert_pem: String,
    key: KeyPair,
    trust_domain: String,
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa").field("trust_domain", &self.trust_domain).finish_non_exhaustive()
    }
}

/// The CA certificate's file in a CA directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA key's file in a CA directory.
pub const CA_KEY_FILE: &str = "ca.key";

impl ClusterCa {
    /// A new CA for `trust_domain`, valid for `lifetime` from now.
    pub fn create(trust_domain: &str, lifetime: Duration) -> Result<Self, PkiError> {
        check_name("trust domain", trust_domain)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name = name(&format!("Flotilla cluster CA ({trust_domain})"));
        validity(&mut params, lifetime);
        let cert = params.self_signed(&key)?;
        Ok(Self { cert_pem: cert.pem(), key, trust_domain: trust_domain.to_owned() })
    }

    /// The CA in `dir` (`ca.pem`, `ca.key`); its trust domain is read from the
    /// certificate's name.
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        Self::load_files(&dir.join(CA_CERT_FILE), &dir.join(CA_KEY_FILE))
    }

    /// The CA whose key is in `key_path`; `cert_path` holds its certificate, possibly
    /// among others (a trust bundle while CAs are rotated): the one with the key's
    /// public key is taken.
    pub fn load_files(cert_path: &Path, key_path: &Path) -> Result<Self, PkiError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| PkiError::Io {
                what: "cannot read",
                path: p.to_owned(),
                source,
            })
        };
        let bundle = read(cert_path)?;
        let key = KeyPair::from_pem(&read(key_path)?)
            .map_err(|e| PkiError::Bad { path: key_path.to_owned(), why: format!("not a private key: {e}") })?;
        let bad = |why: String| PkiError::Bad { path: cert_path.to_owned(), why };
        let mut blocks = pem_blocks(&bundle);
        if blocks.is_empty() {
            return Err(bad("no PEM CERTIFICATE block".to_owned()));
        }
        let Some(at) = blocks.iter().position(|(der, _)| {
            x509_parser::parse_x509_certificate(der)
                .is_ok_and(|(_, c)| c.public_key().raw == key.subject_public_key_info().as_slice())
        }) else {
            return Err(PkiError::Bad {
                path: key_path.to_owned(),
                why: format!("is not the key of a certificate in {}", cert_path.display()),
            });
        };
        let (der, cert_pem) = blocks.swap_remove(at);
        let (_, cert) =
            x509_parser::parse_x509_certificate(&der).map_err(|e| bad(format!("not a certificate: {e}")))?;
        if !cert.is_ca() {
            return Err(bad("not a CA certificate".to_owned()));
        }
        let cn = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).unwrap_or_default();
        let trust_domain = cn
            .strip_prefix("Flotilla cluster CA (")
            .and_then(|rest| rest.strip_suffix(')'))
            .ok_or_else(|| bad(format!("`{cn}` is not a Flotilla cluster CA")))?
            .to_owned();
        Ok(Self { cert_pem, key, trust_domain })
    }

    /// Writes `ca.pem` and `ca.key` (0600) into `dir`, which is created if needed.
    pub fn write(&self, dir: &Path) -> Result<(), PkiError> {
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
            what: "cannot create",
            path: dir.to_owned(),
            source,
        })?;
        let (cert, key) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
        refuse_existing(&[&cert, &key])?;
        write_new(&key, self.key.serialize_pem().as_bytes(), true)?;
        write_new(&cert, self.cert_pem.as_bytes(), false)
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The trust domain of the identities it issues.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Whether this CA signed the certificate `cert_pem` (its first certificate).
    pub fn signed(&self, cert_pem: &str) -> bool {
        let (Some(der), Some(ca_der)) = (pem_der(cert_pem), pem_der(&self.cert_pem)) else { return false };
        let (Ok((_, cert)), Ok((_, ca))) =
            (x509_parser::parse_x509_certificate(&der), x509_parser::parse_x509_certificate(&ca_der))
        else {
            return false;
        };
        cert.verify_signature(Some(ca.public_key())).is_ok()
    }

    /// `sha256:HEX` of the CA's public key (its DER SubjectPublicKeyInfo): the pin a
    /// join token carries.
    pub fn pin(&self) -> String {
        key_digest(&self.key.subject_public_key_info())
    }

    /// Issues a new key and a certificate for the coordinator or agent `name`, valid
    /// for `lifetime`. A coordinator's certificate also answers to `server_names` (at
    /// least one). An operator's certificate carries a role: issue it with
    /// [`ClusterCa::issue_operator`] (`Role::Operator` is refused here).
    pub fn issue(
        &self,
        role: Role,
        name: &str,
        server_names: &[ServerName],
        lifetime: Duration,
    ) -> Result<Issued, PkiError> {
        if role == Role::Operator {
            return Err(operator_needs_role(name));
        }
        self.issue_leaf(role, name, server_names, None, lifetime)
    }

    /// Issues a new key and a certificate for the operator `name` who may do what
    /// `role` allows (the certificate's `urn:flotilla:role:ROLE` URI), valid for
    /// `lifetime`.
    pub fn issue_operator(&self, name: &str, role: OperatorRole, lifetime: Duration) -> Result<Issued, PkiError> {
        self.issue_leaf(Role::Operator, name, &[], Some(role), lifetime)
    }

    fn issue_leaf(
        &self,
        role: Role,
        name: &str,
        server_names: &[ServerName],
        operator_role: Option<OperatorRole>,
        lifetime: Duration,
    ) -> Result<Issued, PkiError> {
        let identity = PeerIdentity::new(&self.trust_domain, role, name)?;
        if role == Role::Coordinator && server_names.is_empty() {
            return Err(PkiError::Name(format!(
                "coordinator {name} needs at least one name clients dial it by (--san HOST or --san IP)"
            )));
        }
        let key = KeyPair::generate()?;
        let params = leaf_params(&identity, server_names, operator_role, lifetime)?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)?;
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Issued { identity, cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// Signs a certificate request (PKCS #10, DER) made by a host for its own key: the
    /// certificate names `role` `name` whatever the request asked for, and is valid
    /// for `lifetime`. The request's signature proves the requester holds the key.
    /// Operators' certificates are not issued for requests (`Role::Operator` is
    /// refused): see [`ClusterCa::issue_operator`].
    pub fn sign_request(
        &self,
        csr_der: &[u8],
        role: Role,
        name: &str,
        lifetime: Duration,
    ) -> Result<SignedRequest, PkiError> {
        if role == Role::Operator {
            return Err(operator_needs_role(name));
        }
        let identity = PeerIdentity::new(&self.trust_domain, role, name)?;
        let der = tokio_rustls::rustls::pki_types::CertificateSigningRequestDer::from(csr_der.to_vec());
        let mut request = rcgen::CertificateSigningRequestParams::from_der(&der)
            .map_err(|e| PkiError::Name(format!("the certificate request is refused: {e}")))?;
        request.params = leaf_params(&identity, &[], None, lifetime)?;
        let not_after = request.params.not_after.unix_timestamp();
        let key_sha256 = key_digest(&request.public_key.subject_public_key_info());
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)?;
        let cert = request.signed_by(&issuer)?;
        Ok(SignedRequest { identity, cert_pem: cert.pem(), key_sha256, not_after })
    }
}

/// A certificate issued for a request.
#[derive(Debug, Clone)]
pub struct SignedRequest {
    /// Who it names.
    pub identity: PeerIdentity,
    /// The certificate.
    pub cert_pem: String,
    /// `sha256:HEX` of the requester's public key.
    pub key_sha256: String,
    /// When it expires (Unix seconds).
    pub not_after: i64,
}

/// A new key and a certificate request for it, made on the host that will hold the
/// key: the key (PEM) stays there, the request (DER) goes to the cluster. What the
/// request names does not matter: the cluster decides the certificate's identity.
pub fn new_request(name: &str) -> Result<(String, Vec<u8>), PkiError> {
    let key = KeyPair::generate()?.serialize_pem();
    let csr = request_for(&key, name)?;
    Ok((key, csr))
}

/// A certificate request (DER) for the key `key_pem` already held.
pub fn request_for(key_pem: &str, name: &str) -> Result<Vec<u8>, PkiError> {
    let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::Name(format!("not a private key: {e}")))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name_of_request(name);
    Ok(params.serialize_request(&key)?.der().to_vec())
}

fn name_of_request(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

fn operator_needs_role(name: &str) -> PkiError {
    PkiError::OperatorRole(format!(
        "the certificate of operator {name} needs a role: issue it with ClusterCa::issue_operator \
         (`flotilla tls operator {name} --role viewer|deployer|admin`)"
    ))
}

fn leaf_params(
    identity: &PeerIdentity,
    server_names: &[ServerName],
    operator_role: Option<OperatorRole>,
    lifetime: Duration,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = name_of(identity);
    params.subject_alt_names.push(SanType::URI(identity.uri().try_into()?));
    if let Some(role) = operator_role {
        params.subject_alt_names.push(SanType::URI(role.uri().try_into()?));
    }
    for server in server_names {
        params.subject_alt_names.push(match server {
            ServerName::Dns(d) => SanType::DnsName(d.clone().try_into()?),
            ServerName::Ip(ip) => SanType::IpAddress(*ip),
        });
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match identity.role {
        Role::Coordinator => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
        Role::Agent | Role::Operator => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, lifetime);
    Ok(params)
}

/// What Flotilla reads back from a certificate: who it names, when it is valid, and
/// the digest of its public key (what binds an enrolled host to its key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The Flotilla identities in its URI subject alternative names (normally one).
    pub identities: Vec<PeerIdentity>,
    /// Its subject, for certificates that name no identity.
    pub subject: String,
    /// Valid from (Unix seconds).
    pub not_before: i64,
    /// Valid until (Unix seconds).
    pub not_after: i64,
    /// `sha256:HEX` of its public key (DER SubjectPublicKeyInfo).
    pub key_sha256: String,
    /// What the operator it names may do: its one `urn:flotilla:role:ROLE` URI. `None`
    /// unless it names exactly one identity, an operator, and exactly one known role.
    pub operator_role: Option<OperatorRole>,
}

impl CertInfo {
    /// Reads a DER certificate; `None` when it is not one.
    pub fn parse(der: &[u8]) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let identities = identities_in(&cert);
        let operator_role = match identities.as_slice() {
            [PeerIdentity { role: Role::Operator, .. }] => operator_role_in(&cert),
            _ => None,
        };
        Some(Self {
            identities,
            subject: cert.subject().to_string(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            key_sha256: key_digest(cert.public_key().raw),
            operator_role,
        })
    }

    /// Reads the first certificate of a PEM text.
    pub fn parse_pem(pem: &str) -> Option<Self> {
        Self::parse(&pem_der(pem)?)
    }

    /// The holder in words: `agent web-1`, `operator alice (role deployer)`, or the
    /// subject when it names no identity.
    pub fn describe(&self) -> String {
        match (self.identities.first(), self.operator_role) {
            (Some(id), Some(role)) => format!("{id} (role {role})"),
            (Some(id), None) => id.to_string(),
            (None, _) => format!("`{}`", self.subject),
        }
    }
}

/// `sha256:HEX` of a DER SubjectPublicKeyInfo: how pins and key bindings are written.
pub fn key_digest(spki_der: &[u8]) -> String {
    let digest = Sha256::digest(spki_der);
    format!("sha256:{}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// A Unix time in seconds as RFC 3339 UTC (`2026-12-05T04:15:44Z`).
pub fn format_unix(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| format!("{secs} (Unix seconds)"))
}

/// The identities a certificate (PEM) names in its URI subject alternative names.
pub fn identities_of(cert_pem: &str) -> Vec<PeerIdentity> {
    let Some(der) = pem_der(cert_pem) else { return Vec::new() };
    identities_of_der(&der)
}

/// The identities a DER certificate names in its URI subject alternative names.
/// Other URIs (an operator's `urn:flotilla:role:ROLE`) are not identities.
pub fn identities_of_der(der: &[u8]) -> Vec<PeerIdentity> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return Vec::new() };
    identities_in(&cert)
}

fn identities_in(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<PeerIdentity> {
    uris_in(cert).into_iter().filter_map(PeerIdentity::from_uri).collect()
}

/// The role of its one `urn:flotilla:role:ROLE` URI; `None` when there is none, more
/// than one, or the role is unknown.
fn operator_role_in(cert: &x509_parser::certificate::X509Certificate<'_>) -> Option<OperatorRole> {
    let uris = uris_in(cert);
    let mut roles = uris.iter().filter_map(|uri| uri.strip_prefix(ROLE_URI_PREFIX));
    match (roles.next(), roles.next()) {
        (Some(role), None) => role.parse().ok(),
        _ => None,
    }
}

/// The URIs among a certificate's subject alternative names.
fn uris_in<'a>(cert: &'a x509_parser::certificate::X509Certificate<'_>) -> Vec<&'a str> {
    let Ok(Some(san)) = cert.subject_alternative_name() else { return Vec::new() };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect()
}

fn pem_der(text: &str) -> Option<Vec<u8>> {
    pem_blocks(text).into_iter().next().map(|(der, _)| der)
}

/// The CERTIFICATE blocks of a PEM text: each one's DER and its own PEM text.
fn pem_blocks(text: &str) -> Vec<(Vec<u8>, String)> {
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let Some(len) = rest[start..].find(END) else { break };
        let block = &rest[start..start + len + END.len()];
        if let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(block.as_bytes()) {
            out.push((pem.contents, format!("{block}\n")));
        }
        rest = &rest[start + len + END.len()..];
    }
    out
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Flotilla");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn name_of(identity: &PeerIdentity) -> DistinguishedName {
    let mut dn = name(&identity.name);
    dn.push(DnType::OrganizationalUnitName, identity.role.as_str());
    dn
}

/// Valid from a little while ago (clocks differ a little: a minute, or a tenth of a
/// short lifetime) for `lifetime`.
fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = time::OffsetDateTime::now_utc();
    let slack = (lifetime / 10).min(Duration::from_secs(60));
    params.not_before = now - time::Duration::try_from(slack).unwrap_or(time::Duration::MINUTE);
    params.not_after = now + time::Duration::try_from(lifetime).unwrap_or(time::Duration::MAX);
}

fn refuse_existing(paths: &[&Path]) -> Result<(), PkiError> {
    match paths.iter().find(|p| p.exists()) {
        Some(p) => Err(PkiError::Exists(p.to_path_buf())),
        None => Ok(()),
    }
}

/// Creates `path` (never replacing a file), mode 0600 when `secret`.
fn write_new(path: &Path, bytes: &[u8], secret: bool) -> Result<(), PkiError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let io = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            PkiError::Exists(path.to_owned())
        } else {
            PkiError::Io { what: "cannot write", path: path.to_owned(), source }
        }
    };
    let mut file = options.open(path).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip_through_their_uri_and_odd_names_are_refused() {
        let id = PeerIdentity::new("prod", Role::Agent, "web-1.eu").unwrap();
        assert_eq!(id.uri(), "spiffe://prod/agent/web-1.eu");
        assert_eq!(PeerIdentity::from_uri(&id.uri()), Some(id));
        assert_eq!(PeerIdentity::from_uri("spiffe://prod/agent/a/b"), None);
        assert_eq!(PeerIdentity::from_uri("spiffe://prod/robot/a"), None);
        assert_eq!(PeerIdentity::from_uri("https://prod/agent/a"), None);
        for bad in ["", "a/b", "a b", "é"] {
            assert!(PeerIdentity::new("prod", Role::Operator, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn server_names_are_ips_or_dns_names() {
        assert_eq!("127.0.0.1".parse::<ServerName>().unwrap(), ServerName::Ip([127, 0, 0, 1].into()));
        assert_eq!("::1".parse::<ServerName>().unwrap(), ServerName::Ip(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)));
        assert_eq!("Coord-1.Example.net".parse::<ServerName>().unwrap(), ServerName::Dns("coord-1.example.net".into()));
        for bad in ["", "-a.b", "a..b", "a_b.c", "http://x"] {
            assert!(bad.parse::<ServerName>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_issued_certificate_names_its_holder_and_the_ca_signs_it() {
        let ca = ClusterCa::create("prod", CA_LIFETIME).unwrap();
        let sans = ["127.0.0.1".parse().unwrap(), "coord-1".parse().unwrap()];
        let issued = ca.issue(Role::Coordinator, "1", &sans, COORDINATOR_LIFETIME).unwrap();
        let want = PeerIdentity::new("prod", Role::Coordinator, "1").unwrap();
        assert_eq!(identities_of(&issued.cert_pem), vec![want]);

        let der = pem_der(&issued.cert_pem).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let ca_der = pem_der(ca.cert_pem()).unwrap();
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        cert.verify_signature(Some(ca_cert.public_key())).expect("signed by the CA");
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert_eq!(lifetime, i64::try_from(COORDINATOR_LIFETIME.as_secs()).unwrap() + 60);

        assert!(ca.signed(&issued.cert_pem));
        assert!(!ClusterCa::create("prod", CA_LIFETIME).unwrap().signed(&issued.cert_pem), "another CA did not");

        let operator = ca.issue_operator("alice", OperatorRole::Viewer, OPERATOR_LIFETIME).unwrap();
        let der = pem_der(&operator.cert_pem).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth, "an operator cannot serve");
        assert!(ca.issue(Role::Coordinator, "2", &[], COORDINATOR_LIFETIME).is_err(), "a coordinator needs a name");
    }

    #[test]
    fn a_signed_request_names_whom_the_ca_decides_for_the_requesters_key() {
        let ca = ClusterCa::create("prod", CA_LIFETIME).unwrap();
        let (key_pem, csr) = new_request("i-am-root").unwrap();
        let signed = ca.sign_request(&csr, Role::Agent, "web-1", Duration::from_secs(30)).unwrap();
        let info = CertInfo::parse_pem(&signed.cert_pem).unwrap();
        assert_eq!(info.identities, vec![PeerIdentity::new("prod", Role::Agent, "web-1").unwrap()]);
        assert_eq!(info.key_sha256, signed.key_sha256);
        let key = KeyPair::from_pem(&key_pem).unwrap();
        assert_eq!(
            info.key_sha256,
            key_digest(&key.subject_public_key_info()),
            "the certificate is for the host's key"
        );
        assert_eq!(info.not_after - info.not_before, 33, "30 s and a tenth of it of slack for clocks");
        assert_eq!(request_for(&key_pem, "again").map(|r| !r.is_empty()).ok(), Some(true));

        let mut damaged = csr.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 0xff;
        assert!(ca.sign_request(&damaged, Role::Agent, "web-1", AGENT_LIFETIME).is_err(), "a bad signature is refused");
        assert!(ca.sign_request(&csr, Role::Agent, "web/1", AGENT_LIFETIME).is_err(), "a bad host id is refused");
        let err = ca.sign_request(&csr, Role::Operator, "alice", AGENT_LIFETIME).unwrap_err().to_string();
        assert!(err.contains("needs a role"), "no operator certificate without a role: {err}");
    }

    #[test]
    fn operator_roles_are_ordered_and_read_from_their_words_only() {
        assert!(OperatorRole::Viewer < OperatorRole::Deployer && OperatorRole::Deployer < OperatorRole::Admin);
        for role in OperatorRole::ALL {
            assert_eq!(role.as_str().parse::<OperatorRole>().unwrap(), role);
            assert_eq!(role.to_string(), role.as_str());
            assert_eq!(role.uri(), format!("urn:flotilla:role:{role}"));
        }
        for bad in ["", "Admin", "root", "operator", " viewer"] {
            let err = bad.parse::<OperatorRole>().unwrap_err().to_string();
            assert!(err.contains("viewer, deployer or admin"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn an_operator_certificate_carries_its_role_and_only_an_operator_one_does() {
        let ca = ClusterCa::create("prod", CA_LIFETIME).unwrap();
        for role in OperatorRole::ALL {
            let issued = ca.issue_operator("alice", role, OPERATOR_LIFETIME).unwrap();
            let alice = PeerIdentity::new("prod", Role::Operator, "alice").unwrap();
            assert_eq!(issued.identity, alice);
            let info = CertInfo::parse_pem(&issued.cert_pem).unwrap();
            assert_eq!(info.operator_role, Some(role));
            assert_eq!(info.identities, vec![alice.clone()], "the role URI is not an identity");
            assert_eq!(identities_of(&issued.cert_pem), vec![alice]);
            assert_eq!(info.describe(), format!("operator alice (role {role})"));
        }
        let err = ca.issue(Role::Operator, "alice", &[], OPERATOR_LIFETIME).unwrap_err().to_string();
        assert!(err.contains("issue_operator") && err.contains("--role"), "{err}");

        let agent = ca.issue(Role::Agent, "web-1", &[], AGENT_LIFETIME).unwrap();
        let coordinator =
            ca.issue(Role::Coordinator, "1", &["127.0.0.1".parse().unwrap()], COORDINATOR_LIFETIME).unwrap();
        for issued in [agent, coordinator] {
            let info = CertInfo::parse_pem(&issued.cert_pem).unwrap();
            assert_eq!(info.operator_role, None, "{}", issued.identity);
            assert_eq!(info.describe(), issued.identity.to_string());
        }
    }

    /// A certificate of `ca` for `identity` with these extra URIs.
    fn with_uris(ca: &ClusterCa, identity: &PeerIdentity, uris: &[&str]) -> CertInfo {
        let mut params = leaf_params(identity, &[], None, OPERATOR_LIFETIME).unwrap();
        for uri in uris {
            params.subject_alt_names.push(SanType::URI((*uri).try_into().unwrap()));
        }
        let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, &ca.key).unwrap();
        let cert = params.signed_by(&KeyPair::generate().unwrap(), &issuer).unwrap();
        CertInfo::parse_pem(&cert.pem()).unwrap()
    }

    #[test]
    fn a_missing_repeated_or_unknown_role_or_one_outside_an_operator_certificate_is_none() {
        let ca = ClusterCa::create("prod", CA_LIFETIME).unwrap();
        let alice = PeerIdentity::new("prod", Role::Operator, "alice").unwrap();
        let web = PeerIdentity::new("prod", Role::Agent, "web-1").unwrap();
        assert_eq!(with_uris(&ca, &alice, &["urn:flotilla:role:deployer"]).operator_role, Some(OperatorRole::Deployer));
        for (holder, uris) in [
            (&alice, &[][..]),
            (&alice, &["urn:flotilla:role:root"][..]),
            (&alice, &["urn:flotilla:role:Admin"][..]),
            (&alice, &["urn:flotilla:role:admin", "urn:flotilla:role:admin"][..]),
            (&alice, &["urn:flotilla:role:viewer", "urn:flotilla:role:admin"][..]),
            (&alice, &["urn:flotilla:role:admin", "spiffe://prod/operator/bob"][..]),
            (&web, &["urn:flotilla:role:admin"][..]),
        ] {
            let info = with_uris(&ca, holder, uris);
            assert_eq!(info.operator_role, None, "{holder} {uris:?}");
            assert!(!info.describe().contains("role"), "{}", info.describe());
        }
    }

    #[test]
    fn a_ca_written_and_loaded_keeps_its_key_domain_and_pin_and_nothing_is_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::create("staging", CA_LIFETIME).unwrap();
        ca.write(dir.path()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(CA_KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let loaded = ClusterCa::load(dir.path()).unwrap();
        assert_eq!((loaded.trust_domain(), loaded.pin()), ("staging", ca.pin()));
        assert!(loaded.pin().starts_with("sha256:") && loaded.pin().len() == 7 + 64);
        match ca.write(dir.path()) {
            Err(PkiError::Exists(p)) => assert!(p.ends_with(CA_KEY_FILE) || p.ends_with(CA_CERT_FILE)),
            other => panic!("{other:?}"),
        }
        let issued = loaded.issue(Role::Agent, "web-1", &[], AGENT_LIFETIME).unwrap();
        issued.write(dir.path()).unwrap();
        assert!(matches!(issued.write(dir.path()), Err(PkiError::Exists(_))));

        // Another CA's key next to this certificate is refused.
        let other = tempfile::tempdir().unwrap();
        std::fs::copy(dir.path().join(CA_CERT_FILE), other.path().join(CA_CERT_FILE)).unwrap();
        std::fs::write(other.path().join(CA_KEY_FILE), KeyPair::generate().unwrap().serialize_pem()).unwrap();
        let err = ClusterCa::load(other.path()).unwrap_err().to_string();
        assert!(err.contains("is not the key of"), "{err}");
    }
}
