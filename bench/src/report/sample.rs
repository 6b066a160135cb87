//! The measurements of a made-up run, for the report's unit tests.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::results::{Machine, Measurement, SuiteResults};

fn measurement(suite: &str, target: &str, params: Value, figures: Value) -> Measurement {
    let params: BTreeMap<String, Value> = serde_json::from_value(params).expect("params");
    let figures: BTreeMap<String, f64> = serde_json::from_value(figures).expect("figures");
    Measurement {
        suite: suite.into(),
        target: target.into(),
        params,
        figures,
        command: format!("{target} command"),
    }
}

fn suite(name: &str, measurements: Vec<Measurement>) -> SuiteResults {
    SuiteResults {
        suite: name.into(),
        started: "2026-11-26T21:00:00Z".into(),
        machine: Machine {
            cores: 2,
            cpu_model: "test cpu".into(),
            memory_gib: 24.0,
            kernel: "6.1".into(),
        },
        measurements,
    }
}

/// The params of an intake measurement of `protocol`.
fn intake(protocol: &str) -> Value {
    json!({"protocol": protocol, "clients": 20, "samples_per_request": 100, "body_bytes": 1234, "mode": "max", "duration_secs": 10, "rounds": 3})
}

pub(super) fn sample() -> Vec<SuiteResults> {
    let point = |clients: i64, mode: &str| json!({"clients": clients, "metrics_per_request": 100, "mode": mode, "rate": 1000});
    vec![
        suite(
            "http",
            vec![
                measurement(
                    "http",
                    "noop-http",
                    point(200, "max"),
                    json!({"requests_per_sec": 10000.0}),
                ),
                measurement(
                    "http",
                    "ingest-file-batch",
                    point(200, "max"),
                    json!({"requests_per_sec": 6000.0, "lost": 0.0, "duplicates": 0.0, "rss_peak_mib": 40.0, "consumer_rss_peak_mib": 70.0}),
                ),
                measurement(
                    "http",
                    "ingest-kafka",
                    point(200, "max"),
                    json!({"requests_per_sec": 4000.0, "p99_ms": 8.0, "lost": 0.0, "duplicates": 1.0}),
                ),
                measurement(
                    "http",
                    "ingest-kafka-spill",
                    point(200, "max"),
                    json!({"requests_per_sec": 3900.0, "p99_ms": 8.2, "spill_records": 0.0}),
                ),
                measurement(
                    "http",
                    "ingest-kafka-spill-outage",
                    point(200, "max"),
                    json!({"requests_per_sec": 3000.0, "p99_ms": 9.0, "errors": 0.0, "spill_records": 30000.0, "forward_secs": 4.5, "lost": 0.0, "duplicates": 0.0}),
                ),
                measurement(
                    "http",
                    "ingest-kafka",
                    point(20, "rate"),
                    json!({"requests_per_sec": 1000.0, "p50_ms": 1.0, "p99_ms": 2.0, "p999_ms": 3.0}),
                ),
                measurement(
                    "http",
                    "ingest-kafka-spill",
                    point(20, "rate"),
                    json!({"requests_per_sec": 1000.0, "p50_ms": 1.0, "p99_ms": 2.2, "p999_ms": 3.0, "spill_records": 0.0}),
                ),
                measurement(
                    "http",
                    "noop-http",
                    point(20, "rate"),
                    json!({"requests_per_sec": 1000.0, "p50_ms": 0.2, "p99_ms": 0.5, "p999_ms": 1.0}),
                ),
                measurement(
                    "http",
                    "ingest-file-batch",
                    point(20, "rate"),
                    json!({"requests_per_sec": 1000.0, "p50_ms": 2.0, "p99_ms": 12.5, "p999_ms": 20.0}),
                ),
            ],
        ),
        suite(
            "intake",
            vec![
                measurement(
                    "intake",
                    "decode-ceiling",
                    intake("native-json"),
                    json!({"samples_per_sec": 400000.0, "requests_per_sec": 4000.0, "errors": 0.0, "p99_ms": 9.0}),
                ),
                measurement(
                    "intake",
                    "ingest-file-batch",
                    intake("native-json"),
                    json!({"samples_per_sec": 200000.0, "requests_per_sec": 2000.0, "errors": 0.0, "samples_mismatch": 0.0, "p50_ms": 8.0, "p99_ms": 20.0}),
                ),
                measurement(
                    "intake",
                    "decode-ceiling",
                    intake("remote-write-1"),
                    json!({"samples_per_sec": 500000.0, "samples_per_sec_min": 450000.0, "samples_per_sec_max": 510000.0, "requests_per_sec": 5000.0, "errors": 0.0}),
                ),
                measurement(
                    "intake",
                    "ingest-file-batch",
                    intake("remote-write-1"),
                    json!({"samples_per_sec": 100000.0, "requests_per_sec": 1000.0, "errors": 0.0, "samples_mismatch": -100.0}),
                ),
            ],
        ),
        suite(
            "drain",
            vec![
                measurement(
                    "drain",
                    "consumer-file",
                    json!({"metrics": 1000000}),
                    json!({"metrics_per_sec": 300000.0, "rss_peak_mib": 30.0}),
                ),
                measurement(
                    "drain",
                    "bare-read-file",
                    json!({"metrics": 1000000}),
                    json!({"metrics_per_sec": 1000000.0}),
                ),
            ],
        ),
        suite(
            "drain-store",
            vec![
                measurement(
                    "drain-store",
                    "remote-write-victoriametrics",
                    json!({"metrics": 1000000, "concurrency": 4}),
                    json!({"metrics_per_sec": 800000.0, "store_cpu_seconds": 1.5}),
                ),
                measurement(
                    "drain-store",
                    "consumer-victoriametrics",
                    json!({"metrics": 1000000}),
                    json!({"metrics_per_sec": 200000.0, "store_cpu_seconds": 3.0}),
                ),
                measurement(
                    "drain-store",
                    "consumer-victoriametrics",
                    json!({"metrics": 1000000, "concurrency": 4}),
                    json!({"metrics_per_sec": 400000.0, "store_cpu_seconds": 3.0}),
                ),
                measurement(
                    "drain-store",
                    "remote-write-victoriametrics",
                    json!({"metrics": 1000000, "concurrency": 1}),
                    json!({"metrics_per_sec": 400000.0, "store_cpu_seconds": 2.0}),
                ),
            ],
        ),
    ]
}
