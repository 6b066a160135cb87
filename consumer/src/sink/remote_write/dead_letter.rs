//! Dead letters: samples the store refused for good (a non-retryable 4xx) or that cannot be
//! sent at all (no timestamp), kept as JSON lines in `<sink-dir>/dead-letters/partition-NNNN.jsonl`
//! so the partition moves on without losing them silently. Appended and `fdatasync`ed before the
//! batch counts as done; a replay of the batch appends its dead letters again (each line names its
//! `(partition, offset, index)`, so repeats are recognisable).

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use metricstream_backend::Partition;
use metricstream_backend::codec::MetricRef;
use metricstream_backend::remote_write_proto::v1;
use serde_json::{Value, json};

use super::series::{NAME_LABEL, Origin};
use crate::sink::durable::{create_dir_durably, sync_dir};
use crate::sink::{SinkError, io_error};

pub(super) const DEAD_LETTER_DIR: &str = "dead-letters";

/// Why samples became dead letters: the store's status (none when nothing was sent) and text.
#[derive(Clone, Debug)]
pub(super) struct Refusal {
    pub(super) status: Option<u16>,
    pub(super) reason: String,
}

/// One dead-letter line: where the metric came from, the metric itself, and why.
pub(super) fn line(origin: &Origin, series: &v1::TimeSeries, refusal: &Refusal) -> Value {
    let mut name = "";
    let mut tags = BTreeMap::new();
    for label in &series.labels {
        if label.name == NAME_LABEL {
            name = &label.value;
        } else {
            tags.insert(label.name.as_str(), label.value.as_str());
        }
    }
    let sample = series.samples.first();
    json!({
        "partition": origin.partition.0,
        "offset": origin.offset.0,
        "index": origin.index,
        "client": origin.client,
        "name": name,
        "value": sample.map(|s| s.value),
        "timestamp": sample.map(|s| s.timestamp),
        "tags": tags,
        "status": refusal.status,
        "reason": refusal.reason,
    })
}

/// The dead-letter line of a metric that never became a series (it has no timestamp).
pub(super) fn metric_line(origin: &Origin, metric: &MetricRef<'_, '_>, refusal: &Refusal) -> Value {
    let tags: BTreeMap<&str, &str> = metric.tags.iter().copied().collect();
    json!({
        "partition": origin.partition.0,
        "offset": origin.offset.0,
        "index": origin.index,
        "client": origin.client,
        "name": metric.name,
        "value": metric.value,
        "timestamp": metric.timestamp,
        "tags": tags,
        "status": refusal.status,
        "reason": refusal.reason,
    })
}

/// Appends `lines` to their partitions' dead-letter files and syncs them.
pub(super) fn append(sink_dir: &Path, lines: &[(Partition, Value)]) -> Result<(), SinkError> {
    if lines.is_empty() {
        return Ok(());
    }
    let dir = sink_dir.join(DEAD_LETTER_DIR);
    create_dir_durably(&dir)?;
    let mut by_partition: BTreeMap<Partition, Vec<u8>> = BTreeMap::new();
    for (partition, line) in lines {
        let text = by_partition.entry(*partition).or_default();
        serde_json::to_writer(&mut *text, line)?;
        text.push(b'\n');
    }
    for (partition, text) in by_partition {
        let path = path(sink_dir, partition);
        let created = !path.exists();
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_error(format!("opening {}", path.display())))?;
        file.write_all(&text)
            .map_err(io_error(format!("appending to {}", path.display())))?;
        file.sync_data()
            .map_err(io_error(format!("syncing {}", path.display())))?;
        if created {
            sync_dir(&dir)?;
        }
    }
    Ok(())
}

pub(super) fn path(sink_dir: &Path, partition: Partition) -> PathBuf {
    sink_dir
        .join(DEAD_LETTER_DIR)
        .join(format!("partition-{:04}.jsonl", partition.0))
}

#[cfg(test)]
mod tests {
    use metricstream_backend::Offset;
    use metricstream_backend::remote_write_proto::Sample;

    use super::*;

    #[test]
    fn dead_letters_are_appended_per_partition_with_their_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let origin = Origin {
            partition: Partition(2),
            offset: Offset(41),
            index: 3,
            client: "demo".to_owned(),
            kind: metricstream_backend::MetricKind::Counter,
        };
        let series = v1::TimeSeries {
            labels: vec![
                v1::Label {
                    name: NAME_LABEL.to_owned(),
                    value: "cpu".to_owned(),
                },
                v1::Label {
                    name: "host".to_owned(),
                    value: "a".to_owned(),
                },
            ],
            samples: vec![Sample {
                value: 1.5,
                timestamp: 7,
            }],
            ..v1::TimeSeries::default()
        };
        let refusal = Refusal {
            status: Some(400),
            reason: "bad label".to_owned(),
        };
        let entry = line(&origin, &series, &refusal);
        append(dir.path(), &[(Partition(2), entry.clone())]).expect("appends");
        append(dir.path(), &[(Partition(2), entry)]).expect("appends again");
        let text = std::fs::read_to_string(path(dir.path(), Partition(2))).expect("reads");
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            json!({"partition":2,"offset":41,"index":3,"client":"demo","name":"cpu","value":1.5,
                   "timestamp":7,"tags":{"host":"a"},"status":400,"reason":"bad label"})
        );
    }
}
