//! One reconcile of one MetricStream, as a pipeline: validate (pure) → build (pure) → apply in
//! order what may have changed ([`skip`]) → prune by label (once per generation) → compute status
//! (pure; the workloads' pods diagnosed by [`diagnose`]) → write status only if it changed, with
//! Events for what changed ([`status::notices`]).
//!
//! The finalizer `metricstream.dev/cleanup` is present only while the stream has something
//! ownerReferences cannot collect (a KafkaTopic in the Kafka cluster's namespace; an admin-API
//! topic under deletionPolicy Delete). Everything else is owned and garbage-collected.

pub mod apply;
pub mod build;
pub mod diagnose;
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
use crate::crd::{Backend, DeletionPolicy, MetricStream, MetricStreamStatus, TopicManagement};
use crate::error::{Error, KubeResultExt, is_not_found};
use crate::labels;
use crate::strimzi::{KafkaTopic, KafkaUser};
use apply::Pruned;
use build::DesiredTopic;

/// How often a stream that copies Kafka credentials from the Kafka namespace checks them for
/// rotation.
const CREDENTIALS_RECHECK: Duration = Duration::from_secs(30);
/// How often a stream waiting for Strimzi to make its user's Secret looks again.
const CREDENTIALS_PENDING_POLL: Duration = Duration::from_secs(5);
/// How long deletion waits for Strimzi to delete a KafkaTopic (it has its own finalizer) or for
/// the admin API to delete a topic, before releasing the MetricStream anyway.
pub const CLEANUP_DEADLINE: Duration = Duration::from_secs(120);
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
        cleanup(stream, &ctx).await
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

    let desired = build::build(&validated, &ctx.workload);
    let applied = apply::apply_all(ctx, &validated, &desired).await?;
    if let Some((reason, note)) = &applied.topic_change {
        ctx.publish(&regarding, EventType::Normal, reason, "Apply", note.clone())
            .await;
    }
    let pruned = if ctx.pruned.needs_prune(&validated.uid, validated.generation) {
        let pruned = apply::prune(ctx, &validated, &desired).await?;
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

    let new = status::compute(&validated, &applied.observed, old_status, &now());
    if status::needs_write(old_status, &new) {
        write_status(&api, &stream, &new).await?;
        publish_transitions(ctx, &regarding, old_status, &new).await;
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

fn has_finalizer(stream: &MetricStream) -> bool {
    stream.finalizers().iter().any(|f| f == labels::FINALIZER)
}

/// Adds the finalizer (a merge patch guarded by resourceVersion, so a concurrent change to the
/// list is a conflict and a retry, never a lost finalizer) and returns the updated object.
async fn add_finalizer(
    api: &Api<MetricStream>,
    stream: &MetricStream,
) -> Result<MetricStream, Error> {
    if has_finalizer(stream) {
        return Ok(stream.clone());
    }
    let mut finalizers = stream.finalizers().to_vec();
    finalizers.push(labels::FINALIZER.to_owned());
    patch_finalizers(api, stream, finalizers).await
}

async fn remove_finalizer(api: &Api<MetricStream>, stream: &MetricStream) -> Result<(), Error> {
    if !has_finalizer(stream) {
        return Ok(());
    }
    let finalizers: Vec<String> = stream
        .finalizers()
        .iter()
        .filter(|f| *f != labels::FINALIZER)
        .cloned()
        .collect();
    match patch_finalizers(api, stream, finalizers).await {
        Ok(_) => Ok(()),
        // Gone already: the last finalizer was ours and the object was deleted.
        Err(Error::Kube { source, .. }) if is_not_found(&source) => Ok(()),
        Err(error) => Err(error),
    }
}

async fn patch_finalizers(
    api: &Api<MetricStream>,
    stream: &MetricStream,
    finalizers: Vec<String>,
) -> Result<MetricStream, Error> {
    let name = stream.name_any();
    let patch = json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": stream.resource_version(),
        }
    });
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .doing(|| format!("updating the finalizers of MetricStream {name}"))
}

/// Deletion: handle per deletionPolicy what ownerReferences cannot (KafkaTopics in other
/// namespaces, an admin-API topic), then release the finalizer. Owned children and, under
/// Delete, the PVCs are the garbage collector's job.
async fn cleanup(stream: &MetricStream, ctx: &Context) -> Result<Action, Error> {
    if !has_finalizer(stream) {
        return Ok(Action::await_change());
    }
    let api = streams_api(ctx, stream)?;
    let regarding = stream.object_ref(&());
    let namespace = stream.namespace().unwrap_or_default();
    let name = stream.name_any();
    let policy = stream.spec.deletion_policy;
    let retain = policy == DeletionPolicy::Retain;
    let uid = stream.uid().unwrap_or_default();
    let overdue = stream
        .metadata
        .deletion_timestamp
        .as_ref()
        .is_some_and(|since| {
            let waited = Timestamp::now().duration_since(since.0);
            waited.as_secs() >= CLEANUP_DEADLINE.as_secs() as i64
        });
    let mut waiting_for: Vec<String> = Vec::new();

    if ctx.strimzi_installed {
        let known_namespace = stream
            .spec
            .kafka
            .as_ref()
            .and_then(|k| k.strimzi.as_ref())
            .map(|s| s.namespace.clone());
        // The KafkaUser is credentials, not data: deleted whatever the deletionPolicy.
        let users = apply::strimzi_objects_of::<KafkaUser>(
            ctx,
            &namespace,
            &name,
            known_namespace.as_deref(),
        )
        .await?;
        for user in users {
            if user.metadata.deletion_timestamp.is_none() {
                let users: Api<KafkaUser> =
                    Api::namespaced(ctx.client.clone(), &user.namespace().unwrap_or_default());
                apply::let_go(&users, &user.metadata, false, &uid).await?;
            }
        }
        let topics = apply::strimzi_objects_of::<KafkaTopic>(
            ctx,
            &namespace,
            &name,
            known_namespace.as_deref(),
        )
        .await?;
        for topic in topics {
            let topic_ns = topic.namespace().unwrap_or_default();
            let topic_name = topic.name_any();
            let topics: Api<KafkaTopic> = Api::namespaced(ctx.client.clone(), &topic_ns);
            if retain {
                apply::let_go(&topics, &topic.metadata, true, &uid).await?;
                ctx.publish(
                    &regarding,
                    EventType::Normal,
                    "DataRetained",
                    "Cleanup",
                    format!(
                        "KafkaTopic {topic_ns}/{topic_name} was kept (deletionPolicy Retain) and is no longer managed"
                    ),
                )
                .await;
                continue;
            }
            if topic.metadata.deletion_timestamp.is_none() {
                apply::let_go(&topics, &topic.metadata, false, &uid).await?;
            }
            // Strimzi's own finalizer deletes the Kafka topic first; wait for it.
            waiting_for.push(format!("KafkaTopic {topic_ns}/{topic_name}"));
        }
    }

    if !retain
        && stream.spec.backend == Backend::Kafka
        && let Some(kafka) = &stream.spec.kafka
        && kafka.topic_management == TopicManagement::Admin
    {
        let topic = kafka
            .topic
            .clone()
            .unwrap_or_else(|| validate::default_topic(&namespace, &name));
        let deleted = match validate::validate(stream) {
            Ok(validated) => match validated.kafka() {
                Some(plan) => {
                    let secrets = Api::namespaced(ctx.client.clone(), &namespace);
                    match crate::topics::resolve_security(&secrets, &plan.security).await {
                        Ok(security) => {
                            ctx.topics
                                .delete(&kafka.bootstrap_servers, &topic, &security)
                                .await
                        }
                        Err(error) => Err(error),
                    }
                }
                None => Ok(()),
            },
            Err(invalid) => Err(format!("the spec is invalid: {invalid}")),
        };
        match deleted {
            Ok(()) => {
                ctx.publish(
                    &regarding,
                    EventType::Normal,
                    "TopicDeleted",
                    "Cleanup",
                    format!("deleted Kafka topic {topic} (deletionPolicy Delete)"),
                )
                .await;
            }
            Err(error) if overdue => {
                ctx.publish(
                    &regarding,
                    EventType::Warning,
                    "TopicDeletionFailed",
                    "Cleanup",
                    format!("gave up deleting Kafka topic {topic} after {CLEANUP_DEADLINE:?}: {error}; delete it by hand"),
                )
                .await;
            }
            Err(error) => {
                return Err(Error::Topic {
                    topic,
                    message: format!("deleting: {error}"),
                });
            }
        }
    }

    if !waiting_for.is_empty() {
        if !overdue {
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
        ctx.publish(
            &regarding,
            EventType::Warning,
            "TopicDeletionBlocked",
            "Cleanup",
            format!(
                "{} still not deleted after {CLEANUP_DEADLINE:?} (is Strimzi's Topic Operator running?); releasing the MetricStream anyway. Remove the KafkaTopic's strimzi.io/topic-operator finalizer by hand if it stays",
                waiting_for.join(", ")
            ),
        )
        .await;
    }
    remove_finalizer(&api, stream).await?;
    Ok(Action::await_change())
}
