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
                    json!({"requests_per_sec": 4000.0, "lost": 0.0, "duplicates": 1.0}),
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
    ]
}
