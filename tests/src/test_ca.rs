//! A certificate authority of the test's own (rcgen), the certificates it signs, and a rustls
//! client config that trusts it alone: TLS between the real binaries and the servers the tests
//! start, without touching the system's CAs.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub cert_pem: String,
}

/// A certificate the CA signed and its key, PEM, and the certificate as DER.
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl TestCa {
    /// A CA named `name`: CAs in one test need distinct names, or a certificate of one checked
    /// against the other fails as a bad signature rather than an unknown issuer.
    pub fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Self {
            issuer: rcgen::Issuer::new(params, key),
            cert_pem: cert.pem(),
        }
    }

    /// A certificate for `names` (DNS names or IP addresses).
    pub fn issue(&self, names: &[&str]) -> IssuedCert {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let params = rcgen::CertificateParams::new(names).expect("certificate params");
        let key = rcgen::KeyPair::generate().expect("certificate key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("signing the certificate");
        IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// A client config (ring) that trusts this CA and nothing else.
    pub fn client_config(&self) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        let ca = CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).expect("CA PEM");
        roots.add(ca).expect("adding the CA");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth()
    }
}
