//! The HTTP side of a request body: the Content-Type and Content-Encoding checks, reading the
//! body under a byte cap (throwing an oversized rest away within bounds), and gzip decompression
//! under the same cap.

use std::io::Read;
use std::pin::Pin;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderMap, header};
use flate2::read::MultiGzDecoder;

use crate::error::{ApiError, BodyStage};

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
const DISCARD_LIMIT: usize = 1024 * 1024 * 1024;
/// Longest time spent throwing an oversized body away: what bounds the cost of a client that
/// keeps sending. Long enough for a 50 MB body on a slow link; a client still sending after it
/// has its connection closed.
const DISCARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use axum::http::HeaderValue;
    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;

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
