//! The remote-write sink's stores side by side: VictoriaMetrics ([`crate::victoriametrics`]) and
//! Prometheus' remote-write receiver ([`crate::prometheus`]) behind one [`Store`], the check that
//! a load reached one exactly once, and the sink's dead letters read back.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::load::{BASE_TIMESTAMP_MS, METRIC_NAME};
use crate::prometheus::{OutOfOrder, Prometheus};
use crate::victoriametrics::{ExportedSeries, VictoriaMetrics};
use crate::{Expected, MetricId, TestDir};

/// Which store a test writes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// VictoriaMetrics single-node with `-dedup.minScrapeInterval=1ms`.
    VictoriaMetrics,
    /// Prometheus with its remote-write receiver on and the default (no) out-of-order window.
    Prometheus,
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::VictoriaMetrics => "VictoriaMetrics",
            Self::Prometheus => "Prometheus",
        })
    }
}

/// A running store.
pub enum Store {
    VictoriaMetrics(VictoriaMetrics),
    Prometheus(Prometheus),
}

/// Wide enough for every timestamp the load and the tests write (the load's are
/// `BASE_TIMESTAMP_MS + seq`): Prometheus is read through a range vector over this window.
const READ_WINDOW_MS: (i64, i64) = (
    BASE_TIMESTAMP_MS - 24 * 3_600_000,
    BASE_TIMESTAMP_MS + 24 * 3_600_000,
);

impl Store {
    /// Starts `kind` with its data under `dir`.
    pub async fn start(kind: StoreKind, dir: &TestDir) -> Self {
        match kind {
            StoreKind::VictoriaMetrics => {
                Self::VictoriaMetrics(VictoriaMetrics::start(dir.path(), &dir.logs_dir()).await)
            }
            StoreKind::Prometheus => Self::Prometheus(
                Prometheus::start_store(
                    dir.path(),
                    &dir.logs_dir(),
                    "prometheus",
                    OutOfOrder::Refused,
                )
                .await,
            ),
        }
    }

    pub fn write_url(&self) -> String {
        match self {
            Self::VictoriaMetrics(store) => store.write_url(),
            Self::Prometheus(store) => store.write_url(),
        }
    }

    /// Every sample of the load's metric (`__name__="m"`) the store holds, read until there are
    /// at least `samples` or `timeout` passes: VictoriaMetrics' `/api/v1/export`, Prometheus'
    /// range-vector query (both give raw samples with millisecond timestamps).
    pub async fn wait_for_load_samples(
        &self,
        samples: usize,
        timeout: Duration,
    ) -> Vec<ExportedSeries> {
        let selector = format!(r#"{{__name__="{METRIC_NAME}"}}"#);
        match self {
            Self::VictoriaMetrics(store) => {
                store.wait_for_samples(&selector, samples, timeout).await
            }
            Self::Prometheus(store) => {
                store
                    .wait_for_samples(&selector, READ_WINDOW_MS, samples, timeout)
                    .await
            }
        }
    }
}

/// Every expected metric once in `series`, with exactly its labels, value and timestamp, and no
/// other series of the load's metric.
pub fn assert_exactly_once_in_store(series: &[ExportedSeries], expected: &Expected) {
    let problems = store_problems(series, expected);
    assert!(
        problems.is_empty(),
        "{} problems (the first 20): {:#?}",
        problems.len(),
        &problems[..problems.len().min(20)]
    );
}

/// What keeps `series` (a store's export of the load's metric) from holding every expected metric
/// exactly once with exactly its labels, value and timestamp and nothing else: one line a
/// problem, the missing ones counted in one line; empty when it does.
pub fn store_problems(series: &[ExportedSeries], expected: &Expected) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    for exported in series {
        let name = exported.metric.get("__name__").map_or("", String::as_str);
        let Some(id) = MetricId::from_tags(name, &exported.metric) else {
            problems.push(format!(
                "a series the load did not send: {:?}",
                exported.metric
            ));
            continue;
        };
        let labels: Vec<&str> = exported.metric.keys().map(String::as_str).collect();
        if labels != ["__name__", "client", "i", "seq"] {
            problems.push(format!("{id:?} has the labels {labels:?}"));
        }
        if exported.values != [id.value()] || exported.timestamps != [id.timestamp()] {
            problems.push(format!(
                "{id:?}: values {:?} at {:?}, expected [{}] at [{}]",
                exported.values,
                exported.timestamps,
                id.value(),
                id.timestamp()
            ));
        }
        if !expected.metrics.contains_key(&id) {
            problems.push(format!("{id:?} is in the store but was not acknowledged"));
        }
        if !seen.insert(id.clone()) {
            problems.push(format!("{id:?} is read back as two series"));
        }
    }
    let missing = expected
        .metrics
        .keys()
        .filter(|id| !seen.contains(*id))
        .count();
    if missing > 0 {
        problems.push(format!(
            "{missing} acknowledged metrics are not in the store"
        ));
    }
    problems
}

/// One line of `<sink-dir>/dead-letters/partition-NNNN.jsonl` (docs/sink.md#dead-letters).
#[derive(Clone, Debug, Deserialize)]
pub struct DeadLetter {
    pub partition: u32,
    pub offset: u64,
    pub index: u32,
    pub client: String,
    pub name: String,
    pub value: Option<f64>,
    pub timestamp: Option<i64>,
    pub tags: BTreeMap<String, String>,
    pub status: Option<u16>,
    pub reason: String,
}

/// Every dead letter under `sink_dir` (none when the directory does not exist); panics on a line
/// that is not a dead letter.
pub fn read_dead_letters(sink_dir: &Path) -> Vec<DeadLetter> {
    let dir = sink_dir.join("dead-letters");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut letters = Vec::new();
    for entry in entries {
        let path = entry.expect("listing the dead letters").path();
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
        for line in text.lines() {
            letters.push(serde_json::from_str(line).unwrap_or_else(|error| {
                panic!("{}: {line:?} is not a dead letter: {error}", path.display())
            }));
        }
    }
    letters
}
