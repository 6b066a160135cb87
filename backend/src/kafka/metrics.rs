//! Prometheus metrics of the Kafka backend.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Default)]
pub struct KafkaMetrics {
    /// Records Kafka acknowledged.
    pub acked_records: Counter,
    /// Appends refused because the producer's buffer was full.
    pub queue_full: Counter,
    /// Appends that failed: delivery errors, acknowledgement timeouts, cluster unreachable.
    pub delivery_errors: Counter,
    /// Producers rebuilt after a fatal librdkafka error.
    pub producer_rebuilds: Counter,
    /// 1 while the cluster is considered unreachable.
    pub cluster_unreachable: Gauge,
    /// Records read by the consumer.
    pub consumed_records: Counter,
    /// Rebalances this member took part in.
    pub rebalances: Counter,
    /// Second copies of replayed records the consumer dropped (see [`crate::replay`]).
    pub replay_duplicates_dropped: Counter,
}

impl KafkaMetrics {
    /// Registers every metric under the `metricstream_kafka_` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("metricstream_kafka");
        registry.register(
            "acked_records",
            "Records Kafka acknowledged",
            self.acked_records.clone(),
        );
        registry.register(
            "queue_full",
            "Appends refused because the producer buffer was full",
            self.queue_full.clone(),
        );
        registry.register(
            "delivery_errors",
            "Appends that failed (delivery error, acknowledgement timeout, cluster unreachable)",
            self.delivery_errors.clone(),
        );
        registry.register(
            "producer_rebuilds",
            "Producers rebuilt after a fatal error",
            self.producer_rebuilds.clone(),
        );
        registry.register(
            "cluster_unreachable",
            "1 while the Kafka cluster is considered unreachable",
            self.cluster_unreachable.clone(),
        );
        registry.register(
            "consumed_records",
            "Records read by this consumer",
            self.consumed_records.clone(),
        );
        registry.register(
            "rebalances",
            "Consumer group rebalances this member took part in",
            self.rebalances.clone(),
        );
        registry.register(
            "replay_duplicates_dropped",
            "Second copies of records replayed from an ingest's spill, dropped by this consumer",
            self.replay_duplicates_dropped.clone(),
        );
    }
}
