//! One poll's records made ready for the sink: each checked to decode once, the corrupt ones
//! set aside for quarantine, and the whole written as many times as retries take.

use bytes::Bytes;
use metricstream_backend::codec::{self, CodecError};
use metricstream_backend::{ConsumedRecord, Offset, Partition};

use crate::sink::{Sink, SinkError, SinkRecord, WriteStats};

/// A record whose payload failed to decode.
pub(super) struct CorruptRecord {
    pub(super) partition: Partition,
    pub(super) offset: Offset,
    pub(super) payload: Bytes,
    pub(super) error: CodecError,
}

/// One poll's records, checked once (corrupt ones set aside for quarantine) and written as many
/// times as it takes.
pub(super) struct PreparedBatch {
    pub(super) records: Vec<SinkRecord>,
    pub(super) corrupt: Vec<CorruptRecord>,
    /// Metrics in the good records: what the batch costs against `--sink-rate-limit`.
    pub(super) metrics: u64,
}

impl PreparedBatch {
    pub(super) fn decode(records: Vec<ConsumedRecord>) -> Self {
        let mut prepared = Self {
            records: Vec::with_capacity(records.len()),
            corrupt: Vec::new(),
            metrics: 0,
        };
        for record in records {
            // Checked here so that corrupt records are quarantined before anything is written;
            // the sink decodes again as it writes, which costs far less than holding every
            // decoded metric of a poll in memory.
            match codec::decode_ref(&record.payload) {
                Ok(batch) => {
                    prepared.metrics += batch.len() as u64;
                    prepared.records.push(SinkRecord {
                        partition: record.partition,
                        offset: record.offset,
                        payload: record.payload,
                    });
                }
                // Writing what a failed checksum vouches for would put garbage in the sink, and
                // dropping it would lose data silently; quarantine keeps the bytes for a human.
                Err(error) => prepared.corrupt.push(CorruptRecord {
                    partition: record.partition,
                    offset: record.offset,
                    payload: record.payload,
                    error,
                }),
            }
        }
        prepared
    }

    /// Quarantines the corrupt records and writes the good ones, all durably.
    pub(super) fn write_to<S: Sink>(
        &self,
        sink: &mut S,
    ) -> Result<(WriteStats, Vec<std::path::PathBuf>), SinkError> {
        let quarantined = self
            .corrupt
            .iter()
            .map(|record| sink.quarantine(record.partition, record.offset, &record.payload))
            .collect::<Result<Vec<_>, _>>()?;
        let stats = sink.write_batch(&self.records)?;
        Ok((stats, quarantined))
    }
}
