//! Prometheus remote write on `POST /api/v1/write`: 1.0 (`prometheus.WriteRequest`) and 2.0
//! (`io.prometheus.write.v2.Request`), told apart by the `proto` parameter of
//! `Content-Type: application/x-protobuf` as the 2.0 specification asks (no parameter, or no
//! Content-Type at all, is 1.0); the body snappy-compressed (block format), as both versions
//! require. What becomes of each series is [`convert`]'s rule.
//!
//! Answers, per the specifications: `204` once every sample is durable, with the
//! `X-Prometheus-Remote-Write-{Samples,Histograms,Exemplars}-Written` headers (2.0's, sent for
//! 1.0 too). A request with refused series or samples (invalid, or new series over the
//! client's --max-active-series) has the rest stored and is answered `400` with the same
//! headers and the first reason: a sender does not retry a 4xx, and resending would not make
//! that data acceptable. Over --max-samples-per-second the request is refused whole with `429`
//! and `Retry-After`, nothing stored, so the sender's retry duplicates nothing. A body that does not decode is `400`; another content
//! type, proto message or content encoding is `415` (vmagent then falls back from its own
//! protocol to this one); `401` and `413` are final; `429` and `503` carry `Retry-After` and are
//! retried. Error bodies are plain text.

pub mod convert;
pub use metricstream_backend::remote_write_proto as proto;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prost::Message;

use crate::error::{ApiError, BodyStage, ErrorShape, ShapedError};
use crate::protocols::{SeriesAdmission, admit_all};
use crate::write::{
    AppState, admit, admit_series, read_raw_body, series_gate, series_refusal, store_metrics,
    take_sample_budget,
};
use convert::Converted;

/// The two protocol versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    /// From `Content-Type`: `application/x-protobuf` with no `proto` parameter or
    /// `proto=prometheus.WriteRequest` is 1.0, `proto=io.prometheus.write.v2.Request` 2.0.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let Some(value) = headers.get(header::CONTENT_TYPE) else {
            return Ok(Self::V1);
        };
        let text = value.to_str().unwrap_or_default();
        let mut parts = text.split(';');
        let media_type = parts.next().unwrap_or_default().trim();
        if !media_type.eq_ignore_ascii_case("application/x-protobuf") {
            return Err(ApiError::UnsupportedMediaType(format!(
                "Content-Type {text:?} is not remote write's; send application/x-protobuf"
            )));
        }
        let proto = parts.find_map(|parameter| {
            let (name, value) = parameter.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("proto")
                .then(|| value.trim().trim_matches('"'))
        });
        match proto {
            None | Some("prometheus.WriteRequest") => Ok(Self::V1),
            Some("io.prometheus.write.v2.Request") => Ok(Self::V2),
            Some(other) => Err(ApiError::UnsupportedMediaType(format!(
                "proto={other} is not supported; send prometheus.WriteRequest or io.prometheus.write.v2.Request"
            ))),
        }
    }
}

/// Checks `Content-Encoding: snappy`, the one encoding both versions allow.
fn check_snappy(headers: &HeaderMap) -> Result<(), ApiError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .trim();
    if encoding.eq_ignore_ascii_case("snappy") {
        Ok(())
    } else {
        Err(ApiError::UnsupportedEncoding(format!(
            "Content-Encoding {encoding:?} is not supported; remote write is snappy-compressed"
        )))
    }
}

/// Decompresses a snappy block, refusing one whose declared length exceeds `limit` before
/// allocating for it.
pub fn unsnappy(compressed: &[u8], limit: usize) -> Result<Vec<u8>, ApiError> {
    let length = snap::raw::decompress_len(compressed)
        .map_err(|error| ApiError::MalformedRemoteWrite(format!("snappy: {error}")))?;
    if length > limit {
        return Err(ApiError::BodyTooLarge {
            stage: BodyStage::Decompressed,
            limit,
        });
    }
    snap::raw::Decoder::new()
        .decompress_vec(compressed)
        .map_err(|error| ApiError::MalformedRemoteWrite(format!("snappy: {error}")))
}

/// Decodes and converts an uncompressed request of `version`, without a series cap.
pub fn decode_and_convert(
    body: &[u8],
    version: Version,
    limits: &crate::request::Limits,
) -> Result<Converted, ApiError> {
    decode_and_convert_admitted(body, version, limits, &mut admit_all)
}

/// Decodes and converts an uncompressed request of `version`, keeping what `admit` admits.
pub fn decode_and_convert_admitted(
    body: &[u8],
    version: Version,
    limits: &crate::request::Limits,
    admit: SeriesAdmission<'_>,
) -> Result<Converted, ApiError> {
    match version {
        Version::V1 => {
            let request = proto::v1::WriteRequest::decode(body).map_err(|error| {
                ApiError::MalformedRemoteWrite(format!("prometheus.WriteRequest: {error}"))
            })?;
            Ok(convert::convert_v1(&request, limits, admit))
        }
        Version::V2 => {
            let request = proto::v2::Request::decode(body).map_err(|error| {
                ApiError::MalformedRemoteWrite(format!("io.prometheus.write.v2.Request: {error}"))
            })?;
            Ok(convert::convert_v2(&request, limits, admit))
        }
    }
}

/// `POST /api/v1/write`.
pub async fn write(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ShapedError> {
    let shaped = |error| ShapedError(ErrorShape::Text, error);
    let client = admit(&state, &headers).map_err(shaped)?;
    let version = Version::from_headers(&headers).map_err(shaped)?;
    check_snappy(&headers).map_err(shaped)?;
    let compressed = read_raw_body(&state, &headers, body)
        .await
        .map_err(shaped)?;
    let body = unsnappy(&compressed, state.limits.max_body_bytes).map_err(shaped)?;
    drop(compressed);
    let mut gate = series_gate(&state, &client);
    let mut converted = decode_and_convert_admitted(&body, version, &state.limits, &mut |rows| {
        admit_series(&mut gate, rows)
    })
    .map_err(shaped)?;
    drop(body);
    let limited = series_refusal(&state, &client, gate).map(|refusal| refusal.message);
    take_sample_budget(&state, &client, converted.metrics.len()).map_err(shaped)?;
    state
        .metrics
        .remote_write_samples_rejected
        .inc_by(converted.rejected);
    store_metrics(&state, &client, std::mem::take(&mut converted.metrics))
        .await
        .map_err(shaped)?;
    let invalid = converted.first_rejection.as_ref().map(|why| {
        format!(
            "{} samples refused, the rest stored; the first: {why}",
            converted.rejected
        )
    });
    let mut response = match (invalid, limited) {
        (None, None) => StatusCode::NO_CONTENT.into_response(),
        (invalid, limited) => {
            let message = [invalid, limited].into_iter().flatten().collect::<Vec<_>>();
            ShapedError(ErrorShape::Text, ApiError::PartialWrite(message.join("; ")))
                .into_response()
        }
    };
    let headers = response.headers_mut();
    for (name, count) in [
        (
            "x-prometheus-remote-write-samples-written",
            converted.samples_written,
        ),
        (
            "x-prometheus-remote-write-histograms-written",
            converted.histograms_written,
        ),
        ("x-prometheus-remote-write-exemplars-written", 0),
    ] {
        headers.insert(name, HeaderValue::from(count));
    }
    Ok(response)
}

#[cfg(test)]
mod tests;
