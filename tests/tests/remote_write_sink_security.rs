//! The remote-write sink to a store that wants HTTPS and credentials: the real ingest (file
//! backend) and consumer in front of VictoriaMetrics (`VICTORIAMETRICS`, built by
//! `hack/victoriametrics.sh`) run with `-tls` (a certificate of the test's own CA, for
//! 127.0.0.1) and/or `-httpAuth.username` / `-httpAuth.password`.
//!
//! - HTTPS with `--sink-ca-file` and basic auth: every acknowledged metric is stored once, and
//!   the password never reaches the consumer's log;
//! - a store whose certificate another CA signed: nothing is stored, `/readyz` says why
//!   (the certificate), nothing is committed — a consumer with the right CA then stores all of it;
//! - a wrong password: 401s are retried, `/readyz` reports them, and rewriting the password
//!   file (as a rotated Secret does) lets the same process deliver everything, no restart.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use metricstream_tests::store::assert_exactly_once_in_store;
use metricstream_tests::test_ca::TestCa;
use metricstream_tests::victoriametrics::{Security, VictoriaMetrics};
use metricstream_tests::{
    DRAIN_TIMEOUT, Expected, LoadSpec, Service, ServiceSpec, TestDir, run_load,
};

const SELECTOR: &str = r#"{__name__="m"}"#;
const USERNAME: &str = "metricstream-writer";
const PASSWORD: &str = "store-password-3f9c1d";

/// VictoriaMetrics (with deduplication) serving HTTPS with a certificate `tls` signs and/or
/// requiring basic auth.
async fn start_store(
    dir: &TestDir,
    tls: Option<&TestCa>,
    basic_auth: Option<(&str, &str)>,
) -> VictoriaMetrics {
    let security = Security { tls, basic_auth };
    VictoriaMetrics::start_secured(
        dir.path(),
        &dir.logs_dir(),
        "victoriametrics",
        true,
        &security,
    )
    .await
}

/// A consumer writing to `store`; `extra` adds or overrides its environment.
fn consumer_spec(dir: &TestDir, store: &VictoriaMetrics, extra: &[(&str, &Path)]) -> ServiceSpec {
    let mut spec = ServiceSpec::consumer(dir, "consumer")
        .env("METRICSTREAM_SINK", "remote-write")
        .env("METRICSTREAM_SINK_URL", store.write_url())
        .env("METRICSTREAM_SINK_MAX_SAMPLES_PER_REQUEST", "100");
    for (key, value) in extra {
        spec = spec.env(key, value.as_os_str());
    }
    spec
}

/// 4 clients × 10 requests × 10 metrics through `ingest`, all acknowledged.
async fn load(ingest: &Service) -> Expected {
    let report = run_load(LoadSpec::new(vec![ingest.base_url()], 4, 10, 10)).await;
    report.assert_all_accepted();
    let expected = report.expected();
    assert!(expected.problems.is_empty(), "{:?}", expected.problems);
    assert_eq!(expected.len(), 400);
    expected
}

/// Waits until the consumer's `/readyz` fails with a reason containing `needle`; the reason.
async fn wait_unready_because(consumer: &Service, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = consumer.admin_get("/readyz").await;
        if status == 503 && body.contains(needle) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never reported {needle:?} within 60 s; last: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn read_log(consumer: &Service) -> String {
    std::fs::read_to_string(consumer.log_path()).expect("reading the consumer's log")
}

/// A file written the way a Secret mount changes: a new file renamed over the old one.
fn replace_file(path: &Path, contents: &str) {
    let next: PathBuf = path.with_extension("next");
    std::fs::write(&next, contents).expect("writing the new version");
    std::fs::rename(&next, path).expect("renaming it over the old one");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs VICTORIAMETRICS: hack/victoriametrics.sh install (make test runs it)"]
async fn https_and_basic_auth_deliver_every_sample_once() {
    let dir = TestDir::new("remote-write-https");
    let ca = TestCa::new("MetricStream store CA");
    let store = start_store(&dir, Some(&ca), Some((USERNAME, PASSWORD))).await;
    assert!(store.write_url().starts_with("https://127.0.0.1:"));
    let ca_file = dir.write_file("store-ca.pem", &ca.cert_pem);
    let password_file = dir.write_file("password", &format!("{PASSWORD}\n"));
    let ingest = ServiceSpec::ingest(&dir, "ingest").start().await;
    let consumer = consumer_spec(&dir, &store, &[("METRICSTREAM_SINK_CA_FILE", &ca_file)])
        .env("METRICSTREAM_SINK_BASIC_AUTH_USERNAME", USERNAME)
        .env("METRICSTREAM_SINK_BASIC_AUTH_PASSWORD_FILE", &password_file)
        .start()
        .await;

    let expected = load(&ingest).await;
    let series = store
        .wait_for_samples(SELECTOR, expected.len(), DRAIN_TIMEOUT)
        .await;
    assert_exactly_once_in_store(&series, &expected);
    assert_eq!(
        consumer
            .metric("metricstream_consumer_remote_write_samples_sent_total")
            .await,
        400.0
    );
    let log = read_log(&consumer);
    consumer.terminate().await;
    ingest.terminate().await;
    assert!(
        !log.contains(PASSWORD),
        "the password is in the log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs VICTORIAMETRICS: hack/victoriametrics.sh install (make test runs it)"]
async fn a_store_certificate_of_another_ca_gets_nothing_and_nothing_is_committed() {
    let dir = TestDir::new("remote-write-wrong-ca");
    let ca = TestCa::new("MetricStream store CA");
    let store = start_store(&dir, Some(&ca), None).await;
    let other_ca = TestCa::new("Some other CA");
    let wrong_ca_file = dir.write_file("other-ca.pem", &other_ca.cert_pem);
    let ingest = ServiceSpec::ingest(&dir, "ingest").start().await;
    let consumer = consumer_spec(
        &dir,
        &store,
        &[("METRICSTREAM_SINK_CA_FILE", &wrong_ca_file)],
    )
    .start()
    .await;

    let expected = load(&ingest).await;
    let reason = wait_unready_because(&consumer, "invalid peer certificate").await;
    assert!(reason.contains("UnknownIssuer"), "{reason}");
    assert!(
        consumer
            .metric("metricstream_consumer_sink_errors_total")
            .await
            >= 1.0
    );
    assert_eq!(
        consumer
            .metric("metricstream_consumer_remote_write_samples_sent_total")
            .await,
        0.0
    );
    assert!(
        store.export(SELECTOR).await.is_empty(),
        "nothing reached the store"
    );
    let log = read_log(&consumer);
    assert!(log.contains("invalid peer certificate"), "{log}");
    consumer.terminate().await;

    // Nothing was committed: a consumer of the same group that trusts the right CA gets every
    // record again, and all of it lands once.
    let ca_file = dir.write_file("store-ca.pem", &ca.cert_pem);
    let consumer = consumer_spec(&dir, &store, &[("METRICSTREAM_SINK_CA_FILE", &ca_file)])
        .start()
        .await;
    let series = store
        .wait_for_samples(SELECTOR, expected.len(), DRAIN_TIMEOUT)
        .await;
    assert_exactly_once_in_store(&series, &expected);
    consumer.terminate().await;
    ingest.terminate().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs VICTORIAMETRICS: hack/victoriametrics.sh install (make test runs it)"]
async fn a_wrong_password_is_retried_until_the_rotated_file_fixes_it_without_a_restart() {
    let dir = TestDir::new("remote-write-wrong-password");
    let store = start_store(&dir, None, Some((USERNAME, PASSWORD))).await;
    let password_file = dir.write_file("password", "an-old-password\n");
    let ingest = ServiceSpec::ingest(&dir, "ingest").start().await;
    let mut consumer = consumer_spec(
        &dir,
        &store,
        &[("METRICSTREAM_SINK_BASIC_AUTH_PASSWORD_FILE", &password_file)],
    )
    .env("METRICSTREAM_SINK_BASIC_AUTH_USERNAME", USERNAME)
    .start()
    .await;

    let expected = load(&ingest).await;
    let reason = wait_unready_because(&consumer, "status 401").await;
    println!("/readyz while the password is wrong: {}", reason.trim());
    assert_eq!(
        consumer
            .metric("metricstream_consumer_dead_lettered_samples_total")
            .await,
        0.0,
        "a 401 is not the data's fault"
    );
    assert!(
        store.export(SELECTOR).await.is_empty(),
        "nothing reached the store"
    );

    replace_file(&password_file, &format!("{PASSWORD}\n"));
    let rotated = Instant::now();
    let series = store
        .wait_for_samples(SELECTOR, expected.len(), DRAIN_TIMEOUT)
        .await;
    assert_exactly_once_in_store(&series, &expected);
    println!(
        "all {} samples stored {:.1?} after the password file changed",
        expected.len(),
        rotated.elapsed()
    );
    consumer.wait_ready(Duration::from_secs(30)).await;
    assert!(
        consumer.try_exit().is_none(),
        "the same process, not a restart"
    );
    let log = read_log(&consumer);
    assert!(
        log.contains("the file changed: its new secret is used from now on"),
        "{log}"
    );
    assert!(
        !log.contains(PASSWORD) && !log.contains("an-old-password"),
        "{log}"
    );
    consumer.terminate().await;
    ingest.terminate().await;
}
