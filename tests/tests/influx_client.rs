//! InfluxDB line protocol from InfluxData's own Python client (`influxdb-client`, installed by
//! `hack/tools.sh` into its venv; `CLIENTS_PYTHON` names that venv's interpreter) against the
//! real ingest and consumer: every sample the client wrote (nanosecond and second precision,
//! integer, float and boolean fields, gzip) is in the sink exactly once with its name, tags,
//! value and timestamp; its string fields are dropped; and a malformed write is refused with
//! InfluxDB's `400` and error body, which the client reads as such.

use std::collections::BTreeMap;
use std::time::Duration;

use metricstream_tests::{
    DRAIN_TIMEOUT, ReadMode, TestDir, read_sink, run_client_script, start_token_pipeline,
    wait_for_lines,
};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct ClientReport {
    expected: Vec<ExpectedSample>,
    refused: Option<Refusal>,
}

#[derive(Debug, Deserialize)]
struct ExpectedSample {
    name: String,
    value: f64,
    timestamp: i64,
    tags: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct Refusal {
    status: u16,
    body: serde_json::Value,
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs CLIENTS_PYTHON with influxdb-client: hack/tools.sh install (make test runs it)"]
async fn influxdb_client_writes_arrive_in_the_sink_exactly_once() {
    let dir = TestDir::new("influx-client");
    let (ingest, consumer) = start_token_pipeline(&dir, "influx-agent", "influx-s3cret").await;

    let args = [ingest.base_url().as_str(), "influx-s3cret", "run-1", "250"].map(str::to_owned);
    let stdout = run_client_script("influx_write.py", args.to_vec()).await;
    let report: ClientReport =
        serde_json::from_slice(&stdout).expect("the client's report is JSON");
    assert_eq!(report.expected.len(), 250 * 2 + 10 * 2 + 1);

    let refused = report.refused.expect("the malformed write was refused");
    assert_eq!(refused.status, 400, "{refused:?}");
    assert_eq!(refused.body["code"], "invalid", "{refused:?}");
    let message = refused.body["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("malformed_line_protocol: ") && message.contains("line 1"),
        "{message}"
    );

    wait_for_lines(
        &dir.sink_dir(),
        report.expected.len(),
        Duration::from_millis(100),
        DRAIN_TIMEOUT,
    )
    .await;
    consumer.terminate().await;
    ingest.terminate().await;

    let sink = read_sink(&dir.sink_dir(), ReadMode::Settled).expect("the sink reads");
    let mut found: BTreeMap<(String, i64, BTreeMap<String, String>), Vec<f64>> = BTreeMap::new();
    for line in &sink.lines {
        assert_eq!(line.client, "influx-agent", "the token's client: {line:?}");
        assert_eq!(line.kind, None, "line protocol has no types: {line:?}");
        let timestamp = line.timestamp.expect("every sample has a timestamp");
        found
            .entry((line.name.clone(), timestamp, line.tags.clone()))
            .or_default()
            .push(line.value);
    }
    assert_eq!(
        sink.lines.len(),
        report.expected.len(),
        "the sink holds other or repeated samples"
    );
    for sample in &report.expected {
        let key = (sample.name.clone(), sample.timestamp, sample.tags.clone());
        assert_eq!(
            found.get(&key).map(Vec::as_slice),
            Some(&[sample.value][..]),
            "{sample:?} is not in the sink exactly once"
        );
    }
}
