//! Which watch events start a reconcile (pure). A reconcile costs several API requests, so
//! events that cannot change its outcome are dropped here: the operator's own status writes on
//! the MetricStream, and the controller-manager's status updates of children that touch no
//! field the status step reads (e.g. a Deployment's Progressing condition). Deletions always
//! pass, so a deleted child is recreated at once; anything missed is repaired by the resync.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::Resource;
use kube::core::DeserializeGuard;
use kube::runtime::watcher::Event;

use crate::crd::MetricStream;
use crate::reconcile::diagnose;
use crate::strimzi::KafkaTopic;

fn hash<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// The parts of a MetricStream a reconcile acts on: the spec (its generation) and deletion.
/// Status, finalizer, label and annotation changes are left out: the reconciler reads none of
/// them as input, and the status and finalizer writes are the operator's own.
pub fn stream_trigger(stream: &DeserializeGuard<MetricStream>) -> Option<u64> {
    let meta = stream.meta();
    Some(hash(&(meta.generation, meta.deletion_timestamp.is_some())))
}

/// A Deployment's spec (generation), labels and deletion, and what its availability is judged
/// by: `availableReplicas` and the `Available` condition.
pub fn deployment_trigger(deployment: &Deployment) -> u64 {
    let meta = &deployment.metadata;
    let status = deployment.status.as_ref();
    let available = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Available"))
        .map(|c| (&c.status, &c.message));
    hash(&(
        meta.generation,
        &meta.labels,
        meta.deletion_timestamp.is_some(),
        status.and_then(|s| s.available_replicas),
        available,
    ))
}

/// A StatefulSet's spec (generation), labels and deletion, and what its availability is judged
/// by: `availableReplicas` (it has no `Available` condition).
pub fn stateful_set_trigger(stateful_set: &StatefulSet) -> u64 {
    let meta = &stateful_set.metadata;
    hash(&(
        meta.generation,
        &meta.labels,
        meta.deletion_timestamp.is_some(),
        stateful_set
            .status
            .as_ref()
            .and_then(|s| s.available_replicas),
    ))
}

/// What the operator sets on a child whose status others write (a PodDisruptionBudget's is the
/// disruption controller's): the spec (generation), labels, ownerReferences and deletion.
pub fn spec_trigger<K: Resource>(object: &K) -> u64 {
    let meta = object.meta();
    let owners: Vec<(&str, Option<bool>)> = meta
        .owner_references
        .iter()
        .flatten()
        .map(|owner| (owner.uid.as_str(), owner.controller))
        .collect();
    hash(&(
        meta.generation,
        &meta.labels,
        owners,
        meta.deletion_timestamp.is_some(),
    ))
}

/// A PVC's requested size, labels (they map it to its stream), deletion and phase.
pub fn pvc_trigger(pvc: &PersistentVolumeClaim) -> u64 {
    let meta = &pvc.metadata;
    let requests = pvc
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .map(|r| r.iter().map(|(k, v)| (k, &v.0)).collect::<Vec<_>>());
    hash(&(
        &meta.labels,
        meta.deletion_timestamp.is_some(),
        requests,
        pvc.status.as_ref().and_then(|s| s.phase.as_ref()),
    ))
}

/// A workload Pod's labels (they map it to its stream), deletion, and what the status step would
/// say of it ([`diagnose::pod_problem`]); its readiness shows in the Deployment. So a crash-looping
/// pod triggers when it starts failing, not on every restart.
pub fn pod_trigger(pod: &Pod) -> u64 {
    let meta = &pod.metadata;
    hash(&(
        &meta.labels,
        meta.deletion_timestamp.is_some(),
        diagnose::pod_problem(pod),
    ))
}

/// A KafkaTopic's spec (generation), labels, deletion and what its readiness is judged by.
pub fn topic_trigger(topic: &KafkaTopic) -> u64 {
    let meta = &topic.metadata;
    let status = topic.status.as_ref();
    let ready = status.and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.type_.as_deref() == Some("Ready"))
            .map(|c| (&c.status, &c.reason, &c.message))
    });
    hash(&(
        meta.generation,
        &meta.labels,
        meta.deletion_timestamp.is_some(),
        status.and_then(|s| s.observed_generation),
        ready,
    ))
}

/// Passes a watched object on when what `relevant` hashes changed since it was last seen, and
/// always on deletion. Keyed by uid, so a recreated object is new.
pub struct ChangeFilter<K> {
    relevant: fn(&K) -> u64,
    seen: HashMap<String, u64>,
    /// While the watch (re)lists: the objects listed so far. Replaces `seen` when the list is
    /// done, so objects deleted while the watch was down are forgotten.
    relisting: Option<HashMap<String, u64>>,
}

impl<K: Resource> ChangeFilter<K> {
    pub fn new(relevant: fn(&K) -> u64) -> Self {
        Self {
            relevant,
            seen: HashMap::new(),
            relisting: None,
        }
    }

    /// The object to trigger on, if any.
    pub fn admit(&mut self, event: Event<K>) -> Option<K> {
        match event {
            Event::Init => {
                self.relisting = Some(HashMap::new());
                None
            }
            Event::InitDone => {
                if let Some(listed) = self.relisting.take() {
                    self.seen = listed;
                }
                None
            }
            Event::Delete(object) => {
                if let Some(uid) = &object.meta().uid {
                    self.seen.remove(uid);
                }
                Some(object)
            }
            Event::Apply(object) | Event::InitApply(object) => {
                let Some(uid) = object.meta().uid.clone() else {
                    return Some(object);
                };
                let value = (self.relevant)(&object);
                let changed = self.seen.get(&uid) != Some(&value);
                self.seen.insert(uid.clone(), value);
                if let Some(listed) = &mut self.relisting {
                    listed.insert(uid, value);
                }
                changed.then_some(object)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::api::ObjectMeta;

    fn deployment(uid: &str, generation: i64, progressing: &str, available: &str) -> Deployment {
        let condition = |type_: &str, message: &str| DeploymentCondition {
            type_: type_.into(),
            status: "False".into(),
            message: Some(message.into()),
            ..Default::default()
        };
        Deployment {
            metadata: ObjectMeta {
                name: Some("web-ingest".into()),
                uid: Some(uid.into()),
                generation: Some(generation),
                ..Default::default()
            },
            status: Some(DeploymentStatus {
                conditions: Some(vec![
                    condition("Progressing", progressing),
                    condition("Available", available),
                ]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn passes(filter: &mut ChangeFilter<Deployment>, event: Event<Deployment>) -> bool {
        filter.admit(event).is_some()
    }

    #[test]
    fn only_changes_the_status_step_reads_trigger() {
        let mut filter = ChangeFilter::new(deployment_trigger);
        let first = deployment("a", 1, "ReplicaSet created", "no minimum availability");
        assert!(passes(&mut filter, Event::Apply(first.clone())), "new");
        assert!(!passes(&mut filter, Event::Apply(first.clone())), "same");
        let progressing = deployment("a", 1, "ReplicaSet progressed", "no minimum availability");
        assert!(
            !passes(&mut filter, Event::Apply(progressing)),
            "Progressing"
        );
        let mut annotated = first.clone();
        annotated.metadata.annotations =
            Some([("deployment.kubernetes.io/revision".into(), "1".into())].into());
        assert!(!passes(&mut filter, Event::Apply(annotated)), "annotation");

        let available = deployment("a", 1, "ReplicaSet progressed", "has minimum availability");
        assert!(
            passes(&mut filter, Event::Apply(available.clone())),
            "Available"
        );
        let mut replicas = available.clone();
        replicas.status.as_mut().expect("status").available_replicas = Some(1);
        assert!(passes(&mut filter, Event::Apply(replicas)), "replicas");
        let edited = deployment("a", 2, "ReplicaSet progressed", "has minimum availability");
        assert!(
            passes(&mut filter, Event::Apply(edited.clone())),
            "spec edit"
        );
        let mut relabelled = edited.clone();
        relabelled.metadata.labels = Some([("x".into(), "y".into())].into());
        assert!(passes(&mut filter, Event::Apply(relabelled)), "labels");
        let mut deleting = edited.clone();
        deleting.metadata.deletion_timestamp = Some(Time(Default::default()));
        assert!(passes(&mut filter, Event::Apply(deleting)), "deleting");
    }

    #[test]
    fn a_stateful_set_triggers_on_its_spec_and_available_replicas_only() {
        use k8s_openapi::api::apps::v1::StatefulSetStatus;
        let stateful_set = |generation: i64, ready: i32, available: i32| StatefulSet {
            metadata: ObjectMeta {
                name: Some("web-ingest".into()),
                uid: Some("s".into()),
                generation: Some(generation),
                ..Default::default()
            },
            status: Some(StatefulSetStatus {
                replicas: 2,
                ready_replicas: Some(ready),
                available_replicas: Some(available),
                current_revision: Some(format!("web-ingest-{ready}")),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut filter = ChangeFilter::new(stateful_set_trigger);
        let mut admits = |object| filter.admit(Event::Apply(object)).is_some();
        assert!(admits(stateful_set(1, 0, 0)), "new");
        assert!(!admits(stateful_set(1, 1, 0)), "ready, not yet available");
        assert!(admits(stateful_set(1, 1, 1)), "available");
        assert!(admits(stateful_set(2, 1, 1)), "spec edit");
    }

    #[test]
    fn deletions_always_trigger_and_a_recreated_object_is_new() {
        let mut filter = ChangeFilter::new(deployment_trigger);
        let object = deployment("a", 1, "", "");
        assert!(passes(&mut filter, Event::Apply(object.clone())));
        assert!(
            passes(&mut filter, Event::Delete(object.clone())),
            "deleted"
        );
        assert!(passes(&mut filter, Event::Delete(object.clone())), "again");
        assert!(passes(&mut filter, Event::Apply(object)), "recreated");
        let same_name = deployment("b", 1, "", "");
        assert!(passes(&mut filter, Event::Apply(same_name)), "new uid");
    }

    #[test]
    fn a_relist_triggers_only_what_changed_and_forgets_what_is_gone() {
        let mut filter = ChangeFilter::new(deployment_trigger);
        let kept = deployment("a", 1, "", "");
        let gone = deployment("b", 1, "", "");
        assert!(passes(&mut filter, Event::Apply(kept.clone())));
        assert!(passes(&mut filter, Event::Apply(gone)));
        assert!(!passes(&mut filter, Event::Init));
        assert!(!passes(&mut filter, Event::InitApply(kept.clone())), "same");
        let changed = deployment("c", 1, "", "");
        assert!(passes(&mut filter, Event::InitApply(changed)), "new");
        assert!(!passes(&mut filter, Event::InitDone));
        assert_eq!(
            filter.seen.len(),
            2,
            "b was deleted while the watch was down"
        );
        assert!(filter.seen.contains_key("a") && filter.seen.contains_key("c"));
    }

    #[test]
    fn the_stream_triggers_on_spec_and_deletion_only() {
        use crate::reconcile::fixtures::file_stream;
        let guard = |stream: &MetricStream| DeserializeGuard(Ok(stream.clone()));
        let mut stream = file_stream();
        let before = stream_trigger(&guard(&stream));
        stream.status = Some(Default::default());
        stream.metadata.finalizers = Some(vec![crate::labels::FINALIZER.into()]);
        stream.metadata.resource_version = Some("99".into());
        assert_eq!(stream_trigger(&guard(&stream)), before, "own writes");
        stream.metadata.generation = Some(4);
        let edited = stream_trigger(&guard(&stream));
        assert_ne!(edited, before, "spec");
        stream.metadata.deletion_timestamp = Some(Time(Default::default()));
        assert_ne!(stream_trigger(&guard(&stream)), edited, "deletion");
    }

    #[test]
    fn a_budget_triggers_on_its_spec_not_on_the_disruption_controllers_status() {
        use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
        let mut filter = ChangeFilter::new(spec_trigger::<PodDisruptionBudget>);
        let mut budget = PodDisruptionBudget {
            metadata: ObjectMeta {
                name: Some("web-ingest".into()),
                uid: Some("a".into()),
                generation: Some(1),
                resource_version: Some("1".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(filter.admit(Event::Apply(budget.clone())).is_some(), "new");
        budget.status = Some(PodDisruptionBudgetStatus {
            current_healthy: 2,
            desired_healthy: 1,
            disruptions_allowed: 1,
            expected_pods: 2,
            ..Default::default()
        });
        budget.metadata.resource_version = Some("2".into());
        assert!(
            filter.admit(Event::Apply(budget.clone())).is_none(),
            "status"
        );
        budget.metadata.generation = Some(2);
        assert!(
            filter.admit(Event::Apply(budget.clone())).is_some(),
            "spec edit"
        );
        budget.metadata.owner_references = Some(vec![Default::default()]);
        assert!(
            filter.admit(Event::Apply(budget.clone())).is_some(),
            "owned"
        );
        budget.metadata.owner_references = None;
        assert!(
            filter.admit(Event::Apply(budget.clone())).is_some(),
            "orphaned"
        );
        assert!(filter.admit(Event::Delete(budget)).is_some(), "deleted");
    }

    #[test]
    fn pvc_and_topic_triggers_follow_phase_and_readiness() {
        use crate::strimzi::{KafkaTopicCondition, KafkaTopicStatus};
        use k8s_openapi::api::core::v1::PersistentVolumeClaimStatus;
        let mut pvc = PersistentVolumeClaim::default();
        let pending = pvc_trigger(&pvc);
        pvc.metadata.annotations =
            Some([("pv.kubernetes.io/bind-completed".into(), "yes".into())].into());
        assert_eq!(pvc_trigger(&pvc), pending);
        pvc.status = Some(PersistentVolumeClaimStatus {
            phase: Some("Bound".into()),
            ..Default::default()
        });
        assert_ne!(pvc_trigger(&pvc), pending);

        let mut topic = KafkaTopic::new("t", Default::default());
        let fresh = topic_trigger(&topic);
        topic.status = Some(KafkaTopicStatus {
            conditions: vec![KafkaTopicCondition {
                type_: Some("Ready".into()),
                status: Some("True".into()),
                ..Default::default()
            }],
            observed_generation: Some(1),
            topic_name: None,
        });
        assert_ne!(topic_trigger(&topic), fresh);
    }

    #[test]
    fn a_pod_triggers_when_what_the_status_says_of_it_changes_not_on_every_restart() {
        use k8s_openapi::api::core::v1::Pod;
        let pod = |restarts: i32, waiting: &str, backoff: &str, exit_code: i32| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {
                    "name": "web-ingest-x",
                    "uid": "p",
                    "labels": { "metricstream.dev/stream": "web" }
                },
                "status": {
                    "phase": "Running",
                    "containerStatuses": [{
                        "name": "ingest",
                        "image": "x",
                        "imageID": "",
                        "ready": false,
                        "restartCount": restarts,
                        "state": { "waiting": { "reason": waiting, "message": backoff } },
                        "lastState": { "terminated": { "exitCode": exit_code, "reason": "Error" } }
                    }]
                }
            }))
            .expect("a Pod")
        };
        let mut filter = ChangeFilter::new(pod_trigger);
        let creating = pod(0, "ContainerCreating", "", 1);
        assert!(filter.admit(Event::Apply(creating)).is_some(), "new");
        let crashing = pod(1, "CrashLoopBackOff", "back-off 10s restarting", 1);
        assert!(filter.admit(Event::Apply(crashing)).is_some(), "crash loop");
        let again = pod(5, "CrashLoopBackOff", "back-off 2m40s restarting", 1);
        assert!(filter.admit(Event::Apply(again)).is_none(), "same crash");
        let other = pod(6, "CrashLoopBackOff", "back-off 5m0s restarting", 3);
        assert!(
            filter.admit(Event::Apply(other)).is_some(),
            "another exit code"
        );
    }
}
