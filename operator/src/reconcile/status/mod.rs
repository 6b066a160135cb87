//! Status (pure): what the operator observed → the MetricStream's status, told truthfully.
//!
//! Conditions `BackendReady`, `IngestAvailable`, `ConsumerAvailable`, and `Ready` (all three),
//! each with a reason, a message and the generation it describes; and `SinkAvailable`, what the
//! consumers say of their sink ([`sink`]). `Ready` leaves it out: a failing sink makes the
//! consumers unready, which `ConsumerAvailable` already counts, and `SinkAvailable` is
//! `Unknown` wherever the operator cannot reach the pods (run outside the cluster). A condition whose status did
//! not change keeps its `lastTransitionTime`, and [`needs_write`] ignores that field, so an
//! unchanged world produces no status write and no reconcile storm.
//!
//! A workload with no available replica says why when its pods tell ([`super::diagnose`]):
//! reasons `PodCrashLooping`, `ImageUnavailable`, `ContainerCannotStart`, `PodUnschedulable`,
//! `PodNotReady`. [`notices`] decides which changes are worth an Event.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::diagnose::{self, PodProblem};
use super::validate::ValidatedStream;
use crate::crd::MetricStreamStatus;
use crate::strimzi::KafkaTopic;

mod conditions;
mod sink;
#[cfg(test)]
mod tests;

use conditions::{Draft, backend_condition, upsert, workload_condition};
pub use sink::{ConsumerReport, SINK_AVAILABLE, SinkObservation};

pub const READY: &str = "Ready";
pub const BACKEND_READY: &str = "BackendReady";
pub const INGEST_AVAILABLE: &str = "IngestAvailable";
pub const CONSUMER_AVAILABLE: &str = "ConsumerAvailable";

/// What the operator saw of the stream's children after applying them.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub backend: BackendObservation,
    /// Why the Kafka credentials the stream copies are not there yet.
    pub credentials_pending: Option<String>,
    pub ingest: WorkloadObservation,
    pub consumer: WorkloadObservation,
    /// What the consumer pods said of their sink.
    pub sink: SinkObservation,
}

#[derive(Clone, Debug, PartialEq)]
pub enum BackendObservation {
    /// The file backend's PVCs (the queue's, then the sink's).
    Volumes(Vec<VolumeObservation>),
    /// The KafkaTopic, or `None` when it does not exist.
    StrimziTopic(Option<StrimziTopicState>),
    /// The KafkaTopic CRD is not installed in this cluster.
    StrimziNotInstalled,
    /// The admin-API topic: its partition count once ensured, or the error.
    AdminTopic(Result<u32, String>),
    /// An external topic: its partition count (`None`: missing), or the error.
    ExternalTopic(Result<Option<u32>, String>),
}

/// One PVC of the file backend.
#[derive(Clone, Debug, PartialEq)]
pub struct VolumeObservation {
    /// What it holds: "queue" or "sink".
    pub role: &'static str,
    pub name: String,
    /// Its phase, or `None` when it does not exist.
    pub phase: Option<String>,
}

/// The parts of a KafkaTopic its readiness depends on.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct StrimziTopicState {
    pub generation: Option<i64>,
    pub observed_generation: Option<i64>,
    /// The KafkaTopic's `Ready` condition: (status, reason, message).
    pub ready: Option<(String, Option<String>, Option<String>)>,
}

impl StrimziTopicState {
    pub fn of(topic: &KafkaTopic) -> Self {
        let status = topic.status.as_ref();
        Self {
            generation: topic.metadata.generation,
            observed_generation: status.and_then(|s| s.observed_generation),
            ready: status.and_then(|s| {
                s.conditions
                    .iter()
                    .find(|c| c.type_.as_deref() == Some("Ready"))
                    .map(|c| {
                        (
                            c.status.clone().unwrap_or_default(),
                            c.reason.clone(),
                            c.message.clone(),
                        )
                    })
            }),
        }
    }
}

/// A workload's Deployment or StatefulSet (the ingest of a stream that spills) as far as
/// availability goes.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadObservation {
    /// "Deployment" or "StatefulSet": what runs the workload, or should.
    pub kind: &'static str,
    pub name: String,
    pub wanted_replicas: i32,
    pub exists: bool,
    /// Pods the controller has (its `status.replicas`).
    pub replicas: i32,
    pub available_replicas: i32,
    /// The message of a Deployment's `Available` condition, when there is one (a StatefulSet
    /// has none).
    pub detail: Option<String>,
    /// The most telling problem among the workload's pods.
    pub problem: Option<PodProblem>,
}

/// What runs a workload, as the operator found it (`None`: it does not exist).
#[derive(Clone, Copy, Debug)]
pub enum WorkloadController<'a> {
    Deployment(Option<&'a Deployment>),
    StatefulSet(Option<&'a StatefulSet>),
}

impl WorkloadObservation {
    /// The workload `name`, run by `controller`, and its pods (of any ReplicaSet or revision).
    pub fn of<'a>(
        name: &str,
        wanted_replicas: i32,
        controller: WorkloadController<'_>,
        pods: impl IntoIterator<Item = &'a Pod>,
    ) -> Self {
        let (kind, exists, replicas, available_replicas, detail) = match controller {
            WorkloadController::Deployment(deployment) => {
                let status = deployment.and_then(|d| d.status.as_ref());
                (
                    "Deployment",
                    deployment.is_some(),
                    status.and_then(|s| s.replicas),
                    status.and_then(|s| s.available_replicas),
                    status
                        .and_then(|s| s.conditions.as_ref())
                        .and_then(|c| c.iter().find(|c| c.type_ == "Available"))
                        .and_then(|c| c.message.clone()),
                )
            }
            WorkloadController::StatefulSet(stateful_set) => (
                "StatefulSet",
                stateful_set.is_some(),
                stateful_set
                    .and_then(|s| s.status.as_ref())
                    .map(|s| s.replicas),
                stateful_set
                    .and_then(|s| s.status.as_ref())
                    .and_then(|s| s.available_replicas),
                None,
            ),
        };
        Self {
            kind,
            name: name.to_owned(),
            wanted_replicas,
            exists,
            replicas: replicas.unwrap_or(0),
            available_replicas: available_replicas.unwrap_or(0),
            detail,
            problem: diagnose::most_telling(pods),
        }
    }
}

/// The status for a stream that was applied and then observed.
pub fn compute(
    stream: &ValidatedStream,
    observed: &Observed,
    old: Option<&MetricStreamStatus>,
    now: &Time,
) -> MetricStreamStatus {
    let generation = stream.generation;
    let backend = match (
        backend_condition(stream, &observed.backend),
        &observed.credentials_pending,
    ) {
        // A ready topic is no use to workloads that cannot authenticate; a topic that is not
        // ready (or Strimzi missing altogether) is the more useful thing to say.
        (ready, Some(pending)) if ready.status == "True" => {
            Draft::new(BACKEND_READY, false, "CredentialsPending", pending.clone())
        }
        (condition, _) => condition,
    };
    let ingest = workload_condition(INGEST_AVAILABLE, &observed.ingest);
    let consumer = workload_condition(CONSUMER_AVAILABLE, &observed.consumer);
    let failing: Vec<String> = [&backend, &ingest, &consumer]
        .iter()
        .filter(|c| c.status != "True")
        .map(|c| format!("{}: {}", c.type_, c.message))
        .collect();
    let ready = if failing.is_empty() {
        Draft::new(
            READY,
            true,
            "PipelineReady",
            format!(
                "ingest, consumer and backend are available; {} partitions",
                stream.partitions
            ),
        )
    } else {
        let reason = if backend.status != "True" {
            "BackendNotReady"
        } else if ingest.status != "True" {
            "IngestUnavailable"
        } else {
            "ConsumerUnavailable"
        };
        Draft::new(READY, false, reason, failing.join("; "))
    };

    let old_conditions = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let sink = sink::sink_condition(&observed.sink);
    let conditions = [ready, backend, ingest, consumer, sink]
        .into_iter()
        .map(|draft| draft.into_condition(generation, old_conditions, now))
        .collect();
    MetricStreamStatus {
        observed_generation: generation,
        conditions,
        partitions: Some(stream.partitions),
        topic: stream.kafka().map(|plan| plan.topic.clone()),
        ingest_endpoint: Some(format!(
            "{}://{}-ingest.{}.svc:{}",
            if stream.ingest.tls_secret.is_some() {
                "https"
            } else {
                "http"
            },
            stream.name,
            stream.namespace,
            super::build::INGEST_PORT
        )),
        consumer_replicas: Some(observed.consumer.replicas),
        consumer_selector: Some(crate::labels::selector_text(
            &stream.name,
            super::build::COMPONENT_CONSUMER,
        )),
        // The autoscaler's step fills it in.
        autoscaling: None,
    }
}

/// The status for a spec that cannot be acted on: `Ready=False` with reason `InvalidSpec`; the
/// other conditions and fields keep what they said about the last valid spec.
pub fn invalid_spec(
    generation: Option<i64>,
    message: &str,
    old: Option<&MetricStreamStatus>,
    now: &Time,
) -> MetricStreamStatus {
    let mut status = old.cloned().unwrap_or_default();
    let ready = Draft::new(READY, false, "InvalidSpec", message.to_owned()).into_condition(
        generation,
        &status.conditions,
        now,
    );
    upsert(&mut status.conditions, ready);
    status.observed_generation = generation;
    status
}

/// Whether `new` says something `old` does not, ignoring `lastTransitionTime` and the order of
/// conditions.
pub fn needs_write(old: Option<&MetricStreamStatus>, new: &MetricStreamStatus) -> bool {
    fn normalized(status: &MetricStreamStatus) -> MetricStreamStatus {
        let mut status = status.clone();
        for condition in &mut status.conditions {
            condition.last_transition_time = Time(Default::default());
        }
        status.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
        status
    }
    match old {
        None => true,
        Some(old) => normalized(old) != normalized(new),
    }
}

/// The status of one condition type, or `None`.
pub fn condition<'a>(status: &'a MetricStreamStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

/// An Event worth publishing about a status change.
#[derive(Clone, Debug, PartialEq)]
pub struct Notice {
    pub warning: bool,
    pub reason: String,
    pub note: String,
}

/// The Events a status change is worth (pure, so what is published is decided and tested in one
/// place): Normal for a condition that became True, Warning for one that became False; on a new
/// stream only the overall `Ready` (its message holds the details). A workload's pod fault is
/// a Warning when it appears or its reason changes (e.g. `NoReplicasAvailable` →
/// `ImageUnavailable` → `PodCrashLooping`), even while the condition stays False; the same
/// fault again (a later restart, a new pod with the same fault) is not, nor is `PodNotReady`,
/// which every starting pod passes through.
pub fn notices(old: Option<&MetricStreamStatus>, new: &MetricStreamStatus) -> Vec<Notice> {
    let mut notices = Vec::new();
    for condition in &new.conditions {
        let before = old.and_then(|old| self::condition(old, &condition.type_));
        let flipped = before.is_some_and(|b| b.status != condition.status);
        let first_ready = before.is_none() && condition.type_ == READY;
        let new_pod_problem = condition.status == "False"
            && diagnose::is_fault_reason(&condition.reason)
            && before.is_none_or(|b| b.status != condition.status || b.reason != condition.reason);
        if !(flipped || first_ready || new_pod_problem) {
            continue;
        }
        let ok = condition.status == "True";
        let reason = if condition.type_ == READY && ok {
            "Ready".to_owned()
        } else {
            condition.reason.clone()
        };
        notices.push(Notice {
            warning: !ok,
            reason,
            note: format!(
                "{} is {}: {}",
                condition.type_, condition.status, condition.message
            ),
        });
    }
    notices
}
