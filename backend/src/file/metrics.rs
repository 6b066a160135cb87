//! Prometheus metrics of the file queue. One instance is shared by a process's producer or
//! consumer and registered once on its registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    pub partition: String,
}

impl PartitionLabel {
    pub fn new(partition: u32) -> Self {
        Self {
            partition: partition.to_string(),
        }
    }
}

#[derive(Clone)]
pub struct FileQueueMetrics {
    /// Records made durable and acknowledged.
    pub appended_records: Counter,
    /// Records per group commit.
    pub commit_batch_records: Histogram,
    /// Duration of each `fdatasync` on a segment.
    pub fsync_seconds: Histogram,
    /// Appends refused because a partition's queue was full.
    pub saturated: Counter,
    /// Group commits that failed (I/O errors); none of their records were acknowledged.
    pub write_errors: Counter,
    /// Torn or corrupt tails cut off during recovery, in bytes.
    pub truncated_bytes: Counter,
    /// Segments deleted by retention.
    pub segments_deleted: Counter,
    /// Records no consumer group had read when the hard cap deleted them.
    pub dropped_unconsumed_records: Counter,
    /// Records read by consumers.
    pub read_records: Counter,
    /// Records the group has not committed yet, per owned partition.
    pub consumer_lag: Family<PartitionLabel, Gauge>,
    /// Partitions this consumer owns now.
    pub owned_partitions: Gauge,
}

impl Default for FileQueueMetrics {
    fn default() -> Self {
        Self {
            appended_records: Counter::default(),
            commit_batch_records: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            fsync_seconds: Histogram::new(exponential_buckets(0.000_025, 2.0, 16)),
            saturated: Counter::default(),
            write_errors: Counter::default(),
            truncated_bytes: Counter::default(),
            segments_deleted: Counter::default(),
            dropped_unconsumed_records: Counter::default(),
            read_records: Counter::default(),
            consumer_lag: Family::default(),
            owned_partitions: Gauge::default(),
        }
    }
}

impl FileQueueMetrics {
    /// Registers every metric under the `metricstream_queue_` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("metricstream_queue");
        registry.register(
            "appended_records",
            "Records made durable and acknowledged",
            self.appended_records.clone(),
        );
        registry.register(
            "commit_batch_records",
            "Records written per group commit",
            self.commit_batch_records.clone(),
        );
        registry.register(
            "fsync_seconds",
            "Duration of fdatasync on a segment",
            self.fsync_seconds.clone(),
        );
        registry.register(
            "saturated",
            "Appends refused because the partition's queue was full",
            self.saturated.clone(),
        );
        registry.register(
            "write_errors",
            "Group commits that failed; none of their records were acknowledged",
            self.write_errors.clone(),
        );
        registry.register(
            "truncated_bytes",
            "Bytes of torn or corrupt segment tails removed by recovery",
            self.truncated_bytes.clone(),
        );
        registry.register(
            "segments_deleted",
            "Segments deleted by retention",
            self.segments_deleted.clone(),
        );
        registry.register(
            "dropped_unconsumed_records",
            "Records deleted by the hard size cap before every consumer group had read them",
            self.dropped_unconsumed_records.clone(),
        );
        registry.register(
            "read_records",
            "Records read by this consumer",
            self.read_records.clone(),
        );
        registry.register(
            "consumer_lag_records",
            "Records of an owned partition the group has not committed",
            self.consumer_lag.clone(),
        );
        registry.register(
            "owned_partitions",
            "Partitions this consumer owns",
            self.owned_partitions.clone(),
        );
    }
}

impl FileQueueMetrics {
    /// Number of `fdatasync` calls observed on segments.
    pub fn fsync_seconds_count(&self) -> u64 {
        histogram_count(&self.fsync_seconds)
    }

    pub fn segments_deleted_count(&self) -> u64 {
        self.segments_deleted.get()
    }

    pub fn dropped_unconsumed_count(&self) -> u64 {
        self.dropped_unconsumed_records.get()
    }
}

fn histogram_count(histogram: &Histogram) -> u64 {
    let mut text = String::new();
    let mut registry = Registry::default();
    registry.register("h", "", histogram.clone());
    if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
        return 0;
    }
    text.lines()
        .find(|line| line.starts_with("h_count"))
        .and_then(|line| line.split_whitespace().last())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}
