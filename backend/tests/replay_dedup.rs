//! The Kafka consumer drops second copies of replayed records ([`metricstream_backend::replay`])
//! on a real broker: across a consumer restart, across a rebalance to another member, and with
//! a tail of nothing but copies, which must still be committed past. Needs `KAFKA_BOOTSTRAP`
//! (printed by `hack/kafka.sh up`); `make test` starts the broker and runs it with
//! `--include-ignored`.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use metricstream_backend::kafka::{
    KafkaConsumer, KafkaMetrics, KafkaProducer, KafkaSettings, ProducerTuning, admin,
};
use metricstream_backend::replay::{REPLAY_HEADER, ReplayIdentity};
use metricstream_backend::{Offset, Partition, PollLimits, QueueConsumer, QueueProducer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

const ORIGIN_A: u64 = 0xa11c_e000_0000_0001;
const ORIGIN_B: u64 = 0xb0b0_0000_0000_0002;

fn settings(topic: &str, partitions: u32) -> KafkaSettings {
    KafkaSettings {
        brokers: std::env::var("KAFKA_BOOTSTRAP").expect(
            "KAFKA_BOOTSTRAP is not set: start a broker with `hack/kafka.sh up` (make test does)",
        ),
        topic: topic.to_owned(),
        partitions,
        client_id: "replay-dedup".into(),
        security: Default::default(),
        extra: Vec::new(),
    }
}

async fn new_topic(test: &str, partitions: u32) -> KafkaSettings {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let settings = settings(&format!("replay-{test}-{nanos}"), partitions);
    admin::ensure_topic(&settings, 1, &[])
        .await
        .expect("create topic");
    settings
}

/// What a test sends, and what must come out of the consumers: every record whose identity is
/// new in its partition (a plain record always is), in the order sent.
struct Script {
    producer: KafkaProducer,
    sent: HashSet<(Partition, u64, u64)>,
    expected: BTreeMap<Partition, Vec<Bytes>>,
    copies: u64,
}

impl Script {
    async fn new(settings: &KafkaSettings) -> Self {
        Self {
            producer: KafkaProducer::open(
                settings.clone(),
                ProducerTuning::default(),
                KafkaMetrics::default(),
            )
            .await
            .expect("open producer"),
            sent: HashSet::new(),
            expected: BTreeMap::new(),
            copies: 0,
        }
    }

    async fn plain(&mut self, partition: u32, tag: &str) {
        let payload = Bytes::from(format!("plain {tag}"));
        self.producer
            .append(Partition(partition), payload.clone())
            .await
            .expect("append");
        self.expected
            .entry(Partition(partition))
            .or_default()
            .push(payload);
    }

    /// Sends `origin`'s records `sequences` to `partition`; a copy's payload says which copy it
    /// is, so what comes out shows that the first copy was kept.
    async fn replayed(&mut self, partition: u32, origin: u64, sequences: std::ops::Range<u64>) {
        for sequence in sequences {
            let first = self.sent.insert((Partition(partition), origin, sequence));
            let payload = Bytes::from(format!(
                "{origin:x}/{sequence}{}",
                if first { "" } else { " copy" }
            ));
            self.producer
                .enqueue(
                    Partition(partition),
                    &payload,
                    Some(ReplayIdentity { origin, sequence }),
                )
                .expect("enqueue replayed")
                .acknowledged()
                .await
                .expect("append replayed");
            if first {
                self.expected
                    .entry(Partition(partition))
                    .or_default()
                    .push(payload);
            } else {
                self.copies += 1;
            }
        }
    }

    fn expected_records(&self) -> usize {
        self.expected.values().map(Vec::len).sum()
    }
}

/// Polls and commits, as the consume loop does (one past the last record returned, per
/// partition), until `records` records came and `metrics` counts `dropped` copies.
async fn consume(
    consumer: &mut KafkaConsumer,
    metrics: &KafkaMetrics,
    records: usize,
    dropped: u64,
    into: &mut BTreeMap<Partition, Vec<Bytes>>,
) {
    let mut received = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while received < records || metrics.replay_duplicates_dropped.get() < dropped {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{received} of {records} records and {} of {dropped} dropped copies",
            metrics.replay_duplicates_dropped.get()
        );
        received += poll_and_commit(consumer, into).await;
    }
    assert_eq!(received, records, "more records than expected");
}

async fn poll_and_commit(
    consumer: &mut KafkaConsumer,
    into: &mut BTreeMap<Partition, Vec<Bytes>>,
) -> usize {
    let poll = consumer
        .poll(PollLimits::records(7), Duration::from_millis(200))
        .await
        .expect("poll");
    let mut next: BTreeMap<Partition, Offset> = BTreeMap::new();
    let count = poll.records.len();
    for record in poll.records {
        next.insert(record.partition, record.offset.next());
        into.entry(record.partition)
            .or_default()
            .push(record.payload);
    }
    consumer
        .commit(&next.into_iter().collect::<Vec<_>>())
        .await
        .expect("commit");
    count
}

/// A record whose replay header is not an identity, which librdkafka alone can send.
async fn send_with_malformed_header(settings: &KafkaSettings, partition: u32, payload: &[u8]) {
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .create()
        .expect("raw producer");
    let record = FutureRecord::<(), [u8]>::to(&settings.topic)
        .partition(partition as i32)
        .payload(payload)
        .headers(OwnedHeaders::new().insert(Header {
            key: REPLAY_HEADER,
            value: Some(&b"not an identity"[..]),
        }));
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(error, _)| error)
        .expect("send with a malformed header");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kafka broker: KAFKA_BOOTSTRAP from hack/kafka.sh up (make test runs it)"]
async fn second_copies_are_dropped_across_a_restart_and_everything_else_comes_once_in_order() {
    let settings = new_topic("restart", 2).await;
    let mut script = Script::new(&settings).await;
    // Before the restart: origin A 0..50 with plain records and origin B's records between
    // them, then a replay of B 10..30 (10..24 are copies, read by the same consumer).
    for partition in 0..2 {
        for i in 0..50 {
            script.replayed(partition, ORIGIN_A, i..i + 1).await;
            if i % 5 == 0 {
                script.plain(partition, &format!("{partition}-{i}")).await;
            }
            if i % 2 == 0 {
                script.replayed(partition, ORIGIN_B, i / 2..i / 2 + 1).await;
            }
        }
        script.replayed(partition, ORIGIN_B, 10..30).await;
    }
    send_with_malformed_header(&settings, 0, b"malformed header").await;
    script
        .expected
        .entry(Partition(0))
        .or_default()
        .push(Bytes::from_static(b"malformed header"));
    let before_restart = (script.expected_records(), script.copies);

    let metrics = KafkaMetrics::default();
    let mut received = BTreeMap::new();
    let mut consumer =
        KafkaConsumer::open(&settings, "readers", metrics.clone()).expect("open consumer");
    consume(
        &mut consumer,
        &metrics,
        before_restart.0,
        before_restart.1,
        &mut received,
    )
    .await;
    consumer.close().await;

    // After the restart: A 40..60 again, as a forwarder that crashed before committing its
    // spill position sends it (40..49 are copies of records before the group's commit), plain
    // records, B 25..35; then partition 1 ends with nothing but copies (A 0..10).
    for partition in 0..2 {
        script.replayed(partition, ORIGIN_A, 40..60).await;
        script.plain(partition, &format!("{partition}-late")).await;
        script.replayed(partition, ORIGIN_B, 25..35).await;
    }
    script.replayed(1, ORIGIN_A, 0..10).await;
    let mut consumer =
        KafkaConsumer::open(&settings, "readers", metrics.clone()).expect("reopen consumer");
    consume(
        &mut consumer,
        &metrics,
        script.expected_records() - before_restart.0,
        script.copies,
        &mut received,
    )
    .await;
    // The poll after the tail of copies commits past it (nothing was returned to commit).
    poll_and_commit(&mut consumer, &mut received).await;
    consumer.close().await;
    script.producer.close().await;

    assert_eq!(
        received, script.expected,
        "exactly the first copies and every plain record, in order per partition"
    );
    assert_eq!(
        metrics.replay_duplicates_dropped.get(),
        script.copies,
        "every copy dropped and counted once"
    );
    assert_eq!(script.copies, 2 * (15 + 10 + 5) + 10);

    // Everything, the tail of copies included, is committed: a new member reads nothing.
    let metrics = KafkaMetrics::default();
    let mut consumer =
        KafkaConsumer::open(&settings, "readers", metrics.clone()).expect("reopen consumer");
    let mut late = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while consumer.assignment().len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "never assigned");
        poll_and_commit(&mut consumer, &mut late).await;
    }
    for _ in 0..10 {
        poll_and_commit(&mut consumer, &mut late).await;
    }
    consumer.close().await;
    assert!(late.is_empty(), "read again after a full commit: {late:?}");
    assert_eq!(
        metrics.replay_duplicates_dropped.get(),
        0,
        "the tail of copies was read again: its commit did not move past it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kafka broker: KAFKA_BOOTSTRAP from hack/kafka.sh up (make test runs it)"]
async fn the_marks_committed_by_one_member_drop_copies_for_the_member_that_takes_over() {
    let settings = new_topic("rebalance", 2).await;
    let mut script = Script::new(&settings).await;
    for partition in 0..2 {
        script.replayed(partition, ORIGIN_A, 0..20).await;
    }
    let first_metrics = KafkaMetrics::default();
    let mut first =
        KafkaConsumer::open(&settings, "members", first_metrics.clone()).expect("open first");
    let mut received = BTreeMap::new();
    consume(&mut first, &first_metrics, 40, 0, &mut received).await;
    assert_eq!(first.assignment().len(), 2, "the only member owns both");

    // A second member joins: each ends up with one partition, the second's marks loaded from
    // what the first committed.
    let second_metrics = KafkaMetrics::default();
    let mut second =
        KafkaConsumer::open(&settings, "members", second_metrics.clone()).expect("open second");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while first.assignment().len() != 1 || second.assignment().len() != 1 {
        assert!(tokio::time::Instant::now() < deadline, "never rebalanced");
        assert_eq!(poll_and_commit(&mut first, &mut received).await, 0);
        assert_eq!(poll_and_commit(&mut second, &mut received).await, 0);
    }

    for partition in 0..2 {
        script.replayed(partition, ORIGIN_A, 10..25).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut returned = 0;
    while returned < 10
        || first_metrics.replay_duplicates_dropped.get()
            + second_metrics.replay_duplicates_dropped.get()
            < 20
    {
        assert!(tokio::time::Instant::now() < deadline, "{returned} of 10");
        returned += poll_and_commit(&mut first, &mut received).await;
        returned += poll_and_commit(&mut second, &mut received).await;
    }
    first.close().await;
    second.close().await;
    script.producer.close().await;

    assert_eq!(received, script.expected);
    assert_eq!(
        (
            first_metrics.replay_duplicates_dropped.get(),
            second_metrics.replay_duplicates_dropped.get()
        ),
        (10, 10),
        "each member dropped the copies of its own partition"
    );
}
