//! The file queue's [`QueueProducer`]: one writer task per partition doing group commit.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::group::create_dir_durable;
use super::metrics::FileQueueMetrics;
use super::partition_log::PartitionLog;
use super::segment::sync_dir;
use super::{Durability, FileQueueConfig, FileQueueError, io_error};
use crate::model::{Offset, Partition};
use crate::queue::{AppendError, QueueProducer};

struct AppendRequest {
    record: Bytes,
    reply: oneshot::Sender<Result<Offset, AppendError>>,
}

/// Per-partition health, shared between the writer task and `readiness`.
type LastError = Arc<Mutex<Option<String>>>;

pub struct FileProducer {
    partitions: u32,
    max_record_bytes: usize,
    senders: RwLock<Option<Vec<mpsc::Sender<AppendRequest>>>>,
    writers: Mutex<Vec<JoinHandle<()>>>,
    last_errors: Vec<LastError>,
    closed: AtomicBool,
    metrics: FileQueueMetrics,
    opened_next_offsets: Vec<u64>,
}

impl FileProducer {
    /// Opens the queue at `config.root` (creating it, or recovering every partition's torn tail)
    /// and starts one writer task per partition on the current Tokio runtime.
    pub async fn open(
        config: FileQueueConfig,
        metrics: FileQueueMetrics,
    ) -> Result<Self, FileQueueError> {
        validate(&config)?;
        let opened_metrics = metrics.clone();
        let logs = tokio::task::spawn_blocking(move || {
            open_logs(&config, opened_metrics).map(|logs| (config, logs))
        })
        .await
        .map_err(|error| FileQueueError::Config(format!("opening the queue panicked: {error}")))?;
        let (config, logs) = logs?;

        let mut senders = Vec::with_capacity(logs.len());
        let mut writers = Vec::with_capacity(logs.len());
        let mut last_errors = Vec::with_capacity(logs.len());
        let opened_next_offsets = logs.iter().map(PartitionLog::next_offset).collect();
        for log in logs {
            let (sender, receiver) = mpsc::channel(config.queue_depth);
            let last_error = LastError::default();
            writers.push(tokio::spawn(run_writer(
                log,
                receiver,
                config.durability,
                config.max_batch_bytes,
                last_error.clone(),
            )));
            senders.push(sender);
            last_errors.push(last_error);
        }
        Ok(Self {
            partitions: config.partitions,
            max_record_bytes: config.max_record_bytes,
            senders: RwLock::new(Some(senders)),
            writers: Mutex::new(writers),
            last_errors,
            closed: AtomicBool::new(false),
            metrics,
            opened_next_offsets,
        })
    }
}

impl FileProducer {
    /// Hands one record to `partition`'s writer without waiting: records handed over one after
    /// another are stored in that order (the spill relies on it), and
    /// [`PendingAppend::durable`] waits until the record is synced.
    pub fn enqueue(
        &self,
        partition: Partition,
        record: Bytes,
    ) -> Result<PendingAppend, AppendError> {
        // An empty frame on disk is a seal: written as a record it would end the log there.
        if record.is_empty() {
            return Err(AppendError::EmptyRecord);
        }
        if record.len() > self.max_record_bytes {
            return Err(AppendError::TooLarge {
                size: record.len(),
                limit: self.max_record_bytes,
            });
        }
        let (reply, answer) = oneshot::channel();
        let senders = self.senders.read().map_err(|_| AppendError::Closed)?;
        let Some(senders) = senders.as_ref() else {
            return Err(AppendError::Closed);
        };
        let sender = senders
            .get(partition.0 as usize)
            .ok_or(AppendError::NoSuchPartition {
                partition,
                partitions: self.partitions,
            })?;
        sender
            .try_send(AppendRequest { record, reply })
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => {
                    self.metrics.saturated.inc();
                    AppendError::Saturated
                }
                mpsc::error::TrySendError::Closed(_) => AppendError::Closed,
            })?;
        Ok(PendingAppend(answer))
    }

    /// Each partition's next offset when the queue was opened: where the first append goes.
    pub fn opened_next_offsets(&self) -> &[u64] {
        &self.opened_next_offsets
    }
}

/// A record handed to a partition's writer, waiting for its sync.
pub struct PendingAppend(oneshot::Receiver<Result<Offset, AppendError>>);

impl PendingAppend {
    /// The record's offset once it is durable.
    pub async fn durable(self) -> Result<Offset, AppendError> {
        self.0.await.map_err(|_| AppendError::Closed)?
    }
}

fn validate(config: &FileQueueConfig) -> Result<(), FileQueueError> {
    if !(1..=crate::queue::MAX_PARTITIONS).contains(&config.partitions) {
        return Err(FileQueueError::Config(format!(
            "partitions must be in 1..={}, got {}",
            crate::queue::MAX_PARTITIONS,
            config.partitions
        )));
    }
    if config.queue_depth == 0 {
        return Err(FileQueueError::Config(
            "queue depth must be at least 1".into(),
        ));
    }
    if config.max_record_bytes == 0 || config.max_record_bytes > super::segment::MAX_RECORD_BYTES {
        return Err(FileQueueError::Config(format!(
            "max record bytes must be in 1..={}",
            super::segment::MAX_RECORD_BYTES
        )));
    }
    if config.segment_bytes < 4096 {
        return Err(FileQueueError::Config(
            "segment bytes must be at least 4096".into(),
        ));
    }
    Ok(())
}

/// Records the partition count in `queue.json` (growing it, refusing to shrink it) and opens
/// every partition, all under a root lock so concurrent starters agree.
fn open_logs(
    config: &FileQueueConfig,
    metrics: FileQueueMetrics,
) -> Result<Vec<PartitionLog>, FileQueueError> {
    let root = &config.root;
    create_dir_durable(root).map_err(io_error(format!("creating {}", root.display())))?;
    let lock_path = root.join("queue.lock");
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(io_error(format!("opening {}", lock_path.display())))?;
    lock.lock()
        .map_err(io_error(format!("locking {}", lock_path.display())))?;
    let existing = stored_partitions(root)?;
    if let Some(existing) = existing
        && existing > config.partitions
    {
        return Err(FileQueueError::Shrink {
            root: root.clone(),
            existing,
            requested: config.partitions,
        });
    }
    let mut logs = Vec::with_capacity(config.partitions as usize);
    for partition in 0..config.partitions {
        let log = PartitionLog::open(config, partition, metrics.clone()).map_err(io_error(
            format!("opening partition {partition} in {}", root.display()),
        ))?;
        logs.push(log);
    }
    if existing != Some(config.partitions) {
        store_partitions(root, config.partitions).map_err(io_error(format!(
            "recording the partition count in {}",
            root.display()
        )))?;
        tracing::info!(root = %root.display(), partitions = config.partitions, "queue partition count recorded");
    }
    drop(lock);
    Ok(logs)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct QueueMeta {
    partitions: u32,
}

/// The partition count recorded in `<root>/queue.json`, if any.
pub(crate) fn stored_partitions(root: &Path) -> Result<Option<u32>, FileQueueError> {
    let path = root.join("queue.json");
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice::<QueueMeta>(&bytes)
            .map(|meta| Some(meta.partitions))
            .map_err(|error| FileQueueError::Malformed {
                path,
                reason: error.to_string(),
            }),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(FileQueueError::Io {
            context: format!("reading {}", path.display()),
            source: error,
        }),
    }
}

fn store_partitions(root: &Path, partitions: u32) -> io::Result<()> {
    let temp = root.join(".queue.json.tmp");
    let body = serde_json::to_vec(&QueueMeta { partitions }).map_err(io::Error::other)?;
    {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)?;
        io::Write::write_all(&mut &file, &body)?;
        file.sync_all()?;
    }
    fs::rename(&temp, root.join("queue.json"))?;
    sync_dir(root)
}

/// Gathers every append waiting for this partition into one batch, writes and syncs it on the
/// blocking pool, then answers each request. Exits once the producer drops its sender and the
/// queue is drained, so nothing accepted is abandoned.
async fn run_writer(
    log: PartitionLog,
    mut receiver: mpsc::Receiver<AppendRequest>,
    durability: Durability,
    max_batch_bytes: usize,
    last_error: LastError,
) {
    let partition = log.partition();
    let mut log = Some(log);
    while let Some(first) = receiver.recv().await {
        let mut batch_bytes = first.record.len();
        let mut batch = vec![first];
        if durability != Durability::Always {
            while batch_bytes < max_batch_bytes {
                match receiver.try_recv() {
                    Ok(request) => {
                        batch_bytes += request.record.len();
                        batch.push(request);
                    }
                    Err(_) => break,
                }
            }
        }
        let Some(mut current) = log.take() else {
            // Only reachable if a previous blocking write panicked and lost the log.
            for request in batch {
                let _ = request.reply.send(Err(AppendError::Unavailable(format!(
                    "partition {partition} writer failed earlier"
                ))));
            }
            continue;
        };
        let records: Vec<Bytes> = batch.iter().map(|r| r.record.clone()).collect();
        let written = tokio::task::spawn_blocking(move || {
            let slices: Vec<&[u8]> = records.iter().map(|r| r.as_ref()).collect();
            let result = current.append_batch(&slices);
            (current, result)
        })
        .await;
        let result = match written {
            Ok((current, result)) => {
                log = Some(current);
                result
            }
            Err(join_error) => Err(io::Error::other(format!("writer panicked: {join_error}"))),
        };
        match result {
            Ok(first_offset) => {
                if let Ok(mut last) = last_error.lock() {
                    *last = None;
                }
                for (i, request) in batch.into_iter().enumerate() {
                    let _ = request.reply.send(Ok(Offset(first_offset + i as u64)));
                }
            }
            Err(error) => {
                tracing::error!(partition, %error, records = batch.len(), "append failed; nothing in this batch was acknowledged");
                let reason = format!("partition {partition}: {error}");
                if let Ok(mut last) = last_error.lock() {
                    *last = Some(reason.clone());
                }
                for request in batch {
                    let _ = request
                        .reply
                        .send(Err(AppendError::Unavailable(reason.clone())));
                }
            }
        }
    }
}

#[async_trait]
impl QueueProducer for FileProducer {
    fn partitions(&self) -> u32 {
        self.partitions
    }

    async fn append(&self, partition: Partition, record: Bytes) -> Result<Offset, AppendError> {
        self.enqueue(partition, record)?.durable().await
    }

    fn readiness(&self) -> Result<(), String> {
        if self.closed.load(Ordering::Acquire) {
            return Err("shutting down".into());
        }
        let failing: Vec<String> = self
            .last_errors
            .iter()
            .filter_map(|last| last.lock().ok().and_then(|last| last.clone()))
            .collect();
        if failing.is_empty() {
            Ok(())
        } else {
            Err(format!("last append failed on {}", failing.join("; ")))
        }
    }

    async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        // Dropping the senders lets each writer drain what is queued and exit.
        if let Ok(mut senders) = self.senders.write() {
            senders.take();
        }
        let writers = match self.writers.lock() {
            Ok(mut writers) => std::mem::take(&mut *writers),
            Err(_) => Vec::new(),
        };
        for writer in writers {
            let _ = writer.await;
        }
    }
}
