//! Prometheus metrics of the ingest API, registered beside the queue's own on the admin
//! listener's registry.

use std::time::Duration;

use axum::http::StatusCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusCodeLabel {
    /// The HTTP status, e.g. `202`.
    pub code: u16,
}

#[derive(Clone, Debug)]
pub struct IngestMetrics {
    /// Requests answered, by HTTP status.
    pub requests: Family<StatusCodeLabel, Counter>,
    /// Metrics acknowledged as durable.
    pub metrics_accepted: Counter,
    /// Time from receiving a request to answering it.
    pub request_duration: Histogram,
}

impl Default for IngestMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            metrics_accepted: Counter::default(),
            // 100 µs .. ~6.5 s: from a refused request to a slow group commit.
            request_duration: Histogram::new(exponential_buckets(0.000_1, 2.0, 17)),
        }
    }
}

impl IngestMetrics {
    /// Registers every metric under the `metricstream_ingest_` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("metricstream_ingest");
        registry.register(
            "requests",
            "Requests answered, by HTTP status code",
            self.requests.clone(),
        );
        registry.register(
            "metrics_accepted",
            "Metrics acknowledged to clients as durable",
            self.metrics_accepted.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from receiving a request to answering it",
            self.request_duration.clone(),
        );
    }

    pub fn observe_request(&self, status: StatusCode, duration: Duration) {
        self.requests
            .get_or_create(&StatusCodeLabel {
                code: status.as_u16(),
            })
            .inc();
        self.request_duration.observe(duration.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_the_documented_names() {
        let metrics = IngestMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.observe_request(StatusCode::ACCEPTED, Duration::from_millis(3));
        metrics.metrics_accepted.inc_by(5);

        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        assert!(
            text.contains("metricstream_ingest_requests_total{code=\"202\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("metricstream_ingest_metrics_accepted_total 5"),
            "{text}"
        );
        assert!(
            text.contains("metricstream_ingest_request_duration_seconds_count 1"),
            "{text}"
        );
    }
}
