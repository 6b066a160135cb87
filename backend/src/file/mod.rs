//! The durable file queue: a small log-structured queue in the spirit of Kafka's log.
//!
//! ```text
//! <root>/queue.json                           partition count (grows, never shrinks)
//! <root>/partitions/<p>/<base offset>.log     segments of framed, CRC32C-checked records
//! <root>/partitions/<p>/writer.lock           held (flock) by whichever process appends
//! <root>/groups/<group>/members/<id>.lock     held by each live consumer of the group
//! <root>/groups/<group>/owners/<p>.lock       held by the one consumer reading partition p
//! <root>/groups/<group>/offsets/<p>           the group's committed next offset (atomic file)
//! ```
//!
//! Appends go through one writer task per partition which gathers every request waiting for
//! it into a single write and a single `fdatasync` (group commit); a request is acknowledged
//! only after the sync that covers it. Several processes may append to one directory: each
//! batch is written under the partition's writer lock, after catching up with whatever the
//! other processes wrote. Readers sync a segment before trusting what they read from it, so a
//! record is never consumed before it is durable, whichever process wrote it.

mod consumer;
mod group;
mod lag;
mod metrics;
mod partition_log;
mod producer;
mod segment;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

pub use consumer::FileConsumer;
pub use lag::{
    GroupPartitionLabel, PartitionLagReading, QUEUE_LAG_REFRESH, QueueLagMetrics, QueueLagReader,
    refresh_queue_lag,
};
pub use metrics::{FileQueueMetrics, PartitionLabel};
pub use producer::{FileProducer, PendingAppend};

/// When an append is acknowledged relative to `fdatasync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every append gets its own write and `fdatasync`; nothing is shared. Slowest.
    Always,
    /// Group commit: every append waiting for a partition shares one write and one `fdatasync`,
    /// and each is acknowledged after that sync. Durable and fast.
    #[default]
    Batch,
    /// No `fdatasync`: acknowledged once in the OS page cache. Survives a process crash, not a
    /// machine crash.
    None,
}

impl FromStr for Durability {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(Self::Always),
            "batch" => Ok(Self::Batch),
            "none" => Ok(Self::None),
            other => Err(format!(
                "unknown durability {other:?}: expected always, batch or none"
            )),
        }
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Always => "always",
            Self::Batch => "batch",
            Self::None => "none",
        })
    }
}

/// When sealed segments are deleted.
#[derive(Clone, Debug)]
pub struct Retention {
    /// Segments every consumer group has read past are deleted once older than this.
    pub consumed_age: Duration,
    /// Segments every group has read past are deleted sooner while the partition is larger than
    /// this many bytes.
    pub consumed_bytes: Option<u64>,
    /// The hard cap: while a partition is larger than this, its oldest segments are deleted even
    /// if a group has not read them, and the records lost are counted in
    /// `metricstream_queue_dropped_unconsumed_records_total`. `None`: never drop unread data
    /// (a full disk then answers appends with an error instead).
    pub hard_cap_bytes: Option<u64>,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            consumed_age: Duration::from_secs(3600),
            consumed_bytes: None,
            hard_cap_bytes: None,
        }
    }
}

/// Settings of the producer side.
#[derive(Clone, Debug)]
pub struct FileQueueConfig {
    pub root: PathBuf,
    pub partitions: u32,
    pub durability: Durability,
    /// A segment is sealed and a new one started once it reaches this size.
    pub segment_bytes: u64,
    /// The largest single record accepted.
    pub max_record_bytes: usize,
    /// The most bytes one group commit writes.
    pub max_batch_bytes: usize,
    /// Appends that may wait per partition before further ones are refused as saturated.
    pub queue_depth: usize,
    pub retention: Retention,
}

impl FileQueueConfig {
    pub fn new(root: impl Into<PathBuf>, partitions: u32) -> Self {
        Self {
            root: root.into(),
            partitions,
            durability: Durability::Batch,
            segment_bytes: 64 * 1024 * 1024,
            max_record_bytes: segment::MAX_RECORD_BYTES,
            max_batch_bytes: 4 * 1024 * 1024,
            queue_depth: 4096,
            retention: Retention::default(),
        }
    }
}

/// Errors opening or recovering the queue.
#[derive(Debug, thiserror::Error)]
pub enum FileQueueError {
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{root} holds {existing} partitions; the partition count cannot shrink to {requested}")]
    Shrink {
        root: PathBuf,
        existing: u32,
        requested: u32,
    },
    #[error("{path} is malformed: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("invalid setting: {0}")]
    Config(String),
}

pub(crate) fn io_error(
    context: impl Into<String>,
) -> impl FnOnce(std::io::Error) -> FileQueueError {
    let context = context.into();
    move |source| FileQueueError::Io { context, source }
}

pub(crate) fn partition_dir(root: &Path, partition: u32) -> PathBuf {
    root.join("partitions").join(format!("{partition:04}"))
}

/// The directory of consumer group `group` in the queue at `root`.
pub(crate) fn group_dir(root: &Path, group: &str) -> PathBuf {
    group::groups_dir(root).join(group)
}

/// A group's committed next offset of `partition` (0 when it never committed).
pub(crate) fn read_committed_offset(group_dir: &Path, partition: u32) -> std::io::Result<u64> {
    group::read_committed(group_dir, partition)
}

/// The bytes `partition`'s segments take on disk.
pub(crate) fn partition_bytes(root: &Path, partition: u32) -> std::io::Result<u64> {
    let mut total = 0;
    for (_, path) in segment::list_segments(&partition_dir(root, partition))? {
        match std::fs::metadata(&path) {
            Ok(metadata) => total += metadata.len(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
    }
    Ok(total)
}
