//! OTLP/HTTP metrics on `POST /v1/metrics`: an `ExportMetricsServiceRequest` as binary protobuf
//! (`Content-Type: application/x-protobuf`) or OTLP JSON (`application/json`), optionally gzip,
//! decoded with the `opentelemetry-proto` types. What becomes of each metric is [`convert`]'s
//! rule.
//!
//! Answers follow the OTLP/HTTP specification, in the request's encoding: `200` with an
//! `ExportMetricsServiceResponse` once the stored samples are durable, whose `partial_success`
//! counts the data points that could not be stored (invalid, or of new series over the client's
//! --max-active-series) and says why; over --max-samples-per-second the request is refused
//! whole with `429` and `Retry-After`, nothing stored; `400` for a
//! body that does not decode (not retryable), `415` for another content type, `401`, `413`,
//! `429` and `503` (the last two retryable, with `Retry-After`), each with a `google.rpc.Status`
//! body ([`ErrorShape::OtlpProtobuf`], [`ErrorShape::OtlpJson`]).

pub mod convert;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message;

use crate::error::{ApiError, ErrorShape, ShapedError};
use crate::write::{
    AppState, admit, admit_series, read_decoded_body, series_gate, series_refusal, store_metrics,
    take_sample_budget, unix_millis_now,
};

/// The two encodings of OTLP/HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    /// Reads `Content-Type`; anything but OTLP's two media types is `415`.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let value = headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        let media_type = value.split(';').next().unwrap_or_default().trim();
        if media_type.eq_ignore_ascii_case("application/x-protobuf") {
            Ok(Self::Protobuf)
        } else if media_type.eq_ignore_ascii_case("application/json") {
            Ok(Self::Json)
        } else {
            Err(ApiError::UnsupportedMediaType(format!(
                "Content-Type {value:?} is not OTLP's; send application/x-protobuf or application/json"
            )))
        }
    }

    fn error_shape(self) -> ErrorShape {
        match self {
            Self::Protobuf => ErrorShape::OtlpProtobuf,
            Self::Json => ErrorShape::OtlpJson,
        }
    }
}

/// Decodes an export request in `encoding`.
pub fn decode_request(
    body: &[u8],
    encoding: Encoding,
) -> Result<ExportMetricsServiceRequest, ApiError> {
    match encoding {
        Encoding::Protobuf => ExportMetricsServiceRequest::decode(body)
            .map_err(|error| ApiError::MalformedOtlp(format!("protobuf: {error}"))),
        Encoding::Json => {
            let request: ExportMetricsServiceRequest = serde_json::from_slice(body)
                .map_err(|error| ApiError::MalformedOtlp(format!("JSON: {error}")))?;
            // OTLP JSON ignores unknown fields, so MetricStream's own JSON, which an older
            // client may still send here, would read as an empty request and vanish.
            if request.resource_metrics.is_empty() && looks_like_native_json(body) {
                return Err(ApiError::MalformedOtlp(
                    "this is MetricStream's own JSON ({\"metrics\":[...]}); POST it to /metrics"
                        .to_owned(),
                ));
            }
            Ok(request)
        }
    }
}

fn looks_like_native_json(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|value| {
        value
            .get("metrics")
            .is_some_and(serde_json::Value::is_array)
    })
}

/// `POST /v1/metrics`.
pub async fn export(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ShapedError> {
    let received_at_ms = unix_millis_now();
    // Until the Content-Type is known, errors are protobuf, OTLP's default encoding.
    let encoding = Encoding::from_headers(&headers)
        .map_err(|error| ShapedError(ErrorShape::OtlpProtobuf, error))?;
    let shaped = |error| ShapedError(encoding.error_shape(), error);
    let client = admit(&state, &headers).map_err(shaped)?;
    let body = read_decoded_body(&state, &headers, body)
        .await
        .map_err(shaped)?;
    let request = decode_request(&body, encoding).map_err(shaped)?;
    drop(body);
    let mut gate = series_gate(&state, &client);
    let mut converted =
        convert::convert_admitted(&request, &state.limits, received_at_ms, &mut |rows| {
            admit_series(&mut gate, rows)
        });
    drop(request);
    let limited = series_refusal(&state, &client, gate);
    take_sample_budget(&state, &client, converted.metrics.len()).map_err(shaped)?;
    state
        .metrics
        .otlp_points_rejected
        .inc_by(converted.rejected);
    store_metrics(&state, &client, std::mem::take(&mut converted.metrics))
        .await
        .map_err(shaped)?;
    let limited_points = limited.as_ref().map_or(0, |refusal| refusal.samples as u64);
    let rejected = converted.rejected + limited_points;
    let partial_success = (rejected > 0).then(|| ExportMetricsPartialSuccess {
        rejected_data_points: i64::try_from(rejected).unwrap_or(i64::MAX),
        error_message: [
            converted.first_rejection,
            limited.map(|refusal| refusal.message),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("; "),
    });
    let response = ExportMetricsServiceResponse { partial_success };
    Ok(match encoding {
        Encoding::Protobuf => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            response.encode_to_vec(),
        )
            .into_response(),
        Encoding::Json => (StatusCode::OK, axum::Json(response)).into_response(),
    })
}

#[cfg(test)]
mod tests;
