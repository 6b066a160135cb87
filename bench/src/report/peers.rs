//! The peers suite in the report: per scenario, MetricStream beside the system a user would
//! pick instead, with the ratios the issue asks for (samples per CPU-second, p99) and what each
//! system promises when it answers.

use std::fmt::Write as _;

use super::{Results, figure, format_figure, param_i64, param_str};
use crate::peers::{SUITE, Scenario};
use crate::results::Measurement;

/// The measured system of MetricStream in every scenario.
pub(super) const METRICSTREAM: &str = "metricstream";

/// What a system's answer to the client means, per scenario and target.
fn promise(scenario: Scenario, target: &str) -> &'static str {
    match (scenario, target) {
        (Scenario::OtlpKafka, METRICSTREAM) => {
            "answers 2xx after Kafka acknowledged the record (acks=all, idempotent producer)"
        }
        (Scenario::OtlpKafka, _) => {
            "answers 200 once the batch is committed (fsynced) to its persistent sending queue \
             (file_storage), before Kafka has it; the exporter sends it later"
        }
        (Scenario::RemoteWriteStore, METRICSTREAM) => {
            "answers 2xx after the file queue's fdatasync (batch durability); the consumer \
             delivers to the store later"
        }
        (Scenario::RemoteWriteStore, _) => {
            "answers 204 once the samples are in its memory; they reach its on-disk queue only \
             when the memory queue is full, the store has stalled for 5 s, or at a clean \
             shutdown, so a crash loses what is in memory"
        }
    }
}

fn display_name(target: &str) -> &str {
    match target {
        METRICSTREAM => "MetricStream",
        "otelcol" => "OpenTelemetry Collector",
        other => other,
    }
}

impl<'a> Results<'a> {
    /// The scenarios the peers suite measured, in report order.
    pub(super) fn peer_scenarios(&self) -> Vec<Scenario> {
        let mut scenarios: Vec<Scenario> = self
            .all
            .iter()
            .filter(|m| m.suite == SUITE)
            .filter_map(|m| param_str(m, "scenario").and_then(Scenario::from_name))
            .collect();
        scenarios.sort();
        scenarios.dedup();
        scenarios
    }

    /// The throughput measurements of `scenario`, by client count, MetricStream first.
    fn peer_runs(&self, scenario: Scenario) -> Vec<&'a Measurement> {
        let mut runs = self.peer_measurements(scenario, false);
        runs.sort_by_key(|m| (param_i64(m, "clients"), m.target != METRICSTREAM));
        runs
    }

    /// The measurements of `scenario`, the crash runs or the others, MetricStream first.
    fn peer_measurements(&self, scenario: Scenario, crash: bool) -> Vec<&'a Measurement> {
        let mut runs: Vec<&Measurement> = self
            .all
            .iter()
            .copied()
            .filter(|m| m.suite == SUITE && param_str(m, "scenario") == Some(scenario.name()))
            .filter(|m| (param_str(m, "mode") == Some("crash")) == crash)
            .collect();
        runs.sort_by_key(|m| m.target != METRICSTREAM);
        runs
    }

    /// The crash runs' table of `scenario`: what each system lost or duplicated of what it
    /// acknowledged across a SIGKILL.
    fn crash_table(&self, md: &mut String, scenario: Scenario) {
        let runs = self.peer_measurements(scenario, true);
        let Some(first) = runs.first() else {
            return;
        };
        let param = |key| param_i64(first, key).map_or("?".to_owned(), |v| v.to_string());
        let _ = writeln!(
            md,
            "`kill -9` of every process of each system a third of the way into {} s of {} clients \
             × {} requests/s (each client's own samples, a request retried until answered 2xx), \
             restarted on the same directories; then the far end read whole and every \
             acknowledged sample looked for:\n",
            param("duration_secs"),
            param("clients"),
            param("rate_per_client"),
        );
        let _ = writeln!(
            md,
            "| system | acknowledged samples | lost | duplicates | resent (absorbed by the store) | delivered unacknowledged | refused requests (retried) | down s |\n|---|---|---|---|---|---|---|---|"
        );
        for m in &runs {
            let cell = |key: &str| figure(m, key).map_or("–".to_owned(), format_figure);
            let name = match m.params.get("failed").and_then(|v| v.as_str()) {
                Some(error) => format!("{} (**failed**: {error})", display_name(&m.target)),
                None => display_name(&m.target).to_owned(),
            };
            let lost = match figure(m, "lost") {
                Some(lost) if lost > 0.0 => format!("**{}**", format_figure(lost)),
                _ => cell("lost"),
            };
            let _ = writeln!(
                md,
                "| {name} | {} | {lost} | {} | {} | {} | {} | {} |",
                cell("acknowledged_samples"),
                cell("duplicates"),
                cell("resent_samples"),
                cell("unacknowledged_delivered"),
                cell("refused_requests"),
                cell("down_secs"),
            );
        }
        let _ = writeln!(md);
    }

    /// One bar per system and client count: samples/s (peers drawn as the grey "reference").
    pub(super) fn peer_bars(&self, scenario: Scenario) -> Vec<(String, f64, bool)> {
        self.peer_runs(scenario)
            .into_iter()
            .filter_map(|m| {
                Some((
                    format!(
                        "{}, {} clients",
                        display_name(&m.target),
                        param_i64(m, "clients")?
                    ),
                    figure(m, "samples_per_sec")?,
                    m.target != METRICSTREAM,
                ))
            })
            .collect()
    }

    /// MetricStream / its peer at `clients`, for samples per CPU-second (higher is better) and
    /// p99 (lower is better).
    fn peer_ratios(&self, scenario: Scenario, clients: i64) -> Option<(String, f64, f64)> {
        let runs = self.peer_runs(scenario);
        let at = |ours: bool| {
            runs.iter().copied().find(|m| {
                param_i64(m, "clients") == Some(clients) && (m.target == METRICSTREAM) == ours
            })
        };
        let (ours, peer) = (at(true)?, at(false)?);
        let efficiency =
            figure(ours, "samples_per_cpu_second")? / figure(peer, "samples_per_cpu_second")?;
        let p99 = figure(ours, "p99_ms")? / figure(peer, "p99_ms")?;
        Some((peer.target.clone(), efficiency, p99))
    }

    pub(super) fn peers_section(&self, md: &mut String) {
        let scenarios = self.peer_scenarios();
        if scenarios.is_empty() {
            return;
        }
        let _ = writeln!(md, "## Peers: MetricStream beside what users run instead\n");
        if let Some(suite) = self.suites.iter().find(|s| s.suite == SUITE) {
            let _ = writeln!(
                md,
                "Run started {} on {} cores ({}). Each system got a fresh process (and a fresh \
                 topic or store) per run and the same body in a closed loop; CPU is the \
                 system's own processes from the load's start until the far end held every \
                 acknowledged sample, so work deferred past the answer counts. Each figure is the \
                 round with the median samples/s. `metricstream-bench peers` (docs/benchmarks.md).\n",
                suite.started, suite.machine.cores, suite.machine.cpu_model
            );
        }
        for scenario in scenarios {
            let runs = self.peer_runs(scenario);
            let title = match scenario {
                Scenario::OtlpKafka => "OTLP/HTTP → Kafka",
                Scenario::RemoteWriteStore => "Prometheus remote write → VictoriaMetrics",
            };
            let _ = writeln!(md, "### {title}\n");
            let mut targets: Vec<&str> = Vec::new();
            for m in &runs {
                if !targets.contains(&m.target.as_str()) {
                    targets.push(&m.target);
                }
            }
            for target in targets {
                let processes = runs
                    .iter()
                    .find(|m| m.target == target)
                    .and_then(|m| param_str(m, "processes"))
                    .unwrap_or("?");
                let _ = writeln!(
                    md,
                    "- **{}** ({processes}): {}.",
                    display_name(target),
                    promise(scenario, target)
                );
            }
            let _ = writeln!(
                md,
                "\n| system | clients | samples/s | req/s | p50 ms | p99 ms | p99.9 ms | CPU s per million samples | samples per CPU-second | peak RSS MiB | delivered after load s | refused or failed requests (all rounds) |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
            );
            for m in &runs {
                let cell = |key: &str| figure(m, key).map_or("–".to_owned(), format_figure);
                let name = match m.params.get("failed").and_then(|v| v.as_str()) {
                    Some(error) => format!("{} (**failed**: {error})", display_name(&m.target)),
                    None => display_name(&m.target).to_owned(),
                };
                let _ = writeln!(
                    md,
                    "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    param_i64(m, "clients").map_or("?".to_owned(), |c| c.to_string()),
                    cell("samples_per_sec"),
                    cell("requests_per_sec"),
                    cell("p50_ms"),
                    cell("p99_ms"),
                    cell("p999_ms"),
                    cell("cpu_seconds_per_million_samples"),
                    cell("samples_per_cpu_second"),
                    cell("rss_peak_mib"),
                    cell("delivery_secs"),
                    cell("errors"),
                );
            }
            let _ = writeln!(md);
            let mut clients: Vec<i64> = runs
                .iter()
                .filter_map(|m| param_i64(m, "clients"))
                .collect();
            clients.dedup();
            for count in clients {
                if let Some((peer, efficiency, p99)) = self.peer_ratios(scenario, count) {
                    let _ = writeln!(
                        md,
                        "- {count} clients: MetricStream / {}: samples per CPU-second \
                         **{efficiency:.2}×** (higher is better), p99 **{p99:.2}×** (lower is \
                         better).",
                        display_name(&peer)
                    );
                }
            }
            let _ = writeln!(md);
            self.crash_table(md, scenario);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::results::{Machine, SuiteResults};

    fn run(target: &str, clients: i64, per_cpu_second: f64, p99: f64) -> Measurement {
        Measurement {
            suite: SUITE.to_owned(),
            target: target.to_owned(),
            params: BTreeMap::from([
                ("scenario".to_owned(), json!("otlp-kafka")),
                ("clients".to_owned(), json!(clients)),
                ("processes".to_owned(), json!("ingest")),
            ]),
            figures: BTreeMap::from([
                ("samples_per_sec".to_owned(), per_cpu_second),
                ("samples_per_cpu_second".to_owned(), per_cpu_second),
                ("p99_ms".to_owned(), p99),
            ]),
            command: String::new(),
        }
    }

    fn crashed(target: &str, lost: f64) -> Measurement {
        let mut m = run(target, 20, 0.0, 0.0);
        m.params.insert("mode".to_owned(), json!("crash"));
        m.figures = BTreeMap::from([
            ("acknowledged_samples".to_owned(), 1000.0),
            ("lost".to_owned(), lost),
            ("duplicates".to_owned(), 0.0),
        ]);
        m
    }

    #[test]
    fn each_scenario_is_a_table_with_metricstream_over_its_peer() {
        let suites = vec![SuiteResults {
            suite: SUITE.to_owned(),
            started: "2026-12-04T21:00:00Z".to_owned(),
            machine: Machine::this(),
            measurements: vec![
                run("otelcol", 20, 100_000.0, 4.0),
                run(METRICSTREAM, 20, 150_000.0, 2.0),
                crashed("otelcol", 5.0),
                crashed(METRICSTREAM, 0.0),
            ],
        }];
        let results = Results::new(&suites);
        assert_eq!(results.peer_scenarios(), [Scenario::OtlpKafka]);
        let mut md = String::new();
        results.peers_section(&mut md);
        let ours = md.find("| MetricStream | 20 | 150000 |").expect(&md);
        let theirs = md
            .find("| OpenTelemetry Collector | 20 | 100000 |")
            .expect(&md);
        assert!(ours < theirs, "MetricStream first: {md}");
        assert_eq!(md.matches("- **MetricStream** (ingest)").count(), 1, "{md}");
        assert!(
            md.contains(
                "20 clients: MetricStream / OpenTelemetry Collector: samples per CPU-second \
                 **1.50×**"
            ),
            "{md}"
        );
        assert!(md.contains("p99 **0.50×**"), "{md}");
        assert_eq!(results.peer_bars(Scenario::OtlpKafka).len(), 2);
        assert!(md.contains("| MetricStream | 1000 | 0 | 0 |"), "{md}");
        assert!(
            md.contains("| OpenTelemetry Collector | 1000 | **5** | 0 |"),
            "{md}"
        );
    }
}
