//! The consumer's own Prometheus metrics (`metricstream_consumer_*`), and the upkeep of the
//! queue's per-partition lag gauges. The queue backend registers its metrics
//! (`metricstream_queue_*`) beside them on the same registry.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;

use metricstream_backend::Partition;
use metricstream_backend::circuit::CircuitMetrics;
use metricstream_backend::file::PartitionLabel;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug)]
pub struct ConsumerMetrics {
    /// Records received from the queue, counted once per poll even when a write is retried.
    pub records: Counter,
    /// Metrics newly written to the sink (and made durable).
    pub metrics_written: Counter,
    /// Metrics the sink already held: re-deliveries after a crash or a partition handover.
    pub duplicates_skipped: Counter,
    /// Records that failed to decode and were quarantined instead of written.
    pub corrupt_records: Counter,
    /// Failed sink operations (each one retried; nothing was committed past it).
    pub sink_errors: Counter,
    /// Failed polls and commits against the queue (each one retried).
    pub queue_errors: Counter,
    /// Time to write one batch to the sink and make it durable.
    pub sink_write_seconds: Histogram,
    /// Time batches waited for `--sink-rate-limit` before being written.
    pub sink_throttled_seconds: Counter<f64, AtomicU64>,
}

impl Default for ConsumerMetrics {
    fn default() -> Self {
        Self {
            records: Counter::default(),
            metrics_written: Counter::default(),
            duplicates_skipped: Counter::default(),
            corrupt_records: Counter::default(),
            sink_errors: Counter::default(),
            queue_errors: Counter::default(),
            sink_write_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
            sink_throttled_seconds: Counter::default(),
        }
    }
}

impl ConsumerMetrics {
    /// Registers every metric under the `metricstream_consumer_` prefix (counters get `_total`).
    pub fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("metricstream_consumer");
        registry.register(
            "records",
            "Records received from the queue",
            self.records.clone(),
        );
        registry.register(
            "metrics_written",
            "Metrics written durably to the sink",
            self.metrics_written.clone(),
        );
        registry.register(
            "duplicates_skipped",
            "Re-delivered metrics the sink already held and did not write again",
            self.duplicates_skipped.clone(),
        );
        registry.register(
            "corrupt_records",
            "Records that failed to decode and were quarantined",
            self.corrupt_records.clone(),
        );
        registry.register(
            "sink_errors",
            "Failed sink operations; the batch was retried and not committed meanwhile",
            self.sink_errors.clone(),
        );
        registry.register(
            "queue_errors",
            "Failed polls or commits against the queue; each was retried",
            self.queue_errors.clone(),
        );
        registry.register(
            "sink_write_seconds",
            "Time to write one batch to the sink and make it durable",
            self.sink_write_seconds.clone(),
        );
        registry.register(
            "sink_throttled_seconds",
            "Time batches waited for --sink-rate-limit before being written to the sink",
            self.sink_throttled_seconds.clone(),
        );
    }
}

/// How one remote-write request ended (the `outcome` label).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

/// The remote-write sink's metrics, registered (beside [`ConsumerMetrics`]) only when that sink
/// is selected.
#[derive(Clone, Debug)]
pub struct RemoteWriteMetrics {
    /// Requests by outcome: `success` (2xx), `retryable` (5xx, 429, 408), `rejected` (any other
    /// status: its samples were dead-lettered) and `network_error` (no answer).
    pub requests: Family<OutcomeLabel, Counter>,
    /// Samples the store acknowledged with a 2xx (a replayed batch counts again).
    pub samples_sent: Counter,
    /// Samples written to the dead-letter files instead of the store.
    pub dead_lettered: Counter,
    /// Requests the store refused whole that were split in halves to single out the refused
    /// samples.
    pub refused_request_splits: Counter,
    /// Time from sending one request to its answer (or failure).
    pub request_seconds: Histogram,
    /// The circuit breaker's state (`remote_write_circuit_state{state}`, its transitions and
    /// the time it spent open).
    pub circuit: CircuitMetrics,
}

impl Default for RemoteWriteMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            samples_sent: Counter::default(),
            dead_lettered: Counter::default(),
            refused_request_splits: Counter::default(),
            request_seconds: Histogram::new(exponential_buckets(0.000_5, 2.0, 16)),
            circuit: CircuitMetrics::default(),
        }
    }
}

impl RemoteWriteMetrics {
    pub const SUCCESS: &'static str = "success";
    pub const RETRYABLE: &'static str = "retryable";
    pub const REJECTED: &'static str = "rejected";
    pub const NETWORK_ERROR: &'static str = "network_error";

    pub fn request(&self, outcome: &'static str) {
        self.requests.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Registers every metric under the `metricstream_consumer_` prefix (counters get `_total`).
    pub fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("metricstream_consumer");
        // Every outcome shows from the start, at zero, so alerts need no `absent()`.
        for outcome in [
            Self::SUCCESS,
            Self::RETRYABLE,
            Self::REJECTED,
            Self::NETWORK_ERROR,
        ] {
            let _ = self.requests.get_or_create(&OutcomeLabel { outcome });
        }
        registry.register(
            "remote_write_requests",
            "Remote-write requests sent to the store, by outcome",
            self.requests.clone(),
        );
        registry.register(
            "remote_write_samples_sent",
            "Samples the store acknowledged with a 2xx (replays count again)",
            self.samples_sent.clone(),
        );
        registry.register(
            "dead_lettered_samples",
            "Samples written to the dead-letter files instead of the store",
            self.dead_lettered.clone(),
        );
        registry.register(
            "remote_write_refused_request_splits",
            "Requests the store refused whole that were split in halves to single out the \
             refused samples",
            self.refused_request_splits.clone(),
        );
        self.circuit
            .register(registry, "remote_write_circuit", "remote-write");
        registry.register(
            "remote_write_request_seconds",
            "Time from sending one remote-write request to its answer",
            self.request_seconds.clone(),
        );
    }
}

/// Keeps a per-partition lag gauge family (the queue's `consumer_lag_records`) equal to what
/// [`QueueConsumer::lag`](metricstream_backend::QueueConsumer::lag) reports, dropping the series
/// of partitions this consumer no longer owns so that a handed-over partition is not reported by
/// two consumers at once.
#[derive(Debug)]
pub struct LagGauges {
    family: Family<PartitionLabel, Gauge>,
    reported: BTreeSet<Partition>,
}

impl LagGauges {
    pub fn new(family: Family<PartitionLabel, Gauge>) -> Self {
        Self {
            family,
            reported: BTreeSet::new(),
        }
    }

    pub fn update(&mut self, lag: &[(Partition, u64)]) {
        let current: BTreeSet<Partition> = lag.iter().map(|(partition, _)| *partition).collect();
        for gone in self.reported.difference(&current) {
            self.family.remove(&PartitionLabel::new(gone.0));
        }
        for (partition, records) in lag {
            let records = i64::try_from(*records).unwrap_or(i64::MAX);
            self.family
                .get_or_create(&PartitionLabel::new(partition.0))
                .set(records);
        }
        self.reported = current;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(metrics: &ConsumerMetrics) -> String {
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        text
    }

    #[test]
    fn counters_carry_the_documented_names() {
        let metrics = ConsumerMetrics::default();
        let text = encoded(&metrics);
        for name in [
            "metricstream_consumer_records_total",
            "metricstream_consumer_metrics_written_total",
            "metricstream_consumer_duplicates_skipped_total",
            "metricstream_consumer_corrupt_records_total",
            "metricstream_consumer_sink_errors_total",
            "metricstream_consumer_queue_errors_total",
            "metricstream_consumer_sink_throttled_seconds_total",
        ] {
            assert!(
                text.contains(&format!("{name} 0")),
                "{name} missing:\n{text}"
            );
        }
    }

    #[test]
    fn remote_write_metrics_carry_the_documented_names() {
        let metrics = RemoteWriteMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.request(RemoteWriteMetrics::SUCCESS);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        for line in [
            r#"metricstream_consumer_remote_write_requests_total{outcome="success"} 1"#,
            r#"metricstream_consumer_remote_write_requests_total{outcome="rejected"} 0"#,
            "metricstream_consumer_remote_write_samples_sent_total 0",
            "metricstream_consumer_dead_lettered_samples_total 0",
            "metricstream_consumer_remote_write_request_seconds_count 0",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
    }

    #[test]
    fn lag_series_of_revoked_partitions_disappear() {
        let family = Family::<PartitionLabel, Gauge>::default();
        let mut registry = Registry::default();
        registry.register("lag_records", "lag", family.clone());
        let encode = |registry: &Registry| {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, registry).expect("encodes");
            text
        };
        let mut gauges = LagGauges::new(family);
        gauges.update(&[(Partition(0), 5), (Partition(1), 7)]);
        let text = encode(&registry);
        assert!(text.contains(r#"lag_records{partition="0"} 5"#), "{text}");
        assert!(text.contains(r#"lag_records{partition="1"} 7"#), "{text}");

        gauges.update(&[(Partition(1), 0)]);
        let text = encode(&registry);
        assert!(!text.contains(r#"partition="0""#), "{text}");
        assert!(text.contains(r#"lag_records{partition="1"} 0"#), "{text}");
    }
}
