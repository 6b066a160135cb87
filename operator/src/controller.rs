//! The controller: watches MetricStreams and what they own, runs the reconcile pipeline
//! ([`crate::reconcile`]) for each, and turns failures into per-object exponential backoff,
//! Warning Events and metrics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, PersistentVolumeClaim, Service};
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::config::WorkloadDefaults;
use crate::crd::MetricStream;
use crate::error::Error;
use crate::labels;
use crate::metrics::Metrics;
use crate::strimzi::KafkaTopic;
use crate::topics::TopicAdmin;

/// The first retry after a failure; each further failure doubles it.
pub const BACKOFF_START: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub workload: WorkloadDefaults,
    /// Requeue of a healthy stream: repairs drift nobody told us about.
    pub resync: Duration,
    /// Whether the KafkaTopic CRD was found at startup.
    pub strimzi_installed: bool,
    pub metrics: Arc<Metrics>,
    pub topics: Arc<dyn TopicAdmin>,
    /// Consecutive failures per stream (namespace, name); reset on success.
    failures: Mutex<HashMap<(String, String), u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        reporter: Reporter,
        workload: WorkloadDefaults,
        resync: Duration,
        strimzi_installed: bool,
        metrics: Arc<Metrics>,
        topics: Arc<dyn TopicAdmin>,
    ) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            workload,
            resync,
            strimzi_installed,
            metrics,
            topics,
            failures: Mutex::default(),
        }
    }

    /// Publishes an Event on `regarding`; a failure to publish is logged, never fatal.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let mut note = note;
        if note.len() > 1000 {
            let mut cut = 1000;
            while !note.is_char_boundary(cut) {
                cut -= 1;
            }
            note.truncate(cut);
        }
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, regarding).await {
            tracing::warn!(%error, reason, "publishing an Event failed");
        }
    }

    pub fn record_success(&self, key: &(String, String)) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(key);
        }
    }

    /// Counts a failure and returns how long to wait before the next try.
    pub fn record_failure(&self, key: (String, String)) -> Duration {
        let attempt = match self.failures.lock() {
            Ok(mut failures) => {
                let count = failures.entry(key).or_insert(0);
                *count = count.saturating_add(1);
                *count
            }
            Err(_) => 1,
        };
        backoff_delay(attempt)
    }
}

/// 1 s, 2 s, 4 s, … capped at 5 minutes, for the `attempt`-th consecutive failure.
pub fn backoff_delay(attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(16);
    BACKOFF_START
        .saturating_mul(1u32 << exponent)
        .min(BACKOFF_MAX)
}

pub fn stream_key<K: Resource>(object: &K) -> (String, String) {
    (
        object.meta().namespace.clone().unwrap_or_default(),
        object.meta().name.clone().unwrap_or_default(),
    )
}

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
    let streams: Api<DeserializeGuard<MetricStream>> = scoped(&client, &namespace);
    // Only what the operator manages is cached: never every ConfigMap in the cluster.
    let managed = watcher::Config::default().labels(&labels::managed_selector());
    let mut controller = Controller::new(streams, watcher::Config::default())
        .owns(scoped::<ConfigMap>(&client, &namespace), managed.clone())
        .owns(scoped::<Service>(&client, &namespace), managed.clone())
        .owns(scoped::<Deployment>(&client, &namespace), managed.clone())
        // Retained PVCs carry no ownerReference, so PVCs map by label.
        .watches(
            scoped::<PersistentVolumeClaim>(&client, &namespace),
            watcher::Config::default().labels(labels::STREAM),
            |pvc| {
                let stream = pvc.labels().get(labels::STREAM).cloned()?;
                let namespace = pvc.namespace()?;
                Some(ObjectRef::<DeserializeGuard<MetricStream>>::new(&stream).within(&namespace))
            },
        );
    if ctx.strimzi_installed {
        // KafkaTopics live in the Kafka cluster's namespace: found by their owner labels.
        controller = controller.watches(
            Api::<KafkaTopic>::all(client.clone()),
            watcher::Config::default().labels(labels::OWNER_NAME),
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
    controller
        .with_config(
            Config::default()
                .debounce(Duration::from_secs(1))
                .concurrency(8),
        )
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(crate::reconcile::reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                Err(error) => tracing::debug!(%error, "controller event"),
            }
        })
        .await;
    tracing::info!("controller stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_to_five_minutes() {
        let delays: Vec<u64> = (1..=12).map(|n| backoff_delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(backoff_delay(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn error_chains_name_every_cause_once() {
        let error = Error::Topic {
            topic: "t".into(),
            message: "broker down".into(),
        };
        assert_eq!(error_chain(&error), "topic t: broker down");
    }
}
