//! Helpers shared by the sink's unit tests: records of made-up metrics, a sink with partition 0
//! loaded, and reading a partition file back as positions.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use metricstream_backend::{ClientId, Metric, MetricBatch, Offset, Partition};
use serde_json::Value;

use super::{JsonlSink, Sink, SinkRecord};

pub(super) const P0: Partition = Partition(0);

pub(super) fn metric(name: &str, value: f64) -> Metric {
    Metric {
        name: name.to_owned(),
        value,
        timestamp: Some(1_700_000_000_000),
        tags: BTreeMap::from([("host".to_owned(), "a".to_owned())]),
        kind: Default::default(),
    }
}

/// A batch of `count` metrics named `m0`, `m1`, ...
pub(super) fn batch(count: usize) -> MetricBatch {
    MetricBatch {
        client: ClientId::new("client-a"),
        metrics: (0..count)
            .map(|i| metric(&format!("m{i}"), i as f64))
            .collect(),
    }
}

/// A record at `offset` of `partition` holding `count` metrics named `m0`, `m1`, ...
pub(super) fn record(partition: Partition, offset: u64, count: usize) -> SinkRecord {
    SinkRecord::encode(partition, Offset(offset), &batch(count))
}

pub(super) fn lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("sink file is readable UTF-8");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "a sink file always ends with a newline"
    );
    text.lines()
        .map(|line| serde_json::from_str(line).expect("every line is JSON"))
        .collect()
}

/// (offset, index) of every line, in file order.
pub(super) fn positions(path: &Path) -> Vec<(u64, u64)> {
    lines(path)
        .iter()
        .map(|line| {
            (
                line["offset"].as_u64().expect("offset"),
                line["index"].as_u64().expect("index"),
            )
        })
        .collect()
}

pub(super) fn append_raw(path: &Path, bytes: &[u8]) {
    let mut file = OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open for append");
    file.write_all(bytes).expect("append");
}

pub(super) fn open_sink(dir: &Path) -> JsonlSink {
    let mut sink = JsonlSink::open(dir).expect("sink opens");
    sink.assign(P0).expect("partition 0 loads");
    sink
}
