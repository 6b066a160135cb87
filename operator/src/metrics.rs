//! The operator's Prometheus metrics, served on the admin listener's `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub reason: String,
}

pub struct Metrics {
    /// `metricstream_operator_reconciles_total`
    pub reconciles: Counter,
    /// `metricstream_operator_reconcile_failures_total{reason}`
    pub failures: Family<FailureLabels, Counter>,
    /// `metricstream_operator_reconcile_duration_seconds`
    pub duration: Histogram,
    /// `metricstream_operator_applies_skipped_total`
    pub applies_skipped: Counter,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            reconciles: Counter::default(),
            failures: Family::default(),
            duration: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            applies_skipped: Counter::default(),
        };
        registry.register(
            "metricstream_operator_reconciles",
            "Reconciles of MetricStreams started",
            metrics.reconciles.clone(),
        );
        registry.register(
            "metricstream_operator_reconcile_failures",
            "Reconciles that failed, by reason",
            metrics.failures.clone(),
        );
        registry.register(
            "metricstream_operator_reconcile_duration_seconds",
            "Time one reconcile took",
            metrics.duration.clone(),
        );
        registry.register(
            "metricstream_operator_applies_skipped",
            "Applies of children left out because the child was unchanged since the last one",
            metrics.applies_skipped.clone(),
        );
        metrics
    }

    pub fn failed(&self, reason: &str) {
        self.failures
            .get_or_create(&FailureLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }
}
