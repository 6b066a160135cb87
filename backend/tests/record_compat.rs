//! A queue written by the first release (record version 1, `tests/fixtures/queue-v1/`, made by
//! that release's `FileProducer` and `codec::encode` and committed as bytes) is still read by
//! this one: every record, in order, decoding to exactly the metrics written then. A change to
//! the segment framing or the codec that breaks old data fails here.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use metricstream_backend::file::{FileConsumer, FileQueueMetrics};
use metricstream_backend::{
    ClientId, Metric, MetricBatch, MetricKind, PollLimits, QueueConsumer, codec,
};

/// What the first release wrote: batch `i` went to partition `i % 2`.
fn written_then() -> Vec<MetricBatch> {
    let tags = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect::<BTreeMap<_, _>>()
    };
    let metric = |name: &str, value: f64, timestamp: Option<i64>, tags| Metric {
        name: name.into(),
        value,
        timestamp,
        tags,
        kind: MetricKind::Untyped,
    };
    vec![
        MetricBatch {
            client: ClientId::new("demo-client"),
            metrics: vec![
                metric("cpu", 75.0, Some(1_700_000_000_000), tags(&[("host", "a")])),
                metric("mem", -0.5, None, tags(&[])),
            ],
        },
        MetricBatch {
            client: ClientId::new("other"),
            metrics: vec![metric(
                "temperature °C",
                21.25,
                Some(-1),
                tags(&[("room", "küche"), ("z", "")]),
            )],
        },
        MetricBatch {
            client: ClientId::new("big"),
            metrics: vec![metric(
                "requests_total",
                1e300,
                Some(i64::MAX),
                tags(&[("code", "200"), ("method", "POST")]),
            )],
        },
    ]
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create the copy");
    for entry in fs::read_dir(from).expect("read the fixture") {
        let entry = entry.expect("fixture entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy a fixture file");
        }
    }
}

#[tokio::test]
async fn a_queue_written_by_the_first_release_is_read_whole() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/queue-v1");
    let dir = tempfile::tempdir().expect("tempdir");
    // The consumer writes its group's files beside the data; the fixture stays untouched.
    copy_dir(&fixture, dir.path());
    let mut consumer = FileConsumer::open(dir.path(), 2, "compat", FileQueueMetrics::default())
        .await
        .expect("open the first release's queue");
    let mut read: Vec<(u32, u64, MetricBatch)> = Vec::new();
    for _ in 0..50 {
        let poll = consumer
            .poll(PollLimits::records(100), Duration::from_millis(100))
            .await
            .expect("poll");
        for record in poll.records {
            assert_eq!(record.payload[0], 1, "the fixture holds version-1 records");
            let batch = codec::decode(&record.payload).expect("a version-1 record decodes");
            read.push((record.partition.0, record.offset.0, batch));
        }
        if read.len() >= 3 {
            break;
        }
    }
    read.sort_by_key(|(partition, offset, _)| (*offset, *partition));
    let expected: Vec<(u32, u64, MetricBatch)> = written_then()
        .into_iter()
        .enumerate()
        .map(|(i, batch)| ((i % 2) as u32, (i / 2) as u64, batch))
        .collect();
    assert_eq!(read, expected);
    // Re-encoding what was read gives the first release's bytes again: untyped batches are
    // still version-1 records.
    for (i, batch) in written_then().iter().enumerate() {
        let segment = fixture.join(format!("partitions/{:04}/00000000000000000000.log", i % 2));
        let bytes = fs::read(&segment).expect("read the fixture segment");
        let encoded = codec::encode(batch);
        assert!(
            bytes.windows(encoded.len()).any(|window| window == encoded),
            "batch {i} re-encodes to bytes its segment does not hold"
        );
    }
}
