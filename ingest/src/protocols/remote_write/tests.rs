//! Remote write on hand-made requests of both versions: labels, kinds from metadata, staleness
//! markers, native histograms, refusals, content negotiation and snappy.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, HeaderValue, header};
use metricstream_backend::{Metric, MetricKind};
use prost::Message;

use super::convert::{STALE_NAN_BITS, native_buckets};
use super::proto::histogram::{Count, ZeroCount};
use super::proto::{BucketSpan, Histogram, MetricType, Sample, v1, v2};
use super::{Version, decode_and_convert, unsnappy};
use crate::error::ApiError;
use crate::request::Limits;

const LIMITS: Limits = Limits {
    max_body_bytes: 64 * 1024,
    max_metrics: 50,
    max_name_bytes: 64,
    max_tags: 4,
    max_tag_bytes: 32,
};

fn label(name: &str, value: &str) -> v1::Label {
    v1::Label {
        name: name.to_owned(),
        value: value.to_owned(),
    }
}

fn sample(value: f64, timestamp: i64) -> Sample {
    Sample { value, timestamp }
}

fn series(labels: &[(&str, &str)], samples: Vec<Sample>) -> v1::TimeSeries {
    v1::TimeSeries {
        labels: labels
            .iter()
            .map(|(name, value)| label(name, value))
            .collect(),
        samples,
        ..Default::default()
    }
}

fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

fn metric(
    name: &str,
    value: f64,
    timestamp: i64,
    pairs: &[(&str, &str)],
    kind: MetricKind,
) -> Metric {
    Metric {
        name: name.to_owned(),
        value,
        timestamp: Some(timestamp),
        tags: tags(pairs),
        kind,
    }
}

fn v1_convert(request: &v1::WriteRequest) -> super::convert::Converted {
    decode_and_convert(&request.encode_to_vec(), Version::V1, &LIMITS).expect("decodes")
}

#[test]
fn v1_series_become_samples_with_kinds_from_family_metadata() {
    let request = v1::WriteRequest {
        timeseries: vec![
            series(
                &[
                    ("__name__", "http_requests_total"),
                    ("job", "api"),
                    ("empty", ""),
                ],
                vec![sample(5.0, 1_000), sample(7.0, 2_000)],
            ),
            series(&[("__name__", "queue_depth")], vec![sample(3.0, 1_000)]),
            series(
                &[("__name__", "rpc_seconds_count")],
                vec![sample(9.0, 1_000)],
            ),
            series(&[("__name__", "unknown")], vec![sample(1.0, 1_000)]),
        ],
        metadata: vec![
            v1::MetricMetadata {
                r#type: MetricType::Counter as i32,
                metric_family_name: "http_requests".to_owned(),
                ..Default::default()
            },
            v1::MetricMetadata {
                r#type: MetricType::Gauge as i32,
                metric_family_name: "queue_depth".to_owned(),
                ..Default::default()
            },
            v1::MetricMetadata {
                r#type: MetricType::Summary as i32,
                metric_family_name: "rpc_seconds".to_owned(),
                ..Default::default()
            },
        ],
    };
    let converted = v1_convert(&request);
    assert_eq!(
        converted.metrics,
        vec![
            metric(
                "http_requests_total",
                5.0,
                1_000,
                &[("job", "api")],
                MetricKind::Counter
            ),
            metric(
                "http_requests_total",
                7.0,
                2_000,
                &[("job", "api")],
                MetricKind::Counter
            ),
            metric("queue_depth", 3.0, 1_000, &[], MetricKind::Gauge),
            metric("rpc_seconds_count", 9.0, 1_000, &[], MetricKind::Summary),
            metric("unknown", 1.0, 1_000, &[], MetricKind::Untyped),
        ]
    );
    assert_eq!((converted.samples_written, converted.rejected), (5, 0));
}

#[test]
fn staleness_markers_are_skipped_and_other_bad_series_refused_alone() {
    let request = v1::WriteRequest {
        timeseries: vec![
            series(
                &[("__name__", "up")],
                vec![
                    sample(1.0, 1),
                    sample(f64::from_bits(STALE_NAN_BITS), 2),
                    sample(f64::NAN, 3),
                ],
            ),
            series(&[("job", "nameless")], vec![sample(1.0, 1)]),
            series(
                &[("__name__", "twice"), ("a", "1"), ("a", "2")],
                vec![sample(1.0, 1)],
            ),
            series(
                &[("__name__", "x"), ("k", &"v".repeat(40))],
                vec![sample(1.0, 1), sample(2.0, 2)],
            ),
            series(&[("__name__", "fine")], vec![sample(2.0, 1)]),
        ],
        metadata: vec![],
    };
    let converted = v1_convert(&request);
    assert_eq!(
        converted
            .metrics
            .iter()
            .map(|m| (m.name.as_str(), m.value))
            .collect::<Vec<_>>(),
        [("up", 1.0), ("fine", 2.0)]
    );
    assert_eq!(converted.stale_markers, 1);
    assert_eq!(converted.rejected, 1 + 1 + 1 + 2);
    assert!(
        converted
            .first_rejection
            .as_deref()
            .is_some_and(|why| why.contains("\"up\"") && why.contains("not finite")),
        "{converted:?}"
    );
}

#[test]
fn v2_resolves_symbols_and_takes_the_series_metadata() {
    let request = v2::Request {
        symbols: [
            "",
            "__name__",
            "jobs_total",
            "job",
            "api",
            "temp",
            "help text",
        ]
        .map(str::to_owned)
        .to_vec(),
        timeseries: vec![
            v2::TimeSeries {
                labels_refs: vec![1, 2, 3, 4],
                samples: vec![sample(10.0, 5)],
                metadata: Some(v2::Metadata {
                    r#type: MetricType::Counter as i32,
                    help_ref: 6,
                    unit_ref: 0,
                }),
                ..Default::default()
            },
            v2::TimeSeries {
                labels_refs: vec![1, 5],
                samples: vec![sample(21.5, 5)],
                metadata: Some(v2::Metadata {
                    r#type: MetricType::Gauge as i32,
                    ..Default::default()
                }),
                ..Default::default()
            },
            v2::TimeSeries {
                labels_refs: vec![1, 99],
                samples: vec![sample(1.0, 5)],
                ..Default::default()
            },
            v2::TimeSeries {
                labels_refs: vec![1, 2, 3],
                samples: vec![sample(1.0, 5)],
                ..Default::default()
            },
        ],
    };
    let converted =
        decode_and_convert(&request.encode_to_vec(), Version::V2, &LIMITS).expect("decodes");
    assert_eq!(
        converted.metrics,
        vec![
            metric(
                "jobs_total",
                10.0,
                5,
                &[("job", "api")],
                MetricKind::Counter
            ),
            metric("temp", 21.5, 5, &[], MetricKind::Gauge),
        ]
    );
    assert_eq!(converted.rejected, 2);
    assert!(
        converted
            .first_rejection
            .is_some_and(|why| why.contains("outside the 7 symbols"))
    );
}

#[test]
fn native_histograms_become_classic_buckets() {
    // Schema 0 (base 2): positive buckets 1 and 2 hold (1, 2] and (2, 4]; negative bucket 1
    // holds [-2, -1). Deltas: counts 3 then 3+1 = 4; negative count 2.
    let histogram = Histogram {
        count: Some(Count::Int(10)),
        sum: 12.5,
        schema: 0,
        zero_threshold: 0.001,
        zero_count: Some(ZeroCount::Int(1)),
        negative_spans: vec![BucketSpan {
            offset: 1,
            length: 1,
        }],
        negative_deltas: vec![2],
        positive_spans: vec![BucketSpan {
            offset: 1,
            length: 2,
        }],
        positive_deltas: vec![3, 1],
        timestamp: 9,
        ..Default::default()
    };
    assert_eq!(
        native_buckets(&histogram).expect("valid"),
        vec![(-1.0, 2.0), (0.001, 1.0), (2.0, 3.0), (4.0, 4.0)]
    );
    let request = v1::WriteRequest {
        timeseries: vec![v1::TimeSeries {
            labels: vec![label("__name__", "latency")],
            histograms: vec![histogram.clone()],
            ..Default::default()
        }],
        metadata: vec![],
    };
    let converted = v1_convert(&request);
    let kind = MetricKind::Histogram;
    assert_eq!(
        converted.metrics,
        vec![
            metric("latency_bucket", 2.0, 9, &[("le", "-1")], kind),
            metric("latency_bucket", 3.0, 9, &[("le", "0.001")], kind),
            metric("latency_bucket", 6.0, 9, &[("le", "2")], kind),
            metric("latency_bucket", 10.0, 9, &[("le", "4")], kind),
            metric("latency_bucket", 10.0, 9, &[("le", "+Inf")], kind),
            metric("latency_sum", 12.5, 9, &[], kind),
            metric("latency_count", 10.0, 9, &[], kind),
        ]
    );
    assert_eq!(
        (converted.histograms_written, converted.samples_written),
        (1, 0)
    );

    // Two spans with a gap, and schema 1 (base sqrt 2): indexes 0 and 3 → bounds 1 and 2^1.5.
    let gapped = Histogram {
        schema: 1,
        positive_spans: vec![
            BucketSpan {
                offset: 0,
                length: 1,
            },
            BucketSpan {
                offset: 2,
                length: 1,
            },
        ],
        positive_counts: vec![1.5, 2.5],
        ..Default::default()
    };
    let buckets = native_buckets(&gapped).expect("valid");
    assert_eq!(buckets[1..], [(1.0, 1.5), (2f64.powf(1.5), 2.5)]);

    // Custom buckets: bounds from custom_values, the last index is +Inf.
    let custom = Histogram {
        schema: -53,
        custom_values: vec![0.5, 1.0],
        positive_spans: vec![BucketSpan {
            offset: 0,
            length: 3,
        }],
        positive_deltas: vec![1, 1, -1],
        ..Default::default()
    };
    assert_eq!(
        native_buckets(&custom).expect("valid"),
        vec![(0.5, 1.0), (1.0, 2.0), (f64::INFINITY, 1.0)]
    );

    for (broken, needle) in [
        (
            Histogram {
                schema: 9,
                ..Default::default()
            },
            "schema 9",
        ),
        (
            Histogram {
                positive_spans: vec![BucketSpan {
                    offset: 0,
                    length: 2,
                }],
                positive_deltas: vec![1],
                ..Default::default()
            },
            "cover 2 buckets but 1",
        ),
        (
            Histogram {
                positive_spans: vec![BucketSpan {
                    offset: 0,
                    length: 1,
                }],
                positive_deltas: vec![-1],
                ..Default::default()
            },
            "negative",
        ),
    ] {
        let why = native_buckets(&broken).expect_err("refused");
        assert!(why.contains(needle), "{why}");
    }
}

#[test]
fn samples_beyond_max_metrics_are_refused() {
    let request = v1::WriteRequest {
        timeseries: vec![series(
            &[("__name__", "many")],
            (0..60).map(|i| sample(1.0, i)).collect(),
        )],
        metadata: vec![],
    };
    let converted = v1_convert(&request);
    assert_eq!((converted.metrics.len(), converted.rejected), (50, 10));
}

#[test]
fn the_content_type_picks_the_version() {
    let headers = |value: Option<&str>| {
        let mut headers = HeaderMap::new();
        if let Some(value) = value {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_str(value).expect("header"),
            );
        }
        headers
    };
    for (value, version) in [
        (None, Version::V1),
        (Some("application/x-protobuf"), Version::V1),
        (
            Some("application/x-protobuf;proto=prometheus.WriteRequest"),
            Version::V1,
        ),
        (
            Some("application/x-protobuf; proto=io.prometheus.write.v2.Request"),
            Version::V2,
        ),
    ] {
        assert_eq!(
            Version::from_headers(&headers(value)).expect("known"),
            version,
            "{value:?}"
        );
    }
    for value in [
        "application/json",
        "application/x-protobuf;proto=io.prometheus.write.v3.Request",
    ] {
        assert!(matches!(
            Version::from_headers(&headers(Some(value))),
            Err(ApiError::UnsupportedMediaType(_))
        ));
    }
}

#[test]
fn snappy_is_capped_before_it_is_inflated_and_bad_bodies_are_malformed() {
    let body = vec![7u8; 10_000];
    let compressed = snap::raw::Encoder::new()
        .compress_vec(&body)
        .expect("compresses");
    assert_eq!(unsnappy(&compressed, 10_000).expect("inflates"), body);
    assert!(matches!(
        unsnappy(&compressed, 9_999),
        Err(ApiError::BodyTooLarge { .. })
    ));
    assert!(matches!(
        unsnappy(b"\xff\xff\xff\xff\xff", 10_000),
        Err(ApiError::MalformedRemoteWrite(_))
    ));
    for version in [Version::V1, Version::V2] {
        assert!(matches!(
            decode_and_convert(b"\x0a\xff\xff", version, &LIMITS),
            Err(ApiError::MalformedRemoteWrite(_))
        ));
    }
}

/// The committed seeds of the `remote_write_decoder` fuzz target are these requests; with
/// `WRITE_FUZZ_SEEDS=1` the test writes them instead of comparing.
#[test]
fn fuzz_seeds_are_current() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/seeds/remote_write_decoder"
    );
    let v1 = v1::WriteRequest {
        timeseries: vec![
            series(
                &[("__name__", "up"), ("job", "a")],
                vec![sample(1.0, 5), sample(f64::from_bits(STALE_NAN_BITS), 6)],
            ),
            v1::TimeSeries {
                labels: vec![label("__name__", "latency")],
                histograms: vec![Histogram {
                    count: Some(Count::Int(3)),
                    sum: 1.5,
                    schema: 1,
                    zero_count: Some(ZeroCount::Int(1)),
                    positive_spans: vec![BucketSpan {
                        offset: -1,
                        length: 2,
                    }],
                    positive_deltas: vec![1, 0],
                    ..Default::default()
                }],
                ..Default::default()
            },
        ],
        metadata: vec![v1::MetricMetadata {
            r#type: MetricType::Gauge as i32,
            metric_family_name: "up".to_owned(),
            ..Default::default()
        }],
    }
    .encode_to_vec();
    let v2 = v2::Request {
        symbols: ["", "__name__", "x_total", "k", "v"]
            .map(str::to_owned)
            .to_vec(),
        timeseries: vec![v2::TimeSeries {
            labels_refs: vec![1, 2, 3, 4],
            samples: vec![sample(2.0, 7)],
            metadata: Some(v2::Metadata {
                r#type: 1,
                ..Default::default()
            }),
            ..Default::default()
        }],
    }
    .encode_to_vec();
    let snappy = |bytes: &[u8]| {
        snap::raw::Encoder::new()
            .compress_vec(bytes)
            .expect("compresses")
    };
    for (name, pick, body) in [
        ("v1", 0u8, v1.clone()),
        ("v2", 1, v2.clone()),
        ("v1-snappy", 2, snappy(&v1)),
        ("v2-snappy", 3, snappy(&v2)),
    ] {
        let mut seed = vec![pick];
        seed.extend(body);
        let path = format!("{dir}/{name}");
        if std::env::var_os("WRITE_FUZZ_SEEDS").is_some() {
            std::fs::write(&path, seed).expect("write a seed");
        } else {
            let committed = std::fs::read(&path).expect("read a committed seed");
            assert_eq!(
                committed, seed,
                "{path} is stale: rerun with WRITE_FUZZ_SEEDS=1"
            );
        }
    }
}
