//! The file queue's [`QueueConsumer`]: a consumer-group member that owns a fair share of the
//! partitions (exclusive file locks), reads them from the group's committed offsets, and commits
//! atomically. A member that dies loses its locks with its process; the others take its
//! partitions over at their next rebalance.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use super::group::{Membership, try_lock};
use super::metrics::{FileQueueMetrics, PartitionLabel};
use super::producer::stored_partitions;
use super::segment::{self, Frame, Scanner, Stop};
use super::{FileQueueError, io_error, partition_dir};
use crate::model::{Offset, Partition};
use crate::queue::{ConsumeError, ConsumedRecord, Poll, PollLimits, QueueConsumer};

/// How often ownership is re-balanced against the live members.
const REBALANCE_INTERVAL: Duration = Duration::from_millis(500);
/// How long an idle poll sleeps between looks at the segments.
const IDLE_SLEEP: Duration = Duration::from_millis(10);

pub struct FileConsumer {
    inner: Option<Inner>,
}

struct Inner {
    root: PathBuf,
    min_partitions: u32,
    membership: Membership,
    owned: BTreeMap<u32, PartitionReader>,
    last_rebalance: Option<Instant>,
    metrics: FileQueueMetrics,
}

/// The read position of one owned partition.
struct PartitionReader {
    partition: u32,
    dir: PathBuf,
    _owner_lock: File,
    segment_base: u64,
    file: File,
    /// Byte position of the next frame in `file`.
    pos: u64,
    /// Offset of the next record to return.
    next_offset: u64,
    /// Length of `file` covered by our last `fdatasync`: only bytes below it are read.
    synced_len: u64,
    committed: u64,
}

impl FileConsumer {
    /// Joins consumer group `group` on the queue at `root`. Partitions are taken (file locks)
    /// inside `poll`, a fair share of them per live member, and taken over when a holder dies.
    /// `partitions` is a floor: the consumer reads every partition the queue has.
    pub async fn open(
        root: impl Into<PathBuf>,
        partitions: u32,
        group: &str,
        metrics: FileQueueMetrics,
    ) -> Result<Self, FileQueueError> {
        let root = root.into();
        if group.is_empty()
            || group.len() > 200
            || !group
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            || group.starts_with('.')
        {
            return Err(FileQueueError::Config(format!(
                "group name {group:?} must be 1-200 characters of letters, digits, '-', '_' or '.', not starting with '.'"
            )));
        }
        let group = group.to_owned();
        let inner = tokio::task::spawn_blocking(move || -> Result<Inner, FileQueueError> {
            let membership = Membership::join(&root, &group).map_err(io_error(format!(
                "joining group {group} in {}",
                root.display()
            )))?;
            Ok(Inner {
                root,
                min_partitions: partitions,
                membership,
                owned: BTreeMap::new(),
                last_rebalance: None,
                metrics,
            })
        })
        .await
        .map_err(|error| {
            FileQueueError::Config(format!("joining the group panicked: {error}"))
        })??;
        Ok(Self { inner: Some(inner) })
    }

    async fn with_inner<T: Send + 'static>(
        &mut self,
        work: impl FnOnce(&mut Inner) -> Result<T, ConsumeError> + Send + 'static,
    ) -> Result<T, ConsumeError> {
        let Some(mut inner) = self.inner.take() else {
            return Err(ConsumeError::Other("the consumer is closed".into()));
        };
        let (inner, result) = tokio::task::spawn_blocking(move || {
            let result = work(&mut inner);
            (inner, result)
        })
        .await
        .map_err(|error| ConsumeError::Other(format!("consumer task panicked: {error}")))?;
        self.inner = Some(inner);
        result
    }
}

impl Inner {
    fn partition_count(&self) -> Result<u32, ConsumeError> {
        let stored = stored_partitions(&self.root)
            .map_err(|error| ConsumeError::Unavailable(error.to_string()))?;
        Ok(stored.unwrap_or(0).max(self.min_partitions))
    }

    /// Keeps this member's share of partitions at `ceil(partitions / live members)`: releases
    /// extras (everything returned before was committed, per the poll contract) and takes free
    /// ones, including those whose holder died.
    fn rebalance(&mut self, poll: &mut Poll) -> Result<(), ConsumeError> {
        let partitions = self.partition_count()?;
        let members = self.membership.live_members()? as u32;
        let share = partitions.div_ceil(members.max(1)) as usize;
        while self.owned.len() > share {
            let Some((partition, reader)) = self.owned.pop_last() else {
                break;
            };
            drop(reader);
            self.metrics
                .consumer_lag
                .remove(&PartitionLabel::new(partition));
            tracing::info!(partition, "released partition to rebalance");
            poll.revoked.push(Partition(partition));
        }
        for partition in 0..partitions {
            if self.owned.len() >= share {
                break;
            }
            if self.owned.contains_key(&partition) {
                continue;
            }
            let Some(lock) = try_lock(&self.membership.owner_lock_path(partition))? else {
                continue;
            };
            let dir = partition_dir(&self.root, partition);
            if !dir.is_dir() || segment::list_segments(&dir)?.is_empty() {
                // Recorded by a grown producer but not created yet; take it once it exists.
                continue;
            }
            let committed = self.membership.read_committed(partition)?;
            let reader =
                PartitionReader::open(&self.root, partition, lock, committed, &self.metrics)?;
            tracing::info!(partition, committed, "took partition");
            self.owned.insert(partition, reader);
            poll.assigned.push(Partition(partition));
        }
        self.metrics.owned_partitions.set(self.owned.len() as i64);
        Ok(())
    }

    fn poll(&mut self, limits: PollLimits, max_wait: Duration) -> Result<Poll, ConsumeError> {
        let max_records = limits.max_records.max(1);
        let started = Instant::now();
        let mut poll = Poll::default();
        loop {
            if self
                .last_rebalance
                .is_none_or(|at| at.elapsed() >= REBALANCE_INTERVAL)
            {
                self.rebalance(&mut poll)?;
                self.last_rebalance = Some(Instant::now());
            }
            let mut budget_bytes = limits.max_bytes.max(1);
            for reader in self.owned.values_mut() {
                if poll.records.len() >= max_records || budget_bytes == 0 {
                    break;
                }
                let before = poll.records.len();
                reader.read(&mut poll.records, max_records, &mut budget_bytes)?;
                self.metrics
                    .read_records
                    .inc_by((poll.records.len() - before) as u64);
            }
            let changed = !poll.assigned.is_empty() || !poll.revoked.is_empty();
            if !poll.records.is_empty() || changed || started.elapsed() >= max_wait {
                return Ok(poll);
            }
            std::thread::sleep(IDLE_SLEEP.min(max_wait.saturating_sub(started.elapsed())));
        }
    }

    fn commit(&mut self, positions: &[(Partition, Offset)]) -> Result<(), ConsumeError> {
        for (partition, next) in positions {
            let Some(reader) = self.owned.get_mut(&partition.0) else {
                return Err(ConsumeError::OwnershipLost(format!(
                    "cannot commit partition {partition}: this member does not own it"
                )));
            };
            if next.0 <= reader.committed {
                continue;
            }
            self.membership.write_committed(partition.0, next.0)?;
            reader.committed = next.0;
        }
        Ok(())
    }
}

impl PartitionReader {
    /// Positions a reader at `committed`: in the newest segment based at or below it, skipping
    /// earlier records. If retention's hard cap deleted that data, starts at the oldest left.
    fn open(
        root: &Path,
        partition: u32,
        owner_lock: File,
        committed: u64,
        metrics: &FileQueueMetrics,
    ) -> Result<Self, ConsumeError> {
        let dir = partition_dir(root, partition);
        loop {
            let segments = segment::list_segments(&dir)?;
            let Some((base, path)) = segments
                .iter()
                .rev()
                .find(|(base, _)| *base <= committed)
                .or_else(|| segments.first())
                .cloned()
            else {
                return Err(ConsumeError::Unavailable(format!(
                    "partition {partition} has no segment yet"
                )));
            };
            if base > committed {
                tracing::warn!(
                    partition,
                    committed,
                    oldest = base,
                    "records the group had not read were deleted by the hard size cap"
                );
            }
            let file = match open_read(&path) {
                Ok(file) => file,
                // Deleted by retention between listing and opening: list again.
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(error) => return Err(error.into()),
            };
            let mut reader = Self {
                partition,
                dir: dir.clone(),
                _owner_lock: owner_lock,
                segment_base: base,
                file,
                pos: 0,
                next_offset: base,
                synced_len: 0,
                committed,
            };
            reader.skip_to(committed, metrics)?;
            return Ok(reader);
        }
    }

    /// Advances past records below `target` without returning them.
    fn skip_to(&mut self, target: u64, _metrics: &FileQueueMetrics) -> Result<(), ConsumeError> {
        let mut sink = Vec::new();
        while self.next_offset < target {
            sink.clear();
            let mut budget = usize::MAX;
            let want = (target - self.next_offset).min(4096) as usize;
            let before = self.next_offset;
            self.read(&mut sink, want, &mut budget)?;
            if self.next_offset == before {
                // The committed offset is beyond what is durable right now; it can only get
                // here if data was lost under us. Read on from where the data ends.
                break;
            }
        }
        Ok(())
    }

    /// Appends up to `max_records` (in total in `out`) durable records to `out`.
    fn read(
        &mut self,
        out: &mut Vec<ConsumedRecord>,
        max_records: usize,
        budget_bytes: &mut usize,
    ) -> Result<(), ConsumeError> {
        loop {
            let len = self.file.metadata()?.len();
            if len != self.synced_len {
                // Whoever wrote these bytes may not have synced them yet (durability `none`, or
                // a batch mid-commit). Syncing here means we never hand out a record a machine
                // crash could take back — and whose offset would then be reused. A file that
                // shrank had a torn tail cut off by a recovering writer (only bytes past the
                // last valid frame, which we never returned): what follows is new, and read
                // only up to where the file now ends.
                self.file.sync_data()?;
                self.synced_len = len;
            }
            let mut scanner =
                Scanner::new(&self.file, self.pos, self.synced_len, self.next_offset)?;
            let stop = loop {
                if out.len() >= max_records || *budget_bytes == 0 {
                    break None;
                }
                match scanner.next_frame()? {
                    Ok(Frame::Record { offset, payload }) => {
                        *budget_bytes = budget_bytes.saturating_sub(payload.len());
                        out.push(ConsumedRecord {
                            partition: Partition(self.partition),
                            offset: Offset(offset),
                            payload: Bytes::from(payload),
                        });
                    }
                    Ok(Frame::Seal { next_offset }) => break Some(Ok(next_offset)),
                    Err(stop) => break Some(Err(stop)),
                }
            };
            self.pos = scanner.pos;
            self.next_offset = scanner.expected_offset;
            match stop {
                None | Some(Err(Stop::End)) | Some(Err(Stop::Incomplete)) => return Ok(()),
                Some(Err(Stop::Corrupt(reason))) => {
                    // At the tail of the newest segment this is a torn write of a writer that
                    // died; the next writer cuts it off and writes valid frames here. Only in a
                    // sealed segment is it real damage, which we refuse to skip silently.
                    let newest = segment::list_segments(&self.dir)?
                        .last()
                        .map(|(base, _)| *base)
                        .unwrap_or(self.segment_base);
                    if newest > self.segment_base {
                        return Err(ConsumeError::Corrupt {
                            partition: Partition(self.partition),
                            offset: Offset(self.next_offset),
                            reason: format!(
                                "segment {} byte {}: {reason}",
                                self.segment_base, self.pos
                            ),
                        });
                    }
                    return Ok(());
                }
                Some(Ok(next_base)) => {
                    let path = segment::segment_path(&self.dir, next_base);
                    match open_read(&path) {
                        Ok(file) => {
                            self.file = file;
                            self.segment_base = next_base;
                            self.pos = 0;
                            self.synced_len = 0;
                            self.next_offset = next_base;
                        }
                        // The roller has sealed but not yet created the next segment.
                        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
                        Err(error) => return Err(error.into()),
                    }
                }
            }
        }
    }

    /// Records in the partition the group has not committed, as far as this reader has seen.
    fn lag(&self) -> u64 {
        self.next_offset.saturating_sub(self.committed)
    }
}

fn open_read(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).open(path)
}

#[async_trait]
impl QueueConsumer for FileConsumer {
    async fn poll(&mut self, limits: PollLimits, max_wait: Duration) -> Result<Poll, ConsumeError> {
        self.with_inner(move |inner| inner.poll(limits, max_wait))
            .await
    }

    async fn commit(&mut self, positions: &[(Partition, Offset)]) -> Result<(), ConsumeError> {
        let positions = positions.to_vec();
        self.with_inner(move |inner| inner.commit(&positions)).await
    }

    fn assignment(&self) -> Vec<Partition> {
        self.inner
            .as_ref()
            .map(|inner| inner.owned.keys().map(|p| Partition(*p)).collect())
            .unwrap_or_default()
    }

    fn lag(&self) -> Vec<(Partition, u64)> {
        self.inner
            .as_ref()
            .map(|inner| {
                inner
                    .owned
                    .values()
                    .map(|reader| (Partition(reader.partition), reader.lag()))
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn close(&mut self) {
        if let Some(inner) = self.inner.take() {
            let Inner {
                owned,
                membership,
                metrics,
                ..
            } = inner;
            for partition in owned.keys() {
                metrics
                    .consumer_lag
                    .remove(&PartitionLabel::new(*partition));
            }
            metrics.owned_partitions.set(0);
            drop(owned);
            membership.leave();
        }
    }
}
