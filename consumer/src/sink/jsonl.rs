//! The JSON Lines sink itself ([`JsonlSink`]): which partitions are loaded, how a batch is
//! spread over their files, and quarantine. One partition's file is `partition_file`'s; reading
//! a file back after a crash is `recover`'s.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};

use metricstream_backend::{Offset, Partition};

#[cfg(test)]
use super::Position;
use super::durable::{create_dir_durably, open_or_create, quarantine_payload, sync_dir};
use super::partition_file::PartitionFile;
use super::recover::recover_tail;
use super::{Sink, SinkError, SinkRecord, WriteStats, io_error};

/// Lines are read back from the end of a file in chunks of this size, so finding the watermark
/// costs the length of the last line or two, however large the file.
const TAIL_CHUNK_BYTES: usize = 64 * 1024;

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
    pub(super) fn watermark(&self, partition: Partition) -> Option<Position> {
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
    pub(super) fn with_tail_chunk_bytes(mut self, bytes: usize) -> Self {
        self.tail_chunk_bytes = bytes;
        self
    }

    /// Swaps a partition's handle for a read-only one, so that its next append fails.
    #[cfg(test)]
    fn break_writes(&mut self, partition: Partition) {
        let path = self.partition_path(partition);
        if let (Some(state), Ok(read_only)) = (
            self.partitions.get_mut(&partition),
            std::fs::File::open(path),
        ) {
            state.file = read_only;
        }
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
        for partition in by_partition.keys() {
            self.loaded(*partition)?;
        }
        let mut jobs: Vec<(Partition, &mut PartitionFile, Vec<&SinkRecord>)> = self
            .partitions
            .iter_mut()
            .filter_map(|(partition, file)| {
                let records = by_partition.remove(partition)?;
                Some((*partition, file, records))
            })
            .collect();
        jobs.sort_by_key(|(partition, _, _)| *partition);
        // The partitions' files are formatted, written and synced on up to one thread per core:
        // formatting the lines, not the disk, bounds a large batch on a disk that keeps up
        // (profiled: serde_json's string escaping and float formatting). No more threads than
        // cores, so a consumer of many partitions holds no more chunk buffers at once.
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(jobs.len());
        let mut groups: Vec<Vec<_>> = (0..threads).map(|_| Vec::new()).collect();
        for (index, job) in jobs.into_iter().enumerate() {
            groups[index % threads].push(job);
        }
        let write_group = |group: Vec<(Partition, &mut PartitionFile, Vec<&SinkRecord>)>| {
            group
                .into_iter()
                .map(|(partition, file, records)| (partition, file.write_records(&records)))
                .collect::<Vec<_>>()
        };
        let mut results: Vec<(Partition, Result<WriteStats, SinkError>)> = if threads > 1 {
            std::thread::scope(|scope| {
                let handles: Vec<_> = groups
                    .into_iter()
                    .map(|group| scope.spawn(move || write_group(group)))
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|handle| {
                        handle
                            .join()
                            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                    })
                    .collect()
            })
        } else {
            groups.into_iter().flat_map(write_group).collect()
        };
        results.sort_by_key(|(partition, _)| *partition);
        // Every partition was attempted; the first failure (in partition order) is the batch's.
        let mut stats = WriteStats::default();
        for (_, written) in results {
            let written = written?;
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
        quarantine_payload(&self.dir, partition, offset, payload)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::sink::partition_file::APPEND_CHUNK_BYTES;
    use crate::sink::test_support::{P0, append_raw, batch, lines, open_sink, positions, record};

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
    fn a_failing_partition_fails_the_batch_but_not_the_other_partitions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sink = JsonlSink::open(dir.path()).expect("sink opens");
        sink.assign(Partition(0)).expect("assign");
        sink.assign(Partition(1)).expect("assign");
        sink.break_writes(Partition(0));
        let batch = [record(Partition(0), 0, 2), record(Partition(1), 0, 3)];
        assert!(sink.write_batch(&batch).is_err());
        assert_eq!(lines(&dir.path().join("partition-0001.jsonl")).len(), 3);

        // The batch comes again (it was not committed): only what is missing is written.
        sink.assign(Partition(0))
            .expect("reassign reopens the file");
        let stats = sink.write_batch(&batch).expect("replay");
        assert_eq!(
            stats,
            WriteStats {
                written: 2,
                skipped: 3
            }
        );
        assert_eq!(
            positions(&dir.path().join("partition-0000.jsonl")),
            vec![(0, 0), (0, 1)]
        );
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
