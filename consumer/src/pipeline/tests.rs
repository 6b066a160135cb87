//! The consume loop's tests, run against the fakes of `fakes` and the real JSON Lines sink.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use metricstream_backend::file::PartitionLabel;
use metricstream_backend::{ConsumeError, Offset, PollLimits};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;

use super::fakes::*;
use super::*;
use crate::sink::{JsonlSink, SinkRecord};

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
async fn a_rate_limited_pipeline_writes_everything_once_and_in_order_but_slower() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shutdown = CancellationToken::new();
    // 200 metrics at 100 per second: the first 100 may go at once, the rest take about 1 s.
    let (queue, events) = ScriptedQueue::new(
        vec![
            Ok(poll(
                &[P0],
                &[],
                vec![consumed(P0, 0, 40), consumed(P0, 1, 40)],
            )),
            Ok(poll(
                &[],
                &[],
                vec![consumed(P0, 2, 40), consumed(P0, 3, 40)],
            )),
            Ok(poll(&[], &[], vec![consumed(P0, 4, 40)])),
        ],
        shutdown.clone(),
    );
    let metrics = ConsumerMetrics::default();
    let sink = JsonlSink::open(dir.path()).expect("sink");
    let limited = PipelineSettings {
        sink_rate_limit: 100,
        ..settings()
    };
    let started = std::time::Instant::now();
    let stopped = run_to_end_with(queue, sink, &metrics, limited, shutdown).await;
    let took = started.elapsed();

    assert_eq!(stopped, Stopped::Drained);
    // A lower bound only: a busy machine makes it slower, never faster.
    assert!(took >= Duration::from_millis(900), "took {took:?}");
    assert!(
        metrics.sink_throttled_seconds.get() >= 0.9,
        "throttled {} s",
        metrics.sink_throttled_seconds.get()
    );
    let expected: Vec<(u64, u64)> = (0..5)
        .flat_map(|offset| (0..40).map(move |index| (offset, index)))
        .collect();
    assert_eq!(
        positions(&dir.path().join("partition-0000.jsonl")),
        expected
    );
    assert_eq!(metrics.metrics_written.get(), 200);
    assert_eq!(metrics.duplicates_skipped.get(), 0);
    assert_eq!(
        commits(&events_of(&events)),
        vec![
            vec![(P0, Offset(2))],
            vec![(P0, Offset(4))],
            vec![(P0, Offset(5))]
        ]
    );
}

#[tokio::test]
async fn shutdown_ends_a_throttle_and_leaves_the_held_batch_uncommitted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shutdown = CancellationToken::new();
    // The second batch would wait 100 s at 10 metrics per second.
    let (queue, events) = ScriptedQueue::new(
        vec![
            Ok(poll(&[P0], &[], vec![consumed(P0, 0, 10)])),
            Ok(poll(&[], &[], vec![consumed(P0, 1, 1000)])),
        ],
        CancellationToken::new(),
    );
    let signal = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        signal.cancel();
    });
    let metrics = ConsumerMetrics::default();
    let sink = JsonlSink::open(dir.path()).expect("sink");
    let limited = PipelineSettings {
        sink_rate_limit: 10,
        ..settings()
    };
    // run_to_end_with gives up after 10 s, long before the throttle would end.
    let stopped = run_to_end_with(queue, sink, &metrics, limited, shutdown).await;

    assert_eq!(stopped, Stopped::AbandonedBatch);
    let events = events_of(&events);
    assert_eq!(commits(&events), vec![vec![(P0, Offset(1))]]);
    assert_eq!(events.last(), Some(&Event::Closed));
    let written = positions(&dir.path().join("partition-0000.jsonl"));
    assert!(
        written.iter().all(|(offset, _)| *offset == 0),
        "{written:?}"
    );
    assert_eq!(written.len(), 10);
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
async fn a_commit_that_keeps_failing_is_given_up_and_the_pipeline_polls_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shutdown = CancellationToken::new();
    let (mut queue, events) = ScriptedQueue::new(
        vec![
            Ok(poll(&[P0], &[], vec![consumed(P0, 0, 1)])),
            Ok(poll(&[], &[], vec![consumed(P0, 1, 1)])),
        ],
        shutdown.clone(),
    );
    queue.failing_commits = COMMIT_ATTEMPTS as usize;
    let metrics = ConsumerMetrics::default();
    let sink = JsonlSink::open(dir.path()).expect("sink");
    run_to_end(queue, sink, &metrics, shutdown).await;

    let events = events_of(&events);
    assert_eq!(
        events.iter().filter(|e| **e == Event::CommitFailed).count(),
        COMMIT_ATTEMPTS as usize
    );
    // The next batch was polled and written, and its commit covers the first one's.
    assert_eq!(commits(&events), vec![vec![(P0, Offset(2))]]);
    assert_eq!(metrics.metrics_written.get(), 2);
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
