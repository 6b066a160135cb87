//! The intake protocols of the ingest (docs/http-api.md): how a body of each is sent, and the
//! decode-only path the ceiling (`metricstream-bench-noop`'s `POST /decode/<protocol>`) runs on
//! it — the ingest's own public decoders, so the ceiling does exactly the ingest's decoding and
//! nothing else: no client admission, no queue record, no append, no fsync.

use anyhow::{Context, bail};
use clap::ValueEnum;
use metricstream_backend::Metric;
use metricstream_ingest::protocols::influx::{Precision, parse_line_protocol};
use metricstream_ingest::protocols::otlp::{self, Encoding};
use metricstream_ingest::protocols::remote_write::{self, Version};
use metricstream_ingest::request::{Limits, ParsedMetrics, parse_metrics};

/// The ingest's default limits (docs/configuration.md: `--max-body-bytes` 1 MiB,
/// `--max-metrics` 10 000, names and tags 256 bytes, 64 tags), which the ingest under test runs
/// with too: the ceiling checks what the ingest checks.
pub const LIMITS: Limits = Limits {
    max_body_bytes: 1024 * 1024,
    max_metrics: 10_000,
    max_name_bytes: 256,
    max_tags: 64,
    max_tag_bytes: 256,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Protocol {
    /// MetricStream's own JSON on `POST /metrics`.
    NativeJson,
    /// Influx line protocol on `POST /api/v2/write?precision=ns`.
    Influx,
    /// Prometheus remote write 1.0 (`prometheus.WriteRequest`, snappy).
    #[value(name = "remote-write-1")]
    RemoteWrite1,
    /// Prometheus remote write 2.0 (`io.prometheus.write.v2.Request`, snappy).
    #[value(name = "remote-write-2")]
    RemoteWrite2,
    /// OTLP/HTTP, binary protobuf.
    OtlpProtobuf,
    /// OTLP/HTTP, OTLP JSON.
    OtlpJson,
}

impl Protocol {
    pub const ALL: [Protocol; 6] = [
        Protocol::NativeJson,
        Protocol::Influx,
        Protocol::RemoteWrite1,
        Protocol::RemoteWrite2,
        Protocol::OtlpProtobuf,
        Protocol::OtlpJson,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Protocol::NativeJson => "native-json",
            Protocol::Influx => "influx",
            Protocol::RemoteWrite1 => "remote-write-1",
            Protocol::RemoteWrite2 => "remote-write-2",
            Protocol::OtlpProtobuf => "otlp-protobuf",
            Protocol::OtlpJson => "otlp-json",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The ingest's endpoint (path and query) for this protocol.
    pub fn ingest_path(self) -> &'static str {
        match self {
            Protocol::NativeJson => "/metrics",
            Protocol::Influx => "/api/v2/write?precision=ns",
            Protocol::RemoteWrite1 | Protocol::RemoteWrite2 => "/api/v1/write",
            Protocol::OtlpProtobuf | Protocol::OtlpJson => "/v1/metrics",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Protocol::NativeJson | Protocol::OtlpJson => "application/json",
            Protocol::Influx => "text/plain; charset=utf-8",
            Protocol::RemoteWrite1 | Protocol::OtlpProtobuf => "application/x-protobuf",
            Protocol::RemoteWrite2 => "application/x-protobuf;proto=io.prometheus.write.v2.Request",
        }
    }

    /// The headers a real sender adds beside `Content-Type` and `Authorization`.
    pub fn headers(self) -> &'static [&'static str] {
        match self {
            // What Prometheus sends with each version.
            Protocol::RemoteWrite1 => &[
                "Content-Encoding: snappy",
                "X-Prometheus-Remote-Write-Version: 0.1.0",
            ],
            Protocol::RemoteWrite2 => &[
                "Content-Encoding: snappy",
                "X-Prometheus-Remote-Write-Version: 2.0.0",
            ],
            _ => &[],
        }
    }

    /// The ingest's success status, which the ceiling answers too.
    pub fn success_status(self) -> u16 {
        match self {
            Protocol::NativeJson => 202,
            Protocol::Influx | Protocol::RemoteWrite1 | Protocol::RemoteWrite2 => 204,
            Protocol::OtlpProtobuf | Protocol::OtlpJson => 200,
        }
    }

    /// The short name in the report.
    pub fn display(self) -> &'static str {
        match self {
            Protocol::NativeJson => "native JSON",
            Protocol::Influx => "Influx line protocol",
            Protocol::RemoteWrite1 => "remote write 1.0",
            Protocol::RemoteWrite2 => "remote write 2.0",
            Protocol::OtlpProtobuf => "OTLP protobuf",
            Protocol::OtlpJson => "OTLP JSON",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A decoded body: native JSON stays the borrowed [`ParsedMetrics`] the ingest encodes from
/// (turning it into owned metrics would be work the ingest does not do); the others are the
/// metrics their converters produce.
pub enum Decoded<'a> {
    Native(ParsedMetrics<'a>),
    Metrics(Vec<Metric>),
}

impl Decoded<'_> {
    pub fn len(&self) -> usize {
        match self {
            Decoded::Native(parsed) => parsed.len(),
            Decoded::Metrics(metrics) => metrics.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Decodes `body` (as sent: remote write still snappy-compressed) the way the ingest's handler
/// of `protocol` does, under [`LIMITS`]. A body the ingest would refuse even in part (a rejected
/// sample, a dropped string field) is an error: the ceiling must do the same work on the same
/// samples as the ingest, or the comparison means nothing.
pub fn decode(protocol: Protocol, body: &[u8], received_at_ms: i64) -> anyhow::Result<Decoded<'_>> {
    let metrics = match protocol {
        Protocol::NativeJson => {
            let parsed = parse_metrics(body, &LIMITS, received_at_ms)
                .map_err(|error| anyhow::anyhow!("native JSON: {error}"))?;
            return Ok(Decoded::Native(parsed));
        }
        Protocol::Influx => {
            let parsed = parse_line_protocol(body, Precision::Nanoseconds, &LIMITS, received_at_ms)
                .map_err(|error| anyhow::anyhow!("line protocol: {error}"))?;
            if parsed.string_fields_dropped > 0 {
                bail!(
                    "line protocol: {} string fields dropped",
                    parsed.string_fields_dropped
                );
            }
            parsed.metrics
        }
        Protocol::RemoteWrite1 | Protocol::RemoteWrite2 => {
            let version = if protocol == Protocol::RemoteWrite1 {
                Version::V1
            } else {
                Version::V2
            };
            let raw = remote_write::unsnappy(body, LIMITS.max_body_bytes)
                .map_err(|error| anyhow::anyhow!("remote write: {error}"))?;
            let converted = remote_write::decode_and_convert(&raw, version, &LIMITS)
                .map_err(|error| anyhow::anyhow!("remote write: {error}"))?;
            if converted.rejected > 0 {
                bail!(
                    "remote write: {} samples refused, the first: {}",
                    converted.rejected,
                    converted.first_rejection.unwrap_or_default()
                );
            }
            converted.metrics
        }
        Protocol::OtlpProtobuf | Protocol::OtlpJson => {
            let encoding = if protocol == Protocol::OtlpProtobuf {
                Encoding::Protobuf
            } else {
                Encoding::Json
            };
            let request = otlp::decode_request(body, encoding)
                .map_err(|error| anyhow::anyhow!("OTLP: {error}"))?;
            let converted = otlp::convert::convert(&request, &LIMITS, received_at_ms);
            if converted.rejected > 0 {
                bail!(
                    "OTLP: {} points rejected, the first: {}",
                    converted.rejected,
                    converted.first_rejection.unwrap_or_default()
                );
            }
            converted.metrics
        }
    };
    Ok(Decoded::Metrics(metrics))
}

/// Like [`decode`], but every protocol's samples as owned metrics (native JSON through the queue
/// record the ingest would write, read back with the backend's codec): what the tests compare.
pub fn decode_to_metrics(protocol: Protocol, body: &[u8]) -> anyhow::Result<Vec<Metric>> {
    match decode(protocol, body, 0)? {
        Decoded::Metrics(metrics) => Ok(metrics),
        Decoded::Native(parsed) => {
            let client = metricstream_backend::ClientId::new("bench");
            let record = parsed.encode(&client);
            let batch = metricstream_backend::codec::decode(&record)
                .context("reading back the native record")?;
            Ok(batch.metrics)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ceiling's route and the suite's `--protocols` take the same names.
    #[test]
    fn every_protocol_name_reads_back() {
        for protocol in Protocol::ALL {
            assert_eq!(Protocol::from_name(protocol.name()), Some(protocol));
            assert_eq!(
                Protocol::from_str(protocol.name(), false).ok(),
                Some(protocol)
            );
        }
        assert_eq!(Protocol::from_name("remote-write"), None);
    }

    #[test]
    fn a_body_the_ingest_would_refuse_in_part_is_an_error() {
        // A string field is dropped by the ingest (204 without it): not the same work.
        let body = b"m,host=a value=1.5,state=\"ok\" 1700000000000000000\n";
        assert!(decode(Protocol::Influx, body, 0).is_err());
        assert!(decode(Protocol::RemoteWrite1, b"not snappy", 0).is_err());
        assert!(decode(Protocol::OtlpJson, br#"{"metrics":[]}"#, 0).is_err());
    }
}
