//! SIGTERM: each service drains what it is doing, exits 0, and loses nothing.

use std::time::Duration;

use metricstream_tests::sink::count_lines;
use metricstream_tests::{
    DRAIN_TIMEOUT, Expected, LoadSpec, ServiceSpec, TestDir, assert_settled_exactly_once, run_load,
    start_load, wait_for_lines, wait_for_sink,
};

#[tokio::test(flavor = "multi_thread")]
async fn ingest_sigterm_drains_and_exits_cleanly() {
    let dir = TestDir::new("ingest-sigterm");
    let ingest_spec = ServiceSpec::ingest(&dir, "ingest");
    let consumer_spec = ServiceSpec::consumer(&dir, "consumer");
    let ingest = ingest_spec.start().await;
    let consumer = consumer_spec.start().await;

    let during = start_load(
        LoadSpec::new(vec![ingest_spec.base_url()], 8, 150, 5)
            .client_prefix("during")
            .pause(Duration::from_millis(2)),
    );
    during
        .wait_for_acknowledged(100, Duration::from_secs(60))
        .await;
    let took = ingest.terminate().await;
    let during = during.finish().await;
    println!(
        "the ingest exited {took:?} after SIGTERM; the load saw {:?}",
        during.result_counts()
    );

    // It reopens its data directory cleanly and serves again.
    let ingest = ingest_spec.start().await;
    let after =
        run_load(LoadSpec::new(vec![ingest.base_url()], 4, 10, 5).client_prefix("after")).await;
    after.assert_all_accepted();

    let mut expected = Expected::default();
    expected.add_report(&during);
    expected.add_report(&after);
    wait_for_sink(&dir.sink_dir(), &expected, DRAIN_TIMEOUT).await;
    ingest.terminate().await;
    consumer.terminate().await;
    assert_settled_exactly_once(&dir.sink_dir(), &expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn consumer_sigterm_drains_and_exits_cleanly() {
    let dir = TestDir::new("consumer-sigterm");
    let ingest_spec = ServiceSpec::ingest(&dir, "ingest");
    let consumer_spec =
        ServiceSpec::consumer(&dir, "consumer").env("METRICSTREAM_MAX_BATCH_RECORDS", "64");
    let ingest = ingest_spec.start().await;
    let backlog = run_load(LoadSpec::new(vec![ingest.base_url()], 10, 200, 5)).await;
    backlog.assert_all_accepted();
    let expected = backlog.expected();

    // Stop it in the middle of the backlog.
    let mut consumer = consumer_spec.spawn();
    wait_for_lines(
        &dir.sink_dir(),
        1,
        Duration::from_millis(1),
        Duration::from_secs(60),
    )
    .await;
    consumer.wait_ready(Duration::from_secs(30)).await;
    let took = consumer.terminate().await;
    println!(
        "the consumer exited {took:?} after SIGTERM with {} of {} lines in the sink",
        count_lines(&dir.sink_dir()),
        expected.len()
    );

    let consumer = consumer_spec.start().await;
    wait_for_sink(&dir.sink_dir(), &expected, DRAIN_TIMEOUT).await;
    consumer.terminate().await;
    ingest.terminate().await;
    let verification = assert_settled_exactly_once(&dir.sink_dir(), &expected);
    assert_eq!(verification.lines, expected.len());
}
