//! The status step's unit tests: observations in, conditions, writes and Events out.

use super::*;
use crate::crd::TopicManagement;
use crate::reconcile::diagnose::{PodProblem, ProblemKind};
use crate::reconcile::fixtures::{file_stream, kafka_stream};
use crate::reconcile::validate::validate;
use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus, StatefulSetStatus};

fn at(seconds: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(seconds).expect("time"))
}

fn workload(name: &str, wanted: i32, available: i32) -> WorkloadObservation {
    WorkloadObservation {
        kind: "Deployment",
        name: name.into(),
        wanted_replicas: wanted,
        exists: true,
        replicas: available,
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
        sink: SinkObservation::default(),
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
    let observed = WorkloadObservation::of(
        "web-ingest",
        2,
        WorkloadController::Deployment(Some(&deployment)),
        [],
    );
    let draft = workload_condition(INGEST_AVAILABLE, &observed);
    assert_eq!(draft.status, "False");
    assert_eq!(
        draft.message,
        "0/2 replicas of web-ingest available (Deployment does not have minimum availability.)"
    );
}

#[test]
fn a_spilling_ingest_is_judged_by_its_stateful_set() {
    // `None`: no StatefulSet; else one of 2 replicas (all ready) with that many available.
    let condition = |available: Option<i32>| {
        let stateful_set = available.map(|available| StatefulSet {
            status: Some(StatefulSetStatus {
                replicas: 2,
                ready_replicas: Some(2),
                available_replicas: Some(available),
                ..Default::default()
            }),
            ..Default::default()
        });
        let controller = WorkloadController::StatefulSet(stateful_set.as_ref());
        let draft = workload_condition(
            INGEST_AVAILABLE,
            &WorkloadObservation::of("web-ingest", 2, controller, []),
        );
        (draft.status, draft.reason, draft.message)
    };
    let expect =
        |status, reason: &str, message: &str| (status, reason.to_owned(), message.to_owned());
    assert_eq!(
        condition(None),
        expect(
            "False",
            "StatefulSetMissing",
            "StatefulSet web-ingest does not exist yet"
        )
    );
    assert_eq!(
        condition(Some(1)),
        expect(
            "True",
            "ReplicasAvailable",
            "1/2 replicas of web-ingest available"
        )
    );
    assert_eq!(
        condition(Some(0)),
        expect(
            "False",
            "NoReplicasAvailable",
            "0/2 replicas of web-ingest available"
        )
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
