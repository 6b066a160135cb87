//! Tests of the whole desired set, and the helpers the per-child tests share.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{CopiedCredentials, Desired, build};
use crate::config::WorkloadDefaults;
use crate::crd::{MetricStream, TopicManagement};
use crate::labels;

use crate::reconcile::fixtures::{file_stream, kafka_stream};
use crate::reconcile::validate::validate;

pub fn built(stream: &MetricStream) -> Desired {
    build(
        &validate(stream).expect("valid"),
        &WorkloadDefaults::default(),
        &CopiedCredentials::NotNeeded,
    )
}

pub fn deployment<'a>(desired: &'a Desired, name: &str) -> &'a Deployment {
    desired
        .deployments
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some(name))
        .expect("deployment")
}

pub fn pod_spec(deployment: &Deployment) -> &PodSpec {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec")
}

pub fn hash_annotation(deployment: &Deployment) -> String {
    deployment
        .spec
        .as_ref()
        .expect("spec")
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(labels::CONFIG_HASH))
        .cloned()
        .expect("hash annotation")
}

/// The files a workload mounts from Secrets: (secret, key, mount path/file).
pub fn secret_files(deployment: &Deployment) -> Vec<(String, String, String)> {
    let pod = pod_spec(deployment);
    let mounts = pod.containers[0].volume_mounts.clone().unwrap_or_default();
    pod.volumes
        .iter()
        .flatten()
        .filter_map(|volume| {
            let secret = volume.secret.as_ref()?;
            let item = &secret.items.as_ref()?[0];
            let mount = mounts.iter().find(|m| m.name == volume.name)?;
            assert_eq!(mount.read_only, Some(true), "{} is read-only", volume.name);
            assert_eq!(mount.sub_path, None, "whole-directory mounts get updates");
            Some((
                secret.secret_name.clone()?,
                item.key.clone(),
                format!("{}/{}", mount.mount_path, item.path),
            ))
        })
        .collect()
}

#[test]
fn everything_carries_the_standard_labels() {
    let desired = built(&file_stream());
    let mut all: Vec<&ObjectMeta> = vec![&desired.config_map.metadata];
    all.extend(desired.pvcs.iter().map(|p| &p.metadata));
    all.extend(desired.services.iter().map(|s| &s.metadata));
    all.extend(desired.deployments.iter().map(|d| &d.metadata));
    all.extend(desired.network_policies.iter().map(|n| &n.metadata));
    let kafka = built(&kafka_stream(TopicManagement::Admin));
    all.extend(kafka.disruption_budgets.iter().map(|b| &b.metadata));
    assert_eq!(all.len(), 1 + 2 + 1 + 2 + 2 + 1, "every kind is covered");
    for meta in all {
        let l = meta.labels.as_ref().expect("labels");
        assert_eq!(l[labels::NAME], "metricstream");
        assert_eq!(l[labels::INSTANCE], "web");
        assert_eq!(l[labels::MANAGED_BY], "metricstream-operator");
        assert_eq!(l[labels::STREAM], "web");
        assert!(l.contains_key(labels::COMPONENT));
        assert_eq!(meta.namespace.as_deref(), Some("apps"));
    }
}
