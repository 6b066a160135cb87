//! SIGTERM: each service drains what it is doing, exits 0, and loses nothing; and the
//! consumer's `--sink-rate-limit`, which slows the drain and must not hold a shutdown up.

use std::time::{Duration, Instant};

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

/// `--sink-rate-limit 500` with 3,000 metrics queued: one second's worth goes at once, the rest
/// at 500 per second, so the drain takes at least (3,000 - 500) / 500 = 5 s, and everything
/// arrives exactly once. Then, with a backlog that would be throttled for longer than the
/// consumer's own shutdown timeout, SIGTERM still ends it cleanly: the wait is cancelled and the
/// held batch stays uncommitted, for the next consumer to write.
#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limited_consumer_drains_slower_exactly_once_and_stops_promptly() {
    let dir = TestDir::new("consumer-rate-limit");
    let ingest_spec = ServiceSpec::ingest(&dir, "ingest");
    let limited_spec = ServiceSpec::consumer(&dir, "limited")
        .arg("--sink-rate-limit")
        .arg("500")
        // Were the throttle not cancellable, the shutdown below would overrun this and exit 1.
        .env("METRICSTREAM_SHUTDOWN_TIMEOUT", "5");
    let ingest = ingest_spec.start().await;
    let backlog =
        run_load(LoadSpec::new(vec![ingest.base_url()], 10, 30, 10).client_prefix("backlog")).await;
    backlog.assert_all_accepted();
    let mut expected = backlog.expected();
    assert_eq!(expected.len(), 3000);

    let started = Instant::now();
    let limited = limited_spec.start().await;
    wait_for_sink(&dir.sink_dir(), &expected, DRAIN_TIMEOUT).await;
    let drained_in = started.elapsed();
    let throttled = limited
        .metric("metricstream_consumer_sink_throttled_seconds_total")
        .await;
    println!("3000 metrics at 500/s drained in {drained_in:?}, throttled for {throttled:.2} s");
    // Lower bounds only: a busy machine makes the drain slower, never faster.
    assert!(drained_in >= Duration::from_millis(4500), "{drained_in:?}");
    assert!(throttled >= 4.0, "throttled for {throttled} s");

    // 20,000 more metrics: about 40 s of throttling, far beyond the 5 s shutdown timeout.
    let more =
        run_load(LoadSpec::new(vec![ingest.base_url()], 20, 100, 10).client_prefix("more")).await;
    more.assert_all_accepted();
    expected.add_report(&more);
    // Time for the consumer to poll the new records and start waiting for them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let took = limited.terminate().await;
    println!(
        "the throttled consumer exited {took:?} after SIGTERM with {} of {} lines in the sink",
        count_lines(&dir.sink_dir()),
        expected.len()
    );

    let unlimited = ServiceSpec::consumer(&dir, "unlimited").start().await;
    wait_for_sink(&dir.sink_dir(), &expected, DRAIN_TIMEOUT).await;
    unlimited.terminate().await;
    ingest.terminate().await;
    let verification = assert_settled_exactly_once(&dir.sink_dir(), &expected);
    assert_eq!(verification.lines, expected.len());
}
