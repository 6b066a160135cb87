//! Kafka topics through the Kafka admin API, for `topicManagement: admin` (create and grow) and
//! `external` (verify only). Behind a trait so the reconciler does not depend on a broker in
//! tests.

use async_trait::async_trait;
use metricstream_backend::kafka::KafkaSettings;
use metricstream_backend::kafka::admin::{
    TopicChange, delete_topic, ensure_topic, topic_partitions,
};

use crate::reconcile::build::TopicRequest;

/// What the reconciler needs of a Kafka cluster.
#[async_trait]
pub trait TopicAdmin: Send + Sync {
    /// Creates the topic or grows it to `request.partitions`; the partition count afterwards
    /// and, when something changed, an Event reason and note saying what.
    async fn ensure(&self, request: &TopicRequest) -> Result<(u32, Option<TopicChanged>), String>;
    /// The topic's partition count, `None` when it does not exist.
    async fn partitions(&self, bootstrap_servers: &str, topic: &str)
    -> Result<Option<u32>, String>;
    /// Deletes the topic; a topic that does not exist is not an error.
    async fn delete(&self, bootstrap_servers: &str, topic: &str) -> Result<(), String>;
}

/// What [`TopicAdmin::ensure`] changed: an Event reason (`TopicCreated`, `TopicGrown`) and note.
/// Distinct reasons matter: the Event recorder folds repeated reasons into one series.
pub type TopicChanged = (&'static str, String);

/// [`TopicAdmin`] on a real cluster, through the backend crate (librdkafka).
pub struct KafkaTopicAdmin;

fn settings(bootstrap_servers: &str, topic: &str, partitions: u32) -> KafkaSettings {
    KafkaSettings {
        brokers: bootstrap_servers.to_owned(),
        topic: topic.to_owned(),
        partitions,
        client_id: "metricstream-operator".into(),
        security: Default::default(),
        extra: Vec::new(),
    }
}

#[async_trait]
impl TopicAdmin for KafkaTopicAdmin {
    async fn ensure(&self, request: &TopicRequest) -> Result<(u32, Option<TopicChanged>), String> {
        let wanted = u32::try_from(request.partitions).map_err(|e| e.to_string())?;
        let config: Vec<(String, String)> = request
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let change = ensure_topic(
            &settings(&request.bootstrap_servers, &request.topic, wanted),
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
    ) -> Result<Option<u32>, String> {
        topic_partitions(&settings(bootstrap_servers, topic, 1))
            .await
            .map_err(|e| e.to_string())
    }

    async fn delete(&self, bootstrap_servers: &str, topic: &str) -> Result<(), String> {
        match delete_topic(&settings(bootstrap_servers, topic, 1)).await {
            Ok(()) => Ok(()),
            Err(error) if error.to_string().contains("UnknownTopicOrPartition") => Ok(()),
            Err(error) => Err(error.to_string()),
        }
    }
}
