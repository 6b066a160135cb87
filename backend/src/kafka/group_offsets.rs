//! A consumer group's committed offsets beside its topic's partition ends, for measuring the
//! group's lag from outside it (the operator's autoscaler).
//!
//! A `BaseConsumer` with the group's `group.id` that never subscribes and never is assigned
//! anything does not join the group: `committed_offsets` is an OffsetFetch to the group
//! coordinator, `fetch_watermarks` a ListOffsets to each partition's leader, and neither sends a
//! JoinGroup, so the group's real members are never rebalanced. Nothing is committed
//! (`enable.auto.commit=false`, and nothing is consumed anyway).
//!
//! Every call shares one deadline; a partition whose offsets cannot be read within it is an
//! error naming the partition, never a guessed figure.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::{KafkaSettings, apply_extra, base_config};

/// Most partitions whose ends are asked for at once (each ask is one request to its leader).
const PARALLEL_WATERMARKS: usize = 8;

/// One partition's offsets as the cluster reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub partition: u32,
    /// The oldest offset still in the log (the low watermark).
    pub log_start: i64,
    /// The offset the next record gets (the high watermark).
    pub end: i64,
    /// The group's committed next offset; `None` when it never committed one.
    pub committed: Option<i64>,
}

impl PartitionOffsets {
    /// Records the group has still to read. Without a commit it starts at the log start (the
    /// consumer's `auto.offset.reset=earliest`), so an empty partition has none; a commit below
    /// the log start (retention deleted what it had not read) also reads from there.
    pub fn lag(&self) -> u64 {
        let from = self.committed.unwrap_or(self.log_start).max(self.log_start);
        u64::try_from(self.end.saturating_sub(from)).unwrap_or(0)
    }
}

/// Why the offsets could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GroupOffsetsError {
    #[error("cannot read the metadata of topic {topic} from {brokers}: {reason}")]
    Metadata {
        brokers: String,
        topic: String,
        reason: String,
    },
    #[error("topic {0} does not exist")]
    NoSuchTopic(String),
    #[error("cannot read the committed offsets of group {group}: {reason}")]
    Committed { group: String, reason: String },
    #[error("cannot read the offsets of partition {partition} of {topic}: {reason}")]
    Partition {
        topic: String,
        partition: u32,
        reason: String,
    },
    #[error("{0}")]
    Client(String),
}

/// The offsets of every partition of `settings.topic` for `group`, within `timeout`.
pub async fn group_offsets(
    settings: &KafkaSettings,
    group: &str,
    timeout: Duration,
) -> Result<Vec<PartitionOffsets>, GroupOffsetsError> {
    let mut config = base_config(settings);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // Asking about a topic never creates it.
        .set("allow.auto.create.topics", "false");
    apply_extra(&mut config, settings);
    let consumer: BaseConsumer = config
        .create()
        .map_err(|error| GroupOffsetsError::Client(error.to_string()))?;
    let brokers = settings.brokers.clone();
    let topic = settings.topic.clone();
    let group = group.to_owned();
    let read = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + timeout;
        let result = read_offsets(&consumer, &brokers, &topic, &group, deadline);
        // Dropping a consumer with a group id closes it, which can wait for the cluster: done
        // here, on the blocking thread, not on the caller's.
        drop(consumer);
        result
    });
    // The client's own timeouts bound every call; this bounds the close as well.
    match tokio::time::timeout(timeout + Duration::from_secs(2), read).await {
        Ok(Ok(result)) => result,
        Ok(Err(error)) => Err(GroupOffsetsError::Client(format!(
            "the offsets task failed: {error}"
        ))),
        Err(_) => Err(GroupOffsetsError::Client(format!(
            "no answer from {} within {timeout:?}",
            settings.brokers
        ))),
    }
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

fn read_offsets(
    consumer: &BaseConsumer,
    brokers: &str,
    topic: &str,
    group: &str,
    deadline: Instant,
) -> Result<Vec<PartitionOffsets>, GroupOffsetsError> {
    let partitions = topic_partitions(consumer, brokers, topic, deadline)?;
    let committed = committed_offsets(consumer, topic, group, partitions, deadline)?;
    let ends = watermarks(consumer, topic, partitions, deadline)?;
    Ok(ends
        .into_iter()
        .zip(committed)
        .enumerate()
        .map(
            |(partition, ((log_start, end), committed))| PartitionOffsets {
                partition: partition as u32,
                log_start,
                end,
                committed,
            },
        )
        .collect())
}

fn topic_partitions(
    consumer: &BaseConsumer,
    brokers: &str,
    topic: &str,
    deadline: Instant,
) -> Result<u32, GroupOffsetsError> {
    let metadata_error = |reason: String| GroupOffsetsError::Metadata {
        brokers: brokers.to_owned(),
        topic: topic.to_owned(),
        reason,
    };
    let metadata = consumer
        .fetch_metadata(Some(topic), remaining(deadline))
        .map_err(|error| metadata_error(error.to_string()))?;
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(GroupOffsetsError::NoSuchTopic(topic.to_owned()));
    };
    match found.error().map(RDKafkaErrorCode::from) {
        None if found.partitions().is_empty() => {
            Err(GroupOffsetsError::NoSuchTopic(topic.to_owned()))
        }
        None => Ok(found.partitions().len() as u32),
        Some(RDKafkaErrorCode::UnknownTopicOrPartition) => {
            Err(GroupOffsetsError::NoSuchTopic(topic.to_owned()))
        }
        Some(code) => Err(metadata_error(format!("{code:?}"))),
    }
}

fn committed_offsets(
    consumer: &BaseConsumer,
    topic: &str,
    group: &str,
    partitions: u32,
    deadline: Instant,
) -> Result<Vec<Option<i64>>, GroupOffsetsError> {
    let committed_error = |reason: String| GroupOffsetsError::Committed {
        group: group.to_owned(),
        reason,
    };
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition(topic, partition as i32);
    }
    let list = consumer
        .committed_offsets(list, remaining(deadline))
        .map_err(|error| committed_error(error.to_string()))?;
    (0..partitions)
        .map(|partition| {
            let partition_error = |reason: String| GroupOffsetsError::Partition {
                topic: topic.to_owned(),
                partition,
                reason,
            };
            let element = list
                .find_partition(topic, partition as i32)
                .ok_or_else(|| partition_error("no committed offset in the answer".into()))?;
            element
                .error()
                .map_err(|error| partition_error(format!("committed offset: {error}")))?;
            match element.offset() {
                Offset::Offset(offset) if offset >= 0 => Ok(Some(offset)),
                // Nothing committed yet.
                Offset::Invalid => Ok(None),
                other => Err(partition_error(format!(
                    "unexpected committed offset {other:?}"
                ))),
            }
        })
        .collect()
}

/// `(log start, end)` of every partition, a few partitions at a time.
fn watermarks(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: u32,
    deadline: Instant,
) -> Result<Vec<(i64, i64)>, GroupOffsetsError> {
    let all: Vec<u32> = (0..partitions).collect();
    let chunk = all.len().div_ceil(PARALLEL_WATERMARKS).max(1);
    let results: Vec<Result<Vec<(i64, i64)>, GroupOffsetsError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = all
            .chunks(chunk)
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|&partition| {
                            consumer
                                .fetch_watermarks(topic, partition as i32, remaining(deadline))
                                .map_err(|error| GroupOffsetsError::Partition {
                                    topic: topic.to_owned(),
                                    partition,
                                    reason: format!("watermarks: {error}"),
                                })
                        })
                        .collect()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| {
                worker.join().unwrap_or_else(|_| {
                    Err(GroupOffsetsError::Client(
                        "a watermark thread panicked".into(),
                    ))
                })
            })
            .collect()
    });
    let mut ends = Vec::with_capacity(partitions as usize);
    for result in results {
        ends.extend(result?);
    }
    Ok(ends)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(log_start: i64, end: i64, committed: Option<i64>) -> PartitionOffsets {
        PartitionOffsets {
            partition: 0,
            log_start,
            end,
            committed,
        }
    }

    #[test]
    fn lag_counts_from_the_commit_or_the_log_start() {
        assert_eq!(offsets(0, 0, None).lag(), 0, "empty, never committed");
        assert_eq!(offsets(0, 10, None).lag(), 10, "never committed");
        assert_eq!(
            offsets(5, 10, None).lag(),
            5,
            "never committed, retention ran"
        );
        assert_eq!(offsets(0, 10, Some(4)).lag(), 6);
        assert_eq!(offsets(0, 10, Some(10)).lag(), 0);
        assert_eq!(
            offsets(8, 10, Some(4)).lag(),
            2,
            "retention passed the commit"
        );
        assert_eq!(offsets(0, 10, Some(12)).lag(), 0, "a commit past the end");
    }
}
