//! The Kafka [`QueueConsumer`]: a consumer-group member with manual, synchronous commits.
//!
//! Offsets are committed only when the caller says the records are durable downstream
//! (at-least-once). Rebalances are reported to the caller through [`Poll`]; records fetched for
//! a partition revoked during the same poll are dropped, since their new owner reads them again
//! from the committed offset.
//!
//! Second copies of records replayed from an ingest's spill ([`crate::replay`]) are dropped
//! here, before the caller sees them, and counted. Each owned partition's marks travel in the
//! metadata of its offset commits, so a restart or the partition's next owner decides the same
//! (`replay` does the I/O, `replay_state` keeps the marks and has the argument).

mod replay;
mod replay_state;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::TopicPartitionList;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;

use super::security::AccessWatch;
use super::{
    KafkaBackendError, KafkaMetrics, KafkaSettings, access_failure, admin, apply_extra, base_config,
};
use crate::model::{Offset, Partition};
use crate::queue::{ConsumeError, ConsumedRecord, Poll, PollLimits, QueueConsumer};
use replay::{Fetched, header_identity};
use replay_state::ReplayState;

/// Rebalance events and statistics gathered by librdkafka's callbacks.
#[derive(Default)]
struct Shared {
    assigned: Vec<Partition>,
    revoked: Vec<Partition>,
    owned: BTreeSet<Partition>,
    lag: HashMap<i32, i64>,
    /// The last refusal (authentication, TLS, authorization) librdkafka reported, with its
    /// details, which the error a poll returns lacks.
    refused: Option<String>,
}

struct GroupContext {
    topic: String,
    shared: Arc<Mutex<Shared>>,
    metrics: KafkaMetrics,
}

impl GroupContext {
    fn partitions_of(&self, list: &TopicPartitionList) -> Vec<Partition> {
        list.elements_for_topic(&self.topic)
            .iter()
            .map(|element| Partition(element.partition().max(0) as u32))
            .collect()
    }
}

impl ClientContext for GroupContext {
    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        if let Ok(mut shared) = self.shared.lock() {
            shared.lag.clear();
            for (id, partition) in &topic.partitions {
                if *id >= 0 && partition.consumer_lag >= 0 {
                    shared.lag.insert(*id, partition.consumer_lag);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if let Some(refused) = access_failure(&error, reason)
            && let Ok(mut shared) = self.shared.lock()
        {
            shared.refused = Some(refused);
        }
        tracing::warn!(%error, %reason, "librdkafka consumer error");
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let revoked = self.partitions_of(list);
            tracing::info!(?revoked, "partitions revoked");
            if let Ok(mut shared) = self.shared.lock() {
                for partition in &revoked {
                    shared.owned.remove(partition);
                }
                shared.revoked.extend(revoked);
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.metrics.rebalances.inc();
        match rebalance {
            Rebalance::Assign(list) => {
                let assigned = self.partitions_of(list);
                tracing::info!(?assigned, "partitions assigned");
                if let Ok(mut shared) = self.shared.lock() {
                    shared.owned.extend(assigned.iter().copied());
                    shared.assigned.extend(assigned);
                }
            }
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance failed"),
            Rebalance::Revoke(_) => {}
        }
    }
}

pub struct KafkaConsumer {
    consumer: Option<Arc<StreamConsumer<GroupContext>>>,
    topic: String,
    shared: Arc<Mutex<Shared>>,
    metrics: KafkaMetrics,
    /// Per owned partition: its replay marks, or the records held back until they are loaded.
    replay: BTreeMap<Partition, ReplayState>,
    /// A commit the group coordinator has not answered within the wait (see `commit_plans`).
    unanswered_commit: Option<tokio::task::JoinHandle<rdkafka::error::KafkaResult<()>>>,
}

/// How long [`KafkaConsumer::connect`] waits for the cluster to answer its access checks.
const ACCESS_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Bounds what librdkafka prefetches. Its defaults (100,000 messages per partition, 1 MiB of
/// compressed records per partition per fetch) let one fetch of a backlog of small records
/// queue the whole backlog: ~300 bytes of bookkeeping per message beside the decompressed
/// batches, 77 MiB of RSS for 145,000 one-metric records (heaptrack: `rd_kafka_op_new_fetch_msg`
/// and `rd_kafka_msgset_reader_decompress`). Bounded here it peaks at ~34 MiB, and drains no
/// slower: a batch (`PollLimits`, 8 MiB by default) still finds a full queue. The short backoff
/// keeps a drained queue from idling: librdkafka's default waits 1 s before fetching again once
/// a threshold was reached. `--kafka-property` overrides any of these.
fn bound_prefetch(config: &mut rdkafka::ClientConfig) {
    config
        .set("max.partition.fetch.bytes", "262144")
        .set("queued.min.messages", "5000")
        .set("queued.max.messages.kbytes", "8192")
        .set("fetch.queue.backoff.ms", "10");
}

impl KafkaConsumer {
    /// [`open`](Self::open), after checking that the cluster lets this client in: TLS, SASL
    /// login, Describe on the topic and on `group` (an offset fetch). A refusal fails at once
    /// with [`KafkaBackendError::Access`]; an unreachable cluster or a missing topic only warns,
    /// since the consumer waits for them as it runs.
    pub async fn connect(
        settings: &KafkaSettings,
        group: &str,
        metrics: KafkaMetrics,
    ) -> Result<Self, KafkaBackendError> {
        match admin::topic_partitions_within(settings, ACCESS_CHECK_TIMEOUT).await {
            Ok(Some(_)) => check_group_access(settings, group).await?,
            Ok(None) => tracing::warn!(topic = %settings.topic, "the topic does not exist (yet)"),
            Err(KafkaBackendError::Access(refused)) => {
                return Err(KafkaBackendError::Access(refused));
            }
            Err(error) => {
                tracing::warn!(%error, "cannot reach Kafka yet; the consumer keeps trying")
            }
        }
        Self::open(settings, group, metrics)
    }

    /// Joins `group` and subscribes to `settings.topic`. A new group starts at the earliest
    /// offset, so nothing written before the first consumer started is skipped.
    pub fn open(
        settings: &KafkaSettings,
        group: &str,
        metrics: KafkaMetrics,
    ) -> Result<Self, KafkaBackendError> {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let mut config = base_config(settings);
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("isolation.level", "read_committed")
            // A member killed without leaving is replaced after this long.
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "2000")
            .set("statistics.interval.ms", "2000");
        bound_prefetch(&mut config);
        apply_extra(&mut config, settings);
        let consumer: StreamConsumer<GroupContext> = config.create_with_context(GroupContext {
            topic: settings.topic.clone(),
            shared: shared.clone(),
            metrics: metrics.clone(),
        })?;
        consumer.subscribe(&[&settings.topic])?;
        Ok(Self {
            consumer: Some(Arc::new(consumer)),
            topic: settings.topic.clone(),
            shared,
            metrics,
            replay: BTreeMap::new(),
            unanswered_commit: None,
        })
    }

    /// A poll's error, with librdkafka's details when the cluster refused this client.
    fn poll_error(&self, error: KafkaError) -> ConsumeError {
        let refused = access_failure(&error, "").map(|short| {
            self.shared
                .lock()
                .ok()
                .and_then(|shared| shared.refused.clone())
                .unwrap_or(short)
        });
        match refused {
            Some(refused) => ConsumeError::Unavailable(format!("Kafka refused access: {refused}")),
            None => ConsumeError::Unavailable(error.to_string()),
        }
    }

    fn consumer(&self) -> Result<Arc<StreamConsumer<GroupContext>>, ConsumeError> {
        self.consumer
            .clone()
            .ok_or_else(|| ConsumeError::Other("the consumer is closed".into()))
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Fetches the group's committed offset of partition 0: it needs the group coordinator
/// (FindCoordinator) and OffsetFetch, both refused without the group ACL. librdkafka reports a
/// refused FindCoordinator as an error event, not as the fetch's result, so the events are
/// served between short fetch attempts.
async fn check_group_access(
    settings: &KafkaSettings,
    group: &str,
) -> Result<(), KafkaBackendError> {
    let mut config = base_config(settings);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false");
    apply_extra(&mut config, settings);
    let consumer: BaseConsumer<AccessWatch> = config.create_with_context(AccessWatch::default())?;
    let mut list = TopicPartitionList::new();
    list.add_partition(&settings.topic, 0);
    let group = group.to_owned();
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + ACCESS_CHECK_TIMEOUT;
        loop {
            let fetched = consumer.committed_offsets(list.clone(), admin::METADATA_ATTEMPT);
            if let Some(Err(error)) = consumer.poll(Duration::from_millis(100))
                && let Some(refused) = access_failure(&error, "")
            {
                consumer.context().record(refused);
            }
            if let Ok(list) = &fetched {
                for element in list.elements() {
                    if let Err(error) = element.error()
                        && let Some(refused) =
                            access_failure(&error, &format!("group {group}: {error}"))
                    {
                        consumer.context().record(refused);
                    }
                }
            }
            if let Some(refused) = consumer.context().refused() {
                return Err(KafkaBackendError::Access(format!(
                    "{refused} (group {group})"
                )));
            }
            match fetched {
                Ok(_) => return Ok(()),
                Err(_) if Instant::now() < deadline => continue,
                Err(error) => {
                    tracing::warn!(%error, group, "cannot check the consumer group yet");
                    return Ok(());
                }
            }
        }
    })
    .await
    .map_err(|error| KafkaBackendError::Config(format!("group check task failed: {error}")))?
}

#[async_trait]
impl QueueConsumer for KafkaConsumer {
    async fn poll(&mut self, limits: PollLimits, max_wait: Duration) -> Result<Poll, ConsumeError> {
        let consumer = self.consumer()?;
        self.commit_dropped_tails().await;
        let deadline = Instant::now() + max_wait;
        let mut fetched: Vec<Fetched> = Vec::new();
        let mut bytes = 0usize;
        let mut last_error = None;
        let mut revocations_seen = self.shared().revoked.len();
        while fetched.len() < limits.max_records.max(1) && bytes < limits.max_bytes.max(1) {
            // Wait up to the deadline for the first record, then take only what is ready.
            let wait = if fetched.is_empty() {
                deadline.saturating_duration_since(Instant::now())
            } else {
                Duration::from_millis(1)
            };
            let message = match tokio::time::timeout(wait, consumer.recv()).await {
                Ok(Ok(message)) => message,
                Ok(Err(error)) => {
                    // Error events pile up while the cluster is unreachable. Returning on the
                    // first would serve them one per poll (and per retry back-off) long after
                    // the cluster is back; drain them within this poll instead.
                    last_error = Some(error);
                    if Instant::now() >= deadline {
                        break;
                    }
                    continue;
                }
                Err(_elapsed) => break,
            };
            // Rebalance callbacks run inside `recv`. What was read before of a partition revoked
            // there is its next owner's to read again (from the group's commit), even when that
            // owner is this member again; the message just received was fetched after it.
            let revoked_now = self
                .shared()
                .revoked
                .get(revocations_seen..)
                .map(<[Partition]>::to_vec)
                .unwrap_or_default();
            if !revoked_now.is_empty() {
                fetched.retain(|f| !revoked_now.contains(&f.record.partition));
                revocations_seen += revoked_now.len();
            }
            if message.topic() != self.topic {
                continue;
            }
            let payload = message.payload().unwrap_or_default();
            bytes += payload.len();
            fetched.push(Fetched {
                record: ConsumedRecord {
                    partition: Partition(message.partition().max(0) as u32),
                    offset: Offset(message.offset().max(0) as u64),
                    payload: Bytes::copy_from_slice(payload),
                },
                identity: header_identity(&message),
            });
        }
        if fetched.is_empty()
            && let Some(error) = last_error
        {
            return Err(self.poll_error(error));
        }
        let mut poll = Poll::default();
        let owned = {
            let mut shared = self.shared();
            poll.revoked = std::mem::take(&mut shared.revoked);
            poll.assigned = std::mem::take(&mut shared.assigned);
            shared.owned.clone()
        };
        fetched.retain(|f| owned.contains(&f.record.partition));
        self.track_assignment(&poll.revoked, &poll.assigned, &owned);
        self.load_marks(&consumer, &mut fetched).await;
        let records = self.drop_second_copies(fetched);
        self.metrics.consumed_records.inc_by(records.len() as u64);
        poll.records = records;
        Ok(poll)
    }

    async fn commit(&mut self, positions: &[(Partition, Offset)]) -> Result<(), ConsumeError> {
        if positions.is_empty() {
            return Ok(());
        }
        let owned = self.shared().owned.clone();
        let mut plans = Vec::new();
        for (partition, next) in positions {
            // A partition revoked since the poll belongs to another member now; it re-reads
            // from the last commit, so skipping it duplicates at most, never loses. Records are
            // returned only from partitions whose marks are loaded: no other has any to commit.
            if !owned.contains(partition) {
                continue;
            }
            if let Some(ReplayState::Loaded(filter)) = self.replay.get(partition)
                && let Some(plan) = filter.commit_for(*next)
            {
                plans.push((*partition, plan));
            }
        }
        plans.extend(self.dropped_tails(positions));
        self.commit_plans(plans).await
    }

    fn assignment(&self) -> Vec<Partition> {
        self.shared
            .lock()
            .map(|shared| shared.owned.iter().copied().collect())
            .unwrap_or_default()
    }

    fn lag(&self) -> Vec<(Partition, u64)> {
        self.shared
            .lock()
            .map(|shared| {
                shared
                    .owned
                    .iter()
                    .map(|p| {
                        (
                            *p,
                            shared.lag.get(&(p.0 as i32)).copied().unwrap_or(0).max(0) as u64,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn close(&mut self) {
        if let Some(consumer) = self.consumer.take() {
            // Leaving the group (and dropping the client) blocks in librdkafka.
            let left = tokio::time::timeout(
                Duration::from_secs(15),
                tokio::task::spawn_blocking(move || {
                    consumer.unsubscribe();
                    drop(consumer);
                }),
            )
            .await;
            if left.is_err() {
                tracing::warn!("leaving the consumer group timed out");
            }
        }
    }
}
