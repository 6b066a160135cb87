//! Status (pure): what the operator observed → the MetricStream's status, told truthfully.
//!
//! Conditions `BackendReady`, `IngestAvailable`, `ConsumerAvailable`, and `Ready` (all three),
//! each with a reason, a message and the generation it describes. A condition whose status did
//! not change keeps its `lastTransitionTime`, and [`needs_write`] ignores that field, so an
//! unchanged world produces no status write and no reconcile storm.
//!
//! A workload with no available replica says why when its pods tell ([`super::diagnose`]):
//! reasons `PodCrashLooping`, `ImageUnavailable`, `ContainerCannotStart`, `PodUnschedulable`,
//! `PodNotReady`. [`notices`] decides which changes are worth an Event.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::diagnose::{self, PodProblem, ProblemKind};
use super::validate::ValidatedStream;
use crate::crd::MetricStreamStatus;
use crate::strimzi::KafkaTopic;

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

/// A Deployment as far as availability goes.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadObservation {
    pub name: String,
    pub wanted_replicas: i32,
    pub exists: bool,
    pub available_replicas: i32,
    /// The message of the Deployment's `Available` condition, when there is one.
    pub detail: Option<String>,
    /// The most telling problem among the workload's pods.
    pub problem: Option<PodProblem>,
}

impl WorkloadObservation {
    /// The Deployment `name` and the pods it runs (of any of its ReplicaSets).
    pub fn of<'a>(
        name: &str,
        wanted_replicas: i32,
        deployment: Option<&Deployment>,
        pods: impl IntoIterator<Item = &'a Pod>,
    ) -> Self {
        let status = deployment.and_then(|d| d.status.as_ref());
        Self {
            name: name.to_owned(),
            wanted_replicas,
            exists: deployment.is_some(),
            available_replicas: status.and_then(|s| s.available_replicas).unwrap_or(0),
            detail: status
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Available"))
                .and_then(|c| c.message.clone()),
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
    let conditions = [ready, backend, ingest, consumer]
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

fn upsert(conditions: &mut Vec<Condition>, condition: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(existing) => *existing = condition,
        None => conditions.push(condition),
    }
}

/// A condition before its transition time is decided.
struct Draft {
    type_: &'static str,
    status: &'static str,
    reason: String,
    message: String,
}

impl Draft {
    fn new(type_: &'static str, ok: bool, reason: &str, message: String) -> Self {
        Self {
            type_,
            status: if ok { "True" } else { "False" },
            reason: reason.to_owned(),
            message,
        }
    }

    /// Keeps the old `lastTransitionTime` when the status is unchanged.
    fn into_condition(self, generation: Option<i64>, old: &[Condition], now: &Time) -> Condition {
        let last_transition_time = old
            .iter()
            .find(|c| c.type_ == self.type_ && c.status == self.status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        Condition {
            type_: self.type_.to_owned(),
            status: self.status.to_owned(),
            reason: self.reason,
            message: self.message,
            observed_generation: generation,
            last_transition_time,
        }
    }
}

fn backend_condition(stream: &ValidatedStream, observed: &BackendObservation) -> Draft {
    let ok = |reason: &str, message: String| Draft::new(BACKEND_READY, true, reason, message);
    let not = |reason: &str, message: String| Draft::new(BACKEND_READY, false, reason, message);
    let wanted = stream.partitions;
    let topic = stream.kafka().map(|p| p.topic.as_str()).unwrap_or_default();
    match observed {
        BackendObservation::Volumes(volumes) => volumes_condition(volumes),
        BackendObservation::StrimziNotInstalled => not(
            "StrimziNotInstalled",
            "the KafkaTopic CRD (kafka.strimzi.io/v1) is not installed; install Strimzi or use topicManagement admin or external, then restart the operator".into(),
        ),
        BackendObservation::StrimziTopic(None) => not(
            "TopicNotReady",
            format!("KafkaTopic for topic {topic} does not exist yet"),
        ),
        BackendObservation::StrimziTopic(Some(state)) => {
            let stale = match (state.observed_generation, state.generation) {
                (Some(seen), Some(current)) => seen < current,
                (None, _) => true,
                _ => false,
            };
            match &state.ready {
                _ if stale => not(
                    "TopicNotReady",
                    format!("Strimzi has not yet reconciled the latest KafkaTopic spec for topic {topic}"),
                ),
                Some((status, _, _)) if status == "True" => ok(
                    "TopicReady",
                    format!("KafkaTopic for topic {topic} is Ready with {wanted} partitions"),
                ),
                Some((_, reason, message)) => not(
                    "TopicNotReady",
                    format!(
                        "KafkaTopic for topic {topic} is not Ready ({}): {}",
                        reason.as_deref().unwrap_or("no reason"),
                        message.as_deref().unwrap_or("no message")
                    ),
                ),
                None => not(
                    "TopicNotReady",
                    format!("KafkaTopic for topic {topic} reports no Ready condition yet"),
                ),
            }
        }
        BackendObservation::AdminTopic(Ok(partitions)) => ok(
            "TopicReady",
            format!("topic {topic} exists with {partitions} partitions"),
        ),
        BackendObservation::AdminTopic(Err(error)) => not(
            "TopicError",
            format!("creating or growing topic {topic} failed: {error}"),
        ),
        BackendObservation::ExternalTopic(Ok(Some(partitions))) if *partitions as i64 >= wanted as i64 => ok(
            "TopicVerified",
            format!("external topic {topic} exists with {partitions} partitions"),
        ),
        BackendObservation::ExternalTopic(Ok(Some(partitions))) => not(
            "TooFewPartitions",
            format!("external topic {topic} has {partitions} partitions; the stream needs {wanted}"),
        ),
        BackendObservation::ExternalTopic(Ok(None)) => not(
            "TopicNotFound",
            format!("external topic {topic} does not exist; create it with at least {wanted} partitions"),
        ),
        BackendObservation::ExternalTopic(Err(error)) => not(
            "TopicError",
            format!("checking external topic {topic} failed: {error}"),
        ),
    }
}

/// Bound when every volume is; otherwise the worst phase names the reason (a lost volume, then
/// one that is not bound, then a missing one) and the message lists each unbound volume with its
/// phase.
fn volumes_condition(volumes: &[VolumeObservation]) -> Draft {
    let unbound: Vec<&VolumeObservation> = volumes
        .iter()
        .filter(|v| v.phase.as_deref() != Some("Bound"))
        .collect();
    if unbound.is_empty() {
        let names: Vec<String> = volumes
            .iter()
            .map(|v| format!("{} volume {}", v.role, v.name))
            .collect();
        return Draft::new(
            BACKEND_READY,
            true,
            "VolumeBound",
            format!("{} bound", names.join(" and ")),
        );
    }
    let rank = |v: &VolumeObservation| match v.phase.as_deref() {
        Some("Lost") => (0, "VolumeLost"),
        Some(_) => (1, "VolumePending"),
        None => (2, "VolumeMissing"),
    };
    let reason = unbound
        .iter()
        .map(|v| rank(v))
        .min()
        .map(|(_, reason)| reason)
        .unwrap_or("VolumePending");
    let told: Vec<String> = unbound
        .iter()
        .map(|v| {
            let (role, name) = (v.role, &v.name);
            match v.phase.as_deref() {
                Some("Lost") => {
                    format!("{role} volume {name} is Lost: its PersistentVolume is gone")
                }
                Some("Pending") => {
                    format!("{role} volume {name} is Pending: not bound to a PersistentVolume yet")
                }
                Some(phase) => format!("{role} volume {name} is {phase}"),
                None => format!("{role} volume {name} does not exist yet"),
            }
        })
        .collect();
    Draft::new(BACKEND_READY, false, reason, told.join("; "))
}

fn workload_condition(type_: &'static str, observed: &WorkloadObservation) -> Draft {
    let name = &observed.name;
    let wanted = observed.wanted_replicas;
    let available = observed.available_replicas;
    if !observed.exists {
        return Draft::new(
            type_,
            false,
            "DeploymentMissing",
            format!("Deployment {name} does not exist yet"),
        );
    }
    if wanted == 0 {
        return Draft::new(
            type_,
            false,
            "ScaledToZero",
            format!("Deployment {name} is scaled to zero replicas"),
        );
    }
    if available > 0 {
        // Serving, so True; a short-handed workload still says what keeps the rest from running
        // (but not a pod that is merely not ready yet, as every rollout has).
        let problem = observed
            .problem
            .as_ref()
            .filter(|p| available < wanted && p.kind != ProblemKind::NotReady)
            .map(|p| format!("; {}", p.message()))
            .unwrap_or_default();
        return Draft::new(
            type_,
            true,
            "ReplicasAvailable",
            format!("{available}/{wanted} replicas of {name} available{problem}"),
        );
    }
    if let Some(problem) = &observed.problem {
        return Draft::new(
            type_,
            false,
            problem.kind.reason(),
            format!(
                "0/{wanted} replicas of {name} available: {}",
                problem.message()
            ),
        );
    }
    let detail = observed
        .detail
        .as_deref()
        .map(|d| format!(" ({d})"))
        .unwrap_or_default();
    Draft::new(
        type_,
        false,
        "NoReplicasAvailable",
        format!("0/{wanted} replicas of {name} available{detail}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::TopicManagement;
    use crate::reconcile::fixtures::{file_stream, kafka_stream};
    use crate::reconcile::validate::validate;
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus};

    fn at(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).expect("time"))
    }

    fn workload(name: &str, wanted: i32, available: i32) -> WorkloadObservation {
        WorkloadObservation {
            name: name.into(),
            wanted_replicas: wanted,
            exists: true,
            available_replicas: available,
            detail: None,
            problem: None,
        }
    }

    fn observed(backend: BackendObservation, ingest: i32, consumer: i32) -> Observed {
        Observed {
            backend,
            credentials_pending: None,
            ingest: workload("web-ingest", 1, ingest),
            consumer: workload("web-consumer", 1, consumer),
        }
    }

    /// The file backend's queue and sink volumes in these phases.
    fn volumes(queue: Option<&str>, sink: Option<&str>) -> BackendObservation {
        BackendObservation::Volumes(vec![
            VolumeObservation {
                role: "queue",
                name: "web-queue".into(),
                phase: queue.map(Into::into),
            },
            VolumeObservation {
                role: "sink",
                name: "web-sink".into(),
                phase: sink.map(Into::into),
            },
        ])
    }

    fn bound() -> BackendObservation {
        volumes(Some("Bound"), Some("Bound"))
    }

    fn get<'a>(status: &'a MetricStreamStatus, type_: &str) -> &'a Condition {
        condition(status, type_).expect("condition")
    }

    #[test]
    fn everything_available_is_ready() {
        let stream = validate(&file_stream()).expect("valid");
        let status = compute(&stream, &observed(bound(), 1, 1), None, &at(100));
        for type_ in [READY, BACKEND_READY, INGEST_AVAILABLE, CONSUMER_AVAILABLE] {
            let c = get(&status, type_);
            assert_eq!(c.status, "True", "{type_}: {}", c.message);
            assert_eq!(c.observed_generation, Some(3));
        }
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status.partitions, Some(4));
        assert_eq!(
            status.ingest_endpoint.as_deref(),
            Some("http://web-ingest.apps.svc:8080")
        );
        assert_eq!(status.topic, None);
    }

    #[test]
    fn conditions_say_truthfully_what_is_not_running() {
        let stream = validate(&file_stream()).expect("valid");
        type Case = (
            BackendObservation,
            i32,
            &'static str,
            &'static str,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            (
                volumes(Some("Pending"), Some("Bound")),
                1,
                BACKEND_READY,
                "VolumePending",
                "BackendNotReady",
            ),
            (
                volumes(None, Some("Bound")),
                1,
                BACKEND_READY,
                "VolumeMissing",
                "BackendNotReady",
            ),
            (
                volumes(Some("Bound"), Some("Pending")),
                1,
                BACKEND_READY,
                "VolumePending",
                "BackendNotReady",
            ),
            (
                bound(),
                0,
                INGEST_AVAILABLE,
                "NoReplicasAvailable",
                "IngestUnavailable",
            ),
        ];
        for (backend, ingest, type_, reason, ready_reason) in cases {
            let status = compute(&stream, &observed(backend, ingest, 1), None, &at(1));
            assert_eq!(get(&status, type_).status, "False");
            assert_eq!(get(&status, type_).reason, reason);
            let ready = get(&status, READY);
            assert_eq!(
                (ready.status.as_str(), ready.reason.as_str()),
                ("False", ready_reason)
            );
            assert!(ready.message.contains(type_), "{}", ready.message);
        }
    }

    #[test]
    fn pending_credentials_matter_only_once_the_topic_is_ready() {
        let stream = validate(&kafka_stream(TopicManagement::Admin)).expect("valid");
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let reason = |backend: BackendObservation| {
            let mut seen = observed(backend, 1, 1);
            seen.credentials_pending = Some("waiting for Secret kafka/user".into());
            let status = compute(&stream, &seen, None, &now);
            get(&status, BACKEND_READY).reason.clone()
        };
        assert_eq!(
            reason(BackendObservation::AdminTopic(Ok(4))),
            "CredentialsPending"
        );
        assert_eq!(
            reason(BackendObservation::AdminTopic(Err("down".into()))),
            "TopicError"
        );
        assert_eq!(
            reason(BackendObservation::StrimziNotInstalled),
            "StrimziNotInstalled"
        );
    }

    #[test]
    fn zero_replicas_and_missing_deployments_have_their_own_reasons() {
        let mut zero = workload("web-consumer", 0, 0);
        assert_eq!(
            workload_condition(CONSUMER_AVAILABLE, &zero).reason,
            "ScaledToZero"
        );
        zero.exists = false;
        assert_eq!(
            workload_condition(CONSUMER_AVAILABLE, &zero).reason,
            "DeploymentMissing"
        );
        let deployment = Deployment {
            status: Some(DeploymentStatus {
                conditions: Some(vec![DeploymentCondition {
                    type_: "Available".into(),
                    status: "False".into(),
                    message: Some("Deployment does not have minimum availability.".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let observed = WorkloadObservation::of("web-ingest", 2, Some(&deployment), []);
        let draft = workload_condition(INGEST_AVAILABLE, &observed);
        assert_eq!(draft.status, "False");
        assert_eq!(
            draft.message,
            "0/2 replicas of web-ingest available (Deployment does not have minimum availability.)"
        );
    }

    #[test]
    fn the_strimzi_topic_reports_its_own_ready_condition() {
        let stream = validate(&kafka_stream(TopicManagement::Strimzi)).expect("valid");
        let state = |generation, seen, ready: Option<(&str, &str)>| {
            BackendObservation::StrimziTopic(Some(StrimziTopicState {
                generation: Some(generation),
                observed_generation: seen,
                ready: ready.map(|(s, r)| {
                    (
                        s.to_owned(),
                        Some(r.to_owned()),
                        Some("broker says no".to_owned()),
                    )
                }),
            }))
        };
        let cases = [
            (state(1, Some(1), Some(("True", ""))), "True", "TopicReady"),
            (
                state(2, Some(1), Some(("True", ""))),
                "False",
                "TopicNotReady",
            ),
            (
                state(1, Some(1), Some(("False", "KafkaError"))),
                "False",
                "TopicNotReady",
            ),
            (state(1, None, None), "False", "TopicNotReady"),
            (
                BackendObservation::StrimziTopic(None),
                "False",
                "TopicNotReady",
            ),
            (
                BackendObservation::StrimziNotInstalled,
                "False",
                "StrimziNotInstalled",
            ),
        ];
        for (backend, status_, reason) in cases {
            let status = compute(&stream, &observed(backend.clone(), 1, 1), None, &at(1));
            let c = get(&status, BACKEND_READY);
            assert_eq!(
                (c.status.as_str(), c.reason.as_str()),
                (status_, reason),
                "{backend:?}"
            );
        }
        let failing = compute(
            &stream,
            &observed(state(1, Some(1), Some(("False", "KafkaError"))), 1, 1),
            None,
            &at(1),
        );
        assert!(get(&failing, BACKEND_READY).message.contains("KafkaError"));
        assert!(
            get(&failing, BACKEND_READY)
                .message
                .contains("broker says no")
        );
        assert_eq!(failing.topic.as_deref(), Some("metrics-web"));
    }

    #[test]
    fn external_topics_are_verified_against_the_partitions() {
        let stream = validate(&kafka_stream(TopicManagement::External)).expect("valid");
        let cases = [
            (Ok(Some(4)), "True", "TopicVerified"),
            (Ok(Some(8)), "True", "TopicVerified"),
            (Ok(Some(2)), "False", "TooFewPartitions"),
            (Ok(None), "False", "TopicNotFound"),
            (Err("timed out".to_owned()), "False", "TopicError"),
        ];
        for (found, status_, reason) in cases {
            let status = compute(
                &stream,
                &observed(BackendObservation::ExternalTopic(found), 1, 1),
                None,
                &at(1),
            );
            let c = get(&status, BACKEND_READY);
            assert_eq!((c.status.as_str(), c.reason.as_str()), (status_, reason));
        }
    }

    #[test]
    fn unchanged_conditions_keep_their_transition_time_and_need_no_write() {
        let stream = validate(&file_stream()).expect("valid");
        let pending = observed(volumes(Some("Pending"), Some("Bound")), 1, 1);
        let first = compute(&stream, &pending, None, &at(100));
        assert!(needs_write(None, &first));
        let again = compute(&stream, &pending, Some(&first), &at(200));
        assert_eq!(again, first, "same observation, same status, same times");
        assert!(!needs_write(Some(&first), &again));

        let now_bound = compute(&stream, &observed(bound(), 1, 1), Some(&first), &at(300));
        assert!(needs_write(Some(&first), &now_bound));
        assert_eq!(get(&now_bound, BACKEND_READY).last_transition_time, at(300));
        assert_eq!(get(&now_bound, READY).last_transition_time, at(300));
        // IngestAvailable stayed True: its time is the first one.
        assert_eq!(
            get(&now_bound, INGEST_AVAILABLE).last_transition_time,
            at(100)
        );
    }

    #[test]
    fn only_the_transition_time_changing_is_no_change() {
        let stream = validate(&file_stream()).expect("valid");
        let a = compute(&stream, &observed(bound(), 1, 1), None, &at(1));
        let mut b = compute(&stream, &observed(bound(), 1, 1), None, &at(2));
        assert!(!needs_write(Some(&a), &b));
        b.conditions.reverse();
        assert!(!needs_write(Some(&a), &b), "order does not matter");
        b.conditions[0].message.push('!');
        assert!(needs_write(Some(&a), &b));
    }

    #[test]
    fn a_new_generation_is_a_change() {
        let mut spec = file_stream();
        let first = compute(
            &validate(&spec).expect("valid"),
            &observed(bound(), 1, 1),
            None,
            &at(1),
        );
        spec.metadata.generation = Some(4);
        let second = compute(
            &validate(&spec).expect("valid"),
            &observed(bound(), 1, 1),
            Some(&first),
            &at(2),
        );
        assert!(needs_write(Some(&first), &second));
        assert_eq!(get(&second, READY).last_transition_time, at(1));
    }

    #[test]
    fn an_invalid_spec_says_so_and_keeps_the_rest() {
        let stream = validate(&file_stream()).expect("valid");
        let good = compute(&stream, &observed(bound(), 1, 1), None, &at(1));
        let bad = invalid_spec(Some(4), "spec.file is missing", Some(&good), &at(5));
        let ready = get(&bad, READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "InvalidSpec")
        );
        assert_eq!(ready.last_transition_time, at(5));
        assert_eq!(ready.observed_generation, Some(4));
        assert_eq!(bad.observed_generation, Some(4));
        assert_eq!(get(&bad, BACKEND_READY), get(&good, BACKEND_READY));
        let again = invalid_spec(Some(4), "spec.file is missing", Some(&bad), &at(9));
        assert!(!needs_write(Some(&bad), &again));
        assert_eq!(get(&again, READY).last_transition_time, at(5));
    }

    #[test]
    fn every_unbound_volume_is_named_with_its_phase() {
        let stream = validate(&file_stream()).expect("valid");
        let status = compute(
            &stream,
            &observed(volumes(Some("Pending"), None), 1, 1),
            None,
            &at(1),
        );
        let backend = get(&status, BACKEND_READY);
        assert_eq!(backend.reason, "VolumePending", "pending beats missing");
        assert_eq!(
            backend.message,
            "queue volume web-queue is Pending: not bound to a PersistentVolume yet; sink volume \
             web-sink does not exist yet"
        );
        let lost = compute(
            &stream,
            &observed(volumes(Some("Pending"), Some("Lost")), 1, 1),
            None,
            &at(1),
        );
        assert_eq!(get(&lost, BACKEND_READY).reason, "VolumeLost");
        let ready = compute(&stream, &observed(bound(), 1, 1), None, &at(1));
        assert_eq!(
            get(&ready, BACKEND_READY).message,
            "queue volume web-queue and sink volume web-sink bound"
        );
    }

    fn problem(kind: ProblemKind, detail: &str) -> Option<PodProblem> {
        Some(PodProblem {
            kind,
            pod: "web-ingest-7c9d8f6b5-x2x7z".into(),
            detail: detail.into(),
        })
    }

    #[test]
    fn a_workload_without_replicas_names_its_pods_problem() {
        let cases = [
            (
                ProblemKind::CrashLooping,
                "container ingest: CrashLoopBackOff, last exit code 2 (Error): bad config",
                "PodCrashLooping",
            ),
            (
                ProblemKind::ImageUnavailable,
                "container ingest: ErrImageNeverPull: Container image \"x\" is not present with pull policy of Never",
                "ImageUnavailable",
            ),
            (
                ProblemKind::Unschedulable,
                "cannot be scheduled (Unschedulable): 0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims.",
                "PodUnschedulable",
            ),
            (
                ProblemKind::NotReady,
                "container ingest: running but not ready",
                "PodNotReady",
            ),
        ];
        for (kind, detail, reason) in cases {
            let mut seen = workload("web-ingest", 1, 0);
            seen.detail = Some("Deployment does not have minimum availability.".into());
            seen.problem = problem(kind, detail);
            let draft = workload_condition(INGEST_AVAILABLE, &seen);
            assert_eq!((draft.status, draft.reason.as_str()), ("False", reason));
            assert_eq!(
                draft.message,
                format!(
                    "0/1 replicas of web-ingest available: pod web-ingest-7c9d8f6b5-x2x7z {detail}"
                )
            );
        }
        // No pod says anything (none scheduled yet, as in envtest): the Deployment's word.
        let mut quiet = workload("web-ingest", 1, 0);
        quiet.detail = Some("Deployment does not have minimum availability.".into());
        assert_eq!(
            workload_condition(INGEST_AVAILABLE, &quiet).reason,
            "NoReplicasAvailable"
        );
    }

    #[test]
    fn a_short_handed_workload_stays_available_and_says_why() {
        let mut seen = workload("web-ingest", 2, 1);
        seen.problem = problem(
            ProblemKind::ImageUnavailable,
            "container ingest: ErrImagePull: not found",
        );
        let draft = workload_condition(INGEST_AVAILABLE, &seen);
        assert_eq!(
            (draft.status, draft.reason.as_str()),
            ("True", "ReplicasAvailable")
        );
        assert_eq!(
            draft.message,
            "1/2 replicas of web-ingest available; pod web-ingest-7c9d8f6b5-x2x7z container ingest: ErrImagePull: not found"
        );
        seen.problem = problem(
            ProblemKind::NotReady,
            "container ingest: running but not ready",
        );
        assert_eq!(
            workload_condition(INGEST_AVAILABLE, &seen).message,
            "1/2 replicas of web-ingest available",
            "a rollout's pod that is not ready yet is no news"
        );
        seen.available_replicas = 2;
        seen.problem = problem(
            ProblemKind::CrashLooping,
            "container ingest: CrashLoopBackOff",
        );
        assert_eq!(
            workload_condition(INGEST_AVAILABLE, &seen).message,
            "2/2 replicas of web-ingest available",
            "an old pod on its way out"
        );
    }

    fn reasons(notices: &[Notice]) -> Vec<(bool, &str)> {
        notices
            .iter()
            .map(|n| (n.warning, n.reason.as_str()))
            .collect()
    }

    #[test]
    fn a_pod_problem_is_a_warning_when_it_appears_or_changes_and_not_again() {
        let stream = validate(&file_stream()).expect("valid");
        let mut seen = observed(bound(), 0, 1);
        let first = compute(&stream, &seen, None, &at(1));
        assert_eq!(
            reasons(&notices(None, &first)),
            [(true, "IngestUnavailable")],
            "a new stream: only Ready"
        );
        seen.ingest.problem = problem(
            ProblemKind::NotReady,
            "container ingest: running but not ready",
        );
        let starting = compute(&stream, &seen, Some(&first), &at(1));
        assert_eq!(get(&starting, INGEST_AVAILABLE).reason, "PodNotReady");
        assert_eq!(notices(Some(&first), &starting), [], "every pod starts so");

        seen.ingest.problem = problem(
            ProblemKind::ImageUnavailable,
            "container ingest: ErrImageNeverPull: Container image \"x\" is not present with pull policy of Never",
        );
        let image = compute(&stream, &seen, Some(&first), &at(2));
        let told = notices(Some(&first), &image);
        assert_eq!(reasons(&told), [(true, "ImageUnavailable")]);
        assert!(
            told[0]
                .note
                .starts_with("IngestAvailable is False: 0/1 replicas")
        );
        assert!(
            told[0].note.contains("ErrImageNeverPull"),
            "{}",
            told[0].note
        );

        // The same problem in a new pod (a rollout, a deleted pod): status changes, no Event.
        if let Some(p) = seen.ingest.problem.as_mut() {
            p.pod = "web-ingest-7c9d8f6b5-zzzzz".into();
        }
        let moved = compute(&stream, &seen, Some(&image), &at(3));
        assert!(needs_write(Some(&image), &moved));
        assert_eq!(notices(Some(&image), &moved), []);

        seen.ingest.problem = problem(
            ProblemKind::CrashLooping,
            "container ingest: CrashLoopBackOff, last exit code 2 (Error): bad config",
        );
        let crashing = compute(&stream, &seen, Some(&moved), &at(4));
        assert_eq!(
            reasons(&notices(Some(&moved), &crashing)),
            [(true, "PodCrashLooping")]
        );
        let again = compute(&stream, &seen, Some(&crashing), &at(5));
        assert_eq!(notices(Some(&crashing), &again), [], "unchanged");

        // Fixed: the usual Normal Events for what became True.
        let fixed = compute(&stream, &observed(bound(), 1, 1), Some(&again), &at(6));
        assert_eq!(
            reasons(&notices(Some(&again), &fixed)),
            [(false, "Ready"), (false, "ReplicasAvailable")]
        );
        // Back to no replicas without a pod problem: a plain flip, as before.
        let down = compute(&stream, &observed(bound(), 0, 1), Some(&fixed), &at(7));
        assert_eq!(
            reasons(&notices(Some(&fixed), &down)),
            [(true, "IngestUnavailable"), (true, "NoReplicasAvailable")]
        );
    }
}
