//! The lag of every partition of a file queue, read from disk: what the operator's autoscaler
//! reads off any one consumer pod's `/metrics`.
//!
//! A consumer's own `consumer_lag_records` covers only the partitions it owns, and vanishes with
//! it; a partition whose owner died would read as having no lag at all. Every consumer pod has
//! the whole queue directory mounted, so each one measures every partition here instead:
//!
//! - the end offset (the offset the producer writes next): the newest segment is scanned
//!   incrementally from where the previous refresh stopped, frame by frame with the checksums,
//!   so each appended byte is read once per process (from the page cache the producer just
//!   wrote) and the position stays on a frame boundary a recovering writer never cuts;
//! - the log start (the oldest segment's base), since the hard size cap may delete records the
//!   group never read, which its consumer then skips;
//! - the group's committed offset (`groups/<group>/offsets/<p>`).
//!
//! The lag is `end - max(committed, log start)`, 0 for a partition with no segment yet. A
//! partition that cannot be read loses its series instead of keeping a stale figure, so a
//! reader of the metrics sees it missing rather than trusting an old number.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::metrics::PartitionLabel;
use super::producer::stored_partitions;
use super::segment::{self, Scanner};
use super::{FileQueueError, group_dir, partition_dir, read_committed_offset};

/// How often a consumer refreshes the queue's lag gauges: often enough for an autoscaler that
/// decides every 15 s or so, rare enough to cost nothing next to the consume loop.
pub const QUEUE_LAG_REFRESH: Duration = Duration::from_secs(5);

/// One partition as a refresh saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionLagReading {
    pub partition: u32,
    /// The offset the next record appended will get.
    pub end_offset: u64,
    /// The offset of the oldest record still on disk.
    pub log_start: u64,
    /// The group's committed next offset (0 when it never committed).
    pub committed: u64,
    /// Records the group has still to read: `end - max(committed, log start)`.
    pub lag: u64,
}

/// The whole queue's lag for one group, kept incrementally between refreshes. Blocking I/O: run
/// it on a blocking thread.
pub struct QueueLagReader {
    root: PathBuf,
    group: String,
    group_dir: PathBuf,
    min_partitions: u32,
    ends: BTreeMap<u32, EndCursor>,
}

impl QueueLagReader {
    /// Reads the queue at `root` for `group`; `min_partitions` is a floor on the partition count
    /// (as for the consumer: a queue the producer has not created yet still has them).
    pub fn new(root: impl Into<PathBuf>, group: &str, min_partitions: u32) -> Self {
        let root = root.into();
        Self {
            group_dir: group_dir(&root, group),
            root,
            group: group.to_owned(),
            min_partitions,
            ends: BTreeMap::new(),
        }
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    /// The partition count: the queue's recorded count, at least the floor.
    pub fn partitions(&self) -> Result<u32, FileQueueError> {
        Ok(stored_partitions(&self.root)?
            .unwrap_or(0)
            .max(self.min_partitions))
    }

    /// Reads one partition.
    pub fn read_partition(&mut self, partition: u32) -> io::Result<PartitionLagReading> {
        let dir = partition_dir(&self.root, partition);
        let segments = match segment::list_segments(&dir) {
            Ok(segments) => segments,
            // Recorded in queue.json but not created yet by a grown producer: empty.
            Err(error) if error.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(error) => return Err(error),
        };
        let committed = read_committed_offset(&self.group_dir, partition)?;
        let (Some((log_start, _)), Some((newest_base, newest_path))) =
            (segments.first(), segments.last())
        else {
            self.ends.remove(&partition);
            return Ok(PartitionLagReading {
                partition,
                end_offset: 0,
                log_start: 0,
                committed,
                lag: 0,
            });
        };
        let cursor = self
            .ends
            .entry(partition)
            .or_insert_with(|| EndCursor::at(*newest_base));
        if cursor.segment_base != *newest_base {
            // A roll: the new segment's name is its first offset, so the sealed ones in
            // between need no reading.
            *cursor = EndCursor::at(*newest_base);
        }
        cursor.advance(newest_path)?;
        let end_offset = cursor.next_offset;
        Ok(PartitionLagReading {
            partition,
            end_offset,
            log_start: *log_start,
            committed,
            lag: end_offset.saturating_sub(committed.max(*log_start)),
        })
    }

    /// Reads every partition: each one's reading, or why it could not be read.
    pub fn read_all(
        &mut self,
    ) -> Result<Vec<(u32, io::Result<PartitionLagReading>)>, FileQueueError> {
        let partitions = self.partitions()?;
        self.ends.retain(|partition, _| *partition < partitions);
        Ok((0..partitions)
            .map(|partition| (partition, self.read_partition(partition)))
            .collect())
    }
}

/// Where the end of a partition's newest segment was found last time.
#[derive(Debug)]
struct EndCursor {
    segment_base: u64,
    /// Byte position just after the last valid frame.
    pos: u64,
    /// The offset the next frame must carry: the partition's end offset.
    next_offset: u64,
}

impl EndCursor {
    fn at(segment_base: u64) -> Self {
        Self {
            segment_base,
            pos: 0,
            next_offset: segment_base,
        }
    }

    /// Scans the valid frames appended since the last call. It stops at the first incomplete or
    /// invalid frame: a write in progress, or a torn tail the next writer cuts off and writes
    /// over with valid frames at the same position.
    fn advance(&mut self, path: &Path) -> io::Result<()> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        if len < self.pos {
            // Recovery only cuts bytes past the last valid frame, which we never count; a file
            // shorter than our position was replaced under us (say, restored): start over.
            *self = Self::at(self.segment_base);
        }
        let mut scanner = Scanner::new(&file, self.pos, len, self.next_offset)?;
        while let Ok(_frame) = scanner.next_frame()? {}
        self.pos = scanner.pos;
        self.next_offset = scanner.expected_offset;
        Ok(())
    }
}

/// The labels of a group's series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupPartitionLabel {
    pub group: String,
    pub partition: String,
}

/// The queue-wide lag gauges a consumer process exports (file backend only).
#[derive(Clone, Default)]
pub struct QueueLagMetrics {
    /// The offset the next record appended to a partition gets.
    pub end_offset: Family<PartitionLabel, Gauge>,
    /// The group's committed next offset per partition.
    pub group_committed_offset: Family<GroupPartitionLabel, Gauge>,
    /// Records of a partition the group has still to read, whoever owns it.
    pub group_lag: Family<GroupPartitionLabel, Gauge>,
    /// Refreshes, or partitions within one, that could not be read.
    pub refresh_errors: Counter,
}

impl QueueLagMetrics {
    /// Registers every metric under the `metricstream_queue_` prefix, beside the file queue's.
    pub fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("metricstream_queue");
        registry.register(
            "end_offset",
            "The offset the next record appended to the partition gets (every partition)",
            self.end_offset.clone(),
        );
        registry.register(
            "group_committed_offset",
            "The group's committed next offset of the partition (every partition)",
            self.group_committed_offset.clone(),
        );
        registry.register(
            "group_lag_records",
            "Records of the partition the group has not committed, whoever owns it (every partition)",
            self.group_lag.clone(),
        );
        registry.register(
            "lag_refresh_errors",
            "Refreshes of the queue-wide lag, or partitions in one, that could not be read",
            self.refresh_errors.clone(),
        );
    }

    /// Publishes one refresh: a partition that could not be read loses its series.
    pub fn publish(&self, group: &str, readings: &[(u32, io::Result<PartitionLagReading>)]) {
        for (partition, reading) in readings {
            let end_label = PartitionLabel::new(*partition);
            let group_label = GroupPartitionLabel {
                group: group.to_owned(),
                partition: partition.to_string(),
            };
            match reading {
                Ok(reading) => {
                    self.end_offset
                        .get_or_create(&end_label)
                        .set(gauge_value(reading.end_offset));
                    self.group_committed_offset
                        .get_or_create(&group_label)
                        .set(gauge_value(reading.committed));
                    self.group_lag
                        .get_or_create(&group_label)
                        .set(gauge_value(reading.lag));
                }
                Err(error) => {
                    tracing::warn!(partition, %error, "cannot read the partition's lag");
                    self.refresh_errors.inc();
                    self.end_offset.remove(&end_label);
                    self.group_committed_offset.remove(&group_label);
                    self.group_lag.remove(&group_label);
                }
            }
        }
    }
}

impl QueueLagMetrics {
    /// Drops every series: nothing is known, and a stale figure would be trusted.
    fn clear(&self) {
        self.end_offset.clear();
        self.group_committed_offset.clear();
        self.group_lag.clear();
    }
}

fn gauge_value(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Refreshes `metrics` from `reader` every `interval`, on a blocking thread, until the task is
/// dropped or aborted. The first refresh runs at once.
pub async fn refresh_queue_lag(
    mut reader: QueueLagReader,
    metrics: QueueLagMetrics,
    interval: Duration,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let refreshed = tokio::task::spawn_blocking(move || {
            let readings = reader.read_all();
            (reader, readings)
        })
        .await;
        let readings = match refreshed {
            Ok((returned, readings)) => {
                reader = returned;
                readings
            }
            Err(error) => {
                tracing::error!(%error, "the queue lag refresh panicked; it stops");
                metrics.refresh_errors.inc();
                return;
            }
        };
        match readings {
            Ok(readings) => metrics.publish(reader.group(), &readings),
            Err(error) => {
                tracing::warn!(%error, "cannot read the queue's partition count for its lag");
                metrics.refresh_errors.inc();
                metrics.clear();
            }
        }
    }
}

#[cfg(test)]
#[path = "lag_tests.rs"]
mod tests;
