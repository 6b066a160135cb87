//! The ingest request parser: a request body from bytes to `ParsedMetrics` with the service's
//! default limits, through the same functions `POST /metrics` calls (body read under the cap,
//! gzip inflation under the cap, JSON parsing and validation), then encoded as the queue record.
//!
//! Input: the first byte picks how the rest is sent —
//!   0: as a plain JSON body;
//!   1: as a gzip body exactly as given (fuzzes the inflater on hostile bytes);
//!   2: gzip-compressed here first, so the parser sees the rest whole, through the gzip path.
//!
//! Checks besides "never panics": every refusal is a 4xx; every accepted body agrees with an
//! independent reading of the same JSON (the known fields as serde_json's `Value`): the same
//! metrics, names, values, timestamps (the receive time when absent) and tags (the last value of a
//! repeated key), within the limits; and its queue record decodes back to exactly that.
//!
//! The reading skips unknown fields as the service does: their content is checked for JSON syntax
//! only, so a lone surrogate escape (`"\ud800"`) or a number beyond `f64` (`1e999`) there is
//! accepted, although serde_json refuses both as a `Value`.
#![no_main]

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::LazyLock;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, header};
use clap::Parser;
use flate2::Compression;
use flate2::write::GzEncoder;
use libfuzzer_sys::fuzz_target;
use metricstream_backend::{ClientId, codec};
use metricstream_ingest::config::Args;
use metricstream_ingest::error::ApiError;
use metricstream_ingest::request::{self, Limits};
use serde::Deserialize;
use serde_json::Value;

/// The body as the documented API reads it, each known field as a `Value` (absent is `Null`).
#[derive(Deserialize)]
struct OracleRequest {
    metrics: Vec<OracleMetric>,
}

#[derive(Deserialize)]
struct OracleMetric {
    #[serde(default)]
    name: Value,
    #[serde(default)]
    value: Value,
    #[serde(default)]
    timestamp: Value,
    #[serde(default)]
    tags: Value,
}

/// The limits `metricstream-ingest` runs with when no flag or variable sets them.
static LIMITS: LazyLock<Limits> = LazyLock::new(|| {
    Args::try_parse_from(["metricstream-ingest"])
        .expect("the ingest service's defaults parse")
        .limits
        .limits()
});

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a Tokio runtime")
});

const RECEIVED_AT_MS: i64 = 1_700_000_123_456;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (body, gzip) = match mode % 3 {
        0 => (rest.to_vec(), false),
        1 => (rest.to_vec(), true),
        _ => (gzip(rest), true),
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if gzip {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    let limits = *LIMITS;

    let result = (|| -> Result<(), ApiError> {
        request::check_content_type(&headers)?;
        let encoding = request::content_encoding(&headers)?;
        let raw = RUNTIME.block_on(request::read_body(
            &headers,
            Body::from(body),
            limits.max_body_bytes,
        ))?;
        let json = request::decode_body(raw, encoding, limits.max_body_bytes)?;
        let parsed = request::parse_metrics(&json, &limits, RECEIVED_AT_MS)?;
        check_accepted(&json, &parsed, &limits);
        Ok(())
    })();
    if let Err(error) = result {
        assert!(
            error.status().is_client_error(),
            "a client's body got {}: {error}",
            error.status()
        );
    }
});

fn check_accepted(json: &Bytes, parsed: &request::ParsedMetrics<'_>, limits: &Limits) {
    let client = ClientId::new("fuzz-client");
    let record = parsed.encode(&client);
    let batch = codec::decode(&record).expect("ingest's records decode");
    assert_eq!(batch.client, client);
    assert_eq!(batch.metrics.len(), parsed.len());
    assert!((1..=limits.max_metrics).contains(&batch.metrics.len()));

    let oracle: OracleRequest = serde_json::from_slice(json)
        .expect("a body the parser accepted reads as the documented request");
    let wire = oracle.metrics;
    assert_eq!(wire.len(), batch.metrics.len());
    for (sent, stored) in wire.iter().zip(&batch.metrics) {
        assert_eq!(sent.name.as_str(), Some(stored.name.as_str()));
        assert!(!stored.name.is_empty() && stored.name.len() <= limits.max_name_bytes);
        let value = sent
            .value
            .as_f64()
            .expect("an accepted value is a number");
        // `==`, not bits: whether `-0` keeps its sign is serde_json's business, not ours.
        assert_eq!(value, stored.value);
        assert!(stored.value.is_finite());
        let timestamp = match &sent.timestamp {
            Value::Null => RECEIVED_AT_MS,
            other => other.as_i64().expect("an accepted timestamp is an i64"),
        };
        assert_eq!(stored.timestamp, Some(timestamp));
        let tags: BTreeMap<String, String> = match &sent.tags {
            Value::Null => BTreeMap::new(),
            Value::Object(map) => map
                .iter()
                .map(|(key, value)| {
                    let value = value.as_str().expect("accepted tag values are strings");
                    (key.clone(), value.to_owned())
                })
                .collect(),
            other => panic!("accepted tags that are not an object: {other}"),
        };
        assert_eq!(stored.tags, tags);
        assert!(stored.tags.len() <= limits.max_tags);
        for (key, value) in &stored.tags {
            assert!(key.len() <= limits.max_tag_bytes && value.len() <= limits.max_tag_bytes);
        }
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(bytes).expect("in-memory write");
    encoder.finish().expect("in-memory finish")
}
