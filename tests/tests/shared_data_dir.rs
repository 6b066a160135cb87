//! Two ingest processes and two consumer processes on one data directory: the ingests share
//! partitions, the consumers split them, and when one consumer dies the other takes its
//! partitions over.

use std::time::{Duration, Instant};

use metricstream_tests::{
    DRAIN_TIMEOUT, LoadSpec, Service, ServiceSpec, TestDir, assert_settled_exactly_once,
    start_load, wait_for_lines, wait_for_sink,
};

const PARTITIONS: u32 = 8;

#[tokio::test(flavor = "multi_thread")]
async fn two_ingests_and_two_consumers_share_one_data_dir() {
    let dir = TestDir::new("shared-data-dir");
    let ingest_a_spec = ServiceSpec::ingest(&dir, "ingest-a").partitions(PARTITIONS);
    let ingest_b_spec = ServiceSpec::ingest(&dir, "ingest-b").partitions(PARTITIONS);
    let consumer_a_spec = ServiceSpec::consumer(&dir, "consumer-a").partitions(PARTITIONS);
    let consumer_b_spec = ServiceSpec::consumer(&dir, "consumer-b").partitions(PARTITIONS);
    let ingest_a = ingest_a_spec.start().await;
    let ingest_b = ingest_b_spec.start().await;
    let consumer_a = consumer_a_spec.start().await;
    let consumer_b = consumer_b_spec.start().await;

    // Each client alternates between the two ingests, so both processes append to the same
    // partitions; every other request is gzip-compressed.
    let spec = LoadSpec::new(vec![ingest_a.base_url(), ingest_b.base_url()], 20, 60, 10)
        .pause(Duration::from_millis(1))
        .gzip_every_other();
    let total = spec.total_metrics() as usize;
    let load = start_load(spec);

    let seen = wait_for_lines(
        &dir.sink_dir(),
        total / 8,
        Duration::from_millis(5),
        Duration::from_secs(60),
    )
    .await;
    // Kill a consumer that owns partitions, so that the survivor must take them over.
    let started = Instant::now();
    let owned_by_b = loop {
        let owned = owned_partitions(&consumer_b).await;
        if owned > 0 {
            break owned;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "consumer-b was given no partition within 30 s, so killing it would prove nothing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!(
        "killing consumer-b (owning {owned_by_b} partitions) with {seen} of {total} lines in \
         the sink"
    );
    consumer_b.kill();
    let started = Instant::now();
    while owned_partitions(&consumer_a).await < u64::from(PARTITIONS) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "consumer-a did not take over consumer-b's partitions within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "consumer-a owned every partition {:?} after the kill",
        started.elapsed()
    );

    let report = load.finish().await;
    println!("{}", report.summary());
    report.assert_all_accepted();
    let expected = report.expected();
    wait_for_sink(&dir.sink_dir(), &expected, DRAIN_TIMEOUT).await;

    consumer_a.terminate().await;
    ingest_a.terminate().await;
    ingest_b.terminate().await;
    let verification = assert_settled_exactly_once(&dir.sink_dir(), &expected);
    assert_eq!(
        verification.lines, total,
        "the sink holds exactly the metrics sent"
    );
}

/// The file queue's `metricstream_queue_owned_partitions` gauge of a consumer.
async fn owned_partitions(consumer: &Service) -> u64 {
    let (status, metrics) = consumer.admin_get("/metrics").await;
    assert_eq!(status, 200, "GET /metrics of {}", consumer.label());
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("metricstream_queue_owned_partitions "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "{} exports no metricstream_queue_owned_partitions gauge:\n{metrics}",
                consumer.label()
            )
        })
}
