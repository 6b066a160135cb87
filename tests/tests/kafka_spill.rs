//! The ingest's spill (`--spill-dir`) on the Kafka backend, against a real broker stopped under
//! load: requests keep being answered `202` while the broker is down, and once it is back every
//! acknowledged metric reaches the sink exactly once, each client's requests in order — also
//! when the ingest is killed with SIGKILL while spilling and while forwarding, and when the
//! spill fills up (then `503` + `Retry-After`, and nothing acknowledged is lost).
//!
//! Each test stops a private broker of its own (`hack/kafka.sh` on free ports); like the other
//! broker tests they run where `KAFKA_BOOTSTRAP` is set, as `make test` does.

use std::time::{Duration, Instant};

use metricstream_tests::kafka::{PrivateBroker, bootstrap_from_env, unique_name};
use metricstream_tests::sink::client_order_violations;
use metricstream_tests::{
    LoadReport, LoadSpec, ReadMode, Service, ServiceSpec, TestDir, read_sink, start_load,
    try_wait_for_sink, verify,
};

/// How long the broker stays down under load (the scenario).
const OUTAGE: Duration = Duration::from_secs(60);
/// Clients of the load, each sending its next request once the last is answered.
const CLIENTS: usize = 20;
const METRICS_PER_REQUEST: u32 = 5;
const PAUSE: Duration = Duration::from_millis(20);
/// How long the consumer may take to bring everything to the sink after the broker returns.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(240);
const PARTITIONS: u32 = 4;

fn spill_services(
    dir: &TestDir,
    bootstrap: &str,
    topic: &str,
    max_bytes: u64,
) -> (ServiceSpec, ServiceSpec) {
    let ingest = ServiceSpec::ingest(dir, "ingest")
        .kafka(bootstrap, topic)
        .partitions(PARTITIONS)
        .env("METRICSTREAM_SPILL_DIR", dir.path().join("spill"))
        .env("METRICSTREAM_SPILL_MAX_BYTES", max_bytes.to_string());
    let consumer = ServiceSpec::consumer(dir, "consumer")
        .kafka(bootstrap, topic)
        .partitions(PARTITIONS)
        .env("METRICSTREAM_GROUP", unique_name("spill-writer"));
    (ingest, consumer)
}

/// A test's directory, its private broker (stopped and restarted by the test; `down` when
/// dropped, before the directory) and the two services on a fresh topic with a spill of
/// `max_bytes`. Bind them in this order so they drop in reverse.
async fn spill_setup(
    name: &str,
    max_bytes: u64,
) -> (TestDir, PrivateBroker, ServiceSpec, ServiceSpec) {
    let _ = bootstrap_from_env();
    let dir = TestDir::new(name);
    let broker = PrivateBroker::up(&dir).await;
    let topic = unique_name(&format!("metricstream-test-{name}"));
    let (ingest, consumer) = spill_services(&dir, broker.bootstrap(), &topic, max_bytes);
    (dir, broker, ingest, consumer)
}

fn load(ingest: &ServiceSpec) -> LoadSpec {
    LoadSpec::new(
        vec![ingest.base_url()],
        CLIENTS,
        u64::MAX,
        METRICS_PER_REQUEST,
    )
    .client_prefix("spill")
    .pause(PAUSE)
    .request_timeout(Duration::from_secs(30))
}

/// Waits (bounded) until the ingest's `series` reaches `at_least`.
async fn wait_for_metric(service: &Service, series: &str, at_least: f64, timeout: Duration) {
    let started = Instant::now();
    loop {
        let value = service.metric(series).await;
        if value >= at_least {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "{series} stayed at {value} (< {at_least}) for {timeout:?}; log: {}",
            service.log_path().display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every acknowledged metric once in the sink, every client's requests in order.
async fn assert_exactly_once_in_order(dir: &TestDir, report: &LoadReport) {
    let expected = report.expected();
    if let Err(verification) = try_wait_for_sink(&dir.sink_dir(), &expected, DRAIN_TIMEOUT).await {
        panic!(
            "not every acknowledged metric reached the sink: {}",
            verification.details()
        );
    }
    let contents = read_sink(&dir.sink_dir(), ReadMode::Live).expect("reading the sink");
    let verification = verify(&contents, &expected);
    assert!(
        verification.exactly_once(),
        "the sink is not exactly the acknowledged metrics: {}",
        verification.details()
    );
    let disorder = client_order_violations(&contents);
    assert!(
        disorder.is_empty(),
        "{} clients' requests are out of order in the sink, e.g. {:?}",
        disorder.len(),
        &disorder[..disorder.len().min(5)]
    );
    println!("sink: {}", verification.summary());
}

fn spilled_answers(report: &LoadReport) -> usize {
    report
        .outcomes
        .iter()
        .filter(|o| {
            o.result.as_ref().is_ok_and(|answer| {
                answer.status == 202 && answer.body.contains("\"spilled\":true")
            })
        })
        .count()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a Kafka broker: KAFKA_BOOTSTRAP from hack/kafka.sh up (make test runs it)"]
async fn a_broker_outage_under_load_is_answered_202_and_replayed_exactly_once_in_order() {
    let (dir, broker, ingest_spec, consumer_spec) =
        spill_setup("kafka-spill-outage", 1 << 30).await;
    let ingest = ingest_spec.start().await;
    let consumer = consumer_spec.start().await;

    let load = start_load(load(&ingest_spec));
    load.wait_for_acknowledged(300, Duration::from_secs(90))
        .await;
    let before_outage = load.acknowledged();
    broker.stop_broker(false).await;
    let stopped_at = Instant::now();
    tokio::time::sleep(OUTAGE).await;
    let during_outage = load.acknowledged() - before_outage;
    let spilled_during = ingest.metric("metricstream_spill_records_total").await;
    let backlog_at_end = ingest.metric("metricstream_spill_backlog_records").await;
    broker.start_broker().await;
    let started_at = Instant::now();
    let outage = started_at - stopped_at;
    // The spill drains while the load goes on: new requests queue behind it until it is empty.
    wait_for_metric(
        &ingest,
        "metricstream_spill_replayed_records_total",
        spilled_during,
        DRAIN_TIMEOUT,
    )
    .await;
    let replayed_in = started_at.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let report = load.stop_and_finish().await;
    println!(
        "broker down {:?} under {CLIENTS} clients: {during_outage} requests acknowledged meanwhile \
         ({spilled_during} spilled records, {backlog_at_end} waiting at the restart), replayed \
         within {replayed_in:?} of the restart; load: {}; results: {:?}",
        outage,
        report.summary(),
        report.result_counts()
    );
    let refused: Vec<String> = report
        .outcomes
        .iter()
        .filter(|o| o.status() != Some(202))
        .take(5)
        .map(|o| o.describe())
        .collect();
    assert!(
        refused.is_empty(),
        "every request must be answered 202 through the outage; refused: {refused:?}"
    );
    assert!(
        during_outage > 1000,
        "only {during_outage} requests were acknowledged while the broker was down"
    );
    assert!(
        spilled_answers(&report) as u64 >= during_outage / 2,
        "the answers do not say the records were spilled"
    );
    assert_exactly_once_in_order(&dir, &report).await;
    assert_eq!(
        ingest.metric("metricstream_spill_backlog_records").await,
        0.0,
        "the spill is not empty after the replay"
    );
    consumer.terminate().await;
    ingest.terminate().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a Kafka broker: KAFKA_BOOTSTRAP from hack/kafka.sh up (make test runs it)"]
async fn the_ingest_killed_while_spilling_and_while_replaying_loses_and_duplicates_nothing() {
    let (dir, broker, ingest_spec, consumer_spec) = spill_setup("kafka-spill-kill", 1 << 30).await;
    // Slow forwarding down (a long linger per record) so the kill finds it half done.
    let ingest_spec = ingest_spec.env("METRICSTREAM_KAFKA_LINGER_MS", "20");
    let mut ingest = ingest_spec.start().await;
    let consumer = consumer_spec.start().await;

    let load = start_load(load(&ingest_spec));
    load.wait_for_acknowledged(200, Duration::from_secs(90))
        .await;
    broker.stop_broker(false).await;
    wait_for_metric(
        &ingest,
        "metricstream_spill_records_total",
        500.0,
        Duration::from_secs(60),
    )
    .await;
    // SIGKILL while spilling: the next process on the volume finds the spill.
    ingest.kill();
    ingest = ingest_spec.start().await;
    wait_for_metric(
        &ingest,
        "metricstream_spill_records_total",
        500.0,
        Duration::from_secs(60),
    )
    .await;
    let backlog = ingest.metric("metricstream_spill_backlog_records").await;
    assert!(
        backlog >= 1000.0,
        "the restarted ingest sees only {backlog} spilled records waiting"
    );
    broker.start_broker().await;
    // SIGKILL while forwarding: some of the spill is in Kafka, some not, and the forwarder's
    // last position may be behind what Kafka acknowledged.
    wait_for_metric(
        &ingest,
        "metricstream_spill_replayed_records_total",
        200.0,
        Duration::from_secs(120),
    )
    .await;
    let left = ingest.metric("metricstream_spill_backlog_records").await;
    ingest.kill();
    println!("killed while forwarding with {left} records still in the spill");
    assert!(
        left > 0.0,
        "the spill was empty before the kill: nothing was replayed twice"
    );
    ingest = ingest_spec.start().await;
    wait_for_metric(
        &ingest,
        "metricstream_spill_replayed_records_total",
        1.0,
        Duration::from_secs(120),
    )
    .await;
    load.wait_for_acknowledged(load.acknowledged() + 200, Duration::from_secs(120))
        .await;
    let report = load.stop_and_finish().await;
    // The restarted process counted the spill it found by its segments' size; once all of it is
    // forwarded, nothing may stay counted against the limit.
    let started = Instant::now();
    while ingest.metric("metricstream_spill_backlog_records").await > 0.0 {
        assert!(
            started.elapsed() < DRAIN_TIMEOUT,
            "the spill was not forwarded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        ingest.metric("metricstream_spill_usage_bytes").await,
        0.0,
        "an empty spill still counts bytes against its limit"
    );
    println!(
        "two kills of a spilling ingest: {}; results: {:?}",
        report.summary(),
        report.result_counts()
    );
    assert_exactly_once_in_order(&dir, &report).await;
    let dropped = consumer
        .metric("metricstream_kafka_replay_duplicates_dropped_total")
        .await;
    println!("second copies the consumer dropped: {dropped}");
    consumer.terminate().await;
    ingest.terminate().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a Kafka broker: KAFKA_BOOTSTRAP from hack/kafka.sh up (make test runs it)"]
async fn a_full_spill_answers_503_with_retry_after_and_loses_nothing_acknowledged() {
    // The smallest spill the flag allows: about 3,000 requests of this load.
    let (dir, broker, ingest_spec, consumer_spec) = spill_setup("kafka-spill-full", 1 << 20).await;
    let ingest = ingest_spec.start().await;
    let consumer = consumer_spec.start().await;

    let load = start_load(load(&ingest_spec).refusal_pause(Duration::from_millis(200)));
    load.wait_for_acknowledged(200, Duration::from_secs(90))
        .await;
    broker.stop_broker(false).await;
    wait_for_metric(
        &ingest,
        "metricstream_spill_full_refusals_total",
        50.0,
        Duration::from_secs(120),
    )
    .await;
    let usage = ingest.metric("metricstream_spill_usage_bytes").await;
    assert!(
        usage <= f64::from(1u32 << 20),
        "the spill holds {usage} bytes, over its limit"
    );
    broker.start_broker().await;
    wait_for_metric(
        &ingest,
        "metricstream_spill_replayed_records_total",
        ingest.metric("metricstream_spill_records_total").await,
        DRAIN_TIMEOUT,
    )
    .await;
    let report = load.stop_and_finish().await;
    println!(
        "spill of 1 MiB filled during an outage: {}; results: {:?}",
        report.summary(),
        report.result_counts()
    );
    let full: Vec<_> = report
        .outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().ok())
        .filter(|answer| answer.status == 503)
        .collect();
    assert!(!full.is_empty(), "no request was refused with 503");
    for answer in &full {
        assert!(
            answer.retry_after.is_some(),
            "a 503 without Retry-After: {}",
            answer.body
        );
    }
    assert!(
        full.iter()
            .any(|answer| answer.body.contains("spill is full")),
        "no 503 says the spill is full: {:?}",
        full.first().map(|answer| &answer.body)
    );
    assert_exactly_once_in_order(&dir, &report).await;
    consumer.terminate().await;
    ingest.terminate().await;
}
