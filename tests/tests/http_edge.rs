//! The ingest's HTTP edge against untrusted clients, on the real process and real sockets:
//! tokens reloaded from a Secret-like directory, TLS with a reloaded certificate, deadlines for
//! slow clients, the concurrency cap, rate limits shared by replicas, and no secret in the log.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metricstream_tests::test_ca::TestCa;
use metricstream_tests::{Service, ServiceSpec, TestDir, http_client, request_body};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN_A: &str = "tok-alpha-5f1e9c0d2b";
const TOKEN_B: &str = "tok-bravo-83a7d6e4c1";
const TOKEN_UNKNOWN: &str = "tok-guess-00aa11bb22";

/// How long a reload may take to show: a few reload intervals of 1 s.
const RELOAD_WITHIN: Duration = Duration::from_secs(10);

/// A directory laid out the way kubelet mounts a Secret volume: each file is a symlink to
/// `..data/<file>`, `..data` a symlink to a timestamped directory, and an update writes a new
/// directory and renames a new `..data` symlink over the old one (one atomic swap).
struct SecretDir {
    root: PathBuf,
    generation: u32,
}

impl SecretDir {
    fn new(dir: &TestDir, name: &str, files: &[(&str, &str)]) -> Self {
        let root = dir.path().join(name);
        std::fs::create_dir(&root).expect("creating the secret directory");
        let mut secret = Self {
            root,
            generation: 0,
        };
        secret.update(files);
        for (file, _) in files {
            std::os::unix::fs::symlink(format!("..data/{file}"), secret.path(file))
                .expect("linking a secret file");
        }
        secret
    }

    fn path(&self, file: &str) -> PathBuf {
        self.root.join(file)
    }

    fn update(&mut self, files: &[(&str, &str)]) {
        self.generation += 1;
        let version = format!("..2026_11_27_{:04}", self.generation);
        let version_dir = self.root.join(&version);
        std::fs::create_dir(&version_dir).expect("creating a secret version");
        for (file, content) in files {
            std::fs::write(version_dir.join(file), content).expect("writing a secret file");
        }
        let staged = self.root.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &staged).expect("staging ..data");
        std::fs::rename(&staged, self.root.join("..data")).expect("swapping ..data");
    }
}

fn metric_body() -> Vec<u8> {
    serde_json::to_vec(&request_body("edge", 0, 2)).expect("json")
}

async fn post_with_token(client: &reqwest::Client, base_url: &str, token: &str) -> u16 {
    client
        .post(format!("{base_url}/metrics"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(metric_body())
        .send()
        .await
        .unwrap_or_else(|error| panic!("POST to {base_url}: {error}"))
        .status()
        .as_u16()
}

/// Polls `check` until it returns true or `within` passes.
async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of a sample line `name{labels} value` on the admin `/metrics`, 0 when absent.
async fn metric_value(service: &Service, sample: &str) -> f64 {
    let (status, text) = service.admin_get("/metrics").await;
    assert_eq!(status, 200, "{text}");
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_reloaded_when_the_secret_changes() {
    let dir = TestDir::new("edge-token-reload");
    let mut secret = SecretDir::new(&dir, "tokens", &[("tokens", &format!("alpha={TOKEN_A}\n"))]);
    let ingest = ServiceSpec::ingest(&dir, "ingest")
        .env("METRICSTREAM_TOKENS_FILE", secret.path("tokens"))
        .env("METRICSTREAM_SECRET_RELOAD_INTERVAL", "1")
        .start()
        .await;
    let base = ingest.base_url();
    let client = http_client(Duration::from_secs(10));
    assert_eq!(post_with_token(&client, &base, TOKEN_A).await, 202);
    assert_eq!(post_with_token(&client, &base, TOKEN_B).await, 401);

    // A token added: accepted once the reload has seen it.
    secret.update(&[("tokens", &format!("alpha={TOKEN_A}\nbravo={TOKEN_B}\n"))]);
    eventually("the added token is accepted", RELOAD_WITHIN, || async {
        post_with_token(&client, &base, TOKEN_B).await == 202
    })
    .await;
    assert_eq!(post_with_token(&client, &base, TOKEN_A).await, 202);

    // A token removed: refused from then on.
    secret.update(&[("tokens", &format!("bravo={TOKEN_B}\n"))]);
    eventually("the removed token is refused", RELOAD_WITHIN, || async {
        post_with_token(&client, &base, TOKEN_A).await == 401
    })
    .await;
    assert_eq!(post_with_token(&client, &base, TOKEN_B).await, 202);
    let successes =
        r#"metricstream_ingest_secret_reloads_total{secret="tokens",outcome="success"}"#;
    assert_eq!(metric_value(&ingest, successes).await, 2.0);

    // A broken file (a line without `=`, holding what looks like a token): the old table stays,
    // the failure is counted and logged without the line.
    secret.update(&[("tokens", "charlie-tok-broken-line\n")]);
    let failures = r#"metricstream_ingest_secret_reloads_total{secret="tokens",outcome="failure"}"#;
    eventually(
        "the broken file is counted as a failed reload",
        RELOAD_WITHIN,
        || async { metric_value(&ingest, failures).await == 1.0 },
    )
    .await;
    assert_eq!(post_with_token(&client, &base, TOKEN_B).await, 202);
    assert_eq!(post_with_token(&client, &base, TOKEN_A).await, 401);

    // An empty file is refused the same way.
    secret.update(&[("tokens", "")]);
    eventually(
        "the empty file is counted as a failed reload",
        RELOAD_WITHIN,
        || async { metric_value(&ingest, failures).await == 2.0 },
    )
    .await;
    assert_eq!(post_with_token(&client, &base, TOKEN_B).await, 202);

    let log_path = ingest.log_path().to_owned();
    ingest.terminate().await;
    let log = std::fs::read_to_string(&log_path).expect("reading the log");
    assert!(log.contains("still using the ones loaded before"), "{log}");
    for secret in [TOKEN_A, TOKEN_B, "charlie-tok-broken-line"] {
        assert!(!log.contains(secret), "the log contains {secret:?}:\n{log}");
    }
}

const SERVER_NAME: &str = "ingest.test";

struct TlsConnection {
    stream: tokio_rustls::client::TlsStream<TcpStream>,
}

impl TlsConnection {
    /// Opens a TLS connection to `addr` as `SERVER_NAME`, trusting only this CA.
    async fn connect(ca: &TestCa, addr: SocketAddr) -> Self {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(ca.client_config()));
        let tcp = TcpStream::connect(addr).await.expect("connecting");
        let name = rustls::pki_types::ServerName::try_from(SERVER_NAME).expect("server name");
        let stream = connector
            .connect(name, tcp)
            .await
            .expect("the TLS handshake succeeds");
        TlsConnection { stream }
    }

    /// The certificate the server presented on this connection.
    fn peer_certificate(&self) -> Vec<u8> {
        self.stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .expect("the server presented a certificate")
            .to_vec()
    }

    /// POSTs a batch on this connection (kept alive): the status.
    async fn post(&mut self) -> u16 {
        post_on(&mut self.stream, "edge-client").await.0
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_serves_and_reloads_its_certificate_without_dropping_connections() {
    let dir = TestDir::new("edge-tls");
    let ca = TestCa::new("MetricStream test CA");
    let first = ca.issue(&[SERVER_NAME]);
    let mut secret = SecretDir::new(
        &dir,
        "tls",
        &[("tls.crt", &first.cert_pem), ("tls.key", &first.key_pem)],
    );
    let spec = ServiceSpec::ingest(&dir, "ingest")
        .env("METRICSTREAM_TLS_CERT_FILE", secret.path("tls.crt"))
        .env("METRICSTREAM_TLS_KEY_FILE", secret.path("tls.key"))
        .env("METRICSTREAM_SECRET_RELOAD_INTERVAL", "1");
    let ingest = spec.start().await;
    let addr = ingest.listen.expect("an ingest listener");

    let mut kept_alive = TlsConnection::connect(&ca, addr).await;
    assert_eq!(kept_alive.post().await, 202);
    assert_eq!(
        kept_alive.peer_certificate(),
        first.der,
        "the first certificate is served"
    );

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = http_client(Duration::from_secs(5))
        .post(format!("http://{addr}/metrics"))
        .header("authorization", "edge-client")
        .header("content-type", "application/json")
        .body(metric_body())
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");

    let second = ca.issue(&[SERVER_NAME]);
    secret.update(&[("tls.crt", &second.cert_pem), ("tls.key", &second.key_pem)]);
    eventually(
        "a new connection sees the new certificate",
        RELOAD_WITHIN,
        || async { TlsConnection::connect(&ca, addr).await.peer_certificate() == second.der },
    )
    .await;
    let mut fresh = TlsConnection::connect(&ca, addr).await;
    assert_eq!(fresh.post().await, 202);

    // The connection made before the swap is still open, on the certificate it negotiated.
    assert_eq!(kept_alive.post().await, 202);
    assert_eq!(kept_alive.peer_certificate(), first.der);

    // A mismatched pair is refused and the current certificate stays.
    let third = ca.issue(&[SERVER_NAME]);
    secret.update(&[("tls.crt", &third.cert_pem), ("tls.key", &first.key_pem)]);
    let failures = r#"metricstream_ingest_secret_reloads_total{secret="tls",outcome="failure"}"#;
    eventually(
        "the mismatched pair is a failed reload",
        RELOAD_WITHIN,
        || async { metric_value(&ingest, failures).await == 1.0 },
    )
    .await;
    let mut after_failure = TlsConnection::connect(&ca, addr).await;
    assert_eq!(after_failure.peer_certificate(), second.der);
    assert_eq!(after_failure.post().await, 202);
    assert_eq!(fresh.post().await, 202);
    ingest.terminate().await;

    // At startup the same mismatch is a clear error and exit status 1.
    let mismatched = spec.clone().env(
        "METRICSTREAM_TLS_KEY_FILE",
        dir.write_file("other.key", &first.key_pem),
    );
    let mismatched = mismatched.env(
        "METRICSTREAM_TLS_CERT_FILE",
        dir.write_file("third.crt", &third.cert_pem),
    );
    let (status, log) = run_to_exit(mismatched.spawn()).await;
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("cannot be used together"), "{log}");
    assert!(
        !log.contains(first.key_pem.lines().nth(1).expect("key line")),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_needs_both_files() {
    let dir = TestDir::new("edge-tls-half");
    let spec = ServiceSpec::ingest(&dir, "ingest")
        .env("METRICSTREAM_TLS_CERT_FILE", dir.write_file("tls.crt", "x"));
    let (status, log) = run_to_exit(spec.spawn()).await;
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains("--tls-key-file"), "{log}");
}

/// Waits (at most 30 s) for a process that should exit by itself: its status and its log.
async fn run_to_exit(mut service: Service) -> (std::process::ExitStatus, String) {
    let started = Instant::now();
    loop {
        if let Some(status) = service.try_exit() {
            let log = std::fs::read_to_string(service.log_path()).expect("reading the log");
            return (status, log);
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{} did not exit",
            service.label()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads until the server closes the connection (or `within` passes): what it sent, and when
/// the close came.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = within.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "the connection was still open after {within:?}; received: {}",
                String::from_utf8_lossy(&received)
            ),
        }
    }
    (
        String::from_utf8_lossy(&received).into_owned(),
        started.elapsed(),
    )
}

fn request_head(content_length: usize) -> String {
    format!(
        "POST /metrics HTTP/1.1\r\nHost: ingest\r\nAuthorization: edge-client\r\n\
         Content-Type: application/json\r\nContent-Length: {content_length}\r\n\r\n"
    )
}

/// POSTs a batch with `authorization` on an open HTTP/1.1 connection and reads the answer
/// (by its Content-Length, leaving the connection usable): the status and the body.
async fn post_on<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    authorization: &str,
) -> (u16, String) {
    let body = metric_body();
    let mut request = format!(
        "POST /metrics HTTP/1.1\r\nHost: ingest\r\nAuthorization: {authorization}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    stream
        .write_all(&request)
        .await
        .expect("writing the request");
    read_answer(stream).await
}

/// Reads one HTTP/1.1 answer with a Content-Length: the status and the body.
async fn read_answer<S: AsyncRead + Unpin>(stream: &mut S) -> (u16, String) {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut buf).await.expect("reading the answer");
        assert!(
            n > 0,
            "closed mid-answer: {}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head}"));
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no Content-Length in {head}"));
    while received.len() < head_end + length {
        let n = stream.read(&mut buf).await.expect("reading the body");
        assert!(n > 0, "closed mid-body");
        received.extend_from_slice(&buf[..n]);
    }
    let body = String::from_utf8_lossy(&received[head_end..head_end + length]).into_owned();
    (status, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_and_silent_clients_are_cut_off() {
    let dir = TestDir::new("edge-timeouts");
    let ingest = ServiceSpec::ingest(&dir, "ingest")
        .env("METRICSTREAM_HEADER_READ_TIMEOUT", "1")
        .env("METRICSTREAM_BODY_READ_TIMEOUT", "2")
        .env("METRICSTREAM_IDLE_TIMEOUT", "3")
        .start()
        .await;
    let addr = ingest.listen.expect("an ingest listener");
    let connect = || async move { TcpStream::connect(addr).await.expect("connecting") };

    // Slowloris: a header byte every 200 ms never finishes the head; cut at the 1 s deadline.
    let mut slowloris = connect().await;
    slowloris
        .write_all(b"POST /metrics HTTP/1.1\r\nHost: ingest\r\n")
        .await
        .expect("writing");
    let trickle = async {
        for byte in b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if slowloris.write_all(&[*byte]).await.is_err() {
                return;
            }
        }
    };
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(8), trickle)
        .await
        .expect("the trickle ended because the server closed the connection");
    let (_, _) = read_until_closed(&mut slowloris, Duration::from_secs(3)).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "slowloris cut after {took:?}"
    );

    // A connection that sends nothing at all is cut at the header deadline too.
    let mut silent = connect().await;
    let (_, took) = read_until_closed(&mut silent, Duration::from_secs(5)).await;
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "silent connection cut after {took:?}"
    );

    // A body that trickles: 408 with the JSON error, then the connection closes.
    let body = metric_body();
    let mut slow_body = connect().await;
    slow_body
        .write_all(request_head(body.len()).as_bytes())
        .await
        .expect("writing the head");
    let (mut reader, mut writer) = slow_body.into_split();
    let trickle = tokio::spawn(async move {
        for byte in body {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let started = Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(8), reader.read_to_end(&mut answer))
        .await
        .expect("the server answered and closed within 8 s")
        .ok();
    let took = started.elapsed();
    trickle.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"body_read_timeout""#), "{answer}");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(5),
        "408 after {took:?}"
    );

    // A kept-alive connection: served, then closed after 3 s idle (longer than the header
    // deadline, so the idle deadline is its own).
    let body = metric_body();
    let mut kept = connect().await;
    let mut request = request_head(body.len()).into_bytes();
    request.extend_from_slice(&body);
    kept.write_all(&request).await.expect("writing");
    let mut buf = vec![0u8; 4096];
    let n = kept.read(&mut buf).await.expect("reading the answer");
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    // Still open past the header deadline.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    kept.write_all(&request)
        .await
        .expect("the kept-alive connection is open");
    let n = kept
        .read(&mut buf)
        .await
        .expect("reading the second answer");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 202"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    let (rest, took) = read_until_closed(&mut kept, Duration::from_secs(8)).await;
    assert!(rest.is_empty(), "{rest}");
    assert!(
        took >= Duration::from_millis(2800) && took < Duration::from_secs(5),
        "idle connection closed after {took:?}"
    );

    let header_closes = r#"metricstream_ingest_connections_closed_total{reason="header_timeout"}"#;
    let idle_closes = r#"metricstream_ingest_connections_closed_total{reason="idle_timeout"}"#;
    assert_eq!(metric_value(&ingest, header_closes).await, 2.0);
    assert_eq!(metric_value(&ingest, idle_closes).await, 1.0);
    ingest.terminate().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_over_the_concurrency_cap_are_shed_with_503() {
    let dir = TestDir::new("edge-concurrency");
    let ingest = ServiceSpec::ingest(&dir, "ingest")
        .env("METRICSTREAM_MAX_CONCURRENT_REQUESTS", "2")
        .start()
        .await;
    let addr = ingest.listen.expect("an ingest listener");
    let body = metric_body();

    // Two requests in progress: heads sent, bodies held back.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(addr).await.expect("connecting");
        stream
            .write_all(request_head(body.len()).as_bytes())
            .await
            .expect("writing the head");
        stream
            .write_all(&body[..10])
            .await
            .expect("writing part of the body");
        held.push(stream);
    }
    // Both handlers hold their permits before the third request comes.
    let in_flight = "metricstream_ingest_requests_in_flight";
    eventually(
        "both held requests are in flight",
        Duration::from_secs(10),
        || async { metric_value(&ingest, in_flight).await == 2.0 },
    )
    .await;

    let client = http_client(Duration::from_secs(10));
    let refused = client
        .post(format!("{}/metrics", ingest.base_url()))
        .header("authorization", "edge-client")
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .expect("the third request is answered");
    assert_eq!(refused.status().as_u16(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let json: Value = refused.json().await.expect("a JSON error");
    assert_eq!(json["error"]["code"], "overloaded", "{json}");
    let shed = "metricstream_ingest_requests_shed_total";
    assert_eq!(metric_value(&ingest, shed).await, 1.0);

    // The held requests complete, and then there is room again.
    for mut stream in held {
        stream
            .write_all(&body[10..])
            .await
            .expect("writing the rest");
        let mut buf = vec![0u8; 4096];
        let n = stream.read(&mut buf).await.expect("reading the answer");
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 202"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
    eventually(
        "the answered requests leave the in-flight gauge",
        Duration::from_secs(10),
        || async { metric_value(&ingest, in_flight).await == 0.0 },
    )
    .await;
    let status = client
        .post(format!("{}/metrics", ingest.base_url()))
        .header("authorization", "edge-client")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("answered")
        .status();
    assert_eq!(status.as_u16(), 202);
    ingest.terminate().await;
}

/// Sends `count` requests of one client back to back: how many were accepted.
async fn accepted_of_burst(ingest: &Service, count: usize) -> usize {
    let client = http_client(Duration::from_secs(10));
    let mut accepted = 0;
    for _ in 0..count {
        let status = client
            .post(format!("{}/metrics", ingest.base_url()))
            .header("authorization", "burst-client")
            .header("content-type", "application/json")
            .body(metric_body())
            .send()
            .await
            .expect("answered")
            .status()
            .as_u16();
        match status {
            202 => accepted += 1,
            429 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    accepted
}

#[tokio::test(flavor = "multi_thread")]
async fn each_replica_enforces_its_share_of_the_rate_limit() {
    let dir = TestDir::new("edge-rate-replicas");
    // 1 request/s with a burst of 10 cluster-wide. Two replicas: 5 each, refilled at 1/s (0.5
    // rounded up), so 10 quick requests to one replica get 5 through, or 6 if the burst took
    // longer than a second.
    let spec = |label: &str, replicas: &str| {
        ServiceSpec::ingest(&dir, label)
            .env("METRICSTREAM_RATE_LIMIT_PER_SECOND", "1")
            .env("METRICSTREAM_RATE_LIMIT_BURST", "10")
            .env("METRICSTREAM_RATE_LIMIT_REPLICAS", replicas)
    };
    let half = spec("replica-of-two", "2").start().await;
    let accepted = accepted_of_burst(&half, 10).await;
    assert!((5..=6).contains(&accepted), "accepted {accepted} of 10");
    half.terminate().await;

    let whole = spec("single-replica", "1").start().await;
    let accepted = accepted_of_burst(&whole, 12).await;
    assert!((10..=11).contains(&accepted), "accepted {accepted} of 12");
    whole.terminate().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_reaches_the_log_even_at_debug() {
    let dir = TestDir::new("edge-no-secret-logged");
    let ca = TestCa::new("MetricStream test CA");
    let cert = ca.issue(&[SERVER_NAME]);
    let mut tokens = SecretDir::new(&dir, "tokens", &[("tokens", &format!("alpha={TOKEN_A}\n"))]);
    let tls = SecretDir::new(
        &dir,
        "tls",
        &[("tls.crt", &cert.cert_pem), ("tls.key", &cert.key_pem)],
    );
    let ingest = ServiceSpec::ingest(&dir, "ingest")
        .env("RUST_LOG", "debug")
        .env("METRICSTREAM_TOKENS_FILE", tokens.path("tokens"))
        .env("METRICSTREAM_TLS_CERT_FILE", tls.path("tls.crt"))
        .env("METRICSTREAM_TLS_KEY_FILE", tls.path("tls.key"))
        .env("METRICSTREAM_SECRET_RELOAD_INTERVAL", "1")
        .start()
        .await;
    let addr = ingest.listen.expect("an ingest listener");
    let mut connection = TlsConnection::connect(&ca, addr).await;
    let bearer = |token: &str| format!("Bearer {token}");
    assert_eq!(
        post_on(&mut connection.stream, &bearer(TOKEN_A)).await.0,
        202
    );
    assert_eq!(
        post_on(&mut connection.stream, &bearer(TOKEN_UNKNOWN))
            .await
            .0,
        401
    );
    // A reload to a new token, and a broken file holding one.
    tokens.update(&[("tokens", &format!("bravo={TOKEN_B}\n"))]);
    let started = Instant::now();
    while post_on(&mut connection.stream, &bearer(TOKEN_B)).await.0 != 202 {
        assert!(
            started.elapsed() < RELOAD_WITHIN,
            "the new token was not accepted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokens.update(&[("tokens", &format!("bravo {TOKEN_B} and {TOKEN_A}\n"))]);
    let failures = r#"metricstream_ingest_secret_reloads_total{secret="tokens",outcome="failure"}"#;
    eventually(
        "the broken file is a failed reload",
        RELOAD_WITHIN,
        || async { metric_value(&ingest, failures).await == 1.0 },
    )
    .await;
    assert_eq!(
        post_on(&mut connection.stream, &bearer(TOKEN_UNKNOWN))
            .await
            .0,
        401
    );

    let log_path = ingest.log_path().to_owned();
    ingest.terminate().await;
    let log = std::fs::read_to_string(&log_path).expect("reading the log");
    assert!(
        log.contains("DEBUG"),
        "the log is not at debug level:\n{log}"
    );
    let key_lines: Vec<&str> = cert
        .key_pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    for secret in [TOKEN_A, TOKEN_B, TOKEN_UNKNOWN].iter().chain(&key_lines) {
        assert!(!log.contains(secret), "the log contains {secret:?}:\n{log}");
    }
}
