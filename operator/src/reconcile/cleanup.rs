//! Deletion of a MetricStream (its finalizer path): handle per deletionPolicy what
//! ownerReferences cannot (KafkaUsers and KafkaTopics in the Kafka cluster's namespace, an
//! admin-API topic), then release the finalizer. Owned children and, under Delete, the PVCs are
//! the garbage collector's job.
//!
//! What to do is decided by a pure [`plan`] from the stream and the Strimzi objects found for
//! it; [`cleanup`] only lists those, executes the plan and reports.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use super::dereference::operator_security;
use super::finalizer::{has_finalizer, remove_finalizer};
use super::prune::{let_go, listed};
use super::validate::{self, KafkaSecurityPlan};
use crate::context::Context;
use crate::crd::{Backend, DeletionPolicy, MetricStream, TopicManagement};
use crate::error::Error;
use crate::strimzi::{KafkaTopic, KafkaUser};

/// How long deletion waits for Strimzi to delete a KafkaTopic (it has its own finalizer) or for
/// the admin API to delete a topic, before releasing the MetricStream anyway.
pub const CLEANUP_DEADLINE: Duration = Duration::from_secs(120);
/// How often deletion looks again at KafkaTopics Strimzi is deleting.
const WAIT_POLL: Duration = Duration::from_secs(5);

/// A Strimzi object of the stream, in the Kafka cluster's namespace.
#[derive(Clone, Debug, PartialEq)]
pub enum StrimziObject {
    KafkaUser(ObjectMeta),
    KafkaTopic(ObjectMeta),
}

/// An admin-API topic to delete.
#[derive(Clone, Debug, PartialEq)]
pub struct TopicDeletion {
    pub bootstrap_servers: String,
    pub topic: String,
    /// How the operator connects: `Ok(None)` when the spec names no Kafka plan (nothing to
    /// do), an error when the spec is invalid.
    pub security: Result<Option<KafkaSecurityPlan>, String>,
}

/// What deleting a stream takes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CleanupPlan {
    /// Deleted: every KafkaUser (credentials, not data) and, under Delete, every KafkaTopic
    /// (Strimzi's own finalizer deletes the Kafka topic first).
    pub delete: Vec<StrimziObject>,
    /// KafkaTopics kept under Retain: let go of (no longer managed), each announced by an Event.
    pub retain: Vec<StrimziObject>,
    /// What must be gone before the finalizer is released, as it is named in Events.
    pub wait_for: Vec<String>,
    /// The admin-API topic deletionPolicy Delete removes.
    pub delete_topic: Option<TopicDeletion>,
}

/// What deleting `stream` takes, given the KafkaUsers and KafkaTopics found for it.
pub fn plan(stream: &MetricStream, users: &[ObjectMeta], topics: &[ObjectMeta]) -> CleanupPlan {
    let retain = stream.spec.deletion_policy == DeletionPolicy::Retain;
    let mut plan = CleanupPlan::default();
    for user in users {
        if user.deletion_timestamp.is_none() {
            plan.delete.push(StrimziObject::KafkaUser(user.clone()));
        }
    }
    for topic in topics {
        if retain {
            plan.retain.push(StrimziObject::KafkaTopic(topic.clone()));
            continue;
        }
        if topic.deletion_timestamp.is_none() {
            plan.delete.push(StrimziObject::KafkaTopic(topic.clone()));
        }
        plan.wait_for.push(format!(
            "KafkaTopic {}/{}",
            topic.namespace.as_deref().unwrap_or_default(),
            topic.name.as_deref().unwrap_or_default()
        ));
    }
    if !retain
        && stream.spec.backend == Backend::Kafka
        && let Some(kafka) = &stream.spec.kafka
        && kafka.topic_management == TopicManagement::Admin
    {
        let namespace = stream.namespace().unwrap_or_default();
        plan.delete_topic = Some(TopicDeletion {
            bootstrap_servers: kafka.bootstrap_servers.clone(),
            topic: kafka
                .topic
                .clone()
                .unwrap_or_else(|| validate::default_topic(&namespace, &stream.name_any())),
            security: match validate::validate(stream) {
                Ok(validated) => Ok(validated.kafka().map(|plan| plan.security.clone())),
                Err(invalid) => Err(format!("the spec is invalid: {invalid}")),
            },
        });
    }
    plan
}

/// Whether deletion has waited [`CLEANUP_DEADLINE`] since `deletion_timestamp`.
pub fn overdue(deletion_timestamp: Option<&Time>, now: Timestamp) -> bool {
    deletion_timestamp.is_some_and(|since| {
        let waited = now.duration_since(since.0);
        waited.as_secs() >= CLEANUP_DEADLINE.as_secs() as i64
    })
}

/// Executes the [`plan`] for a stream being deleted; releases the finalizer once nothing is
/// left to wait for (or the deadline passed).
pub async fn cleanup(stream: &MetricStream, ctx: &Context) -> Result<Action, Error> {
    if !has_finalizer(stream) {
        return Ok(Action::await_change());
    }
    let namespace = stream
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let streams: Api<MetricStream> = Api::namespaced(ctx.client.clone(), &namespace);
    let regarding = stream.object_ref(&());
    let name = stream.name_any();
    let uid = stream.uid().unwrap_or_default();
    let overdue = overdue(
        stream.metadata.deletion_timestamp.as_ref(),
        Timestamp::now(),
    );

    let (users, topics) = if ctx.strimzi_installed {
        let known_namespace = stream
            .spec
            .kafka
            .as_ref()
            .and_then(|k| k.strimzi.as_ref())
            .map(|s| s.namespace.as_str());
        (
            listed::<KafkaUser>(ctx, &namespace, &name, known_namespace).await?,
            listed::<KafkaTopic>(ctx, &namespace, &name, known_namespace).await?,
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let plan = plan(stream, &users, &topics);

    for object in &plan.delete {
        let_go_of(ctx, object, false, &uid).await?;
    }
    for object in &plan.retain {
        let_go_of(ctx, object, true, &uid).await?;
        let (StrimziObject::KafkaTopic(meta) | StrimziObject::KafkaUser(meta)) = object;
        ctx.publish(
            &regarding,
            EventType::Normal,
            "DataRetained",
            "Cleanup",
            format!(
                "KafkaTopic {}/{} was kept (deletionPolicy Retain) and is no longer managed",
                meta.namespace.as_deref().unwrap_or_default(),
                meta.name.as_deref().unwrap_or_default()
            ),
        )
        .await;
    }

    if let Some(deletion) = &plan.delete_topic {
        let topic = &deletion.topic;
        let deleted = match &deletion.security {
            Ok(Some(security)) => match operator_security(ctx, &namespace, security).await {
                Ok(security) => {
                    ctx.topics
                        .delete(&deletion.bootstrap_servers, topic, &security)
                        .await
                }
                Err(error) => Err(error),
            },
            Ok(None) => Ok(()),
            Err(error) => Err(error.clone()),
        };
        match deleted {
            Ok(()) => {
                ctx.publish(
                    &regarding,
                    EventType::Normal,
                    "TopicDeleted",
                    "Cleanup",
                    format!("deleted Kafka topic {topic} (deletionPolicy Delete)"),
                )
                .await;
            }
            Err(error) if overdue => {
                ctx.publish(
                    &regarding,
                    EventType::Warning,
                    "TopicDeletionFailed",
                    "Cleanup",
                    format!("gave up deleting Kafka topic {topic} after {CLEANUP_DEADLINE:?}: {error}; delete it by hand"),
                )
                .await;
            }
            Err(error) => {
                return Err(Error::Topic {
                    topic: topic.clone(),
                    message: format!("deleting: {error}"),
                });
            }
        }
    }

    if !plan.wait_for.is_empty() {
        if !overdue {
            return Ok(Action::requeue(WAIT_POLL));
        }
        ctx.publish(
            &regarding,
            EventType::Warning,
            "TopicDeletionBlocked",
            "Cleanup",
            format!(
                "{} still not deleted after {CLEANUP_DEADLINE:?} (is Strimzi's Topic Operator running?); releasing the MetricStream anyway. Remove the KafkaTopic's strimzi.io/topic-operator finalizer by hand if it stays",
                plan.wait_for.join(", ")
            ),
        )
        .await;
    }
    remove_finalizer(&streams, stream).await?;
    Ok(Action::await_change())
}

/// Deletes (or, `retain`, lets go of) a Strimzi object in its own namespace.
async fn let_go_of(
    ctx: &Context,
    object: &StrimziObject,
    retain: bool,
    owner_uid: &str,
) -> Result<(), Error> {
    match object {
        StrimziObject::KafkaUser(meta) => {
            let api: Api<KafkaUser> = Api::namespaced(
                ctx.client.clone(),
                meta.namespace.as_deref().unwrap_or_default(),
            );
            let_go(&api, meta, retain, owner_uid).await?;
        }
        StrimziObject::KafkaTopic(meta) => {
            let api: Api<KafkaTopic> = Api::namespaced(
                ctx.client.clone(),
                meta.namespace.as_deref().unwrap_or_default(),
            );
            let_go(&api, meta, retain, owner_uid).await?;
        }
    }
    Ok(())
}
