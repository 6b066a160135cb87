//! Every way a request can fail, and how each becomes an HTTP answer: a status, a stable
//! machine-readable `code`, and a message for the human reading it, always as
//! `{"error":{"code":"...","message":"..."}}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use metricstream_backend::AppendError;
use serde::Serialize;

use crate::auth::AuthError;

/// Which of the two body-size checks a body failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyStage {
    AsReceived,
    Decompressed,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("{0}")]
    InvalidMetric(String),
    #[error("the request holds {count} metrics; the limit is {limit} per request")]
    TooManyMetrics { count: usize, limit: usize },
    #[error("{}", body_too_large_message(*stage, *limit))]
    BodyTooLarge { stage: BodyStage, limit: usize },
    #[error("the body is not valid gzip: {0}")]
    MalformedGzip(String),
    #[error("the request body could not be read: {0}")]
    UnreadableBody(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    UnsupportedEncoding(String),
    #[error("{}", AuthError::Missing)]
    MissingAuthorization {
        /// Token mode: answer with a `WWW-Authenticate: Bearer` challenge.
        bearer_challenge: bool,
    },
    #[error("{}", AuthError::UnknownToken)]
    UnknownToken,
    #[error("the Authorization header is not a valid client id: {0}")]
    InvalidClientId(String),
    #[error("client {client:?} exceeded its request rate; retry in {retry_after_seconds} s")]
    RateLimited {
        client: String,
        retry_after_seconds: u64,
    },
    #[error("the request body did not arrive within {seconds} s")]
    BodyReadTimeout { seconds: u64 },
    #[error("{limit} requests are already in progress; retry shortly")]
    Overloaded { limit: usize },
    #[error("the queue is saturated")]
    BackendSaturated,
    #[error("the queue is unavailable: {0}")]
    BackendUnavailable(String),
    #[error("{0}")]
    SpillFull(String),
    #[error(
        "the encoded batch is {size} bytes; the queue accepts records of at most {limit} bytes"
    )]
    RecordTooLarge { size: usize, limit: usize },
    #[error("internal error: {0}")]
    Internal(String),
    #[error("the body is not valid line protocol: {0}")]
    MalformedLineProtocol(String),
    #[error("{0}")]
    InvalidParameter(String),
    #[error("the body is not a valid OTLP metrics export request: {0}")]
    MalformedOtlp(String),
    #[error("the body is not a valid remote-write request: {0}")]
    MalformedRemoteWrite(String),
    /// Some of a request was stored and some refused; the message says how much of each.
    #[error("{0}")]
    PartialWrite(String),
    #[error(
        "client {client:?} exceeded its sample rate (--max-samples-per-second) with {samples} samples; nothing was stored, retry in {retry_after_seconds} s"
    )]
    SampleRateLimited {
        client: String,
        samples: usize,
        retry_after_seconds: u64,
    },
    #[error("no such endpoint: {0}")]
    NotFound(String),
    #[error("{method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
}

fn body_too_large_message(stage: BodyStage, limit: usize) -> String {
    match stage {
        BodyStage::AsReceived => format!("the request body exceeds the limit of {limit} bytes"),
        BodyStage::Decompressed => {
            format!("the decompressed request body exceeds the limit of {limit} bytes")
        }
    }
}

impl ApiError {
    /// Translates an authentication failure; `bearer_challenge` is true in token mode.
    pub fn from_auth(error: AuthError, bearer_challenge: bool) -> Self {
        match error {
            AuthError::Missing => Self::MissingAuthorization { bearer_challenge },
            AuthError::UnknownToken => Self::UnknownToken,
            AuthError::InvalidClientId(why) => Self::InvalidClientId(why),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::MalformedJson(_)
            | Self::MalformedLineProtocol(_)
            | Self::InvalidParameter(_)
            | Self::MalformedOtlp(_)
            | Self::MalformedRemoteWrite(_)
            | Self::PartialWrite(_)
            | Self::MalformedGzip(_)
            | Self::UnreadableBody(_)
            | Self::InvalidClientId(_) => StatusCode::BAD_REQUEST,
            Self::InvalidMetric(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyMetrics { .. }
            | Self::BodyTooLarge { .. }
            | Self::RecordTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) | Self::UnsupportedEncoding(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            Self::MissingAuthorization { .. } | Self::UnknownToken => StatusCode::UNAUTHORIZED,
            Self::RateLimited { .. } | Self::SampleRateLimited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::BodyReadTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::Overloaded { .. }
            | Self::BackendSaturated
            | Self::BackendUnavailable(_)
            | Self::SpillFull(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// The stable code clients branch on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedJson(_) => "malformed_json",
            Self::MalformedLineProtocol(_) => "malformed_line_protocol",
            Self::InvalidParameter(_) => "invalid_parameter",
            Self::MalformedOtlp(_) => "malformed_otlp",
            Self::MalformedRemoteWrite(_) => "malformed_remote_write",
            Self::PartialWrite(_) => "partial_write",
            Self::InvalidMetric(_) => "invalid_metric",
            Self::TooManyMetrics { .. } => "too_many_metrics",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::MalformedGzip(_) => "malformed_gzip",
            Self::UnreadableBody(_) => "unreadable_body",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::UnsupportedEncoding(_) => "unsupported_encoding",
            Self::MissingAuthorization { .. } => "missing_authorization",
            Self::UnknownToken => "unknown_token",
            Self::InvalidClientId(_) => "invalid_client_id",
            Self::RateLimited { .. } => "rate_limited",
            Self::SampleRateLimited { .. } => "sample_rate_limited",
            Self::BodyReadTimeout { .. } => "body_read_timeout",
            Self::Overloaded { .. } => "overloaded",
            Self::BackendSaturated => "backend_saturated",
            Self::BackendUnavailable(_) => "backend_unavailable",
            Self::SpillFull(_) => "spill_full",
            Self::RecordTooLarge { .. } => "record_too_large",
            Self::Internal(_) => "internal",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
        }
    }

    /// What the client is told. Server-side failures keep their details for the log: the client
    /// can act only on "retry later" and gains nothing from our disk's or code's troubles.
    fn client_message(&self) -> String {
        match self {
            Self::BackendSaturated => {
                "the queue is at its limit of waiting appends; retry shortly".to_owned()
            }
            Self::BackendUnavailable(_) => {
                "the queue cannot store data right now; retry later".to_owned()
            }
            Self::SpillFull(_) => "the queue cannot store data right now and this ingest's spill \
                                   is full; retry later"
                .to_owned(),
            Self::Internal(_) => "internal error; the batch was not stored".to_owned(),
            other => other.to_string(),
        }
    }

    fn retry_after_seconds(&self) -> Option<u64> {
        match self {
            Self::RateLimited {
                retry_after_seconds,
                ..
            }
            | Self::SampleRateLimited {
                retry_after_seconds,
                ..
            } => Some(*retry_after_seconds),
            Self::Overloaded { .. } | Self::BackendSaturated | Self::BackendUnavailable(_) => {
                Some(1)
            }
            // The forwarder frees room only once Kafka is back.
            Self::SpillFull(_) => Some(5),
            _ => None,
        }
    }

    /// Whether the connection must close after the answer: the rest of a timed-out body may
    /// still be on its way and cannot be told apart from the next request.
    fn closes_connection(&self) -> bool {
        matches!(self, Self::BodyReadTimeout { .. })
    }

    fn authenticate_challenge(&self) -> Option<&'static str> {
        match self {
            Self::MissingAuthorization {
                bearer_challenge: true,
            } => Some("Bearer"),
            Self::UnknownToken => Some("Bearer error=\"invalid_token\""),
            _ => None,
        }
    }
}

impl From<AppendError> for ApiError {
    fn from(error: AppendError) -> Self {
        match error {
            AppendError::Saturated => Self::BackendSaturated,
            AppendError::Unavailable(reason) => Self::BackendUnavailable(reason),
            error @ AppendError::SpillFull { .. } => Self::SpillFull(error.to_string()),
            AppendError::Closed => {
                Self::BackendUnavailable("the queue is shutting down".to_owned())
            }
            AppendError::TooLarge { size, limit } => Self::RecordTooLarge { size, limit },
            // The partition came from the producer's own count, and every record ingest encodes
            // holds at least its header: either error is our bug, not the client's or the disk's.
            error @ (AppendError::NoSuchPartition { .. } | AppendError::EmptyRecord) => {
                Self::Internal(error.to_string())
            }
        }
    }
}

#[derive(Serialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize)]
struct ErrorDetail {
    code: &'static str,
    message: String,
}

/// The shape of an error's body: MetricStream's own, or the one a protocol's clients read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorShape {
    /// `{"error":{"code":"...","message":"..."}}`.
    Native,
    /// InfluxDB 2's `{"code":"invalid","message":"..."}`, whose codes Telegraf and the
    /// influxdb clients know; our own code is kept in the message.
    Influx,
    /// OTLP/HTTP's `google.rpc.Status`, protobuf-encoded (the request was protobuf).
    OtlpProtobuf,
    /// OTLP/HTTP's `google.rpc.Status` in OTLP JSON (the request was JSON).
    OtlpJson,
    /// Plain text, `code: message`: what remote-write senders log of an error.
    Text,
}

/// `google.rpc.Status`, the body of an OTLP/HTTP error (its `details` are never sent).
#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// The gRPC code that goes with an HTTP status in an OTLP error body.
fn grpc_code(status: StatusCode) -> i32 {
    match status {
        StatusCode::BAD_REQUEST
        | StatusCode::PAYLOAD_TOO_LARGE
        | StatusCode::UNSUPPORTED_MEDIA_TYPE
        | StatusCode::UNPROCESSABLE_ENTITY => 3, // INVALID_ARGUMENT
        StatusCode::REQUEST_TIMEOUT => 4, // DEADLINE_EXCEEDED
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => 12, // UNIMPLEMENTED
        StatusCode::TOO_MANY_REQUESTS => 8, // RESOURCE_EXHAUSTED
        StatusCode::UNAUTHORIZED => 16,   // UNAUTHENTICATED
        StatusCode::SERVICE_UNAVAILABLE => 14, // UNAVAILABLE
        _ => 13,                          // INTERNAL
    }
}

/// An error answered in the shape of the protocol that was spoken.
pub struct ShapedError(pub ErrorShape, pub ApiError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        ShapedError(ErrorShape::Native, self).into_response()
    }
}

/// InfluxDB 2's error code for a status (its `errors.go`).
fn influx_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST | StatusCode::REQUEST_TIMEOUT => "invalid",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::NOT_FOUND => "not found",
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "request too large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported media type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable entity",
        StatusCode::TOO_MANY_REQUESTS => "too many requests",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        _ => "internal error",
    }
}

#[derive(Serialize)]
struct InfluxErrorBody {
    code: &'static str,
    message: String,
}

impl IntoResponse for ShapedError {
    fn into_response(self) -> Response {
        let ShapedError(shape, error) = self;
        error.respond(shape)
    }
}

impl ApiError {
    fn respond(self, shape: ErrorShape) -> Response {
        let status = self.status();
        let code = self.code();
        // Shed load is counted in metricstream_ingest_requests_shed_total; a warning per refused
        // request would add log volume exactly when the process is busiest.
        if status.is_server_error() && !matches!(self, Self::Overloaded { .. }) {
            tracing::warn!(status = status.as_u16(), code, reason = %self, "request failed");
        } else {
            // Client mistakes are the client's to fix; at info they would drown the log.
            tracing::debug!(status = status.as_u16(), code, reason = %self, "request refused");
        }
        let mut response = match shape {
            ErrorShape::Native => {
                let body = ErrorBody {
                    error: ErrorDetail {
                        code,
                        message: self.client_message(),
                    },
                };
                (status, Json(body)).into_response()
            }
            ErrorShape::Influx => {
                let body = InfluxErrorBody {
                    code: influx_code(status),
                    message: format!("{code}: {}", self.client_message()),
                };
                (status, Json(body)).into_response()
            }
            ErrorShape::Text => {
                let content_type = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
                let body = format!("{code}: {}\n", self.client_message());
                (status, content_type, body).into_response()
            }
            ErrorShape::OtlpProtobuf | ErrorShape::OtlpJson => {
                let body = RpcStatus {
                    code: grpc_code(status),
                    message: format!("{code}: {}", self.client_message()),
                };
                if shape == ErrorShape::OtlpJson {
                    (status, Json(body)).into_response()
                } else {
                    let content_type = [(header::CONTENT_TYPE, "application/x-protobuf")];
                    (status, content_type, prost::Message::encode_to_vec(&body)).into_response()
                }
            }
        };
        let headers = response.headers_mut();
        if let Some(seconds) = self.retry_after_seconds() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.closes_connection() {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(challenge) = self.authenticate_challenge() {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_json(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body reads");
        serde_json::from_slice(&bytes).expect("error body is JSON")
    }

    #[tokio::test]
    async fn error_body_has_code_and_message() {
        let response = ApiError::InvalidMetric("metrics[2].value: bad".to_owned()).into_response();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            body_json(response).await,
            serde_json::json!({"error": {"code": "invalid_metric", "message": "metrics[2].value: bad"}})
        );
    }

    #[tokio::test]
    async fn backend_errors_ask_to_retry_in_a_second_without_internal_details() {
        let cases = [
            (AppendError::Saturated, "backend_saturated"),
            (
                AppendError::Unavailable("/data: No space left on device".to_owned()),
                "backend_unavailable",
            ),
            (AppendError::Closed, "backend_unavailable"),
        ];
        for (error, code) in cases {
            let response = ApiError::from(error).into_response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()[header::RETRY_AFTER], "1");
            let body = body_json(response).await;
            assert_eq!(body["error"]["code"], code);
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(!message.contains("/data"), "{message}");
        }
    }

    #[test]
    fn append_errors_map_to_their_codes() {
        let too_large = ApiError::from(AppendError::TooLarge { size: 10, limit: 5 });
        assert_eq!(too_large.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(too_large.code(), "record_too_large");

        let bug = ApiError::from(AppendError::NoSuchPartition {
            partition: metricstream_backend::Partition(9),
            partitions: 4,
        });
        assert_eq!(bug.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(bug.code(), "internal");
    }

    #[test]
    fn bearer_challenge_only_in_token_mode() {
        let token_mode = ApiError::from_auth(AuthError::Missing, true).into_response();
        assert_eq!(token_mode.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(token_mode.headers()[header::WWW_AUTHENTICATE], "Bearer");

        let open_mode = ApiError::from_auth(AuthError::Missing, false).into_response();
        assert_eq!(open_mode.status(), StatusCode::UNAUTHORIZED);
        assert!(!open_mode.headers().contains_key(header::WWW_AUTHENTICATE));

        let unknown = ApiError::from_auth(AuthError::UnknownToken, true).into_response();
        assert!(unknown.headers().contains_key(header::WWW_AUTHENTICATE));
    }

    #[test]
    fn rate_limited_carries_retry_after() {
        let response = ApiError::RateLimited {
            client: "a".to_owned(),
            retry_after_seconds: 3,
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
    }
}
