//! The ingest's spill: while Kafka cannot take records, accepted records are made durable in a
//! local file queue instead, and a forwarder appends them to Kafka once it is back.
//!
//! [`SpillingProducer`] is the ingest's [`QueueProducer`] when `--spill-dir` is set. Each
//! partition is routed on its own, under its own lock:
//!
//! - **Direct**: the circuit in front of Kafka is closed and the partition has nothing in the
//!   spill. The record is handed to Kafka; the client is answered with Kafka's offset.
//! - **Spill**: otherwise. The record goes to the spill partition of the same number and the
//!   client is answered once it is synced there (`Appended::Spill`). While a partition has
//!   spilled records, its new records go behind them, so one client's records keep their order.
//!
//! The circuit ([`crate::circuit`]) opens when Kafka does not acknowledge an append (it is
//! unreachable, acknowledgements stalled, or the ack timed out) or its buffer stays full for
//! longer than [`SpillSettings::saturation_threshold`]; it lets the forwarder probe after a
//! second, doubling to thirty, and closes when a probe is acknowledged.
//!
//! **Exactly once.** Every record this producer hands to Kafka carries a replay identity
//! ([`crate::replay`]): this process's random origin and a sequence number per partition, taken
//! under the partition's lock in the order records are handed over. Within a partition the
//! records reach Kafka in sequence order:
//! - direct records are handed to librdkafka in sequence order, and its idempotent producer
//!   keeps that order within a partition;
//! - spilled records are handed to the spill's partition writer in sequence order (it writes
//!   them in that order), and the forwarder sends them to Kafka in spill order through a
//!   producer of its own whose records never time out: one it has not delivered yet stays
//!   queued ahead of all sent after it, so a record sent again arrives behind the first copy;
//! - when a partition turns to the spill while direct records are still unanswered, those are
//!   copied into the spill first, in sequence order, before any newer record ([`reroute`]): an
//!   unanswered record may or may not be stored in Kafka (librdkafka may still deliver it), so it
//!   must be replayed, and whichever copy arrives second carries the same identity as the first;
//! - direct sending resumes only once the forwarder has had every spilled record of the
//!   partition acknowledged.
//!
//! So a sequence number at or below the highest one already seen from the same origin in the
//! partition can only be a second copy: a replay after a crash between Kafka's acknowledgement
//! and the spill's commit, or a rerouted record that Kafka did store. The Kafka consumer drops
//! those ([`crate::replay::ReplayMarks`]).
//!
//! **Bounded.** Records in the spill not yet in Kafka may take at most `--spill-max-bytes`; past
//! that an append is refused (503 + `Retry-After`), and nothing accepted is ever dropped to make
//! room. The spill's consumed segments are deleted as it is written to.
//!
//! **Restarts.** The spill is a file queue with a consumer group of its own (`forwarder`) on the
//! pod's volume; the next process on the volume finds what was not forwarded from the group's
//! committed offsets and forwards it first. On shutdown the producer tries to forward the whole
//! spill within [`SpillSettings::drain_timeout`]; what is left stays on the volume.

mod finish;
mod forwarder;
mod metrics;
mod record;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use metrics::SpillMetrics;

use finish::FinishOnDrop;

use crate::circuit::{Circuit, CircuitPolicy, CircuitState, Transition};
use crate::file::{FileConsumer, FileProducer, FileQueueConfig, FileQueueMetrics, PendingAppend};
use crate::kafka::KafkaProducer;
use crate::model::{Offset, Partition};
use crate::queue::{AppendError, Appended, QueueProducer};
use crate::replay::ReplayIdentity;

/// The spill's consumer group: the forwarder's position in each spill partition.
const FORWARDER_GROUP: &str = "forwarder";

/// How the spill behaves.
#[derive(Clone, Debug)]
pub struct SpillSettings {
    /// The spill's directory: a file queue, on a volume that outlives the process.
    pub dir: PathBuf,
    /// The most bytes of spilled records not yet in Kafka.
    pub max_bytes: u64,
    /// Kafka's buffer full for longer than this opens the circuit; shorter, appends are
    /// refused as saturated (503) as without a spill.
    pub saturation_threshold: Duration,
    /// How long [`QueueProducer::close`] keeps forwarding before it leaves the rest on the volume.
    pub drain_timeout: Duration,
    /// The spill's segment size.
    pub segment_bytes: u64,
}

impl SpillSettings {
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64) -> Self {
        Self {
            dir: dir.into(),
            max_bytes,
            saturation_threshold: Duration::from_secs(2),
            drain_timeout: Duration::from_secs(20),
            segment_bytes: 16 * 1024 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    #[error("spill directory {dir}: {reason}")]
    Open { dir: PathBuf, reason: String },
}

/// One partition's routing state, under its own lock.
#[derive(Default)]
struct Route {
    /// The sequence number the next record of this partition gets.
    next_sequence: u64,
    /// Records in the spill (or on their way into it) not yet acknowledged by Kafka.
    backlog_records: u64,
    backlog_bytes: u64,
    /// Records handed to Kafka directly and not answered yet, by sequence number.
    in_flight: BTreeMap<u64, Bytes>,
    /// Unanswered direct records copied into the spill, by sequence number: their own tasks
    /// pick the outcome up.
    rerouted: HashMap<u64, Result<PendingAppend, AppendError>>,
}

/// What the spill and its forwarder share.
struct Shared {
    origin: u64,
    routes: Vec<Mutex<Route>>,
    spill: FileProducer,
    /// Direct appends.
    kafka: Arc<KafkaProducer>,
    /// The forwarder's appends: a producer whose records never time out in librdkafka (see
    /// `forwarder`).
    forward_kafka: Arc<KafkaProducer>,
    circuit: Mutex<Breaker>,
    /// Whether the circuit is closed, kept beside it for the appends to read without its lock.
    circuit_closed: AtomicBool,
    /// Bytes of spilled records not yet in Kafka, all partitions.
    usage_bytes: AtomicU64,
    backlog_records: AtomicU64,
    max_bytes: u64,
    saturation_threshold: Duration,
    saturated_since: Mutex<Option<Instant>>,
    quarantine_dir: PathBuf,
    metrics: SpillMetrics,
}

/// The circuit and why it last opened.
struct Breaker {
    circuit: Circuit,
    last_failure: String,
}

/// A [`QueueProducer`] that appends to Kafka while it can and to a local spill while it
/// cannot. See the module documentation.
pub struct SpillingProducer {
    shared: Arc<Shared>,
    closed: AtomicBool,
    drain_timeout: Duration,
    stop_forwarder: CancellationToken,
    forwarder: Mutex<Option<JoinHandle<()>>>,
}

impl SpillingProducer {
    /// Opens (or recovers) the spill at `settings.dir` with Kafka's partition count and starts
    /// the forwarder, which first forwards whatever an earlier process left in the spill.
    /// `kafka` takes the direct appends; `forward_kafka`, the forwarder's, must be opened with
    /// no message timeout (`ProducerTuning::message_timeout` zero: librdkafka retries a record
    /// until it is delivered), so that a record it could not deliver yet can never be
    /// overtaken by one sent after it.
    pub async fn open(
        settings: SpillSettings,
        kafka: Arc<KafkaProducer>,
        forward_kafka: Arc<KafkaProducer>,
        metrics: SpillMetrics,
    ) -> Result<Self, SpillError> {
        let partitions = kafka.partitions();
        let open_error = |reason: String| SpillError::Open {
            dir: settings.dir.clone(),
            reason,
        };
        let mut config = FileQueueConfig::new(&settings.dir, partitions);
        config.segment_bytes = settings.segment_bytes;
        // Forwarded segments are deleted as soon as retention runs.
        config.retention.consumed_age = Duration::ZERO;
        let spill = FileProducer::open(config, FileQueueMetrics::default())
            .await
            .map_err(|error| open_error(error.to_string()))?;
        let consumer = FileConsumer::open(
            &settings.dir,
            partitions,
            FORWARDER_GROUP,
            FileQueueMetrics::default(),
        )
        .await
        .map_err(|error| open_error(error.to_string()))?;
        let routes = initial_routes(&settings.dir, spill.opened_next_offsets())
            .map_err(|error| open_error(error.to_string()))?;
        let usage: u64 = routes.iter().map(|route| route.backlog_bytes).sum();
        let backlog: u64 = routes.iter().map(|route| route.backlog_records).sum();
        if backlog > 0 {
            tracing::info!(
                records = backlog,
                bytes = usage,
                "the spill holds records an earlier process did not forward; forwarding them first"
            );
        }
        metrics.limit_bytes.set(gauge_value(settings.max_bytes));
        let shared = Arc::new(Shared {
            origin: record::new_origin(),
            routes: routes.into_iter().map(Mutex::new).collect(),
            spill,
            kafka,
            forward_kafka,
            circuit: Mutex::new(Breaker {
                circuit: Circuit::new(
                    CircuitPolicy {
                        failures_to_open: 1,
                        ..CircuitPolicy::default()
                    },
                    Instant::now(),
                ),
                last_failure: String::new(),
            }),
            circuit_closed: AtomicBool::new(true),
            usage_bytes: AtomicU64::new(usage),
            backlog_records: AtomicU64::new(backlog),
            max_bytes: settings.max_bytes,
            saturation_threshold: settings.saturation_threshold,
            saturated_since: Mutex::new(None),
            quarantine_dir: settings.dir.join("quarantine"),
            metrics,
        });
        shared.show_backlog();
        let stop_forwarder = CancellationToken::new();
        let forwarder = tokio::spawn(forwarder::run(
            shared.clone(),
            consumer,
            stop_forwarder.clone(),
        ));
        Ok(Self {
            shared,
            closed: AtomicBool::new(false),
            drain_timeout: settings.drain_timeout,
            stop_forwarder,
            forwarder: Mutex::new(Some(forwarder)),
        })
    }

    /// Records in the spill not yet in Kafka.
    pub fn backlog_records(&self) -> u64 {
        self.shared.backlog_records.load(Ordering::Acquire)
    }
}

/// Each partition's backlog from what the spill holds: the records after the forwarder's
/// committed offset. Their size is not known without reading them; the partition's segment
/// files bound it (the forwarder's replay brings the count down from there).
fn initial_routes(dir: &Path, next_offsets: &[u64]) -> std::io::Result<Vec<Route>> {
    let group = crate::file::group_dir(dir, FORWARDER_GROUP);
    let mut routes = Vec::with_capacity(next_offsets.len());
    for (partition, &next) in next_offsets.iter().enumerate() {
        let partition = partition as u32;
        let committed = crate::file::read_committed_offset(&group, partition)?;
        let backlog_records = next.saturating_sub(committed);
        let backlog_bytes = if backlog_records > 0 {
            crate::file::partition_bytes(dir, partition)?
        } else {
            0
        };
        routes.push(Route {
            backlog_records,
            backlog_bytes,
            ..Route::default()
        });
    }
    Ok(routes)
}

fn gauge_value(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Shared {
    fn route(&self, partition: Partition) -> Result<MutexGuard<'_, Route>, AppendError> {
        self.routes
            .get(partition.0 as usize)
            .ok_or(AppendError::NoSuchPartition {
                partition,
                partitions: self.routes.len() as u32,
            })?
            .lock()
            .map_err(|_| AppendError::Unavailable("spill route lock poisoned".into()))
    }

    fn breaker(&self) -> MutexGuard<'_, Breaker> {
        self.circuit
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn circuit_closed(&self) -> bool {
        self.circuit_closed.load(Ordering::Acquire)
    }

    /// Changes the circuit under its lock and keeps [`Shared::circuit_closed`] in step.
    fn change_circuit<T>(&self, change: impl FnOnce(&mut Breaker) -> T) -> T {
        let mut breaker = self.breaker();
        let result = change(&mut breaker);
        self.circuit_closed.store(
            breaker.circuit.state() == CircuitState::Closed,
            Ordering::Release,
        );
        result
    }

    /// Kafka failed an append or a probe: opens the circuit (or keeps it open for longer).
    fn kafka_failed(&self, reason: &str) {
        let transition = self.change_circuit(|breaker| {
            breaker.last_failure = reason.to_owned();
            breaker.circuit.failed(Instant::now())
        });
        self.note(transition, reason);
    }

    /// Kafka acknowledged a probe: closes the circuit.
    fn kafka_succeeded(&self) {
        let transition = self.change_circuit(|breaker| breaker.circuit.succeeded());
        self.note(transition, "");
    }

    fn note(&self, transition: Option<Transition>, reason: &str) {
        let Some(transition) = transition else {
            return;
        };
        self.metrics.circuit.record(&transition);
        let Transition { from, to, wait, .. } = transition;
        match to {
            CircuitState::Open => tracing::warn!(
                from = from.name(),
                probe_in_ms = wait.as_millis() as u64,
                %reason,
                "spill circuit open: accepted records go to the spill until Kafka acknowledges a probe"
            ),
            CircuitState::HalfOpen => tracing::info!("spill circuit half-open: probing Kafka"),
            CircuitState::Closed => tracing::info!(
                open_for_ms = transition.was_open_for.map_or(0, |d| d.as_millis() as u64),
                "spill circuit closed: Kafka acknowledges again; forwarding the spill"
            ),
        }
    }

    /// `true` once Kafka's buffer has been full for longer than the threshold.
    fn saturated_too_long(&self) -> bool {
        let Ok(mut since) = self.saturated_since.lock() else {
            return true;
        };
        since.get_or_insert_with(Instant::now).elapsed() >= self.saturation_threshold
    }

    fn saturation_ended(&self) {
        if let Ok(mut since) = self.saturated_since.lock() {
            *since = None;
        }
    }

    /// Hands `record` (with its identity) to the spill's partition writer, within the limit.
    /// Call with the partition's route locked: the order of these calls is the spill's order.
    fn spill_locked(
        &self,
        route: &mut Route,
        partition: Partition,
        identity: ReplayIdentity,
        record: &[u8],
    ) -> Result<PendingAppend, AppendError> {
        let spilled = record::envelope(identity, record);
        let len = spilled.len() as u64;
        let used = self.usage_bytes.fetch_add(len, Ordering::AcqRel);
        if used + len > self.max_bytes {
            self.usage_bytes.fetch_sub(len, Ordering::AcqRel);
            self.metrics.full_refusals.inc();
            return Err(AppendError::SpillFull {
                reason: self.breaker().last_failure.clone(),
                used,
                limit: self.max_bytes,
            });
        }
        match self.spill.enqueue(partition, spilled) {
            Ok(pending) => {
                route.backlog_records += 1;
                route.backlog_bytes += len;
                self.backlog_records.fetch_add(1, Ordering::AcqRel);
                self.show_backlog();
                Ok(pending)
            }
            Err(error) => {
                self.usage_bytes.fetch_sub(len, Ordering::AcqRel);
                Err(error)
            }
        }
    }

    /// Copies the partition's unanswered direct records into the spill, in sequence order,
    /// before anything newer goes there (see the module documentation).
    fn reroute(&self, route: &mut Route, partition: Partition) {
        for (sequence, record) in std::mem::take(&mut route.in_flight) {
            let identity = ReplayIdentity {
                origin: self.origin,
                sequence,
            };
            let spilled = self.spill_locked(route, partition, identity, &record);
            route.rerouted.insert(sequence, spilled);
        }
    }

    /// Waits for a spilled record's sync; takes it off the backlog if it failed.
    async fn settle_spill(
        &self,
        partition: Partition,
        pending: PendingAppend,
        len: u64,
    ) -> Result<Offset, AppendError> {
        match pending.durable().await {
            Ok(offset) => {
                self.metrics.records.inc();
                self.metrics.bytes.inc_by(len);
                Ok(offset)
            }
            Err(error) => {
                self.forget_backlog(partition, 1, len);
                Err(error)
            }
        }
    }

    /// Takes `records` of `bytes` off a partition's backlog: forwarded, or never written.
    fn forget_backlog(&self, partition: Partition, records: u64, bytes: u64) {
        // What the partition gives back: `bytes`, or all it still counts once its backlog is
        // empty, since a backlog found at start is counted by its segments' size, an upper bound
        // the records' own sizes never add up to.
        let freed = match self.route(partition) {
            Ok(mut route) => {
                route.backlog_records = route.backlog_records.saturating_sub(records);
                let before = route.backlog_bytes;
                route.backlog_bytes = if route.backlog_records == 0 {
                    0
                } else {
                    before.saturating_sub(bytes)
                };
                before - route.backlog_bytes
            }
            Err(_) => bytes,
        };
        let _ = self
            .backlog_records
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(records))
            });
        let _ = self
            .usage_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(freed))
            });
        self.show_backlog();
    }

    fn show_backlog(&self) {
        self.metrics
            .backlog_records
            .set(gauge_value(self.backlog_records.load(Ordering::Acquire)));
        self.metrics
            .usage_bytes
            .set(gauge_value(self.usage_bytes.load(Ordering::Acquire)));
    }
}

/// Where a record went once its partition's lock was released.
enum Step {
    Direct {
        sequence: u64,
        ack: crate::kafka::PendingAck,
    },
    Spilled(PendingAppend),
}

/// Waits for where a record went once its partition's lock was released, and settles the
/// bookkeeping: a direct record Kafka did not acknowledge is answered from the spill (where
/// [`Shared::reroute`] copied it); a copy of one Kafka did store still settles the backlog.
async fn settle(
    shared: Arc<Shared>,
    partition: Partition,
    step: Step,
    spilled_len: u64,
) -> Result<Appended, AppendError> {
    match step {
        Step::Spilled(pending) => shared
            .settle_spill(partition, pending, spilled_len)
            .await
            .map(Appended::Spill),
        Step::Direct { sequence, ack } => {
            let outcome = ack.acknowledged().await;
            let rerouted = {
                let mut route = shared.route(partition)?;
                match &outcome {
                    Ok(_) => {
                        shared.saturation_ended();
                        route.in_flight.remove(&sequence);
                    }
                    Err(AppendError::Unavailable(reason)) => {
                        shared.kafka_failed(reason);
                        shared.reroute(&mut route, partition);
                    }
                    Err(_) => {
                        route.in_flight.remove(&sequence);
                    }
                }
                route.rerouted.remove(&sequence)
            };
            match (outcome, rerouted) {
                (Ok(offset), None) => Ok(Appended::Queue(offset)),
                (Ok(offset), Some(Ok(pending))) => {
                    // Stored in Kafka after all; the spill's copy is a second one that the
                    // consumer drops. Its sync still settles the backlog count.
                    let _ = shared.settle_spill(partition, pending, spilled_len).await;
                    Ok(Appended::Queue(offset))
                }
                (Ok(offset), Some(Err(_))) => Ok(Appended::Queue(offset)),
                (Err(_), Some(Ok(pending))) => shared
                    .settle_spill(partition, pending, spilled_len)
                    .await
                    .map(Appended::Spill),
                (Err(_), Some(Err(spill_error))) => Err(spill_error),
                (Err(error), None) => Err(error),
            }
        }
    }
}

#[async_trait]
impl QueueProducer for SpillingProducer {
    fn partitions(&self) -> u32 {
        self.shared.kafka.partitions()
    }

    async fn append(&self, partition: Partition, record: Bytes) -> Result<Offset, AppendError> {
        match self.append_or_spill(partition, record).await? {
            Appended::Queue(offset) | Appended::Spill(offset) => Ok(offset),
        }
    }

    async fn append_or_spill(
        &self,
        partition: Partition,
        record: Bytes,
    ) -> Result<Appended, AppendError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(AppendError::Closed);
        }
        let shared = &self.shared;
        let spilled_len = record::envelope_len(&record);
        let step = {
            let mut route = shared.route(partition)?;
            let sequence = route.next_sequence;
            let identity = ReplayIdentity {
                origin: shared.origin,
                sequence,
            };
            let mut direct = None;
            if route.backlog_records == 0 && shared.circuit_closed() {
                match shared.kafka.enqueue(partition, &record, Some(identity)) {
                    Ok(ack) => direct = Some(ack),
                    Err(AppendError::Saturated) if !shared.saturated_too_long() => {
                        return Err(AppendError::Saturated);
                    }
                    Err(AppendError::Saturated) => {
                        shared.kafka_failed("Kafka's buffer stayed full");
                    }
                    Err(AppendError::Unavailable(reason)) => shared.kafka_failed(&reason),
                    Err(other) => return Err(other),
                }
            }
            route.next_sequence += 1;
            match direct {
                Some(ack) => {
                    route.in_flight.insert(sequence, record);
                    Step::Direct { sequence, ack }
                }
                None => {
                    shared.reroute(&mut route, partition);
                    Step::Spilled(shared.spill_locked(&mut route, partition, identity, &record)?)
                }
            }
        };
        FinishOnDrop::new(settle(self.shared.clone(), partition, step, spilled_len)).await
    }

    fn readiness(&self) -> Result<(), String> {
        if self.closed.load(Ordering::Acquire) {
            return Err("shutting down".into());
        }
        let shared = &self.shared;
        if shared.circuit_closed() && shared.kafka.readiness().is_ok() {
            return Ok(());
        }
        let used = shared.usage_bytes.load(Ordering::Acquire);
        if used >= shared.max_bytes {
            return Err(format!(
                "Kafka cannot take records ({}) and the spill is full ({used} of {} bytes)",
                shared.breaker().last_failure,
                shared.max_bytes
            ));
        }
        shared
            .spill
            .readiness()
            .map_err(|reason| format!("Kafka cannot take records and the spill fails: {reason}"))
    }

    async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let deadline = Instant::now() + self.drain_timeout;
        let mut left = self.backlog_records();
        if left > 0 {
            tracing::info!(records = left, timeout = ?self.drain_timeout, "forwarding the spill before exiting");
        }
        while left > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            left = self.backlog_records();
        }
        self.stop_forwarder.cancel();
        let forwarder = self.forwarder.lock().ok().and_then(|mut f| f.take());
        if let Some(forwarder) = forwarder {
            let _ = forwarder.await;
        }
        let left = self.backlog_records();
        if left > 0 {
            tracing::warn!(
                records = left,
                "spill not fully forwarded; the rest stays on the volume for the next process"
            );
        } else {
            tracing::info!("spill empty");
        }
        self.shared.spill.close().await;
        self.shared.kafka.close().await;
        self.shared.forward_kafka.close().await;
    }
}
