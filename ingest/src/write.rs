//! The write path every endpoint shares, whatever its protocol: the state handlers hold, and
//! the steps of a write — admit the client ([`admit`]), read and inflate the body
//! ([`read_decoded_body`]), make the record durable ([`store`]). The router and the native API
//! are in `crate::http`, the other protocols in `crate::protocols`; both build on this.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use metricstream_backend::codec::EncodeMetric;
use metricstream_backend::partitioner::partition_for;
use metricstream_backend::{Appended, ClientId, Metric, Partition, QueueProducer, codec};
use tokio::sync::Semaphore;

use crate::auth::Authenticator;
use crate::client_limits::{ActiveSeries, Refused, SampleBudget, SeriesGate};
use crate::error::ApiError;
use crate::metrics::IngestMetrics;
use crate::rate_limit::{ClientRateLimiter, retry_after_seconds};
use crate::request::{self, Limits};

/// Everything a request handler needs, shared by all of them.
pub struct AppState {
    pub producer: Arc<dyn QueueProducer>,
    pub authenticator: Authenticator,
    pub limits: Limits,
    /// `None` when rate limiting is off.
    pub rate_limiter: Option<Arc<ClientRateLimiter>>,
    /// Per-client samples per second (--max-samples-per-second); `None` when off.
    pub sample_budget: Option<Arc<SampleBudget>>,
    /// Per-client active series (--max-active-series); `None` when off.
    pub active_series: Option<Arc<ActiveSeries>>,
    pub metrics: IngestMetrics,
    /// How long a request's whole body may take to arrive once its headers are in.
    pub body_read_timeout: Duration,
    /// One permit per request that may be handled at once (--max-concurrent-requests).
    pub concurrency: ConcurrencyLimit,
}

/// The cap on requests handled at once. A request over it is refused at once (load shedding)
/// rather than queued: waiting requests would hold their connections and memory while every
/// one of them grows older, and the client's retry after `Retry-After` is the better queue.
pub struct ConcurrencyLimit {
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) limit: usize,
}

impl ConcurrencyLimit {
    pub fn new(limit: usize) -> Self {
        let limit = limit.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }
}

/// The first checks of every write endpoint, before any of the body is read: who the client
/// is, and whether it is within its request rate.
pub(crate) fn admit(state: &AppState, headers: &HeaderMap) -> Result<ClientId, ApiError> {
    let client = state
        .authenticator
        .client_id(headers.get(header::AUTHORIZATION))
        .map_err(|error| ApiError::from_auth(error, state.authenticator.expects_bearer()))?;
    if let Some(limiter) = &state.rate_limiter {
        limiter
            .check(&client)
            .map_err(|wait| ApiError::RateLimited {
                client: client.to_string(),
                retry_after_seconds: retry_after_seconds(wait),
            })?;
    }
    Ok(client)
}

/// Opens `client`'s series for one request when --max-active-series is on: the protocols that
/// expand a point into several series admit them as one group through it.
pub(crate) fn series_gate<'a>(state: &'a AppState, client: &ClientId) -> Option<SeriesGate<'a>> {
    state
        .active_series
        .as_deref()
        .map(|series| series.gate(client))
}

/// Admits `rows` as one group through `gate`, or all when there is none.
pub(crate) fn admit_series<M: EncodeMetric>(gate: &mut Option<SeriesGate<'_>>, rows: &[M]) -> bool {
    gate.as_mut().is_none_or(|gate| gate.admit(rows))
}

/// What the series cap refused of one request: how many samples (points), and why.
pub(crate) struct SeriesRefusal {
    pub samples: usize,
    pub message: String,
}

/// Closes a request's series gate: counts what it refused and says so, `None` when nothing.
pub(crate) fn series_refusal(
    state: &AppState,
    client: &ClientId,
    gate: Option<SeriesGate<'_>>,
) -> Option<SeriesRefusal> {
    describe_refusal(state, client, gate?.finish())
}

/// Drops the rows of new series beyond `client`'s cap, one by one; says what was refused.
pub(crate) fn limit_series<M: EncodeMetric>(
    state: &AppState,
    client: &ClientId,
    rows: &mut Vec<M>,
) -> Option<SeriesRefusal> {
    let refused = state.active_series.as_deref()?.retain(client, rows);
    describe_refusal(state, client, refused)
}

fn describe_refusal(
    state: &AppState,
    client: &ClientId,
    refused: Refused,
) -> Option<SeriesRefusal> {
    let Refused {
        samples,
        first_series,
    } = refused;
    if samples == 0 {
        return None;
    }
    state
        .metrics
        .record_samples_limited(client.as_str(), "active_series", samples);
    let max = state
        .active_series
        .as_deref()
        .map_or(0, ActiveSeries::max_series);
    let message = format!(
        "{samples} samples of new series refused: client {:?} has its cap of {max} active series \
         (--max-active-series); the first: {:?}",
        client.as_str(),
        first_series.unwrap_or_default()
    );
    Some(SeriesRefusal { samples, message })
}

/// Takes the `samples` a request is about to store from `client`'s budget, or refuses the
/// request whole (429: nothing stored, so a retry duplicates nothing).
pub(crate) fn take_sample_budget(
    state: &AppState,
    client: &ClientId,
    samples: usize,
) -> Result<(), ApiError> {
    let Some(budget) = &state.sample_budget else {
        return Ok(());
    };
    if samples == 0 {
        return Ok(());
    }
    budget.take(client, samples).map_err(|wait| {
        state
            .metrics
            .record_samples_limited(client.as_str(), "samples_per_second", samples);
        ApiError::SampleRateLimited {
            client: client.to_string(),
            samples,
            retry_after_seconds: retry_after_seconds(wait),
        }
    })
}

/// Reads a body within `--body-read-timeout` and `--max-body-bytes`, and inflates it (gzip)
/// under the same cap.
pub(crate) async fn read_decoded_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, ApiError> {
    let encoding = request::content_encoding(headers)?;
    let raw = read_raw_body(state, headers, body).await?;
    // Inflating, parsing and encoding run inline: each is bounded by --max-body-bytes, about a
    // millisecond per 100 KiB, cheaper than a hop to the blocking pool.
    request::decode_body(raw, encoding, state.limits.max_body_bytes)
}

/// Reads a body as sent, within `--body-read-timeout` and `--max-body-bytes`.
pub(crate) async fn read_raw_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, ApiError> {
    tokio::time::timeout(
        state.body_read_timeout,
        request::read_body(headers, body, state.limits.max_body_bytes),
    )
    .await
    .map_err(|_elapsed| ApiError::BodyReadTimeout {
        seconds: state.body_read_timeout.as_secs(),
    })?
}

/// Encodes `metrics` as one record of `client` and makes it durable ([`store`]); with none there
/// is nothing to make durable. Takes the metrics so they are freed once encoded.
pub(crate) async fn store_metrics(
    state: &AppState,
    client: &ClientId,
    metrics: Vec<Metric>,
) -> Result<(), ApiError> {
    if metrics.is_empty() {
        return Ok(());
    }
    let accepted = metrics.len();
    let record = codec::encode_metrics(client.as_str(), &metrics);
    drop(metrics);
    store(state, client, record, accepted).await.map(drop)
}

/// Appends one encoded record of `accepted` metrics to the client's partition. Returns only
/// once the record is durable (in the queue, or in the spill while Kafka cannot take it): a 2xx
/// after it is a promise.
pub(crate) async fn store(
    state: &AppState,
    client: &ClientId,
    record: Vec<u8>,
    accepted: usize,
) -> Result<(Partition, Appended), ApiError> {
    let partition = partition_for(client, state.producer.partitions());
    let appended = state
        .producer
        .append_or_spill(partition, Bytes::from(record))
        .await?;
    state.metrics.metrics_accepted.inc_by(accepted as u64);
    if let Appended::Spill(_) = appended {
        state.metrics.metrics_spilled.inc_by(accepted as u64);
    }
    Ok((partition, appended))
}

pub(crate) fn unix_millis_now() -> i64 {
    // A clock before 1970 is a broken host; 0 keeps the request working and visibly wrong.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}
