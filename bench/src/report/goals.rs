//! The targets, each judged against the ceilings measured in the same run.

use super::peers::METRICSTREAM;
use super::{Goal, Results, figure, param_i64, param_str};
use crate::http::STALL_FSYNC_SECS;

impl Results<'_> {
    /// The targets, each with its verdict (`None`: not measured in this run).
    pub fn goals(&self) -> Vec<Goal> {
        let mut goals = Vec::new();
        // Each request size on its own: a ratio per metrics-per-request, met only if all are.
        let max_run_rps = |target: &str, metrics: i64| {
            self.max_runs(target, 200)
                .into_iter()
                .find(|c| param_i64(c, "metrics_per_request") == Some(metrics))
                .and_then(|c| figure(c, "requests_per_sec"))
        };
        let ratio_goal = |goals: &mut Vec<Goal>, target: &str, name: &str| {
            let what = format!("{name} ≥ 50 % of the no-op HTTP ceiling's req/s at 200 clients");
            let ratios: Vec<(i64, f64, f64)> = self
                .max_runs(target, 200)
                .into_iter()
                .filter_map(|ingest| {
                    let metrics = param_i64(ingest, "metrics_per_request")?;
                    Some((
                        metrics,
                        figure(ingest, "requests_per_sec")?,
                        max_run_rps("noop-http", metrics)?,
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
                            // Parsing the body is a bound of its own: the same no-op server
                            // decoding it, beside the goal's ratio.
                            let decode_bound = max_run_rps("noop-decode", *metrics)
                                .map(|decode| {
                                    format!(
                                        " (decoding alone: {decode:.0} req/s = {:.0} % of the ceiling)",
                                        decode / ceiling * 100.0
                                    )
                                })
                                .unwrap_or_default();
                            format!(
                                "{metrics} metrics/request: {ingest:.0} of {ceiling:.0} req/s = {:.0} %{decode_bound}",
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

        let p99s: Vec<(i64, f64, String)> = self
            .of("http", "ingest-file-batch")
            .filter(|m| param_i64(m, "clients") == Some(20) && param_str(m, "mode") != Some("max"))
            .filter_map(|m| {
                // The disk's stalls in the same run, apart from the service's latency.
                let disk = match (figure(m, "stalled_fsyncs"), figure(m, "fsync_slowest_ms")) {
                    (Some(stalls), Some(slowest)) => format!(
                        "; the disk: {stalls:.0} fdatasyncs > {:.1} ms, the slowest ≤ {slowest:.1} ms",
                        STALL_FSYNC_SECS * 1000.0
                    ),
                    _ => String::new(),
                };
                Some((
                    param_i64(m, "metrics_per_request")?,
                    figure(m, "p99_ms")?,
                    disk,
                ))
            })
            .collect();
        goals.push(Goal {
            what: "ingest → file (batch) p99 ≤ 10 ms at 20 clients".into(),
            measured: if p99s.is_empty() {
                "not measured".into()
            } else {
                p99s.iter()
                    .map(|(metrics, p99, disk)| {
                        format!("{p99:.1} ms ({metrics} metrics/request{disk})")
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            met: (!p99s.is_empty()).then(|| p99s.iter().all(|(_, p99, _)| *p99 <= 10.0)),
        });
        ratio_goal(&mut goals, "ingest-kafka", "ingest → Kafka");
        goals.push(self.spill_idle_goal());
        goals.push(self.spill_outage_goal());

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
                                "; {:.0} % of writing the sink's bytes alone ({w_mps:.0}/s, itself {:.0} % of the bare read)",
                                c_mps / w_mps * 100.0,
                                if b_mps > 0.0 { w_mps / b_mps * 100.0 } else { 0.0 }
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

        // MetricStream's runs only: a peer's losses under `kill -9` are the peers table's.
        let ours = self
            .all
            .iter()
            .filter(|m| m.suite != crate::peers::SUITE || m.target == METRICSTREAM);
        let (lost, duplicates, counted) = ours.fold((0.0, 0.0, 0), |acc, m| {
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
        goals.push(self.intake_goal());
        goals
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::sample::sample;

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
    fn a_peers_losses_are_not_metricstreams() {
        let mut suites = sample();
        let crash = |target: &str, lost: f64| crate::results::Measurement {
            suite: "peers".into(),
            target: target.into(),
            params: Default::default(),
            figures: [("lost".to_owned(), lost), ("duplicates".to_owned(), 0.0)].into(),
            command: String::new(),
        };
        let mut peers = suites[0].clone();
        peers.suite = "peers".into();
        peers.measurements = vec![crash("metricstream", 0.0), crash("vmagent", 20000.0)];
        suites.push(peers);
        let results = Results::new(&suites);
        let goal = results
            .goals()
            .into_iter()
            .find(|g| g.what.starts_with("no metric lost"))
            .expect("the loss goal");
        assert!(
            goal.measured.starts_with("0 lost, 1 duplicated"),
            "{}",
            goal.measured
        );
    }
}
