//! `kill -9` of a service in the middle of its work: after a restart on the same data
//! directory, every acknowledged metric reaches the sink, and none twice.

use std::time::Duration;

use metricstream_tests::sink::count_lines;
use metricstream_tests::{
    DRAIN_TIMEOUT, Expected, LoadSpec, ServiceSpec, TestDir, assert_settled_exactly_once, run_load,
    start_load, wait_for_lines, wait_for_sink,
};

#[tokio::test(flavor = "multi_thread")]
async fn ingest_killed_during_load_loses_no_acknowledged_metric() {
    let dir = TestDir::new("ingest-killed");
    let ingest_spec = ServiceSpec::ingest(&dir, "ingest");
    let consumer_spec = ServiceSpec::consumer(&dir, "consumer");
    let ingest = ingest_spec.start().await;
    let consumer = consumer_spec.start().await;

    // Paced so that the load is still running while the ingest is down and after it is back.
    let during = start_load(
        LoadSpec::new(vec![ingest_spec.base_url()], 10, 200, 5)
            .client_prefix("during")
            .pause(Duration::from_millis(2)),
    );
    during
        .wait_for_acknowledged(300, Duration::from_secs(60))
        .await;
    ingest.kill();
    let acknowledged_before_kill = during.acknowledged();

    // Same ports, same data directory: recovery must keep everything acknowledged.
    let ingest = ingest_spec.start().await;
    let after =
        run_load(LoadSpec::new(vec![ingest_spec.base_url()], 5, 20, 5).client_prefix("after"))
            .await;
    after.assert_all_accepted();
    let during = during.finish().await;
    println!(
        "killed after {acknowledged_before_kill} acknowledged requests; during the kill: {:?}",
        during.result_counts()
    );
    assert!(
        during.acknowledged_count() as u64 > acknowledged_before_kill,
        "the restarted ingest acknowledged none of the load that was running across the kill"
    );

    let mut expected = Expected::default();
    expected.add_report(&during);
    expected.add_report(&after);
    wait_for_sink(&dir.sink_dir(), &expected, DRAIN_TIMEOUT).await;
    consumer.terminate().await;
    ingest.terminate().await;
    let verification = assert_settled_exactly_once(&dir.sink_dir(), &expected);
    println!("{}", verification.summary());
}

/// 20 000 metrics in 4 000 records, ingested while no consumer runs.
const BACKLOG_CLIENTS: usize = 20;
const BACKLOG_REQUESTS: u64 = 200;
const BACKLOG_METRICS: u32 = 5;

#[tokio::test(flavor = "multi_thread")]
async fn consumer_killed_mid_drain_resumes_without_loss_or_duplicates() {
    let dir = TestDir::new("consumer-killed");
    let ingest_spec = ServiceSpec::ingest(&dir, "ingest");
    // Small batches: many sink writes and commits to be killed between.
    let consumer_spec =
        ServiceSpec::consumer(&dir, "consumer").env("METRICSTREAM_MAX_BATCH_RECORDS", "64");
    let ingest = ingest_spec.start().await;
    let backlog = run_load(LoadSpec::new(
        vec![ingest.base_url()],
        BACKLOG_CLIENTS,
        BACKLOG_REQUESTS,
        BACKLOG_METRICS,
    ))
    .await;
    backlog.assert_all_accepted();
    let expected = backlog.expected();
    let total = expected.len();
    ingest.terminate().await;

    // Kill it as soon as it has written anything: between a sink write and its commit.
    let consumer = consumer_spec.spawn();
    wait_for_lines(
        &dir.sink_dir(),
        1,
        Duration::from_millis(1),
        Duration::from_secs(60),
    )
    .await;
    consumer.kill();
    let at_first_kill = count_lines(&dir.sink_dir());
    println!("first kill with {at_first_kill} of {total} lines in the sink");
    assert!(
        at_first_kill < total,
        "the consumer drained the whole backlog before it could be killed; the test proves \
         nothing unless the backlog is larger"
    );

    // Again, halfway, if the restarted consumer is not done by then.
    let consumer = consumer_spec.spawn();
    let at_second_kill = wait_for_lines(
        &dir.sink_dir(),
        total / 2,
        Duration::from_millis(1),
        Duration::from_secs(60),
    )
    .await;
    consumer.kill();
    println!("second kill with {at_second_kill} of {total} lines in the sink");

    let consumer = consumer_spec.start().await;
    wait_for_sink(&dir.sink_dir(), &expected, DRAIN_TIMEOUT).await;
    consumer.terminate().await;
    let verification = assert_settled_exactly_once(&dir.sink_dir(), &expected);
    assert_eq!(
        verification.lines, total,
        "the sink holds exactly the backlog"
    );
}
