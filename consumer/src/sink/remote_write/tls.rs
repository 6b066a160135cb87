//! The rustls client configuration of an `https://` store: which CAs are trusted, and the
//! client certificate, if any. Built once at startup with the `ring` provider (the one the
//! ingest uses), so that a bad file stops the consumer with a message naming its flag and path.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::sink::SinkError;

/// TLS files for an `https://` store; all optional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM CA certificates that replace the system's roots (`--sink-ca-file`).
    pub ca_file: Option<PathBuf>,
    /// A PEM certificate chain and its private key, for stores that require client
    /// certificates (`--sink-client-cert-file`, `--sink-client-key-file`).
    pub client_identity: Option<ClientIdentityFiles>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIdentityFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl TlsSettings {
    pub(super) fn is_empty(&self) -> bool {
        self.ca_file.is_none() && self.client_identity.is_none()
    }
}

/// The client configuration for `settings`: only the CAs of `--sink-ca-file` if given (as
/// Prometheus' `tls_config.ca_file` does: a private store's CA should not widen to every public
/// CA, nor the other way round), else the system's CA certificates.
pub(super) fn client_config(settings: &TlsSettings) -> Result<ClientConfig, SinkError> {
    let roots = match &settings.ca_file {
        Some(path) => ca_file_roots(path)?,
        None => system_roots()?,
    };
    let builder = builder()?.with_root_certificates(roots);
    match &settings.client_identity {
        None => Ok(builder.with_no_client_auth()),
        Some(files) => {
            let chain = read_certificates("--sink-client-cert-file", &files.cert_file)?;
            let key = PrivateKeyDer::from_pem_file(&files.key_file).map_err(|error| {
                file_error(
                    "--sink-client-key-file",
                    &files.key_file,
                    &error,
                    "private key",
                )
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|error| {
                SinkError::Store(format!(
                    "--sink-client-cert-file {} and --sink-client-key-file {}: {error}",
                    files.cert_file.display(),
                    files.key_file.display()
                ))
            })
        }
    }
}

/// A client config without any trusted CA: for an `http://` store, which has no use for TLS.
pub(super) fn trusting_nothing() -> Result<ClientConfig, SinkError> {
    Ok(builder()?
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth())
}

fn builder() -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, SinkError> {
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|error| SinkError::Store(format!("setting up TLS: {error}")))
}

fn ca_file_roots(path: &Path) -> Result<RootCertStore, SinkError> {
    let mut roots = RootCertStore::empty();
    for (index, certificate) in read_certificates("--sink-ca-file", path)?
        .into_iter()
        .enumerate()
    {
        roots.add(certificate).map_err(|error| {
            SinkError::Store(format!(
                "--sink-ca-file {}: certificate {} is not a usable CA certificate: {error}",
                path.display(),
                index + 1
            ))
        })?;
    }
    Ok(roots)
}

/// The operating system's CA certificates (`/etc/ssl/certs` and friends on Linux, or the files
/// `SSL_CERT_FILE` / `SSL_CERT_DIR` name).
fn system_roots() -> Result<RootCertStore, SinkError> {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!(%error, "reading the system's CA certificates");
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    if ignored > 0 {
        tracing::debug!(ignored, "system CA certificates rustls cannot use");
    }
    if added == 0 {
        return Err(SinkError::Store(
            "an https:// --sink-url needs CA certificates, and the system has none (none in \
             SSL_CERT_FILE / SSL_CERT_DIR or the usual places such as /etc/ssl/certs): install \
             the ca-certificates package or set --sink-ca-file"
                .to_owned(),
        ));
    }
    tracing::debug!(
        certificates = added,
        "trusting the system's CA certificates"
    );
    Ok(roots)
}

/// Every certificate of a PEM file (other PEM sections are skipped), at least one.
fn read_certificates(flag: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, SinkError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|error| file_error(flag, path, &error, "certificate"))?;
    if certificates.is_empty() {
        return Err(SinkError::Store(format!(
            "{flag} {}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certificates)
}

/// Why a PEM file could not be read, without quoting it: a syntax error's own message would
/// show a line of the file, which for a key file may be secret.
fn file_error(flag: &str, path: &Path, error: &pem::Error, what: &str) -> SinkError {
    let why = match error {
        pem::Error::Io(error) => format!("cannot read it: {error}"),
        pem::Error::NoItemsFound => format!("holds no PEM {what}"),
        pem::Error::SectionTooLarge => "a PEM section is too large".to_owned(),
        pem::Error::MissingSectionEnd { .. } => "a PEM section has no END line".to_owned(),
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed".to_owned(),
        pem::Error::Base64Decode(_) => "a PEM section is not valid base64".to_owned(),
        _ => format!("not a PEM {what} file"),
    };
    SinkError::Store(format!("{flag} {}: {why}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().expect("key");
        rcgen::CertificateParams::new(Vec::<String>::new())
            .expect("params")
            .self_signed(&key)
            .expect("cert")
            .pem()
    }

    fn settings_with_ca(path: &Path) -> TlsSettings {
        TlsSettings {
            ca_file: Some(path.to_owned()),
            client_identity: None,
        }
    }

    fn error_of(settings: &TlsSettings) -> String {
        client_config(settings)
            .map(|_| ())
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn a_ca_file_with_certificates_is_trusted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, format!("{}{}", ca_pem(), ca_pem())).expect("write");
        assert_eq!(ca_file_roots(&path).expect("loads").len(), 2);
        client_config(&settings_with_ca(&path)).expect("a client config");
    }

    #[test]
    fn bad_ca_files_are_named_with_their_flag_and_path_but_not_quoted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        let error = error_of(&settings_with_ca(&missing));
        assert!(
            error.starts_with(&format!(
                "--sink-ca-file {}: cannot read it",
                missing.display()
            )),
            "{error}"
        );

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "just some text\n").expect("write");
        let error = error_of(&settings_with_ca(&empty));
        assert_eq!(
            error,
            format!(
                "--sink-ca-file {}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                empty.display()
            )
        );

        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\nc2VjcmV0!!\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let error = error_of(&settings_with_ca(&broken));
        assert!(error.contains(&broken.display().to_string()), "{error}");
        assert!(!error.contains("c2VjcmV0"), "the file is quoted: {error}");

        let not_a_certificate = dir.path().join("garbage.pem");
        std::fs::write(
            &not_a_certificate,
            "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let error = error_of(&settings_with_ca(&not_a_certificate));
        assert!(
            error.contains("certificate 1 is not a usable CA certificate"),
            "{error}"
        );
    }

    #[test]
    fn a_client_identity_needs_a_matching_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["client".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let cert_file = dir.path().join("client.pem");
        let key_file = dir.path().join("client-key.pem");
        std::fs::write(&cert_file, cert.pem()).expect("write");
        std::fs::write(&key_file, key.serialize_pem()).expect("write");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_pem()).expect("write");
        let mut settings = TlsSettings {
            ca_file: Some(ca_file),
            client_identity: Some(ClientIdentityFiles {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
            }),
        };
        client_config(&settings).expect("a client config with a certificate");

        std::fs::write(&key_file, cert.pem()).expect("write");
        let error = error_of(&settings);
        assert!(
            error.contains(&format!(
                "--sink-client-key-file {}: holds no PEM private key",
                key_file.display()
            )),
            "{error}"
        );
        let other_key = rcgen::KeyPair::generate().expect("key");
        std::fs::write(&key_file, other_key.serialize_pem()).expect("write");
        settings.client_identity = Some(ClientIdentityFiles {
            cert_file,
            key_file,
        });
        let error = error_of(&settings);
        assert!(error.contains("--sink-client-cert-file"), "{error}");
    }
}
