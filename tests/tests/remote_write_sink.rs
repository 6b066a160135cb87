//! The remote-write sink against real stores: the real ingest and consumer
//! (`METRICSTREAM_SINK=remote-write`) on each queue backend (file; Kafka, with `KAFKA_BOOTSTRAP`)
//! in front of each store:
//!
//! - VictoriaMetrics single-node (`hack/victoriametrics.sh`, `VICTORIAMETRICS`) with
//!   `-dedup.minScrapeInterval=1ms`, read back through `/api/v1/export`;
//! - Prometheus (`hack/prometheus.sh`, `PROMETHEUS`) with `--web.enable-remote-write-receiver`,
//!   read back through range-vector queries (raw samples).
//!
//! Per (backend, store):
//!
//! - 20 clients × 50 requests × 10 metrics: every acknowledged metric is in the store exactly
//!   once, with its labels, value and timestamp, and nothing else is;
//! - the same with the consumer killed (`kill -9`) mid-load and restarted: the batch it was
//!   sending is replayed and the store still holds each sample once, no dead letters.
//!
//! Per backend, with Prometheus: samples it refuses for good (too far in the future, older than
//! its head, another value at a stored timestamp) are dead letters with its reason, and the load
//! around them reaches the store exactly once.
//!
//! The stores' own rules, measured directly: VictoriaMetrics keeps one request sent twice once
//! only with dedup; Prometheus refuses a whole remote-write 1.0 request (rolled back) for one
//! out-of-order or conflicting sample, and takes an older identical sample only with an
//! out-of-order window, which decides whether a replay through the consumer is harmless.

use std::time::{Duration, Instant};

use metricstream_backend::remote_write_proto::{Sample, v1};
use metricstream_tests::kafka::{bootstrap_from_env, unique_name};
use metricstream_tests::load::BASE_TIMESTAMP_MS;
use metricstream_tests::prometheus::{OutOfOrder, Prometheus};
use metricstream_tests::store::{
    DeadLetter, Store, StoreKind, assert_exactly_once_in_store, read_dead_letters,
};
use metricstream_tests::victoriametrics::VictoriaMetrics;
use metricstream_tests::{
    DRAIN_TIMEOUT, Expected, LoadSpec, MetricId, Service, ServiceSpec, TestDir, http_client,
    run_load, start_load,
};
use prost::Message;
use serde_json::{Value, json};

const CLIENTS: usize = 20;
const REQUESTS_PER_CLIENT: u64 = 50;
const METRICS_PER_REQUEST: u32 = 10;
/// A consumer on Kafka restarted in its group waits for the killed member's session (10 s) to
/// expire, and the tests share two cores with the broker and the stores.
const KAFKA_DRAIN_TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    File,
    Kafka,
}

/// A store, an ingest and the spec of a consumer sending to the store, on `backend`.
struct Pipeline {
    dir: TestDir,
    store: Store,
    ingest: Service,
    consumer_spec: ServiceSpec,
    drain_timeout: Duration,
}

impl Pipeline {
    async fn start(name: &str, backend: Backend, store: StoreKind) -> Self {
        let dir = TestDir::new(&format!(
            "{name}-{}-{}",
            format!("{backend:?}").to_lowercase(),
            store.to_string().to_lowercase()
        ));
        let store = Store::start(store, &dir).await;
        let mut ingest_spec = ServiceSpec::ingest(&dir, "ingest");
        let mut consumer_spec = ServiceSpec::consumer(&dir, "consumer")
            .env("METRICSTREAM_SINK", "remote-write")
            .env("METRICSTREAM_SINK_URL", store.write_url())
            // Several requests per batch, so a batch can fail (or be killed) half sent.
            .env("METRICSTREAM_SINK_MAX_SAMPLES_PER_REQUEST", "500");
        let mut drain_timeout = DRAIN_TIMEOUT;
        if backend == Backend::Kafka {
            let bootstrap = bootstrap_from_env();
            let topic = unique_name("remote-write-sink");
            ingest_spec = ingest_spec.kafka(&bootstrap, &topic);
            consumer_spec = consumer_spec
                .kafka(&bootstrap, &topic)
                .env("METRICSTREAM_GROUP", unique_name("remote-write"));
            drain_timeout = KAFKA_DRAIN_TIMEOUT;
        }
        let ingest = ingest_spec.start().await;
        Self {
            dir,
            store,
            ingest,
            consumer_spec,
            drain_timeout,
        }
    }

    fn load_spec(&self) -> LoadSpec {
        LoadSpec::new(
            vec![self.ingest.base_url()],
            CLIENTS,
            REQUESTS_PER_CLIENT,
            METRICS_PER_REQUEST,
        )
    }

    fn dead_letters(&self) -> Vec<DeadLetter> {
        read_dead_letters(&self.dir.sink_dir())
    }

    /// Reads the store until it holds `expected`'s count of the load's samples, then checks each
    /// is there once, as sent.
    async fn assert_store_holds_exactly(&self, expected: &Expected) {
        let series = self
            .store
            .wait_for_load_samples(expected.len(), self.drain_timeout)
            .await;
        assert_exactly_once_in_store(&series, expected);
    }
}

const SAMPLES_SENT: &str = "metricstream_consumer_remote_write_samples_sent_total";
const DEAD_LETTERED: &str = "metricstream_consumer_dead_lettered_samples_total";

fn build_kind() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

// ---- 20 clients × 50 requests × 10 metrics ------------------------------------------------------

async fn load_lands_exactly_once(backend: Backend, store: StoreKind) {
    let pipeline = Pipeline::start("remote-write-sink", backend, store).await;
    let consumer = pipeline.consumer_spec.start().await;

    let started = Instant::now();
    let report = run_load(pipeline.load_spec()).await;
    report.assert_all_accepted();
    let expected = report.expected();
    assert!(expected.problems.is_empty(), "{:?}", expected.problems);
    assert_eq!(
        expected.len(),
        CLIENTS * REQUESTS_PER_CLIENT as usize * METRICS_PER_REQUEST as usize
    );
    let loaded = started.elapsed();
    pipeline.assert_store_holds_exactly(&expected).await;
    let landed = started.elapsed();
    println!(
        "{backend:?} backend, {store}: {} samples, load acknowledged in {loaded:.2?}, all read \
         back after {landed:.2?} ({:.0} samples/s end to end, {} build)",
        expected.len(),
        expected.len() as f64 / landed.as_secs_f64(),
        build_kind()
    );

    let sent = consumer.metric(SAMPLES_SENT).await;
    assert_eq!(
        sent,
        expected.len() as f64,
        "no batch was sent twice without a crash"
    );
    assert_eq!(consumer.metric(DEAD_LETTERED).await, 0.0);
    assert!(!pipeline.dir.sink_dir().join("dead-letters").exists());
    consumer.terminate().await;
    pipeline.ingest.terminate().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs VICTORIAMETRICS: hack/victoriametrics.sh install (make test runs it)"]
async fn file_load_lands_in_victoriametrics_exactly_once() {
    load_lands_exactly_once(Backend::File, StoreKind::VictoriaMetrics).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs PROMETHEUS: hack/prometheus.sh install (make test runs it)"]
async fn file_load_lands_in_prometheus_exactly_once() {
    load_lands_exactly_once(Backend::File, StoreKind::Prometheus).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs KAFKA_BOOTSTRAP and VICTORIAMETRICS (make test sets both)"]
async fn kafka_load_lands_in_victoriametrics_exactly_once() {
    load_lands_exactly_once(Backend::Kafka, StoreKind::VictoriaMetrics).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs KAFKA_BOOTSTRAP and PROMETHEUS (make test sets both)"]
async fn kafka_load_lands_in_prometheus_exactly_once() {
    load_lands_exactly_once(Backend::Kafka, StoreKind::Prometheus).await;
}

// ---- the consumer killed mid-load ---------------------------------------------------------------

async fn killed_consumer_replays_without_duplicates(backend: Backend, store: StoreKind) {
    let pipeline = Pipeline::start("remote-write-sink-kill", backend, store).await;
    let consumer = pipeline.consumer_spec.start().await;

    // Paced, so the load is still running when the consumer dies.
    let load = start_load(pipeline.load_spec().pause(Duration::from_millis(20)));
    let deadline = Instant::now() + Duration::from_secs(60);
    let sent_before_kill = loop {
        let sent = consumer.metric(SAMPLES_SENT).await;
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
    let consumer = pipeline.consumer_spec.start().await;
    let report = load.finish().await;
    report.assert_all_accepted();
    println!(
        "{backend:?} backend, {store}: killed the consumer with {acknowledged_at_kill} of {} \
         requests acknowledged",
        report.outcomes.len()
    );
    assert!(
        (acknowledged_at_kill as usize) < report.outcomes.len(),
        "the kill came after the load had finished"
    );

    let expected = report.expected();
    pipeline.assert_store_holds_exactly(&expected).await;
    let sent_after_restart = consumer.metric(SAMPLES_SENT).await;
    // At least: the first process may have sent more between the reading and the kill.
    println!(
        "samples sent: at least {sent_before_kill} before the kill, {sent_after_restart} after \
         the restart, for {} acknowledged: at least {} replayed",
        expected.len(),
        (sent_before_kill + sent_after_restart - expected.len() as f64).max(0.0)
    );
    // Each series of the load has one sample, so a replayed sample is always identical to its
    // series' newest: Prometheus takes it with a 2xx too (see the out-of-order tests below).
    let dead = pipeline.dead_letters();
    assert!(
        dead.is_empty(),
        "{} dead letters, the first: {:?}",
        dead.len(),
        dead.first()
    );
    consumer.terminate().await;
    pipeline.ingest.terminate().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs VICTORIAMETRICS: hack/victoriametrics.sh install (make test runs it)"]
async fn file_consumer_killed_mid_load_replays_into_victoriametrics_without_duplicates() {
    killed_consumer_replays_without_duplicates(Backend::File, StoreKind::VictoriaMetrics).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs PROMETHEUS: hack/prometheus.sh install (make test runs it)"]
async fn file_consumer_killed_mid_load_replays_into_prometheus_without_duplicates() {
    killed_consumer_replays_without_duplicates(Backend::File, StoreKind::Prometheus).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs KAFKA_BOOTSTRAP and VICTORIAMETRICS (make test sets both)"]
async fn kafka_consumer_killed_mid_load_replays_into_victoriametrics_without_duplicates() {
    killed_consumer_replays_without_duplicates(Backend::Kafka, StoreKind::VictoriaMetrics).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs KAFKA_BOOTSTRAP and PROMETHEUS (make test sets both)"]
async fn kafka_consumer_killed_mid_load_replays_into_prometheus_without_duplicates() {
    killed_consumer_replays_without_duplicates(Backend::Kafka, StoreKind::Prometheus).await;
}

// ---- a store that refuses some samples ----------------------------------------------------------

/// Posts `metrics` to the ingest as client `client` and expects a 202.
async fn post_metrics(ingest: &Service, client: &str, metrics: Vec<Value>) {
    let response = http_client(Duration::from_secs(10))
        .post(format!("{}/metrics", ingest.base_url()))
        .header("authorization", client)
        .json(&json!({ "metrics": metrics }))
        .send()
        .await
        .expect("the ingest answers");
    assert_eq!(response.status(), 202, "{response:?}");
}

/// Polls the dead letters until there are `count`; fails after `timeout`.
async fn wait_for_dead_letters(sink_dir: &std::path::Path, count: usize, timeout: Duration) {
    let started = Instant::now();
    loop {
        let held = read_dead_letters(sink_dir).len();
        if held >= count {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "{held} dead letters after {timeout:?}, waited for {count}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A metric of the load's shape (name `m`, tags client/seq/i) with its own value and timestamp.
fn metric(id: &MetricId, value: f64, timestamp: i64) -> Value {
    let mut metric = id.to_json();
    metric["value"] = json!(value);
    metric["timestamp"] = json!(timestamp);
    metric
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis() as i64
}

/// Samples Prometheus refuses for good once the load's first half is stored.
#[derive(Clone, Copy)]
enum Refused {
    /// More than 10 minutes ahead of its clock.
    TooFarAhead,
    /// More than an hour older than its newest sample (its head's lower bound).
    TooOld,
    /// Another value at the timestamp of a stored sample of the series.
    Conflicting,
}

impl Refused {
    /// The sender: the conflicting samples are of the load's stored series, the others new.
    fn client(self) -> &'static str {
        match self {
            Self::TooFarAhead => "refused-ahead",
            Self::TooOld => "refused-old",
            Self::Conflicting => "before-0",
        }
    }

    fn metric(self, id: &MetricId) -> Value {
        match self {
            Self::TooFarAhead => metric(id, 1.0, now_ms() + 24 * 3_600_000),
            Self::TooOld => metric(id, 1.0, BASE_TIMESTAMP_MS - 2 * 3_600_000),
            Self::Conflicting => metric(id, id.value() + 0.5, id.timestamp()),
        }
    }

    /// What Prometheus' answer says.
    fn reason(self) -> &'static str {
        match self {
            Self::TooFarAhead => "out of bounds: timestamp is too far in the future",
            Self::TooOld => "out of bounds",
            Self::Conflicting => "duplicate sample for timestamp",
        }
    }
}

/// The refusals, each sent in requests of its own after the first half of the load is stored
/// (so that Prometheus' head is at the load's timestamps), then the second half: the refused
/// samples are dead letters with Prometheus' reason, everything else is in the store once.
async fn refused_samples_are_dead_letters_and_the_rest_flows(backend: Backend) {
    const REFUSED_PER_KIND: u32 = 5;
    let pipeline = Pipeline::start("remote-write-refused", backend, StoreKind::Prometheus).await;
    let consumer = pipeline.consumer_spec.start().await;
    let half = |prefix: &str| {
        let mut spec = pipeline.load_spec().client_prefix(prefix);
        spec.requests_per_client = REQUESTS_PER_CLIENT / 2;
        spec
    };

    let before = run_load(half("before")).await;
    before.assert_all_accepted();
    let mut expected = before.expected();
    pipeline.assert_store_holds_exactly(&expected).await;

    let mut refused = Vec::new();
    for kind in [Refused::TooFarAhead, Refused::TooOld, Refused::Conflicting] {
        let client = kind.client();
        let metrics: Vec<Value> = (0..REFUSED_PER_KIND)
            .map(|index| kind.metric(&MetricId::new(client, 0, index)))
            .collect();
        refused.extend(metrics.iter().map(|metric| (metric.clone(), kind.reason())));
        post_metrics(&pipeline.ingest, client, metrics).await;
        // One kind at a time: Prometheus names only the first bad sample of a request.
        wait_for_dead_letters(
            &pipeline.dir.sink_dir(),
            refused.len(),
            pipeline.drain_timeout,
        )
        .await;
    }

    let after = run_load(half("after")).await;
    after.assert_all_accepted();
    for id in after.expected().metrics.keys() {
        expected.insert(id.clone(), Default::default());
    }
    pipeline.assert_store_holds_exactly(&expected).await;

    let dead = pipeline.dead_letters();
    assert_eq!(dead.len(), refused.len(), "{dead:#?}");
    for (sent, reason) in &refused {
        let matching: Vec<&DeadLetter> = dead
            .iter()
            .filter(|letter| {
                letter.tags == serde_json::from_value(sent["tags"].clone()).expect("tags")
                    && letter.timestamp == sent["timestamp"].as_i64()
                    && letter.value == sent["value"].as_f64()
            })
            .collect();
        assert_eq!(matching.len(), 1, "{sent} among {dead:#?}");
        let letter = matching[0];
        assert_eq!(letter.name, "m");
        assert_eq!(letter.status, Some(400), "{letter:?}");
        assert!(
            letter.reason.contains(reason),
            "{letter:?} should give the reason {reason:?}"
        );
    }
    assert_eq!(consumer.metric(DEAD_LETTERED).await, refused.len() as f64);
    println!(
        "{backend:?} backend, Prometheus: {} samples stored once, {} refused ones dead letters, \
         e.g. {:?}",
        expected.len(),
        dead.len(),
        dead.first().map(|letter| &letter.reason)
    );
    consumer.terminate().await;
    pipeline.ingest.terminate().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs PROMETHEUS: hack/prometheus.sh install (make test runs it)"]
async fn file_samples_prometheus_refuses_are_dead_letters_and_the_rest_flows() {
    refused_samples_are_dead_letters_and_the_rest_flows(Backend::File).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs KAFKA_BOOTSTRAP and PROMETHEUS (make test sets both)"]
async fn kafka_samples_prometheus_refuses_are_dead_letters_and_the_rest_flows() {
    refused_samples_are_dead_letters_and_the_rest_flows(Backend::Kafka).await;
}

// ---- the stores' own rules ----------------------------------------------------------------------

fn label(name: &str, value: &str) -> v1::Label {
    v1::Label {
        name: name.to_owned(),
        value: value.to_owned(),
    }
}

/// A snappy-compressed remote-write 1.0 request of one-sample series `(name, value, timestamp)`.
fn write_request(samples: &[(&str, f64, i64)]) -> Vec<u8> {
    let request = v1::WriteRequest {
        timeseries: samples
            .iter()
            .map(|(name, value, timestamp)| v1::TimeSeries {
                labels: vec![label("__name__", name), label("job", "direct")],
                samples: vec![Sample {
                    value: *value,
                    timestamp: *timestamp,
                }],
                ..v1::TimeSeries::default()
            })
            .collect(),
        metadata: Vec::new(),
    };
    snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .expect("snappy")
}

/// Posts `body` (a snappy-compressed remote-write 1.0 request) to `url`; the status and the
/// answer's text.
async fn remote_write(url: &str, body: Vec<u8>) -> (u16, String) {
    let response = http_client(Duration::from_secs(10))
        .post(url)
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body)
        .send()
        .await
        .expect("the store answers");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs VICTORIAMETRICS: hack/victoriametrics.sh install (make test runs it)"]
async fn victoriametrics_keeps_a_replayed_sample_once_only_with_dedup() {
    let dir = TestDir::new("remote-write-dedup");
    let body = write_request(&[("replayed", 1.5, 1_700_000_000_123)]);
    for (dedup, kept) in [(true, 1), (false, 2)] {
        let name = if dedup { "vm-dedup" } else { "vm-no-dedup" };
        let store = VictoriaMetrics::start_with(dir.path(), &dir.logs_dir(), name, dedup).await;
        for _ in 0..2 {
            let (status, text) = remote_write(&store.write_url(), body.clone()).await;
            assert!((200..300).contains(&status), "{status}: {text}");
        }
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

/// `(timestamp, value)` of every sample of the series named `name`.
async fn prometheus_samples(store: &Prometheus, name: &str) -> Vec<(i64, f64)> {
    store
        .raw_samples(
            &format!(r#"{{__name__="{name}"}}"#),
            BASE_TIMESTAMP_MS - 3_600_000,
            BASE_TIMESTAMP_MS + 3_600_000,
        )
        .await
        .iter()
        .flat_map(|series| series.timestamps.iter().copied().zip(series.values.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs PROMETHEUS: hack/prometheus.sh install (make test runs it)"]
async fn prometheus_refuses_a_whole_request_for_one_older_sample_without_an_out_of_order_window() {
    let dir = TestDir::new("remote-write-prometheus-rules");
    let (t1, t2) = (BASE_TIMESTAMP_MS + 1_000, BASE_TIMESTAMP_MS + 2_000);
    for window in [OutOfOrder::Refused, OutOfOrder::Window] {
        let name = format!("prometheus-{window:?}").to_lowercase();
        let store = Prometheus::start_store(dir.path(), &dir.logs_dir(), &name, window).await;
        let url = store.write_url();
        // A series with two samples, sent twice in order: the replay of the newest is an exact
        // duplicate, taken silently; the older one is out of order.
        let (status, text) = remote_write(&url, write_request(&[("s", 1.0, t1)])).await;
        assert_eq!(status, 204, "{text}");
        let (status, text) = remote_write(&url, write_request(&[("s", 2.0, t2)])).await;
        assert_eq!(status, 204, "{text}");
        let (status, text) = remote_write(&url, write_request(&[("s", 2.0, t2)])).await;
        assert_eq!(status, 204, "an identical newest sample: {text}");
        // The replay of the older sample, in one request with a sample of a new series.
        let (status, text) =
            remote_write(&url, write_request(&[("fresh", 7.0, t2), ("s", 1.0, t1)])).await;
        let fresh = prometheus_samples(&store, "fresh").await;
        match window {
            OutOfOrder::Refused => {
                assert_eq!(status, 400, "{text}");
                assert!(text.contains("out of order sample"), "{text}");
                assert!(
                    fresh.is_empty(),
                    "the whole request is rolled back: {fresh:?}"
                );
            }
            OutOfOrder::Window => {
                assert_eq!(status, 204, "{text}");
                assert_eq!(fresh, [(t2, 7.0)]);
            }
        }
        assert_eq!(
            prometheus_samples(&store, "s").await,
            [(t1, 1.0), (t2, 2.0)],
            "{window:?}: each sample once"
        );
        // Another value at a stored timestamp is refused either way.
        let (status, text) = remote_write(&url, write_request(&[("s", 3.0, t2)])).await;
        assert_eq!(status, 400, "{window:?}: {text}");
        assert!(
            text.contains("duplicate sample for timestamp"),
            "{window:?}: {text}"
        );
    }
}

/// The replay of an older, stored sample of a series, through the consumer, as a crash replay
/// sends it: without an out-of-order window Prometheus refuses it (400) and the sink
/// dead-letters a sample that is in the store; with one, it is taken and kept once.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs PROMETHEUS: hack/prometheus.sh install (make test runs it)"]
async fn a_replayed_older_sample_is_a_dead_letter_in_prometheus_unless_it_has_an_out_of_order_window()
 {
    let id = MetricId::new("replayer", 0, 0);
    let (t1, t2) = (BASE_TIMESTAMP_MS + 1_000, BASE_TIMESTAMP_MS + 2_000);
    let selector = r#"{__name__="m",client="replayer"}"#;
    for window in [OutOfOrder::Refused, OutOfOrder::Window] {
        let dir =
            TestDir::new(&format!("remote-write-prometheus-replay-{window:?}").to_lowercase());
        let store =
            Prometheus::start_store(dir.path(), &dir.logs_dir(), "prometheus", window).await;
        let ingest = ServiceSpec::ingest(&dir, "ingest").start().await;
        let consumer = ServiceSpec::consumer(&dir, "consumer")
            .env("METRICSTREAM_SINK", "remote-write")
            .env("METRICSTREAM_SINK_URL", store.write_url())
            .start()
            .await;
        post_metrics(&ingest, "replayer", vec![metric(&id, 1.0, t1)]).await;
        post_metrics(&ingest, "replayer", vec![metric(&id, 2.0, t2)]).await;
        let stored = store
            .wait_for_samples(selector, (t1 - 1, t2), 2, Duration::from_secs(30))
            .await;
        assert_eq!(stored.len(), 1, "{stored:?}");
        assert_eq!(stored[0].timestamps, [t1, t2]);
        // The older sample again, as a replay of its batch would send it.
        post_metrics(&ingest, "replayer", vec![metric(&id, 1.0, t1)]).await;
        let settled = Instant::now() + Duration::from_secs(30);
        loop {
            let sent = consumer.metric(SAMPLES_SENT).await;
            let dead = consumer.metric(DEAD_LETTERED).await;
            if sent + dead >= 3.0 {
                break;
            }
            assert!(
                Instant::now() < settled,
                "sent {sent}, dead-lettered {dead}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let dead = read_dead_letters(&dir.sink_dir());
        match window {
            OutOfOrder::Refused => {
                assert_eq!(dead.len(), 1, "{dead:?}");
                assert_eq!(dead[0].status, Some(400));
                assert!(dead[0].reason.contains("out of order sample"), "{dead:?}");
                assert_eq!(dead[0].timestamp, Some(t1));
            }
            OutOfOrder::Window => assert_eq!(dead.len(), 0, "{dead:?}"),
        }
        let stored = store.raw_samples(selector, t1 - 1, t2).await;
        assert_eq!(stored.len(), 1, "{stored:?}");
        assert_eq!(
            stored[0].timestamps,
            [t1, t2],
            "{window:?}: each sample once"
        );
        assert_eq!(stored[0].values, [1.0, 2.0]);
        consumer.terminate().await;
        ingest.terminate().await;
    }
}

/// Prometheus answers a remote-write 1.0 request holding one sample it refuses with a 400 and
/// stores none of the request (rolled back, see the test above); the sink splits a refused
/// request until only the refused samples are left, so good samples that share a request with a
/// bad one still reach the store. Here one ingest request (one record, so one remote-write
/// request) holds nine good metrics and one more than 10 minutes ahead of Prometheus' clock.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs PROMETHEUS: hack/prometheus.sh install (make test runs it)"]
async fn good_samples_sharing_a_request_with_a_refused_one_reach_prometheus() {
    let pipeline = Pipeline::start(
        "remote-write-refused-neighbours",
        Backend::File,
        StoreKind::Prometheus,
    )
    .await;
    let consumer = pipeline.consumer_spec.start().await;
    let good: Vec<MetricId> = (0..9)
        .map(|index| MetricId::new("mixed", 0, index))
        .collect();
    let refused = MetricId::new("mixed", 0, 9);
    let mut metrics: Vec<Value> = good.iter().map(MetricId::to_json).collect();
    metrics.push(metric(&refused, refused.value(), now_ms() + 24 * 3_600_000));
    post_metrics(&pipeline.ingest, "mixed", metrics).await;
    wait_for_dead_letters(&pipeline.dir.sink_dir(), 1, pipeline.drain_timeout).await;

    let mut expected = Expected::default();
    for id in &good {
        expected.insert(id.clone(), Default::default());
    }
    let series = pipeline
        .store
        .wait_for_load_samples(good.len(), Duration::from_secs(5))
        .await;
    let dead = pipeline.dead_letters();
    let dead_indexes: Vec<u32> = dead.iter().map(|letter| letter.index).collect();
    assert_eq!(
        dead_indexes,
        [9],
        "only the refused sample is a dead letter; reasons: {:?}",
        dead.iter().map(|letter| &letter.reason).collect::<Vec<_>>()
    );
    assert_exactly_once_in_store(&series, &expected);
    consumer.terminate().await;
    pipeline.ingest.terminate().await;
}
