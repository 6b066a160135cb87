//! Parsing and validating a JSON body into [`ParsedMetrics`]: the error codes and messages a
//! client sees for a malformed or invalid request, every limit of [`Limits`] but the body size,
//! timestamps filled in and tags put in canonical order. Pure and synchronous.

use metricstream_backend::ClientId;
use metricstream_backend::codec;
use serde::Deserialize;

use super::Limits;
use super::wire::{IngestRequest, TagList, WireMetric, WireTags};
use crate::error::ApiError;

/// Tag keys quoted in error messages are cut to this many bytes: the client knows its own key,
/// and echoing a megabyte of it helps nobody.
const QUOTED_KEY_BYTES: usize = 64;

/// The valid metrics of one request, borrowing from its body: every metric has a timestamp and
/// its tags sorted by key, each key once.
#[derive(Debug)]
pub struct ParsedMetrics<'a>(Vec<WireMetric<'a>>);

impl<'a> ParsedMetrics<'a> {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The metrics, for the per-client caps to drop some.
    pub(crate) fn rows_mut(&mut self) -> &mut Vec<WireMetric<'a>> {
        &mut self.0
    }

    /// The queue record of these metrics, attributed to `client`.
    pub fn encode(&self, client: &ClientId) -> Vec<u8> {
        codec::encode_metrics(client.as_str(), &self.0)
    }
}

/// Parses and validates a JSON body. Metrics without a timestamp get `received_at_ms`.
///
/// Not JSON at all (including `NaN`/`Infinity` literals and numbers beyond `f64`) is
/// `malformed_json`; JSON of the wrong shape or breaking a limit is `invalid_metric` (or
/// `too_many_metrics`), with the path of the offending field in the message.
pub fn parse_metrics<'a>(
    json: &'a [u8],
    limits: &Limits,
    received_at_ms: i64,
) -> Result<ParsedMetrics<'a>, ApiError> {
    let request = deserialize_request(json)?;
    if request.metrics.is_empty() {
        return Err(ApiError::InvalidMetric(
            "metrics: must hold at least one metric".to_owned(),
        ));
    }
    if request.metrics.len() > limits.max_metrics {
        return Err(ApiError::TooManyMetrics {
            count: request.metrics.len(),
            limit: limits.max_metrics,
        });
    }
    let mut metrics = request.metrics;
    for (index, metric) in metrics.iter_mut().enumerate() {
        validate_metric(index, metric, limits, received_at_ms)?;
    }
    Ok(ParsedMetrics(metrics))
}

/// Deserializes without path tracking, which costs on every field; only a body that fails is
/// parsed again, with `serde_path_to_error`, to say where. The body is checked to be UTF-8 once,
/// up front, which is cheaper than serde_json checking each string.
fn deserialize_request(json: &[u8]) -> Result<IngestRequest<'_>, ApiError> {
    let text = std::str::from_utf8(json).map_err(|error| {
        ApiError::MalformedJson(format!(
            "the body is not valid UTF-8 at byte {}",
            error.valid_up_to()
        ))
    })?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let parsed = IngestRequest::deserialize(&mut deserializer).and_then(|request| {
        // Anything but whitespace after the object is not JSON either.
        deserializer.end().map(|()| request)
    });
    match parsed {
        Ok(request) => Ok(request),
        Err(error) => {
            let mut deserializer = serde_json::Deserializer::from_str(text);
            match serde_path_to_error::deserialize::<_, IngestRequest<'_>>(&mut deserializer) {
                Err(error) => Err(json_error(error)),
                // Only trailing characters fail the fast path but not this one.
                Ok(_) => Err(ApiError::MalformedJson(error.to_string())),
            }
        }
    }
}

fn json_error(error: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = error.path().to_string();
    let inner = error.into_inner();
    // serde_path_to_error names the root ".": saying nothing is clearer there.
    let message = if path == "." {
        inner.to_string()
    } else {
        format!("{path}: {inner}")
    };
    match inner.classify() {
        serde_json::error::Category::Data => ApiError::InvalidMetric(message),
        serde_json::error::Category::Syntax
        | serde_json::error::Category::Eof
        | serde_json::error::Category::Io => ApiError::MalformedJson(message),
    }
}

/// Checks one metric against the limits, filling in its timestamp and putting its tags in
/// canonical order: in place, as moving metrics about costs more than checking them.
fn validate_metric(
    index: usize,
    metric: &mut WireMetric<'_>,
    limits: &Limits,
    received_at_ms: i64,
) -> Result<(), ApiError> {
    let invalid = |field: &str, problem: String| {
        ApiError::InvalidMetric(format!("metrics[{index}].{field}: {problem}"))
    };
    if metric.name.is_empty() {
        return Err(invalid("name", "must not be empty".to_owned()));
    }
    if metric.name.len() > limits.max_name_bytes {
        return Err(invalid(
            "name",
            format!(
                "is {} bytes long; the limit is {}",
                metric.name.len(),
                limits.max_name_bytes
            ),
        ));
    }
    // Valid JSON cannot spell NaN or infinity; this guards the codec against any other way in.
    if !metric.value.is_finite() {
        return Err(invalid("value", "must be a finite number".to_owned()));
    }
    let tags: &[_] = match &mut metric.tags {
        Some(WireTags(tags)) => {
            sort_last_wins(tags);
            tags
        }
        None => &[],
    };
    if tags.len() > limits.max_tags {
        return Err(invalid(
            "tags",
            format!("has {} tags; the limit is {}", tags.len(), limits.max_tags),
        ));
    }
    for (key, value) in tags {
        if key.len() > limits.max_tag_bytes {
            return Err(invalid(
                &format!("tags.{}", quoted_key(key)),
                format!(
                    "the key is {} bytes long; the limit is {}",
                    key.len(),
                    limits.max_tag_bytes
                ),
            ));
        }
        if value.len() > limits.max_tag_bytes {
            return Err(invalid(
                &format!("tags.{}", quoted_key(key)),
                format!(
                    "the value is {} bytes long; the limit is {}",
                    value.len(),
                    limits.max_tag_bytes
                ),
            ));
        }
    }
    metric.timestamp.get_or_insert(received_at_ms);
    Ok(())
}

/// Sorts tags by key and keeps only the last value sent for a repeated key, as a JSON object
/// read into a map would.
fn sort_last_wins(tags: &mut TagList<'_>) {
    // Stable, so repeated keys stay in the order sent.
    tags.sort_by(|left, right| left.0.cmp(&right.0));
    // `dedup_by` removes `later` and keeps `kept`: swapping first keeps the later value.
    tags.dedup_by(|later, kept| {
        let repeated = later.0 == kept.0;
        if repeated {
            std::mem::swap(later, kept);
        }
        repeated
    });
}

/// The key as it may appear in a message: cut on a character boundary, marked when cut.
fn quoted_key(key: &str) -> String {
    if key.len() <= QUOTED_KEY_BYTES {
        return key.to_owned();
    }
    let mut end = QUOTED_KEY_BYTES;
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &key[..end])
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use metricstream_backend::Metric;

    use super::*;

    const LIMITS: Limits = Limits {
        max_body_bytes: 1024 * 1024,
        max_metrics: 10_000,
        max_name_bytes: 256,
        max_tags: 64,
        max_tag_bytes: 256,
    };
    const NOW_MS: i64 = 1_700_000_123_456;

    /// Parses `json` and returns the metrics as the queue record holds them.
    fn parse(json: &str) -> Result<Vec<Metric>, ApiError> {
        let parsed = parse_metrics(json.as_bytes(), &LIMITS, NOW_MS)?;
        let record = parsed.encode(&ClientId::new("tester"));
        let batch = codec::decode(&record).expect("ingest encodes decodable records");
        assert_eq!(batch.client.as_str(), "tester");
        Ok(batch.metrics)
    }

    /// Asserts `json` fails with `code` and a message containing `needle`.
    fn assert_refused(json: &str, code: &str, needle: &str) {
        match parse(json) {
            Ok(metrics) => panic!("{json} was accepted as {metrics:?}"),
            Err(error) => {
                assert_eq!(error.code(), code, "{json}: {error}");
                let message = error.to_string();
                assert!(
                    message.contains(needle),
                    "{json}: message {message:?} lacks {needle:?}"
                );
            }
        }
    }

    #[test]
    fn parses_the_documented_example() {
        let metrics = parse(
            r#"{"metrics":[{"name":"cpu","value":75,"timestamp":1700000000000,"tags":{"host":"a"}}]}"#,
        )
        .expect("valid");
        assert_eq!(
            metrics,
            vec![Metric {
                name: "cpu".to_owned(),
                value: 75.0,
                timestamp: Some(1_700_000_000_000),
                tags: BTreeMap::from([("host".to_owned(), "a".to_owned())]),
                kind: Default::default(),
            }]
        );
    }

    #[test]
    fn missing_timestamp_gets_the_receive_time_and_tags_default_to_none() {
        let metrics = parse(
            r#"{"metrics":[{"name":"a","value":-1.5},{"name":"b","value":2e3,"timestamp":null,"tags":null}]}"#,
        )
        .expect("valid");
        assert_eq!(metrics[0].timestamp, Some(NOW_MS));
        assert_eq!(metrics[0].value, -1.5);
        assert!(metrics[0].tags.is_empty());
        assert_eq!(metrics[1].timestamp, Some(NOW_MS));
        assert_eq!(metrics[1].value, 2000.0);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let metrics = parse(
            r#"{"source":"x","metrics":[{"name":"a","value":1,"unit":"ms","extra":{"deep":[1,2]}}]}"#,
        )
        .expect("valid");
        assert_eq!(metrics.len(), 1);
    }

    #[test]
    fn escaped_strings_are_unescaped_and_a_repeated_tag_key_keeps_its_last_value() {
        let metrics = parse(
            r#"{"metrics":[{"name":"a\"b\u00e9","value":1,"tags":{"zone":"z1","h\u00f6st":"x\ny","zone":"z2","az":"1"}}]}"#,
        )
        .expect("valid");
        assert_eq!(metrics[0].name, "a\"b\u{e9}");
        assert_eq!(
            metrics[0].tags,
            BTreeMap::from([
                ("az".to_owned(), "1".to_owned()),
                ("h\u{f6}st".to_owned(), "x\ny".to_owned()),
                ("zone".to_owned(), "z2".to_owned()),
            ])
        );
    }

    #[test]
    fn anything_after_the_object_is_malformed_json() {
        assert_refused(
            r#"{"metrics":[{"name":"a","value":1}]} x"#,
            "malformed_json",
            "trailing characters",
        );
    }

    #[test]
    fn not_json_is_malformed_json() {
        for body in [
            "",
            "{",
            "not json",
            r#"{"metrics":[{"name":"a","value":1}]} trailing"#,
            r#"{"metrics":[{"name":"a","value":1},]}"#,
            "\u{feff}{}",
        ] {
            assert_refused(body, "malformed_json", "");
        }
    }

    #[test]
    fn nan_and_infinity_literals_are_malformed_json() {
        assert_refused(
            r#"{"metrics":[{"name":"a","value":NaN}]}"#,
            "malformed_json",
            "metrics[0].value",
        );
        assert_refused(
            r#"{"metrics":[{"name":"a","value":Infinity}]}"#,
            "malformed_json",
            "",
        );
        assert_refused(
            r#"{"metrics":[{"name":"a","value":-Infinity}]}"#,
            "malformed_json",
            "",
        );
    }

    #[test]
    fn numbers_beyond_f64_are_malformed_json() {
        assert_refused(
            r#"{"metrics":[{"name":"a","value":1e400}]}"#,
            "malformed_json",
            "out of range",
        );
    }

    #[test]
    fn invalid_utf8_is_malformed_json() {
        let body = b"{\"metrics\":[{\"name\":\"\xff\",\"value\":1}]}";
        let error = parse_metrics(body, &LIMITS, NOW_MS).expect_err("invalid UTF-8");
        assert_eq!(error.code(), "malformed_json");
        assert!(
            error.to_string().contains("not valid UTF-8 at byte 21"),
            "{error}"
        );
    }

    #[test]
    fn wrong_types_name_the_field_path() {
        assert_refused(
            r#"{"metrics":[{"name":"a","value":1},{"name":"b","value":2},{"name":"c","value":"x"}]}"#,
            "invalid_metric",
            r#"metrics[2].value: invalid type: string "x", expected f64"#,
        );
        assert_refused(
            r#"{"metrics":[{"name":5,"value":1}]}"#,
            "invalid_metric",
            "metrics[0].name",
        );
        assert_refused(
            r#"{"metrics":[{"name":"a","value":1,"timestamp":"today"}]}"#,
            "invalid_metric",
            "metrics[0].timestamp",
        );
        assert_refused(
            r#"{"metrics":[{"name":"a","value":1,"timestamp":1.5}]}"#,
            "invalid_metric",
            "metrics[0].timestamp",
        );
        assert_refused(
            r#"{"metrics":[{"name":"a","value":1,"tags":{"host":1}}]}"#,
            "invalid_metric",
            "metrics[0].tags.host",
        );
        assert_refused(
            r#"{"metrics":[{"name":"a","value":1,"tags":["x"]}]}"#,
            "invalid_metric",
            "metrics[0].tags",
        );
        assert_refused(
            r#"{"metrics":[{"name":"a","value":null}]}"#,
            "invalid_metric",
            "metrics[0].value",
        );
        assert_refused(r#"{"metrics":{}}"#, "invalid_metric", "metrics");
        assert_refused(r#"{"metrics":[1]}"#, "invalid_metric", "metrics[0]");
        assert_refused(
            r#"[]"#,
            "invalid_metric",
            "an object with a `metrics` array",
        );
        assert_refused(r#"null"#, "invalid_metric", "");
    }

    #[test]
    fn missing_fields_are_invalid_metric() {
        assert_refused(r#"{}"#, "invalid_metric", "missing field `metrics`");
        assert_refused(
            r#"{"metrics":[{"value":1}]}"#,
            "invalid_metric",
            "metrics[0]: missing field `name`",
        );
        assert_refused(
            r#"{"metrics":[{"name":"a","value":1},{"name":"b"}]}"#,
            "invalid_metric",
            "metrics[1]: missing field `value`",
        );
    }

    #[test]
    fn the_root_error_message_has_no_stray_path() {
        let error = parse("{}").expect_err("missing metrics");
        assert!(!error.to_string().starts_with('.'), "{error}");
    }

    #[test]
    fn empty_metrics_array_is_invalid() {
        assert_refused(r#"{"metrics":[]}"#, "invalid_metric", "at least one");
    }

    #[test]
    fn names_must_be_non_empty_and_within_the_limit() {
        assert_refused(
            r#"{"metrics":[{"name":"ok","value":1},{"name":"","value":1}]}"#,
            "invalid_metric",
            "metrics[1].name: must not be empty",
        );
        let longest = "n".repeat(256);
        assert!(
            parse(&format!(
                r#"{{"metrics":[{{"name":"{longest}","value":1}}]}}"#
            ))
            .is_ok()
        );
        let too_long = "n".repeat(257);
        assert_refused(
            &format!(r#"{{"metrics":[{{"name":"{too_long}","value":1}}]}}"#),
            "invalid_metric",
            "metrics[0].name: is 257 bytes long; the limit is 256",
        );
    }

    #[test]
    fn name_limit_counts_bytes_not_characters() {
        // 128 two-byte characters: 256 bytes, at the limit; one more is over it.
        let at_limit = "é".repeat(128);
        assert!(
            parse(&format!(
                r#"{{"metrics":[{{"name":"{at_limit}","value":1}}]}}"#
            ))
            .is_ok()
        );
        let over = "é".repeat(129);
        assert_refused(
            &format!(r#"{{"metrics":[{{"name":"{over}","value":1}}]}}"#),
            "invalid_metric",
            "258 bytes",
        );
    }

    fn metric_with_tags(tags: &BTreeMap<String, String>) -> String {
        serde_json::json!({"metrics": [{"name": "a", "value": 1, "tags": tags}]}).to_string()
    }

    #[test]
    fn too_many_tags_is_invalid() {
        let tags: BTreeMap<String, String> =
            (0..64).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        assert!(parse(&metric_with_tags(&tags)).is_ok());
        let tags: BTreeMap<String, String> =
            (0..65).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        assert_refused(
            &metric_with_tags(&tags),
            "invalid_metric",
            "metrics[0].tags: has 65 tags; the limit is 64",
        );
    }

    #[test]
    fn oversized_tag_keys_and_values_are_invalid() {
        let long = "t".repeat(257);
        let tags = BTreeMap::from([(long.clone(), "v".to_owned())]);
        assert_refused(
            &metric_with_tags(&tags),
            "invalid_metric",
            "the key is 257 bytes long",
        );
        // The message quotes a shortened key.
        let error = parse(&metric_with_tags(&tags)).expect_err("long key");
        assert!(!error.to_string().contains(&long), "{error}");

        let tags = BTreeMap::from([("host".to_owned(), long)]);
        assert_refused(
            &metric_with_tags(&tags),
            "invalid_metric",
            "metrics[0].tags.host: the value is 257 bytes long; the limit is 256",
        );
    }

    #[test]
    fn quoted_keys_are_cut_on_character_boundaries() {
        let key = "é".repeat(100);
        let quoted = quoted_key(&key);
        assert!(quoted.ends_with('…'));
        assert!(quoted.len() <= QUOTED_KEY_BYTES + '…'.len_utf8());
    }

    #[test]
    fn too_many_metrics_is_its_own_code() {
        let limits = Limits {
            max_metrics: 3,
            ..LIMITS
        };
        let body = r#"{"metrics":[{"name":"a","value":1},{"name":"a","value":1},{"name":"a","value":1},{"name":"a","value":1}]}"#;
        let error = parse_metrics(body.as_bytes(), &limits, NOW_MS).expect_err("four metrics");
        assert_eq!(error.code(), "too_many_metrics");
        assert_eq!(error.status(), axum::http::StatusCode::PAYLOAD_TOO_LARGE);
        assert!(error.to_string().contains("4 metrics"), "{error}");
    }
}
