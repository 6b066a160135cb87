//! Reading a partition file back: the watermark (the position of its last line) from the end of
//! the file, after cutting away whatever a crash left half written.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use metricstream_backend::{Offset, Partition};
use serde::Deserialize;

use super::{Position, SinkError, io_error};

/// No line we write comes near this: a record is at most 8 MiB and JSON escaping at most
/// multiplies a string by six. A longer "last line" is crash residue, not something to read into
/// memory.
const MAX_LINE_BYTES: u64 = 64 * 1024 * 1024;

/// The fields of a line that locate it; the rest is ignored when reading the watermark back.
#[derive(Deserialize)]
struct LinePosition {
    partition: u32,
    offset: u64,
    index: u64,
}

/// What [`recover_tail`] found.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Recovered {
    /// The file's length after cutting the torn tail.
    pub(super) len: u64,
    pub(super) watermark: Option<Position>,
    pub(super) truncated_bytes: u64,
}

/// Reads the watermark from the end of a partition file, first cutting away whatever a crash
/// left half written.
///
/// Every line is written whole and synced before its record is committed, so a tail that is not
/// a complete, parseable line was never committed and its records will be re-delivered; cutting
/// it is safe. That covers a fragment after the last newline (a torn write) and complete lines
/// that are not JSON at all (a machine crash can leave zero-filled blocks). A complete JSON line
/// that is not ours is an error: the file is not what this sink thinks it is.
pub(super) fn recover_tail(
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

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;

    use super::*;
    use crate::sink::test_support::{P0, append_raw, batch, open_sink, positions, record};
    use crate::sink::{JsonlSink, Sink, SinkRecord};

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
}
