//! The request bodies of the intake suite: one deterministic set of samples, encoded once per
//! protocol, so every protocol carries the same logical samples (same names, tags, values and
//! timestamps) and the figures differ only by the encoding.
//!
//! The samples look like one scrape of a fleet's request counters:
//! `http_requests_total{job="bench", instance="bench-host-<k>:9100", method, code}`, 20 series
//! per instance (4 methods × 5 codes), all at one timestamp, as a Prometheus or OpenTelemetry
//! sender batches them.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValueKind;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as NumberValue;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Metric as OtlpMetric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde_json::json;

use super::protocol::{self, Protocol};
use metricstream_ingest::protocols::remote_write::proto::{MetricType, Sample, v1, v2};

/// The metric family every sample belongs to.
pub const NAME: &str = "http_requests_total";
/// Influx names a sample `<measurement>_<field>`; these make [`NAME`].
const INFLUX_MEASUREMENT: &str = "http_requests";
const INFLUX_FIELD: &str = "total";
const JOB: &str = "bench";
/// One scrape's timestamp (Unix milliseconds), the same for every sample.
pub const TIMESTAMP_MS: i64 = 1_700_000_000_000;
const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];
const CODES: [&str; 5] = ["200", "201", "404", "500", "503"];
/// Series per instance: every method with every code.
const SERIES_PER_INSTANCE: usize = METHODS.len() * CODES.len();

/// One sample of the set.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub instance: String,
    pub method: &'static str,
    pub code: &'static str,
    pub value: f64,
    /// Unix milliseconds ([`TIMESTAMP_MS`] in the intake set).
    pub timestamp_ms: i64,
}

impl Series {
    /// Its tags as every protocol delivers them to the ingest.
    pub fn tags(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("job".to_owned(), JOB.to_owned()),
            ("instance".to_owned(), self.instance.clone()),
            ("method".to_owned(), self.method.to_owned()),
            ("code".to_owned(), self.code.to_owned()),
        ])
    }
}

/// `samples` distinct series, one sample each.
pub fn series(samples: usize) -> Vec<Series> {
    (0..samples)
        .map(|i| Series {
            instance: format!("bench-host-{}:9100", i / SERIES_PER_INSTANCE),
            method: METHODS[(i / CODES.len()) % METHODS.len()],
            code: CODES[i % CODES.len()],
            // Counters of different sizes; .5 so a value survives every text encoding exactly
            // and is plainly a float to line protocol.
            value: (i as f64) * 1013.0 + 0.5,
            timestamp_ms: TIMESTAMP_MS,
        })
        .collect()
}

/// The body of `protocol` carrying `series`, as a real sender sends it (remote write
/// snappy-compressed; nothing else compressed, which each protocol also allows).
pub fn encode(protocol: Protocol, series: &[Series]) -> anyhow::Result<Vec<u8>> {
    Ok(match protocol {
        Protocol::NativeJson => native_json(series),
        Protocol::Influx => line_protocol(series),
        Protocol::RemoteWrite1 => snappy(&remote_write_1(series).encode_to_vec())?,
        Protocol::RemoteWrite2 => snappy(&remote_write_2(series).encode_to_vec())?,
        Protocol::OtlpProtobuf => otlp(series).encode_to_vec(),
        Protocol::OtlpJson => serde_json::to_vec(&otlp(series))?,
    })
}

/// Encodes the body of `protocol` carrying `series`, decodes it with the ingest's own decoder
/// to check it carries every sample (a body that does not decode whole would measure an error
/// path), and writes it to `path` for oha; returns its length in bytes.
pub fn write_checked(protocol: Protocol, series: &[Series], path: &Path) -> anyhow::Result<usize> {
    let bytes =
        encode(protocol, series).with_context(|| format!("encoding the {protocol} body"))?;
    let samples = protocol::decode(protocol, &bytes, 0)
        .with_context(|| format!("decoding the {protocol} body"))?
        .len();
    anyhow::ensure!(
        samples == series.len(),
        "the {protocol} body decodes to {samples} samples, not {}",
        series.len()
    );
    std::fs::write(path, &bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(bytes.len())
}

fn snappy(raw: &[u8]) -> anyhow::Result<Vec<u8>> {
    // The block format, which remote write specifies (not the framed stream format).
    Ok(snap::raw::Encoder::new().compress_vec(raw)?)
}

fn native_json(series: &[Series]) -> Vec<u8> {
    let metrics: Vec<_> = series
        .iter()
        .map(|s| {
            json!({
                "name": NAME,
                "value": s.value,
                "timestamp": s.timestamp_ms,
                "tags": s.tags(),
            })
        })
        .collect();
    json!({ "metrics": metrics }).to_string().into_bytes()
}

fn line_protocol(series: &[Series]) -> Vec<u8> {
    let mut body = String::new();
    for s in series {
        let nanos = i128::from(s.timestamp_ms) * 1_000_000;
        // Tags sorted by key, as InfluxDB recommends and Telegraf sends them; no value here
        // needs escaping (`:` does not).
        let tags: Vec<String> = s.tags().iter().map(|(k, v)| format!("{k}={v}")).collect();
        body.push_str(&format!(
            "{INFLUX_MEASUREMENT},{} {INFLUX_FIELD}={:?} {nanos}\n",
            tags.join(","),
            s.value
        ));
    }
    body.into_bytes()
}

/// The labels of a series in Prometheus' order: `__name__` first, then sorted by name.
fn labels(s: &Series) -> Vec<(String, String)> {
    std::iter::once(("__name__".to_owned(), NAME.to_owned()))
        .chain(s.tags())
        .collect()
}

fn remote_write_1(series: &[Series]) -> v1::WriteRequest {
    // No metadata: Prometheus sends 1.0's metadata in requests of their own.
    v1::WriteRequest {
        timeseries: series
            .iter()
            .map(|s| v1::TimeSeries {
                labels: labels(s)
                    .into_iter()
                    .map(|(name, value)| v1::Label { name, value })
                    .collect(),
                samples: vec![Sample {
                    value: s.value,
                    timestamp: s.timestamp_ms,
                }],
                ..Default::default()
            })
            .collect(),
        metadata: Vec::new(),
    }
}

fn remote_write_2(series: &[Series]) -> v2::Request {
    // The symbol table starts with "" (the specification's rule) and holds every string once.
    let mut symbols = vec![String::new()];
    let mut index: BTreeMap<String, u32> = BTreeMap::from([(String::new(), 0)]);
    let mut symbol = |text: String| -> u32 {
        *index.entry(text.clone()).or_insert_with(|| {
            symbols.push(text);
            (symbols.len() - 1) as u32
        })
    };
    let timeseries = series
        .iter()
        .map(|s| v2::TimeSeries {
            labels_refs: labels(s)
                .into_iter()
                .flat_map(|(name, value)| [symbol(name), symbol(value)])
                .collect(),
            samples: vec![Sample {
                value: s.value,
                timestamp: s.timestamp_ms,
            }],
            // 2.0 carries metadata on every series.
            metadata: Some(v2::Metadata {
                r#type: MetricType::Counter as i32,
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    v2::Request {
        symbols,
        timeseries,
    }
}

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(AnyValueKind::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

/// One resource per instance (`service.name` becomes `job`, `service.instance.id` `instance`),
/// one monotonic cumulative sum per resource with a point per method and code. No scope: its
/// name and version would become two more tags, and the samples would not be the same.
fn otlp(series: &[Series]) -> ExportMetricsServiceRequest {
    let mut resources: Vec<ResourceMetrics> = Vec::new();
    for chunk in series.chunk_by(|a, b| a.instance == b.instance) {
        let points = chunk
            .iter()
            .map(|s| NumberDataPoint {
                attributes: vec![text("method", s.method), text("code", s.code)],
                time_unix_nano: u64::try_from(s.timestamp_ms).unwrap_or_default() * 1_000_000,
                value: Some(NumberValue::AsDouble(s.value)),
                ..Default::default()
            })
            .collect();
        resources.push(ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    text("service.name", JOB),
                    text("service.instance.id", &chunk[0].instance),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![OtlpMetric {
                    name: NAME.to_owned(),
                    data: Some(Data::Sum(Sum {
                        data_points: points,
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    ExportMetricsServiceRequest {
        resource_metrics: resources,
    }
}

#[cfg(test)]
mod tests {
    use metricstream_backend::{Metric, MetricKind};

    use super::*;
    use crate::intake::protocol::decode_to_metrics;

    /// Every body, decoded by the ingest's own decoder, gives back exactly the set's samples (in
    /// order, kind aside: each protocol says it differently, or not at all).
    #[test]
    fn every_body_decodes_to_the_same_samples() {
        let set = series(100);
        let expected: Vec<Metric> = set
            .iter()
            .map(|s| Metric {
                name: NAME.to_owned(),
                value: s.value,
                timestamp: Some(TIMESTAMP_MS),
                tags: s.tags(),
                kind: MetricKind::Untyped,
            })
            .collect();
        for protocol in Protocol::ALL {
            let body = encode(protocol, &set).expect("encodes");
            let mut metrics = decode_to_metrics(protocol, &body)
                .unwrap_or_else(|error| panic!("{protocol}: {error:#}"));
            for metric in &mut metrics {
                metric.kind = MetricKind::Untyped;
            }
            assert_eq!(metrics, expected, "{protocol}");
        }
    }

    #[test]
    fn write_checked_writes_the_encoded_body() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let set = series(30);
        for protocol in Protocol::ALL {
            let path = dir.path().join(format!("{protocol}.bin"));
            let bytes = write_checked(protocol, &set, &path).expect("writes");
            let written = std::fs::read(&path).expect("reads");
            assert_eq!(written.len(), bytes, "{protocol}");
            assert_eq!(
                written,
                encode(protocol, &set).expect("encodes"),
                "{protocol}"
            );
        }
    }

    #[test]
    fn the_series_are_distinct_and_grouped_by_instance() {
        let set = series(250);
        let mut tag_sets: Vec<_> = set.iter().map(Series::tags).collect();
        tag_sets.sort();
        tag_sets.dedup();
        assert_eq!(tag_sets.len(), 250);
        assert_eq!(set[19].instance, set[0].instance);
        assert_ne!(set[20].instance, set[0].instance);
    }

    #[test]
    fn remote_write_2_interns_each_string_once() {
        let request = remote_write_2(&series(100));
        let mut symbols = request.symbols.clone();
        symbols.sort();
        symbols.dedup();
        assert_eq!(symbols.len(), request.symbols.len());
        assert_eq!(request.symbols[0], "");
    }
}
