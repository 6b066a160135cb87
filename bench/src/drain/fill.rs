//! Step 1 of the drain suite: the backlog appended through the backend crate's own producers
//! (the file queue's, or the idempotent Kafka producer), many appends in flight. Not measured.

use std::path::Path;

use anyhow::Context;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use metricstream_backend::file::{FileProducer, FileQueueConfig, FileQueueMetrics};
use metricstream_backend::kafka::{
    KafkaMetrics, KafkaProducer, KafkaSettings, ProducerTuning, admin,
};
use metricstream_backend::{MetricBatch, Offset, Partition, QueueProducer, codec};

use super::{Backlog, DrainBackend, Queue};
use crate::backend::record::{client_per_partition, representative_batch};

/// Makes record `seq` of `metrics` metrics from `client`, e.g. [`representative_batch`].
/// The backlog's size flags (`--records`, `--metrics-per-record`, `--partitions`) checked.
pub(crate) fn check_backlog(
    records: u64,
    metrics_per_record: u32,
    partitions: u32,
) -> anyhow::Result<()> {
    anyhow::ensure!(records > 0, "--records must be positive");
    anyhow::ensure!(
        metrics_per_record > 0,
        "--metrics-per-record must be positive"
    );
    let max = metricstream_backend::MAX_PARTITIONS;
    anyhow::ensure!(
        (1..=max).contains(&partitions),
        "--partitions must be in 1..={max}"
    );
    Ok(())
}

pub(crate) type MakeBatch = fn(&str, u32, u64) -> MetricBatch;

/// Appends in flight while filling the backlog.
const FILL_CONCURRENCY: usize = 256;

/// Appends `records` records made by `make_batch` round-robin over the partitions (each through
/// a client that hashes to it) and returns every record's `(partition, offset)`.
async fn fill<P: QueueProducer>(
    producer: &P,
    partitions: u32,
    records: u64,
    metrics_per_record: u32,
    make_batch: MakeBatch,
) -> anyhow::Result<Vec<(u32, u64)>> {
    let clients = client_per_partition(partitions);
    futures::stream::iter(0..records)
        .map(|seq| {
            let partition = (seq % u64::from(partitions)) as u32;
            let batch = make_batch(&clients[partition as usize], metrics_per_record, seq);
            let payload = Bytes::from(codec::encode(&batch));
            async move {
                producer
                    .append(Partition(partition), payload)
                    .await
                    .map(|Offset(offset)| (partition, offset))
                    .with_context(|| format!("appending record {seq} to partition {partition}"))
            }
        })
        .buffer_unordered(FILL_CONCURRENCY)
        .try_collect()
        .await
}

/// A file-queue backlog of [`representative_batch`] records.
pub(super) async fn fill_file(
    data_dir: &Path,
    partitions: u32,
    records: u64,
    metrics_per_record: u32,
) -> anyhow::Result<Backlog> {
    fill_file_with(
        data_dir,
        partitions,
        records,
        metrics_per_record,
        representative_batch,
    )
    .await
}

/// A file-queue backlog of records made by `make_batch`.
pub(crate) async fn fill_file_with(
    data_dir: &Path,
    partitions: u32,
    records: u64,
    metrics_per_record: u32,
    make_batch: MakeBatch,
) -> anyhow::Result<Backlog> {
    // Group commit, as the ingest's default: the backlog is durable (no dirty pages left for
    // the drain to flush) and still written quickly.
    let producer = FileProducer::open(
        FileQueueConfig::new(data_dir, partitions),
        FileQueueMetrics::default(),
    )
    .await
    .with_context(|| format!("opening the file queue in {}", data_dir.display()))?;
    let filled = fill(
        &producer,
        partitions,
        records,
        metrics_per_record,
        make_batch,
    )
    .await;
    producer.close().await;
    Ok(Backlog {
        backend: DrainBackend::File,
        queue: Queue::File {
            data_dir: data_dir.to_path_buf(),
        },
        records: filled?,
        metrics_per_record,
        partitions,
    })
}

pub(super) async fn fill_kafka(
    bootstrap: &str,
    partitions: u32,
    records: u64,
    metrics_per_record: u32,
) -> anyhow::Result<Backlog> {
    let settings = KafkaSettings {
        brokers: bootstrap.to_owned(),
        topic: metricstream_tests::kafka::unique_name("bench-drain"),
        partitions,
        client_id: "metricstream-bench".to_owned(),
        security: Default::default(),
        extra: Vec::new(),
    };
    admin::ensure_topic(&settings, 1, &[])
        .await
        .with_context(|| format!("creating topic {}", settings.topic))?;
    let filled = async {
        let producer = KafkaProducer::open(
            settings.clone(),
            ProducerTuning::default(),
            KafkaMetrics::default(),
        )
        .await
        .with_context(|| format!("opening a producer on {}", settings.topic))?;
        let filled = fill(
            &producer,
            partitions,
            records,
            metrics_per_record,
            representative_batch,
        )
        .await;
        producer.close().await;
        filled
    }
    .await;
    let filled = match filled {
        Ok(filled) => filled,
        Err(error) => {
            let _ = admin::delete_topic(&settings).await;
            return Err(error);
        }
    };
    Ok(Backlog {
        backend: DrainBackend::Kafka,
        queue: Queue::Kafka { settings },
        records: filled,
        metrics_per_record,
        partitions,
    })
}
