//! The consumer's half of the replay filter ([`crate::replay`]): reading a record's identity,
//! loading each assigned partition's marks from the group's commit, holding back and seeking
//! back what was read before they loaded, dropping second copies, and committing the marks with
//! the offsets. What is kept per partition, and why it stays exact, is in `replay_state`.

use std::collections::{BTreeSet, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset as KafkaOffset, TopicPartitionList};

use super::replay_state::{CommitPlan, PartitionFilter, ReplayState};
use super::{GroupContext, KafkaConsumer};
use crate::model::{Offset, Partition};
use crate::queue::{ConsumeError, ConsumedRecord};
use crate::replay::{REPLAY_HEADER, ReplayIdentity, ReplayMarks};

/// How long loading partitions' replay marks, or seeking partitions back, may take in a poll.
const REPLAY_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a commit may keep the consumer from polling.
const COMMIT_WAIT: Duration = Duration::from_secs(10);

/// A record read in a poll, and what its replay header says.
pub(super) struct Fetched {
    pub record: ConsumedRecord,
    pub identity: HeaderIdentity,
}

pub(super) enum HeaderIdentity {
    /// Not a replayed record: it passes untouched.
    Absent,
    Valid(ReplayIdentity),
    /// A header that is not an identity. The record passes (a bad header never costs data).
    Malformed,
}

pub(super) fn header_identity(message: &BorrowedMessage<'_>) -> HeaderIdentity {
    let Some(header) = message
        .headers()
        .and_then(|headers| headers.iter().find(|header| header.key == REPLAY_HEADER))
    else {
        return HeaderIdentity::Absent;
    };
    match header.value.and_then(ReplayIdentity::from_bytes) {
        Some(identity) => HeaderIdentity::Valid(identity),
        None => HeaderIdentity::Malformed,
    }
}

impl KafkaConsumer {
    /// Discards the replay state of revoked partitions (their marks are reloaded from the
    /// group's commit if they come back) and starts it, unloaded, for assigned ones.
    pub(super) fn track_assignment(
        &mut self,
        revoked: &[Partition],
        assigned: &[Partition],
        owned: &BTreeSet<Partition>,
    ) {
        for partition in revoked {
            self.replay.remove(partition);
        }
        for partition in assigned {
            self.replay.insert(*partition, ReplayState::unloaded());
        }
        self.replay.retain(|partition, _| owned.contains(partition));
        for partition in owned {
            self.replay
                .entry(*partition)
                .or_insert_with(ReplayState::unloaded);
        }
    }

    /// Loads the marks of the partitions that have none yet from the group's commit. The
    /// records read of a partition still without marks are held back (removed from `fetched`)
    /// and the partition is sought back to the first of them, to be read again once they load.
    pub(super) async fn load_marks(
        &mut self,
        consumer: &Arc<StreamConsumer<GroupContext>>,
        fetched: &mut Vec<Fetched>,
    ) {
        let unloaded: Vec<Partition> = self
            .replay
            .iter()
            .filter(|(_, state)| matches!(state, ReplayState::Unloaded { .. }))
            .map(|(partition, _)| *partition)
            .collect();
        if unloaded.is_empty() {
            return;
        }
        let loadable: Vec<Partition> = unloaded
            .iter()
            .copied()
            .filter(|partition| {
                self.replay
                    .get(partition)
                    .is_some_and(ReplayState::may_load)
            })
            .collect();
        let mut loaded = load_committed_marks(consumer, &self.topic, &loadable).await;
        let mut seeks = Vec::new();
        for partition in unloaded {
            if let Some(filter) = loaded.remove(&partition) {
                self.replay.insert(partition, ReplayState::Loaded(filter));
                continue;
            }
            let first = fetched
                .iter()
                .filter(|f| f.record.partition == partition)
                .map(|f| f.record.offset)
                .min();
            if first.is_some() {
                fetched.retain(|f| f.record.partition != partition);
            }
            if let Some(state) = self.replay.get_mut(&partition)
                && let Some(to) = state.hold_back(first)
            {
                tracing::info!(
                    %partition,
                    rewind_to = %to,
                    "the partition's replay marks are not loaded yet; its records are read again later"
                );
                seeks.push((partition, to));
            }
        }
        for (partition, went_through) in seek_back(consumer, &self.topic, &seeks).await {
            if let Some(state) = self.replay.get_mut(&partition) {
                state.sought(went_through);
            }
        }
    }

    /// Runs the loaded partitions' records through their marks: second copies are dropped and
    /// counted, the rest returned in order.
    pub(super) fn drop_second_copies(&mut self, fetched: Vec<Fetched>) -> Vec<ConsumedRecord> {
        let mut records = Vec::with_capacity(fetched.len());
        let mut dropped = 0u64;
        let mut malformed = Vec::new();
        for Fetched { record, identity } in fetched {
            // `load_marks` held back every record of a partition without marks.
            let Some(ReplayState::Loaded(filter)) = self.replay.get_mut(&record.partition) else {
                continue;
            };
            let identity = match identity {
                HeaderIdentity::Absent => None,
                HeaderIdentity::Valid(identity) => Some(identity),
                HeaderIdentity::Malformed => {
                    malformed.push((record.partition.0, record.offset.0));
                    None
                }
            };
            if filter.read(record.offset, identity) {
                records.push(record);
            } else {
                dropped += 1;
            }
        }
        if dropped > 0 {
            self.metrics.replay_duplicates_dropped.inc_by(dropped);
            tracing::debug!(dropped, "dropped second copies of replayed records");
        }
        if let Some((partition, offset)) = malformed.first() {
            tracing::warn!(
                count = malformed.len(),
                partition,
                offset,
                "records with a malformed {REPLAY_HEADER} header passed without a duplicate check"
            );
        }
        records
    }

    /// The dropped second copies to commit past in partitions the caller is not committing.
    pub(super) fn dropped_tails(
        &self,
        except: &[(Partition, Offset)],
    ) -> Vec<(Partition, CommitPlan)> {
        // A partition with a rebalance event not applied yet (a poll that failed after it) is
        // left alone: its state here may belong to an assignment that has ended.
        let settled: BTreeSet<Partition> = {
            let shared = self.shared();
            shared
                .owned
                .iter()
                .filter(|p| !shared.assigned.contains(p) && !shared.revoked.contains(p))
                .copied()
                .collect()
        };
        self.replay
            .iter()
            .filter(|(partition, _)| {
                settled.contains(partition) && !except.iter().any(|(other, _)| other == *partition)
            })
            .filter_map(|(partition, state)| match state {
                ReplayState::Loaded(filter) => Some((*partition, filter.dropped_tail()?)),
                ReplayState::Unloaded { .. } => None,
            })
            .collect()
    }

    /// Commits past second copies that ended a poll with nothing else to commit (the caller
    /// commits what a poll returned; here nothing was). A failure is retried at the next poll.
    pub(super) async fn commit_dropped_tails(&mut self) {
        let plans = self.dropped_tails(&[]);
        if let Err(error) = self.commit_plans(plans).await {
            tracing::warn!(%error, "committing past dropped second copies failed; retrying at the next poll");
        }
    }

    /// Commits each partition's position with its replay marks as the commit's metadata.
    pub(super) async fn commit_plans(
        &mut self,
        plans: Vec<(Partition, CommitPlan)>,
    ) -> Result<(), ConsumeError> {
        if plans.is_empty() {
            return Ok(());
        }
        let consumer = self.consumer()?;
        let mut list = TopicPartitionList::new();
        for (partition, plan) in &plans {
            let mut element = list.add_partition(&self.topic, partition.0 as i32);
            element
                .set_offset(KafkaOffset::Offset(plan.at.0 as i64))
                .map_err(|error| ConsumeError::Other(error.to_string()))?;
            element.set_metadata(plan.marks.to_metadata());
        }
        // A synchronous commit waits for the group coordinator for as long as it is away, and a
        // member that waits with it stops polling, so it cannot serve the rebalance the
        // cluster's return brings and may wait forever. So the wait is bounded; a commit that is
        // still unanswered keeps its thread and is waited for (bounded again) before the next
        // one starts, which supersedes it.
        if let Some(earlier) = self.unanswered_commit.as_mut() {
            if tokio::time::timeout(COMMIT_WAIT, earlier).await.is_err() {
                return Err(ConsumeError::Unavailable(
                    "an earlier commit is still waiting for the group coordinator".into(),
                ));
            }
            self.unanswered_commit = None;
        }
        let mut task =
            tokio::task::spawn_blocking(move || consumer.commit(&list, CommitMode::Sync));
        let committed = match tokio::time::timeout(COMMIT_WAIT, &mut task).await {
            Ok(joined) => joined
                .map_err(|error| ConsumeError::Other(format!("commit task failed: {error}")))?,
            Err(_) => {
                self.unanswered_commit = Some(task);
                return Err(ConsumeError::Unavailable(format!(
                    "the group coordinator did not answer a commit within {COMMIT_WAIT:?}"
                )));
            }
        };
        committed.map_err(|error| match error.rdkafka_error_code() {
            // The group moved on without this member (its session expired during an outage, or
            // a rebalance is under way): this commit can never succeed.
            Some(
                RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::FencedInstanceId,
            ) => ConsumeError::OwnershipLost(format!("commit failed: {error}")),
            _ => ConsumeError::Unavailable(format!("commit failed: {error}")),
        })?;
        for (partition, plan) in plans {
            if let Some(ReplayState::Loaded(filter)) = self.replay.get_mut(&partition) {
                filter.committed(plan);
            }
        }
        Ok(())
    }
}

/// The group's committed position and replay marks of `partitions`, for those it could read.
/// The others stay unloaded and are retried at the next poll.
async fn load_committed_marks(
    consumer: &Arc<StreamConsumer<GroupContext>>,
    topic: &str,
    partitions: &[Partition],
) -> HashMap<Partition, PartitionFilter> {
    if partitions.is_empty() {
        return HashMap::new();
    }
    let mut list = TopicPartitionList::new();
    for partition in partitions {
        list.add_partition(topic, partition.0 as i32);
    }
    let consumer = consumer.clone();
    let owned_topic = topic.to_owned();
    let fetched = tokio::task::spawn_blocking(move || {
        let list = consumer.committed_offsets(list, REPLAY_CALL_TIMEOUT)?;
        Ok::<_, KafkaError>(
            list.elements_for_topic(&owned_topic)
                .iter()
                .map(|element| {
                    let partition = Partition(element.partition().max(0) as u32);
                    let committed = match element.offset() {
                        KafkaOffset::Offset(offset) if offset >= 0 => Some(Offset(offset as u64)),
                        _ => None,
                    };
                    // rdkafka panics on metadata that is not UTF-8. A broker hands back what
                    // it decoded as a string, so it always is; should it not be, that is
                    // unreadable marks, not a crash.
                    let metadata = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        element.metadata().to_owned()
                    }))
                    .map_err(|_| "the commit's metadata is not UTF-8".to_owned());
                    (partition, element.error().map(|()| (committed, metadata)))
                })
                .collect::<Vec<_>>(),
        )
    })
    .await;
    let entries = match fetched {
        Ok(Ok(entries)) => entries,
        Ok(Err(error)) => {
            tracing::warn!(%error, ?partitions, "cannot load replay marks yet; retrying at the next poll");
            return HashMap::new();
        }
        Err(error) => {
            tracing::warn!(%error, "the task loading replay marks failed; retrying at the next poll");
            return HashMap::new();
        }
    };
    let mut loaded = HashMap::new();
    for (partition, entry) in entries {
        let (committed, metadata) = match entry {
            Ok(entry) => entry,
            Err(error) => {
                tracing::warn!(%partition, %error, "cannot load replay marks yet; retrying at the next poll");
                continue;
            }
        };
        // Unreadable marks (another version's, or garbage) must not stop the partition: it
        // starts without them, which can let a second copy through but never drops a record.
        let marks = match metadata.and_then(|text| ReplayMarks::from_metadata(&text)) {
            Ok(marks) => marks,
            Err(reason) => {
                tracing::warn!(
                    %partition,
                    %reason,
                    "the group's commit carries replay marks this consumer cannot read; starting \
                     without them, so a second copy of a record replayed before the commit may pass"
                );
                ReplayMarks::default()
            }
        };
        loaded.insert(partition, PartitionFilter::loaded(committed, marks));
    }
    loaded
}

/// Seeks each partition back to its offset; says for each whether the seek went through.
async fn seek_back(
    consumer: &Arc<StreamConsumer<GroupContext>>,
    topic: &str,
    seeks: &[(Partition, Offset)],
) -> Vec<(Partition, bool)> {
    if seeks.is_empty() {
        return Vec::new();
    }
    let mut list = TopicPartitionList::new();
    for (partition, to) in seeks {
        if let Err(error) =
            list.add_partition_offset(topic, partition.0 as i32, KafkaOffset::Offset(to.0 as i64))
        {
            tracing::warn!(%partition, %error, "cannot seek the partition back; retrying at the next poll");
        }
    }
    let consumer = consumer.clone();
    let owned_topic = topic.to_owned();
    let sought = tokio::task::spawn_blocking(move || {
        consumer
            .seek_partitions(list, REPLAY_CALL_TIMEOUT)
            .map(|list| {
                list.elements_for_topic(&owned_topic)
                    .iter()
                    .filter(|element| element.error().is_ok())
                    .map(|element| Partition(element.partition().max(0) as u32))
                    .collect::<BTreeSet<_>>()
            })
    })
    .await;
    let went_through = match sought {
        Ok(Ok(went_through)) => went_through,
        Ok(Err(error)) => {
            tracing::warn!(%error, "seeking partitions back failed; retrying at the next poll");
            BTreeSet::new()
        }
        Err(error) => {
            tracing::warn!(%error, "the seek task failed; retrying at the next poll");
            BTreeSet::new()
        }
    };
    seeks
        .iter()
        .map(|(partition, _)| (*partition, went_through.contains(partition)))
        .collect()
}
