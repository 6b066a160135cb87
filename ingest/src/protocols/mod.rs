//! The protocols other agents speak, each turned into the same queue records as MetricStream's
//! own JSON (`crate::request`): the same client identity and partition, the same limits, the
//! same promise that a 2xx means durable. Each protocol answers in its own shape.
//!
//! - [`influx`]: InfluxDB line protocol on `POST /api/v2/write` and `POST /write`;
//! - [`otlp`]: OTLP/HTTP metrics, protobuf or JSON, on `POST /v1/metrics`;
//! - [`remote_write`]: Prometheus remote write 1.0 and 2.0 on `POST /api/v1/write`.

pub mod influx;
pub mod otlp;
pub mod remote_write;

use metricstream_backend::Metric;

use crate::request::Limits;

/// Says whether the rows of one point (one sample, or a histogram's series) may be stored:
/// the per-client series cap, given to the converters that expand points into rows.
pub type SeriesAdmission<'a> = &'a mut dyn FnMut(&[Metric]) -> bool;

/// The admission without a series cap: everything.
pub fn admit_all(_rows: &[Metric]) -> bool {
    true
}

/// Checks one series' name and tags against the request limits. The problem names the part
/// that broke a limit; the caller says where in the request it was.
pub fn check_series<'a>(
    name: &str,
    tags: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
    limits: &Limits,
) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name must not be empty".to_owned());
    }
    if name.len() > limits.max_name_bytes {
        return Err(format!(
            "the name {:?} is {} bytes long; the limit is {}",
            cut(name),
            name.len(),
            limits.max_name_bytes
        ));
    }
    if tags.len() > limits.max_tags {
        return Err(format!(
            "{} tags; the limit is {}",
            tags.len(),
            limits.max_tags
        ));
    }
    for (key, value) in tags {
        if key.len() > limits.max_tag_bytes {
            return Err(format!(
                "the tag key {:?} is {} bytes long; the limit is {}",
                cut(key),
                key.len(),
                limits.max_tag_bytes
            ));
        }
        if value.len() > limits.max_tag_bytes {
            return Err(format!(
                "the value of tag {:?} is {} bytes long; the limit is {}",
                cut(key),
                value.len(),
                limits.max_tag_bytes
            ));
        }
    }
    Ok(())
}

/// A name as a message may quote it: at most 64 bytes, cut on a character boundary.
fn cut(text: &str) -> &str {
    let mut end = text.len().min(64);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
