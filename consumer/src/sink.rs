//! The default sink: JSON Lines files, one per partition, written idempotently.
//!
//! ```text
//! <sink-dir>/partition-0000.jsonl      one JSON object per metric, in (offset, index) order
//! <sink-dir>/quarantine/partition-0000-offset-00000000000000000012.bin
//!                                      the raw payload of a record that failed to decode
//! ```
//!
//! A line looks like
//! `{"client":"a","name":"cpu","value":75.0,"timestamp":1700000000000,"tags":{"host":"a"},"partition":0,"offset":12,"index":0}`
//! where `index` is the metric's position within its record (one record is one ingest request,
//! so several metrics share one `(partition, offset)`).
//!
//! Idempotence: the pipeline is at-least-once (a crash between the sink write and the offset
//! commit re-delivers records), so the sink must turn a replay into a no-op. Each partition file
//! only ever grows in `(offset, index)` order, written by the one consumer that owns the
//! partition, so the `(offset, index)` of its last line — the *watermark* — says exactly what it
//! holds: every incoming metric at or below the watermark is skipped. The watermark is read back
//! from the file whenever a partition is (re)assigned, because another consumer process may have
//! written the file in the meantime.
//!
//! Durability: a batch is appended to each partition file in chunks of about a mebibyte (the
//! kernel is asked to start writing each chunk out at once) and `fdatasync`ed before
//! [`Sink::write_batch`] returns, so offsets committed afterwards never run ahead of the file.
//! A batch that fails part way is cut back to the last durable length before the next write.
//! A newly created file is made durable in its directory by an fsync of the directory.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use metricstream_backend::codec;
use metricstream_backend::{Offset, Partition};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

/// Lines are read back from the end of a file in chunks of this size, so finding the watermark
/// costs the length of the last line or two, however large the file.
const TAIL_CHUNK_BYTES: usize = 64 * 1024;

/// No line we write comes near this: a record is at most 8 MiB and JSON escaping at most
/// multiplies a string by six. A longer "last line" is crash residue, not something to read into
/// memory.
const MAX_LINE_BYTES: u64 = 64 * 1024 * 1024;

const QUARANTINE_DIR: &str = "quarantine";

/// A partition's formatted lines are appended once they reach this size, not held to the end
/// of the batch.
const APPEND_CHUNK_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The cause is part of the message rather than a `source()`: logs and `/readyz` show the
    /// message alone, and an error chain printer would otherwise repeat it.
    #[error("{context}: {cause}")]
    Io { context: String, cause: io::Error },
    /// A complete, well-formed JSON line that this sink could not have written. Refusing to touch
    /// the file is safer than guessing what it holds.
    #[error("{path} holds a line this sink did not write: {reason}")]
    Foreign { path: PathBuf, reason: String },
    #[error("encoding a line failed: {0}")]
    Encode(#[from] serde_json::Error),
    /// A record that does not decode reached the sink: the pipeline quarantines those before
    /// writing, so this is a bug, reported rather than written half.
    #[error("record {offset} of partition {partition} does not decode: {error}")]
    Corrupt {
        partition: Partition,
        offset: Offset,
        error: codec::CodecError,
    },
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> SinkError {
    let context = context.into();
    move |cause| SinkError::Io { context, cause }
}

/// Where a metric sits in its partition's stream: the record's offset and the metric's index
/// within that record. Files are ordered by it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub offset: Offset,
    pub index: u64,
}

/// One queue record for the sink, still encoded: the sink reads it without copying its strings,
/// so a batch in memory costs its encoded size rather than a tree of decoded metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct SinkRecord {
    pub partition: Partition,
    pub offset: Offset,
    /// The record as [`codec::encode`] wrote it; the caller has checked that it decodes.
    pub payload: Bytes,
}

impl SinkRecord {
    #[cfg(test)]
    pub fn encode(
        partition: Partition,
        offset: Offset,
        batch: &metricstream_backend::MetricBatch,
    ) -> Self {
        Self {
            partition,
            offset,
            payload: Bytes::from(codec::encode(batch)),
        }
    }
}

/// What one [`Sink::write_batch`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Metrics newly written (and made durable).
    pub written: u64,
    /// Metrics the sink already held: a re-delivery after a crash or a handover.
    pub skipped: u64,
}

/// Where consumed records end up. Every method may block on I/O: call it off the async runtime.
pub trait Sink: Send + 'static {
    /// Forgets whatever is cached for `partition` and loads its state from storage again: the
    /// partition has just been (re)gained, and another consumer may have written it meanwhile.
    fn assign(&mut self, partition: Partition) -> Result<(), SinkError>;

    /// Releases `partition`; this consumer writes nothing more to it until it is assigned again.
    fn revoke(&mut self, partition: Partition);

    /// Writes every metric of `records` the sink does not hold yet, and makes all of it durable
    /// before returning `Ok`. After an error nothing is known to be durable: the caller retries
    /// the same records (which is safe: what did land is skipped) and must not commit them.
    fn write_batch(&mut self, records: &[SinkRecord]) -> Result<WriteStats, SinkError>;

    /// Stores, durably, the raw payload of a record that could not be decoded, so that a
    /// corruption loses nothing silently. Storing the same record again is harmless.
    fn quarantine(
        &mut self,
        partition: Partition,
        offset: Offset,
        payload: &[u8],
    ) -> Result<PathBuf, SinkError>;
}

/// One output line. Borrowed from the batch so that formatting copies nothing but the bytes.
#[derive(Serialize)]
struct Line<'a> {
    client: &'a str,
    name: &'a str,
    /// serde_json writes a non-finite value as `null`; ingest rejects them, so none should come.
    value: f64,
    timestamp: Option<i64>,
    tags: Tags<'a>,
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

/// The fields of a line that locate it; the rest is ignored when reading the watermark back.
#[derive(Deserialize)]
struct LinePosition {
    partition: u32,
    offset: u64,
    index: u64,
}

/// The state of one assigned partition's file.
struct PartitionFile {
    path: PathBuf,
    file: File,
    /// Bytes in the file, as written by this sink.
    len: u64,
    /// The position of the last line in the file.
    watermark: Option<Position>,
    /// The length and watermark as of the last successful `fdatasync` (or load).
    durable_len: u64,
    durable_watermark: Option<Position>,
    /// A write or sync failed after the last durable point, so the file may end in a partial
    /// line or in lines whose durability is unknown (after a failed fsync the kernel may have
    /// dropped the dirty pages yet report the next fsync clean). Cut back to the durable point
    /// before writing again.
    needs_rollback: bool,
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
    fn write_records(&mut self, records: &[&SinkRecord]) -> Result<WriteStats, SinkError> {
        let mut stats = WriteStats::default();
        let mut lines = PendingLines {
            buffer: Vec::new(),
            last: self.begin_batch()?,
            appended: false,
        };
        for record in records {
            let batch = codec::decode_ref(&record.payload).map_err(|error| SinkError::Corrupt {
                partition: record.partition,
                offset: record.offset,
                error,
            })?;
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

/// The JSON Lines sink. See the module documentation for the format and its guarantees.
pub struct JsonlSink {
    dir: PathBuf,
    partitions: HashMap<Partition, PartitionFile>,
    tail_chunk_bytes: usize,
}

impl JsonlSink {
    /// Opens the sink in `dir`, creating the directory if it is missing. Partition files are
    /// opened on [`Sink::assign`] (or on the first record of a partition).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, SinkError> {
        let dir = dir.into();
        create_dir_durably(&dir)?;
        Ok(Self {
            dir,
            partitions: HashMap::new(),
            tail_chunk_bytes: TAIL_CHUNK_BYTES,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file a partition's metrics go to.
    pub fn partition_path(&self, partition: Partition) -> PathBuf {
        self.dir.join(format!("partition-{:04}.jsonl", partition.0))
    }

    /// The last position the sink holds for `partition`, if it is loaded.
    #[cfg(test)]
    fn watermark(&self, partition: Partition) -> Option<Position> {
        self.partitions
            .get(&partition)
            .and_then(|state| state.watermark)
    }

    fn load(&self, partition: Partition) -> Result<PartitionFile, SinkError> {
        let path = self.partition_path(partition);
        let (file, created) = open_or_create(&path)?;
        let recovered = recover_tail(&file, &path, partition, self.tail_chunk_bytes)?;
        if recovered.truncated_bytes > 0 {
            tracing::warn!(
                path = %path.display(),
                bytes = recovered.truncated_bytes,
                "cut a torn tail off the sink file: it was never synced, so never committed, \
                 and its records will be re-delivered"
            );
        }
        // What the previous writer left may still sit only in the page cache (it crashed before
        // its fsync). The watermark is about to vouch for those lines and let their records be
        // committed, so they must be on disk first.
        file.sync_data()
            .map_err(io_error(format!("syncing {}", path.display())))?;
        // A file created by a writer that crashed before syncing the directory might vanish in
        // a machine crash along with everything committed against it; syncing the directory on
        // every load (rare) closes that gap too.
        if created {
            tracing::info!(path = %path.display(), "created a sink file");
        }
        sync_dir(&self.dir)?;
        Ok(PartitionFile {
            path,
            file,
            len: recovered.len,
            watermark: recovered.watermark,
            durable_len: recovered.len,
            durable_watermark: recovered.watermark,
            needs_rollback: false,
        })
    }

    fn loaded(&mut self, partition: Partition) -> Result<&mut PartitionFile, SinkError> {
        if !self.partitions.contains_key(&partition) {
            // The queue announces every partition it hands out, so this is only a safety net:
            // never append to a file whose watermark has not been read.
            tracing::debug!(%partition, "loading a partition that was not announced as assigned");
            let state = self.load(partition)?;
            self.partitions.insert(partition, state);
        }
        self.partitions
            .get_mut(&partition)
            .ok_or_else(|| SinkError::Io {
                context: format!("partition {partition} vanished from the sink"),
                cause: io::Error::other("internal state"),
            })
    }

    #[cfg(test)]
    fn with_tail_chunk_bytes(mut self, bytes: usize) -> Self {
        self.tail_chunk_bytes = bytes;
        self
    }

    /// Marks a partition as if its last write had failed half way.
    #[cfg(test)]
    fn poison(&mut self, partition: Partition) {
        if let Some(state) = self.partitions.get_mut(&partition) {
            state.needs_rollback = true;
        }
    }
}

impl Sink for JsonlSink {
    fn assign(&mut self, partition: Partition) -> Result<(), SinkError> {
        // Drop the old handle and cache first: if the load fails, a later write must not trust
        // a stale watermark.
        self.partitions.remove(&partition);
        let state = self.load(partition)?;
        tracing::debug!(
            %partition,
            len = state.len,
            watermark = ?state.watermark,
            "loaded sink partition"
        );
        self.partitions.insert(partition, state);
        Ok(())
    }

    fn revoke(&mut self, partition: Partition) {
        // Everything written was synced before the batch returned, so closing loses nothing.
        self.partitions.remove(&partition);
    }

    fn write_batch(&mut self, records: &[SinkRecord]) -> Result<WriteStats, SinkError> {
        let mut by_partition: BTreeMap<Partition, Vec<&SinkRecord>> = BTreeMap::new();
        for record in records {
            by_partition
                .entry(record.partition)
                .or_default()
                .push(record);
        }
        // One partition after another: formatting them on threads of their own measured no
        // faster, as the disk, not the formatting, bounds a large batch.
        let mut stats = WriteStats::default();
        for (partition, records) in by_partition {
            let written = self.loaded(partition)?.write_records(&records)?;
            stats.written += written.written;
            stats.skipped += written.skipped;
        }
        Ok(stats)
    }

    fn quarantine(
        &mut self,
        partition: Partition,
        offset: Offset,
        payload: &[u8],
    ) -> Result<PathBuf, SinkError> {
        let dir = self.dir.join(QUARANTINE_DIR);
        create_dir_durably(&dir)?;
        // One file per record, named by its position: a re-delivered corrupt record overwrites
        // its own copy instead of piling up duplicates.
        let name = format!("partition-{:04}-offset-{:020}.bin", partition.0, offset.0);
        let path = dir.join(&name);
        let temp = dir.join(format!("{name}.tmp"));
        write_file_durably(&temp, payload)?;
        std::fs::rename(&temp, &path).map_err(io_error(format!(
            "renaming {} to {}",
            temp.display(),
            path.display()
        )))?;
        sync_dir(&dir)?;
        Ok(path)
    }
}

/// What [`recover_tail`] found.
#[derive(Debug, PartialEq, Eq)]
struct Recovered {
    /// The file's length after cutting the torn tail.
    len: u64,
    watermark: Option<Position>,
    truncated_bytes: u64,
}

/// Reads the watermark from the end of a partition file, first cutting away whatever a crash
/// left half written.
///
/// Every line is written whole and synced before its record is committed, so a tail that is not
/// a complete, parseable line was never committed and its records will be re-delivered; cutting
/// it is safe. That covers a fragment after the last newline (a torn write) and complete lines
/// that are not JSON at all (a machine crash can leave zero-filled blocks). A complete JSON line
/// that is not ours is an error: the file is not what this sink thinks it is.
fn recover_tail(
    file: &File,
    path: &Path,
    partition: Partition,
    chunk_bytes: usize,
) -> Result<Recovered, SinkError> {
    let read_error = || io_error(format!("reading the tail of {}", path.display()));
    let original = file.metadata().map_err(read_error())?.len();
    let mut end = original;
    if end > 0 && read_byte(file, end - 1).map_err(read_error())? != b'\n' {
        end = match last_newline_before(file, end, chunk_bytes).map_err(read_error())? {
            Some(newline) => newline + 1,
            None => 0,
        };
    }
    let watermark = loop {
        if end == 0 {
            break None;
        }
        // `end - 1` is the newline closing the last complete line.
        let line_end = end - 1;
        let start = match last_newline_before(file, line_end, chunk_bytes).map_err(read_error())? {
            Some(newline) => newline + 1,
            None => 0,
        };
        if line_end - start > MAX_LINE_BYTES {
            end = start;
            continue;
        }
        let mut line = vec![0; (line_end - start) as usize];
        file.read_exact_at(&mut line, start).map_err(read_error())?;
        match serde_json::from_slice::<LinePosition>(&line) {
            Ok(found) if found.partition == partition.0 => {
                break Some(Position {
                    offset: Offset(found.offset),
                    index: found.index,
                });
            }
            Ok(found) => {
                return Err(SinkError::Foreign {
                    path: path.to_owned(),
                    reason: format!(
                        "its last line belongs to partition {}, not {partition}",
                        found.partition
                    ),
                });
            }
            Err(error) if error.classify() == serde_json::error::Category::Data => {
                return Err(SinkError::Foreign {
                    path: path.to_owned(),
                    reason: format!("its last line is JSON of another shape: {error}"),
                });
            }
            // Not JSON at all: crash residue.
            Err(_) => end = start,
        }
    };
    if end < original {
        file.set_len(end).map_err(io_error(format!(
            "truncating the torn tail of {}",
            path.display()
        )))?;
    }
    Ok(Recovered {
        len: end,
        watermark,
        truncated_bytes: original - end,
    })
}

fn read_byte(file: &File, at: u64) -> io::Result<u8> {
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at)?;
    Ok(byte[0])
}

/// The position of the last `\n` in `file[..end]`, reading backwards `chunk_bytes` at a time.
fn last_newline_before(file: &File, end: u64, chunk_bytes: usize) -> io::Result<Option<u64>> {
    let mut buffer = vec![0u8; chunk_bytes.max(1)];
    let mut high = end;
    while high > 0 {
        let low = high.saturating_sub(buffer.len() as u64);
        let chunk = &mut buffer[..(high - low) as usize];
        file.read_exact_at(chunk, low)?;
        if let Some(at) = chunk.iter().rposition(|&byte| byte == b'\n') {
            return Ok(Some(low + at as u64));
        }
        high = low;
    }
    Ok(None)
}

/// Opens `path` for reading and writing, creating it if missing; says whether it was created.
fn open_or_create(path: &Path) -> Result<(File, bool), SinkError> {
    let mut options = OpenOptions::new();
    options.read(true).write(true);
    match options.clone().create_new(true).open(path) {
        Ok(file) => Ok((file, true)),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => options
            .open(path)
            .map(|file| (file, false))
            .map_err(io_error(format!("opening {}", path.display()))),
        Err(error) => Err(io_error(format!("creating {}", path.display()))(error)),
    }
}

/// Creates `dir` (and its parents) if missing, and makes the new entry durable in its parent.
fn create_dir_durably(dir: &Path) -> Result<(), SinkError> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(io_error(format!("creating {}", dir.display())))?;
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => sync_dir(Path::new(".")),
    }
}

fn write_file_durably(path: &Path, bytes: &[u8]) -> Result<(), SinkError> {
    let file = File::create(path).map_err(io_error(format!("creating {}", path.display())))?;
    file.write_all_at(bytes, 0)
        .map_err(io_error(format!("writing {}", path.display())))?;
    file.sync_all()
        .map_err(io_error(format!("syncing {}", path.display())))
}

fn sync_dir(dir: &Path) -> Result<(), SinkError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(io_error(format!("syncing the directory {}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    use metricstream_backend::{ClientId, Metric, MetricBatch};
    use serde_json::Value;

    const P0: Partition = Partition(0);

    fn metric(name: &str, value: f64) -> Metric {
        Metric {
            name: name.to_owned(),
            value,
            timestamp: Some(1_700_000_000_000),
            tags: BTreeMap::from([("host".to_owned(), "a".to_owned())]),
        }
    }

    /// A batch of `count` metrics named `m0`, `m1`, ...
    fn batch(count: usize) -> MetricBatch {
        MetricBatch {
            client: ClientId::new("client-a"),
            metrics: (0..count)
                .map(|i| metric(&format!("m{i}"), i as f64))
                .collect(),
        }
    }

    /// A record at `offset` of `partition` holding `count` metrics named `m0`, `m1`, ...
    fn record(partition: Partition, offset: u64, count: usize) -> SinkRecord {
        SinkRecord::encode(partition, Offset(offset), &batch(count))
    }

    fn lines(path: &Path) -> Vec<Value> {
        let text = std::fs::read_to_string(path).expect("sink file is readable UTF-8");
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "a sink file always ends with a newline"
        );
        text.lines()
            .map(|line| serde_json::from_str(line).expect("every line is JSON"))
            .collect()
    }

    /// (offset, index) of every line, in file order.
    fn positions(path: &Path) -> Vec<(u64, u64)> {
        lines(path)
            .iter()
            .map(|line| {
                (
                    line["offset"].as_u64().expect("offset"),
                    line["index"].as_u64().expect("index"),
                )
            })
            .collect()
    }

    fn append_raw(path: &Path, bytes: &[u8]) {
        let mut file = OpenOptions::new()
            .append(true)
            .open(path)
            .expect("open for append");
        file.write_all(bytes).expect("append");
    }

    fn open_sink(dir: &Path) -> JsonlSink {
        let mut sink = JsonlSink::open(dir).expect("sink opens");
        sink.assign(P0).expect("partition 0 loads");
        sink
    }

    #[test]
    fn writes_one_object_per_metric_with_the_documented_fields() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sink = open_sink(dir.path());
        let stats = sink
            .write_batch(&[record(P0, 12, 2)])
            .expect("write succeeds");
        assert_eq!(
            stats,
            WriteStats {
                written: 2,
                skipped: 0
            }
        );

        let text = std::fs::read_to_string(dir.path().join("partition-0000.jsonl")).expect("read");
        let first = text.lines().next().expect("a first line");
        assert_eq!(
            first,
            r#"{"client":"client-a","name":"m0","value":0.0,"timestamp":1700000000000,"tags":{"host":"a"},"partition":0,"offset":12,"index":0}"#
        );
        assert_eq!(
            positions(&dir.path().join("partition-0000.jsonl")),
            vec![(12, 0), (12, 1)]
        );
    }

    #[test]
    fn missing_timestamp_and_non_finite_value_are_written_as_null() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sink = open_sink(dir.path());
        let mut one = batch(1);
        one.metrics[0].timestamp = None;
        one.metrics[0].value = f64::NAN;
        sink.write_batch(&[SinkRecord::encode(P0, Offset(0), &one)])
            .expect("write succeeds");
        let line = &lines(&dir.path().join("partition-0000.jsonl"))[0];
        assert_eq!(line["timestamp"], Value::Null);
        assert_eq!(line["value"], Value::Null);
    }

    #[test]
    fn file_names_are_zero_padded_to_four_digits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = JsonlSink::open(dir.path()).expect("sink opens");
        assert_eq!(
            sink.partition_path(Partition(7)),
            dir.path().join("partition-0007.jsonl")
        );
        assert_eq!(
            sink.partition_path(Partition(1023)),
            dir.path().join("partition-1023.jsonl")
        );
    }

    #[test]
    fn open_creates_a_missing_sink_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nested = dir.path().join("a/b/sink");
        let mut sink = JsonlSink::open(&nested).expect("sink opens");
        sink.assign(Partition(3)).expect("assign creates the file");
        assert!(nested.join("partition-0003.jsonl").is_file());
    }

    #[test]
    fn each_partition_gets_its_own_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sink = JsonlSink::open(dir.path()).expect("sink opens");
        sink.write_batch(&[
            record(Partition(0), 0, 1),
            record(Partition(1), 0, 2),
            record(Partition(0), 1, 1),
        ])
        .expect("write succeeds");
        assert_eq!(
            positions(&dir.path().join("partition-0000.jsonl")),
            vec![(0, 0), (1, 0)]
        );
        let other = lines(&dir.path().join("partition-0001.jsonl"));
        assert_eq!(other.len(), 2);
        assert!(other.iter().all(|line| line["partition"] == 1));
    }

    #[test]
    fn a_replayed_batch_writes_nothing_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sink = open_sink(dir.path());
        let batch = [record(P0, 0, 3), record(P0, 1, 2)];
        sink.write_batch(&batch).expect("first write");
        let stats = sink.write_batch(&batch).expect("replay");
        assert_eq!(
            stats,
            WriteStats {
                written: 0,
                skipped: 5
            }
        );
        assert_eq!(positions(&dir.path().join("partition-0000.jsonl")).len(), 5);
    }

    #[test]
    fn a_restarted_sink_skips_what_the_previous_process_wrote_before_its_commit() {
        // The crash between sink write and offset commit: the records come back to a new
        // process, which must recognise them from the file alone.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut first = open_sink(dir.path());
        first
            .write_batch(&[record(P0, 0, 2), record(P0, 1, 2)])
            .expect("first process writes");
        drop(first);

        let mut second = open_sink(dir.path());
        assert_eq!(
            second.watermark(P0),
            Some(Position {
                offset: Offset(1),
                index: 1
            })
        );
        let stats = second
            .write_batch(&[record(P0, 0, 2), record(P0, 1, 2), record(P0, 2, 1)])
            .expect("re-delivery plus a new record");
        assert_eq!(
            stats,
            WriteStats {
                written: 1,
                skipped: 4
            }
        );
        assert_eq!(
            positions(&dir.path().join("partition-0000.jsonl")),
            vec![(0, 0), (0, 1), (1, 0), (1, 1), (2, 0)]
        );
    }

    #[test]
    fn a_partially_written_record_resumes_at_its_next_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("partition-0000.jsonl");
        let mut sink = open_sink(dir.path());
        sink.write_batch(&[record(P0, 5, 3)]).expect("write");
        // Keep only the first two metrics of record 5, as if the process died mid-batch.
        let text = std::fs::read_to_string(&path).expect("read");
        let kept: String = text
            .lines()
            .take(2)
            .map(|line| format!("{line}\n"))
            .collect();
        std::fs::write(&path, kept).expect("rewrite");

        let mut sink = open_sink(dir.path());
        let stats = sink.write_batch(&[record(P0, 5, 3)]).expect("re-delivery");
        assert_eq!(
            stats,
            WriteStats {
                written: 1,
                skipped: 2
            }
        );
        assert_eq!(positions(&path), vec![(5, 0), (5, 1), (5, 2)]);
    }

    #[test]
    fn reassignment_reloads_what_another_consumer_wrote_meanwhile() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ours = open_sink(dir.path());
        ours.write_batch(&[record(P0, 0, 1)]).expect("write");
        ours.revoke(P0);

        // Another process owned the partition for a while and moved on.
        let mut theirs = open_sink(dir.path());
        theirs
            .write_batch(&[record(P0, 1, 1), record(P0, 2, 1)])
            .expect("write");
        drop(theirs);

        ours.assign(P0).expect("reassigned");
        // The group committed only up to offset 1, so offset 1 and 2 come again.
        let stats = ours
            .write_batch(&[record(P0, 1, 1), record(P0, 2, 1), record(P0, 3, 1)])
            .expect("write");
        assert_eq!(
            stats,
            WriteStats {
                written: 1,
                skipped: 2
            }
        );
        assert_eq!(
            positions(&dir.path().join("partition-0000.jsonl")),
            vec![(0, 0), (1, 0), (2, 0), (3, 0)]
        );
    }

    #[test]
    fn a_torn_last_line_is_cut_and_rewritten_on_redelivery() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("partition-0000.jsonl");
        let mut sink = open_sink(dir.path());
        sink.write_batch(&[record(P0, 0, 1)]).expect("write");
        drop(sink);
        let before = std::fs::metadata(&path).expect("metadata").len();
        // The process died half way through writing offset 1.
        append_raw(&path, br#"{"client":"client-a","name":"m0","val"#);

        let mut sink = open_sink(dir.path());
        assert_eq!(std::fs::metadata(&path).expect("metadata").len(), before);
        assert_eq!(
            sink.watermark(P0),
            Some(Position {
                offset: Offset(0),
                index: 0
            })
        );
        sink.write_batch(&[record(P0, 1, 1)]).expect("write");
        assert_eq!(positions(&path), vec![(0, 0), (1, 0)]);
    }

    #[test]
    fn a_complete_line_without_its_newline_counts_as_torn() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("partition-0000.jsonl");
        let mut sink = open_sink(dir.path());
        sink.write_batch(&[record(P0, 0, 2)]).expect("write");
        drop(sink);
        // Drop only the final newline: the line parses, but it was never completely written.
        let text = std::fs::read_to_string(&path).expect("read");
        std::fs::write(&path, text.trim_end_matches('\n')).expect("rewrite");

        let mut sink = open_sink(dir.path());
        assert_eq!(
            sink.watermark(P0),
            Some(Position {
                offset: Offset(0),
                index: 0
            })
        );
        sink.write_batch(&[record(P0, 0, 2)]).expect("re-delivery");
        assert_eq!(positions(&path), vec![(0, 0), (0, 1)]);
    }

    #[test]
    fn zero_filled_crash_residue_is_cut_back_to_the_last_json_line() {
        // A machine crash can leave a file longer than its data, the gap filled with zeros,
        // sometimes followed by later blocks that did reach the disk.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("partition-0000.jsonl");
        let mut sink = open_sink(dir.path());
        sink.write_batch(&[record(P0, 0, 1)]).expect("write");
        drop(sink);
        let before = std::fs::metadata(&path).expect("metadata").len();
        append_raw(&path, &[0u8; 5000]);
        append_raw(&path, b"\n\0\0\0\n");

        let sink = open_sink(dir.path());
        assert_eq!(std::fs::metadata(&path).expect("metadata").len(), before);
        assert_eq!(
            sink.watermark(P0),
            Some(Position {
                offset: Offset(0),
                index: 0
            })
        );
    }

    #[test]
    fn a_file_of_nothing_but_residue_is_emptied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("partition-0000.jsonl");
        std::fs::write(&path, b"{\"client\":\"a\",\"na").expect("write");
        let sink = open_sink(dir.path());
        assert_eq!(sink.watermark(P0), None);
        assert_eq!(std::fs::metadata(&path).expect("metadata").len(), 0);
    }

    #[test]
    fn a_json_line_of_another_partition_refuses_to_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut other = JsonlSink::open(dir.path()).expect("sink opens");
        other
            .write_batch(&[record(Partition(1), 0, 1)])
            .expect("write");
        // Someone copied partition 1's file over partition 0's.
        std::fs::copy(
            dir.path().join("partition-0001.jsonl"),
            dir.path().join("partition-0000.jsonl"),
        )
        .expect("copy");
        let mut sink = JsonlSink::open(dir.path()).expect("sink opens");
        let error = sink.assign(P0).expect_err("foreign file is refused");
        assert!(matches!(error, SinkError::Foreign { .. }), "{error}");
        // And a write does not sneak past the refusal by loading lazily.
        assert!(sink.write_batch(&[record(P0, 0, 1)]).is_err());
    }

    #[test]
    fn a_json_line_of_another_shape_refuses_to_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("partition-0000.jsonl"), b"{\"hello\":1}\n").expect("write");
        let mut sink = JsonlSink::open(dir.path()).expect("sink opens");
        assert!(matches!(sink.assign(P0), Err(SinkError::Foreign { .. })));
    }

    #[test]
    fn lines_longer_than_the_read_chunk_are_found_and_parsed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("partition-0000.jsonl");
        let mut sink = open_sink(dir.path());
        let mut big = batch(2);
        big.metrics[1]
            .tags
            .insert("blob".to_owned(), "x".repeat(10_000));
        let big = SinkRecord::encode(P0, Offset(0), &big);
        sink.write_batch(&[big, record(P0, 1, 3)]).expect("write");
        let mut tail = batch(1);
        tail.metrics[0]
            .tags
            .insert("blob".to_owned(), "y".repeat(10_000));
        sink.write_batch(&[SinkRecord::encode(P0, Offset(2), &tail)])
            .expect("write");
        drop(sink);
        append_raw(&path, &[b'z'; 3000]);

        // A tiny chunk makes every scan cross many chunk boundaries.
        let mut sink = JsonlSink::open(dir.path())
            .expect("sink opens")
            .with_tail_chunk_bytes(7);
        sink.assign(P0).expect("loads");
        assert_eq!(
            sink.watermark(P0),
            Some(Position {
                offset: Offset(2),
                index: 0
            })
        );
        assert_eq!(positions(&path).len(), 6);
    }

    #[test]
    fn the_watermark_comes_from_the_tail_of_a_multi_gigabyte_file() {
        // A sparse 4 GiB file: reading it whole would take seconds and gigabytes of memory,
        // while the tail scan reads only the last line.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("partition-0000.jsonl");
        let mut sink = open_sink(dir.path());
        sink.write_batch(&[record(P0, 0, 1)]).expect("write");
        drop(sink);
        let file = OpenOptions::new().write(true).open(&path).expect("open");
        let head = file.metadata().expect("metadata").len();
        // Pretend gigabytes of earlier lines: a newline at the far end of a hole.
        file.write_all_at(b"\n", 4 * 1024 * 1024 * 1024)
            .expect("extend sparsely");
        drop(file);
        assert!(head < 4 * 1024 * 1024 * 1024);

        let last = {
            let scratch = tempfile::tempdir().expect("tempdir");
            let mut writer = open_sink(scratch.path());
            writer
                .write_batch(&[record(P0, 987_654_321, 4)])
                .expect("write");
            std::fs::read(scratch.path().join("partition-0000.jsonl")).expect("read")
        };
        append_raw(&path, &last);

        let started = std::time::Instant::now();
        let sink = open_sink(dir.path());
        assert_eq!(
            sink.watermark(P0),
            Some(Position {
                offset: Offset(987_654_321),
                index: 3
            })
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "loading took {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_batch_larger_than_a_chunk_is_appended_in_pieces_and_replays_as_a_no_op() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("partition-0000.jsonl");
        let mut sink = open_sink(dir.path());
        let records: Vec<SinkRecord> = (0..6)
            .map(|offset| {
                let mut big = batch(2);
                for metric in &mut big.metrics {
                    metric
                        .tags
                        .insert("blob".to_owned(), "x".repeat(APPEND_CHUNK_BYTES / 4));
                }
                SinkRecord::encode(P0, Offset(offset), &big)
            })
            .collect();
        let stats = sink.write_batch(&records).expect("write");
        assert_eq!(stats.written, 12);
        let len = std::fs::metadata(&path).expect("metadata").len();
        assert!(len > 3 * APPEND_CHUNK_BYTES as u64, "{len} bytes");
        let expected: Vec<(u64, u64)> = (0..6).flat_map(|o| [(o, 0), (o, 1)]).collect();
        assert_eq!(positions(&path), expected);

        let stats = sink.write_batch(&records).expect("replay");
        assert_eq!(
            stats,
            WriteStats {
                written: 0,
                skipped: 12
            }
        );
        drop(sink);
        let sink = open_sink(dir.path());
        assert_eq!(
            sink.watermark(P0),
            Some(Position {
                offset: Offset(5),
                index: 1
            })
        );
        assert_eq!(positions(&path), expected);
    }

    #[test]
    fn a_failed_write_is_rolled_back_before_the_retry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("partition-0000.jsonl");
        let mut sink = open_sink(dir.path());
        sink.write_batch(&[record(P0, 0, 1)]).expect("write");
        // A write that failed half way (disk full) left part of a line behind.
        append_raw(&path, br#"{"client":"client-a","na"#);
        sink.poison(P0);

        let stats = sink
            .write_batch(&[record(P0, 1, 2)])
            .expect("retry succeeds");
        assert_eq!(
            stats,
            WriteStats {
                written: 2,
                skipped: 0
            }
        );
        assert_eq!(positions(&path), vec![(0, 0), (1, 0), (1, 1)]);
    }

    #[test]
    fn a_failed_sync_rewrites_lines_it_had_already_appended() {
        // After a failed fsync the lines in the file are of unknown durability; the retry must
        // write them again rather than skip them as already present.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("partition-0000.jsonl");
        let mut sink = open_sink(dir.path());
        sink.write_batch(&[record(P0, 0, 1)]).expect("write");
        sink.write_batch(&[record(P0, 1, 2)]).expect("write");
        // Pretend the second batch's sync failed: its lines are in the file, not durable.
        if let Some(state) = sink.partitions.get_mut(&P0) {
            state.durable_len = std::fs::read_to_string(&path)
                .expect("read")
                .lines()
                .next()
                .map_or(0, |line| line.len() as u64 + 1);
            state.durable_watermark = Some(Position {
                offset: Offset(0),
                index: 0,
            });
            state.needs_rollback = true;
        }
        let stats = sink.write_batch(&[record(P0, 1, 2)]).expect("retry");
        assert_eq!(
            stats,
            WriteStats {
                written: 2,
                skipped: 0
            }
        );
        assert_eq!(positions(&path), vec![(0, 0), (1, 0), (1, 1)]);
    }

    #[test]
    fn records_in_one_batch_are_deduplicated_against_each_other() {
        // The queue never repeats a record within one poll, but the sink must not rely on it.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sink = open_sink(dir.path());
        let stats = sink
            .write_batch(&[record(P0, 0, 2), record(P0, 0, 2), record(P0, 1, 1)])
            .expect("write");
        assert_eq!(
            stats,
            WriteStats {
                written: 3,
                skipped: 2
            }
        );
    }

    #[test]
    fn a_record_without_metrics_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sink = open_sink(dir.path());
        let stats = sink.write_batch(&[record(P0, 0, 0)]).expect("write");
        assert_eq!(stats, WriteStats::default());
        assert_eq!(sink.watermark(P0), None);
    }

    #[test]
    fn quarantine_keeps_the_raw_payload_once_per_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sink = JsonlSink::open(dir.path()).expect("sink opens");
        let path = sink
            .quarantine(Partition(2), Offset(12), b"\x01garbage")
            .expect("quarantined");
        assert_eq!(
            path,
            dir.path()
                .join("quarantine/partition-0002-offset-00000000000000000012.bin")
        );
        assert_eq!(std::fs::read(&path).expect("read"), b"\x01garbage");
        // A re-delivery replaces its own copy instead of adding another.
        sink.quarantine(Partition(2), Offset(12), b"\x01garbage")
            .expect("quarantined again");
        let entries = std::fs::read_dir(dir.path().join("quarantine"))
            .expect("list")
            .count();
        assert_eq!(entries, 1);
    }
}
