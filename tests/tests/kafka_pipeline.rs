//! The pipeline on the Kafka backend: the prototype's scenario, which its Kafka producer failed
//! (it crashed under 20 concurrent clients; 1.4 % of requests succeeded), run against a real
//! broker. Needs `KAFKA_BOOTSTRAP` (printed by `hack/kafka.sh up`); `make test` starts the
//! broker and runs these with `--include-ignored`.

use std::time::{SystemTime, UNIX_EPOCH};

use metricstream_tests::{
    DRAIN_TIMEOUT, LoadSpec, ServiceSpec, TestDir, assert_settled_exactly_once, run_load,
    wait_for_sink,
};

const NEEDS_KAFKA: &str = "KAFKA_BOOTSTRAP is not set: start a broker with `hack/kafka.sh up` \
                           and export what it prints (make test does)";

/// A topic and group no other run has used, so runs against one broker never see each other.
fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a Kafka broker: KAFKA_BOOTSTRAP from hack/kafka.sh up (make test runs it)"]
async fn kafka_twenty_clients_fifty_requests_all_accepted_and_sunk_exactly_once() {
    let bootstrap = std::env::var("KAFKA_BOOTSTRAP").expect(NEEDS_KAFKA);
    let dir = TestDir::new("kafka-prototype-scenario");
    let topic = unique("metricstream-test");
    let ingest_spec = ServiceSpec::ingest(&dir, "ingest").kafka(&bootstrap, &topic);
    let consumer_spec = ServiceSpec::consumer(&dir, "consumer")
        .kafka(&bootstrap, &topic)
        .env("METRICSTREAM_GROUP", unique("storage-writer"));
    let ingest = ingest_spec.start().await;
    let consumer = consumer_spec.start().await;

    let report = run_load(LoadSpec::new(vec![ingest.base_url()], 20, 50, 10)).await;
    println!(
        "Kafka backend, 20 clients x 50 requests x 10 metrics ({} build): {}",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        report.summary()
    );
    report.assert_all_accepted();

    let expected = report.expected();
    assert_eq!(expected.len(), 10_000);
    wait_for_sink(&dir.sink_dir(), &expected, DRAIN_TIMEOUT).await;
    consumer.terminate().await;
    ingest.terminate().await;
    let verification = assert_settled_exactly_once(&dir.sink_dir(), &expected);
    assert_eq!(verification.lines, expected.len());
}
