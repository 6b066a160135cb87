//! InfluxDB line protocol on `POST /api/v2/write` (InfluxDB 2) and `POST /write` (InfluxDB 1),
//! parsed by InfluxData's own parser (`influxdb-line-protocol`).
//!
//! Every numeric field of a line becomes one sample named `<measurement>_<field>` (the naming
//! Telegraf's Prometheus output and VictoriaMetrics use), with the line's tags: floats as they
//! are, integers and unsigned integers converted to f64 (exact up to 2^53), booleans as 1 and 0.
//! String fields are not numbers and are dropped, counted in
//! `metricstream_ingest_influx_string_fields_dropped_total`. Timestamps are read in the
//! `precision` of the query (`ns` by default; `n`, `ns`, `u`, `us`, `µ`, `ms`, `s`, `m`, `h`) and
//! stored in milliseconds, rounded down; a line without one gets the receive time.
//!
//! A request is stored whole or not at all: a line that does not parse, a sample over a limit or
//! a timestamp out of range refuses the request with `400` (or `413` over the sample count),
//! naming the line, and nothing is stored, so the client may fix and resend it as a whole. Success
//! is `204 No Content`, as InfluxDB answers. `bucket`, `org`, `db` and `rp` are accepted and not
//! used: one stream is one destination. Errors have InfluxDB's shape, which Telegraf and the
//! influxdb clients read (see [`ErrorShape::Influx`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use influxdb_line_protocol::{FieldValue, parse_lines, split_lines};
use metricstream_backend::{Metric, MetricKind};

use super::check_series;
use crate::error::{ApiError, ErrorShape, ShapedError};
use crate::request::Limits;
use crate::write::{
    AppState, admit, limit_series, read_decoded_body, store_metrics, take_sample_budget,
    unix_millis_now,
};

/// The unit of the timestamps in a request, from its `precision` parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    Nanoseconds,
    Microseconds,
    Milliseconds,
    Seconds,
    Minutes,
    Hours,
}

impl Precision {
    /// Reads InfluxDB 2's (`ns`, `us`, `ms`, `s`) and InfluxDB 1's (`n`, `u`, `ms`, `s`, `m`,
    /// `h`) spellings; both endpoints take both.
    pub fn parse(value: &str) -> Result<Self, ApiError> {
        match value {
            "n" | "ns" => Ok(Self::Nanoseconds),
            "u" | "us" | "µ" | "µs" => Ok(Self::Microseconds),
            "ms" => Ok(Self::Milliseconds),
            "s" => Ok(Self::Seconds),
            "m" => Ok(Self::Minutes),
            "h" => Ok(Self::Hours),
            other => Err(ApiError::InvalidParameter(format!(
                "precision {other:?} is not one of ns, us, ms, s (or n, u, m, h)"
            ))),
        }
    }

    /// A timestamp in this unit as Unix milliseconds, or `None` past the range of i64.
    fn to_millis(self, timestamp: i64) -> Option<i64> {
        match self {
            Self::Nanoseconds => Some(timestamp.div_euclid(1_000_000)),
            Self::Microseconds => Some(timestamp.div_euclid(1_000)),
            Self::Milliseconds => Some(timestamp),
            Self::Seconds => timestamp.checked_mul(1_000),
            Self::Minutes => timestamp.checked_mul(60_000),
            Self::Hours => timestamp.checked_mul(3_600_000),
        }
    }
}

/// What a request's body held.
#[derive(Debug, Default, PartialEq)]
pub struct ParsedLines {
    pub metrics: Vec<Metric>,
    /// String fields, which carry no number to store.
    pub string_fields_dropped: u64,
}

/// Parses a line-protocol body into samples under `limits`, all or nothing.
pub fn parse_line_protocol(
    body: &[u8],
    precision: Precision,
    limits: &Limits,
    received_at_ms: i64,
) -> Result<ParsedLines, ApiError> {
    let text = std::str::from_utf8(body).map_err(|error| {
        ApiError::MalformedLineProtocol(format!(
            "the body is not UTF-8 (invalid byte at {})",
            error.valid_up_to()
        ))
    })?;
    let mut parsed = ParsedLines::default();
    // Lines one by one, so an error can name its line; split_lines knows quoted newlines.
    for (index, line) in split_lines(text).enumerate() {
        let number = index + 1;
        for point in parse_lines(line) {
            let point = point.map_err(|error| {
                ApiError::MalformedLineProtocol(format!("line {number}: {error}"))
            })?;
            let timestamp = match point.timestamp {
                Some(timestamp) => precision.to_millis(timestamp).ok_or_else(|| {
                    ApiError::MalformedLineProtocol(format!(
                        "line {number}: the timestamp {timestamp} in {precision:?} is out of range"
                    ))
                })?,
                None => received_at_ms,
            };
            let tags: BTreeMap<String, String> = point
                .series
                .tag_set
                .iter()
                .flatten()
                .map(|(key, value)| (key.as_str().to_owned(), value.as_str().to_owned()))
                .collect();
            let sent_tags = point.series.tag_set.as_ref().map_or(0, |set| set.len());
            if tags.len() != sent_tags {
                return Err(ApiError::MalformedLineProtocol(format!(
                    "line {number}: duplicate tags: a tag key is repeated"
                )));
            }
            let measurement = point.series.measurement.as_str();
            for (field, value) in &point.field_set {
                let value = match value {
                    FieldValue::F64(value) => *value,
                    FieldValue::I64(value) => *value as f64,
                    FieldValue::U64(value) => *value as f64,
                    FieldValue::Boolean(value) => f64::from(u8::from(*value)),
                    FieldValue::String(_) => {
                        parsed.string_fields_dropped += 1;
                        continue;
                    }
                };
                let name = format!("{measurement}_{}", field.as_str());
                check_series(
                    &name,
                    tags.iter()
                        .map(|(key, value)| (key.as_str(), value.as_str())),
                    limits,
                )
                .map_err(|problem| {
                    ApiError::MalformedLineProtocol(format!("line {number}: {problem}"))
                })?;
                // The parser takes `inf` and `nan` for floats; no store takes them for samples.
                if !value.is_finite() {
                    return Err(ApiError::MalformedLineProtocol(format!(
                        "line {number}: field {:?} is not a finite number",
                        field.as_str()
                    )));
                }
                if parsed.metrics.len() == limits.max_metrics {
                    return Err(ApiError::TooManyMetrics {
                        count: parsed.metrics.len() + 1,
                        limit: limits.max_metrics,
                    });
                }
                parsed.metrics.push(Metric {
                    name,
                    value,
                    timestamp: Some(timestamp),
                    tags: tags.clone(),
                    kind: MetricKind::Untyped,
                });
            }
        }
    }
    Ok(parsed)
}

/// `POST /api/v2/write` and `POST /write`.
pub async fn write(
    State(state): State<Arc<AppState>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ShapedError> {
    let shaped = |error| ShapedError(ErrorShape::Influx, error);
    let received_at_ms = unix_millis_now();
    let client = admit(&state, &headers).map_err(shaped)?;
    let Query(query) = query.map_err(|rejection| {
        shaped(ApiError::InvalidParameter(format!(
            "the query string is malformed: {rejection}"
        )))
    })?;
    let precision = match query.get("precision") {
        Some(value) => Precision::parse(value).map_err(shaped)?,
        None => Precision::default(),
    };
    let body = read_decoded_body(&state, &headers, body)
        .await
        .map_err(shaped)?;
    let mut parsed =
        parse_line_protocol(&body, precision, &state.limits, received_at_ms).map_err(shaped)?;
    drop(body);
    let sent = parsed.metrics.len();
    let refusal = limit_series(&state, &client, &mut parsed.metrics);
    let stored = parsed.metrics.len();
    take_sample_budget(&state, &client, stored).map_err(shaped)?;
    state
        .metrics
        .influx_string_fields_dropped
        .inc_by(parsed.string_fields_dropped);
    store_metrics(&state, &client, parsed.metrics)
        .await
        .map_err(shaped)?;
    match refusal {
        // InfluxDB's partial write: the good points are stored and the answer is 400.
        Some(refusal) => Err(shaped(ApiError::PartialWrite(format!(
            "partial write: {stored} of {sent} points stored; {}",
            refusal.message
        )))),
        None => Ok(StatusCode::NO_CONTENT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_body_bytes: 64 * 1024,
        max_metrics: 10,
        max_name_bytes: 32,
        max_tags: 3,
        max_tag_bytes: 16,
    };

    fn parse(body: &str, precision: Precision) -> Result<ParsedLines, ApiError> {
        parse_line_protocol(body.as_bytes(), precision, &LIMITS, 42)
    }

    fn sample(name: &str, value: f64, timestamp: i64, tags: &[(&str, &str)]) -> Metric {
        Metric {
            name: name.to_owned(),
            value,
            timestamp: Some(timestamp),
            tags: tags
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
            kind: MetricKind::Untyped,
        }
    }

    #[test]
    fn every_numeric_field_is_a_sample_named_measurement_underscore_field() {
        let body = "# a comment\n\
                    cpu,host=a,region=eu usage=0.5,cores=8i,busy=true,free=3u 1700000000000000000\n\
                    \n\
                    mem,host=b used=1.5,state=\"ok\"\n";
        let parsed = parse(body, Precision::Nanoseconds).expect("parses");
        let tags_a = [("host", "a"), ("region", "eu")];
        assert_eq!(
            parsed.metrics,
            vec![
                sample("cpu_usage", 0.5, 1_700_000_000_000, &tags_a),
                sample("cpu_cores", 8.0, 1_700_000_000_000, &tags_a),
                sample("cpu_busy", 1.0, 1_700_000_000_000, &tags_a),
                sample("cpu_free", 3.0, 1_700_000_000_000, &tags_a),
                sample("mem_used", 1.5, 42, &[("host", "b")]),
            ]
        );
        assert_eq!(parsed.string_fields_dropped, 1);
    }

    #[test]
    fn escapes_are_undone() {
        let parsed = parse(
            "disk\\ io,path=C:\\\\x,dev=a\\,b\\=c rate=1 1\n",
            Precision::Seconds,
        )
        .expect("parses");
        assert_eq!(
            parsed.metrics,
            vec![sample(
                "disk io_rate",
                1.0,
                1_000,
                &[("dev", "a,b=c"), ("path", "C:\\x")]
            )]
        );
    }

    #[test]
    fn precision_scales_timestamps_to_milliseconds_rounding_down() {
        for (precision, timestamp, millis) in [
            ("ns", 1_500_999_999, 1_500),
            ("n", -1, -1),
            ("us", 1_500_999, 1_500),
            ("u", 1_500_999, 1_500),
            ("ms", 1_500, 1_500),
            ("s", 2, 2_000),
            ("m", 2, 120_000),
            ("h", 1, 3_600_000),
        ] {
            let precision = Precision::parse(precision).expect("known precision");
            let parsed = parse(&format!("m v=1 {timestamp}"), precision).expect("parses");
            assert_eq!(parsed.metrics[0].timestamp, Some(millis), "{precision:?}");
        }
        assert!(matches!(
            Precision::parse("d"),
            Err(ApiError::InvalidParameter(message)) if message.contains("\"d\"")
        ));
        assert!(matches!(
            parse(&format!("m v=1 {}", i64::MAX), Precision::Hours),
            Err(ApiError::MalformedLineProtocol(message)) if message.contains("out of range")
        ));
    }

    #[test]
    fn a_bad_line_refuses_the_whole_request_naming_the_line() {
        for (body, needle) in [
            ("m v=1\nm v=\n", "line 2"),
            ("m v=1\nm,t=1 \n", "line 2"),
            ("m\n", "line 1"),
            ("m v=1 notatime\n", "line 1"),
            ("m,a=1,a=2 v=1\n", "duplicate tags"),
            ("m v=inf\n", "line 1"),
            ("m v=1e999\n", "not a finite number"),
            ("averyveryverylongmeasurementname v=1\n", "the name"),
            ("m,a=1,b=2,c=3,d=4 v=1\n", "4 tags"),
            ("m,t=aaaaaaaaaaaaaaaaaaaa v=1\n", "the value of tag \"t\""),
        ] {
            match parse(body, Precision::Nanoseconds) {
                Err(ApiError::MalformedLineProtocol(message)) => {
                    assert!(message.contains(needle), "{body:?}: {message}")
                }
                other => panic!("{body:?} gave {other:?}"),
            }
        }
        assert!(matches!(
            parse_line_protocol(b"m v=1 \xff", Precision::Nanoseconds, &LIMITS, 0),
            Err(ApiError::MalformedLineProtocol(message)) if message.contains("UTF-8")
        ));
    }

    #[test]
    fn more_samples_than_the_limit_is_too_many_metrics() {
        let body = "m a=1,b=2,c=3,d=4,e=5\nn a=1,b=2,c=3,d=4,e=5,f=6\n";
        assert!(matches!(
            parse(body, Precision::Nanoseconds),
            Err(ApiError::TooManyMetrics {
                count: 11,
                limit: 10
            })
        ));
    }

    #[test]
    fn an_empty_body_or_only_strings_is_nothing_to_store() {
        assert_eq!(
            parse("", Precision::Nanoseconds).expect("parses"),
            ParsedLines::default()
        );
        let parsed = parse("log msg=\"hello\"\n", Precision::Nanoseconds).expect("parses");
        assert!(parsed.metrics.is_empty());
        assert_eq!(parsed.string_fields_dropped, 1);
    }
}
