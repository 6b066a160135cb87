//! Prometheus metrics of the ingest's spill (`metricstream_spill_*`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::circuit::CircuitMetrics;

#[derive(Clone, Debug, Default)]
pub struct SpillMetrics {
    /// Records made durable in the spill instead of Kafka.
    pub records: Counter,
    pub bytes: Counter,
    /// Records the forwarder appended from the spill to Kafka.
    pub replayed_records: Counter,
    pub replayed_bytes: Counter,
    /// Records in the spill not yet in Kafka: the replay lag.
    pub backlog_records: Gauge,
    /// Bytes in the spill not yet in Kafka, as counted against the limit.
    pub usage_bytes: Gauge,
    pub limit_bytes: Gauge,
    /// Appends refused because the spill was full.
    pub full_refusals: Counter,
    /// Spilled records that could not be read back, kept aside in `<spill>/quarantine/`.
    pub quarantined_records: Counter,
    /// The circuit in front of Kafka.
    pub circuit: CircuitMetrics,
}

impl SpillMetrics {
    /// Registers every metric under the `metricstream_spill_` prefix (counters get `_total`).
    pub fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("metricstream_spill");
        registry.register(
            "records",
            "Records made durable in the spill because Kafka could not take them",
            self.records.clone(),
        );
        registry.register("bytes", "Bytes written to the spill", self.bytes.clone());
        registry.register(
            "replayed_records",
            "Records the forwarder appended from the spill to Kafka",
            self.replayed_records.clone(),
        );
        registry.register(
            "replayed_bytes",
            "Bytes the forwarder appended from the spill to Kafka",
            self.replayed_bytes.clone(),
        );
        registry.register(
            "backlog_records",
            "Records in the spill not yet appended to Kafka (the replay lag)",
            self.backlog_records.clone(),
        );
        registry.register(
            "usage_bytes",
            "Bytes in the spill not yet appended to Kafka, counted against the limit",
            self.usage_bytes.clone(),
        );
        registry.register(
            "limit_bytes",
            "The spill's size limit (--spill-max-bytes)",
            self.limit_bytes.clone(),
        );
        registry.register(
            "full_refusals",
            "Appends refused (503) because the spill was full",
            self.full_refusals.clone(),
        );
        registry.register(
            "quarantined_records",
            "Spilled records that could not be read back, kept in <spill>/quarantine/",
            self.quarantined_records.clone(),
        );
        self.circuit.register(registry, "circuit", "spill's Kafka");
    }
}
