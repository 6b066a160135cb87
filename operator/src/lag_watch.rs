//! The lag of the streams the autoscaler does not scale, measured every [`INTERVAL`] the same way
//! ([`crate::reconcile::scale::measure`]) and exported as
//! `metricstream_operator_stream_lag_records`: one lag series per stream, for dashboards and the
//! lag alert, that does not vanish with the consumers (a stopped consumer exports nothing; its
//! group's offsets in Kafka still tell). Autoscaled streams are measured by their reconciles.
//!
//! A file stream without a running consumer has no reporter (the consumers read the queue's
//! offsets off its volume): its series is dropped, as for any lag that cannot be measured.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::Store;
use tokio_util::sync::CancellationToken;

use crate::context::Context;
use crate::crd::MetricStream;
use crate::metrics::StreamLabels;
use crate::reconcile::dereference::operator_security;
use crate::reconcile::scale::measure;
use crate::reconcile::validate::{ValidatedBackend, validate};

/// How often each stream's lag is measured.
pub const INTERVAL: Duration = Duration::from_secs(15);
/// Streams measured at once (each measurement is bounded by the lag source's timeouts).
const CONCURRENCY: usize = 8;

/// Measures until `shutdown` is cancelled.
pub async fn run(
    ctx: Arc<Context>,
    streams: Store<DeserializeGuard<MetricStream>>,
    shutdown: CancellationToken,
) {
    let mut every = tokio::time::interval(INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let live = streams.state();
        futures::stream::iter(live)
            .for_each_concurrent(CONCURRENCY, |stream| {
                let ctx = ctx.clone();
                async move {
                    if let Ok(stream) = &stream.0 {
                        measure_one(&ctx, stream).await;
                    }
                }
            })
            .await;
    }
}

async fn measure_one(ctx: &Context, stream: &MetricStream) {
    if stream.metadata.deletion_timestamp.is_some() || stream.spec.consumer.autoscaling.is_some() {
        return;
    }
    let Ok(validated) = validate(stream) else {
        return;
    };
    let security = match &validated.backend {
        ValidatedBackend::Kafka(plan) => {
            Some(operator_security(ctx, &validated.namespace, &plan.security).await)
        }
        ValidatedBackend::File { .. } => None,
    };
    let labels = StreamLabels {
        namespace: validated.namespace.clone(),
        stream: validated.name.clone(),
    };
    match measure(ctx, &validated, security.as_ref()).await {
        Ok(lag) => ctx.metrics.set_stream_lag(&labels, Some(lag)),
        Err(error) => {
            tracing::debug!(stream = %labels.stream, namespace = %labels.namespace, %error, "lag unknown");
            ctx.metrics.set_stream_lag(&labels, None);
        }
    }
}
