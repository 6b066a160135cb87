//! The operator's Prometheus metrics, served on the admin listener's `/metrics`.

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::crd::MetricStreamStatus;
use crate::reconcile::validate::ValidatedStream;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub reason: String,
}

/// One stream.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabels {
    pub namespace: String,
    pub stream: String,
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
    /// `metricstream_operator_stream_ready{namespace,stream}`: 1 while the stream's Ready
    /// condition is True.
    pub stream_ready: Family<StreamLabels, Gauge>,
    /// `metricstream_operator_consumer_replicas{namespace,stream}`: consumer pods that exist.
    pub consumer_replicas: Family<StreamLabels, Gauge>,
    /// `metricstream_operator_consumer_desired_replicas{namespace,stream}`: what the spec or
    /// the autoscaler asks for.
    pub consumer_desired_replicas: Family<StreamLabels, Gauge>,
    /// `metricstream_operator_stream_lag_records{namespace,stream}`: the consumer group's lag as
    /// the operator last measured it (the autoscaler, or `lag_watch`); absent while unknown.
    pub stream_lag: Family<StreamLabels, Gauge>,
    /// The streams the gauges above have series for (a Family cannot list its own).
    streams: Mutex<HashSet<StreamLabels>>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            reconciles: Counter::default(),
            failures: Family::default(),
            duration: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            applies_skipped: Counter::default(),
            stream_ready: Family::default(),
            consumer_replicas: Family::default(),
            consumer_desired_replicas: Family::default(),
            stream_lag: Family::default(),
            streams: Mutex::default(),
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
        registry.register(
            "metricstream_operator_stream_ready",
            "1 while the MetricStream's Ready condition is True, else 0",
            metrics.stream_ready.clone(),
        );
        registry.register(
            "metricstream_operator_consumer_replicas",
            "Consumer pods of the MetricStream that exist",
            metrics.consumer_replicas.clone(),
        );
        registry.register(
            "metricstream_operator_consumer_desired_replicas",
            "Consumer pods the spec or the autoscaler asks for",
            metrics.consumer_desired_replicas.clone(),
        );
        registry.register(
            "metricstream_operator_stream_lag_records",
            "The consumer group's lag in records as the operator last measured it (committed versus end offsets; absent while unknown)",
            metrics.stream_lag.clone(),
        );
        metrics
    }

    /// Sets the stream's gauges from the status just computed.
    pub fn observe_stream(&self, stream: &ValidatedStream, status: &MetricStreamStatus) {
        let labels = StreamLabels {
            namespace: stream.namespace.clone(),
            stream: stream.name.clone(),
        };
        if let Ok(mut streams) = self.streams.lock() {
            streams.insert(labels.clone());
        }
        let ready = status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        self.stream_ready
            .get_or_create(&labels)
            .set(i64::from(ready));
        self.consumer_replicas
            .get_or_create(&labels)
            .set(status.consumer_replicas.unwrap_or(0).into());
        self.consumer_desired_replicas
            .get_or_create(&labels)
            .set(stream.consumer.replicas.into());
        // A stream that does not autoscale has its lag set by `lag_watch`.
        if let Some(autoscaling) = &status.autoscaling {
            let lag = autoscaling
                .lag_records
                .and_then(|lag| u64::try_from(lag).ok());
            self.set_stream_lag(&labels, lag);
        }
    }

    /// Sets (`Some`) or drops (`None`: unknown) a stream's lag series.
    pub fn set_stream_lag(&self, labels: &StreamLabels, lag: Option<u64>) {
        if let Ok(mut streams) = self.streams.lock() {
            streams.insert(labels.clone());
        }
        match lag {
            Some(lag) => {
                self.stream_lag
                    .get_or_create(labels)
                    .set(i64::try_from(lag).unwrap_or(i64::MAX));
            }
            None => {
                self.stream_lag.remove(labels);
            }
        }
    }

    /// Drops the gauges of streams that no longer exist (`keys`: (namespace, name)).
    pub fn retain_streams(&self, keys: &HashSet<(String, String)>) {
        let Ok(mut streams) = self.streams.lock() else {
            return;
        };
        streams.retain(|labels| {
            let exists = keys.contains(&(labels.namespace.clone(), labels.stream.clone()));
            if !exists {
                self.stream_ready.remove(labels);
                self.consumer_replicas.remove(labels);
                self.consumer_desired_replicas.remove(labels);
                self.stream_lag.remove(labels);
            }
            exists
        });
    }

    pub fn failed(&self, reason: &str) {
        self.failures
            .get_or_create(&FailureLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }
}
