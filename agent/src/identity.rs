//! The agent's enrolled identity: joining the cluster with a token, keeping the
//! certificate in `DATA_DIR/identity`, and renewing it before it expires.
//!
//! - **Join.** The token carries the pin of the cluster's CA. The agent dials the
//!   coordinators trusting only a server whose chain leads to that CA
//!   (`ClientSecurity::Pinned`): a server of another CA fails the handshake, before the
//!   token is sent. The key is made here and never leaves the host; only a certificate
//!   request goes out. A key already on disk (a host whose certificate expired while
//!   it was offline) is reused, so the enrolment it had is found again.
//! - **Files.** `ca.pem` (the CA bundle the coordinators said to trust), `agent.pem`,
//!   `agent.key` (0600). A new pair is written as `*.new` files, fsynced, then renamed
//!   key first; a crash between the renames is finished at the next load, so the key and
//!   the certificate on disk always belong together.
//! - **Renewal.** At two thirds of the certificate's lifetime the agent asks the leader
//!   (over mutual TLS with its current certificate) for a new one, for a new key. On
//!   failure it retries with backoff until the certificate expires; past that, the
//!   host needs a new token.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use flotilla_net::pki::{self, CertInfo};
use flotilla_net::{ClientSecurity, JoinToken, LeaderClient, LeaderError, TlsMaterial};
use flotilla_proto::v1;
use flotilla_proto::v1::enrolment_client::EnrolmentClient;
use flotilla_shared::transport::TlsFiles;
use tokio::sync::watch;
use tonic::Code;

/// The enrolled identity's files.
#[derive(Debug, Clone)]
pub struct IdentityDir {
    dir: PathBuf,
}

const CA: &str = "ca.pem";
const CERT: &str = "agent.pem";
const KEY: &str = "agent.key";

/// How long a join keeps trying coordinators that do not answer.
const JOIN_PATIENCE: Duration = Duration::from_secs(120);

impl IdentityDir {
    /// The identity in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The three files, as TLS files.
    pub fn files(&self) -> TlsFiles {
        TlsFiles { ca: self.dir.join(CA), cert: self.dir.join(CERT), key: self.dir.join(KEY) }
    }

    /// Finishes a write a crash interrupted, then loads the identity; `None` when the
    /// host has not enrolled.
    pub fn load(&self) -> anyhow::Result<Option<TlsMaterial>> {
        for name in [KEY, CERT] {
            let new = self.dir.join(format!("{name}.new"));
            if new.exists() {
                std::fs::rename(&new, self.dir.join(name))
                    .with_context(|| format!("finishing the renewal written to {}", new.display()))?;
            }
        }
        let files = self.files();
        if !files.cert.exists() {
            return Ok(None);
        }
        Ok(Some(TlsMaterial::load(&files).with_context(|| format!("the enrolled identity in {}", self.dir.display()))?))
    }

    /// The private key on disk, if any (PEM).
    fn key(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join(KEY)).ok()
    }

    /// Writes a new certificate, its key and the CA bundle (see the module's notes).
    pub fn store(&self, cert_pem: &str, key_pem: &str, ca_pem: &str) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir).with_context(|| format!("creating {}", self.dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))?;
        }
        write_synced(&self.dir.join(format!("{KEY}.new")), key_pem.as_bytes(), true)?;
        write_synced(&self.dir.join(format!("{CERT}.new")), cert_pem.as_bytes(), false)?;
        write_synced(&self.dir.join(format!("{CA}.new")), ca_pem.as_bytes(), false)?;
        std::fs::rename(self.dir.join(format!("{CA}.new")), self.dir.join(CA))?;
        std::fs::rename(self.dir.join(format!("{KEY}.new")), self.dir.join(KEY))?;
        std::fs::rename(self.dir.join(format!("{CERT}.new")), self.dir.join(CERT))?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        Ok(())
    }
}

fn write_synced(path: &Path, bytes: &[u8], secret: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut file = options.open(path).with_context(|| format!("writing {}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

/// Whether a certificate is past its expiry.
fn expired(info: &CertInfo) -> bool {
    info.not_after <= unix_now()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The agent's TLS material when it runs on its enrolled identity: the one on disk,
/// or a new one from `token`.
pub async fn enrolled(
    identity: &IdentityDir,
    host_id: &str,
    coordinators: &[String],
    token: Option<&str>,
) -> anyhow::Result<TlsMaterial> {
    let current = identity.load()?;
    match (current, token) {
        (Some(material), token) if !expired(&material.own_certificate()) => {
            if token.is_some() {
                tracing::info!("already enrolled; --join is ignored");
            }
            check_host(&material, host_id, identity)?;
            Ok(material)
        }
        (_, Some(token)) => join(identity, host_id, coordinators, token).await,
        (Some(material), None) => bail!(
            "the certificate of this host in {} expired at {}; enrol it again with a new token: flotilla-agent --join TOKEN (made with `flotilla agents token create`)",
            identity.dir.display(),
            pki::format_unix(material.own_certificate().not_after)
        ),
        (None, None) => bail!(
            "this agent has no certificate: enrol it with flotilla-agent --join TOKEN (made with `flotilla agents token create`), or give --tls-ca, --tls-cert and --tls-key, or --insecure"
        ),
    }
}

fn check_host(material: &TlsMaterial, host_id: &str, identity: &IdentityDir) -> anyhow::Result<()> {
    match material.identity() {
        Some(id) if id.name == host_id => Ok(()),
        Some(id) => bail!(
            "the enrolled certificate in {} is for host {}, but this agent is host {host_id}; remove the directory and enrol again",
            identity.dir.display(),
            id.name
        ),
        None => bail!("the certificate in {} names no Flotilla identity", identity.dir.display()),
    }
}

/// Enrols with `token`: a key (new, or the one on disk), a request, and the
/// certificate the cluster issues, stored before it is used.
pub async fn join(
    identity: &IdentityDir,
    host_id: &str,
    coordinators: &[String],
    token: &str,
) -> anyhow::Result<TlsMaterial> {
    let token: JoinToken = token.parse().map_err(|e: String| anyhow::anyhow!("--join: {e}"))?;
    let key_pem = match identity.key() {
        Some(key) => key,
        None => pki::new_request(host_id)?.0,
    };
    let csr = pki::request_for(&key_pem, host_id)?;
    let request = v1::JoinRequest {
        token: token.to_string(),
        host_id: host_id.to_owned(),
        csr_der: csr,
        version: Some(flotilla_proto::version_info(env!("CARGO_PKG_VERSION"), Vec::new())),
    };
    let security = ClientSecurity::Pinned(token.pin.clone());
    let deadline = tokio::time::Instant::now() + JOIN_PATIENCE;
    let mut failures = Vec::new();
    loop {
        for addr in coordinators {
            let channel = flotilla_net::channel(addr, &security)?;
            match EnrolmentClient::new(channel).join(request.clone()).await {
                Ok(answer) => {
                    let answer = answer.into_inner();
                    identity.store(&answer.certificate_pem, &key_pem, &answer.ca_pem)?;
                    let material = identity.load()?.context("the identity just stored")?;
                    let labels: Vec<String> = answer.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    tracing::info!(host_id, token = %token.id, coordinator = %addr, labels = %labels.join(","), expires = %pki::format_unix(material.own_certificate().not_after), "enrolled");
                    return Ok(material);
                }
                Err(status) if definitive(status.code()) => {
                    bail!("{addr} refused the enrolment: {}", status.message())
                }
                Err(status) => failures.push(format!("{addr}: {}", describe(&status))),
            }
        }
        // A server that cannot show the pinned CA will not change its mind: when no
        // coordinator could, the token is for another cluster (or the list is wrong).
        if failures.iter().all(|f| f.contains(flotilla_net::pin::NOT_THE_PINNED_CLUSTER)) {
            bail!(
                "no coordinator proved it belongs to the cluster the join token was made for (CA {}); the token was not sent: {}",
                token.pin,
                failures.join("; ")
            );
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("no coordinator enrolled this host within {JOIN_PATIENCE:?}: {}", failures.join("; "));
        }
        tracing::warn!(failures = %failures.join("; "), "enrolment not possible yet; retrying");
        failures.clear();
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Codes that retrying elsewhere cannot change.
fn definitive(code: Code) -> bool {
    matches!(
        code,
        Code::Unauthenticated
            | Code::PermissionDenied
            | Code::AlreadyExists
            | Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::NotFound
    )
}

/// A failed call in words, with the transport's reason (a pin mismatch shows there).
fn describe(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), flotilla_net::errors::chain(status))
}

/// When to renew a certificate valid from `not_before` to `not_after` (Unix seconds):
/// at two thirds of its lifetime.
pub fn renew_at(not_before: i64, not_after: i64) -> i64 {
    not_before + (not_after - not_before) * 2 / 3
}

/// Renews the enrolled certificate at two thirds of its lifetime, for ever (until
/// `shutdown`); each new certificate is stored and then loaded into `material`, so the
/// next connection uses it while the open session goes on.
pub async fn renew_forever(
    identity: IdentityDir,
    material: TlsMaterial,
    host_id: String,
    coordinators: Vec<String>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let info = material.own_certificate();
        let wait = seconds_until(renew_at(info.not_before, info.not_after));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let mut retry = Duration::from_millis(500);
        loop {
            // A new client each time: a connection is judged by the certificate it was
            // opened with, so the renewal after this one must not reuse its connection.
            let client = LeaderClient::new(coordinators.clone(), ClientSecurity::Tls(material.clone()));
            match renew_once(&client, &identity, &material, &host_id).await {
                Ok(()) => break,
                Err(Renewal::Refused(why)) => {
                    tracing::error!(
                        "the cluster refused to renew this host's certificate: {why}; it stops working at {}",
                        pki::format_unix(material.own_certificate().not_after)
                    );
                    return;
                }
                Err(Renewal::Failed(why)) => {
                    let info = material.own_certificate();
                    if expired(&info) {
                        tracing::error!(
                            "the certificate expired before it could be renewed ({why}); enrol the host again with a new token"
                        );
                        return;
                    }
                    let lifetime = Duration::from_secs(u64::try_from(info.not_after - info.not_before).unwrap_or(60));
                    retry = (retry * 2).min(lifetime / 20).max(Duration::from_millis(200));
                    tracing::warn!(retry_in = ?retry, "renewing the certificate failed: {why}");
                    tokio::select! {
                        () = tokio::time::sleep(retry) => {}
                        _ = shutdown.wait_for(|stop| *stop) => return,
                    }
                }
            }
        }
    }
}

enum Renewal {
    Refused(String),
    Failed(String),
}

async fn renew_once(
    client: &LeaderClient,
    identity: &IdentityDir,
    material: &TlsMaterial,
    host_id: &str,
) -> Result<(), Renewal> {
    let (key_pem, csr) = pki::new_request(host_id).map_err(|e| Renewal::Failed(e.to_string()))?;
    let answer = client
        .call(|ch| {
            let csr = csr.clone();
            async move { EnrolmentClient::new(ch).renew(v1::RenewRequest { csr_der: csr }).await }
        })
        .await
        .map_err(|e| match &e {
            LeaderError::Status(status) if definitive(status.code()) => Renewal::Refused(e.to_string()),
            _ => Renewal::Failed(e.to_string()),
        })?
        .into_inner();
    identity
        .store(&answer.certificate_pem, &key_pem, &answer.ca_pem)
        .map_err(|e| Renewal::Failed(format!("storing the new certificate: {e:#}")))?;
    material.reload().map_err(|e| Renewal::Failed(format!("loading the new certificate: {e}")))?;
    tracing::info!(expires = %pki::format_unix(material.own_certificate().not_after), "certificate renewed");
    Ok(())
}

fn seconds_until(unix: i64) -> Duration {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let at = Duration::from_secs(u64::try_from(unix).unwrap_or(0));
    at.saturating_sub(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_at_two_thirds_of_the_lifetime() {
        assert_eq!(renew_at(0, 90), 60);
        assert_eq!(renew_at(1_000, 1_000 + 86_400), 1_000 + 57_600);
    }

    #[test]
    fn a_renewal_interrupted_between_its_renames_is_finished_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let ca = pki::ClusterCa::create("prod", pki::CA_LIFETIME).unwrap();
        let identity = IdentityDir::new(dir.path().join("identity"));
        let first = ca.issue(pki::Role::Agent, "web-1", &[], pki::AGENT_LIFETIME).unwrap();
        identity.store(&first.cert_pem, &first.key_pem, ca.cert_pem()).unwrap();
        let second = ca.issue(pki::Role::Agent, "web-1", &[], pki::AGENT_LIFETIME).unwrap();
        // The new key is in place, the new certificate still under its temporary name.
        std::fs::write(identity.dir.join(KEY), &second.key_pem).unwrap();
        std::fs::write(identity.dir.join(format!("{CERT}.new")), &second.cert_pem).unwrap();
        let material = identity.load().unwrap().expect("enrolled");
        assert_eq!(material.own_certificate(), CertInfo::parse_pem(&second.cert_pem).unwrap());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(identity.dir.join(KEY)).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "the key is readable by its owner only");
        }
    }
}
