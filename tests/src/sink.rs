//! Reading the consumer's JSON Lines sink back and checking it against what was acknowledged:
//! every acknowledged metric present, none twice, no `(partition, offset, index)` twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::load::{Expected, MetricId, SinkClient};

/// One line of the sink: one metric.
#[derive(Clone, Debug, Deserialize)]
pub struct SinkLine {
    pub client: String,
    pub name: String,
    pub value: f64,
    pub timestamp: Option<i64>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The series' kind, when the protocol that sent it gave one.
    #[serde(default)]
    pub kind: Option<String>,
    pub partition: u32,
    pub offset: u64,
    /// The metric's position within its record.
    pub index: u32,
}

/// How strictly to read the sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// A consumer may be writing: an unterminated last line of a file is skipped.
    Live,
    /// Every consumer has stopped: every byte must belong to a complete, valid line.
    Settled,
}

/// Every line of every `*.jsonl` file under a sink directory.
#[derive(Clone, Debug, Default)]
pub struct SinkContents {
    pub lines: Vec<SinkLine>,
    pub files: Vec<PathBuf>,
    /// Lines whose partition disagrees with their file's name (`partition-NNNN.jsonl`).
    pub misplaced: Vec<String>,
}

/// The `*.jsonl` files under `dir` (recursively), sorted. A missing `dir` has none.
pub fn sink_files(dir: &Path) -> Vec<PathBuf> {
    try_sink_files(dir).unwrap_or_else(|error| panic!("{error}"))
}

/// [`sink_files`], with an error naming the directory that could not be listed.
pub fn try_sink_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(format!("listing {}: {error}", dir.display())),
        };
        for entry in entries {
            let path = entry
                .map_err(|error| format!("listing {}: {error}", dir.display()))?
                .path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "jsonl") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// The number of complete lines (newlines) in the sink: a cheap progress probe.
pub fn count_lines(dir: &Path) -> usize {
    sink_files(dir)
        .iter()
        .map(|file| match fs::read(file) {
            Ok(bytes) => bytes.iter().filter(|&&b| b == b'\n').count(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
            Err(error) => panic!("reading {}: {error}", file.display()),
        })
        .sum()
}

/// Parses every line of the sink; `Err` names the first file and line that is not a valid metric.
pub fn read_sink(dir: &Path, mode: ReadMode) -> Result<SinkContents, String> {
    let mut contents = SinkContents::default();
    for file in try_sink_files(dir)? {
        let bytes = match fs::read(&file) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(format!("reading {}: {error}", file.display())),
        };
        let file_partition = file
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_prefix("partition-"))
            .and_then(|name| name.strip_suffix(".jsonl"))
            .and_then(|number| number.parse::<u32>().ok());
        let complete = match bytes.iter().rposition(|&b| b == b'\n') {
            Some(last_newline) => last_newline + 1,
            None => 0,
        };
        if mode == ReadMode::Settled && complete != bytes.len() {
            return Err(format!(
                "{} ends with an unterminated line of {} bytes: {:?}",
                file.display(),
                bytes.len() - complete,
                String::from_utf8_lossy(&bytes[complete..])
            ));
        }
        for (number, line) in bytes[..complete]
            .split_inclusive(|&b| b == b'\n')
            .enumerate()
        {
            let line = &line[..line.len() - 1];
            let line: SinkLine = serde_json::from_slice(line).map_err(|error| {
                format!(
                    "{} line {}: {error}: {:?}",
                    file.display(),
                    number + 1,
                    String::from_utf8_lossy(line)
                )
            })?;
            if let Some(partition) = file_partition
                && partition != line.partition
            {
                contents.misplaced.push(format!(
                    "{} holds a line of partition {} (offset {})",
                    file.display(),
                    line.partition,
                    line.offset
                ));
            }
            contents.lines.push(line);
        }
        contents.files.push(file);
    }
    Ok(contents)
}

impl SinkContents {
    /// Keeps only the lines `keep` accepts (e.g. one load's, in a sink other writers share);
    /// returns how many were dropped. [`misplaced`](Self::misplaced) stays about every line.
    pub fn retain_lines(&mut self, keep: impl FnMut(&SinkLine) -> bool) -> usize {
        let before = self.lines.len();
        self.lines.retain(keep);
        before - self.lines.len()
    }
}

/// What the sink holds compared with what was acknowledged.
#[derive(Clone, Debug, Default)]
pub struct Verification {
    pub lines: usize,
    pub expected: usize,
    /// Acknowledged metrics found (once or more).
    pub found: usize,
    /// Metrics in the sink the test did not see acknowledged (their request failed after the
    /// record was stored, e.g. the ingest was killed before answering). Allowed.
    pub unacknowledged: usize,
    pub missing: Vec<MetricId>,
    pub duplicated_metrics: Vec<(MetricId, usize)>,
    pub duplicated_positions: Vec<((u32, u64, u32), usize)>,
    /// Anything else wrong: a line whose fields disagree with what was sent, a record mixing
    /// requests, a line that is not a generated metric, a bad `202` body.
    pub problems: Vec<String>,
}

const EXAMPLES: usize = 10;

/// Checks `contents` against `expected`.
pub fn verify(contents: &SinkContents, expected: &Expected) -> Verification {
    let mut verification = Verification {
        lines: contents.lines.len(),
        expected: expected.len(),
        problems: expected.problems.clone(),
        ..Verification::default()
    };
    verification.problems.extend(contents.misplaced.clone());

    let mut by_position: HashMap<(u32, u64, u32), usize> = HashMap::new();
    let mut by_metric: HashMap<MetricId, usize> = HashMap::new();
    // The request each record came from: every metric of a record shares client and seq.
    let mut records: HashMap<(u32, u64), (String, u64)> = HashMap::new();
    // With a shared bearer token: the client id the first line showed, which all must share.
    let mut authenticated_client: Option<&str> = None;

    for line in &contents.lines {
        *by_position
            .entry((line.partition, line.offset, line.index))
            .or_insert(0) += 1;
        let Some(id) = MetricId::from_tags(&line.name, &line.tags) else {
            verification
                .problems
                .push(format!("a line that is not a generated metric: {line:?}"));
            continue;
        };
        match expected.sink_client {
            SinkClient::Tag if line.client != id.client => verification
                .problems
                .push(format!("{id:?} has client {:?} in the sink", line.client)),
            SinkClient::Tag => {}
            SinkClient::Authenticated => match authenticated_client {
                None => authenticated_client = Some(&line.client),
                Some(first) if first != line.client => verification.problems.push(format!(
                    "{id:?} has client {:?} in the sink, other metrics sent with the same token \
                     have {first:?}",
                    line.client
                )),
                Some(_) => {}
            },
        }
        if line.value != id.value() || line.timestamp != Some(id.timestamp()) {
            verification.problems.push(format!(
                "{id:?} has value {} and timestamp {:?} in the sink, sent {} and {}",
                line.value,
                line.timestamp,
                id.value(),
                id.timestamp()
            ));
        }
        if line.index != id.index {
            verification.problems.push(format!(
                "{id:?} has index {} in the sink, it was metric {} of its request",
                line.index, id.index
            ));
        }
        let request = (id.client.clone(), id.seq);
        match records.get(&(line.partition, line.offset)) {
            Some(existing) if *existing != request => verification.problems.push(format!(
                "partition {} offset {} holds metrics of two requests: {existing:?} and \
                 {request:?}",
                line.partition, line.offset
            )),
            Some(_) => {}
            None => {
                records.insert((line.partition, line.offset), request);
            }
        }
        match expected.metrics.get(&id) {
            Some(position) => {
                if position.partition.is_some_and(|p| p != line.partition)
                    || position.offset.is_some_and(|o| o != line.offset)
                {
                    verification.problems.push(format!(
                        "{id:?} was acknowledged at partition {:?} offset {:?} but is at \
                         partition {} offset {} in the sink",
                        position.partition, position.offset, line.partition, line.offset
                    ));
                }
            }
            None => verification.unacknowledged += 1,
        }
        *by_metric.entry(id).or_insert(0) += 1;
    }

    verification.found = expected
        .metrics
        .keys()
        .filter(|id| by_metric.contains_key(*id))
        .count();
    let mut missing: Vec<MetricId> = expected
        .metrics
        .keys()
        .filter(|id| !by_metric.contains_key(*id))
        .cloned()
        .collect();
    missing.sort();
    verification.missing = missing;
    let mut duplicated_metrics: Vec<(MetricId, usize)> =
        by_metric.into_iter().filter(|(_, n)| *n > 1).collect();
    duplicated_metrics.sort();
    verification.duplicated_metrics = duplicated_metrics;
    let mut duplicated_positions: Vec<((u32, u64, u32), usize)> =
        by_position.into_iter().filter(|(_, n)| *n > 1).collect();
    duplicated_positions.sort();
    verification.duplicated_positions = duplicated_positions;
    verification
}

impl Verification {
    /// Every acknowledged metric is present.
    pub fn complete(&self) -> bool {
        self.missing.is_empty()
    }

    pub fn summary(&self) -> String {
        format!(
            "{} lines; {} of {} acknowledged metrics present, {} missing; {} metrics duplicated, \
             {} (partition, offset, index) positions duplicated; {} unacknowledged metrics \
             present; {} other problems",
            self.lines,
            self.found,
            self.expected,
            self.missing.len(),
            self.duplicated_metrics.len(),
            self.duplicated_positions.len(),
            self.unacknowledged,
            self.problems.len()
        )
    }

    /// Every acknowledged metric present once, no position twice, nothing malformed.
    pub fn exactly_once(&self) -> bool {
        self.missing.is_empty()
            && self.duplicated_metrics.is_empty()
            && self.duplicated_positions.is_empty()
            && self.problems.is_empty()
    }

    /// Examples (at most ten of each) of what is missing, duplicated or wrong, one section per
    /// kind, each line ending with a newline; empty when there is nothing to show.
    pub fn details(&self) -> String {
        let mut report = String::new();
        let mut section = |title: &str, items: Vec<String>| {
            if !items.is_empty() {
                report.push_str(&format!("{title}:\n"));
                for item in items.iter().take(EXAMPLES) {
                    report.push_str(&format!("  {item}\n"));
                }
                if items.len() > EXAMPLES {
                    report.push_str(&format!("  ... and {} more\n", items.len() - EXAMPLES));
                }
            }
        };
        section(
            "missing",
            self.missing.iter().map(|id| format!("{id:?}")).collect(),
        );
        section(
            "duplicated metrics",
            self.duplicated_metrics
                .iter()
                .map(|(id, n)| format!("{id:?} x{n}"))
                .collect(),
        );
        section(
            "duplicated (partition, offset, index)",
            self.duplicated_positions
                .iter()
                .map(|(position, n)| format!("{position:?} x{n}"))
                .collect(),
        );
        section("problems", self.problems.clone());
        report
    }

    /// Asserts exactly-once delivery of every acknowledged metric, and nothing malformed.
    pub fn assert_exactly_once(&self) {
        if !self.exactly_once() {
            panic!(
                "the sink is not exactly-once: {}\n{}",
                self.summary(),
                self.details().trim_end()
            );
        }
    }
}

/// Polls the sink until every metric in `expected` is there, and returns what it found then.
/// Fails at the deadline, or at once if the sink holds a line that is not valid JSON.
pub async fn wait_for_sink(dir: &Path, expected: &Expected, timeout: Duration) -> Verification {
    match try_wait_for_sink(dir, expected, timeout).await {
        Ok(verification) => verification,
        Err(verification) => panic!(
            "the sink did not receive every acknowledged metric within {timeout:?}: {}; \
             first missing: {:?}",
            verification.summary(),
            verification.missing.iter().take(5).collect::<Vec<_>>()
        ),
    }
}

/// [`wait_for_sink`] without failing at the deadline: `Err` with what the sink held then, for
/// tests that report more before they fail. Still fails at once on a line that is not valid JSON.
pub async fn try_wait_for_sink(
    dir: &Path,
    expected: &Expected,
    timeout: Duration,
) -> Result<Verification, Verification> {
    let started = Instant::now();
    loop {
        let contents = read_sink(dir, ReadMode::Live)
            .unwrap_or_else(|error| panic!("the sink is malformed: {error}"));
        let verification = verify(&contents, expected);
        if verification.complete() {
            return Ok(verification);
        }
        if started.elapsed() > timeout {
            return Err(verification);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls until the sink holds at least `lines` complete lines; returns the count seen.
pub async fn wait_for_lines(dir: &Path, lines: usize, poll: Duration, timeout: Duration) -> usize {
    let started = Instant::now();
    loop {
        let count = count_lines(dir);
        if count >= lines {
            return count;
        }
        assert!(
            started.elapsed() < timeout,
            "the sink holds {count} lines after {timeout:?}, waited for {lines}"
        );
        tokio::time::sleep(poll).await;
    }
}

/// Reads the settled sink (every consumer stopped) and checks it exactly-once against `expected`.
pub fn assert_settled_exactly_once(dir: &Path, expected: &Expected) -> Verification {
    let contents = read_sink(dir, ReadMode::Settled)
        .unwrap_or_else(|error| panic!("the settled sink is malformed: {error}"));
    let verification = verify(&contents, expected);
    verification.assert_exactly_once();
    verification
}

/// The distinct `(client, name)` pairs of the sink with their line counts.
pub fn names(contents: &SinkContents) -> BTreeMap<(String, String), usize> {
    let mut names = BTreeMap::new();
    for line in &contents.lines {
        *names
            .entry((line.client.clone(), line.name.clone()))
            .or_insert(0) += 1;
    }
    names
}

/// Positions seen more than once, for tests that check the sink without generated metrics.
pub fn duplicated_positions(contents: &SinkContents) -> Vec<(u32, u64, u32)> {
    let mut seen = HashSet::new();
    contents
        .lines
        .iter()
        .map(|l| (l.partition, l.offset, l.index))
        .filter(|position| !seen.insert(*position))
        .collect()
}

/// Where one client's requests broke their order in the sink: each client of the load sends its
/// next request only once the last is answered, so its requests (by `seq`) must sit at growing
/// offsets of its one partition. Says which pairs did not.
pub fn client_order_violations(contents: &SinkContents) -> Vec<String> {
    let mut requests: HashMap<String, BTreeMap<u64, (u32, u64)>> = HashMap::new();
    for line in &contents.lines {
        if let Some(id) = MetricId::from_tags(&line.name, &line.tags) {
            requests
                .entry(id.client)
                .or_default()
                .insert(id.seq, (line.partition, line.offset));
        }
    }
    let mut violations = Vec::new();
    for (client, by_seq) in requests {
        let mut previous: Option<(u64, (u32, u64))> = None;
        for (seq, position) in by_seq {
            if let Some((previous_seq, previous_position)) = previous
                && (previous_position.0 != position.0 || previous_position.1 >= position.1)
            {
                violations.push(format!(
                    "{client}: request {previous_seq} at partition {} offset {}, the later \
                     request {seq} at partition {} offset {}",
                    previous_position.0, previous_position.1, position.0, position.1
                ));
            }
            previous = Some((seq, position));
        }
    }
    violations.sort();
    violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::ExpectedPosition;

    fn line(id: &MetricId, partition: u32, offset: u64) -> SinkLine {
        SinkLine {
            client: id.client.clone(),
            name: crate::load::METRIC_NAME.to_owned(),
            value: id.value(),
            timestamp: Some(id.timestamp()),
            tags: BTreeMap::from([
                ("client".to_owned(), id.client.clone()),
                ("seq".to_owned(), id.seq.to_string()),
                ("i".to_owned(), id.index.to_string()),
            ]),
            kind: None,
            partition,
            offset,
            index: id.index,
        }
    }

    fn expected(ids: &[&MetricId], partition: u32, offset: u64) -> Expected {
        let mut expected = Expected::default();
        for id in ids {
            expected.insert(
                (*id).clone(),
                ExpectedPosition {
                    partition: Some(partition),
                    offset: Some(offset),
                },
            );
        }
        expected
    }

    fn contents(lines: Vec<SinkLine>) -> SinkContents {
        SinkContents {
            lines,
            ..SinkContents::default()
        }
    }

    #[test]
    fn exactly_once_sink_passes() {
        let a = MetricId::new("c", 0, 0);
        let b = MetricId::new("c", 0, 1);
        let verification = verify(
            &contents(vec![line(&a, 1, 7), line(&b, 1, 7)]),
            &expected(&[&a, &b], 1, 7),
        );
        verification.assert_exactly_once();
        assert_eq!(verification.found, 2);
    }

    #[test]
    fn missing_duplicated_and_misplaced_metrics_are_reported() {
        let a = MetricId::new("c", 0, 0);
        let b = MetricId::new("c", 0, 1);
        let verification = verify(
            &contents(vec![line(&a, 1, 7), line(&a, 1, 7)]),
            &expected(&[&a, &b], 1, 7),
        );
        assert_eq!(verification.missing, vec![b]);
        assert_eq!(verification.duplicated_metrics, vec![(a.clone(), 2)]);
        assert_eq!(verification.duplicated_positions, vec![((1, 7, 0), 2)]);

        let verification = verify(&contents(vec![line(&a, 2, 7)]), &expected(&[&a], 1, 7));
        assert_eq!(
            verification.problems.len(),
            1,
            "{:?}",
            verification.problems
        );
    }

    #[test]
    fn altered_values_and_mixed_records_are_reported() {
        let a = MetricId::new("c", 0, 0);
        let other = MetricId::new("d", 3, 1);
        let mut altered = line(&a, 1, 7);
        altered.value += 1.0;
        let verification = verify(
            &contents(vec![altered, line(&other, 1, 7)]),
            &expected(&[&a], 1, 7),
        );
        assert_eq!(verification.unacknowledged, 1);
        assert_eq!(
            verification.problems.len(),
            2,
            "a changed value and two requests in one record: {:?}",
            verification.problems
        );
    }

    #[test]
    fn with_a_shared_token_every_metric_must_show_one_client_whichever_it_is() {
        let a = MetricId::new("load-0", 0, 0);
        let b = MetricId::new("load-1", 0, 0);
        let as_client = |id: &MetricId, client: &str, offset: u64| {
            let mut line = line(id, 1, offset);
            line.client = client.to_owned();
            line
        };
        let mut expected = expected(&[&a], 1, 7);
        expected.insert(
            b.clone(),
            ExpectedPosition {
                partition: Some(1),
                offset: Some(8),
            },
        );

        // By the tag (open mode), the token's client is wrong for both.
        let lines = vec![as_client(&a, "team", 7), as_client(&b, "team", 8)];
        assert_eq!(
            verify(&contents(lines.clone()), &expected).problems.len(),
            2
        );

        expected.sink_client = SinkClient::Authenticated;
        verify(&contents(lines), &expected).assert_exactly_once();
        let mixed = vec![as_client(&a, "team", 7), as_client(&b, "other", 8)];
        assert_eq!(verify(&contents(mixed), &expected).problems.len(), 1);
    }

    #[test]
    fn retained_lines_leave_the_others_out_of_the_check() {
        let mine = MetricId::new("run-0", 0, 0);
        let theirs = MetricId::new("earlier-0", 0, 0);
        let mut sink = contents(vec![line(&mine, 1, 7), line(&theirs, 1, 3)]);
        let dropped = sink.retain_lines(|line| line.tags.get("client") == Some(&mine.client));
        assert_eq!(dropped, 1);
        let verification = verify(&sink, &expected(&[&mine], 1, 7));
        verification.assert_exactly_once();
        assert_eq!(verification.unacknowledged, 0);
    }

    #[test]
    fn details_show_examples_only_of_what_went_wrong() {
        let a = MetricId::new("c", 0, 0);
        let b = MetricId::new("c", 0, 1);
        let clean = verify(&contents(vec![line(&a, 1, 7)]), &expected(&[&a], 1, 7));
        assert!(clean.exactly_once());
        assert_eq!(clean.details(), "");
        let broken = verify(&contents(vec![line(&a, 1, 7)]), &expected(&[&a, &b], 1, 7));
        assert!(!broken.exactly_once());
        assert_eq!(broken.details(), format!("missing:\n  {b:?}\n"));
    }

    #[test]
    fn settled_reads_refuse_a_torn_last_line_that_live_reads_skip() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let a = MetricId::new("c", 0, 0);
        let mut text = serde_json::to_string(&serde_json::json!({
            "client": "c", "name": "m", "value": a.value(), "timestamp": a.timestamp(),
            "tags": {"client": "c", "seq": "0", "i": "0"},
            "partition": 0, "offset": 0, "index": 0,
        }))
        .expect("json");
        text.push_str("\n{\"client\":\"c\",\"na");
        fs::write(dir.path().join("partition-0000.jsonl"), text).expect("writing a sink file");

        let live = read_sink(dir.path(), ReadMode::Live).expect("live read");
        assert_eq!(live.lines.len(), 1);
        assert!(read_sink(dir.path(), ReadMode::Settled).is_err());
        assert_eq!(count_lines(dir.path()), 1);
    }
}
