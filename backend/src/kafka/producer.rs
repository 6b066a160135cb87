//! The Kafka [`QueueProducer`]: one shared idempotent producer per process.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use tokio_util::sync::CancellationToken;

use super::{
    KafkaBackendError, KafkaMetrics, KafkaSettings, ProducerTuning, access_failure, apply_extra,
    base_config,
};
use crate::model::{Offset, Partition};
use crate::queue::{AppendError, QueueProducer};
use crate::replay::{REPLAY_HEADER, ReplayIdentity};

/// How often the health monitor looks at the producer.
const MONITOR_INTERVAL: Duration = Duration::from_millis(250);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What librdkafka tells us about the cluster, shared with the producer's callbacks.
struct Health {
    /// Why the cluster is considered unreachable, and since when.
    down: Mutex<Option<(Instant, String)>>,
    /// librdkafka raised a fatal error: this producer instance can never deliver again.
    fatal: AtomicBool,
    /// Appends awaiting an acknowledgement.
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` of the last acknowledgement, or of the moment records
    /// started waiting when none were in flight.
    last_progress_ms: AtomicU64,
    epoch: Instant,
    metrics: KafkaMetrics,
    /// `true` while the cluster is considered unreachable; appends waiting for an
    /// acknowledgement give up as soon as it turns `true`.
    unreachable: tokio::sync::watch::Sender<bool>,
}

impl Health {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn mark_down(&self, reason: String) {
        if let Ok(mut down) = self.down.lock()
            && down.is_none()
        {
            tracing::warn!(%reason, "Kafka considered unreachable; appends fail fast until it answers");
            self.metrics.cluster_unreachable.set(1);
            *down = Some((Instant::now(), reason));
            self.unreachable.send_replace(true);
        }
    }

    fn mark_up(&self) {
        if let Ok(mut down) = self.down.lock()
            && let Some((since, _)) = down.take()
        {
            tracing::info!(down_for = ?since.elapsed(), "Kafka reachable again");
            self.metrics.cluster_unreachable.set(0);
            self.last_progress_ms
                .store(self.now_ms(), Ordering::Release);
            self.unreachable.send_replace(false);
        }
    }

    fn down_reason(&self) -> Option<String> {
        self.down.lock().ok().and_then(|down| {
            down.as_ref()
                .map(|(since, reason)| format!("{reason} ({}s ago)", since.elapsed().as_secs()))
        })
    }
}

struct ProducerContext {
    health: Arc<Health>,
}

impl ClientContext for ProducerContext {
    fn error(&self, error: KafkaError, reason: &str) {
        // Refused credentials or TLS trust: like an unreachable cluster, appends fail fast and
        // readiness says why, until a metadata probe gets through again.
        if let Some(refused) = access_failure(&error, reason) {
            self.health.mark_down(refused);
            return;
        }
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AllBrokersDown) => {
                self.health.mark_down(format!("all brokers down: {reason}"));
            }
            Some(RDKafkaErrorCode::Fatal) => {
                tracing::error!(%reason, "fatal producer error; the producer will be rebuilt");
                self.health.fatal.store(true, Ordering::Release);
            }
            _ => tracing::warn!(%error, %reason, "librdkafka producer error"),
        }
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel::*;
        match level {
            Emerg | Alert | Critical | Error => tracing::error!(fac, "librdkafka: {message}"),
            Warning => tracing::warn!(fac, "librdkafka: {message}"),
            _ => tracing::debug!(fac, "librdkafka: {message}"),
        }
    }
}

type Client = FutureProducer<ProducerContext>;

pub struct KafkaProducer {
    settings: KafkaSettings,
    tuning: ProducerTuning,
    producer: Arc<RwLock<Client>>,
    health: Arc<Health>,
    closed: AtomicBool,
    stop_monitor: CancellationToken,
    metrics: KafkaMetrics,
}

fn build(
    settings: &KafkaSettings,
    tuning: &ProducerTuning,
    health: &Arc<Health>,
) -> Result<Client, KafkaBackendError> {
    let mut config = base_config(settings);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set(
            "message.timeout.ms",
            tuning.message_timeout.as_millis().to_string(),
        )
        .set(
            "queue.buffering.max.kbytes",
            tuning.max_buffer_kbytes.to_string(),
        )
        .set("linger.ms", tuning.linger.as_millis().to_string())
        .set("compression.type", &tuning.compression)
        .set("socket.keepalive.enable", "true")
        .set("reconnect.backoff.max.ms", "1000");
    apply_extra(&mut config, settings);
    Ok(config.create_with_context(ProducerContext {
        health: health.clone(),
    })?)
}

impl KafkaProducer {
    /// Connects to the cluster and checks that the topic exists with at least
    /// `settings.partitions` partitions (see [`super::admin::ensure_topic`] to create it).
    pub async fn open(
        settings: KafkaSettings,
        tuning: ProducerTuning,
        metrics: KafkaMetrics,
    ) -> Result<Self, KafkaBackendError> {
        match super::admin::topic_partitions(&settings).await? {
            Some(found) if found >= settings.partitions => {}
            Some(found) => {
                return Err(KafkaBackendError::Topic {
                    topic: settings.topic.clone(),
                    reason: format!(
                        "has {found} partitions but {} are configured; grow the topic first",
                        settings.partitions
                    ),
                });
            }
            None => {
                return Err(KafkaBackendError::Topic {
                    topic: settings.topic.clone(),
                    reason: "does not exist; create it (or let the service create it)".into(),
                });
            }
        }
        Self::open_unchecked(settings, tuning, metrics)
    }

    /// Starts the producer without asking the cluster anything: for a caller that must start
    /// while the cluster is unreachable (the ingest with a spill), and learns about the topic
    /// from its first appends instead.
    pub fn open_unchecked(
        settings: KafkaSettings,
        tuning: ProducerTuning,
        metrics: KafkaMetrics,
    ) -> Result<Self, KafkaBackendError> {
        if !(1..=crate::queue::MAX_PARTITIONS).contains(&settings.partitions) {
            return Err(KafkaBackendError::Config(format!(
                "partitions must be in 1..={}, got {}",
                crate::queue::MAX_PARTITIONS,
                settings.partitions
            )));
        }
        let health = Arc::new(Health {
            down: Mutex::new(None),
            fatal: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            last_progress_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            metrics: metrics.clone(),
            unreachable: tokio::sync::watch::Sender::new(false),
        });
        let producer = Arc::new(RwLock::new(build(&settings, &tuning, &health)?));
        let this = Self {
            settings,
            tuning,
            producer,
            health,
            closed: AtomicBool::new(false),
            stop_monitor: CancellationToken::new(),
            metrics,
        };
        tokio::spawn(monitor(
            this.settings.clone(),
            this.tuning.clone(),
            this.producer.clone(),
            this.health.clone(),
            this.stop_monitor.clone(),
        ));
        Ok(this)
    }

    /// Hands one record to librdkafka without waiting: the record is queued for `partition`
    /// behind every record handed over before it (the spill relies on that order), and
    /// [`PendingAck::acknowledged`] waits for Kafka's answer. With an `identity`, the record
    /// carries it in the [`REPLAY_HEADER`] header. Fails at once while the cluster is known to be
    /// unreachable or the buffer is full.
    pub fn enqueue(
        &self,
        partition: Partition,
        record: &[u8],
        identity: Option<ReplayIdentity>,
    ) -> Result<PendingAck, AppendError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(AppendError::Closed);
        }
        if partition.0 >= self.settings.partitions {
            return Err(AppendError::NoSuchPartition {
                partition,
                partitions: self.settings.partitions,
            });
        }
        if let Some(reason) = self.health.down_reason() {
            self.metrics.delivery_errors.inc();
            return Err(AppendError::Unavailable(format!(
                "Kafka unreachable: {reason}"
            )));
        }
        let client = self.client()?;
        let identity_bytes = identity.map(ReplayIdentity::to_bytes);
        let mut message = FutureRecord::<(), [u8]>::to(&self.settings.topic)
            .partition(partition.0 as i32)
            .payload(record);
        if let Some(bytes) = &identity_bytes {
            message = message.headers(OwnedHeaders::new().insert(Header {
                key: REPLAY_HEADER,
                value: Some(bytes.as_slice()),
            }));
        }
        let delivery =
            client
                .send_result(message)
                .map_err(|(error, _)| match error.rdkafka_error_code() {
                    Some(RDKafkaErrorCode::QueueFull) => {
                        self.metrics.queue_full.inc();
                        AppendError::Saturated
                    }
                    Some(RDKafkaErrorCode::MessageSizeTooLarge) => AppendError::TooLarge {
                        size: record.len(),
                        limit: 1_000_000,
                    },
                    _ => {
                        self.metrics.delivery_errors.inc();
                        AppendError::Unavailable(error.to_string())
                    }
                })?;
        if self.health.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
            self.health
                .last_progress_ms
                .store(self.health.now_ms(), Ordering::Release);
        }
        Ok(PendingAck {
            delivery,
            in_flight: InFlight(self.health.clone()),
            metrics: self.metrics.clone(),
            ack_timeout: self.tuning.ack_timeout,
        })
    }

    fn client(&self) -> Result<Client, AppendError> {
        self.producer
            .read()
            .map(|producer| producer.clone())
            .map_err(|_| AppendError::Unavailable("producer lock poisoned".into()))
    }
}

/// A record handed to librdkafka, waiting for Kafka's acknowledgement.
pub struct PendingAck {
    delivery: DeliveryFuture,
    in_flight: InFlight,
    metrics: KafkaMetrics,
    ack_timeout: Duration,
}

/// Counts a record in [`Health::in_flight`] until its answer is in, or until it is dropped
/// unanswered (which would otherwise look like a stall forever).
struct InFlight(Arc<Health>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl PendingAck {
    /// The record's offset once Kafka acknowledged it. Gives up as soon as the cluster is known
    /// to be unreachable, or after the ack timeout: the record may still be delivered later
    /// (librdkafka retries it until `message.timeout.ms`), so an error here means "not known to
    /// be stored", never "not stored".
    pub async fn acknowledged(self) -> Result<Offset, AppendError> {
        let Self {
            delivery,
            in_flight,
            metrics,
            ack_timeout,
        } = self;
        let health = in_flight.0.clone();
        let mut unreachable = health.unreachable.subscribe();
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(ack_timeout, delivery) => Some(outcome),
            _ = unreachable.wait_for(|down| *down) => None,
        };
        drop(in_flight);
        let Some(outcome) = outcome else {
            metrics.delivery_errors.inc();
            let reason = health.down_reason().unwrap_or_default();
            return Err(AppendError::Unavailable(format!(
                "Kafka unreachable: {reason}"
            )));
        };
        match outcome {
            Ok(Ok(Ok(delivered))) => {
                health
                    .last_progress_ms
                    .store(health.now_ms(), Ordering::Release);
                metrics.acked_records.inc();
                Ok(Offset(delivered.offset.max(0) as u64))
            }
            Ok(Ok(Err((error, _)))) => {
                metrics.delivery_errors.inc();
                if matches!(error.rdkafka_error_code(), Some(RDKafkaErrorCode::Fatal)) {
                    health.fatal.store(true, Ordering::Release);
                }
                Err(AppendError::Unavailable(format!(
                    "delivery failed: {error}"
                )))
            }
            Ok(Err(_canceled)) => {
                metrics.delivery_errors.inc();
                Err(AppendError::Unavailable(
                    "the producer was replaced mid-delivery".into(),
                ))
            }
            Err(_elapsed) => {
                metrics.delivery_errors.inc();
                Err(AppendError::Unavailable(format!(
                    "no acknowledgement from Kafka within {ack_timeout:?}"
                )))
            }
        }
    }
}

/// Watches the producer: rebuilds it after a fatal error, marks the cluster unreachable when
/// acknowledgements stall, and probes metadata while it is unreachable to notice its return.
async fn monitor(
    settings: KafkaSettings,
    tuning: ProducerTuning,
    producer: Arc<RwLock<Client>>,
    health: Arc<Health>,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(MONITOR_INTERVAL);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if health.fatal.swap(false, Ordering::AcqRel) {
            match build(&settings, &tuning, &health) {
                Ok(fresh) => {
                    if let Ok(mut current) = producer.write() {
                        *current = fresh;
                    }
                    health.metrics.producer_rebuilds.inc();
                    tracing::info!("producer rebuilt after a fatal error");
                }
                Err(error) => {
                    tracing::error!(%error, "rebuilding the producer failed; retrying");
                    health.fatal.store(true, Ordering::Release);
                }
            }
        }
        let stalled_for = health
            .now_ms()
            .saturating_sub(health.last_progress_ms.load(Ordering::Acquire));
        if health.in_flight.load(Ordering::Acquire) > 0
            && stalled_for > tuning.stall_threshold.as_millis() as u64
        {
            health.mark_down(format!("no acknowledgement for {stalled_for} ms"));
        }
        if health.down.lock().map(|d| d.is_some()).unwrap_or(false) {
            let Ok(client) = producer.read().map(|p| p.clone()) else {
                continue;
            };
            let topic = settings.topic.clone();
            let probe = tokio::task::spawn_blocking(move || {
                client
                    .client()
                    .fetch_metadata(Some(&topic), PROBE_TIMEOUT)
                    .map(|metadata| {
                        metadata.topics().iter().any(|t| {
                            t.name() == topic
                                && t.error().is_none()
                                && !t.partitions().is_empty()
                                && t.partitions().iter().all(|p| p.leader() >= 0)
                        })
                    })
            })
            .await;
            if let Ok(Ok(true)) = probe {
                health.mark_up();
            }
        }
    }
}

#[async_trait]
impl QueueProducer for KafkaProducer {
    fn partitions(&self) -> u32 {
        self.settings.partitions
    }

    async fn append(&self, partition: Partition, record: Bytes) -> Result<Offset, AppendError> {
        self.enqueue(partition, &record, None)?.acknowledged().await
    }

    fn readiness(&self) -> Result<(), String> {
        if self.closed.load(Ordering::Acquire) {
            return Err("shutting down".into());
        }
        match self.health.down_reason() {
            Some(reason) => Err(format!("Kafka unreachable: {reason}")),
            None => Ok(()),
        }
    }

    async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.stop_monitor.cancel();
        let Ok(client) = self.client() else { return };
        let timeout = self.tuning.message_timeout;
        // flush blocks in librdkafka; keep it off the async workers.
        let flushed = tokio::task::spawn_blocking(move || client.flush(timeout)).await;
        match flushed {
            Ok(Ok(())) => tracing::info!("producer flushed"),
            Ok(Err(error)) => tracing::warn!(%error, "producer flush incomplete"),
            Err(error) => tracing::warn!(%error, "producer flush task failed"),
        }
    }
}
