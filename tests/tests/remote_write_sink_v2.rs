//! The remote-write sink speaking remote write 2.0 (`METRICSTREAM_SINK_PROTOCOL=2.0`) to a real
//! Prometheus (built by `hack/prometheus.sh`; its receiver takes 1.0 and 2.0 by default):
//!
//! - the prototype's 20 × 50 × 10 load lands exactly once, with its labels and timestamps;
//! - the kinds the ingest learnt (here from a remote-write request's metadata) go out as each
//!   series' metadata type, read back through a second MetricStream as the receiver.

use std::time::Duration;

use metricstream_backend::remote_write_proto::v1::MetricMetadata;
use metricstream_backend::remote_write_proto::{MetricType, Sample, v1};
use metricstream_tests::prometheus::{OutOfOrder, Prometheus};
use metricstream_tests::sink::{ReadMode, read_sink, wait_for_lines};
use metricstream_tests::store::{Store, assert_exactly_once_in_store};
use metricstream_tests::victoriametrics::VictoriaMetrics;
use metricstream_tests::{DRAIN_TIMEOUT, LoadSpec, ServiceSpec, TestDir, http_client, run_load};
use prost::Message;

const SAMPLES_SENT: &str = "metricstream_consumer_remote_write_samples_sent_total";

async fn prometheus_store(dir: &TestDir) -> Prometheus {
    Prometheus::start_store(
        dir.path(),
        &dir.logs_dir(),
        "prometheus",
        OutOfOrder::Refused,
    )
    .await
}

fn consumer_spec(dir: &TestDir, store_url: String) -> ServiceSpec {
    ServiceSpec::consumer(dir, "consumer")
        .env("METRICSTREAM_SINK", "remote-write")
        .env("METRICSTREAM_SINK_URL", store_url)
        .env("METRICSTREAM_SINK_PROTOCOL", "2.0")
        .env("METRICSTREAM_SINK_MAX_SAMPLES_PER_REQUEST", "500")
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs PROMETHEUS: hack/prometheus.sh install (make test runs it)"]
async fn the_load_lands_in_prometheus_exactly_once_over_remote_write_2_0() {
    let dir = TestDir::new("remote-write-sink-v2-load");
    let store = Store::Prometheus(prometheus_store(&dir).await);
    let ingest = ServiceSpec::ingest(&dir, "ingest").start().await;
    let consumer = consumer_spec(&dir, store.write_url()).start().await;

    let report = run_load(LoadSpec::new(vec![ingest.base_url()], 20, 50, 10)).await;
    report.assert_all_accepted();
    let expected = report.expected();
    assert!(expected.problems.is_empty(), "{:?}", expected.problems);
    assert_eq!(expected.len(), 10_000);
    let series = store
        .wait_for_load_samples(expected.len(), DRAIN_TIMEOUT)
        .await;
    assert_exactly_once_in_store(&series, &expected);
    assert_eq!(consumer.metric(SAMPLES_SENT).await, expected.len() as f64);
    assert!(!dir.sink_dir().join("dead-letters").exists());
    consumer.terminate().await;
    ingest.terminate().await;
}

/// A remote-write 1.0 request (to the ingest) of two series with metadata: a counter and a
/// gauge.
fn typed_request(timestamp: i64) -> Vec<u8> {
    let series = |name: &str, value: f64| v1::TimeSeries {
        labels: vec![
            v1::Label {
                name: "__name__".to_owned(),
                value: name.to_owned(),
            },
            v1::Label {
                name: "job".to_owned(),
                value: "typed".to_owned(),
            },
        ],
        samples: vec![Sample { value, timestamp }],
        ..v1::TimeSeries::default()
    };
    let metadata = |name: &str, metric_type: MetricType| MetricMetadata {
        r#type: metric_type as i32,
        metric_family_name: name.to_owned(),
        ..MetricMetadata::default()
    };
    let request = v1::WriteRequest {
        timeseries: vec![series("requests_total", 42.0), series("temperature", 21.5)],
        metadata: vec![
            metadata("requests_total", MetricType::Counter),
            metadata("temperature", MetricType::Gauge),
        ],
    };
    snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .expect("snappy")
}

/// Prometheus keeps 2.0's metadata in its WAL but serves `/api/v1/metadata` from its scrape
/// targets only, so the kinds are read where a receiver shows them: a second MetricStream (the
/// ingest takes remote write 2.0 as Prometheus sends it, `remote_write_client`), whose file sink
/// writes each metric's kind. Ingest A (a 1.0 request with metadata) → consumer A (sink 2.0) →
/// ingest B → consumer B (JSON Lines).
#[tokio::test(flavor = "multi_thread")]
async fn kinds_reach_a_remote_write_2_0_receiver_as_metadata() {
    let dir = TestDir::new("remote-write-sink-v2-metadata");
    let receiver_dir = TestDir::new("remote-write-sink-v2-receiver");
    // The receiver knows consumer A as client `relay` by its bearer token.
    let tokens = receiver_dir.write_file("tokens", "relay=relay-token\n");
    let receiver = ServiceSpec::ingest(&receiver_dir, "ingest-b")
        .env("METRICSTREAM_TOKENS_FILE", tokens)
        .start()
        .await;
    let receiver_consumer = ServiceSpec::consumer(&receiver_dir, "consumer-b")
        .start()
        .await;
    let ingest = ServiceSpec::ingest(&dir, "ingest-a").start().await;
    let token_file = dir.write_file("relay-token", "relay-token\n");
    let consumer = consumer_spec(&dir, format!("{}/api/v1/write", receiver.base_url()))
        .env("METRICSTREAM_SINK_BEARER_TOKEN_FILE", token_file)
        .start()
        .await;
    let response = http_client(Duration::from_secs(10))
        .post(format!("{}/api/v1/write", ingest.base_url()))
        .header("Authorization", "typed")
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(typed_request(1_700_000_000_000))
        .send()
        .await
        .expect("the ingest answers");
    assert!(response.status().is_success(), "{response:?}");

    wait_for_lines(
        &receiver_dir.sink_dir(),
        2,
        Duration::from_millis(100),
        DRAIN_TIMEOUT,
    )
    .await;
    let lines = read_sink(&receiver_dir.sink_dir(), ReadMode::Live)
        .expect("the receiver's sink")
        .lines;
    let kind_of = |name: &str| {
        lines
            .iter()
            .find(|line| line.name == name)
            .map(|line| (line.value, line.kind.clone(), line.tags.clone()))
    };
    let job = |tags: &std::collections::BTreeMap<String, String>| tags.get("job").cloned();
    assert!(lines.iter().all(|line| line.client == "relay"), "{lines:?}");
    let (value, kind, tags) = kind_of("requests_total").expect("requests_total arrived");
    assert_eq!(
        (value, kind.as_deref(), job(&tags).as_deref()),
        (42.0, Some("counter"), Some("typed"))
    );
    let (value, kind, _) = kind_of("temperature").expect("temperature arrived");
    assert_eq!((value, kind.as_deref()), (21.5, Some("gauge")));
    assert_eq!(consumer.metric(SAMPLES_SENT).await, 2.0);
    consumer.terminate().await;
    ingest.terminate().await;
    receiver_consumer.terminate().await;
    receiver.terminate().await;
}

/// VictoriaMetrics v1.151 does not take remote write 2.0: whatever it answers, the consumer must
/// not count the samples as stored, must not dead-letter them, and must say why; a consumer of
/// the same group with `--sink-protocol 1.0` then stores them all (nothing was committed).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs VICTORIAMETRICS: hack/victoriametrics.sh install (make test runs it)"]
async fn a_store_without_remote_write_2_0_gets_nothing_committed_and_the_consumer_says_why() {
    let dir = TestDir::new("remote-write-sink-v2-refused");
    let store = VictoriaMetrics::start(dir.path(), &dir.logs_dir()).await;
    let ingest = ServiceSpec::ingest(&dir, "ingest").start().await;
    let consumer = consumer_spec(&dir, store.write_url()).start().await;
    let report = run_load(LoadSpec::new(vec![ingest.base_url()], 2, 5, 10)).await;
    report.assert_all_accepted();
    let expected = report.expected();

    let started = std::time::Instant::now();
    let reason = loop {
        let (status, body) = consumer.admin_get("/readyz").await;
        if status == 503 && body.contains("remote write 2.0") {
            break body;
        }
        assert!(
            started.elapsed() < DRAIN_TIMEOUT,
            "the consumer does not say the store refuses 2.0: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("readiness while the store does not take 2.0: {reason}");
    assert_eq!(consumer.metric(SAMPLES_SENT).await, 0.0);
    assert!(!dir.sink_dir().join("dead-letters").exists());
    assert!(store.export(r#"{__name__="m"}"#).await.is_empty());
    consumer.terminate().await;

    let consumer = ServiceSpec::consumer(&dir, "consumer-1.0")
        .env("METRICSTREAM_SINK", "remote-write")
        .env("METRICSTREAM_SINK_URL", store.write_url())
        .start()
        .await;
    let series = store
        .wait_for_samples(r#"{__name__="m"}"#, expected.len(), DRAIN_TIMEOUT)
        .await;
    assert_exactly_once_in_store(&series, &expected);
    consumer.terminate().await;
    ingest.terminate().await;
}
