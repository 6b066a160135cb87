//! The report: BENCHMARKS.md and SVG charts rendered from every suite's JSON, so the comparison
//! with the ceilings is always the one measured in the last run.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use plotters::prelude::*;
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

const SUITES: [&str; 4] = ["http", "backend", "drain", "operator"];
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
const HTTP_TARGETS: [(&str, &str); 4] = [
    ("noop-http", "no-op HTTP (ceiling)"),
    ("ingest-file-batch", "ingest → file, batch"),
    ("ingest-file-always", "ingest → file, always"),
    ("ingest-kafka", "ingest → Kafka"),
];

/// The short names under a chart's bars.
fn short_name(target: &str) -> &'static str {
    match target {
        "noop-http" => "no-op (ceiling)",
        "ingest-file-batch" => "file, batch",
        "ingest-file-always" => "file, always",
        "ingest-kafka" => "Kafka",
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

    /// The issue's targets, each with its verdict (`None`: not measured in this run).
    pub fn goals(&self) -> Vec<Goal> {
        let mut goals = Vec::new();
        // Each request size on its own: a ratio per metrics-per-request, met only if all are.
        let ratio_goal = |goals: &mut Vec<Goal>, target: &str, name: &str| {
            let what = format!("{name} ≥ 50 % of the no-op HTTP ceiling's req/s at 200 clients");
            let ratios: Vec<(i64, f64, f64)> = self
                .max_runs(target, 200)
                .into_iter()
                .filter_map(|ingest| {
                    let metrics = param_i64(ingest, "metrics_per_request")?;
                    let ceiling = self
                        .max_runs("noop-http", 200)
                        .into_iter()
                        .find(|c| param_i64(c, "metrics_per_request") == Some(metrics))?;
                    Some((
                        metrics,
                        figure(ingest, "requests_per_sec")?,
                        figure(ceiling, "requests_per_sec")?,
                    ))
                })
                .collect();
            goals.push(Goal {
                what,
                measured: if ratios.is_empty() {
                    "not measured (no maximum-throughput run with 200 clients)".into()
                } else {
                    ratios
                        .iter()
                        .map(|(metrics, ingest, ceiling)| {
                            format!(
                                "{metrics} metrics/request: {ingest:.0} of {ceiling:.0} req/s = {:.0} %",
                                ingest / ceiling * 100.0
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; ")
                },
                met: (!ratios.is_empty())
                    .then(|| ratios.iter().all(|(_, ingest, ceiling)| ingest / ceiling >= 0.5)),
            });
        };
        ratio_goal(&mut goals, "ingest-file-batch", "ingest → file (batch)");

        let p99s: Vec<(i64, f64)> = self
            .of("http", "ingest-file-batch")
            .filter(|m| param_i64(m, "clients") == Some(20) && param_str(m, "mode") != Some("max"))
            .filter_map(|m| Some((param_i64(m, "metrics_per_request")?, figure(m, "p99_ms")?)))
            .collect();
        goals.push(Goal {
            what: "ingest → file (batch) p99 ≤ 10 ms at 20 clients".into(),
            measured: if p99s.is_empty() {
                "not measured".into()
            } else {
                p99s.iter()
                    .map(|(metrics, p99)| format!("{p99:.1} ms ({metrics} metrics/request)"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            met: (!p99s.is_empty()).then(|| p99s.iter().all(|(_, p99)| *p99 <= 10.0)),
        });
        ratio_goal(&mut goals, "ingest-kafka", "ingest → Kafka");

        for (consumer, bare, write, name) in [
            ("consumer-file", "bare-read-file", "bare-write-file", "file"),
            (
                "consumer-kafka",
                "bare-read-kafka",
                "bare-write-kafka",
                "Kafka",
            ),
        ] {
            let what = format!("consumer drain ({name}) ≥ 50 % of a bare read");
            let pair = (
                self.of("drain", consumer).next(),
                self.of("drain", bare).next(),
            );
            goals.push(match pair {
                (Some(c), Some(b)) => {
                    let (c_mps, b_mps) = (
                        figure(c, "metrics_per_sec").unwrap_or(0.0),
                        figure(b, "metrics_per_sec").unwrap_or(0.0),
                    );
                    let ratio = if b_mps > 0.0 { c_mps / b_mps } else { 0.0 };
                    // The sink writes more bytes than the queue holds; what the disk takes to
                    // write them alone is the other bound, shown beside the goal's ratio.
                    let of_write = self
                        .of("drain", write)
                        .next()
                        .and_then(|w| figure(w, "metrics_per_sec"))
                        .filter(|w_mps| *w_mps > 0.0)
                        .map(|w_mps| {
                            format!(
                                "; {:.0} % of writing the sink's bytes alone ({w_mps:.0}/s)",
                                c_mps / w_mps * 100.0
                            )
                        })
                        .unwrap_or_default();
                    Goal {
                        what,
                        measured: format!(
                            "{c_mps:.0} vs {b_mps:.0} metrics/s: {:.0} %{of_write}",
                            ratio * 100.0
                        ),
                        met: Some(ratio >= 0.5),
                    }
                }
                _ => Goal {
                    what,
                    measured: "not measured".into(),
                    met: None,
                },
            });
        }

        for (prefix, name) in [("ingest-", "ingest"), ("consumer-", "consumer")] {
            let peak = self
                .all
                .iter()
                .filter(|m| m.suite == "http" || m.suite == "drain")
                .filter_map(|m| {
                    let key = if m.target.starts_with(prefix) {
                        "rss_peak_mib"
                    } else if prefix == "consumer-" && m.target.starts_with("ingest-") {
                        "consumer_rss_peak_mib"
                    } else {
                        return None;
                    };
                    figure(m, key)
                })
                .fold(None, |peak: Option<f64>, rss| {
                    Some(peak.map_or(rss, |p| p.max(rss)))
                });
            goals.push(Goal {
                what: format!("{name} RSS ≤ 64 MiB under the heaviest load"),
                measured: peak.map_or("not measured".into(), |p| format!("peak {p:.1} MiB")),
                met: peak.map(|p| p <= 64.0),
            });
        }

        let operator = self
            .of("operator", "operator")
            .find(|m| param_i64(m, "streams") == Some(500));
        goals.push(match operator {
            Some(m) => {
                // Reconciled: every child created and every status written; a run that timed
                // out has neither figure.
                let seconds = match (
                    figure(m, "seconds_to_children"),
                    figure(m, "seconds_to_status"),
                ) {
                    (Some(children), Some(status)) => children.max(status),
                    (Some(children), None) => children,
                    _ => f64::INFINITY,
                };
                let rss = figure(m, "rss_peak_mib").unwrap_or(f64::INFINITY);
                Goal {
                    what: "operator: 500 MetricStreams reconciled in ≤ 60 s, RSS ≤ 128 MiB".into(),
                    measured: format!("{seconds:.1} s, {rss:.1} MiB"),
                    met: Some(seconds <= 60.0 && rss <= 128.0),
                }
            }
            None => Goal {
                what: "operator: 500 MetricStreams reconciled in ≤ 60 s, RSS ≤ 128 MiB".into(),
                measured: "not measured".into(),
                met: None,
            },
        });

        let (lost, duplicates, counted) = self.all.iter().fold((0.0, 0.0, 0), |acc, m| {
            match (figure(m, "lost"), figure(m, "duplicates")) {
                (None, None) => acc,
                (lost, duplicates) => (
                    acc.0 + lost.unwrap_or(0.0),
                    acc.1 + duplicates.unwrap_or(0.0),
                    acc.2 + 1,
                ),
            }
        });
        goals.push(Goal {
            what: "no metric lost or duplicated in any run (counted from the sink)".into(),
            measured: if counted == 0 {
                "not measured".into()
            } else {
                format!("{lost:.0} lost, {duplicates:.0} duplicated over {counted} runs")
            },
            met: (counted > 0).then_some(lost == 0.0 && duplicates == 0.0),
        });
        goals
    }

    /// Renders the charts into `dir`; returns (file name, caption) of each.
    fn charts(&self, dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
        let mut charts = Vec::new();
        let points = self.load_points();
        if !points.is_empty() {
            let file = "http-throughput.svg";
            self.throughput_chart(&dir.join(file), &points)?;
            charts.push((
                file.to_owned(),
                "Requests/s per target and load point; the no-op HTTP server is the ceiling".into(),
            ));
            let rate_points: Vec<LoadPoint> =
                points.iter().filter(|p| p.mode != "max").cloned().collect();
            if !rate_points.is_empty() {
                let file = "http-latency.svg";
                self.latency_chart(&dir.join(file), &rate_points)?;
                charts.push((
                    file.to_owned(),
                    "Latency percentiles (corrected for coordinated omission), log scale".into(),
                ));
            }
        }
        let drain: Vec<(String, f64, bool)> = [
            ("bare-read-file", "bare read, file", true),
            ("bare-write-file", "bare write of the sink's bytes", true),
            ("consumer-file", "consumer, file", false),
            ("bare-read-kafka", "bare read, Kafka", true),
            ("bare-write-kafka", "bare write of the sink's bytes", true),
            ("consumer-kafka", "consumer, Kafka", false),
        ]
        .iter()
        .filter_map(|(target, name, ceiling)| {
            let m = self.of("drain", target).next()?;
            Some(((*name).to_owned(), figure(m, "metrics_per_sec")?, *ceiling))
        })
        .collect();
        if !drain.is_empty() {
            let file = "drain.svg";
            bar_chart_file(
                &dir.join(file),
                (900, 420),
                "Draining one million metrics",
                "metrics/s",
                &drain,
            )?;
            charts.push((
                file.to_owned(),
                "Consumer drain beside a bare read of the same data".into(),
            ));
        }
        let operator: Vec<(String, f64, bool)> = {
            let mut runs: Vec<&Measurement> = self.of("operator", "operator").collect();
            runs.sort_by_key(|m| param_i64(m, "streams"));
            runs.iter()
                .filter_map(|m| {
                    Some((
                        format!("{} streams", param_i64(m, "streams")?),
                        figure(m, "seconds_to_children")?,
                        false,
                    ))
                })
                .collect()
        };
        if !operator.is_empty() {
            let file = "operator.svg";
            bar_chart_file(
                &dir.join(file),
                (700, 400),
                "Apply to all children created",
                "seconds",
                &operator,
            )?;
            charts.push((
                file.to_owned(),
                "Operator: seconds from apply to every child".into(),
            ));
        }
        Ok(charts)
    }

    fn throughput_chart(&self, path: &Path, points: &[LoadPoint]) -> anyhow::Result<()> {
        let columns = 2;
        let rows = points.len().div_ceil(columns);
        let root = SVGBackend::new(path, (1100, 340 * rows as u32)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        for (area, point) in root.split_evenly((rows, columns)).iter().zip(points) {
            let bars: Vec<(String, f64, bool)> = HTTP_TARGETS
                .iter()
                .filter_map(|(target, _)| {
                    let m = self.http(target, point)?;
                    Some((
                        short_name(target).to_owned(),
                        figure(m, "requests_per_sec")?,
                        *target == "noop-http",
                    ))
                })
                .collect();
            let rate = HTTP_TARGETS
                .iter()
                .find_map(|(target, _)| param_i64(self.http(target, point)?, "rate"));
            bar_panel(area, &point.describe(rate), "requests/s", &bars)?;
        }
        root.present().map_err(plot_error)?;
        Ok(())
    }

    fn latency_chart(&self, path: &Path, points: &[LoadPoint]) -> anyhow::Result<()> {
        let columns = 2;
        let rows = points.len().div_ceil(columns);
        let root = SVGBackend::new(path, (1100, 340 * rows as u32)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        for (area, point) in root.split_evenly((rows, columns)).iter().zip(points) {
            let series: Vec<(String, Vec<f64>)> = HTTP_TARGETS
                .iter()
                .filter_map(|(target, name)| {
                    let m = self.http(target, point)?;
                    Some((
                        (*name).to_owned(),
                        vec![
                            figure(m, "p50_ms")?,
                            figure(m, "p99_ms")?,
                            figure(m, "p999_ms")?,
                        ],
                    ))
                })
                .collect();
            let rate = HTTP_TARGETS
                .iter()
                .find_map(|(target, _)| param_i64(self.http(target, point)?, "rate"));
            line_panel(
                area,
                &point.describe(rate),
                &["p50", "p99", "p99.9"],
                &series,
            )?;
        }
        root.present().map_err(plot_error)?;
        Ok(())
    }

    pub fn markdown(
        &self,
        command: &str,
        charts: &[(String, String)],
        analysis: Option<&str>,
    ) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# Benchmarks\n");
        let _ = writeln!(
            md,
            "Generated by `{command}` (`metricstream-bench report`) from the raw results in \
             `{REPORT_DIR}/*.json`; every ceiling was measured in the same run on the same \
             machine. Do not edit by hand: run `{command}` again.\n"
        );
        if let Some(machine) = self.machine() {
            let started = self
                .suites
                .iter()
                .map(|s| s.started.as_str())
                .min()
                .unwrap_or("?");
            let _ = writeln!(
                md,
                "Run started {started} on {} cores ({}), {:.0} GiB, Linux {}.\n",
                machine.cores, machine.cpu_model, machine.memory_gib, machine.kernel
            );
        }
        let _ = writeln!(md, "## Targets\n");
        let _ = writeln!(md, "| target | measured | met |\n|---|---|---|");
        for goal in self.goals() {
            let verdict = match goal.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "not measured",
            };
            let _ = writeln!(md, "| {} | {} | {verdict} |", goal.what, goal.measured);
        }
        let _ = writeln!(md);
        for (file, caption) in charts {
            let _ = writeln!(md, "![{caption}]({REPORT_DIR}/{file})\n\n*{caption}.*\n");
        }
        if let Some(analysis) = analysis {
            let _ = writeln!(md, "{}\n", analysis.trim_end());
        }
        self.http_tables(&mut md);
        self.backend_ratios(&mut md);
        self.table(&mut md, "backend", "Backend ceilings");
        self.table(&mut md, "drain", "Consumer drain");
        self.table(&mut md, "operator", "Operator");
        md
    }

    fn http_tables(&self, md: &mut String) {
        let points = self.load_points();
        if points.is_empty() {
            return;
        }
        let _ = writeln!(md, "## HTTP: ingest beside the no-op ceiling\n");
        for point in points {
            let rate = HTTP_TARGETS
                .iter()
                .find_map(|(target, _)| param_i64(self.http(target, &point)?, "rate"));
            let ceiling = self
                .http("noop-http", &point)
                .and_then(|m| figure(m, "requests_per_sec"));
            let _ = writeln!(md, "### {}\n", point.describe(rate));
            let _ = writeln!(
                md,
                "| target | req/s | of ceiling | metrics/s | p50 ms | p99 ms | p99.9 ms | errors | lost | duplicates |\n|---|---|---|---|---|---|---|---|---|---|"
            );
            for (target, name) in HTTP_TARGETS {
                let Some(m) = self.http(target, &point) else {
                    continue;
                };
                let rps = figure(m, "requests_per_sec");
                let share = match (rps, ceiling) {
                    (Some(r), Some(c)) if c > 0.0 => format!("{:.0} %", r / c * 100.0),
                    _ => "–".into(),
                };
                let cell = |key: &str, digits: usize| {
                    figure(m, key).map_or("–".to_owned(), |v| format!("{v:.digits$}"))
                };
                let _ = writeln!(
                    md,
                    "| {name} | {} | {share} | {} | {} | {} | {} | {} | {} | {} |",
                    cell("requests_per_sec", 0),
                    cell("metrics_per_sec", 0),
                    cell("p50_ms", 2),
                    cell("p99_ms", 2),
                    cell("p999_ms", 2),
                    cell("errors", 0),
                    cell("lost", 0),
                    cell("duplicates", 0),
                );
            }
            let _ = writeln!(md);
        }
        let commands: Vec<&str> = self
            .all
            .iter()
            .filter(|m| m.suite == "http")
            .map(|m| m.command.as_str())
            .take(1)
            .collect();
        if let Some(command) = commands.first() {
            let _ = writeln!(
                md,
                "One of the load generator's command lines:\n\n```\n{command}\n```\n"
            );
        }
    }

    /// Ingest's maximum throughput as a share of the bare backend doing the same work: the
    /// fdatasync loop at the batch size the ingest's group commit reached, Kafka's
    /// ProducerPerformance at the same record size.
    fn backend_ratios(&self, md: &mut String) {
        let mut rows = Vec::new();
        for ingest in self
            .all
            .iter()
            .copied()
            .filter(|m| m.suite == "http" && param_str(m, "mode") == Some("max"))
        {
            let Some(metrics) = param_i64(ingest, "metrics_per_request") else {
                continue;
            };
            let Some(rps) = figure(ingest, "requests_per_sec") else {
                continue;
            };
            let same_size = |m: &&Measurement| param_i64(m, "metrics_per_record") == Some(metrics);
            let ceiling = match ingest.target.as_str() {
                "ingest-file-batch" | "ingest-file-always" => {
                    // `always` syncs every record; `batch` reached records_per_sync.
                    let batch = if ingest.target == "ingest-file-always" {
                        1.0
                    } else {
                        figure(ingest, "records_per_sync").unwrap_or(1.0)
                    };
                    self.of("backend", "fdatasync")
                        .filter(same_size)
                        .min_by(|a, b| {
                            let distance = |m: &Measurement| {
                                (param_i64(m, "records_per_sync").unwrap_or(1) as f64 - batch).abs()
                            };
                            distance(a).total_cmp(&distance(b))
                        })
                }
                "ingest-kafka" => self.of("backend", "kafka-producer-perf").find(same_size),
                _ => None,
            };
            let Some(ceiling) = ceiling else {
                continue;
            };
            let Some(ceiling_rps) = figure(ceiling, "records_per_sec") else {
                continue;
            };
            let describe = match param_i64(ceiling, "records_per_sync") {
                Some(batch) => format!("{} ({batch} records per fdatasync)", ceiling.target),
                None => ceiling.target.clone(),
            };
            rows.push(format!(
                "| {} | {metrics} | {} | {rps:.0} | {describe} | {ceiling_rps:.0} | {:.0} % |",
                ingest.target,
                param_i64(ingest, "clients").unwrap_or(0),
                rps / ceiling_rps * 100.0
            ));
        }
        if rows.is_empty() {
            return;
        }
        let _ = writeln!(
            md,
            "## Ingest as a share of its backend's ceiling
"
        );
        let _ = writeln!(
            md,
            "One request is one queue record. The file ceiling is the bare append + fdatasync \
             loop at the batch size nearest to what the ingest's group commit reached \
             (`records_per_sync`, from its metrics; `always` syncs each record); the Kafka \
             ceiling is ProducerPerformance with the same record size.\n"
        );
        let _ = writeln!(
            md,
            "| ingest | metrics/request | clients | records/s | ceiling | ceiling records/s | share |\n|---|---|---|---|---|---|---|"
        );
        for row in rows {
            let _ = writeln!(md, "{row}");
        }
        let _ = writeln!(md);
    }

    /// A generic table of a suite: one row per measurement, one column per figure.
    fn table(&self, md: &mut String, suite: &str, title: &str) {
        let rows: Vec<&Measurement> = self
            .all
            .iter()
            .copied()
            .filter(|m| m.suite == suite)
            .collect();
        if rows.is_empty() {
            return;
        }
        let mut figure_names: Vec<&str> = rows
            .iter()
            .flat_map(|m| m.figures.keys().map(String::as_str))
            .collect();
        figure_names.sort_unstable();
        figure_names.dedup();
        let _ = writeln!(md, "## {title}\n");
        let _ = writeln!(
            md,
            "| target | parameters | {} |\n|---|---|{}",
            figure_names.join(" | "),
            "---|".repeat(figure_names.len())
        );
        for m in &rows {
            let params: Vec<String> = m
                .params
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{k}={}",
                        v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                    )
                })
                .collect();
            let cells: Vec<String> = figure_names
                .iter()
                .map(|name| figure(m, name).map_or("–".to_owned(), format_figure))
                .collect();
            let _ = writeln!(
                md,
                "| {} | {} | {} |",
                m.target,
                params.join(", "),
                cells.join(" | ")
            );
        }
        let _ = writeln!(md, "\nCommands:\n");
        let mut commands: Vec<&str> = rows.iter().map(|m| m.command.as_str()).collect();
        commands.dedup();
        for command in commands {
            let _ = writeln!(md, "- `{command}`");
        }
        let _ = writeln!(md);
    }
}

fn format_figure(value: f64) -> String {
    if value.abs() >= 100.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

fn plot_error<E: std::fmt::Debug>(error: E) -> anyhow::Error {
    anyhow::anyhow!("drawing a chart: {error:?}")
}

const CEILING_COLOR: RGBColor = RGBColor(150, 150, 150);
const SERIES_COLORS: [RGBColor; 4] = [
    RGBColor(120, 120, 120),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
];

/// `count` segments on the x axis (a segmented `0..n` range draws n + 1).
fn segments(
    count: usize,
) -> plotters::coord::ranged1d::SegmentedCoord<plotters::coord::types::RangedCoordusize> {
    (0..count.saturating_sub(1).max(1)).into_segmented()
}

fn bar_chart_file(
    path: &Path,
    size: (u32, u32),
    title: &str,
    unit: &str,
    bars: &[(String, f64, bool)],
) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    bar_panel(&root, title, unit, bars)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

/// One bar per entry; ceilings grey, the rest blue, each labelled with its value.
fn bar_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    unit: &str,
    bars: &[(String, f64, bool)],
) -> anyhow::Result<()> {
    if bars.is_empty() {
        return Ok(());
    }
    let top = bars
        .iter()
        .map(|(_, v, _)| *v)
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.15;
    let names: Vec<String> = bars.iter().map(|(name, _, _)| name.clone()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(segments(bars.len()), 0.0..top)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc(unit)
        .y_label_formatter(&|value| format_figure(*value))
        .x_label_formatter(&|segment| match segment {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                names.get(*i).cloned().unwrap_or_default()
            }
            SegmentValue::Last => String::new(),
        })
        .draw()
        .map_err(plot_error)?;
    for (i, (_, value, ceiling)) in bars.iter().enumerate() {
        let color = if *ceiling {
            CEILING_COLOR
        } else {
            SERIES_COLORS[1]
        };
        let mut bar = Rectangle::new(
            [
                (SegmentValue::Exact(i), 0.0),
                (SegmentValue::Exact(i + 1), *value),
            ],
            color.filled(),
        );
        bar.set_margin(0, 0, 12, 12);
        chart
            .draw_series(std::iter::once(bar))
            .map_err(plot_error)?;
        chart
            .draw_series(std::iter::once(Text::new(
                format_figure(*value),
                (SegmentValue::CenterOf(i), *value),
                ("sans-serif", 12),
            )))
            .map_err(plot_error)?;
    }
    Ok(())
}

/// One line per series over the x labels, log-scaled y.
fn line_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    x_labels: &[&str],
    series: &[(String, Vec<f64>)],
) -> anyhow::Result<()> {
    let values = series.iter().flat_map(|(_, v)| v.iter().copied());
    let (low, high) = values.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !low.is_finite() || high <= 0.0 {
        return Ok(());
    }
    let low = (low.max(1e-3) / 2.0).max(1e-3);
    let high = high * 2.0;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (0..x_labels.len()).into_segmented(),
            (low..high).log_scale(),
        )
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .y_desc("milliseconds")
        .y_label_formatter(&|value| format!("{value}"))
        .x_label_formatter(&|segment| match segment {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => x_labels
                .get(*i)
                .map(|l| (*l).to_owned())
                .unwrap_or_default(),
            SegmentValue::Last => String::new(),
        })
        .draw()
        .map_err(plot_error)?;
    for (index, (name, values)) in series.iter().enumerate() {
        let color = SERIES_COLORS[index % SERIES_COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (SegmentValue::CenterOf(i), *v)),
                color.stroke_width(2),
            ))
            .map_err(plot_error)?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(plot_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn measurement(suite: &str, target: &str, params: Value, figures: Value) -> Measurement {
        let params: BTreeMap<String, Value> = serde_json::from_value(params).expect("params");
        let figures: BTreeMap<String, f64> = serde_json::from_value(figures).expect("figures");
        Measurement {
            suite: suite.into(),
            target: target.into(),
            params,
            figures,
            command: format!("{target} command"),
        }
    }

    fn suite(name: &str, measurements: Vec<Measurement>) -> SuiteResults {
        SuiteResults {
            suite: name.into(),
            started: "2026-11-26T21:00:00Z".into(),
            machine: Machine {
                cores: 2,
                cpu_model: "test cpu".into(),
                memory_gib: 24.0,
                kernel: "6.1".into(),
            },
            measurements,
        }
    }

    fn sample() -> Vec<SuiteResults> {
        let point = |clients: i64, mode: &str| json!({"clients": clients, "metrics_per_request": 100, "mode": mode, "rate": 1000});
        vec![
            suite(
                "http",
                vec![
                    measurement(
                        "http",
                        "noop-http",
                        point(200, "max"),
                        json!({"requests_per_sec": 10000.0}),
                    ),
                    measurement(
                        "http",
                        "ingest-file-batch",
                        point(200, "max"),
                        json!({"requests_per_sec": 6000.0, "lost": 0.0, "duplicates": 0.0, "rss_peak_mib": 40.0, "consumer_rss_peak_mib": 70.0}),
                    ),
                    measurement(
                        "http",
                        "ingest-kafka",
                        point(200, "max"),
                        json!({"requests_per_sec": 4000.0, "lost": 0.0, "duplicates": 1.0}),
                    ),
                    measurement(
                        "http",
                        "noop-http",
                        point(20, "rate"),
                        json!({"requests_per_sec": 1000.0, "p50_ms": 0.2, "p99_ms": 0.5, "p999_ms": 1.0}),
                    ),
                    measurement(
                        "http",
                        "ingest-file-batch",
                        point(20, "rate"),
                        json!({"requests_per_sec": 1000.0, "p50_ms": 2.0, "p99_ms": 12.5, "p999_ms": 20.0}),
                    ),
                ],
            ),
            suite(
                "drain",
                vec![
                    measurement(
                        "drain",
                        "consumer-file",
                        json!({"metrics": 1000000}),
                        json!({"metrics_per_sec": 300000.0, "rss_peak_mib": 30.0}),
                    ),
                    measurement(
                        "drain",
                        "bare-read-file",
                        json!({"metrics": 1000000}),
                        json!({"metrics_per_sec": 1000000.0}),
                    ),
                ],
            ),
        ]
    }

    #[test]
    fn goals_are_judged_against_the_ceilings_of_the_same_run() {
        let suites = sample();
        let results = Results::new(&suites);
        let goals = results.goals();
        let verdict = |prefix: &str| {
            goals
                .iter()
                .find(|g| g.what.starts_with(prefix))
                .unwrap_or_else(|| panic!("no goal {prefix}: {goals:?}"))
                .met
        };
        assert_eq!(
            verdict("ingest → file (batch) ≥ 50 %"),
            Some(true),
            "6000 of 10000"
        );
        assert_eq!(
            verdict("ingest → file (batch) p99"),
            Some(false),
            "12.5 ms > 10 ms"
        );
        assert_eq!(verdict("ingest → Kafka"), Some(false), "4000 of 10000");
        assert_eq!(verdict("consumer drain (file)"), Some(false), "30 %");
        assert_eq!(verdict("consumer drain (Kafka)"), None, "not measured");
        assert_eq!(verdict("ingest RSS"), Some(true), "40 MiB");
        assert_eq!(
            verdict("consumer RSS"),
            Some(false),
            "70 MiB during the HTTP run"
        );
        assert_eq!(verdict("operator"), None);
        assert_eq!(verdict("no metric lost"), Some(false), "one duplicate");
    }

    #[test]
    fn the_report_renders_tables_and_charts() {
        let suites = sample();
        let results = Results::new(&suites);
        let dir = tempfile::tempdir().expect("a temporary directory");
        let charts = results.charts(dir.path()).expect("charts render");
        let names: Vec<&str> = charts.iter().map(|(file, _)| file.as_str()).collect();
        assert_eq!(
            names,
            ["http-throughput.svg", "http-latency.svg", "drain.svg"]
        );
        let svg = fs::read_to_string(dir.path().join("http-throughput.svg")).expect("an SVG");
        assert!(
            svg.starts_with("<svg") && svg.contains("file, batch"),
            "{svg:.300}"
        );
        let markdown = results.markdown("make bench", &charts, Some("## Analysis\n\nnotes\n"));
        assert!(
            markdown.contains("| ingest → file, batch | 6000 | 60 % |"),
            "{markdown}"
        );
        assert!(markdown.contains("2 cores (test cpu)"), "{markdown}");
        assert!(markdown.contains("![Requests/s"), "{markdown}");
        let analysis = markdown
            .find("## Analysis\n\nnotes\n")
            .expect("the analysis");
        let targets = markdown.find("## Targets").expect("the targets");
        let tables = markdown.find("## HTTP").expect("the HTTP tables");
        assert!(targets < analysis && analysis < tables, "{markdown}");
    }
}
