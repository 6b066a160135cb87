//! The traits a queue backend implements. The ingest service holds a [`QueueProducer`]; the
//! consumer service holds a [`QueueConsumer`]. The file queue implements both here; the Kafka
//! backend plugs into the same traits.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::model::{Offset, Partition};

/// Most partitions a queue may have, on either backend. The services' `--partitions` flag and
/// the operator's CRD schema and validation take their bound from here.
pub const MAX_PARTITIONS: u32 = 1024;

/// Longest consumer group name, in bytes: it names a directory in the file queue and a group id
/// in Kafka. The consumer's `--group` flag and the operator's CRD schema and validation take
/// their bound from here.
pub const MAX_GROUP_LEN: usize = 200;

/// Checks a consumer group name: 1..=[`MAX_GROUP_LEN`] letters, digits, `.`, `_` and `-`, and
/// not `.` or `..` (which would name the wrong directory in the file queue). The consumer's
/// `--group` flag and the operator's validation both use this one rule.
pub fn check_group_name(group: &str) -> Result<(), String> {
    if group.is_empty() || group.len() > MAX_GROUP_LEN {
        return Err(format!("must be 1 to {MAX_GROUP_LEN} characters long"));
    }
    if group == "." || group == ".." {
        return Err("must not be '.' or '..'".to_owned());
    }
    if let Some(bad) = group
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{bad:?} is not allowed: use letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// Why an append was not acknowledged. None of these means the record was stored; every one is
/// safe for the client to retry.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The backend is at its in-flight limit: backpressure, answered with `503` + `Retry-After`.
    #[error("the queue is saturated; retry shortly")]
    Saturated,
    /// The backend cannot store data right now (disk full, I/O error, broker unreachable).
    #[error("the queue is unavailable: {0}")]
    Unavailable(String),
    /// The partition does not exist in this queue.
    #[error("partition {partition} does not exist (the queue has {partitions})")]
    NoSuchPartition {
        partition: Partition,
        partitions: u32,
    },
    /// A single record larger than the backend accepts.
    #[error("record of {size} bytes exceeds the queue's limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    /// Kafka cannot take records and the ingest's spill holds as much as it may: answered with
    /// `503` + `Retry-After` until the forwarder makes room.
    #[error(
        "the queue cannot take records ({reason}) and the spill is full: {used} of {limit} bytes wait to be forwarded"
    )]
    SpillFull {
        reason: String,
        used: u64,
        limit: u64,
    },
    /// The producer is shutting down and takes no new records.
    #[error("the queue is shutting down")]
    Closed,
    /// An empty record: the file queue cannot store one (an empty frame is its segment seal),
    /// and no MetricStream record is ever empty.
    #[error("empty records cannot be stored")]
    EmptyRecord,
}

/// The write side of a queue: appends records and acknowledges them once durable.
#[async_trait]
pub trait QueueProducer: Send + Sync + 'static {
    /// The number of partitions records may be appended to.
    fn partitions(&self) -> u32;

    /// Appends one record to `partition`. Returns its offset only once the record is durable
    /// under the backend's durability policy (fsynced, or acknowledged by every in-sync replica).
    async fn append(&self, partition: Partition, record: Bytes) -> Result<Offset, AppendError>;

    /// Like [`append`](Self::append), but says where the record went: a producer with a spill
    /// (see `spill`) may keep it in the spill while the queue is unreachable.
    async fn append_or_spill(
        &self,
        partition: Partition,
        record: Bytes,
    ) -> Result<Appended, AppendError> {
        self.append(partition, record).await.map(Appended::Queue)
    }

    /// `Ok` when the producer can currently accept writes; otherwise why not. Drives `/readyz`.
    fn readiness(&self) -> Result<(), String>;

    /// Stops taking records, finishes everything in flight, and makes it durable.
    async fn close(&self);
}

/// Where an acknowledged record is durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Appended {
    /// In the queue, at this offset of its partition.
    Queue(Offset),
    /// In the ingest's local spill, at this offset of the spill's partition of the same number;
    /// the forwarder appends it to the queue later.
    Spill(Offset),
}

/// A record read back from a partition.
#[derive(Clone, Debug, PartialEq)]
pub struct ConsumedRecord {
    pub partition: Partition,
    pub offset: Offset,
    pub payload: Bytes,
}

/// What one [`QueueConsumer::poll`] returns.
#[derive(Debug, Default)]
pub struct Poll {
    /// Partitions this consumer gained since the last poll. Whatever the caller keeps per
    /// partition (a sink's position, say) must be reloaded for them: another consumer may have
    /// written in the meantime.
    pub assigned: Vec<Partition>,
    /// Partitions this consumer no longer owns. Nothing more will be returned for them.
    pub revoked: Vec<Partition>,
    /// Records in offset order within each partition.
    pub records: Vec<ConsumedRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error("queue I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("partition {partition} is corrupt at offset {offset}: {reason}")]
    Corrupt {
        partition: Partition,
        offset: Offset,
        reason: String,
    },
    #[error("the queue is unavailable: {0}")]
    Unavailable(String),
    /// This member lost (some of) the partitions it was committing for — its group session
    /// expired, or a rebalance moved them. Retrying cannot succeed: poll again. The records are
    /// re-read from the last commit by whoever owns them now, and the sink skips what it holds.
    #[error("partition ownership lost: {0}")]
    OwnershipLost(String),
    #[error("{0}")]
    Other(String),
}

/// How much one [`QueueConsumer::poll`] may return. A poll returns at least one record when any
/// is ready, even one larger than `max_bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollLimits {
    pub max_records: usize,
    /// Payload bytes: what bounds the memory a batch takes, whatever its records hold.
    pub max_bytes: usize,
}

impl PollLimits {
    /// The default payload bound of a poll.
    pub const DEFAULT_MAX_BYTES: usize = 8 * 1024 * 1024;

    /// At most `max_records` records, and [`Self::DEFAULT_MAX_BYTES`] of payload.
    pub fn records(max_records: usize) -> Self {
        Self {
            max_records,
            max_bytes: Self::DEFAULT_MAX_BYTES,
        }
    }
}

/// The read side of a queue for one consumer group member.
///
/// Contract: the caller commits (or gives up on) everything a `poll` returned before it polls
/// again. Ownership changes happen only inside `poll`, so a partition is handed over only after
/// its records were committed.
#[async_trait]
pub trait QueueConsumer: Send + 'static {
    /// Returns the next records of the partitions this member owns, waiting up to `max_wait` for
    /// some to arrive, within `limits`.
    async fn poll(&mut self, limits: PollLimits, max_wait: Duration) -> Result<Poll, ConsumeError>;

    /// Durably records that everything before `next` has been processed for each partition.
    async fn commit(&mut self, positions: &[(Partition, Offset)]) -> Result<(), ConsumeError>;

    /// The partitions this member owns now.
    fn assignment(&self) -> Vec<Partition>;

    /// Records in each owned partition that the group has not committed yet, as last observed.
    fn lag(&self) -> Vec<(Partition, u64)>;

    /// Commits nothing new; releases the partitions this member owns so others can take over.
    async fn close(&mut self);
}
