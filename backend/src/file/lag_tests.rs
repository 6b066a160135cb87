//! The queue-wide lag against a real queue: records appended by the real producer, offsets
//! committed by the real consumer.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::registry::Registry;

use super::*;
use crate::file::{FileConsumer, FileProducer, FileQueueConfig, FileQueueMetrics};
use crate::model::{Offset, Partition};
use crate::queue::{PollLimits, QueueConsumer, QueueProducer};

/// A queue of `partitions` whose segments roll after a few records, so that the end is found
/// across segment rolls too.
async fn producer(root: &Path, partitions: u32) -> FileProducer {
    let mut config = FileQueueConfig::new(root, partitions);
    config.segment_bytes = 4096;
    FileProducer::open(config, FileQueueMetrics::default())
        .await
        .expect("open the producer")
}

async fn append(producer: &FileProducer, partition: u32, count: usize) {
    for i in 0..count {
        // 1 KiB records: four of them fill a segment.
        let record = Bytes::from(vec![b'a' + (i % 26) as u8; 1024]);
        producer
            .append(Partition(partition), record)
            .await
            .expect("append");
    }
}

/// Reads everything as group `group` and commits `commits` (partition, next offset), then leaves
/// the group: the partitions have no owner afterwards.
async fn consume_and_commit(root: &Path, partitions: u32, group: &str, commits: &[(u32, u64)]) {
    let mut consumer = FileConsumer::open(root, partitions, group, FileQueueMetrics::default())
        .await
        .expect("open the consumer");
    let mut seen = 0;
    for _ in 0..50 {
        let poll = consumer
            .poll(PollLimits::records(1000), Duration::from_millis(100))
            .await
            .expect("poll");
        seen += poll.records.len();
        if seen > 0 && poll.records.is_empty() {
            break;
        }
    }
    let positions: Vec<(Partition, Offset)> = commits
        .iter()
        .map(|(partition, next)| (Partition(*partition), Offset(*next)))
        .collect();
    consumer.commit(&positions).await.expect("commit");
    consumer.close().await;
}

fn lags(reader: &mut QueueLagReader) -> Vec<(u32, u64, u64, u64)> {
    reader
        .read_all()
        .expect("partition count")
        .into_iter()
        .map(|(partition, reading)| {
            let reading = reading.expect("reading");
            assert_eq!(reading.partition, partition);
            (
                partition,
                reading.end_offset,
                reading.committed,
                reading.lag,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_partition_has_its_lag_including_unowned_and_empty_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let producer = producer(dir.path(), 4).await;
    append(&producer, 0, 10).await;
    append(&producer, 1, 5).await;
    append(&producer, 3, 7).await;

    // The consumer commits part of partition 0, all of 1, nothing of 3; then it is gone, so no
    // member owns any partition.
    consume_and_commit(dir.path(), 4, "g", &[(0, 4), (1, 5)]).await;

    let mut reader = QueueLagReader::new(dir.path(), "g", 4);
    assert_eq!(
        lags(&mut reader),
        vec![(0, 10, 4, 6), (1, 5, 5, 0), (2, 0, 0, 0), (3, 7, 0, 7)]
    );

    // Further appends are found from where the last refresh stopped, across segment rolls.
    append(&producer, 0, 9).await;
    append(&producer, 2, 2).await;
    assert_eq!(
        lags(&mut reader),
        vec![(0, 19, 4, 15), (1, 5, 5, 0), (2, 2, 0, 2), (3, 7, 0, 7)]
    );

    // A reader started now, without the cursors, finds the same ends.
    let mut fresh = QueueLagReader::new(dir.path(), "g", 4);
    assert_eq!(lags(&mut fresh), lags(&mut reader));

    // A group that never committed lags by everything.
    let mut other = QueueLagReader::new(dir.path(), "other", 4);
    assert_eq!(
        lags(&mut other),
        vec![(0, 19, 0, 19), (1, 5, 0, 5), (2, 2, 0, 2), (3, 7, 0, 7)]
    );
    producer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_without_records_has_no_lag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let producer = producer(dir.path(), 3).await;
    let mut reader = QueueLagReader::new(dir.path(), "g", 3);
    assert_eq!(
        lags(&mut reader),
        vec![(0, 0, 0, 0), (1, 0, 0, 0), (2, 0, 0, 0)]
    );
    producer.close().await;

    // Not even created: the floor's partitions exist, empty.
    let missing = tempfile::tempdir().expect("tempdir");
    let mut reader = QueueLagReader::new(missing.path(), "g", 2);
    assert_eq!(lags(&mut reader), vec![(0, 0, 0, 0), (1, 0, 0, 0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_not_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let producer = producer(dir.path(), 1).await;
    append(&producer, 0, 2).await;
    producer.close().await;

    let partition = partition_dir(dir.path(), 0);
    let newest = segment::list_segments(&partition)
        .expect("segments")
        .last()
        .map(|(_, path)| path.clone())
        .expect("a segment");
    // Half a frame, as a writer that died mid-write leaves it.
    let mut torn = Vec::new();
    segment::put_record(&mut torn, 2, b"never completed");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&newest)
        .expect("open the segment");
    file.write_all(&torn[..torn.len() / 2]).expect("tear");

    let mut reader = QueueLagReader::new(dir.path(), "g", 1);
    assert_eq!(lags(&mut reader), vec![(0, 2, 0, 2)]);

    // The next writer cuts the torn tail and writes a whole record where it was.
    let producer = self::producer(dir.path(), 1).await;
    append(&producer, 0, 1).await;
    assert_eq!(lags(&mut reader), vec![(0, 3, 0, 3)]);
    producer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gauges_carry_every_partition_and_drop_unreadable_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let producer = producer(dir.path(), 2).await;
    append(&producer, 1, 3).await;
    producer.close().await;

    let metrics = QueueLagMetrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let mut reader = QueueLagReader::new(dir.path(), "g", 2);
    let readings = reader.read_all().expect("partition count");
    metrics.publish(reader.group(), &readings);
    let text = encode(&registry);
    for line in [
        r#"metricstream_queue_end_offset{partition="0"} 0"#,
        r#"metricstream_queue_end_offset{partition="1"} 3"#,
        r#"metricstream_queue_group_lag_records{group="g",partition="0"} 0"#,
        r#"metricstream_queue_group_lag_records{group="g",partition="1"} 3"#,
        r#"metricstream_queue_group_committed_offset{group="g",partition="1"} 0"#,
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }

    // A garbled committed offset: that partition's series go, none stays stale.
    std::fs::create_dir_all(dir.path().join("groups/g/offsets")).expect("mkdir");
    std::fs::write(dir.path().join("groups/g/offsets/0001"), "garbage").expect("garble");
    let readings = reader.read_all().expect("partition count");
    metrics.publish(reader.group(), &readings);
    let text = encode(&registry);
    assert!(
        !text.contains(r#"group_lag_records{group="g",partition="1"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"group_lag_records{group="g",partition="0"} 0"#),
        "{text}"
    );
    assert!(
        text.contains("metricstream_queue_lag_refresh_errors_total 1"),
        "{text}"
    );
}

fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("encode");
    text
}
