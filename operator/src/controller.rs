//! The controller: watches MetricStreams and what they own, runs the reconcile pipeline
//! ([`crate::reconcile`]) for each, and turns failures into per-object exponential backoff,
//! Warning Events and metrics.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{PredicateConfig, WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::context::{ChildStores, Context, stream_key};
use crate::crd::MetricStream;
use crate::error::Error;
use crate::labels;
use crate::strimzi::KafkaTopic;
use crate::triggers::{self, ChangeFilter};

/// After a failed reconcile: metrics, a Warning Event, and an exponentially growing delay.
pub fn error_policy(
    object: Arc<DeserializeGuard<MetricStream>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let key = stream_key(object.as_ref());
    ctx.metrics.failed(error.metric_label());
    tracing::warn!(namespace = %key.0, name = %key.1, %error, "reconcile failed");
    let regarding = object.object_ref(&());
    let reason = error.event_reason();
    let note = error_chain(error);
    let publisher = ctx.clone();
    tokio::spawn(async move {
        publisher
            .publish(&regarding, EventType::Warning, reason, "Reconcile", note)
            .await;
    });
    if matches!(error, Error::InvalidObject { .. }) {
        // Nothing to retry until someone fixes the object.
        return Action::await_change();
    }
    Action::requeue(ctx.record_failure(key))
}

/// The error and its sources, as one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// How long the controller waits after an event before reconciling, so a burst of events (a
/// new stream's children appearing) makes one reconcile.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Runs the controller until `shutdown` is cancelled.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>, shutdown: CancellationToken) {
    let client = ctx.client.clone();
    fn scoped<K>(client: &Client, namespace: &Option<String>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    // The store keeps every MetricStream (status included) for the reconciler; only spec and
    // deletion changes trigger (see `triggers`).
    let (reader, writer) = reflector::store();
    let streams = watcher(
        scoped::<DeserializeGuard<MetricStream>>(&client, &namespace),
        watcher::Config::default(),
    )
    .reflect(writer)
    .applied_objects()
    .predicate_filter(triggers::stream_trigger, PredicateConfig::default());
    // Only what the operator manages is watched: never every ConfigMap in the cluster. The
    // children are cached (managedFields dropped) so a reconcile can tell an unchanged child
    // from one that was edited or deleted (see `reconcile::skip`); each cache is updated before
    // the event that triggers a reconcile is passed on.
    let managed = watcher::Config::default().labels(&labels::managed_selector());
    let (config_maps, config_map_writer) = reflector::store();
    let (services, service_writer) = reflector::store();
    let (network_policies, network_policy_writer) = reflector::store();
    let (disruption_budgets, disruption_budget_writer) = reflector::store();
    let (deployments, deployment_writer) = reflector::store();
    let (stateful_sets, stateful_set_writer) = reflector::store();
    let (pvcs, pvc_writer) = reflector::store();
    let (pods, pod_writer) = reflector::store();
    ctx.set_child_stores(ChildStores {
        config_maps,
        services,
        network_policies,
        disruption_budgets,
        deployments,
        stateful_sets,
        pvcs,
        pods,
    });
    let mut controller = Controller::for_stream(streams, reader.clone())
        .owns_stream(
            watcher(
                scoped::<PartialObjectMeta<ConfigMap>>(&client, &namespace),
                managed.clone(),
            )
            .modify(drop_managed_fields::<PartialObjectMeta<ConfigMap>>)
            .reflect(config_map_writer)
            .touched_objects(),
        )
        .owns_stream(
            watcher(
                scoped::<PartialObjectMeta<Service>>(&client, &namespace),
                managed.clone(),
            )
            .modify(drop_managed_fields::<PartialObjectMeta<Service>>)
            .reflect(service_writer)
            .touched_objects(),
        )
        .owns_stream(
            watcher(
                scoped::<PartialObjectMeta<NetworkPolicy>>(&client, &namespace),
                managed.clone(),
            )
            .modify(drop_managed_fields::<PartialObjectMeta<NetworkPolicy>>)
            .reflect(network_policy_writer)
            .touched_objects(),
        )
        // The disruption controller rewrites a budget's status as pods come and go: only the
        // operator's own fields trigger.
        .owns_stream(filtered(
            watcher(
                scoped::<PartialObjectMeta<PodDisruptionBudget>>(&client, &namespace),
                managed.clone(),
            )
            .modify(drop_managed_fields::<PartialObjectMeta<PodDisruptionBudget>>)
            .reflect(disruption_budget_writer),
            triggers::spec_trigger::<PartialObjectMeta<PodDisruptionBudget>>,
        ))
        .owns_stream(filtered(
            watcher(scoped::<Deployment>(&client, &namespace), managed.clone())
                .modify(keep_deployment_essentials)
                .reflect(deployment_writer),
            triggers::deployment_trigger,
        ))
        .owns_stream(filtered(
            watcher(scoped::<StatefulSet>(&client, &namespace), managed.clone())
                .modify(keep_stateful_set_essentials)
                .reflect(stateful_set_writer),
            triggers::stateful_set_trigger,
        ))
        // Retained PVCs carry no ownerReference, so PVCs map by label.
        .watches_stream(
            filtered(
                watcher(
                    scoped::<PersistentVolumeClaim>(&client, &namespace),
                    watcher::Config::default().labels(labels::STREAM),
                )
                .modify(drop_managed_fields::<PersistentVolumeClaim>)
                .reflect(pvc_writer),
                triggers::pvc_trigger,
            ),
            stream_of_labelled,
        )
        // The workloads' pods (the managed-by label on their template keeps every other pod of
        // the cluster out of the cache). Owned by ReplicaSets (or the spilling ingest's
        // StatefulSet), so mapped by label; only a change
        // in what the status says of a pod triggers (see `triggers::pod_trigger`).
        .watches_stream(
            filtered(
                watcher(scoped::<Pod>(&client, &namespace), managed.clone())
                    .modify(keep_pod_essentials)
                    .reflect(pod_writer),
                triggers::pod_trigger,
            ),
            stream_of_labelled,
        );
    if ctx.strimzi_installed {
        // KafkaTopics live in the Kafka cluster's namespace: found by their owner labels.
        controller = controller.watches_stream(
            filtered(
                watcher(
                    Api::<KafkaTopic>::all(client.clone()),
                    watcher::Config::default().labels(labels::OWNER_NAME),
                ),
                triggers::topic_trigger,
            ),
            move |topic| {
                let labels = topic.labels();
                let name = labels.get(labels::OWNER_NAME)?;
                let namespace = labels.get(labels::OWNER_NAMESPACE)?;
                Some(ObjectRef::<DeserializeGuard<MetricStream>>::new(name).within(namespace))
            },
        );
    }
    tracing::info!(
        namespace = namespace.as_deref().unwrap_or("<all>"),
        strimzi = ctx.strimzi_installed,
        "controller starting"
    );
    let sweeper = tokio::spawn(sweep(ctx.clone(), reader.clone(), shutdown.clone()));
    let lag_watcher = tokio::spawn(crate::lag_watch::run(ctx.clone(), reader, shutdown.clone()));
    controller
        .with_config(Config::default().debounce(DEBOUNCE).concurrency(8))
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(crate::reconcile::reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                Err(error) => tracing::debug!(%error, "controller event"),
            }
        })
        .await;
    sweeper.abort();
    lag_watcher.abort();
    // A replica that is no longer the leader must not go on exporting stale per-stream gauges.
    ctx.metrics
        .retain_streams(&std::collections::HashSet::new());
    ctx.clear_child_stores();
    tracing::info!("controller stopped");
}

fn drop_managed_fields<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

/// A cached Deployment keeps its metadata and status: the spec (mostly the pod template) is
/// read by neither the triggers (they use `metadata.generation`) nor the status step.
fn keep_deployment_essentials(deployment: &mut Deployment) {
    drop_managed_fields(deployment);
    deployment.spec = None;
}

/// A cached StatefulSet keeps its metadata and status, like a Deployment.
fn keep_stateful_set_essentials(stateful_set: &mut StatefulSet) {
    drop_managed_fields(stateful_set);
    stateful_set.spec = None;
}

/// The stream a child names in its `metricstream.dev/stream` label (PVCs, which a retained
/// claim keeps without an ownerReference, and Pods, which ReplicaSets own).
fn stream_of_labelled<K: Resource>(child: K) -> Option<ObjectRef<DeserializeGuard<MetricStream>>> {
    let stream = child.labels().get(labels::STREAM)?;
    let namespace = child.namespace()?;
    Some(ObjectRef::new(stream).within(&namespace))
}

/// A cached Pod keeps its metadata (without annotations) and status: the diagnosis reads
/// nothing of the spec, the largest part of a pod.
fn keep_pod_essentials(pod: &mut Pod) {
    drop_managed_fields(pod);
    pod.metadata.annotations = None;
    pod.spec = None;
}

/// The objects of a watch that [`ChangeFilter`] lets through.
fn filtered<K>(
    events: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    relevant: fn(&K) -> u64,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + Send + 'static,
{
    let mut filter = ChangeFilter::new(relevant);
    events.filter_map(move |event| {
        let admitted = match event {
            Ok(event) => filter.admit(event).map(Ok),
            Err(error) => Some(Err(error)),
        };
        std::future::ready(admitted)
    })
}

/// Now and then, forgets the per-stream memory of streams that are gone.
async fn sweep(
    ctx: Arc<Context>,
    streams: Store<DeserializeGuard<MetricStream>>,
    shutdown: CancellationToken,
) {
    let mut every = tokio::time::interval(Duration::from_secs(600));
    every.tick().await;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let live = streams.state();
        let keys = live.iter().map(|s| stream_key(s.as_ref())).collect();
        let uids = live.iter().filter_map(|s| s.meta().uid.clone()).collect();
        ctx.forget_all_but(&keys, &uids);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chains_name_every_cause_once() {
        let error = Error::Topic {
            topic: "t".into(),
            message: "broker down".into(),
        };
        assert_eq!(error_chain(&error), "topic t: broker down");
    }
}
