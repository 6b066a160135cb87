//! Prometheus metrics of the ingest API, registered beside the queue's own on the admin
//! listener's registry.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// What is reloaded; labels the reload metrics (`secret="tokens"`, `secret="tls"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretKind {
    Tokens,
    Tls,
}

impl SecretKind {
    pub fn label(self) -> &'static str {
        match self {
            Self::Tokens => "tokens",
            Self::Tls => "tls",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusCodeLabel {
    /// The HTTP status, e.g. `202`.
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SecretReloadLabel {
    /// `tokens` or `tls`.
    pub secret: &'static str,
    /// `success` or `failure`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionClosedLabel {
    /// `header_timeout`, `idle_timeout` or `tls_handshake`.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientLimitLabel {
    /// The client id, or `_other` once [`MAX_LABELLED_CLIENTS`] clients have a series.
    pub client: String,
    /// `samples_per_second` or `active_series`.
    pub limit: &'static str,
}

/// Clients named in the per-client counters; those after them are counted as `_other`, since
/// in open mode any header is a client and a label per id would grow without end.
pub const MAX_LABELLED_CLIENTS: usize = 1000;

#[derive(Clone, Debug)]
pub struct IngestMetrics {
    /// Requests answered, by HTTP status.
    pub requests: Family<StatusCodeLabel, Counter>,
    /// Metrics acknowledged as durable.
    pub metrics_accepted: Counter,
    /// Of those, metrics acknowledged as durable in the spill (Kafka could not take them).
    pub metrics_spilled: Counter,
    /// Time from receiving a request to answering it.
    pub request_duration: Histogram,
    /// Requests refused with 503 because --max-concurrent-requests were in flight.
    pub requests_shed: Counter,
    /// Requests being handled now (holding one of the --max-concurrent-requests permits).
    pub requests_in_flight: Gauge,
    /// Reloads of the tokens file or TLS files after they changed, by outcome.
    pub secret_reloads: Family<SecretReloadLabel, Counter>,
    /// Connections the server closed for a client too slow or silent, by reason.
    pub connections_closed: Family<ConnectionClosedLabel, Counter>,
    /// Influx line-protocol string fields, which hold no number to store.
    pub influx_string_fields_dropped: Counter,
    /// OTLP data points refused within an accepted request (OTLP's partial success).
    pub otlp_points_rejected: Counter,
    /// Remote-write samples refused while the rest of their request was stored.
    pub remote_write_samples_rejected: Counter,
    /// Samples refused by a per-client cap, by client and cap.
    pub samples_limited: Family<ClientLimitLabel, Counter>,
    /// Series tracked for --max-active-series, over all clients.
    pub active_series_tracked: Gauge,
    labelled_clients: Arc<Mutex<HashSet<String>>>,
}

impl Default for IngestMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            metrics_accepted: Counter::default(),
            metrics_spilled: Counter::default(),
            // 100 µs .. ~6.5 s: from a refused request to a slow group commit.
            request_duration: Histogram::new(exponential_buckets(0.000_1, 2.0, 17)),
            requests_shed: Counter::default(),
            requests_in_flight: Gauge::default(),
            secret_reloads: Family::default(),
            connections_closed: Family::default(),
            influx_string_fields_dropped: Counter::default(),
            otlp_points_rejected: Counter::default(),
            remote_write_samples_rejected: Counter::default(),
            samples_limited: Family::default(),
            active_series_tracked: Gauge::default(),
            labelled_clients: Arc::default(),
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
            "metrics_spilled",
            "Metrics acknowledged as durable in the spill because Kafka could not take them",
            self.metrics_spilled.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from receiving a request to answering it",
            self.request_duration.clone(),
        );
        registry.register(
            "requests_shed",
            "Requests refused with 503 because --max-concurrent-requests were in flight",
            self.requests_shed.clone(),
        );
        registry.register(
            "requests_in_flight",
            "Requests being handled now, each holding one of the --max-concurrent-requests permits",
            self.requests_in_flight.clone(),
        );
        registry.register(
            "secret_reloads",
            "Reloads of the tokens file or the TLS files after they changed, by outcome; \
             a failure keeps the previous secret in use",
            self.secret_reloads.clone(),
        );
        registry.register(
            "connections_closed",
            "Connections closed by the server for a slow or silent client, by reason",
            self.connections_closed.clone(),
        );
        registry.register(
            "influx_string_fields_dropped",
            "String fields of Influx line protocol, dropped because they hold no number",
            self.influx_string_fields_dropped.clone(),
        );
        registry.register(
            "otlp_points_rejected",
            "OTLP data points refused within an accepted request (reported to the client as partial success)",
            self.otlp_points_rejected.clone(),
        );
        registry.register(
            "remote_write_samples_rejected",
            "Remote-write samples refused while the rest of their request was stored (answered 400)",
            self.remote_write_samples_rejected.clone(),
        );
        registry.register(
            "samples_limited",
            "Samples refused by a per-client cap (limit=samples_per_second: answered 429; \
             limit=active_series: the rest of the request stored), by client",
            self.samples_limited.clone(),
        );
        registry.register(
            "active_series_tracked",
            "Series tracked for --max-active-series over all clients, quiet ones until the next sweep",
            self.active_series_tracked.clone(),
        );
    }

    /// Counts `samples` of `client` refused by `limit`.
    pub fn record_samples_limited(&self, client: &str, limit: &'static str, samples: usize) {
        let client = {
            let mut labelled = self
                .labelled_clients
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if labelled.contains(client) {
                client.to_owned()
            } else if labelled.len() < MAX_LABELLED_CLIENTS {
                labelled.insert(client.to_owned());
                client.to_owned()
            } else {
                "_other".to_owned()
            }
        };
        self.samples_limited
            .get_or_create(&ClientLimitLabel { client, limit })
            .inc_by(samples as u64);
    }

    pub fn record_secret_reload(&self, kind: SecretKind, success: bool) {
        self.secret_reloads
            .get_or_create(&SecretReloadLabel {
                secret: kind.label(),
                outcome: if success { "success" } else { "failure" },
            })
            .inc();
    }

    pub fn record_connection_closed(&self, reason: &'static str) {
        self.connections_closed
            .get_or_create(&ConnectionClosedLabel { reason })
            .inc();
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

    #[test]
    fn limited_samples_are_counted_per_client_up_to_a_bound_then_as_other() {
        let metrics = IngestMetrics::default();
        for client in 0..MAX_LABELLED_CLIENTS {
            metrics.record_samples_limited(&format!("c{client}"), "active_series", 1);
        }
        metrics.record_samples_limited("c0", "samples_per_second", 2);
        metrics.record_samples_limited("late", "active_series", 3);
        metrics.record_samples_limited("later", "active_series", 4);
        let count = |client: &str, limit: &'static str| {
            metrics
                .samples_limited
                .get_or_create(&ClientLimitLabel {
                    client: client.to_owned(),
                    limit,
                })
                .get()
        };
        assert_eq!(count("c0", "active_series"), 1);
        assert_eq!(count("c0", "samples_per_second"), 2);
        assert_eq!(count("_other", "active_series"), 7);
        assert_eq!(count("late", "active_series"), 0);
    }
}
