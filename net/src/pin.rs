//! Trusting a cluster by the digest of its CA's public key: how a host that holds only
//! a join token tells the real cluster from any other server before it sends anything.
//!
//! Coordinators send their CA certificates after their own chain. A connection made
//! with [`CaPin::client_config`] looks among what the server sent for the certificate
//! whose public key has the pinned digest, and then verifies the server's chain (and
//! name) against that certificate alone; a server that cannot show a chain to the
//! pinned CA fails the handshake, so the token is never sent to it.

use std::fmt;
use std::sync::Arc;

use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{self, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::pki::CertInfo;

/// Words in the handshake error of a server that cannot show the pinned CA.
pub const NOT_THE_PINNED_CLUSTER: &str = "it is not the cluster the token was made for";

/// `sha256:HEX` of a CA's public key (its DER SubjectPublicKeyInfo).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CaPin(String);

impl std::str::FromStr for CaPin {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let hex = s.strip_prefix("sha256:").ok_or_else(|| format!("CA pin `{s}` does not start with `sha256:`"))?;
        if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("CA pin `{s}` is not `sha256:` and 64 hexadecimal digits"));
        }
        Ok(Self(format!("sha256:{}", hex.to_ascii_lowercase())))
    }
}

impl fmt::Display for CaPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl CaPin {
    /// The pin as written (`sha256:HEX`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the DER certificate `ca` has the pinned public key.
    pub fn matches(&self, ca: &[u8]) -> bool {
        CertInfo::parse(ca).is_some_and(|info| info.key_sha256 == self.0)
    }

    /// A client config that trusts only the pinned CA and presents no certificate.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(PinnedCa { pin: self.clone(), provider: provider.clone() });
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        Arc::new(config)
    }
}

/// A join token: `flotilla-join-v1.PIN.ID.SECRET`, where `PIN` is the 64 hex digits
/// of the CA pin, `ID` the token's public id (8 hex digits, what `token list` and
/// `token revoke` show) and `SECRET` 32 hex digits the cluster keeps only a digest of.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// The CA the token pins.
    pub pin: CaPin,
    /// The token's public id.
    pub id: String,
    /// The secret.
    pub secret: String,
}

/// The prefix of every join token, with the format's version.
pub const JOIN_TOKEN_PREFIX: &str = "flotilla-join-v1";

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken").field("pin", &self.pin).field("id", &self.id).finish_non_exhaustive()
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pin = self.pin.as_str().trim_start_matches("sha256:");
        write!(f, "{JOIN_TOKEN_PREFIX}.{pin}.{}.{}", self.id, self.secret)
    }
}

impl std::str::FromStr for JoinToken {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let parts: Vec<&str> = s.split('.').collect();
        let hex = |p: &str, len: usize| p.len() == len && p.chars().all(|c| c.is_ascii_hexdigit());
        match parts.as_slice() {
            [prefix, pin, id, secret] if *prefix == JOIN_TOKEN_PREFIX => {
                if !hex(id, 8) || !hex(secret, 32) {
                    return Err(
                        "the join token is damaged: its id or secret is not hexadecimal of the right length".into()
                    );
                }
                Ok(Self {
                    pin: format!("sha256:{pin}").parse()?,
                    id: id.to_ascii_lowercase(),
                    secret: secret.to_ascii_lowercase(),
                })
            }
            [prefix, ..] if prefix.starts_with("flotilla-join-") => Err(format!(
                "the join token is of format `{prefix}`; this build reads `{JOIN_TOKEN_PREFIX}` (make a token with this cluster's `flotilla agents token create`)"
            )),
            _ => Err(format!("not a join token: it should look like `{JOIN_TOKEN_PREFIX}.PIN.ID.SECRET`")),
        }
    }
}

impl JoinToken {
    /// `sha256:HEX` of the secret: what the cluster keeps and compares.
    pub fn secret_sha256(&self) -> String {
        crate::pki::key_digest(self.secret.as_bytes())
    }
}

#[derive(Debug)]
struct PinnedCa {
    pin: CaPin,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates.iter().find(|c| self.pin.matches(c)) else {
            return Err(rustls::Error::General(format!(
                "the server shows no CA certificate with the pinned key {}: {NOT_THE_PINNED_CLUSTER}",
                self.pin
            )));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned()).map_err(|e| rustls::Error::General(format!("the pinned CA: {e}")))?;
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(format!("the pinned CA: {e}")))?;
        let others: Vec<CertificateDer<'_>> = intermediates.iter().filter(|c| *c != ca).cloned().collect();
        verifier.verify_server_cert(end_entity, &others, server_name, ocsp_response, now).map_err(|e| match e {
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer | rustls::CertificateError::BadSignature,
            ) => rustls::Error::General(format!(
                "the server's certificate is not issued by the pinned CA {}: {NOT_THE_PINNED_CLUSTER}",
                self.pin
            )),
            other => other,
        })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_tokens_round_trip_and_damaged_ones_say_what_is_wrong() {
        let token = JoinToken {
            pin: format!("sha256:{}", "ab".repeat(32)).parse().unwrap(),
            id: "0a1b2c3d".into(),
            secret: "f".repeat(32),
        };
        let text = token.to_string();
        assert_eq!(text, format!("flotilla-join-v1.{}.0a1b2c3d.{}", "ab".repeat(32), "f".repeat(32)));
        assert_eq!(text.parse::<JoinToken>().unwrap(), token);
        assert!(!format!("{token:?}").contains(&token.secret), "Debug hides the secret");
        let err = text.replace("flotilla-join-v1", "flotilla-join-v9").parse::<JoinToken>().unwrap_err();
        assert!(err.contains("flotilla-join-v9"), "{err}");
        assert!(text[..text.len() - 1].parse::<JoinToken>().unwrap_err().contains("damaged"));
        assert!("hello".parse::<JoinToken>().unwrap_err().contains("not a join token"));
    }

    #[test]
    fn pins_are_sha256_and_64_hex_digits() {
        let pin: CaPin = format!("sha256:{}", "AB".repeat(32)).parse().unwrap();
        assert_eq!(pin.as_str(), format!("sha256:{}", "ab".repeat(32)));
        for bad in ["", "sha256:", "md5:00", &format!("sha256:{}", "g".repeat(64)), &"sha256:0".repeat(2)] {
            assert!(bad.parse::<CaPin>().is_err(), "{bad:?}");
        }
    }
}
