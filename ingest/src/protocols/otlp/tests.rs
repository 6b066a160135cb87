//! The OTLP mapping on hand-made requests: every data type, the tags, partial success, and the
//! decoding of both encodings.

use std::collections::BTreeMap;

use metricstream_backend::{Metric, MetricKind};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValueKind;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as NumberValue;
use opentelemetry_proto::tonic::metrics::v1::summary_data_point::ValueAtQuantile;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram,
    HistogramDataPoint, Metric as OtlpMetric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use super::convert::{Converted, convert, exponential_buckets};
use super::{Encoding, decode_request};
use crate::error::ApiError;
use crate::request::Limits;

const LIMITS: Limits = Limits {
    max_body_bytes: 64 * 1024,
    max_metrics: 100,
    max_name_bytes: 64,
    max_tags: 8,
    max_tag_bytes: 64,
};
const T_NS: u64 = 1_700_000_000_123_456_789;
const T_MS: i64 = 1_700_000_000_123;

fn attribute(key: &str, value: AnyValueKind) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn text(key: &str, value: &str) -> KeyValue {
    attribute(key, AnyValueKind::StringValue(value.to_owned()))
}

fn request(resource: Vec<KeyValue>, metrics: Vec<OtlpMetric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "meter".to_owned(),
                    version: "1.2".to_owned(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn metric(name: &str, data: Data) -> OtlpMetric {
    OtlpMetric {
        name: name.to_owned(),
        data: Some(data),
        ..Default::default()
    }
}

fn number(value: NumberValue, attributes: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        time_unix_nano: T_NS,
        value: Some(value),
        ..Default::default()
    }
}

fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut tags: BTreeMap<String, String> =
        [("otel_scope_name", "meter"), ("otel_scope_version", "1.2")]
            .iter()
            .chain(pairs)
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
    tags.retain(|_, value| !value.is_empty());
    tags
}

fn sample(name: &str, value: f64, tags: BTreeMap<String, String>, kind: MetricKind) -> Metric {
    Metric {
        name: name.to_owned(),
        value,
        timestamp: Some(T_MS),
        tags,
        kind,
    }
}

fn run(request: &ExportMetricsServiceRequest) -> Converted {
    convert(request, &LIMITS, 7)
}

#[test]
fn gauges_and_sums_keep_their_kind_attributes_and_millisecond_time() {
    let cumulative = AggregationTemporality::Cumulative as i32;
    let converted = run(&request(
        vec![],
        vec![
            metric(
                "temperature",
                Data::Gauge(Gauge {
                    data_points: vec![number(NumberValue::AsDouble(21.5), vec![text("room", "a")])],
                }),
            ),
            metric(
                "requests",
                Data::Sum(Sum {
                    data_points: vec![number(
                        NumberValue::AsInt(42),
                        vec![attribute("code", AnyValueKind::IntValue(200))],
                    )],
                    aggregation_temporality: cumulative,
                    is_monotonic: true,
                }),
            ),
            metric(
                "queue_depth",
                Data::Sum(Sum {
                    data_points: vec![number(NumberValue::AsInt(-3), vec![])],
                    aggregation_temporality: cumulative,
                    is_monotonic: false,
                }),
            ),
            metric(
                "bytes",
                Data::Sum(Sum {
                    data_points: vec![number(NumberValue::AsDouble(10.0), vec![])],
                    aggregation_temporality: AggregationTemporality::Delta as i32,
                    is_monotonic: true,
                }),
            ),
        ],
    ));
    assert_eq!(
        converted,
        Converted {
            metrics: vec![
                sample(
                    "temperature",
                    21.5,
                    tags(&[("room", "a")]),
                    MetricKind::Gauge
                ),
                sample(
                    "requests",
                    42.0,
                    tags(&[("code", "200")]),
                    MetricKind::Counter
                ),
                sample("queue_depth", -3.0, tags(&[]), MetricKind::Gauge),
                sample("bytes", 10.0, tags(&[]), MetricKind::DeltaSum),
            ],
            rejected: 0,
            first_rejection: None,
        }
    );
}

#[test]
fn a_histogram_is_cumulative_buckets_sum_and_count() {
    let converted = run(&request(
        vec![],
        vec![metric(
            "latency",
            Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    time_unix_nano: T_NS,
                    count: 6,
                    sum: Some(4.5),
                    bucket_counts: vec![1, 2, 3],
                    explicit_bounds: vec![0.5, 1.0],
                    ..Default::default()
                }],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            }),
        )],
    ));
    let kind = MetricKind::Histogram;
    assert_eq!(
        converted.metrics,
        vec![
            sample("latency_bucket", 1.0, tags(&[("le", "0.5")]), kind),
            sample("latency_bucket", 3.0, tags(&[("le", "1")]), kind),
            sample("latency_bucket", 6.0, tags(&[("le", "+Inf")]), kind),
            sample("latency_sum", 4.5, tags(&[]), kind),
            sample("latency_count", 6.0, tags(&[]), kind),
        ]
    );
}

#[test]
fn exponential_buckets_have_the_boundaries_of_their_scale() {
    // Scale 0: base 2. Positive bucket i holds (2^i, 2^(i+1)]; negative mirrors it.
    let point = ExponentialHistogramDataPoint {
        scale: 0,
        zero_count: 1,
        zero_threshold: 0.0,
        positive: Some(Buckets {
            offset: 1,
            bucket_counts: vec![2, 3],
        }),
        negative: Some(Buckets {
            offset: 0,
            bucket_counts: vec![4, 5],
        }),
        ..Default::default()
    };
    assert_eq!(
        exponential_buckets(&point),
        vec![(-2.0, 5), (-1.0, 4), (0.0, 1), (4.0, 2), (8.0, 3)]
    );
    let converted = run(&request(
        vec![],
        vec![metric(
            "size",
            Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![ExponentialHistogramDataPoint {
                    time_unix_nano: T_NS,
                    count: 15,
                    sum: None,
                    ..point
                }],
                aggregation_temporality: AggregationTemporality::Delta as i32,
            }),
        )],
    ));
    let kind = MetricKind::DeltaHistogram;
    let counts: Vec<(String, f64)> = converted
        .metrics
        .iter()
        .map(|m| (m.tags.get("le").cloned().unwrap_or_default(), m.value))
        .collect();
    assert_eq!(
        counts,
        [
            ("-2", 5.0),
            ("-1", 9.0),
            ("0", 10.0),
            ("4", 12.0),
            ("8", 15.0),
            ("+Inf", 15.0),
            ("", 15.0)
        ]
        .map(|(le, value)| (le.to_owned(), value))
    );
    assert!(converted.metrics.iter().all(|m| m.kind == kind));
    assert_eq!(
        converted.metrics.last().map(|m| m.name.as_str()),
        Some("size_count")
    );
}

#[test]
fn a_summary_is_quantiles_sum_and_count() {
    let converted = run(&request(
        vec![],
        vec![metric(
            "rpc",
            Data::Summary(Summary {
                data_points: vec![SummaryDataPoint {
                    time_unix_nano: T_NS,
                    count: 10,
                    sum: 2.5,
                    quantile_values: vec![ValueAtQuantile {
                        quantile: 0.99,
                        value: 0.4,
                    }],
                    ..Default::default()
                }],
            }),
        )],
    ));
    let kind = MetricKind::Summary;
    assert_eq!(
        converted.metrics,
        vec![
            sample("rpc", 0.4, tags(&[("quantile", "0.99")]), kind),
            sample("rpc_sum", 2.5, tags(&[]), kind),
            sample("rpc_count", 10.0, tags(&[]), kind),
        ]
    );
}

#[test]
fn the_resource_gives_job_instance_and_a_target_info() {
    let converted = run(&request(
        vec![
            text("service.name", "checkout"),
            text("service.namespace", "shop"),
            text("service.instance.id", "pod-1"),
            text("host.name", "node-a"),
        ],
        vec![metric(
            "up",
            Data::Gauge(Gauge {
                data_points: vec![number(
                    NumberValue::AsInt(1),
                    vec![text("instance", "mine")],
                )],
            }),
        )],
    ));
    let mut info_tags: BTreeMap<String, String> = [
        ("job", "shop/checkout"),
        ("instance", "pod-1"),
        ("host.name", "node-a"),
    ]
    .iter()
    .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
    .collect();
    let info = &converted.metrics[0];
    assert_eq!((info.name.as_str(), info.value), ("target_info", 1.0));
    assert_eq!(info.timestamp, Some(7), "the receive time");
    assert_eq!(info.tags, info_tags);
    // A point's own attribute wins over the resource's.
    info_tags.remove("host.name");
    info_tags.insert("instance".to_owned(), "mine".to_owned());
    info_tags.extend(tags(&[]));
    assert_eq!(converted.metrics[1].tags, info_tags);
}

#[test]
fn bad_points_are_rejected_alone_with_the_first_reason() {
    let gauge = |points| {
        metric(
            "g",
            Data::Gauge(Gauge {
                data_points: points,
            }),
        )
    };
    let mut no_value = number(NumberValue::AsInt(1), vec![]);
    no_value.value = None;
    let mut not_recorded = number(NumberValue::AsInt(1), vec![]);
    not_recorded.flags = 1;
    let converted = run(&request(
        vec![],
        vec![
            gauge(vec![
                number(NumberValue::AsDouble(f64::NAN), vec![]),
                no_value,
                not_recorded,
                number(NumberValue::AsDouble(1.0), vec![text(&"k".repeat(65), "v")]),
                number(NumberValue::AsDouble(2.0), vec![]),
            ]),
            metric(
                "h",
                Data::Histogram(Histogram {
                    data_points: vec![HistogramDataPoint {
                        bucket_counts: vec![1, 2],
                        explicit_bounds: vec![1.0, 2.0],
                        ..Default::default()
                    }],
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                }),
            ),
            metric(
                "s",
                Data::Sum(Sum {
                    data_points: vec![number(NumberValue::AsInt(1), vec![])],
                    aggregation_temporality: 0,
                    is_monotonic: true,
                }),
            ),
        ],
    ));
    assert_eq!(converted.metrics.len(), 1, "{converted:?}");
    assert_eq!(converted.metrics[0].value, 2.0);
    assert_eq!(converted.rejected, 5, "the skipped point is not rejected");
    assert_eq!(
        converted.first_rejection.as_deref(),
        Some("metric \"g\": g is not a finite number")
    );
}

#[test]
fn samples_beyond_max_metrics_reject_their_points() {
    let points = (0..150)
        .map(|i| number(NumberValue::AsInt(i), vec![]))
        .collect();
    let converted = run(&request(
        vec![],
        vec![metric(
            "g",
            Data::Gauge(Gauge {
                data_points: points,
            }),
        )],
    ));
    assert_eq!(converted.metrics.len(), 100);
    assert_eq!(converted.rejected, 50);
    assert!(
        converted
            .first_rejection
            .is_some_and(|why| why.contains("--max-metrics"))
    );
}

#[test]
fn both_encodings_decode_and_bad_bodies_are_malformed_otlp() {
    let sent = request(
        vec![text("service.name", "a")],
        vec![metric(
            "g",
            Data::Gauge(Gauge {
                data_points: vec![number(NumberValue::AsDouble(1.5), vec![])],
            }),
        )],
    );
    let protobuf = sent.encode_to_vec();
    assert_eq!(
        decode_request(&protobuf, Encoding::Protobuf).expect("protobuf decodes"),
        sent
    );
    // OTLP JSON as the SDKs write it: camelCase, 64-bit integers as strings.
    let json = br#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"a"}}]},
        "scopeMetrics":[{"scope":{"name":"meter","version":"1.2"},"metrics":[{"name":"g","gauge":{"dataPoints":[
        {"timeUnixNano":"1700000000123456789","asDouble":1.5}]}}]}]}]}"#;
    assert_eq!(
        decode_request(json, Encoding::Json).expect("JSON decodes"),
        sent
    );
    for (body, encoding) in [
        (&protobuf[..protobuf.len() - 3], Encoding::Protobuf),
        (&b"\xff\xff\xff"[..], Encoding::Protobuf),
        (&b"{\"resourceMetrics\":"[..], Encoding::Json),
        (
            &b"{\"metrics\":[{\"name\":\"cpu\",\"value\":1}]}"[..],
            Encoding::Json,
        ),
    ] {
        assert!(
            matches!(
                decode_request(body, encoding),
                Err(ApiError::MalformedOtlp(_))
            ),
            "{body:?}"
        );
    }
}
