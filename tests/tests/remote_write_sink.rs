//! The remote-write sink against a real store: the real ingest (file backend) and consumer
//! (`METRICSTREAM_SINK=remote-write`) in front of VictoriaMetrics (built by
//! `hack/victoriametrics.sh`; `VICTORIAMETRICS` names the binary), run with
//! `-dedup.minScrapeInterval=1ms` so that a replayed sample is kept once.
//!
//! - 20 clients × 50 requests × 10 metrics: every acknowledged metric is in the store exactly
//!   once, with its labels, value and timestamp, and nothing else is;
//! - the same with the consumer killed (`kill -9`) mid-load and restarted: the batch it was
//!   sending is replayed and the store still holds each sample once;
//! - the requirement itself: one remote-write request sent twice is kept once with
//!   `-dedup.minScrapeInterval=1ms`, and twice without it.

use metricstream_backend::remote_write_proto::{Sample, v1};
use metricstream_tests::http_client;
use prost::Message;
use std::time::{Duration, Instant};

use metricstream_tests::victoriametrics::{VictoriaMetrics, assert_exactly_once_in_store};
use metricstream_tests::{
    DRAIN_TIMEOUT, LoadSpec, Service, ServiceSpec, TestDir, run_load, start_load,
};

const CLIENTS: usize = 20;
const REQUESTS_PER_CLIENT: u64 = 50;
const METRICS_PER_REQUEST: u32 = 10;
const SELECTOR: &str = r#"{__name__="m"}"#;

fn consumer_spec(dir: &TestDir, store: &VictoriaMetrics) -> ServiceSpec {
    ServiceSpec::consumer(dir, "consumer")
        .env("METRICSTREAM_SINK", "remote-write")
        .env("METRICSTREAM_SINK_URL", store.write_url())
        // Several requests per batch, so a batch can fail (or be killed) half sent.
        .env("METRICSTREAM_SINK_MAX_SAMPLES_PER_REQUEST", "500")
}

fn load_spec(ingest: &Service) -> LoadSpec {
    LoadSpec::new(
        vec![ingest.base_url()],
        CLIENTS,
        REQUESTS_PER_CLIENT,
        METRICS_PER_REQUEST,
    )
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs VICTORIAMETRICS: hack/victoriametrics.sh install (make test runs it)"]
async fn twenty_clients_fifty_requests_land_in_victoriametrics_exactly_once() {
    let dir = TestDir::new("remote-write-sink");
    let store = VictoriaMetrics::start(dir.path(), &dir.logs_dir()).await;
    let ingest = ServiceSpec::ingest(&dir, "ingest").start().await;
    let consumer = consumer_spec(&dir, &store).start().await;

    let started = Instant::now();
    let report = run_load(load_spec(&ingest)).await;
    report.assert_all_accepted();
    let expected = report.expected();
    assert!(expected.problems.is_empty(), "{:?}", expected.problems);
    assert_eq!(
        expected.len(),
        CLIENTS * REQUESTS_PER_CLIENT as usize * METRICS_PER_REQUEST as usize
    );
    let loaded = started.elapsed();
    let series = store
        .wait_for_samples(SELECTOR, expected.len(), DRAIN_TIMEOUT)
        .await;
    let landed = started.elapsed();
    println!(
        "{} samples: load acknowledged in {loaded:.2?}, all exported from VictoriaMetrics after \
         {landed:.2?} ({:.0} samples/s end to end, {} build)",
        expected.len(),
        expected.len() as f64 / landed.as_secs_f64(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    assert_exactly_once_in_store(&series, &expected);

    let sent = consumer
        .metric("metricstream_consumer_remote_write_samples_sent_total")
        .await;
    assert_eq!(
        sent,
        expected.len() as f64,
        "no batch was sent twice without a crash"
    );
    let dead = consumer
        .metric("metricstream_consumer_dead_lettered_samples_total")
        .await;
    assert_eq!(dead, 0.0);
    assert!(!dir.sink_dir().join("dead-letters").exists());
    consumer.terminate().await;
    ingest.terminate().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs VICTORIAMETRICS: hack/victoriametrics.sh install (make test runs it)"]
async fn a_consumer_killed_mid_load_replays_into_victoriametrics_without_duplicates() {
    let dir = TestDir::new("remote-write-sink-kill");
    let store = VictoriaMetrics::start(dir.path(), &dir.logs_dir()).await;
    let ingest = ServiceSpec::ingest(&dir, "ingest").start().await;
    let spec = consumer_spec(&dir, &store);
    let consumer = spec.start().await;

    // Paced, so the load is still running when the consumer dies.
    let load = start_load(load_spec(&ingest).pause(Duration::from_millis(20)));
    let deadline = Instant::now() + Duration::from_secs(60);
    let sent_before_kill = loop {
        let sent = consumer
            .metric("metricstream_consumer_remote_write_samples_sent_total")
            .await;
        if sent >= 1000.0 {
            break sent;
        }
        assert!(
            Instant::now() < deadline,
            "the consumer sent fewer than 1000 samples within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let acknowledged_at_kill = load.acknowledged();
    consumer.kill();
    let consumer = spec.start().await;
    let report = load.finish().await;
    report.assert_all_accepted();
    println!(
        "killed the consumer with {acknowledged_at_kill} of {} requests acknowledged",
        report.outcomes.len()
    );
    assert!(
        (acknowledged_at_kill as usize) < report.outcomes.len(),
        "the kill came after the load had finished"
    );

    let expected = report.expected();
    let series = store
        .wait_for_samples(SELECTOR, expected.len(), DRAIN_TIMEOUT)
        .await;
    assert_exactly_once_in_store(&series, &expected);
    let sent_after_restart = consumer
        .metric("metricstream_consumer_remote_write_samples_sent_total")
        .await;
    // At least: the first process may have sent more between the reading and the kill.
    println!(
        "samples sent: at least {sent_before_kill} before the kill, {sent_after_restart} after \
         the restart, for {} acknowledged: at least {} replayed",
        expected.len(),
        sent_before_kill + sent_after_restart - expected.len() as f64
    );
    consumer.terminate().await;
    ingest.terminate().await;
}

/// Posts `body` (a snappy-compressed remote-write 1.0 request) to `store` and expects a 2xx.
async fn remote_write(store: &VictoriaMetrics, body: Vec<u8>) {
    let response = http_client(Duration::from_secs(10))
        .post(store.write_url())
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body)
        .send()
        .await
        .expect("VictoriaMetrics answers");
    assert!(response.status().is_success(), "{response:?}");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs VICTORIAMETRICS: hack/victoriametrics.sh install (make test runs it)"]
async fn victoriametrics_keeps_a_replayed_sample_once_only_with_dedup() {
    let dir = TestDir::new("remote-write-dedup");
    let label = |name: &str, value: &str| v1::Label {
        name: name.to_owned(),
        value: value.to_owned(),
    };
    let request = v1::WriteRequest {
        timeseries: vec![v1::TimeSeries {
            labels: vec![label("__name__", "replayed"), label("job", "dedup")],
            samples: vec![Sample {
                value: 1.5,
                timestamp: 1_700_000_000_123,
            }],
            ..v1::TimeSeries::default()
        }],
        metadata: Vec::new(),
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .expect("snappy");
    for (dedup, kept) in [(true, 1), (false, 2)] {
        let name = if dedup { "vm-dedup" } else { "vm-no-dedup" };
        let store = VictoriaMetrics::start_with(dir.path(), &dir.logs_dir(), name, dedup).await;
        remote_write(&store, body.clone()).await;
        remote_write(&store, body.clone()).await;
        // Poll for more than expected: the export must settle at `kept`, not merely reach it.
        let series = store
            .wait_for_samples("replayed", kept + 1, Duration::from_secs(3))
            .await;
        let values: Vec<f64> = series.iter().flat_map(|s| s.values.clone()).collect();
        assert_eq!(
            values,
            vec![1.5; kept],
            "dedup {dedup}: the same sample sent twice is kept {kept} time(s)"
        );
    }
}
