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

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use metricstream_backend::codec::{self, CodecError};
use metricstream_backend::{
    ConsumeError, ConsumedRecord, Offset, Partition, Poll, PollLimits, QueueConsumer,
};
use tokio_util::sync::CancellationToken;

use crate::health::Health;
use crate::metrics::{ConsumerMetrics, LagGauges};
use crate::sink::{Sink, SinkError, SinkRecord, WriteStats};

/// How the loop polls and retries.
#[derive(Clone, Debug)]
pub struct PipelineSettings {
    pub limits: PollLimits,
    pub poll_wait: Duration,
    /// The first pause after a failure; it doubles with each further failure in a row.
    pub retry_backoff: Duration,
    pub max_retry_backoff: Duration,
}

impl PipelineSettings {
    pub fn new(limits: PollLimits, poll_wait: Duration) -> Self {
        Self {
            limits,
            poll_wait,
            retry_backoff: Duration::from_secs(1),
            max_retry_backoff: Duration::from_secs(10),
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
}

/// Runs sink operations in blocking tasks and retries them. Kept apart from the consumer,
/// which is `Send` but not `Sync`, so that its futures may borrow it across awaits.
struct SinkRunner<S: Sink> {
    /// Shared with the blocking tasks that do the sink's file I/O off the async runtime.
    sink: Arc<Mutex<S>>,
    metrics: ConsumerMetrics,
    health: Arc<Health>,
    settings: PipelineSettings,
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
            let poll = match self
                .consumer
                .poll(self.settings.limits, self.settings.poll_wait)
                .await
            {
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
                    tracing::warn!(%error, "committing offsets failed; retrying");
                    pause(backoff.next_delay(), shutdown).await;
                }
            }
        }
        self.lag.update(&self.consumer.lag());
        Ok(Stopped::Drained)
    }
}

impl<S: Sink> SinkRunner<S> {
    /// Retries a fallible sink operation until it succeeds (`true`) or shutdown is requested
    /// while it is failing (`false`). `make` builds a fresh attempt each time.
    async fn retry<F>(
        &self,
        what: &str,
        make: impl Fn() -> F,
        shutdown: &CancellationToken,
    ) -> Result<bool, PipelineError>
    where
        F: FnOnce(&mut S) -> Result<(), SinkError> + Send + 'static,
    {
        Ok(self.retry_value(what, make, shutdown).await?.is_some())
    }

    async fn retry_value<F, R>(
        &self,
        what: &str,
        make: impl Fn() -> F,
        shutdown: &CancellationToken,
    ) -> Result<Option<R>, PipelineError>
    where
        F: FnOnce(&mut S) -> Result<R, SinkError> + Send + 'static,
        R: Send + 'static,
    {
        let mut backoff = Backoff::new(&self.settings);
        loop {
            match self.run(make()).await? {
                Ok(value) => {
                    self.health.sink_recovered();
                    return Ok(Some(value));
                }
                Err(error) => {
                    self.metrics.sink_errors.inc();
                    self.health.sink_failed(error.to_string());
                    if shutdown.is_cancelled() {
                        tracing::error!(
                            %error,
                            "{what} failed during shutdown; leaving the batch uncommitted for \
                             re-delivery"
                        );
                        return Ok(None);
                    }
                    tracing::error!(%error, "{what} failed; retrying without committing");
                    pause(backoff.next_delay(), shutdown).await;
                }
            }
        }
    }

    /// Runs `operation` on the sink in a blocking task: sink I/O includes `fdatasync`, which
    /// must not stall the async workers.
    async fn run<R: Send + 'static>(
        &self,
        operation: impl FnOnce(&mut S) -> R + Send + 'static,
    ) -> Result<R, PipelineError> {
        let sink = Arc::clone(&self.sink);
        tokio::task::spawn_blocking(move || {
            let mut sink = sink.lock().map_err(|_| {
                PipelineError::SinkPanicked("an earlier sink operation panicked".to_owned())
            })?;
            Ok(operation(&mut sink))
        })
        .await
        .map_err(|error| PipelineError::SinkPanicked(error.to_string()))?
    }
}

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

/// A record whose payload failed to decode.
struct CorruptRecord {
    partition: Partition,
    offset: Offset,
    payload: Bytes,
    error: CodecError,
}

/// One poll's records, checked once (corrupt ones set aside for quarantine) and written as many
/// times as it takes.
struct PreparedBatch {
    records: Vec<SinkRecord>,
    corrupt: Vec<CorruptRecord>,
}

impl PreparedBatch {
    fn decode(records: Vec<ConsumedRecord>) -> Self {
        let mut prepared = Self {
            records: Vec::with_capacity(records.len()),
            corrupt: Vec::new(),
        };
        for record in records {
            // Checked here so that corrupt records are quarantined before anything is written;
            // the sink decodes again as it writes, which costs far less than holding every
            // decoded metric of a poll in memory.
            match codec::decode_ref(&record.payload) {
                Ok(_) => prepared.records.push(SinkRecord {
                    partition: record.partition,
                    offset: record.offset,
                    payload: record.payload,
                }),
                // Writing what a failed checksum vouches for would put garbage in the sink, and
                // dropping it would lose data silently; quarantine keeps the bytes for a human.
                Err(error) => prepared.corrupt.push(CorruptRecord {
                    partition: record.partition,
                    offset: record.offset,
                    payload: record.payload,
                    error,
                }),
            }
        }
        prepared
    }

    /// Quarantines the corrupt records and writes the good ones, all durably.
    fn write_to<S: Sink>(
        &self,
        sink: &mut S,
    ) -> Result<(WriteStats, Vec<std::path::PathBuf>), SinkError> {
        let quarantined = self
            .corrupt
            .iter()
            .map(|record| sink.quarantine(record.partition, record.offset, &record.payload))
            .collect::<Result<Vec<_>, _>>()?;
        let stats = sink.write_batch(&self.records)?;
        Ok((stats, quarantined))
    }
}

/// Capped exponential backoff between retries of one failing operation.
struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(settings: &PipelineSettings) -> Self {
        Self {
            first: settings.retry_backoff,
            max: settings.max_retry_backoff,
            next: settings.retry_backoff,
        }
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    fn reset(&mut self) {
        self.next = self.first;
    }
}

/// Sleeps for `delay`, waking early on shutdown so the caller can make its last attempt.
async fn pause(delay: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        () = shutdown.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use metricstream_backend::{ClientId, ConsumeError, Metric, MetricBatch};
    use serde_json::Value;

    use super::*;
    use crate::sink::JsonlSink;
    use metricstream_backend::file::PartitionLabel;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;

    const P0: Partition = Partition(0);
    const P1: Partition = Partition(1);

    /// What the fake queue saw, in order.
    #[derive(Clone, Debug, PartialEq)]
    enum Event {
        Polled,
        Committed(Vec<(Partition, Offset)>),
        CommitFailed,
        Closed,
        /// A poll while records of the previous one were neither committed nor given up on.
        ContractBroken,
    }

    type CommitHook = Box<dyn FnMut(&[(Partition, Offset)]) + Send>;

    /// A queue that plays back scripted polls, then asks the pipeline to shut down.
    struct ScriptedQueue {
        script: VecDeque<Result<Poll, ConsumeError>>,
        events: Arc<Mutex<Vec<Event>>>,
        assignment: Vec<Partition>,
        uncommitted: bool,
        failing_commits: usize,
        on_commit: Option<CommitHook>,
        shutdown_when_done: CancellationToken,
    }

    impl ScriptedQueue {
        fn new(
            script: Vec<Result<Poll, ConsumeError>>,
            shutdown_when_done: CancellationToken,
        ) -> (Self, Arc<Mutex<Vec<Event>>>) {
            let events = Arc::new(Mutex::new(Vec::new()));
            let queue = Self {
                script: script.into(),
                events: Arc::clone(&events),
                assignment: Vec::new(),
                uncommitted: false,
                failing_commits: 0,
                on_commit: None,
                shutdown_when_done,
            };
            (queue, events)
        }

        fn record(&self, event: Event) {
            self.events.lock().expect("events lock").push(event);
        }
    }

    #[async_trait]
    impl QueueConsumer for ScriptedQueue {
        async fn poll(
            &mut self,
            _limits: PollLimits,
            _wait: Duration,
        ) -> Result<Poll, ConsumeError> {
            if self.uncommitted {
                self.record(Event::ContractBroken);
            }
            self.record(Event::Polled);
            let Some(next) = self.script.pop_front() else {
                self.shutdown_when_done.cancel();
                return Ok(Poll::default());
            };
            if let Ok(poll) = &next {
                self.assignment.retain(|p| !poll.revoked.contains(p));
                self.assignment.extend(&poll.assigned);
                self.uncommitted = !poll.records.is_empty();
            }
            next
        }

        async fn commit(&mut self, positions: &[(Partition, Offset)]) -> Result<(), ConsumeError> {
            if self.failing_commits > 0 {
                self.failing_commits -= 1;
                self.record(Event::CommitFailed);
                return Err(ConsumeError::Unavailable(
                    "offsets volume is read-only".into(),
                ));
            }
            if let Some(hook) = &mut self.on_commit {
                hook(positions);
            }
            self.uncommitted = false;
            self.record(Event::Committed(positions.to_vec()));
            Ok(())
        }

        fn assignment(&self) -> Vec<Partition> {
            self.assignment.clone()
        }

        fn lag(&self) -> Vec<(Partition, u64)> {
            self.assignment.iter().map(|p| (*p, 3)).collect()
        }

        async fn close(&mut self) {
            self.record(Event::Closed);
        }
    }

    /// The real sink, failing the next `failures` writes as a full disk would.
    struct FlakySink {
        inner: JsonlSink,
        failures: Arc<AtomicUsize>,
    }

    impl Sink for FlakySink {
        fn assign(&mut self, partition: Partition) -> Result<(), SinkError> {
            self.inner.assign(partition)
        }

        fn revoke(&mut self, partition: Partition) {
            self.inner.revoke(partition);
        }

        fn write_batch(&mut self, records: &[SinkRecord]) -> Result<WriteStats, SinkError> {
            let left = self.failures.load(Ordering::SeqCst);
            if left > 0 {
                self.failures.store(left - 1, Ordering::SeqCst);
                return Err(SinkError::Io {
                    context: "writing partition-0000.jsonl".to_owned(),
                    cause: std::io::Error::from_raw_os_error(28), // ENOSPC
                });
            }
            self.inner.write_batch(records)
        }

        fn quarantine(
            &mut self,
            partition: Partition,
            offset: Offset,
            payload: &[u8],
        ) -> Result<PathBuf, SinkError> {
            self.inner.quarantine(partition, offset, payload)
        }
    }

    fn payload(metrics: usize) -> Bytes {
        Bytes::from(codec::encode(&MetricBatch {
            client: ClientId::new("client-a"),
            metrics: (0..metrics)
                .map(|i| Metric {
                    name: format!("m{i}"),
                    value: i as f64,
                    timestamp: Some(1_700_000_000_000),
                    tags: Default::default(),
                })
                .collect(),
        }))
    }

    fn consumed(partition: Partition, offset: u64, metrics: usize) -> ConsumedRecord {
        ConsumedRecord {
            partition,
            offset: Offset(offset),
            payload: payload(metrics),
        }
    }

    fn poll(assigned: &[Partition], revoked: &[Partition], records: Vec<ConsumedRecord>) -> Poll {
        Poll {
            assigned: assigned.to_vec(),
            revoked: revoked.to_vec(),
            records,
        }
    }

    fn settings() -> PipelineSettings {
        PipelineSettings {
            limits: PollLimits::records(100),
            poll_wait: Duration::from_millis(5),
            retry_backoff: Duration::from_millis(1),
            max_retry_backoff: Duration::from_millis(5),
        }
    }

    fn positions(path: &Path) -> Vec<(u64, u64)> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|line| {
                let value: Value = serde_json::from_str(line).expect("JSON line");
                (
                    value["offset"].as_u64().expect("offset"),
                    value["index"].as_u64().expect("index"),
                )
            })
            .collect()
    }

    fn events_of(events: &Arc<Mutex<Vec<Event>>>) -> Vec<Event> {
        events.lock().expect("events lock").clone()
    }

    fn commits(events: &[Event]) -> Vec<Vec<(Partition, Offset)>> {
        events
            .iter()
            .filter_map(|event| match event {
                Event::Committed(positions) => Some(positions.clone()),
                _ => None,
            })
            .collect()
    }

    async fn run_to_end<S: Sink>(
        queue: ScriptedQueue,
        sink: S,
        metrics: &ConsumerMetrics,
        shutdown: CancellationToken,
    ) -> Stopped {
        let health = Arc::new(Health::default());
        health.set_consumer_open(true);
        let pipeline = Pipeline::new(
            Box::new(queue),
            sink,
            metrics.clone(),
            health,
            LagGauges::new(Family::default()),
            settings(),
        );
        tokio::time::timeout(Duration::from_secs(10), pipeline.run(shutdown))
            .await
            .expect("pipeline finishes")
            .expect("pipeline succeeds")
    }

    #[tokio::test]
    async fn commits_each_batch_only_once_the_sink_file_holds_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("partition-0000.jsonl");
        let shutdown = CancellationToken::new();
        let (mut queue, events) = ScriptedQueue::new(
            vec![
                Ok(poll(
                    &[P0],
                    &[],
                    vec![consumed(P0, 0, 2), consumed(P0, 1, 1)],
                )),
                Ok(poll(&[], &[], vec![consumed(P0, 2, 3)])),
            ],
            shutdown.clone(),
        );
        let seen_at_commit = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&seen_at_commit);
        let path = file.clone();
        queue.on_commit = Some(Box::new(move |_| {
            seen.lock().expect("lock").push(positions(&path).len());
        }));
        let metrics = ConsumerMetrics::default();
        let sink = JsonlSink::open(dir.path()).expect("sink");

        assert_eq!(
            run_to_end(queue, sink, &metrics, shutdown).await,
            Stopped::Drained
        );

        let events = events_of(&events);
        assert!(!events.contains(&Event::ContractBroken), "{events:?}");
        assert_eq!(
            commits(&events),
            vec![vec![(P0, Offset(2))], vec![(P0, Offset(3))]]
        );
        assert_eq!(*seen_at_commit.lock().expect("lock"), vec![3, 6]);
        assert_eq!(events.last(), Some(&Event::Closed));
        assert_eq!(metrics.records.get(), 3);
        assert_eq!(metrics.metrics_written.get(), 6);
    }

    #[tokio::test]
    async fn a_redelivered_batch_after_a_lost_commit_writes_no_duplicates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let shutdown = CancellationToken::new();
        // The second poll re-delivers offsets 0 and 1, as after a crash before the commit.
        let (queue, _events) = ScriptedQueue::new(
            vec![
                Ok(poll(
                    &[P0],
                    &[],
                    vec![consumed(P0, 0, 2), consumed(P0, 1, 1)],
                )),
                Ok(poll(
                    &[P0],
                    &[P0],
                    vec![consumed(P0, 0, 2), consumed(P0, 1, 1), consumed(P0, 2, 1)],
                )),
            ],
            shutdown.clone(),
        );
        let metrics = ConsumerMetrics::default();
        let sink = JsonlSink::open(dir.path()).expect("sink");
        run_to_end(queue, sink, &metrics, shutdown).await;

        assert_eq!(
            positions(&dir.path().join("partition-0000.jsonl")),
            vec![(0, 0), (0, 1), (1, 0), (2, 0)]
        );
        assert_eq!(metrics.duplicates_skipped.get(), 3);
        assert_eq!(metrics.metrics_written.get(), 4);
    }

    #[tokio::test]
    async fn a_reassigned_partition_sees_what_another_consumer_wrote_meanwhile() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("partition-0000.jsonl");
        let shutdown = CancellationToken::new();
        let (mut queue, _events) = ScriptedQueue::new(
            vec![
                Ok(poll(&[P0], &[], vec![consumed(P0, 0, 1)])),
                Ok(poll(&[], &[P0], vec![])),
                // While we did not own it, another member wrote offsets 1 and 2 but committed
                // only up to 1; we get offset 1 and 2 again.
                Ok(poll(
                    &[P0],
                    &[],
                    vec![consumed(P0, 1, 1), consumed(P0, 2, 1)],
                )),
            ],
            shutdown.clone(),
        );
        let other_dir = dir.path().to_owned();
        let mut wrote = false;
        queue.on_commit = Some(Box::new(move |positions| {
            if !wrote && positions == [(P0, Offset(1))] {
                wrote = true;
                let mut other = JsonlSink::open(&other_dir).expect("other sink");
                other.assign(P0).expect("other assign");
                let records: Vec<SinkRecord> = [1u64, 2]
                    .iter()
                    .map(|offset| SinkRecord {
                        partition: P0,
                        offset: Offset(*offset),
                        payload: payload(1),
                    })
                    .collect();
                other.write_batch(&records).expect("other write");
            }
        }));
        let metrics = ConsumerMetrics::default();
        let sink = JsonlSink::open(dir.path()).expect("sink");
        run_to_end(queue, sink, &metrics, shutdown).await;

        assert_eq!(positions(&file), vec![(0, 0), (1, 0), (2, 0)]);
        assert_eq!(metrics.duplicates_skipped.get(), 2);
    }

    #[tokio::test]
    async fn a_failing_sink_blocks_the_commit_until_a_retry_succeeds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let shutdown = CancellationToken::new();
        let (mut queue, events) = ScriptedQueue::new(
            vec![Ok(poll(&[P0], &[], vec![consumed(P0, 0, 2)]))],
            shutdown.clone(),
        );
        let failures = Arc::new(AtomicUsize::new(3));
        let left = Arc::clone(&failures);
        queue.on_commit = Some(Box::new(move |_| {
            assert_eq!(
                left.load(Ordering::SeqCst),
                0,
                "committed before the write succeeded"
            );
        }));
        let metrics = ConsumerMetrics::default();
        let sink = FlakySink {
            inner: JsonlSink::open(dir.path()).expect("sink"),
            failures,
        };
        run_to_end(queue, sink, &metrics, shutdown).await;

        assert_eq!(metrics.sink_errors.get(), 3);
        assert_eq!(commits(&events_of(&events)), vec![vec![(P0, Offset(1))]]);
        assert_eq!(
            positions(&dir.path().join("partition-0000.jsonl")),
            vec![(0, 0), (0, 1)]
        );
    }

    #[tokio::test]
    async fn readiness_is_false_while_the_sink_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let shutdown = CancellationToken::new();
        let (mut queue, events) = ScriptedQueue::new(
            vec![Ok(poll(&[P0], &[], vec![consumed(P0, 0, 1)]))],
            CancellationToken::new(),
        );
        queue.on_commit = Some(Box::new(|_| panic!("nothing may be committed")));
        let metrics = ConsumerMetrics::default();
        let health = Arc::new(Health::default());
        health.set_consumer_open(true);
        let sink = FlakySink {
            inner: JsonlSink::open(dir.path()).expect("sink"),
            failures: Arc::new(AtomicUsize::new(usize::MAX)),
        };
        let pipeline = Pipeline::new(
            Box::new(queue),
            sink,
            metrics.clone(),
            Arc::clone(&health),
            LagGauges::new(Family::default()),
            settings(),
        );
        let task = tokio::spawn(pipeline.run(shutdown.clone()));
        let deadline = Instant::now() + Duration::from_secs(10);
        while metrics.sink_errors.get() < 2 {
            assert!(Instant::now() < deadline, "the sink was never retried");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let reason = health
            .readiness()
            .expect_err("not ready while the sink fails");
        assert!(reason.contains("sink"), "{reason}");

        // Shutdown while failing gives the batch up, uncommitted, and still closes cleanly.
        shutdown.cancel();
        let stopped = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("stops in time")
            .expect("no panic")
            .expect("no fatal error");
        assert_eq!(stopped, Stopped::AbandonedBatch);
        let events = events_of(&events);
        assert!(commits(&events).is_empty(), "{events:?}");
        assert_eq!(events.last(), Some(&Event::Closed));
        assert!(health.readiness().is_err(), "not ready once closed");
    }

    #[tokio::test]
    async fn a_corrupt_record_is_quarantined_counted_and_committed_past() {
        let dir = tempfile::tempdir().expect("tempdir");
        let shutdown = CancellationToken::new();
        let mut bad = consumed(P0, 1, 2);
        let mut bytes = bad.payload.to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        bad.payload = Bytes::from(bytes.clone());
        let (queue, events) = ScriptedQueue::new(
            vec![Ok(poll(
                &[P0],
                &[],
                vec![consumed(P0, 0, 1), bad, consumed(P0, 2, 1)],
            ))],
            shutdown.clone(),
        );
        let metrics = ConsumerMetrics::default();
        let sink = JsonlSink::open(dir.path()).expect("sink");
        run_to_end(queue, sink, &metrics, shutdown).await;

        assert_eq!(metrics.corrupt_records.get(), 1);
        assert_eq!(
            positions(&dir.path().join("partition-0000.jsonl")),
            vec![(0, 0), (2, 0)]
        );
        let kept = std::fs::read(
            dir.path()
                .join("quarantine/partition-0000-offset-00000000000000000001.bin"),
        )
        .expect("quarantined copy");
        assert_eq!(kept, bytes);
        assert_eq!(commits(&events_of(&events)), vec![vec![(P0, Offset(3))]]);
    }

    #[tokio::test]
    async fn shutdown_finishes_the_batch_in_hand_then_closes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let shutdown = CancellationToken::new();
        let (mut queue, events) = ScriptedQueue::new(
            vec![
                Ok(poll(
                    &[P0, P1],
                    &[],
                    vec![consumed(P0, 0, 1), consumed(P1, 0, 1)],
                )),
                Ok(poll(&[], &[], vec![consumed(P0, 1, 1)])),
            ],
            CancellationToken::new(),
        );
        // The signal arrives while the first batch is being handled.
        let signal = shutdown.clone();
        queue.on_commit = Some(Box::new(move |_| signal.cancel()));
        let metrics = ConsumerMetrics::default();
        let sink = JsonlSink::open(dir.path()).expect("sink");
        let stopped = run_to_end(queue, sink, &metrics, shutdown).await;

        assert_eq!(stopped, Stopped::Drained);
        let events = events_of(&events);
        assert_eq!(
            events,
            vec![
                Event::Polled,
                Event::Committed(vec![(P0, Offset(1)), (P1, Offset(1))]),
                Event::Closed
            ]
        );
    }

    #[tokio::test]
    async fn failed_polls_and_commits_are_retried() {
        let dir = tempfile::tempdir().expect("tempdir");
        let shutdown = CancellationToken::new();
        let (mut queue, events) = ScriptedQueue::new(
            vec![
                Err(ConsumeError::Unavailable("lock directory missing".into())),
                Ok(poll(&[P0], &[], vec![consumed(P0, 0, 1)])),
            ],
            shutdown.clone(),
        );
        queue.failing_commits = 2;
        let metrics = ConsumerMetrics::default();
        let sink = JsonlSink::open(dir.path()).expect("sink");
        run_to_end(queue, sink, &metrics, shutdown).await;

        let events = events_of(&events);
        assert!(!events.contains(&Event::ContractBroken), "{events:?}");
        assert_eq!(
            events.iter().filter(|e| **e == Event::CommitFailed).count(),
            2
        );
        assert_eq!(commits(&events), vec![vec![(P0, Offset(1))]]);
        assert_eq!(metrics.queue_errors.get(), 3);
        assert_eq!(metrics.metrics_written.get(), 1);
    }

    #[tokio::test]
    async fn lag_gauges_follow_the_assignment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let shutdown = CancellationToken::new();
        let (queue, _events) = ScriptedQueue::new(
            vec![
                Ok(poll(&[P0, P1], &[], vec![consumed(P0, 0, 1)])),
                Ok(poll(&[], &[P1], vec![])),
            ],
            shutdown.clone(),
        );
        let metrics = ConsumerMetrics::default();
        let health = Arc::new(Health::default());
        let lag = Family::<PartitionLabel, Gauge>::default();
        let mut pipeline = Pipeline::new(
            Box::new(queue),
            JsonlSink::open(dir.path()).expect("sink"),
            metrics.clone(),
            health,
            LagGauges::new(lag.clone()),
            settings(),
        );
        // Drive two polls by hand to look at the gauges in between.
        let first = pipeline
            .consumer
            .poll(PollLimits::records(10), Duration::ZERO)
            .await
            .expect("poll");
        pipeline.handle(first, &shutdown).await.expect("handled");
        assert_eq!(lag.get_or_create(&PartitionLabel::new(1)).get(), 3);
        let second = pipeline
            .consumer
            .poll(PollLimits::records(10), Duration::ZERO)
            .await
            .expect("poll");
        pipeline.handle(second, &shutdown).await.expect("handled");
        assert!(lag.get(&PartitionLabel::new(1)).is_none());
        assert_eq!(lag.get_or_create(&PartitionLabel::new(0)).get(), 3);

        pipeline.run(shutdown).await.expect("runs");
        assert!(
            lag.get(&PartitionLabel::new(0)).is_none(),
            "a closed consumer reports no lag"
        );
    }

    #[test]
    fn commit_positions_are_one_past_the_last_record_per_partition() {
        let records = vec![
            consumed(P1, 7, 0),
            consumed(P0, 3, 0),
            consumed(P1, 8, 0),
            consumed(P0, 4, 0),
        ];
        assert_eq!(
            commit_positions(&records),
            vec![(P0, Offset(5)), (P1, Offset(9))]
        );
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets() {
        let mut backoff = Backoff::new(&PipelineSettings::new(
            PollLimits::records(1),
            Duration::from_millis(1),
        ));
        let delays: Vec<u64> = (0..6).map(|_| backoff.next_delay().as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 10, 10]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_secs(1));
    }
}
