//! The conditions one by one: each observation becomes a [`Draft`] (status, reason, message),
//! and [`upsert`] puts a decided condition in place.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::*;
use crate::reconcile::diagnose::ProblemKind;
use crate::reconcile::validate::ValidatedStream;

pub(super) fn upsert(conditions: &mut Vec<Condition>, condition: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(existing) => *existing = condition,
        None => conditions.push(condition),
    }
}

/// A condition before its transition time is decided.
pub(super) struct Draft {
    pub(super) type_: &'static str,
    pub(super) status: &'static str,
    pub(super) reason: String,
    pub(super) message: String,
}

impl Draft {
    pub(super) fn new(type_: &'static str, ok: bool, reason: &str, message: String) -> Self {
        Self {
            type_,
            status: if ok { "True" } else { "False" },
            reason: reason.to_owned(),
            message,
        }
    }

    /// A condition the operator cannot decide, with why.
    pub(super) fn unknown(type_: &'static str, reason: &str, message: String) -> Self {
        Self {
            type_,
            status: "Unknown",
            reason: reason.to_owned(),
            message,
        }
    }

    /// Keeps the old `lastTransitionTime` when the status is unchanged.
    pub(super) fn into_condition(
        self,
        generation: Option<i64>,
        old: &[Condition],
        now: &Time,
    ) -> Condition {
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

pub(super) fn backend_condition(stream: &ValidatedStream, observed: &BackendObservation) -> Draft {
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
pub(super) fn volumes_condition(volumes: &[VolumeObservation]) -> Draft {
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

pub(super) fn workload_condition(type_: &'static str, observed: &WorkloadObservation) -> Draft {
    let (kind, name) = (observed.kind, &observed.name);
    let wanted = observed.wanted_replicas;
    let available = observed.available_replicas;
    if !observed.exists {
        return Draft::new(
            type_,
            false,
            &format!("{kind}Missing"),
            format!("{kind} {name} does not exist yet"),
        );
    }
    if wanted == 0 {
        return Draft::new(
            type_,
            false,
            "ScaledToZero",
            format!("{kind} {name} is scaled to zero replicas"),
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
