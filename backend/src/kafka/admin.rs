//! Topic administration through the Kafka admin API: make sure a topic exists with at least N
//! partitions. Used by the services when asked to manage their topic, and by the operator's
//! `admin` topic mode.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::types::RDKafkaErrorCode;

use super::security::{AccessWatch, access_failure_code};
use super::{KafkaBackendError, KafkaSettings, apply_extra, base_config};

const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);
/// One metadata request's wait: between two, the client's error events are looked at, so that
/// a refused login or TLS handshake ends the wait at once instead of at `ADMIN_TIMEOUT`.
pub(super) const METADATA_ATTEMPT: Duration = Duration::from_millis(500);

/// What [`ensure_topic`] found or did.
#[derive(Debug, PartialEq, Eq)]
pub enum TopicChange {
    Created { partitions: u32 },
    Grown { from: u32, to: u32 },
    Unchanged { partitions: u32 },
}

/// The partition count of `topic`, or `None` when it does not exist. Waits up to 30 s for the
/// cluster, but fails at once with [`KafkaBackendError::Access`] when it refuses this client
/// (SASL authentication, TLS verification, topic authorization).
pub async fn topic_partitions(settings: &KafkaSettings) -> Result<Option<u32>, KafkaBackendError> {
    topic_partitions_within(settings, ADMIN_TIMEOUT).await
}

/// [`topic_partitions`], waiting at most `timeout` for the cluster.
pub async fn topic_partitions_within(
    settings: &KafkaSettings,
    timeout: Duration,
) -> Result<Option<u32>, KafkaBackendError> {
    let mut config = base_config(settings);
    apply_extra(&mut config, settings);
    // A producer handle, not an admin client: rust-rdkafka's admin client never serves the
    // main queue, where librdkafka reports refused logins and handshakes.
    let client: BaseProducer<AccessWatch> = config.create_with_context(AccessWatch::default())?;
    let topic = settings.topic.clone();
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + timeout;
        loop {
            let attempt = client
                .client()
                .fetch_metadata(Some(&topic), METADATA_ATTEMPT.min(timeout));
            // Serves the queued log and error events (errors into `AccessWatch::error`).
            client.poll(Duration::from_millis(100));
            if let Some(refused) = client.context().refused() {
                return Err(KafkaBackendError::Access(refused));
            }
            let metadata = match attempt {
                Ok(metadata) => metadata,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                Err(error) => return Err(error.into()),
            };
            let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
                return Ok(None);
            };
            return match found.error().map(RDKafkaErrorCode::from) {
                None => Ok(Some(found.partitions().len() as u32)),
                Some(RDKafkaErrorCode::UnknownTopicOrPartition) => Ok(None),
                Some(code) => match access_failure_code(code, &format!("topic {topic}")) {
                    Some(refused) => Err(KafkaBackendError::Access(refused)),
                    None => Err(KafkaBackendError::Topic {
                        topic: topic.clone(),
                        reason: format!("metadata error {code:?}"),
                    }),
                },
            };
        }
    })
    .await
    .map_err(|error| KafkaBackendError::Config(format!("metadata task failed: {error}")))?
}

/// Makes sure `settings.topic` exists with at least `settings.partitions` partitions: creates
/// it (with `replication_factor` and `configs`) or adds partitions. Never shrinks a topic and
/// never changes an existing topic's configuration.
pub async fn ensure_topic(
    settings: &KafkaSettings,
    replication_factor: i32,
    configs: &[(String, String)],
) -> Result<TopicChange, KafkaBackendError> {
    let wanted = settings.partitions;
    let admin = admin_client(settings)?;
    let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
    match topic_partitions(settings).await? {
        Some(existing) if existing >= wanted => Ok(TopicChange::Unchanged {
            partitions: existing,
        }),
        Some(existing) => {
            let grow = NewPartitions::new(&settings.topic, wanted as usize);
            let results = admin.create_partitions([&grow], &options).await?;
            check_results(&settings.topic, results)?;
            wait_until_visible(settings).await?;
            Ok(TopicChange::Grown {
                from: existing,
                to: wanted,
            })
        }
        None => {
            let mut topic = NewTopic::new(
                &settings.topic,
                wanted as i32,
                TopicReplication::Fixed(replication_factor),
            );
            for (key, value) in configs {
                topic = topic.set(key, value);
            }
            let results = admin.create_topics([&topic], &options).await?;
            match check_results(&settings.topic, results) {
                Ok(()) => {
                    wait_until_visible(settings).await?;
                    Ok(TopicChange::Created { partitions: wanted })
                }
                // Another replica created it first: check what it made.
                Err(KafkaBackendError::Topic { reason, .. })
                    if reason.contains("TopicAlreadyExists") =>
                {
                    Box::pin(ensure_topic(settings, replication_factor, configs)).await
                }
                Err(error) => Err(error),
            }
        }
    }
}

/// Waits until metadata shows the topic with at least `settings.partitions` partitions: a
/// topic just created or grown takes a moment to reach every broker's metadata cache.
async fn wait_until_visible(settings: &KafkaSettings) -> Result<(), KafkaBackendError> {
    let deadline = tokio::time::Instant::now() + ADMIN_TIMEOUT;
    loop {
        if topic_partitions(settings)
            .await?
            .is_some_and(|found| found >= settings.partitions)
        {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(KafkaBackendError::Topic {
                topic: settings.topic.clone(),
                reason: format!(
                    "still not visible with {} partitions after {ADMIN_TIMEOUT:?}",
                    settings.partitions
                ),
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Deletes the topic. Only for tests and the operator's explicit `delete` policy.
pub async fn delete_topic(settings: &KafkaSettings) -> Result<(), KafkaBackendError> {
    let admin = admin_client(settings)?;
    let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
    let results = admin.delete_topics(&[&settings.topic], &options).await?;
    check_results(&settings.topic, results)
}

fn admin_client(
    settings: &KafkaSettings,
) -> Result<AdminClient<DefaultClientContext>, KafkaBackendError> {
    let mut config = base_config(settings);
    apply_extra(&mut config, settings);
    Ok(config.create()?)
}

fn check_results(
    topic: &str,
    results: Vec<rdkafka::admin::TopicResult>,
) -> Result<(), KafkaBackendError> {
    for result in results {
        if let Err((name, code)) = result {
            return Err(KafkaBackendError::Topic {
                topic: if name.is_empty() {
                    topic.to_owned()
                } else {
                    name
                },
                reason: format!("{code:?}"),
            });
        }
    }
    Ok(())
}
