//! The OTLP/HTTP decoder of `POST /v1/metrics` on arbitrary bytes, as protobuf and as OTLP JSON,
//! then the conversion to samples with the ingest's default limits.
//!
//! Input: the first byte picks the encoding, the rest is the body. Checks besides "never
//! panics" (and no allocation beyond the body's worth): a refusal is `malformed_otlp`; whatever
//! decodes converts into samples that are finite and within the limits, no more of them than
//! `--max-metrics`, whose queue record decodes back to exactly them; and a decoded protobuf
//! request re-encodes to one that decodes the same.
#![no_main]

use std::sync::LazyLock;

use clap::Parser;
use libfuzzer_sys::fuzz_target;
use metricstream_backend::codec;
use metricstream_ingest::config::Args;
use metricstream_ingest::error::ApiError;
use metricstream_ingest::protocols::otlp::convert::convert;
use metricstream_ingest::protocols::otlp::{Encoding, decode_request};
use metricstream_ingest::request::Limits;
use prost::Message;

static LIMITS: LazyLock<Limits> = LazyLock::new(|| {
    Args::try_parse_from(["metricstream-ingest"])
        .expect("the ingest service's defaults parse")
        .limits
        .limits()
});

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let encoding = if pick % 2 == 0 {
        Encoding::Protobuf
    } else {
        Encoding::Json
    };
    let request = match decode_request(body, encoding) {
        Ok(request) => request,
        Err(error) => {
            assert!(
                matches!(error, ApiError::MalformedOtlp(_)),
                "an unexpected refusal: {error:?}"
            );
            return;
        }
    };
    if encoding == Encoding::Protobuf {
        let again = decode_request(&request.encode_to_vec(), Encoding::Protobuf)
            .expect("a re-encoded request decodes");
        // Bytes, not values: a NaN double is not equal to itself.
        assert_eq!(again.encode_to_vec(), request.encode_to_vec());
    }
    let converted = convert(&request, &LIMITS, 1_700_000_000_000);
    assert!(converted.metrics.len() <= LIMITS.max_metrics);
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
