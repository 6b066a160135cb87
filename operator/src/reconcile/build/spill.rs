//! The ingest as a StatefulSet, for a stream that spills (`spec.kafka.spill`): a spill outlives
//! the process that wrote it (it is replayed by the next process on the same volume), so each
//! ingest pod needs a volume of its own that follows it, which only a StatefulSet's volume
//! claim template gives.
//!
//! - The pod template is the Deployment's, plus the `spill` volume mounted at [`SPILL_MOUNT`]
//!   and, in the container's own `env` (so only the ingest rolls when they change),
//!   `METRICSTREAM_SPILL_DIR` ([`SPILL_DIR`], a subdirectory: the volume's root may hold
//!   `lost+found`) and `METRICSTREAM_SPILL_MAX_BYTES`, 90 % of the claim (`validate::SPILL_FILL_PERCENT`: the rest
//!   is headroom for the file system and for replayed segments not deleted yet).
//! - The claims (`spill-<stream>-ingest-<ordinal>`) are kept when the StatefulSet scales down
//!   and when it is deleted (`persistentVolumeClaimRetentionPolicy` Retain/Retain): what they
//!   hold was acknowledged to clients. A scaled-down ordinal's claim is mounted again, and its
//!   spill replayed, when the ordinal comes back; a StatefulSet made again (spill turned off and
//!   on) adopts the claims of its ordinals by name.
//! - The claim template carries the stream's labels but not `app.kubernetes.io/managed-by`:
//!   the StatefulSet controller creates and owns the claims, and prune (which lists by the
//!   managed-by label) must never delete or release one. `deletionPolicy` does not apply to
//!   them; deleting the stream leaves them for the user to delete.
//! - `podManagementPolicy: Parallel`: the ingest pods are interchangeable behind the Service,
//!   so they start and stop together rather than one ordinal after another.
//! - `serviceName` names the ingest Service: the pods need no DNS names of their own (clients
//!   go through the Service), so no headless Service is made.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    EnvVar, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodTemplateSpec, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::{Role, metadata};
use crate::labels;
use crate::reconcile::validate::{SpillPlan, ValidatedStream};

/// The volume claim template's name, and so the first part of each claim's name
/// (`spill-<stream>-ingest-<ordinal>`, as the StatefulSet controller names them).
const SPILL_VOLUME: &str = "spill";
/// Where an ingest pod's spill volume is mounted.
const SPILL_MOUNT: &str = "/var/lib/metricstream";
/// The spill's directory on that volume (`METRICSTREAM_SPILL_DIR`).
const SPILL_DIR: &str = "/var/lib/metricstream/spill";

/// The ingest StatefulSet of a stream that spills, around the ingest's pod template.
pub(super) fn ingest_stateful_set(
    stream: &ValidatedStream,
    mut template: PodTemplateSpec,
    plan: &SpillPlan,
) -> StatefulSet {
    let role = Role::Ingest;
    if let Some(container) = template
        .spec
        .as_mut()
        .and_then(|pod| pod.containers.first_mut())
    {
        container
            .volume_mounts
            .get_or_insert_with(Vec::new)
            .push(VolumeMount {
                name: SPILL_VOLUME.into(),
                mount_path: SPILL_MOUNT.into(),
                ..Default::default()
            });
        let env = container.env.get_or_insert_with(Vec::new);
        for (name, value) in spill_env(plan) {
            env.push(EnvVar {
                name: name.into(),
                value: Some(value),
                value_from: None,
            });
        }
    }
    let name = role.object_name(&stream.name);
    StatefulSet {
        metadata: metadata(stream, name.clone(), role.component(), true),
        spec: Some(StatefulSetSpec {
            replicas: Some(role.replicas(stream)),
            selector: LabelSelector {
                match_labels: Some(labels::selector(&stream.name, role.component())),
                match_expressions: None,
            },
            // The ingest Service (same name): no headless Service, the pods need no DNS names.
            service_name: Some(name),
            pod_management_policy: Some("Parallel".into()),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Retain".into()),
                    when_scaled: Some("Retain".into()),
                },
            ),
            template,
            volume_claim_templates: Some(vec![claim_template(stream, plan)]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The ingest's spill settings: where, and how much it may spill.
fn spill_env(plan: &SpillPlan) -> [(&'static str, String); 2] {
    [
        ("METRICSTREAM_SPILL_DIR", SPILL_DIR.to_owned()),
        ("METRICSTREAM_SPILL_MAX_BYTES", plan.max_bytes.to_string()),
    ]
}

/// One ReadWriteOnce volume per ingest pod, labelled for the stream but not managed-by the
/// operator (see the module documentation).
fn claim_template(stream: &ValidatedStream, plan: &SpillPlan) -> PersistentVolumeClaim {
    let mut claim_labels = labels::standard(&stream.name, Role::Ingest.component());
    claim_labels.remove(labels::MANAGED_BY);
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(SPILL_VOLUME.into()),
            labels: Some(claim_labels),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(plan.size.clone()),
                )])),
                ..Default::default()
            }),
            storage_class_name: plan.storage_class.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Container;

    use super::*;
    use crate::config::WorkloadDefaults;
    use crate::crd::{KafkaTlsSpec, MetricStream, SpillSpec, TopicManagement};
    use crate::reconcile::build::tests::{built, deployment, pod_spec};
    use crate::reconcile::build::{CopiedCredentials, build, owner_reference};
    use crate::reconcile::fixtures::kafka_stream;
    use crate::reconcile::validate::validate;

    fn spilling(spill: SpillSpec) -> MetricStream {
        let mut stream = kafka_stream(TopicManagement::Strimzi);
        stream.spec.ingest.replicas = 3;
        stream.spec.kafka.as_mut().expect("kafka").spill = Some(spill);
        stream
    }

    fn on() -> SpillSpec {
        SpillSpec {
            enabled: true,
            ..Default::default()
        }
    }

    fn the_stateful_set(stream: &MetricStream) -> StatefulSet {
        let desired = built(stream);
        assert_eq!(
            desired.stateful_sets.len(),
            1,
            "one StatefulSet: the ingest"
        );
        desired.stateful_sets[0].clone()
    }

    fn container(stateful_set: &StatefulSet) -> &Container {
        let spec = stateful_set.spec.as_ref().expect("spec");
        &spec.template.spec.as_ref().expect("pod spec").containers[0]
    }

    #[test]
    fn a_spilling_ingest_is_a_stateful_set_and_no_deployment() {
        let stream = spilling(on());
        let desired = built(&stream);
        let names: Vec<_> = desired
            .deployments
            .iter()
            .map(|d| d.metadata.name.as_deref().expect("name"))
            .collect();
        assert_eq!(names, ["web-consumer"], "the ingest Deployment is gone");
        let stateful_set = &desired.stateful_sets[0];
        let meta = &stateful_set.metadata;
        assert_eq!(meta.name.as_deref(), Some("web-ingest"));
        assert_eq!(meta.namespace.as_deref(), Some("apps"));
        assert_eq!(
            meta.labels.as_ref(),
            Some(&labels::standard("web", "ingest"))
        );
        let validated = validate(&stream).expect("valid");
        assert_eq!(
            meta.owner_references,
            Some(vec![owner_reference(&validated)])
        );

        let spec = stateful_set.spec.as_ref().expect("spec");
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(
            spec.selector.match_labels,
            Some(labels::selector("web", "ingest")),
            "the Deployment's selector, which the Service and the budget use too"
        );
        assert_eq!(spec.service_name.as_deref(), Some("web-ingest"));
        assert_eq!(
            desired.services[0].metadata.name.as_deref(),
            Some("web-ingest"),
            "serviceName names a Service that exists"
        );
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        assert_eq!(
            spec.persistent_volume_claim_retention_policy,
            Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_deleted: Some("Retain".into()),
                when_scaled: Some("Retain".into()),
            }),
            "spilled data is acknowledged data: no claim goes with a pod or the StatefulSet"
        );
        assert_eq!(spec.update_strategy, None, "the default: RollingUpdate");
    }

    #[test]
    fn the_pod_template_is_the_deployments_plus_the_spill_volume_and_settings() {
        let stream = spilling(on());
        let stateful_set = the_stateful_set(&stream);
        let mut without = stream.clone();
        without.spec.kafka.as_mut().expect("kafka").spill = None;
        let plain = built(&without);
        let mut expected = deployment(&plain, "web-ingest")
            .spec
            .as_ref()
            .expect("spec")
            .template
            .clone();
        let expected_container = &mut expected.spec.as_mut().expect("pod").containers[0];
        expected_container
            .volume_mounts
            .as_mut()
            .expect("mounts")
            .push(VolumeMount {
                name: "spill".into(),
                mount_path: "/var/lib/metricstream".into(),
                ..Default::default()
            });
        expected_container.env = Some(vec![
            EnvVar {
                name: "METRICSTREAM_SPILL_DIR".into(),
                value: Some("/var/lib/metricstream/spill".into()),
                value_from: None,
            },
            EnvVar {
                name: "METRICSTREAM_SPILL_MAX_BYTES".into(),
                // 90 % of 1Gi, the default size.
                value: Some("966367641".into()),
                value_from: None,
            },
        ]);
        assert_eq!(stateful_set.spec.expect("spec").template, expected);
        let pod = pod_spec(deployment(&plain, "web-ingest"));
        assert!(
            pod.volumes.iter().flatten().all(|v| v.name != SPILL_VOLUME),
            "the StatefulSet controller adds the claim's volume"
        );
    }

    #[test]
    fn each_pod_gets_a_claim_of_the_spill_size_that_prune_never_sees() {
        let stateful_set = the_stateful_set(&spilling(SpillSpec {
            enabled: true,
            size: "10Gi".into(),
            storage_class: Some("fast-ssd".into()),
        }));
        let spec = stateful_set.spec.as_ref().expect("spec");
        let claims = spec.volume_claim_templates.as_ref().expect("claims");
        assert_eq!(claims.len(), 1);
        let claim = &claims[0];
        assert_eq!(claim.metadata.name.as_deref(), Some("spill"));
        let claim_labels = claim.metadata.labels.clone().expect("labels");
        assert_eq!(claim_labels[labels::STREAM], "web");
        assert!(
            !claim_labels.contains_key(labels::MANAGED_BY),
            "prune lists by managed-by: a spill claim must never be pruned"
        );
        assert_eq!(claim.metadata.owner_references, None);
        let claim_spec = claim.spec.as_ref().expect("claim spec");
        assert_eq!(
            claim_spec.access_modes.as_deref(),
            Some(&["ReadWriteOnce".to_owned()][..])
        );
        assert_eq!(
            claim_spec
                .resources
                .as_ref()
                .and_then(|r| r.requests.clone()),
            Some(BTreeMap::from([(
                "storage".to_owned(),
                Quantity("10Gi".into())
            )]))
        );
        assert_eq!(claim_spec.storage_class_name.as_deref(), Some("fast-ssd"));
        let max_bytes = container(&stateful_set)
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "METRICSTREAM_SPILL_MAX_BYTES")
            .and_then(|e| e.value.clone());
        assert_eq!(max_bytes.as_deref(), Some("9663676416"), "90 % of 10Gi");
    }

    #[test]
    fn spill_leaves_the_consumer_and_the_shared_config_alone() {
        let stream = spilling(on());
        let mut without = stream.clone();
        without.spec.kafka.as_mut().expect("kafka").spill = None;
        let (with, plain) = (built(&stream), built(&without));
        assert_eq!(
            with.config_map, plain.config_map,
            "the ConfigMap has no spill key"
        );
        assert_eq!(
            deployment(&with, "web-consumer"),
            deployment(&plain, "web-consumer"),
            "turning spill on or off does not roll the consumers"
        );
        assert_eq!(
            with.disruption_budgets, plain.disruption_budgets,
            "the budget selects the ingest pods whatever runs them"
        );
    }

    #[test]
    fn copied_credentials_roll_the_stateful_sets_pods_too() {
        let mut stream = spilling(on());
        let kafka = stream.spec.kafka.as_mut().expect("kafka");
        kafka.tls = Some(KafkaTlsSpec::default());
        let copied = CopiedCredentials::Copied(BTreeMap::from([(
            "ca.crt".to_owned(),
            ByteString(b"PEM".to_vec()),
        )]));
        let desired = build(
            &validate(&stream).expect("valid"),
            &WorkloadDefaults::default(),
            &copied,
        );
        let hash = |template: &PodTemplateSpec| {
            template
                .metadata
                .as_ref()
                .and_then(|m| m.annotations.as_ref())
                .and_then(|a| a.get(labels::CREDENTIALS_HASH))
                .cloned()
        };
        let ingest = hash(
            &desired.stateful_sets[0]
                .spec
                .as_ref()
                .expect("spec")
                .template,
        );
        let consumer = hash(
            &deployment(&desired, "web-consumer")
                .spec
                .as_ref()
                .expect("spec")
                .template,
        );
        assert!(ingest.is_some());
        assert_eq!(ingest, consumer);
    }
}
