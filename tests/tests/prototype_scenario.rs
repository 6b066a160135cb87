//! The C++ prototype's scenario, which its Kafka producer failed (1.4 % of requests succeeded):
//! 20 concurrent clients × 50 requests against the real ingest and consumer.
//!
//! It runs alone in this test binary so the throughput and latency it prints are not disturbed
//! by other tests. For figures worth quoting, build and run optimised (`make scenario`):
//!
//! ```text
//! cargo build --release --bins
//! cargo test --release -p metricstream-tests --test prototype_scenario -- --nocapture
//! ```

use metricstream_tests::{
    DRAIN_TIMEOUT, LoadSpec, ServiceSpec, TestDir, assert_settled_exactly_once, run_load,
    wait_for_sink,
};

const CLIENTS: usize = 20;
const REQUESTS_PER_CLIENT: u64 = 50;
const METRICS_PER_REQUEST: u32 = 10;

#[tokio::test(flavor = "multi_thread")]
async fn twenty_clients_fifty_requests_all_accepted_and_sunk_exactly_once() {
    let dir = TestDir::new("prototype-scenario");
    let ingest_spec = ServiceSpec::ingest(&dir, "ingest");
    let consumer_spec = ServiceSpec::consumer(&dir, "consumer");
    let ingest = ingest_spec.start().await;
    let consumer = consumer_spec.start().await;

    let spec = LoadSpec::new(
        vec![ingest.base_url()],
        CLIENTS,
        REQUESTS_PER_CLIENT,
        METRICS_PER_REQUEST,
    );
    let report = run_load(spec).await;
    println!(
        "20 clients x 50 requests x {METRICS_PER_REQUEST} metrics (durability batch, {} build): {}",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        report.summary()
    );
    report.assert_all_accepted();
    assert_eq!(
        report.outcomes.len(),
        CLIENTS * REQUESTS_PER_CLIENT as usize
    );

    let expected = report.expected();
    assert_eq!(
        expected.len(),
        CLIENTS * REQUESTS_PER_CLIENT as usize * METRICS_PER_REQUEST as usize
    );
    wait_for_sink(&dir.sink_dir(), &expected, DRAIN_TIMEOUT).await;

    consumer.terminate().await;
    ingest.terminate().await;
    let verification = assert_settled_exactly_once(&dir.sink_dir(), &expected);
    assert_eq!(
        verification.lines,
        expected.len(),
        "the sink holds exactly the metrics sent"
    );
}
