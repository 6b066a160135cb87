//! The per-client caps on the real ingest and consumer, in each protocol's own terms:
//!
//! - `--max-active-series`: samples of new series beyond a client's cap are refused and the rest
//!   stored — native and Influx `400 partial_write`, remote write `400` with the written-count
//!   headers, OTLP `200` with `partial_success`; a histogram's series are admitted whole or not
//!   at all; known series keep passing; another client has its own cap.
//! - `--max-samples-per-second` shared by `--rate-limit-replicas`: a request over the client's
//!   share is refused whole with `429` and `Retry-After` (nothing stored), other clients pass.
//!
//! Every case then counts the sink: exactly what the answers say was stored, once; and the
//! per-client counters on the admin listener.

use std::collections::BTreeMap;
use std::time::Duration;

use metricstream_ingest::protocols::remote_write::proto::{Sample, v1};
use metricstream_tests::{
    RawAnswer, ReadMode, Service, ServiceSpec, TestDir, assert_otlp_partial_success, post_raw,
    read_sink,
};
use prost::Message;
use serde_json::{Value, json};

const TIMESTAMP_MS: i64 = 1_700_000_000_000;

/// A request of `client` (open mode: the Authorization header is the client id).
async fn post(
    ingest: &Service,
    path: &str,
    client: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> RawAnswer {
    let mut all = vec![("Authorization", client)];
    all.extend_from_slice(headers);
    post_raw(ingest, path, &all, body).await
}

fn native(names: &[&str]) -> Vec<u8> {
    let metrics: Vec<Value> = names
        .iter()
        .map(|name| json!({"name": name, "value": 1.0, "timestamp": TIMESTAMP_MS}))
        .collect();
    json!({ "metrics": metrics }).to_string().into_bytes()
}

fn remote_write(names: &[&str]) -> Vec<u8> {
    let request = v1::WriteRequest {
        timeseries: names
            .iter()
            .map(|name| v1::TimeSeries {
                labels: vec![v1::Label {
                    name: "__name__".to_owned(),
                    value: (*name).to_owned(),
                }],
                samples: vec![Sample {
                    value: 2.0,
                    timestamp: TIMESTAMP_MS,
                }],
                ..Default::default()
            })
            .collect(),
        metadata: Vec::new(),
    };
    snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .expect("snappy compresses")
}

/// One gauge point of series `gauge_name`, then a histogram point with one bound, whose four
/// rows (`_bucket` le=1 and +Inf, `_sum`, `_count`) stand or fall together.
fn otlp_gauge_then_histogram(gauge_name: &str) -> Vec<u8> {
    let time = (TIMESTAMP_MS * 1_000_000).to_string();
    json!({"resourceMetrics": [{"scopeMetrics": [{"metrics": [
        {"name": gauge_name, "gauge": {"dataPoints": [{"timeUnixNano": time, "asDouble": 3.0}]}},
        {"name": "latency", "histogram": {"aggregationTemporality": 2, "dataPoints": [{
            "timeUnixNano": time, "count": "2", "sum": 1.5,
            "bucketCounts": ["1", "1"], "explicitBounds": [1.0]}]}}
    ]}]}]})
    .to_string()
    .into_bytes()
}

fn counter(scrape: &str, client: &str, limit: &str) -> Option<f64> {
    let prefix = format!(
        "metricstream_ingest_samples_limited_total{{client=\"{client}\",limit=\"{limit}\"}} "
    );
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(&prefix)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn new_series_over_the_cap_are_refused_in_each_protocols_way_and_the_rest_stored_once() {
    let dir = TestDir::new("client-limits-series");
    let ingest = ServiceSpec::ingest(&dir, "ingest")
        .env("METRICSTREAM_MAX_ACTIVE_SERIES", "3")
        .start()
        .await;
    let consumer = ServiceSpec::consumer(&dir, "consumer").start().await;
    let json = [("Content-Type", "application/json")];

    // Native: 3 of 5 stored; the known ones pass again; another client has its own 3.
    let answer = post(
        &ingest,
        "/metrics",
        "native",
        &json,
        native(&["a", "b", "c", "d", "e"]),
    )
    .await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    let error: Value = serde_json::from_str(&answer.body).expect("a JSON error");
    assert_eq!(error["error"]["code"], "partial_write", "{error}");
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("3 of 5 metrics stored") && message.contains("\"d\""),
        "{message}"
    );
    let answer = post(&ingest, "/metrics", "native", &json, native(&["c", "a"])).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    let answer = post(&ingest, "/metrics", "native-2", &json, native(&["d", "e"])).await;
    assert_eq!(answer.status, 202, "{}", answer.body);

    // Influx line protocol: InfluxDB's partial write.
    let lines = "cpu,host=h1 busy=1 1700000000000000000\n\
                 cpu,host=h2 busy=1 1700000000000000000\n\
                 cpu,host=h3 busy=1 1700000000000000000\n\
                 cpu,host=h4 busy=1 1700000000000000000\n";
    let answer = post(
        &ingest,
        "/api/v2/write",
        "influx",
        &[],
        lines.as_bytes().to_vec(),
    )
    .await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    let error: Value = serde_json::from_str(&answer.body).expect("an Influx error");
    assert_eq!(error["code"], "invalid", "{error}");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|message| message.contains("partial write: 3 of 4 points stored")),
        "{error}"
    );

    // Remote write 1.0: 400 (not retried), with how many samples were written.
    let rw = [
        ("Content-Type", "application/x-protobuf"),
        ("Content-Encoding", "snappy"),
        ("X-Prometheus-Remote-Write-Version", "0.1.0"),
    ];
    let answer = post(
        &ingest,
        "/api/v1/write",
        "prometheus",
        &rw,
        remote_write(&["r1", "r2", "r3", "r4", "r5"]),
    )
    .await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(
        answer.headers["x-prometheus-remote-write-samples-written"],
        "3"
    );
    assert!(
        answer.body.contains("2 samples of new series refused"),
        "{}",
        answer.body
    );

    // OTLP JSON: the gauge fits, the histogram's 4 series do not: one point rejected, and none
    // of the histogram's rows stored.
    let answer = post(
        &ingest,
        "/v1/metrics",
        "otel",
        &json,
        otlp_gauge_then_histogram("queue_depth"),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let response: Value = serde_json::from_str(&answer.body).expect("an OTLP JSON response");
    assert_otlp_partial_success(&response, 1, &["--max-active-series", "\"latency_bucket\""]);

    // The sink holds exactly what was stored, once.
    let accepted = ingest.wait_for_accepted_in_sink(&dir).await;
    assert_eq!(accepted, 3 + 2 + 2 + 3 + 3 + 1);
    let sink = read_sink(&dir.sink_dir(), ReadMode::Live).expect("a readable sink");
    let mut stored: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in &sink.lines {
        let series = match line.tags.get("host") {
            Some(host) => format!("{}{{host={host}}}", line.name),
            None => line.name.clone(),
        };
        stored.entry(line.client.clone()).or_default().push(series);
    }
    for series in stored.values_mut() {
        series.sort();
    }
    let expected = BTreeMap::from([
        ("native".to_owned(), vec!["a", "a", "b", "c", "c"]),
        ("native-2".to_owned(), vec!["d", "e"]),
        (
            "influx".to_owned(),
            vec![
                "cpu_busy{host=h1}",
                "cpu_busy{host=h2}",
                "cpu_busy{host=h3}",
            ],
        ),
        ("prometheus".to_owned(), vec!["r1", "r2", "r3"]),
        ("otel".to_owned(), vec!["queue_depth"]),
    ])
    .into_iter()
    .map(|(client, series)| (client, series.into_iter().map(str::to_owned).collect()))
    .collect::<BTreeMap<String, Vec<String>>>();
    assert_eq!(stored, expected);

    let (_, scrape) = ingest.admin_get("/metrics").await;
    for (client, refused) in [
        ("native", 2.0),
        ("influx", 1.0),
        ("prometheus", 2.0),
        ("otel", 1.0),
    ] {
        assert_eq!(
            counter(&scrape, client, "active_series"),
            Some(refused),
            "{client}: {scrape}"
        );
    }
    assert_eq!(counter(&scrape, "native-2", "active_series"), None);
    drop(consumer);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_over_the_clients_sample_rate_share_is_refused_whole_with_429() {
    let dir = TestDir::new("client-limits-samples");
    // 20/s with a burst of 40 across 2 replicas: this replica admits 10/s, 20 at once.
    let ingest = ServiceSpec::ingest(&dir, "ingest")
        .env("METRICSTREAM_MAX_SAMPLES_PER_SECOND", "20")
        .env("METRICSTREAM_MAX_SAMPLES_BURST", "40")
        .env("METRICSTREAM_RATE_LIMIT_REPLICAS", "2")
        .start()
        .await;
    let consumer = ServiceSpec::consumer(&dir, "consumer").start().await;
    let json = [("Content-Type", "application/json")];
    let names: Vec<String> = (0..20).map(|index| format!("m{index}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();

    let answer = post(&ingest, "/metrics", "busy", &json, native(&names)).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    // The burst is spent: 15 more samples need 1.5 s of refill.
    let answer = post(&ingest, "/metrics", "busy", &json, native(&names[..15])).await;
    assert_eq!(answer.status, 429, "{}", answer.body);
    let error: Value = serde_json::from_str(&answer.body).expect("a JSON error");
    assert_eq!(error["error"]["code"], "sample_rate_limited", "{error}");
    let retry_after: u64 = answer.headers["retry-after"]
        .to_str()
        .ok()
        .and_then(|value| value.parse().ok())
        .expect("a Retry-After in seconds");
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    // The same through remote write: refused whole, nothing written.
    let rw = [
        ("Content-Type", "application/x-protobuf"),
        ("Content-Encoding", "snappy"),
    ];
    let answer = post(
        &ingest,
        "/api/v1/write",
        "busy",
        &rw,
        remote_write(&names[..15]),
    )
    .await;
    assert_eq!(answer.status, 429, "{}", answer.body);
    assert!(answer.headers.contains_key("retry-after"));
    // Another client has its own budget.
    let answer = post(&ingest, "/metrics", "quiet", &json, native(&names[..5])).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    // After the wait it says, the refused request passes.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let answer = post(&ingest, "/metrics", "busy", &json, native(&names[..15])).await;
    assert_eq!(answer.status, 202, "{}", answer.body);

    let accepted = ingest.wait_for_accepted_in_sink(&dir).await;
    assert_eq!(accepted, 20 + 5 + 15);
    let sink = read_sink(&dir.sink_dir(), ReadMode::Live).expect("a readable sink");
    let per_client = sink.lines.iter().fold(BTreeMap::new(), |mut counts, line| {
        *counts.entry(line.client.as_str()).or_insert(0) += 1;
        counts
    });
    assert_eq!(per_client, BTreeMap::from([("busy", 35), ("quiet", 5)]));

    let (_, scrape) = ingest.admin_get("/metrics").await;
    assert_eq!(
        counter(&scrape, "busy", "samples_per_second"),
        Some(30.0),
        "{scrape}"
    );
    drop(consumer);
}
