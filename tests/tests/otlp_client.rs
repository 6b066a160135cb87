//! OTLP/HTTP from the OpenTelemetry Python SDK's own exporter (protobuf, gzip; installed by
//! `hack/tools.sh` into the clients' venv, `CLIENTS_PYTHON`) against the real ingest and
//! consumer: both exports succeed, every sample the ingest acknowledged is in the sink exactly
//! once, with the kinds, tags and values the OTLP mapping promises; and an OTLP JSON request with
//! a bad point gets a partial success naming it (the Python exporter speaks only protobuf, so
//! that request is made by hand).
//!
//! OTLP JSON from a real client: the OpenTelemetry Collector (built by `hack/otelcol.sh`,
//! `OTELCOL`) receives the same SDK's exports and forwards them with its `otlphttp` exporter,
//! `encoding: json`, gzip; stopped with SIGTERM it drains its queue, and the sink holds the same
//! points exactly once.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use metricstream_tests::process::free_loopback_addr;
use metricstream_tests::{
    ReadMode, SinkLine, TestDir, assert_otlp_partial_success, http_client, read_sink,
    run_client_script, start_token_pipeline,
};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct ClientReport {
    results: Vec<String>,
    started_ms: i64,
    finished_ms: i64,
}

/// The values a series took in the sink, in time order.
fn values(lines: &[&SinkLine], name: &str, extra: Option<(&str, &str)>) -> Vec<f64> {
    let mut found: Vec<(i64, f64)> = lines
        .iter()
        .filter(|line| line.name == name)
        .filter(|line| {
            extra.is_none_or(|(key, value)| line.tags.get(key).map(String::as_str) == Some(value))
        })
        .map(|line| (line.timestamp.unwrap_or_default(), line.value))
        .collect();
    found.sort_by_key(|(timestamp, _)| *timestamp);
    found.into_iter().map(|(_, value)| value).collect()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs CLIENTS_PYTHON with the OpenTelemetry SDK: hack/tools.sh install (make test runs it)"]
async fn opentelemetry_sdk_exports_arrive_in_the_sink_exactly_once() {
    let dir = TestDir::new("otlp-client");
    let (ingest, consumer) = start_token_pipeline(&dir, "otel-service", "otel-s3cret").await;

    let endpoint = format!("{}/v1/metrics", ingest.base_url());
    let args = [endpoint.as_str(), "otel-s3cret", "run-1"].map(str::to_owned);
    let stdout = run_client_script("otlp_export.py", args.to_vec()).await;
    let report: ClientReport =
        serde_json::from_slice(&stdout).expect("the client's report is JSON");
    assert_eq!(report.results, ["SUCCESS", "SUCCESS"], "{report:?}");

    // OTLP JSON by hand: one good point, one without a value.
    let json = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"by_hand","gauge":{"dataPoints":[
        {"timeUnixNano":"1700000000000000000","asInt":"4"},{"timeUnixNano":"1700000000000000000"}]}}]}]}]}"#;
    let answer = http_client(Duration::from_secs(10))
        .post(format!("{}/v1/metrics", ingest.base_url()))
        .header("Authorization", "Bearer otel-s3cret")
        .header("Content-Type", "application/json")
        .body(json)
        .send()
        .await
        .expect("the JSON export is answered");
    assert_eq!(answer.status(), 200);
    let answer: serde_json::Value = answer.json().await.expect("an OTLP JSON response");
    assert_otlp_partial_success(&answer, 1, &["by_hand", "no value"]);

    // Exactly what the ingest acknowledged, no more, no less.
    let accepted = ingest.wait_for_accepted_in_sink(&dir).await;
    consumer.terminate().await;
    ingest.terminate().await;
    let sink = read_sink(&dir.sink_dir(), ReadMode::Settled).expect("the sink reads");
    assert_eq!(
        sink.lines.len(),
        accepted,
        "the sink against metrics_accepted"
    );
    assert_each_point_once(&sink.lines, "otel-service");

    let sdk: Vec<&SinkLine> = sink
        .lines
        .iter()
        .filter(|line| line.name != "by_hand")
        .collect();
    check_sdk_export(&sdk, &report);
    let by_hand: Vec<&SinkLine> = sink
        .lines
        .iter()
        .filter(|line| line.name == "by_hand")
        .collect();
    assert_eq!(
        (by_hand.len(), by_hand[0].value, by_hand[0].timestamp),
        (1, 4.0, Some(1_700_000_000_000))
    );
}

/// What `tests/clients/otlp_export.py` exported, as the sink must hold it: names, kinds, tags
/// (resource, scope and point attributes), values and timestamps within the client's run.
fn check_sdk_export(lines: &[&SinkLine], report: &ClientReport) {
    for line in lines {
        let timestamp = line.timestamp.unwrap_or_default();
        assert!(
            (report.started_ms - 1_000..=report.finished_ms + 1_000).contains(&timestamp),
            "a timestamp outside the client's run: {line:?}"
        );
        assert_eq!(
            line.tags.get("job").map(String::as_str),
            Some("checkout"),
            "{line:?}"
        );
        assert_eq!(
            line.tags.get("instance").map(String::as_str),
            Some("instance-1")
        );
        if line.name == "target_info" {
            assert_eq!(
                line.tags.get("host.name").map(String::as_str),
                Some("node-a")
            );
            continue;
        }
        assert_eq!(
            line.tags.get("otel_scope_name").map(String::as_str),
            Some("shop.meter")
        );
        assert_eq!(
            line.tags.get("run").map(String::as_str),
            Some("run-1"),
            "{line:?}"
        );
    }
    let kind_of = |name: &str| {
        lines
            .iter()
            .find(|line| line.name == name)
            .and_then(|line| line.kind.clone())
    };
    assert_eq!(values(lines, "orders", None), [5.0, 12.0]);
    assert_eq!(kind_of("orders").as_deref(), Some("counter"));
    assert_eq!(values(lines, "in_flight", None), [2.0, 2.0]);
    assert_eq!(kind_of("in_flight").as_deref(), Some("gauge"));
    assert_eq!(values(lines, "latency_count", None), [2.0, 3.0]);
    assert_eq!(values(lines, "latency_sum", None), [7.3, 127.3]);
    assert_eq!(
        values(lines, "latency_bucket", Some(("le", "5"))),
        [1.0, 1.0]
    );
    assert_eq!(
        values(lines, "latency_bucket", Some(("le", "+Inf"))),
        [2.0, 3.0]
    );
    assert_eq!(kind_of("latency_bucket").as_deref(), Some("histogram"));
    assert!(values(lines, "temperature", None).contains(&21.5));
    assert_eq!(values(lines, "target_info", None), [1.0, 1.0]);
}

/// Every line is `client`'s, and no point (name, tags, timestamp) is there twice.
fn assert_each_point_once(lines: &[SinkLine], client: &str) {
    let mut seen = BTreeMap::new();
    for line in lines {
        assert_eq!(line.client, client, "{line:?}");
        let key = (line.name.clone(), line.tags.clone(), line.timestamp);
        assert!(seen.insert(key, line.value).is_none(), "twice: {line:?}");
    }
}

fn otelcol_binary() -> String {
    std::env::var("OTELCOL").unwrap_or_else(|_| {
        panic!(
            "OTELCOL is not set: run `bash hack/otelcol.sh install` and export the OTELCOL=... \
             line it prints (make test does both)"
        )
    })
}

/// A Collector process, killed if the test ends before it was stopped.
struct Collector(Child);

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs CLIENTS_PYTHON and OTELCOL: hack/tools.sh install, hack/otelcol.sh install (make test runs both)"]
async fn collector_forwards_sdk_exports_as_otlp_json_exactly_once() {
    let dir = TestDir::new("otlp-collector");
    let (ingest, consumer) = start_token_pipeline(&dir, "otel-collector", "collector-s3cret").await;
    let receiver = free_loopback_addr();
    let config = format!(
        "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: {receiver}\n\
         exporters:\n  otlphttp:\n    endpoint: {}\n    encoding: json\n    compression: gzip\n\
         \x20   headers:\n      Authorization: Bearer collector-s3cret\n\
         \x20   retry_on_failure:\n      initial_interval: 100ms\n\
         service:\n  telemetry:\n    metrics:\n      level: none\n\
         \x20 pipelines:\n    metrics:\n      receivers: [otlp]\n      exporters: [otlphttp]\n",
        ingest.base_url()
    );
    let config_path = dir.write_file("otelcol.yaml", &config);
    let log_path = dir.logs_dir().join("otelcol.log");
    let log = std::fs::File::create(&log_path).expect("a log file for the Collector");
    let child = Command::new(otelcol_binary())
        .arg(format!("--config={}", config_path.display()))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("the log"))
        .stderr(log)
        .spawn()
        .expect("the Collector starts");
    let mut collector = Collector(child);
    let started = Instant::now();
    while tokio::net::TcpStream::connect(receiver).await.is_err() {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        assert!(
            collector.0.try_wait().ok().flatten().is_none(),
            "the Collector exited before listening:\n{log}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the Collector's receiver did not listen within 30 s:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let endpoint = format!("http://{receiver}/v1/metrics");
    let args = [endpoint.as_str(), "no-token-needed", "run-1"].map(str::to_owned);
    let stdout = run_client_script("otlp_export.py", args.to_vec()).await;
    let report: ClientReport =
        serde_json::from_slice(&stdout).expect("the client's report is JSON");
    assert_eq!(report.results, ["SUCCESS", "SUCCESS"], "{report:?}");

    // The Collector answered once the points were in its queue; on SIGTERM it drains the queue
    // to the ingest before it exits.
    let pid = i32::try_from(collector.0.id()).expect("a pid fits i32");
    // SAFETY: kill(2) on our own child's pid, which it keeps until we reap it.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let stopped = Instant::now();
    let status = loop {
        if let Some(status) = collector.0.try_wait().expect("the Collector's status") {
            break status;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(30),
            "the Collector did not stop within 30 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        status.success(),
        "the Collector exited with {status}:\n{log}"
    );
    assert!(
        !log.contains("Exporting failed"),
        "the Collector failed an export:\n{log}"
    );

    let accepted = ingest.wait_for_accepted_in_sink(&dir).await;
    consumer.terminate().await;
    ingest.terminate().await;
    let sink = read_sink(&dir.sink_dir(), ReadMode::Settled).expect("the sink reads");
    assert_eq!(
        sink.lines.len(),
        accepted,
        "the sink against metrics_accepted"
    );
    assert_each_point_once(&sink.lines, "otel-collector");
    let lines: Vec<&SinkLine> = sink.lines.iter().collect();
    check_sdk_export(&lines, &report);
}
