//! Counting a sink by position while the consumer writes it: every `(partition, offset, index)`
//! seen and every line. oha sends one body over and over, so metrics cannot be told apart by
//! content; a position is unique per stored metric, so distinct positions are what arrived and
//! lines beyond them are duplicates.
//!
//! A benchmark's sink holds millions of lines, so this reads each file once, incrementally (only
//! what was appended since the last poll), and keeps only the positions, unlike the tests'
//! `metricstream_tests::sink::read_sink`, which parses every line whole on every call.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

/// The part of a sink line that identifies it (serde skips the other fields).
#[derive(Deserialize)]
struct Position {
    partition: u32,
    offset: u64,
    index: u32,
}

#[derive(Default)]
struct FileTail {
    /// Bytes of the file consumed so far.
    read: u64,
    /// The unterminated end of the file at the last read: a line being written.
    partial: Vec<u8>,
}

/// Follows the `*.jsonl` files of a sink directory.
pub struct SinkTail {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileTail>,
    positions: Vec<(u32, u64, u32)>,
}

/// What a settled sink holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SinkCount {
    pub lines: u64,
    pub distinct_positions: u64,
}

impl SinkCount {
    /// Lines beyond the first at their position.
    pub fn duplicates(&self) -> u64 {
        self.lines - self.distinct_positions
    }
}

impl SinkTail {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            files: BTreeMap::new(),
            positions: Vec::new(),
        }
    }

    /// Reads what was appended since the last poll; returns the complete lines seen so far.
    pub fn poll(&mut self) -> anyhow::Result<u64> {
        let files =
            metricstream_tests::sink::try_sink_files(&self.dir).map_err(anyhow::Error::msg)?;
        for path in files {
            let tail = self.files.entry(path.clone()).or_default();
            let mut file = match File::open(&path) {
                Ok(file) => file,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => {
                    return Err(error).with_context(|| format!("opening {}", path.display()));
                }
            };
            file.seek(SeekFrom::Start(tail.read))
                .with_context(|| format!("seeking in {}", path.display()))?;
            let mut bytes = std::mem::take(&mut tail.partial);
            let before = bytes.len();
            file.read_to_end(&mut bytes)
                .with_context(|| format!("reading {}", path.display()))?;
            tail.read += (bytes.len() - before) as u64;
            let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            for (number, line) in bytes[..complete].split(|&b| b == b'\n').enumerate() {
                if line.is_empty() {
                    continue;
                }
                let position: Position = serde_json::from_slice(line).with_context(|| {
                    format!(
                        "{}: a line that is not a sink metric ({} of this read): {:?}",
                        path.display(),
                        number + 1,
                        String::from_utf8_lossy(line)
                    )
                })?;
                self.positions
                    .push((position.partition, position.offset, position.index));
            }
            tail.partial = bytes[complete..].to_vec();
        }
        Ok(self.positions.len() as u64)
    }

    /// The last poll, once every writer has stopped: a file must not end mid-line.
    pub fn finish(mut self) -> anyhow::Result<SinkCount> {
        self.poll()?;
        if let Some((path, tail)) = self.files.iter().find(|(_, tail)| !tail.partial.is_empty()) {
            bail!(
                "{} ends with an unterminated line of {} bytes",
                path.display(),
                tail.partial.len()
            );
        }
        let lines = self.positions.len() as u64;
        self.positions.sort_unstable();
        self.positions.dedup();
        Ok(SinkCount {
            lines,
            distinct_positions: self.positions.len() as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::io::Write;

    fn line(partition: u32, offset: u64, index: u32) -> String {
        format!(
            "{{\"client\":\"c\",\"name\":\"m\",\"value\":1.0,\"timestamp\":1,\"tags\":{{}},\
             \"partition\":{partition},\"offset\":{offset},\"index\":{index}}}\n"
        )
    }

    #[test]
    fn counts_lines_and_distinct_positions_across_incremental_reads() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("partition-0001.jsonl");
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("opening a sink file");
        let mut tail = SinkTail::new(dir.path());
        assert_eq!(tail.poll().expect("empty poll"), 0);

        let torn = line(1, 0, 1);
        let (first_half, second_half) = torn.split_at(20);
        write!(file, "{}{first_half}", line(1, 0, 0)).expect("writing");
        assert_eq!(tail.poll().expect("poll"), 1, "the torn line waits");
        write!(file, "{second_half}{}", line(1, 0, 0)).expect("writing");
        assert_eq!(tail.poll().expect("poll"), 3);
        std::fs::write(dir.path().join("partition-0002.jsonl"), line(2, 5, 0))
            .expect("writing a second file");

        let count = tail.finish().expect("settled");
        assert_eq!(
            count,
            SinkCount {
                lines: 4,
                distinct_positions: 3
            }
        );
        assert_eq!(count.duplicates(), 1);
    }

    #[test]
    fn a_settled_sink_must_not_end_mid_line() {
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::write(dir.path().join("partition-0000.jsonl"), "{\"client\"").expect("writing");
        assert!(SinkTail::new(dir.path()).finish().is_err());
    }
}
