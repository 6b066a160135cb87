//! One conformance suite, run against both backends: the file queue on a temporary directory,
//! and Kafka on a real broker. The Kafka half needs `KAFKA_BOOTSTRAP` (printed by
//! `hack/kafka.sh up`); `make test` starts the broker and runs it with `--include-ignored`.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use metricstream_backend::file::{FileConsumer, FileProducer, FileQueueConfig, FileQueueMetrics};
use metricstream_backend::kafka::{
    KafkaConsumer, KafkaMetrics, KafkaProducer, KafkaSettings, ProducerTuning, admin,
};
use metricstream_backend::{Offset, Partition, PollLimits, QueueConsumer, QueueProducer};

#[async_trait]
trait Backend: Send + Sync {
    async fn producer(&self, partitions: u32) -> Box<dyn QueueProducer>;
    async fn consumer(&self, group: &str, partitions: u32) -> Box<dyn QueueConsumer>;
    /// Grows the partition count to `partitions` the way an operator would.
    async fn grow(&self, partitions: u32);
}

struct FileBackend {
    dir: tempfile::TempDir,
}

#[async_trait]
impl Backend for FileBackend {
    async fn producer(&self, partitions: u32) -> Box<dyn QueueProducer> {
        let mut config = FileQueueConfig::new(self.dir.path(), partitions);
        config.segment_bytes = 4096;
        Box::new(
            FileProducer::open(config, FileQueueMetrics::default())
                .await
                .expect("open file producer"),
        )
    }

    async fn consumer(&self, group: &str, partitions: u32) -> Box<dyn QueueConsumer> {
        Box::new(
            FileConsumer::open(
                self.dir.path(),
                partitions,
                group,
                FileQueueMetrics::default(),
            )
            .await
            .expect("open file consumer"),
        )
    }

    async fn grow(&self, partitions: u32) {
        // Opening a producer with more partitions grows the queue.
        self.producer(partitions).await.close().await;
    }
}

struct KafkaBackend {
    brokers: String,
    topic: String,
}

impl KafkaBackend {
    async fn new(test: &str, partitions: u32) -> Self {
        let brokers = std::env::var("KAFKA_BOOTSTRAP").expect(
            "KAFKA_BOOTSTRAP is not set: start a broker with `hack/kafka.sh up` (make test does)",
        );
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let backend = Self {
            brokers,
            topic: format!("conformance-{test}-{nanos}"),
        };
        admin::ensure_topic(&backend.settings(partitions), 1, &[])
            .await
            .expect("create topic");
        backend
    }

    fn settings(&self, partitions: u32) -> KafkaSettings {
        KafkaSettings {
            brokers: self.brokers.clone(),
            topic: self.topic.clone(),
            partitions,
            client_id: "conformance".into(),
            security: Default::default(),
            extra: Vec::new(),
        }
    }
}

#[async_trait]
impl Backend for KafkaBackend {
    async fn producer(&self, partitions: u32) -> Box<dyn QueueProducer> {
        Box::new(
            KafkaProducer::open(
                self.settings(partitions),
                ProducerTuning::default(),
                KafkaMetrics::default(),
            )
            .await
            .expect("open kafka producer"),
        )
    }

    async fn consumer(&self, group: &str, partitions: u32) -> Box<dyn QueueConsumer> {
        Box::new(
            KafkaConsumer::open(&self.settings(partitions), group, KafkaMetrics::default())
                .expect("open kafka consumer"),
        )
    }

    async fn grow(&self, partitions: u32) {
        admin::ensure_topic(&self.settings(partitions), 1, &[])
            .await
            .expect("grow topic");
    }
}

fn body(partition: u32, i: u64) -> Bytes {
    Bytes::from(format!("p{partition}-r{i}"))
}

/// Polls and commits until `expected` records arrived; returns them per partition in order.
async fn drain(
    consumer: &mut dyn QueueConsumer,
    expected: usize,
) -> BTreeMap<Partition, Vec<(Offset, Bytes)>> {
    let mut seen: BTreeMap<Partition, Vec<(Offset, Bytes)>> = BTreeMap::new();
    let mut count = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while count < expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {count} of {expected} records arrived"
        );
        let poll = consumer
            .poll(PollLimits::records(500), Duration::from_millis(200))
            .await
            .expect("poll");
        let mut next = BTreeMap::new();
        for record in poll.records {
            next.insert(record.partition, record.offset.next());
            seen.entry(record.partition)
                .or_default()
                .push((record.offset, record.payload));
            count += 1;
        }
        consumer
            .commit(&next.into_iter().collect::<Vec<_>>())
            .await
            .expect("commit");
    }
    seen
}

/// Appends `per_partition` records to each partition; returns the acknowledged offsets.
async fn fill(
    producer: &dyn QueueProducer,
    partitions: std::ops::Range<u32>,
    from: u64,
    per_partition: u64,
) -> BTreeMap<Partition, Vec<Offset>> {
    let mut acked: BTreeMap<Partition, Vec<Offset>> = BTreeMap::new();
    for i in from..from + per_partition {
        for partition in partitions.clone() {
            let offset = producer
                .append(Partition(partition), body(partition, i))
                .await
                .expect("append acknowledged");
            acked.entry(Partition(partition)).or_default().push(offset);
        }
    }
    acked
}

async fn append_read_commit_resume(backend: &dyn Backend) {
    let producer = backend.producer(3).await;
    let acked = fill(producer.as_ref(), 0..3, 0, 20).await;
    for offsets in acked.values() {
        let consecutive: Vec<Offset> = (0..20).map(Offset).collect();
        assert_eq!(
            offsets, &consecutive,
            "offsets within a partition are consecutive from 0"
        );
    }

    let mut consumer = backend.consumer("resume", 3).await;
    let mut read = 0;
    let mut first_half: BTreeMap<Partition, Offset> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    // Read everything, but commit only up to offset 10 of each partition.
    while read < 60 {
        assert!(tokio::time::Instant::now() < deadline, "read {read} of 60");
        let poll = consumer
            .poll(PollLimits::records(500), Duration::from_millis(200))
            .await
            .expect("poll");
        read += poll.records.len();
        for record in poll.records {
            if record.offset.0 < 10 {
                first_half.insert(record.partition, record.offset.next());
            }
        }
        consumer
            .commit(&first_half.clone().into_iter().collect::<Vec<_>>())
            .await
            .expect("commit");
    }
    consumer.close().await;

    let mut resumed = backend.consumer("resume", 3).await;
    let seen = drain(resumed.as_mut(), 30).await;
    for partition in 0..3 {
        let records = &seen[&Partition(partition)];
        let offsets: Vec<u64> = records.iter().map(|(o, _)| o.0).collect();
        assert_eq!(
            offsets,
            (10..20).collect::<Vec<_>>(),
            "partition {partition} resumes at 10, in order"
        );
        for (offset, payload) in records {
            assert_eq!(payload, &body(partition, offset.0));
        }
    }
    resumed.close().await;
    producer.close().await;
}

async fn order_within_a_partition_under_concurrency(backend: &dyn Backend) {
    let producer = std::sync::Arc::new(backend.producer(1).await);
    // Concurrent appends: each task appends in sequence, so its own records must come back
    // in its order, interleaved with the others'.
    let mut tasks = Vec::new();
    for task in 0..8u64 {
        let producer = producer.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25u64 {
                producer
                    .append(Partition(0), Bytes::from(format!("t{task}-{i:03}")))
                    .await
                    .expect("append");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let mut consumer = backend.consumer("order", 1).await;
    let seen = drain(consumer.as_mut(), 200).await;
    let records = &seen[&Partition(0)];
    let offsets: Vec<u64> = records.iter().map(|(o, _)| o.0).collect();
    assert_eq!(offsets, (0..200).collect::<Vec<_>>());
    for task in 0..8u64 {
        let prefix = format!("t{task}-");
        let mine: Vec<&Bytes> = records
            .iter()
            .map(|(_, b)| b)
            .filter(|b| b.starts_with(prefix.as_bytes()))
            .collect();
        let expected: Vec<Bytes> = (0..25u64)
            .map(|i| Bytes::from(format!("t{task}-{i:03}")))
            .collect();
        assert_eq!(
            mine,
            expected.iter().collect::<Vec<_>>(),
            "task {task}'s order"
        );
    }
    consumer.close().await;
    producer.close().await;
}

async fn restart_continues_offsets(backend: &dyn Backend) {
    let producer = backend.producer(2).await;
    fill(producer.as_ref(), 0..2, 0, 5).await;
    producer.close().await;
    let producer = backend.producer(2).await;
    let acked = fill(producer.as_ref(), 0..2, 5, 5).await;
    for offsets in acked.values() {
        assert_eq!(offsets, &(5..10).map(Offset).collect::<Vec<_>>());
    }
    producer.close().await;
    let mut consumer = backend.consumer("restart", 2).await;
    let seen = drain(consumer.as_mut(), 20).await;
    for partition in 0..2 {
        let bodies: Vec<Bytes> = seen[&Partition(partition)]
            .iter()
            .map(|(_, b)| b.clone())
            .collect();
        assert_eq!(
            bodies,
            (0..10).map(|i| body(partition, i)).collect::<Vec<_>>()
        );
    }
    consumer.close().await;
}

async fn growing_partitions_reaches_producers_and_consumers(backend: &dyn Backend) {
    let producer = backend.producer(2).await;
    fill(producer.as_ref(), 0..2, 0, 5).await;
    producer.close().await;
    backend.grow(4).await;
    let producer = backend.producer(4).await;
    assert_eq!(producer.partitions(), 4);
    let acked = fill(producer.as_ref(), 2..4, 0, 5).await;
    for offsets in acked.values() {
        assert_eq!(offsets, &(0..5).map(Offset).collect::<Vec<_>>());
    }
    producer.close().await;
    let mut consumer = backend.consumer("grow", 4).await;
    let seen = drain(consumer.as_mut(), 20).await;
    assert_eq!(seen.len(), 4, "every partition, old and new, is read");
    consumer.close().await;
}

/// A poll stops once it holds `max_bytes` of payload, and still returns a record larger than
/// that on its own, so a batch's memory is bounded whatever its records hold.
async fn polls_are_bounded_by_payload_bytes(backend: &dyn Backend) {
    let producer = backend.producer(1).await;
    let record = Bytes::from(vec![b'x'; 1000]);
    for _ in 0..20 {
        producer
            .append(Partition(0), record.clone())
            .await
            .expect("append acknowledged");
    }
    producer.close().await;
    let mut consumer = backend.consumer("bytes", 1).await;
    let limits = PollLimits {
        max_records: 1000,
        max_bytes: 2500,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut sizes = Vec::new();
    let mut read = 0;
    while read < 20 {
        assert!(tokio::time::Instant::now() < deadline, "read {read} of 20");
        let poll = consumer
            .poll(limits, Duration::from_millis(500))
            .await
            .expect("poll");
        if poll.records.is_empty() {
            continue;
        }
        read += poll.records.len();
        sizes.push(poll.records.len());
        let next = poll
            .records
            .iter()
            .map(|r| r.offset.next())
            .max()
            .expect("records");
        consumer
            .commit(&[(Partition(0), next)])
            .await
            .expect("commit");
    }
    assert!(
        sizes.iter().all(|&size| size <= 3),
        "a 2,500-byte poll returned more than three 1,000-byte records: {sizes:?}"
    );
    let tiny = PollLimits {
        max_records: 1000,
        max_bytes: 1,
    };
    let producer = backend.producer(1).await;
    producer
        .append(Partition(0), record.clone())
        .await
        .expect("append acknowledged");
    producer.close().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the large record never came"
        );
        let poll = consumer
            .poll(tiny, Duration::from_millis(500))
            .await
            .expect("poll");
        if !poll.records.is_empty() {
            assert_eq!(poll.records.len(), 1);
            assert_eq!(poll.records[0].payload, record);
            break;
        }
    }
    consumer.close().await;
}

macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        mod file_backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let backend = FileBackend { dir: tempfile::tempdir().expect("tempdir") };
                    super::$scenario(&backend).await;
                }
            )*
        }
        mod kafka_backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "needs a Kafka broker: KAFKA_BOOTSTRAP from hack/kafka.sh up (make test runs it)"]
                async fn $scenario() {
                    let backend = KafkaBackend::new(stringify!($scenario), 4).await;
                    super::$scenario(&backend).await;
                }
            )*
        }
    };
}

conformance!(
    append_read_commit_resume,
    order_within_a_partition_under_concurrency,
    restart_continues_offsets,
    growing_partitions_reaches_producers_and_consumers,
    polls_are_bounded_by_payload_bytes,
);
