//! The reads the consumer is measured against: `bare-read-<backend>` (the ceiling: segment files
//! decoded on one thread, or Kafka's ConsumerPerformance) and `queue-read-<backend>` (the backend
//! crate's `QueueConsumer` in this process, without a sink).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use metricstream_backend::file::{FileConsumer, FileQueueMetrics};
use metricstream_backend::kafka::{KafkaConsumer, KafkaMetrics, KafkaSettings};
use metricstream_backend::{Offset, Partition, PollLimits, QueueConsumer, codec};

use super::{Backlog, QUEUE_READ_BATCH, Queue, ReadFigures};
use crate::backend::record::FILE_FRAME_HEADER_BYTES;
use crate::backend::tools::{kafka_tool_command, run_kafka_tool};

/// Reads every segment file of every partition in order on this thread and decodes each
/// record's payload with the codec. The frames' own checksums are not verified (the codec's
/// checksum covers the payload); nothing is written.
pub(super) fn bare_read_file(data_dir: &Path, partitions: u32) -> anyhow::Result<ReadFigures> {
    let started = Instant::now();
    let mut records = 0u64;
    let mut metrics = 0u64;
    for partition in 0..partitions {
        let dir = data_dir.join("partitions").join(format!("{partition:04}"));
        let mut segments: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .map(|entry| entry.map(|entry| entry.path()))
            .collect::<Result<_, _>>()
            .with_context(|| format!("listing {}", dir.display()))?;
        // Segments are named by their zero-padded base offset: name order is log order.
        segments.retain(|path| path.extension().is_some_and(|ext| ext == "log"));
        segments.sort();
        for segment in segments {
            let bytes = std::fs::read(&segment)
                .with_context(|| format!("reading {}", segment.display()))?;
            let mut at = 0;
            while at + FILE_FRAME_HEADER_BYTES <= bytes.len() {
                let mut length = [0u8; 4];
                length.copy_from_slice(&bytes[at..at + 4]);
                let length = u32::from_le_bytes(length) as usize;
                let payload_at = at + FILE_FRAME_HEADER_BYTES;
                let payload = bytes
                    .get(payload_at..payload_at + length)
                    .with_context(|| {
                        format!("{} has a truncated frame at byte {at}", segment.display())
                    })?;
                at = payload_at + length;
                // An empty frame is a segment's seal, not a record.
                if length == 0 {
                    continue;
                }
                let batch = codec::decode_ref(payload).with_context(|| {
                    format!("decoding a record of {} at byte {at}", segment.display())
                })?;
                records += 1;
                metrics += batch.len() as u64;
            }
        }
    }
    Ok(ReadFigures {
        records,
        metrics,
        seconds: started.elapsed().as_secs_f64(),
        startup_seconds: 0.0,
    })
}

/// Kafka's ConsumerPerformance over the whole topic from the beginning (a fresh group).
pub(super) async fn bare_read_kafka(
    settings: &KafkaSettings,
    records: u64,
    metrics_per_record: u32,
) -> anyhow::Result<(ReadFigures, String)> {
    let args: Vec<String> = vec![
        "consumer-perf".into(),
        "--bootstrap-server".into(),
        settings.brokers.clone(),
        "--topic".into(),
        settings.topic.clone(),
        "--num-records".into(),
        records.to_string(),
        "--group".into(),
        metricstream_tests::kafka::unique_name("bench-consumer-perf"),
        "--timeout".into(),
        "30000".into(),
    ];
    let output = run_kafka_tool(&args).await?;
    let mut figures = parse_consumer_perf(&output)?;
    // ConsumerPerformance counts records only; each holds the backlog's metrics per record.
    figures.metrics = figures.records * u64::from(metrics_per_record);
    Ok((figures, kafka_tool_command(&args)))
}

/// Parses ConsumerPerformance's last line (after the `start.time, end.time, ...` header):
/// records from `data.consumed.in.nMsg`, time from `fetch.time.ms`, startup from
/// `rebalance.time.ms`.
pub(super) fn parse_consumer_perf(output: &str) -> anyhow::Result<ReadFigures> {
    let mut lines = output
        .lines()
        .skip_while(|line| !line.starts_with("start.time"));
    let header: Vec<&str> = lines
        .next()
        .with_context(|| format!("no header in ConsumerPerformance's output:\n{output}"))?
        .split(',')
        .map(str::trim)
        .collect();
    let values: Vec<&str> = lines
        .filter(|line| !line.trim().is_empty())
        .last()
        .with_context(|| format!("no figures in ConsumerPerformance's output:\n{output}"))?
        .split(',')
        .map(str::trim)
        .collect();
    let field = |name: &str| -> anyhow::Result<f64> {
        let at = header
            .iter()
            .position(|column| *column == name)
            .with_context(|| format!("no column {name} in {header:?}"))?;
        values
            .get(at)
            .and_then(|value| value.parse().ok())
            .with_context(|| format!("no number for {name} in {values:?}"))
    };
    Ok(ReadFigures {
        records: field("data.consumed.in.nMsg")? as u64,
        metrics: 0,
        seconds: field("fetch.time.ms")? / 1000.0,
        startup_seconds: field("rebalance.time.ms")? / 1000.0,
    })
}

/// The backend crate's consumer in this process, on a fresh group: poll, decode, commit.
pub(super) async fn queue_read(
    backlog: &Backlog,
    timeout: Duration,
) -> anyhow::Result<ReadFigures> {
    let group = metricstream_tests::kafka::unique_name("bench-queue-read");
    let started = Instant::now();
    let mut consumer: Box<dyn QueueConsumer> = match &backlog.queue {
        Queue::File { data_dir } => Box::new(
            FileConsumer::open(
                data_dir.clone(),
                backlog.partitions,
                &group,
                FileQueueMetrics::default(),
            )
            .await
            .context("opening a file consumer")?,
        ),
        Queue::Kafka { settings } => Box::new(
            KafkaConsumer::open(settings, &group, KafkaMetrics::default())
                .context("opening a Kafka consumer")?,
        ),
    };
    let expected = backlog.records.len() as u64;
    let mut first_records: Option<Instant> = None;
    let mut records = 0u64;
    let mut metrics = 0u64;
    while records < expected {
        anyhow::ensure!(
            started.elapsed() < timeout,
            "the queue read got {records} of {expected} records within {timeout:?}"
        );
        let poll = consumer
            .poll(
                PollLimits::records(QUEUE_READ_BATCH),
                Duration::from_millis(200),
            )
            .await
            .context("polling")?;
        if poll.records.is_empty() {
            continue;
        }
        first_records.get_or_insert_with(Instant::now);
        let mut next: BTreeMap<Partition, Offset> = BTreeMap::new();
        for record in &poll.records {
            let batch = codec::decode_ref(&record.payload).with_context(|| {
                format!(
                    "decoding partition {} offset {}",
                    record.partition, record.offset
                )
            })?;
            metrics += batch.len() as u64;
            let entry = next.entry(record.partition).or_default();
            *entry = (*entry).max(record.offset.next());
        }
        records += poll.records.len() as u64;
        let positions: Vec<(Partition, Offset)> = next.into_iter().collect();
        consumer.commit(&positions).await.context("committing")?;
    }
    let done = Instant::now();
    consumer.close().await;
    let first_records = first_records.unwrap_or(started);
    Ok(ReadFigures {
        records,
        metrics,
        seconds: done.duration_since(first_records).as_secs_f64(),
        startup_seconds: first_records.duration_since(started).as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drain::fill::fill_file;

    #[test]
    fn consumer_perf_output_is_parsed_by_column_name() {
        let output = "start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec\n\
                      2026-11-26 21:05:00:695, 2026-11-26 21:05:03:149, 11.4441, 4.6634, 200000, 81499.5925, 1046, 1408, 8.1279, 142045.4545\n";
        let figures = parse_consumer_perf(output).expect("parses");
        assert_eq!(figures.records, 200_000);
        assert!((figures.seconds - 1.408).abs() < 1e-9);
        assert!((figures.startup_seconds - 1.046).abs() < 1e-9);
    }

    #[test]
    fn consumer_perf_output_without_figures_is_an_error() {
        assert!(parse_consumer_perf("WARN something went wrong\n").is_err());
    }

    #[tokio::test]
    async fn the_bare_read_decodes_what_the_file_producer_wrote() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("data");
        let backlog = fill_file(&data_dir, 3, 30, 5).await.expect("fills");
        assert_eq!(backlog.records.len(), 30);
        // Round-robin: ten records per partition, offsets 0..10 each.
        for partition in 0..3 {
            let mut offsets: Vec<u64> = backlog
                .records
                .iter()
                .filter(|(p, _)| *p == partition)
                .map(|(_, o)| *o)
                .collect();
            offsets.sort_unstable();
            assert_eq!(offsets, (0..10).collect::<Vec<_>>());
        }
        let figures = bare_read_file(&data_dir, 3).expect("reads");
        assert_eq!((figures.records, figures.metrics), (30, 150));
        let queue = queue_read(&backlog, Duration::from_secs(30))
            .await
            .expect("reads");
        assert_eq!((queue.records, queue.metrics), (30, 150));
    }
}
