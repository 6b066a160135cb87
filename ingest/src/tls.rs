//! TLS on the ingest API: the certificate and key from PEM files, served through a resolver
//! whose certificate can be swapped while the server runs. A swap affects handshakes from then
//! on; connections already established keep the session they negotiated.
//!
//! The private key is a secret: no error, log line or `Debug` output here contains it.

use std::fmt;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The crypto provider of every TLS connection the ingest makes or accepts: `ring`, the one the
/// rest of the workspace (kube's client) already links, chosen explicitly rather than through
/// rustls' process-wide default so no second provider is needed or ambiguous.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate the server presents, replaceable at any time.
pub struct ReloadableCertificate {
    current: ArcSwap<CertifiedKey>,
}

/// Names the certificate chain's length only; never the key.
impl fmt::Debug for ReloadableCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadableCertificate")
            .field("chain_length", &self.current.load().cert.len())
            .finish_non_exhaustive()
    }
}

impl ReloadableCertificate {
    pub fn new(initial: CertifiedKey) -> Self {
        Self {
            current: ArcSwap::from_pointee(initial),
        }
    }

    /// Presents `certified` from the next handshake on.
    pub fn replace(&self, certified: CertifiedKey) {
        self.current.store(Arc::new(certified));
    }
}

impl ResolvesServerCert for ReloadableCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Builds the certificate and key pair from PEM, checking that the key belongs to the first
/// certificate.
pub fn certified_key_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| anyhow!("the certificate file is not valid PEM: {error}"))?;
    if chain.is_empty() {
        return Err(anyhow!(
            "the certificate file holds no `BEGIN CERTIFICATE` block"
        ));
    }
    // The key's PEM errors can quote parts of the file, so only their kind is told.
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|error| match error {
        pem::Error::NoItemsFound => anyhow!(
            "the key file holds no `BEGIN PRIVATE KEY`, `BEGIN RSA PRIVATE KEY` or \
             `BEGIN EC PRIVATE KEY` block"
        ),
        _ => anyhow!("the key file is not a valid PEM private key"),
    })?;
    let certified = CertifiedKey::from_der(chain, key, provider)
        .map_err(|error| anyhow!("the certificate and the key cannot be used together: {error}"))?;
    Ok(certified)
}

/// The server configuration of the ingest API: TLS 1.2 and 1.3, HTTP/1.1, no client
/// certificates, and `certificate` for every handshake.
pub fn server_config(
    certificate: Arc<ReloadableCertificate>,
    provider: Arc<CryptoProvider>,
) -> anyhow::Result<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("choosing TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(certificate);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(name: &str) -> (String, String) {
        let certified = rcgen::generate_simple_self_signed(vec![name.to_owned()])
            .expect("generating a certificate");
        (certified.cert.pem(), certified.signing_key.serialize_pem())
    }

    #[test]
    fn a_matching_pair_loads() {
        let (cert, key) = self_signed("localhost");
        let certified = certified_key_from_pem(cert.as_bytes(), key.as_bytes(), &crypto_provider())
            .expect("loads");
        assert_eq!(certified.cert.len(), 1);
    }

    #[test]
    fn a_mismatched_pair_is_refused() {
        let (cert, _) = self_signed("localhost");
        let (_, other_key) = self_signed("localhost");
        let error =
            certified_key_from_pem(cert.as_bytes(), other_key.as_bytes(), &crypto_provider())
                .expect_err("mismatched");
        assert!(
            error.to_string().contains("cannot be used together"),
            "{error}"
        );
    }

    #[test]
    fn bad_files_are_named_without_quoting_the_key() {
        let (cert, key) = self_signed("localhost");
        let provider = crypto_provider();
        let error = certified_key_from_pem(b"", key.as_bytes(), &provider).expect_err("no cert");
        assert!(
            error.to_string().contains("no `BEGIN CERTIFICATE`"),
            "{error}"
        );
        let error = certified_key_from_pem(cert.as_bytes(), b"", &provider).expect_err("no key");
        assert!(error.to_string().contains("key file holds no"), "{error}");

        // A key whose base64 is damaged: the message must not echo any of it.
        let body_start = key.find('\n').expect("PEM has lines") + 1;
        let mut damaged = key.clone();
        damaged.replace_range(body_start..body_start + 8, "!!!!!!!!");
        let error = certified_key_from_pem(cert.as_bytes(), damaged.as_bytes(), &provider)
            .expect_err("damaged key");
        let message = format!("{error:#}");
        let key_body: String = key.lines().nth(1).expect("a base64 line").to_owned();
        assert!(!message.contains(&key_body[8..24]), "{message}");
    }

    #[test]
    fn debug_output_hides_the_key() {
        let (cert, key) = self_signed("localhost");
        let certified = certified_key_from_pem(cert.as_bytes(), key.as_bytes(), &crypto_provider())
            .expect("loads");
        let shown = format!("{:?}", ReloadableCertificate::new(certified));
        let key_line = key.lines().nth(1).expect("a base64 line");
        assert!(!shown.contains(key_line), "{shown}");
        assert!(shown.contains("chain_length"), "{shown}");
    }
}
