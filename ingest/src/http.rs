//! The ingest API: the router, its middleware (load shedding, request metrics), and the
//! `POST /metrics` handler of MetricStream's own JSON. The write path it shares with the other
//! protocols is in `crate::write`.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use metricstream_backend::Appended;
use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;

use crate::error::ApiError;
use crate::protocols::{influx, otlp, remote_write};
use crate::request;
pub use crate::write::{AppState, ConcurrencyLimit};
use crate::write::{
    admit, limit_series, read_decoded_body, store, take_sample_budget, unix_millis_now,
};

/// The ingest API. Unknown paths and methods get JSON errors like every other failure.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", post(ingest_metrics))
        .route("/v1/metrics", post(otlp::export))
        .route("/api/v1/write", post(remote_write::write))
        .route("/api/v2/write", post(influx::write))
        .route("/write", post(influx::write))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            limit_concurrency,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_request,
        ))
        .with_state(state)
}

/// The answer to an accepted batch: how many metrics, and where the record now lives. `spilled`
/// (present only when true) says the record waits in the ingest's spill because Kafka could not
/// take it; `offset` is then its place in the spill, and it reaches Kafka later.
#[derive(Debug, Serialize)]
pub struct Accepted {
    pub accepted: usize,
    pub partition: u32,
    pub offset: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub spilled: bool,
}

/// `POST /metrics`. The checks run cheapest first, and the body is read only once the client is
/// known, within its rate, and sending something we can parse.
async fn ingest_metrics(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let received_at_ms = unix_millis_now();
    let client = admit(&state, &headers)?;
    request::check_content_type(&headers)?;
    let json = read_decoded_body(&state, &headers, body).await?;
    let mut metrics = request::parse_metrics(&json, &state.limits, received_at_ms)?;
    let sent = metrics.len();
    let refusal = limit_series(&state, &client, metrics.rows_mut());
    let accepted = metrics.len();
    take_sample_budget(&state, &client, accepted)?;
    let stored = if metrics.is_empty() {
        None
    } else {
        let record = metrics.encode(&client);
        // Nothing of the body is needed while the record is made durable.
        drop(metrics);
        drop(json);
        Some(store(&state, &client, record, accepted).await?)
    };
    if let Some(refusal) = refusal {
        return Err(ApiError::PartialWrite(format!(
            "{accepted} of {sent} metrics stored; {}",
            refusal.message
        )));
    }
    let Some((partition, appended)) = stored else {
        return Err(ApiError::Internal(
            "a parsed request held no metrics".to_owned(),
        ));
    };
    let (offset, spilled) = match appended {
        Appended::Queue(offset) => (offset, false),
        Appended::Spill(offset) => (offset, true),
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            accepted,
            partition: partition.0,
            offset: offset.0,
            spilled,
        }),
    ))
}

async fn not_found(request: Request) -> ApiError {
    ApiError::NotFound(request.uri().path().to_owned())
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::MethodNotAllowed {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
    }
}

/// Admits a request if fewer than the cap are in progress, holding the permit until it is
/// answered; refuses it with 503 otherwise.
async fn limit_concurrency(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let Ok(_permit) = state.concurrency.permits.clone().try_acquire_owned() else {
        state.metrics.requests_shed.inc();
        return ApiError::Overloaded {
            limit: state.concurrency.limit,
        }
        .into_response();
    };
    let _in_flight = InFlightGuard::enter(&state.metrics.requests_in_flight);
    next.run(request).await
}

/// Counts a request in flight until it is answered or its connection drops (the handler's
/// future is then dropped mid-way, so the decrement lives in `Drop`).
struct InFlightGuard(Gauge);

impl InFlightGuard {
    fn enter(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Counts every answer by status and times it.
async fn record_request(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let response = next.run(request).await;
    state
        .metrics
        .observe_request(response.status(), started.elapsed());
    response
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::io::Write;
    use std::num::NonZeroU32;
    use std::sync::Mutex;

    use async_trait::async_trait;
    use axum::http::{HeaderValue, Method};
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::time::Duration;

    use axum::body::Bytes;
    use axum::http::header;
    use metricstream_backend::partitioner::partition_for;
    use metricstream_backend::{AppendError, ClientId, Offset, Partition, QueueProducer, codec};
    use prometheus_client::registry::Registry;
    use tower::ServiceExt;

    use super::*;
    use crate::auth::{Authenticator, TokenTable};
    use crate::config::RateLimit;
    use crate::metrics::IngestMetrics;
    use crate::rate_limit::ClientRateLimiter;
    use crate::request::Limits;

    /// A queue that remembers what was appended and fails on request.
    #[derive(Default)]
    struct FakeProducer {
        appended: Mutex<Vec<(Partition, Bytes)>>,
        /// Failures to return, in order, before appends succeed again.
        failures: Mutex<VecDeque<AppendError>>,
    }

    const PARTITIONS: u32 = 4;

    #[async_trait]
    impl QueueProducer for FakeProducer {
        fn partitions(&self) -> u32 {
            PARTITIONS
        }

        async fn append(&self, partition: Partition, record: Bytes) -> Result<Offset, AppendError> {
            if let Some(failure) = self.failures.lock().expect("lock").pop_front() {
                return Err(failure);
            }
            let mut appended = self.appended.lock().expect("lock");
            let offset = appended.iter().filter(|(p, _)| *p == partition).count();
            appended.push((partition, record));
            Ok(Offset(offset as u64))
        }

        fn readiness(&self) -> Result<(), String> {
            Ok(())
        }

        async fn close(&self) {}
    }

    struct TestApp {
        router: Router,
        producer: Arc<FakeProducer>,
        metrics: IngestMetrics,
    }

    const LIMITS: Limits = Limits {
        max_body_bytes: 64 * 1024,
        max_metrics: 100,
        max_name_bytes: 256,
        max_tags: 64,
        max_tag_bytes: 256,
    };

    fn app_with(authenticator: Authenticator, rate_limit: Option<RateLimit>) -> TestApp {
        app_with_edge(authenticator, rate_limit, Duration::from_secs(30), 1024).0
    }

    /// Also returns the shared state, to hold concurrency permits from the test.
    fn app_with_edge(
        authenticator: Authenticator,
        rate_limit: Option<RateLimit>,
        body_read_timeout: Duration,
        max_concurrent_requests: usize,
    ) -> (TestApp, Arc<AppState>) {
        let producer = Arc::new(FakeProducer::default());
        let metrics = IngestMetrics::default();
        let state = Arc::new(AppState {
            producer: producer.clone(),
            authenticator,
            limits: LIMITS,
            rate_limiter: rate_limit.map(|limit| Arc::new(ClientRateLimiter::new(limit))),
            sample_budget: None,
            active_series: None,
            metrics: metrics.clone(),
            body_read_timeout,
            concurrency: ConcurrencyLimit::new(max_concurrent_requests),
        });
        let app = TestApp {
            router: router(state.clone()),
            producer,
            metrics,
        };
        (app, state)
    }

    #[tokio::test]
    async fn a_body_that_does_not_arrive_in_time_is_408_and_closes_the_connection() {
        let (app, _) = app_with_edge(Authenticator::Open, None, Duration::from_millis(50), 8);
        let never_ending = futures::stream::pending::<Result<Bytes, std::io::Error>>();
        let request = post("/metrics", Some("team-a"), Body::from_stream(never_ending));
        let (status, headers, json) = send(&app, request).await;
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
        assert_eq!(error_code(&json), "body_read_timeout");
        assert_eq!(headers[header::CONNECTION], "close");
        assert!(app.producer.appended.lock().expect("lock").is_empty());
    }

    #[tokio::test]
    async fn requests_over_the_cap_are_shed_at_once_with_503() {
        let (app, state) = app_with_edge(Authenticator::Open, None, Duration::from_secs(30), 2);
        let held: Vec<_> = (0..2)
            .map(|_| {
                state
                    .concurrency
                    .permits
                    .clone()
                    .try_acquire_owned()
                    .expect("a free permit")
            })
            .collect();
        let (status, headers, json) = send(&app, post("/metrics", Some("team-a"), BODY)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error_code(&json), "overloaded");
        assert_eq!(headers[header::RETRY_AFTER], "1");
        assert_eq!(app.metrics.requests_shed.get(), 1);

        drop(held);
        let (status, _, _) = send(&app, post("/metrics", Some("team-a"), BODY)).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }

    fn open_app() -> TestApp {
        app_with(Authenticator::Open, None)
    }

    const BODY: &str = r#"{"metrics":[{"name":"cpu","value":75,"timestamp":1700000000000,"tags":{"host":"a"}},{"name":"mem","value":1.5}]}"#;

    fn post(path: &str, authorization: Option<&str>, body: impl Into<Body>) -> Request {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(value) = authorization {
            builder = builder.header(header::AUTHORIZATION, value);
        }
        builder.body(body.into()).expect("request builds")
    }

    async fn send(app: &TestApp, request: Request) -> (StatusCode, HeaderMap, serde_json::Value) {
        let response = app
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body reads");
        let json = serde_json::from_slice(&bytes).unwrap_or_else(|error| {
            panic!(
                "{status}: body is not JSON ({error}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        (status, headers, json)
    }

    fn error_code(json: &serde_json::Value) -> &str {
        json["error"]["code"].as_str().unwrap_or("<no error code>")
    }

    #[tokio::test]
    async fn accepted_batch_is_one_durable_record_on_the_clients_partition() {
        let app = open_app();
        let (status, _, json) = send(&app, post("/metrics", Some("team-a"), BODY)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{json}");

        let expected_partition = partition_for(&ClientId::new("team-a"), PARTITIONS);
        assert_eq!(
            json,
            serde_json::json!({"accepted": 2, "partition": expected_partition.0, "offset": 0})
        );

        let appended = app.producer.appended.lock().expect("lock").clone();
        assert_eq!(appended.len(), 1);
        let (partition, record) = &appended[0];
        assert_eq!(*partition, expected_partition);
        let batch = codec::decode(record).expect("record decodes");
        assert_eq!(batch.client, ClientId::new("team-a"));
        assert_eq!(batch.metrics.len(), 2);
        assert_eq!(batch.metrics[0].timestamp, Some(1_700_000_000_000));
        // The receive time was filled in for the metric that had none.
        let filled = batch.metrics[1].timestamp.expect("timestamp filled in");
        assert!((filled - unix_millis_now()).abs() < 60_000, "{filled}");
    }

    #[tokio::test]
    async fn offsets_grow_per_partition() {
        let app = open_app();
        for expected_offset in 0..3 {
            let (status, _, json) = send(&app, post("/metrics", Some("team-a"), BODY)).await;
            assert_eq!(status, StatusCode::ACCEPTED);
            assert_eq!(json["offset"], expected_offset);
        }
    }

    #[tokio::test]
    async fn gzip_bodies_are_accepted() {
        let app = open_app();
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(BODY.as_bytes()).expect("in-memory write");
        let mut request = post(
            "/metrics",
            Some("team-a"),
            encoder.finish().expect("in-memory finish"),
        );
        request
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        let (status, _, json) = send(&app, request).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{json}");
        assert_eq!(json["accepted"], 2);
    }

    #[tokio::test]
    async fn token_mode_attributes_the_batch_to_the_tokens_client() {
        let table = TokenTable::parse("team-a=s3cr3t").expect("parses");
        let app = app_with(Authenticator::tokens(table), None);
        let (status, _, _) = send(&app, post("/metrics", Some("Bearer s3cr3t"), BODY)).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let appended = app.producer.appended.lock().expect("lock").clone();
        let batch = codec::decode(&appended[0].1).expect("decodes");
        assert_eq!(batch.client, ClientId::new("team-a"));
    }

    #[tokio::test]
    async fn token_mode_refuses_missing_and_unknown_tokens_with_a_challenge() {
        let table = TokenTable::parse("team-a=s3cr3t").expect("parses");
        let app = app_with(Authenticator::tokens(table), None);

        let (status, headers, json) = send(&app, post("/metrics", None, BODY)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(error_code(&json), "missing_authorization");
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");

        let (status, headers, json) =
            send(&app, post("/metrics", Some("Bearer guess"), BODY)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(error_code(&json), "unknown_token");
        assert!(headers.contains_key(header::WWW_AUTHENTICATE));
        assert!(!json.to_string().contains("guess"), "{json}");

        assert!(app.producer.appended.lock().expect("lock").is_empty());
    }

    #[tokio::test]
    async fn open_mode_refuses_missing_and_invalid_client_ids() {
        let app = open_app();
        let (status, headers, json) = send(&app, post("/metrics", None, BODY)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(error_code(&json), "missing_authorization");
        assert!(!headers.contains_key(header::WWW_AUTHENTICATE));

        let too_long = "c".repeat(257);
        let (status, _, json) = send(&app, post("/metrics", Some(&too_long), BODY)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(error_code(&json), "invalid_client_id");
    }

    #[tokio::test]
    async fn authentication_is_checked_before_the_body() {
        let app = open_app();
        let request = Request::builder()
            .method(Method::POST)
            .uri("/metrics")
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from("not even json"))
            .expect("request builds");
        let (status, _, json) = send(&app, request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(error_code(&json), "missing_authorization");
    }

    #[tokio::test]
    async fn rate_limited_clients_get_429_with_retry_after() {
        let one_per_second = RateLimit {
            per_second: NonZeroU32::MIN,
            burst: NonZeroU32::MIN,
        };
        let app = app_with(Authenticator::Open, Some(one_per_second));
        let (status, _, _) = send(&app, post("/metrics", Some("team-a"), BODY)).await;
        assert_eq!(status, StatusCode::ACCEPTED);

        let (status, headers, json) = send(&app, post("/metrics", Some("team-a"), BODY)).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(error_code(&json), "rate_limited");
        assert_eq!(headers[header::RETRY_AFTER], "1");

        // Another client has its own allowance.
        let (status, _, _) = send(&app, post("/metrics", Some("team-b"), BODY)).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }

    #[tokio::test]
    async fn wrong_content_type_or_encoding_is_415() {
        let app = open_app();
        let mut request = post("/metrics", Some("a"), BODY);
        request
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let (status, _, json) = send(&app, request).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(error_code(&json), "unsupported_media_type");

        let mut request = post("/metrics", Some("a"), BODY);
        request.headers_mut().remove(header::CONTENT_TYPE);
        let (status, _, json) = send(&app, request).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(error_code(&json), "unsupported_media_type");

        let mut request = post("/metrics", Some("a"), BODY);
        request
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
        let (status, _, json) = send(&app, request).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(error_code(&json), "unsupported_encoding");
    }

    #[tokio::test]
    async fn body_errors_reach_the_client_with_their_codes() {
        let app = open_app();
        let too_many = serde_json::json!({
            "metrics": vec![serde_json::json!({"name": "a", "value": 1}); 101]
        })
        .to_string();
        let cases = [
            ("{", StatusCode::BAD_REQUEST, "malformed_json"),
            (
                r#"{"metrics":[{"name":"a","value":NaN}]}"#,
                StatusCode::BAD_REQUEST,
                "malformed_json",
            ),
            (
                r#"{"metrics":[{"name":"a","value":"x"}]}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_metric",
            ),
            (
                r#"{"metrics":[]}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_metric",
            ),
            (
                too_many.as_str(),
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_metrics",
            ),
        ];
        for (body, expected_status, expected_code) in cases {
            let (status, _, json) = send(&app, post("/metrics", Some("a"), body.to_owned())).await;
            assert_eq!(status, expected_status, "{body}: {json}");
            assert_eq!(error_code(&json), expected_code, "{body}");
            assert!(
                json["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
            );
        }
        assert!(app.producer.appended.lock().expect("lock").is_empty());
    }

    #[tokio::test]
    async fn oversized_bodies_are_413() {
        let app = open_app();
        let huge = vec![b' '; LIMITS.max_body_bytes + 1];
        let (status, _, json) = send(&app, post("/metrics", Some("a"), huge)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(error_code(&json), "body_too_large");
    }

    #[tokio::test]
    async fn gzip_bombs_are_413_and_broken_gzip_is_400() {
        let app = open_app();
        let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
        encoder
            .write_all(&vec![b' '; LIMITS.max_body_bytes * 16])
            .expect("in-memory write");
        let bomb = encoder.finish().expect("in-memory finish");
        assert!(bomb.len() < LIMITS.max_body_bytes);
        let mut request = post("/metrics", Some("a"), bomb);
        request
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        let (status, _, json) = send(&app, request).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(error_code(&json), "body_too_large");

        let mut request = post("/metrics", Some("a"), BODY);
        request
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        let (status, _, json) = send(&app, request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(error_code(&json), "malformed_gzip");
    }

    #[tokio::test]
    async fn queue_failures_become_their_answers() {
        let app = open_app();
        let cases = [
            (
                AppendError::Saturated,
                StatusCode::SERVICE_UNAVAILABLE,
                "backend_saturated",
            ),
            (
                AppendError::Unavailable("disk full".to_owned()),
                StatusCode::SERVICE_UNAVAILABLE,
                "backend_unavailable",
            ),
            (
                AppendError::Closed,
                StatusCode::SERVICE_UNAVAILABLE,
                "backend_unavailable",
            ),
            (
                AppendError::TooLarge { size: 9, limit: 8 },
                StatusCode::PAYLOAD_TOO_LARGE,
                "record_too_large",
            ),
            (
                AppendError::NoSuchPartition {
                    partition: Partition(7),
                    partitions: 4,
                },
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
            ),
        ];
        for (failure, expected_status, expected_code) in cases {
            app.producer
                .failures
                .lock()
                .expect("lock")
                .push_back(failure);
            let (status, headers, json) = send(&app, post("/metrics", Some("a"), BODY)).await;
            assert_eq!(status, expected_status, "{json}");
            assert_eq!(error_code(&json), expected_code);
            if status == StatusCode::SERVICE_UNAVAILABLE {
                assert_eq!(headers[header::RETRY_AFTER], "1");
            }
        }
        // Nothing was acknowledged, so nothing counts as accepted.
        assert_eq!(app.metrics.metrics_accepted.get(), 0);
    }

    #[tokio::test]
    async fn unknown_paths_and_methods_get_json_errors() {
        let app = open_app();
        let (status, _, json) = send(&app, post("/nope", Some("a"), BODY)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(error_code(&json), "not_found");

        let request = Request::builder()
            .method(Method::GET)
            .uri("/metrics")
            .body(Body::empty())
            .expect("request builds");
        let (status, _, json) = send(&app, request).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(error_code(&json), "method_not_allowed");
    }

    #[tokio::test]
    async fn every_answer_is_counted_by_status() {
        let app = open_app();
        send(&app, post("/metrics", Some("a"), BODY)).await;
        send(&app, post("/metrics", None, BODY)).await;
        send(&app, post("/elsewhere", None, BODY)).await;

        let mut registry = Registry::default();
        app.metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        for line in [
            "metricstream_ingest_requests_total{code=\"202\"} 1",
            "metricstream_ingest_requests_total{code=\"401\"} 1",
            "metricstream_ingest_requests_total{code=\"404\"} 1",
            "metricstream_ingest_metrics_accepted_total 2",
            "metricstream_ingest_request_duration_seconds_count 3",
        ] {
            assert!(text.contains(line), "missing {line}:\n{text}");
        }
    }
}
