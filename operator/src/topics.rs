//! Kafka topics through the Kafka admin API, for `topicManagement: admin` (create and grow) and
//! `external` (verify only). Behind a trait so the reconciler does not depend on a broker in
//! tests.

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use metricstream_backend::kafka::admin::{
    TopicChange, delete_topic, ensure_topic, topic_partitions,
};
use metricstream_backend::kafka::{
    KafkaSasl, KafkaSecurity, KafkaSettings, KafkaTls, SaslMechanism,
};

use crate::crd::SaslType;
use crate::reconcile::build::TopicRequest;
use crate::reconcile::validate::{CaSource, KafkaSecurityPlan, PasswordSource};

/// What the reconciler needs of a Kafka cluster.
#[async_trait]
pub trait TopicAdmin: Send + Sync {
    /// Creates the topic or grows it to `request.partitions`; the partition count afterwards
    /// and, when something changed, an Event reason and note saying what.
    async fn ensure(
        &self,
        request: &TopicRequest,
        security: &KafkaSecurity,
    ) -> Result<(u32, Option<TopicChanged>), String>;
    /// The topic's partition count, `None` when it does not exist.
    async fn partitions(
        &self,
        bootstrap_servers: &str,
        topic: &str,
        security: &KafkaSecurity,
    ) -> Result<Option<u32>, String>;
    /// Deletes the topic; a topic that does not exist is not an error.
    async fn delete(
        &self,
        bootstrap_servers: &str,
        topic: &str,
        security: &KafkaSecurity,
    ) -> Result<(), String>;
}

/// What [`TopicAdmin::ensure`] changed: an Event reason (`TopicCreated`, `TopicGrown`) and note.
/// Distinct reasons matter: the Event recorder folds repeated reasons into one series.
pub type TopicChanged = (&'static str, String);

/// [`TopicAdmin`] on a real cluster, through the backend crate (librdkafka).
pub struct KafkaTopicAdmin;

/// Connection settings for the operator's own client of `topic` (admin calls, lag).
pub(crate) fn settings(
    bootstrap_servers: &str,
    topic: &str,
    partitions: u32,
    security: &KafkaSecurity,
) -> KafkaSettings {
    KafkaSettings {
        brokers: bootstrap_servers.to_owned(),
        topic: topic.to_owned(),
        partitions,
        client_id: "metricstream-operator".into(),
        security: security.clone(),
        extra: Vec::new(),
    }
}

/// The operator's own Kafka security for a stream's cluster (topicManagement admin and external):
/// the stream's plan with the Secrets it names, read from the stream's namespace. An error says
/// which Secret or key is missing; it never contains a Secret's content.
pub async fn resolve_security(
    secrets: &Api<Secret>,
    plan: &KafkaSecurityPlan,
) -> Result<KafkaSecurity, String> {
    let read = |name: String, key: String| async move {
        let secret = secrets
            .get_opt(&name)
            .await
            .map_err(|error| format!("reading Secret {name}: {error}"))?
            .ok_or_else(|| format!("Secret {name} does not exist"))?;
        let value = secret
            .data
            .and_then(|mut data| data.remove(&key))
            .ok_or_else(|| format!("Secret {name} has no key {key}"))?;
        String::from_utf8(value.0).map_err(|_| format!("key {key} of Secret {name} is not UTF-8"))
    };
    let tls = match &plan.tls {
        None => None,
        Some(CaSource::Secret { name, key }) => Some(KafkaTls {
            ca_pem: Some(read(name.clone(), key.clone()).await?),
        }),
        // The Strimzi cluster CA is only for workloads of strimzi-managed topics, which the
        // operator itself never connects to.
        Some(CaSource::SystemRoots | CaSource::StrimziClusterCa) => Some(KafkaTls { ca_pem: None }),
    };
    let sasl = match &plan.sasl {
        None => None,
        Some(sasl) => {
            let password = match &sasl.password {
                PasswordSource::Secret { name, key } => read(name.clone(), key.clone()).await?,
                PasswordSource::StrimziUser => {
                    return Err("the operator has no credentials of a created KafkaUser".into());
                }
            };
            Some(KafkaSasl {
                mechanism: match sasl.mechanism {
                    SaslType::ScramSha512 => SaslMechanism::ScramSha512,
                    SaslType::ScramSha256 => SaslMechanism::ScramSha256,
                },
                username: sasl.username.clone(),
                // A file-made Secret often ends in a newline the password does not have.
                password: password.trim_end_matches(['\r', '\n']).to_owned(),
            })
        }
    };
    Ok(KafkaSecurity { tls, sasl })
}

#[async_trait]
impl TopicAdmin for KafkaTopicAdmin {
    async fn ensure(
        &self,
        request: &TopicRequest,
        security: &KafkaSecurity,
    ) -> Result<(u32, Option<TopicChanged>), String> {
        let wanted = u32::try_from(request.partitions).map_err(|e| e.to_string())?;
        let config: Vec<(String, String)> = request
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let change = ensure_topic(
            &settings(&request.bootstrap_servers, &request.topic, wanted, security),
            request.replication_factor,
            &config,
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok(match change {
            TopicChange::Created { partitions } => (
                partitions,
                Some((
                    "TopicCreated",
                    format!(
                        "created topic {} with {partitions} partitions",
                        request.topic
                    ),
                )),
            ),
            TopicChange::Grown { from, to } => (
                to,
                Some((
                    "TopicGrown",
                    format!(
                        "grew topic {} from {from} to {to} partitions",
                        request.topic
                    ),
                )),
            ),
            TopicChange::Unchanged { partitions } => (partitions, None),
        })
    }

    async fn partitions(
        &self,
        bootstrap_servers: &str,
        topic: &str,
        security: &KafkaSecurity,
    ) -> Result<Option<u32>, String> {
        topic_partitions(&settings(bootstrap_servers, topic, 1, security))
            .await
            .map_err(|e| e.to_string())
    }

    async fn delete(
        &self,
        bootstrap_servers: &str,
        topic: &str,
        security: &KafkaSecurity,
    ) -> Result<(), String> {
        match delete_topic(&settings(bootstrap_servers, topic, 1, security)).await {
            Ok(()) => Ok(()),
            Err(error) if error.to_string().contains("UnknownTopicOrPartition") => Ok(()),
            Err(error) => Err(error.to_string()),
        }
    }
}
