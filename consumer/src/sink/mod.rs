//! Where consumed metrics go: the [`Sink`] interface and its two implementations, the JSON Lines
//! files described below (`--sink file`, the default) and a time-series store over Prometheus
//! remote write (`--sink remote-write`, [`RemoteWriteSink`] in `remote_write`).
//!
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
//!
//! This module owns the sink's interface (the [`Sink`] trait, its records, positions, stats and
//! errors); the JSON Lines implementation lives in its children:
//! `jsonl` (the sink itself: partitions, batches, quarantine), `partition_file` (one partition's
//! file: formatting lines, appending, syncing, rolling back), `recover` (reading the watermark
//! back and cutting a torn tail) and `durable` (file-system calls that make entries durable, and
//! the quarantine both sinks share).

mod durable;
mod jsonl;
mod partition_file;
mod recover;
mod remote_write;
#[cfg(test)]
mod test_support;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use metricstream_backend::codec;
use metricstream_backend::{Offset, Partition};

pub use jsonl::JsonlSink;
pub use remote_write::{
    AuthSettings, ClientIdentityFiles, Protocol, RemoteWriteSettings, RemoteWriteSink, TlsSettings,
};

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
    /// The time-series store did not take a request (after the sink's own retries), or the
    /// remote-write sink is misconfigured.
    #[error("{0}")]
    Store(String),
    /// The store is failing and the sink's circuit breaker holds requests back: nothing is sent
    /// until `retry_in` has passed (the next probe), so retrying sooner only fails again.
    #[error("{reason}")]
    StoreUnavailable { reason: String, retry_in: Duration },
}

impl SinkError {
    /// How long retrying is pointless, when the sink knows.
    pub fn retry_in(&self) -> Option<Duration> {
        match self {
            Self::StoreUnavailable { retry_in, .. } => Some(*retry_in),
            _ => None,
        }
    }
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
    /// The record's metrics, borrowed from its payload; a payload that does not decode (which
    /// the pipeline has ruled out before the sink sees it) is [`SinkError::Corrupt`].
    pub fn decode(&self) -> Result<codec::BatchRef<'_>, SinkError> {
        codec::decode_ref(&self.payload).map_err(|error| SinkError::Corrupt {
            partition: self.partition,
            offset: self.offset,
            error,
        })
    }

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

/// A sink chosen at startup (`--sink`).
impl Sink for Box<dyn Sink> {
    fn assign(&mut self, partition: Partition) -> Result<(), SinkError> {
        (**self).assign(partition)
    }

    fn revoke(&mut self, partition: Partition) {
        (**self).revoke(partition)
    }

    fn write_batch(&mut self, records: &[SinkRecord]) -> Result<WriteStats, SinkError> {
        (**self).write_batch(records)
    }

    fn quarantine(
        &mut self,
        partition: Partition,
        offset: Offset,
        payload: &[u8],
    ) -> Result<PathBuf, SinkError> {
        (**self).quarantine(partition, offset, payload)
    }
}
