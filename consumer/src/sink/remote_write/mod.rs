//! The remote-write sink: every metric goes to a time-series store as a Prometheus remote write
//! sample, 1.0 or 2.0 (`--sink remote-write --sink-url ... --sink-protocol ...`).
//!
//! Each [`Sink::write_batch`] converts the batch's metrics to one-sample series (`series`),
//! sends them in requests of at most `--sink-max-samples-per-request` samples, one after another
//! per shard of the batch's partitions (`shards`, `--sink-concurrency` at once), and returns
//! `Ok` only once every request got a 2xx. A 5xx, 429 or 408 answer, a 4xx that
//! means the sink is set up wrong (401, 403, 404, ...), or no answer is retried here a few times
//! (`delivery`: exponential backoff with jitter, or the store's `Retry-After`, capped); if the
//! request still fails, the batch fails and the pipeline retries it from its first request,
//! committing nothing meanwhile. A few failed attempts in a row open the circuit breaker
//! (`circuit`): nothing is sent until its next probe, and the pipeline waits for that. Any other
//! 4xx is final: the request is split in halves until only the refused samples are left (a
//! store may refuse a request whole for one bad sample); those go to the dead-letter files
//! (`dead_letter`) and the batch goes on.
//!
//! The sink keeps no watermark: a batch replayed after a crash (or a failed later request) is
//! sent again, sample for sample, and the store must keep an identical sample once.
//! VictoriaMetrics does so only with `-dedup.minScrapeInterval` set (1ms is enough); Prometheus
//! keeps a series' newest sample once, and an older replayed one only with
//! `out_of_order_time_window` set. See docs/sink.md.
//!
//! The HTTP client (`endpoint`) is built at startup: TLS for an `https://` URL (`tls`: the
//! `--sink-ca-file` CAs or the system's, a client certificate) and the credentials
//! (`credentials`: a bearer token or basic auth, their files re-read when they change).

mod credentials;
mod dead_letter;
mod delivery;
mod endpoint;
mod series;
mod shards;
#[cfg(test)]
mod tests;
mod tls;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use metricstream_backend::{Offset, Partition};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::durable::{create_dir_durably, quarantine_payload};
use super::{Sink, SinkError, SinkRecord, WriteStats};
use crate::metrics::RemoteWriteMetrics;
use dead_letter::Refusal;
use delivery::{Answer, RetryPolicy, random_unit};
use endpoint::Endpoint;
use metricstream_backend::circuit::{Circuit, CircuitPolicy, CircuitState, Transition};
use series::PendingRequest;

/// The most extra requests one refused request may be split into (see
/// [`RemoteWriteSink::deliver`]): enough to single out about a dozen bad samples among 5,000,
/// and a bound on what a request of nothing but bad samples costs.
const MAX_SPLITS_PER_REQUEST: u32 = 128;

pub use credentials::AuthSettings;
pub use series::Protocol;
pub use tls::{ClientIdentityFiles, TlsSettings};

/// How long a request in flight may still take once shutdown is asked for (the consumer's
/// `--shutdown-timeout` is 30 s by default).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How to reach the store. Names the files that hold secrets, never their contents.
#[derive(Clone, Debug)]
pub struct RemoteWriteSettings {
    /// The remote-write endpoint (VictoriaMetrics: `http://host:8428/api/v1/write`, or
    /// `https://...`).
    pub url: String,
    /// The credentials sent with every request, if any.
    pub auth: Option<AuthSettings>,
    /// CA and client certificate files for an `https://` URL.
    pub tls: TlsSettings,
    pub max_samples_per_request: usize,
    /// Requests in flight at once (`--sink-concurrency`).
    pub concurrency: usize,
    /// The remote-write message sent (`--sink-protocol`).
    pub protocol: Protocol,
    /// The deadline of one request (connecting, sending, reading the answer).
    pub request_timeout: Duration,
}

pub struct RemoteWriteSink {
    dir: PathBuf,
    endpoint: Endpoint,
    /// The consumer's runtime: the sink is called in blocking tasks and drives its HTTP client
    /// on it with `block_on`.
    runtime: tokio::runtime::Handle,
    max_samples: usize,
    retry: RetryPolicy,
    /// Requests sent at once, each from its own shard of the partitions (see `shards`).
    concurrency: usize,
    /// The circuit breaker and the last failure, shared by the shards' senders.
    breaker: Mutex<Breaker>,
    /// Held while appending dead letters (the shards' senders share the files).
    dead_letters: Mutex<()>,
    /// Cancelled when the consumer shuts down: no more retries, and a request in flight gets
    /// `shutdown_grace` more to finish.
    shutdown: CancellationToken,
    shutdown_grace: Duration,
    metrics: RemoteWriteMetrics,
}

/// The circuit and why the last attempt failed (for the error the circuit gives while open).
struct Breaker {
    circuit: Circuit,
    last_failure: String,
}

impl RemoteWriteSink {
    /// A sink sending to `settings.url`, keeping quarantined records and dead letters under
    /// `dir` (created if missing). Reads the credential and TLS files (an unusable one is an
    /// error naming its flag); makes no request yet.
    pub fn open(
        dir: impl Into<PathBuf>,
        settings: &RemoteWriteSettings,
        runtime: tokio::runtime::Handle,
        metrics: RemoteWriteMetrics,
        shutdown: CancellationToken,
    ) -> Result<Self, SinkError> {
        let dir = dir.into();
        create_dir_durably(&dir)?;
        metrics.circuit.show(CircuitState::Closed, false);
        Ok(Self {
            dir,
            endpoint: Endpoint::open(settings)?,
            runtime,
            max_samples: settings.max_samples_per_request.max(1),
            retry: RetryPolicy::default(),
            concurrency: settings.concurrency.max(1),
            breaker: Mutex::new(Breaker {
                circuit: Circuit::new(CircuitPolicy::default(), Instant::now()),
                last_failure: String::new(),
            }),
            dead_letters: Mutex::new(()),
            shutdown,
            shutdown_grace: SHUTDOWN_GRACE,
            metrics,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn url(&self) -> &str {
        self.endpoint.url.as_str()
    }

    /// Sends one request until the store takes it or refuses it for good, and returns how many
    /// of its samples it stored; the refused ones are dead-lettered. `Err` when the retries run
    /// out or the circuit is or becomes open (with the wait until its next probe).
    ///
    /// A store may refuse a request whole for one bad sample (Prometheus rolls the request back
    /// and answers 400), so a refused request of several samples is split in halves and each
    /// sent again, down to the samples actually refused — at most `splits_left` more requests
    /// for the original one; past that a refused part is dead-lettered whole.
    fn deliver(
        &self,
        mut request: PendingRequest,
        splits_left: &mut u32,
    ) -> Result<u64, SinkError> {
        let body =
            Bytes::from(request.encode(self.endpoint.protocol).map_err(|error| {
                SinkError::Store(format!("snappy compression failed: {error}"))
            })?);
        let samples = request.len() as u64;
        let mut retry = 0;
        loop {
            let permit = self.breaker().circuit.permit(Instant::now());
            match permit {
                Ok(transition) => self.note(transition),
                Err(wait) => return Err(self.unavailable(wait)),
            }
            let Some(answer) = self.runtime.block_on(self.until_shutdown_grace(
                self.endpoint.post(body.clone(), &self.metrics),
                self.shutdown_grace,
            )) else {
                return Err(self.shutting_down(&format!(
                    "a request was still unanswered {} ms after the shutdown signal",
                    self.shutdown_grace.as_millis()
                )));
            };
            // `counts`: whether the failure counts towards opening the circuit. A 429 comes
            // from a store that works but wants fewer requests: its `Retry-After` paces the
            // sink instead.
            let (retry_after, failure, counts) = match answer {
                Answer::Success => {
                    let transition = self.breaker().circuit.succeeded();
                    self.note(transition);
                    self.metrics.samples_sent.inc_by(samples);
                    return Ok(samples);
                }
                Answer::Rejected { status, reason } => {
                    // The store works; it refuses (some of) these samples.
                    let transition = self.breaker().circuit.succeeded();
                    self.note(transition);
                    if samples > 1 && *splits_left >= 2 {
                        *splits_left -= 2;
                        tracing::debug!(
                            status,
                            %reason,
                            samples,
                            "the store refused a request; sending its halves apart"
                        );
                        self.metrics.refused_request_splits.inc();
                        let (first, second) = request.split();
                        let stored = self.deliver(first, splits_left)?;
                        return Ok(stored + self.deliver(second, splits_left)?);
                    }
                    tracing::error!(
                        status,
                        %reason,
                        samples,
                        "the store refused samples for good; they go to the dead letters"
                    );
                    let reason = if samples > 1 {
                        format!(
                            "{reason} (refused with {} other samples in one request, not split \
                             further)",
                            samples - 1
                        )
                    } else {
                        reason
                    };
                    self.dead_letter(
                        &request,
                        &Refusal {
                            status: Some(status),
                            reason,
                        },
                    )?;
                    return Ok(0);
                }
                Answer::Retryable {
                    status,
                    retry_after,
                    reason,
                } => (
                    retry_after,
                    format!("status {status}: {reason}"),
                    status != 429,
                ),
                Answer::Network(error) => (None, error, true),
            };
            self.breaker().last_failure = failure.clone();
            if counts {
                let transition = self.breaker().circuit.failed(Instant::now());
                self.note(transition);
                if let Some(Transition { wait, .. }) =
                    transition.filter(|t| t.to == CircuitState::Open)
                {
                    return Err(self.unavailable(wait));
                }
            }
            if self.shutdown.is_cancelled() {
                return Err(self.shutting_down(&failure));
            }
            retry += 1;
            if retry >= self.retry.attempts {
                return Err(SinkError::Store(format!(
                    "sending {samples} samples to {} failed {retry} times, last: {failure}",
                    self.endpoint.url
                )));
            }
            let wait = self.retry.delay(retry - 1, retry_after, random_unit());
            tracing::warn!(
                %failure,
                wait_ms = wait.as_millis() as u64,
                "a remote-write request failed; retrying it"
            );
            let slept = self.runtime.block_on(self.until_shutdown_grace(
                // Made inside the runtime: a timer needs one when it is created.
                async move { tokio::time::sleep(wait).await },
                Duration::ZERO,
            ));
            if slept.is_none() {
                return Err(self.shutting_down(&failure));
            }
        }
    }

    /// Runs `future` until it ends (`Some`) or `grace` has passed since shutdown was asked for
    /// (`None`): a failing store must not hold the consumer past its shutdown timeout, and the
    /// batch, uncommitted, is re-delivered to the next consumer anyway.
    async fn until_shutdown_grace<T>(
        &self,
        future: impl std::future::Future<Output = T>,
        grace: Duration,
    ) -> Option<T> {
        tokio::select! {
            value = future => Some(value),
            () = async {
                self.shutdown.cancelled().await;
                tokio::time::sleep(grace).await;
            } => None,
        }
    }

    fn shutting_down(&self, last_failure: &str) -> SinkError {
        SinkError::Store(format!(
            "shutting down: giving up on the store at {} for now (the batch stays uncommitted); \
             last failure: {last_failure}",
            self.endpoint.url
        ))
    }

    /// The circuit breaker; a sender that panicked holding it leaves a usable state behind.
    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The error for a request the open circuit holds back.
    fn unavailable(&self, wait: Duration) -> SinkError {
        let breaker = self.breaker();
        let open_for = breaker
            .circuit
            .opened_at()
            .map(|since| since.elapsed().as_secs())
            .unwrap_or_default();
        SinkError::StoreUnavailable {
            reason: format!(
                "the store at {} is failing: circuit open for {open_for} s, next probe in {} ms; \
                 last failure: {}",
                self.endpoint.url,
                wait.as_millis(),
                breaker.last_failure
            ),
            retry_in: wait,
        }
    }

    /// Logs and counts a change of the circuit's state.
    fn note(&self, transition: Option<Transition>) {
        let Some(transition) = transition else {
            return;
        };
        self.metrics.circuit.record(&transition);
        let Transition { from, to, wait, .. } = transition;
        match to {
            CircuitState::Open => tracing::warn!(
                from = from.name(),
                wait_ms = wait.as_millis() as u64,
                last_failure = %self.breaker().last_failure,
                "circuit open: the store is failing; no request until the next probe"
            ),
            CircuitState::HalfOpen => {
                tracing::info!("circuit half-open: probing the store with the next request")
            }
            CircuitState::Closed => {
                tracing::info!("circuit closed: the store takes requests again")
            }
        }
    }

    fn dead_letter(&self, request: &PendingRequest, refusal: &Refusal) -> Result<(), SinkError> {
        let lines: Vec<(Partition, Value)> = request
            .origins
            .iter()
            .zip(&request.series)
            .map(|(origin, series)| (origin.partition, dead_letter::line(origin, series, refusal)))
            .collect();
        self.append_dead_letters(&lines)
    }

    fn append_dead_letters(&self, lines: &[(Partition, Value)]) -> Result<(), SinkError> {
        let _appending = self
            .dead_letters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        dead_letter::append(&self.dir, lines)?;
        self.metrics.dead_lettered.inc_by(lines.len() as u64);
        Ok(())
    }
}

impl Sink for RemoteWriteSink {
    /// Nothing to load: the store, not the sink, makes a replay harmless.
    fn assign(&mut self, _partition: Partition) -> Result<(), SinkError> {
        Ok(())
    }

    fn revoke(&mut self, _partition: Partition) {}

    fn write_batch(&mut self, records: &[SinkRecord]) -> Result<WriteStats, SinkError> {
        let refusal = Refusal {
            status: None,
            reason: "the metric has no timestamp".to_owned(),
        };
        let (written, no_timestamp) = shards::send_sharded(
            records,
            self.max_samples,
            self.concurrency,
            |request| {
                let mut splits_left = MAX_SPLITS_PER_REQUEST;
                self.deliver(request, &mut splits_left)
            },
            |origin, metric| {
                (
                    origin.partition,
                    dead_letter::metric_line(&origin, metric, &refusal),
                )
            },
        )?;
        if !no_timestamp.is_empty() {
            tracing::warn!(
                metrics = no_timestamp.len(),
                "metrics without a timestamp go to the dead letters"
            );
            self.append_dead_letters(&no_timestamp)?;
        }
        Ok(WriteStats {
            written,
            ..WriteStats::default()
        })
    }

    fn quarantine(
        &mut self,
        partition: Partition,
        offset: Offset,
        payload: &[u8],
    ) -> Result<PathBuf, SinkError> {
        quarantine_payload(&self.dir, partition, offset, payload)
    }
}
