//! Loss and duplicates of a drain, counted from the sink by `(partition, offset, index)`
//! positions: every record of the backlog must be there with each of its metrics exactly once.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

/// The position fields of a sink line; the rest of the line is not read.
#[derive(Deserialize)]
struct LinePosition {
    partition: u32,
    offset: u64,
    index: u32,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct SinkCount {
    pub lines: u64,
    /// Bytes of every line.
    pub bytes: u64,
    /// Expected positions missing from the sink.
    pub lost: u64,
    /// Lines beyond the first at a position, plus lines at positions the backlog does not have.
    pub duplicates: u64,
    /// Of `duplicates`: lines at positions the backlog does not have.
    pub unexpected: u64,
}

/// Counts the sink in `dir` against the backlog's records (`(partition, offset)` each) of
/// `metrics_per_record` metrics each.
pub fn count_sink(
    dir: &Path,
    records: &[(u32, u64)],
    metrics_per_record: u32,
) -> anyhow::Result<SinkCount> {
    let slots: HashMap<(u32, u64), usize> = records
        .iter()
        .enumerate()
        .map(|(slot, position)| (*position, slot))
        .collect();
    let per_record = metrics_per_record as usize;
    let mut seen = vec![0u32; records.len() * per_record];
    let mut count = SinkCount::default();
    let files = metricstream_tests::sink::try_sink_files(dir).map_err(anyhow::Error::msg)?;
    let mut line = Vec::new();
    for path in files {
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut number = 0u64;
        loop {
            line.clear();
            let read = reader
                .read_until(b'\n', &mut line)
                .with_context(|| format!("reading {}", path.display()))?;
            if read == 0 {
                break;
            }
            number += 1;
            anyhow::ensure!(
                line.last() == Some(&b'\n'),
                "{} ends with an unterminated line (the consumer had exited)",
                path.display()
            );
            let position: LinePosition = serde_json::from_slice(&line)
                .with_context(|| format!("{} line {number}", path.display()))?;
            count.lines += 1;
            count.bytes += read as u64;
            let slot = slots
                .get(&(position.partition, position.offset))
                .filter(|_| (position.index as usize) < per_record)
                .map(|slot| slot * per_record + position.index as usize);
            match slot {
                Some(slot) => seen[slot] += 1,
                None => count.unexpected += 1,
            }
        }
    }
    count.lost = seen.iter().filter(|&&n| n == 0).count() as u64;
    count.duplicates = count.unexpected
        + seen
            .iter()
            .map(|&n| u64::from(n.saturating_sub(1)))
            .sum::<u64>();
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn line(partition: u32, offset: u64, index: u32) -> String {
        format!(
            "{{\"client\":\"c\",\"name\":\"cpu\",\"value\":1.25,\"timestamp\":1,\"tags\":{{}},\
             \"partition\":{partition},\"offset\":{offset},\"index\":{index}}}\n"
        )
    }

    #[test]
    fn a_complete_sink_has_no_loss_and_no_duplicates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text: String = (0..3)
            .flat_map(|o| (0..2).map(move |i| line(0, o, i)))
            .collect();
        let text_bytes = text.len() as u64;
        fs::write(dir.path().join("partition-0000.jsonl"), text).expect("write");
        let records = [(0, 0), (0, 1), (0, 2)];
        let count = count_sink(dir.path(), &records, 2).expect("counts");
        assert_eq!(
            count,
            SinkCount {
                lines: 6,
                bytes: text_bytes,
                ..SinkCount::default()
            }
        );
    }

    #[test]
    fn missing_repeated_and_foreign_lines_are_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = [
            line(1, 0, 0),
            line(1, 0, 0),
            line(1, 0, 1),
            line(1, 9, 0),
            line(1, 1, 5),
        ]
        .concat();
        let text_bytes = text.len() as u64;
        fs::write(dir.path().join("partition-0001.jsonl"), text).expect("write");
        let records = [(1, 0), (1, 1)];
        let count = count_sink(dir.path(), &records, 2).expect("counts");
        assert_eq!(
            count,
            SinkCount {
                lines: 5,
                bytes: text_bytes,
                lost: 2,
                duplicates: 3,
                unexpected: 2,
            }
        );
    }

    #[test]
    fn an_unterminated_last_line_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut text = line(0, 0, 0);
        text.pop();
        fs::write(dir.path().join("partition-0000.jsonl"), text).expect("write");
        assert!(count_sink(dir.path(), &[(0, 0)], 1).is_err());
    }
}
