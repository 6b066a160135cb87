//! The remote-write sink: every metric goes to a time-series store as a Prometheus remote write
//! 1.0 sample (`--sink remote-write --sink-url ...`).
//!
//! Each [`Sink::write_batch`] converts the batch's metrics to one-sample series (`series`),
//! sends them in requests of at most `--sink-max-samples-per-request` samples, one after another,
//! and returns `Ok` only once every request got a 2xx. A 5xx, 429 or 408 answer, a 4xx that
//! means the sink is set up wrong (401, 403, 404, ...), or no answer is retried here a few times
//! (`delivery`: exponential backoff with jitter, or the store's `Retry-After`, capped); if the request still fails, the batch fails and the pipeline retries
//! it from its first request, committing nothing meanwhile. Any other 4xx is final: its samples
//! go to the dead-letter files (`dead_letter`) and the batch goes on.
//!
//! The sink keeps no watermark: a batch replayed after a crash (or a failed later request) is
//! sent again, sample for sample, and the store must keep an identical sample once.
//! VictoriaMetrics does so only with `-dedup.minScrapeInterval` set (1ms is enough); Prometheus
//! drops an identical duplicate silently. See docs/sink.md.
//!
//! The HTTP client (`endpoint`) is built at startup: TLS for an `https://` URL (`tls`: the
//! `--sink-ca-file` CAs or the system's, a client certificate) and the credentials
//! (`credentials`: a bearer token or basic auth, their files re-read when they change).

mod credentials;
mod dead_letter;
mod delivery;
mod endpoint;
mod series;
#[cfg(test)]
mod tests;
mod tls;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use metricstream_backend::{Offset, Partition};
use serde_json::Value;

use super::durable::{create_dir_durably, quarantine_payload};
use super::{Sink, SinkError, SinkRecord, WriteStats};
use crate::metrics::RemoteWriteMetrics;
use dead_letter::Refusal;
use delivery::{Answer, RetryPolicy, random_unit};
use endpoint::Endpoint;
use series::{PendingRequest, gather_requests};

pub use credentials::AuthSettings;
pub use tls::{ClientIdentityFiles, TlsSettings};

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
    metrics: RemoteWriteMetrics,
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
    ) -> Result<Self, SinkError> {
        let dir = dir.into();
        create_dir_durably(&dir)?;
        Ok(Self {
            dir,
            endpoint: Endpoint::open(settings)?,
            runtime,
            max_samples: settings.max_samples_per_request.max(1),
            retry: RetryPolicy::default(),
            metrics,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn url(&self) -> &str {
        self.endpoint.url.as_str()
    }

    /// Sends one request until the store takes it (`Ok(true)`), refuses it for good
    /// (`Ok(false)`: its samples are dead-lettered), or the retries run out (`Err`).
    fn deliver(&self, request: &mut PendingRequest) -> Result<bool, SinkError> {
        let body =
            Bytes::from(request.encode().map_err(|error| {
                SinkError::Store(format!("snappy compression failed: {error}"))
            })?);
        let samples = request.len() as u64;
        let mut retry = 0;
        loop {
            let answer = self
                .runtime
                .block_on(self.endpoint.post(body.clone(), &self.metrics));
            let (retry_after, failure) = match answer {
                Answer::Success => {
                    self.metrics.samples_sent.inc_by(samples);
                    return Ok(true);
                }
                Answer::Rejected { status, reason } => {
                    tracing::error!(
                        status,
                        %reason,
                        samples,
                        "the store refused a request for good; its samples go to the dead letters"
                    );
                    self.dead_letter(
                        request,
                        &Refusal {
                            status: Some(status),
                            reason,
                        },
                    )?;
                    return Ok(false);
                }
                Answer::Retryable {
                    status,
                    retry_after,
                    reason,
                } => (retry_after, format!("status {status}: {reason}")),
                Answer::Network(error) => (None, error),
            };
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
            std::thread::sleep(wait);
        }
    }

    fn dead_letter(&self, request: &PendingRequest, refusal: &Refusal) -> Result<(), SinkError> {
        let lines: Vec<(Partition, Value)> = request
            .origins
            .iter()
            .zip(&request.series)
            .map(|(origin, series)| (origin.partition, dead_letter::line(origin, series, refusal)))
            .collect();
        dead_letter::append(&self.dir, &lines)?;
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
        let mut stats = WriteStats::default();
        let mut no_timestamp = Vec::new();
        let refusal = Refusal {
            status: None,
            reason: "the metric has no timestamp".to_owned(),
        };
        gather_requests(
            records,
            self.max_samples,
            |mut request| {
                if self.deliver(&mut request)? {
                    stats.written += request.len() as u64;
                }
                Ok(())
            },
            |origin, metric| {
                no_timestamp.push((
                    origin.partition,
                    dead_letter::metric_line(&origin, metric, &refusal),
                ));
                Ok(())
            },
        )?;
        if !no_timestamp.is_empty() {
            tracing::warn!(
                metrics = no_timestamp.len(),
                "metrics without a timestamp go to the dead letters"
            );
            dead_letter::append(&self.dir, &no_timestamp)?;
            self.metrics.dead_lettered.inc_by(no_timestamp.len() as u64);
        }
        Ok(stats)
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
