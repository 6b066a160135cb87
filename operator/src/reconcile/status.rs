//! Status (pure): what the operator observed → the MetricStream's status, told truthfully.
//!
//! Conditions `BackendReady`, `IngestAvailable`, `ConsumerAvailable`, and `Ready` (all three),
//! each with a reason, a message and the generation it describes. A condition whose status did
//! not change keeps its `lastTransitionTime`, and [`needs_write`] ignores that field, so an
//! unchanged world produces no status write and no reconcile storm.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

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
    /// The file queue's PVC: its phase, or `None` when it does not exist.
    Volume { phase: Option<String> },
    /// The KafkaTopic, or `None` when it does not exist.
    StrimziTopic(Option<StrimziTopicState>),
    /// The KafkaTopic CRD is not installed in this cluster.
    StrimziNotInstalled,
    /// The admin-API topic: its partition count once ensured, or the error.
    AdminTopic(Result<u32, String>),
    /// An external topic: its partition count (`None`: missing), or the error.
    ExternalTopic(Result<Option<u32>, String>),
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
}

impl WorkloadObservation {
    pub fn of(name: &str, wanted_replicas: i32, deployment: Option<&Deployment>) -> Self {
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
    let volume = super::build::Desired::queue_pvc_name(&stream.name);
    match observed {
        BackendObservation::Volume { phase } => match phase.as_deref() {
            Some("Bound") => ok("VolumeBound", format!("queue volume {volume} is bound")),
            Some("Pending") => not(
                "VolumePending",
                format!("queue volume {volume} is waiting to be bound"),
            ),
            Some("Lost") => not(
                "VolumeLost",
                format!("queue volume {volume} lost its PersistentVolume"),
            ),
            Some(other) => not(
                "VolumePending",
                format!("queue volume {volume} is {other}"),
            ),
            None => not(
                "VolumeMissing",
                format!("queue volume {volume} does not exist yet"),
            ),
        },
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
        return Draft::new(
            type_,
            true,
            "ReplicasAvailable",
            format!("{available}/{wanted} replicas of {name} available"),
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

    fn bound() -> BackendObservation {
        BackendObservation::Volume {
            phase: Some("Bound".into()),
        }
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
                BackendObservation::Volume {
                    phase: Some("Pending".into()),
                },
                1,
                BACKEND_READY,
                "VolumePending",
                "BackendNotReady",
            ),
            (
                BackendObservation::Volume { phase: None },
                1,
                BACKEND_READY,
                "VolumeMissing",
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
        let observed = WorkloadObservation::of("web-ingest", 2, Some(&deployment));
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
        let pending = observed(
            BackendObservation::Volume {
                phase: Some("Pending".into()),
            },
            1,
            1,
        );
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
}
