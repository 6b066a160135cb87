//! Turning an HTTP request body into metrics: the content-type and content-encoding checks,
//! reading the body under a byte cap, gzip decompression under the same cap, and JSON parsing
//! and validation. Everything here except [`read_body`] is pure and synchronous.

use std::borrow::Cow;
use std::io::Read;
use std::pin::Pin;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderMap, header};
use flate2::read::MultiGzDecoder;
use metricstream_backend::ClientId;
use metricstream_backend::codec::{self, EncodeMetric};
use serde::Deserialize;

use crate::error::{ApiError, BodyStage};

/// What one request may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Applies to the body as received and again after decompression.
    pub max_body_bytes: usize,
    pub max_metrics: usize,
    pub max_name_bytes: usize,
    pub max_tags: usize,
    /// Applies to each tag key and each tag value.
    pub max_tag_bytes: usize,
}

/// Tag keys quoted in error messages are cut to this many bytes: the client knows its own key,
/// and echoing a megabyte of it helps nobody.
const QUOTED_KEY_BYTES: usize = 64;

/// Refuses anything but `application/json`, with or without parameters. A missing Content-Type
/// is refused too: guessing would accept form posts and other accidents.
pub fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let value = headers.get(header::CONTENT_TYPE).ok_or_else(|| {
        ApiError::UnsupportedMediaType(
            "the Content-Type header is missing; send application/json".to_owned(),
        )
    })?;
    let unsupported = || {
        ApiError::UnsupportedMediaType(format!(
            "Content-Type {:?} is not supported; send application/json",
            String::from_utf8_lossy(value.as_bytes())
        ))
    };
    let text = value.to_str().map_err(|_| unsupported())?;
    let mut parts = text.split(';');
    let media_type = parts.next().unwrap_or_default().trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        return Err(unsupported());
    }
    // JSON is UTF-8 (RFC 8259), so the only charset we can honour is UTF-8.
    for parameter in parts {
        if let Some((name, charset)) = parameter.split_once('=')
            && name.trim().eq_ignore_ascii_case("charset")
        {
            let charset = charset.trim().trim_matches('"');
            if !charset.eq_ignore_ascii_case("utf-8") && !charset.eq_ignore_ascii_case("utf8") {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "charset {charset:?} is not supported; JSON must be UTF-8"
                )));
            }
        }
    }
    Ok(())
}

/// How the body is encoded on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentEncoding {
    Identity,
    Gzip,
}

/// Reads `Content-Encoding`: absent or `identity` means plain, `gzip` (or its old alias
/// `x-gzip`) means gzip; anything else, including a chain of several encodings, is refused.
pub fn content_encoding(headers: &HeaderMap) -> Result<ContentEncoding, ApiError> {
    let mut codings = Vec::new();
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let text = value.to_str().map_err(|_| {
            ApiError::UnsupportedEncoding(format!(
                "Content-Encoding {:?} is not supported; send gzip or identity",
                String::from_utf8_lossy(value.as_bytes())
            ))
        })?;
        codings.extend(
            text.split(',')
                .map(str::trim)
                .filter(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case("identity")),
        );
    }
    match codings.as_slice() {
        [] => Ok(ContentEncoding::Identity),
        [coding]
            if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") =>
        {
            Ok(ContentEncoding::Gzip)
        }
        _ => Err(ApiError::UnsupportedEncoding(format!(
            "Content-Encoding {:?} is not supported; send gzip or identity",
            codings.join(", ")
        ))),
    }
}

/// Reads the whole body, refusing it as soon as it passes `limit` bytes — before that when the
/// declared Content-Length already says so — so an oversized body is never buffered whole.
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::BodyTooLarge {
        stage: BodyStage::AsReceived,
        limit,
    };
    let declared_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse::<u64>().ok());
    let mut body = body;
    if declared_length.is_some_and(|length| length > limit as u64) {
        discard_rest(&mut body).await;
        return Err(too_large());
    }
    let mut collected = Vec::with_capacity(
        declared_length.map_or(0, |length| usize::try_from(length).unwrap_or(limit)),
    );
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|error| ApiError::UnreadableBody(error.to_string()))?;
        // Trailers carry nothing we use.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if collected.len() + data.len() > limit {
            discard_rest(&mut body).await;
            return Err(too_large());
        }
        collected.extend_from_slice(&data);
    }
    Ok(Bytes::from(collected))
}

/// Most bytes of an oversized body read and thrown away before answering 413.
const DISCARD_LIMIT: usize = 16 * 1024 * 1024;
/// Longest time spent throwing an oversized body away.
const DISCARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads and drops what is left of an oversized body, within bounds, so a client still sending
/// it receives our 413 rather than a connection reset. A body beyond the bounds is cut off.
async fn discard_rest(body: &mut Body) {
    let drain = async {
        let mut discarded = 0usize;
        while let Some(Ok(frame)) =
            std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
        {
            discarded += frame.data_ref().map_or(0, |data| data.len());
            if discarded > DISCARD_LIMIT {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(DISCARD_TIMEOUT, drain).await;
}

/// Undoes the content encoding. Gzip is inflated as a stream that stops one byte past `limit`,
/// so a small body that inflates to gigabytes (a gzip bomb) costs at most `limit` bytes and the
/// time to produce them.
pub fn decode_body(raw: Bytes, encoding: ContentEncoding, limit: usize) -> Result<Bytes, ApiError> {
    match encoding {
        ContentEncoding::Identity => Ok(raw),
        ContentEncoding::Gzip => gunzip_capped(&raw, limit).map(Bytes::from),
    }
}

fn gunzip_capped(compressed: &[u8], limit: usize) -> Result<Vec<u8>, ApiError> {
    if compressed.is_empty() {
        return Err(ApiError::MalformedGzip("the body is empty".to_owned()));
    }
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    // Multi-member streams are valid gzip (RFC 1952), so accept concatenated members.
    let mut decoder = MultiGzDecoder::new(compressed).take(cap);
    let mut inflated = Vec::with_capacity(compressed.len().saturating_mul(4).min(limit));
    decoder
        .read_to_end(&mut inflated)
        .map_err(|error| ApiError::MalformedGzip(error.to_string()))?;
    if inflated.len() > limit {
        return Err(ApiError::BodyTooLarge {
            stage: BodyStage::Decompressed,
            limit,
        });
    }
    Ok(inflated)
}

/// The request body as clients send it. Unknown fields are ignored so clients may add their own.
/// Strings borrow from the body wherever JSON needs no unescaping: parsing allocates per request,
/// not per metric or tag.
#[derive(Deserialize)]
#[serde(expecting = "an object with a `metrics` array")]
struct IngestRequest<'a> {
    #[serde(borrow)]
    metrics: Vec<WireMetric<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "a metric object with `name` and `value`")]
struct WireMetric<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    value: f64,
    /// Unix milliseconds; `null` is the same as absent.
    #[serde(default)]
    timestamp: Option<i64>,
    /// `null` is the same as absent.
    #[serde(default, borrow)]
    tags: Option<WireTags<'a>>,
}

/// A metric's tags in the order sent. (An inline small vector measured no faster: the moves of
/// its larger metric struct cost what the allocation saves.)
type TagList<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

/// The `tags` object, kept as a list rather than a map: sorting a handful of pairs once is
/// cheaper than a tree of owned strings.
#[derive(Debug)]
struct WireTags<'a>(TagList<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for WireTags<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TagsVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for TagsVisitor<'a> {
            type Value = WireTags<'a>;
            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("an object of string tags")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut tags = TagList::new();
                while let Some((key, value)) = map.next_entry::<WireStr<'a>, WireStr<'a>>()? {
                    tags.push((key.0, value.0));
                }
                Ok(WireTags(tags))
            }
        }
        deserializer.deserialize_map(TagsVisitor(std::marker::PhantomData))
    }
}

/// A JSON string borrowed from the body, or owned when it had escapes to undo. (serde's own
/// `Cow` impl always copies; `#[serde(borrow)]` only reaches struct fields, not map entries.)
struct WireStr<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for WireStr<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for StrVisitor<'a> {
            type Value = WireStr<'a>;
            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                text: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(WireStr(Cow::Borrowed(text)))
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(WireStr(Cow::Owned(text.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, text: String) -> Result<Self::Value, E> {
                Ok(WireStr(Cow::Owned(text)))
            }
        }
        deserializer.deserialize_str(StrVisitor(std::marker::PhantomData))
    }
}

impl EncodeMetric for WireMetric<'_> {
    fn name(&self) -> &str {
        &self.name
    }

    fn value(&self) -> f64 {
        self.value
    }

    fn timestamp(&self) -> Option<i64> {
        self.timestamp
    }

    fn tags(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        let tags: &[_] = self.tags.as_ref().map_or(&[], |tags| &tags.0);
        tags.iter().map(|(key, value)| (&**key, &**value))
    }
}

/// The valid metrics of one request, borrowing from its body: every metric has a timestamp and
/// its tags sorted by key, each key once.
#[derive(Debug)]
pub struct ParsedMetrics<'a>(Vec<WireMetric<'a>>);

impl ParsedMetrics<'_> {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
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
    use std::io::Write;

    use axum::http::HeaderValue;
    use flate2::Compression;
    use flate2::write::GzEncoder;

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

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(bytes).expect("in-memory write");
        encoder.finish().expect("in-memory finish")
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).expect("header"));
        }
        map
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

    #[test]
    fn content_type_must_be_json() {
        for accepted in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON;charset=\"UTF-8\"",
            "application/json; something=else",
        ] {
            let map = headers(&[(header::CONTENT_TYPE, accepted)]);
            assert!(check_content_type(&map).is_ok(), "{accepted}");
        }
        for refused in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/jsonx",
            "application/json; charset=latin1",
            "",
        ] {
            let map = headers(&[(header::CONTENT_TYPE, refused)]);
            let error = check_content_type(&map).expect_err(refused);
            assert_eq!(error.code(), "unsupported_media_type", "{refused}");
        }
        let error = check_content_type(&HeaderMap::new()).expect_err("missing");
        assert_eq!(error.code(), "unsupported_media_type");
        assert!(error.to_string().contains("missing"), "{error}");
    }

    #[test]
    fn content_encoding_allows_identity_and_gzip_only() {
        assert_eq!(
            content_encoding(&HeaderMap::new()).ok(),
            Some(ContentEncoding::Identity)
        );
        for (value, expected) in [
            ("identity", ContentEncoding::Identity),
            ("gzip", ContentEncoding::Gzip),
            ("GZIP", ContentEncoding::Gzip),
            ("x-gzip", ContentEncoding::Gzip),
            ("identity, gzip", ContentEncoding::Gzip),
        ] {
            let map = headers(&[(header::CONTENT_ENCODING, value)]);
            assert_eq!(content_encoding(&map).ok(), Some(expected), "{value}");
        }
        for value in ["br", "deflate", "gzip, gzip", "zstd", "gzip, br"] {
            let map = headers(&[(header::CONTENT_ENCODING, value)]);
            let error = content_encoding(&map).expect_err(value);
            assert_eq!(error.code(), "unsupported_encoding", "{value}");
        }
    }

    #[test]
    fn gzip_bodies_are_inflated() {
        let json = br#"{"metrics":[{"name":"a","value":1}]}"#;
        let decoded =
            decode_body(Bytes::from(gzip(json)), ContentEncoding::Gzip, 1024).expect("valid gzip");
        assert_eq!(&decoded[..], json);
    }

    #[test]
    fn concatenated_gzip_members_are_one_body() {
        let mut both = gzip(b"{\"metrics\":");
        both.extend(gzip(b"[{\"name\":\"a\",\"value\":1}]}"));
        let decoded =
            decode_body(Bytes::from(both), ContentEncoding::Gzip, 1024).expect("valid gzip");
        assert_eq!(&decoded[..], br#"{"metrics":[{"name":"a","value":1}]}"#);
    }

    #[test]
    fn identity_bodies_pass_through() {
        let raw = Bytes::from_static(b"{}");
        assert_eq!(
            decode_body(raw.clone(), ContentEncoding::Identity, 1).ok(),
            Some(raw)
        );
    }

    #[test]
    fn invalid_gzip_is_malformed_gzip() {
        let valid = gzip(br#"{"metrics":[{"name":"a","value":1}]}"#);
        let truncated = valid[..valid.len() - 6].to_vec();
        let mut corrupted = valid.clone();
        let middle = corrupted.len() / 2;
        corrupted[middle] ^= 0xff;
        let mut trailing_garbage = valid.clone();
        trailing_garbage.extend_from_slice(b"garbage!");
        for (what, body) in [
            ("plain JSON", br#"{"metrics":[]}"#.to_vec()),
            ("empty", Vec::new()),
            ("truncated", truncated),
            ("corrupted", corrupted),
            ("trailing garbage", trailing_garbage),
        ] {
            let error =
                decode_body(Bytes::from(body), ContentEncoding::Gzip, 1024).expect_err(what);
            assert_eq!(error.code(), "malformed_gzip", "{what}: {error}");
            assert_eq!(error.status(), axum::http::StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn gzip_bomb_is_cut_off_at_the_limit() {
        // 64 MiB of zeros compresses to about 64 KiB; the cap stops inflation after 1 MiB + 1.
        let limit = 1024 * 1024;
        let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
        let zeros = vec![0u8; 1024 * 1024];
        for _ in 0..64 {
            encoder.write_all(&zeros).expect("in-memory write");
        }
        let bomb = encoder.finish().expect("in-memory finish");
        assert!(bomb.len() < limit / 8, "the bomb is small: {}", bomb.len());
        let error =
            decode_body(Bytes::from(bomb), ContentEncoding::Gzip, limit).expect_err("too large");
        assert_eq!(error.code(), "body_too_large");
        assert!(error.to_string().contains("decompressed"), "{error}");
    }

    #[test]
    fn decompressed_body_at_the_limit_is_accepted() {
        let body = vec![b' '; 1000];
        assert!(decode_body(Bytes::from(gzip(&body)), ContentEncoding::Gzip, 1000).is_ok());
        let error = decode_body(Bytes::from(gzip(&body)), ContentEncoding::Gzip, 999)
            .expect_err("one byte over");
        assert_eq!(error.code(), "body_too_large");
    }

    #[tokio::test]
    async fn body_within_the_limit_is_read_whole() {
        let body = Body::from(vec![b'x'; 100]);
        let read = read_body(&HeaderMap::new(), body, 100).await.expect("fits");
        assert_eq!(read.len(), 100);
    }

    #[tokio::test]
    async fn streamed_body_over_the_limit_is_refused() {
        let chunks = chunked_body(vec![vec![b'x'; 60], vec![b'x'; 60]]);
        let error = read_body(&HeaderMap::new(), chunks, 100)
            .await
            .expect_err("120 bytes");
        assert_eq!(error.code(), "body_too_large");
        assert!(!error.to_string().contains("decompressed"), "{error}");
    }

    #[tokio::test]
    async fn declared_length_over_the_limit_is_refused_before_reading() {
        let map = headers(&[(header::CONTENT_LENGTH, "101")]);
        // The body itself is small: only the declaration can have caused the refusal.
        let error = read_body(&map, Body::from("x"), 100)
            .await
            .expect_err("declared too large");
        assert_eq!(error.code(), "body_too_large");
    }

    /// A body that arrives in several chunks, as a chunked upload does.
    fn chunked_body(chunks: Vec<Vec<u8>>) -> Body {
        let chunks = chunks
            .into_iter()
            .map(|chunk| Ok::<_, std::io::Error>(Bytes::from(chunk)));
        Body::from_stream(futures::stream::iter(chunks))
    }
}
