//! The InfluxDB line-protocol decoder of `POST /api/v2/write` and `/write` on arbitrary bytes,
//! with the ingest's default limits and each precision.
//!
//! Input: the first byte picks the precision, the rest is the body. Checks besides "never
//! panics": a refusal is one of the line-protocol errors (a 400 or a 413, never a 5xx); an
//! accepted body's samples are finite, named `<measurement>_<field>`, within the limits, with a
//! timestamp; and their queue record decodes back to exactly them.
#![no_main]

use std::sync::LazyLock;

use clap::Parser;
use libfuzzer_sys::fuzz_target;
use metricstream_backend::codec;
use metricstream_ingest::config::Args;
use metricstream_ingest::error::ApiError;
use metricstream_ingest::protocols::influx::{Precision, parse_line_protocol};
use metricstream_ingest::request::Limits;

static LIMITS: LazyLock<Limits> = LazyLock::new(|| {
    Args::try_parse_from(["metricstream-ingest"])
        .expect("the ingest service's defaults parse")
        .limits
        .limits()
});

const PRECISIONS: [&str; 6] = ["ns", "us", "ms", "s", "m", "h"];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let precision = Precision::parse(PRECISIONS[usize::from(pick) % PRECISIONS.len()])
        .expect("a known precision");
    match parse_line_protocol(body, precision, &LIMITS, 1_700_000_000_000) {
        Err(error) => assert!(
            matches!(
                error,
                ApiError::MalformedLineProtocol(_) | ApiError::TooManyMetrics { .. }
            ),
            "an unexpected refusal: {error:?}"
        ),
        Ok(parsed) => {
            assert!(parsed.metrics.len() <= LIMITS.max_metrics);
            for metric in &parsed.metrics {
                assert!(metric.value.is_finite(), "{metric:?}");
                assert!(metric.timestamp.is_some(), "{metric:?}");
                assert!(metric.name.contains('_'), "{metric:?}");
                assert!(metric.name.len() <= LIMITS.max_name_bytes, "{metric:?}");
                assert!(metric.tags.len() <= LIMITS.max_tags, "{metric:?}");
                for (key, value) in &metric.tags {
                    assert!(key.len() <= LIMITS.max_tag_bytes && value.len() <= LIMITS.max_tag_bytes);
                }
            }
            let record = codec::encode_metrics("fuzz", &parsed.metrics);
            let decoded = codec::decode(&record).expect("the record decodes");
            assert_eq!(decoded.metrics, parsed.metrics);
        }
    }
});
