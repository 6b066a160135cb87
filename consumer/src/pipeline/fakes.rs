//! The loop's test doubles: a queue that plays back scripted polls and records what it saw, a
//! sink that fails on demand, and helpers to build records and read results back.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use metricstream_backend::codec;
use metricstream_backend::{
    ClientId, ConsumeError, ConsumedRecord, Metric, MetricBatch, Offset, Partition, Poll,
    PollLimits, QueueConsumer,
};
use prometheus_client::metrics::family::Family;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{Pipeline, PipelineSettings, Stopped};
use crate::health::Health;
use crate::metrics::{ConsumerMetrics, LagGauges};
use crate::sink::{JsonlSink, Sink, SinkError, SinkRecord, WriteStats};

pub(super) const P0: Partition = Partition(0);
pub(super) const P1: Partition = Partition(1);

/// What the fake queue saw, in order.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Event {
    Polled,
    Committed(Vec<(Partition, Offset)>),
    CommitFailed,
    Closed,
    /// A poll while records of the previous one were neither committed nor given up on.
    ContractBroken,
}

pub(super) type CommitHook = Box<dyn FnMut(&[(Partition, Offset)]) + Send>;

/// A queue that plays back scripted polls, then asks the pipeline to shut down.
pub(super) struct ScriptedQueue {
    pub(super) script: VecDeque<Result<Poll, ConsumeError>>,
    pub(super) events: Arc<Mutex<Vec<Event>>>,
    pub(super) assignment: Vec<Partition>,
    pub(super) uncommitted: bool,
    pub(super) failing_commits: usize,
    pub(super) on_commit: Option<CommitHook>,
    pub(super) shutdown_when_done: CancellationToken,
}

impl ScriptedQueue {
    pub(super) fn new(
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
    async fn poll(&mut self, _limits: PollLimits, _wait: Duration) -> Result<Poll, ConsumeError> {
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
            // A failed attempt is the caller dealing with the batch: the contract lets it give
            // up on a commit and poll on.
            self.uncommitted = false;
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
pub(super) struct FlakySink {
    pub(super) inner: JsonlSink,
    pub(super) failures: Arc<AtomicUsize>,
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

pub(super) fn payload(metrics: usize) -> Bytes {
    Bytes::from(codec::encode(&MetricBatch {
        client: ClientId::new("client-a"),
        metrics: (0..metrics)
            .map(|i| Metric {
                name: format!("m{i}"),
                value: i as f64,
                timestamp: Some(1_700_000_000_000),
                tags: Default::default(),
                kind: Default::default(),
            })
            .collect(),
    }))
}

pub(super) fn consumed(partition: Partition, offset: u64, metrics: usize) -> ConsumedRecord {
    ConsumedRecord {
        partition,
        offset: Offset(offset),
        payload: payload(metrics),
    }
}

pub(super) fn poll(
    assigned: &[Partition],
    revoked: &[Partition],
    records: Vec<ConsumedRecord>,
) -> Poll {
    Poll {
        assigned: assigned.to_vec(),
        revoked: revoked.to_vec(),
        records,
    }
}

pub(super) fn settings() -> PipelineSettings {
    PipelineSettings {
        limits: PollLimits::records(100),
        poll_wait: Duration::from_millis(5),
        retry_backoff: Duration::from_millis(1),
        max_retry_backoff: Duration::from_millis(5),
        sink_rate_limit: 0,
    }
}

pub(super) fn positions(path: &Path) -> Vec<(u64, u64)> {
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

pub(super) fn events_of(events: &Arc<Mutex<Vec<Event>>>) -> Vec<Event> {
    events.lock().expect("events lock").clone()
}

pub(super) fn commits(events: &[Event]) -> Vec<Vec<(Partition, Offset)>> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Committed(positions) => Some(positions.clone()),
            _ => None,
        })
        .collect()
}

pub(super) async fn run_to_end<S: Sink>(
    queue: ScriptedQueue,
    sink: S,
    metrics: &ConsumerMetrics,
    shutdown: CancellationToken,
) -> Stopped {
    run_to_end_with(queue, sink, metrics, settings(), shutdown).await
}

pub(super) async fn run_to_end_with<S: Sink>(
    queue: ScriptedQueue,
    sink: S,
    metrics: &ConsumerMetrics,
    settings: PipelineSettings,
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
        settings,
    );
    tokio::time::timeout(Duration::from_secs(10), pipeline.run(shutdown))
        .await
        .expect("pipeline finishes")
        .expect("pipeline succeeds")
}
