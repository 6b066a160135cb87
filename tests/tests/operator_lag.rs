//! The operator's lag measurements ([`metricstream_operator::lag`]) against real components: the
//! real consumer binary on a file queue, and a real Kafka broker.
//!
//! The Kafka tests need `KAFKA_BOOTSTRAP` (printed by `hack/kafka.sh up`) and are `#[ignore]`d
//! without it; `make test` starts the broker and runs them with `--include-ignored`. Each uses
//! its own topic and group.

use std::time::{Duration, Instant};

use bytes::Bytes;
use metricstream_backend::codec;
use metricstream_backend::file::{FileConsumer, FileProducer, FileQueueConfig, FileQueueMetrics};
use metricstream_backend::kafka::{
    KafkaConsumer, KafkaMetrics, KafkaProducer, KafkaSecurity, KafkaSettings, ProducerTuning,
    admin::ensure_topic,
};
use metricstream_backend::model::{ClientId, Metric, MetricBatch, MetricKind, Offset, Partition};
use metricstream_backend::{PollLimits, QueueConsumer, QueueProducer};
use metricstream_operator::lag::{LagError, LagSource, LiveLagSource, PartitionLag, StreamLag};
use metricstream_tests::kafka::{bootstrap_from_env, unique_name};
use metricstream_tests::process::free_loopback_addr;
use metricstream_tests::{ServiceSpec, TestDir};

/// A record the consumer can decode: one metric of client `client`.
fn record(client: &str, index: usize) -> Bytes {
    Bytes::from(codec::encode(&MetricBatch {
        client: ClientId::new(client),
        metrics: vec![Metric {
            name: "lag_test".into(),
            value: index as f64,
            timestamp: Some(1_700_000_000_000 + index as i64),
            tags: Default::default(),
            kind: MetricKind::Untyped,
        }],
    }))
}

/// Appends `count` records to each `(partition, count)`.
async fn append(producer: &impl QueueProducer, counts: &[(u32, usize)]) {
    for &(partition, count) in counts {
        for index in 0..count {
            producer
                .append(Partition(partition), record("lag-client", index))
                .await
                .expect("append");
        }
    }
}

fn lag_of(per_partition: &[u64]) -> StreamLag {
    StreamLag::from_partitions(
        per_partition
            .iter()
            .enumerate()
            .map(|(partition, records)| PartitionLag {
                partition: partition as u32,
                records: *records,
            })
            .collect(),
    )
}

/// The real consumer on a file queue of 4 partitions holding 5, 3, 0 and 2 records, of which
/// the group committed 2 of partition 0 before the binary started (a consumer since gone). Its
/// sink is a remote-write store that does not listen, so it commits nothing more: the lag
/// stays put, and every partition — owned or not, empty or not — is in its `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_lag_reads_every_partition_off_the_real_consumer() {
    let dir = TestDir::new("operator-lag-file");
    let producer = FileProducer::open(
        FileQueueConfig::new(dir.data_dir(), 4),
        FileQueueMetrics::default(),
    )
    .await
    .expect("open the queue");
    append(&producer, &[(0, 5), (1, 3), (3, 2)]).await;
    producer.close().await;
    let mut earlier = FileConsumer::open(
        dir.data_dir(),
        4,
        "storage-writer",
        FileQueueMetrics::default(),
    )
    .await
    .expect("join the group");
    let mut assigned = Vec::new();
    while !assigned.contains(&Partition(0)) {
        let poll = earlier
            .poll(PollLimits::records(100), Duration::from_millis(200))
            .await
            .expect("poll");
        assigned.extend(poll.assigned);
    }
    earlier
        .commit(&[(Partition(0), Offset(2))])
        .await
        .expect("commit");
    earlier.close().await;

    let closed_store = free_loopback_addr();
    let consumer = ServiceSpec::consumer(&dir, "consumer")
        .env("METRICSTREAM_SINK", "remote-write")
        .env(
            "METRICSTREAM_SINK_URL",
            format!("http://{closed_store}/api/v1/write"),
        )
        .spawn();
    let source = LiveLagSource::new().expect("lag source");
    let urls = vec![consumer.admin_url("/metrics")];
    let expected = lag_of(&[3, 3, 0, 2]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let lag = loop {
        let lag = source.file_lag(&urls, "storage-writer", 4).await;
        if lag.as_ref().is_ok_and(|lag| *lag == expected) || Instant::now() > deadline {
            break lag;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(lag.expect("the lag"), expected);

    // A pod that does not answer is left out while another answers; a partition no pod
    // reports is an error, and so is no answer at all.
    let dead = format!("http://{}/metrics", free_loopback_addr());
    let both = vec![dead.clone(), urls[0].clone()];
    assert_eq!(
        source
            .file_lag(&both, "storage-writer", 4)
            .await
            .expect("lag"),
        expected
    );
    match source.file_lag(&urls, "storage-writer", 6).await {
        Err(LagError::MissingPartitions(missing)) => assert_eq!(missing, vec![4, 5]),
        other => panic!("expected partitions 4 and 5 missing, got {other:?}"),
    }
    match source.file_lag(&urls, "another-group", 4).await {
        Err(LagError::MissingPartitions(missing)) => assert_eq!(missing, vec![0, 1, 2, 3]),
        other => panic!("expected every partition missing, got {other:?}"),
    }
    let started = Instant::now();
    match source.file_lag(&[dead], "storage-writer", 4).await {
        Err(LagError::NoConsumerAnswered(_)) => {}
        other => panic!("expected no answer, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    consumer.kill();
}

fn kafka_settings(bootstrap: &str, topic: &str, partitions: u32) -> KafkaSettings {
    KafkaSettings {
        brokers: bootstrap.to_owned(),
        topic: topic.to_owned(),
        partitions,
        client_id: "operator-lag-test".into(),
        security: KafkaSecurity::default(),
        extra: Vec::new(),
    }
}

/// 10 records in partition 0 and 6 in partition 1 of a 3-partition topic; a live member of the
/// group commits 4 and 6 of them. The lag is 6, 0 and 0 (partition 2 is empty and was never
/// committed), and measuring it does not rebalance the member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kafka broker: KAFKA_BOOTSTRAP from hack/kafka.sh up (make test runs it)"]
async fn kafka_lag_is_ends_less_commits_without_joining_the_group() {
    let bootstrap = bootstrap_from_env();
    let topic = unique_name("operator-lag");
    let group = unique_name("operator-lag-group");
    let settings = kafka_settings(&bootstrap, &topic, 3);
    ensure_topic(&settings, 1, &[])
        .await
        .expect("create the topic");
    let producer = KafkaProducer::open(
        settings.clone(),
        ProducerTuning::default(),
        KafkaMetrics::default(),
    )
    .await
    .expect("producer");
    append(&producer, &[(0, 10), (1, 6)]).await;
    producer.close().await;

    let source = LiveLagSource::new().expect("lag source");
    let security = KafkaSecurity::default();
    // Before any member: nothing committed, everything lags.
    let lag = source
        .kafka_lag(&bootstrap, &topic, &group, &security)
        .await
        .expect("lag");
    assert_eq!(lag, lag_of(&[10, 6, 0]));

    let mut member =
        KafkaConsumer::open(&settings, &group, KafkaMetrics::default()).expect("member");
    let mut read = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while read < 16 {
        assert!(Instant::now() < deadline, "read only {read} of 16 records");
        let poll = member
            .poll(PollLimits::records(100), Duration::from_millis(500))
            .await
            .expect("poll");
        read += poll.records.len();
    }
    member
        .commit(&[(Partition(0), Offset(4)), (Partition(1), Offset(6))])
        .await
        .expect("commit");
    let assignment = member.assignment();
    assert_eq!(assignment.len(), 3, "{assignment:?}");

    let lag = source
        .kafka_lag(&bootstrap, &topic, &group, &security)
        .await
        .expect("lag");
    assert_eq!(lag, lag_of(&[6, 0, 0]));
    assert_eq!(lag.total, 6);

    // Had the measurement joined the group, the member would lose its partitions at its next
    // heartbeat (every 2 s): poll past a few.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(7) {
        let poll = member
            .poll(PollLimits::records(100), Duration::from_millis(500))
            .await
            .expect("poll");
        assert!(
            poll.revoked.is_empty() && poll.assigned.is_empty(),
            "the measurement rebalanced the group: {poll:?}"
        );
    }
    assert_eq!(member.assignment(), assignment);
    member.close().await;

    // A topic that does not exist is an error, not a lag of 0.
    match source
        .kafka_lag(&bootstrap, &unique_name("no-such-topic"), &group, &security)
        .await
    {
        Err(LagError::Kafka(error)) => {
            assert!(error.to_string().contains("does not exist"), "{error}")
        }
        other => panic!("expected a missing topic, got {other:?}"),
    }
}

/// A bootstrap address nobody listens on: an error within the timeout, never a figure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_lag_of_an_unreachable_cluster_is_an_error_within_the_timeout() {
    let source = LiveLagSource::with_timeouts(Duration::from_secs(3), Duration::from_secs(2))
        .expect("lag source");
    let closed = free_loopback_addr().to_string();
    let started = Instant::now();
    let lag = source
        .kafka_lag(&closed, "any-topic", "any-group", &KafkaSecurity::default())
        .await;
    let took = started.elapsed();
    match lag {
        Err(LagError::Kafka(error)) => println!("after {took:?}: {error}"),
        other => panic!("expected an error, got {other:?}"),
    }
    assert!(took < Duration::from_secs(6), "took {took:?}");
}
