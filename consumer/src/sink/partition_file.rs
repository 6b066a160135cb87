//! One assigned partition's file: formatting a batch's metrics as JSON lines, appending them in
//! chunks, syncing, and cutting the file back to its last durable point after a failed write.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use metricstream_backend::MetricKind;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use super::{Position, SinkError, SinkRecord, WriteStats, io_error};

/// A partition's formatted lines are appended once they reach this size, not held to the end
/// of the batch.
pub(super) const APPEND_CHUNK_BYTES: usize = 1024 * 1024;

/// One output line. Borrowed from the batch so that formatting copies nothing but the bytes.
#[derive(Serialize)]
struct Line<'a> {
    client: &'a str,
    name: &'a str,
    /// serde_json writes a non-finite value as `null`; ingest rejects them, so none should come.
    value: f64,
    timestamp: Option<i64>,
    tags: Tags<'a>,
    /// The series' kind when its protocol said one (`gauge`, `counter`, `histogram`,
    /// `summary`, `delta_sum`, `delta_histogram`); absent for MetricStream's own JSON, so those
    /// lines are what they always were.
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    partition: u32,
    offset: u64,
    index: u64,
}

/// A metric's tags as a JSON object, in the order the record holds them (sorted by key).
struct Tags<'a>(&'a [(&'a str, &'a str)]);

impl Serialize for Tags<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// The state of one assigned partition's file.
pub(super) struct PartitionFile {
    pub(super) path: PathBuf,
    pub(super) file: File,
    /// Bytes in the file, as written by this sink.
    pub(super) len: u64,
    /// The position of the last line in the file.
    pub(super) watermark: Option<Position>,
    /// The length and watermark as of the last successful `fdatasync` (or load).
    pub(super) durable_len: u64,
    pub(super) durable_watermark: Option<Position>,
    /// A write or sync failed after the last durable point, so the file may end in a partial
    /// line or in lines whose durability is unknown (after a failed fsync the kernel may have
    /// dropped the dirty pages yet report the next fsync clean). Cut back to the durable point
    /// before writing again.
    pub(super) needs_rollback: bool,
}

impl PartitionFile {
    fn roll_back_if_needed(&mut self) -> Result<(), SinkError> {
        if !self.needs_rollback {
            return Ok(());
        }
        self.file
            .set_len(self.durable_len)
            .map_err(io_error(format!(
                "truncating {} back to its last durable length {}",
                self.path.display(),
                self.durable_len
            )))?;
        tracing::warn!(
            path = %self.path.display(),
            len = self.durable_len,
            "rolled the sink file back to its last durable length after a failed write"
        );
        self.len = self.durable_len;
        self.watermark = self.durable_watermark;
        self.needs_rollback = false;
        Ok(())
    }

    /// Readies the file for a batch: cuts it back to its durable point if an earlier batch
    /// failed, and returns the position of its last line, after which writing resumes.
    fn begin_batch(&mut self) -> Result<Option<Position>, SinkError> {
        self.roll_back_if_needed()?;
        Ok(self.watermark)
    }

    /// Appends `bytes`, whole lines ending at `watermark`. They are durable only after [`sync`].
    ///
    /// [`sync`]: Self::sync
    fn append(&mut self, bytes: &[u8], watermark: Position) -> Result<(), SinkError> {
        // From here until the sync succeeds the file's tail is in doubt.
        self.needs_rollback = true;
        self.file
            .write_all_at(bytes, self.len)
            .map_err(io_error(format!("writing {}", self.path.display())))?;
        start_writeback(&self.file, self.len, bytes.len());
        self.len += bytes.len() as u64;
        self.watermark = Some(watermark);
        Ok(())
    }

    /// Makes everything appended durable.
    fn sync(&mut self) -> Result<(), SinkError> {
        self.file
            .sync_data()
            .map_err(io_error(format!("syncing {}", self.path.display())))?;
        self.durable_len = self.len;
        self.durable_watermark = self.watermark;
        self.needs_rollback = false;
        Ok(())
    }
}

impl PartitionFile {
    /// Writes every metric of `records` (all of this partition, in offset order) that the
    /// file does not hold yet, and makes it durable.
    pub(super) fn write_records(
        &mut self,
        records: &[&SinkRecord],
    ) -> Result<WriteStats, SinkError> {
        let mut stats = WriteStats::default();
        let mut lines = PendingLines {
            buffer: Vec::new(),
            last: self.begin_batch()?,
            appended: false,
        };
        for record in records {
            let batch = record.decode()?;
            for (index, metric) in batch.metrics().enumerate() {
                let position = Position {
                    offset: record.offset,
                    index: index as u64,
                };
                if lines.last.is_some_and(|last| position <= last) {
                    stats.skipped += 1;
                    continue;
                }
                let line = Line {
                    client: batch.client,
                    name: metric.name,
                    value: metric.value,
                    timestamp: metric.timestamp,
                    tags: Tags(metric.tags),
                    kind: (metric.kind != MetricKind::Untyped).then(|| metric.kind.as_str()),
                    partition: record.partition.0,
                    offset: record.offset.0,
                    index: position.index,
                };
                serde_json::to_writer(&mut lines.buffer, &line)?;
                lines.buffer.push(b'\n');
                lines.last = Some(position);
                stats.written += 1;
            }
            // Appending as the batch goes keeps its memory at a chunk rather than its whole
            // output, and lets the disk start on it early.
            if lines.buffer.len() >= APPEND_CHUNK_BYTES {
                self.flush(&mut lines)?;
            }
        }
        self.flush(&mut lines)?;
        if lines.appended {
            self.sync()?;
        }
        Ok(stats)
    }

    /// Appends the buffered lines, if any.
    fn flush(&mut self, lines: &mut PendingLines) -> Result<(), SinkError> {
        if let (false, Some(last)) = (lines.buffer.is_empty(), lines.last) {
            self.append(&lines.buffer, last)?;
            lines.buffer.clear();
            lines.appended = true;
        }
        Ok(())
    }
}

/// Asks the kernel to start writing `len` bytes at `offset` to disk now, without waiting, so the
/// batch's closing `fdatasync` finds most of it on disk already and the disk works while the
/// next lines are formatted. Only a hint: the `fdatasync` still decides durability and reports
/// any error, so a failure here is ignored.
fn start_writeback(file: &File, offset: u64, len: usize) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return;
        };
        // SAFETY: sync_file_range only reads the descriptor, which `file` keeps open.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// Lines formatted for one partition and not yet appended to its file.
struct PendingLines {
    buffer: Vec<u8>,
    /// The position of the last line written or buffered in this batch, or the file's
    /// watermark before any: everything at or below it is skipped.
    last: Option<Position>,
    appended: bool,
}
