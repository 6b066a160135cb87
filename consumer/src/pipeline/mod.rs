//! The consume loop: poll → decode → write to the sink → make it durable → commit.
//!
//! Delivery is at-least-once: offsets are committed only after the sink holds the records
//! durably, so a crash anywhere re-delivers records rather than losing them, and the sink's
//! deduplication turns the re-delivery into a no-op (effectively exactly-once in the sink).
//!
//! The loop keeps the [`QueueConsumer`] contract: everything a poll returned is committed (or,
//! at shutdown, given up on) before the next poll, and per-partition sink state is reloaded
//! whenever the queue reports a partition as assigned. It is written against
//! `Box<dyn QueueConsumer>` and the [`Sink`] trait, so another backend or sink plugs in
//! unchanged.
//!
//! Failures are retried with a capped exponential backoff, never skipped: a failing sink blocks
//! the commit (and flips readiness) until it works again; a failing poll or commit is retried
//! the same way. A record that fails to decode is different: retrying cannot fix it, so it is
//! quarantined (see [`Sink::quarantine`]), logged, counted, and committed past.
//!
//! This module owns the loop itself ([`Pipeline`]); its children hold the parts it drives:
//! `retry` (sink operations in blocking tasks, retried with backoff), `batch` (one poll's
//! records checked, corrupt ones set aside for quarantine) and `throttle` (`--sink-rate-limit`,
//! which delays a batch before its write). The loop's tests are in `tests`, their fake queue
//! and flaky sink in `fakes`.

mod batch;
#[cfg(test)]
mod fakes;
mod retry;
#[cfg(test)]
mod tests;
mod throttle;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metricstream_backend::{
    ConsumeError, ConsumedRecord, Offset, Partition, Poll, PollLimits, QueueConsumer,
};
use tokio_util::sync::CancellationToken;

use crate::health::Health;
use crate::metrics::{ConsumerMetrics, LagGauges};
use crate::sink::Sink;
use batch::PreparedBatch;
use retry::{Backoff, SinkRunner, pause};
use throttle::SinkThrottle;

/// How the loop polls and retries.
#[derive(Clone, Debug)]
pub struct PipelineSettings {
    pub limits: PollLimits,
    pub poll_wait: Duration,
    /// The first pause after a failure; it doubles with each further failure in a row.
    pub retry_backoff: Duration,
    pub max_retry_backoff: Duration,
    /// Most metrics written to the sink per second (`--sink-rate-limit`); 0: no limit.
    pub sink_rate_limit: u32,
}

impl PipelineSettings {
    pub fn new(limits: PollLimits, poll_wait: Duration) -> Self {
        Self {
            limits,
            poll_wait,
            retry_backoff: Duration::from_secs(1),
            max_retry_backoff: Duration::from_secs(10),
            sink_rate_limit: 0,
        }
    }
}

/// Failures the loop cannot retry its way out of.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A sink operation panicked. The sink's in-memory state can no longer be trusted; a
    /// restart reloads it from disk.
    #[error("a sink operation panicked: {0}")]
    SinkPanicked(String),
    #[error("a blocking task failed: {0}")]
    Task(String),
}

/// How the loop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Every batch polled was written and committed.
    Drained,
    /// Shutdown came while the last batch could not be written or committed; it stays
    /// uncommitted and will be re-delivered (the sink skips whatever of it did land).
    AbandonedBatch,
}

pub struct Pipeline<S: Sink> {
    consumer: Box<dyn QueueConsumer>,
    sink: SinkRunner<S>,
    metrics: ConsumerMetrics,
    health: Arc<Health>,
    settings: PipelineSettings,
    lag: LagGauges,
    throttle: SinkThrottle,
}

impl<S: Sink> Pipeline<S> {
    pub fn new(
        consumer: Box<dyn QueueConsumer>,
        sink: S,
        metrics: ConsumerMetrics,
        health: Arc<Health>,
        lag: LagGauges,
        settings: PipelineSettings,
    ) -> Self {
        let throttle = SinkThrottle::new(
            settings.sink_rate_limit,
            metrics.sink_throttled_seconds.clone(),
        );
        Self {
            consumer,
            sink: SinkRunner {
                sink: Arc::new(Mutex::new(sink)),
                metrics: metrics.clone(),
                health: Arc::clone(&health),
                settings: settings.clone(),
            },
            metrics,
            health,
            settings,
            lag,
            throttle,
        }
    }

    /// Runs until `shutdown` is cancelled, finishing the batch in hand, then closes the consumer
    /// so its partitions pass to other members at once.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<Stopped, PipelineError> {
        let outcome = self.consume(&shutdown).await;
        self.health.set_consumer_open(false);
        self.consumer.close().await;
        self.lag.update(&[]);
        tracing::info!("consumer closed; partitions released");
        outcome
    }

    async fn consume(&mut self, shutdown: &CancellationToken) -> Result<Stopped, PipelineError> {
        let mut backoff = Backoff::new(&self.settings);
        // Polls are not raced against the shutdown signal: a poll cancelled half way could
        // lose track of records it had read. A poll returns within `poll_wait` when idle, so
        // shutdown waits at most that long before the last batch is finished.
        while !shutdown.is_cancelled() {
            let started = Instant::now();
            let limits = PollLimits {
                max_records: self.throttle.poll_records(self.settings.limits.max_records),
                ..self.settings.limits
            };
            let poll = match self.consumer.poll(limits, self.settings.poll_wait).await {
                Ok(poll) => {
                    self.health.queue_recovered();
                    backoff.reset();
                    poll
                }
                Err(error) => {
                    self.metrics.queue_errors.inc();
                    self.health.queue_failed(error.to_string());
                    tracing::warn!(%error, "polling the queue failed; retrying");
                    pause(backoff.next_delay(), shutdown).await;
                    continue;
                }
            };
            let idle =
                poll.records.is_empty() && poll.assigned.is_empty() && poll.revoked.is_empty();
            if self.handle(poll, shutdown).await? == Stopped::AbandonedBatch {
                return Ok(Stopped::AbandonedBatch);
            }
            // An implementation that answers an empty poll at once (no partitions owned, say)
            // must not turn this loop into a busy spin.
            if idle && let Some(rest) = self.settings.poll_wait.checked_sub(started.elapsed()) {
                pause(rest, shutdown).await;
            }
        }
        Ok(Stopped::Drained)
    }

    /// Applies one poll: assignment changes, then its records, then the commit.
    async fn handle(
        &mut self,
        poll: Poll,
        shutdown: &CancellationToken,
    ) -> Result<Stopped, PipelineError> {
        let Poll {
            assigned,
            revoked,
            records,
        } = poll;
        if !revoked.is_empty() {
            tracing::info!(
                revoked = ?numbers(&revoked),
                assignment = ?numbers(&self.consumer.assignment()),
                "partitions revoked"
            );
            self.sink
                .run(move |sink| revoked.iter().for_each(|p| sink.revoke(*p)))
                .await?;
        }
        if !assigned.is_empty() {
            tracing::info!(
                assigned = ?numbers(&assigned),
                assignment = ?numbers(&self.consumer.assignment()),
                "partitions assigned"
            );
            // Another process may have written these partitions since we last held them; the
            // sink must re-read its watermark before a single line is written.
            let assigned = Arc::new(assigned);
            let load = || {
                let assigned = Arc::clone(&assigned);
                move |sink: &mut S| assigned.iter().try_for_each(|p| sink.assign(*p))
            };
            if !self
                .sink
                .retry("loading assigned partitions", load, shutdown)
                .await?
            {
                return Ok(Stopped::AbandonedBatch);
            }
        }
        if records.is_empty() {
            self.lag.update(&self.consumer.lag());
            return Ok(Stopped::Drained);
        }

        self.metrics.records.inc_by(records.len() as u64);
        let positions = commit_positions(&records);
        let batch = tokio::task::spawn_blocking(move || PreparedBatch::decode(records))
            .await
            .map_err(|error| PipelineError::Task(error.to_string()))?;
        for corrupt in &batch.corrupt {
            self.metrics.corrupt_records.inc();
            tracing::error!(
                partition = %corrupt.partition,
                offset = %corrupt.offset,
                error = %corrupt.error,
                "record failed to decode; quarantining its raw bytes instead of writing it"
            );
        }

        // Throttled once per batch, before its first attempt: retries of a failed write are paced
        // by the backoff, and re-paying for them would slow the recovery after an outage.
        self.throttle.observe(batch.records.len(), batch.metrics);
        if !self.throttle.admit(batch.metrics, shutdown).await {
            tracing::info!(
                metrics = batch.metrics,
                "shutdown while the sink rate limit held a batch back; it stays uncommitted and \
                 will be re-delivered"
            );
            return Ok(Stopped::AbandonedBatch);
        }

        let batch = Arc::new(batch);
        let write = || {
            let batch = Arc::clone(&batch);
            move |sink: &mut S| {
                let started = Instant::now();
                batch
                    .write_to(sink)
                    .map(|written| (written, started.elapsed()))
            }
        };
        let Some(((stats, quarantined), took)) = self
            .sink
            .retry_value("writing a batch", write, shutdown)
            .await?
        else {
            return Ok(Stopped::AbandonedBatch);
        };
        self.metrics.sink_write_seconds.observe(took.as_secs_f64());
        self.metrics.metrics_written.inc_by(stats.written);
        self.metrics.duplicates_skipped.inc_by(stats.skipped);
        if stats.skipped > 0 {
            tracing::info!(
                skipped = stats.skipped,
                "skipped metrics the sink already held (re-delivered after a crash or handover)"
            );
        }
        for path in quarantined {
            tracing::warn!(path = %path.display(), "corrupt record quarantined");
        }

        // Only now, with the batch durable in the sink, may the queue forget it.
        let mut backoff = Backoff::new(&self.settings);
        let mut failed_commits = 0;
        loop {
            match self.consumer.commit(&positions).await {
                Ok(()) => {
                    self.health.queue_recovered();
                    break;
                }
                Err(ConsumeError::OwnershipLost(reason)) => {
                    // Retrying cannot succeed; the next poll completes the rebalance and the
                    // records come back (to us or another member) from the last commit, where
                    // the sink skips what it already holds.
                    self.metrics.queue_errors.inc();
                    tracing::warn!(%reason, "batch written but its commit was lost to a rebalance; it will be re-delivered");
                    break;
                }
                Err(error) => {
                    self.metrics.queue_errors.inc();
                    self.health.queue_failed(error.to_string());
                    if shutdown.is_cancelled() {
                        tracing::warn!(
                            %error,
                            "shutting down without committing the last batch; the sink holds \
                             it, so its re-delivery will write nothing twice"
                        );
                        return Ok(Stopped::AbandonedBatch);
                    }
                    failed_commits += 1;
                    if failed_commits >= COMMIT_ATTEMPTS {
                        // A commit that cannot get through may be waiting for this member to
                        // poll: Kafka's group coordinator, back after an outage, first needs the
                        // rebalance only a poll serves (CI saw a consumer retry a commit for
                        // minutes beside a broker that was back). The batch is in the sink, so
                        // a later commit supersedes this one, or the records come back from the
                        // last commit and the sink skips them: the contract's "gives up on".
                        tracing::warn!(
                            %error,
                            attempts = failed_commits,
                            "batch written but not committed; polling on: a later commit \
                             covers it, or it is re-delivered and skipped by the sink"
                        );
                        break;
                    }
                    tracing::warn!(%error, "committing offsets failed; retrying");
                    pause(backoff.next_delay(), shutdown).await;
                }
            }
        }
        self.lag.update(&self.consumer.lag());
        Ok(Stopped::Drained)
    }
}

/// Commit attempts for one batch before the pipeline polls on without that commit.
const COMMIT_ATTEMPTS: u32 = 3;

/// Partition numbers as plain integers, for logs.
fn numbers(partitions: &[Partition]) -> Vec<u32> {
    partitions.iter().map(|partition| partition.0).collect()
}

/// The offset to commit per partition: one past the last record returned. Records come in
/// offset order within a partition, but taking the maximum does not depend on it.
fn commit_positions(records: &[ConsumedRecord]) -> Vec<(Partition, Offset)> {
    let mut next: BTreeMap<Partition, Offset> = BTreeMap::new();
    for record in records {
        let candidate = record.offset.next();
        next.entry(record.partition)
            .and_modify(|offset| *offset = (*offset).max(candidate))
            .or_insert(candidate);
    }
    next.into_iter().collect()
}
