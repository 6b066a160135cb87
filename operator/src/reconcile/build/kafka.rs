//! The Kafka objects: Strimzi's KafkaTopic and KafkaUser, the credentials Secret that copies the
//! user's password and the cluster CA, and the object names derived for them.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::{
    COMPONENT_CREDENTIALS, COMPONENT_KAFKA_USER, COMPONENT_TOPIC, CredentialsCopy, Desired,
    metadata,
};
use crate::labels::{self, kafka_topic_name};
use crate::reconcile::validate::{
    CaSource, KafkaSecurityPlan, KafkaTopicPlan, PasswordSource, ValidatedStream,
};
use crate::strimzi::{
    AclResource, AclRule, KafkaTopic, KafkaTopicSpec, KafkaUser, KafkaUserAuthentication,
    KafkaUserAuthorization, KafkaUserSpec,
};

/// The KafkaTopic lives in the Kafka cluster's namespace, so it can carry no ownerReference
/// (cross-namespace owners are invalid and the garbage collector deletes such dependents); the
/// owner labels find it instead, and the finalizer cleans it up.
pub(super) fn kafka_topic(
    stream: &ValidatedStream,
    plan: &KafkaTopicPlan,
    cluster: &str,
    namespace: &str,
) -> KafkaTopic {
    let mut topic_labels = labels::standard(&stream.name, COMPONENT_TOPIC);
    topic_labels.insert(labels::STRIMZI_CLUSTER.into(), cluster.into());
    topic_labels.insert(labels::OWNER_NAMESPACE.into(), stream.namespace.clone());
    topic_labels.insert(labels::OWNER_NAME.into(), stream.name.clone());
    let mut topic = KafkaTopic::new(
        &kafka_topic_name(&stream.namespace, &stream.name),
        KafkaTopicSpec {
            topic_name: Some(plan.topic.clone()),
            partitions: Some(stream.partitions),
            replicas: Some(plan.replication_factor),
            config: plan
                .config
                .iter()
                .map(|(key, value)| (key.clone(), serde_json::Value::String(value.clone())))
                .collect(),
        },
    );
    topic.metadata.namespace = Some(namespace.to_owned());
    topic.metadata.labels = Some(topic_labels);
    topic
}

/// The KafkaUser, in the Kafka cluster's namespace (no ownerReference, like the KafkaTopic),
/// with SCRAM-SHA-512 credentials and exactly the ACLs the workloads use.
pub(super) fn kafka_user(
    stream: &ValidatedStream,
    plan: &KafkaTopicPlan,
    username: &str,
    cluster: &str,
    namespace: &str,
) -> KafkaUser {
    let mut user_labels = labels::standard(&stream.name, COMPONENT_KAFKA_USER);
    user_labels.insert(labels::STRIMZI_CLUSTER.into(), cluster.into());
    user_labels.insert(labels::OWNER_NAMESPACE.into(), stream.namespace.clone());
    user_labels.insert(labels::OWNER_NAME.into(), stream.name.clone());
    let acls = workload_acls(&plan.topic, &stream.consumer.group);
    let mut user = KafkaUser::new(
        username,
        KafkaUserSpec {
            authentication: Some(KafkaUserAuthentication {
                type_: "scram-sha-512".into(),
            }),
            authorization: Some(KafkaUserAuthorization {
                type_: "simple".into(),
                acls,
            }),
        },
    );
    user.metadata.namespace = Some(namespace.to_owned());
    user.metadata.labels = Some(user_labels);
    user
}

/// The backend's [`workload_acls`](metricstream_backend::kafka::workload_acls) (the list its
/// tests grant a real broker's user) in Strimzi's spelling: literal names, any host.
pub(super) fn workload_acls(topic: &str, group: &str) -> Vec<AclRule> {
    metricstream_backend::kafka::workload_acls(topic, group)
        .into_iter()
        .map(|acl| AclRule {
            resource: AclResource {
                type_: acl.resource_type.kafka_name().into(),
                name: Some(acl.name),
                pattern_type: Some("literal".into()),
            },
            operations: acl
                .operations
                .iter()
                .map(|op| op.kafka_name().to_owned())
                .collect(),
        })
        .collect()
}

pub(super) fn credentials_copy(
    stream: &ValidatedStream,
    security: &KafkaSecurityPlan,
    cluster: &str,
    namespace: &str,
) -> CredentialsCopy {
    CredentialsCopy {
        secret_name: Desired::credentials_secret_name(&stream.name),
        kafka_namespace: namespace.to_owned(),
        password_from: security
            .sasl
            .as_ref()
            .filter(|sasl| sasl.password == PasswordSource::StrimziUser)
            .map(|sasl| sasl.username.clone()),
        ca_from: matches!(security.tls, Some(CaSource::StrimziClusterCa))
            .then(|| format!("{cluster}-cluster-ca-cert")),
    }
}

/// The stream's credentials Secret holding what was copied (`password`, `ca.crt`), owned by
/// the stream.
pub fn credentials_secret(
    stream: &ValidatedStream,
    copy: &CredentialsCopy,
    data: BTreeMap<String, ByteString>,
) -> Secret {
    Secret {
        metadata: metadata(
            stream,
            copy.secret_name.clone(),
            COMPONENT_CREDENTIALS,
            true,
        ),
        data: Some(data),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// 16 hex digits identifying the credentials, for [`labels::CREDENTIALS_HASH`].
pub fn credentials_hash(data: &BTreeMap<String, ByteString>) -> String {
    let mut bytes = Vec::new();
    for (key, value) in data {
        bytes.extend_from_slice(key.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(&value.0);
        bytes.push(0);
    }
    format!("{:016x}", labels::stable_hash(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{SaslType, TopicManagement};
    use crate::reconcile::build::tests::*;
    use crate::reconcile::build::*;
    use crate::reconcile::fixtures::kafka_stream;

    #[test]
    fn a_plaintext_kafka_stream_sets_no_credentials() {
        let desired = built(&kafka_stream(TopicManagement::Admin));
        let env = desired.config_map.data.as_ref().expect("data");
        assert_eq!(env["METRICSTREAM_KAFKA_SECURITY_PROTOCOL"], "plaintext");
        assert!(!env.contains_key("METRICSTREAM_KAFKA_SASL_USERNAME"));
        assert!(desired.kafka_user.is_none());
        assert!(desired.credentials.is_none());
        for deployment in &desired.deployments {
            assert!(
                secret_files(deployment)
                    .iter()
                    .all(|(secret, _, _)| secret == "web-tokens"),
                "only the tokens Secret"
            );
        }
    }

    #[test]
    fn user_given_tls_and_scram_secrets_are_mounted_into_both_workloads() {
        let mut stream = kafka_stream(TopicManagement::Admin);
        let kafka = stream.spec.kafka.as_mut().expect("kafka");
        kafka.tls = Some(crate::crd::KafkaTlsSpec {
            ca_secret_ref: Some(crate::crd::SecretKeyRef {
                name: "kafka-ca".into(),
                key: Some("root.pem".into()),
            }),
        });
        kafka.authentication = Some(crate::crd::KafkaAuthenticationSpec {
            type_: SaslType::ScramSha256,
            username: "web-writer".into(),
            password_secret_ref: crate::crd::SecretKeyRef {
                name: "web-kafka".into(),
                key: None,
            },
        });
        let desired = built(&stream);
        let env = desired.config_map.data.as_ref().expect("data");
        assert_eq!(env["METRICSTREAM_KAFKA_SECURITY_PROTOCOL"], "sasl-ssl");
        assert_eq!(env["METRICSTREAM_KAFKA_SASL_MECHANISM"], "scram-sha-256");
        assert_eq!(env["METRICSTREAM_KAFKA_SASL_USERNAME"], "web-writer");
        assert_eq!(
            env["METRICSTREAM_KAFKA_CA_FILE"],
            "/etc/metricstream/kafka-ca/ca.crt"
        );
        assert_eq!(
            env["METRICSTREAM_KAFKA_SASL_PASSWORD_FILE"],
            "/etc/metricstream/kafka-sasl/password"
        );
        assert!(
            !env.values().any(|value| value.contains("root.pem")),
            "the environment names files, never Secret contents"
        );
        assert!(desired.kafka_user.is_none() && desired.credentials.is_none());
        for deployment in &desired.deployments {
            let files = secret_files(deployment);
            assert!(files.contains(&(
                "kafka-ca".into(),
                "root.pem".into(),
                env["METRICSTREAM_KAFKA_CA_FILE"].clone()
            )));
            assert!(files.contains(&(
                "web-kafka".into(),
                "password".into(),
                env["METRICSTREAM_KAFKA_SASL_PASSWORD_FILE"].clone()
            )));
        }
    }

    #[test]
    fn strimzi_create_user_makes_a_kafka_user_with_exactly_the_workload_acls() {
        let mut stream = kafka_stream(TopicManagement::Strimzi);
        let kafka = stream.spec.kafka.as_mut().expect("kafka");
        kafka.tls = Some(crate::crd::KafkaTlsSpec::default());
        kafka.strimzi.as_mut().expect("strimzi").create_user = true;
        let desired = built(&stream);

        let user = desired.kafka_user.as_ref().expect("a KafkaUser");
        assert_eq!(user.metadata.namespace.as_deref(), Some("kafka"));
        assert_eq!(
            user.metadata.owner_references, None,
            "cross-namespace: no owner"
        );
        let user_labels = user.metadata.labels.as_ref().expect("labels");
        assert_eq!(user_labels[labels::STRIMZI_CLUSTER], "my-cluster");
        assert_eq!(user_labels[labels::OWNER_NAMESPACE], "apps");
        let username = user.metadata.name.clone().expect("name");
        assert_eq!(username, kafka_topic_name("apps", "web"));
        let spec = &user.spec;
        assert_eq!(
            spec.authentication.as_ref().map(|a| a.type_.as_str()),
            Some("scram-sha-512")
        );
        let authorization = spec.authorization.as_ref().expect("authorization");
        assert_eq!(authorization.type_, "simple");
        let acls: Vec<(String, String, Vec<String>)> = authorization
            .acls
            .iter()
            .map(|acl| {
                assert_eq!(acl.resource.pattern_type.as_deref(), Some("literal"));
                (
                    acl.resource.type_.clone(),
                    acl.resource.name.clone().expect("a named resource"),
                    acl.operations.clone(),
                )
            })
            .collect();
        assert_eq!(
            acls,
            vec![
                (
                    "topic".into(),
                    "metrics-web".into(),
                    vec!["Read".into(), "Write".into()]
                ),
                ("group".into(), "storage-writer".into(), vec!["Read".into()]),
            ]
        );

        let copy = desired.credentials.as_ref().expect("a credentials copy");
        assert_eq!(copy.secret_name, "web-kafka-credentials");
        assert_eq!(copy.kafka_namespace, "kafka");
        assert_eq!(copy.password_from.as_deref(), Some(username.as_str()));
        assert_eq!(copy.ca_from.as_deref(), Some("my-cluster-cluster-ca-cert"));

        let env = desired.config_map.data.as_ref().expect("data");
        assert_eq!(env["METRICSTREAM_KAFKA_SECURITY_PROTOCOL"], "sasl-ssl");
        assert_eq!(env["METRICSTREAM_KAFKA_SASL_MECHANISM"], "scram-sha-512");
        assert_eq!(env["METRICSTREAM_KAFKA_SASL_USERNAME"], username);
        for deployment in &desired.deployments {
            let files = secret_files(deployment);
            assert!(files.contains(&(
                "web-kafka-credentials".into(),
                "password".into(),
                "/etc/metricstream/kafka-sasl/password".into()
            )));
            assert!(files.contains(&(
                "web-kafka-credentials".into(),
                "ca.crt".into(),
                "/etc/metricstream/kafka-ca/ca.crt".into()
            )));
        }
    }

    #[test]
    fn copied_credentials_hash_changes_with_any_byte() {
        let data = |password: &str| {
            BTreeMap::from([(
                CREDENTIALS_PASSWORD_KEY.to_owned(),
                ByteString(password.as_bytes().to_vec()),
            )])
        };
        assert_eq!(credentials_hash(&data("a")), credentials_hash(&data("a")));
        assert_ne!(credentials_hash(&data("a")), credentials_hash(&data("b")));
        assert!(!credentials_hash(&data("secret")).contains("secret"));
    }

    #[test]
    fn the_strimzi_topic_lives_in_the_kafka_namespace_without_an_owner() {
        let desired = built(&kafka_stream(TopicManagement::Strimzi));
        let DesiredTopic::Strimzi(topic) = &desired.topic else {
            panic!("expected a KafkaTopic, got {:?}", desired.topic);
        };
        assert_eq!(topic.metadata.namespace.as_deref(), Some("kafka"));
        assert_eq!(
            topic.metadata.name.as_deref(),
            Some("metricstream.apps.web")
        );
        assert!(topic.metadata.owner_references.is_none());
        let l = topic.metadata.labels.as_ref().expect("labels");
        assert_eq!(l[labels::STRIMZI_CLUSTER], "my-cluster");
        assert_eq!(l[labels::OWNER_NAMESPACE], "apps");
        assert_eq!(l[labels::OWNER_NAME], "web");
        assert_eq!(l[labels::MANAGED_BY], "metricstream-operator");
        assert_eq!(topic.spec.topic_name.as_deref(), Some("metrics-web"));
        assert_eq!(topic.spec.partitions, Some(4));
        assert_eq!(topic.spec.replicas, Some(1));
        assert_eq!(
            topic.spec.config["retention.ms"],
            serde_json::json!("604800000")
        );
        let json = serde_json::to_value(topic.as_ref()).expect("json");
        assert_eq!(json["apiVersion"], "kafka.strimzi.io/v1");
        assert_eq!(json["kind"], "KafkaTopic");
    }

    #[test]
    fn kafka_topic_names_are_sanitized_and_shortened_without_collisions() {
        assert_eq!(kafka_topic_name("apps", "web"), "metricstream.apps.web");
        let long_ns = "n".repeat(40);
        let a = kafka_topic_name(&long_ns, &"a".repeat(50));
        let b = kafka_topic_name(&long_ns, &format!("{}b", "a".repeat(49)));
        for name in [&a, &b] {
            assert!(name.len() <= MAX_TOPIC_OBJECT_NAME, "{name}");
            assert!(crate::labels::is_dns_subdomain(name), "{name}");
        }
        assert_ne!(a, b);
        let odd = kafka_topic_name("apps", "We_b");
        assert!(crate::labels::is_dns_subdomain(&odd), "{odd}");
        assert_ne!(odd, kafka_topic_name("apps", "we-b"));
    }
}
