//! Tests of the whole desired set, and the helpers the per-child tests share.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use k8s_openapi::ByteString;

use super::{
    CREDENTIALS_CA_KEY, CREDENTIALS_PASSWORD_KEY, CopiedCredentials, Desired, DesiredTopic, build,
};
use crate::config::WorkloadDefaults;
use crate::crd::{MetricStream, TopicManagement};
use crate::labels;

use crate::reconcile::fixtures::{file_stream, kafka_stream, remote_write_stream};
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

/// Every object of a desired set, in apply order, as the API server would receive it; what is not
/// an object (the config hash, a topic made through the Kafka API, what to copy) as data.
fn desired_set(desired: &Desired) -> serde_json::Value {
    fn objects<T: serde::Serialize>(items: &[T]) -> Vec<serde_json::Value> {
        items
            .iter()
            .map(|item| serde_json::to_value(item).expect("a Kubernetes object serializes"))
            .collect()
    }
    let topic = match &desired.topic {
        DesiredTopic::None => serde_json::Value::Null,
        DesiredTopic::Strimzi(topic) => objects(std::slice::from_ref(topic.as_ref())).remove(0),
        DesiredTopic::Admin(request) => serde_json::json!({ "admin": format!("{request:?}") }),
        DesiredTopic::External(request) => {
            serde_json::json!({ "external": format!("{request:?}") })
        }
    };
    serde_json::json!({
        "configHash": desired.config_hash,
        "configMap": objects(std::slice::from_ref(&desired.config_map)),
        "persistentVolumeClaims": objects(&desired.pvcs),
        "services": objects(&desired.services),
        "networkPolicies": objects(&desired.network_policies),
        "podDisruptionBudgets": objects(&desired.disruption_budgets),
        "topic": topic,
        "kafkaUser": desired.kafka_user.as_deref().map(|user| objects(std::slice::from_ref(user))),
        "credentialsToCopy": desired.credentials.as_ref().map(|copy| format!("{copy:?}")),
        "credentialsSecret": desired.credentials_secret.as_ref().map(|s| objects(std::slice::from_ref(s))),
        "deployments": objects(&desired.deployments),
        "statefulSets": objects(&desired.stateful_sets),
    })
}

/// The whole desired set of a file-backed stream (snapshots/*.snap, reviewed like code: a change
/// to what the operator creates shows up there; `cargo insta review` or INSTA_UPDATE=always to
/// accept one on purpose).
#[test]
fn snapshot_of_a_file_backed_stream() {
    insta::assert_yaml_snapshot!("file_backed_stream", desired_set(&built(&file_stream())));
}

/// The whole desired set of a Kafka-backed stream with a Strimzi topic over TLS and SCRAM, its
/// KafkaUser made by the operator and the user's password and cluster CA copied into the
/// stream's credentials Secret.
#[test]
fn snapshot_of_a_kafka_backed_stream_with_copied_credentials() {
    let mut stream = kafka_stream(TopicManagement::Strimzi);
    let kafka = stream.spec.kafka.as_mut().expect("kafka");
    kafka.tls = Some(crate::crd::KafkaTlsSpec::default());
    kafka.strimzi.as_mut().expect("strimzi").create_user = true;
    let copied = CopiedCredentials::Copied(
        [
            (
                CREDENTIALS_CA_KEY.to_owned(),
                ByteString(b"-----BEGIN CERTIFICATE-----".to_vec()),
            ),
            (
                CREDENTIALS_PASSWORD_KEY.to_owned(),
                ByteString(b"not-a-real-password".to_vec()),
            ),
        ]
        .into(),
    );
    let desired = build(
        &validate(&stream).expect("valid"),
        &WorkloadDefaults::default(),
        &copied,
    );
    assert!(
        desired.credentials_secret.is_some(),
        "the copies make a Secret"
    );
    insta::assert_yaml_snapshot!("kafka_backed_stream", desired_set(&desired));
}

/// The whole desired set of a Kafka-backed stream whose consumers write to a store over remote
/// write with a bearer token: the sink settings in the consumer's own env, the token's Secret
/// mounted, the sink volume kept for quarantine and dead letters, and the operator's namespace
/// admitted to the consumers' admin port (it reads their /readyz for SinkAvailable).
#[test]
fn snapshot_of_a_remote_write_backed_stream() {
    let mut defaults = WorkloadDefaults::default();
    defaults.posture.operator_namespace = Some("metricstream-system".into());
    let desired = build(
        &validate(&remote_write_stream()).expect("valid"),
        &defaults,
        &CopiedCredentials::NotNeeded,
    );
    insta::assert_yaml_snapshot!("remote_write_backed_stream", desired_set(&desired));
}

/// The whole desired set of a Kafka-backed stream whose ingest spills: the ingest a StatefulSet
/// with a claim template, the consumer still a Deployment.
#[test]
fn snapshot_of_a_spilling_kafka_backed_stream() {
    let mut stream = kafka_stream(TopicManagement::Admin);
    stream.spec.ingest.replicas = 2;
    stream.spec.kafka.as_mut().expect("kafka").spill = Some(crate::crd::SpillSpec {
        enabled: true,
        size: "5Gi".into(),
        storage_class: Some("fast-ssd".into()),
    });
    insta::assert_yaml_snapshot!("spilling_kafka_backed_stream", desired_set(&built(&stream)));
}
