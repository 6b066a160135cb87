//! The sink against loopback servers speaking TLS (a CA file, client certificates) and asking for
//! credentials (a password rotated between attempts).

use super::*;

fn settings(url: &str, auth: Option<AuthSettings>, tls: TlsSettings) -> RemoteWriteSettings {
    RemoteWriteSettings {
        url: url.to_owned(),
        auth,
        tls,
        max_samples_per_request: 100,
        concurrency: 1,
        protocol: Protocol::V1,
        request_timeout: Duration::from_secs(5),
    }
}

/// A CA of the test's own, and certificates it signs.
struct TestCa {
    key: rcgen::KeyPair,
    params: rcgen::CertificateParams,
    certificate: rcgen::Certificate,
}

impl TestCa {
    fn new() -> Self {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        // Distinct names: a certificate naming another CA with the same name as its issuer
        // would fail as a bad signature rather than an unknown issuer.
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("test CA {}", random_unit()),
        );
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let certificate = params.self_signed(&key).expect("CA certificate");
        Self {
            key,
            params,
            certificate,
        }
    }

    /// A certificate for `names` (DNS names or IP addresses) and its key.
    fn issue(&self, names: &[&str]) -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let certificate = rcgen::CertificateParams::new(names)
            .expect("params")
            .signed_by(&key, &issuer)
            .expect("certificate");
        (certificate, key)
    }

    fn write_pem(&self, path: &std::path::Path) {
        std::fs::write(path, self.certificate.pem()).expect("writing the CA file");
    }
}

/// A TLS acceptor for 127.0.0.1 with a certificate `ca` signed; requiring a client certificate
/// signed by `client_ca` if given.
fn acceptor(ca: &TestCa, client_ca: Option<&TestCa>) -> tokio_rustls::TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (certificate, key) = ca.issue(&["127.0.0.1"]);
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(client_ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(client_ca.certificate.der().clone())
                .expect("client CA");
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(vec![certificate.der().clone()], key)
        .expect("server config");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

#[test]
fn https_reaches_a_store_whose_certificate_chains_to_the_ca_file_only() {
    let fixture = Fixture::new();
    let ca = TestCa::new();
    let (url, seen) = fixture
        .runtime
        .block_on(serve_over(vec![(204, "", "")], Some(acceptor(&ca, None))));
    let ca_file = fixture.dir.path().join("ca.pem");
    ca.write_pem(&ca_file);
    let trusted = TlsSettings {
        ca_file: Some(ca_file.clone()),
        client_identity: None,
    };
    let mut sink = fixture
        .sink_with(settings(&url, None, trusted))
        .expect("opens");
    assert_eq!(
        sink.write_batch(&records(2, Some(5)))
            .expect("stored")
            .written,
        2
    );
    assert_eq!(seen.lock().expect("lock").len(), 1);

    // Another CA: the handshake fails, nothing is sent, the batch fails.
    TestCa::new().write_pem(&ca_file);
    let mut sink = fixture
        .sink_with(settings(
            &url,
            None,
            TlsSettings {
                ca_file: Some(ca_file),
                client_identity: None,
            },
        ))
        .expect("opens");
    let error = sink
        .write_batch(&records(2, Some(5)))
        .expect_err("untrusted");
    assert!(
        error
            .to_string()
            .contains("invalid peer certificate: UnknownIssuer"),
        "{error}"
    );
    assert_eq!(seen.lock().expect("lock").len(), 1, "nothing more was sent");
}

#[test]
fn a_store_that_requires_client_certificates_gets_the_configured_one() {
    let fixture = Fixture::new();
    let ca = TestCa::new();
    let client_ca = TestCa::new();
    let (url, seen) = fixture.runtime.block_on(serve_over(
        vec![(204, "", "")],
        Some(acceptor(&ca, Some(&client_ca))),
    ));
    let ca_file = fixture.dir.path().join("ca.pem");
    ca.write_pem(&ca_file);

    let mut without = fixture
        .sink_with(settings(
            &url,
            None,
            TlsSettings {
                ca_file: Some(ca_file.clone()),
                client_identity: None,
            },
        ))
        .expect("opens");
    assert!(without.write_batch(&records(1, Some(5))).is_err());
    assert!(seen.lock().expect("lock").is_empty());

    let (certificate, key) = client_ca.issue(&["writer"]);
    let cert_file = fixture.dir.path().join("client.pem");
    let key_file = fixture.dir.path().join("client-key.pem");
    std::fs::write(&cert_file, certificate.pem()).expect("write");
    std::fs::write(&key_file, key.serialize_pem()).expect("write");
    let mut with = fixture
        .sink_with(settings(
            &url,
            None,
            TlsSettings {
                ca_file: Some(ca_file),
                client_identity: Some(ClientIdentityFiles {
                    cert_file,
                    key_file,
                }),
            },
        ))
        .expect("opens");
    assert_eq!(
        with.write_batch(&records(1, Some(5)))
            .expect("stored")
            .written,
        1
    );
    assert_eq!(seen.lock().expect("lock").len(), 1);
}

/// The `Authorization` header of a request as the server saw it.
fn authorization(seen: &Seen) -> String {
    seen.head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("authorization")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default()
}

#[test]
fn a_password_rotated_after_a_401_is_used_by_the_retry_without_a_restart() {
    let fixture = Fixture::new();
    // The store already wants the new password; the Secret follows a moment later.
    let (url, seen) = fixture
        .runtime
        .block_on(serve(vec![(401, "", "bad credentials"), (204, "", "")]));
    let password_file = fixture.dir.path().join("password");
    std::fs::write(&password_file, "old-password\n").expect("write");
    let auth = AuthSettings::Basic {
        username: "writer".to_owned(),
        password_file: password_file.clone(),
    };
    let mut sink = fixture
        .sink_with(settings(&url, Some(auth), TlsSettings::default()))
        .expect("opens");
    // Room to rotate the file between the attempts (the retry waits 1-2 s: room enough on a
    // busy machine; 0.2-0.4 s once lost the race under a parallel build).
    sink.retry.first_backoff = Duration::from_secs(2);
    let rotation = std::thread::spawn({
        let seen = Arc::clone(&seen);
        let dir = fixture.dir.path().to_owned();
        move || {
            while seen.lock().expect("lock").is_empty() {
                std::thread::sleep(Duration::from_millis(1));
            }
            // The way a Secret mount changes: a new file renamed over the old one.
            let next = dir.join("password.next");
            std::fs::write(&next, "new-password").expect("write");
            std::fs::rename(&next, dir.join("password")).expect("rename");
        }
    });
    let stats = sink
        .write_batch(&records(1, Some(5)))
        .expect("stored after the 401");
    rotation.join().expect("rotated");
    assert_eq!(stats.written, 1);
    let sent: Vec<String> = seen
        .lock()
        .expect("lock")
        .iter()
        .map(authorization)
        .collect();
    // base64("writer:old-password"), base64("writer:new-password")
    assert_eq!(
        sent,
        [
            "Basic d3JpdGVyOm9sZC1wYXNzd29yZA==",
            "Basic d3JpdGVyOm5ldy1wYXNzd29yZA=="
        ]
    );
}

#[test]
fn urls_other_than_http_and_https_are_refused() {
    let fixture = Fixture::new();
    for url in ["ftp://vm:8428/api/v1/write", "not a url"] {
        let error = fixture
            .sink_with(settings(url, None, TlsSettings::default()))
            .map(drop)
            .expect_err("refused");
        assert!(error.to_string().starts_with("--sink-url "), "{error}");
    }
    let ca_file = fixture.dir.path().join("ca.pem");
    std::fs::write(&ca_file, TestCa::new().certificate.pem()).expect("write");
    let error = fixture
        .sink_with(settings(
            "http://vm:8428/api/v1/write",
            None,
            TlsSettings {
                ca_file: Some(ca_file),
                client_identity: None,
            },
        ))
        .map(drop)
        .expect_err("TLS files with http:// refused");
    assert!(error.to_string().contains("use an https:// URL"), "{error}");
}
