//! The append side of one partition: recovery, catch-up with other writer processes, group
//! commit, segment roll and retention. Everything here is blocking I/O; the producer runs it on
//! Tokio's blocking pool, one batch at a time per partition.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::group::{create_dir_durable, min_committed_all_groups};
use super::metrics::FileQueueMetrics;
use super::segment::{self, Frame, Scanner, Stop};
use super::{Durability, FileQueueConfig, partition_dir};

/// How often retention runs at most, besides after every roll.
const RETENTION_INTERVAL: Duration = Duration::from_secs(10);

pub struct PartitionLog {
    partition: u32,
    root: PathBuf,
    dir: PathBuf,
    durability: Durability,
    segment_bytes: u64,
    retention: super::Retention,
    metrics: FileQueueMetrics,
    writer_lock: File,
    active: File,
    active_base: u64,
    /// Bytes of valid frames in the active segment, as of our last look under the lock.
    end_pos: u64,
    next_offset: u64,
    /// Set when a failed write may have left the file in an unknown state: recover fully
    /// before the next append.
    needs_recovery: bool,
    last_retention: Instant,
}

/// Holds the partition's cross-process writer lock for its lifetime.
struct WriterLockGuard<'a>(&'a File);

impl<'a> WriterLockGuard<'a> {
    fn acquire(file: &'a File) -> io::Result<Self> {
        file.lock()?;
        Ok(Self(file))
    }
}

impl Drop for WriterLockGuard<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

impl PartitionLog {
    /// Opens a partition for appending, creating it if needed and recovering its tail.
    pub fn open(
        config: &FileQueueConfig,
        partition: u32,
        metrics: FileQueueMetrics,
    ) -> io::Result<Self> {
        let dir = partition_dir(&config.root, partition);
        create_dir_durable(&dir)?;
        let writer_lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("writer.lock"))?;
        let (active, active_base, end_pos, next_offset) = {
            let _guard = WriterLockGuard::acquire(&writer_lock)?;
            recover(&dir, &metrics)?
        };
        Ok(Self {
            partition,
            root: config.root.clone(),
            dir,
            durability: config.durability,
            segment_bytes: config.segment_bytes,
            retention: config.retention.clone(),
            metrics,
            writer_lock,
            active,
            active_base,
            end_pos,
            next_offset,
            needs_recovery: false,
            last_retention: Instant::now(),
        })
    }

    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// The offset the next append gets.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// Appends `records` as one write (and, unless durability is `none`, one `fdatasync`).
    /// Returns the offset of the first; the rest follow consecutively. On error nothing was
    /// acknowledged and the partial write, if any, has been removed or will be on recovery.
    pub fn append_batch(&mut self, records: &[&[u8]]) -> io::Result<u64> {
        let lock = self.writer_lock.try_clone()?;
        let _guard = WriterLockGuard::acquire(&lock)?;
        if self.needs_recovery {
            self.recover()?;
        }
        self.catch_up()?;
        let mut rolled = false;
        if self.end_pos >= self.segment_bytes {
            self.roll()?;
            rolled = true;
        }

        let first = self.next_offset;
        let mut buffer = Vec::with_capacity(
            records
                .iter()
                .map(|r| r.len() + segment::FRAME_HEADER_BYTES)
                .sum(),
        );
        for (i, record) in records.iter().enumerate() {
            segment::put_record(&mut buffer, first + i as u64, record);
        }
        if let Err(error) = self.write_durably(&buffer) {
            self.metrics.write_errors.inc();
            // Cut the partial batch off so no other writer builds on it; if even that fails,
            // the next append recovers from what is on disk.
            if self.active.set_len(self.end_pos).is_err() || self.active.sync_data().is_err() {
                self.needs_recovery = true;
            }
            return Err(error);
        }
        self.end_pos += buffer.len() as u64;
        self.next_offset += records.len() as u64;
        self.metrics.appended_records.inc_by(records.len() as u64);
        self.metrics
            .commit_batch_records
            .observe(records.len() as f64);

        if rolled || self.last_retention.elapsed() >= RETENTION_INTERVAL {
            self.last_retention = Instant::now();
            if let Err(error) = self.apply_retention() {
                tracing::warn!(partition = self.partition, %error, "retention failed; will retry");
            }
        }
        Ok(first)
    }

    fn write_durably(&self, bytes: &[u8]) -> io::Result<()> {
        self.active.write_all_at(bytes, self.end_pos)?;
        if self.durability != Durability::None {
            let started = Instant::now();
            self.active.sync_data()?;
            self.metrics
                .fsync_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        Ok(())
    }

    /// Brings our view up to date with what other processes appended since we last held the
    /// lock: new records, a seal and the segments after it, or a torn tail left by a writer
    /// that died mid-write (cut off here, since we hold the lock).
    fn catch_up(&mut self) -> io::Result<()> {
        let len = self.active.metadata()?.len();
        if len == self.end_pos {
            return Ok(());
        }
        if len < self.end_pos {
            // Someone cut below what we knew to be valid; trust only a fresh recovery.
            return self.recover();
        }
        let mut scanner = Scanner::new(&self.active, self.end_pos, len, self.next_offset)?;
        let stop = loop {
            match scanner.next_frame()? {
                Ok(Frame::Record { .. }) => {}
                Ok(Frame::Seal { .. }) => break None,
                Err(stop) => break Some(stop),
            }
        };
        self.end_pos = scanner.pos;
        self.next_offset = scanner.expected_offset;
        drop(scanner);
        match stop {
            Some(Stop::End) => Ok(()),
            Some(Stop::Incomplete | Stop::Corrupt(_)) => {
                self.metrics.truncated_bytes.inc_by(len - self.end_pos);
                self.active.set_len(self.end_pos)?;
                self.active.sync_data()
            }
            // Another writer rolled: follow it (its next segment may be sealed in turn).
            None => self.recover(),
        }
    }

    fn recover(&mut self) -> io::Result<()> {
        let (active, base, end, next) = recover(&self.dir, &self.metrics)?;
        self.active = active;
        self.active_base = base;
        self.end_pos = end;
        self.next_offset = next;
        self.needs_recovery = false;
        Ok(())
    }

    /// Seals the active segment and starts the next one at the next offset.
    fn roll(&mut self) -> io::Result<()> {
        let mut seal = Vec::new();
        segment::put_seal(&mut seal, self.next_offset);
        self.active.write_all_at(&seal, self.end_pos)?;
        self.active.sync_data()?;
        self.end_pos += seal.len() as u64;
        let opened = open_next_segment(&self.dir, self.next_offset, &self.metrics)?;
        tracing::debug!(
            partition = self.partition,
            base = self.next_offset,
            "rolled segment"
        );
        self.active = opened.file;
        self.active_base = self.next_offset;
        self.end_pos = opened.end;
        self.next_offset = opened.next_offset;
        Ok(())
    }

    /// Deletes sealed segments per the retention policy. Runs under the writer lock, so no
    /// other writer rolls or deletes concurrently; readers tolerate segments vanishing.
    pub fn apply_retention(&mut self) -> io::Result<()> {
        let segments = segment::list_segments(&self.dir)?;
        // (base, end offset, size, modified) of each sealed segment: all but the active one.
        let mut sealed = Vec::new();
        for window in segments.windows(2) {
            let (base, path) = &window[0];
            if *base >= self.active_base {
                break;
            }
            let metadata = match fs::metadata(path) {
                Ok(metadata) => metadata,
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(error) => return Err(error),
            };
            sealed.push((*base, window[1].0, path.clone(), metadata));
        }
        if sealed.is_empty() {
            return Ok(());
        }
        let mut total: u64 = segments
            .iter()
            .filter_map(|(_, path)| fs::metadata(path).ok())
            .map(|m| m.len())
            .sum();
        let consumed_up_to = min_committed_all_groups(&self.root, self.partition)?;
        let now = SystemTime::now();
        let mut deleted_any = false;
        for (base, end, path, metadata) in sealed {
            let consumed = consumed_up_to.is_some_and(|committed| committed >= end);
            let age = metadata
                .modified()
                .ok()
                .and_then(|modified| now.duration_since(modified).ok())
                .unwrap_or_default();
            let over_soft = self
                .retention
                .consumed_bytes
                .is_some_and(|limit| total > limit);
            let over_hard = self
                .retention
                .hard_cap_bytes
                .is_some_and(|limit| total > limit);
            let delete = if consumed {
                age >= self.retention.consumed_age || over_soft || over_hard
            } else {
                over_hard
            };
            if !delete {
                // Segments are deleted oldest first only; a newer one never goes before an older.
                break;
            }
            if !consumed {
                let unread_from = consumed_up_to.unwrap_or(0).max(base);
                let lost = end.saturating_sub(unread_from);
                self.metrics.dropped_unconsumed_records.inc_by(lost);
                tracing::warn!(
                    partition = self.partition,
                    base,
                    end,
                    lost,
                    "hard size cap reached: deleting a segment consumers have not read"
                );
            }
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
            total = total.saturating_sub(metadata.len());
            self.metrics.segments_deleted.inc();
            deleted_any = true;
        }
        if deleted_any {
            segment::sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

/// Finds the end of the log: the last segment, scanned from its start, its torn or corrupt tail
/// cut off and synced; following seals into the segments they point at. Creates the first
/// segment of an empty partition. Must run under the writer lock.
fn recover(dir: &Path, metrics: &FileQueueMetrics) -> io::Result<(File, u64, u64, u64)> {
    let mut base = match segment::list_segments(dir)?.last() {
        Some((base, _)) => *base,
        None => 0,
    };
    loop {
        let opened = open_next_segment(dir, base, metrics)?;
        match opened.sealed {
            Some(next_base) => base = next_base,
            None => return Ok((opened.file, base, opened.end, opened.next_offset)),
        }
    }
}

struct OpenedSegment {
    file: File,
    /// End of the valid frames, a seal included.
    end: u64,
    next_offset: u64,
    /// Where the log continues, if the segment ends in a seal.
    sealed: Option<u64>,
}

/// Opens (creating if needed) the segment based at `base` and scans it whole, cutting off (and
/// syncing away) a torn or corrupt tail.
fn open_next_segment(
    dir: &Path,
    base: u64,
    metrics: &FileQueueMetrics,
) -> io::Result<OpenedSegment> {
    let path = segment::segment_path(dir, base);
    let existed = path.exists();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)?;
    if !existed {
        segment::sync_dir(dir)?;
    }
    let len = file.metadata()?.len();
    let mut scanner = Scanner::new(&file, 0, len, base)?;
    let mut sealed = None;
    let stop = loop {
        match scanner.next_frame()? {
            Ok(Frame::Record { .. }) => {}
            Ok(Frame::Seal { next_offset }) => {
                sealed = Some(next_offset);
                // Nothing after a seal belongs to the log.
                break if scanner.pos == len {
                    Stop::End
                } else {
                    Stop::Corrupt("data after the seal".into())
                };
            }
            Err(stop) => break stop,
        }
    };
    let end = scanner.pos;
    let next_offset = scanner.expected_offset;
    drop(scanner);
    if stop != Stop::End {
        tracing::warn!(
            segment = %path.display(),
            valid_bytes = end,
            cut_bytes = len - end,
            reason = ?stop,
            "recovering a torn or corrupt segment tail"
        );
        metrics.truncated_bytes.inc_by(len - end);
        file.set_len(end)?;
        file.sync_data()?;
    }
    Ok(OpenedSegment {
        file,
        end,
        next_offset,
        sealed,
    })
}
