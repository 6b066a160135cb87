//! The report: BENCHMARKS.md and SVG charts rendered from every suite's JSON, so the comparison
//! with the ceilings is always the one measured in the last run.
//!
//! This module owns the run (reading the suites, writing the report) and the queries over the
//! measurements ([`Results`]); its children render them: `goals` (the targets and their
//! verdicts), `markdown` (BENCHMARKS.md), `intake` (the intake protocols' table and target),
//! `spill` (the idle spill's 5 % bound and the spill's accept rate while Kafka is down),
//! `drain_store` (the drain into a store beside the store's own ceiling), `peers` (MetricStream
//! beside the OpenTelemetry Collector and vmagent) and `charts` (the SVG charts).

mod charts;
mod drain_store;
mod goals;
mod intake;
mod markdown;
mod peers;
#[cfg(test)]
mod sample;
mod spill;

use std::fs;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde_json::Value;

use crate::results::{Machine, Measurement, SuiteResults};

#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    /// Where the suites wrote their results (<suite>.json).
    #[arg(long, default_value = "target/bench")]
    pub results_dir: PathBuf,
    /// Where the report goes: <dir>/BENCHMARKS.md, <dir>/bench/report/*.svg and the raw JSON
    /// beside the charts.
    #[arg(long, default_value = ".")]
    pub out_dir: PathBuf,
    /// The command the report says produced it.
    #[arg(long, default_value = "make bench")]
    pub command: String,
    /// Hand-written notes (profiles, fixes with before and after, what limits the rest) placed
    /// after the targets; skipped when the file does not exist.
    #[arg(long, default_value = "bench/analysis.md")]
    pub analysis: PathBuf,
}

const SUITES: [&str; 7] = [
    "http",
    "intake",
    "peers",
    "backend",
    "drain",
    "drain-store",
    "operator",
];
const REPORT_DIR: &str = "bench/report";

pub async fn run(args: ReportArgs) -> anyhow::Result<()> {
    let mut suites = Vec::new();
    for suite in SUITES {
        let path = args.results_dir.join(format!("{suite}.json"));
        if path.is_file() {
            suites.push(SuiteResults::read(&path)?);
        } else {
            eprintln!(
                "report: no {} (the {suite} suite did not run)",
                path.display()
            );
        }
    }
    anyhow::ensure!(
        !suites.is_empty(),
        "no results in {}: run the suites first (make bench)",
        args.results_dir.display()
    );
    let report_dir = args.out_dir.join(REPORT_DIR);
    fs::create_dir_all(&report_dir)
        .with_context(|| format!("creating {}", report_dir.display()))?;
    for suite in &suites {
        suite.write(&report_dir.join(format!("{}.json", suite.suite)))?;
    }
    let results = Results::new(&suites);
    let charts = results.charts(&report_dir)?;
    let analysis = match fs::read_to_string(&args.analysis) {
        Ok(text) => Some(text),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => {
            return Err(error).with_context(|| format!("reading {}", args.analysis.display()));
        }
    };
    let markdown = results.markdown(&args.command, &charts, analysis.as_deref());
    let path = args.out_dir.join("BENCHMARKS.md");
    fs::write(&path, markdown).with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "report: {} and {} charts in {}",
        path.display(),
        charts.len(),
        report_dir.display()
    );
    Ok(())
}

/// Every measurement of the run, with the queries the report asks.
pub struct Results<'a> {
    suites: &'a [SuiteResults],
    all: Vec<&'a Measurement>,
}

/// The HTTP targets in report order, with their display names.
const HTTP_TARGETS: [(&str, &str); 7] = [
    ("noop-http", "no-op HTTP (ceiling)"),
    ("noop-decode", "no-op, decoding the body"),
    ("ingest-file-batch", "ingest → file, batch"),
    ("ingest-file-always", "ingest → file, always"),
    ("ingest-kafka", "ingest → Kafka"),
    ("ingest-kafka-spill", "ingest → Kafka, spill idle"),
    ("ingest-kafka-spill-outage", "ingest → spill, Kafka down"),
];

/// The short names under a chart's bars.
fn short_name(target: &str) -> &'static str {
    match target {
        "noop-http" => "no-op (ceiling)",
        "noop-decode" => "decode only",
        "ingest-file-batch" => "file, batch",
        "ingest-file-always" => "file, always",
        "ingest-kafka" => "Kafka",
        "ingest-kafka-spill" => "Kafka+spill",
        "ingest-kafka-spill-outage" => "Kafka down",
        _ => "?",
    }
}

fn param_i64(measurement: &Measurement, key: &str) -> Option<i64> {
    measurement.params.get(key).and_then(Value::as_i64)
}

fn param_str<'m>(measurement: &'m Measurement, key: &str) -> Option<&'m str> {
    measurement.params.get(key).and_then(Value::as_str)
}

fn figure(measurement: &Measurement, key: &str) -> Option<f64> {
    measurement.figures.get(key).copied()
}

/// A load point of the HTTP suite.
#[derive(Clone, Debug, PartialEq, Eq)]
struct LoadPoint {
    mode: String,
    clients: i64,
    metrics_per_request: i64,
}

impl LoadPoint {
    fn of(measurement: &Measurement) -> Option<Self> {
        Some(Self {
            mode: param_str(measurement, "mode").unwrap_or("rate").to_owned(),
            clients: param_i64(measurement, "clients")?,
            metrics_per_request: param_i64(measurement, "metrics_per_request")?,
        })
    }

    fn describe(&self, rate: Option<i64>) -> String {
        let load = match (self.mode.as_str(), rate) {
            ("max", _) => "maximum throughput".to_owned(),
            (_, Some(rate)) => format!("{rate} req/s offered"),
            _ => "fixed rate".to_owned(),
        };
        format!(
            "{} clients, {} metric{}/request, {load}",
            self.clients,
            self.metrics_per_request,
            if self.metrics_per_request == 1 {
                ""
            } else {
                "s"
            }
        )
    }
}

/// A target of the issue: what was asked, what was measured, whether it held.
#[derive(Clone, Debug, PartialEq)]
pub struct Goal {
    pub what: String,
    pub measured: String,
    pub met: Option<bool>,
}

impl<'a> Results<'a> {
    pub fn new(suites: &'a [SuiteResults]) -> Self {
        let all = suites.iter().flat_map(|s| s.measurements.iter()).collect();
        Self { suites, all }
    }

    fn of<'s>(
        &'s self,
        suite: &'s str,
        target: &'s str,
    ) -> impl Iterator<Item = &'a Measurement> + 's {
        self.all
            .iter()
            .copied()
            .filter(move |m| m.suite == suite && m.target == target)
    }

    fn http(&self, target: &str, point: &LoadPoint) -> Option<&'a Measurement> {
        self.of("http", target)
            .find(|m| LoadPoint::of(m).as_ref() == Some(point))
    }

    fn load_points(&self) -> Vec<LoadPoint> {
        let mut points: Vec<LoadPoint> = self
            .all
            .iter()
            .filter(|m| m.suite == "http")
            .filter_map(|m| LoadPoint::of(m))
            .collect();
        // Fixed-rate points first, by clients, then the maximum-throughput ones.
        points.sort_by_key(|p| (p.mode == "max", p.clients, p.metrics_per_request));
        points.dedup();
        points
    }

    /// The maximum-throughput HTTP measurements of `target` with `clients` clients (a
    /// fixed-rate run says nothing about a ceiling).
    fn max_runs(&self, target: &str, clients: i64) -> Vec<&'a Measurement> {
        self.of("http", target)
            .filter(|m| param_i64(m, "clients") == Some(clients))
            .filter(|m| param_str(m, "mode") == Some("max"))
            .collect()
    }

    fn machine(&self) -> Option<&Machine> {
        self.suites.first().map(|s| &s.machine)
    }
}

fn format_figure(value: f64) -> String {
    if value.abs() >= 100.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}
