//! One reconcile of one MetricStream, as a pipeline: validate (pure) → dereference (the reads
//! the build needs) → build (pure) → apply in order what may have changed ([`skip`]) → prune by
//! label (once per generation) → compute status (pure; the workloads' pods diagnosed by
//! [`diagnose`]) → write status only if it changed, with Events for what changed
//! ([`status::notices`]). Apply and prune walk one table of child kinds ([`kinds`]).
//!
//! The finalizer `metricstream.dev/cleanup` ([`finalizer`]) is present only while the stream has
//! something ownerReferences cannot collect (a KafkaTopic in the Kafka cluster's namespace; an
//! admin-API topic under deletionPolicy Delete); [`cleanup`] handles those on deletion.
//! Everything else is owned and garbage-collected.

pub mod apply;
pub mod build;
pub mod cleanup;
pub mod dereference;
pub mod diagnose;
pub mod finalizer;
pub mod kinds;
pub mod prune;
pub mod scale;
pub mod sink_probe;
pub mod skip;
pub mod status;
pub mod termination;
pub mod validate;

#[cfg(test)]
pub(crate) mod fixtures;

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::context::{Context, stream_key};
use crate::crd::{MetricStream, MetricStreamStatus};
use crate::error::{Error, KubeResultExt};
use crate::labels;
use build::DesiredTopic;
use finalizer::{add_finalizer, remove_finalizer};
use prune::Pruned;

/// How often a stream that copies Kafka credentials from the Kafka namespace checks them for
/// rotation.
const CREDENTIALS_RECHECK: Duration = Duration::from_secs(30);
/// How often a stream waiting for Strimzi to make its user's Secret looks again.
const CREDENTIALS_PENDING_POLL: Duration = Duration::from_secs(5);
/// How often a stream with `spec.consumer.autoscaling` measures its lag and decides.
const AUTOSCALE_INTERVAL: Duration = Duration::from_secs(15);
/// How often to look again at something the operator cannot watch (an admin-API or external
/// topic that is not ready yet, a KafkaTopic being deleted).
const POLL: Duration = Duration::from_secs(30);

/// The controller's reconcile function.
pub async fn reconcile(
    object: Arc<DeserializeGuard<MetricStream>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let stream = match &object.0 {
        Ok(stream) => stream,
        Err(invalid) => {
            return Err(Error::InvalidObject {
                name: invalid.metadata.name.clone().unwrap_or_default(),
                error: invalid.error.clone(),
            });
        }
    };
    ctx.metrics.reconciles.inc();
    let started = Instant::now();
    let result = if stream.metadata.deletion_timestamp.is_some() {
        cleanup::cleanup(stream, &ctx).await
    } else {
        apply_stream(stream, &ctx).await
    };
    ctx.metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.record_success(&stream_key(stream));
    }
    result
}

fn now() -> Time {
    Time(Timestamp::now())
}

fn streams_api(ctx: &Context, stream: &MetricStream) -> Result<Api<MetricStream>, Error> {
    let namespace = stream
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    Ok(Api::namespaced(ctx.client.clone(), &namespace))
}

async fn apply_stream(stream: &MetricStream, ctx: &Context) -> Result<Action, Error> {
    let api = streams_api(ctx, stream)?;
    let regarding = stream.object_ref(&());
    let old_status = stream.status.as_ref();

    let validated = match validate::validate(stream) {
        Ok(validated) => validated,
        Err(invalid) => {
            ctx.metrics.failed("invalid_spec");
            let message = invalid.to_string();
            let new =
                status::invalid_spec(stream.metadata.generation, &message, old_status, &now());
            if status::needs_write(old_status, &new) {
                write_status(&api, stream, &new).await?;
                ctx.publish(
                    &regarding,
                    EventType::Warning,
                    "InvalidSpec",
                    "Validate",
                    message,
                )
                .await;
            }
            // Retrying cannot help: wait for the spec to change.
            return Ok(Action::await_change());
        }
    };

    let stream = if validated.needs_finalizer() {
        add_finalizer(&api, stream).await?
    } else {
        stream.clone()
    };

    let dereferenced = dereference::dereference(ctx, &validated).await?;
    let mut validated = validated;
    let scaled = scale::autoscale(ctx, &mut validated, &dereferenced, old_status, &now()).await;
    let desired = build::build(&validated, &ctx.workload, &dereferenced.credentials);
    let applied = apply::apply_all(ctx, &validated, &dereferenced, &desired).await?;
    if let Some((reason, note)) = &applied.topic_change {
        ctx.publish(&regarding, EventType::Normal, reason, "Apply", note.clone())
            .await;
    }
    let pruned = if ctx.pruned.needs_prune(&validated.uid, validated.generation) {
        let pruned = prune::prune(ctx, &validated, &desired).await?;
        ctx.pruned.record(&validated.uid, validated.generation);
        pruned
    } else {
        Vec::new()
    };
    for pruned in pruned {
        let (reason, note) = match pruned {
            Pruned::Deleted { kind, name } => (
                "Pruned",
                format!("deleted {kind} {name}, which the spec no longer asks for"),
            ),
            Pruned::Retained { kind, name } => (
                "DataRetained",
                format!(
                    "{kind} {name} is no longer used and was kept (deletionPolicy Retain); it is no longer managed: delete it by hand when its data is not needed"
                ),
            ),
        };
        ctx.publish(&regarding, EventType::Normal, reason, "Prune", note)
            .await;
    }
    if !validated.needs_finalizer() {
        remove_finalizer(&api, &stream).await?;
    }

    let mut new = status::compute(&validated, &applied.observed, old_status, &now());
    new.autoscaling = scaled.as_ref().map(|scaled| scaled.status.clone());
    ctx.metrics.observe_stream(&validated, &new);
    if status::needs_write(old_status, &new) {
        write_status(&api, &stream, &new).await?;
        publish_transitions(ctx, &regarding, old_status, &new).await;
    }
    if let Some((warning, reason, note)) = scaled.and_then(|scaled| scaled.notice) {
        let type_ = if warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        ctx.publish(&regarding, type_, reason, "Autoscale", note)
            .await;
    }
    if let Some(error) = applied.topic_error {
        // Reported in status; the error makes the controller back off and record it.
        return Err(Error::Topic {
            topic: validated
                .kafka()
                .map(|k| k.topic.clone())
                .unwrap_or_default(),
            message: error,
        });
    }
    let backend_ready =
        status::condition(&new, status::BACKEND_READY).is_some_and(|c| c.status == "True");
    let unwatchable_topic = matches!(
        desired.topic,
        DesiredTopic::Admin(_) | DesiredTopic::External(_)
    );
    if applied.observed.credentials_pending.is_some() {
        return Ok(Action::requeue(CREDENTIALS_PENDING_POLL));
    }
    if validated.consumer.autoscaling.is_some() {
        // The lag is measured on every reconcile: come back at the autoscaler's pace.
        return Ok(Action::requeue(ctx.resync.min(AUTOSCALE_INTERVAL)));
    }
    if unwatchable_topic && !backend_ready {
        return Ok(Action::requeue(POLL));
    }
    if desired.credentials.is_some() {
        // Nothing announces a rotated password or CA in the Kafka namespace (watching Secrets
        // there would need cluster-wide rights on them): look again soon.
        return Ok(Action::requeue(ctx.resync.min(CREDENTIALS_RECHECK)));
    }
    Ok(Action::requeue(ctx.resync))
}

/// The Events the status change is worth ([`status::notices`]).
async fn publish_transitions(
    ctx: &Context,
    regarding: &k8s_openapi::api::core::v1::ObjectReference,
    old: Option<&MetricStreamStatus>,
    new: &MetricStreamStatus,
) {
    for notice in status::notices(old, new) {
        let type_ = if notice.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        ctx.publish(regarding, type_, &notice.reason, "Reconcile", notice.note)
            .await;
    }
}

async fn write_status(
    api: &Api<MetricStream>,
    stream: &MetricStream,
    status: &MetricStreamStatus,
) -> Result<(), Error> {
    let name = stream.name_any();
    let patch = json!({
        "apiVersion": MetricStream::api_version(&()),
        "kind": MetricStream::kind(&()),
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(labels::FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .doing(|| format!("writing the status of MetricStream {name}"))?;
    Ok(())
}
