//! The remote-write decoder of `POST /api/v1/write` on arbitrary bytes: as a snappy block (the
//! cap checked before inflating) and as the protobuf itself, for 1.0 and 2.0, then the
//! conversion to samples with the ingest's default limits.
//!
//! Input: the first byte picks the version (bit 0) and whether the rest is snappy-compressed as
//! sent (bit 1) or given uncompressed. Checks besides "never panics": a refusal is
//! `malformed_remote_write` or, for snappy, `body_too_large`; a conversion's samples are finite,
//! within the limits and `--max-metrics`; the written counts never exceed the samples stored;
//! a refusal always has a reason; the record decodes back to exactly the samples.
#![no_main]

use std::sync::LazyLock;

use clap::Parser;
use libfuzzer_sys::fuzz_target;
use metricstream_backend::codec;
use metricstream_ingest::config::Args;
use metricstream_ingest::error::ApiError;
use metricstream_ingest::protocols::remote_write::{Version, decode_and_convert, unsnappy};
use metricstream_ingest::request::Limits;

static LIMITS: LazyLock<Limits> = LazyLock::new(|| {
    Args::try_parse_from(["metricstream-ingest"])
        .expect("the ingest service's defaults parse")
        .limits
        .limits()
});

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let version = if pick & 1 == 0 { Version::V1 } else { Version::V2 };
    let body = if pick & 2 == 0 {
        rest.to_vec()
    } else {
        match unsnappy(rest, LIMITS.max_body_bytes) {
            Ok(body) => body,
            Err(error) => {
                assert!(
                    matches!(
                        error,
                        ApiError::MalformedRemoteWrite(_) | ApiError::BodyTooLarge { .. }
                    ),
                    "an unexpected refusal: {error:?}"
                );
                return;
            }
        }
    };
    let converted = match decode_and_convert(&body, version, &LIMITS) {
        Ok(converted) => converted,
        Err(error) => {
            assert!(
                matches!(error, ApiError::MalformedRemoteWrite(_)),
                "an unexpected refusal: {error:?}"
            );
            return;
        }
    };
    assert!(converted.metrics.len() <= LIMITS.max_metrics);
    assert!(converted.samples_written + converted.histograms_written <= converted.metrics.len() as u64);
    assert_eq!(converted.rejected > 0, converted.first_rejection.is_some());
    for metric in &converted.metrics {
        assert!(metric.value.is_finite(), "{metric:?}");
        assert!(!metric.name.is_empty() && metric.name.len() <= LIMITS.max_name_bytes);
        assert!(metric.tags.len() <= LIMITS.max_tags, "{metric:?}");
    }
    let record = codec::encode_metrics("fuzz", &converted.metrics);
    let decoded = codec::decode(&record).expect("the record decodes");
    assert_eq!(decoded.metrics, converted.metrics);
});
