//! The file queue against real files: append/read/commit, group commit under concurrency,
//! torn-tail recovery at every byte of a record, segment roll, retention, several producers and
//! consumers on one directory.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use metricstream_backend::file::{
    Durability, FileConsumer, FileProducer, FileQueueConfig, FileQueueError, FileQueueMetrics,
    Retention,
};
use metricstream_backend::{
    AppendError, Offset, Partition, PollLimits, QueueConsumer, QueueProducer,
};

fn config(root: &Path, partitions: u32) -> FileQueueConfig {
    FileQueueConfig::new(root, partitions)
}

fn payload(tag: &str, i: u64) -> Bytes {
    Bytes::from(format!("{tag}-{i:08}"))
}

/// Reads every record the group can currently see, committing as it goes.
async fn drain(consumer: &mut FileConsumer, expected: usize) -> Vec<(u32, u64, Bytes)> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen.len() < expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "drained only {} of {expected} records",
            seen.len()
        );
        let poll = consumer
            .poll(PollLimits::records(1000), Duration::from_millis(100))
            .await
            .expect("poll");
        let mut last: BTreeMap<Partition, Offset> = BTreeMap::new();
        for record in poll.records {
            last.insert(record.partition, record.offset.next());
            seen.push((record.partition.0, record.offset.0, record.payload));
        }
        let positions: Vec<_> = last.into_iter().collect();
        consumer.commit(&positions).await.expect("commit");
    }
    seen
}

fn segment_files(root: &Path, partition: u32) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = fs::read_dir(root.join("partitions").join(format!("{partition:04}")))
        .expect("partition dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_records_are_read_back_in_order_with_consecutive_offsets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let producer = FileProducer::open(config(dir.path(), 2), FileQueueMetrics::default())
        .await
        .expect("open");
    for i in 0..50 {
        let offset = producer
            .append(Partition((i % 2) as u32), payload("r", i))
            .await
            .expect("append");
        assert_eq!(offset, Offset(i / 2));
    }
    producer.close().await;

    let mut consumer = FileConsumer::open(dir.path(), 2, "g", FileQueueMetrics::default())
        .await
        .expect("consumer");
    let seen = drain(&mut consumer, 50).await;
    for partition in 0..2u32 {
        let records: Vec<_> = seen.iter().filter(|(p, _, _)| *p == partition).collect();
        assert_eq!(records.len(), 25);
        for (k, (_, offset, body)) in records.iter().enumerate() {
            assert_eq!(*offset, k as u64);
            assert_eq!(*body, payload("r", k as u64 * 2 + partition as u64));
        }
    }
    // Nothing is returned twice.
    let again = consumer
        .poll(PollLimits::records(1000), Duration::from_millis(50))
        .await
        .expect("poll");
    assert!(again.records.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_fsyncs_and_get_unique_offsets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics = FileQueueMetrics::default();
    let producer = Arc::new(
        FileProducer::open(config(dir.path(), 1), metrics.clone())
            .await
            .expect("open"),
    );
    let mut tasks = Vec::new();
    for client in 0..50u64 {
        let producer = producer.clone();
        tasks.push(tokio::spawn(async move {
            let mut offsets = Vec::new();
            for i in 0..20u64 {
                let offset = producer
                    .append(Partition(0), payload("c", client * 1000 + i))
                    .await
                    .expect("append");
                offsets.push(offset.0);
            }
            offsets
        }));
    }
    let mut all = BTreeSet::new();
    for task in tasks {
        for offset in task.await.expect("task") {
            assert!(all.insert(offset), "offset {offset} handed out twice");
        }
    }
    assert_eq!(all, (0..1000).collect::<BTreeSet<_>>());
    let mut text = String::new();
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    let fsyncs: f64 = text
        .lines()
        .find(|l| l.starts_with("metricstream_queue_fsync_seconds_count"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .expect("fsync count");
    assert!(
        fsyncs < 1000.0,
        "group commit should share fsyncs between concurrent appends, saw {fsyncs} for 1000 records"
    );
    producer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durability_always_syncs_every_append_on_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics = FileQueueMetrics::default();
    let mut cfg = config(dir.path(), 1);
    cfg.durability = Durability::Always;
    let producer = Arc::new(
        FileProducer::open(cfg, metrics.clone())
            .await
            .expect("open"),
    );
    let mut tasks = Vec::new();
    for i in 0..40u64 {
        let producer = producer.clone();
        tasks.push(tokio::spawn(async move {
            producer.append(Partition(0), payload("a", i)).await
        }));
    }
    for task in tasks {
        task.await.expect("task").expect("append");
    }
    assert_eq!(metrics.fsync_seconds_count(), 40);
    producer.close().await;
}

/// Torn-tail recovery at every byte offset of the last record: the complete records survive,
/// the torn one is cut off, and the next append continues at the right offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_cuts_a_torn_tail_at_every_byte_of_a_record() {
    let pristine = tempfile::tempdir().expect("tempdir");
    let producer = FileProducer::open(config(pristine.path(), 1), FileQueueMetrics::default())
        .await
        .expect("open");
    for i in 0..3 {
        producer
            .append(Partition(0), payload("keep", i))
            .await
            .expect("append");
    }
    producer.close().await;
    let segment = segment_files(pristine.path(), 0).remove(0);
    let complete_len = fs::metadata(&segment).expect("meta").len();
    let producer = FileProducer::open(config(pristine.path(), 1), FileQueueMetrics::default())
        .await
        .expect("open");
    producer
        .append(Partition(0), payload("torn", 3))
        .await
        .expect("append");
    producer.close().await;
    let full = fs::read(&segment).expect("read");
    let record_len = full.len() as u64 - complete_len;

    for cut in complete_len..full.len() as u64 {
        let copy = tempfile::tempdir().expect("tempdir");
        copy_tree(pristine.path(), copy.path());
        let copied_segment = segment_files(copy.path(), 0).remove(0);
        fs::write(&copied_segment, &full[..cut as usize]).expect("cut");

        let producer = FileProducer::open(config(copy.path(), 1), FileQueueMetrics::default())
            .await
            .expect("recover");
        assert_eq!(
            fs::metadata(&copied_segment).expect("meta").len(),
            complete_len,
            "cut at byte {} of {record_len}",
            cut - complete_len
        );
        let next = producer
            .append(Partition(0), payload("after", 3))
            .await
            .expect("append after recovery");
        assert_eq!(next, Offset(3), "cut at byte {}", cut - complete_len);
        producer.close().await;

        let mut consumer = FileConsumer::open(copy.path(), 1, "g", FileQueueMetrics::default())
            .await
            .expect("consumer");
        let seen = drain(&mut consumer, 4).await;
        let bodies: Vec<_> = seen.iter().map(|(_, _, b)| b.clone()).collect();
        assert_eq!(
            bodies,
            vec![
                payload("keep", 0),
                payload("keep", 1),
                payload("keep", 2),
                payload("after", 3)
            ]
        );
        consumer.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_the_last_record_is_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let producer = FileProducer::open(config(dir.path(), 1), FileQueueMetrics::default())
        .await
        .expect("open");
    producer
        .append(Partition(0), payload("x", 0))
        .await
        .expect("append");
    producer.close().await;
    let segment = segment_files(dir.path(), 0).remove(0);
    let good_len = fs::metadata(&segment).expect("meta").len();
    let mut file = OpenOptions::new()
        .append(true)
        .open(&segment)
        .expect("open");
    file.write_all(&[0xAB; 100]).expect("garbage");
    file.write_all(&[0; 4096]).expect("zeros");
    drop(file);
    let metrics = FileQueueMetrics::default();
    let producer = FileProducer::open(config(dir.path(), 1), metrics.clone())
        .await
        .expect("recover");
    assert_eq!(fs::metadata(&segment).expect("meta").len(), good_len);
    assert_eq!(
        producer
            .append(Partition(0), payload("x", 1))
            .await
            .expect("append"),
        Offset(1)
    );
    producer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_roll_and_readers_follow_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), 1);
    cfg.segment_bytes = 4096;
    let producer = FileProducer::open(cfg.clone(), FileQueueMetrics::default())
        .await
        .expect("open");
    for i in 0..500 {
        producer
            .append(Partition(0), payload("roll", i))
            .await
            .expect("append");
    }
    producer.close().await;
    assert!(
        segment_files(dir.path(), 0).len() > 3,
        "expected several segments"
    );

    // A restart continues the numbering in the newest segment.
    let producer = FileProducer::open(cfg, FileQueueMetrics::default())
        .await
        .expect("reopen");
    assert_eq!(
        producer
            .append(Partition(0), payload("roll", 500))
            .await
            .expect("append"),
        Offset(500)
    );
    producer.close().await;

    let mut consumer = FileConsumer::open(dir.path(), 1, "g", FileQueueMetrics::default())
        .await
        .expect("consumer");
    let seen = drain(&mut consumer, 501).await;
    let offsets: Vec<u64> = seen.iter().map(|(_, o, _)| *o).collect();
    assert_eq!(offsets, (0..501).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_resumes_from_the_committed_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), 1);
    cfg.segment_bytes = 4096;
    let producer = FileProducer::open(cfg, FileQueueMetrics::default())
        .await
        .expect("open");
    for i in 0..300 {
        producer
            .append(Partition(0), payload("c", i))
            .await
            .expect("append");
    }
    producer.close().await;
    let mut consumer = FileConsumer::open(dir.path(), 1, "g", FileQueueMetrics::default())
        .await
        .expect("consumer");
    let poll = consumer
        .poll(PollLimits::records(120), Duration::from_millis(500))
        .await
        .expect("poll");
    assert_eq!(poll.records.len(), 120);
    // Commit only the first 100 of the 120 read: a restart must resume at 100.
    consumer
        .commit(&[(Partition(0), Offset(100))])
        .await
        .expect("commit");
    consumer.close().await;

    let mut consumer = FileConsumer::open(dir.path(), 1, "g", FileQueueMetrics::default())
        .await
        .expect("consumer");
    let seen = drain(&mut consumer, 200).await;
    assert_eq!(seen.first().map(|(_, o, _)| *o), Some(100));
    assert_eq!(seen.last().map(|(_, o, _)| *o), Some(299));
    assert_eq!(seen.len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_consumed_segments_and_only_the_hard_cap_drops_unread_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), 1);
    cfg.segment_bytes = 4096;
    cfg.retention = Retention {
        consumed_age: Duration::ZERO,
        consumed_bytes: None,
        hard_cap_bytes: None,
    };
    let metrics = FileQueueMetrics::default();
    let producer = FileProducer::open(cfg.clone(), metrics.clone())
        .await
        .expect("open");
    for i in 0..1000 {
        producer
            .append(Partition(0), payload("keep", i))
            .await
            .expect("append");
    }
    // No group exists yet: nothing counts as consumed, nothing is deleted.
    let before = segment_files(dir.path(), 0).len();
    assert!(before > 3);
    assert_eq!(metrics.segments_deleted_count(), 0);

    let mut consumer = FileConsumer::open(dir.path(), 1, "g", FileQueueMetrics::default())
        .await
        .expect("consumer");
    drain(&mut consumer, 1000).await;
    // Enough appends to roll again, which runs retention.
    for i in 1000..1500 {
        producer
            .append(Partition(0), payload("keep", i))
            .await
            .expect("append");
    }
    producer.close().await;
    let after = segment_files(dir.path(), 0).len();
    assert!(
        after < before,
        "consumed segments should be deleted: {before} before, {after} after"
    );
    assert_eq!(metrics.dropped_unconsumed_count(), 0);

    // A reader that committed everything still reads the rest without error.
    let seen = drain(&mut consumer, 500).await;
    assert_eq!(seen.first().map(|(_, o, _)| *o), Some(1000));
    consumer.close().await;

    // Now a hard cap far below the unread backlog: unread segments go, and are counted.
    cfg.retention.hard_cap_bytes = Some(8192);
    let metrics = FileQueueMetrics::default();
    let producer = FileProducer::open(cfg, metrics.clone())
        .await
        .expect("open");
    for i in 1500..3000 {
        producer
            .append(Partition(0), payload("drop", i))
            .await
            .expect("append");
    }
    producer.close().await;
    assert!(metrics.dropped_unconsumed_count() > 0);
    let total: u64 = segment_files(dir.path(), 0)
        .iter()
        .map(|p| fs::metadata(p).expect("meta").len())
        .sum();
    assert!(total <= 8192 + 4096 + 64, "partition holds {total} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_producers_on_one_directory_interleave_without_losing_or_reusing_offsets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), 1);
    cfg.segment_bytes = 8192;
    let a = Arc::new(
        FileProducer::open(cfg.clone(), FileQueueMetrics::default())
            .await
            .expect("a"),
    );
    let b = Arc::new(
        FileProducer::open(cfg, FileQueueMetrics::default())
            .await
            .expect("b"),
    );
    let mut tasks = Vec::new();
    for (name, producer) in [("a", a.clone()), ("b", b.clone())] {
        for worker in 0..4u64 {
            let producer = producer.clone();
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..100u64 {
                    let body = payload(name, worker * 1000 + i);
                    let offset = producer
                        .append(Partition(0), body.clone())
                        .await
                        .expect("append");
                    acked.push((offset.0, body));
                }
                acked
            }));
        }
    }
    let mut acked = BTreeMap::new();
    for task in tasks {
        for (offset, body) in task.await.expect("task") {
            assert!(
                acked.insert(offset, body).is_none(),
                "offset {offset} acknowledged twice"
            );
        }
    }
    a.close().await;
    b.close().await;
    assert_eq!(acked.len(), 800);
    let mut consumer = FileConsumer::open(dir.path(), 1, "g", FileQueueMetrics::default())
        .await
        .expect("consumer");
    let seen = drain(&mut consumer, 800).await;
    for (_, offset, body) in seen {
        assert_eq!(acked.get(&offset), Some(&body), "offset {offset}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_of_one_group_split_partitions_and_take_over_a_departed_members_share() {
    let dir = tempfile::tempdir().expect("tempdir");
    let producer = FileProducer::open(config(dir.path(), 4), FileQueueMetrics::default())
        .await
        .expect("open");
    for i in 0..400u64 {
        producer
            .append(Partition((i % 4) as u32), payload("p", i))
            .await
            .expect("append");
    }
    let mut first = FileConsumer::open(dir.path(), 4, "g", FileQueueMetrics::default())
        .await
        .expect("first");
    let mut second = FileConsumer::open(dir.path(), 4, "g", FileQueueMetrics::default())
        .await
        .expect("second");
    // Let both settle: the first may grab everything before the second joins, then release.
    let mut seen = BTreeSet::new();
    for _ in 0..30 {
        for consumer in [&mut first, &mut second] {
            let poll = consumer
                .poll(PollLimits::records(10), Duration::from_millis(20))
                .await
                .expect("poll");
            let mut last = BTreeMap::new();
            for record in poll.records {
                assert!(
                    seen.insert((record.partition, record.offset)),
                    "duplicate {record:?}"
                );
                last.insert(record.partition, record.offset.next());
            }
            consumer
                .commit(&last.into_iter().collect::<Vec<_>>())
                .await
                .expect("commit");
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let a: BTreeSet<_> = first.assignment().into_iter().collect();
    let b: BTreeSet<_> = second.assignment().into_iter().collect();
    assert_eq!(a.len(), 2, "first owns {a:?}");
    assert_eq!(b.len(), 2, "second owns {b:?}");
    assert!(a.is_disjoint(&b));

    // The first leaves (as a process would by dying: its locks go with it), and more arrives.
    drop(first);
    for i in 400..800u64 {
        producer
            .append(Partition((i % 4) as u32), payload("p", i))
            .await
            .expect("append");
    }
    let rest = drain(&mut second, 800 - seen.len()).await;
    for (p, o, _) in rest {
        assert!(seen.insert((Partition(p), Offset(o))), "duplicate {p}/{o}");
    }
    assert_eq!(seen.len(), 800);
    assert_eq!(second.assignment().len(), 4);
    producer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_grow_but_never_shrink() {
    let dir = tempfile::tempdir().expect("tempdir");
    FileProducer::open(config(dir.path(), 2), FileQueueMetrics::default())
        .await
        .expect("open")
        .close()
        .await;
    let grown = FileProducer::open(config(dir.path(), 4), FileQueueMetrics::default())
        .await
        .expect("grow");
    assert_eq!(grown.partitions(), 4);
    grown.close().await;
    match FileProducer::open(config(dir.path(), 3), FileQueueMetrics::default()).await {
        Err(FileQueueError::Shrink {
            existing,
            requested,
            ..
        }) => assert_eq!((existing, requested), (4, 3)),
        Err(other) => panic!("expected a shrink error, got {other}"),
        Ok(_) => panic!("shrinking must be refused"),
    }
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            fs::create_dir_all(&target).expect("mkdir");
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Found by the `file_recovery` fuzz target: an empty record used to be written as an empty
/// frame, which is the file queue's seal, so the log ended there for every reader and the next
/// recovery cut off everything acknowledged after it ("data after the seal"). Empty records are
/// refused instead, and the log stays whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_record_is_refused_and_the_log_stays_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let producer = FileProducer::open(config(dir.path(), 1), FileQueueMetrics::default())
        .await
        .expect("open");
    let first = producer
        .append(Partition(0), payload("x", 0))
        .await
        .expect("append");
    assert_eq!(first, Offset(0));
    let refused = producer.append(Partition(0), Bytes::new()).await;
    assert!(
        matches!(refused, Err(AppendError::EmptyRecord)),
        "an empty record was not refused: {refused:?}"
    );
    let second = producer
        .append(Partition(0), payload("x", 1))
        .await
        .expect("append after the refusal");
    assert_eq!(second, Offset(1));
    producer.close().await;

    // A restart recovers the log whole and continues it.
    let producer = FileProducer::open(config(dir.path(), 1), FileQueueMetrics::default())
        .await
        .expect("reopen");
    let third = producer
        .append(Partition(0), payload("x", 2))
        .await
        .expect("append after the restart");
    assert_eq!(third, Offset(2));
    producer.close().await;

    let mut consumer = FileConsumer::open(dir.path(), 1, "g", FileQueueMetrics::default())
        .await
        .expect("consumer");
    let read = drain(&mut consumer, 3).await;
    let expected: Vec<_> = (0..3).map(|i| (0, i, payload("x", i))).collect();
    assert_eq!(read, expected);
    consumer.close().await;
}

/// Found while writing the `file_recovery` fuzz target (which reads in this order too): a
/// consumer that had read up to a torn tail (a writer died mid-write) kept the torn file's
/// length as "synced"; once a restarted producer cut the tail off and appended less than it had
/// held, every poll failed reading past the end of the file, until enough new data arrived. It
/// now follows the file when it shrinks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_reads_on_after_a_restarted_producer_cuts_a_torn_tail_it_had_seen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let producer = FileProducer::open(config(dir.path(), 1), FileQueueMetrics::default())
        .await
        .expect("open");
    for i in 0..2 {
        producer
            .append(Partition(0), payload("x", i))
            .await
            .expect("append");
    }
    producer.close().await;
    // A writer that died half way through a large batch.
    let segment = segment_files(dir.path(), 0).remove(0);
    let mut file = OpenOptions::new()
        .append(true)
        .open(&segment)
        .expect("open segment");
    file.write_all(&[0xAB; 500]).expect("torn tail");
    drop(file);

    let mut consumer = FileConsumer::open(dir.path(), 1, "g", FileQueueMetrics::default())
        .await
        .expect("consumer");
    let before = drain(&mut consumer, 2).await;
    assert_eq!(before.len(), 2);

    // The ingest restarts: recovery cuts the torn tail, and one short record follows.
    let producer = FileProducer::open(config(dir.path(), 1), FileQueueMetrics::default())
        .await
        .expect("reopen");
    assert_eq!(
        producer
            .append(Partition(0), payload("x", 2))
            .await
            .expect("append after recovery"),
        Offset(2)
    );
    producer.close().await;

    let after = drain(&mut consumer, 1).await;
    assert_eq!(after, vec![(0, 2, payload("x", 2))]);
    consumer.close().await;
}
