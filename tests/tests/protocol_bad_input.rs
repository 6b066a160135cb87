//! Bad input in each protocol against the real ingest and consumer: corrupt compression, a
//! truncated body, a wrong content type or version, an oversized body and a label bomb each get
//! that protocol's own answer — status, error shape and a message that says what was wrong —
//! and the service is unharmed: afterwards one good request per protocol is stored, and the
//! sink holds exactly those, once. (MetricStream's own JSON: `bad_input.rs`.)

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use metricstream_ingest::error::RpcStatus;
use metricstream_ingest::protocols::remote_write::proto::{Sample, v1};
use metricstream_tests::{RawAnswer, ReadMode, ServiceSpec, TestDir, post_raw, read_sink};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValueKind;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as NumberValue;
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use prost::Message;
use serde_json::Value;

/// The ingest's limits in this test: small, so "oversized" is cheap.
const MAX_BODY_BYTES: usize = 64 * 1024;
const MAX_TAGS: usize = 8;
const TIMESTAMP_MS: i64 = 1_700_000_000_000;

/// What a protocol's error body must show.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// Remote write: plain text, `code: message`.
    Text,
    /// InfluxDB 2: `{"code":"invalid", "message":"<our code>: ..."}`.
    Influx(&'static str),
    /// OTLP: a protobuf `google.rpc.Status`.
    OtlpProtobuf,
    /// OTLP: a `google.rpc.Status` in JSON.
    OtlpJson,
}

struct Case {
    what: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    body: Vec<u8>,
    status: u16,
    shape: Shape,
    /// Words the message must hold.
    mentions: &'static [&'static str],
}

fn labels(pairs: &[(&str, &str)]) -> Vec<v1::Label> {
    pairs
        .iter()
        .map(|(name, value)| v1::Label {
            name: (*name).to_owned(),
            value: (*value).to_owned(),
        })
        .collect()
}

fn remote_write_request(extra_labels: usize, name: &str) -> Vec<u8> {
    let extra: Vec<(String, String)> = (0..extra_labels)
        .map(|index| (format!("label_{index}"), "x".to_owned()))
        .collect();
    let mut pairs = vec![("__name__", name)];
    pairs.extend(
        extra
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str())),
    );
    v1::WriteRequest {
        timeseries: vec![v1::TimeSeries {
            labels: labels(&pairs),
            samples: vec![Sample {
                value: 1.0,
                timestamp: TIMESTAMP_MS,
            }],
            ..Default::default()
        }],
        metadata: Vec::new(),
    }
    .encode_to_vec()
}

fn snappy(bytes: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(bytes)
        .expect("snappy compresses")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(bytes).expect("in-memory write");
    encoder.finish().expect("in-memory finish")
}

fn otlp_request(attributes: usize, name: &str) -> ExportMetricsServiceRequest {
    let attributes = (0..attributes)
        .map(|index| KeyValue {
            key: format!("attribute_{index}"),
            value: Some(AnyValue {
                value: Some(AnyValueKind::StringValue("x".to_owned())),
            }),
            ..Default::default()
        })
        .collect();
    let point = NumberDataPoint {
        attributes,
        time_unix_nano: u64::try_from(TIMESTAMP_MS).expect("positive") * 1_000_000,
        value: Some(NumberValue::AsDouble(2.0)),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: name.to_owned(),
                    data: Some(Data::Gauge(Gauge {
                        data_points: vec![point],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn cases() -> Vec<Case> {
    let rw = vec![
        ("Content-Type", "application/x-protobuf"),
        ("Content-Encoding", "snappy"),
    ];
    let good_rw = remote_write_request(0, "rw_good");
    let otlp_protobuf = vec![("Content-Type", "application/x-protobuf")];
    let otlp_json = vec![("Content-Type", "application/json")];
    let good_otlp = otlp_request(0, "otlp_good").encode_to_vec();
    // Zeros compress to almost nothing: the size that matters is the inflated one.
    let zeros = vec![0_u8; MAX_BODY_BYTES * 4];
    let bomb_line = format!(
        "cpu,{} busy=1 1700000000000000000\n",
        (0..MAX_TAGS * 4)
            .map(|index| format!("t{index}=x"))
            .collect::<Vec<_>>()
            .join(",")
    );
    vec![
        // Remote write.
        Case {
            what: "remote write: a body that is not snappy",
            path: "/api/v1/write",
            headers: rw.clone(),
            body: b"\x10not snappy".to_vec(),
            status: 400,
            shape: Shape::Text,
            mentions: &["malformed_remote_write", "snappy"],
        },
        Case {
            what: "remote write: a truncated protobuf",
            path: "/api/v1/write",
            headers: rw.clone(),
            body: snappy(&good_rw[..good_rw.len() - 3]),
            status: 400,
            shape: Shape::Text,
            mentions: &["malformed_remote_write", "prometheus.WriteRequest"],
        },
        Case {
            what: "remote write: JSON instead of protobuf",
            path: "/api/v1/write",
            headers: vec![
                ("Content-Type", "application/json"),
                ("Content-Encoding", "snappy"),
            ],
            body: snappy(b"{}"),
            status: 415,
            shape: Shape::Text,
            mentions: &["unsupported_media_type", "application/x-protobuf"],
        },
        Case {
            what: "remote write: a proto message of a version it does not speak",
            path: "/api/v1/write",
            headers: vec![
                (
                    "Content-Type",
                    "application/x-protobuf;proto=io.prometheus.write.v3.Request",
                ),
                ("Content-Encoding", "snappy"),
                ("X-Prometheus-Remote-Write-Version", "3.0.0"),
            ],
            body: snappy(&good_rw),
            status: 415,
            shape: Shape::Text,
            mentions: &["io.prometheus.write.v3.Request"],
        },
        Case {
            what: "remote write: zstd, which vmagent tries first",
            path: "/api/v1/write",
            headers: vec![
                ("Content-Type", "application/x-protobuf"),
                ("Content-Encoding", "zstd"),
            ],
            body: good_rw.clone(),
            status: 415,
            shape: Shape::Text,
            mentions: &["unsupported_encoding", "zstd"],
        },
        Case {
            what: "remote write: a snappy block that inflates beyond the limit",
            path: "/api/v1/write",
            headers: rw.clone(),
            body: snappy(&zeros),
            status: 413,
            shape: Shape::Text,
            mentions: &["body_too_large", "decompressed"],
        },
        Case {
            what: "remote write: a label bomb",
            path: "/api/v1/write",
            headers: rw.clone(),
            body: snappy(&remote_write_request(MAX_TAGS * 4, "rw_bomb")),
            status: 400,
            shape: Shape::Text,
            mentions: &["partial_write", "tags; the limit is 8"],
        },
        // OTLP.
        Case {
            what: "OTLP: a gzip body that is not gzip",
            path: "/v1/metrics",
            headers: vec![
                ("Content-Type", "application/x-protobuf"),
                ("Content-Encoding", "gzip"),
            ],
            body: b"not gzip".to_vec(),
            status: 400,
            shape: Shape::OtlpProtobuf,
            mentions: &["gzip"],
        },
        Case {
            what: "OTLP: a truncated protobuf",
            path: "/v1/metrics",
            headers: otlp_protobuf.clone(),
            body: good_otlp[..good_otlp.len() - 3].to_vec(),
            status: 400,
            shape: Shape::OtlpProtobuf,
            mentions: &["malformed"],
        },
        Case {
            what: "OTLP: JSON that is not an export request",
            path: "/v1/metrics",
            headers: otlp_json.clone(),
            body: br#"{"resourceMetrics": "nope"}"#.to_vec(),
            status: 400,
            shape: Shape::OtlpJson,
            mentions: &["not a valid OTLP metrics export request"],
        },
        Case {
            what: "OTLP: a content type it does not take",
            path: "/v1/metrics",
            headers: vec![("Content-Type", "text/plain")],
            body: good_otlp.clone(),
            status: 415,
            shape: Shape::OtlpProtobuf,
            mentions: &["text/plain"],
        },
        Case {
            what: "OTLP: an oversized body",
            path: "/v1/metrics",
            headers: otlp_protobuf.clone(),
            body: vec![0_u8; MAX_BODY_BYTES + 1],
            status: 413,
            shape: Shape::OtlpProtobuf,
            mentions: &["exceeds the limit"],
        },
        // Influx line protocol.
        Case {
            what: "Influx: a gzip body that is not gzip",
            path: "/api/v2/write",
            headers: vec![("Content-Encoding", "gzip")],
            body: b"not gzip".to_vec(),
            status: 400,
            shape: Shape::Influx("invalid"),
            mentions: &["malformed_gzip"],
        },
        Case {
            what: "Influx: a truncated line",
            path: "/api/v2/write",
            headers: Vec::new(),
            body: b"cpu,host=a".to_vec(),
            status: 400,
            shape: Shape::Influx("invalid"),
            mentions: &["malformed_line_protocol", "line 1"],
        },
        Case {
            what: "Influx: a precision it does not know",
            path: "/api/v2/write?precision=fortnights",
            headers: Vec::new(),
            body: b"cpu busy=1".to_vec(),
            status: 400,
            shape: Shape::Influx("invalid"),
            mentions: &["invalid_parameter", "fortnights"],
        },
        Case {
            what: "Influx: an oversized body",
            path: "/api/v2/write",
            headers: Vec::new(),
            body: vec![b'#'; MAX_BODY_BYTES + 1],
            status: 413,
            shape: Shape::Influx("request too large"),
            mentions: &["body_too_large"],
        },
        Case {
            what: "Influx: a tag bomb",
            path: "/write",
            headers: vec![("Content-Encoding", "gzip")],
            body: gzip(bomb_line.as_bytes()),
            status: 400,
            shape: Shape::Influx("invalid"),
            mentions: &["tags; the limit is 8"],
        },
    ]
}

/// The message of an error body of `shape`, after checking the shape itself.
fn message_of(shape: Shape, answer: &RawAnswer) -> String {
    let body = answer.body.as_str();
    let content_type = answer
        .headers
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    match shape {
        Shape::Text => {
            assert!(content_type.starts_with("text/plain"), "{content_type}");
            body.to_owned()
        }
        Shape::Influx(code) => {
            let json: Value = serde_json::from_str(body).expect("an Influx error is JSON");
            assert_eq!(json["code"], code, "{json}");
            json["message"].as_str().unwrap_or_default().to_owned()
        }
        Shape::OtlpProtobuf => {
            assert_eq!(content_type, "application/x-protobuf");
            RpcStatus::decode(answer.bytes.as_slice())
                .expect("a google.rpc.Status")
                .message
        }
        Shape::OtlpJson => {
            assert!(
                content_type.starts_with("application/json"),
                "{content_type}"
            );
            let json: Value = serde_json::from_str(body).expect("an OTLP JSON error");
            assert!(json["code"].as_i64().is_some_and(|code| code > 0), "{json}");
            json["message"].as_str().unwrap_or_default().to_owned()
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_each_protocols_own_answer_and_the_service_keeps_serving() {
    let dir = TestDir::new("protocol-bad-input");
    let ingest = ServiceSpec::ingest(&dir, "ingest")
        .env("METRICSTREAM_MAX_BODY_BYTES", MAX_BODY_BYTES.to_string())
        .env("METRICSTREAM_MAX_TAGS", MAX_TAGS.to_string())
        .start()
        .await;
    let consumer = ServiceSpec::consumer(&dir, "consumer").start().await;

    for case in cases() {
        let mut headers = vec![("Authorization", "bad-client")];
        headers.extend(case.headers.iter().copied());
        let answer = post_raw(&ingest, case.path, &headers, case.body).await;
        assert_eq!(answer.status, case.status, "{}: {}", case.what, answer.body);
        let message = message_of(case.shape, &answer);
        for mention in case.mentions {
            assert!(
                message.contains(mention),
                "{}: the message {message:?} does not mention {mention:?}",
                case.what
            );
        }
    }

    // Unharmed: one good request per protocol, stored.
    let good_rw = snappy(&remote_write_request(0, "rw_good"));
    // (path, headers, body, the success status)
    type GoodRequest<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<u8>, u16);
    let good: Vec<GoodRequest<'_>> = vec![
        (
            "/api/v1/write",
            vec![
                ("Content-Type", "application/x-protobuf"),
                ("Content-Encoding", "snappy"),
            ],
            good_rw,
            204,
        ),
        (
            "/v1/metrics",
            vec![("Content-Type", "application/x-protobuf")],
            otlp_request(0, "otlp_good").encode_to_vec(),
            200,
        ),
        (
            "/api/v2/write?precision=ms",
            Vec::new(),
            b"influx good=1 1700000000000".to_vec(),
            204,
        ),
    ];
    for (path, mut headers, body, status) in good {
        headers.push(("Authorization", "good-client"));
        let answer = post_raw(&ingest, path, &headers, body).await;
        assert_eq!(answer.status, status, "{path}: {}", answer.body);
    }

    let accepted = ingest.wait_for_accepted_in_sink(&dir).await;
    consumer.terminate().await;
    ingest.terminate().await;
    let sink = read_sink(&dir.sink_dir(), ReadMode::Settled).expect("the sink reads");
    let mut stored: Vec<(String, String)> = sink
        .lines
        .iter()
        .map(|line| (line.client.clone(), line.name.clone()))
        .collect();
    stored.sort();
    // The label bomb's partial write stored nothing: its one series was refused.
    assert_eq!(accepted, 3);
    assert_eq!(
        stored,
        [
            ("good-client".to_owned(), "influx_good".to_owned()),
            ("good-client".to_owned(), "otlp_good".to_owned()),
            ("good-client".to_owned(), "rw_good".to_owned()),
        ]
    );
}
